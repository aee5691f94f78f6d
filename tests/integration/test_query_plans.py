"""Statements that read a batch of cases' events look them up by index whatever the planner's
statistics say: on an event table that has never been analysed (a new database, a
deployment's first minutes, autovacuum not yet round) none of them scans every stored event.
The plans are read with EXPLAIN on the test's PostgreSQL, in custom and generic form (asyncpg
prepares every statement, and PostgreSQL may switch a prepared statement to its generic
plan)."""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import asyncpg
import pytest

from petitions.infra.batching import HISTORIES_SQL
from services.notify.recorder import _STALE_HISTORIES

pytestmark = pytest.mark.integration

# 8,000 events: a plain join of the batch's ids was planned as a hash join over all of them
CASES = 2_000


@pytest.fixture
async def unanalysed(test_env) -> AsyncIterator[tuple[asyncpg.Connection, list[Any]]]:
    """A connection whose search path is a schema of its own holding a copy of the event
    table (indexes included), filled and never analysed; and some of its case ids."""
    schema = f"plan_probe_{uuid4().hex[:8]}"
    conn = await asyncpg.connect(test_env.postgres_dsn)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        await conn.execute(
            f"CREATE TABLE {schema}.cases_events (LIKE public.cases_events INCLUDING ALL) "
            "WITH (autovacuum_enabled = false)")
        await conn.execute(
            f"INSERT INTO {schema}.cases_events "
            "(originator_id, originator_version, topic, state, notification_id) "
            "SELECT md5(i::text)::uuid, v, 'petitions.domain.case:Case.Event', "
            "convert_to(repeat('x', 400), 'UTF8'), i * 4 + v "
            f"FROM generate_series(1, {CASES}) i, generate_series(1, 4) v")
        await conn.execute(f"SET search_path TO {schema}")
        ids = [r[0] for r in await conn.fetch(
            "SELECT DISTINCT originator_id FROM cases_events LIMIT 40")]
        yield conn, ids
    finally:
        await conn.execute("RESET search_path")
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


async def plans(conn: asyncpg.Connection, sql: str, *args: Any) -> dict[str, str]:
    """The statement's plan text, custom and generic."""
    out = {}
    for mode in ("force_custom_plan", "force_generic_plan"):
        await conn.execute(f"SET plan_cache_mode = {mode}")
        out[mode] = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, *args))
    await conn.execute("RESET plan_cache_mode")
    return out


def assert_no_scan_of(table: str, by_mode: dict[str, str]) -> None:
    for mode, plan in by_mode.items():
        assert f"Seq Scan on {table}" not in plan, f"{mode}:\n{plan}"


async def test_the_recorders_reread_of_moved_cases_looks_each_case_up(unanalysed) -> None:
    conn, ids = unanalysed
    by_mode = await plans(conn, _STALE_HISTORIES, ids, [3] * 20 + [None] * 20)
    assert_no_scan_of("cases_events", by_mode)
    assert all("cases_events_pkey" in plan for plan in by_mode.values())


async def test_a_batch_of_histories_is_read_by_index(unanalysed) -> None:
    conn, ids = unanalysed
    assert_no_scan_of("cases_events", await plans(conn, HISTORIES_SQL, ids))
