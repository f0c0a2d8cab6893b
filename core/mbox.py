"""mbox records in the mboxrd dialect, as the C dma writes them (SPEC 5.2).

A record is a ``From <sender> <ctime>`` separator line, the message with every line
matching ``^>*From `` given one more ``>``, and one blank line.  The quoting is
reversible (mboxrd), so a reader that unquotes gets the spooled message back byte
for byte.  Pure: the time comes in as an argument, the caller does the writing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import datetime

from dma.core.dates import ctime_date
from dma.core.errors import DataError
from dma.core.values import frozen

NULL_SENDER = "MAILER-DAEMON"
"""What the separator line names as the sender of a bounce (empty envelope sender)."""

_NEEDS_QUOTING = re.compile(rb">*From ")
_QUOTED = re.compile(rb">+From ")
# Bytes that would split the separator line into fields or lines for a reader.
_UNSAFE_IN_SENDER = re.compile(rb"[\x00-\x20\x7f]")


def _sender_bytes(sender: str) -> bytes:
    """The envelope sender as it goes on the separator line: one field, never empty.

    A sender with a space or control character (legal in a quoted local part) would
    make readers misparse the separator, and a newline would forge one, so those
    bytes become ``_``.  Undecodable bytes carried as surrogates come back as-is.
    """
    if not sender:
        return NULL_SENDER.encode("ascii")
    try:
        raw = sender.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = sender.encode("utf-8", "backslashreplace")
    return _UNSAFE_IN_SENDER.sub(b"_", raw)


def from_line(sender: str, moment: datetime) -> bytes:
    """The separator line that starts a record: ``From <sender> <ctime>\\n``.

    An empty (bounce) sender is written as ``MAILER-DAEMON``, as the C dma does.
    """
    return b"From " + _sender_bytes(sender) + b" " + ctime_date(moment).encode("ascii") + b"\n"


def quote_line(line: bytes) -> bytes:
    """Add one ``>`` before a line matching ``^>*From `` (mboxrd); others are unchanged.

    Every line is quoted, not only those after a blank line, so no reader can take a
    body line for a separator.  ``From:`` headers do not match.
    """
    if _NEEDS_QUOTING.match(line):
        return b">" + line
    return line


def unquote_line(line: bytes) -> bytes:
    """Remove one ``>`` from a line matching ``^>+From ``: the inverse of quote_line."""
    if _QUOTED.match(line):
        return line[1:]
    return line


def mbox_record(lines: Iterable[bytes], sender: str, moment: datetime) -> Iterator[bytes]:
    """Yield one mbox record: separator line, quoted message lines, a blank line.

    ``lines`` are the spooled message's lines, each ending in LF (iterating a binary
    file gives exactly that); a missing final LF is added so the blank line really
    ends the record, and empty items, which carry no line, are skipped.  A line with
    an LF before its end would defeat the quoting, so it raises DataError rather
    than write a record a reader could split wrongly.
    """
    yield from_line(sender, moment)
    for number, line in enumerate(lines, start=1):
        if not line:
            continue
        newline = line.find(b"\n")
        if newline != -1 and newline != len(line) - 1:
            raise DataError(
                f"message line {number} holds a line break before its end",
                hint="pass the message one line at a time, as iterating the file gives it",
            )
        quoted = quote_line(line)
        yield quoted if newline != -1 else quoted + b"\n"
    yield b"\n"


# --- the append intent: undoing a record cut short by a killed writer ---------------------


@frozen
class AppendIntent:
    """An mbox append about to start, written down before its first octet.

    A writer killed mid-append (SIGKILL, a crash) leaves half a record that no
    rollback of its own can remove.  Whoever next holds the mailbox's locks finds
    the intent and cuts the mailbox back to ``offset``, when the file is still the
    same one and what follows ``offset`` is that record alone: ``head`` (the newlines
    the old end lacked and the separator line) and no other separator after it.
    """

    device: int
    inode: int
    offset: int  # the mailbox's length before the append
    head: bytes  # the first octets the append writes


def render_intent(intent: AppendIntent) -> bytes:
    """The intent as one line of ASCII: device, inode, offset and head in hex."""
    return b"%d %d %d %s\n" % (intent.device, intent.inode, intent.offset,
                               intent.head.hex().encode("ascii"))


def parse_intent(data: bytes) -> AppendIntent | None:
    """The intent ``render_intent`` wrote, or None for anything else (never raises)."""
    fields = data.split()
    if len(fields) != 4 or not all(field.isdigit() for field in fields[:3]):
        return None
    try:
        head = bytes.fromhex(fields[3].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not head.endswith(b"\n") or b"From " not in head:
        return None
    return AppendIntent(int(fields[0]), int(fields[1]), int(fields[2]), head)


def length_to_restore(
    intent: AppendIntent, device: int, inode: int, size: int, found_head: bytes,
    later_separator: bool,
) -> int | None:
    """The length to cut the mailbox back to, or None to leave it as it is.

    Only the interrupted record itself is ever removed: the mailbox must be the same
    file, longer than ``offset``, hold ``head`` at ``offset`` (``found_head``: the
    octets there), and have no separator line after it (``later_separator``: a
    record someone else appended since, which must stay).  A record that was written
    whole but whose writer died before saying so is removed too: its queue item was
    not removed either, so it is delivered again, once.
    """
    if (device, inode) != (intent.device, intent.inode) or size <= intent.offset:
        return None
    if found_head != intent.head or later_separator:
        return None
    return intent.offset
