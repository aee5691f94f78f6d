"""Statements whose cost must not grow with the size of a table.

Those that read a batch of cases' events look them up by index whatever the planner's
statistics say: on an event table that has never been analysed (a new database, a
deployment's first minutes, autovacuum not yet round) none of them scans every stored event.
A page of a case listing reads about a page of summaries, however many cases others have.
The plans are read with EXPLAIN on the test's PostgreSQL, in custom and generic form (asyncpg
prepares every statement, and PostgreSQL may switch a prepared statement to its generic
plan)."""
from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest

from petitions.domain.matching import CLOSED_STATUSES
from petitions.infra.batching import HEADS_SQL, HISTORIES_SQL
from petitions.infra.projection import _CURRENT_SUMMARIES
from services.intake.matching import SCREEN_SQL, ScreeningRequest, screening_arguments
from services.intake.queries import listing_query
from services.notify.recorder import _STALE_HISTORIES
from services.notify.repository import _SETTLE

pytestmark = pytest.mark.integration

# 8,000 events: a plain join of the batch's ids was planned as a hash join over all of them
CASES = 2_000
EVENTS_FILL = ("INSERT INTO {table} "
               "(originator_id, originator_version, topic, state, notification_id) "
               "SELECT md5(i::text)::uuid, v, 'petitions.domain.case:Case.Event', "
               "convert_to(repeat('x', 400), 'UTF8'), i * 4 + v "
               f"FROM generate_series(1, {CASES}) i, generate_series(1, 4) v")


@contextlib.asynccontextmanager
async def scratch_copy(test_env, table: str, fill: str, *, analysed: bool,
                       public_too: bool = False) -> AsyncIterator[asyncpg.Connection]:
    """A connection whose search path is a schema of its own holding a copy of `table`
    (indexes included), filled by `fill` (`{table}` names the copy); analysed, or never.
    With `public_too`, the other tables are found in public."""
    schema = f"plan_probe_{uuid4().hex[:8]}"
    copy = f"{schema}.{table}"
    conn = await asyncpg.connect(test_env.postgres_dsn)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        await conn.execute(f"CREATE TABLE {copy} (LIKE public.{table} INCLUDING ALL) "
                           f"WITH (autovacuum_enabled = {str(analysed).lower()})")
        await conn.execute(fill.format(table=copy))
        if analysed:
            await conn.execute(f"ANALYZE {copy}")
        await conn.execute(f"SET search_path TO {schema}{', public' if public_too else ''}")
        yield conn
    finally:
        await conn.execute("RESET search_path")
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


@pytest.fixture
async def unanalysed(test_env) -> AsyncIterator[tuple[asyncpg.Connection, list[Any]]]:
    """A copy of the event table, filled and never analysed; and some of its case ids."""
    async with scratch_copy(test_env, "cases_events", EVENTS_FILL, analysed=False) as conn:
        ids = [r[0] for r in await conn.fetch(
            "SELECT DISTINCT originator_id FROM cases_events LIMIT 40")]
        yield conn, ids


MODES = ("force_custom_plan", "force_generic_plan")


async def explain(conn: asyncpg.Connection, mode: str, options: str, sql: str,
                  *args: Any) -> list[asyncpg.Record]:
    """EXPLAIN of the statement prepared as the services' driver prepares it, run with
    `args` under `mode` (`EXPLAIN` of a statement with bind parameters would plan it for
    those values only, never generically)."""
    await conn.execute(f"PREPARE probe AS {sql}")
    try:
        literals = await _literals(conn, list(args))
        await conn.execute(f"SET plan_cache_mode = {mode}")
        return await conn.fetch(f"EXPLAIN {options} EXECUTE probe({', '.join(literals)})")
    finally:
        await conn.execute("RESET plan_cache_mode")
        await conn.execute("DEALLOCATE probe")


async def plans(conn: asyncpg.Connection, sql: str, *args: Any) -> dict[str, str]:
    """The statement's plan text, custom and generic."""
    return {mode: "\n".join(r[0] for r in await explain(conn, mode, "", sql, *args))
            for mode in MODES}


