"""JSON on the wire: Decimals as exact strings, what cannot be encoded, bad input as bad_json."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import (
    HTTP_STATUS,
    DecimalFormatError,
    ErrorCode,
    ProtocolError,
    dumps,
    loads,
    parse_decimal,
)

# ---------------------------------------------------------------- dumps


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("101.05"), "101.05"),
        (Decimal("101.50"), "101.50"),  # trailing zeros are kept: the value is sent as given
        (Decimal("1E+2"), "100"),  # no exponent even when the Decimal carries one
        (Decimal("0.00001"), "0.00001"),  # str() would give "0.00001"; smaller gives "1E-7"
        (Decimal("1E-7"), "0.0000001"),
        (Decimal("1.5E+3"), "1500"),
        (Decimal("-0"), "-0"),
        (Decimal("-12.5"), "-12.5"),
        (Decimal("123456789012345678901234567890"), "123456789012345678901234567890"),
    ],
    ids=str,
)
def test_decimal_is_encoded_as_its_exact_plain_string(value: Decimal, text: str) -> None:
    """A Decimal becomes a JSON string in plain notation (format "f"): no number, no exponent."""
    assert format(value, "f") == text
    assert dumps(value) == b'"' + text.encode() + b'"'
    assert dumps({"price": value}) == b'{"price":"' + text.encode() + b'"}'


def test_decimals_nested_in_containers_are_encoded_as_strings() -> None:
    """Decimals inside lists and objects are strings too; ints and floats stay numbers."""
    body = {"items": [{"price": Decimal("1.10"), "qty": 75, "iv": 0.25}]}
    assert loads(dumps(body)) == {"items": [{"price": "1.10", "qty": 75, "iv": 0.25}]}


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_any_finite_decimal_round_trips_exactly_as_a_string(value: Decimal) -> None:
    """Every finite Decimal encodes to a string that decodes to an equal Decimal."""
    decoded = loads(dumps(value))
    assert isinstance(decoded, str)
    assert "e" not in decoded.lower()
    assert Decimal(decoded) == value


@pytest.mark.parametrize(
    "value",
    [Decimal("NaN"), Decimal("-NaN"), Decimal("sNaN"), Decimal("Infinity"), Decimal("-Infinity")],
    ids=str,
)
def test_non_finite_decimal_is_refused_with_type_error(value: Decimal) -> None:
    """NaN and infinite Decimals cannot travel: dumps raises TypeError, alone or nested."""
    with pytest.raises(TypeError):
        dumps(value)
    with pytest.raises(TypeError):
        dumps({"items": [value]})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ((1, 2, 3), [1, 2, 3]),
        ({7}, [7]),
        (frozenset({"a"}), ["a"]),
        ({"legs": (Decimal("1.5"), {2})}, {"legs": ["1.5", [2]]}),
        ((), []),
        (set(), []),
    ],
    ids=["tuple", "set", "frozenset", "nested", "empty-tuple", "empty-set"],
)
def test_sets_and_tuples_are_encoded_as_lists(value: object, expected: object) -> None:
    """Tuples, sets and frozensets become JSON arrays."""
    assert loads(dumps(value)) == expected


def test_set_is_encoded_with_all_its_members() -> None:
    """A set of several members becomes an array holding each member once."""
    assert sorted(loads(dumps({"s": {3, 1, 2}}))["s"]) == [1, 2, 3]


def test_non_string_keys_are_encoded_as_strings() -> None:
    """Integer keys are written as JSON object keys (strings)."""
    assert dumps({1: "a"}) == b'{"1":"a"}'


@pytest.mark.parametrize("value", [object(), b"bytes", complex(1, 2)], ids=repr)
def test_value_without_a_json_form_is_refused_with_type_error(value: object) -> None:
    """Objects with no JSON form raise TypeError rather than being stringified."""
    with pytest.raises(TypeError):
        dumps({"x": value})


def test_dumps_returns_bytes() -> None:
    """dumps gives the bytes to put on the wire."""
    assert dumps({"op": "pong", "id": 3}) == b'{"op":"pong","id":3}'


# ---------------------------------------------------------------- loads


@pytest.mark.parametrize(
    "data",
    [
        b'{"a":[1,"2",null,true]}',
        '{"a":[1,"2",null,true]}',
        bytearray(b'{"a":[1,"2",null,true]}'),
        memoryview(b'{"a":[1,"2",null,true]}'),
    ],
    ids=["bytes", "str", "bytearray", "memoryview"],
)
def test_loads_accepts_bytes_and_text(data: bytes | bytearray | memoryview | str) -> None:
    """loads decodes bytes, bytearray, memoryview and str alike."""
    assert loads(data) == {"a": [1, "2", None, True]}


def test_loads_keeps_integers_as_ints_and_decimal_strings_exact() -> None:
    """JSON integers decode to int and decimal strings to str: parse_decimal sees them exactly."""
    body = loads(b'{"ltp": "101.05", "qty": 75}')
    assert type(body["qty"]) is int
    assert parse_decimal(body["ltp"]) == Decimal("101.05")
    assert parse_decimal(body["qty"]) == Decimal("75")


@pytest.mark.parametrize("data", [b'{"ltp": 101.5}', b'{"ltp": 101.0}', b'{"ltp": 1e2}'])
def test_json_float_prices_decode_to_floats_that_parse_decimal_refuses(data: bytes) -> None:
    """Money never travels as a float: a JSON fraction or exponent is refused downstream."""
    body = loads(data)
    assert isinstance(body["ltp"], float)
    with pytest.raises(DecimalFormatError, match="not_decimal"):
        parse_decimal(body["ltp"])


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b" ",
        b"{",
        b"[1,]",
        b"{'a': 1}",
        b'{"a" 1}',
        b"tru",
        b"\xff",
        b'"\xed\xa0\x80"',  # a UTF-16 surrogate encoded in UTF-8
        b"01",
        b"NaN",
        b"nan",
        b"Infinity",
        b"-Infinity",
        b"[NaN]",
        b'{"ltp": NaN}',
        b'{"ltp": Infinity}',
        b'{"a": 1} trailing',
        "{",
    ],
    ids=repr,
)
def test_invalid_json_raises_bad_json_with_status_400(data: bytes | str) -> None:
    """Input that is not JSON — including the NaN/Infinity literals — raises ProtocolError
    ``bad_json``, carried as HTTP 400, with the error position."""
    with pytest.raises(ProtocolError) as info:
        loads(data)
    error = info.value
    assert error.code is ErrorCode.BAD_JSON
    assert error.http_status == 400
    assert isinstance(error.details["position"], int)
    assert error.__cause__ is None and error.__suppress_context__


def test_bad_json_error_body_has_the_protocol_envelope_and_echoes_no_input() -> None:
    """The bad_json body is {"error": {code, message, details}} and does not repeat the input."""
    with pytest.raises(ProtocolError) as info:
        loads(b'{"api_key": "sk-very-secret", ')
    body = info.value.to_body()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}  # type: ignore[arg-type]
    assert body["error"]["code"] == "bad_json"  # type: ignore[index]
    assert "sk-very-secret" not in dumps(body).decode()
    assert "sk-very-secret" not in repr(info.value)


# ---------------------------------------------------------------- error codes


def test_every_error_code_is_snake_case_and_has_an_http_status() -> None:
    """Each ErrorCode is a snake_case string with the HTTP status PROTOCOL.md gives it."""
    assert set(HTTP_STATUS) == set(ErrorCode)
    for code in ErrorCode:
        assert code.value == code.value.lower() and " " not in code.value
    expected = {
        "bad_json": 400,
        "unauthenticated": 401,
        "forbidden": 403,
        "not_found": 404,
        "idempotency_conflict": 409,
        "no_market_data": 409,
        "account_halted": 409,
        "duplicate": 409,
        "body_too_large": 413,
        "validation_failed": 422,
        "rate_limited": 429,
        "database_unavailable": 503,
        "busy": 503,
    }
    assert {c.value: HTTP_STATUS[c] for c in ErrorCode if c.value in expected} == expected


def test_protocol_error_carries_code_details_and_retry_after() -> None:
    """A ProtocolError keeps its code, message, a copy of its details and retry_after."""
    details = {"limit": 10}
    error = ProtocolError(ErrorCode.RATE_LIMITED, "slow down", details, retry_after=2.5)
    details["limit"] = 99
    assert (error.code, error.message, error.retry_after) == (
        ErrorCode.RATE_LIMITED,
        "slow down",
        2.5,
    )
    assert error.http_status == 429
    assert error.to_body() == {
        "error": {"code": "rate_limited", "message": "slow down", "details": {"limit": 10}}
    }
    assert repr(error) == "ProtocolError(rate_limited, 'slow down')"
    assert ProtocolError(ErrorCode.BUSY, "x").to_body()["error"] == {
        "code": "busy",
        "message": "x",
        "details": {},
    }
