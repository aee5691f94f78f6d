"""Intake's REST API: register petitions and query cases."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from petitions.domain.access import Principal
from petitions.domain.values import CaseStatus, Category, Channel, Contact, Petitioner
from petitions.infra.http import CompactJSONResponse, bearer_principal, current_principal
from services.intake.audit_api import case_as_of
from services.intake.lean_lane import add_lean_lane
from services.intake.queries import MAX_PAGE_SIZE, BadPageToken, CaseQueries
from services.intake.registration import (
    IdempotencyKeyReused,
    OutsideJurisdiction,
    Registrar,
    RegisterPetition,
    registration_view,
)

DIVISION_PATTERN = r"^[1-9]\d{5}$"
# Petitions are registered as they arrive; nothing predates the electronic record.
EARLIEST_RECEIPT = datetime(2000, 1, 1, tzinfo=UTC)
ID_NUMBER_PATTERN = r"^\d{17}[\dXx]$"


PHONE_PATTERN = r"^\+?[\d\- ]{5,20}$|^$"
EMAIL_PATTERN = r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$|^$"


class PetitionerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    id_number: str = Field("", pattern=rf"{ID_NUMBER_PATTERN}|^$")
    phone: str = Field("", pattern=PHONE_PATTERN)
    address: str = Field("", max_length=300)
    email: str = Field("", max_length=254, pattern=EMAIL_PATTERN)


class ContactIn(BaseModel):
    """A representative of a collective visit, or a joint petition's designated contact:
    notices owed to the petitioners go to them."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    phone: str = Field("", pattern=PHONE_PATTERN)
    email: str = Field("", max_length=254, pattern=EMAIL_PATTERN)
    address: str = Field("", max_length=300)

    def to_contact(self) -> Contact:
        return Contact(**self.model_dump())


# a name alone (as before contacts were recorded), or a contact
RepresentativeIn = Annotated[str, Field(min_length=1, max_length=100)] | ContactIn


class PetitionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channel: Channel
    category: Category
    division: str = Field(pattern=DIVISION_PATTERN, description="6-digit division code")
    subject: str = Field(min_length=1, max_length=200)
    content: str = Field(min_length=1, max_length=50_000)
    requests: list[Annotated[str, Field(min_length=1, max_length=2_000)]] = Field(
        default_factory=list, max_length=50)
    people_count: int = Field(1, ge=1, le=100_000)
    petitioner: PetitionerIn | None = None
    anonymous: bool = False
    received_at: datetime | None = Field(None, description="defaults to now")
    accused_unit: str | None = Field(
        None, max_length=100, description="for an accusation: the unit accused (never routed to)")
    representatives: list[RepresentativeIn] = Field(
        default_factory=list, max_length=50,
        description="the representatives of a visit of 5 or more people (at most 5): each a "
                    "name, or a contact with phone and e-mail to receive the notices")
    contact: ContactIn | None = Field(
        None, description="a joint petition's designated contact (2 or more signatories, not a "
                          "visit): notices go to this person")

    @model_validator(mode="after")
    def _named_or_anonymous(self) -> PetitionIn:
        if self.anonymous and self.petitioner is not None:
            raise ValueError("an anonymous petition has no petitioner")
        if not self.anonymous and self.petitioner is None:
            raise ValueError("give the petitioner, or set anonymous: true")
        if self.received_at is not None and self.received_at.tzinfo is None:
            raise ValueError("received_at needs a time zone offset")
        if self.received_at is not None and self.received_at < EARLIEST_RECEIPT:
            raise ValueError(f"received_at is before {EARLIEST_RECEIPT.date()}")
        return self

    def to_command(self, now: datetime) -> RegisterPetition:
        received = self.received_at or now
        if received > now:
            raise HTTPException(422, detail=[{"loc": ["body", "received_at"],
                                              "msg": "received_at is in the future"}])
        petitioner = Petitioner(**self.petitioner.model_dump()) if self.petitioner else None
        return RegisterPetition(
            channel=self.channel, category=self.category, division=self.division,
            subject=self.subject, content=self.content, requests=list(self.requests),
            people_count=self.people_count, petitioner=petitioner, received_at=received,
            accused_unit=self.accused_unit or "",
            representatives=tuple(r.to_contact() if isinstance(r, ContactIn) else Contact(name=r)
                                  for r in self.representatives),
            contact=self.contact.to_contact() if self.contact else None,
        )


