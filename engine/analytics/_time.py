"""Time to expiry as a year fraction (FINANCE.md §1).

An option expires at 15:30:00 IST on its expiry date. T counts calendar seconds (weekends and
holidays included) over a 365-day year. IST is a fixed UTC+05:30 offset with no DST, so a
fixed-offset timezone is exact and, unlike the tz database, has no pre-1945 local-mean-time
quirks.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Final

__all__ = [
    "EXPIRY_TIME_IST",
    "SECONDS_PER_YEAR",
    "expiry_instant",
    "expiry_ts_ms",
    "time_to_expiry",
    "year_fraction",
]

IST: Final = timezone(timedelta(hours=5, minutes=30), "IST")
EXPIRY_TIME_IST: Final = time(15, 30, 0, tzinfo=IST)
SECONDS_PER_YEAR: Final = 365 * 86400

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def expiry_instant(expiry: date) -> datetime:
    """Return the expiry instant of a contract, 15:30:00 IST on its expiry date.

    Args:
        expiry: the contract's expiry date (an IST calendar date).

    Returns:
        An aware datetime in IST.
    """
    return datetime.combine(expiry, EXPIRY_TIME_IST)


def expiry_ts_ms(expiry: date) -> int:
    """Return the expiry instant of a contract as epoch milliseconds (UTC).

    Args:
        expiry: the contract's expiry date (an IST calendar date).

    Returns:
        Milliseconds since 1970-01-01T00:00:00Z.
    """
    return (expiry_instant(expiry) - _EPOCH) // timedelta(milliseconds=1)


def year_fraction(start_ts_ms: int, end_ts_ms: int) -> float:
    """Return the calendar time from one instant to another in years of 365 days.

    Args:
        start_ts_ms: the valuation instant, epoch milliseconds (UTC).
        end_ts_ms: the later instant (e.g. an expiry), epoch milliseconds (UTC).

    Returns:
        `(end - start).total_seconds() / (365*86400)`; negative when `end` is earlier.
    """
    # NOTE: the same two roundings as FINANCE.md's formula (total_seconds, then the
    # division), so a caller evaluating that formula literally gets the identical double.
    delta = timedelta(milliseconds=end_ts_ms) - timedelta(milliseconds=start_ts_ms)
    return delta.total_seconds() / SECONDS_PER_YEAR


def time_to_expiry(expiry: date, valuation_ts_ms: int) -> float:
    """Return T, the time from a valuation instant to an expiry date's 15:30 IST, in years.

    Args:
        expiry: the contract's expiry date (an IST calendar date).
        valuation_ts_ms: the valuation instant, epoch milliseconds (UTC).

    Returns:
        T in years of 365 days. T <= 0 at or after expiry; option outputs are then null.
    """
    return year_fraction(valuation_ts_ms, expiry_ts_ms(expiry))
