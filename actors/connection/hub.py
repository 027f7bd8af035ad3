"""The stream hub: bus events in, one prepared frame per event, fanned out to connections.

The hub holds one :class:`ChannelState` per channel that has subscribers. For every bus
message of such a channel it assigns the channel's ``seq`` (account orders carry theirs
from the ledger), encodes the ``event`` frame **once**, and offers the same bytes to every
subscriber's outbox without waiting. Lossless channels keep a retention buffer of their
recent frames; account orders fall back on the PostgreSQL ledger, so their history is
always recoverable.

Snapshots and ledger replays are read by :mod:`.snapshots` (the market actor's state,
the account and strategy actors through their mailboxes, the ledger for orders).
"""

from __future__ import annotations

import collections
import logging
import secrets
from dataclasses import dataclass, field
from typing import Final, Protocol

import orjson
import trio

import protocol
from engine.bus import Subscription
from engine.config import StreamConfig
from engine.context import Engine
from protocol import Channel, ChannelKind, ErrorCode, ProtocolError

from .outbox import Outbox, SlowConsumer
from .registry import ConnectionRegistry
from .snapshots import Snapshots

LOG = logging.getLogger(__name__)

LEDGER_EPOCH: Final = "ledger"  # account orders: the ledger's history survives restarts
BUS_PATTERNS: Final = ("quotes:*", "candles:*", "chain:*", "account:*")


class Closer(Protocol):
    """How the hub ends a connection that cannot keep up (never awaiting it)."""

    def __call__(self, code: int, reason: str) -> None: ...


@dataclass(eq=False, slots=True)
class Subscriber:
    """One connection's subscription to one channel.

    While ``holding`` is a list the subscription is being set up (its snapshot is being
    read): events are kept there and released, in order, after the snapshot.
    """

    channel: Channel
    outbox: Outbox
    close: Closer
    last_seq: int = 0
    holding: list[tuple[int, object, bytes]] | None = field(default_factory=list)

    def offer(self, seq: int, key: object, frame: bytes) -> None:
        """Queue one event frame unless it is one the client already has."""
        # NOTE: once per event and subscriber: the common case (live, a new seq) first.
        if self.holding is None:
            if seq > self.last_seq:
                self.last_seq = seq
                try:
                    if key is None:
                        self.outbox.put(frame)
                    else:
                        self.outbox.put_latest(key, frame)
                except SlowConsumer:
                    self.close(4008, "slow consumer")
            return
        self.holding.append((seq, key, frame))
        if len(self.holding) > self.outbox.capacity:
            self.close(4008, "slow consumer")


@dataclass(eq=False, slots=True)
class ChannelState:
    """Sequence, retention and subscribers of one channel on this node."""

    channel: Channel
    epoch: str
    seq: int = 0
    subscribers: set[Subscriber] = field(default_factory=set)
    retention: collections.deque[tuple[int, bytes]] = field(default_factory=collections.deque)


@dataclass(frozen=True, slots=True)
class Opened:
    """What a subscription starts with: the ``subscribed`` frame and any replay."""

    frame: dict[str, object]
    replay: list[bytes]
    last: int  # the seq the client has once it has read ``frame`` and ``replay``


def event_frame(name: str, seq: int, data: bytes) -> bytes:
    """Return the encoded ``event`` frame (``data`` is already-encoded JSON)."""
    return (
        b"".join(
            (b'{"op":"event","channel":', orjson.dumps(name), b',"seq":', b"%d" % seq, b',"data":')
        )
        + data
        + b"}"
    )


