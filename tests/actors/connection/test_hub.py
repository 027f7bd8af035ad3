"""The stream hub over an in-process bus: one frame per event, seq, hold-and-release, resume."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import trio
import trio.testing

from actors.account.supervisor import Accounts
from actors.connection.hub import (
    StreamHub,
    Subscriber,
    _conflation_key,
    event_frame,
)
from actors.connection.outbox import Outbox
from actors.connection.snapshots import LOAD_EVENTS, Snapshots
from actors.market.actor import MarketActor
from actors.market.instruments import InstrumentMaster
from engine.calendar import load_calendar
from engine.config import Config, with_overrides
from engine.context import Engine
from engine.store import DatabaseUnavailable
from protocol import ProtocolError, parse_channel
from tests.kit.fakes import FakeClock, fake_engine

NOW_MS = 1_764_000_000_000


class LedgerStore:
    """A store answering the hub's two ledger reads from a list of (seq, payload)."""

    def __init__(self) -> None:
        self.events: list[tuple[int, dict[str, object]]] = []
        self.gate: trio.Event | None = None
        self.reads: list[str] = []
        self.down = False

    async def fetch(self, query: str, *args: Any) -> list[dict[str, Any]]:
        if self.gate is not None:
            await self.gate.wait()
        await trio.lowlevel.checkpoint()
        if self.down:
            raise DatabaseUnavailable("test")
        if query == LOAD_EVENTS:
            self.reads.append("events")
            _, after, upto, limit = args
            rows = [(s, p) for s, p in self.events if after < s <= upto][:limit]
            return [{"seq": s, "payload": orjson.dumps(p).decode()} for s, p in rows]
        self.reads.append("snapshot")
        last = max((s for s, _ in self.events), default=0)
        return [{"last_seq": last, "id": None}]


@pytest.fixture
def store() -> LedgerStore:
    """The fake ledger."""
    return LedgerStore()


@pytest.fixture
def engine(config: Config, store: LedgerStore) -> Engine:
    """An engine over the fake ledger, with a small outbox and retention."""
    cfg = with_overrides(config, stream={"retention": 4, "replay_max": 50})
    return fake_engine(cfg, FakeClock(NOW_MS), store)  # type: ignore[arg-type]


class Closes:
    """Records close requests instead of closing a socket."""

    def __init__(self) -> None:
        self.codes: list[int] = []

    def __call__(self, code: int, reason: str) -> None:
        self.codes.append(code)


def subscriber(channel: str, capacity: int = 16) -> tuple[Subscriber, Closes]:
    """A subscriber with its own outbox and close recorder."""
    closes = Closes()
    return Subscriber(parse_channel(channel), Outbox(capacity), closes), closes


async def drain(box: Outbox) -> list[dict[str, Any]]:
    """Everything queued, decoded."""
    if not len(box):
        return []
    return [orjson.loads(f) for f in await box.take_all()]


def order_event(seq: int) -> bytes:
    """An account-orders bus message as the account actor publishes it."""
    return orjson.dumps({"seq": seq, "data": {"kind": "order", "n": seq}})


async def test_one_prepared_frame_reaches_every_subscriber(engine: Engine, hub: StreamHub) -> None:
    """The event is encoded once: both outboxes hold the very same bytes; seq counts up."""
    a, _ = subscriber("quotes:SBIN")
    b, _ = subscriber("quotes:SBIN")
    for sub in (a, b):
        opened = await hub.subscribe(sub, None, None)
        assert opened.frame["seq"] == 0 and opened.frame["snapshot"] is None
        assert opened.frame["epoch"] == hub.epoch
    await engine.bus.publish("quotes:SBIN", b'{"ltp":"1"}')
    await engine.bus.publish("quotes:SBIN", b'{"ltp":"2"}')
    await trio.testing.wait_all_tasks_blocked()
    fa, fb = await a.outbox.take_all(), await b.outbox.take_all()
    assert fa == [event_frame("quotes:SBIN", 2, b'{"ltp":"2"}')]  # conflated: the latest
    assert fa[0] is fb[0]
    assert a.outbox.conflated == 1
    assert orjson.loads(fa[0]) == {
        "op": "event",
        "channel": "quotes:SBIN",
        "seq": 2,
        "data": {"ltp": "2"},
    }


async def test_unsubscribed_channels_are_forgotten(engine: Engine, hub: StreamHub) -> None:
    """The last unsubscribe drops the channel's state; its events are then ignored."""
    a, _ = subscriber("quotes:SBIN")
    await hub.subscribe(a, None, None)
    assert hub.channels == 1
    hub.unsubscribe(a)
    hub.unsubscribe(a)
    assert hub.channels == 0
    await engine.bus.publish("quotes:SBIN", b"{}")
    await trio.testing.wait_all_tasks_blocked()
    assert len(a.outbox) == 0


