"""Benchmark: sustained tick ingestion through ``/ws/v1/ingest`` into 1,000 account mailboxes.

Run from the repository root (PostgreSQL on 127.0.0.1:5432, or ``TICKSTREAM_TEST_DATABASE_URL``):

    python -m loadtest.bench_ingest            # 10 s measured window
    python -m loadtest.bench_ingest --quick    # 3 s window, shorter baselines

This process is the engine: it creates a throw-away database, builds the runtime as
``tickstream serve`` does (``build_runtime``) and adds 1,000 simulated accounts, each a
``ConflatingMailbox`` watching 5 simulator symbols through ``MarketActor.watch`` and drained
by its own task, which records ``now - quote.received_ms`` (ingest → account latency).
A separate publisher process (``loadtest.ingest_publisher``) pre-encodes simulator frames
of ``--frame-ticks`` ticks and pushes them over the real WebSocket as fast as the acks come
back, ``--window`` frames in flight. The market inbox holds ``--inbox`` batches (4, the
shipped default: an ack only means "queued", so a deep inbox just adds queueing latency).

Measured in the same run, one after the other (the publisher has generated its frames):

1. ``validation``: ``orjson.loads`` + ``parse_ticks`` alone on pre-encoded frames (no actor).
2. ``in-process``: the same kind of frames through the gateway's ``Ingestor`` (validate,
   submit) into the running market actor and the 1,000 accounts, with no socket.
3. ``websocket``: the publisher process through hypercorn, ``/ws/v1/ingest`` and that path.
4. ``in-process 2``: phase 2 again, as the engine is slower once its state has grown
   (candle history, pending rows): the socket is compared with the mean of 2 and 4.

Throughput is what the market actor applied (``statistics().ticks``) over the window, after a
warm-up; the CPU time of this process per tick is given too, as it moves less than wall time
on a shared machine. ``--gc`` sets the collector of this process (``serve`` = as
``tickstream serve`` runs, ``cpython`` = CPython's defaults). A table goes to stdout, a
JSON record to loadtest/results/bench_ingest.json; the exit status is 1 when the websocket
figure misses the target.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import psycopg
import trio
import trio_asyncio
from psycopg import sql

from engine import migrate
from engine.auth import Scope, issue_token
from engine.config import Config, Secret, load_config, with_overrides
from engine.context import system_clock_ms
from engine.logs import configure_logging
from engine.runtime import Runtime, build_runtime

from ._ingest_phases import (
    ACCOUNTS,
    SYMBOLS_PER_ACCOUNT,
    Accounts,
    GcClock,
    Phase,
    drive_in_process,
    ingestor_for,
    measure,
    rss_mib,
    settle,
    tune_gc,
    validation_baseline,
)
from ._report import RESULTS_DIR, cell, machine_info, write_record
from .ingest_publisher import FRAME_TICKS, STEP_MS, WINDOW, Frames, make_frames

ROOT: Final = Path(__file__).resolve().parent.parent
RESULT_PATH: Final = RESULTS_DIR / "bench_ingest.json"
ADMIN_DSN: Final = os.environ.get(
    "TICKSTREAM_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
TARGET_TICKS_PER_S: Final = 100_000
# Tick batches the market actor may have queued: the shipped default (config/default.toml),
# small on purpose: acks are sent once a batch is queued, so a deep inbox only turns
# publisher speed into queueing latency.
INBOX_CAPACITY: Final = 4
SEED: Final = 7
GENERATE_TIMEOUT: Final = 300.0  # seconds for the publisher to pre-generate its frames
PUBLISHER_EXIT_TIMEOUT: Final = 60.0  # seconds after its send window
TAIL: Final = 2.0  # seconds the publisher keeps sending after warm-up and window
RSS_SAMPLE: Final = 0.25  # seconds between RSS samples


@dataclass(frozen=True, slots=True)
class Report:
    """The JSON record."""

    quick: bool
    command: str
    machine: dict[str, object]
    settings: dict[str, object]
    phases: list[Phase]
    publisher: dict[str, Any]
    rss_mib: dict[str, float]
    ratios: dict[str, float]
    target_ticks_per_s: int
    target_met: bool


# ------------------------------------------------------------------ publisher process


class _Lines:
    # Line reader over a trio receive stream (the publisher's stdout).
    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buf = b""

    async def readline(self) -> str:
        while b"\n" not in self._buf:
            chunk = await self._stream.receive_some()
            if not chunk:
                raise EOFError("publisher closed its output")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode()


async def _expect_line(lines: _Lines, budget: float, accept: Callable[[str], bool]) -> str:
    with trio.fail_after(budget):
        while True:
            line = await lines.readline()
            if accept(line):
                return line


# ------------------------------------------------------------------ run


def free_port() -> int:
    """Return a TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_config(dsn: str, port: int, secret: str, inbox: int) -> Config:
    """The default configuration on loopback, the throw-away database and a small inbox."""
    base = load_config(ROOT / "config" / "default.toml", env={})
    return with_overrides(
        base,
        server={"host": "127.0.0.1", "port": port},
        database={"url": Secret(dsn)},
        auth={"jwt_secret": Secret(secret)},
        market={"inbox_capacity": inbox},
        log={"level": "WARNING"},
    )


