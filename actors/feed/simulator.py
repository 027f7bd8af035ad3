"""Market simulator: seeded NSE index, futures and option ticks, and the feed that paces them.

`MarketSimulator` is pure and deterministic for a seed and a sequence of `step` times:

* Spots follow a geometric Brownian motion, ``S *= exp((mu - vol²/2)·dt + vol·√dt·Z)``,
  with dt the calendar time between step timestamps in years of 365 days (FINANCE.md §1).
* Futures trade at the cost of carry, ``F = S·e^{rT}`` (no dividend yield).
* Options are priced with the bsm model of `engine.analytics.greeks_batch` (q = 0) on the
  smile ``σ(K) = atm_vol + skew·ln(K/F) + curvature·ln(K/F)²`` (floored at `MIN_VOL`),
  F being the forward to the option's expiry. The whole chain is priced in one call.
* Every price is rounded to the 0.05 tick, at least one tick. The ltp is the rounded
  model price; bid <= ltp <= ask around it with a spread of at least one tick.
  Quantities are in units, whole lots: bid_qty/ask_qty 1..`DEPTH_LOTS` lots, each tick
  trades a geometric number of lots into the cumulative day volume (reset at each new
  IST date), and OI takes a random walk of ~`OI_DRIFT` of itself per tick.
* Index ticks carry the ltp only. Contracts at or past their expiry instant stop ticking.

`SimulatorFeed` takes ticks from a simulator and submits `TickBatch(source="simulator")`
batches of a fixed size to a `TickSink` at a fixed rate, on the trio clock.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt
import trio

from actors.market.messages import TickBatch, TickSink
from engine.analytics import (
    IST,
    SECONDS_PER_YEAR,
    ExpiryKind,
    MarketCalendar,
    NoWeeklyExpiryError,
    OptionType,
    expiry_ts_ms,
    greeks_batch,
)
from protocol import Instrument, Tick
from protocol._symbols import future_symbol, option_symbol

LOG = logging.getLogger(__name__)

TICK_SIZE: Final = Decimal("0.05")  # rupees, every simulated instrument
TICK: Final = 0.05  # rupees, TICK_SIZE as a float for the model arithmetic
RATE: Final = 0.065  # r, annual, continuously compounded
MIN_VOL: Final = 0.01  # annual; floor of the smile
SPREAD_FRACTION: Final = 2e-5  # mean spread beyond one tick, as a fraction of the price
DEPTH_LOTS: Final = 50  # lots; best bid/ask quantities are 1..DEPTH_LOTS lots
TRADE_LOTS_P: Final = 0.35  # each tick trades Geometric(p) lots (mean 1/p ≈ 2.9)
OI_DRIFT: Final = 0.001  # stdev of the OI change per tick, fraction of OI (at least 1 lot)
OPTION_OI_LOTS: Final = 20_000  # lots; ATM open interest, decaying away from the money
OI_MONEYNESS_WIDTH: Final = 0.02  # ln(K/S) scale of that decay
FUTURE_OI_LOTS: Final = 150_000  # lots; near-month future, each later month a fifth
MAX_STEPS_PER_BATCH: Final = 10_000  # simulator steps the feed takes to fill one batch

_MS_PER_SECOND: Final = 1000
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_NO_EXPIRY: Final = np.iinfo(np.int64).max
_INDEX: Final = 0  # instrument kind codes
_FUTURE: Final = 1
_OPTION: Final = 2
_OPTION_TYPES: Final[tuple[OptionType, OptionType]] = ("call", "put")


@dataclass(frozen=True, slots=True)
class UnderlyingSpec:
    """Model parameters of one simulated index.

    Attributes:
        spot: initial index level, points.
        vol: GBM volatility, annual.
        drift: GBM drift mu, annual.
        strike_step: NSE strike interval, points.
        atm_vol: implied volatility at the forward, annual.
        skew: dσ/d ln(K/F); negative makes OTM puts dearer than OTM calls.
        curvature: d²σ/d ln(K/F)² / 2, the smile's convexity.
    """

    spot: float
    vol: float
    drift: float
    strike_step: Decimal
    atm_vol: float
    skew: float
    curvature: float


# The ATM implied vol equals the GBM vol, so ATM options are fair under the simulated paths.
DEFAULT_SPECS: Final[Mapping[str, UnderlyingSpec]] = MappingProxyType(
    {
        "NIFTY": UnderlyingSpec(24_000.0, 0.13, 0.0, Decimal(50), 0.13, -0.5, 2.0),
        "BANKNIFTY": UnderlyingSpec(52_000.0, 0.16, 0.0, Decimal(100), 0.16, -0.4, 1.5),
    }
)


@dataclass(frozen=True, slots=True)
class OptionInputs:
    """The bsm inputs (q = 0) behind an option's last simulated tick, and its model price."""

    spot: float
    strike: float
    time_to_expiry: float
    volatility: float
    rate: float
    price: float
    ts: int


