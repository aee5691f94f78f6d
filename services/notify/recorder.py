"""Appending delivery outcomes to the cases, several cases per transaction.

The store serialises transactions (the append lock), so one transaction per notice
would cap notify at the store's transaction rate; outcomes queued while the previous batch was
committing go in the next one. A batch that conflicts with another writer is read again and
appended again whole; only a batch that keeps losing falls back to per-case load-apply-save
with retries. Commands decide from the case whether there is anything
to do (a notice already settled raises RuleViolation, which is ignored), so a repeat is
harmless. After the case has it, the delivery row is settled.
"""
from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

import asyncpg
from eventsourcing.persistence import IntegrityError

from petitions.domain.case import Case
from petitions.domain.errors import RuleViolation
from petitions.infra.batching import decode_histories, rebuild
from petitions.infra.store import EVENTS_TABLE, CaseStore

log = logging.getLogger(__name__)

Command = Callable[[Case], None]
Settle = Callable[[list[Any]], Awaitable[None]]


# The stored events of each given case that has gone past the version notify holds of it
# (NULL: holds none), in version order; the cases still at that version return nothing.
# Each case is looked up by its own index lookups (LATERAL, with an aggregate and an ORDER BY
# that the planner does not flatten into a join), so no plan can read every stored event: as
# a plain join, or with the "gone past" test as an EXISTS beside the LATERAL, a plan made
# while the table was small (a new database; pooled connections keep their plans) hashed the
# whole event table on every recorded batch, its cost growing with the log.
_STALE_HISTORIES = (
    f"SELECT e.originator_id, e.originator_version, e.topic, e.state "
    f"FROM unnest($1::uuid[], $2::bigint[]) AS held(case_id, version) "
    f"CROSS JOIN LATERAL (SELECT max(originator_version) AS head FROM {EVENTS_TABLE} "
    f"  WHERE originator_id = held.case_id) h "
    f"CROSS JOIN LATERAL (SELECT originator_id, originator_version, topic, state "
    f"  FROM {EVENTS_TABLE} WHERE originator_id = held.case_id "
    f"   AND h.head > coalesce(held.version, 0) "
    f"  ORDER BY originator_version) e "
    f"ORDER BY e.originator_id, e.originator_version")


# Tries of a whole batch in one transaction before its outcomes are appended one by one.
BATCH_ATTEMPTS = 3


def guarded(command: Command) -> Command:
    def run(case: Case) -> None:
        try:
            command(case)
        except RuleViolation:
            pass  # already settled by an earlier attempt or another replica

    return run


