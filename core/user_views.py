"""Each user's view of the queue: their own items only (SPEC 8.2 queue listing, SPEC 6).

In system mode a user may not read the spool, and no daemon answers questions, so
root writes, for every uid with queued items, a file that uid alone may read: the
listing records of that uid's items (``X-Uid`` in the Q file: the owner of the
maildrop file they came from), the same facts ``mailq -j`` prints, and nothing about
anyone else's.  ``user_views`` makes them all from one listing of the queue (linear
in its size); ``parse_view`` reads one back for the user's ``mailq`` and ``dma -Qd``.

The format, version 1: JSON lines, ASCII only (octets that are not UTF-8 travel as
``\\udcNN`` escapes and read back exactly).  The first line is the header, the
others one item each, oldest first::

    {"items": 2, "pydma_queue_view": 1, "uid": 1001, "written": 1733480000.5}
    {"age": 3, "arrival": 1733479997.0, "attempts": 0, "id": "18c2...0", ...}
    {"age": 1, "arrival": 1733479999.0, "attempts": 0, "id": "18c2...1", ...}

``items`` counts the lines after the header, so a cut file never reads as a shorter
queue.  ``age`` is as of ``written``; a reader computes its own from ``arrival``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dma.core.errors import DataError, at
from dma.core.mailq import QueueEntry, entry_record
from dma.core.queuefile import QueueItem, message_id_of

VERSION = 1
"""The format's version, in the header's ``pydma_queue_view`` key."""

_HINT = "the queue runner writes it again at its next pass (dma -q as root)"


@dataclass(frozen=True, slots=True)
class UserView:
    """One uid's view: when root wrote it, and that uid's queued items then."""

    uid: int
    written: float  # epoch seconds
    entries: tuple[QueueEntry, ...]


def group_by_uid(entries: Iterable[QueueEntry]) -> dict[int, list[QueueEntry]]:
    """The entries of each submitter (``X-Uid``), oldest first; items without one (root's
    own mail, bounces, the C dma's items) belong to no view."""
    groups: dict[int, list[QueueEntry]] = {}
    for entry in entries:
        uid = entry.item.uid
        if uid is not None:
            groups.setdefault(uid, []).append(entry)
    for group in groups.values():
        group.sort(key=lambda e: (e.arrival if math.isfinite(e.arrival) else 0.0, e.item.id))
    return groups


def render_view(uid: int, entries: Iterable[QueueEntry], written: float) -> bytes:
    """The view file of ``uid`` holding ``entries`` (given oldest first)."""
    lines = [json.dumps(entry_record(entry, written, clean=False), sort_keys=True)
             for entry in entries]
    header = {"pydma_queue_view": VERSION, "uid": uid, "items": len(lines),
              "written": written if math.isfinite(written) else None}
    return "".join(line + "\n" for line in [json.dumps(header, sort_keys=True), *lines]
                   ).encode("ascii")


def user_views(entries: Iterable[QueueEntry], written: float) -> dict[int, bytes]:
    """Every uid's view file, from one listing of the queue: {uid: its file's octets}."""
    return {uid: render_view(uid, group, written)
            for uid, group in group_by_uid(entries).items()}


def views_to_remove(existing: Iterable[str], views: Mapping[int, bytes]) -> list[str]:
    """Which of the ``existing`` per-uid names hold a view that must go: those of uids
    with nothing queued now (names that are no uid are not ours to touch)."""
    return sorted(name for name in existing
                  if name.isascii() and name.isdigit() and int(name) not in views)


def choose_own(entries: Iterable[QueueEntry], words: Iterable[str], every: str
               ) -> tuple[list[str], list[str]]:
    """What a user's ``dma -Qd WORD...`` names among their own ``entries``: the item ids
    (in the entries' order) and the words that name none of them.  A word is an item
    id, a message id (all its items) or ``every`` (``ALL``: all of them)."""
    wanted = set(words)
    found: set[str] = set()
    chosen = []
    for entry in entries:
        item_id = entry.item.id
        hits = {item_id, message_id_of(item_id), every} & wanted
        if hits:
            chosen.append(item_id)
            found |= hits
    return chosen, sorted(wanted - found - {every})


# --- reading -------------------------------------------------------------------------------


def parse_view(data: bytes, name: str) -> UserView:
    """A view file read back; DataError naming what is wrong (never anything else)."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise DataError("queue view holds octets that are not ASCII", where=name,
                        hint=_HINT) from None
    if not text.endswith("\n"):
        raise DataError("queue view is cut short (no final line end)", where=name, hint=_HINT)
    lines = text[:-1].split("\n")
    header = _json_object(lines[0], name, 1)
    if header.get("pydma_queue_view") != VERSION:
        raise DataError(f"not a queue view of version {VERSION}", where=at(name, 1),
                        hint=_HINT)
    uid = _count(header, "uid", name, 1)
    items = _count(header, "items", name, 1)
    if items != len(lines) - 1:
        raise DataError(f"queue view says {items} items, it holds {len(lines) - 1}",
                        where=name, hint=_HINT)
    written = _number(header, "written", name, 1)
    entries = tuple(_entry(lines[n - 1], uid, name, n) for n in range(2, len(lines) + 1))
    return UserView(uid, written, entries)


def _json_object(line: str, name: str, number: int) -> dict[str, object]:
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        raise DataError("queue view line is no JSON", where=at(name, number),
                        hint=_HINT) from None
    if not isinstance(value, dict):
        raise DataError("queue view line is no JSON object", where=at(name, number),
                        hint=_HINT)
    return value


def _wrong(key: str, what: str, name: str, number: int) -> DataError:
    return DataError(f"queue view: {key} is not {what}", where=at(name, number), hint=_HINT)


def _count(record: dict[str, object], key: str, name: str, number: int) -> int:
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _wrong(key, "a whole number of zero or more", name, number)
    return value


def _number(record: dict[str, object], key: str, name: str, number: int) -> float:
    """A time in epoch seconds; null (a clock that read no finite value) is NaN."""
    value = record.get(key)
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _wrong(key, "a number", name, number)
    return float(value)


def _text(record: dict[str, object], key: str, name: str, number: int, *,
          empty: bool = True) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not (empty or value):
        raise _wrong(key, "text" if empty else "text that is not empty", name, number)
    return value


def _maybe_count(record: dict[str, object], key: str, name: str, number: int) -> int | None:
    return None if record.get(key) is None else _count(record, key, name, number)


def _entry(line: str, uid: int, name: str, number: int) -> QueueEntry:
    """One item line as the listing's entry (the item recorded as ``uid``'s)."""
    record = _json_object(line, name, number)
    error = record.get("last_error")
    if error is not None and not isinstance(error, str):
        raise _wrong("last_error", "text", name, number)
    locked = record.get("locked", False)
    if not isinstance(locked, bool):
        raise _wrong("locked", "true or false", name, number)
    item = QueueItem(
        id=_text(record, "id", name, number, empty=False),
        sender=_text(record, "sender", name, number),
        recipient=_text(record, "recipient", name, number, empty=False),
        attempts=_count(record, "attempts", name, number),
        next_try=_maybe_count(record, "next_try", name, number),
        last_error=error,
        uid=uid,
    )
    return QueueEntry(item=item, arrival=_number(record, "arrival", name, number),
                      size=_count(record, "size", name, number), locked=locked)
