"""Tick validation at the ingest boundary: every refused field with its reason, mixed batches,
exact decimals and the wire round trip."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import Tick, TickError, dumps, loads, parse_symbol, parse_ticks
from protocol._ticks import DEFAULT_MAX_AGE_MS, DEFAULT_MAX_AHEAD_MS, MAX_BATCH, ticks_to_wire

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z in epoch ms
MAX_AGE = 60_000
MAX_AHEAD = 5_000
ABSENT = object()  # marks a field to leave out of a tick
COUNT_FIELDS = ("bid_qty", "ask_qty", "volume", "oi")
PRICE_FIELDS = ("bid", "ask")


def _tick(**fields: object) -> dict[str, object]:
    raw: dict[str, object] = {"symbol": "NIFTY", "ltp": "101.05", "ts": NOW}
    raw.update(fields)
    return {k: v for k, v in raw.items() if v is not ABSENT}


def _parse(*items: object) -> tuple[list[Tick], list[TickError]]:
    return parse_ticks(list(items), now_ms=NOW, max_age_ms=MAX_AGE, max_ahead_ms=MAX_AHEAD)


def _accepted(raw: object) -> Tick:
    ticks, errors = _parse(raw)
    assert errors == []
    assert len(ticks) == 1
    return ticks[0]


def _refused(raw: object) -> tuple[str, str]:
    ticks, errors = _parse(raw)
    assert ticks == []
    assert len(errors) == 1
    assert errors[0].index == 0
    return errors[0].field, errors[0].reason


# ---------------------------------------------------------------- refused fields

REFUSED: list[Any] = [
    # symbol
    pytest.param({"symbol": ABSENT}, "symbol", "missing", id="symbol-missing"),
    pytest.param({"symbol": "nifty"}, "symbol", "bad_symbol", id="symbol-lowercase"),
    pytest.param({"symbol": "Nifty"}, "symbol", "bad_symbol", id="symbol-mixed-case"),
    pytest.param({"symbol": "A" * 41}, "symbol", "bad_symbol", id="symbol-41-chars"),
    pytest.param({"symbol": ""}, "symbol", "bad_symbol", id="symbol-empty"),
    pytest.param({"symbol": "NIFTY 50"}, "symbol", "bad_symbol", id="symbol-space"),
    pytest.param({"symbol": "NIFTY/50"}, "symbol", "bad_symbol", id="symbol-slash"),
    pytest.param({"symbol": "NIFTY:50"}, "symbol", "bad_symbol", id="symbol-colon"),
    pytest.param({"symbol": "-NIFTY"}, "symbol", "bad_symbol", id="symbol-leading-dash"),
    pytest.param({"symbol": "NİFTY"}, "symbol", "bad_symbol", id="symbol-non-ascii"),
    pytest.param({"symbol": 123}, "symbol", "bad_symbol", id="symbol-int"),
    pytest.param({"symbol": ["NIFTY"]}, "symbol", "bad_symbol", id="symbol-list"),
    # ltp
    pytest.param({"ltp": ABSENT}, "ltp", "missing", id="ltp-missing"),
    pytest.param({"ltp": None}, "ltp", "missing", id="ltp-null"),
    pytest.param({"ltp": "0"}, "ltp", "not_positive", id="ltp-zero-string"),
    pytest.param({"ltp": 0}, "ltp", "not_positive", id="ltp-zero-int"),
    pytest.param({"ltp": "-0"}, "ltp", "not_positive", id="ltp-minus-zero"),
    pytest.param({"ltp": "-101.05"}, "ltp", "not_positive", id="ltp-negative-string"),
    pytest.param({"ltp": -1}, "ltp", "not_positive", id="ltp-negative-int"),
    pytest.param({"ltp": 101.5}, "ltp", "not_decimal", id="ltp-float"),
    pytest.param({"ltp": 101.0}, "ltp", "not_decimal", id="ltp-integral-float"),
    pytest.param({"ltp": True}, "ltp", "not_decimal", id="ltp-bool"),
    pytest.param({"ltp": "NaN"}, "ltp", "not_decimal", id="ltp-nan"),
    pytest.param({"ltp": "Infinity"}, "ltp", "not_decimal", id="ltp-infinity"),
    pytest.param({"ltp": "-Infinity"}, "ltp", "not_decimal", id="ltp-minus-infinity"),
    pytest.param({"ltp": "1e5"}, "ltp", "not_decimal", id="ltp-exponent"),
    pytest.param({"ltp": " 1"}, "ltp", "not_decimal", id="ltp-leading-space"),
    pytest.param({"ltp": "abc"}, "ltp", "not_decimal", id="ltp-word"),
    pytest.param({"ltp": {"v": "1"}}, "ltp", "not_decimal", id="ltp-object"),
    pytest.param({"ltp": "101.123456789"}, "ltp", "too_many_digits", id="ltp-9-fraction-digits"),
    pytest.param({"ltp": "1" * 15}, "ltp", "too_many_digits", id="ltp-15-integer-digits"),
    pytest.param({"ltp": 10**14}, "ltp", "too_many_digits", id="ltp-15-digit-int"),
    # ts
    pytest.param({"ts": ABSENT}, "ts", "missing", id="ts-missing"),
    pytest.param({"ts": None}, "ts", "missing", id="ts-null"),
    pytest.param({"ts": float(NOW)}, "ts", "not_integer", id="ts-float"),
    pytest.param({"ts": NOW + 0.5}, "ts", "not_integer", id="ts-fractional-float"),
    pytest.param({"ts": True}, "ts", "not_integer", id="ts-bool"),
    pytest.param({"ts": str(NOW)}, "ts", "not_integer", id="ts-string"),
    pytest.param({"ts": "2026-01-01T00:00:00Z"}, "ts", "not_integer", id="ts-iso-string"),
    pytest.param({"ts": NOW - MAX_AGE - 1}, "ts", "too_old", id="ts-too-old"),
    pytest.param({"ts": 0}, "ts", "too_old", id="ts-epoch-zero"),
    pytest.param({"ts": NOW + MAX_AHEAD + 1}, "ts", "in_future", id="ts-in-future"),
    pytest.param({"ts": NOW * 1000}, "ts", "in_future", id="ts-microseconds"),
    # quote
    pytest.param({"bid": "101", "ask": "100.95"}, "bid", "crossed_quote", id="quote-crossed"),
    pytest.param(
        {"bid": 102, "ask": "101.99999999"}, "bid", "crossed_quote", id="quote-crossed-mixed"
    ),
    # unknown fields (reported before anything else, the first one in name order)
    pytest.param({"foo": 1}, "foo", "unknown_field", id="unknown-field"),
    pytest.param({"LTP": "1"}, "LTP", "unknown_field", id="unknown-field-case"),
    pytest.param({"zeta": 1, "alpha": 2}, "alpha", "unknown_field", id="unknown-fields-first"),
    pytest.param({"ltp": 1.5, "extra": 1}, "extra", "unknown_field", id="unknown-field-first"),
]

for _name in PRICE_FIELDS:
    REFUSED += [
        pytest.param({_name: "0"}, _name, "not_positive", id=f"{_name}-zero"),
        pytest.param({_name: 0}, _name, "not_positive", id=f"{_name}-zero-int"),
        pytest.param({_name: "-1.5"}, _name, "not_positive", id=f"{_name}-negative"),
        pytest.param({_name: -5}, _name, "not_positive", id=f"{_name}-negative-int"),
        pytest.param({_name: 100.5}, _name, "not_decimal", id=f"{_name}-float"),
        pytest.param({_name: False}, _name, "not_decimal", id=f"{_name}-bool"),
        pytest.param({_name: "NaN"}, _name, "not_decimal", id=f"{_name}-nan"),
        pytest.param({_name: "1." + "1" * 9}, _name, "too_many_digits", id=f"{_name}-9-fraction"),
    ]

for _name in COUNT_FIELDS:
    REFUSED += [
        pytest.param({_name: -1}, _name, "negative", id=f"{_name}-negative"),
        pytest.param({_name: "1.5"}, _name, "not_integer", id=f"{_name}-fractional-string"),
        pytest.param({_name: 1.5}, _name, "not_integer", id=f"{_name}-fractional-float"),
        pytest.param({_name: 100.0}, _name, "not_integer", id=f"{_name}-float"),
        pytest.param({_name: True}, _name, "not_integer", id=f"{_name}-bool"),
        pytest.param({_name: "lots"}, _name, "not_integer", id=f"{_name}-word"),
        pytest.param({_name: [1]}, _name, "not_integer", id=f"{_name}-list"),
        pytest.param({_name: 10**18}, _name, "too_many_digits", id=f"{_name}-huge"),
    ]


@pytest.mark.parametrize(("fields", "field", "reason"), REFUSED)
def test_invalid_tick_is_refused_with_its_field_and_reason(
    fields: dict[str, object], field: str, reason: str
) -> None:
    """A tick with one bad field is refused alone, naming that field and a stable reason."""
    assert _refused(_tick(**fields)) == (field, reason)


@pytest.mark.parametrize("item", ["NIFTY", 1, 1.5, None, True, [], ["NIFTY", "101", NOW]], ids=repr)
def test_non_object_item_is_refused_as_not_object(item: object) -> None:
    """A batch item that is not a JSON object is refused with field "" and ``not_object``."""
    assert _refused(item) == ("", "not_object")


def test_tick_with_several_faults_is_reported_once() -> None:
    """One invalid tick gives exactly one error, however many of its fields are bad."""
    ticks, errors = _parse(_tick(symbol="bad", ltp=1.5, ts="x", bid=-1, volume=-1))
    assert ticks == []
    assert [(e.index, e.field) for e in errors] == [(0, "symbol")]


def test_symbol_with_trailing_newline_is_refused() -> None:
    """A symbol followed by a newline is not a valid symbol (``bad_symbol``)."""
    assert _refused(_tick(symbol="NIFTY\n")) == ("symbol", "bad_symbol")


def test_ltp_with_trailing_newline_is_refused() -> None:
    """An ltp string followed by a newline is refused as ``not_decimal``."""
    assert _refused(_tick(ltp="101.05\n")) == ("ltp", "not_decimal")


# ---------------------------------------------------------------- accepted forms


def test_minimal_tick_is_accepted_with_absent_optional_fields() -> None:
    """symbol, ltp and ts alone make a valid tick; the optional fields are None."""
    assert _accepted(_tick()) == Tick("NIFTY", Decimal("101.05"), NOW)


def test_full_tick_is_accepted_with_every_value() -> None:
    """Every field of a full tick is parsed: prices to Decimals, quantities to ints."""
    raw = _tick(
        symbol="NIFTY26JAN24000CE",
        ltp="101.05",
        bid="101",
        ask="101.10",
        bid_qty="75",
        ask_qty=150,
        volume="1234567",
        oi=987654,
    )
    assert _accepted(raw) == Tick(
        "NIFTY26JAN24000CE",
        Decimal("101.05"),
        NOW,
        Decimal("101"),
        Decimal("101.10"),
        75,
        150,
        1_234_567,
        987_654,
    )


def test_null_optional_fields_are_treated_as_absent() -> None:
    """An optional field sent as null is the same as leaving it out."""
    raw = _tick(bid=None, ask=None, bid_qty=None, ask_qty=None, volume=None, oi=None)
    assert _accepted(raw) == Tick("NIFTY", Decimal("101.05"), NOW)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("101.05", "101.05"),
        ("0.1", "0.1"),
        ("0.00000001", "0.00000001"),
        ("24000.50", "24000.50"),
        ("99999999999999.99999999", "99999999999999.99999999"),
    ],
)
def test_decimal_string_prices_are_exact(text: str, expected: str) -> None:
    """A decimal-string price becomes exactly that Decimal, with no float rounding."""
    tick = _accepted(_tick(ltp=text, bid=text, ask=text))
    for value in (tick.ltp, tick.bid, tick.ask):
        assert isinstance(value, Decimal)
        assert value.as_tuple() == Decimal(expected).as_tuple()
        assert format(value, "f") == expected


@pytest.mark.parametrize(("number", "expected"), [(101, "101"), (1, "1"), (10**14 - 1, "9" * 14)])
def test_integer_json_numbers_are_accepted_as_prices(number: int, expected: str) -> None:
    """ltp, bid and ask may be JSON integers: 101 → Decimal("101")."""
    tick = _accepted(_tick(ltp=number, bid=number, ask=number))
    assert (tick.ltp, tick.bid, tick.ask) == (Decimal(expected),) * 3
    assert isinstance(tick.ltp, Decimal)


@pytest.mark.parametrize("name", COUNT_FIELDS)
@pytest.mark.parametrize(
    ("value", "expected"), [(0, 0), ("0", 0), (75, 75), ("75", 75), (10**18 - 1, 10**18 - 1)]
)
def test_quantities_accept_integers_and_integer_strings(
    name: str, value: object, expected: int
) -> None:
    """bid_qty, ask_qty, volume and oi take a JSON integer or integer string, zero included."""
    tick = _accepted(_tick(**{name: value}))
    assert getattr(tick, name) == expected
    assert type(getattr(tick, name)) is int


@pytest.mark.parametrize(("bid", "ask"), [("101", "101"), (101, "101.00"), ("100.95", "101")])
def test_quote_with_bid_at_or_below_ask_is_accepted(bid: object, ask: object) -> None:
    """A locked quote (bid == ask) and a normal one (bid < ask) are valid."""
    tick = _accepted(_tick(bid=bid, ask=ask))
    assert tick.bid is not None and tick.ask is not None and tick.bid <= tick.ask


@pytest.mark.parametrize("fields", [{"bid": "101"}, {"ask": "101"}], ids=["bid-only", "ask-only"])
def test_one_sided_quote_is_accepted(fields: dict[str, object]) -> None:
    """A tick may carry only one side of the quote."""
    _accepted(_tick(**fields))


@pytest.mark.parametrize(
    "symbol",
    ["NIFTY", "M&M", "BAJAJ-AUTO", "NIFTY_50", "NSE.X", "NIFTY2611324000CE", "0", "A" * 40],
)
def test_valid_symbols_are_accepted_in_ticks(symbol: str) -> None:
    """Upper-case NSE-style symbols of 1..40 characters from [A-Z0-9&_.-] are accepted."""
    assert _accepted(_tick(symbol=symbol)).symbol == symbol


# ---------------------------------------------------------------- time window


@pytest.mark.parametrize(
    ("offset", "reason"),
    [
        (-MAX_AGE - 1, "too_old"),
        (-MAX_AGE, None),
        (0, None),
        (MAX_AHEAD, None),
        (MAX_AHEAD + 1, "in_future"),
    ],
    ids=["age+1", "age", "now", "ahead", "ahead+1"],
)
def test_time_window_edges_are_exact(offset: int, reason: str | None) -> None:
    """now−max_age and now+max_ahead are inside the window; one millisecond beyond is refused."""
    ticks, errors = _parse(_tick(ts=NOW + offset))
    if reason is None:
        assert errors == [] and ticks[0].ts == NOW + offset
    else:
        assert ticks == [] and errors == [TickError(0, "ts", reason)]


@pytest.mark.parametrize(
    ("offset", "reason"),
    [
        (-DEFAULT_MAX_AGE_MS - 1, "too_old"),
        (-DEFAULT_MAX_AGE_MS, None),
        (DEFAULT_MAX_AHEAD_MS, None),
        (DEFAULT_MAX_AHEAD_MS + 1, "in_future"),
    ],
    ids=["age+1", "age", "ahead", "ahead+1"],
)
def test_default_time_window_is_one_day_back_and_one_minute_ahead(
    offset: int, reason: str | None
) -> None:
    """Without explicit limits a tick may be up to 24 h old and 60 s ahead of the clock."""
    assert DEFAULT_MAX_AGE_MS == 24 * 3600 * 1000
    assert DEFAULT_MAX_AHEAD_MS == 60 * 1000
    ticks, errors = parse_ticks([_tick(ts=NOW + offset)], now_ms=NOW)
    assert [e.reason for e in errors] == ([] if reason is None else [reason])
    assert len(ticks) == (1 if reason is None else 0)


# ---------------------------------------------------------------- batches


def test_mixed_batch_keeps_valid_ticks_in_order_and_reports_each_invalid_one() -> None:
    """Valid ticks of a batch are returned in order with their values; every invalid one is
    reported with its index, field and reason."""
    batch = [
        _tick(symbol="AAA", ltp="1.5"),
        _tick(symbol="BBB", ltp=101.5),
        _tick(symbol="CCC", ltp=7, volume="10"),
        "not a tick",
        _tick(symbol="DDD", ts=NOW + MAX_AHEAD + 1),
        _tick(symbol="EEE", ltp="2.25", bid="2.2", ask="2.3"),
        _tick(symbol="FFF", extra=True),
        _tick(symbol="GGG", bid="3", ask="2"),
        _tick(symbol="HHH", oi=-3),
    ]
    ticks, errors = _parse(*batch)
    assert ticks == [
        Tick("AAA", Decimal("1.5"), NOW),
        Tick("CCC", Decimal("7"), NOW, volume=10),
        Tick("EEE", Decimal("2.25"), NOW, Decimal("2.2"), Decimal("2.3")),
    ]
    assert errors == [
        TickError(1, "ltp", "not_decimal"),
        TickError(3, "", "not_object"),
        TickError(4, "ts", "in_future"),
        TickError(6, "extra", "unknown_field"),
        TickError(7, "bid", "crossed_quote"),
        TickError(8, "oi", "negative"),
    ]
    assert [e.to_wire() for e in errors[:2]] == [
        {"index": 1, "field": "ltp", "reason": "not_decimal"},
        {"index": 3, "field": "", "reason": "not_object"},
    ]


def test_tick_error_encodes_as_index_field_reason() -> None:
    """A TickError's wire form is {"index", "field", "reason"} and JSON-encodes as such."""
    error = TickError(4, "ltp", "not_positive")
    assert loads(dumps(error.to_wire())) == {"index": 4, "field": "ltp", "reason": "not_positive"}