class CaseRecorder:
    def __init__(self, store: CaseStore, settle: Settle, *, pool: asyncpg.Pool,
                 max_batch: int = 256, cache_size: int = 4096, linger: float = 0.02) -> None:
        self.store = store
        self.settle = settle
        self.pool = pool
        # aggregates notify just loaded to plan an event: reused when still current
        self._cache: OrderedDict[UUID, Case] = OrderedDict()
        self.cache_size = cache_size
        self.max_batch = max_batch
        # A batch costs a version check, an append and a settle whatever its size: waiting
        # this long for more outcomes after the first makes batches several times larger
        # under a steady load. Only the recording waits; the notice has already been sent.
        self.linger = linger
        self._queue: asyncio.Queue[tuple[UUID, Command, Any, asyncio.Future[None]]] = \
            asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.transactions = 0
        self.conflicts = 0  # batches appended again because another writer came first
        self._busy = False

    def remember(self, case: Case) -> None:
        self._cache[case.id] = case
        self._cache.move_to_end(case.id)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    async def _stale_histories(self, ids: list[UUID], use_cache: bool = True
                               ) -> tuple[dict[UUID, Case], list[Any]]:
        """The batch's cases as notify last saw them where nobody has appended since, and the
        stored events of the others, in one query (another service appending between the
        planning and the recording is the rule, not the exception: the deadline clock starts
        on the same event that a notice is sent for). Without `use_cache` (a batch read
        again after a conflict) every case is read afresh."""
        cached = {i: self._cache.pop(i) for i in ids if i in self._cache} if use_cache else {}
        records = await self.pool.fetch(
            _STALE_HISTORIES, ids, [cached[i].version if i in cached else None for i in ids])
        stale = {r["originator_id"] for r in records}
        return {i: case for i, case in cached.items() if i not in stale}, records

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="notify-recorder")

    async def record(self, case_id: UUID, command: Command, outcome: Any) -> None:
        """Append to the case, then settle `outcome` (a delivery row update); waits for both."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # The caller's context goes along, so the appended event joins the petition's trace.
        await self._queue.put((case_id, command, outcome, done, contextvars.copy_context()))
        await done

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            self._busy = True
            if self.linger and self._queue.qsize() < self.max_batch:
                await asyncio.sleep(self.linger)
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._append([(c, cmd, ctx) for c, cmd, _, _, ctx in batch])
                await self.settle([o for _, _, o, _, _ in batch if o is not None])
                for _, _, _, done, _ in batch:
                    if not done.done():
                        done.set_result(None)
            except Exception as exc:
                log.warning("recording delivery outcomes failed", exc_info=True)
                for _, _, _, done, _ in batch:
                    if not done.done():
                        done.set_exception(exc)
            finally:
                self._busy = False

    async def _append(self, items: list[tuple[UUID, Command, contextvars.Context]]) -> None:
        """The batch's outcomes appended in one transaction. When another writer appended to
        one of its cases first (the deadline clock starts beside the notice: under load nearly
        every batch races it somewhere), the whole batch is read again and appended again,
        in one transaction still; only after `BATCH_ATTEMPTS` does each outcome go alone."""
        ids = list(dict.fromkeys(case_id for case_id, _, _ in items))
        use_cache = True
        for _ in range(BATCH_ATTEMPTS):
            current, records = await self._stale_histories(ids, use_cache)
            try:
                # on the loop, as planning (see Notifier._plan_events)
                cases, contexts = self._apply(items, current, records)
                await self.store.save_async(self.pool, *cases, contexts=contexts)
                self.transactions += 1
                return
            except IntegrityError:
                self.conflicts += 1
                use_cache = False
        await asyncio.to_thread(self._write_each, items)

    def _apply(self, items: list[tuple[UUID, Command, contextvars.Context]],
               current: dict[UUID, Case], records: list[Any]
               ) -> tuple[list[Case], list[list[contextvars.Context | None]]]:
        """The batch's commands applied to its cases (as held, or as read), and per case the
        context of each event they appended."""
        by_case: dict[UUID, list[tuple[Command, contextvars.Context]]] = {}
        for case_id, command, context in items:
            by_case.setdefault(case_id, []).append((guarded(command), context))
        read = {case_id: rebuild(events)
                for case_id, events in decode_histories(self.store, records).items()}
        cases, contexts = [], []
        for case_id, commands in by_case.items():
            case = current.get(case_id) or read.get(case_id)
            if case is None:
                continue  # no such case
            # each event appended in the context of the outcome it records (its trace)
            per_event: list[contextvars.Context | None] = [None] * len(case.pending_events)
            for command, context in commands:
                command(case)
                per_event += [context] * (len(case.pending_events) - len(per_event))
            cases.append(case)
            contexts.append(per_event)
        return cases, contexts

    def _write_each(self, items: list[tuple[UUID, Command, contextvars.Context]]) -> None:
        """Each outcome alone, with the store's own retries on conflict."""
        for case_id, command, context in items:
            self.store.update(case_id, guarded(command), context=context)
            self.transactions += 1

    async def stop(self, timeout: float = 10.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while ((not self._queue.empty() or self._busy)
               and asyncio.get_running_loop().time() < deadline):
            await asyncio.sleep(0.02)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
