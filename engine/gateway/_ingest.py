"""Market-data ingestion: ``/ws/v1/ingest``, ``POST /v1/ingest/ticks``, instruments upsert."""

from __future__ import annotations

import logging
from typing import Any, Final

from pydantic import BaseModel
from quart import Blueprint, Response, request, websocket
from quart_schema import document_request, document_response, security_scheme

import protocol
from actors.market.messages import TickBatch
from actors.registry import Actors
from protocol import ErrorCode, InstrumentError, ProtocolError, parse_instrument, parse_ticks

from ..auth import Principal, Scope
from ..context import Engine
from ._auth import require
from ._responses import json_response
from ._ws import WsSession

LOG = logging.getLogger(__name__)
MS_PER_S: Final = 1000
MAX_INSTRUMENTS: Final = 50_000


class TicksIn(BaseModel):
    """A batch of wire ticks (see PROTOCOL.md, tick object)."""

    ticks: list[dict[str, Any]]


class TicksOut(BaseModel):
    """How many ticks were applied, and why the others were refused."""

    accepted: int
    errors: list[dict[str, Any]]


class InstrumentsIn(BaseModel):
    """Instruments to insert or update."""

    instruments: list[dict[str, Any]]


class InstrumentsOut(BaseModel):
    """How many instruments were written."""

    upserted: int


def _body_list(body: object, key: str) -> list[Any]:
    if not isinstance(body, dict) or not isinstance(body.get(key), list):
        raise ProtocolError(
            ErrorCode.VALIDATION_FAILED,
            f"body must be an object with a {key!r} list",
            {"errors": [{"loc": [key], "msg": "required list", "type": "missing"}]},
        )
    unknown = sorted(set(body) - {key, "id", "op"})
    if unknown:
        raise ProtocolError(
            ErrorCode.VALIDATION_FAILED,
            f"unknown field {unknown[0]!r}",
            {"errors": [{"loc": [unknown[0]], "msg": "unknown field", "type": "extra_forbidden"}]},
        )
    items: list[Any] = body[key]
    return items


class Ingestor:
    """Validates tick batches at the boundary and hands the valid ticks to the market actor."""

    def __init__(self, engine: Engine, actors: Actors) -> None:
        self._engine = engine
        self._actors = actors
        self._invalid = engine.metrics.counter(
            "tickstream_ticks_invalid", "Ticks refused at the boundary", ["source", "reason"]
        )

    async def ingest(self, raw: object, source: str) -> tuple[int, list[dict[str, object]]]:
        """Validate ``raw`` (wire ticks), submit the valid ones; return (accepted, errors).

        Raises:
            ProtocolError: ``validation_failed`` when ``raw`` is not a list or too long.
        """
        batch, errors = self.validate(raw, source)
        if batch is not None:
            await self.submit(batch)
        return (0 if batch is None else len(batch.ticks)), errors

    def validate(
        self, raw: object, source: str
    ) -> tuple[TickBatch | None, list[dict[str, object]]]:
        """Validate ``raw`` (wire ticks); return the batch of valid ones (None if none) and errors.

        Raises:
            ProtocolError: ``validation_failed`` when ``raw`` is not a list or too long.
        """
        engine = self._engine
        now = engine.clock()
        cfg = engine.config.market
        try:
            ticks, errors = parse_ticks(
                raw,
                now_ms=now,
                max_age_ms=int(cfg.max_tick_age * MS_PER_S),
                max_ahead_ms=int(cfg.max_tick_ahead * MS_PER_S),
            )
        except ValueError as exc:
            raise ProtocolError(ErrorCode.VALIDATION_FAILED, str(exc)) from None
        for err in errors:
            self._invalid.labels(source, err.reason).inc()
        batch = TickBatch(tuple(ticks), source, now) if ticks else None
        return batch, [e.to_wire() for e in errors]

    async def submit(self, batch: TickBatch) -> None:
        """Hand a validated batch to the market actor, waiting while its inbox is full."""
        await self._actors.market.submit(batch)

    async def upsert_instruments(self, raw: list[Any]) -> int:
        """Validate every instrument (all or nothing), persist and apply them.

        Raises:
            ProtocolError: ``validation_failed`` listing each invalid instrument.
        """
        if len(raw) > MAX_INSTRUMENTS:
            raise ProtocolError(
                ErrorCode.VALIDATION_FAILED, f"at most {MAX_INSTRUMENTS} instruments per call"
            )
        parsed, errors = [], []
        for index, item in enumerate(raw):
            try:
                parsed.append(parse_instrument(item))
            except InstrumentError as exc:
                errors.append({"index": index, "field": exc.field, "reason": exc.reason})
        if errors:
            raise ProtocolError(
                ErrorCode.VALIDATION_FAILED, "invalid instruments", {"errors": errors}
            )
        await self._actors.market.master.upsert(parsed, self._engine.clock())
        return len(parsed)


