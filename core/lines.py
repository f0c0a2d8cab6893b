"""The streaming line normaliser: stdin chunks in, LF-terminated lines out (SPEC 3.1-3.2).

The message never sits whole in memory, nor does any one line of it: the shell
reads chunks and pulls pieces from ``normalise_lines`` one at a time.  A line of up
to ``PIECE_OCTETS`` octets comes whole; a longer one (a 100 MB body on one line)
comes in pieces, each without its line end but the last.  Every line end the world
uses (CRLF, LF, a bare CR) becomes one LF, so no bare CR or LF can reach the SMTP
wire, where a stray one is the stuff of smuggling attacks.  The work is done per
chunk with ``bytes.replace`` and ``bytes.split``, never per byte, so a 100 MB
message costs little more than one pass of C-level byte scanning.
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
    """
    if max_piece < 1:
        raise SoftwareError(f"max_piece {max_piece} is not a positive size")
    stop_at_dot = not ignore_dots
    pending: list[bytes] = []  # the start of a line whose end has not arrived yet
    pending_size = 0
    split_line = False  # pieces of the current line went out already
    after_cr = False  # the last data seen was a CR: an LF arriving next is part of it
    line_number = 0  # lines ended so far, counted a chunk at a time (for the NUL error)
    for chunk in chunks:
        chunk, after_cr = _lf_only(chunk, after_cr)
        nul = chunk.find(b"\0")
        if nul >= 0:  # only the whole lines before the NUL's line go out
            chunk = chunk[: chunk.rfind(b"\n", 0, nul) + 1]
        lines = chunk.split(b"\n")
        tail = lines.pop()  # the unterminated rest, b"" when the chunk ended a line
        if pending and lines:  # the first line's start came in earlier chunks
            pending.append(lines[0])
            lines[0] = b"".join(pending)
            pending, pending_size = [], 0
        # The per-line loop: the hot path of every message, kept to the few common steps.
        for line in lines:
            if line == _DOT and stop_at_dot and not split_line:
                return
            split_line = False
            if len(line) > max_piece:
                line = yield from _full_pieces(line, max_piece)
            yield line + b"\n"
        line_number += len(lines)
        if nul >= 0:
            raise _nul_error(line_number + 1)
        if tail:
            pending.append(tail)
            pending_size += len(tail)
            if pending_size > max_piece:
                rest = yield from _full_pieces(b"".join(pending), max_piece)
                pending, pending_size, split_line = [rest], len(rest), True
    if pending:
        yield b"".join(pending) + b"\n"


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
