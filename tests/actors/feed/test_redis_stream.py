"""The Redis Streams feed: delivery, validation, poison entries, exactly-once restarts."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field

import pytest
import redis
import trio
import trio_asyncio

from actors.feed.redis_stream import RedisStreamFeed
from actors.market.messages import TickBatch
from engine.config import Config
from engine.streams import RedisStreams, StreamEntry, StreamUnavailable
from protocol import Tick, dumps, parse_ticks
from tests.kit.db import REDIS_URL

NOW = 1_767_600_000_000  # epoch ms, the feed's wall clock in these tests


def clock() -> int:
    return NOW


def wire_tick(i: int) -> dict[str, object]:
    """A distinct valid wire tick."""
    return {"symbol": f"SYM{i % 7}", "ltp": f"{100 + i}.05", "ts": NOW + i, "volume": i}


def make_entries(n: int, per_entry: int = 3, start: int = 0) -> list[list[dict[str, object]]]:
    """``n`` entries of ``per_entry`` distinct valid wire ticks each."""
    return [[wire_tick(start + e * per_entry + t) for t in range(per_entry)] for e in range(n)]


def parsed(entries: Sequence[Sequence[dict[str, object]]]) -> list[Tick]:
    """The ticks the feed should apply for ``entries``, in order."""
    ticks, errors = parse_ticks([t for e in entries for t in e], now_ms=NOW)
    assert not errors
    return ticks


class RecordingSink:
    """A sink that takes every batch (cancellable before taking it, never after)."""

    def __init__(self) -> None:
        self.batches: list[TickBatch] = []
        self._changed = trio.Event()

    @property
    def ticks(self) -> list[Tick]:
        return [t for b in self.batches for t in b.ticks]

    async def submit(self, batch: TickBatch) -> None:
        await trio.lowlevel.checkpoint()
        self.batches.append(batch)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_ticks(self, n: int) -> None:
        while len(self.ticks) < n:
            await self._changed.wait()


class CuttingSink(RecordingSink):
    """Takes batches until the ``cut_at``-th (1-based), where it stops the feed.

    ``blocked``: that submit blocks until cancelled, without taking the batch.
    ``taken``: it takes the batch, cancels the feed's scope and returns, so the
    cancellation lands right after a successful submit.
    """

    def __init__(self, cut_at: int, mode: str) -> None:
        super().__init__()
        self.cut_at = cut_at
        self.mode = mode
        self.scope = trio.CancelScope()
        self.cut = trio.Event()
        self._calls = 0

    async def submit(self, batch: TickBatch) -> None:
        self._calls += 1
        if self._calls < self.cut_at:
            await super().submit(batch)
            return
        if self.mode == "blocked":
            self.cut.set()
            await trio.sleep_forever()
        await trio.lowlevel.checkpoint()
        self.batches.append(batch)
        self.scope.cancel()
        self.cut.set()


# ------------------------------------------------------------------ fixtures


@pytest.fixture
def admin() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def key(admin: redis.Redis) -> Iterator[str]:
    name = f"test:feed:{uuid.uuid4().hex}"
    yield name
    admin.delete(name)


@pytest.fixture
def client_name() -> str:
    return f"test-feed-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def streams(
    aio_loop: trio_asyncio.TrioEventLoop, config: Config, client_name: str
) -> AsyncIterator[RedisStreams]:
    """The consumer side's adapter."""
    async with trio.open_nursery() as nursery:
        yield await nursery.start(
            RedisStreams(config.redis, REDIS_URL, client_name=client_name).run
        )
        nursery.cancel_scope.cancel()


@pytest.fixture
async def publisher(
    aio_loop: trio_asyncio.TrioEventLoop, config: Config
) -> AsyncIterator[RedisStreams]:
    """The ticker service's adapter (its own connections)."""
    async with trio.open_nursery() as nursery:
        yield await nursery.start(RedisStreams(config.redis, REDIS_URL).run)
        nursery.cancel_scope.cancel()


