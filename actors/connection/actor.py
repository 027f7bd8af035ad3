"""One stream connection: its subscriptions, its outbound queue and its sender task.

The connection actor knows nothing of HTTP or WebSocket libraries: the gateway gives it
``send`` (write one text frame) and ``close`` (end the socket with a code, without
waiting). The reader side calls :meth:`StreamConnection.request` with validated frames;
the sender task writes whatever is queued, several messages per frame (a JSON array)
when the client is behind, each write bounded by ``send_timeout`` (past it: 4008).
Nothing a producer does ever waits on the socket: the hub only calls the outbox's
non-blocking ``put``/``put_latest``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

import trio

import protocol
from engine.context import Engine
from protocol import Channel, ErrorCode, ProtocolError, StreamRequest

from .hub import Closer, StreamHub, Subscriber
from .outbox import Outbox, SlowConsumer
from .registry import ConnectionInfo

LOG = logging.getLogger(__name__)

SLOW_CONSUMER: Final = 4008
RATE_LIMITED: Final = 4429
IDLE: Final = 1000
KICKED: Final = 4403  # an operator's connection.kick: forbidden from now on
HEARTBEAT_KEY: Final = "heartbeat"

Send = Callable[[str], Awaitable[None]]


class StreamConnection:
    """Subscriptions and outbound traffic of one ``/ws/v1/stream`` socket."""

    def __init__(
        self,
        engine: Engine,
        hub: StreamHub,
        send: Send,
        close: Closer,
        *,
        sub: str = "",
        remote: str | None = None,
    ) -> None:
        self._engine = engine
        self._config = engine.config.stream
        self._hub = hub
        self._send = send
        self._close = close
        self.outbox = Outbox(self._config.queue_capacity)
        self.subscriptions: dict[str, Subscriber] = {}
        now = trio.current_time()
        self._last_in = now
        self._last_out = now
        self._tokens = float(self._config.frames_burst)
        self._refilled = now
        self._sending = False
        self._progress = trio.Event()
        self.sent_frames = 0
        self.sent_messages = 0
        self.sub = sub  # the token subject, set once authenticated
        self.remote = remote
        self.id = hub.registry.register(self)

    def info(self) -> ConnectionInfo:
        """Return ``{id, sub, remote, subscriptions, queued}`` for ``connections.list``."""
        return ConnectionInfo(
            self.id, self.sub, self.remote, len(self.subscriptions), len(self.outbox)
        )

    def kick(self) -> None:
        """Close the socket with 4403 (an operator's ``connection.kick``); never waits."""
        LOG.warning("stream connection %d (%s) kicked by an operator", self.id, self.sub)
        self._close(KICKED, "kicked by an operator")

    # ------------------------------------------------------------------ inbound

    def inbound(self) -> bool:
        """Count one client frame against the rate limit; False (and 4429) when over it."""
        now = trio.current_time()
        self._last_in = now
        cfg = self._config
        self._tokens = min(
            float(cfg.frames_burst), self._tokens + (now - self._refilled) * cfg.frames_per_second
        )
        self._refilled = now
        if self._tokens < 1:
            self._engine.metrics.rate_limited.labels("stream_frames").inc()
            self._close(RATE_LIMITED, "too many frames")
            return False
        self._tokens -= 1
        return True

    async def request(self, req: StreamRequest) -> None:
        """Act on a validated client frame (authorisation was checked by the caller)."""
        if req.op == "ping":
            self.reply({"op": "pong", "id": req.id})
            await trio.lowlevel.checkpoint()
            return
        channel = req.channel
        assert channel is not None  # noqa: S101 - parse_stream_frame sets it
        if req.op == "unsubscribe":
            self.drop(channel.name)
            self.reply({"op": "unsubscribed", "id": req.id, "channel": channel.name})
            await trio.lowlevel.checkpoint()
            return
        await self._subscribe(req, channel)

    async def _subscribe(self, req: StreamRequest, channel: Channel) -> None:
        metrics = self._engine.metrics
        if channel.name in self.subscriptions:
            metrics.stream_subscribes.labels("duplicate").inc()
            self.error(req.id, ErrorCode.CONFLICT, f"already subscribed to {channel.name}")
            await trio.lowlevel.checkpoint()
            return
        if len(self.subscriptions) >= self._config.max_subscriptions:
            metrics.stream_subscribes.labels("limit").inc()
            self.error(
                req.id,
                ErrorCode.RATE_LIMITED,
                f"at most {self._config.max_subscriptions} subscriptions per connection",
            )
            await trio.lowlevel.checkpoint()
            return
        subscriber = Subscriber(channel, self.outbox, self._close)
        self.subscriptions[channel.name] = subscriber
        metrics.stream_subscriptions.inc()
        try:
            opened = await self._hub.subscribe(subscriber, req.since, req.epoch)
        except ProtocolError as exc:
            self._forget(channel.name)
            metrics.stream_subscribes.labels(str(exc.code)).inc()
            self.error(req.id, exc.code, exc.message, exc.details)
            return
        except BaseException:
            self._forget(channel.name)
            raise
        metrics.stream_subscribes.labels("ok").inc()
        frame = dict(opened.frame)
        if req.id is not None:
            frame["id"] = req.id
        try:
            self.outbox.put(protocol.dumps(frame))
            for event in opened.replay:
                self.outbox.put(event)
        except SlowConsumer:
            self._close(SLOW_CONSUMER, "slow consumer")

    def drop(self, name: str) -> bool:
        """End the subscription to channel ``name``; False if there was none."""
        subscriber = self._forget(name)
        if subscriber is None:
            return False
        self._hub.unsubscribe(subscriber)
        return True

    def _forget(self, name: str) -> Subscriber | None:
        subscriber = self.subscriptions.pop(name, None)
        if subscriber is not None:
            self._engine.metrics.stream_subscriptions.dec()
        return subscriber

    def shutdown(self) -> None:
        """Drop every subscription and stop the sender (the socket is going away)."""
        self._hub.registry.unregister(self.id)
        for name in list(self.subscriptions):
            self.drop(name)
        self.outbox.close()

    # ------------------------------------------------------------------ outbound

    def reply(self, frame: dict[str, object]) -> None:
        """Queue a reply frame in order with the events (lossless)."""
        if frame.get("id") is None:
            frame.pop("id", None)
        try:
            self.outbox.put(protocol.dumps(frame))
        except SlowConsumer:
            self._close(SLOW_CONSUMER, "slow consumer")

    def error(
        self,
        frame_id: object,
        code: ErrorCode | str,
        message: str,
        details: Mapping[str, object] | None = None,
    ) -> None:
        """Queue an ``error`` frame."""
        frame: dict[str, object] = {"op": "error", "id": frame_id, "code": str(code)}
        frame["message"] = message
        if details:
            frame["details"] = dict(details)
        self.reply(frame)

    async def run_sender(self) -> None:
        """Write queued frames until the outbox closes (or a write times out: 4008)."""
        cfg = self._config
        metrics = self._engine.metrics
        conflated = 0
        while True:
            try:
                frames = await self.outbox.take_all()
            except trio.EndOfChannel:
                return
            self._sending = True
            for start in range(0, len(frames), cfg.batch_max):
                chunk = frames[start : start + cfg.batch_max]
                data = chunk[0] if len(chunk) == 1 else b"[" + b",".join(chunk) + b"]"
                began = trio.current_time()
                with trio.move_on_after(cfg.send_timeout) as timer:
                    await self._send(data.decode())
                if timer.cancelled_caught:
                    LOG.info("stream client too slow: a write took over %.1f s", cfg.send_timeout)
                    self._close(SLOW_CONSUMER, "slow consumer")
                    return
                self._last_out = trio.current_time()
                metrics.stream_send_latency.observe(self._last_out - began)
                self.sent_frames += 1
                self.sent_messages += len(chunk)
            metrics.stream_frames.inc(-(-len(frames) // cfg.batch_max))
            metrics.stream_messages.inc(len(frames))
            metrics.stream_conflated.inc(self.outbox.conflated - conflated)
            conflated = self.outbox.conflated
            self._sending = False
            self._progress.set()
            self._progress = trio.Event()

    async def flush(self) -> None:
        """Wait until everything queued has been written (the caller bounds the wait)."""
        while len(self.outbox) or self._sending:
            await self._progress.wait()
        await trio.lowlevel.checkpoint()

    async def watch_idle(self) -> None:
        """Send heartbeats on outbound silence; close with 1000 on inbound silence."""
        cfg = self._config
        while True:
            now = trio.current_time()
            if now - self._last_in >= cfg.idle_timeout:
                self._close(IDLE, "idle timeout")
                return
            if now - self._last_out >= cfg.heartbeat_interval:
                self._last_out = now
                beat = protocol.dumps({"op": "heartbeat", "ts": self._engine.clock()})
                self.outbox.put_latest(HEARTBEAT_KEY, beat)
            await trio.sleep_until(
                min(self._last_in + cfg.idle_timeout, self._last_out + cfg.heartbeat_interval)
            )
