"""One SMTP connection: drive the sans-I/O client in ``dma.core.smtp`` over a socket.

The core client decides every command and what each reply means; this module owns
the socket, TLS, timeouts and the M files, turns the client's per-recipient results
into outcomes, and reports what the connection did as a ``SessionResult`` for
``dma.core.hop_attempts`` to weigh.  Which address to connect to is not its
business (``shell/remote.py`` asks core).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from dma.adapters import net
from dma.core.errors import DmaError, IOFailure
from dma.core.hop_attempts import SessionResult
from dma.core.outcomes import Outcome, deferred, delivered, failed
from dma.core.routing import NextHop, Target
from dma.core.smtp import (
    Closed,
    Envelope,
    MessageDone,
    Ready,
    ReadyForData,
    RecipientResult,
    SessionFailed,
    SessionPolicy,
    SmtpClient,
    Stage,
    StartTls,
    Transmit,
)
from dma.core.smtp import (
    Outcome as SmtpOutcome,
)
from dma.core.transport import Security, security_for
from dma.shell.outgoing_message import (
    OutgoingMessage,
    logged_ids,
    measured,
    message_ids,
    narrowed,
)
from dma.shell.settings import Settings

if TYPE_CHECKING:
    from dma.adapters.log import Logger

CONNECT_TIMEOUT = 30.0
FINAL_DOT_FACTOR = 2.0  # RFC 5321 4.5.3.2: 10 minutes for the final dot, 5 for the rest

Settle = Callable[[str, Outcome], None]
"""Told each delivered or failed item as soon as its transaction ends."""


@dataclass(frozen=True, slots=True)
class _HandshakeFailed:
    """The STARTTLS handshake broke down and OPPORTUNISTIC_TLS may go on without TLS."""

    reason: str


def _too_many_recipients(message: OutgoingMessage, done: MessageDone) -> OutgoingMessage | None:
    """The message narrowed to the recipients refused with "452 too many recipients".

    None unless the server also took at least one recipient in this transaction:
    each further transaction then makes progress, so this ends.
    """
    limited = {
        result.recipient for result in done.results
        if result.stage is Stage.RCPT and result.reply is not None
        and result.reply.code == 452 and result.reply.enhanced in (None, "4.5.3")
    }
    if not limited or not done.delivered:
        return None
    plan = message.plan
    keep = {item_id for item_id, recipient in zip(plan.item_ids, plan.item_recipients,
                                                  strict=True) if recipient in limited}
    return narrowed(message, keep)


def _verification(security: Security) -> str:
    """How the server's certificate will be checked: verified, pinned, unverified, or none."""
    if not security.implicit_tls and security.starttls == "no":
        return "none"
    if security.fingerprint is not None:
        return "pinned"
    return "verified" if security.verify else "unverified"


def _verified(info: net.TlsInfo) -> str:
    """How the certificate of a TLS session was checked."""
    if info.pinned:
        return "pinned"
    return "verified" if info.verified else "unverified"


