"""Log events: what deliveries, deferrals and bounces say, and that secrets never appear."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog
from conftest import DmaSite
from smtp_peers import (  # noqa: F401 (fixtures)
    LOGIN,
    PASSWORD,
    AiosmtpdSink,
    Script,
    ScriptedSink,
    aiosmtpd_sink_fixture,
    b64,
    free_port,
    scripted_sink_fixture,
    write_auth,
    write_remote_config,
)
from structlog.testing import capture_logs
from tls_certs import TlsCerts, tls_certs_fixture  # noqa: F401 (a fixture)

from dma.adapters.log import PROCESSORS, configure_structlog, redact_secrets, render_line
from dma.adapters.net import format_fingerprint
from dma.shell.queue_run import QueueRun
from dma.shell.remote import RemoteDelivery
from dma.shell.settings import load_settings


def _run_queue_in_process(site: DmaSite, item_ids: list[str]) -> list[dict[str, object]]:
    configure_structlog("dma-test")
    settings = load_settings(str(site.config), {})
    with capture_logs() as events:
        QueueRun(settings, structlog.get_logger()).run(item_ids)
    return events


def test_delivery_is_logged_with_the_queue_id(site: DmaSite) -> None:
    """A local delivery logs 'trying delivery' and 'delivered' with the item id and mailbox."""
    site.write_config()
    ids = site.send(["root"], b"Subject: logged\n\nbody\n")
    site.write_config(defer=False)
    events = _run_queue_in_process(site, ids)
    kinds = [(e["event"], e.get("id")) for e in events]
    assert ("trying delivery", ids[0]) in kinds
    delivered = next(e for e in events if e["event"] == "delivered")
    assert delivered["id"] == ids[0] and "mailbox" in str(delivered["detail"])


def test_deferral_and_bounce_are_logged_with_reasons(site: DmaSite) -> None:
    """A failing mailbox logs 'deferred' with the reason and next try; after expiry 'bounced'."""
    site.write_config("QUEUELIFETIME 1s\n")
    ids = site.send(["root"], b"Subject: doomed\n\nbody\n")
    site.write_config("QUEUELIFETIME 1s\n", defer=False)
    site.maildir.mkdir(exist_ok=True)
    os.symlink("/nonexistent", site.maildir / "root")
    events = _run_queue_in_process(site, ids)
    deferred = next(e for e in events if e["event"] == "deferred")
    assert "symbolic link" in str(deferred["reason"]) and int(str(deferred["next_try"])) > 0
    time.sleep(1.2)
    events = _run_queue_in_process(site, ids)
    bounced = next(e for e in events if e["event"] == "bounced")
    assert bounced["id"] == ids[0] and bounced["bounce_id"]


def test_secret_keys_are_redacted_and_lines_stay_single() -> None:
    """Whatever a caller passes as password/secret/token is replaced; newlines are escaped."""
    event = {"event": "auth", "password": "hunter2", "Token": "abc", "note": "a\nb"}
    line = render_line(None, "info", redact_secrets(None, "info", dict(event)))
    assert "hunter2" not in line and "abc" not in line
    assert "\n" not in line and "a\\nb" in line
    assert PROCESSORS[0] is redact_secrets


def test_auth_conf_passwords_never_reach_the_verbose_dialogue(
    site: DmaSite, tmp_path: Path, aiosmtpd_sink: Callable[..., AiosmtpdSink]
) -> None:
    """Even when the server refuses AUTH, -v shows neither the password nor its base64 form."""
    sink = aiosmtpd_sink(auth=True, auth_require_tls=False, login="u", password="right")
    auth = tmp_path / "auth.conf"
    auth.write_text("u|127.0.0.1:s3cret-pass\n")
    auth.chmod(0o600)
    # later lines win: this smarthost replaces the conftest's dead one
    site.write_config(
        f"AUTHPATH {auth}\nINSECURE\nSMARTHOST 127.0.0.1\nPORT {sink.port}\nTIMEOUT 5s\n",
        defer=False,
    )
    done = site.run(["-D", "-v", "a@example.org"], b"Subject: x\n\nbody\n")
    output = done.stdout + done.stderr
    assert done.returncode == 75, output.decode(errors="replace")
    assert b"AUTH" in output  # the dialogue was shown, and it tried
    for secret in (b"s3cret-pass", base64.b64encode(b"\0u\0s3cret-pass"),
                   base64.b64encode(b"s3cret-pass")):
        assert secret not in output
    assert sink.messages == []  # never sent unauthenticated


# --- remote delivery: every line about a connection names the items it carries -------------

REMOTE_MESSAGE = b"Subject: logged remotely\n\nbody\n"


def _run_remote_in_process(site: DmaSite, item_ids: list[str]) -> list[dict[str, object]]:
    configure_structlog("dma-test")
    settings = load_settings(str(site.config), {})
    with capture_logs() as events:
        log = structlog.get_logger()
        QueueRun(settings, log, remote=RemoteDelivery(settings, log)).run(item_ids)
    return events


def _event(events: list[dict[str, object]], name: str) -> dict[str, object]:
    found = [e for e in events if e["event"] == name]
    assert found, [e["event"] for e in events]
    return found[0]


def _assert_no_secrets(events: list[dict[str, object]], password: str = PASSWORD) -> None:
    """Neither the password nor an AUTH token made of it is in any event."""
    text = repr(events)
    for secret in (password, b64(password), b64(f"\0{LOGIN}\0{password}"),
                   b64(f"{LOGIN}\0{LOGIN}\0{password}")):
        assert secret not in text, secret


@pytest.mark.parametrize(("extra", "verification"), [
    ("", "verified"),
    ("FINGERPRINT {pin}\n", "pinned"),
    ("NOVERIFYCERT\n", "unverified"),
], ids=["verified", "pinned", "unverified"])
def test_trying_and_tls_lines_carry_ids_and_verification(
    site: DmaSite, aiosmtpd_sink: Callable[..., AiosmtpdSink], tls_certs: TlsCerts,
    extra: str, verification: str,
) -> None:
    """'trying remote delivery' and 'TLS started' name the items and the certificate check."""
    sink = aiosmtpd_sink(starttls=tls_certs.server_context(), auth=True, exclude=("LOGIN",))
    pin = format_fingerprint(tls_certs.fingerprint(trusted=True))
    write_remote_config(
        site, sink.port,
        f"SECURETRANSFER\nSTARTTLS\nCAFILE {tls_certs.ca_file}\n" + extra.format(pin=pin)
        + write_auth(site), defer=True)
    ids = site.send(["a@example.org", "b@example.org"], REMOTE_MESSAGE)
    events = _run_remote_in_process(site, ids)
    sink.wait_for(1)
    trying = _event(events, "trying remote delivery")
    assert sorted(str(trying["id"]).split(",")) == sorted(ids)
    assert trying["host"] == "127.0.0.1" and trying["address"] == "127.0.0.1"
    assert trying["port"] == sink.port and trying["tls"] == "required"
    assert trying["verification"] == verification
    started = _event(events, "TLS started")
    assert sorted(str(started["id"]).split(",")) == sorted(ids)
    assert started["verification"] == verification and str(started["version"]).startswith("TLS")
    assert {e["id"] for e in events if e["event"] == "delivered"} == set(ids)
    _assert_no_secrets(events)


def test_plain_connection_says_no_verification(
    site: DmaSite, aiosmtpd_sink: Callable[..., AiosmtpdSink]
) -> None:
    """Without SECURETRANSFER the trying line says tls=no and verification=none."""
    sink = aiosmtpd_sink()
    write_remote_config(site, sink.port, defer=True)
    ids = site.send(["a@example.org"], REMOTE_MESSAGE)
    trying = _event(_run_remote_in_process(site, ids), "trying remote delivery")
    assert trying["id"] == ids[0]
    assert (trying["tls"], trying["verification"]) == ("no", "none")


def test_refused_auth_session_failure_names_the_items_without_secrets(
    site: DmaSite, aiosmtpd_sink: Callable[..., AiosmtpdSink], tls_certs: TlsCerts
) -> None:
    """A refused password logs 'session failed' with the ids and stage; no secret appears."""
    sink = aiosmtpd_sink(starttls=tls_certs.server_context(), auth=True)
    wrong = "wrong horse battery"
    write_remote_config(
        site, sink.port, f"SECURETRANSFER\nSTARTTLS\nCAFILE {tls_certs.ca_file}\n"
        + write_auth(site, password=wrong), defer=True)
    ids = site.send(["a@example.org"], REMOTE_MESSAGE)
    events = _run_remote_in_process(site, ids)
    failed = _event(events, "session failed")
    assert failed["id"] == ids[0] and failed["stage"] == "AUTH"
    assert _event(events, "deferred")["id"] == ids[0]
    _assert_no_secrets(events, wrong)
    lines = [render_line(None, "info", redact_secrets(None, "info", dict(e))) for e in events]
    assert any(line.startswith(f"{ids[0]}: session failed") for line in lines), lines


def test_lost_and_failed_connections_name_the_items(
    site: DmaSite, scripted_sink: Callable[..., ScriptedSink]
) -> None:
    """'connection lost' (a drop in DATA) and 'connection failed' (nobody listening) carry ids."""
    sink = scripted_sink(Script(drop_in_data=True))
    write_remote_config(site, sink.port, defer=True)
    ids = site.send(["a@example.org"], REMOTE_MESSAGE)
    lost = _event(_run_remote_in_process(site, ids), "connection lost")
    assert lost["id"] == ids[0] and str(sink.port) in str(lost["host"])
    write_remote_config(site, free_port(), defer=True)
    refused = _event(_run_remote_in_process(site, ids), "connection failed")
    assert refused["id"] == ids[0]


@pytest.mark.parametrize(("mode", "warned"), [(0o644, True), (0o640, False), (0o600, False)])
def test_auth_file_readable_by_everyone_is_warned_about(
    site: DmaSite, aiosmtpd_sink: Callable[..., AiosmtpdSink], tls_certs: TlsCerts,
    mode: int, warned: bool,
) -> None:
    """An auth.conf that others than its owner and group may read gets a warning naming
    it (SPEC 2.2); the mail still goes out, and the password is never logged."""
    sink = aiosmtpd_sink(starttls=tls_certs.server_context(), auth=True)
    write_remote_config(
        site, sink.port,
        f"SECURETRANSFER\nSTARTTLS\nCAFILE {tls_certs.ca_file}\n" + write_auth(site),
        defer=True)
    auth_file = site.root / "auth.conf"
    auth_file.chmod(mode)
    ids = site.send(["a@example.org"], REMOTE_MESSAGE)
    events = _run_remote_in_process(site, ids)
    warnings = [e for e in events if "readable by everyone" in str(e["event"])]
    assert [str(e.get("path")) for e in warnings] == ([str(auth_file)] if warned else [])
    assert _event(events, "delivered")["id"] == ids[0]
    _assert_no_secrets(events)
