"""Implied volatility (FINANCE.md §3): bounds, round trips, hard regions, batch == scalar."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vollib.black import black as v76_price
from vollib.black.implied_volatility import implied_volatility as v76_iv
from vollib.black_scholes_merton import black_scholes_merton as vbsm_price
from vollib.black_scholes_merton.implied_volatility import implied_volatility as vbsm_iv

import engine.analytics as analytics
from engine.analytics import _greeks, _iv
from engine.analytics._greeks import greeks, greeks_batch
from engine.analytics._iv import (
    PriceBounds,
    implied_volatility,
    implied_volatility_batch,
    price_bounds,
)

RESIDUAL = 1e-8  # FINANCE.md §3: |V_model(σ) - V| <= 1e-8 absolute
MINUTE = 1 / (365 * 24 * 60)
NIFTY = 25000.0


def iv(
    model: str, option_type: str, v: float, s: float, k: float, t: float, r: float, q: float
) -> float | None:
    return implied_volatility(
        model,
        option_type,
        price=v,
        underlying=s,
        strike=k,
        time_to_expiry=t,
        rate=r,
        dividend_yield=q,
    )


def model_price(
    model: str, option_type: str, s: float, k: float, t: float, sigma: float, r: float, q: float
) -> float:
    p = greeks(
        model,
        option_type,
        underlying=s,
        strike=k,
        time_to_expiry=t,
        volatility=sigma,
        rate=r,
        dividend_yield=q,
    ).price
    assert p is not None
    return p


def bounds(
    model: str, option_type: str, s: float, k: float, t: float, r: float, q: float
) -> PriceBounds:
    b = price_bounds(
        model, option_type, underlying=s, strike=k, time_to_expiry=t, rate=r, dividend_yield=q
    )
    assert b is not None
    return b


def assert_round_trip(
    model: str, option_type: str, v: float, s: float, k: float, t: float, r: float, q: float
) -> float:
    sigma = iv(model, option_type, v, s, k, t, r, q)
    assert sigma is not None, (model, option_type, v, s, k, t)
    assert sigma > 0.0
    residual = abs(model_price(model, option_type, s, k, t, sigma, r, q) - v)
    assert residual <= RESIDUAL, (model, option_type, v, s, k, t, sigma, residual)
    # and against an independent pricer (vollib prices through Let's Be Rational)
    flag = option_type[0]
    ref = (
        vbsm_price(flag, s, k, t, r, sigma, q)
        if model == "bsm"
        else v76_price(flag, s, k, t, r, sigma)
    )
    assert abs(ref - v) <= RESIDUAL, (model, option_type, v, s, k, t, sigma, ref - v)
    return sigma


# --- bounds -------------------------------------------------------------------------------


def test_bounds_use_the_discounted_forward() -> None:
    """call (max(0, Fd-Kd), Fd); put (max(0, Kd-Fd), Kd); Fd = Se^{-qT} or Fe^{-rT} (black76)."""
    s, k, t, r, q = 100.0, 90.0, 0.5, 0.08, 0.03
    fd, kd = s * math.exp(-q * t), k * math.exp(-r * t)
    call = bounds("bsm", "call", s, k, t, r, q)
    assert (call.lower, call.upper) == pytest.approx((fd - kd, fd), rel=1e-15)
    put = bounds("bsm", "put", s, k, t, r, q)
    assert put.lower == 0.0
    assert put.upper == pytest.approx(kd, rel=1e-15)
    f = 100.0
    fd76 = f * math.exp(-r * t)
    call76 = bounds("black76", "call", f, k, t, r, 0.5)
    assert (call76.lower, call76.upper) == pytest.approx((fd76 - kd, fd76), rel=1e-15)
    assert price_bounds("bsm", "call", underlying=s, strike=k, time_to_expiry=0.0, rate=r) is None


@pytest.mark.parametrize("model", ["bsm", "black76"])
@pytest.mark.parametrize("option_type", ["call", "put"])
def test_price_at_or_outside_bounds_has_no_iv(model: str, option_type: str) -> None:
    """V <= lower or V >= upper (zero and negative prices included) gives None; batch gives NaN."""
    s, k, t, r, q = 100.0, 95.0 if option_type == "call" else 105.0, 0.25, 0.06, 0.01
    b = bounds(model, option_type, s, k, t, r, q)
    assert b.lower > 0.0
    outside = [
        b.lower,
        math.nextafter(b.lower, -math.inf),
        0.0,
        -0.0,
        -1.0,
        b.upper,
        b.upper + 1.0,
        1e300,
    ]
    for v in outside:
        assert iv(model, option_type, v, s, k, t, r, q) is None, v
    batch = implied_volatility_batch(
        model,
        option_type,
        price=np.array(outside),
        underlying=s,
        strike=k,
        time_to_expiry=t,
        rate=r,
        dividend_yield=q,
    )
    assert np.isnan(batch).all()
    assert_round_trip(model, option_type, math.nextafter(b.lower, math.inf), s, k, t, r, q)
    assert_round_trip(model, option_type, math.nextafter(b.upper, -math.inf), s, k, t, r, q)


def test_otm_price_just_above_zero_has_iv() -> None:
    """With lower = 0 any positive price is in bounds, down to the smallest double."""
    for v in (5e-324, 1e-200, 1e-12):
        assert_round_trip("bsm", "call", v, 100.0, 120.0, 0.1, 0.05, 0.0)


def test_european_put_below_spot_intrinsic_has_iv() -> None:
    """A put under K - S but above Kd - Fd has a valid IV (and a call likewise when q > r)."""
    s, k, t, r = 100.0, 120.0, 1.0, 0.10
    assert k * math.exp(-r * t) - s < 15.0 < k - s
    sigma = assert_round_trip("bsm", "put", 15.0, s, k, t, r, 0.0)
    assert 0.0 < sigma < 1.0
    assert iv("bsm", "put", 8.0, s, k, t, r, 0.0) is None  # below Kd - Fd = 8.58
    s, k, q = 100.0, 80.0, 0.10
    assert s * math.exp(-q * t) - k < 15.0 < s - k
    assert_round_trip("bsm", "call", 15.0, s, k, t, 0.0, q)


@pytest.mark.parametrize(
    "override",
    [
        {"time_to_expiry": 0.0},
        {"time_to_expiry": -1.0},
        {"underlying": 0.0},
        {"strike": 0.0},
        {"underlying": -100.0},
        {"price": math.nan},
        {"price": math.inf},
        {"rate": math.nan},
        {"strike": math.inf},
    ],
)
def test_undefined_inputs_give_none(override: dict[str, float]) -> None:
    """Expired, zero or negative S/K, or non-finite inputs: None (batch NaN), never an error."""
    args = {
        "price": 5.0,
        "underlying": 100.0,
        "strike": 100.0,
        "time_to_expiry": 0.5,
        "rate": 0.05,
    } | override
    for model in ("bsm", "black76"):
        assert implied_volatility(model, "call", **args) is None
        assert np.isnan(implied_volatility_batch(model, "call", **args)).all()


# --- convergence everywhere ---------------------------------------------------------------

GRID_T = [30 * MINUTE, 1 / 365, 7 / 365, 30 / 365, 91 / 365, 1.0, 2.0]
GRID_SIGMA = [0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0, 2.0, 3.0, 5.0]
GRID_LOG_MONEYNESS = np.linspace(-1.5, 1.5, 31)  # ln(K/S): deep ITM calls ... deep OTM calls


@pytest.mark.parametrize("model", ["bsm", "black76"])
@pytest.mark.parametrize("option_type", ["call", "put"])
def test_round_trip_over_grid_meets_residual_tolerance(model: str, option_type: str) -> None:
    """T 30 min..2y × σ 1 %..500 % × deep ITM..deep OTM: every in-bounds price solves to 1e-8.

    Where σ is identifiable (vega >= 1 per unit σ) the generating σ comes back to 1e-9.
    """
    r, q = 0.065, 0.012
    t, sigma, m = (a.ravel() for a in np.meshgrid(GRID_T, GRID_SIGMA, GRID_LOG_MONEYNESS))
    k = NIFTY * np.exp(m)
    prices = greeks_batch(
        model,
        option_type,
        underlying=NIFTY,
        strike=k,
        time_to_expiry=t,
        volatility=sigma,
        rate=r,
        dividend_yield=q,
    )
    got = implied_volatility_batch(
        model,
        option_type,
        price=prices.price,
        underlying=NIFTY,
        strike=k,
        time_to_expiry=t,
        rate=r,
        dividend_yield=q,
    )
    solved = 0
    for i in range(t.size):
        b = bounds(model, option_type, NIFTY, float(k[i]), float(t[i]), r, q)
        v = float(prices.price[i])
        if not b.lower < v < b.upper:  # the price rounded onto a bound: no IV by definition
            assert np.isnan(got[i])
            continue
        solved += 1
        assert not np.isnan(got[i])
        residual = abs(
            model_price(model, option_type, NIFTY, float(k[i]), float(t[i]), float(got[i]), r, q)
            - v
        )
        assert residual <= RESIDUAL, (t[i], sigma[i], m[i], got[i], residual)
        if float(prices.vega[i]) * 100 >= 1.0:
            assert got[i] == pytest.approx(sigma[i], rel=1e-9)
    assert solved > 0.5 * t.size


@pytest.mark.parametrize("minutes", [30, 120, 24 * 60, 7 * 24 * 60, 30 * 24 * 60])
def test_deep_otm_priced_at_a_few_ticks_converges(minutes: int) -> None:
    """NIFTY options far OTM quoted at 1-5 ticks of 0.05 solve to 1e-8, however short T is."""
    t, r, q = minutes * MINUTE, 0.065, 0.0
    for option_type, strikes in (
        ("call", [26000, 27500, 30000, 35000, 50000]),
        ("put", [24000, 22000, 18000, 12000, 5000]),
    ):
        for k in strikes:
            for ticks in (1, 2, 3, 5):
                assert_round_trip("bsm", option_type, 0.05 * ticks, NIFTY, float(k), t, r, q)
                assert_round_trip("black76", option_type, 0.05 * ticks, NIFTY, float(k), t, r, q)


@pytest.mark.parametrize("time_value", [0.05, 1e-4, 1e-7, 1e-10])
def test_deep_itm_with_vanishing_vega_converges(time_value: float) -> None:
    """Deep ITM (vega ≈ 0): a price a hair above the discounted intrinsic still solves to 1e-8."""
    for option_type, k in (("call", 15000.0), ("put", 40000.0)):
        for t in (30 * MINUTE, 7 / 365, 1.0):
            lower = bounds("bsm", option_type, NIFTY, k, t, 0.065, 0.01).lower
            v = lower + time_value
            if v > lower:
                assert_round_trip("bsm", option_type, v, NIFTY, k, t, 0.065, 0.01)


def test_price_near_upper_bound_gives_large_finite_sigma() -> None:
    """V a relative 1e-12 under the upper bound needs a huge σ; it is found and finite."""
    upper = bounds("bsm", "call", 100.0, 100.0, 0.5, 0.05, 0.0).upper
    sigma = assert_round_trip("bsm", "call", upper * (1 - 1e-12), 100.0, 100.0, 0.5, 0.05, 0.0)
    assert 10.0 < sigma < math.inf


def test_matches_vollib_where_well_conditioned() -> None:
    """On random options with vega >= 1 per unit σ, σ equals vollib's (Let's Be Rational) to 1e-9.

    vollib inverts through Jäckel's algorithm, an independent method from our bracketed Newton.
    """
    rng = np.random.default_rng(21)
    compared = 0
    for _ in range(600):
        s = float(rng.uniform(50.0, 50000.0))
        k = float(s * np.exp(rng.normal(0.0, 0.25)))
        t = float(np.exp(rng.uniform(np.log(1 / 365), np.log(2.0))))
        sigma, r, q = (
            float(rng.uniform(0.05, 1.5)),
            float(rng.uniform(0.0, 0.12)),
            float(rng.uniform(0.0, 0.05)),
        )
        model, option_type = str(rng.choice(["bsm", "black76"])), str(rng.choice(["call", "put"]))
        g = greeks(
            model,
            option_type,
            underlying=s,
            strike=k,
            time_to_expiry=t,
            volatility=sigma,
            rate=r,
            dividend_yield=q,
        )
        assert g.vega is not None
        if g.vega * 100 < 1.0:
            continue
        flag = option_type[0]
        if model == "bsm":
            v = vbsm_price(flag, s, k, t, r, sigma, q)
            ref = vbsm_iv(v, s, k, t, r, q, flag)
        else:
            v = v76_price(flag, s, k, t, r, sigma)
            ref = v76_iv(v, s, k, r, t, flag)
        assert iv(model, option_type, v, s, k, t, r, q) == pytest.approx(ref, rel=1e-9)
        compared += 1
    assert compared > 300


# --- batch == scalar ----------------------------------------------------------------------


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


def assert_batch_matches_scalar(
    cases: list[tuple[str, str, float, float, float, float, float, float]],
) -> None:
    models, types, *columns = (list(c) for c in zip(*cases, strict=True))
    v, s, k, t, r, q = (np.array(c, dtype=np.float64) for c in columns)
    batch = implied_volatility_batch(
        np.array(models),
        np.array(types),
        price=v,
        underlying=s,
        strike=k,
        time_to_expiry=t,
        rate=r,
        dividend_yield=q,
    )
    for i, case in enumerate(cases):
        scalar = iv(*case)
        if scalar is None:
            assert math.isnan(batch[i]), case
        else:
            assert bits(scalar) == bits(float(batch[i])), case


def test_batch_equals_scalar_bit_for_bit_on_random_prices() -> None:
    """Random in- and out-of-bounds prices: batch σ and scalar σ are the identical doubles."""
    rng = np.random.default_rng(8)
    cases = []
    for _ in range(2 * _greeks.BLOCK + 123):  # spans several blocks of the batch
        model, option_type = str(rng.choice(["bsm", "black76"])), str(rng.choice(["call", "put"]))
        s = float(rng.uniform(10.0, 60000.0))
        k = float(s * np.exp(rng.normal(0.0, 0.5)))
        t = float(np.exp(rng.uniform(np.log(30 * MINUTE), np.log(2.0))))
        r, q = float(rng.uniform(-0.02, 0.15)), float(rng.uniform(0.0, 0.08))
        b = bounds(model, option_type, s, k, t, r, q)
        # mostly inside the bounds, across their whole width and right against both ends
        frac = float(
            rng.choice(
                [rng.random(), 10 ** rng.uniform(-250, 0), 1 - 10 ** rng.uniform(-15, 0), -0.1, 1.1]
            )
        )
        cases.append((model, option_type, b.lower + frac * (b.upper - b.lower), s, k, t, r, q))
    assert_batch_matches_scalar(cases)


edge_floats = st.sampled_from(
    [0.0, -0.0, -1.0, math.nan, math.inf, -math.inf, 5e-324, 1e-300, 1e300]
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["bsm", "black76"]),
            st.sampled_from(["call", "put"]),
            st.floats(0.0, 1e5) | edge_floats,
            st.floats(1e-3, 1e6) | edge_floats,
            st.floats(1e-3, 1e6) | edge_floats,
            st.floats(1e-6, 5.0) | edge_floats,
            st.floats(-0.5, 0.5) | edge_floats,
            st.floats(-0.5, 0.5) | edge_floats,
        ),
        min_size=1,
        max_size=20,
    )
)
def test_batch_equals_scalar_for_any_inputs(
    cases: list[tuple[str, str, float, float, float, float, float, float]],
) -> None:
    """For arbitrary inputs, edge values included, batch and scalar agree exactly, never raising."""
    assert_batch_matches_scalar(cases)


def test_solver_never_needs_its_iteration_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Capping the solver at 20 iterations (of 100) changes no σ on extreme random inputs."""
    rng = np.random.default_rng(13)
    n = 20000
    s = rng.uniform(1.0, 90000.0, n)
    k = s * np.exp(rng.normal(0.0, 0.7, n))
    t = np.exp(rng.uniform(np.log(30 * MINUTE), np.log(3.0), n))
    r = rng.uniform(-0.05, 0.2, n)
    fd, kd = s, k * np.exp(-r * t)
    frac = np.where(
        rng.random(n) < 0.5, 10 ** rng.uniform(-300, 0, n), 1 - 10 ** rng.uniform(-16, 0, n)
    )
    lower = np.maximum(0.0, fd - kd)
    v = lower + frac * np.minimum(fd, kd)
    full = implied_volatility_batch(
        "bsm", "call", price=v, underlying=s, strike=k, time_to_expiry=t, rate=r
    )
    in_bounds = (lower < v) & (v < fd)
    assert in_bounds.mean() > 0.7
    assert np.isfinite(full[in_bounds]).all()
    assert np.isnan(full[~in_bounds]).all()
    monkeypatch.setattr(_iv, "MAX_ITERATIONS", 20)
    capped = implied_volatility_batch(
        "bsm", "call", price=v, underlying=s, strike=k, time_to_expiry=t, rate=r
    )
    assert np.array_equal(full, capped, equal_nan=True)


def test_empty_batch_gives_empty_result() -> None:
    """A batch with no items returns an empty array rather than failing."""
    empty = np.array([], dtype=np.float64)
    result = implied_volatility_batch(
        "bsm", "call", price=empty, underlying=empty, strike=empty, time_to_expiry=empty, rate=0.05
    )
    assert result.shape == (0,)


def test_package_reexports_public_names() -> None:
    """engine.analytics re-exports this module's public API as the same objects."""
    for name in _iv.__all__:
        assert getattr(analytics, name) is getattr(_iv, name)
