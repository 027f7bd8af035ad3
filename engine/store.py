"""PostgreSQL adapter: the only module that talks to asyncpg (an asyncio library).

The engine runs inside ``trio_asyncio.open_loop()``. Every unit of work — acquire a
connection, maybe open a transaction, run statements, release — is ONE asyncio
coroutine called once through ``aio_as_trio``. Wrapping ``pool.acquire()`` or
``conn.transaction()`` as separate trio context managers is not cancel-safe: a trio
cancellation between them leaves connections "idle in transaction" and
``pool.close()`` then hangs shutdown. Inside one coroutine, a trio cancellation
arrives as ``asyncio.CancelledError`` and asyncpg's own context managers roll back
and release the connection.

All SQL is parameterised (``$1``, ``$2`` …); identifiers never come from input.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

import asyncpg
import tenacity
import trio
import trio_asyncio

from protocol import ErrorCode, ProtocolError

from .config import DatabaseConfig

LOG = logging.getLogger(__name__)

T = TypeVar("T")

CLOSE_TIMEOUT: Final = 5.0  # seconds to close the pool on shutdown before terminating it
RESERVED_CONNECTIONS: Final = 5  # left for admin tools and migrations
SECONDS_TO_MS: Final = 1000

# Connection-level failures: the server is down, restarting or unreachable.
_CONNECTION_ERRORS: Final = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.AdminShutdownError,
)


class Connection(Protocol):
    """The part of a database connection a unit of work may use (asyncio side)."""

    async def execute(self, query: str, *args: object) -> str: ...
    async def executemany(self, command: str, args: Sequence[Sequence[object]]) -> None: ...
    async def fetch(self, query: str, *args: object) -> list[Any]: ...
    async def fetchrow(self, query: str, *args: object) -> Any: ...
    async def fetchval(self, query: str, *args: object) -> Any: ...


Unit = Callable[[Connection], Awaitable[T]]


class DatabaseUnavailable(ProtocolError):
    """The database cannot be reached, or no pooled connection came in time (503)."""

    def __init__(self, reason: str) -> None:
        super().__init__(ErrorCode.DATABASE_UNAVAILABLE, "database unavailable", {"reason": reason})


class StoreError(Exception):
    """A statement failed in the database; ``sqlstate`` says why (e.g. 23505 unique)."""

    def __init__(self, sqlstate: str, message: str, constraint: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.constraint = constraint

    @property
    def is_unique_violation(self) -> bool:
        """Whether a unique constraint refused the write."""
        return self.sqlstate == "23505"


@dataclass(frozen=True, slots=True)
class StoreStatistics:
    """Pool usage at one instant."""

    size: int
    max_size: int
    idle: int
    in_use: int
    waiting: int


def effective_pool_size(config: DatabaseConfig, max_connections: int) -> int:
    """Return the pool's max size: the configured max, capped by the server's capacity.

    The pool never takes more than ``pool_share_of_max_connections`` of what the
    server allows (minus a few reserved for admin tools), so several engine nodes
    and a migration can run beside each other.
    """
    share = int((max_connections - RESERVED_CONNECTIONS) * config.pool_share_of_max_connections)
    return max(1, min(config.pool_max, share))


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset hook: nothing to undo, so no reset query on release.

    asyncpg's default reset sends ``RESET ALL; UNLISTEN *; CLOSE ALL;`` (and more) after
    every unit: one more round trip to the server for each order. The engine's
    connections never change session state (no ``SET``, ``LISTEN``, advisory lock,
    cursor or temporary table; the settings come from ``server_settings`` at connect),
    and asyncpg still rolls back a transaction left open before this hook runs.
    """


