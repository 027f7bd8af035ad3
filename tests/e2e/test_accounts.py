"""Accounts end to end: orders over HTTP with ticks arriving, positions and P&L read back."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.kit.instruments import FUT, NIFTY_FUTURE, SBIN
from tests.kit.server import ServerProcess, call, running_server, wait_for
from tests.kit.tokens import token

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

INSTRUMENTS = [NIFTY_FUTURE, SBIN]
ADMIN = token("admin")


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    """One engine on a fresh database, with instruments and two accounts."""
    with running_server() as srv:
        assert (
            call(srv, "PUT", "/v1/admin/instruments", {"instruments": INSTRUMENTS}, ADMIN)[0] == 200
        )
        for acc in ("ACC1", "ACC2"):
            assert (
                call(srv, "POST", "/v1/admin/accounts", {"id": acc, "name": acc}, ADMIN)[0] == 201
            )
        yield srv


def tick(server: ServerProcess, symbol: str, ltp: str, **extra: str) -> None:
    """Push one tick through the HTTP ingest endpoint."""
    body = {"ticks": [{"symbol": symbol, "ltp": ltp, "ts": int(time.time() * 1000), **extra}]}
    status, _ = call(server, "POST", "/v1/ingest/ticks", body, token("feed:publish"))
    assert status == 200


def test_market_orders_fill_at_the_quote_and_positions_follow_ticks(server: ServerProcess) -> None:
    """Buy at the ask, sell at the bid; positions and P&L are exact decimal strings."""
    trader = token("trade", accounts=["ACC1"])
    tick(server, FUT, "24000", bid="23999.95", ask="24000.05")
    wait_for(lambda: call(server, "GET", f"/v1/quotes/{FUT}", tok=trader)[0] == 200)
    status, order = call(
        server,
        "POST",
        "/v1/accounts/ACC1/orders",
        {"symbol": FUT, "side": "buy", "quantity": "130", "type": "market"},
        trader,
    )
    assert status == 201, order
    assert (order["status"], order["filled_quantity"], order["avg_fill_price"]) == (
        "filled",
        "130",
        "24000.05",
    )
    status, order = call(
        server,
        "POST",
        "/v1/accounts/ACC1/orders",
        {"symbol": FUT, "side": "sell", "quantity": 65, "type": "market"},
        trader,
    )
    assert status == 201 and order["avg_fill_price"] == "23999.95"
    tick(server, FUT, "24010.5")

    def marked() -> bool:
        items = call(server, "GET", "/v1/accounts/ACC1/positions", tok=trader)[1]["items"]
        return items[0]["last_price"] == "24010.5"  # type: ignore[index]

    wait_for(marked)
    status, body = call(server, "GET", "/v1/accounts/ACC1/positions", tok=trader)
    assert body["items"] == [
        {
            "symbol": FUT,
            "net_quantity": "65",
            "avg_price": "24000.05000000",
            "last_price": "24010.5",
            "realized_pnl": "-6.50",
            "unrealized_pnl": "679.25",
            "fees": "0.00",
        }
    ]
    status, pnl = call(server, "GET", "/v1/accounts/ACC1/pnl", tok=trader)
    assert pnl == {"realized": "-6.50", "unrealized": "679.25", "fees": "0.00", "net": "672.75"}


def test_limit_order_rests_then_fills_on_the_crossing_tick(server: ServerProcess) -> None:
    """A buy limit below the market stays open and fills at its price when a tick crosses it."""
    trader = token("trade", accounts=["ACC2"])
    tick(server, "SBIN", "800")
    status, order = call(
        server,
        "POST",
        "/v1/accounts/ACC2/orders",
        {"symbol": "SBIN", "side": "buy", "quantity": "10", "type": "limit", "price": "795.5"},
        trader,
    )
    assert status == 201 and order["status"] == "open"
    oid = order["id"]
    tick(server, "SBIN", "796")
    assert call(server, "GET", f"/v1/accounts/ACC2/orders/{oid}", tok=trader)[1]["status"] == "open"
    tick(server, "SBIN", "795.4")
    wait_for(
        lambda: (
            call(server, "GET", f"/v1/accounts/ACC2/orders/{oid}", tok=trader)[1]["status"]
            == "filled"
        )
    )
    got = call(server, "GET", f"/v1/accounts/ACC2/orders/{oid}", tok=trader)[1]
    assert got["avg_fill_price"] == "795.5" and got["filled_quantity"] == "10"
    status, body = call(server, "DELETE", f"/v1/accounts/ACC2/orders/{oid}", tok=trader)
    assert status == 409 and body["error"]["code"] == "conflict"  # type: ignore[index]


def test_cancel_an_open_limit_order(server: ServerProcess) -> None:
    """DELETE cancels an open order; it then lists as cancelled."""
    trader = token("trade", accounts=["ACC2"])
    _, order = call(
        server,
        "POST",
        "/v1/accounts/ACC2/orders",
        {"symbol": "SBIN", "side": "sell", "quantity": "1", "type": "limit", "price": "900"},
        trader,
    )
    status, cancelled = call(
        server, "DELETE", f"/v1/accounts/ACC2/orders/{order['id']}", tok=trader
    )
    assert status == 200 and cancelled["status"] == "cancelled"
    items = call(server, "GET", "/v1/accounts/ACC2/orders?limit=1", tok=trader)[1]["items"]
    assert items[0]["id"] == order["id"] and items[0]["status"] == "cancelled"  # type: ignore[index]


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        (
            {"symbol": FUT, "side": "buy", "quantity": "64", "type": "market"},
            "quantity",
            "not_lot_multiple",
        ),
        (
            {"symbol": FUT, "side": "buy", "quantity": "65", "type": "limit", "price": "100.03"},
            "price",
            "not_tick_multiple",
        ),
        (
            {"symbol": "NOPE", "side": "buy", "quantity": "1", "type": "market"},
            "symbol",
            "unknown_symbol",
        ),
        ({"symbol": FUT, "side": "hold", "quantity": "65", "type": "market"}, "side", "bad_side"),
        (
            {"symbol": FUT, "side": "buy", "quantity": "0", "type": "market"},
            "quantity",
            "not_positive",
        ),
        (
            {"symbol": FUT, "side": "buy", "quantity": "-65", "type": "market"},
            "quantity",
            "negative",
        ),
        (
            {"symbol": FUT, "side": "buy", "quantity": "6.5", "type": "market"},
            "quantity",
            "not_integer",
        ),
        ({"symbol": FUT, "side": "buy", "quantity": "65", "type": "stop"}, "type", "bad_type"),
        ({"symbol": FUT, "side": "buy", "quantity": "65", "type": "limit"}, "price", "missing"),
        (
            {"symbol": FUT, "side": "buy", "quantity": "65", "type": "market", "x": 1},
            "x",
            "unknown_field",
        ),
    ],
)
def test_invalid_orders_are_422_naming_the_field(
    server: ServerProcess, body: dict[str, object], field: str, reason: str
) -> None:
    """Unknown symbol, bad side/type, zero/negative/fractional-lot quantity → 422."""
    status, err = call(
        server, "POST", "/v1/accounts/ACC1/orders", body, token("trade", accounts=["ACC1"])
    )
    assert status == 422
    assert err["error"]["details"]["errors"] == [  # type: ignore[index]
        {"loc": [field], "msg": reason, "type": reason}
    ]


def test_market_order_without_quote_is_409_no_market_data(server: ServerProcess) -> None:
    """A market order on a symbol with no quote at all is refused with 409."""
    call(
        server,
        "PUT",
        "/v1/admin/instruments",
        {
            "instruments": [
                {"symbol": "TATAMOTORS", "kind": "equity", "lot_size": 1, "tick_size": "0.05"}
            ]
        },
        ADMIN,
    )
    status, err = call(
        server,
        "POST",
        "/v1/accounts/ACC1/orders",
        {"symbol": "TATAMOTORS", "side": "buy", "quantity": "1", "type": "market"},
        token("trade", accounts=["ACC1"]),
    )
    assert status == 409 and err["error"]["code"] == "no_market_data"  # type: ignore[index]


def test_idempotency_key_replays_and_conflicts(server: ServerProcess) -> None:
    """Same key and body → the same order, no second one; same key, other body → 409."""
    trader = token("trade", accounts=["ACC2"])
    body = {"symbol": "SBIN", "side": "buy", "quantity": "2", "type": "limit", "price": "700"}
    key = {"Idempotency-Key": "idem-1"}
    s1, first = call(server, "POST", "/v1/accounts/ACC2/orders", body, trader, key)
    s2, again = call(
        server, "POST", "/v1/accounts/ACC2/orders", dict(reversed(list(body.items()))), trader, key
    )
    assert (s1, s2) == (201, 201) and first["id"] == again["id"]
    s3, err = call(
        server, "POST", "/v1/accounts/ACC2/orders", dict(body, quantity="3"), trader, key
    )
    assert s3 == 409 and err["error"]["code"] == "idempotency_conflict"  # type: ignore[index]
    orders = call(server, "GET", "/v1/accounts/ACC2/orders?limit=500", tok=trader)[1]["items"]
    assert sum(1 for o in orders if o["id"] == first["id"]) == 1  # type: ignore[index,union-attr]


def test_broker_trade_sync_is_idempotent_on_external_id(server: ServerProcess) -> None:
    """A broker trade with fees is recorded once; repeating it returns the same fill."""
    trader = token("trade", accounts=["ACC1"])
    body = {
        "symbol": "RELIANCE",
        "side": "buy",
        "quantity": "3",
        "price": "2950.1234",
        "fees": "12.5",
        "ts": int(time.time() * 1000),
        "external_id": "BRK-1",
    }
    s1, f1 = call(server, "POST", "/v1/accounts/ACC1/trades", body, trader)
    s2, f2 = call(server, "POST", "/v1/accounts/ACC1/trades", body, trader)
    assert (s1, s2) == (201, 201) and f1["id"] == f2["id"]
    s3, _ = call(server, "POST", "/v1/accounts/ACC1/trades", dict(body, price="1"), trader)
    assert s3 == 409
    positions = call(server, "GET", "/v1/accounts/ACC1/positions", tok=trader)[1]["items"]
    rel = next(p for p in positions if p["symbol"] == "RELIANCE")  # type: ignore[index,union-attr]
    assert (rel["net_quantity"], rel["avg_price"], rel["fees"]) == ("3", "2950.12340000", "12.50")


def test_unknown_account_is_404_for_admin_and_403_for_others(server: ServerProcess) -> None:
    """An admin learns an account does not exist; another token learns nothing (403)."""
    assert call(server, "GET", "/v1/accounts/NOPE/pnl", tok=ADMIN)[0] == 404
    assert (
        call(server, "GET", "/v1/accounts/NOPE/pnl", tok=token("read", accounts=["ACC1"]))[0] == 403
    )
    assert call(server, "POST", "/v1/admin/accounts", {"id": "ACC1", "name": "x"}, ADMIN)[0] == 409
    assert (
        call(server, "POST", "/v1/admin/accounts", {"id": "bad id", "name": "x"}, ADMIN)[0] == 422
    )


ENDPOINTS = [
    ("GET", "/v1/accounts/{a}/orders", None, "read"),
    ("GET", "/v1/accounts/{a}/orders/00000000-0000-0000-0000-000000000000", None, "read"),
    ("DELETE", "/v1/accounts/{a}/orders/00000000-0000-0000-0000-000000000000", None, "trade"),
    (
        "POST",
        "/v1/accounts/{a}/orders",
        {"symbol": "SBIN", "side": "buy", "quantity": "1", "type": "limit", "price": "1"},
        "trade",
    ),
    (
        "POST",
        "/v1/accounts/{a}/trades",
        {
            "symbol": "SBIN",
            "side": "buy",
            "quantity": "1",
            "price": "1",
            "ts": 1,
            "external_id": "ISO-1",
        },
        "trade",
    ),
    ("GET", "/v1/accounts/{a}/positions", None, "read"),
    ("GET", "/v1/accounts/{a}/pnl", None, "read"),
]


@pytest.mark.parametrize(("method", "path", "body", "need"), ENDPOINTS)
def test_isolation_matrix(
    server: ServerProcess, method: str, path: str, body: dict[str, object] | None, need: str
) -> None:
    """A token for ACC1 can neither read nor trade ACC2 (403); admin can; read cannot trade."""
    other = call(
        server, method, path.format(a="ACC2"), body, token("read", "trade", accounts=["ACC1"])
    )
    assert other[0] == 403 and other[1]["error"]["code"] == "forbidden"  # type: ignore[index]
    own = call(
        server, method, path.format(a="ACC1"), body, token("read", "trade", accounts=["ACC1"])
    )
    assert own[0] != 403
    admin = call(server, method, path.format(a="ACC2"), body, ADMIN)
    assert admin[0] not in (401, 403)
    reader = call(server, method, path.format(a="ACC1"), body, token("read", accounts=["ACC1"]))
    assert (reader[0] == 403) == (need == "trade")
    assert call(server, method, path.format(a="ACC1"), body, None)[0] == 401


def test_accounts_list_shows_only_the_tokens_accounts(server: ServerProcess) -> None:
    """GET /v1/accounts lists what the token may read; admin sees all."""
    items = call(server, "GET", "/v1/accounts", tok=token("read", accounts=["ACC2"]))[1]["items"]
    assert [i["id"] for i in items] == ["ACC2"]  # type: ignore[index,union-attr]
    all_ids = [i["id"] for i in call(server, "GET", "/v1/accounts", tok=ADMIN)[1]["items"]]  # type: ignore[index,union-attr]
    assert {"ACC1", "ACC2"} <= set(all_ids)
