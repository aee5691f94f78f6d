"""The case summary projection on real PostgreSQL: follows the log, rebuilds identically."""
from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from uuid import uuid4

import psycopg
import pytest

from petitions.domain.values import Actor
from petitions.infra.projection import (
    _LOCK_UNFLUSHED,
    PROJECTION_LOCK_KEY,
    UPSERT,
    CaseSummaryProjection,
    _row,
    re_review_issued,
)
from petitions.infra.schema import migrate
from tests.conftest import isolated_env
from tests.integration.conftest import commit_one_by_one_while, new_case

pytestmark = pytest.mark.integration
ROUTER = Actor(id="routing-service", role="service")


async def _snapshot(pool, case_ids):
    # Only the given cases: other tests share the table, some with rows made by hand (no
    # events behind them), which a rebuild rightly does not bring back.
    rows = await pool.fetch("SELECT case_id, status, unit_id, version, registered_position, "
                            "re_review_issued, summary FROM case_summaries "
                            "WHERE case_id = ANY($1::uuid[]) ORDER BY case_id", case_ids)
    return [(r["case_id"], r["status"], r["unit_id"], r["version"], r["registered_position"],
             r["re_review_issued"], json.loads(r["summary"])) for r in rows]


async def test_projection_follows_the_log_and_rebuild_reproduces_it(pool, store, event_log):
    cases = [new_case() for _ in range(30)]
    await asyncio.to_thread(store.save, *cases)
    for c in cases[:10]:
        c.route_to_unit(unit_id="land-330106", unit_name="L", rule_id="r", rule_set_version="1",
                        explanation="x", actor=ROUTER, at=datetime.now(UTC))
    await asyncio.to_thread(store.save, *cases[:10])

    projection = CaseSummaryProjection(pool, event_log, batch=13)
    head = await event_log.head()
    assert await projection.catch_up() == head

    ids = [c.id for c in cases]
    before = await _snapshot(pool, ids)
    routed = {str(c.id) for c in cases[:10]}
    by_id = {str(r[0]): r for r in before}
    assert all(by_id[i][2] == "land-330106" and by_id[i][3] == 2 for i in routed)
    assert all(str(c.id) in by_id for c in cases)
    assert all("petitioner" not in r[6] for r in before)

    await projection.rebuild()
    assert await _snapshot(pool, ids) == before


async def test_two_projectors_apply_each_event_once(pool, store, event_log):
    cases = [new_case() for _ in range(20)]
    await asyncio.to_thread(store.save, *cases)
    a, b = CaseSummaryProjection(pool, event_log, batch=5), CaseSummaryProjection(pool, event_log, batch=5)
    await asyncio.gather(a.catch_up(), b.catch_up())
    rows = await pool.fetch("SELECT version FROM case_summaries WHERE case_id = ANY($1::uuid[])",
                            [c.id for c in cases])
    assert sorted(r["version"] for r in rows) == [1] * 20


async def test_a_running_projector_is_woken_by_each_commit_without_polling(pool, store,
                                                                          event_log):
    """After a short batch the projector waits for the next commit's NOTIFY instead of
    reading again: with polling off, every case committed one by one, some while it applies
    a batch, reaches the read model."""
    projection = CaseSummaryProjection(pool, event_log, batch=3)
    cases = await commit_one_by_one_while(
        lambda stopping: projection.run(stopping, poll_interval=3600), store, event_log,
        lambda: projection.position)
    stored = {r["case_id"] for r in await pool.fetch("SELECT case_id FROM case_summaries")}
    assert {c.id for c in cases} <= stored


async def test_a_projected_batch_is_committed_without_waiting_for_the_disk(pool):
    """A batch lost in a crash is applied again from the log (its position goes with it): the
    statement that takes the projector's lock also spares the commit its WAL flush."""
    async with pool.acquire() as conn:
        async with conn.transaction():
            assert await conn.fetchval(_LOCK_UNFLUSHED, PROJECTION_LOCK_KEY) is True
            assert await conn.fetchval("SHOW synchronous_commit") == "off"
        assert await conn.fetchval("SHOW synchronous_commit") == "on"


