"""Account actors on the real PostgreSQL: atomic ledger writes, rebuild, concurrency, quarantine."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

import pytest
import trio
import trio_asyncio

from actors.account import actor as account_actor
from actors.account.actor import AccountActor, AccountHandle
from actors.account.messages import (
    CancelOrder,
    Command,
    GetOrders,
    GetPnl,
    GetPositions,
    PlaceOrder,
    RecordTrade,
)
from actors.account.supervisor import Accounts
from actors.market.actor import MarketActor
from actors.market.messages import TickBatch
from engine.config import Config, with_overrides
from engine.context import Engine
from engine.mailbox import Mailbox
from protocol import Instrument, OrderRequest, ProtocolError, Tick, TradeRequest
from tests.kit.db import ledger_database, run_sql
from tests.kit.node import start_market

pytestmark = pytest.mark.integration

NOW = int(dt.datetime(2026, 12, 1, 4, 30, tzinfo=dt.UTC).timestamp() * 1000)
SBIN = Instrument("SBIN", "equity", None, None, None, None, 1, Decimal("0.05"))


@dataclass
class World:
    """A migrated database, a store, a market actor and the account supervisor."""

    dsn: str
    engine: Engine
    market: MarketActor
    accounts: Accounts
    nursery: trio.Nursery

    async def tick(self, symbol: str, ltp: str, **kw: Decimal) -> None:
        await self.market.submit(TickBatch((Tick(symbol, Decimal(ltp), NOW, **kw),), "test", NOW))
        await trio.sleep(0.05)

    async def send(self, account: str, command: Command) -> object:
        handle = self.accounts.get(account)
        assert handle is not None
        await handle.mailbox.send(command)
        return await command.reply.wait()

    def sql(self, query: str, *args: object) -> list[tuple[object, ...]]:
        return run_sql(self.dsn, query, *args)


def order(
    side: str = "buy",
    qty: int = 1,
    kind: str = "market",
    price: str | None = None,
    tag: str | None = None,
) -> PlaceOrder:
    req = OrderRequest("SBIN", side, qty, kind, None if price is None else Decimal(price), tag)  # type: ignore[arg-type]
    return PlaceOrder(req, None, "h")


@pytest.fixture
async def world(aio_loop: trio_asyncio.TrioEventLoop, config: Config) -> AsyncIterator[World]:
    """Everything an account actor needs, on a fresh migrated database with ACC1 and ACC2."""
    cfg = with_overrides(
        config, database={"pool_max": 20}, accounts={"max_restarts": 2, "restart_period": 60.0}
    )
    with ledger_database() as dsn:
        async with trio.open_nursery() as nursery:
            engine, market = await start_market(cfg, dsn, nursery, now=NOW, instruments=[SBIN])
            accounts = Accounts(engine, market)
            await nursery.start(accounts.run)
            yield World(dsn, engine, market, accounts, nursery)
            nursery.cancel_scope.cancel()


async def _state(world: World, account: str) -> tuple[object, object, object]:
    return (
        await world.send(account, GetPositions()),
        await world.send(account, GetPnl()),
        await world.send(account, GetOrders(limit=500)),
    )


async def test_failed_write_leaves_no_rows_and_no_acknowledgement(world: World) -> None:
    """The database fails mid-order (after the order row): nothing is written or answered OK."""
    world.sql("""
        CREATE FUNCTION boom() RETURNS trigger AS $$
        BEGIN RAISE EXCEPTION 'injected failure'; END $$ LANGUAGE plpgsql;
        CREATE TRIGGER boom BEFORE INSERT ON outbox FOR EACH ROW
        WHEN (NEW.payload::text LIKE '%boom-tag%') EXECUTE FUNCTION boom();
    """)
    await world.tick("SBIN", "800", bid=Decimal("799.95"), ask=Decimal("800.05"))
    events = world.engine.bus.subscribe("account:ACC1:*")
    with trio.fail_after(10), pytest.raises(ProtocolError) as info:
        await world.send("ACC1", order(tag="boom-tag"))
    assert info.value.code == "database_unavailable"
    for table in ("orders", "order_events", "fills", "outbox"):
        assert world.sql(f"SELECT count(*) FROM {table}") == [(0,)], table  # noqa: S608
    assert await world.send("ACC1", GetPositions()) == []
    await trio.sleep(0.3)
    assert events._buffer == type(events._buffer)()
    placed = await world.send("ACC1", order())
    assert placed["status"] == "filled"  # type: ignore[index]
    assert world.sql("SELECT count(*) FROM fills") == [(1,)]


async def test_rebuild_from_ledger_equals_the_state_before(world: World) -> None:
    """A fresh actor folding the ledger (snapshot + tail) ends in exactly the same state."""
    await world.tick("SBIN", "800", bid=Decimal("799.95"), ask=Decimal("800.05"))
    for i in range(30):
        await world.send("ACC1", order("buy" if i % 3 else "sell", qty=i + 1))
    await world.send("ACC1", order("buy", 5, "limit", "700"))
    await world.send(
        "ACC1",
        RecordTrade(
            TradeRequest("SBIN", "sell", 7, Decimal("812.3456"), Decimal("3.21"), NOW, "EXT-1")
        ),
    )
    before = await _state(world, "ACC1")
    handle = world.accounts.get("ACC1")
    assert handle is not None
    fresh = AccountActor(world.engine, handle, world.market)
    await fresh.rebuild()
    await fresh.snapshot()
    for i in range(5):
        await world.send("ACC1", order("buy", i + 1))
    before = await _state(world, "ACC1")
    await world.accounts.restart("ACC1")
    after = await _state(world, "ACC1")
    assert after == before
    assert world.sql("SELECT count(*) FROM account_snapshots") == [(1,)]


async def test_hundred_concurrent_orders_give_the_exact_position(world: World) -> None:
    """100 orders sent at once on one account all land; the position is exactly their sum."""
    await world.tick("SBIN", "800", bid=Decimal("799.95"), ask=Decimal("800.05"))
    results: list[object] = []

    async def place(i: int) -> None:
        results.append(await world.send("ACC1", order("buy" if i % 4 else "sell", qty=i + 1)))

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for i in range(100):
                nursery.start_soon(place, i)
    expected = sum((i + 1) * (1 if i % 4 else -1) for i in range(100))
    positions = await world.send("ACC1", GetPositions())
    assert positions[0]["net_quantity"] == str(expected)  # type: ignore[index]
    assert len(results) == 100
    assert world.sql(
        "SELECT count(*), sum(CASE WHEN side='buy' THEN quantity ELSE -quantity END)"
        " FROM fills WHERE account_id = 'ACC1'"
    ) == [(100, expected)]
    seqs = world.sql("SELECT seq FROM order_events WHERE account_id='ACC1' ORDER BY seq")
    assert [s for (s,) in seqs] == list(range(1, len(seqs) + 1))


async def test_killed_actor_mid_burst_loses_no_acknowledged_order(world: World) -> None:
    """Restarting an actor during a burst: every acknowledged order is in the ledger and the
    rebuilt state is the fold of the ledger."""
    await world.tick("SBIN", "800", bid=Decimal("799.95"), ask=Decimal("800.05"))
    acked: list[str] = []

    async def place(i: int) -> None:
        try:
            placed = await world.send("ACC1", order(qty=i + 1))
        except ProtocolError:
            return
        acked.append(placed["id"])  # type: ignore[index]

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for i in range(60):
                nursery.start_soon(place, i)
            await trio.sleep(0.05)
            await world.accounts.restart("ACC1")
    in_ledger = {str(r[0]) for r in world.sql("SELECT id FROM orders WHERE account_id='ACC1'")}
    assert set(acked) <= in_ledger
    total = world.sql("SELECT coalesce(sum(quantity), 0) FROM fills WHERE account_id='ACC1'")
    positions = await world.send("ACC1", GetPositions())
    assert positions[0]["net_quantity"] == str(int(total[0][0]))  # type: ignore[index,arg-type]


async def test_repeated_crashes_quarantine_one_account_and_others_trade(world: World) -> None:
    """An actor that keeps crashing is quarantined past its budget; the others keep trading."""
    await world.tick("SBIN", "800", bid=Decimal("799.95"), ask=Decimal("800.05"))
    # Marking ACC2's outbox rows as published fails: its actor crashes after every start.
    world.sql("""
        CREATE FUNCTION boom() RETURNS trigger AS $$
        BEGIN RAISE EXCEPTION 'injected failure'; END $$ LANGUAGE plpgsql;
        CREATE TRIGGER boom BEFORE UPDATE ON outbox FOR EACH ROW
        WHEN (NEW.account_id = 'ACC2') EXECUTE FUNCTION boom();
    """)
    await world.send("ACC2", order())
    handle = world.accounts.get("ACC2")
    assert handle is not None
    with trio.fail_after(20):
        while handle.state != "quarantined":  # noqa: ASYNC110 - no event for this state
            await trio.sleep(0.05)
    placed = await world.send("ACC1", order())
    assert placed["status"] == "filled"  # type: ignore[index]
    metrics = world.engine.metrics.registry
    assert (
        metrics.get_sample_value(
            "tickstream_actor_quarantines_total", {"supervisor": "accounts", "child": "ACC2"}
        )
        == 1
    )
    assert (
        metrics.get_sample_value(
            "tickstream_actor_restarts_total", {"supervisor": "accounts", "child": "ACC2"}
        )
        == 2
    )


async def test_account_that_cannot_rebuild_is_quarantined_on_restart(world: World) -> None:
    """A corrupt snapshot: the restart fails, the account is quarantined, others trade on."""
    await world.tick("SBIN", "800")
    world.sql("INSERT INTO account_snapshots VALUES ('ACC2', 0, '{\"bad\": 1}'::jsonb, 0)")
    with pytest.raises(ProtocolError) as info:
        await world.accounts.restart("ACC2")
    assert info.value.code == "account_halted"
    handle = world.accounts.get("ACC2")
    assert handle is not None and handle.state == "quarantined"
    placed = await world.send("ACC1", order())
    assert placed["status"] == "filled"  # type: ignore[index]


async def test_cancel_unknown_and_closed_orders(world: World) -> None:
    """Cancelling an unknown id is 404; cancelling a filled order is 409."""
    await world.tick("SBIN", "800")
    with pytest.raises(ProtocolError) as info:
        await world.send("ACC1", CancelOrder("00000000-0000-0000-0000-000000000000"))
    assert info.value.code == "not_found"
    with pytest.raises(ProtocolError) as info:
        await world.send("ACC1", CancelOrder("not-a-uuid"))
    assert info.value.code == "not_found"
    filled = await world.send("ACC1", order())
    with pytest.raises(ProtocolError) as info:
        await world.send("ACC1", CancelOrder(filled["id"]))  # type: ignore[index]
    assert info.value.code == "conflict"


def _unmarked(world: World, account: str) -> int:
    rows = world.sql(
        "SELECT count(*) FROM outbox WHERE account_id = %s AND published_ts IS NULL", account
    )
    return int(rows[0][0])  # type: ignore[call-overload]


async def test_published_outbox_rows_are_marked_by_the_next_write_or_when_quiet(
    world: World,
) -> None:
    """Rows published after a write are marked by the account's next write, or ~1 s later."""
    await world.tick("SBIN", "800", bid=Decimal("799.95"), ask=Decimal("800.05"))
    await world.send("ACC1", order("buy", 1))
    first = _unmarked(world, "ACC1")  # a filled market order: one change, several events
    assert first >= 2
    await world.send("ACC1", order("sell", 1))
    total = world.sql("SELECT count(*) FROM outbox WHERE account_id = 'ACC1'")[0][0]
    # The second write marked the first one's rows in the same statement, not its own.
    assert _unmarked(world, "ACC1") == total - first > 0  # type: ignore[operator]
    # Then the account goes quiet: the marker marks the rest after OUTBOX_MARK_AFTER.
    with trio.fail_after(5):
        while _unmarked(world, "ACC1"):  # noqa: ASYNC110 - polling the database
            await trio.sleep(0.05)


