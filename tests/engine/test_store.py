"""The asyncpg adapter on the real PostgreSQL: units of work, cancel safety, 503s."""

from __future__ import annotations

import pytest
import trio
import trio.lowlevel
import trio_asyncio

import engine.store as store_module
from engine.config import Config, with_overrides
from engine.store import (
    Connection,
    DatabaseUnavailable,
    Store,
    StoreError,
    effective_pool_size,
)
from tests.kit.db import last_queries, run_sql, sessions_in_state

pytestmark = pytest.mark.integration


async def test_units_run_in_a_transaction_and_roll_back_on_error(
    aio_loop: trio_asyncio.TrioEventLoop, migrated_dsn: str, config: Config
) -> None:
    """A failing statement rolls back the whole unit; a good one commits."""
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            store = await nursery.start(Store(config.database, migrated_dsn).run)

            async def good(conn: Connection) -> None:
                await conn.execute(
                    "INSERT INTO accounts (id, name, created_ts) VALUES ($1, $2, $3)",
                    "STORE1",
                    "one",
                    1,
                )

            async def bad(conn: Connection) -> None:
                await conn.execute(
                    "INSERT INTO accounts (id, name, created_ts) VALUES ($1, $2, $3)",
                    "STORE2",
                    "two",
                    1,
                )
                await conn.execute(
                    "INSERT INTO accounts (id, name, created_ts) VALUES ($1, $2, $3)",
                    "STORE1",
                    "dup",
                    1,
                )

            await store.run_unit(good)
            with pytest.raises(StoreError) as info:
                await store.run_unit(bad)
            assert info.value.is_unique_violation
            assert info.value.sqlstate == "23505"
            rows = await store.fetch(
                "SELECT id FROM accounts WHERE id = ANY($1::text[]) ORDER BY id",
                ["STORE1", "STORE2"],
            )
            assert [r["id"] for r in rows] == ["STORE1"]
            assert (
                await store.fetchval("SELECT name FROM accounts WHERE id = $1", "STORE1") == "one"
            )
            assert (
                await store.fetchrow("SELECT count(*) AS n FROM accounts WHERE id = $1", "STORE1")
            )["n"] == 1
            assert await store.execute("DELETE FROM accounts WHERE id = $1", "STORE1") == "DELETE 1"
            assert await store.ping()
            nursery.cancel_scope.cancel()


async def test_cancelled_units_leave_no_connection_in_transaction(
    aio_loop: trio_asyncio.TrioEventLoop, migrated_dsn: str, config: Config
) -> None:
    """Cancelling units mid-transaction rolls them back; the pool stays clean and closes."""
    store = Store(config.database, migrated_dsn)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            started = 0
            all_started = trio.Event()

            async def slow(conn: Connection) -> None:
                nonlocal started
                await conn.execute(
                    "INSERT INTO audit_log (ts, sub, cmd, ok) VALUES ($1, $2, $3, $4)",
                    1,
                    "cancel-test",
                    "x",
                    True,
                )
                started += 1
                if started == 4:
                    all_started.set()
                await conn.execute("SELECT pg_sleep(10)")

            for _round in range(3):
                async with trio.open_nursery() as units:
                    for _ in range(4):
                        units.start_soon(store.run_unit, slow)
                    await all_started.wait()
                    units.cancel_scope.cancel()
                started = 0
                all_started = trio.Event()
            # Every cancelled insert was rolled back and no session is stuck.
            n = await store.fetchval("SELECT count(*) FROM audit_log WHERE sub = $1", "cancel-test")
            assert n == 0
            await trio.sleep(0.2)
            assert sessions_in_state(migrated_dsn, "idle in transaction") == 0
            assert sessions_in_state(migrated_dsn, "idle in transaction (aborted)") == 0
            stats = store.statistics()
            assert stats.in_use == 0 and stats.waiting == 0
            nursery.cancel_scope.cancel()
    # run() closed the pool when cancelled: no session of ours remains.
    await trio.sleep(0.2)
    assert sessions_in_state(migrated_dsn, "idle") == 0
    assert store.statistics().size == 0


async def test_a_released_connection_gets_no_reset_round_trip(
    aio_loop: trio_asyncio.TrioEventLoop, migrated_dsn: str, config: Config
) -> None:
    """Releasing a connection sends nothing more: its last statement stays the unit's.

    asyncpg's default reset would leave ``RESET ALL`` (and more) as the session's last
    query: a round trip per unit.
    """
    cfg = with_overrides(config, database={"pool_max": 1, "pool_min": 1})
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            store = await nursery.start(Store(cfg.database, migrated_dsn).run)

            async def probe(conn: Connection) -> int:
                return int(await conn.fetchval("SELECT 4242"))

            assert await store.run_unit(probe, transaction=False) == 4242
            await trio.sleep(0.1)
            assert last_queries(migrated_dsn) == ["SELECT 4242"]
            nursery.cancel_scope.cancel()


