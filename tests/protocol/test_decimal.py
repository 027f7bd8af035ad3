"""Wire decimals and counts: which forms are accepted, and the stable reason for each refusal."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import DecimalFormatError, parse_count, parse_decimal

# PROTOCOL.md: money, prices and quantities are decimal strings; JSON integers are accepted
# too. protocol/_decimal.py bounds them at 14 integer and 8 fraction digits.
MAX_INT_DIGITS = 14
MAX_FRACTION_DIGITS = 8
MAX_COUNT = 10**18 - 1


def _reason(func: object, value: object) -> str:
    assert callable(func)
    with pytest.raises(DecimalFormatError) as info:
        func(value)
    return info.value.reason


# ---------------------------------------------------------------- parse_decimal: accepted


@pytest.mark.parametrize(
    "text",
    [
        "0",
        "1",
        "101",
        "101.05",
        "101.50",
        "0.1",
        "0.00000001",
        "24000.5",
        "-0",
        "-12.5",
        "-0.00000001",
        "9" * MAX_INT_DIGITS,
        "9" * MAX_INT_DIGITS + "." + "9" * MAX_FRACTION_DIGITS,
        "-" + "9" * MAX_INT_DIGITS + "." + "9" * MAX_FRACTION_DIGITS,
    ],
)
def test_parse_decimal_keeps_decimal_strings_exact(text: str) -> None:
    """A plain decimal string parses to exactly that Decimal, digit for digit (no float)."""
    value = parse_decimal(text)
    assert isinstance(value, Decimal)
    assert value.as_tuple() == Decimal(text).as_tuple()
    assert format(value, "f") == text


def test_parse_decimal_does_not_round_through_float() -> None:
    """ "0.1" is the exact decimal one tenth, not the binary float nearest to it."""
    value = parse_decimal("0.1")
    assert value == Decimal("0.1")
    assert value != Decimal(0.1)
    assert parse_decimal("0.1") + parse_decimal("0.2") == Decimal("0.3")


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        (0, Decimal("0")),
        (1, Decimal("1")),
        (101, Decimal("101")),
        (-5, Decimal("-5")),
        (10**MAX_INT_DIGITS - 1, Decimal("99999999999999")),
        (-(10**MAX_INT_DIGITS - 1), Decimal("-99999999999999")),
    ],
)
def test_parse_decimal_accepts_integer_json_numbers(number: int, expected: Decimal) -> None:
    """A JSON number that is an integer (within 14 digits) is accepted as that Decimal."""
    value = parse_decimal(number)
    assert isinstance(value, Decimal)
    assert value == expected


@pytest.mark.parametrize("value", ["-1", "-101.05", -1, -(10**13)])
def test_parse_decimal_accepts_negative_numbers(value: object) -> None:
    """Negative values parse: the sign is the caller's rule (a price is positive, a P&L not)."""
    assert parse_decimal(value) < 0


# ---------------------------------------------------------------- parse_decimal: refused


@pytest.mark.parametrize(
    "value",
    [
        101.5,
        101.0,
        0.0,
        1e5,
        float("nan"),
        float("inf"),
        True,
        False,
        None,
        [],
        ["1"],
        {},
        b"1",
        "NaN",
        "nan",
        "sNaN",
        "Infinity",
        "-Infinity",
        "inf",
        "1e5",
        "1E5",
        "1.5e2",
        "1e-3",
        " 1",
        "1 ",
        "\t1",
        "+1",
        "--1",
        "01",
        "00.5",
        ".5",
        "1.",
        "-",
        "",
        "1,000",
        "1_000",
        "1.2.3",
        "0x10",
        "\u0663",  # ARABIC-INDIC DIGIT THREE
        "\uff11",  # FULLWIDTH DIGIT ONE
    ],
    ids=repr,
)
def test_parse_decimal_refuses_non_decimal_forms(value: object) -> None:
    """Floats, booleans, non-finite values, exponents, signs other than '-', whitespace,
    leading zeros and non-ASCII digits are refused as ``not_decimal``."""
    assert _reason(parse_decimal, value) == "not_decimal"


