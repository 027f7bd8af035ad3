"""The stateless analytics endpoints: Greeks, IV, max pain, futures, indicators, calendar."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
from quart_trio import QuartTrio

from engine.analytics import (
    SECONDS_PER_YEAR,
    Candles,
    compute_indicator,
    expiry_instant,
    greeks,
    implied_volatility,
)
from engine.auth import issue_token
from engine.calendar import load_calendar
from engine.config import Config
from engine.gateway import _analytics as analytics_module
from engine.gateway import create_app
from engine.gateway._analytics import analytics_blueprint
from engine.gateway._analytics_inputs import MAX_BATCH_ITEMS
from tests.conftest import TEST_JWT_SECRET
from tests.kit.fakes import FakeClock, fake_engine

IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
CALENDAR_DIR = Path(__file__).resolve().parents[3] / "config" / "calendar"


def ist_ms(*args: int) -> int:
    return int(dt.datetime(*args, tzinfo=IST).timestamp() * 1000)


# Mon 16 Mar 2026 10:00 IST: a trading day after the futures pre-open started.
NOW_MS = ist_ms(2026, 3, 16, 10, 0)
BSM_CALL = {
    "model": "bsm",
    "option_type": "call",
    "underlying_price": 22000,
    "strike": 22100,
    "time_to_expiry": 0.05,
    "volatility": 0.14,
    "rate": 0.065,
    "dividend_yield": 0.012,
}
GREEK_NAMES = ("price", "delta", "gamma", "theta", "vega", "rho")
ALL_NULL = dict.fromkeys(GREEK_NAMES)


def _auth(config: Config, *scopes: str) -> dict[str, str]:
    token = issue_token(
        TEST_JWT_SECRET,
        sub="analyst",
        scopes=scopes,
        now=NOW_MS // 1000,
        ttl=600,
        issuer="tickstream",
        audience="tickstream",
    )
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def app(config: Config) -> QuartTrio:
    """An app with the analytics blueprint over a fake engine (no database)."""
    engine = fake_engine(config, FakeClock(NOW_MS))
    application = create_app(engine)
    application.register_blueprint(analytics_blueprint(engine, load_calendar(CALENDAR_DIR)))
    return application


@pytest.fixture
def headers(config: Config) -> dict[str, str]:
    """A bearer token with scope ``read``."""
    return _auth(config, "read")


async def _post(
    app: QuartTrio, path: str, body: object, headers: dict[str, str] | None
) -> tuple[int, Any]:
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    resp = await app.test_client().post(path, data=orjson.dumps(body), headers=hdrs)
    return resp.status_code, orjson.loads(await resp.get_data())


async def _get(app: QuartTrio, path: str) -> tuple[int, Any]:
    resp = await app.test_client().get(path)
    return resp.status_code, orjson.loads(await resp.get_data())


def _pure_greeks(item: dict[str, Any], t: float | None = None) -> dict[str, float | None]:
    g = greeks(
        item["model"],
        item["option_type"],
        underlying=float(item["underlying_price"]),
        strike=float(item["strike"]),
        time_to_expiry=float(item["time_to_expiry"]) if t is None else t,
        volatility=float(item["volatility"]),
        rate=float(item["rate"]),
        dividend_yield=float(item.get("dividend_yield", 0.0)),
    )
    return {name: getattr(g, name) for name in GREEK_NAMES}


def _iv_item(item: dict[str, Any], price: float) -> dict[str, Any]:
    out = {k: v for k, v in item.items() if k != "volatility"}
    out["price"] = price
    return out


def _pure_iv(item: dict[str, Any]) -> float | None:
    return implied_volatility(
        item["model"],
        item["option_type"],
        price=float(item["price"]),
        underlying=float(item["underlying_price"]),
        strike=float(item["strike"]),
        time_to_expiry=float(item["time_to_expiry"]),
        rate=float(item["rate"]),
        dividend_yield=float(item.get("dividend_yield", 0.0)),
    )


def _options(n: int) -> list[dict[str, Any]]:
    return [
        {
            "model": "black76" if i % 3 == 0 else "bsm",
            "option_type": "put" if i % 2 else "call",
            "underlying_price": 22000 + (i % 41) * 5.5,
            "strike": 21000 + (i % 37) * 50,
            "time_to_expiry": 0.002 + (i % 29) * 0.01,
            "volatility": 0.08 + (i % 17) * 0.02,
            "rate": 0.065,
            "dividend_yield": 0.01 if i % 3 else 0.0,
        }
        for i in range(n)
    ]


# ----------------------------------------------------------------- greeks and IV


@pytest.mark.parametrize(
    "item",
    [
        BSM_CALL,
        {**BSM_CALL, "model": "black76", "option_type": "put", "dividend_yield": 0.0},
        {**BSM_CALL, "strike": 18000, "time_to_expiry": 0.9, "volatility": 0.45},
    ],
)
async def test_greeks_equal_the_pure_function(
    app: QuartTrio, headers: dict[str, str], item: dict[str, Any]
) -> None:
    """A single greeks call answers exactly what greeks() computes for the same inputs."""
    status, body = await _post(app, "/v1/fo/greeks", item, headers)
    assert status == 200
    assert body == _pure_greeks(item)
    assert all(isinstance(body[name], float) for name in GREEK_NAMES)


async def test_greeks_accept_decimal_strings_as_numbers(
    app: QuartTrio, headers: dict[str, str]
) -> None:
    """Decimal strings and JSON numbers are the same inputs."""
    as_strings = {
        k: str(v) if k not in ("model", "option_type") else v for k, v in BSM_CALL.items()
    }
    status, body = await _post(app, "/v1/fo/greeks", as_strings, headers)
    assert status == 200
    assert body == _pure_greeks(BSM_CALL)


async def test_dividend_yield_defaults_to_zero(app: QuartTrio, headers: dict[str, str]) -> None:
    """Without dividend_yield (or with null) q is 0."""
    item = {k: v for k, v in BSM_CALL.items() if k != "dividend_yield"}
    _, body = await _post(app, "/v1/fo/greeks", item, headers)
    _, with_null = await _post(app, "/v1/fo/greeks", {**item, "dividend_yield": None}, headers)
    assert body == with_null == _pure_greeks({**item, "dividend_yield": 0.0})


async def test_iv_equals_the_pure_function(app: QuartTrio, headers: dict[str, str]) -> None:
    """A single IV call answers exactly implied_volatility() and recovers the model's sigma."""
    price = _pure_greeks(BSM_CALL)["price"]
    assert price is not None
    item = _iv_item(BSM_CALL, price)
    status, body = await _post(app, "/v1/fo/iv", item, headers)
    assert status == 200
    assert body == {"iv": _pure_iv(item)}
    assert body["iv"] == pytest.approx(0.14, rel=1e-7)


