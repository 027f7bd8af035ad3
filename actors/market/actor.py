"""The market actor: latest quotes, candles, option-chain state, routing to accounts.

One task owns all market state and applies tick batches in arrival order. Feeds
hand batches in through a bounded lossless mailbox (they wait when it is full);
accounts receive quotes through their own **conflating** mailboxes, so a slow
account never slows the feed or another account — it only sees fewer, newer quotes.
Published events (``quotes:``, ``candles:``) are conflated: one quote per symbol and
batch, every closed candle in the batch that closes it, and forming candles at most once
per ``market.candle_publish_interval`` per symbol and timeframe, with a trailing edge
(a forming bar that changed is published within about one interval even if no tick
follows; 0 = once per batch, like quotes).
Routing to accounts is per batch too (one ``put`` per symbol and watcher): no task runs
while a batch is applied, so a mailbox ends up exactly as per-tick puts would leave it,
and the puts that would have been conflated are still counted (``statistics().conflated``).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import trio

import protocol
from engine.analytics import MarketCalendar
from engine.context import Engine
from engine.mailbox import ConflatingMailbox, Mailbox
from engine.store import Connection, DatabaseUnavailable, StoreError
from protocol import Tick

from .candles import CandleBook, CandleEvent
from .instruments import InstrumentMaster, chain_key
from .messages import Quote, TickBatch

LOG = logging.getLogger(__name__)

MS_PER_S: Final = 1000
CANDLE_BACKLOG_MAX: Final = 200_000  # closed candles kept for the writer while the DB is down
INSERT_CANDLES_SQL: Final = """
INSERT INTO candles (symbol, tf, ts, open, high, low, close, volume)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (symbol, tf, ts) DO UPDATE SET
    open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low,
    close = EXCLUDED.close, volume = EXCLUDED.volume
"""


class _Latest:
    # One symbol's state within a batch: its latest tick (with the quote fields earlier
    # ticks of the batch carry, see _carry) and how many ticks it had.
    __slots__ = ("count", "tick")

    def __init__(self, tick: Tick) -> None:
        self.tick = tick
        self.count = 1


def _carry(tick: Tick, seen: Tick) -> Tick:
    # `tick` with the quote fields it leaves out taken from `seen`, an earlier tick of the
    # same symbol in the same batch (what the per-tick quote fold would have kept).
    return Tick(
        tick.symbol,
        tick.ltp,
        tick.ts,
        tick.bid if tick.bid is not None else seen.bid,
        tick.ask if tick.ask is not None else seen.ask,
        tick.bid_qty,
        tick.ask_qty,
        tick.volume if tick.volume is not None else seen.volume,
        tick.oi if tick.oi is not None else seen.oi,
    )


@dataclass(frozen=True, slots=True)
class FeedHealth:
    """Freshness of the feed, for /ready and the stall watchdog."""

    last_tick_ms: int | None  # wall clock when the last tick was applied
    lag_ms: int | None
    market_open: bool
    stale: bool
    paused: bool

    def to_wire(self) -> dict[str, object]:
        """Return the ``feed`` part of /ready."""
        return {
            "last_tick_ms": self.last_tick_ms,
            "lag_ms": self.lag_ms,
            "market_open": self.market_open,
            "stale": self.stale,
            "paused": self.paused,
        }


@dataclass(frozen=True, slots=True)
class MarketStatistics:
    """Counters of the market actor."""

    ticks: int
    batches: int
    paused_ticks: int
    symbols: int
    watchers: int
    conflated: int
    inbox_depth: int
    candles_written: int
    candles_pending: int


@dataclass(eq=False, slots=True)
class Watch:
    """One subscriber's interest in some symbols (returned by :meth:`MarketActor.watch`)."""

    symbols: frozenset[str]
    mailbox: ConflatingMailbox[str, Quote]


