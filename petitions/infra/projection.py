"""The case summary projection: follows the event log and keeps `case_summaries` current.

Each batch's rows and the reader position are written in one transaction, so a crash never
applies an event twice or skips one.

A rebuild reads the log case by case from one snapshot, folds each case once, COPYs the rows
into a fresh table and swaps it in with the position of that snapshot, in one transaction:
queries keep reading the old table meanwhile, and the live projector resumes exactly where
the rebuild stopped.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
import re
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from operator import itemgetter
from typing import Any
from uuid import UUID

import asyncpg

from petitions.domain.matching import content_fingerprint
from petitions.domain.summary import apply_event, refresh_derived
from petitions.infra import jsoncodec
from petitions.infra.eventlog import EventLog, LogWaker, Positions
from petitions.infra.events import (
    CASE_EVENT_TOPIC_PREFIX,
    EventDecoder,
    GenericDecoder,
    LoggedEvent,
    fold_stored,
)
from petitions.infra.pools import holds_session_state
from petitions.infra.store import EVENTS_TABLE
from petitions.infra.unflushed import UNFLUSHED

log = logging.getLogger(__name__)

READER = "projection:case_summaries"
PROJECTION_LOCK_KEY = 727_100_003
# How long the projector lets commits gather after one wakes it. A batch costs about ten round
# trips and a transaction whatever its size, and under a steady load nearly every commit woke
# a batch of its own; a read model this much later than the log is not noticed by its readers
# (a case's own page folds straight from its events).
GATHER_S = 0.05


# The summaries of a batch's cases, each read by its own primary-key lookup (a LATERAL the
# planner may not flatten: OFFSET 0). As `case_id = ANY($1)`, a plan made while the table was
# small (a new database; pooled connections keep their plans) scanned every summary on every
# batch, its cost growing with the number of cases.
_CURRENT_SUMMARIES = (
    "SELECT s.case_id, s.summary, s.registered_position FROM unnest($1::uuid[]) AS c(id) "
    "CROSS JOIN LATERAL (SELECT case_id, summary, registered_position FROM case_summaries "
    "WHERE case_id = c.id OFFSET 0) s")


class CaseSummaryProjection:
    def __init__(self, pool: asyncpg.Pool, log_: EventLog, *, batch: int = 1000,
                 decoder: EventDecoder | GenericDecoder | None = None,
                 gather_s: float = GATHER_S) -> None:
        self.pool = pool
        self.log = log_
        self.positions = Positions(pool)
        self.batch = batch
        self.gather_s = gather_s
        self.position = 0
        self.maybe_behind = False  # the last read was a full batch: more may be waiting
        self.decoder = decoder or EventDecoder.for_decode(log_.decode)

    async def run(self, stopping: asyncio.Event, poll_interval: float = 0.5) -> None:
        """Follow the log. Several replicas may run this; an advisory lock picks one."""
        waker = LogWaker()
        while not stopping.is_set():
            try:
                await waker.start(self.pool)
                try:
                    while not stopping.is_set():
                        # After a short batch, the next commit's NOTIFY says when to read
                        # again (one that came meanwhile wakes the wait at once); then the
                        # commits of the next `gather_s` are read with it, in one batch.
                        if not await self.catch_up_once() or not self.maybe_behind:
                            await waker.wait(poll_interval)
                            if self.gather_s and not stopping.is_set():
                                await asyncio.sleep(self.gather_s)
                finally:
                    await waker.stop()
            except Exception:
                log.warning("projection interrupted; retrying", exc_info=True)
                await asyncio.sleep(1.0)

    async def catch_up_once(self) -> bool:
        """Apply the next batch; False when there was nothing new."""
        async with self.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval(_LOCK_UNFLUSHED, PROJECTION_LOCK_KEY):
                return False
            position = await self.positions.get(READER, conn)
            events = await self.log.read_after(position, self.batch, conn)
            self.maybe_behind = len(events) >= self.batch
            if not events:
                self.position = position
                return False
            # Other aggregates (the routing configuration) share the log but not this view.
            case_events = [e for e in events if e.is_case_event]
            if case_events:
                await self._apply(conn, case_events)
            self.position = events[-1].position
            await self.positions.set(READER, self.position, conn)
            return True

    async def catch_up(self) -> int:
        while await self.catch_up_once():
            pass
        return self.position

    async def rebuild(self, *, fetch: int = 10_000, copy_rows: int = 2_000,
                      workers: int = 1, dsn: str | None = None) -> int:
        """Replace the read model by the whole log folded afresh; returns the position it
        reached (the live projector goes on from there).

        With `workers` > 1 and the database's `dsn`, forked processes fold disjoint ranges of
        case ids beside this one, all from the same snapshot (folding is CPU-bound Python)."""
        async with self.pool.acquire() as conn:
            holds_session_state(conn)
            # Session-level, taken before the snapshot: no projector commits a batch between
            # the snapshot the log is read from and the position stored with its result.
            await conn.execute("SELECT pg_advisory_lock($1)", PROJECTION_LOCK_KEY)
            try:
                position = await self._rebuild_locked(
                    conn, fetch, copy_rows, workers if dsn else 1, dsn)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", PROJECTION_LOCK_KEY)
        self.position = position
        return await self.catch_up()

    async def _rebuild_locked(self, conn: asyncpg.Connection, fetch: int, copy_rows: int,
                              workers: int, dsn: str | None) -> int:
        # The new table is committed before the snapshot, so that a second connection can
        # COPY into it while this one reads and folds (the server parses one batch while
        # Python folds the next). A rebuild that died left it behind: start afresh.
        await conn.execute(f"DROP TABLE IF EXISTS {_NEXT}")
        await conn.execute(f"CREATE TABLE {_NEXT} (LIKE case_summaries INCLUDING ALL "
                           f"EXCLUDING INDEXES) WITH ({_STORAGE})")
        try:
            async with _writer(self.pool, conn) as writer:
                # One snapshot for the whole log, and its newest position.
                async with conn.transaction(isolation="repeatable_read"):
                    position = int(await conn.fetchval(
                        f"SELECT coalesce(max(notification_id), 0) FROM {EVENTS_TABLE}"))
                    ranges = _case_ranges(workers)
                    forked = []
                    if len(ranges) > 1:
                        snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
                        forked = [_fork(dsn, snapshot, r, self.decoder, fetch, copy_rows)
                                  for r in ranges[1:]]
                    try:
                        await _fill(conn, writer, self.decoder, fetch, copy_rows, ranges[0])
                    finally:
                        failed = [p.exitcode for p in await _joined(forked) if p.exitcode]
                    if failed:
                        raise RuntimeError(f"projection rebuild: a worker failed ({failed})")
                # Indexes and statistics before the swap, so that readers of the old table
                # wait only for the renames; the lock still keeps projectors out.
                async with _unflushed(conn, writer):
                    renames = await _build_indexes(conn, writer)
                    await writer.execute(f"ANALYZE {_NEXT}")
                async with writer.transaction():
                    await _swap_in(writer, renames)
                    await self.positions.set(READER, position, writer)
        finally:
            await conn.execute(f"DROP TABLE IF EXISTS {_NEXT}")  # left only by a failure
        return position

    async def _apply(self, conn: asyncpg.Connection, events: list[LoggedEvent]) -> None:
        ids = list({e.case_id for e in events})
        rows = await conn.fetch(_CURRENT_SUMMARIES, ids)
        current: dict[UUID, dict[str, Any]] = {
            r["case_id"]: jsoncodec.loads(r["summary"].encode()) for r in rows}
        first_seen: dict[UUID, int] = {r["case_id"]: r["registered_position"] for r in rows}
        keys: dict[UUID, tuple[str | None, str]] = {}
        for e in events:
            if e.type == "Registered":
                keys[e.case_id] = _matching_keys(e.data)
            # The summaries were just read or made here: folding in place is safe.
            current[e.case_id] = apply_event(
                current.get(e.case_id), str(e.case_id), e.type, e.version,
                e.recorded_at.isoformat(), e.data,
            )
            first_seen.setdefault(e.case_id, e.position)
        for case_id in {e.case_id for e in events}:
            refresh_derived(current[case_id])  # derived fields once per case and batch
        await conn.executemany(UPSERT, [
            _row(case_id, s, first_seen[case_id], keys.get(case_id, (None, None)))
            for case_id, s in current.items() if s.get("case_number") is not None
        ])


# The batch's commit does not wait for the disk: a batch lost in a crash, its rows and the
# position with them, is applied again from the log. The wait was a WAL flush per batch,
# queued with the appends' own (theirs hold the append lock until flushed).
_LOCK_UNFLUSHED = f"SELECT pg_try_advisory_xact_lock($1) FROM {UNFLUSHED}"

UPSERT = """
INSERT INTO case_summaries (case_id, case_number, division, status, category, channel, unit_id,
    registered_at, registered_position, version, summary, petitioner_key, content_digest,
    re_review_issued)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8::timestamptz, $9, $10, $11::json, $12, $13, $14)
