"""The statutory life of a case over REST: one sub-resource per command.

Every endpoint is a POST with a JSON body holding the command's fields and a required
`reason`; the actor (who, role, jurisdiction) comes from the bearer token and the time from the
injected clock, and all four are recorded on the event. Dates are ISO dates (China's calendar
day) and default to today.

Answers: 200 with the case summary folded from the store after the command; 404 when the case
does not exist or is outside the caller's jurisdiction; 403 when the role lacks the permission,
or a handling unit acts on a case it does not lead; 409 when the case's status does not allow
the action (`current_state`, `allowed_actions`); 422 when the content breaks a rule (an
incomplete case file lists what is `missing`).
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import Body, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from petitions.domain.access import AccessDenied, Permission, Principal, Role
from petitions.domain.calendar import WorkCalendar
from petitions.domain.case import Case
from petitions.domain.deadlines import MAX_EXTENSION_DAYS
from petitions.domain.errors import IncompleteFile
from petitions.domain.values import Actor, local_date
from petitions.infra.events import fold_domain_events
from petitions.infra.http import current_principal
from petitions.infra.store import CaseStore, in_thread
from services.intake.queries import CaseQueries

Caller = Annotated[Principal, Depends(current_principal)]

Text = Annotated[str, Field(min_length=1, max_length=20_000)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Reason = Annotated[str, Field(min_length=1, max_length=2_000,
                              description="why: recorded on the event with actor and time")]
Day = Annotated[date | None, Field(description="ISO date; defaults to today (China)")]
OpinionOutcome = Literal["upheld", "changed", "revoked"]


class Command(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Reason


# -- acceptance ------------------------------------------------------------------------------


class AcceptIn(Command):
    decision: Literal["accept"]
    mode: Literal["assign", "transfer"] = Field(
        description="assign (交办: the unit reports back) or transfer (转送)")
    lead_unit: Name
    assisting_units: list[Name] = Field(default_factory=list, max_length=20)
    decided_on: Day = None


class NotAcceptIn(Command):
    decision: Literal["not_accept"]
    reason_code: Literal["outside_remit", "litigation_arbitration_review", "criminal_case_filed",
                         "no_clear_subject_or_facts"]
    redirect_organ: str = Field("", max_length=200)
    decided_on: Day = None


class NotAcceptAgainIn(Command):
    decision: Literal["not_accept_again"]
    earlier_case_id: UUID
    ground: Literal["same_matter_open", "terminated_after_re_review"]
    decided_on: Day = None


class AnswerOnTheSpotIn(Command):
    decision: Literal["answer_on_the_spot"]
    answer: Text
    decided_on: Day = None


AcceptanceIn = Annotated[AcceptIn | NotAcceptIn | NotAcceptAgainIn | AnswerOnTheSpotIn,
                         Field(discriminator="decision")]


# -- handling --------------------------------------------------------------------------------


class ProgressIn(Command):
    unit_id: Name | None = Field(None, description="defaults to the calling unit")
    note: Text


class HearingIn(Command):
    held_on: Day = None
    duration_days: int = Field(ge=1, le=365)


class ObjectionIn(Command):
    unit_id: Name | None = Field(None, description="defaults to the calling unit")
    reasons: Text
    objected_on: Day = None


class ObjectionDecisionIn(Command):
    upheld: bool
    new_lead_unit: Name | None = None
    decided_by: Name = Field(description="the units' common superior")


class ExtensionIn(Command):
    days: int = Field(ge=1, le=MAX_EXTENSION_DAYS)
    approver: Name
    petitioner_told: bool


class ReplyIn(Command):
    outcome: Literal["adopted", "supported", "explained_not_supported"]
    reply_text: Text
    replied_on: Day = None


class ReplyReceiptIn(Command):
    received_on: Day = None


# -- review and re-review --------------------------------------------------------------------


class ReviewRequestIn(Command):
    requested_on: Day = None
    organ: Name


class OpinionIn(Command):
    outcome: OpinionOutcome
    opinion: Text
    issued_on: Day = None


# -- return visit, withdrawal, the file, closing ---------------------------------------------


class ReturnVisitIn(Command):
    satisfaction: Literal["satisfied", "basically_satisfied", "dissatisfied"]
    comment: str = Field("", max_length=5_000)
    visited_on: Day = None


class WithdrawalIn(Command):
    voluntary: bool


class HandlingOpinionIn(Command):
    opinion: Text


class LeaderSignOffIn(Command):
    leader: Name


class PetitionerSignatureIn(Command):
    signed: bool
    refusal_note: str = Field("", max_length=2_000)


class ClosureIn(Command):
    closed_on: Day = None


class ArchiveIn(Command):
    archived_on: Day = None


# -- answers other than 200 ------------------------------------------------------------------


class Problem(BaseModel):
    """403 / 404."""

    error: str | None = None
    detail: Any = None


class Refused(BaseModel):
    """409: the case's status does not allow the action now."""

    error: str
    current_state: str
    allowed_actions: list[str]