class RegisteredOut(BaseModel):
    case_id: UUID
    case_number: str
    status: str
    received_at: datetime
    linked_as: str | None = None


Caller = Annotated[Principal, Depends(current_principal)]


IDEMPOTENCY_KEY_MAX = 200


def mount_routes(app: FastAPI, registrar: Registrar, queries: CaseQueries,
                 clock: Any = lambda: datetime.now(UTC)) -> None:
    async def register_petition(
        petition: PetitionIn,
        caller: Caller,
        idempotency_key: Annotated[str | None, Header(max_length=IDEMPOTENCY_KEY_MAX)] = None,
    ) -> JSONResponse:
        now = clock()
        try:
            result = await registrar.register(petition.to_command(now), caller, now,
                                              idempotency_key)
        except IdempotencyKeyReused as exc:
            raise HTTPException(422, detail=str(exc)) from exc
        except OutsideJurisdiction as exc:
            raise HTTPException(403, detail=str(exc)) from exc
        headers = {"Location": f"/v1/cases/{result.case.id}"}
        if result.replayed:
            headers["Idempotent-Replayed"] = "true"
        # 201 for a new case; 200 when the petition joined an open case as a repeat/duplicate.
        status = 200 if result.linked_as else 201
        return CompactJSONResponse(registration_view(result.case, result.linked_as),
                                   status_code=status, headers=headers)

    async def register_at_once(request: Request) -> Response | None:
        """The registration of a well-formed, authenticated request (see LeanLane)."""
        caller = await bearer_principal(request)
        key = request.headers.get("idempotency-key")
        if caller is None or (key is not None and len(key) > IDEMPOTENCY_KEY_MAX):
            return None
        try:
            petition = PetitionIn.model_validate_json(await request.body())
        except ValidationError:
            return None
        return await register_petition(petition, caller, key)

    app.router.add_api_route(
        "/v1/petitions", register_petition, methods=["POST"], status_code=201,
        response_model=RegisteredOut, tags=["petitions"],
        responses={200: {"model": RegisteredOut,
                         "description": "joined an open case as a repeat or duplicate"},
                   401: {}, 403: {}, 413: {}, 415: {}, 422: {}})
    add_lean_lane(app, "/v1/petitions", "POST", register_at_once)

    @app.get("/v1/cases/{case_id}", tags=["cases"], responses={403: {}, 404: {}})
    async def get_case(case_id: UUID, caller: Caller,
                       as_of: str | None = Query(None, max_length=64)) -> dict[str, Any]:
        if as_of is not None:  # the case as it stood then (AUDIT), folded from its events
            return await case_as_of(queries, case_id, caller, as_of)
        summary = await queries.get_case(case_id, caller)
        if summary is None:
            raise HTTPException(404, detail=f"no case {case_id}")
        return summary

    @app.get("/v1/cases/{case_id}/events", tags=["cases"], responses={404: {}})
    async def case_events(case_id: UUID, caller: Caller) -> dict[str, Any]:
        events = await queries.history(case_id, caller)
        if events is None:
            raise HTTPException(404, detail=f"no case {case_id}")
        return {"case_id": str(case_id), "events": events}

    @app.get("/v1/cases", tags=["cases"], responses={400: {}})
    async def list_cases(
        caller: Caller,
        division: Annotated[str | None, Query(pattern=DIVISION_PATTERN)] = None,
        status: CaseStatus | None = None,
        page_token: Annotated[str | None, Query(max_length=100)] = None,
        page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    ) -> dict[str, Any]:
        try:
            return await queries.list_cases(caller, division=division,
                                            status=status.value if status else None,
                                            page_token=page_token, page_size=page_size)
        except BadPageToken as exc:
            raise HTTPException(400, detail=str(exc)) from exc
