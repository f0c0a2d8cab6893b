"""Text that came from files as octets: one rule for carrying and for showing them.

Every file dma reads (dma.conf, aliases, auth.conf, Q files written by the C dma)
is decoded as UTF-8 with ``surrogateescape``: an octet that is not UTF-8 (a Latin-1
sender, a password in Latin-1) becomes a lone surrogate, so no read ever fails and
no octet is lost.  Such text cannot be encoded strictly: ``wire_octets`` gives
back the very octets the file held (what the C dma would send), ``is_utf8`` says
whether there were any such octets, and ``printable`` is the one form that any log
line, trace or error message may show (never raising, never a control character).
"""

from __future__ import annotations

import functools

_CONTROL_NAMES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\0"}


@functools.cache
def _control_table() -> dict[int, str]:
    """str.translate's table for control characters, made on first use (most processes
    never show a control character, and import time counts on the submission path)."""
    return {code: _CONTROL_NAMES.get(chr(code), f"\\x{code:02x}")
            for code in (*range(0x20), 0x7F)}


def wire_octets(text: str) -> bytes:
    """The octets ``text`` was read from: UTF-8, with escaped octets restored as they were.

    Never raises: a surrogate that ``surrogateescape`` did not make (only possible from
    ``surrogatepass`` text) is encoded as U+FFFD's octets.
    """
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return "".join(
            "\ufffd" if "\ud800" <= char <= "\udfff" and not "\udc80" <= char <= "\udcff"
            else char
            for char in text
        ).encode("utf-8", "surrogateescape")


def is_utf8(text: str) -> bool:
    """True when ``text`` holds no escaped octet: its octets are valid UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(text: object) -> str:
    """``text`` for a log line or a message: octets that are not UTF-8 as ``\\xNN``,
    control characters as ``\\n``, ``\\r``, ``\\t``, ``\\0`` or ``\\xNN``.

    The result always encodes as UTF-8 and holds no control character, so it can
    neither break a syslog line nor raise in the sink.  Backslashes are kept as
    they are: the form is for people, not for parsing back.
    """
    try:
        shown = str(text)
    except Exception:  # a broken __str__ must not break a log line
        shown = f"<{type(text).__name__}>"
    if shown.isascii() and shown.isprintable():
        return shown
    octets = wire_octets(shown)
    return octets.decode("utf-8", "backslashreplace").translate(_control_table())
