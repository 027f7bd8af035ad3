"""PostgreSQL adapter: the only module that talks to asyncpg (an asyncio library).

The engine runs inside ``trio_asyncio.open_loop()``. The pool is on the trio side: a
FIFO ``trio.Semaphore`` of its size admits units in arrival order, and a checked-out
asyncpg connection (an idle one, or a new one) is handed to the unit. The unit itself —
maybe a transaction, its statements — is ONE asyncio coroutine called once through
``aio_as_trio``. asyncpg's own pool costs eight more asyncio callbacks per unit (its
acquire and release are coroutines with their own queue), each a trio task switch here:
half the adapter's CPU per unit (1.23 → 0.63 ms in a loop of one-row queries).

Cancel safety: a trio cancellation arrives inside the unit as ``asyncio.CancelledError``;
asyncpg's transaction rolls back and it asks the server to cancel the statement; a
connection whose unit did not end normally (or with a statement error, after which the
session is clean) is closed rather than reused, so no connection is ever left "idle in
transaction" or mid-protocol.

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
IDLE_LIFETIME: Final = 300.0  # seconds an idle connection beyond pool_min is kept (as asyncpg)
IDLE_CHECK_INTERVAL: Final = 30.0  # seconds between two looks for such connections
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


class Store:
    """An asyncpg pool driven from trio.

    Start it with ``await nursery.start(store.run)``; it is ready when started.
    """

    def __init__(self, config: DatabaseConfig, dsn: str) -> None:
        self._config = config
        self._dsn = dsn
        # Admission in arrival order, one slot per connection the pool may hold: a unit
        # holding a slot takes an idle connection or opens one, so the pool never holds
        # more than ``_max_size`` (idle + in use).
        self._slots: trio.Semaphore | None = None
        # (connection, trio time it went idle); LIFO: the warmest connection is taken
        # first, so the ones idle longest sink to the bottom, where the reaper looks.
        self._idle: list[tuple[asyncpg.Connection, float]] = []
        self._in_use = 0
        self._max_size = 0
        self._waiting = 0

    # ------------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: trio.TaskStatus[Store] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the pool (retrying while the server is not up), serve, close on exit.

        Cancellation: closing is shielded and bounded by ``CLOSE_TIMEOUT``; past it
        the remaining connections are terminated.
        """
        await self.open()
        try:
            task_status.started(self)
            while True:
                await trio.sleep(IDLE_CHECK_INTERVAL)
                await self.close_idle()
        finally:
            with trio.CancelScope(shield=True):
                await self.close()

    async def open(self) -> None:
        """Size the pool and open its first ``pool_min`` connections, retrying connection
        failures with tenacity.

        Raises:
            DatabaseUnavailable: when every attempt failed.
        """
        try:
            opened = await trio_asyncio.aio_as_trio(self._first_connections)()
        except tenacity.RetryError as exc:
            last = exc.last_attempt.exception()
            raise DatabaseUnavailable(type(last).__name__) from None
        now = trio.current_time()
        self._idle = [(conn, now) for conn in opened]
        self._slots = trio.Semaphore(self._max_size)

    async def _first_connections(self) -> list[asyncpg.Connection]:
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self._config.connect_retries),
            wait=tenacity.wait_exponential(multiplier=0.2, max=5),
            retry=tenacity.retry_if_exception_type(_CONNECTION_ERRORS + (TimeoutError,)),
            before_sleep=self._log_retry,
        )
        async for attempt in retrying:
            with attempt:
                first = await self._connect(self._config.connect_timeout)
                opened = [first]
                try:
                    max_connections = int(await first.fetchval("SHOW max_connections"))
                    self._max_size = effective_pool_size(self._config, max_connections)
                    while len(opened) < min(self._config.pool_min, self._max_size):
                        opened.append(await self._connect(self._config.connect_timeout))
                except BaseException:
                    for conn in opened:
                        conn.terminate()
                    raise
                LOG.info(
                    "database pool open: max_size=%d (server max_connections=%d)",
                    self._max_size,
                    max_connections,
                )
                return opened
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _connect(self, within: float) -> asyncpg.Connection:
        statement_ms = str(int(self._config.statement_timeout * SECONDS_TO_MS))
        return await asyncpg.connect(
            self._dsn,
            timeout=within,  # asyncio side: asyncpg's own connect timeout
            command_timeout=self._config.statement_timeout + 1,
            server_settings={
                "statement_timeout": statement_ms,
                "idle_in_transaction_session_timeout": statement_ms,
                "application_name": "tickstream",
            },
        )

    @staticmethod
    def _log_retry(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        LOG.warning(
            "database connect attempt %d failed (%s); retrying",
            state.attempt_number,
            type(exc).__name__,
        )

    async def close(self) -> None:
        """Close the idle connections; terminate them if closing takes longer than
        ``CLOSE_TIMEOUT``. Connections still in use are terminated when they come back."""
        idle, self._slots = [conn for conn, _ in self._idle], None
        self._idle = []
        with trio.move_on_after(CLOSE_TIMEOUT) as scope:
            while idle:
                await trio_asyncio.aio_as_trio(idle[-1].close)()
                idle.pop()
        if scope.cancelled_caught:
            LOG.warning("database pool did not close in %.1fs; terminating", CLOSE_TIMEOUT)
            for conn in idle:
                conn.terminate()

    async def close_idle(self, lifetime: float | None = None) -> int:
        """Close the connections idle for ``lifetime`` (``IDLE_LIFETIME``) seconds or more,
        keeping ``pool_min`` open (after a burst the pool shrinks back, as asyncpg's pool
        did); return how many. ``run`` calls it every ``IDLE_CHECK_INTERVAL`` seconds.

        Each close holds a pool slot, so the pool never exceeds its size meanwhile; with
        every slot in use nothing is idle anyway.
        """
        lifetime = IDLE_LIFETIME if lifetime is None else lifetime
        closed = 0
        while (
            self._slots is not None
            and len(self._idle) > self._config.pool_min
            and trio.current_time() - self._idle[0][1] >= lifetime
        ):
            slots = self._slots
            try:
                slots.acquire_nowait()
            except trio.WouldBlock:
                break
            conn, _ = self._idle.pop(0)
            self._in_use += 1  # counted as the pool's until it is gone
            try:
                await self._end(conn)
            finally:
                self._in_use -= 1
                slots.release()
            closed += 1
        return closed

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

        Cancellation: safe at any point; the transaction rolls back, the server's
        statement is cancelled and the connection is closed instead of going back to
        the pool.
        """
        slots = self._slots
        if slots is None:
            raise DatabaseUnavailable("pool not open")
        try:
            # A free slot is taken without a checkpoint: the unit yields to the scheduler
            # anyway while its statement runs (one task switch less per unit).
            slots.acquire_nowait()
        except trio.WouldBlock:
            self._waiting += 1
            try:
                with trio.move_on_after(self._config.acquire_timeout) as waited:
                    await slots.acquire()
            finally:
                self._waiting -= 1
            if waited.cancelled_caught:
                raise DatabaseUnavailable("pool exhausted") from None
        try:
            conn = await self._checkout()
            try:
                result: T = await trio_asyncio.aio_as_trio(self._in_unit)(conn, unit, transaction)
            except StoreError:
                self._checkin(conn)  # the statement failed; the session is clean
                raise
            except BaseException:
                # Cancelled or broken mid-unit: asyncpg has asked the server to cancel the
                # statement; a graceful close waits for that (a terminated socket would
                # leave the statement running until statement_timeout), bounded.
                try:
                    with trio.CancelScope(shield=True):
                        await self._end(conn)
                finally:
                    self._in_use -= 1
                raise
            self._checkin(conn)
            return result
        finally:
            slots.release()

    async def _checkout(self) -> asyncpg.Connection:
        if self._slots is None:
            raise DatabaseUnavailable("pool closed")
        while self._idle:
            conn, _ = self._idle.pop()
            if not conn.is_closed():
                self._in_use += 1
                return conn
            # The server ended it while it was idle (restart, pg_terminate_backend).
        self._in_use += 1
        timeout = min(self._config.connect_timeout, self._config.acquire_timeout)
        try:
            return await trio_asyncio.aio_as_trio(self._connect)(timeout)
        except (*_CONNECTION_ERRORS, TimeoutError) as exc:
            self._in_use -= 1
            raise DatabaseUnavailable(type(exc).__name__) from None
        except BaseException:
            self._in_use -= 1
            raise

    def _checkin(self, conn: asyncpg.Connection) -> None:
        self._in_use -= 1
        if self._slots is not None and not conn.is_closed() and not conn.is_in_transaction():
            self._idle.append((conn, trio.current_time()))
        else:
            conn.terminate()

    async def _end(self, conn: asyncpg.Connection) -> None:
        try:
            with trio.move_on_after(CLOSE_TIMEOUT):
                await trio_asyncio.aio_as_trio(conn.close)()
        except Exception:  # noqa: BLE001 - closing a broken connection; it is dropped anyway
            LOG.debug("database connection did not close cleanly", exc_info=True)
        finally:
            conn.terminate()

    @staticmethod
    async def _in_unit(conn: asyncpg.Connection, unit: Unit[T], transaction: bool) -> T:
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
        except TimeoutError:
            # asyncpg's command_timeout (statement_timeout + 1 s: the server did not
            # answer even its own timeout); the connection is dropped.
            raise DatabaseUnavailable("timeout") from None

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
        idle = len(self._idle)
        return StoreStatistics(
            idle + self._in_use, self._max_size, idle, self._in_use, self._waiting
        )
