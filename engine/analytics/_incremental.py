"""Incremental (streaming) indicators: one object per live series, O(1) amortised per bar.

`update(bar)` commits a closed bar and returns the indicator value ending at it; `peek(bar)`
returns the value as if a *forming* bar (a live candle that will still change) were appended,
without changing any state. Feed each closed bar to `update` once, in order; `peek` may be
called any number of times in between. Each stream repeats its batch routine's floating-point
operations in the same order, so after the same closed bars `update` returns exactly what the
batch function returns at that index, and `peek(bar)` exactly what the batch returns for the
series with `bar` appended. Windows are bounded deques of at most `period` values.

This module holds the close-only indicators and the `create_indicator_stream` factory; the
ones that read high/low/volume live in `_incremental_hlc`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from itertools import islice
from types import MappingProxyType
from typing import Final, Protocol

from ._incremental_core import RunningEma, RunningSma
from ._incremental_hlc import AdxStream, AtrStream, ObvStream, StochStream, VwapStream
from ._indicator_base import Bar, band_edges, finite_or_none, reseed_deviation
from ._indicator_params import resolve_indicator_params

IndicatorStreamValue = float | None | dict[str, float | None]


class IndicatorStream(Protocol):
    """What every incremental indicator offers."""

    def update(self, bar: Bar) -> IndicatorStreamValue:
        """Commit the closed `bar` and return the value ending at it."""
        ...

    def peek(self, bar: Bar) -> IndicatorStreamValue:
        """Return the value as if the forming `bar` were appended; change nothing."""
        ...


def _finite(value: float | None) -> float | None:
    return None if value is None else finite_or_none(value)


class SmaStream:
    """Simple moving average of closes (FINANCE §6); first value on bar period-1."""

    __slots__ = ("_core",)

    def __init__(self, period: int = 30) -> None:
        self._core = RunningSma(int(resolve_indicator_params("sma", {"period": period})["period"]))

    def peek(self, bar: Bar) -> float | None:
        """Return the SMA as if `bar` closed now, without committing it."""
        return _finite(self._core.peek(bar.close))

    def update(self, bar: Bar) -> float | None:
        """Commit the closed `bar` and return the SMA ending at it."""
        return _finite(self._core.push(bar.close))


class EmaStream:
    """EMA of closes, k = 2/(period+1), seeded by the SMA of the first `period` closes."""

    __slots__ = ("_core",)

    def __init__(self, period: int = 30) -> None:
        self._core = RunningEma(int(resolve_indicator_params("ema", {"period": period})["period"]))

    def peek(self, bar: Bar) -> float | None:
        """Return the EMA as if `bar` closed now, without committing it."""
        return _finite(self._core.peek(bar.close))

    def update(self, bar: Bar) -> float | None:
        """Commit the closed `bar` and return the EMA ending at it."""
        return _finite(self._core.push(bar.close))


class WmaStream:
    """Weighted moving average with TA-Lib's running-sum trick and 8·period re-anchoring."""

    __slots__ = ("_divider", "_period", "_plain", "_trailing", "_until", "_weighted", "_window")

    def __init__(self, period: int = 30) -> None:
        n = int(resolve_indicator_params("wma", {"period": period})["period"])
        self._period = n
        self._divider = n * (n + 1) / 2.0
        self._window: deque[float] = deque(maxlen=n)
        self._plain = self._weighted = self._trailing = 0.0
        self._until = 8 * n

    def _advance(self, x: float) -> tuple[float, float, float]:
        # (value, plain sum, weighted sum) for the bar closing at x; see `wma` in _indicators.
        n = self._period
        plain = self._plain + x
        plain -= self._trailing
        weighted = self._weighted + x * n
        if self._until - 1 <= 0:
            # Re-anchor over the window ending at x: O(period), once every 8·period bars.
            plain = weighted = 0.0
            recent = islice(self._window, len(self._window) - (n - 1), None)
            for w, v in enumerate((*recent, x), start=1):
                plain += v
                weighted += v * w
        return weighted / self._divider, plain, weighted

    def peek(self, bar: Bar) -> float | None:
        """Return the WMA as if `bar` closed now, without committing it."""
        if self._period == 1:
            return finite_or_none(bar.close)
        if len(self._window) < self._period - 1:
            return None
        return finite_or_none(self._advance(bar.close)[0])

    def update(self, bar: Bar) -> float | None:
        """Commit the closed `bar` and return the WMA ending at it."""
        x, n = bar.close, self._period
        if n == 1:
            return finite_or_none(x)
        window = self._window
        if len(window) < n - 1:
            self._plain += x
            self._weighted += x * (len(window) + 1)
            window.append(x)
            return None
        value, plain, weighted = self._advance(x)
        self._until = 8 * n if self._until - 1 <= 0 else self._until - 1
        window.append(x)
        self._trailing = window[0]
        self._plain = plain
        self._weighted = weighted - plain
        return finite_or_none(value)


