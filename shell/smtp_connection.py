"""One SMTP connection: drive the sans-I/O client in ``dma.core.smtp`` over a socket.

This module does the I/O of one connection and nothing else: connect where a
``TryAddress`` says (with the credentials and TLS policy it carries), write what the
core client gives, feed it what the server sends, wait as long as the client says
(``SmtpClient.reply_timeout``), read the M files, and report what the connection did
as a ``SessionResult`` for ``dma.core.hop_attempts`` to weigh.  What the replies make
of each item and the 452 follow-on are ``dma.core.smtp_outcomes``; which address is
next, and the plain-text retry after a failed STARTTLS handshake, are
``dma.core.hop_attempts`` (``shell/remote.py`` asks it).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal

from dma.adapters import net, system
from dma.core.errors import DmaError, IOFailure, SoftwareError
from dma.core.hop_attempts import SessionResult, TryAddress
from dma.core.ledger import AddressId, Report
from dma.core.outcomes import Outcome
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
    StartTls,
    Transmit,
)
from dma.core.smtp_outcomes import follow_on, transaction_settlement
from dma.core.transport import Security
from dma.shell.outgoing_message import (
    MessageQueue,
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
UNSENT_LIMIT = 1 << 16
"""Octets written ahead of the socket at most: a large message streams in such chunks."""
SCRAM_NONCE_OCTETS = 18
"""Random octets of SCRAM's client nonce (36 hex digits, 144 bits): fresh per session."""

Settle = Report
"""Told each delivered or failed address as soon as its transaction ends."""


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


def _tls_mode(step: TryAddress[AddressId], security: Security) -> str:
    """The ``tls`` field of "trying remote delivery"."""
    if step.tls_fallback is not None:
        return "no (TLS handshake failed)"
    return "implicit" if security.implicit_tls else security.starttls


class SmtpDriver:
    """Deliver what one connection to one address can; the SMTP itself is core's."""

    def __init__(self, settings: Settings, log: Logger, settle: Settle, *,
                 verbose: bool = False) -> None:
        self.settings = settings
        self.config = settings.config
        self.log = log
        self.settle = settle
        self.verbose = verbose

    def session(self, hop: NextHop, step: TryAddress[AddressId],
                messages: list[OutgoingMessage] | MessageQueue,
                ready: Callable[[], None] | None = None,
                answered: Callable[[float], bool] | None = None) -> SessionResult[AddressId]:
        """Deliver what one connection to ``step.address`` can (see SessionResult);
        ``messages``: the step's addresses as transactions, or the queue this connection
        shares with the hop's others (it takes one message at a time, and gives back the
        unfinished ones when it is lost); ``ready`` is called once the session can send
        (greeted, TLS and AUTH done), ``answered`` with the seconds the server took to
        answer the end of each message until it returns False."""
        queue = messages if isinstance(messages, MessageQueue) else MessageQueue(messages)
        return self._connection(hop, step, queue, _Signals(ready, answered))

    def _tls_policy(self, hop: NextHop, target: Target, security: Security) -> net.TlsPolicy:
        """The certificate checks: the Security's (dma.conf's, or an account's pin)."""
        return net.TlsPolicy(
            verify=security.verify,
            server_name=hop.host if hop.kind == "smarthost" else target.name,
            cafile=self.config.cafile,
            certfile=self.config.certfile,
            fingerprint=security.fingerprint,
        )

    def _connection(self, hop: NextHop, step: TryAddress[AddressId], messages: MessageQueue,
                    signals: _Signals) -> SessionResult[AddressId]:
        """One connection: connect, talk (``_Conversation``), close."""
        security = step.security
        if security is None:
            raise SoftwareError("a TryAddress without a TLS policy reached the SMTP driver",
                                hint="give HopAttempts the hop's security_for(...)")
        target, address = step.target, step.address
        host = f"{target.name} [{address}]:{hop.port}"
        timeout = float(self.config.timeout)
        ids = message_ids(messages.snapshot())
        if step.tls_fallback is not None:
            self.log.warning("TLS handshake failed; reconnecting to go on without TLS "
                             "(OPPORTUNISTIC_TLS)", id=ids, host=host, error=step.tls_fallback)
        self.log.info("trying remote delivery", id=ids, host=target.name, address=address,
                      port=hop.port, preference=target.preference,
                      tls=_tls_mode(step, security), verification=_verification(security))
        tls = self._tls_policy(hop, target, security)
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
            credentials=step.credentials,
            insecure=self.config.insecure,
            nonce=system.random_hex(SCRAM_NONCE_OCTETS),
            server_name=tls.server_name,
            server_port=hop.port,
        ))
        talk = _Conversation(self, client, connection, security, tls, target.name, host,
                             messages, ids)
        talk.signals = signals
        return talk.run(timeout)

    def _trace(self, direction: str, data: bytes) -> None:
        """-v: the conversation on stderr.  What the client sends comes as core's
        ``Transmit.commands``, where an AUTH line's arguments and every answer to a 334
        are ``***`` already; an AUTH line with arguments is masked here again."""
        if not self.verbose:
            return
        for line in data.decode("utf-8", "replace").splitlines():
            words = line.split(" ")
            if direction == ">>>" and words[0].upper() == "AUTH" and len(words) > 2:
                line = " ".join(words[:2]) + " ***"  # core shows it so; never more
            print(f"{direction} {line}", file=sys.stderr, flush=True)


