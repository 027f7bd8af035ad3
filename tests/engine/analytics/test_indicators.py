"""Batch indicators: TA-Lib agreement, FINANCE §6 warm-ups and edge rules, request validation."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import numpy as np
import pytest

from engine import analytics
from engine.analytics import (
    Bar,
    Candles,
    IndicatorError,
    compute_indicator,
    indicator_warmup,
    resolve_indicator_params,
)

talib = pytest.importorskip("talib")

TOLERANCE = 1e-9
Columns = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _series(kind: str, n: int, seed: int) -> Columns:
    """Return (high, low, close, volume) of a named synthetic shape."""
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.standard_normal(n))
    if kind == "walk":
        close = 100 + walk
    elif kind == "flat":
        close = np.full(n, 250.0)
    elif kind == "equal_closes":  # whole-rupee ticks: many unchanged closes and flat windows
        close = np.round(100 + walk / 3)
    elif kind == "gaps":  # overnight-style jumps of ±5 %
        close = 100 + walk + np.repeat(rng.choice([-5.0, 5.0], n // 25 + 1).cumsum(), 25)[:n]
    elif kind == "tiny":
        close = 1e-9 * (1 + 0.01 * walk)
    elif kind == "huge":
        close = 1e12 * (1 + 0.001 * walk)
    else:
        raise AssertionError(kind)
    spread = np.abs(close) * 0.002 * np.abs(rng.standard_normal(n))
    if kind == "flat":
        spread = np.zeros(n)
    high, low = close + spread, close - spread[::-1]
    if kind == "equal_closes":
        high, low = np.round(high), np.round(low)
    low = np.minimum(low, close)
    high = np.maximum(high, close)
    volume = np.round(rng.uniform(0, 1000, n))
    return high, low, close, volume


def _candles(high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray) -> Candles:
    ts = [1_764_300_000_000 + 60_000 * i for i in range(len(close))]
    return Candles(ts=ts, open=close, high=high, low=low, close=close, volume=volume)


def _assert_matches(ours: Sequence[float | None], ref: np.ndarray, label: str) -> None:
    assert len(ours) == len(ref), label
    for i, (a, b) in enumerate(zip(ours, ref, strict=True)):
        if math.isnan(b):
            assert a is None, f"{label}[{i}]: {a} where TA-Lib has no value"
        else:
            assert a is not None, f"{label}[{i}]: None where TA-Lib has {b}"
            err = abs(a - b)
            assert err <= TOLERANCE or err <= TOLERANCE * abs(b), f"{label}[{i}]: {a} vs {b}"


KINDS = ["walk", "flat", "equal_closes", "gaps", "tiny", "huge"]
LENGTHS = [0, 1, 12, 40, 700]

# (indicator, params, TA-Lib call returning its outputs in our output order)
TalibCall = Callable[[Columns], tuple[np.ndarray, ...]]
CASES: list[tuple[str, dict[str, object], TalibCall]] = [
    ("sma", {"period": 20}, lambda s: (talib.SMA(s[2], 20),)),
    ("sma", {"period": 1}, lambda s: (talib.SMA(s[2], 1),)),
    ("ema", {"period": 9}, lambda s: (talib.EMA(s[2], 9),)),
    ("ema", {}, lambda s: (talib.EMA(s[2], 30),)),
    ("wma", {"period": 2}, lambda s: (talib.WMA(s[2], 2),)),
    ("wma", {"period": 30}, lambda s: (talib.WMA(s[2], 30),)),
    ("rsi", {}, lambda s: (talib.RSI(s[2], 14),)),
    ("rsi", {"period": 2}, lambda s: (talib.RSI(s[2], 2),)),
    ("macd", {}, lambda s: talib.MACD(s[2], 12, 26, 9)),
    ("macd", {"fast": 26, "slow": 12, "signal": 1}, lambda s: talib.MACD(s[2], 26, 12, 1)),
    ("bbands", {}, lambda s: talib.BBANDS(s[2], 20, 2.0, 2.0)),
    (
        "bbands",
        {"period": 5, "nbdev_up": 1.5, "nbdev_dn": 2.5},
        lambda s: talib.BBANDS(s[2], 5, 1.5, 2.5),
    ),
    ("atr", {}, lambda s: (talib.ATR(s[0], s[1], s[2], 14),)),
    ("atr", {"period": 1}, lambda s: (talib.ATR(s[0], s[1], s[2], 1),)),
    ("adx", {}, lambda s: (talib.ADX(s[0], s[1], s[2], 14),)),
    ("adx", {"period": 3}, lambda s: (talib.ADX(s[0], s[1], s[2], 3),)),
    ("obv", {}, lambda s: (talib.OBV(s[2], s[3]),)),
    ("stoch", {}, lambda s: talib.STOCH(s[0], s[1], s[2], 14, 3, 0, 3, 0)),
    (
        "stoch",
        {"fastk_period": 5, "slowk_period": 1, "slowd_period": 4},
        lambda s: talib.STOCH(s[0], s[1], s[2], 5, 1, 0, 4, 0),
    ),
]


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("indicator", "params", "reference"), CASES)
def test_indicator_matches_talib(
    indicator: str, params: dict[str, object], reference: TalibCall, kind: str, length: int
) -> None:
    """Every indicator agrees with TA-Lib within 1e-9 and is null exactly where TA-Lib is."""
    series = _series(kind, length, seed=length)
    result = compute_indicator(indicator, params, _candles(*series))
    expected = reference(series)
    if isinstance(result, dict):
        assert len(result) == len(expected)
        for (name, values), ref in zip(result.items(), expected, strict=True):
            _assert_matches(values, ref, f"{indicator}.{name}")
    else:
        _assert_matches(result, expected[0], indicator)


def test_sma_reproduces_talib_running_sum_after_a_huge_print() -> None:
    """SMA keeps TA-Lib's never re-summed running total, so it still matches after a spike."""
    close = np.r_[np.full(5, 1.0), 1e15 + 0.3, 1.0 + np.arange(60) * 1e-3]
    ours = compute_indicator("sma", {"period": 10}, _candles(close, close, close, close))
    _assert_matches(ours, talib.SMA(close, 10), "sma")
    assert ours[-1] != pytest.approx(float(np.mean(close[-10:])), abs=1e-6)


