"""The publisher side of the ingest benchmark: simulator ticks pushed over ``/ws/v1/ingest``.

Run by ``loadtest.bench_ingest`` as a separate process (so it has its own core):

    python -m loadtest.ingest_publisher --url ws://127.0.0.1:PORT/ws/v1/ingest --token JWT

It pre-generates and pre-encodes every frame before anything is timed, prints ``ready``,
waits for a ``go`` line on stdin, sends the instruments, then pushes ``ticks`` frames as
fast as the server acknowledges them: up to ``--window`` frames in flight, each answered
in order by an ``ack`` or an ``error`` frame. It stops by itself after ``--seconds`` and
prints one JSON line with its figures.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import Final

import orjson
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

import protocol
from actors.feed.simulator import MarketSimulator
from engine.calendar import load_calendar
from engine.context import system_clock_ms

FRAME_TICKS: Final = 5000  # ticks per ingest frame (as actors.feed.publisher.MAX_FRAME_TICKS)
WINDOW: Final = 4  # frames sent before their ack is read
STEP_MS: Final = 5  # simulated milliseconds between simulator steps
SEED: Final = 7
CONNECT_TIMEOUT: Final = 30.0  # seconds
GO_TIMEOUT: Final = 300.0  # seconds to wait for the go line
MAX_MESSAGE: Final = 64 * 1024 * 1024  # bytes


@dataclass(frozen=True, slots=True)
class Frames:
    """Pre-encoded ingest frames (text, as the ticker service sends them)."""

    texts: list[str]
    ticks_per_frame: list[int]
    instruments: list[dict[str, object]]
    symbols: list[str]
    generate_s: float


@dataclass(frozen=True, slots=True)
class PublisherReport:
    """What the publisher measured (its own clock)."""

    frames_distinct: int
    ticks_distinct: int
    generate_s: float
    frames_sent: int
    ticks_sent: int
    ticks_acked: int
    ticks_refused: int
    error_frames: int
    send_s: float
    ticks_per_s: float
    cpu_s: float
    cycled: bool


def make_frames(
    *, ticks: int, frame_ticks: int, seed: int, start_ms: int, step_ms: int = STEP_MS
) -> Frames:
    """Step a seeded simulator from ``start_ms`` and encode ``ticks`` ticks as ingest frames.

    Frame ``k`` has ``"id": k``; every tick is one the server must accept.
    """
    began = time.perf_counter()
    sim = MarketSimulator(load_calendar(), seed=seed, start_ms=start_ms)
    texts: list[str] = []
    counts: list[int] = []
    pending: list[dict[str, object]] = []
    now = start_ms
    while len(texts) * frame_ticks < ticks:
        now += step_ms
        pending.extend(t.to_wire() for t in sim.step(now))
        while len(pending) >= frame_ticks:
            chunk, pending = pending[:frame_ticks], pending[frame_ticks:]
            frame = {"op": "ticks", "id": len(texts), "ticks": chunk}
            texts.append(protocol.dumps(frame).decode())
            counts.append(len(chunk))
    instruments = [i.to_wire() for i in sim.instruments()]
    symbols = [i.symbol for i in sim.instruments()]
    return Frames(texts, counts, instruments, symbols, time.perf_counter() - began)


async def _wait_for_go() -> None:
    print("ready", flush=True)
    with trio.fail_after(GO_TIMEOUT):
        line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
    if line.strip() != "go":
        raise SystemExit(f"publisher: expected 'go', got {line!r}")


async def publish(
    url: str, token: str, frames: Frames, *, seconds: float, window: int
) -> PublisherReport:
    """Send ``frames`` (cycling if they run out) for ``seconds``; return the figures."""
    headers = [(b"Authorization", f"Bearer {token}".encode())]
    sent_frames = sent_ticks = acked = refused = error_frames = 0
    inflight: collections.deque[tuple[int, int]] = collections.deque()
    texts, counts, n = frames.texts, frames.ticks_per_frame, len(frames.texts)
    cpu0 = time.process_time()
    async with open_websocket_url(
        url,
        extra_headers=headers,
        connect_timeout=CONNECT_TIMEOUT,
        message_queue_size=window + 4,
        max_message_size=MAX_MESSAGE,
    ) as ws:
        await ws.send_message(
            protocol.dumps(
                {"op": "instruments", "id": -1, "instruments": frames.instruments}
            ).decode()
        )
        answer = orjson.loads(await ws.get_message())
        if answer.get("op") != "ack":
            raise SystemExit(f"publisher: instruments refused: {answer!r}"[:500])
        start = trio.current_time()
        deadline = start + seconds
        try:
            while True:
                while len(inflight) < window and trio.current_time() < deadline:
                    k = sent_frames % n
                    await ws.send_message(texts[k])
                    inflight.append((k, counts[k]))
                    sent_frames += 1
                    sent_ticks += counts[k]
                if not inflight:
                    break
                answer = orjson.loads(await ws.get_message())
                k, count = inflight.popleft()
                if answer.get("id") != k:
                    raise SystemExit(f"publisher: answer out of order: {answer!r}"[:500])
                if answer.get("op") == "ack":
                    acked += int(answer["accepted"])
                else:
                    error_frames += 1
                    details = answer.get("details") or {}
                    acked += int(details.get("accepted", 0))
                    refused += len(details.get("errors", []))
        except ConnectionClosed as exc:
            raise SystemExit(f"publisher: connection closed: {exc.reason}") from None
        elapsed = trio.current_time() - start
    return PublisherReport(
        frames_distinct=n,
        ticks_distinct=sum(counts),
        generate_s=frames.generate_s,
        frames_sent=sent_frames,
        ticks_sent=sent_ticks,
        ticks_acked=acked,
        ticks_refused=refused,
        error_frames=error_frames,
        send_s=elapsed,
        ticks_per_s=acked / elapsed if elapsed > 0 else 0.0,
        cpu_s=time.process_time() - cpu0,
        cycled=sent_frames > n,
    )


async def _main(args: argparse.Namespace) -> PublisherReport:
    frames = make_frames(
        ticks=args.ticks, frame_ticks=args.frame_ticks, seed=args.seed, start_ms=args.start_ms
    )
    if args.wait_go:
        await _wait_for_go()
    return await publish(args.url, args.token, frames, seconds=args.seconds, window=args.window)


def build_parser() -> argparse.ArgumentParser:
    """Return the publisher's argument parser."""
    p = argparse.ArgumentParser(prog="loadtest.ingest_publisher", description=__doc__)
    p.add_argument("--url", required=True)
    p.add_argument("--token", required=True, help="JWT with scope feed:publish")
    p.add_argument("--seconds", type=float, default=10.0, help="how long to send")
    p.add_argument("--ticks", type=int, default=1_000_000, help="ticks to pre-generate")
    p.add_argument("--frame-ticks", type=int, default=FRAME_TICKS)
    p.add_argument("--window", type=int, default=WINDOW)
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--start-ms", type=int, default=None, help="first tick time (default now)")
    p.add_argument("--wait-go", action="store_true", help="print ready, wait for 'go' on stdin")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the publisher; print its report as one JSON line."""
    args = build_parser().parse_args(argv)
    if args.start_ms is None:
        args.start_ms = system_clock_ms()
    report = trio.run(_main, args)
    print(json.dumps(asdict(report)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
