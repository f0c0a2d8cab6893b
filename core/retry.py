"""When to try a queued recipient again, and when to give up on it (SPEC 5.1).

The C dma sleeps in its delivery process for up to five days, growing its backoff
by ``1.5 + random() % 1`` each time.  We never sleep: a temporary failure is written
into the Q file as ``X-Next-Try`` and the process ends, so the schedule has to be a
function of the attempt count alone.  The randomness (``jitter``) still comes from
the caller, which keeps this module pure and its tests exact.
"""

from __future__ import annotations

import math

from dma.core.errors import SoftwareError
from dma.core.queuefile import QueueItem
from dma.core.values import replace

FIRST_DELAY = 300
"""Seconds between the first failed attempt and the second, as in the C dma."""

MAX_DELAY = 3 * 3600
"""No item waits longer than this between attempts, as in the C dma."""

JITTER_SPREAD = 0.25
"""Delays after the first are stretched by a factor in ``[1, 1 + JITTER_SPREAD)``.

The doubling base makes consecutive delays 2x apart; the stretch moves each delay
independently, so the ratio of two consecutive delays lies in
``[2 / 1.25, 2 * 1.25) = [1.6, 2.5)``, inside the C dma's 1.5x..2.5x whatever
jitter each attempt drew.  Flooring to whole seconds keeps the upper end: the
smallest delay is an exact multiple of 300 and the largest never rounds up.
"""

_CAPPED_FROM = 7
"""From this attempt on, ``300 * 2 ** (attempts - 1)`` is past MAX_DELAY for any jitter."""


def retry_delay(attempts: int, jitter: float) -> int:
    """Seconds to wait after the ``attempts``-th failed attempt (``attempts >= 1``).

    300 s after the first failure, then about doubling (1.6x..2.5x), capped at
    three hours.  ``jitter`` is a number in ``[0, 1)`` from the caller's random
    source; the same attempts and jitter always give the same delay.
    """
    if attempts < 1:
        raise SoftwareError(
            f"retry delay asked for attempt {attempts}",
            hint="count the failed attempt before asking for its delay",
        )
    if not (0.0 <= jitter < 1.0):
        raise SoftwareError(
            f"retry jitter {jitter!r} is outside [0, 1)", hint="pass random.random()"
        )
    if attempts == 1:
        return FIRST_DELAY
    if attempts >= _CAPPED_FROM:
        return MAX_DELAY
    stretched = (FIRST_DELAY << (attempts - 1)) * (1.0 + JITTER_SPREAD * jitter)
    return min(MAX_DELAY, math.floor(stretched))


def after_temporary_failure(item: QueueItem, *, now: int, error: str, jitter: float) -> QueueItem:
    """``item`` after one more failed attempt: counted, rescheduled, the error kept.

    The error is stored as given; the Q file writer makes it one line.
    """
    attempts = item.attempts + 1
    return replace(
        item,
        attempts=attempts,
        next_try=now + retry_delay(attempts, jitter),
        last_error=error,
    )


def is_due(item: QueueItem, now: int) -> bool:
    """Whether a queue runner honouring retry times should try ``item`` at ``now``.

    Items never tried (or spooled by the C dma, which has no ``X-Next-Try``) are due.
    """
    return item.next_try is None or item.next_try <= now


def is_expired(arrival: float, now: float, lifetime: int) -> bool:
    """Whether an item that arrived at ``arrival`` has been queued longer than ``lifetime``.

    Strictly longer, as the C dma's ``now - mtime > 432000``.  A non-finite time
    (an unreadable mtime) never expires an item: keeping mail is the safe mistake.
    """
    if not (math.isfinite(arrival) and math.isfinite(now)):
        return False
    return now - arrival > lifetime
