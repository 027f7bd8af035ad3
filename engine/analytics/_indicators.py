"""Batch technical indicators over a whole candle series (oldest first), FINANCE.md §6.

Each function transliterates the TA-Lib 0.8.1 C routine of the same name and performs the same
floating-point operations in the same order, including the running sums TA-Lib keeps (and
their drift: SMA never re-sums its window, WMA re-anchors every 8·period bars), its fused
multiply-adds and its zero guards. The results are therefore bit-identical to TA-Lib's, far
inside FINANCE's 1e-9 tolerance. Outputs have the input's length with None before the first
valid index; see `_indicator_params` for the parameters, their defaults and the warm-up lengths.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from ._indicator_base import (
    INVALID_CANDLES,
    Bar,
    IndicatorError,
    band_edges,
    floats,
    fma,
    nan_to_none,
    reseed_deviation,
    sma_into,
)
from ._indicator_params import resolve_indicator_params
from ._indicators_hlc import adx, atr, obv, stoch, vwap

_NAN: Final = math.nan

Series = list[float | None]
IndicatorOutput = Series | dict[str, Series]


@dataclass(frozen=True, slots=True)
class Candles:
    """Columns of a candle series, oldest first; `ts` holds bar open times in epoch ms UTC."""

    ts: Sequence[float]
    open: Sequence[float]
    high: Sequence[float]
    low: Sequence[float]
    close: Sequence[float]
    volume: Sequence[float]

    def __post_init__(self) -> None:
        lengths = {
            len(c) for c in (self.ts, self.open, self.high, self.low, self.close, self.volume)
        }
        if len(lengths) > 1:
            raise IndicatorError(INVALID_CANDLES, "candle columns differ in length")

    def __len__(self) -> int:
        return len(self.ts)

    @classmethod
    def from_bars(cls, bars: Iterable[Bar]) -> Candles:
        """Build the columns from bars in order."""
        rows = list(bars)
        return cls(
            ts=[b.ts for b in rows],
            open=[b.open for b in rows],
            high=[b.high for b in rows],
            low=[b.low for b in rows],
            close=[b.close for b in rows],
            volume=[b.volume for b in rows],
        )


def _ema_into(out: list[float], x: Sequence[float], period: int, offset: int = 0) -> None:
    # TA_INT_EMA, default (classic) compatibility: seeded by the mean of the first `period`.
    if period == 1:
        for i, v in enumerate(x):
            out[offset + i] = v
        return
    if len(x) < period:
        return
    k = 2.0 / (period + 1)
    total = 0.0
    for i in range(period):
        total += x[i]
    prev = total / period
    out[offset + period - 1] = prev
    for i in range(period, len(x)):
        prev = fma(x[i] - prev, k, prev)
        out[offset + i] = prev


def sma(values: Iterable[float], period: int = 30) -> Series:
    """Return the simple moving average; the first value is at index period-1.

    Raises:
        IndicatorError: `invalid_param` if `period` is not an integer in [1, MAX_PERIOD].
    """
    n = int(resolve_indicator_params("sma", {"period": period})["period"])
    x = floats(values)
    out = [_NAN] * len(x)
    sma_into(out, x, n)
    return nan_to_none(out)


def ema(values: Iterable[float], period: int = 30) -> Series:
    """Return the EMA with k = 2/(period+1), seeded at period-1 by the SMA of the first values.

    Raises:
        IndicatorError: `invalid_param` if `period` is not an integer in [1, MAX_PERIOD].
    """
    n = int(resolve_indicator_params("ema", {"period": period})["period"])
    x = floats(values)
    out = [_NAN] * len(x)
    _ema_into(out, x, n)
    return nan_to_none(out)


def wma(values: Iterable[float], period: int = 30) -> Series:
    """Return the linearly weighted moving average (newest weight period, oldest 1).

    Raises:
        IndicatorError: `invalid_param` if `period` is not an integer in [1, MAX_PERIOD].
    """
    n = int(resolve_indicator_params("wma", {"period": period})["period"])
    x = floats(values)
    out = [_NAN] * len(x)
    if n == 1:
        return nan_to_none(x)
    if len(x) < n:
        return nan_to_none(out)
    # TA-Lib's running-sum trick: `weighted` holds sum(w_i x_i) and `plain` sum(x_i); moving
    # one bar subtracts `plain` from `weighted`. Both are rebuilt from the window every 8·n
    # bars (TA-Lib #255), oldest first with weights counting up, so the drift stays bounded.
    divider = n * (n + 1) / 2.0
    plain = weighted = 0.0
    for i in range(n - 1):
        plain += x[i]
        weighted += x[i] * (i + 1)
    until_reanchor = 8 * n
    trailing = 0.0
    for i in range(n - 1, len(x)):
        v = x[i]
        plain += v
        plain -= trailing
        weighted += v * n
        until_reanchor -= 1
        if until_reanchor <= 0:
            until_reanchor = 8 * n
            plain = weighted = 0.0
            for w, j in enumerate(range(i - n + 1, i + 1), start=1):
                plain += x[j]
                weighted += x[j] * w
        trailing = x[i - n + 1]
        out[i] = weighted / divider
        weighted -= plain
    return nan_to_none(out)


def rsi(values: Iterable[float], period: int = 14) -> Series:
    """Return Wilder's RSI; the first value is at index `period`, 0 when nothing moved.

    Raises:
        IndicatorError: `invalid_param` if `period` is not an integer in [2, MAX_PERIOD].
    """
    n = int(resolve_indicator_params("rsi", {"period": period})["period"])
    x = floats(values)
    out = [_NAN] * len(x)
    if len(x) <= n:
        return nan_to_none(out)
    inv = 1.0 / n
    prev = x[0]
    gain = loss = 0.0
    for i in range(1, n + 1):
        change = x[i] - prev
        prev = x[i]
        if change > 0.0:
            gain += change
        elif change < 0.0:
            loss -= change
    gain *= inv
    loss *= inv
    total = gain + loss
    out[n] = 100.0 * (gain / total) if total > 0.0 else 0.0
    for i in range(n + 1, len(x)):
        change = x[i] - prev
        prev = x[i]
        loss *= n - 1
        gain *= n - 1
        if change > 0.0:
            gain += change
        elif change < 0.0:
            loss -= change
        loss *= inv
        gain *= inv
        total = gain + loss
        # Exact test (TA-Lib #253): a fixed epsilon would zero any cheaply quoted instrument.
        out[i] = 100.0 * (gain / total) if total > 0.0 else 0.0
    return nan_to_none(out)


def macd(
    values: Iterable[float], fast: int = 12, slow: int = 26, signal: int = 9
) -> dict[str, Series]:
    """Return TA-Lib's MACD as `{"macd", "signal", "hist"}`, all null before slow+signal-2.

    Both EMAs are seeded at index slow-1: the slow one with the mean of x[0..slow-1], the fast
    one with the mean of the `fast` values ending there. The signal EMA is seeded with the
    mean of its first `signal` MACD values. `slow < fast` swaps them, as TA-Lib does.

    Raises:
        IndicatorError: `invalid_param` for a period out of range (see `_indicator_params`).
    """
    p = resolve_indicator_params("macd", {"fast": fast, "slow": slow, "signal": signal})
    fast_n, slow_n, signal_n = int(p["fast"]), int(p["slow"]), int(p["signal"])
    if slow_n < fast_n:
        fast_n, slow_n = slow_n, fast_n
    x = floats(values)
    size = len(x)
    line, sig, hist = [_NAN] * size, [_NAN] * size, [_NAN] * size
    first = slow_n + signal_n - 2
    if size > first:
        slow_ema = [_NAN] * size
        fast_ema = [_NAN] * size
        _ema_into(slow_ema, x, slow_n)
        _ema_into(fast_ema, x[slow_n - fast_n :], fast_n, offset=slow_n - fast_n)
        diff = [fast_ema[i] - slow_ema[i] for i in range(slow_n - 1, size)]
        _ema_into(sig, diff, signal_n, offset=slow_n - 1)
        for i in range(first, size):
            line[i] = diff[i - slow_n + 1]
            hist[i] = line[i] - sig[i]
    return {"macd": nan_to_none(line), "signal": nan_to_none(sig), "hist": nan_to_none(hist)}


def bbands(
    values: Iterable[float], period: int = 20, nbdev_up: float = 2.0, nbdev_dn: float = 2.0
) -> dict[str, Series]:
    """Return Bollinger Bands `{"upper", "middle", "lower"}`: SMA ± nbdev·population σ.

    Raises:
        IndicatorError: `invalid_param` for a period outside [2, MAX_PERIOD] or a bad factor.
    """
    p = resolve_indicator_params(
        "bbands", {"period": period, "nbdev_up": nbdev_up, "nbdev_dn": nbdev_dn}
    )
    n, up, dn = int(p["period"]), float(p["nbdev_up"]), float(p["nbdev_dn"])
    x = floats(values)
    upper, middle, lower = [_NAN] * len(x), [_NAN] * len(x), [_NAN] * len(x)
    if len(x) < n:
        return {
            "upper": nan_to_none(upper),
            "middle": nan_to_none(middle),
            "lower": nan_to_none(lower),
        }
    # TA-Lib's fused SMA path: the middle band is TA_INT_SMA's running sum; σ comes from
    # sums of deviations from a shift (first the oldest value, later the window mean), which
    # are rebuilt from the window when they cancel badly or every 32·n bars (TA-Lib #118/#243).
    inv = 1.0 / n
    shift = x[0]
    total = dev_sum = dev_sq = 0.0
    for j in range(n - 1):
        total += x[j]
        d = x[j] - shift
        dev_sum += d
        dev_sq += d * d
    until_reseed = 32 * n
    for i in range(n - 1, len(x)):
        total += x[i]
        d = x[i] - shift
        dev_sum += d
        dev_sq += d * d
        mean_dev = dev_sum * inv
        variance = dev_sq * inv - mean_dev * mean_dev
        mid = total / n
        oldest = x[i - n + 1]
        total -= oldest
        d = oldest - shift
        dev_sum -= d
        gone = d * d
        dev_sq -= gone
        until_reseed -= 1
        if variance < 1e-6 * (dev_sq * inv) or gone > 1e6 * dev_sq or until_reseed <= 0:
            until_reseed = 32 * n
            window = x[i - n + 1 : i + 1]
            shift, dev_sum, dev_sq, variance = reseed_deviation(window, inv)
        sigma = math.sqrt(variance) if variance != 0.0 else 0.0
        middle[i] = mid
        upper[i], lower[i] = band_edges(mid, sigma, up, dn)
    return {"upper": nan_to_none(upper), "middle": nan_to_none(middle), "lower": nan_to_none(lower)}


def compute_indicator(
    indicator: str, params: Mapping[str, object] | None, candles: Candles
) -> IndicatorOutput:
    """Compute `indicator` over `candles` (oldest first), per FINANCE.md §6.

    Args:
        indicator: A name from PROTOCOL.md: sma, ema, wma, rsi, atr, adx, macd, bbands, stoch,
            obv or vwap.
        params: Its parameters (PROTOCOL.md names); missing ones take the documented defaults.
        candles: The series. Only the columns the indicator reads are checked and used.

    Returns:
        One value per candle (None during warm-up or where undefined) for single-output
        indicators, else `{output_name: values}` (macd/signal/hist, upper/middle/lower, k/d).

    Raises:
        IndicatorError: `unknown_indicator`, `invalid_param`, or `invalid_candles` when a
            column the indicator reads holds NaN or infinity.
    """
    p = resolve_indicator_params(indicator, params)
    for name in _COLUMNS[indicator]:
        column = getattr(candles, name)
        if not all(map(math.isfinite, column)):
            raise IndicatorError(INVALID_CANDLES, f"candle {name} is not finite", {"field": name})
    c = candles
    match indicator:
        case "sma":
            return sma(c.close, int(p["period"]))
        case "ema":
            return ema(c.close, int(p["period"]))
        case "wma":
            return wma(c.close, int(p["period"]))
        case "rsi":
            return rsi(c.close, int(p["period"]))
        case "macd":
            return macd(c.close, int(p["fast"]), int(p["slow"]), int(p["signal"]))
        case "bbands":
            return bbands(c.close, int(p["period"]), float(p["nbdev_up"]), float(p["nbdev_dn"]))
        case "atr":
            return atr(c.high, c.low, c.close, int(p["period"]))
        case "adx":
            return adx(c.high, c.low, c.close, int(p["period"]))
        case "stoch":
            k, s, d = int(p["fastk_period"]), int(p["slowk_period"]), int(p["slowd_period"])
            return stoch(c.high, c.low, c.close, k, s, d)
        case "obv":
            return obv(c.close, c.volume)
        case "vwap":
            return vwap(c.ts, c.high, c.low, c.close, c.volume)
        case _:  # pragma: no cover - resolve_indicator_params already refused the name
            raise AssertionError(indicator)


_HLC: Final = ("high", "low", "close")
_COLUMNS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "sma": ("close",),
        "ema": ("close",),
        "wma": ("close",),
        "rsi": ("close",),
        "macd": ("close",),
        "bbands": ("close",),
        "atr": _HLC,
        "adx": _HLC,
        "stoch": _HLC,
        "obv": ("close", "volume"),
        "vwap": ("ts", *_HLC, "volume"),
    }
)
