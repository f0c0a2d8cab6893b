"""The Q file: one queued recipient, in the C dma's format plus our own keys (SPEC 4).

The C dma reads a Q file line by line with ``fgets`` into 1000 octets, drops the
last character, splits at the first ``:``, skips leading blanks in the value and
ignores keys it does not know.  So we write ``ID``, ``Sender`` and ``Recipient``
exactly as it does, add ``X-Attempts``, ``X-Next-Try``, ``X-Last-Error``, the
``X-DSN-*`` requests and ``X-Uid`` only
when they carry something, and never write a line it would cut in two.
"""

from __future__ import annotations

import unicodedata

from dma.core.errors import DataError, SoftwareError, at
from dma.core.octets import printable
from dma.core.values import frozen

MAX_LINE_OCTETS = 998
"""Longest line (without its LF) the C dma's ``fgets(line, 1000)`` reads whole."""

MAX_ERROR_OCTETS = 900
"""``X-Last-Error`` values are cut to this many octets of UTF-8."""

MAX_QUEUE_FILE_OCTETS = 65536
"""Q files are a few hundred octets; anything bigger is not one of ours or the C dma's."""

_BLANKS = " \t\n\v\f\r"  # C isspace() in the C locale
_ALNUM = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_ID_CHARS = _ALNUM | frozenset("._-")


@frozen
class QueueItem:
    """One recipient of one spooled message, as its Q file records it."""

    id: str
    sender: str  # "" for bounces (null sender)
    recipient: str
    attempts: int = 0
    next_try: int | None = None  # epoch seconds
    last_error: str | None = None
    # DSN requests from -N, -R, -V (RFC 3461), passed on to servers that offer DSN
    dsn_notify: str | None = None
    dsn_ret: str | None = None
    dsn_envid: str | None = None
    # who handed the message in, when it came through the maildrop (SPEC 8.2): the
    # maildrop file's owner; None for a message written into the spool directly
    uid: int | None = None


def item_id_from_filename(name: str) -> str | None:
    """Return the item id of a ``Q<id>`` file name, or None for any other name.

    Ids are file-name safe (letters, digits, ``.``, ``_``, ``-``) so that ``M<id>``
    and ``Q<id>`` never reach outside the spool directory.
    """
    if len(name) < 2 or name[0] != "Q":
        return None
    rest = name[1:]
    return rest if is_file_safe_id(rest) else None


def is_file_safe_id(text: str) -> bool:
    """True for an id that can follow ``Q`` or ``M`` in a file name: an ASCII letter or
    digit, then letters, digits, ``.``, ``_`` and ``-``."""
    return text[:1] in _ALNUM and _ID_CHARS.issuperset(text)


def make_item_id(message_id: str, index: int) -> str:
    """The id of a message's ``index``-th recipient: ``<message id>.<index in hex>``."""
    return f"{message_id}.{index:x}"


def message_id_of(item_id: str) -> str:
    """The message part of an item id: everything before the last ``.``."""
    head, dot, _ = item_id.rpartition(".")
    return head if dot else item_id


def replace_controls(text: str, mark: str) -> str:
    """``text`` with each control character as ``mark`` and each lone surrogate as U+FFFD."""
    chars = []
    for char in text:
        category = unicodedata.category(char)
        if category == "Cc":
            chars.append(mark)
        elif category == "Cs":
            chars.append("\ufffd")
        else:
            chars.append(char)
    return "".join(chars)


def one_line_error(text: str) -> str:
    """``text`` as ``X-Last-Error`` stores it: one line, no leading blanks, at most 900 octets.

    Control characters (CR, LF, NUL, tabs, DEL, C1) become spaces and lone
    surrogates become U+FFFD, so the value survives a round trip through the file
    and through the C dma's reader.  The cut never splits a UTF-8 character.
    """
    flat = replace_controls(text, " ").lstrip(_BLANKS)
    encoded = flat.encode("utf-8")
    if len(encoded) <= MAX_ERROR_OCTETS:
        return flat
    return encoded[:MAX_ERROR_OCTETS].decode("utf-8", errors="ignore")


