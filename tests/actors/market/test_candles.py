"""Candle aggregation: IST-aligned OHLCV bars from ticks, late ticks, volume policy."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.market.candles import HISTORY, TIMEFRAMES, Candle, CandleBook, Timeframe

IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
ONE_MS = dt.timedelta(milliseconds=1)


def ist(day: int, hh: int, mm: int, ss: int = 0, ms: int = 0) -> int:
    """Epoch ms of a December 2026 IST wall time (Tue 1 Dec 2026 is a trading day)."""
    return (dt.datetime(2026, 12, day, hh, mm, ss, ms * 1000, tzinfo=IST) - EPOCH) // ONE_MS


def bar(
    tf: Timeframe, ts: int, o: str, h: str, lo: str, c: str, v: int, closed: bool = False
) -> Candle:
    return Candle("NIFTY", tf, ts, Decimal(o), Decimal(h), Decimal(lo), Decimal(c), v, closed)


def tick(book: CandleBook, ts: int, price: str, volume: int | None = None) -> list[Candle]:
    return book.on_tick(ts, Decimal(price), volume)


def test_ticks_across_1m_5m_and_1h_boundaries_give_exact_ohlcv() -> None:
    """One tick at 10:15:00 closes the 1m, 5m, 15m and 1h bars with exact OHLCV."""
    book = CandleBook("NIFTY")
    tick(book, ist(1, 10, 13, 10), "100.05", 1000)
    tick(book, ist(1, 10, 13, 50), "102.10", 1500)
    tick(book, ist(1, 10, 14, 30), "99.95", 1600)
    tick(book, ist(1, 10, 14, 59, 999), "101.00")  # no volume: volume unchanged
    events = tick(book, ist(1, 10, 15), "103", 2100)
    assert events == [
        bar("1m", ist(1, 10, 14), "99.95", "101.00", "99.95", "101.00", 100, closed=True),
        bar("1m", ist(1, 10, 15), "103", "103", "103", "103", 500),
        bar("5m", ist(1, 10, 10), "100.05", "102.10", "99.95", "101.00", 1600, closed=True),
        bar("5m", ist(1, 10, 15), "103", "103", "103", "103", 500),
        bar("15m", ist(1, 10, 0), "100.05", "102.10", "99.95", "101.00", 1600, closed=True),
        bar("15m", ist(1, 10, 15), "103", "103", "103", "103", 500),
        bar("1h", ist(1, 9, 15), "100.05", "102.10", "99.95", "101.00", 1600, closed=True),
        bar("1h", ist(1, 10, 15), "103", "103", "103", "103", 500),
        bar("1d", ist(1, 9, 15), "100.05", "103", "99.95", "103", 2100),
    ]
    assert book.history("1m") == [
        bar("1m", ist(1, 10, 13), "100.05", "102.10", "100.05", "102.10", 1500, closed=True),
        bar("1m", ist(1, 10, 14), "99.95", "101.00", "99.95", "101.00", 100, closed=True),
    ]
    tick(book, ist(1, 10, 16), "102.50", 2200)
    assert book.last_closed("1m") == bar(
        "1m", ist(1, 10, 15), "103", "103", "103", "103", 500, closed=True
    )
    assert book.forming("5m") == bar("5m", ist(1, 10, 15), "103", "103", "102.50", "102.50", 600)


def test_session_start_splits_bars_between_091459999_and_0915() -> None:
    """09:14:59.999 is in the pre-open bars; 09:15:00.000 opens the session's first bars."""
    book = CandleBook("NIFTY")
    first = tick(book, ist(1, 9, 14, 59, 999), "100", 50)
    assert [(e.tf, e.ts) for e in first] == [
        ("1m", ist(1, 9, 14)),
        ("5m", ist(1, 9, 10)),
        ("15m", ist(1, 9, 0)),
        ("1h", ist(1, 8, 15)),
        ("1d", ist(1, 9, 15)),
    ]
    second = tick(book, ist(1, 9, 15), "101", 80)
    assert second == [
        bar("1m", ist(1, 9, 14), "100", "100", "100", "100", 50, closed=True),
        bar("1m", ist(1, 9, 15), "101", "101", "101", "101", 30),
        bar("5m", ist(1, 9, 10), "100", "100", "100", "100", 50, closed=True),
        bar("5m", ist(1, 9, 15), "101", "101", "101", "101", 30),
        bar("15m", ist(1, 9, 0), "100", "100", "100", "100", 50, closed=True),
        bar("15m", ist(1, 9, 15), "101", "101", "101", "101", 30),
        bar("1h", ist(1, 8, 15), "100", "100", "100", "100", 50, closed=True),
        bar("1h", ist(1, 9, 15), "101", "101", "101", "101", 30),
        bar("1d", ist(1, 9, 15), "100", "101", "100", "101", 80),
    ]


