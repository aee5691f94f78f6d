"""The case event store: eventsourcing's PostgreSQL recorder behind a small API.

eventsourcing is synchronous (psycopg 3); async callers use `asyncio.to_thread`, except for
the appends made under load, which call the append function over asyncpg (`save_async`).
Appends take turns for their whole transaction, which makes commit order equal
notification-id order, so readers tailing the log never skip an event; the append is one call
of a database function (migrations 8, 10 and 18) that takes the append lock itself, an
advisory lock that autovacuum does not block. Do not enable eventsourcing's
POSTGRES_ENABLE_DB_FUNCTIONS: its function takes no lock at all.
"""
from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias, TypeVar
from uuid import UUID

import asyncpg
from eventsourcing.application import (
    AggregateNotFoundError,
    Application,
    ProcessingEvent,
)
from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    Mapper,
    OperationalError,
    Recording,
    StoredEvent,
)
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import retry
from psycopg.sql import SQL, Identifier

from petitions.domain.case import Case
from petitions.infra.columns import as_columns
from petitions.infra.dsn import eventsourcing_env
from petitions.infra.metrics import EVENTS_APPENDED

log = logging.getLogger(__name__)
T = TypeVar("T")

EVENTS_TABLE = "cases_events"
TRACE_CONTEXT_TABLE = "event_trace_context"

# Returns what to record beside the events saved from the calling context: a W3C traceparent,
# or None. Given by petitions.infra.tracing when tracing is on; the store knows no tracing,
# it only keeps the value in event_trace_context (migration 6) for the relay to read.
TraceContextHook = Callable[[], "str | None"]
# What a save's trace context is read in, per case: one context, one per pending event, or
# None for the calling context.
SaveContext: TypeAlias = "contextvars.Context | Sequence[contextvars.Context | None] | None"


# A request waits this long for the store; longer (the database away) answers 503.
REQUEST_STORE_TIMEOUT_S = 4.0


async def in_thread(fn: Callable[..., T], *args: Any, timeout: float = REQUEST_STORE_TIMEOUT_S,
                    **kwargs: Any) -> T:
    """Run a synchronous store call off the event loop, bounded in time: eventsourcing retries
    connection failures on its own, which must not hold a client for minutes."""
    return await asyncio.wait_for(asyncio.to_thread(fn, *args, **kwargs), timeout)


class ConcurrencyConflict(Exception):
    """Another writer kept appending to the same case; the command gave up after retries."""


# `cases_append`'s arguments (migration 10): the events as four columns, their trace context
# as three, and the lock timeout in seconds.
APPEND_ARGUMENTS = ("uuid[]", "bigint[]", "text[]", "bytea[]",
                    "uuid[]", "bigint[]", "text[]", "int")


def append_arguments(stored_events: Sequence[StoredEvent],
                     trace_rows: Sequence[tuple[UUID, int, str]],
                     lock_timeout: int) -> tuple[Any, ...]:
    """The values of `APPEND_ARGUMENTS` for these events, whichever driver sends them."""
    return (*as_columns([(e.originator_id, e.originator_version, e.topic, e.state)
                         for e in stored_events], 4),
            *as_columns(trace_rows, 3), lock_timeout)


class TraceContextRecorder(PostgresApplicationRecorder):
    """eventsourcing's recorder, also writing the trace context of the events it inserts
    (`trace_context_rows`, passed to `save`) in the same transaction, before the events: a
    reader of the log that sees an event sees its trace context, and a save that fails (a
    concurrent writer took the version) leaves nothing behind.

    Once migration 10 is applied (`use_append_function`, set by CaseStore), an append is one
    statement calling `cases_append`, which takes the append lock, inserts, chains and notifies
    inside the server: the lock is held for server time only. The library's path takes the
    table's EXCLUSIVE lock in a client-driven transaction, which the function's insert waits for
    (and the other way round), so it stays correct beside this one, just slower: the lock is
    held across round trips and while the client waits for CPU."""

    APPEND_FUNCTION = "cases_append"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.use_append_function = False
        # The events as four arrays sent in binary (migration 10): an array of composite
        # values travels as text and cost more to send and parse than the insert itself.
        markers = ["%b"] * 4 + ["%s"] * (len(APPEND_ARGUMENTS) - 4)
        self._append_statement = SQL(
            "SELECT notification_id FROM {}.{}(" + ", ".join(
                f"{m}::{t}" for m, t in zip(markers, APPEND_ARGUMENTS, strict=True))
            + ") AS notification_id"
        ).format(Identifier(self.datastore.schema), Identifier(self.APPEND_FUNCTION))

    def insert_events(self, stored_events: Sequence[StoredEvent],
                      **kwargs: Any) -> Sequence[int] | None:
        if not self.use_append_function:
            return super().insert_events(stored_events, **kwargs)
        if not stored_events:
            return None
        return self._append(stored_events, kwargs.get("trace_context_rows") or ())

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def _append(self, stored_events: Sequence[StoredEvent],
                trace_rows: Sequence[tuple[UUID, int, str]]) -> list[int]:
        # Pool connections are in autocommit: this one statement is the whole transaction.
        # A duplicate (case, version) surfaces as the library's IntegrityError (callers retry).
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._append_statement,
                         append_arguments(stored_events, trace_rows, self.datastore.lock_timeout),
                         prepare=True)
            return [row["notification_id"] for row in curs.fetchall()]

    def has_append_function(self) -> bool:
        """Migration 10's `cases_append` (columns) is there; without it, the library's path."""
        signature = (f'"{self.datastore.schema}".{self.APPEND_FUNCTION}'
                     f"({', '.join(APPEND_ARGUMENTS)})")
        with self.datastore.transaction(commit=False) as curs:
            curs.execute("SELECT to_regprocedure(%s) IS NOT NULL AS present", (signature,))
            row = curs.fetchone()
        return bool(row and row["present"])

    def _insert_events(self, curs: Any, stored_events: Sequence[StoredEvent],
                       **kwargs: Any) -> None:
        super()._insert_events(curs, stored_events, **kwargs)
        rows = kwargs.get("trace_context_rows")
        if rows:
            curs.executemany(
                SQL("INSERT INTO {}.{} (originator_id, originator_version, traceparent) "
                    "VALUES (%s, %s, %s) ON CONFLICT (originator_id, originator_version) "
                    "DO UPDATE SET traceparent = EXCLUDED.traceparent").format(
                    Identifier(self.datastore.schema), Identifier(TRACE_CONTEXT_TABLE)),
                rows)


