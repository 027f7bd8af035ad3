"""Live analytics over HTTP: option chain, futures and indicators, with auth and errors."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
import pytest
import trio
import trio.testing
from quart_trio import QuartTrio

import protocol
from actors.market.actor import MarketActor
from actors.market.candles import CandleBook
from actors.market.chain import chain_snapshot
from actors.market.instruments import InstrumentMaster
from actors.market.live import candle_bar, futures_to_wire, live_futures
from actors.market.messages import TickBatch
from actors.registry import Actors
from engine.analytics import Candles, compute_indicator
from engine.auth import issue_token
from engine.calendar import load_calendar
from engine.config import Config
from engine.context import Engine
from engine.gateway import create_app
from engine.gateway._live import live_blueprint
from protocol import Instrument, Tick
from tests.conftest import TEST_JWT_SECRET
from tests.kit.fakes import FakeClock, fake_engine

# Tue 1 Dec 2026 09:15 IST and 10:00 IST; the December monthly expires on Tue 29 Dec.
SESSION_MS = int(dt.datetime(2026, 12, 1, 3, 45, tzinfo=dt.UTC).timestamp() * 1000)
OPEN_MS = int(dt.datetime(2026, 12, 1, 4, 30, tzinfo=dt.UTC).timestamp() * 1000)
EXPIRY = dt.date(2026, 12, 29)
QUIET_EXPIRY = dt.date(2027, 1, 26)  # instruments known, never ticked
TICK = Decimal("0.05")


def _opt(strike: int, kind: str, expiry: dt.date = EXPIRY) -> Instrument:
    tag = "26DEC" if expiry == EXPIRY else "27JAN"
    symbol = f"NIFTY{tag}{strike}{'CE' if kind == 'call' else 'PE'}"
    return Instrument(symbol, "option", "NIFTY", expiry, Decimal(strike), kind, 65, TICK)  # type: ignore[arg-type]


INSTRUMENTS = [
    Instrument("NIFTY", "index", None, None, None, None, 1, TICK),
    Instrument("NIFTY26DECFUT", "future", "NIFTY", EXPIRY, None, None, 65, TICK),
    Instrument("NIFTY27JANFUT", "future", "NIFTY", QUIET_EXPIRY, None, None, 65, TICK),
    *(_opt(k, kind) for k in (23900, 24000, 24100) for kind in ("call", "put")),
    _opt(24000, "call", QUIET_EXPIRY),
]
OPTION_PRICES = {
    "NIFTY26DEC23900CE": "475.1",
    "NIFTY26DEC23900PE": "258.05",
    "NIFTY26DEC24000CE": "415.5",
    "NIFTY26DEC24000PE": "295.15",
    "NIFTY26DEC24100CE": "358.45",
}  # 24100 PE never ticks


def _ticks() -> list[Tick]:
    ticks = [
        Tick(s, Decimal(p), OPEN_MS, volume=650, oi=65_000 + i * 650)
        for i, (s, p) in enumerate(OPTION_PRICES.items())
    ]
    ticks += [
        Tick("NIFTY26DECFUT", Decimal("24120.5"), OPEN_MS, volume=6500, oi=1_300_000),
        Tick("NIFTY27JANFUT", Decimal("24262"), OPEN_MS, volume=650, oi=260_000),
    ]
    # The index every 20 s from 09:15 to 09:59:40: 44 closed 1m bars and a forming one.
    level = 24_000.0
    for i in range(135):
        level += (i % 7 - 3) * 0.85
        ticks.append(
            Tick("NIFTY", Decimal(round(level / 0.05) * 5).scaleb(-2), SESSION_MS + i * 20_000)
        )
    return ticks


@dataclass
class Live:
    app: QuartTrio
    actor: MarketActor
    engine: Engine
    headers: dict[str, str]


@pytest.fixture
async def live(config: Config) -> AsyncIterator[Live]:
    """An app with the live blueprint over a running market actor fed with a NIFTY chain."""
    clock = FakeClock(OPEN_MS)
    engine = fake_engine(config, clock)
    actor = MarketActor(engine, InstrumentMaster(engine.store), load_calendar())
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        actor.master._apply(INSTRUMENTS)
        await actor.submit(TickBatch(tuple(_ticks()), "test", OPEN_MS))
        await trio.testing.wait_all_tasks_blocked()
        app = create_app(engine)
        app.register_blueprint(
            live_blueprint(engine, Actors(market=actor, accounts=None, strategies=None))
        )  # type: ignore[arg-type]
        yield Live(app, actor, engine, _auth(config, "read"))
        nursery.cancel_scope.cancel()


def _auth(config: Config, *scopes: str) -> dict[str, str]:
    token = issue_token(
        TEST_JWT_SECRET,
        sub="tester",
        scopes=scopes,
        now=OPEN_MS // 1000,
        ttl=600,
        issuer=config.auth.issuer,
        audience=config.auth.audience,
    )
    return {"Authorization": f"Bearer {token}"}


async def _get(live: Live, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    resp = await live.app.test_client().get(
        path, headers=live.headers if headers is None else headers
    )
    return resp.status_code, orjson.loads(await resp.get_data())


def _wire(value: object) -> Any:
    return orjson.loads(protocol.dumps(value))


# ----------------------------------------------------------------- chain


async def test_chain_route_returns_the_live_snapshot(live: Live) -> None:
    """GET /v1/fo/chain is the snapshot of the chain's quotes, spot from the index quote."""
    status, body = await _get(live, "/v1/fo/chain/NIFTY?expiry=2026-12-29")
    assert status == 200
    snap = chain_snapshot(live.actor, "NIFTY", EXPIRY, OPEN_MS)
    assert snap is not None
    assert body == _wire(snap.to_wire())
    assert body["underlying"] == "NIFTY" and body["expiry"] == "2026-12-29"
    index = live.actor.quote("NIFTY")
    assert index is not None and body["spot"] == str(index.ltp)
    assert [r["strike"] for r in body["rows"]] == ["23900", "24000", "24100"]
    atm = body["rows"][1]["call"]
    assert atm["ltp"] == "415.5" and atm["oi"] == 65_000 + 2 * 650 and atm["volume"] == 650
    assert 0.05 < atm["iv"] < 0.5 and 0 < atm["delta"] < 1 and atm["theta"] < 0
    assert body["rows"][2]["put"] == {
        "symbol": "NIFTY26DEC24100PE",
        **dict.fromkeys(("ltp", "oi", "volume", "iv", "delta", "gamma", "theta", "vega")),
    }
    assert isinstance(body["max_pain"], str) and isinstance(body["pcr_oi"], float)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/fo/chain/NIFTY?expiry=2027-02-23",  # no such chain
        "/v1/fo/chain/BANKNIFTY?expiry=2026-12-29",
        "/v1/fo/chain/NIFTY?expiry=2027-01-26",  # known, never ticked
        "/v1/fo/chain/nifty?expiry=2026-12-29",  # not a symbol
    ],
)
async def test_chain_route_is_404_for_unknown_or_unquoted_chains(live: Live, path: str) -> None:
    """An unknown chain, or one without any quote yet, is 404 not_found."""
    status, body = await _get(live, path)
    assert status == 404
    assert body["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    "query",
    ["expiry=2026-13-01", "expiry=20261229", "expiry=1790000000", "", "expiry=2026-12-29&x=1"],
)
async def test_chain_route_is_422_for_a_bad_or_missing_date(live: Live, query: str) -> None:
    """A malformed, impossible or missing expiry (or an unknown key) is 422 validation_failed."""
    status, body = await _get(live, f"/v1/fo/chain/NIFTY?{query}")
    assert status == 422
    assert body["error"]["code"] == "validation_failed"


