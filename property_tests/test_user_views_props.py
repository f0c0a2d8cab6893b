"""Properties of the users' queue views: each holds its uid's items and no one else's,
reads back to the same listing, and no input makes the reader raise anything but
DataError."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from dma.core.errors import DataError
from dma.core.mailq import QueueEntry, render_mailq, render_mailq_json
from dma.core.queuefile import QueueItem
from dma.core.user_views import parse_view, user_views

_anything = st.text(max_size=20)
_entries = st.lists(
    st.builds(
        QueueEntry,
        item=st.builds(
            QueueItem,
            id=st.from_regex(r"[0-9a-f]{1,8}\.[0-9a-f]{1,3}", fullmatch=True),
            sender=_anything,
            recipient=_anything.filter(bool),
            attempts=st.integers(min_value=0, max_value=100),
            next_try=st.none() | st.integers(min_value=0, max_value=2**40),
            last_error=st.none() | _anything,
            uid=st.none() | st.integers(min_value=0, max_value=5),
        ),
        arrival=st.floats(allow_nan=True, allow_infinity=True),
        size=st.integers(min_value=0, max_value=2**40),
    ),
    max_size=8,
    unique_by=lambda entry: entry.item.id,
)
_times = st.floats(allow_nan=True, allow_infinity=True)


@settings(max_examples=300, deadline=None)
@given(_entries, _times, _times)
def test_each_view_is_its_uids_items_listed_alike(entries: list[QueueEntry], written: float,
                                                  now: float) -> None:
    """Every item with a uid is in exactly that uid's view, no other item is in any, and
    the view lists (text and JSON) as the same items listed from the spool would."""
    views = user_views(entries, written)
    assert set(views) == {e.item.uid for e in entries if e.item.uid is not None}
    for uid, data in views.items():
        view = parse_view(data, "v")
        assert view.uid == uid
        assert (view.written == written) or not math.isfinite(written)
        own = [e for e in entries if e.item.uid == uid]
        assert sorted(e.item.id for e in view.entries) == sorted(e.item.id for e in own)
        assert render_mailq(view.entries, now) == render_mailq(own, now)
        assert render_mailq_json(view.entries, now) == render_mailq_json(own, now)


_lines = st.sampled_from([
    b'{"pydma_queue_view": 1, "uid": 3, "items": 1, "written": 5}',
    b'{"pydma_queue_view": 1, "uid": 3, "items": 0, "written": null}',
    b'{"id": "a.0", "sender": "", "recipient": "r", "attempts": 0, "size": 1, "arrival": 1}',
    b'{"id": "a.0", "recipient": "r", "attempts": -1, "size": 1, "next_try": 1.5}',
    b'{"id": 1, "locked": 1, "last_error": [], "arrival": NaN}',
    b"[]", b"{}", b"null", b'"x"', b"{", b"\xff", b"",
]) | st.binary(max_size=40)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300) | st.lists(_lines, max_size=5).map(
    lambda lines: b"".join(line + b"\n" for line in lines)))
def test_any_bytes_give_a_view_or_a_data_error(data: bytes) -> None:
    """parse_view never raises anything but DataError, whatever the file holds."""
    try:
        view = parse_view(data, "v")
    except DataError:
        return
    assert all(entry.item.uid == view.uid for entry in view.entries)
