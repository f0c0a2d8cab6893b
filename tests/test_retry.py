"""Retry schedule, due items and expiry (SPEC 5.1; dma-behaviour.md 5.3)."""

from __future__ import annotations

import math

import pytest

from dma.core.errors import SoftwareError
from dma.core.queuefile import QueueItem
from dma.core.retry import (
    FIRST_DELAY,
    MAX_DELAY,
    after_temporary_failure,
    is_due,
    is_expired,
    retry_delay,
)

ITEM = QueueItem(id="1a2b.0", sender="alice@example.org", recipient="bob@example.com")
FIVE_DAYS = 432000


def test_first_delay_is_five_minutes_whatever_the_jitter() -> None:
    """The first failed attempt is retried after 300 s, as in the C dma, for any jitter."""
    assert [retry_delay(1, j) for j in (0.0, 0.5, 0.999)] == [FIRST_DELAY] * 3


def test_second_delay_doubles_at_zero_jitter_and_stretches_with_it() -> None:
    """Without jitter the second delay is 600 s; more jitter gives a longer delay, below 750 s."""
    assert retry_delay(2, 0.0) == 600
    assert 600 < retry_delay(2, 0.5) < retry_delay(2, 0.99) < 750


def test_schedule_reaches_the_three_hour_cap_and_stays() -> None:
    """Delays grow to three hours by the seventh attempt and never exceed it after."""
    delays = [retry_delay(n, 0.0) for n in range(1, 9)]
    assert delays == [300, 600, 1200, 2400, 4800, 9600, MAX_DELAY, MAX_DELAY]
    assert retry_delay(6, 0.99) == MAX_DELAY
    assert retry_delay(10_000, 0.3) == MAX_DELAY


@pytest.mark.parametrize("attempts", [0, -1])
def test_attempts_below_one_are_a_bug(attempts: int) -> None:
    """Asking for the delay of attempt 0 or less raises SoftwareError, not a number."""
    with pytest.raises(SoftwareError, match="attempt"):
        retry_delay(attempts, 0.0)


@pytest.mark.parametrize("jitter", [-0.1, 1.0, 2.0, math.nan, math.inf])
def test_jitter_outside_unit_interval_is_a_bug(jitter: float) -> None:
    """Jitter outside [0, 1), NaN included, raises SoftwareError."""
    with pytest.raises(SoftwareError, match="jitter"):
        retry_delay(2, jitter)


def test_after_temporary_failure_counts_reschedules_and_records() -> None:
    """A temporary failure adds an attempt, sets next_try to now plus the delay, keeps the error."""
    once = after_temporary_failure(ITEM, now=1000, error="451 4.3.0 later", jitter=0.4)
    assert (once.attempts, once.next_try, once.last_error) == (1, 1300, "451 4.3.0 later")
    twice = after_temporary_failure(once, now=1300, error="timeout", jitter=0.4)
    assert twice.attempts == 2
    assert twice.next_try == 1300 + retry_delay(2, 0.4)
    assert twice.last_error == "timeout"
    assert (twice.id, twice.sender, twice.recipient) == (ITEM.id, ITEM.sender, ITEM.recipient)
    assert ITEM.attempts == 0  # the input is untouched


def test_never_tried_item_is_due() -> None:
    """An item without next_try (new, or spooled by the C dma) is due at any time."""
    assert is_due(ITEM, 0)


def test_item_is_due_from_its_next_try_on() -> None:
    """An item is not due before next_try and is due at and after it."""
    item = after_temporary_failure(ITEM, now=1000, error="x", jitter=0.0)
    assert not is_due(item, 1299)
    assert is_due(item, 1300)
    assert is_due(item, 5000)


def test_expiry_is_strictly_after_the_lifetime() -> None:
    """An item expires only when it has been queued strictly longer than the lifetime."""
    assert not is_expired(1000.0, 1000.0 + FIVE_DAYS, FIVE_DAYS)
    assert is_expired(1000.0, 1000.5 + FIVE_DAYS, FIVE_DAYS)
    assert not is_expired(1000.0, 2000.0, FIVE_DAYS)


def test_unknown_arrival_time_never_expires() -> None:
    """A non-finite arrival or current time keeps the item rather than bouncing it."""
    assert not is_expired(math.nan, 1e12, 60)
    assert not is_expired(-math.inf, 1e12, 60)
    assert not is_expired(0.0, math.inf, 60)