async def publish(
    publisher: RedisStreams, key: str, entries: Sequence[Sequence[dict[str, object]]]
) -> None:
    for ticks in entries:
        await publisher.add(key, {"ticks": dumps(list(ticks))})


def make_feed(streams, sink, key: str, *, batch: int = 4) -> RedisStreamFeed:
    return RedisStreamFeed(
        streams,
        sink,
        stream=key,
        group="g",
        consumer="node-1",
        batch=batch,
        clock=clock,
    )


async def run_until(feed: RedisStreamFeed, sink: RecordingSink, n_ticks: int) -> None:
    """Run ``feed`` until ``sink`` holds ``n_ticks`` ticks, then cancel it."""
    async with trio.open_nursery() as nursery:
        await nursery.start(feed.run)
        await sink.wait_ticks(n_ticks)
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------ against Redis


@pytest.mark.integration
async def test_feed_delivers_every_entry_in_order_and_acks_it(
    streams: RedisStreams, publisher: RedisStreams, key: str
) -> None:
    """Each entry becomes one redis batch of its ticks, in stream order; nothing stays pending."""
    entries = make_entries(20)
    with trio.fail_after(15):
        await publish(publisher, key, entries)
        sink = RecordingSink()
        feed = make_feed(streams, sink, key, batch=7)
        await run_until(feed, sink, 60)
        assert sink.ticks == parsed(entries)
        assert [len(b.ticks) for b in sink.batches] == [3] * 20
        assert {(b.source, b.received_ms) for b in sink.batches} == {("redis", NOW)}
        stats = feed.statistics()
        assert (stats.entries, stats.batches, stats.ticks, stats.acked) == (20, 20, 60, 20)
        assert await streams.pending(key, "g") == 0


@pytest.mark.integration
async def test_invalid_ticks_are_counted_and_valid_ones_of_the_entry_applied(
    streams: RedisStreams, publisher: RedisStreams, key: str
) -> None:
    """An entry's invalid ticks are counted by reason; its valid ticks still go to the sink."""
    good = [wire_tick(1), wire_tick(2), wire_tick(3)]
    mixed = [
        good[0],
        {**wire_tick(9), "symbol": "bad symbol"},
        {**wire_tick(9), "ts": NOW - 2 * 86_400_000},
        good[1],
    ]
    all_bad = [{**wire_tick(9), "ltp": "-1"}, {**wire_tick(9), "extra": 1}]
    with trio.fail_after(15):
        await publish(publisher, key, [mixed, all_bad, [good[2]]])
        sink = RecordingSink()
        feed = make_feed(streams, sink, key)
        await run_until(feed, sink, 3)
        assert sink.ticks == parsed([good])
        assert [len(b.ticks) for b in sink.batches] == [2, 1]
        stats = feed.statistics()
        assert dict(stats.invalid) == {
            "bad_symbol": 1,
            "too_old": 1,
            "not_positive": 1,
            "unknown_field": 1,
        }
        assert (stats.entries, stats.ticks) == (3, 3)
        assert await streams.pending(key, "g") == 0


