"""NSE/BSE equity-derivatives calendar: holidays, sessions, expiries, lot sizes (FINANCE.md §8).

Holidays, special sessions and lot sizes are data (config/calendar/*.toml) because the
exchanges change them by circular; the structural rules (hours, expiry weekdays) are
constants here. All times are IST, a fixed UTC+05:30 (India has no DST).

Days and sessions:
* A *trading day* is a date with any session: a weekday that is not a holiday, or a
  date with a special session (the Budget Sunday, Muhurat trading). A Muhurat day such
  as 21 Oct 2025 therefore is a trading day for `session()` and `is_trading_day()` while
  `holidays()` still lists it, as the exchange does.
* For the expiry rule a Muhurat day counts as a holiday; a full special session (the
  Budget Sunday) counts as a trading day.

Expiries before 1 Sep 2025 followed other weekday rules (NIFTY on Thursdays, SENSEX on
Tuesdays, changing over 2024-25). Rather than guess at those, `expiries()` refuses a
`from_date` before `EXPIRY_RULES_SINCE` with `ExpiryRulesUnavailableError`.
"""

from __future__ import annotations

from calendar import monthrange
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from types import MappingProxyType
from typing import Final, Literal, NamedTuple

from ._calendar_data import (
    CalendarDataError,
    CalendarError,
    LotSize,
    SpecialSession,
    parse_calendar,
)

__all__ = [
    "EXPIRY_RULES_SINCE",
    "FUTURES_PRE_OPEN_SINCE",
    "IST",
    "CalendarError",
    "CalendarDataError",
    "CalendarQueryError",
    "ExpiryKind",
    "ExpiryRulesUnavailableError",
    "Holiday",
    "LotSize",
    "MarketCalendar",
    "NoWeeklyExpiryError",
    "Phase",
    "Segment",
    "Session",
    "SpecialSession",
]

IST: Final = timezone(timedelta(hours=5, minutes=30), "IST")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_DAY: Final = timedelta(days=1)
_ONE_MS: Final = timedelta(milliseconds=1)

REGULAR_OPEN: Final = time(9, 15)
REGULAR_CLOSE: Final = time(15, 30)
FUTURES_PRE_OPEN: Final = time(9, 0)
# The pre-open call auction for index and stock futures (never options) started here.
FUTURES_PRE_OPEN_SINCE: Final = date(2025, 12, 8)
# SEBI circular of 26 May 2025: the Tuesday/Thursday rules apply from this expiry on.
EXPIRY_RULES_SINCE: Final = date(2025, 9, 1)

MAX_EXPIRY_COUNT: Final = 1000
# A holiday run longer than this before an expiry day means broken data, not a calendar.
MAX_EXPIRY_SHIFT_DAYS: Final = 31
# Weekdays are trading days unless listed, so a next open is always within days.
MAX_NEXT_OPEN_SEARCH_DAYS: Final = 400

_TUESDAY: Final = 1
_THURSDAY: Final = 3
# NIFTY is NSE's only weekly contract since Nov 2024; SENSEX is BSE's.
_WEEKLY_WEEKDAY: Final[Mapping[str, int]] = MappingProxyType(
    {"NIFTY": _TUESDAY, "SENSEX": _THURSDAY}
)
# BSE's monthlies expire on the last Thursday. BANKEX and SENSEX50 are not named in
# FINANCE.md but are BSE contracts under the same circular; everything else (NSE
# indices and stock F&O) expires on the last Tuesday.
_BSE_MONTHLY: Final = frozenset({"SENSEX", "BANKEX", "SENSEX50"})

Segment = Literal["futures", "options"]
Phase = Literal["pre_open", "regular", "closed"]
ExpiryKind = Literal["weekly", "monthly"]
_SEGMENTS: Final = frozenset({"futures", "options"})


class CalendarQueryError(CalendarError):
    """A query argument is out of range (kind, segment, count, underlying)."""

    code = "invalid_calendar_query"


class NoWeeklyExpiryError(CalendarError):
    """Weekly expiries were asked for an underlying that has no weekly contracts."""

    code = "no_weekly_expiry"

    def __init__(self, underlying: str) -> None:
        super().__init__(f"{underlying} has no weekly contracts")
        self.underlying = underlying


class ExpiryRulesUnavailableError(CalendarError):
    """Expiries were asked from a date before the rules this calendar implements."""

    code = "expiry_rules_unavailable"

    def __init__(self, from_date: date) -> None:
        super().__init__(
            f"expiry rules are known from {EXPIRY_RULES_SINCE.isoformat()}, "
            f"not from {from_date.isoformat()}"
        )
        self.from_date = from_date