class MarketActor:
    """Owns quotes, candles and chains; implements :class:`~.messages.TickSink`."""

    def __init__(self, engine: Engine, master: InstrumentMaster, calendar: MarketCalendar) -> None:
        cfg = engine.config.market
        self._engine = engine
        self._cfg = cfg
        self.master = master
        self.calendar = calendar
        self._inbox: Mailbox[TickBatch] = Mailbox(cfg.inbox_capacity, name="market")
        self._quotes: dict[str, Quote] = {}
        # Per symbol, its last quote before its OI last changed (the live OI build-up's
        # previous observation; OI moves in snapshots, so tick to tick it rarely does).
        self._oi_before: dict[str, Quote] = {}
        self._books: dict[str, CandleBook] = {}
        self._chains: dict[tuple[str, dt.date], dict[str, Quote]] = defaultdict(dict)
        self._watchers: dict[str, list[Watch]] = defaultdict(list)
        self._all_watches: list[Watch] = []
        self._closed: list[CandleEvent] = []
        self._flush_now = trio.Event()
        # Symbols whose forming bars changed since they were last published (an ordered
        # set), and the event that wakes the forming publisher when one is added.
        self._forming_pending: dict[str, None] = {}
        self._forming_due = trio.Event()
        # NOTE: every publication of this actor goes through this lock; see _send.
        self._publish_lock = trio.StrictFIFOLock()
        self._paused = False
        self._last_tick_ms: int | None = None
        self._stale = False
        self.ticks = 0
        self.batches = 0
        self.paused_ticks = 0
        self.candles_written = 0
        self._batch_conflated = 0  # quotes replaced within a batch before routing
        metrics = engine.metrics
        self._m_ticks = metrics.counter("tickstream_ticks", "Ticks applied by source", ["source"])
        self._m_paused = metrics.counter(
            "tickstream_ticks_paused", "Ticks discarded while the feed was paused"
        )
        self._m_stale = metrics.gauge(
            "tickstream_feed_stale", "1 when no tick arrived for stale_after during market hours"
        )
        self._m_lag = metrics.gauge(
            "tickstream_feed_lag_seconds", "Seconds since the last tick was applied"
        )
        self._m_candles = metrics.counter(
            "tickstream_candles_written", "Closed candles written to PostgreSQL"
        )
        metrics.watch(self._collect)

    # ------------------------------------------------------------------ TickSink

    async def submit(self, batch: TickBatch) -> None:
        """Queue a batch; wait while the inbox is full (backpressure to the feed)."""
        await self._inbox.send(batch)

    # ------------------------------------------------------------------ control

    def pause(self) -> None:
        """Stop applying ticks (they are discarded and counted) until :meth:`resume`."""
        if not self._paused:
            LOG.warning("feed paused")
        self._paused = True

    def resume(self) -> None:
        """Apply ticks again."""
        if self._paused:
            LOG.warning("feed resumed")
        self._paused = False

    @property
    def paused(self) -> bool:
        """Whether ticks are being discarded."""
        return self._paused

    # ------------------------------------------------------------------ read side

    def quote(self, symbol: str) -> Quote | None:
        """Return the latest quote of ``symbol``."""
        return self._quotes.get(symbol)

    def oi_before(self, symbol: str) -> Quote | None:
        """Return ``symbol``'s last quote before its open interest last changed (None
        until it has changed once since the actor started)."""
        return self._oi_before.get(symbol)

    def chain_quotes(self, underlying: str, expiry: dt.date) -> dict[str, Quote]:
        """Return the latest quotes of the options of one chain, by symbol (a copy)."""
        return dict(self._chains.get((underlying, expiry), {}))

    def candles(self, symbol: str) -> CandleBook | None:
        """Return the candle book of ``symbol`` (read it, do not feed it)."""
        return self._books.get(symbol)

    def watch(self, symbols: Iterable[str], mailbox: ConflatingMailbox[str, Quote]) -> Watch:
        """Route every new quote of ``symbols`` to ``mailbox`` (latest value per symbol)."""
        w = Watch(frozenset(symbols), mailbox)
        for symbol in w.symbols:
            self._watchers[symbol].append(w)
        self._all_watches.append(w)
        return w

    def unwatch(self, w: Watch) -> None:
        """Stop routing to a watch."""
        for symbol in w.symbols:
            lst = self._watchers.get(symbol)
            if lst and w in lst:
                lst.remove(w)
        if w in self._all_watches:
            self._all_watches.remove(w)

    def health(self) -> FeedHealth:
        """Return feed freshness: stale only counts during market hours."""
        now = self._engine.clock()
        session = self.calendar.session(now)
        lag = None if self._last_tick_ms is None else max(0, now - self._last_tick_ms)
        stale_ms = self._cfg.stale_after * MS_PER_S
        stale = session.open and not self._paused and (lag is None or lag > stale_ms)
        return FeedHealth(self._last_tick_ms, lag, session.open, stale, self._paused)

    def statistics(self) -> MarketStatistics:
        """Return the actor's counters."""
        return MarketStatistics(
            ticks=self.ticks,
            batches=self.batches,
            paused_ticks=self.paused_ticks,
            symbols=len(self._quotes),
            watchers=len(self._all_watches),
            conflated=self._batch_conflated
            + sum(w.mailbox.statistics().conflated for w in self._all_watches),
            inbox_depth=self._inbox.statistics().depth,
            candles_written=self.candles_written,
            candles_pending=len(self._closed),
        )

    def _collect(self) -> Iterable[tuple[str, str, float]]:
        stats = self.statistics()
        yield (
            "tickstream_ticks_conflated",
            "Quotes replaced in account mailboxes before delivery (latest wins)",
            stats.conflated,
        )
        yield (
            "tickstream_market_inbox_depth",
            "Tick batches waiting for the market actor",
            stats.inbox_depth,
        )
        yield ("tickstream_market_watchers", "Account watches of symbols", stats.watchers)

    # ------------------------------------------------------------------ run

    async def run(
        self, *, task_status: trio.TaskStatus[MarketActor] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Load the instrument master, then apply batches until cancelled."""
        await self.master.load()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._candle_writer)
            nursery.start_soon(self._watchdog)
            if self._cfg.candle_publish_interval:
                nursery.start_soon(self._forming_publisher)
            task_status.started(self)
            async for batch in self._inbox:
                await self._apply(batch)

    async def _apply(self, batch: TickBatch) -> None:
        if self._paused:
            self.paused_ticks += len(batch.ticks)
            self._m_paused.inc(len(batch.ticks))
            return
        ticks = batch.ticks
        books = self._books
        # The batch's latest state per symbol, in first-occurrence order. No task runs
        # while a batch is applied, so nobody can see a quote between two of its ticks:
        # quotes are built, stored and routed once per symbol and batch (see _route).
        last: dict[str, _Latest] = {}
        # Candle events: every closed bar, published with the batch; the forming bars
        # are read once per symbol (not per tick), at the end of the batch or later by
        # the forming publisher (see _forming_publisher).
        closed: list[CandleEvent] = []
        for tick in ticks:
            symbol = tick.symbol
            latest = last.get(symbol)
            if latest is None:
                last[symbol] = _Latest(tick)
            else:
                latest.count += 1
                if tick.bid is None or tick.ask is None or tick.volume is None or tick.oi is None:
                    latest.tick = _carry(tick, latest.tick)
                else:
                    latest.tick = tick
            book = books.get(symbol)
            if book is None:
                book = books[symbol] = CandleBook(symbol)
            if events := book.on_tick(tick.ts, tick.ltp, tick.volume, snapshots=False):
                closed += events
        quotes = self._route(last, batch.received_ms)
        self.ticks += len(ticks)
        self.batches += 1
        self._m_ticks.labels(batch.source).inc(len(ticks))
        self._last_tick_ms = self._engine.clock()
        if closed:
            self._store_closed(closed)
        forming: list[CandleEvent] = []
        if self._cfg.candle_publish_interval:
            self._forming_pending.update(dict.fromkeys(last))
            self._forming_due.set()
        else:
            forming = [candle for symbol in last for candle in books[symbol].forming_all()]
        await self._publish(quotes, closed, forming)

    def _route(self, last: dict[str, _Latest], received_ms: int) -> dict[str, Quote]:
        # One quote per symbol of the batch: stored, put in its chain, routed to watchers.
        # A watcher's mailbox then holds exactly what per-tick puts would have left in it
        # (same keys in the same order, latest values); the puts per-tick routing would
        # have conflated are counted here, so statistics().conflated is unchanged.
        quotes = self._quotes
        watchers = self._watchers
        routed: dict[str, Quote] = {}
        for symbol, latest in last.items():
            tick = latest.tick
            prev = quotes.get(symbol)
            # Fields a tick leaves out keep their last known value (a trade-only tick
            # does not erase the book).
            if prev is not None:
                quote = Quote(
                    symbol,
                    tick.ltp,
                    tick.bid if tick.bid is not None else prev.bid,
                    tick.ask if tick.ask is not None else prev.ask,
                    tick.volume if tick.volume is not None else prev.volume,
                    tick.oi if tick.oi is not None else prev.oi,
                    tick.ts,
                    received_ms,
                )
                if tick.oi is not None and prev.oi is not None and tick.oi != prev.oi:
                    self._oi_before[symbol] = prev
            else:
                quote = Quote(
                    symbol, tick.ltp, tick.bid, tick.ask, tick.volume, tick.oi, tick.ts, received_ms
                )
            quotes[symbol] = routed[symbol] = quote
            chain = self._chain_of(symbol)
            if chain is not None:
                chain[symbol] = quote
            routes = watchers.get(symbol)
            if routes:
                for w in routes:
                    w.mailbox.put(symbol, quote)
                self._batch_conflated += (latest.count - 1) * len(routes)
        return routed

    def _chain_of(self, symbol: str) -> dict[str, Quote] | None:
        inst = self.master.get(symbol)
        key = chain_key(inst) if inst is not None else None
        return self._chains[key] if key is not None else None

    async def _publish(
        self,
        latest: dict[str, Quote],
        closed: list[CandleEvent],
        forming: Iterable[CandleEvent],
    ) -> None:
        # One call per batch: one checkpoint in-process, one round trip to Redis.
        dumps = protocol.dumps
        messages = [(f"quotes:{s}", dumps(q.to_wire())) for s, q in latest.items()]
        messages += [
            (f"candles:{e.symbol}:{e.tf}", dumps(e.to_wire())) for e in (*closed, *forming)
        ]
        await self._send(messages)

    async def _send(self, messages: list[tuple[str, bytes]]) -> None:
        # NOTE: callers read the books and call this with no checkpoint in between, and
        # the FIFO lock queues a caller at once, so the publications of this actor reach
        # the bus in the order their state was read. Without it a forming bar could be
        # published after the closed event of the same bar: on Redis, the forming
        # publisher's round trip and the next batch's run concurrently, on different
        # connections of the pool.
        async with self._publish_lock:
            await self._engine.bus.publish_many(messages)

    async def _forming_publisher(self) -> None:
        # Trailing-edge throttle of forming candles: woken by the first change after a
        # publication, it waits one interval (more changes pile up in the pending set),
        # then publishes the forming bars of every pending symbol as they are now, in
        # one publish_many. With nothing pending it parks on the event, not on a timer.
        # Reading the bars only now, never keeping snapshots, is what drops a pending
        # forming bar that closed meanwhile: the closed bar was published with its batch
        # (or by the watchdog), and the book holds the next bar, or none.
        # A symbol is pending as a whole: the rare timeframe that dropped its ticks as
        # late is published again unchanged, which is harmless on a conflated channel.
        interval = self._cfg.candle_publish_interval
        books = self._books
        while True:
            await self._forming_due.wait()
            await trio.sleep(interval)
            self._forming_due = trio.Event()
            pending, self._forming_pending = self._forming_pending, {}
            forming = [candle for symbol in pending for candle in books[symbol].forming_all()]
            if forming:
                await self._publish({}, [], forming)

    # ------------------------------------------------------------------ candles → PostgreSQL

    def _store_closed(self, events: list[CandleEvent]) -> None:
        self._closed.extend(events)
        overflow = len(self._closed) - CANDLE_BACKLOG_MAX
        if overflow > 0:
            # NOTE: only while the database is down for long: the oldest bars go first
            # and are counted as lost in the log; quotes and routing go on regardless.
            LOG.error("candle backlog full: dropping %d oldest closed candles", overflow)
            del self._closed[:overflow]
        if len(self._closed) >= self._cfg.candle_flush_rows:
            self._flush_now.set()

    async def _candle_writer(self) -> None:
        try:
            while True:
                with trio.move_on_after(self._cfg.candle_flush_interval):
                    await self._flush_now.wait()
                self._flush_now = trio.Event()
                await self.flush_candles()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self.flush_candles()

    async def flush_candles(self) -> int:
        """Write the pending closed candles in one transaction; return how many.

        On a database error they stay pending for the next attempt.
        """
        if not self._closed:
            return 0
        batch, self._closed = self._closed, []
        rows = [(e.symbol, e.tf, e.ts, e.open, e.high, e.low, e.close, e.volume) for e in batch]

        async def unit(conn: Connection) -> None:
            await conn.executemany(INSERT_CANDLES_SQL, rows)

        try:
            await self._engine.store.run_unit(unit)
        except (DatabaseUnavailable, StoreError) as exc:
            LOG.warning("writing %d candles failed (%s); will retry", len(batch), exc)
            self._closed[:0] = batch
            return 0
        self.candles_written += len(batch)
        self._m_candles.inc(len(batch))
        return len(batch)

    # ------------------------------------------------------------------ watchdog

    async def _watchdog(self) -> None:
        while True:
            await trio.sleep(self._cfg.watchdog_interval)
            now = self._engine.clock()
            closed: list[CandleEvent] = []
            for book in self._books.values():
                closed.extend(book.close_due(now))
            if closed:
                self._store_closed(closed)
                await self._publish({}, closed, ())
            health = self.health()
            if health.lag_ms is not None:
                self._m_lag.set(health.lag_ms / MS_PER_S)
            self._m_stale.set(1 if health.stale else 0)
            if health.stale and not self._stale:
                LOG.error("feed stale: no tick for %s ms during market hours", health.lag_ms)
            elif self._stale and not health.stale:
                LOG.info("feed fresh again")
            self._stale = health.stale
