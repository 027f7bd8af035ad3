"""Fixtures shared by every test: real databases, the trio-asyncio loop, config."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import trio_asyncio

from engine import migrate
from engine.config import Config, Secret, load_config, with_overrides
from tests.kit.db import temporary_database

TEST_JWT_SECRET = "test-secret-" + "x" * 40


@pytest.fixture(scope="session")
def migrated_dsn() -> Iterator[str]:
    """A database migrated to head, shared by the session (tests use their own rows)."""
    with temporary_database() as dsn:
        migrate.upgrade(dsn)
        yield dsn


@pytest.fixture
def empty_dsn() -> Iterator[str]:
    """A fresh, empty database for one test."""
    with temporary_database() as dsn:
        yield dsn


@pytest.fixture
async def aio_loop() -> AsyncIterator[trio_asyncio.TrioEventLoop]:
    """The trio-asyncio loop the asyncpg and redis adapters run on."""
    async with trio_asyncio.open_loop() as loop:
        yield loop


@pytest.fixture
def config() -> Config:
    """The default configuration with a test JWT secret and short timeouts."""
    base = load_config(env={})
    return with_overrides(
        base,
        auth={"jwt_secret": Secret(TEST_JWT_SECRET)},
        database={"acquire_timeout": 1.0, "connect_retries": 2, "pool_max": 5},
        redis={"connect_retries": 2, "connect_timeout": 1.0},
    )
