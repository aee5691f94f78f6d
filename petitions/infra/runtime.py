"""What every service process shares: connections made at start-up (never at import),
the relay, background tasks, health and readiness, and an orderly shutdown."""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from petitions.infra import tracing
from petitions.infra.bus import Bus, Consumer
from petitions.infra.pools import create_pool
from petitions.infra.eventlog import EventLog
from petitions.infra.metrics import CONSUMER_ACK_PENDING, CONSUMER_PENDING
from petitions.infra.relay import Relay, _sleep_unless
from petitions.infra.settings import CommonSettings
from petitions.infra.store import CaseStore

log = logging.getLogger(__name__)


async def with_backoff(what: str, connect: Callable[[], Awaitable[Any]], *,
                       attempts: int = 30, first_delay: float = 0.2) -> Any:
    """Wait for a dependency instead of crashing when it is not up yet."""
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            return await connect()
        except Exception as exc:  # any failure to connect is retried the same way
            if attempt == attempts:
                raise
            log.warning("%s not ready (%s); retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
    raise AssertionError("unreachable")


@dataclass
class Runtime:
    name: str
    settings: CommonSettings
    store: CaseStore
    pool: asyncpg.Pool
    bus: Bus
    log: EventLog
    relay: Relay | None = None
    consumers: list[Consumer] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    @classmethod
    async def start(cls, name: str, settings: CommonSettings) -> Runtime:
        # Store calls run in threads; a database outage can hold some for seconds, so give
        # the rest of the work room (the default pool is cores + 4).
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=32, thread_name_prefix=name))
        dsn = settings.postgres_dsn
        # Tracing first (off unless OTEL_* asks for it), so the store can record trace
        # contexts beside the events it saves.
        traced = tracing.configure_tracing(name)
        pool = await with_backoff("postgresql", lambda: create_pool(
            dsn, min_size=1, max_size=settings.db_pool_size,
            server_settings={"search_path": settings.db_schema, "application_name": name},
        ))
        store = await with_backoff("event store", lambda: asyncio.to_thread(
            CaseStore, dsn, cipher_key=settings.payload_encryption_key, schema=settings.db_schema,
            pool_size=4, service=name,
            trace_context=tracing.current_traceparent if traced else None))
        bus = await with_backoff("nats", lambda: Bus.connect(
            settings.nats_url, settings.nats_stream, settings.subject_prefix, name,
            settings.nats_stream_replicas))
        await with_backoff("jetstream stream", bus.ensure_stream)
        runtime = cls(name, settings, store, pool, bus, EventLog(pool, store.decode))
        if settings.relay_enabled:
            runtime.relay = Relay(pool, runtime.log, bus, service=name)
            runtime.spawn(runtime.relay.run(runtime.stopping), "relay")
        runtime.spawn(runtime._watch_consumers(settings.metrics_interval_s), "consumer-lag")
        return runtime

    def spawn(self, coro: Awaitable[Any], name: str) -> None:
        self.tasks.append(asyncio.create_task(coro, name=f"{self.name}:{name}"))

    def consume(self, durable: str, event_types: list[str],
                handler: Callable[[Any], Awaitable[None]], **options: Any) -> Consumer:
        options.setdefault("service", self.name)
        consumer = Consumer(self.bus, durable, event_types, handler, **options)
        self.consumers.append(consumer)
        self.spawn(consumer.run(self.stopping), f"consumer:{durable}")
        return consumer

    async def _watch_consumers(self, interval: float) -> None:
        """Consumer lag: every `interval` seconds, each durable's pending and unacked counts."""
        while not self.stopping.is_set():
            for consumer in list(self.consumers):
                try:
                    info = await asyncio.wait_for(
                        self.bus.js.consumer_info(self.bus.stream, consumer.durable), 2)
                except Exception:  # not created yet, or NATS away: try again next round
                    continue
                CONSUMER_PENDING.labels(self.name, consumer.durable).set(info.num_pending or 0)
                CONSUMER_ACK_PENDING.labels(self.name, consumer.durable).set(
                    info.num_ack_pending or 0)
            await _sleep_unless(self.stopping, interval)

    async def ready(self) -> dict[str, bool]:
        """Readiness: the database answers and the broker is connected."""
        checks = {"postgresql": False, "nats": self.bus.connected and not self.stopping.is_set()}
        try:
            checks["postgresql"] = await asyncio.wait_for(self.pool.fetchval("SELECT 1"), 2) == 1
        except Exception:
            checks["postgresql"] = False
        return checks

    async def stop(self) -> None:
        """Finish in-flight work, then close connections in reverse order of opening."""
        self.stopping.set()
        if self.tasks:
            _, pending = await asyncio.wait(self.tasks, timeout=10)
            for task in pending:
                log.warning("task %s did not finish in time; cancelled", task.get_name())
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        log.info("background work finished; closing connections")
        await self.bus.close()
        try:
            await asyncio.wait_for(self.pool.close(), 5)
        except TimeoutError:
            log.warning("database pool did not close in time; terminating")
            self.pool.terminate()
        await asyncio.to_thread(self.store.close)
        log.info("stopped")
        tracing.shutdown_tracing()
