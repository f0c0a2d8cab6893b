"""Properties of the retry schedule: bounded, growing 1.5x..2.5x, monotonic (SPEC 5.1)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dma.core.queuefile import QueueItem
from dma.core.retry import FIRST_DELAY, MAX_DELAY, after_temporary_failure, is_due, retry_delay

_jitters = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
_attempts = st.integers(min_value=1, max_value=40)


@settings(max_examples=200, deadline=None)
@given(_attempts, _jitters)
def test_delay_is_within_bounds(attempts: int, jitter: float) -> None:
    """Every delay is a whole number of seconds between 300 and 10800."""
    delay = retry_delay(attempts, jitter)
    assert isinstance(delay, int)
    assert FIRST_DELAY <= delay <= MAX_DELAY


@settings(max_examples=200, deadline=None)
@given(_attempts, _jitters, _jitters)
def test_consecutive_delays_grow_by_one_and_a_half_to_two_and_a_half(
    attempts: int, earlier_jitter: float, later_jitter: float
) -> None:
    """Whatever each attempt's jitter, the next delay is 1.5x..2.5x the last until the cap."""
    earlier = retry_delay(attempts, earlier_jitter)
    later = retry_delay(attempts + 1, later_jitter)
    assert later >= earlier
    if later < MAX_DELAY:
        assert 1.5 * earlier <= later <= 2.5 * earlier
    else:
        assert earlier * 2.5 >= MAX_DELAY or earlier == MAX_DELAY


@settings(max_examples=200, deadline=None)
@given(st.lists(_jitters, min_size=2, max_size=20))
def test_schedule_is_non_decreasing(jitters: list[float]) -> None:
    """A whole schedule drawn with varying jitter never shortens."""
    delays = [retry_delay(n, j) for n, j in enumerate(jitters, start=1)]
    assert delays == sorted(delays)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=2**40), _jitters, st.integers(0, 30))
def test_rescheduled_item_is_not_due_until_its_delay_passes(
    now: int, jitter: float, attempts: int
) -> None:
    """After a failure the item is not due during its delay and is due once it has passed."""
    item = QueueItem(id="a.0", sender="s@x", recipient="r@y", attempts=attempts)
    later = after_temporary_failure(item, now=now, error="e", jitter=jitter)
    delay = retry_delay(attempts + 1, jitter)
    assert later.attempts == attempts + 1
    assert not is_due(later, now + delay - 1)
    assert is_due(later, now + delay)
