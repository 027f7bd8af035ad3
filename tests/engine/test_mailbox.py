"""Tests for engine.mailbox: lossless backpressure and latest-value conflation."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from engine.mailbox import (
    ConflatingMailbox,
    ConflatingMailboxStatistics,
    Mailbox,
    MailboxClosed,
    MailboxFull,
    MailboxStatistics,
)
from tests.kit.steps import steps_of_this_task

BUDGET = 10  # virtual seconds any test may take before it counts as hung


# -- Mailbox ---------------------------------------------------------------------------


@pytest.mark.parametrize("capacity", [0, -1, math.inf])
def test_mailbox_rejects_a_capacity_that_is_not_a_positive_int(capacity):
    """A mailbox holds at least one item and is never unbounded."""
    with pytest.raises(ValueError, match="capacity must be an int >= 1"):
        Mailbox[int](capacity, name="orders")


async def test_mailbox_delivers_in_order_and_counts(autojump_clock):
    """Items come out in the order they went in, and statistics follow."""
    box = Mailbox[int](4, name="orders")
    await box.send(1)
    box.send_nowait(2)
    await box.send(3)
    assert box.statistics() == MailboxStatistics("orders", 4, 3, 3, 0, 0, 3)
    assert [await box.receive(), box.receive_nowait(), await box.receive()] == [1, 2, 3]
    assert box.statistics() == MailboxStatistics("orders", 4, 0, 3, 3, 0, 3)


async def test_send_blocks_when_full_and_resumes_after_a_receive(autojump_clock):
    """A full mailbox makes send() wait (backpressure) until a receive frees room."""
    box = Mailbox[str](2, name="orders")
    await box.send("a")
    await box.send("b")
    done: list[float] = []

    async def sender() -> None:
        await box.send("c")
        done.append(trio.current_time())

    with trio.fail_after(BUDGET):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            await trio.testing.wait_all_tasks_blocked()
            await trio.sleep(1)
            assert done == []
            assert box.statistics().depth == 2
            assert await box.receive() == "a"
    assert done == [1.0]
    assert [box.receive_nowait(), box.receive_nowait()] == ["b", "c"]
    assert box.statistics().max_depth == 2


async def test_send_nowait_on_a_full_mailbox_raises_mailbox_full_and_counts(autojump_clock):
    """Fail-fast sends raise MailboxFull (a trio.WouldBlock) and count the refusal."""
    box = Mailbox[int](1, name="orders")
    box.send_nowait(1)
    with pytest.raises(MailboxFull) as info:
        box.send_nowait(2)
    assert isinstance(info.value, trio.WouldBlock)
    assert (info.value.name, info.value.capacity, info.value.code) == ("orders", 1, "mailbox_full")
    with pytest.raises(trio.WouldBlock):
        box.send_nowait(3)
    stats = box.statistics()
    assert (stats.sent, stats.rejected, stats.depth) == (1, 2, 1)


async def test_receive_nowait_on_an_empty_mailbox_would_block(autojump_clock):
    """receive_nowait raises trio.WouldBlock while nothing is buffered."""
    box = Mailbox[int](1, name="orders")
    with pytest.raises(trio.WouldBlock):
        box.receive_nowait()


async def test_close_refuses_sends_but_delivers_what_is_buffered(autojump_clock):
    """After close, sends raise MailboxClosed; receivers drain, then get MailboxClosed."""
    box = Mailbox[int](4, name="orders")
    await box.send(1)
    await box.send(2)
    box.close()
    box.close()  # idempotent
    with pytest.raises(MailboxClosed):
        await box.send(3)
    with pytest.raises(MailboxClosed):
        box.send_nowait(3)
    assert await box.receive() == 1
    assert [item async for item in box] == [2]
    with pytest.raises(MailboxClosed):
        await box.receive()
    with pytest.raises(MailboxClosed):
        box.receive_nowait()


async def test_close_wakes_blocked_senders_and_receivers(autojump_clock):
    """close() fails a sender waiting for room and ends a receiver waiting for items."""
    full = Mailbox[int](1, name="full")
    full.send_nowait(0)
    empty = Mailbox[int](1, name="empty")
    outcomes: list[str] = []

    async def blocked_sender() -> None:
        with pytest.raises(MailboxClosed):
            await full.send(1)
        outcomes.append("sender")

    async def blocked_receiver() -> None:
        with pytest.raises(MailboxClosed):
            await empty.receive()
        outcomes.append("receiver")

    with trio.fail_after(BUDGET):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(blocked_sender)
            nursery.start_soon(blocked_receiver)
            await trio.testing.wait_all_tasks_blocked()
            full.close()
            empty.close()
    assert sorted(outcomes) == ["receiver", "sender"]
    assert full.receive_nowait() == 0


async def test_many_producers_lose_nothing_and_keep_their_own_order(autojump_clock):
    """Concurrent producers through a small mailbox: every item arrives, in producer order."""
    box = Mailbox[tuple[int, int]](4, name="orders")
    producers, per_producer = 10, 100
    received: list[tuple[int, int]] = []

    async def producer(pid: int) -> None:
        for seq in range(per_producer):
            await box.send((pid, seq))

    async def consumer() -> None:
        async for item in box:
            received.append(item)

    with trio.fail_after(BUDGET):
        async with trio.open_nursery() as outer:
            outer.start_soon(consumer)
            async with trio.open_nursery() as nursery:
                for pid in range(producers):
                    nursery.start_soon(producer, pid)
            box.close()
    assert len(received) == producers * per_producer
    for pid in range(producers):
        assert [seq for p, seq in received if p == pid] == list(range(per_producer))
    stats = box.statistics()
    assert (stats.sent, stats.received, stats.depth, stats.rejected) == (1000, 1000, 0, 0)
    assert stats.max_depth == 4


async def test_cancelled_send_sends_nothing(autojump_clock):
    """A send cancelled while waiting for room leaves the mailbox untouched."""
    box = Mailbox[int](1, name="orders")
    box.send_nowait(1)
    with trio.move_on_after(1) as scope:
        await box.send(2)
    assert scope.cancelled_caught
    assert trio.current_time() == 1.0
    assert box.statistics().sent == 1
    assert box.receive_nowait() == 1
    with pytest.raises(trio.WouldBlock):
        box.receive_nowait()


# -- ConflatingMailbox -----------------------------------------------------------------


def test_conflating_mailbox_rejects_max_keys_below_one():
    """max_keys, when given, must be at least one."""
    with pytest.raises(ValueError, match="max_keys"):
        ConflatingMailbox[str, int](name="ticks", max_keys=0)


async def test_put_keeps_the_latest_value_per_key_and_counts_conflation(autojump_clock):
    """A pending key's value is replaced by the newest put, and that is counted."""
    box = ConflatingMailbox[str, int](name="ticks")
    box.put("NIFTY", 1)
    box.put("NIFTY", 2)
    box.put("NIFTY", 3)
    assert await box.receive() == ("NIFTY", 3)
    assert box.statistics() == ConflatingMailboxStatistics("ticks", None, 0, 3, 2, 1, 0)