def test_pre_open_tick_falls_on_the_0915_anchored_grid() -> None:
    """A 09:07 tick makes a 5m bar at 09:05, a 15m bar at 09:00 and a 1h bar at 08:15."""
    book = CandleBook("NIFTY")
    events = tick(book, ist(1, 9, 7, 30), "100")
    assert {e.tf: e.ts for e in events} == {
        "1m": ist(1, 9, 7),
        "5m": ist(1, 9, 5),
        "15m": ist(1, 9, 0),
        "1h": ist(1, 8, 15),
        "1d": ist(1, 9, 15),
    }


def test_close_due_at_1530_closes_the_short_last_hour_and_keeps_the_day_open() -> None:
    """At 15:30 the 1m, 5m, 15m and short 15:15 hour bars close; 1d stays forming."""
    book = CandleBook("NIFTY")
    tick(book, ist(1, 15, 15), "200", 10_000)
    tick(book, ist(1, 15, 29, 59, 999), "201", 10_500)
    assert book.close_due(ist(1, 15, 29, 59, 999)) == []
    closed = book.close_due(ist(1, 15, 30))
    assert closed == [
        bar("1m", ist(1, 15, 29), "201", "201", "201", "201", 500, closed=True),
        bar("5m", ist(1, 15, 25), "201", "201", "201", "201", 500, closed=True),
        bar("15m", ist(1, 15, 15), "200", "201", "200", "201", 10_500, closed=True),
        bar("1h", ist(1, 15, 15), "200", "201", "200", "201", 10_500, closed=True),
    ]
    assert book.close_due(ist(1, 15, 31)) == []
    assert book.forming("1h") is None
    assert book.forming("1d") == bar("1d", ist(1, 9, 15), "200", "201", "200", "201", 10_500)
    # A straggler stamped before 15:30 now belongs to closed bars only.
    events = tick(book, ist(1, 15, 29, 59, 500), "202", 10_600)
    assert events == [bar("1d", ist(1, 9, 15), "200", "202", "200", "201", 10_600)]
    assert book.statistics().late_by_tf == {"1m": 1, "5m": 1, "15m": 1, "1h": 1, "1d": 0}


def test_ticks_from_1530_open_a_new_hour_piece_stamped_1530() -> None:
    """The 15:15 hour ends at 15:30; a 15:30:00.000 tick opens a 1h bar at 15:30, then 16:15."""
    book = CandleBook("NIFTY")
    tick(book, ist(1, 15, 29, 59, 999), "200", 100)
    events = tick(book, ist(1, 15, 30), "199", 130)
    hourly = [e for e in events if e.tf == "1h"]
    assert hourly == [
        bar("1h", ist(1, 15, 15), "200", "200", "200", "200", 100, closed=True),
        bar("1h", ist(1, 15, 30), "199", "199", "199", "199", 30),
    ]
    tick(book, ist(1, 16, 14, 59, 999), "197", 135)
    assert book.forming("1h") == bar("1h", ist(1, 15, 30), "199", "199", "197", "197", 35)
    assert book.forming("15m") == bar("15m", ist(1, 16, 0), "197", "197", "197", "197", 5)
    tick(book, ist(1, 16, 15), "198", 140)
    assert book.forming("1h") == bar("1h", ist(1, 16, 15), "198", "198", "198", "198", 5)


def test_new_ist_day_resets_cumulative_volume_and_closes_the_day_bar() -> None:
    """The first tick of the next IST date closes 1d; its bars count volume from 0 again."""
    book = CandleBook("NIFTY")
    tick(book, ist(1, 10, 0), "100", 5_000)
    tick(book, ist(1, 15, 29), "110", 9_000)
    events = tick(book, ist(2, 9, 15), "105", 300)
    assert events[-2:] == [
        bar("1d", ist(1, 9, 15), "100", "110", "100", "110", 9_000, closed=True),
        bar("1d", ist(2, 9, 15), "105", "105", "105", "105", 300),
    ]
    assert book.forming("1m") == bar("1m", ist(2, 9, 15), "105", "105", "105", "105", 300)
    assert book.statistics().volume_resets == 0


