"""Stateless analytics over HTTP (scope ``read``) and the market calendar (no auth).

Each POST body is decoded, validated (``_analytics_inputs``), computed and encoded by one
synchronous function; above ``INLINE_MAX_BODY_BYTES`` (a 100,000-item batch is ~20 MB) it
runs in a worker thread, at most ``WORKER_THREADS`` at once, so the event loop never stalls.
Ratios, Greeks, IV and indicators are JSON numbers or null; money (strikes, payouts, basis,
max pain) are exact decimal strings.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Final, Generic, Literal, TypeVar

import numpy as np
import trio
from pydantic import BaseModel, ConfigDict, Field, RootModel
from quart import Blueprint, Response, request
from quart_schema import document_request, document_response, security_scheme, validate_querystring

import protocol

from .. import analytics
from ..analytics import IST, CalendarError, MarketCalendar
from ..auth import Scope
from ..context import Engine
from . import _analytics_inputs as inputs
from ._analytics_inputs import GREEKS_FIELDS, IV_FIELDS, InputError, OptionFields, OptionInput
from ._auth import require
from ._responses import JSON_TYPE, json_response

# Bodies up to this size are handled on the event loop (a few hundred items, < 1 ms).
INLINE_MAX_BODY_BYTES: Final = 64 * 1024
# Concurrent heavy analytics requests per app; more wait for a thread.
WORKER_THREADS: Final = 4
MAX_CHAIN_BATCH: Final = 100
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_GREEKS: Final = ("price", "delta", "gamma", "theta", "vega", "rho")

T = TypeVar("T")
Number = float | str
Raw = str | bytes
Body = dict[str, object]


# ---------------------------------------------------------------- documentation models
class _OptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: Literal["bsm", "black76"]
    option_type: Literal["call", "put"]
    underlying_price: Number = Field(description="S (bsm) or F (black76), >= 0")
    strike: Number = Field(description=">= 0")
    time_to_expiry: Number | None = Field(None, description="years; or give expiry_ts")
    expiry_ts: int | None = Field(None, description="expiry instant, epoch ms")
    valuation_ts: int | None = Field(None, description="with expiry_ts; default now")
    rate: Number
    dividend_yield: Number | None = Field(None, description="bsm only; default 0")


class GreeksIn(_OptionIn):
    """One option; numbers are JSON numbers or decimal strings."""

    volatility: Number = Field(description="annual decimal, >= 0")


class IvIn(_OptionIn):
    """One option price; numbers are JSON numbers or decimal strings."""

    price: Number = Field(description="option price, >= 0")


class BatchIn(BaseModel, Generic[T]):
    """A batch, answered item by item; an invalid item gets an error slot."""

    items: list[T] = Field(max_length=inputs.MAX_BATCH_ITEMS)


class OneOrBatch(RootModel[T | BatchIn[T]], Generic[T]):
    """A single item, or a batch ``{"items": [...]}``."""


class CandleIn(BaseModel):
    """One bar (oldest first, strictly ascending ``ts``); candle-event fields are tolerated."""

    ts: int = Field(description="bar open, epoch ms")
    open: Number
    high: Number
    low: Number
    close: Number
    volume: Number


class IndicatorIn(BaseModel):
    """An indicator (PROTOCOL.md names and parameters) over the given candles."""

    model_config = ConfigDict(extra="forbid")
    indicator: str
    params: dict[str, float] | None = None
    candles: list[CandleIn] = Field(max_length=inputs.MAX_CANDLES)


class GreeksOut(BaseModel):
    """Price and Greeks (FINANCE.md §2 units); null where undefined."""

    price: float | None
    delta: float | None
    gamma: float | None
    theta: float | None
    vega: float | None
    rho: float | None


class IvOut(BaseModel):
    """The implied volatility; null where undefined (FINANCE.md §3)."""

    iv: float | None


class ErrorSlot(BaseModel):
    """A batch item that failed validation: ``{"error": {"code", "message", "details"}}``."""

    error: dict[str, object]


class BatchOut(BaseModel, Generic[T]):
    """One result or one error slot per item, in order."""

    results: list[T | ErrorSlot]


class OneOrBatchOut(RootModel[T | BatchOut[T]], Generic[T]):
    """The answer to a single item, or to a batch."""


class MaxPainOut(BaseModel):
    """Max pain (lowest strike on ties; null when empty), PCRs and the payout curve."""

    max_pain: str | None
    pcr_oi: float | None
    pcr_volume: float | None
    payout: list[dict[str, str]] = Field(description='[{"strike", "value"}] ascending, exact')


class ContractOut(BaseModel):
    """Per-contract analytics (FINANCE.md §5); ``buildup`` null without previous values."""

    expiry: date
    days_to_expiry: int
    basis: str
    basis_pct: float | None
    annualized_carry_pct: float | None
    buildup: str | None


class FuturesOut(BaseModel):
    """Contracts nearest expiry first, and the rollover percentage."""

    contracts: list[ContractOut]
    rollover_pct: float | None


class IndicatorOut(BaseModel):
    """One value per candle (null in warm-up), or one series per output."""

    values: list[float | None] | dict[str, list[float | None]]


class HolidaysOut(BaseModel):
    """Weekday trading holidays of the year, ascending: ``[{"date", "name"}]``."""

    year: int
    holidays: list[dict[str, str]]


class ExpiriesOut(BaseModel):
    """Expiry dates, ascending."""

    expiries: list[date]


class SessionOut(BaseModel):
    """Market state at the instant."""

    trading_day: bool
    open: bool
    phase: Literal["pre_open", "regular", "closed"]
    next_open_ts: int


# ---------------------------------------------------------------- computation
def _solve_options(columns: list[list[object]], fields: OptionFields) -> list[Body]:
    # Columns in OptionInput order, from `_option_columns`.
    model, option_type, u, k, t, value, r, q = (np.asarray(c) for c in columns)
    if fields is IV_FIELDS:
        ivs = analytics.implied_volatility_batch(
            model, option_type, price=value, underlying=u, strike=k, time_to_expiry=t, rate=r,
            dividend_yield=q,
        )  # fmt: skip
        return [{"iv": v} for v in analytics.optional_floats(ivs)]
    out = analytics.greeks_batch(
        model, option_type, underlying=u, strike=k, time_to_expiry=t, volatility=value, rate=r,
        dividend_yield=q,
    )  # fmt: skip
    greeks = [analytics.optional_floats(getattr(out, name)) for name in _GREEKS]
    return [
        {"price": p, "delta": d, "gamma": g, "theta": th, "vega": v, "rho": rho}
        for p, d, g, th, v, rho in zip(*greeks, strict=True)
    ]


def _option_columns(
    items: list[object], fields: OptionFields, now_ms: int, results: list[object]
) -> tuple[list[int], list[list[object]]]:
    # NOTE: valid items go straight into columns; keeping 100,000 row tuples alive instead
    # makes the cyclic GC rescan them again and again (it made the batch ~1.7x slower).
    index: list[int] = []
    columns: list[list[object]] = [[] for _ in OptionInput._fields]
    for i, item in enumerate(items):
        try:
            row = inputs.parse_option(item, fields, now_ms)
        except InputError as exc:
            results[i] = exc.to_slot()
            continue
        index.append(i)
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return index, columns


def option_body(raw: Raw, *, now_ms: int, fields: OptionFields) -> bytes:
    """Answer a greeks or IV call (one item or a batch) as JSON.

    Raises:
        ProtocolError: 400 for bad JSON; 422 for an invalid single item or batch envelope.
    """
    body = protocol.loads(raw)
    try:
        items = inputs.batch_items(body)
        if items is None:
            # One item through the batch path: its numbers are bit-identical to the scalar one's.
            row = inputs.parse_option(body, fields, now_ms)
            return protocol.dumps(_solve_options([[v] for v in row], fields)[0])
    except InputError as exc:
        raise exc.to_protocol() from None
    results: list[object] = [None] * len(items)
    index, columns = _option_columns(items, fields, now_ms, results)
    if index:
        for i, result in zip(index, _solve_options(columns, fields), strict=True):
            results[i] = result
    return protocol.dumps({"results": results})


def _max_pain(item: object) -> Body:
    rows = inputs.parse_chain(item)
    try:
        chain = analytics.analyze_chain(rows)
    except analytics.ChainError as exc:
        raise InputError([inputs.entry(("strikes",), str(exc), exc.code)], exc.code) from None
    return {
        "max_pain": chain.max_pain,
        "pcr_oi": chain.pcr_oi,
        "pcr_volume": chain.pcr_volume,
        "payout": [{"strike": p.strike, "value": p.value} for p in chain.payout],
    }


def max_pain_body(raw: Raw) -> bytes:
    """Answer a max-pain call (one chain, or a batch of chains) as JSON."""
    body = protocol.loads(raw)
    try:
        items = inputs.batch_items(body, MAX_CHAIN_BATCH)
        if items is None:
            return protocol.dumps(_max_pain(body))
    except InputError as exc:
        raise exc.to_protocol() from None
    results: list[object] = []
    for item in items:
        try:
            results.append(_max_pain(item))
        except InputError as exc:
            results.append(exc.to_slot())
    return protocol.dumps({"results": results})


def futures_body(raw: Raw, *, today: date) -> bytes:
    """Answer a futures-analyze call as JSON."""
    try:
        spot, as_of, quotes = inputs.parse_futures(protocol.loads(raw), today)
        try:
            strip = analytics.analyze_futures(spot, as_of, quotes)
        except analytics.FuturesError as exc:
            errors = [inputs.entry(("futures",), str(exc), exc.code)]
            raise InputError(errors, exc.code) from None
    except InputError as exc:
        raise exc.to_protocol() from None
    # ContractAnalysis has the wire's fields in order; orjson writes dates as YYYY-MM-DD.
    contracts = [dataclasses.asdict(c) for c in strip.contracts]
    return protocol.dumps({"contracts": contracts, "rollover_pct": strip.rollover_pct})


def indicator_body(raw: Raw) -> bytes:
    """Answer an indicator call as JSON."""
    try:
        indicator, params, candles = inputs.parse_indicator(protocol.loads(raw))
        try:
            values = analytics.compute_indicator(indicator, params, candles)
        except analytics.IndicatorError as exc:
            param = exc.details.get("param")
            loc = {"unknown_indicator": ("indicator",), "invalid_candles": ("candles",)}.get(
                exc.code, ("params",) if param is None else ("params", str(param))
            )
            errors = [inputs.entry(loc, exc.message, exc.code)]
            raise InputError(errors, exc.code, exc.details) from None
    except InputError as exc:
        raise exc.to_protocol() from None
    return protocol.dumps({"values": values})


def _ist_date(now_ms: int) -> date:
    return (_EPOCH + timedelta(milliseconds=now_ms)).astimezone(IST).date()


def _calendar_error(exc: CalendarError, param: str) -> Exception:
    return InputError([inputs.entry((param,), str(exc), exc.code)], exc.code).to_protocol()


# ---------------------------------------------------------------- routes
def analytics_blueprint(engine: Engine, calendar: MarketCalendar) -> Blueprint:
    """Return the blueprint of the stateless analytics and calendar endpoints.

    Args:
        engine: the context (its clock gives the "now" defaults, its auth the read scope).
        calendar: the market calendar the calendar endpoints answer from.

    Cancellation:
        A request running in a worker thread finishes its computation before it is
        cancelled; every computation is bounded by the batch and body limits.
    """
    bp = Blueprint("analytics", __name__)
    limiter = trio.CapacityLimiter(WORKER_THREADS)

    async def answer(work: Callable[[Raw], bytes]) -> Response:
        raw = await request.get_data()
        if len(raw) <= INLINE_MAX_BODY_BYTES:
            data = work(raw)
        else:
            data = await trio.to_thread.run_sync(work, raw, limiter=limiter)
        return Response(data, content_type=JSON_TYPE)

    def options(fields: OptionFields) -> Callable[[Raw], bytes]:
        return functools.partial(option_body, now_ms=engine.clock(), fields=fields)

    @bp.post("/v1/fo/greeks")
    @security_scheme([{"bearer": []}])
    @document_request(OneOrBatch[GreeksIn])
    @document_response(OneOrBatchOut[GreeksOut])
    @require(engine, Scope.READ)
    async def post_greeks() -> Response:
        """Price and Greeks of one option, or of a batch of up to 100,000."""
        return await answer(options(GREEKS_FIELDS))

    @bp.post("/v1/fo/iv")
    @security_scheme([{"bearer": []}])
    @document_request(OneOrBatch[IvIn])
    @document_response(OneOrBatchOut[IvOut])
    @require(engine, Scope.READ)
    async def post_iv() -> Response:
        """Implied volatility of one option price, or of a batch of up to 100,000."""
        return await answer(options(IV_FIELDS))

    @bp.post("/v1/fo/maxpain")
    @security_scheme([{"bearer": []}])
    @document_request(OneOrBatch[inputs.ChainIn])
    @document_response(OneOrBatchOut[MaxPainOut])
    @require(engine, Scope.READ)
    async def post_max_pain() -> Response:
        """Max pain, put/call ratios and the exact payout curve of one expiry's chain."""
        return await answer(max_pain_body)

    @bp.post("/v1/futures/analyze")
    @security_scheme([{"bearer": []}])
    @document_request(inputs.FuturesIn)
    @document_response(FuturesOut)
    @require(engine, Scope.READ)
    async def post_futures() -> Response:
        """Basis, carry and OI build-up per contract, and the rollover percentage."""
        return await answer(functools.partial(futures_body, today=_ist_date(engine.clock())))

    @bp.post("/v1/indicators")
    @security_scheme([{"bearer": []}])
    @document_request(IndicatorIn)
    @document_response(IndicatorOut)
    @require(engine, Scope.READ)
    async def post_indicators() -> Response:
        """An indicator over the given candles (TA-Lib's algorithms, FINANCE.md §6)."""
        return await answer(indicator_body)

    @bp.get("/v1/calendar/holidays")
    @validate_querystring(inputs.HolidaysQuery)
    @document_response(HolidaysOut)
    async def get_holidays(query_args: inputs.HolidaysQuery) -> Response:
        """The weekday trading holidays of a year (Muhurat days included)."""
        rows = [{"date": d.isoformat(), "name": n} for d, n in calendar.holidays(query_args.year)]
        return json_response({"year": query_args.year, "holidays": rows})

    @bp.get("/v1/calendar/expiries")
    @validate_querystring(inputs.ExpiriesQuery)
    @document_response(ExpiriesOut)
    async def get_expiries(query_args: inputs.ExpiriesQuery) -> Response:
        """The next expiries of an underlying, holiday-shifted (``kind`` defaults to monthly)."""
        q = query_args
        start = _ist_date(engine.clock()) if q.from_ is None else q.from_
        try:
            days = calendar.expiries(q.underlying, start, q.count, q.kind)
        except CalendarError as exc:
            param = {"no_weekly_expiry": "kind", "expiry_rules_unavailable": "from"}
            raise _calendar_error(exc, param.get(exc.code, "underlying")) from None
        return json_response({"expiries": [d.isoformat() for d in days]})

    @bp.get("/v1/calendar/session")
    @validate_querystring(inputs.SessionQuery)
    @document_response(SessionOut)
    async def get_session(query_args: inputs.SessionQuery) -> Response:
        """Whether the market is open at an instant (default now), its phase, the next open."""
        at = engine.clock() if query_args.at is None else query_args.at
        try:
            s = calendar.session(at, query_args.segment)
        except CalendarError as exc:
            raise _calendar_error(exc, "segment") from None
        state = {"trading_day": s.trading_day, "open": s.open, "phase": s.phase}
        return json_response({**state, "next_open_ts": s.next_open_ts})

    return bp
