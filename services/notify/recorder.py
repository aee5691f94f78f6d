"""Appending delivery outcomes to the cases, several cases per transaction.

The store serialises transactions (a table lock on insert), so one transaction per notice
would cap notify at the store's transaction rate; outcomes queued while the previous batch was
committing go in the next one. A batch that conflicts with another writer falls back to
per-case load-apply-save with retries. Commands decide from the case whether there is anything
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
from petitions.infra.store import EVENTS_TABLE, CaseStore

log = logging.getLogger(__name__)

Command = Callable[[Case], None]
Settle = Callable[[list[Any]], Awaitable[None]]


def guarded(command: Command) -> Command:
    def run(case: Case) -> None:
        try:
            command(case)
        except RuleViolation:
            pass  # already settled by an earlier attempt or another replica

    return run


class CaseRecorder:
    def __init__(self, store: CaseStore, settle: Settle, *, pool: asyncpg.Pool | None = None,
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
        self._busy = False

    def remember(self, case: Case) -> None:
        self._cache[case.id] = case
        self._cache.move_to_end(case.id)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    async def _current_versions(self, ids: list[UUID]) -> dict[UUID, int]:
        if self.pool is None or not any(i in self._cache for i in ids):
            return {}
        rows = await self.pool.fetch(
            f"SELECT originator_id, max(originator_version) AS v FROM {EVENTS_TABLE} "
            f"WHERE originator_id = ANY($1::uuid[]) GROUP BY originator_id", ids)
        return {r["originator_id"]: r["v"] for r in rows}

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
                versions = await self._current_versions(list({c for c, *_ in batch}))
                await asyncio.to_thread(self._write, [(c, cmd, ctx) for c, cmd, _, _, ctx in batch],
                                        versions)
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

    def _write(self, items: list[tuple[UUID, Command, contextvars.Context]],
               versions: dict[UUID, int]) -> None:
        by_case: dict[UUID, list[tuple[Command, contextvars.Context]]] = {}
        for case_id, command, context in items:
            by_case.setdefault(case_id, []).append((guarded(command), context))
        cases, contexts = [], []
        for case_id, commands in by_case.items():
            case = self._cache.pop(case_id, None)
            if case is None or versions.get(case_id) != case.version:
                case = self.store.get(case_id)
            if case is None:
                continue
            # each event appended in the context of the outcome it records (its trace)
            per_event: list[contextvars.Context | None] = [None] * len(case.pending_events)
            for command, context in commands:
                command(case)
                per_event += [context] * (len(case.pending_events) - len(per_event))
            cases.append(case)
            contexts.append(per_event)
        try:
            self.store.save(*cases, contexts=contexts)
            self.transactions += 1
        except IntegrityError:
            # someone else appended to one of them meanwhile: each outcome alone, with retries
            for case_id, commands in by_case.items():
                for command, context in commands:
                    self.store.update(case_id, command, context=context)
                    self.transactions += 1

    async def stop(self, timeout: float = 10.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while ((not self._queue.empty() or self._busy)
               and asyncio.get_running_loop().time() < deadline):
            await asyncio.sleep(0.02)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
