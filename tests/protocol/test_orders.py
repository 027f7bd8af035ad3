"""Order and broker-trade requests: every refused field with its reason, and multiples."""

from __future__ import annotations

from decimal import Decimal

import pytest

from protocol import RequestError, check_multiples, parse_order_request, parse_trade_request

ORDER = {"symbol": "SBIN", "side": "buy", "quantity": "10", "type": "limit", "price": "800.05"}
TRADE = {
    "symbol": "SBIN",
    "side": "sell",
    "quantity": 3,
    "price": "800.1234",
    "fees": "1.5",
    "ts": 1_800_000_000_000,
    "external_id": "BRK-9",
}


def _refusal(fn: object, raw: object) -> tuple[str, str]:
    with pytest.raises(RequestError) as info:
        fn(raw)  # type: ignore[operator]
    return info.value.field, info.value.reason


def test_valid_order_is_parsed_exactly() -> None:
    """Decimal strings stay exact; integer quantities are accepted as strings or numbers."""
    req = parse_order_request(ORDER)
    assert (req.symbol, req.side, req.quantity, req.type, req.price, req.tag) == (
        "SBIN",
        "buy",
        10,
        "limit",
        Decimal("800.05"),
        None,
    )
    market = parse_order_request(
        {"symbol": "SBIN", "side": "sell", "quantity": 5, "type": "market", "tag": "algo-1"}
    )
    assert market.price is None and market.tag == "algo-1"


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"symbol": None}, "symbol", "missing"),
        ({"symbol": "sbin"}, "symbol", "bad_symbol"),
        ({"side": None}, "side", "missing"),
        ({"side": "short"}, "side", "bad_side"),
        ({"quantity": None}, "quantity", "missing"),
        ({"quantity": "0"}, "quantity", "not_positive"),
        ({"quantity": -1}, "quantity", "negative"),
        ({"quantity": 1.5}, "quantity", "not_integer"),
        ({"quantity": "1.5"}, "quantity", "not_integer"),
        ({"type": None}, "type", "missing"),
        ({"type": "stop"}, "type", "bad_type"),
        ({"price": None}, "price", "missing"),
        ({"price": "0"}, "price", "not_positive"),
        ({"price": 800.05}, "price", "not_decimal"),
        ({"price": "NaN"}, "price", "not_decimal"),
        ({"tag": "x" * 65}, "tag", "bad_tag"),
        ({"tag": 5}, "tag", "bad_tag"),
        ({"extra": 1}, "extra", "unknown_field"),
    ],
)
def test_invalid_order_fields_are_named(change: dict[str, object], field: str, reason: str) -> None:
    """Each refused order field is reported with its stable reason."""
    raw = {k: v for k, v in {**ORDER, **change}.items() if v is not None}
    assert _refusal(parse_order_request, raw) == (field, reason)


def test_market_order_with_price_and_non_object_are_refused() -> None:
    """A market order may not carry a price; a body must be an object."""
    assert _refusal(parse_order_request, {**ORDER, "type": "market"}) == ("price", "not_allowed")
    assert _refusal(parse_order_request, [ORDER]) == ("", "not_object")


def test_lot_and_tick_multiples() -> None:
    """Quantity must be a multiple of the lot, price of the tick."""
    req = parse_order_request({**ORDER, "quantity": "130", "price": "24000.05"})
    check_multiples(req, 65, Decimal("0.05"))
    with pytest.raises(RequestError) as info:
        check_multiples(parse_order_request({**ORDER, "quantity": "64"}), 65, Decimal("0.05"))
    assert info.value.reason == "not_lot_multiple"
    with pytest.raises(RequestError) as info:
        check_multiples(parse_order_request({**ORDER, "price": "800.03"}), 1, Decimal("0.05"))
    assert info.value.reason == "not_tick_multiple"
    assert info.value.to_wire() == {
        "loc": ["price"],
        "msg": "not_tick_multiple",
        "type": "not_tick_multiple",
    }


def test_valid_trade_keeps_the_brokers_numbers() -> None:
    """A broker trade has no lot or tick checks: sub-tick prices and odd quantities pass."""
    t = parse_trade_request(TRADE)
    assert (t.quantity, t.price, t.fees, t.external_id) == (
        3,
        Decimal("800.1234"),
        Decimal("1.5"),
        "BRK-9",
    )
    assert parse_trade_request({k: v for k, v in TRADE.items() if k != "fees"}).fees == 0


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"price": "-1"}, "price", "not_positive"),
        ({"price": "Infinity"}, "price", "not_decimal"),
        ({"fees": "-0.01"}, "fees", "negative"),
        ({"fees": 0.5}, "fees", "not_decimal"),
        ({"ts": "now"}, "ts", "not_integer"),
        ({"ts": True}, "ts", "not_integer"),
        ({"ts": None}, "ts", "missing"),
        ({"external_id": None}, "external_id", "missing"),
        ({"external_id": "has space"}, "external_id", "bad_external_id"),
        ({"quantity": "0"}, "quantity", "not_positive"),
    ],
)
def test_invalid_trade_fields_are_named(change: dict[str, object], field: str, reason: str) -> None:
    """Each refused trade field is reported with its stable reason."""
    raw = {k: v for k, v in {**TRADE, **change}.items() if v is not None}
    assert _refusal(parse_trade_request, raw) == (field, reason)
