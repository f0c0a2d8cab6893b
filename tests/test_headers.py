"""Tests for dma.core.headers: the header block, Received, added headers, Bcc, -t, folding."""

from __future__ import annotations

import base64
import email.header
import email.utils
import tracemalloc
from collections.abc import Iterable, Iterator
from dataclasses import replace

import pytest

from dma.core.errors import DataError, SoftwareError
from dma.core.headers import FIELD_LIMIT, HeaderStep, Stamp, make_message_id, received_header
from dma.core.lines import MAX_LINE_OCTETS, normalise_lines
from dma.core.version import PRODUCT, VERSION

STAMP = Stamp(
    queue_id="20ca94.1",
    sender="alice@example.org",
    username="alice",
    uid=1000,
    mailname="mail.example.org",
    system_hostname="box.local",
    date="Wed, 25 Nov 2026 02:44:17 +0000",
    message_id="<6b064b81.20ca94.5c2b77e@mail.example.org>",
)
ADDED = (
    b"Date: Wed, 25 Nov 2026 02:44:17 +0000\n"
    b"Message-Id: <6b064b81.20ca94.5c2b77e@mail.example.org>\n"
    b"From: <alice@example.org>\n"
)


def stepped(
    pieces: Iterable[bytes], stamp: Stamp = STAMP, *, collect: bool = False,
    limit: int = FIELD_LIMIT,
) -> tuple[bytes, bytes, HeaderStep]:
    """Run pieces through a HeaderStep as the shell does: (header output, body, the step)."""
    step = HeaderStep(stamp, collect_recipients=collect, field_limit=limit)
    head: list[bytes] = []
    body: list[bytes] = []
    for piece in pieces:
        if step.done:
            body.append(piece)
            continue
        fed = step.feed(piece)
        head.extend(fed.lines)
        body.append(fed.body)
    head.extend(step.finish())
    return b"".join(head), b"".join(body), step


def split(text: bytes, **options: bool) -> tuple[bytes, bytes]:
    """The header output and the body of the raw input ``text``."""
    head, body, _ = stepped(normalise_lines([text], ignore_dots=False), **options)
    return head, body


def processed(text: bytes, stamp: Stamp = STAMP, *, collect: bool = False) -> bytes:
    """Process the headers of ``text`` and return the spooled header block as bytes."""
    return stepped(normalise_lines([text], ignore_dots=False), stamp, collect=collect)[0]


def recipients(text: bytes) -> tuple[str, ...]:
    """The -t recipients of the message ``text``."""
    return stepped(normalise_lines([text], ignore_dots=False), collect=True)[2].recipients


# --- Received and Message-Id ---------------------------------------------------------


def test_received_header_has_the_c_dma_form() -> None:
    """The Received header follows the C dma's five-line layout with our product name."""
    assert received_header(STAMP) == (
        b"Received: from alice (uid 1000)\n"
        b"\t(envelope-from alice@example.org)\n"
        b"\tid 20ca94.1\n"
        + f"\tby mail.example.org ({PRODUCT} {VERSION} on box.local);\n".encode()
        + b"\tWed, 25 Nov 2026 02:44:17 +0000\n"
    )


def test_received_header_shows_the_null_sender_as_angle_brackets() -> None:
    """A null envelope sender appears as (envelope-from <>)."""
    assert b"\t(envelope-from <>)\n" in received_header(replace(STAMP, sender=""))


def test_received_header_refuses_line_breaks_in_stamp_values() -> None:
    """A stamp value holding a newline is refused rather than forging a header line."""
    with pytest.raises(DataError, match="username"):
        received_header(replace(STAMP, username="eve\nX-Forged: yes"))


def test_make_message_id_has_the_c_dma_form() -> None:
    """The Message-Id is <hex time.queue id.hex random@mail name>, like the behaviour notes."""
    assert (
        make_message_id(0x6B064B81, "20ca94", "5c2b77e", "test.example")
        == "<6b064b81.20ca94.5c2b77e@test.example>"
    )