def _ist_date(ts_ms: int) -> date:
    return (_EPOCH + timedelta(milliseconds=ts_ms)).astimezone(IST).date()


def _price(ticks: int) -> Decimal:
    # An exact multiple of 0.05 with two decimals, e.g. 481 ticks -> Decimal("24.05").
    return Decimal(ticks * 5).scaleb(-2)


class MarketSimulator:
    """Seeded generator of index, futures and option-chain ticks (see the module docstring)."""

    def __init__(
        self,
        calendar: MarketCalendar,
        *,
        seed: int,
        start_ms: int,
        underlyings: Sequence[str] = ("NIFTY", "BANKNIFTY"),
        monthly_expiries: int = 3,
        weekly_expiries: int = 2,
        strikes_each_side: int = 10,
        update_fraction: float = 1.0,
        rate: float = RATE,
        specs: Mapping[str, UnderlyingSpec] = DEFAULT_SPECS,
    ) -> None:
        """Build the instruments and the initial state.

        Args:
            calendar: expiries and lot sizes come from it.
            seed: seeds the simulator's own `numpy.random.Generator`.
            start_ms: epoch ms of the initial state; contracts expiring by then are left out.
            underlyings: names in `specs`; each gets its index, monthly futures and options.
            monthly_expiries: monthly expiries per underlying (futures and option chains).
            weekly_expiries: weekly option expiries added where the calendar has weeklies.
            strikes_each_side: strikes above and below the initial ATM strike.
            update_fraction: chance that a live instrument ticks in a `step`; 1.0 = all.
            rate: r for the carry and the option model.
            specs: model parameters by underlying.

        Raises:
            ValueError: an unknown underlying, a bad count or fraction, or a contract
                with no lot size in the calendar.
            ExpiryRulesUnavailableError: `start_ms` is before the calendar's expiry rules.
        """
        if not 0.0 < update_fraction <= 1.0:
            raise ValueError(f"update_fraction must be in (0, 1], not {update_fraction}")
        if monthly_expiries < 1 or weekly_expiries < 0 or strikes_each_side < 0:
            raise ValueError("need monthly_expiries >= 1, weekly_expiries, strikes_each_side >= 0")
        unknown = [u for u in underlyings if u not in specs]
        if unknown:
            raise ValueError(f"no model parameters for {unknown}")
        self._rng = np.random.default_rng(seed)
        self._rate = rate
        self._update_fraction = update_fraction
        self._now_ms = start_ms
        self._day = _ist_date(start_ms)
        self._underlyings = tuple(underlyings)
        chosen = [specs[u] for u in underlyings]
        self._spots = np.array([s.spot for s in chosen])
        self._vol, self._drift, self._atm_vol, self._skew, self._curvature = np.array(
            [(s.vol, s.drift, s.atm_vol, s.skew, s.curvature) for s in chosen]
        ).T.copy()
        counts = (monthly_expiries, weekly_expiries, strikes_each_side)
        rows = _build(calendar, self._rng, start_ms, [(u, specs[u]) for u in underlyings], counts)
        insts = self._instruments = [inst for inst, _, _ in rows]
        self._symbols = [inst.symbol for inst in insts]
        self._index_of = {s: i for i, s in enumerate(self._symbols)}
        kind = {"index": _INDEX, "future": _FUTURE, "option": _OPTION}
        self._kind = np.array([kind[inst.kind] for inst in insts], dtype=np.int8)
        self._und_of = np.array([und for _, und, _ in rows], dtype=np.intp)
        self._expiry_ms = np.array(
            [_NO_EXPIRY if x.expiry is None else expiry_ts_ms(x.expiry) for x in insts], np.int64
        )
        self._strike = np.array([math.nan if x.strike is None else float(x.strike) for x in insts])
        self._type = np.array([inst.option_type or "call" for inst in insts])
        self._lot = np.array([inst.lot_size for inst in insts], dtype=np.int64)
        self._oi_lots = np.rint([oi for _, _, oi in rows]).astype(np.int64)
        self._volume = np.zeros(len(insts), dtype=np.int64)
        # Model inputs of each option's last tick (NaN until it has ticked).
        self._inputs = np.full((4, len(insts)), np.nan)  # spot, T, sigma, model price
        self._inputs_ts = np.zeros(len(insts), dtype=np.int64)

    @property
    def now_ms(self) -> int:
        """The timestamp of the last step (the start before the first)."""
        return self._now_ms

    def instruments(self) -> list[Instrument]:
        """Return every simulated instrument: per underlying its index, futures, then options."""
        return list(self._instruments)

    def spot(self, underlying: str) -> float:
        """Return the current (unrounded) model spot of `underlying`.

        Raises:
            ValueError: `underlying` is not simulated.
        """
        return float(self._spots[self._underlyings.index(underlying)])

    def option_inputs(self, symbol: str) -> OptionInputs | None:
        """Return the model inputs behind the last tick of option `symbol`.

        Returns:
            None when `symbol` is not a simulated option or has not ticked yet.
        """
        i = self._index_of.get(symbol)
        if i is None or self._kind[i] != _OPTION or math.isnan(self._inputs[0, i]):
            return None
        spot, t, sigma, price = self._inputs[:, i].tolist()
        return OptionInputs(
            spot, float(self._strike[i]), t, sigma, self._rate, price, int(self._inputs_ts[i])
        )

    def step(self, now_ms: int) -> list[Tick]:
        """Advance the model to `now_ms` and return the ticks of that instant.

        Args:
            now_ms: epoch ms, not before the previous step; the ticks' `ts`.

        Returns:
            One tick per live instrument (or a random subset, see `update_fraction`),
            in `instruments()` order.

        Raises:
            ValueError: `now_ms` is earlier than the previous step.
        """
        if now_ms < self._now_ms:
            raise ValueError(f"time went backwards: {now_ms} < {self._now_ms}")
        rng = self._rng
        dt = (now_ms - self._now_ms) / _MS_PER_SECOND / SECONDS_PER_YEAR
        self._now_ms = now_ms
        day = _ist_date(now_ms)
        if day != self._day:
            self._day = day
            self._volume[:] = 0
        if dt > 0.0:
            z = rng.standard_normal(self._spots.size)
            vol = self._vol
            self._spots *= np.exp((self._drift - 0.5 * vol * vol) * dt + vol * math.sqrt(dt) * z)
        live = self._expiry_ms > now_ms
        if self._update_fraction < 1.0:
            live &= rng.random(live.size) < self._update_fraction
        idx = np.flatnonzero(live)
        kind = self._kind[idx]
        und = self._und_of[idx]
        spot = self._spots[und]
        # FINANCE.md §1 exactly: (ms / 1000) / (365·86400), as time_to_expiry computes it.
        t = np.where(kind == _INDEX, 0.0, (self._expiry_ms[idx] - now_ms) / _MS_PER_SECOND)
        t /= SECONDS_PER_YEAR
        fair = spot * np.exp(self._rate * t)  # an index has t = 0: its spot
        opt = kind == _OPTION
        if opt.any():
            fair[opt] = self._price_options(
                idx[opt], spot[opt], t[opt], fair[opt], und[opt], now_ms
            )
        ltp = np.maximum(1, np.rint(fair / TICK)).astype(np.int64)
        n = idx.size
        spread = 1 + rng.poisson(fair * (SPREAD_FRACTION / TICK))
        bid = np.maximum(1, ltp - rng.integers(0, spread + 1))
        ask = bid + spread
        lot = self._lot[idx]
        bid_qty = lot * rng.integers(1, DEPTH_LOTS + 1, n)
        ask_qty = lot * rng.integers(1, DEPTH_LOTS + 1, n)
        self._volume[idx] += lot * rng.geometric(TRADE_LOTS_P, n)
        oi = self._oi_lots[idx]
        change = rng.normal(0.0, np.maximum(1.0, oi * OI_DRIFT))
        oi = np.maximum(0, oi + np.rint(change).astype(np.int64))
        self._oi_lots[idx] = oi
        return self._ticks(idx, kind, [ltp, bid, ask, bid_qty, ask_qty, oi * lot], now_ms)

    def _price_options(
        self,
        idx: npt.NDArray[np.intp],
        spot: npt.NDArray[np.float64],
        t: npt.NDArray[np.float64],
        forward: npt.NDArray[np.float64],
        und: npt.NDArray[np.intp],
        now_ms: int,
    ) -> npt.NDArray[np.float64]:
        strike = self._strike[idx]
        x = np.log(strike / forward)
        sigma = np.maximum(
            MIN_VOL, self._atm_vol[und] + self._skew[und] * x + self._curvature[und] * x * x
        )
        price = greeks_batch(
            "bsm",
            self._type[idx],
            underlying=spot,
            strike=strike,
            time_to_expiry=t,
            volatility=sigma,
            rate=self._rate,
        ).price
        self._inputs[:4, idx] = (spot, t, sigma, price)
        self._inputs_ts[idx] = now_ms
        return price

    def _ticks(
        self,
        idx: npt.NDArray[np.intp],
        kind: npt.NDArray[np.int8],
        columns: list[npt.NDArray[np.int64]],
        now_ms: int,
    ) -> list[Tick]:
        symbols, volume, p = self._symbols, self._volume[idx].tolist(), _price
        out: list[Tick] = []
        rows = zip(idx.tolist(), kind.tolist(), *(c.tolist() for c in columns), volume, strict=True)
        for i, k, last, b, a, bq, aq, oi, vol in rows:
            if k == _INDEX:
                out.append(Tick(symbols[i], p(last), now_ms))
            else:
                out.append(Tick(symbols[i], p(last), now_ms, p(b), p(a), bq, aq, vol, oi))
        return out


