"""Screening a new petition in one statement: the open case it joins (repeat before
duplicate), the terminated matter it repeats, and its case number — the same answers as the
separate lookups, and a number taken only for a petition that becomes a new case."""
from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from itertools import count

import pytest
from prometheus_client import REGISTRY

from petitions.domain.matching import CLOSED_STATUSES, content_fingerprint
from petitions.infra.pools import holds_session_state
from petitions.infra.projection import re_review_issued
from services.intake.matching import (
    SCREEN_SQL,
    Match,
    OpenCaseFinder,
    Screening,
    ScreeningRequest,
    screening_arguments,
    screening_request,
)
from tests.integration.conftest import new_case

pytestmark = pytest.mark.integration

_positions = count(10_000_000)


async def _summary(pool, *, division: str, category: str = "appeal", subject: str = "land",
                   status: str = "registered", key: str | None = None, content: str = "x",
                   summary: dict | None = None) -> uuid.UUID:
    case_id = uuid.uuid4()
    document = {"subject": subject, **(summary or {})}
    await pool.execute(
        "INSERT INTO case_summaries (case_id, case_number, division, status, category, channel,"
        " registered_at, registered_position, version, summary, petitioner_key, content_digest,"
        " re_review_issued)"
        " VALUES ($1, $2, $3, $4, $5, 'letter', $6, $7, 1, $8::jsonb, $9, $10, $11)",
        case_id, f"{division}-2026-{next(_positions)}", division, status, category,
        datetime.now(UTC), next(_positions), json.dumps(document),
        key, content_fingerprint(division, category, content), re_review_issued(document))
    return case_id


# The lookups one at a time, as intake ran them before screening was one statement: what
# the statement must agree with.

async def find(pool, *, petitioner_key: str, division: str, category: str, subject: str,
               content: str) -> Match | None:
    if petitioner_key:
        row = await pool.fetchrow(
            "SELECT case_id FROM case_summaries WHERE petitioner_key = $1 AND category = $2 "
            "AND summary->>'subject' = $3 AND NOT (status = ANY($4::text[])) "
            "ORDER BY registered_position DESC LIMIT 1",
            petitioner_key, category, subject, list(CLOSED_STATUSES))
        if row is not None:
            return Match(row["case_id"], "repeat")
    row = await pool.fetchrow(
        "SELECT case_id FROM case_summaries WHERE content_digest = $1 "
        "AND NOT (status = ANY($2::text[])) ORDER BY registered_position LIMIT 1",
        content_fingerprint(division, category, content), list(CLOSED_STATUSES))
    return Match(row["case_id"], "duplicate") if row is not None else None


async def terminated_matter(pool, *, petitioner_key: str, category: str,
                            subject: str) -> uuid.UUID | None:
    return await pool.fetchval(
        "SELECT case_id FROM case_summaries WHERE petitioner_key = $1 AND category = $2 "
        "AND summary->>'subject' = $3 AND (status = 'terminated' OR "
        "(summary->'re_review'->>'issued_on') IS NOT NULL) "
        "ORDER BY registered_position DESC LIMIT 1",
        petitioner_key, category, subject)


def _county() -> str:
    return f"9{uuid.uuid4().int % 10**5:05d}"


async def _screen(finder: OpenCaseFinder, division: str, *, key: str = "", content: str = "x",
                  subject: str = "land", number: bool = True,
                  request_id: uuid.UUID | None = None) -> Screening:
    """One petition, in a statement of its own."""
    [screening] = await finder.screen_batch([_request(
        division, key=key, content=content, subject=subject, number=number,
        request_id=request_id)])
    return screening


def _request(division: str, *, key: str = "", content: str = "x", subject: str = "land",
             number: bool = True, request_id: uuid.UUID | None = None) -> ScreeningRequest:
    return screening_request(petitioner_key=key, division=division, category="appeal",
                             subject=subject, content=content,
                             number_for=(division, 2026) if number else None,
                             request_id=request_id)


async def test_a_new_petition_gets_the_next_number_and_no_match(pool):
    finder, county = OpenCaseFinder(pool), _county()
    first = await _screen(finder, county, key=uuid.uuid4().hex, content=uuid.uuid4().hex)
    second = await _screen(finder, county, key=uuid.uuid4().hex, content=uuid.uuid4().hex)
    assert (first.match, first.terminated_matter, first.seq) == (None, None, 1)
    assert (second.match, second.seq) == (None, 2)
    assert (await _screen(finder, county, number=False)).seq is None


