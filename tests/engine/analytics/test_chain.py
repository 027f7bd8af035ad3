"""Max pain and put/call ratios of one expiry (FINANCE.md §4)."""

from __future__ import annotations

import random
import time
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import engine.analytics as analytics
from engine.analytics import (
    ChainRow,
    DuplicateStrikeError,
    InvalidChainRowError,
    PayoutPoint,
    analyze_chain,
    max_pain,
    put_call_ratios,
)


def row(strike: str, call_oi: int, put_oi: int, call_vol: int = 0, put_vol: int = 0) -> ChainRow:
    return ChainRow(Decimal(strike), call_oi, put_oi, call_vol, put_vol)


def naive_curve(rows: list[ChainRow]) -> list[tuple[Decimal, Fraction]]:
    """O(n²) textbook L(S) in exact rationals, ascending by strike."""
    curve = []
    for s in sorted(r.strike for r in rows):
        total = Fraction(0)
        for r in rows:
            total += Fraction(r.call_oi) * max(Fraction(0), Fraction(s - r.strike))
            total += Fraction(r.put_oi) * max(Fraction(0), Fraction(r.strike - s))
        curve.append((s, total))
    return curve


def naive_max_pain(rows: list[ChainRow]) -> Decimal | None:
    curve = naive_curve(rows)
    if not curve:
        return None
    lowest = min(value for _, value in curve)
    return min(strike for strike, value in curve if value == lowest)


def test_payout_curve_and_max_pain_match_hand_computation() -> None:
    """L(S) is the writers' payout at each strike and max pain is its minimum."""
    rows = [row("110", 20, 20), row("100", 10, 30), row("120", 30, 10)]

    result = max_pain(rows)

    assert result.payout == (
        PayoutPoint(Decimal("100"), Decimal("400")),
        PayoutPoint(Decimal("110"), Decimal("200")),
        PayoutPoint(Decimal("120"), Decimal("400")),
    )
    assert result.strike == Decimal("110")


def test_tie_goes_to_lowest_strike() -> None:
    """Equal minimal payouts resolve to the lowest strike, whatever the input order."""
    rows = [row("110", 0, 1), row("100", 1, 0)]

    result = max_pain(rows)

    assert [p.value for p in result.payout] == [Decimal(10), Decimal(10)]
    assert result.strike == Decimal("100")


def test_zero_oi_strikes_are_part_of_the_curve() -> None:
    """Strikes without OI are still evaluated and can win a tie as the lowest strike."""
    rows = [row("105", 0, 0), row("90", 10, 0), row("95", 0, 0), row("110", 0, 10)]

    result = max_pain(rows)

    assert [(p.strike, p.value) for p in result.payout] == [
        (Decimal("90"), Decimal("200")),
        (Decimal("95"), Decimal("200")),
        (Decimal("105"), Decimal("200")),
        (Decimal("110"), Decimal("200")),
    ]
    assert result.strike == Decimal("90")


def test_all_zero_oi_chain_has_lowest_strike_as_max_pain() -> None:
    """With no OI anywhere every payout is 0, so the lowest strike wins."""
    result = max_pain([row("200", 0, 0), row("100", 0, 0)])

    assert [p.value for p in result.payout] == [Decimal(0), Decimal(0)]
    assert result.strike == Decimal("100")


def test_empty_chain_has_no_max_pain_and_no_ratios() -> None:
    """An empty chain yields null max pain, an empty curve and null ratios."""
    result = analyze_chain([])

    assert result.max_pain is None
    assert result.payout == ()
    assert result.pcr_oi is None
    assert result.pcr_volume is None


def test_payout_is_exact_beyond_default_decimal_precision() -> None:
    """L(S) stays exact where the default 28-digit context would round."""
    big = 10**30 + 7
    rows = [row("24500.05", big, 3), row("24550.10", 1, big)]

    curve = max_pain(rows).payout

    expected = Fraction(big) * Fraction("50.05")
    assert [Fraction(p.value) for p in curve] == [expected, expected]
    assert all(isinstance(p.value, Decimal) for p in curve)
    assert len(curve[0].value.as_tuple().digits) > 28