@pytest.mark.integration
async def test_poison_entries_are_acked_counted_and_skipped(
    streams: RedisStreams, publisher: RedisStreams, key: str
) -> None:
    """Entries with no usable ticks field are acked (never re-read) and counted by reason."""
    with trio.fail_after(15):
        await publisher.add(key, {"ticks": b"{not json"})
        await publisher.add(key, {"other": b"[]"})
        await publisher.add(key, {"ticks": b'{"ticks": []}'})
        await publish(publisher, key, [[wire_tick(1)]])
        sink = RecordingSink()
        feed = make_feed(streams, sink, key)
        await run_until(feed, sink, 1)
        assert sink.ticks == parsed([[wire_tick(1)]])
        assert dict(feed.statistics().poison) == {
            "bad_json": 1,
            "missing_ticks": 1,
            "bad_batch": 1,
        }
        assert await streams.pending(key, "g") == 0

        # A restarted feed does not see them again.
        again = RecordingSink()
        restarted = make_feed(streams, again, key)
        await publish(publisher, key, [[wire_tick(2)]])
        await run_until(restarted, again, 1)
        assert again.ticks == parsed([[wire_tick(2)]])
        assert dict(restarted.statistics().poison) == {}


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["blocked", "taken"])
@pytest.mark.parametrize("cut_at", [1, 3, 4, 5, 12, 25])
async def test_restart_after_cancel_applies_each_entry_exactly_once(
    streams: RedisStreams, publisher: RedisStreams, key: str, cut_at: int, mode: str
) -> None:
    """A feed cancelled mid-stream, then a new one with the same consumer: no loss, no duplicate.

    The cut lands either while ``submit`` is blocked (the batch is not taken) or right after
    a ``submit`` returned (the batch is taken; its ack must still happen), at the start, middle
    and end of a read of 4 entries and at the last entry.
    """
    entries = make_entries(25, per_entry=2)
    expected = parsed(entries)
    with trio.fail_after(20):
        await publish(publisher, key, entries)
        first = CuttingSink(cut_at, mode)
        async with trio.open_nursery() as nursery:

            async def run_first() -> None:
                with first.scope:
                    await make_feed(streams, first, key).run()

            nursery.start_soon(run_first)
            await first.cut.wait()
            first.scope.cancel()
        taken = cut_at if mode == "taken" else cut_at - 1
        assert first.ticks == expected[: 2 * taken]

        second = RecordingSink()
        if taken < len(entries):
            await run_until(make_feed(streams, second, key), second, len(expected) - 2 * taken)
        assert first.ticks + second.ticks == expected
        assert await streams.pending(key, "g") == 0


@pytest.mark.integration
async def test_random_cancellations_never_lose_or_duplicate_entries(
    streams: RedisStreams, publisher: RedisStreams, key: str
) -> None:
    """Feeds cancelled after random lifetimes, while entries keep arriving, apply each once.

    Lifetimes are random up to 4 ms; after a run that applied nothing the next one may live
    twice as long, so a loaded machine (where one round trip to Redis takes longer than
    4 ms) still makes progress instead of cancelling every feed before its first ack.
    """
    rng = random.Random(20260105)
    entries = make_entries(120, per_entry=2)
    expected = parsed(entries)
    sink = RecordingSink()
    restarts = 0
    with trio.fail_after(60):
        for chunk in range(0, 120, 10):
            await publish(publisher, key, entries[chunk : chunk + 10])
            target = 2 * (chunk + 10)
            stretch = 1.0
            while len(sink.ticks) < target:
                restarts += 1
                before = len(sink.ticks)
                with trio.move_on_after(rng.uniform(0.0, 0.004) * stretch):
                    await make_feed(streams, sink, key, batch=rng.randint(1, 5)).run()
                assert len(sink.ticks) <= target
                stretch = 1.0 if len(sink.ticks) > before else stretch * 2
    assert sink.ticks == expected
    assert restarts > 24
    assert await streams.pending(key, "g") == 0


@pytest.mark.integration
async def test_feed_resumes_after_its_connection_is_killed(
    streams: RedisStreams,
    publisher: RedisStreams,
    admin: redis.Redis,
    key: str,
    client_name: str,
) -> None:
    """CLIENT KILL on the feed's connections: it reconnects and applies every entry once."""
    before, after = make_entries(5), make_entries(5, start=100)
    with trio.fail_after(20):
        sink = RecordingSink()
        feed = make_feed(streams, sink, key)
        async with trio.open_nursery() as nursery:
            await nursery.start(feed.run)
            await publish(publisher, key, before)
            await sink.wait_ticks(15)
            # Polling: the state lives in Redis, there is no event to wait on.
            while not any(  # noqa: ASYNC110
                c.get("name") == client_name and c.get("cmd") == "xreadgroup"
                for c in admin.client_list()
            ):
                await trio.sleep(0.01)
            for c in admin.client_list():
                if c.get("name") == client_name:
                    admin.client_kill_filter(_id=c["id"])
            await publish(publisher, key, after)
            await sink.wait_ticks(30)
            nursery.cancel_scope.cancel()
        assert sink.ticks == parsed(before + after)
        assert streams.statistics().reconnects >= 1
        assert await streams.pending(key, "g") == 0


