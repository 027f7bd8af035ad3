"""Batch indicators over high/low/close/volume: ATR, ADX, OBV, STOCH and session VWAP.

Same contract as `_indicators`: TA-Lib 0.8's operations in TA-Lib's order (bit-identical),
one output per bar, None before the first valid index.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Final

from ._indicator_base import (
    directional_index,
    fast_k,
    floats,
    fma,
    ist_day,
    nan_to_none,
    sma_into,
    true_range,
)
from ._indicator_params import resolve_indicator_params

_NAN: Final = math.nan

Series = list[float | None]


def atr(
    high: Iterable[float], low: Iterable[float], close: Iterable[float], period: int = 14
) -> Series:
    """Return Wilder's average true range; the first value is at index `period`.

    Bar 0 has no true range. ATR_period is the mean of TR_1..TR_period, then Wilder's
    smoothing, which TA-Lib writes as wα·TR + wβ·ATR with wβ = (n-1)/n, wα = 1 - wβ.

    Raises:
        IndicatorError: `invalid_param` if `period` is not an integer in [1, MAX_PERIOD].
    """
    n = int(resolve_indicator_params("atr", {"period": period})["period"])
    h, lo, c = floats(high), floats(low), floats(close)
    out = [_NAN] * len(c)
    if len(c) <= n:
        return nan_to_none(out)
    total = 0.0
    for i in range(1, n + 1):
        total += true_range(h[i], lo[i], c[i - 1])
    prev = total / n
    out[n] = prev
    beta = (n - 1) / n
    alpha = 1.0 - beta
    for i in range(n + 1, len(c)):
        prev = fma(beta, prev, alpha * true_range(h[i], lo[i], c[i - 1]))
        out[i] = prev
    return nan_to_none(out)


def adx(
    high: Iterable[float], low: Iterable[float], close: Iterable[float], period: int = 14
) -> Series:
    """Return Wilder's ADX; the first value is at index 2·period-1.

    ±DM and TR are summed over bars 1..period-1, then smoothed as s - s/n + x. DX needs a
    positive TR sum and a non-zero DI sum; a bar without DX leaves ADX unchanged.

    Raises:
        IndicatorError: `invalid_param` if `period` is not an integer in [2, MAX_PERIOD].
    """
    n = int(resolve_indicator_params("adx", {"period": period})["period"])
    h, lo, c = floats(high), floats(low), floats(close)
    out = [_NAN] * len(c)
    if len(c) < 2 * n:
        return nan_to_none(out)
    plus_dm = minus_dm = tr_sum = 0.0
    for t in range(1, n):
        up = h[t] - h[t - 1]
        down = lo[t - 1] - lo[t]
        if down > 0 and up < down:
            minus_dm += down
        elif up > 0 and up > down:
            plus_dm += up
        tr_sum += true_range(h[t], lo[t], c[t - 1])
    sum_dx = 0.0
    value = _NAN
    for t in range(n, len(c)):
        up = h[t] - h[t - 1]
        down = lo[t - 1] - lo[t]
        minus_dm -= minus_dm / n
        plus_dm -= plus_dm / n
        if down > 0 and up < down:
            minus_dm += down
        elif up > 0 and up > down:
            plus_dm += up
        tr_sum = tr_sum - tr_sum / n + true_range(h[t], lo[t], c[t - 1])
        dx = directional_index(plus_dm, minus_dm, tr_sum)
        if t < 2 * n - 1:
            sum_dx += dx if dx is not None else 0.0
            continue
        if t == 2 * n - 1:
            value = (sum_dx + (dx if dx is not None else 0.0)) / n
        elif dx is not None:
            value = (value * (n - 1) + dx) / n
        out[t] = value
    return nan_to_none(out)


def obv(close: Iterable[float], volume: Iterable[float]) -> Series:
    """Return on-balance volume: OBV_0 = volume_0, then ± volume as the close rises or falls."""
    c, v = floats(close), floats(volume)
    out: list[float] = []
    if not c:
        return []
    running = v[0]
    prev = c[0]
    for close_t, volume_t in zip(c, v, strict=True):
        if close_t > prev:
            running += volume_t
        elif close_t < prev:
            running -= volume_t
        out.append(running)
        prev = close_t
    return nan_to_none(out)


def stoch(
    high: Iterable[float],
    low: Iterable[float],
    close: Iterable[float],
    fastk_period: int = 14,
    slowk_period: int = 3,
    slowd_period: int = 3,
) -> dict[str, Series]:
    """Return the slow stochastic `{"k", "d"}`, both null before fastk+slowk+slowd-3.

    fastK = 100·(C - LL)/(HH - LL) over `fastk_period` bars, 0 when the range is zero
    relative to its extremes (TA-Lib's guard; HH = LL is the exact case); k = SMA(fastK),
    d = SMA(k).

    Raises:
        IndicatorError: `invalid_param` if a period is not an integer in [1, MAX_PERIOD].
    """
    p = resolve_indicator_params(
        "stoch",
        {"fastk_period": fastk_period, "slowk_period": slowk_period, "slowd_period": slowd_period},
    )
    fk, sk, sd = int(p["fastk_period"]), int(p["slowk_period"]), int(p["slowd_period"])
    h, lo, c = floats(high), floats(low), floats(close)
    size = len(c)
    k_out, d_out = [_NAN] * size, [_NAN] * size
    first = fk + sk + sd - 3
    if size <= first:
        return {"k": nan_to_none(k_out), "d": nan_to_none(d_out)}
    fast = [
        fast_k(hh, ll, c[i])
        for i, (hh, ll) in enumerate(_rolling_extremes(h, lo, fk))
        if i >= fk - 1
    ]
    slow = [_NAN] * len(fast)
    sma_into(slow, fast, sk)
    smooth = [_NAN] * len(fast)
    sma_into(smooth, slow[sk - 1 :], sd, offset=sk - 1)
    for i in range(first, size):
        k_out[i] = slow[i - fk + 1]
        d_out[i] = smooth[i - fk + 1]
    return {"k": nan_to_none(k_out), "d": nan_to_none(d_out)}


def _rolling_extremes(
    high: Sequence[float], low: Sequence[float], period: int
) -> Iterable[tuple[float, float]]:
    # (max high, min low) over the last `period` bars ending at each bar (fewer at the start),
    # from monotonic deques of indices: amortised O(1) per bar.
    highs: deque[int] = deque()
    lows: deque[int] = deque()
    for i, (h, lo) in enumerate(zip(high, low, strict=True)):
        while highs and high[highs[-1]] <= h:
            highs.pop()
        highs.append(i)
        while lows and low[lows[-1]] >= lo:
            lows.pop()
        lows.append(i)
        if highs[0] <= i - period:
            highs.popleft()
        if lows[0] <= i - period:
            lows.popleft()
        yield high[highs[0]], low[lows[0]]


def vwap(
    ts: Sequence[float],
    high: Iterable[float],
    low: Iterable[float],
    close: Iterable[float],
    volume: Iterable[float],
) -> Series:
    """Return the session VWAP of the typical price (H+L+C)/3, reset at each IST date.

    A bar whose IST date differs from the previous bar's starts a new session. The value is
    None while the session's cumulative volume is 0.
    """
    h, lo, c, v = floats(high), floats(low), floats(close), floats(volume)
    out: list[float] = []
    session: int | None = None
    weighted = volume_sum = 0.0
    for stamp, high_t, low_t, close_t, volume_t in zip(ts, h, lo, c, v, strict=True):
        day = ist_day(stamp)
        if day != session:
            session = day
            weighted = volume_sum = 0.0
        weighted += ((high_t + low_t + close_t) / 3.0) * volume_t
        volume_sum += volume_t
        out.append(_NAN if volume_sum == 0.0 else weighted / volume_sum)
    return nan_to_none(out)