async def test_routes_need_a_read_token_before_anything_else(live: Live, config: Config) -> None:
    """No token is 401 (even with a bad query); a token without read scope is 403."""
    for path in (
        "/v1/fo/chain/NIFTY?expiry=2026-12-29",
        "/v1/fo/chain/NIFTY?expiry=bad",
        "/v1/futures/NIFTY",
        "/v1/indicators/NIFTY?indicator=nope",
    ):
        status, body = await _get(live, path, headers={})
        assert (status, body["error"]["code"]) == (401, "unauthenticated"), path
        status, _ = await _get(live, path, headers={"Authorization": "Bearer forged.token.x"})
        assert status == 401
        status, body = await _get(live, path, headers=_auth(config, "feed:publish"))
        assert (status, body["error"]["code"]) == (403, "forbidden"), path
    status, _ = await _get(live, "/v1/futures/NIFTY", headers=_auth(config, "trade"))
    assert status == 200


# ----------------------------------------------------------------- futures


async def test_futures_route_returns_the_live_analysis(live: Live) -> None:
    """GET /v1/futures is the POST /v1/futures/analyze shape over the live quotes."""
    status, body = await _get(live, "/v1/futures/NIFTY")
    assert status == 200
    assert body == _wire(futures_to_wire(live_futures(live.actor, "NIFTY", OPEN_MS)))
    assert [c["expiry"] for c in body["contracts"]] == ["2026-12-29", "2027-01-26"]
    index = live.actor.quote("NIFTY")
    assert index is not None
    assert body["contracts"][0]["basis"] == str(Decimal("24120.5") - index.ltp)
    assert body["rollover_pct"] == pytest.approx(260_000 / 1_560_000 * 100)


async def test_futures_route_is_404_without_futures_quotes(live: Live) -> None:
    """An underlying with no futures quotes is 404."""
    status, body = await _get(live, "/v1/futures/BANKNIFTY")
    assert (status, body["error"]["code"]) == (404, "not_found")


# ----------------------------------------------------------------- indicators


def _expected(book: CandleBook, tf: str, indicator: str, params: dict[str, object]) -> Any:
    bars = book.history(tf)  # type: ignore[arg-type]
    forming = book.forming(tf)  # type: ignore[arg-type]
    if forming is not None:
        bars.append(forming)
    return compute_indicator(indicator, params, Candles.from_bars(map(candle_bar, bars)))