async def test_keys_are_delivered_in_order_of_first_arrival(autojump_clock):
    """Keys queue FIFO by first arrival; an update keeps the key's place."""
    box = ConflatingMailbox[str, int](name="ticks")
    box.put("A", 1)
    box.put("B", 1)
    box.put("C", 1)
    box.put("A", 2)
    assert [box.receive_nowait(), await box.receive()] == [("A", 2), ("B", 1)]
    box.put("A", 3)  # delivered before: queues behind C now
    assert [await box.receive(), await box.receive()] == [("C", 1), ("A", 3)]


async def test_drain_takes_everything_pending_in_arrival_order(autojump_clock):
    """drain() returns all pending items at once and leaves the mailbox empty."""
    box = ConflatingMailbox[str, int](name="ticks")
    assert box.drain() == []
    for key, value in [("X", 1), ("Y", 1), ("X", 2), ("Z", 1)]:
        box.put(key, value)
    assert box.drain() == [("X", 2), ("Y", 1), ("Z", 1)]
    assert box.statistics().pending == 0
    assert box.statistics().delivered == 3
    with pytest.raises(trio.WouldBlock):
        box.receive_nowait()


async def test_max_keys_refuses_new_keys_but_accepts_updates(autojump_clock):
    """Past max_keys a new key raises MailboxFull (counted); pending keys still update."""
    box = ConflatingMailbox[str, int](name="ticks", max_keys=2)
    box.put("A", 1)
    box.put("B", 1)
    with pytest.raises(MailboxFull) as info:
        box.put("C", 1)
    assert (info.value.name, info.value.capacity) == ("ticks", 2)
    box.put("A", 2)
    stats = box.statistics()
    assert (stats.pending, stats.put, stats.conflated, stats.rejected) == (2, 3, 1, 1)
    assert box.drain() == [("A", 2), ("B", 1)]
    box.put("C", 1)