async def _sample_peak(peak: dict[str, float]) -> None:
    while True:
        peak["peak"] = max(peak.get("peak", 0.0), rss_mib())
        await trio.sleep(RSS_SAMPLE)


async def spawn_publisher(
    args: argparse.Namespace, *, url: str, token: str, start_ms: int, seconds: float, pregen: int
) -> trio.Process:
    """Start the publisher process; it pre-generates its frames, then waits for ``go``."""
    options = {
        "--url": url,
        "--token": token,
        "--seconds": seconds,
        "--ticks": pregen,
        "--frame-ticks": args.frame_ticks,
        "--window": args.window,
        "--seed": SEED,
        "--start-ms": start_ms,
    }
    command = [sys.executable, "-m", "loadtest.ingest_publisher", "--wait-go"]
    for name, value in options.items():
        command += [name, str(value)]
    return await trio.lowlevel.open_process(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT
    )


async def run(args: argparse.Namespace, dsn: str) -> Report:
    """Run the three phases against one engine built on ``dsn``."""
    port, secret = free_port(), secrets.token_urlsafe(48)
    config = bench_config(dsn, port, secret, args.inbox)
    rss: dict[str, float] = {"start": rss_mib()}
    start_ms = system_clock_ms()
    token = issue_token(
        secret,
        sub="bench-publisher",
        scopes=[Scope.FEED_PUBLISH],
        now=start_ms // 1000,
        ttl=3600,
        issuer=config.auth.issuer,
        audience=config.auth.audience,
    )
    send_seconds = args.warmup + args.seconds + TAIL
    pregen = min(args.max_pregen, int(send_seconds * args.pregen_rate))
    proc = await spawn_publisher(
        args,
        url=f"ws://127.0.0.1:{port}/ws/v1/ingest",
        token=token,
        start_ms=start_ms,
        seconds=send_seconds,
        pregen=pregen,
    )
    assert proc.stdin is not None  # noqa: S101 - piped above
    assert proc.stdout is not None  # noqa: S101 - piped above
    lines = _Lines(proc.stdout)
    try:
        # The in-process phases run the same frames before and after the websocket phase
        # (the engine gets slower as its state grows, so the socket is compared with both),
        # stamped before and after the publisher's ticks so that no tick is late for the
        # candles.
        sim_symbols = make_frames(ticks=0, frame_ticks=1, seed=SEED, start_ms=start_ms).symbols
        publisher_span_ms = pregen // len(sim_symbols) * STEP_MS
        before, after = (
            make_frames(
                ticks=args.baseline_ticks, frame_ticks=args.frame_ticks, seed=SEED + 1, start_ms=t
            )
            for t in (start_ms - 60_000, start_ms + publisher_span_ms + 1000)
        )
        runtime: Runtime = build_runtime(config, dsn)
        market = runtime.actors.market
        async with trio_asyncio.open_loop(), trio.open_nursery() as engine_nursery:
            await engine_nursery.start(runtime.root.run)
            accounts = Accounts(market, sim_symbols, SEED)
            rss["engine_up"] = rss_mib()
            # Measure only once the publisher has its frames: generating them takes a core.
            await _expect_line(lines, GENERATE_TIMEOUT, lambda s: s == "ready")
            tune_gc(args.gc)
            gc_clock = GcClock()
            gc.callbacks.append(gc_clock)
            validation = validation_baseline(before, 3, gc_clock)

            async def in_process(name: str, frames: Frames) -> Phase:
                async with trio.open_nursery() as driver:
                    driver.start_soon(drive_in_process, ingestor_for(runtime), frames)
                    phase = await measure(
                        name,
                        market,
                        accounts,
                        gc_clock,
                        warmup=args.warmup,
                        seconds=args.baseline_seconds,
                    )
                    driver.cancel_scope.cancel()
                await settle(market)
                return phase

            async with trio.open_nursery() as bench:
                await bench.start(accounts.run)
                bench.start_soon(_sample_peak, rss)
                in_process_1 = await in_process("in-process", before)
                rss["after_in_process"] = rss_mib()
                await proc.stdin.send_all(b"go\n")
                websocket = await measure(
                    "websocket",
                    market,
                    accounts,
                    gc_clock,
                    warmup=args.warmup,
                    seconds=args.seconds,
                )
                rss["after_websocket"] = rss_mib()
                line = await _expect_line(
                    lines, PUBLISHER_EXIT_TIMEOUT, lambda s: s.startswith("{")
                )
                publisher = json.loads(line)
                with trio.fail_after(PUBLISHER_EXIT_TIMEOUT):
                    await proc.wait()
                await settle(market)
                in_process_2 = await in_process("in-process 2", after)
                rss["end"] = rss_mib()
                bench.cancel_scope.cancel()
            runtime.root.stop()
    finally:
        if proc.returncode is None:
            proc.kill()
            with trio.move_on_after(5, shield=True):
                await proc.wait()
    phases = [validation, in_process_1, websocket, in_process_2]
    in_process_rate = statistics.mean([in_process_1.ticks_per_s, in_process_2.ticks_per_s])
    in_process_cpu = statistics.mean([in_process_1.cpu_us_per_tick, in_process_2.cpu_us_per_tick])
    ratios = {
        # Against the mean of the two in-process phases (before and after).
        "websocket_vs_in_process": round(websocket.ticks_per_s / in_process_rate, 3),
        "websocket_vs_validation": round(websocket.ticks_per_s / validation.ticks_per_s, 3),
        "in_process_vs_validation": round(in_process_rate / validation.ticks_per_s, 3),
        # CPU per tick, less sensitive to neighbours on a shared machine than wall time.
        "cpu_websocket_vs_in_process": round(websocket.cpu_us_per_tick / in_process_cpu, 3),
        "cpu_validation_share_of_websocket": round(
            validation.cpu_us_per_tick / websocket.cpu_us_per_tick, 3
        ),
    }
    return Report(
        quick=args.quick,
        command=" ".join(["python -m loadtest.bench_ingest", *args.argv]),
        machine=machine_info(),
        settings={
            "accounts": ACCOUNTS,
            "symbols_per_account": SYMBOLS_PER_ACCOUNT,
            "symbols": len(sim_symbols),
            "frame_ticks": args.frame_ticks,
            "window_frames": args.window,
            "inbox_capacity_batches": args.inbox,
            "warmup_s": args.warmup,
            "seconds": args.seconds,
            "baseline_seconds": args.baseline_seconds,
            "pregenerated_ticks": pregen,
            "gc": args.gc,
        },
        phases=phases,
        publisher=publisher,
        rss_mib={k: round(v, 1) for k, v in rss.items()},
        ratios=ratios,
        target_ticks_per_s=TARGET_TICKS_PER_S,
        target_met=websocket.ticks_per_s >= TARGET_TICKS_PER_S,
    )


