"""Finding the open case a new petition belongs to: the same petitioner on the same matter
(a repeat), or the same content from another channel or organ (a duplicate)."""
from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import asyncpg

from petitions.domain.matching import CLOSED_STATUSES, content_fingerprint


@dataclass(frozen=True)
class Match:
    case_id: UUID
    kind: str  # "repeat" | "duplicate"


@dataclass(frozen=True)
class Screening:
    """What a new petition meets: the open case it joins (if any); otherwise the matter
    terminated after re-review it repeats (if any) and the sequence number taken for its
    new case."""

    match: Match | None
    terminated_matter: UUID | None
    seq: int | None


# `find`, `terminated_matter` and the case-number upsert in one statement (one round trip
# and one pool checkout per registration instead of four of each: on a busy intake the
# client-side cost of each query is what limits throughput). The same precedence as calling
# them in turn: a repeat wins over a duplicate; the terminated matter is looked up, and a
# number taken, only when the petition joins no open case. An empty petitioner key (an
# anonymous petition) never matches.
SCREEN_SQL = """
WITH repeat AS (
    SELECT case_id FROM case_summaries
     WHERE $1 <> '' AND petitioner_key = $1 AND category = $2 AND summary->>'subject' = $3
       AND NOT (status = ANY($5::text[]))
     ORDER BY registered_position DESC LIMIT 1
), duplicate AS (
    SELECT case_id FROM case_summaries
     WHERE NOT EXISTS (SELECT 1 FROM repeat) AND content_digest = $4
       AND NOT (status = ANY($5::text[]))
     ORDER BY registered_position LIMIT 1
), open_match AS (
    SELECT case_id FROM repeat UNION ALL SELECT case_id FROM duplicate
), terminated AS (
    SELECT case_id FROM case_summaries
     WHERE $1 <> '' AND NOT EXISTS (SELECT 1 FROM open_match)
       AND petitioner_key = $1 AND category = $2 AND summary->>'subject' = $3
       AND (status = 'terminated' OR (summary->'re_review'->>'issued_on') IS NOT NULL)
     ORDER BY registered_position DESC LIMIT 1
), number AS (
    INSERT INTO case_numbers (county, year, last_seq)
    SELECT $6::text, $7::int, 1 WHERE $8::boolean AND NOT EXISTS (SELECT 1 FROM open_match)
    ON CONFLICT (county, year) DO UPDATE SET last_seq = case_numbers.last_seq + 1
    RETURNING last_seq
)
SELECT (SELECT case_id FROM repeat) AS repeat, (SELECT case_id FROM duplicate) AS duplicate,
       (SELECT case_id FROM terminated) AS terminated, (SELECT last_seq FROM number) AS seq
"""


class OpenCaseFinder:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def find(self, *, petitioner_key: str, division: str, category: str, subject: str,
                   content: str) -> Match | None:
        if petitioner_key:
            row = await self.pool.fetchrow(
                "SELECT case_id FROM case_summaries WHERE petitioner_key = $1 AND category = $2 "
                "AND summary->>'subject' = $3 AND NOT (status = ANY($4::text[])) "
                "ORDER BY registered_position DESC LIMIT 1",
                petitioner_key, category, subject, list(CLOSED_STATUSES))
            if row is not None:
                return Match(row["case_id"], "repeat")
        row = await self.pool.fetchrow(
            "SELECT case_id FROM case_summaries WHERE content_digest = $1 "
            "AND NOT (status = ANY($2::text[])) ORDER BY registered_position LIMIT 1",
            content_fingerprint(division, category, content), list(CLOSED_STATUSES))
        return Match(row["case_id"], "duplicate") if row is not None else None

    async def screen(self, *, petitioner_key: str, division: str, category: str, subject: str,
                     content: str, number_for: tuple[str, int] | None) -> Screening:
        """`find`, then (when nothing matches) `terminated_matter` and, when `number_for`
        (county, year) is given, the next case number of that county and year."""
        county, year = number_for if number_for is not None else ("", 0)
        row = await self.pool.fetchrow(
            SCREEN_SQL, petitioner_key, category, subject,
            content_fingerprint(division, category, content), list(CLOSED_STATUSES),
            county, year, number_for is not None)
        if row["repeat"] is not None:
            match: Match | None = Match(row["repeat"], "repeat")
        elif row["duplicate"] is not None:
            match = Match(row["duplicate"], "duplicate")
        else:
            match = None
        return Screening(match, row["terminated"], row["seq"])

    async def terminated_matter(self, *, petitioner_key: str, category: str,
                                subject: str) -> UUID | None:
        """The same petitioner's same matter, ended after re-review (终结): not accepted again."""
        if not petitioner_key:
            return None
        return await self.pool.fetchval(
            "SELECT case_id FROM case_summaries WHERE petitioner_key = $1 AND category = $2 "
            "AND summary->>'subject' = $3 AND (status = 'terminated' OR "
            "(summary->'re_review'->>'issued_on') IS NOT NULL) "
            "ORDER BY registered_position DESC LIMIT 1",
            petitioner_key, category, subject)

    async def earlier_link(self, request_id: UUID) -> tuple[UUID, str, str] | None:
        row = await self.pool.fetchrow(
            "SELECT case_id, kind, submission_digest FROM registration_links "
            "WHERE request_id = $1", request_id)
        return (row["case_id"], row["kind"], row["submission_digest"]) if row else None

    async def remember_link(self, request_id: UUID, case_id: UUID, kind: str, digest: str) -> None:
        await self.pool.execute(
            "INSERT INTO registration_links (request_id, case_id, kind, submission_digest) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (request_id) DO NOTHING",
            request_id, case_id, kind, digest)
