"""Strategies, pure: validation of bodies and payoff ranges, live M2M, Greeks, payoff.

No I/O and no clock: prices come in through a ``price_of(symbol)`` callable and the
valuation instant as epoch milliseconds, so every rule here is tested without an actor.

Money is exact: M2M and payoff values are computed in a 60-digit decimal context that
traps ``Inexact`` (a result that would need rounding raises instead of drifting), and
are returned normalised (``"78.75"``, ``"300"``, never ``"-0"``). Greeks are floats
(FINANCE.md §2 units).
"""

from __future__ import annotations

import decimal
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from engine.analytics import greeks, implied_volatility, time_to_expiry
from protocol import DecimalFormatError, Instrument, RequestError, parse_decimal, parse_symbol

RATE: Final = 0.065  # r for the strategy Greeks, annual, continuously compounded
MAX_NAME_CHARS: Final = 100
MAX_LEGS: Final = 50
MAX_QUANTITY: Final = 10**12 - 1  # units per leg, either sign
MAX_PAYOFF_POINTS: Final = 10_001
EXACT_DIGITS: Final = 60  # enough for 14+8-digit prices times 12-digit quantities, summed
STRATEGY_FIELDS: Final = frozenset({"name", "legs"})
LEG_FIELDS: Final = frozenset({"symbol", "quantity", "entry_price"})
_QUANTITY_RE: Final = re.compile(r"-?(?:0|[1-9][0-9]{0,12})")
_ECHO_CHARS: Final = 64  # of an offending key echoed back in a 422

PriceOf = Callable[[str], Decimal | None]


def exact_context() -> decimal.Context:
    """Return a fresh decimal context in which any rounding raises ``decimal.Inexact``."""
    return decimal.Context(
        prec=EXACT_DIGITS,
        rounding=decimal.ROUND_HALF_EVEN,
        traps=[decimal.Inexact, decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
    )


def canonical(value: Decimal) -> Decimal:
    """Return ``value`` without trailing zeros and with zero unsigned (``-0`` → ``0``)."""
    if value.is_zero():
        return Decimal(0)
    return value.normalize(exact_context())


# ------------------------------------------------------------------ records


@dataclass(frozen=True, slots=True)
class Leg:
    """One leg: ``quantity`` units (signed: negative is short) entered at ``entry_price``."""

    symbol: str
    quantity: int
    entry_price: Decimal

    def to_wire(self) -> dict[str, object]:
        """Return the leg as PROTOCOL.md writes it (decimal strings)."""
        return {
            "symbol": self.symbol,
            "quantity": str(self.quantity),
            "entry_price": canonical(self.entry_price),
        }


@dataclass(frozen=True, slots=True)
class StrategyGreeks:
    """Greeks of a position (or of one unit of an instrument); None where undefined."""

    delta: float | None
    gamma: float | None
    theta: float | None
    vega: float | None

    def to_wire(self) -> dict[str, float | None]:
        """Return the ``greeks`` object of a strategy."""
        return {"delta": self.delta, "gamma": self.gamma, "theta": self.theta, "vega": self.vega}


UNDEFINED_GREEKS: Final = StrategyGreeks(None, None, None, None)
LINEAR_GREEKS: Final = StrategyGreeks(1.0, 0.0, 0.0, 0.0)  # a future, equity or index unit


@dataclass(frozen=True, slots=True)
class Strategy:
    """A named group of legs of one account, as persisted."""

    id: str
    account: str
    name: str
    legs: tuple[Leg, ...]
    created_ts: int
    updated_ts: int

    def to_wire(self, m2m: Decimal | None, strategy_greeks: StrategyGreeks) -> dict[str, object]:
        """Return the strategy object of PROTOCOL.md with its live valuation."""
        return {
            "id": self.id,
            "account": self.account,
            "name": self.name,
            "legs": [leg.to_wire() for leg in self.legs],
            "m2m": m2m,
            "greeks": strategy_greeks.to_wire(),
            "created_ts": self.created_ts,
            "updated_ts": self.updated_ts,
        }


@dataclass(frozen=True, slots=True)
class StrategyChanges:
    """A validated create or patch body; a field left out of a patch is None."""

    name: str | None
    legs: tuple[Leg, ...] | None


@dataclass(frozen=True, slots=True)
class PayoffGrid:
    """Underlying prices ``start, start + step, …`` up to ``stop`` (``count`` points)."""

    start: Decimal
    step: Decimal
    count: int

    def points(self) -> list[Decimal]:
        """Return the grid's prices, ascending, exactly."""
        with decimal.localcontext(exact_context()):
            return [self.start + self.step * i for i in range(self.count)]


# ------------------------------------------------------------------ validation


def parse_strategy(
    raw: object, instrument_of: Callable[[str], Instrument | None], *, partial: bool
) -> StrategyChanges:
    """Validate a create body (``partial=False``: both fields) or a patch body.

    Raises:
        RequestError: the first problem, with a dotted field path (``legs.2.quantity``).
    """
    if not isinstance(raw, dict):
        raise RequestError("", "not_object")
    unknown = sorted(raw.keys() - STRATEGY_FIELDS)
    if unknown:
        raise RequestError(unknown[0][:_ECHO_CHARS], "unknown_field")
    if not partial:
        for key in ("name", "legs"):
            if key not in raw:
                raise RequestError(key, "missing")
    elif not raw:
        raise RequestError("", "empty_patch")
    name = parse_name(raw["name"]) if "name" in raw else None
    legs = parse_legs(raw["legs"], instrument_of) if "legs" in raw else None
    return StrategyChanges(name, legs)


def parse_name(value: object) -> str:
    """Validate a strategy name: 1..100 characters, not blank, no control characters.

    Any other text is a valid name and is stored verbatim (through bound parameters).

    Raises:
        RequestError: ``name`` with ``not_string``, ``bad_length``, ``blank`` or
            ``control_character``.
    """
    if not isinstance(value, str):
        raise RequestError("name", "not_string")
    if not 1 <= len(value) <= MAX_NAME_CHARS:
        raise RequestError("name", "bad_length")
    if value.isspace():
        raise RequestError("name", "blank")
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in value):
        raise RequestError("name", "control_character")
    return value


