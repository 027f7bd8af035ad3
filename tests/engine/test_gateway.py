"""The HTTP edge: health, readiness, metrics, docs and the error envelope."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import trio_asyncio
from quart_trio import QuartTrio

from engine.bus import InProcessBus
from engine.config import Config, with_overrides
from engine.context import Engine
from engine.gateway import create_app
from engine.metrics import Metrics
from engine.store import Store

pytestmark = pytest.mark.integration


def _engine(config: Config, store: Store) -> Engine:
    metrics = Metrics()
    metrics.watch_pool(store.statistics)
    return Engine(
        config=config,
        store=store,
        bus=InProcessBus(),
        metrics=metrics,
        clock=lambda: 1_700_000_000_000,
    )


@pytest.fixture
async def app(
    aio_loop: trio_asyncio.TrioEventLoop, migrated_dsn: str, config: Config
) -> AsyncIterator[QuartTrio]:
    """An app over a real, open store and an in-process bus."""
    cfg = with_overrides(config, server={"max_body_bytes": 4096})
    store = Store(cfg.database, migrated_dsn)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        application = create_app(_engine(cfg, store))

        @application.post("/_test/echo")
        async def echo() -> dict[str, object]:
            from quart import request

            return {"len": len(await request.get_data())}

        @application.get("/_test/boom")
        async def boom() -> str:
            raise RuntimeError("secret internals: password=hunter2")

        yield application
        nursery.cancel_scope.cancel()


async def test_health_answers_ok(app: QuartTrio) -> None:
    """/health is a plain liveness check."""
    resp = await app.test_client().get("/health")
    assert resp.status_code == 200
    assert await resp.get_json() == {"status": "ok"}
    assert resp.headers["X-Request-Id"]


async def test_ready_when_database_and_bus_answer(app: QuartTrio) -> None:
    """/ready is 200 with every dependency ok."""
    resp = await app.test_client().get("/ready")
    assert resp.status_code == 200
    assert await resp.get_json() == {"status": "ready", "checks": {"database": "ok", "bus": "ok"}}


async def test_ready_names_the_database_when_it_is_down(
    aio_loop: trio_asyncio.TrioEventLoop, config: Config
) -> None:
    """/ready is 503 with database_unavailable naming the failing part."""
    app = create_app(_engine(config, Store(config.database, "postgresql://x@127.0.0.1:1/x")))
    resp = await app.test_client().get("/ready")
    assert resp.status_code == 503
    body = await resp.get_json()
    assert body["checks"] == {"database": "down", "bus": "ok"}
    assert body["error"]["code"] == "database_unavailable"
    assert body["error"]["details"] == {"down": ["database"]}


async def test_metrics_exposes_tickstream_metrics(app: QuartTrio) -> None:
    """/metrics is Prometheus text with request counts and the pool gauges."""
    client = app.test_client()
    await client.get("/health")
    resp = await client.get("/metrics")
    assert resp.status_code == 200
    assert resp.content_type.startswith("text/plain")
    text = (await resp.get_data()).decode()
    assert 'tickstream_http_requests_total{method="GET",route="/health",status="200"} 1.0' in text
    assert "tickstream_db_pool_max " in text
    names = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert names and all(name.startswith("tickstream_") for name in names)


async def test_openapi_and_docs_are_generated(app: QuartTrio) -> None:
    """/openapi.json documents the routes; /docs serves the UI."""
    client = app.test_client()
    spec = await (await client.get("/openapi.json")).get_json()
    assert spec["openapi"].startswith("3.")
    assert {"/health", "/ready"} <= set(spec["paths"])
    docs = await client.get("/docs")
    assert docs.status_code == 200 and b"openapi.json" in await docs.get_data()


async def test_unknown_route_is_404_envelope(app: QuartTrio) -> None:
    """Unknown paths answer the JSON error envelope, not HTML."""
    resp = await app.test_client().get("/nope")
    assert resp.status_code == 404
    body = await resp.get_json()
    assert body == {"error": {"code": "not_found", "message": "no such resource", "details": {}}}


async def test_wrong_method_is_405_envelope(app: QuartTrio) -> None:
    """A known path with the wrong method is 405 with the envelope and Allow."""
    resp = await app.test_client().delete("/health")
    assert resp.status_code == 405
    assert (await resp.get_json())["error"]["code"] == "method_not_allowed"
    assert "GET" in resp.headers["Allow"]


async def test_body_over_the_limit_is_413(app: QuartTrio) -> None:
    """A body larger than server.max_body_bytes is refused with 413."""
    client = app.test_client()
    ok = await client.post("/_test/echo", data=b"x" * 100)
    assert ok.status_code == 200
    resp = await client.post("/_test/echo", data=b"x" * 5000)
    assert resp.status_code == 413
    assert (await resp.get_json())["error"]["code"] == "body_too_large"


async def test_unexpected_error_is_500_without_internals(app: QuartTrio) -> None:
    """A bug answers 500 internal_error; no traceback or exception text leaks."""
    resp = await app.test_client().get("/_test/boom", headers={"X-Request-Id": "req-42"})
    assert resp.status_code == 500
    raw = (await resp.get_data()).decode()
    assert "hunter2" not in raw and "Traceback" not in raw and "RuntimeError" not in raw
    body = await resp.get_json()
    assert body["error"]["code"] == "internal_error"
    assert body["error"]["details"] == {"request_id": "req-42"}
    assert resp.headers["X-Request-Id"] == "req-42"


async def test_bad_request_id_header_is_replaced(app: QuartTrio) -> None:
    """A request id with odd characters is not echoed; a fresh one is used."""
    resp = await app.test_client().get("/health", headers={"X-Request-Id": "a b<script>"})
    rid = resp.headers["X-Request-Id"]
    assert rid != "a b<script>" and len(rid) == 32
