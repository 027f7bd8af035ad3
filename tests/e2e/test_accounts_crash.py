"""SIGKILL of the whole engine in the middle of an order burst, and the rate limit on orders."""

from __future__ import annotations

import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg
import pytest

from tests.e2e.test_accounts import ADMIN, INSTRUMENTS, tick
from tests.kit.db import temporary_database
from tests.kit.server import call, reachable_tempdir, start_server
from tests.kit.tokens import E2E_SECRET, token

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]


def _setup(srv: object) -> None:
    assert call(srv, "PUT", "/v1/admin/instruments", {"instruments": INSTRUMENTS}, ADMIN)[0] == 200  # type: ignore[arg-type]
    assert call(srv, "POST", "/v1/admin/accounts", {"id": "K1", "name": "k"}, ADMIN)[0] == 201  # type: ignore[arg-type]
    tick(srv, "SBIN", "800", bid="799.95", ask="800.05")  # type: ignore[arg-type]


def test_sigkill_mid_burst_loses_no_acknowledged_order() -> None:
    """Every order acknowledged before a SIGKILL is in the ledger after the restart, and the
    rebuilt position is exactly the fold of the ledger's fills."""
    trader = token("trade", accounts=["K1"])
    env_extra: dict[str, str] = {"TICKSTREAM_JWT_SECRET": E2E_SECRET}
    with reachable_tempdir() as workdir, temporary_database() as dsn:
        env_extra["TICKSTREAM_DATABASE_URL"] = dsn
        srv = start_server(workdir, env_extra)
        srv.wait_healthy()
        _setup(srv)
        acked: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()

        def client(n: int) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    status, body = call(
                        srv,
                        "POST",
                        "/v1/accounts/K1/orders",
                        {"symbol": "SBIN", "side": "buy", "quantity": str(n), "type": "market"},
                        trader,
                    )
                except OSError:
                    return
                if status == 201:
                    with lock:
                        acked.append(str(body["id"]))

        threads = [threading.Thread(target=client, args=(n,)) for n in range(1, 9)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait(timeout=10)
        stop.set()
        for t in threads:
            t.join(timeout=20)
        assert len(acked) > 10

        again = start_server(workdir, env_extra, port=None)
        try:
            again.wait_healthy()
            with psycopg.connect(dsn) as conn:
                in_ledger = {
                    str(r[0])
                    for r in conn.execute(
                        "SELECT id FROM orders WHERE account_id = 'K1'"
                    ).fetchall()
                }
                total = conn.execute(
                    "SELECT sum(quantity) FROM fills WHERE account_id = 'K1'"
                ).fetchone()
            assert set(acked) <= in_ledger
            assert total is not None
            positions = call(again, "GET", "/v1/accounts/K1/positions", tok=trader)[1]["items"]
            assert positions[0]["net_quantity"] == str(int(total[0]))  # type: ignore[index]
        finally:
            assert again.stop(signal.SIGTERM) == 0


def test_order_rate_limit_answers_429_with_retry_after() -> None:
    """Past the per-account bucket, orders are refused with 429 and a Retry-After header."""
    with reachable_tempdir() as workdir, temporary_database() as dsn:
        cfg = Path(workdir) / "limits.toml"
        calendar = Path.cwd() / "config" / "calendar"
        cfg.write_text(
            f'[market]\ncalendar_dir = "{calendar}"\n\n[accounts]\n'
            "orders_per_second_account = 0.5\norders_burst_account = 3\n"
        )
        srv = start_server(
            workdir,
            {
                "TICKSTREAM_DATABASE_URL": dsn,
                "TICKSTREAM_JWT_SECRET": E2E_SECRET,
                "TICKSTREAM_CONFIG": str(cfg),
            },
        )
        try:
            srv.wait_healthy()
            _setup(srv)
            trader = token("trade", accounts=["K1"])
            body = {"symbol": "SBIN", "side": "buy", "quantity": "1", "type": "market"}
            statuses = [
                call(srv, "POST", "/v1/accounts/K1/orders", body, trader)[0] for _ in range(4)
            ]
            assert statuses == [201, 201, 201, 429]
            req = urllib.request.Request(
                srv.base + "/v1/accounts/K1/orders",
                data=b'{"symbol": "SBIN", "side": "buy", "quantity": "1", "type": "market"}',
                method="POST",
                headers={"Authorization": f"Bearer {trader}", "Content-Type": "application/json"},
            )
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(req, timeout=10)
            assert info.value.code == 429
            assert 1 <= int(info.value.headers["Retry-After"]) <= 2
            _, text = srv.get("/metrics")
            assert b'tickstream_rate_limited_total{limit="orders"}' in text
        finally:
            assert srv.stop(signal.SIGTERM) == 0
