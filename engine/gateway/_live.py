"""Live analytics over HTTP: option chain, futures and indicators from live market state.

Routes (scope ``read``), per PROTOCOL.md:

* ``GET /v1/fo/chain/<underlying>?expiry=YYYY-MM-DD``: the live chain (see
  :mod:`actors.market.chain` for the model and the spot rules). 404 for a chain the
  master does not know or none of whose options has a quote yet; 422 for a bad date.
* ``GET /v1/futures/<underlying>``: the ``POST /v1/futures/analyze`` response built from
  live quotes (see :mod:`actors.market.live`). 404 without futures or spot quotes.
* ``GET /v1/indicators/<symbol>?tf=1m&indicator=rsi&period=14``: the POST's ``values``
  over the symbol's kept candles plus its forming bar. Parameters other than ``tf`` and
  ``indicator`` are the indicator's (PROTOCOL.md names), as decimal numbers. 422 for an
  unknown indicator or parameter, a bad value or timeframe; 404 without candles.

Authentication is checked before the query string, so an anonymous request is a 401
whatever its query.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from quart import Blueprint, Response
from quart_schema import document_response, security_scheme, validate_querystring

from actors.market.chain import chain_snapshot
from actors.market.live import (
    LiveIndicators,
    NoLiveData,
    UniverseCache,
    futures_to_wire,
    live_futures,
)
from actors.registry import Actors
from engine.analytics import IndicatorError
from protocol import ErrorCode, ProtocolError, parse_symbol

from ..auth import Scope
from ..context import Engine
from ._analytics import FuturesOut, IndicatorOut
from ._auth import require
from ._responses import json_response

_DATE_RE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# A plain decimal number: no underscores, no "nan"/"inf" (which float() would accept).
_NUMBER_RE: Final = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,3})?")
_INTEGER_RE: Final = re.compile(r"[+-]?[0-9]{1,9}")
MAX_QUERY_PARAMS: Final = 8  # indicator parameters in one query, at most
INVALID_PARAM: Final = "invalid_param"  # IndicatorError codes
UNKNOWN_INDICATOR: Final = "unknown_indicator"


class ChainQuery(BaseModel):
    """Which expiry of the chain."""

    model_config = ConfigDict(extra="forbid")
    expiry: dt.date = Field(description="expiry date, YYYY-MM-DD (IST)")

    @field_validator("expiry", mode="before")
    @classmethod
    def _iso_date(cls, value: object) -> dt.date:
        # Only YYYY-MM-DD: pydantic alone would also take epoch numbers.
        if not isinstance(value, str) or not _DATE_RE.fullmatch(value):
            raise ValueError("expiry must be a date YYYY-MM-DD")
        return dt.date.fromisoformat(value)


class IndicatorQuery(BaseModel):
    """Timeframe and indicator; any other key is an indicator parameter (e.g. ``period``)."""

    model_config = ConfigDict(extra="allow")
    tf: Literal["1m", "5m", "15m", "1h", "1d"] = "1m"
    indicator: str = Field(min_length=1, max_length=32)


class ChainSideOut(BaseModel):
    """One option of a chain row (money as decimal strings)."""

    symbol: str
    ltp: str | None
    oi: int | None
    volume: int | None
    iv: float | None
    delta: float | None
    gamma: float | None
    theta: float | None
    vega: float | None


class ChainRowOut(BaseModel):
    """One strike."""

    strike: str
    call: ChainSideOut | None
    put: ChainSideOut | None


class ChainOut(BaseModel):
    """The live option chain."""

    underlying: str
    expiry: str
    spot: str | None
    max_pain: str | None
    pcr_oi: float | None
    pcr_volume: float | None
    rows: list[ChainRowOut]


def _name(value: str, what: str) -> str:
    try:
        return parse_symbol(value)
    except ValueError:
        raise ProtocolError(ErrorCode.NOT_FOUND, f"unknown {what}", {what: value[:40]}) from None


def _invalid(
    message: str, code: str, loc: str, extra: Mapping[str, object] | None = None
) -> ProtocolError:
    # The 422 details of POST /v1/indicators and of the query validation: the rule's code
    # and one {"loc", "msg", "type"} entry naming the query key.
    errors = [{"loc": [loc], "msg": message, "type": code}]
    return ProtocolError(
        ErrorCode.VALIDATION_FAILED, message, {**(extra or {}), "code": code, "errors": errors}
    )


def _number(name: str, raw: object) -> int | float:
    # Query values are text: "14" -> 14, "2.5" -> 2.5; the indicator checks the range.
    if not isinstance(raw, str) or not _NUMBER_RE.fullmatch(raw):
        raise _invalid(f"{name} must be a number", INVALID_PARAM, name, {"param": name})
    return int(raw) if _INTEGER_RE.fullmatch(raw) else float(raw)


def _indicator_params(query: IndicatorQuery) -> dict[str, object]:
    extra = query.model_extra or {}
    if len(extra) > MAX_QUERY_PARAMS:
        raise _invalid("too many parameters", INVALID_PARAM, "query", {"max": MAX_QUERY_PARAMS})
    return {name: _number(name, raw) for name, raw in extra.items()}


def live_blueprint(engine: Engine, actors: Actors) -> Blueprint:
    """Return the blueprint of the live analytics endpoints (chain, futures, indicators)."""
    bp = Blueprint("live", __name__)
    market = actors.market
    indicators = LiveIndicators(market)
    universes = UniverseCache(market.master)

    @bp.get("/v1/fo/chain/<underlying>")
    @security_scheme([{"bearer": []}])
    @document_response(ChainOut)
    @require(engine, Scope.READ)
    @validate_querystring(ChainQuery)
    async def get_chain(underlying: str, query_args: ChainQuery) -> Response:
        """The live option chain of one expiry, with IV, Greeks, OI, max pain and PCR."""
        name = _name(underlying, "underlying")
        snapshot = chain_snapshot(market, name, query_args.expiry, engine.clock(), universes.get())
        if snapshot is None:
            raise ProtocolError(
                ErrorCode.NOT_FOUND,
                "no such chain, or no quotes for it yet",
                {"underlying": name, "expiry": query_args.expiry.isoformat()},
            )
        return json_response(snapshot.to_wire())

    @bp.get("/v1/futures/<underlying>")
    @security_scheme([{"bearer": []}])
    @document_response(FuturesOut)
    @require(engine, Scope.READ)
    async def get_futures(underlying: str) -> Response:
        """Basis, carry and rollover of an underlying's futures, from live quotes."""
        name = _name(underlying, "underlying")
        try:
            analysis = live_futures(market, name, engine.clock(), universes.get())
        except NoLiveData as exc:
            raise ProtocolError(ErrorCode.NOT_FOUND, str(exc), {"underlying": name}) from None
        return json_response(futures_to_wire(analysis))

    @bp.get("/v1/indicators/<symbol>")
    @security_scheme([{"bearer": []}])
    @document_response(IndicatorOut)
    @require(engine, Scope.READ)
    @validate_querystring(IndicatorQuery)
    async def get_indicator(symbol: str, query_args: IndicatorQuery) -> Response:
        """An indicator over the symbol's live candles (kept closed bars, then the forming one)."""
        name = _name(symbol, "symbol")
        params = _indicator_params(query_args)
        try:
            values = indicators.compute(name, query_args.tf, query_args.indicator, params)
        except IndicatorError as exc:
            loc = "indicator" if exc.code == UNKNOWN_INDICATOR else str(exc.details.get("param"))
            raise _invalid(exc.message, exc.code, loc, exc.details) from None
        except NoLiveData as exc:
            raise ProtocolError(ErrorCode.NOT_FOUND, str(exc), {"symbol": name}) from None
        return json_response({"values": values})

    return bp
