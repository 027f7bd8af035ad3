"""The strategy actor: every account's strategies, valued live, in one actor.

Strategies are analytic groupings of legs with entry prices, not ledger state, so they
live here and not in the account actors (which stay small: orders, fills, positions).
One actor owns all of them: it loads them from PostgreSQL at start, watches the legs'
symbols (and the underlyings of option legs) through the market actor with a
conflating mailbox, and publishes ``account:<id>:strategies`` events.

Writes commit to PostgreSQL (parameterised statements, one transaction) before memory
changes and before the caller is answered. Reads, listing, sorting and paging are
served from memory: no query value ever reaches SQL, and ``sort=m2m`` (a live value
the database does not have) works like the stored fields.

Publication is conflated per strategy and throttled (trailing edge): a change opens a
window of ``THROTTLE`` seconds if none is open; at its end every strategy changed within
it is published once, with its values at that instant. So a strategy gets at most one
event per ``THROTTLE``, at most ``THROTTLE`` after its change. ``m2m`` is null while any
leg has no quote (a missing ltp is not guessed as the entry price).
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

import trio

import protocol
from actors.market.actor import MarketActor, Watch
from actors.market.messages import Quote
from engine.context import Engine
from engine.mailbox import ConflatingMailbox, Mailbox, MailboxClosed
from engine.store import Connection, StoreError
from protocol import ErrorCode, Instrument, ProtocolError

from . import model
from .messages import (
    Command,
    CreateStrategy,
    DeleteStrategy,
    GetPayoff,
    GetStrategy,
    ListQuery,
    ListStrategies,
    PatchStrategy,
    unavailable,
)
from .model import Leg, Strategy, StrategyGreeks

LOG = logging.getLogger(__name__)

THROTTLE: Final = 0.5  # seconds: at most one event per strategy per window
MAX_PER_ACCOUNT: Final = 500  # strategies per account: bounded memory, one full list page
FK_VIOLATION: Final = "23503"
SELECT_STRATEGIES: Final = (
    "SELECT id, account_id, name, created_ts, updated_ts FROM strategies ORDER BY seq"
)
SELECT_LEGS: Final = (
    "SELECT strategy_id, symbol, quantity, entry_price FROM strategy_legs"
    " ORDER BY strategy_id, position"
)
INSERT_STRATEGY: Final = (
    "INSERT INTO strategies (id, account_id, name, created_ts, updated_ts)"
    " VALUES ($1, $2, $3, $4, $5)"
)
INSERT_LEG: Final = (
    "INSERT INTO strategy_legs (strategy_id, position, symbol, quantity, entry_price)"
    " VALUES ($1, $2, $3, $4, $5)"
)
UPDATE_STRATEGY: Final = (
    "UPDATE strategies SET name = $3, updated_ts = $4 WHERE id = $1 AND account_id = $2"
)
DELETE_LEGS: Final = "DELETE FROM strategy_legs WHERE strategy_id = $1"
DELETE_STRATEGY: Final = "DELETE FROM strategies WHERE id = $1 AND account_id = $2"


@dataclass(frozen=True, slots=True)
class StrategyStatistics:
    """Counters of the strategy actor."""

    strategies: int
    accounts: int
    symbols: int
    events: int  # strategy events published
    conflated: int  # changes folded into an already pending event
    inbox_depth: int


class _Valuer:
    # One valuation instant: quotes read from the market actor, per-unit Greeks memoised
    # per symbol so that strategies sharing an option pay for its IV once.
    def __init__(self, market: MarketActor, now_ms: int) -> None:
        self._market = market
        self.now_ms = now_ms
        self._units: dict[str, StrategyGreeks] = {}

    def price(self, symbol: str) -> Decimal | None:
        quote = self._market.quote(symbol)
        return None if quote is None else quote.ltp

    def unit(self, symbol: str) -> StrategyGreeks:
        unit = self._units.get(symbol)
        if unit is None:
            inst = self._market.master.get(symbol)
            unit = (
                model.UNDEFINED_GREEKS
                if inst is None
                else model.unit_greeks(inst, self.price, self.now_ms)
            )
            self._units[symbol] = unit
        return unit

    def m2m(self, strategy: Strategy) -> Decimal | None:
        return model.m2m(strategy.legs, self.price)

    def wire(self, strategy: Strategy) -> dict[str, object]:
        greeks = model.aggregate_greeks(strategy.legs, self.unit)
        return strategy.to_wire(self.m2m(strategy), greeks)


class StrategyActor:
    """Owns every strategy; start it with ``await nursery.start(actor.run)``.

    The gateway sends commands to :attr:`mailbox` (bounded, lossless; ``send_nowait``
    refuses when full). The mailbox belongs to the actor object, so commands queued
    across a restart of :meth:`run` are served by the restarted actor.
    """

    def __init__(self, engine: Engine, market: MarketActor) -> None:
        self._engine = engine
        self._market = market
        self.mailbox: Mailbox[Command] = Mailbox(
            engine.config.mailbox.command_capacity, name="strategies"
        )
        self._quotes: ConflatingMailbox[str, Quote] = ConflatingMailbox(name="quotes:strategies")
        self._strategies: dict[str, Strategy] = {}
        self._by_account: dict[str, dict[str, None]] = {}  # ordered sets, creation order
        self._by_symbol: dict[str, set[str]] = {}  # symbol -> ids of strategies it values
        self._symbols: dict[str, frozenset[str]] = {}  # id -> the symbols it is indexed by
        self._watch: Watch | None = None
        self._dirty: dict[str, str] = {}  # strategy id -> account, in order of change
        self._wake = trio.Event()
        self._events = 0
        self._conflated = 0
        engine.metrics.watch(self._collect)

    # ------------------------------------------------------------------ lifecycle

    async def run(
        self, *, task_status: trio.TaskStatus[StrategyActor] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Load every strategy, watch their symbols, serve commands until cancelled.

        Raises:
            DatabaseUnavailable, StoreError: loading failed (the supervisor restarts).
        """
        try:
            await self._load()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._quote_loop)
                nursery.start_soon(self._publisher)
                task_status.started(self)
                await self._command_loop()
        finally:
            if self._watch is not None:
                self._market.unwatch(self._watch)
                self._watch = None

    async def _load(self) -> None:
        async def read(conn: Connection) -> tuple[list[Any], list[Any]]:
            return await conn.fetch(SELECT_STRATEGIES), await conn.fetch(SELECT_LEGS)

        rows, leg_rows = await self._engine.store.run_unit(read)
        legs: dict[str, list[Leg]] = {}
        for r in leg_rows:
            leg = Leg(r["symbol"], int(r["quantity"]), model.canonical(r["entry_price"]))
            legs.setdefault(str(r["strategy_id"]), []).append(leg)
        self._strategies, self._by_account, self._by_symbol, self._symbols = {}, {}, {}, {}
        self._dirty, self._wake = {}, trio.Event()
        self._quotes.drain()
        for r in rows:
            sid = str(r["id"])
            of = tuple(legs.get(sid, ()))
            self._add(
                Strategy(sid, r["account_id"], r["name"], of, r["created_ts"], r["updated_ts"])
            )
        self._rewatch()
        LOG.info("strategies loaded: %d on %d accounts", len(rows), len(self._by_account))

    # ------------------------------------------------------------------ loops

    async def _command_loop(self) -> None:
        while True:
            try:
                command = await self.mailbox.receive()
            except MailboxClosed:
                return
            try:
                await self._handle(command)
            except ProtocolError as exc:
                command.reply.fail(exc)
            except StoreError as exc:
                # Nothing in memory changed: memory is only updated after a commit.
                command.reply.fail(_store_error(exc))
            except BaseException:
                # NOTE: the caller must not wait forever on a command that killed the actor.
                command.reply.fail(unavailable())
                raise

    async def _handle(self, command: Command) -> None:
        match command:
            case CreateStrategy():
                command.reply.set(await self._create(command))
            case ListStrategies():
                command.reply.set(self._list(command.account, command.query))
            case GetStrategy():
                strategy = self._owned(command.account, command.strategy_id)
                command.reply.set(self._valuer().wire(strategy))
            case PatchStrategy():
                command.reply.set(await self._patch(command))
            case DeleteStrategy():
                await self._delete(command)
                command.reply.set(None)
            case GetPayoff():
                command.reply.set(self._payoff(command))
            case _:  # pragma: no cover - the Command union is closed
                raise ProtocolError(ErrorCode.INTERNAL, f"unknown command {command!r}")

    async def _quote_loop(self) -> None:
        while True:
            await self._quotes.wait_nonempty()
            for symbol, _quote in self._quotes.drain():
                for sid in self._by_symbol.get(symbol, ()):
                    self._mark(sid, self._strategies[sid].account)

    async def _publisher(self) -> None:
        bus = self._engine.bus
        while True:
            await self._wake.wait()
            await trio.sleep(THROTTLE)
            # Changes from here on open the next window.
            self._wake = trio.Event()
            dirty, self._dirty = self._dirty, {}
            valuer = self._valuer()
            for sid, account in dirty.items():
                strategy = self._strategies.get(sid)
                data: dict[str, object]
                if strategy is None:
                    data = {"id": sid, "deleted": True, "ts": valuer.now_ms}
                else:
                    data = {
                        "id": sid,
                        "name": strategy.name,
                        "m2m": valuer.m2m(strategy),
                        "greeks": model.aggregate_greeks(strategy.legs, valuer.unit).to_wire(),
                        "updated_ts": strategy.updated_ts,
                        "ts": valuer.now_ms,
                    }
                try:
                    await bus.publish(f"account:{account}:strategies", protocol.dumps(data))
                except ProtocolError as exc:
                    # A conflated channel: the next change publishes the latest values again.
                    LOG.warning("strategy event for %s not published (%s)", account, exc.code)
                    continue
                self._events += 1

    # ------------------------------------------------------------------ commands

    async def _create(self, cmd: CreateStrategy) -> dict[str, object]:
        if len(self._by_account.get(cmd.account, ())) >= MAX_PER_ACCOUNT:
            raise ProtocolError(
                ErrorCode.CONFLICT,
                "too many strategies on this account",
                {"account": cmd.account, "limit": MAX_PER_ACCOUNT},
            )
        self._instruments(cmd.legs)
        now = self._engine.clock()
        strategy = Strategy(str(uuid.uuid4()), cmd.account, cmd.name, cmd.legs, now, now)
        sid = uuid.UUID(strategy.id)

        async def unit(conn: Connection) -> None:
            await conn.execute(INSERT_STRATEGY, sid, cmd.account, cmd.name, now, now)
            await conn.executemany(INSERT_LEG, _leg_rows(sid, cmd.legs))

        await self._engine.store.run_unit(unit)
        self._add(strategy)
        self._rewatch()
        self._mark(strategy.id, strategy.account)
        return self._valuer().wire(strategy)

    async def _patch(self, cmd: PatchStrategy) -> dict[str, object]:
        old = self._owned(cmd.account, cmd.strategy_id)
        if cmd.legs is not None:
            self._instruments(cmd.legs)
        new = dataclasses.replace(
            old,
            name=old.name if cmd.name is None else cmd.name,
            legs=old.legs if cmd.legs is None else cmd.legs,
            updated_ts=self._engine.clock(),
        )
        sid = uuid.UUID(old.id)

        async def unit(conn: Connection) -> None:
            await conn.execute(UPDATE_STRATEGY, sid, new.account, new.name, new.updated_ts)
            if cmd.legs is not None:
                await conn.execute(DELETE_LEGS, sid)
                await conn.executemany(INSERT_LEG, _leg_rows(sid, cmd.legs))

        await self._engine.store.run_unit(unit)
        self._unindex(old)
        self._add(new)
        self._rewatch()
        self._mark(new.id, new.account)
        return self._valuer().wire(new)

    async def _delete(self, cmd: DeleteStrategy) -> None:
        strategy = self._owned(cmd.account, cmd.strategy_id)
        sid = uuid.UUID(strategy.id)

        async def unit(conn: Connection) -> None:
            await conn.execute(DELETE_STRATEGY, sid, strategy.account)  # legs: ON DELETE CASCADE

        await self._engine.store.run_unit(unit)
        self._remove(strategy)
        self._rewatch()
        self._mark(strategy.id, strategy.account)

    def _list(self, account: str, query: ListQuery) -> dict[str, object]:
        # In creation order; every sort below is stable, so ties keep it, and "desc" is
        # the exact reverse of "asc". Strategies without an M2M (a leg has no quote) come
        # last in either order, in creation order.
        strategies = [self._strategies[sid] for sid in self._by_account.get(account, ())]
        valuer = self._valuer()
        unvalued: list[Strategy] = []
        if query.sort == "m2m":
            valued = [(valuer.m2m(s), s) for s in strategies]
            known = sorted(((v, s) for v, s in valued if v is not None), key=lambda vs: vs[0])
            strategies = [s for _, s in known]
            unvalued = [s for v, s in valued if v is None]
        elif query.sort == "name":
            strategies.sort(key=lambda s: (s.name.casefold(), s.name))
        else:
            strategies.sort(key=lambda s: s.created_ts)
        if query.order == "desc":
            strategies.reverse()
        ordered = strategies + unvalued
        page = ordered[query.offset : query.offset + query.limit]
        return {
            "items": [valuer.wire(s) for s in page],
            "total": len(ordered),
            "limit": query.limit,
            "offset": query.offset,
        }

    def _payoff(self, cmd: GetPayoff) -> dict[str, object]:
        strategy = self._owned(cmd.account, cmd.strategy_id)
        instruments = self._instruments(strategy.legs)
        underlyings = sorted({model.underlying_of(i) for i in instruments.values()})
        if len(underlyings) != 1:
            raise ProtocolError(
                ErrorCode.CONFLICT,
                "a payoff needs every leg on one underlying",
                {"underlyings": underlyings},
            )
        points = model.payoff(strategy.legs, instruments, cmd.grid)
        return {"points": [{"underlying": s, "value": v} for s, v in points]}

    # ------------------------------------------------------------------ state

    def _owned(self, account: str, strategy_id: str) -> Strategy:
        # Another account's strategy is as unknown as a missing one (no existence leak).
        try:
            sid = str(uuid.UUID(strategy_id))
        except ValueError:
            sid = ""
        strategy = self._strategies.get(sid)
        if strategy is None or strategy.account != account:
            raise ProtocolError(
                ErrorCode.NOT_FOUND, "no such strategy", {"strategy": strategy_id[:64]}
            )
        return strategy

    def _instruments(self, legs: Iterable[Leg]) -> dict[str, Instrument]:
        out: dict[str, Instrument] = {}
        for leg in legs:
            inst = self._market.master.get(leg.symbol)
            if inst is None:
                raise _unknown_symbol(leg.symbol)
            out[leg.symbol] = inst
        return out

    def _symbols_of(self, strategy: Strategy) -> frozenset[str]:
        symbols = {leg.symbol for leg in strategy.legs}
        for leg in strategy.legs:
            inst = self._market.master.get(leg.symbol)
            if inst is not None and inst.kind == "option" and inst.underlying is not None:
                symbols.add(inst.underlying)  # the spot drives the option's Greeks
        return frozenset(symbols)

    def _add(self, strategy: Strategy) -> None:
        # A new id goes last (creation order); a known id keeps its place (a patch).
        self._strategies[strategy.id] = strategy
        self._by_account.setdefault(strategy.account, {})[strategy.id] = None
        # NOTE: the symbols are kept as indexed, so unindexing is exact even if the
        # instrument master changes in between.
        symbols = self._symbols[strategy.id] = self._symbols_of(strategy)
        for symbol in symbols:
            self._by_symbol.setdefault(symbol, set()).add(strategy.id)

    def _unindex(self, strategy: Strategy) -> None:
        for symbol in self._symbols.pop(strategy.id, frozenset()):
            watchers = self._by_symbol[symbol]
            watchers.discard(strategy.id)
            if not watchers:
                del self._by_symbol[symbol]

    def _remove(self, strategy: Strategy) -> None:
        self._unindex(strategy)
        del self._strategies[strategy.id]
        ids = self._by_account[strategy.account]
        del ids[strategy.id]
        if not ids:
            del self._by_account[strategy.account]

    def _rewatch(self) -> None:
        symbols = frozenset(self._by_symbol)
        if self._watch is not None and self._watch.symbols == symbols:
            return
        if self._watch is not None:
            self._market.unwatch(self._watch)
        self._watch = self._market.watch(symbols, self._quotes) if symbols else None

    def _mark(self, sid: str, account: str) -> None:
        if sid in self._dirty:
            self._conflated += 1
            return
        self._dirty[sid] = account
        self._wake.set()

    def _valuer(self) -> _Valuer:
        return _Valuer(self._market, self._engine.clock())

    # ------------------------------------------------------------------ statistics

    def statistics(self) -> StrategyStatistics:
        """Return the actor's counters."""
        return StrategyStatistics(
            strategies=len(self._strategies),
            accounts=len(self._by_account),
            symbols=len(self._by_symbol),
            events=self._events,
            conflated=self._conflated,
            inbox_depth=self.mailbox.statistics().depth,
        )

    def _collect(self) -> Iterable[tuple[str, str, float]]:
        stats = self.statistics()
        yield ("tickstream_strategies", "Strategies held by the strategy actor", stats.strategies)
        yield ("tickstream_strategy_events", "Strategy events published", stats.events)
        yield (
            "tickstream_strategy_changes_conflated",
            "Strategy changes folded into a pending event (throttle window)",
            stats.conflated,
        )
        yield ("tickstream_strategy_inbox_depth", "Commands waiting for it", stats.inbox_depth)


def _leg_rows(sid: uuid.UUID, legs: Iterable[Leg]) -> list[tuple[object, ...]]:
    return [(sid, i, leg.symbol, leg.quantity, leg.entry_price) for i, leg in enumerate(legs)]


def _unknown_symbol(symbol: str | None) -> ProtocolError:
    error = {"loc": ["legs", "symbol"], "msg": "unknown_symbol", "type": "unknown_symbol"}
    return ProtocolError(
        ErrorCode.VALIDATION_FAILED, f"unknown symbol {symbol or ''}".strip(), {"errors": [error]}
    )


def _store_error(exc: StoreError) -> ProtocolError:
    if exc.sqlstate == FK_VIOLATION and exc.constraint == "strategies_account_fk":
        return ProtocolError(ErrorCode.NOT_FOUND, "no such account")
    if exc.sqlstate == FK_VIOLATION and exc.constraint == "strategy_legs_symbol_fk":
        return _unknown_symbol(None)
    LOG.error("strategy write failed (SQLSTATE %s)", exc.sqlstate)
    return ProtocolError(
        ErrorCode.DATABASE_UNAVAILABLE,
        "strategy write failed; nothing was changed",
        {"sqlstate": exc.sqlstate},
    )