class Store:
    """An asyncpg pool driven from trio.

    Start it with ``await nursery.start(store.run)``; it is ready when started.
    """

    def __init__(self, config: DatabaseConfig, dsn: str) -> None:
        self._config = config
        self._dsn = dsn
        self._pool: asyncpg.Pool | None = None
        # Admission in arrival order: asyncpg's pool does not serve waiters FIFO, so
        # under a burst some units starved past acquire_timeout while later ones ran.
        # A trio semaphore (FIFO) of the pool's size queues them fairly on the trio side.
        self._slots: trio.Semaphore | None = None
        self._max_size = 0
        self._waiting = 0

    # ------------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: trio.TaskStatus[Store] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the pool (retrying while the server is not up), serve, close on exit.

        Cancellation: closing is shielded and bounded by ``CLOSE_TIMEOUT``; past it
        the pool is terminated.
        """
        await self.open()
        try:
            task_status.started(self)
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await self.close()

    async def open(self) -> None:
        """Create the pool, retrying connection failures with tenacity.

        Raises:
            DatabaseUnavailable: when every attempt failed.
        """
        try:
            self._pool = await trio_asyncio.aio_as_trio(self._open_pool)()
            self._slots = trio.Semaphore(self._max_size)
        except tenacity.RetryError as exc:
            last = exc.last_attempt.exception()
            raise DatabaseUnavailable(type(last).__name__) from None

    async def _open_pool(self) -> asyncpg.Pool:
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self._config.connect_retries),
            wait=tenacity.wait_exponential(multiplier=0.2, max=5),
            retry=tenacity.retry_if_exception_type(_CONNECTION_ERRORS + (TimeoutError,)),
            before_sleep=self._log_retry,
        )
        async for attempt in retrying:
            with attempt:
                conn = await asyncpg.connect(self._dsn, timeout=self._config.connect_timeout)
                try:
                    max_connections = int(await conn.fetchval("SHOW max_connections"))
                finally:
                    await conn.close()
                self._max_size = effective_pool_size(self._config, max_connections)
                statement_ms = str(int(self._config.statement_timeout * SECONDS_TO_MS))
                pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=min(self._config.pool_min, self._max_size),
                    max_size=self._max_size,
                    timeout=self._config.connect_timeout,
                    command_timeout=self._config.statement_timeout + 1,
                    server_settings={
                        "statement_timeout": statement_ms,
                        "idle_in_transaction_session_timeout": statement_ms,
                        "application_name": "tickstream",
                    },
                    reset=_keep_session,
                )
                LOG.info(
                    "database pool open: max_size=%d (server max_connections=%d)",
                    self._max_size,
                    max_connections,
                )
                return pool
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    @staticmethod
    def _log_retry(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        LOG.warning(
            "database connect attempt %d failed (%s); retrying",
            state.attempt_number,
            type(exc).__name__,
        )

    async def close(self) -> None:
        """Close the pool; terminate it if closing takes longer than ``CLOSE_TIMEOUT``."""
        pool, self._pool, self._slots = self._pool, None, None
        if pool is None:
            return
        with trio.move_on_after(CLOSE_TIMEOUT) as scope:
            await trio_asyncio.aio_as_trio(pool.close)()
        if scope.cancelled_caught:
            LOG.warning("database pool did not close in %.1fs; terminating", CLOSE_TIMEOUT)
            pool.terminate()

    # ------------------------------------------------------------------ units of work

    async def run_unit(self, unit: Unit[T], *, transaction: bool = True) -> T:
        """Run ``unit(conn)`` on a pooled connection, in a transaction by default.

        ``unit`` is an asyncio coroutine function (it runs on the asyncio side of
        trio-asyncio); it receives the connection and must only use it.

        Returns:
            Whatever ``unit`` returns.

        Raises:
            DatabaseUnavailable: no connection within ``acquire_timeout``, or the
                server went away; nothing was committed.
            StoreError: a statement failed; the transaction was rolled back.

        Cancellation: safe at any point; the connection is rolled back and
        returned to the pool.
        """
        pool, slots = self._pool, self._slots
        if pool is None or slots is None:
            raise DatabaseUnavailable("pool not open")
        self._waiting += 1
        try:
            with trio.move_on_after(self._config.acquire_timeout) as waited:
                await slots.acquire()
        finally:
            self._waiting -= 1
        if waited.cancelled_caught:
            raise DatabaseUnavailable("pool exhausted")
        try:
            result: T = await trio_asyncio.aio_as_trio(self._run_unit)(pool, unit, transaction)
        finally:
            slots.release()
        return result

    async def _run_unit(self, pool: asyncpg.Pool, unit: Unit[T], transaction: bool) -> T:
        try:
            conn = await pool.acquire(timeout=self._config.acquire_timeout)
        except TimeoutError:
            raise DatabaseUnavailable("pool exhausted") from None
        except _CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(type(exc).__name__) from None
        try:
            if transaction:
                async with conn.transaction():
                    return await unit(conn)
            return await unit(conn)
        except asyncpg.PostgresError as exc:
            if isinstance(exc, _CONNECTION_ERRORS):
                raise DatabaseUnavailable(type(exc).__name__) from None
            raise StoreError(
                exc.sqlstate, type(exc).__name__, getattr(exc, "constraint_name", None)
            ) from None
        except _CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(type(exc).__name__) from None
        finally:
            await pool.release(conn)

    async def fetch(self, query: str, *args: object) -> list[Any]:
        """Run one parameterised query and return its rows."""

        async def unit(conn: Connection) -> list[Any]:
            return await conn.fetch(query, *args)

        return await self.run_unit(unit, transaction=False)

    async def fetchrow(self, query: str, *args: object) -> Any:
        """Run one parameterised query and return its first row (or None)."""

        async def unit(conn: Connection) -> Any:
            return await conn.fetchrow(query, *args)

        return await self.run_unit(unit, transaction=False)

    async def fetchval(self, query: str, *args: object) -> Any:
        """Run one parameterised query and return the first column of its first row."""

        async def unit(conn: Connection) -> Any:
            return await conn.fetchval(query, *args)

        return await self.run_unit(unit, transaction=False)

    async def execute(self, query: str, *args: object) -> str:
        """Run one parameterised statement in its own transaction; return its status."""

        async def unit(conn: Connection) -> str:
            return await conn.execute(query, *args)

        return await self.run_unit(unit)

    async def ping(self) -> bool:
        """Return whether the database answers a trivial query right now."""
        try:
            return bool(await self.fetchval("SELECT 1") == 1)
        except (DatabaseUnavailable, StoreError):
            return False

    def statistics(self) -> StoreStatistics:
        """Return the pool's usage (for /metrics and the control channel)."""
        pool = self._pool
        if pool is None:
            return StoreStatistics(0, self._max_size, 0, 0, self._waiting)
        size = pool.get_size()
        idle = pool.get_idle_size()
        return StoreStatistics(size, pool.get_max_size(), idle, size - idle, self._waiting)
