"""mbox records: separator line, mboxrd quoting, the closing blank line (SPEC 5.2)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from dma.core.errors import DataError
from dma.core.mbox import from_line, mbox_record, quote_line, unquote_line

MOMENT = datetime(2026, 11, 25, 2, 45, 6)

# An equivalent of the C dma's test/quote.rfc2822 (dma-behaviour.md section 8),
# with its mboxrd rendering written out by hand.
QUOTE_INPUT = (
    b"Received: from localhost (localhost [127.0.0.1])\n"
    b"\tby test.example (DragonFly Mail Agent v0.14); Wed, 25 Nov 2026 02:45:06 +0000\n"
    b"From: Quoter <quoter@test.example>\n"
    b"To: root@test.example\n"
    b"Subject: quoting test\n"
    b"\n"
    b"From what I have heard, this line needs quoting.\n"
    b"From his point of view, so does this one.\n"
    b">From the quote, one more.\n"
    b">>>From everywhere, one more still.\n"
    b"Fromtal is no separator.\n"
    b"> From is no separator either.\n"
    b"From: is a header-looking line, untouched.\n"
    b"\n"
    b"From the end.\n"
)
QUOTE_EXPECTED = (
    b"From root@test.example Wed Nov 25 02:45:06 2026\n"
    b"Received: from localhost (localhost [127.0.0.1])\n"
    b"\tby test.example (DragonFly Mail Agent v0.14); Wed, 25 Nov 2026 02:45:06 +0000\n"
    b"From: Quoter <quoter@test.example>\n"
    b"To: root@test.example\n"
    b"Subject: quoting test\n"
    b"\n"
    b">From what I have heard, this line needs quoting.\n"
    b">From his point of view, so does this one.\n"
    b">>From the quote, one more.\n"
    b">>>>From everywhere, one more still.\n"
    b"Fromtal is no separator.\n"
    b"> From is no separator either.\n"
    b"From: is a header-looking line, untouched.\n"
    b"\n"
    b">From the end.\n"
    b"\n"
)


def test_quote_rfc2822_golden() -> None:
    """The quote.rfc2822 equivalent renders exactly as the hand-written mboxrd output."""
    lines = QUOTE_INPUT.splitlines(keepends=True)
    assert b"".join(mbox_record(lines, "root@test.example", MOMENT)) == QUOTE_EXPECTED


def test_from_line_matches_c_dma_example() -> None:
    """The separator line has the C dma's shape: From, sender, space, ctime, newline."""
    assert from_line("root@test.example", MOMENT) == (
        b"From root@test.example Wed Nov 25 02:45:06 2026\n"
    )


def test_from_line_null_sender_is_mailer_daemon() -> None:
    """An empty (bounce) sender is written as MAILER-DAEMON."""
    assert from_line("", MOMENT).startswith(b"From MAILER-DAEMON Wed ")


def test_from_line_pads_day_with_space() -> None:
    """Single-digit days are space padded as ctime(3) does (``Nov  5``)."""
    line = from_line("a@b", datetime(2026, 11, 5, 7, 8, 9))
    assert line == b"From a@b Thu Nov  5 07:08:09 2026\n"


def test_from_line_every_weekday_and_month() -> None:
    """Weekday and month names follow the date across a whole year, in English."""
    day = datetime(2024, 1, 1)
    for offset in range(0, 366, 7):
        moment = day + timedelta(days=offset)
        expected = moment.strftime("%a %b %d %H:%M:%S %Y")
        expected = expected[:8] + f"{moment.day:2d}" + expected[10:]
        assert from_line("x@y", moment) == f"From x@y {expected}\n".encode()


def test_from_line_uses_the_given_wall_clock() -> None:
    """The moment's own wall-clock fields are printed; the caller picks the zone."""
    aware = datetime(2026, 1, 2, 23, 59, 59, tzinfo=timezone(timedelta(hours=-5)))
    assert from_line("x@y", aware) == b"From x@y Fri Jan  2 23:59:59 2026\n"


@pytest.mark.parametrize("sender", ["a b@c", "a\nFrom evil@x@c", "a\tb\r@c", "a\x00b@c"])
def test_from_line_sender_stays_one_field(sender: str) -> None:
    """Spaces and control bytes in a sender become ``_`` so the separator stays one line."""
    line = from_line(sender, MOMENT)
    assert line.count(b"\n") == 1
    assert len(line.split(b" ")) == 7  # From, sender, and the five ctime fields
    assert line.split(b" ")[1] == sender.encode().translate(
        bytes.maketrans(b" \n\t\r\x00", b"_____")
    )


def test_from_line_keeps_utf8_sender() -> None:
    """An SMTPUTF8 sender goes on the separator line as UTF-8."""
    assert from_line("jörg@exämple.org", MOMENT).split(b" ")[1] == "jörg@exämple.org".encode()


@pytest.mark.parametrize(
    ("line", "quoted"),
    [
        (b"From x\n", b">From x\n"),
        (b">From x\n", b">>From x\n"),
        (b">>>From x\n", b">>>>From x\n"),
        (b"From \n", b">From \n"),
        (b"From x", b">From x"),
        (b"From:x\n", b"From:x\n"),
        (b"Fromtal\n", b"Fromtal\n"),
        (b"> From\n", b"> From\n"),
        (b" From x\n", b" From x\n"),
        (b"from x\n", b"from x\n"),
        (b"From\n", b"From\n"),
        (b"\n", b"\n"),
        (b"", b""),
    ],
)
def test_quote_and_unquote_line(line: bytes, quoted: bytes) -> None:
    """Exactly the lines matching ``^>*From `` gain one ``>``, and unquoting removes it."""
    assert quote_line(line) == quoted
    assert unquote_line(quoted) == line


def test_unquote_leaves_unquoted_lines() -> None:
    """Unquoting a line with no ``>`` before ``From `` leaves it as it is."""
    assert unquote_line(b"From x\n") == b"From x\n"
    assert unquote_line(b">Fromage\n") == b">Fromage\n"


def test_record_adds_missing_final_newline() -> None:
    """A last line without LF gets one, so the blank line really ends the record."""
    out = b"".join(mbox_record([b"Subject: x\n", b"\n", b"From the end"], "a@b", MOMENT))
    assert out.endswith(b"\n>From the end\n\n")


def test_record_of_empty_message() -> None:
    """An empty message is just the separator line and the blank line."""
    assert b"".join(mbox_record([], "a@b", MOMENT)) == from_line("a@b", MOMENT) + b"\n"


def test_record_skips_empty_items() -> None:
    """Empty items carry no line and add nothing to the record."""
    out = b"".join(mbox_record([b"", b"a\n", b"", b"b\n"], "a@b", MOMENT))
    assert out == from_line("a@b", MOMENT) + b"a\nb\n\n"


def test_record_rejects_embedded_line_break() -> None:
    """An item hiding a line break mid-way raises DataError naming the line number."""
    with pytest.raises(DataError, match="line 2"):
        list(mbox_record([b"ok\n", b"x\nFrom evil\n"], "a@b", MOMENT))


def test_record_keeps_crlf_bytes() -> None:
    """Bytes other than the quoting are copied as they are, CR included."""
    out = b"".join(mbox_record([b"a\r\n", b"From b\r\n"], "a@b", MOMENT))
    assert out.endswith(b"a\r\n>From b\r\n\n")
