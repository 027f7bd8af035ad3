"""Market simulator: model consistency, tick realism, calendar data, determinism, the feed."""

from __future__ import annotations

import math
import tomllib
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
import trio

import protocol
from actors.feed.simulator import (
    DEFAULT_SPECS,
    MIN_VOL,
    RATE,
    MarketSimulator,
    SimulatorFeed,
)
from actors.market.messages import TickBatch
from engine.analytics import MarketCalendar, greeks, time_to_expiry
from protocol import Instrument, Tick
from protocol._symbols import parse_symbol_name

CALENDAR_DIR = Path(__file__).resolve().parents[3] / "config" / "calendar"
IST = timezone(timedelta(hours=5, minutes=30))
TICK = Decimal("0.05")
HALF_TICK = 0.025


def ist_ms(y: int, m: int, d: int, hh: int = 9, mm: int = 15, ss: int = 0) -> int:
    return int(datetime(y, m, d, hh, mm, ss, tzinfo=IST).timestamp() * 1000)


START = ist_ms(2026, 1, 5)  # Monday; NIFTY weeklies 6 and 13 Jan, monthlies 27 Jan, 24 Feb, 30 Mar


def load_calendar(*, with_lots: bool = True) -> MarketCalendar:
    nse = tomllib.loads((CALENDAR_DIR / "nse.toml").read_text(encoding="utf-8"))
    if not with_lots:
        return MarketCalendar.from_mapping(nse)
    lots = tomllib.loads((CALENDAR_DIR / "lots.toml").read_text(encoding="utf-8"))
    return MarketCalendar.from_mapping(nse, lots=lots)


@pytest.fixture(scope="module")
def calendar() -> MarketCalendar:
    return load_calendar()


@pytest.fixture
def sim(calendar) -> MarketSimulator:
    return MarketSimulator(calendar, seed=42, start_ms=START)


# Step times: the open, a few seconds, then late on the 6 Jan weekly expiry day (T ~ 30 min).
STEP_TIMES = [START + k * 1000 for k in range(5)] + [
    ist_ms(2026, 1, 6, 12, 0),
    ist_ms(2026, 1, 6, 15, 0),
    ist_ms(2026, 1, 6, 15, 29, 59),
]


def run_steps(sim: MarketSimulator, times: list[int]) -> list[list[Tick]]:
    return [sim.step(t) for t in times]


def by_symbol(sim: MarketSimulator) -> dict[str, Instrument]:
    return {inst.symbol: inst for inst in sim.instruments()}


def smile(underlying: str, strike: float, forward: float) -> float:
    spec = DEFAULT_SPECS[underlying]
    x = math.log(strike / forward)
    return max(MIN_VOL, spec.atm_vol + spec.skew * x + spec.curvature * x * x)


def test_option_ltp_is_its_model_price_rounded_to_the_tick(sim):
    """Each option's ltp is the bsm price of its recorded inputs within half a tick, or one tick."""
    instruments = by_symbol(sim)
    checked = 0
    for ticks in (sim.step(t) for t in STEP_TIMES):
        for tick in ticks:
            inst = instruments[tick.symbol]
            if inst.kind != "option":
                continue
            inputs = sim.option_inputs(tick.symbol)
            assert inputs is not None
            assert inputs.ts == tick.ts
            assert inputs.time_to_expiry == time_to_expiry(inst.expiry, tick.ts)
            assert inputs.strike == float(inst.strike)
            assert inputs.rate == RATE
            price = greeks(
                "bsm",
                inst.option_type,
                underlying=inputs.spot,
                strike=inputs.strike,
                time_to_expiry=inputs.time_to_expiry,
                volatility=inputs.volatility,
                rate=inputs.rate,
            ).price
            assert price == inputs.price
            if price < HALF_TICK:
                assert tick.ltp == TICK
            else:
                assert abs(float(tick.ltp) - price) <= HALF_TICK + 1e-9
            checked += 1
    assert checked > 1000


def test_option_volatility_follows_the_documented_smile(sim):
    """sigma = atm_vol + skew*ln(K/F) + curvature*ln(K/F)^2 with F = S*e^(rT), floored."""
    instruments = by_symbol(sim)
    for tick in sim.step(START):
        inst = instruments[tick.symbol]
        inputs = sim.option_inputs(tick.symbol)
        if inputs is None:
            continue
        forward = inputs.spot * math.exp(inputs.rate * inputs.time_to_expiry)
        expected = smile(inst.underlying, inputs.strike, forward)
        assert inputs.volatility == pytest.approx(expected, rel=1e-12)
    put_wing = sim.option_inputs("NIFTY26JAN23500PE")
    atm = sim.option_inputs("NIFTY26JAN24000PE")
    assert put_wing is not None
    assert atm is not None
    assert put_wing.volatility > atm.volatility  # negative skew: OTM puts are dearer