@pytest.mark.parametrize(
    ("timestamp", "queue_id", "random_hex", "mailname"),
    [(-1, "q", "ab", "h"), (1, "q", "xyz", "h"), (1, "q", "", "h"), (1, "a b", "ab", "h"),
     (1, "q", "ab", "h>x"), (1, "q", "ab", "")],
)
def test_make_message_id_refuses_unusable_parts(
    timestamp: int, queue_id: str, random_hex: str, mailname: str
) -> None:
    """A negative time, non-hex random part or a part with blanks or brackets is a bug."""
    with pytest.raises(SoftwareError):
        make_message_id(timestamp, queue_id, random_hex, mailname)


# --- where the header block ends --------------------------------------------------------


def test_header_block_ends_at_the_empty_line() -> None:
    """The block ends at the first empty line: the step is done and the rest is body."""
    step = HeaderStep(STAMP, collect_recipients=False)
    assert step.feed(b"Subject: a\n").lines == (b"Subject: a\n",)
    assert step.feed(b"To: b@x\n").lines == (b"To: b@x\n",)
    assert not step.done
    assert step.feed(b"\n").lines == (*ADDED.splitlines(keepends=True), b"\n")
    assert step.done
    with pytest.raises(SoftwareError):
        step.feed(b"body\n")


def test_crlf_blank_line_now_ends_the_headers() -> None:
    """Deliberate difference: a CRLF empty line ends the headers, so Date etc. are added."""
    out = processed(b"Subject: a\r\n\r\nBcc: in-body@x\r\n")
    assert out.startswith(b"Subject: a\nDate: ")
    assert out.endswith(b"\n\n")


def test_leading_from_lines_are_dropped() -> None:
    """Leading mbox 'From ' and '>From ' lines (any case) are dropped; 'From:' is a header."""
    assert split(b"From alice Wed Nov 25\n>From x\nfrom y\nFrom: a@x\n\n") == (
        b"From: a@x\n" + ADDED.replace(b"From: <alice@example.org>\n", b"") + b"\n", b""
    )


def test_from_lines_after_the_first_header_start_the_body() -> None:
    """A 'From ' line after a header is no mbox separator and no field: the block closes
    before it and it is the first body line, kept as it is."""
    assert split(b"Subject: a\nFrom alice\n") == (b"Subject: a\n" + ADDED + b"\n", b"From alice\n")


def test_malformed_line_inside_the_block_starts_the_body() -> None:
    """A line that is neither 'name:' nor a continuation is where readers see the body
    begin: our fields and a blank line go before it, and it and what follows up to the
    first empty line are body, as they were."""
    head, body = split(b"Subject: a\n continued\nHello there\nTo: b@x\n\nbody\n")
    assert head == b"Subject: a\n continued\n" + ADDED + b"\n"
    assert body == b"Hello there\nTo: b@x\n\nbody\n"


def test_first_line_that_is_no_header_means_no_header_block() -> None:
    """Plain text such as cron output has no header block: our headers, a blank, the text."""
    assert split(b"hello\nSubject: x\n\n") == (ADDED + b"\n", b"hello\nSubject: x\n\n")


def test_leading_blank_line_is_an_empty_header_block() -> None:
    """A message starting with an empty line has no headers; the blank is the separator."""
    assert split(b"\nbody\n") == (ADDED + b"\n", b"body\n")


def test_first_line_cannot_be_a_continuation() -> None:
    """A first line starting with a blank is body, not the continuation of nothing."""
    assert split(b" indented\n") == (ADDED + b"\n", b" indented\n")


def test_headers_without_separator_end_at_eof() -> None:
    """Input that ends inside the headers gives the block, the added headers and a blank."""
    assert split(b"Subject: a\nTo: b@x") == (b"Subject: a\nTo: b@x\n" + ADDED + b"\n", b"")


def test_obsolete_blank_before_colon_is_a_header() -> None:
    """RFC 5322's obsolete 'Name :' form still counts as a header line."""
    assert processed(b"Subject : a\n\n").startswith(b"Subject : a\nDate: ")


# --- a header block of any length streams ------------------------------------------------


def filler(count: int) -> Iterator[bytes]:
    """``count`` short header lines, made one at a time (cron's key: value output)."""
    for number in range(count):
        yield b"X-Filler-%d: %s\n" % (number, b"y" * 50)