async def test_commits_close_together_are_projected_in_one_batch(pool, store, event_log):
    """The commit that wakes the projector and those within its gathering window after it
    are applied together: one transaction instead of one per commit."""
    projection = CaseSummaryProjection(pool, event_log, gather_s=3.0)
    applied = []
    catch_up_once = projection.catch_up_once

    async def counted() -> bool:
        progressed = await catch_up_once()
        if progressed:
            applied.append(projection.position)
        return progressed

    projection.catch_up_once = counted  # type: ignore[method-assign]
    await projection.catch_up()  # what earlier tests left in the log
    applied.clear()
    stopping = asyncio.Event()
    running = asyncio.create_task(projection.run(stopping, poll_interval=3600))
    try:
        await asyncio.sleep(0.2)  # idle, waiting for a commit
        cases = [new_case() for _ in range(5)]
        for case in cases:
            await asyncio.to_thread(store.save, case)
        head = await event_log.head()
        async with asyncio.timeout(30):
            while projection.position < head:
                await asyncio.sleep(0.05)
    finally:
        stopping.set()
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert applied == [head]
    stored = {r["case_id"] for r in await pool.fetch("SELECT case_id FROM case_summaries")}
    assert {c.id for c in cases} <= stored


async def test_a_summary_rewritten_with_its_indexed_fields_unchanged_is_updated_in_place(pool):
    """No index reads the summary document (migration 16), so the projector's rewrite of a
    case whose status, division and keys stay is a HOT update: no new index entries, nothing
    for vacuum to clear from the indexes. A status change updates the indexes as it must."""
    case_id = uuid4()
    summary = {"case_number": f"330106-2026-{case_id.hex[:8]}", "division": "330106",
               "status": "registered", "category": "appeal", "channel": "letter",
               "registered_at": datetime.now(UTC).isoformat(), "version": 1, "subject": "land"}
    hot = "SELECT pg_stat_get_xact_tuples_hot_updated('case_summaries'::regclass)"
    async with pool.acquire() as conn:
        writing = conn.transaction()
        await writing.start()
        try:
            await conn.execute(UPSERT, *_row(case_id, summary, 1, ("key", "digest")))
            before = await conn.fetchval(hot)
            routed = {**summary, "version": 2, "unit": {"unit_id": "land-330106"}}
            await conn.execute(UPSERT, *_row(case_id, routed, 1, (None, None)))
            assert await conn.fetchval(hot) == before + 1
            accepted = {**routed, "version": 3, "status": "accepted"}
            await conn.execute(UPSERT, *_row(case_id, accepted, 1, (None, None)))
            assert await conn.fetchval(hot) == before + 1  # the status is indexed
        finally:
            await writing.rollback()


@pytest.mark.parametrize("document", [
    {}, {"re_review": None}, {"re_review": {}}, {"re_review": {"issued_on": None}},
    {"re_review": {"issued_on": "2026-03-01"}}, {"re_review": {"issued_on": ""}},
    {"re_review": "2026-03-01"}, {"re_review": ["issued_on"]}])
async def test_the_re_review_column_says_what_the_summary_document_says(pool, document):
    in_sql = await pool.fetchval(
        "SELECT ($1::jsonb->'re_review'->>'issued_on') IS NOT NULL", json.dumps(document))
    assert re_review_issued(document) is in_sql


def test_summaries_stored_as_jsonb_read_the_same_after_migration_17(servers):
    """Migration 17 turns the summary column into json: a summary stored before it is read
    back as the same document, and the screening's `summary->>'subject'` still finds it."""
    case_id = uuid4()
    document = {"case_number": "330106-2026-000001", "division": "330106", "subject": "宅基地",
                "unit": {"unit_id": "land-330106", "assisting_units": []}, "version": 2,
                "deadlines": {"acceptance": {"length": 15, "paused_days": 0}}}
    with isolated_env(servers, "json_summaries") as env:
        dsn = env.postgres_dsn
        with psycopg.connect(dsn, autocommit=True) as conn:  # the table as it was before 17
            conn.execute("ALTER TABLE case_summaries ALTER COLUMN summary TYPE jsonb "
                         "USING summary::jsonb")
            conn.execute("DELETE FROM schema_migrations WHERE version = 17")
            conn.execute(
                "INSERT INTO case_summaries (case_id, case_number, division, status, category,"
                " channel, registered_at, registered_position, version, summary) VALUES"
                " (%s, '330106-2026-000001', '330106', 'registered', 'appeal', 'letter',"
                " now(), 1, 2, %s::jsonb)", (case_id, json.dumps(document, ensure_ascii=False)))
        assert migrate(dsn) == [17]
        with psycopg.connect(dsn) as conn:
            kind, text, subject = conn.execute(
                "SELECT pg_typeof(summary)::text, summary::text, summary->>'subject' "
                "FROM case_summaries WHERE case_id = %s", (case_id,)).fetchone()
        assert (kind, json.loads(text), subject) == ("json", document, "宅基地")
