"""WorkCalendar and its construction from the chinese_calendar package.

Dates are checked against the published State Council notices:
- 2025 (国办发明电〔2024〕12号): New Year 01-01; Spring Festival 01-28..02-04, 01-26 (Sun) and
  02-08 (Sat) worked; Qingming 04-04..04-06; Labour Day 05-01..05-05, 04-27 (Sun) worked;
  Dragon Boat 05-31..06-02; National Day + Mid-Autumn 10-01..10-08, 09-28 (Sun) and 10-11 (Sat)
  worked.
- 2026 (国办发明电〔2025〕7号): New Year 01-01..01-03, 01-04 (Sun) worked; Spring Festival
  02-15..02-23, 02-14 (Sat) and 02-28 (Sat) worked; Qingming 04-04..04-06; Labour Day
  05-01..05-05, 05-09 (Sat) worked; Dragon Boat 06-19..06-21; Mid-Autumn 09-25..09-27;
  National Day 10-01..10-07, 09-20 (Sun) and 10-10 (Sat) worked.
"""
from __future__ import annotations

import dataclasses
import types
from datetime import date, datetime, timedelta

import pytest

from petitions.domain import calendar as calendar_module
from petitions.domain import deadlines as deadlines_module
from petitions.domain.calendar import (
    WorkCalendar,
    calendar_from_chinese_calendar,
    consecutive_runs,
    format_runs,
)


def days(first: date, last: date) -> set[date]:
    return {first + timedelta(n) for n in range((last - first).days + 1)}


HOLIDAYS_2025 = (
    {date(2025, 1, 1)}
    | days(date(2025, 1, 28), date(2025, 2, 4))
    | days(date(2025, 4, 4), date(2025, 4, 6))
    | days(date(2025, 5, 1), date(2025, 5, 5))
    | days(date(2025, 5, 31), date(2025, 6, 2))
    | days(date(2025, 10, 1), date(2025, 10, 8))
)
SWAPS_2025 = {
    date(2025, 1, 26),
    date(2025, 2, 8),
    date(2025, 4, 27),
    date(2025, 9, 28),
    date(2025, 10, 11),
}

HOLIDAYS_2026 = (
    days(date(2026, 1, 1), date(2026, 1, 3))
    | days(date(2026, 2, 15), date(2026, 2, 23))
    | days(date(2026, 4, 4), date(2026, 4, 6))
    | days(date(2026, 5, 1), date(2026, 5, 5))
    | days(date(2026, 6, 19), date(2026, 6, 21))
    | days(date(2026, 9, 25), date(2026, 9, 27))
    | days(date(2026, 10, 1), date(2026, 10, 7))
)
SWAPS_2026 = {
    date(2026, 1, 4),
    date(2026, 2, 14),
    date(2026, 2, 28),
    date(2026, 5, 9),
    date(2026, 9, 20),
    date(2026, 10, 10),
}


@pytest.fixture(scope="module")
def cal() -> WorkCalendar:
    return calendar_from_chinese_calendar()


# --- built from chinese_calendar ------------------------------------------------------------


def test_package_calendar_knows_2004_to_2026_only(cal):
    assert cal.known_years == frozenset(range(2004, 2027))
    assert cal.knows(2025) and cal.knows(2026)
    assert not cal.knows(2027) and not cal.knows(2003)


@pytest.mark.parametrize(
    "year, holidays, swaps",
    [(2025, HOLIDAYS_2025, SWAPS_2025), (2026, HOLIDAYS_2026, SWAPS_2026)],
)
def test_package_data_matches_the_published_notice(cal, year, holidays, swaps):
    assert {d for d in cal.holidays if d.year == year} == holidays
    assert {d for d in cal.swapped_workdays if d.year == year} == swaps


def test_ordinary_weekends_are_not_recorded_as_holidays(cal):
    # The package's own is_holiday() says every weekend is a holiday; we must not copy that.
    assert date(2025, 1, 4) not in cal.holidays  # an ordinary Saturday
    assert cal.is_rest_day(date(2025, 1, 4))
    assert all(d.weekday() >= 5 for d in cal.swapped_workdays)