def test_empty_batch_gives_no_ticks_and_no_errors() -> None:
    """An empty list is a valid (if useless) batch."""
    assert _parse() == ([], [])


@pytest.mark.parametrize(
    "raw",
    [None, "[]", {"ticks": []}, (_tick(),), 1, _tick()],
    ids=["null", "string", "object", "tuple", "int", "single-tick"],
)
def test_batch_that_is_not_a_list_is_refused_as_a_whole(raw: object) -> None:
    """A batch that is not a JSON array raises ValueError (the request is refused with 422)."""
    with pytest.raises(ValueError, match="list"):
        parse_ticks(raw, now_ms=NOW)


def test_batch_of_max_batch_ticks_is_accepted() -> None:
    """MAX_BATCH ticks in one batch are all accepted."""
    ticks, errors = parse_ticks([_tick()] * MAX_BATCH, now_ms=NOW)
    assert (len(ticks), errors) == (MAX_BATCH, [])


def test_batch_over_max_batch_is_refused_as_a_whole() -> None:
    """MAX_BATCH + 1 ticks raise ValueError even though each tick is valid."""
    assert MAX_BATCH == 10_000
    with pytest.raises(ValueError, match=str(MAX_BATCH)):
        parse_ticks([_tick()] * (MAX_BATCH + 1), now_ms=NOW)


