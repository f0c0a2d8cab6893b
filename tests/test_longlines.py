"""Tests for dma.core.longlines: re-encoding lines over 998 octets without losing content."""

from __future__ import annotations

import base64
import binascii
import email
import email.header
import itertools
import quopri
import re
import tracemalloc
from collections.abc import Iterator
from email.message import Message

import pytest

from dma.core.errors import DataError, SoftwareError
from dma.core.longlines import MAX_LINE_OCTETS, LongParts, find_long_parts, reencode

NOTHING = LongParts(frozenset(), frozenset())


def split(message: bytes) -> list[bytes]:
    """LF lines, as the shell reads them back from the spool."""
    return message.splitlines(keepends=True)


def run(message: bytes) -> bytes:
    """Both passes, as the shell runs them."""
    lines = split(message)
    return b"".join(reencode(lines, find_long_parts(lines)))


def longest(message: bytes) -> int:
    return max((len(line) for line in message.split(b"\n")), default=0)


def leaf_payloads(message: bytes) -> list[bytes | None]:
    parsed = email.message_from_bytes(message)
    return [part.get_payload(decode=True) for part in parsed.walk() if not part.is_multipart()]


def header_text(parsed: Message, name: str) -> bytes:
    """The decoded value of a header, unfolded, as bytes (latin-1 for plain text)."""
    raw = parsed[name]
    assert raw is not None
    unfolded = raw.replace("\n", "")
    return b"".join(
        chunk if isinstance(chunk, bytes) else chunk.encode("latin-1")
        for chunk, _charset in email.header.decode_header(unfolded)
    )


def between(message: bytes, start: bytes, end: bytes) -> bytes:
    """The bytes from the line ``start`` up to the line ``end``."""
    head = message.index(b"\n" + start + b"\n") + 1
    return message[head : message.index(b"\n" + end + b"\n", head) + 1]


PLAIN = (
    b"Received: from joe (uid 1000)\n\tby host; Thu, 1 Jan 2026 00:00:00 +0000\n"
    b"From: joe@example.org\nTo: ann@example.org\nSubject: report\n\n"
    b"first line\n" + b"0123456789 " * 454 + b"end\n" + b"last line\n"
)


# --------------------------------------------------------------------------------------
# plain messages


def test_plain_message_with_a_5000_octet_line_becomes_quoted_printable() -> None:
    """A non-MIME message with a 5000-octet line gets QP, MIME-Version and the same body."""
    out = run(PLAIN)
    assert longest(PLAIN) > 4000
    assert longest(out) <= 76
    assert b"MIME-Version: 1.0\nContent-Transfer-Encoding: quoted-printable\n\n" in out
    assert leaf_payloads(out) == leaf_payloads(PLAIN)
    assert out.startswith(PLAIN[: PLAIN.index(b"\n\n")])


def test_existing_cte_header_is_replaced_not_duplicated() -> None:
    """A 7bit part converted to QP keeps one Content-Transfer-Encoding, the new one."""
    message = (
        b"MIME-Version: 1.0\nContent-Transfer-Encoding: 7bit\n (old)\nContent-Type: text/plain\n"
        b"\n" + b"a" * 1200 + b"\n"
    )
    out = run(message)
    headers = out[: out.index(b"\n\n") + 1]
    assert headers.lower().count(b"content-transfer-encoding") == 1
    assert b"(old)" not in headers
    assert headers.count(b"MIME-Version") == 1
    assert leaf_payloads(out) == leaf_payloads(message)


def test_8bit_body_and_trailing_blanks_survive_conversion() -> None:
    """Octets over 127, '=' and trailing blanks come back identical after QP."""
    body = "é=ü\t ".encode() * 300 + b"  \n" + b"tab at end\t\n"
    message = b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n" + body
    out = run(message)
    for line in out.split(b"\n\n", 1)[1].splitlines():
        assert len(line) <= 76
        assert not line.endswith((b" ", b"\t"))
    assert leaf_payloads(out) == [body]


def test_message_without_long_lines_is_returned_byte_for_byte() -> None:
    """With nothing long, find_long_parts is empty and reencode changes nothing."""
    message = PLAIN.replace(b"0123456789 " * 454, b"short ")
    assert find_long_parts(split(message)) == LongParts(frozenset(), frozenset())
    assert run(message) == message


# --------------------------------------------------------------------------------------
# multipart


