"""The SMTP client's state table: reading it tells you the protocol.

Two tables, both typed so mypy checks them:

* ``TRANSITIONS``: for the state we are in and the kind of reply that arrived, the
  ``Action`` the machine runs and every state that action may move to.  A pair
  missing from it is a reply the protocol does not allow there (``UNEXPECTED``:
  the session fails, temporarily).
* ``CALLS``: for the state we are in and a call of the driver (``send_message``,
  ``send_data_lines``, ``tls_established``, ``quit``, ``receive_data``) or a
  condition of the stream (its end, bytes that are no reply), every state the
  machine may move to.  A pair missing from it is a call in the wrong state: our
  own bug, ``LocalProtocolError``.

``SmtpClient`` changes its state in one place (``_move``), which refuses any
state the entry does not list.  Split from ``dma.core.smtp``, which re-exports
the public names.
"""

from __future__ import annotations

import enum

from dma.core.errors import SoftwareError
from dma.core.smtp_events import Stage
from dma.core.smtp_reply import Reply
from dma.core.values import frozen

__all__ = [
    "CALLS",
    "SILENT_STATES",
    "STAGE_OF",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "UNEXPECTED",
    "Action",
    "Call",
    "LocalProtocolError",
    "ReplyKind",
    "State",
    "Transition",
    "reply_kind",
]


class LocalProtocolError(SoftwareError):
    """Our own code drove the SMTP machine wrongly (a call in the wrong state): a bug."""


class State(enum.Enum):
    """Where the session is: mostly, which reply we are waiting for."""

    GREETING = "waiting for the greeting"
    EHLO = "waiting for the EHLO reply"
    HELO = "waiting for the HELO reply"
    STARTTLS = "waiting for the STARTTLS reply"
    TLS_HANDSHAKE = "waiting for the driver's TLS handshake"
    AUTH = "authenticating"
    AUTH_ENDING = "waiting for the reply that ends a failed AUTH exchange"
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


class Action(enum.Enum):
    """What the machine does with a reply; ``SmtpClient`` maps each to one method."""

    SEND_EHLO = "greeted: send EHLO"
    REFUSED_BY_HOST = "the host refused us"
    SEND_HELO = "EHLO refused: fall back to HELO"
    EHLO_DONE = "EHLO answered: STARTTLS, AUTH or ready"
    HELO_DONE = "HELO answered: ready (no extensions, so no STARTTLS or AUTH)"
    START_TLS = "STARTTLS accepted: hand the handshake to the driver"
    STARTTLS_REFUSED = "STARTTLS refused: go on without TLS, or fail"
    ANSWER_CHALLENGE = "answer an AUTH challenge (or cancel the exchange)"
    AUTHENTICATED = "AUTH accepted: the mechanism's last check, then ready"
    AUTH_REFUSED = "AUTH refused"
    AUTH_ENDED = "the failed AUTH exchange is over"
    RESET_DONE = "RSET accepted: MAIL next"
    RESET_REFUSED = "RSET refused"
    MAIL_ACCEPTED = "MAIL accepted: RCPT next"
    MAIL_REFUSED = "MAIL refused: settle the message"
    RCPT_ANSWERED = "one RCPT answered"
    DATA_ACCEPTED = "DATA accepted: the driver sends the message"
    DATA_REFUSED = "DATA refused: settle the message"
    EARLY_REPLY = "a reply in the middle of the data"
    DATA_ANSWERED = "the end of data answered: settle the message"
    SERVER_CLOSING = "421: the server hangs up"
    UNEXPECTED = "a reply the protocol does not allow here"
    CLOSED = "QUIT answered: the session is over"


class Call(enum.Enum):
    """What else moves the machine: the driver's calls, and the stream's conditions."""

    RECEIVE_DATA = "receive_data"
    SEND_MESSAGE = "send_message"
    SEND_DATA = "send_data_lines"
    END_OF_DATA = "send_data_lines reached the end of the message"
    TLS_ESTABLISHED = "tls_established"
    QUIT = "quit"
    END_OF_STREAM = "the server closed the connection"
    BAD_REPLY = "the server sent bytes that are no SMTP reply"


@frozen
class Transition:
    """A reply table entry: the action to run, and every state it may move to."""

    action: Action
    targets: frozenset[State]


