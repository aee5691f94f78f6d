"""The tick: fire the timers that are due, each exactly once in the case's history.

Each batch runs in one PostgreSQL transaction that claims due rows with `FOR UPDATE SKIP
LOCKED` (a concurrent ticker skips them), appends the case events (a separate transaction in
the event store), and marks the rows in the claiming transaction. A crash or cancellation
between the append and the mark leaves the rows pending; the next tick re-claims them, finds
the event already in the case, appends nothing, and marks them. A case whose timers must be
recomputed (stale rows) is recomputed only when this transaction can lock all of its timers
without waiting; otherwise a concurrent ticker holds one, and the stale rows wait for the next
tick (waiting could deadlock: each would hold a row the other needs). Time comes from `now`,
so tests move a clock instead of waiting.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from services.deadlines import timers
from services.deadlines.engine import CLOCK_TOPICS, ClockEngine

log = logging.getLogger(__name__)


@dataclass
class TickReport:
    claimed: int = 0
    events: int = 0
    batches: int = 0


class Ticker:
    def __init__(self, engine: ClockEngine, pool: asyncpg.Pool, now: Callable[[], datetime],
                 *, batch: int = 1000, workers: int = 2,
                 events_table: str = "cases_events") -> None:
        self.engine = engine
        self.pool = pool
        self.now = now
        self.batch = batch
        # Batches in flight at once, each on its own connection (SKIP LOCKED keeps them
        # apart): one decodes and decides while another waits on the database.
        self.workers = workers
        self.events_table = events_table

    async def tick(self) -> TickReport:
        """Fire everything due now, batch by batch, until nothing due is left unclaimed."""
        now = self.now()
        report = TickReport()

        async def worker() -> None:
            while await self._batch(now, report) >= self.batch:
                pass

        await asyncio.gather(*(worker() for _ in range(self.workers)))
        return report

    async def _batch(self, now: datetime, report: TickReport) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await timers.claim_due(conn, now, self.batch)
            if not rows:
                return 0
            events = await self.work(conn, rows, now)
        report.claimed += len(rows)
        report.events += events
        report.batches += 1
        return len(rows)

    async def work(self, conn: asyncpg.Connection, rows: list[asyncpg.Record],
                   now: datetime) -> int:
        """Fire the claimed `rows` and mark them, in `conn`'s transaction (the one holding
        their locks); returns the number of events appended."""
        case_ids = list({r["case_id"] for r in rows})
        stored = await timers.load_events(conn, case_ids, self.events_table, CLOCK_TOPICS)
        outcome = await asyncio.to_thread(self.engine.fire_batch, rows, stored, now)
        marks = list(outcome.marks)
        for case_id, stale_rows in outcome.stale.items():
            marks += await self._reconcile(conn, case_id, stale_rows)
        await timers.mark(conn, marks)
        return outcome.events

    async def _reconcile(self, conn: asyncpg.Connection, case_id: UUID,
                         stale_rows: list[Mapping[str, Any]]) -> list[timers.Mark]:
        """The rows no longer match the case's clock (a change whose timers were not stored
        yet): compute the case's timers afresh under locks on all of them; a row the case no
        longer needs at all is cancelled. When another ticker holds one of the case's rows
        (it claimed another of them), the stale rows stay pending for the next tick."""
        if not await timers.lock_case_timers(conn, case_id):
            log.info("stale timers left for the next tick: another ticker holds the case's",
                     extra={"case_id": str(case_id)})
            return []
        result = await asyncio.to_thread(self.engine.reconcile_case, case_id)
        needed = set()
        if result is not None:
            await timers.upsert(conn, [result.timers])
            needed = {(t.clock, t.kind) for t in result.timers.rows}
        generation = result.timers.generation if result is not None else 0
        return [timers.Mark(case_id, r["clock"], r["kind"], "cancelled",
                            max(generation, r["generation"]))
                for r in stale_rows if (r["clock"], r["kind"]) not in needed]


async def run_ticker(ticker: Ticker, refresh: Callable[[], object], stopping: asyncio.Event,
                     interval: float) -> None:
    """Tick every `interval` seconds until `stopping`; a failed tick is logged and retried."""
    while not stopping.is_set():
        try:
            await refresh()  # type: ignore[misc]
            report = await ticker.tick()
            if report.claimed:
                log.info("timers fired", extra={"claimed": report.claimed,
                                                "events": report.events})
        except Exception:
            log.warning("tick failed; retrying", exc_info=True)
        try:
            await asyncio.wait_for(stopping.wait(), interval)
        except TimeoutError:
            pass


_GAUGES = """
SELECT clock,
       count(*) FILTER (WHERE state = 'pending' AND due_on >= $1) AS due,
       count(*) FILTER (WHERE obligation = 'duty' AND (state = 'fired' OR due_on < $1))
           AS overdue
  FROM deadline_timers
 WHERE kind = 'due' AND state <> 'cancelled'
 GROUP BY clock
"""


async def report_gauges(pool: asyncpg.Pool, now: Callable[[], datetime],
                        stopping: asyncio.Event, interval: float) -> None:
    """petitions_timers_due / petitions_timers_overdue by clock, every `interval` seconds
    (a count over the open timers: kept off the tick's path)."""
    from petitions.domain.values import local_date
    from petitions.infra.metrics import TIMERS_DUE, TIMERS_OVERDUE

    seen: set[str] = set()
    while not stopping.is_set():
        try:
            rows = await pool.fetch(_GAUGES, local_date(now()))
            current = set()
            for r in rows:
                TIMERS_DUE.labels(r["clock"]).set(r["due"])
                TIMERS_OVERDUE.labels(r["clock"]).set(r["overdue"])
                current.add(r["clock"])
            for clock in seen - current:
                TIMERS_DUE.labels(clock).set(0)
                TIMERS_OVERDUE.labels(clock).set(0)
            seen = current
        except Exception:
            log.warning("timer gauges not updated", exc_info=True)
        try:
            await asyncio.wait_for(stopping.wait(), interval)
        except TimeoutError:
            pass