ALTERNATIVE = (
    b"MIME-Version: 1.0\nContent-Type: multipart/alternative;\n boundary=\"=_alt 42\"\n\n"
    b"preamble\n--=_alt 42\nContent-Type: text/plain\n\nplain text\n\n"
    b"--=_alt 42\nContent-Type: text/html\n\n<html><body>"
    + b"<p>paragraph</p>" * 200
    + b"</body></html>\n--=_alt 42--\nepilogue\n"
)


def test_only_the_html_part_of_an_alternative_changes() -> None:
    """The HTML part is converted; the text part and the delimiters stay byte-identical."""
    lines = split(ALTERNATIVE)
    parts = find_long_parts(lines)
    assert parts == LongParts(frozenset({2}), frozenset({2}))
    out = b"".join(reencode(lines, parts))
    assert between(out, b"--=_alt 42", b"--=_alt 42") == between(
        ALTERNATIVE, b"--=_alt 42", b"--=_alt 42"
    )
    assert longest(out) <= 76
    assert leaf_payloads(out) == leaf_payloads(ALTERNATIVE)
    assert out.endswith(b"--=_alt 42--\nepilogue\n")


def test_base64_attachment_on_one_100k_line_is_rewrapped_at_76() -> None:
    """A 100 kB single-line base64 body is cut into 76-character lines, same bytes decoded."""
    data = bytes(range(256)) * 293
    encoded = base64.b64encode(data)
    assert len(encoded) > 100_000
    message = (
        b"MIME-Version: 1.0\nContent-Type: MULTIPART/mixed; BOUNDARY=outer\n\n"
        b"--outer\nContent-Type: text/plain\n\nsee attachment\n"
        b"--outer\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n"
        b"Content-Disposition: attachment; filename=data.bin\n\n" + encoded + b"\n--outer--\n"
    )
    lines = split(message)
    parts = find_long_parts(lines)
    assert parts == LongParts(frozenset({2}), frozenset())
    out = b"".join(reencode(lines, parts))
    body = between(out, b"Content-Disposition: attachment; filename=data.bin", b"--outer--")
    body_lines = body.splitlines()[2:]
    assert {len(line) for line in body_lines[:-1]} == {76}
    assert b"".join(body_lines) == encoded
    assert leaf_payloads(out) == leaf_payloads(message)
    assert leaf_payloads(out)[1] == data


def test_nested_multiparts_are_numbered_in_order_and_decode_the_same() -> None:
    """Ordinals count every part in order; a long line deep inside is found and fixed."""
    message = (
        b"Content-Type: multipart/mixed; boundary=\"a\"\nMIME-Version: 1.0\n\n"
        b"--a\nContent-Type: multipart/alternative;\n\tboundary=b\n\n"
        b"--b\nContent-Type: text/plain\n\nshort\n"
        b"--b\nContent-Type: text/html\nContent-Transfer-Encoding: quoted-printable\n\n"
        + b"<b>x=3D1</b> " * 100
        + b"=\n--b--\n"
        b"--a\nContent-Type: text/plain; charset=us-ascii\n\n" + b"y" * 1500 + b"\n--a--\n"
    )
    lines = split(message)
    parts = find_long_parts(lines)
    assert parts == LongParts(frozenset({3, 4}), frozenset({4}))
    out = b"".join(reencode(lines, parts))
    assert longest(out) <= MAX_LINE_OCTETS
    assert leaf_payloads(out) == leaf_payloads(message)
    assert [part.get_content_type() for part in email.message_from_bytes(out).walk()] == [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        "text/html",
        "text/plain",
    ]


def test_outer_boundary_closes_an_unterminated_inner_multipart() -> None:
    """A part after an inner multipart missing its close delimiter is still numbered right."""
    message = (
        b"Content-Type: multipart/mixed; boundary=a\n\n--a\n"
        b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\ninner\n"
        b"--a\n\n" + b"z" * 1000 + b"\n--a--\n"
    )
    assert find_long_parts(split(message)) == LongParts(frozenset({3}), frozenset({3}))
    assert leaf_payloads(run(message)) == leaf_payloads(message)