def _field(key: str, value: str) -> bytes:
    """One ``Key: value`` line, refusing values the C dma would read back differently."""
    if "\r" in value or "\n" in value or "\0" in value:
        raise SoftwareError(
            f"queue file field {key} holds a CR, LF or NUL: {value!r}",
            hint="this is a bug: addresses and ids are checked before spooling",
        )
    if value and value[0] in _BLANKS:
        raise SoftwareError(
            f"queue file field {key} starts with a blank: {value!r}",
            hint="this is a bug: readers skip leading blanks, so it would not read back",
        )
    try:
        line = f"{key}: {value}".encode("utf-8", errors="surrogateescape")
    except UnicodeEncodeError as error:
        raise SoftwareError(
            f"queue file field {key} is not encodable: {value!r}",
            hint="this is a bug: values come from UTF-8 text or from a Q file",
        ) from error
    if len(line) > MAX_LINE_OCTETS:
        raise SoftwareError(
            f"queue file field {key} is {len(line)} octets long",
            hint=f"the C dma reads lines of at most {MAX_LINE_OCTETS} octets",
        )
    return line + b"\n"


def render_queue_file(item: QueueItem) -> bytes:
    """The Q file text for ``item``: the C dma's three lines, then ours when set."""
    if not item.id:
        raise SoftwareError("queue item without an id", hint="this is a bug")
    if not item.recipient:
        raise SoftwareError(f"queue item {item.id} has no recipient", hint="this is a bug")
    if item.attempts < 0 or (item.next_try is not None and item.next_try < 0):
        raise SoftwareError(
            f"queue item {item.id} has a negative attempt count or retry time",
            hint="this is a bug",
        )
    parts = [
        _field("ID", item.id),
        _field("Sender", item.sender),
        _field("Recipient", item.recipient),
    ]
    if item.attempts:
        parts.append(_field("X-Attempts", str(item.attempts)))
    if item.next_try is not None:
        parts.append(_field("X-Next-Try", str(item.next_try)))
    if item.last_error is not None:
        parts.append(_field("X-Last-Error", one_line_error(item.last_error)))
    for key, value in (
        ("X-DSN-Notify", item.dsn_notify),
        ("X-DSN-Ret", item.dsn_ret),
        ("X-DSN-Envid", item.dsn_envid),
    ):
        if value:
            parts.append(_field(key, value))
    if item.uid is not None:
        if item.uid < 0:
            raise SoftwareError(f"queue item {item.id} has a negative uid", hint="this is a bug")
        parts.append(_field("X-Uid", str(item.uid)))
    return b"".join(parts)


def _number(text: str) -> int | None:
    """A non-negative decimal, or None: a damaged extra key must not strand the mail."""
    return int(text) if len(text) <= 18 and text.isascii() and text.isdigit() else None


PAD_KEY = "X-Pad"
_PAD_LINE_MIN = len(PAD_KEY) + len(": \n")
_PAD_LINE_MAX = 900  # the C dma reads Q lines with fgets(1000): longer would split


def padded(data: bytes, length: int) -> bytes:
    """``data`` (a rendered Q file) made at least ``length`` octets long.

    A Q file is rewritten in place (its lock belongs to the inode), so a crash between
    the write and the truncation of a shorter text would leave a tail of the old text,
    a line without ``:`` that makes the file malformed.  Never shrinking the file
    closes that window: the shortfall becomes ``X-Pad`` lines of blanks, which both
    the C dma and we ignore as an unknown key.
    """
    short = length - len(data)
    pads: list[bytes] = []
    while short > 0:
        size = min(max(short, _PAD_LINE_MIN), _PAD_LINE_MAX)
        if 0 < short - size < _PAD_LINE_MIN:
            size -= _PAD_LINE_MIN  # leave room for a last line of the least size
        pads.append(f"{PAD_KEY}:".encode("ascii") + b" " * (size - _PAD_LINE_MIN + 1) + b"\n")
        short -= size
    return data + b"".join(pads)


