"""Strategies over HTTP (app.test_client on the real PostgreSQL): CRUD, auth, validation, SQLi."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final
from urllib.parse import quote, urlencode

import orjson
import pytest
import trio
import trio_asyncio
from quart_trio import QuartTrio

from actors.account.supervisor import Accounts
from actors.market.actor import MarketActor
from actors.market.messages import Quote, TickBatch
from actors.registry import Actors
from actors.strategy import StrategyActor
from engine.config import Config, with_overrides
from engine.gateway import create_app
from engine.gateway._strategies import (
    parse_list_query,
    parse_payoff_query,
)
from engine.mailbox import ConflatingMailbox
from protocol import Instrument, RequestError, Tick
from tests.conftest import TEST_JWT_SECRET
from tests.kit.db import ledger_database, run_sql
from tests.kit.node import start_market
from tests.kit.tokens import token

pytestmark = pytest.mark.integration

NOW = int(dt.datetime(2026, 12, 1, 4, 30, tzinfo=dt.UTC).timestamp() * 1000)  # 10:00 IST
EXPIRY = dt.date(2026, 12, 29)
TICK = Decimal("0.05")
FUT = Instrument("NIFTY26DECFUT", "future", "NIFTY", EXPIRY, None, None, 65, TICK)
CALL = Instrument("NIFTY26DEC24000CE", "option", "NIFTY", EXPIRY, Decimal(24000), "call", 65, TICK)
CALL2 = Instrument("NIFTY26DEC24200CE", "option", "NIFTY", EXPIRY, Decimal(24200), "call", 65, TICK)
NIFTY = Instrument("NIFTY", "index", None, None, None, None, 1, TICK)
SBIN = Instrument("SBIN", "equity", None, None, None, None, 1, TICK)
BASE = "/v1/accounts/ACC1/strategies"
SPREAD = {
    "name": "Bull call spread",
    "legs": [
        {"symbol": CALL.symbol, "quantity": 65, "entry_price": "150"},
        {"symbol": CALL2.symbol, "quantity": "-65", "entry_price": "60.00"},
    ],
}
SQLI = [
    "name; DROP TABLE strategies;--",
    "' OR 1=1 --",
    "created_ts DESC, (SELECT pg_sleep(5))",
    "1; DELETE FROM strategies",
    "created_ts) UNION SELECT * FROM api_keys --",
    '"; DROP TABLE strategy_legs; --',
]


def tok(*scopes: str, accounts: Sequence[str] = ("ACC1",)) -> dict[str, str]:
    """Authorization headers for a token the app accepts."""
    value = token(*scopes, accounts=accounts, secret=TEST_JWT_SECRET, now=NOW // 1000)
    return {"Authorization": f"Bearer {value}"}


TRADER = tok("trade")
READER = tok("read")
ADMIN = tok("admin", accounts=())


@dataclass
class Api:
    """The app, its database and the strategy actor behind it."""

    app: QuartTrio
    dsn: str
    market: MarketActor
    strategies: StrategyActor

    async def call(
        self,
        method: str,
        path: str,
        body: object | None = None,
        headers: Mapping[str, str] = TRADER,
        query: Mapping[str, object] | Sequence[tuple[str, object]] | None = None,
    ) -> tuple[int, Any]:
        """One request; returns the status and the decoded JSON body (None when empty)."""
        if query is not None:
            path = f"{path}?{urlencode(query, doseq=True)}"
        client = self.app.test_client()
        with trio.fail_after(10):
            response = await client.open(path, method=method, json=body, headers=dict(headers))
            data = await response.get_data()
        return response.status_code, (orjson.loads(data) if data else None)

    def sql(self, query: str) -> list[tuple[object, ...]]:
        return run_sql(self.dsn, query)


async def _world(
    config: Config, dsn: str, nursery: trio.Nursery, *, start_strategies: bool = True
) -> Api:
    instruments = [FUT, CALL, CALL2, NIFTY, SBIN]
    engine, market = await start_market(config, dsn, nursery, now=NOW, instruments=instruments)
    accounts = Accounts(engine, market)
    await nursery.start(accounts.run)
    strategies = StrategyActor(engine, market)
    if start_strategies:
        await nursery.start(strategies.run)
    app = create_app(engine, Actors(market=market, accounts=accounts, strategies=strategies))
    return Api(app, dsn, market, strategies)


@pytest.fixture
def dsn() -> Iterator[str]:
    """A fresh migrated database with the accounts ACC1 and ACC2."""
    with ledger_database() as url:
        yield url


@pytest.fixture
async def api(aio_loop: trio_asyncio.TrioEventLoop, config: Config, dsn: str) -> AsyncIterator[Api]:
    """The full app with the strategy routes, over that database."""
    async with trio.open_nursery() as nursery:
        yield await _world(config, dsn, nursery)
        nursery.cancel_scope.cancel()


async def _tick(api: Api, symbol: str, ltp: str) -> None:
    box: ConflatingMailbox[str, Quote] = ConflatingMailbox(name="test")
    watch = api.market.watch([symbol], box)
    try:
        await api.market.submit(TickBatch((Tick(symbol, Decimal(ltp), NOW),), "test", NOW))
        with trio.fail_after(10):
            await box.receive()
    finally:
        api.market.unwatch(watch)


def _loc(body: Any) -> tuple[list[str], str]:
    error = body["error"]["details"]["errors"][0]
    return error["loc"], error["msg"]


# ------------------------------------------------------------------ CRUD


async def test_create_get_patch_list_delete_round_trip(api: Api) -> None:
    """POST 201, GET 200 with live M2M and Greeks, PATCH 200, list, DELETE 204, then 404."""
    await _tick(api, "NIFTY", "24050")
    await _tick(api, CALL.symbol, "212.4")
    await _tick(api, CALL2.symbol, "121.35")
    status, created = await api.call("POST", BASE, SPREAD)
    assert status == 201, created
    assert created["account"] == "ACC1" and created["name"] == "Bull call spread"
    assert created["legs"] == [
        {"symbol": CALL.symbol, "quantity": "65", "entry_price": "150"},
        {"symbol": CALL2.symbol, "quantity": "-65", "entry_price": "60"},
    ]
    # (212.4 − 150) × 65 + (121.35 − 60) × −65 = 4056 − 3987.75
    assert created["m2m"] == "68.25"
    assert set(created["greeks"]) == {"delta", "gamma", "theta", "vega"}
    assert all(isinstance(v, float) for v in created["greeks"].values())
    assert created["created_ts"] == created["updated_ts"] == NOW
    sid = created["id"]

    assert await api.call("GET", f"{BASE}/{sid}", headers=READER) == (200, created)
    status, patched = await api.call("PATCH", f"{BASE}/{sid}", {"name": "Renamed"})
    assert status == 200 and patched["name"] == "Renamed" and patched["legs"] == created["legs"]
    status, page = await api.call("GET", BASE, headers=READER)
    assert status == 200
    assert page == {"items": [patched], "total": 1, "limit": 100, "offset": 0}

    assert await api.call("DELETE", f"{BASE}/{sid}") == (204, None)
    status, body = await api.call("GET", f"{BASE}/{sid}")
    assert (status, body["error"]["code"]) == (404, "not_found")
    assert api.sql("SELECT count(*) FROM strategies") == [(0,)]


async def test_payoff_over_http_is_exact_and_its_range_is_validated(api: Api) -> None:
    """The bull call spread payoff at hand-computed points; bad ranges are 422."""
    _, created = await api.call("POST", BASE, SPREAD)
    path = f"{BASE}/{created['id']}/payoff"
    status, body = await api.call(
        "GET", path, headers=READER, query={"from": "23900", "to": "24300", "step": "50"}
    )
    assert status == 200
    assert body["points"][:3] == [
        {"underlying": "23900", "value": "-5850"},
        {"underlying": "23950", "value": "-5850"},
        {"underlying": "24000", "value": "-5850"},
    ]
    assert {"underlying": "24100", "value": "650"} in body["points"]
    assert body["points"][-1] == {"underlying": "24300", "value": "7150"}
    status, body = await api.call("GET", path, query={"from": "0", "to": "10000", "step": "1"})
    assert status == 200 and len(body["points"]) == 10_001
    for query, field in (
        ({"from": "0", "to": "10001", "step": "1"}, "step"),
        ({"from": "100", "to": "100", "step": "1"}, "to"),
        ({"from": "1", "to": "2", "step": "0"}, "step"),
        ({"from": "-1", "to": "2", "step": "1"}, "from"),
        ({"from": "1e3", "to": "2", "step": "1"}, "from"),
        ({"to": "2", "step": "1"}, "from"),
        ({"from": "1", "to": "2", "step": "1", "x": "1"}, "x"),
    ):
        status, body = await api.call("GET", path, query=query)
        assert status == 422, query
        assert _loc(body)[0] == [field]


async def test_invalid_bodies_are_422_naming_the_field(api: Api) -> None:
    """Unknown symbols, zero quantities, bad prices and unknown fields are 422; bad JSON 400."""
    bad_leg = {"symbol": "NOSUCH", "quantity": 1, "entry_price": "1"}
    for body, loc in (
        ({"name": "x", "legs": [bad_leg]}, ["legs.0.symbol"]),
        (
            {"name": "x", "legs": [dict(bad_leg, symbol=FUT.symbol, quantity=0)]},
            ["legs.0.quantity"],
        ),
        (
            {"name": "x", "legs": [dict(bad_leg, symbol=FUT.symbol, entry_price="0")]},
            ["legs.0.entry_price"],
        ),
        ({"name": "x" * 101, "legs": [dict(bad_leg, symbol=FUT.symbol)]}, ["name"]),
        ({"name": "x", "legs": [], "extra": 1}, ["extra"]),
    ):
        status, answer = await api.call("POST", BASE, body)
        assert status == 422, body
        assert _loc(answer)[0] == loc
    client = api.app.test_client()
    response = await client.post(BASE, data=b"{not json", headers=TRADER)
    assert response.status_code == 400
    _, created = await api.call("POST", BASE, SPREAD)
    status, answer = await api.call("PATCH", f"{BASE}/{created['id']}", {})
    assert status == 422 and _loc(answer) == ([""], "empty_patch")


# ------------------------------------------------------------------ authorisation


async def test_authorisation_is_that_of_the_account_routes(api: Api) -> None:
    """No token 401; read scope cannot write; another account is 403; unknown account 404."""
    _, created = await api.call("POST", BASE, SPREAD)
    one = f"{BASE}/{created['id']}"
    assert (await api.call("GET", BASE, headers={}))[0] == 401
    assert (await api.call("POST", BASE, SPREAD, headers=READER))[0] == 403
    assert (await api.call("PATCH", one, {"name": "n"}, headers=READER))[0] == 403
    assert (await api.call("DELETE", one, headers=READER))[0] == 403
    assert (await api.call("GET", one, headers=READER))[0] == 200
    other = tok("trade", accounts=["ACC2"])
    for method, path in (("GET", BASE), ("GET", one), ("DELETE", one), ("GET", one + "/payoff")):
        status, body = await api.call(method, path, headers=other)
        assert (status, body["error"]["code"]) == (403, "forbidden"), (method, path)
    # ACC2 may not see ACC1's strategy through its own path either.
    status, _ = await api.call(
        "GET", f"/v1/accounts/ACC2/strategies/{created['id']}", headers=other
    )
    assert status == 404
    status, body = await api.call("GET", "/v1/accounts/NOPE/strategies", headers=ADMIN)
    assert (status, body["error"]["code"]) == (404, "not_found")
    assert (await api.call("GET", BASE, headers=ADMIN))[0] == 200


# ------------------------------------------------------------------ list validation


LIST_REFUSED: Final = [
    ([("sort", "price")], "sort"),
    ([("sort", "NAME")], "sort"),
    ([("sort", "")], "sort"),
    ([("order", "up")], "order"),
    ([("order", "DESC")], "order"),
    ([("limit", "0")], "limit"),
    ([("limit", "501")], "limit"),
    ([("limit", "-1")], "limit"),
    ([("limit", "1.5")], "limit"),
    ([("limit", " 5")], "limit"),
    ([("limit", "")], "limit"),
    ([("offset", "-1")], "offset"),
    ([("offset", "1e2")], "offset"),
    ([("offset", "9999999999")], "offset"),
    ([("page", "2")], "page"),
    ([("sort", "name"), ("sort", "m2m")], "sort"),
]


async def test_list_parameters_off_the_whitelist_are_422(api: Api) -> None:
    """Unknown sort, bad order, limit outside 1..500, negative offset, unknown key: 422."""
    for query, loc in LIST_REFUSED:
        status, body = await api.call("GET", BASE, query=query, headers=READER)
        assert status == 422, (query, body)
        assert _loc(body)[0] == [loc], query
    for query in ({"limit": "500", "offset": "0"}, {"limit": "1"}, {"order": "desc"}, {}):
        assert (await api.call("GET", BASE, query=query, headers=READER))[0] == 200, query


async def test_list_sorts_by_m2m_and_pages(api: Api) -> None:
    """sort=m2m&order=desc with limit/offset pages by the live M2M."""
    await _tick(api, FUT.symbol, "24000")
    for name, entry in (("a", "23990"), ("b", "24010"), ("c", "23900")):
        body = {"name": name, "legs": [{"symbol": FUT.symbol, "quantity": 1, "entry_price": entry}]}
        assert (await api.call("POST", BASE, body))[0] == 201
    query = {"sort": "m2m", "order": "desc", "limit": "2", "offset": "0"}
    status, page = await api.call("GET", BASE, query=query)
    assert status == 200
    assert [(i["name"], i["m2m"]) for i in page["items"]] == [("c", "100"), ("a", "10")]
    assert (page["total"], page["limit"], page["offset"]) == (3, 2, 0)
    status, page = await api.call(
        "GET", BASE, query={"sort": "name", "limit": "500", "offset": "2"}
    )
    assert status == 200 and [i["name"] for i in page["items"]] == ["c"]


def test_query_parsers_accept_only_whitelisted_values() -> None:
    """The pure parsers: defaults, the whitelist, and payoff bounds."""
    assert parse_list_query({}).sort == "created_ts"
    q = parse_list_query({"sort": ["m2m"], "order": ["desc"], "limit": ["500"], "offset": ["7"]})
    assert (q.sort, q.order, q.limit, q.offset) == ("m2m", "desc", 500, 7)
    with pytest.raises(RequestError):
        parse_list_query({"sort": ["created_ts DESC"]})
    grid = parse_payoff_query({"from": ["1"], "to": ["2"], "step": ["0.5"]})
    assert grid.points() == [1, Decimal("1.5"), 2]


# ------------------------------------------------------------------ SQL injection


async def test_sql_injection_payloads_are_refused_everywhere_and_the_table_survives(
    api: Api,
) -> None:
    """SQLi in every query value, key, path id and body field: 422/404, rows and tables intact."""
    # A name is free text: the payload is stored and returned verbatim (a bound parameter).
    _, first = await api.call("POST", BASE, SPREAD)
    await api.call("POST", BASE, dict(SPREAD, name="second"))
    one = f"{BASE}/{first['id']}"
    leg = {"symbol": FUT.symbol, "quantity": 1, "entry_price": "1"}
    started = trio.current_time()
    names = []
    for payload in SQLI:
        for key in ("sort", "order", "limit", "offset"):
            status, _ = await api.call("GET", BASE, query={key: payload})
            assert status == 422, (key, payload)
        assert (await api.call("GET", BASE, query={payload: "1"}))[0] == 422
        assert (await api.call("GET", BASE, query={"sort": "name", "order": payload}))[0] == 422
        for key in ("from", "to", "step"):
            query = {"from": "1", "to": "2", "step": "1"} | {key: payload}
            assert (await api.call("GET", one + "/payoff", query=query))[0] == 422, (key, payload)
        enc = quote(payload, safe="")
        assert (await api.call("GET", f"/v1/accounts/{enc}/strategies", headers=ADMIN))[0] == 404
        assert (await api.call("GET", f"/v1/accounts/{enc}/strategies", headers=TRADER))[0] == 403
        for method, body in (("GET", None), ("PATCH", {"name": "x"}), ("DELETE", None)):
            assert (await api.call(method, f"{BASE}/{enc}", body))[0] == 404, (method, payload)
        payoff = {"from": "1", "to": "2", "step": "1"}
        assert (await api.call("GET", f"{BASE}/{enc}/payoff", query=payoff))[0] == 404
        for field in ("symbol", "quantity", "entry_price"):
            body = {"name": "x", "legs": [leg | {field: payload}]}
            status, answer = await api.call("POST", BASE, body)
            assert status == 422 and _loc(answer)[0] == [f"legs.0.{field}"], (field, payload)
        assert (await api.call("POST", BASE, {"name": "x", "legs": [leg], payload: 1}))[0] == 422
        assert (await api.call("POST", BASE, {"name": "x", "legs": [leg | {payload: 1}]}))[0] == 422
        assert (await api.call("PATCH", one, {"legs": [leg | {"symbol": payload}]}))[0] == 422
        status, created = await api.call("POST", BASE, {"name": payload, "legs": [leg]})
        assert status == 201 and created["name"] == payload
        names.append(payload)
    assert trio.current_time() - started < 5  # no pg_sleep(5) ever ran
    assert api.sql(
        "SELECT to_regclass('strategies')::text, to_regclass('strategy_legs')::text"
    ) == [("strategies", "strategy_legs")]
    assert api.sql("SELECT count(*) FROM strategies") == [(2 + len(SQLI),)]
    assert api.sql("SELECT count(*) FROM strategy_legs") == [(4 + len(SQLI),)]
    assert sorted(r[0] for r in api.sql("SELECT name FROM strategies")) == sorted(  # type: ignore[type-var]
        ["Bull call spread", "second", *names]
    )
    assert api.sql("SELECT count(*) FROM accounts") == [(2,)]
    status, page = await api.call("GET", BASE, query={"sort": "name", "limit": "500"})
    assert status == 200 and page["total"] == 2 + len(SQLI)


# ------------------------------------------------------------------ backpressure


async def test_a_full_or_silent_actor_answers_503_busy(
    aio_loop: trio_asyncio.TrioEventLoop, config: Config, dsn: str
) -> None:
    """A stopped actor: the first call times out (503), then its full mailbox refuses (503)."""
    cfg = with_overrides(config, mailbox={"command_capacity": 1}, accounts={"reply_timeout": 0.2})
    async with trio.open_nursery() as nursery:
        api = await _world(cfg, dsn, nursery, start_strategies=False)
        status, body = await api.call("GET", BASE, headers=READER)
        assert (status, body["error"]["code"]) == (503, "busy")
        status, body = await api.call("GET", BASE, headers=READER)
        assert (status, body["error"]["code"]) == (503, "busy")
        assert api.strategies.mailbox.statistics().rejected == 1
        nursery.cancel_scope.cancel()


async def test_openapi_documents_the_strategy_routes(api: Api) -> None:
    """/openapi.json lists the strategy paths with their query parameters."""
    status, spec = await api.call("GET", "/openapi.json", headers={})
    assert status == 200
    paths = spec["paths"]
    assert "/v1/accounts/{account_id}/strategies" in paths
    assert "/v1/accounts/{account_id}/strategies/{strategy_id}/payoff" in paths
    params = {p["name"] for p in paths["/v1/accounts/{account_id}/strategies"]["get"]["parameters"]}
    assert {"sort", "order", "limit", "offset"} <= params
