"""Instrument validation: each kind's valid form, every refusal with its field and reason,
and the wire round trip."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import Instrument, InstrumentError, dumps, loads, parse_instrument

ABSENT = object()  # marks a field to leave out

INDEX: dict[str, object] = {"symbol": "NIFTY", "kind": "index", "lot_size": 1, "tick_size": "0.05"}
EQUITY: dict[str, object] = {
    "symbol": "RELIANCE",
    "kind": "equity",
    "lot_size": 1,
    "tick_size": "0.05",
}
FUTURE: dict[str, object] = {
    "symbol": "NIFTY26JANFUT",
    "kind": "future",
    "underlying": "NIFTY",
    "expiry": "2026-01-27",
    "lot_size": 75,
    "tick_size": "0.1",
}
OPTION: dict[str, object] = {
    "symbol": "NIFTY26JAN24000CE",
    "kind": "option",
    "underlying": "NIFTY",
    "expiry": "2026-01-27",
    "strike": "24000",
    "option_type": "call",
    "lot_size": 75,
    "tick_size": "0.05",
}


def _with(base: dict[str, object], **fields: object) -> dict[str, object]:
    raw = {**base, **fields}
    return {k: v for k, v in raw.items() if v is not ABSENT}


def _refusal(raw: object) -> tuple[str, str]:
    with pytest.raises(InstrumentError) as info:
        parse_instrument(raw)
    return info.value.field, info.value.reason


# ---------------------------------------------------------------- valid instruments

VALID: list[Any] = [
    pytest.param(
        INDEX,
        Instrument("NIFTY", "index", None, None, None, None, 1, Decimal("0.05")),
        id="index",
    ),
    pytest.param(
        EQUITY,
        Instrument("RELIANCE", "equity", None, None, None, None, 1, Decimal("0.05")),
        id="equity",
    ),
    pytest.param(
        _with(EQUITY, symbol="M&M", underlying=None, expiry=None, strike=None, option_type=None),
        Instrument("M&M", "equity", None, None, None, None, 1, Decimal("0.05")),
        id="equity-explicit-nulls",
    ),
    pytest.param(
        FUTURE,
        Instrument(
            "NIFTY26JANFUT", "future", "NIFTY", dt.date(2026, 1, 27), None, None, 75, Decimal("0.1")
        ),
        id="future",
    ),
    pytest.param(
        OPTION,
        Instrument(
            "NIFTY26JAN24000CE",
            "option",
            "NIFTY",
            dt.date(2026, 1, 27),
            Decimal("24000"),
            "call",
            75,
            Decimal("0.05"),
        ),
        id="option-call",
    ),
    pytest.param(
        _with(OPTION, symbol="NIFTY2611324000.5PE", strike="24000.5", option_type="put"),
        Instrument(
            "NIFTY2611324000.5PE",
            "option",
            "NIFTY",
            dt.date(2026, 1, 27),
            Decimal("24000.5"),
            "put",
            75,
            Decimal("0.05"),
        ),
        id="option-put-fractional-strike",
    ),
    pytest.param(
        _with(OPTION, strike=24000, tick_size=1, lot_size=1_000_000),
        Instrument(
            "NIFTY26JAN24000CE",
            "option",
            "NIFTY",
            dt.date(2026, 1, 27),
            Decimal("24000"),
            "call",
            1_000_000,
            Decimal("1"),
        ),
        id="option-integer-numbers-max-lot",
    ),
]


@pytest.mark.parametrize(("raw", "expected"), VALID)
def test_valid_instrument_of_each_kind_is_parsed(
    raw: dict[str, object], expected: Instrument
) -> None:
    """A valid index, equity, future or option parses to the Instrument with exact values."""
    assert parse_instrument(raw) == expected


@pytest.mark.parametrize(("raw", "expected"), VALID)
def test_instrument_round_trips_through_the_wire(
    raw: dict[str, object], expected: Instrument
) -> None:
    """parse → to_wire → dumps → loads → parse gives an equal Instrument; money is strings."""
    wire = loads(dumps(parse_instrument(raw).to_wire()))
    assert set(wire) == {
        "symbol", "kind", "underlying", "expiry", "strike", "option_type", "lot_size", "tick_size"
    }  # fmt: skip
    assert isinstance(wire["tick_size"], str)
    assert wire["strike"] is None or isinstance(wire["strike"], str)
    assert wire["expiry"] is None or isinstance(wire["expiry"], str)
    assert parse_instrument(wire) == expected


def test_option_to_wire_writes_dates_and_decimals_as_strings() -> None:
    """An option's wire form has expiry as YYYY-MM-DD and strike/tick_size as decimal strings."""
    wire = loads(dumps(parse_instrument(OPTION).to_wire()))
    assert wire == {**OPTION, "strike": "24000", "tick_size": "0.05"}


