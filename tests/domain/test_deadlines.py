"""Statutory deadline arithmetic, checked against the 2025 and 2026 State Council holiday notices
(see test_calendar.py for the schedules)."""
from __future__ import annotations

import dataclasses
from datetime import date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from petitions.domain import deadlines as dl
from petitions.domain.calendar import WorkCalendar, calendar_from_chinese_calendar
from petitions.domain.deadlines import (
    ACCEPTANCE_DAYS,
    HANDLING_DAYS,
    OBJECTION_WORKING_DAYS,
    RE_REVIEW_OPINION_DAYS,
    Deadline,
    add_paused_days,
    calendar_days_deadline,
    working_days_deadline,
)

CAL = calendar_from_chinese_calendar()
# A made-up 2027 New Year notice (Fri 01-01 .. Sun 01-03), only to show what loading a year does.
CAL_2027 = CAL.with_year(2027, {date(2027, 1, 1), date(2027, 1, 2), date(2027, 1, 3)}, set())


def working_days_in(start: date, end: date, cal: WorkCalendar) -> int:
    """Working days in (start, end] — the definition the working-day count must satisfy."""
    return sum(cal.is_working_day(start + timedelta(n)) for n in range(1, (end - start).days + 1))


def test_statutory_periods_are_named():
    assert (dl.ACCEPTANCE_DAYS, dl.HANDLING_DAYS, dl.MAX_EXTENSION_DAYS) == (15, 60, 30)
    assert dl.OBJECTION_WORKING_DAYS == 5
    assert (dl.REVIEW_REQUEST_DAYS, dl.REVIEW_OPINION_DAYS) == (30, 30)
    assert (dl.RE_REVIEW_REQUEST_DAYS, dl.RE_REVIEW_OPINION_DAYS) == (30, 30)
    assert (dl.RETURN_VISIT_DAYS, dl.REMINDER_DAYS_BEFORE) == (10, 3)


# --- calendar days -------------------------------------------------------------------------


def test_acceptance_period_spanning_national_day_ends_on_a_working_day():
    d = calendar_days_deadline(date(2026, 9, 28), ACCEPTANCE_DAYS, CAL)
    assert d == Deadline(
        start=date(2026, 9, 28),
        length=15,
        day_kind="calendar",
        due_on=date(2026, 10, 13),
        nominal_due_on=date(2026, 10, 13),
        rolled_forward=False,
        roll_forward_rule=True,
        provisional=False,
        explanation=(
            "15 calendar days from 2026-09-28 (start day not counted) → 2026-10-13; "
            "public holidays in the period: 2026-10-01..2026-10-07; provisional: no"
        ),
    )


@pytest.mark.parametrize(
    "start, nominal, due",
    [
        # 2025: last day 10-05 inside the 10-01..10-08 break -> Thursday 10-09.
        (date(2025, 9, 20), date(2025, 10, 5), date(2025, 10, 9)),
        # 2026: last day 10-01, first day of the 10-01..10-07 break -> Thursday 10-08.
        (date(2026, 9, 16), date(2026, 10, 1), date(2026, 10, 8)),
    ],
)
def test_last_day_in_national_day_break_rolls_to_first_working_day_after(start, nominal, due):
    d = calendar_days_deadline(start, ACCEPTANCE_DAYS, CAL)
    assert (d.nominal_due_on, d.due_on, d.rolled_forward) == (nominal, due, True)
    assert d.roll_forward_rule and not d.provisional
    assert (
        f"last day {nominal} is a rest day, rolled forward to the next working day {due} "
        "(Civil Code Art. 203)"
    ) in d.explanation


def test_without_roll_forward_the_last_day_stays_in_the_break():
    d = calendar_days_deadline(date(2026, 9, 16), ACCEPTANCE_DAYS, CAL, roll_forward=False)
    assert d.due_on == d.nominal_due_on == date(2026, 10, 1)
    assert not d.rolled_forward and not d.roll_forward_rule
    assert "not rolled forward" in d.explanation


def test_last_day_on_a_swapped_working_saturday_does_not_roll():
    d = calendar_days_deadline(date(2026, 9, 25), ACCEPTANCE_DAYS, CAL)
    assert d.due_on == date(2026, 10, 10)  # Saturday worked after National Day 2026
    assert not d.rolled_forward


def test_last_day_on_an_ordinary_sunday_rolls_to_monday():
    d = calendar_days_deadline(date(2026, 3, 7), 15, CAL)
    assert d.nominal_due_on == date(2026, 3, 22)
    assert d.due_on == date(2026, 3, 23)


def test_handling_period_ending_in_the_break():
    d = calendar_days_deadline(date(2025, 8, 4), HANDLING_DAYS, CAL)
    assert d.nominal_due_on == date(2025, 10, 3)
    assert d.due_on == date(2025, 10, 9)


