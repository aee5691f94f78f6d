"""Finding the open case a new petition belongs to: the same petitioner on the same matter
(a repeat), or the same content from another channel or organ (a duplicate)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple
from uuid import UUID

import asyncpg

from petitions.domain.matching import CLOSED_STATUSES, content_fingerprint
from petitions.infra.columns import as_columns
from petitions.infra.metrics import SCREENING_BATCH_PETITIONS
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
# statement, for a batch of petitions at once (arrays, one element per petition; a row per
# petition comes back, in their order): one round trip per batch instead of up to six per
# registration. On a busy intake the per-statement cost, in the client (a pool checkout, the
# protocol) and in the server (a transaction, a snapshot, the counter row's update and lock),
# was what limited throughput. Per petition, the same precedence as running the lookups in
# turn: a retried request's id wins; then a repeat over a duplicate; the terminated matter is
# looked up, and a number taken, only when the petition joins no open case. An empty
# petitioner key (an anonymous petition) never matches. A request without a key (NULL id)
# skips the log lookups outright: a plan cached while the log was small may scan it, and that
# scan grows with the log. Whether the request's case is stored is its newest version (an
# aggregate: an index lookup): as an EXISTS, a plan made while the log was small read the log
# from the start until it found the case. Petitions of one batch do not see each other, as
# concurrent requests never did: neither is stored when the other is screened.
#
# Each lookup is a LATERAL subquery with LIMIT 1: one index lookup per petition, whatever
# the planner guesses of the batch's size (a join over the whole table is not a plan it has).
# The petitioner and the content are matched as a range (`>= key AND <= key`) and ordered by
# that column first, not by `= key`: the pool's plans are generic, and a generic plan
# estimates `=` from the column's number of distinct values. With few petitioners or few
# contents in the table (a campaign of identical letters), `=` looked like it matched most
# cases, so the plan walked every case in registration order for the first match: for a
# petition matching nothing, a read of the whole table per registration. A range has a fixed
# estimate, and the ordering can then come only from the lookup's own partial index,
# (petitioner, category, registered_position) or (content, registered_position): a lookup
# reads at most the petitioner's open (or terminated) cases of that category, or the open
# cases of that content.
#
# The numbers: the petitions that take one are counted per county and year, each counter is
# moved on by its count in one upsert (in county order, so two batches of two intake replicas
# lock counters in the same order), and the petitions get the numbers in between, in batch
# order. The statement commits without waiting for the WAL flush (`UNFLUSHED`): the counter
# rows stay locked until commit, so every registration of a county waited for the flushes of
# all before it. A crash can lose only numbers that no stored case holds: the cases are
# appended after this commit, and that append's flush covers every earlier WAL record, this
# one included.
SCREEN_SQL = f"""
WITH request AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::int[], $7::boolean[], $8::uuid[])
           WITH ORDINALITY AS r(petitioner_key, category, subject, content_digest, county,
                                year, wants_number, request_id, i)
), screened AS (
    SELECT r.i, r.county, r.year, r.wants_number, stored.yes AS stored,
           link.case_id AS link_case_id, link.kind AS link_kind,
           link.submission_digest AS link_digest, repeat.case_id AS repeat,
           duplicate.case_id AS duplicate, terminated.case_id AS terminated
      FROM request r
     CROSS JOIN LATERAL (
        SELECT max(originator_version) IS NOT NULL AS yes FROM cases_events
         WHERE r.request_id IS NOT NULL AND originator_id = r.request_id) stored
      LEFT JOIN LATERAL (
        SELECT case_id, kind, submission_digest FROM registration_links
         WHERE r.request_id IS NOT NULL AND request_id = r.request_id LIMIT 1) link ON true
      LEFT JOIN LATERAL (
        SELECT case_id FROM case_summaries
         WHERE r.petitioner_key <> ''
           AND petitioner_key >= r.petitioner_key AND petitioner_key <= r.petitioner_key
           AND category = r.category AND summary->>'subject' = r.subject
           AND status NOT IN ({CLOSED_STATUSES_SQL})
         ORDER BY petitioner_key, category, registered_position DESC LIMIT 1) repeat ON true
      LEFT JOIN LATERAL (
        SELECT case_id FROM case_summaries
         WHERE repeat.case_id IS NULL
           AND content_digest >= r.content_digest AND content_digest <= r.content_digest
           AND status NOT IN ({CLOSED_STATUSES_SQL})
         ORDER BY content_digest DESC, registered_position LIMIT 1) duplicate ON true
      LEFT JOIN LATERAL (
        SELECT case_id FROM case_summaries
         WHERE r.petitioner_key <> '' AND repeat.case_id IS NULL AND duplicate.case_id IS NULL
           AND petitioner_key >= r.petitioner_key AND petitioner_key <= r.petitioner_key
           AND category = r.category AND summary->>'subject' = r.subject
           AND (status = 'terminated' OR re_review_issued)
         ORDER BY petitioner_key, category, registered_position DESC LIMIT 1) terminated ON true
), numbered AS (
    SELECT i, county, year, row_number() OVER (PARTITION BY county, year ORDER BY i) AS nth,
           count(*) OVER (PARTITION BY county, year) AS taken
      FROM screened
     WHERE wants_number AND NOT stored AND link_case_id IS NULL
       AND repeat IS NULL AND duplicate IS NULL
), counter AS (
    INSERT INTO case_numbers AS c (county, year, last_seq)
    SELECT county, year, count(*) FROM numbered GROUP BY county, year ORDER BY county, year
    ON CONFLICT (county, year) DO UPDATE SET last_seq = c.last_seq + EXCLUDED.last_seq
    RETURNING county, year, last_seq
)
SELECT s.stored, s.link_case_id, s.link_kind, s.link_digest, s.repeat, s.duplicate,
       s.terminated, counter.last_seq - n.taken + n.nth AS seq
  FROM screened s
  LEFT JOIN numbered n ON n.i = s.i
  LEFT JOIN counter ON counter.county = n.county AND counter.year = n.year
 CROSS JOIN {UNFLUSHED}
 ORDER BY s.i
