"""Throw-away PostgreSQL databases on the real server the integration tests use."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from engine import migrate

ADMIN_DSN: Final = os.environ.get(
    "TICKSTREAM_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL: Final = os.environ.get("TICKSTREAM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def dsn_for(database: str) -> str:
    """Return the admin DSN pointed at ``database``."""
    parts = urlsplit(ADMIN_DSN)
    return urlunsplit(parts._replace(path="/" + database))


@contextmanager
def temporary_database(prefix: str = "tickstream_test") -> Iterator[str]:
    """Create an empty database, yield its DSN, drop it (with any session left) afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield dsn_for(name)
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def last_queries(dsn: str) -> list[str]:
    """Return the last statement of every idle session of ``dsn``'s database."""
    database = urlsplit(dsn).path.lstrip("/")
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT query FROM pg_stat_activity WHERE datname = %s AND state = 'idle'"
            " AND pid <> pg_backend_pid() ORDER BY pid",
            (database,),
        ).fetchall()
    return [str(row[0]) for row in rows]


@contextmanager
def ledger_database(
    prefix: str = "tickstream_test", accounts: Iterable[str] = ("ACC1", "ACC2")
) -> Iterator[str]:
    """Create a database migrated to head with ``accounts``, yield its DSN, drop it afterwards.

    Each account is named after its id.
    """
    with temporary_database(prefix) as dsn:
        migrate.upgrade(dsn)
        for account in accounts:
            run_sql(
                dsn,
                "INSERT INTO accounts (id, name, created_ts) VALUES (%s, %s, 0)",
                account,
                account,
            )
        yield dsn


def run_sql(dsn: str, query: str, *args: object) -> list[tuple[object, ...]]:
    """Run one statement on ``dsn`` (autocommit); return its rows (none for a command)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(query, args or None)
        return cur.fetchall() if cur.description else []


def sessions_in_state(dsn: str, state: str) -> int:
    """Return how many server sessions of ``dsn``'s database are in ``state``."""
    database = urlsplit(dsn).path.lstrip("/")
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND state = %s",
            (database, state),
        ).fetchone()
    assert row is not None
    return int(row[0])