async def test_orders_snapshot_holds_live_events_and_releases_only_newer_ones(
    engine: Engine, hub: StreamHub, store: LedgerStore
) -> None:
    """Events published while the snapshot is read: those it reflects are not sent again."""
    store.events = [(1, {}), (2, {})]
    store.gate = trio.Event()
    sub, _ = subscriber("account:ACC1:orders")
    result: list[Any] = []

    async def subscribe() -> None:
        result.append(await hub.subscribe(sub, None, None))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(subscribe)
        await trio.testing.wait_all_tasks_blocked()
        for seq in (2, 3, 3, 4):  # 2 is in the snapshot; 3 arrives twice (outbox republish)
            await engine.bus.publish("account:ACC1:orders", order_event(seq))
        await trio.testing.wait_all_tasks_blocked()
        store.gate.set()
    opened = result[0]
    assert opened.frame["seq"] == 2 and opened.frame["epoch"] == "ledger"
    assert opened.frame["snapshot"] == {"orders": []}
    assert [orjson.loads(f)["seq"] for f in opened.replay] == [3, 4]
    await engine.bus.publish("account:ACC1:orders", order_event(4))
    await engine.bus.publish("account:ACC1:orders", order_event(5))
    await trio.testing.wait_all_tasks_blocked()
    assert [m["seq"] for m in await drain(sub.outbox)] == [5]


async def test_a_gap_on_the_bus_is_filled_from_the_ledger(
    engine: Engine, hub: StreamHub, store: LedgerStore
) -> None:
    """Seq 5 after seq 2: events 3 and 4 are read from the ledger and sent first, in order."""
    sub, _ = subscriber("account:ACC1:orders")
    await hub.subscribe(sub, None, None)
    await engine.bus.publish("account:ACC1:orders", order_event(1))
    await engine.bus.publish("account:ACC1:orders", order_event(2))
    store.events = [(s, {"kind": "order", "n": s}) for s in range(1, 6)]
    await engine.bus.publish("account:ACC1:orders", order_event(5))
    await trio.testing.wait_all_tasks_blocked()
    delivered = await drain(sub.outbox)
    assert [m["seq"] for m in delivered] == [1, 2, 3, 4, 5]
    assert [m["data"]["n"] for m in delivered] == [1, 2, 3, 4, 5]


async def test_resume_from_retention_then_from_the_ledger_then_not_at_all(
    engine: Engine, hub: StreamHub, store: LedgerStore
) -> None:
    """Within retention: memory; older: the ledger; beyond replay_max or ahead: a snapshot."""
    live, _ = subscriber("account:ACC1:orders", capacity=100)
    await hub.subscribe(live, None, None)
    for seq in range(1, 9):
        store.events.append((seq, {"kind": "order", "n": seq}))
        await engine.bus.publish("account:ACC1:orders", order_event(seq))
    await trio.testing.wait_all_tasks_blocked()

    async def resume(since: int, epoch: str = "ledger") -> tuple[dict[str, Any], list[int]]:
        sub, _ = subscriber("account:ACC1:orders", capacity=100)
        opened = await hub.subscribe(sub, since, epoch)
        hub.unsubscribe(sub)
        return opened.frame, [orjson.loads(f)["seq"] for f in opened.replay]

    store.reads.clear()
    frame, replay = await resume(6)  # retention holds 5..8
    assert (frame["recovered"], frame["seq"], replay) == (True, 6, [7, 8])
    assert store.reads == ["snapshot"]
    frame, replay = await resume(1)
    assert (frame["recovered"], replay) == (True, [2, 3, 4, 5, 6, 7, 8])
    assert store.reads[-1] == "events"
    frame, replay = await resume(8)
    assert (frame["recovered"], replay) == (True, [])
    for since, epoch in ((9, "ledger"), (3, "another")):
        frame, replay = await resume(since, epoch)
        assert (frame["recovered"], frame["seq"], replay) == (False, 8, [])
        assert frame["snapshot"] == {"orders": []}
    text = engine.metrics.registry.get_sample_value
    assert text("tickstream_stream_replayed_total", {"source": "memory"}) == 2
    assert text("tickstream_stream_replayed_total", {"source": "ledger"}) == 7


async def test_resume_further_behind_than_replay_max_is_a_fresh_snapshot(
    engine: Engine, hub: StreamHub, store: LedgerStore
) -> None:
    """Never a partial replay: more than ``replay_max`` missed events → recovered false."""
    store.events = [(s, {}) for s in range(1, 61)]
    sub, _ = subscriber("account:ACC1:orders")
    opened = await hub.subscribe(sub, 2, "ledger")
    assert (opened.frame["recovered"], opened.frame["seq"], opened.replay) == (False, 60, [])


async def test_a_full_outbox_closes_the_connection_4008(engine: Engine, hub: StreamHub) -> None:
    """Lossless events the outbox cannot take: the connection is closed as a slow consumer."""
    sub, closes = subscriber("account:ACC1:orders", capacity=2)
    await hub.subscribe(sub, None, None)
    for seq in range(1, 4):
        await engine.bus.publish("account:ACC1:orders", order_event(seq))
    await trio.testing.wait_all_tasks_blocked()
    assert closes.codes == [4008]


