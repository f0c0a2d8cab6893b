"""Properties of dma.core.headers.HeaderStep: no Bcc out, no long lines, one separator,
the block ends at the first empty line, pieces do not matter, only DmaError escapes."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import replace
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from dma.core.addresses import parse_address_list
from dma.core.errors import DataError, DmaError
from dma.core.headers import HeaderStep, Stamp
from dma.core.lines import MAX_LINE_OCTETS, normalise_blocks, normalise_lines

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
_HEADER = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")

_names = st.sampled_from(
    [b"To", b"cc", b"BCC", b"Bcc", b"bcc ", b"From", b"Date", b"Subject", b"Resent-Bcc", b"X-A"]
)
_values = st.one_of(
    st.sampled_from([b"a@x", b"a@x, b@y", b'"q, r" <r@z>', b"g: a@x;", b"bad@@", b"", b"<"]),
    st.binary(max_size=30),
    st.integers(0, 1500).map(lambda n: b"w" * n),
    st.integers(0, 300).map(lambda n: b"ab " * n),
)
_odd_lines = st.sampled_from(
    [b"bogus line", b"From someone", b"hello: world", b":no name", b"x" * 1200, b"a b " * 300]
)


@st.composite
def header_text(draw: st.DrawFn) -> bytes:
    """Header-like input: fields, continuations, malformed lines, sometimes a blank and a body."""
    parts = []
    if draw(st.booleans()):
        parts.append(draw(st.sampled_from([b"From a b\n", b">From x\n", b"plain text\n"])))
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.integers(0, 4)) == 0:
            parts.append(draw(_odd_lines) + b"\n")
        else:
            parts.append(draw(_names) + b":" + draw(_values) + b"\n")
        for _ in range(draw(st.integers(0, 2))):
            parts.append(draw(st.sampled_from([b" ", b"\t"])) + draw(_values) + b"\n")
    if draw(st.booleans()):
        parts.append(b"\nTo: body@x\nBcc: body@x\n")
    return b"".join(parts)


def lines_of(text: bytes) -> list[bytes] | None:
    """The normalised lines of ``text``, or None when the input itself is refused (NUL)."""
    try:
        return list(normalise_lines([text], ignore_dots=True))
    except DataError:
        return None


def run(
    pieces: Iterable[bytes], collect: bool = False, stamp: Stamp = STAMP
) -> tuple[bytes, bytes, tuple[str, ...]] | str:
    """(header output, body, recipients) as the shell gets them, or the DmaError's text."""
    head: list[bytes] = []
    body: list[bytes] = []
    try:
        step = HeaderStep(stamp, collect_recipients=collect)
        for piece in pieces:
            if step.done:
                body.append(piece)
                continue
            fed = step.feed(piece)
            head.extend(fed.lines)
            body.append(fed.body)
        head.extend(step.finish())
    except DmaError as error:
        return str(error)
    return b"".join(head), b"".join(body), step.recipients


def model(lines: list[bytes]) -> tuple[list[bytes], list[bytes], bytes]:
    """Obviously right: (the header block's lines, the tail's lines, the rest) by SPEC 3.3.

    The block runs from the first field to the first line that is neither a field nor a
    continuation (the tail starts there) or to the first empty line; the tail runs to
    that empty line, which starts the rest.
    """
    index = 0
    while index < len(lines) and re.match(rb"(?i)>?from ", lines[index]):
        index += 1
    if index == len(lines) or not _HEADER.match(lines[index]):
        rest = lines[index + 1 :] if lines[index : index + 1] == [b"\n"] else lines[index:]
        return [], [], b"".join(rest)
    end = lines.index(b"\n", index) if b"\n" in lines[index:] else len(lines)
    malformed = next(
        (i for i in range(index + 1, end)
         if lines[i][:1] not in (b" ", b"\t") and not _HEADER.match(lines[i])),
        None,
    )
    if malformed is None:
        return lines[index:end], [], b"".join(lines[end + 1 :])
    return lines[index:malformed], lines[malformed:end], b"".join(lines[end:])