async def test_expiry_ts_and_valuation_ts_give_t_per_finance(
    app: QuartTrio, headers: dict[str, str]
) -> None:
    """T = (expiry 15:30 IST - valuation) / (365*86400) s, calendar time (FINANCE.md §1)."""
    expiry = expiry_instant(dt.date(2026, 3, 30))
    valuation = dt.datetime(2026, 3, 16, 11, 7, 30, tzinfo=IST)
    t = (expiry - valuation).total_seconds() / (365 * 86400)
    item = {k: v for k, v in BSM_CALL.items() if k != "time_to_expiry"}
    item["expiry_ts"] = int(expiry.timestamp() * 1000)
    item["valuation_ts"] = int(valuation.timestamp() * 1000)
    _, body = await _post(app, "/v1/fo/greeks", item, headers)
    assert body == _pure_greeks(BSM_CALL, t=t)


async def test_expiry_ts_without_valuation_ts_values_at_the_engine_clock(
    app: QuartTrio, headers: dict[str, str]
) -> None:
    """valuation_ts defaults to now, read from the engine's clock."""
    expiry_ms = int(expiry_instant(dt.date(2026, 3, 30)).timestamp() * 1000)
    item = {k: v for k, v in BSM_CALL.items() if k != "time_to_expiry"}
    _, body = await _post(app, "/v1/fo/greeks", {**item, "expiry_ts": expiry_ms}, headers)
    t = (expiry_ms - NOW_MS) / 1000 / SECONDS_PER_YEAR
    assert body == _pure_greeks(BSM_CALL, t=t)


async def test_greeks_batch_equals_single_calls_item_by_item(
    app: QuartTrio, headers: dict[str, str]
) -> None:
    """Each batch result is the single call's answer for that item, in order."""
    items = _options(40) + [{**BSM_CALL, "time_to_expiry": 0}]
    status, body = await _post(app, "/v1/fo/greeks", {"items": items}, headers)
    assert status == 200
    assert len(body["results"]) == len(items)
    for item, result in zip(items, body["results"], strict=True):
        _, single = await _post(app, "/v1/fo/greeks", item, headers)
        assert result == single == _pure_greeks(item)
    assert body["results"][-1] == ALL_NULL


