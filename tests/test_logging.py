"""Log events: what deliveries, deferrals and bounces say, and that secrets never appear."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable
from pathlib import Path

import structlog
from conftest import DmaSite
from smtp_peers import AiosmtpdSink, aiosmtpd_sink_fixture  # noqa: F401
from structlog.testing import capture_logs

from dma.adapters.log import PROCESSORS, configure_structlog, redact_secrets, render_line
from dma.shell.queue_run import QueueRun
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
