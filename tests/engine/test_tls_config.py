"""TLS settings reach the clients: PostgreSQL sslmode, Redis over TLS, the hypercorn listener."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio_asyncio
import trustme

from engine.bus import BusUnavailable, InProcessBus, RedisBus
from engine.config import Config, load_config, with_overrides
from engine.context import Engine
from engine.gateway._server import hypercorn_config
from engine.metrics import Metrics
from engine.store import DatabaseUnavailable, Store
from tests.kit.server import free_port


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
    assert not plain.include_server_header
    tls = with_overrides(
        config, server={"certfile": "/c.pem", "keyfile": "/k.pem", "ssl_handshake_timeout": 3.0}
    )
    cfg = hypercorn_config(Engine(config=tls, store=None, bus=InProcessBus(), metrics=Metrics()))  # type: ignore[arg-type]
    assert cfg.ssl_enabled and (cfg.certfile, cfg.keyfile) == ("/c.pem", "/k.pem")
    assert cfg.ssl_handshake_timeout == 3.0


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A redis-server speaking only TLS, with a CA and certificate made here."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    (tmp_path / "cert.pem").write_bytes(b"".join(p.bytes() for p in cert.cert_chain_pems))
    port = free_port()
    proc = subprocess.Popen(  # noqa: S603 - a test server
        [
            shutil.which("redis-server") or "redis-server",
            *("--port", "0", "--tls-port", str(port), "--save", "", "--appendonly", "no"),
            *("--tls-cert-file", str(tmp_path / "cert.pem")),
            *("--tls-key-file", str(tmp_path / "key.pem")),
            *("--tls-ca-cert-file", str(tmp_path / "ca.pem")),
            *("--tls-auth-clients", "no", "--dir", str(tmp_path)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.05)
        yield port, tmp_path / "ca.pem"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
async def test_redis_bus_over_tls_with_a_private_ca(
    aio_loop: trio_asyncio.TrioEventLoop, tls_redis: tuple[int, Path], tmp_path: Path
) -> None:
    """rediss:// plus redis.ssl_ca_certs reaches Redis over TLS; another CA is refused."""
    port, ca = tls_redis
    path = tmp_path / "c.toml"
    path.write_text(f'[redis]\nssl_ca_certs = "{ca}"\nconnect_retries = 1\nconnect_timeout = 2.0\n')
    cfg = load_config(path, env={"TICKSTREAM_REDIS_URL": f"rediss://127.0.0.1:{port}/0"})
    assert cfg.redis.url is not None
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            bus = await nursery.start(RedisBus(cfg.redis, cfg.redis.url.reveal()).run)
            sub = bus.subscribe("quotes:*")
            await bus.publish("quotes:TLS", b"over tls")
            assert (await sub.receive()).data == b"over tls"
            assert await bus.ping()
            nursery.cancel_scope.cancel()
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    path.write_text(
        f'[redis]\nssl_ca_certs = "{other}"\nconnect_retries = 1\nconnect_timeout = 2.0\n'
    )
    wrong = load_config(path, env={"TICKSTREAM_REDIS_URL": f"rediss://127.0.0.1:{port}/0"})
    assert wrong.redis.url is not None
    with trio.fail_after(20), pytest.raises(BusUnavailable):
        await RedisBus(wrong.redis, wrong.redis.url.reveal()).run()
