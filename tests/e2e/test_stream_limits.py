"""``/ws/v1/stream`` limits end to end, each close code provoked once.

A server with tight stream limits: 4429 (inbound frame rate), 1008 (malformed frames),
1009 (frame too big), 4008 (a client that never reads, while another reader keeps up),
the subscription cap, heartbeat and idle timeout (1000), and drain on SIGTERM (1001).
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from loadtest.stream_client import connect
from tests.kit.server import ServerProcess, call, running_server
from tests.kit.stream import closed_with, stream_url
from tests.kit.tokens import token

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

ADMIN = token("admin")
READER = token("read")
SYMBOLS = [f"EQ{i:03d}" for i in range(200)]
LIMITS = """
[server]
ws_max_frame_bytes = 65536

[market]
calendar_dir = "{calendar}"

[stream]
queue_capacity = 16
# Also the listener's TCP_USER_TIMEOUT: a reader of this test that a loaded machine
# stalls for longer would be aborted too (silently: the kernel sends no reset).
send_timeout = 2.0
max_subscriptions = 1200
frames_per_second = 20.0
frames_burst = 2000
heartbeat_interval = {heartbeat}
idle_timeout = {idle}
"""


def _running(
    *, heartbeat: float = 10.0, idle: float = 25.0
) -> AbstractContextManager[ServerProcess]:
    calendar = Path.cwd() / "config" / "calendar"
    return running_server(config=LIMITS.format(calendar=calendar, heartbeat=heartbeat, idle=idle))


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    """An engine with tight stream limits and 200 equities."""
    with _running() as srv:
        instruments = [
            {"symbol": s, "kind": "equity", "lot_size": 1, "tick_size": "0.05"} for s in SYMBOLS
        ]
        body = {"instruments": instruments}
        assert call(srv, "PUT", "/v1/admin/instruments", body, ADMIN)[0] == 200
        yield srv


def metric(server: ServerProcess, line: str) -> bool:
    """Whether the exposition has a sample line starting with ``line``."""
    return any(row.startswith(line) for row in server.get("/metrics")[1].decode().splitlines())


async def test_inbound_frame_flood_closes_4429(server: ServerProcess) -> None:
    """More frames than the per-connection bucket holds: 4429."""
    async with connect(stream_url(server), READER) as sock:
        with trio.fail_after(10):
            try:
                for _ in range(5000):
                    await sock.send({"op": "ping"})
            except ConnectionClosed:
                pass
        assert await closed_with(sock) == 4429
    assert metric(server, 'tickstream_ws_closes_total{code="4429"}')


async def test_malformed_frames_past_the_budget_close_1008(server: ServerProcess) -> None:
    """Each malformed frame answers ``validation_failed``; past the budget 1008."""
    async with connect(stream_url(server), READER) as sock:
        await sock.ws.send_message("{not json")
        error = await sock.receive()
        assert (error["op"], error["code"]) == ("error", "validation_failed")
        for _ in range(10):
            await sock.ws.send_message(json.dumps({"op": "dance"}))
        assert await closed_with(sock) == 1008


async def test_frame_larger_than_the_limit_closes_1009(server: ServerProcess) -> None:
    """A 100 kB frame against a 64 kB limit: 1009."""
    async with connect(stream_url(server), READER) as sock:
        await sock.ws.send_message(json.dumps({"op": "ping", "pad": "x" * 100_000}))
        assert await closed_with(sock) == 1009


async def test_subscription_cap(server: ServerProcess) -> None:
    """The subscription past ``max_subscriptions`` is refused; the socket stays open."""
    async with connect(stream_url(server), READER) as sock:
        for symbol in SYMBOLS:
            await sock.subscribe(f"quotes:{symbol}")
            for tf in ("1m", "5m", "15m", "1h", "1d"):
                await sock.subscribe(f"candles:{symbol}:{tf}")
        frame_id = await sock.subscribe("quotes:EQ999")
        answer = await sock.until(lambda m: m.get("id") == frame_id)
        assert (answer["op"], answer["code"]) == ("error", "rate_limited")
        frame_id = await sock.send({"op": "unsubscribe", "channel": "candles:EQ000:1m"})
        assert (await sock.until(lambda m: m.get("id") == frame_id))["op"] == "unsubscribed"
        frame_id = await sock.subscribe("quotes:EQ999")
        assert (await sock.until(lambda m: m.get("id") == frame_id))["op"] == "subscribed"


def _flood(server: ServerProcess, rounds: int, start: int) -> None:
    feed = token("feed:publish")
    for r in range(rounds):
        now = int(time.time() * 1000)
        price = f"{100 + (start + r) * 0.05:.2f}"
        ticks = [{"symbol": s, "ltp": price, "ts": now} for s in SYMBOLS]
        assert call(server, "POST", "/v1/ingest/ticks", {"ticks": ticks}, feed)[0] == 200


def stalled_client(server: ServerProcess, channels: list[str]) -> socket.socket:
    """A client that subscribes, then never reads: a tiny receive buffer it leaves full."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    ws = WSConnection(ConnectionType.CLIENT)
    auth = [(b"authorization", f"Bearer {READER}".encode())]
    sock.sendall(ws.send(Request(host="127.0.0.1", target="/ws/v1/stream", extra_headers=auth)))
    while not any(isinstance(e, AcceptConnection) for e in ws.events()):
        ws.receive_data(sock.recv(4096))
    for channel in channels:
        frame = json.dumps({"op": "subscribe", "channel": channel})
        sock.sendall(ws.send(TextMessage(frame)))
    return sock


