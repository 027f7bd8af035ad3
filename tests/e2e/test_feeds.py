"""Feed sources wired into a running engine: simulator (--demo), Redis Streams, replay."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import redis

from tests.kit.db import REDIS_URL, temporary_database
from tests.kit.server import ServerProcess, reachable_tempdir, start_server
from tests.kit.tokens import E2E_SECRET, token

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]


def _wait_for(predicate: Callable[[], bool], budget: float = 20.0) -> None:
    deadline = time.monotonic() + budget
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def _metric(server: ServerProcess, line_start: str) -> float:
    _, text = server.get("/metrics")
    for line in text.decode().splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _config(workdir: Path, extra: str) -> Path:
    # Every key has a default: a file with just the calendar location and the extras.
    path = workdir / "test.toml"
    calendar = Path.cwd() / "config" / "calendar"
    path.write_text(f'[market]\ncalendar_dir = "{calendar}"\n\n{extra}')
    return path


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {token('read')}"}


def test_demo_serves_live_simulated_quotes_and_candles() -> None:
    """`serve --demo` runs the simulator: quotes change, candles form, /metrics counts ticks."""
    with reachable_tempdir() as workdir, temporary_database() as dsn:
        srv = start_server(
            workdir, {"TICKSTREAM_DATABASE_URL": dsn, "TICKSTREAM_JWT_SECRET": E2E_SECRET}, "--demo"
        )
        try:
            srv.wait_healthy()
            _wait_for(lambda: _metric(srv, 'tickstream_ticks_total{source="simulator"}') > 500)
            status, body = srv.get("/v1/instruments", _auth())
            symbols = [i["symbol"] for i in orjson.loads(body)["items"]]
            assert status == 200 and "NIFTY" in symbols and len(symbols) > 100
            future = next(s for s in symbols if s.startswith("NIFTY") and s.endswith("FUT"))
            first = orjson.loads(srv.get(f"/v1/quotes/{future}", _auth())[1])
            _wait_for(
                lambda: (
                    orjson.loads(srv.get(f"/v1/quotes/{future}", _auth())[1])["ts"] > first["ts"]
                )
            )
            status, body = srv.get(f"/v1/candles/{future}?tf=1m&limit=5", _auth())
            candles = orjson.loads(body)["items"]
            assert status == 200 and candles and candles[-1]["tf"] == "1m"
            assert srv.get(f"/v1/candles/{future}?tf=2m", _auth())[0] == 422
            assert srv.get("/v1/quotes/NOPE", _auth())[0] == 404
            assert srv.get(f"/v1/quotes/{future}")[0] == 401
            ready = orjson.loads(srv.get("/ready")[1])
            assert ready["feed"]["last_tick_ms"] is not None and ready["feed"]["paused"] is False
        finally:
            assert srv.stop(signal.SIGTERM) == 0


def test_redis_stream_feed_applies_entries() -> None:
    """Entries XADDed to the configured stream reach the market actor (source=redis)."""
    stream = f"tickstream-e2e-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(REDIS_URL)
    try:
        with reachable_tempdir() as workdir, temporary_database() as dsn:
            cfg = _config(
                workdir, f'[feed]\nredis_stream = "{stream}"\nredis_consumer = "e2e-node"\n'
            )
            srv = start_server(
                workdir,
                {
                    "TICKSTREAM_DATABASE_URL": dsn,
                    "TICKSTREAM_JWT_SECRET": E2E_SECRET,
                    "TICKSTREAM_REDIS_URL": REDIS_URL,
                    "TICKSTREAM_CONFIG": str(cfg),
                },
            )
            try:
                srv.wait_healthy()
                now = int(time.time() * 1000)
                client.xadd(
                    stream,
                    {
                        "ticks": json.dumps(
                            [
                                {"symbol": "RELIANCE", "ltp": "2950.5", "ts": now},
                                {"symbol": "RELIANCE", "ltp": "-1", "ts": now},
                            ]
                        )
                    },
                )
                _wait_for(lambda: _metric(srv, 'tickstream_ticks_total{source="redis"}') == 1)
                quote = orjson.loads(srv.get("/v1/quotes/RELIANCE", _auth())[1])
                assert quote["ltp"] == "2950.5"
            finally:
                assert srv.stop(signal.SIGTERM) == 0, srv.output()[-3000:]
    finally:
        client.delete(stream)


def test_replay_feed_replays_a_recording() -> None:
    """A configured JSONL recording is replayed into the market actor (source=replay)."""
    with reachable_tempdir() as workdir, temporary_database() as dsn:
        now = int(time.time() * 1000)
        recording = workdir / "session.jsonl"
        recording.write_text(
            "\n".join(
                json.dumps({"symbol": "TCS", "ltp": f"{4000 + i}", "ts": now + i * 10})
                for i in range(50)
            )
            + "\n"
        )
        cfg = _config(workdir, f'[feed]\nreplay_path = "{recording}"\nreplay_speed = 0.0\n')
        srv = start_server(
            workdir,
            {
                "TICKSTREAM_DATABASE_URL": dsn,
                "TICKSTREAM_JWT_SECRET": E2E_SECRET,
                "TICKSTREAM_CONFIG": str(cfg),
            },
        )
        try:
            srv.wait_healthy()
            _wait_for(lambda: _metric(srv, 'tickstream_ticks_total{source="replay"}') == 50)
            assert orjson.loads(srv.get("/v1/quotes/TCS", _auth())[1])["ltp"] == "4049"
        finally:
            assert srv.stop(signal.SIGTERM) == 0


def test_redis_stream_without_redis_url_exits_2() -> None:
    """A Redis stream feed configured without TICKSTREAM_REDIS_URL stops start-up with 2."""
    with reachable_tempdir() as workdir:
        cfg = _config(workdir, '[feed]\nredis_stream = "x"\n')
        srv = start_server(
            workdir, {"TICKSTREAM_JWT_SECRET": E2E_SECRET, "TICKSTREAM_CONFIG": str(cfg)}
        )
        assert srv.proc.wait(timeout=60) == 2
        assert "TICKSTREAM_REDIS_URL" in srv.output()


def test_feed_simulate_publishes_over_the_ingest_websocket() -> None:
    """`tickstream feed simulate` pushes instruments and ticks through /ws/v1/ingest."""
    with reachable_tempdir() as workdir, temporary_database() as dsn:
        srv = start_server(
            workdir, {"TICKSTREAM_DATABASE_URL": dsn, "TICKSTREAM_JWT_SECRET": E2E_SECRET}
        )
        try:
            srv.wait_healthy()
            result = subprocess.run(  # noqa: S603
                [
                    sys.executable,
                    "-m",
                    "engine.main",
                    "feed",
                    "simulate",
                    "--url",
                    f"ws://127.0.0.1:{srv.port}/ws/v1/ingest",
                    "--token",
                    token("feed:publish"),
                    "--rate",
                    "1000",
                    "--duration",
                    "2",
                ],
                capture_output=True,
                timeout=60,
                check=False,
            )
            assert result.returncode == 0, result.stderr.decode()[-2000:]
            sent = int(result.stdout.split()[1])
            assert sent >= 1000 and b", 0 refused" in result.stdout
            assert _metric(srv, 'tickstream_ticks_total{source="ws"}') == sent
            status, body = srv.get("/v1/instruments", _auth())
            assert status == 200 and len(orjson.loads(body)["items"]) > 100
            refused = subprocess.run(  # noqa: S603
                [
                    sys.executable,
                    "-m",
                    "engine.main",
                    "feed",
                    "simulate",
                    "--url",
                    f"ws://127.0.0.1:{srv.port}/ws/v1/ingest",
                    "--token",
                    token("read"),
                    "--duration",
                    "1",
                ],
                capture_output=True,
                timeout=60,
                check=False,
            )
            assert refused.returncode == 1 and b"403" in refused.stderr
        finally:
            assert srv.stop(signal.SIGTERM) == 0
