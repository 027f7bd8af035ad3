"""The market actor: quotes, routing with conflation, pause/resume, freshness, candles."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any, Final

import orjson
import trio
import trio.testing

from actors.market.actor import MarketActor
from actors.market.candles import TIMEFRAMES
from actors.market.instruments import InstrumentMaster
from actors.market.messages import Quote, TickBatch
from engine.bus import InProcessBus, Subscription
from engine.calendar import load_calendar
from engine.config import Config, with_overrides
from engine.mailbox import ConflatingMailbox
from engine.store import DatabaseUnavailable
from protocol import Instrument, Tick
from tests.kit.fakes import FakeClock, FakeStore, fake_engine

# Tue 1 Dec 2026 10:00 IST (market open) and 22:00 IST (closed).
OPEN_MS = int(dt.datetime(2026, 12, 1, 4, 30, tzinfo=dt.UTC).timestamp() * 1000)
NIGHT_MS = int(dt.datetime(2026, 12, 1, 16, 30, tzinfo=dt.UTC).timestamp() * 1000)


def _tick(symbol: str, ltp: str, ts: int, volume: int | None = None, **kw: object) -> Tick:
    return Tick(symbol, Decimal(ltp), ts, volume=volume, **kw)  # type: ignore[arg-type]


def _actor(
    config: Config,
    clock: FakeClock,
    store: FakeStore | None = None,
    bus: InProcessBus | None = None,
) -> MarketActor:
    engine = fake_engine(config, clock, store)
    if bus is not None:
        engine = dataclasses.replace(engine, bus=bus)
    return MarketActor(engine, InstrumentMaster(engine.store), load_calendar())


# (trio time received, channel, decoded data) of every message a subscription delivered.
Log = list[tuple[float, str, Any]]


async def _record(sub: Subscription, log: Log) -> None:
    async for message in sub:
        log.append((trio.current_time(), message.channel, orjson.loads(message.data)))


@asynccontextmanager
async def _running(actor: MarketActor, pattern: str) -> AsyncIterator[Log]:
    """Run ``actor`` for the block, logging what it publishes on ``pattern``."""
    log: Log = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_record, actor._engine.bus.subscribe(pattern), log)
        await nursery.start(actor.run)
        yield log
        nursery.cancel_scope.cancel()


async def test_ticks_update_quotes_and_publish_conflated_events(
    config: Config, autojump_clock: trio.testing.MockClock
) -> None:
    """A batch publishes one quote event per symbol at once; its forming candle follows
    one ``candle_publish_interval`` later, with the batch's values."""
    clock = FakeClock(OPEN_MS)
    actor = _actor(config, clock)
    quotes = actor._engine.bus.subscribe("quotes:*")
    candles = actor._engine.bus.subscribe("candles:NIFTY:1m")
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        start = trio.current_time()
        await actor.submit(
            TickBatch(
                (
                    _tick(
                        "NIFTY", "24000.05", OPEN_MS, bid=Decimal("24000"), ask=Decimal("24000.1")
                    ),
                    _tick("NIFTY", "24001", OPEN_MS + 1, volume=10),
                    _tick("BANKNIFTY", "52000", OPEN_MS + 2),
                ),
                "test",
                OPEN_MS,
            )
        )
        first = orjson.loads((await quotes.receive()).data)
        second = orjson.loads((await quotes.receive()).data)
        assert first == {
            "symbol": "NIFTY",
            "ltp": "24001",
            "bid": "24000",
            "ask": "24000.1",
            "volume": 10,
            "oi": None,
            "ts": OPEN_MS + 1,
        }
        assert second["symbol"] == "BANKNIFTY"
        assert trio.current_time() == start
        candle = orjson.loads((await candles.receive()).data)
        assert trio.current_time() == start + config.market.candle_publish_interval
        assert (candle["open"], candle["high"], candle["close"], candle["closed"]) == (
            "24000.05",
            "24001",
            "24001",
            False,
        )
        q = actor.quote("NIFTY")
        assert q is not None and q.ltp == Decimal("24001") and q.bid == Decimal("24000")
        assert actor.statistics().ticks == 3
        nursery.cancel_scope.cancel()


