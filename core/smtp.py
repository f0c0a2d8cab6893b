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

Every state change is in the tables of ``dma.core.smtp_states`` and goes through
one method, ``_move``, which refuses a state its entry does not list:
``TRANSITIONS`` says, for the state we are in and the kind of reply that arrived,
which ``Action`` runs and where it may lead (a pair missing from it is a reply the
protocol does not allow there: the session fails, temporarily); ``CALLS`` says
where each call of the driver may lead (a pair missing from it is our own bug:
``LocalProtocolError``).  Every send_message is answered by exactly one MessageDone.

Outgoing bytes have one path: every command line and every chunk of the data is
put in the outbox (``_put``) and leaves by draining it (``_drain``).  What the
machine sends on its own, while it handles a reply, is drained into one
``Transmit`` event at the end of that step; what a driver call sends
(``send_message``, ``tls_established``, ``quit``, ``send_data_lines``) is drained
into that call's return value, so the outbox is empty between steps.  (The return
values stay because the shell writes them; they are thin wrappers over the outbox.)

The module is split by concern, and this one re-exports the public names:
``dma.core.smtp_events`` (values in, events out, ``classify``),
``dma.core.smtp_states`` (states, reply kinds, actions, calls and the tables) and
``dma.core.smtp_wire`` (command lines, MAIL/RCPT parameters, dot-stuffing, checks).

AUTH secrets go to the wire and nowhere else: events, reprs and reasons never
hold a password or a token.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Literal

from dma.core.errors import DmaError, SoftwareError
from dma.core.smtp_events import (
    Closed,
    Envelope,
    Event,
    MessageDone,
    Outcome,
    Ready,
    ReadyForData,
    RecipientResult,
    SessionFailed,
    SessionPolicy,
    Stage,
    StartTls,
    Transmit,
    classify,
)
from dma.core.smtp_reply import Extensions, RemoteProtocolError, Reply, ReplyParser, parse_ehlo
from dma.core.smtp_states import (
    CALLS,
    SILENT_STATES,
    STAGE_OF,
    TRANSITIONS,
    UNEXPECTED,
    Action,
    Call,
    LocalProtocolError,
    ReplyKind,
    State,
    Transition,
    reply_kind,
)
from dma.core.smtp_wire import (
    DATA_CHUNK_OCTETS,
    DotStuffer,
    envelope_problem,
    line,
    mail_command,
    message_problem,
    non_ascii_problem,
    rcpt_commands,
    shown,
)

if TYPE_CHECKING:  # AUTH's modules load when a session authenticates (hashlib, SASLprep)
    from dma.core.smtp_auth import AuthExchange, AuthLine

__all__ = [
    "CALLS",
    "FINAL_DOT_FACTOR",
    "TRANSITIONS",
    "Action",
    "Call",
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
    "Transition",
    "Transmit",
    "classify",
    "envelope_problem",
    "reply_kind",
]

FINAL_DOT_FACTOR = 2.0
"""RFC 5321 4.5.3.2: 10 minutes for the reply to the final dot, 5 for the others."""

_HELO_NAME = re.compile(r"[\x21-\x7e]{1,255}")
_NONCE = re.compile(r"[\x21-\x2b\x2d-\x7e]{16,255}")  # SCRAM's printable, no comma


