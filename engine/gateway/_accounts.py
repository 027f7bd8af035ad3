"""Accounts over HTTP: admin creation, orders, broker trades, positions, P&L.

Every account route checks the token's scope and its ``accounts`` first (403, a
counted security event), then talks to the account actor through its bounded
mailbox: a full mailbox answers 503 ``busy`` at once, never a hang.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Final

import orjson
import trio
from pydantic import BaseModel, ConfigDict, Field
from quart import Blueprint, Response, g, request
from quart_schema import (
    document_request,
    document_response,
    security_scheme,
    validate_querystring,
)

import protocol
from actors.account.actor import AccountHandle
from actors.account.messages import (
    CancelOrder,
    Command,
    GetOrders,
    GetPnl,
    GetPositions,
    PlaceOrder,
    RecordTrade,
)
from actors.registry import Actors
from engine.mailbox import MailboxClosed, MailboxFull
from protocol import (
    ErrorCode,
    ProtocolError,
    RequestError,
    check_multiples,
    parse_order_request,
    parse_trade_request,
)

from ..auth import Principal, Scope
from ..context import Engine
from ..ratelimit import RateLimit, check
from ._auth import SECURITY_LOG, forbid, require
from ._responses import json_response

IDEMPOTENCY_KEY_RE: Final = re.compile(r"[\x21-\x7e]{1,128}")
MAX_ORDERS_PAGE: Final = 500


class AccountIn(BaseModel):
    """A new account."""

    model_config = ConfigDict(extra="forbid", strict=True)
    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")
    name: str = Field(min_length=1, max_length=200)


class OrderIn(BaseModel):
    """An order request: money and quantities are decimal strings (or integers)."""

    symbol: str
    side: str
    quantity: str | int
    type: str
    price: str | int | None = None
    tag: str | None = None


class TradeIn(BaseModel):
    """A broker trade (idempotent on ``external_id``)."""

    symbol: str
    side: str
    quantity: str | int
    price: str | int
    fees: str | int = "0"
    ts: int
    external_id: str


class OrdersQuery(BaseModel):
    """Paging of the order list (newest first)."""

    model_config = ConfigDict(extra="forbid")
    limit: int = Field(default=100, ge=1, le=MAX_ORDERS_PAGE)


class ItemsOut(BaseModel):
    """A list response."""

    items: list[dict[str, Any]]


def _invalid(exc: RequestError) -> ProtocolError:
    return ProtocolError(
        ErrorCode.VALIDATION_FAILED, f"{exc.field}: {exc.reason}", {"errors": [exc.to_wire()]}
    )


def _request_hash(body: str | bytes) -> str:
    # Canonical JSON so that key order and spacing do not make two equal bodies differ.
    canonical = orjson.dumps(protocol.loads(body), option=orjson.OPT_SORT_KEYS) if body else b""
    return hashlib.sha256(canonical).hexdigest()


def accounts_blueprint(engine: Engine, actors: Actors) -> Blueprint:
    """Return the blueprint of the account endpoints."""
    bp = Blueprint("accounts", __name__)
    accounts = actors.accounts
    cfg = engine.config.accounts
    account_limit = RateLimit(cfg.orders_per_second_account, cfg.orders_burst_account)
    subject_limit = RateLimit(cfg.orders_per_second_subject, cfg.orders_burst_subject)

    def handle_for(account_id: str, *, trade: bool) -> AccountHandle:
        principal: Principal = g.principal
        allowed = principal.can_trade(account_id) if trade else principal.can_read(account_id)
        if not allowed:
            raise forbid(
                engine, principal, f"account:{account_id[:32]}", remote=request.remote_addr
            )
        handle = accounts.get(account_id)
        if handle is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such account", {"account": account_id})
        return handle

    async def call(handle: AccountHandle, command: Command) -> Any:
        if handle.state == "quarantined":
            raise ProtocolError(
                ErrorCode.ACCOUNT_HALTED,
                "account is quarantined after repeated failures",
                {"account": handle.id},
            )
        try:
            handle.mailbox.send_nowait(command)
        except (MailboxFull, MailboxClosed):
            engine.metrics.orders.labels("busy").inc()
            raise ProtocolError(
                ErrorCode.BUSY, "account busy; retry", {"account": handle.id}, retry_after=1
            ) from None
        with trio.move_on_after(cfg.reply_timeout):
            return await command.reply.wait()
        raise ProtocolError(
            ErrorCode.BUSY, "account did not answer in time", {"account": handle.id}, retry_after=1
        )

    async def rate_limit(account_id: str) -> None:
        principal: Principal = g.principal
        try:
            await check(engine.limiter, f"orders:account:{account_id}", account_limit)
            await check(engine.limiter, f"orders:sub:{principal.sub}", subject_limit)
        except ProtocolError:
            engine.metrics.rate_limited.labels("orders").inc()
            SECURITY_LOG.warning(
                "security event: rate limited",
                extra={"sub": principal.sub, "account": account_id, "remote": request.remote_addr},
            )
            raise

    @bp.post("/v1/admin/accounts")
    @security_scheme([{"bearer": []}])
    @document_request(AccountIn)
    @require(engine, Scope.ADMIN)
    async def create_account() -> Response:
        """Create an account (scope ``admin``); an existing id is 409."""
        body = protocol.loads(await request.get_data())
        try:
            data = AccountIn.model_validate(body)
        except Exception as exc:  # pydantic.ValidationError
            raise ProtocolError(
                ErrorCode.VALIDATION_FAILED, "invalid account", {"errors": str(exc)[:500]}
            ) from None
        return json_response(await accounts.create(data.id, data.name), 201)

    @bp.get("/v1/accounts")
    @security_scheme([{"bearer": []}])
    @document_response(ItemsOut)
    @require(engine, Scope.READ)
    async def list_accounts() -> Response:
        """The accounts this token may read."""
        principal: Principal = g.principal
        rows = [r for r in await accounts.list() if principal.can_read(str(r["id"]))]
        return json_response({"items": rows})

    @bp.post("/v1/accounts/<account_id>/orders")
    @security_scheme([{"bearer": []}])
    @document_request(OrderIn)
    @require(engine, Scope.TRADE)
    async def place_order(account_id: str) -> Response:
        """Place an order; ``Idempotency-Key`` makes retries safe (same key, same body)."""
        handle = handle_for(account_id, trade=True)
        if engine.lifecycle.draining.is_set():
            # Draining (SIGTERM or the control channel's engine.drain): no new work.
            raise ProtocolError(ErrorCode.BUSY, "engine is draining", retry_after=1)
        raw = await request.get_data()
        try:
            req = parse_order_request(protocol.loads(raw))
        except RequestError as exc:
            raise _invalid(exc) from None
        inst = actors.market.master.get(req.symbol)
        if inst is None:
            raise _invalid(RequestError("symbol", "unknown_symbol"))
        try:
            check_multiples(req, inst.lot_size, inst.tick_size)
        except RequestError as exc:
            raise _invalid(exc) from None
        key = request.headers.get("Idempotency-Key")
        if key is not None and not IDEMPOTENCY_KEY_RE.fullmatch(key):
            raise _invalid(RequestError("Idempotency-Key", "bad_key"))
        await rate_limit(account_id)
        order = await call(handle, PlaceOrder(req, key, _request_hash(raw)))
        return json_response(order, 201)

    @bp.get("/v1/accounts/<account_id>/orders")
    @security_scheme([{"bearer": []}])
    @validate_querystring(OrdersQuery)
    @document_response(ItemsOut)
    @require(engine, Scope.READ)
    async def list_orders(account_id: str, query_args: OrdersQuery) -> Response:
        """Orders of the account, newest first."""
        handle = handle_for(account_id, trade=False)
        return json_response({"items": await call(handle, GetOrders(limit=query_args.limit))})

    @bp.get("/v1/accounts/<account_id>/orders/<order_id>")
    @security_scheme([{"bearer": []}])
    @require(engine, Scope.READ)
    async def get_order(account_id: str, order_id: str) -> Response:
        """One order."""
        handle = handle_for(account_id, trade=False)
        return json_response(await call(handle, GetOrders(order_id=order_id)))

    @bp.delete("/v1/accounts/<account_id>/orders/<order_id>")
    @security_scheme([{"bearer": []}])
    @require(engine, Scope.TRADE)
    async def cancel_order(account_id: str, order_id: str) -> Response:
        """Cancel an open order (409 when it is no longer open)."""
        handle = handle_for(account_id, trade=True)
        return json_response(await call(handle, CancelOrder(order_id)))

    @bp.post("/v1/accounts/<account_id>/trades")
    @security_scheme([{"bearer": []}])
    @document_request(TradeIn)
    @require(engine, Scope.TRADE)
    async def record_trade(account_id: str) -> Response:
        """Record a broker trade; repeating an ``external_id`` returns the recorded fill."""
        handle = handle_for(account_id, trade=True)
        try:
            trade = parse_trade_request(protocol.loads(await request.get_data()))
        except RequestError as exc:
            raise _invalid(exc) from None
        return json_response(await call(handle, RecordTrade(trade)), 201)

    @bp.get("/v1/accounts/<account_id>/positions")
    @security_scheme([{"bearer": []}])
    @document_response(ItemsOut)
    @require(engine, Scope.READ)
    async def positions(account_id: str) -> Response:
        """Positions of the day, closed ones included (``net_quantity`` "0")."""
        handle = handle_for(account_id, trade=False)
        return json_response({"items": await call(handle, GetPositions())})

    @bp.get("/v1/accounts/<account_id>/pnl")
    @security_scheme([{"bearer": []}])
    @require(engine, Scope.READ)
    async def pnl(account_id: str) -> Response:
        """``{"realized", "unrealized", "fees", "net"}`` rounded to 0.01, half-even."""
        handle = handle_for(account_id, trade=False)
        return json_response(await call(handle, GetPnl()))

    return bp