class StreamHub:
    """Fan-out of bus events to stream connections (one per engine)."""

    def __init__(self, engine: Engine, reads: Snapshots) -> None:
        self._engine = engine
        self._config: StreamConfig = engine.config.stream
        self._reads = reads
        self._states: dict[str, ChannelState] = {}
        self.epoch = secrets.token_hex(6)  # this node's history of conflated channels
        self.events = 0
        self.registry = ConnectionRegistry()  # open connections, for the control channel

    # ------------------------------------------------------------------ running

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read the bus and fan out until cancelled."""
        bus = self._engine.bus
        subs = [bus.subscribe(p) for p in BUS_PATTERNS]
        try:
            async with trio.open_nursery() as nursery:
                for sub in subs:
                    nursery.start_soon(self._pump, sub)
                task_status.started()
        finally:
            for sub in subs:
                bus.unsubscribe(sub)

    async def _pump(self, sub: Subscription) -> None:
        # NOTE: the messages already buffered are fanned out before the senders run (up to
        # batch_max between two checkpoints, so a burst never stalls the event loop for
        # long), and a subscriber behind several channels gets them in one frame; taking
        # one message per checkpoint made every sender write each event as its own frame.
        every = self._config.batch_max
        while True:
            try:
                first = await sub.receive()
            except trio.EndOfChannel:
                return
            for n, message in enumerate((first, *sub.take_ready()), start=1):
                state = self._states.get(message.channel)
                if state is not None and state.subscribers:
                    await self._dispatch(state, message.data)
                if n % every == 0:
                    await trio.lowlevel.checkpoint()

    async def _dispatch(self, state: ChannelState, data: bytes) -> None:
        channel = state.channel
        try:
            if not channel.lossless:
                state.seq += 1
                self._fan_out(state, state.seq, _conflation_key(channel, data), data)
                return
            wrapped = orjson.loads(data)
            seq = int(wrapped["seq"])
            if seq <= state.seq:
                return  # republished from the outbox after a restart, or out of date
            if state.seq and seq > state.seq + 1:
                for missed_seq, missed in await self._reads.ledger_events(
                    channel, state.seq, seq - 1
                ):
                    self._fan_out(state, missed_seq, None, missed)
            self._fan_out(state, seq, None, protocol.dumps(wrapped["data"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            LOG.warning("unreadable bus message on %s dropped", channel.name[:64])
        except ProtocolError as exc:
            # The ledger could not fill a gap: the subscribers resume by themselves (the
            # ledger answers their resume once it is back), nothing is skipped.
            LOG.warning("%s: gap not filled (%s); subscribers resume", channel.name, exc.code)
            for subscriber in tuple(state.subscribers):
                subscriber.close(4008, "events missed; resume")

    def _fan_out(self, state: ChannelState, seq: int, key: object, data: bytes) -> None:
        frame = event_frame(state.channel.name, seq, data)
        if state.channel.lossless:
            state.seq = seq
            state.retention.append((seq, frame))
            if len(state.retention) > self._config.retention:
                state.retention.popleft()
        self.events += 1
        metrics = self._engine.metrics
        metrics.stream_events.inc(len(state.subscribers))
        for subscriber in tuple(state.subscribers):
            subscriber.offer(seq, key, frame)

    # ------------------------------------------------------------------ subscriptions

    @property
    def channels(self) -> int:
        """Channels with at least one subscriber on this node."""
        return len(self._states)

    async def subscribe(
        self, subscriber: Subscriber, since: int | None, epoch: str | None
    ) -> Opened:
        """Register ``subscriber`` and read its snapshot (or its replay).

        The subscriber holds live events while the snapshot is read, then they are
        released after it: none is lost and none is delivered twice.

        Raises:
            ProtocolError: the snapshot cannot be read (``busy``, ``database_unavailable``,
                ``not_found``); the subscriber is then unregistered.
        """
        channel = subscriber.channel
        account = channel.account
        if account is not None and not self._reads.has_account(account):
            await trio.lowlevel.checkpoint()
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such account", {"account": account})
        state = self._states.get(channel.name)
        if state is None:
            state = ChannelState(channel, LEDGER_EPOCH if channel.lossless else self.epoch)
            self._states[channel.name] = state
        state.subscribers.add(subscriber)
        try:
            if channel.lossless:
                opened = await self._open_lossless(state, since, epoch)
            else:
                opened = await self._open_conflated(state, since)
        except BaseException:
            self.unsubscribe(subscriber)
            raise
        # Held events newer than the snapshot and the replay, in order, once each.
        held, subscriber.holding = subscriber.holding or [], None
        last = opened.last
        released: list[bytes] = []
        for seq, _key, frame in held:
            if seq > last:
                last = seq
                released.append(frame)
        subscriber.last_seq = last
        return Opened(opened.frame, opened.replay + released, last)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Remove ``subscriber``; a channel left without subscribers is forgotten."""
        state = self._states.get(subscriber.channel.name)
        if state is None:
            return
        state.subscribers.discard(subscriber)
        if not state.subscribers:
            del self._states[subscriber.channel.name]

    async def _open_conflated(self, state: ChannelState, since: int | None) -> Opened:
        seq = state.seq
        snapshot = await self._reads.snapshot(state.channel)
        frame: dict[str, object] = {
            "op": "subscribed",
            "channel": state.channel.name,
            "epoch": state.epoch,
            "seq": seq,
            "snapshot": snapshot,
        }
        if since is not None:
            frame["recovered"] = False
        return Opened(frame, [], seq)

    async def _open_lossless(
        self, state: ChannelState, since: int | None, epoch: str | None
    ) -> Opened:
        channel = state.channel
        last_seq, orders = await self._reads.orders(channel.key)
        base: dict[str, object] = {
            "op": "subscribed",
            "channel": channel.name,
            "epoch": state.epoch,
        }
        if since is not None and epoch in (None, state.epoch) and since <= last_seq:
            replay = self._retained(state, since, last_seq)
            source = "memory"
            if replay is None:
                source = "ledger"
                events = await self._reads.ledger_events(channel, since, last_seq)
                if len(events) == last_seq - since:
                    replay = [event_frame(channel.name, s, d) for s, d in events]
            if replay is not None:
                self._engine.metrics.stream_replayed.labels(source).inc(len(replay))
                return Opened({**base, "seq": since, "recovered": True}, replay, last_seq)
        frame = {**base, "seq": last_seq, "snapshot": {"orders": orders}}
        if since is not None:
            frame["recovered"] = False
        return Opened(frame, [], last_seq)

    def _retained(self, state: ChannelState, since: int, last: int) -> list[bytes] | None:
        kept = state.retention
        if since == last:
            return []
        if not kept or kept[0][0] > since + 1 or kept[-1][0] < last:
            return None
        return [frame for seq, frame in kept if since < seq <= last]


def _conflation_key(channel: Channel, data: bytes) -> object:
    # The unit a newer event replaces: the channel, or one item of it.
    kind = channel.kind
    if kind is ChannelKind.POSITIONS:
        return (channel.name, orjson.loads(data).get("symbol"))
    if kind is ChannelKind.STRATEGIES:
        return (channel.name, orjson.loads(data).get("id"))
    if kind is ChannelKind.CANDLES:
        return (channel.name, orjson.loads(data).get("ts"))
    return channel.name
