"""Indicator names, parameter specs and defaults, validation, and warm-up lengths.

Parameter names follow PROTOCOL.md. Defaults are TA-Lib's, except where FINANCE.md §6 fixes
them:

============  ===============================================  ====================
indicator     parameters (default; minimum)                    outputs
============  ===============================================  ====================
sma/ema/wma   period (30, TA-Lib's default; 1)                 one series
rsi           period (14; 2)                                   one series
atr           period (14; 1)                                   one series
adx           period (14; 2)                                   one series
macd          fast (12; 2), slow (26; 2), signal (9; 1)        macd, signal, hist
bbands        period (20; 2), nbdev_up (2.0), nbdev_dn (2.0)   upper, middle, lower
stoch         fastk_period (14, FINANCE's; TA-Lib says 5; 1),  k, d
              slowk_period (3; 1), slowd_period (3; 1)
obv, vwap     none                                             one series
============  ===============================================  ====================

Every period is at most MAX_PERIOD. As in TA-Lib, MACD swaps `fast` and `slow` when
`slow < fast`, and a period of 1 for sma/ema/wma (or a STOCH smoothing) copies its input.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from ._indicator_base import INVALID_PARAM, UNKNOWN_INDICATOR, IndicatorError

# TA-Lib accepts periods up to 100,000; we stop at 10,000 bars (26 full NSE sessions of 1m bars)
# because a live stream keeps a window of `period` floats per subscription.
MAX_PERIOD: Final = 10_000
# TA-Lib leaves band multipliers unbounded; a cap turns a malformed request into a 422.
MAX_NBDEV: Final = 1_000.0

ParamValue = int | float


@dataclass(frozen=True, slots=True)
class _Period:
    default: int
    minimum: int


@dataclass(frozen=True, slots=True)
class _Factor:
    default: float


_Spec = Mapping[str, _Period | _Factor]


def _spec(**fields: _Period | _Factor) -> _Spec:
    return MappingProxyType(fields)


_SPECS: Final[Mapping[str, _Spec]] = MappingProxyType(
    {
        "sma": _spec(period=_Period(30, 1)),
        "ema": _spec(period=_Period(30, 1)),
        "wma": _spec(period=_Period(30, 1)),
        "rsi": _spec(period=_Period(14, 2)),
        "atr": _spec(period=_Period(14, 1)),
        "adx": _spec(period=_Period(14, 2)),
        "macd": _spec(fast=_Period(12, 2), slow=_Period(26, 2), signal=_Period(9, 1)),
        "bbands": _spec(period=_Period(20, 2), nbdev_up=_Factor(2.0), nbdev_dn=_Factor(2.0)),
        "stoch": _spec(
            fastk_period=_Period(14, 1), slowk_period=_Period(3, 1), slowd_period=_Period(3, 1)
        ),
        "obv": _spec(),
        "vwap": _spec(),
    }
)

INDICATORS: Final = frozenset(_SPECS)

# Output names of the multi-output indicators, in PROTOCOL.md's order.
INDICATOR_OUTPUTS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "macd": ("macd", "signal", "hist"),
        "bbands": ("upper", "middle", "lower"),
        "stoch": ("k", "d"),
    }
)


def _period(indicator: str, name: str, value: object, spec: _Period) -> int:
    # JSON has one number type: accept 14 and 14.0, refuse 14.5, "14" and true.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise IndicatorError(
            INVALID_PARAM,
            f"{indicator}.{name} must be an integer",
            {"param": name, "expected": "integer"},
        )
    if isinstance(value, float):
        if not value.is_integer():
            raise IndicatorError(
                INVALID_PARAM,
                f"{indicator}.{name} must be an integer",
                {"param": name, "expected": "integer"},
            )
        value = int(value)
    if not spec.minimum <= value <= MAX_PERIOD:
        raise IndicatorError(
            INVALID_PARAM,
            f"{indicator}.{name} must be between {spec.minimum} and {MAX_PERIOD}",
            {"param": name, "min": spec.minimum, "max": MAX_PERIOD},
        )
    return value


def _factor(indicator: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise IndicatorError(
            INVALID_PARAM,
            f"{indicator}.{name} must be a number",
            {"param": name, "expected": "number"},
        )
    result = float(value)
    if not (math.isfinite(result) and abs(result) <= MAX_NBDEV):
        raise IndicatorError(
            INVALID_PARAM,
            f"{indicator}.{name} must be finite and within ±{MAX_NBDEV:g}",
            {"param": name, "min": -MAX_NBDEV, "max": MAX_NBDEV},
        )
    return result


def resolve_indicator_params(
    indicator: str, params: Mapping[str, object] | None = None
) -> dict[str, ParamValue]:
    """Validate `params` for `indicator` and fill in the defaults.

    Args:
        indicator: One of INDICATORS (`"sma"`, `"macd"`, ...), exactly as PROTOCOL.md spells it.
        params: The request's parameters; missing keys take their defaults. None means none.

    Returns:
        Every parameter of the indicator: periods as int, band multipliers as float.

    Raises:
        IndicatorError: `unknown_indicator` for a name not in INDICATORS; `invalid_param` for
            an unknown key, a wrong type, a non-integral period or a value out of range.
    """
    spec = _SPECS.get(indicator)
    if spec is None:
        raise IndicatorError(
            UNKNOWN_INDICATOR,
            f"unknown indicator {indicator!r}",
            {"indicator": indicator, "allowed": sorted(INDICATORS)},
        )
    given = params or {}
    for key in given:
        if key not in spec:
            raise IndicatorError(
                INVALID_PARAM,
                f"{indicator} has no parameter {key!r}",
                {"param": key, "allowed": sorted(spec)},
            )
    resolved: dict[str, ParamValue] = {}
    for name, field in spec.items():
        value = given.get(name)
        if isinstance(field, _Period):
            resolved[name] = (
                field.default if value is None else _period(indicator, name, value, field)
            )
        else:
            resolved[name] = field.default if value is None else _factor(indicator, name, value)
    return resolved


def indicator_warmup(indicator: str, params: Mapping[str, object] | None = None) -> int:
    """Return the index of the first non-null output for `indicator` with `params`.

    That is also how many closed bars a live stream must see before its first value; VWAP
    reports 0 (it is null only while the session's volume is 0).

    Raises:
        IndicatorError: As resolve_indicator_params.
    """
    p = resolve_indicator_params(indicator, params)
    match indicator:
        case "sma" | "ema" | "wma" | "bbands":
            return int(p["period"]) - 1
        case "rsi" | "atr":
            return int(p["period"])
        case "adx":
            return 2 * int(p["period"]) - 1
        case "macd":
            return max(int(p["fast"]), int(p["slow"])) + int(p["signal"]) - 2
        case "stoch":
            return int(p["fastk_period"]) + int(p["slowk_period"]) + int(p["slowd_period"]) - 3
        case _:
            return 0
