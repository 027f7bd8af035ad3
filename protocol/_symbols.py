"""NSE trading symbols of index futures and options: build them and take them apart.

Formats (YY = two-digit year):

* monthly future: ``NIFTY26JANFUT`` — underlying, YY, three-letter month, ``FUT``.
* monthly option: ``NIFTY26JAN24000CE`` — underlying, YY, month, strike, ``CE``/``PE``.
* weekly option: ``NIFTY2611324000CE`` — underlying, YY, one-character month code
  (``1``-``9``, ``O``, ``N``, ``D``), two-digit day, strike, ``CE``/``PE``.

A weekly contract that expires on the monthly expiry date is listed in the monthly
format; the caller, who knows the calendar, says which format to use. A monthly symbol
carries no day, so parsing it gives the year and month only (the day comes from the
calendar). Strikes are written in plain notation without trailing zeros (``2450.5``).

Parsing is unambiguous because the strike is digits only and anchored to the right:
a monthly symbol's three month letters sit directly before it. In a weekly symbol the
date digits run into the strike, so a weekly underlying must contain no digits (true
of the weekly contracts that exist, NIFTY and SENSEX): its first digit starts the date.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal

from ._instruments import OptionType
from ._ticks import SYMBOL_RE

__all__ = [
    "ParsedSymbol",
    "SymbolKind",
    "format_strike",
    "future_symbol",
    "option_symbol",
    "parse_symbol_name",
]

SymbolKind = Literal["future", "option"]

MONTHS: Final = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
WEEKLY_MONTH_CODES: Final = "123456789OND"  # index = month - 1
MIN_YEAR: Final = 2000  # two-digit years cover 2000..2099
MAX_YEAR: Final = 2099

_UNDERLYING_RE: Final = re.compile(r"^[A-Z0-9][A-Z0-9&_-]*$")
_WEEKLY_UNDERLYING_RE: Final = re.compile(r"^[A-Z][A-Z&_-]*$")
# Canonical strike: no leading zeros, no trailing fraction zeros, no exponent.
_STRIKE: Final = r"(?P<strike>(?:0|[1-9][0-9]*)(?:\.[0-9]*[1-9])?)"
_MONTH: Final = "(?P<mon>" + "|".join(MONTHS) + ")"
_FUTURE_RE: Final = re.compile(rf"^(?P<u>.+)(?P<yy>[0-9]{{2}}){_MONTH}FUT$")
_MONTHLY_RE: Final = re.compile(rf"^(?P<u>.+)(?P<yy>[0-9]{{2}}){_MONTH}{_STRIKE}(?P<t>CE|PE)$")
_WEEKLY_RE: Final = re.compile(
    rf"^(?P<u>[A-Z][A-Z&_-]*)(?P<yy>[0-9]{{2}})(?P<m>[1-9OND])(?P<dd>[0-9]{{2}}){_STRIKE}(?P<t>CE|PE)$"
)
_SUFFIX: Final[dict[str, str]] = {"call": "CE", "put": "PE"}
_OPTION_TYPE: Final[dict[str, OptionType]] = {"CE": "call", "PE": "put"}


@dataclass(frozen=True, slots=True)
class ParsedSymbol:
    """The parts of a future or option trading symbol.

    Attributes:
        underlying: the underlying's symbol (``NIFTY``).
        kind: ``future`` or ``option``.
        year: expiry year (2000-2099).
        month: expiry month, 1-12.
        day: expiry day for a weekly option; None for monthly contracts, whose
            symbol does not carry it.
        strike: the strike (options), as written; None for futures.
        option_type: ``call`` or ``put`` (options); None for futures.
    """

    underlying: str
    kind: SymbolKind
    year: int
    month: int
    day: int | None = None
    strike: Decimal | None = None
    option_type: OptionType | None = None

    @property
    def monthly(self) -> bool:
        """Whether the symbol is in the monthly format (no day)."""
        return self.day is None

    def matches_expiry(self, expiry: dt.date) -> bool:
        """Return whether ``expiry`` is a date this symbol can denote.

        A monthly symbol matches any date of its month; a weekly one only its own day.
        """
        if (expiry.year, expiry.month) != (self.year, self.month):
            return False
        return self.day is None or self.day == expiry.day


def _check_year(expiry: dt.date) -> str:
    if not MIN_YEAR <= expiry.year <= MAX_YEAR:
        raise ValueError(f"expiry year must be {MIN_YEAR}..{MAX_YEAR}, not {expiry.year}")
    return f"{expiry.year % 100:02d}"


def _check_underlying(underlying: str, *, weekly: bool) -> str:
    if not _UNDERLYING_RE.match(underlying):
        raise ValueError(f"bad underlying {underlying!r}")
    if weekly and not _WEEKLY_UNDERLYING_RE.match(underlying):
        # The date digits of a weekly symbol would run into a digit of the underlying.
        raise ValueError(f"a weekly underlying must not contain digits: {underlying!r}")
    return underlying


def format_strike(strike: Decimal) -> str:
    """Return ``strike`` as written in a symbol: plain notation, no trailing zeros.

    Raises:
        ValueError: the strike is not a finite positive number.
    """
    if not strike.is_finite() or strike <= 0:
        raise ValueError(f"strike must be a finite positive number, not {strike}")
    return format(strike.normalize(), "f")


def _checked(symbol: str) -> str:
    if not SYMBOL_RE.match(symbol):
        raise ValueError(f"symbol {symbol!r} is not a valid wire symbol (too long?)")
    return symbol


def future_symbol(underlying: str, expiry: dt.date) -> str:
    """Return the trading symbol of a future, always in the monthly format.

    Args:
        underlying: upper-case underlying symbol (``NIFTY``).
        expiry: the contract's expiry date; only its year and month appear.

    Returns:
        e.g. ``NIFTY26JANFUT``.

    Raises:
        ValueError: bad underlying, a year outside 2000-2099, or a symbol longer
            than the wire allows.
    """
    yy = _check_year(expiry)
    return _checked(
        f"{_check_underlying(underlying, weekly=False)}{yy}{MONTHS[expiry.month - 1]}FUT"
    )


def option_symbol(
    underlying: str,
    expiry: dt.date,
    strike: Decimal,
    option_type: OptionType,
    *,
    monthly: bool,
) -> str:
    """Return the trading symbol of an option.

    Args:
        underlying: upper-case underlying symbol (``NIFTY``).
        expiry: the contract's expiry date.
        strike: the strike; fractional strikes are written without trailing zeros.
        option_type: ``call`` (``CE``) or ``put`` (``PE``).
        monthly: use the monthly format (``NIFTY26JAN24000CE``) — for the monthly
            expiry — else the weekly one (``NIFTY2611324000CE``).

    Returns:
        The symbol.

    Raises:
        ValueError: bad underlying (or one with digits for a weekly), strike or
            option type, a year outside 2000-2099, or a symbol that is too long.
    """
    if option_type not in _SUFFIX:
        raise ValueError(f"option_type must be call or put, not {option_type!r}")
    yy = _check_year(expiry)
    base = _check_underlying(underlying, weekly=not monthly)
    if monthly:
        date_part = f"{yy}{MONTHS[expiry.month - 1]}"
    else:
        date_part = f"{yy}{WEEKLY_MONTH_CODES[expiry.month - 1]}{expiry.day:02d}"
    return _checked(f"{base}{date_part}{format_strike(strike)}{_SUFFIX[option_type]}")


def parse_symbol_name(symbol: str) -> ParsedSymbol | None:
    """Take a future or option trading symbol apart; the inverse of the builders above.

    Args:
        symbol: a trading symbol such as ``NIFTY26JAN24000CE``.

    Returns:
        The parts, or None when ``symbol`` is not a future or option symbol in one
        of the formats above (an index or equity symbol, a bad date, a non-canonical
        strike such as ``24000.0`` or ``024000``).
    """
    if not isinstance(symbol, str) or not SYMBOL_RE.match(symbol):
        return None
    if (m := _FUTURE_RE.match(symbol)) is not None:
        if not _UNDERLYING_RE.match(m["u"]):
            return None
        return ParsedSymbol(m["u"], "future", MIN_YEAR + int(m["yy"]), MONTHS.index(m["mon"]) + 1)
    day: int | None = None
    if (m := _MONTHLY_RE.match(symbol)) is not None:
        month = MONTHS.index(m["mon"]) + 1
    elif (m := _WEEKLY_RE.match(symbol)) is not None:
        month = WEEKLY_MONTH_CODES.index(m["m"]) + 1
        day = int(m["dd"])
    else:
        return None
    year = MIN_YEAR + int(m["yy"])
    strike = Decimal(m["strike"])
    if not _UNDERLYING_RE.match(m["u"]) or strike <= 0:
        return None
    if day is not None:
        try:
            dt.date(year, month, day)
        except ValueError:
            return None
    return ParsedSymbol(m["u"], "option", year, month, day, strike, _OPTION_TYPE[m["t"]])
