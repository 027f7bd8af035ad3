"""Order requests and broker trades as clients send them, validated at the boundary.

Lot and tick multiples need the instrument master, so they are checked by the
gateway against it; everything that needs only the request is checked here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal

from ._decimal import DecimalFormatError, parse_count, parse_decimal
from ._ticks import parse_symbol

Side = Literal["buy", "sell"]
OrderType = Literal["market", "limit"]
ORDER_FIELDS: Final = frozenset({"symbol", "side", "quantity", "type", "price", "tag"})
TRADE_FIELDS: Final = frozenset(
    {"symbol", "side", "quantity", "price", "fees", "ts", "external_id"}
)
TAG_RE: Final = re.compile(r"[A-Za-z0-9 _.:/-]{1,64}")
EXTERNAL_ID_RE: Final = re.compile(r"[A-Za-z0-9_.:/-]{1,128}")


class RequestError(ValueError):
    """Why a request was refused: ``field`` and a stable ``reason``."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

    def to_wire(self) -> dict[str, object]:
        """Return the error as listed in a 422's details."""
        return {"loc": [self.field], "msg": self.reason, "type": self.reason}


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """A validated order request."""

    symbol: str
    side: Side
    quantity: int
    type: OrderType
    price: Decimal | None
    tag: str | None


@dataclass(frozen=True, slots=True)
class TradeRequest:
    """A validated broker trade; the broker's price and quantity are authoritative."""

    symbol: str
    side: Side
    quantity: int
    price: Decimal
    fees: Decimal
    ts: int
    external_id: str


def _object(raw: object, allowed: frozenset[str]) -> dict[str, object]:
    if not isinstance(raw, dict):
        raise RequestError("", "not_object")
    unknown = sorted(raw.keys() - allowed)
    if unknown:
        raise RequestError(unknown[0], "unknown_field")
    return raw


def _symbol(raw: dict[str, object]) -> str:
    if raw.get("symbol") is None:
        raise RequestError("symbol", "missing")
    try:
        return parse_symbol(raw["symbol"])
    except ValueError:
        raise RequestError("symbol", "bad_symbol") from None


def _side(raw: dict[str, object]) -> Side:
    side = raw.get("side")
    if side is None:
        raise RequestError("side", "missing")
    if side not in ("buy", "sell"):
        raise RequestError("side", "bad_side")
    return side


def _quantity(raw: dict[str, object]) -> int:
    if raw.get("quantity") is None:
        raise RequestError("quantity", "missing")
    try:
        qty = parse_count(raw["quantity"])
    except DecimalFormatError as exc:
        raise RequestError("quantity", exc.reason) from None
    if qty == 0:
        raise RequestError("quantity", "not_positive")
    return qty


def _price(raw: dict[str, object], name: str) -> Decimal:
    if raw.get(name) is None:
        raise RequestError(name, "missing")
    try:
        value = parse_decimal(raw[name])
    except DecimalFormatError as exc:
        raise RequestError(name, exc.reason) from None
    if value <= 0:
        raise RequestError(name, "not_positive")
    return value


def parse_order_request(raw: object) -> OrderRequest:
    """Validate an order request body.

    Raises:
        RequestError: naming the field and the reason.
    """
    body = _object(raw, ORDER_FIELDS)
    symbol, side, quantity = _symbol(body), _side(body), _quantity(body)
    kind = body.get("type")
    if kind is None:
        raise RequestError("type", "missing")
    if kind not in ("market", "limit"):
        raise RequestError("type", "bad_type")
    price: Decimal | None = None
    if kind == "limit":
        price = _price(body, "price")
    elif body.get("price") is not None:
        raise RequestError("price", "not_allowed")
    tag = body.get("tag")
    if tag is not None and (not isinstance(tag, str) or not TAG_RE.fullmatch(tag)):
        raise RequestError("tag", "bad_tag")
    return OrderRequest(symbol, side, quantity, kind, price, tag)


def parse_trade_request(raw: object) -> TradeRequest:
    """Validate a broker trade body (no lot or tick checks: only positive and finite).

    Raises:
        RequestError: naming the field and the reason.
    """
    body = _object(raw, TRADE_FIELDS)
    symbol, side, quantity = _symbol(body), _side(body), _quantity(body)
    price = _price(body, "price")
    fees_raw = body.get("fees", "0")
    try:
        fees = parse_decimal(fees_raw)
    except DecimalFormatError as exc:
        raise RequestError("fees", exc.reason) from None
    if fees < 0:
        raise RequestError("fees", "negative")
    ts = body.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, int) or ts <= 0:
        raise RequestError("ts", "missing" if ts is None else "not_integer")
    external_id = body.get("external_id")
    if external_id is None:
        raise RequestError("external_id", "missing")
    if not isinstance(external_id, str) or not EXTERNAL_ID_RE.fullmatch(external_id):
        raise RequestError("external_id", "bad_external_id")
    return TradeRequest(symbol, side, quantity, price, fees, ts, external_id)


def check_multiples(req: OrderRequest, lot_size: int, tick_size: Decimal) -> None:
    """Check the quantity is a multiple of the lot and the price of the tick.

    Raises:
        RequestError: ``not_lot_multiple`` or ``not_tick_multiple``.
    """
    if req.quantity % lot_size:
        raise RequestError("quantity", "not_lot_multiple")
    if req.price is not None and req.price % tick_size:
        raise RequestError("price", "not_tick_multiple")