async def test_a_repeat_wins_over_a_duplicate_and_takes_no_number(pool):
    finder, county = OpenCaseFinder(pool), _county()
    key, content = uuid.uuid4().hex, uuid.uuid4().hex
    duplicate = await _summary(pool, division=county, content=content)
    repeat = await _summary(pool, division=county, key=key)
    screening = await _screen(finder, county, key=key, content=content)
    assert screening.match == Match(repeat, "repeat")
    assert screening.seq is None and screening.terminated_matter is None
    only_content = await _screen(finder, county, key=uuid.uuid4().hex, content=content)
    assert only_content.match == Match(duplicate, "duplicate") and only_content.seq is None
    # No number was used by the two joins.
    assert (await _screen(finder, county, key=uuid.uuid4().hex, content=uuid.uuid4().hex)).seq == 1
    # The same answers as the separate lookups.
    assert await find(pool, petitioner_key=key, division=county, category="appeal",
                      subject="land", content=content) == Match(repeat, "repeat")


async def test_closed_cases_and_anonymous_petitions_match_nothing(pool):
    finder, county = OpenCaseFinder(pool), _county()
    key, content = uuid.uuid4().hex, uuid.uuid4().hex
    await _summary(pool, division=county, key=key, content=content, status="closed")
    await _summary(pool, division=county, key="", content=uuid.uuid4().hex)
    assert (await _screen(finder, county, key=key, content=content)).match is None
    # An anonymous petition's empty key never matches another's.
    anonymous = await _screen(finder, county, key="", content=uuid.uuid4().hex)
    assert anonymous.match is None and anonymous.terminated_matter is None


async def test_a_matter_terminated_after_re_review_is_named_and_numbered(pool):
    finder, county = OpenCaseFinder(pool), _county()
    key = uuid.uuid4().hex
    ended = await _summary(pool, division=county, key=key, status="terminated")
    reviewed = await _summary(pool, division=county, key=key, subject="water", status="closed",
                              summary={"re_review": {"issued_on": "2026-03-01"}})
    land = await _screen(finder, county, key=key, content=uuid.uuid4().hex)
    water = await _screen(finder, county, key=key, subject="water", content=uuid.uuid4().hex)
    assert (land.match, land.terminated_matter, land.seq) == (None, ended, 1)
    assert (water.match, water.terminated_matter, water.seq) == (None, reviewed, 2)
    assert await terminated_matter(pool, petitioner_key=key, category="appeal",
                                   subject="land") == ended


async def test_a_retried_request_is_recognised_first_and_takes_no_number(pool, store):
    finder, county = OpenCaseFinder(pool), _county()
    key, content = uuid.uuid4().hex, uuid.uuid4().hex
    await _summary(pool, division=county, key=key, content=content)  # an open case it matches
    created = new_case(division=county)
    await asyncio.to_thread(store.save, created)
    linked_request = uuid.uuid4()
    await finder.remember_link(linked_request, created.id, "repeat", "digest-1")

    stored = await _screen(finder, county, key=key, content=content, request_id=created.id)
    linked = await _screen(finder, county, key=key, content=content,
                           request_id=linked_request)
    assert stored == Screening(stored=True)
    assert linked == Screening(link=(created.id, "repeat", "digest-1"))
    # A request id seen for the first time screens as usual.
    fresh = await _screen(finder, county, key=uuid.uuid4().hex, content=uuid.uuid4().hex)
    assert not fresh.stored and fresh.link is None
    assert fresh.seq == 1  # neither retry took a number


def _log_reads(plan: list[dict]) -> list[int]:
    """How many times each plan node on the event log ran (EXPLAIN ANALYZE, JSON)."""
    loops, nodes = [], [plan[0]["Plan"]]
    while nodes:
        node = nodes.pop()
        if node.get("Relation Name") == "cases_events":
            loops.append(node["Actual Loops"])
        nodes.extend(node.get("Plans", []))
    return loops