@given(
    st.integers(1, 10**10).map(lambda n: Decimal(n).scaleb(-2)),
    st.dates(dt.date(2000, 1, 1), dt.date(2099, 12, 31)),
    st.sampled_from(["call", "put"]),
    st.integers(1, 1_000_000),
)
def test_any_valid_option_round_trips_through_the_wire(
    strike: Decimal, expiry: dt.date, option_type: str, lot_size: int
) -> None:
    """Options with any positive strike, date, type and lot size survive the wire unchanged."""
    raw = _with(
        OPTION,
        strike=format(strike, "f"),
        expiry=expiry.isoformat(),
        option_type=option_type,
        lot_size=lot_size,
    )
    parsed = parse_instrument(raw)
    assert (parsed.strike, parsed.expiry, parsed.lot_size) == (strike, expiry, lot_size)
    assert parse_instrument(loads(dumps(parsed.to_wire()))) == parsed


# ---------------------------------------------------------------- refusals

REFUSED: list[Any] = [
    # shape
    pytest.param([], "", "not_object", id="list"),
    pytest.param("NIFTY", "", "not_object", id="string"),
    pytest.param(None, "", "not_object", id="null"),
    pytest.param(_with(OPTION, foo=1), "foo", "unknown_field", id="unknown-field"),
    pytest.param(_with(INDEX, Symbol="X"), "Symbol", "unknown_field", id="unknown-field-case"),
    pytest.param(_with(INDEX, zz=1, aa=2), "aa", "unknown_field", id="unknown-fields-first"),
    # symbol
    pytest.param(_with(INDEX, symbol="nifty"), "symbol", "bad_symbol", id="symbol-lowercase"),
    pytest.param(_with(INDEX, symbol="A" * 41), "symbol", "bad_symbol", id="symbol-41-chars"),
    pytest.param(_with(INDEX, symbol="NIFTY 50"), "symbol", "bad_symbol", id="symbol-space"),
    pytest.param(_with(INDEX, symbol=""), "symbol", "bad_symbol", id="symbol-empty"),
    pytest.param(_with(INDEX, symbol=5), "symbol", "bad_symbol", id="symbol-int"),
    # kind
    pytest.param(_with(INDEX, kind="stock"), "kind", "bad_kind", id="kind-unknown"),
    pytest.param(_with(INDEX, kind="INDEX"), "kind", "bad_kind", id="kind-upper-case"),
    pytest.param(_with(INDEX, kind=""), "kind", "bad_kind", id="kind-empty"),
    pytest.param(_with(INDEX, kind=1), "kind", "bad_kind", id="kind-int"),
    pytest.param(_with(INDEX, kind=["index"]), "kind", "bad_kind", id="kind-list"),
    # underlying
    pytest.param(_with(FUTURE, underlying="nifty"), "underlying", "bad_symbol", id="underlying-lc"),
    pytest.param(_with(FUTURE, underlying=7), "underlying", "bad_symbol", id="underlying-int"),
    # expiry
    pytest.param(_with(FUTURE, expiry="2026-1-5"), "expiry", "bad_date", id="expiry-short-parts"),
    pytest.param(_with(FUTURE, expiry="20260105"), "expiry", "bad_date", id="expiry-basic-format"),
    pytest.param(_with(FUTURE, expiry=20260105), "expiry", "bad_date", id="expiry-int"),
    pytest.param(_with(FUTURE, expiry="2026-01-32"), "expiry", "bad_date", id="expiry-day-32"),
    pytest.param(_with(FUTURE, expiry="2026-02-29"), "expiry", "bad_date", id="expiry-not-leap"),
    pytest.param(_with(FUTURE, expiry="2026-13-01"), "expiry", "bad_date", id="expiry-month-13"),
    pytest.param(_with(FUTURE, expiry="27-01-2026"), "expiry", "bad_date", id="expiry-dmy"),
    pytest.param(_with(FUTURE, expiry="2026/01/27"), "expiry", "bad_date", id="expiry-slashes"),
    pytest.param(_with(FUTURE, expiry="2026-01-27T00:00"), "expiry", "bad_date", id="expiry-time"),
    pytest.param(_with(FUTURE, expiry="2026-01-27 "), "expiry", "bad_date", id="expiry-space"),
    pytest.param(_with(FUTURE, expiry=""), "expiry", "bad_date", id="expiry-empty"),
    pytest.param(_with(FUTURE, expiry=1769472000000), "expiry", "bad_date", id="expiry-epoch-ms"),
    pytest.param(_with(FUTURE, expiry=[2026, 1, 27]), "expiry", "bad_date", id="expiry-list"),
    # strike
    pytest.param(_with(OPTION, strike="0"), "strike", "not_positive", id="strike-zero"),
    pytest.param(_with(OPTION, strike=-100), "strike", "not_positive", id="strike-negative"),
    pytest.param(_with(OPTION, strike=24000.0), "strike", "not_decimal", id="strike-float"),
    pytest.param(_with(OPTION, strike=True), "strike", "not_decimal", id="strike-bool"),
    pytest.param(_with(OPTION, strike="2.4e4"), "strike", "not_decimal", id="strike-exponent"),
    pytest.param(
        _with(OPTION, strike="1." + "1" * 9), "strike", "too_many_digits", id="strike-9-fraction"
    ),
    # option_type
    pytest.param(_with(OPTION, option_type="CE"), "option_type", "bad_option_type", id="ot-CE"),
    pytest.param(_with(OPTION, option_type="Call"), "option_type", "bad_option_type", id="ot-case"),
    pytest.param(_with(OPTION, option_type=""), "option_type", "bad_option_type", id="ot-empty"),
    pytest.param(_with(OPTION, option_type=1), "option_type", "bad_option_type", id="ot-int"),
    # lot_size
    pytest.param(_with(FUTURE, lot_size=0), "lot_size", "out_of_range", id="lot-zero"),
    pytest.param(_with(FUTURE, lot_size=-75), "lot_size", "out_of_range", id="lot-negative"),
    pytest.param(_with(FUTURE, lot_size=1_000_001), "lot_size", "out_of_range", id="lot-too-big"),
    pytest.param(_with(FUTURE, lot_size=10**30), "lot_size", "out_of_range", id="lot-huge"),
    pytest.param(_with(FUTURE, lot_size=75.0), "lot_size", "not_integer", id="lot-float"),
    pytest.param(_with(FUTURE, lot_size=7.5), "lot_size", "not_integer", id="lot-fractional"),
    pytest.param(_with(FUTURE, lot_size=True), "lot_size", "not_integer", id="lot-bool"),
    pytest.param(_with(FUTURE, lot_size="7.5"), "lot_size", "not_integer", id="lot-frac-string"),
    pytest.param(_with(FUTURE, lot_size="lots"), "lot_size", "not_integer", id="lot-word"),
    # tick_size
    pytest.param(_with(FUTURE, tick_size=ABSENT), "tick_size", "missing", id="tick-missing"),
    pytest.param(_with(FUTURE, tick_size=None), "tick_size", "missing", id="tick-null"),
    pytest.param(_with(FUTURE, tick_size="0"), "tick_size", "not_positive", id="tick-zero"),
    pytest.param(_with(FUTURE, tick_size=0), "tick_size", "not_positive", id="tick-zero-int"),
    pytest.param(_with(FUTURE, tick_size="-0.05"), "tick_size", "not_positive", id="tick-negative"),
    pytest.param(_with(FUTURE, tick_size=0.05), "tick_size", "not_decimal", id="tick-float"),
    pytest.param(_with(FUTURE, tick_size="NaN"), "tick_size", "not_decimal", id="tick-nan"),
    pytest.param(
        _with(FUTURE, tick_size="0.000000001"), "tick_size", "too_many_digits", id="tick-9-fraction"
    ),
    # option fields: required on options, refused elsewhere
    pytest.param(_with(OPTION, strike=ABSENT), "strike", "missing", id="option-no-strike"),
    pytest.param(_with(OPTION, strike=None), "strike", "missing", id="option-null-strike"),
    pytest.param(_with(OPTION, option_type=ABSENT), "option_type", "missing", id="option-no-type"),
    pytest.param(
        _with(OPTION, strike=ABSENT, option_type=ABSENT), "strike", "missing", id="option-neither"
    ),
    pytest.param(_with(EQUITY, strike="100"), "strike", "not_allowed", id="equity-strike"),
    pytest.param(_with(INDEX, strike="100"), "strike", "not_allowed", id="index-strike"),
    pytest.param(_with(FUTURE, strike="24000"), "strike", "not_allowed", id="future-strike"),
    pytest.param(_with(EQUITY, option_type="call"), "option_type", "not_allowed", id="equity-ot"),
    pytest.param(_with(FUTURE, option_type="put"), "option_type", "not_allowed", id="future-ot"),
    # derivative fields: required on futures and options
    pytest.param(_with(FUTURE, expiry=ABSENT), "expiry", "missing", id="future-no-expiry"),
    pytest.param(_with(FUTURE, expiry=None), "expiry", "missing", id="future-null-expiry"),
    pytest.param(_with(OPTION, expiry=ABSENT), "expiry", "missing", id="option-no-expiry"),
    pytest.param(_with(FUTURE, underlying=ABSENT), "underlying", "missing", id="future-no-und"),
    pytest.param(_with(OPTION, underlying=ABSENT), "underlying", "missing", id="option-no-und"),
]


