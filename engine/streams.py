"""Redis Streams adapter: consumer groups for the tick feed, XADD for publishers.

Like :mod:`engine.bus`, this module runs ``redis.asyncio`` under trio-asyncio and is
the only other module that imports redis: every redis call is a small asyncio
coroutine run through ``trio_asyncio.aio_as_trio``, and everything above it is trio.

Reading a consumer group goes through a :class:`GroupReader`. A new reader first
returns the consumer's own pending entries (``XREADGROUP ... 0``: delivered to this
consumer before a restart and never acknowledged), then new ones (``>``).

Connection errors are retried with tenacity: bounded (``RedisConfig.connect_retries``
attempts, exponential backoff up to ``RECONNECT_MAX_WAIT``), each retry logged and
counted in ``statistics().reconnects``. redis-py's own silent retry is switched off,
because a blind resend of ``XREADGROUP >`` can lose entries: if the first attempt was
served but its reply was lost, those entries sit in our pending list unseen. So after
any failed or cancelled read the reader goes back to its pending list first. Past the
retry budget the operation raises :class:`StreamUnavailable`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

import redis.asyncio as aioredis
import redis.exceptions
import tenacity
import trio
import trio_asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from protocol import ErrorCode, ProtocolError

from .bus import BusUnavailable
from .config import RedisConfig

LOG = logging.getLogger(__name__)

RECONNECT_MAX_WAIT: Final = 5.0  # seconds between two attempts, at most
RECONNECT_FIRST_WAIT: Final = 0.2  # seconds before the first retry; doubles each time
CLOSE_TIMEOUT: Final = 5.0  # seconds
HEALTH_CHECK_INTERVAL: Final = 10  # seconds of idleness before a connection is PINGed
_REDIS_DOWN: Final = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)

T = TypeVar("T")


class StreamUnavailable(BusUnavailable):
    """Redis cannot be reached for a stream operation (503, code ``bus_unavailable``)."""


class StreamError(ProtocolError):
    """Redis refused a stream operation (wrong type, no such group): a bug or misconfiguration."""

    def __init__(self, reason: str) -> None:
        super().__init__(ErrorCode.INTERNAL, "stream error", {"reason": reason})


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One stream entry as read from a group.

    Attributes:
        id: the entry id (``"<ms>-<seq>"``).
        fields: field name → raw value; ``None`` for an entry still pending for this
            consumer but since deleted from the stream (trimmed by MAXLEN or XDEL).
    """

    id: str
    fields: Mapping[str, bytes] | None


@dataclass(frozen=True, slots=True)
class StreamStatistics:
    """Counters of a :class:`RedisStreams` adapter."""

    reconnects: int
    added: int
    acked: int


