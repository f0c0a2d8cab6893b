"""SCRAM, XOAUTH2 and OAUTHBEARER against aiosmtpd on loopback (SPEC 5.6, issue 10).

The sinks' server sides are written from the RFCs in ``sasl_servers`` (aiosmtpd has
none).  SCRAM runs end to end (``sendmail -D -v`` with auth.conf); the OAuth2
mechanisms run through the SMTP driver with a ``TryAddress`` carrying an OAuth2
``Credentials`` (accounts.toml, which makes those, is another module's).  Every test
searches what it can see (stderr with -v, the log lines, the queue files and
listings, the outcomes) for the secret and its base64 forms.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiosmtpd.smtp
import pytest
from conftest import DmaSite
from smtp_peers import (  # noqa: F401 (fixtures)
    LOGIN,
    PASSWORD,
    TOKEN,
    AiosmtpdSink,
    aiosmtpd_sink_fixture,
    bounces,
    q_fields,
    write_auth,
    write_remote_config,
)
from test_smtp_connection import PLAIN, Hop

from dma.core.credentials import Credentials
from dma.core.hop_attempts import HopAttempts, HopDone, HopTarget, SessionResult, TryAddress
from dma.core.ledger import AddressId
from dma.core.outcomes import Outcome

MESSAGE = b"Subject: sasl\n\nover the wire\n"
RECIPIENT = "bob@example.org"
SinkFactory = Callable[..., AiosmtpdSink]
EVERY_PASSWORD_MECHANISM = ("SCRAM-SHA-256", "SCRAM-SHA-1")


def _forms(secret: str) -> list[str]:
    """The secret and the base64 forms a leak could take."""
    raw = secret.encode()
    return [secret, base64.b64encode(raw).decode(), base64.b64encode(raw).decode()[:16],
            base64.b64encode(b"\0" + LOGIN.encode() + b"\0" + raw).decode()]


def _spool_text(site: DmaSite) -> bytes:
    """Every file in the spool (Q files above all), and what mailq and -bj say."""
    found = b"".join(path.read_bytes() for path in site.spool.rglob("*") if path.is_file())
    return found + site.run([], program="mailq").stdout + site.run(["-bj"]).stdout


def _nowhere(site: DmaSite, stderr: str, secret: str) -> None:
    """``secret`` is in no output channel: stderr (trace and log), the spool, listings."""
    spool = _spool_text(site).decode("utf-8", "replace")
    for form in _forms(secret):
        assert form not in stderr, form
        assert form not in spool, form


def _send(site: DmaSite) -> tuple[int, str]:
    done = site.run(["-D", "-v", RECIPIENT], MESSAGE, program="sendmail", timeout=30)
    return done.returncode, done.stderr.decode(errors="replace")


def _scram_sink(aiosmtpd_sink: SinkFactory, *mechanisms: str) -> AiosmtpdSink:
    """A plain-text sink offering ``mechanisms`` (SCRAM goes without TLS) and the rest."""
    return aiosmtpd_sink(auth=True, auth_require_tls=False, cram_md5=True, sasl=mechanisms)


def _auth_lines(stderr: str) -> list[str]:
    """What -v shows we sent from AUTH up to the next command."""
    lines = [line for line in stderr.splitlines() if line.startswith(">>> ")]
    start = next(i for i, line in enumerate(lines) if line.startswith(">>> AUTH"))
    end = next((i for i, line in enumerate(lines[start + 1:], start + 1)
                if line.startswith((">>> MAIL", ">>> QUIT"))), len(lines))
    return lines[start:end]


# --- SCRAM end to end ---------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", EVERY_PASSWORD_MECHANISM)
def test_scram_delivers_and_is_preferred(site: DmaSite, aiosmtpd_sink: SinkFactory,
                                         mechanism: str) -> None:
    """Offered with CRAM-MD5, PLAIN and LOGIN (and SCRAM-SHA-1 below SHA-256), SCRAM is
    chosen, proves the password, checks the server's signature and the mail arrives
    authenticated; -v shows ``AUTH <mech> ***`` and ``***`` for each answer."""
    offered = EVERY_PASSWORD_MECHANISM[EVERY_PASSWORD_MECHANISM.index(mechanism):]
    sink = _scram_sink(aiosmtpd_sink, *offered)
    write_remote_config(site, sink.port, write_auth(site))
    code, stderr = _send(site)
    assert code == 0, stderr
    [arrival] = sink.wait_for(1)
    assert arrival.login == LOGIN
    assert sink.handler.auth_mechanisms == [mechanism]
    assert _auth_lines(stderr) == [f">>> AUTH {mechanism} ***", ">>> ***", ">>> ***"]
    assert site.queue() == []
    _nowhere(site, stderr, PASSWORD)


def test_scram_signature_with_the_success_reply(site: DmaSite,
                                                aiosmtpd_sink: SinkFactory) -> None:
    """A server that sends its signature with the 235 (no last 334) is verified there."""
    sink = _scram_sink(aiosmtpd_sink, "SCRAM-SHA-256")
    sink.handler.scram_final_in_success = True
    write_remote_config(site, sink.port, write_auth(site))
    code, stderr = _send(site)
    assert code == 0, stderr
    [arrival] = sink.wait_for(1)
    assert arrival.login == LOGIN
    assert _auth_lines(stderr) == [">>> AUTH SCRAM-SHA-256 ***", ">>> ***"]
    _nowhere(site, stderr, PASSWORD)


def test_scram_bad_password_defers(site: DmaSite, aiosmtpd_sink: SinkFactory) -> None:
    """A password the server does not hold: 535, deferred, no MAIL, nothing bounced."""
    sink = _scram_sink(aiosmtpd_sink, "SCRAM-SHA-256")
    wrong = "not-the-password-42"
    write_remote_config(site, sink.port, write_auth(site, password=wrong))
    code, stderr = _send(site)
    assert code == 75, stderr
    assert sink.handler.auth_mechanisms == ["SCRAM-SHA-256"]
    assert sink.handler.mail_commands == 0 and sink.messages == []
    [item] = site.queue()
    error = q_fields(site, item["id"])["X-Last-Error"]
    assert "refused AUTH SCRAM-SHA-256: 535" in error
    assert bounces(site) == []
    _nowhere(site, stderr, wrong)


@pytest.mark.parametrize("in_success", [False, True])
def test_wrong_scram_signature_fails_the_session(site: DmaSite, aiosmtpd_sink: SinkFactory,
                                                 in_success: bool) -> None:
    """A server whose signature is wrong (it does not know the password, or is not the
    server) is never trusted: in a 334 we cancel with ``*``, with the 235 we quit; the
    item is deferred saying why, nothing is sent, nothing bounces."""
    sink = _scram_sink(aiosmtpd_sink, "SCRAM-SHA-256")
    sink.handler.scram_tamper = True
    sink.handler.scram_final_in_success = in_success
    write_remote_config(site, sink.port, write_auth(site))
    code, stderr = _send(site)
    assert code == 75, stderr
    assert sink.handler.mail_commands == 0 and sink.messages == []
    [item] = site.queue()
    error = q_fields(site, item["id"])["X-Last-Error"]
    assert "signature is wrong" in error and "not trusted" in error
    assert item["last_error"] == error
    sent = _auth_lines(stderr)
    if in_success:
        assert sent == [">>> AUTH SCRAM-SHA-256 ***", ">>> ***"]
    else:
        assert sent == [">>> AUTH SCRAM-SHA-256 ***", ">>> ***", ">>> *"]
        assert "501" in error
    assert ">>> QUIT" in stderr
    assert bounces(site) == []
    _nowhere(site, stderr, PASSWORD)


# --- OAuth2 through the driver ---------------------------------------------------------------


def _oauth2_hop(tmp_path: Path, sink: AiosmtpdSink, token: str = TOKEN,
                mechanism: str | None = None, *, insecure: bool = True) -> tuple[Hop, Seen]:
    """The hop loop with an OAuth2 token for the sink; -v on (the trace goes to stderr)."""
    hop = Hop(tmp_path, sink.port, (RECIPIENT,), insecure=insecure)
    hop.driver.verbose = True
    credentials = Credentials(LOGIN, token, "oauth2", mechanism)
    attempts = HopAttempts([HopTarget(hop.target, credentials)], hop.ids, security=PLAIN)
    results = []
    while not isinstance(step := attempts.next_step(), HopDone):
        if isinstance(step, TryAddress):  # LeaveHost after an auth failure: nothing to do
            results.append(hop.driver.session(hop.hop, step, hop.messages))
            attempts.session_ended(results[-1])
    return hop, Seen(results, step.outcomes[AddressId("abc.0")])


def _oauth_sink(aiosmtpd_sink: SinkFactory, *mechanisms: str) -> AiosmtpdSink:
    return aiosmtpd_sink(auth=True, auth_require_tls=False, sasl=mechanisms)


@dataclass
class Seen:
    """What the hop loop gave: each connection's result, and the item's outcome (its
    detail is what the Q file's X-Last-Error would say)."""

    results: list[SessionResult[AddressId]]
    outcome: Outcome


def _token_nowhere(hop: Hop, seen: Seen, stderr: str, token: str) -> None:
    """The token is in no log line, trace line, result or outcome."""
    for form in _forms(token):
        assert form not in stderr
        assert form not in repr(hop.log.lines)
        assert form not in repr(seen) and form not in seen.outcome.detail


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_oauth2_token_delivers(tmp_path: Path, aiosmtpd_sink: SinkFactory,
                               capfd: pytest.CaptureFixture[str], mechanism: str) -> None:
    """An OAuth2 access token logs in (XOAUTH2 first when both are offered); OAUTHBEARER
    names the server and port; the mail arrives as the login."""
    sink = _oauth_sink(aiosmtpd_sink, "XOAUTH2", "OAUTHBEARER", "SCRAM-SHA-256")
    hop, seen = _oauth2_hop(tmp_path, sink, mechanism=None if mechanism == "XOAUTH2"
                            else mechanism)
    assert seen.outcome.kind == "delivered"
    [arrival] = sink.wait_for(1)
    assert arrival.login == LOGIN
    assert sink.handler.auth_mechanisms == [mechanism]
    if mechanism == "OAUTHBEARER":
        assert sink.handler.oauth_fields == [{"host": "127.0.0.1", "port": str(sink.port)}]
    stderr = capfd.readouterr().err
    assert f">>> AUTH {mechanism} ***" in stderr
    _token_nowhere(hop, seen, stderr, TOKEN)


def test_a_long_token_follows_the_first_challenge(
        tmp_path: Path, aiosmtpd_sink: SinkFactory, capfd: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A token too long for the AUTH line (Microsoft's are) goes bare, then after the 334."""
    # RFC 4954 4 lets a response line reach 12288 octets; aiosmtpd reads 1001 at most
    monkeypatch.setattr(aiosmtpd.smtp.SMTP, "line_length_limit", 12288)
    token = "eyJ0eXAiOiJKV1Qi." + "A" * 1500 + ".sig-nature_"
    sink = _oauth_sink(aiosmtpd_sink, "XOAUTH2")
    sink.handler.token = token
    hop, seen = _oauth2_hop(tmp_path, sink, token)
    assert seen.outcome.kind == "delivered"
    stderr = capfd.readouterr().err
    assert ">>> AUTH XOAUTH2\n" in stderr and ">>> ***" in stderr
    _token_nowhere(hop, seen, stderr, token)


@pytest.mark.parametrize(("mechanism", "answer", "words"), [
    ("XOAUTH2", b"", ["status 401", "scope https://mail.google.com/"]),
    ("OAUTHBEARER", b"\x01", ["status invalid_token", "scope example_scope",
                              "openid-configuration https://example.com/.well-known/"]),
])
def test_refused_token_error_challenge_is_decoded_answered_and_defers(
        tmp_path: Path, aiosmtpd_sink: SinkFactory, capfd: pytest.CaptureFixture[str],
        mechanism: str, answer: bytes, words: list[str]) -> None:
    """A refused token: the server's 334 error report is decoded and answered as the
    mechanism says (XOAUTH2 empty, OAUTHBEARER ^A), the 535 ends it, the log line and
    the deferral say what the server reported; nothing is sent."""
    sink = _oauth_sink(aiosmtpd_sink, mechanism)
    stale = "ya29.expired-token-value"
    hop, seen = _oauth2_hop(tmp_path, sink, stale)
    assert sink.handler.oauth_answers == [answer]
    assert sink.handler.mail_commands == 0 and sink.messages == []
    assert seen.outcome.kind == "deferred" and seen.results[0].auth == "refused"
    detail = seen.outcome.detail
    for word in [*words, "535", f"AUTH {mechanism} failed", "oauth2 login"]:
        assert word in detail, detail
    [failed] = [v for level, event, v in hop.log.lines if event == "session failed"]
    assert all(word in failed["reason"] for word in words)
    stderr = capfd.readouterr().err
    _token_nowhere(hop, seen, stderr, stale)


def test_oauth2_never_goes_without_tls(tmp_path: Path, aiosmtpd_sink: SinkFactory,
                                       capfd: pytest.CaptureFixture[str]) -> None:
    """Without TLS and without INSECURE a token is not sent: no mechanism we may use."""
    sink = _oauth_sink(aiosmtpd_sink, "XOAUTH2", "OAUTHBEARER")
    hop, seen = _oauth2_hop(tmp_path, sink, insecure=False)
    assert sink.handler.auth_mechanisms == [] and sink.messages == []
    assert seen.results[0].auth == "unusable" and seen.outcome.kind == "deferred"
    assert "never sent without TLS" in seen.outcome.detail
    _token_nowhere(hop, seen, capfd.readouterr().err, TOKEN)
