"""The one engine context that ``main`` builds and passes down (no global state)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from .auth import VerifiedTokens
from .bus import Bus
from .config import Config
from .metrics import Metrics
from .ratelimit import Limiter, MemoryLimiter
from .store import Store

WallClock = Callable[[], int]


def system_clock_ms() -> int:
    """Return the wall clock as epoch milliseconds UTC (the one seam for wall time)."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """Engine-wide lifecycle signals.

    ``draining`` is set when the engine stops accepting work (SIGTERM, ``engine.drain``):
    long-lived handlers such as WebSockets watch it and close themselves with 1001.
    """

    draining: trio.Event = field(default_factory=trio.Event)


@dataclass(frozen=True, slots=True)
class Engine:
    """Everything a component may need, passed explicitly to it.

    Attributes:
        config: the frozen configuration.
        store: the PostgreSQL adapter.
        bus: the event bus (in-process or Redis).
        metrics: the engine's private Prometheus registry and metrics.
        clock: epoch-ms wall clock; tests inject a fake one.
        lifecycle: shutdown and drain signals.
        limiter: rate limits (in memory, or shared through Redis).
        tokens: the bearer tokens verified recently (their HMAC is checked once).
    """

    config: Config
    store: Store
    bus: Bus
    metrics: Metrics
    clock: WallClock = system_clock_ms
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    limiter: Limiter = field(default_factory=lambda: MemoryLimiter(trio.current_time))
    tokens: VerifiedTokens = field(default_factory=VerifiedTokens)
