"""The audit log of control commands (table ``audit_log``), written and listed.

Every statement is a constant with positional parameters: nothing a client sends is
ever part of the SQL text.
"""

from __future__ import annotations

from typing import Final

import orjson

from engine.store import Store

MAX_ERROR: Final = 500  # characters of an error message kept in the log
INSERT_AUDIT: Final = (
    "INSERT INTO audit_log (ts, sub, cmd, args, ok, error) VALUES ($1, $2, $3, $4::jsonb, $5, $6)"
)
LIST_AUDIT: Final = (
    "SELECT id, ts, sub, cmd, args::text AS args, ok, error FROM audit_log "
    "ORDER BY ts DESC, id DESC LIMIT $1 OFFSET $2"
)


async def record(
    store: Store,
    *,
    ts: int,
    sub: str,
    cmd: str,
    args: dict[str, object],
    ok: bool,
    error: str | None,
) -> None:
    """Write one audit row (who, what, with which arguments, and the outcome)."""
    await store.execute(
        INSERT_AUDIT,
        ts,
        sub[:200],
        cmd[:64],
        orjson.dumps(args).decode(),
        ok,
        None if error is None else error[:MAX_ERROR],
    )


async def entries(store: Store, limit: int, offset: int) -> list[dict[str, object]]:
    """Return audit rows newest first: ``{id, ts, sub, cmd, args, ok, error}``."""
    rows = await store.fetch(LIST_AUDIT, limit, offset)
    return [
        {
            "id": row["id"],
            "ts": row["ts"],
            "sub": row["sub"],
            "cmd": row["cmd"],
            "args": orjson.loads(row["args"]),
            "ok": row["ok"],
            "error": row["error"],
        }
        for row in rows
    ]