class Holiday(NamedTuple):
    """A trading holiday: unpacks as `(date, name)`."""

    date: date
    name: str


@dataclass(frozen=True, slots=True)
class Session:
    """Market state at an instant, the `GET /v1/calendar/session` result."""

    trading_day: bool
    open: bool
    phase: Phase
    next_open_ts: int


@dataclass(frozen=True, slots=True)
class _Window:
    # One day's session as instants; `start` is when the market first accepts orders
    # (pre-open if the segment has one that day, else the regular open).
    start: datetime
    open: datetime
    close: datetime


def _from_ms(ts_ms: int) -> datetime:
    # timedelta arithmetic keeps milliseconds exact, unlike fromtimestamp(ts / 1000).
    return (_EPOCH + timedelta(milliseconds=ts_ms)).astimezone(IST)


def _to_ms(instant: datetime) -> int:
    return (instant - _EPOCH) // _ONE_MS


def _at(day: date, clock: time) -> datetime:
    return datetime.combine(day, clock, tzinfo=IST)


def _last_weekday(year: int, month: int, weekday: int) -> date:
    last = date(year, month, monthrange(year, month)[1])
    return last - timedelta(days=(last.weekday() - weekday) % 7)


def _weekly_candidates(start: date, weekday: int) -> Iterator[date]:
    day = start + timedelta(days=(weekday - start.weekday()) % 7)
    while True:
        yield day
        day += timedelta(days=7)


def _monthly_candidates(start: date, weekday: int) -> Iterator[date]:
    year, month = start.year, start.month
    while True:
        yield _last_weekday(year, month, weekday)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)