class RsiStream:
    """Wilder's RSI of closes; first value on bar `period`, 0 when nothing moved."""

    __slots__ = ("_count", "_gain", "_inv", "_loss", "_period", "_prev")

    def __init__(self, period: int = 14) -> None:
        self._period = int(resolve_indicator_params("rsi", {"period": period})["period"])
        self._inv = 1.0 / self._period
        self._count = 0
        self._prev = self._gain = self._loss = 0.0

    def _advance(self, x: float) -> tuple[float | None, float, float]:
        # (value, gain, loss) after the close x; same operations as `rsi` in _indicators.
        n, gain, loss = self._period, self._gain, self._loss
        if self._count == 0:
            return None, gain, loss
        change = x - self._prev
        if self._count > n:
            loss *= n - 1
            gain *= n - 1
        if change > 0.0:
            gain += change
        elif change < 0.0:
            loss -= change
        if self._count < n:
            return None, gain, loss
        loss *= self._inv
        gain *= self._inv
        total = gain + loss
        return (100.0 * (gain / total) if total > 0.0 else 0.0), gain, loss

    def peek(self, bar: Bar) -> float | None:
        """Return the RSI as if `bar` closed now, without committing it."""
        return _finite(self._advance(bar.close)[0])

    def update(self, bar: Bar) -> float | None:
        """Commit the closed `bar` and return the RSI ending at it."""
        value, self._gain, self._loss = self._advance(bar.close)
        self._prev = bar.close
        self._count = min(self._count + 1, self._period + 1)
        return _finite(value)


_MACD_NULL: Final[Mapping[str, None]] = MappingProxyType(
    {"macd": None, "signal": None, "hist": None}
)


class MacdStream:
    """TA-Lib MACD: both EMAs seeded on bar slow-1, signal EMA of the MACD line."""

    __slots__ = ("_count", "_fast", "_fast_from", "_signal", "_slow")

    def __init__(self, fast: int = 12, slow: int = 26, signal: int = 9) -> None:
        p = resolve_indicator_params("macd", {"fast": fast, "slow": slow, "signal": signal})
        fast_n, slow_n = sorted((int(p["fast"]), int(p["slow"])))
        self._fast, self._slow = RunningEma(fast_n), RunningEma(slow_n)
        self._signal = RunningEma(int(p["signal"]))
        # The fast EMA's seed is the `fast` closes ending on bar slow-1.
        self._fast_from = slow_n - fast_n
        self._count = 0

    def _emit(self, line: float, sig: float | None) -> dict[str, float | None]:
        if sig is None:
            return dict(_MACD_NULL)
        return {"macd": _finite(line), "signal": _finite(sig), "hist": _finite(line - sig)}

    def peek(self, bar: Bar) -> dict[str, float | None]:
        """Return macd/signal/hist as if `bar` closed now, without committing it."""
        slow = self._slow.peek(bar.close)
        fast = self._fast.peek(bar.close) if self._count >= self._fast_from else None
        if slow is None or fast is None:
            return dict(_MACD_NULL)
        line = fast - slow
        return self._emit(line, self._signal.peek(line))

    def update(self, bar: Bar) -> dict[str, float | None]:
        """Commit the closed `bar` and return macd/signal/hist ending at it."""
        slow = self._slow.push(bar.close)
        fast = self._fast.push(bar.close) if self._count >= self._fast_from else None
        self._count = min(self._count + 1, self._fast_from)
        if slow is None or fast is None:
            return dict(_MACD_NULL)
        line = fast - slow
        return self._emit(line, self._signal.push(line))


_BANDS_NULL: Final[Mapping[str, None]] = MappingProxyType(
    {"upper": None, "middle": None, "lower": None}
)


