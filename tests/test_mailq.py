"""Queue listings: the C dma's text blocks plus ours, and JSON lines."""

from __future__ import annotations

import json

from dma.core.mailq import QueueEntry, render_mailq, render_mailq_json
from dma.core.queuefile import QueueItem

NOW = 1_700_000_000.0


def entry(
    item_id: str,
    age: float,
    size: int = 100,
    *,
    attempts: int = 0,
    next_try: int | None = None,
    last_error: str | None = None,
    locked: bool = False,
) -> QueueEntry:
    """An entry that arrived ``age`` seconds before NOW."""
    item = QueueItem(item_id, "s@x", f"{item_id}@y", attempts, next_try, last_error)
    return QueueEntry(item=item, arrival=NOW - age, size=size, locked=locked)


def test_empty_queue_says_so() -> None:
    """An empty queue prints the C dma's one line, and JSON prints nothing."""
    assert render_mailq([], NOW) == "Mail queue is empty\n"
    assert render_mailq_json([], NOW) == ""


def test_single_item_block_and_summary() -> None:
    """One item gives the C dma's three lines, our age and size, then a singular summary."""
    text = render_mailq([entry("a.0", 2 * 3600 + 13 * 60, 2048)], NOW)
    assert text == (
        "ID\t: a.0\nFrom\t: s@x\nTo\t: a.0@y\n"
        "Age\t: 2h13m\nSize\t: 2048\n"
        "-- 1 item, 2048 octets, oldest 2h13m\n"
    )


def test_items_sorted_by_arrival_and_separated() -> None:
    """Blocks come oldest first, separated by '--' lines, with a summary over all items."""
    text = render_mailq([entry("new.0", 60), entry("old.0", 7980), entry("mid.0", 600)], NOW)
    blocks = text.split("--\n")
    assert [b.splitlines()[0] for b in blocks] == ["ID\t: old.0", "ID\t: mid.0", "ID\t: new.0"]
    assert text.endswith("-- 3 items, 300 octets, oldest 2h13m\n")


def test_retry_facts_and_lock_status_are_shown() -> None:
    """Tries, next try, last error and 'being delivered' appear when set."""
    e = entry("a.0", 10, attempts=3, next_try=int(NOW) + 300, last_error="451 busy", locked=True)
    lines = render_mailq([e], NOW).splitlines()
    assert lines[5:9] == [
        "Tries\t: 3",
        "Next\t: in 5m",
        "Error\t: 451 busy",
        "Status\t: being delivered",
    ]


def test_past_retry_time_shows_now() -> None:
    """A retry time already passed shows as 'now'."""
    assert "Next\t: now\n" in render_mailq([entry("a.0", 10, next_try=int(NOW) - 5)], NOW)


def test_null_sender_shows_as_angle_brackets() -> None:
    """A bounce's null sender is listed as <>."""
    e = QueueEntry(QueueItem("b.0", "", "r@y"), arrival=NOW, size=1)
    assert "From\t: <>\n" in render_mailq([e], NOW)


def test_control_characters_are_not_sent_to_the_terminal() -> None:
    """Escape sequences from a Q file or a server reply are shown as '?'."""
    e = entry("a.0", 0, last_error="550 \x1b[31mred")
    assert "\x1b" not in render_mailq([e], NOW)
    assert "Error\t: 550 ?[31mred\n" in render_mailq([e], NOW)


def test_future_arrival_counts_as_zero_age() -> None:
    """A clock step backwards gives age 0s rather than a negative age."""
    assert "Age\t: 0s\n" in render_mailq([entry("a.0", -50)], NOW)


def test_json_lines_hold_the_same_facts() -> None:
    """Each JSON line is one item with its id, message id, times, size and retry facts."""
    e = entry("abc.1", 90.5, 512, attempts=2, next_try=5, last_error="x", locked=True)
    lines = render_mailq_json([e, entry("abd.0", 10)], NOW).splitlines()
    assert len(lines) == 2
    record = json.loads(lines[0])
    assert record == {
        "id": "abc.1",
        "message_id": "abc",
        "sender": "s@x",
        "recipient": "abc.1@y",
        "arrival": NOW - 90.5,
        "age": 90,
        "size": 512,
        "attempts": 2,
        "next_try": 5,
        "last_error": "x",
        "locked": True,
    }
    assert json.loads(lines[1])["last_error"] is None


def test_json_keeps_non_ascii_readable() -> None:
    """Non-ASCII addresses appear as themselves, not as escapes."""
    e = QueueEntry(QueueItem("a.0", "jörg@x", "r@y"), arrival=NOW, size=1)
    assert "jörg@x" in render_mailq_json([e], NOW)
