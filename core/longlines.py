"""Re-encoding of lines longer than 998 octets, so that the spool never holds one (SPEC 3.2).

The C dma rejects such input (issue #18) and treats a spool file holding one as corrupt;
the SMTP limit is 1000 octets with CRLF.  We accept the line and rewrite only what must
change: a long header line is folded, a long plain body part becomes quoted-printable,
long base64 and quoted-printable lines are re-wrapped.  Everything else passes through
byte for byte, so signatures over untouched parts stay valid.

Two streaming passes over the spooled message (LF lines, no CR): ``find_long_parts``
says which parts need work, ``reencode`` does it.  Memory is the boundary stack and the
current part's header block, never the message.

Parts are numbered in order of appearance: 0 is the top-level message, then every body
part as its header block starts, multipart containers included, so that the headers,
preamble and epilogue of a nested multipart have a number too.  message/rfc822 parts
are leaves: their bodies are not searched for boundaries.
"""

from __future__ import annotations

import binascii
import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from dma.core.errors import DataError, SoftwareError

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


@dataclass(frozen=True, slots=True)
class _Entity:
    """What a header block says about the body that follows it."""

    ordinal: int
    container: bool  # multipart with a usable boundary: its body holds parts
    boundary: bytes
    cte: str  # lower-cased Content-Transfer-Encoding, "" when absent
    has_mime_version: bool


@dataclass(frozen=True, slots=True)
class _HeaderBlock:
    """One part's header lines, buffered because a converted part's CTE must change."""

    entity: _Entity
    lines: tuple[bytes, ...]
    number: int  # 1-based line number of its first line in the message
    ended: bool  # closed by an empty line, so a body follows


@dataclass(frozen=True, slots=True)
class _Line:
    """A line outside any header block, with the part it belongs to."""

    ordinal: int
    role: Role
    line: bytes
    number: int
    boundaries: tuple[bytes, ...]  # open multipart boundaries, innermost first


# --------------------------------------------------------------------------------------
# public API


def find_long_parts(lines: Iterable[bytes]) -> frozenset[int]:
    """Return the ordinals of the parts whose body holds a line over ``MAX_LINE_OCTETS``.

    The LF does not count.  Header lines do not count either: ``reencode`` folds them
    wherever they are, and a long Subject alone is no reason to re-encode a body.  The
    preamble, delimiters and epilogue of a multipart count for the multipart.  So an
    empty set does not mean that nothing is long: run ``reencode`` whenever a line was.
    Raises SoftwareError on a line not ending in LF.
    """
    found: set[int] = set()
    for event in _walk(lines):
        if isinstance(event, _Line) and len(event.line) > _LONGEST:
            found.add(event.ordinal)
    return frozenset(found)


def reencode(lines: Iterable[bytes], long_parts: frozenset[int]) -> Iterator[bytes]:
    """Yield the message again with every line at most ``MAX_LINE_OCTETS`` octets plus LF.

    ``long_parts`` is what ``find_long_parts`` returned for the same lines.  Long header
    lines are folded in every part.  A long body line in a part not listed is a bug of
    the caller (SoftwareError); one that cannot be re-encoded without losing content (an
    unknown Content-Transfer-Encoding, a boundary longer than the limit) is a DataError.
    """
    mode = "pass"
    for event in _walk(lines):
        if isinstance(event, _HeaderBlock):
            entity = event.entity
            listed = entity.ordinal in long_parts
            convert = listed and event.ended and not entity.container
            convert = convert and entity.cte in _PLAIN_CTES
            yield from _header_block(event, convert)
            mode = "convert" if convert else entity.cte if listed else "pass"
            continue
        line = event.line
        if event.role == "body" and mode == "convert":
            yield from _qp_pack(_qp_encode_tokens(line[:-1]))
            continue
        if len(line) <= _LONGEST:
            yield line
            continue
        if event.ordinal not in long_parts:
            raise _unlisted(event.number, event.ordinal)
        content = line[:-1]
        if event.role == "delimiter":
            trimmed = content.rstrip(_BLANKS)  # RFC 2046 transport padding
            if len(trimmed) > MAX_LINE_OCTETS:
                raise DataError(
                    f"line {event.number}: a MIME boundary of {len(trimmed)} octets is "
                    f"longer than {MAX_LINE_OCTETS}",
                    hint="use a boundary of at most 70 characters (RFC 2046)",
                )
            yield trimmed + b"\n"
        elif event.role in ("preamble", "epilogue"):
            # Readers ignore these (RFC 2046 5.1.1); a split loses nothing they show.
            for piece in _split_width(content, MAX_LINE_OCTETS, event.boundaries):
                yield piece + b"\n"
        elif mode == "base64":
            for piece in _split_width(content, _BASE64_WIDTH, event.boundaries):
                yield piece + b"\n"
        elif mode == "quoted-printable":
            yield from _qp_pack(_qp_tokens(content))
        else:
            raise DataError(
                f"line {event.number}: a line of {len(content)} octets in a part with "
                f"Content-Transfer-Encoding {mode!r} cannot be re-encoded",
                hint=f"keep lines to {MAX_LINE_OCTETS} octets or use base64",
            )


