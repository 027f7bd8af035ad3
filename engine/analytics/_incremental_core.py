"""Running SMA and EMA cores shared by the incremental indicators.

Each core repeats the batch routine's operations in the same order (`sma_into`, the EMA in
`_indicators`), so a stream fed bar by bar is bit-identical to the batch result.
"""

from __future__ import annotations

from collections import deque

from ._indicator_base import fma


class RunningSma:
    """TA_INT_SMA one value at a time: a running sum, never re-summed, like TA-Lib's.

    Re-summing the window (or compensating the sum) would be more accurate, but the values
    would then drift away from TA-Lib's, whose running sum is the FINANCE reference; exact
    replay of its operations keeps batch, stream and TA-Lib bit-identical instead.
    """

    __slots__ = ("_period", "_total", "_window")

    def __init__(self, period: int) -> None:
        self._period = period
        self._total = 0.0
        # The last period-1 values: window[0] leaves the sum when the next value arrives.
        self._window: deque[float] = deque(maxlen=max(period - 1, 0))

    def peek(self, x: float) -> float | None:
        """Return the SMA as if `x` were pushed, without pushing it."""
        if self._period == 1:
            return x
        if len(self._window) < self._period - 1:
            return None
        return (self._total + x) / self._period

    def push(self, x: float) -> float | None:
        """Append `x` and return the SMA ending at it (None during warm-up)."""
        if self._period == 1:
            return x
        window = self._window
        if len(window) < self._period - 1:
            self._total += x
            window.append(x)
            return None
        total = self._total + x
        self._total = total - window[0]
        window.append(x)
        return total / self._period


class RunningEma:
    """TA_INT_EMA one value at a time: seeded by the mean of the first `period` values."""

    __slots__ = ("_count", "_k", "_period", "_prev")

    def __init__(self, period: int) -> None:
        self._period = period
        self._k = 2.0 / (period + 1)
        self._count = 0
        # Holds the running seed sum until the seed bar, then the previous EMA.
        self._prev = 0.0

    def peek(self, x: float) -> float | None:
        """Return the EMA as if `x` were pushed, without pushing it."""
        if self._period == 1:
            return x
        if self._count < self._period - 1:
            return None
        if self._count == self._period - 1:
            return (self._prev + x) / self._period
        return fma(x - self._prev, self._k, self._prev)

    def push(self, x: float) -> float | None:
        """Append `x` and return the EMA ending at it (None during warm-up)."""
        value = self.peek(x)
        if value is None:
            self._prev += x
        else:
            self._prev = value
        if self._count < self._period:
            self._count += 1
        return value
