"""Decimal inputs of the wire: decimal strings, or JSON numbers that are integers."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Final

# Plain decimal notation only: no exponent, no sign other than a leading minus,
# no NaN/Infinity, no whitespace, bounded digits.
_DECIMAL_RE: Final = re.compile(r"^-?(?:0|[1-9][0-9]{0,13})(?:\.[0-9]{1,8})?$")
_LOOSE_RE: Final = re.compile(r"^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?$")
MAX_INTEGER_DIGITS: Final = 14
MAX_COUNT_DIGITS: Final = 18
_COUNT_RE: Final = re.compile(r"-?[0-9]+")
MAX_FRACTION_DIGITS: Final = 8
MAX_JSON_INT: Final = 10**MAX_INTEGER_DIGITS


class DecimalFormatError(ValueError):
    """The value is not an acceptable decimal; ``reason`` is a stable snake_case word."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_decimal(value: object) -> Decimal:
    """Parse a wire decimal: a decimal string or a JSON integer.

    Floats are refused (they cannot carry money exactly), as are booleans, NaN,
    infinities, exponents and more than 14 integer or 8 fraction digits.

    Raises:
        DecimalFormatError: with ``reason`` ``not_decimal`` or ``too_many_digits``.
    """
    if isinstance(value, str):
        if not _DECIMAL_RE.fullmatch(value):
            raise DecimalFormatError(_string_reason(value))
        return Decimal(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if abs(value) >= MAX_JSON_INT:
            raise DecimalFormatError("too_many_digits")
        return Decimal(value)
    raise DecimalFormatError("not_decimal")


def _string_reason(value: str) -> str:
    if _LOOSE_RE.fullmatch(value):
        return "too_many_digits"
    return "not_decimal"


def parse_count(value: object) -> int:
    """Parse a non-negative whole count (quantity, volume, OI): int or integer string.

    Raises:
        DecimalFormatError: ``not_integer``, ``negative`` or ``too_many_digits``.
    """
    if isinstance(value, bool):
        raise DecimalFormatError("not_integer")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str) and _COUNT_RE.fullmatch(value):
        if len(value.lstrip("-")) > MAX_COUNT_DIGITS:
            raise DecimalFormatError("too_many_digits")
        n = int(value)
    else:
        raise DecimalFormatError("not_integer")
    if n < 0:
        raise DecimalFormatError("negative")
    if n >= 10**MAX_COUNT_DIGITS:
        raise DecimalFormatError("too_many_digits")
    return n