def test_header_block_of_any_length_streams_in_little_memory() -> None:
    """Ten MB of header lines without a blank line pass with a small, flat memory peak."""
    step = HeaderStep(STAMP, collect_recipients=True)
    out = 0
    tracemalloc.start()
    try:
        for line in filler(160_000):
            out += sum(map(len, step.feed(line).lines))
        out += sum(map(len, step.finish()))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out > 10_000_000
    assert peak < 64 * 1024


def test_long_block_with_a_bcc_near_the_end_loses_the_bcc() -> None:
    """A Bcc far down a block of over a MiB is still dropped, and -t still reads it."""
    text = b"".join(filler(30_000)) + b"Bcc: late@x\n\nbody\n"
    head, body, step = stepped(normalise_lines([text], ignore_dots=False), collect=True)
    assert len(head) > 1 << 20
    assert b"late@x" not in head and step.recipients == ("late@x",)
    assert head.endswith(ADDED + b"\n") and body == b"body\n"


def test_header_line_over_the_field_limit_is_a_data_error_naming_it() -> None:
    """One header line bigger than the field limit exits 65 naming its line number."""
    text = b"Subject: a\nX-Big: " + b"y " * 600 + b"\n\n"
    with pytest.raises(DataError, match="message line 2") as caught:
        split_limited(text, 1000)
    assert caught.value.exit_code == 65


def test_long_line_arriving_in_pieces_counts_against_the_limit() -> None:
    """A header line in several pieces is refused as soon as it passes the field limit."""
    step = HeaderStep(STAMP, collect_recipients=False, field_limit=1000)
    step.feed(b"Subject: a\n")
    step.feed(b"X-Big: " + b"y" * 600)
    with pytest.raises(DataError, match="message line 2"):
        step.feed(b"y" * 600)


def test_collected_field_over_the_limit_is_a_data_error() -> None:
    """With -t, a To field of many continuation lines over the limit is refused."""
    text = b"To: a@x,\n" + b" b@x,\n" * 300 + b"\n"
    with pytest.raises(DataError, match="To field"):
        stepped(normalise_lines([text], ignore_dots=False), collect=True, limit=1000)
    assert processed(text).count(b"b@x") == 300  # without -t it is only passed on


def split_limited(text: bytes, limit: int) -> tuple[bytes, bytes]:
    """``split`` with a small field limit."""
    head, body, _ = stepped(normalise_lines([text], ignore_dots=False), limit=limit)
    return head, body


def test_long_header_line_in_pieces_is_joined_and_folded() -> None:
    """A header line fed in pieces comes out folded as if it had arrived whole."""
    line = b"Subject: " + b" ".join(b"word%04d" % n for n in range(300)) + b"\n"
    whole = processed(line + b"\n")
    pieces = [line[:1000], line[1000:1001], line[1001:]]
    assert stepped([*pieces, b"\n"])[0] == whole


def test_long_first_line_that_is_no_header_streams_as_body() -> None:
    """A long first line in pieces that is no header starts the body at its first piece."""
    head, body, _ = stepped([b"x" * 5000, b"y" * 5000, b"z\n", b"more\n"])
    assert head == ADDED + b"\n"
    assert body == b"x" * 5000 + b"y" * 5000 + b"z\nmore\n"


def test_long_leading_from_line_in_pieces_is_dropped() -> None:
    """A leading mbox From_ line that arrives in pieces is dropped whole."""
    head, body, _ = stepped([b"From " + b"x" * 5000, b"y" * 10, b"z\n", b"Subject: s\n", b"\n"])
    assert head == b"Subject: s\n" + ADDED + b"\n" and body == b""


# --- HeaderStep: added headers ---------------------------------------------------


def test_missing_headers_are_added_in_order_before_the_separator() -> None:
    """Date, Message-Id and From are added in that order just before the blank line."""
    assert processed(b"Subject: hi\n\n") == (
        b"Subject: hi\n"
        b"Date: Wed, 25 Nov 2026 02:44:17 +0000\n"
        b"Message-Id: <6b064b81.20ca94.5c2b77e@mail.example.org>\n"
        b"From: <alice@example.org>\n"
        b"\n"
    )


def test_present_headers_are_not_added_again_whatever_their_case() -> None:
    """Header names match case-insensitively: existing DATE, message-ID and from stay alone."""
    text = b"DATE: x\nmessage-ID: <a@b>\nfrom: a@b\n\n"
    assert processed(text) == text