class SmtpDriver:
    """Deliver what one connection to one address can; the SMTP itself is core's."""

    def __init__(self, settings: Settings, log: Logger, settle: Settle, *,
                 verbose: bool = False) -> None:
        self.settings = settings
        self.config = settings.config
        self.log = log
        self.settle = settle
        self.verbose = verbose

    def session(
        self, hop: NextHop, target: Target, address: str, messages: list[OutgoingMessage],
        credentials: tuple[str, str] | None,
    ) -> SessionResult[str]:
        """Deliver what one connection to ``address`` can (see SessionResult).

        With OPPORTUNISTIC_TLS a failed STARTTLS handshake (not a refused
        certificate) ends that connection; the next one, to the same address,
        stays in plain text, as Postfix's "may" level does.  Once per address.
        """
        security = security_for(self.config, hop.kind)
        result = self._attempt(hop, target, address, messages, credentials, security)
        if not isinstance(result, _HandshakeFailed):
            return result
        self.log.warning("TLS handshake failed; reconnecting to go on without TLS "
                         "(OPPORTUNISTIC_TLS)", id=message_ids(messages),
                         host=f"{target.name} [{address}]:{hop.port}",
                         error=result.reason)
        plain = dataclasses.replace(security, starttls="no")
        retried = self._attempt(hop, target, address, messages, credentials, plain,
                                fallback=True)
        if isinstance(retried, _HandshakeFailed):  # cannot happen: no STARTTLS in plain text
            return SessionResult({}, {}, retried.reason)
        return retried

    def _tls_policy(self, hop: NextHop, target: Target, verify: bool) -> net.TlsPolicy:
        return net.TlsPolicy(
            verify=verify,
            server_name=hop.host if hop.kind == "smarthost" else target.name,
            cafile=self.config.cafile,
            certfile=self.config.certfile,
            fingerprint=self.config.fingerprint,
        )

    def _attempt(
        self, hop: NextHop, target: Target, address: str, messages: list[OutgoingMessage],
        credentials: tuple[str, str] | None, security: Security, *, fallback: bool = False,
    ) -> SessionResult[str] | _HandshakeFailed:
        """One connection: connect, talk (``_Conversation``), close."""
        host = f"{target.name} [{address}]:{hop.port}"
        timeout = float(self.config.timeout)
        ids = message_ids(messages)
        if fallback:
            mode = "no (TLS handshake failed)"
        else:
            mode = "implicit" if security.implicit_tls else security.starttls
        self.log.info("trying remote delivery", id=ids, host=target.name, address=address,
                      port=hop.port, preference=target.preference, tls=mode,
                      verification=_verification(security))
        tls = self._tls_policy(hop, target, security.verify)
        try:
            connection = net.connect(
                address, hop.port, host_name=target.name,
                connect_timeout=min(CONNECT_TIMEOUT, timeout), io_timeout=timeout,
                implicit_tls=tls if security.implicit_tls else None,
            )
        except DmaError as refused:
            self.log.warning("connection failed", id=ids, host=host, error=str(refused))
            return SessionResult({}, {}, str(refused))
        client = SmtpClient(SessionPolicy(
            helo_name=self.settings.mailname,
            starttls=security.starttls,
            tls_active=security.implicit_tls,
            credentials=credentials,
            insecure=self.config.insecure,
        ))
        talk = _Conversation(self, client, connection, security, tls, host, messages)
        return talk.run(target.name, timeout)

    def _outcomes(self, message: OutgoingMessage, done: MessageDone,
                  host: str) -> dict[str, Outcome]:
        """Each item's outcome from the server's replies to its recipient."""
        by_recipient: dict[str, Outcome] = {}
        for result in done.results:
            reply = str(result.reply) if result.reply is not None else result.reason
            if result.outcome is SmtpOutcome.DELIVERED:
                outcome = delivered(f"{host} said: {reply}")
            elif result.outcome is SmtpOutcome.PERMANENT:
                from dma.core.bounce import status_from_reply

                status = status_from_reply(
                    result.reply.code if result.reply else 554,
                    result.reply.enhanced if result.reply else None, permanent=True)
                outcome = failed(f"{host} did not like our {result.stage.value}: {reply}",
                                 status, f"smtp; {reply}", host.split(" ")[0])
            else:
                outcome = deferred(f"{host} failed after {result.stage.value}: {reply}")
            by_recipient[result.recipient] = outcome
        plan = message.plan
        return {
            item_id: by_recipient.get(recipient, deferred("no reply for this recipient"))
            for item_id, recipient in zip(plan.item_ids, plan.item_recipients, strict=True)
        }

    def _trace(self, direction: str, data: bytes) -> None:
        """-v: the conversation on stderr, with AUTH arguments masked."""
        if not self.verbose:
            return
        for line in data.decode("utf-8", "replace").splitlines():
            if line.upper().startswith("AUTH ") and direction == ">>>":
                line = " ".join(line.split(" ")[:2]) + " ***"
            print(f"{direction} {line}", file=sys.stderr, flush=True)