# ---------------------------------------------------------------- parse_symbol


@pytest.mark.parametrize(
    "symbol", ["NIFTY", "A", "0", "M&M", "BAJAJ-AUTO", "NIFTY_50", "X.Y", "A" * 40]
)
def test_parse_symbol_returns_valid_symbols_unchanged(symbol: str) -> None:
    """A valid symbol is returned as it is."""
    assert parse_symbol(symbol) == symbol


@pytest.mark.parametrize(
    "value",
    [
        "",
        "nifty",
        "A" * 41,
        "NIFTY 50",
        " NIFTY",
        "NIFTY\t",
        "-A",
        "&A",
        ".A",
        "_A",
        "NIFTY*",
        "NİFTY",
        "ＮＩＦＴＹ",
        None,
        1,
        b"NIFTY",
        ["NIFTY"],
    ],
    ids=repr,
)
def test_parse_symbol_refuses_bad_symbols(value: object) -> None:
    """Lower case, too long, bad characters, a non-alphanumeric first character or a
    non-string raise ValueError("bad_symbol")."""
    with pytest.raises(ValueError, match="^bad_symbol$"):
        parse_symbol(value)


@pytest.mark.parametrize("value", ["NIFTY\n", "A" * 40 + "\n"], ids=repr)
def test_parse_symbol_refuses_a_trailing_newline(value: str) -> None:
    """A symbol followed by a newline raises ValueError("bad_symbol")."""
    with pytest.raises(ValueError, match="^bad_symbol$"):
        parse_symbol(value)