async def test_exhausted_pool_answers_database_unavailable(
    aio_loop: trio_asyncio.TrioEventLoop, migrated_dsn: str, config: Config
) -> None:
    """With every connection busy, a unit fails fast with 503 database_unavailable."""
    cfg = with_overrides(config, database={"pool_max": 1, "pool_min": 1, "acquire_timeout": 0.3})
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            store = await nursery.start(Store(cfg.database, migrated_dsn).run)
            hold = trio.Event()

            async def hog(conn: Connection) -> None:
                hold.set()
                await conn.execute("SELECT pg_sleep(2)")

            nursery.start_soon(store.run_unit, hog)
            await hold.wait()
            with pytest.raises(DatabaseUnavailable) as info:
                await store.fetchval("SELECT 1")
            assert info.value.http_status == 503
            assert info.value.to_body()["error"]["code"] == "database_unavailable"  # type: ignore[index]
            assert info.value.details == {"reason": "pool exhausted"}
            nursery.cancel_scope.cancel()


async def test_statement_timeout_cancels_long_statements(
    aio_loop: trio_asyncio.TrioEventLoop, migrated_dsn: str, config: Config
) -> None:
    """The configured statement_timeout stops a runaway query (SQLSTATE 57014)."""
    cfg = with_overrides(config, database={"statement_timeout": 0.2})
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            store = await nursery.start(Store(cfg.database, migrated_dsn).run)
            with pytest.raises(StoreError) as info:
                await store.fetchval("SELECT pg_sleep(3)")
            assert info.value.sqlstate == "57014"
            nursery.cancel_scope.cancel()


async def test_unreachable_database_fails_start_after_retries(
    aio_loop: trio_asyncio.TrioEventLoop, config: Config
) -> None:
    """A server that never answers: start-up gives up with database_unavailable."""
    cfg = with_overrides(config, database={"connect_retries": 2, "connect_timeout": 0.5})
    store = Store(cfg.database, "postgresql://postgres@127.0.0.1:1/none")
    with trio.fail_after(20), pytest.raises(DatabaseUnavailable):
        await store.open()
    with pytest.raises(DatabaseUnavailable):
        await store.fetchval("SELECT 1")
    assert not await store.ping()


def test_pool_is_sized_for_the_servers_max_connections(config: Config) -> None:
    """The pool takes at most its share of max_connections, never more than pool_max."""
    db = with_overrides(config, database={"pool_max": 40, "pool_share_of_max_connections": 0.5})
    assert effective_pool_size(db.database, 100) == 40
    assert effective_pool_size(db.database, 45) == 20
    assert effective_pool_size(db.database, 5) == 1


async def test_a_sustained_overload_never_starves_a_waiter(
    aio_loop: trio_asyncio.TrioEventLoop, migrated_dsn: str, config: Config
) -> None:
    """Sixty clients looping units on a pool of two: every unit gets a connection in time.

    Served in arrival order each unit waits about clients / throughput (~0.3 s here), far
    under the 1.5 s acquire timeout. asyncpg's own acquire lets a newcomer take a connection
    released for an older waiter (who then queues again at the back), so the store admits
    units through a FIFO trio semaphore first; loadtest/bench_orders.py at 200 clients is
    where the starvation showed (503 database_unavailable) before it.
    """
    cfg = with_overrides(config, database={"pool_max": 2, "pool_min": 2, "acquire_timeout": 1.5})
    served = failed = 0

    async def unit(conn: Connection) -> None:
        await conn.execute("SELECT pg_sleep(0.01)")

    async def client(until: float) -> None:
        nonlocal served, failed
        while trio.current_time() < until:
            try:
                await store.run_unit(unit, transaction=False)
                served += 1
            except DatabaseUnavailable:
                failed += 1

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            store = await nursery.start(Store(cfg.database, migrated_dsn).run)
            until = trio.current_time() + 4.0
            async with trio.open_nursery() as clients:
                for _ in range(60):
                    clients.start_soon(client, until)
            assert store.statistics().waiting == 0
            nursery.cancel_scope.cancel()
    assert served > 100
    assert failed == 0


