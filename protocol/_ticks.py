"""Ticks and instruments as the ticker service sends them, validated at the boundary.

A batch is validated tick by tick: the valid ticks go on, each invalid one is
reported with its index, field and a stable reason (also the metric label).

Speed: :func:`parse_ticks` first tries a fast path that accepts only the common,
plainly valid tick (exact ``dict``/``str``/``int`` types, decimal strings or ints in
range, ``ts`` in the window) and builds the very same :class:`Tick`; anything else goes
through :func:`parse_tick`, which alone decides the error. The fast path therefore
accepts a subset of what :func:`parse_tick` accepts and never reports an error itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from ._decimal import (
    MAX_COUNT_DIGITS,
    MAX_JSON_INT,
    DecimalFormatError,
    parse_count,
    parse_decimal,
)

SYMBOL_RE: Final = re.compile(r"^[A-Z0-9][A-Z0-9&_.-]{0,39}$")
MAX_BATCH: Final = 10_000  # ticks in one frame / request
TICK_FIELDS: Final = frozenset(
    {"symbol", "ltp", "ts", "bid", "ask", "bid_qty", "ask_qty", "volume", "oi"}
)
# A tick may be at most this old or this far ahead of the receiver's clock.
DEFAULT_MAX_AGE_MS: Final = 24 * 3600 * 1000
DEFAULT_MAX_AHEAD_MS: Final = 60 * 1000
# The fast path's decimal: _decimal's plain notation without the minus sign (a
# negative or zero price is refused, so it always takes the slow path).
_UNSIGNED_DECIMAL_RE: Final = re.compile(r"(?:0|[1-9][0-9]{0,13})(?:\.[0-9]{1,8})?")
_COUNT_LIMIT: Final = 10**MAX_COUNT_DIGITS


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


# NOTE: a frozen dataclass's __init__ sets each field through object.__setattr__; the
# fast path builds the identical (equal, hashable, still frozen) Tick by writing the
# slots through their descriptors, in about half the time. A field added to Tick and
# left out here fails loudly on first access.
_new_object: Final = object.__new__
_SET_SYMBOL: Final = Tick.__dict__["symbol"].__set__
_SET_LTP: Final = Tick.__dict__["ltp"].__set__
_SET_TS: Final = Tick.__dict__["ts"].__set__
_SET_BID: Final = Tick.__dict__["bid"].__set__
_SET_ASK: Final = Tick.__dict__["ask"].__set__
_SET_BID_QTY: Final = Tick.__dict__["bid_qty"].__set__
_SET_ASK_QTY: Final = Tick.__dict__["ask_qty"].__set__
_SET_VOLUME: Final = Tick.__dict__["volume"].__set__
_SET_OI: Final = Tick.__dict__["oi"].__set__


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
    oldest, newest = now_ms - max_age_ms, now_ms + max_ahead_ms
    # Per batch: symbols and price strings repeat, so each distinct one is checked once.
    symbols: set[str] = set()
    prices: dict[str, Decimal] = {}
    append = ticks.append
    for index, item in enumerate(raw):
        # Fast path, inlined for speed: the plainly valid tick only (see the module
        # docstring). Anything it is not sure of falls through to parse_tick.
        if type(item) is dict and TICK_FIELDS.issuperset(item):
            get = item.get
            symbol, ltp, ts, bid, ask = get("symbol"), get("ltp"), get("ts"), get("bid"), get("ask")
            bid_qty, ask_qty, volume, oi = get("bid_qty"), get("ask_qty"), get("volume"), get("oi")
            if (
                type(symbol) is str
                and (symbol in symbols or _new_symbol(symbol, symbols))
                and type(ts) is int
                and oldest <= ts <= newest
                and (ltp := _fast_price(ltp, prices)) is not None
                and (bid is None or (bid := _fast_price(bid, prices)) is not None)
                and (ask is None or (ask := _fast_price(ask, prices)) is not None)
                and (bid is None or ask is None or bid <= ask)
                and (bid_qty is None or (type(bid_qty) is int and 0 <= bid_qty < _COUNT_LIMIT))
                and (ask_qty is None or (type(ask_qty) is int and 0 <= ask_qty < _COUNT_LIMIT))
                and (volume is None or (type(volume) is int and 0 <= volume < _COUNT_LIMIT))
                and (oi is None or (type(oi) is int and 0 <= oi < _COUNT_LIMIT))
            ):
                tick = _new_object(Tick)
                _SET_SYMBOL(tick, symbol)
                _SET_LTP(tick, ltp)
                _SET_TS(tick, ts)
                _SET_BID(tick, bid)
                _SET_ASK(tick, ask)
                _SET_BID_QTY(tick, bid_qty)
                _SET_ASK_QTY(tick, ask_qty)
                _SET_VOLUME(tick, volume)
                _SET_OI(tick, oi)
                append(tick)
                continue
        try:
            append(
                parse_tick(item, now_ms=now_ms, max_age_ms=max_age_ms, max_ahead_ms=max_ahead_ms)
            )
        except _Invalid as exc:
            errors.append(TickError(index, exc.field, exc.reason))
    return ticks, errors


def _new_symbol(symbol: str, seen: set[str]) -> bool:
    # Fast path: a symbol not yet seen in this batch.
    if SYMBOL_RE.fullmatch(symbol):
        seen.add(symbol)
        return True
    return False


def _fast_price(value: object, seen: dict[str, Decimal]) -> Decimal | None:
    # Fast path: a positive price, or None when parse_tick must decide.
    if type(value) is str:
        price = seen.get(value)
        if price is None and _UNSIGNED_DECIMAL_RE.fullmatch(value):
            price = Decimal(value)
            if not price:  # zero: refused as not_positive by parse_tick
                return None
            seen[value] = price
        return price
    if type(value) is int and 0 < value < MAX_JSON_INT:
        return Decimal(value)
    return None


def ticks_to_wire(items: Sequence[Tick]) -> list[dict[str, object]]:
    """Return ticks as wire objects (the inverse of :func:`parse_ticks`)."""
    return [t.to_wire() for t in items]
