"""Dates as mail writes them: RFC 5322 ``Date:`` values and ctime for mbox ``From `` lines.

The names are the C locale's, whatever the process locale is, because ``strftime``
would follow the locale and a header must not.  The moment is an argument (the
shell reads the clock); it must carry its UTC offset, since a header states it.
"""

from __future__ import annotations

from dma.core.errors import SoftwareError

TYPE_CHECKING = False  # not typing's: a submission need not import typing
if TYPE_CHECKING:
    from datetime import datetime

DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _require_aware(moment: datetime) -> int:
    """Return the UTC offset of ``moment`` in whole minutes; a naive datetime is a bug."""
    offset = moment.utcoffset()
    if offset is None:
        raise SoftwareError(
            f"date {moment.isoformat()} has no time zone",
            hint="pass an aware datetime, e.g. datetime.now().astimezone()",
        )
    # RFC 5322 zones are +hhmm: a sub-minute offset (historic LMT zones) is truncated.
    seconds = int(offset.total_seconds())
    return -(-seconds // 60) if seconds < 0 else seconds // 60


def rfc5322_date(moment: datetime) -> str:
    """Format ``moment`` as ``Wed, 25 Nov 2026 02:44:17 +0000``: C dma's ``%a, %d %b %Y %T %z``."""
    minutes = _require_aware(moment)
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return (
        f"{DAY_NAMES[moment.weekday()]}, {moment.day:02d} {MONTH_NAMES[moment.month - 1]}"
        f" {moment.year:04d} {moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
        f" {sign}{hours:02d}{mins:02d}"
    )


def ctime_date(moment: datetime) -> str:
    """Format ``moment`` as ``Wed Nov 25 02:45:06 2026`` (C ``ctime`` without its newline).

    The day is padded with a blank (``Nov  5``), as ``ctime`` does, so mbox readers
    that match the classic From_ line accept it.  ctime shows no zone, so a naive
    (local) datetime is as good as an aware one here.
    """
    return (
        f"{DAY_NAMES[moment.weekday()]} {MONTH_NAMES[moment.month - 1]} {moment.day:2d}"
        f" {moment.hour:02d}:{moment.minute:02d}:{moment.second:02d} {moment.year}"
    )