def parse_legs(value: object, instrument_of: Callable[[str], Instrument | None]) -> tuple[Leg, ...]:
    """Validate 1..50 legs; every symbol must be a known instrument.

    Raises:
        RequestError: the first bad leg field, e.g. ``legs.0.symbol`` ``unknown_symbol``.
    """
    if not isinstance(value, list):
        raise RequestError("legs", "not_list")
    if not 1 <= len(value) <= MAX_LEGS:
        raise RequestError("legs", "bad_length")
    return tuple(_leg(i, raw, instrument_of) for i, raw in enumerate(value))


def _leg(i: int, raw: object, instrument_of: Callable[[str], Instrument | None]) -> Leg:
    where = f"legs.{i}"
    if not isinstance(raw, dict):
        raise RequestError(where, "not_object")
    unknown = sorted(raw.keys() - LEG_FIELDS)
    if unknown:
        raise RequestError(f"{where}.{unknown[0][:_ECHO_CHARS]}", "unknown_field")
    for name in ("symbol", "quantity", "entry_price"):
        if name not in raw:
            raise RequestError(f"{where}.{name}", "missing")
    try:
        symbol = parse_symbol(raw["symbol"])
    except ValueError:
        raise RequestError(f"{where}.symbol", "bad_symbol") from None
    if instrument_of(symbol) is None:
        raise RequestError(f"{where}.symbol", "unknown_symbol")
    quantity = _quantity(raw["quantity"], f"{where}.quantity")
    try:
        price = parse_decimal(raw["entry_price"])
    except DecimalFormatError as exc:
        raise RequestError(f"{where}.entry_price", exc.reason) from None
    if price <= 0:
        raise RequestError(f"{where}.entry_price", "not_positive")
    return Leg(symbol, quantity, canonical(price))


def _quantity(value: object, where: str) -> int:
    # A signed whole number of units: a JSON integer or an integer string, never 0.
    if isinstance(value, bool):
        raise RequestError(where, "not_integer")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str) and _QUANTITY_RE.fullmatch(value):
        n = int(value)
    else:
        raise RequestError(where, "not_integer")
    if n == 0:
        raise RequestError(where, "zero")
    if abs(n) > MAX_QUANTITY:
        raise RequestError(where, "too_large")
    return n