async def test_a_request_without_a_key_never_reads_the_log(pool, store):
    """Under the generic plan a busy connection ends up with (one that may scan the log when
    it was planned on a small one), a request without an Idempotency-Key leaves the log
    alone; with a key, the log is read."""
    await asyncio.to_thread(store.save, new_case())
    async with pool.acquire() as conn:
        holds_session_state(conn)  # its plan setting and prepared statement go with it
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        await conn.execute("PREPARE screen(text[], text[], text[], text[], text[], int[], "
                           f"boolean[], uuid[]) AS {SCREEN_SQL}")
        reads = {}
        for key in ("NULL", f"'{uuid.uuid4()}'"):
            [plan_json] = await conn.fetchrow(
                "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE screen('{k}', '{appeal}', '{s}', "
                f"'{{d}}', '{{330106}}', '{{2026}}', '{{false}}', ARRAY[{key}]::uuid[])")
            reads[key] = _log_reads(json.loads(plan_json))
        await conn.execute("DEALLOCATE screen")
    assert reads["NULL"] and all(n == 0 for n in reads["NULL"])
    assert any(n > 0 for key, loops in reads.items() if key != "NULL" for n in loops)


async def test_the_number_is_taken_without_waiting_for_the_disk(pool):
    """The counter row is locked until the statement commits: the commit does not wait for
    the WAL flush (the case appended with the number flushes it), and the setting ends with
    the statement's transaction."""
    county = _county()
    async with pool.acquire() as conn:
        holds_session_state(conn)
        async with conn.transaction():
            row = await conn.fetchrow(SCREEN_SQL, *screening_arguments([ScreeningRequest(
                uuid.uuid4().hex, "appeal", "land", uuid.uuid4().hex, county, 2026, True, None)]))
            assert row["seq"] == 1
            assert await conn.fetchval("SHOW synchronous_commit") == "off"
        assert await conn.fetchval("SHOW synchronous_commit") == "on"


async def test_petitions_screened_together_get_the_answers_each_would_alone(pool, store):
    """Petitions screened in one statement: each gets what it would have got alone, and only
    the new cases take numbers, in the order of the batch."""
    finder, county, elsewhere = OpenCaseFinder(pool), _county(), _county()
    key, ended_key, content = uuid.uuid4().hex, uuid.uuid4().hex, uuid.uuid4().hex
    repeat = await _summary(pool, division=county, key=key)
    duplicate = await _summary(pool, division=county, content=content)
    ended = await _summary(pool, division=county, key=ended_key, status="terminated")
    created = new_case(division=county)
    await asyncio.to_thread(store.save, created)
    before = finder.statements

    def new() -> dict:
        return {"key": uuid.uuid4().hex, "content": uuid.uuid4().hex}

    first = await _screen(finder, county, **new())
    together = await finder.screen_batch([
        _request(county, key=key, content=uuid.uuid4().hex),
        _request(county, key=uuid.uuid4().hex, content=content),
        _request(county, key=key, content=content, request_id=created.id),
        _request(elsewhere, **new()),
        _request(county, key=ended_key, content=uuid.uuid4().hex),
        _request(county, **new(), number=False),
        _request(county, **new()),
    ])
    assert finder.statements - before == 2
    assert first == Screening(seq=1)
    assert together == [
        Screening(match=Match(repeat, "repeat")),
        Screening(match=Match(duplicate, "duplicate")),
        Screening(stored=True),
        Screening(seq=1),  # another county's counter
        Screening(terminated_matter=ended, seq=2),
        Screening(),  # no number asked for
        Screening(seq=3),
    ]


def _screened_so_far() -> tuple[float, float]:
    """(petitions, statements) on intake's screening-batch histogram."""
    family = "petitions_screening_batch_petitions"
    return (REGISTRY.get_sample_value(f"{family}_sum") or 0.0,
            REGISTRY.get_sample_value(f"{family}_count") or 0.0)


async def test_concurrent_batches_of_a_county_take_every_number_once(pool):
    finder, county = OpenCaseFinder(pool), _county()
    petitions_before, statements_before = _screened_so_far()
    batches = await asyncio.gather(*(
        finder.screen_batch([_request(county, key=uuid.uuid4().hex, content=uuid.uuid4().hex)
                             for _ in range(10)])
        for _ in range(6)))
    # Batches in flight together commit in any order: each number once, none skipped; each
    # batch moves the counter on once, so its numbers are consecutive, in its own order.
    assert sorted(s.seq for batch in batches for s in batch) == list(range(1, 61))
    for batch in batches:
        assert [s.seq for s in batch] == list(range(batch[0].seq, batch[0].seq + 10))
    petitions, statements = _screened_so_far()
    assert (petitions - petitions_before, statements - statements_before) == (60, 6)
