"""The account actor: one per trading account; positions, orders and P&L in memory.

State is a fold over the ledger. Each command that changes it is committed to
PostgreSQL in ONE transaction (order, events, fill, outbox) before the caller is
answered and before the event is published; only then is memory updated. A
restarted actor rebuilds from the ledger (snapshot + tail of fills) and ends in
the state it had.

The actor has two inputs: its bounded command mailbox (owned by the
:class:`AccountHandle`, so it survives restarts) and a conflating quote mailbox fed
by the market actor. Both are handled under one lock, one message at a time.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, Literal

import orjson
import trio

import protocol
from actors.market.actor import MarketActor, Watch
from actors.market.messages import Quote
from engine.context import Engine
from engine.mailbox import ConflatingMailbox, Mailbox, MailboxClosed
from engine.store import Connection, DatabaseUnavailable, StoreError
from engine.sync import EagerLock
from protocol import ErrorCode, OrderRequest, ProtocolError

from . import ledger
from .ledger import Change, order_wire
from .messages import (
    CancelOrder,
    Command,
    GetOrders,
    GetPnl,
    GetPositions,
    PlaceOrder,
    RecordTrade,
    unavailable,
)
from .positions import Fill, Portfolio

LOG = logging.getLogger(__name__)

SNAPSHOT_EVERY: Final = 10_000  # fills between snapshots
VIEW_THROTTLE: Final = 0.25  # seconds between positions/pnl publications
OUTBOX_RETRY: Final = 0.2  # seconds before marking published outbox rows again after a failure
# Published outbox rows are marked by the account's next ledger write (same statement, no
# round trip of its own); the marker task writes them alone only after this long.
OUTBOX_MARK_AFTER: Final = 1.0  # seconds
PAPER_FEE: Final = Decimal(0)
# The primary key of order_events: a write refused by it means another writer (another
# node holding this account) moved the ledger on, and this actor's memory is behind it.
SEQ_CONSTRAINT: Final = "order_events_pkey"

AccountState = Literal["starting", "running", "quarantined", "stopped"]


class LedgerAhead(Exception):
    """The ledger holds events this actor has not seen (another writer of the account)."""

    def __init__(self, account_id: str) -> None:
        super().__init__(f"account {account_id}: the ledger is ahead of memory; rebuilding")


@dataclass(eq=False, slots=True)
class AccountHandle:
    """What the gateway and the supervisor hold of an account, across restarts."""

    id: str
    mailbox: Mailbox[Command]
    state: AccountState = "starting"
    halted: bool = False
    restarts: int = 0


@dataclass(slots=True)
class _Order:
    row: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.row["id"])


class AccountActor:
    """Runs one account; start it with ``await nursery.start(actor.run)``."""

    def __init__(self, engine: Engine, handle: AccountHandle, market: MarketActor) -> None:
        self._engine = engine
        self._handle = handle
        self._market = market
        self._portfolio = Portfolio()
        self._open: dict[str, _Order] = {}
        self._seq = 0
        self._fills_since_snapshot = 0
        self._last_fill_id = 0
        self._lock = EagerLock()
        self._quotes: ConflatingMailbox[str, Quote] = ConflatingMailbox(name=f"quotes:{handle.id}")
        self._watch: Watch | None = None
        self._dirty_views = trio.Event()
        self._published: list[int] = []  # outbox ids published, not yet marked
        self._published_since = 0.0  # trio time the oldest of them was published
        self._marks_failing = False
        # Set when published outbox rows wait to be marked, or a snapshot is due.
        self._housekeeping = trio.Event()
        metrics = engine.metrics
        self._m_orders = metrics.orders

    # ------------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Rebuild from the ledger, then serve commands and quotes until cancelled."""
        handle = self._handle
        handle.state = "starting"
        try:
            await self.rebuild()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._quote_loop)
                nursery.start_soon(self._view_publisher)
                nursery.start_soon(self._outbox_marker)
                handle.state = "running"
                task_status.started()
                await self._command_loop()
        finally:
            if self._watch is not None:
                self._market.unwatch(self._watch)
            if handle.state == "running":
                handle.state = "stopped"

    async def rebuild(self) -> None:
        """Fold the ledger into memory (snapshot + fills after it), then republish the outbox.

        Raises:
            ProtocolError: ``not_found`` when the account does not exist.
        """
        aid = self._handle.id

        async def read(conn: Connection) -> ledger.Loaded | None:
            return await ledger.load(conn, aid)

        loaded = await self._engine.store.run_unit(read, transaction=True)
        if loaded is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such account", {"account": aid})
        self._handle.halted = loaded.status == "halted"
        fills = [ledger.fill_from_row(r) for r in loaded.fills]
        self._portfolio = Portfolio.rebuild(fills, snapshot=loaded.snapshot)
        self._last_fill_id = loaded.fills[-1]["id"] if loaded.fills else loaded.snapshot_fill_id
        self._fills_since_snapshot = len(fills)
        if self._fills_since_snapshot >= SNAPSHOT_EVERY:
            self._housekeeping.set()
        self._open = {str(r["id"]): _Order(dict(r)) for r in loaded.open_orders}
        self._seq = loaded.last_seq
        for symbol in self._symbols():
            quote = self._market.quote(symbol)
            if quote is not None:
                self._portfolio.mark(symbol, quote.ltp)
        self._rewatch()
        for row in loaded.unpublished:
            payload = orjson.loads(row["payload"])
            await self._engine.bus.publish(
                f"account:{aid}:orders", protocol.dumps({"seq": row["seq"], "data": payload})
            )
            self._remember_published(row["id"])
        LOG.info(
            "account %s rebuilt: %d fills folded, %d open orders, seq %d",
            aid,
            len(fills),
            len(self._open),
            self._seq,
        )

    # ------------------------------------------------------------------ loops

    async def _command_loop(self) -> None:
        mailbox = self._handle.mailbox
        while True:
            try:
                command = await mailbox.receive()
            except MailboxClosed:
                return
            # NOTE: the try covers taking the lock too: a restart that cancels the actor
            # while it waits for the lock must still answer the command it received.
            try:
                async with self._lock:
                    await self._handle_command(command)
            except ProtocolError as exc:
                command.reply.fail(exc)
            except StoreError as exc:
                # Nothing in memory changed: state is only updated after a commit.
                LOG.error(
                    "account %s: ledger write failed (SQLSTATE %s)",
                    self._handle.id,
                    exc.sqlstate,
                )
                command.reply.fail(
                    ProtocolError(
                        ErrorCode.DATABASE_UNAVAILABLE,
                        "ledger write failed; nothing was recorded",
                        {"sqlstate": exc.sqlstate},
                    )
                )
                if exc.is_unique_violation and exc.constraint == SEQ_CONSTRAINT:
                    # NOTE: memory is behind the ledger (another node wrote this account's
                    # next seq): every later write would fail the same way. Crash, so the
                    # supervisor restarts the actor and it rebuilds from the ledger.
                    raise LedgerAhead(self._handle.id) from None
            except BaseException:
                # NOTE: the caller must not wait forever on a command that killed the
                # actor; it learns to retry (idempotency keys make that safe).
                command.reply.fail(unavailable())
                raise

    async def _handle_command(self, command: Command) -> None:
        match command:
            case PlaceOrder():
                command.reply.set(await self._place(command))
            case CancelOrder():
                command.reply.set(await self._cancel(command.order_id))
            case RecordTrade():
                command.reply.set(await self._record_trade(command))
            case GetPositions():
                command.reply.set([p.to_wire() for p in self._portfolio.positions()])
            case GetPnl():
                command.reply.set(self._portfolio.pnl().to_wire())
            case GetOrders():
                command.reply.set(await self._orders(command))
            case _:  # pragma: no cover - the Command union is closed
                raise ProtocolError(ErrorCode.INTERNAL, f"unknown command {command!r}")

    async def _quote_loop(self) -> None:
        while True:
            symbol, quote = await self._quotes.receive()
            async with self._lock:
                if self._portfolio.mark(symbol, quote.ltp) is not None:
                    self._dirty_views.set()
                await self._match_limits(symbol, quote)

    # ------------------------------------------------------------------ commands

    async def _place(self, cmd: PlaceOrder) -> dict[str, object]:
        req = cmd.request
        aid = self._handle.id
        if cmd.idempotency_key is not None:
            existing = await self._engine.store.fetchrow(
                ledger.FIND_IDEMPOTENT, aid, cmd.idempotency_key
            )
            if existing is not None:
                if existing["request_hash"] != cmd.request_hash:
                    raise ProtocolError(
                        ErrorCode.IDEMPOTENCY_CONFLICT,
                        "Idempotency-Key already used with another request",
                    )
                return order_wire(existing)
        if self._handle.halted:
            self._m_orders.labels("halted").inc()
            raise ProtocolError(ErrorCode.ACCOUNT_HALTED, "account is halted", {"account": aid})
        fill_price: Decimal | None = None
        if req.type == "market":
            fill_price = self._market_price(req)
        now = self._engine.clock()
        order: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "account_id": aid,
            "symbol": req.symbol,
            "side": req.side,
            "quantity": req.quantity,
            "type": req.type,
            "price": req.price,
            "status": "open",
            "filled_quantity": 0,
            "avg_fill_price": None,
            "tag": req.tag,
            "idempotency_key": cmd.idempotency_key,
            "request_hash": cmd.request_hash,
            "created_ts": now,
            "updated_ts": now,
        }
        change = Change(aid, now, new_order=dict(order))
        self._event(change, order["id"], "order", {"kind": "order", "order": order_wire(order)})
        fill = None
        if fill_price is not None:
            fill, filled = self._fill(change, order, fill_price, now)
            order = filled
        await self._commit(change)
        if fill is not None:
            self._apply_fill(fill, change)
        else:
            self._open[order["id"]] = _Order(order)
            self._rewatch()
        self._m_orders.labels("filled" if fill is not None else "accepted").inc()
        return order_wire(order)

    def _market_price(self, req: OrderRequest) -> Decimal:
        quote = self._market.quote(req.symbol)
        if quote is None:
            self._m_orders.labels("no_market_data").inc()
            raise ProtocolError(
                ErrorCode.NO_MARKET_DATA,
                "no market data to fill a market order",
                {"symbol": req.symbol},
            )
        side_price = quote.ask if req.side == "buy" else quote.bid
        return side_price if side_price is not None else quote.ltp

    def _fill(
        self,
        change: Change,
        order: dict[str, Any],
        price: Decimal,
        now: int,
        fee: Decimal = PAPER_FEE,
    ) -> tuple[Fill, dict[str, Any]]:
        # Paper execution fills the whole order at one price.
        filled = dict(
            order,
            status="filled",
            filled_quantity=order["quantity"],
            avg_fill_price=price,
            updated_ts=now,
        )
        if change.new_order is not None and change.new_order["id"] == order["id"]:
            change.new_order = dict(filled)
        else:
            change.order_update = filled
        change.fill = {
            "order_id": order["id"],
            "symbol": order["symbol"],
            "side": order["side"],
            "quantity": order["quantity"],
            "price": price,
            "fee": fee,
            "ts": now,
            "external_id": None,
        }
        self._event(change, order["id"], "fill", {"kind": "fill", "fill": _fill_wire(change.fill)})
        self._event(change, order["id"], "order", {"kind": "order", "order": order_wire(filled)})
        fill = Fill(
            symbol=order["symbol"],
            side=order["side"],
            qty=int(order["quantity"]),
            price=price,
            fee=fee,
            ts=now,
        )
        return fill, filled

    async def _cancel(self, order_id: str) -> dict[str, object]:
        held = self._open.get(order_id)
        if held is None:
            row = await self._engine.store.fetchrow(
                ledger.GET_ORDER, self._handle.id, _uuid(order_id)
            )
            if row is None:
                raise ProtocolError(ErrorCode.NOT_FOUND, "no such order", {"order": order_id})
            raise ProtocolError(
                ErrorCode.CONFLICT, f"order is {row['status']}, not open", {"order": order_id}
            )
        now = self._engine.clock()
        cancelled = dict(held.row, status="cancelled", updated_ts=now)
        change = Change(self._handle.id, now, order_update=cancelled)
        self._event(change, order_id, "order", {"kind": "order", "order": order_wire(cancelled)})
        await self._commit(change)
        del self._open[order_id]
        self._rewatch()
        self._m_orders.labels("cancelled").inc()
        return order_wire(cancelled)

    async def _record_trade(self, cmd: RecordTrade) -> dict[str, object]:
        t = cmd.trade
        aid = self._handle.id
        existing = await self._engine.store.fetchrow(ledger.FIND_EXTERNAL, aid, t.external_id)
        if existing is not None:
            same = (
                existing["symbol"],
                existing["side"],
                int(existing["quantity"]),
                existing["price"],
                existing["fee"],
            ) == (t.symbol, t.side, t.quantity, t.price, t.fees)
            if not same:
                raise ProtocolError(
                    ErrorCode.DUPLICATE,
                    "external_id already recorded with other values",
                    {"external_id": t.external_id},
                )
            return dict(_fill_wire(dict(existing)), id=existing["id"])
        now = self._engine.clock()
        change = Change(aid, now)
        change.fill = {
            "order_id": None,
            "symbol": t.symbol,
            "side": t.side,
            "quantity": t.quantity,
            "price": t.price,
            "fee": t.fees,
            "ts": t.ts,
            "external_id": t.external_id,
        }
        self._event(change, None, "fill", {"kind": "fill", "fill": _fill_wire(change.fill)})
        await self._commit(change)
        fill = Fill(
            symbol=t.symbol, side=t.side, qty=t.quantity, price=t.price, fee=t.fees, ts=t.ts
        )
        self._apply_fill(fill, change)
        self._m_orders.labels("trade").inc()
        return dict(_fill_wire(change.fill), id=change.fill_id)

    async def _orders(self, cmd: GetOrders) -> object:
        aid = self._handle.id
        if cmd.order_id is not None:
            row = await self._engine.store.fetchrow(ledger.GET_ORDER, aid, _uuid(cmd.order_id))
            if row is None:
                raise ProtocolError(ErrorCode.NOT_FOUND, "no such order", {"order": cmd.order_id})
            return order_wire(row)
        rows = await self._engine.store.fetch(ledger.LIST_ORDERS, aid, cmd.limit)
        return [order_wire(r) for r in rows]

    # ------------------------------------------------------------------ matching

    async def _match_limits(self, symbol: str, quote: Quote) -> None:
        for order in [o for o in self._open.values() if o.row["symbol"] == symbol]:
            row = order.row
            limit = row["price"]
            crossed = quote.ltp <= limit if row["side"] == "buy" else quote.ltp >= limit
            if not crossed:
                continue
            now = self._engine.clock()
            change = Change(self._handle.id, now)
            # A resting limit order fills at its own price when the market trades through it.
            fill, _filled = self._fill(change, row, limit, now)
            await self._commit(change)
            del self._open[order.id]
            self._apply_fill(fill, change)
            self._m_orders.labels("filled").inc()
        self._rewatch()

    # ------------------------------------------------------------------ ledger

    def _event(
        self, change: Change, order_id: str | None, kind: str, payload: dict[str, object]
    ) -> None:
        seq = self._seq + len(change.events) + 1
        change.events.append((seq, order_id, kind, payload))

    async def _commit(self, change: Change) -> None:
        async def unit(conn: Connection) -> None:
            await ledger.write(conn, change)

        # One statement, hence one transaction of its own: no BEGIN/COMMIT round trips.
        # It also marks the outbox rows published since the last write.
        change.mark_published, self._published = self._published, []
        try:
            await self._engine.store.run_unit(unit, transaction=False)
        except BaseException:
            self._published = change.mark_published + self._published  # rolled back
            raise
        # Committed: from here on the change is the truth, in memory and on the bus.
        self._seq += len(change.events)
        channel = f"account:{self._handle.id}:orders"
        await self._engine.bus.publish_many(
            [
                (channel, protocol.dumps({"seq": seq, "data": payload}))
                for seq, _, _, payload in change.events
            ]
        )
        for outbox_id in change.outbox_ids:
            self._remember_published(outbox_id)

    def _apply_fill(self, fill: Fill, change: Change) -> None:
        self._portfolio.apply(fill)
        quote = self._market.quote(fill.symbol)
        if quote is not None:
            self._portfolio.mark(fill.symbol, quote.ltp)
        if change.fill_id is not None:
            self._last_fill_id = change.fill_id
        self._fills_since_snapshot += 1
        if self._fills_since_snapshot >= SNAPSHOT_EVERY:
            self._housekeeping.set()
        self._rewatch()
        self._dirty_views.set()

    async def snapshot(self) -> None:
        """Write the exact portfolio as the rebuild's starting point."""
        state = protocol.dumps(self._portfolio.snapshot()).decode()
        await self._engine.store.execute(
            ledger.UPSERT_SNAPSHOT,
            self._handle.id,
            self._last_fill_id,
            state,
            self._engine.clock(),
        )
        self._fills_since_snapshot = 0

    def _remember_published(self, outbox_id: int) -> None:
        if not self._published:
            self._published_since = trio.current_time()
            self._housekeeping.set()
        self._published.append(outbox_id)

    async def _outbox_marker(self) -> None:
        # Event-driven: an idle account costs nothing (no periodic wake-up per account).
        while True:
            await self._housekeeping.wait()
            self._housekeeping = trio.Event()
            if self._published:
                await trio.sleep_until(self._published_since + OUTBOX_MARK_AFTER)
                # The next write may have marked them meanwhile, and new ones come with
                # their own wake-up; mark only what has waited its full delay.
                if self._published and (
                    trio.current_time() - self._published_since >= OUTBOX_MARK_AFTER
                ):
                    await self._mark_published()
            if self._fills_since_snapshot >= SNAPSHOT_EVERY:
                async with self._lock:
                    await self.snapshot()

    async def _mark_published(self) -> None:
        ids, self._published = self._published, []

        async def unit(conn: Connection) -> None:
            await ledger.mark_published(conn, ids, self._engine.clock())

        try:
            await self._engine.store.run_unit(unit, transaction=False)
        except DatabaseUnavailable:
            # Transient (pool exhausted, server away): keep them and retry; a restart
            # would only republish them. A failing statement still crashes the actor.
            self._published = ids + self._published
            if not self._marks_failing:
                LOG.warning("account %s: outbox marking deferred", self._handle.id)
            self._marks_failing = True
            await trio.sleep(OUTBOX_RETRY)
            self._housekeeping.set()
        else:
            self._marks_failing = False

    async def _view_publisher(self) -> None:
        aid = self._handle.id
        bus = self._engine.bus
        while True:
            await self._dirty_views.wait()
            self._dirty_views = trio.Event()
            positions = f"account:{aid}:positions"
            messages = [
                (positions, protocol.dumps(v.to_wire())) for v in self._portfolio.positions()
            ]
            messages.append((f"account:{aid}:pnl", protocol.dumps(self._portfolio.pnl().to_wire())))
            await bus.publish_many(messages)
            await trio.sleep(VIEW_THROTTLE)

    # ------------------------------------------------------------------ watching quotes

    def _symbols(self) -> set[str]:
        # Every fill re-checks the watch: the open symbols, not the rounded views.
        return self._portfolio.open_symbols() | {o.row["symbol"] for o in self._open.values()}

    def _rewatch(self) -> None:
        symbols = frozenset(self._symbols())
        if self._watch is not None and self._watch.symbols == symbols:
            return
        if self._watch is not None:
            self._market.unwatch(self._watch)
        self._watch = self._market.watch(symbols, self._quotes) if symbols else None


def _fill_wire(fill: dict[str, Any]) -> dict[str, object]:
    return {
        "id": fill.get("id"),
        "order_id": None if fill.get("order_id") is None else str(fill["order_id"]),
        "symbol": fill["symbol"],
        "side": fill["side"],
        "quantity": str(int(fill["quantity"])),
        "price": Decimal(fill["price"]).normalize(),
        "fee": Decimal(fill.get("fee", 0)).normalize(),
        "ts": fill["ts"],
        "external_id": fill.get("external_id"),
    }


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ProtocolError(ErrorCode.NOT_FOUND, "no such order", {"order": value[:64]}) from None
