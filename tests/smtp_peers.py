"""Mail servers for end-to-end tests of remote delivery, on 127.0.0.x only.

Two kinds of sink:

- ``AiosmtpdSink``: a real SMTP server (aiosmtpd) with STARTTLS or implicit TLS,
  AUTH (PLAIN and LOGIN built in; CRAM-MD5, SCRAM-SHA-256, SCRAM-SHA-1, XOAUTH2 and
  OAUTHBEARER added here, the server sides from ``sasl_servers``) and a
  per-recipient answer.
- ``ScriptedSink``: a tiny threaded socket server that says exactly what a test
  wants (a 421 greeting, a refused EHLO, a stall, a drop in the middle of DATA,
  PIPELINING) and records every ``recv()``, every connection and the DATA octets
  as they came off the wire (before dot-unstuffing), for protocol-level checks.

Use them with the fixtures ``aiosmtpd_sink`` and ``scripted_sink`` (factories that
stop every server they started) after
``from smtp_peers import aiosmtpd_sink_fixture, scripted_sink_fixture  # noqa: F401``.
``write_remote_config`` writes a dma.conf that sends everything to a sink.
"""

from __future__ import annotations

import base64
import email
import email.message
import email.policy
import hashlib
import hmac
import mailbox
import os
import pwd
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, AuthResult, LoginPassword
from conftest import DmaSite
from sasl_servers import ScramServer, parse_oauthbearer, parse_xoauth2

MAILNAME = "dma.test"
"""Our mail name in every test: the default sender is ``<login>@dma.test``, a local user."""
LOGIN = "sinkuser"
PASSWORD = "pa55 w:rd|secret"
TOKEN = "ya29.A0ARrdaM-loopback_access~token/secret+value="
"""The OAuth2 access token the sinks accept."""
SASL_EXTRAS = ("SCRAM-SHA-256", "SCRAM-SHA-1", "XOAUTH2", "OAUTHBEARER")
"""Mechanisms a sink offers only when asked (``sasl=``)."""
GOOGLE_ERROR = b'{"status":"401","schemes":"Bearer","scope":"https://mail.google.com/"}'
RFC7628_ERROR = (b'{"status":"invalid_token","scope":"example_scope",'
                 b'"openid-configuration":"https://example.com/.well-known/openid-configuration"}')
WAIT = 10.0
"""Seconds a test waits for mail to arrive before it gives up."""

RcptAnswer = Callable[[str], str]


def accept_all(_address: str) -> str:
    """The usual answer to RCPT: accepted."""
    return "250 2.1.5 recipient ok"


def answer_by_local_part(address: str) -> str:
    """Answer RCPT by the local part's prefix: ``temp*`` 450, ``perm*`` 550, else 250."""
    local = address.split("@", 1)[0].lower()
    if local.startswith("temp"):
        return "450 4.2.1 mailbox busy, try later"
    if local.startswith("perm"):
        return "550 5.1.1 no such user here"
    return accept_all(address)


def free_port(*hosts: str) -> int:
    """A TCP port that is free on every one of ``hosts`` (default 127.0.0.1) right now."""
    hosts = hosts or ("127.0.0.1",)
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = int(probe.getsockname()[1])
        if all(_port_free(host, port) for host in hosts):
            return port
    raise RuntimeError(f"no port free on all of {hosts}")


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
        return True


def write_remote_config(
    site: DmaSite, port: int, extra: str = "", *, host: str = "127.0.0.1",
    defer: bool = False, timeout: str = "2s",
) -> Path:
    """Write the site's dma.conf: private paths, MAILNAME dma.test, SMARTHOST host, PORT port.

    ``host=""`` leaves SMARTHOST out (MX delivery); ``extra`` is appended as is.
    """
    if not site.aliases.exists():
        site.write_aliases("")
    text = (
        f"SPOOLDIR {site.spool}\nMAILDIR {site.maildir}\nALIASES {site.aliases}\n"
        f"MAILNAME {MAILNAME}\nPORT {port}\nTIMEOUT {timeout}\n"
    )
    if host:
        text += f"SMARTHOST {host}\n"
    if defer:
        text += "DEFER\n"
    site.config.write_text(text + extra)
    return site.config


