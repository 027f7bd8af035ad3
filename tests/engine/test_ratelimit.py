"""Rate limits: token buckets in memory (MockClock) and in the real Redis; login lockout."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import trio
import trio.testing
import trio_asyncio

from engine.ratelimit import (
    Decision,
    LockoutTracker,
    MemoryLimiter,
    RateLimit,
    RateLimited,
    RedisLimiter,
    check,
)
from protocol import ErrorCode
from tests.kit.db import REDIS_URL
from tests.kit.steps import steps_of_this_task

DOWN_URL = "redis://127.0.0.1:1/0"


# ------------------------------------------------------------------ memory


async def test_burst_is_allowed_then_refused_with_exact_retry_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A full bucket serves `burst` requests at once; the next waits 1/rate seconds."""
    limiter = MemoryLimiter(trio.current_time)
    limit = RateLimit(rate=2, burst=3)
    got = [await limiter.acquire("k", limit) for _ in range(4)]
    assert got == [
        Decision(True, 0.0, 2.0),
        Decision(True, 0.0, 1.0),
        Decision(True, 0.0, 0.0),
        Decision(False, 0.5, 0.0),
    ]
    stats = limiter.statistics()
    assert (stats.allowed, stats.limited, stats.tracked_keys) == (3, 1, 1)


async def test_bucket_refills_at_rate_over_virtual_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Tokens come back at `rate` per second, exactly when retry_after said, up to burst."""
    limiter = MemoryLimiter(trio.current_time)
    limit = RateLimit(rate=4, burst=2)
    start = trio.current_time()
    assert (await limiter.acquire("k", limit, cost=2)).allowed
    refused = await limiter.acquire("k", limit)
    assert refused == Decision(False, 0.25, 0.0)
    await trio.sleep(refused.retry_after)
    assert trio.current_time() == start + 0.25
    assert await limiter.acquire("k", limit) == Decision(True, 0.0, 0.0)
    await trio.sleep(10)
    assert await limiter.acquire("k", limit) == Decision(True, 0.0, 1.0)


async def test_cost_above_one_takes_that_many_tokens(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A request of cost 3 needs 3 tokens; retry_after counts the missing ones."""
    limiter = MemoryLimiter(trio.current_time)
    limit = RateLimit(rate=1, burst=5)
    assert await limiter.acquire("k", limit, cost=3) == Decision(True, 0.0, 2.0)
    assert await limiter.acquire("k", limit, cost=3) == Decision(False, 1.0, 2.0)
    await trio.sleep(1)
    assert await limiter.acquire("k", limit, cost=3) == Decision(True, 0.0, 0.0)


async def test_cost_outside_zero_to_burst_is_a_caller_error() -> None:
    """A cost of 0 or above the burst could never be meant: ValueError, nothing counted."""
    limiter = MemoryLimiter(trio.current_time)
    with pytest.raises(ValueError, match="cost"):
        await limiter.acquire("k", RateLimit(1, 2), cost=3)
    with pytest.raises(ValueError, match="cost"):
        await limiter.acquire("k", RateLimit(1, 2), cost=0)
    assert limiter.statistics().allowed == limiter.statistics().limited == 0


def test_rate_limit_rejects_a_zero_rate_and_a_burst_below_one() -> None:
    """RateLimit validates its shape at construction."""
    for rate, burst in [(0, 1), (-1, 1), (float("inf"), 1), (1, 0.5), (1, float("nan"))]:
        with pytest.raises(ValueError, match="rate|burst"):
            RateLimit(rate, burst)


async def test_keys_have_independent_buckets(autojump_clock: trio.testing.MockClock) -> None:
    """Emptying one key's bucket leaves another key's full."""
    limiter = MemoryLimiter(trio.current_time)
    limit = RateLimit(rate=1, burst=1)
    assert (await limiter.acquire("a", limit)).allowed
    assert not (await limiter.acquire("a", limit)).allowed
    assert (await limiter.acquire("b", limit)).allowed