def parse_queue_file(data: bytes, name: str) -> QueueItem:
    """Read a Q file as the C dma does, tolerating CRLF endings and our own keys.

    Raises DataError, with ``where`` naming the file (and line), when the C dma
    would call the file malformed: a line without ``:``, no ``ID`` or ``Recipient``
    (or an empty one), no ``Sender`` line.  A NUL octet is refused too.  A later
    line with the same key wins, as in the C dma.  Unparseable ``X-Attempts`` and
    ``X-Next-Try`` values are ignored, as the C dma ignores those keys entirely.
    A CR inside a line and a line over ``MAX_LINE_OCTETS`` are refused too: whatever
    parses can be written back by ``render_queue_file`` (the run would fail on it).
    """
    if len(data) > MAX_QUEUE_FILE_OCTETS:
        raise DataError(
            f"queue file is {len(data)} octets, more than any Q file",
            where=name,
            hint="move it out of the spool directory and look at it",
        )
    text = data.decode("utf-8", errors="surrogateescape")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    fields: dict[str, str] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if "\0" in line or "\r" in line:
            raise DataError(
                "queue file line holds a " + ("NUL octet" if "\0" in line else "carriage return"),
                where=at(name, number),
                hint="the file is damaged; move it out of the spool directory",
            )
        if len(line.encode("utf-8", "surrogateescape")) > MAX_LINE_OCTETS:
            raise DataError(
                f"queue file line is longer than {MAX_LINE_OCTETS} octets",
                where=at(name, number),
                hint="the C dma would read it as two lines; the file is damaged",
            )
        key, colon, value = line.partition(":")
        if not colon:
            raise DataError(
                f"queue file line has no ':': {line[:60]!r}",
                where=at(name, number),
                hint="the file is damaged; move it out of the spool directory",
            )
        fields[key] = value.lstrip(_BLANKS)
    for key in ("ID", "Recipient"):
        if not fields.get(key):
            raise DataError(
                f"queue file has no {key} line" if key not in fields
                else f"queue file has an empty {key} line",
                where=name,
                hint="the file is damaged; move it out of the spool directory",
            )
    if "Sender" not in fields:
        raise DataError(
            "queue file has no Sender line",
            where=name,
            hint="the file is damaged; move it out of the spool directory",
        )
    attempts = _number(fields.get("X-Attempts", ""))
    return QueueItem(
        id=fields["ID"],
        sender=fields["Sender"],
        recipient=fields["Recipient"],
        attempts=attempts or 0,
        next_try=_number(fields.get("X-Next-Try", "")),
        last_error=fields.get("X-Last-Error"),
        dsn_notify=fields.get("X-DSN-Notify") or None,
        dsn_ret=fields.get("X-DSN-Ret") or None,
        dsn_envid=fields.get("X-DSN-Envid") or None,
        uid=_number(fields.get("X-Uid", "")),
    )


def parse_queue_item(data: bytes, item_id: str, name: str) -> QueueItem:
    """``parse_queue_file``, and the ``ID`` line must name the item the file is named for.

    The file name is the item's identity (SPEC 4): paths, locks and deletion follow
    it.  A Q file whose ``ID:`` names another item would be grouped, logged and
    finished as that item, so it is damaged: DataError, like any other damage.
    """
    item = parse_queue_file(data, name)
    if item.id != item_id:
        raise DataError(
            f"queue file says ID {_shown(item.id)} but is named for item {_shown(item_id)}",
            where=name,
            hint="the file is damaged or was copied from another item; fix the ID line",
        )
    return item


def _shown(text: str, limit: int = 80) -> str:
    """``text`` quoted for a one-line message: controls escaped, shortened."""
    shown = printable(text)
    return "'" + (shown if len(shown) <= limit else shown[: limit - 3] + "...") + "'"
