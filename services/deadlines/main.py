"""Composition root of the deadlines service: the clock rules on the bus's case events, the
timers table with its tick loop, and the deadlines and calendar API."""
from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from fastapi import FastAPI

from petitions.infra.batching import consume_batches
from petitions.infra.runtime import Runtime
from petitions.infra.service import run_event_loop, run_service
from services.deadlines.api import mount_routes
from services.deadlines.calendars import CalendarBook
from services.deadlines.engine import ClockEngine
from services.deadlines.handler import DeadlinesHandler
from services.deadlines.settings import DeadlinesServiceSettings, bureau_resolver, load_policy
from services.deadlines.ticker import Ticker, report_gauges, run_ticker

# A new durable name: the consumer now filters on every clock-triggering event type (a durable
# keeps the filter it was created with).
DURABLE = "deadlines-clocks"


def utc_now() -> datetime:
    return datetime.now(UTC)


def main(now: Callable[[], datetime] = utc_now) -> None:
    settings = DeadlinesServiceSettings()
    policy = load_policy(settings.unit_limits_file, settings.calendar_rules_file)
    bureau_of = bureau_resolver(settings.directory_file)
    book = CalendarBook()

    async def wire(runtime: Runtime, app: FastAPI) -> None:
        await book.refresh(runtime.pool)  # chinese-calendar's years plus the stored years
        engine = ClockEngine(runtime.store, book.current, now, policy, bureau_of)
        handler = DeadlinesHandler(engine, runtime.pool)
        ticker = Ticker(engine, runtime.pool, now, batch=settings.tick_batch,
                        workers=settings.tick_workers)
        # Deadlines lingers: a case's clock is not urgent to the millisecond, and waiting a
        # moment lets routing's append land first (no write conflict on a fresh case) and
        # takes the case's RoutedToUnit into the same batch as its Registered.
        consume_batches(runtime, DURABLE, policy.trigger_types(), handler.on_batch,
                        linger=settings.consumer_linger_s)
        runtime.spawn(run_ticker(ticker, lambda: book.refresh(runtime.pool), runtime.stopping,
                                 settings.tick_interval_s), "ticker")
        runtime.spawn(report_gauges(runtime.pool, now, runtime.stopping,
                                    max(settings.metrics_interval_s, 5.0)), "timer-gauges")
        mount_routes(app, runtime.pool, book, handler, now)

    run_event_loop(run_service("deadlines", "Petition deadlines", settings, wire))


if __name__ == "__main__":
    main()
