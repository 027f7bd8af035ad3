"""A recorded simulator session replayed into a fresh market actor reproduces it exactly."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import trio
import trio.testing

from actors.feed.replay import ReplayFeed, TickRecorder
from actors.feed.simulator import MarketSimulator, SimulatorFeed
from actors.market.actor import MarketActor
from actors.market.candles import TIMEFRAMES
from actors.market.instruments import InstrumentMaster
from engine.calendar import load_calendar
from engine.config import Config
from tests.kit.fakes import FakeClock, fake_engine

START = int(dt.datetime(2026, 12, 1, 3, 50, tzinfo=dt.UTC).timestamp() * 1000)  # 09:20 IST


def _market(config: Config, clock: FakeClock) -> MarketActor:
    engine = fake_engine(config, clock)
    return MarketActor(
        engine, InstrumentMaster(engine.store), load_calendar(Path("config/calendar"))
    )


def _picture(market: MarketActor, symbols: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for symbol in symbols:
        book = market.candles(symbol)
        assert book is not None
        out[symbol] = (
            market.quote(symbol),
            {tf: (book.history(tf), book.forming(tf)) for tf in TIMEFRAMES},
        )
    return out


async def test_replay_reproduces_a_recorded_session(
    config: Config, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Quotes and every candle of every timeframe are identical after a replay at full speed."""
    clock = FakeClock(START)
    live, replayed = _market(config, clock), _market(config, clock)
    sim = MarketSimulator(live.calendar, seed=3, start_ms=START, update_fraction=0.5)

    def wall() -> int:
        # The simulator's ticks follow the trio clock, so bars roll over during the session.
        return START + int(trio.current_time() * 1000)

    path = tmp_path / "session.jsonl"
    async with trio.open_nursery() as nursery:
        await nursery.start(live.run)
        await nursery.start(replayed.run)
        with TickRecorder(path, forward_to=live) as recorder:
            feed = SimulatorFeed(sim, recorder, rate=300, batch=100, clock=wall)
            with trio.move_on_after(125):  # > 2 virtual minutes: several 1m bars close
                await feed.run()
        await trio.testing.wait_all_tasks_blocked()
        await ReplayFeed(path, replayed, speed=0, clock=wall).run()
        await trio.testing.wait_all_tasks_blocked()
        symbols = sorted(i.symbol for i in sim.instruments())
        assert live.statistics().ticks == replayed.statistics().ticks > 30_000
        traded = [s for s in symbols if live.quote(s) is not None]
        live_picture, replay_picture = _picture(live, traded), _picture(replayed, traded)
        for symbol in traded:
            lq, lc = live_picture[symbol]  # type: ignore[misc]
            rq, rc = replay_picture[symbol]  # type: ignore[misc]
            assert (lq.ltp, lq.bid, lq.ask, lq.volume, lq.oi, lq.ts) == (
                rq.ltp,
                rq.bid,
                rq.ask,
                rq.volume,
                rq.oi,
                rq.ts,
            )
            assert lc == rc
        assert any(live.candles(s).history("1m") for s in traded)  # type: ignore[union-attr]
        nursery.cancel_scope.cancel()
