"""Finding the open case a new petition belongs to: the same petitioner on the same matter
(a repeat), or the same content from another channel or organ (a duplicate)."""
from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import asyncpg

from petitions.domain.matching import CLOSED_STATUSES, content_fingerprint
from petitions.infra.unflushed import UNFLUSHED


@dataclass(frozen=True)
class Match:
    case_id: UUID
    kind: str  # "repeat" | "duplicate"


@dataclass(frozen=True)
class Screening:
    """What a new petition meets. A retried request (its id already stored as a case, or
    linked to one) comes first: then nothing else counts and no number is taken. Otherwise
    the open case it joins (if any); failing that, the matter terminated after re-review it
    repeats (if any) and the sequence number taken for its new case."""

    stored: bool = False
    link: tuple[UUID, str, str] | None = None  # (case id, kind, submission digest)
    match: Match | None = None
    terminated_matter: UUID | None = None
    seq: int | None = None


# The statuses of closed cases as SQL literals: a partial index of open cases (migrations 13
# and 14) is used only where the statement's own condition implies the index's, so the
# open-case lookups state it with these constants, not a parameter.
CLOSED_STATUSES_SQL = ", ".join(f"'{status}'" for status in sorted(CLOSED_STATUSES))

# The idempotent-retry check, `find`, `terminated_matter` and the case-number upsert in one
# statement: one round trip and one pool checkout per registration instead of up to six (on
# a busy intake the client-side cost of each query is what limits throughput). The same
# precedence as running them in turn: a retried request's id ($8) wins; then a repeat over a
# duplicate; the terminated matter is looked up, and a number taken, only when the petition
# joins no open case. An empty petitioner key (an anonymous petition) never matches. A
# request without a key ($8 NULL) skips the log lookups outright: a plan cached while the
# log was small may scan it, and that scan grows with the log. Whether the request's case is
# stored is its newest version (an aggregate: an index lookup): as an EXISTS, a plan made
# while the log was small read the log from the start until it found the case.
#
# The petitioner and the content are matched as a range (`>= $1 AND <= $1`) and ordered by
# that column first, not by `= $1`: the pool's plans are generic, and a generic plan estimates
# `= $1` from the column's number of distinct values. With few petitioners or few contents in
# the table (a campaign of identical letters), `=` looked like it matched most cases, so the
# plan walked every case in registration order for the first match: for a petition matching
# nothing, a read of the whole table per registration. A range has a fixed estimate, and the
# ordering can then come only from the lookup's own partial index, (petitioner, category,
# registered_position) or (content, registered_position): a lookup reads at most the
# petitioner's open (or terminated) cases of that category, or the open cases of that content.
#
# The statement commits without waiting for the WAL flush (`UNFLUSHED`): the number it takes
# is a row lock on the county's counter, held until commit, so every registration of a county
# waited for the flushes of all before it. A crash can lose only numbers that no stored case
# holds: the case is appended after this commit, and that append's flush covers every earlier
# WAL record, this one included.
SCREEN_SQL = f"""
WITH stored AS (
    SELECT max(originator_version) IS NOT NULL AS yes FROM cases_events
     WHERE $8::uuid IS NOT NULL AND originator_id = $8::uuid
), earlier AS (
    SELECT 1 FROM stored WHERE yes
    UNION ALL SELECT 1 FROM registration_links WHERE request_id = $8::uuid
), repeat AS (
    SELECT case_id FROM case_summaries
     WHERE $1 <> '' AND petitioner_key >= $1 AND petitioner_key <= $1
       AND category = $2 AND summary->>'subject' = $3
       AND status NOT IN ({CLOSED_STATUSES_SQL})
     ORDER BY petitioner_key, category, registered_position DESC LIMIT 1
), duplicate AS (
    SELECT case_id FROM case_summaries
     WHERE NOT EXISTS (SELECT 1 FROM repeat)
       AND content_digest >= $4 AND content_digest <= $4
       AND status NOT IN ({CLOSED_STATUSES_SQL})
     ORDER BY content_digest DESC, registered_position LIMIT 1
), open_match AS (
    SELECT case_id FROM repeat UNION ALL SELECT case_id FROM duplicate
), terminated AS (
    SELECT case_id FROM case_summaries
     WHERE $1 <> '' AND NOT EXISTS (SELECT 1 FROM open_match)
       AND petitioner_key >= $1 AND petitioner_key <= $1
       AND category = $2 AND summary->>'subject' = $3
       AND (status = 'terminated' OR (summary->'re_review'->>'issued_on') IS NOT NULL)
     ORDER BY petitioner_key, category, registered_position DESC LIMIT 1
), number AS (
    INSERT INTO case_numbers (county, year, last_seq)
    SELECT $5::text, $6::int, 1
     WHERE $7::boolean AND NOT EXISTS (SELECT 1 FROM open_match)
       AND NOT EXISTS (SELECT 1 FROM earlier)
    ON CONFLICT (county, year) DO UPDATE SET last_seq = case_numbers.last_seq + 1
    RETURNING last_seq
)
SELECT (SELECT yes FROM stored) AS stored,
       l.case_id AS link_case_id, l.kind AS link_kind, l.submission_digest AS link_digest,
       (SELECT case_id FROM repeat) AS repeat, (SELECT case_id FROM duplicate) AS duplicate,
       (SELECT case_id FROM terminated) AS terminated, (SELECT last_seq FROM number) AS seq
  FROM {UNFLUSHED}
  LEFT JOIN registration_links l ON l.request_id = $8::uuid
"""


class OpenCaseFinder:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def screen(self, *, petitioner_key: str, division: str, category: str, subject: str,
                     content: str, number_for: tuple[str, int] | None,
                     request_id: UUID | None = None) -> Screening:
        """Whether `request_id` (a retried request's case id) is already stored or linked;
        if not, `find`, then (when nothing matches) `terminated_matter` and, when
        `number_for` (county, year) is given, the next case number of that county and year."""
        county, year = number_for if number_for is not None else ("", 0)
        row = await self.pool.fetchrow(
            SCREEN_SQL, petitioner_key, category, subject,
            content_fingerprint(division, category, content),
            county, year, number_for is not None, request_id)
        if row["stored"]:
            return Screening(stored=True)
        if row["link_case_id"] is not None:
            return Screening(link=(row["link_case_id"], row["link_kind"], row["link_digest"]))
        if row["repeat"] is not None:
            return Screening(match=Match(row["repeat"], "repeat"))
        if row["duplicate"] is not None:
            return Screening(match=Match(row["duplicate"], "duplicate"))
        return Screening(terminated_matter=row["terminated"], seq=row["seq"])

    async def remember_link(self, request_id: UUID, case_id: UUID, kind: str, digest: str) -> None:
        await self.pool.execute(
            "INSERT INTO registration_links (request_id, case_id, kind, submission_digest) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (request_id) DO NOTHING",
            request_id, case_id, kind, digest)