def _unlisted(number: int, ordinal: int) -> SoftwareError:
    return SoftwareError(
        f"line {number}: part {ordinal} has a line over {MAX_LINE_OCTETS} octets "
        "but is not in long_parts",
        hint="pass what find_long_parts returned for the same lines",
    )


# --------------------------------------------------------------------------------------
# the MIME structure, as a stream


def _walk(lines: Iterable[bytes]) -> Iterator[_HeaderBlock | _Line]:
    """Tag every line with its part: header blocks whole, other lines one by one."""
    frames: list[tuple[bytes, int]] = []  # open multiparts, outermost first
    boundaries: tuple[bytes, ...] = ()
    ordinal = 0
    next_ordinal = 1
    role: Role | Literal["headers"] = "headers"
    header: list[bytes] = []
    header_start = 1
    number = 0
    for number, line in enumerate(lines, 1):
        if not line.endswith(b"\n") or line.find(b"\n") != len(line) - 1:
            raise SoftwareError(
                f"line {number} does not end in exactly one LF",
                hint="split the message into LF-terminated lines first",
            )
        depth, closing = _match_delimiter(line, boundaries) if boundaries else (-1, False)
        if depth >= 0:
            if role == "headers":
                yield _HeaderBlock(_entity(ordinal, header), tuple(header), header_start, False)
                header = []
            del frames[len(frames) - depth :]  # inner multiparts end with their parent's part
            container = frames[-1][1]
            yield _Line(container, "delimiter", line, number, boundaries)
            if closing:
                frames.pop()
                role, ordinal = "epilogue", container
            else:
                role, ordinal, header_start = "headers", next_ordinal, number + 1
                next_ordinal += 1
            boundaries = tuple(boundary for boundary, _ in reversed(frames))
        elif role != "headers":
            yield _Line(ordinal, role, line, number, boundaries)
        elif line != b"\n":
            header.append(line)
        else:
            entity = _entity(ordinal, header)
            yield _HeaderBlock(entity, tuple(header), header_start, True)
            header = []
            yield _Line(ordinal, "separator", line, number, boundaries)
            if entity.container:
                frames.append((entity.boundary, ordinal))
                boundaries = (entity.boundary, *boundaries)
                role = "preamble"
            else:
                role = "body"
    if role == "headers" and header:
        yield _HeaderBlock(_entity(ordinal, header), tuple(header), header_start, False)


def _match_delimiter(line: bytes, boundaries: tuple[bytes, ...]) -> tuple[int, bool]:
    """Return (how many frames out, closing?) for a delimiter line, else (-1, False).

    RFC 2046 5.1.1 as Python's email parser reads it: ``--boundary``, an optional
    ``--``, then only blanks.  An outer boundary also ends the inner multiparts.
    """
    if not line.startswith(b"--"):
        return -1, False
    for depth, boundary in enumerate(boundaries):
        if line.startswith(boundary, 2):
            rest = line[2 + len(boundary) : -1]
            closing = rest.startswith(b"--")
            if closing:
                rest = rest[2:]
            if not rest.strip(_BLANKS):
                return depth, closing
    return -1, False


def _entity(ordinal: int, header: Sequence[bytes]) -> _Entity:
    content_type: bytes | None = None
    cte: bytes | None = None
    has_mime_version = False
    for name, value in _fields(header):
        if name == "content-type" and content_type is None:
            content_type = value
        elif name == "content-transfer-encoding" and cte is None:
            cte = value
        elif name == "mime-version":
            has_mime_version = True
    maintype, boundary = _parse_content_type(content_type or b"")
    return _Entity(
        ordinal=ordinal,
        container=maintype == "multipart" and bool(boundary),
        boundary=boundary,
        cte=_without_comments((cte or b"").decode("latin-1")).strip().lower(),
        has_mime_version=has_mime_version,
    )