def test_put_call_parity_holds_within_tick_rounding(sim):
    """C - P = S - K*e^(-rT) for each strike, to within the two prices' rounding."""
    instruments = by_symbol(sim)
    pairs = 0
    for ticks in (sim.step(t) for t in STEP_TIMES):
        ltp = {t.symbol: t.ltp for t in ticks}
        for symbol, call in ltp.items():
            inst = instruments[symbol]
            if inst.option_type != "call":
                continue
            put = ltp[symbol[:-2] + "PE"]
            inputs = sim.option_inputs(symbol)
            assert inputs is not None
            parity = inputs.spot - inputs.strike * math.exp(-inputs.rate * inputs.time_to_expiry)
            floored = TICK in (call, put)
            tolerance = 0.075 if floored else 0.05  # a floored price is off by up to a tick
            assert abs(float(call - put) - parity) <= tolerance + 1e-9
            pairs += 1
    assert pairs > 500


def test_futures_trade_at_the_cost_of_carry(sim):
    """F = S*e^(rT) rounded to the tick, with S the model spot of the step."""
    instruments = by_symbol(sim)
    for now in STEP_TIMES:
        for tick in sim.step(now):
            inst = instruments[tick.symbol]
            if inst.kind == "future":
                t = time_to_expiry(inst.expiry, now)
                fair = sim.spot(inst.underlying) * math.exp(RATE * t)
                assert abs(float(tick.ltp) - fair) <= HALF_TICK + 1e-9
            elif inst.kind == "index":
                assert abs(float(tick.ltp) - sim.spot(inst.symbol)) <= HALF_TICK + 1e-9


def test_every_price_is_a_positive_multiple_of_the_tick(sim):
    """ltp, bid and ask are Decimals, > 0 and whole multiples of 0.05."""
    for ticks in run_steps(sim, STEP_TIMES):
        for tick in ticks:
            for price in (tick.ltp, tick.bid, tick.ask):
                if price is None:
                    continue
                assert isinstance(price, Decimal)
                assert price > 0
                assert price % TICK == 0


def test_quotes_bracket_the_last_price(sim):
    """bid <= ltp <= ask and bid < ask for tradables; an index tick carries the ltp only."""
    instruments = by_symbol(sim)
    for ticks in run_steps(sim, STEP_TIMES):
        for tick in ticks:
            if instruments[tick.symbol].kind == "index":
                assert (tick.bid, tick.ask, tick.volume, tick.oi) == (None, None, None, None)
                continue
            assert tick.bid is not None
            assert tick.ask is not None
            assert tick.bid <= tick.ltp <= tick.ask
            assert tick.bid < tick.ask


def test_quantities_are_whole_lots(sim):
    """bid_qty, ask_qty, volume and OI are multiples of the lot size; quotes are >= 1 lot."""
    instruments = by_symbol(sim)
    for ticks in run_steps(sim, STEP_TIMES):
        for tick in ticks:
            lot = instruments[tick.symbol].lot_size
            if instruments[tick.symbol].kind == "index":
                continue
            assert tick.bid_qty >= lot
            assert tick.ask_qty >= lot
            for qty in (tick.bid_qty, tick.ask_qty, tick.volume, tick.oi):
                assert qty % lot == 0


def test_cumulative_volume_grows_within_a_day(sim):
    """Each tick trades: a symbol's day volume strictly increases from tick to tick."""
    last: dict[str, int] = {}
    for ticks in run_steps(sim, [START + k * 250 for k in range(40)]):
        for tick in ticks:
            if tick.volume is None:
                continue
            assert tick.volume > last.get(tick.symbol, 0)
            last[tick.symbol] = tick.volume


def test_volume_restarts_on_a_new_ist_day(sim):
    """The first tick of the next IST date carries only that day's volume."""
    first = {t.symbol: t.volume for t in run_steps(sim, [START + k * 1000 for k in range(20)])[-1]}
    next_day = {t.symbol: t.volume for t in sim.step(ist_ms(2026, 1, 6, 9, 15))}
    future = "NIFTY26JANFUT"
    assert 0 < next_day[future] < first[future]


