"""Benchmark: fan-out of quotes over ``/ws/v1/stream`` to 1, 100 and 1,000 subscribers.

Run from the repository root (PostgreSQL on 127.0.0.1:5432, or ``TICKSTREAM_TEST_DATABASE_URL``):

    python -m loadtest.bench_fanout            # N = 1, 100, 1000; 3 windows of 3 s each
    python -m loadtest.bench_fanout --quick    # 1 window of 2 s each
    python -m loadtest.bench_fanout --subscribers 1000 --rate 5000 --symbols 50 --repeats 5

Three servers, one after the other for each N, each in its own process:

- **tickstream**: ``tickstream serve`` on a throw-away database (default configuration,
  log level WARNING). This process publishes through ``/ws/v1/ingest`` (a ``feed:publish``
  token): every ``symbols / rate`` s one ``ticks`` frame with one tick per symbol, ``ts``
  set when the frame is made — ``--rate`` events/s in all (the market actor publishes one
  quote per symbol and batch, so each tick becomes one ``quotes:<SYMBOL>`` event).
- **raw**: the limit of the transport — a bare trio-websocket server with tickstream's
  batching (``loadtest._fanout_peers``).
- **fastapi**: the peer — FastAPI/uvicorn written the usual way: a set of connections and
  ``await ws.send_text`` per subscriber and event (``loadtest._fanout_fastapi``).

The peers make the same quotes in-process at the same rate, ``ts`` stamped at generation.
Every subscriber is a trio-websocket socket in one of ``--procs`` separate processes
(``loadtest._fanout_clients``), subscribed to ``quotes:<SYMBOL>`` of every symbol. Counted:
messages (events; a frame may carry an array of them) delivered per second, tick → client
latency (receive time minus the quote's ``ts``, both wall clock on this machine, p50/p99)
and the server process's CPU time per delivered event. Quotes conflate per symbol while a
client is behind (PROTOCOL.md), so a client receives at most ``rate`` events/s and, when the
server cannot keep up, fewer and fresher ones. Each figure is the median of ``--repeats``
windows. Slow consumer: at the largest N, tickstream's windows alternate without and with
one extra client that subscribes and never reads; the others' p99 and the server RSS are
compared. A table goes to stdout, a JSON record to loadtest/results/bench_fanout.json; the
exit status is 1 when a target (at the largest N) is missed.
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import trio

from engine.auth import Scope, issue_token
from engine.logs import configure_logging
from tests.kit.db import temporary_database
from tests.kit.server import ServerProcess, call, free_port, reachable_tempdir, start_server

from ._fanout_peers import symbols
from ._fanout_run import (
    ServerProbe,
    Session,
    Window,
    idle_cpu,
    publishing,
    run_session,
    summarise,
)
from ._fanout_run import wait_listening as _wait_listening
from ._report import RESULTS_DIR, cell, machine_info, write_record

ROOT: Final = Path(__file__).resolve().parent.parent
RESULT_PATH: Final = RESULTS_DIR / "bench_fanout.json"
SERVERS: Final = ("tickstream", "raw", "fastapi")
TARGET_VS_FASTAPI: Final = 1.5  # delivered events/s, tickstream / FastAPI
TARGET_CPU_VS_FASTAPI: Final = 0.5  # server CPU per event, tickstream / FastAPI
TARGET_VS_RAW: Final = 0.8  # delivered events/s, tickstream / raw
TARGET_EVENTS_PER_S: Final = 150_000
TARGET_STALL_P99: Final = 1.1  # others' p99 with a stalled client / without
TARGET_STALL_RSS_MIB: Final = 64.0  # server RSS growth allowed while a client is stalled


@dataclass(frozen=True, slots=True)
class Report:
    """The JSON record."""

    quick: bool
    command: str
    machine: dict[str, object]
    settings: dict[str, object]
    runs: list[dict[str, Any]]
    slow_consumer: dict[str, Any]
    publisher: dict[str, int]
    ratios: dict[str, float | None]
    targets: dict[str, dict[str, Any]]
    targets_met: bool


def bench_toml(workdir: Path) -> Path:
    """The default configuration, with the calendar of the repository and little logging."""
    path = workdir / "bench.toml"
    calendar = json.dumps(str(ROOT / "config" / "calendar"))
    path.write_text(f'[market]\ncalendar_dir = {calendar}\n\n[log]\nlevel = "WARNING"\n')
    return path


def _token(secret: str, sub: str, scope: str) -> str:
    return issue_token(
        secret,
        sub=sub,
        scopes=[scope],
        now=int(time.time()),
        ttl=4 * 3600,
        issuer="tickstream",
        audience="tickstream",
    )


def set_up_instruments(srv: ServerProcess, secret: str, names: list[str]) -> None:
    """Create one equity per symbol."""
    admin = _token(secret, "bench-admin", Scope.ADMIN)
    body = {
        "instruments": [
            {"symbol": s, "kind": "equity", "lot_size": 1, "tick_size": "0.05"} for s in names
        ]
    }
    status, answer = call(srv, "PUT", "/v1/admin/instruments", body, admin)
    if status != 200:
        raise RuntimeError(f"instruments: {status} {answer}")


async def measure_all(args: argparse.Namespace, srv: ServerProcess, secret: str) -> dict[str, Any]:
    """Every session: for each N, tickstream, raw and fastapi."""
    names = symbols(args.symbols)
    channels = [f"quotes:{s}" for s in names]
    reader = _token(secret, "bench-reader", Scope.READ)
    feed = _token(secret, "bench-feed", Scope.FEED_PUBLISH)
    stats = {"ticks": 0, "ticks_skipped": 0, "acks": 0, "errors": 0}
    runs: list[dict[str, Any]] = []
    slow: dict[str, Any] = {}
    largest = max(args.subscribers)

    def session(url: str, port: int, token: str, n: int, stall: bool = False) -> Session:
        return Session(
            url, port, token, channels, n, args.procs, args.repeats, args.warmup, args.seconds,
            stall, lambda m: print(m, file=sys.stderr, flush=True),
        )  # fmt: skip

    ingest = f"ws://127.0.0.1:{srv.port}/ws/v1/ingest"
    probe = ServerProbe(srv.proc.pid)
    async with publishing(ingest, feed, names, args.rate, stats, args.window):
        await trio.sleep(args.warmup)
        ingest_util = await idle_cpu(probe, args.seconds)
    print(f"ingest alone: server cpu {ingest_util:.2f}", file=sys.stderr, flush=True)
    for n in args.subscribers:
        for name in args.servers:
            print(f"{name}: {n} subscribers ...", file=sys.stderr, flush=True)
            if name == "tickstream":
                stall = args.slow_consumer and n == largest
                async with publishing(ingest, feed, names, args.rate, stats, args.window):
                    url = f"ws://127.0.0.1:{srv.port}/ws/v1/stream"
                    s = session(url, srv.port, reader, n, stall)
                    windows = await run_session(s, probe)
                if stall:
                    slow = slow_consumer(windows)
                    windows = [w for w in windows if not w.stalled]
            else:
                windows = await peer_session(name, args, session, n)
            run = {"server": name, "subscribers": n, **summarise(windows)}
            if name == "tickstream":
                run["fanout_cpu_us_per_event"] = _fanout_cpu(run, ingest_util)
            runs.append(run | {"per_window": [w.summary() for w in windows]})
            _progress(runs[-1])
    stats["ingest_only_cpu_util_milli"] = round(ingest_util * 1000)
    return {"runs": runs, "slow_consumer": slow, "publisher": stats}


def _fanout_cpu(run: dict[str, Any], ingest_util: float) -> float | None:
    # CPU per delivered event once the cost of ingest alone (no subscriber) is taken off.
    util, rate = run["server_cpu_util"], run["messages_per_s"]
    return round((util - ingest_util) * 1e6 / rate, 3) if util and rate else None


async def peer_session(name: str, args: argparse.Namespace, session: Any, n: int) -> list[Window]:
    """Start the peer ``name`` as a process, measure one session against it, stop it."""
    port = free_port()
    command = [sys.executable, "-m", "loadtest._fanout_peers", name, "--port", str(port)]
    command += ["--rate", str(args.rate), "--symbols", str(args.symbols)]
    # NOTE: quiet, as uvicorn logs every send to a socket the subscribers closed at the end.
    quiet = subprocess.DEVNULL
    proc = await trio.lowlevel.open_process(command, cwd=ROOT, stdout=quiet, stderr=quiet)
    try:
        await _wait_listening(port)
        url = f"ws://127.0.0.1:{port}/ws/v1/stream"
        return await run_session(session(url, port, "", n), ServerProbe(proc.pid))
    finally:
        proc.kill()
        with trio.move_on_after(10, shield=True):
            await proc.wait()


def slow_consumer(windows: list[Window]) -> dict[str, Any]:
    """The others' figures without and with a client that never reads."""
    without = [w for w in windows if not w.stalled]
    with_ = [w for w in windows if w.stalled]
    a, b = summarise(without), summarise(with_)
    ratio = b["p99_ms"] / a["p99_ms"] if a["p99_ms"] and b["p99_ms"] else None
    rss_before = min(w.rss_mib_start for w in without)
    rss_after = max(w.rss_mib_end for w in with_)
    return {
        "subscribers": without[0].sockets if without else 0,
        "without": a,
        "with_stalled_client": b,
        "p99_ratio": round(ratio, 3) if ratio is not None else None,
        "rss_mib_before": round(rss_before, 1),
        "rss_mib_after": round(rss_after, 1),
        "rss_mib_growth": round(rss_after - rss_before, 1),
        "per_window": [w.summary() for w in windows],
    }


