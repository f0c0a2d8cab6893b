"""Properties of dma.core.headers: no Bcc out, no long lines, one separator, only DmaError."""

from __future__ import annotations

import email.header
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from dma.core.errors import DataError, DmaError
from dma.core.headers import HeaderBlock, Stamp, process_headers, read_header_block
from dma.core.lines import MAX_LINE_OCTETS, normalise_lines

STAMP = Stamp(
    queue_id="1a.0",
    sender="s@example.org",
    username="s",
    uid=1,
    mailname="example.org",
    system_hostname="host",
    date="Wed, 25 Nov 2026 02:44:17 +0000",
    message_id="<1.1a.0@example.org>",
)

_names = st.sampled_from(
    [b"To", b"cc", b"BCC", b"Bcc", b"bcc ", b"From", b"Date", b"Subject", b"Resent-Bcc", b"X-A"]
)
_values = st.one_of(
    st.sampled_from([b"a@x", b"a@x, b@y", b'"q, r" <r@z>', b"g: a@x;", b"bad@@", b"", b"<"]),
    st.binary(max_size=30),
    st.integers(0, 1500).map(lambda n: b"w" * n),
    st.integers(0, 300).map(lambda n: b"ab " * n),
)


@st.composite
def header_text(draw: st.DrawFn) -> bytes:
    """Header-like input: fields with values and continuations, sometimes a blank and a body."""
    parts = []
    for _ in range(draw(st.integers(0, 6))):
        parts.append(draw(_names) + b":" + draw(_values) + b"\n")
        for _ in range(draw(st.integers(0, 2))):
            parts.append(draw(st.sampled_from([b" ", b"\t"])) + draw(_values) + b"\n")
    if draw(st.booleans()):
        parts.append(b"\nTo: body@x\nBcc: body@x\n")
    return b"".join(parts)


def blocks_from(text: bytes) -> HeaderBlock | None:
    """The header block of ``text``, or None when the input itself is refused (NUL bytes)."""
    try:
        return read_header_block(normalise_lines([text], ignore_dots=True))
    except DataError:
        return None


@settings(max_examples=200, deadline=None)
@given(header_text(), st.booleans(), st.one_of(st.none(), st.text(max_size=40)))
def test_output_invariants(text: bytes, collect: bool, full_name: str | None) -> None:
    """Output has no Bcc line, no line over 998 octets and exactly one separator, at the end."""
    block = blocks_from(text)
    if block is None:
        return
    stamp = replace(STAMP, full_name=full_name)
    try:
        result = process_headers(block, stamp, collect_recipients=collect)
    except DmaError:
        return
    lines = result.lines
    assert lines[-1] == b"\n"
    assert b"\n" not in lines[:-1]
    assert all(line.endswith(b"\n") and b"\n" not in line[:-1] for line in lines)
    assert all(len(line) - 1 <= MAX_LINE_OCTETS for line in lines)
    assert not any(line.lower().startswith(b"bcc") for line in lines if line[:1] not in b" \t")
    assert lines[0][:1] not in (b" ", b"\t")


@settings(max_examples=200, deadline=None)
@given(header_text())
def test_unfolded_kept_fields_are_unchanged(text: bytes) -> None:
    """Folding only adds line breaks: unfolded, the kept fields equal the input's non-Bcc fields."""
    block = blocks_from(text)
    if block is None:
        return
    try:
        result = process_headers(block, STAMP, collect_recipients=False)
    except DmaError:
        return

    def unfolded_fields(lines: tuple[bytes, ...]) -> list[bytes]:
        fields: list[bytes] = []
        for line in lines:
            if line[:1] in (b" ", b"\t") and fields:
                fields[-1] += line[:-1]
            else:
                fields.append(line[:-1])
        return [f for f in fields if not f.lower().startswith(b"bcc")]

    def decoded(field: bytes) -> bytes:
        # a free-text field too long to fold was carried in RFC 2047 encoded words
        if b"=?" not in field:
            return field
        name, _, value = field.partition(b":")
        words = email.header.decode_header(value.decode("latin-1"))
        text = b"".join(w if isinstance(w, bytes) else w.encode("latin-1") for w, _ in words)
        return name + b":" + text.replace(b" ", b"")

    kept = unfolded_fields(result.lines[:-1])[: len(original := unfolded_fields(block.lines))]
    assert len(kept) == len(original)
    for new, old in zip(kept, original, strict=True):
        if b"=?" in new and b"=?" not in old:
            # RFC 2047 does not keep the blanks around encoded words: compare the text
            assert b"".join(decoded(new).split()) == b"".join(old.split())
        else:
            assert new == old


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(max_size=40), max_size=8),
    st.booleans(),
    st.one_of(st.none(), st.binary(max_size=20)),
    st.booleans(),
)
def test_only_dma_errors_escape(
    lines: list[bytes], separator: bool, body: bytes | None, collect: bool
) -> None:
    """On any header lines at all, process_headers returns or raises a DmaError, nothing else."""
    block = HeaderBlock(tuple(lines), separator, body)
    try:
        process_headers(block, STAMP, collect_recipients=collect)
    except DmaError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.booleans())
def test_read_then_process_only_raises_dma_errors(text: bytes, collect: bool) -> None:
    """Any input through normaliser, block reader and processing raises only DmaError."""
    try:
        block = read_header_block(normalise_lines([text], ignore_dots=False), limit=100)
        process_headers(block, STAMP, collect_recipients=collect)
    except DmaError:
        pass
