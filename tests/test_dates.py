"""Tests for dma.core.dates: RFC 5322 and ctime formatting in the C locale."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime, timedelta, timezone

import pytest

from dma.core.dates import ctime_date, rfc5322_date
from dma.core.errors import SoftwareError


def test_rfc5322_date_matches_the_c_dma_example() -> None:
    """The behaviour notes' example moment formats exactly as the C dma writes it."""
    moment = datetime(2026, 11, 25, 2, 44, 17, tzinfo=UTC)
    assert rfc5322_date(moment) == "Wed, 25 Nov 2026 02:44:17 +0000"


def test_rfc5322_date_pads_the_day_with_a_zero() -> None:
    """A one-digit day of the month is written with a leading zero, like strftime's %d."""
    moment = datetime(2026, 3, 1, 9, 5, 7, tzinfo=UTC)
    assert rfc5322_date(moment) == "Sun, 01 Mar 2026 09:05:07 +0000"


@pytest.mark.parametrize(
    ("offset", "zone"),
    [
        (timedelta(hours=2), "+0200"),
        (timedelta(hours=-5), "-0500"),
        (timedelta(hours=5, minutes=30), "+0530"),
        (timedelta(hours=-3, minutes=-30), "-0330"),
        (timedelta(minutes=-30), "-0030"),
    ],
)
def test_rfc5322_date_writes_the_offset_as_hhmm(offset: timedelta, zone: str) -> None:
    """The UTC offset appears as a signed four-digit +hhmm, including negative half hours."""
    moment = datetime(2026, 11, 25, 2, 44, 17, tzinfo=timezone(offset))
    assert rfc5322_date(moment).endswith(" " + zone)


def test_rfc5322_date_parses_back_to_the_same_moment() -> None:
    """The stdlib's RFC 5322 parser reads our output back as the same instant."""
    moment = datetime(2024, 2, 29, 23, 59, 59, tzinfo=timezone(timedelta(hours=-7)))
    assert email.utils.parsedate_to_datetime(rfc5322_date(moment)) == moment


def test_naive_datetimes_are_refused_where_a_zone_is_shown() -> None:
    """RFC 5322 dates need a zone (naive is a SoftwareError); ctime shows none, so naive is fine."""
    naive = datetime(2026, 11, 25, 2, 44, 17)
    with pytest.raises(SoftwareError, match="time zone"):
        rfc5322_date(naive)
    assert ctime_date(naive) == "Wed Nov 25 02:44:17 2026"


def test_ctime_date_matches_the_c_form() -> None:
    """ctime_date writes the ctime(3) layout used on mbox From_ lines."""
    moment = datetime(2026, 11, 25, 2, 45, 6, tzinfo=UTC)
    assert ctime_date(moment) == "Wed Nov 25 02:45:06 2026"


def test_ctime_date_pads_the_day_with_a_blank() -> None:
    """A one-digit day is padded with a blank, as ctime(3) does, not with a zero."""
    moment = datetime(2026, 11, 5, 2, 45, 6, tzinfo=timezone(timedelta(hours=1)))
    assert ctime_date(moment) == "Thu Nov  5 02:45:06 2026"


def test_names_ignore_the_process_locale() -> None:
    """Every weekday and month gets its English C-locale abbreviation."""
    start = datetime(2027, 1, 4, tzinfo=UTC)  # a Monday
    days = [rfc5322_date(start + timedelta(days=n))[:3] for n in range(7)]
    assert days == ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    months = [ctime_date(datetime(2027, m, 15, tzinfo=UTC))[4:7] for m in range(1, 13)]
    assert " ".join(months) == "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec"
