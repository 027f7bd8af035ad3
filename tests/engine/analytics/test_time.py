"""Time to expiry (FINANCE.md §1): 15:30 IST expiry instant, calendar seconds / (365·86400)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

import engine.analytics as analytics
from engine.analytics import _time
from engine.analytics._time import (
    EXPIRY_TIME_IST,
    SECONDS_PER_YEAR,
    expiry_instant,
    expiry_ts_ms,
    time_to_expiry,
    year_fraction,
)

IST = timezone(timedelta(hours=5, minutes=30))


def ms(dt: datetime) -> int:
    return (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def test_expiry_instant_is_1530_ist_on_the_expiry_date() -> None:
    """The expiry instant is 15:30:00 IST, i.e. 10:00:00 UTC, on the expiry date."""
    assert time(15, 30, tzinfo=IST) == EXPIRY_TIME_IST
    instant = expiry_instant(date(2026, 1, 27))
    assert instant.astimezone(UTC) == datetime(2026, 1, 27, 10, 0, tzinfo=UTC)
    assert expiry_ts_ms(date(2026, 1, 27)) == ms(datetime(2026, 1, 27, 10, 0, tzinfo=UTC))


def test_year_has_365_days_of_calendar_seconds() -> None:
    """T is seconds / (365·86400): exactly 365 days before expiry gives T == 1.0."""
    assert SECONDS_PER_YEAR == 31_536_000
    expiry = date(2027, 3, 30)
    valuation = expiry_instant(expiry) - timedelta(days=365)
    assert time_to_expiry(expiry, ms(valuation)) == 1.0


def test_weekends_and_holidays_count() -> None:
    """From Friday 15:30 IST to the next Tuesday's expiry is 4 calendar days, not 1 trading day."""
    friday_close = datetime(2026, 1, 23, 15, 30, tzinfo=IST)
    assert time_to_expiry(date(2026, 1, 27), ms(friday_close)) == 4 * 86400 / SECONDS_PER_YEAR


def test_time_is_zero_at_expiry_and_negative_after() -> None:
    """At 15:30 IST on the expiry date T is 0.0; one millisecond later it is negative."""
    expiry = date(2026, 2, 24)
    at = ms(datetime(2026, 2, 24, 15, 30, tzinfo=IST))
    assert time_to_expiry(expiry, at) == 0.0
    assert time_to_expiry(expiry, at + 1) < 0.0
    assert time_to_expiry(expiry, at - 1) == 0.001 / SECONDS_PER_YEAR


def test_morning_of_expiry_counts_the_hours_left() -> None:
    """At 09:15 IST on the expiry day 6¼ hours remain."""
    morning = ms(datetime(2026, 2, 24, 9, 15, tzinfo=IST))
    assert time_to_expiry(date(2026, 2, 24), morning) == 6.25 * 3600 / SECONDS_PER_YEAR


@given(
    st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 12, 31)),
    st.integers(
        min_value=ms(datetime(1999, 1, 1, tzinfo=UTC)),
        max_value=ms(datetime(2101, 1, 1, tzinfo=UTC)),
    ),
)
def test_matches_finance_formula_literally(expiry: date, valuation_ts_ms: int) -> None:
    """T is FINANCE.md's `(expiry - valuation).total_seconds() / (365*86400)` bit for bit."""
    valuation = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=valuation_ts_ms)
    instant = datetime.combine(expiry, time(15, 30), tzinfo=IST)
    assert time_to_expiry(expiry, valuation_ts_ms) == (instant - valuation).total_seconds() / (
        365 * 86400
    )


def test_year_fraction_between_instants() -> None:
    """year_fraction(start, end) is the signed calendar time from start to end in years."""
    start = ms(datetime(2026, 1, 1, tzinfo=UTC))
    end = ms(datetime(2026, 7, 2, 12, tzinfo=UTC))
    assert year_fraction(start, end) == (182 * 86400 + 12 * 3600) / SECONDS_PER_YEAR
    assert year_fraction(end, start) == -year_fraction(start, end)


def test_package_reexports_public_names() -> None:
    """engine.analytics re-exports this module's public API as the same objects."""
    for name in _time.__all__:
        assert getattr(analytics, name) is getattr(_time, name)
