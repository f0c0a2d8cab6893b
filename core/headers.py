"""The header step of submission: find the headers, fix them up, read -t recipients (SPEC 3.3-3.5).

The header block is bounded and small, so it is read whole (``read_header_block``)
while the body keeps streaming.  ``process_headers`` is then a pure function of that
block and a ``Stamp`` (the queue id, the sender, the clock's reading, ... as values):
it drops ``Bcc:`` fields, adds the missing ``Date:``, ``Message-Id:`` and ``From:``,
folds header lines too long for RFC 5322, and with ``-t`` collects the recipients.
Where the C dma differs (nothing added to a block without a blank line, a real
RFC 5322 address-list parser for -t), SPEC 3 wins.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, fields

from dma.core.errors import DataError, SoftwareError
from dma.core.lines import MAX_LINE_OCTETS
from dma.core.version import PRODUCT, VERSION

HEADER_LIMIT = 1 << 20
"""Default bound on the header block, in octets: a bigger one is surely a missing blank line."""

# RFC 5322 field name (printable ASCII but the colon), then the colon; the obsolete
# syntax allows blanks before it.
_FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_BLANKS = b" \t"
_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+")
_ENCODED_WORD_OCTETS = 45  # 60 base64 characters: the word stays within RFC 2047's 75
_RECIPIENT_FIELDS = frozenset({"to", "cc", "bcc"})


@dataclass(frozen=True, slots=True)
class Stamp:
    """Everything the header step needs from outside the message, as values."""

    queue_id: str
    sender: str  # envelope sender, "" for the null sender
    username: str
    uid: int
    mailname: str
    system_hostname: str
    date: str  # rfc5322_date(now)
    message_id: str  # the complete "<...>" value, from make_message_id
    full_name: str | None = None


@dataclass(frozen=True, slots=True)
class HeaderBlock:
    """The header lines of a message as read, and how the block ended."""

    lines: tuple[bytes, ...]  # LF-terminated, continuation lines included
    separator: bool  # the block ended with an empty line
    first_body_line: bytes | None  # a non-header line that ended the block: it is body


@dataclass(frozen=True, slots=True)
class ProcessedHeaders:
    """The header block to spool after the Received header, and the -t recipients."""

    lines: tuple[bytes, ...]  # always ends with b"\n", the separator
    recipients: tuple[str, ...]  # from To:, Cc:, Bcc: in order, when collected


@dataclass(frozen=True, slots=True)
class _Field:
    """One header field: its name in lower case (as written too) and its physical lines."""

    key: str
    name: str
    lines: tuple[bytes, ...]


def make_message_id(timestamp: int, queue_id: str, random_hex: str, mailname: str) -> str:
    """Return ``<hex time.queue id.random hex@mailname>``, the C dma's Message-Id form.

    The queue id makes it unique on this host, the random part across hosts that
    share a mail name; all parts come from the caller, so this stays pure.
    """
    if timestamp < 0:
        raise SoftwareError(f"negative timestamp {timestamp} for a Message-Id")
    if not random_hex or any(c not in "0123456789abcdefABCDEF" for c in random_hex):
        raise SoftwareError(f"random part {random_hex!r} of a Message-Id is not hex")
    for label, part in (("queue id", queue_id), ("mail name", mailname)):
        if not part or any(c in "<>@ \t\r\n\0" or not c.isprintable() for c in part):
            raise SoftwareError(f"{label} {part!r} cannot go into a Message-Id")
    return f"<{timestamp:x}.{queue_id}.{random_hex.lower()}@{mailname}>"


def _check_stamp(stamp: Stamp) -> None:
    """Refuse a stamp value that would break out of its header line (header injection)."""
    for item in fields(stamp):
        value = getattr(stamp, item.name)
        if isinstance(value, str) and any(c in value for c in "\r\n\0"):
            raise DataError(
                f"{item.name.replace('_', ' ')} {value!r} contains a line break or NUL",
                hint="remove it: such a value could forge headers",
            )


def _encode(text: str, what: str) -> bytes:
    """UTF-8 bytes of ``text``, undecodable bytes from argv or the environment kept as they were."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise DataError(f"{what} {text!r} is not valid text", hint="use UTF-8") from None