async def test_unknown_account_snapshot_is_not_found_and_leaves_nothing(hub: StreamHub) -> None:
    """The snapshot cannot be read: the error goes back, the channel is not kept."""
    sub, _ = subscriber("account:NOPE:positions")
    with pytest.raises(ProtocolError) as refused:
        await hub.subscribe(sub, None, None)
    assert refused.value.code == "not_found"
    assert hub.channels == 0


async def test_candles_conflate_per_bar(engine: Engine, hub: StreamHub) -> None:
    """A newer state of the same bar replaces the queued one; the next bar is kept."""
    bars, _ = subscriber("candles:SBIN:1m")
    opened = await hub.subscribe(bars, None, None)
    assert opened.frame["snapshot"] == {"forming": None, "last_closed": None}
    for ts, close in ((60_000, "1"), (60_000, "2"), (120_000, "3")):
        await engine.bus.publish("candles:SBIN:1m", orjson.dumps({"ts": ts, "close": close}))
    await trio.testing.wait_all_tasks_blocked()
    assert [m["data"]["close"] for m in await drain(bars.outbox)] == ["2", "3"]


@pytest.mark.parametrize(
    ("channel", "data", "key"),
    [
        ("account:A:positions", {"symbol": "SBIN"}, ("account:A:positions", "SBIN")),
        ("account:A:strategies", {"id": "s1"}, ("account:A:strategies", "s1")),
        ("account:A:pnl", {"net": "1"}, "account:A:pnl"),
        ("quotes:SBIN", {"ltp": "1"}, "quotes:SBIN"),
    ],
)
def test_conflation_keys(channel: str, data: dict[str, str], key: object) -> None:
    """Positions per symbol, strategies per id, the rest per channel."""
    assert _conflation_key(parse_channel(channel), orjson.dumps(data)) == key


async def test_unreadable_bus_messages_are_dropped_and_an_unfilled_gap_makes_clients_resume(
    engine: Engine, hub: StreamHub, store: LedgerStore
) -> None:
    """A broken message does not stop the hub; a gap the ledger cannot fill closes 4008."""
    sub, closes = subscriber("account:ACC1:orders")
    await hub.subscribe(sub, None, None)
    await engine.bus.publish("account:ACC1:orders", b"not json")
    await engine.bus.publish("account:ACC1:orders", b'{"no": "seq"}')
    await engine.bus.publish("account:ACC1:orders", order_event(1))
    await trio.testing.wait_all_tasks_blocked()
    assert [m["seq"] for m in await drain(sub.outbox)] == [1]
    store.down = True
    await engine.bus.publish("account:ACC1:orders", order_event(3))
    await trio.testing.wait_all_tasks_blocked()
    assert closes.codes == [4008]
    assert len(sub.outbox) == 0  # never event 3 without event 2


async def test_a_burst_on_the_bus_reaches_a_waiting_sender_as_one_batch(
    engine: Engine, hub: StreamHub
) -> None:
    """Messages already buffered are all fanned out before the connection's sender wakes."""
    box = Outbox(16)
    closes = Closes()
    subs = [Subscriber(parse_channel(f"quotes:S{i}"), box, closes) for i in range(3)]
    for sub in subs:
        await hub.subscribe(sub, None, None)
    taken: list[list[bytes]] = []

    async def sender() -> None:
        taken.append(await box.take_all())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        await trio.testing.wait_all_tasks_blocked()
        await engine.bus.publish_many([(f"quotes:S{i}", b"{}") for i in range(3)])
    assert [len(batch) for batch in taken] == [3]


async def test_a_long_burst_yields_every_batch_max_messages(config: Config) -> None:
    """The hub checkpoints after ``batch_max`` messages, so a sender runs during a burst.

    trio orders a batch of runnable tasks at random, so the sender may miss a checkpoint;
    over 20 checkpoints it misses them all with probability 2**-20.
    """
    engine = fake_engine(with_overrides(config, stream={"batch_max": 2}), FakeClock(NOW_MS))
    market = MarketActor(engine, InstrumentMaster(engine.store), load_calendar())
    hub = StreamHub(engine, Snapshots(engine, market, Accounts(engine, market), None))
    box = Outbox(64)
    subs = [Subscriber(parse_channel(f"quotes:S{i}"), box, Closes()) for i in range(40)]
    taken: list[int] = []

    async def sender() -> None:
        while True:
            taken.append(len(await box.take_all()))

    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        for sub in subs:
            await hub.subscribe(sub, None, None)
        nursery.start_soon(sender)
        await trio.testing.wait_all_tasks_blocked()
        await engine.bus.publish_many([(f"quotes:S{i}", b"{}") for i in range(40)])
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert sum(taken) == 40 and len(taken) > 1
