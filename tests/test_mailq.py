"""Queue listings: the C dma's text blocks plus ours, and JSON lines."""

from __future__ import annotations

import json

from dma.core.mailq import QuarantinedEntry, QueueEntry, render_mailq, render_mailq_json
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
    """Escape sequences from a Q file or a server reply are shown escaped, as in the log."""
    e = entry("a.0", 0, last_error="550 \x1b[31mred")
    assert "\x1b" not in render_mailq([e], NOW)
    assert "Error\t: 550 \\x1b[31mred\n" in render_mailq([e], NOW)


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
        "quarantined": False,
        "damage": None,
        "quarantined_at": None,
    }
    assert json.loads(lines[1])["last_error"] is None


def test_json_keeps_non_ascii_readable() -> None:
    """Non-ASCII addresses appear as themselves, not as escapes."""
    e = QueueEntry(QueueItem("a.0", "jörg@x", "r@y"), arrival=NOW, size=1)
    assert "jörg@x" in render_mailq_json([e], NOW)


def test_json_writes_octets_that_are_not_utf8_as_replacement_characters() -> None:
    """Octets that were not UTF-8 (lone surrogates from surrogateescape) become U+FFFD in the
    JSON, next to non-ASCII text kept as itself, so the line is valid UTF-8."""
    e = QueueEntry(QueueItem("a.0", "caf\udce9@x", "jörg\udcff\udc80@y", 0, None, "\udcfe"),
                   arrival=NOW, size=1)
    out = render_mailq_json([e], NOW)
    out.encode("utf-8")
    record = json.loads(out)
    assert (record["sender"], record["recipient"], record["last_error"]) == (
        "caf\ufffd@x", "jörg\ufffd\ufffd@y", "\ufffd")


def quarantined(name: str, since_age: float, *, item: QueueItem | None = None,
                arrival_age: float | None = None, size: int | None = None) -> QuarantinedEntry:
    """A quarantined entry moved ``since_age`` seconds before NOW."""
    arrival = None if arrival_age is None else NOW - arrival_age
    return QuarantinedEntry(name=name, item_id=name.split("-")[0], reason="its message file "
                            f"M{name} is a FIFO", since=NOW - since_age, item=item,
                            arrival=arrival, size=size)


def test_quarantined_items_follow_with_their_reason() -> None:
    """Quarantined items come after the queued ones, each a C-style block with a Status
    line that says since when and why, and the summary counts them and says what to do."""
    moved = quarantined("q.0", 300, item=QueueItem("q.0", "", "r@y"), arrival_age=600, size=9)
    text = render_mailq([entry("a.0", 60)], NOW, [moved])
    blocks = text.split("--\n")
    assert blocks[0].startswith("ID\t: a.0\n")
    assert blocks[1] == (
        "ID\t: q.0\nFrom\t: <>\nTo\t: r@y\nAge\t: 10m\nSize\t: 9\n"
        "Status\t: quarantined 5m ago: its message file Mq.0 is a FIFO\n"
        "-- 1 item, 100 octets, oldest 1m; 1 quarantined "
        "(dma -Qr ID puts one back after a fix, dma -Qd ID deletes it)\n"
    )


def test_only_quarantined_items_are_no_empty_queue() -> None:
    """A queue holding only a quarantined item whose Q cannot be read is not 'empty': its
    block says the sender and recipient are unreadable."""
    text = render_mailq([], NOW, [quarantined("q.0", 5)])
    assert "Mail queue is empty" not in text
    assert "From\t: (unreadable)\nTo\t: (unreadable)\nStatus\t: quarantined 5s ago" in text
    assert text.endswith("-- 0 items, 0 octets; 1 quarantined "
                         "(dma -Qr ID puts one back after a fix, dma -Qd ID deletes it)\n")


def test_json_lists_quarantined_items_with_the_same_keys() -> None:
    """A quarantined item's JSON line has every key of a queued one, quarantined true, the
    reason as damage, and null for what its files no longer tell."""
    lines = render_mailq_json([entry("a.0", 1)], NOW, [quarantined("q.0-2", 30)]).splitlines()
    queued, moved = (json.loads(line) for line in lines)
    assert set(queued) == set(moved)
    assert moved["id"] == "q.0-2" and moved["message_id"] == "q"
    assert (moved["quarantined"], moved["quarantined_at"]) == (True, NOW - 30)
    assert moved["damage"] == "its message file Mq.0-2 is a FIFO"
    assert (moved["sender"], moved["recipient"], moved["size"], moved["age"]) == (
        None, None, None, None)
