"""SMTP server replies: an incremental parser and the EHLO extension list (RFC 5321 4.2).

The parser is fed whatever bytes the socket gave, in any chunking, and hands back
whole replies.  A server that sends something that is not an SMTP reply is the
remote's fault: RemoteProtocolError, a temporary failure, never a bounce.
"""

from __future__ import annotations

import re

from dma.core.errors import TempFailure
from dma.core.values import frozen

MAX_LINE_OCTETS = 2048
"""Longest reply line we accept, CRLF excluded (RFC 5321 allows 512; servers exceed it)."""

MAX_REPLY_LINES = 500
"""Most lines in one multi-line reply: bounds memory against an endless reply."""

_LINE = re.compile(rb"([2-5][0-9][0-9])([ -]?)(.*)", re.DOTALL)
_ENHANCED = re.compile(r"([245])\.([0-9]{1,3})\.([0-9]{1,3})(?=[ \t]|$)")
# Control characters other than TAB become "?" so reply text is safe in one log line.
_CONTROLS = {c: "?" for c in [*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F]}


class RemoteProtocolError(TempFailure):
    """The server sent something that is not a valid SMTP reply: defer, try again later."""


@frozen
class Reply:
    """One complete server reply: its code and the text of each line."""

    code: int
    lines: tuple[str, ...]
    enhanced: str | None = None

    @property
    def text(self) -> str:
        """The reply text as the server wrote it, one line per reply line."""
        return "\n".join(self.lines)

    def __str__(self) -> str:
        """One line for logs and X-Last-Error: ``550 5.1.1 no such user / second line``."""
        text = " / ".join(line for line in self.lines if line)
        return f"{self.code} {text}" if text else str(self.code)


def _shown(line: bytes) -> str:
    """A short, printable excerpt of a bad line for an error message."""
    text = line[:40].decode("ascii", "replace").translate(_CONTROLS)
    return repr(text + ("..." if len(line) > 40 else ""))


class ReplyParser:
    """Bytes in (``receive``), replies out (``next_reply``), in any chunking.

    After it raised once the stream is out of step for good, so it raises again
    on every later call.
    """

    __slots__ = ("_buffer", "_code", "_error", "_lines", "_scanned")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._scanned = 0  # bytes of _buffer known to hold no LF
        self._code: int | None = None  # code of the multi-line reply being collected
        self._lines: list[str] = []
        self._error: RemoteProtocolError | None = None

    @property
    def has_pending(self) -> bool:
        """True when bytes arrived that are not yet part of a returned reply."""
        return bool(self._buffer or self._lines)

    def receive(self, data: bytes) -> None:
        """Buffer ``data``; never raises, parsing happens in ``next_reply``."""
        self._buffer += data

    def feed(self, data: bytes) -> tuple[Reply, ...]:
        """Buffer ``data`` and return every reply that is now complete.

        Garbage after complete replies does not lose them: they are returned and
        the error is raised by the next call.
        """
        self.receive(data)
        replies: list[Reply] = []
        try:
            while (reply := self.next_reply()) is not None:
                replies.append(reply)
        except RemoteProtocolError:
            if not replies:
                raise
        return tuple(replies)

    def next_reply(self) -> Reply | None:
        """The next complete reply, or None when more bytes are needed."""
        if self._error is not None:
            raise self._error
        try:
            return self._next_reply()
        except RemoteProtocolError as error:
            self._error = error
            raise

    def _next_reply(self) -> Reply | None:
        while True:
            end = self._buffer.find(b"\n", self._scanned)
            if end < 0:
                self._scanned = len(self._buffer)
                if self._scanned > MAX_LINE_OCTETS + 1:
                    raise RemoteProtocolError(
                        f"server reply line longer than {MAX_LINE_OCTETS} octets",
                        hint="the server is broken or not an SMTP server",
                    )
                return None
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            self._scanned = 0
            if line.endswith(b"\r"):
                line = line[:-1]
            reply = self._take_line(line)
            if reply is not None:
                return reply

    def _take_line(self, line: bytes) -> Reply | None:
        """Add one reply line; return the reply when this line ends it."""
        if len(line) > MAX_LINE_OCTETS:
            raise RemoteProtocolError(
                f"server reply line longer than {MAX_LINE_OCTETS} octets",
                hint="the server is broken or not an SMTP server",
            )
        match = _LINE.fullmatch(line)
        if match is None or (match.group(2) == b"" and match.group(3) != b""):
            raise RemoteProtocolError(
                f"server sent a line that is not an SMTP reply: {_shown(line)}",
                hint="the server is broken or not an SMTP server",
            )
        code = int(match.group(1))
        if self._code is not None and code != self._code:
            raise RemoteProtocolError(
                f"server mixed reply codes {self._code} and {code} in one multi-line reply",
                hint="the server is broken",
            )
        text = match.group(3).decode("utf-8", "replace").translate(_CONTROLS)
        self._lines.append(text)
        if match.group(2) == b"-":
            if len(self._lines) >= MAX_REPLY_LINES:
                raise RemoteProtocolError(
                    f"server reply longer than {MAX_REPLY_LINES} lines",
                    hint="the server is broken",
                )
            self._code = code
            return None
        lines = tuple(self._lines)
        self._lines.clear()
        self._code = None
        enhanced = _ENHANCED.match(lines[0])
        return Reply(code, lines, enhanced.group(0) if enhanced else None)


@frozen
class Extensions:
    """What the server announced in its EHLO reply (all off after HELO)."""

    starttls: bool = False
    pipelining: bool = False
    size: int | None = None  # None: SIZE not offered; 0: offered without a fixed limit
    eightbitmime: bool = False
    smtputf8: bool = False
    dsn: bool = False
    auth: frozenset[str] = frozenset()  # upper-case mechanism names; empty: no AUTH


def parse_ehlo(reply: Reply) -> Extensions:
    """Read the extensions from an EHLO reply; unknown keywords (CHUNKING...) are ignored.

    The first line is the server's greeting, not a keyword.  Keywords are
    case-insensitive; mechanisms from ``AUTH`` and the old ``AUTH=`` form are merged.
    A SIZE with a missing or unreadable number counts as offered with no limit.
    """
    found: dict[str, list[str]] = {}
    auth: set[str] = set()
    for line in reply.lines[1:]:
        words = line.split()
        if not words:
            continue
        keyword = words[0].upper()
        if keyword.startswith("AUTH="):
            auth.update(word.upper() for word in [keyword[5:], *words[1:]] if word)
            continue
        if keyword == "AUTH":
            auth.update(word.upper() for word in words[1:])
            continue
        found[keyword] = words[1:]
    size: int | None = None
    if "SIZE" in found:
        params = found["SIZE"]
        size = int(params[0]) if params and params[0].isascii() and params[0].isdigit() else 0
    return Extensions(
        starttls="STARTTLS" in found,
        pipelining="PIPELINING" in found,
        size=size,
        eightbitmime="8BITMIME" in found,
        smtputf8="SMTPUTF8" in found,
        dsn="DSN" in found,
        auth=frozenset(auth),
    )
