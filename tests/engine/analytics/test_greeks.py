"""Option prices and Greeks (FINANCE.md §1-2): reference values, units, edges, batch == scalar."""

from __future__ import annotations

import math
import struct
from decimal import Decimal, localcontext

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vollib.black import black as v76_price
from vollib.black.greeks import analytical as v76
from vollib.black_scholes_merton import black_scholes_merton as vbsm_price
from vollib.black_scholes_merton.greeks import analytical as vbsm

import engine.analytics as analytics
from engine.analytics import _greeks
from engine.analytics._greeks import Greeks, greeks, greeks_batch, optional_floats

FIELDS = ("price", "delta", "gamma", "theta", "vega", "rho")
REL = 1e-9  # FINANCE.md §2 accuracy
ABS = 1e-9  # near-zero values


def close(actual: float | None, expected: float, rel: float = REL, abs_: float = ABS) -> bool:
    assert actual is not None
    return abs(actual - expected) <= max(rel * abs(expected), abs_)


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


def same(scalar: float | None, batch: float) -> bool:
    """Scalar None <-> batch NaN, else the identical 64 bits."""
    if scalar is None:
        return math.isnan(batch)
    return bits(scalar) == bits(batch)


def random_cases(
    seed: int, n: int
) -> list[tuple[str, str, float, float, float, float, float, float]]:
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(n):
        s = float(np.exp(rng.uniform(np.log(20.0), np.log(60000.0))))
        k = float(s * np.exp(rng.normal(0.0, 0.35)))
        t = float(np.exp(rng.uniform(np.log(30 / (365 * 24 * 60)), np.log(2.5))))
        sigma = float(np.exp(rng.uniform(np.log(0.01), np.log(5.0))))
        r = float(rng.uniform(-0.02, 0.15))
        q = float(rng.uniform(0.0, 0.08))
        model = str(rng.choice(["bsm", "black76"]))
        option_type = str(rng.choice(["call", "put"]))
        cases.append((model, option_type, s, k, t, sigma, r, q))
    return cases


def call(
    model: str, option_type: str, s: float, k: float, t: float, sigma: float, r: float, q: float
) -> Greeks:
    return greeks(
        model,
        option_type,
        underlying=s,
        strike=k,
        time_to_expiry=t,
        volatility=sigma,
        rate=r,
        dividend_yield=q,
    )


def vollib_reference(
    model: str, option_type: str, s: float, k: float, t: float, sigma: float, r: float, q: float
) -> tuple[float, ...]:
    flag = option_type[0]
    if model == "bsm":
        args = (flag, s, k, t, r, sigma, q)
        return (
            vbsm_price(*args),
            vbsm.delta(*args),
            vbsm.gamma(*args),
            vbsm.theta(*args),
            vbsm.vega(*args),
            vbsm.rho(*args),
        )
    args76 = (flag, s, k, t, r, sigma)
    return (
        v76_price(*args76),
        v76.delta(*args76),
        v76.gamma(*args76),
        v76.theta(*args76),
        v76.vega(*args76),
        v76.rho(*args76),
    )


# --- high-precision closed form (Decimal), for the tails -----------------------------------

PI = Decimal("3.14159265358979323846264338327950288419716939937510582097494459230781640628620899")


def hp_ncdf(x: Decimal) -> Decimal:
    """N(x) to ~60 digits: erfc by Taylor series for |z| < 6, Laplace continued fraction beyond."""
    with localcontext() as ctx:
        ctx.prec = 90
        if x > 0:
            return 1 - hp_ncdf(-x)
        z = -x / Decimal(2).sqrt()  # N(x) = erfc(z) / 2, z >= 0
        if z < 6:
            term, total, n, z2 = z, z, 0, z * z
            while True:
                n += 1
                term *= -z2 / n
                add = term / (2 * n + 1)
                total += add
                if abs(add) < Decimal(10) ** -85:
                    break
            erfc = 1 - 2 / PI.sqrt() * total
        else:
            f = z
            for j in range(600, 0, -1):
                f = z + (Decimal(j) / 2) / f
            erfc = (-z * z).exp() / (PI.sqrt() * f)
        return erfc / 2


