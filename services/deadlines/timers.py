"""The `deadline_timers` table: when to look at which clock of which case.

Rows are derived from the case's recorded clocks (petitions.domain.clocks.timer_rows) and
upserted with the case version they were computed from (`generation`); an upsert from an
older version than the row holds is ignored, so late or out-of-order work never undoes newer.
A tick claims due rows with `FOR UPDATE SKIP LOCKED`, so concurrent tickers never work on the
same row at once, and marks them in the transaction that holds the lock.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from uuid import UUID

import asyncpg

from petitions.domain.clocks import TimerRow
from petitions.infra.divisions import division_condition

DUE_SOON_DAYS = 3

_UPSERT = """
INSERT INTO deadline_timers AS t (case_id, clock, kind, fire_at, due_on, state, division,
                                  unit_id, obligation, provisional, generation)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::date[],
                     $6::text[], $7::text[], $8::text[], $9::text[], $10::bool[], $11::bigint[])
ON CONFLICT (case_id, clock, kind) DO UPDATE SET
    fire_at = EXCLUDED.fire_at, due_on = EXCLUDED.due_on, state = EXCLUDED.state,
    division = EXCLUDED.division, unit_id = EXCLUDED.unit_id,
    obligation = EXCLUDED.obligation, provisional = EXCLUDED.provisional,
    generation = EXCLUDED.generation, updated_at = now()
WHERE t.generation <= EXCLUDED.generation
"""

_CLAIM = """
SELECT case_id, clock, kind, due_on, obligation, generation, fire_at
  FROM deadline_timers
 WHERE state = 'pending' AND fire_at <= $1
 ORDER BY fire_at
 LIMIT $2
 FOR UPDATE SKIP LOCKED
"""

_MARK = """
UPDATE deadline_timers t
   SET state = u.state, generation = GREATEST(t.generation, u.generation), updated_at = now()
  FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[])
       AS u(case_id, clock, kind, state, generation)
 WHERE t.case_id = u.case_id AND t.clock = u.clock AND t.kind = u.kind
"""


@dataclass(frozen=True)
class CaseTimers:
    """The timers of one case, computed from the case at version `generation`."""

    case_id: UUID
    division: str
    generation: int
    rows: tuple[TimerRow, ...]


@dataclass(frozen=True)
class Mark:
    case_id: UUID
    clock: str
    kind: str
    state: str
    generation: int


Db = asyncpg.Pool | asyncpg.Connection


async def upsert(db: Db, timers: Iterable[CaseTimers]) -> None:
    cols: list[list[Any]] = [[] for _ in range(11)]
    for t in timers:
        for r in t.rows:
            for col, value in zip(cols, (t.case_id, r.clock, r.kind, r.fire_at, r.due_on,
                                         r.state, t.division, r.unit_id, r.obligation,
                                         r.provisional, t.generation), strict=True):
                col.append(value)
    if cols[0]:
        await db.execute(_UPSERT, *cols)


# Locks every timer of a case that no one else holds (this transaction's own included) and
# says whether that was all of them.
_LOCK_CASE = """
WITH held AS (SELECT 1 FROM deadline_timers WHERE case_id = $1 FOR UPDATE SKIP LOCKED)
SELECT (SELECT count(*) FROM held) = (SELECT count(*) FROM deadline_timers WHERE case_id = $1)
"""


async def lock_case_timers(conn: asyncpg.Connection, case_id: UUID) -> bool:
    """Lock all of a case's timers without waiting; False when another transaction holds one
    of them (a concurrent ticker that claimed another of its due rows). Waiting instead
    could deadlock: each ticker holds the row it claimed and would wait for the other's."""
    return bool(await conn.fetchval(_LOCK_CASE, case_id))


async def claim_due(conn: asyncpg.Connection, now: datetime, limit: int) -> list[asyncpg.Record]:
    """Lock and return up to `limit` pending timers due at `now`, oldest first. Must run inside
    a transaction: the locks are what keeps a concurrent ticker off these rows."""
    return await conn.fetch(_CLAIM, now, limit)


async def mark(conn: asyncpg.Connection, marks: Sequence[Mark]) -> None:
    if marks:
        await conn.execute(_MARK, [m.case_id for m in marks], [m.clock for m in marks],
                           [m.kind for m in marks], [m.state for m in marks],
                           [m.generation for m in marks])


async def load_events(conn: Db, case_ids: Sequence[UUID], table: str = "cases_events",
                      topics: Sequence[str] | None = None) -> list[asyncpg.Record]:
    """The stored events of several cases in one query, by case and version; with `topics`,
    the state (payload) of the other events is left out."""
    if topics is None:
        return await conn.fetch(
            f"SELECT originator_id, originator_version, topic, state FROM {table} "
            "WHERE originator_id = ANY($1::uuid[]) ORDER BY originator_id, originator_version",
            list(case_ids))
    return await conn.fetch(
        f"SELECT originator_id, originator_version, topic, "
        f"CASE WHEN topic = ANY($2::text[]) THEN state END AS state FROM {table} "
        "WHERE originator_id = ANY($1::uuid[]) ORDER BY originator_id, originator_version",
        list(case_ids), list(topics))


async def provisional_case_ids(db: Db, limit: int = 100_000) -> list[UUID]:
    rows = await db.fetch(
        "SELECT DISTINCT case_id FROM deadline_timers "
        "WHERE provisional AND kind = 'due' AND state <> 'cancelled' LIMIT $1", limit)
    return [r["case_id"] for r in rows]


async def list_clocks(db: Db, *, prefix: str, unit: str | None, state: str | None,
                      today: date, limit: int) -> list[dict[str, Any]]:
    """Open clocks (running or overdue) of cases in a jurisdiction, soonest due first.

    due_soon: still running and due within 3 days; overdue: a duty whose due date passed."""
    division, args = division_condition(prefix)  # deadline_timers_division_idx
    clauses = ["kind = 'due'", "state <> 'cancelled'", division]
    if unit:
        args.append(unit)
        clauses.append(f"unit_id = ${len(args)}")
    if state == "due_soon":
        args.append(today)
        n = len(args)
        clauses.append(f"state = 'pending' AND due_on >= ${n} AND due_on <= ${n} + "
                       f"{DUE_SOON_DAYS}")
    elif state == "overdue":
        args.append(today)
        clauses.append(f"obligation = 'duty' AND (state = 'fired' OR due_on < ${len(args)})")
    args.append(limit)
    rows = await db.fetch(
        "SELECT case_id, clock, due_on, state, division, unit_id, obligation, provisional "
        f"FROM deadline_timers WHERE {' AND '.join(clauses)} "
        f"ORDER BY due_on, case_id, clock LIMIT ${len(args)}", *args)
    return [_view(r, today) for r in rows]


def _view(r: asyncpg.Record, today: date) -> dict[str, Any]:
    overdue = r["obligation"] == "duty" and (r["state"] == "fired" or r["due_on"] < today)
    if overdue:
        state = "overdue"
    elif r["due_on"] < today:
        state = "expiring"  # a window past its last day, about to be closed by the tick
    elif (r["due_on"] - today).days <= DUE_SOON_DAYS:
        state = "due_soon"
    else:
        state = "running"
    return {"case_id": str(r["case_id"]), "clock": r["clock"], "due_on": r["due_on"].isoformat(),
            "state": state, "division": r["division"], "unit_id": r["unit_id"] or None,
            "obligation": r["obligation"], "provisional": r["provisional"]}