class RedisStreams:
    """Redis Streams over one redis-py client.

    Serve it with ``await nursery.start(streams.run)``; the operations raise
    :class:`StreamUnavailable` when called before that or after it ended.
    """

    def __init__(self, config: RedisConfig, url: str, *, client_name: str | None = None) -> None:
        """Configure the adapter.

        Args:
            config: timeouts and the retry budget.
            url: the Redis URL (may hold a password: never logged).
            client_name: ``CLIENT SETNAME`` of every connection, to find them in ops tools.
        """
        self._config = config
        self._url = url
        self._client_name = client_name
        self._client: aioredis.Redis | None = None
        self._reconnects = 0
        self._added = 0
        self._acked = 0

    async def run(
        self, *, task_status: trio.TaskStatus[RedisStreams] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Connect (retrying), then serve until cancelled; close the client on the way out.

        Raises:
            StreamUnavailable: Redis could not be reached at start-up.
        """
        self._client = aioredis.Redis.from_url(
            self._url,
            socket_connect_timeout=self._config.connect_timeout,
            socket_keepalive=True,
            health_check_interval=HEALTH_CHECK_INTERVAL,
            client_name=self._client_name,
            # NOTE: no silent resend inside redis-py; see the module docstring.
            retry=Retry(NoBackoff(), 0),
        )
        try:
            await self._call("ping", lambda: self._aio(_ping))
            task_status.started(self)
            await trio.sleep_forever()
        finally:
            with trio.move_on_after(CLOSE_TIMEOUT, shield=True):
                client, self._client = self._client, None
                if client is not None:
                    await trio_asyncio.aio_as_trio(client.aclose)()

    def statistics(self) -> StreamStatistics:
        """Return the adapter counters."""
        return StreamStatistics(self._reconnects, self._added, self._acked)

    async def ping(self) -> bool:
        """Return whether Redis answers PING right now (one attempt, no retry)."""
        client = self._client
        if client is None:
            return False
        try:
            with trio.move_on_after(self._config.connect_timeout):
                return bool(await trio_asyncio.aio_as_trio(_ping)(client))
        except (redis.exceptions.RedisError, OSError):
            return False
        return False

    async def ensure_group(self, stream: str, group: str, *, start_id: str = "0") -> bool:
        """Create consumer group ``group`` on ``stream`` (and the stream) unless it exists.

        Args:
            start_id: where a new group starts reading: ``"0"`` the whole stream,
                ``"$"`` only entries added from now on.

        Returns:
            True if the group was created, False if it already existed.

        Raises:
            StreamUnavailable: Redis unreachable past the retry budget.
        """
        return await self._call(
            "ensure_group", lambda: self._aio(_create_group, stream, group, start_id)
        )

    def reader(self, stream: str, group: str, consumer: str) -> GroupReader:
        """Return a reader for ``consumer`` of ``group`` that starts with its pending entries."""
        return GroupReader(self, stream, group, consumer)

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        """Acknowledge entries of ``group`` (XACK; idempotent, so retried safely).

        Returns:
            How many entries were pending and are now acknowledged.

        Raises:
            StreamUnavailable: Redis unreachable past the retry budget.
        """
        if not ids:
            await trio.lowlevel.checkpoint()
            return 0
        id_list = list(ids)
        done = await self._call("ack", lambda: self._aio(_xack, stream, group, id_list))
        self._acked += done
        return done

    async def add(
        self, stream: str, fields: Mapping[str, bytes | str], *, maxlen: int | None = None
    ) -> str:
        """Append an entry to ``stream`` (XADD), trimming it to about ``maxlen`` entries.

        Error handling: not retried, since a resend after a lost reply would add the
        entry twice; the caller decides.

        Returns:
            The new entry id.

        Raises:
            StreamUnavailable: Redis unreachable.
        """
        entry = dict(fields)
        entry_id = await self._call(
            "add", lambda: self._aio(_xadd, stream, entry, maxlen), retry=False
        )
        self._added += 1
        return entry_id

    async def pending(self, stream: str, group: str) -> int:
        """Return how many entries of ``group`` are delivered and not yet acknowledged."""
        return await self._call("pending", lambda: self._aio(_xpending_count, stream, group))

    async def _call(self, op: str, attempt: Callable[[], Awaitable[T]], *, retry: bool = True) -> T:
        # Run one attempt (or, with retry, up to the retry budget) and translate redis
        # errors into ours.
        try:
            if not retry:
                return await attempt()
            async for state in self._retrying(op):
                with state:
                    return await attempt()
        except _REDIS_DOWN as exc:
            raise StreamUnavailable(type(exc).__name__) from None
        except redis.exceptions.RedisError as exc:
            raise StreamError(str(exc)) from None
        raise AssertionError("tenacity neither returned nor raised")  # pragma: no cover

    async def _aio(self, fn: Callable[..., Awaitable[T]], *args: object) -> T:
        # One asyncio coroutine on the client; redis errors come out untranslated.
        client = self._client
        if client is None:
            raise StreamUnavailable("not connected")
        result: T = await trio_asyncio.aio_as_trio(fn)(client, *args)
        return result

    def _retrying(self, op: str) -> tenacity.AsyncRetrying:
        return tenacity.AsyncRetrying(
            sleep=trio.sleep,
            stop=tenacity.stop_after_attempt(self._config.connect_retries),
            wait=tenacity.wait_exponential(multiplier=RECONNECT_FIRST_WAIT, max=RECONNECT_MAX_WAIT),
            retry=tenacity.retry_if_exception_type(_REDIS_DOWN),
            before_sleep=lambda state: self._log_retry(op, state),
            reraise=True,
        )

    def _log_retry(self, op: str, state: tenacity.RetryCallState) -> None:
        self._reconnects += 1
        exc = state.outcome.exception() if state.outcome is not None else None
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        LOG.warning(
            "redis streams %s failed (%s), attempt %d of %d; reconnecting in %.2f s",
            op,
            type(exc).__name__,
            state.attempt_number,
            self._config.connect_retries,
            delay,
        )


class GroupReader:
    """Reads one consumer's entries of a group: its pending backlog first, then new ones.

    Not shared between tasks. Entries returned by :meth:`read` stay pending until
    acknowledged with :meth:`RedisStreams.ack`.
    """

    def __init__(self, streams: RedisStreams, stream: str, group: str, consumer: str) -> None:
        self._streams = streams
        self.stream = stream
        self.group = group
        self.consumer = consumer
        # NOTE: the id after which the backlog continues, or None once it is drained and
        # reading takes new entries (">").
        self._cursor: str | None = "0"

    @property
    def in_backlog(self) -> bool:
        """Whether the next read returns pending entries rather than new ones."""
        return self._cursor is not None

    async def read(self, *, count: int, block_ms: int | None) -> list[StreamEntry]:
        """Return up to ``count`` entries: pending ones while any are left, else new ones.

        Args:
            count: at most this many entries.
            block_ms: wait up to this long (ms) for new entries; ``None`` returns at once.
                An empty list means none arrived.

        Cancellation: safe at any point. A read interrupted by cancellation or a lost
        connection may have been served by Redis; its entries are then pending for this
        consumer, so the reader rewinds to the start of its backlog and the next read
        returns them (with any other entry returned earlier and not yet acknowledged).

        Raises:
            StreamUnavailable: Redis unreachable past the retry budget.
            StreamError: Redis refused the read (e.g. the group was deleted).
        """
        if count < 1 or (block_ms is not None and block_ms < 1):
            raise ValueError("count and block_ms must be at least 1")
        return await self._streams._call("read", lambda: self._read_once(count, block_ms))

    async def _read_once(self, count: int, block_ms: int | None) -> list[StreamEntry]:
        aio = self._streams._aio
        names = (self.stream, self.group, self.consumer)
        try:
            while self._cursor is not None:
                entries = await aio(_xreadgroup, *names, self._cursor, count, None)
                if entries:
                    self._cursor = entries[-1].id
                    return entries
                self._cursor = None
            return await aio(_xreadgroup, *names, ">", count, block_ms)
        except BaseException:
            # NOTE: rewind on *any* failure, cancellation included: the interrupted read
            # may have been served, and only the backlog read finds what it delivered.
            self._cursor = "0"
            raise


# ------------------------------------------------------------------ asyncio side
# Each runs on the trio-asyncio loop through aio_as_trio; the first argument is the client.


async def _ping(client: aioredis.Redis) -> bool:
    return bool(await client.ping())


async def _create_group(client: aioredis.Redis, stream: str, group: str, start_id: str) -> bool:
    try:
        await client.xgroup_create(stream, group, id=start_id, mkstream=True)
    except redis.exceptions.ResponseError as exc:
        if str(exc).startswith("BUSYGROUP"):
            return False
        raise
    return True


async def _xack(client: aioredis.Redis, stream: str, group: str, ids: list[str]) -> int:
    return int(await client.xack(stream, group, *ids))


async def _xadd(
    client: aioredis.Redis, stream: str, fields: dict[str, bytes | str], maxlen: int | None
) -> str:
    entry_id = await client.xadd(stream, fields, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
    return _text(entry_id)


async def _xpending_count(client: aioredis.Redis, stream: str, group: str) -> int:
    summary = await client.xpending(stream, group)
    return int(summary["pending"])


async def _xreadgroup(
    client: aioredis.Redis,
    stream: str,
    group: str,
    consumer: str,
    cursor: str,
    count: int,
    block_ms: int | None,
) -> list[StreamEntry]:
    reply = await client.xreadgroup(group, consumer, {stream: cursor}, count=count, block=block_ms)
    return _entries(reply)


def _entries(reply: object) -> list[StreamEntry]:
    # RESP2 reply: [[stream, [(id, {field: value}) | (id, None), ...]]], or None/[] when empty.
    entries: list[StreamEntry] = []
    for per_stream in reply if isinstance(reply, list) else ():
        if not isinstance(per_stream, list | tuple) or len(per_stream) != 2:
            raise StreamError("unexpected XREADGROUP reply")
        for item in per_stream[1]:
            entry_id, fields = item
            decoded = None
            # Redis sends nil for the fields of a pending entry since deleted, which
            # redis-py turns into {}; a live entry always has at least one field.
            if isinstance(fields, dict) and fields:
                decoded = {
                    _text(k): v if isinstance(v, bytes) else _text(v).encode()
                    for k, v in fields.items()
                }
            entries.append(StreamEntry(_text(entry_id), decoded))
    return entries


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
