"""Streaming indicators: bit-identical to the batch functions, closed bars and forming bars."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.analytics import (
    Bar,
    BbandsStream,
    Candles,
    IndicatorError,
    IndicatorStreamValue,
    VwapStream,
    compute_indicator,
    create_indicator_stream,
)

IST_MIDNIGHT_UTC_MS = 1_764_354_600_000  # 2026-11-29 00:00 IST
MINUTE_MS = 60_000

CONFIGS: list[tuple[str, dict[str, object]]] = [
    ("sma", {"period": 1}),
    ("sma", {"period": 5}),
    ("ema", {"period": 1}),
    ("ema", {"period": 4}),
    ("wma", {"period": 1}),
    ("wma", {"period": 3}),
    ("rsi", {"period": 2}),
    ("rsi", {"period": 5}),
    ("macd", {"fast": 3, "slow": 6, "signal": 4}),
    ("macd", {"fast": 4, "slow": 2, "signal": 1}),
    ("bbands", {"period": 4, "nbdev_up": 2.0, "nbdev_dn": 2.0}),
    ("bbands", {"period": 3, "nbdev_up": 1.5, "nbdev_dn": 0.5}),
    ("atr", {"period": 1}),
    ("atr", {"period": 4}),
    ("adx", {"period": 2}),
    ("adx", {"period": 4}),
    ("obv", {}),
    ("stoch", {"fastk_period": 4, "slowk_period": 2, "slowd_period": 3}),
    ("stoch", {"fastk_period": 1, "slowk_period": 1, "slowd_period": 1}),
    ("vwap", {}),
]
DEFAULTS: list[tuple[str, dict[str, object]]] = [
    (name, {}) for name in ("sma", "ema", "wma", "rsi", "macd", "bbands", "atr", "adx", "stoch")
]


def _value_at(batch: object, i: int) -> IndicatorStreamValue:
    if isinstance(batch, dict):
        return {name: values[i] for name, values in batch.items()}
    assert isinstance(batch, list)
    value: float | None = batch[i]
    return value


def _batch(indicator: str, params: dict[str, object], bars: list[Bar]) -> object:
    return compute_indicator(indicator, params, Candles.from_bars(bars))


@st.composite
def bar_series(draw: st.DrawFn, max_size: int = 60) -> list[Bar]:
    """Bars from a random walk with flat runs, gaps, zero volumes and IST date changes."""
    scale = draw(st.sampled_from([1e-9, 1.0, 250.0, 1e12]))
    steps = draw(
        st.lists(
            st.one_of(st.just(0.0), st.floats(-0.05, 0.05, allow_nan=False)),
            max_size=max_size,
        )
    )
    bars, price, ts = [], scale, IST_MIDNIGHT_UTC_MS - 3 * MINUTE_MS
    for step in steps:
        price *= 1 + step
        spread = draw(st.sampled_from([0.0, 0.001, 0.02])) * price
        ts += draw(st.sampled_from([MINUTE_MS, MINUTE_MS, 18 * 3_600_000]))
        volume = float(draw(st.sampled_from([0, 1, 75, 1_000])))
        bars.append(Bar(ts, price, price + spread, price - spread / 2, price, volume))
    return bars


def _forming(bar: Bar, nudge: float) -> Bar:
    # The same bar before it closed: a different close inside a narrower range.
    close = bar.close * (1 + nudge)
    return Bar(bar.ts, bar.open, max(bar.high, close), min(bar.low, close), close, bar.volume / 2)


@pytest.mark.parametrize(("indicator", "params"), CONFIGS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bars=bar_series())
def test_update_equals_batch_value_at_each_closed_bar(
    indicator: str, params: dict[str, object], bars: list[Bar]
) -> None:
    """Feeding closed bars one by one returns exactly the batch value at each index."""
    stream = create_indicator_stream(indicator, params)
    batch = _batch(indicator, params, bars)
    for i, bar in enumerate(bars):
        assert stream.update(bar) == _value_at(batch, i)


@pytest.mark.parametrize(("indicator", "params"), CONFIGS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bars=bar_series(max_size=40), nudge=st.floats(-0.03, 0.03, allow_nan=False))
def test_peek_equals_batch_with_the_forming_bar_appended(
    indicator: str, params: dict[str, object], bars: list[Bar], nudge: float
) -> None:
    """peek(forming) is the batch's last value for closed bars + forming; it changes nothing."""
    stream = create_indicator_stream(indicator, params)
    for i, bar in enumerate(bars):
        forming = _forming(bar, nudge)
        expected = _value_at(_batch(indicator, params, [*bars[:i], forming]), i)
        assert stream.peek(forming) == expected
        assert stream.peek(forming) == expected
        assert stream.update(bar) == _value_at(_batch(indicator, params, bars[: i + 1]), i)


