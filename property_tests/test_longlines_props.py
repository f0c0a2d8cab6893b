"""Properties of dma.core.longlines: short lines out, the same content, nothing else raised."""

from __future__ import annotations

import base64
import binascii
import email
import email.header
import re
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from dma.core.errors import DataError, DmaError
from dma.core.lines import normalise_lines
from dma.core.longlines import MAX_LINE_OCTETS, LongParts, find_long_parts, reencode

NOTHING = LongParts(frozenset(), frozenset())

# Content never holds "#", so "##b<n>" boundaries never occur in it.
_OCTETS = [octet for octet in range(32, 127) if octet != ord("#")] + [9, 0xC3, 0xA9, 0xFF]
_octet = st.sampled_from(_OCTETS)

short_line = st.lists(_octet, max_size=40).map(bytes)
long_line = st.builds(
    lambda seed, size: (bytes(seed) * size)[:size],
    st.lists(_octet, min_size=1, max_size=12),
    st.integers(MAX_LINE_OCTETS + 1, 2500),
)
body_lines = st.lists(st.one_of(short_line, short_line, long_line), max_size=5)


@dataclass(frozen=True, slots=True)
class Leaf:
    cte: str
    lines: tuple[bytes, ...]  # raw content, one LF line each (base64: the data)
    one_line: bool  # base64 only: all on one line
    note: bytes  # an extra header value, maybe long


@dataclass(frozen=True, slots=True)
class Multi:
    subtype: str
    parts: tuple[Leaf | Multi, ...]
    quoted: bool


note = st.one_of(st.just(b""), short_line, st.lists(short_line, max_size=80).map(b" x ".join))
leaf = st.builds(
    Leaf,
    st.sampled_from(["", "7bit", "8bit", "binary", "base64", "quoted-printable"]),
    body_lines.map(tuple),
    st.booleans(),
    note,
)
tree = st.recursive(
    leaf,
    lambda children: st.builds(
        Multi,
        st.sampled_from(["mixed", "alternative", "related"]),
        st.lists(children, min_size=1, max_size=3).map(tuple),
        st.booleans(),
    ),
    max_leaves=6,
)


def naive_qp(line: bytes) -> bytes:
    """Quoted-printable without soft breaks, so long lines stay long."""
    out = b"".join(
        bytes([o]) if (33 <= o <= 126 and o != 61) or o == 32 else b"=%02X" % o for o in line
    )
    if line[-1:] == b" ":
        out = out[:-1] + b"=20"
    return out


def render(node: Leaf | Multi, counter: list[int]) -> bytes:
    """An entity: its header block, an empty line, its body."""
    if isinstance(node, Leaf):
        kind = "application/octet-stream" if node.cte == "base64" else "text/plain"
        head = f"Content-Type: {kind}\n".encode()
        if node.cte:
            head += f"Content-Transfer-Encoding: {node.cte}\n".encode()
        if node.note:
            head += b"X-Note: " + node.note.strip(b" \t") + b"\n"
        if node.cte == "base64":
            data = base64.b64encode(b"".join(node.lines))
            body = data + b"\n" if node.one_line else base64.encodebytes(b"".join(node.lines))
        elif node.cte == "quoted-printable":
            body = b"".join(naive_qp(line) + b"\n" for line in node.lines)
        else:
            body = b"".join(line + b"\n" for line in node.lines)
        return head + b"\n" + body
    counter[0] += 1
    boundary = b"##b%d" % counter[0]
    param = b'"' + boundary + b'"' if node.quoted else boundary
    head = b"Content-Type: multipart/" + node.subtype.encode() + b";\n Boundary=" + param + b"\n"
    body = b"preamble\n"
    for part in node.parts:
        body += b"--" + boundary + b"\n" + render(part, counter)
    return head + b"\n" + body + b"--" + boundary + b"--\n"


