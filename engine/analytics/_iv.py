"""Implied volatility for bsm and black76 (FINANCE.md §3).

With `Fd = S·e^{-qT}` (bsm) or `F·e^{-rT}` (black76) and `Kd = K·e^{-rT}`, a price has an
IV only strictly inside (lower, upper): call (max(0, Fd-Kd), Fd), put (max(0, Kd-Fd), Kd).

Method. Put-call symmetry turns every option into its out-of-the-money twin: with
`x = ln(Fd/Kd)`, `xm = -|x|`, `A = min-side` and `B = max-side` of (Fd, Kd), the time value
`tv = V - lower` equals `g(s) = A·N(d1) - B·N(d2)`, `d1 = xm/s + s/2`, `d2 = d1 - s`, where
`s = σ√T`, and `upper - V` equals `A - g(s) = A·N(-d1) + B·N(d2)` (no cancellation). g is
increasing, convex below `s_c = sqrt(-2·xm)` and concave above. Below the inflection
(`tv < g(s_c)`) Newton runs on `ln g` in `w = 1/s²`, above it on `ln(A - g)` in `v = s²`:
both are close to linear there (`ln g ≈ -xm²w/2`, `ln(A-g) ≈ -v/8`), so Newton typically
converges in 4-7 steps from the inflection point, even for deep ITM (vega ≈ 0) and deep
OTM prices. Every step is kept inside a bracket that each evaluation narrows; a step that
leaves it is replaced by a geometric bisection, so the solver converges in every in-bounds
case. It stops on a residual at rounding level, a Newton step below 2^-44 relative, or a
collapsed bracket, and then takes the last Newton step when it lies inside the bracket.

The batch and scalar paths run the same arithmetic in the same order with the same ufuncs
(see `_greeks`), so they return bit-identical σ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy.special import ndtr, ndtri

from ._greeks import (
    BLOCK,
    INV_SQRT_2PI,
    BoolArray,
    FloatArray,
    OptionModel,
    OptionType,
    _block,
    _broadcast_inputs,
    _is_black76,
    _omega,
)

__all__ = ["PriceBounds", "implied_volatility", "implied_volatility_batch", "price_bounds"]

MAX_ITERATIONS: Final = 100  # typical 4-7; the cap is a backstop, never reached in tests
RESIDUAL_RTOL: Final = 1e-14  # |residual| / target price at which σ is converged
# Relative rounding noise of N(d)'s terms: ndtr's exp(-d²/2) turns d's last-bit error into
# a relative error of about eps·d², so the noise floor grows as (1 + d²) in the tails.
ROUNDING_NOISE: Final = 32 * 2.0**-52
STEP_RTOL: Final = 2.0**-44  # a Newton step this small (relative to s) means converged
BRACKET_RTOL: Final = 4 * 2.0**-52  # a bracket this narrow (relative) means converged
FALLBACK_START: Final = 1.0  # first s when no positive guess exists (ATM, rounding)


@dataclass(frozen=True, slots=True)
class PriceBounds:
    """No-arbitrage price bounds of a European option; IV exists strictly between them."""

    lower: float
    upper: float


def _forwards(black: bool, u: float, k: float, t: float, r: float, q: float) -> tuple[float, ...]:
    # (Fd, Kd, x = ln(Fd/Kd) as in d1) for one option, mirroring the batch expressions.
    qe = r if black else q
    fd = u * float(np.exp(-qe * t))
    kd = k * float(np.exp(-r * t))
    x = float(np.log(u / k)) + (r - qe) * t
    return fd, kd, x


def _inputs_ok(black: bool, u: float, k: float, t: float, r: float, q: float) -> bool:
    finite = all(math.isfinite(a) for a in (u, k, t, r)) and (black or math.isfinite(q))
    return finite and t > 0.0 and u > 0.0 and k > 0.0


def price_bounds(
    model: OptionModel,
    option_type: OptionType,
    *,
    underlying: float,
    strike: float,
    time_to_expiry: float,
    rate: float,
    dividend_yield: float = 0.0,
) -> PriceBounds | None:
    """Return the bounds (lower, upper) outside which a price has no implied volatility.

    Args:
        model: "bsm" or "black76".
        option_type: "call" or "put".
        underlying: S for bsm, F for black76.
        strike: K.
        time_to_expiry: T in years.
        rate: r.
        dividend_yield: q for bsm (ignored for black76).

    Returns:
        `PriceBounds`, or None when T <= 0, S/F <= 0, K <= 0 or an input is not finite.

    Raises:
        ValueError: model or option_type is not one of the names above.
    """
    black, omega = _is_black76(model), _omega(option_type)
    u, k, t, r = float(underlying), float(strike), float(time_to_expiry), float(rate)
    q = r if black else float(dividend_yield)
    if not _inputs_ok(black, u, k, t, r, q):
        return None
    with np.errstate(all="ignore"):
        fd, kd, _ = _forwards(black, u, k, t, r, q)
    if not (math.isfinite(fd) and math.isfinite(kd)):
        return None
    lower = max(0.0, omega * (fd - kd))
    upper = fd if omega > 0.0 else kd
    return PriceBounds(lower, upper)


def implied_volatility(
    model: OptionModel,
    option_type: OptionType,
    *,
    price: float,
    underlying: float,
    strike: float,
    time_to_expiry: float,
    rate: float,
    dividend_yield: float = 0.0,
) -> float | None:
    """Return the implied volatility of one option price (same σ as the batch function).

    Args:
        model: "bsm" or "black76".
        option_type: "call" or "put".
        price: the option price V.
        underlying: S for bsm, F for black76.
        strike: K.
        time_to_expiry: T in years.
        rate: r.
        dividend_yield: q for bsm (ignored for black76).

    Returns:
        σ > 0, unrounded, with `|V_model(σ) - V| <= 1e-8`; None when V <= lower or
        V >= upper (FINANCE.md §3), when T <= 0, S/F <= 0 or K <= 0, or when an input is
        not finite.

    Raises:
        ValueError: model or option_type is not one of the names above.
    """
    black, omega = _is_black76(model), _omega(option_type)
    v, u, k, t = float(price), float(underlying), float(strike), float(time_to_expiry)
    r = float(rate)
    q = r if black else float(dividend_yield)
    if not (_inputs_ok(black, u, k, t, r, q) and math.isfinite(v)):
        return None
    with np.errstate(all="ignore"):
        fd, kd, x = _forwards(black, u, k, t, r, q)
        if not (math.isfinite(fd) and math.isfinite(kd) and math.isfinite(x) and fd > 0 and kd > 0):
            return None
        lower = max(0.0, omega * (fd - kd))
        upper = fd if omega > 0.0 else kd
        if not (lower < v < upper):
            return None
        s = _solve_scalar(x, fd, kd, v - lower, upper - v)
    sigma = s / math.sqrt(t)
    return sigma if math.isfinite(sigma) and sigma > 0.0 else None


def _solve_scalar(x: float, fd: float, kd: float, tv: float, us: float) -> float:
    # One option of _solve_batch; every expression is written as there, in the same order.
    neg = x <= 0.0
    xm = x if neg else -x
    a = fd if neg else kd
    b = kd if neg else fd
    sc = math.sqrt(-2.0 * xm)
    gc = 0.5 * a - b * float(ndtr(-sc))
    low = tv < gc and sc > 0.0
    guess = -2.0 * float(ndtri(us / (2.0 * a)))
    s = sc if low or not (math.isfinite(guess) and guess > sc) else guess
    s = s if s > 0.0 else FALLBACK_START
    lo, hi = (0.0, sc) if low else (sc, math.inf)
    target_log = float(np.log(tv)) if low else float(np.log(us))
    for _ in range(MAX_ITERATIONS):
        d1 = xm / s + 0.5 * s
        d2 = d1 - s
        n2 = float(ndtr(d2))
        vega = a * (INV_SQRT_2PI * float(np.exp(-0.5 * d1 * d1)))
        noise = ROUNDING_NOISE * (1.0 + d2 * d2)
        ss = s * s
        if low:
            n1 = float(ndtr(d1))
            val = a * n1 - b * n2
            resid = val - tv
            tol = max(RESIDUAL_RTOL * tv, noise * (a * n1 + b * n2))
            den = vega * (ss * s)
            sn = math.nan
            if val > 0.0 and den > 0.0 and ss > 0.0:
                w = 1.0 / ss + 2.0 * (float(np.log(val)) - target_log) * val / den
                sn = 1.0 / math.sqrt(w) if w > 0.0 else math.nan
        else:
            n1 = float(ndtr(-d1))
            val = a * n1 + b * n2
            resid = us - val
            tol = max(RESIDUAL_RTOL * us, noise * val)
            sn = math.nan
            if val > 0.0 and vega > 0.0:
                w = ss - 2.0 * (target_log - float(np.log(val))) * s * val / vega
                sn = math.sqrt(w) if w > 0.0 else math.nan
        if resid < 0.0:
            lo = s
        elif resid > 0.0:
            hi = s
        finish = (
            abs(resid) <= tol
            or abs(sn - s) <= STEP_RTOL * s
            or (hi < math.inf and hi - lo <= BRACKET_RTOL * hi)
        )
        if finish:
            return sn if sn > 0.0 and lo <= sn <= hi else s
        if not lo < sn < hi:
            if hi == math.inf:
                sn = 4.0 * lo
            elif lo == 0.0:
                sn = hi / 4.0
            else:
                sn = math.sqrt(lo) * math.sqrt(hi)
        s = sn
    return s


def implied_volatility_batch(
    model: OptionModel | npt.ArrayLike,
    option_type: OptionType | npt.ArrayLike,
    *,
    price: npt.ArrayLike,
    underlying: npt.ArrayLike,
    strike: npt.ArrayLike,
    time_to_expiry: npt.ArrayLike,
    rate: npt.ArrayLike,
    dividend_yield: npt.ArrayLike = 0.0,
) -> FloatArray:
    """Return the implied volatilities of many option prices, vectorised.

    Inputs broadcast against each other; the arguments are those of `implied_volatility`.

    Args:
        model: "bsm" or "black76", or an array of them.
        option_type: "call" or "put", or an array of them.
        price: the option prices V.
        underlying: S for bsm, F for black76.
        strike: K.
        time_to_expiry: T in years.
        rate: r.
        dividend_yield: q for bsm (ignored for black76).

    Returns:
        σ per item, shaped like the broadcast inputs, NaN where the IV is undefined
        (convert with `optional_floats`).

    Raises:
        ValueError: a model or option_type entry is not one of the names above.
    """
    black, omega, columns, shape = _broadcast_inputs(
        model, option_type, price, underlying, strike, time_to_expiry, rate, dividend_yield
    )
    out = np.empty(black.size)
    with np.errstate(all="ignore"):
        for start in range(0, black.size, BLOCK):
            stop = start + BLOCK
            v, u, k, t, r, q = (_block(c, start) for c in columns)
            out[start:stop] = _iv_block(black[start:stop], omega[start:stop], v, u, k, t, r, q)
    return out.reshape(shape)


# One block of implied_volatility_batch, under np.errstate(all="ignore"); NaN = no IV.
def _iv_block(
    black: BoolArray,
    omega: FloatArray,
    v: FloatArray,
    u: FloatArray,
    k: FloatArray,
    t: FloatArray,
    r: FloatArray,
    q: FloatArray,
) -> FloatArray:
    out = np.full(v.shape, np.nan)
    qe = np.where(black, r, q)
    fd = u * np.exp(-qe * t)
    kd = k * np.exp(-r * t)
    x = np.log(u / k) + (r - qe) * t
    lower = np.maximum(0.0, omega * (fd - kd))
    upper = np.where(omega > 0.0, fd, kd)
    ok = np.isfinite(u) & np.isfinite(k) & np.isfinite(t) & np.isfinite(r)
    ok &= np.isfinite(qe) & np.isfinite(v) & (t > 0.0) & (u > 0.0) & (k > 0.0)
    ok &= np.isfinite(fd) & np.isfinite(kd) & np.isfinite(x) & (fd > 0.0) & (kd > 0.0)
    ok &= (lower < v) & (v < upper)
    idx = np.flatnonzero(ok)
    s = _solve_batch(x[idx], fd[idx], kd[idx], v[idx] - lower[idx], upper[idx] - v[idx])
    sigma = s / np.sqrt(t[idx])
    out[idx] = np.where(np.isfinite(sigma) & (sigma > 0.0), sigma, np.nan)
    return out


def _solve_batch(
    x: FloatArray, fd: FloatArray, kd: FloatArray, tv: FloatArray, us: FloatArray
) -> FloatArray:
    # Vectorised _solve_scalar; runs under np.errstate(all="ignore"). Elements leave the
    # working set as they finish, so late iterations cost only what is still unsolved.
    neg = x <= 0.0
    xm = np.where(neg, x, -x)
    a = np.where(neg, fd, kd)
    b = np.where(neg, kd, fd)
    sc = np.sqrt(-2.0 * xm)
    gc = 0.5 * a - b * ndtr(-sc)
    low = (tv < gc) & (sc > 0.0)
    guess = -2.0 * ndtri(us / (2.0 * a))
    s = np.where(low | ~(np.isfinite(guess) & (guess > sc)), sc, guess)
    s = np.where(s > 0.0, s, FALLBACK_START)
    lo = np.where(low, 0.0, sc)
    hi = np.where(low, sc, np.inf)
    target_log = np.where(low, np.log(tv), np.log(us))
    result = np.empty_like(s)
    pos = np.arange(s.size)
    for _ in range(MAX_ITERATIONS):
        if pos.size == 0:
            break
        d1 = xm / s + 0.5 * s
        d2 = d1 - s
        n2 = ndtr(d2)
        vega = a * (INV_SQRT_2PI * np.exp(-0.5 * d1 * d1))
        noise = ROUNDING_NOISE * (1.0 + d2 * d2)
        ss = s * s
        n1 = ndtr(np.where(low, d1, -d1))
        val = np.where(low, a * n1 - b * n2, a * n1 + b * n2)
        resid = np.where(low, val - tv, us - val)
        tol = np.where(
            low,
            np.maximum(RESIDUAL_RTOL * tv, noise * (a * n1 + b * n2)),
            np.maximum(RESIDUAL_RTOL * us, noise * val),
        )
        log_val = np.log(val)
        den = vega * (ss * s)
        w_low = 1.0 / ss + 2.0 * (log_val - target_log) * val / den
        w_up = ss - 2.0 * (target_log - log_val) * s * val / vega
        sn_low = np.where(
            (val > 0.0) & (den > 0.0) & (ss > 0.0) & (w_low > 0.0), 1.0 / np.sqrt(w_low), np.nan
        )
        sn_up = np.where((val > 0.0) & (vega > 0.0) & (w_up > 0.0), np.sqrt(w_up), np.nan)
        sn = np.where(low, sn_low, sn_up)
        lo = np.where(resid < 0.0, s, lo)
        hi = np.where(resid > 0.0, s, hi)
        finish = (
            (np.abs(resid) <= tol)
            | (np.abs(sn - s) <= STEP_RTOL * s)
            | ((hi < np.inf) & (hi - lo <= BRACKET_RTOL * hi))
        )
        inside = (sn > 0.0) & (lo <= sn) & (sn <= hi)
        bisect = np.where(
            hi == np.inf, 4.0 * lo, np.where(lo == 0.0, hi / 4.0, np.sqrt(lo) * np.sqrt(hi))
        )
        step_ok = (lo < sn) & (sn < hi)
        s_next = np.where(finish, np.where(inside, sn, s), np.where(step_ok, sn, bisect))
        if finish.any():
            result[pos[finish]] = s_next[finish]
            keep = ~finish
            pos, s_next, xm, a, b, tv, us, low, lo, hi, target_log = (
                arr[keep] for arr in (pos, s_next, xm, a, b, tv, us, low, lo, hi, target_log)
            )
        s = s_next
    result[pos] = s
    return result
