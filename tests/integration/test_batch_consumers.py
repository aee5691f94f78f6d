"""Routing and deadlines working batches of messages on real PostgreSQL and NATS: each case is
routed once and its acceptance clock started once, whatever the redelivery, the duplicates
inside a batch, or a second replica and the other service writing the same cases at the same
time; a batch whose work failed is not acked, and is redelivered and done."""
from __future__ import annotations

import asyncio
import contextvars
import uuid
from collections import Counter
from datetime import UTC, datetime
from uuid import UUID

import pytest

from petitions.domain.calendar import calendar_from_chinese_calendar
from petitions.domain.case import Case
from petitions.domain.routing_config import RoutingConfiguration
from petitions.infra.batching import (
    CONFLICTS,
    BatchConsumer,
    Delivery,
    load_histories,
    moved_since_read,
)
from petitions.infra.bus import Bus, BusMessage
from petitions.infra.relay import Relay
from petitions.infra.store import CaseStore
from services.deadlines.engine import ClockEngine
from services.deadlines.handler import DeadlinesHandler
from services.routing.handler import RoutingHandler
from tests.domain.test_routing_commands import seeded_configuration
from tests.integration.conftest import new_case

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def configuration() -> RoutingConfiguration:
    return seeded_configuration()


def routing(store: CaseStore, pool, configuration) -> RoutingHandler:
    return RoutingHandler(store, configuration.router, configuration.router().directory,
                          lambda: datetime.now(UTC), pool)


def deadlines(store: CaseStore, pool) -> DeadlinesHandler:
    calendar = calendar_from_chinese_calendar()
    return DeadlinesHandler(ClockEngine(store, lambda: calendar, lambda: datetime.now(UTC)),
                            pool)


def deliveries(cases: list[Case], deliveries_so_far: int = 1) -> list[Delivery]:
    return [Delivery(BusMessage(f"{c.id}:1", str(c.id), 1, "Registered", deliveries_so_far),
                     contextvars.copy_context(), None)
            for c in cases]


async def registered(store: CaseStore, n: int) -> list[Case]:
    cases = [new_case() for _ in range(n)]
    await asyncio.to_thread(store.save, *cases)
    return cases


def types(store: CaseStore, case_id: UUID) -> Counter[str]:
    return Counter(type(e).__name__ for e in store.history(case_id))


async def test_a_batch_is_routed_and_timed_once_even_when_redelivered(store, pool,
                                                                       configuration):
    cases = await registered(store, 12)
    route, clocks = routing(store, pool, configuration), deadlines(store, pool)
    batch = deliveries(cases) + deliveries(cases[:3], 2)  # duplicates inside the batch

    assert await route.on_batch(batch) == {}
    assert await clocks.on_batch(batch) == {}
    # Redelivered (a crash before the ack): decided again from the cases, nothing appended.
    assert await route.on_batch(deliveries(cases, 2)) == {}
    assert await clocks.on_batch(deliveries(cases, 2)) == {}

    for c in cases:
        seen = types(store, c.id)
        assert seen["RoutedToUnit"] == 1 and seen["ClockStarted"] == 1, seen
    rows = await pool.fetch("SELECT case_id, generation FROM deadline_timers "
                            "WHERE case_id = ANY($1::uuid[]) AND clock = 'acceptance' "
                            "AND kind = 'due'", [c.id for c in cases])
    assert {r["case_id"] for r in rows} == {c.id for c in cases}
    assert all(r["generation"] == 3 for r in rows)  # computed after both appends


async def test_two_routing_replicas_and_deadlines_racing_on_fresh_cases(store, pool,
                                                                         configuration):
    cases = await registered(store, 40)
    one, two = routing(store, pool, configuration), routing(store, pool, configuration)
    clocks = deadlines(store, pool)
    # Overlapping batches, all at once: every write races another on the same case.
    results = await asyncio.gather(one.on_batch(deliveries(cases)),
                                   two.on_batch(deliveries(cases[::-1])),
                                   clocks.on_batch(deliveries(cases)),
                                   clocks.on_batch(deliveries(cases[10:30])))
    assert results == [{}, {}, {}, {}]
    for c in cases:
        seen = types(store, c.id)
        assert seen["RoutedToUnit"] == 1 and seen["ClockStarted"] == 1, seen


