"""Strategy model, pure: leg validation, exact M2M, Greeks aggregation, payoff at expiry."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.strategy.model import (
    LINEAR_GREEKS,
    MAX_LEGS,
    RATE,
    UNDEFINED_GREEKS,
    Leg,
    PayoffGrid,
    StrategyGreeks,
    aggregate_greeks,
    m2m,
    parse_strategy,
    payoff,
    payoff_at,
    payoff_grid,
    unit_greeks,
)
from engine.analytics import greeks_batch, implied_volatility, time_to_expiry
from protocol import Instrument, RequestError

EXPIRY = dt.date(2026, 12, 29)
NOW = int(dt.datetime(2026, 12, 1, 4, 30, tzinfo=dt.UTC).timestamp() * 1000)  # 10:00 IST
TICK = Decimal("0.05")


def option(strike: int, kind: str) -> Instrument:
    symbol = f"NIFTY26DEC{strike}{'CE' if kind == 'call' else 'PE'}"
    return Instrument(symbol, "option", "NIFTY", EXPIRY, Decimal(strike), kind, 65, TICK)  # type: ignore[arg-type]


NIFTY = Instrument("NIFTY", "index", None, None, None, None, 1, TICK)
FUT = Instrument("NIFTY26DECFUT", "future", "NIFTY", EXPIRY, None, None, 65, TICK)
C24000, C24200, P24000, P23800 = (
    option(24000, "call"),
    option(24200, "call"),
    option(24000, "put"),
    option(23800, "put"),
)
INSTRUMENTS = {i.symbol: i for i in (NIFTY, FUT, C24000, C24200, P24000, P23800)}


def leg(inst: Instrument, qty: int, entry: str) -> Leg:
    return Leg(inst.symbol, qty, Decimal(entry))


def prices(**by_symbol: str) -> dict[str, Decimal]:
    return {k: Decimal(v) for k, v in by_symbol.items()}


# ------------------------------------------------------------------ M2M


def test_m2m_is_the_exact_sum_of_ltp_minus_entry_times_signed_quantity() -> None:
    """M2M = Σ (ltp − entry) × qty as an exact Decimal (no float, no rounding)."""
    legs = [leg(C24000, 75, "101.05"), leg(P24000, -75, "88.10"), leg(FUT, 65, "24010.35")]
    ltp = {C24000.symbol: "110.35", P24000.symbol: "80.2", FUT.symbol: "24000.1"}
    value = m2m(legs, lambda s: Decimal(ltp[s]))
    expected = (
        (Decimal("110.35") - Decimal("101.05")) * 75
        + (Decimal("80.2") - Decimal("88.10")) * -75
        + (Decimal("24000.1") - Decimal("24010.35")) * 65
    )
    assert value == expected == Decimal("623.75")
    assert str(value) == "623.75"


def test_m2m_keeps_every_digit_where_floats_would_drift() -> None:
    """0.1-style prices and 12-digit quantities stay exact."""
    legs = [Leg(FUT.symbol, 999_999_999_999, Decimal("0.00000001"))]
    exact = Decimal(30_000_002 * 999_999_999_999).scaleb(-8)  # integers, then the point
    assert m2m(legs, lambda _s: Decimal("0.30000003")) == exact == Decimal("300000019999.69999998")
    legs = [Leg(FUT.symbol, 3, Decimal("0.1"))]
    assert m2m(legs, lambda _s: Decimal("0.3")) == Decimal("0.6")


def test_m2m_is_null_when_any_leg_has_no_quote() -> None:
    """A missing ltp is not guessed: the whole M2M is null."""
    legs = [leg(C24000, 65, "100"), leg(P24000, 65, "90")]
    assert m2m(legs, lambda s: Decimal(120) if s == C24000.symbol else None) is None


def test_flat_m2m_is_an_unsigned_normalised_zero() -> None:
    """A short leg at its entry gives "0", never "-0" or "0.00"."""
    value = m2m([leg(FUT, -65, "24000.00")], lambda _s: Decimal("24000.00"))
    assert value is not None and str(value) == "0"


# ------------------------------------------------------------------ Greeks


def _price_of(quotes: dict[str, Decimal]) -> object:
    return quotes.get


def test_greeks_aggregate_equals_the_sum_of_per_leg_greeks_batch_times_quantity() -> None:
    """Σ qty × greeks_batch (bsm on the spot, IV from the option's ltp); futures delta 1."""
    legs = [
        leg(C24000, 65, "150"),
        leg(C24200, -130, "60"),
        leg(P23800, 65, "40"),
        leg(FUT, -65, "24050"),
    ]
    quotes = prices(
        NIFTY="24010.5",
        NIFTY26DEC24000CE="212.4",
        NIFTY26DEC24200CE="121.35",
        NIFTY26DEC23800PE="95.6",
        NIFTY26DECFUT="24090",
    )
    got = aggregate_greeks(legs, lambda s: unit_greeks(INSTRUMENTS[s], quotes.get, NOW))

    t = time_to_expiry(EXPIRY, NOW)
    spot = float(quotes["NIFTY"])
    expected = np.zeros(4)
    for item in legs:
        inst = INSTRUMENTS[item.symbol]
        if inst.kind != "option":
            expected += float(item.quantity) * np.array([1.0, 0.0, 0.0, 0.0])
            continue
        assert inst.strike is not None and inst.option_type is not None
        iv = implied_volatility(
            "bsm",
            inst.option_type,
            price=float(quotes[item.symbol]),
            underlying=spot,
            strike=float(inst.strike),
            time_to_expiry=t,
            rate=RATE,
        )
        assert iv is not None
        b = greeks_batch(
            "bsm",
            inst.option_type,
            underlying=spot,
            strike=float(inst.strike),
            time_to_expiry=t,
            volatility=iv,
            rate=RATE,
        )
        expected += float(item.quantity) * np.array(
            [float(b.delta), float(b.gamma), float(b.theta), float(b.vega)]
        )
    assert (got.delta, got.gamma, got.theta, got.vega) == pytest.approx(
        tuple(expected), rel=1e-12, abs=1e-12
    )
    assert got.delta is not None and got.vega is not None
    assert got.delta != 0.0 and got.vega != 0.0


def test_greeks_sum_in_leg_order_is_bit_identical_to_the_batch_values() -> None:
    """The aggregate is exactly (==) the leg-order float sum of the batch Greeks × qty."""
    legs = [leg(C24000, 65, "150"), leg(P24000, -65, "140")]
    quotes = prices(NIFTY="24000", NIFTY26DEC24000CE="260.5", NIFTY26DEC24000PE="135.25")
    got = aggregate_greeks(legs, lambda s: unit_greeks(INSTRUMENTS[s], quotes.get, NOW))
    t = time_to_expiry(EXPIRY, NOW)
    total = [0.0, 0.0, 0.0, 0.0]
    for item in legs:
        inst = INSTRUMENTS[item.symbol]
        assert inst.option_type is not None
        iv = implied_volatility(
            "bsm",
            inst.option_type,
            price=float(quotes[item.symbol]),
            underlying=24000.0,
            strike=24000.0,
            time_to_expiry=t,
            rate=RATE,
        )
        b = greeks_batch(
            "bsm",
            np.array([inst.option_type]),
            underlying=np.array([24000.0]),
            strike=np.array([24000.0]),
            time_to_expiry=np.array([t]),
            volatility=np.array([iv]),
            rate=RATE,
        )
        for i, column in enumerate((b.delta, b.gamma, b.theta, b.vega)):
            total[i] += float(item.quantity) * float(column[0])
    assert [got.delta, got.gamma, got.theta, got.vega] == total


def test_futures_and_equity_have_delta_one_per_unit_and_no_other_greeks() -> None:
    """A linear leg contributes qty to delta and 0 to gamma, theta and vega."""
    got = aggregate_greeks([leg(FUT, -130, "24000")], lambda _s: LINEAR_GREEKS)
    assert got == StrategyGreeks(-130.0, 0.0, 0.0, 0.0)
    assert unit_greeks(FUT, {}.get, NOW) == LINEAR_GREEKS


@pytest.mark.parametrize(
    ("quotes", "now"),
    [
        ({"NIFTY26DEC24000CE": "200"}, NOW),  # no spot quote
        ({"NIFTY": "24000"}, NOW),  # no option quote
        ({"NIFTY": "24500", "NIFTY26DEC24000CE": "450"}, NOW),  # below intrinsic: no IV
        ({"NIFTY": "24000", "NIFTY26DEC24000CE": "200"}, NOW + 40 * 86_400_000),  # expired
    ],
)
def test_option_greeks_are_null_when_an_input_is_missing_or_undefined(
    quotes: dict[str, str], now: int
) -> None:
    """No spot, no ltp, a price outside the IV bounds or an expired option: all null."""
    q = {k: Decimal(v) for k, v in quotes.items()}
    assert unit_greeks(C24000, q.get, now) == UNDEFINED_GREEKS
    got = aggregate_greeks(
        [leg(C24000, 65, "1"), leg(FUT, 65, "1")], lambda s: unit_greeks(INSTRUMENTS[s], q.get, now)
    )
    assert got.to_wire() == {"delta": None, "gamma": None, "theta": None, "vega": None}


# ------------------------------------------------------------------ payoff


def _points(legs: list[Leg], start: str, stop: str, step: str) -> dict[Decimal, Decimal]:
    grid = payoff_grid(Decimal(start), Decimal(stop), Decimal(step))
    return dict(payoff(legs, INSTRUMENTS, grid))


def test_bull_call_spread_payoff_is_exact_at_hand_computed_points() -> None:
    """Long 24000 CE @150, short 24200 CE @60, one lot: −5850 below, +7150 above, 0 at 24090."""
    legs = [leg(C24000, 65, "150"), leg(C24200, -65, "60")]
    points = _points(legs, "23800", "24400", "10")
    assert points[Decimal(23800)] == Decimal(-5850)  # −(150 − 60) × 65
    assert points[Decimal(24000)] == Decimal(-5850)
    assert points[Decimal(24090)] == Decimal(0)  # breakeven 24000 + 90
    assert points[Decimal(24100)] == Decimal(650)  # (100 − 90) × 65
    assert points[Decimal(24200)] == Decimal(7150)  # (200 − 90) × 65, max profit
    assert points[Decimal(24400)] == Decimal(7150)
    assert len(points) == 61


def test_short_straddle_payoff_is_exact_at_hand_computed_points() -> None:
    """Short 24000 CE @200.50 and PE @180.25, one lot each: credit 380.75 × 65 at the strike."""
    legs = [leg(C24000, -65, "200.50"), leg(P24000, -65, "180.25")]
    points = _points(legs, "23500", "24500", "0.25")
    assert points[Decimal(24000)] == Decimal("24748.75")  # 380.75 × 65
    assert points[Decimal("23619.25")] == Decimal(0)  # lower breakeven
    assert points[Decimal("24380.75")] == Decimal(0)  # upper breakeven
    assert points[Decimal(24500)] == Decimal("-7751.25")  # (380.75 − 500) × 65
    assert points[Decimal(23500)] == Decimal("-7751.25")
    assert str(points[Decimal("24000.5")]) == "24716.25"
    assert len(points) == 4001


def test_payoff_with_a_future_leg_values_it_at_the_underlying() -> None:
    """A covered call: long future @24000, short 24200 CE @100 — capped above 24200."""
    legs = [leg(FUT, 65, "24000"), leg(C24200, -65, "100")]
    points = _points(legs, "23900", "24500", "100")
    assert points[Decimal(23900)] == Decimal(0)  # −100 × 65 + 100 × 65
    assert points[Decimal(24200)] == Decimal(19500)  # (200 + 100) × 65
    assert points[Decimal(24500)] == Decimal(19500)


_strike = st.integers(min_value=230, max_value=250).map(lambda k: k * 100)
_leg = st.tuples(
    st.sampled_from(["call", "put", "future"]),
    _strike,
    st.integers(min_value=-500, max_value=500).filter(bool),
    st.integers(min_value=1, max_value=100_000).map(lambda c: Decimal(c) / 100),
)


@settings(max_examples=60, deadline=None)
@given(
    legs=st.lists(_leg, min_size=1, max_size=8),
    start=st.integers(min_value=0, max_value=24_000),
    step=st.sampled_from(["0.05", "1", "7.5", "25", "100"]),
)
def test_payoff_sweep_equals_the_pointwise_formula_everywhere(
    legs: list[tuple[str, int, int, Decimal]], start: int, step: str
) -> None:
    """The O(points + legs) sweep gives exactly Σ (intrinsic − entry) × qty at every point."""
    instruments = dict(INSTRUMENTS)
    built = []
    for kind, strike, qty, entry in legs:
        inst = FUT if kind == "future" else option(strike, kind)
        instruments[inst.symbol] = inst
        built.append(Leg(inst.symbol, qty, entry))
    grid = PayoffGrid(Decimal(start), Decimal(step), 400)
    for s, value in payoff(built, instruments, grid):
        assert value == payoff_at(built, instruments, s)


@pytest.mark.parametrize(
    ("start", "stop", "step", "field", "reason"),
    [
        ("-1", "10", "1", "from", "negative"),
        ("10", "10", "1", "to", "not_after_from"),
        ("10", "5", "1", "to", "not_after_from"),
        ("0", "10", "0", "step", "not_positive"),
        ("0", "10", "-1", "step", "not_positive"),
        ("0", "10001", "1", "step", "too_many_points"),
        ("0", "1", "0.00001", "step", "too_many_points"),
    ],
)
def test_payoff_range_is_validated(
    start: str, stop: str, step: str, field: str, reason: str
) -> None:
    """from >= 0, to > from, step > 0 and at most 10,001 points, else a RequestError."""
    with pytest.raises(RequestError) as info:
        payoff_grid(Decimal(start), Decimal(stop), Decimal(step))
    assert (info.value.field, info.value.reason) == (field, reason)


def test_payoff_grid_of_exactly_10001_points_includes_to() -> None:
    """0..10000 step 1 is the largest grid; `to` is a point when the step divides the range."""
    grid = payoff_grid(Decimal(0), Decimal(10000), Decimal(1))
    points = grid.points()
    assert grid.count == len(points) == 10_001
    assert (points[0], points[-1]) == (0, 10000)
    assert payoff_grid(Decimal(0), Decimal(10), Decimal(3)).points()[-1] == 9


# ------------------------------------------------------------------ validation


def _parse(raw: object, *, partial: bool = False) -> object:
    return parse_strategy(raw, INSTRUMENTS.get, partial=partial)


def _good_leg(**override: object) -> dict[str, object]:
    return {"symbol": C24000.symbol, "quantity": "-65", "entry_price": "101.050"} | override


def test_a_valid_body_gives_legs_with_signed_int_quantities_and_decimal_prices() -> None:
    """Quantities as strings or JSON ints, prices as decimal strings or ints, normalised."""
    changes = parse_strategy(
        {"name": "Iron fly", "legs": [_good_leg(), _good_leg(quantity=130, entry_price=95)]},
        INSTRUMENTS.get,
        partial=False,
    )
    assert changes.name == "Iron fly"
    assert changes.legs == (
        Leg(C24000.symbol, -65, Decimal("101.05")),
        Leg(C24000.symbol, 130, Decimal(95)),
    )
    assert changes.legs[0].to_wire() == {
        "symbol": C24000.symbol,
        "quantity": "-65",
        "entry_price": Decimal("101.05"),
    }


@pytest.mark.parametrize(
    ("raw", "field", "reason"),
    [
        ([], "", "not_object"),
        ({"legs": [_good_leg()]}, "name", "missing"),
        ({"name": "x"}, "legs", "missing"),
        ({"name": "x", "legs": [_good_leg()], "id": "y"}, "id", "unknown_field"),
        ({"name": "", "legs": [_good_leg()]}, "name", "bad_length"),
        ({"name": "x" * 101, "legs": [_good_leg()]}, "name", "bad_length"),
        ({"name": "   ", "legs": [_good_leg()]}, "name", "blank"),
        ({"name": "a\x00b", "legs": [_good_leg()]}, "name", "control_character"),
        ({"name": 5, "legs": [_good_leg()]}, "name", "not_string"),
        ({"name": "x", "legs": []}, "legs", "bad_length"),
        ({"name": "x", "legs": [_good_leg()] * (MAX_LEGS + 1)}, "legs", "bad_length"),
        ({"name": "x", "legs": {"a": 1}}, "legs", "not_list"),
        ({"name": "x", "legs": ["NIFTY"]}, "legs.0", "not_object"),
        ({"name": "x", "legs": [_good_leg(symbol="NOPE")]}, "legs.0.symbol", "unknown_symbol"),
        ({"name": "x", "legs": [_good_leg(symbol="x' OR 1=1")]}, "legs.0.symbol", "bad_symbol"),
        ({"name": "x", "legs": [_good_leg(side="buy")]}, "legs.0.side", "unknown_field"),
        ({"name": "x", "legs": [{"symbol": "NIFTY"}]}, "legs.0.quantity", "missing"),
        ({"name": "x", "legs": [_good_leg(quantity=0)]}, "legs.0.quantity", "zero"),
        ({"name": "x", "legs": [_good_leg(quantity="-0")]}, "legs.0.quantity", "zero"),
        ({"name": "x", "legs": [_good_leg(quantity="1.5")]}, "legs.0.quantity", "not_integer"),
        ({"name": "x", "legs": [_good_leg(quantity=1.0)]}, "legs.0.quantity", "not_integer"),
        ({"name": "x", "legs": [_good_leg(quantity=True)]}, "legs.0.quantity", "not_integer"),
        ({"name": "x", "legs": [_good_leg(quantity="1e3")]}, "legs.0.quantity", "not_integer"),
        ({"name": "x", "legs": [_good_leg(quantity=10**12)]}, "legs.0.quantity", "too_large"),
        ({"name": "x", "legs": [_good_leg(entry_price="0")]}, "legs.0.entry_price", "not_positive"),
        (
            {"name": "x", "legs": [_good_leg(entry_price="-5")]},
            "legs.0.entry_price",
            "not_positive",
        ),
        ({"name": "x", "legs": [_good_leg(entry_price=1.5)]}, "legs.0.entry_price", "not_decimal"),
        (
            {"name": "x", "legs": [_good_leg(entry_price="NaN")]},
            "legs.0.entry_price",
            "not_decimal",
        ),
        (
            {"name": "x", "legs": [_good_leg(entry_price="1e3")]},
            "legs.0.entry_price",
            "not_decimal",
        ),
    ],
)
def test_invalid_bodies_name_the_first_bad_field(raw: object, field: str, reason: str) -> None:
    """Each rule of a strategy body refuses with the field path and a stable reason."""
    with pytest.raises(RequestError) as info:
        _parse(raw)
    assert (info.value.field, info.value.reason) == (field, reason)


def test_a_patch_takes_either_field_but_not_none() -> None:
    """A patch may carry only the name or only the legs; an empty patch is refused."""
    assert parse_strategy({"name": "n"}, INSTRUMENTS.get, partial=True).legs is None
    only_legs = parse_strategy({"legs": [_good_leg()]}, INSTRUMENTS.get, partial=True)
    assert only_legs.name is None and only_legs.legs is not None
    with pytest.raises(RequestError) as info:
        _parse({}, partial=True)
    assert info.value.reason == "empty_patch"
    with pytest.raises(RequestError):
        _parse({"name": None}, partial=True)


def test_a_name_is_free_text_stored_verbatim() -> None:
    """Quotes, semicolons and SQL-looking text are a valid name (bound, never spliced)."""
    name = "Ravi's straddle; DROP TABLE strategies;--"
    assert (
        parse_strategy({"name": name, "legs": [_good_leg()]}, INSTRUMENTS.get, partial=False).name
        == name
    )
