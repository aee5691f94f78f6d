"""Consumers that work a batch of bus messages at a time, and what they count.

A `BatchConsumer` hands every message of one fetch to its handler at once, so the handler can
read the cases in one query and append the events of all of them in one event-store
transaction (the store serialises transactions, not events). The guarantees of
`petitions.infra.bus.Consumer` are kept: a message is acked only after the handler returned
without naming it as failed, i.e. after its effect was committed; a failed one is nak'd with
backoff and redelivered; handlers decide from stored state, so redelivery changes nothing.
"""
from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import asyncpg
from eventsourcing.persistence import IntegrityError
from prometheus_client import Counter

from petitions.infra import tracing
from petitions.infra.bus import BusMessage, Consumer, retry_delay
from petitions.infra.logs import case_bound
from petitions.infra.metrics import MESSAGES_HANDLED
from petitions.infra.offload import run_sized
from petitions.infra.pull import Puller
from petitions.infra.store import EVENTS_TABLE, CaseStore, ConcurrencyConflict, project

log = logging.getLogger(__name__)

# Writes lost to another writer of the same case (optimistic concurrency) and redone on
# fresh state: routing and deadlines both append to a case just registered.
CONFLICTS = Counter(
    "petitions_consumer_conflicts_total",
    "Case appends that lost to a concurrent writer and were decided again on fresh state",
    ["service"])


REREAD = Counter(
    "petitions_consumer_rereads_total",
    "Cases re-read just before a batch append because another writer appended to them "
    "after they were read (each one a write conflict avoided)",
    ["service"])


@dataclass
class Delivery:
    """One message of a batch: what it says, and the context its work runs in (its
    consuming span, continuing the trace in the message headers, and its case on every log
    line). Pass `context` to `CaseStore.save(contexts=...)` so the events appended for it
    carry its trace."""

    message: BusMessage
    context: contextvars.Context
    raw: Any = field(repr=False)
    _scope: AbstractContextManager[Any] | None = field(default=None, repr=False)

    @property
    def case_id(self) -> str:
        return self.message.case_id


