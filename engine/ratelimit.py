"""Token-bucket rate limits, in memory or shared by every node through Redis.

A bucket holds up to ``burst`` tokens and refills at ``rate`` per second; a request of
``cost`` tokens is allowed when that many are there, else refused with the seconds until
they will be (``retry_after``). A bucket's whole state is the instant it is full again
(``full_at``, GCRA's "theoretical arrival time"): :func:`_take` and its Lua twin.

Bounded memory. A bucket full again holds no information, so it is dropped: in memory,
buckets are kept in LRU order, full ones are swept off the old end on every call, and at
most ``max_keys`` are held; past that the least recently used one goes even if not full
(counted in ``evicted``: that key restarts with a full bucket, so ``max_keys`` must stay
well above the keys active within ``burst / rate`` s). In Redis each key expires (``PX``)
at its ``full_at``, so a key-spraying client costs at most ``burst / rate`` s per key.

Redis. One Lua script refills, takes and writes atomically on the server's ``TIME``, so
nodes with skewed clocks agree; it runs by EVALSHA, reloaded once on NOSCRIPT (restart,
SCRIPT FLUSH). This module is the ``redis.asyncio`` adapter for rate limits (STYLE 11).

Redis unreachable: fail open by default. Refusing every order because the limiter's store
is down is worse than briefly not limiting, so ``fail_open=True`` allows, logs one warning
per outage and counts each such decision in ``degraded``; ``fail_open=False`` refuses
(429 with ``retry_after``) where abuse is worse than an outage. After a failure Redis is
left alone for ``retry_interval`` s, so an outage costs one timeout, not one per request.

:class:`LockoutTracker` (failed logins per client address) is memory only, per node.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Generic, Protocol, TypeVar

import redis.asyncio as aioredis
import redis.exceptions
import trio
import trio_asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from protocol import ErrorCode, ProtocolError

LOG = logging.getLogger(__name__)

MAX_KEYS: Final = 100_000  # buckets (or lockout records) held in memory, at most
SWEEP_BATCH: Final = 64  # full buckets dropped per call, at most (bounds one call's work)
KEY_PREFIX: Final = "tickstream:ratelimit:"
REDIS_TIMEOUT: Final = 0.5  # seconds per connect or command before failing open/closed
REDIS_RETRY_INTERVAL: Final = 1.0  # seconds Redis is left alone after a failure
REDIS_POOL_SIZE: Final = 32  # connections; more concurrent calls wait up to REDIS_TIMEOUT
CLOSE_TIMEOUT: Final = 5.0  # seconds
_EPSILON: Final = 1e-9  # tokens; absorbs float rounding when a bucket is just refilled
_REDIS_DOWN: Final = (redis.exceptions.RedisError, OSError)

# KEYS[1] bucket; ARGV rate, burst, cost. Returns {allowed, retry_after, remaining},
# numbers as strings (a Lua number would come back truncated to an integer).
_SCRIPT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local full_at = tonumber(redis.call('GET', KEYS[1])) or now
if full_at < now then full_at = now end
local tokens = burst - (full_at - now) * rate
if tokens + 1e-9 >= cost then
  full_at = full_at + cost / rate
  local ttl = math.max(1, math.ceil((full_at - now) * 1000))
  redis.call('SET', KEYS[1], string.format('%.17g', full_at), 'PX', ttl)
  return {1, '0', string.format('%.17g', math.max(0, tokens - cost))}
end
return {0, string.format('%.17g', (cost - tokens) / rate),
  string.format('%.17g', math.max(0, tokens))}
"""
_SCRIPT_SHA: Final = hashlib.sha1(_SCRIPT.encode(), usedforsecurity=False).hexdigest()

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A bucket's shape: ``rate`` tokens per second (> 0), ``burst`` capacity (>= 1)."""

    rate: float
    burst: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ValueError(f"rate must be a finite number > 0, not {self.rate!r}")
        if not (math.isfinite(self.burst) and self.burst >= 1):
            raise ValueError(f"burst must be a finite number >= 1, not {self.burst!r}")


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one acquire."""

    allowed: bool  # whether the tokens were taken
    retry_after: float  # seconds until ``cost`` tokens will be there (0 when allowed)
    remaining: float  # tokens left in the bucket after this call


@dataclass(frozen=True, slots=True)
class LimiterStatistics:
    """Counters of a limiter."""

    allowed: int  # fail-open decisions included
    limited: int  # fail-closed decisions included
    redis_errors: int  # Redis calls that failed (0 in memory)
    degraded: int  # decisions taken without Redis, by ``fail_open`` (0 in memory)
    tracked_keys: int  # buckets held in memory (0 for Redis)
    evicted: int  # buckets dropped before they were full, past ``max_keys``


@dataclass(frozen=True, slots=True)
class LockoutStatistics:
    """Counters of a :class:`LockoutTracker`: keys held, lockouts started, lossy evictions."""

    tracked_keys: int
    lockouts: int
    evicted: int


class RateLimited(ProtocolError):
    """Too many requests (429); ``retry_after`` seconds tell when to try again."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(
            ErrorCode.RATE_LIMITED,
            "rate limited",
            {"retry_after": round(retry_after, 3)},
            retry_after=retry_after,
        )


