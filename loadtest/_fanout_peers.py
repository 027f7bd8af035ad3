"""The comparison servers of ``loadtest.bench_fanout``, each run as its own process.

    python -m loadtest._fanout_peers raw     --port P --rate 5000 --symbols 50
    python -m loadtest._fanout_peers fastapi --port P --rate 5000 --symbols 50

Both have the same event source: an in-process generator that, every ``symbols / rate``
seconds, makes one quote per symbol stamped with the wall-clock ``ts`` of its generation,
encoded once as the very ``event`` frame tickstream sends (``event_frame``). Both answer
``subscribe`` with ``subscribed`` and deliver every symbol to every subscribed socket.

- ``raw``: the limit of the transport tickstream's stream path could reach — a bare
  trio-websocket server with tickstream's batching: the prepared frame goes into each
  socket's :class:`~actors.connection.outbox.Outbox` (latest value per channel), and one
  sender task per socket writes what is queued as one frame (a JSON array of up to
  ``batch_max`` messages), each write bounded by a timeout.
- ``fastapi``: the peer, written the usual way (``loadtest._fanout_fastapi``): a set of
  connections and ``await ws.send_text(frame)`` per subscriber and event.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from typing import Final

import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

from actors.connection.hub import event_frame
from actors.connection.outbox import Outbox, SlowConsumer

BATCH_MAX: Final = 256  # as [stream] batch_max in config/default.toml
QUEUE_CAPACITY: Final = 1024  # as [stream] queue_capacity
SEND_TIMEOUT: Final = 10.0  # as [stream] send_timeout
MAX_BEHIND: Final = 1.0  # seconds a late generator may fall behind before it skips ahead


def symbols(count: int) -> list[str]:
    """The benchmark's symbols."""
    return [f"FAN{i:02d}" for i in range(count)]


class Source:
    """Quotes for ``symbols`` at ``rate`` events/s in steps of one quote per symbol."""

    def __init__(self, names: list[str], rate: float) -> None:
        self.names = names
        self.step = len(names) / rate
        self.seq = 0
        self.generated = 0

    def frames(self) -> Iterator[tuple[str, bytes]]:
        """One step: ``(channel, event frame)`` per symbol, ``ts`` set now."""
        self.seq += 1
        ts = int(time.time() * 1000)
        price = f"{100 + (self.seq % 200) * 0.05:.2f}"
        for name in self.names:
            data = {"symbol": name, "ltp": price, "bid": price, "ask": price}
            data |= {"volume": self.seq, "oi": None, "ts": ts}
            channel = f"quotes:{name}"
            self.generated += 1
            yield channel, event_frame(channel, self.seq, orjson.dumps(data))

    def next_deadline(self, deadline: float, now: float) -> float:
        """The time of the next step (skipping ahead when far behind)."""
        deadline += self.step
        return now if now - deadline > MAX_BEHIND else deadline


def subscribed(raw: str | bytes) -> str | None:
    """The ``subscribed`` reply to a client frame (None when it is not a subscribe)."""
    try:
        frame = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(frame, dict) or frame.get("op") != "subscribe":
        return None
    reply = {"op": "subscribed", "id": frame.get("id"), "channel": frame.get("channel")}
    reply |= {"epoch": "peer", "seq": 0, "snapshot": None}
    return orjson.dumps(reply).decode()


# ------------------------------------------------------------------ raw trio-websocket


class RawServer:
    """Bare trio-websocket fan-out with tickstream's per-socket outbox and batching."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.outboxes: set[Outbox] = set()

    async def generate(self) -> None:
        """Offer each generated frame to every subscribed socket's outbox (never waits)."""
        deadline = trio.current_time()
        while True:
            for channel, frame in self.source.frames():
                for outbox in tuple(self.outboxes):
                    outbox.put_latest(channel, frame)
            deadline = self.source.next_deadline(deadline, trio.current_time())
            await trio.sleep_until(deadline)

    async def handler(self, request: WebSocketRequest) -> None:
        """One socket: a reader (``subscribe`` → ``subscribed``) and a sender task."""
        try:
            ws = await request.accept()
        except ConnectionClosed:
            return
        outbox = Outbox(QUEUE_CAPACITY)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send, ws, outbox, nursery.cancel_scope)
                while True:
                    reply = subscribed(await ws.get_message())
                    if reply is not None:
                        outbox.put(reply.encode())
                        self.outboxes.add(outbox)
        except* (ConnectionClosed, SlowConsumer):
            pass
        finally:
            self.outboxes.discard(outbox)
            outbox.close()

    async def _send(self, ws: object, outbox: Outbox, scope: trio.CancelScope) -> None:
        send: Callable[[str], object] = ws.send_message  # type: ignore[attr-defined]
        try:
            while True:
                frames = await outbox.take_all()
                for start in range(0, len(frames), BATCH_MAX):
                    chunk = frames[start : start + BATCH_MAX]
                    data = chunk[0] if len(chunk) == 1 else b"[" + b",".join(chunk) + b"]"
                    with trio.move_on_after(SEND_TIMEOUT) as timer:
                        await send(data.decode())  # type: ignore[misc]
                    if timer.cancelled_caught:
                        scope.cancel()
                        return
        except (ConnectionClosed, trio.EndOfChannel):
            scope.cancel()


async def serve_raw(port: int, source: Source) -> None:
    """Run the raw server until killed."""
    server = RawServer(source)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.generate)
        await serve_websocket(
            server.handler, "127.0.0.1", port, ssl_context=None, max_message_size=1 << 20
        )


def main(argv: list[str] | None = None) -> None:
    """Run the peer named on the command line."""
    p = argparse.ArgumentParser(prog="loadtest._fanout_peers")
    p.add_argument("peer", choices=["raw", "fastapi"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rate", type=float, default=5000.0)
    p.add_argument("--symbols", type=int, default=50)
    args = p.parse_args(argv)
    source = Source(symbols(args.symbols), args.rate)
    if args.peer == "raw":
        trio.run(serve_raw, args.port, source)
    else:
        from ._fanout_fastapi import serve_fastapi

        serve_fastapi(args.port, source)


if __name__ == "__main__":
    sys.exit(main())
