"""Incremental ATR, ADX, OBV, STOCH and session VWAP (see `_incremental` for the contract)."""

from __future__ import annotations

from collections import deque
from types import MappingProxyType
from typing import Final, NamedTuple

from ._incremental_core import RunningSma
from ._indicator_base import (
    Bar,
    directional_index,
    fast_k,
    finite_or_none,
    fma,
    ist_day,
    true_range,
)
from ._indicator_params import resolve_indicator_params


class AtrStream:
    """Wilder's ATR; first value on bar `period` (bar 0 has no true range)."""

    __slots__ = ("_alpha", "_beta", "_count", "_period", "_prev", "_prev_close")

    def __init__(self, period: int = 14) -> None:
        self._period = int(resolve_indicator_params("atr", {"period": period})["period"])
        self._beta = (self._period - 1) / self._period
        self._alpha = 1.0 - self._beta
        self._count = 0
        # Holds the running TR sum until bar `period`, then the previous ATR.
        self._prev = 0.0
        self._prev_close = 0.0

    def _advance(self, bar: Bar) -> tuple[float | None, float]:
        # (value, next _prev) for `bar`; same operations as `atr` in _indicators_hlc.
        if self._count == 0:
            return None, self._prev
        tr = true_range(bar.high, bar.low, self._prev_close)
        if self._count < self._period:
            return None, self._prev + tr
        if self._count == self._period:
            value = (self._prev + tr) / self._period
        else:
            value = fma(self._beta, self._prev, self._alpha * tr)
        return value, value

    def peek(self, bar: Bar) -> float | None:
        """Return the ATR as if `bar` closed now, without committing it."""
        value = self._advance(bar)[0]
        return None if value is None else finite_or_none(value)

    def update(self, bar: Bar) -> float | None:
        """Commit the closed `bar` and return the ATR ending at it."""
        value, self._prev = self._advance(bar)
        self._prev_close = bar.close
        self._count = min(self._count + 1, self._period + 1)
        return None if value is None else finite_or_none(value)


class _AdxState(NamedTuple):
    plus_dm: float
    minus_dm: float
    tr_sum: float
    sum_dx: float
    adx: float


class AdxStream:
    """Wilder's ADX; first value on bar 2·period-1."""

    __slots__ = ("_count", "_period", "_prev", "_state")

    def __init__(self, period: int = 14) -> None:
        self._period = int(resolve_indicator_params("adx", {"period": period})["period"])
        self._count = 0
        self._prev: Bar | None = None
        self._state = _AdxState(0.0, 0.0, 0.0, 0.0, 0.0)

    def _advance(self, bar: Bar) -> tuple[float | None, _AdxState]:
        # Same operations as `adx` in _indicators_hlc, one bar at a time.
        n, t, prev, s = self._period, self._count, self._prev, self._state
        if prev is None:
            return None, s
        up = bar.high - prev.high
        down = prev.low - bar.low
        plus_dm, minus_dm, tr_sum = s.plus_dm, s.minus_dm, s.tr_sum
        tr = true_range(bar.high, bar.low, prev.close)
        if t < n:
            if down > 0 and up < down:
                minus_dm += down
            elif up > 0 and up > down:
                plus_dm += up
            return None, s._replace(plus_dm=plus_dm, minus_dm=minus_dm, tr_sum=tr_sum + tr)
        minus_dm -= minus_dm / n
        plus_dm -= plus_dm / n
        if down > 0 and up < down:
            minus_dm += down
        elif up > 0 and up > down:
            plus_dm += up
        tr_sum = tr_sum - tr_sum / n + tr
        dx = directional_index(plus_dm, minus_dm, tr_sum)
        sum_dx, adx = s.sum_dx, s.adx
        value: float | None = None
        if t < 2 * n - 1:
            sum_dx += dx if dx is not None else 0.0
        else:
            if t == 2 * n - 1:
                adx = (sum_dx + (dx if dx is not None else 0.0)) / n
            elif dx is not None:
                adx = (adx * (n - 1) + dx) / n
            value = adx
        return value, _AdxState(plus_dm, minus_dm, tr_sum, sum_dx, adx)

    def peek(self, bar: Bar) -> float | None:
        """Return the ADX as if `bar` closed now, without committing it."""
        value = self._advance(bar)[0]
        return None if value is None else finite_or_none(value)

    def update(self, bar: Bar) -> float | None:
        """Commit the closed `bar` and return the ADX ending at it."""
        value, self._state = self._advance(bar)
        self._prev = bar
        self._count = min(self._count + 1, 2 * self._period)
        return None if value is None else finite_or_none(value)