def message_of(node: Leaf | Multi, subject: bytes) -> bytes:
    top = b"Received: from u (uid 1)\n\tby h; Thu, 1 Jan 2026 00:00:00 +0000\n"
    top += b"Subject: " + subject.strip(b" \t") + b"\n"
    if isinstance(node, Multi):
        top += b"MIME-Version: 1.0\n"
    return top + render(node, [0])


def parts_of(message: bytes) -> list[email.message.Message]:
    return list(email.message_from_bytes(message).walk())


@settings(max_examples=150, deadline=None)
@given(tree, note)
def test_mime_trees_come_out_short_and_decode_the_same(node: Leaf | Multi, subject: bytes) -> None:
    """Every line fits, every leaf decodes the same, unlisted parts are untouched."""
    message = message_of(node, subject)
    lines = message.splitlines(keepends=True)
    long_parts = find_long_parts(lines)
    out = b"".join(reencode(lines, long_parts))
    out_lines = out.splitlines(keepends=True)
    assert all(len(line) <= MAX_LINE_OCTETS + 1 for line in out_lines)
    before, after = parts_of(message), parts_of(out)
    assert [p.get_content_type() for p in before] == [p.get_content_type() for p in after]
    for ordinal, (old, new) in enumerate(zip(before, after, strict=True)):
        if not old.is_multipart():
            assert old.get_payload(decode=True) == new.get_payload(decode=True)
        if ordinal not in long_parts.long:
            unfolded = [(k, str(v).replace("\n", "")) for k, v in old.items()]
            assert unfolded == [(k, str(v).replace("\n", "")) for k, v in new.items()]
            if not old.is_multipart():
                assert old.get_payload() == new.get_payload()
    # A second run finds nothing left to do.
    assert find_long_parts(out_lines) == NOTHING
    assert b"".join(reencode(out_lines, NOTHING)) == out


