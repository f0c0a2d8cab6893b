"""A spooled message on its way out: one transaction, its M files, and what SIZE= says.

The hop loop narrows a message to the items still open after each connection, the
SMTP driver reads it once it is sent; both name its items in log lines.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet

from dma.core.ledger import AddressId
from dma.core.transport import Transaction
from dma.core.values import mutable, replace

SMALL_MESSAGE = 1 << 16
"""Messages up to this size are read once into memory while they are in flight."""

MAX_LOGGED_IDS = 20


@mutable
class OutgoingMessage:
    """A transaction with what the driver needs to send it."""

    plan: Transaction
    paths: tuple[str, ...]  # each address's M file (links of one message), as plan.item_ids
    size: int
    eight_bit: bool
    body: bytes | None = None  # a small message read once, for the 8-bit check and DATA

    @property
    def path(self) -> str:
        """The M file to read: one of an item still being sent (a delivered one's is gone)."""
        return self.paths[0]


class MessageQueue:
    """The messages of one hop for one address, shared by its connections (its lanes):
    each takes the next one when it can send it.  Thread-safe.

    A lane whose connection is lost gives its unfinished messages back, to the head of
    the queue; a message being sent when a second connection was lost is not taken again
    in this attempt: it may be what breaks them, and it must not take the other messages
    down with it.
    """

    def __init__(self, messages: Iterable[OutgoingMessage] = ()) -> None:
        self._waiting: deque[OutgoingMessage] = deque(messages)
        self._returned: set[tuple[AddressId, ...]] = set()  # the items of those given back
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._waiting)

    def take(self) -> OutgoingMessage | None:
        """The next message, or None when none is waiting."""
        with self._lock:
            return self._waiting.popleft() if self._waiting else None

    def put_first(self, message: OutgoingMessage) -> None:
        """``message`` is next (the recipients a server deferred to another transaction)."""
        with self._lock:
            self._waiting.appendleft(message)

    def give_back(self, messages: Sequence[OutgoingMessage]) -> OutgoingMessage | None:
        """Return a lost connection's unfinished messages, in order, to the head of the
        queue.  The first was being sent when the connection was lost: when it was given
        back before, it is kept out (see the class doc) and returned; the ones pipelined
        behind it are not to blame."""
        if not messages:
            return None
        first, *rest = messages
        with self._lock:
            self._waiting.extendleft(reversed(rest))
            if first.plan.item_ids in self._returned:
                return first
            self._returned.add(first.plan.item_ids)
            self._waiting.appendleft(first)
        return None

    def snapshot(self) -> list[OutgoingMessage]:
        """The messages waiting now, in order."""
        with self._lock:
            return list(self._waiting)


def narrowed(message: OutgoingMessage, keep: AbstractSet[AddressId]) -> OutgoingMessage | None:
    """The message narrowed to its items in ``keep`` (a set: asked once per item);
    None when there is none."""
    plan = message.plan
    kept = [i for i, item_id in enumerate(plan.item_ids) if item_id in keep]
    if not kept:
        return None
    if len(kept) == len(plan.item_ids):
        return message
    items = tuple(plan.item_ids[i] for i in kept)
    item_recipients = tuple(plan.item_recipients[i] for i in kept)
    recipients = tuple(r for r in plan.recipients if r in item_recipients)
    plan = replace(
        plan, item_ids=items, recipients=recipients, item_recipients=item_recipients
    )
    paths = tuple(message.paths[i] for i in kept)
    return OutgoingMessage(plan, paths, message.size, message.eight_bit)


def measured(message: OutgoingMessage) -> OutgoingMessage:
    """Size on the wire, 8-bit check and, for a small message, its content: one open.

    SIZE= counts the octets as sent (RFC 1870): the spool holds LF line ends, the wire
    CRLF, so each line adds one octet to the file's size.
    """
    with open(message.path, "rb", buffering=0) as handle:  # no isatty() probe
        size = os.fstat(handle.fileno()).st_size
        if size <= SMALL_MESSAGE:
            body = handle.read()
            return OutgoingMessage(message.plan, message.paths, size + body.count(b"\n"),
                                   not body.isascii(), body)
        eight_bit = False
        lines = 0
        while chunk := handle.read(1 << 16):
            lines += chunk.count(b"\n")
            eight_bit = eight_bit or not chunk.isascii()
    return OutgoingMessage(message.plan, message.paths, size + lines, eight_bit)


def logged_ids(ids: Sequence[AddressId]) -> str:
    """Item ids for the ``id`` field of a log line: comma separated, a long list cut short.

    The addresses of one comma-list item are shown once, as their item's id.
    """
    unique = list(dict.fromkeys(address.item_id for address in ids))
    if len(unique) <= MAX_LOGGED_IDS:
        return ",".join(unique)
    return ",".join(unique[:MAX_LOGGED_IDS]) + f",+{len(unique) - MAX_LOGGED_IDS} more"


def message_ids(messages: Sequence[OutgoingMessage]) -> str:
    """The ``id`` field for a connection: every item of every transaction it carries."""
    return logged_ids([item_id for message in messages for item_id in message.plan.item_ids])
