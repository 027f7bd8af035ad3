"""`tickstream serve` as a process: start-up checks, health, graceful stop, no orphans."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import psutil
import pytest

from tests.kit.db import temporary_database
from tests.kit.server import reachable_tempdir, start_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SECRET = "e2e-" + "s" * 40


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A working directory the engine (and its embedded database user) can use."""
    with reachable_tempdir() as path:
        yield path


def _postmasters_under(path: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmd = proc.info["cmdline"] or []
        if proc.info["name"] == "postgres" and any(str(path) in part for part in cmd):
            found.append(proc)
    return found


def _wait_gone(path: Path, budget: float = 15.0) -> list[psutil.Process]:
    deadline = time.monotonic() + budget
    while time.monotonic() < deadline:
        left = _postmasters_under(path)
        if not left:
            return []
        time.sleep(0.1)
    return _postmasters_under(path)


def test_serve_without_jwt_secret_exits_2_naming_the_variable(workdir: Path) -> None:
    """No signing key: serve refuses to start, exit code 2, message names the variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKSTREAM_")}
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "engine.main", "serve"],
        env=env | {"TICKSTREAM_CONFIG": str(Path.cwd() / "config/default.toml")},
        capture_output=True,
        timeout=60,
        check=False,
        cwd=workdir,
    )
    assert result.returncode == 2
    assert b"TICKSTREAM_JWT_SECRET" in result.stderr


def test_serve_with_a_bad_config_key_exits_2_naming_it(workdir: Path) -> None:
    """An unknown key in the TOML file stops start-up with exit 2 naming the key."""
    cfg = workdir / "bad.toml"
    cfg.write_text("[server]\nprot = 1\n")
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "engine.main", "serve"],
        env={
            "PATH": os.environ["PATH"],
            "TICKSTREAM_CONFIG": str(cfg),
            "TICKSTREAM_JWT_SECRET": SECRET,
        },
        capture_output=True,
        timeout=60,
        check=False,
        cwd=workdir,
    )
    assert result.returncode == 2
    assert b"server.prot" in result.stderr
    assert SECRET.encode() not in result.stderr + result.stdout


def test_serve_on_external_database_answers_and_stops_cleanly(workdir: Path) -> None:
    """With a real DSN: migrates, answers /health and /ready, logs JSON, exits 0 on SIGTERM."""
    with temporary_database() as dsn:
        server = start_server(
            workdir, {"TICKSTREAM_DATABASE_URL": dsn, "TICKSTREAM_JWT_SECRET": SECRET}
        )
        try:
            server.wait_healthy()
            status, body = server.get("/ready")
            assert status == 200 and orjson.loads(body)["status"] == "ready"
            status, body = server.get("/nope", {"X-Request-Id": "e2e-rid-1"})
            assert status == 404 and orjson.loads(body)["error"]["code"] == "not_found"
        finally:
            code = server.stop(signal.SIGTERM)
        assert code == 0
        out = server.output()
        assert SECRET not in out
        json_lines = [orjson.loads(line) for line in out.splitlines() if line.startswith("{")]
        assert any(line.get("event", "").startswith("listening on") for line in json_lines)
        assert any(line.get("request_id") == "e2e-rid-1" for line in json_lines)
        assert any(line.get("event") == "engine stopped" for line in json_lines)


def test_demo_with_embedded_postgres_leaves_no_orphan_on_sigterm(workdir: Path) -> None:
    """`serve --demo` starts the embedded PostgreSQL and stops it on SIGTERM (exit 0)."""
    server = start_server(workdir, {}, "--demo")
    try:
        server.wait_healthy()
        assert _postmasters_under(workdir), "embedded postgres should run under the workdir"
        out = server.output()
        assert "demo admin token" in out and "TICKSTREAM_JWT_SECRET=" in out
        assert server.get("/ready")[0] == 200
    finally:
        code = server.stop(signal.SIGTERM)
    assert code == 0
    assert _wait_gone(workdir) == []


def test_embedded_postgres_dies_with_a_killed_engine(workdir: Path) -> None:
    """SIGKILL of the engine (a crash) takes the embedded PostgreSQL down too; a restart works."""
    server = start_server(workdir, {"TICKSTREAM_JWT_SECRET": SECRET})
    server.wait_healthy()
    assert _postmasters_under(workdir)
    server.stop(signal.SIGKILL)
    assert _wait_gone(workdir) == []
    again = start_server(workdir, {"TICKSTREAM_JWT_SECRET": SECRET})
    try:
        again.wait_healthy()
        assert again.get("/ready")[0] == 200
    finally:
        assert again.stop(signal.SIGTERM) == 0
    assert _wait_gone(workdir) == []
