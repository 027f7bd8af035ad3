"""Shared pieces of the indicator code: errors, the bar type and TA-Lib's arithmetic primitives.

Batch (`_indicators*.py`) and incremental (`_incremental*.py`) code call the same primitives
here, so both perform the same floating-point operations in the same order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

# Error codes carried by IndicatorError.code; the HTTP layer answers all of them with 422.
UNKNOWN_INDICATOR: Final = "unknown_indicator"
INVALID_PARAM: Final = "invalid_param"
INVALID_CANDLES: Final = "invalid_candles"

# TA-Lib's TA_EPSILON (ta_utility.h, 1e-14 since TA-Lib 0.6). Used by the fixed-band zero test
# on dimensionless quantities (ADX's DI sum) and by the scale-relative test (STOCH's range).
TA_EPSILON: Final = 1e-14

IST_OFFSET_MS: Final = (5 * 60 + 30) * 60 * 1000
DAY_MS: Final = 24 * 60 * 60 * 1000


class IndicatorError(ValueError):
    """An indicator request that cannot be computed: unknown name, bad parameter or bad input.

    `code` is stable (`unknown_indicator`, `invalid_param`, `invalid_candles`) and `details`
    names the offending field, so the HTTP layer can answer 422 without parsing `message`.
    """

    def __init__(
        self, code: str, message: str, details: Mapping[str, object] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details: Mapping[str, object] = dict(details or {})


@dataclass(frozen=True, slots=True)
class Bar:
    """One candle fed to an incremental indicator; `ts` is the bar's open time, epoch ms UTC."""

    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: float

    def __post_init__(self) -> None:
        # NOTE: one NaN would poison every running sum for the rest of the stream.
        for name in ("open", "high", "low", "close", "volume"):
            if not math.isfinite(getattr(self, name)):
                raise IndicatorError(INVALID_CANDLES, f"bar {name} is not finite", {"field": name})


def _fma_exact(a: float, b: float, c: float) -> float:
    # a*b + c rounded once. Every finite double is an integer over a power of two, so the
    # exact value is one fraction, and CPython's int/int true division is correctly rounded.
    if not (math.isfinite(a) and math.isfinite(b) and math.isfinite(c)):
        return a * b + c
    na, da = a.as_integer_ratio()
    nb, db = b.as_integer_ratio()
    nc, dc = c.as_integer_ratio()
    numerator = na * nb * dc + nc * da * db
    if numerator == 0:
        # An exact zero: the unfused expression is then exact too and carries IEEE's zero sign.
        return a * b + c
    try:
        return numerator / (da * db * dc)
    except OverflowError:
        return math.copysign(math.inf, numerator)


# TA-Lib >= 0.6 evaluates some multiply-adds (EMA, ATR, BBANDS' upper band) with a fused
# multiply-add, so reproducing its results bit for bit needs one. math.fma exists from 3.13.
fma: Final[Callable[[float, float, float], float]] = getattr(math, "fma", _fma_exact)


def true_range(high: float, low: float, prev_close: float) -> float:
    """Return TA-Lib's true range: high - low, widened by the gaps to the previous close."""
    # TA-Lib's order (TRANGE): equal to max(H, C') - min(L, C') whenever H >= L.
    greatest = high - low
    gap = abs(prev_close - high)
    if gap > greatest:
        greatest = gap
    gap = abs(prev_close - low)
    if gap > greatest:
        greatest = gap
    return greatest


def is_zero(value: float) -> bool:
    """Return TA-Lib's TA_IS_ZERO: `value` lies strictly inside (-TA_EPSILON, TA_EPSILON)."""
    return -TA_EPSILON < value < TA_EPSILON


def is_flat_range(highest: float, lowest: float) -> bool:
    """Return TA-Lib's STOCH guard: the range is zero relative to its own two extremes."""
    return abs(highest - lowest) <= TA_EPSILON * (abs(highest) + abs(lowest))


def ist_day(ts_ms: float) -> int:
    """Return the IST calendar day number (days since 1970-01-01 IST) of an epoch-ms stamp."""
    return (int(ts_ms) + IST_OFFSET_MS) // DAY_MS


def finite_or_none(value: float) -> float | None:
    """Return `value`, or None when it is NaN or infinite (JSON has no NaN; FINANCE says null)."""
    return value if math.isfinite(value) else None


def nan_to_none(values: list[float]) -> list[float | None]:
    """Return `values` with every NaN or infinity (warm-up marks, overflow) replaced by None."""
    isfinite = math.isfinite
    return [v if isfinite(v) else None for v in values]


def floats(values: Iterable[float]) -> list[float]:
    """Return `values` as a list of Python floats (NumPy scalars warn on 0/0 instead of NaN)."""
    return list(map(float, values))


def sma_into(out: list[float], x: Sequence[float], period: int, offset: int = 0) -> None:
    """Write TA_INT_SMA of `x` into out[offset + i] for every i from period-1 on.

    TA-Lib keeps a running sum that it never re-sums; its drift is part of TA-Lib's output,
    so it is reproduced here. A period of 1 copies `x` (TA_MA's rule).
    """
    if period == 1:
        for i, v in enumerate(x):
            out[offset + i] = v
        return
    if len(x) < period:
        return
    total = 0.0
    for i in range(period - 1):
        total += x[i]
    for i in range(period - 1, len(x)):
        total += x[i]
        out[offset + i] = total / period
        total -= x[i - period + 1]


def reseed_deviation(window: Iterable[float], inv: float) -> tuple[float, float, float, float]:
    """Rebuild BBANDS' deviation sums around the mean of the `period` values in `window`.

    Returns (shift, sum of deviations, sum of squared deviations, variance): the sums with
    the oldest value already removed (the next bar's state), the variance of this bar, floored
    to 0 where it is cancellation noise (TA-Lib var.c).
    """
    values = list(window)
    total = 0.0
    for v in values:
        total += v
    shift = total * inv
    dev_sum = dev_sq = 0.0
    for v in values:
        d = v - shift
        dev_sum += d
        dev_sq += d * d
    mean_dev = dev_sum * inv
    variance = dev_sq * inv - mean_dev * mean_dev
    if variance < 1e-12 * (dev_sq * inv):
        variance = 0.0
    d = values[0] - shift
    return shift, dev_sum - d, dev_sq - d * d, variance


def band_edges(mid: float, sigma: float, up: float, dn: float) -> tuple[float, float]:
    """Return BBANDS' (upper, lower) as TA-Lib forms them (an asymmetric upper band is fused)."""
    if up == dn:
        width = sigma * up
        return mid + width, mid - width
    return fma(sigma, up, mid), mid - sigma * dn


def directional_index(plus_dm: float, minus_dm: float, tr_sum: float) -> float | None:
    """Return Wilder's DX from the smoothed ±DM and TR sums, or None where TA-Lib skips it."""
    # TA-Lib #253: the TR sum (quote units) is tested exactly; the DI sum is dimensionless,
    # so the fixed TA_IS_ZERO band stays on it.
    if not tr_sum > 0.0:
        return None
    minus_di = 100.0 * (minus_dm / tr_sum)
    plus_di = 100.0 * (plus_dm / tr_sum)
    total = minus_di + plus_di
    if is_zero(total):
        return None
    return 100.0 * (abs(minus_di - plus_di) / total)


def fast_k(highest: float, lowest: float, close: float) -> float:
    """Return TA-Lib's raw %K for one bar given the window's extremes."""
    if is_flat_range(highest, lowest):
        return 0.0
    return ((close - lowest) / (highest - lowest)) * 100.0
