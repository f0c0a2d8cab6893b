"""Tests for dma.core.lines: line ends, the dot rule, NUL bytes, streaming and speed."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Iterator

import pytest

from dma.core.errors import DataError
from dma.core.lines import MAX_LINE_OCTETS, PIECE_OCTETS, normalise_blocks, normalise_lines


def lines_of(*chunks: bytes, ignore_dots: bool = False) -> list[bytes]:
    """Run the normaliser over ``chunks`` and collect its lines."""
    return list(normalise_lines(chunks, ignore_dots=ignore_dots))


def test_lf_crlf_and_bare_cr_all_end_a_line() -> None:
    """LF, CRLF and a bare CR each end exactly one line and become a single LF."""
    assert lines_of(b"a\nb\r\nc\rd\n") == [b"a\n", b"b\n", b"c\n", b"d\n"]


def test_crlf_input_is_normalised_unlike_the_c_dma() -> None:
    """Deliberate difference: CRLF is stored as LF, so no CR reaches the spool."""
    out = b"".join(lines_of(b"Subject: x\r\n\r\nbody\r\n"))
    assert out == b"Subject: x\n\nbody\n"


def test_cr_lf_split_across_chunks_is_one_line_end() -> None:
    """A CR ending one chunk and an LF starting the next make one line end, not two."""
    assert lines_of(b"a\r", b"\nb\n") == [b"a\n", b"b\n"]


def test_cr_lf_split_with_empty_chunks_between_is_one_line_end() -> None:
    """Empty chunks between a CR and its LF do not turn them into two line ends."""
    assert lines_of(b"a\r", b"", b"", b"\nb") == [b"a\n", b"b\n"]


def test_two_crs_are_two_line_ends() -> None:
    """CR CR LF is a bare CR followed by a CRLF: an empty line follows the first."""
    assert lines_of(b"a\r", b"\r\nb") == [b"a\n", b"\n", b"b\n"]


def test_line_split_across_chunks_is_joined() -> None:
    """A line whose bytes arrive in several chunks comes out whole."""
    assert lines_of(b"Sub", b"ject: h", b"i\nx") == [b"Subject: hi\n", b"x\n"]


def test_final_line_without_newline_gets_one() -> None:
    """The last line gets a line end when the input has none."""
    assert lines_of(b"one\ntwo") == [b"one\n", b"two\n"]


def test_empty_input_yields_nothing() -> None:
    """No input gives no lines (the message is then only our headers)."""
    assert lines_of() == []
    assert lines_of(b"", b"") == []


def test_lone_dot_ends_the_input() -> None:
    """Without -i a line that is exactly '.' ends the input and is not stored."""
    assert lines_of(b"a\n.\nb\n") == [b"a\n"]


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"])
def test_lone_dot_with_any_line_end_ends_the_input(ending: bytes) -> None:
    """Deliberate difference: '.' followed by CRLF or a bare CR is a terminator too."""
    assert lines_of(b"a" + ending + b"." + ending + b"b" + ending) == [b"a\n"]


def test_lone_dot_in_the_headers_ends_the_input() -> None:
    """The dot rule applies anywhere, headers included, as in the C dma."""
    assert lines_of(b"Subject: x\n.\n\nbody\n") == [b"Subject: x\n"]


def test_nothing_is_consumed_after_the_dot() -> None:
    """After the dot line no further chunk is pulled from the source."""
    pulled: list[bytes] = []

    def source() -> Iterator[bytes]:
        for chunk in (b"a\n", b".\n", b"after\n", b"more\n"):
            pulled.append(chunk)
            yield chunk

    assert list(normalise_lines(source(), ignore_dots=False)) == [b"a\n"]
    assert pulled == [b"a\n", b".\n"]


def test_dot_split_across_chunks_still_ends_the_input() -> None:
    """A dot line whose dot and line end arrive in different chunks still ends the input."""
    assert lines_of(b"a\n.", b"\nb\n") == [b"a\n"]


def test_ignore_dots_keeps_the_dot_line() -> None:
    """With -i a lone '.' is an ordinary line and reading goes on."""
    assert lines_of(b"a\n.\nb\n", ignore_dots=True) == [b"a\n", b".\n", b"b\n"]


def test_final_dot_without_newline_is_a_line() -> None:
    """A last '.' with no line end is stored as '.\\n', as in the C dma."""
    assert lines_of(b"a\n.") == [b"a\n", b".\n"]


def test_dots_are_not_unstuffed() -> None:
    """A line starting with two dots is stored unchanged: stuffing is only for SMTP."""
    assert lines_of(b"..x\n.. \n") == [b"..x\n", b".. \n"]


def test_nul_byte_names_the_line() -> None:
    """A NUL byte raises DataError (exit 65) naming its line and saying to MIME-encode."""
    with pytest.raises(DataError) as caught:
        lines_of(b"one\r\ntwo\nth\0ree\n")
    assert caught.value.exit_code == 65
    assert "line 3" in str(caught.value)
    assert "MIME" in str(caught.value)


def test_nul_in_an_unfinished_line_names_that_line() -> None:
    """A NUL in a line whose end has not arrived yet is reported with that line's number."""
    with pytest.raises(DataError, match="line 2 "):
        lines_of(b"one\nt\0", b"wo\nthree\n")


def test_nul_after_the_dot_is_never_seen() -> None:
    """Data after the terminating dot is not examined, NUL bytes included."""
    assert lines_of(b"a\n.\n\0\0\n") == [b"a\n"]


def test_long_lines_pass_through_unchanged() -> None:
    """Lines longer than 998 octets are not cut here: longlines re-encodes them later."""
    long = b"x" * (MAX_LINE_OCTETS * 3)
    assert lines_of(long[:1000], long[1000:] + b"\r\nend") == [long + b"\n", b"end\n"]