# ------------------------------------------------------------------ database


def _dsn_for(database: str) -> str:
    return urlunsplit(urlsplit(ADMIN_DSN)._replace(path="/" + database))


def create_database() -> str:
    """Create an empty database and migrate it; return its DSN."""
    name = f"tickstream_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = _dsn_for(name)
    migrate.upgrade(dsn)
    return dsn


def drop_database(dsn: str) -> None:
    """Drop the database of ``dsn`` (and any session left on it)."""
    name = urlsplit(dsn).path.lstrip("/")
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


# ------------------------------------------------------------------ output


def print_table(report: Report) -> None:
    """Print the figures as a table."""
    head = f"{'phase':<12}{'ticks/s':>11}{'µs/tick':>9}{'cpu µs':>8}{'p50 ms':>9}{'p99 ms':>9}"
    head += f"{'max ms':>9}{'samples':>10}{'conflated':>11}{'cpu':>6}{'gc':>6}"
    print(head)
    print("-" * len(head))
    for p in report.phases:
        print(
            f"{p.name:<12}{p.ticks_per_s:>11,}{p.us_per_tick:>9.2f}{p.cpu_us_per_tick:>8.2f}"
            f"{cell(p.latency_p50_ms):>9}"
            f"{cell(p.latency_p99_ms):>9}{cell(p.latency_max_ms):>9}{p.latency_samples:>10,}"
            f"{p.conflated:>11,}{p.cpu_util:>6.2f}{p.gc_share:>6.0%}"
        )
    pub = report.publisher
    print(
        f"publisher: {pub['ticks_acked']:,} ticks acked in {pub['send_s']:.1f} s "
        f"= {pub['ticks_per_s']:,.0f}/s, {pub['ticks_refused']} refused, "
        f"cpu {pub['cpu_s'] / pub['send_s']:.2f}, frames cycled: {pub['cycled']}"
    )
    print("server RSS MiB: " + ", ".join(f"{k} {v:,.1f}" for k, v in report.rss_mib.items()))
    print("ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in report.ratios.items()))
    verdict = "met" if report.target_met else "MISSED"
    print(f"target {report.target_ticks_per_s:,} ticks/s over the websocket: {verdict}")


def build_parser() -> argparse.ArgumentParser:
    """Return the benchmark's argument parser."""
    p = argparse.ArgumentParser(
        prog="loadtest.bench_ingest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="3 s window, smaller baselines")
    p.add_argument("--seconds", type=float, help="measured window (default 10, quick 3)")
    p.add_argument("--frame-ticks", type=int, default=FRAME_TICKS, help="ticks per frame")
    p.add_argument("--window", type=int, default=WINDOW, help="frames in flight")
    p.add_argument(
        "--inbox", type=int, default=INBOX_CAPACITY, help="market inbox capacity, in batches"
    )
    p.add_argument(
        "--pregen-rate",
        type=float,
        default=150_000.0,
        help="ticks/s the publisher pre-generates for (cycles beyond)",
    )
    p.add_argument("--max-pregen", type=int, default=2_000_000)
    p.add_argument(
        "--gc",
        choices=["serve", "cpython", "off"],
        default="serve",
        help="garbage-collector setting of the engine process (see tune_gc)",
    )
    p.add_argument("--output", type=Path, default=RESULT_PATH)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 1 if the target is missed."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv
    args.seconds = args.seconds or (3.0 if args.quick else 10.0)
    args.warmup = 0.5 if args.quick else 1.0
    args.baseline_seconds = 1.5 if args.quick else 3.0
    args.baseline_ticks = 100_000 if args.quick else 200_000
    configure_logging("WARNING", "console")
    dsn = create_database()
    try:
        report = trio.run(run, args, dsn)
    finally:
        drop_database(dsn)
    print_table(report)
    write_record(report, args.output)
    return 0 if report.target_met else 1


if __name__ == "__main__":
    sys.exit(main())
