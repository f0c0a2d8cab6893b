"""Re-encoding of lines longer than 998 octets, so that the spool never holds one (SPEC 3.2).

The C dma rejects such input (issue #18) and treats a spool file holding one as corrupt;
the SMTP limit is 1000 octets with CRLF.  We accept the line and rewrite only what must
change: a long header line is folded, a long plain body part becomes quoted-printable,
long base64 and quoted-printable lines are re-wrapped.  Everything else passes through
byte for byte, so signatures over untouched parts stay valid.

Two streaming passes over the spooled message (LF lines, no CR, long lines in pieces as
``core.lines.normalise_lines`` yields them): ``find_long_parts`` says which parts need
work, ``reencode`` does it.  Memory is the boundary stack, one header line (at most
``FIELD_LIMIT``) and a line's worth of output: never the message, a header block or a
long line, so a 100 MB body on one line streams through a few 64 KiB pieces.

Parts are numbered in order of appearance: 0 is the top-level message, then every body
part as its header block starts, multipart containers included, so that the headers,
preamble and epilogue of a nested multipart have a number too.  message/rfc822 parts
are leaves: their bodies are not searched for boundaries.
"""

from __future__ import annotations

import binascii
import re
from bisect import bisect_right
from collections.abc import Generator, Iterable, Iterator, Sequence
from typing import Literal

from dma.core.errors import DataError, SoftwareError
from dma.core.values import frozen

MAX_LINE_OCTETS = 998

_FOLD_WIDTH = 78  # RFC 5322 2.1.1: fold header lines here when a blank allows it
_QP_WIDTH = 76  # RFC 2045 6.7: encoded lines, soft-break "=" included
_BASE64_WIDTH = 76  # RFC 2045 6.8
_LONGEST = MAX_LINE_OCTETS + 1  # a line with its LF
_BLANKS = b" \t"
_PLAIN_CTES = frozenset({"", "7bit", "8bit", "binary"})
_FOLD_POINT = re.compile(rb"[ \t](?=[^ \t\n])")
_ENCODED_WORD = rb"=\?[^?\s]*\?[bBqQ]\?[^?\s]*\?="
_ENDS_IN_WORD = re.compile(rb"(?:^|[ \t])" + _ENCODED_WORD + rb"[ \t]*$")
_STARTS_WITH_WORD = re.compile(rb"[ \t]+" + _ENCODED_WORD + rb"(?:[ \t]|$)")
_COMMENT = re.compile(r"\([^()]*\)")
_HEX = frozenset(b"0123456789ABCDEFabcdef")
_QP_SPECIALS = re.compile(rb"[^\x21-\x3c\x3e-\x7e \t]+")  # what quoted-printable escapes
_BLANK_HOLD = 900  # trailing blanks of a re-wrapped QP line that stay with its last token

FIELD_LIMIT = 1 << 20
"""Bound on one header line of a part, and on its Content-Type or
Content-Transfer-Encoding value, in octets; bigger is a DataError."""

# Fields whose value RFC 5322/2045 give a grammar: an encoded word there would change
# its meaning, so they are split between tokens instead.  Everything else (Subject,
# Comments, Content-Description, X-*) is unstructured text.
_STRUCTURED_FIELDS = frozenset(
    {
        "from", "sender", "reply-to", "to", "cc", "bcc", "message-id", "in-reply-to",
        "references", "date", "received", "return-path", "mime-version", "keywords",
        "dkim-signature", "authentication-results", "disposition-notification-to",
        "autocrypt", "delivered-to", "envelope-to",
    }
)
_STRUCTURED_PREFIXES = ("resent-", "content-", "list-", "arc-")
_UNSTRUCTURED_EXCEPTIONS = frozenset({"content-description"})

Role = Literal["separator", "body", "preamble", "epilogue", "delimiter"]


@frozen
class LongParts:
    """What ``find_long_parts`` found, for ``reencode``."""

    long: frozenset[int]  # parts whose body holds a line over MAX_LINE_OCTETS
    convert: frozenset[int]  # those of them that become quoted-printable


@frozen
class _Entity:
    """What a header block says about the body that follows it."""

    ordinal: int
    container: bool  # multipart with a usable boundary: its body holds parts
    boundary: bytes
    cte: str  # lower-cased Content-Transfer-Encoding, "" when absent
    has_mime_version: bool


@frozen
class _HeaderLine:
    """One line of a part's header block, whole."""

    ordinal: int
    line: bytes
    number: int


@frozen
class _HeaderEnd:
    """The end of a part's header block: what it says, and whether a body follows."""

    entity: _Entity
    ended: bool  # closed by an empty line, so a body follows


@frozen
class _Piece:
    """A line outside any header block, or a piece of a long one, with its part."""

    ordinal: int
    role: Role
    data: bytes  # ends in LF when it ends its line
    number: int  # 1-based line number
    boundaries: tuple[bytes, ...]  # open multipart boundaries, innermost first
    first: bool  # the piece starts its line
    long: bool  # its line is over the limit (known from the line's first piece)


