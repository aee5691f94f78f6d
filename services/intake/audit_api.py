"""Intake's audit endpoints: verify a case's hash chain, export it for archiving, and show a
case as it stood at a past version or time (`GET /v1/cases/{id}?as_of=`).

Scoped like every read: a case outside the caller's jurisdiction answers 404; a visible case
without the AUDIT permission answers 403.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

import asyncpg
from fastapi import Depends, FastAPI, HTTPException
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from petitions.domain.access import Permission, Principal, require
from petitions.infra.audit import CaseAudit, export_case, summary_as_of
from petitions.infra.http import current_principal
from petitions.infra.store import CaseStore
from services.intake.queries import CaseQueries

MAX_VERSION = 2**63 - 1  # the store's bigint
Caller = Annotated[Principal, Depends(current_principal)]

_OFFSET_SPACE = re.compile(r" (\d{2}(?::?\d{2})?)$")  # a '+' that a query string turned into ' '


def mount_audit_routes(app: FastAPI, queries: CaseQueries, store: CaseStore, pool: asyncpg.Pool,
                       clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
    audit = CaseAudit(pool)

    async def audited(case_id: UUID, caller: Principal) -> None:
        if await queries.get_case(case_id, caller) is None:
            raise HTTPException(404, detail=f"no case {case_id}")
        require(caller, Permission.AUDIT)

    @app.get("/v1/cases/{case_id}/verify", tags=["audit"], responses={403: {}, 404: {}})
    async def verify_case(case_id: UUID, caller: Caller) -> dict[str, Any]:
        """Recompute the case's hash chain from the stored bytes: ok, or the first event
        that was altered, removed or reordered."""
        await audited(case_id, caller)
        result = await audit.verify_case(case_id)
        if result is None:
            raise HTTPException(404, detail=f"no case {case_id}")
        return {**result.as_dict(), "verified_at": clock().isoformat()}

    @app.get("/v1/cases/{case_id}/export", tags=["audit"], responses={403: {}, 404: {}})
    async def export(case_id: UUID, caller: Caller) -> JSONResponse:
        """The case as one archivable JSON document; `python -m petitions.audit verify-export`
        re-verifies it without the database."""
        await audited(case_id, caller)
        document = await export_case(audit, store, queries.identity_reads, case_id, caller,
                                     clock())
        if document is None:
            raise HTTPException(404, detail=f"no case {case_id}")
        return JSONResponse(jsonable_encoder(document), headers={
            "Content-Disposition": f'attachment; filename="case-{case_id}.json"'})


def parse_as_of(as_of: str) -> tuple[int | None, datetime | None]:
    """A version number ("3") or an ISO 8601 time with a UTC offset; ValueError otherwise."""
    text = as_of.strip()
    if text.isascii() and text.isdigit():
        version = int(text)
        if not 1 <= version <= MAX_VERSION:
            raise ValueError(f"a version number is between 1 and {MAX_VERSION}")
        return version, None
    text = _OFFSET_SPACE.sub(r"+\1", text)
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("as_of is neither a version number nor an ISO 8601 time") from None
    if at.tzinfo is None:
        raise ValueError("as_of needs a time zone offset (e.g. 2026-01-05T09:00:00+08:00)")
    return None, at


async def case_as_of(queries: CaseQueries, case_id: UUID, caller: Principal,
                     as_of: str) -> dict[str, Any]:
    """The case exactly as it stood at a version or time, folded from its events (422 for a
    malformed as_of, 404 when invisible or not yet registered then, 403 without AUDIT)."""
    try:
        version, at = parse_as_of(as_of)
    except ValueError as exc:
        raise HTTPException(422, detail=[{"loc": ["query", "as_of"], "msg": str(exc),
                                          "type": "value_error", "input": as_of}]) from exc
    if await queries.get_case(case_id, caller) is None:
        raise HTTPException(404, detail=f"no case {case_id}")
    require(caller, Permission.AUDIT)
    summary = await summary_as_of(queries.pool, queries.store.decode, case_id,
                                  version=version, at=at)
    if summary is None:
        raise HTTPException(404, detail=f"case {case_id} was not yet registered at {as_of}")
    if version is not None and summary["version"] < version:
        raise HTTPException(404, detail=f"case {case_id} has no version {version} "
                                        f"(its latest is {summary['version']})")
    return {**summary, "as_of": {"requested": as_of, "version": summary["version"],
                                 "recorded_at": summary["updated_at"]}}