async def test_iv_batch_equals_single_calls_item_by_item(
    app: QuartTrio, headers: dict[str, str]
) -> None:
    """Each IV batch result is the single call's answer, null where out of bounds."""
    items = [_iv_item(o, _pure_greeks(o)["price"] or 0.0) for o in _options(30)]
    items.append(_iv_item(BSM_CALL, 0.0))
    status, body = await _post(app, "/v1/fo/iv", {"items": items}, headers)
    assert status == 200
    for item, result in zip(items, body["results"], strict=True):
        _, single = await _post(app, "/v1/fo/iv", item, headers)
        assert result == single == {"iv": _pure_iv(item)}
    assert body["results"][-1] == {"iv": None}


async def test_a_batch_of_100000_greeks_is_served(app: QuartTrio, headers: dict[str, str]) -> None:
    """100,000 items in one call: one result per item, equal to the pure function."""
    items = _options(MAX_BATCH_ITEMS)
    status, body = await _post(app, "/v1/fo/greeks", {"items": items}, headers)
    assert status == 200
    results = body["results"]
    assert len(results) == MAX_BATCH_ITEMS
    for i in (0, 1, 12_345, 54_321, MAX_BATCH_ITEMS - 1):
        assert results[i] == _pure_greeks(items[i])


async def test_a_batch_of_100000_ivs_is_served(app: QuartTrio, headers: dict[str, str]) -> None:
    """100,000 IV items in one call: one result per item, equal to the pure function."""
    options = _options(MAX_BATCH_ITEMS)
    items = [_iv_item(o, 10.0 + (i % 50) * 7.5) for i, o in enumerate(options)]
    status, body = await _post(app, "/v1/fo/iv", {"items": items}, headers)
    assert status == 200
    results = body["results"]
    assert len(results) == MAX_BATCH_ITEMS
    assert sum(r["iv"] is not None for r in results) > MAX_BATCH_ITEMS // 4
    for i in (0, 7, 31_337, 77_777, MAX_BATCH_ITEMS - 1):
        assert results[i] == {"iv": _pure_iv(items[i])}


