"""The account ledger in PostgreSQL: what one state change writes, and the rebuild read.

Every state change of an account is ONE transaction holding the order row, its
order events, the fill (if any) and an outbox row per event. Nothing is
acknowledged before it commits. SQL is parameterised; no identifier comes from input.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

import orjson

import protocol
from engine.store import Connection

from .positions import Fill

LOAD_ACCOUNT: Final = "SELECT status FROM accounts WHERE id = $1"
LOAD_SNAPSHOT: Final = "SELECT last_fill_id, state FROM account_snapshots WHERE account_id = $1"
LOAD_FILLS: Final = (
    "SELECT id, symbol, side, quantity, price, fee, ts FROM fills"
    " WHERE account_id = $1 AND id > $2 ORDER BY id"
)
LOAD_OPEN_ORDERS: Final = (
    "SELECT * FROM orders WHERE account_id = $1 AND status IN ('open', 'partially_filled')"
    " ORDER BY created_ts, id"
)
LOAD_LAST_SEQ: Final = "SELECT coalesce(max(seq), 0) FROM order_events WHERE account_id = $1"
LOAD_UNPUBLISHED: Final = (
    "SELECT id, seq, channel, payload FROM outbox WHERE account_id = $1 AND published_ts IS NULL"
    " ORDER BY id"
)
INSERT_ORDER: Final = """
INSERT INTO orders (id, account_id, symbol, side, quantity, type, price, status,
    filled_quantity, avg_fill_price, tag, idempotency_key, request_hash, created_ts, updated_ts)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
