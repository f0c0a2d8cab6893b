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

from collections.abc import Iterable, Iterator

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
    pending: list[bytes] = []  # the start of a line whose end has not arrived yet
    pending_size = 0
    split_line = False  # pieces of the current line went out already
    after_cr = False  # the last data seen was a CR: an LF arriving next is part of it
    line_number = 0  # lines yielded so far
    for chunk in chunks:
        if not chunk:
            continue
        if after_cr and chunk[0] == 0x0A:
            chunk = chunk[1:]
            if not chunk:
                after_cr = False  # that LF completed the CRLF; the next LF is a new line
                continue
        after_cr = chunk[-1] == 0x0D
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        has_nul = b"\0" in chunk
        pieces = chunk.split(b"\n")
        tail = pieces.pop()  # the unterminated rest, b"" when the chunk ended a line
        for piece in pieces:
            if pending:
                pending.append(piece)
                piece = b"".join(pending)
                pending.clear()
                pending_size = 0
                # the joined line may hold a NUL from an earlier chunk's part: checked there
            line_number += 1
            if not ignore_dots and piece == _DOT and not split_line:
                return
            if has_nul and b"\0" in piece:
                raise _nul_error(line_number)
            split_line = False
            if len(piece) > max_piece:
                end = (len(piece) - 1) // max_piece * max_piece
                for start in range(0, end, max_piece):
                    yield piece[start : start + max_piece]
                piece = piece[end:]
            yield piece + b"\n"
        if tail:
            if has_nul and b"\0" in tail:
                raise _nul_error(line_number + 1)
            pending.append(tail)
            pending_size += len(tail)
            if pending_size > max_piece:
                joined = b"".join(pending)
                end = (len(joined) - 1) // max_piece * max_piece
                for start in range(0, end, max_piece):
                    yield joined[start : start + max_piece]
                pending = [joined[end:]]
                pending_size = len(pending[0])
                split_line = True
    if pending:
        yield b"".join(pending) + b"\n"