def _long_bars(n: int, seed: int) -> list[Bar]:
    rng = np.random.default_rng(seed)
    close = 1_000 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    close[rng.integers(0, n, 5)] *= 1e4  # bad prints: the values running sums find hardest
    close[n // 2 : n // 2 + 300] = close[n // 2]  # a flat stretch (reseeds, zero ranges)
    spread = close * 0.001 * rng.random(n)
    ts = IST_MIDNIGHT_UTC_MS + np.arange(n) * MINUTE_MS
    volume = rng.integers(0, 5_000, n)
    return [
        Bar(int(t), float(c), float(c + s), float(c - s), float(c), float(v))
        for t, c, s, v in zip(ts, close, spread, volume, strict=True)
    ]


@pytest.mark.parametrize(("indicator", "params"), [*CONFIGS, *DEFAULTS])
def test_stream_stays_bit_identical_to_batch_over_12000_bars(
    indicator: str, params: dict[str, object]
) -> None:
    """No drift between stream and batch over 12,000 bars with spikes and a flat stretch."""
    bars = _long_bars(12_000, seed=len(indicator) + len(params))
    stream = create_indicator_stream(indicator, params)
    batch = _batch(indicator, params, bars)
    streamed = [stream.update(bar) for bar in bars]
    assert streamed == [_value_at(batch, i) for i in range(len(bars))]


def test_long_bbands_stream_tracks_an_exact_population_stdev() -> None:
    """After 12,000 bars the streamed band width is still 2σ of the last 20 closes."""
    bars = _long_bars(12_000, seed=3)
    stream = BbandsStream()
    for bar in bars:
        bands = stream.update(bar)
    closes = [bar.close for bar in bars[-20:]]
    mean = math.fsum(closes) / 20
    sigma = math.sqrt(math.fsum((c - mean) ** 2 for c in closes) / 20)
    assert bands["upper"] is not None
    assert bands["middle"] is not None
    assert bands["upper"] - bands["middle"] == pytest.approx(2 * sigma, rel=1e-9)


def test_vwap_stream_resets_at_ist_midnight_but_peek_does_not() -> None:
    """Peeking at a next-session bar leaves the current session's sums untouched."""
    stream = VwapStream()
    before = IST_MIDNIGHT_UTC_MS - MINUTE_MS
    assert stream.update(Bar(before, 10.0, 10.0, 10.0, 10.0, 2.0)) == 10.0
    assert stream.peek(Bar(IST_MIDNIGHT_UTC_MS, 40.0, 40.0, 40.0, 40.0, 0.0)) is None
    assert stream.update(Bar(before + 30_000, 13.0, 13.0, 13.0, 13.0, 1.0)) == 11.0
    assert stream.update(Bar(IST_MIDNIGHT_UTC_MS, 40.0, 40.0, 40.0, 40.0, 3.0)) == 40.0


def test_factory_rejects_what_compute_rejects() -> None:
    """create_indicator_stream validates names and parameters like compute_indicator."""
    with pytest.raises(IndicatorError) as unknown:
        create_indicator_stream("vwma", {})
    with pytest.raises(IndicatorError) as bad:
        create_indicator_stream("stoch", {"fastk_period": 0})
    assert (unknown.value.code, bad.value.code) == ("unknown_indicator", "invalid_param")


def test_bar_with_non_finite_price_is_rejected() -> None:
    """A NaN bar would poison every running sum, so Bar refuses it."""
    with pytest.raises(IndicatorError) as caught:
        Bar(0, 1.0, math.inf, 1.0, 1.0, 1.0)
    assert (caught.value.code, caught.value.details) == ("invalid_candles", {"field": "high"})
