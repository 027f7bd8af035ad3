"""The bounded outbound queue of one WebSocket connection.

Two kinds of entry share one insertion order:

- **lossless** frames (order events, replies to the client's own frames) count against
  ``capacity``; when it is full the client is too slow and :class:`SlowConsumer` is
  raised — never a silent drop;
- **latest-value** frames replace an earlier queued frame with the same key (quotes of a
  symbol, a position, a forming candle) and move to the end, so the frames of one channel
  leave in the order of their ``seq``. They are bounded by the number of keys, not by
  ``capacity``; every replacement is counted in ``conflated``.

The producer side (``put``/``put_latest``) never waits: it is called by the hub while
it fans an event out, and a slow socket must never hold up a producer.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable

import trio


class SlowConsumer(Exception):
    """The queue cannot take a lossless frame: the client is not reading fast enough."""


class Outbox:
    """Frames waiting for one connection's sender task."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        # NOTE: int keys are lossless entries (from the counter), anything else a latest-
        # value key; a dict keeps insertion order and replaces in O(1).
        self._entries: dict[Hashable, bytes] = {}
        self._lossless = 0
        self._counter = itertools.count()
        self._wakeup = trio.lowlevel.ParkingLot()
        self._sender_parked = False  # a plain flag: ParkingLot.__bool__ is a Python call
        self._closed = False
        self.conflated = 0
        self.high_water = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def lossless_queued(self) -> int:
        """Lossless frames waiting (what ``capacity`` bounds)."""
        return self._lossless

    def put(self, frame: bytes) -> None:
        """Queue a lossless frame.

        Raises:
            SlowConsumer: ``capacity`` lossless frames are already waiting.
        """
        if self._lossless >= self.capacity:
            raise SlowConsumer(f"{self._lossless} frames queued")
        entries = self._entries
        entries[next(self._counter)] = frame
        self._lossless += 1
        if len(entries) > self.high_water:
            self.high_water = len(entries)
        if self._sender_parked:
            self._wake()

    def put_latest(self, key: Hashable, frame: bytes) -> None:
        """Queue ``frame`` as the latest value of ``key``, replacing a waiting one."""
        # NOTE: called once per event and subscriber by the hub: the checks are inline.
        if isinstance(key, int):
            raise TypeError("latest-value keys must not be integers")
        entries = self._entries
        if entries.pop(key, None) is not None:
            self.conflated += 1
        entries[key] = frame
        if len(entries) > self.high_water:
            self.high_water = len(entries)
        if self._sender_parked:
            self._wake()

    def close(self) -> None:
        """Wake a waiting :meth:`take_all`, which then ends with ``trio.EndOfChannel``."""
        self._closed = True
        self._wake()

    async def take_all(self) -> list[bytes]:
        """Wait for frames and take every one that is queued, in order.

        Raises:
            trio.EndOfChannel: the outbox was closed and is empty.
        """
        while not self._entries:
            if self._closed:
                raise trio.EndOfChannel
            self._sender_parked = True
            try:
                await self._wakeup.park()
            finally:
                self._sender_parked = False
        frames = list(self._entries.values())
        self._entries.clear()
        self._lossless = 0
        return frames

    def _wake(self) -> None:
        # NOTE: unpark_all() costs microseconds even with nobody parked, and the hub
        # queues once per event and subscriber: the producers wake only a parked sender,
        # and the flag drops at once so a burst wakes it once.
        self._sender_parked = False
        self._wakeup.unpark_all()
