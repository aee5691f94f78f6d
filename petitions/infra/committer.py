"""Group commit: new aggregates appended several per transaction. The store's insert path
serialises transactions (the append lock), so batching is what lets intake go past the
one-transaction-per-request ceiling.

Callers form the batches (intake's registration batches); this appends one. Its transactions
may overlap: the append lock is taken inside the database (see CaseStore), so a second one does
not lengthen the first one's hold: it prepares its events, reaches the server and waits there
for the lock while the first one flushes its commit. Batches are independent new aggregates,
so their commit order does not matter.

Each aggregate keeps the context of the request that asked for it (its trace, its case), so
the trace context stored beside the events is the request's, not the batch's."""
from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import asyncpg
from eventsourcing.persistence import IntegrityError

from petitions.infra.metrics import COMMIT_BATCH_CASES, REGISTRATION_STAGE
from petitions.infra.store import CaseStore

COMMITTED = REGISTRATION_STAGE.labels("commit")


class NewAggregate(NamedTuple):
    aggregate: Any
    context: contextvars.Context  # the one its save was asked in


class CommitterStopped(ConnectionError):
    """The service is shutting down and takes no more saves (answered as 503/UNAVAILABLE)."""


class GroupCommit:
    def __init__(self, store: CaseStore, *, pool: asyncpg.Pool | None = None) -> None:
        self.store = store
        self.pool = pool  # given: saves go over it (`CaseStore.save_async`), not a thread
        self.transactions = 0
        self.saved = 0

    async def append(self, batch: Sequence[NewAggregate]) -> list[Exception | None]:
        """Append the batch in one transaction. Each aggregate's answer is None when it was
        saved, or the error saving it raised: what else the transaction raises, every
        aggregate of it gets; after an IntegrityError (one of them conflicts, e.g. with a
        concurrent idempotent retry) each is appended alone, so only the conflicting one
        gets the error."""
        if not batch:
            return []
        started = time.monotonic()
        try:
            await self._save(batch)
        except IntegrityError:
            return [await self._append_alone(item) for item in batch]
        except Exception as exc:
            return [exc] * len(batch)
        COMMITTED.observe(time.monotonic() - started)
        COMMIT_BATCH_CASES.observe(len(batch))
        return [None] * len(batch)

    async def _append_alone(self, item: NewAggregate) -> Exception | None:
        try:
            await self._save([item])
        except Exception as exc:
            return exc
        return None

    async def _save(self, batch: Sequence[NewAggregate]) -> None:
        aggregates = [item.aggregate for item in batch]
        contexts = [item.context for item in batch]
        if self.pool is not None:
            await self.store.save_async(self.pool, *aggregates, contexts=contexts)
        else:
            await asyncio.to_thread(self.store.save, *aggregates, contexts=contexts)
        self.transactions += 1
        self.saved += len(batch)