_Event = _HeaderLine | _HeaderEnd | _Piece


# --------------------------------------------------------------------------------------
# public API


def find_long_parts(lines: Iterable[bytes]) -> LongParts:
    """Return the parts whose body holds a line over ``MAX_LINE_OCTETS``, and which convert.

    ``lines`` are LF lines; a long one may come in pieces, a piece without LF going on
    in the next (what ``normalise_lines`` yields).  The LF does not count.  Header
    lines do not count either: ``reencode`` folds them wherever they are, and a long
    Subject alone is no reason to re-encode a body.  The preamble, delimiters and
    epilogue of a multipart count for the multipart.  A listed part converts to
    quoted-printable when the long line is in its body and it has no
    Content-Transfer-Encoding or 7bit, 8bit, binary.  An empty ``long`` does not mean
    that nothing is long: run ``reencode`` whenever a line was.  Raises SoftwareError
    on input that is not LF lines.
    """
    long: set[int] = set()
    convert: set[int] = set()
    entity: _Entity | None = None  # of the part whose header block ended last
    for event in _Walker().events(lines):
        if isinstance(event, _HeaderEnd):
            entity = event.entity
        elif isinstance(event, _Piece) and event.first and event.long:
            long.add(event.ordinal)
            if (
                event.role == "body" and entity is not None and entity.ordinal == event.ordinal
                and entity.cte in _PLAIN_CTES
            ):
                convert.add(event.ordinal)
    return LongParts(frozenset(long), frozenset(convert))


def reencode(lines: Iterable[bytes], parts: LongParts) -> Iterator[bytes]:
    """Yield the message again as whole LF lines of at most ``MAX_LINE_OCTETS`` octets plus LF.

    ``parts`` is what ``find_long_parts`` returned for the same lines.  Long header
    lines are folded in every part.  A long body line in a part not listed, or a plan
    that does not fit the message, is a bug of the caller (SoftwareError); a line that
    cannot be re-encoded without losing content (an unknown Content-Transfer-Encoding,
    a boundary longer than the limit) is a DataError.
    """
    mode = "pass"  # what the current part's body needs: pass, convert, or its CTE
    fields = _HeaderFolder(parts.convert)
    work: _LineWork | None = None  # the re-encoder of the current long line
    # The per-event loop: the hot path is a body line that passes unchanged.
    for event in _Walker().events(lines):
        if isinstance(event, _Piece):
            if event.first:
                work = _line_work(event, mode, parts)
                if work is None:
                    yield event.data
                    continue
            elif work is None:
                raise SoftwareError(f"line {event.number}: a piece without its line's start")
            yield from work.feed(event.data)
        elif isinstance(event, _HeaderEnd):
            yield from _added_fields(event, parts)
            mode = _body_mode(event.entity, parts)
            fields.block_end()
        else:
            yield from fields.line(event)


def _added_fields(event: _HeaderEnd, parts: LongParts) -> list[bytes]:
    """The header lines a part converting to quoted-printable gets at its block's end."""
    entity = event.entity
    if entity.ordinal not in parts.convert:
        return []
    if not (
        entity.ordinal in parts.long and event.ended and not entity.container
        and entity.cte in _PLAIN_CTES
    ):
        raise SoftwareError(
            f"part {entity.ordinal} is listed for conversion but cannot convert",
            hint="pass what find_long_parts returned for the same lines",
        )
    added = [b"Content-Transfer-Encoding: quoted-printable\n"]
    if entity.ordinal == 0 and not entity.has_mime_version:
        added.insert(0, b"MIME-Version: 1.0\n")
    return added


def _body_mode(entity: _Entity, parts: LongParts) -> str:
    """What the body after ``entity``'s header block needs: convert, its CTE, or pass."""
    if entity.ordinal in parts.convert:
        return "convert"
    return entity.cte if entity.ordinal in parts.long else "pass"


class _HeaderFolder:
    """Folds the long lines of header blocks, and drops the Content-Transfer-Encoding
    field of the parts that convert (``_added_fields`` puts the new one)."""

    def __init__(self, convert: frozenset[int]) -> None:
        self._convert = convert
        self._name: str | None = None  # the current header field's name
        self._dropping = False  # the current field is the CTE that conversion replaces
        self._previous = b""  # the field's last line out: does it end in an encoded word?

    def block_end(self) -> None:
        """A header block ended: a continuation line opening the next belongs to no field,
        so it is neither dropped with nor folded after the last field of this one."""
        self._name = None
        self._dropping = False
        self._previous = b""

    def line(self, event: _HeaderLine) -> list[bytes]:
        """The lines to write for one whole header line."""
        line = event.line
        continuation = line[:1] in (b" ", b"\t")
        if not continuation:
            self._name = _field_name(line)
            self._dropping = (
                event.ordinal in self._convert and self._name == "content-transfer-encoding"
            )
            self._previous = b""
        if self._dropping:
            return []
        if len(line) <= _LONGEST:
            self._previous = line[:-1]
            return [line]
        after_word = _ENDS_IN_WORD.search(self._previous) is not None
        pieces = _fold(line[:-1], self._name, continuation, after_word)
        if pieces:
            self._previous = pieces[-1]
        return [piece + b"\n" for piece in pieces]


