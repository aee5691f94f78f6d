"""Intake's audit endpoints: verify a case's hash chain, export it for archiving, and show a
case as it stood at a past version or time (`GET /v1/cases/{id}?as_of=`).

Scoped like every read: a case outside the caller's jurisdiction answers 404; a visible case
without the AUDIT permission answers 403 (the operations themselves are in
services.intake.auditing, shared with gRPC).
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

import asyncpg
from fastapi import Depends, FastAPI, HTTPException
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from petitions.domain.access import Principal
from petitions.infra.http import current_principal
from petitions.infra.store import CaseStore
from services.intake import auditing
from services.intake.auditing import MAX_VERSION, BadAsOf, CaseAuditing, parse_as_of
from services.intake.lifecycle import CaseNotFound
from services.intake.queries import CaseQueries

__all__ = ["MAX_VERSION", "case_as_of", "mount_audit_routes", "parse_as_of"]

Caller = Annotated[Principal, Depends(current_principal)]


def mount_audit_routes(app: FastAPI, queries: CaseQueries, store: CaseStore, pool: asyncpg.Pool,
                       clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
    audits = CaseAuditing(queries, store, pool, clock)

    @app.get("/v1/cases/{case_id}/verify", tags=["audit"], responses={403: {}, 404: {}})
    async def verify_case(case_id: UUID, caller: Caller) -> dict[str, Any]:
        """Recompute the case's hash chain from the stored bytes: ok, or the first event
        that was altered, removed or reordered."""
        try:
            return await audits.verify(case_id, caller)
        except CaseNotFound as exc:
            raise HTTPException(404, detail=str(exc)) from exc

    @app.get("/v1/cases/{case_id}/export", tags=["audit"], responses={403: {}, 404: {}})
    async def export(case_id: UUID, caller: Caller) -> JSONResponse:
        """The case as one archivable JSON document; `python -m petitions.audit verify-export`
        re-verifies it without the database."""
        try:
            document = await audits.export(case_id, caller)
        except CaseNotFound as exc:
            raise HTTPException(404, detail=str(exc)) from exc
        return JSONResponse(jsonable_encoder(document), headers={
            "Content-Disposition": f'attachment; filename="case-{case_id}.json"'})


async def case_as_of(queries: CaseQueries, case_id: UUID, caller: Principal,
                     as_of: str) -> dict[str, Any]:
    """The case exactly as it stood at a version or time, folded from its events (422 for a
    malformed as_of, 404 when invisible or not yet registered then, 403 without AUDIT)."""
    try:
        version, at = parse_as_of(as_of)
    except BadAsOf as exc:
        raise HTTPException(422, detail=[{"loc": ["query", "as_of"], "msg": str(exc),
                                          "type": "value_error", "input": as_of}]) from exc
    try:
        return await auditing.case_as_of(queries, case_id, caller, version=version, at=at,
                                         requested=as_of)
    except CaseNotFound as exc:
        raise HTTPException(404, detail=str(exc)) from exc