def test_open_interest_drifts(sim):
    """OI changes over the steps but stays non-negative."""
    oi: dict[str, set[int]] = defaultdict(set)
    for ticks in run_steps(sim, [START + k * 1000 for k in range(30)]):
        for tick in ticks:
            if tick.oi is not None:
                assert tick.oi >= 0
                oi[tick.symbol].add(tick.oi)
    assert all(len(values) > 1 for values in oi.values())


def test_instruments_survive_the_wire_round_trip(sim):
    """Every instrument validates through protocol.parse_instrument after JSON encoding."""
    for inst in sim.instruments():
        wire = protocol.loads(protocol.dumps(inst.to_wire()))
        assert protocol.parse_instrument(wire) == inst


def test_ticks_validate_at_the_ingest_boundary(sim):
    """A step's ticks pass protocol.parse_ticks with zero errors and come back unchanged."""
    for now, ticks in zip(STEP_TIMES, run_steps(sim, STEP_TIMES), strict=True):
        wire = protocol.loads(protocol.dumps([t.to_wire() for t in ticks]))
        valid, errors = protocol.parse_ticks(wire, now_ms=now)
        assert errors == []
        assert valid == ticks


def test_symbols_parse_back_to_their_instruments(sim, calendar):
    """Future and option symbols parse into the instrument's parts; monthlies use month style."""
    monthly = {u: set(calendar.expiries(u, date(2026, 1, 5), 4, "monthly")) for u in DEFAULT_SPECS}
    for inst in sim.instruments():
        parsed = parse_symbol_name(inst.symbol)
        if inst.kind == "index":
            assert parsed is None
            continue
        assert parsed is not None
        assert (parsed.underlying, parsed.kind) == (inst.underlying, inst.kind)
        assert (parsed.strike, parsed.option_type) == (inst.strike, inst.option_type)
        assert parsed.matches_expiry(inst.expiry)
        assert parsed.monthly == (inst.expiry in monthly[inst.underlying])


def test_expiries_come_from_the_calendar(sim, calendar):
    """NIFTY: two weeklies + three monthlies; BANKNIFTY: three monthlies; futures: monthlies."""
    found: dict[tuple[str, str], set[date]] = defaultdict(set)
    for inst in sim.instruments():
        if inst.expiry is not None:
            found[inst.underlying, inst.kind].add(inst.expiry)
    day = date(2026, 1, 5)
    nifty_monthly = calendar.expiries("NIFTY", day, 3, "monthly")
    assert found["NIFTY", "future"] == set(nifty_monthly)
    assert found["NIFTY", "option"] == set(calendar.expiries("NIFTY", day, 2)) | set(nifty_monthly)
    assert found["BANKNIFTY", "future"] == set(calendar.expiries("BANKNIFTY", day, 3, "monthly"))
    assert found["BANKNIFTY", "option"] == found["BANKNIFTY", "future"]
    assert sorted(found["NIFTY", "option"]) == [
        date(2026, 1, 6),
        date(2026, 1, 13),
        date(2026, 1, 27),
        date(2026, 2, 24),
        date(2026, 3, 30),  # last Tuesday 31 Mar is a holiday: the trading day before
    ]
    for expiry in set().union(*found.values()):
        tuesday = expiry + timedelta(days=(1 - expiry.weekday()) % 7)
        assert expiry == tuesday or tuesday in calendar.holiday_names


def test_monthly_expiries_are_last_tuesdays(sim, calendar):
    """Each future expires on its month's last Tuesday, or the trading day before it."""
    for inst in sim.instruments():
        if inst.kind == "future":
            tuesday = inst.expiry + timedelta(days=(1 - inst.expiry.weekday()) % 7)
            assert (tuesday + timedelta(days=7)).month != tuesday.month


def test_lot_sizes_match_the_calendar(sim):
    """NIFTY contracts expiring in 2026 trade in lots of 65, BANKNIFTY in lots of 30."""
    lots = {(i.underlying, i.kind): i.lot_size for i in sim.instruments() if i.kind != "index"}
    assert lots == {
        ("NIFTY", "future"): 65,
        ("NIFTY", "option"): 65,
        ("BANKNIFTY", "future"): 30,
        ("BANKNIFTY", "option"): 30,
    }


def test_lot_size_follows_each_contracts_expiry(calendar):
    """Started in Nov 2025, 2025 expiries keep the old NIFTY lot of 75 and Jan 2026 gets 65."""
    sim = MarketSimulator(calendar, seed=1, start_ms=ist_ms(2025, 11, 3), underlyings=("NIFTY",))
    futures = {i.expiry: i.lot_size for i in sim.instruments() if i.kind == "future"}
    assert futures == {date(2025, 11, 25): 75, date(2025, 12, 30): 75, date(2026, 1, 27): 65}