class _Conversation:
    """One connection's talk: the I/O loop around the core client, one small handler
    per event, and what the connection settled, deferred or failed on the way."""

    def __init__(
        self, driver: SmtpDriver, client: SmtpClient, connection: net.Connection,
        security: Security, tls: net.TlsPolicy, target_name: str, host: str,
        messages: MessageQueue, ids: str,
    ) -> None:
        self.driver = driver
        self.log = driver.log
        self.client = client
        self.connection = connection
        self.security = security
        self.tls = tls
        self.target_name = target_name
        self.host = host  # "name [address]:port"
        self.ids = ids
        self.queue = messages
        self.signals = _Signals(None, None)
        self.inflight: list[OutgoingMessage] = []  # sent, no MessageDone yet; [0] is current
        self.outcomes: dict[AddressId, Outcome] = {}
        self.retry: dict[AddressId, Outcome] = {}
        self.failure: str | None = None
        self.auth_failure: Literal["refused", "unusable"] | None = None
        self.tls_handshake_failed: str | None = None
        self.closed = False
        self._unsent: list[bytes] = []  # written, not handed to the socket yet
        self._unsent_size = 0
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

    def run(self, timeout: float) -> SessionResult[AddressId]:
        """Talk until the session is closed; what it did."""
        try:
            while not self.closed:
                self._step(timeout)
        except DmaError as error:
            # keep the server's own words (e.g. a 554 greeting) over the hang-up after it
            if self.failure is None:
                self.failure = self._failure(str(error))
                self.log.warning("connection lost", id=self.ids, host=self.host, error=str(error))
        finally:
            self.connection.close()
            self._give_back()
        return SessionResult(self.outcomes, self.retry, self.failure, self.auth_failure,
                             self.tls_handshake_failed)

    def _give_back(self) -> None:
        """Messages sent without their end (the connection was lost) go back to the
        queue for the hop's other connections, or the next address."""
        unfinished, self.inflight = self.inflight, []
        kept_out = self.queue.give_back(unfinished)
        if kept_out is not None:
            self.log.warning("a second connection was lost while sending this message; "
                             "not offered again in this attempt",
                             id=logged_ids(kept_out.plan.item_ids), host=self.host)

    def _step(self, timeout: float) -> None:
        """Handle the client's next event, or read what it waits for."""
        event = self.client.next_event()
        if event is None:
            self._flush()  # the client waits for the server: what we wrote goes out now
            data = self.connection.receive(timeout=self.client.reply_timeout(timeout))
            self.driver._trace("<<<", data)
            self.client.receive_data(data)
            return
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def _failure(self, text: str) -> str:
        """The host's failure as SessionResult reports it: its name first."""
        return text if text.startswith(self.target_name) else f"{self.host}: {text}"

    def _write(self, data: bytes) -> None:
        if data:
            self.driver._trace(">>>", data)
            self._put(data)

    def _put(self, data: bytes) -> None:
        """Send ``data`` with whatever follows it before the client next waits for the
        server: one write for a message's end and the next one's envelope, not two (the
        server reads them at once, and each write is a system call and a wake-up)."""
        self._unsent.append(data)
        self._unsent_size += len(data)
        if self._unsent_size >= UNSENT_LIMIT:
            self._flush()

    def _flush(self) -> None:
        if self._unsent:
            data = self._unsent[0] if len(self._unsent) == 1 else b"".join(self._unsent)
            self._unsent.clear()
            self._unsent_size = 0
            self.connection.send(data)
            self.signals.sent()

    def _transmit(self, event: Transmit) -> None:
        self.driver._trace(">>>", "\r\n".join(event.commands).encode())
        self._put(event.data)

    def _start_tls(self, _event: StartTls) -> None:
        self._flush()
        try:
            info = self.connection.start_tls(self.tls)
        except net.TlsHandshakeFailed as broken:
            self.tls_handshake_failed = str(broken)
            if self.security.starttls != "opportunistic":
                raise  # logged as a lost connection, like any other
            # quietly: core has this address tried again in plain text; nothing was in
            # flight, STARTTLS comes before any message
            self.failure = self._failure(str(broken))
            self.closed = True
            return
        self.log.info("TLS started", id=self.ids, host=self.host, version=info.version,
                      cipher=info.cipher, verification=_verified(info))
        self._put(self.client.tls_established())

    def _ready(self, event: Ready) -> None:
        for notice in event.notices:
            self.log.info(notice, id=self.ids, host=self.host)
        tls = self.connection.tls
        if tls is not None and self.security.implicit_tls:
            self.log.info("TLS on connect", id=self.ids, host=self.host, version=tls.version,
                          cipher=tls.cipher, verification=_verified(tls))
        self.signals.is_ready()
        self._next()

    def _ready_for_data(self, _event: ReadyForData) -> None:
        if not self.inflight:
            return
        for chunk in self.client.send_data_lines(_content(self.inflight[0])):
            self._put(chunk)
        self.signals.message_ending()
        self.driver._trace(">>>", b"(message data)\r\n.")
        if self.client.can_pipeline_next and (following := self.queue.take()) is not None:
            # the next message rides behind the dot: one round trip a message
            self._send(following)

    def _recipient(self, event: RecipientResult) -> None:
        if self.driver.verbose:
            self.log.info("recipient", id=self.ids, to=event.recipient, result=event.reason)

    def _message_done(self, event: MessageDone) -> None:
        if not self.inflight:
            return
        done = self.inflight.pop(0)
        self.signals.message_answered()
        plan = done.plan
        split = transaction_settlement(plan.item_ids, plan.item_recipients, event, self.host)
        self.retry.update(split.retry)
        self.outcomes.update(split.settled)  # recorded before anything else can fail
        for item_id, outcome in split.settled.items():
            self.driver.settle(item_id, outcome)
        rest = narrowed(done, frozenset(follow_on(plan.item_ids, plan.item_recipients, event)))
        if rest is not None:
            # RFC 5321 4.5.3.1.10: the rest go in another transaction, now
            self.log.info("server takes fewer recipients per message; sending the others "
                          "in another transaction", id=logged_ids(rest.plan.item_ids),
                          host=self.host)
            self.queue.put_first(rest)
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
        message = self.queue.take() if self.client.can_send_message else None
        if message is None:
            self._write(self.client.quit())
            return
        self._send(message)

    def _send(self, message: OutgoingMessage) -> None:
        try:
            message = measured(message)
        except OSError as error:  # we hold its claim: this is the disk failing
            self._flush()  # the message before it still ends, and gets its reply
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


