"""Properties of durations (``-q30m``, QUEUELIFETIME, TIMEOUT): round trips and our error only."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dma.core.durations import UNIT_SECONDS, format_duration, parse_duration
from dma.core.errors import DataError

FAST = settings(max_examples=300, deadline=None)


@FAST
@given(st.integers(min_value=1, max_value=10**12))
def test_format_then_parse_round_trips(seconds: int) -> None:
    """Every positive number of seconds formats to text that parses back to it."""
    assert parse_duration(format_duration(seconds)) == seconds


@FAST
@given(st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(sorted(UNIT_SECONDS))),
                min_size=1, max_size=5))
def test_written_parts_add_up(parts: list[tuple[int, str]]) -> None:
    """``1h30m``-style text is the sum of its parts, whatever the order and case."""
    text = "".join(f"{number}{unit.upper() if number % 2 else unit}" for number, unit in parts)
    total = sum(number * UNIT_SECONDS[unit] for number, unit in parts)
    if total:
        assert parse_duration(text) == total
    else:
        try:
            parse_duration(text)
        except DataError as error:
            assert "longer than zero" in error.message
        else:
            raise AssertionError(f"{text!r} (zero) was accepted")


@FAST
@given(st.text(alphabet="0123456789smhdwSMHDW x-+.\t", max_size=20) | st.text(max_size=20))
def test_any_text_gives_seconds_or_data_error(text: str) -> None:
    """Any text is a positive number of seconds or a DataError with a hint."""
    try:
        seconds = parse_duration(text)
    except DataError as error:
        assert error.hint
    else:
        assert seconds > 0