async def test_a_connection_ended_by_the_server_while_idle_is_replaced(
    aio_loop: trio_asyncio.TrioEventLoop, migrated_dsn: str, config: Config
) -> None:
    """The server ends every idle session of the pool (a restart, pg_terminate_backend):
    the next units get fresh connections instead of failing on a dead one."""
    cfg = with_overrides(config, database={"pool_max": 2, "pool_min": 2})
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            store = await nursery.start(Store(cfg.database, migrated_dsn).run)
            before = {await store.fetchval("SELECT pg_backend_pid()") for _ in range(4)}
            assert store.statistics().idle == 2
            ended = run_sql(
                migrated_dsn,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = 'tickstream'",
            )
            assert len(ended) == 2
            await trio.sleep(0.2)  # the terminations reach the (idle) connections
            after = {await store.fetchval("SELECT pg_backend_pid()") for _ in range(4)}
            assert after and not after & before
            stats = store.statistics()
            assert stats.size == stats.idle == 1 and stats.in_use == 0
            nursery.cancel_scope.cancel()


async def test_only_a_clean_connection_goes_back_to_the_pool(
    aio_loop: trio_asyncio.TrioEventLoop, migrated_dsn: str, config: Config
) -> None:
    """A statement error leaves the session clean: the connection is reused. A unit that
    failed otherwise (here: cancelled mid-statement) ends its connection."""
    cfg = with_overrides(config, database={"pool_max": 1, "pool_min": 1})
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            store = await nursery.start(Store(cfg.database, migrated_dsn).run)
            pid = await store.fetchval("SELECT pg_backend_pid()")
            with pytest.raises(StoreError):
                await store.fetchval("SELECT 1 / 0")
            assert await store.fetchval("SELECT pg_backend_pid()") == pid
            with trio.move_on_after(0.3) as cancelled:
                await store.fetchval("SELECT pg_sleep(5)")
            assert cancelled.cancelled_caught
            assert store.statistics().size == 0
            assert await store.fetchval("SELECT pg_backend_pid()") != pid
            assert store.statistics().size == 1
            await trio.sleep(0.2)
            assert sessions_in_state(migrated_dsn, "active") == 0  # the sleep was ended
            nursery.cancel_scope.cancel()


async def test_the_pool_never_holds_more_than_its_size(
    aio_loop: trio_asyncio.TrioEventLoop, migrated_dsn: str, config: Config
) -> None:
    """Twenty concurrent units on a pool of three open three connections, no more."""
    cfg = with_overrides(config, database={"pool_max": 3, "pool_min": 0, "acquire_timeout": 5})
    peak = 0

    async def unit(conn: Connection) -> None:
        nonlocal peak
        peak = max(peak, store.statistics().in_use)
        await conn.execute("SELECT pg_sleep(0.05)")

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            store = await nursery.start(Store(cfg.database, migrated_dsn).run)
            assert store.statistics().size == 1  # the first connection sizes the pool
            async with trio.open_nursery() as units:
                for _ in range(20):
                    units.start_soon(store.run_unit, unit)
            stats = store.statistics()
            assert peak == 3 and stats.size == stats.idle == 3 and stats.max_size == 3
            nursery.cancel_scope.cancel()


async def test_connections_idle_past_their_lifetime_are_closed_down_to_pool_min(
    aio_loop: trio_asyncio.TrioEventLoop,
    migrated_dsn: str,
    config: Config,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a burst opened three connections, the pool shrinks back to pool_min once they
    have been idle for the lifetime: young ones stay, and the server sees them go."""
    monkeypatch.setattr(store_module, "IDLE_LIFETIME", 0.3)
    monkeypatch.setattr(store_module, "IDLE_CHECK_INTERVAL", 0.1)
    cfg = with_overrides(config, database={"pool_max": 3, "pool_min": 1, "acquire_timeout": 5})

    async def unit(conn: Connection) -> None:
        await conn.execute("SELECT pg_sleep(0.05)")

    def sessions() -> int:
        rows = run_sql(
            migrated_dsn,
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = 'tickstream'",
        )
        count = rows[0][0]
        assert isinstance(count, int)
        return count

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            store = Store(cfg.database, migrated_dsn)
            async with trio.open_nursery() as units:
                await nursery.start(store.run)
                for _ in range(3):
                    units.start_soon(store.run_unit, unit)
            assert store.statistics().idle == 3 and sessions() == 3
            assert await store.close_idle(lifetime=60) == 0  # none idle that long
            await trio.sleep(1.0)  # the reaper (every 0.1 s) closes what idled 0.3 s
            stats = store.statistics()
            assert stats.size == stats.idle == 1 and stats.in_use == 0
            assert sessions() == 1
            nursery.cancel_scope.cancel()