def hp_bsm(
    option_type: str, s: float, k: float, t: float, sigma: float, r: float, q: float
) -> dict[str, float]:
    """bsm price, delta, gamma, vega, rho from FINANCE.md §2 evaluated in 90-digit decimals."""
    with localcontext() as ctx:
        ctx.prec = 90
        S, K, T, V, R, Q = (Decimal(x) for x in (s, k, t, sigma, r, q))
        sqrt_t = T.sqrt()
        d1 = ((S / K).ln() + (R - Q + V * V / 2) * T) / (V * sqrt_t)
        d2 = d1 - V * sqrt_t
        dq, dr = (-Q * T).exp(), (-R * T).exp()
        pdf = (-d1 * d1 / 2).exp() / (2 * PI).sqrt()
        w = 1 if option_type == "call" else -1
        n1, n2 = hp_ncdf(w * d1), hp_ncdf(w * d2)
        return {
            "price": float(w * (S * dq * n1 - K * dr * n2)),
            "delta": float(w * dq * n1),
            "gamma": float(dq * pdf / (S * V * sqrt_t)),
            "vega": float(S * dq * pdf * sqrt_t / 100),
            "rho": float(w * K * T * dr * n2 / 100),
        }


# --- reference values ---------------------------------------------------------------------


def test_hull_textbook_example_matches_published_values() -> None:
    """Hull ex. 17.1-17.7 (S=49, K=50, r=5 %, T=0.3846, σ=20 %) reproduces the textbook Greeks."""
    g = call("bsm", "call", 49.0, 50.0, 0.3846, 0.2, 0.05, 0.0)
    assert g.price == pytest.approx(2.4005, abs=1e-4)
    assert g.delta == pytest.approx(0.522, abs=1e-3)
    assert g.gamma == pytest.approx(0.066, abs=1e-3)
    assert g.theta is not None
    assert g.theta * 365 == pytest.approx(-4.31, abs=1e-2)
    assert g.vega == pytest.approx(0.121, abs=1e-3)
    assert g.rho == pytest.approx(0.0891, abs=1e-4)


@pytest.mark.parametrize("seed", [1, 2])
def test_matches_vollib_analytical_on_random_options(seed: int) -> None:
    """Price and all Greeks agree with vollib's analytical ones to 1e-9 (rel, abs near zero)."""
    for case in random_cases(seed, 1500):
        got = call(*case)
        want = vollib_reference(*case)
        for name, expected in zip(FIELDS, want, strict=True):
            assert close(getattr(got, name), float(expected)), (
                case,
                name,
                getattr(got, name),
                expected,
            )


@pytest.mark.parametrize(
    ("option_type", "s", "k", "t", "sigma", "r", "q"),
    [
        ("call", 100.0, 250.0, 0.25, 0.2, 0.05, 0.0),  # d1 ≈ -9
        ("call", 25000.0, 40000.0, 7 / 365, 0.3, 0.065, 0.01),  # d1 ≈ -11
        ("put", 100.0, 30.0, 0.5, 0.25, 0.03, 0.02),  # -d2 ≈ -6.8
        ("put", 25000.0, 15000.0, 1 / 365, 0.4, 0.07, 0.0),  # -d2 ≈ -24
        ("call", 100.0, 100.0, 1e-6, 0.2, 0.05, 0.0),  # minutes before expiry, ATM
    ],
)
def test_tails_match_high_precision_closed_form(
    option_type: str, s: float, k: float, t: float, sigma: float, r: float, q: float
) -> None:
    """Deep-tail values match a 90-digit evaluation to 1e-9 relative, not just absolutely.

    vollib prices through Let's Be Rational, whose tail values are not documented to this
    relative accuracy, so the reference here is FINANCE.md's closed form in Decimal.
    """
    got = call("bsm", option_type, s, k, t, sigma, r, q)
    want = hp_bsm(option_type, s, k, t, sigma, r, q)
    for name, expected in want.items():
        assert close(getattr(got, name), expected, abs_=0.0), (name, getattr(got, name), expected)