async def test_a_blocked_receiver_is_woken_by_put(autojump_clock):
    """A receiver waiting on an empty mailbox gets the next put."""
    box = ConflatingMailbox[str, int](name="ticks")
    got: list[tuple[tuple[str, int], float]] = []

    async def receiver() -> None:
        got.append((await box.receive(), trio.current_time()))

    with trio.fail_after(BUDGET):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiver)
            await trio.testing.wait_all_tasks_blocked()
            await trio.sleep(2)
            box.put("BANKNIFTY", 7)
    assert got == [(("BANKNIFTY", 7), 2.0)]


async def test_every_waiting_receiver_gets_a_distinct_key(autojump_clock):
    """Several receivers waiting together each get one key; none is lost or doubled."""
    box = ConflatingMailbox[int, int](name="ticks")
    got: list[tuple[int, int]] = []

    async def receiver() -> None:
        got.append(await box.receive())

    with trio.fail_after(BUDGET):
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(receiver)
            await trio.testing.wait_all_tasks_blocked()
            for key in range(3):
                box.put(key, key * 10)
    assert sorted(got) == [(0, 0), (1, 10), (2, 20)]


async def test_close_wakes_receivers_after_the_pending_items(autojump_clock):
    """close() keeps pending items receivable, then waiters get MailboxClosed."""
    box = ConflatingMailbox[str, int](name="ticks")
    outcomes: list[str] = []

    async def waiter() -> None:
        with pytest.raises(MailboxClosed):
            await box.wait_nonempty()
        outcomes.append("closed")

    with trio.fail_after(BUDGET):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            box.close()
    assert outcomes == ["closed", "closed"]
    box2 = ConflatingMailbox[str, int](name="ticks")
    box2.put("A", 1)
    box2.close()
    with pytest.raises(MailboxClosed):
        box2.put("B", 1)
    assert [item async for item in box2] == [("A", 1)]
    with pytest.raises(MailboxClosed):
        box2.receive_nowait()
    with pytest.raises(MailboxClosed):
        await box2.receive()


async def test_wait_nonempty_returns_without_taking(autojump_clock):
    """wait_nonempty() wakes on a put and leaves the item for drain()."""
    box = ConflatingMailbox[str, int](name="ticks")

    async def feed() -> None:
        await trio.sleep(3)
        box.put("A", 1)
        box.put("A", 2)

    with trio.fail_after(BUDGET):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed)
            await box.wait_nonempty()
            assert trio.current_time() == 3.0
            assert box.drain() == [("A", 2)]


async def test_cancelled_receive_takes_nothing(autojump_clock):
    """A receive cancelled while waiting leaves later puts for the next receiver."""
    box = ConflatingMailbox[str, int](name="ticks")
    with trio.move_on_after(1):
        await box.receive()
    box.put("A", 1)
    assert box.receive_nowait() == ("A", 1)
    assert box.statistics().delivered == 1


@given(st.lists(st.tuples(st.sampled_from("ABCDE"), st.integers()), max_size=50))
def test_conflation_delivers_the_latest_value_of_each_key_once(puts):
    """For any puts: one item per key, latest value, and the counters balance."""
    box = ConflatingMailbox[str, int](name="ticks")
    for key, value in puts:
        box.put(key, value)
    delivered = box.drain()
    latest = {key: value for key, value in puts}
    first_seen = list(dict.fromkeys(key for key, _ in puts))
    assert delivered == [(key, latest[key]) for key in first_seen]
    stats = box.statistics()
    assert stats.put == len(puts) == stats.conflated + stats.delivered + stats.pending


async def test_conflating_receive_is_one_schedule_point_whether_it_waits_or_not(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An item pending: one checkpoint. Nothing pending: the wait alone (a checkpoint
    before it as well cost every wake-up of an idle consumer a second task switch)."""
    box: ConflatingMailbox[str, int] = ConflatingMailbox(name="steps")
    box.put("a", 1)
    with steps_of_this_task() as steps:
        assert await box.receive() == ("a", 1)
    assert steps.count == 1

    async def put_later() -> None:
        await trio.sleep(1)
        box.put("b", 2)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(put_later)
        with steps_of_this_task() as steps:
            assert await box.receive() == ("b", 2)
        assert steps.count == 1
