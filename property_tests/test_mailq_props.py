"""Properties of queue listings: they never fail and list every item exactly once."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from dma.core.mailq import QueueEntry, render_mailq, render_mailq_json
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