async def test_a_large_batch_is_computed_off_the_event_loop(
    app: QuartTrio, headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a large batch is computed, the event loop keeps serving other requests."""
    started, release = threading.Event(), threading.Event()
    served_meanwhile: list[bool] = []

    def blocking_body(raw: Any, **kwargs: Any) -> bytes:
        started.set()
        served_meanwhile.append(release.wait(timeout=10))  # the loop must set it
        return real_body(raw, **kwargs)

    real_body = analytics_module.option_body
    monkeypatch.setattr(analytics_module, "option_body", blocking_body)
    answers: list[tuple[int, Any]] = []

    async def post_batch() -> None:
        answers.append(await _post(app, "/v1/fo/greeks", {"items": _options(2_000)}, headers))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(post_batch)
        await trio.to_thread.run_sync(started.wait)
        health = await app.test_client().get("/health")
        assert health.status_code == 200
        release.set()
    assert served_meanwhile == [True]
    assert answers[0][0] == 200 and len(answers[0][1]["results"]) == 2_000


async def test_a_batch_over_the_limit_is_refused(app: QuartTrio, headers: dict[str, str]) -> None:
    """More than 100,000 items is 422, not a long computation."""
    items = [BSM_CALL] * (MAX_BATCH_ITEMS + 1)
    status, body = await _post(app, "/v1/fo/greeks", {"items": items}, headers)
    assert status == 422
    assert body["error"]["details"]["errors"][0]["type"] == "too_long"


@pytest.mark.parametrize(
    ("change", "field", "kind"),
    [
        ({"strike": None}, "strike", "missing"),
        ({"volatility": "__drop__"}, "volatility", "missing"),
        ({"strike": True}, "strike", "number_type"),
        ({"strike": [22000]}, "strike", "number_type"),
        ({"rate": "NaN"}, "rate", "number_parsing"),
        ({"volatility": "Infinity"}, "volatility", "number_parsing"),
        ({"underlying_price": "-inf"}, "underlying_price", "number_parsing"),
        ({"strike": "1e5"}, "strike", "number_parsing"),
        ({"strike": -1}, "strike", "greater_than_equal"),
        ({"underlying_price": "-22000"}, "underlying_price", "greater_than_equal"),
        ({"volatility": -0.2}, "volatility", "greater_than_equal"),
        ({"model": "heston"}, "model", "literal_error"),
        ({"option_type": "CALL"}, "option_type", "literal_error"),
        ({"gamma_scale": 1}, "gamma_scale", "extra_forbidden"),
        ({"expiry_ts": NOW_MS + 86_400_000}, "expiry_ts", "value_error"),
        ({"valuation_ts": NOW_MS}, "valuation_ts", "value_error"),
        ({"time_to_expiry": "__drop__"}, "time_to_expiry", "missing"),
    ],
)
async def test_invalid_greeks_inputs_are_422(
    app: QuartTrio, headers: dict[str, str], change: dict[str, Any], field: str, kind: str
) -> None:
    """Missing, wrongly typed, non-finite, negative or unknown inputs answer 422."""
    item = {**BSM_CALL, **change}
    item = {k: v for k, v in item.items() if v != "__drop__"}
    status, body = await _post(app, "/v1/fo/greeks", item, headers)
    assert status == 422
    error = body["error"]
    assert error["code"] == "validation_failed"
    assert {"loc": [field], "type": kind} in [
        {"loc": e["loc"], "type": e["type"]} for e in error["details"]["errors"]
    ]
    assert error["message"].startswith(field)


async def test_a_negative_option_price_is_422_for_iv(
    app: QuartTrio, headers: dict[str, str]
) -> None:
    """IV refuses a negative price; a zero price is valid and has no IV."""
    status, _ = await _post(app, "/v1/fo/iv", _iv_item(BSM_CALL, -1.0), headers)
    assert status == 422
    status, body = await _post(app, "/v1/fo/iv", _iv_item(BSM_CALL, 0), headers)
    assert (status, body) == (200, {"iv": None})


@pytest.mark.parametrize(
    "change",
    [
        {"underlying_price": 0},
        {"strike": "0"},
        {"volatility": 0.0},
        {"time_to_expiry": 0},
        {"time_to_expiry": -0.01},
    ],
)
async def test_zero_inputs_and_expired_options_give_all_null(
    app: QuartTrio, headers: dict[str, str], change: dict[str, Any]
) -> None:
    """Zero underlying, strike or volatility and T <= 0 are valid: every output is null."""
    status, body = await _post(app, "/v1/fo/greeks", {**BSM_CALL, **change}, headers)
    assert (status, body) == (200, ALL_NULL)
    if "volatility" not in change:  # IV takes a price instead
        iv_item = _iv_item({**BSM_CALL, **change}, 100.0)
        status, body = await _post(app, "/v1/fo/iv", iv_item, headers)
        assert (status, body) == (200, {"iv": None})


async def test_an_expiry_ts_in_the_past_gives_all_null(
    app: QuartTrio, headers: dict[str, str]
) -> None:
    """An expiry before the valuation instant is expired (T < 0): every output is null."""
    item = {k: v for k, v in BSM_CALL.items() if k != "time_to_expiry"}
    item["expiry_ts"] = NOW_MS - 86_400_000
    assert await _post(app, "/v1/fo/greeks", item, headers) == (200, ALL_NULL)


async def test_a_bad_batch_item_gets_one_error_slot(
    app: QuartTrio, headers: dict[str, str]
) -> None:
    """An invalid item is answered in its slot; the other items are computed."""
    items: list[Any] = [BSM_CALL, {**BSM_CALL, "strike": "NaN"}, 42, BSM_CALL]
    status, body = await _post(app, "/v1/fo/greeks", {"items": items}, headers)
    assert status == 200
    results = body["results"]
    assert results[0] == results[3] == _pure_greeks(BSM_CALL)
    for slot, loc in ((results[1], ["strike"]), (results[2], [])):
        error = slot["error"]
        assert set(error) == {"code", "message", "details"}
        assert error["code"] == "validation_failed"
        assert error["details"]["errors"][0]["loc"] == loc


@pytest.mark.parametrize(
    "body",
    [[BSM_CALL], {"items": BSM_CALL}, {"items": [], "extra": 1}, "greeks"],
)
async def test_malformed_bodies_are_422(
    app: QuartTrio, headers: dict[str, str], body: object
) -> None:
    """A body that is neither an item nor an ``{"items": [...]}`` batch is 422."""
    status, answer = await _post(app, "/v1/fo/greeks", body, headers)
    assert status == 422
    assert answer["error"]["code"] == "validation_failed"


async def test_a_body_that_is_not_json_is_400(app: QuartTrio, headers: dict[str, str]) -> None:
    """Bad JSON is 400 bad_json, not 422 nor 500."""
    resp = await app.test_client().post("/v1/fo/iv", data=b"{nope", headers=headers)
    assert resp.status_code == 400
    assert (await resp.get_json())["error"]["code"] == "bad_json"


async def test_an_empty_batch_has_no_results(app: QuartTrio, headers: dict[str, str]) -> None:
    """``{"items": []}`` is a valid, empty batch."""
    assert await _post(app, "/v1/fo/iv", {"items": []}, headers) == (200, {"results": []})


# ----------------------------------------------------------------- max pain


async def test_max_pain_returns_exact_payouts_and_ratios(
    app: QuartTrio, headers: dict[str, str]
) -> None:
    """Payout curve ascending with exact decimal strings; PCRs are unrounded floats."""
    strikes = [
        {"strike": "22100.5", "call_oi": 300, "put_oi": "50", "call_volume": 7, "put_volume": 3},
        {"strike": 22000, "call_oi": 100, "put_oi": 200, "call_volume": 5, "put_volume": 9},
        {"strike": "21900", "call_oi": 10, "put_oi": 400},
    ]
    status, body = await _post(app, "/v1/fo/maxpain", {"strikes": strikes}, headers)
    assert status == 200
    # L(21900) = 200*100 + 50*200.5; L(22000) = 10*100 + 50*100.5; L(22100.5) = 10*200.5 + 100*100.5
    assert body["payout"] == [
        {"strike": "21900", "value": "30025.0"},
        {"strike": "22000", "value": "6025.0"},
        {"strike": "22100.5", "value": "12055.0"},
    ]
    assert body["max_pain"] == "22000"
    assert body["pcr_oi"] == 650 / 410
    assert body["pcr_volume"] == 12 / 12


async def test_max_pain_ties_go_to_the_lowest_strike_and_empty_is_null(
    app: QuartTrio, headers: dict[str, str]
) -> None:
    """Equal payouts pick the lowest strike; an empty chain has null max pain and PCRs."""
    strikes = [{"strike": k, "call_oi": 0, "put_oi": 0} for k in ("200", "100", "300")]
    _, body = await _post(app, "/v1/fo/maxpain", {"strikes": strikes}, headers)
    assert body["max_pain"] == "100"
    assert body["pcr_oi"] is None
    assert [p["value"] for p in body["payout"]] == ["0", "0", "0"]
    _, empty = await _post(app, "/v1/fo/maxpain", {"strikes": []}, headers)
    assert empty == {"max_pain": None, "pcr_oi": None, "pcr_volume": None, "payout": []}


@pytest.mark.parametrize(
    ("strikes", "kind"),
    [
        ([{"strike": "100", "call_oi": 1, "put_oi": 1}] * 2, "duplicate_strike"),
        ([{"strike": "100.0", "call_oi": 1, "put_oi": 1}, {"strike": 100, "call_oi": 2,
          "put_oi": 0}], "duplicate_strike"),
        ([{"strike": "-100", "call_oi": 1, "put_oi": 1}], "greater_than_equal"),
        ([{"strike": 100.5, "call_oi": 1, "put_oi": 1}], "not_decimal"),
        ([{"strike": "100", "call_oi": -1, "put_oi": 1}], "negative"),
        ([{"strike": "100", "put_oi": 1}], "missing"),
        ([{"strike": "100", "call_oi": 1, "put_oi": 1, "iv": 0.2}], "extra_forbidden"),
    ],
)  # fmt: skip
async def test_invalid_chains_are_422(
    app: QuartTrio, headers: dict[str, str], strikes: list[dict[str, Any]], kind: str
) -> None:
    """Duplicate strikes, negative or fractional money, bad counts, unknown fields: 422."""
    status, body = await _post(app, "/v1/fo/maxpain", {"strikes": strikes}, headers)
    assert status == 422
    assert body["error"]["details"]["errors"][0]["type"] == kind
    if kind == "duplicate_strike":
        assert body["error"]["details"]["code"] == "duplicate_strike"


async def test_max_pain_batch_answers_each_chain(app: QuartTrio, headers: dict[str, str]) -> None:
    """A batch of chains has one result or one error slot per chain."""
    good = {"strikes": [{"strike": 100, "call_oi": 1, "put_oi": 2}]}
    bad = {"strikes": [{"strike": 100, "call_oi": 1, "put_oi": 2}] * 2}
    status, body = await _post(app, "/v1/fo/maxpain", {"items": [good, bad]}, headers)
    assert status == 200
    assert body["results"][0]["max_pain"] == "100"
    assert body["results"][1]["error"]["details"]["code"] == "duplicate_strike"


# ----------------------------------------------------------------- futures


async def test_futures_are_analyzed_nearest_first_with_buildup(
    app: QuartTrio, headers: dict[str, str]
) -> None:
    """Contracts come back nearest expiry first with basis, carry, build-up and rollover."""
    request = {
        "spot": "22000",
        "as_of": "2026-03-16",
        "futures": [
            {"expiry": "2026-04-28", "price": "22250.5", "oi": 300,
             "prev_price": "22300", "prev_oi": 250},
            {"expiry": "2026-03-30", "price": "22110", "oi": 600,
             "prev_price": "22050", "prev_oi": 500},
            {"expiry": "2026-05-26", "price": 22400, "oi": 100},
        ],
    }  # fmt: skip
    status, body = await _post(app, "/v1/futures/analyze", request, headers)
    assert status == 200
    contracts = body["contracts"]
    assert [c["expiry"] for c in contracts] == ["2026-03-30", "2026-04-28", "2026-05-26"]
    assert [c["days_to_expiry"] for c in contracts] == [14, 43, 71]
    assert [c["basis"] for c in contracts] == ["110", "250.5", "400"]
    assert [c["buildup"] for c in contracts] == ["long_buildup", "short_buildup", None]
    assert contracts[0]["basis_pct"] == pytest.approx(0.5)
    assert contracts[0]["annualized_carry_pct"] == pytest.approx(0.005 * 365 / 14 * 100)
    assert body["rollover_pct"] == pytest.approx(400 / 1000 * 100)


async def test_futures_as_of_defaults_to_today_in_ist(
    app: QuartTrio, headers: dict[str, str]
) -> None:
    """Without as_of, days count from the engine clock's IST date."""
    request = {"spot": 100, "futures": [{"expiry": "2026-03-17", "price": 101}]}
    _, body = await _post(app, "/v1/futures/analyze", request, headers)
    assert body["contracts"][0]["days_to_expiry"] == 1
    assert body["rollover_pct"] is None


@pytest.mark.parametrize(
    ("request_body", "kind"),
    [
        ({"spot": 1, "futures": [{"expiry": "2026-03-30", "price": 1}] * 2}, "duplicate_expiry"),
        ({"spot": "-1", "futures": []}, "greater_than_equal"),
        ({"spot": 1, "futures": [{"expiry": "30-03-2026", "price": 1}]}, "date_parsing"),
        ({"spot": 1, "as_of": 1773600000, "futures": []}, "date_parsing"),
        ({"spot": 1, "futures": [{"expiry": "2026-03-30"}]}, "missing"),
        ({"spot": 1, "futures": [], "note": "x"}, "extra_forbidden"),
    ],
)
async def test_invalid_futures_requests_are_422(
    app: QuartTrio, headers: dict[str, str], request_body: dict[str, Any], kind: str
) -> None:
    """Duplicate expiries, negative money, bad dates, missing or unknown fields: 422."""
    status, body = await _post(app, "/v1/futures/analyze", request_body, headers)
    assert status == 422
    assert body["error"]["details"]["errors"][0]["type"] == kind


# ----------------------------------------------------------------- indicators


def _candles(n: int) -> list[dict[str, Any]]:
    start = ist_ms(2026, 3, 16, 9, 15)
    out = []
    for i in range(n):
        close = 22000 + (i * 37 % 23) - (i % 5) * 1.5
        out.append(
            {
                "ts": start + i * 60_000,
                "open": str(close - 2),
                "high": close + 4,
                "low": close - 5,
                "close": close,
                "volume": 1000 + i % 7 * 100,
            }
        )
    return out


def _pure_candles(rows: list[dict[str, Any]]) -> Candles:
    return Candles(
        ts=[r["ts"] for r in rows],
        open=[float(r["open"]) for r in rows],
        high=[float(r["high"]) for r in rows],
        low=[float(r["low"]) for r in rows],
        close=[float(r["close"]) for r in rows],
        volume=[float(r["volume"]) for r in rows],
    )


async def test_single_output_indicator_equals_the_pure_function(
    app: QuartTrio, headers: dict[str, str]
) -> None:
    """RSI(14) over the candles: one value per candle, null during warm-up."""
    rows = _candles(60)
    request = {"indicator": "rsi", "params": {"period": 14}, "candles": rows}
    status, body = await _post(app, "/v1/indicators", request, headers)
    assert status == 200
    assert body == {"values": compute_indicator("rsi", {"period": 14}, _pure_candles(rows))}
    assert body["values"][13] is None and body["values"][14] is not None


async def test_multi_output_indicator_returns_named_series(
    app: QuartTrio, headers: dict[str, str]
) -> None:
    """MACD answers ``{"values": {"macd", "signal", "hist"}}`` with default parameters."""
    rows = _candles(80)
    status, body = await _post(
        app, "/v1/indicators", {"indicator": "macd", "candles": rows}, headers
    )
    assert status == 200
    assert set(body["values"]) == {"macd", "signal", "hist"}
    assert body["values"] == compute_indicator("macd", None, _pure_candles(rows))


async def test_a_long_series_is_computed(app: QuartTrio, headers: dict[str, str]) -> None:
    """20,000 candles (a worker-thread body) give 20,000 values."""
    rows = _candles(20_000)
    _, body = await _post(app, "/v1/indicators", {"indicator": "vwap", "candles": rows}, headers)
    assert len(body["values"]) == 20_000
    assert body["values"] == compute_indicator("vwap", None, _pure_candles(rows))


@pytest.mark.parametrize(
    ("request_body", "kind"),
    [
        ({"indicator": "supertrend", "candles": []}, "unknown_indicator"),
        ({"indicator": "sma", "params": {"period": 0}, "candles": []}, "invalid_param"),
        ({"indicator": "sma", "params": {"length": 5}, "candles": []}, "invalid_param"),
        ({"indicator": "sma", "candles": [{**_candles(1)[0], "close": "NaN"}]}, "number_parsing"),
        ({"indicator": "sma", "candles": [{**_candles(1)[0], "volume": -5}]}, "greater_than_equal"),
        ({"indicator": "sma", "candles": _candles(2)[::-1]}, "value_error"),
        ({"indicator": "sma", "candles": [{**_candles(1)[0], "vol": 1}]}, "extra_forbidden"),
        ({"candles": []}, "missing"),
    ],
)
async def test_invalid_indicator_requests_are_422(
    app: QuartTrio, headers: dict[str, str], request_body: dict[str, Any], kind: str
) -> None:
    """Unknown indicators, bad params and bad candles answer 422 naming the problem."""
    status, body = await _post(app, "/v1/indicators", request_body, headers)
    assert status == 422
    assert body["error"]["details"]["errors"][0]["type"] == kind


async def test_stream_candles_can_be_posted_back(app: QuartTrio, headers: dict[str, str]) -> None:
    """Candle events (with symbol, tf, closed) are accepted as they are."""
    rows = [{**c, "symbol": "NIFTY", "tf": "1m", "closed": True} for c in _candles(5)]
    status, body = await _post(
        app, "/v1/indicators", {"indicator": "obv", "candles": rows}, headers
    )
    assert status == 200
    assert len(body["values"]) == 5


# ----------------------------------------------------------------- calendar


async def test_holidays_of_a_year(app: QuartTrio) -> None:
    """GET /v1/calendar/holidays lists the year's holidays, ascending, without a token."""
    status, body = await _get(app, "/v1/calendar/holidays?year=2026")
    assert status == 200
    assert body["year"] == 2026
    dates = [h["date"] for h in body["holidays"]]
    assert dates == sorted(dates)
    assert {"2026-01-15", "2026-03-31", "2026-12-25"} <= set(dates)
    assert all(h["name"] for h in body["holidays"])


async def test_monthly_expiry_on_a_holiday_moves_to_the_previous_trading_day(
    app: QuartTrio,
) -> None:
    """NIFTY's March 2026 monthly (Tue 31 Mar, a holiday) expires on Mon 30 Mar."""
    path = "/v1/calendar/expiries?underlying=NIFTY&from=2026-03-01&count=2&kind=monthly"
    assert await _get(app, path) == (200, {"expiries": ["2026-03-30", "2026-04-28"]})


async def test_weekly_expiries_default_from_today(app: QuartTrio) -> None:
    """NIFTY weeklies from the engine clock's date (Mon 16 Mar 2026): Tuesdays, shifted."""
    status, body = await _get(app, "/v1/calendar/expiries?underlying=nifty&count=3&kind=weekly")
    assert (status, body) == (200, {"expiries": ["2026-03-17", "2026-03-24", "2026-03-30"]})


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("underlying=BANKNIFTY&from=2026-03-01&kind=weekly", "no_weekly_expiry"),
        ("underlying=NIFTY&from=2025-01-01", "expiry_rules_unavailable"),
    ],
)
async def test_calendar_rule_errors_are_422_with_their_code(
    app: QuartTrio, query: str, code: str
) -> None:
    """Calendar errors answer 422 with the calendar error's code in details."""
    status, body = await _get(app, f"/v1/calendar/expiries?{query}")
    assert status == 422
    assert body["error"]["code"] == "validation_failed"
    assert body["error"]["details"]["code"] == code