async def test_an_unknown_case_is_acked_without_effect(store, pool, configuration):
    ghost = new_case()  # never saved
    assert await routing(store, pool, configuration).on_batch(deliveries([ghost])) == {}
    assert await deadlines(store, pool).on_batch(deliveries([ghost])) == {}
    assert store.history(ghost.id) == []


async def test_a_failed_batch_is_not_acked_and_is_redelivered(store, pool, event_log, bus,
                                                               configuration):
    relay = Relay(pool, event_log, bus, service="test")
    relay.position = await event_log.head()
    cases = await registered(store, 5)
    while await relay.publish_next_batch():
        pass
    ours = {str(c.id) for c in cases}
    route = routing(store, pool, configuration)
    calls: list[int] = []

    async def flaky(batch):
        # Only this test's cases (the stream holds other tests' registrations too).
        mine = [i for i, d in enumerate(batch) if d.case_id in ours]
        if not mine:
            return {}
        calls.append(len(mine))
        if len(calls) == 1:
            # The database went away mid-batch: nothing was committed, nothing is acked.
            raise ConnectionError("database unavailable")
        failed = await route.on_batch([batch[i] for i in mine])
        return {mine[i]: exc for i, exc in failed.items()}

    consumer = BatchConsumer(bus, f"batch-{uuid.uuid4().hex[:8]}", ["Registered"], flaky,
                             service="test", ack_wait=5.0)
    stopping = asyncio.Event()
    task = asyncio.create_task(consumer.run(stopping))
    try:
        for _ in range(200):
            if all(types(store, c.id)["RoutedToUnit"] == 1 for c in cases):
                break
            await asyncio.sleep(0.1)
    finally:
        stopping.set()
        await task
    # Failed once, then redelivered and done. The failed batch held some of them at least
    # (a fetch takes what has reached the consumer, on a busy machine not always all five).
    assert calls[0] >= 1 and sum(calls[1:]) >= 5
    for c in cases:
        assert types(store, c.id)["RoutedToUnit"] == 1
    info = await bus.js.consumer_info(bus.stream, consumer.durable)
    assert info.num_ack_pending == 0


async def test_one_case_that_cannot_be_decided_does_not_hold_back_its_batch(store, pool,
                                                                            configuration):
    cases = await registered(store, 6)
    bad = cases[2].id

    class Broken(RoutingHandler):
        def route(self, case: Case) -> None:
            if case.id == bad:
                raise RuntimeError("rule set cannot decide this case")
            super().route(case)

    class BrokenEngine(ClockEngine):
        def plan(self, events):
            if events[0].originator_id == bad:
                raise RuntimeError("calendar cannot count this case")
            return super().plan(events)

    route = Broken(store, configuration.router, configuration.router().directory,
                   lambda: datetime.now(UTC), pool)
    calendar = calendar_from_chinese_calendar()
    clocks = DeadlinesHandler(BrokenEngine(store, lambda: calendar, lambda: datetime.now(UTC)),
                              pool)
    batch = deliveries(cases) + deliveries([cases[2]], 2)

    for handler in (route, clocks):
        failed = await handler.on_batch(batch)
        assert set(failed) == {2, 6}  # both messages about the bad case, and only those
        assert all(isinstance(e, RuntimeError) for e in failed.values())
    for c in cases:
        seen = types(store, c.id)
        expected = 0 if c.id == bad else 1
        assert seen["RoutedToUnit"] == expected and seen["ClockStarted"] == expected, seen