def test_headers_are_added_without_a_separator_unlike_the_c_dma() -> None:
    """Deliberate difference: headers-only input still gets Date, Message-Id, From and a blank."""
    out = processed(b"Subject: only headers")
    assert out.startswith(b"Subject: only headers\nDate: ")
    assert out.endswith(b"From: <alice@example.org>\n\n")


def test_empty_input_gets_the_added_headers() -> None:
    """Deliberate difference: empty input gets the added headers and a separator."""
    assert processed(b"").count(b"\n") == 4


def test_null_sender_gets_mailer_daemon_from() -> None:
    """With the null sender the added From is MAILER-DAEMON at the mail name."""
    out = processed(b"\n", replace(STAMP, sender=""))
    assert b"From: <MAILER-DAEMON@mail.example.org>\n" in out


@pytest.mark.parametrize(
    ("name", "rendered"),
    [
        ("Alice Liddell", b"Alice Liddell"),
        ("Liddell, Alice", b'"Liddell, Alice"'),
        ('Al "Ally" L. \\x', b'"Al \\"Ally\\" L. \\\\x"'),
        ("  spaced  ", b"spaced"),
    ],
)
def test_full_name_is_quoted_as_rfc5322_requires(name: str, rendered: bytes) -> None:
    """-F names that are atoms stay bare; others become quoted strings with escapes."""
    out = processed(b"\n", replace(STAMP, full_name=name))
    assert b"From: " + rendered + b" <alice@example.org>\n" in out


def test_full_name_round_trips_through_a_mail_parser() -> None:
    """The stdlib parses our From back into the same display name and address."""
    for name in ("Liddell, Alice", 'Al "Ally" \\ L.', "a.b (c)"):
        out = processed(b"\n", replace(STAMP, full_name=name))
        value = out.split(b"From: ", 1)[1].split(b"\n", 1)[0].decode()
        assert email.utils.parseaddr(value) == (name, "alice@example.org")


def test_non_ascii_full_name_becomes_encoded_words() -> None:
    """A non-ASCII -F name is written as RFC 2047 encoded words that decode back to it."""
    name = "Zoë Ångström-Łukasiewicz " * 6
    out = processed(b"\n", replace(STAMP, full_name=name))
    line = out.split(b"From: ", 1)[1].split(b" <alice@example.org>", 1)[0].decode("ascii")
    words = line.split(" ")
    assert all(w.startswith("=?utf-8?b?") and len(w) <= 75 for w in words)
    decoded = "".join(
        part.decode(charset or "ascii") if isinstance(part, bytes) else part
        for part, charset in email.header.decode_header(line)
    )
    assert decoded == name.strip()
    assert base64.b64decode(words[0][10:-2])  # each word is valid base64


def test_empty_full_name_gives_a_bare_from() -> None:
    """An empty -F name is the same as none."""
    assert b"From: <alice@example.org>\n" in processed(b"\n", replace(STAMP, full_name=""))


# --- HeaderStep: Bcc -------------------------------------------------------------


def test_bcc_and_its_continuations_are_removed() -> None:
    """Bcc fields vanish with their folded lines, whatever the case of the name."""
    text = b"To: a@x\nBcc: b@x,\n c@x,\n\td@x\nSubject: s\nbcc: e@x\n\n"
    out = processed(text)
    assert out.startswith(b"To: a@x\nSubject: s\nDate: ")
    assert b"@x," not in out and b"e@x" not in out


def test_bcc_is_removed_with_t_too_and_still_yields_recipients() -> None:
    """With -t the Bcc addresses become recipients but the field is still removed."""
    head, _, step = stepped(normalise_lines([b"To: a@x\nBcc: b@x,\n c@x\n\n"], ignore_dots=False),
                            collect=True)
    assert step.recipients == ("a@x", "b@x", "c@x")
    assert not any(line.lower().startswith(b"bcc") for line in head.splitlines())