def _to(action: Action, *targets: State) -> Transition:
    return Transition(action, frozenset(targets))


S, K, A = State, ReplyKind, Action
TRANSITIONS: dict[tuple[State, ReplyKind], Transition] = {
    # waiting for            reply        action               possible next states
    (S.GREETING, K.POSITIVE): _to(A.SEND_EHLO, S.EHLO),
    (S.GREETING, K.TRANSIENT): _to(A.REFUSED_BY_HOST, S.FAILED),
    (S.GREETING, K.PERMANENT): _to(A.REFUSED_BY_HOST, S.FAILED),
    (S.EHLO, K.POSITIVE): _to(A.EHLO_DONE, S.STARTTLS, S.AUTH, S.READY, S.FAILED),
    (S.EHLO, K.TRANSIENT): _to(A.REFUSED_BY_HOST, S.FAILED),
    (S.EHLO, K.PERMANENT): _to(A.SEND_HELO, S.HELO, S.FAILED),
    (S.HELO, K.POSITIVE): _to(A.HELO_DONE, S.READY, S.FAILED),
    (S.HELO, K.TRANSIENT): _to(A.REFUSED_BY_HOST, S.FAILED),
    (S.HELO, K.PERMANENT): _to(A.REFUSED_BY_HOST, S.FAILED),
    (S.STARTTLS, K.POSITIVE): _to(A.START_TLS, S.TLS_HANDSHAKE, S.FAILED),
    (S.STARTTLS, K.TRANSIENT): _to(A.STARTTLS_REFUSED, S.AUTH, S.READY, S.FAILED),
    (S.STARTTLS, K.PERMANENT): _to(A.STARTTLS_REFUSED, S.AUTH, S.READY, S.FAILED),
    # AUTH: each 334 is answered (AUTH again), or the answer ends an exchange the server
    # failed (an OAuth2 error report) or we cancel one whose challenge is wrong (a bad
    # SCRAM signature, a malformed challenge): AUTH_ENDING, where any reply fails it.
    (S.AUTH, K.INTERMEDIATE): _to(A.ANSWER_CHALLENGE, S.AUTH, S.AUTH_ENDING),
    (S.AUTH, K.POSITIVE): _to(A.AUTHENTICATED, S.READY, S.FAILED),
    (S.AUTH, K.TRANSIENT): _to(A.AUTH_REFUSED, S.FAILED),
    (S.AUTH, K.PERMANENT): _to(A.AUTH_REFUSED, S.FAILED),
    (S.AUTH_ENDING, K.POSITIVE): _to(A.AUTH_ENDED, S.FAILED),
    (S.AUTH_ENDING, K.INTERMEDIATE): _to(A.AUTH_ENDED, S.FAILED),
    (S.AUTH_ENDING, K.TRANSIENT): _to(A.AUTH_ENDED, S.FAILED),
    (S.AUTH_ENDING, K.PERMANENT): _to(A.AUTH_ENDED, S.FAILED),
    (S.AUTH_ENDING, K.SHUTDOWN): _to(A.AUTH_ENDED, S.FAILED),
    (S.RSET, K.POSITIVE): _to(A.RESET_DONE, S.MAIL),
    (S.RSET, K.TRANSIENT): _to(A.RESET_REFUSED, S.FAILED),
    (S.RSET, K.PERMANENT): _to(A.RESET_REFUSED, S.FAILED),
    (S.MAIL, K.POSITIVE): _to(A.MAIL_ACCEPTED, S.RCPT),
    (S.MAIL, K.TRANSIENT): _to(A.MAIL_REFUSED, S.RCPT, S.READY),
    (S.MAIL, K.PERMANENT): _to(A.MAIL_REFUSED, S.RCPT, S.READY),
    (S.RCPT, K.POSITIVE): _to(A.RCPT_ANSWERED, S.RCPT, S.DATA, S.READY),
    (S.RCPT, K.TRANSIENT): _to(A.RCPT_ANSWERED, S.RCPT, S.DATA, S.READY),
    (S.RCPT, K.PERMANENT): _to(A.RCPT_ANSWERED, S.RCPT, S.DATA, S.READY),
    (S.DATA, K.INTERMEDIATE): _to(A.DATA_ACCEPTED, S.SENDING_DATA, S.DATA_END),
    (S.DATA, K.TRANSIENT): _to(A.DATA_REFUSED, S.READY),
    (S.DATA, K.PERMANENT): _to(A.DATA_REFUSED, S.READY),
    (S.SENDING_DATA, K.POSITIVE): _to(A.EARLY_REPLY, S.FAILED),
    (S.SENDING_DATA, K.INTERMEDIATE): _to(A.EARLY_REPLY, S.FAILED),
    (S.SENDING_DATA, K.TRANSIENT): _to(A.EARLY_REPLY, S.FAILED),
    (S.SENDING_DATA, K.PERMANENT): _to(A.EARLY_REPLY, S.FAILED),
    (S.DATA_END, K.POSITIVE): _to(A.DATA_ANSWERED, S.READY, S.MAIL),
    (S.DATA_END, K.TRANSIENT): _to(A.DATA_ANSWERED, S.READY, S.MAIL),
    (S.DATA_END, K.PERMANENT): _to(A.DATA_ANSWERED, S.READY, S.MAIL),
    (S.QUIT, K.POSITIVE): _to(A.CLOSED, S.CLOSED),
    (S.QUIT, K.INTERMEDIATE): _to(A.CLOSED, S.CLOSED),
    (S.QUIT, K.TRANSIENT): _to(A.CLOSED, S.CLOSED),
    (S.QUIT, K.PERMANENT): _to(A.CLOSED, S.CLOSED),
    (S.QUIT, K.SHUTDOWN): _to(A.CLOSED, S.CLOSED),
}
# A 421 anywhere else (also unsolicited, on an idle connection) means the server hangs up.
for _state in (S.GREETING, S.EHLO, S.HELO, S.STARTTLS, S.AUTH, S.READY, S.RSET, S.MAIL,
               S.RCPT, S.DATA, S.SENDING_DATA, S.DATA_END):
    TRANSITIONS[(_state, K.SHUTDOWN)] = _to(A.SERVER_CLOSING, S.FAILED)