def test_quoted_printable_part_gets_soft_breaks_without_splitting_escapes() -> None:
    """A long QP line is cut only between tokens, and decodes exactly as before."""
    qp_line = b"caf=C3=A9 = menu=3D " * 80 + b"-dash  "
    message = (
        b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: Quoted-Printable\n"
        b"\n" + qp_line + b"\n"
    )
    out = run(message)
    body = out.split(b"\n\n", 1)[1]
    for line in body.splitlines():
        assert len(line) <= 76 or line.endswith(b"  ")
        assert re.search(rb"=(?![0-9A-F]{2}|$)", line) is None
    assert quopri.decodestring(body) == quopri.decodestring(qp_line + b"\n")
    assert leaf_payloads(out) == [quopri.decodestring(body)]


def test_continuation_line_never_starts_with_a_dash() -> None:
    """After a soft break a '-' is written =2D, so no new line can read as a delimiter."""
    message = b"Content-Type: multipart/mixed; boundary=x\n\n--x\n\n" + b"-" * 2000 + b"\n--x--\n"
    out = run(message)
    body = between(out, b"--x", b"--x--").splitlines()[3:]
    assert body[0] == b"-" * 75 + b"="
    assert all(not line.startswith(b"-") for line in body[1:])
    assert leaf_payloads(out) == leaf_payloads(message)


def test_message_rfc822_is_a_leaf_and_is_not_searched_for_boundaries() -> None:
    """An attached message is converted as a whole; its own boundaries mean nothing."""
    inner = b"Subject: inner\nContent-Type: multipart/mixed; boundary=in\n\n--in\n\n" + (
        b"w" * 1100 + b"\n--in--\n"
    )
    message = (
        b"Content-Type: multipart/mixed; boundary=out\n\n--out\n"
        b"Content-Type: message/rfc822\n\n" + inner + b"--out--\n"
    )
    lines = split(message)
    parts = find_long_parts(lines)
    assert parts == LongParts(frozenset({1}), frozenset({1}))
    out = b"".join(reencode(lines, parts))
    part = between(out, b"--out", b"--out--")
    headers, body = part.split(b"\n\n", 1)
    assert b"Content-Transfer-Encoding: quoted-printable" in headers
    assert quopri.decodestring(body) == inner
    assert longest(out) <= 76


def test_long_preamble_line_is_split_and_long_padding_trimmed() -> None:
    """Preamble lines are cut at the limit; blanks after a delimiter are dropped."""
    message = (
        b"Content-Type: multipart/mixed; boundary=p\n\n" + b"q" * 2500 + b"\n"
        b"--p" + b" " * 1200 + b"\n\nbody\n--p--\n"
    )
    out = run(message)
    assert longest(out) == MAX_LINE_OCTETS
    assert b"q" * 998 + b"\n" + b"q" * 998 + b"\n" + b"q" * 504 + b"\n--p\n" in out
    assert leaf_payloads(out) == leaf_payloads(message)


# --------------------------------------------------------------------------------------
# headers


def test_long_subject_with_blanks_is_folded_and_unfolds_to_the_same_value() -> None:
    """Folding only inserts line breaks before blanks."""
    subject = b"Subject: " + b" ".join(b"w%d" % n for n in range(600))
    message = subject + b"\nTo: a@b\n\nbody\n"
    out = run(message)
    assert find_long_parts(split(message)) == LongParts(frozenset(), frozenset())
    assert longest(out) <= 78
    assert out.replace(b"\n ", b" ") == message


def test_long_subject_without_blanks_becomes_encoded_words() -> None:
    """A blank-less run in an unstructured field becomes RFC 2047 words decoding to it."""
    word = "Grüße-" * 400
    message = ("Subject: Re: " + word + " (fwd)\n\nbody\n").encode()
    out = run(message)
    assert longest(out) <= 78
    assert b"=?utf-8?b?" in out
    parsed = email.message_from_bytes(out)
    assert header_text(parsed, "Subject") == ("Re: " + word + " (fwd)").encode()
    assert parsed.get_payload() == "body\n"


def test_non_utf8_run_uses_unknown_8bit_words() -> None:
    """Octets that are not UTF-8 survive in unknown-8bit encoded words."""
    run_bytes = bytes(range(128, 256)) * 10
    out = run(b"X-Blob:" + run_bytes + b"\n\n")
    assert b"=?unknown-8bit?b?" in out
    assert longest(out) <= 78
    parsed = email.message_from_bytes(out)
    assert header_text(parsed, "X-Blob") == run_bytes