class BbandsStream:
    """Bollinger Bands: SMA middle ± nbdev·population σ, with TA-Lib's reseeded variance.

    A reseed re-sums the window, O(period): every 32·period bars, or on a bar whose deviation
    sums cancel badly (rare outside contrived data), as in TA-Lib.
    """

    __slots__ = (
        "_dev_sq",
        "_dev_sum",
        "_dn",
        "_inv",
        "_period",
        "_shift",
        "_total",
        "_until",
        "_up",
        "_window",
    )

    def __init__(self, period: int = 20, nbdev_up: float = 2.0, nbdev_dn: float = 2.0) -> None:
        p = resolve_indicator_params(
            "bbands", {"period": period, "nbdev_up": nbdev_up, "nbdev_dn": nbdev_dn}
        )
        self._period = int(p["period"])
        self._up, self._dn = float(p["nbdev_up"]), float(p["nbdev_dn"])
        self._inv = 1.0 / self._period
        self._window: deque[float] = deque(maxlen=self._period)
        self._total = self._shift = self._dev_sum = self._dev_sq = 0.0
        self._until = 32 * self._period

    def _advance(self, x: float) -> tuple[dict[str, float | None], float, float, float, float, int]:
        # Bands for the bar closing at x and the state after it; see `bbands` in _indicators.
        n, inv, window = self._period, self._inv, self._window
        total = self._total + x
        d = x - self._shift
        dev_sum = self._dev_sum + d
        dev_sq = self._dev_sq + d * d
        mean_dev = dev_sum * inv
        variance = dev_sq * inv - mean_dev * mean_dev
        mid = total / n
        oldest = window[len(window) - (n - 1)]
        total -= oldest
        d = oldest - self._shift
        dev_sum -= d
        gone = d * d
        dev_sq -= gone
        until, shift = self._until - 1, self._shift
        if variance < 1e-6 * (dev_sq * inv) or gone > 1e6 * dev_sq or until <= 0:
            until = 32 * n
            recent = islice(window, len(window) - (n - 1), None)
            shift, dev_sum, dev_sq, variance = reseed_deviation((*recent, x), inv)
        sigma = math.sqrt(variance) if variance != 0.0 else 0.0
        upper, lower = band_edges(mid, sigma, self._up, self._dn)
        bands = {
            "upper": finite_or_none(upper),
            "middle": finite_or_none(mid),
            "lower": finite_or_none(lower),
        }
        return bands, total, shift, dev_sum, dev_sq, until

    def peek(self, bar: Bar) -> dict[str, float | None]:
        """Return upper/middle/lower as if `bar` closed now, without committing it."""
        if len(self._window) < self._period - 1:
            return dict(_BANDS_NULL)
        return self._advance(bar.close)[0]

    def update(self, bar: Bar) -> dict[str, float | None]:
        """Commit the closed `bar` and return upper/middle/lower ending at it."""
        x = bar.close
        if len(self._window) < self._period - 1:
            if not self._window:
                self._shift = x
            self._total += x
            d = x - self._shift
            self._dev_sum += d
            self._dev_sq += d * d
            self._window.append(x)
            return dict(_BANDS_NULL)
        bands, self._total, self._shift, self._dev_sum, self._dev_sq, self._until = self._advance(x)
        self._window.append(x)
        return bands


def create_indicator_stream(
    indicator: str, params: Mapping[str, object] | None = None
) -> IndicatorStream:
    """Create the streaming form of `indicator`; names and params as for `compute_indicator`.

    Raises:
        IndicatorError: `unknown_indicator` or `invalid_param`, as for `compute_indicator`.
    """
    p = resolve_indicator_params(indicator, params)
    match indicator:
        case "sma":
            return SmaStream(int(p["period"]))
        case "ema":
            return EmaStream(int(p["period"]))
        case "wma":
            return WmaStream(int(p["period"]))
        case "rsi":
            return RsiStream(int(p["period"]))
        case "macd":
            return MacdStream(int(p["fast"]), int(p["slow"]), int(p["signal"]))
        case "bbands":
            return BbandsStream(int(p["period"]), float(p["nbdev_up"]), float(p["nbdev_dn"]))
        case "atr":
            return AtrStream(int(p["period"]))
        case "adx":
            return AdxStream(int(p["period"]))
        case "stoch":
            k, s, d = int(p["fastk_period"]), int(p["slowk_period"]), int(p["slowd_period"])
            return StochStream(k, s, d)
        case "obv":
            return ObvStream()
        case "vwap":
            return VwapStream()
        case _:  # pragma: no cover - resolve_indicator_params already refused the name
            raise AssertionError(indicator)