# ---------------------------------------------------------------- wire round trip

_SYMBOLS = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789&_.-", max_size=39),
)


@st.composite
def _positive_decimals(draw: st.DrawFn) -> Decimal:
    scale = draw(st.integers(0, 8))
    return Decimal(draw(st.integers(1, 10 ** (14 + scale) - 1))).scaleb(-scale)


def _price_wire(value: Decimal, as_int: bool) -> object:
    if as_int and value == value.to_integral_value():
        return int(value)
    return format(value, "f")


_COUNTS = st.one_of(st.none(), st.integers(0, 10**18 - 1))


@st.composite
def _valid_ticks(draw: st.DrawFn) -> tuple[dict[str, object], Tick]:
    as_int = draw(st.booleans())
    ltp = draw(_positive_decimals())
    ts = draw(st.integers(NOW - MAX_AGE, NOW + MAX_AHEAD))
    quote = draw(st.lists(_positive_decimals(), max_size=2).map(sorted))
    bid = quote[0] if len(quote) == 2 else draw(st.sampled_from([None, *quote]))
    ask = quote[1] if len(quote) == 2 else None
    counts = {name: draw(_COUNTS) for name in COUNT_FIELDS}
    raw: dict[str, object] = {"symbol": draw(_SYMBOLS), "ltp": _price_wire(ltp, as_int), "ts": ts}
    for name, value in (("bid", bid), ("ask", ask)):
        if value is not None:
            raw[name] = _price_wire(value, as_int)
    for name, count in counts.items():
        if count is not None:
            raw[name] = str(count) if draw(st.booleans()) else count
    expected = Tick(str(raw["symbol"]), ltp, ts, bid, ask, **counts)
    return raw, expected