def _progress(run: dict[str, Any]) -> None:
    print(
        f"  {run['server']:<10} N={run['subscribers']:<5} {run['messages_per_s'] or 0:>10,.0f} ev/s"
        f"  p99 {run['p99_ms']} ms  cpu {run['server_cpu_us_per_event']} µs/ev",
        file=sys.stderr,
        flush=True,
    )


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def evaluate(runs: list[dict[str, Any]], slow: dict[str, Any], largest: int) -> tuple[Any, Any]:
    """Ratios and targets at the largest N."""
    at = {r["server"]: r for r in runs if r["subscribers"] == largest}
    empty = dict.fromkeys(("messages_per_s", "server_cpu_us_per_event", "p99_ms"))
    ts, raw, fa = (at.get(name, empty) for name in SERVERS)
    ratios = {
        "events_vs_fastapi": _ratio(ts["messages_per_s"], fa["messages_per_s"]),
        "cpu_per_event_vs_fastapi": _ratio(
            ts["server_cpu_us_per_event"], fa["server_cpu_us_per_event"]
        ),
        "events_vs_raw": _ratio(ts["messages_per_s"], raw["messages_per_s"]),
        "p99_vs_fastapi": _ratio(ts["p99_ms"], fa["p99_ms"]),
    }

    def target(value: float | None, bound: float, above: bool) -> dict[str, Any]:
        met = value is not None and (value >= bound if above else value <= bound)
        return {"value": value, "bound": bound, "op": ">=" if above else "<=", "met": met}

    targets = {
        "events_vs_fastapi": target(ratios["events_vs_fastapi"], TARGET_VS_FASTAPI, True),
        "cpu_per_event_vs_fastapi": target(
            ratios["cpu_per_event_vs_fastapi"], TARGET_CPU_VS_FASTAPI, False
        ),
        "p99_no_worse_than_fastapi": target(ratios["p99_vs_fastapi"], 1.0, False),
        "events_vs_raw": target(ratios["events_vs_raw"], TARGET_VS_RAW, True),
        "events_per_s": target(ts["messages_per_s"], TARGET_EVENTS_PER_S, True),
    }
    if slow:
        targets["stall_p99_ratio"] = target(slow["p99_ratio"], TARGET_STALL_P99, False)
        targets["stall_rss_growth_mib"] = target(
            slow["rss_mib_growth"], TARGET_STALL_RSS_MIB, False
        )
    return ratios, targets


