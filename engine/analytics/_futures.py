"""Futures analytics: basis, carry, rollover and OI build-up (FINANCE.md §5).

Pure functions. Prices are Decimal; percentages are floats computed from the exact
rational value (one rounding, at the end) so they match a textbook evaluation as
closely as a double can.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from operator import attrgetter
from typing import Final, Literal

__all__ = [
    "Buildup",
    "ContractAnalysis",
    "DuplicateExpiryError",
    "FutureQuote",
    "FuturesAnalysis",
    "FuturesError",
    "analyze",
    "analyze_futures",
    "annualized_carry_pct",
    "basis",
    "basis_pct",
    "classify_buildup",
    "days_to_expiry",
    "rollover_pct",
]

Quantity = int | Decimal
Price = int | Decimal
Buildup = Literal["long_buildup", "short_buildup", "short_covering", "long_unwinding", "neutral"]

IST: Final = timezone(timedelta(hours=5, minutes=30), "IST")
DAYS_PER_YEAR: Final = 365


class FuturesError(ValueError):
    """Base class of futures-analytics input errors; `code` is stable."""

    code: str = "invalid_futures"


class DuplicateExpiryError(FuturesError):
    """Two futures of one request share an expiry date."""

    code = "duplicate_expiry"

    def __init__(self, expiry: date) -> None:
        super().__init__(f"duplicate futures expiry {expiry.isoformat()}")
        self.expiry = expiry


@dataclass(frozen=True, slots=True)
class FutureQuote:
    """One futures contract as observed now, with the previous observation if known."""

    expiry: date
    price: Decimal
    oi: Quantity | None = None
    prev_price: Decimal | None = None
    prev_oi: Quantity | None = None


@dataclass(frozen=True, slots=True)
class ContractAnalysis:
    """Per-contract analytics, one entry of the `contracts` list of PROTOCOL.md."""

    expiry: date
    days_to_expiry: int
    basis: Decimal
    basis_pct: float | None
    annualized_carry_pct: float | None
    buildup: Buildup | None


@dataclass(frozen=True, slots=True)
class FuturesAnalysis:
    """The `POST /v1/futures/analyze` result: contracts nearest expiry first."""

    contracts: tuple[ContractAnalysis, ...]
    rollover_pct: float | None


def _ist_date(day: date) -> date:
    # A datetime is a date too; reduce it to its IST calendar date so "days" never
    # depends on the caller's timezone. Naive datetimes have no defined IST date.
    if isinstance(day, datetime):
        if day.tzinfo is None or day.utcoffset() is None:
            raise FuturesError(f"naive datetime {day.isoformat()} has no IST date")
        return day.astimezone(IST).date()
    return day


def basis(spot: Price, future_price: Price) -> Decimal:
    """Return the exact basis `F − S`.

    Args:
        spot: the underlying's price S.
        future_price: the futures price F.
    """
    return Decimal(future_price) - Decimal(spot)


def basis_pct(spot: Price, future_price: Price) -> float | None:
    """Return `(F − S)/S·100` as a float, or None if `S <= 0`.

    Args:
        spot: the underlying's price S.
        future_price: the futures price F.
    """
    if spot <= 0:
        return None
    s = Fraction(spot)
    return float((Fraction(future_price) - s) / s * 100)


def days_to_expiry(expiry: date, as_of: date) -> int:
    """Return the calendar days from `as_of` to `expiry`, both taken as IST dates.

    Args:
        expiry: the contract's expiry date.
        as_of: the valuation date; an aware datetime is reduced to its IST date.

    Raises:
        FuturesError: a naive datetime was given, whose IST date is unknown.
    """
    return (_ist_date(expiry) - _ist_date(as_of)).days


def annualized_carry_pct(spot: Price, future_price: Price, days: int) -> float | None:
    """Return the simple annualised cost of carry `(F/S − 1)·365/days·100`.

    Args:
        spot: the underlying's price S.
        future_price: the futures price F.
        days: calendar days to expiry.

    Returns:
        The percentage, or None if `days <= 0` or `S <= 0` (undefined).
    """
    if days <= 0 or spot <= 0:
        return None
    ratio = Fraction(future_price) / Fraction(spot)
    return float((ratio - 1) * DAYS_PER_YEAR / days * 100)


def rollover_pct(open_interests: Sequence[Quantity | None]) -> float | None:
    """Return `(OI_next + OI_far)/(OI_near + OI_next + OI_far)·100`.

    Args:
        open_interests: OIs ordered nearest expiry first; a missing expiry (absent or
            None) counts as 0. Beyond three contracts, every contract after the
            nearest counts as rolled.

    Returns:
        The percentage, or None if the total OI is 0.
    """
    ois = [Fraction(0) if oi is None else Fraction(oi) for oi in open_interests]
    total = sum(ois, start=Fraction(0))
    if total == 0:
        return None
    return float((total - ois[0]) / total * 100)


def classify_buildup(
    price: Price,
    prev_price: Price | None,
    oi: Quantity | None,
    prev_oi: Quantity | None,
) -> Buildup | None:
    """Classify the OI build-up against the previous observation, exactly.

    Args:
        price: the current price.
        prev_price: the previous observation's price.
        oi: the current open interest.
        prev_oi: the previous observation's open interest.

    Returns:
        `long_buildup` (Δp>0, ΔOI>0), `short_buildup` (Δp<0, ΔOI>0), `short_covering`
        (Δp>0, ΔOI<0), `long_unwinding` (Δp<0, ΔOI<0), `neutral` when either delta
        is 0, and None when any of the previous values or the current OI is missing.
    """
    if prev_price is None or oi is None or prev_oi is None:
        return None
    # Decimal/int comparisons are exact; no epsilon by design (FINANCE.md §5).
    dp = Decimal(price) - Decimal(prev_price)
    doi = Decimal(oi) - Decimal(prev_oi)
    if dp == 0 or doi == 0:
        return "neutral"
    if doi > 0:
        return "long_buildup" if dp > 0 else "short_buildup"
    return "short_covering" if dp > 0 else "long_unwinding"


def _analyze_contract(spot: Price, as_of: date, quote: FutureQuote) -> ContractAnalysis:
    days = days_to_expiry(quote.expiry, as_of)
    return ContractAnalysis(
        expiry=quote.expiry,
        days_to_expiry=days,
        basis=basis(spot, quote.price),
        basis_pct=basis_pct(spot, quote.price),
        annualized_carry_pct=annualized_carry_pct(spot, quote.price, days),
        buildup=classify_buildup(quote.price, quote.prev_price, quote.oi, quote.prev_oi),
    )


def analyze(spot: Price, as_of: date, futures: Iterable[FutureQuote]) -> FuturesAnalysis:
    """Analyse a futures strip against the spot price on `as_of`.

    Args:
        spot: the underlying's price.
        as_of: the valuation date (IST).
        futures: the contracts in any order; the nearest expiry is "near".

    Returns:
        `FuturesAnalysis` with contracts nearest expiry first and the rollover
        percentage over their OIs (a missing OI counts as 0).

    Raises:
        DuplicateExpiryError: two contracts share an expiry.
        FuturesError: `as_of` is a naive datetime.
    """
    ordered = sorted(futures, key=attrgetter("expiry"))
    for i in range(1, len(ordered)):
        if ordered[i - 1].expiry == ordered[i].expiry:
            raise DuplicateExpiryError(ordered[i].expiry)
    day = _ist_date(as_of)
    return FuturesAnalysis(
        contracts=tuple(_analyze_contract(spot, day, quote) for quote in ordered),
        rollover_pct=rollover_pct([quote.oi for quote in ordered]),
    )


# The package re-exports `analyze` under this unambiguous name.
analyze_futures: Final = analyze
