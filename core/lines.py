"""The streaming line normaliser: stdin chunks in, LF-terminated lines out (SPEC 3.1-3.2).

The message never sits whole in memory, nor does any one line of it: the shell
reads chunks and pulls pieces from ``normalise_lines`` one at a time.  A line of up
to ``PIECE_OCTETS`` octets comes whole; a longer one (a 100 MB body on one line)
comes in pieces, each without its line end but the last.  Every line end the world
uses (CRLF, LF, a bare CR) becomes one LF, so no bare CR or LF can reach the SMTP
wire, where a stray one is the stuff of smuggling attacks.  The work is done per
chunk with ``bytes.replace`` and ``bytes.split``, never per byte, so a 100 MB
message costs little more than one pass of C-level byte scanning; and
``normalise_blocks`` hands the body on a chunk at a time, never a line at a time.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator

from dma.core.errors import DataError, SoftwareError

MAX_LINE_OCTETS = 998
"""RFC 5322's limit for one line without its CRLF; longer ones are re-encoded later."""

PIECE_OCTETS = 64 * 1024
"""Lines up to this many octets (LF not counted) come whole; longer ones in pieces."""

_DOT = b"."


def _nul_error(line_number: int) -> DataError:
    """The error for a NUL byte in message line ``line_number`` (1-based)."""
    return DataError(
        f"message line {line_number} contains a NUL byte",
        hint="binary data must be MIME-encoded (e.g. base64) before it is mailed",
    )


def normalise_lines(
    chunks: Iterable[bytes], *, ignore_dots: bool, max_piece: int = PIECE_OCTETS
) -> Iterator[bytes]:
    """Yield the lines of the message in ``chunks``, each ending in exactly one ``b"\\n"``.

    A line longer than ``max_piece`` octets (LF not counted) is yielded in pieces:
    pieces of exactly ``max_piece`` octets without LF, then a last piece of at least
    one octet and the LF.  So a piece ending in LF ends its line, and one without is
    never empty and never the whole line.  Consumers that want lines join pieces.

    CRLF, LF and a bare CR each end a line, also when a CR ends one chunk and the
    LF starts the next.  A last line without a line end gets one.  Unless
    ``ignore_dots`` (``-i``), a line that is exactly ``.`` ends the input and no
    further chunk is pulled; a final ``.`` without a line end is an ordinary line,
    as in the C dma.  Dots are not unstuffed.  A NUL byte raises DataError naming
    the line.  Long lines pass through unchanged (``core.longlines`` handles them).

    These are ``normalise_blocks``'s items with its blocks split into their lines.
    """
    for block in normalise_blocks(chunks, ignore_dots=ignore_dots, max_line=max_piece,
                                  max_piece=max_piece):
        if -1 < block.find(b"\n") < len(block) - 1:  # several whole lines
            lines = block.split(b"\n")
            lines.pop()
            for line in lines:
                yield line + b"\n"
        else:
            yield block


