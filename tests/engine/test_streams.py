"""The Redis Streams adapter against the real Redis: groups, reads, acks, pending, reconnects."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import trio
import trio_asyncio

import engine.streams
from engine.config import Config, with_overrides
from engine.streams import RedisStreams, StreamError, StreamUnavailable
from tests.kit.db import REDIS_URL

pytestmark = pytest.mark.integration


@pytest.fixture
def admin() -> Iterator[redis.Redis]:
    """A plain (sync) client for setting up, inspecting and killing connections."""
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def key(admin: redis.Redis) -> Iterator[str]:
    """A stream key of this test only, deleted afterwards."""
    name = f"test:streams:{uuid.uuid4().hex}"
    yield name
    admin.delete(name)


@pytest.fixture
def client_name() -> str:
    """The CLIENT SETNAME of this test's adapter, to find its connections."""
    return f"test-streams-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def streams(
    aio_loop: trio_asyncio.TrioEventLoop, config: Config, client_name: str
) -> AsyncIterator[RedisStreams]:
    """A running adapter on the test Redis."""
    async with trio.open_nursery() as nursery:
        adapter = await nursery.start(
            RedisStreams(config.redis, REDIS_URL, client_name=client_name).run
        )
        yield adapter
        nursery.cancel_scope.cancel()


async def wait_for_blocked_read(admin: redis.Redis, client_name: str) -> None:
    """Wait (polling Redis) until a connection of ``client_name`` is blocked in XREADGROUP."""
    # Polling: the state lives in Redis, there is no event to wait on.
    while not any(  # noqa: ASYNC110
        c.get("name") == client_name and c.get("cmd") == "xreadgroup" for c in admin.client_list()
    ):
        await trio.sleep(0.01)


def kill_connections(admin: redis.Redis, client_name: str) -> int:
    """CLIENT KILL every connection named ``client_name``; return how many."""
    ids = [c["id"] for c in admin.client_list() if c.get("name") == client_name]
    for client_id in ids:
        admin.client_kill_filter(_id=client_id)
    return len(ids)


async def test_group_creation_is_idempotent_and_creates_the_stream(
    streams: RedisStreams, admin: redis.Redis, key: str
) -> None:
    """The first ensure_group creates group and stream; later calls leave them as they are."""
    with trio.fail_after(10):
        assert await streams.ensure_group(key, "g") is True
        assert await streams.ensure_group(key, "g") is False
        assert admin.exists(key) == 1
        assert [g["name"] for g in admin.xinfo_groups(key)] == [b"g"]


async def test_read_returns_entries_in_order_and_ack_clears_them(
    streams: RedisStreams, key: str
) -> None:
    """Entries come back in stream order with their fields; acked ones leave the pending list."""
    with trio.fail_after(10):
        await streams.ensure_group(key, "g")
        ids = [await streams.add(key, {"ticks": f"[{i}]"}) for i in range(3)]
        reader = streams.reader(key, "g", "c1")
        entries = await reader.read(count=10, block_ms=100)
        assert [e.id for e in entries] == ids
        assert [e.fields for e in entries] == [{"ticks": f"[{i}]".encode()} for i in range(3)]
        assert await streams.pending(key, "g") == 3
        assert await streams.ack(key, "g", ids[:2]) == 2
        assert await streams.ack(key, "g", ids[:2]) == 0
        assert await streams.pending(key, "g") == 1
        assert await reader.read(count=10, block_ms=50) == []
        assert streams.statistics().acked == 2


async def test_new_reader_gets_its_consumers_pending_entries_first(
    streams: RedisStreams, key: str
) -> None:
    """After a restart, a consumer re-reads what it was given and did not ack, then new entries."""
    with trio.fail_after(10):
        await streams.ensure_group(key, "g")
        ids = [await streams.add(key, {"n": str(i)}) for i in range(5)]
        first = streams.reader(key, "g", "c1")
        assert [e.id for e in await first.read(count=3, block_ms=None)] == ids[:3]
        await streams.ack(key, "g", ids[:1])

        restarted = streams.reader(key, "g", "c1")
        assert restarted.in_backlog
        assert [e.id for e in await restarted.read(count=10, block_ms=None)] == ids[1:3]
        assert [e.id for e in await restarted.read(count=10, block_ms=None)] == ids[3:]
        assert not restarted.in_backlog
        # Another consumer of the group never sees c1's entries.
        assert await streams.reader(key, "g", "c2").read(count=10, block_ms=None) == []


async def test_pending_backlog_is_paged_by_count(streams: RedisStreams, key: str) -> None:
    """A backlog larger than ``count`` comes back in pages, each entry once, then new ones."""
    with trio.fail_after(10):
        await streams.ensure_group(key, "g")
        ids = [await streams.add(key, {"n": str(i)}) for i in range(5)]
        await streams.reader(key, "g", "c1").read(count=5, block_ms=None)
        later = await streams.add(key, {"n": "5"})
        reader = streams.reader(key, "g", "c1")
        pages = [[e.id for e in await reader.read(count=2, block_ms=None)] for _ in range(4)]
        assert pages == [ids[:2], ids[2:4], ids[4:], [later]]


