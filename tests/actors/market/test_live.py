"""Live futures analysis and live indicators over the market actor's quotes and candles."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from decimal import Decimal

import pytest
import trio
import trio.testing

from actors.market.actor import MarketActor
from actors.market.candles import Candle, CandleBook, Timeframe
from actors.market.instruments import InstrumentMaster
from actors.market.live import (
    LiveIndicators,
    NoLiveData,
    candle_bar,
    futures_to_wire,
    ist_date,
    live_futures,
)
from actors.market.messages import TickBatch
from engine.analytics import (
    Candles,
    FutureQuote,
    IndicatorError,
    IndicatorOutput,
    analyze_futures,
    compute_indicator,
)
from engine.calendar import load_calendar
from engine.config import Config
from protocol import Instrument, Tick
from tests.kit.fakes import FakeClock, fake_engine

# Tue 1 Dec 2026 09:15 IST (the session's first bar) and 10:00 IST.
SESSION_MS = int(dt.datetime(2026, 12, 1, 3, 45, tzinfo=dt.UTC).timestamp() * 1000)
OPEN_MS = int(dt.datetime(2026, 12, 1, 4, 30, tzinfo=dt.UTC).timestamp() * 1000)
TICK_SIZE = Decimal("0.05")
NEAR, NEXT, FAR = dt.date(2026, 12, 29), dt.date(2027, 1, 26), dt.date(2027, 2, 23)


def _actor(config: Config, clock: FakeClock) -> MarketActor:
    engine = fake_engine(config, clock)
    return MarketActor(engine, InstrumentMaster(engine.store), load_calendar())


def _future(symbol: str, expiry: dt.date) -> Instrument:
    return Instrument(symbol, "future", "NIFTY", expiry, None, None, 65, TICK_SIZE)


INDEX = Instrument("NIFTY", "index", None, None, None, None, 1, TICK_SIZE)
FUTURES = [
    _future("NIFTY26NOVFUT", dt.date(2026, 11, 24)),  # expired by OPEN_MS
    _future("NIFTY26DECFUT", NEAR),
    _future("NIFTY27JANFUT", NEXT),
    _future("NIFTY27FEBFUT", FAR),
]


def _tick(symbol: str, ltp: str, ts: int, oi: int | None = None) -> Tick:
    return Tick(symbol, Decimal(ltp), ts, oi=oi)


# ----------------------------------------------------------------- futures


async def test_live_futures_equal_analyze_futures_on_the_same_quotes(config: Config) -> None:
    """The live analysis is analyze_futures over the latest ltp/OI, as of today's IST date."""
    clock = FakeClock(OPEN_MS)
    actor = _actor(config, clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        actor.master._apply([INDEX, *FUTURES])
        ticks = (
            _tick("NIFTY", "24000.05", OPEN_MS),
            _tick("NIFTY26NOVFUT", "23000", OPEN_MS, oi=999_999),
            _tick("NIFTY26DECFUT", "24120.5", OPEN_MS, oi=1_000_000),
            _tick("NIFTY27JANFUT", "24260", OPEN_MS, oi=250_000),
            _tick("NIFTY27FEBFUT", "24395.25", OPEN_MS),
            _tick("NIFTY26DECFUT", "24121", OPEN_MS + 5, oi=1_000_650),
        )
        await actor.submit(TickBatch(ticks, "test", OPEN_MS))
        await trio.testing.wait_all_tasks_blocked()
        got = live_futures(actor, "NIFTY", OPEN_MS)
        want = analyze_futures(
            Decimal("24000.05"),
            dt.date(2026, 12, 1),
            [
                FutureQuote(FAR, Decimal("24395.25"), None),
                FutureQuote(NEAR, Decimal("24121"), 1_000_650),
                FutureQuote(NEXT, Decimal("24260"), 250_000),
            ],
        )
        assert got == want
        assert [c.expiry for c in got.contracts] == [NEAR, NEXT, FAR]
        assert all(c.buildup is None for c in got.contracts)
        wire = futures_to_wire(got)
        assert set(wire) == {"contracts", "rollover_pct"}
        contracts = wire["contracts"]
        assert isinstance(contracts, list)
        assert contracts[0] == {
            "expiry": "2026-12-29",
            "days_to_expiry": 28,
            "basis": Decimal("120.95"),
            "basis_pct": want.contracts[0].basis_pct,
            "annualized_carry_pct": want.contracts[0].annualized_carry_pct,
            "buildup": None,
        }
        assert wire["rollover_pct"] == want.rollover_pct
        nursery.cancel_scope.cancel()


async def test_live_buildup_compares_with_the_last_quote_before_the_oi_changed(
    config: Config,
) -> None:
    """OI moves in snapshots: the previous observation is the contract's last quote before
    its OI last changed, kept across later ticks with the same OI; null until it changes."""
    clock = FakeClock(OPEN_MS)
    actor = _actor(config, clock)
    spot = Decimal("24000")

    async def step(ltp: str, oi: int | None) -> tuple[FutureQuote, str | None]:
        ts = clock.now_ms
        await actor.submit(
            TickBatch(
                (_tick("NIFTY", "24000", ts), _tick("NIFTY26DECFUT", ltp, ts, oi=oi)), "t", ts
            )
        )
        await trio.testing.wait_all_tasks_blocked()
        clock.now_ms += 1000
        got = live_futures(actor, "NIFTY", OPEN_MS)
        (only,) = got.contracts
        before = actor.oi_before("NIFTY26DECFUT")
        quote = FutureQuote(
            NEAR,
            Decimal(ltp),
            actor.quote("NIFTY26DECFUT").oi,  # type: ignore[union-attr]
            None if before is None else before.ltp,
            None if before is None else before.oi,
        )
        assert got == analyze_futures(spot, dt.date(2026, 12, 1), [quote])
        return quote, only.buildup

    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        actor.master._apply([INDEX, *FUTURES])
        assert await step("24120.5", 1_000_000) == (
            FutureQuote(NEAR, Decimal("24120.5"), 1_000_000),
            None,
        )
        # Price moves, OI does not (and a tick without OI keeps it): still no change of OI.
        assert (await step("24130", 1_000_000))[1] is None
        assert (await step("24125", None))[1] is None
        # OI rises with the price since the last quote at the old OI (24125): long build-up.
        quote, buildup = await step("24140", 1_000_650)
        assert (quote.prev_price, quote.prev_oi, buildup) == (
            Decimal("24125"),
            1_000_000,
            "long_buildup",
        )
        # A later tick at the same OI still compares with that quote; a fall below it is
        # a short build-up, exactly at it neutral.
        assert (await step("24110", 1_000_650))[1] == "short_buildup"
        assert (await step("24125", 1_000_650))[1] == "neutral"
        # OI falls with the price against the last quote at 1,000,650: long unwinding.
        quote, buildup = await step("24100", 990_000)
        assert (quote.prev_price, quote.prev_oi, buildup) == (
            Decimal("24125"),
            1_000_650,
            "long_unwinding",
        )
        nursery.cancel_scope.cancel()


async def test_live_futures_without_quotes_raise_no_live_data(config: Config) -> None:
    """No futures quote, or futures but no spot quote, is NoLiveData."""
    clock = FakeClock(OPEN_MS)
    actor = _actor(config, clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        actor.master._apply([INDEX, *FUTURES])
        with pytest.raises(NoLiveData, match="no futures quotes"):
            live_futures(actor, "NIFTY", OPEN_MS)
        await actor.submit(TickBatch((_tick("NIFTY26NOVFUT", "1", OPEN_MS),), "t", OPEN_MS))
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(NoLiveData, match="no futures quotes"):  # only an expired one
            live_futures(actor, "NIFTY", OPEN_MS)
        await actor.submit(TickBatch((_tick("NIFTY26DECFUT", "1", OPEN_MS),), "t", OPEN_MS))
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(NoLiveData, match="no spot quote"):
            live_futures(actor, "NIFTY", OPEN_MS)
        with pytest.raises(NoLiveData):
            live_futures(actor, "BANKNIFTY", OPEN_MS)
        nursery.cancel_scope.cancel()


def test_as_of_is_the_ist_date() -> None:
    """Just after IST midnight the as-of date is already the next IST date."""
    utc_evening = int(dt.datetime(2026, 12, 1, 18, 45, tzinfo=dt.UTC).timestamp() * 1000)
    assert ist_date(utc_evening) == dt.date(2026, 12, 2)
    assert ist_date(OPEN_MS) == dt.date(2026, 12, 1)


# ----------------------------------------------------------------- indicators


class _Books:
    """A candle source over books fed directly."""

    def __init__(self, *books: CandleBook) -> None:
        self.books = {b.symbol: b for b in books}

    def candles(self, symbol: str) -> CandleBook | None:
        return self.books.get(symbol)


def _walk(seed: int, start_ms: int, minutes: int, every_s: int = 15) -> Iterator[Tick]:
    # A random walk of SBIN ticks on the 0.05 grid with a rising cumulative volume.
    rng = random.Random(seed)
    price, volume = 16000, 0  # in ticks of 0.05
    for i in range(minutes * 60 // every_s):
        price = max(1, price + rng.randint(-40, 40))
        volume += rng.randint(0, 500)
        yield Tick(
            "SBIN", Decimal(price * 5).scaleb(-2), start_ms + i * every_s * 1000, volume=volume
        )


def _feed(book: CandleBook, ticks: Iterator[Tick], count: int) -> None:
    for _ in range(count):
        t = next(ticks)
        book.on_tick(t.ts, t.ltp, t.volume)


def _batch(
    book: CandleBook, tf: Timeframe, indicator: str, params: dict[str, object]
) -> IndicatorOutput:
    bars: list[Candle] = book.history(tf)
    forming = book.forming(tf)
    if forming is not None:
        bars.append(forming)
    return compute_indicator(indicator, params, Candles.from_bars(map(candle_bar, bars)))


CASES: list[tuple[str, dict[str, object]]] = [
    ("sma", {"period": 5}),
    ("ema", {"period": 10}),
    ("wma", {"period": 7}),
    ("rsi", {"period": 14}),
    ("macd", {}),
    ("bbands", {"period": 20, "nbdev_up": 2, "nbdev_dn": 1.5}),
    ("atr", {"period": 14}),
    ("adx", {"period": 5}),
    ("stoch", {}),
    ("obv", {}),
    ("vwap", {}),
]


@pytest.mark.parametrize(("indicator", "params"), CASES)
def test_live_indicator_equals_compute_indicator_as_bars_close(
    indicator: str, params: dict[str, object]
) -> None:
    """Values equal compute_indicator over history + forming, before and after new bars close."""
    book = CandleBook("SBIN")
    ticks = _walk(7, SESSION_MS, 400)
    _feed(book, ticks, 4 * 60 + 2)  # 60 closed 1m bars and a forming one
    live = LiveIndicators(_Books(book))
    assert live.compute("SBIN", "1m", indicator, params) == _batch(book, "1m", indicator, params)
    for _ in range(5):
        _feed(book, ticks, 3)  # the forming bar moves; a bar closes every 4 ticks
        assert live.compute("SBIN", "1m", indicator, params) == _batch(
            book, "1m", indicator, params
        )
    assert live.compute("SBIN", "5m", indicator, params) == _batch(book, "5m", indicator, params)
    stats = live.statistics()
    assert (stats.entries, stats.rebuilds, stats.hits) == (2, 2, 5)


@pytest.mark.parametrize(("indicator", "params"), CASES)
def test_live_indicator_follows_the_sliding_window_of_kept_bars(
    indicator: str, params: dict[str, object]
) -> None:
    """Once old bars drop out of the kept history, values equal the batch over the new window."""
    book = CandleBook("SBIN", history_size=40)
    ticks = _walk(3, SESSION_MS, 400)
    live = LiveIndicators(_Books(book))
    _feed(book, ticks, 4 * 45)
    for _ in range(10):
        assert live.compute("SBIN", "1m", indicator, params) == _batch(
            book, "1m", indicator, params
        )
        _feed(book, ticks, 5)
    assert len(book.history("1m")) == 40


def test_forming_bar_only_gives_one_value() -> None:
    """With no closed bar yet, the values are the forming bar's alone."""
    book = CandleBook("SBIN")
    _feed(book, _walk(1, SESSION_MS, 1), 2)
    live = LiveIndicators(_Books(book))
    assert live.compute("SBIN", "1m", "obv", {}) == _batch(book, "1m", "obv", {})
    assert len(live.compute("SBIN", "1m", "sma", {"period": 1})) == 1
    assert live.statistics().entries == 0


def test_equivalent_params_share_one_stream_and_the_cache_is_bounded() -> None:
    """Defaults spelled out or not are one entry; past the capacity the least recent is evicted."""
    book = CandleBook("SBIN")
    _feed(book, _walk(2, SESSION_MS, 30), 100)
    live = LiveIndicators(_Books(book), capacity=2)
    live.compute("SBIN", "1m", "rsi", {})
    live.compute("SBIN", "1m", "rsi", {"period": 14.0})
    assert live.statistics().entries == 1
    live.compute("SBIN", "1m", "ema", {"period": 3})
    live.compute("SBIN", "1m", "rsi", {})  # most recent again
    live.compute("SBIN", "1m", "sma", {"period": 3})  # evicts ema
    stats = live.statistics()
    assert (stats.entries, stats.evictions) == (2, 1)
    live.compute("SBIN", "1m", "rsi", {})
    assert live.statistics().rebuilds == 3  # rsi was kept


def test_bad_indicator_params_and_missing_candles_are_errors() -> None:
    """Unknown indicators and bad params are IndicatorError; no candles is NoLiveData."""
    book = CandleBook("SBIN")
    _feed(book, _walk(2, SESSION_MS, 5), 10)
    live = LiveIndicators(_Books(book))
    with pytest.raises(IndicatorError) as unknown:
        live.compute("SBIN", "1m", "nope", {})
    assert unknown.value.code == "unknown_indicator"
    with pytest.raises(IndicatorError) as bad:
        live.compute("SBIN", "1m", "rsi", {"period": 1})
    assert bad.value.code == "invalid_param"
    with pytest.raises(IndicatorError):
        live.compute("SBIN", "1m", "rsi", {"length": 3})
    with pytest.raises(NoLiveData):
        live.compute("TCS", "1m", "rsi", {})
    with pytest.raises(ValueError, match="capacity"):
        LiveIndicators(_Books(), capacity=0)


async def test_live_indicators_read_the_market_actors_candles(config: Config) -> None:
    """Through the market actor, values equal compute_indicator over its 1m history + forming."""
    clock = FakeClock(OPEN_MS)
    actor = _actor(config, clock)
    live = LiveIndicators(actor)
    ticks = list(_walk(5, SESSION_MS, 50))
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        for start in range(0, len(ticks), 20):
            await actor.submit(TickBatch(tuple(ticks[start : start + 20]), "t", OPEN_MS))
            await trio.testing.wait_all_tasks_blocked()
            book = actor.candles("SBIN")
            assert book is not None
            got = live.compute("SBIN", "1m", "macd", {"fast": 3, "slow": 6, "signal": 2})
            assert got == _batch(book, "1m", "macd", {"fast": 3, "slow": 6, "signal": 2})
        assert isinstance(got, dict) and got["macd"][-1] is not None
        nursery.cancel_scope.cancel()