def normalise_blocks(
    chunks: Iterable[bytes], *, ignore_dots: bool, max_line: int = MAX_LINE_OCTETS,
    max_piece: int = PIECE_OCTETS,
) -> Iterator[bytes]:
    """``normalise_lines`` a chunk at a time: the same octets, in items of three kinds.

    - a block: one or more whole lines of at most ``max_line`` octets each (LF not
      counted), each ending in its LF, the first starting a line;
    - a line longer than ``max_line`` octets alone, whole up to ``max_piece`` octets;
    - a longer one in ``normalise_lines``'s pieces (none empty, the last with the LF).

    So an item with an LF before its last octet is a block of short lines: a consumer
    that only writes (the body of a message) handles 64 KiB at a time, and needs to
    look at lines only in an item with one LF, at its end.  Line ends, the dot end and
    the NUL error are ``normalise_lines``'s (which splits these blocks).
    """
    if max_piece < 1:
        raise SoftwareError(f"max_piece {max_piece} is not a positive size")
    if max_line < 0:
        raise SoftwareError(f"max_line {max_line} is negative")
    max_line = min(max_line, max_piece)
    stop_at_dot = not ignore_dots
    pending: list[bytes] = []  # the start of a line whose end has not arrived yet
    pending_size = 0
    split_size = 0  # octets of the current line that went out as pieces already
    after_cr = False  # the last data seen was a CR: an LF arriving next is part of it
    line_number = 0  # lines ended so far, counted a chunk at a time (for the NUL error)
    for chunk in chunks:
        chunk, after_cr = _lf_only(chunk, after_cr)
        nul = chunk.find(b"\0")
        if nul >= 0:  # only the whole lines before the NUL's line go out
            chunk = chunk[: chunk.rfind(b"\n", 0, nul) + 1]
        lines = chunk.split(b"\n")
        tail = lines.pop()  # the unterminated rest, b"" when the chunk ended a line
        if lines:
            if pending:  # the first line's start came in earlier chunks
                pending.append(lines[0])
                lines[0] = b"".join(pending)
                pending, pending_size = [], 0
            first_split, split_size = split_size, 0
            dot = _dot_line(lines, first_split > 0) if stop_at_dot else None
            if dot is not None:
                yield from _blocks(lines[:dot], first_split, max_line, max_piece)
                return
            yield from _blocks(lines, first_split, max_line, max_piece)
            line_number += len(lines)
        if nul >= 0:
            raise _nul_error(line_number + 1)
        if tail:
            pending.append(tail)
            pending_size += len(tail)
            if pending_size > max_piece:
                rest = yield from _full_pieces(b"".join(pending), max_piece)
                split_size += pending_size - len(rest)
                pending, pending_size = [rest], len(rest)
    if pending:
        yield from _blocks([b"".join(pending)], split_size, max_line, max_piece)


def _dot_line(lines: list[bytes], first_is_split: bool) -> int | None:
    """The index of the first line that is exactly ``.`` (the end of the input), or None.

    A line whose start went out in pieces is never one (its pieces were not ``.``).
    """
    try:
        return lines.index(_DOT, 1 if first_is_split else 0)
    except ValueError:
        return None


def _blocks(lines: list[bytes], first_split: int, max_line: int, max_piece: int
            ) -> Iterator[bytes]:
    """The items of ``normalise_blocks`` for whole ``lines`` (without their LF), the
    first of which had ``first_split`` octets go out as pieces before."""
    if not lines:
        return
    if not first_split and max(map(len, lines)) <= max_line:  # the common case
        yield b"\n".join([*lines, b""])
        return
    start = 0  # the first line of the run of short lines not yielded yet
    for index, line in enumerate(lines):
        if len(line) + (first_split if index == 0 else 0) <= max_line:
            continue
        if start < index:
            yield b"\n".join([*lines[start:index], b""])
        if len(line) > max_piece:
            line = yield from _full_pieces(line, max_piece)
        yield line + b"\n"
        start = index + 1
    if start < len(lines):
        yield b"\n".join([*lines[start:], b""])


def _lf_only(chunk: bytes, after_cr: bool) -> tuple[bytes, bool]:
    """Return ``chunk`` with every line end as one LF, and whether it ended in a CR.

    ``after_cr`` says that the chunk before ended in a CR, so that an LF starting this
    one belongs to that CR's line end and goes.
    """
    if not chunk:
        return chunk, after_cr
    if after_cr and chunk[0] == 0x0A:
        chunk = chunk[1:]
        if not chunk:
            return chunk, False  # that LF completed the CRLF; the next LF is a new line
    after_cr = chunk[-1] == 0x0D
    if b"\r" in chunk:
        chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return chunk, after_cr


def _full_pieces(line: bytes, max_piece: int) -> Generator[bytes, None, bytes]:
    """Yield ``line`` in pieces of ``max_piece`` octets; return the rest, 1 to ``max_piece``."""
    end = (len(line) - 1) // max_piece * max_piece
    for start in range(0, end, max_piece):
        yield line[start : start + max_piece]
    return line[end:]
