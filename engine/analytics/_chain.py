"""Max pain and put/call ratios for one option expiry (FINANCE.md §4).

Pure functions over already-parsed chain rows. The writer-payout curve is computed
exactly in Decimal with prefix sums, so a chain of n strikes costs O(n log n) (the sort)
instead of the O(n²) of evaluating every strike against every other.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from itertools import pairwise
from operator import attrgetter
from typing import Final

__all__ = [
    "ChainAnalysis",
    "ChainError",
    "ChainRow",
    "DuplicateStrikeError",
    "InvalidChainRowError",
    "MaxPain",
    "PayoutPoint",
    "PutCallRatios",
    "analyze_chain",
    "max_pain",
    "put_call_ratios",
]

# Quantities (OI, volume) arrive as ints or integral-or-not Decimals; both multiply
# exactly with Decimal strikes.
Quantity = int | Decimal

_ZERO: Final = Decimal(0)


class ChainError(ValueError):
    """Base class of option-chain input errors; `code` is stable."""

    code: str = "invalid_chain"


class DuplicateStrikeError(ChainError):
    """Two rows of one expiry carry the same strike."""

    code = "duplicate_strike"

    def __init__(self, strike: Decimal) -> None:
        super().__init__(f"duplicate strike {strike}")
        self.strike = strike


class InvalidChainRowError(ChainError):
    """A row holds a non-finite or negative number."""

    code = "invalid_chain_row"

    def __init__(self, strike: Decimal, field: str, value: object) -> None:
        super().__init__(f"row with strike {strike}: {field}={value!r} must be finite and >= 0")
        self.strike = strike
        self.field = field


@dataclass(frozen=True, slots=True)
class ChainRow:
    """One strike of one expiry: open interest and traded volume per side."""

    strike: Decimal
    call_oi: Quantity
    put_oi: Quantity
    call_volume: Quantity = 0
    put_volume: Quantity = 0


@dataclass(frozen=True, slots=True)
class PayoutPoint:
    """Total writer payout `L(strike)` if the underlying settles at `strike`."""

    strike: Decimal
    value: Decimal


@dataclass(frozen=True, slots=True)
class MaxPain:
    """The max-pain strike (None for an empty chain) and the payout curve, ascending."""

    strike: Decimal | None
    payout: tuple[PayoutPoint, ...]


@dataclass(frozen=True, slots=True)
class PutCallRatios:
    """Unrounded put/call ratios; None where the call-side denominator is 0."""

    oi: float | None
    volume: float | None


@dataclass(frozen=True, slots=True)
class ChainAnalysis:
    """Everything `POST /v1/fo/maxpain` returns, in domain types."""

    max_pain: Decimal | None
    pcr_oi: float | None
    pcr_volume: float | None
    payout: tuple[PayoutPoint, ...]


def _check_number(row: ChainRow, field: str, value: Quantity) -> None:
    # bool is an int subclass; a True OI is a caller bug, not the number 1.
    bad_type = isinstance(value, bool) or not isinstance(value, int | Decimal)
    if bad_type or (isinstance(value, Decimal) and not value.is_finite()) or value < 0:
        raise InvalidChainRowError(row.strike, field, value)


def _validated(rows: Iterable[ChainRow]) -> list[ChainRow]:
    # Checks every number once, then returns the rows sorted by strike.
    checked = list(rows)
    for row in checked:
        if not isinstance(row.strike, Decimal):
            raise InvalidChainRowError(row.strike, "strike", row.strike)
        _check_number(row, "strike", row.strike)
        _check_number(row, "call_oi", row.call_oi)
        _check_number(row, "put_oi", row.put_oi)
        _check_number(row, "call_volume", row.call_volume)
        _check_number(row, "put_volume", row.put_volume)
    ordered = sorted(checked, key=attrgetter("strike"))
    for lower, upper in pairwise(ordered):
        # Decimal("100") == Decimal("100.0"): equal values are the same strike.
        if lower.strike == upper.strike:
            raise DuplicateStrikeError(upper.strike)
    return ordered


def _exact_context() -> decimal.Context:
    # Only +, - and * are used, whose exact results have finitely many digits; MAX_PREC
    # keeps them exact and the Inexact trap proves it instead of silently rounding.
    return decimal.Context(
        prec=decimal.MAX_PREC,
        Emax=decimal.MAX_EMAX,
        Emin=decimal.MIN_EMIN,
        traps=[decimal.Inexact, decimal.InvalidOperation, decimal.Overflow],
    )


def _payout_curve(ordered: Sequence[ChainRow]) -> tuple[PayoutPoint, ...]:
    # L(K_j) = K_j·ΣC_{i<j} − Σ(C·K)_{i<j} + Σ(P·K)_{i>j} − K_j·ΣP_{i>j}
    # (the i = j terms are max(0, 0) = 0), so one backward pass for the put suffix sums
    # and one forward pass for the call prefix sums give every L in O(n).
    n = len(ordered)
    with decimal.localcontext(_exact_context()):
        put_suffix_oi: list[Decimal] = [_ZERO] * (n + 1)
        put_suffix_value: list[Decimal] = [_ZERO] * (n + 1)
        for i in range(n - 1, -1, -1):
            row = ordered[i]
            put_suffix_oi[i] = put_suffix_oi[i + 1] + row.put_oi
            put_suffix_value[i] = put_suffix_value[i + 1] + row.put_oi * row.strike
        call_prefix_oi = _ZERO
        call_prefix_value = _ZERO
        curve: list[PayoutPoint] = []
        for j, row in enumerate(ordered):
            k = row.strike
            value = (
                k * call_prefix_oi
                - call_prefix_value
                + put_suffix_value[j + 1]
                - k * put_suffix_oi[j + 1]
            )
            curve.append(PayoutPoint(strike=k, value=value))
            call_prefix_oi += row.call_oi
            call_prefix_value += row.call_oi * k
    return tuple(curve)


def _argmin(curve: Sequence[PayoutPoint]) -> Decimal | None:
    # The curve is ascending and only a strictly smaller value replaces the best, so a
    # tie keeps the lowest strike.
    best: PayoutPoint | None = None
    for point in curve:
        if best is None or point.value < best.value:
            best = point
    return None if best is None else best.strike


def _ratio(numerator: Quantity, denominator: Quantity) -> float | None:
    # Fraction keeps the division exact, so the float is the correctly rounded quotient
    # (the same double Python's int / int gives), whatever the operand types.
    if denominator == 0:
        return None
    return float(Fraction(numerator) / Fraction(denominator))


def _ratios(ordered: Sequence[ChainRow]) -> PutCallRatios:
    with decimal.localcontext(_exact_context()):
        put_oi = sum((r.put_oi for r in ordered), start=_ZERO)
        call_oi = sum((r.call_oi for r in ordered), start=_ZERO)
        put_vol = sum((r.put_volume for r in ordered), start=_ZERO)
        call_vol = sum((r.call_volume for r in ordered), start=_ZERO)
    return PutCallRatios(oi=_ratio(put_oi, call_oi), volume=_ratio(put_vol, call_vol))


def max_pain(rows: Iterable[ChainRow]) -> MaxPain:
    """Compute the max-pain strike and the exact writer-payout curve of one expiry.

    Args:
        rows: the chain's rows in any order; strikes must be unique.

    Returns:
        `MaxPain` with the strike of minimal payout (ties go to the lowest strike,
        None for an empty chain) and `[(strike, L)]` ascending by strike, zero-OI
        strikes included.

    Raises:
        DuplicateStrikeError: two rows share a strike.
        InvalidChainRowError: a number is negative, non-finite or of the wrong type.
    """
    curve = _payout_curve(_validated(rows))
    return MaxPain(strike=_argmin(curve), payout=curve)


def put_call_ratios(rows: Iterable[ChainRow]) -> PutCallRatios:
    """Compute `ΣPutOI/ΣCallOI` and `ΣPutVol/ΣCallVol` as unrounded floats.

    Args:
        rows: the chain's rows in any order; strikes must be unique.

    Returns:
        `PutCallRatios`; each ratio is None when its denominator is 0 and 0.0 when
        only its numerator is 0.

    Raises:
        DuplicateStrikeError: two rows share a strike.
        InvalidChainRowError: a number is negative, non-finite or of the wrong type.
    """
    return _ratios(_validated(rows))


def analyze_chain(rows: Iterable[ChainRow]) -> ChainAnalysis:
    """Compute max pain, both put/call ratios and the payout curve in one pass.

    Args:
        rows: the chain's rows in any order; strikes must be unique.

    Returns:
        `ChainAnalysis`, the shape of the `POST /v1/fo/maxpain` response.

    Raises:
        DuplicateStrikeError: two rows share a strike.
        InvalidChainRowError: a number is negative, non-finite or of the wrong type.
    """
    ordered = _validated(rows)
    curve = _payout_curve(ordered)
    ratios = _ratios(ordered)
    return ChainAnalysis(
        max_pain=_argmin(curve), pcr_oi=ratios.oi, pcr_volume=ratios.volume, payout=curve
    )
