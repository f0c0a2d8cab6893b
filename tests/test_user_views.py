"""Each user's view of the queue (core/user_views.py; SPEC 8.2 queue listing, issue 9
item 4): root writes one per uid with that uid's items only; the user's mailq reads it."""

from __future__ import annotations

import json

import pytest

from dma.core.errors import DataError
from dma.core.mailq import QueueEntry, render_mailq, render_mailq_json
from dma.core.queuefile import QueueItem
from dma.core.user_views import (
    choose_own,
    group_by_uid,
    parse_view,
    render_view,
    user_views,
    views_to_remove,
)

NOW = 1_700_000_000.0


def entry(item_id: str, uid: int | None, age: float = 10.0, **facts: object) -> QueueEntry:
    """An entry of ``uid``'s (None: root's own mail) that arrived ``age`` seconds ago."""
    item = QueueItem(item_id, f"u{uid}@x", f"to-{item_id}@y", uid=uid, **facts)  # type: ignore[arg-type]
    return QueueEntry(item=item, arrival=NOW - age, size=123)


QUEUE = [entry("a.0", 1001, 5), entry("b.0", 1002), entry("c.0", None), entry("a.1", 1001, 50),
         entry("d.0", 0)]


def test_each_uid_gets_its_own_items_and_nothing_else() -> None:
    """The views split the queue by X-Uid; items without one are in no view; each view
    names no other user's sender, recipient or id."""
    views = user_views(QUEUE, NOW)
    assert sorted(views) == [0, 1001, 1002]
    alice = parse_view(views[1001], "users/1001")
    assert [e.item.id for e in alice.entries] == ["a.1", "a.0"]  # oldest first
    assert (alice.uid, alice.written) == (1001, NOW)
    for other in ("b.0", "c.0", "d.0", "u1002", "uNone", "u0@"):
        assert other.encode() not in views[1001]


def test_a_view_lists_as_the_spool_would() -> None:
    """mailq's text and JSON from a view read back are those of the same items listed
    from the spool (ages computed at listing time, not when the view was written)."""
    mine = [entry("a.0", 1001, 5, attempts=2, next_try=int(NOW) + 300, last_error="4.0.0 busy"),
            entry("a.1", 1001, 50)]
    view = parse_view(render_view(1001, mine, NOW - 100), "v")
    later = NOW + 60
    assert render_mailq(view.entries, later) == render_mailq(mine, later)
    assert render_mailq_json(view.entries, later) == render_mailq_json(mine, later)


def test_octets_that_are_not_utf8_travel_exactly() -> None:
    """A sender with octets that are not UTF-8 (surrogate escapes) is written in ASCII and
    reads back the same, so the text listing shows \\xNN as root's does."""
    odd = QueueEntry(QueueItem("a.0", "caf\udce9@x", "b\u00e9@y", uid=7), NOW, 1)
    data = render_view(7, [odd], NOW)
    assert data.isascii()
    assert parse_view(data, "v").entries == (odd,)
    assert "caf\\xe9@x" in render_mailq(parse_view(data, "v").entries, NOW)


def test_the_file_is_json_lines_with_a_counting_header() -> None:
    """The header names the version, the uid, the item count and the time written; each
    item line holds mailq -j's keys."""
    lines = render_view(1001, [entry("a.0", 1001)], NOW).decode().splitlines()
    assert json.loads(lines[0]) == {"pydma_queue_view": 1, "uid": 1001, "items": 1,
                                    "written": NOW}
    assert set(json.loads(lines[1])) == set(json.loads(render_mailq_json([entry("a.0", 1)],
                                                                        NOW)))


def test_views_of_uids_without_items_are_removed() -> None:
    """Names of uids with nothing queued go; those with items stay; other names are not ours."""
    views = user_views(QUEUE, NOW)
    assert views_to_remove(["1001", "1003", "0", "lost+found", "12a", "\u0661"], views) == [
        "1003"]


def test_grouping_is_by_submitter() -> None:
    """Items are grouped by X-Uid only."""
    assert {uid: [e.item.id for e in group] for uid, group in group_by_uid(QUEUE).items()} == {
        1001: ["a.1", "a.0"], 1002: ["b.0"], 0: ["d.0"]}


GOOD = render_view(1001, [entry("a.0", 1001)], NOW)


@pytest.mark.parametrize(("data", "says"), [
    (b"", "cut short"),
    (GOOD[:-1], "cut short"),
    (GOOD.replace(b'"items": 1', b'"items": 2'), "says 2 items, it holds 1"),
    (GOOD.replace(b'"pydma_queue_view": 1', b'"pydma_queue_view": 2'), "not a queue view"),
    (GOOD.replace(b'"uid": 1001', b'"uid": -1'), "uid is not a whole number"),
    (GOOD.replace(b'"uid": 1001', b'"uid": true'), "uid is not a whole number"),
    (GOOD.replace(b'"size": 123', b'"size": "123"'), "size is not a whole number"),
    (GOOD.replace(b'"id": "a.0"', b'"id": ""'), "id is not text that is not empty"),
    (GOOD.replace(b'"locked": false', b'"locked": 0'), "locked is not true or false"),
    (GOOD.replace(b'"last_error": null', b'"last_error": 5'), "last_error is not text"),
    (GOOD.replace(b'"arrival": ', b'"arrival": "x", "y": '), "arrival is not a number"),
    (b"[1]\n", "no JSON object"),
    (GOOD.replace(b'"items": 1', b'"items": 2') + b"{\n", "no JSON"),
    (b"[" * 100000 + b"\n", "no JSON"),
    (GOOD.replace(b"a.0", b"a\xff0"), "not ASCII"),
])
def test_what_is_wrong_with_a_view_is_named(data: bytes, says: str) -> None:
    """A damaged view is a DataError saying what, and where."""
    with pytest.raises(DataError) as raised:
        parse_view(data, "users/1001/queue")
    assert says in str(raised.value)
    assert str(raised.value).startswith("users/1001/queue")


def test_a_users_words_name_their_own_items() -> None:
    """-Qd words are item ids, message ids (every item of it) or ALL, among the user's
    own items; words that name none of them are given back."""
    mine = [entry("m1.0", 7), entry("m1.1", 7), entry("m2.0", 7)]
    assert choose_own(mine, ["m1"], "ALL") == (["m1.0", "m1.1"], [])
    assert choose_own(mine, ["m2.0", "b.0", "zz"], "ALL") == (["m2.0"], ["b.0", "zz"])
    assert choose_own(mine, ["ALL"], "ALL") == (["m1.0", "m1.1", "m2.0"], [])
    assert choose_own([], ["ALL"], "ALL") == ([], [])
