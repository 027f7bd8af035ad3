"""Input validation of the stateless analytics calls (PROTOCOL.md, "Analytics calls").

Option items and candles are checked by hand, not by pydantic: 100,000 items must be checked
in well under a second, and a bad option item fills one error slot of its batch. The small
bodies (max pain, futures, calendar queries) are pydantic models. A failure is an
:class:`InputError` of ``{"loc", "msg", "type"}`` entries, the app's 422 envelope shape.

Numbers: float-domain inputs (options, candles) are JSON numbers or plain decimal strings
("0.2"; no exponent, NaN or Infinity). Money (strikes, spot, futures prices) goes through
``parse_decimal``, quantities (OI, volume) through ``parse_count``. ``null`` = absent.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from typing import Annotated, Final, Literal, NamedTuple, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError, WithJsonSchema
from pydantic_core import PydanticCustomError

from protocol import DecimalFormatError, ErrorCode, ProtocolError, parse_count, parse_decimal

from ..analytics import Candles, ChainRow, FutureQuote, OptionModel, OptionType, year_fraction

S = TypeVar("S", bound=str)
ErrorEntry = dict[str, object]
Errors = list[ErrorEntry]
Loc = tuple[str | int, ...]

MAX_BATCH_ITEMS: Final = 100_000
MAX_CHAIN_STRIKES: Final = 10_000
MAX_FUTURES: Final = 64
MAX_CANDLES: Final = 200_000
# Epoch-ms timestamps must fall in years 1970..9999.
MAX_TS_MS: Final = 253_402_300_799_999
# A longer decimal string is not a number anybody means.
MAX_NUMBER_CHARS: Final = 40
MAX_KEY_CHARS: Final = 64
# A 422 for a long list names the first few bad entries, not all of them.
MAX_REPORTED_ERRORS: Final = 20
MAX_EXPIRY_COUNT: Final = 1000
DEFAULT_EXPIRY_COUNT: Final = 4
# Calendar queries stay within years 1970..2999, far from date arithmetic overflow.
LAST_CALENDAR_DAY: Final = date(2999, 12, 31)
MAX_SESSION_TS: Final = 32_503_679_999_999

_DECIMAL_TEXT: Final = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")
_DATE_TEXT: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_MODELS: Final[tuple[OptionModel, ...]] = ("bsm", "black76")
_OPTION_TYPES: Final[tuple[OptionType, ...]] = ("call", "put")
_OPTION_COMMON: Final = frozenset(
    {"model", "option_type", "underlying_price", "strike", "time_to_expiry", "expiry_ts"}
    | {"valuation_ts", "rate", "dividend_yield"}
)
_CANDLE_VALUES: Final = ("open", "high", "low", "close", "volume")
# The candle event's descriptive fields are tolerated, so candles read from the API or the
# stream can be posted back as they are.
_CANDLE: Final = frozenset({"ts", *_CANDLE_VALUES, "symbol", "tf", "closed"})


class InputError(ValueError):
    """A request (or one batch item) failed validation; ``code`` names a domain rule if any."""

    def __init__(
        self, errors: Errors, code: str | None = None, extra: Mapping[str, object] | None = None
    ) -> None:
        first = errors[0] if errors else entry((), "invalid input", "value_error")
        loc = first["loc"]
        where = ".".join(map(str, loc)) + ": " if isinstance(loc, list) and loc else ""
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"{where}{first['msg']}{more}")
        self.errors = errors
        self.code = code
        self.extra = dict(extra or {})

    def details(self) -> dict[str, object]:
        """Return the ``details`` of the 422 envelope: the entries, and the rule's code."""
        code = {} if self.code is None else {"code": self.code}
        return {**self.extra, **code, "errors": self.errors}

    def to_protocol(self) -> ProtocolError:
        """Return the 422 ``validation_failed`` error of a whole request."""
        return ProtocolError(ErrorCode.VALIDATION_FAILED, str(self), self.details())

    def to_slot(self) -> dict[str, object]:
        """Return the ``{"error": {...}}`` that takes this item's place in a batch."""
        code = str(ErrorCode.VALIDATION_FAILED)
        return {"error": {"code": code, "message": str(self), "details": self.details()}}


def entry(loc: Loc, msg: str, kind: str) -> ErrorEntry:
    """Return one ``{"loc", "msg", "type"}`` error entry."""
    return {"loc": list(loc), "msg": msg, "type": kind}