@pytest.mark.parametrize(
    "path",
    [
        "/v1/calendar/holidays",
        "/v1/calendar/holidays?year=twenty",
        "/v1/calendar/holidays?year=2026&month=3",
        "/v1/calendar/expiries?underlying=NIFTY&from=2026-3-1",
        "/v1/calendar/expiries?underlying=NIFTY&from=1773600000",
        "/v1/calendar/expiries?underlying=NIFTY&count=0",
        "/v1/calendar/expiries?underlying=NIFTY&kind=daily",
        "/v1/calendar/expiries?underlying=NIFTY&from=9999-12-28",
        "/v1/calendar/session?at=soon",
        "/v1/calendar/session?at=-1",
        "/v1/calendar/session?segment=currency",
    ],
)
async def test_bad_calendar_queries_are_422(app: QuartTrio, path: str) -> None:
    """Missing, malformed, out-of-range or unknown query values answer 422."""
    status, body = await _get(app, path)
    assert status == 422
    assert body["error"]["code"] == "validation_failed"


async def test_futures_have_a_pre_open_and_options_do_not(app: QuartTrio) -> None:
    """At 09:05 IST on a trading day futures are in pre-open; options are closed until 09:15."""
    at = ist_ms(2026, 3, 16, 9, 5)
    status, futures = await _get(app, f"/v1/calendar/session?at={at}&segment=futures")
    assert status == 200
    assert futures == {
        "trading_day": True,
        "open": True,
        "phase": "pre_open",
        "next_open_ts": ist_ms(2026, 3, 17, 9, 0),
    }
    _, options = await _get(app, f"/v1/calendar/session?at={at}&segment=options")
    assert options == {
        "trading_day": True,
        "open": False,
        "phase": "closed",
        "next_open_ts": ist_ms(2026, 3, 16, 9, 15),
    }


