"""Event bus: in-process by default, Redis pub/sub across nodes when configured.

Both implementations share one interface. Publishing never waits on a subscriber:
each subscription has its own bounded buffer, and a subscriber that falls behind
loses the oldest undelivered messages of *its* buffer, counted in ``dropped`` (the
bus carries market and account events whose lossless replay is the job of the
sequenced channels and the ledger, not of the bus).

The Redis adapter is the only module that imports ``redis.asyncio``; it runs
under trio-asyncio like the store.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import redis.asyncio as aioredis
import redis.exceptions
import tenacity
import trio
import trio_asyncio

from protocol import ErrorCode, ProtocolError

from .config import RedisConfig

LOG = logging.getLogger(__name__)

SUBSCRIPTION_BUFFER: Final = 4096  # messages buffered per subscription before the oldest drop
RECONNECT_MAX_WAIT: Final = 5.0  # seconds between reconnection attempts, at most
CLOSE_TIMEOUT: Final = 5.0  # seconds
_REDIS_DOWN: Final = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


class BusUnavailable(ProtocolError):
    """The bus (Redis) cannot be reached (503)."""

    def __init__(self, reason: str) -> None:
        super().__init__(ErrorCode.BUS_UNAVAILABLE, "bus unavailable", {"reason": reason})


@dataclass(frozen=True, slots=True)
class BusMessage:
    """One message as a subscriber sees it."""

    channel: str
    data: bytes


@dataclass(frozen=True, slots=True)
class BusStatistics:
    """Counters of a bus."""

    kind: str
    published: int
    delivered: int
    dropped: int
    subscriptions: int
    reconnects: int


def matches(pattern: str, channel: str) -> bool:
    """Return whether ``channel`` matches ``pattern`` (exact, or a prefix ending in ``*``)."""
    if pattern.endswith("*"):
        return channel.startswith(pattern[:-1])
    return channel == pattern


class Subscription:
    """A bounded buffer of messages for one pattern; iterate it to receive."""

    def __init__(self, pattern: str, capacity: int = SUBSCRIPTION_BUFFER) -> None:
        self.pattern = pattern
        self._buffer: collections.deque[BusMessage] = collections.deque()
        self._capacity = capacity
        self._wakeup = trio.lowlevel.ParkingLot()
        self._closed = False
        self.dropped = 0

    def deliver(self, message: BusMessage) -> bool:
        """Queue ``message`` without blocking; return False if an old one was dropped."""
        dropped = len(self._buffer) >= self._capacity
        if dropped:
            self._buffer.popleft()
            self.dropped += 1
        self._buffer.append(message)
        if self._wakeup:  # unpark_all() is not free with nobody parked
            self._wakeup.unpark_all()
        return not dropped

    def close(self) -> None:
        """End the subscription; a waiting receiver gets ``trio.EndOfChannel``."""
        self._closed = True
        self._wakeup.unpark_all()

    async def receive(self) -> BusMessage:
        """Wait for the next message.

        Raises:
            trio.EndOfChannel: the subscription was closed and is empty.
        """
        # One schedule point either way: the park when empty, else a checkpoint.
        if self._buffer:
            await trio.lowlevel.checkpoint()
        while not self._buffer:
            if self._closed:
                raise trio.EndOfChannel
            await self._wakeup.park()
        return self._buffer.popleft()

    def take_ready(self) -> list[BusMessage]:
        """Take every message already buffered, without waiting (possibly none)."""
        ready = list(self._buffer)
        self._buffer.clear()
        return ready

    def __aiter__(self) -> AsyncIterator[BusMessage]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[BusMessage]:
        while True:
            try:
                yield await self.receive()
            except trio.EndOfChannel:
                return


class Bus(Protocol):
    """What the engine needs of a bus."""

    async def run(self, *, task_status: trio.TaskStatus[Bus] = ...) -> None: ...
    async def publish(self, channel: str, data: bytes) -> None: ...
    async def publish_many(self, messages: Sequence[tuple[str, bytes]]) -> None: ...
    def subscribe(self, pattern: str) -> Subscription: ...
    def unsubscribe(self, subscription: Subscription) -> None: ...
    async def ping(self) -> bool: ...
    def statistics(self) -> BusStatistics: ...


class _Fanout:
    # Local delivery to subscriptions, shared by both buses.
    def __init__(self) -> None:
        self.subscriptions: list[Subscription] = []
        self.published = 0
        self.delivered = 0
        self.dropped = 0

    def dispatch(self, channel: str, data: bytes) -> None:
        message = BusMessage(channel, data)
        for sub in self.subscriptions:
            if matches(sub.pattern, channel):
                self.delivered += 1
                if not sub.deliver(message):
                    self.dropped += 1

    def add(self, pattern: str) -> Subscription:
        sub = Subscription(pattern)
        self.subscriptions.append(sub)
        return sub

    def remove(self, sub: Subscription) -> None:
        if sub in self.subscriptions:
            self.subscriptions.remove(sub)
        sub.close()


class InProcessBus:
    """The bus of a single engine node: delivery is a function call."""

    def __init__(self) -> None:
        self._fanout = _Fanout()

    async def run(self, *, task_status: trio.TaskStatus[Bus] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled (nothing to connect)."""
        task_status.started(self)
        try:
            await trio.sleep_forever()
        finally:
            for sub in list(self._fanout.subscriptions):
                self._fanout.remove(sub)

    async def publish(self, channel: str, data: bytes) -> None:
        """Deliver ``data`` to every matching subscription, never blocking on one."""
        self._fanout.published += 1
        self._fanout.dispatch(channel, data)
        await trio.lowlevel.checkpoint()

    async def publish_many(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Deliver each ``(channel, data)`` in order, with one checkpoint for them all."""
        fanout = self._fanout
        for channel, data in messages:
            fanout.dispatch(channel, data)
        fanout.published += len(messages)
        await trio.lowlevel.checkpoint()

    def subscribe(self, pattern: str) -> Subscription:
        """Subscribe to a channel, or to a prefix with a trailing ``*``."""
        return self._fanout.add(pattern)

    def unsubscribe(self, subscription: Subscription) -> None:
        """End a subscription."""
        self._fanout.remove(subscription)

    async def ping(self) -> bool:
        """An in-process bus is always up."""
        await trio.lowlevel.checkpoint()
        return True

    def statistics(self) -> BusStatistics:
        """Return the bus counters."""
        f = self._fanout
        return BusStatistics(
            "inprocess", f.published, f.delivered, f.dropped, len(f.subscriptions), 0
        )


class RedisBus:
    """Redis pub/sub: every node subscribes to ``tickstream:*`` and fans out locally.

    Local subscribers receive their own node's messages through Redis too, so all
    nodes see one order per channel. The reader reconnects with bounded backoff when
    Redis goes away; what is published while Redis is down fails with
    :class:`BusUnavailable`.
    """

    PREFIX: Final = "tickstream:"

    def __init__(self, config: RedisConfig, url: str) -> None:
        self._config = config
        self._url = url
        self._client: aioredis.Redis | None = None
        self._fanout = _Fanout()
        self.reconnects = 0
        self._connected = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[Bus] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect (retrying), then read pub/sub messages until cancelled.

        Raises:
            BusUnavailable: Redis could not be reached at start-up.
        """
        self._client = aioredis.Redis.from_url(
            self._url,
            socket_connect_timeout=self._config.connect_timeout,
            health_check_interval=10,
        )
        try:
            await self._connect_with_retry()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_forever)
                await self._connected.wait()
                task_status.started(self)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
                client, self._client = self._client, None
                if client is not None:
                    await trio_asyncio.aio_as_trio(client.aclose)()
            for sub in list(self._fanout.subscriptions):
                self._fanout.remove(sub)

    async def _connect_with_retry(self) -> None:
        client = self._client
        if client is None:
            raise BusUnavailable("not connected")
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self._config.connect_retries),
            wait=tenacity.wait_exponential(multiplier=0.2, max=RECONNECT_MAX_WAIT),
            retry=tenacity.retry_if_exception_type(_REDIS_DOWN),
            reraise=True,
        )

        async def ping_with_retry() -> None:
            async for attempt in retrying:
                with attempt:
                    await client.ping()

        try:
            await trio_asyncio.aio_as_trio(ping_with_retry)()
        except (redis.exceptions.RedisError, OSError) as exc:
            raise BusUnavailable(type(exc).__name__) from None

    async def _read_forever(self) -> None:
        # Reader loop: (re)subscribe, read until the connection breaks, back off, repeat.
        backoff = 0.1
        while True:
            try:
                await trio_asyncio.aio_as_trio(self._read_once)()
            except _REDIS_DOWN as exc:
                self._connected = trio.Event() if self._connected.is_set() else self._connected
                LOG.warning(
                    "redis bus reader lost its connection (%s); reconnecting", type(exc).__name__
                )
                self.reconnects += 1
                await trio.sleep(backoff)
                backoff = min(backoff * 2, RECONNECT_MAX_WAIT)

    async def _read_once(self) -> None:
        client = self._client
        if client is None:
            raise redis.exceptions.ConnectionError("client closed")
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.psubscribe(self.PREFIX + "*")
            self._connected.set()
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is None or message["type"] != "pmessage":
                    continue
                channel = message["channel"].decode()[len(self.PREFIX) :]
                self._fanout.dispatch(channel, message["data"])
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def publish(self, channel: str, data: bytes) -> None:
        """Publish ``data`` on ``channel`` to every node.

        Raises:
            BusUnavailable: Redis is unreachable; the message was not published.
        """
        client = self._client
        if client is None:
            raise BusUnavailable("not connected")
        try:
            await trio_asyncio.aio_as_trio(self._publish)(client, self.PREFIX + channel, data)
        except (redis.exceptions.RedisError, OSError) as exc:
            raise BusUnavailable(type(exc).__name__) from None
        self._fanout.published += 1

    @staticmethod
    async def _publish(client: aioredis.Redis, channel: str, data: bytes) -> None:
        await client.publish(channel, data)

    async def publish_many(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Publish each ``(channel, data)`` in order, in one pipelined round trip.

        Raises:
            BusUnavailable: Redis is unreachable; some messages may not have been published.
        """
        client = self._client
        if client is None:
            raise BusUnavailable("not connected")
        if not messages:
            await trio.lowlevel.checkpoint()
            return
        prefixed = [(self.PREFIX + channel, data) for channel, data in messages]
        try:
            await trio_asyncio.aio_as_trio(self._publish_many)(client, prefixed)
        except (redis.exceptions.RedisError, OSError) as exc:
            raise BusUnavailable(type(exc).__name__) from None
        self._fanout.published += len(messages)

    @staticmethod
    async def _publish_many(client: aioredis.Redis, messages: list[tuple[str, bytes]]) -> None:
        async with client.pipeline(transaction=False) as pipe:
            for channel, data in messages:
                pipe.publish(channel, data)
            await pipe.execute()

    def subscribe(self, pattern: str) -> Subscription:
        """Subscribe to a channel, or to a prefix with a trailing ``*``."""
        return self._fanout.add(pattern)

    def unsubscribe(self, subscription: Subscription) -> None:
        """End a subscription."""
        self._fanout.remove(subscription)

    async def ping(self) -> bool:
        """Return whether Redis answers PING right now."""
        client = self._client
        if client is None:
            return False
        try:
            with trio.move_on_after(self._config.connect_timeout):
                return bool(await trio_asyncio.aio_as_trio(self._ping)(client))
        except (redis.exceptions.RedisError, OSError):
            return False
        return False

    @staticmethod
    async def _ping(client: aioredis.Redis) -> bool:
        return bool(await client.ping())

    def statistics(self) -> BusStatistics:
        """Return the bus counters."""
        f = self._fanout
        return BusStatistics(
            "redis", f.published, f.delivered, f.dropped, len(f.subscriptions), self.reconnects
        )