def test_zero_days_is_the_start_day_itself_or_the_next_working_day():
    assert calendar_days_deadline(date(2026, 3, 4), 0, CAL).due_on == date(2026, 3, 4)
    assert calendar_days_deadline(date(2026, 10, 1), 0, CAL).due_on == date(2026, 10, 8)
    assert working_days_deadline(date(2026, 10, 1), 0, CAL).due_on == date(2026, 10, 1)


# --- working days ---------------------------------------------------------------------------


def test_swapped_weekend_working_day_counts():
    # Friday 2025-09-26; Saturday 09-27 rests; Sunday 09-28 is worked before National Day.
    assert working_days_deadline(date(2025, 9, 26), 1, CAL).due_on == date(2025, 9, 28)


def test_objection_period_across_national_day_2025():
    d = working_days_deadline(date(2025, 9, 25), OBJECTION_WORKING_DAYS, CAL)
    # 09-26 (1), 09-28 swapped Sunday (2), 09-29 (3), 09-30 (4), break 10-01..10-08, 10-09 (5).
    assert d.due_on == d.nominal_due_on == date(2025, 10, 9)
    assert d.day_kind == "working" and not d.rolled_forward and not d.provisional
    assert d.explanation == (
        "5 working days from 2025-09-25 (start day not counted) → 2025-10-09; "
        "rest days skipped: 2025-09-27 (weekend), 2025-10-01..2025-10-08 (public holiday); "
        "swapped working days counted: 2025-09-28; provisional: no"
    )


@pytest.mark.parametrize(
    "start, due, swap",
    [
        # 2025: 01-26 Sunday worked (1), 01-27 (2), break 01-28..02-04, 02-05 (3) .. 02-07 (5).
        (date(2025, 1, 24), date(2025, 2, 7), "2025-01-26"),
        # 2026: 02-13 (1), 02-14 Saturday worked (2), break 02-15..02-23, 02-24 (3) .. 02-26 (5).
        (date(2026, 2, 12), date(2026, 2, 26), "2026-02-14"),
    ],
)
def test_working_days_across_spring_festival(start, due, swap):
    d = working_days_deadline(start, 5, CAL)
    assert d.due_on == due
    assert f"swapped working days counted: {swap}" in d.explanation


def test_working_days_on_an_empty_calendar_skip_weekends_only():
    d = working_days_deadline(date(2025, 9, 26), 5, WorkCalendar())  # a Friday
    assert d.due_on == date(2025, 10, 3)
    assert d.provisional  # nothing is known about 2025 in an empty calendar


# --- unknown years ------------------------------------------------------------------------------


def test_calendar_period_into_2027_is_provisional_on_weekend_logic():
    d = calendar_days_deadline(date(2026, 12, 17), ACCEPTANCE_DAYS, CAL)
    assert d.due_on == date(2027, 1, 1)  # a Friday: a working day for all we know
    assert d.provisional and not d.rolled_forward
    assert "provisional: yes" in d.explanation and "2027" in d.explanation


def test_loading_2027_makes_it_final_and_moves_it():
    d = calendar_days_deadline(date(2026, 12, 17), ACCEPTANCE_DAYS, CAL_2027)
    assert d.nominal_due_on == date(2027, 1, 1)
    assert d.due_on == date(2027, 1, 4)
    assert d.rolled_forward and not d.provisional


def test_working_days_into_2027_provisional_then_final():
    before = working_days_deadline(date(2026, 12, 30), 3, CAL)
    assert before.due_on == date(2027, 1, 4)  # 12-31, Fri 01-01, Mon 01-04
    assert before.provisional
    after = working_days_deadline(date(2026, 12, 30), 3, CAL_2027)
    assert after.due_on == date(2027, 1, 5)  # 12-31, 01-04, 01-05
    assert not after.provisional


def test_only_days_actually_looked_up_make_a_result_provisional():
    # Ends on Thursday 2026-12-31: known year, working day, nothing in 2027 consulted.
    assert not calendar_days_deadline(date(2026, 12, 1), 30, CAL).provisional
    # Without roll-forward the date is plain arithmetic; no notice can move it.
    assert not calendar_days_deadline(date(2026, 12, 17), 15, CAL, roll_forward=False).provisional


# --- pauses -------------------------------------------------------------------------------------


def test_hearing_time_pushes_the_re_review_deadline_out():
    d = calendar_days_deadline(date(2026, 9, 1), RE_REVIEW_OPINION_DAYS, CAL)
    assert d.due_on == date(2026, 10, 8)  # nominal 10-01 rolled out of the break
    paused = add_paused_days(d, 5, CAL)
    assert paused.start == d.start and paused.length == d.length and paused.paused_days == 5
    assert paused.nominal_due_on == date(2026, 10, 6)
    assert paused.due_on == date(2026, 10, 8)
    assert "plus 5 paused days" in paused.explanation
    longer = add_paused_days(d, 10, CAL)
    assert longer.due_on == date(2026, 10, 12)  # nominal Sunday 10-11 -> Monday


