"""Backup and restore (docs/RUNBOOK.md): a ledger dumped with ``pg_dump -Fc`` and restored with
``pg_restore`` into a fresh database rebuilds the same accounts to the last decimal digit."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
import trio
import trio_asyncio

from actors.account import actor as account_actor
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
from engine import migrate
from engine.config import Config, with_overrides
from engine.context import Engine
from protocol import Instrument, OrderRequest, Tick, TradeRequest
from tests.kit.db import ledger_database, run_sql, temporary_database
from tests.kit.node import start_market

pytestmark = pytest.mark.integration

NOW = int(dt.datetime(2026, 12, 1, 4, 30, tzinfo=dt.UTC).timestamp() * 1000)  # 10:00 IST
SBIN = Instrument("SBIN", "equity", None, None, None, None, 1, Decimal("0.05"))
INFY = Instrument("INFY", "equity", None, None, None, None, 1, Decimal("0.05"))
ACCOUNTS = ("ACC1", "ACC2")
# The last quotes before the dump; replayed after the restore (market data is not backed up).
CLOSING = (("SBIN", "812.35", "812.30", "812.40"), ("INFY", "1520.05", "1520.00", "1520.10"))


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is missing in CI (Debian's postgresql-client provides it)")
        pytest.skip(f"{name} is not installed")
    return path


@dataclass
class Node:
    """A store, a market actor and the account actors over one database."""

    engine: Engine
    market: MarketActor
    accounts: Accounts

    async def tick(self, symbol: str, ltp: str, bid: str, ask: str) -> None:
        tick = Tick(symbol, Decimal(ltp), NOW, bid=Decimal(bid), ask=Decimal(ask))
        await self.market.submit(TickBatch((tick,), "test", NOW))
        await trio.sleep(0.05)

    async def send(self, account: str, command: Command) -> object:
        handle = self.accounts.get(account)
        assert handle is not None
        await handle.mailbox.send(command)
        return await command.reply.wait()

    async def state(self) -> dict[str, object]:
        for symbol, ltp, bid, ask in CLOSING:
            await self.tick(symbol, ltp, bid, ask)
        return {
            acc: (
                await self.send(acc, GetPositions()),
                await self.send(acc, GetPnl()),
                await self.send(acc, GetOrders(limit=500)),
            )
            for acc in ACCOUNTS
        }


@asynccontextmanager
async def _node(config: Config, dsn: str) -> AsyncIterator[Node]:
    async with trio.open_nursery() as nursery:
        engine, market = await start_market(config, dsn, nursery, now=NOW)
        accounts = Accounts(engine, market)
        await nursery.start(accounts.run)
        yield Node(engine, market, accounts)
        nursery.cancel_scope.cancel()


def order(
    symbol: str, side: str, qty: int, kind: str = "market", price: str | None = None
) -> PlaceOrder:
    req = OrderRequest(symbol, side, qty, kind, None if price is None else Decimal(price), None)  # type: ignore[arg-type]
    return PlaceOrder(req, None, "h")


async def _trade(node: Node) -> None:
    # Fills at several prices on two symbols and two accounts, a broker trade with fees and
    # four decimals, an open limit order, a cancelled one: every kind of ledger row.
    prices = ("800.05", "801.15", "799.95", "803.40", "805.55", "804.10", "806.85", "810.25")
    for i, ltp in enumerate(prices):
        bid, ask = str(Decimal(ltp) - Decimal("0.05")), str(Decimal(ltp) + Decimal("0.05"))
        await node.tick("SBIN", ltp, bid, ask)
        await node.tick(
            "INFY", str(Decimal("1500.00") + 3 * i), str(1499 + 3 * i), str(1501 + 3 * i)
        )
        await node.send("ACC1", order("SBIN", "buy" if i % 3 else "sell", 7 * i + 3))
        await node.send("ACC1", order("INFY", "sell" if i % 2 else "buy", 5 + i))
        await node.send("ACC2", order("SBIN", "sell" if i % 4 == 1 else "buy", 11 + i))
    await node.send(
        "ACC2",
        RecordTrade(
            TradeRequest("INFY", "buy", 13, Decimal("1503.1234"), Decimal("4.7311"), NOW, "EXT-7")
        ),
    )
    await node.send("ACC1", order("SBIN", "buy", 5, "limit", "700.00"))
    doomed = await node.send("ACC2", order("INFY", "sell", 2, "limit", "1999.95"))
    await node.send("ACC2", CancelOrder(doomed["id"]))  # type: ignore[index]


def _ledger(dsn: str) -> dict[str, list[tuple[object, ...]]]:
    return {
        table: sorted(run_sql(dsn, f"SELECT * FROM {table}"), key=repr)  # noqa: S608 - fixed names
        for table in ("orders", "order_events", "fills", "account_snapshots", "alembic_version")
    }


async def test_pg_dump_and_restore_rebuild_identical_accounts(
    aio_loop: trio_asyncio.TrioEventLoop,
    config: Config,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Positions, P&L and orders rebuilt from a restored dump equal those before the dump,
    and the ledger rows (orders, order_events, fills, snapshots) are equal."""
    pg_dump, pg_restore = _tool("pg_dump"), _tool("pg_restore")
    # A snapshot every 10 fills: the restored accounts rebuild from snapshot + tail.
    monkeypatch.setattr(account_actor, "SNAPSHOT_EVERY", 10)
    cfg = with_overrides(config, database={"pool_max": 10})
    dump = tmp_path / "tickstream.dump"
    with ledger_database("tickstream_backup", ACCOUNTS) as source:
        with trio.fail_after(60):
            async with _node(cfg, source) as node:
                await node.market.master.upsert([SBIN, INFY], NOW)
                await _trade(node)
                before = await node.state()
                # The actor writes its snapshot in the background once 10 fills piled up.
                while not run_sql(source, "SELECT 1 FROM account_snapshots"):  # noqa: ASYNC110
                    await trio.sleep(0.05)
                ledger = _ledger(source)
                # Dump while the engine runs, as in production.
                await trio.to_thread.run_sync(
                    lambda: subprocess.run(
                        [pg_dump, "-Fc", "--no-owner", "-d", source, "-f", str(dump)], check=True
                    )
                )

    assert len(ledger["fills"]) >= 25
    assert ledger["account_snapshots"], "no snapshot was taken: the tail-only path alone"
    positions, pnl, _ = before["ACC1"]  # type: ignore[misc]
    assert any(p["net_quantity"] != "0" for p in positions)
    assert Decimal(pnl["realized"]) != 0 and Decimal(pnl["unrealized"]) != 0
    assert dump.stat().st_size > 0

    with temporary_database("tickstream_restore") as target:
        await trio.to_thread.run_sync(
            lambda: subprocess.run(
                [pg_restore, "--no-owner", "--exit-on-error", "-d", target, str(dump)], check=True
            )
        )
        assert _ledger(target) == ledger
        # What `tickstream db current` prints on the restored database: already at head.
        assert "(head)" in migrate.current(target)
        with trio.fail_after(60):
            async with _node(cfg, target) as node:
                after = await node.state()
    assert after == before
