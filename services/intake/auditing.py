"""A case's audit operations, independent of the front door (REST or gRPC): verify its hash
chain, export it for archiving, and show it as it stood at a past version or time.

Scoped like every read: a case outside the caller's jurisdiction is `CaseNotFound`, exactly as
one that does not exist; a visible case without the AUDIT permission is `AccessDenied`.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg

from petitions.domain.access import Permission, Principal, require
from petitions.infra.audit import CaseAudit, export_case, summary_as_of
from petitions.infra.store import CaseStore
from services.intake.lifecycle import CaseNotFound
from services.intake.queries import CaseQueries

MAX_VERSION = 2**63 - 1  # the store's bigint

_OFFSET_SPACE = re.compile(r" (\d{2}(?::?\d{2})?)$")  # a '+' that a query string turned into ' '


class BadAsOf(ValueError):
    """The as-of point is neither a version number nor a time with a UTC offset."""


def parse_as_of(as_of: str) -> tuple[int | None, datetime | None]:
    """A version number ("3") or an ISO 8601 time with a UTC offset; BadAsOf otherwise."""
    text = as_of.strip()
    if text.isascii() and text.isdigit():
        return check_version(int(text)), None
    text = _OFFSET_SPACE.sub(r"+\1", text)
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise BadAsOf("as_of is neither a version number nor an ISO 8601 time") from None
    return None, check_time(at)


def check_version(version: int) -> int:
    if not 1 <= version <= MAX_VERSION:
        raise BadAsOf(f"a version number is between 1 and {MAX_VERSION}")
    return version


def check_time(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise BadAsOf("as_of needs a time zone offset (e.g. 2026-01-05T09:00:00+08:00)")
    return at


class CaseAuditing:
    def __init__(self, queries: CaseQueries, store: CaseStore, pool: asyncpg.Pool,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.queries = queries
        self.store = store
        self.audit = CaseAudit(pool)
        self.clock = clock

    async def audited(self, case_id: UUID, caller: Principal) -> None:
        """Visible first (else not found), then the AUDIT permission (else denied): a case
        outside the jurisdiction never reveals that it exists."""
        if await self.queries.get_case(case_id, caller) is None:
            raise CaseNotFound(case_id)
        require(caller, Permission.AUDIT)

    async def verify(self, case_id: UUID, caller: Principal) -> dict[str, Any]:
        """The chain recomputed from the stored bytes: ok, or the first bad event."""
        await self.audited(case_id, caller)
        result = await self.audit.verify_case(case_id)
        if result is None:
            raise CaseNotFound(case_id)
        return {**result.as_dict(), "verified_at": self.clock().isoformat()}

    async def export(self, case_id: UUID, caller: Principal) -> dict[str, Any]:
        """The archivable document (`python -m petitions.audit verify-export` checks it)."""
        await self.audited(case_id, caller)
        document = await export_case(self.audit, self.store, self.queries.identity_reads,
                                     case_id, caller, self.clock())
        if document is None:
            raise CaseNotFound(case_id)
        return document

    async def as_of(self, case_id: UUID, caller: Principal, *, version: int | None = None,
                    at: datetime | None = None, requested: str) -> dict[str, Any]:
        """The case exactly as it stood at a version or time, folded from its events;
        `requested` is how the caller wrote the point, echoed in the answer."""
        return await case_as_of(self.queries, case_id, caller, version=version, at=at,
                                requested=requested)


async def case_as_of(queries: CaseQueries, case_id: UUID, caller: Principal, *,
                     version: int | None, at: datetime | None,
                     requested: str) -> dict[str, Any]:
    """See `CaseAuditing.as_of`; CaseNotFound when invisible or not yet registered then, or
    when the case has no such version; AccessDenied without AUDIT."""
    if await queries.get_case(case_id, caller) is None:
        raise CaseNotFound(case_id)
    require(caller, Permission.AUDIT)
    summary = await summary_as_of(queries.pool, queries.store.decode, case_id,
                                  version=version, at=at)
    if summary is None:
        raise CaseNotFound(case_id, f"case {case_id} was not yet registered at {requested}")
    if version is not None and summary["version"] < version:
        raise CaseNotFound(case_id, f"case {case_id} has no version {version} "
                                    f"(its latest is {summary['version']})")
    return {**summary, "as_of": {"requested": requested, "version": summary["version"],
                                 "recorded_at": summary["updated_at"]}}
