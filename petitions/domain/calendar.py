"""The national working-day calendar (全国年节及纪念日放假安排) that statutory deadlines are counted on.

Every year the State Council publishes a notice (国务院办公厅关于某年部分节假日安排的通知) listing
the public-holiday rest days (including the weekend days inside each break) and the weekend days
that become working days to make the breaks contiguous (调休). Nothing else is knowable in advance,
so the calendar records which years it has official data for: for any other year it can only
assume the ordinary week (Monday-Friday working, Saturday/Sunday rest), and callers must treat
answers about such years as provisional.

Pure: no I/O. The optional `chinese_calendar` package is imported lazily, only by
`calendar_from_chinese_calendar`, so the domain can be used (and tested) with hand-loaded data.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

_ONE_DAY = timedelta(days=1)
_SATURDAY = 5  # date.weekday(): Monday is 0, so 5 and 6 are the weekend


def require_date(value: object, name: str = "date") -> date:
    """Reject anything that is not a plain `date`.

    `datetime` is a subclass of `date` but never equals one, so a datetime would silently miss
    every holiday lookup; refusing it here turns that bug into an immediate error.
    """
    if isinstance(value, datetime) or not isinstance(value, date):
        raise TypeError(f"{name} must be a datetime.date (not {type(value).__name__})")
    return value


def is_weekend(d: date) -> bool:
    return d.weekday() >= _SATURDAY


@dataclass(frozen=True)
class WorkCalendar:
    """An immutable calendar of official rest days and swapped working days.

    `holidays` and `swapped_workdays` only ever hold dates in `known_years`: a date outside them is
    judged by the ordinary week alone. Build a new calendar with `with_year` to load a year.
    """

    holidays: frozenset[date] = field(default_factory=frozenset)
    swapped_workdays: frozenset[date] = field(default_factory=frozenset)
    known_years: frozenset[int] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        # Coerce so that callers may pass sets or lists and still get an immutable, hashable value.
        object.__setattr__(self, "holidays", frozenset(self.holidays))
        object.__setattr__(self, "swapped_workdays", frozenset(self.swapped_workdays))
        object.__setattr__(self, "known_years", frozenset(self.known_years))
        self._validate()

    def _validate(self) -> None:
        for year in self.known_years:
            if isinstance(year, bool) or not isinstance(year, int) or not 1 <= year <= 9999:
                raise ValueError(f"known year must be an int in 1..9999, got {year!r}")
        for d in self.holidays | self.swapped_workdays:
            require_date(d, "calendar day")
            if d.year not in self.known_years:
                # Data for a year we do not claim to know would make `knows()` lie.
                raise ValueError(f"{d} is listed but its year {d.year} is not a known year")
        both = self.holidays & self.swapped_workdays
        if both:
            raise ValueError(f"days both holiday and swapped working day: {_fmt_days(both)}")
        weekdays = [d for d in self.swapped_workdays if not is_weekend(d)]
        if weekdays:
            # A swap only ever turns a Saturday or Sunday into a working day; a weekday listed
            # here is a data-entry error (probably a holiday put in the wrong list).
            raise ValueError(f"swapped working days must be weekends: {_fmt_days(weekdays)}")

    def knows(self, year: int) -> bool:
        """Whether the official notice for `year` has been loaded."""
        return year in self.known_years

    def is_working_day(self, d: date) -> bool:
        """A swapped weekend works, a public holiday rests, otherwise the ordinary week applies.

        For a year the calendar does not know, the two sets hold nothing for it, so this falls
        through to the ordinary week: Monday-Friday working, Saturday and Sunday rest.
        """
        require_date(d)
        if d in self.swapped_workdays:
            return True
        if d in self.holidays:
            return False
        return not is_weekend(d)

    def is_rest_day(self, d: date) -> bool:
        return not self.is_working_day(d)

    def is_public_holiday(self, d: date) -> bool:
        return require_date(d) in self.holidays

    def is_swapped_workday(self, d: date) -> bool:
        return require_date(d) in self.swapped_workdays

    def unknown_years_between(self, start: date, end: date) -> list[int]:
        """Years touched by [start, end] that the calendar has no official data for."""
        require_date(start, "start")
        require_date(end, "end")
        return [y for y in range(start.year, end.year + 1) if y not in self.known_years]

    def rest_runs_between(self, start: date, end: date) -> list[tuple[date, date]]:
        """Maximal runs of consecutive public-holiday days inside [start, end], for explanations.

        Runs are clipped to the window, so a period ending mid-break reports the part it covers.
        Ordinary weekends are not included: they are not news to anyone reading an explanation.
        """
        require_date(start, "start")
        require_date(end, "end")
        return consecutive_runs(d for d in self.holidays if start <= d <= end)

    def with_year(
        self, year: int, holidays: Iterable[date], swapped_workdays: Iterable[date]
    ) -> WorkCalendar:
        """A new calendar that knows `year` from its official State Council notice.

        Loading a year that is already known replaces its data (a corrected notice). Every date
        given must lie in `year`; a notice day in the neighbouring year (a New Year break that
        starts on 31 December) is loaded with that year's data, so each year stays one unit.
        """
        if isinstance(year, bool) or not isinstance(year, int):
            raise ValueError(f"year must be an int, got {year!r}")
        new_holidays = frozenset(holidays)
        new_swaps = frozenset(swapped_workdays)
        for d in new_holidays | new_swaps:
            require_date(d, "calendar day")
            if d.year != year:
                raise ValueError(f"{d} is not in {year}; load it with that year's notice")
        return WorkCalendar(
            holidays=frozenset(d for d in self.holidays if d.year != year) | new_holidays,
            swapped_workdays=frozenset(d for d in self.swapped_workdays if d.year != year)
            | new_swaps,
            known_years=self.known_years | {year},
        )


def consecutive_runs(days: Iterable[date]) -> list[tuple[date, date]]:
    """Group dates into (first, last) runs of consecutive days, in date order."""
    runs: list[tuple[date, date]] = []
    for d in sorted(set(days)):
        if runs and runs[-1][1] + _ONE_DAY == d:
            runs[-1] = (runs[-1][0], d)
        else:
            runs.append((d, d))
    return runs


def format_runs(runs: Iterable[tuple[date, date]]) -> str:
    """'2026-10-01..2026-10-07, 2026-12-31' — a single day is shown once, not as d..d."""
    return ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in runs)


def _fmt_days(days: Iterable[date]) -> str:
    return ", ".join(str(d) for d in sorted(days))


def calendar_from_chinese_calendar(years: Iterable[int] | None = None) -> WorkCalendar:
    """Build the calendar from the `chinese_calendar` package's transcription of the notices.

    `years=None` loads every year the package has (2004-2026 for 1.11.0). Asking for a year it
    lacks raises ValueError rather than silently assuming an ordinary week: load that year from
    the State Council notice with `WorkCalendar.with_year` instead.

    The package's public helpers (`is_holiday`, `get_holidays`) treat every ordinary weekend as
    a holiday and raise for unknown years, so only its raw tables are read: `holidays` holds the
    official rest days of each break (weekend days inside a break included, ordinary weekends
    not) and `workdays` holds the swapped working days.
    """
    # Lazy import: the dependency is only needed by whoever builds the calendar from it.
    from chinese_calendar import constants

    available = {d.year for d in constants.holidays} | {d.year for d in constants.workdays}
    wanted = set(available if years is None else years)
    missing = sorted(wanted - available)
    if missing:
        raise ValueError(
            f"chinese_calendar has no official data for {missing}; "
            f"it covers {min(available)}-{max(available)}"
        )
    holidays = frozenset(d for d in constants.holidays if d.year in wanted)
    # Defensive: a weekday in `workdays` would be a working day anyway, so dropping it loses
    # nothing and keeps the swapped-day set to what a notice actually swaps.
    swaps = frozenset(d for d in constants.workdays if d.year in wanted and is_weekend(d))
    return WorkCalendar(holidays=holidays, swapped_workdays=swaps, known_years=frozenset(wanted))