"""
UPDATE_ORDER: Final = """
UPDATE orders SET status = $3, filled_quantity = $4, avg_fill_price = $5, updated_ts = $6
WHERE id = $1 AND account_id = $2
"""
INSERT_FILL: Final = """
INSERT INTO fills (account_id, order_id, symbol, side, quantity, price, fee, ts, external_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id
"""
INSERT_EVENT: Final = """
INSERT INTO order_events (account_id, seq, order_id, kind, payload, ts)
VALUES ($1, $2, $3, $4, $5::jsonb, $6)
"""
INSERT_OUTBOX: Final = """
INSERT INTO outbox (account_id, channel, seq, payload, created_ts)
VALUES ($1, $2, $3, $4::jsonb, $5) RETURNING id
"""
MARK_PUBLISHED: Final = "UPDATE outbox SET published_ts = $2 WHERE id = ANY($1::bigint[])"
FIND_IDEMPOTENT: Final = "SELECT * FROM orders WHERE account_id = $1 AND idempotency_key = $2"
FIND_EXTERNAL: Final = (
    "SELECT id, symbol, side, quantity, price, fee, ts, external_id FROM fills"
    " WHERE account_id = $1 AND external_id = $2"
)
LIST_ORDERS: Final = (
    "SELECT * FROM orders WHERE account_id = $1 ORDER BY created_ts DESC, id DESC LIMIT $2"
)
GET_ORDER: Final = "SELECT * FROM orders WHERE account_id = $1 AND id = $2"
UPSERT_SNAPSHOT: Final = """
INSERT INTO account_snapshots (account_id, last_fill_id, state, created_ts)
VALUES ($1, $2, $3::jsonb, $4)
ON CONFLICT (account_id) DO UPDATE SET
    last_fill_id = EXCLUDED.last_fill_id, state = EXCLUDED.state, created_ts = EXCLUDED.created_ts
"""


def order_wire(row: Any) -> dict[str, object]:
    """Return the PROTOCOL.md order object of an ``orders`` row (or an equal mapping)."""
    avg = row["avg_fill_price"]
    price = row["price"]
    return {
        "id": str(row["id"]),
        "account": row["account_id"],
        "symbol": row["symbol"],
        "side": row["side"],
        "quantity": protocol_int(row["quantity"]),
        "type": row["type"],
        "price": None if price is None else price.normalize(),
        "status": row["status"],
        "filled_quantity": protocol_int(row["filled_quantity"]),
        "avg_fill_price": None if avg is None else avg.normalize(),
        "tag": row["tag"],
        "created_ts": row["created_ts"],
        "updated_ts": row["updated_ts"],
    }


def protocol_int(value: Decimal | int) -> str:
    """Return a whole quantity as a decimal string without exponent or fraction."""
    return str(int(value))


def fill_from_row(row: Any) -> Fill:
    """Return the :class:`Fill` of a ``fills`` row."""
    return Fill(
        symbol=row["symbol"],
        side=row["side"],
        qty=int(row["quantity"]),
        price=row["price"],
        fee=row["fee"],
        ts=row["ts"],
    )


@dataclass(slots=True)
class Loaded:
    """What the rebuild reads from the ledger."""

    status: str
    snapshot: dict[str, object] | None
    snapshot_fill_id: int
    fills: list[Any]
    open_orders: list[Any]
    last_seq: int
    unpublished: list[Any]


async def load(conn: Connection, account_id: str) -> Loaded | None:
    """Read everything the actor needs to rebuild (None: no such account)."""
    status = await conn.fetchval(LOAD_ACCOUNT, account_id)
    if status is None:
        return None
    snap = await conn.fetchrow(LOAD_SNAPSHOT, account_id)
    last_fill_id = 0 if snap is None else snap["last_fill_id"]
    state = None if snap is None else orjson.loads(snap["state"])
    return Loaded(
        status=status,
        snapshot=state,
        snapshot_fill_id=last_fill_id,
        fills=await conn.fetch(LOAD_FILLS, account_id, last_fill_id),
        open_orders=await conn.fetch(LOAD_OPEN_ORDERS, account_id),
        last_seq=await conn.fetchval(LOAD_LAST_SEQ, account_id),
        unpublished=await conn.fetch(LOAD_UNPUBLISHED, account_id),
    )


@dataclass(slots=True)
class Change:
    """One atomic ledger change: rows to write and events to publish after commit."""

    account_id: str
    ts: int
    new_order: dict[str, object] | None = None
    order_update: dict[str, object] | None = None
    fill: dict[str, object] | None = None
    events: list[tuple[int, str | None, str, dict[str, object]]] = field(default_factory=list)
    # filled in by write():
    fill_id: int | None = None
    outbox_ids: list[int] = field(default_factory=list)


async def write(conn: Connection, change: Change) -> None:
    """Write ``change`` (the caller runs this inside one transaction)."""
    a = change.account_id
    if change.new_order is not None:
        o = change.new_order
        await conn.execute(
            INSERT_ORDER,
            uuid.UUID(str(o["id"])),
            a,
            o["symbol"],
            o["side"],
            o["quantity"],
            o["type"],
            o["price"],
            o["status"],
            o["filled_quantity"],
            o["avg_fill_price"],
            o["tag"],
            o["idempotency_key"],
            o["request_hash"],
            o["created_ts"],
            o["updated_ts"],
        )
    if change.order_update is not None:
        u = change.order_update
        await conn.execute(
            UPDATE_ORDER,
            uuid.UUID(str(u["id"])),
            a,
            u["status"],
            u["filled_quantity"],
            u["avg_fill_price"],
            u["updated_ts"],
        )
    if change.fill is not None:
        f = change.fill
        order_id = f["order_id"]
        change.fill_id = await conn.fetchval(
            INSERT_FILL,
            a,
            None if order_id is None else uuid.UUID(str(order_id)),
            f["symbol"],
            f["side"],
            f["quantity"],
            f["price"],
            f["fee"],
            f["ts"],
            f["external_id"],
        )
    for seq, order_id, kind, payload in change.events:
        if kind == "fill" and change.fill_id is not None:
            fill_obj = payload["fill"]
            assert isinstance(fill_obj, dict)  # noqa: S101 - built by the actor
            fill_obj["id"] = change.fill_id
        body = protocol.dumps(payload).decode()
        await conn.execute(
            INSERT_EVENT,
            a,
            seq,
            None if order_id is None else uuid.UUID(order_id),
            kind,
            body,
            change.ts,
        )
        outbox_id = await conn.fetchval(
            INSERT_OUTBOX, a, f"account:{a}:orders", seq, body, change.ts
        )
        change.outbox_ids.append(outbox_id)


async def mark_published(conn: Connection, ids: Sequence[int], ts: int) -> None:
    """Mark outbox rows as published."""
    await conn.execute(MARK_PUBLISHED, list(ids), ts)