@given(_valid_ticks())
def test_valid_ticks_parse_to_their_values_and_round_trip_through_the_wire(
    case: tuple[dict[str, object], Tick],
) -> None:
    """parse → to_wire → dumps → loads → parse gives an equal Tick, and prices travel as
    exact decimal strings, never JSON floats."""
    raw, expected = case
    ticks, errors = _parse(loads(dumps(raw)))
    assert errors == []
    assert ticks == [expected]
    wire = loads(dumps(ticks[0].to_wire()))
    for name in ("ltp", *PRICE_FIELDS):
        if name in wire:
            assert isinstance(wire[name], str)
            assert Decimal(wire[name]) == getattr(expected, name)
    again, errors = _parse(wire)
    assert errors == []
    assert again == ticks


def test_to_wire_leaves_out_absent_fields_and_writes_prices_as_strings() -> None:
    """A tick's wire form has only its present fields; encoded, prices are decimal strings."""
    tick = Tick("NIFTY", Decimal("101.05"), NOW, bid=Decimal("101"), volume=10)
    assert tick.to_wire() == {
        "symbol": "NIFTY",
        "ltp": Decimal("101.05"),
        "ts": NOW,
        "bid": Decimal("101"),
        "volume": 10,
    }
    assert loads(dumps(tick.to_wire())) == {
        "symbol": "NIFTY",
        "ltp": "101.05",
        "ts": NOW,
        "bid": "101",
        "volume": 10,
    }


def test_ticks_to_wire_is_the_inverse_of_parse_ticks() -> None:
    """ticks_to_wire gives one wire object per tick, in order, that parse_ticks reads back."""
    ticks, _ = _parse(_tick(symbol="AAA"), _tick(symbol="BBB", bid="101", oi="5"))
    wire = ticks_to_wire(ticks)
    assert wire == [t.to_wire() for t in ticks]
    assert _parse(*loads(dumps(wire))) == (ticks, [])


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
_KEYS = st.sampled_from(["symbol", "ltp", "ts", "bid", "ask", "bid_qty", "ask_qty", "volume", "oi"])
_FUZZ_ITEMS = st.one_of(_JSON, st.dictionaries(_KEYS, _JSON, max_size=9))


@given(st.lists(_FUZZ_ITEMS, max_size=6))
def test_any_json_batch_gives_one_outcome_per_item_and_never_crashes(items: list[object]) -> None:
    """Whatever JSON the items are, each gives either a tick or an error, in index order."""
    ticks, errors = _parse(*items)
    assert len(ticks) + len(errors) == len(items)
    indices = [e.index for e in errors]
    assert indices == sorted(set(indices))
    assert all(isinstance(e.reason, str) and e.reason for e in errors)
