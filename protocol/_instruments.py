"""Instruments of the master (index, equity, future, option), validated at the boundary."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal

from ._decimal import DecimalFormatError, parse_count, parse_decimal
from ._ticks import parse_symbol

Kind = Literal["index", "equity", "future", "option"]
OptionType = Literal["call", "put"]
KINDS: Final = ("index", "equity", "future", "option")
OPTION_TYPES: Final = ("call", "put")
INSTRUMENT_FIELDS: Final = frozenset(
    {"symbol", "kind", "underlying", "expiry", "strike", "option_type", "lot_size", "tick_size"}
)
MAX_INSTRUMENTS: Final = 50_000  # per request or frame
MAX_LOT_SIZE: Final = 1_000_000
_DATE_RE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


@dataclass(frozen=True, slots=True)
class Instrument:
    """One tradable (or index) instrument of the master."""

    symbol: str
    kind: Kind
    underlying: str | None
    expiry: dt.date | None
    strike: Decimal | None
    option_type: OptionType | None
    lot_size: int
    tick_size: Decimal

    def to_wire(self) -> dict[str, object]:
        """Return the instrument as a wire object."""
        return {
            "symbol": self.symbol,
            "kind": self.kind,
            "underlying": self.underlying,
            "expiry": self.expiry.isoformat() if self.expiry else None,
            "strike": self.strike,
            "option_type": self.option_type,
            "lot_size": self.lot_size,
            "tick_size": self.tick_size,
        }


class InstrumentError(ValueError):
    """Why an instrument was refused: ``field`` and a stable ``reason``."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def _opt_decimal(raw: dict[str, object], name: str) -> Decimal | None:
    value = raw.get(name)
    if value is None:
        return None
    try:
        d = parse_decimal(value)
    except DecimalFormatError as exc:
        raise InstrumentError(name, exc.reason) from None
    if d <= 0:
        raise InstrumentError(name, "not_positive")
    return d


def parse_instrument(raw: object) -> Instrument:
    """Validate one wire instrument.

    Raises:
        InstrumentError: naming the field and the reason.
    """
    if not isinstance(raw, dict):
        raise InstrumentError("", "not_object")
    unknown = raw.keys() - INSTRUMENT_FIELDS
    if unknown:
        raise InstrumentError(sorted(unknown)[0], "unknown_field")
    for required in ("symbol", "kind", "lot_size"):
        if raw.get(required) is None:
            raise InstrumentError(required, "missing")
    try:
        symbol = parse_symbol(raw.get("symbol"))
    except ValueError:
        raise InstrumentError("symbol", "bad_symbol") from None
    kind = raw.get("kind")
    if kind not in KINDS:
        raise InstrumentError("kind", "bad_kind")
    underlying = raw.get("underlying")
    if underlying is not None:
        try:
            underlying = parse_symbol(underlying)
        except ValueError:
            raise InstrumentError("underlying", "bad_symbol") from None
    expiry: dt.date | None = None
    if raw.get("expiry") is not None:
        text = raw["expiry"]
        if not isinstance(text, str) or not _DATE_RE.fullmatch(text):
            raise InstrumentError("expiry", "bad_date")
        try:
            expiry = dt.date.fromisoformat(text)
        except ValueError:
            raise InstrumentError("expiry", "bad_date") from None
    strike = _opt_decimal(raw, "strike")
    option_type = raw.get("option_type")
    if option_type is not None and option_type not in OPTION_TYPES:
        raise InstrumentError("option_type", "bad_option_type")
    try:
        lot_size = parse_count(raw.get("lot_size"))
    except DecimalFormatError as exc:
        reason = "not_integer" if exc.reason == "not_integer" else "out_of_range"
        raise InstrumentError("lot_size", reason) from None
    if not 0 < lot_size <= MAX_LOT_SIZE:
        raise InstrumentError("lot_size", "out_of_range")
    tick_size = _opt_decimal(raw, "tick_size")
    if tick_size is None:
        raise InstrumentError("tick_size", "missing")
    if kind == "option" and (strike is None or option_type is None):
        raise InstrumentError("strike" if strike is None else "option_type", "missing")
    if kind != "option" and (strike is not None or option_type is not None):
        raise InstrumentError("strike" if strike is not None else "option_type", "not_allowed")
    if kind in ("future", "option"):
        if expiry is None:
            raise InstrumentError("expiry", "missing")
        if underlying is None:
            raise InstrumentError("underlying", "missing")
    return Instrument(
        symbol,
        kind,
        underlying,
        expiry,
        strike,
        option_type,
        lot_size,
        tick_size,
    )