"""


class ScreeningRequest(NamedTuple):
    """One petition's part of `SCREEN_SQL`'s arguments (an element of each array)."""

    petitioner_key: str
    category: str
    subject: str
    content_digest: str
    county: str  # of the number to take ("" when none is)
    year: int
    wants_number: bool
    request_id: UUID | None  # a request with an Idempotency-Key: the case id it creates


def screening_arguments(requests: Sequence[ScreeningRequest]) -> list[list[object]]:
    """`SCREEN_SQL`'s arguments for these petitions: one array per field."""
    return as_columns(requests, len(ScreeningRequest._fields))


def screening_of(row: asyncpg.Record) -> Screening:
    if row["stored"]:
        return Screening(stored=True)
    if row["link_case_id"] is not None:
        return Screening(link=(row["link_case_id"], row["link_kind"], row["link_digest"]))
    if row["repeat"] is not None:
        return Screening(match=Match(row["repeat"], "repeat"))
    if row["duplicate"] is not None:
        return Screening(match=Match(row["duplicate"], "duplicate"))
    return Screening(terminated_matter=row["terminated"], seq=row["seq"])


# Two intake replicas' batches lock counters in the same (county) order, so they should not
# deadlock; if PostgreSQL still picks one as a deadlock victim, its statement did nothing and
# is run again.
DEADLOCK_RETRIES = 3


def screening_request(*, petitioner_key: str, division: str, category: str, subject: str,
                      content: str, number_for: tuple[str, int] | None,
                      request_id: UUID | None = None) -> ScreeningRequest:
    """What screening a petition asks: whether `request_id` (a retried request's case id) is
    already stored or linked; if not, the open case it joins; then (when nothing matches) the
    terminated matter it repeats and, when `number_for` (county, year) is given, the next
    case number of that county and year."""
    county, year = number_for if number_for is not None else ("", 0)
    return ScreeningRequest(
        petitioner_key, category, subject, content_fingerprint(division, category, content),
        county, year, number_for is not None, request_id)


class OpenCaseFinder:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.statements = 0  # screening statements run so far

    async def screen_batch(self, requests: Sequence[ScreeningRequest]) -> list[Screening]:
        """Several petitions in one statement, one answer each, in their order."""
        arguments = screening_arguments(requests)
        for attempt in range(DEADLOCK_RETRIES):
            try:
                rows = await self.pool.fetch(SCREEN_SQL, *arguments)
                break
            except asyncpg.DeadlockDetectedError:
                if attempt == DEADLOCK_RETRIES - 1:
                    raise
        self.statements += 1
        SCREENING_BATCH_PETITIONS.observe(len(requests))
        return [screening_of(row) for row in rows]

    async def remember_link(self, request_id: UUID, case_id: UUID, kind: str, digest: str) -> None:
        await self.pool.execute(
            "INSERT INTO registration_links (request_id, case_id, kind, submission_digest) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (request_id) DO NOTHING",
            request_id, case_id, kind, digest)