async def test_cases_appended_to_after_they_were_read_are_named_before_the_append(
        store, pool, configuration):
    cases = await registered(store, 3)
    histories = await load_histories(pool, store, [c.id for c in cases])
    assert await moved_since_read(pool, histories, "test") == []
    # Routing appends to one of them while deadlines is still deciding the batch.
    await routing(store, pool, configuration).on_batch(deliveries(cases[1:2]))
    assert await moved_since_read(pool, histories, "test") == [cases[1].id]
    # Deadlines re-reads it and appends for all three without a conflict.
    conflicts = CONFLICTS.labels("deadlines")._value.get()
    assert await deadlines(store, pool).on_batch(deliveries(cases)) == {}
    assert CONFLICTS.labels("deadlines")._value.get() == conflicts
    for c in cases:
        assert types(store, c.id)["ClockStarted"] == 1


async def _probe(own: Bus, name: str) -> None:
    await own.publish("Registered", name, {
        "event_id": name, "case_id": str(uuid.uuid4()), "version": 1, "type": "Registered",
        "data": {}})


async def _batches_of(bus, linger: float, publishing, *, when_quiet: bool = False
                      ) -> list[list[str]]:
    """The batches a lingering consumer (by default one that lingers only on a busy stream)
    hands over while `publishing(own)` runs (all of it handled). The consumer reads a stream
    of its own, removed afterwards: only its messages are there, whatever other tests
    published and whether the server applies a consumer's subject filters."""
    tag = uuid.uuid4().hex[:8]
    own = Bus(bus.nc, f"LINGER_{tag.upper()}", f"linger{tag}")
    await own.ensure_stream()
    batches: list[list[str]] = []

    async def record(batch):
        batches.append([d.message.event_id for d in batch])
        return {}

    consumer = BatchConsumer(own, "linger", ["Registered"], record, service="test",
                             linger=linger, linger_when_quiet=when_quiet)
    stopping = asyncio.Event()
    task = asyncio.create_task(consumer.run(stopping))
    try:
        await asyncio.sleep(0.3)  # the consumer is idle, waiting for a first message
        total = await publishing(own)
        for _ in range(100):
            if sum(map(len, batches)) >= total:
                break
            await asyncio.sleep(0.1)
    finally:
        stopping.set()
        await task
        await own.js.delete_stream(own.stream)
    return batches


async def test_on_a_quiet_stream_a_message_is_handled_without_lingering(bus):
    async def publishing(own: Bus) -> int:
        await _probe(own, "quiet-0")
        await asyncio.sleep(0.3)  # a consumer that lingered 0.5 s would take these with it
        for i in range(1, 3):
            await _probe(own, f"quiet-{i}")
        return 3

    batches = await _batches_of(bus, 0.5, publishing)
    assert batches[0] == ["quiet-0"]
    assert sorted(sum(batches, [])) == ["quiet-0", "quiet-1", "quiet-2"]


async def test_on_a_busy_stream_a_short_fetch_lingers_for_what_comes_next(bus):
    async def publishing(own: Bus) -> int:
        for i in range(10):  # ten in the last second: one is expected within the linger
            await _probe(own, f"busy-{i:02d}")
        await asyncio.sleep(0.6)  # they are handled (lingering 0.4 s at most), not forgotten
        await _probe(own, "late-0")
        await asyncio.sleep(0.1)  # the consumer has it and lingers: these come meanwhile
        for i in range(1, 5):
            await _probe(own, f"late-{i}")
        return 15

    batches = await _batches_of(bus, 0.4, publishing)
    assert [f"late-{i}" for i in range(5)] in batches
    assert sorted(sum(batches, [])) == [f"busy-{i:02d}" for i in range(10)] + [
        f"late-{i}" for i in range(5)]


async def test_a_lingering_consumer_takes_what_came_meanwhile_into_the_same_batch(bus):
    async def publishing(own: Bus) -> int:
        await _probe(own, "probe-0")
        await asyncio.sleep(0.1)  # it has the first and lingers: these come meanwhile
        for i in range(1, 5):
            await _probe(own, f"probe-{i}")
        return 5

    batches = await _batches_of(bus, 1.0, publishing, when_quiet=True)
    assert batches == [[f"probe-{i}" for i in range(5)]]
