"""Start the engine as a real process (``tickstream serve``) for end-to-end tests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from .db import temporary_database
from .tokens import E2E_SECRET

START_BUDGET: Final = 60.0  # seconds for a server to answer /health
STOP_BUDGET: Final = 30.0  # seconds for a graceful stop


def free_port() -> int:
    """Return a TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def reachable_tempdir(prefix: str = "tickstream-test-") -> Iterator[Path]:
    """A temporary directory that a dropped-privilege server user can enter."""
    parent = Path(tempfile.mkdtemp(prefix=prefix))
    parent.chmod(0o755)
    try:
        yield parent
    finally:
        shutil.rmtree(parent, ignore_errors=True)


@dataclass
class ServerProcess:
    """A running ``tickstream serve`` process and where it listens."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base(self) -> str:
        """The base HTTP URL."""
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        """Everything the process printed so far (stdout and stderr)."""
        return self.log.read_text(errors="replace")

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
        """GET ``path``; return the status and body (error statuses too)."""
        req = urllib.request.Request(self.base + path, headers=dict(headers or {}))
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 (loopback)
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def wait_healthy(self, budget: float = START_BUDGET) -> None:
        """Poll /health until it answers 200 (or fail with the server's output)."""
        deadline = time.monotonic() + budget
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{self.output()}")
            try:
                if self.get("/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not healthy in {budget}s:\n{self.output()}")

    def stop(self, sig: int = 15, budget: float = STOP_BUDGET) -> int:
        """Send ``sig`` and wait for the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"server did not stop in {budget}s:\n{self.output()}") from None


def start_server(
    workdir: Path,
    env: Mapping[str, str],
    *args: str,
    port: int | None = None,
) -> ServerProcess:
    """Start ``tickstream serve ARGS`` with ``env`` added to a clean environment."""
    port = port or free_port()
    log = workdir / f"server-{port}.log"
    full_env = (
        {k: v for k, v in os.environ.items() if not k.startswith("TICKSTREAM_")}
        | {"TICKSTREAM_PORT": str(port)}
        | dict(env)
    )
    full_env.setdefault("TICKSTREAM_CONFIG", str(Path.cwd() / "config" / "default.toml"))
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: S603 (our own CLI)
            [sys.executable, "-m", "engine.main", "serve", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=workdir,
        )
    return ServerProcess(proc, port, log)


@contextmanager
def running_server(
    *args: str,
    env: Mapping[str, str] | None = None,
    config: str | None = None,
    clean_exit: bool = False,
) -> Iterator[ServerProcess]:
    """Run ``tickstream serve ARGS`` on a fresh database in a fresh workdir for the block.

    The server gets the database's DSN and the e2e JWT secret (``env`` adds to them), and
    ``config`` (a TOML text) as its config file when given. It answers /health when the
    block starts and is stopped with SIGTERM when it ends; with ``clean_exit`` it must
    then exit 0.
    """
    with reachable_tempdir() as workdir, temporary_database() as dsn:
        full_env = {"TICKSTREAM_DATABASE_URL": dsn, "TICKSTREAM_JWT_SECRET": E2E_SECRET}
        if config is not None:
            path = workdir / "test.toml"
            path.write_text(config)
            full_env["TICKSTREAM_CONFIG"] = str(path)
        srv = start_server(workdir, full_env | dict(env or {}), *args)
        try:
            srv.wait_healthy()
            yield srv
        finally:
            code = srv.stop(signal.SIGTERM)
        # After the finally: a failure inside the block is reported as it is.
        if clean_exit:
            assert code == 0, srv.output()[-3000:]


def call(
    server: ServerProcess,
    method: str,
    path: str,
    body: object | None = None,
    tok: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, Any]:
    """One HTTP call with a JSON body; returns (status, decoded JSON body)."""
    h = {"Content-Type": "application/json", **(headers or {})}
    if tok is not None:
        h["Authorization"] = f"Bearer {tok}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(server.base + path, data=data, headers=h, method=method)
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:  # noqa: S310 (loopback)
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def wait_for(predicate: Callable[[], object], budget: float = 10.0) -> None:
    """Poll until ``predicate()`` is true (or fail after ``budget`` seconds)."""
    deadline = time.monotonic() + budget
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")