def print_table(report: Report) -> None:
    """Print the figures as a table."""
    head = f"{'server':<12}{'N':>6}{'events/s':>12}{'frames/s':>10}{'ev/frame':>9}"
    head += f"{'p50 ms':>9}{'p99 ms':>9}{'cpu µs/ev':>10}{'fan-out':>8}{'cpu':>6}{'clients':>8}"
    print(head)
    print("-" * len(head))
    for r in report.runs:
        per_frame = r["messages_per_s"] / r["frames_per_s"] if r["frames_per_s"] else None
        print(
            f"{r['server']:<12}{r['subscribers']:>6}{cell(r['messages_per_s'], ',.0f'):>12}"
            f"{cell(r['frames_per_s'], ',.0f'):>10}{cell(per_frame):>9}{cell(r['p50_ms']):>9}"
            f"{cell(r['p99_ms']):>9}{cell(r['server_cpu_us_per_event'], '.2f'):>10}"
            f"{cell(r.get('fanout_cpu_us_per_event'), '.2f'):>8}"
            f"{cell(r['server_cpu_util'], '.2f'):>6}"
            f"{cell(r['clients_cpu_util'], '.2f'):>8}"
        )
    slow = report.slow_consumer
    if slow:
        print(
            f"slow consumer at N={slow['subscribers']}: others' p99 "
            f"{cell(slow['without']['p99_ms'])} ms without, "
            f"{cell(slow['with_stalled_client']['p99_ms'])} ms with a never-reading client "
            f"(×{cell(slow['p99_ratio'], '.2f')}); server RSS {slow['rss_mib_before']} → "
            f"{slow['rss_mib_after']} MiB"
        )
    pub = report.publisher
    print(
        f"publisher: {pub['ticks']:,} ticks sent, {pub['ticks_skipped']:,} skipped (engine "
        f"behind), {pub['acks']:,} frames acked, "
        f"{pub['errors']} errors; server cpu with ingest alone (no subscriber) "
        f"{pub['ingest_only_cpu_util_milli'] / 1000:.2f} (fan-out = cpu µs/ev without it)"
    )
    print("ratios: " + ", ".join(f"{k} {cell(v, '.2f')}" for k, v in report.ratios.items()))
    for name, t in report.targets.items():
        verdict = "met" if t["met"] else "MISSED"
        print(f"target {name} {t['op']} {t['bound']:,}: {cell(t['value'], ',.3f')} {verdict}")