def test_structured_header_without_blanks_is_split_between_tokens() -> None:
    """References of 60 ids with no blanks are split before '<', every id intact."""
    ids = [b"<%d.%s@example.org>" % (n, b"k" * 20) for n in range(60)]
    message = b"References: " + b"".join(ids) + b"\n\nbody\n"
    out = run(message)
    head = out[: out.index(b"\n\n")]
    assert longest(out) <= 78
    assert re.findall(rb"<[^<>]*>", head) == ids
    assert all(line.startswith((b"References:", b" <")) for line in head.split(b"\n"))


def test_token_without_any_break_point_is_cut_hard() -> None:
    """A single 3000-octet token still ends up in lines within the limit."""
    message = b"Message-ID: <" + b"m" * 3000 + b"@x>\n\nbody\n"
    out = run(message)
    assert longest(out) <= MAX_LINE_OCTETS
    assert out.count(b"\n") == message.count(b"\n") + 4
    assert out.replace(b"\n", b"").replace(b" ", b"") == message.replace(b"\n", b"").replace(
        b" ", b""
    )


def test_long_part_header_is_folded_without_touching_the_body() -> None:
    """A long part header is folded even when no part is listed; nothing else changes."""
    message = (
        b"Content-Type: multipart/mixed; boundary=h\n\n--h\n"
        b"Content-Description: " + b"part " * 300 + b"\n\ntext\n--h--\n"
    )
    lines = split(message)
    assert find_long_parts(lines) == NOTHING
    out = b"".join(reencode(lines, NOTHING))
    assert longest(out) <= 78
    assert out.replace(b"\n ", b" ") == message


# --------------------------------------------------------------------------------------
# errors and streaming


def test_unknown_transfer_encoding_with_a_long_line_is_a_data_error() -> None:
    """A long line under an encoding we cannot re-encode is refused, naming the line."""
    message = b"Content-Transfer-Encoding: x-custom\n\n" + b"u" * 1000 + b"\n"
    with pytest.raises(DataError, match="line 3"):
        run(message)


def test_long_line_in_an_unlisted_part_is_a_software_error() -> None:
    """reencode refuses to emit a long line it was not told about."""
    with pytest.raises(SoftwareError, match="part 0"):
        list(reencode(split(PLAIN), NOTHING))


def test_line_without_lf_is_a_software_error() -> None:
    """Both passes insist on LF-terminated lines."""
    with pytest.raises(SoftwareError, match="line 2"):
        find_long_parts([b"Subject: x\n", b"body"])
    with pytest.raises(SoftwareError):
        list(reencode([b"a\nb\n"], NOTHING))


def test_reencode_streams_instead_of_reading_everything() -> None:
    """The first output lines come out of an endless input."""

    def endless() -> Iterator[bytes]:
        yield b"Subject: s\n"
        yield b"\n"
        while True:
            yield b"v" * 1200 + b"\n"

    plain = LongParts(frozenset({0}), frozenset({0}))
    first = list(itertools.islice(reencode(endless(), plain), 10))
    assert first[:2] == [b"Subject: s\n", b"MIME-Version: 1.0\n"]
    assert all(len(line) <= 77 for line in first)


# --------------------------------------------------------------------------------------
# long lines in pieces, as normalise_lines yields them


def pieces(head: bytes, line: Iterator[bytes], tail: bytes = b"") -> Iterator[bytes]:
    """A message whose body holds one long line given in pieces, as normalise_lines does."""
    yield from head.splitlines(keepends=True)
    yield from line
    yield from tail.splitlines(keepends=True)


def repeated(unit: bytes, count: int, end: bytes = b"\n") -> Iterator[bytes]:
    """``count`` pieces of ``unit`` and the line end: one long line, never whole."""
    for _ in range(count):
        yield unit
    yield end


def test_a_4_mb_line_is_converted_in_little_memory_and_decodes_the_same() -> None:
    """Both passes over a 4 MB line in 64 KiB pieces keep memory small; QP decodes back."""
    import hashlib

    unit = bytes(range(256)) * 256  # 64 KiB of every octet; CR, LF, NUL never reach a spool
    unit = unit.replace(b"\n", b"n").replace(b"\r", b"r").replace(b"\0", b"z")
    head = b"Subject: big\n\n"
    tracemalloc.start()
    try:
        parts = find_long_parts(pieces(head, repeated(unit, 64)))
        digest = hashlib.sha256()
        in_body = False
        longest_out = 0
        for line in reencode(pieces(head, repeated(unit, 64)), parts):
            longest_out = max(longest_out, len(line))
            if in_body:
                digest.update(binascii.a2b_qp(line))
            in_body = in_body or line == b"\n"
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert parts == LongParts(frozenset({0}), frozenset({0}))
    assert longest_out <= 77
    assert digest.hexdigest() == hashlib.sha256(unit * 64 + b"\n").hexdigest()
    assert peak < 2 << 20