# The library asks runtime-checkable typing.Protocols whether each aggregate it saves is an
# event or collects events, and whether each event it replays can mutate: on Python 3.11 every
# such isinstance() walks the protocol's attributes, ~15 µs, more than encoding the event.
# Our aggregates and events are the library's own classes, so the answers are known.


def project(aggregate: Any, events: Any) -> Any:
    """The aggregate `events` make of `aggregate` (None: from nothing), as the library's
    `project_aggregate` makes it, without asserting each event's protocol."""
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


class CaseApplication(Application[UUID]):
    # The table is named after the application: `cases_events`.
    name = "cases"
    is_snapshotting_enabled = False

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[UUID]]:
        """As `Application.save`, collecting the pending events of aggregates directly."""
        processing_event: ProcessingEvent[UUID] = ProcessingEvent()
        for obj in objs:
            if obj is not None:
                processing_event.events.extend(obj.collect_events())
                processing_event.aggregates[obj.id] = obj
        processing_event.saved_kwargs.update(kwargs)
        recordings = self._record(processing_event)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        self.notify(processing_event.events)  # the library's deprecated hook, as it calls it
        return recordings


class CaseStore:
    def __init__(self, dsn: str, *, cipher_key: str | None = None, schema: str = "public",
                 create_table: bool = False, pool_size: int = 5, service: str = "",
                 trace_context: TraceContextHook | None = None) -> None:
        self.schema = schema
        self.service = service or "unknown"
        self.trace_context = trace_context
        env = eventsourcing_env(dsn, schema)
        if cipher_key:
            # Event state (petitioner identity, content) is AES-GCM encrypted at rest; ids,
            # versions and topics stay plain so the log can be ordered and verified.
            env["CIPHER_TOPIC"] = "eventsourcing.cryptography:AESCipher"
            env["CIPHER_KEY"] = cipher_key
        env["CREATE_TABLE"] = "y" if create_table else "n"
        env["POSTGRES_POOL_SIZE"] = str(pool_size)
        env["POSTGRES_MAX_OVERFLOW"] = str(pool_size)
        env["POSTGRES_PRE_PING"] = "y"
        env["POSTGRES_CONNECT_TIMEOUT"] = "2"
        env["APPLICATION_RECORDER_TOPIC"] = "petitions.infra.store:TraceContextRecorder"
        env["MAPPER_TOPIC"] = "petitions.infra.mapper:CaseEventMapper"
        self.app = CaseApplication(env=env)
        recorder = self.app.recorder
        if isinstance(recorder, TraceContextRecorder):
            recorder.use_append_function = recorder.has_append_function()
        if trace_context is not None and not self._has_trace_context_table():
            log.warning("table %s missing (migration 6 not applied): trace context is not "
                        "stored with events", TRACE_CONTEXT_TABLE)
            self.trace_context = None

    def _has_trace_context_table(self) -> bool:
        with self.app.recorder.datastore.transaction(commit=False) as cursor:  # type: ignore[attr-defined]
            cursor.execute("SELECT to_regclass(%s) IS NOT NULL AS present",
                           (f'"{self.schema}".{TRACE_CONTEXT_TABLE}',))
            row = cursor.fetchone()
        return bool(row and row["present"])

    @property
    def mapper(self) -> Mapper[UUID]:
        return self.app.mapper

    def get(self, case_id: UUID) -> Case | None:
        try:
            return self.app.repository.get(case_id, projector_func=project)
        except AggregateNotFoundError:
            return None

    def get_at_version(self, case_id: UUID, version: int) -> Case | None:
        try:
            return self.app.repository.get(case_id, version=version, projector_func=project)
        except AggregateNotFoundError:
            return None

    def save(self, *cases: Case, contexts: Sequence[SaveContext] | None = None) -> None:
        """Append the cases' pending events (one transaction).

        `contexts`, one per case, are the contexts the saves were asked for in (a group commit
        saves many requests' cases at once); the trace context stored beside each case's
        events is read in its own. One case's item may also be a context per pending event,
        for events asked for on behalf of different triggers. By default, the calling context.
        """
        pending = _pending(cases)
        rows = self._trace_context_rows(pending, contexts)
        # eventsourcing takes the pending events off the aggregates before it inserts them;
        # give them back when the insert fails, so that the caller can save the same
        # aggregates again (a group commit saves each alone after a conflict).
        events_of = [list(case.pending_events) for case in cases]
        try:
            if rows:
                self.app.save(*cases, trace_context_rows=rows)
            else:
                self.app.save(*cases)
        except Exception:
            for case, events in zip(cases, events_of, strict=True):
                if not case.pending_events:
                    case.pending_events.extend(events)
            raise
        self._count_appended(pending)

    async def save_async(self, pool: asyncpg.Pool, *cases: Case,
                         contexts: Sequence[SaveContext] | None = None) -> None:
        """As `save`, as one call of the append function (migration 10) over an asyncpg
        pool: no thread, no second driver and its pool's liveness probe per save, on the
        paths that save under load. Without the function, `save` in a thread."""
        recorder = self.app.recorder
        if not getattr(recorder, "use_append_function", False):
            await asyncio.to_thread(self.save, *cases, contexts=contexts)
            return
        pending = _pending(cases)
        trace_rows = self._trace_context_rows(pending, contexts)
        stored = [self.mapper.to_stored_event(e) for case in cases for e in case.pending_events]
        if not stored:
            return
        try:
            await pool.fetch(self._append_sql, *append_arguments(
                stored, trace_rows, recorder.datastore.lock_timeout))
        except asyncpg.IntegrityConstraintViolationError as e:
            # another writer took one of the versions: the library's error, as `save` raises
            raise IntegrityError(str(e)) from e
        for case in cases:
            case.collect_events()  # saved: no longer pending
        self._count_appended(pending)

    @property
    def _append_sql(self) -> str:
        placeholders = ", ".join(f"${n}::{t}" for n, t in enumerate(APPEND_ARGUMENTS, 1))
        return (f'SELECT notification_id FROM "{self.schema}".'
                f"{TraceContextRecorder.APPEND_FUNCTION}({placeholders}) AS notification_id")

    def _count_appended(self, pending: list[tuple[UUID, list[tuple[int, str]]]]) -> None:
        for _, events in pending:
            for _, event_type in events:
                EVENTS_APPENDED.labels(self.service, event_type).inc()

    def _trace_context_rows(self, pending: list[tuple[UUID, list[tuple[int, str]]]],
                            contexts: Sequence[SaveContext] | None,
                            ) -> list[tuple[UUID, int, str]]:
        hook = self.trace_context
        if hook is None:
            return []
        rows = []
        for i, (case_id, events) in enumerate(pending):
            context = contexts[i] if contexts is not None else None
            per_event = (context if isinstance(context, (list, tuple))
                         else [context] * len(events))
            for (version, _), one in zip(events, per_event, strict=True):
                traceparent = one.run(hook) if one is not None else hook()
                if traceparent:
                    rows.append((case_id, version, traceparent))
        return rows

    def history(self, case_id: UUID) -> list[Any]:
        return list(self.app.events.get(case_id))

    def update(self, case_id: UUID, command: Callable[[Case], None], *, attempts: int = 20,
               context: contextvars.Context | None = None) -> Case | None:
        """Load, run `command`, save; on an optimistic-concurrency conflict reload and retry.

        `command` must be safe to re-run on fresh state (it decides from the case whether there
        is anything to do). `context`: the one the update was asked for in (its trace context
        is stored with the events), by default the calling one. Returns the case, or None when
        it does not exist.
        """
        for attempt in range(attempts):
            case = self.get(case_id)
            if case is None:
                return None
            command(case)
            try:
                self.save(case, contexts=None if context is None else [context])
                return case
            except IntegrityError:
                # Someone appended the same version first: back off a little and retry.
                time.sleep(min(0.002 * 2**attempt, 0.2))
        raise ConcurrencyConflict(f"case {case_id}: gave up after {attempts} conflicting writes")

    def decode(self, originator_id: UUID, version: int, topic: str, state: bytes) -> Any:
        return self.mapper.to_domain_event(
            StoredEvent(originator_id=originator_id, originator_version=version,
                        topic=topic, state=state)
        )

    def close(self) -> None:
        self.app.close()


def _pending(cases: Sequence[Case]) -> list[tuple[UUID, list[tuple[int, str]]]]:
    """Each case's pending events as (version, type name)."""
    return [(case.id, [(e.originator_version, type(e).__name__) for e in case.pending_events])
            for case in cases]
