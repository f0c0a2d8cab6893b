"""The server side of ``sendmail -bs`` as a sans-I/O state machine (SPEC 1): lines in,
reply bytes and events out.

Symfony Mailer and SwiftMailer speak SMTP to ``sendmail -bs`` on its stdin and
stdout.  Like the client in ``core.smtp``, this machine never touches a stream; the
driver (``shell.smtp_session``) runs this loop:

    server = SmtpServer(hostname)
    while (event := server.next_event()) is not Closed:
        Transmit      -> write event.data (flush before blocking on a read)
        NeedData      -> server.receive_data(stdin.read(...))   (b"" at end of input)
        RcptTo        -> check the recipient, then accept_recipient() or refuse_recipient()
        MessageStart  -> start a submission fed from the MessageData events that follow
        MessageEnd    -> accept_message(queue id) or refuse_message()
        Hello, MailFrom, Reset -> log them if you like

Replies come out in the order the commands came in, so pipelined commands work: the
driver feeds whatever it read and writes replies when it runs out of input.

Everything that affects transitions lives in this file, in the TRANSITIONS table
where possible: for the state we are in and the input that arrived (a command verb,
the end of the data, the end of input, or the driver's verdict), the table names the
action and every state that action may move to.  A command missing from the table
is out of sequence (503); a verdict missing from it is a bug in the driver
(LocalProtocolError).

Lines: commands may be 512 octets with their CRLF (RFC 5321 4.5.3.1.4); longer ones
are answered 500 without being held in memory.  Text lines should be at most 1000
octets but longer ones are accepted: the submission path re-encodes them.

Line ends, and SMTP smuggling (CVE-2023-51764, SPEC 1 ``-bs``): a command line may end
in CRLF or a bare LF (old scripts pipe LF-only commands; nothing rides on it).  In the
data only CRLF ends a line, as RFC 5321 2.3.8 defines it: a bare LF is a character of
the line it is in.  So the data ends only at ``<CRLF>.<CRLF>`` (or ``.<CRLF>`` first
in it), and the dot rule of RFC 5321 4.5.2 applies to lines that begin after a CRLF:
there a leading dot is removed and the lone ``.`` ends the message.  A dot after a
bare LF is text, kept as it is.  ``<LF>.<LF>``, ``<LF>.<CRLF>`` and ``<CRLF>.<LF>``
are therefore message text, and so is whatever follows them up to the real end: a
body cannot smuggle commands into a second transaction.  A conforming client (one
that dot-stuffs the lines it ends in CRLF, as Symfony, SwiftMailer and smtplib do)
gets its message back byte for byte, bare LFs and all.  Bare LFs in the text are
accepted without a word (the submission path makes line ends uniform); the number of
lone dots next to a bare LF that did not end the data is reported in
``MessageEnd.bare_lf_dots`` (or ``Closed.bare_lf_dots`` when the input ended in the
message), so the driver can log an attempt or a client that ends the data wrongly.
"""

from __future__ import annotations

import enum
import re
from collections import deque
from collections.abc import Callable

from dma.core import sysexits
from dma.core.addresses import needs_smtputf8, parse_envelope_address
from dma.core.errors import DmaError, SoftwareError
from dma.core.values import frozen
from dma.core.version import PRODUCT

__all__ = [
    "Closed",
    "Event",
    "Hello",
    "Input",
    "LocalProtocolError",
    "MailFrom",
    "MailParameters",
    "MessageData",
    "MessageEnd",
    "MessageStart",
    "NeedData",
    "RcptTo",
    "Reset",
    "SmtpServer",
    "State",
    "Transmit",
    "message_refusal",
    "recipient_refusal",
]

CRLF = b"\r\n"
MAX_COMMAND_OCTETS = 512
"""Longest command line, CRLF included (RFC 5321 4.5.3.1.4)."""
MAX_TEXT_OCTETS = 1000
"""RFC 5321's limit for a text line with its CRLF; longer lines are accepted anyway."""
DATA_FRAGMENT_OCTETS = 64 * 1024
"""A data line longer than this is passed on in pieces, so no line is held whole."""
MAX_RECIPIENTS = 1000
"""Recipients per message (RFC 5321 asks for at least 100); more get 452."""
MAX_REPLY_TEXT_OCTETS = 500
"""Reply text is cut to this, so that a reply line stays within 512 octets."""

