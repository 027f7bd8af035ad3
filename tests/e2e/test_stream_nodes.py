"""Two engine processes on loopback sharing PostgreSQL and Redis: cross-node fan-out.

Ticks and orders go to node 1; a subscriber connected to node 2 receives the quotes
and the account's order events (with their ledger seq), and resumes on node 2 after
events it missed on node 1.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import trio

from loadtest.stream_client import StreamSocket, connect
from tests.kit.db import REDIS_URL, temporary_database
from tests.kit.server import ServerProcess, call, reachable_tempdir, start_server
from tests.kit.stream import subscribed
from tests.kit.tokens import E2E_SECRET, token

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

ADMIN = token("admin")
READER = token("read", accounts=["ACC1"])


@pytest.fixture(scope="module")
def nodes() -> Iterator[tuple[ServerProcess, ServerProcess, str]]:
    """Two nodes on one database and one Redis; a symbol of this run's own."""
    symbol = f"X{uuid.uuid4().hex[:8].upper()}"
    with reachable_tempdir() as workdir, temporary_database() as dsn:
        env = {
            "TICKSTREAM_DATABASE_URL": dsn,
            "TICKSTREAM_JWT_SECRET": E2E_SECRET,
            "TICKSTREAM_REDIS_URL": REDIS_URL,
        }
        first = start_server(workdir, env)
        try:
            first.wait_healthy()
            instruments = {
                "instruments": [
                    {"symbol": symbol, "kind": "equity", "lot_size": 1, "tick_size": "0.05"}
                ]
            }
            assert call(first, "PUT", "/v1/admin/instruments", instruments, ADMIN)[0] == 200
            body = {"id": "ACC1", "name": "one"}
            assert call(first, "POST", "/v1/admin/accounts", body, ADMIN)[0] == 201
            second = start_server(workdir, env)
            try:
                second.wait_healthy()
                yield first, second, symbol
            finally:
                second.stop(signal.SIGTERM)
        finally:
            first.stop(signal.SIGTERM)


def tick(node: ServerProcess, symbol: str, ltp: str) -> None:
    """One tick into ``node``'s HTTP ingest."""
    t = {"symbol": symbol, "ltp": ltp, "bid": ltp, "ask": ltp, "ts": int(time.time() * 1000)}
    assert call(node, "POST", "/v1/ingest/ticks", {"ticks": [t]}, token("feed:publish"))[0] == 200


def buy(node: ServerProcess, symbol: str) -> None:
    """A filled market buy on ACC1 through ``node``."""
    body = {"symbol": symbol, "side": "buy", "quantity": 1, "type": "market"}
    trader = token("trade", accounts=["ACC1"])
    status, order = call(node, "POST", "/v1/accounts/ACC1/orders", body, trader)
    assert status == 201, order


async def events(sock: StreamSocket, channel: str, count: int) -> list[dict[str, Any]]:
    """The next ``count`` events of ``channel``."""
    out: list[dict[str, Any]] = []
    with trio.fail_after(15):
        while len(out) < count:
            message = await sock.receive()
            if message.get("op") == "event" and message["channel"] == channel:
                out.append(message)
    return out


async def test_a_subscriber_on_node_2_receives_what_node_1_produces(
    nodes: tuple[ServerProcess, ServerProcess, str],
) -> None:
    """Quotes and sequenced order events cross nodes through Redis; resume works on node 2."""
    first, second, symbol = nodes
    url = f"ws://127.0.0.1:{second.port}/ws/v1/stream"
    orders = "account:ACC1:orders"
    async with connect(url, READER) as sock:
        assert (await subscribed(sock, f"quotes:{symbol}"))["op"] == "subscribed"
        start = (await subscribed(sock, orders))["seq"]
        tick(first, symbol, "101.5")
        quote = (await events(sock, f"quotes:{symbol}", 1))[0]
        assert quote["data"]["ltp"] == "101.5" and quote["data"]["symbol"] == symbol
        buy(first, symbol)
        got = await events(sock, orders, 3)
        assert [e["seq"] for e in got] == [start + 1, start + 2, start + 3]
        assert [e["data"]["kind"] for e in got] == ["order", "fill", "order"]
    buy(first, symbol)
    async with connect(url, READER) as sock:
        resumed = await subscribed(sock, orders, since=start + 3, epoch="ledger")
        assert resumed["recovered"] is True
        replay = await events(sock, orders, 3)
        assert [e["seq"] for e in replay] == [start + 4, start + 5, start + 6]
