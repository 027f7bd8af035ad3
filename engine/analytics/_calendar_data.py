"""Validation of the calendar data files (config/calendar/nse.toml and lots.toml).

Takes the mappings `tomllib` produced and returns typed, checked records. Every error
names the offending key as a path (`holidays[3].date`, `lots.NIFTY[0].size`) so a bad
edit to the data files is found at load, not at the first query that touches it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Final, Literal

__all__ = [
    "CalendarDataError",
    "CalendarError",
    "LotSize",
    "ParsedCalendar",
    "SessionKind",
    "SpecialSession",
    "parse_calendar",
]

SessionKind = Literal["full", "muhurat"]

_TOP_KEYS: Final = frozenset({"holidays", "special_sessions", "lots"})
_HOLIDAY_KEYS: Final = frozenset({"date", "name"})
_SESSION_KEYS: Final = frozenset({"date", "name", "kind", "open", "close", "pre_open"})
_SESSION_OPTIONAL: Final = frozenset({"pre_open"})
_LOT_KEYS: Final = frozenset({"expiring_from", "size"})


class CalendarError(ValueError):
    """Base class of calendar errors; `code` is stable."""

    code: str = "calendar_error"


class CalendarDataError(CalendarError):
    """The calendar data is malformed; `key` names the offending entry."""

    code = "invalid_calendar_data"

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key


@dataclass(frozen=True, slots=True)
class SpecialSession:
    """A session outside the weekday schedule (Budget Sunday, Muhurat trading).

    `kind` is `full` for a normal trading day held on an unusual date, `muhurat` for the
    token Diwali session (a holiday for the expiry rule). `pre_open` is the futures
    pre-open start, None when there is none.
    """

    date: date
    name: str
    kind: SessionKind
    open: time
    close: time
    pre_open: time | None


@dataclass(frozen=True, slots=True)
class LotSize:
    """Lot size for contracts expiring on or after `expiring_from` (until the next entry)."""

    expiring_from: date
    size: int


@dataclass(frozen=True, slots=True)
class ParsedCalendar:
    """Checked calendar data, ready for `MarketCalendar`."""

    holidays: Mapping[date, str]
    special_sessions: Mapping[date, SpecialSession]
    lots: Mapping[str, tuple[LotSize, ...]]


def _table(value: object, key: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise CalendarDataError(key, "expected a table")
    return value


def _array(value: object, key: str) -> Sequence[object]:
    if not isinstance(value, list | tuple):
        raise CalendarDataError(key, "expected an array")
    return value


def _check_keys(
    table: Mapping[str, object],
    allowed: frozenset[str],
    key: str,
    optional: frozenset[str] = frozenset(),
) -> None:
    for name in table:
        if name not in allowed:
            raise CalendarDataError(f"{key}.{name}" if key else name, "unknown key")
    missing = sorted(allowed - optional - table.keys())
    if missing:
        raise CalendarDataError(f"{key}.{missing[0]}" if key else missing[0], "missing key")


def _date(value: object, key: str) -> date:
    # TOML local dates arrive as `date`; ISO strings are accepted for JSON-sourced data.
    # A `datetime` is a `date` subclass but carries a time: reject it.
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise CalendarDataError(key, f"expected a date (YYYY-MM-DD), got {value!r}")


def _time(value: object, key: str) -> time:
    if isinstance(value, time) and value.tzinfo is None:
        return value
    if isinstance(value, str):
        try:
            parsed = time.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is None:
                return parsed
    raise CalendarDataError(key, f"expected a local time (HH:MM:SS), got {value!r}")


def _name(value: object, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise CalendarDataError(key, "expected a non-empty string")
    return value.strip()


def _holidays(value: object) -> dict[date, str]:
    holidays: dict[date, str] = {}
    for i, item in enumerate(_array(value, "holidays")):
        key = f"holidays[{i}]"
        entry = _table(item, key)
        _check_keys(entry, _HOLIDAY_KEYS, key)
        day = _date(entry["date"], f"{key}.date")
        if day in holidays:
            raise CalendarDataError(f"{key}.date", f"{day.isoformat()} listed twice")
        holidays[day] = _name(entry["name"], f"{key}.name")
    return holidays


def _special_session(entry: Mapping[str, object], key: str) -> SpecialSession:
    kind: SessionKind
    if entry["kind"] == "full":
        kind = "full"
    elif entry["kind"] == "muhurat":
        kind = "muhurat"
    else:
        raise CalendarDataError(
            f"{key}.kind", f"expected 'full' or 'muhurat', got {entry['kind']!r}"
        )
    open_at = _time(entry["open"], f"{key}.open")
    close_at = _time(entry["close"], f"{key}.close")
    if close_at <= open_at:
        raise CalendarDataError(f"{key}.close", "must be after open")
    pre_open: time | None = None
    if "pre_open" in entry:
        pre_open = _time(entry["pre_open"], f"{key}.pre_open")
        if pre_open >= open_at:
            raise CalendarDataError(f"{key}.pre_open", "must be before open")
    return SpecialSession(
        date=_date(entry["date"], f"{key}.date"),
        name=_name(entry["name"], f"{key}.name"),
        kind=kind,
        open=open_at,
        close=close_at,
        pre_open=pre_open,
    )


def _special_sessions(value: object) -> dict[date, SpecialSession]:
    sessions: dict[date, SpecialSession] = {}
    for i, item in enumerate(_array(value, "special_sessions")):
        key = f"special_sessions[{i}]"
        entry = _table(item, key)
        _check_keys(entry, _SESSION_KEYS, key, _SESSION_OPTIONAL)
        session = _special_session(entry, key)
        if session.date in sessions:
            raise CalendarDataError(f"{key}.date", f"{session.date.isoformat()} listed twice")
        sessions[session.date] = session
    return sessions


def _lot_entries(value: object, key: str) -> tuple[LotSize, ...]:
    entries: list[LotSize] = []
    for i, item in enumerate(_array(value, key)):
        entry_key = f"{key}[{i}]"
        entry = _table(item, entry_key)
        _check_keys(entry, _LOT_KEYS, entry_key)
        size = entry["size"]
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise CalendarDataError(
                f"{entry_key}.size", f"expected a positive integer, got {size!r}"
            )
        start = _date(entry["expiring_from"], f"{entry_key}.expiring_from")
        if entries and start <= entries[-1].expiring_from:
            raise CalendarDataError(f"{entry_key}.expiring_from", "entries must be ascending")
        entries.append(LotSize(expiring_from=start, size=size))
    return tuple(entries)


def _lots(value: object) -> dict[str, tuple[LotSize, ...]]:
    lots: dict[str, tuple[LotSize, ...]] = {}
    for underlying, entries in _table(value, "lots").items():
        symbol = underlying.strip().upper()
        key = f"lots.{underlying}"
        if not symbol or symbol in lots:
            raise CalendarDataError(key, "empty or repeated underlying")
        lots[symbol] = _lot_entries(entries, key)
    return lots


def parse_calendar(
    data: Mapping[str, object], lots: Mapping[str, object] | None = None
) -> ParsedCalendar:
    """Validate parsed calendar TOML and return typed records.

    Args:
        data: parsed nse.toml: optional `holidays` and `special_sessions` arrays of
            tables, and optionally the `lots` table.
        lots: parsed lots.toml (a single `lots` table), when loaded separately.

    Raises:
        CalendarDataError: naming the first offending key.
    """
    top = _table(data, "<calendar>")
    _check_keys(top, _TOP_KEYS, "", _TOP_KEYS)
    lots_value = top.get("lots")
    if lots is not None:
        lots_top = _table(lots, "<lots>")
        _check_keys(lots_top, frozenset({"lots"}), "")
        if lots_value is not None:
            raise CalendarDataError("lots", "given both in the calendar data and separately")
        lots_value = lots_top["lots"]
    return ParsedCalendar(
        holidays=_holidays(top.get("holidays", [])),
        special_sessions=_special_sessions(top.get("special_sessions", [])),
        lots={} if lots_value is None else _lots(lots_value),
    )
