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