class Unprocessable(BaseModel):
    """422: a malformed field (`detail`, as for any request) or a command that breaks a rule
    (`error`; an incomplete case file also lists what is `missing`)."""

    detail: list[dict[str, Any]] | None = None
    error: str | None = None
    missing: list[str] | None = None


# -- wiring ----------------------------------------------------------------------------------


class NotTheLeadUnit(Exception):
    """A handling unit acts only on the cases it leads."""


Run = Callable[[Case, Actor, datetime], None]

DECIDE = (Permission.DECIDE,)
HANDLE = (Permission.HANDLE,)
CLERK_OR_DECIDE = (Permission.REGISTER, Permission.DECIDE)  # a clerk registers these


def mount_lifecycle_routes(app: FastAPI, store: CaseStore, queries: CaseQueries,
                           calendar: WorkCalendar,
                           clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
    @app.exception_handler(IncompleteFile)
    async def incomplete_file(_: Request, exc: IncompleteFile) -> JSONResponse:
        return JSONResponse(status_code=422, content={"error": str(exc), "missing": exc.missing})

    def summary_of(case_id: UUID) -> dict[str, Any] | None:
        return fold_domain_events(case_id, store.history(case_id))

    async def act(case_id: UUID, caller: Principal, permissions: tuple[Permission, ...],
                  run: Run) -> Any:
        if await queries.get_case(case_id, caller) is None:
            raise HTTPException(404, detail=f"no case {case_id}")
        if not any(caller.may(p) for p in permissions):
            raise AccessDenied(caller, permissions[-1])
        actor, at = caller.actor(), clock()

        def command(case: Case) -> None:
            if caller.role is Role.HANDLING_UNIT and case.lead_unit != caller.unit_id:
                raise NotTheLeadUnit(f"unit '{caller.unit_id}' does not lead case {case_id}")
            run(case, actor, at)

        try:
            case = await in_thread(store.update, case_id, command)
        except NotTheLeadUnit as exc:
            return JSONResponse(status_code=403, content={"error": str(exc)})
        if case is None:
            raise HTTPException(404, detail=f"no case {case_id}")
        return await asyncio.to_thread(summary_of, case_id)

    def unit_of(caller: Principal, given: str | None) -> str:
        """The unit a handling unit acts for is itself; others name the unit."""
        if caller.role is Role.HANDLING_UNIT:
            if given not in (None, caller.unit_id):
                raise HTTPException(403, detail=f"unit '{caller.unit_id}' may act only for "
                                                "itself")
            return caller.unit_id or ""
        if given is None:
            raise HTTPException(422, detail=[{"loc": ["body", "unit_id"], "type": "missing",
                                              "msg": "name the unit"}])
        return given

    def today(at: datetime, given: date | None) -> date:
        return given if given is not None else local_date(at)

    tags = ["lifecycle"]
    answers: dict[int | str, dict[str, Any]] = {
        403: {"model": Problem}, 404: {"model": Problem}, 409: {"model": Refused},
        422: {"model": Unprocessable}}

    def post(path: str):
        return app.post(f"/v1/cases/{{case_id}}{path}", tags=tags, responses=answers)

    # -- acceptance ------------------------------------------------------------------------

    @post("/acceptance")
    async def acceptance(case_id: UUID, body: Annotated[AcceptanceIn, Body()],
                         caller: Caller) -> Any:
        """Accept (assign or transfer), not accept, not accept again, or answer on the spot."""
        def run(case: Case, actor: Actor, at: datetime) -> None:
            common = {"decided_on": today(at, body.decided_on), "actor": actor, "at": at,
                      "reason": body.reason}
            if isinstance(body, AcceptIn):
                case.accept(mode=body.mode, lead_unit=body.lead_unit,
                            assisting_units=list(body.assisting_units), **common)
            elif isinstance(body, NotAcceptIn):
                case.not_accept(reason_code=body.reason_code,
                                redirect_organ=body.redirect_organ, **common)
            elif isinstance(body, NotAcceptAgainIn):
                case.not_accept_again(earlier_case_id=str(body.earlier_case_id),
                                      ground=body.ground, **common)
            else:
                case.answer_on_the_spot(answer=body.answer, **common)

        return await act(case_id, caller, DECIDE, run)

    # -- handling --------------------------------------------------------------------------

    @post("/progress-reports")
    async def progress(case_id: UUID, body: ProgressIn, caller: Caller) -> Any:
        unit = unit_of(caller, body.unit_id)
        return await act(case_id, caller, HANDLE, lambda case, actor, at: case.report_progress(
            unit_id=unit, note=body.note, actor=actor, at=at, reason=body.reason))

    @post("/hearings")
    async def hearing(case_id: UUID, body: HearingIn, caller: Caller) -> Any:
        return await act(case_id, caller, HANDLE, lambda case, actor, at: case.hold_hearing(
            held_on=today(at, body.held_on), duration_days=body.duration_days, actor=actor,
            at=at, reason=body.reason))

    @post("/objections")
    async def objection(case_id: UUID, body: ObjectionIn, caller: Caller) -> Any:
        unit = unit_of(caller, body.unit_id)
        return await act(case_id, caller, HANDLE,
                         lambda case, actor, at: case.object_to_assignment(
                             unit_id=unit, reasons=body.reasons,
                             objected_on=today(at, body.objected_on), calendar=calendar,
                             actor=actor, at=at, reason=body.reason))

    @post("/objection-decisions")
    async def objection_decision(case_id: UUID, body: ObjectionDecisionIn,
                                 caller: Caller) -> Any:
        return await act(case_id, caller, DECIDE, lambda case, actor, at: case.decide_objection(
            upheld=body.upheld, new_lead_unit=body.new_lead_unit, decided_by=body.decided_by,
            actor=actor, at=at, reason=body.reason))

    @post("/extensions")
    async def extension(case_id: UUID, body: ExtensionIn, caller: Caller) -> Any:
        """The one extension (at most 30 days); `reason` is what the petitioner is told."""
        return await act(case_id, caller, DECIDE, lambda case, actor, at: case.grant_extension(
            days=body.days, approver=body.approver, petitioner_told=body.petitioner_told,
            actor=actor, at=at, reason=body.reason))

    @post("/replies")
    async def reply(case_id: UUID, body: ReplyIn, caller: Caller) -> Any:
        return await act(case_id, caller, HANDLE, lambda case, actor, at: case.reply(
            outcome=body.outcome, reply_text=body.reply_text,
            replied_on=today(at, body.replied_on), actor=actor, at=at, reason=body.reason))

    @post("/reply-receipts")
    async def reply_receipt(case_id: UUID, body: ReplyReceiptIn, caller: Caller) -> Any:
        return await act(case_id, caller, HANDLE,
                         lambda case, actor, at: case.record_reply_receipt(
                             received_on=today(at, body.received_on), actor=actor, at=at,
                             reason=body.reason))

    # -- review and re-review --------------------------------------------------------------

    @post("/review-requests")
    async def review_request(case_id: UUID, body: ReviewRequestIn, caller: Caller) -> Any:
        return await act(case_id, caller, CLERK_OR_DECIDE,
                         lambda case, actor, at: case.request_review(
                             requested_on=today(at, body.requested_on), organ=body.organ,
                             calendar=calendar, actor=actor, at=at, reason=body.reason))

    @post("/review-opinions")
    async def review_opinion(case_id: UUID, body: OpinionIn, caller: Caller) -> Any:
        return await act(case_id, caller, DECIDE,
                         lambda case, actor, at: case.issue_review_opinion(
                             outcome=body.outcome, opinion=body.opinion,
                             issued_on=today(at, body.issued_on), actor=actor, at=at,
                             reason=body.reason))

    @post("/re-review-requests")
    async def re_review_request(case_id: UUID, body: ReviewRequestIn, caller: Caller) -> Any:
        return await act(case_id, caller, CLERK_OR_DECIDE,
                         lambda case, actor, at: case.request_re_review(
                             requested_on=today(at, body.requested_on), organ=body.organ,
                             calendar=calendar, actor=actor, at=at, reason=body.reason))

    @post("/re-review-opinions")
    async def re_review_opinion(case_id: UUID, body: OpinionIn, caller: Caller) -> Any:
        return await act(case_id, caller, DECIDE,
                         lambda case, actor, at: case.issue_re_review_opinion(
                             outcome=body.outcome, opinion=body.opinion,
                             issued_on=today(at, body.issued_on), actor=actor, at=at,
                             reason=body.reason))

    # -- return visit and withdrawal -------------------------------------------------------

    @post("/return-visits")
    async def return_visit(case_id: UUID, body: ReturnVisitIn, caller: Caller) -> Any:
        """A dissatisfied petitioner reopens the work (a new reply is required)."""
        return await act(case_id, caller, CLERK_OR_DECIDE,
                         lambda case, actor, at: case.record_return_visit(
                             satisfaction=body.satisfaction, comment=body.comment,
                             visited_on=today(at, body.visited_on), actor=actor, at=at,
                             reason=body.reason))

    @post("/withdrawal")
    async def withdrawal(case_id: UUID, body: WithdrawalIn, caller: Caller) -> Any:
        """Voluntary: the case is withdrawn. Not voluntary: flagged for investigation, and the
        case stays as it is."""
        return await act(case_id, caller, CLERK_OR_DECIDE, lambda case, actor, at: case.withdraw(
            voluntary=body.voluntary, actor=actor, at=at, reason=body.reason))

    # -- the case file, closing and archiving ----------------------------------------------

    @post("/file/handling-opinion")
    async def handling_opinion(case_id: UUID, body: HandlingOpinionIn, caller: Caller) -> Any:
        return await act(case_id, caller, HANDLE,
                         lambda case, actor, at: case.record_handling_opinion(
                             opinion=body.opinion, actor=actor, at=at, reason=body.reason))

    @post("/file/leader-sign-off")
    async def leader_sign_off(case_id: UUID, body: LeaderSignOffIn, caller: Caller) -> Any:
        return await act(case_id, caller, HANDLE,
                         lambda case, actor, at: case.record_leader_sign_off(
                             leader=body.leader, actor=actor, at=at, reason=body.reason))

    @post("/file/petitioner-signature")
    async def petitioner_signature(case_id: UUID, body: PetitionerSignatureIn,
                                   caller: Caller) -> Any:
        return await act(case_id, caller, HANDLE,
                         lambda case, actor, at: case.record_petitioner_signature(
                             signed=body.signed, refusal_note=body.refusal_note, actor=actor,
                             at=at, reason=body.reason))

    @post("/closure")
    async def closure(case_id: UUID, body: ClosureIn, caller: Caller) -> Any:
        """Close on a complete file; otherwise 422 with the list of what is `missing`."""
        return await act(case_id, caller, DECIDE, lambda case, actor, at: case.close(
            closed_on=today(at, body.closed_on), actor=actor, at=at, reason=body.reason))

    @post("/archive")
    async def archive(case_id: UUID, body: ArchiveIn, caller: Caller) -> Any:
        return await act(case_id, caller, DECIDE, lambda case, actor, at: case.archive(
            archived_on=today(at, body.archived_on), actor=actor, at=at, reason=body.reason))
