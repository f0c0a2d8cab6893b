"""The SMTP client's values: what goes in (envelope, policy) and the events that come out.

Split from ``dma.core.smtp`` (which re-exports every name here): outcomes and stages
of replies, ``classify`` (SPEC 5.4), the ``Envelope`` and ``SessionPolicy`` a
session is given, and the events ``SmtpClient.next_event`` returns.
"""

from __future__ import annotations

import enum
from typing import Literal

from dma.core.credentials import Credentials
from dma.core.smtp_reply import Extensions, Reply
from dma.core.values import field, frozen

__all__ = [
    "Closed",
    "Envelope",
    "Event",
    "MessageDone",
    "Outcome",
    "Ready",
    "ReadyForData",
    "RecipientResult",
    "SessionFailed",
    "SessionPolicy",
    "Stage",
    "StartTls",
    "Transmit",
    "classify",
]

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


@frozen
class Envelope:
    """One message to send in this session."""

    sender: str  # "" is the null sender
    recipients: tuple[str, ...]
    size: int  # octets of the spooled message, for SIZE=
    eight_bit: bool  # the message has 8-bit data: BODY=8BITMIME when offered
    dsn_notify: str | None = None  # NEVER, or SUCCESS,FAILURE,DELAY in any combination
    dsn_ret: str | None = None  # FULL or HDRS
    dsn_envid: str | None = None  # sent xtext-encoded


@frozen
class SessionPolicy:
    """How this session must behave: from dma.conf, auth.conf or the account.

    ``nonce``: fresh randomness from the driver for SCRAM's client nonce (printable
    ASCII without ',', at least 16 characters), needed when ``credentials`` hold a
    password.  ``server_name`` and ``server_port``: the server as configured, which
    OAUTHBEARER names in its message (RFC 7628 3.1).
    """

    helo_name: str
    starttls: Literal["no", "required", "opportunistic"]
    tls_active: bool  # implicit TLS: the connection is TLS from its first byte
    credentials: Credentials | None = field(default=None, repr=False)
    insecure: bool = False  # INSECURE: PLAIN, LOGIN and OAuth2 allowed without TLS
    nonce: str = field(default="", repr=False)
    server_name: str | None = None
    server_port: int | None = None


# --- events out ------------------------------------------------------------------------


@frozen
class Transmit:
    """Bytes the driver must write now: commands the machine sends on its own."""

    data: bytes = field(repr=False)
    commands: tuple[str, ...]  # what the bytes are, for logs; AUTH answers shown as "***"


@frozen
class StartTls:
    """The server accepted STARTTLS: do the handshake now, then call tls_established."""


@frozen
class Ready:
    """Greeting, EHLO/HELO, TLS and AUTH are done: send_message may be called."""

    greeting: Reply
    extensions: Extensions
    tls_active: bool
    authenticated: str | None  # the AUTH mechanism used; None: we did not authenticate
    notices: tuple[str, ...]  # things the driver should log (no AUTH offered, plain text...)


@frozen
class RecipientResult:
    """The outcome for one recipient: during RCPT (informative) or final (in MessageDone)."""

    recipient: str
    outcome: Outcome
    stage: Stage
    reply: Reply | None  # None when there was no reply (refused by us, connection lost)
    reason: str  # one line for logs and bounces


@frozen
class ReadyForData:
    """The server accepted DATA and at least one recipient: call send_data_lines."""


@frozen
class MessageDone:
    """The final outcome of every recipient of the message, in envelope order."""

    results: tuple[RecipientResult, ...]

    @property
    def delivered(self) -> tuple[str, ...]:
        """The recipients the server took responsibility for."""
        return tuple(r.recipient for r in self.results if r.outcome is Outcome.DELIVERED)


@frozen
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


@frozen
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