def test_ist_midnight_not_utc_midnight_separates_days_and_clips_the_hour() -> None:
    """Bars break at 00:00 IST: the 23:15 hour ends at midnight, the next starts at 00:00."""
    book = CandleBook("NIFTY")
    tick(book, ist(1, 23, 59, 59, 999), "100", 10)
    events = tick(book, ist(2, 0, 0), "101", 4)
    assert [(e.tf, e.ts, e.closed) for e in events if e.tf in ("1h", "1d")] == [
        ("1h", ist(1, 23, 15), True),
        ("1h", ist(2, 0, 0), False),
        ("1d", ist(1, 9, 15), True),
        ("1d", ist(2, 9, 15), False),
    ]
    assert book.forming("1h") == bar("1h", ist(2, 0, 0), "101", "101", "101", "101", 4)
    assert book.close_due(ist(2, 0, 15)) == [
        bar("1m", ist(2, 0, 0), "101", "101", "101", "101", 4, closed=True),
        bar("5m", ist(2, 0, 0), "101", "101", "101", "101", 4, closed=True),
        bar("15m", ist(2, 0, 0), "101", "101", "101", "101", 4, closed=True),
        bar("1h", ist(2, 0, 0), "101", "101", "101", "101", 4, closed=True),
    ]


def test_tick_older_than_the_forming_bar_is_dropped_for_that_timeframe_and_counted() -> None:
    """A 10:00:50 tick after 10:01:10 is dropped by 1m but still updates the 5m bar."""
    book = CandleBook("NIFTY")
    tick(book, ist(1, 10, 0, 30), "100", 100)
    tick(book, ist(1, 10, 1, 10), "101", 150)
    events = tick(book, ist(1, 10, 0, 50), "107", 120)
    assert "1m" not in {e.tf for e in events}
    assert events[0] == bar("5m", ist(1, 10, 0), "100", "107", "100", "101", 150)
    assert book.forming("1m") == bar("1m", ist(1, 10, 1), "101", "101", "101", "101", 50)
    assert book.history("1m") == [
        bar("1m", ist(1, 10, 0), "100", "100", "100", "100", 100, closed=True)
    ]
    stats = book.statistics()
    assert (stats.ticks, stats.late, stats.late_by_tf["1m"], stats.late_by_tf["5m"]) == (3, 1, 1, 0)


def test_out_of_order_tick_in_forming_bar_moves_high_low_and_volume_but_not_close() -> None:
    """An older tick in the forming bar widens high/low, raises volume only upwards, keeps close."""
    book = CandleBook("NIFTY")
    tick(book, ist(1, 10, 0, 10), "100", 100)
    tick(book, ist(1, 10, 0, 40), "101", 300)
    tick(book, ist(1, 10, 0, 20), "105", 200)  # older and lower volume: not a fall
    assert book.forming("1m") == bar("1m", ist(1, 10, 0), "100", "105", "100", "101", 300)
    tick(book, ist(1, 10, 0, 30), "95", 350)  # older but higher volume: counted
    assert book.forming("1m") == bar("1m", ist(1, 10, 0), "100", "105", "95", "101", 350)
    assert book.statistics().volume_resets == 0
    assert book.statistics().late == 0


def test_equal_timestamps_later_arrival_sets_the_close() -> None:
    """Of two ticks with the same ts the one applied last is the close."""
    book = CandleBook("NIFTY")
    ts = ist(1, 11, 0, 5)
    tick(book, ts, "100")
    tick(book, ts, "99.5")
    tick(book, ist(1, 11, 0, 1), "99.8")  # older: never the close
    assert book.forming("1m") == bar("1m", ist(1, 11, 0), "100", "100", "99.5", "99.5", 0)


def test_gaps_produce_no_empty_bars() -> None:
    """Minutes without ticks leave no bars: 10:00 is followed directly by 10:07."""
    book = CandleBook("NIFTY")
    assert book.forming("1m") is None
    assert book.last_closed("1m") is None
    tick(book, ist(1, 10, 0, 5), "100", 10)
    events = tick(book, ist(1, 10, 7, 30), "102", 25)
    assert events[:4] == [
        bar("1m", ist(1, 10, 0), "100", "100", "100", "100", 10, closed=True),
        bar("1m", ist(1, 10, 7), "102", "102", "102", "102", 15),
        bar("5m", ist(1, 10, 0), "100", "100", "100", "100", 10, closed=True),
        bar("5m", ist(1, 10, 5), "102", "102", "102", "102", 15),
    ]
    assert [c.ts for c in book.history("1m")] == [ist(1, 10, 0)]


