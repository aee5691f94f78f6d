"""Read side of intake: case summaries from the projection, histories from the store."""
from __future__ import annotations

import base64
import json
from typing import Any
from uuid import UUID

import asyncpg

from petitions.domain.access import Permission, Principal
from petitions.domain.values import CaseStatus
from petitions.infra.divisions import division_condition
from petitions.infra.events import fold_domain_events, history_entry
from petitions.infra.identity import IdentityReads, redact_identity
from petitions.infra.store import CaseStore, in_thread

MAX_PAGE_SIZE = 200
MAX_POSITION = 2**63 - 1  # notification ids are bigint


class BadPageToken(ValueError):
    pass


def case_divisions(summary: dict[str, Any]) -> list[str]:
    """Every jurisdiction that may see the case: where it arose and any it was moved to."""
    return summary.get("jurisdictions") or [summary["division"]]


class CaseQueries:
    """Every read is scoped to the caller: a case outside its jurisdiction does not exist."""

    def __init__(self, pool: asyncpg.Pool, store: CaseStore) -> None:
        self.pool = pool
        self.store = store
        self.identity_reads = IdentityReads(pool)

    async def get_case(self, case_id: UUID, principal: Principal) -> dict[str, Any] | None:
        summary = await self._summary(case_id)
        if summary is None or not principal.can_see(*case_divisions(summary)):
            return None
        return summary

    async def _summary(self, case_id: UUID) -> dict[str, Any] | None:
        raw = await self.pool.fetchval("SELECT summary FROM case_summaries WHERE case_id = $1", case_id)
        if raw is not None:
            return json.loads(raw)
        # Not projected yet (the projection trails the store by milliseconds): fold the
        # case's own events with the same function the projection uses.
        return await in_thread(self._summary_from_store, case_id)

    def _summary_from_store(self, case_id: UUID) -> dict[str, Any] | None:
        events = self.store.history(case_id)
        if any(not type(e).__qualname__.startswith("Case.") for e in events):
            return None  # another aggregate's id: not a case
        return fold_domain_events(case_id, events)

    async def history(self, case_id: UUID, principal: Principal,
                      purpose: str = "case history") -> list[dict[str, Any]] | None:
        """The case's events in order; identity only for roles that need it, and every such
        read is itself recorded."""
        if await self.get_case(case_id, principal) is None:
            return None
        entries = [history_entry(e) for e in await in_thread(self.store.history, case_id)]
        if principal.may(Permission.READ_IDENTITY):
            await self.identity_reads.record(case_id, principal, purpose)
            return entries
        return [redact_identity(e) for e in entries]

    async def list_cases(self, principal: Principal, *, division: str | None,
                         status: str | None, page_token: str | None,
                         page_size: int) -> dict[str, Any]:
        after = decode_page_token(page_token) if page_token else None
        prefix = principal.scope_prefix(division)
        if prefix is None:  # the requested division is outside the caller's jurisdiction
            return {"items": [], "next_page_token": None}
        rows = await self.pool.fetch(*listing_query(prefix, status, after, page_size + 1))
        items = [json.loads(r["summary"]) for r in rows[:page_size]]
        more = len(rows) > page_size
        token = encode_page_token(rows[page_size - 1]["registered_position"]) if more else None
        return {"items": items, "next_page_token": token}


def listing_query(prefix: str, status: str | None, after: int | None,
                  limit: int) -> tuple[Any, ...]:
    """The statement and arguments of a page of a division's cases, newest first."""
    # Listed under the division that holds the case now (a transferred case moves queues).
    # a county's code, or a city's or the province's digits written in (case_summaries_city_idx)
    clause, args = division_condition(prefix, by_leading_digits=True)
    clauses = [clause]
    if status and args:
        args.append(status)
        clauses.append(f"status = ${len(args)}")
    elif status:
        # with a city or the province written in, so is the status: the plan for a status
        # few cases have is not the one for a status most have
        clauses.append(f"status = '{CaseStatus(status).value}'")  # one of ours, or ValueError
    if after is not None:
        args.append(after)
        clauses.append(f"registered_position < ${len(args)}")
    args.append(limit)
    return (f"SELECT summary, registered_position FROM case_summaries "
            f"WHERE {' AND '.join(clauses)} "
            f"ORDER BY registered_position DESC LIMIT ${len(args)}", *args)


def encode_page_token(position: int) -> str:
    return base64.urlsafe_b64encode(f"p:{position}".encode()).decode().rstrip("=")


def decode_page_token(token: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        kind, _, value = raw.partition(":")
        if kind != "p" or not value.isdigit() or int(value) > MAX_POSITION:
            raise ValueError(token)
        return int(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadPageToken("page_token is not one this service issued") from exc