def payoff_grid(start: Decimal, stop: Decimal, step: Decimal) -> PayoffGrid:
    """Validate a payoff range: ``from`` >= 0, ``to`` > ``from``, ``step`` > 0, <= 10,001 points.

    The grid is ``from, from + step, …`` while <= ``to`` (``to`` itself when the step
    divides the range).

    Raises:
        RequestError: naming the query parameter (``from``, ``to`` or ``step``).
    """
    if start < 0:
        raise RequestError("from", "negative")
    if stop <= start:
        raise RequestError("to", "not_after_from")
    if step <= 0:
        raise RequestError("step", "not_positive")
    with decimal.localcontext(exact_context()):
        count = int((stop - start) // step) + 1
    if count > MAX_PAYOFF_POINTS:
        raise RequestError("step", "too_many_points")
    return PayoffGrid(start, step, count)


# ------------------------------------------------------------------ valuation


def m2m(legs: Sequence[Leg], price_of: PriceOf) -> Decimal | None:
    """Return Σ (ltp − entry_price) × quantity, exactly; None if any leg has no quote."""
    total = Decimal(0)
    with decimal.localcontext(exact_context()):
        for leg in legs:
            ltp = price_of(leg.symbol)
            if ltp is None:
                return None
            total += (ltp - leg.entry_price) * leg.quantity
    return canonical(total)


def unit_greeks(
    inst: Instrument, price_of: PriceOf, now_ms: int, rate: float = RATE
) -> StrategyGreeks:
    """Return the Greeks of one unit of ``inst`` at ``now_ms``.

    An option is valued with bsm (q = 0) on its underlying's spot quote, at the IV implied
    by its own ltp, with T per FINANCE.md §1; anything missing or undefined (no quote, IV
    out of bounds, expired) gives all None. A future, equity or index unit has delta 1.
    """
    if inst.kind != "option":
        return LINEAR_GREEKS
    if inst.underlying is None or inst.expiry is None or inst.strike is None:
        return UNDEFINED_GREEKS
    if inst.option_type is None:
        return UNDEFINED_GREEKS
    ltp, spot = price_of(inst.symbol), price_of(inst.underlying)
    if ltp is None or spot is None:
        return UNDEFINED_GREEKS
    t = time_to_expiry(inst.expiry, now_ms)
    s, k = float(spot), float(inst.strike)
    iv = implied_volatility(
        "bsm",
        inst.option_type,
        price=float(ltp),
        underlying=s,
        strike=k,
        time_to_expiry=t,
        rate=rate,
    )
    if iv is None:
        return UNDEFINED_GREEKS
    g = greeks(
        "bsm", inst.option_type, underlying=s, strike=k, time_to_expiry=t, volatility=iv, rate=rate
    )
    return StrategyGreeks(g.delta, g.gamma, g.theta, g.vega)


def aggregate_greeks(
    legs: Sequence[Leg], unit_of: Callable[[str], StrategyGreeks]
) -> StrategyGreeks:
    """Return Σ quantity × per-unit Greeks over the legs, in leg order.

    Each Greek is None when it is undefined for any leg.
    """
    totals: list[float | None] = [0.0, 0.0, 0.0, 0.0]
    for leg in legs:
        unit = unit_of(leg.symbol)
        q = float(leg.quantity)
        for i, value in enumerate((unit.delta, unit.gamma, unit.theta, unit.vega)):
            total = totals[i]
            totals[i] = None if total is None or value is None else total + q * value
    return StrategyGreeks(*totals)


# ------------------------------------------------------------------ payoff at expiry


def underlying_of(inst: Instrument) -> str:
    """Return the symbol whose price drives ``inst`` at expiry (itself for equity/index)."""
    if inst.kind in ("option", "future") and inst.underlying is not None:
        return inst.underlying
    return inst.symbol


def value_at_expiry(inst: Instrument, spot: Decimal) -> Decimal:
    """Return one unit's value at expiry: intrinsic for an option, the spot otherwise."""
    if inst.kind != "option" or inst.strike is None:
        return spot
    if inst.option_type == "call":
        return max(Decimal(0), spot - inst.strike)
    return max(Decimal(0), inst.strike - spot)


def payoff_at(legs: Sequence[Leg], instruments: Mapping[str, Instrument], spot: Decimal) -> Decimal:
    """Return Σ (value at expiry − entry_price) × quantity at one underlying price."""
    with decimal.localcontext(exact_context()):
        total = sum(
            (
                (value_at_expiry(instruments[leg.symbol], spot) - leg.entry_price) * leg.quantity
                for leg in legs
            ),
            Decimal(0),
        )
        return canonical(total)


def payoff(
    legs: Sequence[Leg], instruments: Mapping[str, Instrument], grid: PayoffGrid
) -> list[tuple[Decimal, Decimal]]:
    """Return ``(underlying, value)`` over the grid, each value equal to :func:`payoff_at`.

    The payoff is piecewise linear with kinks at the strikes, so one ascending sweep keeps
    running sums of the in-the-money options: O(points + legs), not O(points × legs).
    """
    calls: list[tuple[Decimal, int]] = []
    puts: list[tuple[Decimal, int]] = []
    out: list[tuple[Decimal, Decimal]] = []
    with decimal.localcontext(exact_context()):
        constant, linear = Decimal(0), 0
        for leg in legs:
            inst = instruments[leg.symbol]
            constant -= leg.entry_price * leg.quantity
            if inst.kind != "option" or inst.strike is None:
                linear += leg.quantity
            elif inst.option_type == "call":
                calls.append((inst.strike, leg.quantity))
            else:
                puts.append((inst.strike, leg.quantity))
        calls.sort()
        puts.sort()
        # In the money at S: calls with K < S pay Σq(S−K) = S·qc − kqc; puts with K > S
        # pay Σq(K−S) = (kp_all − kp_low) − S·(qp_all − qp_low), "low" being K <= S.
        qc, kqc, ci = 0, Decimal(0), 0
        qp_all, kp_all = sum(q for _, q in puts), sum((k * q for k, q in puts), Decimal(0))
        qp_low, kp_low, pi = 0, Decimal(0), 0
        for s in grid.points():
            while ci < len(calls) and calls[ci][0] < s:
                qc, kqc, ci = qc + calls[ci][1], kqc + calls[ci][0] * calls[ci][1], ci + 1
            while pi < len(puts) and puts[pi][0] <= s:
                qp_low, kp_low, pi = (
                    qp_low + puts[pi][1],
                    kp_low + puts[pi][0] * puts[pi][1],
                    pi + 1,
                )
            value = constant - kqc + (kp_all - kp_low) + s * (linear + qc - (qp_all - qp_low))
            out.append((canonical(s), canonical(value)))
    return out
