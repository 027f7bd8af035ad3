"""Live option chains: snapshots from the market actor's quotes, and their throttled publisher.

A snapshot is the PROTOCOL.md live chain ``{underlying, expiry, spot, max_pain, pcr_oi,
pcr_volume, rows: [{strike, call, put}]}``, computed by :func:`build_chain` (pure) from
the chain's instruments, their latest quotes, a spot price and the valuation time:

* Rows: every option of (underlying, expiry) in the instrument master, one row per strike,
  ascending. A side with no instrument is ``null``; a side with an instrument but no quote
  keeps its ``symbol`` and has every other field ``null``.
* Spot: the ltp of the underlying's own quote (the index or the equity, whose symbol is the
  underlying's name). Without one, the ltp of the nearest unexpired future of the
  underlying that has a quote. That future carries the cost of carry (F ≈ S·e^{rT_f}), so
  IVs computed on it lean slightly (calls up, puts down) by about ``r·T_f`` in moneyness; it
  is a fallback for feeds that send no index ticks, not a model. With neither, ``spot`` is
  null and so is every IV and Greek.
* T is ``time_to_expiry(expiry, now_ms)`` (FINANCE.md §1).
* IV from each option's ltp with ``implied_volatility_batch``, model bsm on the spot with
  r = :data:`CHAIN_RATE` and q = 0: the model the simulator prices with. Greeks from that
  IV with ``greeks_batch`` (FINANCE.md units: theta per calendar day, vega per vol point).
  Both are vectorised over the chain; null where undefined (no quote, no spot, IV outside
  the no-arbitrage bounds, T <= 0).
* Max pain and PCR with ``analyze_chain`` over every strike of the chain; a side with no
  quote, or a quote without OI or volume, counts as 0.

Cost: one snapshot of n options is two numpy batches plus O(n) Python: about 5 ms for 300
options and 12 ms for 1,000 (dev machine), so :class:`ChainPublisher` computes chains inline
on the event loop, yielding at each publish between two chains. Past ~2,000 options in one
chain, or once a cycle (``statistics().last_cycle_seconds``) passes ~50 ms, compute
snapshots in ``trio.to_thread.run_sync`` from the copied inputs: ``build_chain`` is pure and
its inputs immutable, which is why reading and computing are separate here.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Protocol

import numpy as np
import trio

import protocol
from engine.analytics import (
    ChainRow,
    OptionType,
    analyze_chain,
    greeks_batch,
    implied_volatility_batch,
    optional_floats,
    time_to_expiry,
)
from engine.context import Engine
from protocol import Instrument

from .live import InstrumentSource, Universe, UniverseCache
from .messages import Quote

LOG = logging.getLogger(__name__)

CHAIN_THROTTLE: Final = 1.0  # seconds between two snapshots of one chain, at least
CHAIN_RATE: Final = 0.065  # r, annual, continuously compounded (the simulator's RATE)
CHAIN_DIVIDEND_YIELD: Final = 0.0  # q, annual
CHAIN_MODEL: Final = "bsm"


class ChainMarket(Protocol):
    """What chains read of the market actor (:class:`~.actor.MarketActor` is one)."""

    @property
    def master(self) -> InstrumentSource: ...

    def quote(self, symbol: str) -> Quote | None: ...

    def chain_quotes(self, underlying: str, expiry: dt.date) -> dict[str, Quote]: ...


@dataclass(frozen=True, slots=True)
class OptionSide:
    """One option of a chain row: its quote fields and analytics (None where undefined)."""

    symbol: str
    ltp: Decimal | None
    oi: int | None
    volume: int | None
    iv: float | None
    delta: float | None
    gamma: float | None
    theta: float | None
    vega: float | None

    def to_wire(self) -> dict[str, object]:
        """Return the ``call``/``put`` object of a live chain row."""
        return {
            "symbol": self.symbol,
            "ltp": self.ltp,
            "oi": self.oi,
            "volume": self.volume,
            "iv": self.iv,
            "delta": self.delta,
            "gamma": self.gamma,
            "theta": self.theta,
            "vega": self.vega,
        }


@dataclass(frozen=True, slots=True)
class ChainSnapshotRow:
    """One strike; a side is None when the chain has no option of that type there."""

    strike: Decimal
    call: OptionSide | None
    put: OptionSide | None


@dataclass(frozen=True, slots=True)
class ChainSnapshot:
    """A live option chain (PROTOCOL.md), rows ascending by strike."""

    underlying: str
    expiry: dt.date
    spot: Decimal | None
    max_pain: Decimal | None
    pcr_oi: float | None
    pcr_volume: float | None
    rows: tuple[ChainSnapshotRow, ...]

    def to_wire(self) -> dict[str, object]:
        """Return the live chain object (decimals stay Decimal for the wire encoder)."""
        return {
            "underlying": self.underlying,
            "expiry": self.expiry.isoformat(),
            "spot": self.spot,
            "max_pain": self.max_pain,
            "pcr_oi": self.pcr_oi,
            "pcr_volume": self.pcr_volume,
            "rows": [
                {
                    "strike": row.strike,
                    "call": None if row.call is None else row.call.to_wire(),
                    "put": None if row.put is None else row.put.to_wire(),
                }
                for row in self.rows
            ],
        }


def _sides(options: Iterable[Instrument]) -> dict[Decimal, list[Instrument | None]]:
    # strike -> [call, put]. A second option of the same type and strike (two symbol
    # spellings of one contract in the master) is ignored: the first by symbol wins.
    by_strike: dict[Decimal, list[Instrument | None]] = {}
    for inst in sorted(options, key=lambda i: i.symbol):
        if inst.strike is None or inst.option_type is None:
            continue
        pair = by_strike.setdefault(inst.strike, [None, None])
        slot = 0 if inst.option_type == "call" else 1
        if pair[slot] is None:
            pair[slot] = inst
        else:
            LOG.debug("chain: %s duplicates strike %s; ignored", inst.symbol, inst.strike)
    return by_strike


def build_chain(
    underlying: str,
    expiry: dt.date,
    options: Iterable[Instrument],
    quotes: Mapping[str, Quote],
    spot: Decimal | None,
    now_ms: int,
) -> ChainSnapshot:
    """Compute a live chain snapshot (pure; see the module docstring for the rules).

    Args:
        underlying: the chain's underlying, as in its instruments.
        expiry: the chain's expiry date.
        options: the chain's option instruments, in any order.
        quotes: latest quotes by symbol; options without one get null fields.
        spot: the underlying's price, or None when unknown (IV and Greeks are then null).
        now_ms: the valuation instant, epoch ms UTC.

    Returns:
        The snapshot, rows ascending by strike.
    """
    by_strike = _sides(options)
    strikes = sorted(by_strike)
    # The quoted options, in row order (call then put): the batch inputs.
    priced: list[Instrument] = []
    for k in strikes:
        for inst in by_strike[k]:
            if inst is not None and inst.symbol in quotes:
                priced.append(inst)
    analytics = _analytics(priced, quotes, spot, time_to_expiry(expiry, now_ms))
    rows: list[ChainSnapshotRow] = []
    chain_rows: list[ChainRow] = []
    for k in strikes:
        call, put = (_side(inst, quotes, analytics) for inst in by_strike[k])
        rows.append(ChainSnapshotRow(k, call, put))
        chain_rows.append(
            ChainRow(
                strike=k,
                call_oi=_count(call, "oi"),
                put_oi=_count(put, "oi"),
                call_volume=_count(call, "volume"),
                put_volume=_count(put, "volume"),
            )
        )
    summary = analyze_chain(chain_rows)
    return ChainSnapshot(
        underlying=underlying,
        expiry=expiry,
        spot=spot,
        max_pain=summary.max_pain,
        pcr_oi=summary.pcr_oi,
        pcr_volume=summary.pcr_volume,
        rows=tuple(rows),
    )


_NO_ANALYTICS: Final[tuple[None, ...]] = (None,) * 5


def _analytics(
    priced: list[Instrument],
    quotes: Mapping[str, Quote],
    spot: Decimal | None,
    t: float,
) -> dict[str, tuple[float | None, ...]]:
    # symbol -> (iv, delta, gamma, theta, vega) for the quoted options.
    if not priced or spot is None:
        return {}
    types: list[OptionType] = ["call" if i.option_type == "call" else "put" for i in priced]
    strike = np.array([float(i.strike or 0) for i in priced])
    price = np.array([float(quotes[i.symbol].ltp) for i in priced])
    s = float(spot)
    iv = implied_volatility_batch(
        CHAIN_MODEL,
        np.array(types),
        price=price,
        underlying=s,
        strike=strike,
        time_to_expiry=t,
        rate=CHAIN_RATE,
        dividend_yield=CHAIN_DIVIDEND_YIELD,
    )
    g = greeks_batch(
        CHAIN_MODEL,
        np.array(types),
        underlying=s,
        strike=strike,
        time_to_expiry=t,
        volatility=iv,
        rate=CHAIN_RATE,
        dividend_yield=CHAIN_DIVIDEND_YIELD,
    )
    columns = [optional_floats(c) for c in (iv, g.delta, g.gamma, g.theta, g.vega)]
    return {inst.symbol: row for inst, row in zip(priced, zip(*columns, strict=True), strict=True)}


def _side(
    inst: Instrument | None,
    quotes: Mapping[str, Quote],
    analytics: Mapping[str, tuple[float | None, ...]],
) -> OptionSide | None:
    if inst is None:
        return None
    quote = quotes.get(inst.symbol)
    iv, delta, gamma, theta, vega = analytics.get(inst.symbol, _NO_ANALYTICS)
    if quote is None:
        return OptionSide(inst.symbol, None, None, None, iv, delta, gamma, theta, vega)
    return OptionSide(inst.symbol, quote.ltp, quote.oi, quote.volume, iv, delta, gamma, theta, vega)


def _count(side: OptionSide | None, name: str) -> int:
    # OI or volume for max pain and PCR: unknown counts as 0.
    if side is None:
        return 0
    value: int | None = side.oi if name == "oi" else side.volume
    return value or 0


def chain_snapshot(
    market: ChainMarket,
    underlying: str,
    expiry: dt.date,
    now_ms: int,
    universe: Universe | None = None,
) -> ChainSnapshot | None:
    """Return the live snapshot of one chain from the market actor's current state.

    Args:
        market: the market actor (or anything with its read side).
        underlying: the chain's underlying.
        expiry: the chain's expiry.
        now_ms: the valuation instant, epoch ms UTC (the engine clock).
        universe: a scan of the master to reuse; scanned afresh when None.

    Returns:
        The snapshot, or None when the master has no option of this chain or none of
        them has a quote yet.
    """
    if universe is None:
        universe = Universe.scan(market.master.all())
    options = universe.chains.get((underlying, expiry))
    if not options:
        return None
    quotes = market.chain_quotes(underlying, expiry)
    if not quotes:
        return None
    spot = universe.spot_quote(market, underlying, now_ms)
    return build_chain(
        underlying, expiry, options, quotes, None if spot is None else spot.ltp, now_ms
    )


def chain_channel(underlying: str, expiry: dt.date) -> str:
    """Return the bus channel of a chain's snapshots, ``chain:<UNDERLYING>:<YYYY-MM-DD>``."""
    return f"chain:{underlying}:{expiry.isoformat()}"