def write_auth(site: DmaSite, host: str = "127.0.0.1", *, login: str = LOGIN,
               password: str = PASSWORD) -> str:
    """Write an auth.conf (mode 600) with one entry for ``host``; return the AUTHPATH line."""
    path = site.root / "auth.conf"
    path.write_text(f"{login}|{host}:{password}\n")
    path.chmod(0o600)
    return f"AUTHPATH {path}\n"


def wait_until(check: Callable[[], bool], timeout: float = WAIT, step: float = 0.05) -> bool:
    """Poll ``check`` until it holds or ``timeout`` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


@dataclass
class Arrival:
    """One message as a sink got it."""

    sender: str
    recipients: list[str]
    content: bytes  # dot-unstuffed, CRLF line ends, without the final "."
    tls: bool = False
    login: str | None = None
    wire: bytes = b""  # ScriptedSink only: DATA octets as received, final "." line excluded


def _wait_for(messages: list[Arrival], count: int, timeout: float) -> list[Arrival]:
    if not wait_until(lambda: len(messages) >= count, timeout):
        raise AssertionError(f"expected {count} message(s) at the sink, got {len(messages)}")
    return list(messages)


# --- aiosmtpd ----------------------------------------------------------------------------


class _Handler:
    """aiosmtpd handler: answers RCPT with ``rcpt``, records what arrives and what is tried."""

    def __init__(self, rcpt: RcptAnswer, login: str, password: str, offer_auth: bool) -> None:
        self.rcpt = rcpt
        self.offer_auth = offer_auth
        self.login = login
        self.password = password
        self.messages: list[Arrival] = []
        self.mail_commands = 0
        self.auth_mechanisms: list[str] = []
        self.ehlo_count = 0
        self.token = TOKEN
        self.scram_iterations = 4096
        self.scram_tamper = False  # a wrong server signature (one bit off)
        self.scram_final_in_success = False  # v= with the 235, not in a 334
        self.oauth_answers: list[bytes] = []  # what the client sent after an error challenge
        self.oauth_fields: list[dict[str, str]] = []  # OAUTHBEARER's key-values seen

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        self.ehlo_count += 1
        if not self.offer_auth:
            return [line for line in responses if not line[4:].upper().startswith("AUTH")]
        return responses

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        self.mail_commands += 1
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 sender ok"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        answer = self.rcpt(address)
        if answer.startswith("2"):
            envelope.rcpt_tos.append(address)
        return answer

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        login = None
        if session.authenticated and isinstance(session.auth_data, LoginPassword):
            login = session.auth_data.login.decode()
        elif session.authenticated and isinstance(session.auth_data, bytes):
            login = session.auth_data.decode()
        self.messages.append(Arrival(
            envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content,
            tls=server.transport.get_extra_info("ssl_object") is not None, login=login,
        ))
        return "250 2.0.0 queued"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                     auth_data: Any) -> AuthResult:
        """The authenticator for PLAIN and LOGIN: exactly our login and password."""
        self.auth_mechanisms.append(mechanism)
        good = isinstance(auth_data, LoginPassword) and auth_data == (
            self.login.encode(), self.password.encode("utf-8", "surrogateescape"))
        return AuthResult(success=good, handled=False, auth_data=auth_data)

    async def auth_CRAM__MD5(self, server: Any, args: list[str]) -> AuthResult:
        """CRAM-MD5 (RFC 2195), which aiosmtpd lacks: the name comes from the double '_'."""
        self.auth_mechanisms.append("CRAM-MD5")
        challenge = f"<{os.getpid()}.{time.time_ns()}@sink.test>".encode()
        response = await server.challenge_auth(challenge)
        if response is MISSING or not isinstance(response, bytes):
            return AuthResult(success=False)
        login, _, digest = response.partition(b" ")
        expected = hmac.new(self.password.encode(), challenge, hashlib.md5).hexdigest()
        good = login == self.login.encode() and hmac.compare_digest(digest, expected.encode())
        return AuthResult(success=good, handled=False, auth_data=login)


    # --- SCRAM, XOAUTH2, OAUTHBEARER: offered with AiosmtpdSink(sasl=...) ---

    async def auth_SCRAM__SHA__256(self, server: Any, args: list[str]) -> AuthResult:
        """SCRAM-SHA-256 (RFC 7677) as a server does it."""
        return await self._scram(server, args, "SCRAM-SHA-256", "sha256")

    async def auth_SCRAM__SHA__1(self, server: Any, args: list[str]) -> AuthResult:
        """SCRAM-SHA-1 (RFC 5802) as a server does it."""
        return await self._scram(server, args, "SCRAM-SHA-1", "sha1")

    async def _initial(self, server: Any, args: list[str]) -> bytes | None:
        """The initial response: on the AUTH line (``=`` is empty), else after a 334."""
        if len(args) > 1:
            return b"" if args[1] == "=" else base64.b64decode(args[1], validate=True)
        data = await server.challenge_auth(b"")
        return data if isinstance(data, bytes) else None

    async def _scram(self, server: Any, args: list[str], name: str, hash_name: str
                     ) -> AuthResult:
        self.auth_mechanisms.append(name)
        initial = await self._initial(server, args)
        if initial is None:
            return AuthResult(success=False, handled=True)  # aiosmtpd answered already
        scram = ScramServer(hash_name, self.login, self.password, salt=os.urandom(16),
                            iterations=self.scram_iterations, nonce=f"{time.time_ns():x}",
                            tamper=self.scram_tamper)
        try:
            client_final = await server.challenge_auth(scram.first(initial))
        except (ValueError, KeyError):
            return AuthResult(success=False, handled=False)  # 535
        if not isinstance(client_final, bytes):
            return AuthResult(success=False, handled=True)
        verdict = scram.final(client_final)
        if verdict is None:
            return AuthResult(success=False, handled=False)  # 535
        login = self.login.encode()
        if self.scram_final_in_success:
            message = "235 2.7.0 " + base64.b64encode(verdict).decode()
            return AuthResult(success=True, handled=False, auth_data=login, message=message)
        last = await server.challenge_auth(verdict)
        if not isinstance(last, bytes):  # "*": the client refused our signature
            return AuthResult(success=False, handled=True)
        return AuthResult(success=last == b"", handled=False, auth_data=login)

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> AuthResult:
        """XOAUTH2: the token or Google's error challenge, then 535."""
        self.auth_mechanisms.append("XOAUTH2")
        initial = await self._initial(server, args)
        if initial is None:
            return AuthResult(success=False, handled=True)
        user, token = parse_xoauth2(initial)
        return await self._oauth2(server, user, token, GOOGLE_ERROR)

    async def auth_OAUTHBEARER(self, server: Any, args: list[str]) -> AuthResult:
        """OAUTHBEARER (RFC 7628): the token or the RFC's error challenge, then 535."""
        self.auth_mechanisms.append("OAUTHBEARER")
        initial = await self._initial(server, args)
        if initial is None:
            return AuthResult(success=False, handled=True)
        user, fields = parse_oauthbearer(initial)
        self.oauth_fields.append({k: v for k, v in fields.items() if k != "auth"})
        token = fields.get("auth", "").removeprefix("Bearer ")
        return await self._oauth2(server, user, token, RFC7628_ERROR)

    async def _oauth2(self, server: Any, user: str, token: str, error: bytes) -> AuthResult:
        if user == self.login and hmac.compare_digest(token, self.token):
            return AuthResult(success=True, handled=False, auth_data=user.encode())
        answer = await server.challenge_auth(error)
        if not isinstance(answer, bytes):
            return AuthResult(success=False, handled=True)
        self.oauth_answers.append(answer)
        return AuthResult(success=False, handled=False,
                          message="535 5.7.8 Username and Password not accepted")