class FetchRate:
    """Messages fetched per second over the last `window_s` seconds."""

    def __init__(self, window_s: float = 1.0, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.window_s = window_s
        self.clock = clock
        self._counts: deque[tuple[float, int]] = deque()
        self._total = 0

    def add(self, n: int) -> None:
        self._counts.append((self.clock(), n))
        self._total += n

    def per_second(self) -> float:
        horizon = self.clock() - self.window_s
        while self._counts and self._counts[0][0] < horizon:
            self._total -= self._counts.popleft()[1]
        return self._total / self.window_s


# Handles a batch; returns the failures (delivery index -> exception). Every delivery not
# named is acked: the handler must have committed its effect before returning.
BatchHandler = Callable[[Sequence[Delivery]], Awaitable[dict[int, BaseException]]]


class BatchConsumer(Consumer):
    """A durable pull consumer whose handler takes each fetched batch whole."""

    def __init__(self, bus: Any, durable: str, event_types: list[str],
                 handler: BatchHandler, *, linger: float = 0.0, linger_when_quiet: bool = True,
                 **options: Any) -> None:
        options.setdefault("batch", 100)
        super().__init__(bus, durable, event_types, _unused, **options)
        self.batch_handler = handler
        # After a short fetch, wait this long and take what arrived meanwhile into the same
        # batch: fewer, larger transactions. At a moderate rate a consumer that takes each
        # message as it comes pays a read, an append and an ack exchange for nearly every
        # event. At 200 petitions/s, routing lingering 20 ms took ~7% off the whole
        # pipeline's CPU per petition, routing and notify together 12-23%. Under a backlog
        # fetches are full and nobody lingers.
        self.linger = linger
        # False: linger only when the last second's rate says another message should come
        # within the linger. On a quiet stream a linger gathers nothing and only delays
        # (a notice at 25 petitions/s took 49 ms instead of 8).
        self.linger_when_quiet = linger_when_quiet
        self._fetched = FetchRate()

    async def _pull(self, puller: Puller, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            msgs = await self._fetch(puller)
            if not msgs:
                continue
            self._fetched.add(len(msgs))
            if self._lingers(len(msgs)):
                more = await self._more(puller, self.batch - len(msgs))
                self._fetched.add(len(more))
                msgs += more
            await self._handle_batch(msgs)

    def _lingers(self, fetched: int) -> bool:
        if not self.linger or fetched >= self.batch:
            return False
        return self.linger_when_quiet or self._fetched.per_second() * self.linger >= 1.0

    async def _more(self, puller: Puller, n: int) -> list[Any]:
        await asyncio.sleep(self.linger)
        try:
            # what came meanwhile, without waiting any longer for more
            return await puller.take(n)
        except Exception:  # a blip: go on with what we have
            return []

    async def _handle_batch(self, msgs: Sequence[Any]) -> None:
        deliveries = [d for d in [await self._open(m) for m in msgs] if d is not None]
        if not deliveries:
            return
        try:
            failures = await self.batch_handler(deliveries)
        except Exception as exc:  # the whole batch failed: nothing of it was committed
            failures = dict.fromkeys(range(len(deliveries)), exc)
        acks = []
        for i, d in enumerate(deliveries):
            exc = failures.get(i)
            if exc is None:
                acks.append(d.raw.ack())
            else:
                acks.append(self._retry(d, exc))
        await asyncio.gather(*acks, return_exceptions=True)
        for i, d in enumerate(deliveries):
            if d._scope is not None:  # a failure is already recorded on the span
                d.context.run(d._scope.__exit__, None, None, None)
        ok = len(deliveries) - len(failures)
        if ok:
            MESSAGES_HANDLED.labels(self.service, self.durable, "ok").inc(ok)
        self.handled += ok

    async def _open(self, msg: Any) -> Delivery | None:
        message = await self._parse(msg)
        if message is None:
            return None
        # Each message's work runs in a context of its own, holding its consuming span, so a
        # batch keeps one span per message and each case's appends carry their own trace.
        context = contextvars.copy_context()
        scope = _MessageScope(message.case_id, self._span(msg, message, message.deliveries))
        context.run(scope.__enter__)
        return Delivery(message, context, msg, scope)

    async def _retry(self, d: Delivery, exc: BaseException) -> None:
        d.context.run(tracing.mark_failed, exc)
        delay = retry_delay(d.message.deliveries)
        d.context.run(log.warning, "handler failed; redelivery in %.1fs", delay,
                      extra={"event_id": d.message.event_id, "consumer": self.durable},
                      exc_info=(type(exc), exc, exc.__traceback__))
        MESSAGES_HANDLED.labels(self.service, self.durable, "retry").inc()
        await d.raw.nak(delay=delay)


class _MessageScope:
    """The consuming span (the consumer's rule: see `Consumer._span`) and the bound case id of
    one message, entered and left inside the message's own context."""

    def __init__(self, case_id: str, span: AbstractContextManager[Any]) -> None:
        self._case = case_bound(case_id)
        self._span = span

    def __enter__(self) -> None:
        self._case.__enter__()
        self._span.__enter__()

    def __exit__(self, *exc: Any) -> None:
        try:
            self._span.__exit__(*exc)
        finally:
            self._case.__exit__(*exc)


HISTORIES_SQL = (
    f"SELECT originator_id, originator_version, topic, state FROM {EVENTS_TABLE} "
    "WHERE originator_id = ANY($1::uuid[]) ORDER BY originator_id, originator_version")


# Each case's newest version, by one index probe per case (LATERAL): as `= ANY(...) GROUP BY`,
# a table not analysed yet was planned as a scan of every stored event.
HEADS_SQL = (
    "SELECT c.id AS originator_id, h.head FROM unnest($1::uuid[]) AS c(id) "
    f"CROSS JOIN LATERAL (SELECT max(originator_version) AS head FROM {EVENTS_TABLE} "
    "WHERE originator_id = c.id) h WHERE h.head IS NOT NULL")


async def load_histories(pool: asyncpg.Pool, store: CaseStore, case_ids: Sequence[UUID]
                         ) -> dict[UUID, list[Any]]:
    """The domain events of several cases, read in one query and decoded as the store
    decodes them (one round trip for a batch instead of one per case)."""
    return decode_histories(store, await pool.fetch(HISTORIES_SQL, list(case_ids)))


def decode_histories(store: CaseStore, rows: Sequence[Any]) -> dict[UUID, list[Any]]:
    """Rows of `HISTORIES_SQL` as each case's domain events, in version order."""
    out: dict[UUID, list[Any]] = {}
    for r in rows:
        out.setdefault(r["originator_id"], []).append(store.decode(
            r["originator_id"], r["originator_version"], r["topic"], r["state"]))
    return out


async def moved_since_read(pool: asyncpg.Pool, histories: dict[UUID, list[Any]],
                           service: str) -> list[UUID]:
    """The cases another writer appended to since their histories were read.

    Asked just before the append of a batch: deciding a batch takes a while, and a case
    appended to meanwhile would make the whole transaction fail on optimistic concurrency
    (routing and deadlines both append to every new case); re-reading those few cases
    first is far cheaper than redoing the batch."""
    if not histories:
        return []
    rows = await pool.fetch(HEADS_SQL, list(histories))
    moved = [r["originator_id"] for r in rows
             if r["head"] != histories[r["originator_id"]][-1].originator_version]
    if moved:
        REREAD.labels(service).inc(len(moved))
    return moved


def rebuild(events: Sequence[Any]) -> Any:
    """An aggregate from its domain events, as the store's repository builds it."""
    return project(None, events)


async def decide_and_append(
        pool: asyncpg.Pool, store: CaseStore, service: str, deliveries: Sequence[Delivery],
        decide: Callable[[dict[UUID, list[Any]]],
                         tuple[dict[UUID, Any], dict[UUID, BaseException]]],
        append: Callable[[dict[UUID, Any], dict[UUID, contextvars.Context]], Awaitable[None]],
        attempts: int = 20) -> tuple[dict[UUID, Any], dict[int, BaseException]]:
    """The batch's cases read in one query, decided (`decide`; in a thread when the batch
    is large) and appended in one transaction (`append`, e.g. `CaseStore.save_async`, each
    case in the context of its first message).
    The few cases another writer appended to meanwhile are decided again first; a write
    conflict all the same stores nothing, and the batch is decided again on fresh state.
    Returns what was decided and appended, and the failures by delivery (every delivery
    fails once `attempts` writes have conflicted)."""
    contexts = first_contexts(deliveries)
    case_ids = list(contexts)
    for attempt in range(attempts):
        histories = await load_histories(pool, store, case_ids)
        decided, failed = await run_sized(decide, len(histories), histories)
        decided, failed = await decide_fresh(pool, store, service, histories, decided, failed,
                                             decide)
        try:
            await append(decided, contexts)
        except IntegrityError:
            CONFLICTS.labels(service).inc()
            await asyncio.sleep(min(0.002 * 2 ** attempt, 0.2))
            continue
        return decided, failures_by_delivery(deliveries, failed)
    error = ConcurrencyConflict(f"{len(case_ids)} cases: gave up after {attempts} "
                                "conflicting writes")
    return {}, dict.fromkeys(range(len(deliveries)), error)


async def decide_fresh(pool: asyncpg.Pool, store: CaseStore, service: str,
                       histories: dict[UUID, list[Any]], decided: dict[UUID, Any],
                       failed: dict[UUID, BaseException],
                       decide: Callable[[dict[UUID, list[Any]]],
                                        tuple[dict[UUID, Any], dict[UUID, BaseException]]],
                       ) -> tuple[dict[UUID, Any], dict[UUID, BaseException]]:
    """The batch's decisions with those of the cases another writer appended to since they
    were read made again on their fresh histories: re-reading the few that moved is
    cheaper than losing the whole batch's transaction to them."""
    moved = await moved_since_read(pool, histories, service)
    if not moved:
        return decided, failed
    fresh = await load_histories(pool, store, moved)
    again, failed_again = await run_sized(decide, len(fresh), fresh)
    return ({**{k: v for k, v in decided.items() if k not in fresh}, **again},
            {**{k: v for k, v in failed.items() if k not in fresh}, **failed_again})


def first_contexts(deliveries: Sequence[Delivery]) -> dict[UUID, contextvars.Context]:
    """Each case's context: that of its first message in the batch (its events are stored
    with that message's trace)."""
    out: dict[UUID, contextvars.Context] = {}
    for d in deliveries:
        out.setdefault(UUID(d.case_id), d.context)
    return out


def failures_by_delivery(deliveries: Sequence[Delivery],
                         failed: dict[UUID, BaseException]) -> dict[int, BaseException]:
    """The failures of cases, as the failures of every message of the batch about them."""
    if not failed:
        return {}
    return {i: failed[UUID(d.case_id)] for i, d in enumerate(deliveries)
            if UUID(d.case_id) in failed}


async def _unused(_: BusMessage) -> None:  # pragma: no cover - BatchConsumer never calls it
    raise AssertionError("a batch consumer handles batches")


def consume_batches(runtime: Any, durable: str, event_types: list[str],
                    handler: BatchHandler, **options: Any) -> BatchConsumer:
    """Like `Runtime.consume`, with a batch handler (reported and stopped like the others)."""
    options.setdefault("service", runtime.name)
    consumer = BatchConsumer(runtime.bus, durable, event_types, handler, **options)
    runtime.consumers.append(consumer)
    runtime.spawn(consumer.run(runtime.stopping), f"consumer:{durable}")
    return consumer
