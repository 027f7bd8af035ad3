"""Liveness, readiness and metrics endpoints."""

from __future__ import annotations

from typing import Final

import trio
from pydantic import BaseModel
from quart import Blueprint, Response
from quart_schema import document_response

from actors.registry import Actors

from ..context import Engine
from ..metrics import CONTENT_TYPE
from ._responses import json_response

READY_CHECK_TIMEOUT: Final = 2.0  # seconds per dependency


class HealthOut(BaseModel):
    """Liveness answer."""

    status: str


class ReadyOut(BaseModel):
    """Readiness answer: each dependency ``ok`` or ``down``."""

    status: str
    checks: dict[str, str]
    feed: dict[str, object] | None = None


def health_blueprint(engine: Engine, actors: Actors | None = None) -> Blueprint:
    """Return the blueprint of ``/health``, ``/ready`` and ``/metrics``."""
    bp = Blueprint("health", __name__)

    @bp.get("/health")
    @document_response(HealthOut)
    async def health() -> Response:
        """Liveness: the process answers."""
        return json_response({"status": "ok"})

    @bp.get("/ready")
    @document_response(ReadyOut, 200)
    @document_response(ReadyOut, 503)
    async def ready() -> Response:
        """Readiness: 503 naming the dependency (database, bus) that does not answer."""
        checks: dict[str, str] = {}

        async def check(name: str, probe: object) -> None:
            ok = False
            with trio.move_on_after(READY_CHECK_TIMEOUT):
                ok = await probe()  # type: ignore[operator]
            checks[name] = "ok" if ok else "down"
            engine.metrics.dependency_up.labels(name).set(1 if ok else 0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(check, "database", engine.store.ping)
            nursery.start_soon(check, "bus", engine.bus.ping)
        down = sorted(name for name, state in checks.items() if state != "ok")
        draining = engine.lifecycle.draining.is_set()
        status = "unready" if down else "draining" if draining else "ready"
        body: dict[str, object] = {"status": status, "checks": checks}
        if actors is not None:
            # A stale feed raises an alert (metric, log) but never makes the node unready.
            body["feed"] = actors.market.health().to_wire()
        if down:
            body["error"] = {
                "code": "database_unavailable" if "database" in down else "bus_unavailable",
                "message": "not ready: " + ", ".join(down) + " down",
                "details": {"down": down},
            }
        elif draining:
            # Taken out of the load balancer while it finishes (engine.drain, SIGTERM).
            body["error"] = {"code": "busy", "message": "not ready: draining"}
        return json_response(body, 503 if down or draining else 200)

    @bp.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text exposition."""
        stats = engine.bus.statistics()
        engine.metrics.redis_reconnects.set(stats.reconnects)
        return Response(engine.metrics.render(), content_type=CONTENT_TYPE)

    return bp