def test_extreme_tails_underflow_to_zero_never_nan() -> None:
    """Beyond the double range the far-OTM values underflow to 0.0, and nothing is None/NaN."""
    for option_type, k in (("call", 1e6), ("put", 1e-3)):
        g = call("bsm", option_type, 100.0, k, 0.01, 0.2, 0.05, 0.0)
        values = [getattr(g, name) for name in FIELDS]
        assert all(v is not None and math.isfinite(v) for v in values)
        assert (g.price, g.delta, g.gamma, g.vega) == (0.0, 0.0, 0.0, 0.0)
    deep_itm = call("bsm", "call", 100.0, 1e-3, 0.01, 0.2, 0.05, 0.0)
    assert (deep_itm.delta, deep_itm.gamma) == (1.0, 0.0)


# --- units and model formulas -------------------------------------------------------------


@pytest.mark.parametrize("model", ["bsm", "black76"])
@pytest.mark.parametrize("option_type", ["call", "put"])
def test_units_match_central_differences(model: str, option_type: str) -> None:
    """delta, gamma per 1.0; theta = -dV/dT per day; vega per vol point; rho per 1 % (S/F fixed)."""
    s, k, t, sigma, r, q = 1000.0, 1040.0, 0.4, 0.3, 0.07, 0.02
    g = call(model, option_type, s, k, t, sigma, r, q)

    def price(**bump: float) -> float:
        args = {"s": s, "t": t, "sigma": sigma, "r": r} | bump
        p = call(model, option_type, args["s"], k, args["t"], args["sigma"], args["r"], q).price
        assert p is not None
        return p

    h = 1e-4
    assert g.delta == pytest.approx(
        (price(s=s + h * s) - price(s=s - h * s)) / (2 * h * s), rel=1e-6
    )
    gamma_fd = (price(s=s * (1 + h)) - 2 * price() + price(s=s * (1 - h))) / (h * s) ** 2
    assert g.gamma == pytest.approx(gamma_fd, rel=1e-4)
    assert g.theta == pytest.approx(-(price(t=t + h) - price(t=t - h)) / (2 * h) / 365, rel=1e-6)
    assert g.vega == pytest.approx(
        (price(sigma=sigma + h) - price(sigma=sigma - h)) / (2 * h) / 100, rel=1e-6
    )
    assert g.rho == pytest.approx((price(r=r + h) - price(r=r - h)) / (2 * h) / 100, rel=1e-6)


def test_black76_theta_and_rho_follow_finance_formulas() -> None:
    """black76 theta = [-F e^{-rT} φ(d1) σ/(2√T) + rV]/365 and rho = -T·V/100 (F held fixed)."""
    for f, k, t, sigma, r in [(25000.0, 24000.0, 0.05, 0.15, 0.065), (80.0, 95.0, 1.5, 0.6, 0.02)]:
        for option_type in ("call", "put"):
            g = call("black76", option_type, f, k, t, sigma, r, 0.0)
            assert g.price is not None
            d1 = (math.log(f / k) + sigma * sigma * t / 2) / (sigma * math.sqrt(t))
            pdf = math.exp(-d1 * d1 / 2) / math.sqrt(2 * math.pi)
            theta = (-f * math.exp(-r * t) * pdf * sigma / (2 * math.sqrt(t)) + r * g.price) / 365
            assert close(g.theta, theta, rel=1e-12)
            assert close(g.rho, -t * g.price / 100, rel=1e-15, abs_=0.0)


