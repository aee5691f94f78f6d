"""Notify's REST API: the documents of a case, the dead letters, and emergency reports.

Every route needs a bearer token; a case outside the caller's jurisdiction answers 404, as one
that does not exist. Documents addressed to the petitioner carry identity: reading them needs
READ_IDENTITY and is recorded in `identity_reads`.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, FastAPI, Header, HTTPException, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from petitions.domain.access import Permission, Principal, require
from petitions.infra.http import current_principal
from petitions.infra.identity import IdentityReads
from services.notify.documents import html_to_pdf
from services.notify.handler import Notifier

Caller = Annotated[Principal, Depends(current_principal)]


class EmergencyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    occurred_at: datetime = Field(description="when it happened, with a time zone offset")
    place: str = Field(min_length=1, max_length=300)
    scale: str = Field(min_length=1, max_length=300, description="e.g. 约30人聚集")
    people: str = Field("", max_length=2000, description="who is involved (roles, numbers)")
    cause: str = Field(min_length=1, max_length=5000)
    requests: list[Annotated[str, Field(min_length=1, max_length=2000)]] = Field(
        default_factory=list, max_length=50)
    nature: str = Field("", max_length=200, description="self-harm, violence, heading to the "
                        "capital, ...")


def mount_routes(app: FastAPI, notifier: Notifier, identity_reads: IdentityReads,
                 clock: Callable[[], datetime]) -> None:
    repo = notifier.repo

    async def visible_facts(case_id: UUID, caller: Principal):
        facts = await notifier.facts_of(case_id)
        if facts is None or not caller.can_see(*facts.divisions):
            raise HTTPException(404, detail=f"no case {case_id}")
        return facts

    @app.get("/v1/cases/{case_id}/documents", tags=["documents"],
             responses={401: {}, 403: {}, 404: {}})
    async def list_documents(case_id: UUID, caller: Caller) -> dict[str, Any]:
        require(caller, Permission.READ)
        await visible_facts(case_id, caller)
        docs = await repo.case_documents(case_id)
        return {"case_id": str(case_id), "documents": [{
            "document_id": str(d.id), "kind": d.kind, "title": d.title,
            "recipient": d.recipient, "addressed_to_petitioner": d.for_petitioner,
            "event_id": d.event_id, "template": d.template, "digest": d.digest,
            "created_at": d.created_at.isoformat(),
            "href": f"/v1/cases/{case_id}/documents/{d.id}",
        } for d in docs], "deliveries": await repo.for_case(case_id)}

    @app.get("/v1/cases/{case_id}/documents/{doc_id}", tags=["documents"],
             responses={200: {"content": {"text/html": {}, "application/pdf": {}}},
                        401: {}, 403: {}, 404: {}, 406: {}})
    async def get_document(case_id: UUID, doc_id: UUID, caller: Caller,
                           accept: Annotated[str, Header()] = "text/html") -> Response:
        require(caller, Permission.READ)
        await visible_facts(case_id, caller)
        doc = await repo.document(case_id, doc_id)
        if doc is None:
            raise HTTPException(404, detail=f"no document {doc_id} in case {case_id}")
        wants = _negotiate(accept)
        if wants is None:
            raise HTTPException(406, detail="ask for text/html or application/pdf")
        if doc.for_petitioner:
            require(caller, Permission.READ_IDENTITY)
            await identity_reads.record(case_id, caller, f"notify document {doc.kind}")
        headers = {"ETag": f'"{doc.digest}"', "Cache-Control": "private, no-store"}
        if wants == "application/pdf":
            pdf = doc.pdf
            if pdf is None:
                pdf = await asyncio.to_thread(html_to_pdf, doc.html, doc.title)
                await repo.store_pdf(doc, pdf)
            return Response(pdf, media_type="application/pdf", headers={
                **headers, "Content-Disposition": f'inline; filename="{doc.id}.pdf"'})
        return Response(doc.html, media_type="text/html; charset=utf-8", headers=headers)

    @app.get("/v1/dead-letters", tags=["deliveries"], responses={401: {}, 403: {}})
    async def dead_letters(
        caller: Caller,
        division: Annotated[str | None, Query(pattern=r"^[1-9]\d{5}$")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> dict[str, Any]:
        require(caller, Permission.ADMINISTER)
        prefix = caller.scope_prefix(division)
        items = [] if prefix is None else await repo.dead_letters(prefix, limit)
        return {"items": items}

    @app.post("/v1/dead-letters/{delivery_id}/replay", tags=["deliveries"], status_code=202,
              responses={401: {}, 403: {}, 404: {}, 409: {}, 413: {}, 415: {}})
    async def replay(delivery_id: UUID, caller: Caller) -> dict[str, Any]:
        require(caller, Permission.ADMINISTER)
        d = await repo.delivery(delivery_id)
        if d is None or not caller.can_see(d.division):
            raise HTTPException(404, detail=f"no dead letter {delivery_id}")
        if d.state != "dead_lettered":
            raise HTTPException(409, detail=f"delivery is {d.state}, not dead-lettered")
        # on the case first (who asked for the replay, when), then back to pending
        await notifier.recorder.record(d.case_id, lambda c: c.record_notice_requeued(
            notice_id=d.key, kind=d.kind, recipient=d.recipient, channel=d.channel,
            actor=caller.actor(), at=clock()), None)
        if not await repo.requeue(delivery_id):
            raise HTTPException(409, detail="delivery is no longer dead-lettered")
        notifier.wake()
        return {"delivery_id": str(delivery_id), "state": "pending",
                "idempotency_key": d.key}

    @app.post("/v1/cases/{case_id}/emergency-reports", tags=["emergencies"], status_code=201,
              responses={401: {}, 403: {}, 404: {}, 413: {}, 415: {}, 422: {}})
    async def report_emergency(case_id: UUID, report: EmergencyIn,
                               caller: Caller) -> JSONResponse:
        if not (caller.may(Permission.REGISTER) or caller.may(Permission.DECIDE)):
            require(caller, Permission.REGISTER)  # raises 403 naming the permission
        if report.occurred_at.tzinfo is None:
            raise HTTPException(422, detail=[{"loc": ["body", "occurred_at"],
                                              "msg": "occurred_at needs a time zone offset"}])
        await visible_facts(case_id, caller)
        now = clock()

        def append(case: Any) -> None:
            case.report_emergency(
                occurred_at=report.occurred_at, place=report.place, scale=report.scale,
                people=report.people, cause=report.cause, requests=list(report.requests),
                nature=report.nature, actor=caller.actor(), at=now)

        case = await asyncio.to_thread(notifier.store.update, case_id, append)
        if case is None:
            raise HTTPException(404, detail=f"no case {case_id}")
        version = case.version
        # sent at once from here; the bus delivery of the same event then finds it done
        deliveries = await notifier.handle_event(case_id, version)
        return JSONResponse(status_code=201, content={
            "case_id": str(case_id), "version": version,
            "event_id": f"{case_id}:{version}",
            "deliveries": [{"delivery_id": str(d.id), "recipient": d.recipient,
                            "channel": d.channel} for d in deliveries],
        }, headers={"Location": f"/v1/cases/{case_id}/documents"})


def _negotiate(accept: str) -> str | None:
    accept = (accept or "*/*").lower()
    offers = [part.split(";")[0].strip() for part in accept.split(",")]
    for offer in offers:
        if offer in ("text/html", "application/pdf"):
            return offer
        if offer in ("*/*", "text/*"):
            return "text/html"
        if offer == "application/*":
            return "application/pdf"
    return None
