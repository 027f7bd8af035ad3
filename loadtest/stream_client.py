"""A small ``/ws/v1/stream`` client others can reuse (trio + trio-websocket).

- :func:`connect` opens one socket, authenticated by header or by first frame;
  :class:`StreamSocket` sends ``subscribe``/``unsubscribe``/``ping`` and reads messages,
  accepting both one object per frame and an array of them.
- :class:`ResumingStream` keeps a set of subscriptions alive across drops: after a close
  (4008 slow consumer, 1001 drain, a lost connection, or ``silence_timeout`` seconds
  without a message — the server sends heartbeats) it reconnects and resubscribes
  each channel with ``since``/``epoch`` of the last event it delivered, so a lossless
  channel continues with no gap and no duplicate (or starts again from a snapshot when
  the server answers ``recovered: false``).

Example::

    async with ResumingStream(url, lambda: token, ["account:ACC1:orders"]) as stream:
        async for message in stream:
            print(message)
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

LOG = logging.getLogger(__name__)

FATAL_CODES: Final = frozenset({4401, 4403, 1008, 1009, 4429})  # resubscribing will not help
RECONNECT_FIRST: Final = 0.1  # seconds
RECONNECT_MAX: Final = 5.0
MAX_MESSAGE: Final = 64 * 1024 * 1024
PING_EVERY: Final = 10.0  # seconds; the server closes a socket silent for its idle timeout
# NOTE: the server sends a heartbeat after stream.heartbeat_interval (10 s) of silence and
# answers every ping, so a socket that brings nothing for this long is dead. A connection
# the server's kernel aborted (TCP_USER_TIMEOUT) may send no RST: without this the client
# would wait on it forever.
SILENCE_TIMEOUT: Final = 30.0  # seconds


class StreamSocket:
    """One open stream socket: send requests, read messages one by one."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._pending: list[dict[str, Any]] = []
        self.frames = 0

    async def send(self, frame: dict[str, Any]) -> int:
        """Send a frame (an ``id`` is added when missing); return its id."""
        frame.setdefault("id", next(self._ids))
        await self.ws.send_message(orjson.dumps(frame).decode())
        return int(frame["id"])

    async def subscribe(
        self, channel: str, *, since: int | None = None, epoch: str | None = None
    ) -> int:
        """Send ``subscribe`` (resuming after ``since`` of ``epoch`` when given)."""
        frame: dict[str, Any] = {"op": "subscribe", "channel": channel}
        if since is not None:
            frame["since"] = since
        if epoch is not None:
            frame["epoch"] = epoch
        return await self.send(frame)

    async def receive(self) -> dict[str, Any]:
        """Return the next server message (frames holding an array are split in order).

        Raises:
            trio_websocket.ConnectionClosed: the socket closed (``.reason.code`` says why).
        """
        while not self._pending:
            raw = await self.ws.get_message()
            self.frames += 1
            decoded = orjson.loads(raw)
            self._pending = decoded if isinstance(decoded, list) else [decoded]
        return self._pending.pop(0)

    async def until(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Read messages until one satisfies ``predicate``; return it (others are dropped)."""
        while True:
            message = await self.receive()
            if predicate(message):
                return message


@asynccontextmanager
async def connect(
    url: str, token: str | None, *, header: bool = True
) -> AsyncIterator[StreamSocket]:
    """Open a stream socket authenticated by header (default) or by a first ``auth`` frame."""
    headers = [(b"Authorization", f"Bearer {token}".encode())] if header and token else None
    async with open_websocket_url(url, extra_headers=headers, max_message_size=MAX_MESSAGE) as ws:
        sock = StreamSocket(ws)
        if token and not header:
            await sock.send({"op": "auth", "token": token})
            await sock.until(lambda m: m.get("op") in ("authenticated", "error"))
        yield sock


@dataclass
class _Position:
    epoch: str | None = None
    seq: int | None = None


@dataclass
class ResumingStream:
    """Subscriptions that survive drops: resumes every channel after its last event.

    Iterate it for ``subscribed`` and ``event`` messages (events already delivered are
    never yielded twice). ``reconnects`` counts the times it had to reconnect, ``silent``
    the sockets it gave up because nothing arrived for ``silence_timeout`` seconds.
    """

    url: str
    token: Callable[[], str]
    channels: Iterable[str]
    positions: dict[str, _Position] = field(default_factory=dict)
    silence_timeout: float = SILENCE_TIMEOUT
    reconnects: int = 0
    silent: int = 0
    _scope: trio.CancelScope | None = None

    async def __aenter__(self) -> ResumingStream:
        self._send, self._receive = trio.open_memory_channel[dict[str, Any]](1024)
        self._nursery_cm = trio.open_nursery()
        nursery = await self._nursery_cm.__aenter__()
        nursery.start_soon(self._run)
        self._cancel = nursery.cancel_scope
        return self

    async def __aexit__(self, *exc: object) -> bool | None:
        self._cancel.cancel()
        return await self._nursery_cm.__aexit__(*exc)  # type: ignore[arg-type]

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._receive.__aiter__()

    async def _run(self) -> None:
        wait = RECONNECT_FIRST
        for name in self.channels:
            self.positions.setdefault(name, _Position())
        while True:
            try:
                with trio.CancelScope() as self._scope:
                    async with connect(self.url, self.token()) as sock:
                        for name, pos in self.positions.items():
                            await sock.subscribe(name, since=pos.seq, epoch=pos.epoch)
                        wait = RECONNECT_FIRST
                        await self._pump(sock)
            except ConnectionClosed as closed:
                code = closed.reason.code if closed.reason is not None else None
                if code in FATAL_CODES:
                    LOG.warning("stream closed with %s; not resuming", code)
                    await self._send.aclose()
                    return
            except OSError as exc:
                LOG.info("stream connection failed (%s); retrying", exc)

            self.reconnects += 1
            await trio.sleep(wait)
            wait = min(wait * 2, RECONNECT_MAX)

    async def _pump(self, sock: StreamSocket) -> None:
        # The server's idle timeout counts client frames only: ping every PING_EVERY.
        # A socket silent for silence_timeout is abandoned as drop() does (closing it
        # politely could wait on the dead connection), and the stream resumes.
        now = trio.current_time
        ping_at = now() + PING_EVERY
        heard = now()
        while True:
            message = None
            # receive() is cancel-safe; _deliver is not bounded.
            with trio.move_on_at(min(ping_at, heard + self.silence_timeout)):
                message = await sock.receive()
            if message is not None:
                heard = now()
                await self._deliver(message)
            elif now() >= heard + self.silence_timeout:
                LOG.info("stream silent for %.1f s; reconnecting", self.silence_timeout)
                self.silent += 1
                await self.drop()
            if now() >= ping_at:
                await sock.send({"op": "ping"})
                ping_at = now() + PING_EVERY

    async def drop(self) -> None:
        """Abandon the current socket (as a network drop would); the stream resumes."""
        if self._scope is not None:
            self._scope.cancel()
        await trio.lowlevel.checkpoint()

    async def _deliver(self, message: dict[str, Any]) -> None:
        # The position moves only once the message is handed over: a drop while handing
        # it over resumes before it, so it is delivered again rather than lost.
        op = message.get("op")
        name = message.get("channel")
        pos = self.positions.get(name) if isinstance(name, str) else None
        if pos is not None and op == "event" and pos.seq is not None and message["seq"] <= pos.seq:
            await trio.lowlevel.checkpoint()
            return  # already delivered before the drop
        await self._send.send(message)
        if pos is not None and op == "subscribed":
            pos.epoch = message.get("epoch")
            pos.seq = int(message["seq"])
        elif pos is not None and op == "event":
            pos.seq = int(message["seq"])