def _build(
    calendar: MarketCalendar,
    rng: np.random.Generator,
    start_ms: int,
    underlyings: list[tuple[str, UnderlyingSpec]],
    counts: tuple[int, int, int],
) -> list[tuple[Instrument, int, float]]:
    # (instrument, underlying number, initial OI in lots) per underlying: index, futures, options.
    monthly_count, weekly_count, each_side = counts
    rows: list[tuple[Instrument, int, float]] = []
    for i, (name, spec) in enumerate(underlyings):
        rows.append((Instrument(name, "index", None, None, None, None, 1, TICK_SIZE), i, 0.0))
        monthly = _live_expiries(calendar, name, start_ms, monthly_count, "monthly")
        try:
            weekly = _live_expiries(calendar, name, start_ms, weekly_count, "weekly")
        except NoWeeklyExpiryError:
            weekly = []
        # Enough monthlies to span every weekly: a weekly on one of them takes its format.
        monthly_days = set(
            calendar.expiries(name, _ist_date(start_ms), len(weekly) + monthly_count + 1, "monthly")
        )
        for n, expiry in enumerate(monthly):
            lot = _lot_size(calendar, name, expiry)
            symbol = future_symbol(name, expiry)
            future = Instrument(symbol, "future", name, expiry, None, None, lot, TICK_SIZE)
            rows.append((future, i, FUTURE_OI_LOTS * 0.2**n * rng.uniform(0.9, 1.1)))
        step = spec.strike_step
        atm = round(spec.spot / float(step)) * step
        strikes = [atm + k * step for k in range(-each_side, each_side + 1) if atm + k * step > 0]
        for expiry in sorted(set(monthly) | set(weekly)):
            lot = _lot_size(calendar, name, expiry)
            for strike in strikes:
                bell = math.exp(-((math.log(float(strike) / spec.spot) / OI_MONEYNESS_WIDTH) ** 2))
                for kind in _OPTION_TYPES:
                    symbol = option_symbol(
                        name, expiry, strike, kind, monthly=expiry in monthly_days
                    )
                    option = Instrument(
                        symbol, "option", name, expiry, strike, kind, lot, TICK_SIZE
                    )
                    rows.append((option, i, OPTION_OI_LOTS * bell * rng.uniform(0.5, 1.5)))
    return rows


