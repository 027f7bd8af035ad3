"""NSE trading symbols: building, parsing and their round trips."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol._symbols import (
    ParsedSymbol,
    format_strike,
    future_symbol,
    option_symbol,
    parse_symbol_name,
)

MONTHLY_UNDERLYINGS = st.from_regex(r"[A-Z0-9][A-Z0-9&_-]{0,9}", fullmatch=True)
WEEKLY_UNDERLYINGS = st.from_regex(r"[A-Z][A-Z&_-]{0,9}", fullmatch=True)
EXPIRIES = st.dates(date(2000, 1, 1), date(2099, 12, 31))
# Strikes with up to two decimals, written with trailing zeros ("2450.50") to test that the
# symbol drops them.
STRIKES = st.builds(
    lambda n, places: Decimal(n).scaleb(-places), st.integers(1, 10**7), st.integers(0, 2)
)
OPTION_TYPES = st.sampled_from(["call", "put"])


@pytest.mark.parametrize(
    ("args", "monthly", "symbol"),
    [
        (("NIFTY", date(2026, 1, 27), Decimal(24000), "call"), True, "NIFTY26JAN24000CE"),
        (("BANKNIFTY", date(2026, 1, 27), Decimal(52000), "put"), True, "BANKNIFTY26JAN52000PE"),
        (("NIFTY", date(2026, 1, 13), Decimal(24000), "call"), False, "NIFTY2611324000CE"),
        (("NIFTY", date(2026, 9, 1), Decimal(25050), "put"), False, "NIFTY2690125050PE"),
        (("NIFTY", date(2026, 10, 6), Decimal(24000), "put"), False, "NIFTY26O0624000PE"),
        (("NIFTY", date(2026, 11, 3), Decimal(24000), "call"), False, "NIFTY26N0324000CE"),
        (("NIFTY", date(2025, 12, 9), Decimal(24000), "call"), False, "NIFTY25D0924000CE"),
        (
            ("RELIANCE", date(2026, 1, 27), Decimal("2450.50"), "call"),
            True,
            "RELIANCE26JAN2450.5CE",
        ),
        (("NIFTY", date(2026, 1, 27), Decimal("24000.00"), "put"), True, "NIFTY26JAN24000PE"),
        (("NIFTY", date(2026, 1, 27), Decimal("2.4E+4"), "put"), True, "NIFTY26JAN24000PE"),
        (("NIFTYNXT50", date(2026, 1, 27), Decimal(70000), "call"), True, "NIFTYNXT5026JAN70000CE"),
    ],
)
def test_option_symbol_follows_nse_formats(args, monthly, symbol):
    """Monthly and weekly option symbols are written as NSE lists them."""
    assert option_symbol(*args, monthly=monthly) == symbol


@pytest.mark.parametrize(
    ("underlying", "expiry", "symbol"),
    [
        ("NIFTY", date(2026, 1, 27), "NIFTY26JANFUT"),
        ("BANKNIFTY", date(2026, 3, 30), "BANKNIFTY26MARFUT"),
        ("NIFTYNXT50", date(2026, 12, 29), "NIFTYNXT5026DECFUT"),
    ],
)
def test_future_symbol_is_always_monthly_style(underlying, expiry, symbol):
    """Futures use YY + three-letter month + FUT."""
    assert future_symbol(underlying, expiry) == symbol


@pytest.mark.parametrize(
    ("symbol", "parsed"),
    [
        ("NIFTY26JANFUT", ParsedSymbol("NIFTY", "future", 2026, 1)),
        ("NIFTYNXT5026FEBFUT", ParsedSymbol("NIFTYNXT50", "future", 2026, 2)),
        (
            "NIFTY26JAN24000CE",
            ParsedSymbol("NIFTY", "option", 2026, 1, None, Decimal(24000), "call"),
        ),
        (
            "BANKNIFTY26JAN52000PE",
            ParsedSymbol("BANKNIFTY", "option", 2026, 1, None, Decimal(52000), "put"),
        ),
        (
            "NIFTY2611324000CE",
            ParsedSymbol("NIFTY", "option", 2026, 1, 13, Decimal(24000), "call"),
        ),
        (
            "NIFTY26D292450.5PE",
            ParsedSymbol("NIFTY", "option", 2026, 12, 29, Decimal("2450.5"), "put"),
        ),
    ],
)
def test_parse_symbol_name_takes_symbols_apart(symbol, parsed):
    """Hand-checked symbols parse into their parts; monthly ones carry no day."""
    assert parse_symbol_name(symbol) == parsed


@pytest.mark.parametrize(
    "symbol",
    [
        "",
        "NIFTY",
        "RELIANCE",
        "nifty26jan24000ce",
        "NIFTY26JAN24000XE",
        "NIFTY26XYZ24000CE",
        "NIFTY26JANFUTX",
        "26JANFUT",
        "NIFTY26JAN24000.0CE",  # trailing zero: not how a strike is written
        "NIFTY26JAN024000CE",  # leading zero
        "NIFTY26JAN0CE",  # zero strike
        "NIFTY26JANCE",  # no strike
        "NIFTY2613224000CE",  # 32 January
        "NIFTY2623024000CE",  # 30 February
        "NIFTY2600524000CE",  # month code 0
        "NIFTY26A0524000CE",  # month code A
        "NIFTY 26JAN24000CE",
        "X" * 41,
    ],
)
def test_invalid_names_parse_to_none(symbol):
    """Anything that is not a canonical future or option symbol gives None."""
    assert parse_symbol_name(symbol) is None


@pytest.mark.parametrize(
    ("underlying", "expiry", "strike", "monthly"),
    [
        ("NIFTY", date(2026, 1, 27), Decimal(0), True),
        ("NIFTY", date(2026, 1, 27), Decimal(-50), True),
        ("NIFTY", date(2026, 1, 27), Decimal("NaN"), True),
        ("NIFTY", date(1999, 12, 28), Decimal(24000), True),
        ("NIFTY", date(2100, 1, 26), Decimal(24000), True),
        ("nifty", date(2026, 1, 27), Decimal(24000), True),
        ("", date(2026, 1, 27), Decimal(24000), True),
        ("NIFTYNXT50", date(2026, 1, 13), Decimal(24000), False),  # digits run into the date
        ("N" * 30, date(2026, 1, 27), Decimal(24000), True),  # longer than a wire symbol
    ],
)
def test_option_symbol_refuses_what_it_cannot_write(underlying, expiry, strike, monthly):
    """Bad strikes, years, underlyings and over-long symbols raise ValueError."""
    with pytest.raises(ValueError, match=r"."):
        option_symbol(underlying, expiry, strike, "call", monthly=monthly)


def test_option_symbol_refuses_an_unknown_option_type():
    """Only call and put exist."""
    with pytest.raises(ValueError, match="option_type"):
        option_symbol("NIFTY", date(2026, 1, 27), Decimal(24000), "straddle", monthly=True)  # type: ignore[arg-type]


def test_format_strike_drops_trailing_zeros_and_exponents():
    """A strike is written in plain notation without trailing zeros."""
    assert [format_strike(Decimal(s)) for s in ("24000", "2.4E+4", "2450.50", "0.5")] == [
        "24000",
        "24000",
        "2450.5",
        "0.5",
    ]


@given(MONTHLY_UNDERLYINGS, EXPIRIES, STRIKES, OPTION_TYPES)
def test_monthly_option_symbols_round_trip(underlying, expiry, strike, option_type):
    """A monthly option symbol parses back to its parts, without the day."""
    symbol = option_symbol(underlying, expiry, strike, option_type, monthly=True)
    parsed = parse_symbol_name(symbol)
    assert parsed == ParsedSymbol(
        underlying, "option", expiry.year, expiry.month, None, strike, option_type
    )
    assert parsed.monthly
    assert parsed.matches_expiry(expiry)


@given(WEEKLY_UNDERLYINGS, EXPIRIES, STRIKES, OPTION_TYPES)
def test_weekly_option_symbols_round_trip(underlying, expiry, strike, option_type):
    """A weekly option symbol parses back to its parts, day included."""
    symbol = option_symbol(underlying, expiry, strike, option_type, monthly=False)
    parsed = parse_symbol_name(symbol)
    assert parsed == ParsedSymbol(
        underlying, "option", expiry.year, expiry.month, expiry.day, strike, option_type
    )
    assert not parsed.monthly
    assert parsed.matches_expiry(expiry)


@given(MONTHLY_UNDERLYINGS, EXPIRIES)
def test_future_symbols_round_trip(underlying, expiry):
    """A future symbol parses back to its underlying, year and month."""
    parsed = parse_symbol_name(future_symbol(underlying, expiry))
    assert parsed == ParsedSymbol(underlying, "future", expiry.year, expiry.month)


def _rebuild(parsed: ParsedSymbol) -> str:
    day = parsed.day if parsed.day is not None else 1
    expiry = date(parsed.year, parsed.month, day)
    if parsed.kind == "future":
        return future_symbol(parsed.underlying, expiry)
    assert parsed.strike is not None
    assert parsed.option_type is not None
    return option_symbol(
        parsed.underlying, expiry, parsed.strike, parsed.option_type, monthly=parsed.monthly
    )


# Near-symbols: valid pieces mixed with invalid ones (day 00-99, odd strikes, odd suffixes).
NEAR_SYMBOLS = st.tuples(
    st.from_regex(r"[A-Z0-9&-]{0,6}", fullmatch=True),
    st.from_regex(r"[0-9]{2}", fullmatch=True),
    st.sampled_from(["JAN", "SEP", "DEC", "JUN", "XYZ"])
    | st.from_regex(r"[0-9OND][0-9]{2}", fullmatch=True),
    st.from_regex(r"[0-9][0-9.]{0,6}", fullmatch=True) | st.just(""),
    st.sampled_from(["CE", "PE", "FUT", "XE"]),
).map("".join)


@given(NEAR_SYMBOLS | st.text(max_size=30))
def test_every_symbol_that_parses_is_canonical(text):
    """Parsing never raises, and whatever parses is rebuilt into exactly the same symbol."""
    parsed = parse_symbol_name(text)
    if parsed is not None:
        assert _rebuild(parsed) == text


def test_matches_expiry_compares_month_or_day():
    """A monthly symbol matches any day of its month, a weekly one only its day."""
    monthly = parse_symbol_name("NIFTY26JAN24000CE")
    weekly = parse_symbol_name("NIFTY2611324000CE")
    assert monthly is not None
    assert weekly is not None
    assert monthly.matches_expiry(date(2026, 1, 27))
    assert not monthly.matches_expiry(date(2026, 2, 24))
    assert weekly.matches_expiry(date(2026, 1, 13))
    assert not weekly.matches_expiry(date(2026, 1, 20))