async def test_key_spraying_is_bounded_by_max_keys(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Thousands of keys never hold more than max_keys buckets; lossy drops are counted."""
    limiter = MemoryLimiter(trio.current_time, max_keys=100)
    limit = RateLimit(rate=1, burst=2)
    for i in range(1000):
        await limiter.acquire(f"ip-{i}", limit)
    stats = limiter.statistics()
    assert stats.tracked_keys == 100
    assert stats.evicted == 900


async def test_buckets_full_again_are_dropped_without_loss(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Once idle long enough to be full, buckets are swept and not counted as evicted."""
    limiter = MemoryLimiter(trio.current_time, max_keys=100)
    limit = RateLimit(rate=2, burst=2)
    for i in range(10):
        await limiter.acquire(f"ip-{i}", limit)
    await trio.sleep(0.5)  # each bucket took 1 token: full again after 1/rate s
    await limiter.acquire("other", limit)
    assert limiter.statistics().tracked_keys == 1
    assert limiter.statistics().evicted == 0


async def test_check_raises_rate_limited_with_429_and_retry_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """`check` passes while tokens last, then raises code rate_limited, 429, retry_after."""
    limiter = MemoryLimiter(trio.current_time)
    limit = RateLimit(rate=0.5, burst=1)
    await check(limiter, "k", limit)
    with pytest.raises(RateLimited) as info:
        await check(limiter, "k", limit)
    error = info.value
    assert (error.code, error.http_status, error.retry_after) == (ErrorCode.RATE_LIMITED, 429, 2.0)
    assert error.to_body()["error"] == {
        "code": "rate_limited",
        "message": "rate limited",
        "details": {"retry_after": 2.0},
    }


async def test_cancelled_acquire_takes_no_tokens(autojump_clock: trio.testing.MockClock) -> None:
    """An acquire cancelled before it ran leaves the bucket as it was."""
    limiter = MemoryLimiter(trio.current_time)
    limit = RateLimit(rate=1, burst=1)
    with trio.CancelScope() as scope:
        scope.cancel()
        await limiter.acquire("k", limit)
    assert (await limiter.acquire("k", limit)).allowed


async def test_an_in_memory_acquire_does_not_switch_tasks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The order path takes two buckets per request: an uncancelled in-memory acquire
    never leaves the task (each switch would cost more than the bucket)."""
    limiter = MemoryLimiter(trio.current_time)
    with steps_of_this_task() as steps:
        assert (await limiter.acquire("k", RateLimit(rate=1, burst=2))).allowed
        assert not (await limiter.acquire("k", RateLimit(rate=1, burst=1))).allowed
    assert steps.count == 0


# ------------------------------------------------------------------ lockout


def tracker(max_keys: int = 1000) -> LockoutTracker:
    """A tracker locking for 60 s after 3 failures within 10 s, on the trio clock."""
    return LockoutTracker(
        trio.current_time, max_failures=3, window=10, lockout=60, max_keys=max_keys
    )


async def test_failures_within_window_lock_until_exactly_the_period_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The Nth failure locks the key for `lockout` s; at that instant it is free again."""
    locks = tracker()
    start = trio.current_time()
    assert locks.record_failure("1.2.3.4") == 0
    await trio.sleep(4)
    assert locks.record_failure("1.2.3.4") == 0
    locks.check("1.2.3.4")
    assert locks.record_failure("1.2.3.4") == 60
    with pytest.raises(RateLimited) as info:
        locks.check("1.2.3.4")
    assert (info.value.http_status, info.value.retry_after) == (429, 60)
    assert locks.record_failure("1.2.3.4") == 60  # ignored while locked: no extension
    await trio.sleep(59.5)
    assert locks.locked_for("1.2.3.4") == 0.5
    await trio.sleep(0.5)
    assert trio.current_time() == start + 64
    assert locks.locked_for("1.2.3.4") == 0
    locks.check("1.2.3.4")
    assert locks.statistics().lockouts == 1


async def test_failures_spread_wider_than_window_do_not_lock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Only failures within the sliding window count towards a lockout."""
    locks = tracker()
    for _ in range(5):
        assert locks.record_failure("k") == 0
        await trio.sleep(5)
    assert locks.locked_for("k") == 0


async def test_success_resets_the_failure_count(autojump_clock: trio.testing.MockClock) -> None:
    """After a success, N more failures are needed to lock."""
    locks = tracker()
    locks.record_failure("k")
    locks.record_failure("k")
    locks.record_success("k")
    assert locks.record_failure("k") == 0
    assert locks.record_failure("k") == 0
    assert locks.record_failure("k") == 60


async def test_lockout_memory_is_bounded_and_idle_records_are_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Sprayed keys stay within max_keys; records with nothing left to remember go."""
    locks = tracker(max_keys=50)
    for i in range(500):
        locks.record_failure(f"ip-{i}")
    assert locks.statistics().tracked_keys == 50
    assert locks.statistics().evicted == 450
    await trio.sleep(10)
    assert locks.locked_for("ip-499") == 0
    assert locks.statistics().tracked_keys == 0


# ------------------------------------------------------------------ redis


@pytest.fixture
def admin() -> Iterator[redis.Redis]:
    """A plain (sync) client for inspecting and cleaning up."""
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def prefix(admin: redis.Redis) -> Iterator[str]:
    """A key prefix of this test only; its keys are deleted afterwards."""
    name = f"test:ratelimit:{uuid.uuid4().hex}:"
    yield name
    for key in admin.scan_iter(match=name + "*"):
        admin.delete(key)


@pytest.fixture
async def node(aio_loop: trio_asyncio.TrioEventLoop, prefix: str) -> AsyncIterator[RedisLimiter]:
    """A running RedisLimiter ("node 1") on the test Redis."""
    async with trio.open_nursery() as nursery:
        yield await nursery.start(RedisLimiter(REDIS_URL, prefix=prefix).run)
        nursery.cancel_scope.cancel()


@pytest.mark.integration
async def test_redis_burst_then_refusal_with_retry_after(node: RedisLimiter) -> None:
    """On Redis a bucket serves `burst` requests, then refuses for about 1/rate s."""
    limit = RateLimit(rate=1, burst=3)
    with trio.fail_after(10):
        got = [await node.acquire("k", limit) for _ in range(4)]
    assert [d.allowed for d in got] == [True, True, True, False]
    assert [round(d.remaining) for d in got] == [2, 1, 0, 0]
    assert 0.5 < got[3].retry_after <= 1.0
    stats = node.statistics()
    assert (stats.allowed, stats.limited, stats.redis_errors) == (3, 1, 0)


@pytest.mark.integration
async def test_redis_bucket_refills_and_costs_several_tokens(node: RedisLimiter) -> None:
    """Cost > 1 takes that many tokens; after retry_after the tokens are back."""
    limit = RateLimit(rate=20, burst=4)
    with trio.fail_after(10):
        assert (await node.acquire("k", limit, cost=3)).allowed
        refused = await node.acquire("k", limit, cost=3)
        assert not refused.allowed
        assert 0 < refused.retry_after <= 0.1
        await trio.sleep(refused.retry_after + 0.01)
        assert (await node.acquire("k", limit, cost=3)).allowed
        with pytest.raises(RateLimited):
            await check(node, "k", limit)
        assert (await node.acquire("other", limit, cost=4)).allowed


@pytest.mark.integration
async def test_two_nodes_share_one_bucket(
    node: RedisLimiter, aio_loop: trio_asyncio.TrioEventLoop, prefix: str
) -> None:
    """Tokens taken on one node are gone for the other, whatever their local clocks say."""
    limit = RateLimit(rate=0.1, burst=2)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            skewed = RedisLimiter(REDIS_URL, prefix=prefix, clock=lambda: 1e9)
            other = await nursery.start(skewed.run)
            assert (await node.acquire("acc", limit)).allowed
            assert (await other.acquire("acc", limit)).allowed
            refused = await other.acquire("acc", limit)
            assert not refused.allowed and 9 < refused.retry_after <= 10
            assert not (await node.acquire("acc", limit)).allowed
            nursery.cancel_scope.cancel()


@pytest.mark.integration
async def test_redis_keys_expire_once_the_bucket_is_full_again(
    node: RedisLimiter, admin: redis.Redis, prefix: str
) -> None:
    """A bucket key lives only until it would be full: PTTL ≤ cost/rate, then gone."""
    limit = RateLimit(rate=10, burst=5)
    with trio.fail_after(10):
        await node.acquire("k", limit)
        assert 0 < admin.pttl(prefix + "k") <= 100
        await node.acquire("k", limit, cost=2)
        assert 150 < admin.pttl(prefix + "k") <= 300
        await trio.sleep(0.35)
    assert not admin.exists(prefix + "k")


@pytest.mark.integration
async def test_script_is_reloaded_after_script_flush(
    node: RedisLimiter, admin: redis.Redis
) -> None:
    """After SCRIPT FLUSH, EVALSHA's NOSCRIPT is answered by loading the script again."""
    limit = RateLimit(rate=1, burst=2)
    with trio.fail_after(10):
        assert (await node.acquire("k", limit)).allowed
        admin.script_flush()
        assert (await node.acquire("k", limit)).allowed
        assert not (await node.acquire("k", limit)).allowed
    assert node.statistics().redis_errors == 0


@pytest.mark.integration
async def test_unreachable_redis_fails_open_and_counts(
    aio_loop: trio_asyncio.TrioEventLoop,
) -> None:
    """With Redis down, the default limiter allows, counts, and retries Redis only later."""
    limit = RateLimit(rate=1, burst=1)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            limiter = await nursery.start(RedisLimiter(DOWN_URL, retry_interval=30).run)
            for _ in range(3):
                assert await limiter.acquire("k", limit) == Decision(True, 0.0, 0.0)
            await check(limiter, "k", limit)
            nursery.cancel_scope.cancel()
    stats = limiter.statistics()
    assert (stats.allowed, stats.limited, stats.degraded) == (4, 0, 4)
    assert stats.redis_errors == 1  # the start-up attempt; then left alone for 30 s


@pytest.mark.integration
async def test_unreachable_redis_fails_closed_when_asked(
    aio_loop: trio_asyncio.TrioEventLoop,
) -> None:
    """With fail_open=False and Redis down, requests are refused with a retry_after."""
    limit = RateLimit(rate=1, burst=1)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            limiter = RedisLimiter(DOWN_URL, fail_open=False, retry_interval=2)
            await nursery.start(limiter.run)
            refused = await limiter.acquire("k", limit)
            assert not refused.allowed and 0 < refused.retry_after <= 2
            with pytest.raises(RateLimited):
                await check(limiter, "k", limit)
            nursery.cancel_scope.cancel()
    stats = limiter.statistics()
    assert (stats.allowed, stats.limited, stats.degraded, stats.redis_errors) == (0, 2, 2, 1)


@pytest.mark.integration
async def test_limiter_uses_redis_again_once_it_answers(
    aio_loop: trio_asyncio.TrioEventLoop, prefix: str
) -> None:
    """After the retry interval a failed limiter tries Redis again and limits for real."""
    limit = RateLimit(rate=0.1, burst=1)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            limiter = RedisLimiter(REDIS_URL, prefix=prefix, retry_interval=0.05)
            await nursery.start(limiter.run)
            limiter._failed(ConnectionError("simulated outage"))
            assert (await limiter.acquire("k", limit)).allowed  # degraded: not counted in Redis
            await trio.sleep(0.06)
            assert (await limiter.acquire("k", limit)).allowed
            assert not (await limiter.acquire("k", limit)).allowed
            nursery.cancel_scope.cancel()
    assert limiter.statistics().degraded == 1


async def test_limiter_not_running_follows_fail_open() -> None:
    """Before `run`, a RedisLimiter decides by its fail_open flag without touching Redis."""
    limit = RateLimit(rate=1, burst=1)
    assert (await RedisLimiter(REDIS_URL).acquire("k", limit)).allowed
    assert not (await RedisLimiter(REDIS_URL, fail_open=False).acquire("k", limit)).allowed


@pytest.mark.integration
async def test_each_failed_redis_call_is_counted_when_retried_at_once(
    aio_loop: trio_asyncio.TrioEventLoop,
) -> None:
    """With retry_interval 0 every acquire tries Redis; each failure is one redis_error."""
    limit = RateLimit(rate=1, burst=1)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            limiter = await nursery.start(RedisLimiter(DOWN_URL, retry_interval=0).run)
            for _ in range(3):
                assert (await limiter.acquire("k", limit)).allowed
            nursery.cancel_scope.cancel()
    stats = limiter.statistics()
    assert (stats.redis_errors, stats.degraded, stats.allowed) == (4, 3, 3)


def test_bad_sizes_and_periods_are_refused_at_construction() -> None:
    """A zero key bound, failure count, window or lockout is a configuration error."""
    with pytest.raises(ValueError, match="max_keys"):
        MemoryLimiter(trio.current_time, max_keys=0)
    for failures, window, lockout in [(0, 1, 1), (1, 0, 1), (1, 1, -1)]:
        with pytest.raises(ValueError, match="max_failures"):
            LockoutTracker(trio.current_time, max_failures=failures, window=window, lockout=lockout)
