"""Read-only market data over HTTP: latest quote, candles, instruments (scope ``read``).

Not named by PROTOCOL.md; documented in the OpenAPI document and the README. The
streaming channels (``quotes:``, ``candles:``) carry the same objects live.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field
from quart import Blueprint, Response
from quart_schema import document_response, security_scheme, validate_querystring

from actors.market.candles import TIMEFRAMES
from actors.registry import Actors
from protocol import ErrorCode, ProtocolError, parse_symbol

from ..auth import Scope
from ..context import Engine
from ._auth import require
from ._responses import json_response

MAX_CANDLES: Final = 500


class CandleQuery(BaseModel):
    """Which candles: timeframe and how many of the newest."""

    model_config = ConfigDict(extra="forbid")
    tf: Literal["1m", "5m", "15m", "1h", "1d"] = "1m"
    limit: int = Field(default=100, ge=1, le=MAX_CANDLES)


class ItemsOut(BaseModel):
    """A list response."""

    items: list[dict[str, Any]]


def _symbol(value: str) -> str:
    try:
        return parse_symbol(value)
    except ValueError:
        raise ProtocolError(ErrorCode.NOT_FOUND, "unknown symbol", {"symbol": value[:40]}) from None


def market_blueprint(engine: Engine, actors: Actors) -> Blueprint:
    """Return the blueprint of the market-data read endpoints."""
    bp = Blueprint("market", __name__)
    market = actors.market
    assert set(TIMEFRAMES) == {"1m", "5m", "15m", "1h", "1d"}  # noqa: S101 - schema in sync

    @bp.get("/v1/quotes/<symbol>")
    @security_scheme([{"bearer": []}])
    @require(engine, Scope.READ)
    async def get_quote(symbol: str) -> Response:
        """The latest quote of a symbol (404 before its first tick)."""
        quote = market.quote(_symbol(symbol))
        if quote is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "no quote for this symbol", {"symbol": symbol})
        return json_response(quote.to_wire())

    @bp.get("/v1/candles/<symbol>")
    @security_scheme([{"bearer": []}])
    @validate_querystring(CandleQuery)
    @document_response(ItemsOut)
    @require(engine, Scope.READ)
    async def get_candles(symbol: str, query_args: CandleQuery) -> Response:
        """The newest closed candles of a timeframe, oldest first, then the forming one."""
        book = market.candles(_symbol(symbol))
        if book is None:
            raise ProtocolError(
                ErrorCode.NOT_FOUND, "no candles for this symbol", {"symbol": symbol}
            )
        items = [c.to_wire() for c in book.history(query_args.tf)]
        forming = book.forming(query_args.tf)
        if forming is not None:
            items.append(forming.to_wire())
        return json_response({"items": items[-query_args.limit :]})

    @bp.get("/v1/instruments")
    @security_scheme([{"bearer": []}])
    @document_response(ItemsOut)
    @require(engine, Scope.READ)
    async def get_instruments() -> Response:
        """Every instrument of the master, sorted by symbol."""
        return json_response({"items": [i.to_wire() for i in market.master.all()]})

    return bp