def groups(lines: Iterable[bytes]) -> list[list[bytes]]:
    """Lines grouped by field: a continuation joins the line above it."""
    found: list[list[bytes]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t") and found:
            found[-1].append(line)
        else:
            found.append([line])
    return found


def fields(lines: Iterable[bytes]) -> list[bytes]:
    """Unfolded fields (a line that is no field starts one too), LF dropped."""
    return [b"".join(line[:-1] for line in group) for group in groups(lines)]


def is_bcc(field: bytes) -> bool:
    match = _HEADER.match(field)
    return match is not None and match.group(0).rstrip(b" \t:").lower() == b"bcc"


def words_decoded(field: bytes) -> bytes:
    """``field`` with our RFC 2047 B words decoded and all ASCII white space removed."""

    def word(match: re.Match[bytes]) -> bytes:
        return base64.b64decode(match.group(1))

    text = re.sub(rb"=\?(?:utf-8|unknown-8bit)\?b\?([A-Za-z0-9+/=]*)\?=", word, field)
    return b"".join(text.split())


@settings(max_examples=200, deadline=None)
@given(header_text(), st.booleans(), st.one_of(st.none(), st.text(max_size=40)))
def test_output_invariants(text: bytes, collect: bool, full_name: str | None) -> None:
    """Header output has no Bcc field, no line over 998 octets and one separator, at its end."""
    lines = lines_of(text)
    result = run(lines or [], collect, replace(STAMP, full_name=full_name))
    if isinstance(result, str):
        return
    head = result[0].splitlines(keepends=True)
    assert head[-1] == b"\n"
    assert b"\n" not in head[:-1]
    assert all(len(line) - 1 <= MAX_LINE_OCTETS for line in head)
    assert not any(is_bcc(line) for line in head)
    assert head[0][:1] not in (b" ", b"\t")


@settings(max_examples=200, deadline=None)
@given(header_text())
def test_block_ends_at_the_first_empty_line_and_the_rest_is_body(text: bytes) -> None:
    """Kept fields unfold to the block's non-Bcc fields, then the added ones; the body is
    the tail without its Bcc fields, then everything after the first empty line."""
    lines = lines_of(text)
    if lines is None:
        return
    result = run(lines)
    if isinstance(result, str):
        return
    head, body, _ = result
    block, tail, rest = model(lines)
    tail_kept = [line for group in groups(tail) if not is_bcc(group[0]) for line in group]
    assert body == b"".join(tail_kept) + rest
    original = [f for f in fields(block) if not is_bcc(f)]
    spooled = fields(head.splitlines(keepends=True)[:-1])
    kept, added = spooled[: len(original)], spooled[len(original) :]
    assert len(kept) == len(original)
    for new, old in zip(kept, original, strict=True):
        if new.count(b"=?") > old.count(b"=?"):
            # a free-text field too long to fold was carried in RFC 2047 encoded words,
            # which do not keep the blanks around them: compare the text
            assert words_decoded(new) == b"".join(old.split())
        else:
            assert new == old
    assert [f.split(b":")[0] for f in added] == [
        name for name in (b"Date", b"Message-Id", b"From")
        if not any(re.match(rb"(?i)" + name + rb"[ \t]*:", f) for f in original)
    ]


@settings(max_examples=200, deadline=None)
@given(header_text())
def test_t_reads_every_to_cc_bcc_of_the_block_in_order(text: bytes) -> None:
    """-t gives the addresses of every To, Cc and Bcc field before the first empty line
    (block and tail), and no others."""
    lines = lines_of(text)
    if lines is None:
        return
    result = run(lines, collect=True)
    block, tail, _ = model(lines)
    expected: list[str] = []
    try:
        for field in fields(block + tail):
            match = _HEADER.match(field)
            name = match.group(0).rstrip(b" \t:").lower() if match else b""
            if name in (b"to", b"cc", b"bcc"):
                value = field.split(b":", 1)[1].decode("utf-8", "replace")
                addresses = parse_address_list(value)
                if any("\ufffd" in a for a in addresses):
                    raise DataError("not UTF-8")
                expected.extend(addresses)
    except DataError:
        assert isinstance(result, str)
        return
    if isinstance(result, str) and "no blank to fold at" in result:
        # a structured field with a line too long to fold is refused whatever its name
        assert any(len(line) > 999 for line in block), result
        return
    assert not isinstance(result, str), result
    assert list(result[2]) == expected


@st.composite
def pieces_of(draw: st.DrawFn, lines: list[bytes]) -> list[bytes]:
    """The lines with some long ones cut into pieces, the first piece at least 100 octets."""
    pieces: list[bytes] = []
    for line in lines:
        if len(line) <= 100 or not draw(st.booleans()):
            pieces.append(line)
            continue
        cuts = sorted(set(draw(st.lists(st.integers(100, len(line) - 1), max_size=4))))
        bounds = [0, *cuts, len(line)]
        pieces.extend(line[a:b] for a, b in pairwise(bounds))
    return pieces


@settings(max_examples=200, deadline=None)
@given(header_text(), st.data(), st.booleans())
def test_pieces_give_the_same_result_as_whole_lines(
    text: bytes, data: st.DataObject, collect: bool
) -> None:
    """Long lines fed in pieces give exactly what the whole lines give."""
    lines = lines_of(text)
    if lines is None:
        return
    whole = run(lines, collect)
    cut = run(data.draw(pieces_of(lines)), collect)
    if isinstance(whole, str):
        assert isinstance(cut, str)
    else:
        assert cut == whole


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=8), st.booleans())
def test_only_dma_errors_escape(pieces: list[bytes], collect: bool) -> None:
    """On any pieces at all, the step returns or raises a DmaError, nothing else."""
    step = HeaderStep(STAMP, collect_recipients=collect)
    try:
        for piece in pieces:
            if step.done:
                break
            step.feed(piece)
        step.finish()
    except DmaError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.booleans())
