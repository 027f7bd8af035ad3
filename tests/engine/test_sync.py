"""EagerLock: a free lock is taken without a task switch; a held one is waited for."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from engine.sync import EagerLock
from tests.kit.steps import steps_of_this_task


async def test_a_free_lock_is_taken_without_a_task_switch() -> None:
    """Taking a free EagerLock does not leave the task; taking a free trio.Lock does."""
    with steps_of_this_task() as steps:
        async with EagerLock():
            assert steps.count == 0
        async with trio.Lock():
            assert steps.count == 1  # the contrast: trio.Lock's checkpoint


async def test_a_held_lock_is_waited_for_in_arrival_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Waiters get the lock one after the other, first come first served."""
    lock, order = EagerLock(), []

    async def worker(name: str, delay: float) -> None:
        await trio.sleep(delay)
        async with lock:
            order.append(f"{name}+")
            await trio.sleep(1)
            order.append(f"{name}-")

    async with trio.open_nursery() as nursery:
        for i, name in enumerate("abc"):
            nursery.start_soon(worker, name, i * 0.1)
    assert order == ["a+", "a-", "b+", "b-", "c+", "c-"]


async def test_a_cancelled_waiter_leaves_the_lock_to_its_holder() -> None:
    """Cancelling a task waiting for the lock neither takes nor breaks it."""
    lock = EagerLock()
    async with lock:
        with trio.move_on_after(0.01) as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_take, lock)
                await trio.sleep(1)
        assert scope.cancelled_caught
    async with lock:  # released by its holder, free again
        pass


async def test_an_error_inside_releases_the_lock() -> None:
    """The lock is released when the block raises."""
    lock = EagerLock()
    with pytest.raises(ValueError, match="boom"):
        async with lock:
            raise ValueError("boom")
    with trio.fail_after(1):
        async with lock:
            pass


async def _take(lock: EagerLock) -> None:
    async with lock:
        raise AssertionError("the lock was held")  # pragma: no cover
