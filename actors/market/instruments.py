"""The instrument master: every known symbol with its lot and tick size.

The market actor owns it; other actors read it through :class:`InstrumentView`.
Upserts are written to PostgreSQL first and only then applied in memory, so the
master never knows an instrument the database does not.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Final, Protocol

from engine.store import Connection, Store
from protocol import Instrument

UPSERT_SQL: Final = """
INSERT INTO instruments
    (symbol, kind, underlying, expiry, strike, option_type, lot_size, tick_size, updated_ts)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (symbol) DO UPDATE SET
    kind = EXCLUDED.kind, underlying = EXCLUDED.underlying, expiry = EXCLUDED.expiry,
    strike = EXCLUDED.strike, option_type = EXCLUDED.option_type,
    lot_size = EXCLUDED.lot_size, tick_size = EXCLUDED.tick_size,
    updated_ts = EXCLUDED.updated_ts
"""
SELECT_SQL: Final = (
    "SELECT symbol, kind, underlying, expiry, strike, option_type, lot_size, tick_size"
    " FROM instruments"
)


class InstrumentView(Protocol):
    """Read-only access to the master (what accounts and the gateway get)."""

    def get(self, symbol: str) -> Instrument | None: ...
    def __len__(self) -> int: ...


def _row_instrument(row: Mapping[str, Any]) -> Instrument:
    strike = row["strike"]
    return Instrument(
        symbol=row["symbol"],
        kind=row["kind"],
        underlying=row["underlying"],
        expiry=row["expiry"],
        strike=strike.normalize() if isinstance(strike, Decimal) else None,
        option_type=row["option_type"],
        lot_size=row["lot_size"],
        tick_size=Decimal(row["tick_size"]).normalize(),
    )


def chain_key(inst: Instrument) -> tuple[str, dt.date] | None:
    """Return the (underlying, expiry) option chain an instrument belongs to, if an option."""
    if inst.kind != "option" or inst.underlying is None or inst.expiry is None:
        return None
    return inst.underlying, inst.expiry


class InstrumentMaster:
    """Symbols → instruments, persisted in the ``instruments`` table."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._by_symbol: dict[str, Instrument] = {}

    def get(self, symbol: str) -> Instrument | None:
        """Return the instrument of ``symbol`` or None."""
        return self._by_symbol.get(symbol)

    def __len__(self) -> int:
        return len(self._by_symbol)

    def all(self) -> list[Instrument]:
        """Return every instrument, sorted by symbol."""
        return [self._by_symbol[s] for s in sorted(self._by_symbol)]

    async def load(self) -> int:
        """Read the whole master from the database; return how many instruments."""
        rows = await self._store.fetch(SELECT_SQL)
        self._by_symbol = {row["symbol"]: _row_instrument(row) for row in rows}
        return len(self._by_symbol)

    async def upsert(self, instruments: Sequence[Instrument], now_ms: int) -> list[Instrument]:
        """Persist ``instruments`` (one transaction), then apply them; return those that changed.

        Raises:
            DatabaseUnavailable, StoreError: nothing was applied.
        """
        if not instruments:
            return []
        args = [
            (
                i.symbol,
                i.kind,
                i.underlying,
                i.expiry,
                i.strike,
                i.option_type,
                i.lot_size,
                i.tick_size,
                now_ms,
            )
            for i in instruments
        ]

        async def unit(conn: Connection) -> None:
            await conn.executemany(UPSERT_SQL, args)

        await self._store.run_unit(unit)
        changed = [i for i in instruments if self._by_symbol.get(i.symbol) != i]
        self._apply(instruments)
        return changed

    def _apply(self, instruments: Iterable[Instrument]) -> None:
        for inst in instruments:
            self._by_symbol[inst.symbol] = inst
