"""Observability plumbing in one process on real PostgreSQL and NATS: the trace context stored
with each event and carried through the relay and the bus into the consumer's own appends (an
in-memory span exporter), logs with trace and case ids and without identity, the events
counter, and versioned, idempotent migrations."""
from __future__ import annotations

import asyncio
import contextvars
import io
import json
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from petitions.domain.values import Actor
from petitions.infra import tracing
from petitions.infra.bus import Consumer
from petitions.infra.dsn import as_uri
from petitions.infra.logs import ContextFilter, JsonFormatter, RedactingFilter, redact
from petitions.infra.relay import Relay
from petitions.infra.schema import MIGRATIONS, migrate
from petitions.infra.settings import CommonAuthSettings
from petitions.infra.store import CaseStore
from tests.integration.conftest import new_case

pytestmark = pytest.mark.integration

ROUTER = Actor(id="routing-service", role="service")


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    """Spans of this process, in memory (the SDK provider is global, so set once)."""
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()  # later spans are dropped, not kept in memory


@pytest.fixture(scope="module")
def traced_store(test_env) -> Iterator[CaseStore]:
    s = CaseStore(test_env.postgres_dsn, pool_size=2, service="test",
                  cipher_key=CommonAuthSettings().payload_encryption_key,
                  trace_context=tracing.current_traceparent)
    yield s
    s.close()


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """What the services' handler would write for the `petitions` loggers."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter("test"))
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("petitions")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    yield out
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def _ids(span) -> tuple[str, str]:
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def _traceparent_ids(traceparent: str) -> tuple[str, str]:
    _, trace_id, span_id, _ = traceparent.split("-")
    return trace_id, span_id


async def _stored_traceparent(pool, case_id, version) -> str | None:
    return await pool.fetchval(
        "SELECT traceparent FROM event_trace_context "
        "WHERE originator_id = $1 AND originator_version = $2", case_id, version)


async def test_trace_context_goes_with_the_event_through_relay_bus_and_consumer(
        spans, traced_store, pool, event_log, bus, log_lines):
    store = traced_store
    relay = Relay(pool, event_log, bus, service="test")
    relay.position = await event_log.head()

    # A request registers a case: the event is stored with the request's trace context.
    case = new_case()
    with tracing.TRACER.start_as_current_span("POST /v1/petitions") as request:
        await asyncio.to_thread(store.save, case)
    trace_id, request_span = _ids(request)
    assert _traceparent_ids(await _stored_traceparent(pool, case.id, 1)) == (trace_id,
                                                                            request_span)

    # The relay publishes it as a child of that context, and says so in the headers.
    while await relay.publish_next_batch():
        pass
    [publish] = [s for s in spans.get_finished_spans()
                 if s.name == "publish Registered"
                 and s.attributes.get(tracing.CASE_ID_ATTRIBUTE) == str(case.id)]
    assert _ids(publish)[0] == trace_id
    assert format(publish.parent.span_id, "016x") == request_span
    assert publish.kind is trace.SpanKind.PRODUCER

    # A consumer continues the trace; what it appends carries the consumer's context, and
    # what it logs names the case and the trace.
    seen: list[str] = []

    async def route(msg) -> None:
        if msg.case_id != str(case.id):
            return
        logging.getLogger("petitions.test").info("routing %s", msg.event_id)
        await asyncio.to_thread(store.update, case.id, lambda c: c.route_to_unit(
            unit_id="land-330106", unit_name="国土", rule_id="r1", rule_set_version="1",
            explanation="test", actor=ROUTER, at=datetime.now(UTC)))
        seen.append(msg.event_id)

    consumer = Consumer(bus, f"obs-{uuid.uuid4().hex[:8]}", ["Registered"], route,
                        service="test")
    stopping = asyncio.Event()
    task = asyncio.create_task(consumer.run(stopping))
    try:
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.1)
    finally:
        stopping.set()
        await task
    assert seen == [f"{case.id}:1"]

    [process] = [s for s in spans.get_finished_spans()
                 if s.name == "process Registered"
                 and s.attributes.get(tracing.CASE_ID_ATTRIBUTE) == str(case.id)]
    assert process.kind is trace.SpanKind.CONSUMER
    assert _ids(process)[0] == trace_id
    assert process.parent.span_id == publish.get_span_context().span_id
    assert process.parent.is_remote  # it came through the message headers
    assert _traceparent_ids(await _stored_traceparent(pool, case.id, 2)) == _ids(process)

    [line] = [json.loads(x) for x in log_lines.getvalue().splitlines()
              if "routing" in json.loads(x)["message"]]
    assert line["case_id"] == str(case.id)
    assert (line["trace_id"], line["span_id"]) == _ids(process)

    # A replay (a new relay from the start of the log) keeps the link.
    replay = Relay(pool, event_log, bus, service="test")
    replay.position = relay.position - 1
    spans.clear()
    await replay.publish_next_batch()
    republished = [s for s in spans.get_finished_spans() if s.name.startswith("publish")
                   and s.attributes.get(tracing.CASE_ID_ATTRIBUTE) == str(case.id)]
    if republished:  # the last event in the log may be another test's
        assert all(_ids(s)[0] == trace_id for s in republished)


async def test_a_save_that_loses_a_race_leaves_the_winners_trace_context(
        spans, traced_store, pool):
    store = traced_store
    case = new_case()
    await asyncio.to_thread(store.save, case)
    winner, loser = store.get(case.id), store.get(case.id)
    at = datetime.now(UTC)
    for c in (winner, loser):
        c.route_to_unit(unit_id="land-330106", unit_name="国土", rule_id="r1",
                        rule_set_version="1", explanation="test", actor=ROUTER, at=at)
    with tracing.TRACER.start_as_current_span("winner") as w:
        await asyncio.to_thread(store.save, winner)
    with tracing.TRACER.start_as_current_span("loser"), pytest.raises(Exception):
        await asyncio.to_thread(store.save, loser)
    assert _traceparent_ids(await _stored_traceparent(pool, case.id, 2)) == _ids(w)


def test_without_the_hook_nothing_is_stored_beside_events(store, test_env):
    case = new_case()
    with tracing.TRACER.start_as_current_span("untraced store"):
        store.save(case)
    with psycopg.connect(test_env.postgres_dsn) as conn:
        rows = conn.execute("SELECT count(*) FROM event_trace_context WHERE originator_id = %s",
                            (case.id,)).fetchone()
    assert rows == (0,)


def test_events_appended_are_counted_by_service_and_type(traced_store):
    labels = {"service": "test", "type": "Registered"}
    before = REGISTRY.get_sample_value("petitions_events_appended_total", labels) or 0
    traced_store.save(new_case(), new_case())
    assert REGISTRY.get_sample_value("petitions_events_appended_total", labels) == before + 2


def test_logs_never_carry_id_or_mobile_numbers(log_lines):
    log = logging.getLogger("petitions.test")
    case_id = str(uuid.uuid4())
    log.info("petitioner %s, phone %s / %s / +86 139-1234-5678, case %s, number 330106-2026-000042",
             "33010619900101123X", "13912345678", "139 1234 5678", case_id,
             extra={"contact": "call 13800000000", "nested": {"id": "330106199001011234"}})
    try:
        raise ValueError("bad id_number 330106199001011234")
    except ValueError:
        log.exception("refused")
    text = log_lines.getvalue()
    for secret in ("33010619900101123X", "330106199001011234", "13912345678", "1234 5678",
                   "1234-5678", "13800000000"):
        assert secret not in text
    assert case_id in text and "330106-2026-000042" in text
    assert redact("trace 4bf92f3577b34da6a3ce929d0e0e4736 id 00f067aa0ba902b7") == \
        "trace 4bf92f3577b34da6a3ce929d0e0e4736 id 00f067aa0ba902b7"
    assert redact("mail to wang.wu+x@example.cn, ok") == "mail to [redacted], ok"


def test_migrations_are_versioned_and_idempotent(servers):
    dbname = f"petitions_test_migrate_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(servers.postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    try:
        dsn = as_uri(servers.postgres_dsn, dbname)
        first = migrate(dsn)
        assert sorted(first) == sorted(v for v, _, _ in MIGRATIONS)
        assert 6 in first
        assert migrate(dsn) == []
        with psycopg.connect(dsn) as conn:
            versions = [r[0] for r in conn.execute(
                "SELECT version FROM schema_migrations ORDER BY version")]
        assert versions == sorted(v for v, _, _ in MIGRATIONS)
    finally:
        with psycopg.connect(servers.postgres_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')



async def test_an_async_save_stores_what_a_save_stores(traced_store, pool):
    """`save_async` over an asyncpg pool: the events (hash-chained), each case's trace context
    and the appended-events count as `save` writes them; a version taken meanwhile is the
    library's IntegrityError and leaves the case's events pending, to be saved again."""
    labels = {"service": "test", "type": "Registered"}
    before = REGISTRY.get_sample_value("petitions_events_appended_total", labels) or 0
    first, second = new_case(), new_case()
    expected = {c.id: [vars(e) for e in c.pending_events] for c in (first, second)}
    with tracing.TRACER.start_as_current_span("register") as span:
        context = contextvars.copy_context()
    await traced_store.save_async(pool, first, second, contexts=[context, None])
    assert not first.pending_events and not second.pending_events
    assert REGISTRY.get_sample_value("petitions_events_appended_total", labels) == before + 2
    for case_id, events in expected.items():
        assert [vars(e) for e in traced_store.history(case_id)] == events
        assert await pool.fetchval("SELECT count(*) FROM cases_events WHERE originator_id = $1 "
                                   "AND chain_hash IS NOT NULL", case_id) == 1
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert _traceparent_ids(await _stored_traceparent(pool, first.id, 1))[0] == trace_id
    assert await _stored_traceparent(pool, second.id, 1) is None

    stale, winner = traced_store.get(first.id), traced_store.get(first.id)
    for case in (stale, winner):
        case.route_to_unit(unit_id="land-330106", unit_name="国土", rule_id="r1",
                           rule_set_version="1", explanation="land", actor=ROUTER,
                           at=datetime.now(UTC))
    await traced_store.save_async(pool, winner)
    with pytest.raises(IntegrityError):
        await traced_store.save_async(pool, stale)
    assert [type(e).__name__ for e in stale.pending_events] == ["RoutedToUnit"]
    assert len(traced_store.history(first.id)) == 2