async def rows_read(conn: asyncpg.Connection, sql: str, *args: Any,
                    relation: str | None = None) -> dict[str, int]:
    """How many rows the statement's scans (of `relation` only, when given) touched when run
    (those returned plus those filtered out), custom and generic."""
    out = {}
    for mode in MODES:
        rows = await explain(conn, mode, "(ANALYZE, FORMAT JSON)", sql, *args)
        out[mode] = _scanned(json.loads(rows[0][0])[0]["Plan"], relation)
    return out


def _scanned(node: dict[str, Any], relation: str | None = None) -> int:
    """Rows touched by the plan's scans (of `relation` only, when given)."""
    own = 0
    if "Scan" in node["Node Type"] and relation in (None, node.get("Relation Name")):
        own = (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) * node["Actual Loops"]
    return own + sum(_scanned(child, relation) for child in node.get("Plans", []))


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


async def test_the_heads_of_a_batch_of_cases_are_read_by_index(unanalysed) -> None:
    conn, ids = unanalysed
    by_mode = await plans(conn, HEADS_SQL, ids)
    assert_no_scan_of("cases_events", by_mode)
    heads = await conn.fetch(HEADS_SQL, ids + [uuid4()])  # one that has no events
    assert sorted(r["originator_id"] for r in heads) == sorted(ids)
    assert {r["head"] for r in heads} == {4}


SUMMARIES = 20_000
CITIES = 11  # 3301 .. 3311, each of 20 counties (..01 .. ..20)


@pytest.fixture
async def summaries(test_env) -> AsyncIterator[asyncpg.Connection]:
    """A copy of the case summaries of 20,000 cases across 220 counties, analysed."""
    fill = ("INSERT INTO {table} (case_id, case_number, division, status, "
            "category, channel, registered_at, registered_position, version, summary) "
            "SELECT md5(i::text)::uuid, 'n' || i, d, "
            "CASE WHEN i % 10 = 0 THEN 'closed' ELSE 'accepted' END, 'appeal', 'letter', "
            "now(), i, 1, '{{}}' "
            f"FROM generate_series(1, {SUMMARIES}) i, LATERAL (SELECT '33' "
            f"|| lpad((1 + i % {CITIES})::text, 2, '0') "
            f"|| lpad((1 + (i / {CITIES}) % 20)::text, 2, '0') AS d) AS division")
    async with scratch_copy(test_env, "case_summaries", fill, analysed=True) as conn:
        yield conn


PAGE = 51


@pytest.mark.parametrize("prefix, status, bound", [
    ("339901", None, 2 * PAGE),                # a county with no cases yet
    ("3399", None, 2 * PAGE),                  # a city with none yet
    ("330305", None, 2 * PAGE + 100),          # a county's page (its ~90 cases at most)
    ("330305", "closed", 2 * PAGE + 100),      # ... of one status
    # a city has a share of the province's cases: its page lies within its newest few pages
    ("3303", "closed", 2 * PAGE * CITIES),
    ("3303", None, 2 * PAGE * CITIES),
    ("33", None, 2 * PAGE),                    # the province's
    # division codes are digits of any script, as the API's pattern takes them
    ("3\u06630106", None, 2 * PAGE),
    ("3\u066303", "closed", 2 * PAGE),
])
async def test_a_page_of_a_listing_reads_about_a_page(summaries, prefix, status, bound) -> None:
    statement, *args = listing_query(prefix, status, None, PAGE)
    returned = await summaries.fetch(statement, *args)
    expected = await summaries.fetch(
        "SELECT registered_position FROM case_summaries WHERE starts_with(division, $1) "
        "AND ($2::text IS NULL OR status = $2) ORDER BY registered_position DESC LIMIT $3",
        prefix, status, PAGE)
    # the page a prefix match gives
    assert [r["registered_position"] for r in returned] == [
        r["registered_position"] for r in expected]
    for mode, n in (await rows_read(summaries, statement, *args)).items():
        assert n <= bound, f"{mode}: {n} rows read for a page of {PAGE}"