# decode_header() splits at str line breaks and str whitespace (\x1f counts as one):
# keep their octets out of the UTF-8.
_word_char = st.characters(exclude_categories=["Cs"], exclude_characters="?= \t\r\n").filter(
    lambda c: not set(c.encode()) & set(b"\x0b\x0c\x1c\x1d\x1e\x1f\x85")
)
words = st.lists(
    st.one_of(
        st.text(_word_char, min_size=1, max_size=8),
        st.builds(lambda c, n: c * n, st.sampled_from(["x", "ü", "€"]), st.integers(1, 1500)),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(words, st.sampled_from(["Subject", "X-Mailer", "Comments"]))
def test_unstructured_header_decodes_to_the_same_text(parts: list[str], name: str) -> None:
    """Folded or encoded, an unstructured value unfolds and decodes to what it was."""
    value = " ".join(parts).encode()
    message = name.encode() + b": " + value + b"\n\nbody\n"
    out = b"".join(reencode(message.splitlines(keepends=True), NOTHING))
    assert all(len(line) <= MAX_LINE_OCTETS for line in out.split(b"\n"))
    head = out[: out.index(b"\n\n")]
    raw = head.split(b":", 1)[1].replace(b"\n", b"").decode("latin-1")
    decoded = b"".join(
        chunk if isinstance(chunk, bytes) else chunk.encode("latin-1")
        for chunk, _charset in email.header.decode_header(raw)
    )
    # compared outside the assert: pytest's diff of two long byte strings takes minutes
    same = decoded.strip() == value.strip()
    assert same, f"decoded {len(decoded)} octets differ from the {len(value)} given"
    assert out.endswith(b"\n\nbody\n")


@settings(max_examples=200, deadline=None)
@given(st.lists(long_line | short_line, min_size=1, max_size=4))
def test_converted_body_is_strict_quoted_printable(body: list[bytes]) -> None:
    """Converted lines are at most 76 characters, end in no blank and decode back exactly."""
    raw = b"".join(line + b"\n" for line in body)
    lines = (b"Subject: q\n", b"\n", *raw.splitlines(keepends=True))
    out = b"".join(reencode(lines, LongParts(frozenset({0}), frozenset({0}))))
    encoded = out.split(b"\n\n", 1)[1]
    for line in encoded.splitlines():
        assert len(line) <= 76
        assert not line.endswith((b" ", b"\t"))
        assert all(33 <= o <= 126 or o in (9, 32) for o in line)
    assert binascii.a2b_qp(encoded) == raw


fragments = st.one_of(
    st.binary(max_size=60),
    st.sampled_from(
        [
            b"Content-Type: multipart/mixed; boundary=a\n",
            b"Content-type: Multipart/X; boundary=\"a\"\n",
            b"Content-Type: message/rfc822\n",
            b"Content-Transfer-Encoding: base64\n",
            b"Content-Transfer-Encoding: quoted-printable\n",
            b"Content-Transfer-Encoding: x-other\n",
            b"Subject:",
            b"--a\n",
            b"--a--\n",
            b"\n",
            b" ",
            b"=",
            b"-",
        ]
    ),
    st.builds(lambda b, n: b * n, st.sampled_from([b"x", b" ", b"=", b"-", b"\xc3"]),
              st.integers(900, 1100)),
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(fragments, max_size=25),
    st.frozensets(st.integers(0, 6), max_size=4),
    st.frozensets(st.integers(0, 6), max_size=4),
)
def test_any_input_raises_nothing_but_our_errors(
    chunks: list[bytes], listed: frozenset[int], converted: frozenset[int]
) -> None:
    """Arbitrary bytes and arbitrary long_parts give short lines or a DmaError."""
    data = b"".join(chunks)
    lines = re.findall(rb"[^\n]*\n|[^\n]+$", data)  # LF lines, the last maybe without
    try:
        long_parts = find_long_parts(lines)
        out = list(reencode(lines, long_parts))
        assert all(len(line) <= MAX_LINE_OCTETS + 1 for line in out)
        out = list(reencode(lines, LongParts(listed, converted)))
        assert all(len(line) <= MAX_LINE_OCTETS + 1 for line in out)
    except DmaError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(fragments, max_size=25))
def test_lf_lines_with_their_parts_fail_only_on_unencodable_content(chunks: list[bytes]) -> None:
    """With proper lines and find_long_parts' answer, the only error is a DataError."""
    data = b"".join(chunks)
    lines = re.findall(rb"[^\n]*\n", data if data.endswith(b"\n") else data + b"\n")
    try:
        out = list(reencode(lines, find_long_parts(lines)))
    except DataError:
        return
    assert all(len(line) <= MAX_LINE_OCTETS + 1 and line.endswith(b"\n") for line in out)


def pieces_of(lines: list[bytes], size: int) -> list[bytes]:
    """The lines as normalise_lines yields them with pieces of ``size`` octets."""
    return list(normalise_lines(lines, ignore_dots=True, max_piece=size))


def outcome(lines: list[bytes]) -> tuple[LongParts, bytes] | str:
    """What both passes make of ``lines``: the plan and the output, or the error's type."""
    try:
        parts = find_long_parts(lines)
        return parts, b"".join(reencode(lines, parts))
    except DmaError as error:
        return type(error).__name__


@settings(max_examples=150, deadline=None)
@given(tree, note, st.integers(1, 1200))
def test_long_lines_in_pieces_give_the_same_output(
    node: Leaf | Multi, subject: bytes, size: int
) -> None:
    """Long lines fed in pieces of any size give exactly the same plan and output."""
    lines = message_of(node, subject).splitlines(keepends=True)
    assert outcome(pieces_of(lines, size)) == outcome(lines)


@settings(max_examples=200, deadline=None)
@given(st.lists(fragments, max_size=25), st.integers(1, 1200))
def test_any_input_in_pieces_gives_the_same_as_whole_lines(
    chunks: list[bytes], size: int
) -> None:
    """On arbitrary input too, pieces change nothing: same plan, output or error."""
    data = b"".join(chunks).replace(b"\r", b"").replace(b"\0", b"")  # as in the spool
    lines = re.findall(rb"[^\n]*\n", data if data.endswith(b"\n") else data + b"\n")
    assert outcome(pieces_of(lines, size)) == outcome(lines)