class _Signals:
    """What a connection tells its lanes: once that it can send, and how long the server
    took to answer the end of each message (from the write that carried its final dot to
    the reply), until they need no more.  One message's end is in flight at a time: the
    next one's data waits for the server's 354, which comes after that answer."""

    def __init__(self, ready: Callable[[], None] | None,
                 answered: Callable[[float], bool] | None) -> None:
        self._ready = ready
        self._answered = answered
        self._ending = False  # a message's end is written, not yet sent
        self._since: float | None = None  # when the write that carried it went out

    def is_ready(self) -> None:
        if self._ready is not None:
            ready, self._ready = self._ready, None
            ready()

    def message_ending(self) -> None:
        if self._answered is not None:
            self._ending = True

    def sent(self) -> None:
        if self._ending:
            self._ending = False
            self._since = time.monotonic()

    def message_answered(self) -> None:
        if self._answered is not None and self._since is not None:
            since, self._since = self._since, None
            if not self._answered(time.monotonic() - since):
                self._answered = None


def _content(message: OutgoingMessage) -> Iterator[bytes]:
    """The M file's content for DATA: the small message read before, else read in chunks."""
    if message.body is not None:
        yield message.body
        return
    with open(message.path, "rb", buffering=0) as handle:  # no isatty() probe
        yield from iter(lambda: handle.read(1 << 16), b"")