# ---------------------------------------------------------------- plans made on a new database
#
# A pooled connection keeps the plan it made of a statement on first running it; on a new
# database (a deployment's first minutes, until autovacuum analyses the tables) that plan was
# made for an empty table, and a plan that scans or hashes the whole table is cheap there.
# Each statement below is planned on an empty copy, then run after the copy has filled: it
# must still read about what it returns.

def summaries_fill(*, status: str = "'accepted'", category: str = "'appeal'",
                   petitioner: str = "'key' || i", content: str = "'digest' || i") -> str:
    """An INSERT of SUMMARIES case summaries (case i: id md5(i), position i, one county, one
    subject); the SQL expressions of i given here vary the rest."""
    return ("INSERT INTO {table} (case_id, case_number, division, status, category, channel, "
            "registered_at, registered_position, version, summary, petitioner_key, "
            "content_digest) "
            f"SELECT md5(i::text)::uuid, 'n' || i, '330106', {status}, {category}, 'letter', "
            f"now(), i, 1, '{{{{\"subject\": \"s\"}}}}', {petitioner}, {content} "
            f"FROM generate_series(1, {SUMMARIES}) i")


SUMMARIES_FILL = summaries_fill()
DELIVERIES_FILL = ("INSERT INTO {table} (event_id, recipient, channel, id, case_id, "
                   "trigger_version, division, kind, party, document_ids, state) "
                   "SELECT 'e' || i, 'unit', 'webhook', md5(i::text)::uuid, "
                   "md5(i::text)::uuid, 1, '330106', 'assignment', 'unit', '{{}}', 'sending' "
                   f"FROM generate_series(1, {SUMMARIES}) i")


def _case_ids(n: int, first: int = 1) -> list[Any]:
    return [UUID(hashlib.md5(str(i).encode()).hexdigest()) for i in range(first, first + n)]


def _screen_args(key: str, digest: str, request_id: Any) -> list[Any]:
    """SCREEN_SQL's arguments for one petition (a batch of one)."""
    return screening_arguments([ScreeningRequest(key, "appeal", "s", digest, "330106", 2026,
                                                 False, request_id)])


# (table, its fill, statement, its arguments, the most rows it may read)
GROWN = {
    "notify re-reads moved cases": (
        "cases_events", EVENTS_FILL, _STALE_HISTORIES,
        [_case_ids(40), [3] * 20 + [None] * 20], 40 * 4 * 3),
    "a batch's histories": ("cases_events", EVENTS_FILL, HISTORIES_SQL, [_case_ids(40)],
                            40 * 4 * 3),
    "a batch's heads": ("cases_events", EVENTS_FILL, HEADS_SQL, [_case_ids(40)], 40 * 4 * 3),
    "screening a retried request": (
        "cases_events", EVENTS_FILL, SCREEN_SQL, _screen_args("", "d", uuid4()), 10),
    "screening a petition for a match": (
        "case_summaries", SUMMARIES_FILL, SCREEN_SQL, _screen_args("key7", "digest9", None),
        10),
    "the projection's summaries of a batch": (
        "case_summaries", SUMMARIES_FILL, _CURRENT_SUMMARIES, [_case_ids(40)], 40 * 3),
    "notify settles a delivery": (
        "deliveries", DELIVERIES_FILL, _SETTLE,
        [_case_ids(1)[0], "delivered", None, "ref", None], 3),
}


