"""The SMTP client as a sans-I/O state machine (SPEC 5.4-5.6): replies in, events and bytes out.

Like h11, it never touches a socket.  The driver (the shell) owns the connection,
TLS and timeouts; it runs this loop:

    client = SmtpClient(policy)
    while (event := client.next_event()) is not Closed:
        None           -> client.receive_data(sock.recv(...))   (b"" at end of stream)
        Transmit       -> sock.sendall(event.data)
        StartTls       -> wrap the socket, then sock.sendall(client.tls_established())
        Ready          -> sock.sendall(client.send_message(envelope))
        ReadyForData   -> for chunk in client.send_data_lines(lines): sock.sendall(chunk)
        RecipientResult-> log it (MessageDone carries the final word)
        MessageDone    -> record outcomes; if client.can_send_message: send_message again,
                          else (or when done) sock.sendall(client.quit())
        SessionFailed  -> record, sock.sendall(client.quit()) (b"" means just close)

Everything that affects transitions lives in this file, in the TRANSITIONS table
where possible: for the state we are in and the kind of reply that arrived, the
table names the action and every state that action may move to.  A pair missing
from the table is a reply the protocol does not allow there: the session fails,
temporarily.  Every send_message is answered by exactly one MessageDone.

AUTH secrets go to the wire and nowhere else: events, reprs and reasons never
hold a password or a token.
"""

from __future__ import annotations

import enum
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from dma.core.dsn import envid_problem, notify_problem, ret_problem, xtext
from dma.core.errors import DmaError, SoftwareError
from dma.core.octets import printable, wire_octets
from dma.core.smtp_auth import (
    CLEARTEXT_MECHANISMS,
    PREFERENCE,
    choose_mechanism,
    cram_md5_response,
    login_steps,
    plain_token,
)
from dma.core.smtp_reply import Extensions, RemoteProtocolError, Reply, ReplyParser, parse_ehlo

__all__ = [
    "TRANSITIONS",
    "Closed",
    "Envelope",
    "Event",
    "LocalProtocolError",
    "MessageDone",
    "Outcome",
    "Ready",
    "ReadyForData",
    "RecipientResult",
    "RemoteProtocolError",
    "ReplyKind",
    "SessionFailed",
    "SessionPolicy",
    "SmtpClient",
    "Stage",
    "StartTls",
    "State",
    "Transmit",
    "classify",
    "reply_kind",
]

CRLF = b"\r\n"
DATA_CHUNK_OCTETS = 64 * 1024
"""send_data_lines yields about this much at a time: few writes, bounded memory."""


class LocalProtocolError(SoftwareError):
    """Our own code drove the SMTP machine wrongly (a call in the wrong state): a bug."""


# --- states, reply kinds and the table -------------------------------------------------


class State(enum.Enum):
    """Where the session is: mostly, which reply we are waiting for."""

    GREETING = "waiting for the greeting"
    EHLO = "waiting for the EHLO reply"
    HELO = "waiting for the HELO reply"
    STARTTLS = "waiting for the STARTTLS reply"
    TLS_HANDSHAKE = "waiting for the driver's TLS handshake"
    AUTH = "authenticating"
    READY = "idle, ready for a message"
    RSET = "waiting for the RSET reply"
    MAIL = "waiting for the MAIL FROM reply"
    RCPT = "waiting for RCPT TO replies"
    DATA = "waiting for the DATA reply"
    SENDING_DATA = "sending the message"
    DATA_END = "waiting for the reply to the end of data"
    QUIT = "waiting for the QUIT reply"
    FAILED = "failed"
    CLOSED = "closed"


class ReplyKind(enum.Enum):
    """What a reply means for the table: its class, with 421 apart (the server hangs up)."""

    POSITIVE = "2xx"
    INTERMEDIATE = "3xx"
    TRANSIENT = "4xx"
    PERMANENT = "5xx"
    SHUTDOWN = "421"


