"""Q files: the C dma's format and reading rules, plus our extra keys."""

from __future__ import annotations

import pytest

from dma.core.errors import DataError, SoftwareError
from dma.core.queuefile import (
    MAX_ERROR_OCTETS,
    QueueItem,
    item_id_from_filename,
    make_item_id,
    message_id_of,
    one_line_error,
    parse_queue_file,
    render_queue_file,
)


def test_fresh_item_renders_exactly_like_the_c_dma() -> None:
    """A new item with no attempts gives exactly the C dma's three lines."""
    item = QueueItem(id="20ca94.556f80fe16e0", sender="joe@example.org", recipient="a@b.example")
    assert render_queue_file(item) == (
        b"ID: 20ca94.556f80fe16e0\nSender: joe@example.org\nRecipient: a@b.example\n"
    )


def test_extra_keys_follow_the_c_lines_in_order() -> None:
    """Attempts, next try and last error are written after the C dma's lines, in that order."""
    item = QueueItem("m.1", "s@x", "r@y", attempts=3, next_try=1700000000, last_error="451 busy")
    assert render_queue_file(item).split(b"\n")[3:] == [
        b"X-Attempts: 3",
        b"X-Next-Try: 1700000000",
        b"X-Last-Error: 451 busy",
        b"",
    ]


def test_null_sender_round_trips_as_an_empty_sender() -> None:
    """A bounce's empty sender is written as 'Sender: ' and read back as ''."""
    item = QueueItem("m.0", "", "r@y")
    data = render_queue_file(item)
    assert b"\nSender: \n" in data
    assert parse_queue_file(data, "Qm.0") == item


def test_full_item_round_trips() -> None:
    """An item with every field set reads back equal."""
    item = QueueItem("a1.2", "s@x", "r@y", attempts=7, next_try=42, last_error="550 no such user")
    assert parse_queue_file(render_queue_file(item), "Qa1.2") == item


def test_c_dma_file_parses() -> None:
    """A Q file written by the C dma parses with our fields at their defaults."""
    data = b"ID: 20ca94.556f80fe16e0\nSender: root@host\nRecipient: a@x,b@y\n"
    assert parse_queue_file(data, "Q20ca94.556f80fe16e0") == QueueItem(
        "20ca94.556f80fe16e0", "root@host", "a@x,b@y"
    )


def test_crlf_lines_and_leading_blanks_are_tolerated() -> None:
    """CRLF endings are stripped and blanks after the colon skipped, as the C dma skips them."""
    data = b"ID:\t m.1\r\nSender:   s@x\r\nRecipient:r@y\r\nX-Attempts: 2\r\n"
    assert parse_queue_file(data, "Q") == QueueItem("m.1", "s@x", "r@y", attempts=2)


def test_unknown_keys_are_ignored_and_later_lines_win() -> None:
    """Unknown keys are skipped and a repeated key takes its last value, like the C dma."""
    data = b"ID: m.1\nFoo: bar\nSender: a@x\nRecipient: r@y\nSender: b@x\n"
    assert parse_queue_file(data, "Q").sender == "b@x"


def test_value_keeps_colons_after_the_first() -> None:
    """Only the first colon splits key from value."""
    data = b"ID: m.1\nSender: s@x\nRecipient: r@y\nX-Last-Error: 421 4.3.0 a: b: c\n"
    assert parse_queue_file(data, "Q").last_error == "421 4.3.0 a: b: c"


def test_last_line_without_newline_is_read_whole() -> None:
    """A final line without LF is taken whole (we never write one; the C dma would cut a char)."""
    data = b"ID: m.1\nSender: s@x\nRecipient: r@y"
    assert parse_queue_file(data, "Q").recipient == "r@y"


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"Sender: s@x\nRecipient: r@y\n", "no ID"),
        (b"ID: \nSender: s@x\nRecipient: r@y\n", "empty ID"),
        (b"ID: m.1\nSender: s@x\n", "no Recipient"),
        (b"ID: m.1\nSender: s@x\nRecipient:   \n", "empty Recipient"),
        (b"ID: m.1\nRecipient: r@y\n", "no Sender"),
        (b"", "no ID"),
    ],
)
def test_missing_or_empty_required_keys_are_malformed(data: bytes, words: str) -> None:
    """A file without a non-empty ID or Recipient, or without Sender, raises DataError naming it."""
    with pytest.raises(DataError) as caught:
        parse_queue_file(data, "/spool/Qm.1")
    assert words in caught.value.message
    assert caught.value.where == "/spool/Qm.1"


