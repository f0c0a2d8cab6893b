"""Queue listings for ``mailq``/``-bp``: the C dma's text blocks plus ours, and JSON lines (SPEC 6).

The text keeps the C dma's ``ID``/``From``/``To`` blocks and ``--`` separators so
scripts that read it keep working; what we add (age, size, tries, next try, last
error, lock status, a summary) comes after each block's C lines.  Damaged items
that the spool moved to ``SPOOLDIR/quarantine/`` follow the queued ones, one block
each with the reason, until an administrator releases or deletes them.  Values that
came from files are made printable: a Q file or a server's reply must not be able
to drive the reader's terminal.  ``select_entries`` is which items ``-qI``/``-qR``/``-qS``
pick.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from dma.core.durations import format_duration
from dma.core.octets import printable
from dma.core.queuefile import QueueItem, message_id_of

TYPE_CHECKING = False
if TYPE_CHECKING:
    from dma.core.cmdline import QueueSelector


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """A queued item as the spool sees it: the Q file's content plus file facts."""

    item: QueueItem
    arrival: float  # epoch seconds (the Q file's mtime)
    size: int  # octets of the M file
    locked: bool = False  # someone is delivering it right now


@dataclass(frozen=True, slots=True)
class QuarantinedEntry:
    """A damaged item moved aside (SPEC 4): what its files still tell, and why it was moved.

    ``name`` is its name in the quarantine (the item id, or ``<id>-<n>`` when that
    name was taken), the word ``dma -Qr`` and ``dma -Qd`` take.
    """

    name: str
    item_id: str
    reason: str
    since: float  # epoch seconds it was moved aside
    item: QueueItem | None = None  # the Q file's content, when it still parses
    arrival: float | None = None  # the Q file's mtime, when there is one
    size: int | None = None  # octets of the M file, when it is a regular file


UNREADABLE = "(unreadable)"
RELEASE_HINT = "dma -Qr ID puts one back after a fix, dma -Qd ID deletes it"


def select_entries(entries: Sequence[QueueEntry], selectors: Sequence[QueueSelector]
                   ) -> list[QueueEntry]:
    """-qI/-qR/-qS (and -q!I...): keep the items the selectors pick, as sendmail does.

    Per kind (id, recipient, sender) an item must match at least one of that kind's
    selectors; every kind given must match.  A selector matches when its text is in
    the field (case-insensitive), or, negated (``-q!R text``), when it is not.
    """
    if not selectors:
        return list(entries)
    kinds = {selector.kind for selector in selectors}

    def matches(entry: QueueEntry) -> bool:
        item = entry.item
        fields = {"id": item.id, "recipient": item.recipient, "sender": item.sender}
        return all(
            any((selector.text.lower() in fields[kind].lower()) != selector.negate
                for selector in selectors if selector.kind == kind)
            for kind in kinds
        )

    return [entry for entry in entries if matches(entry)]


def _printable(text: str) -> str:
    """``text`` as a listing shows it: the log's form (``\\xNN`` for octets that are not
    UTF-8, ``\\n`` and the like for control characters), one line."""
    return printable(text)


def _clean(text: str) -> str:
    """``text`` with lone surrogates (U+D800 to U+DFFF: octets that were not UTF-8) as
    U+FFFD, so it can be written as UTF-8.  Text that has none, nearly all, is returned
    as it is after one check in C instead of a look at each character."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text)
    return text


def _seconds(value: float) -> int:
    """Whole seconds of a non-negative span; odd clock values count as zero."""
    if not math.isfinite(value) or value <= 0:
        return 0
    return int(value)


def _ordered(entries: Sequence[QueueEntry]) -> list[QueueEntry]:
    """Oldest first; ties by id so the listing is stable."""
    return sorted(
        entries,
        key=lambda e: (e.arrival if math.isfinite(e.arrival) else 0.0, e.item.id),
    )


def _next_try(next_try: int, now: float) -> str:
    """``in 5m``, or ``now`` when the retry time has come."""
    if not math.isfinite(now):
        return "now"
    wait = math.ceil(next_try - now)
    return f"in {format_duration(wait)}" if wait > 0 else "now"


def _block(entry: QueueEntry, now: float) -> str:
    """One item: the C dma's three lines, then ours."""
    item = entry.item
    sender = _printable(item.sender) if item.sender else "<>"
    lines = [
        f"ID\t: {_printable(item.id)}",
        f"From\t: {sender}",
        f"To\t: {_printable(item.recipient)}",
        f"Age\t: {format_duration(_seconds(now - entry.arrival))}",
        f"Size\t: {entry.size}",
    ]
    if item.attempts:
        lines.append(f"Tries\t: {item.attempts}")
    if item.next_try is not None:
        lines.append(f"Next\t: {_next_try(item.next_try, now)}")
    if item.last_error is not None:
        lines.append(f"Error\t: {_printable(item.last_error)}")
    if entry.locked:
        lines.append("Status\t: being delivered")
    return "".join(line + "\n" for line in lines)


