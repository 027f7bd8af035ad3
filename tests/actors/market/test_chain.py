"""Live option chains: snapshot rules, agreement with the pure analytics and the simulator,
and the throttled, conflated publisher."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from decimal import Decimal

import numpy as np
import orjson
import pytest
import trio
import trio.testing

import protocol
from actors.feed.simulator import MarketSimulator
from actors.market.actor import MarketActor
from actors.market.chain import (
    CHAIN_RATE,
    CHAIN_THROTTLE,
    ChainPublisher,
    ChainSnapshot,
    OptionSide,
    build_chain,
    chain_channel,
    chain_snapshot,
)
from actors.market.instruments import InstrumentMaster
from actors.market.live import UniverseCache
from actors.market.messages import Quote, TickBatch
from engine.analytics import (
    ChainRow,
    analyze_chain,
    greeks,
    greeks_batch,
    implied_volatility,
    implied_volatility_batch,
    optional_floats,
    time_to_expiry,
)
from engine.bus import BusUnavailable, InProcessBus
from engine.calendar import load_calendar
from engine.config import Config
from engine.context import Engine
from protocol import Instrument, Tick
from tests.kit.fakes import FakeClock, fake_engine

# Tue 1 Dec 2026 10:00 IST; the December monthly expires on Tue 29 Dec 2026.
OPEN_MS = int(dt.datetime(2026, 12, 1, 4, 30, tzinfo=dt.UTC).timestamp() * 1000)
EXPIRY = dt.date(2026, 12, 29)
TICK_SIZE = Decimal("0.05")
# Price rounding of the simulator: an ltp or index level is within half a tick of its model value.
HALF_TICK = 0.025


def _option(strike: int, kind: str, expiry: dt.date = EXPIRY, und: str = "NIFTY") -> Instrument:
    suffix = "CE" if kind == "call" else "PE"
    symbol = f"{und}26DEC{strike}{suffix}"
    return Instrument(symbol, "option", und, expiry, Decimal(strike), kind, 65, TICK_SIZE)  # type: ignore[arg-type]


def _quote(symbol: str, ltp: str, oi: int | None = None, volume: int | None = None) -> Quote:
    return Quote(symbol, Decimal(ltp), None, None, volume, oi, OPEN_MS, OPEN_MS)


def _side(snapshot: ChainSnapshot, strike: int, kind: str) -> OptionSide | None:
    row = next(r for r in snapshot.rows if r.strike == strike)
    return row.call if kind == "call" else row.put


# NIFTY at 24000, a month out: mid-smile prices (rounded to the tick).
PRICES = {
    (23800, "call"): "544.3",
    (23800, "put"): "224.95",
    (24000, "call"): "415.5",
    (24000, "put"): "295.15",
    (24200, "call"): "304.5",
    (24200, "put"): "383.15",
}


def _chain() -> tuple[list[Instrument], dict[str, Quote]]:
    options = [_option(k, kind) for k, kind in PRICES]
    quotes = {
        _option(k, kind).symbol: _quote(_option(k, kind).symbol, ltp, oi=1000 + k // 100, volume=k)
        for (k, kind), ltp in PRICES.items()
    }
    return options, quotes


def test_iv_and_greeks_equal_the_pure_batch_functions_on_the_same_inputs() -> None:
    """Each side's IV and Greeks are implied_volatility_batch/greeks_batch's (bsm, r = 0.065)."""
    options, quotes = _chain()
    snap = build_chain("NIFTY", EXPIRY, reversed(options), quotes, Decimal(24000), OPEN_MS)
    ordered = sorted(PRICES)  # by strike, then "call" < "put": the snapshot's row order
    t = time_to_expiry(EXPIRY, OPEN_MS)
    types = np.array([kind for _, kind in ordered])
    strikes = np.array([float(k) for k, _ in ordered])
    prices = np.array([float(PRICES[key]) for key in ordered])
    iv = implied_volatility_batch(
        "bsm",
        types,
        price=prices,
        underlying=24000.0,
        strike=strikes,
        time_to_expiry=t,
        rate=CHAIN_RATE,
    )
    g = greeks_batch(
        "bsm",
        types,
        underlying=24000.0,
        strike=strikes,
        time_to_expiry=t,
        volatility=iv,
        rate=CHAIN_RATE,
    )
    columns = [optional_floats(c) for c in (iv, g.delta, g.gamma, g.theta, g.vega)]
    expected = list(zip(*columns, strict=True))
    for (k, kind), want in zip(ordered, expected, strict=True):
        side = _side(snap, k, kind)
        assert side is not None
        assert (side.iv, side.delta, side.gamma, side.theta, side.vega) == want
        assert side.iv is not None and 0.05 < side.iv < 0.5
        scalar_iv = implied_volatility(
            "bsm",
            kind,
            price=float(PRICES[(k, kind)]),
            underlying=24000.0,
            strike=float(k),
            time_to_expiry=t,
            rate=CHAIN_RATE,
        )
        assert side.iv == pytest.approx(scalar_iv, rel=1e-12)
        scalar = greeks(
            "bsm",
            kind,
            underlying=24000.0,
            strike=float(k),
            time_to_expiry=t,
            volatility=side.iv,
            rate=CHAIN_RATE,
        )
        assert side.delta == pytest.approx(scalar.delta, rel=1e-12)
        assert side.vega == pytest.approx(scalar.vega, rel=1e-12)


def test_rows_are_sorted_by_strike_with_quote_fields() -> None:
    """Rows ascend by strike whatever the input order; ltp/oi/volume come from the quotes."""
    options, quotes = _chain()
    snap = build_chain("NIFTY", EXPIRY, reversed(options), quotes, Decimal(24000), OPEN_MS)
    assert [r.strike for r in snap.rows] == [23800, 24000, 24200]
    side = _side(snap, 24000, "put")
    assert side is not None
    assert (side.symbol, side.ltp, side.oi, side.volume) == (
        "NIFTY26DEC24000PE",
        Decimal("295.15"),
        1240,
        24000,
    )


def test_missing_quotes_and_missing_options_are_null() -> None:
    """An unquoted option keeps its symbol with null fields; a strike without a put has put null."""
    options, quotes = _chain()
    del quotes["NIFTY26DEC24200PE"]
    options = [o for o in options if o.symbol != "NIFTY26DEC23800PE"]
    snap = build_chain("NIFTY", EXPIRY, options, quotes, Decimal(24000), OPEN_MS)
    assert _side(snap, 23800, "put") is None
    assert _side(snap, 24200, "put") == OptionSide(
        "NIFTY26DEC24200PE", None, None, None, None, None, None, None, None
    )
    call = _side(snap, 24200, "call")
    assert call is not None and call.iv is not None and call.delta is not None
    wire = snap.to_wire()["rows"]
    assert isinstance(wire, list)
    assert wire[0]["put"] is None
    assert wire[2]["put"]["ltp"] is None and wire[2]["put"]["iv"] is None


def test_no_spot_leaves_quotes_but_nulls_iv_and_greeks() -> None:
    """Without a spot the quote fields, max pain and PCR stay; IV and Greeks are null."""
    options, quotes = _chain()
    snap = build_chain("NIFTY", EXPIRY, options, quotes, None, OPEN_MS)
    assert snap.spot is None and snap.max_pain is not None
    for row in snap.rows:
        for side in (row.call, row.put):
            assert side is not None and side.ltp is not None
            assert (side.iv, side.delta, side.gamma, side.theta, side.vega) == (None,) * 5


def test_expired_chain_has_null_analytics() -> None:
    """At or after the expiry instant (T <= 0) every IV and Greek is null."""
    options, quotes = _chain()
    after = OPEN_MS + 40 * 86_400_000
    snap = build_chain("NIFTY", EXPIRY, options, quotes, Decimal(24000), after)
    assert all(r.call is not None and r.call.iv is None for r in snap.rows)


def test_price_below_intrinsic_has_null_iv() -> None:
    """A price at or below the discounted intrinsic has no IV (FINANCE.md §3), hence no Greeks."""
    options, quotes = _chain()
    quotes["NIFTY26DEC23800CE"] = _quote("NIFTY26DEC23800CE", "100")
    snap = build_chain("NIFTY", EXPIRY, options, quotes, Decimal(24000), OPEN_MS)
    side = _side(snap, 23800, "call")
    assert side is not None and side.ltp == Decimal(100)
    assert (side.iv, side.delta, side.vega) == (None, None, None)


def test_max_pain_and_pcr_follow_analyze_chain() -> None:
    """Max pain (exact) and PCR equal analyze_chain over the same OI and volume."""
    options = [_option(k, kind) for k in (100, 110, 120) for kind in ("call", "put")]
    oi = {
        "NIFTY26DEC100CE": (10, 5),
        "NIFTY26DEC110CE": (30, 7),
        "NIFTY26DEC120CE": (20, None),
        "NIFTY26DEC100PE": (40, 9),
        "NIFTY26DEC110PE": (5, 3),
        "NIFTY26DEC120PE": (None, 1),
    }
    quotes = {s: _quote(s, "1", oi=o, volume=v) for s, (o, v) in oi.items()}
    snap = build_chain("NIFTY", EXPIRY, options, quotes, Decimal(110), OPEN_MS)
    rows = [
        ChainRow(Decimal(100), 10, 40, 5, 9),
        ChainRow(Decimal(110), 30, 5, 7, 3),
        ChainRow(Decimal(120), 20, 0, 0, 1),
    ]
    want = analyze_chain(rows)
    assert (snap.max_pain, snap.pcr_oi, snap.pcr_volume) == (
        want.max_pain,
        want.pcr_oi,
        want.pcr_volume,
    )
    # L(100) = 5·(110-100)+0 = 50; L(110) = 10·10 + 0·... = 100; L(120) = 10·20+30·10 = 500.
    assert snap.max_pain == Decimal(100)
    assert snap.pcr_oi == 45 / 60 and snap.pcr_volume == 13 / 12


def test_wire_form_uses_decimal_strings_for_money_and_numbers_for_analytics() -> None:
    """strike, ltp, spot and max_pain are decimal strings; oi/volume ints; IV/Greeks floats."""
    options, quotes = _chain()
    snap = build_chain("NIFTY", EXPIRY, options, quotes, Decimal("24000.05"), OPEN_MS)
    wire = orjson.loads(protocol.dumps(snap.to_wire()))
    assert set(wire) == {"underlying", "expiry", "spot", "max_pain", "pcr_oi", "pcr_volume", "rows"}
    assert (wire["underlying"], wire["expiry"], wire["spot"]) == ("NIFTY", "2026-12-29", "24000.05")
    assert wire["max_pain"] == str(snap.max_pain)
    assert isinstance(wire["pcr_oi"], float)
    row = wire["rows"][1]
    assert row["strike"] == "24000"
    assert set(row["call"]) == {
        "symbol",
        "ltp",
        "oi",
        "volume",
        "iv",
        "delta",
        "gamma",
        "theta",
        "vega",
    }
    assert row["call"]["ltp"] == "415.5" and row["call"]["oi"] == 1240
    assert isinstance(row["call"]["iv"], float) and isinstance(row["call"]["theta"], float)


class _FakeMarket:
    """The read side of a market actor over fixed quotes."""

    def __init__(self, instruments: Iterable[Instrument], quotes: dict[str, Quote]) -> None:
        self._instruments = sorted(instruments, key=lambda i: i.symbol)
        self._quotes = quotes

    @property
    def master(self) -> _FakeMarket:
        return self

    def all(self) -> list[Instrument]:
        return list(self._instruments)

    def __len__(self) -> int:
        return len(self._instruments)

    def quote(self, symbol: str) -> Quote | None:
        return self._quotes.get(symbol)

    def chain_quotes(self, underlying: str, expiry: dt.date) -> dict[str, Quote]:
        return {
            i.symbol: self._quotes[i.symbol]
            for i in self._instruments
            if i.kind == "option"
            and (i.underlying, i.expiry) == (underlying, expiry)
            and i.symbol in self._quotes
        }


def _future(symbol: str, expiry: dt.date) -> Instrument:
    return Instrument(symbol, "future", "NIFTY", expiry, None, None, 65, TICK_SIZE)


def test_spot_is_the_index_quote_else_the_nearest_unexpired_future() -> None:
    """The spot is the index ltp, else the nearest unexpired future's ltp."""
    options, quotes = _chain()
    index = Instrument("NIFTY", "index", None, None, None, None, 1, TICK_SIZE)
    old = _future("NIFTY26NOVFUT", dt.date(2026, 11, 24))
    near = _future("NIFTY26DECFUT", EXPIRY)
    far = _future("NIFTY27JANFUT", dt.date(2027, 1, 26))
    quotes |= {
        "NIFTY26NOVFUT": _quote("NIFTY26NOVFUT", "23000"),
        "NIFTY26DECFUT": _quote("NIFTY26DECFUT", "24120.5"),
        "NIFTY27JANFUT": _quote("NIFTY27JANFUT", "24250"),
    }
    market = _FakeMarket([*options, index, old, near, far], quotes)
    snap = chain_snapshot(market, "NIFTY", EXPIRY, OPEN_MS)
    assert snap is not None and snap.spot == Decimal("24120.5")
    quotes["NIFTY"] = _quote("NIFTY", "24001.1")
    snap = chain_snapshot(market, "NIFTY", EXPIRY, OPEN_MS)
    assert snap is not None and snap.spot == Decimal("24001.1")


