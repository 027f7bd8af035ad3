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
# One change, ONE statement: one round trip to the server instead of one per row (plus
# BEGIN and COMMIT). PostgreSQL runs a statement as its own transaction, and every
# data-modifying CTE of it commits or rolls back together; the foreign keys (an event's
# order inserted by the same statement) are checked at its end. Absent parts are NULL
# and write no row. The fill event's payload gets the new fill id (jsonb_set), as the
# event published after the commit does. Outbox rows published after the previous change
# are marked here too.
WRITE_CHANGE: Final = """
WITH new_order AS (
    INSERT INTO orders (id, account_id, symbol, side, quantity, type, price, status,
        filled_quantity, avg_fill_price, tag, idempotency_key, request_hash, created_ts,
        updated_ts)
    SELECT $4::uuid, $1::text, $5::text, $6::text, $7::numeric, $8::text, $9::numeric,
        $10::text, $11::numeric, $12::numeric, $13::text, $14::text, $15::text, $16::bigint,
        $17::bigint
    WHERE $4::uuid IS NOT NULL
), order_update AS (
    UPDATE orders SET status = $19::text, filled_quantity = $20::numeric,
        avg_fill_price = $21::numeric, updated_ts = $22::bigint
    WHERE id = $18::uuid AND account_id = $1::text
), fill AS (
    INSERT INTO fills (account_id, order_id, symbol, side, quantity, price, fee, ts,
        external_id)
    SELECT $1::text, $24::uuid, $25::text, $26::text, $27::numeric, $28::numeric,
        $29::numeric, $30::bigint, $31::text
    WHERE $23::boolean
    RETURNING id
), event AS (
    SELECT e.seq, e.order_id, e.kind,
        CASE WHEN e.kind = 'fill' AND fill.id IS NOT NULL
            THEN jsonb_set(e.payload::jsonb, '{fill,id}', to_jsonb(fill.id))
            ELSE e.payload::jsonb
        END AS payload
    FROM unnest($32::bigint[], $33::uuid[], $34::text[], $35::text[])
        AS e (seq, order_id, kind, payload)
    LEFT JOIN fill ON true
), order_event AS (
    INSERT INTO order_events (account_id, seq, order_id, kind, payload, ts)
    SELECT $1::text, seq, order_id, kind, payload, $2::bigint FROM event
), box AS (
    INSERT INTO outbox (account_id, channel, seq, payload, created_ts)
    SELECT $1::text, $3::text, seq, payload, $2::bigint FROM event ORDER BY seq
    RETURNING id, seq
), mark AS (
    UPDATE outbox SET published_ts = $2::bigint WHERE id = ANY($36::bigint[])
)
SELECT (SELECT id FROM fill) AS fill_id, ARRAY(SELECT id FROM box ORDER BY seq) AS outbox_ids
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
    # outbox rows published since the last write, marked by this one:
    mark_published: list[int] = field(default_factory=list)
    # filled in by write():
    fill_id: int | None = None
    outbox_ids: list[int] = field(default_factory=list)


async def write(conn: Connection, change: Change) -> None:
    """Write ``change`` in one statement (its own transaction: run it outside another one
    or inside; either way all its rows commit together or none do).

    Sets ``change.fill_id`` and ``change.outbox_ids`` (in event order), and the id of the
    fill in the payload of the fill event.
    """
    a = change.account_id
    o = change.new_order or {}
    u = change.order_update or {}
    f = change.fill or {}
    events = change.events
    row = await conn.fetchrow(
        WRITE_CHANGE,
        a,
        change.ts,
        f"account:{a}:orders",
        # new order
        _uuid_or_none(o.get("id")),
        o.get("symbol"),
        o.get("side"),
        o.get("quantity"),
        o.get("type"),
        o.get("price"),
        o.get("status"),
        o.get("filled_quantity"),
        o.get("avg_fill_price"),
        o.get("tag"),
        o.get("idempotency_key"),
        o.get("request_hash"),
        o.get("created_ts"),
        o.get("updated_ts"),
        # order update
        _uuid_or_none(u.get("id")),
        u.get("status"),
        u.get("filled_quantity"),
        u.get("avg_fill_price"),
        u.get("updated_ts"),
        # fill
        change.fill is not None,
        _uuid_or_none(f.get("order_id")),
        f.get("symbol"),
        f.get("side"),
        f.get("quantity"),
        f.get("price"),
        f.get("fee"),
        f.get("ts"),
        f.get("external_id"),
        # events (and their outbox rows)
        [seq for seq, _, _, _ in events],
        [_uuid_or_none(oid) for _, oid, _, _ in events],
        [kind for _, _, kind, _ in events],
        [protocol.dumps(payload).decode() for _, _, _, payload in events],
        # outbox rows published since the last write
        change.mark_published,
    )
    change.fill_id = row["fill_id"]
    change.outbox_ids = list(row["outbox_ids"])
    if change.fill_id is not None:
        for _, _, kind, payload in events:
            fill_obj = payload.get("fill")
            if kind == "fill" and isinstance(fill_obj, dict):
                fill_obj["id"] = change.fill_id


def _uuid_or_none(value: object) -> uuid.UUID | None:
    return None if value is None else uuid.UUID(str(value))


async def mark_published(conn: Connection, ids: Sequence[int], ts: int) -> None:
    """Mark outbox rows as published."""
    await conn.execute(MARK_PUBLISHED, list(ids), ts)