class Limiter(Protocol):
    """What callers need of a rate limiter (:class:`MemoryLimiter`, :class:`RedisLimiter`)."""

    async def acquire(self, key: str, limit: RateLimit, cost: float = 1) -> Decision: ...
    def statistics(self) -> LimiterStatistics: ...


async def check(limiter: Limiter, key: str, limit: RateLimit, cost: float = 1) -> None:
    """Take ``cost`` tokens from ``key``'s bucket or raise.

    Raises:
        RateLimited: not enough tokens; its ``retry_after`` is the wait in seconds.
        ValueError: ``cost`` is not in ``(0, limit.burst]``.
    """
    decision = await limiter.acquire(key, limit, cost)
    if not decision.allowed:
        raise RateLimited(decision.retry_after)


def _take(full_at: float, now: float, limit: RateLimit, cost: float) -> tuple[Decision, float]:
    # The token bucket on its one number; returns the decision and the new full_at.
    # Mirrored by _SCRIPT: change both together.
    start = max(full_at, now)
    tokens = limit.burst - (start - now) * limit.rate
    if tokens + _EPSILON >= cost:
        return Decision(True, 0.0, max(0.0, tokens - cost)), start + cost / limit.rate
    return Decision(False, (cost - tokens) / limit.rate, max(0.0, tokens)), full_at


def _check_cost(limit: RateLimit, cost: float) -> None:
    # A cost above the burst could never be served: a caller's bug, not a refusal.
    if not (0 < cost <= limit.burst):
        raise ValueError(f"cost must be in (0, {limit.burst}], not {cost!r}")


class _LruTable(Generic[V]):
    # Values by key in least-recently-used order, at most max_keys of them. Idle values
    # (idle(value, now) is True: dropping them loses nothing) are swept off the old end.
    def __init__(self, max_keys: int, idle: Callable[[V, float], bool]) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._entries: collections.OrderedDict[str, V] = collections.OrderedDict()
        self._max_keys = max_keys
        self._idle = idle
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, now: float) -> V | None:
        # Sweep first, so a returned value is never one the sweep would have dropped.
        self._sweep(now)
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: str, value: V, now: float) -> None:
        if key not in self._entries:
            while len(self._entries) >= self._max_keys:
                _, oldest = self._entries.popitem(last=False)
                if not self._idle(oldest, now):
                    self.evicted += 1
        self._entries[key] = value
        self._entries.move_to_end(key)

    def pop(self, key: str) -> None:
        self._entries.pop(key, None)

    def _sweep(self, now: float) -> None:
        # NOTE: only the old end is looked at, so one busy-but-old key can shield idle ones
        # behind it until it is idle too; max_keys bounds memory regardless.
        for _ in range(SWEEP_BATCH):
            if not self._entries:
                return
            key, oldest = next(iter(self._entries.items()))
            if not self._idle(oldest, now):
                return
            del self._entries[key]


class MemoryLimiter:
    """Token buckets of one node, on an injected clock (``trio.current_time`` in production)."""

    def __init__(self, clock: Callable[[], float], *, max_keys: int = MAX_KEYS) -> None:
        """Create an empty limiter.

        Args:
            clock: monotonic seconds; ``trio.current_time`` (so tests can use MockClock).
            max_keys: buckets held at most; see the module docstring on eviction.
        """
        self._clock = clock
        self._buckets: _LruTable[float] = _LruTable(max_keys, lambda full_at, now: full_at <= now)
        self._allowed = 0
        self._limited = 0

    async def acquire(self, key: str, limit: RateLimit, cost: float = 1) -> Decision:
        """Take ``cost`` tokens from ``key``'s bucket if it holds that many.

        Cancellation: a cancelled call takes nothing. It is only a checkpoint when
        cancelled: an in-memory bucket needs no task switch (the order path takes two
        buckets per request; each switch costs more than the bucket).

        Raises:
            ValueError: ``cost`` is not in ``(0, limit.burst]``.
        """
        _check_cost(limit, cost)
        await trio.lowlevel.checkpoint_if_cancelled()
        now = self._clock()
        full_at = self._buckets.get(key, now)
        decision, full_at = _take(now if full_at is None else full_at, now, limit, cost)
        if decision.allowed:
            self._allowed += 1
            self._buckets.put(key, full_at, now)
        else:
            self._limited += 1
        return decision

    def statistics(self) -> LimiterStatistics:
        """Return the limiter counters."""
        return LimiterStatistics(
            self._allowed, self._limited, 0, 0, len(self._buckets), self._buckets.evicted
        )