def test_black76_ignores_dividend_yield() -> None:
    """black76 works on F alone: the dividend yield argument has no effect."""
    a = call("black76", "call", 100.0, 95.0, 0.5, 0.2, 0.05, 0.0)
    b = call("black76", "call", 100.0, 95.0, 0.5, 0.2, 0.05, 0.09)
    assert a == b


@pytest.mark.parametrize("seed", [3, 4])
def test_put_call_parity_holds(seed: int) -> None:
    """C - P = S e^{-qT} - K e^{-rT} (bsm) or e^{-rT}(F - K); Δc - Δp = e^{-qT}; Γ, vega equal."""
    for model, _, s, k, t, sigma, r, q in random_cases(seed, 400):
        c = call(model, "call", s, k, t, sigma, r, q)
        p = call(model, "put", s, k, t, sigma, r, q)
        assert c.price is not None
        assert p.price is not None
        assert c.delta is not None
        assert p.delta is not None
        qe = r if model == "black76" else q
        scale = s * math.exp(-qe * t) + k * math.exp(-r * t)
        forward_gap = s * math.exp(-qe * t) - k * math.exp(-r * t)
        assert abs((c.price - p.price) - forward_gap) <= 1e-13 * scale
        assert c.delta - p.delta == pytest.approx(math.exp(-qe * t), abs=1e-14)
        assert (c.gamma, c.vega) == (p.gamma, p.vega)


# --- undefined inputs ---------------------------------------------------------------------


UNDEFINED_INPUTS = [
    {"time_to_expiry": 0.0},
    {"time_to_expiry": -0.01},
    {"underlying": 0.0},
    {"underlying": -5.0},
    {"strike": 0.0},
    {"volatility": 0.0},
    {"volatility": -0.2},
    {"underlying": math.nan},
    {"strike": math.inf},
    {"rate": math.nan},
    {"dividend_yield": -math.inf},
]


@pytest.mark.parametrize(
    ("model", "override"),
    [
        (model, override)
        for model in ("bsm", "black76")
        for override in UNDEFINED_INPUTS
        if not (model == "black76" and "dividend_yield" in override)  # q unused by black76
    ],
)
def test_undefined_inputs_give_all_none(model: str, override: dict[str, float]) -> None:
    """T <= 0, S/F/K/σ <= 0 or a non-finite input: every output None (batch: NaN), no error."""
    base = {"underlying": 100.0, "strike": 100.0, "time_to_expiry": 0.5, "volatility": 0.2}
    args = base | {"rate": 0.05, "dividend_yield": 0.01} | override
    for option_type in ("call", "put"):
        assert greeks(model, option_type, **args) == Greeks(None, None, None, None, None, None)
        batch = greeks_batch(model, option_type, **args)
        assert all(np.isnan(getattr(batch, name)).all() for name in FIELDS)


def test_unknown_model_or_option_type_is_rejected() -> None:
    """A model or option type outside the two names is a programming error: ValueError."""
    kwargs = {
        "underlying": 1.0,
        "strike": 1.0,
        "time_to_expiry": 1.0,
        "volatility": 0.2,
        "rate": 0.0,
    }
    with pytest.raises(ValueError, match="model"):
        greeks("black", "call", **kwargs)
    with pytest.raises(ValueError, match="option_type"):
        greeks("bsm", "c", **kwargs)
    with pytest.raises(ValueError, match="option_type"):
        greeks_batch("bsm", ["call", "straddle"], **kwargs)
    with pytest.raises(ValueError, match="model"):
        greeks_batch(["bsm", "heston"], "call", **kwargs)


# --- batch == scalar ----------------------------------------------------------------------


