"""Tests for the sans-I/O SMTP client (dma.core.smtp, smtp_reply, smtp_auth): exact wire bytes."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from typing import Literal, TypeVar

import pytest

from dma.core.credentials import Credentials
from dma.core.errors import DmaError, SoftwareError, TempFailure
from dma.core.sasl import CramMd5, SaslError
from dma.core.smtp import (
    Closed,
    Envelope,
    Event,
    LocalProtocolError,
    MessageDone,
    Outcome,
    Ready,
    ReadyForData,
    RecipientResult,
    SessionFailed,
    SessionPolicy,
    SmtpClient,
    Stage,
    StartTls,
    State,
    Transmit,
    classify,
)
from dma.core.smtp_auth import Choice, choose_mechanism, decode_challenge
from dma.core.smtp_reply import (
    MAX_LINE_OCTETS,
    Extensions,
    RemoteProtocolError,
    Reply,
    ReplyParser,
    parse_ehlo,
)

T = TypeVar("T")

PLAIN = SessionPolicy("client.example", "no", False)
NONCE = "rOprNGfwEbeRWgbNEkqO"  # RFC 7677's client nonce


def auth_policy(starttls: Literal["no", "required", "opportunistic"], tls_active: bool,
                login: str, password: str, *, insecure: bool = False) -> SessionPolicy:
    """A session policy with a login and password (and a SCRAM nonce)."""
    return SessionPolicy("client.example", starttls, tls_active, Credentials(login, password),
                         insecure, nonce=NONCE)
ENV = Envelope("alice@here.example", ("bob@there.example",), 42, False)
BODY = [b"Subject: hi\n", b"\n", b"hello\n"]
BODY_WIRE = b"Subject: hi\r\n\r\nhello\r\n.\r\n"

GREETING = b"220 mx.there.example ESMTP\r\n"
EHLO_BARE = b"250 mx.there.example\r\n"


def ehlo(*keywords: str) -> bytes:
    """An EHLO reply announcing ``keywords``."""
    lines = ["mx.there.example", *keywords]
    return b"".join(
        f"250{'-' if i < len(lines) - 1 else ' '}{line}\r\n".encode()
        for i, line in enumerate(lines)
    )


def drive(
    policy: SessionPolicy,
    replies: Sequence[bytes],
    messages: Sequence[tuple[Envelope, list[bytes]]] = (),
) -> tuple[list[bytes], list[Event]]:
    """Run a whole session like the shell will: server chunks in, every write out.

    When the scripted replies run out the server closes the connection.  A TLS
    handshake shows in the writes as ``<TLS>``.
    """
    client = SmtpClient(policy)
    writes: list[bytes] = []
    events: list[Event] = []
    queue = list(messages)
    pending = list(replies)
    lines: list[bytes] = []
    while True:
        event = client.next_event()
        if event is None:
            client.receive_data(pending.pop(0) if pending else b"")
            continue
        events.append(event)
        if isinstance(event, Transmit):
            writes.append(event.data)
        elif isinstance(event, StartTls):
            writes.append(b"<TLS>")
            writes.append(client.tls_established())
        elif isinstance(event, (Ready, MessageDone)):
            if queue and client.can_send_message:
                envelope, lines = queue.pop(0)
                data = client.send_message(envelope)
                if data:
                    writes.append(data)
            elif data := client.quit():
                writes.append(data)
        elif isinstance(event, ReadyForData):
            writes.append(b"".join(client.send_data_lines(lines)))
        elif isinstance(event, SessionFailed):
            data = client.quit()
            if data:
                writes.append(data)
        elif isinstance(event, Closed):
            return writes, events


def of_type(events: list[Event], kind: type[T]) -> list[T]:
    """The events of one type, in order."""
    return [event for event in events if isinstance(event, kind)]


def outcomes(events: list[Event]) -> list[tuple[str, Outcome, Stage]]:
    """The final (recipient, outcome, stage) of every MessageDone, in order."""
    return [
        (result.recipient, result.outcome, result.stage)
        for done in of_type(events, MessageDone)
        for result in done.results
    ]


# --- whole sessions, exact bytes ---------------------------------------------------------


def test_plain_session_without_pipelining_is_one_command_per_round_trip() -> None:
    """Greeting, EHLO, MAIL, RCPT, DATA, the data, QUIT: each its own write, in order."""
    writes, events = drive(
        PLAIN,
        [GREETING, ehlo("8BITMIME"), b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n",
         b"250 queued as X\r\n", b"221 bye\r\n"],
        [(ENV, BODY)],
    )
    assert writes == [
        b"EHLO client.example\r\n",
        b"MAIL FROM:<alice@here.example>\r\n",
        b"RCPT TO:<bob@there.example>\r\n",
        b"DATA\r\n",
        BODY_WIRE,
        b"QUIT\r\n",
    ]
    assert outcomes(events) == [("bob@there.example", Outcome.DELIVERED, Stage.DATA_END)]
    assert isinstance(events[-1], Closed)


def test_pipelining_sends_mail_rcpts_and_data_in_one_write() -> None:
    """With PIPELINING offered, MAIL, every RCPT and DATA leave in a single write."""
    env = Envelope("a@h.example", ("b@t.example", "c@t.example"), 42, False)
    replies = [GREETING, ehlo("PIPELINING"), b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n",
               b"250 ok\r\n", b"221 bye\r\n"]
    writes, events = drive(PLAIN, replies, [(env, BODY)])
    assert writes[1] == (
        b"MAIL FROM:<a@h.example>\r\nRCPT TO:<b@t.example>\r\nRCPT TO:<c@t.example>\r\nDATA\r\n"
    )
    assert [r for _, r, _ in outcomes(events)] == [Outcome.DELIVERED, Outcome.DELIVERED]


def test_pipelined_replies_may_arrive_in_any_chunking() -> None:
    """The same pipelined replies split byte by byte give the same outcomes."""
    env = Envelope("a@h.example", ("b@t.example", "c@t.example"), 42, False)
    answers = b"250 ok\r\n250 ok\r\n550 no\r\n354 go\r\n250 ok\r\n"
    stream = GREETING + ehlo("PIPELINING") + answers
    whole = drive(PLAIN, [GREETING, ehlo("PIPELINING"), answers, b"221 bye\r\n"], [(env, BODY)])
    bytewise = drive(PLAIN, [bytes([b]) for b in stream] + [b"221 bye\r\n"], [(env, BODY)])
    assert outcomes(whole[1]) == outcomes(bytewise[1])
    assert outcomes(whole[1])[1][1] is Outcome.PERMANENT


def test_without_pipelining_each_rcpt_waits_for_the_previous_reply() -> None:
    """Without PIPELINING the second RCPT is written only after the first one's reply."""
    env = Envelope("a@h.example", ("b@t.example", "c@t.example"), 42, False)
    writes, _ = drive(
        PLAIN,
        [GREETING, EHLO_BARE, b"250 ok\r\n", b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n",
         b"250 ok\r\n", b"221 bye\r\n"],
        [(env, BODY)],
    )
    assert writes[1:4] == [
        b"MAIL FROM:<a@h.example>\r\n", b"RCPT TO:<b@t.example>\r\n", b"RCPT TO:<c@t.example>\r\n"
    ]


def test_ehlo_rejected_falls_back_to_helo_without_extensions() -> None:
    """A 5xx to EHLO makes the client say HELO; then no MAIL parameters are used."""
    writes, events = drive(
        PLAIN,
        [GREETING, b"502 5.5.1 EHLO not implemented\r\n", b"250 hello\r\n", b"250 ok\r\n",
         b"250 ok\r\n", b"354 go\r\n", b"250 ok\r\n", b"221 bye\r\n"],
        [(Envelope("a@h.example", ("b@t.example",), 42, True, dsn_ret="FULL"), BODY)],
    )
    assert writes[:3] == [
        b"EHLO client.example\r\n", b"HELO client.example\r\n", b"MAIL FROM:<a@h.example>\r\n"
    ]
    ready = of_type(events, Ready)[0]
    assert ready.extensions == Extensions()
    assert any("HELO" in notice for notice in ready.notices)