def _line_work(event: _Piece, mode: str, parts: LongParts) -> _LineWork | None:
    """The re-encoder for the line ``event`` starts, or None when it passes unchanged."""
    if event.role == "body" and mode == "convert":
        return _QPEncoder()
    if not event.long:
        return None
    if event.ordinal not in parts.long:
        raise SoftwareError(
            f"line {event.number}: part {event.ordinal} has a line over {MAX_LINE_OCTETS} "
            "octets but is not in long_parts",
            hint="pass what find_long_parts returned for the same lines",
        )
    if event.role == "delimiter":  # whole, its long padding already cut by the walk
        return _Delimiter(event.number)
    if event.role in ("preamble", "epilogue"):
        # Readers ignore these (RFC 2046 5.1.1); a split loses nothing they show.
        return _Splitter(MAX_LINE_OCTETS, event.boundaries)
    if mode == "base64":
        return _Splitter(_BASE64_WIDTH, event.boundaries)
    if mode == "quoted-printable":
        return _QPRewrapper(event.number)
    raise DataError(
        f"line {event.number}: a line over {MAX_LINE_OCTETS} octets in a part with "
        f"Content-Transfer-Encoding {mode!r} cannot be re-encoded",
        hint=f"keep lines to {MAX_LINE_OCTETS} octets or use base64",
    )


# --------------------------------------------------------------------------------------
# the MIME structure, as a stream


class _Walker:
    """Tags every piece with its part: header lines whole, other lines piece by piece."""

    def __init__(self) -> None:
        self.frames: list[tuple[bytes, int]] = []  # open multiparts, outermost first
        self.boundaries: tuple[bytes, ...] = ()
        self.ordinal = 0
        self.next_ordinal = 1
        self.role: Role | Literal["headers"] = "headers"
        self.reader = _EntityReader()
        self.number = 0
        self.header_pieces: list[bytes] = []  # a header line arriving in pieces
        self.header_size = 0
        self.lead: list[bytes] = []  # a line's first pieces, until it can be judged
        self.lead_size = 0
        self.held: list[bytes] = []  # a long line that may still turn out to be a delimiter
        self.held_size = 0
        self.match = (-1, False)  # what _match_delimiter said of the held line

    def events(self, lines: Iterable[bytes]) -> Iterator[_Event]:
        """The events of the message in ``lines``, in order.

        A line is judged (delimiter, header, body; long or not) once it has ended or
        passed the limit, so the size of the pieces it came in does not matter.
        """
        state = "start"  # of the current line: start, lead, held, rest
        # The per-piece loop: the hot path.  A whole short line, the common case, is
        # judged on its one piece; what is rare (a line too short to judge yet, one that
        # may be a delimiter, the rest of a long line) is a method of its own.
        for piece in lines:
            if not piece:
                continue
            lf = piece.find(b"\n")
            last = len(piece) - 1
            if 0 <= lf < last:
                raise _not_lf_lines(self.number + (state == "start"))
            ends = lf == last
            if state == "start":
                self.number += 1
                if not ends and last < _LONGEST:  # too short to judge: wait for more
                    self.lead, self.lead_size, state = [piece], len(piece), "lead"
                    continue
                first = piece
            elif state == "lead":
                joined = self._lead(piece, ends)
                if joined is None:
                    continue
                first = joined
            elif state == "held":
                state = yield from self._held(piece, ends)
                continue
            else:
                yield from self._more(piece, ends)
                state = "start" if ends else "rest"
                continue
            if self.boundaries and first[:2] == b"--":
                state = yield from self._maybe_delimiter(first, ends)
                continue
            yield from self._start(first, ends)
            state = "start" if ends else "rest"
        yield from self._end(state)

    def _lead(self, piece: bytes, ends: bool) -> bytes | None:
        """The line's first pieces joined once it can be judged, else None (wait for more)."""
        self.lead.append(piece)
        self.lead_size += len(piece)
        if not ends and self.lead_size <= _LONGEST:
            return None
        first = b"".join(self.lead)
        self.lead = []
        return first

    def _maybe_delimiter(self, first: bytes, ends: bool) -> Generator[_Event, None, str]:
        """A line's judged start that begins with ``--`` in a multipart; return the state."""
        self.match = _match_delimiter(first, self.boundaries, ends)
        if self.match[0] >= 0 and ends:
            yield from self._delimiter(first, len(first) > _LONGEST, *self.match)
            return "start"
        if self.match[0] >= 0:  # a delimiter if only blanks follow: hold it until known
            self.held, self.held_size = [first], len(first)
            return "held"
        yield from self._start(first, ends)
        return "start" if ends else "rest"

    def _held(self, piece: bytes, ends: bool) -> Generator[_Event, None, str]:
        """The next piece of a long line that may still be a delimiter; return the state."""
        if not piece.rstrip(b"\n").strip(_BLANKS):  # still only padding
            self.held.append(piece)
            self.held_size += len(piece)
            if ends:
                line = self.held[0].rstrip(_BLANKS) + b"\n"
                self.held = []
                yield from self._delimiter(line, True, *self.match)
                return "start"
            if self.held_size > FIELD_LIMIT:
                raise DataError(
                    f"line {self.number}: a line starting as a MIME delimiter goes "
                    f"on with over {FIELD_LIMIT} octets of blanks",
                    hint="remove the padding after the boundary",
                )
            return "held"
        yield from self._start(self.held[0], False)  # no delimiter after all
        for earlier in self.held[1:]:
            yield from self._more(earlier, False)
        self.held = []
        yield from self._more(piece, ends)
        return "start" if ends else "rest"

    def _end(self, state: str) -> Iterator[_Event]:
        """The end of the input: the last line must have ended; close an open header block."""
        if state != "start":
            raise _not_lf_lines(self.number)
        if self.role == "headers" and self.reader.lines:
            yield _HeaderEnd(self.reader.entity(self.ordinal), False)

    def _start(self, piece: bytes, ends: bool) -> Iterator[_Event]:
        """The first piece of a line that is no delimiter."""
        if self.role != "headers":
            long = not ends or len(piece) > _LONGEST
            yield _Piece(self.ordinal, self.role, piece, self.number, self.boundaries, True, long)
        elif piece == b"\n":
            entity = self.reader.entity(self.ordinal)
            self.reader = _EntityReader()
            yield _HeaderEnd(entity, True)
            yield _Piece(
                self.ordinal, "separator", piece, self.number, self.boundaries, True, False
            )
            if entity.container:
                self.frames.append((entity.boundary, self.ordinal))
                self.boundaries = (entity.boundary, *self.boundaries)
                self.role = "preamble"
            else:
                self.role = "body"
        else:
            yield from self._more(piece, ends)

    def _more(self, piece: bytes, ends: bool) -> Iterator[_Event]:
        """A piece of a line whose first piece went to ``_start``."""
        if self.role != "headers":
            yield _Piece(self.ordinal, self.role, piece, self.number, self.boundaries, False, True)
            return
        self.header_pieces.append(piece)
        self.header_size += len(piece)
        if self.header_size > FIELD_LIMIT:
            raise DataError(
                f"line {self.number}: a header line longer than {FIELD_LIMIT} octets",
                hint="headers hold short values: put big data in the body",
            )
        if ends:
            line = b"".join(self.header_pieces)
            self.header_pieces = []
            self.header_size = 0
            self.reader.add(line, self.number)
            yield _HeaderLine(self.ordinal, line, self.number)

    def _delimiter(self, line: bytes, long: bool, depth: int, closing: bool) -> Iterator[_Event]:
        """A whole delimiter line: ends the part (and inner multiparts), starts the next."""
        if self.role == "headers":
            yield _HeaderEnd(self.reader.entity(self.ordinal), False)
            self.reader = _EntityReader()
        del self.frames[len(self.frames) - depth :]  # inner multiparts end with their parent's part
        container = self.frames[-1][1]
        yield _Piece(container, "delimiter", line, self.number, self.boundaries, True, long)
        if closing:
            self.frames.pop()
            self.role, self.ordinal = "epilogue", container
        else:
            self.role, self.ordinal = "headers", self.next_ordinal
            self.next_ordinal += 1
        self.boundaries = tuple(boundary for boundary, _ in reversed(self.frames))