FIRST_VALID = [
    ("macd", {}, 33),
    ("stoch", {}, 17),
    ("adx", {}, 27),
    ("atr", {}, 14),
    ("rsi", {}, 14),
    ("bbands", {}, 19),
    ("sma", {"period": 20}, 19),
    ("ema", {"period": 20}, 19),
    ("wma", {"period": 20}, 19),
    ("obv", {}, 0),
    ("vwap", {}, 0),
]


@pytest.mark.parametrize(("indicator", "params", "first"), FIRST_VALID)
def test_first_value_appears_at_finance_warmup_index(
    indicator: str, params: dict[str, object], first: int
) -> None:
    """The first non-null output sits at FINANCE §6's index, which indicator_warmup reports."""
    out = compute_indicator(indicator, params, _candles(*_series("walk", 60, seed=1)))
    for values in out.values() if isinstance(out, dict) else [out]:
        assert values[:first] == [None] * first
        assert all(v is not None for v in values[first:])
    assert indicator_warmup(indicator, params) == first


def test_rsi_is_zero_when_average_gain_and_loss_are_both_zero() -> None:
    """A flat series has no gain and no loss: RSI is 0, not NaN or 50."""
    close = np.full(30, 101.5)
    out = compute_indicator("rsi", {}, _candles(close, close, close, close))
    assert out[:14] == [None] * 14
    assert out[14:] == [0.0] * 16


def test_rsi_uses_simple_means_then_wilder_smoothing() -> None:
    """RSI at index 14 uses the mean of 14 changes; later bars use (avg·13 + x)/14."""
    close = [float(v) for v in [10, 11, 10, 12, 13, 12, 14, 15, 14, 16, 17, 15, 16, 18, 17, 19]]
    changes = [b - a for a, b in zip(close, close[1:], strict=False)]
    gain = sum(max(c, 0.0) for c in changes[:14]) / 14
    loss = sum(max(-c, 0.0) for c in changes[:14]) / 14
    first = 100 * gain / (gain + loss)
    gain, loss = (gain * 13 + max(changes[14], 0.0)) / 14, (loss * 13 + max(-changes[14], 0.0)) / 14
    c = np.array(close)
    out = compute_indicator("rsi", {}, _candles(c, c, c, c))
    assert out[14] == pytest.approx(first, abs=1e-12)
    assert out[15] == pytest.approx(100 * gain / (gain + loss), abs=1e-12)


def test_stoch_fast_k_is_zero_when_highest_high_equals_lowest_low() -> None:
    """A window with HH = LL gives fastK 0, so slow K and D are 0 rather than undefined."""
    flat = np.full(25, 42.0)
    out = compute_indicator("stoch", {}, _candles(flat, flat, flat, flat))
    assert isinstance(out, dict)
    assert out["k"][17:] == [0.0] * 8
    assert out["d"][17:] == [0.0] * 8


def test_obv_starts_at_first_volume_and_holds_on_equal_close() -> None:
    """OBV_0 = volume_0; then +volume on a higher close, -volume lower, unchanged when equal."""
    close = np.array([10.0, 11.0, 11.0, 9.0, 9.0, 12.0])
    volume = np.array([500.0, 100.0, 70.0, 30.0, 999.0, 5.0])
    out = compute_indicator("obv", None, _candles(close, close, close, volume))
    assert out == [500.0, 600.0, 600.0, 570.0, 570.0, 575.0]