def _fields(header: Sequence[bytes]) -> Iterator[tuple[str, bytes]]:
    """Yield (lower-cased name, unfolded value) for each field of a header block."""
    name: str | None = None
    parts: list[bytes] = []
    for line in header:
        if line[:1] in (b" ", b"\t"):
            parts.append(line[:-1])
            continue
        if name is not None:
            yield name, b"".join(parts)
        name = _field_name(line)
        parts = [line[line.find(b":") + 1 : -1]]
    if name is not None:
        yield name, b"".join(parts)


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
# header blocks


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


def _header_block(block: _HeaderBlock, convert: bool) -> Iterator[bytes]:
    """Yield a header block with long lines folded and, to convert, the new CTE."""
    name: str | None = None
    dropping = False
    previous = b""  # the field's last line out, to see whether it ends in an encoded word
    for line in block.lines:
        continuation = line[:1] in (b" ", b"\t")
        if not continuation:
            name = _field_name(line)
            dropping = convert and name == "content-transfer-encoding"
            previous = b""
        if dropping:
            continue
        if len(line) <= _LONGEST:
            previous = line[:-1]
            yield line
            continue
        after_word = _ENDS_IN_WORD.search(previous) is not None
        for piece in _fold(line[:-1], name, continuation, after_word):
            previous = piece
            yield piece + b"\n"
    if convert:
        if block.entity.ordinal == 0 and not block.entity.has_mime_version:
            yield b"MIME-Version: 1.0\n"
        yield b"Content-Transfer-Encoding: quoted-printable\n"


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
# body lines


def _split_width(content: bytes, width: int, boundaries: tuple[bytes, ...]) -> list[bytes]:
    """Cut ``content`` into pieces of ``width``, none of which reads as a MIME delimiter."""
    pieces: list[bytes] = []
    start = 0
    while len(content) - start > width:
        cut = start + width
        while cut > start + 1 and _looks_like_delimiter(content, cut, boundaries):
            cut -= 1
        if _looks_like_delimiter(content, cut, boundaries):
            cut = start + width  # nothing better in reach: garbage in, garbage out
        pieces.append(content[start:cut])
        start = cut
    pieces.append(content[start:])
    return pieces


def _looks_like_delimiter(content: bytes, at: int, boundaries: tuple[bytes, ...]) -> bool:
    return any(content.startswith(b"--" + boundary, at) for boundary in boundaries)


_QP_TOKENS: tuple[bytes, ...] = tuple(
    bytes([octet]) if (33 <= octet <= 126 and octet != 61) or octet in (9, 32)
    else b"=%02X" % octet
    for octet in range(256)
)


def _qp_encode_tokens(content: bytes) -> list[bytes]:
    """Quoted-printable tokens for one line of raw content (RFC 2045 6.7)."""
    tokens = [_QP_TOKENS[octet] for octet in content]
    if content and content[-1] in _BLANKS:
        tokens[-1] = b"=%02X" % content[-1]  # rule 3: no blank before a hard break
    return tokens


def _qp_tokens(content: bytes) -> list[bytes]:
    """Split a quoted-printable line into pieces a soft break may separate.

    ``=XX`` stays whole; a stray ``=`` becomes ``=3D``, what RFC 2045 tells readers to
    make of it; trailing blanks stay with the last token, so that readers that strip
    them and readers that keep them both read the same as before.
    """
    stripped = len(content.rstrip(_BLANKS))
    tokens: list[bytes] = []
    index = 0
    while index < stripped:
        octet = content[index]
        if octet != 61:
            tokens.append(content[index : index + 1])
            index += 1
        elif index == stripped - 1:
            tokens.append(b"=")  # an existing soft line break
            index += 1
        elif content[index + 1] in _HEX and index + 2 < len(content) and content[index + 2] in _HEX:
            tokens.append(content[index : index + 3])
            index += 3
        else:
            tokens.append(b"=3D")
            index += 1
    trailing = content[max(index, stripped) :]
    if not tokens:
        return [trailing]
    if trailing:
        tokens[-1] += trailing
    return tokens


def _qp_pack(tokens: Sequence[bytes]) -> Iterator[bytes]:
    """Join quoted-printable tokens into LF lines of at most 76 characters.

    Lines but the last end in a soft break ``=``; a line after a soft break never
    starts with ``-``, which could make it read as a MIME delimiter.
    """
    last = len(tokens) - 1
    current = bytearray()
    for index, token in enumerate(tokens):
        room = _QP_WIDTH if index == last else _QP_WIDTH - 1
        if current and len(current) + len(token) > room:
            yield bytes(current) + b"=\n"
            current = bytearray()
            if token[:1] == b"-":
                token = b"=2D" + token[1:]
        current += token
    yield bytes(current) + b"\n"