async def test_entry_deleted_while_pending_reads_without_fields(
    streams: RedisStreams, admin: redis.Redis, key: str
) -> None:
    """A pending entry trimmed or deleted from the stream comes back with ``fields`` None."""
    with trio.fail_after(10):
        await streams.ensure_group(key, "g")
        ids = [await streams.add(key, {"n": str(i)}) for i in range(2)]
        await streams.reader(key, "g", "c1").read(count=5, block_ms=None)
        admin.xdel(key, ids[0])
        entries = await streams.reader(key, "g", "c1").read(count=5, block_ms=None)
        assert [(e.id, e.fields) for e in entries] == [(ids[0], None), (ids[1], {"n": b"1"})]


async def test_cancelled_read_rewinds_the_reader_to_its_backlog(
    streams: RedisStreams, key: str
) -> None:
    """A read cancelled while blocked may have been served, so the next read starts at 0."""
    with trio.fail_after(10):
        await streams.ensure_group(key, "g")
        reader = streams.reader(key, "g", "c1")
        assert await reader.read(count=1, block_ms=None) == []
        assert not reader.in_backlog
        with trio.move_on_after(0.1):
            await reader.read(count=1, block_ms=5000)
        assert reader.in_backlog


async def test_read_whose_reply_was_lost_returns_its_entries_on_retry(
    streams: RedisStreams, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis served an XREADGROUP > but the reply never arrived: the retry re-reads the backlog."""
    real_read = engine.streams._xreadgroup
    lost: list[object] = []

    async def lose_first_served_reply(client: object, *args: object) -> object:
        entries = await real_read(client, *args)  # type: ignore[arg-type]
        if entries and not lost:
            lost.append(entries)
            raise redis.exceptions.ConnectionError("connection lost before the reply")
        return entries

    monkeypatch.setattr(engine.streams, "_xreadgroup", lose_first_served_reply)
    with trio.fail_after(10):
        await streams.ensure_group(key, "g")
        ids = [await streams.add(key, {"n": str(i)}) for i in range(3)]
        reader = streams.reader(key, "g", "c1")
        assert [e.id for e in await reader.read(count=10, block_ms=100)] == ids
        assert lost and streams.statistics().reconnects == 1


async def test_add_trims_the_stream_to_about_maxlen(
    streams: RedisStreams, admin: redis.Redis, key: str
) -> None:
    """XADD with maxlen keeps the stream bounded (approximately, as ``MAXLEN ~``)."""
    with trio.fail_after(20):
        for i in range(300):
            await streams.add(key, {"n": str(i)}, maxlen=10)
        assert 10 <= admin.xlen(key) < 300
        assert streams.statistics().added == 300


async def test_blocked_read_reconnects_after_client_kill(
    streams: RedisStreams, admin: redis.Redis, key: str, client_name: str
) -> None:
    """A read whose connection Redis kills is retried on a new connection and still delivers."""
    with trio.fail_after(15):
        await streams.ensure_group(key, "g")
        reader = streams.reader(key, "g", "c1")
        got = []

        async def read_one() -> None:
            got.extend(await reader.read(count=1, block_ms=5000))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_one)
            await wait_for_blocked_read(admin, client_name)
            assert kill_connections(admin, client_name) >= 1
            entry_id = admin.xadd(key, {"n": "after"}).decode()
        assert [e.id for e in got] == [entry_id]
        assert streams.statistics().reconnects >= 1


async def test_wrong_type_key_raises_stream_error(
    streams: RedisStreams, admin: redis.Redis, key: str
) -> None:
    """A Redis refusal that is not a lost connection is translated, not retried."""
    with trio.fail_after(10):
        admin.set(key, "not a stream")
        with pytest.raises(StreamError) as info:
            await streams.ensure_group(key, "g")
        assert info.value.details["reason"].startswith("WRONGTYPE")
        assert streams.statistics().reconnects == 0


async def test_unreachable_redis_fails_start_with_bus_unavailable(
    aio_loop: trio_asyncio.TrioEventLoop, config: Config
) -> None:
    """With nothing listening, start-up fails after its bounded retries with bus_unavailable."""
    cfg = with_overrides(config, redis={"connect_retries": 2, "connect_timeout": 0.3})
    adapter = RedisStreams(cfg.redis, "redis://127.0.0.1:1/0")
    with trio.fail_after(15):
        with pytest.raises(StreamUnavailable) as info:
            await adapter.run()
        assert info.value.code == "bus_unavailable"
        assert adapter.statistics().reconnects == 1
        assert not await adapter.ping()
        with pytest.raises(StreamUnavailable):
            await adapter.add("x", {"a": "b"})