class RedisLimiter:
    """Token buckets shared by every node through Redis (see the module docstring).

    Serve it with ``await nursery.start(limiter.run)``. Until then, after it ended, or
    while Redis is unreachable, decisions follow ``fail_open``.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = KEY_PREFIX,
        fail_open: bool = True,
        timeout: float = REDIS_TIMEOUT,
        retry_interval: float = REDIS_RETRY_INTERVAL,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        """Configure the limiter.

        Args:
            url: the Redis URL (may hold a password: never logged).
            prefix: prepended to every bucket key.
            fail_open: without Redis, allow (True) or refuse (False) every request.
            timeout: seconds per connect, command or wait for a pooled connection.
            retry_interval: seconds Redis is not tried after a failure.
            clock: the node's clock, only for ``retry_interval`` (buckets use Redis time).
        """
        self._url = url
        self._prefix = prefix
        self.fail_open = fail_open
        self._timeout = timeout
        self._retry_interval = retry_interval
        self._clock = clock
        self._client: aioredis.Redis | None = None
        self._down_until = -math.inf
        self._allowed = 0
        self._limited = 0
        self._redis_errors = 0
        self._degraded = 0

    async def run(
        self, *, task_status: trio.TaskStatus[RedisLimiter] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Open the client and serve until cancelled; close it on the way out.

        Error handling: Redis unreachable at start-up is logged, not raised; the limiter
        starts degraded (``fail_open``) and uses Redis as soon as it answers.
        """
        pool = aioredis.BlockingConnectionPool.from_url(
            self._url,
            max_connections=REDIS_POOL_SIZE,
            timeout=self._timeout,
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
            # NOTE: no silent resend inside redis-py: an EVALSHA whose reply was lost may
            # have taken tokens, and the retry_interval already handles outages.
            retry=Retry(NoBackoff(), 0),
        )
        client = self._client = aioredis.Redis.from_pool(pool)
        try:
            try:
                await trio_asyncio.aio_as_trio(_load_script)(client)
            except _REDIS_DOWN as exc:
                self._failed(exc)
            task_status.started(self)
            await trio.sleep_forever()
        finally:
            self._client = None
            with trio.move_on_after(CLOSE_TIMEOUT, shield=True):
                await trio_asyncio.aio_as_trio(client.aclose)()

    async def acquire(self, key: str, limit: RateLimit, cost: float = 1) -> Decision:
        """Take ``cost`` tokens from the shared bucket of ``key`` if it holds that many.

        Cancellation: a call cancelled while Redis runs the script may have taken the
        tokens (erring on the side of limiting).

        Error handling: Redis errors and timeouts are logged and counted, not raised;
        the decision then follows ``fail_open``.

        Raises:
            ValueError: ``cost`` is not in ``(0, limit.burst]``.
        """
        _check_cost(limit, cost)
        client = self._client
        if client is None or self._clock() < self._down_until:
            await trio.lowlevel.checkpoint()
            return self._degrade(limit, cost)
        try:
            allowed, retry_after, remaining = await trio_asyncio.aio_as_trio(_evaluate)(
                client, self._prefix + key, limit.rate, limit.burst, cost
            )
        except _REDIS_DOWN as exc:
            self._failed(exc)
            return self._degrade(limit, cost)
        if self._down_until > -math.inf:
            LOG.info("rate limiter: redis answers again; limiting resumed")
            self._down_until = -math.inf
        if allowed:
            self._allowed += 1
        else:
            self._limited += 1
        return Decision(allowed, retry_after, remaining)

    def statistics(self) -> LimiterStatistics:
        """Return the limiter counters."""
        return LimiterStatistics(
            self._allowed, self._limited, self._redis_errors, self._degraded, 0, 0
        )

    def _failed(self, exc: BaseException) -> None:
        self._redis_errors += 1
        if self._down_until == -math.inf:
            # One warning per outage; the counters tell how long it lasted.
            LOG.warning(
                "rate limiter: redis unavailable (%s); failing %s",
                type(exc).__name__,
                "open (not limiting)" if self.fail_open else "closed (refusing)",
            )
        self._down_until = self._clock() + self._retry_interval

    def _degrade(self, limit: RateLimit, cost: float) -> Decision:
        self._degraded += 1
        if self.fail_open:
            self._allowed += 1
            return Decision(True, 0.0, limit.burst - cost)
        self._limited += 1
        wait = self._down_until - self._clock()
        return Decision(False, wait if math.isfinite(wait) else self._retry_interval, 0.0)


