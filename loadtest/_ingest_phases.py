"""The engine side of the ingest benchmark: simulated accounts and the measured phases.

Used by :mod:`loadtest.bench_ingest`, which runs it inside the engine process.
"""

from __future__ import annotations

import array
import dataclasses
import gc
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import orjson
import psutil
import trio

from actors.market.actor import MarketActor
from actors.market.messages import Quote
from engine.context import system_clock_ms
from engine.gateway._ingest import Ingestor
from engine.mailbox import ConflatingMailbox
from engine.main import settle_heap
from engine.metrics import Metrics
from engine.runtime import Runtime
from protocol import parse_ticks

from .ingest_publisher import Frames

ACCOUNTS: Final = 1000
SYMBOLS_PER_ACCOUNT: Final = 5
FLOW_TIMEOUT: Final = 120.0  # seconds for ticks to start flowing, or the inbox to drain
MIB: Final = 1024 * 1024
POLL: Final = 0.01  # seconds between looks at the actor's counters


@dataclass(frozen=True, slots=True)
class Phase:
    """Figures of one measured window."""

    name: str
    seconds: float
    ticks: int
    batches: int
    ticks_per_s: float
    us_per_tick: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    latency_max_ms: float | None
    latency_samples: int
    conflated: int
    cpu_us_per_tick: float  # CPU time of this process per applied tick (steadier than wall)
    cpu_util: float  # CPU seconds of this process per wall second
    gc_share: float  # share of the window spent in the cyclic garbage collector


# ------------------------------------------------------------------ accounts


class Accounts:
    """1,000 simulated accounts: a conflating mailbox each and a task draining it."""

    def __init__(self, market: MarketActor, symbols: list[str], seed: int) -> None:
        rng = random.Random(seed)
        self.mailboxes: list[ConflatingMailbox[str, Quote]] = []
        for n in range(ACCOUNTS):
            mb: ConflatingMailbox[str, Quote] = ConflatingMailbox(name=f"bench-{n}")
            market.watch(rng.sample(symbols, SYMBOLS_PER_ACCOUNT), mb)
            self.mailboxes.append(mb)
        self.recording = False
        self.samples: array.array[float] = array.array("d")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Drain every mailbox until cancelled."""
        async with trio.open_nursery() as nursery:
            for mb in self.mailboxes:
                nursery.start_soon(self._consume, mb)
            task_status.started()

    async def _consume(self, mb: ConflatingMailbox[str, Quote]) -> None:
        samples = self.samples
        while True:
            await mb.wait_nonempty()
            items = mb.drain()
            if self.recording:
                # received_ms is whole epoch ms (floored): latencies read up to 1 ms high.
                now = time.time_ns() / 1e6
                samples.extend([now - q.received_ms for _, q in items])

    def take_samples(self) -> list[float]:
        """Return the recorded latencies (ms) and start afresh."""
        out = sorted(self.samples)
        del self.samples[:]  # in place: every consumer holds this array
        return out


# ------------------------------------------------------------------ measurement


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def rss_mib() -> float:
    """Return the resident set size of this process, MiB."""
    return float(psutil.Process().memory_info().rss) / MIB


class GcClock:
    """Wall time spent in the cyclic garbage collector (through ``gc.callbacks``)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        del info
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._began


def _cpu() -> float:
    t = psutil.Process().cpu_times()
    return float(t.user + t.system)


async def poll_until(condition: Callable[[], bool], budget: float) -> None:
    """Poll the actor's counters until ``condition()`` holds.

    Raises:
        trio.TooSlowError: not within ``budget`` seconds.
    """
    deadline = trio.current_time() + budget
    while not condition():
        if trio.current_time() > deadline:
            raise trio.TooSlowError
        await trio.sleep(POLL)