async def test_session_defaults_to_now_and_futures(app: QuartTrio) -> None:
    """Without ``at`` the engine clock is used (10:00 IST, regular market)."""
    _, body = await _get(app, "/v1/calendar/session")
    assert body["phase"] == "regular" and body["open"] is True


# ----------------------------------------------------------------- auth and docs

READ_ROUTES = [
    "/v1/fo/greeks",
    "/v1/fo/iv",
    "/v1/fo/maxpain",
    "/v1/futures/analyze",
    "/v1/indicators",
]


@pytest.mark.parametrize("path", READ_ROUTES)
async def test_read_routes_need_a_token(app: QuartTrio, path: str) -> None:
    """Without a bearer token every analytics POST is 401."""
    status, body = await _post(app, path, BSM_CALL, None)
    assert status == 401
    assert body["error"]["code"] == "unauthenticated"


@pytest.mark.parametrize("path", READ_ROUTES)
async def test_read_routes_need_the_read_scope(app: QuartTrio, config: Config, path: str) -> None:
    """A valid token without scope ``read`` is 403."""
    status, body = await _post(app, path, BSM_CALL, _auth(config, "feed:publish"))
    assert status == 403
    assert body["error"]["code"] == "forbidden"


async def test_openapi_documents_the_analytics_routes(app: QuartTrio) -> None:
    """Every route is in /openapi.json; the POSTs carry the bearer scheme and a body schema."""
    _, spec = await _get(app, "/openapi.json")
    paths = spec["paths"]
    for path in READ_ROUTES:
        operation = paths[path]["post"]
        assert operation["security"] == [{"bearer": []}]
        assert "requestBody" in operation and "200" in {str(k) for k in operation["responses"]}
    for path in ("/v1/calendar/holidays", "/v1/calendar/expiries", "/v1/calendar/session"):
        operation = paths[path]["get"]
        assert "security" not in operation
        assert operation["parameters"]
    names = {p["name"] for p in paths["/v1/calendar/expiries"]["get"]["parameters"]}
    assert names == {"underlying", "from", "count", "kind"}
