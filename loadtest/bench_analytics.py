"""Benchmark: vectorised Greeks and IV against the per-option reference library (vollib).

Run from the repository root:

    python -m loadtest.bench_analytics            # 1,000,000 Greeks, 100,000 IVs
    python -m loadtest.bench_analytics --quick    # a short run (100,000 / 20,000)

The reference (vollib, the maintained package behind the py_vollib import path) prices one
option per call, so it is timed in the same run on a subsample (20,000 Greeks, 5,000 IVs).
Every figure is the median of several repeats. A table goes to stdout, a JSON record to
loadtest/results/bench_analytics.json; the exit status is 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import scipy
from vollib.black import black as ref_black76
from vollib.black.greeks import analytical as ref76
from vollib.black.implied_volatility import implied_volatility as ref_iv76
from vollib.black_scholes_merton import black_scholes_merton as ref_bsm
from vollib.black_scholes_merton.greeks import analytical as refbsm
from vollib.black_scholes_merton.implied_volatility import implied_volatility as ref_ivbsm
from vollib.helpers.exceptions import PriceIsAboveMaximum, PriceIsBelowIntrinsic
from vollib.lets_be_rational import AboveMaximumException, BelowIntrinsicException

from engine.analytics import greeks, greeks_batch, implied_volatility, implied_volatility_batch

from ._report import RESULTS_DIR, write_record

RESULT_PATH: Final = RESULTS_DIR / "bench_analytics.json"
TARGET_GREEKS_PER_S: Final = 1_000_000
TARGET_IV_PER_S: Final = 100_000
TARGET_IV_RATIO: Final = 10.0
IV_RESIDUAL: Final = 1e-8  # FINANCE.md §3
SEED: Final = 20260501

FloatArray = npt.NDArray[np.float64]
Case = tuple[str, str, float, float, float, float, float, float]


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    options: int
    median_s: float
    per_s: float
    vs_reference: float


@dataclass(frozen=True, slots=True)
class Report:
    quick: bool
    repeats: int
    machine: dict[str, str]
    results: list[Row]
    iv_solved_fraction: float
    iv_max_abs_price_residual: float
    iv_median_rel_diff_vs_reference: float
    iv_reference_failures: int
    checks: dict[str, bool] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Book:
    model: npt.NDArray[np.str_]
    option_type: npt.NDArray[np.str_]
    s: FloatArray
    k: FloatArray
    t: FloatArray
    sigma: FloatArray
    r: FloatArray
    q: FloatArray

    def cases(self, idx: npt.NDArray[np.intp]) -> list[Case]:
        cols = (self.model, self.option_type, self.s, self.k, self.t, self.sigma, self.r, self.q)
        return list(zip(*(c[idx].tolist() for c in cols), strict=True))


def make_book(n: int, seed: int) -> Book:
    """Index-option-like inputs: NIFTY-scale spot, strikes around it, 30 min to 6 months."""
    rng = np.random.default_rng(seed)
    s = rng.uniform(20000.0, 26000.0, n)
    return Book(
        model=np.where(rng.random(n) < 0.5, "bsm", "black76"),
        option_type=np.where(rng.random(n) < 0.5, "call", "put"),
        s=s,
        k=np.round(s * np.exp(rng.normal(0.0, 0.08, n)) / 50.0) * 50.0,
        t=np.exp(rng.uniform(np.log(30 / (365 * 24 * 60)), np.log(0.5), n)),
        sigma=rng.uniform(0.08, 0.8, n),
        r=np.full(n, 0.065),
        q=rng.uniform(0.0, 0.015, n),
    )


def median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ref_greeks(case: Case) -> tuple[float, ...]:
    m, o, s, k, t, v, r, q = case
    if m == "bsm":
        a = (o[0], s, k, t, r, v, q)
        fns = (ref_bsm, refbsm.delta, refbsm.gamma, refbsm.theta, refbsm.vega, refbsm.rho)
        return tuple(f(*a) for f in fns)
    b = (o[0], s, k, t, r, v)
    return tuple(
        f(*b) for f in (ref_black76, ref76.delta, ref76.gamma, ref76.theta, ref76.vega, ref76.rho)
    )


def our_greeks(case: Case) -> object:
    m, o, s, k, t, v, r, q = case
    return greeks(
        m, o, underlying=s, strike=k, time_to_expiry=t, volatility=v, rate=r, dividend_yield=q
    )


def ref_iv(case: Case) -> float:
    m, o, s, k, t, price, r, q = case  # the sigma slot carries the price
    # vollib raises for a price it judges outside its own bounds, which it rounds differently
    # from ours; count such a refusal as NaN rather than abort the run.
    try:
        if m == "bsm":
            return float(ref_ivbsm(price, s, k, t, r, q, o[0]))
        return float(ref_iv76(price, s, k, r, t, o[0]))
    except (
        PriceIsAboveMaximum,
        PriceIsBelowIntrinsic,
        AboveMaximumException,
        BelowIntrinsicException,
    ):
        return math.nan


def our_iv(case: Case) -> float | None:
    m, o, s, k, t, price, r, q = case
    return implied_volatility(
        m, o, price=price, underlying=s, strike=k, time_to_expiry=t, rate=r, dividend_yield=q
    )


def batch_greeks(book: Book, sigma: FloatArray | None = None) -> FloatArray:
    result = greeks_batch(
        book.model,
        book.option_type,
        underlying=book.s,
        strike=book.k,
        time_to_expiry=book.t,
        volatility=book.sigma if sigma is None else sigma,
        rate=book.r,
        dividend_yield=book.q,
    )
    return result.price


def batch_iv(book: Book, prices: FloatArray) -> FloatArray:
    return implied_volatility_batch(
        book.model,
        book.option_type,
        price=prices,
        underlying=book.s,
        strike=book.k,
        time_to_expiry=book.t,
        rate=book.r,
        dividend_yield=book.q,
    )


def three_rows(
    what: str, n_ref: int, t_ref: float, t_scalar: float, n: int, t_batch: float
) -> list[Row]:
    ref_rate = n_ref / t_ref
    return [
        Row(f"{what:7} vollib (reference, per option)", n_ref, t_ref, ref_rate, 1.0),
        Row(
            f"{what:7} ours, scalar (per option)",
            n_ref,
            t_scalar,
            n_ref / t_scalar,
            n_ref / t_scalar / ref_rate,
        ),
        Row(f"{what:7} ours, batch", n, t_batch, n / t_batch, n / t_batch / ref_rate),
    ]


def run(quick: bool, repeats: int) -> Report:
    n_greeks, n_iv = (100_000, 20_000) if quick else (1_000_000, 100_000)
    n_ref_greeks, n_ref_iv = (2_000, 1_000) if quick else (20_000, 5_000)
    rng = np.random.default_rng(SEED + 1)

    book = make_book(n_greeks, SEED)
    batch_greeks(book)  # warm-up: page faults of the first large allocations
    t_batch = median_time(lambda: batch_greeks(book), repeats)
    sample = book.cases(rng.choice(n_greeks, n_ref_greeks, replace=False))
    t_ref = median_time(lambda: [ref_greeks(c) for c in sample], repeats)
    t_scalar = median_time(lambda: [our_greeks(c) for c in sample], repeats)
    rows = three_rows("greeks", n_ref_greeks, t_ref, t_scalar, n_greeks, t_batch)

    iv_book = make_book(n_iv, SEED + 2)
    prices = batch_greeks(iv_book)
    solved = batch_iv(iv_book, prices)
    t_iv_batch = median_time(lambda: batch_iv(iv_book, prices), repeats)
    # Prices that rounded onto a bound have no IV and make the reference raise: sample the rest.
    ok = np.isfinite(solved)
    pick = rng.choice(np.flatnonzero(ok), n_ref_iv, replace=False)
    with_price = Book(
        iv_book.model,
        iv_book.option_type,
        iv_book.s,
        iv_book.k,
        iv_book.t,
        prices,
        iv_book.r,
        iv_book.q,
    )
    iv_sample = with_price.cases(pick)
    t_iv_ref = median_time(lambda: [ref_iv(c) for c in iv_sample], repeats)
    t_iv_scalar = median_time(lambda: [our_iv(c) for c in iv_sample], repeats)
    rows += three_rows("iv", n_ref_iv, t_iv_ref, t_iv_scalar, n_iv, t_iv_batch)

    # The fast numbers must be the right numbers: FINANCE.md §3 residual, and vs vollib.
    ok_book = Book(*(getattr(iv_book, f.name)[ok] for f in fields(Book)))
    max_residual = float(np.max(np.abs(batch_greeks(ok_book, solved[ok]) - prices[ok])))
    reference = np.array([ref_iv(c) for c in iv_sample])
    median_rel = float(np.nanmedian(np.abs(reference / solved[pick] - 1.0)))
    greeks_rate, iv_rate, ref_iv_rate = rows[2].per_s, rows[5].per_s, rows[3].per_s
    return Report(
        quick=quick,
        repeats=repeats,
        machine={
            "cpus": str(os.cpu_count()),
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "platform": platform.platform(),
        },
        results=rows,
        iv_solved_fraction=float(ok.mean()),
        iv_max_abs_price_residual=max_residual,
        iv_median_rel_diff_vs_reference=median_rel,
        iv_reference_failures=int(np.isnan(reference).sum()),
        checks={
            f"greeks batch >= {TARGET_GREEKS_PER_S:,}/s": greeks_rate >= TARGET_GREEKS_PER_S,
            f"iv batch >= {TARGET_IV_PER_S:,}/s": iv_rate >= TARGET_IV_PER_S,
            f"iv batch >= {TARGET_IV_RATIO:g}x reference": iv_rate >= TARGET_IV_RATIO * ref_iv_rate,
            f"iv residual <= {IV_RESIDUAL:g}": max_residual <= IV_RESIDUAL,
        },
    )


def print_report(report: Report) -> None:
    print(f"{'benchmark':40} {'options':>10} {'median s':>10} {'options/s':>14} {'vs ref':>8}")
    for r in report.results:
        print(
            f"{r.name:40} {r.options:>10,} {r.median_s:>10.4f} {r.per_s:>14,.0f}"
            f" {r.vs_reference:>7.1f}x"
        )
    print(
        f"iv: solved {report.iv_solved_fraction:.4f} of prices (the rest lie on a bound); "
        f"max |V(σ) - V| = {report.iv_max_abs_price_residual:.1e}; "
        f"median |σ/σ_vollib - 1| = {report.iv_median_rel_diff_vs_reference:.1e} "
        f"(vollib refused {report.iv_reference_failures} of the sample)"
    )
    for name, passed in report.checks.items():
        print(f"{'PASS' if passed else 'FAIL'}  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short run: 100k Greeks, 20k IVs")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per figure (median)")
    parser.add_argument("--out", type=Path, default=RESULT_PATH, help="JSON result path")
    args = parser.parse_args()
    report = run(args.quick, args.repeats or (3 if args.quick else 5))
    print_report(report)
    write_record(report, args.out)
    sys.exit(0 if all(report.checks.values()) else 1)


if __name__ == "__main__":
    main()
