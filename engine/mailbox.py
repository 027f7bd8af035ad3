"""Actor mailboxes that state their overflow policy.

:class:`Mailbox` is bounded and lossless: commands (orders, admin) either wait for room
(:meth:`Mailbox.send`, backpressure) or are refused at once (:meth:`Mailbox.send_nowait`
raises :class:`MailboxFull`, counted), never dropped silently.

:class:`ConflatingMailbox` is for market data: :meth:`ConflatingMailbox.put` never
blocks; a key already pending has its value replaced (latest wins, counted), so a slow
consumer costs memory per instrument, not per tick, and never slows the producer.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

import trio

logger = logging.getLogger(__name__)

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class MailboxFull(trio.WouldBlock):
    """A fail-fast send found the mailbox full (or a new key past ``max_keys``)."""

    code: ClassVar[str] = "mailbox_full"

    def __init__(self, name: str, capacity: int) -> None:
        super().__init__(f"mailbox {name!r} is full (capacity {capacity})")
        self.name = name
        self.capacity = capacity


class MailboxClosed(Exception):
    """The mailbox is closed: no more sends, and nothing left to receive."""

    code: ClassVar[str] = "mailbox_closed"

    def __init__(self, name: str) -> None:
        super().__init__(f"mailbox {name!r} is closed")
        self.name = name


@dataclass(frozen=True, slots=True)
class MailboxStatistics:
    """A snapshot of a :class:`Mailbox`."""

    name: str
    capacity: int
    depth: int  # items buffered now
    sent: int
    received: int
    rejected: int  # send_nowait refusals
    max_depth: int


@dataclass(frozen=True, slots=True)
class ConflatingMailboxStatistics:
    """A snapshot of a :class:`ConflatingMailbox`; ``put == conflated + delivered + pending``."""

    name: str
    max_keys: int | None
    pending: int  # keys waiting now
    put: int  # accepted puts, conflated ones included
    conflated: int  # puts that replaced a pending value
    delivered: int
    rejected: int  # new keys refused past max_keys


class Mailbox(Generic[T]):
    """A bounded, lossless, multi-producer mailbox over a trio memory channel.

    The mailbox owns both channel ends: trio memory channels are safe for many tasks
    sending and receiving on the same end, and owning them means one ``close()`` covers
    every producer without per-producer clones to track.

    Args:
        capacity: Items buffered before senders wait (or ``send_nowait`` refuses).
        name: Name used in errors, logs and statistics.

    Raises:
        ValueError: ``capacity`` is not an int >= 1.
    """

    def __init__(self, capacity: int, *, name: str) -> None:
        # An int, so math.inf cannot sneak in an unbounded "bounded" mailbox.
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"mailbox {name!r}: capacity must be an int >= 1, got {capacity}")
        self.name = name
        self.capacity = capacity
        self._send, self._receive = trio.open_memory_channel[T](capacity)
        self._sent = self._received = self._rejected = self._max_depth = 0

    async def send(self, item: T) -> None:
        """Put ``item`` in the mailbox, waiting while it is full (backpressure).

        Raises:
            MailboxClosed: The mailbox is closed, before or while waiting.

        Cancellation: if cancelled while waiting, the item was not sent.
        """
        try:
            await self._send.send(item)
        except trio.ClosedResourceError:
            raise MailboxClosed(self.name) from None
        self._count_sent()

    def send_nowait(self, item: T) -> None:
        """Put ``item`` in the mailbox or fail at once.

        Raises:
            MailboxFull: The mailbox is full; counted in ``rejected``.
            MailboxClosed: The mailbox is closed.
        """
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            self._rejected += 1
            raise MailboxFull(self.name, self.capacity) from None
        except trio.ClosedResourceError:
            raise MailboxClosed(self.name) from None
        self._count_sent()

    async def receive(self) -> T:
        """Take the oldest item, waiting while the mailbox is empty.

        Raises:
            MailboxClosed: The mailbox is closed and empty.

        Cancellation: if cancelled while waiting, no item was taken.
        """
        try:
            item = await self._receive.receive()
        except trio.EndOfChannel:
            raise MailboxClosed(self.name) from None
        self._received += 1
        return item

    def receive_nowait(self) -> T:
        """Take the oldest item at once.

        Raises:
            trio.WouldBlock: The mailbox is empty.
            MailboxClosed: The mailbox is closed and empty.
        """
        try:
            item = self._receive.receive_nowait()
        except trio.EndOfChannel:
            raise MailboxClosed(self.name) from None
        self._received += 1
        return item

    def close(self) -> None:
        """Refuse further sends; buffered items can still be received.

        Senders waiting for room get :class:`MailboxClosed`; receivers get it once the
        buffer is empty, and ``async for`` ends there. Idempotent.
        """
        self._send.close()

    def statistics(self) -> MailboxStatistics:
        """Return counters and the current depth."""
        return MailboxStatistics(
            name=self.name,
            capacity=self.capacity,
            depth=self._send.statistics().current_buffer_used,
            sent=self._sent,
            received=self._received,
            rejected=self._rejected,
            max_depth=self._max_depth,
        )

    def __aiter__(self) -> Mailbox[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.receive()
        except MailboxClosed:
            raise StopAsyncIteration from None

    def _count_sent(self) -> None:
        self._sent += 1
        depth = self._send.statistics().current_buffer_used
        self._max_depth = max(self._max_depth, depth)


class ConflatingMailbox(Generic[K, V]):
    """A latest-value-per-key mailbox whose :meth:`put` never blocks.

    Keys are delivered in the order they first became pending; replacing the value of a
    pending key keeps its place. A delivered key that is put again queues at the back.

    Args:
        name: Name used in errors, logs and statistics.
        max_keys: Most keys pending at once; a put of a new key past it is refused.

    Raises:
        ValueError: ``max_keys < 1``.
    """

    def __init__(self, *, name: str, max_keys: int | None = None) -> None:
        if max_keys is not None and max_keys < 1:
            raise ValueError(f"mailbox {name!r}: max_keys must be >= 1, got {max_keys}")
        self.name = name
        self.max_keys = max_keys
        # OrderedDict, not dict: popitem(last=False) is O(1), while taking the first key
        # of a plain dict rescans the slots freed by earlier pops.
        self._pending: OrderedDict[K, V] = OrderedDict()
        # NOTE: every wake-up is unpark_all: a waiter re-checks under the same (single)
        # thread before parking again, so no put or close can fall between check and park.
        self._lot = trio.lowlevel.ParkingLot()
        self._closed = False
        self._put = self._conflated = self._delivered = self._rejected = 0

    def put(self, key: K, value: V) -> None:
        """Make ``value`` the pending value for ``key``, replacing any pending one.

        Raises:
            MailboxFull: ``key`` is new and ``max_keys`` keys are pending; counted in
                ``rejected``. A pending key can always be updated.
            MailboxClosed: The mailbox is closed.
        """
        if self._closed:
            raise MailboxClosed(self.name)
        if key in self._pending:
            self._pending[key] = value
            self._conflated += 1
        else:
            if self.max_keys is not None and len(self._pending) >= self.max_keys:
                self._rejected += 1
                raise MailboxFull(self.name, self.max_keys)
            self._pending[key] = value
            self._lot.unpark_all()
        self._put += 1

    async def receive(self) -> tuple[K, V]:
        """Take the oldest pending key with its latest value, waiting while none is.

        Raises:
            MailboxClosed: The mailbox is closed and nothing is pending.

        Cancellation: if cancelled while waiting, nothing was taken.
        """
        await self.wait_nonempty()
        item = self._pending.popitem(last=False)
        self._delivered += 1
        return item

    def receive_nowait(self) -> tuple[K, V]:
        """Take the oldest pending key with its latest value at once.

        Raises:
            trio.WouldBlock: Nothing is pending.
            MailboxClosed: The mailbox is closed and nothing is pending.
        """
        if not self._pending:
            if self._closed:
                raise MailboxClosed(self.name)
            raise trio.WouldBlock
        self._delivered += 1
        return self._pending.popitem(last=False)

    def drain(self) -> list[tuple[K, V]]:
        """Take everything pending, in key-arrival order (empty list if nothing is)."""
        items = list(self._pending.items())
        self._pending.clear()
        self._delivered += len(items)
        return items

    async def wait_nonempty(self) -> None:
        """Wait until something is pending, without taking it.

        Raises:
            MailboxClosed: The mailbox is closed and nothing is pending.

        Cancellation: a normal trio checkpoint; nothing is taken either way.
        """
        # One schedule point either way: the park when empty, else a checkpoint; and no
        # yield after seeing an item, so that the caller (receive(), or a drain() right
        # after) still finds it pending. (A checkpoint before the park too cost every
        # wake-up of an idle consumer a second task switch.)
        if self._pending:
            await trio.lowlevel.checkpoint()
        while not self._pending:
            if self._closed:
                raise MailboxClosed(self.name)
            await self._lot.park()

    def close(self) -> None:
        """Refuse further puts and wake every waiter; pending items stay receivable."""
        self._closed = True
        self._lot.unpark_all()

    def statistics(self) -> ConflatingMailboxStatistics:
        """Return counters and the number of pending keys."""
        return ConflatingMailboxStatistics(
            name=self.name,
            max_keys=self.max_keys,
            pending=len(self._pending),
            put=self._put,
            conflated=self._conflated,
            delivered=self._delivered,
            rejected=self._rejected,
        )

    def __aiter__(self) -> ConflatingMailbox[K, V]:
        return self

    async def __anext__(self) -> tuple[K, V]:
        try:
            return await self.receive()
        except MailboxClosed:
            raise StopAsyncIteration from None