def ingest_blueprint(engine: Engine, actors: Actors) -> Blueprint:
    """Return the blueprint of the ingestion endpoints."""
    bp = Blueprint("ingest", __name__)
    ingestor = Ingestor(engine, actors)

    @bp.post("/v1/ingest/ticks")
    @security_scheme([{"bearer": []}])
    @document_request(TicksIn)
    @document_response(TicksOut)
    @require(engine, Scope.FEED_PUBLISH)
    async def post_ticks() -> Response:
        """Ingest a batch of ticks (scope ``feed:publish``).

        Valid ticks are applied even when others in the batch are not; each refused
        tick is listed with its index, field and reason. A batch in which no tick
        is valid answers 422.
        """
        body = protocol.loads(await request.get_data())
        raw = _body_list(body, "ticks")
        accepted, errors = await ingestor.ingest(raw, "http")
        if errors and not accepted:
            raise ProtocolError(ErrorCode.VALIDATION_FAILED, "no valid tick", {"errors": errors})
        return json_response({"accepted": accepted, "errors": errors})

    @bp.put("/v1/admin/instruments")
    @security_scheme([{"bearer": []}])
    @document_request(InstrumentsIn)
    @document_response(InstrumentsOut)
    @require(engine, Scope.ADMIN)
    async def put_instruments() -> Response:
        """Insert or update instruments (scope ``admin``); all or nothing."""
        body = protocol.loads(await request.get_data())
        return json_response(
            {"upserted": await ingestor.upsert_instruments(_body_list(body, "instruments"))}
        )

    @bp.websocket("/ws/v1/ingest")
    async def ingest_ws() -> Response | None:
        """The ticker service's stream of ``ticks`` and ``instruments`` frames."""
        session = WsSession(engine, websocket, Scope.FEED_PUBLISH)
        refused = await session.open()
        if refused is not None:
            return refused

        async def handle(frame: dict[str, Any], principal: Principal) -> None:
            del principal
            frame_id = frame.get("id")
            op = frame.get("op")
            try:
                if op == "ticks":
                    batch, errors = ingestor.validate(_body_list(frame, "ticks"), "ws")
                    # NOTE: drop the decoded frame (thousands of dicts) before waiting on
                    # the market actor's inbox: kept across that wait, it is carried into
                    # the older GC generations and rescanned by every collection there.
                    del frame
                    accepted = 0
                    if batch is not None:
                        accepted = len(batch.ticks)
                        await ingestor.submit(batch)
                    if errors:
                        await session.send_error(
                            frame_id,
                            ErrorCode.VALIDATION_FAILED,
                            f"{len(errors)} invalid ticks",
                            {"accepted": accepted, "errors": errors},
                        )
                    elif frame_id is not None:
                        await session.send({"op": "ack", "id": frame_id, "accepted": accepted})
                elif op == "instruments":
                    n = await ingestor.upsert_instruments(_body_list(frame, "instruments"))
                    if frame_id is not None:
                        await session.send({"op": "ack", "id": frame_id, "upserted": n})
                else:
                    await session.malformed(frame_id, f"unknown op {op!r}")
            except ProtocolError as exc:
                await session.send_error(frame_id, exc.code, exc.message, exc.details)

        await session.serve(handle)
        return None

    return bp
