"""TLS settings reach the clients: PostgreSQL sslmode through asyncpg, the hypercorn listener."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio_asyncio

from engine.bus import InProcessBus
from engine.config import Config, load_config, with_overrides
from engine.context import Engine
from engine.gateway._server import hypercorn_config
from engine.metrics import Metrics
from engine.store import DatabaseUnavailable, Store


def _with_sslmode(tmp_path: Path, dsn: str, mode: str) -> Config:
    path = tmp_path / "c.toml"
    path.write_text(f'[database]\nsslmode = "{mode}"\nconnect_retries = 1\n')
    return load_config(path, env={"TICKSTREAM_DATABASE_URL": dsn})


@pytest.mark.integration
async def test_sslmode_is_passed_to_asyncpg(
    aio_loop: trio_asyncio.TrioEventLoop, migrated_dsn: str, tmp_path: Path
) -> None:
    """The test server has ssl off: sslmode=require must fail to connect, prefer must not."""
    required = _with_sslmode(tmp_path, migrated_dsn, "require")
    assert required.database.url is not None
    store = Store(required.database, required.database.url.reveal())
    with pytest.raises(DatabaseUnavailable):
        await store.open()
    preferred = _with_sslmode(tmp_path, migrated_dsn, "prefer")
    assert preferred.database.url is not None
    store = Store(preferred.database, preferred.database.url.reveal())
    await store.open()
    try:
        assert await store.ping()
    finally:
        await store.close()


def test_hypercorn_serves_tls_when_configured(config: Config) -> None:
    """certfile/keyfile and the handshake timeout reach hypercorn; without them, plain http."""
    engine = Engine(config=config, store=None, bus=InProcessBus(), metrics=Metrics())  # type: ignore[arg-type]
    plain = hypercorn_config(engine)
    assert not plain.ssl_enabled and plain.keep_alive_timeout == 5.0 and plain.read_timeout == 30
    tls = with_overrides(
        config, server={"certfile": "/c.pem", "keyfile": "/k.pem", "ssl_handshake_timeout": 3.0}
    )
    cfg = hypercorn_config(Engine(config=tls, store=None, bus=InProcessBus(), metrics=Metrics()))  # type: ignore[arg-type]
    assert cfg.ssl_enabled and (cfg.certfile, cfg.keyfile) == ("/c.pem", "/k.pem")
    assert cfg.ssl_handshake_timeout == 3.0