def test_normalised_input_only_raises_dma_errors(text: bytes, collect: bool) -> None:
    """Any input through the normaliser and the step raises only DmaError."""
    try:
        run(normalise_lines([text], ignore_dots=False), collect)
    except DmaError:
        pass


def run_blocks(
    items: Iterable[bytes], collect: bool = False
) -> tuple[bytes, bytes, tuple[str, ...]] | str:
    """``run`` through ``feed_block``, as submission feeds what normalise_blocks yields."""
    head: list[bytes] = []
    body: list[bytes] = []
    try:
        step = HeaderStep(STAMP, collect_recipients=collect)
        for item in items:
            if step.done:
                body.append(item)
                continue
            fed = step.feed_block(item)
            head.extend(fed.lines)
            body.append(fed.body)
        head.extend(step.finish())
    except DmaError as error:
        return str(error)
    return b"".join(head), b"".join(body), step.recipients


@settings(max_examples=200, deadline=None)
@given(header_text(), st.integers(0, 1200), st.integers(100, 1500), st.booleans())
def test_blocks_give_the_same_result_as_lines(
    text: bytes, max_line: int, max_piece: int, collect: bool
) -> None:
    """Feeding normalise_blocks's items (blocks, lone long lines, pieces) to feed_block gives
    exactly what feeding normalise_lines's lines and pieces to feed gives, the error
    included (pieces of at least 100 octets, as pieces_of: a first piece shows what its
    line is)."""
    if lines_of(text) is None:
        return
    lines = run(normalise_lines([text], ignore_dots=True, max_piece=max_piece), collect)
    blocks = run_blocks(
        normalise_blocks([text], ignore_dots=True, max_line=max_line, max_piece=max_piece),
        collect)
    if isinstance(lines, str):
        assert isinstance(blocks, str)
    else:
        assert blocks == lines
