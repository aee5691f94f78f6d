"""The deadlines service's HTTP API: open clocks by jurisdiction, and the holiday calendar."""
from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import Depends, FastAPI, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from petitions.domain.access import Permission, Principal, Role, require
from petitions.domain.values import local_date
from services.deadlines import timers
from services.deadlines.calendars import CalendarBook, CalendarYear
from services.deadlines.handler import DeadlinesHandler
from petitions.infra.http import current_principal

DIVISION_PATTERN = r"^[1-9]\d{5}$"
Caller = Annotated[Principal, Depends(current_principal)]


class CalendarYearIn(BaseModel):
    """One year of the State Council's holiday notice (国务院办公厅关于…节假日安排的通知)."""

    model_config = ConfigDict(extra="forbid")
    holidays: list[date] = Field(min_length=1, max_length=366,
                                 description="every rest day of the breaks, weekends inside "
                                             "a break included")
    swapped_workdays: list[date] = Field(default_factory=list, max_length=60,
                                         description="weekend days that are working days (调休)")
    source: str = Field("", max_length=300, description="the notice's title or document number")


def mount_routes(app: FastAPI, pool: asyncpg.Pool, book: CalendarBook,
                 handler: DeadlinesHandler, now: Callable[[], datetime]) -> None:
    @app.get("/v1/deadlines", tags=["deadlines"])
    async def list_deadlines(
        caller: Caller,
        division: Annotated[str | None, Query(pattern=DIVISION_PATTERN)] = None,
        unit: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
        state: Literal["due_soon", "overdue"] | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """Open clocks of cases in the caller's jurisdiction (narrowed by `division`), soonest
        due first; a handling unit sees only its own."""
        require(caller, Permission.READ)
        today = local_date(now())
        prefix = caller.scope_prefix(division)
        if caller.role is Role.HANDLING_UNIT and caller.unit_id:
            if unit is not None and unit != caller.unit_id:
                prefix = None
            unit = caller.unit_id
        if prefix is None:
            return {"today": today.isoformat(), "items": []}
        items = await timers.list_clocks(pool, prefix=prefix, unit=unit, state=state,
                                         today=today, limit=limit)
        return {"today": today.isoformat(), "items": items}

    @app.put("/v1/calendars/{year}", tags=["calendars"],
             responses={403: {}, 422: {}})
    async def load_calendar_year(
        body: CalendarYearIn, caller: Caller,
        year: Annotated[int, Path(ge=1900, le=2200)],
    ) -> dict[str, Any]:
        """Load (or correct) a year's holidays and swapped working days, then recompute every
        provisional deadline on the new calendar."""
        require(caller, Permission.ADMINISTER)
        entry = CalendarYear(year, tuple(body.holidays), tuple(body.swapped_workdays),
                             body.source)
        try:
            await book.store(pool, entry, caller.subject)
        except ValueError as exc:
            raise HTTPException(422, detail=str(exc)) from exc
        counts = await handler.recompute_provisional()
        return {"year": year, "holidays": len(entry.holidays),
                "swapped_workdays": len(entry.swapped_workdays), "source": entry.source,
                "known_years": sorted(book.current().known_years)[-5:],
                "recomputed": counts}

    @app.get("/v1/calendars/{year}", tags=["calendars"], responses={404: {}})
    async def get_calendar_year(caller: Caller,
                                year: Annotated[int, Path(ge=1900, le=2200)]) -> dict[str, Any]:
        require(caller, Permission.READ)
        cal = book.current()
        if not cal.knows(year):
            raise HTTPException(404, detail=f"no holiday notice loaded for {year}; deadlines "
                                            "that reach into it are provisional")
        return {"year": year,
                "holidays": sorted(d.isoformat() for d in cal.holidays if d.year == year),
                "swapped_workdays": sorted(d.isoformat() for d in cal.swapped_workdays
                                           if d.year == year)}