def _check_call(envelope: Envelope) -> None:
    """Refuse an envelope no caller may pass (our own bug): LocalProtocolError."""
    if not envelope.recipients:
        raise LocalProtocolError("send_message needs at least one recipient")
    if envelope.size < 0:
        raise LocalProtocolError(f"negative message size {envelope.size}")


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
        credentials = policy.credentials
        if credentials is not None and credentials.kind == "password" \
                and not _NONCE.fullmatch(policy.nonce):
            raise LocalProtocolError(
                "a password without a SCRAM nonce in the session policy",
                hint="give SessionPolicy a nonce of 16 or more printable characters, "
                     "no comma, from adapters/system randomness",
            )
        self._policy = policy
        self._state = State.GREETING
        self._parser = ReplyParser()
        self._events: deque[Event] = deque()
        self._outbox: list[tuple[bytes, str]] = []  # (wire bytes, what they are for logs)
        self._eof = False
        self._tls = policy.tls_active
        self._greeting = Reply(220, ())
        self._extensions = Extensions()
        self._notices: list[str] = []
        self._auth: AuthExchange | None = None  # the exchange under way
        self._auth_failure = ""  # why the exchange is ending (AUTH_ENDING)
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

    # --- the one place the state changes, and the one path for bytes out -------------------

    def _allowed(self, call: Call, hint: str) -> frozenset[State]:
        """The states ``call`` may lead to from here; LocalProtocolError when it may not be made."""
        targets = CALLS.get((self._state, call))
        if targets is None:
            raise LocalProtocolError(f"{call.value} while {self._state.value}", hint=hint)
        return targets

    def _move(self, new_state: State, targets: frozenset[State], by: Action | Call) -> None:
        """Enter ``new_state``, which the table entry (``targets``, reached ``by``) must list."""
        if new_state not in targets:
            raise SoftwareError(
                f"SMTP machine moved from {self._state.name} to {new_state.name} "
                f"by {by.name}, which the table does not allow"
            )
        self._state = new_state

    def _put(self, data: bytes, what: str) -> None:
        """Queue bytes for the server: every byte we send goes through here."""
        self._outbox.append((data, what))

    def _send(self, command: str, what: str | None = None) -> None:
        self._put(line(command), what or command)

    def _drain(self) -> bytes:
        """Everything put since the last drain, to be written now."""
        data = b"".join(data for data, _ in self._outbox)
        self._outbox.clear()
        return data

    def _drain_to_event(self) -> None:
        """What the machine sent on its own during a step leaves as one Transmit."""
        if self._outbox:
            commands = tuple(what for _, what in self._outbox)
            self._events.append(Transmit(self._drain(), commands))

    # --- driver calls ----------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the server; ``b""`` means the server closed the connection."""
        self._allowed(Call.RECEIVE_DATA, "finish the handshake and call tls_established first")
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
        hint = "wait for Ready or MessageDone (or can_pipeline_next)"
        targets = self._allowed(Call.SEND_MESSAGE, hint)
        early = self.can_pipeline_next
        if not early and not self.can_send_message:
            raise LocalProtocolError(f"send_message while {self._state.value}", hint=hint)
        _check_call(envelope)
        txn = self._prepare(envelope)
        if early:
            # RFC 2920: the next transaction rides behind the end of data; its replies
            # follow the reply to the dot, in order.  It starts when that one arrives.
            self._queued = txn
            new_state = self._state
        else:
            self._txn = txn
            new_state = self._start(txn)
        self._move(new_state, targets, Call.SEND_MESSAGE)
        return self._drain()

    def _prepare(self, envelope: Envelope) -> _Transaction:
        """A transaction for ``envelope``: local refusals settled, command lines made."""
        ext = self._extensions
        txn = _Transaction(envelope, ext.pipelining)
        self._refuse_locally(txn)
        txn.pending = [i for i, result in enumerate(txn.results) if result is None]
        txn.mail_command = mail_command(envelope, ext)
        txn.rcpt_commands = rcpt_commands(envelope, ext, txn.pending)
        if txn.pending and txn.pipelined:
            txn.mail_sent = True
            self._put_transaction(txn)
        return txn

    def _put_transaction(self, txn: _Transaction) -> None:
        """Pipelined: MAIL, every RCPT and DATA in one write."""
        for command in (txn.mail_command, *txn.rcpt_commands):
            self._put(command, shown(command))
        self._send("DATA")

    def _start(self, txn: _Transaction) -> State:
        """Send the first command of ``txn`` (now the one in flight): the state it leads to."""
        if not txn.pending:
            return self._finish_message()
        txn.mail_sent = True
        reset = self._dirty
        if reset:
            # RSET goes first, before what _prepare put (pipelined) or before MAIL.
            self._outbox.insert(0, (line("RSET"), "RSET"))
        elif not txn.pipelined:
            self._put(txn.mail_command, shown(txn.mail_command))
        return State.RSET if reset else State.MAIL

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
        targets = self._allowed(Call.SEND_DATA, "wait for ReadyForData")
        txn = self._txn
        if txn is None or txn.data_started:
            raise LocalProtocolError(
                f"send_data_lines while {self._state.value}", hint="wait for ReadyForData"
            )
        txn.data_started = True
        self._move(self._state, targets, Call.SEND_DATA)
        return self._data_chunks(lines)

    def _data_chunks(self, lines: Iterable[bytes]) -> Iterator[bytes]:
        stuffer = DotStuffer()
        out: list[bytes] = []  # finished wire text, not yet handed out
        size = 0
        for chunk in lines:
            if self._state is not State.SENDING_DATA:
                return  # the server replied in the middle: the session has failed
            wire = stuffer.feed(chunk)
            out.append(wire)
            size += len(wire)
            if size >= DATA_CHUNK_OCTETS:
                self._put(b"".join(out), "(data)")
                out.clear()
                size = 0
                yield self._drain()
        if self._state is not State.SENDING_DATA:
            return
        targets = self._allowed(Call.END_OF_DATA, "")
        out.append(stuffer.end())
        self._put(b"".join(out), "(data) .")
        self._move(State.DATA_END, targets, Call.END_OF_DATA)
        yield self._drain()

    def tls_established(self) -> bytes:
        """The driver finished the TLS handshake: forget the plain-text state, EHLO again."""
        targets = self._allowed(Call.TLS_ESTABLISHED, "wait for StartTls")
        self._tls = True
        self._parser = ReplyParser()
        self._extensions = Extensions()
        self._send(f"EHLO {self._policy.helo_name}")
        self._move(State.EHLO, targets, Call.TLS_ESTABLISHED)
        return self._drain()

    @property
    def awaits_final_reply(self) -> bool:
        """True while the reply awaited is the one to the final dot, which RFC 5321
        4.5.3.2 gives 10 minutes where other replies get 5: the driver's longer wait
        applies to that reply only, never to MAIL, RCPT or DATA."""
        return self._state is State.DATA_END

    def reply_timeout(self, base: float) -> float:
        """Seconds to wait for the reply awaited now: ``base`` (TIMEOUT), and
        ``FINAL_DOT_FACTOR`` times that for the reply to the final dot only."""
        return base * FINAL_DOT_FACTOR if self.awaits_final_reply else base

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
        hint = "wait for MessageDone or SessionFailed"
        targets = self._allowed(Call.QUIT, hint)
        new_state = self._state
        if self._state is State.READY and self._txn is not None:
            raise LocalProtocolError(f"quit while {self._state.value}", hint=hint)
        if self._state is State.READY or (self._state is State.FAILED and self._can_quit):
            self._send("QUIT")
            new_state = State.QUIT
        elif self._state is State.FAILED:
            new_state = self._closed(None)
        self._move(new_state, targets, Call.QUIT)
        return self._drain()

    # --- the engine --------------------------------------------------------------------

    def _step(self) -> bool:
        """Handle one reply or the end of the stream; False when nothing can happen now."""
        if self._state in SILENT_STATES:
            return False
        try:
            reply = self._parser.next_reply()
        except RemoteProtocolError as error:
            self._stream_ends(Call.BAD_REPLY, str(error))
            return True
        if reply is not None:
            self._dispatch(reply)
            return True
        if not self._eof:
            return False
        partial = " in the middle of a reply" if self._parser.has_pending else ""
        self._stream_ends(
            Call.END_OF_STREAM, f"server closed the connection{partial} ({self._state.value})"
        )
        return True

    def _stream_ends(self, call: Call, reason: str) -> None:
        """The stream is over or broken: closed after QUIT, else the session fails."""
        targets = self._allowed(call, "")
        if self._state is State.QUIT:
            new_state = self._closed(None)
        else:
            new_state = self._fail(reason, None, can_quit=False)
        self._move(new_state, targets, call)

    def _dispatch(self, reply: Reply) -> None:
        transition: Transition = TRANSITIONS.get((self._state, reply_kind(reply)), UNEXPECTED)
        new_state = _HANDLERS[transition.action](self, reply)
        self._drain_to_event()
        self._move(new_state, transition.targets, transition.action)

    def _fail(
        self, reason: str, reply: Reply | None, *, can_quit: bool,
        auth: Literal["refused", "unusable"] | None = None,
    ) -> State:
        """End the session: settle the messages in flight as TEMPORARY, then SessionFailed."""
        stage = STAGE_OF[self._state]
        queued, self._queued = self._queued, None
        for txn in (self._txn, queued):
            if txn is not None:
                self._txn = txn
                self._settle_open(txn, stage, reply, reason)
                self._finish_message()
                can_quit = False
        self._auth = None
        self._can_quit = can_quit and not self._eof
        self._events.append(SessionFailed(Outcome.TEMPORARY, stage, reply, reason, auth))
        return State.FAILED

    @staticmethod
    def _settle_open(txn: _Transaction, stage: Stage, reply: Reply | None, reason: str) -> None:
        """Every recipient of ``txn`` still open: TEMPORARY, for ``reason``."""
        for index, result in enumerate(txn.results):
            if result is None:
                recipient = txn.envelope.recipients[index]
                txn.results[index] = RecipientResult(
                    recipient, Outcome.TEMPORARY, stage, reply, reason
                )

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
        whole = envelope_problem(envelope) or message_problem(envelope, self._extensions)
        for index, recipient in enumerate(envelope.recipients):
            reason = whole or non_ascii_problem(recipient, self._extensions)
            if reason is not None:
                txn.results[index] = RecipientResult(
                    recipient, Outcome.PERMANENT, Stage.LOCAL, None, reason
                )

    # --- actions (the table's Action values, by _HANDLERS; each returns the next state) ---

    def _send_ehlo(self, reply: Reply) -> State:
        self._greeting = reply
        self._send(f"EHLO {self._policy.helo_name}")
        return State.EHLO

    def _refused_by_host(self, reply: Reply) -> State:
        what = "greeting" if self._state is State.GREETING else f"reply to {self._state.name}"
        return self._fail(f"server {what} refused us: {reply}", reply, can_quit=True)

    def _send_helo(self, reply: Reply) -> State:
        if self._tls and not self._policy.tls_active:
            return self._fail(f"server refused EHLO after STARTTLS: {reply}", reply, can_quit=True)
        self._notices.append(f"server refused EHLO ({reply}): fell back to HELO")
        self._send(f"HELO {self._policy.helo_name}")
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
                self._send("STARTTLS")
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
        """AUTH when there are credentials and the server offers it (SPEC 5.6)."""
        credentials = self._policy.credentials
        offered = self._extensions.auth
        if credentials is None:
            return self._ready()
        if not offered:
            self._notices.append("server offers no AUTH: sending without authentication")
            return self._ready()
        from dma.core.sasl import make_mechanism
        from dma.core.smtp_auth import AuthExchange, choose_mechanism

        choice = choose_mechanism(offered, credentials, tls_active=self._tls,
                                  insecure=self._policy.insecure)
        if choice.mechanism is None:
            return self._fail(choice.reason, None, can_quit=True, auth="unusable")
        policy = self._policy
        self._auth = AuthExchange(make_mechanism(
            choice.mechanism, credentials, nonce=policy.nonce, host=policy.server_name,
            port=policy.server_port))
        self._send_auth(self._auth.command())
        return State.AUTH

    def _send_auth(self, auth_line: AuthLine) -> None:
        """An AUTH line: the trace and the events see only ``shown``."""
        self._send(auth_line.wire, auth_line.shown)

    def _exchange(self) -> AuthExchange:
        if self._auth is None:  # AUTH and AUTH_ENDING are entered with one
            raise SoftwareError(f"no AUTH exchange while {self._state.value}")
        return self._auth

    def _answer_challenge(self, reply: Reply) -> State:
        """A 334: the mechanism's answer; ``*`` when the challenge is wrong (RFC 4954 4)."""
        try:
            answer, failure = self._exchange().challenge(reply.lines[0] if reply.lines else "")
        except DmaError as error:
            from dma.core.smtp_auth import CANCEL

            self._send_auth(CANCEL)
            self._auth_failure = str(error)
            return State.AUTH_ENDING
        self._send_auth(answer)
        if failure is not None:
            self._auth_failure = failure
            return State.AUTH_ENDING
        return State.AUTH

    def _authenticated(self, reply: Reply) -> State:
        """A 235: ready, once the mechanism is satisfied (SCRAM: the server's signature)."""
        exchange, self._auth = self._exchange(), None
        try:
            exchange.success(reply.text)
        except DmaError as error:
            return self._fail(str(error), reply, can_quit=True, auth="refused")
        self._auth_used = exchange.mechanism.name
        return self._ready()

    def _auth_hint(self) -> str:
        credentials = self._policy.credentials
        if credentials is not None and credentials.kind == "oauth2":
            return "check the account's OAuth2 setup; a revoked grant needs dma oauth2 login"
        return "check the login and password in auth.conf or the account"

    def _auth_refused(self, reply: Reply) -> State:
        name = self._exchange().mechanism.name
        return self._fail(f"server refused AUTH {name}: {reply} ({self._auth_hint()})",
                          reply, can_quit=True, auth="refused")

    def _auth_ended(self, reply: Reply) -> State:
        """The reply after our closing answer or ``*``: the exchange failed, say why."""
        name = self._exchange().mechanism.name
        reason = (f"AUTH {name} failed: {self._auth_failure}; server replied {reply} "
                  f"({self._auth_hint()})")
        still_in_exchange = reply.code // 100 == 3 or reply.code == 421
        return self._fail(reason, reply, can_quit=not still_in_exchange, auth="refused")

    def _reset_done(self, reply: Reply) -> State:
        self._dirty = False
        txn = self._txn
        assert txn is not None
        if not txn.pipelined:
            self._put(txn.mail_command, shown(txn.mail_command))
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
        self._put(command, shown(command))

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
            self._send("DATA")
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
            self._send(".")
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