@dataclass(frozen=True, slots=True)
class MarketCalendar:
    """The NSE/BSE derivatives calendar built from loaded data; immutable."""

    holiday_names: Mapping[date, str]
    special_sessions: Mapping[date, SpecialSession]
    lot_sizes: Mapping[str, tuple[LotSize, ...]]

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, object], lots: Mapping[str, object] | None = None
    ) -> MarketCalendar:
        """Build a calendar from parsed TOML (`tomllib.loads` of config/calendar/*.toml).

        Args:
            data: the parsed nse.toml (`holidays`, `special_sessions`; may also carry
                the `lots` table when both files were merged into one mapping).
            lots: the parsed lots.toml, if kept separate.

        Raises:
            CalendarDataError: a key is unknown or missing, a date or time is invalid,
                a date is listed twice, or lot sizes are not ascending; the error's
                `key` names the offending entry (e.g. `holidays[3].date`).
        """
        parsed = parse_calendar(data, lots)
        return cls(
            holiday_names=MappingProxyType(dict(parsed.holidays)),
            special_sessions=MappingProxyType(dict(parsed.special_sessions)),
            lot_sizes=MappingProxyType(dict(parsed.lots)),
        )

    def holidays(self, year: int) -> list[Holiday]:
        """Return the trading holidays of `year` as `(date, name)`, ascending."""
        return sorted(Holiday(d, n) for d, n in self.holiday_names.items() if d.year == year)

    def is_trading_day(self, day: date) -> bool:
        """Return whether the exchange holds any session on `day` (IST date).

        A weekday that is not a holiday is one; so is any date with a special session,
        including a Muhurat session on a holiday or a Sunday.
        """
        return self._window(day, "options") is not None

    def session(self, at_ts_ms: int, segment: Segment = "futures") -> Session:
        """Return the market state at `at_ts_ms` (epoch milliseconds, UTC).

        Args:
            at_ts_ms: the instant to look at.
            segment: `futures` has a 09:00-09:15 pre-open since 8 Dec 2025; `options`
                never has one.

        Returns:
            `Session`: `open` is true in the pre-open and regular phases (the phase
            interval includes its start and excludes its end); `next_open_ts` is the
            first session start (pre-open start where the segment has one) strictly
            after `at_ts_ms`.

        Raises:
            CalendarQueryError: `segment` is not `futures` or `options`.
        """
        if segment not in _SEGMENTS:
            raise CalendarQueryError(f"unknown segment {segment!r}")
        now = _from_ms(at_ts_ms)
        window = self._window(now.date(), segment)
        phase: Phase = "closed"
        if window is not None:
            if window.open <= now < window.close:
                phase = "regular"
            elif window.start <= now < window.open:
                phase = "pre_open"
        return Session(
            trading_day=window is not None,
            open=phase != "closed",
            phase=phase,
            next_open_ts=_to_ms(self._next_start(now, segment)),
        )

    def expiries(
        self, underlying: str, from_date: date, count: int, kind: ExpiryKind = "weekly"
    ) -> list[date]:
        """Return the first `count` expiry dates on or after `from_date`, ascending.

        NIFTY weeklies expire every Tuesday and SENSEX weeklies every Thursday; monthlies
        on the last Tuesday (NSE indices and stocks) or last Thursday (BSE indices). An
        expiry day that is a holiday or a Muhurat day moves to the previous trading day,
        repeatedly; the moved date is the one compared with `from_date`.

        Args:
            underlying: contract symbol, case-insensitive; unknown symbols are treated as
                NSE stocks (monthly only).
            from_date: first admissible expiry date (IST).
            count: how many expiries, 0 to `MAX_EXPIRY_COUNT`.
            kind: `weekly` or `monthly`.

        Raises:
            NoWeeklyExpiryError: `kind` is weekly and the underlying has no weeklies.
            ExpiryRulesUnavailableError: `from_date` is before 1 Sep 2025.
            CalendarQueryError: `kind`, `count` or `underlying` is invalid.
        """
        symbol = underlying.strip().upper()
        if not symbol:
            raise CalendarQueryError("underlying must not be empty")
        if isinstance(count, bool) or not 0 <= count <= MAX_EXPIRY_COUNT:
            raise CalendarQueryError(f"count must be 0..{MAX_EXPIRY_COUNT}, not {count!r}")
        if from_date < EXPIRY_RULES_SINCE:
            raise ExpiryRulesUnavailableError(from_date)
        candidates: Iterator[date]
        if kind == "weekly":
            weekday = _WEEKLY_WEEKDAY.get(symbol)
            if weekday is None:
                raise NoWeeklyExpiryError(symbol)
            candidates = _weekly_candidates(from_date, weekday)
        elif kind == "monthly":
            weekday = _THURSDAY if symbol in _BSE_MONTHLY else _TUESDAY
            candidates = _monthly_candidates(from_date, weekday)
        else:
            raise CalendarQueryError(f"unknown expiry kind {kind!r}")
        result: list[date] = []
        # A moved expiry is never later than its rule date, so every expiry on or after
        # from_date comes from a rule date on or after it: the candidates cover them all.
        for rule_day in candidates:
            if len(result) >= count:
                break
            expiry = self._previous_expiry_day(rule_day)
            if expiry >= from_date and (not result or expiry > result[-1]):
                result.append(expiry)
        return result

    def lot_size(self, underlying: str, expiry: date) -> int | None:
        """Return the lot size of `underlying` contracts expiring on `expiry`.

        The entry with the latest `expiring_from` on or before `expiry` applies; None
        when the underlying is not in the data or `expiry` precedes its first entry.
        """
        size: int | None = None
        for entry in self.lot_sizes.get(underlying.strip().upper(), ()):
            if entry.expiring_from > expiry:
                break
            size = entry.size
        return size

    def _window(self, day: date, segment: str) -> _Window | None:
        special = self.special_sessions.get(day)
        pre_open: time | None
        if special is not None:
            open_at, close_at, pre_open = special.open, special.close, special.pre_open
        elif day.weekday() < 5 and day not in self.holiday_names:
            open_at, close_at = REGULAR_OPEN, REGULAR_CLOSE
            pre_open = FUTURES_PRE_OPEN if day >= FUTURES_PRE_OPEN_SINCE else None
        else:
            return None
        if segment != "futures" or pre_open is None:
            pre_open = open_at
        return _Window(start=_at(day, pre_open), open=_at(day, open_at), close=_at(day, close_at))

    def _next_start(self, now: datetime, segment: str) -> datetime:
        day = now.date()
        for _ in range(MAX_NEXT_OPEN_SEARCH_DAYS):
            window = self._window(day, segment)
            if window is not None and window.start > now:
                return window.start
            day += _ONE_DAY
        raise CalendarError(f"no session within {MAX_NEXT_OPEN_SEARCH_DAYS} days of {now}")

    def _is_expiry_day(self, day: date) -> bool:
        special = self.special_sessions.get(day)
        if special is not None:
            return special.kind == "full"
        return day.weekday() < 5 and day not in self.holiday_names

    def _previous_expiry_day(self, day: date) -> date:
        for _ in range(MAX_EXPIRY_SHIFT_DAYS):
            if self._is_expiry_day(day):
                return day
            day -= _ONE_DAY
        raise CalendarError(f"no trading day within {MAX_EXPIRY_SHIFT_DAYS} days before {day}")