ON CONFLICT (case_id) DO UPDATE SET
    status = EXCLUDED.status, unit_id = EXCLUDED.unit_id, division = EXCLUDED.division,
    version = EXCLUDED.version, summary = EXCLUDED.summary,
    re_review_issued = EXCLUDED.re_review_issued,
    petitioner_key = COALESCE(EXCLUDED.petitioner_key, case_summaries.petitioner_key),
    content_digest = COALESCE(EXCLUDED.content_digest, case_summaries.content_digest)
"""


def _matching_keys(registered: dict[str, Any]) -> tuple[str | None, str]:
    """Keys to recognise the same petitioner and the same content again (never identity)."""
    return (registered.get("petitioner_key") or None,
            content_fingerprint(registered["division"], registered["category"],
                                registered["content"]))


def _row(case_id: UUID, s: dict[str, Any], position: int,
         keys: tuple[str | None, str | None],
         encode: Callable[[dict[str, Any]], Any] | None = None) -> tuple[Any, ...]:
    return (
        case_id, s["case_number"], s["division"], s["status"], s["category"], s["channel"],
        (s.get("unit") or {}).get("unit_id"), datetime.fromisoformat(s["registered_at"]),
        position, s["version"], (encode or _summary_text)(s), keys[0], keys[1],
        re_review_issued(s),
    )


def re_review_issued(s: dict[str, Any]) -> bool:
    """Whether the summary records a re-review opinion issued: the column the screening of
    a terminated matter reads (migration 16), as `summary->'re_review'->>'issued_on' IS NOT
    NULL` would have it."""
    re_review = s.get("re_review")
    return isinstance(re_review, dict) and re_review.get("issued_on") is not None


def _summary_json(s: dict[str, Any]) -> bytes:
    """The summary as UTF-8 JSON for its json column (migration 17), compact as the API
    returns it; the standard encoder was a fifth of a rebuild's CPU."""
    return jsoncodec.dumps(s)