def test_selected_years_only(cal):
    small = calendar_from_chinese_calendar([2025])
    assert small.known_years == {2025}
    assert {d.year for d in small.holidays} == {2025}
    assert small.is_working_day(date(2026, 2, 16))  # a Monday; 2026 not loaded, so weekday logic
    assert not cal.is_working_day(date(2026, 2, 16))  # Spring Festival in the full calendar


def test_year_without_package_data_raises():
    with pytest.raises(ValueError, match="2027"):
        calendar_from_chinese_calendar([2026, 2027])


FORBIDDEN_ROOTS = {
    "chinese_calendar", "fastapi", "grpc", "nats", "asyncpg", "opentelemetry", "psycopg"
}


@pytest.mark.parametrize("module", [calendar_module, deadlines_module])
def test_domain_modules_bind_nothing_from_frameworks_or_the_package(module):
    # chinese_calendar is imported inside calendar_from_chinese_calendar only (lazily), and the
    # domain stays free of web, RPC, broker and database libraries.
    for name, value in vars(module).items():
        if isinstance(value, types.ModuleType):
            origin = value.__name__
        else:
            origin = getattr(value, "__module__", None)
        if isinstance(origin, str):
            assert origin.split(".")[0] not in FORBIDDEN_ROOTS, name


# --- working / rest days ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "d, working",
    [
        (date(2025, 1, 26), True),  # Sunday swapped into a working day before Spring Festival
        (date(2025, 1, 28), False),  # Spring Festival eve, public holiday
        (date(2025, 2, 4), False),  # last day of the break
        (date(2025, 2, 5), True),
        (date(2025, 2, 8), True),  # Saturday swapped into a working day
        (date(2025, 9, 28), True),  # Sunday worked before National Day
        (date(2025, 10, 8), False),  # National Day + Mid-Autumn break ends 10-08
        (date(2025, 10, 9), True),
        (date(2025, 10, 11), True),  # Saturday worked after the break
        (date(2025, 10, 12), False),  # ordinary Sunday
        (date(2026, 2, 14), True),  # Saturday worked before Spring Festival 2026
        (date(2026, 2, 23), False),  # last day of the 9-day break
        (date(2026, 2, 24), True),
        (date(2026, 2, 28), True),  # Saturday worked after
        (date(2026, 10, 7), False),
        (date(2026, 10, 8), True),
        (date(2026, 10, 10), True),
        (date(2026, 3, 4), True),  # ordinary Wednesday
    ],
)
def test_is_working_day_in_known_years(cal, d, working):
    assert cal.is_working_day(d) is working
    assert cal.is_rest_day(d) is (not working)


def test_unknown_year_uses_the_ordinary_week(cal):
    assert cal.is_working_day(date(2027, 1, 1))  # a Friday; New Year 2027 not yet announced
    assert cal.is_rest_day(date(2027, 1, 2))  # Saturday
    assert cal.is_rest_day(date(2027, 1, 3))  # Sunday
    assert cal.is_working_day(date(2027, 1, 4))


def test_empty_calendar_is_weekends_only():
    empty = WorkCalendar()
    assert empty.known_years == frozenset()
    assert empty.is_working_day(date(2025, 10, 1))  # Wednesday, no data loaded
    assert empty.is_rest_day(date(2025, 9, 28))  # Sunday, swap unknown


def test_datetime_is_refused(cal):
    with pytest.raises(TypeError):
        cal.is_working_day(datetime(2025, 10, 1, 9, 0))


# --- rest runs ---------------------------------------------------------------------------------


def test_rest_runs_between_lists_public_holiday_runs_only(cal):
    runs = cal.rest_runs_between(date(2026, 9, 1), date(2026, 10, 31))
    assert runs == [
        (date(2026, 9, 25), date(2026, 9, 27)),
        (date(2026, 10, 1), date(2026, 10, 7)),
    ]