def test_strikes_are_centred_on_the_money_at_nse_steps(sim):
    """21 strikes per expiry around 24000 in steps of 50 (NIFTY) and 52000 in 100 (BANKNIFTY)."""
    strikes: dict[str, set[Decimal]] = defaultdict(set)
    for inst in sim.instruments():
        if inst.strike is not None:
            strikes[inst.underlying].add(inst.strike)
    assert strikes["NIFTY"] == {Decimal(23500 + 50 * k) for k in range(21)}
    assert strikes["BANKNIFTY"] == {Decimal(51000 + 100 * k) for k in range(21)}
    assert all(inst.tick_size == TICK for inst in sim.instruments())


def test_same_seed_gives_the_same_ticks(calendar):
    """Two simulators with one seed and one step schedule produce identical ticks."""
    a = MarketSimulator(calendar, seed=7, start_ms=START, update_fraction=0.5)
    b = MarketSimulator(calendar, seed=7, start_ms=START, update_fraction=0.5)
    assert run_steps(a, STEP_TIMES) == run_steps(b, STEP_TIMES)


def test_different_seeds_give_different_paths(calendar):
    """Another seed moves the spot differently."""
    a = MarketSimulator(calendar, seed=7, start_ms=START)
    b = MarketSimulator(calendar, seed=8, start_ms=START)
    assert run_steps(a, STEP_TIMES)[-1] != run_steps(b, STEP_TIMES)[-1]


def test_update_fraction_ticks_a_random_subset(calendar):
    """With update_fraction 0.3 about 30 % of the instruments tick, each at most once."""
    sim = MarketSimulator(calendar, seed=3, start_ms=START, update_fraction=0.3)
    total = len(sim.instruments())
    counts = []
    for ticks in run_steps(sim, [START + k * 1000 for k in range(50)]):
        symbols = [t.symbol for t in ticks]
        assert len(set(symbols)) == len(symbols)
        counts.append(len(ticks))
    assert 0.25 * total < np.mean(counts) < 0.35 * total


def test_spot_follows_gbm_with_the_configured_volatility(calendar):
    """Log returns of minute steps have the NIFTY and BANKNIFTY annual vol, scaled by sqrt(dt)."""
    sim = MarketSimulator(
        calendar,
        seed=11,
        start_ms=START,
        weekly_expiries=0,
        monthly_expiries=1,
        strikes_each_side=0,
    )
    step_ms = 60_000
    paths: dict[str, list[float]] = {"NIFTY": [], "BANKNIFTY": []}
    for k in range(3000):
        sim.step(START + k * step_ms)
        for name, path in paths.items():
            path.append(math.log(sim.spot(name)))
    dt = step_ms / 1000 / (365 * 86400)
    for name, path in paths.items():
        realised = np.std(np.diff(path), ddof=1) / math.sqrt(dt)
        assert realised == pytest.approx(DEFAULT_SPECS[name].vol, rel=0.05)


def test_expired_contracts_stop_ticking(sim):
    """At and after 15:30 IST on 6 Jan the 6 Jan weeklies produce no ticks."""
    expiring = {i.symbol for i in sim.instruments() if i.expiry == date(2026, 1, 6)}
    before = {t.symbol for t in sim.step(ist_ms(2026, 1, 6, 15, 29, 59))}
    after = {t.symbol for t in sim.step(ist_ms(2026, 1, 6, 15, 30))}
    assert expiring <= before
    assert not expiring & after
    assert len(after) == len(before) - len(expiring)


def test_an_expiry_already_past_at_start_is_left_out(calendar):
    """Started after the 6 Jan close, the nearest NIFTY weekly is 13 Jan."""
    sim = MarketSimulator(calendar, seed=1, start_ms=ist_ms(2026, 1, 6, 16, 0))
    expiries = sorted({i.expiry for i in sim.instruments() if i.underlying == "NIFTY"})
    assert expiries[0] == date(2026, 1, 13)
    assert len(expiries) == 5


def test_step_refuses_time_going_backwards(sim):
    """A step earlier than the previous one is a ValueError."""
    sim.step(START + 1000)
    with pytest.raises(ValueError, match="backwards"):
        sim.step(START)


