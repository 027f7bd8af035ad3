"""``/ws/v1/control`` (ops commands) and ``GET /v1/admin/audit`` (scope ``admin``).

The session (:class:`WsSession`) authenticates (handshake header or first frame, a
non-admin token is 403 / 4403), watches expiry and drain. Each frame is validated at
the boundary (:func:`protocol.parse_control_frame`): an invalid one is answered
``ok: false`` with ``validation_failed`` and spends the malformed-frame budget. The
control actor executes the rest; every command, executed or refused, is audited.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import trio
from pydantic import BaseModel, ConfigDict, Field
from quart import Blueprint, Response, websocket
from quart_schema import document_response, security_scheme, validate_querystring

from actors.control.actor import Controller
from actors.control.audit import entries
from actors.registry import Actors
from protocol import ControlError, ErrorCode, ProtocolError, parse_control_frame

from ..auth import Principal, Scope
from ..context import Engine
from ._auth import require
from ._responses import json_response
from ._ws import WsSession

LOG = logging.getLogger(__name__)
MAX_AUDIT_PAGE: Final = 500
DEFAULT_AUDIT_PAGE: Final = 100


class AuditQuery(BaseModel):
    """Paging of the audit log (newest first)."""

    model_config = ConfigDict(extra="forbid")
    limit: int = Field(default=DEFAULT_AUDIT_PAGE, ge=1, le=MAX_AUDIT_PAGE)
    offset: int = Field(default=0, ge=0, le=2**31 - 1)


class AuditOut(BaseModel):
    """Audit rows: ``{ts, sub, cmd, args, ok}`` (and ``id``, ``error``)."""

    items: list[dict[str, Any]]


def _failure(
    frame_id: object, code: ErrorCode | str, message: str, details: object
) -> dict[str, object]:
    error: dict[str, object] = {"code": str(code), "message": message}
    if details:
        error["details"] = details
    return {"op": "result", "id": frame_id, "ok": False, "error": error}


def control_blueprint(engine: Engine, actors: Actors) -> Blueprint:
    """Return the blueprint of the control channel and the audit endpoint."""
    bp = Blueprint("control", __name__)
    controller = Controller(engine, actors)

    async def audited(sub: str, cmd: str, args: object, ok: bool, error: str | None) -> None:
        try:
            await controller.audit(sub, cmd, args, ok, error)
        except trio.Cancelled:
            raise
        except Exception:
            # The command already ran (or was refused): answer it, and say loudly
            # that the audit log missed it.
            LOG.exception("audit log write failed for %s by %s", cmd, sub)

    @bp.websocket("/ws/v1/control")
    async def control_ws() -> Response | None:
        """Ops commands: ``command`` frames in, one ``result`` frame out for each."""
        session = WsSession(engine, websocket, Scope.ADMIN)
        refused = await session.open()
        if refused is not None:
            return refused

        async def handle(frame: dict[str, Any], principal: Principal) -> None:
            try:
                command = parse_control_frame(frame)
            except ControlError as exc:
                cmd = frame.get("cmd")
                name = exc.cmd or (cmd[:64] if isinstance(cmd, str) else "<invalid>")
                await audited(principal.sub, name, frame.get("args"), False, exc.message)
                session.spend_malformed()
                await session.send(
                    _failure(exc.frame_id, ErrorCode.VALIDATION_FAILED, exc.message, None)
                )
                return
            then = None
            try:
                outcome = await controller.execute(command)
            except trio.Cancelled:
                raise
            except ProtocolError as exc:
                result = _failure(command.id, exc.code, exc.message, dict(exc.details))
                await audited(
                    principal.sub, command.cmd, command.args(), False, f"{exc.code}: {exc.message}"
                )
            except Exception:
                LOG.exception("control command %s failed", command.cmd)
                result = _failure(command.id, ErrorCode.INTERNAL, "internal error", None)
                await audited(principal.sub, command.cmd, command.args(), False, "internal_error")
            else:
                result = {"op": "result", "id": command.id, "ok": True, "data": outcome.data}
                then = outcome.then
                await audited(principal.sub, command.cmd, command.args(), True, None)
            await session.send(result)
            if then is not None:
                then()

        await session.serve(handle)
        return None

    @bp.get("/v1/admin/audit")
    @security_scheme([{"bearer": []}])
    @validate_querystring(AuditQuery)
    @document_response(AuditOut)
    @require(engine, Scope.ADMIN)
    async def audit_log(query_args: AuditQuery) -> Response:
        """The audit log of control commands, newest first (``limit`` ≤ 500, ``offset``)."""
        items = await entries(engine.store, query_args.limit, query_args.offset)
        return json_response({"items": items})

    return bp
