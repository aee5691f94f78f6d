"""Deadlines: keep every statutory clock of a case in line with its facts, and keep its
timers in the `deadline_timers` table.

A message only says "this case changed": the handler loads the case's history from the store
and reconciles, so redelivered, duplicated or out-of-order messages all come to the same
result, and the timers upsert ignores anything computed from an older case version.
"""
from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from uuid import UUID

import asyncpg

from petitions.infra.batching import Delivery, decide_and_append
from services.deadlines import timers
from services.deadlines.engine import DEADLINES_ACTOR, ClockEngine, Reconciled

log = logging.getLogger(__name__)

__all__ = ["DEADLINES_ACTOR", "DeadlinesHandler"]


class DeadlinesHandler:
    def __init__(self, engine: ClockEngine, pool: asyncpg.Pool) -> None:
        self.engine = engine
        self.pool = pool
        self.attempts = 20

    async def process(self, case_id: UUID) -> Reconciled | None:
        """Reconcile one case's clocks and store its timers."""
        result = await asyncio.to_thread(self.engine.reconcile_case, case_id)
        if result is not None:
            await timers.upsert(self.pool, [result.timers])
            if result.appended:
                log.info("clocks updated", extra={"case_id": str(case_id),
                                                   "events": result.appended})
        return result

    async def on_batch(self, deliveries: Sequence[Delivery]) -> dict[int, BaseException]:
        """Reconcile the cases of a batch of messages: their histories in one query, their
        clock facts in one transaction, their timers in one upsert (after the commit, so a
        timer never runs ahead of the clock it stands for). A case named by several
        messages of the batch is reconciled once, on its newest history."""
        # Routing appends to the same new cases meanwhile: decide_and_append re-reads them.
        decided, failures = await decide_and_append(
            self.pool, self.engine.store, "deadlines", deliveries, self.engine.decide_many,
            functools.partial(self.engine.save_decided, self.pool), self.attempts)
        results = [result for _, result in decided.values()]
        if results:
            await timers.upsert(self.pool, [r.timers for r in results])
        appended = sum(len(r.appended) for r in results)
        if appended:
            log.debug("clocks updated", extra={"cases": len(results), "events": appended})
        return failures

    async def recompute_provisional(self, concurrency: int = 4) -> dict[str, int]:
        """After a year's calendar is loaded: reconcile every case with a provisional open
        clock (recomputing its due dates, ClockRecomputed) and store the new timers."""
        case_ids = await timers.provisional_case_ids(self.pool)
        counts = {"cases": 0, "recomputed": 0, "moved": 0}
        gate = asyncio.Semaphore(concurrency)

        async def one(case_id: UUID) -> None:
            async with gate:
                result = await self.process(case_id)
            if result is not None:
                counts["cases"] += 1
                counts["recomputed"] += result.appended.count("ClockRecomputed")
                counts["moved"] += result.appended.count("ClockMoved")

        await asyncio.gather(*(one(c) for c in case_ids))
        return counts