@pytest.mark.parametrize(("raw", "field", "reason"), REFUSED)
def test_invalid_instrument_is_refused_with_its_field_and_reason(
    raw: object, field: str, reason: str
) -> None:
    """Each invalid instrument raises InstrumentError naming the bad field and a stable reason."""
    assert _refusal(raw) == (field, reason)


def test_instrument_error_is_a_value_error_naming_field_and_reason() -> None:
    """InstrumentError is a ValueError whose message is "field: reason"."""
    with pytest.raises(ValueError, match="^lot_size: out_of_range$") as info:
        parse_instrument(_with(FUTURE, lot_size=0))
    assert isinstance(info.value, InstrumentError)


@pytest.mark.parametrize("name", ["symbol", "kind", "lot_size"])
def test_missing_required_field_is_refused_as_missing(name: str) -> None:
    """Leaving out a required field (symbol, kind, lot_size) is reported as ``missing``."""
    assert _refusal(_with(FUTURE, **{name: ABSENT})) == (name, "missing")


def test_lot_size_as_a_decimal_string_is_accepted() -> None:
    """lot_size "75" (a quantity as a decimal string, PROTOCOL.md's own example) is accepted."""
    assert parse_instrument(_with(FUTURE, lot_size="75")).lot_size == 75


def test_expiry_as_iso_week_date_is_refused() -> None:
    """An ISO week date ("2026-W05-2", ten characters) is not YYYY-MM-DD: ``bad_date``."""
    assert _refusal(_with(FUTURE, expiry="2026-W05-2")) == ("expiry", "bad_date")
