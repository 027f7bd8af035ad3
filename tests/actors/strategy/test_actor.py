"""The strategy actor: persistence on the real PostgreSQL, live M2M, throttled events."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

import orjson
import pytest
import trio
import trio.testing
import trio_asyncio

from actors.market.actor import MarketActor
from actors.market.instruments import InstrumentMaster
from actors.market.messages import Quote, TickBatch
from actors.strategy import (
    THROTTLE,
    CreateStrategy,
    DeleteStrategy,
    GetPayoff,
    GetStrategy,
    Leg,
    ListQuery,
    ListStrategies,
    PatchStrategy,
    StrategyActor,
)
from actors.strategy.messages import Command
from actors.strategy.model import payoff_grid
from engine.bus import Subscription
from engine.calendar import load_calendar
from engine.config import Config, with_overrides
from engine.context import Engine
from engine.mailbox import ConflatingMailbox
from engine.metrics import Metrics
from protocol import Instrument, ProtocolError, Tick
from tests.kit.db import ledger_database, run_sql
from tests.kit.fakes import FakeClock, fake_engine
from tests.kit.node import start_market

NOW = int(dt.datetime(2026, 12, 1, 4, 30, tzinfo=dt.UTC).timestamp() * 1000)  # 10:00 IST
EXPIRY = dt.date(2026, 12, 29)
TICK = Decimal("0.05")
NIFTY = Instrument("NIFTY", "index", None, None, None, None, 1, TICK)
FUT = Instrument("NIFTY26DECFUT", "future", "NIFTY", EXPIRY, None, None, 65, TICK)
CALL = Instrument("NIFTY26DEC24000CE", "option", "NIFTY", EXPIRY, Decimal(24000), "call", 65, TICK)
SBIN = Instrument("SBIN", "equity", None, None, None, None, 1, TICK)
BANK = Instrument("BANKNIFTY", "index", None, None, None, None, 1, TICK)
INSTRUMENTS = [NIFTY, FUT, CALL, SBIN, BANK]


def legs(*items: tuple[Instrument, int, str]) -> tuple[Leg, ...]:
    return tuple(Leg(i.symbol, q, Decimal(p)) for i, q, p in items)


async def send(actor: StrategyActor, command: Command) -> object:
    """Send a command through the mailbox and wait for its answer."""
    actor.mailbox.send_nowait(command)
    with trio.fail_after(10):
        return await command.reply.wait()


async def tick(market: MarketActor, symbol: str, ltp: str) -> None:
    """Submit one tick and wait until the market actor has applied it."""
    box: ConflatingMailbox[str, Quote] = ConflatingMailbox(name="test")
    watch = market.watch([symbol], box)
    try:
        await market.submit(TickBatch((Tick(symbol, Decimal(ltp), NOW),), "test", NOW))
        with trio.fail_after(10):
            await box.receive()
    finally:
        market.unwatch(watch)


# ------------------------------------------------------------------ real PostgreSQL


@dataclass
class World:
    """A migrated database with ACC1 and ACC2, a store, a market and a strategy actor."""

    dsn: str
    engine: Engine
    market: MarketActor
    nursery: trio.Nursery
    actor: StrategyActor
    scope: trio.CancelScope

    def sql(self, query: str, *args: object) -> list[tuple[object, ...]]:
        return run_sql(self.dsn, query, *args)

    async def restart(self, *, fresh: bool) -> StrategyActor:
        """Stop the actor and run it again: a new object, or the same one (as a supervisor)."""
        self.scope.cancel()
        if fresh:
            engine = dataclasses.replace(self.engine, metrics=Metrics())
            self.actor = StrategyActor(engine, self.market)
        await self.start()
        return self.actor

    async def start(self) -> None:
        async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with trio.CancelScope() as scope:
                self.scope = scope
                await self.actor.run(task_status=task_status)

        await self.nursery.start(run)


@pytest.fixture
async def world(aio_loop: trio_asyncio.TrioEventLoop, config: Config) -> AsyncIterator[World]:
    """Everything the strategy actor needs, on a fresh migrated database."""
    cfg = with_overrides(config, database={"pool_max": 10})
    with ledger_database() as dsn:
        async with trio.open_nursery() as nursery:
            engine, market = await start_market(cfg, dsn, nursery, now=NOW, instruments=INSTRUMENTS)
            w = World(
                dsn, engine, market, nursery, StrategyActor(engine, market), trio.CancelScope()
            )
            await w.start()
            yield w
            nursery.cancel_scope.cancel()


async def _create(
    world: World, account: str, name: str, *items: tuple[Instrument, int, str]
) -> dict:  # type: ignore[type-arg]
    created = await send(world.actor, CreateStrategy(account, name, legs(*items)))
    assert isinstance(created, dict)
    return created


@pytest.mark.integration
async def test_strategies_survive_a_restart_exactly(world: World) -> None:
    """Create, patch and delete, restart the actor: it reloads the same strategies from SQL."""
    await tick(world.market, FUT.symbol, "24010.5")
    a = await _create(world, "ACC1", "Long fut", (FUT, 65, "24000.25"))
    b = await _create(world, "ACC1", "Spread", (CALL, 65, "150"), (FUT, -130, "24100.123456"))
    c = await _create(world, "ACC2", "Other", (SBIN, 10, "801.05"))
    await send(world.actor, PatchStrategy("ACC1", a["id"], "Long future", None))
    await send(world.actor, DeleteStrategy("ACC2", c["id"]))
    before = [await send(world.actor, ListStrategies(acc)) for acc in ("ACC1", "ACC2")]

    await world.restart(fresh=True)

    after = [await send(world.actor, ListStrategies(acc)) for acc in ("ACC1", "ACC2")]
    assert after == before
    await world.restart(fresh=False)
    assert [await send(world.actor, ListStrategies(acc)) for acc in ("ACC1", "ACC2")] == before
    assert [s["name"] for s in after[0]["items"]] == ["Long future", "Spread"]  # type: ignore[index]
    assert after[1] == {"items": [], "total": 0, "limit": 100, "offset": 0}
    assert b["legs"][1] == {  # type: ignore[index]
        "symbol": FUT.symbol,
        "quantity": "-130",
        "entry_price": Decimal("24100.123456"),
    }
    assert world.sql("SELECT count(*) FROM strategies") == [(2,)]
    assert world.sql("SELECT count(*) FROM strategy_legs") == [(3,)]


@pytest.mark.integration
async def test_m2m_follows_ticks_exactly_and_is_null_without_a_quote(world: World) -> None:
    """M2M is Σ (ltp − entry) × qty after each tick; null until every leg has a quote."""
    s = await _create(world, "ACC1", "Hedged", (FUT, 65, "24000.25"), (SBIN, -10, "800.10"))
    assert s["m2m"] is None
    await tick(world.market, FUT.symbol, "24010.5")
    got = await send(world.actor, GetStrategy("ACC1", s["id"]))
    assert got["m2m"] is None  # type: ignore[index]
    await tick(world.market, SBIN.symbol, "801.15")
    got = await send(world.actor, GetStrategy("ACC1", s["id"]))
    # (24010.5 − 24000.25) × 65 + (801.15 − 800.10) × −10 = 666.25 − 10.5
    assert got["m2m"] == Decimal("655.75")  # type: ignore[index]
    assert got["greeks"] == {"delta": 55.0, "gamma": 0.0, "theta": 0.0, "vega": 0.0}  # type: ignore[index]


@pytest.mark.integration
async def test_list_sorts_and_pages_by_every_whitelisted_field(world: World) -> None:
    """name, created_ts and m2m in both orders, m2m nulls last, limit and offset, total."""
    for sym, ltp in ((FUT.symbol, "24000"), (SBIN.symbol, "800")):
        await tick(world.market, sym, ltp)
    ids = {}
    for name, item in (
        ("bravo", (FUT, 1, "23990")),  # m2m 10
        ("Alpha", (SBIN, 1, "850")),  # m2m −50
        ("charlie", (CALL, 1, "100")),  # no quote: m2m null
        ("delta", (FUT, -1, "23900")),  # m2m −100
    ):
        ids[name] = (await _create(world, "ACC1", name, item))["id"]

    async def names(**query: object) -> list[str]:
        page = await send(world.actor, ListStrategies("ACC1", ListQuery(**query)))  # type: ignore[arg-type]
        return [item["name"] for item in page["items"]]  # type: ignore[index]

    assert await names() == ["bravo", "Alpha", "charlie", "delta"]
    assert await names(order="desc") == ["delta", "charlie", "Alpha", "bravo"]
    assert await names(sort="name") == ["Alpha", "bravo", "charlie", "delta"]
    assert await names(sort="name", order="desc") == ["delta", "charlie", "bravo", "Alpha"]
    assert await names(sort="m2m") == ["delta", "Alpha", "bravo", "charlie"]
    assert await names(sort="m2m", order="desc") == ["bravo", "Alpha", "delta", "charlie"]
    assert await names(sort="name", limit=2, offset=1) == ["bravo", "charlie"]
    page = await send(world.actor, ListStrategies("ACC1", ListQuery(limit=1, offset=10)))
    assert page == {"items": [], "total": 4, "limit": 1, "offset": 10}


@pytest.mark.integration
async def test_strategies_of_another_account_or_bad_ids_are_not_found(world: World) -> None:
    """A strategy is only visible to its account; garbage ids are 404, not errors."""
    s = await _create(world, "ACC2", "Theirs", (FUT, 65, "24000"))
    for cmd in (
        GetStrategy("ACC1", s["id"]),
        PatchStrategy("ACC1", s["id"], "Mine now", None),
        DeleteStrategy("ACC1", s["id"]),
        GetPayoff("ACC1", s["id"], payoff_grid(Decimal(1), Decimal(2), Decimal(1))),
        GetStrategy("ACC1", "x' OR 1=1 --"),
        GetStrategy("ACC2", "00000000-0000-0000-0000-000000000000"),
    ):
        with pytest.raises(ProtocolError) as info:
            await send(world.actor, cmd)
        assert info.value.code == "not_found"
    assert (await send(world.actor, GetStrategy("ACC2", s["id"])))["name"] == "Theirs"  # type: ignore[index]


@pytest.mark.integration
async def test_an_unknown_account_is_refused_by_the_database(world: World) -> None:
    """The account foreign key turns a create on a missing account into not_found."""
    with pytest.raises(ProtocolError) as info:
        await send(world.actor, CreateStrategy("NOPE", "x", legs((FUT, 1, "1"))))
    assert info.value.code == "not_found"
    assert world.sql("SELECT count(*) FROM strategies") == [(0,)]
    assert world.actor.statistics().strategies == 0


@pytest.mark.integration
async def test_a_failed_write_changes_neither_table_nor_memory(world: World) -> None:
    """A leg insert fails mid-transaction: nothing is stored, listed or watched."""
    world.sql("""
        CREATE FUNCTION boom() RETURNS trigger AS $$
        BEGIN RAISE EXCEPTION 'injected failure'; END $$ LANGUAGE plpgsql;
        CREATE TRIGGER boom BEFORE INSERT ON strategy_legs FOR EACH ROW
        WHEN (NEW.position = 1) EXECUTE FUNCTION boom();
    """)
    with pytest.raises(ProtocolError) as info:
        await send(world.actor, CreateStrategy("ACC1", "x", legs((FUT, 1, "1"), (SBIN, 1, "1"))))
    assert info.value.code == "database_unavailable"
    assert world.sql("SELECT count(*) FROM strategies") == [(0,)]
    page = await send(world.actor, ListStrategies("ACC1"))
    assert page["total"] == 0  # type: ignore[index]
    assert world.actor.statistics().symbols == 0


@pytest.mark.integration
async def test_patching_legs_rewatches_their_symbols(world: World) -> None:
    """After replacing the legs, ticks of the new symbol drive the M2M."""
    s = await _create(world, "ACC1", "Moving", (FUT, 65, "24000"))
    patched = await send(world.actor, PatchStrategy("ACC1", s["id"], None, legs((SBIN, 2, "800"))))
    assert patched["legs"] == [  # type: ignore[index]
        {"symbol": "SBIN", "quantity": "2", "entry_price": Decimal(800)}
    ]
    assert world.actor.statistics().symbols == 1
    await tick(world.market, SBIN.symbol, "812.5")
    got = await send(world.actor, GetStrategy("ACC1", s["id"]))
    assert got["m2m"] == Decimal(25)  # type: ignore[index]
    assert world.sql("SELECT symbol FROM strategy_legs") == [("SBIN",)]


@pytest.mark.integration
async def test_payoff_is_served_for_one_underlying_and_refused_for_several(world: World) -> None:
    """A future + call on NIFTY has a payoff curve; NIFTY with SBIN legs is a 409 conflict."""
    s = await _create(world, "ACC1", "Covered", (FUT, 65, "24000"), (CALL, -65, "100"))
    grid = payoff_grid(Decimal(23900), Decimal(24100), Decimal(100))
    got = await send(world.actor, GetPayoff("ACC1", s["id"], grid))
    assert got == {
        "points": [
            {"underlying": Decimal(23900), "value": Decimal(0)},
            {"underlying": Decimal(24000), "value": Decimal(6500)},
            {"underlying": Decimal(24100), "value": Decimal(6500)},
        ]
    }
    mixed = await _create(world, "ACC1", "Mixed", (FUT, 65, "24000"), (SBIN, 1, "800"))
    with pytest.raises(ProtocolError) as info:
        await send(world.actor, GetPayoff("ACC1", mixed["id"], grid))
    assert info.value.code == "conflict"


# ------------------------------------------------------------------ throttling (MockClock)


@pytest.fixture
async def fake_world(config: Config) -> AsyncIterator[tuple[MarketActor, StrategyActor]]:
    """A market and a strategy actor over a fake store (no I/O: the MockClock may jump)."""
    engine = fake_engine(config, FakeClock(NOW))
    market = MarketActor(engine, InstrumentMaster(engine.store), load_calendar())
    actor = StrategyActor(engine, market)
    async with trio.open_nursery() as nursery:
        await nursery.start(market.run)
        await market.master.upsert(INSTRUMENTS, NOW)
        await nursery.start(actor.run)
        yield market, actor
        nursery.cancel_scope.cancel()


async def _collect(
    sub: Subscription,
    into: list[tuple[float, str, dict]],  # type: ignore[type-arg]
) -> None:
    async for message in sub:
        into.append((trio.current_time(), message.channel, orjson.loads(message.data)))


async def _events(sub: Subscription, budget: float) -> list[tuple[float, str, dict]]:  # type: ignore[type-arg]
    got: list[tuple[float, str, dict]] = []  # type: ignore[type-arg]
    with trio.move_on_after(budget):
        await _collect(sub, got)
    return got


async def test_many_quotes_within_the_throttle_give_one_event_per_strategy(
    autojump_clock: trio.testing.MockClock, fake_world: tuple[MarketActor, StrategyActor]
) -> None:
    """A burst of 200 quotes inside one window publishes each strategy once, latest values."""
    market, actor = fake_world
    bus = actor._engine.bus
    a = await send(actor, CreateStrategy("ACC1", "fut", legs((FUT, 65, "24000"))))
    b = await send(
        actor, CreateStrategy("ACC1", "both", legs((FUT, -65, "24000"), (SBIN, 1, "800")))
    )
    c = await send(actor, CreateStrategy("ACC2", "sbin", legs((SBIN, 10, "800"))))
    await trio.sleep(THROTTLE * 2)  # let the creation events go
    sub = bus.subscribe("account:*")
    start = trio.current_time()
    for i in range(100):
        await market.submit(TickBatch((Tick(FUT.symbol, Decimal(24000 + i), NOW),), "t", NOW))
        await market.submit(TickBatch((Tick(SBIN.symbol, Decimal(800 + i), NOW),), "t", NOW))
    assert trio.current_time() == start
    events = await _events(sub, THROTTLE * 4)
    by_id = {e[2]["id"]: e for e in events}
    assert len(events) == 3 and set(by_id) == {a["id"], b["id"], c["id"]}  # type: ignore[index]
    assert {e[0] for e in events} == {start + THROTTLE}
    assert by_id[a["id"]][1] == "account:ACC1:strategies"  # type: ignore[index]
    assert by_id[a["id"]][2]["m2m"] == str(99 * 65)  # type: ignore[index]
    assert by_id[b["id"]][2]["m2m"] == str(-99 * 65 + 99)  # type: ignore[index]
    assert by_id[c["id"]][1] == "account:ACC2:strategies"  # type: ignore[index]
    assert by_id[c["id"]][2]["m2m"] == "990"  # type: ignore[index]
    assert by_id[a["id"]][2]["greeks"]["delta"] == 65.0  # type: ignore[index]
    assert actor.statistics().conflated > 0


async def test_a_steady_stream_is_published_at_most_once_per_window(
    autojump_clock: trio.testing.MockClock, fake_world: tuple[MarketActor, StrategyActor]
) -> None:
    """Quotes every 0.1 s for 2 s: events are THROTTLE apart and the last one is current."""
    market, actor = fake_world
    s = await send(actor, CreateStrategy("ACC1", "fut", legs((FUT, 1, "24000"))))
    await trio.sleep(THROTTLE * 2)
    sub = actor._engine.bus.subscribe("account:ACC1:strategies")
    events: list[tuple[float, str, dict]] = []  # type: ignore[type-arg]
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_collect, sub, events)
        for i in range(20):
            await market.submit(TickBatch((Tick(FUT.symbol, Decimal(24000 + i), NOW),), "t", NOW))
            await trio.sleep(0.1)
        await trio.sleep(THROTTLE * 3)
        nursery.cancel_scope.cancel()
    times = [t for t, _, _ in events]
    assert 4 <= len(events) <= 5
    assert times[0] == pytest.approx(start + THROTTLE)
    assert all(b - a >= THROTTLE - 1e-9 for a, b in zip(times, times[1:], strict=False))
    assert events[-1][2] == {
        "id": s["id"],  # type: ignore[index]
        "name": "fut",
        "m2m": "19",
        "greeks": {"delta": 1.0, "gamma": 0.0, "theta": 0.0, "vega": 0.0},
        "updated_ts": NOW,
        "ts": NOW,
    }


async def test_deleting_publishes_a_deleted_event_and_stops_watching(
    autojump_clock: trio.testing.MockClock, fake_world: tuple[MarketActor, StrategyActor]
) -> None:
    """A deleted strategy is announced once and its symbols are no longer watched."""
    market, actor = fake_world
    s = await send(actor, CreateStrategy("ACC1", "fut", legs((FUT, 1, "24000"))))
    await trio.sleep(THROTTLE * 2)
    sub = actor._engine.bus.subscribe("account:ACC1:strategies")
    await send(actor, DeleteStrategy("ACC1", s["id"]))  # type: ignore[index]
    assert market.statistics().watchers == 0
    await market.submit(TickBatch((Tick(FUT.symbol, Decimal(1), NOW),), "t", NOW))
    events = await _events(sub, THROTTLE * 3)
    assert [e[2] for e in events] == [{"id": s["id"], "deleted": True, "ts": NOW}]  # type: ignore[index]
