"""`serve --demo` end to end: the live option chain, futures, indicators and strategy M2M.

The simulator feeds NIFTY and BANKNIFTY with their futures and option chains; the chain
endpoint must show IV and Greeks priced back from those quotes, max pain and PCR, and a
strategy on simulated options must be marked to market as the ticks arrive.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from tests.kit.server import ServerProcess, call, running_server, wait_for
from tests.kit.tokens import token

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

ADMIN = token("admin")
READ = token("read", accounts=["DEMO1"])
TRADE = token("trade", accounts=["DEMO1"])


@pytest.fixture(scope="module")
def demo() -> Iterator[ServerProcess]:
    """One `serve --demo` engine with ticks flowing and the account DEMO1."""
    with running_server("--demo", clean_exit=True) as srv:
        status, _ = call(srv, "POST", "/v1/admin/accounts", {"id": "DEMO1", "name": "d"}, ADMIN)
        assert status == 201
        yield srv


def _nifty_options(srv: ServerProcess) -> list[dict[str, Any]]:
    status, body = call(srv, "GET", "/v1/instruments", tok=READ)
    assert status == 200
    return [i for i in body["items"] if i["kind"] == "option" and i["underlying"] == "NIFTY"]


def _nearest_expiry(srv: ServerProcess) -> str:
    return min(i["expiry"] for i in _nifty_options(srv))


def test_live_chain_has_iv_greeks_max_pain_and_pcr(demo: ServerProcess) -> None:
    """GET /v1/fo/chain/NIFTY?expiry= answers the live chain with model values per strike."""
    expiry = _nearest_expiry(demo)
    path = f"/v1/fo/chain/NIFTY?expiry={expiry}"

    def chain_with_iv() -> bool:
        status, body = call(demo, "GET", path, tok=READ)
        return status == 200 and any(r["call"] and r["call"]["iv"] for r in body["rows"])

    wait_for(chain_with_iv, budget=30)
    status, chain = call(demo, "GET", path, tok=READ)
    assert status == 200
    assert (chain["underlying"], chain["expiry"]) == ("NIFTY", expiry)
    assert Decimal(chain["spot"]) > 0 and chain["max_pain"] is not None
    assert chain["pcr_oi"] is None or chain["pcr_oi"] >= 0
    strikes = [Decimal(r["strike"]) for r in chain["rows"]]
    assert strikes == sorted(strikes) and len(strikes) > 5
    priced = [r for r in chain["rows"] if r["call"] and r["call"]["iv"] is not None]
    for row in priced:
        call_side = row["call"]
        # The simulator prices options with a smile between roughly 10 % and 40 %.
        assert 0.05 < call_side["iv"] < 0.8
        assert 0 < call_side["delta"] < 1 and call_side["gamma"] > 0 and call_side["vega"] > 0
    # Deltas fall as strikes rise (a call chain is monotone).
    deltas = [r["call"]["delta"] for r in priced]
    assert deltas == sorted(deltas, reverse=True)
    assert call(demo, "GET", "/v1/fo/chain/NIFTY?expiry=2001-01-01", tok=READ)[0] == 404
    assert call(demo, "GET", "/v1/fo/chain/NIFTY?expiry=soon", tok=READ)[0] == 422
    assert call(demo, "GET", path)[0] == 401


def test_live_futures_and_indicators(demo: ServerProcess) -> None:
    """The futures analysis and a live indicator answer from the simulated feed."""

    def futures() -> bool:
        return call(demo, "GET", "/v1/futures/NIFTY", tok=READ)[0] == 200

    wait_for(futures, budget=30)
    _, body = call(demo, "GET", "/v1/futures/NIFTY", tok=READ)
    assert body["contracts"] and all(c["basis"] is not None for c in body["contracts"])
    labels = {"long_buildup", "short_buildup", "short_covering", "long_unwinding", "neutral"}

    def buildup() -> bool:
        # The simulator's futures OI moves: once it has, the contract has a previous
        # observation and a build-up label.
        _, body = call(demo, "GET", "/v1/futures/NIFTY", tok=READ)
        return any(c["buildup"] in labels for c in body["contracts"])

    wait_for(buildup, budget=30)
    status, instruments = call(demo, "GET", "/v1/instruments", tok=READ)
    future = next(i["symbol"] for i in instruments["items"] if i["kind"] == "future")
    status, values = call(
        demo, "GET", f"/v1/indicators/{future}?tf=1m&indicator=sma&period=1", tok=READ
    )
    assert status == 200 and values["values"] and values["values"][-1] is not None
    bad = call(demo, "GET", f"/v1/indicators/{future}?tf=1m&indicator=nope", tok=READ)
    assert bad[0] == 422


def test_strategy_is_marked_to_market_by_the_simulated_ticks(demo: ServerProcess) -> None:
    """A straddle on simulated NIFTY options: its M2M follows the live ltps."""
    expiry = _nearest_expiry(demo)
    options = [i for i in _nifty_options(demo) if i["expiry"] == expiry]
    strikes = sorted({Decimal(i["strike"]) for i in options})
    atm = strikes[len(strikes) // 2]
    legs = [
        {"symbol": i["symbol"], "quantity": -int(i["lot_size"]), "entry_price": "100"}
        for i in options
        if Decimal(i["strike"]) == atm
    ]
    assert len(legs) == 2  # the call and the put
    body = {"name": "short straddle", "legs": legs}
    status, created = call(demo, "POST", "/v1/accounts/DEMO1/strategies", body, TRADE)
    assert status == 201, created
    sid = created["id"]
    path = f"/v1/accounts/DEMO1/strategies/{sid}"

    def marks() -> list[str]:
        status, got = call(demo, "GET", path, tok=READ)
        assert status == 200
        return [got["m2m"]] if got["m2m"] is not None else []

    seen: set[str] = set()
    wait_for(lambda: seen.update(marks()) or len(seen) >= 2, budget=30)
    _, got = call(demo, "GET", path, tok=READ)
    assert got["greeks"]["vega"] is not None and got["greeks"]["vega"] < 0  # short options
    status, listed = call(demo, "GET", "/v1/accounts/DEMO1/strategies?sort=m2m", tok=READ)
    assert status == 200 and [s["id"] for s in listed["items"]] == [sid]
    forbidden = call(demo, "GET", path, tok=token("read", accounts=["OTHER"]))
    assert forbidden[0] == 403
