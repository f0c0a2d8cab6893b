"""The ledger of a delivery run: what each address's outcome makes of its queue item.

Items go in, each with its addresses (one, or several when a C dma Q file names a
comma list); outcomes of single addresses come in as the sessions report them, in
any order and from any number of connections at once; out come the changes to make:

- ``Narrowed``: an address of a list was delivered: the Q file keeps only the others,
  at once, so that no address is ever sent twice;
- one final ``Decision`` per item, given once, when every address has an outcome:
  ``Delivered``, ``Deferred`` (with the rescheduled Q item, and the addresses refused
  for good to bounce first) or ``Failed`` (to bounce; an expired item included).

The ledger does no I/O and keeps no clock: the time and the retry jitter come in
with each outcome.  It is not thread-safe; a run that reports from several threads
holds one lock around it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from dma.core.bounce import expiry_failure
from dma.core.outcomes import Outcome, deferred, failed
from dma.core.queuefile import QueueItem
from dma.core.retry import after_temporary_failure, is_expired
from dma.core.routing import join_recipient_parts, recipient_parts

NO_OUTCOME = "no outcome reported"
"""The deferral reason of an address nothing reported on by the end of the run."""


@dataclass(frozen=True, slots=True, order=True)
class AddressId:
    """One address of one queue item: ``part`` indexes the item's Recipient list.

    A C dma Q file may name several addresses (``a@x.org,b@y.org``); each is worked
    on alone.  An item with one address has the one part 0.
    """

    item_id: str
    part: int = 0

    def __str__(self) -> str:
        """The item's id, as log lines and mailq name it."""
        return self.item_id


Report = Callable[[AddressId, Outcome], None]
"""How delivery hands the run one address's outcome (thread-safe where it is given)."""


@dataclass(frozen=True, slots=True)
class Address:
    """An address to deliver: its id and the recipient it names."""

    id: AddressId
    recipient: str


@dataclass(frozen=True, slots=True)
class Moment:
    """When an outcome is taken in, and the retry jitter (in [0, 1)) to use then."""

    now: float
    jitter: float


@dataclass(frozen=True, slots=True)
class Narrowed:
    """Delivered addresses leave the item now: ``item`` is what its Q file must say."""

    item: QueueItem


@dataclass(frozen=True, slots=True)
class Delivered:
    """Every address of the item was delivered: the item (as it was queued) leaves."""

    item: QueueItem
    detail: str


@dataclass(frozen=True, slots=True)
class Deferred:
    """Try again later: write ``rescheduled`` into the Q file.

    ``bounce``: the addresses of a list refused for good, to bounce before; when that
    bounce cannot be made, write ``unbounced`` instead, which keeps them queued.
    """

    item: QueueItem
    reason: str
    rescheduled: QueueItem
    bounce: Outcome | None = None
    unbounced: QueueItem | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    """Bounce the item to its sender with ``outcome`` (each address's reason in its
    parts for a list); ``expired`` when it was only deferred, but for too long."""

    item: QueueItem
    outcome: Outcome
    expired: bool = False


Decision = Delivered | Deferred | Failed
Change = Narrowed | Decision


@dataclass
class _Entry:
    """One item's book: its Q item as now written, and the outcome of each address."""

    item: QueueItem
    arrival: float
    recipients: tuple[str, ...]
    original: QueueItem
    outcomes: dict[int, Outcome] = dataclasses.field(default_factory=dict)
    decided: bool = False

    def open_parts(self) -> list[int]:
        return [n for n in range(len(self.recipients)) if n not in self.outcomes]


