"""One stream connection on a mock clock: rate limit, heartbeat, idle, batching, send timeout."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import trio
import trio.testing

from actors.connection.actor import StreamConnection
from actors.connection.hub import StreamHub
from engine.config import Config, with_overrides
from engine.context import Engine
from protocol import parse_stream_frame
from tests.kit.fakes import FakeClock, fake_engine

STREAM = {
    "frames_per_second": 1.0,
    "frames_burst": 3,
    "heartbeat_interval": 1.0,
    "idle_timeout": 3.0,
    "batch_max": 2,
    "send_timeout": 5.0,
    "max_subscriptions": 2,
    "queue_capacity": 8,
}


class Socket:
    """What the connection writes and how it was closed."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closes: list[tuple[int, str]] = []
        self.stall = False
        self.closed_at = 0.0

    async def send(self, text: str) -> None:
        if self.stall:
            await trio.sleep_forever()
        self.sent.append(text)
        await trio.lowlevel.checkpoint()

    def close(self, code: int, reason: str) -> None:
        self.closes.append((code, reason))
        self.closed_at = trio.current_time()

    def messages(self) -> list[Any]:
        out: list[Any] = []
        for text in self.sent:
            decoded = orjson.loads(text)
            out.extend(decoded if isinstance(decoded, list) else [decoded])
        return out


@pytest.fixture
def engine(config: Config) -> Engine:
    """An engine with tight stream limits over fakes."""
    return fake_engine(with_overrides(config, stream=STREAM), FakeClock(1_764_000_000_000))


@pytest.fixture
def socket() -> Socket:
    """A recording socket."""
    return Socket()


@pytest.fixture
def conn(engine: Engine, hub: StreamHub, socket: Socket) -> StreamConnection:
    """A connection over the recording socket."""
    return StreamConnection(engine, hub, socket.send, socket.close)


async def test_inbound_frames_past_the_bucket_close_4429(
    autojump_clock: trio.testing.MockClock, conn: StreamConnection, socket: Socket
) -> None:
    """A burst of 3 is allowed, the 4th frame closes; the bucket refills with time."""
    assert [conn.inbound() for _ in range(3)] == [True, True, True]
    await trio.sleep(2)
    assert [conn.inbound() for _ in range(3)] == [True, True, False]
    assert socket.closes == [(4429, "too many frames")]


async def test_heartbeat_on_outbound_silence_and_close_on_inbound_silence(
    autojump_clock: trio.testing.MockClock, conn: StreamConnection, socket: Socket
) -> None:
    """Heartbeats each second of silence; 1000 after three seconds without a client frame."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run_sender)
        nursery.start_soon(conn.watch_idle)
        await trio.sleep(2.5)
        conn.inbound()  # the client speaks: the idle clock restarts
        await trio.sleep(5)
        nursery.cancel_scope.cancel()
    assert socket.closes == [(1000, "idle timeout")]
    assert socket.closed_at == pytest.approx(5.5)
    beats = socket.messages()
    assert len(beats) >= 4 and {m["op"] for m in beats} == {"heartbeat"}


async def test_sender_batches_what_is_queued_into_arrays_of_at_most_batch_max(
    autojump_clock: trio.testing.MockClock, conn: StreamConnection, socket: Socket
) -> None:
    """Three queued replies: one frame of two and one single object, in order."""
    for n in range(3):
        conn.reply({"op": "pong", "id": n})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run_sender)
        with trio.fail_after(1):
            await conn.flush()
        nursery.cancel_scope.cancel()
    assert [orjson.loads(t) for t in socket.sent] == [
        [{"op": "pong", "id": 0}, {"op": "pong", "id": 1}],
        {"op": "pong", "id": 2},
    ]
    assert conn.sent_frames == 2 and conn.sent_messages == 3


async def test_a_write_that_does_not_finish_in_time_closes_4008(
    autojump_clock: trio.testing.MockClock, conn: StreamConnection, socket: Socket
) -> None:
    """The client stopped reading: after ``send_timeout`` the connection is a slow consumer."""
    socket.stall = True
    conn.reply({"op": "pong"})
    with trio.fail_after(10):
        await conn.run_sender()
    assert socket.closes == [(4008, "slow consumer")]
    assert trio.current_time() == pytest.approx(5.0)


async def test_requests_ping_subscribe_twice_cap_and_unsubscribe(
    conn: StreamConnection, socket: Socket, engine: Engine
) -> None:
    """pong; a second subscribe to a channel is a conflict; past the cap rate_limited."""
    frames = [
        {"op": "ping", "id": 1},
        {"op": "subscribe", "id": 2, "channel": "quotes:A"},
        {"op": "subscribe", "id": 3, "channel": "quotes:A"},
        {"op": "subscribe", "id": 4, "channel": "quotes:B"},
        {"op": "subscribe", "id": 5, "channel": "quotes:C"},
        {"op": "unsubscribe", "id": 6, "channel": "quotes:B"},
        {"op": "subscribe", "id": 7, "channel": "quotes:C"},
    ]
    for frame in frames:
        await conn.request(parse_stream_frame(frame))
    answers = {m["id"]: m for m in (orjson.loads(f) for f in await conn.outbox.take_all())}
    assert answers[1] == {"op": "pong", "id": 1}
    assert answers[2]["op"] == "subscribed"
    assert (answers[3]["op"], answers[3]["code"]) == ("error", "conflict")
    assert (answers[5]["op"], answers[5]["code"]) == ("error", "rate_limited")
    assert answers[6] == {"op": "unsubscribed", "id": 6, "channel": "quotes:B"}
    assert answers[7]["op"] == "subscribed"
    assert sorted(conn.subscriptions) == ["quotes:A", "quotes:C"]
    gauge = engine.metrics.registry.get_sample_value("tickstream_stream_subscriptions")
    assert gauge == 2
    conn.shutdown()
    assert engine.metrics.registry.get_sample_value("tickstream_stream_subscriptions") == 0
    with pytest.raises(trio.EndOfChannel):
        await conn.outbox.take_all()