class ObvStream:
    """On-balance volume: starts at the first bar's volume (TA-Lib's rule)."""

    __slots__ = ("_obv", "_prev_close")

    def __init__(self) -> None:
        self._prev_close: float | None = None
        self._obv = 0.0

    def _advance(self, bar: Bar) -> float:
        if self._prev_close is None:
            return bar.volume
        if bar.close > self._prev_close:
            return self._obv + bar.volume
        if bar.close < self._prev_close:
            return self._obv - bar.volume
        return self._obv

    def peek(self, bar: Bar) -> float | None:
        """Return the OBV as if `bar` closed now, without committing it."""
        return finite_or_none(self._advance(bar))

    def update(self, bar: Bar) -> float | None:
        """Commit the closed `bar` and return the OBV ending at it."""
        self._obv = self._advance(bar)
        self._prev_close = bar.close
        return finite_or_none(self._obv)


_STOCH_NULL: Final = MappingProxyType({"k": None, "d": None})


class StochStream:
    """Slow stochastic k/d; HH/LL from monotonic deques, so O(1) amortised per bar."""

    __slots__ = ("_count", "_d", "_fastk", "_highs", "_k", "_lows")

    def __init__(
        self, fastk_period: int = 14, slowk_period: int = 3, slowd_period: int = 3
    ) -> None:
        p = resolve_indicator_params(
            "stoch",
            {
                "fastk_period": fastk_period,
                "slowk_period": slowk_period,
                "slowd_period": slowd_period,
            },
        )
        self._fastk = int(p["fastk_period"])
        self._k = RunningSma(int(p["slowk_period"]))
        self._d = RunningSma(int(p["slowd_period"]))
        self._count = 0
        # (bar index, price) with prices strictly decreasing (highs) / increasing (lows):
        # the front is the window's extreme, and at most the front can expire per bar.
        self._highs: deque[tuple[int, float]] = deque()
        self._lows: deque[tuple[int, float]] = deque()

    def _extremes(self, bar: Bar) -> tuple[float, float]:
        # HH and LL of the window ending at `bar`, without touching the deques.
        oldest = self._count - self._fastk
        high, low = _front(self._highs, oldest), _front(self._lows, oldest)
        highest = bar.high if high is None or bar.high >= high else high
        lowest = bar.low if low is None or bar.low <= low else low
        return highest, lowest

    def peek(self, bar: Bar) -> dict[str, float | None]:
        """Return k/d as if `bar` closed now, without committing it."""
        if self._count < self._fastk - 1:
            return dict(_STOCH_NULL)
        k = self._k.peek(fast_k(*self._extremes(bar), bar.close))
        d = None if k is None else self._d.peek(k)
        if k is None or d is None:
            return dict(_STOCH_NULL)
        return {"k": finite_or_none(k), "d": finite_or_none(d)}

    def update(self, bar: Bar) -> dict[str, float | None]:
        """Commit the closed `bar` and return k/d ending at it."""
        raw = fast_k(*self._extremes(bar), bar.close)
        i, oldest = self._count, self._count - self._fastk
        highs, lows = self._highs, self._lows
        while highs and highs[-1][1] <= bar.high:
            highs.pop()
        highs.append((i, bar.high))
        while lows and lows[-1][1] >= bar.low:
            lows.pop()
        lows.append((i, bar.low))
        if highs[0][0] <= oldest:
            highs.popleft()
        if lows[0][0] <= oldest:
            lows.popleft()
        self._count += 1
        if i < self._fastk - 1:
            return dict(_STOCH_NULL)
        k = self._k.push(raw)
        d = None if k is None else self._d.push(k)
        if k is None or d is None:
            return dict(_STOCH_NULL)
        return {"k": finite_or_none(k), "d": finite_or_none(d)}


def _front(side: deque[tuple[int, float]], oldest: int) -> float | None:
    # The extreme of the committed bars still in the window: the front, unless it is the one
    # bar that leaves the window now (then the next entry, which is younger).
    if side and side[0][0] > oldest:
        return side[0][1]
    return side[1][1] if len(side) > 1 else None


class VwapStream:
    """Session VWAP of (H+L+C)/3, reset when the IST date changes; None at zero volume."""

    __slots__ = ("_session", "_volume", "_weighted")

    def __init__(self) -> None:
        self._session: int | None = None
        self._weighted = self._volume = 0.0

    def _advance(self, bar: Bar) -> tuple[int, float, float]:
        day = ist_day(bar.ts)
        weighted, volume = (self._weighted, self._volume) if day == self._session else (0.0, 0.0)
        weighted += ((bar.high + bar.low + bar.close) / 3.0) * bar.volume
        return day, weighted, volume + bar.volume

    def peek(self, bar: Bar) -> float | None:
        """Return the VWAP as if `bar` closed now, without committing it."""
        _, weighted, volume = self._advance(bar)
        return None if volume == 0.0 else finite_or_none(weighted / volume)

    def update(self, bar: Bar) -> float | None:
        """Commit the closed `bar` and return the session VWAP ending at it."""
        self._session, self._weighted, self._volume = self._advance(bar)
        return None if self._volume == 0.0 else finite_or_none(self._weighted / self._volume)