def _summary_text(s: dict[str, Any]) -> str:
    return _summary_json(s).decode()


# -- rebuild ----------------------------------------------------------------------------------

_NEXT = "case_summaries_rebuild"
_COLUMNS = ("case_id", "case_number", "division", "status", "category", "channel", "unit_id",
            "registered_at", "registered_position", "version", "summary", "petitioner_key",
            "content_digest", "re_review_issued")
# Case events, case by case in version order (the primary key's order); other aggregates'
# events share the log but not this view, and are never decoded.
_CASE_ROWS = (f"SELECT originator_id, originator_version, topic, state, notification_id "
              f"FROM {EVENTS_TABLE} WHERE starts_with(topic, $1) "
              f"AND originator_id >= $2 AND ($3::uuid IS NULL OR originator_id < $3) "
              f"ORDER BY originator_id, originator_version")
CaseRange = tuple[UUID, UUID | None]
# The server reads a range of the log and sorts it by case: in memory, rather than through
# temporary files, while the range is tens of megabytes (for this transaction only).
_SORT_MEMORY = "SET LOCAL work_mem = '64MB'"
# A summary (about 2 kB of JSON) stays in its row uncompressed unless the row outgrows a
# page: compressing every one on COPY was a third of the server's work in a rebuild (and
# every read of a summary paid to decompress it), for a table about 40% smaller.
_STORAGE = "toast_tuple_target = 8160, fillfactor = 75"  # as migrations 9 and 16 set
_CASE_ID = itemgetter(0)
_INDEXES = """
SELECT c.relname AS name, pg_get_indexdef(i.indexrelid) AS definition,
       con.conname AS constraint_name, con.contype::text AS constraint_type
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid
WHERE i.indrelid = 'case_summaries'::regclass ORDER BY c.relname
"""
_INDEX_DEF = re.compile(r"^(CREATE (?:UNIQUE )?INDEX )(\S+)( ON (?:ONLY )?)(\S+)( USING .*)$",
                        re.DOTALL)


@contextlib.asynccontextmanager
async def _writer(pool: asyncpg.Pool, reader: asyncpg.Connection
                  ) -> AsyncIterator[asyncpg.Connection]:
    """A second connection for the COPYs, or the reading one when the pool has no other."""
    if pool.get_max_size() < 2:
        yield reader
        return
    async with pool.acquire() as writer:
        # its session settings change while it COPYs (`_unflushed`): reset whatever happens
        yield holds_session_state(writer)


