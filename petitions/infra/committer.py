"""Group commit: new aggregates queued by concurrent requests are saved several per
transaction. The store's insert path serialises transactions (a table lock), so batching is
what lets intake go past the one-transaction-per-request ceiling. No artificial delay: a batch
is whatever queued while the transactions in flight were committing.

Up to `max_in_flight` transactions are in flight at once. The table lock is taken inside the
database (see CaseStore), so a second transaction does not lengthen the first one's hold: it
prepares its events, reaches the server and waits there for the lock while the first one
flushes its commit, instead of starting only after that flush. Batches are independent new
aggregates, so their commit order does not matter.

Each save keeps the context of the request that asked for it (its trace, its case), so the
trace context stored beside the events is the request's, not the committer's."""
from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from typing import Any, NamedTuple

import asyncpg
from eventsourcing.persistence import IntegrityError

from petitions.infra import tracing
from petitions.infra.logs import bind_case
from petitions.infra.metrics import COMMIT_BATCH_CASES, REGISTRATION_STAGE
from petitions.infra.store import CaseStore

log = logging.getLogger(__name__)

class _Item(NamedTuple):
    aggregate: Any
    context: contextvars.Context  # the one its save was asked in
    done: asyncio.Future[None]  # settled when saved
    queued_at: float  # time.monotonic()
_STOP: Any = object()
QUEUED = REGISTRATION_STAGE.labels("queued")
COMMITTED = REGISTRATION_STAGE.labels("commit")


class CommitterStopped(ConnectionError):
    """The service is shutting down and takes no more saves (answered as 503/UNAVAILABLE)."""


class GroupCommitter:
    def __init__(self, store: CaseStore, *, pool: asyncpg.Pool | None = None,
                 max_batch: int = 100, max_in_flight: int = 2) -> None:
        self.store = store
        self.pool = pool  # given: saves go over it (`CaseStore.save_async`), not a thread
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self.transactions = 0
        self.saved = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="group-committer")

    async def save(self, aggregate: Any) -> None:
        """Durably save a new aggregate; raises what saving it alone would raise."""
        if self._stopped:
            raise CommitterStopped("shutting down; not saving")
        bind_case(aggregate.id)
        tracing.annotate_case(aggregate.id)
        types = ",".join(sorted({type(e).__name__ for e in aggregate.pending_events}))
        with tracing.span(f"append {types}", {tracing.CASE_ID_ATTRIBUTE: str(aggregate.id)}):
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            await self._queue.put(_Item(aggregate, contextvars.copy_context(), done,
                                        time.monotonic()))
            await done

    async def _run(self) -> None:
        slots = asyncio.Semaphore(self.max_in_flight)
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while True:
                # Take a slot first: while every slot is busy, requests keep queueing and
                # become the next batch.
                await slots.acquire()
                first = await self._queue.get()
                if first is _STOP:
                    break
                batch: list[_Item] = [first]
                stop_after = False
                while len(batch) < self.max_batch and not self._queue.empty():
                    item = self._queue.get_nowait()
                    if item is _STOP:
                        stop_after = True
                        break
                    batch.append(item)
                task = asyncio.create_task(self._commit(batch))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                task.add_done_callback(lambda _: slots.release())
                if stop_after:
                    break
        except asyncio.CancelledError:
            for task in in_flight:
                task.cancel()
            raise
        # Every batch taken from the queue is committed (or settled) before stopping.
        await asyncio.gather(*in_flight, return_exceptions=True)

    async def _save(self, batch: list[_Item]) -> None:
        aggregates = [item.aggregate for item in batch]
        contexts = [item.context for item in batch]
        if self.pool is not None:
            await self.store.save_async(self.pool, *aggregates, contexts=contexts)
        else:
            await asyncio.to_thread(self.store.save, *aggregates, contexts=contexts)

    async def _commit(self, batch: list[_Item]) -> None:
        started = time.monotonic()
        for item in batch:
            QUEUED.observe(started - item.queued_at)
        try:
            await self._save(batch)
            COMMITTED.observe(time.monotonic() - started)
            COMMIT_BATCH_CASES.observe(len(batch))
            self.transactions += 1
            self.saved += len(batch)
            _settle(batch, None)
        except IntegrityError:
            # One of them conflicts (e.g. a concurrent idempotent retry): save each alone so
            # only the conflicting request sees the error.
            for item in batch:
                try:
                    await self._save([item])
                    self.transactions += 1
                    self.saved += 1
                    _settle([item], None)
                except Exception as exc:
                    _settle([item], exc)
        except Exception as exc:
            _settle(batch, exc)

    async def stop(self, timeout: float = 30.0) -> None:
        """Take no new saves, commit every save already queued, then stop."""
        self._stopped = True
        if self._task is None or self._task.done():
            return
        self._queue.put_nowait(_STOP)
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            log.warning("group committer did not finish in %ss; cancelled", timeout)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        # Nothing can be queued after _STOP (saves are refused first), but be certain.
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not _STOP:
                _settle([item], CommitterStopped("shutting down; not saved"))


def _settle(batch: list[_Item], exc: Exception | None) -> None:
    for item in batch:
        if item.done.done():
            continue
        if exc is None:
            item.done.set_result(None)
        else:
            item.done.set_exception(exc)