_HANDLERS: dict[Action, Callable[[SmtpClient, Reply], State]] = {
    Action.SEND_EHLO: SmtpClient._send_ehlo,
    Action.REFUSED_BY_HOST: SmtpClient._refused_by_host,
    Action.SEND_HELO: SmtpClient._send_helo,
    Action.EHLO_DONE: SmtpClient._ehlo_done,
    Action.HELO_DONE: SmtpClient._helo_done,
    Action.START_TLS: SmtpClient._start_tls,
    Action.STARTTLS_REFUSED: SmtpClient._starttls_refused,
    Action.ANSWER_CHALLENGE: SmtpClient._answer_challenge,
    Action.AUTHENTICATED: SmtpClient._authenticated,
    Action.AUTH_REFUSED: SmtpClient._auth_refused,
    Action.AUTH_ENDED: SmtpClient._auth_ended,
    Action.RESET_DONE: SmtpClient._reset_done,
    Action.RESET_REFUSED: SmtpClient._reset_refused,
    Action.MAIL_ACCEPTED: SmtpClient._mail_accepted,
    Action.MAIL_REFUSED: SmtpClient._mail_refused,
    Action.RCPT_ANSWERED: SmtpClient._rcpt_answered,
    Action.DATA_ACCEPTED: SmtpClient._data_accepted,
    Action.DATA_REFUSED: SmtpClient._data_refused,
    Action.EARLY_REPLY: SmtpClient._early_reply,
    Action.DATA_ANSWERED: SmtpClient._data_answered,
    Action.SERVER_CLOSING: SmtpClient._server_closing,
    Action.UNEXPECTED: SmtpClient._unexpected,
    Action.CLOSED: SmtpClient._closed,
}
"""What each Action of the table runs: checked by mypy, and complete (asserted below)."""
if set(_HANDLERS) != set(Action):  # pragma: no cover - a bug caught at import
    raise SoftwareError(f"SMTP actions without a handler: {set(Action) - set(_HANDLERS)}")