EXTENSIONS = ("PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES")
"""Announced in the EHLO reply, in this order.  SIZE without a number: no fixed limit."""
BODY_TYPES = frozenset({"7BIT", "8BITMIME"})
UNIMPLEMENTED_VERBS = frozenset(
    {"EXPN", "TURN", "ETRN", "ATRN", "STARTTLS", "AUTH", "BDAT", "SEND", "SOML", "SAML"}
)
"""Verbs of real SMTP extensions or old commands that we know of and do not do: 502."""

_COMMAND = re.compile(r"([A-Za-z]+)(?:[ \t]+(.*))?", re.DOTALL)
_FROM = re.compile(r"FROM:[ \t]*(.*)", re.IGNORECASE | re.DOTALL)
_TO = re.compile(r"TO:[ \t]*(.*)", re.IGNORECASE | re.DOTALL)
_SIZE_VALUE = re.compile(r"[0-9]{1,20}")
# Control characters and DEL become "?" in reply text: a reply is one clean line.
_CONTROLS = {c: "?" for c in [*range(0x00, 0x20), 0x7F]}


class LocalProtocolError(SoftwareError):
    """The driver called the machine wrongly (a verdict nobody asked for): a bug."""


class _Refusal(Exception):
    """A command's arguments are wrong: answer ``code text`` and stay where we are."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


# --- events ---------------------------------------------------------------------------


@frozen
class Transmit:
    """Reply bytes for the client, to be written in the order they come."""

    data: bytes

    @property
    def code(self) -> int:
        """The reply code (the first three digits), for logs and tests."""
        return int(self.data[:3])


@frozen
class NeedData:
    """Every buffered line is handled: feed more input (``b""`` at its end)."""


@frozen
class Hello:
    """The client said EHLO (``extended``) or HELO with this name."""

    name: str
    extended: bool


@frozen
class MailParameters:
    """The MAIL FROM parameters we accept (RFC 1870, 6152, 6531)."""

    size: int | None = None
    body: str | None = None  # 7BIT or 8BITMIME
    smtputf8: bool = False


@frozen
class MailFrom:
    """A transaction began with this sender (``""`` is the null sender)."""

    sender: str
    parameters: MailParameters


@frozen
class RcptTo:
    """The client names a recipient: the driver must accept or refuse it before going on."""

    address: str


@frozen
class MessageStart:
    """DATA was accepted (354 sent): MessageData events follow, then MessageEnd or Closed."""

    sender: str
    recipients: tuple[str, ...]
    parameters: MailParameters


@frozen
class MessageData:
    """The next piece of the message, dots unstuffed: text up to a line feed (CRLF or a
    bare LF, as the client sent it), or the start of a run of more than
    DATA_FRAGMENT_OCTETS octets without one.  Never empty."""

    data: bytes


@frozen
class MessageEnd:
    """``<CRLF>.<CRLF>`` arrived: the driver must accept or refuse the message before going on.

    ``bare_lf_dots``: how many lone dots next to a bare LF (``<LF>.<LF>``,
    ``<LF>.<CRLF>``, ``<CRLF>.<LF>``) the message holds as text: each is an SMTP
    smuggling attempt or a client that tried to end the data with a bare LF.
    """

    bare_lf_dots: int = 0


@frozen
class Reset:
    """The transaction in progress (if any) was dropped: RSET, or EHLO/HELO inside it."""


@frozen
class Closed:
    """The session is over: after QUIT (``by_quit``) or at the end of input.

    ``mid_transaction``: input ended after MAIL FROM and before the end of the data,
    so the client lost a message it was sending.  ``bare_lf_dots``: lone dots next to a
    bare LF in that unfinished message (see MessageEnd): a client that ends its data
    with ``.`` after a bare LF never ends it, and this says why.
    """

    by_quit: bool
    mid_transaction: bool
    bare_lf_dots: int = 0


Event = (
    Transmit | NeedData | Hello | MailFrom | RcptTo | MessageStart | MessageData | MessageEnd
    | Reset | Closed
)
NEED_DATA = NeedData()


# --- states, inputs and the table -------------------------------------------------------


class State(enum.Enum):
    """Where the session is."""

    IDLE = "no mail transaction"
    MAIL = "sender given, no recipient accepted yet"
    RCPT = "recipients accepted, more may come, or DATA"
    RCPT_CHECK = "waiting for the driver's verdict on a recipient"
    DATA = "receiving the message"
    DATA_CHECK = "waiting for the driver's verdict on the message"
    CLOSED = "closed"


class Input(enum.Enum):
    """What can happen to the machine: a command, the end of data or input, a verdict."""

    EHLO = "EHLO"
    HELO = "HELO"
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    RSET = "RSET"
    NOOP = "NOOP"
    QUIT = "QUIT"
    VRFY = "VRFY"
    HELP = "HELP"
    UNIMPLEMENTED = "a command we know and do not do"
    UNKNOWN = "not a command"
    END_OF_DATA = "the lone dot"
    END_OF_INPUT = "the end of input"
    ACCEPT = "the driver accepts"
    REFUSE = "the driver refuses"


COMMANDS = frozenset(
    {
        Input.EHLO, Input.HELO, Input.MAIL, Input.RCPT, Input.DATA, Input.RSET, Input.NOOP,
        Input.QUIT, Input.VRFY, Input.HELP, Input.UNIMPLEMENTED, Input.UNKNOWN,
    }
)
"""Inputs that come from a command line; the others come from the data or the driver."""
_VERBS: dict[str, Input] = {
    i.value: i for i in COMMANDS if i not in (Input.UNIMPLEMENTED, Input.UNKNOWN)
}


@frozen
class _Transition:
    action: str  # name of the SmtpServer method run with the command's argument
    targets: frozenset[State]  # every state the action may move to


def _to(action: str, *targets: State) -> _Transition:
    return _Transition(action, frozenset(targets))


S, I = State, Input  # noqa: E741 - short names keep the table readable
COMMAND_STATES = (S.IDLE, S.MAIL, S.RCPT)
"""States that read command lines."""
TRANSITIONS: dict[tuple[State, Input], _Transition] = {
    # in state              input            action                   possible next states
    (S.IDLE, I.MAIL): _to("_mail", S.MAIL, S.IDLE),
    (S.MAIL, I.RCPT): _to("_rcpt", S.RCPT_CHECK, S.MAIL),
    (S.RCPT, I.RCPT): _to("_rcpt", S.RCPT_CHECK, S.RCPT),
    (S.MAIL, I.DATA): _to("_no_recipients", S.MAIL),
    (S.RCPT, I.DATA): _to("_data", S.DATA, S.RCPT),
    (S.RCPT_CHECK, I.ACCEPT): _to("_recipient_accepted", S.RCPT),
    (S.RCPT_CHECK, I.REFUSE): _to("_recipient_refused", S.RCPT, S.MAIL),
    (S.DATA, I.END_OF_DATA): _to("_message_end", S.DATA_CHECK),
    (S.DATA, I.END_OF_INPUT): _to("_end_of_input", S.CLOSED),
    (S.DATA_CHECK, I.ACCEPT): _to("_message_answered", S.IDLE),
    (S.DATA_CHECK, I.REFUSE): _to("_message_answered", S.IDLE),
}
for _state in COMMAND_STATES:
    TRANSITIONS[(_state, I.EHLO)] = _to("_ehlo", S.IDLE, _state)
    TRANSITIONS[(_state, I.HELO)] = _to("_helo", S.IDLE, _state)
    TRANSITIONS[(_state, I.RSET)] = _to("_reset", S.IDLE)
    TRANSITIONS[(_state, I.NOOP)] = _to("_noop", _state)
    TRANSITIONS[(_state, I.VRFY)] = _to("_vrfy", _state)
    TRANSITIONS[(_state, I.HELP)] = _to("_help", _state)
    TRANSITIONS[(_state, I.QUIT)] = _to("_quit", S.CLOSED)
    TRANSITIONS[(_state, I.UNIMPLEMENTED)] = _to("_not_implemented", _state)
    TRANSITIONS[(_state, I.UNKNOWN)] = _to("_unknown", _state)
    TRANSITIONS[(_state, I.END_OF_INPUT)] = _to("_end_of_input", S.CLOSED)

OUT_OF_SEQUENCE: dict[tuple[State, Input], str] = {
    (S.IDLE, I.RCPT): "5.5.1 send MAIL FROM first",
    (S.IDLE, I.DATA): "5.5.1 send MAIL FROM first",
    (S.MAIL, I.MAIL): "5.5.1 a transaction is already open (send RSET to start again)",
    (S.RCPT, I.MAIL): "5.5.1 a transaction is already open (send RSET to start again)",
}
"""The 503 text for a command the table has no row for; others get a generic one."""


# --- the machine ------------------------------------------------------------------------


class SmtpServer:
    """One ``-bs`` session: feed input with receive_data, take events with next_event."""

    def __init__(self, hostname: str) -> None:
        self._host = _clean(hostname).replace(" ", "") or "localhost"
        self._state = State.IDLE
        self._buffer = bytearray()
        self._eof = False
        self._discarding = False  # dropping the rest of an overlong command line
        self._line_start = True  # in DATA: the buffer starts a line (after CRLF or DATA)
        self._after_bare_lf = False  # in DATA: the octet before the buffer was a bare LF
        self._bare_lf_dots = 0  # in DATA: lone dots next to a bare LF so far
        self._events: deque[Event] = deque()
        self._closed: Closed | None = None
        self._verb = ""
        self._verdict = (0, "")
        self._sender = ""
        self._parameters = MailParameters()
        self._recipients: list[str] = []
        self._pending_recipient = ""
        self._refused = 0  # recipients refused in this transaction
        self._reply(220, f"{self._host} ESMTP {PRODUCT}")

    @property
    def state(self) -> State:
        """Where the session is now."""
        return self._state

    def receive_data(self, data: bytes) -> None:
        """Add client input; ``b""`` says the input has ended."""
        if self._eof or self._state is State.CLOSED:
            return
        if data:
            self._buffer += data
        else:
            self._eof = True

    def next_event(self) -> Event:
        """The next thing for the driver to do; NeedData when the input is used up.

        Raises LocalProtocolError while a verdict is due (after RcptTo or MessageEnd).
        """
        while not self._events:
            if self._state in (State.RCPT_CHECK, State.DATA_CHECK):
                raise LocalProtocolError(
                    f"next_event called while {self._state.value}",
                    hint="call accept_... or refuse_... first",
                )
            if self._closed is not None:
                return self._closed
            if not self._step():
                return NEED_DATA
        return self._events.popleft()

    def accept_recipient(self) -> None:
        """The recipient of the last RcptTo is good: 250."""
        self._decide(State.RCPT_CHECK, Input.ACCEPT, 250, "2.1.5 Ok")

    def refuse_recipient(self, code: int, text: str) -> None:
        """The recipient of the last RcptTo is refused with ``code`` (4xx or 5xx) and ``text``."""
        self._decide(State.RCPT_CHECK, Input.REFUSE, _refusal_code(code), text)

    def accept_message(self, queue_id: str) -> None:
        """The message after the last MessageEnd is queued as ``queue_id``: 250."""
        self._decide(State.DATA_CHECK, Input.ACCEPT, 250, f"2.0.0 Ok: queued as {queue_id}")

    def refuse_message(self, code: int, text: str) -> None:
        """The message after the last MessageEnd is refused with ``code`` and ``text``."""
        self._decide(State.DATA_CHECK, Input.REFUSE, _refusal_code(code), text)

    def _decide(self, due: State, kind: Input, code: int, text: str) -> None:
        """Apply the driver's verdict; it must answer the question that is open."""
        if self._state is not due:
            raise LocalProtocolError(
                f"a verdict for the state {due.name} given while {self._state.value}",
                hint="answer RcptTo with *_recipient and MessageEnd with *_message",
            )
        self._verdict = (code, text)
        self._dispatch(kind, "")

    # --- input handling -------------------------------------------------------------------

    def _step(self) -> bool:
        """Handle one command line or one run of data; False when more input is needed."""
        if self._state is State.DATA:
            return self._scan_data()
        index = self._buffer.find(b"\n")
        if index < 0:
            if len(self._buffer) > MAX_COMMAND_OCTETS:
                self._discarding = True
                self._buffer.clear()
            if not self._eof:
                return False
            if self._buffer and not self._discarding:
                line = bytes(self._buffer)  # a last command without a line end
                self._buffer.clear()
                self._command(line)
            else:
                self._buffer.clear()
                self._dispatch(Input.END_OF_INPUT, "")
            return True
        line = bytes(self._buffer[:index])
        del self._buffer[: index + 1]
        if self._discarding:
            self._discarding = False
            self._reply(500, "5.5.2 line too long")
            return True
        self._command(line.removesuffix(b"\r"))
        return True

    def _command(self, line: bytes) -> None:
        if len(line) + len(CRLF) > MAX_COMMAND_OCTETS:
            self._reply(500, "5.5.2 line too long")
            return
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            self._reply(500, "5.5.2 command is not valid UTF-8")
            return
        match = _COMMAND.fullmatch(text.rstrip(" \t"))
        if match is None:
            self._dispatch(Input.UNKNOWN, "")
            return
        verb = match.group(1).upper()
        self._verb = verb
        kind = _VERBS.get(verb)
        if kind is None:
            kind = Input.UNIMPLEMENTED if verb in UNIMPLEMENTED_VERBS else Input.UNKNOWN
        self._dispatch(kind, match.group(2) or "")

    def _scan_data(self) -> bool:
        """Pass on the data in the buffer up to its last line feed, unstuffed, or up to the
        end of the data if it is there (see the module notes on line ends)."""
        buffer = self._buffer
        end = buffer.rfind(b"\n")
        if end < 0:
            if self._eof:
                buffer.clear()
                self._dispatch(Input.END_OF_INPUT, "")
                return True
            if len(buffer) < DATA_FRAGMENT_OCTETS:
                return False
            # A long run without a line feed: pass it on, but keep a final CR back, so
            # that a CRLF stays whole when its LF comes in the next read.
            cut = len(buffer) - 1 if buffer[-1] == 0x0D else len(buffer)
            piece = bytes(buffer[:cut])
            del buffer[:cut]
            if self._line_start and piece[:1] == b".":
                piece = piece[1:]  # so long that it cannot be the lone dot
            self._line_start = self._after_bare_lf = False
            self._emit_data(piece)
            return True
        # The octets before the buffer, as far as they matter: so each "\n." found in
        # ``text`` has what precedes its LF (a CR or not) at hand.
        lead = b"\r\n" if self._line_start else b"\n" if self._after_bare_lf else b""
        text = lead + bytes(buffer[: end + 1])
        pieces: list[bytes] = []
        start = len(lead)
        index = text.find(b"\n.")
        while index >= 0:
            dot = index + 1
            after_crlf = index > 0 and text[index - 1] == 0x0D
            # ``text`` ends in LF after the dot, so one octet after it is always there,
            # and a second one whenever the first is a CR.
            lone = text[dot + 1 : dot + 3] == CRLF
            if after_crlf and lone:
                pieces.append(text[start:dot])
                del buffer[: dot + 3 - len(lead)]
                self._line_start, self._after_bare_lf = True, False
                self._emit_data(b"".join(pieces))
                self._dispatch(Input.END_OF_DATA, "")
                return True
            if lone or text[dot + 1] == 0x0A:
                self._bare_lf_dots += 1  # <LF>.<CRLF>, <LF>.<LF> or <CRLF>.<LF>
            if after_crlf:
                pieces.append(text[start:dot])  # unstuff: drop the dot that starts a line
                start = dot + 1
            index = text.find(b"\n.", dot)
        pieces.append(text[start:])
        del buffer[: end + 1]
        self._line_start = text.endswith(CRLF)
        self._after_bare_lf = not self._line_start
        self._emit_data(b"".join(pieces))
        return True

    def _emit_data(self, data: bytes) -> None:
        if data:
            self._events.append(MessageData(data))

    def _dispatch(self, kind: Input, argument: str) -> None:
        transition = TRANSITIONS.get((self._state, kind))
        if transition is None:
            if kind in COMMANDS and self._state in COMMAND_STATES:
                text = OUT_OF_SEQUENCE.get((self._state, kind), "5.5.1 bad sequence of commands")
                self._reply(503, text)
                return
            raise LocalProtocolError(
                f"{kind.value} is not possible while {self._state.value}",
                hint="the driver must follow the events next_event returns",
            )
        action: Callable[[str], State] = getattr(self, transition.action)
        new_state = action(argument)
        if new_state not in transition.targets:
            raise SoftwareError(
                f"SMTP server moved from {self._state.name} to {new_state.name} "
                f"by {transition.action}, which the table does not allow"
            )
        self._state = new_state

    def _reply(self, code: int, *lines: str) -> None:
        last = len(lines) - 1
        data = b"".join(
            f"{code}{' ' if index == last else '-'}{_clean(line)}".encode("ascii") + CRLF
            for index, line in enumerate(lines)
        )
        self._events.append(Transmit(data))

    def _clear_transaction(self) -> bool:
        """Forget the transaction; True when there was one."""
        had = self._state is not State.IDLE
        self._sender = ""
        self._parameters = MailParameters()
        self._recipients = []
        self._refused = 0
        return had

    def _transaction_state(self) -> State:
        return State.RCPT if self._recipients else State.MAIL

    # --- actions (named in TRANSITIONS; each returns the next state) ------------------------

    def _ehlo(self, argument: str) -> State:
        return self._hello(argument, extended=True)

    def _helo(self, argument: str) -> State:
        return self._hello(argument, extended=False)

    def _hello(self, argument: str, *, extended: bool) -> State:
        name = argument.strip()
        if not name:
            verb = "EHLO" if extended else "HELO"
            self._reply(501, f"5.5.4 {verb} needs your host name")
            return self._state
        if self._clear_transaction():
            self._events.append(Reset())
        self._events.append(Hello(name, extended))
        if extended:
            self._reply(250, self._host, *EXTENSIONS)
        else:
            self._reply(250, self._host)
        return State.IDLE

    def _mail(self, argument: str) -> State:
        match = _FROM.fullmatch(argument)
        if match is None:
            self._reply(501, "5.5.4 syntax: MAIL FROM:<address>")
            return State.IDLE
        try:
            address, rest = _split_path(match.group(1))
            parameters = _mail_parameters(rest)
            if address:
                _check_address(address, "sender", "5.1.7", parameters.smtputf8)
        except _Refusal as refusal:
            self._reply(refusal.code, refusal.text)
            return State.IDLE
        self._sender = address
        self._parameters = parameters
        self._recipients = []
        self._refused = 0
        self._events.append(MailFrom(address, parameters))
        self._reply(250, "2.1.0 Ok")
        return State.MAIL

    def _rcpt(self, argument: str) -> State:
        match = _TO.fullmatch(argument)
        try:
            if match is None:
                raise _Refusal(501, "5.5.4 syntax: RCPT TO:<address>")
            address, rest = _split_path(match.group(1))
            if rest.strip():
                shown = rest.strip().split()[0]
                raise _Refusal(555, f"5.5.4 RCPT parameter {shown} is not supported")
            if not address:
                raise _Refusal(501, "5.1.3 empty recipient address")
            _check_address(address, "recipient", "5.1.3", self._parameters.smtputf8)
            if len(self._recipients) >= MAX_RECIPIENTS:
                raise _Refusal(452, f"4.5.3 too many recipients (at most {MAX_RECIPIENTS})")
        except _Refusal as refusal:
            self._reply(refusal.code, refusal.text)
            return self._transaction_state()
        self._pending_recipient = address
        self._events.append(RcptTo(address))
        return State.RCPT_CHECK

    def _recipient_accepted(self, argument: str) -> State:
        self._recipients.append(self._pending_recipient)
        self._reply(*self._verdict)
        return State.RCPT

    def _recipient_refused(self, argument: str) -> State:
        self._refused += 1
        self._reply(*self._verdict)
        return self._transaction_state()

    def _no_recipients(self, argument: str) -> State:
        if self._refused:
            self._reply(554, "5.5.1 no valid recipients")
        else:
            self._reply(503, "5.5.1 send RCPT TO first")
        return State.MAIL

    def _data(self, argument: str) -> State:
        if argument.strip():
            self._reply(501, "5.5.4 DATA takes no arguments")
            return State.RCPT
        self._reply(354, "End data with <CR><LF>.<CR><LF>")
        self._events.append(
            MessageStart(self._sender, tuple(self._recipients), self._parameters)
        )
        self._line_start, self._after_bare_lf, self._bare_lf_dots = True, False, 0
        return State.DATA

    def _message_end(self, argument: str) -> State:
        self._events.append(MessageEnd(bare_lf_dots=self._bare_lf_dots))
        return State.DATA_CHECK

    def _message_answered(self, argument: str) -> State:
        self._clear_transaction()
        self._reply(*self._verdict)
        return State.IDLE

    def _reset(self, argument: str) -> State:
        self._clear_transaction()
        self._events.append(Reset())
        self._reply(250, "2.0.0 Ok")
        return State.IDLE

    def _noop(self, argument: str) -> State:
        self._reply(250, "2.0.0 Ok")
        return self._state

    def _vrfy(self, argument: str) -> State:
        self._reply(252, "2.5.2 cannot VRFY user; try RCPT to attempt delivery")
        return self._state

    def _help(self, argument: str) -> State:
        self._reply(214, "2.0.0 commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP")
        return self._state

    def _not_implemented(self, argument: str) -> State:
        self._reply(502, f"5.5.1 {self._verb} is not implemented")
        return self._state

    def _unknown(self, argument: str) -> State:
        self._reply(500, "5.5.2 command not recognized")
        return self._state

    def _quit(self, argument: str) -> State:
        self._reply(221, "2.0.0 Bye")
        self._closed = Closed(by_quit=True, mid_transaction=False)
        self._buffer.clear()
        return State.CLOSED

    def _end_of_input(self, argument: str) -> State:
        in_data = self._state is State.DATA
        self._closed = Closed(
            by_quit=False,
            mid_transaction=self._state is not State.IDLE,
            bare_lf_dots=self._bare_lf_dots if in_data else 0,
        )
        return State.CLOSED