def test_atr_ignores_bar_zero_which_has_no_true_range() -> None:
    """ATR_3 is the mean of TR_1..TR_3; bar 0's huge range never enters it."""
    high = np.array([1000.0, 12.0, 13.0, 12.5, 14.0])
    low = np.array([1.0, 10.0, 11.5, 11.0, 12.0])
    close = np.array([11.0, 11.0, 12.0, 12.0, 13.5])
    out = compute_indicator("atr", {"period": 3}, _candles(high, low, close, close))
    tr = [max(high[t], close[t - 1]) - min(low[t], close[t - 1]) for t in range(1, 5)]
    assert out[:3] == [None, None, None]
    assert out[3] == pytest.approx(sum(tr[:3]) / 3, abs=1e-12)
    assert out[4] == pytest.approx((out[3] * 2 + tr[3]) / 3, abs=1e-12)


def test_macd_seeds_fast_ema_on_the_twelve_closes_ending_at_index_25() -> None:
    """MACD at index 33 follows FINANCE's seeding: fast seed = mean of x[14..25], not x[0..11]."""
    close = [float(v) for v in _series("walk", 40, seed=9)[2]]

    def ema_from(seed: float, values: list[float], n: int) -> list[float]:
        out, k = [seed], 2 / (n + 1)
        for x in values:
            out.append(out[-1] + k * (x - out[-1]))
        return out

    slow = ema_from(sum(close[:26]) / 26, close[26:], 26)
    fast = ema_from(sum(close[14:26]) / 12, close[26:], 12)
    line = [f - s for f, s in zip(fast, slow, strict=True)]
    signal = ema_from(sum(line[:9]) / 9, line[9:], 9)
    c = np.array(close)
    out = compute_indicator("macd", {}, _candles(c, c, c, c))
    assert isinstance(out, dict)
    assert out["macd"][32] is None
    assert out["macd"][33] == pytest.approx(line[8], abs=1e-9)
    assert out["signal"][33] == pytest.approx(signal[0], abs=1e-9)
    assert out["hist"][39] == pytest.approx(line[14] - signal[6], abs=1e-9)


def _ts(iso_utc: str) -> int:
    return int(datetime.fromisoformat(iso_utc).replace(tzinfo=UTC).timestamp() * 1000)


def _vwap_bars(rows: list[tuple[str, float, float]]) -> Candles:
    # (UTC time, typical price as H=L=C, volume)
    return Candles.from_bars(Bar(_ts(t), p, p, p, p, v) for t, p, v in rows)


def test_vwap_resets_when_the_ist_date_changes() -> None:
    """Bars at 23:59 and 00:00 IST (18:29/18:30 UTC) belong to different sessions."""
    candles = _vwap_bars(
        [
            ("2026-11-27T03:45:00", 110.0, 30.0),  # 09:15 IST, 27 Nov
            ("2026-11-27T18:29:00", 120.0, 60.0),  # 23:59 IST, 27 Nov
            ("2026-11-27T18:30:00", 200.0, 5.0),  # 00:00 IST, 28 Nov: new session
            ("2026-11-27T18:31:00", 210.0, 5.0),
        ]
    )
    out = compute_indicator("vwap", {}, candles)
    assert out == [110.0, pytest.approx((110 * 30 + 120 * 60) / 90), 200.0, 205.0]


def test_vwap_does_not_reset_at_utc_midnight() -> None:
    """00:00 UTC is 05:30 IST: the IST date, and so the session, continues."""
    candles = _vwap_bars([("2026-11-26T23:59:00", 100.0, 1.0), ("2026-11-27T00:00:00", 50.0, 1.0)])
    assert compute_indicator("vwap", {}, candles) == [100.0, 75.0]


def test_vwap_is_null_while_session_volume_is_zero() -> None:
    """A session whose bars so far have no volume has no VWAP; the first traded bar sets it."""
    candles = _vwap_bars(
        [
            ("2026-11-27T03:45:00", 100.0, 0.0),
            ("2026-11-27T03:46:00", 101.0, 0.0),
            ("2026-11-27T03:47:00", 102.0, 4.0),
            ("2026-11-27T03:48:00", 104.0, 0.0),
        ]
    )
    assert compute_indicator("vwap", None, candles) == [None, None, 102.0, 102.0]


def test_outputs_never_contain_nan_or_infinity() -> None:
    """Overflowing arithmetic (σ of 1e200 prices) yields None, never NaN or inf."""
    close = np.array([1e200, -1e200] * 15)
    out = compute_indicator("bbands", {"period": 4}, _candles(close, close, close, close))
    assert isinstance(out, dict)
    for values in out.values():
        assert all(v is None or math.isfinite(v) for v in values)
    assert out["upper"][5] is None


