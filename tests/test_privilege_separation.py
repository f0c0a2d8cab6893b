"""System mode's privilege separation (SPEC 8.2): a root queue run delivers locally
itself and hands DNS, SMTP and TLS to a child running as the delivery user; Q files,
bounces and deletions stay the root parent's.  Every test runs as root on a throwaway
copy of the host (tests/host_namespace.py) with the layout made by hand; the sinks
run here, on loopback, which the namespace shares."""

from __future__ import annotations

import json
import os
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dnsmasq import host_record, local, mx, running_dnsmasq
from host_namespace import run_on_host_copy
from smtp_peers import LOGIN, PASSWORD, AiosmtpdSink, aiosmtpd_sink_fixture  # noqa: F401
from tls_certs import TlsCerts, tls_certs_fixture  # noqa: F401 (a fixture)

from dma.core.system_layout import DELIVERY_USER

ENVIRON = {k: v for k, v in os.environ.items()
           if k not in ("DMA_CONF", "EMAIL", "XDG_CONFIG_HOME", "XDG_STATE_HOME")}

LAYOUT = r"""
useradd --system --user-group --no-create-home --shell /usr/sbin/nologin {user}
mkdir -p /etc/dma /var/spool/dma
chown root:{user} /var/spool/dma && chmod 2751 /var/spool/dma
chown root:mail /var/mail && chmod 2775 /var/mail
cat > /etc/dma/auth.conf <<'EOF'
{login}|127.0.0.1:{password}
EOF
chown root:{user} /etc/dma/auth.conf && chmod 0640 /etc/dma/auth.conf
cat > /etc/dma/dma.conf <<'EOF'
SMARTHOST 127.0.0.1
PORT {port}
AUTHPATH /etc/dma/auth.conf
MAILNAME dma.test
TIMEOUT {timeout}
{extra}
EOF
message() {{ printf 'Subject: %s\n\nhello from root\n' "$1"; }}
"""

UNPRIVILEGED = re.compile(r"remote delivery runs unprivileged user=(\S+) uid=(\d+) gid=(\d+) "
                          r"pid=(\d+)")


def _layout(port: int, extra: str = "", timeout: str = "10s") -> str:
    return LAYOUT.format(user=DELIVERY_USER, login=LOGIN, password=PASSWORD, port=port,
                         timeout=timeout, extra=extra)