@pytest.mark.parametrize(
    "value",
    [
        "1" * (MAX_INT_DIGITS + 1),
        "-" + "1" * (MAX_INT_DIGITS + 1),
        "1" * (MAX_INT_DIGITS + 1) + ".5",
        "1." + "1" * (MAX_FRACTION_DIGITS + 1),
        "-0." + "0" * MAX_FRACTION_DIGITS + "1",
        "101.123456789",
        10**MAX_INT_DIGITS,
        -(10**MAX_INT_DIGITS),
        10**30,
    ],
    ids=repr,
)
def test_parse_decimal_refuses_too_many_digits(value: object) -> None:
    """Over 14 integer or 8 fraction digits (string or integer) is ``too_many_digits``."""
    assert _reason(parse_decimal, value) == "too_many_digits"


@pytest.mark.parametrize("text", ["1\n", "101.05\n"], ids=repr)
def test_parse_decimal_refuses_a_trailing_newline(text: str) -> None:
    """A decimal string followed by a newline is refused as ``not_decimal`` like any whitespace."""
    assert _reason(parse_decimal, text) == "not_decimal"


def test_decimal_format_error_is_a_value_error_carrying_its_reason() -> None:
    """DecimalFormatError is a ValueError whose message and ``reason`` are the stable word."""
    with pytest.raises(ValueError, match="^not_decimal$") as info:
        parse_decimal(1.5)
    assert isinstance(info.value, DecimalFormatError)
    assert info.value.reason == "not_decimal"


@st.composite
def _wire_decimals(draw: st.DrawFn) -> Decimal:
    scale = draw(st.integers(0, MAX_FRACTION_DIGITS))
    bound = 10 ** (MAX_INT_DIGITS + scale) - 1
    return Decimal(draw(st.integers(-bound, bound))).scaleb(-scale)


@given(_wire_decimals())
def test_parse_decimal_round_trips_every_decimal_within_the_digit_limits(value: Decimal) -> None:
    """Any decimal of at most 14+8 digits, written in plain notation, parses back exactly."""
    text = format(value, "f")
    parsed = parse_decimal(text)
    assert parsed == value
    assert format(parsed, "f") == text


# ---------------------------------------------------------------- parse_count


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        (1, 1),
        (75, 75),
        (MAX_COUNT, MAX_COUNT),
        ("0", 0),
        ("75", 75),
        ("1000000", 1_000_000),
        (str(MAX_COUNT), MAX_COUNT),
    ],
    ids=repr,
)
def test_parse_count_accepts_integers_and_integer_strings(value: object, expected: int) -> None:
    """A count is a non-negative JSON integer or a string of ASCII digits, up to 18 digits."""
    count = parse_count(value)
    assert type(count) is int
    assert count == expected


@pytest.mark.parametrize(
    "value",
    [
        True,
        False,
        1.0,
        1.5,
        0.0,
        None,
        [],
        {},
        "",
        "1.5",
        "1.0",
        " 1",
        "1 ",
        "+1",
        "1e3",
        "1_000",
        "abc",
        "\u0663",  # ARABIC-INDIC DIGIT THREE
        "\uff11",  # FULLWIDTH DIGIT ONE
        "\u00b2",  # SUPERSCRIPT TWO (str.isdigit() is True for it)
    ],
    ids=repr,
)
def test_parse_count_refuses_non_integers(value: object) -> None:
    """Booleans, floats (even 1.0), fractional or non-ASCII strings are ``not_integer``."""
    assert _reason(parse_count, value) == "not_integer"


@pytest.mark.parametrize("value", [-1, -75, -(10**20)])
def test_parse_count_refuses_negative_integers(value: int) -> None:
    """A negative integer count is ``negative``."""
    assert _reason(parse_count, value) == "negative"


@pytest.mark.parametrize("value", [MAX_COUNT + 1, 10**30])
def test_parse_count_refuses_huge_integers(value: int) -> None:
    """An integer count of 10**18 or more is ``too_many_digits``."""
    assert _reason(parse_count, value) == "too_many_digits"


def test_parse_count_refuses_a_negative_integer_string_as_negative() -> None:
    """The string "-5" is refused for the same reason as the integer -5: ``negative``."""
    assert _reason(parse_count, "-5") == "negative"


def test_parse_count_refuses_a_huge_integer_string_as_too_many_digits() -> None:
    """The string "1000000000000000000" is refused like the integer 10**18: ``too_many_digits``."""
    assert _reason(parse_count, str(MAX_COUNT + 1)) == "too_many_digits"


@given(st.integers(0, MAX_COUNT))
def test_parse_count_gives_the_same_count_for_an_integer_and_its_string(value: int) -> None:
    """An integer count and its decimal string parse to the same int."""
    assert parse_count(value) == parse_count(str(value)) == value
