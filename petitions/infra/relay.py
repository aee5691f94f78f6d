"""The relay: announces every committed event, in log order, on JetStream: its case id,
version, type and position (`EventNotice`), never its payload.

Every service process runs one, but only the holder of a PostgreSQL advisory lock relays, so
there is one active relay while any service is up. It records its position after each
published batch; after a crash it republishes from that position and JetStream drops the
repeats by `Nats-Msg-Id` (the event id).

Each message carries, in a `traceparent` header, the trace context stored beside its event,
so the consumers continue the trace of the request that caused the event (also on replay).
Every candidate reports the relay lag (`petitions_relay_lag_events`).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import asyncpg

from petitions.infra import tracing
from petitions.infra.bus import Bus
from petitions.infra.eventlog import EventLog, LogWaker, Positions
from petitions.infra.metrics import RELAY_LAG, RELAY_LEADER, RELAY_PUBLISHED
from petitions.infra.pools import holds_session_state
from petitions.infra.store import EVENTS_TABLE

log = logging.getLogger(__name__)

RELAY_LOCK_KEY = 727_100_002
READER = "relay"


class Relay:
    def __init__(self, pool: asyncpg.Pool, log_: EventLog, bus: Bus, *, batch: int = 500,
                 poll_interval: float = 0.5, service: str = "relay",
                 lag_interval: float = 1.0) -> None:
        self.service = service
        self.lag_interval = lag_interval
        self._lag_reported_at = 0.0
        RELAY_LEADER.labels(service).set(0)
        self.pool = pool
        self.log = log_
        self.bus = bus
        self.positions = Positions(pool)
        self.batch = batch
        self.poll_interval = poll_interval
        self.published = 0
        self.position = 0
        self.maybe_behind = False  # the last read was a full batch: more may be waiting
        self.is_leader = False

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                await self._lead(stopping)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                log.warning("relay lost its database; retrying", exc_info=True)
            except Exception:
                log.exception("relay failed; restarting")
            self.is_leader = False
            RELAY_LEADER.labels(self.service).set(0)
            await _sleep_unless(stopping, 1.0)

    async def _lead(self, stopping: asyncio.Event) -> None:
        async with self.pool.acquire() as lock_conn:
            holds_session_state(lock_conn)
            while not await lock_conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_KEY):
                # Not the leader: report the lag from the leader's recorded position.
                await self._report_lag(await self.positions.get(READER, lock_conn), lock_conn)
                if await _sleep_unless(stopping, 1.0):
                    return
            try:
                self.is_leader = True
                RELAY_LEADER.labels(self.service).set(1)
                await self._relay(stopping)
            finally:
                await lock_conn.execute("SELECT pg_advisory_unlock($1)", RELAY_LOCK_KEY)

    async def _relay(self, stopping: asyncio.Event) -> None:
        waker = LogWaker()
        await waker.start(self.pool)
        try:
            self.position = await self.positions.get(READER)
            while not stopping.is_set():
                await self.publish_next_batch()
                if time.monotonic() - self._lag_reported_at >= self.lag_interval:
                    await self._report_lag(self.position)
                if not self.maybe_behind:
                    await waker.wait(self.poll_interval)
        finally:
            await waker.stop()

    async def publish_next_batch(self) -> bool:
        events = await self.log.read_notices_after(self.position, self.batch)
        # A short batch was the whole log: wait for the next commit's NOTIFY (one that came
        # meanwhile wakes the wait at once) instead of reading again to find nothing, which
        # was a third of the relay's round trips at a steady trickle of commits.
        self.maybe_behind = len(events) >= self.batch
        if not events:
            return False
        # Sent without waiting for each ack in turn; consumers never rely on arrival order
        # across events (they load the case from the store). Each event's PRODUCER span
        # lasts until the batch is acked.
        with contextlib.ExitStack() as spans:
            await self.bus.publish_all([
                (e.type, e.event_id, e.to_message(), spans.enter_context(tracing.publishing(
                    e.type, e.event_id, str(e.case_id), e.traceparent,
                    self.bus.subject(e.type))))
                for e in events])
        self.position = events[-1].position
        await self.positions.set(READER, self.position)
        self.published += len(events)
        RELAY_PUBLISHED.labels(self.service).inc(len(events))
        return True

    async def _report_lag(self, position: int, conn: asyncpg.Connection | None = None) -> None:
        """Lag = the store's head notification id minus the published position."""
        try:
            head = await (conn or self.pool).fetchval(
                f"SELECT coalesce(max(notification_id), 0) FROM {EVENTS_TABLE}")
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return
        RELAY_LAG.labels(self.service).set(max(int(head) - position, 0))
        self._lag_reported_at = time.monotonic()


async def _sleep_unless(stopping: asyncio.Event, seconds: float) -> bool:
    """Sleep, waking early if stopping; returns True when stopping."""
    try:
        await asyncio.wait_for(stopping.wait(), seconds)
    except TimeoutError:
        return False
    return True