def received_header(stamp: Stamp) -> bytes:
    """Return the Received header dma puts first in every message, LF line ends.

    The C dma's form, with our product in the comment; the null sender shows as ``<>``.
    """
    _check_stamp(stamp)
    text = (
        f"Received: from {stamp.username} (uid {stamp.uid})\n"
        f"\t(envelope-from {stamp.sender or '<>'})\n"
        f"\tid {stamp.queue_id}\n"
        f"\tby {stamp.mailname} ({PRODUCT} {VERSION} on {stamp.system_hostname});\n"
        f"\t{stamp.date}\n"
    )
    return _encode(text, "Received header")


def _is_header_line(line: bytes) -> bool:
    """True when ``line`` starts a header field (``name:``)."""
    return _FIELD_NAME.match(line) is not None


def _is_continuation(line: bytes) -> bool:
    """True when ``line`` continues the field above it (starts with a blank)."""
    return line[:1] in (b" ", b"\t")


def _is_from_line(line: bytes) -> bool:
    """True for an mbox ``From `` (or quoted ``>From ``) separator line."""
    head = line[:6].lower()
    return head.startswith(b"from ") or head == b">from "


def read_header_block(lines: Iterator[bytes], *, limit: int = HEADER_LIMIT) -> HeaderBlock:
    """Take the header block from ``lines``, consuming nothing of the body but one line at most.

    Leading mbox ``From `` lines are dropped.  When the first line left is not a header
    line (plain text such as cron output), there is no header block: that line is
    returned as ``first_body_line`` and the blank separator is added later, as
    Postfix does.  Otherwise the block lasts until the first empty line or the end
    of the input (SPEC 3.3), and a line in it that is neither ``name:`` nor a
    continuation is kept as it is.  More than ``limit`` octets is a DataError.
    """
    taken: list[bytes] = []
    size = 0
    for line in lines:
        if line == b"\n":
            return HeaderBlock(tuple(taken), separator=True, first_body_line=None)
        if not taken:
            if _is_from_line(line):
                continue
            if not _is_header_line(line):
                return HeaderBlock((), separator=False, first_body_line=line)
        size += len(line)
        if size > limit:
            raise DataError(
                f"the message headers are longer than {limit} octets",
                hint="is the blank line between the headers and the body missing?",
            )
        taken.append(line)
    return HeaderBlock(tuple(taken), separator=False, first_body_line=None)


def _fields(lines: tuple[bytes, ...]) -> list[_Field]:
    """Group header lines into fields; a line that is no field starts a nameless one.

    A block not shaped by ``read_header_block`` (unterminated lines, a leading
    continuation) is a bug.
    """
    grouped: list[list[bytes]] = []
    for number, line in enumerate(lines, 1):
        body = line[:-1]
        if not line.endswith(b"\n") or b"\n" in body or b"\r" in body:
            raise SoftwareError(f"header line {number} is not one LF-terminated line")
        if grouped and _is_continuation(line):
            grouped[-1].append(line)
        elif grouped or _is_header_line(line):
            grouped.append([line])
        else:
            raise SoftwareError(f"header line {number} is neither a field nor a continuation")
    result = []
    for group in grouped:
        match = _FIELD_NAME.match(group[0])
        name = match.group(1).decode("ascii") if match is not None else ""
        result.append(_Field(name.lower(), name, tuple(group)))
    return result


def _fold(line: bytes, name: str) -> list[bytes]:
    """Split ``line`` (no LF) into pieces of at most 998 octets at blanks (RFC 5322 folding).

    Each later piece starts with the blank run it was split before, so unfolding
    (removing the line ends) gives ``line`` back.  A piece never is blanks only.
    ``name`` is "" for a line in the header block that is no field.
    """
    pieces: list[bytes] = []
    while len(line) > MAX_LINE_OCTETS:
        last_text = len(line.rstrip(_BLANKS)) - 1  # a piece after a fold needs text
        cut = 0
        for index in range(min(MAX_LINE_OCTETS, last_text - 1), 0, -1):
            if line[index] in _BLANKS and line[index - 1] not in _BLANKS:
                cut = index
                break
        if not cut:
            from dma.core.longlines import fold_header_line, is_unstructured

            continued = bool(pieces) or line[:1] in _BLANKS
            if not name:  # a line that is no field: cut it, there is no value to encode
                pieces.extend(fold_header_line(line, None, continuation=continued))
                return pieces
            if not is_unstructured(name.lower()):
                raise DataError(
                    f"the {name} header has a line of {len(line)} octets with no blank to "
                    "fold at",
                    hint=f"structured header lines may hold at most {MAX_LINE_OCTETS} octets",
                )
            # free text (Subject and the like): RFC 2047 encoded words keep the meaning
            pieces.extend(fold_header_line(line, name, continuation=continued))
            return pieces
        pieces.append(line[:cut])
        line = line[cut:]
    pieces.append(line)
    return pieces


