"""Futures analytics: basis, carry, rollover and OI build-up (FINANCE.md §5)."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

import engine.analytics as analytics
from engine.analytics import (
    ContractAnalysis,
    DuplicateExpiryError,
    FutureQuote,
    FuturesError,
    analyze_futures,
    annualized_carry_pct,
    basis,
    basis_pct,
    classify_buildup,
    days_to_expiry,
    rollover_pct,
)

D = Decimal


def test_basis_is_exact_decimal() -> None:
    """basis = F − S with no float rounding."""
    assert basis(D("24500.10"), D("24610.35")) == D("110.25")
    assert basis(D("0.1"), D("0.3")) == D("0.2")


def test_basis_pct_is_percent_of_spot() -> None:
    """basis_pct = (F − S)/S·100 as a float."""
    assert basis_pct(D("200"), D("201")) == 0.5
    assert basis_pct(D("24500"), D("24610.25")) == pytest.approx(110.25 / 24500 * 100, rel=1e-15)


@pytest.mark.parametrize("spot", [D("0"), D("-1")])
def test_basis_pct_is_null_for_non_positive_spot(spot: Decimal) -> None:
    """basis_pct is undefined when S <= 0."""
    assert basis_pct(spot, D("100")) is None


def test_days_to_expiry_counts_calendar_days() -> None:
    """Weekends and holidays count; the same day is 0 and past expiries are negative."""
    assert days_to_expiry(date(2026, 1, 27), date(2026, 1, 23)) == 4
    assert days_to_expiry(date(2026, 1, 27), date(2026, 1, 27)) == 0
    assert days_to_expiry(date(2026, 1, 27), date(2026, 1, 28)) == -1


def test_days_to_expiry_uses_the_ist_date_of_an_aware_datetime() -> None:
    """20:00 UTC on 26 Jan is already 27 Jan in IST."""
    late_utc = datetime(2026, 1, 26, 20, 0, tzinfo=UTC)

    assert days_to_expiry(date(2026, 1, 27), late_utc) == 0


def test_days_to_expiry_refuses_a_naive_datetime() -> None:
    """A naive datetime has no IST date, so it raises a typed error."""
    with pytest.raises(FuturesError):
        days_to_expiry(date(2026, 1, 27), datetime(2026, 1, 26, 20, 0))


def test_annualized_carry_is_simple_annualisation() -> None:
    """carry = (F/S − 1)·365/days·100."""
    assert annualized_carry_pct(D("100"), D("101"), 365) == 1.0
    assert annualized_carry_pct(D("24500"), D("24610"), 30) == pytest.approx(
        (24610 / 24500 - 1) * 365 / 30 * 100, rel=1e-14
    )


@pytest.mark.parametrize("days", [0, -3])
def test_annualized_carry_is_null_at_or_after_expiry(days: int) -> None:
    """carry is undefined when days_to_expiry <= 0."""
    assert annualized_carry_pct(D("100"), D("101"), days) is None


def test_annualized_carry_is_null_for_non_positive_spot() -> None:
    """carry divides by S, so S <= 0 gives None rather than an exception."""
    assert annualized_carry_pct(D("0"), D("101"), 10) is None


def test_rollover_is_share_of_oi_beyond_the_near_month() -> None:
    """rollover = (next + far)/(near + next + far)·100."""
    assert rollover_pct([600, 300, 100]) == 40.0
    assert rollover_pct([D("1"), D("2"), D("1")]) == 75.0


def test_rollover_counts_missing_expiries_as_zero() -> None:
    """Absent or None OIs count as 0, nearest first."""
    assert rollover_pct([750, 250]) == 25.0
    assert rollover_pct([750, None, 250]) == 25.0
    assert rollover_pct([None, 100]) == 100.0
    assert rollover_pct([800]) == 0.0


@pytest.mark.parametrize("ois", [[], [0, 0, 0], [None, None]])
def test_rollover_is_null_when_total_oi_is_zero(ois: list[int | None]) -> None:
    """No open interest at all means no rollover figure."""
    assert rollover_pct(ois) is None


@pytest.mark.parametrize(
    ("price", "prev_price", "oi", "prev_oi", "expected"),
    [
        (D("101"), D("100"), 1100, 1000, "long_buildup"),
        (D("99"), D("100"), 1100, 1000, "short_buildup"),
        (D("101"), D("100"), 900, 1000, "short_covering"),
        (D("99"), D("100"), 900, 1000, "long_unwinding"),
        (D("100.01"), D("100.00"), 1001, 1000, "long_buildup"),
    ],
)
def test_buildup_classes_follow_the_signs_of_the_deltas(
    price: Decimal, prev_price: Decimal, oi: int, prev_oi: int, expected: str
) -> None:
    """Each (Δp, ΔOI) sign pair maps to its class, with no epsilon on tiny moves."""
    assert classify_buildup(price, prev_price, oi, prev_oi) == expected


@pytest.mark.parametrize(
    ("price", "prev_price", "oi", "prev_oi"),
    [
        (D("100"), D("100.00"), 1100, 1000),
        (D("101"), D("100"), 1000, 1000),
        (D("99"), D("100"), 1000, 1000),
        (D("100"), D("100"), 1000, 1000),
    ],
)
def test_zero_price_or_oi_delta_is_neutral(
    price: Decimal, prev_price: Decimal, oi: int, prev_oi: int
) -> None:
    """Δp = 0 or ΔOI = 0 is neutral whatever the other delta."""
    assert classify_buildup(price, prev_price, oi, prev_oi) == "neutral"


def test_buildup_is_null_without_previous_values() -> None:
    """Without prev_price, prev_oi or the current OI there is no classification."""
    assert classify_buildup(D("101"), None, 1100, 1000) is None
    assert classify_buildup(D("101"), D("100"), 1100, None) is None
    assert classify_buildup(D("101"), D("100"), None, 1000) is None


STRIP = [
    FutureQuote(date(2026, 3, 30), D("24655"), oi=1000, prev_price=D("24600"), prev_oi=900),
    FutureQuote(date(2026, 2, 24), D("24600.5"), oi=6000, prev_price=D("24650"), prev_oi=6500),
    FutureQuote(date(2026, 4, 28), D("24800"), oi=None),
]


def test_analyze_returns_contracts_nearest_first_with_all_fields() -> None:
    """Contracts come back sorted by expiry with basis, carry, build-up and rollover."""
    result = analyze_futures(D("24500"), date(2026, 2, 10), STRIP)

    assert [c.expiry for c in result.contracts] == [
        date(2026, 2, 24),
        date(2026, 3, 30),
        date(2026, 4, 28),
    ]
    near = result.contracts[0]
    assert near == ContractAnalysis(
        expiry=date(2026, 2, 24),
        days_to_expiry=14,
        basis=D("100.5"),
        basis_pct=basis_pct(D("24500"), D("24600.5")),
        annualized_carry_pct=annualized_carry_pct(D("24500"), D("24600.5"), 14),
        buildup="long_unwinding",
    )
    assert result.contracts[1].buildup == "long_buildup"
    assert result.contracts[2].buildup is None
    # The far month has no OI and counts as 0: 1000/7000·100 = 100/7, rounded once.
    assert result.rollover_pct == 100 / 7


def test_analyze_does_not_depend_on_input_order() -> None:
    """Every permutation of the strip gives the same analysis."""
    results = {
        analyze_futures(D("24500"), date(2026, 2, 10), list(p))
        for p in itertools.permutations(STRIP)
    }

    assert len(results) == 1


def test_analyze_reports_expired_contracts_without_carry() -> None:
    """A contract on or past its expiry date has days <= 0 and a null carry."""
    result = analyze_futures(D("100"), date(2026, 2, 24), [STRIP[1]])

    assert result.contracts[0].days_to_expiry == 0
    assert result.contracts[0].annualized_carry_pct is None


def test_analyze_refuses_two_contracts_with_one_expiry() -> None:
    """Duplicate expiries make "near/next/far" ambiguous and raise a typed error."""
    twin = FutureQuote(date(2026, 2, 24), D("1"))

    with pytest.raises(DuplicateExpiryError) as info:
        analyze_futures(D("100"), date(2026, 2, 1), [*STRIP, twin])

    assert info.value.code == "duplicate_expiry"


def test_analyze_of_an_empty_strip_is_empty() -> None:
    """No contracts: no rows and no rollover."""
    result = analyze_futures(D("100"), date(2026, 2, 1), [])

    assert result.contracts == ()
    assert result.rollover_pct is None


def test_futures_names_are_exported_by_the_package() -> None:
    """engine.analytics re-exports the futures API objects themselves."""
    from engine.analytics import _futures

    for name in _futures.__all__:
        exported = "analyze_futures" if name == "analyze" else name
        assert getattr(analytics, exported) is getattr(_futures, name)
