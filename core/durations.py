"""Durations as people write them in configs and on command lines: ``30m``, ``1h30m``, ``5d``.

Shared by ``-q30m`` on the command line and ``QUEUELIFETIME`` in dma.conf.
"""

from __future__ import annotations

import re

from dma.core.errors import DataError

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"([0-9]{1,12})([smhdw]?)")


def parse_duration(text: str) -> int:
    """Return ``text`` in seconds: digits with optional unit (s, m, h, d, w), repeated.

    A bare number is seconds, as in sendmail's ``-q``.  Raises DataError (callers
    re-raise it as their own usage or config error) on anything else or on zero.
    """
    spec = text.strip().lower()
    shown = text if len(text) <= 40 else text[:37] + "..."
    if not spec:
        raise DataError("empty duration", hint="write e.g. 30m, 1h30m or 5d")
    total = 0
    position = 0
    while position < len(spec):
        match = _PART.match(spec, position)
        if match is None:
            raise DataError(f"bad duration {shown!r}", hint="write e.g. 30m, 1h30m or 5d")
        total += int(match.group(1)) * UNIT_SECONDS[match.group(2) or "s"]
        position = match.end()
        if not match.group(2) and position < len(spec):
            raise DataError(
                f"bad duration {shown!r}", hint="put a unit (s, m, h, d, w) after each number"
            )
    if total <= 0:
        raise DataError(f"duration {shown!r} must be longer than zero", hint="write e.g. 30m")
    return total


def format_duration(seconds: int) -> str:
    """Render ``seconds`` compactly (``1h30m``); ``parse_duration`` reads it back."""
    if seconds <= 0:
        return "0s"
    parts = []
    for unit in ("w", "d", "h", "m", "s"):
        size = UNIT_SECONDS[unit]
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts)
