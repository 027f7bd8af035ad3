"""Ticks and instruments as the ticker service sends them, validated at the boundary.

A batch is validated tick by tick: the valid ticks go on, each invalid one is
reported with its index, field and a stable reason (also the metric label).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from ._decimal import DecimalFormatError, parse_count, parse_decimal

SYMBOL_RE: Final = re.compile(r"^[A-Z0-9][A-Z0-9&_.-]{0,39}$")
MAX_BATCH: Final = 10_000  # ticks in one frame / request
TICK_FIELDS: Final = frozenset(
    {"symbol", "ltp", "ts", "bid", "ask", "bid_qty", "ask_qty", "volume", "oi"}
)
# A tick may be at most this old or this far ahead of the receiver's clock.
DEFAULT_MAX_AGE_MS: Final = 24 * 3600 * 1000
DEFAULT_MAX_AHEAD_MS: Final = 60 * 1000


@dataclass(frozen=True, slots=True)
class Tick:
    """One validated market-data update. Prices are exact Decimals."""

    symbol: str
    ltp: Decimal
    ts: int
    bid: Decimal | None = None
    ask: Decimal | None = None
    bid_qty: int | None = None
    ask_qty: int | None = None
    volume: int | None = None
    oi: int | None = None

    def to_wire(self) -> dict[str, object]:
        """Return the tick as a wire object (decimal strings, absent fields left out)."""
        out: dict[str, object] = {"symbol": self.symbol, "ltp": self.ltp, "ts": self.ts}
        for name in ("bid", "ask", "bid_qty", "ask_qty", "volume", "oi"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


@dataclass(frozen=True, slots=True)
class TickError:
    """Why one tick of a batch was refused."""

    index: int
    field: str
    reason: str

    def to_wire(self) -> dict[str, object]:
        """Return the error as reported to the publisher."""
        return {"index": self.index, "field": self.field, "reason": self.reason}


class _Invalid(Exception):
    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason


def _price(raw: Mapping[str, object], name: str, *, required: bool) -> Decimal | None:
    if name not in raw or raw[name] is None:
        if required:
            raise _Invalid(name, "missing")
        return None
    try:
        value = parse_decimal(raw[name])
    except DecimalFormatError as exc:
        raise _Invalid(name, exc.reason) from None
    if value <= 0:
        raise _Invalid(name, "not_positive")
    return value


def _count(raw: Mapping[str, object], name: str) -> int | None:
    if name not in raw or raw[name] is None:
        return None
    try:
        return parse_count(raw[name])
    except DecimalFormatError as exc:
        raise _Invalid(name, exc.reason) from None


def parse_symbol(value: object) -> str:
    """Return ``value`` if it is a valid symbol (upper-case NSE style, 1..40 chars).

    Raises:
        ValueError: with reason ``bad_symbol``.
    """
    if not isinstance(value, str) or not SYMBOL_RE.fullmatch(value):
        raise ValueError("bad_symbol")
    return value


def parse_tick(raw: object, *, now_ms: int, max_age_ms: int, max_ahead_ms: int) -> Tick:
    """Validate one wire tick.

    Raises:
        _Invalid: (internal) with the field and reason; see :func:`parse_ticks`.
    """
    if not isinstance(raw, dict):
        raise _Invalid("", "not_object")
    unknown = raw.keys() - TICK_FIELDS
    if unknown:
        raise _Invalid(sorted(unknown)[0], "unknown_field")
    try:
        symbol = parse_symbol(raw.get("symbol"))
    except ValueError:
        raise _Invalid("symbol", "missing" if "symbol" not in raw else "bad_symbol") from None
    ltp = _price(raw, "ltp", required=True)
    if ltp is None:  # pragma: no cover - required=True never returns None
        raise _Invalid("ltp", "missing")
    ts = raw.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, int):
        raise _Invalid("ts", "missing" if ts is None else "not_integer")
    if ts < now_ms - max_age_ms:
        raise _Invalid("ts", "too_old")
    if ts > now_ms + max_ahead_ms:
        raise _Invalid("ts", "in_future")
    bid = _price(raw, "bid", required=False)
    ask = _price(raw, "ask", required=False)
    if bid is not None and ask is not None and bid > ask:
        raise _Invalid("bid", "crossed_quote")
    return Tick(
        symbol,
        ltp,
        ts,
        bid,
        ask,
        _count(raw, "bid_qty"),
        _count(raw, "ask_qty"),
        _count(raw, "volume"),
        _count(raw, "oi"),
    )


def parse_ticks(
    raw: object,
    *,
    now_ms: int,
    max_age_ms: int = DEFAULT_MAX_AGE_MS,
    max_ahead_ms: int = DEFAULT_MAX_AHEAD_MS,
) -> tuple[list[Tick], list[TickError]]:
    """Validate a batch of wire ticks: return the valid ticks and one error per invalid one.

    Args:
        raw: the ``ticks`` list of an ingest frame or request.
        now_ms: the receiver's clock (epoch ms), for the time window.
        max_age_ms: ticks older than this are refused (``too_old``).
        max_ahead_ms: ticks further ahead than this are refused (``in_future``).

    Raises:
        ValueError: ``raw`` is not a list, or longer than ``MAX_BATCH`` — the batch as a
            whole is refused (422).
    """
    if not isinstance(raw, list):
        raise ValueError("ticks must be a list")
    if len(raw) > MAX_BATCH:
        raise ValueError(f"at most {MAX_BATCH} ticks per batch")
    ticks: list[Tick] = []
    errors: list[TickError] = []
    for index, item in enumerate(raw):
        try:
            ticks.append(
                parse_tick(item, now_ms=now_ms, max_age_ms=max_age_ms, max_ahead_ms=max_ahead_ms)
            )
        except _Invalid as exc:
            errors.append(TickError(index, exc.field, exc.reason))
    return ticks, errors


def ticks_to_wire(items: Sequence[Tick]) -> list[dict[str, object]]:
    """Return ticks as wire objects (the inverse of :func:`parse_ticks`)."""
    return [t.to_wire() for t in items]
