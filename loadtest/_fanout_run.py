"""Sessions of ``loadtest.bench_fanout``: one server, N subscribers, measured windows.

A session spawns the subscriber processes (``loadtest._fanout_clients``), waits until every
socket is subscribed, then measures ``repeats`` windows back to back: each window is told
to every subscriber process as wall-clock bounds, and the server's CPU time (user +
system, from psutil) and RSS are read at both ends. With ``stall`` every other window has
one extra client that subscribed and never reads (a raw socket with a small receive
buffer, as in tests/e2e/test_stream_limits.py), opened just before that window.
"""

from __future__ import annotations

import math
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson
import psutil
import trio
from trio_websocket import open_websocket_url
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

ROOT: Final = Path(__file__).resolve().parent.parent
READY_TIMEOUT: Final = 180.0  # seconds for every socket of a session to be subscribed
WINDOW_GAP: Final = 0.3  # seconds between two windows (stall set-up, reading results)
STALL_SETTLE: Final = 1.0  # seconds the stalled client has to fill its buffers


@dataclass(slots=True)
class Window:
    """One measured window, all subscriber processes merged."""

    seconds: float
    messages: int
    frames: int
    sockets: int
    silent_sockets: int
    closed: int
    cpu_s: float
    rss_mib_start: float
    rss_mib_end: float
    stalled: bool
    clients_cpu_s: float
    latency: Counter[int] = field(repr=False)  # 0.1 ms bucket -> messages

    @property
    def per_s(self) -> float:
        """Delivered messages (events) per second."""
        return self.messages / self.seconds

    def percentile(self, q: float) -> float | None:
        """The ``q`` quantile of tick → client latency, in ms."""
        total = sum(self.latency.values())
        if not total:
            return None
        rank, seen = math.ceil(q * total), 0
        for bucket in sorted(self.latency):
            seen += self.latency[bucket]
            if seen >= rank:
                return bucket / 10
        return None

    def summary(self) -> dict[str, Any]:
        """The JSON form (without the histogram)."""
        per = self.messages
        return {
            "stalled": self.stalled,
            "seconds": round(self.seconds, 3),
            "messages_per_s": round(self.per_s),
            "frames_per_s": round(self.frames / self.seconds),
            "messages": per,
            "p50_ms": self.percentile(0.5),
            "p99_ms": self.percentile(0.99),
            "server_cpu_util": round(self.cpu_s / self.seconds, 3),
            "server_cpu_us_per_event": round(self.cpu_s * 1e6 / per, 3) if per else None,
            # The subscriber processes share the machine's 2 cores with the server.
            "clients_cpu_util": round(self.clients_cpu_s / self.seconds, 3),
            "sockets": self.sockets,
            "silent_sockets": self.silent_sockets,
            "closed_sockets": self.closed,
            "rss_mib": [round(self.rss_mib_start, 1), round(self.rss_mib_end, 1)],
        }


def summarise(windows: list[Window]) -> dict[str, Any]:
    """Medians over ``windows`` (what the tables and targets read)."""

    def med(key: str) -> float | None:
        values = [w.summary()[key] for w in windows]
        present = [v for v in values if v is not None]
        return round(statistics.median(present), 3) if present else None

    out = {k: med(k) for k in ("messages_per_s", "frames_per_s", "p50_ms", "p99_ms")}
    out |= {k: med(k) for k in ("server_cpu_us_per_event", "server_cpu_util", "clients_cpu_util")}
    out["windows"] = len(windows)
    out["silent_sockets"] = max((w.silent_sockets for w in windows), default=0)
    return out


class _Lines:
    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream, self._buf = stream, b""

    async def readline(self) -> str:
        while b"\n" not in self._buf:
            chunk = await self._stream.receive_some()
            if not chunk:
                raise EOFError("subscriber process closed its output")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode()


class ServerProbe:
    """CPU time and RSS of a process (and its children): a server, a subscriber process."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)

    def _all(self) -> list[psutil.Process]:
        return [self.proc, *self.proc.children(recursive=True)]

    def cpu_s(self) -> float:
        """User + system CPU seconds so far."""
        total = 0.0
        for p in self._all():
            t = p.cpu_times()
            total += t.user + t.system
        return total

    def rss_mib(self) -> float:
        """Resident memory, MiB."""
        return float(self.proc.memory_info().rss) / 2**20


def stalled_client(port: int, token: str, channels: list[str]) -> socket.socket:
    """A client that subscribes, then never reads: a tiny receive buffer it leaves full."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    ws = WSConnection(ConnectionType.CLIENT)
    auth = [(b"authorization", f"Bearer {token}".encode())] if token else []
    sock.sendall(ws.send(Request(host="127.0.0.1", target="/ws/v1/stream", extra_headers=auth)))
    while not any(isinstance(e, AcceptConnection) for e in ws.events()):
        ws.receive_data(sock.recv(4096))
    for channel in channels:
        sock.sendall(ws.send(TextMessage(orjson.dumps({"op": "subscribe", "channel": channel}))))
    return sock


@dataclass
class Session:
    """Where the subscribers connect and how the session is measured."""

    url: str
    port: int
    token: str
    channels: list[str]
    subscribers: int
    procs: int
    repeats: int
    warmup: float
    seconds: float
    stall: bool = False
    progress: Callable[[str], None] = print


async def _spawn(session: Session, count: int) -> trio.Process:
    command = [sys.executable, "-m", "loadtest._fanout_clients", "--url", session.url]
    command += ["--token", session.token, "--clients", str(count)]
    command += ["--channels", ",".join(session.channels)]
    return await trio.lowlevel.open_process(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT
    )


