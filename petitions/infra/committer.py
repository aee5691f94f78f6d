"""Group commit: new aggregates queued by concurrent requests are saved several per
transaction. The store's insert path serialises transactions (a table lock), so batching is
what lets intake go past the one-transaction-per-request ceiling. No artificial delay: a batch
is whatever queued while the transactions in flight were committing (a `Coalescer`).

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
from petitions.infra.coalesce import Coalescer
from petitions.infra.logs import bind_case
from petitions.infra.metrics import COMMIT_BATCH_CASES, REGISTRATION_STAGE
from petitions.infra.store import CaseStore

log = logging.getLogger(__name__)


class _Item(NamedTuple):
    aggregate: Any
    context: contextvars.Context  # the one its save was asked in
    queued_at: float  # time.monotonic()


QUEUED = REGISTRATION_STAGE.labels("queued")
COMMITTED = REGISTRATION_STAGE.labels("commit")


class CommitterStopped(ConnectionError):
    """The service is shutting down and takes no more saves (answered as 503/UNAVAILABLE)."""


class GroupCommitter:
    def __init__(self, store: CaseStore, *, pool: asyncpg.Pool | None = None,
                 max_batch: int = 100, max_in_flight: int = 2) -> None:
        self.store = store
        self.pool = pool  # given: saves go over it (`CaseStore.save_async`), not a thread
        # Each save's answer is the error saving it raised, or None.
        self._batches: Coalescer[_Item, Exception | None] = Coalescer(
            self._commit, max_batch=max_batch, max_in_flight=max_in_flight)
        self._stopped = False
        self.transactions = 0
        self.saved = 0

    async def save(self, aggregate: Any) -> None:
        """Durably save a new aggregate; raises what saving it alone would raise."""
        if self._stopped:
            raise CommitterStopped("shutting down; not saving")
        bind_case(aggregate.id)
        tracing.annotate_case(aggregate.id)
        types = ",".join(sorted({type(e).__name__ for e in aggregate.pending_events}))
        with tracing.span(f"append {types}", {tracing.CASE_ID_ATTRIBUTE: str(aggregate.id)}):
            error = await self._batches.call(
                _Item(aggregate, contextvars.copy_context(), time.monotonic()))
        if error is not None:
            raise error

    async def _save(self, batch: list[_Item]) -> None:
        aggregates = [item.aggregate for item in batch]
        contexts = [item.context for item in batch]
        if self.pool is not None:
            await self.store.save_async(self.pool, *aggregates, contexts=contexts)
        else:
            await asyncio.to_thread(self.store.save, *aggregates, contexts=contexts)

    async def _commit(self, batch: list[_Item]) -> list[Exception | None]:
        """One transaction for the batch; what else it raises, every save of it raises."""
        started = time.monotonic()
        for item in batch:
            QUEUED.observe(started - item.queued_at)
        try:
            await self._save(batch)
        except IntegrityError:
            # One of them conflicts (e.g. a concurrent idempotent retry): save each alone so
            # only the conflicting request sees the error.
            return [await self._commit_alone(item) for item in batch]
        COMMITTED.observe(time.monotonic() - started)
        COMMIT_BATCH_CASES.observe(len(batch))
        self.transactions += 1
        self.saved += len(batch)
        return [None] * len(batch)

    async def _commit_alone(self, item: _Item) -> Exception | None:
        try:
            await self._save([item])
        except Exception as exc:
            return exc
        self.transactions += 1
        self.saved += 1
        return None

    async def stop(self, timeout: float = 30.0) -> None:
        """Take no new saves, commit every save already queued, then stop."""
        self._stopped = True
        try:
            await asyncio.wait_for(self._batches.idle(), timeout)
        except TimeoutError:
            log.warning("group committer did not finish in %ss; cancelled", timeout)
            self._batches.abandon(CommitterStopped("shutting down; not saved"))
