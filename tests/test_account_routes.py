"""Routes per sender (SPEC 2.4): accounts.toml sends each sender's mail through its own
smarthost and login; unmatched and null senders take dma.conf's default route."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

from conftest import DmaSite
from smtp_peers import (  # noqa: F401 (fixtures)
    AiosmtpdSink,
    aiosmtpd_sink_fixture,
    write_remote_config,
)

SinkFactory = Callable[..., AiosmtpdSink]
OFFICE_SECRET = "office-Pa55-from-a-file"
FAST_SECRET = "fast-Pa55-from-a-command"
MESSAGE = b"Subject: routed\n\nhello\n"


def _accounts(site: DmaSite, office_port: int, fast_port: int, fast_command: list[str]) -> str:
    """An accounts file (0600) with two accounts and their routes; the ACCOUNTS line."""
    secret = site.root / "office.secret"
    secret.write_text(OFFICE_SECRET + "\n")
    secret.chmod(0o600)
    command = ", ".join(f'"{word}"' for word in fast_command)
    path = site.root / "accounts.toml"
    path.write_text(f"""
[accounts.office]
host = "127.0.0.1"
port = {office_port}
tls = "none"
login = "office-login"
password_file = "{secret}"

[accounts.fast]
host = "127.0.0.1"
port = {fast_port}
tls = "none"
login = "fast-login"
password_command = [{command}]

[routes]
"@office.example" = "office"
"me@fast.example" = "fast"
""")
    path.chmod(0o600)
    return f"ACCOUNTS {path}\n"


def _send(site: DmaSite, sender: str, recipient: str) -> None:
    site.send(["-f", sender, recipient], MESSAGE)


def _everything_said(site: DmaSite, stderr: bytes) -> bytes:
    """Every channel a secret could leak to: the run's stderr (-v), the spool, listings."""
    spool = b"".join(p.read_bytes() for p in site.spool.rglob("*") if p.is_file())
    listing = site.run(["-bj"]).stdout + site.run([], program="mailq").stdout
    return stderr + spool + listing


def _assert_nowhere(said: bytes, *secrets: str) -> None:
    for secret in secrets:
        for form in (secret.encode(), base64.b64encode(secret.encode())):
            assert form not in said, form


def test_each_sender_goes_through_its_account_and_the_rest_take_the_default_route(
    site: DmaSite, aiosmtpd_sink: SinkFactory, tmp_path: Path
) -> None:
    """Two senders, two accounts, two smarthosts (SCRAM logins: the secret from a file
    and from a command); an unmatched sender and the null sender go to dma.conf's
    SMARTHOST without AUTH; one queue run delivers all four; no secret is shown."""
    default = aiosmtpd_sink()
    office = aiosmtpd_sink(auth=True, auth_require_tls=False, sasl=("SCRAM-SHA-256",),
                           login="office-login", password=OFFICE_SECRET)
    fast = aiosmtpd_sink(auth=True, auth_require_tls=False, sasl=("SCRAM-SHA-256",),
                         login="fast-login", password=FAST_SECRET)
    secret_file = tmp_path / "fast.secret"
    secret_file.write_text(FAST_SECRET + "\n")
    accounts = _accounts(site, office.port, fast.port, ["cat", str(secret_file)])
    write_remote_config(site, default.port, accounts, defer=True)
    _send(site, "boss@office.example", "a@example.org")
    _send(site, "me@fast.example", "b@example.org")
    _send(site, "someone@else.example", "c@example.org")
    _send(site, "", "d@example.org")
    done = site.run(["-q", "-v"], timeout=60)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    (via_office,) = office.wait_for(1)
    (via_fast,) = fast.wait_for(1)
    arrived = default.wait_for(2)
    assert (via_office.sender, via_office.recipients, via_office.login) == (
        "boss@office.example", ["a@example.org"], "office-login")
    assert (via_fast.sender, via_fast.recipients, via_fast.login) == (
        "me@fast.example", ["b@example.org"], "fast-login")
    assert sorted((a.sender, a.login) for a in arrived) == [
        ("<>", None), ("someone@else.example", None)]
    assert office.handler.auth_mechanisms == fast.handler.auth_mechanisms == ["SCRAM-SHA-256"]
    assert site.queue() == []
    _assert_nowhere(_everything_said(site, done.stderr), OFFICE_SECRET, FAST_SECRET)


def test_a_failing_password_command_defers_only_its_accounts_mail(
    site: DmaSite, aiosmtpd_sink: SinkFactory
) -> None:
    """The fast account's password command fails: its mail stays queued with a reason
    that names the command and its status; the office account's and the default route's
    mail are delivered in the same run; nothing of the command's output is shown."""
    default = aiosmtpd_sink()
    office = aiosmtpd_sink(auth=True, auth_require_tls=False, sasl=("SCRAM-SHA-256",),
                           login="office-login", password=OFFICE_SECRET)
    leak = "stdout-that-must-not-show"
    accounts = _accounts(site, office.port, 9,
                         ["sh", "-c", f"echo {leak}; echo 'no such key' >&2; exit 3"])
    write_remote_config(site, default.port, accounts, defer=True)
    _send(site, "boss@office.example", "a@example.org")
    (waiting,) = site.send(["-f", "me@fast.example", "b@example.org"], MESSAGE)
    _send(site, "someone@else.example", "c@example.org")
    done = site.run(["-q"], timeout=60)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    office.wait_for(1)
    default.wait_for(1)
    (left,) = site.queue()
    assert left["id"] == waiting
    reason = str(left["last_error"])
    assert "sh" in reason and "3" in reason and "no such key" in reason, reason
    assert leak.encode() not in _everything_said(site, done.stderr)
    _assert_nowhere(_everything_said(site, done.stderr), OFFICE_SECRET)