def _missing(loc: Loc, errors: Errors) -> None:
    errors.append(entry(loc, "field required", "missing"))


def _float(value: object, loc: Loc, errors: Errors, *, non_negative: bool) -> float:
    # The hot path of a 100,000-item batch: exact type checks (bool is refused), no exceptions.
    if type(value) is float:
        x = value
        if not math.isfinite(x):  # orjson refuses NaN and infinities; a Python caller may not
            errors.append(entry(loc, "must be finite", "finite_number"))
            return 0.0
    elif type(value) is int or (
        type(value) is str and len(value) <= MAX_NUMBER_CHARS and _DECIMAL_TEXT.fullmatch(value)
    ):
        x = float(value)
    elif value is None:
        _missing(loc, errors)
        return 0.0
    else:
        why = "number_parsing" if isinstance(value, str) else "number_type"
        errors.append(entry(loc, "must be a finite JSON number or a decimal string", why))
        return 0.0
    if non_negative and x < 0.0:
        errors.append(entry(loc, "must not be negative", "greater_than_equal"))
    return x


def _timestamp(value: object, loc: Loc, errors: Errors) -> int:
    if type(value) is not int:
        errors.append(entry(loc, "must be an integer epoch-ms timestamp", "int_type"))
        return 0
    if not 0 <= value <= MAX_TS_MS:
        errors.append(entry(loc, f"must be between 0 and {MAX_TS_MS}", "out_of_range"))
        return 0
    return value


def _choice(raw: Mapping[str, object], key: str, allowed: tuple[S, ...], errors: Errors) -> S:
    value = raw.get(key)
    for option in allowed:
        if value == option:
            return option
    if key not in raw:
        _missing((key,), errors)
    else:
        options = " or ".join(repr(a) for a in allowed)
        errors.append(entry((key,), f"must be {options}", "literal_error"))
    return allowed[0]


def _unknown(raw: Mapping[str, object], allowed: frozenset[str], loc: Loc, errors: Errors) -> None:
    if not raw.keys() <= allowed:
        # Keys are echoed back in the 422, so an absurdly long one is cut.
        extra = (k[:MAX_KEY_CHARS] for k in raw if k not in allowed)
        errors.extend(entry((*loc, k), "unknown field", "extra_forbidden") for k in extra)


def _row(
    raw: object, allowed: frozenset[str], errors: Errors, loc: Loc
) -> dict[str, object] | None:
    if type(raw) is not dict:
        errors.append(entry(loc, "must be an object", "dict_type"))
        return None
    _unknown(raw, allowed, loc, errors)
    return raw


def _list(value: object, key: str, limit: int) -> list[object]:
    if type(value) is not list:
        kind = "missing" if value is None else "list_type"
        raise InputError([entry((key,), "must be a list", kind)])
    if len(value) > limit:
        raise InputError([entry((key,), f"at most {limit} entries", "too_long")])
    return value


def _check(errors: Errors) -> None:
    if errors:
        raise InputError(errors[:MAX_REPORTED_ERRORS])


class OptionInput(NamedTuple):
    """One validated option item; ``value`` is the volatility (greeks) or the price (IV)."""

    model: OptionModel
    option_type: OptionType
    underlying: float
    strike: float
    time_to_expiry: float
    value: float
    rate: float
    dividend_yield: float


class OptionFields(NamedTuple):
    """The field set of an option call: ``value`` is ``volatility`` or ``price``."""

    value: str
    allowed: frozenset[str]


GREEKS_FIELDS: Final = OptionFields("volatility", _OPTION_COMMON | {"volatility"})
IV_FIELDS: Final = OptionFields("price", _OPTION_COMMON | {"price"})


def _expiry_time(raw: Mapping[str, object], now_ms: int, errors: Errors) -> float:
    # T in years: given, or from expiry_ts and valuation_ts (default now) per FINANCE.md §1.
    t = raw.get("time_to_expiry")
    expiry = raw.get("expiry_ts")
    valuation = raw.get("valuation_ts")
    if t is not None and expiry is not None:
        errors.append(entry(("expiry_ts",), "time_to_expiry or expiry_ts, not both", "value_error"))
    elif t is not None:
        if valuation is not None:
            errors.append(entry(("valuation_ts",), "only with expiry_ts", "value_error"))
        return _float(t, ("time_to_expiry",), errors, non_negative=False)
    elif expiry is None:
        _missing(("time_to_expiry",), errors)
    else:
        end = _timestamp(expiry, ("expiry_ts",), errors)
        start = now_ms if valuation is None else _timestamp(valuation, ("valuation_ts",), errors)
        return year_fraction(start, end)
    return 0.0