def test_equal_strikes_written_differently_are_duplicates() -> None:
    """Decimal('100') and Decimal('100.0') are one strike, so the chain is refused."""
    with pytest.raises(DuplicateStrikeError) as info:
        max_pain([row("100", 1, 1), row("105", 1, 1), row("100.0", 2, 2)])

    assert info.value.code == "duplicate_strike"


@pytest.mark.parametrize(
    "bad",
    [
        ChainRow(Decimal("100"), -1, 0),
        ChainRow(Decimal("100"), 0, 0, 0, -5),
        ChainRow(Decimal("NaN"), 1, 1),
        ChainRow(Decimal("-100"), 1, 1),
        ChainRow(Decimal("100"), Decimal("Infinity"), 1),
    ],
)
def test_negative_or_non_finite_numbers_are_refused(bad: ChainRow) -> None:
    """Rows with negative or non-finite numbers raise a typed error."""
    with pytest.raises(InvalidChainRowError):
        analyze_chain([row("90", 1, 1), bad])


def test_put_call_ratios_are_unrounded_quotients() -> None:
    """PCR is ΣPut/ΣCall as the correctly rounded double, for OI and for volume."""
    rows = [row("100", 3, 1, 7, 2), row("110", 4, 9, 0, 0)]

    ratios = put_call_ratios(rows)

    assert ratios.oi == 10 / 7
    assert ratios.volume == 2 / 7


def test_put_call_ratio_is_null_without_calls_and_zero_without_puts() -> None:
    """A zero denominator gives None; a zero numerator over calls gives 0.0."""
    no_calls = put_call_ratios([row("100", 0, 5, 0, 3)])
    no_puts = put_call_ratios([row("100", 5, 0, 3, 0)])
    nothing = put_call_ratios([row("100", 0, 0)])

    assert (no_calls.oi, no_calls.volume) == (None, None)
    assert (no_puts.oi, no_puts.volume) == (0.0, 0.0)
    assert (nothing.oi, nothing.volume) == (None, None)


def test_analyze_chain_agrees_with_the_separate_functions() -> None:
    """analyze_chain returns exactly what max_pain and put_call_ratios return."""
    rows = [row("100", 10, 30, 5, 6), row("120", 30, 10, 1, 0), row("110", 20, 20, 0, 4)]

    combined = analyze_chain(rows)
    mp = max_pain(rows)
    ratios = put_call_ratios(rows)

    assert (combined.max_pain, combined.payout) == (mp.strike, mp.payout)
    assert (combined.pcr_oi, combined.pcr_volume) == (ratios.oi, ratios.volume)


@st.composite
def chains(draw: st.DrawFn) -> list[ChainRow]:
    ticks = draw(st.lists(st.integers(1, 4000), max_size=40, unique=True))
    oi = st.integers(0, 10**9) | st.sampled_from([0, 0, 1])
    return [
        ChainRow(Decimal(t) * Decimal("0.05"), draw(oi), draw(oi), draw(oi), draw(oi))
        for t in ticks
    ]


@settings(max_examples=300, deadline=None)
@given(chains(), st.randoms(use_true_random=False))
def test_prefix_sum_curve_matches_naive_reference(rows: list[ChainRow], rnd: random.Random) -> None:
    """The O(n log n) curve and argmin equal an O(n²) exact reference, in any order."""
    shuffled = list(rows)
    rnd.shuffle(shuffled)

    result = max_pain(shuffled)

    assert [(p.strike, Fraction(p.value)) for p in result.payout] == naive_curve(rows)
    assert result.strike == naive_max_pain(rows)


def test_thousands_of_strikes_are_fast() -> None:
    """A 20,000-strike chain is analysed well within a second budget (naive O(n²) is not)."""
    rnd = random.Random(7)
    rows = [
        ChainRow(Decimal(k) / 20, rnd.randrange(10**7), rnd.randrange(10**7))
        for k in rnd.sample(range(1, 10**6), 20_000)
    ]

    started = time.perf_counter()
    result = analyze_chain(rows)
    elapsed = time.perf_counter() - started

    assert len(result.payout) == 20_000
    assert elapsed < 5.0


def test_chain_names_are_exported_by_the_package() -> None:
    """engine.analytics re-exports the chain API objects themselves."""
    from engine.analytics import _chain

    for name in _chain.__all__:
        assert getattr(analytics, name) is getattr(_chain, name)