@pytest.mark.parametrize("name", GROWN)
async def test_a_plan_made_on_an_empty_table_stays_a_lookup(test_env, name) -> None:
    table, fill, sql, args, bound = GROWN[name]
    async with scratch_copy(test_env, table, "SELECT 1", analysed=False,
                            public_too=True) as conn:
        await conn.execute(f"PREPARE probe AS {sql}")
        try:
            call = f"EXECUTE probe({', '.join(await _literals(conn, args))})"
            await conn.execute("SET plan_cache_mode = force_generic_plan")
            await conn.execute(call)  # the generic plan is made now, on the empty table
            await conn.execute(fill.format(table=f"{table}"))
            [plan] = await conn.fetchrow(f"EXPLAIN (ANALYZE, FORMAT JSON) {call}")
        finally:
            await conn.execute("RESET plan_cache_mode")
            await conn.execute("DEALLOCATE probe")
    # the copy's rows only: the statement's other tables are the test database's own
    read = _scanned(json.loads(plan)[0]["Plan"], table)
    assert read <= bound, f"{name}: {read} rows read\n{plan}"


async def _literals(conn: asyncpg.Connection, args: list[Any]) -> list[str]:
    """The prepared `probe`'s arguments written as typed literals."""
    types = await conn.fetchval(
        "SELECT parameter_types::text[] FROM pg_prepared_statements WHERE name = 'probe'")
    return [await conn.fetchval(f"SELECT quote_nullable($1::{t}::text) || '::{t}'", a)
            for t, a in zip(types, args, strict=True)]


# ------------------------------------------------------------ screening, whatever the statistics
#
# A generic plan estimates `column = $1` from the column's number of distinct values. When few
# petitioners or few contents make up the table (a campaign of identical letters), `=` was
# estimated to match most rows, and the plan walked every case in registration order for one
# that matched: for a petition matching nothing, a read of the whole table per registration.


def _skewed_fill(petitioners: int, contents: int) -> str:
    return summaries_fill(status="CASE WHEN i % 3 = 0 THEN 'closed' ELSE 'accepted' END",
                          petitioner=f"'key' || (i % {petitioners})",
                          content=f"'digest' || (i % {contents})")


@pytest.mark.parametrize("petitioners, contents", [
    (2, 2), (7, 10), (1, SUMMARIES), (SUMMARIES, 1), (SUMMARIES, SUMMARIES)])
async def test_screening_reads_only_the_cases_it_could_match(test_env, petitioners,
                                                             contents) -> None:
    async with scratch_copy(test_env, "case_summaries", _skewed_fill(petitioners, contents),
                            analysed=True, public_too=True) as conn:
        for key, digest in (("nokey", "nodigest"), ("", "nodigest"), ("key1", "nodigest"),
                            ("nokey", "digest1"), ("key1", "digest1")):
            sharing = await conn.fetchval(
                "SELECT count(*) FILTER (WHERE petitioner_key = $1) "
                "+ count(*) FILTER (WHERE content_digest = $2) FROM case_summaries",
                key, digest)
            args = _screen_args(key, digest, None)
            read = await rows_read(conn, SCREEN_SQL, *args, relation="case_summaries")
            for mode, n in read.items():
                assert n <= sharing, (
                    f"{mode}, petitioner {key!r}, content {digest!r}: {n} rows read; "
                    f"{sharing} share the petitioner or the content")


# ------------------------------------------------------------ a campaign of identical letters
#
# Each batch of a campaign is closed (or not accepted) and the next letters open a new case:
# thousands of closed cases share one content. The duplicate lookup wants an open one only.

CLOSED_OR_NOT_ACCEPTED = "CASE WHEN i % 2 = 0 THEN 'closed' ELSE 'not_accepted' END"
CAMPAIGN_FILL = summaries_fill(status=CLOSED_OR_NOT_ACCEPTED, content="'campaign'")


