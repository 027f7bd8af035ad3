"""Strategies over HTTP: CRUD, a paged list with a whitelisted sort, payoff at expiry.

Authorisation is the account routes' own: the token's scope (``trade`` to write,
``read`` to read) and its ``accounts`` are checked first (403, a counted security
event), then the account must exist (404). Bodies and query strings are validated here
(422 naming the field); the strategy actor is reached only through its bounded
mailbox (full: 503 ``busy`` at once, never a hang).

Injection safety: query values are looked up in whitelists (``sort`` in
{name, created_ts, m2m}, ``order`` in {asc, desc}; ``limit``/``offset`` plain digits)
and the actor sorts and pages in memory, so nothing from a request is ever part of a
SQL text; the values that are stored (name, legs) travel as bound parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final, Literal

import trio
from pydantic import BaseModel, ConfigDict, Field
from quart import Blueprint, Response, g, request
from quart_schema import (
    document_querystring,
    document_request,
    document_response,
    security_scheme,
)

import protocol
from actors.registry import Actors
from actors.strategy.actor import StrategyActor
from actors.strategy.messages import (
    Command,
    CreateStrategy,
    DeleteStrategy,
    GetPayoff,
    GetStrategy,
    ListQuery,
    ListStrategies,
    PatchStrategy,
    SortField,
    SortOrder,
)
from actors.strategy.model import PayoffGrid, StrategyChanges, parse_strategy, payoff_grid
from engine.mailbox import MailboxClosed, MailboxFull
from protocol import DecimalFormatError, ErrorCode, ProtocolError, RequestError, parse_decimal

from ..auth import Principal, Scope
from ..context import Engine
from ._auth import forbid, require
from ._responses import json_response

MAX_LIMIT: Final = 500
DEFAULT_LIMIT: Final = 100
MAX_OFFSET: Final = 999_999_999
ECHO_CHARS: Final = 64  # of an offending value echoed back in an error
LIST_PARAMS: Final = frozenset({"sort", "order", "limit", "offset"})
PAYOFF_PARAMS: Final = frozenset({"from", "to", "step"})
# NOTE: the whole whitelist. A query value is only ever a key into these maps.
SORT_FIELDS: Final[Mapping[str, SortField]] = MappingProxyType(
    {"name": "name", "created_ts": "created_ts", "m2m": "m2m"}
)
SORT_ORDERS: Final[Mapping[str, SortOrder]] = MappingProxyType({"asc": "asc", "desc": "desc"})
STRATEGY_PATH: Final = "/v1/accounts/<account_id>/strategies"


class LegIn(BaseModel):
    """One leg: a known symbol, a signed non-zero quantity, a positive entry price."""

    symbol: str
    quantity: str | int
    entry_price: str | int


class StrategyIn(BaseModel):
    """A new strategy (1..100 character name, 1..50 legs)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    legs: list[LegIn] = Field(min_length=1, max_length=50)


class StrategyPatchIn(BaseModel):
    """Replace the name and/or the legs (at least one)."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=100)
    legs: list[LegIn] | None = Field(default=None, min_length=1, max_length=50)


class StrategiesQuery(BaseModel):
    """Sorting (whitelisted fields) and paging of the strategy list."""

    model_config = ConfigDict(extra="forbid")
    sort: Literal["name", "created_ts", "m2m"] = "created_ts"
    order: Literal["asc", "desc"] = "asc"
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)


class PayoffQuery(BaseModel):
    """Underlying prices from ``from`` to ``to`` every ``step`` (decimal strings)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_: str = Field(alias="from")
    to: str
    step: str


class StrategyOut(BaseModel):
    """A strategy with its live M2M (decimal string or null) and Greeks (numbers or null)."""

    id: str
    account: str
    name: str
    legs: list[dict[str, str]]
    m2m: str | None
    greeks: dict[str, float | None]
    created_ts: int
    updated_ts: int