class _Conversation:
    """One connection's talk: the I/O loop around the core client, one small handler
    per event, and what the connection settled, deferred or failed on the way."""

    def __init__(
        self, driver: SmtpDriver, client: SmtpClient, connection: net.Connection,
        security: Security, tls: net.TlsPolicy, host: str, messages: list[OutgoingMessage],
    ) -> None:
        self.driver = driver
        self.log = driver.log
        self.client = client
        self.connection = connection
        self.security = security
        self.tls = tls
        self.host = host
        self.ids = message_ids(messages)
        self.queue = list(messages)
        self.inflight: list[OutgoingMessage] = []  # sent, no MessageDone yet; [0] is current
        self.outcomes: dict[str, Outcome] = {}
        self.retry: dict[str, Outcome] = {}
        self.failure: str | None = None
        self.auth_failure: Literal["refused", "unusable"] | None = None
        self.closed = False
        self.handshake_failed: _HandshakeFailed | None = None
        self._handlers: dict[type, Callable[[Any], None]] = {
            Transmit: self._transmit,
            StartTls: self._start_tls,
            Ready: self._ready,
            ReadyForData: self._ready_for_data,
            RecipientResult: self._recipient,
            MessageDone: self._message_done,
            SessionFailed: self._session_failed,
            Closed: self._closed,
        }

    def run(self, target_name: str, timeout: float) -> SessionResult[str] | _HandshakeFailed:
        """Talk until the session is closed; what it did, or that TLS broke down."""
        client = self.client
        try:
            while not self.closed and self.handshake_failed is None:
                event = client.next_event()
                if event is None:
                    wait = timeout * FINAL_DOT_FACTOR if client.awaits_final_reply else timeout
                    data = self.connection.receive(timeout=wait)
                    self.driver._trace("<<<", data)
                    client.receive_data(data)
                else:
                    handler = self._handlers.get(type(event))
                    if handler is not None:
                        handler(event)
        except DmaError as error:
            # keep the server's own words (e.g. a 554 greeting) over the hang-up after it
            if self.failure is None:
                text = str(error)
                self.failure = text if text.startswith(target_name) else f"{self.host}: {text}"
                self.log.warning("connection lost", id=self.ids, host=self.host, error=text)
        finally:
            self.connection.close()
        if self.handshake_failed is not None:
            return self.handshake_failed
        return SessionResult(self.outcomes, self.retry, self.failure, self.auth_failure)

    def _write(self, data: bytes) -> None:
        if data:
            self.driver._trace(">>>", data)
            self.connection.send(data)

    def _transmit(self, event: Transmit) -> None:
        self.driver._trace(">>>", "\r\n".join(event.commands).encode())
        self.connection.send(event.data)

    def _start_tls(self, _event: StartTls) -> None:
        try:
            info = self.connection.start_tls(self.tls)
        except net.TlsHandshakeFailed as broken:
            if self.security.starttls != "opportunistic":
                raise
            # nothing was in flight: STARTTLS comes before any message
            self.handshake_failed = _HandshakeFailed(str(broken))
            return
        self.log.info("TLS started", id=self.ids, host=self.host, version=info.version,
                      cipher=info.cipher, verification=_verified(info))
        self.connection.send(self.client.tls_established())

    def _ready(self, event: Ready) -> None:
        for notice in event.notices:
            self.log.info(notice, id=self.ids, host=self.host)
        tls = self.connection.tls
        if tls is not None and self.security.implicit_tls:
            self.log.info("TLS on connect", id=self.ids, host=self.host, version=tls.version,
                          cipher=tls.cipher, verification=_verified(tls))
        self._next()

    def _ready_for_data(self, _event: ReadyForData) -> None:
        if not self.inflight:
            return
        current = self.inflight[0]
        if current.body is not None:
            for chunk in self.client.send_data_lines((current.body,)):
                self.connection.send(chunk)
        else:
            with open(current.path, "rb") as handle:
                chunks = iter(lambda: handle.read(1 << 16), b"")
                for chunk in self.client.send_data_lines(chunks):
                    self.connection.send(chunk)
        self.driver._trace(">>>", b"(message data)\r\n.")
        if self.queue and self.client.can_pipeline_next:
            # the next message rides behind the dot: one round trip a message
            self._send(self.queue.pop(0))

    def _recipient(self, event: RecipientResult) -> None:
        if self.driver.verbose:
            self.log.info("recipient", id=self.ids, to=event.recipient, result=event.reason)

    def _message_done(self, event: MessageDone) -> None:
        if not self.inflight:
            return
        done = self.inflight.pop(0)
        settled = {}
        for item_id, outcome in self.driver._outcomes(done, event, self.host).items():
            if outcome.kind == "deferred":
                self.retry[item_id] = outcome
            else:
                settled[item_id] = outcome
        self.outcomes.update(settled)  # recorded before anything else can fail
        for item_id, outcome in settled.items():
            self.driver.settle(item_id, outcome)
        rest = _too_many_recipients(done, event)
        if rest is not None:
            # RFC 5321 4.5.3.1.10: the rest go in another transaction, now
            self.log.info("server takes fewer recipients per message; sending the others "
                          "in another transaction", id=logged_ids(rest.plan.item_ids),
                          host=self.host)
            self.queue.insert(0, rest)
        if not self.inflight:
            self._next()

    def _session_failed(self, event: SessionFailed) -> None:
        self.failure = f"{self.host}: {event.reason}"
        self.auth_failure = event.auth
        self.log.warning("session failed", id=self.ids, host=self.host,
                         stage=event.stage.value, reason=event.reason)
        self._write(self.client.quit())

    def _closed(self, _event: Closed) -> None:
        self.closed = True

    def _next(self) -> None:
        """Start the next message, or end the session when there is none (or it failed)."""
        if not self.queue or not self.client.can_send_message:
            self._write(self.client.quit())
            return
        self._send(self.queue.pop(0))

    def _send(self, message: OutgoingMessage) -> None:
        try:
            message = measured(message)
        except OSError as error:  # we hold its claim: this is the disk failing
            raise IOFailure(f"cannot read queued message {message.path}: {error.strerror}",
                            hint="check the spool file system") from None
        plan = message.plan
        envelope = Envelope(
            sender=plan.sender, recipients=plan.recipients, size=message.size,
            eight_bit=message.eight_bit, dsn_notify=plan.dsn_notify, dsn_ret=plan.dsn_ret,
            dsn_envid=plan.dsn_envid,
        )
        self.inflight.append(message)
        self._write(self.client.send_message(envelope))
