"""JSON encoding of the wire (orjson), with Decimals as decimal strings."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Final

import orjson

from ._errors import ErrorCode, ProtocolError

_OPTIONS: Final = orjson.OPT_NON_STR_KEYS


def _default(value: object) -> object:
    # Money never travels as a JSON number: Decimal → its exact decimal string.
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise TypeError("non-finite Decimal cannot be encoded")
        return format(value, "f")
    if isinstance(value, frozenset | set | tuple):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def dumps(value: object) -> bytes:
    """Encode ``value`` as JSON bytes; Decimals become decimal strings.

    Raises:
        TypeError: for a value with no JSON form (including NaN Decimals).
    """
    return orjson.dumps(value, default=_default, option=_OPTIONS)


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Decode JSON text.

    Raises:
        ProtocolError: ``bad_json`` when the input is not JSON.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(
            ErrorCode.BAD_JSON, "body is not valid JSON", {"position": exc.pos}
        ) from None