def _run(script: str) -> None:
    done = run_on_host_copy(script, env=ENVIRON, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def _socket_owner(local: tuple[str, int], remote: tuple[str, int]) -> int | None:
    """The uid column of /proc/net/tcp for the TCP socket ``local`` -> ``remote``."""
    want = (f"0100007F:{local[1]:04X}", f"0100007F:{remote[1]:04X}")
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if (fields[1], fields[2]) == want:
            return int(fields[7])
    return None


def _record_client_owners(sink: AiosmtpdSink) -> list[int | None]:
    """Make the sink note, at DATA, which uid owns the client's end of the connection."""
    owners: list[int | None] = []
    handle_data = sink.handler.handle_DATA

    async def recording(server: Any, session: Any, envelope: Any) -> str:
        owners.append(_socket_owner(session.peer, (sink.host, sink.port)))
        return await handle_data(server, session, envelope)

    sink.handler.handle_DATA = recording  # type: ignore[method-assign]
    return owners


def test_remote_mail_goes_out_from_the_delivery_user_with_auth_and_tls(
    tmp_path: Path, aiosmtpd_sink: Any, tls_certs: TlsCerts
) -> None:
    """Mail queued by root reaches a STARTTLS + AUTH smarthost over a connection owned
    by the delivery user; the child says its uid and gid; the spool is left empty; and
    auth.conf (root:dma 0640) is not readable by another user."""
    sink = aiosmtpd_sink(starttls=tls_certs.server_context(), auth=True)
    owners = _record_client_owners(sink)
    out = tmp_path / "out"
    _run(_layout(sink.port, "SECURETRANSFER\nSTARTTLS\nCAFILE /etc/dma/ca.pem") + f"""
        install -m 0644 {tls_certs.ca_file} /etc/dma/ca.pem
        message remote | $BIN/dma -D -f root@dma.test friend@remote.example 2> {out}.log
        id -u {DELIVERY_USER} > {out}.ids && id -g {DELIVERY_USER} >> {out}.ids
        ls -A /var/spool/dma > {out}.spool
        useradd --no-create-home outsider
        stat -c '%U:%G %a' /etc/dma/auth.conf > {out}.auth
        if runuser -u outsider -- cat /etc/dma/auth.conf; then echo readable; \\
            else echo unreadable; fi >> {out}.auth 2>/dev/null
    """)
    uid, gid = (int(n) for n in Path(f"{out}.ids").read_text().split())
    [arrival] = sink.wait_for(1)
    assert arrival.recipients == ["friend@remote.example"]
    assert arrival.tls and arrival.login == LOGIN
    assert owners == [uid] and uid != 0
    log = Path(f"{out}.log").read_text()
    assert UNPRIVILEGED.search(log) is not None, log
    said = UNPRIVILEGED.search(log)
    assert said is not None and said.group(1, 2, 3) == (DELIVERY_USER, str(uid), str(gid))
    assert "delivered" in log
    assert Path(f"{out}.spool").read_text().split() == [".slots"]
    assert Path(f"{out}.auth").read_text().split() == [f"root:{DELIVERY_USER}", "640",
                                                       "unreadable"]


def test_mx_delivery_from_the_child_asks_dns_and_works_hops_at_once(
    tmp_path: Path, aiosmtpd_sink: Any
) -> None:
    """Without a smarthost the child looks up an MX and a domain's own address (no MX)
    with dnspython and works both hops in threads, though the installation may not be
    readable by the delivery user (what it loads later was loaded before it gave up root)."""
    sink = aiosmtpd_sink()
    owners = _record_client_owners(sink)
    out = tmp_path / "out"
    records = (local("mx.test"), mx("multi.mx.test", "good.mx.test", 10),
               host_record("good.mx.test", "127.0.0.1"), host_record("nomx.mx.test", "127.0.0.1"))
    with running_dnsmasq(*records) as (address, port):
        _run(_layout(sink.port, f"NAMESERVER {address}:{port}") + f"""
            sed -i '/^SMARTHOST /d' /etc/dma/dma.conf
            message mx | $BIN/dma -D -f root@dma.test a@multi.mx.test b@nomx.mx.test \
                2> {out}.log
            id -u {DELIVERY_USER} > {out}.ids
        """)
    arrivals = sink.wait_for(2)
    assert sorted(r for a in arrivals for r in a.recipients) == ["a@multi.mx.test",
                                                                  "b@nomx.mx.test"]
    uid = int(Path(f"{out}.ids").read_text())
    assert owners == [uid, uid]
    log = Path(f"{out}.log").read_text()
    assert log.count(" delivered ") == 2 and "error" not in log, log


PROBE = r"""
import errno, json, os, sys
from dma.adapters.privileges import delivery_identity
from dma.core.ledger import Address, AddressId
from dma.core.outcomes import deferred
from dma.shell.remote import Parcel
from dma.shell.remote_child import deliver_as

spool, item, out = sys.argv[1:]
class Log:
    def __getattr__(self, level):
        return lambda event, **values: print(level, event, values, file=sys.stderr)

def attempt(action):
    try:
        action()
        return "allowed"
    except OSError as error:
        return errno.errorcode[error.errno]

def probe(parcels, report):
    status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
    found = {
        "read a root file": attempt(lambda: open("/etc/dma/root-only").read()),
        "read auth.conf": attempt(lambda: open("/etc/dma/auth.conf").read()),
        "read the M file": attempt(lambda: open(f"{spool}/M{item}", "rb").read()),
        "write the Q file": attempt(lambda: open(f"{spool}/Q{item}", "r+b").close()),
        "create in the spool": attempt(lambda: open(f"{spool}/tmp_probe", "xb").close()),
        "take a slot": attempt(lambda: open(f"{spool}/.slots/probe", "xb").close()),
        "become root": attempt(lambda: os.setuid(0)),
        **{key: " ".join(status[key].split()) for key in
           ("Uid", "Gid", "Groups", "NoNewPrivs", "CapEff")},
    }
    report(parcels[0].address.id, deferred(json.dumps(found)))

reports = []
parcel = Parcel(Address(AddressId(item), "x@remote.example"), None)
deliver_as(delivery_identity(), probe, [parcel], lambda a, o: reports.append(o.detail),
           Log(), claims=(), spooldir=spool)
open(out, "w").write(reports[0])
"""


def test_the_child_reads_the_spool_and_nothing_of_roots_and_writes_only_slots(
    tmp_path: Path,
) -> None:
    """As the child: a root 0600 file is refused, auth.conf and the queued M file (root:dma
    0640, like its Q file) can be read, the Q file and the spool directory cannot be
    written, a slot file can; root cannot be had back, no capability is left, and no
    new privileges can be gained.  An M file of root's alone is deferred, saying why."""
    out = tmp_path / "probe.json"
    (tmp_path / "probe.py").write_text(PROBE)
    _run(_layout(9, "DEFER") + f"""
        install -m 0600 /dev/null /etc/dma/root-only
        message queued | $BIN/dma -f root@dma.test friend@remote.example
        item=$(cd /var/spool/dma && ls Q* | sed 's/^Q//')
        stat -c '%n %U:%G %a' /var/spool/dma/Q$item /var/spool/dma/M$item > {out}.modes
        id -u {DELIVERY_USER} > {out}.ids && id -g {DELIVERY_USER} >> {out}.ids
        $PY {tmp_path}/probe.py /var/spool/dma "$item" {out}
        chmod 0600 /var/spool/dma/M$item
        sed -i '/^DEFER$/d' /etc/dma/dma.conf
        $BIN/dma -q
        grep '^X-Last-Error:' /var/spool/dma/Q$item > {out}.error
    """)
    uid, gid = Path(f"{out}.ids").read_text().split()
    modes = [line.split()[1:] for line in Path(f"{out}.modes").read_text().splitlines()]
    assert modes == [[f"root:{DELIVERY_USER}", "640"]] * 2
    found = json.loads(out.read_text())
    assert found == {
        "read a root file": "EACCES", "read auth.conf": "allowed",
        "read the M file": "allowed", "write the Q file": "EACCES",
        "create in the spool": "EACCES", "take a slot": "allowed", "become root": "EPERM",
        "Uid": f"{uid} {uid} {uid} {uid}", "Gid": f"{gid} {gid} {gid} {gid}",
        "Groups": gid, "NoNewPrivs": "1", "CapEff": "0000000000000000",
    }
    error = Path(f"{out}.error").read_text()
    assert "Permission denied (remote delivery runs as uid" in error, error


class _StallingSink:
    """A plain SMTP sink that accepts the first message and never answers the end of
    the second one (and touches ``stalled`` then), so that a test can kill the client."""

    def __init__(self, stalled: Path) -> None:
        self.stalled = stalled
        self.accepted: list[str] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            connection, _ = self.listener.accept()
        except OSError:
            return
        with connection, connection.makefile("rwb") as wire:
            self._session(wire)

    def _session(self, wire: Any) -> None:
        recipients: list[str] = []
        wire.write(b"220 stall.test ESMTP\r\n")
        wire.flush()
        while line := wire.readline():
            verb = line[:4].upper()
            if verb == b"RCPT":
                recipients.append(line.decode().split(":", 1)[1].strip(" <>\r\n"))
            if verb == b"DATA":
                wire.write(b"354 go on\r\n")
                wire.flush()
                while wire.readline() not in (b".\r\n", b""):
                    pass
                if self.accepted:
                    self.stalled.touch()
                    self.stop.wait(60)
                    return
                self.accepted.extend(recipients)
            recipients = [] if verb in (b"DATA", b"RSET") else recipients
            wire.write(b"221 bye\r\n" if verb == b"QUIT" else b"250 ok\r\n")
            wire.flush()

    def close(self) -> None:
        self.stop.set()
        self.listener.close()


@pytest.fixture(name="stalling_sink")
def stalling_sink_fixture(tmp_path: Path) -> Iterator[_StallingSink]:
    sink = _StallingSink(tmp_path / "stalled")
    yield sink
    sink.close()


def test_a_killed_child_defers_what_it_left_open_and_nothing_is_sent_twice(
    tmp_path: Path, stalling_sink: _StallingSink, aiosmtpd_sink: Any
) -> None:
    """Two queued messages, one hop: the first is accepted (its item leaves the spool at
    once), the child is SIGKILLed while the second waits for its answer; the run defers
    the second with the child's end as the reason, and the next run sends only it."""
    good = aiosmtpd_sink(auth=True, auth_require_tls=False)
    out = tmp_path / "out"
    _run(_layout(stalling_sink.port, "INSECURE", timeout="60s") + f"""
        message first | $BIN/dma -bq -f root@dma.test first@remote.example
        message second | $BIN/dma -bq -f root@dma.test second@remote.example
        $BIN/dma -q -v 2> {out}.log &
        runner=$!
        for _ in $(seq 300); do [ -e {stalling_sink.stalled} ] && break; sleep 0.1; done
        pid=$(sed -n 's/.*remote delivery runs unprivileged.* pid=\\([0-9]*\\).*/\\1/p' {out}.log)
        grep -E '^(Uid|CapEff):' /proc/$pid/status > {out}.status
        kill -KILL "$pid"
        wait "$runner" || true
        cat /var/spool/dma/Q* > {out}.queued
        sed -i 's/^PORT .*/PORT {good.port}/' /etc/dma/dma.conf
        $BIN/dma -q -v 2> {out}.second.log
        ls -A /var/spool/dma > {out}.spool
    """)
    log = Path(f"{out}.log").read_text()
    said = UNPRIVILEGED.search(log)
    assert said is not None, log
    status = dict(line.split(":", 1) for line in Path(f"{out}.status").read_text().splitlines())
    assert status["Uid"].split() == [said.group(2)] * 4 and int(status["CapEff"], 16) == 0
    assert f"pid={said.group(4)} status=-9" in log
    queued = Path(f"{out}.queued").read_text()
    left = "second@remote.example" if stalling_sink.accepted == ["first@remote.example"] \
        else "first@remote.example"
    assert stalling_sink.accepted in (["first@remote.example"], ["second@remote.example"])
    assert queued.count("Recipient:") == 1 and f"Recipient: {left}" in queued
    assert f"the remote delivery process (pid {said.group(4)}) was killed by signal 9" \
        in queued
    [arrival] = good.wait_for(1)
    assert arrival.recipients == [left] and arrival.login == LOGIN
    assert len(good.messages) == 1
    assert Path(f"{out}.spool").read_text().split() == [".slots"]


def test_local_mail_makes_mailboxes_as_the_host_does(tmp_path: Path) -> None:
    """Delivered by root: in a root:mail 2775 /var/mail a new mailbox is <user>:mail 0660
    (Debian); in a MAILDIR of root's other group it is <user>:<user's group> 0600."""
    out = tmp_path / "out"
    _run(_layout(9) + f"""
        useradd --no-create-home mailee
        message local | $BIN/dma -D -f root@dma.test mailee
        stat -c '%U:%G %a' /var/mail/mailee > {out}
        grep -c '^hello from root$' /var/mail/mailee >> {out}
        install -d -m 0755 /var/lib/other-mail
        sed 's|^AUTHPATH .*|MAILDIR /var/lib/other-mail|' /etc/dma/dma.conf > /etc/dma/other.conf
        message other | $BIN/dma -C /etc/dma/other.conf -D -f root@dma.test mailee
        stat -c '%U:%G %a' /var/lib/other-mail/mailee >> {out}
    """)
    assert out.read_text().split() == ["mailee:mail", "660", "1", "mailee:mailee", "600"]
