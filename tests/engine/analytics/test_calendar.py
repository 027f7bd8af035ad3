"""Market calendar: holidays, sessions, expiries and lot sizes (FINANCE.md §8)."""

from __future__ import annotations

import tomllib
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest

import engine.analytics as analytics
from engine.analytics import (
    CalendarDataError,
    CalendarQueryError,
    ExpiryRulesUnavailableError,
    MarketCalendar,
    NoWeeklyExpiryError,
)

DATA = Path(__file__).resolve().parents[3] / "config" / "calendar"
IST = timezone(timedelta(hours=5, minutes=30))
NSE_INDICES = ["NIFTY", "BANKNIFTY", "FINNIFTY", "MIDCPNIFTY", "NIFTYNXT50"]

HOLIDAYS_2025 = [
    date(2025, m, d)
    for m, d in [
        (2, 26), (3, 14), (3, 31), (4, 10), (4, 14), (4, 18), (5, 1),
        (8, 15), (8, 27), (10, 2), (10, 21), (10, 22), (11, 5), (12, 25),
    ]
]  # fmt: skip
HOLIDAYS_2026 = [
    date(2026, m, d)
    for m, d in [
        (1, 15), (1, 26), (3, 3), (3, 26), (3, 31), (4, 3), (4, 14), (5, 1),
        (5, 28), (6, 26), (9, 14), (10, 2), (10, 20), (11, 10), (11, 24), (12, 25),
    ]
]  # fmt: skip


