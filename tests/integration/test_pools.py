"""The services' asyncpg pools: no reset round trip after an ordinary use, and a full reset
of a connection that held session state."""
from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import uuid4

import asyncpg
import pytest

from petitions.infra.batching import HISTORIES_SQL
from petitions.infra.dsn import as_uri
from petitions.infra.pools import create_pool, holds_session_state

pytestmark = pytest.mark.integration

LOCK_KEY = 727_199_001


@pytest.fixture
async def one_connection(test_env) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(test_env.postgres_dsn, min_size=1, max_size=1)
    yield p
    await p.close()


async def _resets(pool: asyncpg.Pool, use) -> list[str]:
    """The reset statements the connection ran from its use until its next use."""
    seen: list[str] = []
    async with pool.acquire() as conn:
        conn.add_query_logger(lambda record: seen.append(record.query))
        await use(conn)
    async with pool.acquire() as again:
        await again.fetchval("SELECT 1")
    return [q for q in seen if "RESET ALL" in q or "pg_advisory_unlock_all" in q]


async def test_an_ordinary_use_goes_back_to_the_pool_without_a_reset_query(one_connection):
    async def use(conn):
        await conn.fetchval("SELECT 41 + 1")

    assert await _resets(one_connection, use) == []


async def test_a_connection_holding_a_lock_is_fully_reset_on_release(one_connection, test_env):
    async def use(conn):
        holds_session_state(conn)
        assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY)
        await conn.execute("LISTEN petitions_pool_test")
        await conn.execute("SET application_name = 'changed'")

    ran = await _resets(one_connection, use)
    assert len(ran) == 1 and "pg_advisory_unlock_all" in ran[0] and "UNLISTEN" in ran[0]
    other = await asyncpg.connect(as_uri(test_env.postgres_dsn))
    try:  # the lock is free for another session
        assert await other.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY)
    finally:
        await other.close()
    async with one_connection.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM pg_listening_channels()") == 0
        assert await conn.fetchval("SHOW application_name") != "changed"


async def test_a_transaction_left_open_is_rolled_back_on_release(one_connection):
    async with one_connection.acquire() as conn:
        await conn.execute("BEGIN")
        await conn.execute("CREATE TEMP TABLE IF NOT EXISTS pool_test_left_open (x int)")
    async with one_connection.acquire() as conn:
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SELECT to_regclass('pg_temp.pool_test_left_open')") is None


async def test_pooled_sessions_plan_once_without_jit_or_parallel_workers(one_connection):
    async def settings() -> tuple[str, str, str]:
        async with one_connection.acquire() as conn:
            return (await conn.fetchval("SHOW jit"),
                    await conn.fetchval("SHOW max_parallel_workers_per_gather"),
                    await conn.fetchval("SHOW plan_cache_mode"))

    assert await settings() == ("off", "0", "force_generic_plan")

    async def use(conn):  # a session changed, then fully reset on release
        holds_session_state(conn)
        await conn.execute("SET jit = on")
        await conn.execute("SET max_parallel_workers_per_gather = 2")
        await conn.execute("SET plan_cache_mode = auto")

    await _resets(one_connection, use)
    # the reset goes back to the pool's settings
    assert await settings() == ("off", "0", "force_generic_plan")


async def test_a_pooled_statement_is_planned_once(one_connection):
    case_ids = [uuid4()]
    async with one_connection.acquire() as conn:
        for _ in range(8):
            await conn.fetch(HISTORIES_SQL, case_ids)
        plans = await conn.fetchrow(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE statement = $1", HISTORIES_SQL)
    assert (plans["generic_plans"], plans["custom_plans"]) == (8, 0)