class AiosmtpdSink:
    """aiosmtpd on ``host``:``port`` with the recording handler; ``stop`` when done.

    ``starttls`` is a server context offered with STARTTLS; ``implicit`` one used
    from the first byte.  ``auth`` turns the authenticator on (AUTH is then offered
    after TLS only, unless ``auth_require_tls`` is False); ``exclude`` drops
    mechanisms from the offer; ``cram_md5`` adds CRAM-MD5; ``sasl`` adds those of
    SASL_EXTRAS it names (the handler's ``token``, ``scram_tamper``,
    ``scram_final_in_success`` set how they behave).  Other keywords go to aiosmtpd's
    SMTP class (``require_starttls``, ``auth_required``...).
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int | None = None, *,
        rcpt: RcptAnswer = accept_all, starttls: Any = None, implicit: Any = None,
        auth: bool = False, auth_require_tls: bool = True, exclude: tuple[str, ...] = (),
        cram_md5: bool = False, sasl: tuple[str, ...] = (), login: str = LOGIN,
        password: str = PASSWORD, **smtp_options: Any,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.handler = _Handler(rcpt, login, password, auth)
        kwargs: dict[str, Any] = dict(smtp_options)
        if starttls is not None:
            kwargs["tls_context"] = starttls
        if auth:
            kwargs["authenticator"] = self.handler.authenticate
            kwargs["auth_require_tls"] = auth_require_tls
            excluded = list(exclude)
            if not cram_md5:
                excluded.append("CRAM-MD5")
            excluded += [name for name in SASL_EXTRAS if name not in sasl]
            kwargs["auth_exclude_mechanism"] = excluded
        self.controller = Controller(
            self.handler, hostname=host, port=self.port, ssl_context=implicit,
            ready_timeout=10, server_hostname="sink.test", **kwargs,
        )
        self.controller.start()

    @property
    def messages(self) -> list[Arrival]:
        """What arrived so far."""
        return list(self.handler.messages)

    def wait_for(self, count: int = 1, timeout: float = WAIT) -> list[Arrival]:
        """Wait until ``count`` messages arrived; return them all."""
        return _wait_for(self.handler.messages, count, timeout)

    def stop(self) -> None:
        self.controller.stop()


@pytest.fixture(name="aiosmtpd_sink")
def aiosmtpd_sink_fixture() -> Iterator[Callable[..., AiosmtpdSink]]:
    """A factory: ``aiosmtpd_sink(**options)`` starts an ``AiosmtpdSink``; all stop at the end."""
    started: list[AiosmtpdSink] = []

    def start(*args: Any, **kwargs: Any) -> AiosmtpdSink:
        sink = AiosmtpdSink(*args, **kwargs)
        started.append(sink)
        return sink

    yield start
    for sink in started:
        sink.stop()


# --- the scripted socket sink ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Script:
    """What a ``ScriptedSink`` says and does.

    ``greeting`` is sent first; after a 421 one the sink hangs up, after another
    refusal it answers only QUIT (RFC 5321 3.1), or hangs up with
    ``hang_up_after_refusal``;
    ``extensions`` are the EHLO keywords (e.g. PIPELINING); ``reject_ehlo``
    answers EHLO with 502 (HELO works); ``stall`` sends the greeting and then
    never answers; ``drop_in_data`` closes the connection after the first octets
    of message data; ``data_delay`` waits before answering the end of data,
    ``mail_delay`` before answering MAIL;
    ``broken_starttls`` answers STARTTLS with 220, then answers the client's
    hello with plain text and hangs up, so the client's TLS handshake fails (put
    STARTTLS in ``extensions``); ``max_recipients`` answers RCPTs beyond that
    many in one transaction with ``452 4.5.3 too many recipients``;
    ``max_sessions`` greets connections beyond that many at once with ``421`` and hangs
    up (Exchange Online's limit); ``drop_data_of`` closes the connection in the data of
    a transaction for that recipient (a message that breaks every connection).
    """

    greeting: str = "220 sink.test ESMTP scripted"
    hang_up_after_refusal: bool = False
    extensions: tuple[str, ...] = ("8BITMIME",)
    reject_ehlo: bool = False
    rcpt: RcptAnswer = accept_all
    stall: bool = False
    drop_in_data: bool = False
    data_reply: str = "250 2.0.0 queued"
    data_delay: float = 0.0
    mail_delay: float = 0.0
    broken_starttls: bool = False
    max_recipients: int | None = None
    max_sessions: int | None = None
    drop_data_of: str | None = None


@dataclass
class ConnectionLog:
    """What one connection brought: every recv() result and every command line."""

    reads: list[bytes] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)


class ScriptedSink:
    """A threaded SMTP sink on ``host``:``port`` that follows a ``Script``."""

    def __init__(self, script: Script = Script(), host: str = "127.0.0.1",
                 port: int | None = None) -> None:
        self.script = script
        self.host = host
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port or 0))
        self.listener.listen(16)
        self.port = int(self.listener.getsockname()[1])
        self.connections: list[ConnectionLog] = []
        self.messages: list[Arrival] = []
        self.active = 0  # connections served right now
        self.peak = 0  # the most that were ever served at once
        self.turned_away = 0  # connections greeted with 421 for max_sessions
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def wait_for(self, count: int = 1, timeout: float = WAIT) -> list[Arrival]:
        """Wait until ``count`` messages arrived; return them all."""
        return _wait_for(self.messages, count, timeout)

    def stop(self) -> None:
        self._stopping.set()
        try:
            self.listener.close()
        except OSError:
            pass
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            log = ConnectionLog()
            limit = self.script.max_sessions
            with self._lock:
                self._sockets.append(sock)
                self.connections.append(log)
                if limit is not None and self.active >= limit:
                    self.turned_away += 1
                    self._turn_away(sock)
                    continue
                self.active += 1
                self.peak = max(self.peak, self.active)
            threading.Thread(target=self._serve, args=(sock, log), daemon=True).start()

    @staticmethod
    def _turn_away(sock: socket.socket) -> None:
        try:
            sock.sendall(b"421 4.7.0 too many connections from your host\r\n")
        except OSError:
            pass
        sock.close()

    def _serve(self, sock: socket.socket, log: ConnectionLog) -> None:
        try:
            _Session(self.script, sock, log, self.messages, self._stopping).run()
        except OSError:
            pass
        finally:
            sock.close()
            with self._lock:
                self.active -= 1


class _Hangup(Exception):
    """The client closed the connection, or the script says to drop it."""


class _Session:
    """One connection to a ScriptedSink."""

    def __init__(self, script: Script, sock: socket.socket, log: ConnectionLog,
                 messages: list[Arrival], stopping: threading.Event) -> None:
        self.script = script
        self.sock = sock
        self.log = log
        self.messages = messages
        self.stopping = stopping
        self.buffer = b""
        self.sender: str | None = None
        self.recipients: list[str] = []

    def _read(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise _Hangup
        self.log.reads.append(data)
        self.buffer += data

    def _reply(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\r\n")

    def _line(self) -> str:
        while b"\r\n" not in self.buffer:
            self._read()
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        text = line.decode("utf-8", "replace")
        self.log.commands.append(text)
        return text

    def run(self) -> None:
        script = self.script
        self._reply(script.greeting)
        refused = not script.greeting.startswith("2")
        if refused and (script.greeting.startswith("421") or script.hang_up_after_refusal):
            return
        if script.stall:
            self.sock.settimeout(0.2)
            while not self.stopping.is_set():
                try:
                    self._read()
                except TimeoutError:
                    continue
                except _Hangup:
                    return
            return
        try:
            while True:
                if not self._command(self._line(), refused):
                    return
        except _Hangup:
            return

    def _command(self, line: str, refused: bool) -> bool:
        verb = line.split(" ", 1)[0].upper()
        argument = line[len(verb):].strip()
        if refused and verb != "QUIT":
            self._reply("503 5.5.1 no service here, only QUIT")
        elif verb == "EHLO":
            if self.script.reject_ehlo:
                self._reply("502 5.5.2 EHLO not implemented")
            else:
                keywords = ["sink.test", *self.script.extensions]
                last = len(keywords) - 1
                self._reply("\r\n".join(
                    f"250{' ' if i == last else '-'}{k}" for i, k in enumerate(keywords)))
        elif verb == "HELO":
            self._reply("250 sink.test")
        elif verb == "MAIL":
            if self.script.mail_delay:
                time.sleep(self.script.mail_delay)
            self.sender = _angle(argument)
            self.recipients = []
            self._reply("250 2.1.0 sender ok")
        elif verb == "RCPT":
            address = _angle(argument)
            limit = self.script.max_recipients
            if limit is not None and len(self.recipients) >= limit:
                self._reply("452 4.5.3 too many recipients in this transaction")
                return True
            answer = self.script.rcpt(address)
            if answer.startswith("2"):
                self.recipients.append(address)
            self._reply(answer)
        elif verb == "DATA":
            if self.sender is None or not self.recipients:
                self._reply("554 5.5.1 no valid recipients")
            else:
                self._reply("354 go ahead")
                self._data()
        elif verb == "RSET":
            self.sender, self.recipients = None, []
            self._reply("250 2.0.0 reset")
        elif verb == "NOOP":
            self._reply("250 2.0.0 ok")
        elif verb == "STARTTLS" and self.script.broken_starttls:
            self._reply("220 2.0.0 ready to start TLS")
            self._read()  # the client's hello
            self.sock.sendall(b"this is no TLS record at all\r\n" * 4)
            raise _Hangup
        elif verb == "QUIT":
            self._reply("221 2.0.0 bye")
            return False
        else:
            self._reply("502 5.5.2 command not recognised")
        return True

    def _data(self) -> None:
        if self.script.drop_in_data or self.script.drop_data_of in self.recipients:
            while not self.buffer:
                self._read()
            raise _Hangup
        while True:
            framed = b"\r\n" + self.buffer
            end = framed.find(b"\r\n.\r\n")
            if end >= 0:
                break
            self._read()
        wire = framed[2:end + 2]
        self.buffer = framed[end + 5:]
        content = b"".join(
            line[1:] if line.startswith(b".") else line
            for line in wire.splitlines(keepends=True)
        )
        self.messages.append(Arrival(self.sender or "", list(self.recipients), content,
                                     wire=wire))
        self.sender, self.recipients = None, []
        if self.script.data_delay:
            time.sleep(self.script.data_delay)
        self._reply(self.script.data_reply)


def _angle(argument: str) -> str:
    """The address between ``<`` and ``>`` in a MAIL or RCPT argument."""
    start, end = argument.find("<"), argument.find(">")
    return argument[start + 1:end] if 0 <= start < end else argument.split(":", 1)[-1]


@pytest.fixture(name="scripted_sink")
def scripted_sink_fixture() -> Iterator[Callable[..., ScriptedSink]]:
    """A factory: ``scripted_sink(Script(...), host=..., port=...)``; all stop at the end."""
    started: list[ScriptedSink] = []

    def start(*args: Any, **kwargs: Any) -> ScriptedSink:
        sink = ScriptedSink(*args, **kwargs)
        started.append(sink)
        return sink

    yield start
    for sink in started:
        sink.stop()


def b64(text: str) -> str:
    """Base64 of ``text``, to look for an AUTH token in logs."""
    return base64.b64encode(text.encode()).decode()


# --- what a test looks at afterwards ---------------------------------------------------------


def local_login() -> str:
    """The user running the tests: the default sender's local part, who gets the bounces."""
    return pwd.getpwuid(os.getuid()).pw_name


def sender_address() -> str:
    """The envelope sender dma uses by default in these tests."""
    return f"{local_login()}@{MAILNAME}"


def bounces(site: DmaSite) -> list[email.message.EmailMessage]:
    """The messages in the sender's mbox under MAILDIR (bounces, in these tests)."""
    path = site.maildir / local_login()
    if not path.exists():
        return []
    box = mailbox.mbox(str(path), create=False)
    try:
        found = []
        for key in box.iterkeys():
            parsed = email.message_from_bytes(box.get_bytes(key), policy=email.policy.default)
            assert isinstance(parsed, email.message.EmailMessage)
            found.append(parsed)
        return found
    finally:
        box.close()


def delivery_status(report: email.message.EmailMessage, recipient: str
                    ) -> dict[str, str]:
    """Check ``report`` is an RFC 3464 bounce; return the per-recipient fields for ``recipient``.

    Field names come back lower-cased; the per-message block's Reporting-MTA is
    included under ``reporting-mta``.
    """
    assert report.get_content_type() == "multipart/report", report.get_content_type()
    assert report.get_param("report-type") == "delivery-status"
    assert report["From"] is not None and "MAILER-DAEMON@" in str(report["From"])
    parts = list(report.iter_parts())
    assert parts[0].get_content_type() == "text/plain"
    [status] = [p for p in parts if p.get_content_type() == "message/delivery-status"]
    payload = status.get_payload()
    assert isinstance(payload, list) and len(payload) >= 2, payload
    blocks = [block for block in payload if isinstance(block, email.message.Message)]
    assert len(blocks) == len(payload)
    per_message = {k.lower(): str(v) for k, v in blocks[0].items()}
    assert "reporting-mta" in per_message
    for block in blocks[1:]:
        fields = {k.lower(): " ".join(str(v).split()) for k, v in block.items()}
        if fields.get("final-recipient", "").lower().endswith(recipient.lower()):
            fields["reporting-mta"] = per_message["reporting-mta"]
            return fields
    raise AssertionError(f"no delivery-status block for {recipient}: {blocks!r}")


def queued(site: DmaSite) -> dict[str, dict[str, Any]]:
    """The queue as ``dma -bj`` lists it, by recipient."""
    return {item["recipient"]: item for item in site.queue()}


def q_fields(site: DmaSite, item_id: str) -> dict[str, str]:
    """The ``Key: value`` lines of an item's Q file."""
    fields = {}
    for line in site.queue_file(item_id).decode().splitlines():
        key, _, value = line.partition(": ")
        fields[key] = value
    return fields