def test_bcc_after_a_malformed_line_is_removed() -> None:
    """A Bcc field after a line that is no header, before the first empty line, is
    removed from what becomes the body (the C dma's header phase lasts that long)."""
    head, body = split(b"Subject: a\nbogus line\nBcc: secret@x.org,\n more@x.org\nX-A: b\n\n"
                       b"Bcc: stays@x.org\n")
    assert head == b"Subject: a\n" + ADDED + b"\n"
    assert body == b"bogus line\nX-A: b\n\nBcc: stays@x.org\n"


def test_fields_seen_before_a_malformed_line_are_not_added_again() -> None:
    """The fields the block already had before the malformed line are not added."""
    head, body = split(b"Date: Mon, 1 Jan 2024 00:00:00 +0000\nbad\nFrom: x@y\n\n")
    assert head.count(b"Date: ") == 1 and head.count(b"Message-Id: ") == 1
    assert head.count(b"From: ") == 1  # ours: the sender's is in the body now
    assert body == b"bad\nFrom: x@y\n\n"


def test_malformed_line_and_its_continuation_are_kept_as_they_are() -> None:
    """A malformed line in the block, with a continuation, reaches the spool unchanged."""
    head, body = split(b"Subject: a\nodd line\n more\nX-B: c\n\n")
    assert head == b"Subject: a\n" + ADDED + b"\n"
    assert body == b"odd line\n more\nX-B: c\n\n"


def test_long_malformed_line_is_body_and_not_folded() -> None:
    """A malformed line over 998 octets is a body line, passed whole to the body's
    long-line re-encoding instead of being folded like a header."""
    head, body = split(b"Subject: a\n" + b"z" * 2500 + b"\n\n")
    assert head == b"Subject: a\n" + ADDED + b"\n"
    assert body == b"z" * 2500 + b"\n\n"


def test_huge_tail_line_streams_in_pieces() -> None:
    """A tail line longer than the field limit is no error: it is body, piece by piece."""
    pieces = [b"Subject: a\n", b"x" * 5000, b"x" * 5000, b"x\n", b"\n"]
    head, body, _ = stepped(pieces, limit=1000)
    assert head == b"Subject: a\n" + ADDED + b"\n"
    assert body == b"x" * 10001 + b"\n\n"


def test_t_reads_fields_in_the_tail_and_drops_its_bcc() -> None:
    """-t reads To, Cc and Bcc between a malformed line and the first empty line; the
    Bcc field (with its continuation, also in pieces) is not spooled."""
    pieces = [b"To: a@x\n", b"oops\n", b"Cc: b@x\n", b"Bcc: c@x,", b" d@x,\n", b" e@x\n",
              b"\n", b"To: body@x\n"]
    head, body, step = stepped(pieces, collect=True)
    assert head == b"To: a@x\n" + ADDED + b"\n"
    assert step.recipients == ("a@x", "b@x", "c@x", "d@x", "e@x")
    assert body == b"oops\nCc: b@x\n\nTo: body@x\n"


def test_resent_bcc_is_kept() -> None:
    """Only the field named exactly Bcc is removed; Resent-Bcc is another field."""
    assert b"Resent-Bcc: r@x\n" in processed(b"Resent-Bcc: r@x\n\n")


# --- HeaderStep: -t recipients ---------------------------------------------------


def test_t_collects_to_cc_bcc_in_order() -> None:
    """-t reads To, Cc and Bcc in the order they appear, repeated fields included."""
    text = b"Cc: c@x\nTo: a@x, b@x\nSubject: s\nto: d@x\nBcc: e@x\n\n"
    assert recipients(text) == ("c@x", "a@x", "b@x", "d@x", "e@x")


def test_t_parses_real_address_lists() -> None:
    """Display names with blanks and commas, comments, groups and folding all parse."""
    text = (
        b'To: "Smith, John" <j@x.org>, Jane Roe <jane@y.org> (comment),\n'
        b"\tteam: p@z, q@z;\n"
        b"Cc: undisclosed-recipients:;\n\n"
    )
    assert recipients(text) == ("j@x.org", "jane@y.org", "p@z", "q@z")


def test_t_ignores_resent_headers() -> None:
    """Resent-To and Resent-Cc are not read by -t."""
    assert recipients(b"Resent-To: r@x\nResent-Cc: s@x\nTo: a@x\n\n") == ("a@x",)