def assert_batch_matches_scalar(
    cases: list[tuple[str, str, float, float, float, float, float, float]],
) -> None:
    models, types, *columns = (list(c) for c in zip(*cases, strict=True))
    u, k, t, sigma, r, q = (np.array(c, dtype=np.float64) for c in columns)
    batch = greeks_batch(
        np.array(models),
        np.array(types),
        underlying=u,
        strike=k,
        time_to_expiry=t,
        volatility=sigma,
        rate=r,
        dividend_yield=q,
    )
    for i, case in enumerate(cases):
        scalar = call(*case)
        for name in FIELDS:
            assert same(getattr(scalar, name), float(getattr(batch, name)[i])), (case, name)


def test_batch_equals_scalar_bit_for_bit_on_random_options() -> None:
    """The vectorised and scalar paths return the identical doubles (and the same Nones)."""
    cases = random_cases(5, 2 * _greeks.BLOCK + 123)  # spans several blocks of the batch
    cases += [
        (m, o, 100.0, 100.0, t, 0.2, 0.05, 0.0)
        for m in ("bsm", "black76")
        for o in ("call", "put")
        for t in (0.0, -1.0)
    ]
    cases += [
        ("bsm", "put", 1e-300, 1e300, 1e-12, 5.0, 0.1, 0.0),
        ("bsm", "call", 5.0, 5.0, 1e-300, 1e-10, 0.0, 0.0),
    ]
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
            st.floats(1e-3, 1e6) | edge_floats,
            st.floats(1e-3, 1e6) | edge_floats,
            st.floats(1e-6, 5.0) | edge_floats,
            st.floats(1e-4, 10.0) | edge_floats,
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


def test_batch_broadcasts_scalars_and_keeps_shape() -> None:
    """Scalar inputs broadcast against arrays; outputs take the broadcast shape."""
    strikes = np.array([[90.0, 100.0], [110.0, 120.0]])
    batch = greeks_batch(
        "bsm",
        "call",
        underlying=100.0,
        strike=strikes,
        time_to_expiry=0.5,
        volatility=0.2,
        rate=0.05,
    )
    assert batch.price.shape == (2, 2)
    assert len(batch) == 4
    expected = call("bsm", "call", 100.0, 110.0, 0.5, 0.2, 0.05, 0.0)
    assert batch.price[1, 0] == expected.price


def test_broadcast_scalars_across_blocks_match_scalar() -> None:
    """Scalar inputs broadcast over several blocks give, item by item, the scalar path's bits."""
    n = 3 * _greeks.BLOCK + 7
    strikes = np.linspace(15000.0, 35000.0, n)
    batch = greeks_batch(
        "black76", "put", underlying=25000.0, strike=strikes, time_to_expiry=0.02, volatility=0.18,
        rate=0.065,
    )  # fmt: skip
    for i in (0, 1, _greeks.BLOCK - 1, _greeks.BLOCK, 2 * _greeks.BLOCK + 1, n - 1):
        scalar = call("black76", "put", 25000.0, float(strikes[i]), 0.02, 0.18, 0.065, 0.0)
        for name in FIELDS:
            assert same(getattr(scalar, name), float(getattr(batch, name)[i])), (i, name)


def test_rows_and_optional_floats_turn_nan_into_none() -> None:
    """`rows()` gives one Greeks per item equal to the scalar result; NaN becomes None."""
    batch = greeks_batch(
        "bsm",
        np.array(["call", "put"]),
        underlying=100.0,
        strike=np.array([95.0, 95.0]),
        time_to_expiry=np.array([0.5, 0.0]),
        volatility=0.25,
        rate=0.05,
    )
    rows = batch.rows()
    assert rows[0] == call("bsm", "call", 100.0, 95.0, 0.5, 0.25, 0.05, 0.0)
    assert rows[1] == Greeks(None, None, None, None, None, None)
    assert optional_floats(np.array([1.5, np.nan, -0.0])) == [1.5, None, -0.0]


def test_package_reexports_public_names() -> None:
    """engine.analytics re-exports this module's public API as the same objects."""
    for name in _greeks.__all__:
        assert getattr(analytics, name) is getattr(_greeks, name)