def test_eight_bit_data_passes_untouched() -> None:
    """Bytes 0x80-0xff and other controls but NUL, CR and LF are kept as they are."""
    data = bytes(range(1, 256)).replace(b"\r", b"").replace(b"\n", b"")
    assert lines_of(data) == [data + b"\n"]


def test_a_large_message_is_fast() -> None:
    """Sixteen MiB in 64 KiB chunks take well under a second of CPU (100 MB scales linearly)."""
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    block = line * (65536 // len(line))
    chunks = [block] * 256
    start = time.process_time()
    count = sum(1 for _ in normalise_lines(chunks, ignore_dots=False))
    elapsed = time.process_time() - start
    assert count == 256 * (65536 // len(line))
    assert elapsed < 2.0


def test_lf_completing_a_split_crlf_does_not_swallow_the_next_empty_line() -> None:
    """Chunks "a\\r", "\\n", "\\n" give the line "a" and then an empty line."""
    assert list(normalise_lines([b"a\r", b"\n", b"\n"], ignore_dots=True)) == [b"a\n", b"\n"]


def test_a_line_over_the_piece_size_comes_in_pieces() -> None:
    """A long line comes as full-size pieces without LF, then the rest with the LF."""
    out = list(normalise_lines([b"ab\n" + b"x" * 25 + b"\ncd"], ignore_dots=False, max_piece=10))
    assert out == [b"ab\n", b"x" * 10, b"x" * 10, b"x" * 5 + b"\n", b"cd\n"]


def test_the_last_piece_of_a_line_is_never_only_its_lf() -> None:
    """A line of exactly twice the piece size ends with a piece holding content, not a bare LF."""
    for chunks in ([b"y" * 20 + b"\n"], [b"y" * 10, b"y" * 10, b"\n"], [b"y" * 20]):
        out = list(normalise_lines(chunks, ignore_dots=False, max_piece=10))
        assert out == [b"y" * 10, b"y" * 10 + b"\n"], chunks


def test_the_end_of_a_long_line_is_no_dot_line() -> None:
    """A last piece '.' of a line split into pieces does not end the input."""
    out = list(normalise_lines([b"..", b"\n.\nafter\n"], ignore_dots=False, max_piece=1))
    assert out == [b".", b".\n"]


def test_a_20_mb_line_streams_in_little_memory() -> None:
    """A 20 MB line read in 64 KiB chunks never has more than a few pieces in memory."""

    def chunks() -> Iterator[bytes]:
        for _ in range(320):
            yield b"z" * 65536
        yield b"\nend\n"

    total = 0
    biggest = 0
    tracemalloc.start()
    try:
        for piece in normalise_lines(chunks(), ignore_dots=False):
            total += len(piece)
            biggest = max(biggest, len(piece))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total == 320 * 65536 + 5
    assert biggest == PIECE_OCTETS + 1  # the last piece, with the LF
    assert peak < 1 << 20


# --- normalise_blocks: the same lines, a chunk at a time ---------------------------------


def blocks_of(*chunks: bytes, max_line: int = MAX_LINE_OCTETS, max_piece: int = PIECE_OCTETS,
              ignore_dots: bool = False) -> list[bytes]:
    """Run the block normaliser over ``chunks`` and collect its items."""
    return list(normalise_blocks(chunks, ignore_dots=ignore_dots, max_line=max_line,
                                 max_piece=max_piece))


def test_a_chunk_of_short_lines_is_one_block() -> None:
    """The whole lines of a chunk come as one item, line ends normalised; the line that the
    next chunk ends starts the next item."""
    assert blocks_of(b"a\r\nbb\nc", b"c\rd\n") == [b"a\nbb\n", b"cc\nd\n"]


def test_a_line_over_max_line_comes_alone() -> None:
    """A line longer than max_line splits the block around it; one over max_piece comes in
    pieces."""
    assert blocks_of(b"a\nbb\n" + b"x" * 5 + b"\nc\n" + b"y" * 12 + b"\nd\n",
                     max_line=3, max_piece=10) == [
        b"a\nbb\n", b"x" * 5 + b"\n", b"c\n", b"y" * 10, b"yy\n", b"d\n"]


def test_the_end_of_a_line_split_across_chunks_comes_alone() -> None:
    """A line that went out in pieces ends in an item of its own, never inside a block."""
    assert blocks_of(b"z" * 12, b"z\nshort\n", max_line=3, max_piece=10) == [
        b"z" * 10, b"zzz\n", b"short\n"]


def test_blocks_end_at_the_dot() -> None:
    """The lines before a lone dot come; nothing after it."""
    assert blocks_of(b"a\nb\n.\nc\n", b"d\n") == [b"a\nb\n"]
    assert blocks_of(b"a\n.\nc\n", ignore_dots=True) == [b"a\n.\nc\n"]


def test_blocks_name_the_line_with_a_nul() -> None:
    """The whole lines before a NUL's line come, then the error names that line."""
    items = normalise_blocks([b"a\nb\n", b"c\nd\0e\n"], ignore_dots=False)
    assert next(items) == b"a\nb\n"
    assert next(items) == b"c\n"
    with pytest.raises(DataError, match="message line 4 contains a NUL"):
        next(items)


def test_a_large_message_is_a_few_items_per_chunk() -> None:
    """16 MiB of short lines in 64 KiB chunks come as about one item per chunk."""
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    chunk = line * (65536 // len(line)) + b"The quick"
    items = blocks_of(*[chunk] * 256)
    assert len(items) <= 257
    assert b"".join(items) == (chunk * 256).replace(b"\r\n", b"\n") + b"\n"