def _quarantined_block(entry: QuarantinedEntry, now: float) -> str:
    """One quarantined item: the C dma's three lines (as far as known), then why."""
    item = entry.item
    if item is None:
        sender = recipient = UNREADABLE
    else:
        sender = _printable(item.sender) if item.sender else "<>"
        recipient = _printable(item.recipient)
    lines = [f"ID\t: {_printable(entry.name)}", f"From\t: {sender}", f"To\t: {recipient}"]
    if entry.arrival is not None:
        lines.append(f"Age\t: {format_duration(_seconds(now - entry.arrival))}")
    if entry.size is not None:
        lines.append(f"Size\t: {entry.size}")
    lines.append(
        f"Status\t: quarantined {format_duration(_seconds(now - entry.since))} ago: "
        f"{_printable(entry.reason)}"
    )
    return "".join(line + "\n" for line in lines)


def _quarantine_order(entries: Sequence[QuarantinedEntry]) -> list[QuarantinedEntry]:
    """Earliest moved first; ties by name."""
    return sorted(entries, key=lambda e: (e.since if math.isfinite(e.since) else 0.0, e.name))


def render_mailq(
    entries: Sequence[QueueEntry], now: float, quarantined: Sequence[QuarantinedEntry] = ()
) -> str:
    """The ``mailq`` text: blocks separated by ``--``, oldest first, the quarantined items
    after them, then a summary line."""
    return "".join(mailq_pieces(_ordered(entries), now, lambda: quarantined))


def _none_held() -> Sequence[QuarantinedEntry]:
    return ()


def mailq_pieces(
    ordered: Iterable[QueueEntry], now: float,
    quarantined: Callable[[], Sequence[QuarantinedEntry]] = _none_held,
) -> Iterator[str]:
    """``render_mailq``'s text piece by piece, for a listing that writes each block as it
    reads its item, so that a queue of 100 000 is never held whole.  ``ordered`` must
    come oldest first (``_ordered``'s order) and is read once; ``quarantined`` is asked
    once the queued items are listed (reading them may move damaged ones there)."""
    count = total = oldest = 0
    for entry in ordered:
        if count:
            yield "--\n"
        yield _block(entry, now)
        count += 1
        total += entry.size
        oldest = max(oldest, _seconds(now - entry.arrival))
    held = _quarantine_order(quarantined())
    if not count and not held:
        yield "Mail queue is empty\n"
        return
    for number, moved in enumerate(held):
        if count or number:
            yield "--\n"
        yield _quarantined_block(moved, now)
    summary = f"-- {count} item{'' if count == 1 else 's'}, {total} octets"
    if count:
        summary += f", oldest {format_duration(oldest)}"
    if held:
        summary += f"; {len(held)} quarantined ({RELEASE_HINT})"
    yield summary + "\n"


def render_mailq_json(
    entries: Sequence[QueueEntry], now: float, quarantined: Sequence[QuarantinedEntry] = ()
) -> str:
    """One JSON object per item and line, oldest first, then the quarantined items (with
    ``quarantined`` true and the reason in ``damage``); ``""`` for an empty queue."""
    return "".join(mailq_json_lines(_ordered(entries), now, lambda: quarantined))


def mailq_json_lines(
    ordered: Iterable[QueueEntry], now: float,
    quarantined: Callable[[], Sequence[QuarantinedEntry]] = _none_held,
) -> Iterator[str]:
    """``render_mailq_json``'s lines one by one (``ordered`` oldest first and read once,
    ``quarantined`` asked after it, as for ``mailq_pieces``)."""
    import json  # only -j needs it; delivery imports this module (issue 2)

    for entry in ordered:
        yield json.dumps(entry_record(entry, now), sort_keys=True, ensure_ascii=False) + "\n"
    for moved in _quarantine_order(quarantined()):
        yield json.dumps(_quarantined_record(moved, now), sort_keys=True,
                         ensure_ascii=False) + "\n"


def entry_record(entry: QueueEntry, now: float, *, clean: bool = True) -> dict[str, object]:
    """The JSON facts of a queued item, as ``mailq -j`` prints them.

    ``clean`` False keeps lone surrogates (octets that are not UTF-8) as they are, for
    a writer that escapes them (``ensure_ascii``) so they read back exactly.
    """
    item = entry.item
    text = _clean if clean else str
    return {
        "id": text(item.id),
        "message_id": text(message_id_of(item.id)),
        "sender": text(item.sender),
        "recipient": text(item.recipient),
        "arrival": entry.arrival if math.isfinite(entry.arrival) else None,
        "age": _seconds(now - entry.arrival),
        "size": entry.size,
        "attempts": item.attempts,
        "next_try": item.next_try,
        "last_error": None if item.last_error is None else text(item.last_error),
        "locked": entry.locked,
        "quarantined": False,
        "damage": None,
        "quarantined_at": None,
    }


def _quarantined_record(entry: QuarantinedEntry, now: float) -> dict[str, object]:
    """The JSON facts of a quarantined item: the same keys, None where nothing is known."""
    item = entry.item
    arrival = entry.arrival
    known = arrival is not None and math.isfinite(arrival)
    return {
        "id": _clean(entry.name),
        "message_id": _clean(message_id_of(entry.item_id)),
        "sender": None if item is None else _clean(item.sender),
        "recipient": None if item is None else _clean(item.recipient),
        "arrival": arrival if known else None,
        "age": _seconds(now - arrival) if arrival is not None else None,
        "size": entry.size,
        "attempts": None if item is None else item.attempts,
        "next_try": None if item is None else item.next_try,
        "last_error": None if item is None or item.last_error is None
        else _clean(item.last_error),
        "locked": False,
        "quarantined": True,
        "damage": _clean(entry.reason),
        "quarantined_at": entry.since if math.isfinite(entry.since) else None,
    }