async def run_session(session: Session, probe: ServerProbe) -> list[Window]:
    """Connect the subscribers and measure the windows; return them in order."""
    n, procs = session.subscribers, max(1, min(session.procs, session.subscribers))
    shares = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
    workers = [await _spawn(session, k) for k in shares]
    lines = [_Lines(w.stdout) for w in workers]  # type: ignore[arg-type]
    clients = [ServerProbe(w.pid) for w in workers]
    windows: list[Window] = []
    try:
        with trio.fail_after(READY_TIMEOUT):
            ready = [int((await ln.readline()).split()[1]) for ln in lines]
        if sum(ready) < n:
            session.progress(f"only {sum(ready)} of {n} subscribers ready")
        start = time.time() + session.warmup
        for r in range(session.repeats * (2 if session.stall else 1)):
            stalled = session.stall and r % 2 == 1
            stall_sock = None
            if stalled:
                stall_sock = await trio.to_thread.run_sync(
                    stalled_client, session.port, session.token, session.channels
                )
                start = max(start, time.time() + STALL_SETTLE)
            t0, t1 = start, start + session.seconds
            for w in workers:
                await w.stdin.send_all(f"window {t0} {t1}\n".encode())  # type: ignore[union-attr]
            await trio.sleep(max(0.0, t0 - time.time()))
            cpu0, rss0 = probe.cpu_s(), probe.rss_mib()
            clients0 = sum(c.cpu_s() for c in clients)
            await trio.sleep(max(0.0, t1 - time.time()))
            cpu1, rss1 = probe.cpu_s(), probe.rss_mib()
            clients1 = sum(c.cpu_s() for c in clients)
            if stall_sock is not None:
                stall_sock.close()
            results = [orjson.loads(await ln.readline()) for ln in lines]
            latency: Counter[int] = Counter()
            for res in results:
                latency.update({int(k): v for k, v in res["latency_hist"].items()})
            windows.append(
                Window(
                    seconds=session.seconds,
                    messages=sum(res["messages"] for res in results),
                    frames=sum(res["frames"] for res in results),
                    sockets=sum(res["sockets"] for res in results),
                    silent_sockets=sum(res["silent_sockets"] for res in results),
                    closed=sum(res["closed"] for res in results),
                    cpu_s=cpu1 - cpu0,
                    rss_mib_start=rss0,
                    rss_mib_end=rss1,
                    stalled=stalled,
                    clients_cpu_s=clients1 - clients0,
                    latency=latency,
                )
            )
            start = time.time() + WINDOW_GAP
        for w in workers:
            await w.stdin.send_all(b"quit\n")  # type: ignore[union-attr]
        with trio.move_on_after(20):
            for w in workers:
                await w.wait()
    finally:
        for w in workers:
            if w.returncode is None:
                w.kill()
                with trio.move_on_after(5, shield=True):
                    await w.wait()
    return windows


# ------------------------------------------------------------------ tickstream's ingest


def tick_frame(symbols: list[str], step: int) -> str:
    """Ingest frame ``step`` (acknowledged): a tick per symbol, ``ts`` stamped now (ms)."""
    ts = int(time.time() * 1000)
    price = f"{100 + (step % 200) * 0.05:.2f}"
    ticks = [{"symbol": s, "ltp": price, "bid": price, "ask": price, "ts": ts} for s in symbols]
    return orjson.dumps({"op": "ticks", "id": step, "ticks": ticks}).decode()


@asynccontextmanager
async def publishing(
    url: str, token: str, symbols: list[str], rate: float, stats: dict[str, int], window: int
) -> AsyncIterator[None]:
    """Push a tick per symbol every ``len(symbols) / rate`` s through ``/ws/v1/ingest``.

    At most ``window`` frames are unacknowledged, as a feed that waits for the engine: when
    the engine is behind, the steps it could not take are skipped (counted), so the ticks'
    ``ts`` is when they entered the socket and no backlog builds up in front of the engine.
    """
    step = len(symbols) / rate
    headers = [("Authorization", f"Bearer {token}")]
    in_flight = trio.Semaphore(window)
    async with (
        open_websocket_url(url, extra_headers=headers) as ws,
        trio.open_nursery() as nursery,
    ):

        async def acks() -> None:
            while True:
                frame = orjson.loads(await ws.get_message())
                stats["acks" if frame.get("op") == "ack" else "errors"] += 1
                in_flight.release()

        async def send() -> None:
            deadline, n = trio.current_time(), 0
            while True:
                await in_flight.acquire()
                n += 1
                await ws.send_message(tick_frame(symbols, n))
                stats["ticks"] += len(symbols)
                deadline += step
                now = trio.current_time()
                if now - deadline > step:
                    skipped = int((now - deadline) / step)
                    stats["ticks_skipped"] += skipped * len(symbols)
                    deadline += skipped * step  # behind: skip the steps, never burst
                await trio.sleep_until(deadline)

        try:
            nursery.start_soon(acks)
            nursery.start_soon(send)
            yield
        finally:
            nursery.cancel_scope.cancel()


async def idle_cpu(probe: ServerProbe, seconds: float) -> float:
    """The server's CPU utilisation over ``seconds`` (no subscriber: ingest alone)."""
    cpu0, t0 = probe.cpu_s(), time.monotonic()
    await trio.sleep(seconds)
    return (probe.cpu_s() - cpu0) / (time.monotonic() - t0)


async def wait_listening(port: int, budget: float = 30.0) -> None:
    """Wait until something accepts connections on ``port``."""
    with trio.fail_after(budget):
        while True:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.1)
                continue
            await stream.aclose()
            return
