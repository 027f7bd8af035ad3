"""European option prices and Greeks, bsm and black76 (FINANCE.md §1-2).

Two paths share one formula: `greeks_batch` evaluates it over NumPy arrays, `greeks` over
Python floats for one option. They give bit-identical numbers because every step is either
IEEE-exact arithmetic written in the same order, or a transcendental taken from the same
NumPy/SciPy ufunc (`np.exp`, `np.log`, `ndtr`; NumPy's SIMD exp/log differ from libm's by an
ulp, so `math.exp` is never used). The normal CDF is `scipy.special.ndtr`, which is
erfc-based and accurate in both tails. black76 is bsm with q = r (then r - q is exactly
0.0), except for rho, which holds F fixed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
from scipy.special import ndtr

__all__ = [
    "Greeks",
    "GreeksBatch",
    "OptionModel",
    "OptionType",
    "greeks",
    "greeks_batch",
    "optional_floats",
]

OptionModel = Literal["bsm", "black76"]
OptionType = Literal["call", "put"]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

INV_SQRT_2PI: Final = 0.3989422804014327  # 1/sqrt(2*pi), correctly rounded
DAYS_PER_YEAR: Final = 365.0  # theta per calendar day
PER_POINT: Final = 100.0  # vega per vol point, rho per 1 % of rate
# Items per block in the batch paths: ~40 temporaries of 2^13 doubles stay in cache and in
# reused heap memory, where whole-batch temporaries would page-fault 8 MB each per 1M items.
BLOCK: Final = 1 << 13

_MODELS: Final = ("bsm", "black76")
_OPTION_TYPES: Final = ("call", "put")


@dataclass(frozen=True, slots=True)
class Greeks:
    """Price and Greeks of one option in FINANCE.md units; None where undefined."""

    price: float | None
    delta: float | None
    gamma: float | None
    theta: float | None
    vega: float | None
    rho: float | None


_UNDEFINED: Final = Greeks(None, None, None, None, None, None)


@dataclass(frozen=True, slots=True)
class GreeksBatch:
    """Prices and Greeks of many options; NaN marks an undefined value (see `optional_floats`)."""

    price: FloatArray
    delta: FloatArray
    gamma: FloatArray
    theta: FloatArray
    vega: FloatArray
    rho: FloatArray

    def __len__(self) -> int:
        return int(self.price.size)

    def rows(self) -> list[Greeks]:
        """Return one `Greeks` per option, in order, with NaN turned into None.

        Returns:
            A list as long as the batch.
        """
        columns = (self.price, self.delta, self.gamma, self.theta, self.vega, self.rho)
        lists = [optional_floats(column) for column in columns]
        return [Greeks(*row) for row in zip(*lists, strict=True)]


def optional_floats(values: npt.ArrayLike) -> list[float | None]:
    """Convert a NaN-masked batch output into JSON-ready floats, NaN becoming None.

    Args:
        values: an array of floats where NaN marks "undefined" (flattened in C order).

    Returns:
        A list of Python floats, with None in place of each NaN.
    """
    flat: list[float] = np.asarray(values, dtype=np.float64).ravel().tolist()
    return [None if v != v else v for v in flat]


def _is_black76(model: str) -> bool:
    if model == "black76":
        return True
    if model == "bsm":
        return False
    raise ValueError(f"unknown model {model!r}; expected one of {_MODELS}")


def _omega(option_type: str) -> float:
    if option_type == "call":
        return 1.0
    if option_type == "put":
        return -1.0
    raise ValueError(f"unknown option_type {option_type!r}; expected one of {_OPTION_TYPES}")


def _model_mask(model: OptionModel | npt.ArrayLike) -> BoolArray:
    if isinstance(model, str):
        return np.asarray(_is_black76(model))
    names = np.asarray(model)
    black = names == "black76"
    if not np.all(black | (names == "bsm")):
        raise ValueError(f"model entries must be one of {_MODELS}")
    return np.asarray(black, dtype=np.bool_)


def _omega_array(option_type: OptionType | npt.ArrayLike) -> FloatArray:
    if isinstance(option_type, str):
        return np.asarray(_omega(option_type), dtype=np.float64)
    names = np.asarray(option_type)
    call = names == "call"
    if not np.all(call | (names == "put")):
        raise ValueError(f"option_type entries must be one of {_OPTION_TYPES}")
    return np.where(call, 1.0, -1.0)


# Returns (is_black76, omega = +1 call / -1 put, flat float arrays, broadcast shape). The
# flat arrays may be views (stride 0 for a broadcast scalar); `_block` makes a slice
# contiguous. NOTE: NumPy runs its SIMD exp/log loops on contiguous data only and libm's
# otherwise; they differ by an ulp, and the scalar path relies on getting the SIMD ones.
# Every transcendental below takes a freshly computed (so contiguous) array.
def _broadcast_inputs(
    model: OptionModel | npt.ArrayLike,
    option_type: OptionType | npt.ArrayLike,
    *values: npt.ArrayLike,
) -> tuple[BoolArray, FloatArray, list[FloatArray], tuple[int, ...]]:
    black = _model_mask(model)
    omega = _omega_array(option_type)
    numeric = [np.asarray(v, dtype=np.float64) for v in values]
    shape = np.broadcast_shapes(black.shape, omega.shape, *(a.shape for a in numeric))
    flat = [np.broadcast_to(a, shape).reshape(-1) for a in numeric]
    return (
        np.broadcast_to(black, shape).reshape(-1),
        np.broadcast_to(omega, shape).reshape(-1),
        flat,
        shape,
    )


def _block(column: FloatArray, start: int) -> FloatArray:
    return np.ascontiguousarray(column[start : start + BLOCK])


def greeks_batch(
    model: OptionModel | npt.ArrayLike,
    option_type: OptionType | npt.ArrayLike,
    *,
    underlying: npt.ArrayLike,
    strike: npt.ArrayLike,
    time_to_expiry: npt.ArrayLike,
    volatility: npt.ArrayLike,
    rate: npt.ArrayLike,
    dividend_yield: npt.ArrayLike = 0.0,
) -> GreeksBatch:
    """Price many European options and compute their Greeks, vectorised.

    Inputs broadcast against each other. Items with T <= 0, S/F <= 0, K <= 0, sigma <= 0 or a
    non-finite input get NaN in every output; any other non-finite result is NaN too.

    Args:
        model: "bsm" (spot S, dividend yield q) or "black76" (futures F), or an array of them.
        option_type: "call" or "put", or an array of them.
        underlying: S for bsm, F for black76.
        strike: K.
        time_to_expiry: T in years (FINANCE.md §1).
        volatility: sigma, annual decimal.
        rate: r, annual decimal, continuously compounded.
        dividend_yield: q for bsm (ignored for black76).

    Returns:
        A `GreeksBatch` of arrays shaped like the broadcast inputs.

    Raises:
        ValueError: a model or option_type entry is not one of the names above.
    """
    black, omega, columns, shape = _broadcast_inputs(
        model, option_type, underlying, strike, time_to_expiry, volatility, rate, dividend_yield
    )
    out = np.empty((6, black.size))
    with np.errstate(all="ignore"):
        for start in range(0, black.size, BLOCK):
            stop = start + BLOCK
            u, k, t, sigma, r, q = (_block(c, start) for c in columns)
            out[:, start:stop] = _greeks_block(
                black[start:stop], omega[start:stop], u, k, t, sigma, r, q
            )
    return GreeksBatch(*(row.reshape(shape) for row in out))


# One block of greeks_batch, under np.errstate(all="ignore"): rows price..rho, NaN-masked.
def _greeks_block(
    black: BoolArray,
    omega: FloatArray,
    u: FloatArray,
    k: FloatArray,
    t: FloatArray,
    sigma: FloatArray,
    r: FloatArray,
    q: FloatArray,
) -> FloatArray:
    qe = np.where(black, r, q)
    sqrt_t = np.sqrt(t)
    vol_t = sigma * sqrt_t
    valid = (
        np.isfinite(u)
        & np.isfinite(k)
        & np.isfinite(t)
        & np.isfinite(sigma)
        & np.isfinite(r)
        & np.isfinite(qe)
        & (t > 0.0)
        & (u > 0.0)
        & (k > 0.0)
        & (sigma > 0.0)
        & (vol_t > 0.0)
    )
    d1 = (np.log(u / k) + (r - qe + 0.5 * sigma * sigma) * t) / vol_t
    d2 = d1 - vol_t
    df_q = np.exp(-qe * t)
    df_r = np.exp(-r * t)
    fd = u * df_q
    kd = k * df_r
    n1 = ndtr(omega * d1)
    n2 = ndtr(omega * d2)
    pdf = INV_SQRT_2PI * np.exp(-0.5 * d1 * d1)
    price = omega * (fd * n1 - kd * n2)
    delta = omega * df_q * n1
    gamma = df_q * pdf / (u * vol_t)
    decay = -fd * pdf * sigma / (2.0 * sqrt_t)
    carry = np.where(black, r * price, omega * (qe * fd * n1 - r * kd * n2))
    theta = (decay + carry) / DAYS_PER_YEAR
    vega = fd * pdf * sqrt_t / PER_POINT
    rho = np.where(black, -t * price / PER_POINT, omega * k * t * df_r * n2 / PER_POINT)
    rows = np.stack((price, delta, gamma, theta, vega, rho))
    return np.where(valid & np.isfinite(rows), rows, np.nan)


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def greeks(
    model: OptionModel,
    option_type: OptionType,
    *,
    underlying: float,
    strike: float,
    time_to_expiry: float,
    volatility: float,
    rate: float,
    dividend_yield: float = 0.0,
) -> Greeks:
    """Price one European option and compute its Greeks (same numbers as `greeks_batch`).

    Args:
        model: "bsm" (spot S, dividend yield q) or "black76" (futures F).
        option_type: "call" or "put".
        underlying: S for bsm, F for black76.
        strike: K.
        time_to_expiry: T in years (FINANCE.md §1).
        volatility: sigma, annual decimal.
        rate: r, annual decimal, continuously compounded.
        dividend_yield: q for bsm (ignored for black76).

    Returns:
        `Greeks`; every field is None when T <= 0, S/F <= 0, K <= 0, sigma <= 0 or an input
        is not finite, and a single field is None when its own value is not finite.

    Raises:
        ValueError: model or option_type is not one of the names above.
    """
    black = _is_black76(model)
    omega = _omega(option_type)
    u, k, t = float(underlying), float(strike), float(time_to_expiry)
    sigma, r = float(volatility), float(rate)
    q = r if black else float(dividend_yield)
    if not (
        math.isfinite(u)
        and math.isfinite(k)
        and math.isfinite(t)
        and math.isfinite(sigma)
        and math.isfinite(r)
        and math.isfinite(q)
        and t > 0.0
        and u > 0.0
        and k > 0.0
        and sigma > 0.0
    ):
        return _UNDEFINED
    sqrt_t = math.sqrt(t)
    vol_t = sigma * sqrt_t
    if not vol_t > 0.0:
        return _UNDEFINED
    # Each line mirrors greeks_batch; np.* on a Python float runs the same ufunc loop.
    with np.errstate(all="ignore"):
        d1 = (float(np.log(u / k)) + (r - q + 0.5 * sigma * sigma) * t) / vol_t
        d2 = d1 - vol_t
        df_q = float(np.exp(-q * t))
        df_r = float(np.exp(-r * t))
        n1 = float(ndtr(omega * d1))
        n2 = float(ndtr(omega * d2))
        pdf = INV_SQRT_2PI * float(np.exp(-0.5 * d1 * d1))
    fd = u * df_q
    kd = k * df_r
    price = omega * (fd * n1 - kd * n2)
    delta = omega * df_q * n1
    gamma_den = u * vol_t
    gamma = df_q * pdf / gamma_den if gamma_den > 0.0 else math.nan
    decay = -fd * pdf * sigma / (2.0 * sqrt_t)
    carry = r * price if black else omega * (q * fd * n1 - r * kd * n2)
    theta = (decay + carry) / DAYS_PER_YEAR
    vega = fd * pdf * sqrt_t / PER_POINT
    rho = -t * price / PER_POINT if black else omega * k * t * df_r * n2 / PER_POINT
    return Greeks(
        _finite(price), _finite(delta), _finite(gamma), _finite(theta), _finite(vega), _finite(rho)
    )