async def test_slow_account_mailbox_is_bounded_and_conflations_counted(config: Config) -> None:
    """An account that never reads holds one pending quote per symbol; the rest is counted."""
    clock = FakeClock(OPEN_MS)
    actor = _actor(config, clock)
    slow: ConflatingMailbox[str, Quote] = ConflatingMailbox(name="slow")
    fast: ConflatingMailbox[str, Quote] = ConflatingMailbox(name="fast")
    actor.watch(["NIFTY", "BANKNIFTY"], slow)
    fast_watch = actor.watch(["NIFTY"], fast)
    received: list[Decimal] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)

        async def fast_reader() -> None:
            while True:
                _sym, quote = await fast.receive()
                received.append(quote.ltp)

        nursery.start_soon(fast_reader)
        for i in range(1, 501):
            await actor.submit(
                TickBatch(
                    (
                        _tick("NIFTY", str(24000 + i), OPEN_MS + i),
                        _tick("BANKNIFTY", str(52000 + i), OPEN_MS + i),
                        _tick("SBIN", "800", OPEN_MS + i),
                    ),
                    "test",
                    OPEN_MS,
                )
            )
        await trio.testing.wait_all_tasks_blocked()
        stats = slow.statistics()
        assert stats.pending == 2
        assert stats.conflated == 998
        assert dict(slow.drain())["NIFTY"].ltp == Decimal("24500")
        assert received[-1] == Decimal("24500")
        assert actor.statistics().conflated >= 998
        text = actor._engine.metrics.render().decode()
        assert "tickstream_ticks_conflated " in text
        actor.unwatch(fast_watch)
        assert actor.statistics().watchers == 1
        nursery.cancel_scope.cancel()


