"""The event bus: in-process fan-out, and Redis pub/sub across two bus instances."""

from __future__ import annotations

import pytest
import redis
import trio
import trio_asyncio

from engine.bus import BusUnavailable, InProcessBus, RedisBus, Subscription, matches
from engine.config import Config, with_overrides
from tests.kit.db import REDIS_URL
from tests.kit.steps import steps_of_this_task


def test_patterns_match_exactly_or_by_prefix() -> None:
    """A trailing * matches a prefix; anything else must be equal."""
    assert matches("quotes:*", "quotes:NIFTY")
    assert matches("quotes:NIFTY", "quotes:NIFTY")
    assert not matches("quotes:NIFTY", "quotes:NIFTY26JANFUT")
    assert not matches("account:A:*", "account:B:orders")


async def test_in_process_bus_delivers_to_matching_subscribers_only() -> None:
    """Each subscription gets exactly the messages of its pattern, in order."""
    bus = InProcessBus()
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.run)
        quotes = bus.subscribe("quotes:*")
        orders = bus.subscribe("account:A:orders")
        await bus.publish("quotes:NIFTY", b"1")
        await bus.publish("account:A:orders", b"2")
        await bus.publish("quotes:BANKNIFTY", b"3")
        assert [(await quotes.receive()).data for _ in range(2)] == [b"1", b"3"]
        msg = await orders.receive()
        assert (msg.channel, msg.data) == ("account:A:orders", b"2")
        assert await bus.ping()
        stats = bus.statistics()
        assert (stats.published, stats.delivered, stats.subscriptions) == (3, 3, 2)
        nursery.cancel_scope.cancel()


async def test_publish_many_delivers_in_order_and_counts_each_message() -> None:
    """A batch publish is the same as publishing each message in turn."""
    bus = InProcessBus()
    quotes = bus.subscribe("quotes:*")
    await bus.publish_many([("quotes:A", b"1"), ("candles:A:1m", b"2"), ("quotes:B", b"3")])
    await bus.publish_many([])
    assert [(await quotes.receive()).data for _ in range(2)] == [b"1", b"3"]
    assert bus.statistics().published == 3


async def test_slow_subscriber_drops_its_oldest_messages_and_counts_them() -> None:
    """A full subscription buffer never blocks the publisher; drops are counted."""
    sub = Subscription("x", capacity=3)
    bus = InProcessBus()
    bus._fanout.subscriptions.append(sub)
    for i in range(5):
        await bus.publish("x", str(i).encode())
    assert sub.dropped == 2 and bus.statistics().dropped == 2
    assert [(await sub.receive()).data for _ in range(3)] == [b"2", b"3", b"4"]


async def test_closed_subscription_ends_iteration() -> None:
    """Unsubscribing ends an `async for` over the subscription."""
    bus = InProcessBus()
    sub = bus.subscribe("x")
    await bus.publish("x", b"a")
    got = []

    async def consume() -> None:
        async for m in sub:
            got.append(m.data)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        bus.unsubscribe(sub)
    assert got == [b"a"]


@pytest.mark.integration
async def test_redis_bus_carries_messages_between_two_nodes(
    aio_loop: trio_asyncio.TrioEventLoop, config: Config
) -> None:
    """A message published on node 1 reaches a subscriber of node 2 through Redis."""
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            node1 = await nursery.start(RedisBus(config.redis, REDIS_URL).run)
            node2 = await nursery.start(RedisBus(config.redis, REDIS_URL).run)
            sub = node2.subscribe("account:T1:*")
            await node1.publish("account:T1:orders", b'{"seq":1}')
            await node1.publish("account:T1:orders", b'{"seq":2}')
            first, second = await sub.receive(), await sub.receive()
            assert (first.channel, first.data, second.data) == (
                "account:T1:orders",
                b'{"seq":1}',
                b'{"seq":2}',
            )
            # A pipelined batch arrives whole and in order.
            await node1.publish_many([("account:T1:orders", b"%d" % i) for i in range(3, 8)])
            await node1.publish_many([])
            assert [(await sub.receive()).data for _ in range(5)] == [b"3", b"4", b"5", b"6", b"7"]
            assert await node1.ping() and await node2.ping()
            assert node1.statistics().published == 7
            assert node2.statistics().delivered >= 2
            nursery.cancel_scope.cancel()


@pytest.mark.integration
async def test_redis_bus_reconnects_after_its_connection_is_killed(
    aio_loop: trio_asyncio.TrioEventLoop, config: Config
) -> None:
    """When Redis drops the pub/sub connection, the reader reconnects and delivery resumes."""
    admin = redis.Redis.from_url(REDIS_URL)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            bus = await nursery.start(RedisBus(config.redis, REDIS_URL).run)
            sub = bus.subscribe("quotes:*")
            await bus.publish("quotes:A", b"before")
            assert (await sub.receive()).data == b"before"
            admin.client_kill_filter(_type="pubsub")
            deadline = trio.current_time() + 10
            got = None
            while got is None and trio.current_time() < deadline:
                await bus.publish("quotes:A", b"after")
                with trio.move_on_after(0.5):
                    got = (await sub.receive()).data
            assert got == b"after"
            assert bus.statistics().reconnects >= 1
            nursery.cancel_scope.cancel()


@pytest.mark.integration
async def test_redis_bus_unreachable_fails_start(
    aio_loop: trio_asyncio.TrioEventLoop, config: Config
) -> None:
    """With no Redis listening, start-up fails with bus_unavailable after its retries."""
    cfg = with_overrides(config, redis={"connect_retries": 2, "connect_timeout": 0.3})
    bus = RedisBus(cfg.redis, "redis://127.0.0.1:1/0")
    with trio.fail_after(15), pytest.raises(BusUnavailable):
        await bus.run()
    assert not await bus.ping()
    with pytest.raises(BusUnavailable):
        await bus.publish("x", b"y")


async def test_a_subscription_receive_is_one_schedule_point_whether_it_waits_or_not() -> None:
    """A message buffered: one checkpoint. None: the wait alone, no second switch after it."""
    bus = InProcessBus()
    sub = bus.subscribe("quotes:*")
    await bus.publish("quotes:A", b"1")
    with steps_of_this_task() as steps:
        assert (await sub.receive()).data == b"1"
    assert steps.count == 1

    async def publish_later() -> None:
        await trio.testing.wait_all_tasks_blocked()
        await bus.publish("quotes:B", b"2")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(publish_later)
        with steps_of_this_task() as steps:
            assert (await sub.receive()).data == b"2"
        assert steps.count == 1
