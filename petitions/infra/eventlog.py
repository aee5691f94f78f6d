"""Reading the store's notification log (asyncpg) and tracking readers' positions."""
from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import asyncpg

from petitions.infra.events import Decoder, EventDecoder, EventNotice, LoggedEvent
from petitions.infra.pools import holds_session_state
from petitions.infra.store import EVENTS_TABLE, TRACE_CONTEXT_TABLE
from petitions.infra.unflushed import UNFLUSHED



class EventLog:
    """The append-only log of every case event, in commit order (notification id)."""

    def __init__(self, pool: asyncpg.Pool, decode: Decoder) -> None:
        self.pool = pool
        self.decode = decode
        # Straight to plain data, without domain event objects (half the cost of a read).
        self._plain = EventDecoder.for_decode(decode)

    async def read_after(self, position: int, limit: int = 500,
                         conn: asyncpg.Connection | None = None) -> list[LoggedEvent]:
        sql = (
            f"SELECT notification_id, originator_id, originator_version, topic, state "
            f"FROM {EVENTS_TABLE} WHERE notification_id > $1 "
            f"ORDER BY notification_id LIMIT $2"
        )
        rows = await (conn or self.pool).fetch(sql, position, limit)
        return [self._plain_event(r) for r in rows]

    async def read_notices_after(self, position: int, limit: int = 500) -> list[EventNotice]:
        """What the relay publishes of the events after `position`: their ids, versions and
        types, with the trace context stored beside each; never their payloads."""
        sql = (
            f"SELECT e.notification_id, e.originator_id, e.originator_version, e.topic, "
            f"t.traceparent FROM {EVENTS_TABLE} e LEFT JOIN {TRACE_CONTEXT_TABLE} t "
            f"ON t.originator_id = e.originator_id "
            f"AND t.originator_version = e.originator_version "
            f"WHERE e.notification_id > $1 ORDER BY e.notification_id LIMIT $2"
        )
        rows = await self.pool.fetch(sql, position, limit)
        type_name = self._plain.type_name
        return [EventNotice(position=r[0], case_id=r[1], version=r[2], type=type_name(r[3]),
                            traceparent=r[4]) for r in rows]

    def _plain_event(self, r: asyncpg.Record) -> LoggedEvent:
        name, recorded_at, data = self._plain.decode(
            r["originator_id"], r["originator_version"], r["topic"], r["state"])
        return LoggedEvent(position=r["notification_id"], case_id=r["originator_id"],
                           version=r["originator_version"], type=name,
                           recorded_at=datetime.fromisoformat(recorded_at), data=data,
                           topic=r["topic"])

    async def head(self) -> int:
        value = await self.pool.fetchval(f"SELECT max(notification_id) FROM {EVENTS_TABLE}")
        return int(value or 0)


class Positions:
    """Where each log reader (relay, projections) has got to."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def get(self, reader: str, conn: asyncpg.Connection | None = None) -> int:
        value = await (conn or self.pool).fetchval(
            "SELECT position FROM log_positions WHERE reader = $1", reader
        )
        return int(value or 0)

    async def set(self, reader: str, position: int, conn: asyncpg.Connection | None = None) -> None:
        """Record `reader`'s position: in `conn`'s transaction, or else committed on its own
        without waiting for the disk (`_SET_UNFLUSHED`)."""
        if conn is not None:
            await conn.execute(_SET, reader, position)
        else:
            await self.pool.execute(_SET_UNFLUSHED, reader, position)


_SET = ("INSERT INTO log_positions (reader, position) VALUES ($1, $2) "
        "ON CONFLICT (reader) DO UPDATE SET position = EXCLUDED.position, updated_at = now()")
# A position lost in a crash is read again from the one before: what was published after it
# is published again, and the bus drops the repeats (Nats-Msg-Id). Not waiting for the disk
# spares a WAL flush per relayed batch, flushes that queued with the appends' own (their
# commits hold the append lock until flushed).
_SET_UNFLUSHED = (
    f"INSERT INTO log_positions (reader, position) SELECT $1, $2 FROM {UNFLUSHED} "
    "ON CONFLICT (reader) DO UPDATE SET position = EXCLUDED.position, updated_at = now()")


class LogWaker:
    """Wakes log readers when the store NOTIFYs a commit; readers also poll, because
    a NOTIFY can be missed (e.g. across a reconnect)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._conn: asyncpg.Connection | None = None

    async def start(self, pool: asyncpg.Pool) -> None:
        self._conn = holds_session_state(await pool.acquire())
        await self._conn.add_listener(EVENTS_TABLE, self._on_notify)
        self._pool = pool

    def _on_notify(self, *_: Any) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            pass
        self._event.clear()

    async def stop(self) -> None:
        if self._conn is not None:
            try:
                await self._conn.remove_listener(EVENTS_TABLE, self._on_notify)
            finally:
                await self._pool.release(self._conn)
            self._conn = None