def test_helo_also_rejected_fails_the_session_temporarily() -> None:
    """When HELO is refused too, the host is given up on, temporarily, and QUIT is sent."""
    writes, events = drive(PLAIN, [GREETING, b"500 no\r\n", b"550 no\r\n", b"221 bye\r\n"])
    failed = of_type(events, SessionFailed)[0]
    assert (failed.outcome, failed.stage) == (Outcome.TEMPORARY, Stage.HELO)
    assert writes[-1] == b"QUIT\r\n"


def test_421_greeting_fails_without_quit() -> None:
    """A 421 greeting is a temporary host failure, and a closing server gets no QUIT."""
    writes, events = drive(PLAIN, [b"421 4.3.2 too busy\r\n"], [(ENV, BODY)])
    assert writes == []
    failed = of_type(events, SessionFailed)[0]
    assert (failed.outcome, failed.stage, failed.reply) == (
        Outcome.TEMPORARY, Stage.GREETING, Reply(421, ("4.3.2 too busy",), "4.3.2")
    )
    assert of_type(events, MessageDone) == []


def test_554_greeting_is_a_host_failure_not_a_bounce() -> None:
    """A 5xx greeting fails the session as TEMPORARY (next host), and we QUIT politely."""
    writes, events = drive(PLAIN, [b"554 go away\r\n", b"221 bye\r\n"], [(ENV, BODY)])
    assert writes == [b"QUIT\r\n"]
    assert of_type(events, SessionFailed)[0].outcome is Outcome.TEMPORARY


def test_starttls_then_ehlo_again_with_the_new_extensions() -> None:
    """After STARTTLS is accepted the driver does TLS, then EHLO is sent again and read anew."""
    policy = SessionPolicy("client.example", "required", False)
    writes, events = drive(
        policy,
        [GREETING, ehlo("STARTTLS"), b"220 go ahead\r\n", ehlo("SIZE 1000"), b"250 ok\r\n",
         b"250 ok\r\n", b"354 go\r\n", b"250 ok\r\n", b"221 bye\r\n"],
        [(ENV, BODY)],
    )
    assert writes[:5] == [
        b"EHLO client.example\r\n",
        b"STARTTLS\r\n",
        b"<TLS>",
        b"EHLO client.example\r\n",
        b"MAIL FROM:<alice@here.example> SIZE=42\r\n",
    ]
    ready = of_type(events, Ready)[0]
    assert ready.tls_active and ready.extensions.size == 1000


def test_required_starttls_not_offered_fails_temporarily() -> None:
    """STARTTLS required but not announced: the session fails TEMPORARY before any MAIL."""
    policy = SessionPolicy("client.example", "required", False)
    writes, events = drive(policy, [GREETING, EHLO_BARE, b"221 bye\r\n"], [(ENV, BODY)])
    assert writes == [b"EHLO client.example\r\n", b"QUIT\r\n"]
    assert "STARTTLS" in of_type(events, SessionFailed)[0].reason


def test_required_starttls_refused_fails_temporarily() -> None:
    """STARTTLS required and refused with 454: temporary failure, no plain-text mail."""
    policy = SessionPolicy("client.example", "required", False)
    writes, events = drive(
        policy, [GREETING, ehlo("STARTTLS"), b"454 4.7.0 TLS not available\r\n", b"221 bye\r\n"],
        [(ENV, BODY)],
    )
    assert b"MAIL" not in b"".join(writes)
    assert of_type(events, SessionFailed)[0].stage is Stage.STARTTLS


def test_opportunistic_starttls_refused_continues_in_plain_text() -> None:
    """Opportunistic STARTTLS refused: the mail goes in plain text and Ready says so."""
    policy = SessionPolicy("client.example", "opportunistic", False)
    writes, events = drive(
        policy,
        [GREETING, ehlo("STARTTLS"), b"454 no TLS\r\n", b"250 ok\r\n", b"250 ok\r\n",
         b"354 go\r\n", b"250 ok\r\n", b"221 bye\r\n"],
        [(ENV, BODY)],
    )
    assert writes[:3] == [b"EHLO client.example\r\n", b"STARTTLS\r\n",
                          b"MAIL FROM:<alice@here.example>\r\n"]
    ready = of_type(events, Ready)[0]
    assert not ready.tls_active and any("STARTTLS" in n for n in ready.notices)


def test_opportunistic_plain_text_never_sends_plain_or_login() -> None:
    """After a refused opportunistic STARTTLS, a server offering only PLAIN LOGIN gets no AUTH."""
    policy = auth_policy("opportunistic", False, "user", "secret")
    writes, events = drive(
        policy, [GREETING, ehlo("STARTTLS", "AUTH PLAIN LOGIN"), b"454 no\r\n", b"221 bye\r\n"],
        [(ENV, BODY)],
    )
    assert writes == [b"EHLO client.example\r\n", b"STARTTLS\r\n", b"QUIT\r\n"]
    failed = of_type(events, SessionFailed)[0]
    assert failed.outcome is Outcome.TEMPORARY and "INSECURE" in failed.reason


def test_data_after_the_starttls_reply_is_treated_as_injection() -> None:
    """Bytes that follow the 220 to STARTTLS before TLS are refused: no handshake, no QUIT."""
    policy = SessionPolicy("client.example", "required", False)
    writes, events = drive(
        policy, [GREETING, ehlo("STARTTLS"), b"220 go\r\n250 injected\r\n"], [(ENV, BODY)]
    )
    assert writes == [b"EHLO client.example\r\n", b"STARTTLS\r\n"]
    assert of_type(events, StartTls) == []
    assert "injection" in of_type(events, SessionFailed)[0].reason


def test_auth_cram_md5_with_the_rfc_2195_example() -> None:
    """CRAM-MD5 answers RFC 2195's example challenge with the RFC's response, even without TLS."""
    policy = auth_policy("no", False, "tim", "tanstaaftanstaaf")
    challenge = base64.b64encode(b"<1896.697170952@postoffice.reston.mci.net>")
    writes, events = drive(
        policy,
        [GREETING, ehlo("AUTH PLAIN LOGIN CRAM-MD5"), b"334 " + challenge + b"\r\n",
         b"235 2.7.0 ok\r\n", b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n", b"250 ok\r\n",
         b"221 bye\r\n"],
        [(ENV, BODY)],
    )
    assert writes[1:4] == [
        b"AUTH CRAM-MD5\r\n",
        b"dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw\r\n",
        b"MAIL FROM:<alice@here.example>\r\n",
    ]
    assert of_type(events, Ready)[0].authenticated == "CRAM-MD5"


def test_auth_plain_over_implicit_tls_uses_an_initial_response() -> None:
    """AUTH PLAIN goes out with its token in one line when TLS is active."""
    policy = auth_policy("no", True, "user", "pass")
    writes, events = drive(
        policy,
        [GREETING, ehlo("AUTH LOGIN PLAIN"), b"235 ok\r\n", b"250 ok\r\n", b"250 ok\r\n",
         b"354 go\r\n", b"250 ok\r\n", b"221 bye\r\n"],
        [(ENV, BODY)],
    )
    assert writes[1] == b"AUTH PLAIN AHVzZXIAcGFzcw==\r\n"
    assert of_type(events, Ready)[0].authenticated == "PLAIN"


