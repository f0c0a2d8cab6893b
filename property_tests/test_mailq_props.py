"""Properties of queue listings: they never fail and list every item exactly once."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator

from hypothesis import given, settings
from hypothesis import strategies as st

from dma.core.mailq import (
    QuarantinedEntry,
    QueueEntry,
    mailq_json_lines,
    mailq_pieces,
    render_mailq,
    render_mailq_json,
)
from dma.core.queuefile import QueueItem

_anything = st.text(max_size=20)
_items = st.builds(
    QueueItem,
    id=st.from_regex(r"[0-9a-f]{1,8}\.[0-9a-f]{1,3}", fullmatch=True),
    sender=_anything,
    recipient=_anything,
    attempts=st.integers(min_value=0, max_value=100),
    next_try=st.none() | st.integers(min_value=0, max_value=2**40),
    last_error=st.none() | _anything,
)
_entries = st.lists(
    st.builds(
        QueueEntry,
        item=_items,
        arrival=st.floats(allow_nan=True, allow_infinity=True),
        size=st.integers(min_value=0, max_value=2**40),
        locked=st.booleans(),
    ),
    max_size=6,
    unique_by=lambda entry: entry.item.id,
)
_now = st.floats(allow_nan=True, allow_infinity=True)
_quarantined = st.lists(
    st.builds(
        QuarantinedEntry,
        name=st.from_regex(r"q[0-9a-f]{1,8}\.[0-9a-f]{1,3}(-[2-9])?", fullmatch=True),
        item_id=st.from_regex(r"q[0-9a-f]{1,8}\.[0-9a-f]{1,3}", fullmatch=True),
        reason=_anything,
        since=st.floats(allow_nan=True, allow_infinity=True),
        item=st.none() | _items,
        arrival=st.none() | st.floats(allow_nan=True, allow_infinity=True),
        size=st.none() | st.integers(min_value=0, max_value=2**40),
    ),
    max_size=4,
    unique_by=lambda entry: entry.name,
)


@settings(max_examples=200, deadline=None)
@given(_entries, _now)
def test_text_listing_lists_every_item_once(entries: list[QueueEntry], now: float) -> None:
    """The text listing never raises and has exactly one ID line per item."""
    text = render_mailq(entries, now)
    ids = [line[len("ID\t: "):] for line in text.split("\n") if line.startswith("ID\t: ")]
    assert sorted(ids) == sorted(entry.item.id for entry in entries)
    if not entries:
        assert text == "Mail queue is empty\n"
    else:
        assert text.split("\n")[-2].startswith(f"-- {len(entries)} item")
    text.encode("utf-8")


@settings(max_examples=200, deadline=None)
@given(_entries, _now)
def test_json_lines_each_parse(entries: list[QueueEntry], now: float) -> None:
    """Every JSON line parses with json.loads and the lines name every item once."""
    out = render_mailq_json(entries, now)
    out.encode("utf-8")
    records = [json.loads(line) for line in out.split("\n")[:-1]] if out else []
    assert out == "" or out.endswith("\n")
    assert sorted(r["id"] for r in records) == sorted(entry.item.id for entry in entries)
    assert all(r["age"] >= 0 for r in records)


@settings(max_examples=200, deadline=None)
@given(_entries, _quarantined, _now)
def test_listings_name_queued_and_quarantined_items_once(
    entries: list[QueueEntry], held: list[QuarantinedEntry], now: float
) -> None:
    """With quarantined items the text lists every item once (queued first), never says
    the queue is empty, counts the quarantined ones in its summary, and the JSON lines
    all share one set of keys with quarantined set for exactly the quarantined ones."""
    text = render_mailq(entries, now, held)
    text.encode("utf-8")
    ids = [line[len("ID\t: "):] for line in text.split("\n") if line.startswith("ID\t: ")]
    assert ids[:len(entries)] == [e.item.id for e in sorted(
        entries, key=lambda e: (e.arrival if math.isfinite(e.arrival) else 0.0, e.item.id))]
    assert sorted(ids[len(entries):]) == sorted(e.name for e in held)
    if entries or held:
        summary = text.split("\n")[-2]
        assert summary.startswith(f"-- {len(entries)} item")
        assert (f"; {len(held)} quarantined" in summary) == bool(held)
    out = render_mailq_json(entries, now, held)
    records = [json.loads(line) for line in out.split("\n")[:-1]] if out else []
    assert len({frozenset(r) for r in records}) <= 1
    assert sorted(r["id"] for r in records if r["quarantined"]) == sorted(e.name for e in held)
    assert sum(not r["quarantined"] for r in records) == len(entries)


@settings(max_examples=200, deadline=None)
@given(_entries, _quarantined, _now, st.randoms(use_true_random=False))
def test_streamed_listings_are_the_whole_listings(
    entries: list[QueueEntry], held: list[QuarantinedEntry], now: float, shuffle: random.Random
) -> None:
    """A listing written piece by piece from a one-pass iterator of the items, oldest first
    (as a streaming mailq reads the spool), with the quarantined items asked for once at
    the end, is exactly the listing of the items in any order; text and JSON alike."""
    ordered = sorted(entries, key=lambda e: (e.arrival if math.isfinite(e.arrival) else 0.0,
                                             e.item.id))
    shuffled = list(entries)
    shuffle.shuffle(shuffled)
    read: list[bool] = []

    def one_pass() -> Iterator[QueueEntry]:
        read.clear()
        yield from ordered
        read.append(True)

    def quarantined() -> list[QuarantinedEntry]:
        assert read == [True]  # asked only once every queued item has been read
        return list(reversed(held))

    assert "".join(mailq_pieces(one_pass(), now, quarantined)) == render_mailq(
        shuffled, now, held)
    assert "".join(mailq_json_lines(one_pass(), now, quarantined)) == render_mailq_json(
        shuffled, now, held)