def _not_lf_lines(number: int) -> SoftwareError:
    """The error for input that is not LF lines, at line ``number``."""
    return SoftwareError(
        f"line {number} does not end in exactly one LF",
        hint="split the message into LF-terminated lines first",
    )


def _match_delimiter(piece: bytes, boundaries: tuple[bytes, ...], ends: bool) -> tuple[int, bool]:
    """Return (how many frames out, closing?) for a delimiter line, else (-1, False).

    RFC 2046 5.1.1 as Python's email parser reads it: ``--boundary``, an optional
    ``--``, then only blanks.  An outer boundary also ends the inner multiparts.  For
    the first piece of a long line (``ends`` False) the answer says that the line is a
    delimiter if the rest of it is blanks.
    """
    if not piece.startswith(b"--"):
        return -1, False
    end = len(piece) - 1 if ends else len(piece)
    for depth, boundary in enumerate(boundaries):
        if piece.startswith(boundary, 2):
            rest = piece[2 + len(boundary) : end]
            closing = rest.startswith(b"--")
            if closing:
                rest = rest[2:]
            if not rest.strip(_BLANKS):
                return depth, closing
    return -1, False


class _EntityReader:
    """Reads Content-Type, Content-Transfer-Encoding and MIME-Version off a header block,
    line by line, keeping only those values (each at most ``FIELD_LIMIT`` octets)."""

    def __init__(self) -> None:
        self.lines = 0
        self._name: str | None = None  # the field being kept
        self._parts: list[bytes] = []
        self._size = 0
        self._content_type: bytes | None = None
        self._cte: bytes | None = None
        self._mime_version = False

    def add(self, line: bytes, number: int) -> None:
        """Take one whole header line."""
        self.lines += 1
        if line[:1] in (b" ", b"\t"):
            if self._name is not None:
                self._keep(line[:-1], number)
            return
        self._close()
        name = _field_name(line)
        if name == "mime-version":
            self._mime_version = True
        elif (name == "content-type" and self._content_type is None) or (
            name == "content-transfer-encoding" and self._cte is None
        ):
            self._name = name
            self._keep(line[line.find(b":") + 1 : -1], number)

    def _keep(self, value: bytes, number: int) -> None:
        self._size += len(value)
        if self._size > FIELD_LIMIT:
            raise DataError(
                f"line {number}: a {self._name} field longer than {FIELD_LIMIT} octets",
                hint="no MIME header needs that much",
            )
        self._parts.append(value)

    def _close(self) -> None:
        if self._name == "content-type":
            self._content_type = b"".join(self._parts)
        elif self._name == "content-transfer-encoding":
            self._cte = b"".join(self._parts)
        self._name = None
        self._parts = []
        self._size = 0

    def entity(self, ordinal: int) -> _Entity:
        """What the block read so far says about the body that follows it."""
        self._close()
        maintype, boundary = _parse_content_type(self._content_type or b"")
        return _Entity(
            ordinal=ordinal,
            container=maintype == "multipart" and bool(boundary),
            boundary=boundary,
            cte=_without_comments((self._cte or b"").decode("latin-1")).strip().lower(),
            has_mime_version=self._mime_version,
        )