def test_auth_login_answers_both_challenges() -> None:
    """AUTH LOGIN sends the base64 login, then the base64 password, one challenge each."""
    policy = auth_policy("no", False, "user", "pass", insecure=True)
    writes, _ = drive(
        policy,
        [GREETING, ehlo("AUTH LOGIN"), b"334 VXNlcm5hbWU6\r\n", b"334 UGFzc3dvcmQ6\r\n",
         b"235 ok\r\n", b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n", b"250 ok\r\n", b"221 bye\r\n"],
        [(ENV, BODY)],
    )
    assert writes[1:5] == [b"AUTH LOGIN\r\n", b"dXNlcg==\r\n", b"cGFzcw==\r\n",
                           b"MAIL FROM:<alice@here.example>\r\n"]


def test_refused_auth_defers_and_never_sends_unauthenticated() -> None:
    """A 535 to AUTH fails the session as TEMPORARY: no MAIL is ever sent, QUIT is."""
    policy = auth_policy("no", True, "user", "wrong")
    writes, events = drive(
        policy, [GREETING, ehlo("AUTH PLAIN"), b"535 5.7.8 bad credentials\r\n", b"221 bye\r\n"],
        [(ENV, BODY)],
    )
    assert b"MAIL" not in b"".join(writes) and writes[-1] == b"QUIT\r\n"
    failed = of_type(events, SessionFailed)[0]
    assert (failed.outcome, failed.stage) == (Outcome.TEMPORARY, Stage.AUTH)
    assert "auth.conf" in failed.reason


def test_server_without_auth_gets_the_mail_and_ready_says_so() -> None:
    """Credentials but no AUTH announced: the mail goes unauthenticated, with a notice."""
    policy = auth_policy("no", True, "user", "pass")
    writes, events = drive(
        policy, [GREETING, EHLO_BARE, b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n",
                 b"250 ok\r\n", b"221 bye\r\n"], [(ENV, BODY)]
    )
    assert writes[1] == b"MAIL FROM:<alice@here.example>\r\n"
    ready = of_type(events, Ready)[0]
    assert ready.authenticated is None and any("no AUTH" in n for n in ready.notices)


def test_auth_with_only_unknown_mechanisms_defers() -> None:
    """A server offering only mechanisms we do not speak fails the session temporarily."""
    policy = auth_policy("no", True, "user", "pass")
    _, events = drive(policy, [GREETING, ehlo("AUTH XOAUTH2 GSSAPI"), b"221 bye\r\n"])
    assert "XOAUTH2" in of_type(events, SessionFailed)[0].reason


def test_auth_failures_are_marked_as_such() -> None:
    """SessionFailed says 'refused' for a 535 and 'unusable' for no mechanism; else None."""
    creds = auth_policy("no", True, "user", "wrong")
    _, events = drive(creds, [GREETING, ehlo("AUTH PLAIN"), b"535 5.7.8 no\r\n", b"221 bye\r\n"])
    assert of_type(events, SessionFailed)[0].auth == "refused"
    _, events = drive(creds, [GREETING, ehlo("AUTH GSSAPI"), b"221 bye\r\n"])
    assert of_type(events, SessionFailed)[0].auth == "unusable"
    plain_text = auth_policy("no", False, "user", "pass")
    _, events = drive(plain_text, [GREETING, ehlo("AUTH PLAIN LOGIN"), b"221 bye\r\n"])
    assert of_type(events, SessionFailed)[0].auth == "unusable"
    _, events = drive(creds, [GREETING, ehlo("AUTH LOGIN"), b"334 x\r\n", b"334 y\r\n",
                              b"454 4.7.0 try later\r\n", b"221 bye\r\n"])
    assert of_type(events, SessionFailed)[0].auth == "refused"
    _, events = drive(PLAIN, [b"421 4.3.2 busy\r\n"])
    assert of_type(events, SessionFailed)[0].auth is None


def test_secrets_never_appear_in_events_or_reprs() -> None:
    """No event, reason, policy repr or client repr holds the password or the AUTH token."""
    password = "hunter2-very-secret"
    policy = auth_policy("no", True, "user", password)
    _, events = drive(
        policy, [GREETING, ehlo("AUTH LOGIN"), b"334 x\r\n", b"334 y\r\n", b"535 no\r\n",
                 b"221 bye\r\n"]
    )
    token = base64.b64encode(password.encode()).decode()
    shown = repr(events) + repr(policy) + repr(SmtpClient(policy)) + str(events)
    assert password not in shown and token not in shown
    plain = base64.b64encode(b"\0user\0" + password.encode()).decode()
    _, events = drive(policy, [GREETING, ehlo("AUTH PLAIN"), b"535 no\r\n", b"221 bye\r\n"])
    assert plain not in repr(events) and password not in repr(events)


# --- SASL exchanges on the wire (SCRAM, XOAUTH2, OAUTHBEARER) -------------------------------

# RFC 7677 section 3: user "user", password "pencil", the client nonce is NONCE.
SCRAM_FIRST = base64.b64encode(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
SCRAM_SERVER_FIRST = base64.b64encode(
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
SCRAM_FINAL = base64.b64encode(
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
SCRAM_SERVER_FINAL = base64.b64encode(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
SCRAM_WRONG_FINAL = base64.b64encode(b"v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
SCRAM_POLICY = auth_policy("no", False, "user", "pencil")
TRANSACTION = [b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n", b"250 ok\r\n", b"221 bye\r\n"]
TOKEN = "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"


def _commands(events: list[Event]) -> list[str]:
    return [command for event in of_type(events, Transmit) for command in event.commands]


def test_scram_sha_256_session_is_the_rfc_7677_example_on_the_wire() -> None:
    """SCRAM-SHA-256 is preferred to CRAM-MD5 even in plain text; the RFC's messages go out
    in base64, the signature in the last 334 is answered with an empty line, then MAIL."""
    writes, events = drive(
        SCRAM_POLICY,
        [GREETING, ehlo("AUTH CRAM-MD5 SCRAM-SHA-1 SCRAM-SHA-256 PLAIN"),
         b"334 " + SCRAM_SERVER_FIRST + b"\r\n", b"334 " + SCRAM_SERVER_FINAL + b"\r\n",
         b"235 2.7.0 ok\r\n", *TRANSACTION],
        [(ENV, BODY)],
    )
    assert writes[1:5] == [b"AUTH SCRAM-SHA-256 " + SCRAM_FIRST + b"\r\n",
                           SCRAM_FINAL + b"\r\n", b"\r\n",
                           b"MAIL FROM:<alice@here.example>\r\n"]
    assert of_type(events, Ready)[0].authenticated == "SCRAM-SHA-256"
    assert _commands(events)[1:4] == ["AUTH SCRAM-SHA-256 ***", "***", "***"]


def test_scram_signature_in_the_success_reply_is_checked() -> None:
    """The server signature may come with the 235 instead of a last 334."""
    writes, events = drive(
        SCRAM_POLICY,
        [GREETING, ehlo("AUTH SCRAM-SHA-256"), b"334 " + SCRAM_SERVER_FIRST + b"\r\n",
         b"235 2.7.0 " + SCRAM_SERVER_FINAL + b"\r\n", *TRANSACTION],
        [(ENV, BODY)],
    )
    assert writes[3] == b"MAIL FROM:<alice@here.example>\r\n"
    assert of_type(events, Ready)[0].authenticated == "SCRAM-SHA-256"


def test_wrong_scram_signature_in_a_challenge_cancels_and_defers() -> None:
    """A wrong signature in the last 334: ``*`` (RFC 4954 4), the 501, then QUIT; the
    session fails as refused AUTH, TEMPORARY, and no MAIL is sent."""
    writes, events = drive(
        SCRAM_POLICY,
        [GREETING, ehlo("AUTH SCRAM-SHA-256"), b"334 " + SCRAM_SERVER_FIRST + b"\r\n",
         b"334 " + SCRAM_WRONG_FINAL + b"\r\n", b"501 5.7.0 cancelled\r\n", b"221 bye\r\n"],
        [(ENV, BODY)],
    )
    assert writes[2:] == [SCRAM_FINAL + b"\r\n", b"*\r\n", b"QUIT\r\n"]
    failed = of_type(events, SessionFailed)[0]
    assert (failed.outcome, failed.stage, failed.auth) == (Outcome.TEMPORARY, Stage.AUTH,
                                                          "refused")
    assert "signature is wrong" in failed.reason and "501" in failed.reason
    assert of_type(events, Ready) == []
    assert outcomes(events) == []


@pytest.mark.parametrize("success", [b"235 2.7.0 " + SCRAM_WRONG_FINAL, b"235 2.7.0 ok"])
def test_wrong_or_missing_scram_signature_with_success_fails(success: bytes) -> None:
    """A 235 whose signature is wrong, or that has none after client-final, is no success:
    the session fails (QUIT, no MAIL), never Ready."""
    writes, events = drive(
        SCRAM_POLICY,
        [GREETING, ehlo("AUTH SCRAM-SHA-256"), b"334 " + SCRAM_SERVER_FIRST + b"\r\n",
         success + b"\r\n", b"221 bye\r\n"],
        [(ENV, BODY)],
    )
    assert writes[-1] == b"QUIT\r\n" and b"MAIL" not in b"".join(writes)
    failed = of_type(events, SessionFailed)[0]
    assert failed.auth == "refused" and "not trusted" in failed.reason
    assert of_type(events, Ready) == []


def test_a_malformed_challenge_is_cancelled() -> None:
    """A SCRAM server-first that does not extend our nonce is cancelled with ``*``."""
    bad = base64.b64encode(b"r=someone-else,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    writes, events = drive(
        SCRAM_POLICY,
        [GREETING, ehlo("AUTH SCRAM-SHA-256"), b"334 " + bad + b"\r\n",
         b"501 5.7.0 cancelled\r\n", b"221 bye\r\n"],
    )
    assert writes[2:] == [b"*\r\n", b"QUIT\r\n"]
    assert "does not extend ours" in of_type(events, SessionFailed)[0].reason


def test_a_challenge_after_cancel_closes_without_quit() -> None:
    """A server that still challenges after our ``*`` is out of step: close, no QUIT."""
    writes, events = drive(
        SCRAM_POLICY,
        [GREETING, ehlo("AUTH SCRAM-SHA-256"), b"334 !!\r\n", b"334 more\r\n"],
    )
    assert writes[2:] == [b"*\r\n"]
    assert of_type(events, SessionFailed)[0].auth == "refused"


def test_xoauth2_session_and_its_error_challenge() -> None:
    """XOAUTH2 sends its initial response on the AUTH line; the base64 JSON error 334 is
    answered with an empty line, the 535 fails the session with the decoded report."""
    policy = SessionPolicy("client.example", "no", True, Credentials("user@example.com", TOKEN,
                                                                      "oauth2"))
    error = base64.b64encode(
        b'{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}')
    writes, events = drive(
        policy,
        [GREETING, ehlo("AUTH LOGIN PLAIN XOAUTH2 OAUTHBEARER"), b"334 " + error + b"\r\n",
         b"535-5.7.8 Username and Password not accepted.\r\n535 5.7.8 Learn more\r\n",
         b"221 bye\r\n"],
        [(ENV, BODY)],
    )
    initial = base64.b64encode(f"user=user@example.com\x01auth=Bearer {TOKEN}\x01\x01".encode())
    assert writes[1:] == [b"AUTH XOAUTH2 " + initial + b"\r\n", b"\r\n", b"QUIT\r\n"]
    failed = of_type(events, SessionFailed)[0]
    assert failed.auth == "refused" and failed.stage is Stage.AUTH
    assert "status 401, schemes bearer, scope https://mail.google.com/" in failed.reason
    assert "535 5.7.8 Username" in failed.reason and "oauth2 login" in failed.reason
    assert TOKEN not in repr(events) and initial.decode() not in repr(events)
    assert _commands(events)[1:] == ["AUTH XOAUTH2 ***", "***"]


def test_oauthbearer_session_and_its_error_challenge() -> None:
    """OAUTHBEARER names the server and port; its error 334 is answered with ^A (AQ==)."""
    policy = SessionPolicy("client.example", "no", True,
                           Credentials("user@example.com", TOKEN, "oauth2", "OAUTHBEARER"),
                           server_name="smtp.example.com", server_port=465)
    error = base64.b64encode(b'{"status":"invalid_token","scope":"s",'
                             b'"openid-configuration":"https://example.com/.well-known/x"}')
    writes, events = drive(
        policy,
        [GREETING, ehlo("AUTH XOAUTH2 OAUTHBEARER"), b"334 " + error + b"\r\n",
         b"535 5.7.8 no\r\n", b"221 bye\r\n"],
    )
    initial = base64.b64encode(
        f"n,a=user@example.com,\x01host=smtp.example.com\x01port=465\x01"
        f"auth=Bearer {TOKEN}\x01\x01".encode())
    assert writes[1:] == [b"AUTH OAUTHBEARER " + initial + b"\r\n", b"AQ==\r\n", b"QUIT\r\n"]
    reason = of_type(events, SessionFailed)[0].reason
    assert "status invalid_token, scope s, openid-configuration https://example.com/" in reason


def test_oauth2_token_accepted_is_ready() -> None:
    """A 235 to XOAUTH2 is Ready, authenticated with XOAUTH2."""
    policy = SessionPolicy("client.example", "no", True, Credentials("u", TOKEN, "oauth2"))
    _, events = drive(policy, [GREETING, ehlo("AUTH XOAUTH2"), b"235 ok\r\n", *TRANSACTION],
                      [(ENV, BODY)])
    assert of_type(events, Ready)[0].authenticated == "XOAUTH2"


def test_forced_mechanism_not_offered_is_unusable() -> None:
    """An account's mechanism the server does not offer: no AUTH, SessionFailed unusable."""
    policy = SessionPolicy("client.example", "no", True,
                           Credentials("u", "pw", "password", "SCRAM-SHA-1"), nonce=NONCE)
    writes, events = drive(policy, [GREETING, ehlo("AUTH PLAIN SCRAM-SHA-256"),
                                    b"221 bye\r\n"])
    assert writes[1:] == [b"QUIT\r\n"]
    failed = of_type(events, SessionFailed)[0]
    assert failed.auth == "unusable" and "SCRAM-SHA-1, which the account names" in failed.reason


def test_a_password_needs_a_nonce() -> None:
    """A session policy with a password and no SCRAM nonce is the driver's bug."""
    with pytest.raises(LocalProtocolError):
        SmtpClient(SessionPolicy("client.example", "no", True, Credentials("u", "pw")))
    with pytest.raises(LocalProtocolError):
        SmtpClient(SessionPolicy("client.example", "no", True, Credentials("u", "pw"),
                                 nonce="short"))
    SmtpClient(SessionPolicy("client.example", "no", True, Credentials("u", TOKEN, "oauth2")))


def test_mixed_recipient_replies_deliver_only_the_accepted() -> None:
    """250, 450 and 550 to three RCPTs: one delivered, one deferred, one bounced."""
    env = Envelope("a@h.example", ("ok@t.example", "later@t.example", "never@t.example"), 1, False)
    writes, events = drive(
        PLAIN,
        [GREETING, ehlo("PIPELINING"),
         b"250 ok\r\n250 ok\r\n450 4.2.1 try later\r\n550 5.1.1 no such user\r\n354 go\r\n",
         b"250 ok\r\n", b"221 bye\r\n"],
        [(env, BODY)],
    )
    assert writes[2] == BODY_WIRE
    assert outcomes(events) == [
        ("ok@t.example", Outcome.DELIVERED, Stage.DATA_END),
        ("later@t.example", Outcome.TEMPORARY, Stage.RCPT),
        ("never@t.example", Outcome.PERMANENT, Stage.RCPT),
    ]
    assert of_type(events, MessageDone)[0].delivered == ("ok@t.example",)
    assert len(of_type(events, RecipientResult)) == 3


def test_no_accepted_recipient_means_no_data_and_rset_before_the_next_message() -> None:
    """All RCPTs refused: no DATA is sent, and the next message starts with RSET."""
    first = Envelope("a@h.example", ("x@t.example",), 1, False)
    second = Envelope("a@h.example", ("y@t.example",), 1, False)
    writes, events = drive(
        PLAIN,
        [GREETING, EHLO_BARE, b"250 ok\r\n", b"550 no\r\n", b"250 reset\r\n", b"250 ok\r\n",
         b"250 ok\r\n", b"354 go\r\n", b"250 ok\r\n", b"221 bye\r\n"],
        [(first, BODY), (second, BODY)],
    )
    assert writes[1:7] == [
        b"MAIL FROM:<a@h.example>\r\n", b"RCPT TO:<x@t.example>\r\n",
        b"RSET\r\n", b"MAIL FROM:<a@h.example>\r\n", b"RCPT TO:<y@t.example>\r\n", b"DATA\r\n",
    ]
    assert [o for _, o, _ in outcomes(events)] == [Outcome.PERMANENT, Outcome.DELIVERED]


def test_two_messages_after_success_need_no_rset() -> None:
    """After a completed transaction the next message's MAIL follows directly, without RSET."""
    first = Envelope("a@h.example", ("x@t.example",), 1, False)
    second = Envelope("b@h.example", ("y@t.example",), 1, False)
    writes, _ = drive(
        PLAIN,
        [GREETING, ehlo("PIPELINING"), b"250 ok\r\n250 ok\r\n354 go\r\n", b"250 ok\r\n",
         b"250 ok\r\n250 ok\r\n354 go\r\n", b"250 ok\r\n", b"221 bye\r\n"],
        [(first, BODY), (second, BODY)],
    )
    assert writes[3] == b"MAIL FROM:<b@h.example>\r\nRCPT TO:<y@t.example>\r\nDATA\r\n"


def test_pipelined_rset_goes_in_the_same_write_after_a_failed_transaction() -> None:
    """With PIPELINING, the RSET after a refused DATA is part of the next message's single write."""
    first = Envelope("a@h.example", ("x@t.example",), 1, False)
    writes, events = drive(
        PLAIN,
        [GREETING, ehlo("PIPELINING"), b"250 ok\r\n250 ok\r\n451 4.3.0 later\r\n",
         b"250 reset\r\n250 ok\r\n250 ok\r\n354 go\r\n", b"250 ok\r\n", b"221 bye\r\n"],
        [(first, BODY), (first, BODY)],
    )
    assert writes[2] == b"RSET\r\nMAIL FROM:<a@h.example>\r\nRCPT TO:<x@t.example>\r\nDATA\r\n"
    assert [(o, s) for _, o, s in outcomes(events)] == [
        (Outcome.TEMPORARY, Stage.DATA), (Outcome.DELIVERED, Stage.DATA_END)
    ]


def test_pipelined_data_accepted_with_no_recipient_is_ended_empty() -> None:
    """A server that answers 354 though every RCPT failed gets a lone dot, never the message."""
    writes, events = drive(
        PLAIN,
        [GREETING, ehlo("PIPELINING"), b"250 ok\r\n550 no\r\n354 go\r\n", b"554 no data\r\n",
         b"221 bye\r\n"],
        [(ENV, BODY)],
    )
    assert writes[2] == b".\r\n" and BODY_WIRE not in writes
    assert outcomes(events) == [("bob@there.example", Outcome.PERMANENT, Stage.RCPT)]


def test_mail_refused_settles_every_recipient() -> None:
    """A 5xx to MAIL bounces every recipient at the MAIL stage; no RCPT is sent unpipelined."""
    env = Envelope("a@h.example", ("x@t.example", "y@t.example"), 1, False)
    writes, events = drive(
        PLAIN, [GREETING, EHLO_BARE, b"553 5.1.8 bad sender\r\n", b"221 bye\r\n"], [(env, BODY)]
    )
    assert b"RCPT" not in b"".join(writes)
    assert [(o, s) for _, o, s in outcomes(events)] == [(Outcome.PERMANENT, Stage.MAIL)] * 2


def test_pipelined_mail_refused_drains_the_remaining_replies() -> None:
    """Pipelined MAIL refused: the RCPT and DATA replies are consumed, outcomes stay MAIL's."""
    writes, events = drive(
        PLAIN,
        [GREETING, ehlo("PIPELINING"), b"451 4.3.0 later\r\n503 no\r\n503 no\r\n", b"221 bye\r\n"],
        [(ENV, BODY)],
    )
    assert writes[-1] == b"QUIT\r\n"
    assert outcomes(events) == [("bob@there.example", Outcome.TEMPORARY, Stage.MAIL)]
    assert of_type(events, SessionFailed) == []


def test_552_after_data_bounces_the_accepted_recipients() -> None:
    """A 552 to the end of data is permanent for every recipient that RCPT accepted."""
    _, events = drive(
        PLAIN,
        [GREETING, EHLO_BARE, b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n",
         b"552 5.3.4 too big\r\n", b"221 bye\r\n"],
        [(ENV, BODY)],
    )
    assert outcomes(events) == [("bob@there.example", Outcome.PERMANENT, Stage.DATA_END)]


def test_530_to_mail_defers_instead_of_bouncing() -> None:
    """530 authentication required at MAIL is a configuration problem: TEMPORARY, no bounce."""
    _, events = drive(
        PLAIN, [GREETING, EHLO_BARE, b"530 5.7.0 authentication required\r\n", b"221 bye\r\n"],
        [(ENV, BODY)],
    )
    assert outcomes(events)[0][1] is Outcome.TEMPORARY


def test_421_during_rcpt_settles_the_message_then_fails_the_session() -> None:
    """A 421 mid-transaction: MessageDone (TEMPORARY) first, then SessionFailed, no QUIT."""
    env = Envelope("a@h.example", ("x@t.example", "y@t.example"), 1, False)
    writes, events = drive(
        PLAIN, [GREETING, ehlo("PIPELINING"), b"250 ok\r\n550 no\r\n421 4.7.0 slow down\r\n"],
        [(env, BODY)],
    )
    assert writes[-1].startswith(b"MAIL")  # no QUIT after the server hung up
    kinds = [type(e) for e in events if isinstance(e, (MessageDone, SessionFailed))]
    assert kinds == [MessageDone, SessionFailed]
    assert [o for _, o, _ in outcomes(events)] == [Outcome.PERMANENT, Outcome.TEMPORARY]


def test_connection_lost_after_the_dot_is_temporary() -> None:
    """End of stream while waiting for the final reply defers the accepted recipients."""
    _, events = drive(PLAIN, [GREETING, EHLO_BARE, b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n"],
                      [(ENV, BODY)])
    assert outcomes(events) == [("bob@there.example", Outcome.TEMPORARY, Stage.DATA_END)]
    assert "closed the connection" in of_type(events, SessionFailed)[0].reason


def test_garbage_reply_fails_temporarily_without_quit() -> None:
    """A reply that is not SMTP is the remote's fault: TEMPORARY, and we just close."""
    writes, events = drive(PLAIN, [b"HTTP/1.1 400 Bad Request\r\n"], [(ENV, BODY)])
    assert writes == []
    assert of_type(events, SessionFailed)[0].outcome is Outcome.TEMPORARY


def test_unexpected_reply_kind_fails_the_session() -> None:
    """A 354 to MAIL is not in the table: the message is deferred and the session fails."""
    _, events = drive(PLAIN, [GREETING, EHLO_BARE, b"354 what\r\n"], [(ENV, BODY)])
    assert outcomes(events)[0][1] is Outcome.TEMPORARY
    assert "unexpected" in of_type(events, SessionFailed)[0].reason


def test_mail_parameters_follow_the_extensions() -> None:
    """SIZE, BODY=8BITMIME, RET/ENVID and NOTIFY appear exactly when the server offers them."""
    env = Envelope("a@h.example", ("b@t.example",), 42, True, "SUCCESS,FAILURE", "HDRS", "id=1+")
    offered, _ = drive(
        PLAIN, [GREETING, ehlo("SIZE", "8BITMIME", "DSN"), b"250 ok\r\n", b"451 no\r\n",
                b"221 bye\r\n"], [(env, BODY)]
    )
    assert offered[1:3] == [
        b"MAIL FROM:<a@h.example> SIZE=42 BODY=8BITMIME RET=HDRS ENVID=id+3D1+2B\r\n",
        b"RCPT TO:<b@t.example> NOTIFY=SUCCESS,FAILURE\r\n",
    ]
    bare, _ = drive(PLAIN, [GREETING, EHLO_BARE, b"250 ok\r\n", b"451 no\r\n", b"221 bye\r\n"],
                    [(env, BODY)])
    assert bare[1:3] == [b"MAIL FROM:<a@h.example>\r\n", b"RCPT TO:<b@t.example>\r\n"]


def test_null_sender_is_empty_angle_brackets() -> None:
    """The null sender of bounces is written MAIL FROM:<>."""
    env = Envelope("", ("b@t.example",), 1, False)
    writes, _ = drive(PLAIN, [GREETING, EHLO_BARE, b"451 no\r\n", b"221 bye\r\n"], [(env, BODY)])
    assert writes[1] == b"MAIL FROM:<>\r\n"


def test_non_ascii_recipient_without_smtputf8_fails_alone() -> None:
    """Without SMTPUTF8 a non-ASCII recipient bounces with 5.6.7; the others are still sent."""
    env = Envelope("a@h.example", ("jörg@t.example", "b@t.example"), 1, False)
    writes, events = drive(
        PLAIN, [GREETING, EHLO_BARE, b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n", b"250 ok\r\n",
                b"221 bye\r\n"], [(env, BODY)]
    )
    assert writes[2] == b"RCPT TO:<b@t.example>\r\n"
    result = of_type(events, MessageDone)[0].results[0]
    assert (result.outcome, result.stage) == (Outcome.PERMANENT, Stage.LOCAL)
    assert result.reason.startswith("5.6.7")


def test_non_ascii_address_with_smtputf8_adds_the_parameter() -> None:
    """With SMTPUTF8 offered, a non-ASCII address is sent in UTF-8 with the SMTPUTF8 parameter."""
    env = Envelope("a@h.example", ("jörg@t.example",), 1, False)
    writes, _ = drive(PLAIN, [GREETING, ehlo("SMTPUTF8"), b"451 no\r\n", b"221 bye\r\n"],
                      [(env, BODY)])
    assert writes[1] == b"MAIL FROM:<a@h.example> SMTPUTF8\r\n"


def test_non_ascii_sender_without_smtputf8_sends_nothing() -> None:
    """A non-ASCII sender the server cannot take bounces every recipient before any command."""
    env = Envelope("jörg@h.example", ("b@t.example",), 1, False)
    writes, events = drive(PLAIN, [GREETING, EHLO_BARE, b"221 bye\r\n"], [(env, BODY)])
    assert writes == [b"EHLO client.example\r\n", b"QUIT\r\n"]
    assert outcomes(events) == [("b@t.example", Outcome.PERMANENT, Stage.LOCAL)]


def test_message_over_the_size_limit_is_refused_locally() -> None:
    """A message larger than the announced SIZE is bounced (5.3.4) without sending it."""
    env = Envelope("a@h.example", ("b@t.example",), 5000, False)
    writes, events = drive(PLAIN, [GREETING, ehlo("SIZE 1000"), b"221 bye\r\n"], [(env, BODY)])
    assert b"MAIL" not in b"".join(writes)
    assert of_type(events, MessageDone)[0].results[0].reason.startswith("5.3.4")


# --- the data ----------------------------------------------------------------------


def wire_data(lines: list[bytes]) -> bytes:
    """The DATA bytes for ``lines`` from a client that reached SENDING_DATA."""
    writes, _ = drive(
        PLAIN, [GREETING, EHLO_BARE, b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n", b"250 ok\r\n",
                b"221 bye\r\n"], [(ENV, lines)]
    )
    return writes[4]


def test_lines_starting_with_a_dot_are_stuffed() -> None:
    """Every line that starts with a dot gets one more, the last line too."""
    out = wire_data([b".\n", b"..x\n", b"a.b\n", b".end"])
    assert out == b"..\r\n...x\r\na.b\r\n..end\r\n.\r\n"


def test_embedded_line_ends_can_never_end_the_data_early() -> None:
    """CR, LF and CRLF inside the input each become a CRLF line end and the dot is stuffed."""
    out = wire_data([b"a\n.\r\nb\r.\rc\n", b"\r\n.\n"])
    assert out == b"a\r\n..\r\nb\r\n..\r\nc\r\n\r\n..\r\n.\r\n"
    assert out.count(b"\r\n.\r\n") == 1 and out.endswith(b"\r\n.\r\n")


def test_lines_split_across_chunks_are_joined() -> None:
    """Input chunks that cut lines anywhere (even CR from LF) give the same wire bytes."""
    assert wire_data([b".a", b"b\r", b"\nc", b""]) == b"..ab\r\nc\r\n.\r\n"


def test_cr_then_two_lfs_in_separate_chunks_are_two_line_ends() -> None:
    """A CR, an LF and another LF, one per chunk, are CRLF then LF: two empty lines."""
    assert wire_data([b"a\r", b"\n", b"\n", b"b"]) == b"a\r\n\r\nb\r\n.\r\n"


def test_empty_message_is_just_the_dot() -> None:
    """An empty message sends only the terminating dot line."""
    assert wire_data([]) == b".\r\n"


def test_large_message_comes_in_bounded_chunks() -> None:
    """A big message is yielded in several chunks, none far over the chunk size."""
    client = client_ready_for_data()
    chunks = list(client.send_data_lines([b"x" * 99 + b"\n"] * 5000))
    assert len(chunks) > 3 and max(map(len, chunks)) < 70 * 1024
    assert b"".join(chunks) == (b"x" * 99 + b"\r\n") * 5000 + b".\r\n"


def client_ready_for_data() -> SmtpClient:
    """A client that just got 354 to DATA for ENV."""
    client = SmtpClient(PLAIN)
    client.receive_data(GREETING + EHLO_BARE)
    while (event := client.next_event()) is not None:
        if isinstance(event, Ready):
            client.send_message(ENV)
    client.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n")
    while client.next_event() is not None:
        pass
    assert client.state is State.SENDING_DATA
    return client


def test_early_reply_during_data_stops_the_data() -> None:
    """A reply fed in the middle of the data ends the iterator without the final dot."""
    client = client_ready_for_data()
    chunks = client.send_data_lines(iter([b"x" * 70000 + b"\n", b"more\n", b"more\n"]))
    first = next(chunks)
    client.receive_data(b"552 5.3.4 too big\r\n")
    events = []
    while (event := client.next_event()) is not None:
        events.append(event)
    rest = list(chunks)
    assert not (first + b"".join(rest)).endswith(b".\r\n")
    assert of_type(events, MessageDone)[0].results[0].outcome is Outcome.PERMANENT
    assert client.quit() == b""


# --- misuse ------------------------------------------------------------------------


def test_calls_in_the_wrong_state_raise_local_protocol_error() -> None:
    """send_message before Ready, data before ReadyForData, TLS before StartTls: all our bugs."""
    client = SmtpClient(PLAIN)
    with pytest.raises(LocalProtocolError):
        client.send_message(ENV)
    with pytest.raises(LocalProtocolError):
        client.send_data_lines([])
    with pytest.raises(LocalProtocolError):
        client.tls_established()
    with pytest.raises(LocalProtocolError):
        client.quit()
    ready = client_ready_for_data()
    ready.send_data_lines([])
    with pytest.raises(LocalProtocolError):
        ready.send_data_lines([])
    assert issubclass(LocalProtocolError, SoftwareError)


def test_bad_envelopes_and_helo_names_are_refused() -> None:
    """No recipients or a bad HELO name (our own bug) raise LocalProtocolError."""
    client = SmtpClient(PLAIN)
    client.receive_data(GREETING + EHLO_BARE)
    while client.next_event() is not None:
        pass
    with pytest.raises(LocalProtocolError):
        client.send_message(Envelope("a@h", (), 1, False))
    with pytest.raises(LocalProtocolError):
        SmtpClient(SessionPolicy("bad name", "no", False))


@pytest.mark.parametrize(("envelope", "status"), [
    (Envelope("a@h\r\nRCPT TO:<x@y>", ("b@t",), 1, False), "5.1.7"),
    (Envelope("a@h", ("<b@t>",), 1, False), "5.1.3"),
    (Envelope("a@h", ("b@t",), 1, False, dsn_notify="SOMETIMES"), "5.5.4"),
    (Envelope("a@h", ("b@t",), 1, False, dsn_envid="+" * 34), "5.5.4"),
])
def test_an_envelope_our_checks_refuse_fails_that_message_alone(
    envelope: Envelope, status: str
) -> None:
    """An envelope from a damaged Q file (a control character, an angle bracket, a bad
    DSN value, an ENVID over 100 characters once xtext-encoded) fails its recipients
    locally and for good, sends nothing, and the next message goes out on the same
    connection (SPEC 5.1)."""
    good = Envelope("a@h", ("ok@t",), 1, False)
    writes, events = drive(
        PLAIN,
        [GREETING, EHLO_BARE, b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n", b"250 ok\r\n",
         b"221 bye\r\n"],
        [(envelope, BODY), (good, BODY)],
    )
    done = of_type(events, MessageDone)
    assert [r.outcome for r in done[0].results] == [Outcome.PERMANENT]
    assert done[0].results[0].stage is Stage.LOCAL
    assert done[0].results[0].reason.startswith(status)
    assert [r.outcome for r in done[1].results] == [Outcome.DELIVERED]
    assert writes[1] == b"MAIL FROM:<a@h>\r\n"
    assert not any(b"b@t" in write for write in writes)


def test_receive_data_during_the_handshake_is_refused() -> None:
    """Feeding bytes between StartTls and tls_established is the driver's bug."""
    client = SmtpClient(SessionPolicy("c.example", "required", False))
    client.receive_data(GREETING + ehlo("STARTTLS"))
    while client.next_event() is not None:
        pass
    client.receive_data(b"220 go\r\n")
    assert isinstance(client.next_event(), StartTls)
    with pytest.raises(LocalProtocolError):
        client.receive_data(b"250 hi\r\n")


# --- classify ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "stage", "expected"),
    [
        (250, Stage.RCPT, Outcome.DELIVERED),
        (354, Stage.DATA, Outcome.DELIVERED),
        (250, Stage.DATA, Outcome.TEMPORARY),
        (550, Stage.RCPT, Outcome.PERMANENT),
        (554, Stage.DATA_END, Outcome.PERMANENT),
        (450, Stage.RCPT, Outcome.TEMPORARY),
        (421, Stage.MAIL, Outcome.TEMPORARY),
        (554, Stage.GREETING, Outcome.TEMPORARY),
        (550, Stage.EHLO, Outcome.TEMPORARY),
        (535, Stage.AUTH, Outcome.TEMPORARY),
        (530, Stage.MAIL, Outcome.TEMPORARY),
        (530, Stage.DATA_END, Outcome.PERMANENT),
    ],
)
def test_classify_follows_spec_5_4(code: int, stage: Stage, expected: Outcome) -> None:
    """Each reply code at each stage gets the outcome SPEC 5.4 gives it."""
    assert classify(Reply(code, ("x",)), stage) is expected


def test_rate_limit_5xx_is_still_permanent_and_4_7_is_temporary() -> None:
    """Only 4xx throttle: 550 5.7.1 rate limit bounces, 451 4.7.1 defers."""
    assert classify(Reply(550, ("5.7.1 rate limit",), "5.7.1"), Stage.RCPT) is Outcome.PERMANENT
    assert classify(Reply(451, ("4.7.1 slow down",), "4.7.1"), Stage.RCPT) is Outcome.TEMPORARY


# --- replies and EHLO ------------------------------------------------------------------


def test_multiline_reply_with_enhanced_code() -> None:
    """A multi-line reply comes out as one Reply with every line and the enhanced code."""
    parser = ReplyParser()
    replies = parser.feed(b"550-5.1.1 no such user\r\n550-second\r\n550 third\r\n")
    assert replies == (Reply(550, ("5.1.1 no such user", "second", "third"), "5.1.1"),)
    assert replies[0].text == "5.1.1 no such user\nsecond\nthird"
    assert str(replies[0]) == "550 5.1.1 no such user / second / third"


def test_reply_without_text_and_bare_lf() -> None:
    """A bare code with no text and a line ended by LF alone are both accepted."""
    assert ReplyParser().feed(b"250\n354 go\r\n") == (Reply(250, ("",)), Reply(354, ("go",)))


def test_control_characters_in_reply_text_are_neutralised() -> None:
    """A bare CR or ESC in reply text becomes "?" so logs stay on one line."""
    assert ReplyParser().feed(b"250 a\rb\x1bc\r\n")[0].lines == ("a?b?c",)


@pytest.mark.parametrize(
    "data",
    [
        b"hello\r\n",
        b"250-a\r\n251 b\r\n",
        b"2500 x\r\n",
        b"150 x\r\n",
        b"25 x\r\n",
        b"250x\r\n",
        b"2" * (MAX_LINE_OCTETS + 5),
        b"250 " + b"a" * MAX_LINE_OCTETS + b"\r\n",
    ],
)
def test_bad_replies_raise_remote_protocol_error(data: bytes) -> None:
    """Garbage, mixed codes, bad codes and over-long lines raise RemoteProtocolError."""
    parser = ReplyParser()
    with pytest.raises(RemoteProtocolError):
        parser.feed(data)
    with pytest.raises(RemoteProtocolError):
        parser.feed(b"250 ok\r\n")
    assert issubclass(RemoteProtocolError, TempFailure)


def test_partial_reply_waits_for_more() -> None:
    """Half a line, or a multi-line reply without its last line, yields nothing yet."""
    parser = ReplyParser()
    assert parser.feed(b"250-a\r\n25") == ()
    assert parser.has_pending
    assert parser.feed(b"0 b\r\n") == (Reply(250, ("a", "b")),)
    assert not parser.has_pending


def test_parse_ehlo_reads_every_extension() -> None:
    """Keywords are case-insensitive; AUTH and AUTH= merge; SIZE without a number means no limit."""
    reply = ReplyParser().feed(
        ehlo("pipelining", "SIZE", "8BITMIME", "SMTPUTF8", "DSN", "STARTTLS", "CHUNKING",
             "AUTH login Plain", "AUTH=CRAM-MD5")
    )[0]
    assert parse_ehlo(reply) == Extensions(
        starttls=True, pipelining=True, size=0, eightbitmime=True, smtputf8=True, dsn=True,
        auth=frozenset({"LOGIN", "PLAIN", "CRAM-MD5"}),
    )
    assert parse_ehlo(Reply(250, ("mx", "SIZE 35882577"))).size == 35882577
    assert parse_ehlo(Reply(250, ("mx",))) == Extensions()


def test_greeting_line_is_not_a_keyword() -> None:
    """The first EHLO line names the server; a server called STARTTLS announces nothing."""
    assert parse_ehlo(Reply(250, ("STARTTLS",))).starttls is False


# --- AUTH helpers ------------------------------------------------------------------------


def test_cram_md5_matches_hmac() -> None:
    """The CRAM-MD5 answer is login, space, lowercase hex HMAC-MD5 (base64 is the framing's)."""
    challenge = b"<12345.67@server>"
    expected = hmac.new(b"pw", challenge, hashlib.md5).hexdigest()
    assert CramMd5("me", "pw").respond(challenge).data == f"me {expected}".encode()


def test_bad_challenge_is_the_servers_fault() -> None:
    """A 334 text that is not base64 raises SaslError, a RemoteProtocolError (a DmaError)."""
    with pytest.raises(SaslError) as caught:
        decode_challenge("not base64!!")
    assert isinstance(caught.value, RemoteProtocolError)
    with pytest.raises(DmaError):
        decode_challenge("ü")


def test_choose_mechanism_prefers_cram_md5_and_guards_cleartext() -> None:
    """Without SCRAM, CRAM-MD5 first; PLAIN and LOGIN only with TLS or INSECURE; none
    when nothing fits."""
    cred = Credentials("user", "pw")
    every = frozenset({"LOGIN", "PLAIN", "CRAM-MD5"})
    assert choose_mechanism(every, cred, tls_active=False, insecure=False) == Choice("CRAM-MD5")
    cleartext = frozenset({"LOGIN", "PLAIN"})
    assert choose_mechanism(cleartext, cred, tls_active=False, insecure=False).mechanism is None
    assert choose_mechanism(cleartext, cred, tls_active=True, insecure=False) == Choice("PLAIN")
    assert choose_mechanism(frozenset({"LOGIN"}), cred, tls_active=False,
                            insecure=True) == Choice("LOGIN")
    assert choose_mechanism(frozenset(), cred, tls_active=True, insecure=True).mechanism is None


# --- the next message behind the end of data (RFC 2920) ------------------------------------


def drive_behind_dot(
    replies: Sequence[bytes], messages: Sequence[tuple[Envelope, list[bytes]]]
) -> tuple[list[bytes], list[Event]]:
    """Like drive(), but the next message is sent right after the dot whenever allowed."""
    client = SmtpClient(PLAIN)
    writes: list[bytes] = []
    events: list[Event] = []
    queue = list(messages)
    inflight: list[list[bytes]] = []
    pending = list(replies)

    def start() -> None:
        envelope, lines = queue.pop(0)
        inflight.append(lines)
        if data := client.send_message(envelope):
            writes.append(data)

    while True:
        event = client.next_event()
        if event is None:
            client.receive_data(pending.pop(0) if pending else b"")
            continue
        events.append(event)
        if isinstance(event, Transmit):
            writes.append(event.data)
        elif isinstance(event, (Ready, MessageDone)):
            if isinstance(event, MessageDone):
                inflight.pop(0)
            if inflight:
                continue
            if queue and client.can_send_message:
                start()
            elif data := client.quit():
                writes.append(data)
        elif isinstance(event, ReadyForData):
            writes.append(b"".join(client.send_data_lines(inflight[0])))
            if queue and client.can_pipeline_next:
                start()
        elif isinstance(event, SessionFailed):
            if data := client.quit():
                writes.append(data)
        elif isinstance(event, Closed):
            return writes, events


def test_next_message_rides_behind_the_dot_with_pipelining() -> None:
    """With PIPELINING, message 2's MAIL/RCPT/DATA are written right after message 1's dot."""
    first = Envelope("a@h.example", ("b@t.example",), 10, False)
    second = Envelope("a@h.example", ("c@t.example",), 10, False)
    replies = [GREETING, ehlo("PIPELINING"), b"250 ok\r\n250 ok\r\n354 go\r\n",
               b"250 one\r\n250 ok\r\n250 ok\r\n354 go\r\n", b"250 two\r\n", b"221 bye\r\n"]
    writes, events = drive_behind_dot(replies, [(first, [b"one\n"]), (second, [b"two\n"])])
    assert writes[2] == b"one\r\n.\r\n"
    assert writes[3] == b"MAIL FROM:<a@h.example>\r\nRCPT TO:<c@t.example>\r\nDATA\r\n"
    assert writes[4] == b"two\r\n.\r\n"
    assert writes[5] == b"QUIT\r\n"
    dones = of_type(events, MessageDone)
    assert [d.delivered for d in dones] == [("b@t.example",), ("c@t.example",)]
    assert [str(d.results[0].reply) for d in dones] == ["250 one", "250 two"]


def test_without_pipelining_the_next_message_waits_for_the_dot_reply() -> None:
    """No PIPELINING: can_pipeline_next stays False and MAIL follows the dot's reply."""
    first = Envelope("a@h.example", ("b@t.example",), 10, False)
    second = Envelope("a@h.example", ("c@t.example",), 10, False)
    replies = [GREETING, EHLO_BARE, b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n", b"250 one\r\n",
               b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n", b"250 two\r\n", b"221 bye\r\n"]
    writes, _ = drive_behind_dot(replies, [(first, [b"one\n"]), (second, [b"two\n"])])
    assert writes[4] == b"one\r\n.\r\n"
    assert writes[5] == b"MAIL FROM:<a@h.example>\r\n"


def test_421_to_the_dot_settles_the_message_behind_it_too() -> None:
    """A 421 answering the dot defers message 1 and message 2 (sent behind it): two MessageDones."""
    first = Envelope("a@h.example", ("b@t.example",), 10, False)
    second = Envelope("a@h.example", ("c@t.example",), 10, False)
    replies = [GREETING, ehlo("PIPELINING"), b"250 ok\r\n250 ok\r\n354 go\r\n",
               b"421 going away\r\n"]
    _, events = drive_behind_dot(replies, [(first, [b"one\n"]), (second, [b"two\n"])])
    assert [(r, o) for r, o, _ in outcomes(events)] == [
        ("b@t.example", Outcome.TEMPORARY), ("c@t.example", Outcome.TEMPORARY)]
    assert len(of_type(events, SessionFailed)) == 1


def test_message_behind_the_dot_refused_at_rcpt_is_settled_in_order() -> None:
    """Message 2's RCPT refusal (behind message 1's dot) bounces only message 2's recipient."""
    first = Envelope("a@h.example", ("b@t.example",), 10, False)
    second = Envelope("a@h.example", ("c@t.example",), 10, False)
    replies = [GREETING, ehlo("PIPELINING"), b"250 ok\r\n250 ok\r\n354 go\r\n",
               b"250 one\r\n250 ok\r\n550 no such user\r\n554 no valid recipients\r\n",
               b"250 reset\r\n", b"221 bye\r\n"]
    _, events = drive_behind_dot(replies, [(first, [b"one\n"]), (second, [b"two\n"])])
    assert [(r, o) for r, o, _ in outcomes(events)] == [
        ("b@t.example", Outcome.DELIVERED), ("c@t.example", Outcome.PERMANENT)]
