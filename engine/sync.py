"""Synchronisation primitives the actors share beyond trio's."""

from __future__ import annotations

from types import TracebackType

import trio


class EagerLock:
    """A ``trio.Lock`` whose ``async with`` takes a free lock without a checkpoint.

    An actor takes its lock right after coming back from the scheduler (a mailbox or a
    quote receive), so trio's checkpoint in ``acquire`` is one task switch more per
    command for nothing: a free lock is taken at once, a held one is waited for (FIFO,
    as ``trio.Lock``). Cancellation and ownership are trio's: only the task that holds
    the lock may release it, and a cancelled wait leaves it untouched.
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = trio.Lock()

    async def __aenter__(self) -> None:
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._lock.release()