def _field_name(line: bytes) -> str | None:
    """The lower-cased field name of a first header line, None for a line without one."""
    colon = line.find(b":")
    if colon <= 0:
        return None
    return line[:colon].strip().decode("latin-1").lower()


def _parse_content_type(value: bytes) -> tuple[str, bytes]:
    """Return (main type, boundary) the way Python's email package reads them."""
    params = _split_params(value.decode("latin-1"))
    full = _without_comments(params[0]).strip().lower()
    maintype = full.split("/")[0].strip() if full.count("/") == 1 else "text"
    for param in params[1:]:
        name, equals, raw = param.partition("=")
        if not equals or name.strip().lower() != "boundary":
            continue
        text = raw.strip()
        if len(text) > 1 and text[0] == text[-1] == '"':
            text = text[1:-1].replace("\\\\", "\\").replace('\\"', '"')
        elif len(text) > 1 and text[0] == "<" and text[-1] == ">":
            text = text[1:-1]
        return maintype, text.encode("latin-1").rstrip()
    return maintype, b""


def _without_comments(value: str) -> str:
    """Drop RFC 5322 comments (unnested, which is all that MIME headers carry in practice)."""
    return _COMMENT.sub("", value)


def _split_params(value: str) -> list[str]:
    """Split at ``;`` outside quoted strings."""
    params: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in value:
        if quoted:
            quoted = escaped or char != '"'
            escaped = not escaped and char == "\\"
        elif char == '"':
            quoted = True
        elif char == ";":
            params.append("".join(current))
            current = []
            continue
        current.append(char)
    params.append("".join(current))
    return params


# --------------------------------------------------------------------------------------
# header lines


def fold_header_line(line: bytes, name: str | None, *, continuation: bool = False) -> list[bytes]:
    """Fold one header line (without LF) into pieces of at most ``MAX_LINE_OCTETS``.

    For callers outside this module (the header step at submission), which fold at
    blanks themselves but need this module's encoded-word and token splitting when a
    line has no blank to fold at.  ``name`` None is a line that is no field: it is
    cut hard, as there is no value to encode.
    """
    pieces = _fold(line, name and name.lower(), continuation, after_word=False)
    # A line of blanks alone would read as the end of the header block to some
    # parsers: trailing blanks carry no meaning in a header, so drop them instead.
    while len(pieces) > 1 and not pieces[-1].strip(_BLANKS):
        pieces.pop()
    return pieces


def is_unstructured(name: str) -> bool:
    """True for free-text fields (Subject, X-*, ...), which encoded words may carry."""
    return _unstructured(name)


def _unstructured(name: str | None) -> bool:
    if name is None:
        return False
    if name in _UNSTRUCTURED_EXCEPTIONS:
        return True
    return name not in _STRUCTURED_FIELDS and not name.startswith(_STRUCTURED_PREFIXES)