def test_a_base64_line_in_pieces_is_rewrapped_the_same_as_whole() -> None:
    """A 1 MB base64 line given in 64 KiB pieces comes out as the whole line would."""
    data = base64.b64encode(bytes(range(256)) * 3072)
    head = b"Content-Transfer-Encoding: base64\n\n"
    cut = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    given = iter([*cut[:-1], cut[-1] + b"\n"])
    out = b"".join(reencode(pieces(head, given), LongParts(frozenset({0}), frozenset())))
    assert out == run(head + data + b"\n")
    assert base64.b64decode(out.split(b"\n\n", 1)[1]) == bytes(range(256)) * 3072


def test_a_quoted_printable_line_in_pieces_is_rewrapped_the_same_as_whole() -> None:
    """A 300 kB QP line cut inside escapes and before trailing blanks re-wraps as if whole."""
    line = b"caf=C3=A9 = x=3D" * 20000 + b"end=  \t"
    head = b"Content-Transfer-Encoding: quoted-printable\n\n"
    cuts = [0, 65537, 65538, 131075, len(line) - 3, len(line) - 1, len(line)]
    given = [line[a:b] for a, b in itertools.pairwise(cuts)]
    given[-1] += b"\n"
    out = b"".join(reencode(pieces(head, iter(given)), LongParts(frozenset({0}), frozenset())))
    assert out == run(head + line + b"\n")
    assert quopri.decodestring(out.split(b"\n\n", 1)[1]) == quopri.decodestring(line + b"\n")


def test_delimiter_with_long_padding_in_pieces_is_trimmed() -> None:
    """A delimiter followed by 200 kB of blanks, in pieces, is found and its padding cut."""
    head = b"Content-Type: multipart/mixed; boundary=p\n\n--p\n\nfirst\n"
    padded = [b"--p" + b" " * 65533, b" " * 65536, b" " * 70000 + b"\n"]
    tail = b"\nsecond\n--p--\n"
    parts = find_long_parts(pieces(head, iter(padded), tail))
    assert parts == LongParts(frozenset({0}), frozenset())
    out = b"".join(reencode(pieces(head, iter(padded), tail), parts))
    assert out == head + b"--p\n\nsecond\n--p--\n"


def test_padding_that_turns_into_text_is_an_ordinary_line() -> None:
    """A line that starts like a delimiter but has text after its blanks is no delimiter."""
    head = b"Content-Type: multipart/mixed; boundary=p\n\n--p\n\nfirst\n"
    line = [b"--p" + b" " * 65533, b" " * 100 + b"x\n"]
    parts = find_long_parts(pieces(head, iter(line), b"--p--\n"))
    assert parts == LongParts(frozenset({1}), frozenset({1}))
    out = b"".join(reencode(pieces(head, iter(line), b"--p--\n"), parts))
    assert quopri.decodestring(between(out, b"--p", b"--p--").split(b"\n\n", 1)[1]) == (
        b"first\n--p" + b" " * 65633 + b"x\n"
    )


def test_part_header_line_over_the_field_limit_is_a_data_error() -> None:
    """A header line of a MIME part bigger than the bound is refused naming its line."""
    head = b"Content-Type: multipart/mixed; boundary=p\n\n--p\n"
    with pytest.raises(DataError, match="line 4"):
        find_long_parts(pieces(head, repeated(b"X-Big: " + b"y" * 65529, 20), b"\n--p--\n"))


def test_a_header_block_opening_with_a_continuation_line_keeps_it_after_a_dropped_cte() -> None:
    """A part whose header block opens with a continuation line keeps that line, also right
    after a converting part whose last field was the Content-Transfer-Encoding that goes."""
    message = (
        b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b1\n\n--b1\n"
        b"Content-Transfer-Encoding: 8bit\n\n" + b"x" * 2000 + b"\n"
        b"--b1\n folded-on-nothing\nContent-Type: text/plain\n\nshort\n--b1--\n"
    )
    out = run(message)
    assert out.count(b"Content-Transfer-Encoding: ") == 1  # the 8bit one went, the QP one came
    assert b"\n--b1\n folded-on-nothing\nContent-Type: text/plain\n\nshort\n--b1--\n" in out