class Ledger:
    """The items of one run and the outcomes of their addresses (see the module doc)."""

    def __init__(self, *, lifetime: int) -> None:
        """``lifetime``: QUEUELIFETIME; an item deferred when older than that fails."""
        self.lifetime = lifetime
        self._entries: dict[str, _Entry] = {}

    def add(self, item: QueueItem, arrival: float) -> tuple[Address, ...]:
        """Open the book of ``item`` (arrived at ``arrival``); its addresses to deliver."""
        recipients = recipient_parts(item.recipient)
        self._entries[item.id] = _Entry(item, arrival, recipients, item)
        return tuple(Address(AddressId(item.id, n), recipient)
                     for n, recipient in enumerate(recipients))

    def is_decided(self, item_id: str) -> bool:
        """Whether ``item_id`` has had its final decision (unknown ids have not)."""
        entry = self._entries.get(item_id)
        return entry is not None and entry.decided

    def undecided(self) -> tuple[str, ...]:
        """The items still waiting for an outcome of some address, in the order added."""
        return tuple(item_id for item_id, entry in self._entries.items() if not entry.decided)

    def forget(self, item_id: str) -> None:
        """Drop a decided item's book (a long run over a big queue keeps only its batch);
        an undecided one is kept, so its outcome can still come."""
        entry = self._entries.get(item_id)
        if entry is not None and entry.decided:
            del self._entries[item_id]

    def record(self, address: AddressId, outcome: Outcome, at: Moment) -> tuple[Change, ...]:
        """Take in the outcome of one address; the changes it makes (maybe none).

        The first outcome of an address counts: a second one, one for an unknown
        address, or one for an item already decided changes nothing.
        """
        entry = self._entries.get(address.item_id)
        if entry is None or entry.decided or address.part in entry.outcomes \
                or not 0 <= address.part < len(entry.recipients):
            return ()
        entry.outcomes[address.part] = outcome
        if entry.open_parts():
            if outcome.kind == "delivered":
                return (Narrowed(self._narrow(entry)),)
            return ()
        entry.decided = True
        return (self._decide(entry, at),)

    def defer_open(self, item_id: str, reason: str, at: Moment) -> tuple[Change, ...]:
        """Every address of ``item_id`` without an outcome is deferred with ``reason``."""
        entry = self._entries.get(item_id)
        if entry is None:
            return ()
        changes: list[Change] = []
        for part in entry.open_parts():
            changes.extend(self.record(AddressId(item_id, part), deferred(reason), at))
        return tuple(changes)

    def close(self, at: Moment) -> tuple[Change, ...]:
        """End of the run: what no one reported on is deferred; every item is decided."""
        changes: list[Change] = []
        for item_id in self.undecided():
            changes.extend(self.defer_open(item_id, NO_OUTCOME, at))
        return tuple(changes)

    # --- decisions ---------------------------------------------------------------

    def _narrow(self, entry: _Entry) -> QueueItem:
        """The item with only the addresses not delivered in its Recipient."""
        left = [recipient for n, recipient in enumerate(entry.recipients)
                if n not in entry.outcomes or entry.outcomes[n].kind != "delivered"]
        entry.item = dataclasses.replace(entry.item, recipient=join_recipient_parts(left))
        return entry.item

    def _decide(self, entry: _Entry, at: Moment) -> Decision:
        """The item's one decision, now that every address has its outcome."""
        results = [(entry.recipients[n], entry.outcomes[n])
                   for n in range(len(entry.recipients))]
        listed = len(results) > 1
        if all(outcome.kind == "delivered" for _, outcome in results):
            detail = _joined(results) if listed else results[0][1].detail
            return Delivered(entry.original, detail)
        if listed:
            self._narrow(entry)  # the last address may have been delivered just now
        left = [(part, outcome) for part, outcome in results if outcome.kind != "delivered"]
        refused = tuple((part, outcome) for part, outcome in left if outcome.kind == "failed")
        waiting = [(part, outcome) for part, outcome in left if outcome.kind == "deferred"]
        if not waiting:
            return Failed(entry.item, _failure(refused, listed))
        reason = _deferral_reason(waiting, listed, every_part=len(waiting) == len(results))
        if is_expired(entry.arrival, at.now, self.lifetime):
            return Failed(entry.item, self._expiry(entry, refused, waiting, reason, listed),
                          expired=True)
        now = int(at.now)
        queued = dataclasses.replace(
            entry.item, recipient=join_recipient_parts([part for part, _ in waiting]))
        rescheduled = after_temporary_failure(queued, now=now, error=reason, jitter=at.jitter)
        if not refused:
            return Deferred(entry.item, reason, rescheduled)
        unbounced = after_temporary_failure(entry.item, now=now, error=reason,
                                            jitter=at.jitter)
        return Deferred(entry.item, reason, rescheduled, _failure(refused, True), unbounced)

    def _expiry(self, entry: _Entry, refused: Sequence[tuple[str, Outcome]],
                waiting: Sequence[tuple[str, Outcome]], reason: str, listed: bool) -> Outcome:
        """The bounce of an item still deferred after QUEUELIFETIME (status 4.4.7)."""
        expired = []
        for part, _ in waiting:
            expiry = expiry_failure(part, reason, self.lifetime)
            expired.append((part, failed(expiry.reason, expiry.status, expiry.diagnostic,
                                         expiry.remote_mta)))
        if not listed:
            return expired[0][1]
        order = {part: n for n, part in enumerate(entry.recipients)}
        every = sorted([*refused, *expired], key=lambda pair: order[pair[0]])
        return _failure(every, True)


def _joined(results: Iterable[tuple[str, Outcome]]) -> str:
    return "; ".join(f"{part}: {outcome.detail}" for part, outcome in results)


def _failure(refused: Sequence[tuple[str, Outcome]], listed: bool) -> Outcome:
    """What to bounce for addresses refused for good: for a list, each with its own."""
    first = refused[0][1]
    if not listed:
        return first
    return failed(_joined(refused), first.status, first.diagnostic, first.remote_mta,
                  parts=tuple(refused))


def _deferral_reason(waiting: Sequence[tuple[str, Outcome]], listed: bool, *,
                     every_part: bool) -> str:
    """One line for the Q file's last error: the reason, or each reason with its addresses."""
    if not listed:
        return waiting[0][1].detail
    reasons: dict[str, list[str]] = {}
    for part, outcome in waiting:
        reasons.setdefault(outcome.detail, []).append(part)
    if len(reasons) == 1 and every_part:
        return next(iter(reasons))
    return "; ".join(f"{', '.join(parts)}: {reason}" for reason, parts in reasons.items())