def test_falling_cumulative_volume_becomes_the_new_baseline() -> None:
    """A drop in cumulative volume adds nothing, later rises count from it, never negative."""
    book = CandleBook("NIFTY")
    tick(book, ist(1, 10, 0, 0), "100", 1000)
    tick(book, ist(1, 10, 0, 30), "100", 400)  # feed reset / bad print
    assert book.forming("1m") == bar("1m", ist(1, 10, 0), "100", "100", "100", "100", 1000)
    tick(book, ist(1, 10, 0, 45), "100", 450)
    events = tick(book, ist(1, 10, 1), "100", 300)  # falls again, at a bar's first tick
    assert events[:2] == [
        bar("1m", ist(1, 10, 0), "100", "100", "100", "100", 1050, closed=True),
        bar("1m", ist(1, 10, 1), "100", "100", "100", "100", 0),
    ]
    tick(book, ist(1, 10, 1, 10), "100", 320)
    assert book.forming("1m") == bar("1m", ist(1, 10, 1), "100", "100", "100", "100", 20)
    assert book.forming("1d") == bar("1d", ist(1, 9, 15), "100", "100", "100", "100", 1070)
    assert book.statistics().volume_resets == 2


def test_history_keeps_only_the_newest_closed_bars() -> None:
    """Past HISTORY closed bars per timeframe the oldest are forgotten."""
    book = CandleBook("NIFTY")
    start = ist(1, 9, 15)
    for i in range(HISTORY + 2):
        tick(book, start + i * 60_000, "100")
    history = book.history("1m")
    assert len(history) == HISTORY
    assert (history[0].ts, history[-1].ts) == (start + 60_000, start + HISTORY * 60_000)
    assert book.last_closed("1m") == history[-1]
    assert len(book.history("1d")) == 0


def test_candle_to_wire_has_the_protocol_fields_with_decimal_money() -> None:
    """The wire form is the PROTOCOL.md candle event data, prices as Decimal objects."""
    candle = bar("5m", ist(1, 9, 15), "100.05", "101", "99.95", "100.5", 42, closed=True)
    assert candle.to_wire() == {
        "symbol": "NIFTY",
        "tf": "5m",
        "ts": ist(1, 9, 15),
        "open": Decimal("100.05"),
        "high": Decimal("101"),
        "low": Decimal("99.95"),
        "close": Decimal("100.5"),
        "volume": 42,
        "closed": True,
    }


def test_unknown_timeframe_is_refused() -> None:
    """Accessors name the valid timeframes instead of failing with a KeyError."""
    with pytest.raises(ValueError, match="unknown timeframe"):
        CandleBook("NIFTY").history("2m")  # type: ignore[arg-type]


# ---------------------------------------------------------------- reference model

MINUTES = {"1m": 1, "5m": 5, "15m": 15, "1h": 60}


def _ref_stamp(tf: Timeframe, ts: int) -> int:
    # Independent of the implementation: datetime arithmetic in IST.
    local = (EPOCH + ts * ONE_MS).astimezone(IST)
    day = local.date()
    open_ = dt.datetime.combine(day, dt.time(9, 15), IST)
    if tf == "1d":
        return (open_ - EPOCH) // ONE_MS
    close = dt.datetime.combine(day, dt.time(15, 30), IST)
    length = dt.timedelta(minutes=MINUTES[tf])
    start = open_ + (local - open_) // length * length
    if start < close < start + length and local >= close:
        start = close
    start = max(start, dt.datetime.combine(day, dt.time(0), IST))
    return (start - EPOCH) // ONE_MS


def _reference(
    tf: Timeframe, ticks: list[tuple[int, Decimal, int | None]]
) -> list[tuple[int, Decimal, Decimal, Decimal, Decimal, int]]:
    # Group ts-ordered ticks by bucket: first/max/min/last price, sum of volume rises.
    buckets: dict[int, list[tuple[Decimal, int]]] = {}
    day, prev = None, 0
    for ts, price, volume in ticks:
        date = (EPOCH + ts * ONE_MS).astimezone(IST).date()
        if date != day:
            day, prev = date, 0
        rise = 0
        if volume is not None:
            rise, prev = max(0, volume - prev), volume
        buckets.setdefault(_ref_stamp(tf, ts), []).append((price, rise))
    return [
        (
            stamp,
            rows[0][0],
            max(p for p, _ in rows),
            min(p for p, _ in rows),
            rows[-1][0],
            sum(r for _, r in rows),
        )
        for stamp, rows in buckets.items()
    ]