def _live_expiries(
    calendar: MarketCalendar, name: str, start_ms: int, count: int, kind: ExpiryKind
) -> list[date]:
    # One extra in case the first one has already expired today (after 15:30 IST).
    days = calendar.expiries(name, _ist_date(start_ms), count + 1, kind)
    return [d for d in days if expiry_ts_ms(d) > start_ms][:count]


def _lot_size(calendar: MarketCalendar, name: str, expiry: date) -> int:
    lot = calendar.lot_size(name, expiry)
    if lot is None:
        raise ValueError(f"the calendar has no lot size for {name} expiring {expiry}")
    return lot


class TickSource(Protocol):
    """What the feed takes ticks from: `MarketSimulator` or a fake."""

    def step(self, now_ms: int) -> list[Tick]: ...


@dataclass(frozen=True, slots=True)
class FeedStatistics:
    """Counters of a `SimulatorFeed`; `slots_skipped` counts batches dropped for a slow sink."""

    batches_sent: int
    ticks_sent: int
    slots_skipped: int


class SimulatorFeed:
    """Submit simulator ticks to a sink as fixed-size batches at a fixed rate."""

    def __init__(
        self,
        simulator: TickSource,
        sink: TickSink,
        *,
        rate: float,
        batch: int,
        clock: Callable[[], int],
    ) -> None:
        """Configure the feed.

        Args:
            simulator: steps at the wall-clock time of each batch.
            sink: receives `TickBatch(source="simulator")`.
            rate: ticks per second on the trio clock; batches go out every `batch / rate` s.
            batch: ticks per batch.
            clock: wall clock, epoch ms: the ticks' `ts` and the batch's `received_ms`.

        Raises:
            ValueError: `rate` is not a finite positive number, or `batch` < 1.
        """
        if not (math.isfinite(rate) and rate > 0.0):
            raise ValueError(f"rate must be a finite positive number, not {rate}")
        if batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch}")
        self._simulator = simulator
        self._sink = sink
        self._rate = rate
        self._batch = batch
        self._clock = clock
        self._pending: deque[Tick] = deque()
        self._batches = self._ticks = self._skipped = 0

    def statistics(self) -> FeedStatistics:
        """Return the counters so far."""
        return FeedStatistics(self._batches, self._ticks, self._skipped)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Emit batches until cancelled: batch k goes out at start + k·batch/rate.

        Cancellation: runs until cancelled; a batch is either submitted or not at all.
        Error handling: errors of the sink propagate. A sink slower than the rate is
        not caught up with bursts: the missed slots are skipped and counted
        (`statistics().slots_skipped`), so the rate drops to what the sink accepts.
        """
        start = trio.current_time()
        slot = 0
        task_status.started()
        while True:
            await trio.sleep_until(start + slot * self._batch / self._rate)
            ticks = self._take()
            if ticks:
                await self._sink.submit(TickBatch(tuple(ticks), "simulator", self._clock()))
                self._batches += 1
                self._ticks += len(ticks)
            slot += 1
            due = math.floor((trio.current_time() - start) * self._rate / self._batch)
            if due > slot:
                LOG.debug("sink is slow: skipping %d batch slots", due - slot)
                self._skipped += due - slot
                slot = due

    def _take(self) -> list[Tick]:
        # A step that yields nothing (every draw missed) ends the filling: the batch is short
        # rather than the loop spinning at one instant.
        pending = self._pending
        for _ in range(MAX_STEPS_PER_BATCH):
            if len(pending) >= self._batch:
                break
            ticks = self._simulator.step(self._clock())
            if not ticks:
                break
            pending.extend(ticks)
        return [pending.popleft() for _ in range(min(self._batch, len(pending)))]