def test_pauses_add_up_and_keep_the_roll_rule():
    d = calendar_days_deadline(date(2026, 3, 2), 30, CAL, roll_forward=False)
    twice = add_paused_days(add_paused_days(d, 2, CAL), 3, CAL)
    assert twice == add_paused_days(d, 5, CAL)
    assert twice.roll_forward_rule is False
    assert twice.due_on == date(2026, 4, 6)  # a Qingming holiday, but the rule is off


def test_zero_pause_changes_nothing_but_working_days_cannot_pause():
    d = calendar_days_deadline(date(2026, 3, 2), 30, CAL)
    assert add_paused_days(d, 0, CAL) == d
    with pytest.raises(ValueError, match="calendar-day"):
        add_paused_days(working_days_deadline(date(2026, 3, 2), 5, CAL), 1, CAL)


# --- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1, 1.5, True, "15", None])
def test_day_counts_must_be_non_negative_integers(bad):
    with pytest.raises(ValueError):
        calendar_days_deadline(date(2026, 3, 2), bad, CAL)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        working_days_deadline(date(2026, 3, 2), bad, CAL)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        five = calendar_days_deadline(date(2026, 3, 2), 5, CAL)
        add_paused_days(five, bad, CAL)  # type: ignore[arg-type]


def test_start_must_be_a_date():
    with pytest.raises(TypeError):
        calendar_days_deadline(datetime(2026, 3, 2, 9), 15, CAL)
    with pytest.raises(TypeError):
        working_days_deadline("2026-03-02", 5, CAL)  # type: ignore[arg-type]


def test_dates_beyond_the_supported_range_are_a_value_error():
    with pytest.raises(ValueError):
        calendar_days_deadline(date(9999, 12, 1), 60, CAL)


def test_deadline_is_immutable():
    d = calendar_days_deadline(date(2026, 3, 2), 15, CAL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.due_on = date(2026, 4, 1)  # type: ignore[misc]


# --- properties -----------------------------------------------------------------------------------

any_start = st.dates(min_value=date(2003, 1, 1), max_value=date(2028, 12, 31))
# Starts early enough that 120 working days (under 6 months) stay inside known years.
known_start = st.dates(min_value=date(2004, 1, 1), max_value=date(2026, 6, 30))
length = st.integers(min_value=0, max_value=120)


@settings(max_examples=300, deadline=None, database=None)
@given(start=any_start, n=length, roll=st.booleans())
def test_due_never_before_nominal_and_nominal_is_plain_arithmetic(start, n, roll):
    d = calendar_days_deadline(start, n, CAL, roll_forward=roll)
    assert d.nominal_due_on == start + timedelta(n)
    assert d.due_on >= d.nominal_due_on
    if not roll:
        assert d.due_on == d.nominal_due_on and not d.rolled_forward


@settings(max_examples=300, deadline=None, database=None)
@given(start=any_start, n=length)
def test_rolled_due_is_the_first_working_day_after_the_last_day(start, n):
    d = calendar_days_deadline(start, n, CAL)
    assert CAL.is_working_day(d.due_on)
    assert d.rolled_forward == CAL.is_rest_day(d.nominal_due_on)
    gap = (d.due_on - d.nominal_due_on).days
    assert all(CAL.is_rest_day(d.nominal_due_on + timedelta(i)) for i in range(gap))


@settings(max_examples=300, deadline=None, database=None)
@given(start=known_start, n=length)
def test_working_day_count_is_exact_in_known_years(start, n):
    d = working_days_deadline(start, n, CAL)
    assert working_days_in(start, d.due_on, CAL) == n
    assert n == 0 or CAL.is_working_day(d.due_on)
    assert not d.provisional


@settings(max_examples=200, deadline=None, database=None)
@given(start=any_start, n=st.integers(min_value=0, max_value=119))
def test_deadlines_are_monotonic_in_length(start, n):
    working = [working_days_deadline(start, k, CAL).due_on for k in (n, n + 1)]
    calendar = [calendar_days_deadline(start, k, CAL).due_on for k in (n, n + 1)]
    assert working[0] < working[1]
    assert calendar[0] <= calendar[1]


@settings(max_examples=200, deadline=None, database=None)
@given(start=any_start, n=length, pause=st.integers(min_value=0, max_value=90), roll=st.booleans())
def test_pause_is_the_same_as_starting_later(start, n, pause, roll):
    paused = add_paused_days(calendar_days_deadline(start, n, CAL, roll_forward=roll), pause, CAL)
    shifted = calendar_days_deadline(start + timedelta(pause), n, CAL, roll_forward=roll)
    assert (paused.due_on, paused.nominal_due_on, paused.provisional) == (
        shifted.due_on,
        shifted.nominal_due_on,
        shifted.provisional,
    )


@settings(max_examples=200, deadline=None, database=None)
@given(start=any_start, n=length)
def test_provisional_exactly_when_an_unknown_year_was_consulted(start, n):
    d = working_days_deadline(start, n, CAL)
    consulted = {(start + timedelta(i)).year for i in range(1, (d.due_on - start).days + 1)}
    assert d.provisional == any(not CAL.knows(y) for y in consulted)