def test_empty_candles_give_empty_outputs_with_every_output_name() -> None:
    """No candles: every output series is empty, multi-output keys still present."""
    empty = Candles(ts=[], open=[], high=[], low=[], close=[], volume=[])
    assert compute_indicator("bbands", {}, empty) == {"upper": [], "middle": [], "lower": []}
    assert compute_indicator("vwap", {}, empty) == []


def test_defaults_follow_talib_except_where_finance_fixes_them() -> None:
    """Defaults: TA-Lib's 30 for sma/ema/wma, FINANCE's 14/26/20/14-3-3 elsewhere."""
    assert resolve_indicator_params("sma", None) == {"period": 30}
    assert resolve_indicator_params("rsi", {}) == {"period": 14}
    assert resolve_indicator_params("macd", {}) == {"fast": 12, "slow": 26, "signal": 9}
    assert resolve_indicator_params("bbands", {}) == {
        "period": 20,
        "nbdev_up": 2.0,
        "nbdev_dn": 2.0,
    }
    stoch = {"fastk_period": 14, "slowk_period": 3, "slowd_period": 3}
    assert resolve_indicator_params("stoch", {}) == stoch
    assert resolve_indicator_params("vwap", None) == {}


def test_integral_float_period_is_accepted() -> None:
    """JSON 14.0 is the integer 14."""
    assert resolve_indicator_params("atr", {"period": 14.0}) == {"period": 14}


@pytest.mark.parametrize(
    ("indicator", "params", "code"),
    [
        ("sma2", {}, "unknown_indicator"),
        ("SMA", {}, "unknown_indicator"),
        ("sma", {"length": 5}, "invalid_param"),
        ("sma", {"period": 0}, "invalid_param"),
        ("rsi", {"period": 1}, "invalid_param"),
        ("bbands", {"period": 1}, "invalid_param"),
        ("ema", {"period": 10_001}, "invalid_param"),
        ("wma", {"period": 14.5}, "invalid_param"),
        ("wma", {"period": "14"}, "invalid_param"),
        ("atr", {"period": True}, "invalid_param"),
        ("macd", {"fast": 1}, "invalid_param"),
        ("bbands", {"nbdev_up": math.inf}, "invalid_param"),
        ("bbands", {"nbdev_dn": "2"}, "invalid_param"),
        ("obv", {"period": 3}, "invalid_param"),
    ],
)
def test_bad_requests_raise_typed_errors(
    indicator: str, params: dict[str, object], code: str
) -> None:
    """Unknown names and bad parameters raise IndicatorError with a stable code."""
    candles = _candles(*_series("walk", 5, seed=0))
    with pytest.raises(IndicatorError) as caught:
        compute_indicator(indicator, params, candles)
    assert caught.value.code == code
    assert isinstance(caught.value, ValueError)


def test_non_finite_candle_column_is_rejected() -> None:
    """A NaN in a column the indicator reads is invalid_candles, naming the column."""
    high, low, close, volume = _series("walk", 10, seed=0)
    close[4] = math.nan
    with pytest.raises(IndicatorError) as caught:
        compute_indicator("atr", {}, _candles(high, low, close, volume))
    assert (caught.value.code, caught.value.details) == ("invalid_candles", {"field": "close"})


def test_mismatched_candle_columns_are_rejected() -> None:
    """Columns of different lengths cannot form a series."""
    with pytest.raises(IndicatorError) as caught:
        Candles(ts=[1, 2], open=[1.0], high=[1.0], low=[1.0], close=[1.0], volume=[1.0])
    assert caught.value.code == "invalid_candles"


def test_package_exports_the_indicator_api() -> None:
    """engine.analytics re-exports the batch and streaming indicator names."""
    names = {
        "Bar",
        "Candles",
        "IndicatorError",
        "IndicatorOutput",
        "IndicatorStream",
        "IndicatorStreamValue",
        "INDICATORS",
        "INDICATOR_OUTPUTS",
        "compute_indicator",
        "create_indicator_stream",
        "indicator_warmup",
        "resolve_indicator_params",
        *("sma", "ema", "wma", "rsi", "macd", "bbands", "atr", "adx", "obv", "stoch", "vwap"),
        *("SmaStream", "EmaStream", "WmaStream", "RsiStream", "MacdStream", "BbandsStream"),
        *("AtrStream", "AdxStream", "ObvStream", "StochStream", "VwapStream"),
    }
    assert names <= set(dir(analytics))
    expected = {"sma", "ema", "wma", "rsi", "atr", "adx", "macd", "bbands", "stoch", "obv", "vwap"}
    assert set(analytics.INDICATORS) == expected