def test_unknown_chain_or_chain_without_quotes_has_no_snapshot() -> None:
    """chain_snapshot is None for an expiry the master lacks, or whose options never ticked."""
    options, _ = _chain()
    market = _FakeMarket(options, {})
    assert chain_snapshot(market, "NIFTY", EXPIRY, OPEN_MS) is None
    assert chain_snapshot(market, "NIFTY", dt.date(2027, 1, 26), OPEN_MS) is None
    assert chain_snapshot(market, "BANKNIFTY", EXPIRY, OPEN_MS) is None


async def test_universe_cache_rescans_on_size_change_or_after_its_ttl(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A scan is reused within the TTL, redone at once when symbols are added, and after it."""
    options, _ = _chain()
    market = _FakeMarket(options[:2], {})
    cache = UniverseCache(market, ttl=5.0)
    first = cache.get()
    await trio.sleep(4.9)
    assert cache.get() is first
    market._instruments.append(options[2])
    second = cache.get()
    assert second is not first and len(second.chains[("NIFTY", EXPIRY)]) == 3
    await trio.sleep(5.0)
    assert cache.get() is not second


# ----------------------------------------------------------------- with the market actor


def _actor(config: Config, clock: FakeClock) -> MarketActor:
    engine = fake_engine(config, clock)
    return MarketActor(engine, InstrumentMaster(engine.store), load_calendar())


async def test_simulated_chain_ivs_match_the_simulator_smile(config: Config) -> None:
    """IVs of liquid simulated options are the simulator's smile vol up to rounding to the tick.

    The simulator prices bsm on its unrounded spot (r = 0.065, q = 0) and rounds the ltp and
    the index level to 0.05. To first order, half a tick of error in the price and half a
    tick in the spot move the IV by at most (0.025 + |delta|·0.025) / (∂V/∂σ), with delta and
    ∂V/∂σ = vega·100 of the simulator's own inputs; the test allows 10 % more for the
    second-order terms. "Liquid" means that bound is under 1 vol point and the option has at
    least 1 rupee of time value: deep ITM/OTM options priced within a few ticks of their
    bounds can legitimately have no IV after rounding (FINANCE.md §3).
    """
    calendar = load_calendar()
    start = OPEN_MS
    sim = MarketSimulator(calendar, seed=11, start_ms=start, underlyings=("NIFTY",))
    now = start + 1000
    clock = FakeClock(now)
    actor = _actor(config, clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        actor.master._apply(sim.instruments())
        await actor.submit(TickBatch(tuple(sim.step(now)), "simulator", now))
        await trio.testing.wait_all_tasks_blocked()
        chains = {(i.underlying, i.expiry) for i in sim.instruments() if i.kind == "option"}
        checked = atm = 0
        for und, expiry in sorted(chains):  # type: ignore[type-var]
            assert und is not None and expiry is not None
            snap = chain_snapshot(actor, und, expiry, now)
            assert snap is not None and snap.spot is not None
            assert abs(float(snap.spot) - sim.spot("NIFTY")) <= HALF_TICK
            for row in snap.rows:
                for kind, side in (("call", row.call), ("put", row.put)):
                    assert side is not None
                    inputs = sim.option_inputs(side.symbol)
                    assert inputs is not None
                    model = greeks(
                        "bsm",
                        kind,  # type: ignore[arg-type]
                        underlying=inputs.spot,
                        strike=inputs.strike,
                        time_to_expiry=inputs.time_to_expiry,
                        volatility=inputs.volatility,
                        rate=inputs.rate,
                    )
                    assert model.delta is not None and model.vega is not None
                    forward = inputs.spot - inputs.strike * math.exp(
                        -inputs.rate * inputs.time_to_expiry
                    )
                    intrinsic = max(0.0, forward if kind == "call" else -forward)
                    bound = (HALF_TICK + abs(model.delta) * HALF_TICK) / (model.vega * 100)
                    if bound >= 0.01 or inputs.price - intrinsic < 1.0:
                        continue
                    assert side.iv is not None, side.symbol
                    assert abs(side.iv - inputs.volatility) <= 1.1 * bound, side.symbol
                    checked += 1
                    if abs(float(row.strike) / inputs.spot - 1) < 0.005:
                        assert abs(side.iv - inputs.volatility) < 1e-3
                        atm += 1
        assert checked > 150 and atm > 20
        nursery.cancel_scope.cancel()


def _ticks(symbols: Iterable[str], price: str, ts: int, oi: int = 100) -> TickBatch:
    ticks = tuple(Tick(s, Decimal(price), ts, volume=10, oi=oi) for s in symbols)
    return TickBatch(ticks, "test", ts)


async def _publisher_setup(
    config: Config, nursery: trio.Nursery
) -> tuple[MarketActor, list[tuple[float, str, dict[str, object]]]]:
    clock = FakeClock(OPEN_MS)
    actor = _actor(config, clock)
    engine = actor._engine
    sub = engine.bus.subscribe("chain:*")
    got: list[tuple[float, str, dict[str, object]]] = []

    async def collect() -> None:
        async for message in sub:
            got.append((trio.current_time(), message.channel, orjson.loads(message.data)))

    await nursery.start(actor.run)
    options, _ = _chain()
    actor.master._apply(
        [*options, Instrument("NIFTY", "index", None, None, None, None, 1, TICK_SIZE)]
    )
    nursery.start_soon(collect)
    await nursery.start(ChainPublisher(engine, actor).run)
    return actor, got


SYMBOLS = [_option(k, kind).symbol for k, kind in PRICES]


async def test_many_ticks_in_one_interval_publish_one_snapshot(
    config: Config, autojump_clock: trio.testing.MockClock
) -> None:
    """Fifty batches within one interval give one snapshot (the latest), then none while quiet."""
    async with trio.open_nursery() as nursery:
        actor, got = await _publisher_setup(config, nursery)
        start = trio.current_time()
        for i in range(50):
            await actor.submit(_ticks([*SYMBOLS, "NIFTY"], str(200 + i), OPEN_MS + i, oi=100 + i))
        await trio.sleep(5 * CHAIN_THROTTLE)
        assert len(got) == 1
        at, channel, data = got[0]
        assert at == start + CHAIN_THROTTLE
        assert channel == chain_channel("NIFTY", EXPIRY) == "chain:NIFTY:2026-12-29"
        rows = data["rows"]
        assert isinstance(rows, list)
        assert rows[0]["call"]["ltp"] == "249" and rows[0]["call"]["oi"] == 149
        nursery.cancel_scope.cancel()


async def test_changes_in_two_intervals_publish_two_snapshots_an_interval_apart(
    config: Config, autojump_clock: trio.testing.MockClock
) -> None:
    """Ticks in two intervals give two snapshots, at least CHAIN_THROTTLE apart."""
    async with trio.open_nursery() as nursery:
        actor, got = await _publisher_setup(config, nursery)
        await actor.submit(_ticks(SYMBOLS, "200", OPEN_MS))
        await trio.sleep(1.5 * CHAIN_THROTTLE)
        await actor.submit(_ticks(SYMBOLS[:1], "201", OPEN_MS + 1))
        await actor.submit(_ticks(SYMBOLS[:1], "202", OPEN_MS + 2))
        await trio.sleep(3 * CHAIN_THROTTLE)
        assert len(got) == 2
        assert got[1][0] - got[0][0] >= CHAIN_THROTTLE
        second = got[1][2]["rows"]
        assert isinstance(second, list) and second[0]["call"]["ltp"] == "202"
        nursery.cancel_scope.cancel()


async def test_spot_move_alone_republishes_the_chain(
    config: Config, autojump_clock: trio.testing.MockClock
) -> None:
    """A tick of the index only (new spot, hence new IVs) republishes the chain once."""
    async with trio.open_nursery() as nursery:
        actor, got = await _publisher_setup(config, nursery)
        await actor.submit(_ticks([*SYMBOLS, "NIFTY"], "200", OPEN_MS))
        await trio.sleep(1.5 * CHAIN_THROTTLE)
        await actor.submit(_ticks(["NIFTY"], "24010", OPEN_MS + 1))
        await trio.sleep(3 * CHAIN_THROTTLE)
        assert [d["spot"] for _, _, d in got] == ["200", "24010"]
        nursery.cancel_scope.cancel()


async def test_chain_without_quotes_is_not_published(
    config: Config, autojump_clock: trio.testing.MockClock
) -> None:
    """Known chains whose options never ticked publish nothing, and the cycles are counted."""
    async with trio.open_nursery() as nursery:
        clock = FakeClock(OPEN_MS)
        actor = _actor(config, clock)
        await nursery.start(actor.run)
        actor.master._apply(_chain()[0])
        publisher = ChainPublisher(actor._engine, actor)
        await nursery.start(publisher.run)
        await actor.submit(_ticks(["NIFTY"], "24000", OPEN_MS))
        await trio.sleep(3.5 * CHAIN_THROTTLE)
        stats = publisher.statistics()
        assert (stats.cycles, stats.published, stats.chains) == (3, 0, 0)
        assert await publisher.publish_changed() == 0
        nursery.cancel_scope.cancel()


class _FlakyBus(InProcessBus):
    """An in-process bus whose next chain publish fails while `fail` is set."""

    fail = True

    async def publish(self, channel: str, data: bytes) -> None:
        if self.fail and channel.startswith("chain:"):
            self.fail = False
            raise BusUnavailable("down")
        await super().publish(channel, data)


async def test_a_failed_publish_is_retried_at_the_next_cycle(config: Config) -> None:
    """A chain whose publish raised is not marked published: the next cycle sends it."""
    clock = FakeClock(OPEN_MS)
    base = fake_engine(config, clock)
    engine = Engine(
        config=config, store=base.store, bus=_FlakyBus(), metrics=base.metrics, clock=clock
    )
    actor = MarketActor(engine, InstrumentMaster(engine.store), load_calendar())
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        actor.master._apply(_chain()[0])
        await actor.submit(_ticks(SYMBOLS, "200", OPEN_MS))
        await trio.testing.wait_all_tasks_blocked()
        publisher = ChainPublisher(engine, actor)
        with pytest.raises(BusUnavailable):
            await publisher.publish_changed()
        assert await publisher.publish_changed() == 1
        assert await publisher.publish_changed() == 0
        assert "tickstream_chain_snapshots_total 1.0" in engine.metrics.render().decode()
        nursery.cancel_scope.cancel()