def _fold(text: bytes, name: str | None, continuation: bool, after_word: bool) -> list[bytes]:
    """Fold one header line (without LF) into lines of at most ``MAX_LINE_OCTETS``.

    Folding inserts a line break before a blank, so unfolding restores the value
    exactly (RFC 5322 2.2.3).  A stretch with no blank to fold at becomes encoded
    words in unstructured fields and is split between tokens in the others.
    ``after_word`` says that the field's text before ``text`` ends in an encoded word.
    """
    first_nonblank = len(text) - len(text.lstrip(_BLANKS))
    colon = text.find(b":")
    lead = colon + 1 if name is not None and not continuation else first_nonblank
    floor = max(lead, first_nonblank + 1)  # every piece keeps a non-blank
    points = [m.start() for m in _FOLD_POINT.finditer(text) if m.start() >= floor]
    pieces: list[bytes] = []
    segments = list(_segments(points, len(text)))
    for index, (start, end) in enumerate(segments):
        segment = text[start:end]
        if len(segment) <= MAX_LINE_OCTETS:
            pieces.append(segment)
            continue
        head = lead if start == 0 else len(segment) - len(segment.lstrip(_BLANKS))
        before = _ENDS_IN_WORD.search(pieces[-1]) is not None if pieces else after_word
        after = index + 1 < len(segments) and _STARTS_WITH_WORD.match(text, end) is not None
        pieces.extend(_split_unfoldable(segment, head, name, before, after))
    return pieces


def _segments(points: Sequence[int], length: int) -> Iterator[tuple[int, int]]:
    """Cut [0, length) at some of the sorted ``points`` into pieces of about _FOLD_WIDTH.

    Take the last point that keeps a piece within _FOLD_WIDTH, else the first one after
    it; a piece with no point inside may stay longer than any limit.
    """
    start = 0
    while length - start > _FOLD_WIDTH:
        first = bisect_right(points, start)
        if first == len(points):
            break
        last = bisect_right(points, start + _FOLD_WIDTH) - 1
        cut = points[last] if last >= first else points[first]
        yield start, cut
        start = cut
    yield start, length


def _split_unfoldable(
    segment: bytes, head: int, name: str | None, before: bool, after: bool
) -> list[bytes]:
    """Split a stretch with no blank to fold at; ``segment[:head]`` must stay together.

    ``before`` and ``after`` say that an encoded word precedes or follows the stretch.
    """
    core_end = max(head, len(segment.rstrip(_BLANKS)))
    lead, core, tail = segment[:head], segment[head:core_end], segment[core_end:]
    if _unstructured(name) and core and head + 80 <= MAX_LINE_OCTETS and len(tail) < 900:
        # RFC 2047 6.2: blanks between adjacent encoded words are dropped on decoding,
        # so blanks next to another encoded word go inside ours.
        if before and not lead.strip(_BLANKS):
            lead, core = b" ", lead + core
        if after:
            core, tail = core + tail + b" ", b""
        words = _encoded_words(core)
        lines = [lead + words[0], *(b" " + word for word in words[1:])]
        if len(lines[0]) > _FOLD_WIDTH and lead.strip(_BLANKS):
            lines[0:1] = [lead, b" " + words[0]]  # "Name:" alone, then the words
        lines[-1] += tail
        return lines
    points = _token_points(segment, head, core_end) if name is not None else []
    limit = MAX_LINE_OCTETS - 1  # continuation lines carry a leading blank
    pieces: list[bytes] = []
    for start, end in _segments(points, len(segment)):
        pieces.extend(_hard_chunks(segment[start:end], limit))
    return [pieces[0], *(b" " + piece for piece in pieces[1:])]