@dataclass(frozen=True, slots=True)
class ChainPublisherStatistics:
    """Counters of a :class:`ChainPublisher`."""

    cycles: int
    published: int
    chains: int  # chains with quotes at the last cycle
    last_cycle_seconds: float


def _unchanged(before: Mapping[str, Quote], now: Mapping[str, Quote]) -> bool:
    # Every applied tick makes a new Quote object, so identity says "no new tick".
    return len(before) == len(now) and all(before.get(s) is q for s, q in now.items())


class ChainPublisher:
    """Publish throttled, conflated chain snapshots on ``chain:<UNDERLYING>:<YYYY-MM-DD>``.

    Every ``interval`` seconds it looks at every chain of the master and publishes a fresh
    snapshot of each one whose option quotes, or spot quote, changed since its last
    snapshot: at most one snapshot per chain per interval, none while nothing ticks (the
    passage of time alone, which moves theta, does not republish).
    """

    def __init__(
        self, engine: Engine, market: ChainMarket, *, interval: float = CHAIN_THROTTLE
    ) -> None:
        """Configure the publisher.

        Args:
            engine: its bus carries the snapshots, its clock is the valuation time.
            market: the market actor whose quotes are read.
            interval: seconds between two cycles (:data:`CHAIN_THROTTLE`).
        """
        self._engine = engine
        self._market = market
        self._interval = interval
        # chain -> (option quotes, spot quote) of its last published snapshot.
        self._seen: dict[tuple[str, dt.date], tuple[dict[str, Quote], Quote | None]] = {}
        self._universes = UniverseCache(market.master)
        self._cycles = self._published = self._chains = 0
        self._last_cycle = 0.0
        self._m_published = engine.metrics.counter(
            "tickstream_chain_snapshots", "Option-chain snapshots published on chain: channels"
        )

    def statistics(self) -> ChainPublisherStatistics:
        """Return the publisher's counters."""
        return ChainPublisherStatistics(
            self._cycles, self._published, self._chains, self._last_cycle
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Publish changed chains every interval until cancelled.

        Cancellation: runs until cancelled; a snapshot is published whole or not at all.
        Error handling: bus errors propagate, and the supervisor calls ``run`` again. A
        chain is marked published only after its publish returned, so one whose publish
        failed goes out at the next cycle; unchanged chains are not republished.
        """
        task_status.started()
        while True:
            await trio.sleep(self._interval)
            await self.publish_changed()

    async def publish_changed(self) -> int:
        """Run one cycle: publish a snapshot of every chain that changed; return how many."""
        started = trio.current_time()
        market = self._market
        now_ms = self._engine.clock()
        universe = self._universes.get()
        for gone in self._seen.keys() - universe.chains.keys():
            del self._seen[gone]
        published = chains = 0
        for key, options in universe.chains.items():
            underlying, expiry = key
            # NOTE: read and compute with no checkpoint in between, so one snapshot
            # reflects one state of the market actor; it may move between two chains.
            quotes = market.chain_quotes(underlying, expiry)
            if not quotes:
                continue
            chains += 1
            spot_quote = universe.spot_quote(market, underlying, now_ms)
            seen = self._seen.get(key)
            if seen is not None and seen[1] is spot_quote and _unchanged(seen[0], quotes):
                continue
            spot = None if spot_quote is None else spot_quote.ltp
            snapshot = build_chain(underlying, expiry, options, quotes, spot, now_ms)
            await self._engine.bus.publish(
                chain_channel(underlying, expiry), protocol.dumps(snapshot.to_wire())
            )
            self._seen[key] = (quotes, spot_quote)
            published += 1
            self._published += 1
            self._m_published.inc()
        self._cycles += 1
        self._chains = chains
        self._last_cycle = trio.current_time() - started
        return published