class StrategyPageOut(BaseModel):
    """One page of strategies."""

    items: list[StrategyOut]
    total: int
    limit: int
    offset: int


class PayoffOut(BaseModel):
    """The payoff at expiry: ``value`` at each ``underlying`` price (decimal strings)."""

    points: list[dict[str, str]]


def _invalid(exc: RequestError) -> ProtocolError:
    return ProtocolError(
        ErrorCode.VALIDATION_FAILED, f"{exc.field}: {exc.reason}", {"errors": [exc.to_wire()]}
    )


def _single(args: Mapping[str, Sequence[str]], allowed: frozenset[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key in sorted(args):
        if key not in allowed:
            raise RequestError(key[:ECHO_CHARS], "unknown_parameter")
        if len(args[key]) != 1:
            raise RequestError(key, "repeated")
        out[key] = args[key][0]
    return out


def _count(value: str, where: str, high: int, *, low: int) -> int:
    # Plain ASCII digits only: no sign, spaces, exponent, underscores or expressions.
    if not (value.isascii() and value.isdigit() and len(value) <= len(str(high))):
        raise RequestError(where, "not_integer")
    n = int(value)
    if not low <= n <= high:
        raise RequestError(where, "out_of_range")
    return n


def parse_list_query(args: Mapping[str, Sequence[str]]) -> ListQuery:
    """Validate the list query: ``sort``, ``order``, ``limit`` (1..500), ``offset`` (>= 0).

    Raises:
        RequestError: an unknown or repeated key, a sort field off the whitelist, an
            order other than asc/desc, a limit or offset that is not digits in range.
    """
    values = _single(args, LIST_PARAMS)
    sort = SORT_FIELDS.get(values.get("sort", "created_ts"))
    if sort is None:
        raise RequestError("sort", "not_allowed")
    order = SORT_ORDERS.get(values.get("order", "asc"))
    if order is None:
        raise RequestError("order", "not_allowed")
    limit = _count(values.get("limit", str(DEFAULT_LIMIT)), "limit", MAX_LIMIT, low=1)
    offset = _count(values.get("offset", "0"), "offset", MAX_OFFSET, low=0)
    return ListQuery(sort, order, limit, offset)


def parse_payoff_query(args: Mapping[str, Sequence[str]]) -> PayoffGrid:
    """Validate ``from``, ``to`` and ``step`` (decimal strings; see ``payoff_grid``).

    Raises:
        RequestError: naming the parameter.
    """
    values = _single(args, PAYOFF_PARAMS)
    bounds = []
    for key in ("from", "to", "step"):
        if key not in values:
            raise RequestError(key, "missing")
        try:
            bounds.append(parse_decimal(values[key]))
        except DecimalFormatError as exc:
            raise RequestError(key, exc.reason) from None
    return payoff_grid(*bounds)


def strategies_blueprint(engine: Engine, actors: Actors, strategies: StrategyActor) -> Blueprint:
    """Return the blueprint of the strategy endpoints, talking to ``strategies``."""
    bp = Blueprint("strategies", __name__)
    reply_timeout = engine.config.accounts.reply_timeout
    master = actors.market.master

    def authorise(account_id: str, *, trade: bool) -> None:
        principal: Principal = g.principal
        allowed = principal.can_trade(account_id) if trade else principal.can_read(account_id)
        if not allowed:
            raise forbid(
                engine, principal, f"account:{account_id[:32]}", remote=request.remote_addr
            )
        if actors.accounts.get(account_id) is None:
            raise ProtocolError(
                ErrorCode.NOT_FOUND, "no such account", {"account": account_id[:ECHO_CHARS]}
            )

    async def call(command: Command) -> Any:
        try:
            strategies.mailbox.send_nowait(command)
        except (MailboxFull, MailboxClosed):
            raise ProtocolError(ErrorCode.BUSY, "strategies busy; retry", retry_after=1) from None
        with trio.move_on_after(reply_timeout):
            return await command.reply.wait()
        raise ProtocolError(ErrorCode.BUSY, "strategy actor did not answer in time", retry_after=1)

    def query() -> dict[str, list[str]]:
        return {key: request.args.getlist(key) for key in request.args}

    async def body(*, partial: bool) -> StrategyChanges:
        raw = protocol.loads(await request.get_data())
        try:
            return parse_strategy(raw, master.get, partial=partial)
        except RequestError as exc:
            raise _invalid(exc) from None

    @bp.post(STRATEGY_PATH)
    @security_scheme([{"bearer": []}])
    @document_request(StrategyIn)
    @document_response(StrategyOut, 201)
    @require(engine, Scope.TRADE)
    async def create_strategy(account_id: str) -> Response:
        """Create a strategy (scope ``trade``); unknown symbols and bad legs are 422."""
        authorise(account_id, trade=True)
        new = await body(partial=False)
        if new.name is None or new.legs is None:  # pragma: no cover - partial=False needs both
            raise _invalid(RequestError("", "missing"))
        return json_response(await call(CreateStrategy(account_id, new.name, new.legs)), 201)

    @bp.get(STRATEGY_PATH)
    @security_scheme([{"bearer": []}])
    @document_querystring(StrategiesQuery)
    @document_response(StrategyPageOut)
    @require(engine, Scope.READ)
    async def list_strategies(account_id: str) -> Response:
        """One page of the account's strategies, sorted by name, created_ts or m2m.

        Strategies without an M2M (a leg has no quote) come last in either order; ties
        keep the creation order. Any other sort, order or parameter is 422.
        """
        authorise(account_id, trade=False)
        try:
            list_query = parse_list_query(query())
        except RequestError as exc:
            raise _invalid(exc) from None
        return json_response(await call(ListStrategies(account_id, list_query)))

    @bp.get(STRATEGY_PATH + "/<strategy_id>")
    @security_scheme([{"bearer": []}])
    @document_response(StrategyOut)
    @require(engine, Scope.READ)
    async def get_strategy(account_id: str, strategy_id: str) -> Response:
        """One strategy with its live M2M and Greeks."""
        authorise(account_id, trade=False)
        return json_response(await call(GetStrategy(account_id, strategy_id)))

    @bp.patch(STRATEGY_PATH + "/<strategy_id>")
    @security_scheme([{"bearer": []}])
    @document_request(StrategyPatchIn)
    @document_response(StrategyOut)
    @require(engine, Scope.TRADE)
    async def patch_strategy(account_id: str, strategy_id: str) -> Response:
        """Replace the name and/or the legs of a strategy."""
        authorise(account_id, trade=True)
        changes = await body(partial=True)
        patch = PatchStrategy(account_id, strategy_id, changes.name, changes.legs)
        return json_response(await call(patch))

    @bp.delete(STRATEGY_PATH + "/<strategy_id>")
    @security_scheme([{"bearer": []}])
    @require(engine, Scope.TRADE)
    async def delete_strategy(account_id: str, strategy_id: str) -> Response:
        """Delete a strategy (204)."""
        authorise(account_id, trade=True)
        await call(DeleteStrategy(account_id, strategy_id))
        return Response("", status=204)

    @bp.get(STRATEGY_PATH + "/<strategy_id>/payoff")
    @security_scheme([{"bearer": []}])
    @document_querystring(PayoffQuery)
    @document_response(PayoffOut)
    @require(engine, Scope.READ)
    async def strategy_payoff(account_id: str, strategy_id: str) -> Response:
        """The payoff at expiry from ``from`` to ``to`` every ``step`` (at most 10,001 points).

        value = Σ (value at expiry − entry_price) × quantity: options at intrinsic,
        futures and equity at the underlying price. Legs on more than one underlying: 409.
        """
        authorise(account_id, trade=False)
        try:
            grid = parse_payoff_query(query())
        except RequestError as exc:
            raise _invalid(exc) from None
        return json_response(await call(GetPayoff(account_id, strategy_id, grid)))

    return bp
