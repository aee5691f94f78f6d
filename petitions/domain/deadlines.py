"""Statutory deadline arithmetic for petition handling.

Statutory periods (信访工作条例 2022) are in calendar days and are counted the way the Civil Code
counts any period (民法典 Art. 201-203): the day of the triggering event is not counted, the
period ends at the end of its last day, and when the last day is a rest day (a public holiday,
or a weekend not swapped into a working day) the period ends on the next working day instead.
Some rules, and many units' local rules, are in working days: those count only the working days
after the triggering day, with swapped weekend working days (调休) counting.

A result that depends on a day in a year whose State Council holiday notice is not loaded is
marked `provisional`: it was computed on the ordinary week and may move once the notice is out.

Pure: no I/O, no clock. Every function takes the calendar it should count on.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from petitions.domain.calendar import (
    WorkCalendar,
    consecutive_runs,
    format_runs,
    require_date,
)

# --- Statutory periods, named so a reader finds each rule by name --------------------------
ACCEPTANCE_DAYS = 15  # decide on acceptance and tell the petitioner (2022 Art. 22-23)
HANDLING_DAYS = 60  # handle and reply, counted from acceptance (Art. 34)
MAX_EXTENSION_DAYS = 30  # one extension of handling, approved by the unit's head (Art. 34)
OBJECTION_WORKING_DAYS = 5  # a unit objects to an assignment outside its remit (Art. 23)
REVIEW_REQUEST_DAYS = 30  # petitioner asks for review, from receiving the reply (Art. 35)
REVIEW_OPINION_DAYS = 30  # the reviewing organ's opinion (Art. 35)
RE_REVIEW_REQUEST_DAYS = 30  # petitioner asks for re-review, from receiving the review (Art. 36)
RE_REVIEW_OPINION_DAYS = 30  # re-review opinion; hearing time is not counted (Art. 36)
RETURN_VISIT_DAYS = 10  # call or visit the petitioner back after the written reply
REMINDER_DAYS_BEFORE = 3  # reminder notice (催办预告) this many days before a deadline

CALENDAR_DAYS = "calendar"
WORKING_DAYS = "working"

_ONE_DAY = timedelta(days=1)
_ROLL_RULE = "Civil Code Art. 203"


@dataclass(frozen=True)
class Deadline:
    """A computed deadline, with everything needed to show and audit how it was reached.

    `start` is the triggering day (receipt, acceptance, reply...), never counted itself.
    `paused_days` is the total clock-stopped time added by `add_paused_days` (0 if none).
    """

    start: date
    length: int
    day_kind: str
    due_on: date
    nominal_due_on: date
    rolled_forward: bool
    roll_forward_rule: bool
    provisional: bool
    explanation: str
    paused_days: int = 0


def calendar_days_deadline(
    start: date, days: int, cal: WorkCalendar, *, roll_forward: bool = True
) -> Deadline:
    """`days` calendar days after `start` (Civil Code Art. 201-203).

    With `roll_forward` (the statutory default) a last day that is a rest day moves to the next
    working day; turn it off only where a rule expressly counts to the calendar day.
    """
    require_date(start, "start")
    _require_day_count(days, "days")
    return _calendar_deadline(start, days, 0, cal, roll_forward)


def working_days_deadline(start: date, days: int, cal: WorkCalendar) -> Deadline:
    """The `days`-th working day after `start` (start not counted).

    Public holidays and unswapped weekends are skipped; swapped weekend working days count.
    The result is always a working day (or `start` itself for 0 days), so nothing rolls.
    """
    require_date(start, "start")
    _require_day_count(days, "days")
    due, skipped, swapped = _count_working_days(start, days, cal)
    # Every day after `start` up to `due` was looked up; `start` itself was not.
    provisional = days > 0 and bool(cal.unknown_years_between(start + _ONE_DAY, due))
    explanation = "; ".join(
        [
            f"{days} working days from {start} (start day not counted) → {due}",
            f"rest days skipped: {_describe_rest_runs(skipped, cal)}",
            f"swapped working days counted: {format_runs((d, d) for d in swapped) or 'none'}",
            _describe_provisional(provisional, cal, start + _ONE_DAY, due),
        ]
    )
    return Deadline(
        start=start,
        length=days,
        day_kind=WORKING_DAYS,
        due_on=due,
        nominal_due_on=due,
        rolled_forward=False,
        roll_forward_rule=False,
        provisional=provisional,
        explanation=explanation,
    )


def add_paused_days(deadline: Deadline, paused_days: int, cal: WorkCalendar) -> Deadline:
    """Push a calendar-day deadline out by days on which the clock was stopped.

    Hearing time does not count against re-review time (Art. 36), so the period is recomputed
    as if it had started `paused_days` later, with the same roll-forward rule. Pauses add up:
    pausing an already paused deadline counts both pauses from the original start.
    """
    if deadline.day_kind != CALENDAR_DAYS:
        # No statutory rule pauses a working-day period; refusing beats guessing a meaning.
        raise ValueError("only calendar-day deadlines can be paused")
    _require_day_count(paused_days, "paused_days")
    total = deadline.paused_days + paused_days
    return _calendar_deadline(
        deadline.start, deadline.length, total, cal, deadline.roll_forward_rule
    )


# --- internals ---------------------------------------------------------------------------


def _require_day_count(value: object, name: str) -> None:
    # bool is an int subclass; True days is a bug, not a one-day period.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


def _add_days(d: date, n: int) -> date:
    try:
        return d + timedelta(days=n)
    except OverflowError:
        raise ValueError(f"{n} days from {d} is outside the supported date range") from None


def _next_working_day(d: date, cal: WorkCalendar) -> date:
    """`d` itself if it is a working day, otherwise the first working day after it."""
    while cal.is_rest_day(d):
        d = _add_days(d, 1)
    return d


def _calendar_deadline(
    start: date, days: int, paused: int, cal: WorkCalendar, roll_forward: bool
) -> Deadline:
    # A pause simply moves the day the count starts from; the counting rules are unchanged.
    nominal = _add_days(start, paused + days)
    due = _next_working_day(nominal, cal) if roll_forward else nominal
    # Only the last day and the days it rolled over were looked up in the calendar; without
    # roll-forward the result is pure date arithmetic and cannot change when a notice appears.
    provisional = roll_forward and bool(cal.unknown_years_between(nominal, due))
    holidays = format_runs(cal.rest_runs_between(_add_days(start, 1), due)) or "none"
    explanation = "; ".join(
        [
            _describe_count(start, days, paused, due),
            f"public holidays in the period: {holidays}",
            *_describe_last_day(nominal, due, roll_forward, cal),
            _describe_provisional(provisional, cal, nominal, due),
        ]
    )
    return Deadline(
        start=start,
        length=days,
        day_kind=CALENDAR_DAYS,
        due_on=due,
        nominal_due_on=nominal,
        rolled_forward=due != nominal,
        roll_forward_rule=roll_forward,
        provisional=provisional,
        explanation=explanation,
        paused_days=paused,
    )


def _count_working_days(
    start: date, days: int, cal: WorkCalendar
) -> tuple[date, list[date], list[date]]:
    """Walk forward from `start`; return the due day, the rest days skipped, the swaps counted."""
    d, counted = start, 0
    skipped: list[date] = []
    swapped: list[date] = []
    while counted < days:
        d = _add_days(d, 1)
        if cal.is_rest_day(d):
            skipped.append(d)
            continue
        counted += 1
        if cal.is_swapped_workday(d):
            swapped.append(d)
    return d, skipped, swapped


def _describe_count(start: date, days: int, paused: int, due: date) -> str:
    text = f"{days} calendar days from {start} (start day not counted)"
    if paused:
        text += f", plus {paused} paused days (clock stopped, e.g. hearing time is not counted)"
    return f"{text} → {due}"


def _describe_last_day(
    nominal: date, due: date, roll_forward: bool, cal: WorkCalendar
) -> list[str]:
    if not cal.is_rest_day(nominal):
        return []
    if not roll_forward:
        return [f"last day {nominal} is a rest day, not rolled forward (rule off)"]
    return [
        f"last day {nominal} is a rest day, "
        f"rolled forward to the next working day {due} ({_ROLL_RULE})"
    ]


def _describe_rest_runs(days: list[date], cal: WorkCalendar) -> str:
    """'2025-09-27 (weekend), 2025-10-01..2025-10-08 (public holiday)' or 'none'."""
    parts = []
    for first, last in consecutive_runs(days):
        run = [_add_days(first, i) for i in range((last - first).days + 1)]
        holiday_days = sum(cal.is_public_holiday(d) for d in run)
        if holiday_days == len(run):
            kind = "public holiday"
        elif holiday_days == 0:
            kind = "weekend"
        else:
            kind = "public holiday and weekend"
        parts.append(f"{format_runs([(first, last)])} ({kind})")
    return ", ".join(parts) or "none"


def _describe_provisional(provisional: bool, cal: WorkCalendar, first: date, last: date) -> str:
    if not provisional:
        return "provisional: no"
    years = ", ".join(str(y) for y in cal.unknown_years_between(first, last))
    return (
        f"provisional: yes (no official holiday notice loaded for {years}; "
        "ordinary weekends assumed, the date may move when the notice is loaded)"
    )
