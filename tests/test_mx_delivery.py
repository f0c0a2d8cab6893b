"""MX delivery end to end: dnsmasq serves the records, sinks listen on 127.0.0.2-4.

No SMARTHOST: dma asks NAMESERVER (a dnsmasq on loopback) for MX records and
connects to PORT on each host in preference order (SPEC 2.1: PORT applies to
every remote delivery).  127.0.0.2 has nothing listening, 127.0.0.3 answers 4xx
(to RCPT, or at the greeting), 127.0.0.4 accepts (SPEC 5.3, 5.7).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from conftest import DmaSite
from dnsmasq import host_record, local, mx, running_dnsmasq
from smtp_peers import (  # noqa: F401 (fixtures)
    LOGIN,
    PASSWORD,
    AiosmtpdSink,
    Script,
    ScriptedSink,
    aiosmtpd_sink_fixture,
    answer_by_local_part,
    bounces,
    delivery_status,
    free_port,
    scripted_sink_fixture,
    write_remote_config,
)

DOWN, BUSY, GOOD = "127.0.0.2", "127.0.0.3", "127.0.0.4"
KEY1_A, KEY1_B, KEY2 = "127.0.0.5", "127.0.0.6", "127.0.0.7"
ZONE = "mx.test"
RECORDS = (
    local(ZONE),
    # three MX hosts: nothing listening, 4xx, accepting
    mx(f"multi.{ZONE}", f"down.{ZONE}", 10),
    mx(f"multi.{ZONE}", f"busy.{ZONE}", 20),
    mx(f"multi.{ZONE}", f"good.{ZONE}", 30),
    host_record(f"down.{ZONE}", DOWN),
    host_record(f"busy.{ZONE}", BUSY),
    host_record(f"good.{ZONE}", GOOD),
    # no MX: the domain's own address
    host_record(f"nomx.{ZONE}", GOOD),
    # RFC 7505 null MX
    mx(f"null.{ZONE}", ".", 0),
    host_record(f"null.{ZONE}", GOOD),
    # AUTH: two MX hosts, the first with two addresses
    mx(f"auth.{ZONE}", f"key1.{ZONE}", 10),
    mx(f"auth.{ZONE}", f"key2.{ZONE}", 20),
    host_record(f"key1.{ZONE}", KEY1_A),
    host_record(f"key1.{ZONE}", KEY1_B),
    host_record(f"key2.{ZONE}", KEY2),
)
MESSAGE = b"Subject: via MX\n\nlooked up in DNS\n"


@pytest.fixture(scope="module")
def nameserver() -> Iterator[str]:
    """One dnsmasq for the module, serving RECORDS; yields the NAMESERVER value."""
    with running_dnsmasq(*RECORDS) as (address, port):
        yield f"{address}:{port}"


@pytest.fixture
def port() -> int:
    """A port free on all three sink addresses: PORT in dma.conf."""
    return free_port(DOWN, BUSY, GOOD)


def _configure(site: DmaSite, port: int, nameserver: str) -> None:
    write_remote_config(site, port, f"NAMESERVER {nameserver}\n", host="")


def _send(site: DmaSite, recipient: str) -> tuple[int, str]:
    done = site.run(["-D", recipient], MESSAGE, program="sendmail", timeout=60)
    return done.returncode, done.stderr.decode(errors="replace")


@pytest.mark.parametrize("busy", [
    Script(rcpt=lambda _address: "451 4.3.0 temporarily unable, try another host"),
    Script(greeting="421 4.3.2 too busy"),
], ids=["4xx-to-rcpt", "421-greeting"])
def test_mx_hosts_in_preference_order(
    site: DmaSite, port: int, nameserver: str, busy: Script,
    aiosmtpd_sink: Callable[..., AiosmtpdSink], scripted_sink: Callable[..., ScriptedSink],
) -> None:
    """The lowest MX is down, the next answers 4xx: the mail reaches the third, on PORT."""
    temporary = scripted_sink(busy, host=BUSY, port=port)
    good = aiosmtpd_sink(GOOD, port)
    _configure(site, port, nameserver)
    code, stderr = _send(site, f"bob@multi.{ZONE}")
    assert code == 0, stderr
    [arrival] = good.wait_for(1)
    assert arrival.recipients == [f"bob@multi.{ZONE}"]
    assert len(temporary.connections) == 1  # tried after the dead host, before the good one
    assert temporary.messages == []
    assert site.queue() == []
    assert bounces(site) == []


def test_recipient_deferred_at_one_mx_reaches_the_next_after_another_was_delivered(
    site: DmaSite, port: int, nameserver: str,
    aiosmtpd_sink: Callable[..., AiosmtpdSink], scripted_sink: Callable[..., ScriptedSink],
) -> None:
    """The first item is delivered at an MX that defers the second: the next MX gets the second."""
    partial = scripted_sink(Script(rcpt=answer_by_local_part), host=BUSY, port=port)
    good = aiosmtpd_sink(GOOD, port)
    _configure(site, port, nameserver)
    done = site.run(["-D", f"ok@multi.{ZONE}", f"temp@multi.{ZONE}"], MESSAGE,
                    program="sendmail", timeout=60)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert [a.recipients for a in partial.messages] == [[f"ok@multi.{ZONE}"]]
    [arrival] = good.wait_for(1)
    assert arrival.recipients == [f"temp@multi.{ZONE}"]
    assert b"looked up in DNS" in arrival.content
    assert site.queue() == []


def test_all_mx_hosts_temporary_defers(
    site: DmaSite, port: int, nameserver: str, scripted_sink: Callable[..., ScriptedSink]
) -> None:
    """When no MX host accepts (down, 4xx, down) the item is deferred, never bounced."""
    scripted_sink(Script(greeting="421 4.3.2 too busy"), host=BUSY, port=port)
    _configure(site, port, nameserver)
    code, stderr = _send(site, f"bob@multi.{ZONE}")
    assert code == 75, stderr
    [item] = site.queue()
    assert item["attempts"] == 1
    assert bounces(site) == []


def test_no_mx_falls_back_to_address(
    site: DmaSite, port: int, nameserver: str, aiosmtpd_sink: Callable[..., AiosmtpdSink]
) -> None:
    """A domain without MX records is delivered to its own A record."""
    good = aiosmtpd_sink(GOOD, port)
    _configure(site, port, nameserver)
    code, stderr = _send(site, f"carol@nomx.{ZONE}")
    assert code == 0, stderr
    [arrival] = good.wait_for(1)
    assert arrival.recipients == [f"carol@nomx.{ZONE}"]
    assert site.queue() == []


@pytest.mark.parametrize("domain", [f"null.{ZONE}", f"missing.{ZONE}"],
                         ids=["null-mx", "nxdomain"])
def test_null_mx_and_nxdomain_bounce_at_once(
    site: DmaSite, port: int, nameserver: str, domain: str,
    aiosmtpd_sink: Callable[..., AiosmtpdSink],
) -> None:
    """A null MX or a domain that does not exist bounces at the first attempt, locally."""
    good = aiosmtpd_sink(GOOD, port)  # null.mx.test has an A record: it must not be used
    _configure(site, port, nameserver)
    recipient = f"dave@{domain}"
    code, stderr = _send(site, recipient)
    assert code == 69, stderr
    assert site.queue() == []
    assert good.messages == []
    [report] = bounces(site)
    status = delivery_status(report, recipient)
    assert status["action"] == "failed"
    assert status["status"].startswith("5.")


def test_refused_dns_answer_defers(
    site: DmaSite, port: int, nameserver: str, aiosmtpd_sink: Callable[..., AiosmtpdSink]
) -> None:
    """A name server that will not answer (REFUSED, like SERVFAIL) defers the item."""
    _configure(site, port, nameserver)
    code, stderr = _send(site, "erin@elsewhere.test")
    assert code == 75, stderr
    [item] = site.queue()
    assert "dns" in item["last_error"].lower()
    assert bounces(site) == []


def test_unreachable_dns_defers(site: DmaSite, port: int) -> None:
    """A NAMESERVER where nothing listens defers the item instead of bouncing it."""
    silent = free_port()
    _configure(site, port, f"127.0.0.1:{silent}")
    started = time.monotonic()
    code, stderr = _send(site, f"bob@multi.{ZONE}")
    assert code == 75, stderr
    assert time.monotonic() - started < 30
    [item] = site.queue()
    assert "dns" in item["last_error"].lower()
    assert bounces(site) == []


# --- AUTH failures are not repeated at every address (the account could be locked) -------


def _auth_site(site: DmaSite, nameserver: str, port: int, key1: str, key2: str,
               extra: str = "") -> None:
    """MX delivery to auth.mx.test with auth.conf entries for both of its MX hosts."""
    auth = site.root / "auth.conf"
    auth.write_text(f"{LOGIN}|key1.{ZONE}:{key1}\n{LOGIN}|key2.{ZONE}:{key2}\n")
    auth.chmod(0o600)
    write_remote_config(site, port, f"NAMESERVER {nameserver}\nAUTHPATH {auth}\n" + extra,
                        host="")


def test_refused_password_is_tried_once_per_run(
    site: DmaSite, nameserver: str, aiosmtpd_sink: Callable[..., AiosmtpdSink]
) -> None:
    """A 535 at the first address defers at once: no other address, no MX with the same login."""
    port = free_port(KEY1_A, KEY1_B, KEY2)
    sinks = [aiosmtpd_sink(host, port, auth=True, auth_require_tls=False, exclude=("LOGIN",))
             for host in (KEY1_A, KEY1_B, KEY2)]
    _auth_site(site, nameserver, port, "wrong", "wrong", "INSECURE\n")
    code, stderr = _send(site, f"bob@auth.{ZONE}")
    assert code == 75, stderr
    assert sum(len(s.handler.auth_mechanisms) for s in sinks) == 1
    assert sum(s.handler.ehlo_count for s in sinks) == 1
    assert all(s.messages == [] for s in sinks)
    [item] = site.queue()
    assert item["attempts"] == 1 and "AUTH" in item["last_error"]
    assert bounces(site) == []


def test_host_with_other_credentials_is_still_tried(
    site: DmaSite, nameserver: str, aiosmtpd_sink: Callable[..., AiosmtpdSink]
) -> None:
    """After a 535 at the first MX host, the next MX host with its own credentials gets the mail."""
    port = free_port(KEY1_A, KEY1_B, KEY2)
    first = [aiosmtpd_sink(host, port, auth=True, auth_require_tls=False, exclude=("LOGIN",))
             for host in (KEY1_A, KEY1_B)]
    second = aiosmtpd_sink(KEY2, port, auth=True, auth_require_tls=False, exclude=("LOGIN",))
    _auth_site(site, nameserver, port, "wrong", PASSWORD, "INSECURE\n")
    code, stderr = _send(site, f"bob@auth.{ZONE}")
    assert code == 0, stderr
    [arrival] = second.wait_for(1)
    assert arrival.login == LOGIN
    assert sum(len(s.handler.auth_mechanisms) for s in first) == 1
    assert site.queue() == []


def test_no_usable_mechanism_skips_the_hosts_other_addresses(
    site: DmaSite, nameserver: str, aiosmtpd_sink: Callable[..., AiosmtpdSink]
) -> None:
    """PLAIN offered without TLS (no INSECURE) at the first address: its twin is skipped."""
    port = free_port(KEY1_A, KEY1_B, KEY2)
    first = [aiosmtpd_sink(host, port, auth=True, auth_require_tls=False)
             for host in (KEY1_A, KEY1_B)]
    second = aiosmtpd_sink(KEY2, port)  # offers no AUTH: gets the mail unauthenticated
    _auth_site(site, nameserver, port, PASSWORD, PASSWORD)
    code, stderr = _send(site, f"bob@auth.{ZONE}")
    assert code == 0, stderr
    second.wait_for(1)
    assert sum(s.handler.ehlo_count for s in first) == 1
    assert all(s.handler.auth_mechanisms == [] for s in first)
