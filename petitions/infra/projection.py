"""The case summary projection: follows the event log and keeps `case_summaries` current.

Each batch's rows and the reader position are written in one transaction, so a crash never
applies an event twice or skips one.
"""
from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from petitions.domain.matching import content_fingerprint
from petitions.domain.summary import fold_summary, refresh_derived
from petitions.infra.eventlog import EventLog, LogWaker, Positions
from petitions.infra.events import LoggedEvent

log = logging.getLogger(__name__)

READER = "projection:case_summaries"
PROJECTION_LOCK_KEY = 727_100_003


class CaseSummaryProjection:
    def __init__(self, pool: asyncpg.Pool, log_: EventLog, *, batch: int = 1000) -> None:
        self.pool = pool
        self.log = log_
        self.positions = Positions(pool)
        self.batch = batch
        self.position = 0

    async def run(self, stopping: asyncio.Event, poll_interval: float = 0.5) -> None:
        """Follow the log. Several replicas may run this; an advisory lock picks one."""
        waker = LogWaker()
        while not stopping.is_set():
            try:
                await waker.start(self.pool)
                try:
                    while not stopping.is_set():
                        if not await self.catch_up_once():
                            await waker.wait(poll_interval)
                finally:
                    await waker.stop()
            except Exception:
                log.warning("projection interrupted; retrying", exc_info=True)
                await asyncio.sleep(1.0)

    async def catch_up_once(self) -> bool:
        """Apply the next batch; False when there was nothing new."""
        async with self.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", PROJECTION_LOCK_KEY):
                return False
            position = await self.positions.get(READER, conn)
            events = await self.log.read_after(position, self.batch, conn)
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

    async def rebuild(self) -> int:
        """Drop the read model and replay the whole log into it."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", PROJECTION_LOCK_KEY)
            await conn.execute("TRUNCATE case_summaries")
            await self.positions.set(READER, 0, conn)
        return await self.catch_up()

    async def _apply(self, conn: asyncpg.Connection, events: list[LoggedEvent]) -> None:
        ids = list({e.case_id for e in events})
        rows = await conn.fetch(
            "SELECT case_id, summary, registered_position FROM case_summaries "
            "WHERE case_id = ANY($1::uuid[])", ids,
        )
        current: dict[UUID, dict[str, Any]] = {r["case_id"]: json.loads(r["summary"]) for r in rows}
        first_seen: dict[UUID, int] = {r["case_id"]: r["registered_position"] for r in rows}
        keys: dict[UUID, tuple[str | None, str]] = {}
        for e in events:
            if e.type == "Registered":
                keys[e.case_id] = _matching_keys(e.data)
            current[e.case_id] = fold_summary(
                current.get(e.case_id), str(e.case_id), e.type, e.version,
                e.recorded_at.isoformat(), e.data, refresh=False,
            )
            first_seen.setdefault(e.case_id, e.position)
        for case_id in {e.case_id for e in events}:
            refresh_derived(current[case_id])  # derived fields once per case and batch
        await conn.executemany(UPSERT, [
            _row(case_id, s, first_seen[case_id], keys.get(case_id, (None, None)))
            for case_id, s in current.items() if s.get("case_number") is not None
        ])


UPSERT = """
INSERT INTO case_summaries (case_id, case_number, division, status, category, channel, unit_id,
    registered_at, registered_position, version, summary, petitioner_key, content_digest)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8::timestamptz, $9, $10, $11::jsonb, $12, $13)
ON CONFLICT (case_id) DO UPDATE SET
    status = EXCLUDED.status, unit_id = EXCLUDED.unit_id, division = EXCLUDED.division,
    version = EXCLUDED.version, summary = EXCLUDED.summary,
    petitioner_key = COALESCE(EXCLUDED.petitioner_key, case_summaries.petitioner_key),
    content_digest = COALESCE(EXCLUDED.content_digest, case_summaries.content_digest)
"""


def _matching_keys(registered: dict[str, Any]) -> tuple[str | None, str]:
    """Keys to recognise the same petitioner and the same content again (never identity)."""
    return (registered.get("petitioner_key") or None,
            content_fingerprint(registered["division"], registered["category"],
                                registered["content"]))


def _row(case_id: UUID, s: dict[str, Any], position: int,
         keys: tuple[str | None, str | None]) -> tuple[Any, ...]:
    return (
        case_id, s["case_number"], s["division"], s["status"], s["category"], s["channel"],
        (s.get("unit") or {}).get("unit_id"), datetime.fromisoformat(s["registered_at"]),
        position, s["version"], json.dumps(s, ensure_ascii=False), keys[0], keys[1],
    )