# ------------------------------------------------------------------ ack failures (fake Redis)


@dataclass
class FakeStreams:
    """An in-memory consumer group of one consumer, with XACK failing on demand."""

    entries: list[StreamEntry]
    failing_acks: int = 0
    delivered: int = 0
    pending: set[str] = field(default_factory=set)
    ack_calls: list[list[str]] = field(default_factory=list)

    async def ensure_group(self, stream: str, group: str, *, start_id: str = "0") -> bool:
        await trio.lowlevel.checkpoint()
        return False

    def reader(self, stream: str, group: str, consumer: str) -> FakeReader:
        return FakeReader(self)

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        await trio.lowlevel.checkpoint()
        self.ack_calls.append(list(ids))
        if self.failing_acks:
            self.failing_acks -= 1
            raise StreamUnavailable("ConnectionError")
        done = len(self.pending & set(ids))
        self.pending -= set(ids)
        return done


class FakeReader:
    def __init__(self, streams: FakeStreams) -> None:
        self._streams = streams
        self._backlog = True

    async def read(self, *, count: int, block_ms: int | None) -> list[StreamEntry]:
        s = self._streams
        if self._backlog:
            self._backlog = False
            backlog = [e for e in s.entries[: s.delivered] if e.id in s.pending]
            if backlog:
                return backlog[:count]
        new = s.entries[s.delivered : s.delivered + count]
        if not new:
            await trio.sleep_forever()
        s.delivered += len(new)
        s.pending |= {e.id for e in new}
        await trio.lowlevel.checkpoint()
        return new


def fake_entries(n: int) -> list[StreamEntry]:
    return [
        StreamEntry(f"{i + 1}-0", {"ticks": dumps(ticks)})
        for i, ticks in enumerate(make_entries(n, per_entry=1))
    ]


async def test_failed_ack_is_retried_before_the_next_read() -> None:
    """An applied entry whose ack fails is acked again before anything else is read."""
    fake = FakeStreams(fake_entries(3), failing_acks=1)
    sink = RecordingSink()
    feed = make_feed(fake, sink, "s", batch=1)
    with trio.fail_after(5):
        await run_until(feed, sink, 3)
    assert fake.ack_calls[:2] == [["1-0"], ["1-0"]]
    assert sink.ticks == parsed(make_entries(3, per_entry=1))
    stats = feed.statistics()
    assert (stats.ack_failures, stats.acked) == (1, 3)


async def test_ack_failing_past_retry_stops_the_feed_and_its_next_run_acks_first() -> None:
    """When acks keep failing the feed raises; run again, it acks first and re-applies nothing."""
    fake = FakeStreams(fake_entries(2), failing_acks=2)
    sink = RecordingSink()
    feed = make_feed(fake, sink, "s", batch=1)
    with trio.fail_after(5):
        with pytest.raises(StreamUnavailable):
            await feed.run()
        assert [t.ts for t in sink.ticks] == [NOW]
        assert fake.pending == {"1-0"}
        # The supervisor restarts the same feed object: the kept id is acked before reading,
        # so the backlog read no longer holds it.
        await run_until(feed, sink, 2)
    assert sink.ticks == parsed(make_entries(2, per_entry=1))
    assert fake.ack_calls[2] == ["1-0"]
    assert fake.pending == set()


async def test_batch_below_one_is_refused() -> None:
    """A feed needs to read at least one entry at a time."""
    with pytest.raises(ValueError, match="batch"):
        make_feed(FakeStreams([]), RecordingSink(), "s", batch=0)