# --- parsing helpers --------------------------------------------------------------------


def _split_path(text: str) -> tuple[str, str]:
    """``<address> params`` -> (address, params).  A source route (``<@a,@b:u@c>``) is dropped
    (RFC 5321 4.1.1.3); a bare address without brackets is accepted, as most servers do."""
    if not text.startswith("<"):
        address, _, rest = text.partition(" ")
        if not address:
            raise _Refusal(501, "5.5.4 syntax: missing <address>")
        return address, rest
    quoted = escaped = False
    for index in range(1, len(text)):
        char = text[index]
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            address, rest = text[1:index], text[index + 1 :]
            break
    else:
        raise _Refusal(501, "5.5.4 syntax: the address has no closing '>'")
    if rest and rest[0] not in " \t":
        raise _Refusal(501, "5.5.4 syntax: a space must follow the address")
    if address.startswith("@"):
        route_end = address.find(":")
        if route_end < 0:
            raise _Refusal(501, "5.5.4 syntax: a source route without ':'")
        address = address[route_end + 1 :]
    return address, rest


def _mail_parameters(text: str) -> MailParameters:
    """SIZE=n, BODY=7BIT|8BITMIME and SMTPUTF8; anything else is refused with 555."""
    size: int | None = None
    body: str | None = None
    smtputf8 = False
    seen: set[str] = set()
    for word in text.split():
        keyword, has_value, value = word.partition("=")
        keyword = keyword.upper()
        if keyword in seen:
            raise _Refusal(501, f"5.5.4 MAIL parameter {keyword} given twice")
        seen.add(keyword)
        if keyword == "SIZE":
            if not _SIZE_VALUE.fullmatch(value):
                raise _Refusal(501, "5.5.4 SIZE must be a number of octets")
            size = int(value)
        elif keyword == "BODY":
            if value.upper() not in BODY_TYPES:
                raise _Refusal(501, "5.5.4 BODY must be 7BIT or 8BITMIME")
            body = value.upper()
        elif keyword == "SMTPUTF8":
            if has_value:
                raise _Refusal(501, "5.5.4 SMTPUTF8 takes no value")
            smtputf8 = True
        else:
            raise _Refusal(555, f"5.5.4 MAIL parameter {keyword} is not supported")
    return MailParameters(size, body, smtputf8)


