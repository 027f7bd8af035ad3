"""A store and a market actor over a real database: the base of the actor integration tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

import trio

from actors.market.actor import MarketActor
from actors.market.instruments import InstrumentMaster
from engine.bus import InProcessBus
from engine.calendar import load_calendar
from engine.config import Config
from engine.context import Engine
from engine.metrics import Metrics
from engine.store import Store
from protocol import Instrument

CALENDAR_DIR: Final = Path(__file__).resolve().parents[2] / "config" / "calendar"


async def start_market(
    config: Config,
    dsn: str,
    actor_nursery: trio.Nursery,
    *,
    now: int,
    instruments: Sequence[Instrument] = (),
) -> tuple[Engine, MarketActor]:
    """Start a store over ``dsn`` and a market actor holding ``instruments``.

    The engine has an in-process bus, fresh metrics and a clock stopped at ``now``; both
    services run in ``actor_nursery`` until it is cancelled.
    """
    store = Store(config.database, dsn)
    engine = Engine(
        config=config, store=store, bus=InProcessBus(), metrics=Metrics(), clock=lambda: now
    )
    await actor_nursery.start(store.run)
    market = MarketActor(engine, InstrumentMaster(store), load_calendar(CALENDAR_DIR))
    await actor_nursery.start(market.run)
    if instruments:
        await market.master.upsert(instruments, now)
    return engine, market
