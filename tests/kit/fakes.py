"""Fakes for unit tests of actors (no database, no sockets)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from engine.bus import InProcessBus
from engine.config import Config
from engine.context import Engine
from engine.metrics import Metrics


class FakeConnection:
    """Records what a unit of work executed."""

    def __init__(self, log: list[tuple[str, Any]]) -> None:
        self._log = log

    async def execute(self, query: str, *args: object) -> str:
        self._log.append((query, args))
        return "OK"

    async def executemany(self, command: str, args: Any) -> None:
        self._log.append((command, list(args)))

    async def fetch(self, query: str, *args: object) -> list[Any]:
        self._log.append((query, args))
        return []


class FakeStore:
    """A store whose units run against a recording connection; ``fail`` makes them raise."""

    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []
        self.fail: Exception | None = None

    async def run_unit(self, unit: Callable[[Any], Any], *, transaction: bool = True) -> Any:
        await trio.lowlevel.checkpoint()
        if self.fail is not None:
            raise self.fail
        return await unit(FakeConnection(self.log))

    async def fetch(self, query: str, *args: object) -> list[Any]:
        await trio.lowlevel.checkpoint()
        return []

    async def ping(self) -> bool:
        return True


class FakeClock:
    """A settable wall clock (epoch ms) for the engine's clock seam."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def fake_engine(config: Config, clock: FakeClock, store: FakeStore | None = None) -> Engine:
    """An engine context over fakes and an in-process bus."""
    return Engine(
        config=config,
        store=store or FakeStore(),  # type: ignore[arg-type]
        bus=InProcessBus(),
        metrics=Metrics(),
        clock=clock,
    )
