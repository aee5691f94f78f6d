"""The holiday calendar the deadlines service counts on: the chinese-calendar package's years
plus the years an administrator loaded from the State Council's notice (`calendar_years`).

Every replica refreshes from the table on each tick, so a year loaded through one replica (or
the CLI) reaches all of them within a tick interval.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import asyncpg

from petitions.domain.calendar import WorkCalendar, calendar_from_chinese_calendar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CalendarYear:
    """One year of the State Council notice: rest days of the breaks, swapped working days."""

    year: int
    holidays: tuple[date, ...]
    swapped_workdays: tuple[date, ...]
    source: str = ""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], year: int | None = None) -> CalendarYear:
        unknown = set(d) - {"year", "holidays", "swapped_workdays", "source"}
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}")
        y = year if year is not None else d.get("year")
        if d.get("year") is not None and year is not None and int(d["year"]) != year:
            raise ValueError(f"body says year {d['year']}, the path says {year}")
        if isinstance(y, bool) or not isinstance(y, int):
            raise ValueError("year must be an integer")
        return cls(y, tuple(_dates(d.get("holidays") or [], "holidays")),
                   tuple(_dates(d.get("swapped_workdays") or [], "swapped_workdays")),
                   str(d.get("source") or ""))

    def validate_on(self, calendar: WorkCalendar) -> WorkCalendar:
        """The calendar with this year loaded; ValueError when the data is inconsistent."""
        if not 1900 <= self.year <= 2200:
            raise ValueError(f"year {self.year} is out of range")
        if not self.holidays:
            raise ValueError("a year's notice lists at least one holiday")
        return calendar.with_year(self.year, self.holidays, self.swapped_workdays)


def _dates(values: Iterable[Any], name: str) -> list[date]:
    out = []
    for v in values:
        try:
            out.append(v if isinstance(v, date) else date.fromisoformat(str(v)))
        except ValueError:
            raise ValueError(f"{name}: {v!r} is not an ISO date") from None
    return out


class MemoCalendar(WorkCalendar):
    """A calendar that remembers which holiday runs lie between two days.

    Every registration of a day asks the same question (the holidays inside its 15-day
    acceptance period, for the explanation), and answering it walks every holiday of every
    known year; the answer never changes for one calendar, so it is kept."""

    _RUNS_KEPT = 20_000

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "_runs", {})

    @classmethod
    def of(cls, calendar: WorkCalendar) -> MemoCalendar:
        return cls(calendar.holidays, calendar.swapped_workdays, calendar.known_years)

    def rest_runs_between(self, start: date, end: date) -> list[tuple[date, date]]:
        runs: dict[tuple[date, date], list[tuple[date, date]]] = self._runs  # type: ignore[attr-defined]
        key = (start, end)
        found = runs.get(key)
        if found is None:
            if len(runs) >= self._RUNS_KEPT:
                runs.clear()
            found = runs[key] = super().rest_runs_between(start, end)
        return list(found)


class CalendarBook:
    """The current calendar: a base (chinese-calendar) plus the stored years on top."""

    def __init__(self, base: WorkCalendar | None = None) -> None:
        self.base = base if base is not None else calendar_from_chinese_calendar()
        self._current: WorkCalendar = MemoCalendar.of(self.base)
        self._stamp: tuple[Any, ...] | None = None

    def current(self) -> WorkCalendar:
        return self._current

    async def refresh(self, db: asyncpg.Pool | asyncpg.Connection) -> bool:
        """Reload the stored years if they changed since the last look; True if reloaded."""
        stamp = tuple(await db.fetchrow(
            "SELECT count(*), max(loaded_at), coalesce(sum(year), 0) FROM calendar_years"))
        if stamp == self._stamp:
            return False
        rows = await db.fetch(
            "SELECT year, holidays, swapped_workdays, source FROM calendar_years ORDER BY year")
        calendar = self.base
        for r in rows:
            calendar = CalendarYear(r["year"], tuple(r["holidays"]),
                                    tuple(r["swapped_workdays"]), r["source"]).validate_on(
                calendar)
        self._current, self._stamp = MemoCalendar.of(calendar), stamp
        log.info("holiday calendar loaded", extra={"stored_years": [r["year"] for r in rows]})
        return True

    async def store(self, db: asyncpg.Pool | asyncpg.Connection, year: CalendarYear,
                    loaded_by: str) -> WorkCalendar:
        """Validate and store a year (replacing an earlier load of it), then refresh."""
        year.validate_on(self._current)
        await db.execute(
            "INSERT INTO calendar_years (year, holidays, swapped_workdays, source, loaded_by) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (year) DO UPDATE SET "
            "holidays = EXCLUDED.holidays, swapped_workdays = EXCLUDED.swapped_workdays, "
            "source = EXCLUDED.source, loaded_by = EXCLUDED.loaded_by, loaded_at = now()",
            year.year, sorted(year.holidays), sorted(year.swapped_workdays), year.source,
            loaded_by)
        await self.refresh(db)
        return self._current