# ------------------------------------------------------------------ asyncio side
# Run on the trio-asyncio loop through aio_as_trio; redis errors come out untranslated.


async def _load_script(client: aioredis.Redis) -> None:
    await client.script_load(_SCRIPT)


async def _evaluate(
    client: aioredis.Redis, key: str, rate: float, burst: float, cost: float
) -> tuple[bool, float, float]:
    try:
        reply = await client.evalsha(_SCRIPT_SHA, 1, key, rate, burst, cost)
    except redis.exceptions.NoScriptError:
        LOG.info("rate limiter: script not in redis (restart or SCRIPT FLUSH); loading it")
        await client.script_load(_SCRIPT)
        reply = await client.evalsha(_SCRIPT_SHA, 1, key, rate, burst, cost)
    allowed, retry_after, remaining = reply
    return bool(allowed), float(retry_after), float(remaining)


# ------------------------------------------------------------------ lockout


@dataclass(slots=True)
class _Failures:
    # NOTE: mutated in place; owned by one LockoutTracker entry.
    times: collections.deque[float]
    locked_until: float = -math.inf


class LockoutTracker:
    """Locks a key (e.g. a client address) after repeated failures, on an injected clock.

    ``max_failures`` failures within a sliding ``window`` (s) lock the key for ``lockout``
    s; a success clears its record. Failures recorded while locked are ignored (callers
    :meth:`check` first), so a lock never extends itself. Memory only, per node, bounded
    like :class:`MemoryLimiter`; ``ValueError`` for ``max_failures`` < 1 or a window or
    lockout not > 0.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        max_failures: int,
        window: float,
        lockout: float,
        max_keys: int = MAX_KEYS,
    ) -> None:
        if max_failures < 1 or not (window > 0 and lockout > 0):
            raise ValueError("max_failures must be >= 1, window and lockout > 0")
        self._clock = clock
        self._max_failures = max_failures
        self._window = window
        self._lockout = lockout
        self._records: _LruTable[_Failures] = _LruTable(max_keys, self._idle)
        self._lockouts = 0

    def locked_for(self, key: str) -> float:
        """Return the seconds ``key`` stays locked (0 when it is not)."""
        now = self._clock()
        record = self._records.get(key, now)
        return 0.0 if record is None else max(0.0, record.locked_until - now)

    def check(self, key: str) -> None:
        """Raise unless ``key`` may try now.

        Raises:
            RateLimited: ``key`` is locked; ``retry_after`` is the rest of the lockout.
        """
        wait = self.locked_for(key)
        if wait > 0:
            raise RateLimited(wait)

    def record_failure(self, key: str) -> float:
        """Count a failure of ``key``; return the seconds it is now locked (0 if not)."""
        now = self._clock()
        record = self._records.get(key, now)
        if record is None:
            record = _Failures(collections.deque(maxlen=self._max_failures))
        if record.locked_until > now:
            return record.locked_until - now
        record.times.append(now)
        while record.times[0] <= now - self._window:
            record.times.popleft()
        if len(record.times) >= self._max_failures:
            record.times.clear()
            record.locked_until = now + self._lockout
            self._lockouts += 1
        self._records.put(key, record, now)
        return max(0.0, record.locked_until - now)

    def record_success(self, key: str) -> None:
        """Forget ``key``'s failures (and any lock)."""
        self._records.pop(key)

    def statistics(self) -> LockoutStatistics:
        """Return the tracker counters."""
        return LockoutStatistics(len(self._records), self._lockouts, self._records.evicted)

    def _idle(self, record: _Failures, now: float) -> bool:
        # Nothing left to remember: not locked, and every failure out of the window.
        newest = record.times[-1] if record.times else -math.inf
        return record.locked_until <= now and newest <= now - self._window