async def measure(
    name: str,
    market: MarketActor,
    accounts: Accounts,
    gc_clock: GcClock,
    *,
    warmup: float,
    seconds: float,
) -> Phase:
    """Wait for ticks to flow, warm up, then measure ``seconds`` of the market actor."""
    first = market.statistics().ticks
    await poll_until(lambda: market.statistics().ticks != first, FLOW_TIMEOUT)
    await trio.sleep(warmup)
    accounts.take_samples()
    s0, c0, g0, t0 = market.statistics(), _cpu(), gc_clock.seconds, time.perf_counter()
    accounts.recording = True
    await trio.sleep(seconds)
    accounts.recording = False
    s1, c1, g1, t1 = market.statistics(), _cpu(), gc_clock.seconds, time.perf_counter()
    lat = accounts.take_samples()
    elapsed = t1 - t0
    ticks = s1.ticks - s0.ticks
    return Phase(
        name=name,
        seconds=round(elapsed, 3),
        ticks=ticks,
        batches=s1.batches - s0.batches,
        ticks_per_s=round(ticks / elapsed),
        us_per_tick=round(elapsed / ticks * 1e6, 2) if ticks else float("inf"),
        latency_p50_ms=_percentile(lat, 0.50),
        latency_p99_ms=_percentile(lat, 0.99),
        latency_max_ms=lat[-1] if lat else None,
        latency_samples=len(lat),
        conflated=s1.conflated - s0.conflated,
        cpu_us_per_tick=round((c1 - c0) / ticks * 1e6, 2) if ticks else float("inf"),
        cpu_util=round((c1 - c0) / elapsed, 2),
        gc_share=round((g1 - g0) / elapsed, 3),
    )


async def settle(market: MarketActor) -> None:
    """Wait until the market actor's inbox is empty and accounts had time to drain."""
    await poll_until(lambda: market.statistics().inbox_depth == 0, FLOW_TIMEOUT)
    await trio.sleep(0.2)


def validation_baseline(frames: Frames, repeats: int, gc_clock: GcClock) -> Phase:
    """Time ``orjson.loads`` + ``parse_ticks`` alone over ``frames`` (median of ``repeats``)."""
    ticks = sum(frames.ticks_per_frame)
    times, gc_times, cpu_times = [], [], []
    for _ in range(repeats):
        now = system_clock_ms()
        g0, c0, began = gc_clock.seconds, time.process_time(), time.perf_counter()
        for text in frames.texts:
            _valid, errors = parse_ticks(orjson.loads(text)["ticks"], now_ms=now)
            if errors:
                raise RuntimeError(f"validation baseline: invalid ticks {errors[:3]}")
        times.append(time.perf_counter() - began)
        gc_times.append(gc_clock.seconds - g0)
        cpu_times.append(time.process_time() - c0)
    best = statistics.median(times)
    return Phase(
        name="validation",
        seconds=round(best, 3),
        ticks=ticks,
        batches=len(frames.texts),
        ticks_per_s=round(ticks / best),
        us_per_tick=round(best / ticks * 1e6, 2),
        latency_p50_ms=None,
        latency_p99_ms=None,
        latency_max_ms=None,
        latency_samples=0,
        conflated=0,
        cpu_us_per_tick=round(statistics.median(cpu_times) / ticks * 1e6, 2),
        cpu_util=round(statistics.median(cpu_times) / best, 2),
        gc_share=round(statistics.median(gc_times) / best, 3),
    )


def tune_gc(mode: str) -> None:
    """Apply a garbage-collector setting to this (the engine's) process, after start-up.

    ``serve`` is what ``tickstream serve`` does once up (:func:`engine.main.settle_heap`:
    start-up objects frozen, a young-generation threshold of
    :data:`engine.main.GC_GEN0_THRESHOLD`); ``cpython`` leaves CPython's defaults (the
    baseline); ``off`` disables the collector (an upper bound only).
    """
    if mode == "cpython":
        return
    if mode == "off":
        gc.collect()
        gc.disable()
        return
    settle_heap()


def ingestor_for(runtime: Runtime) -> Ingestor:
    """Return an Ingestor on the running engine, as the gateway has (its own is not reachable)."""
    # A second Ingestor on the same engine needs its own metrics registry (a counter name
    # registers once per registry).
    return Ingestor(dataclasses.replace(runtime.engine, metrics=Metrics()), runtime.actors)


async def drive_in_process(ingestor: Ingestor, frames: Frames) -> None:
    """Feed ``frames`` (cycling) through the ingest path with no socket, until cancelled.

    As the WebSocket handler does: decode, validate, drop the decoded frame, then submit.
    """
    texts, i = frames.texts, 0
    while True:
        batch, errors = ingestor.validate(orjson.loads(texts[i % len(texts)])["ticks"], "ws")
        if errors or batch is None:
            raise RuntimeError(f"in-process phase: invalid ticks {errors[:3]}")
        await ingestor.submit(batch)
        i += 1