def _case_ranges(n: int) -> list[CaseRange]:
    """`n` ranges of case ids about as full as each other (ids are random UUIDs)."""
    bounds = [UUID(int=(i << 128) // n) for i in range(n)]
    return [(lo, bounds[i + 1] if i + 1 < n else None) for i, lo in enumerate(bounds)]


def _fork(dsn: str | None, snapshot: str, case_range: CaseRange,
          decoder: EventDecoder | GenericDecoder, fetch: int,
          copy_rows: int) -> multiprocessing.process.BaseProcess:
    # Forked, not spawned: the child starts at once with the modules and the decoder (its
    # key) it needs, and touches nothing else of the parent's.
    process = multiprocessing.get_context("fork").Process(
        target=_worker, args=(dsn, snapshot, case_range, decoder, fetch, copy_rows),
        daemon=True)
    process.start()
    return process


async def _joined(processes: list[multiprocessing.process.BaseProcess]
                  ) -> list[multiprocessing.process.BaseProcess]:
    for p in processes:
        await asyncio.to_thread(p.join)
    return processes


def _worker(dsn: str, snapshot: str, case_range: CaseRange,
            decoder: EventDecoder | GenericDecoder, fetch: int, copy_rows: int) -> None:
    code = 1
    try:
        asyncio.run(_work(dsn, snapshot, case_range, decoder, fetch, copy_rows))
        code = 0
    except BaseException:  # noqa: BLE001 - reported to the parent by the exit code
        log.exception("projection rebuild worker failed")
    finally:
        # No interpreter shutdown: the parent's inherited connections and threads are not
        # this process's to close.
        os._exit(code)


async def _work(dsn: str, snapshot: str, case_range: CaseRange,
                decoder: EventDecoder | GenericDecoder, fetch: int, copy_rows: int) -> None:
    reader = await asyncpg.connect(dsn)
    writer = await asyncpg.connect(dsn)
    try:
        async with reader.transaction(isolation="repeatable_read", readonly=True):
            await reader.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
            await _fill(reader, writer, decoder, fetch, copy_rows, case_range)
    finally:
        await reader.close()
        await writer.close()


async def _fill(conn: asyncpg.Connection, writer: asyncpg.Connection,
                decoder: EventDecoder | GenericDecoder, fetch: int, copy_rows: int,
                case_range: CaseRange) -> None:
    """Fold every case of `case_range` in `conn`'s snapshot of the log into rows COPYed into
    the new table, one COPY in flight beside the folding."""
    async with _copying(writer):
        await _fill_with(conn, writer, decoder, fetch, copy_rows, case_range)


@contextlib.asynccontextmanager
async def _copying(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """`conn` set for the COPYs, and back as it was after them: json parameters taken as
    the UTF-8 bytes they are sent as (decoding the encoder's bytes to str only for the driver
    to encode it again cost a tenth of the folding), commits not waiting for the disk."""
    await conn.set_type_codec("json", schema="pg_catalog", format="binary",
                              encoder=bytes, decoder=bytes.decode)
    try:
        async with _unflushed(conn):
            yield
    finally:
        await conn.reset_type_codec("json", schema="pg_catalog")


@contextlib.asynccontextmanager
async def _unflushed(*conns: asyncpg.Connection) -> AsyncIterator[None]:
    """Commits of `conns` that do not wait for the disk, for what fills the new table:
    nothing reads it before the swap, whose commit is flushed with all that was logged
    before it. (The connection of a pool of one commits its COPYs with its read instead.)"""
    own = [c for c in dict.fromkeys(conns) if not c.is_in_transaction()]
    for c in own:
        await c.execute("SET synchronous_commit = off")
    try:
        yield
    finally:
        for c in own:
            await c.execute("RESET synchronous_commit")


async def _fill_with(conn: asyncpg.Connection, writer: asyncpg.Connection,
                     decoder: EventDecoder | GenericDecoder, fetch: int, copy_rows: int,
                     case_range: CaseRange) -> None:
    # With a second connection the server reads the next batch and parses the last COPY
    # while this process folds; both progress only while the event loop runs, hence the
    # yields (without them the folding and the server took turns, each idle half the time).
    overlap = writer is not conn
    pending: list[tuple[Any, ...]] = []
    copying: asyncio.Task[Any] | None = None
    await conn.execute(_SORT_MEMORY)
    cursor = await conn.cursor(_CASE_ROWS, CASE_EVENT_TOPIC_PREFIX, *case_range)
    fetching: asyncio.Future[list[asyncpg.Record]] | None = asyncio.ensure_future(
        cursor.fetch(fetch))
    carried: list[asyncpg.Record] = []
    try:
        while fetching is not None:
            batch = await fetching
            last_batch = len(batch) < fetch
            fetching = (asyncio.ensure_future(cursor.fetch(fetch))
                        if overlap and not last_batch else None)
            groups = itertools.groupby(carried + batch if carried else batch, _CASE_ID)
            cases = [(case_id, list(rows)) for case_id, rows in groups]
            # The last case of a full batch may go on in the next one.
            carried = cases.pop()[1] if cases and not last_batch else []
            for n, (case_id, rows) in enumerate(cases, 1):
                row = _case_row(decoder, case_id, rows)
                if row is not None:
                    pending.append(row)
                if len(pending) >= copy_rows:
                    copying = await _copy(writer, copying, pending)
                    pending = []
                    if not overlap:  # one connection: the COPY ends before the next fetch
                        copying = await _copy(writer, copying, [])
                elif overlap and n % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)
            if not overlap and not last_batch:
                fetching = asyncio.ensure_future(cursor.fetch(fetch))
        copying = await _copy(writer, copying, pending)
        copying = await _copy(writer, copying, [])
    finally:
        # After a failure, what is in flight ends before the transaction is rolled back.
        await asyncio.gather(*(t for t in (fetching, copying) if t is not None),
                             return_exceptions=True)


_YIELD_EVERY = 32  # cases (a few milliseconds of folding, about a socket buffer of rows)


async def _copy(writer: asyncpg.Connection, previous: asyncio.Task[Any] | None,
                rows: list[tuple[Any, ...]]) -> asyncio.Task[Any] | None:
    if previous is not None:
        await previous
    if not rows:
        return None
    return asyncio.ensure_future(
        writer.copy_records_to_table(_NEXT, records=rows, columns=_COLUMNS))


def _case_row(decoder: EventDecoder | GenericDecoder, case_id: UUID,
              rows: Sequence[asyncpg.Record]) -> tuple[Any, ...] | None:
    """One case's row, folded from all its events, as the live projector leaves it."""
    keys: tuple[str | None, str | None] = (None, None)

    def observe(name: str, data: dict[str, Any]) -> None:
        nonlocal keys
        if name == "Registered":
            keys = _matching_keys(data)

    summary = fold_stored(decoder, case_id, [(r[1], r[2], r[3]) for r in rows],
                          observe=observe)
    if summary is None or summary.get("case_number") is None:
        return None
    # The position of the case's first event (version 1), as the live projector records it.
    return _row(case_id, summary, rows[0][4], keys, _summary_json)


async def _build_indexes(*conns: asyncpg.Connection) -> list[tuple[str, asyncpg.Record]]:
    """The old table's indexes built on the new one under temporary names, the builds shared
    by `conns` as each becomes free (builds of one table share a lock: they run side by
    side, one per core). Returns (temporary name, old index) pairs for the swap."""
    indexes = await conns[0].fetch(_INDEXES)
    statements, renames = [], []
    for ix in indexes:
        match = _INDEX_DEF.match(ix["definition"])
        if match is None:
            raise RuntimeError(f"cannot recreate index {ix['name']}: {ix['definition']}")
        temporary = f"{_NEXT}_{len(renames)}"
        statements.append(f"{match[1]}{temporary}{match[3]}{_NEXT}{match[5]}")
        renames.append((temporary, ix))
    pending = iter(statements)

    async def build(conn: asyncpg.Connection) -> None:
        for statement in pending:
            await conn.execute(statement)

    # Every build ends before a failure is raised: no connection goes back to its pool busy.
    results = await asyncio.gather(*(build(c) for c in dict.fromkeys(conns)),
                                   return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return renames


async def _swap_in(conn: asyncpg.Connection, renames: list[tuple[str, asyncpg.Record]]) -> None:
    """Put the new table in the old one's place, its indexes and constraints under the old
    names (readers wait only for these few statements)."""
    await conn.execute("DROP TABLE case_summaries")
    await conn.execute(f"ALTER TABLE {_NEXT} RENAME TO case_summaries")
    for temporary, ix in renames:
        kind = {"p": "PRIMARY KEY", "u": "UNIQUE"}.get(ix["constraint_type"])
        if kind is not None:
            await conn.execute(f'ALTER TABLE case_summaries ADD CONSTRAINT '
                               f'"{ix["constraint_name"]}" {kind} USING INDEX {temporary}')
        else:
            await conn.execute(f'ALTER INDEX {temporary} RENAME TO "{ix["name"]}"')