def reply_kind(reply: Reply) -> ReplyKind:
    """The table's view of ``reply``."""
    if reply.code == 421:
        return ReplyKind.SHUTDOWN
    return {
        2: ReplyKind.POSITIVE,
        3: ReplyKind.INTERMEDIATE,
        4: ReplyKind.TRANSIENT,
    }.get(reply.code // 100, ReplyKind.PERMANENT)


@dataclass(frozen=True, slots=True)
class _Transition:
    action: str  # name of the SmtpClient method run with the reply
    targets: frozenset[State]  # every state the action may move to


def _to(action: str, *targets: State) -> _Transition:
    return _Transition(action, frozenset(targets))


S, K = State, ReplyKind
TRANSITIONS: dict[tuple[State, ReplyKind], _Transition] = {
    # waiting for            reply           action                possible next states
    (S.GREETING, K.POSITIVE): _to("_send_ehlo", S.EHLO),
    (S.GREETING, K.TRANSIENT): _to("_refused_by_host", S.FAILED),
    (S.GREETING, K.PERMANENT): _to("_refused_by_host", S.FAILED),
    (S.EHLO, K.POSITIVE): _to("_ehlo_done", S.STARTTLS, S.AUTH, S.READY, S.FAILED),
    (S.EHLO, K.TRANSIENT): _to("_refused_by_host", S.FAILED),
    (S.EHLO, K.PERMANENT): _to("_send_helo", S.HELO, S.FAILED),
    (S.HELO, K.POSITIVE): _to("_helo_done", S.READY, S.FAILED),
    (S.HELO, K.TRANSIENT): _to("_refused_by_host", S.FAILED),
    (S.HELO, K.PERMANENT): _to("_refused_by_host", S.FAILED),
    (S.STARTTLS, K.POSITIVE): _to("_start_tls", S.TLS_HANDSHAKE, S.FAILED),
    (S.STARTTLS, K.TRANSIENT): _to("_starttls_refused", S.AUTH, S.READY, S.FAILED),
    (S.STARTTLS, K.PERMANENT): _to("_starttls_refused", S.AUTH, S.READY, S.FAILED),
    (S.AUTH, K.INTERMEDIATE): _to("_answer_challenge", S.AUTH, S.FAILED),
    (S.AUTH, K.POSITIVE): _to("_authenticated", S.READY),
    (S.AUTH, K.TRANSIENT): _to("_auth_refused", S.FAILED),
    (S.AUTH, K.PERMANENT): _to("_auth_refused", S.FAILED),
    (S.RSET, K.POSITIVE): _to("_reset_done", S.MAIL),
    (S.RSET, K.TRANSIENT): _to("_reset_refused", S.FAILED),
    (S.RSET, K.PERMANENT): _to("_reset_refused", S.FAILED),
    (S.MAIL, K.POSITIVE): _to("_mail_accepted", S.RCPT),
    (S.MAIL, K.TRANSIENT): _to("_mail_refused", S.RCPT, S.READY),
    (S.MAIL, K.PERMANENT): _to("_mail_refused", S.RCPT, S.READY),
    (S.RCPT, K.POSITIVE): _to("_rcpt_answered", S.RCPT, S.DATA, S.READY),
    (S.RCPT, K.TRANSIENT): _to("_rcpt_answered", S.RCPT, S.DATA, S.READY),
    (S.RCPT, K.PERMANENT): _to("_rcpt_answered", S.RCPT, S.DATA, S.READY),
    (S.DATA, K.INTERMEDIATE): _to("_data_accepted", S.SENDING_DATA, S.DATA_END),
    (S.DATA, K.TRANSIENT): _to("_data_refused", S.READY),
    (S.DATA, K.PERMANENT): _to("_data_refused", S.READY),
    (S.SENDING_DATA, K.POSITIVE): _to("_early_reply", S.FAILED),
    (S.SENDING_DATA, K.INTERMEDIATE): _to("_early_reply", S.FAILED),
    (S.SENDING_DATA, K.TRANSIENT): _to("_early_reply", S.FAILED),
    (S.SENDING_DATA, K.PERMANENT): _to("_early_reply", S.FAILED),
    (S.DATA_END, K.POSITIVE): _to("_data_answered", S.READY, S.MAIL),
    (S.DATA_END, K.TRANSIENT): _to("_data_answered", S.READY, S.MAIL),
    (S.DATA_END, K.PERMANENT): _to("_data_answered", S.READY, S.MAIL),
    (S.QUIT, K.POSITIVE): _to("_closed", S.CLOSED),
    (S.QUIT, K.INTERMEDIATE): _to("_closed", S.CLOSED),
    (S.QUIT, K.TRANSIENT): _to("_closed", S.CLOSED),
    (S.QUIT, K.PERMANENT): _to("_closed", S.CLOSED),
    (S.QUIT, K.SHUTDOWN): _to("_closed", S.CLOSED),
}
# A 421 anywhere else (also unsolicited, on an idle connection) means the server hangs up.
for _state in (S.GREETING, S.EHLO, S.HELO, S.STARTTLS, S.AUTH, S.READY, S.RSET, S.MAIL):
    TRANSITIONS[(_state, K.SHUTDOWN)] = _to("_server_closing", S.FAILED)
for _state in (S.RCPT, S.DATA, S.SENDING_DATA, S.DATA_END):
    TRANSITIONS[(_state, K.SHUTDOWN)] = _to("_server_closing", S.FAILED)
del _state
UNEXPECTED = _to("_unexpected", S.FAILED)
"""Any (state, reply kind) pair not in the table: the server is out of step."""

SILENT_STATES = frozenset({S.TLS_HANDSHAKE, S.FAILED, S.CLOSED})
"""States where received replies are not read (TLS_HANDSHAKE refuses data outright)."""


# --- outcomes ----------------------------------------------------------------------


class Outcome(enum.Enum):
    """What a reply means for a recipient."""

    DELIVERED = "delivered"  # at the RCPT stage: accepted so far
    TEMPORARY = "temporary"  # defer (or try the next host); never bounce
    PERMANENT = "permanent"  # bounce


class Stage(enum.Enum):
    """The step a reply answered, in the words logs and bounces use ("failed after ...")."""

    GREETING = "greeting"
    EHLO = "EHLO"
    HELO = "HELO"
    STARTTLS = "STARTTLS"
    AUTH = "AUTH"
    IDLE = "idle connection"
    RSET = "RSET"
    MAIL = "MAIL FROM"
    RCPT = "RCPT TO"
    DATA = "DATA"
    DATA_END = "end of data"
    QUIT = "QUIT"
    LOCAL = "before sending"  # refused by us: the server lacks something the message needs


_STAGE_OF = {
    S.GREETING: Stage.GREETING,
    S.EHLO: Stage.EHLO,
    S.HELO: Stage.HELO,
    S.STARTTLS: Stage.STARTTLS,
    S.TLS_HANDSHAKE: Stage.STARTTLS,
    S.AUTH: Stage.AUTH,
    S.READY: Stage.IDLE,
    S.RSET: Stage.RSET,
    S.MAIL: Stage.MAIL,
    S.RCPT: Stage.RCPT,
    S.DATA: Stage.DATA,
    S.SENDING_DATA: Stage.DATA_END,
    S.DATA_END: Stage.DATA_END,
    S.QUIT: Stage.QUIT,
    S.FAILED: Stage.IDLE,
    S.CLOSED: Stage.IDLE,
}

_TRANSACTION_STAGES = frozenset({Stage.MAIL, Stage.RCPT, Stage.DATA, Stage.DATA_END})


def classify(reply: Reply, stage: Stage) -> Outcome:
    """What ``reply`` to ``stage`` means (SPEC 5.4).

    The expected class (3xx to DATA, 2xx elsewhere) is DELIVERED.  A 5xx to MAIL,
    RCPT or the data is PERMANENT, except 530 (authentication required), which
    the user fixes in auth.conf or dma.conf.  Everything else is TEMPORARY: 4xx
    (so every throttle: 421, 4.3.2, 4.7.x), replies out of place, and a 5xx to the
    greeting, EHLO/HELO, STARTTLS or AUTH, which is a host failure, not a bounce.
    """
    expected = 3 if stage is Stage.DATA else 2
    first = reply.code // 100
    if first == expected:
        return Outcome.DELIVERED
    if first == 5 and stage in _TRANSACTION_STAGES:
        if reply.code == 530 and stage in (Stage.MAIL, Stage.RCPT):
            return Outcome.TEMPORARY
        return Outcome.PERMANENT
    return Outcome.TEMPORARY


# --- values in ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message to send in this session."""

    sender: str  # "" is the null sender
    recipients: tuple[str, ...]
    size: int  # octets of the spooled message, for SIZE=
    eight_bit: bool  # the message has 8-bit data: BODY=8BITMIME when offered
    dsn_notify: str | None = None  # NEVER, or SUCCESS,FAILURE,DELAY in any combination
    dsn_ret: str | None = None  # FULL or HDRS
    dsn_envid: str | None = None  # sent xtext-encoded


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """How this session must behave: from dma.conf and auth.conf."""

    helo_name: str
    starttls: Literal["no", "required", "opportunistic"]
    tls_active: bool  # implicit TLS: the connection is TLS from its first byte
    credentials: tuple[str, str] | None = field(default=None, repr=False)  # (login, password)
    insecure: bool = False  # INSECURE: PLAIN and LOGIN allowed without TLS


# --- events out ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transmit:
    """Bytes the driver must write now: commands the machine sends on its own."""

    data: bytes = field(repr=False)
    commands: tuple[str, ...]  # what the bytes are, for logs; AUTH answers shown as "***"


@dataclass(frozen=True, slots=True)
class StartTls:
    """The server accepted STARTTLS: do the handshake now, then call tls_established."""


@dataclass(frozen=True, slots=True)
class Ready:
    """Greeting, EHLO/HELO, TLS and AUTH are done: send_message may be called."""

    greeting: Reply
    extensions: Extensions
    tls_active: bool
    authenticated: str | None  # the AUTH mechanism used; None: we did not authenticate
    notices: tuple[str, ...]  # things the driver should log (no AUTH offered, plain text...)


@dataclass(frozen=True, slots=True)
class RecipientResult:
    """The outcome for one recipient: during RCPT (informative) or final (in MessageDone)."""

    recipient: str
    outcome: Outcome
    stage: Stage
    reply: Reply | None  # None when there was no reply (refused by us, connection lost)
    reason: str  # one line for logs and bounces


@dataclass(frozen=True, slots=True)
class ReadyForData:
    """The server accepted DATA and at least one recipient: call send_data_lines."""


@dataclass(frozen=True, slots=True)
class MessageDone:
    """The final outcome of every recipient of the message, in envelope order."""

    results: tuple[RecipientResult, ...]

    @property
    def delivered(self) -> tuple[str, ...]:
        """The recipients the server took responsibility for."""
        return tuple(r.recipient for r in self.results if r.outcome is Outcome.DELIVERED)


@dataclass(frozen=True, slots=True)
class SessionFailed:
    """The session cannot go on: try the next host, or defer.

    The outcome is TEMPORARY in every case we know (host failures never bounce);
    a message in flight gets its MessageDone first.  ``auth`` says when the failure
    was authentication: "refused" (the server turned our credentials down, or the
    exchange broke) or "unusable" (it offers no mechanism we may use).  The same
    credentials must then not be tried again elsewhere in this run.
    """

    outcome: Outcome
    stage: Stage
    reply: Reply | None
    reason: str
    auth: Literal["refused", "unusable"] | None = None


@dataclass(frozen=True, slots=True)
class Closed:
    """The session is over: close the connection."""


Event = (
    Transmit
    | StartTls
    | Ready
    | RecipientResult
    | ReadyForData
    | MessageDone
    | SessionFailed
    | Closed
)


# --- envelope checks and MAIL/RCPT parameters ----------------------------------------------

_BAD_ADDRESS = re.compile(r"[\x00-\x1f\x7f<>]")
_HELO_NAME = re.compile(r"[\x21-\x7e]{1,255}")


def _check_call(envelope: Envelope) -> None:
    """Refuse an envelope no caller may pass (our own bug): LocalProtocolError."""
    if not envelope.recipients:
        raise LocalProtocolError("send_message needs at least one recipient")
    if envelope.size < 0:
        raise LocalProtocolError(f"negative message size {envelope.size}")


def envelope_problem(envelope: Envelope) -> str | None:
    """Why ``envelope`` cannot go out as it is (status code and reason), or None.

    Such an envelope comes from a queue file (the C dma's, or one edited by hand): it
    fails that message alone, never the connection it would have shared (SPEC 5.1).
    """
    for address in (envelope.sender, *envelope.recipients):
        if _BAD_ADDRESS.search(address):
            kind = "sender" if address is envelope.sender else "recipient"
            code = "5.1.7" if kind == "sender" else "5.1.3"
            return (f"{code} {kind} address {printable(address)} holds a control character "
                    "or an angle bracket")
    if any(not recipient for recipient in envelope.recipients):
        return "5.1.3 empty recipient address"
    checks = (
        (envelope.dsn_notify, notify_problem),
        (envelope.dsn_ret, ret_problem),
        (envelope.dsn_envid, envid_problem),
    )
    for value, check in checks:
        problem = check(value) if value is not None else None
        if problem is not None:
            return f"5.5.4 {problem}"
    return None


class _Transaction:
    """Book-keeping for the message in flight (private and mutable)."""

    __slots__ = (
        "accepted",
        "data_done",
        "data_started",
        "envelope",
        "mail_accepted",
        "mail_command",
        "mail_refused",
        "mail_sent",
        "next_reply",
        "pending",
        "pipelined",
        "rcpt_commands",
        "results",
    )

    def __init__(self, envelope: Envelope, pipelined: bool) -> None:
        self.envelope = envelope
        self.pipelined = pipelined
        self.results: list[RecipientResult | None] = [None] * len(envelope.recipients)
        self.pending: list[int] = []  # indices of recipients we send RCPT for, in order
        self.mail_command = b""
        self.rcpt_commands: list[bytes] = []  # their RCPT lines, same order
        self.next_reply = 0  # position in pending of the RCPT whose reply comes next
        self.accepted: list[int] = []  # indices whose RCPT was accepted
        self.mail_sent = False
        self.mail_accepted = False
        self.mail_refused = False  # pipelined: the RCPT and DATA replies are only drained
        self.data_started = False
        self.data_done = False


# --- the machine -----------------------------------------------------------------------------


class SmtpClient:
    """One SMTP session from the client side, as a state machine (see the module docstring)."""

    def __init__(self, policy: SessionPolicy) -> None:
        if not _HELO_NAME.fullmatch(policy.helo_name):
            raise LocalProtocolError(
                f"bad HELO name {policy.helo_name!r}",
                hint="it must be a host name in printable ASCII without spaces",
            )
        if policy.starttls not in ("no", "required", "opportunistic"):
            raise LocalProtocolError(f"bad STARTTLS policy {policy.starttls!r}")
        self._policy = policy
        self._state = State.GREETING
        self._parser = ReplyParser()
        self._events: deque[Event] = deque()
        self._eof = False
        self._tls = policy.tls_active
        self._greeting = Reply(220, ())
        self._extensions = Extensions()
        self._notices: list[str] = []
        self._auth_mechanism: str | None = None
        self._auth_steps: deque[Callable[[str], str]] = deque()
        self._auth_used: str | None = None
        self._txn: _Transaction | None = None
        self._queued: _Transaction | None = None  # sent behind the end of data (pipelining)
        self._dirty = False  # a transaction was left open: RSET before the next MAIL
        self._can_quit = False  # after a failure: the server still expects a command

    def __repr__(self) -> str:
        return f"<SmtpClient {self._state.name} helo={self._policy.helo_name!r}>"

    @property
    def state(self) -> State:
        """The current state (for drivers' logs and for tests)."""
        return self._state

    @property
    def extensions(self) -> Extensions:
        """What the server announced in its latest EHLO (nothing after HELO)."""
        return self._extensions

    # --- driver calls ----------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the server; ``b""`` means the server closed the connection."""
        if self._state is State.TLS_HANDSHAKE:
            raise LocalProtocolError(
                "receive_data during the TLS handshake",
                hint="finish the handshake and call tls_established first",
            )
        if self._eof:
            raise LocalProtocolError("receive_data after the end of the stream")
        if not data:
            self._eof = True
        elif self._state not in SILENT_STATES:
            self._parser.receive(data)

    def next_event(self) -> Event | None:
        """The next event, or None when the machine needs more data (or is finished)."""
        while not self._events:
            if not self._step():
                return None
        return self._events.popleft()

    def send_message(self, envelope: Envelope) -> bytes:
        """Start a transaction for ``envelope``; returns the bytes to write.

        With PIPELINING, MAIL, every RCPT and DATA go out in this one write (after
        RSET when the previous transaction was left open).  Recipients the server
        cannot take (non-ASCII without SMTPUTF8, a message over SIZE) are refused
        here; when none is left, nothing is sent and MessageDone follows at once.
        """
        early = self.can_pipeline_next
        if not early and (self._state is not State.READY or self._txn is not None):
            raise LocalProtocolError(
                f"send_message while {self._state.value}",
                hint="wait for Ready or MessageDone (or can_pipeline_next)",
            )
        _check_call(envelope)
        ext = self._extensions
        txn = _Transaction(envelope, ext.pipelining)
        self._refuse_locally(txn)
        txn.pending = [i for i, result in enumerate(txn.results) if result is None]
        if early:
            # RFC 2920: the next transaction rides behind the end of data; its replies
            # follow the reply to the dot, in order.  It starts when that one arrives.
            self._queued = txn
            if not txn.pending:
                return b""
            mail, rcpts = self._commands(txn)
            txn.mail_sent = True
            return b"".join([mail, *rcpts, b"DATA\r\n"])
        self._txn = txn
        if not txn.pending:
            self._state = self._finish_message()
            return b""
        mail, rcpts = self._commands(txn)
        txn.mail_sent = True
        reset = self._dirty
        self._state = State.RSET if reset else State.MAIL
        if txn.pipelined:
            return b"".join([b"RSET\r\n" if reset else b"", mail, *rcpts, b"DATA\r\n"])
        return b"RSET\r\n" if reset else mail

    def _commands(self, txn: _Transaction) -> tuple[bytes, list[bytes]]:
        """The MAIL and RCPT lines of ``txn``, with the parameters the server offers."""
        envelope, ext = txn.envelope, self._extensions
        utf8 = ext.smtputf8 and not all(
            address.isascii() for address in (envelope.sender, *envelope.recipients)
        )
        params = []
        if ext.size is not None:
            params.append(f"SIZE={envelope.size}")
        if ext.eightbitmime and envelope.eight_bit:
            params.append("BODY=8BITMIME")
        if utf8:
            params.append("SMTPUTF8")
        if ext.dsn and envelope.dsn_ret is not None:
            params.append(f"RET={envelope.dsn_ret.upper()}")
        if ext.dsn and envelope.dsn_envid is not None:
            params.append(f"ENVID={xtext(envelope.dsn_envid)}")
        rcpt_params = ""
        if ext.dsn and envelope.dsn_notify is not None:
            rcpt_params = f" NOTIFY={envelope.dsn_notify.upper()}"
        mail = txn.mail_command = _line(" ".join([f"MAIL FROM:<{envelope.sender}>", *params]))
        txn.rcpt_commands = [
            _line(f"RCPT TO:<{envelope.recipients[i]}>{rcpt_params}") for i in txn.pending
        ]
        return mail, txn.rcpt_commands

    @property
    def can_pipeline_next(self) -> bool:
        """True when the next message may be sent now, behind the end of data (RFC 2920).

        The server offers PIPELINING, our data has gone out and its reply is awaited.
        Every send_message still gets exactly one MessageDone, in order.
        """
        return (
            self._state is State.DATA_END
            and self._extensions.pipelining
            and self._queued is None
        )

    def send_data_lines(self, lines: Iterable[bytes]) -> Iterator[bytes]:
        """The message on the wire: CRLF line ends, dot-stuffing, then the final ``.``.

        ``lines`` are the spooled message's LF lines (any chunking works: CR, LF and
        CRLF each end a line), so no bare CR or LF ever reaches the server and no
        content can end the data early.  Yields chunks of about DATA_CHUNK_OCTETS.
        If the server replies in the middle (and the driver feeds that reply), the
        iterator stops without the final dot: the session has failed.
        """
        txn = self._txn
        if self._state is not State.SENDING_DATA or txn is None or txn.data_started:
            raise LocalProtocolError(
                f"send_data_lines while {self._state.value}", hint="wait for ReadyForData"
            )
        txn.data_started = True
        return self._data_chunks(lines)

    def tls_established(self) -> bytes:
        """The driver finished the TLS handshake: forget the plain-text state, EHLO again."""
        if self._state is not State.TLS_HANDSHAKE:
            raise LocalProtocolError(
                f"tls_established while {self._state.value}", hint="wait for StartTls"
            )
        self._tls = True
        self._parser = ReplyParser()
        self._extensions = Extensions()
        self._state = State.EHLO
        return _line(f"EHLO {self._policy.helo_name}")

    @property
    def awaits_final_reply(self) -> bool:
        """True while the reply awaited is the one to the final dot, which RFC 5321
        4.5.3.2 gives 10 minutes where other replies get 5: the driver's longer wait
        applies to that reply only, never to MAIL, RCPT or DATA."""
        return self._state is State.DATA_END

    @property
    def can_send_message(self) -> bool:
        """True when send_message may be called now.

        Check it on MessageDone: when a failure settled the message, SessionFailed
        follows and the answer is False.
        """
        return self._state is State.READY and self._txn is None

    def quit(self) -> bytes:
        """End the session politely: QUIT when the server can take it, else b"" (just close).

        Idempotent once the session is over or QUIT was sent, so a driver may call it
        on MessageDone and again on the SessionFailed that follows.
        """
        if self._state in (State.QUIT, State.CLOSED):
            return b""
        if self._state is State.READY and self._txn is None:
            self._state = State.QUIT
            return b"QUIT\r\n"
        if self._state is State.FAILED:
            if self._can_quit:
                self._state = State.QUIT
                return b"QUIT\r\n"
            self._state = State.CLOSED
            self._events.append(Closed())
            return b""
        raise LocalProtocolError(
            f"quit while {self._state.value}", hint="wait for MessageDone or SessionFailed"
        )

    # --- the engine --------------------------------------------------------------------

    def _step(self) -> bool:
        """Handle one reply or the end of the stream; False when nothing can happen now."""
        if self._state in SILENT_STATES:
            return False
        try:
            reply = self._parser.next_reply()
        except RemoteProtocolError as error:
            if self._state is State.QUIT:
                self._state = self._closed(None)
            else:
                self._state = self._fail(str(error), None, can_quit=False)
            return True
        if reply is not None:
            self._dispatch(reply)
            return True
        if not self._eof:
            return False
        if self._state is State.QUIT:
            self._state = self._closed(None)
        else:
            partial = " in the middle of a reply" if self._parser.has_pending else ""
            what = self._state.value
            self._state = self._fail(
                f"server closed the connection{partial} ({what})", None, can_quit=False
            )
        return True

    def _dispatch(self, reply: Reply) -> None:
        transition = TRANSITIONS.get((self._state, reply_kind(reply)), UNEXPECTED)
        action: Callable[[Reply], State] = getattr(self, transition.action)
        new_state = action(reply)
        if new_state not in transition.targets:
            raise SoftwareError(
                f"SMTP machine moved from {self._state.name} to {new_state.name} "
                f"by {transition.action}, which the table does not allow"
            )
        self._state = new_state

    def _transmit(self, command: str, shown: str | None = None) -> None:
        self._events.append(Transmit(_line(command), (shown or command,)))

    def _fail(
        self, reason: str, reply: Reply | None, *, can_quit: bool,
        auth: Literal["refused", "unusable"] | None = None,
    ) -> State:
        """End the session: settle the message in flight as TEMPORARY, then SessionFailed."""
        stage = _STAGE_OF[self._state]
        txn = self._txn
        if txn is not None:
            for index, result in enumerate(txn.results):
                if result is None:
                    recipient = txn.envelope.recipients[index]
                    txn.results[index] = RecipientResult(
                        recipient, Outcome.TEMPORARY, stage, reply, reason
                    )
            self._finish_message()
            can_quit = False
        queued, self._queued = self._queued, None
        if queued is not None:
            for index, result in enumerate(queued.results):
                if result is None:
                    queued.results[index] = RecipientResult(
                        queued.envelope.recipients[index], Outcome.TEMPORARY, stage, reply,
                        reason,
                    )
            self._txn = queued
            self._finish_message()
        self._auth_steps.clear()
        self._can_quit = can_quit and not self._eof
        self._events.append(SessionFailed(Outcome.TEMPORARY, stage, reply, reason, auth))
        return State.FAILED

    def _finish_message(self) -> State:
        txn = self._txn
        assert txn is not None
        results = tuple(result for result in txn.results if result is not None)
        if len(results) != len(txn.results):
            raise SoftwareError("SMTP transaction finished with recipients left open")
        if txn.mail_sent:
            self._dirty = txn.mail_accepted and not txn.data_done
        self._txn = None
        self._events.append(MessageDone(results))
        return State.READY

    def _ready(self) -> State:
        self._events.append(
            Ready(
                self._greeting,
                self._extensions,
                self._tls,
                self._auth_used,
                tuple(self._notices),
            )
        )
        return State.READY

    def _refuse_locally(self, txn: _Transaction) -> None:
        """Settle now the recipients this server cannot take, as PERMANENT."""
        envelope = txn.envelope
        reason = envelope_problem(envelope) or self._message_problem(envelope)
        if reason is not None:
            for index, recipient in enumerate(envelope.recipients):
                txn.results[index] = RecipientResult(
                    recipient, Outcome.PERMANENT, Stage.LOCAL, None, reason
                )
            return
        if self._extensions.smtputf8:
            return
        for index, recipient in enumerate(envelope.recipients):
            if not recipient.isascii():
                txn.results[index] = RecipientResult(
                    recipient,
                    Outcome.PERMANENT,
                    Stage.LOCAL,
                    None,
                    "5.6.7 non-ASCII recipient address and the server does not offer SMTPUTF8",
                )

    def _message_problem(self, envelope: Envelope) -> str | None:
        """Why this server cannot take the message at all (size, sender), or None."""
        ext = self._extensions
        if ext.size and envelope.size > ext.size:
            return (f"5.3.4 message of {envelope.size} octets is larger than the server's "
                    f"limit of {ext.size}")
        if not envelope.sender.isascii() and not ext.smtputf8:
            return "5.6.7 non-ASCII sender address and the server does not offer SMTPUTF8"
        return None

    def _data_chunks(self, lines: Iterable[bytes]) -> Iterator[bytes]:
        # Works on whole chunks (bytes.replace), not line by line: a 2 KB message is a
        # handful of C-level calls.  `partial` holds a line whose end has not come yet.
        out: list[bytes] = []  # finished wire text, CRLF line ends, dot-stuffed
        size = 0
        partial = b""
        after_cr = False
        for chunk in lines:
            if self._state is not State.SENDING_DATA:
                return
            if after_cr and chunk[:1] == b"\n":
                chunk = chunk[1:]
                after_cr = False  # that LF is used up: a second one is a line of its own
            if not chunk:
                continue
            after_cr = chunk[-1:] == b"\r"
            if b"\r" in chunk:
                chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if partial:
                chunk = partial + chunk
            end = chunk.rfind(b"\n") + 1
            partial = chunk[end:]
            if not end:
                continue
            complete = chunk[:end]  # starts at a line start, ends with LF
            if complete[:1] == b".":
                complete = b"." + complete
            wire = complete.replace(b"\n.", b"\n..").replace(b"\n", CRLF)
            out.append(wire)
            size += len(wire)
            if size >= DATA_CHUNK_OCTETS:
                yield b"".join(out)
                out.clear()
                size = 0
        if self._state is not State.SENDING_DATA:
            return
        if partial:
            out.append((b"." + partial if partial[:1] == b"." else partial) + CRLF)
        self._state = State.DATA_END
        out.append(b".\r\n")
        yield b"".join(out)

    # --- actions (named in TRANSITIONS; each returns the next state) -----------------------

    def _send_ehlo(self, reply: Reply) -> State:
        self._greeting = reply
        self._transmit(f"EHLO {self._policy.helo_name}")
        return State.EHLO

    def _refused_by_host(self, reply: Reply) -> State:
        what = "greeting" if self._state is State.GREETING else f"reply to {self._state.name}"
        return self._fail(f"server {what} refused us: {reply}", reply, can_quit=True)

    def _send_helo(self, reply: Reply) -> State:
        if self._tls and not self._policy.tls_active:
            return self._fail(f"server refused EHLO after STARTTLS: {reply}", reply, can_quit=True)
        self._notices.append(f"server refused EHLO ({reply}): fell back to HELO")
        self._transmit(f"HELO {self._policy.helo_name}")
        return State.HELO

    def _ehlo_done(self, reply: Reply) -> State:
        self._extensions = parse_ehlo(reply)
        return self._after_hello()

    def _helo_done(self, reply: Reply) -> State:
        self._extensions = Extensions()
        return self._after_hello()

    def _after_hello(self) -> State:
        """Greeted: STARTTLS when wanted, else AUTH when configured, else ready."""
        if not self._tls and self._policy.starttls != "no":
            if self._extensions.starttls:
                self._transmit("STARTTLS")
                return State.STARTTLS
            if self._policy.starttls == "required":
                return self._fail(
                    "server does not offer STARTTLS, which dma.conf requires "
                    "(set OPPORTUNISTIC_TLS to send without TLS)",
                    None,
                    can_quit=True,
                )
            self._notices.append("server does not offer STARTTLS: sending without TLS")
        return self._start_auth()

    def _start_tls(self, reply: Reply) -> State:
        if self._parser.has_pending:
            return self._fail(
                "server sent data after its STARTTLS reply, before the TLS handshake "
                "(command injection?)",
                reply,
                can_quit=False,
            )
        self._events.append(StartTls())
        return State.TLS_HANDSHAKE

    def _starttls_refused(self, reply: Reply) -> State:
        if self._policy.starttls == "required":
            return self._fail(f"server refused STARTTLS: {reply}", reply, can_quit=True)
        self._notices.append(f"server refused STARTTLS ({reply}): sending without TLS")
        return self._start_auth()

    def _start_auth(self) -> State:
        credentials = self._policy.credentials
        offered = self._extensions.auth
        if credentials is None:
            return self._ready()
        if not offered:
            self._notices.append("server offers no AUTH: sending without authentication")
            return self._ready()
        mechanism = choose_mechanism(offered, tls_active=self._tls, insecure=self._policy.insecure)
        if mechanism is None:
            shown = " ".join(sorted(offered))
            if offered & CLEARTEXT_MECHANISMS:
                reason = (
                    f"server offers AUTH {shown}, but PLAIN and LOGIN are never sent "
                    "without TLS (use STARTTLS, or set INSECURE)"
                )
            else:
                spoken = ", ".join(PREFERENCE)
                reason = f"server offers AUTH {shown}, none of which dma speaks ({spoken})"
            return self._fail(reason, None, can_quit=True, auth="unusable")
        login, password = credentials
        self._auth_mechanism = mechanism
        if mechanism == "CRAM-MD5":
            self._auth_steps.append(lambda challenge: cram_md5_response(login, password, challenge))
            self._transmit("AUTH CRAM-MD5")
        elif mechanism == "PLAIN":
            self._transmit(f"AUTH PLAIN {plain_token(login, password)}", "AUTH PLAIN ***")
        else:
            user_answer, password_answer = login_steps(login, password)
            self._auth_steps.extend([lambda _: user_answer, lambda _: password_answer])
            self._transmit("AUTH LOGIN")
        return State.AUTH

    def _answer_challenge(self, reply: Reply) -> State:
        if not self._auth_steps:
            reason = f"server sent an unexpected AUTH challenge: {reply}"
            return self._fail(reason, reply, can_quit=False, auth="refused")
        step = self._auth_steps.popleft()
        try:
            answer = step(reply.lines[0] if reply.lines else "")
        except DmaError as error:
            return self._fail(str(error), reply, can_quit=False, auth="refused")
        self._transmit(answer, "***")
        return State.AUTH

    def _authenticated(self, reply: Reply) -> State:
        self._auth_steps.clear()
        self._auth_used = self._auth_mechanism
        return self._ready()

    def _auth_refused(self, reply: Reply) -> State:
        return self._fail(
            f"server refused AUTH {self._auth_mechanism}: {reply} "
            "(check the login and password in auth.conf)",
            reply,
            can_quit=True,
            auth="refused",
        )

    def _reset_done(self, reply: Reply) -> State:
        self._dirty = False
        txn = self._txn
        assert txn is not None
        if not txn.pipelined:
            self._events.append(Transmit(txn.mail_command, (_shown(txn.mail_command),)))
        return State.MAIL

    def _reset_refused(self, reply: Reply) -> State:
        return self._fail(f"server refused RSET: {reply}", reply, can_quit=False)

    def _mail_accepted(self, reply: Reply) -> State:
        txn = self._txn
        assert txn is not None
        txn.mail_accepted = True
        if not txn.pipelined:
            self._send_rcpt(txn)
        return State.RCPT

    def _mail_refused(self, reply: Reply) -> State:
        txn = self._txn
        assert txn is not None
        outcome = classify(reply, Stage.MAIL)
        for index in txn.pending:
            txn.results[index] = RecipientResult(
                txn.envelope.recipients[index], outcome, Stage.MAIL, reply, str(reply)
            )
        if txn.pipelined:
            txn.mail_refused = True
            return State.RCPT
        return self._finish_message()

    def _send_rcpt(self, txn: _Transaction) -> None:
        command = txn.rcpt_commands[txn.next_reply]
        self._events.append(Transmit(command, (_shown(command),)))

    def _rcpt_answered(self, reply: Reply) -> State:
        txn = self._txn
        assert txn is not None
        index = txn.pending[txn.next_reply]
        txn.next_reply += 1
        if not txn.mail_refused:
            outcome = classify(reply, Stage.RCPT)
            result = RecipientResult(
                txn.envelope.recipients[index], outcome, Stage.RCPT, reply, str(reply)
            )
            self._events.append(result)
            if outcome is Outcome.DELIVERED:
                txn.accepted.append(index)
            else:
                txn.results[index] = result
        if txn.next_reply < len(txn.pending):
            if not txn.pipelined:
                self._send_rcpt(txn)
            return State.RCPT
        if txn.pipelined:
            return State.DATA
        if txn.accepted:
            self._transmit("DATA")
            return State.DATA
        return self._finish_message()

    def _settle_accepted(self, reply: Reply, outcome: Outcome, stage: Stage) -> None:
        txn = self._txn
        assert txn is not None
        for index in txn.accepted:
            txn.results[index] = RecipientResult(
                txn.envelope.recipients[index], outcome, stage, reply, str(reply)
            )

    def _data_accepted(self, reply: Reply) -> State:
        txn = self._txn
        assert txn is not None
        if not txn.accepted:
            # Pipelined, every RCPT refused, yet the server wants data: end it empty.
            self._transmit(".")
            return State.DATA_END
        self._events.append(ReadyForData())
        return State.SENDING_DATA

    def _data_refused(self, reply: Reply) -> State:
        self._settle_accepted(reply, classify(reply, Stage.DATA), Stage.DATA)
        return self._finish_message()

    def _early_reply(self, reply: Reply) -> State:
        outcome = Outcome.PERMANENT if reply.code // 100 == 5 else Outcome.TEMPORARY
        self._settle_accepted(reply, outcome, Stage.DATA_END)
        return self._fail(
            f"server replied before the end of the data: {reply}", reply, can_quit=False
        )

    def _data_answered(self, reply: Reply) -> State:
        txn = self._txn
        assert txn is not None
        txn.data_done = True
        self._settle_accepted(reply, classify(reply, Stage.DATA_END), Stage.DATA_END)
        state = self._finish_message()
        queued, self._queued = self._queued, None
        if queued is None:
            return state
        self._txn = queued
        if not queued.pending:
            return self._finish_message()
        return State.MAIL

    def _server_closing(self, reply: Reply) -> State:
        return self._fail(f"server is closing the connection: {reply}", reply, can_quit=False)

    def _unexpected(self, reply: Reply) -> State:
        return self._fail(
            f"unexpected reply {reply} ({self._state.value})", reply, can_quit=False
        )

    def _closed(self, reply: Reply | None) -> State:
        self._events.append(Closed())
        return State.CLOSED


def _line(command: str) -> bytes:
    """One command on the wire; UTF-8 only ever appears with SMTPUTF8.

    An address read from a Q file that holds octets that are not UTF-8 (a Latin-1
    sender written by the C dma) goes out as those very octets: it is not ASCII, so
    it only ever goes to a server that offers SMTPUTF8, as the C dma would send it.
    """
    return wire_octets(command) + CRLF


def _shown(line: bytes) -> str:
    """A command line as the trace shows it (without CRLF, never raising)."""
    return printable(line[:-2].decode("utf-8", "surrogateescape"))