STEP_MS = st.one_of(
    st.integers(0, 3_000),
    st.integers(0, 20 * 60_000),
    st.integers(0, 20 * 3_600_000),
    st.sampled_from([1, 60_000, 5 * 60_000, 15 * 60_000, 3_600_000, 86_400_000]),
)
# Bias the first tick onto the edges where bars split: the open, the close, midnight.
START_MS = st.one_of(
    st.integers(ist(1, 0, 0), ist(2, 0, 0)),
    st.sampled_from([ist(1, 9, 14, 59, 999), ist(1, 15, 29, 59, 999), ist(1, 23, 59, 59, 999)]),
)
PRICE = st.integers(1, 4000).map(lambda n: Decimal(n) / 20)
VOLUME = st.one_of(
    st.none(),
    st.tuples(st.just("rise"), st.integers(0, 500)),
    st.tuples(st.just("set"), st.integers(0, 10_000)),
)


@settings(max_examples=300, deadline=None)
@given(
    start=START_MS,
    steps=st.lists(st.tuples(STEP_MS, PRICE, VOLUME, st.booleans()), min_size=1, max_size=60),
)
def test_candles_equal_a_naive_bucket_aggregation(
    start: int, steps: list[tuple[int, Decimal, tuple[str, int] | None, bool]]
) -> None:
    """For ts-ordered ticks (timer closes interleaved), closed + forming bars match the model."""
    book = CandleBook("NIFTY")
    ticks: list[tuple[int, Decimal, int | None]] = []
    closed: dict[str, list[Candle]] = {tf: [] for tf in TIMEFRAMES}
    ts, cum = start, 0
    for step, price, volume, timer_first in steps:
        ts += step
        sent: int | None = None
        if volume is not None:
            kind, amount = volume
            cum = cum + amount if kind == "rise" else amount
            sent = cum
        ticks.append((ts, price, sent))
        if timer_first:
            for candle in book.close_due(ts):
                closed[candle.tf].append(candle)
        for candle in book.on_tick(ts, price, sent):
            if candle.closed:
                closed[candle.tf].append(candle)
            else:
                assert candle == book.forming(candle.tf)
    for tf in TIMEFRAMES:
        forming = book.forming(tf)
        assert forming is not None
        got = [(c.ts, c.open, c.high, c.low, c.close, c.volume) for c in [*closed[tf], forming]]
        assert got == _reference(tf, ticks), tf
        assert book.history(tf) == closed[tf]
    assert book.statistics().late == 0


@settings(max_examples=200, deadline=None)
@given(
    start=START_MS,
    ticks=st.lists(
        st.tuples(st.integers(-120_000, 20 * 60_000), PRICE, st.integers(0, 500)),
        min_size=1,
        max_size=60,
    ),
)
def test_batch_mode_gives_the_closed_bars_and_final_forming_state_of_tick_mode(
    start: int, ticks: list[tuple[int, Decimal, int]]
) -> None:
    """on_tick(snapshots=False) + forming_all() == the per-tick snapshots, late ticks included.

    The market actor applies a batch without snapshots and reads the forming bars once:
    it must publish the same closed bars, and the forming bars the last snapshot of each
    timeframe showed.
    """
    per_tick, batch = CandleBook("NIFTY"), CandleBook("NIFTY")
    ts, volume = start, 0
    closed_per_tick: list[Candle] = []
    closed_batch: list[Candle] = []
    last_forming: dict[str, Candle] = {}
    for step, price, rise in ticks:
        ts, volume = ts + step, volume + rise  # steps < 0 make late, out-of-order ticks
        for candle in per_tick.on_tick(ts, price, volume):
            if candle.closed:
                closed_per_tick.append(candle)
            else:
                last_forming[candle.tf] = candle
        closed_batch += batch.on_tick(ts, price, volume, snapshots=False)
    assert closed_batch == closed_per_tick
    assert all(c.closed for c in closed_batch)
    forming = batch.forming_all()
    assert [c.tf for c in forming] == [tf for tf in TIMEFRAMES if batch.forming(tf)]
    assert forming == [per_tick.forming(c.tf) for c in forming]
    # Without late ticks, those are exactly the last snapshots the per-tick mode returned.
    if all(step >= 0 for step, _, _ in ticks):
        assert forming == [last_forming[c.tf] for c in forming]
