"""The recorder appends delivery outcomes to their cases: each event in the trace of the
delivery it records, also when its batch loses a race with another writer."""
from __future__ import annotations

import asyncio
import contextvars
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from petitions.infra import tracing
from petitions.infra.settings import CommonAuthSettings
from petitions.infra.store import CaseStore
from services.notify.handler import NOTIFY_ACTOR
from services.notify.recorder import BATCH_ATTEMPTS, CaseRecorder
from tests.notify.conftest import history_types, registered, routed

pytestmark = pytest.mark.integration

AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def delivered(unit: str):
    def command(case) -> None:
        case.record_notice_delivered(
            notice_id=f"{case.id}:2:{unit}:webhook", kind="assignment_slip", recipient=unit,
            channel="webhook", trigger_version=2, attempts=1, actor=NOTIFY_ACTOR, at=AT)
    return command


def in_trace(trace_id: str) -> contextvars.Context:
    """A context whose current span belongs to `trace_id` (as a consumed message's has)."""
    def enter() -> contextvars.Context:
        with tracing.resumed(f"00-{trace_id}-{uuid4().hex[:16]}-01", "deliver"):
            return contextvars.copy_context()
    return contextvars.Context().run(enter)


async def settle_nothing(outcomes) -> None:
    return None


@pytest.fixture
def traced_store(notify_env):
    store = CaseStore(notify_env.postgres_dsn, pool_size=2,
                      cipher_key=CommonAuthSettings().payload_encryption_key,
                      trace_context=tracing.current_traceparent)
    yield store
    store.close()


async def record_in(recorder: CaseRecorder, context: contextvars.Context, case_id, command):
    await asyncio.create_task(recorder.record(case_id, command, None), context=context.copy())


async def stored_traces(pool, case_id) -> dict[int, str]:
    rows = await pool.fetch(
        "SELECT originator_version, traceparent FROM event_trace_context "
        "WHERE originator_id = $1 AND originator_version > 2", case_id)
    return {r["originator_version"]: r["traceparent"].split("-")[1] for r in rows}


@pytest.mark.parametrize("conflict", [False, True], ids=["alone", "after-a-conflict"])
async def test_each_outcome_is_appended_in_its_own_trace(traced_store, notify_store,
                                                          notify_pool, conflict):
    case = routed(registered())
    await asyncio.to_thread(notify_store.save, case)
    first, second = uuid4().hex, uuid4().hex
    competitor_ran = []

    def racing(case_in_batch) -> None:
        """Another writer appends to the case after the recorder read it: the batch's save
        conflicts and each outcome is appended again on fresh state."""
        if conflict and not competitor_ran:
            competitor_ran.append(True)
            notify_store.update(case_in_batch.id, delivered("housing-330106"))
        delivered("land-330106")(case_in_batch)

    recorder = CaseRecorder(traced_store, settle_nothing, pool=notify_pool, linger=0.2)
    recorder.start()
    try:
        await asyncio.gather(record_in(recorder, in_trace(first), case.id, racing),
                             record_in(recorder, in_trace(second), case.id,
                                       delivered("edu-330106")))
    finally:
        await recorder.stop()

    types = history_types(notify_store, case.id)
    assert types.count("NoticeDelivered") == (3 if conflict else 2)
    # after the conflict the batch is read again and appended again whole
    assert (recorder.transactions, recorder.conflicts) == ((1, 1) if conflict else (1, 0))
    traces = await stored_traces(notify_pool, case.id)
    version_to = {getattr(e, "recipient", None): e.originator_version
                  for e in notify_store.history(case.id)}
    assert traces[version_to["land-330106"]] == first
    assert traces[version_to["edu-330106"]] == second


async def test_a_batch_is_recorded_on_each_case_as_stored_now(notify_store, notify_pool):
    """Cases as notify planned them, cases another service appended to since (the deadline
    clock starts on the event a notice is for) and cases notify never held: one read for the
    batch, one append, no conflict; an outcome for a case that does not exist records nothing."""
    held, moved, unheld = (routed(registered()) for _ in range(3))
    await asyncio.to_thread(notify_store.save, held, moved, unheld)
    recorder = CaseRecorder(notify_store, settle_nothing, pool=notify_pool, linger=0.2)
    for case in (held, moved):
        recorder.remember(notify_store.get(case.id))
    moved_on = notify_store.get(moved.id)
    moved_on.start_clock(clock="acceptance", started_on="2026-03-02", due_on="2026-03-17",
                         length=15, day_kind="calendar", explanation="15 days",
                         provisional=False, actor=NOTIFY_ACTOR, at=AT, reason="registered")
    await asyncio.to_thread(notify_store.save, moved_on)
    recorder.start()
    try:
        await asyncio.gather(*(recorder.record(case_id, delivered("land-330106"), None)
                               for case_id in (held.id, moved.id, unheld.id, uuid4())))
    finally:
        await recorder.stop()

    assert recorder.transactions == 1
    assert history_types(notify_store, held.id)[2:] == ["NoticeDelivered"]
    assert history_types(notify_store, moved.id)[2:] == ["ClockStarted", "NoticeDelivered"]
    assert history_types(notify_store, unheld.id)[2:] == ["NoticeDelivered"]


@pytest.mark.parametrize("races", [1, 3], ids=["once", "every-batch-try"])
async def test_a_batch_that_loses_a_race_is_read_again_whole(notify_store, notify_pool, races):
    """Another writer appends to one case of the batch after the recorder read it: the batch
    is read again and appended in one transaction; a batch that loses every try falls back to
    appending each outcome alone. Every outcome is recorded once either way."""
    cases = [routed(registered()) for _ in range(3)]
    await asyncio.to_thread(notify_store.save, *cases)
    raced = []

    def racing(case_in_batch) -> None:
        if len(raced) < races:
            raced.append(True)
            notify_store.update(case_in_batch.id, delivered(f"other-{len(raced)}"))
        delivered("land-330106")(case_in_batch)

    recorder = CaseRecorder(notify_store, settle_nothing, pool=notify_pool, linger=0.2)
    recorder.start()
    try:
        await asyncio.gather(
            recorder.record(cases[0].id, racing, None),
            *(recorder.record(c.id, delivered("land-330106"), None) for c in cases[1:]))
    finally:
        await recorder.stop()

    assert recorder.conflicts == races
    assert recorder.transactions == (1 if races < BATCH_ATTEMPTS else len(cases))
    assert history_types(notify_store, cases[0].id)[2:].count("NoticeDelivered") == races + 1
    for case in cases[1:]:
        assert history_types(notify_store, case.id)[2:] == ["NoticeDelivered"]