def test_rest_runs_are_clipped_to_the_window(cal):
    assert cal.rest_runs_between(date(2025, 10, 3), date(2025, 10, 5)) == [
        (date(2025, 10, 3), date(2025, 10, 5))
    ]
    assert cal.rest_runs_between(date(2025, 10, 9), date(2025, 10, 31)) == []
    assert cal.rest_runs_between(date(2025, 10, 31), date(2025, 10, 1)) == []


def test_consecutive_runs_and_format():
    runs = consecutive_runs(
        [date(2026, 1, 3), date(2026, 1, 1), date(2026, 1, 2), date(2026, 1, 9)]
    )
    assert runs == [(date(2026, 1, 1), date(2026, 1, 3)), (date(2026, 1, 9), date(2026, 1, 9))]
    assert format_runs(runs) == "2026-01-01..2026-01-03, 2026-01-09"


# --- loading a year --------------------------------------------------------------------------

# A made-up notice for 2027, shaped like real ones: New Year 01-01..01-03 (Fri-Sun), and a
# Saturday worked. Used only to check loading; not official data.
HOLIDAYS_2027 = days(date(2027, 1, 1), date(2027, 1, 3))
SWAPS_2027 = {date(2027, 2, 6)}


def test_with_year_returns_a_new_calendar_that_knows_the_year(cal):
    loaded = cal.with_year(2027, HOLIDAYS_2027, SWAPS_2027)
    assert loaded.knows(2027) and not cal.knows(2027)  # the original is untouched
    assert loaded.is_rest_day(date(2027, 1, 1))
    assert loaded.is_working_day(date(2027, 2, 6))  # swapped Saturday
    assert loaded.is_working_day(date(2025, 1, 26))  # other years kept
    assert loaded.rest_runs_between(date(2026, 12, 1), date(2027, 1, 31)) == [
        (date(2027, 1, 1), date(2027, 1, 3))
    ]


def test_with_year_replaces_an_already_known_year(cal):
    corrected = cal.with_year(2026, {date(2026, 1, 1)}, set())
    assert corrected.is_working_day(date(2026, 10, 8))
    assert corrected.is_working_day(date(2026, 10, 2))  # old 2026 data gone
    assert corrected.is_rest_day(date(2026, 10, 10))  # old swap gone: an ordinary Saturday
    assert corrected.is_rest_day(date(2025, 10, 2))  # 2025 untouched


def test_with_year_with_no_holidays_still_marks_the_year_known():
    cal = WorkCalendar().with_year(2030, [], [])
    assert cal.knows(2030)


@pytest.mark.parametrize(
    "holidays, swaps, message",
    [
        ({date(2026, 12, 31)}, set(), "not in 2027"),
        (set(), {date(2027, 1, 4)}, "must be weekends"),  # a Monday cannot be "swapped"
        ({date(2027, 1, 2)}, {date(2027, 1, 2)}, "both"),
    ],
)
def test_with_year_validates_the_notice(holidays, swaps, message):
    with pytest.raises(ValueError, match=message):
        WorkCalendar().with_year(2027, holidays, swaps)


def test_with_year_refuses_datetimes_and_bad_years():
    with pytest.raises(TypeError):
        WorkCalendar().with_year(2027, [datetime(2027, 1, 1)], [])
    with pytest.raises(ValueError):
        WorkCalendar().with_year("2027", [], [])  # type: ignore[arg-type]


def test_constructor_refuses_data_for_unknown_years():
    with pytest.raises(ValueError, match="not a known year"):
        WorkCalendar(holidays=frozenset({date(2027, 1, 1)}), known_years=frozenset({2026}))


def test_calendar_is_immutable_and_hashable(cal):
    with pytest.raises(dataclasses.FrozenInstanceError):
        cal.known_years = frozenset()  # type: ignore[misc]
    assert isinstance(cal.holidays, frozenset)
    assert hash(cal) == hash(calendar_from_chinese_calendar())
    assert cal == calendar_from_chinese_calendar()
    coerced = WorkCalendar(
        holidays={date(2027, 1, 1)}, known_years=[2027]  # type: ignore[arg-type]
    )
    assert isinstance(coerced.holidays, frozenset) and isinstance(coerced.known_years, frozenset)