UNEXPECTED = _to(A.UNEXPECTED, S.FAILED)
"""Any (state, reply kind) pair not in the table: the server is out of step."""

SILENT_STATES = frozenset({S.TLS_HANDSHAKE, S.FAILED, S.CLOSED})
"""States where received replies are not read (TLS_HANDSHAKE refuses data outright)."""

TERMINAL_STATES = frozenset({S.CLOSED})
"""States nothing leaves."""

C = Call
CALLS: dict[tuple[State, Call], frozenset[State]] = {
    # in state                 call                  possible next states
    (S.READY, C.SEND_MESSAGE): frozenset({S.RSET, S.MAIL, S.READY}),
    (S.DATA_END, C.SEND_MESSAGE): frozenset({S.DATA_END}),  # pipelined behind the dot
    (S.SENDING_DATA, C.SEND_DATA): frozenset({S.SENDING_DATA}),
    (S.SENDING_DATA, C.END_OF_DATA): frozenset({S.DATA_END}),
    (S.TLS_HANDSHAKE, C.TLS_ESTABLISHED): frozenset({S.EHLO}),
    (S.READY, C.QUIT): frozenset({S.QUIT}),
    (S.FAILED, C.QUIT): frozenset({S.QUIT, S.CLOSED}),
    (S.QUIT, C.QUIT): frozenset({S.QUIT}),  # idempotent: b""
    (S.CLOSED, C.QUIT): frozenset({S.CLOSED}),
}
for _state in State:
    if _state is not S.TLS_HANDSHAKE:  # the driver must finish the handshake first
        CALLS[(_state, C.RECEIVE_DATA)] = frozenset({_state})
    if _state not in SILENT_STATES:  # the stream is read in these states only
        closing = S.CLOSED if _state is S.QUIT else S.FAILED
        CALLS[(_state, C.END_OF_STREAM)] = frozenset({closing})
        CALLS[(_state, C.BAD_REPLY)] = frozenset({closing})
del _state

STAGE_OF = {
    S.GREETING: Stage.GREETING,
    S.EHLO: Stage.EHLO,
    S.HELO: Stage.HELO,
    S.STARTTLS: Stage.STARTTLS,
    S.TLS_HANDSHAKE: Stage.STARTTLS,
    S.AUTH: Stage.AUTH,
    S.AUTH_ENDING: Stage.AUTH,
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
"""The stage a failure in each state is reported at."""