def test_missing_model_or_lot_data_is_refused(calendar):
    """An underlying without model parameters, or a contract without a lot size, is refused."""
    with pytest.raises(ValueError, match="model parameters"):
        MarketSimulator(calendar, seed=1, start_ms=START, underlyings=("FINNIFTY",))
    with pytest.raises(ValueError, match="lot size"):
        MarketSimulator(load_calendar(with_lots=False), seed=1, start_ms=START)
    with pytest.raises(ValueError, match="update_fraction"):
        MarketSimulator(calendar, seed=1, start_ms=START, update_fraction=0.0)


# ------------------------------------------------------------------------------- feed


class RecordingSink:
    """A TickSink that records each batch with the trio time it arrived."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[TickBatch] = []
        self.times: list[float] = []
        self.delay = delay

    async def submit(self, batch: TickBatch) -> None:
        self.times.append(trio.current_time())
        self.batches.append(batch)
        if self.delay:
            await trio.sleep(self.delay)

    @property
    def ticks(self) -> int:
        return sum(len(b.ticks) for b in self.batches)


class CountingSource:
    """A TickSource yielding `per_step` numbered ticks per step."""

    def __init__(self, per_step: int) -> None:
        self.per_step = per_step
        self.made = 0

    def step(self, now_ms: int) -> list[Tick]:
        ticks = [Tick(f"S{self.made + i}", Decimal(1), now_ms) for i in range(self.per_step)]
        self.made += self.per_step
        return ticks


def wall_clock() -> int:
    return START + round(trio.current_time() * 1000)


async def test_feed_emits_the_configured_ticks_per_virtual_second(autojump_clock, calendar):
    """rate 1000/s in batches of 100: 10 full batches per virtual second, stamped by the clock."""
    sink = RecordingSink()
    feed = SimulatorFeed(
        MarketSimulator(calendar, seed=5, start_ms=START),
        sink,
        rate=1000,
        batch=100,
        clock=wall_clock,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(feed.run)
        await trio.sleep(0.95)
        assert sink.ticks == 1000
        assert [len(b.ticks) for b in sink.batches] == [100] * 10
        await trio.sleep(1.0)
        assert trio.current_time() == 1.95
        assert sink.ticks == 2000
        nursery.cancel_scope.cancel()
    assert sink.times == pytest.approx([k / 10 for k in range(20)])
    for batch in sink.batches:
        assert batch.source == "simulator"
        assert all(t.ts <= batch.received_ms for t in batch.ticks)
    assert feed.statistics().ticks_sent == 2000
    assert feed.statistics().slots_skipped == 0


async def test_feed_carries_leftover_ticks_into_the_next_batch(autojump_clock):
    """Steps of 3 ticks fill batches of 5 in order, with no tick lost or repeated."""
    sink = RecordingSink()
    feed = SimulatorFeed(CountingSource(3), sink, rate=50, batch=5, clock=wall_clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(feed.run)
        await trio.sleep(0.55)  # batches at 0, 0.1, ..., 0.5
        nursery.cancel_scope.cancel()
    symbols = [t.symbol for b in sink.batches for t in b.ticks]
    assert symbols == [f"S{i}" for i in range(30)]


async def test_feed_sends_nothing_while_the_source_is_empty(autojump_clock):
    """A source with no ticks yields no batches and the feed keeps to its schedule."""
    sink = RecordingSink()
    feed = SimulatorFeed(CountingSource(0), sink, rate=100, batch=10, clock=wall_clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(feed.run)
        await trio.sleep(1.0)
        nursery.cancel_scope.cancel()
    assert sink.batches == []


async def test_slow_sink_skips_slots_instead_of_bursting(autojump_clock):
    """A sink taking 0.25 s per batch gets one every 0.25 s; missed 0.1 s slots are counted."""
    sink = RecordingSink(delay=0.25)
    feed = SimulatorFeed(CountingSource(100), sink, rate=1000, batch=100, clock=wall_clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(feed.run)
        await trio.sleep(0.9)
        nursery.cancel_scope.cancel()
    assert sink.times == [0.0, 0.25, 0.5, 0.75]
    assert feed.statistics().slots_skipped == 4


@pytest.mark.parametrize(("rate", "batch"), [(0.0, 10), (-1.0, 10), (math.inf, 10), (10.0, 0)])
def test_feed_refuses_a_bad_rate_or_batch(rate, batch):
    """The rate must be finite and positive and a batch at least one tick."""
    with pytest.raises(ValueError, match=r"rate|batch"):
        SimulatorFeed(CountingSource(1), RecordingSink(), rate=rate, batch=batch, clock=wall_clock)