def parse_option(raw: object, fields: OptionFields, now_ms: int) -> OptionInput:
    """Validate one greeks or IV item.

    Args:
        raw: the decoded JSON item.
        fields: ``GREEKS_FIELDS`` or ``IV_FIELDS``.
        now_ms: the valuation instant when the item gives ``expiry_ts`` without ``valuation_ts``.

    Raises:
        InputError: listing every problem of the item.
    """
    errors: Errors = []
    item = _row(raw, fields.allowed, errors, ())
    if item is None:
        raise InputError(errors)
    get = item.get
    model = _choice(item, "model", _MODELS, errors)
    option_type = _choice(item, "option_type", _OPTION_TYPES, errors)
    u = _float(get("underlying_price"), ("underlying_price",), errors, non_negative=True)
    k = _float(get("strike"), ("strike",), errors, non_negative=True)
    t = _expiry_time(item, now_ms, errors)
    value = _float(get(fields.value), (fields.value,), errors, non_negative=True)
    r = _float(get("rate"), ("rate",), errors, non_negative=False)
    q = get("dividend_yield")
    q_value = 0.0 if q is None else _float(q, ("dividend_yield",), errors, non_negative=False)
    if errors:
        raise InputError(errors)
    return OptionInput(model, option_type, u, k, t, value, r, q_value)


def batch_items(body: object, limit: int = MAX_BATCH_ITEMS) -> list[object] | None:
    """Return the items of a ``{"items": [...]}`` batch body, or None for a single item.

    Raises:
        InputError: the body is not an object, or a batch body is malformed or too long.
    """
    if type(body) is not dict or "items" not in body:
        return None
    errors: Errors = []
    _unknown(body, frozenset({"items"}), (), errors)
    _check(errors)
    return _list(body["items"], "items", limit)


def _money(value: object) -> Decimal:
    try:
        number = parse_decimal(value)
    except DecimalFormatError as exc:
        raise PydanticCustomError(exc.reason, "must be a decimal string or an integer") from None
    if number < 0:
        raise PydanticCustomError("greater_than_equal", "must not be negative")
    return number


def _count(value: object) -> int:
    try:
        return parse_count(value)
    except DecimalFormatError as exc:
        raise PydanticCustomError(exc.reason, "must be a non-negative whole number") from None


def _iso_date(value: object) -> date:
    # Only YYYY-MM-DD: pydantic's lax date would also take epoch seconds and datetimes.
    day = None
    if isinstance(value, str) and _DATE_TEXT.fullmatch(value):
        with contextlib.suppress(ValueError):
            day = date.fromisoformat(value)
    if day is None or day > LAST_CALENDAR_DAY:
        raise PydanticCustomError("date_parsing", "must be a date YYYY-MM-DD before 3000")
    return day


