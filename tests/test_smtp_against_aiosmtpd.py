"""The sans-I/O SMTP client against a real peer: aiosmtpd on 127.0.0.1, driven by a socket loop."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from dma.core.credentials import Credentials
from dma.core.smtp import (
    Closed,
    Envelope,
    Event,
    MessageDone,
    Outcome,
    Ready,
    ReadyForData,
    SessionFailed,
    SessionPolicy,
    SmtpClient,
    StartTls,
    Transmit,
)

LOGIN, PASSWORD = "user", "s3cret"
NONCE = "fyko+d2lbbFgONRv9qkxdawL"


def auth_policy(starttls: Literal["no", "required", "opportunistic"], tls_active: bool,
                login: str, password: str, *, insecure: bool = False) -> SessionPolicy:
    """A session policy with a login and password (and a SCRAM nonce)."""
    return SessionPolicy("client.example", starttls, tls_active, Credentials(login, password),
                         insecure, nonce=NONCE)


@dataclass
class Received:
    """One message as the server got it."""

    sender: str
    recipients: list[str]
    content: bytes
    login: bytes | None


@dataclass
class Recorder:
    """An aiosmtpd handler that refuses recipients starting with "reject" and records the rest."""

    pipelining: bool = False
    messages: list[Received] = field(default_factory=list)

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address.startswith("reject"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        login = session.auth_data.login if session.authenticated else None
        self.messages.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content, login)
        )
        return "250 2.0.0 queued"


def authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    """Accept exactly LOGIN/PASSWORD."""
    ok = isinstance(auth_data, LoginPassword) and auth_data == (
        LOGIN.encode(), PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A throw-away certificate authority for the STARTTLS tests."""
    return trustme.CA()


def serve(handler: Recorder, **kwargs: Any) -> Iterator[Controller]:
    """Run aiosmtpd with ``handler`` on 127.0.0.1 for the duration of a test."""
    controller = Controller(
        handler, hostname="127.0.0.1", port=free_port(), authenticator=authenticator,
        ready_timeout=10, **kwargs,
    )
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


@pytest.fixture
def plain_server() -> Iterator[tuple[Controller, Recorder]]:
    """aiosmtpd without TLS that offers AUTH anyway (auth_require_tls=False)."""
    handler = Recorder()
    for controller in serve(handler, auth_require_tls=False):
        yield controller, handler


@pytest.fixture
def pipelining_server() -> Iterator[tuple[Controller, Recorder]]:
    """aiosmtpd announcing PIPELINING, no AUTH needed."""
    handler = Recorder(pipelining=True)
    for controller in serve(handler, auth_require_tls=False):
        yield controller, handler


