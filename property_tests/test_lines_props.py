"""Properties of dma.core.lines.normalise_lines and normalise_blocks over arbitrary bytes
and chunk splits."""

from __future__ import annotations

import re
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from dma.core.errors import DataError
from dma.core.lines import normalise_blocks, normalise_lines

# Bytes rich in the characters that matter: CR, LF, dots, and now and then a NUL.
_interesting = st.sampled_from([b"\r", b"\n", b"\r\n", b".", b"a", b" ", b"\xff", b"\0"])
messages = st.lists(st.one_of(_interesting, st.binary(max_size=8)), max_size=40).map(b"".join)


@st.composite
def split_message(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """A message and the same bytes cut into chunks at arbitrary points (empty chunks too)."""
    data = draw(messages)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=10)))
    bounds = [0, *cuts, len(data)]
    return data, [data[a:b] for a, b in pairwise(bounds)]


def run(chunks: list[bytes], ignore_dots: bool) -> list[bytes] | str:
    """The lines out of ``chunks``, or the error message when it raises DataError."""
    try:
        return list(normalise_lines(chunks, ignore_dots=ignore_dots))
    except DataError as error:
        return str(error)


def reference(data: bytes, ignore_dots: bool) -> list[bytes] | str:
    """A slow, obviously right model: split on any line end, stop at a lone dot."""
    lines = re.split(rb"\r\n|\r|\n", data)
    if lines[-1] == b"":
        lines.pop()
    result = []
    for number, line in enumerate(lines, 1):
        ended = number < len(lines) or re.search(rb"[\r\n]\Z", data) is not None
        if not ignore_dots and line == b"." and ended:
            break
        if b"\0" in line:
            return f"message line {number} contains a NUL byte"
        result.append(line + b"\n")
    return result


@settings(max_examples=200, deadline=None)
@given(split_message(), st.booleans())
def test_chunk_boundaries_do_not_matter(case: tuple[bytes, list[bytes]], dots: bool) -> None:
    """Any split of the input into chunks gives the same lines as the whole input in one."""
    data, chunks = case
    assert run(chunks, dots) == run([data], dots)


@settings(max_examples=200, deadline=None)
@given(split_message(), st.booleans())
def test_matches_the_reference_model(case: tuple[bytes, list[bytes]], dots: bool) -> None:
    """Output equals the simple model: content kept, line ends normalised, dot end, NUL error."""
    data, chunks = case
    got = run(chunks, dots)
    expected = reference(data, dots)
    if isinstance(expected, str):
        assert isinstance(got, str) and got.startswith(expected)
    else:
        assert got == expected


@settings(max_examples=200, deadline=None)
@given(split_message(), st.booleans())
def test_every_line_ends_in_one_lf_and_holds_no_cr(
    case: tuple[bytes, list[bytes]], dots: bool
) -> None:
    """Every output line ends in exactly one LF and holds no other CR, LF or NUL."""
    _, chunks = case
    got = run(chunks, dots)
    if isinstance(got, str):
        return
    for line in got:
        assert line.endswith(b"\n")
        assert b"\r" not in line and b"\n" not in line[:-1] and b"\0" not in line


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=20).map(lambda b: b.replace(b"\0", b"")), max_size=20))
def test_content_is_preserved_without_dots(pieces: list[bytes]) -> None:
    """With -i the joined output is the input with every line end made LF (plus a final one)."""
    data = b"".join(pieces)
    joined = b"".join(normalise_lines(pieces, ignore_dots=True))
    normalised = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if normalised and not normalised.endswith(b"\n"):
        normalised += b"\n"
    assert joined == normalised


@settings(max_examples=200, deadline=None)
@given(split_message(), st.booleans(), st.integers(1, 12))
def test_pieces_join_to_the_lines(
    case: tuple[bytes, list[bytes]], dots: bool, max_piece: int
) -> None:
    """With any piece size, pieces join to the same lines; each is bounded and well formed."""
    _, chunks = case
    whole = run(chunks, dots)
    try:
        pieces = list(normalise_lines(chunks, ignore_dots=dots, max_piece=max_piece))
    except DataError as error:
        assert isinstance(whole, str) and str(error) == whole
        return
    assert not isinstance(whole, str)
    lines: list[bytes] = []
    current = b""
    for piece in pieces:
        assert b"\n" not in piece[:-1]
        if piece.endswith(b"\n"):
            assert len(piece) - 1 <= max_piece
            assert len(piece) >= 2 or not current  # a split line's end holds content
            lines.append(current + piece)
            current = b""
        else:
            assert len(piece) == max_piece
            current += piece
    assert not current
    assert lines == whole


@settings(max_examples=300, deadline=None)
@given(split_message(), st.booleans(), st.integers(0, 12), st.integers(1, 12))
def test_blocks_are_the_lines_in_three_kinds_of_item(
    case: tuple[bytes, list[bytes]], dots: bool, max_line: int, max_piece: int
) -> None:
    """normalise_blocks gives the reference model's lines (or its NUL error), in items that
    are a block of whole lines of at most max_line octets, a longer line alone (whole
    up to max_piece), or max_piece-octet pieces of a longer one and its last piece."""
    data, chunks = case
    expected = reference(data, dots)
    try:
        items = list(normalise_blocks(chunks, ignore_dots=dots, max_line=max_line,
                                      max_piece=max_piece))
    except DataError as error:
        assert isinstance(expected, str) and str(error).startswith(expected)
        return
    assert not isinstance(expected, str)
    limit = min(max_line, max_piece)
    lines: list[bytes] = []
    current = b""
    for item in items:
        assert item
        if not item.endswith(b"\n"):  # a piece of a line over max_piece
            assert len(item) == max_piece
            current += item
        elif b"\n" in item[:-1]:  # a block: whole short lines, starting a line
            assert not current
            block = [line + b"\n" for line in item.split(b"\n")[:-1]]
            assert all(len(line) - 1 <= limit for line in block)
            lines.extend(block)
        else:  # one line, or the last piece of one: over the limit, or a short line alone
            assert len(item) - 1 <= max_piece
            assert len(item) >= 2 or not current
            lines.append(current + item)
            current = b""
    assert not current
    assert lines == expected