def load(name: str) -> dict[str, object]:
    return tomllib.loads((DATA / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def cal() -> MarketCalendar:
    return MarketCalendar.from_mapping(load("nse.toml"), lots=load("lots.toml"))


def ist_ms(y: int, mo: int, d: int, h: int, mi: int, s: int = 0, ms: int = 0) -> int:
    instant = datetime(y, mo, d, h, mi, s, ms * 1000, tzinfo=IST)
    return (instant - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


# ----------------------------------------------------------------------------- holidays


@pytest.mark.parametrize(("year", "expected"), [(2025, HOLIDAYS_2025), (2026, HOLIDAYS_2026)])
def test_holidays_are_exactly_finance_lists(
    cal: MarketCalendar, year: int, expected: list[date]
) -> None:
    """holidays(year) lists FINANCE.md's dates, ascending, each with a name."""
    holidays = cal.holidays(year)

    assert [day for day, _ in holidays] == expected
    assert all(name.strip() for _, name in holidays)


def test_holidays_of_a_year_without_data_are_empty(cal: MarketCalendar) -> None:
    """A year the data does not cover has no listed holidays."""
    assert cal.holidays(2024) == []


# ----------------------------------------------------------------------------- expiries


def test_nifty_weeklies_expire_every_tuesday(cal: MarketCalendar) -> None:
    """NIFTY weekly expiries are consecutive Tuesdays when none is a holiday."""
    expiries = cal.expiries("NIFTY", date(2026, 1, 1), 8, "weekly")

    assert expiries[0] == date(2026, 1, 6)
    assert all(d.weekday() == 1 for d in expiries)
    assert all(b - a == timedelta(days=7) for a, b in zip(expiries, expiries[1:], strict=False))


def test_first_weekly_expiry_under_the_new_rules(cal: MarketCalendar) -> None:
    """From 1 Sep 2025 the first NIFTY weekly is Tuesday 2 Sep 2025."""
    assert cal.expiries("nifty", date(2025, 9, 1), 1) == [date(2025, 9, 2)]


@pytest.mark.parametrize(
    ("holiday", "moved_to"),
    [
        (date(2025, 10, 21), date(2025, 10, 20)),  # Laxmi Pujan, Muhurat day
        (date(2026, 3, 3), date(2026, 3, 2)),
        (date(2026, 3, 31), date(2026, 3, 30)),
        (date(2026, 4, 14), date(2026, 4, 13)),
        (date(2026, 10, 20), date(2026, 10, 19)),
        (date(2026, 11, 10), date(2026, 11, 9)),
        (date(2026, 11, 24), date(2026, 11, 23)),
    ],
)
def test_weekly_expiry_on_a_tuesday_holiday_moves_to_previous_trading_day(
    cal: MarketCalendar, holiday: date, moved_to: date
) -> None:
    """Every Tuesday holiday of the data moves that week's NIFTY expiry to Monday."""
    week = cal.expiries("NIFTY", holiday - timedelta(days=6), 2)

    assert week == [moved_to, holiday + timedelta(days=7)]


def test_moved_expiry_before_from_date_is_not_returned(cal: MarketCalendar) -> None:
    """The moved date is compared with from_date: from the holiday itself, skip that week."""
    assert cal.expiries("NIFTY", date(2026, 3, 31), 1) == [date(2026, 4, 7)]
    assert cal.expiries("NIFTY", date(2026, 3, 30), 1) == [date(2026, 3, 30)]
    assert cal.expiries("BANKNIFTY", date(2026, 3, 31), 1, "monthly") == [date(2026, 4, 28)]


MONTHLY_TUESDAYS = [
    date(2025, 9, 30), date(2025, 10, 28), date(2025, 11, 25), date(2025, 12, 30),
    date(2026, 1, 27), date(2026, 2, 24), date(2026, 3, 30), date(2026, 4, 28),
    date(2026, 5, 26), date(2026, 6, 30), date(2026, 7, 28), date(2026, 8, 25),
    date(2026, 9, 29), date(2026, 10, 27), date(2026, 11, 23), date(2026, 12, 29),
]  # fmt: skip


@pytest.mark.parametrize("underlying", [*NSE_INDICES, "RELIANCE"])
def test_nse_monthlies_expire_on_the_last_tuesday(cal: MarketCalendar, underlying: str) -> None:
    """NSE index and stock monthlies: last Tuesday, Mar and Nov 2026 moved off holidays."""
    assert cal.expiries(underlying, date(2025, 9, 1), 16, "monthly") == MONTHLY_TUESDAYS


def test_sensex_weeklies_expire_on_thursdays_moved_off_holidays(cal: MarketCalendar) -> None:
    """SENSEX weeklies are Thursdays; Christmas and 15 Jan 2026 move to Wednesday."""
    assert cal.expiries("SENSEX", date(2025, 12, 15), 6) == [
        date(2025, 12, 18),
        date(2025, 12, 24),
        date(2026, 1, 1),
        date(2026, 1, 8),
        date(2026, 1, 14),
        date(2026, 1, 22),
    ]


def test_sensex_monthlies_expire_on_the_last_thursday(cal: MarketCalendar) -> None:
    """SENSEX monthlies: last Thursday, moved off Christmas, Ram Navami and Bakri Id."""
    assert cal.expiries("SENSEX", date(2025, 12, 1), 6, "monthly") == [
        date(2025, 12, 24),
        date(2026, 1, 29),
        date(2026, 2, 26),
        date(2026, 3, 25),
        date(2026, 4, 30),
        date(2026, 5, 27),
    ]


@pytest.mark.parametrize("underlying", [*NSE_INDICES[1:], "RELIANCE"])
def test_weekly_expiries_of_an_underlying_without_weeklies_raise(
    cal: MarketCalendar, underlying: str
) -> None:
    """Only NIFTY and SENSEX have weeklies; asking for others is a typed error."""
    with pytest.raises(NoWeeklyExpiryError) as info:
        cal.expiries(underlying, date(2026, 1, 1), 1, "weekly")

    assert info.value.code == "no_weekly_expiry"


def test_expiries_before_the_tuesday_rules_are_refused(cal: MarketCalendar) -> None:
    """from_date before 1 Sep 2025 is outside the implemented rules and raises."""
    with pytest.raises(ExpiryRulesUnavailableError):
        cal.expiries("NIFTY", date(2025, 8, 31), 1)


def test_zero_count_gives_no_expiries_and_bad_queries_raise(cal: MarketCalendar) -> None:
    """count=0 is an empty list; negative counts and unknown kinds raise."""
    assert cal.expiries("NIFTY", date(2026, 1, 1), 0) == []
    with pytest.raises(CalendarQueryError):
        cal.expiries("NIFTY", date(2026, 1, 1), -1)
    with pytest.raises(CalendarQueryError):
        cal.expiries("NIFTY", date(2026, 1, 1), 1, "quarterly")  # type: ignore[arg-type]


SYNTHETIC = {
    "holidays": [
        {"date": date(2026, 6, 8), "name": "Mon off"},
        {"date": date(2026, 6, 9), "name": "Tue off"},
        {"date": date(2026, 6, 16), "name": "Tue off"},
        {"date": date(2026, 7, 6), "name": "Mon off"},
        {"date": date(2026, 7, 7), "name": "Tue off"},
    ],
    "special_sessions": [
        {"date": date(2026, 6, 15), "name": "Muhurat", "kind": "muhurat",
         "open": "18:00:00", "close": "19:00:00"},
        {"date": date(2026, 6, 23), "name": "Muhurat", "kind": "muhurat",
         "open": "18:00:00", "close": "19:00:00"},
        {"date": date(2026, 7, 5), "name": "Budget", "kind": "full",
         "open": "09:15:00", "close": "15:30:00"},
    ],
}  # fmt: skip


@pytest.mark.parametrize(
    ("rule_day", "expiry"),
    [
        (date(2026, 6, 9), date(2026, 6, 5)),  # Tue and Mon holidays, over the weekend
        (date(2026, 6, 16), date(2026, 6, 12)),  # Tue holiday, Mon has only a Muhurat session
        (date(2026, 6, 23), date(2026, 6, 22)),  # Muhurat on the Tuesday itself
        (date(2026, 7, 7), date(2026, 7, 5)),  # a full special session is a trading day
    ],
)
def test_holiday_shift_repeats_and_treats_muhurat_days_as_holidays(
    rule_day: date, expiry: date
) -> None:
    """The expiry moves back day by day past holidays, weekends and Muhurat days."""
    cal = MarketCalendar.from_mapping(SYNTHETIC)

    assert cal.expiries("NIFTY", rule_day - timedelta(days=6), 1) == [expiry]


# ----------------------------------------------------------------------------- sessions


def test_budget_sunday_is_a_full_trading_day(cal: MarketCalendar) -> None:
    """Sun 1 Feb 2026 trades 09:15-15:30 with the futures pre-open."""
    assert cal.is_trading_day(date(2026, 2, 1))
    regular = cal.session(ist_ms(2026, 2, 1, 11, 0))
    assert (regular.trading_day, regular.open, regular.phase) == (True, True, "regular")
    assert cal.session(ist_ms(2026, 2, 1, 9, 5)).phase == "pre_open"
    assert cal.session(ist_ms(2026, 2, 1, 9, 5), "options").phase == "closed"


def test_regular_day_phases_and_boundaries(cal: MarketCalendar) -> None:
    """Futures: pre-open [09:00, 09:15), regular [09:15, 15:30), closed otherwise."""
    phases = {
        (8, 59, 59, 999): "closed",
        (9, 0, 0, 0): "pre_open",
        (9, 14, 59, 999): "pre_open",
        (9, 15, 0, 0): "regular",
        (15, 29, 59, 999): "regular",
        (15, 30, 0, 0): "closed",
    }
    for (h, m, s, ms), phase in phases.items():
        session = cal.session(ist_ms(2026, 1, 27, h, m, s, ms), "futures")
        assert session.phase == phase, (h, m, s, ms)
        assert session.open is (phase != "closed")
        assert session.trading_day


def test_options_have_no_pre_open(cal: MarketCalendar) -> None:
    """At 09:05 options are closed and open at 09:15 the same day."""
    session = cal.session(ist_ms(2026, 1, 27, 9, 5), "options")

    assert (session.open, session.phase) == (False, "closed")
    assert session.next_open_ts == ist_ms(2026, 1, 27, 9, 15)


def test_futures_pre_open_starts_on_8_december_2025(cal: MarketCalendar) -> None:
    """Before 8 Dec 2025 futures had no pre-open; from that Monday they do."""
    before = cal.session(ist_ms(2025, 12, 5, 9, 5), "futures")
    since = cal.session(ist_ms(2025, 12, 8, 9, 5), "futures")

    assert (before.phase, before.next_open_ts) == ("closed", ist_ms(2025, 12, 5, 9, 15))
    assert since.phase == "pre_open"


@pytest.mark.parametrize(
    ("at", "segment", "next_open"),
    [
        # Saturday -> Monday, pre-open start for futures, 09:15 for options
        (ist_ms(2026, 1, 10, 12, 0), "futures", ist_ms(2026, 1, 12, 9, 0)),
        (ist_ms(2026, 1, 10, 12, 0), "options", ist_ms(2026, 1, 12, 9, 15)),
        # Friday close -> weekend -> Republic Day Monday -> Tuesday
        (ist_ms(2026, 1, 23, 16, 0), "futures", ist_ms(2026, 1, 27, 9, 0)),
        # Thursday close -> Good Friday -> weekend -> Monday
        (ist_ms(2026, 4, 2, 16, 0), "options", ist_ms(2026, 4, 6, 9, 15)),
        # Saturday before the Budget Sunday
        (ist_ms(2026, 1, 31, 12, 0), "futures", ist_ms(2026, 2, 1, 9, 0)),
        # during a session the next open is the next day's
        (ist_ms(2026, 1, 27, 10, 0), "futures", ist_ms(2026, 1, 28, 9, 0)),
        # Muhurat on a holiday: 2025 futures had no pre-open yet
        (ist_ms(2025, 10, 20, 16, 0), "futures", ist_ms(2025, 10, 21, 13, 45)),
        (ist_ms(2025, 10, 21, 15, 0), "futures", ist_ms(2025, 10, 23, 9, 15)),
    ],
)
def test_next_open_skips_weekends_and_holidays(
    cal: MarketCalendar, at: int, segment: str, next_open: int
) -> None:
    """next_open_ts is the first session start strictly after the instant."""
    assert cal.session(at, segment).next_open_ts == next_open  # type: ignore[arg-type]


def test_weekend_and_holiday_are_closed_non_trading_days(cal: MarketCalendar) -> None:
    """Saturday and Republic Day: no session at all."""
    for at in (ist_ms(2026, 1, 10, 11, 0), ist_ms(2026, 1, 26, 11, 0)):
        session = cal.session(at)
        assert (session.trading_day, session.open, session.phase) == (False, False, "closed")
    assert not cal.is_trading_day(date(2026, 1, 10))
    assert not cal.is_trading_day(date(2026, 1, 26))


def test_muhurat_session_is_open_inside_its_window_only(cal: MarketCalendar) -> None:
    """21 Oct 2025 is a holiday with a 13:45-14:45 session."""
    inside = cal.session(ist_ms(2025, 10, 21, 14, 0))
    morning = cal.session(ist_ms(2025, 10, 21, 10, 0))

    assert (inside.trading_day, inside.open, inside.phase) == (True, True, "regular")
    assert (morning.open, morning.next_open_ts) == (False, ist_ms(2025, 10, 21, 13, 45))


def test_unknown_segment_is_refused(cal: MarketCalendar) -> None:
    """Only futures and options are segments."""
    with pytest.raises(CalendarQueryError):
        cal.session(0, "equity")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- lot sizes


@pytest.mark.parametrize(
    ("underlying", "old", "new"),
    [("NIFTY", 75, 65), ("BANKNIFTY", 35, 30), ("FINNIFTY", 65, 60),
     ("MIDCPNIFTY", 140, 120), ("NIFTYNXT50", 25, 25)],
)  # fmt: skip
def test_lot_sizes_change_for_contracts_expiring_from_january_2026(
    cal: MarketCalendar, underlying: str, old: int, new: int
) -> None:
    """Dec 2025 expiries keep the old lot; Jan 2026 expiries on use the new one."""
    assert cal.lot_size(underlying, date(2025, 12, 30)) == old
    assert cal.lot_size(underlying, date(2025, 12, 31)) == old
    assert cal.lot_size(underlying, date(2026, 1, 1)) == new
    assert cal.lot_size(underlying.lower(), date(2026, 12, 29)) == new


def test_lot_size_is_unknown_outside_the_data(cal: MarketCalendar) -> None:
    """Unknown underlyings and expiries before the first entry give None."""
    assert cal.lot_size("RELIANCE", date(2026, 1, 27)) is None
    assert cal.lot_size("NIFTY", date(2025, 8, 28)) is None


def test_merged_mapping_carries_lot_sizes(cal: MarketCalendar) -> None:
    """nse.toml and lots.toml merged into one mapping load the same calendar."""
    merged = MarketCalendar.from_mapping(load("nse.toml") | load("lots.toml"))

    assert merged == cal


# ---------------------------------------------------------------------- data validation

GOOD_HOLIDAY = {"date": date(2026, 1, 26), "name": "Republic Day"}
GOOD_SESSION = {"date": date(2026, 2, 1), "name": "Budget", "kind": "full",
                "open": "09:15:00", "close": "15:30:00"}  # fmt: skip


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"exchange": "NSE"}, "exchange"),
        ({"holidays": [{**GOOD_HOLIDAY, "nmae": "x"}]}, "holidays[0].nmae"),
        ({"holidays": [{"date": date(2026, 1, 26)}]}, "holidays[0].name"),
        ({"holidays": [{**GOOD_HOLIDAY, "date": "2026-02-30"}]}, "holidays[0].date"),
        ({"holidays": [{**GOOD_HOLIDAY, "date": datetime(2026, 1, 26)}]}, "holidays[0].date"),
        ({"holidays": [GOOD_HOLIDAY, GOOD_HOLIDAY]}, "holidays[1].date"),
        ({"holidays": {"date": "2026-01-26"}}, "holidays"),
        ({"special_sessions": [{**GOOD_SESSION, "kind": "half"}]}, "special_sessions[0].kind"),
        ({"special_sessions": [{**GOOD_SESSION, "close": "09:00:00"}]},
         "special_sessions[0].close"),
        ({"special_sessions": [{**GOOD_SESSION, "open": "9h15"}]}, "special_sessions[0].open"),
        ({"special_sessions": [{**GOOD_SESSION, "pre_open": "09:20:00"}]},
         "special_sessions[0].pre_open"),
        ({"lots": {"NIFTY": [{"expiring_from": date(2026, 1, 1), "size": 0}]}},
         "lots.NIFTY[0].size"),
        ({"lots": {"NIFTY": [{"expiring_from": date(2026, 1, 1), "size": 65},
                             {"expiring_from": date(2025, 9, 1), "size": 75}]}},
         "lots.NIFTY[1].expiring_from"),
        ({"lots": {"NIFTY": [{"from": date(2026, 1, 1), "size": 65}]}}, "lots.NIFTY[0].from"),
    ],
)  # fmt: skip
def test_bad_data_raises_naming_the_key(data: dict[str, object], key: str) -> None:
    """Malformed data fails at load with a typed error whose key locates the entry."""
    with pytest.raises(CalendarDataError) as info:
        MarketCalendar.from_mapping(data)

    assert info.value.key == key
    assert info.value.code == "invalid_calendar_data"


def test_lots_given_twice_are_refused() -> None:
    """Lot sizes inside the calendar mapping and separately are ambiguous."""
    with pytest.raises(CalendarDataError) as info:
        MarketCalendar.from_mapping(load("lots.toml"), lots=load("lots.toml"))

    assert info.value.key == "lots"


def test_calendar_names_are_exported_by_the_package() -> None:
    """engine.analytics re-exports the calendar API objects themselves."""
    from engine.analytics import _calendar

    for name in _calendar.__all__:
        assert getattr(analytics, name) is getattr(_calendar, name)