@pytest.mark.parametrize(
    ("query", "indicator", "params"),
    [
        ("tf=1m&indicator=rsi&period=14", "rsi", {"period": 14}),
        ("indicator=sma&period=5", "sma", {"period": 5}),
        ("tf=5m&indicator=ema&period=3", "ema", {"period": 3}),
        (
            "indicator=bbands&period=10&nbdev_up=2.5&nbdev_dn=1",
            "bbands",
            {
                "period": 10,
                "nbdev_up": 2.5,
                "nbdev_dn": 1,
            },
        ),
        ("indicator=macd&fast=3&slow=8&signal=4", "macd", {"fast": 3, "slow": 8, "signal": 4}),
        ("indicator=vwap", "vwap", {}),
    ],
)
async def test_indicator_route_equals_compute_indicator_over_live_candles(
    live: Live, query: str, indicator: str, params: dict[str, object]
) -> None:
    """GET /v1/indicators gives compute_indicator's values over kept bars + the forming bar."""
    status, body = await _get(live, f"/v1/indicators/NIFTY?{query}")
    assert status == 200
    book = live.actor.candles("NIFTY")
    assert book is not None
    tf = "5m" if "tf=5m" in query else "1m"
    assert body == {"values": _wire(_expected(book, tf, indicator, params))}
    values = body["values"]
    series = values if isinstance(values, list) else next(iter(values.values()))
    assert len(series) == len(book.history(tf)) + 1  # type: ignore[arg-type]
    # An index trades no volume: its VWAP is undefined (null) throughout.
    assert (series[-1] is None) == (indicator == "vwap")


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("indicator=nope", "unknown_indicator"),
        ("indicator=rsi&period=1", "invalid_param"),
        ("indicator=rsi&period=14.5", "invalid_param"),
        ("indicator=rsi&period=abc", "invalid_param"),
        ("indicator=rsi&period=nan", "invalid_param"),
        ("indicator=rsi&period=1_4", "invalid_param"),
        ("indicator=rsi&length=14", "invalid_param"),
        ("indicator=rsi&b=1&c=1&d=1&e=1&f=1&g=1&h=1&i=1&j=1", "invalid_param"),
        ("indicator=bbands&nbdev_up=1e999", "invalid_param"),
        ("indicator=rsi&period=3&period=4", "invalid_param"),
        ("indicator=rsi&tf=2m", None),
        ("tf=1m", None),
    ],
)
async def test_indicator_route_is_422_for_bad_indicators_and_params(
    live: Live, query: str, reason: str | None
) -> None:
    """Unknown indicators, unknown or malformed params, bad timeframes are 422 validation_failed."""
    status, body = await _get(live, f"/v1/indicators/NIFTY?{query}")
    assert status == 422, body
    assert body["error"]["code"] == "validation_failed"
    if reason is not None:
        details = body["error"]["details"]
        assert details["code"] == reason
        assert details["errors"][0]["type"] == reason


@pytest.mark.parametrize("symbol", ["SBIN", "bad-symbol"])
async def test_indicator_route_is_404_without_candles(live: Live, symbol: str) -> None:
    """A symbol without candles (or no symbol at all) is 404."""
    status, body = await _get(live, f"/v1/indicators/{symbol}?indicator=rsi")
    assert (status, body["error"]["code"]) == (404, "not_found")


async def test_indicator_route_follows_new_bars(live: Live) -> None:
    """After more ticks close bars, the route serves the new values, still equal to the batch."""
    ticks = tuple(
        Tick("NIFTY", Decimal(24_010 + i), SESSION_MS + 135 * 20_000 + i * 30_000) for i in range(9)
    )
    await live.actor.submit(TickBatch(ticks, "test", OPEN_MS))
    await trio.testing.wait_all_tasks_blocked()
    book = live.actor.candles("NIFTY")
    assert book is not None
    for _ in range(2):
        status, body = await _get(live, "/v1/indicators/NIFTY?indicator=atr&period=5")
        assert status == 200
        assert body == {"values": _wire(_expected(book, "1m", "atr", {"period": 5}))}
    assert len(body["values"]) == 50


async def test_openapi_documents_the_live_routes(live: Live) -> None:
    """The generated OpenAPI lists the three live routes."""
    resp = await live.app.test_client().get("/openapi.json")
    paths = (await resp.get_json())["paths"]
    assert {
        "/v1/fo/chain/{underlying}",
        "/v1/futures/{underlying}",
        "/v1/indicators/{symbol}",
    } <= set(paths)
    chain = paths["/v1/fo/chain/{underlying}"]["get"]
    assert "expiry" in {p["name"] for p in chain["parameters"]}
    indicator = paths["/v1/indicators/{symbol}"]["get"]
    assert {"tf", "indicator"} <= {p["name"] for p in indicator["parameters"]}