async def test_pause_discards_and_counts_until_resume(config: Config) -> None:
    """While paused, ticks are dropped and counted; after resume they apply again."""
    clock = FakeClock(OPEN_MS)
    actor = _actor(config, clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        actor.pause()
        assert actor.paused
        await actor.submit(TickBatch((_tick("NIFTY", "1", OPEN_MS),), "test", OPEN_MS))
        await trio.testing.wait_all_tasks_blocked()
        assert actor.quote("NIFTY") is None
        assert actor.statistics().paused_ticks == 1
        actor.resume()
        await actor.submit(TickBatch((_tick("NIFTY", "2", OPEN_MS),), "test", OPEN_MS))
        await trio.testing.wait_all_tasks_blocked()
        q = actor.quote("NIFTY")
        assert q is not None and q.ltp == Decimal("2")
        assert actor.health().paused is False
        nursery.cancel_scope.cancel()


async def test_full_inbox_makes_the_feed_wait(config: Config) -> None:
    """With the inbox full, submit blocks (backpressure) until the actor takes a batch."""
    cfg = with_overrides(config, market={"inbox_capacity": 1})
    actor = _actor(cfg, FakeClock(OPEN_MS))
    batch = TickBatch((_tick("NIFTY", "1", OPEN_MS),), "test", OPEN_MS)
    await actor.submit(batch)
    with trio.move_on_after(1) as scope:
        await actor.submit(batch)
    assert scope.cancelled_caught
    assert actor.statistics().inbox_depth == 1


async def test_silence_during_market_hours_is_stale_but_not_at_night(
    config: Config, autojump_clock: trio.testing.MockClock
) -> None:
    """The watchdog raises the stale alarm only when the market is open."""
    cfg = with_overrides(config, market={"stale_after": 10.0, "watchdog_interval": 1.0})
    clock = FakeClock(OPEN_MS)
    actor = _actor(cfg, clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        await actor.submit(TickBatch((_tick("NIFTY", "1", OPEN_MS),), "test", OPEN_MS))
        await trio.sleep(1.5)
        assert not actor.health().stale and actor.health().lag_ms == 0
        clock.now_ms += 11_000
        await trio.sleep(1)
        health = actor.health()
        assert health.market_open and health.stale and health.lag_ms == 11_000
        metrics = actor._engine.metrics
        assert metrics.registry.get_sample_value("tickstream_feed_stale") == 1
        clock.now_ms = NIGHT_MS
        await trio.sleep(1)
        assert not actor.health().market_open and not actor.health().stale
        assert metrics.registry.get_sample_value("tickstream_feed_stale") == 0
        nursery.cancel_scope.cancel()


async def test_closed_candles_are_written_in_batches_and_kept_on_db_errors(
    config: Config, autojump_clock: trio.testing.MockClock
) -> None:
    """Closed bars are flushed with one executemany; a failed write keeps them for the next."""
    store = FakeStore()
    clock = FakeClock(OPEN_MS)
    actor = _actor(config, clock, store)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        store.fail = DatabaseUnavailable("down")
        await actor.submit(
            TickBatch(
                (
                    _tick("NIFTY", "100", OPEN_MS, volume=5),
                    _tick("NIFTY", "101", OPEN_MS + 60_000, volume=9),
                ),
                "test",
                OPEN_MS,
            )
        )
        await trio.sleep(1.5)
        assert actor.statistics().candles_pending == 1
        store.fail = None
        await trio.sleep(1)
        assert actor.statistics().candles_written == 1
        ((sql, rows),) = [entry for entry in store.log if "INSERT INTO candles" in entry[0]]
        assert rows == [
            (
                "NIFTY",
                "1m",
                OPEN_MS,
                Decimal("100"),
                Decimal("100"),
                Decimal("100"),
                Decimal("100"),
                5,
            )
        ]
        nursery.cancel_scope.cancel()


async def test_option_quotes_are_grouped_by_chain(config: Config) -> None:
    """Ticks of options land in the chain of their underlying and expiry."""
    clock = FakeClock(OPEN_MS)
    actor = _actor(config, clock)
    expiry = dt.date(2026, 12, 29)
    ce = Instrument(
        "NIFTY26DEC24000CE", "option", "NIFTY", expiry, Decimal(24000), "call", 65, Decimal("0.05")
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        actor.master._apply([ce])
        await actor.submit(
            TickBatch(
                (_tick(ce.symbol, "120.5", OPEN_MS), _tick("NIFTY", "24010", OPEN_MS)),
                "test",
                OPEN_MS,
            )
        )
        await trio.testing.wait_all_tasks_blocked()
        chain = actor.chain_quotes("NIFTY", expiry)
        assert list(chain) == [ce.symbol] and chain[ce.symbol].ltp == Decimal("120.5")
        assert actor.chain_quotes("NIFTY", dt.date(2027, 1, 26)) == {}
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------ forming candles, throttled

SLOW_PUBLISH: Final = 0.1  # seconds a forming-only publication takes on _SlowFormingBus


class _SlowFormingBus(InProcessBus):
    # A publication without quotes (the forming publisher's) takes SLOW_PUBLISH, like a
    # Redis round trip on a connection of its own; a batch's publication takes none.
    async def publish_many(self, messages: Sequence[tuple[str, bytes]]) -> None:
        if not any(channel.startswith("quotes:") for channel, _ in messages):
            await trio.sleep(SLOW_PUBLISH)
        await super().publish_many(messages)


def _bars(log: Log, channel: str) -> list[tuple[float, int, bool, str]]:
    # (time received, bar open, closed, close) of the candle events of one channel.
    return [(t, d["ts"], d["closed"], d["close"]) for t, ch, d in log if ch == channel]


async def test_a_burst_of_batches_publishes_each_forming_candle_once_with_its_latest_values(
    config: Config, autojump_clock: trio.testing.MockClock
) -> None:
    """Four batches within one interval: a quote per symbol and batch at once, but one
    forming candle per symbol and timeframe, one interval after the first batch, in one
    publication, carrying the state the last batch left."""
    interval = config.market.candle_publish_interval
    actor = _actor(config, FakeClock(OPEN_MS))
    async with _running(actor, "*") as log:
        start = trio.current_time()
        for i, price in enumerate(("100", "103", "99", "101")):
            batch = (
                _tick("NIFTY", price, OPEN_MS + i, volume=10 * (i + 1)),
                _tick("SBIN", "800", OPEN_MS + i),
            )
            await actor.submit(TickBatch(batch, "test", OPEN_MS))
            await trio.sleep(interval / 8)
        await trio.sleep(10)
    quotes = [(t, ch) for t, ch, _ in log if ch.startswith("quotes:")]
    assert len(quotes) == 8
    assert quotes[-1][0] == start + 3 * (interval / 8)
    candles = [(t, ch, d) for t, ch, d in log if ch.startswith("candles:")]
    assert [ch for _, ch, _ in candles] == [
        f"candles:{symbol}:{tf}" for symbol in ("NIFTY", "SBIN") for tf in TIMEFRAMES
    ]
    assert {t for t, _, _ in candles} == {start + interval}
    for _, _, data in candles[:5]:
        ohlcv = (data["open"], data["high"], data["low"], data["close"], data["volume"])
        assert ohlcv == ("100", "103", "99", "101", 40)
        assert data["closed"] is False
    assert actor.statistics().ticks == 8


async def test_a_forming_change_is_published_one_interval_later_without_another_tick(
    config: Config, autojump_clock: trio.testing.MockClock
) -> None:
    """Trailing edge: a tick right after a publication is published one interval after it,
    though no tick follows; once nothing changed, nothing more is published."""
    interval = config.market.candle_publish_interval
    actor = _actor(config, FakeClock(OPEN_MS))
    async with _running(actor, "candles:NIFTY:1m") as log:
        start = trio.current_time()
        await actor.submit(TickBatch((_tick("NIFTY", "100", OPEN_MS),), "test", OPEN_MS))
        await trio.sleep(interval * 1.5)
        second = trio.current_time()
        await actor.submit(TickBatch((_tick("NIFTY", "105", OPEN_MS + 1),), "test", OPEN_MS))
        await trio.sleep(30)
    assert _bars(log, "candles:NIFTY:1m") == [
        (start + interval, OPEN_MS, False, "100"),
        (second + interval, OPEN_MS, False, "105"),
    ]


async def test_a_bar_closed_by_a_tick_is_published_at_once_and_its_forming_update_dropped(
    config: Config, autojump_clock: trio.testing.MockClock
) -> None:
    """The pending forming update of a bar that a tick closes is never published: the
    closed bar goes out with the closing batch, the next bar's forming state after it."""
    interval = config.market.candle_publish_interval
    actor = _actor(config, FakeClock(OPEN_MS))
    async with _running(actor, "candles:NIFTY:1m") as log:
        start = trio.current_time()
        await actor.submit(TickBatch((_tick("NIFTY", "100", OPEN_MS),), "test", OPEN_MS))
        await trio.sleep(interval / 2)
        closing = trio.current_time()
        await actor.submit(
            TickBatch((_tick("NIFTY", "101", OPEN_MS + 60_000),), "test", OPEN_MS + 60_000)
        )
        await trio.sleep(10)
    assert _bars(log, "candles:NIFTY:1m") == [
        (closing, OPEN_MS, True, "100"),
        (start + interval, OPEN_MS + 60_000, False, "101"),
    ]


async def test_a_bar_closed_by_the_timer_drops_its_pending_forming_update(
    config: Config, autojump_clock: trio.testing.MockClock
) -> None:
    """A bar the watchdog closes while its forming update waits: only the closed event is
    published on its channel; the timeframes still forming get their update."""
    cfg = with_overrides(config, market={"candle_publish_interval": 2.0, "watchdog_interval": 0.5})
    clock = FakeClock(OPEN_MS + 30_000)
    actor = _actor(cfg, clock)
    async with _running(actor, "candles:NIFTY:*") as log:
        start = trio.current_time()
        tick = _tick("NIFTY", "100", OPEN_MS + 30_000)
        await actor.submit(TickBatch((tick,), "test", OPEN_MS + 30_000))
        clock.now_ms = OPEN_MS + 60_000  # the 10:00 minute is over; the watchdog closes it
        await trio.sleep(10)
    ((closed_at, ts, closed, close),) = _bars(log, "candles:NIFTY:1m")
    assert (ts, closed, close) == (OPEN_MS, True, "100")
    assert closed_at < start + 2.0
    for tf in TIMEFRAMES[1:]:
        assert [(t, closed) for t, _, closed, _ in _bars(log, f"candles:NIFTY:{tf}")] == [
            (start + 2.0, False)
        ]


async def test_a_slow_forming_publication_is_never_overtaken_by_the_closed_bar(
    config: Config, autojump_clock: trio.testing.MockClock
) -> None:
    """While the bus takes its time with a forming update, a tick closes that bar: the
    closed event waits for the forming one, so it is published after it, never before."""
    interval = config.market.candle_publish_interval
    actor = _actor(config, FakeClock(OPEN_MS), bus=_SlowFormingBus())
    async with _running(actor, "candles:NIFTY:1m") as log:
        start = trio.current_time()
        await actor.submit(TickBatch((_tick("NIFTY", "100", OPEN_MS),), "test", OPEN_MS))
        # The forming publication reads the bar at start + interval and is on the bus
        # until SLOW_PUBLISH later; the closing tick comes in the middle.
        await trio.sleep(interval + SLOW_PUBLISH / 2)
        await actor.submit(
            TickBatch((_tick("NIFTY", "101", OPEN_MS + 60_000),), "test", OPEN_MS + 60_000)
        )
        await trio.sleep(10)
    bars = _bars(log, "candles:NIFTY:1m")
    assert [(ts, closed) for _, ts, closed, _ in bars] == [
        (OPEN_MS, False),
        (OPEN_MS, True),
        (OPEN_MS + 60_000, False),
    ]
    assert bars[0][0] == bars[1][0] == start + interval + SLOW_PUBLISH


async def test_interval_zero_publishes_the_forming_candles_with_every_batch(
    config: Config, autojump_clock: trio.testing.MockClock
) -> None:
    """``candle_publish_interval = 0``: every batch publishes its symbols' forming candles
    at once, with its quotes, as before the throttle."""
    cfg = with_overrides(config, market={"candle_publish_interval": 0.0})
    actor = _actor(cfg, FakeClock(OPEN_MS))
    async with _running(actor, "candles:NIFTY:*") as log:
        sent: list[float] = []
        for i, price in enumerate(("100", "101", "102")):
            sent.append(trio.current_time())
            await actor.submit(TickBatch((_tick("NIFTY", price, OPEN_MS + i),), "test", OPEN_MS))
            await trio.sleep(0.01)
        await trio.sleep(10)
    assert len(log) == 3 * len(TIMEFRAMES)
    assert _bars(log, "candles:NIFTY:1m") == [
        (t, OPEN_MS, False, price) for t, price in zip(sent, ("100", "101", "102"), strict=True)
    ]