def build_parser() -> argparse.ArgumentParser:
    """Return the benchmark's argument parser."""
    p = argparse.ArgumentParser(
        prog="loadtest.bench_fanout",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="one 2 s window per session")
    p.add_argument("--subscribers", default="1,100,1000", help="comma-separated N values")
    p.add_argument("--servers", default=",".join(SERVERS), help="a subset, for experiments")
    p.add_argument("--rate", type=float, default=5000.0, help="events/s published")
    p.add_argument("--symbols", type=int, default=50, help="quotes:<SYMBOL> channels")
    p.add_argument("--procs", type=int, default=4, help="subscriber processes")
    p.add_argument("--window", type=int, default=4, help="ingest frames in flight (unacked)")
    p.add_argument("--repeats", type=int, help="windows per session (default 3, quick 1)")
    p.add_argument("--seconds", type=float, help="measured window (default 3, quick 2)")
    p.add_argument("--warmup", type=float, help="seconds before the first window")
    p.add_argument("--no-slow-consumer", dest="slow_consumer", action="store_false")
    p.add_argument("--output", type=Path, default=RESULT_PATH)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 1 if a target is missed."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.subscribers = [int(n) for n in args.subscribers.split(",")]
    args.servers = [s for s in args.servers.split(",") if s in SERVERS]
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.seconds = args.seconds or (2.0 if args.quick else 3.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0)
    configure_logging("WARNING", "console")
    secret = secrets.token_hex(32)  # a throw-away JWT key for this run
    with (
        reachable_tempdir("tickstream-bench-") as workdir,
        temporary_database("tickstream_bench") as dsn,
    ):
        env = {
            "TICKSTREAM_DATABASE_URL": dsn,
            "TICKSTREAM_JWT_SECRET": secret,
            "TICKSTREAM_CONFIG": str(bench_toml(workdir)),
        }
        srv = start_server(workdir, env)
        try:
            srv.wait_healthy()
            set_up_instruments(srv, secret, symbols(args.symbols))
            measured = trio.run(measure_all, args, srv, secret)
        finally:
            try:
                srv.stop()
            except AssertionError as exc:
                print(f"server stop: {exc}", file=sys.stderr)
    ratios, targets = evaluate(measured["runs"], measured["slow_consumer"], max(args.subscribers))
    report = Report(
        quick=args.quick,
        command=" ".join(["python -m loadtest.bench_fanout", *argv]),
        machine=machine_info(),
        settings={
            "subscribers": args.subscribers,
            "servers": args.servers,
            "ingest_window_frames": args.window,
            "rate": args.rate,
            "symbols": args.symbols,
            "subscriber_processes": args.procs,
            "repeats": args.repeats,
            "seconds": args.seconds,
            "warmup_s": args.warmup,
            "slow_consumer": args.slow_consumer,
        },
        runs=measured["runs"],
        slow_consumer=measured["slow_consumer"],
        publisher=measured["publisher"],
        ratios=ratios,
        targets=targets,
        targets_met=all(t["met"] for t in targets.values()),
    )
    print_table(report)
    write_record(report, args.output)
    return 0 if report.targets_met else 1


if __name__ == "__main__":
    sys.exit(main())