async def test_a_content_shared_by_many_closed_cases_reads_only_open_ones(test_env) -> None:
    async with scratch_copy(test_env, "case_summaries", CAMPAIGN_FILL, analysed=True,
                            public_too=True) as conn:
        args = _screen_args("nokey", "campaign", None)
        assert (await conn.fetchrow(SCREEN_SQL, *args))["duplicate"] is None
        for mode, n in (await rows_read(conn, SCREEN_SQL, *args,
                                        relation="case_summaries")).items():
            assert n <= 1, f"{mode}: {n} closed cases read to find no open one"
        # One of them is open again: it is found, and it is all that is read.
        await conn.execute("UPDATE case_summaries SET status = 'accepted' "
                           "WHERE registered_position = $1", SUMMARIES // 2)
        await conn.execute("ANALYZE case_summaries")
        found = (await conn.fetchrow(SCREEN_SQL, *args))["duplicate"]
        assert found == _case_ids(1, first=SUMMARIES // 2)[0]
        for mode, n in (await rows_read(conn, SCREEN_SQL, *args,
                                        relation="case_summaries")).items():
            assert n <= 1, f"{mode}: {n} rows read to find the one open case"


# ------------------------------------------------------------ a petitioner of many years
#
# One petitioner, 20,000 closed cases in two categories. A new petition of theirs reads only
# the open cases of its category (for a repeat) and the terminated ones (for the matter it
# repeats), not every case they ever brought.

FREQUENT_FILL = summaries_fill(
    status=CLOSED_OR_NOT_ACCEPTED,
    category="CASE WHEN i % 3 = 0 THEN 'complaint' ELSE 'appeal' END", petitioner="'frequent'")


async def _screen_reads(conn: asyncpg.Connection, args: list[Any]) -> dict[str, int]:
    await conn.execute("ANALYZE case_summaries")
    return await rows_read(conn, SCREEN_SQL, *args, relation="case_summaries")


async def test_a_petitioner_with_many_closed_cases_has_only_the_candidates_read(
        test_env) -> None:
    async with scratch_copy(test_env, "case_summaries", FREQUENT_FILL, analysed=True,
                            public_too=True) as conn:
        args = _screen_args("frequent", "nodigest", None)
        row = await conn.fetchrow(SCREEN_SQL, *args)
        assert (row["repeat"], row["duplicate"], row["terminated"]) == (None, None, None)
        for mode, n in (await _screen_reads(conn, args)).items():
            assert n == 0, f"{mode}: {n} closed cases read to find nothing"
        # One matter was terminated after re-review, and its case closed since: it is found.
        ended = 10_001  # an appeal: not a multiple of 3
        await conn.execute(
            "UPDATE case_summaries SET summary = '{\"subject\": \"s\", \"re_review\": "
            "{\"issued_on\": \"2026-03-01\"}}', re_review_issued = true "
            "WHERE registered_position = $1", ended)
        assert (await conn.fetchrow(SCREEN_SQL, *args))["terminated"] == \
            _case_ids(1, first=ended)[0]
        for mode, n in (await _screen_reads(conn, args)).items():
            assert n <= 1, f"{mode}: {n} rows read to find the terminated matter"
        # A case of theirs in that category is open again: it is the repeat, and all that
        # is read.
        reopened = 5_002  # an appeal too
        await conn.execute("UPDATE case_summaries SET status = 'accepted' "
                           "WHERE registered_position = $1", reopened)
        assert (await conn.fetchrow(SCREEN_SQL, *args))["repeat"] == \
            _case_ids(1, first=reopened)[0]
        for mode, n in (await _screen_reads(conn, args)).items():
            assert n <= 1, f"{mode}: {n} rows read to find the open case"


OPEN_CASE_INDEXES = ("case_summaries_open_content_idx", "case_summaries_open_petitioner_idx")


@pytest.mark.parametrize("index", OPEN_CASE_INDEXES)
async def test_the_open_case_indexes_state_the_closed_statuses_of_the_domain(
        test_env, index) -> None:
    conn = await asyncpg.connect(test_env.postgres_dsn)
    try:
        definition = await conn.fetchval(
            "SELECT indexdef FROM pg_indexes WHERE indexname = $1", index)
    finally:
        await conn.close()
    assert definition is not None
    predicate = definition.split(" WHERE ", 1)[1]
    assert set(re.findall(r"'([a-z_]+)'", predicate)) == set(CLOSED_STATUSES)