_MONEY_SCHEMA: Final = {
    "anyOf": [{"type": "string", "examples": ["22000.50"]}, {"type": "integer"}]
}
_COUNT_SCHEMA: Final = {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string"}]}
Money = Annotated[Decimal, PlainValidator(_money), WithJsonSchema(_MONEY_SCHEMA)]
Count = Annotated[int, PlainValidator(_count), WithJsonSchema(_COUNT_SCHEMA)]
IsoDate = Annotated[
    date, PlainValidator(_iso_date), WithJsonSchema({"type": "string", "format": "date"})
]


def pydantic_input_error(exc: ValidationError) -> InputError:
    """Return the :class:`InputError` of a pydantic failure (same entry shape)."""
    found = exc.errors(include_url=False, include_input=False, include_context=False)
    errors = [entry(tuple(e["loc"]), e["msg"], e["type"]) for e in found]
    return InputError(errors[:MAX_REPORTED_ERRORS])


class ChainRowIn(BaseModel):
    """One strike: money is a decimal string, OI and volume are whole numbers."""

    model_config = ConfigDict(extra="forbid")
    strike: Money
    call_oi: Count
    put_oi: Count
    call_volume: Count | None = None
    put_volume: Count | None = None


class ChainIn(BaseModel):
    """The strikes of one expiry, in any order, unique."""

    model_config = ConfigDict(extra="forbid")
    strikes: list[ChainRowIn] = Field(max_length=MAX_CHAIN_STRIKES)


class FutureIn(BaseModel):
    """One futures contract now, with its previous observation for the build-up."""

    model_config = ConfigDict(extra="forbid")
    expiry: IsoDate
    price: Money
    oi: Count | None = None
    prev_price: Money | None = None
    prev_oi: Count | None = None


class FuturesIn(BaseModel):
    """A futures strip (any order) against spot; ``as_of`` defaults to today (IST)."""

    model_config = ConfigDict(extra="forbid")
    spot: Money
    as_of: IsoDate | None = None
    futures: list[FutureIn] = Field(max_length=MAX_FUTURES)


class HolidaysQuery(BaseModel):
    """The year whose trading holidays to list."""

    model_config = ConfigDict(extra="forbid")
    year: int = Field(ge=1970, le=LAST_CALENDAR_DAY.year)


class ExpiriesQuery(BaseModel):
    """Expiries of an underlying on or after ``from`` (default today, IST)."""

    model_config = ConfigDict(extra="forbid")
    underlying: str = Field(pattern=r"^[A-Za-z0-9&_-]{1,32}$")
    from_: IsoDate | None = Field(None, alias="from")
    count: int = Field(DEFAULT_EXPIRY_COUNT, ge=1, le=MAX_EXPIRY_COUNT)
    kind: Literal["weekly", "monthly"] = "monthly"


class SessionQuery(BaseModel):
    """The instant (epoch ms, default now) and segment (options have no pre-open)."""

    model_config = ConfigDict(extra="forbid")
    at: int | None = Field(None, ge=0, le=MAX_SESSION_TS)
    segment: Literal["futures", "options"] = "futures"


def parse_chain(raw: object) -> list[ChainRow]:
    """Validate a max-pain request ``{"strikes": [...]}`` (duplicates are the caller's check).

    Raises:
        InputError: listing the problems found.
    """
    try:
        chain = ChainIn.model_validate(raw)
    except ValidationError as exc:
        raise pydantic_input_error(exc) from None
    return [
        ChainRow(r.strike, r.call_oi, r.put_oi, r.call_volume or 0, r.put_volume or 0)
        for r in chain.strikes
    ]


def parse_futures(raw: object, today: date) -> tuple[Decimal, date, list[FutureQuote]]:
    """Validate a futures-analyze request; ``as_of`` defaults to ``today``.

    Returns:
        ``(spot, as_of, quotes)``.

    Raises:
        InputError: listing the problems found.
    """
    try:
        body = FuturesIn.model_validate(raw)
    except ValidationError as exc:
        raise pydantic_input_error(exc) from None
    quotes = [FutureQuote(f.expiry, f.price, f.oi, f.prev_price, f.prev_oi) for f in body.futures]
    return body.spot, today if body.as_of is None else body.as_of, quotes


def parse_indicator(raw: object) -> tuple[str, dict[str, object] | None, Candles]:
    """Validate an indicator request; the name and params are checked by ``compute_indicator``.

    Candle prices and volumes are JSON numbers or decimal strings (>= 0); ``ts`` are strictly
    ascending epoch ms.

    Returns:
        ``(indicator, params, candles)``.

    Raises:
        InputError: listing the first problems found.
    """
    errors: Errors = []
    body = _row(raw, frozenset({"indicator", "params", "candles"}), errors, ()) or {}
    name = body.get("indicator")
    if type(name) is not str:
        kind = "missing" if name is None else "string_type"
        errors.append(entry(("indicator",), "must be an indicator name", kind))
    given = body.get("params")
    params = given if type(given) is dict else None
    if given is not None and params is None:
        errors.append(entry(("params",), "must be an object", "dict_type"))
    _check(errors)
    ts_column: list[float] = []
    columns: tuple[list[float], ...] = ([], [], [], [], [])
    last_ts = -1
    for i, value in enumerate(_list(body.get("candles"), "candles", MAX_CANDLES)):
        candle = _row(value, _CANDLE, errors, ("candles", i))
        if candle is None:
            continue
        ts = _timestamp(candle.get("ts"), ("candles", i, "ts"), errors)
        if ts <= last_ts:
            errors.append(entry(("candles", i, "ts"), "must follow the previous ts", "value_error"))
        last_ts = ts
        ts_column.append(ts)
        for key, column in zip(_CANDLE_VALUES, columns, strict=True):
            loc = ("candles", i, key)
            column.append(_float(candle.get(key), loc, errors, non_negative=True))
        if len(errors) >= MAX_REPORTED_ERRORS:
            break
    _check(errors)
    return str(name), params, Candles(ts_column, *columns)