def _phrase(name: str) -> bytes:
    """Render a display name as an RFC 5322 phrase: atoms, a quoted string, or encoded words."""
    if all(" " <= c <= "~" for c in name):
        words = name.split(" ")
        if all(_ATOM.fullmatch(w) and "=?" not in w for w in words):
            return name.encode("ascii")
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{quoted}"'.encode("ascii")
    import base64  # rare: kept off the start-up path of every submission (issue 2)

    encoded: list[bytes] = []
    run = b""
    for char in name:
        octets = char.encode("utf-8", "replace")
        if len(run) + len(octets) > _ENCODED_WORD_OCTETS:
            encoded.append(run)
            run = b""
        run += octets
    encoded.append(run)
    return b" ".join(b"=?utf-8?b?" + base64.b64encode(part) + b"?=" for part in encoded)


def _from_line(stamp: Stamp) -> bytes:
    """The ``From:`` line added when the message has none: the sender, with the -F name."""
    address = stamp.sender or f"MAILER-DAEMON@{stamp.mailname}"
    mailbox = b"<" + _encode(address, "sender") + b">"
    name = (stamp.full_name or "").strip()
    if name:
        return b"From: " + _phrase(name) + b" " + mailbox + b"\n"
    return b"From: " + mailbox + b"\n"


def _field_recipients(field: _Field) -> tuple[str, ...]:
    """Parse the address list of one To:, Cc: or Bcc: field, unfolded."""
    from dma.core.addresses import parse_address_list

    unfolded = b"".join(line[:-1] for line in field.lines)
    value = unfolded.split(b":", 1)[1].decode("utf-8", "replace")
    try:
        addresses = parse_address_list(value)
    except DataError as error:
        raise DataError(f"{field.name} header: {error.message}", hint=error.hint) from error
    for address in addresses:
        if "\ufffd" in address:
            raise DataError(
                f"{field.name} header: address {address!r} is not valid UTF-8",
                hint="write the address in ASCII or UTF-8",
            )
    return addresses


def process_headers(
    block: HeaderBlock, stamp: Stamp, *, collect_recipients: bool
) -> ProcessedHeaders:
    """Return the header lines to spool and, when ``collect_recipients`` (-t), the recipients.

    Bcc: fields go, with their continuations, with or without -t.  Missing Date:,
    Message-Id: and From: are added in that order, also when the input had no blank
    line.  Over-long lines are folded.  The result always ends with the separator.
    """
    _check_stamp(stamp)
    kept: list[bytes] = []
    recipients: list[str] = []
    seen: set[str] = set()
    for field in _fields(block.lines):
        seen.add(field.key)
        if collect_recipients and field.key in _RECIPIENT_FIELDS:
            recipients.extend(_field_recipients(field))
        if field.key == "bcc":
            continue
        for line in field.lines:
            kept.extend(piece + b"\n" for piece in _fold(line[:-1], field.name))
    added: list[tuple[str, bytes]] = []
    if "date" not in seen:
        added.append(("Date", b"Date: " + _encode(stamp.date, "date") + b"\n"))
    if "message-id" not in seen:
        message_id = _encode(stamp.message_id, "Message-Id")
        added.append(("Message-Id", b"Message-Id: " + message_id + b"\n"))
    if "from" not in seen:
        added.append(("From", _from_line(stamp)))
    for name, line in added:
        kept.extend(piece + b"\n" for piece in _fold(line[:-1], name))
    kept.append(b"\n")
    return ProcessedHeaders(tuple(kept), tuple(recipients))