def _encoded_words(data: bytes) -> list[bytes]:
    """RFC 2047 B-encoded words of at most 75 characters, whole UTF-8 characters each."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        charset, size = b"unknown-8bit", 42  # the label Python's email package uses
    else:
        charset, size = b"utf-8", 45
    words: list[bytes] = []
    start = 0
    while start < len(data):
        end = min(start + size, len(data))
        if charset == b"utf-8":
            while start + 1 < end < len(data) and data[end] & 0xC0 == 0x80:
                end -= 1
        encoded = binascii.b2a_base64(data[start:end], newline=False)
        words.append(b"=?" + charset + b"?b?" + encoded + b"?=")
        start = end
    return words


def _token_points(segment: bytes, head: int, end: int) -> list[int]:
    """Where a structured value may take a blank: after , ; > and before <, unquoted.

    RFC 5322 3.2.2: CFWS between lexical tokens means a single space, so the blank that
    a fold there adds does not change the meaning.
    """
    points: list[int] = []
    quoted = escaped = False
    for index in range(head, end):
        char = segment[index]
        if quoted:
            quoted = escaped or char != 0x22
            escaped = not escaped and char == 0x5C
            continue
        cut = -1
        if char == 0x22:
            quoted = True
        elif char == 0x3C and index > head:
            cut = index
        elif char in b",;>" and index + 1 < end:
            cut = index + 1
        if cut > 0 and (not points or points[-1] != cut):
            points.append(cut)
    return points


def _hard_chunks(data: bytes, limit: int) -> list[bytes]:
    """Cut ``data`` every ``limit`` octets, never inside a UTF-8 sequence if avoidable."""
    chunks: list[bytes] = []
    start = 0
    while len(data) - start > limit:
        cut = start + limit
        for back in range(1, 4):
            if data[cut] & 0xC0 != 0x80:
                break
            if data[cut - back] & 0xC0 != 0x80:
                cut -= back
                break
        chunks.append(data[start:cut])
        start = cut
    chunks.append(data[start:])
    return chunks


# --------------------------------------------------------------------------------------
# body lines, each re-encoded as a stream of pieces


class _LineWork:
    """Re-encodes one line fed in pieces; the piece ending in LF ends it."""

    def feed(self, data: bytes) -> list[bytes]:
        """Take the next piece; return the whole output lines it completes."""
        raise NotImplementedError


class _Delimiter(_LineWork):
    """A long delimiter line: its transport padding goes (RFC 2046 5.1.1)."""

    def __init__(self, number: int) -> None:
        self._number = number

    def feed(self, data: bytes) -> list[bytes]:
        trimmed = data[:-1].rstrip(_BLANKS)
        if len(trimmed) > MAX_LINE_OCTETS or not data.endswith(b"\n"):
            raise DataError(
                f"line {self._number}: a MIME boundary of {len(trimmed)} octets is "
                f"longer than {MAX_LINE_OCTETS}",
                hint="use a boundary of at most 70 characters (RFC 2046)",
            )
        return [trimmed + b"\n"]


class _Splitter(_LineWork):
    """Cuts a line into lines of ``width`` octets, none of which reads as a MIME delimiter."""

    def __init__(self, width: int, boundaries: tuple[bytes, ...]) -> None:
        self._width = width
        self._delimiters = tuple(b"--" + boundary for boundary in boundaries)
        self._ahead = max((len(d) for d in self._delimiters), default=0)  # to see one whole
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        final = data.endswith(b"\n")
        buffer = self._buffer + (data[:-1] if final else data)
        width = self._width
        reserve = 0 if final else self._ahead  # more follows: cut only what can be judged
        delimiters = self._delimiters
        out: list[bytes] = []
        start = 0
        while len(buffer) - start > width + reserve:
            cut = start + width
            if delimiters:
                while cut > start + 1 and buffer.startswith(delimiters, cut):
                    cut -= 1
                if buffer.startswith(delimiters, cut):
                    cut = start + width  # nothing better in reach: garbage in, garbage out
            out.append(buffer[start:cut] + b"\n")
            start = cut
        if final:
            out.append(buffer[start:] + b"\n")
            self._buffer = b""
        else:
            self._buffer = buffer[start:]
        return out


_QP_TOKENS: tuple[bytes, ...] = tuple(
    bytes([octet]) if (33 <= octet <= 126 and octet != 61) or octet in (9, 32)
    else b"=%02X" % octet
    for octet in range(256)
)


def _qp_escape(match: re.Match[bytes]) -> bytes:
    return b"".join(map(_QP_TOKENS.__getitem__, match.group()))


def _qp_encode(raw: bytes) -> bytes:
    """Raw octets as quoted-printable text, each ``=`` the start of a three-octet escape."""
    return _QP_SPECIALS.sub(_qp_escape, raw)


class _QPPacker:
    """Packs quoted-printable text into LF lines of at most 76 characters, as a stream.

    Lines but the last end in a soft break ``=``; a line after a soft break never
    starts with ``-``, which could make it read as a MIME delimiter.  In the text fed,
    every ``=`` starts a three-character escape and the text ends between tokens; the
    line's last token (trailing blanks stay with it) comes to ``finish`` and is never
    split, so that a line may be longer than 76 only for it.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._broken = False  # the current line follows a soft break

    def feed(self, text: bytes) -> list[bytes]:
        """More text of the line; at least the last token follows."""
        buffer = self._buffer + text if self._buffer else text
        out: list[bytes] = []
        start = 0
        while True:
            dash = self._broken and buffer[start : start + 1] == b"-"
            if len(buffer) - start + 2 * dash <= _QP_WIDTH - 1:  # more follows: wait
                break
            start = self._cut(buffer, start, dash, out)
        self._buffer = buffer[start:]
        return out

    def finish(self, tail: bytes) -> list[bytes]:
        """The line's last token, with its trailing blanks: the rest of the line out."""
        buffer = self._buffer
        out: list[bytes] = []
        start = 0
        while True:
            rest = len(buffer) - start
            dash = self._broken and (buffer[start : start + 1] if rest else tail[:1]) == b"-"
            lead, skip = (b"=2D", 1) if dash else (b"", 0)
            if rest + len(tail) + 2 * dash <= _QP_WIDTH or not rest:
                # the last line; the tail alone on a line may be longer (its blanks)
                text = buffer[start + skip :] + tail if rest else tail[skip:]
                out.append(lead + text + b"\n")
                break
            if rest + 2 * dash > _QP_WIDTH - 1:
                start = self._cut(buffer, start, dash, out)
                continue
            out.append(lead + buffer[start + skip :] + b"=\n")  # break before the tail
            self._broken = True
            start = len(buffer)
        self._buffer = b""
        self._broken = False
        return out

    def _cut(self, buffer: bytes, start: int, dash: bool, out: list[bytes]) -> int:
        """Put the longest line that fits (75 and the soft break) out; return the new start."""
        lead, begin = (b"=2D", start + 1) if dash else (b"", start)
        cut = begin + _QP_WIDTH - 1 - len(lead)
        if buffer[cut - 1] == 0x3D:  # never split an escape
            cut -= 1
        elif buffer[cut - 2] == 0x3D:
            cut -= 2
        out.append(lead + buffer[begin:cut] + b"=\n")
        self._broken = True
        return cut


