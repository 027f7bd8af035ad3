"""Redis Streams feed: ticks published to a stream by ticker services, consumed by a group.

Stream entry format (for publishers; also in the README):

* one field ``ticks`` whose value is a UTF-8 JSON array of wire ticks, exactly the
  ``ticks`` list of an ingest frame: ``[{"symbol", "ltp", "ts", "bid"?, "ask"?,
  "bid_qty"?, "ask_qty"?, "volume"?, "oi"?}, ...]``, at most 10,000 per entry, prices
  as decimal strings (or integers);
* other fields are ignored (a publisher may add e.g. ``src``);
* e.g. ``XADD ticks MAXLEN ~ 1000000 * ticks '[{"symbol":"NIFTY","ltp":"24000.05",
  "ts":1767600000000}]'`` (trimming with ``MAXLEN ~`` keeps the stream bounded).

Each entry becomes one ``TickBatch(source="redis")`` of its valid ticks, in stream
order. Ticks are validated like the ingest endpoints (``protocol.parse_ticks`` against
the feed's wall clock); invalid ones are counted by reason and logged, and the valid
ones of the same entry are applied. An entry that is not usable at all (no ``ticks``
field, not JSON, not a list, deleted from the stream while pending) is a poison
message: counted by reason, logged and acknowledged, so it never blocks the stream.

Exactly once across restarts. An entry is acknowledged only after ``sink.submit``
returned for it, and the step "submit returned → ack" cannot be split by
cancellation: the ack of every applied entry runs in a shielded scope bounded by
``ACK_TIMEOUT``, also when the feed is being cancelled or the sink raised. A
cancelled or crashed feed therefore leaves pending exactly the entries it did not
apply, and a new feed with the same group and consumer starts with that pending list
(``GroupReader``), so the union of what the two applied is each entry once, in order.
This relies on the sink's contract: ``submit`` either queues the batch and returns,
or raises without queuing it (trio's channels behave so).

The one window left: Redis unreachable for the whole ack (longer than its retry
budget or ``ACK_TIMEOUT``) right after an entry was applied. The feed keeps those ids
and acknowledges them before its next read, also across ``run`` calls on the same
object (a supervisor restarting ``feed.run`` closes the window); a *new* object does
not know them and applies those entries again (at least once, never lost).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Protocol

import trio

from actors.market.messages import TickBatch, TickSink
from engine.streams import StreamEntry, StreamUnavailable
from protocol import ProtocolError, Tick, TickError, loads, parse_ticks

LOG = logging.getLogger(__name__)

TICKS_FIELD: Final = "ticks"
SOURCE: Final = "redis"
READ_BLOCK: Final = 1000  # ms an idle read waits for new entries before it reads again
ACK_TIMEOUT: Final = 5.0  # seconds the shielded ack of applied entries may take, at most


class EntryReader(Protocol):
    """What the feed reads entries with: `engine.streams.GroupReader` or a fake."""

    async def read(self, *, count: int, block_ms: int | None) -> list[StreamEntry]: ...


class StreamsAdapter(Protocol):
    """What the feed needs of `engine.streams.RedisStreams`."""

    async def ensure_group(self, stream: str, group: str, *, start_id: str = ...) -> bool: ...
    def reader(self, stream: str, group: str, consumer: str) -> EntryReader: ...
    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> int: ...


@dataclass(frozen=True, slots=True)
class StreamFeedStatistics:
    """Counters of a `RedisStreamFeed`.

    Attributes:
        entries: entries handled (applied or poison), acknowledged or about to be.
        batches: batches submitted to the sink.
        ticks: valid ticks submitted.
        invalid: invalid ticks by reason (``too_old``, ``bad_symbol``, ...).
        poison: unusable entries by reason (``missing_ticks``, ``bad_json``,
            ``bad_batch``, ``deleted``).
        acked: entries acknowledged.
        ack_failures: acks that failed and wait for the next attempt.
    """

    entries: int
    batches: int
    ticks: int
    invalid: Mapping[str, int]
    poison: Mapping[str, int]
    acked: int
    ack_failures: int


class RedisStreamFeed:
    """Consume a Redis stream through a consumer group and submit its ticks to a sink."""

    def __init__(
        self,
        streams: StreamsAdapter,
        sink: TickSink,
        *,
        stream: str,
        group: str,
        consumer: str,
        batch: int,
        clock: Callable[[], int],
    ) -> None:
        """Configure the feed.

        Args:
            streams: the Redis Streams adapter (already running).
            sink: receives one `TickBatch(source="redis")` per entry with valid ticks.
            stream: the stream key.
            group: the consumer group, created at the start of the stream if missing.
            consumer: this node's consumer name; keep it stable across restarts, since
                pending entries are re-read by the same consumer only.
            batch: entries per read.
            clock: wall clock, epoch ms: the validation time window and `received_ms`.

        Raises:
            ValueError: `batch` < 1.
        """
        if batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch}")
        self._streams = streams
        self._sink = sink
        self._stream = stream
        self._group = group
        self._consumer = consumer
        self._batch = batch
        self._clock = clock
        # NOTE: ids applied but not acknowledged (ack failed); acknowledged before any
        # further read, so they are never applied twice by this object.
        self._unacked: list[str] = []
        self._entries = self._batches = self._ticks = self._acked = self._ack_failures = 0
        self._invalid: collections.Counter[str] = collections.Counter()
        self._poison: collections.Counter[str] = collections.Counter()

    def statistics(self) -> StreamFeedStatistics:
        """Return the counters so far."""
        return StreamFeedStatistics(
            self._entries,
            self._batches,
            self._ticks,
            MappingProxyType(dict(self._invalid)),
            MappingProxyType(dict(self._poison)),
            self._acked,
            self._ack_failures,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Create the group if missing, then apply entries until cancelled.

        Reports started once the group exists. Reading starts with this consumer's
        pending entries (delivered before a restart, never acknowledged).

        Cancellation: at any point, without loss or duplicate (see the module
        docstring); cancelling may take up to `ACK_TIMEOUT` while applied entries are
        acknowledged.

        Error handling: lost connections are retried by the adapter (bounded, logged);
        past its budget `StreamUnavailable` propagates for the supervisor to restart
        the feed, which resumes from the pending entries. Errors of the sink propagate;
        the entries it did not take stay pending.

        Raises:
            StreamUnavailable: Redis unreachable past the adapter's retry budget.
            StreamError: Redis refused an operation (the key is not a stream, the group
                was deleted): a misconfiguration, not retried.
        """
        await self._streams.ensure_group(self._stream, self._group)
        reader = self._streams.reader(self._stream, self._group, self._consumer)
        LOG.info("redis stream feed reading %s as %s/%s", self._stream, self._group, self._consumer)
        task_status.started()
        while True:
            if self._unacked and not await self._ack(self._take_unacked()):
                raise StreamUnavailable("ack failed")
            entries = await reader.read(count=self._batch, block_ms=READ_BLOCK)
            await self._apply(entries)

    async def _apply(self, entries: list[StreamEntry]) -> None:
        applied: list[str] = []
        try:
            for entry in entries:
                batch = self._decode(entry)
                if batch is not None:
                    await self._sink.submit(batch)
                    # NOTE: no checkpoint between submit returning and this append: a
                    # cancellation delivered from here on finds the id in `applied`.
                    self._batches += 1
                    self._ticks += len(batch.ticks)
                applied.append(entry.id)
                self._entries += 1
        finally:
            if applied:
                await self._ack(applied)

    def _take_unacked(self) -> list[str]:
        ids, self._unacked = self._unacked, []
        return ids

    async def _ack(self, ids: list[str]) -> bool:
        # Shielded: the ack of applied entries must happen even while the feed is being
        # cancelled, else a restarted feed would apply them again. Bounded, so a dead
        # Redis cannot hold up a shutdown for longer than ACK_TIMEOUT.
        try:
            with trio.move_on_after(ACK_TIMEOUT, shield=True):
                await self._streams.ack(self._stream, self._group, ids)
                self._acked += len(ids)
                return True
            reason = "timeout"
        except StreamUnavailable as exc:
            reason = str(exc.details.get("reason", "unavailable"))
        self._unacked.extend(ids)
        self._ack_failures += 1
        LOG.warning(
            "could not ack %d applied entries of %s (%s); retrying before the next read",
            len(ids),
            self._stream,
            reason,
        )
        return False

    def _decode(self, entry: StreamEntry) -> TickBatch | None:
        # The entry's valid ticks as a batch, None if it has none; counts what is wrong.
        now_ms = self._clock()
        ticks = self._parse(entry, now_ms)
        return TickBatch(tuple(ticks), SOURCE, now_ms) if ticks else None

    def _parse(self, entry: StreamEntry, now_ms: int) -> list[Tick]:
        if entry.fields is None:
            return self._reject(entry, "deleted")
        raw = entry.fields.get(TICKS_FIELD)
        if raw is None:
            return self._reject(entry, "missing_ticks")
        try:
            ticks, errors = parse_ticks(loads(raw), now_ms=now_ms)
        except ProtocolError:
            return self._reject(entry, "bad_json")
        except ValueError as exc:
            return self._reject(entry, "bad_batch", str(exc))
        if errors:
            self._count_invalid(entry, errors, len(ticks) + len(errors))
        return ticks

    def _reject(self, entry: StreamEntry, reason: str, detail: str = "") -> list[Tick]:
        self._poison[reason] += 1
        LOG.warning(
            "stream %s entry %s is unusable (%s%s); acknowledged and skipped",
            self._stream,
            entry.id,
            reason,
            f": {detail}" if detail else "",
        )
        return []

    def _count_invalid(self, entry: StreamEntry, errors: list[TickError], total: int) -> None:
        for error in errors:
            self._invalid[error.reason] += 1
        first = errors[0]
        LOG.warning(
            "stream %s entry %s: %d of %d ticks invalid (first: index %d, %s %s)",
            self._stream,
            entry.id,
            len(errors),
            total,
            first.index,
            first.field,
            first.reason,
        )