def _check_address(address: str, what: str, status: str, smtputf8: bool) -> None:
    try:
        parse_envelope_address(address)
    except DmaError as error:
        raise _Refusal(501, f"{status} {error.message}") from None
    if needs_smtputf8(address) and not smtputf8:
        raise _Refusal(553, f"5.6.7 a non-ASCII {what} address needs MAIL FROM with SMTPUTF8")


def _clean(text: str) -> str:
    """Reply text as one printable ASCII line of bounded length."""
    shown = text.translate(_CONTROLS).encode("ascii", "backslashreplace").decode("ascii")
    if len(shown) > MAX_REPLY_TEXT_OCTETS:
        shown = shown[: MAX_REPLY_TEXT_OCTETS - 3] + "..."
    return shown


def _refusal_code(code: int) -> int:
    if not 400 <= code <= 599:
        raise LocalProtocolError(f"refusal code {code} is not 4xx or 5xx")
    return code


# --- what a submission error means to the client ------------------------------------------

_PERMANENT_INPUT = frozenset({sysexits.EX_DATAERR, sysexits.EX_USAGE})
_PERMANENT_USER = frozenset({sysexits.EX_NOUSER, sysexits.EX_NOINPUT})


def recipient_refusal(error: DmaError) -> tuple[int, str]:
    """The reply to RCPT for a recipient that submission would refuse with ``error``.

    An unknown local user is 550 5.1.1, a malformed address or alias 553 5.1.3, a
    refused feature 550 5.3.0; a configuration, spool or other local trouble is a
    temporary 451, so the client tries again later and nothing is lost.
    """
    code = error.exit_code
    if code in _PERMANENT_USER:
        return 550, f"5.1.1 {error}"
    if code in _PERMANENT_INPUT:
        return 553, f"5.1.3 {error}"
    if code == sysexits.EX_UNAVAILABLE:
        return 550, f"5.3.0 {error}"
    if code == sysexits.EX_CONFIG:
        return 451, f"4.3.5 {error}"
    return 451, f"4.3.0 {error}"


def message_refusal(error: DmaError) -> tuple[int, str]:
    """The reply to the end of data for a message that submission refused with ``error``.

    Bad content (a NUL byte, a malformed header address) is 554 5.6.0; a recipient
    that vanished since RCPT is 550 5.1.1; trouble on our side is a temporary 451.
    """
    code = error.exit_code
    if code in _PERMANENT_INPUT:
        return 554, f"5.6.0 {error}"
    if code in _PERMANENT_USER:
        return 550, f"5.1.1 {error}"
    if code == sysexits.EX_UNAVAILABLE:
        return 554, f"5.3.0 {error}"
    if code == sysexits.EX_CONFIG:
        return 451, f"4.3.5 {error}"
    return 451, f"4.3.0 {error}"
