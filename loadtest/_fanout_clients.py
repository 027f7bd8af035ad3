"""Subscriber process of ``loadtest.bench_fanout``: many stream sockets in one process.

    python -m loadtest._fanout_clients --url ws://127.0.0.1:PORT/ws/v1/stream \\
        --token JWT --clients 250 --channels quotes:FAN00,quotes:FAN01

Opens ``--clients`` trio-websocket sockets (authenticated by header; all of them before
any subscribes), subscribes each to every channel, prints ``ready N`` (N sockets that got
all their ``subscribed`` replies), then obeys lines on stdin:

- ``window T0 T1`` (wall-clock seconds): count what arrives between T0 and T1 and, once
  T1 has passed, print one JSON line: messages (events; a frame may hold an array of
  them), frames, messages per socket (min/max), and a histogram of the tick → client
  latency (receive time minus the quote's ``ts``, both wall clock, 0.1 ms buckets);
- ``quit``: close the sockets and exit.

Each socket also sends a ``ping`` every few seconds (the server closes silent clients).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from typing import Final

import orjson
import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    connect_websocket_url,
)

PING_EVERY: Final = 8.0  # seconds (the server's idle timeout is 25 s)
CONNECT_CONCURRENCY: Final = 32
CONNECT_TIMEOUT: Final = 60.0  # seconds for one handshake
MAX_MESSAGE: Final = 64 * 1024 * 1024
EVENT: Final = '"op":"event"'


class Window:
    """What the sockets of this process received inside one measured window."""

    def __init__(self, t0: float, t1: float, sockets: int) -> None:
        self.t0, self.t1 = t0, t1
        self.frames = 0
        self.per_socket = [0] * sockets
        self.latency: Counter[int] = Counter()  # 0.1 ms bucket -> messages

    def record(self, index: int, raw: str, now: float) -> None:
        """Count one frame received at ``now`` (wall clock, seconds) by socket ``index``."""
        if not self.t0 <= now < self.t1:
            return
        count = raw.count(EVENT)
        if not count:
            return
        self.frames += 1
        self.per_socket[index] += count
        decoded = orjson.loads(raw)
        now_ms = now * 1000.0
        hist = self.latency
        for message in decoded if isinstance(decoded, list) else (decoded,):
            if message.get("op") == "event":
                hist[int((now_ms - message["data"]["ts"]) * 10)] += 1

    def result(self) -> dict[str, object]:
        """The JSON line of this window."""
        return {
            "messages": sum(self.per_socket),
            "frames": self.frames,
            "sockets": len(self.per_socket),
            "min_per_socket": min(self.per_socket, default=0),
            "max_per_socket": max(self.per_socket, default=0),
            "silent_sockets": sum(1 for n in self.per_socket if n == 0),
            "latency_hist": {str(k): v for k, v in self.latency.items()},
        }


class Clients:
    """The sockets of this process and the window being measured."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.window: Window | None = None
        self.ready = 0
        self.connected = 0
        self.closed = 0
        self.all_connected = trio.Event()
        self._all_ready = trio.Event()

    async def run_one(self, index: int, limiter: trio.CapacityLimiter) -> None:
        """Connect, subscribe, then read until cancelled (a close is counted, not raised)."""
        args = self.args
        headers = [("Authorization", f"Bearer {args.token}")] if args.token else None
        opened = False
        try:
            # The socket's own nursery: its background reader fails with it, alone.
            async with trio.open_nursery() as nursery:
                async with limiter:
                    with trio.fail_after(CONNECT_TIMEOUT):
                        ws = await connect_websocket_url(
                            nursery, args.url, extra_headers=headers, max_message_size=MAX_MESSAGE
                        )
                opened = True
                self._opened()
                nursery.start_soon(_pinger, ws)  # the server closes silent sockets
                # Subscribe once every socket is open: handshakes go faster with no events
                # flowing yet (the subscribers of 1,000 sockets share 2 cores with the server).
                with trio.move_on_after(CONNECT_TIMEOUT):
                    await self.all_connected.wait()
                await self._serve(index, ws)
        except* (ConnectionClosed, HandshakeError, OSError, trio.TooSlowError):
            self.closed += 1
            if not opened:
                self._opened()

    def _opened(self) -> None:
        # One more socket open (or failed to open): subscribing starts once all are.
        self.connected += 1
        if self.connected >= self.args.clients:
            self.all_connected.set()

    async def _serve(self, index: int, ws: WebSocketConnection) -> None:
        channels = self.args.channels
        for n, channel in enumerate(channels, 1):
            frame = {"op": "subscribe", "id": n, "channel": channel}
            await ws.send_message(orjson.dumps(frame).decode())
        pending = len(channels)
        while True:
            raw = await ws.get_message()
            now = time.time()
            if pending:
                pending -= raw.count('"op":"subscribed"')
                if not pending:
                    self.ready += 1
                    if self.ready == self.args.clients:
                        self._all_ready.set()
            window = self.window
            if window is not None:
                window.record(index, str(raw), now)

    async def wait_ready(self, budget: float) -> None:
        """Wait until every socket is subscribed, or ``budget`` seconds."""
        with trio.move_on_after(budget):
            await self._all_ready.wait()


async def _pinger(ws: WebSocketConnection) -> None:
    n = 1_000_000
    while True:
        await trio.sleep(PING_EVERY)
        n += 1
        await ws.send_message(f'{{"op":"ping","id":{n}}}')


async def main_async(args: argparse.Namespace) -> None:
    """Connect everything, report ``ready``, then serve windows until ``quit``."""
    clients = Clients(args)
    limiter = trio.CapacityLimiter(CONNECT_CONCURRENCY)
    async with trio.open_nursery() as nursery:
        for i in range(args.clients):
            nursery.start_soon(clients.run_one, i, limiter)
        await clients.wait_ready(args.ready_timeout)
        _say(f"ready {clients.ready}")
        while True:
            line = (await trio.to_thread.run_sync(sys.stdin.readline)).split()
            if not line or line[0] == "quit":
                break
            t0, t1 = float(line[1]), float(line[2])
            window = Window(t0, t1, args.clients)
            clients.window = window
            await trio.sleep(max(0.0, t1 - time.time()) + 0.05)
            clients.window = None
            out = window.result() | {"closed": clients.closed}
            _say(orjson.dumps(out).decode())
        nursery.cancel_scope.cancel()


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    """Parse the options and run."""
    p = argparse.ArgumentParser(prog="loadtest._fanout_clients")
    p.add_argument("--url", required=True)
    p.add_argument("--token", default="")
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--channels", required=True, help="comma-separated channel names")
    p.add_argument("--ready-timeout", type=float, default=120.0)
    args = p.parse_args(argv)
    args.channels = args.channels.split(",")
    trio.run(main_async, args)


if __name__ == "__main__":
    main()