async def test_never_reading_client_is_closed_4008_and_a_reader_keeps_up(
    server: ServerProcess,
) -> None:
    """A client that never reads is closed with 4008; the reading client misses nothing."""
    channels = [f"quotes:{s}" for s in SYMBOLS]
    stalled = stalled_client(server, channels)
    async with connect(stream_url(server), READER) as reader:
        for channel in channels:
            await reader.subscribe(channel)
        latest: dict[str, str] = {}
        final: list[str] = []
        caught_up = trio.Event()

        async def read_all() -> None:
            while True:
                message = await reader.receive()
                if message.get("op") == "event":
                    latest[message["channel"]] = message["data"]["ltp"]
                    if final and all(latest.get(c) == final[0] for c in channels):
                        caught_up.set()

        async def keep_alive() -> None:
            while True:
                await reader.send({"op": "ping"})
                await trio.sleep(5)

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_all)
                nursery.start_soon(keep_alive)
                rounds = 0
                while not metric(server, 'tickstream_ws_closes_total{code="4008"}'):
                    await trio.to_thread.run_sync(_flood, server, 5, rounds)
                    rounds += 5
                final.append(f"{100 + (rounds - 1) * 0.05:.2f}")
                if all(latest.get(c) == final[0] for c in channels):
                    caught_up.set()  # everything arrived before the final price was known
                await caught_up.wait()
                nursery.cancel_scope.cancel()
        frame_id = await reader.send({"op": "ping"})
        assert (await reader.until(lambda m: m.get("id") == frame_id))["op"] == "pong"
    # The kernel aborted the stalled socket for the server (TCP_USER_TIMEOUT): reading
    # what it had buffered ends in a reset (or an EOF), not in a wait.
    stalled.settimeout(10)
    with contextlib.suppress(ConnectionResetError):
        while stalled.recv(65536):
            pass
    stalled.close()


def test_heartbeat_idle_timeout_and_drain() -> None:
    """Heartbeats on silence, 1000 after the idle timeout, 1001 with queued frames on SIGTERM."""
    with _running(heartbeat=0.5, idle=2.0) as srv:

        async def idle() -> list[dict[str, Any]]:
            seen: list[dict[str, Any]] = []
            async with connect(stream_url(srv), READER) as sock:
                started = time.monotonic()
                with trio.fail_after(10):
                    try:
                        while True:
                            seen.append(await sock.receive())
                    except ConnectionClosed as closed:
                        code = closed.reason.code if closed.reason is not None else None
                assert code == 1000
                assert 1.5 < time.monotonic() - started < 6
            return seen

        beats = trio.run(idle)
        assert len(beats) >= 2 and {b["op"] for b in beats} == {"heartbeat"}

        async def drained() -> int | None:
            async with connect(stream_url(srv), READER) as sock:
                frame_id = await sock.send({"op": "ping"})
                assert (await sock.until(lambda m: m.get("id") == frame_id))["op"] == "pong"
                srv.proc.send_signal(signal.SIGTERM)
                return await closed_with(sock)

        assert trio.run(drained) == 1001
        assert srv.proc.wait(timeout=30) == 0
