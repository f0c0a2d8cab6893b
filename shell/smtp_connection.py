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
from typing import TYPE_CHECKING, Literal

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
    ) -> SessionResult:
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
    ) -> SessionResult | _HandshakeFailed:
        """One connection: connect, talk, close."""
        tls = self._tls_policy(hop, target, security.verify)
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
        outcomes: dict[str, Outcome] = {}
        retry: dict[str, Outcome] = {}
        queue = list(messages)
        inflight: list[OutgoingMessage] = []  # sent, MessageDone not yet seen; [0] is current
        failure: str | None = None
        auth_failure: Literal["refused", "unusable"] | None = None
        try:
            while True:
                event = client.next_event()
                if event is None:
                    wait = timeout * FINAL_DOT_FACTOR if client.awaits_final_reply else timeout
                    data = connection.receive(timeout=wait)
                    self._trace("<<<", data)
                    client.receive_data(data)
                elif isinstance(event, Transmit):
                    self._trace(">>>", "\r\n".join(event.commands).encode())
                    connection.send(event.data)
                elif isinstance(event, StartTls):
                    try:
                        info = connection.start_tls(tls)
                    except net.TlsHandshakeFailed as broken:
                        if security.starttls != "opportunistic":
                            raise
                        # nothing was in flight: STARTTLS comes before any message
                        return _HandshakeFailed(str(broken))
                    self.log.info("TLS started", id=ids, host=host, version=info.version,
                                  cipher=info.cipher, verification=_verified(info))
                    connection.send(client.tls_established())
                elif isinstance(event, Ready):
                    for notice in event.notices:
                        self.log.info(notice, id=ids, host=host)
                    if connection.tls is not None and security.implicit_tls:
                        self.log.info("TLS on connect", id=ids, host=host,
                                      version=connection.tls.version,
                                      cipher=connection.tls.cipher,
                                      verification=_verified(connection.tls))
                    self._next(client, connection, queue, inflight)
                elif isinstance(event, ReadyForData) and inflight:
                    body = inflight[0].body
                    if body is not None:
                        for chunk in client.send_data_lines((body,)):
                            connection.send(chunk)
                    else:
                        with open(inflight[0].path, "rb") as handle:
                            chunks = iter(lambda: handle.read(1 << 16), b"")
                            for chunk in client.send_data_lines(chunks):
                                connection.send(chunk)
                    self._trace(">>>", b"(message data)\r\n.")
                    if queue and client.can_pipeline_next:
                        # the next message rides behind the dot: one round trip a message
                        self._send(client, connection, queue.pop(0), inflight)
                elif isinstance(event, RecipientResult):
                    if self.verbose:
                        self.log.info("recipient", id=ids, to=event.recipient,
                                      result=event.reason)
                elif isinstance(event, MessageDone) and inflight:
                    settled = {}
                    done = inflight.pop(0)
                    for item_id, outcome in self._outcomes(done, event, host).items():
                        if outcome.kind == "deferred":
                            retry[item_id] = outcome
                        else:
                            settled[item_id] = outcome
                    outcomes.update(settled)  # recorded before anything else can fail
                    for item_id, outcome in settled.items():
                        self.settle(item_id, outcome)
                    rest = _too_many_recipients(done, event)
                    if rest is not None:
                        # RFC 5321 4.5.3.1.10: the rest go in another transaction, now
                        self.log.info("server takes fewer recipients per message; sending "
                                      "the others in another transaction",
                                      id=logged_ids(rest.plan.item_ids), host=host)
                        queue.insert(0, rest)
                    if not inflight:
                        self._next(client, connection, queue, inflight)
                elif isinstance(event, SessionFailed):
                    failure = f"{host}: {event.reason}"
                    auth_failure = event.auth
                    self.log.warning("session failed", id=ids, host=host,
                                     stage=event.stage.value,
                                     reason=event.reason)
                    data = client.quit()
                    self._trace(">>>", data)
                    connection.send(data)
                elif isinstance(event, Closed):
                    break
        except DmaError as error:
            # keep the server's own words (e.g. a 554 greeting) over the hang-up after it
            if failure is None:
                text = str(error)
                failure = text if text.startswith(target.name) else f"{host}: {text}"
                self.log.warning("connection lost", id=ids, host=host, error=text)
        finally:
            connection.close()
        return SessionResult(outcomes, retry, failure, auth_failure)

    def _next(self, client: SmtpClient, connection: net.Connection,
              queue: list[OutgoingMessage], inflight: list[OutgoingMessage]) -> None:
        """Start the next message, or end the session when there is none (or it failed)."""
        if not queue or not client.can_send_message:
            data = client.quit()
            self._trace(">>>", data)
            connection.send(data)
            return
        self._send(client, connection, queue.pop(0), inflight)

    def _send(self, client: SmtpClient, connection: net.Connection,
              message: OutgoingMessage, inflight: list[OutgoingMessage]) -> None:
        try:
            message = measured(message)
        except OSError as error:  # we hold its claim: this is the disk failing
            raise IOFailure(f"cannot read queued message {message.path}: {error.strerror}",
                            hint="check the spool file system") from None
        envelope = Envelope(
            sender=message.plan.sender, recipients=message.plan.recipients,
            size=message.size, eight_bit=message.eight_bit,
            dsn_notify=message.plan.dsn_notify, dsn_ret=message.plan.dsn_ret,
            dsn_envid=message.plan.dsn_envid,
        )
        inflight.append(message)
        data = client.send_message(envelope)
        if data:
            self._trace(">>>", data)
            connection.send(data)

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