def test_t_reads_the_last_field_at_eof() -> None:
    """Deliberate difference: a To: at the very end of the input is not lost."""
    assert recipients(b"To: a@x") == ("a@x",)


def test_t_bad_address_is_a_data_error_naming_it() -> None:
    """A malformed address raises DataError (exit 65) naming the header and the address."""
    with pytest.raises(DataError) as caught:
        recipients(b"To: good@x, a@x b@y\n\n")
    assert caught.value.exit_code == 65
    assert "To header" in str(caught.value)
    assert "a@x b@y" in str(caught.value)


def test_t_reads_to_after_a_malformed_line() -> None:
    """-t reads To, Cc and Bcc anywhere in the block, also after a line that is no header."""
    assert recipients(b"Subject: a\nbogus line\nTo: a@x\nBcc: b@x\n\nTo: body@x\n") == (
        "a@x", "b@x",
    )


def test_t_headers_in_the_body_are_not_read() -> None:
    """A To: line after the separator is body and gives no recipient."""
    assert recipients(b"To: a@x\r\n\r\nTo: body@x\r\n") == ("a@x",)


def test_without_t_no_recipients_are_collected() -> None:
    """Without -t the recipients stay empty even when To: is present."""
    _, _, step = stepped(normalise_lines([b"To: a@x\n\n"], ignore_dots=False))
    assert step.recipients == ()


# --- HeaderStep: folding ---------------------------------------------------------


def test_long_header_line_is_folded_at_a_blank() -> None:
    """A header line over 998 octets is split at blanks; unfolding restores it."""
    words = b" ".join(b"word%04d" % n for n in range(300))
    line = b"Subject: " + words
    out = processed(line + b"\n\n").split(b"\n")
    subject = out[: out.index(b"Date: Wed, 25 Nov 2026 02:44:17 +0000")]
    assert len(subject) > 1
    assert all(len(piece) <= MAX_LINE_OCTETS for piece in subject)
    assert all(piece[:1] == b" " for piece in subject[1:])
    assert b"".join(subject) == line


def test_long_header_without_blanks_is_encoded_not_refused() -> None:
    """A header line with no blank to fold at is re-encoded (SPEC 3.2) and decodes the same."""
    import email.header

    out = processed(b"X-Long: " + b"x" * 1200 + b"\n\n")
    lines = out.split(b"\n")
    assert all(len(line) <= MAX_LINE_OCTETS for line in lines)
    end = next(i for i, v in enumerate(lines[1:], 1) if v[:1] not in (b" ", b"\t"))
    field = b"".join(lines[:end])
    value = field.split(b":", 1)[1].decode()
    decoded = "".join(
        part.decode() if isinstance(part, bytes) else part
        for part, _charset in email.header.decode_header(value)
    )
    assert decoded.replace(" ", "") == "x" * 1200


def test_fold_never_leaves_a_blank_only_line() -> None:
    """Trailing blanks are not split off as a line of blanks: that is no valid fold."""
    line = b"X-Pad: " + b"y" * 995 + b" " * 10
    out = processed(line + b"\n\n")
    assert all(line.strip(b" \t") or line == b"" for line in out.split(b"\n")[:-2])
    assert all(len(line) <= MAX_LINE_OCTETS for line in out.split(b"\n"))


def test_long_added_from_is_folded_too() -> None:
    """A very long -F name is folded like any other header line."""
    out = processed(b"\n", replace(STAMP, full_name="Very Long " * 200))
    assert all(len(line) <= MAX_LINE_OCTETS for line in out.split(b"\n"))
    assert b"".join(out.split(b"\n")).count(b"<alice@example.org>") == 1


# --- HeaderStep: robustness ------------------------------------------------------


def test_stamp_values_with_line_breaks_are_refused() -> None:
    """A -F name with a newline cannot smuggle a header into the message."""
    with pytest.raises(DataError, match="full name"):
        processed(b"\n", replace(STAMP, full_name="Eve\nBcc: x@y"))


def test_finish_inside_a_line_is_a_software_error() -> None:
    """The input cannot end inside a line: normalise_lines ends every line, so it is a bug."""
    step = HeaderStep(STAMP, collect_recipients=False)
    step.feed(b"Subject: " + b"x" * 100)
    with pytest.raises(SoftwareError):
        step.finish()