def test_line_without_colon_is_malformed_with_its_line_number() -> None:
    """A line without ':' (blank lines included) raises DataError at file:line."""
    with pytest.raises(DataError) as caught:
        parse_queue_file(b"ID: m.1\n\nSender: s@x\nRecipient: r@y\n", "Qm.1")
    assert caught.value.where == "Qm.1:2"


def test_nul_octet_is_malformed() -> None:
    """A NUL inside a line raises DataError."""
    with pytest.raises(DataError) as caught:
        parse_queue_file(b"ID: m.1\nSender: s\0@x\nRecipient: r@y\n", "Qm.1")
    assert caught.value.where == "Qm.1:2"


def test_non_utf8_octets_survive_a_round_trip() -> None:
    """Octets that are not UTF-8 read back and render to the same octets."""
    data = b"ID: m.1\nSender: \xff\xfe@x\nRecipient: r@y\n"
    assert render_queue_file(parse_queue_file(data, "Q")) == data


def test_bad_numbers_in_our_keys_are_ignored() -> None:
    """A damaged X-Attempts or X-Next-Try is treated as unset, never strands the item."""
    data = b"ID: m.1\nSender: s\nRecipient: r\nX-Attempts: -3\nX-Next-Try: soon\n"
    item = parse_queue_file(data, "Q")
    assert (item.attempts, item.next_try) == (0, None)


def test_oversized_file_is_malformed() -> None:
    """A file far bigger than any Q file is refused without parsing it."""
    data = b"ID: m.1\nSender: s\nRecipient: r\n" + b"X: y\n" * 20000
    with pytest.raises(DataError, match="octets"):
        parse_queue_file(data, "Q")


@pytest.mark.parametrize("field", ["id", "sender", "recipient"])
@pytest.mark.parametrize("bad", ["\r", "\n", "\0"])
def test_render_refuses_line_breaks_and_nul(field: str, bad: str) -> None:
    """CR, LF or NUL in id, sender or recipient raise SoftwareError instead of forging keys."""
    values = {"id": "m.1", "sender": "s@x", "recipient": "r@y"}
    values[field] = f"a{bad}Recipient: evil@x"
    with pytest.raises(SoftwareError):
        render_queue_file(QueueItem(**values))


def test_render_refuses_lines_the_c_dma_would_cut() -> None:
    """A recipient making a line over 998 octets raises SoftwareError."""
    with pytest.raises(SoftwareError, match="octets"):
        render_queue_file(QueueItem("m.1", "s", "r" * 990))
    assert render_queue_file(QueueItem("m.1", "s", "r" * 987)).count(b"\n") == 3


def test_render_refuses_values_starting_with_a_blank() -> None:
    """A sender with a leading blank would read back without it, so it is refused."""
    with pytest.raises(SoftwareError, match="blank"):
        render_queue_file(QueueItem("m.1", " s@x", "r@y"))


def test_render_refuses_empty_id_or_recipient() -> None:
    """Items the C dma would call malformed are never written."""
    with pytest.raises(SoftwareError):
        render_queue_file(QueueItem("", "s", "r"))
    with pytest.raises(SoftwareError):
        render_queue_file(QueueItem("m.1", "s", ""))


def test_last_error_is_made_one_line() -> None:
    """CR, LF, tabs and NUL in the last error become spaces and leading blanks go."""
    assert one_line_error("\r\n 421 try\r\nlater\t\0x") == "421 try  later  x"


def test_last_error_is_cut_without_splitting_a_character() -> None:
    """A long last error is cut to at most 900 octets at a character boundary."""
    text = "é" * 1000  # two octets each
    cut = one_line_error(text)
    assert len(cut.encode()) == MAX_ERROR_OCTETS
    text = "a" + "€" * 400  # 1 + 3 * n octets: 900 falls inside a character
    cut = one_line_error(text)
    assert cut == "a" + "€" * 299
    written = render_queue_file(QueueItem("m.1", "s", "r", last_error=text))
    assert parse_queue_file(written, "Q").last_error == cut


def test_item_id_from_filename() -> None:
    """Only Q<id> names with file-name-safe ids give an id."""
    assert item_id_from_filename("Qabc.1") == "abc.1"
    assert item_id_from_filename("Q20ca94.556f80fe16e0") == "20ca94.556f80fe16e0"
    for name in ("Mabc.1", "tmp_q123", "Q", "Q.hidden", "Qa/b", "Qa b", "qabc.1", "flush"):
        assert item_id_from_filename(name) is None, name


def test_item_and_message_ids() -> None:
    """Item ids are <message>.<hex index> and the message id is what comes before the last dot."""
    assert make_item_id("1f2e", 26) == "1f2e.1a"
    assert message_id_of("1f2e.1a") == "1f2e"
    assert message_id_of("nodot") == "nodot"