@pytest.fixture
def tls_server(ca: trustme.CA) -> Iterator[tuple[Controller, Recorder]]:
    """aiosmtpd with STARTTLS that offers AUTH only after TLS."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    handler = Recorder()
    for controller in serve(handler, tls_context=context, auth_require_tls=True):
        yield controller, handler


def session(
    controller: Controller,
    policy: SessionPolicy,
    messages: list[tuple[Envelope, list[bytes]]],
    tls: ssl.SSLContext | None = None,
) -> list[Event]:
    """Drive one SMTP session over a real socket the way the shell will; return every event."""
    events: list[Event] = []
    queue = list(messages)
    lines: list[bytes] = []
    sock: socket.socket = socket.create_connection((controller.hostname, controller.port), 10)
    client = SmtpClient(policy)
    try:
        while True:
            event = client.next_event()
            if event is None:
                client.receive_data(sock.recv(65536))
                continue
            events.append(event)
            if isinstance(event, Transmit):
                sock.sendall(event.data)
            elif isinstance(event, StartTls):
                assert tls is not None
                sock = tls.wrap_socket(sock, server_hostname="127.0.0.1")
                sock.sendall(client.tls_established())
            elif isinstance(event, (Ready, MessageDone)):
                if queue and client.can_send_message:
                    envelope, lines = queue.pop(0)
                    sock.sendall(client.send_message(envelope))
                else:
                    sock.sendall(client.quit())
            elif isinstance(event, ReadyForData):
                for chunk in client.send_data_lines(lines):
                    sock.sendall(chunk)
            elif isinstance(event, SessionFailed):
                sock.sendall(client.quit())
            elif isinstance(event, Closed):
                return events
    finally:
        sock.close()


MESSAGE = [b"Subject: test\n", b"\n", b".leading dot\n", b"..two dots\n", b".\n", b"end\n"]
WIRE_CONTENT = b"Subject: test\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nend\r\n"


def test_plain_session_with_auth_plain_delivers_intact(
    plain_server: tuple[Controller, Recorder],
) -> None:
    """With INSECURE, AUTH PLAIN works in plain text and the message arrives dot-unstuffed."""
    controller, handler = plain_server
    policy = auth_policy("no", False, LOGIN, PASSWORD, insecure=True)
    env = Envelope("alice@here.example", ("bob@there.example",), 80, False)
    events = session(controller, policy, [(env, MESSAGE)])
    ready = next(e for e in events if isinstance(e, Ready))
    assert ready.authenticated == "PLAIN"
    assert [(m.sender, m.recipients, m.content, m.login) for m in handler.messages] == [
        ("alice@here.example", ["bob@there.example"], WIRE_CONTENT, LOGIN.encode())
    ]
    assert isinstance(events[-1], Closed)


def test_cleartext_auth_is_refused_without_insecure(
    plain_server: tuple[Controller, Recorder],
) -> None:
    """Without TLS or INSECURE, a server offering only LOGIN/PLAIN gets nothing: deferred."""
    controller, handler = plain_server
    policy = auth_policy("no", False, LOGIN, PASSWORD)
    env = Envelope("alice@here.example", ("bob@there.example",), 80, False)
    events = session(controller, policy, [(env, MESSAGE)])
    failed = next(e for e in events if isinstance(e, SessionFailed))
    assert failed.outcome is Outcome.TEMPORARY
    assert handler.messages == []


def test_wrong_password_defers_and_sends_nothing(
    plain_server: tuple[Controller, Recorder],
) -> None:
    """A refused AUTH LOGIN fails the session temporarily and no message reaches the server."""
    controller, handler = plain_server
    policy = auth_policy("no", False, LOGIN, "wrong", insecure=True)
    env = Envelope("alice@here.example", ("bob@there.example",), 80, False)
    events = session(controller, policy, [(env, MESSAGE)])
    failed = next(e for e in events if isinstance(e, SessionFailed))
    assert failed.reply is not None and failed.reply.code == 535
    assert handler.messages == []


def test_mixed_recipients_and_two_messages_on_one_connection(
    plain_server: tuple[Controller, Recorder],
) -> None:
    """A refused recipient bounces alone, and a second message follows on the same connection."""
    controller, handler = plain_server
    policy = SessionPolicy("client.example", "no", False)
    first = Envelope("a@here.example", ("ok@there.example", "reject@there.example"), 80, False)
    second = Envelope("", ("reject@there.example",), 80, False)
    third = Envelope("b@here.example", ("other@there.example",), 80, False)
    events = session(controller, policy, [(first, MESSAGE), (second, MESSAGE), (third, [b"x\n"])])
    done = [e for e in events if isinstance(e, MessageDone)]
    assert [[r.outcome for r in d.results] for d in done] == [
        [Outcome.DELIVERED, Outcome.PERMANENT], [Outcome.PERMANENT], [Outcome.DELIVERED]
    ]
    assert [(m.sender, m.recipients) for m in handler.messages] == [
        ("a@here.example", ["ok@there.example"]), ("b@here.example", ["other@there.example"])
    ]


def test_pipelined_session_with_utf8_and_8bit(
    pipelining_server: tuple[Controller, Recorder],
) -> None:
    """Pipelined MAIL/RCPT/DATA with SMTPUTF8 and 8BITMIME reach aiosmtpd correctly."""
    controller, handler = pipelining_server
    policy = SessionPolicy("client.example", "no", False)
    env = Envelope("jörg@here.example", ("zoë@there.example", "reject@x.example"), 80, True)
    body = ["Subject: grüße\n".encode(), b"\n", "naïve\n".encode()]
    events = session(controller, policy, [(env, body), (env, body)])
    ready = next(e for e in events if isinstance(e, Ready))
    assert ready.extensions.pipelining and ready.extensions.smtputf8
    assert len(handler.messages) == 2
    assert handler.messages[0].recipients == ["zoë@there.example"]
    assert handler.messages[0].content == "Subject: grüße\r\n\r\nnaïve\r\n".encode()


def test_starttls_then_auth_plain(
    tls_server: tuple[Controller, Recorder], ca: trustme.CA
) -> None:
    """STARTTLS upgrades the connection, EHLO is repeated, AUTH appears and PLAIN is used."""
    controller, handler = tls_server
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    policy = auth_policy("required", False, LOGIN, PASSWORD)
    env = Envelope("alice@here.example", ("bob@there.example",), 80, False)
    events = session(controller, policy, [(env, MESSAGE)], tls=client_context)
    ready = next(e for e in events if isinstance(e, Ready))
    assert ready.tls_active and ready.authenticated == "PLAIN"
    assert handler.messages[0].content == WIRE_CONTENT
    assert handler.messages[0].login == LOGIN.encode()