async def test_a_snapshot_is_written_once_enough_fills_piled_up(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past SNAPSHOT_EVERY fills the actor writes a snapshot without being asked."""
    monkeypatch.setattr(account_actor, "SNAPSHOT_EVERY", 3)
    await world.tick("SBIN", "800", bid=Decimal("799.95"), ask=Decimal("800.05"))
    for _ in range(3):
        await world.send("ACC2", order("buy", 1))
    query = "SELECT count(*) FROM account_snapshots WHERE account_id = 'ACC2'"
    with trio.fail_after(5):
        while world.sql(query) != [(1,)]:  # noqa: ASYNC110 - polling the database
            await trio.sleep(0.05)


async def test_a_command_waiting_for_the_actors_lock_is_answered_when_the_actor_stops(
    world: World,
) -> None:
    """Cancelled while it waits for its lock, the actor still answers the command it took."""
    world.sql("INSERT INTO accounts (id, name, created_ts) VALUES ('ACC3', 'ACC3', 0)")
    handle = AccountHandle("ACC3", Mailbox(4, name="account:ACC3"))
    actor = AccountActor(world.engine, handle, world.market)
    command = order()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            async with actor._lock:  # e.g. the quote loop filling a limit order
                await handle.mailbox.send(command)
                while handle.mailbox.statistics().received == 0:  # noqa: ASYNC110 - no event
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
        assert command.reply.answered
        with pytest.raises(ProtocolError) as refused:
            await command.reply.wait()
    assert refused.value.code == "busy"


async def test_an_actor_behind_the_ledger_rebuilds_and_trades_on(world: World) -> None:
    """Another writer of the account (a second node holding it) moves the ledger on: the
    stale actor's next write is refused (503, nothing recorded), it restarts and rebuilds
    from the ledger, and then trades on with a state that includes the other writer's fill."""
    await world.tick("SBIN", "800", bid=Decimal("799.95"), ask=Decimal("800.05"))
    first = await world.send("ACC1", order("buy", 2))
    assert first["status"] == "filled"  # type: ignore[index]
    other_handle = AccountHandle("ACC1", Mailbox(4, name="account:ACC1:other-node"))
    other = AccountActor(world.engine, other_handle, world.market)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(other.run)
            command = order("buy", 3)
            await other_handle.mailbox.send(command)
            assert (await command.reply.wait())["status"] == "filled"  # type: ignore[index]
            nursery.cancel_scope.cancel()
        with pytest.raises(ProtocolError) as refused:
            await world.send("ACC1", order("buy", 4))
        assert refused.value.code == "database_unavailable"
        handle = world.accounts.get("ACC1")
        assert handle is not None
        while handle.state != "running":  # noqa: ASYNC110 - no event for this state
            await trio.sleep(0.05)
        third = await world.send("ACC1", order("buy", 5))
    assert third["status"] == "filled"  # type: ignore[index]
    positions = await world.send("ACC1", GetPositions())
    assert [(p["symbol"], p["net_quantity"]) for p in positions] == [("SBIN", "10")]  # type: ignore[attr-defined, index]
    assert world.sql("SELECT sum(quantity) FROM fills WHERE account_id = 'ACC1'") == [
        (Decimal(10),)
    ]
    assert (
        world.engine.metrics.registry.get_sample_value(
            "tickstream_actor_restarts_total", {"supervisor": "accounts", "child": "ACC1"}
        )
        == 1
    )
