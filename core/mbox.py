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