class _QPEncoder(_LineWork):
    """Encodes one line of raw content as quoted-printable (RFC 2045 6.7)."""

    def __init__(self) -> None:
        self._packer = _QPPacker()
        self._last = b""  # the last octet so far: a blank there is escaped only at the end

    def feed(self, data: bytes) -> list[bytes]:
        final = data.endswith(b"\n")
        raw = self._last + (data[:-1] if final else data)
        if not raw:
            return self._packer.finish(b"") if final else []
        self._last = raw[-1:]
        out = self._packer.feed(_qp_encode(raw[:-1])) if len(raw) > 1 else []
        if final:
            last = raw[-1]
            # rule 3: no blank before a hard break
            out += self._packer.finish(b"=%02X" % last if last in _BLANKS else _QP_TOKENS[last])
        return out


class _QPRewrapper(_LineWork):
    """Re-wraps one long quoted-printable line with soft breaks, decoding the same.

    ``=XX`` stays whole; a stray ``=`` becomes ``=3D``, what RFC 2045 tells readers to
    make of it; a last ``=`` is the soft break it was; trailing blanks stay with the
    last token, so that readers that strip them and readers that keep them both read
    the same as before (up to ``_BLANK_HOLD`` of them: a longer run goes on as text).
    """

    def __init__(self, number: int) -> None:
        self._packer = _QPPacker()
        self._carry = b""  # raw octets not yet judged: the last token and trailing blanks
        self._number = number

    def feed(self, data: bytes) -> list[bytes]:
        final = data.endswith(b"\n")
        raw = self._carry + (data[:-1] if final else data)
        stripped = len(raw.rstrip(_BLANKS))
        if len(raw) - stripped > _BLANK_HOLD:
            if stripped and raw[stripped - 1] == 0x3D:
                raise DataError(
                    f"line {self._number}: a quoted-printable line with '=' and then over "
                    f"{_BLANK_HOLD} blanks cannot be re-wrapped",
                    hint="remove the trailing blanks",
                )
            cut = len(raw) - _BLANK_HOLD  # the last token goes out as text with the blanks
            self._carry = b"" if final else raw[cut:]
            out = self._packer.feed(_qp_scan(raw, 0, cut, -1))
            return out + self._packer.finish(raw[cut:]) if final else out
        boundary = _token_start(raw, stripped)
        if not final:
            self._carry = raw[boundary:]
            return self._packer.feed(_qp_scan(raw, 0, boundary, -1))
        self._carry = b""
        tokens = _qp_small_tokens(raw, boundary, stripped)
        text = _qp_scan(raw, 0, boundary, stripped) + b"".join(tokens[:-1])
        tail = (tokens[-1] if tokens else b"") + raw[stripped:]
        return self._packer.feed(text) + self._packer.finish(tail)


def _token_start(raw: bytes, stripped: int) -> int:
    """A token boundary at or just before the last non-blank octet, ``raw[stripped - 1]``.

    A ``=`` always starts a token, and any other octet does unless one of the two
    before it is a ``=``: moving back to such a ``=`` lands between tokens.
    """
    if not stripped:
        return 0
    start = stripped - 1
    if start >= 1 and raw[start - 1] == 0x3D:
        return start - 1
    if start >= 2 and raw[start - 2] == 0x3D:
        return start - 2
    return start


def _qp_scan(raw: bytes, start: int, end: int, stripped: int) -> bytes:
    """Quoted-printable text for ``raw[start:end]``, which starts and ends between tokens.

    ``=XX`` stays, a ``=`` at ``stripped - 1`` is the line's soft break, any other
    ``=`` becomes ``=3D``; the two octets after a ``=`` are read from ``raw``.
    """
    out: list[bytes] = []
    index = start
    while True:
        equals = raw.find(b"=", index, end)
        if equals < 0:
            out.append(raw[index:end])
            return b"".join(out)
        out.append(raw[index:equals])
        index = equals + 1
        if equals == stripped - 1:
            out.append(b"=")
        elif equals + 2 < len(raw) and raw[equals + 1] in _HEX and raw[equals + 2] in _HEX:
            out.append(raw[equals : equals + 3])
            index = equals + 3
        else:
            out.append(b"=3D")


def _qp_small_tokens(raw: bytes, start: int, stripped: int) -> list[bytes]:
    """The tokens of ``raw[start:stripped]``, the few octets that end a line, one each."""
    tokens: list[bytes] = []
    index = start
    while index < stripped:
        if raw[index] != 0x3D:
            tokens.append(raw[index : index + 1])
            index += 1
        elif index == stripped - 1:
            tokens.append(b"=")  # the line's soft break
            index += 1
        elif index + 2 < len(raw) and raw[index + 1] in _HEX and raw[index + 2] in _HEX:
            tokens.append(raw[index : index + 3])
            index += 3
        else:
            tokens.append(b"=3D")
            index += 1
    return tokens
