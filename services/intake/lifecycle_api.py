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

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import Body, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from petitions.domain.access import Principal
from petitions.domain.calendar import WorkCalendar
from petitions.domain.errors import IncompleteFile
from petitions.infra.http import current_principal
from petitions.infra.store import CaseStore
from services.intake.lifecycle import (
    COMMANDS,
    AcceptanceIn,
    ActsOnlyForItself,
    ArchiveIn,
    CaseLifecycle,
    CaseNotFound,
    ClosureIn,
    ExtensionIn,
    HandlingOpinionIn,
    HearingIn,
    LeaderSignOffIn,
    NotTheLeadUnit,
    ObjectionDecisionIn,
    ObjectionIn,
    OpinionIn,
    PetitionerSignatureIn,
    ProgressIn,
    ReplyIn,
    ReplyReceiptIn,
    ReturnVisitIn,
    ReviewRequestIn,
    UnitNotNamed,
    WithdrawalIn,
)
from services.intake.queries import CaseQueries

Caller = Annotated[Principal, Depends(current_principal)]


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


def mount_lifecycle_routes(app: FastAPI, store: CaseStore, queries: CaseQueries,
                           calendar: WorkCalendar,
                           clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
    lifecycle = CaseLifecycle(store, queries, calendar, clock)

    @app.exception_handler(IncompleteFile)
    async def incomplete_file(_: Request, exc: IncompleteFile) -> JSONResponse:
        return JSONResponse(status_code=422, content={"error": str(exc), "missing": exc.missing})

    async def act(name: str, case_id: UUID, caller: Principal, body: Any) -> Any:
        """Run the command; the lifecycle's refusals as HTTP answers (the domain's own go to
        the app's exception handlers)."""
        try:
            return await lifecycle.run(COMMANDS[name], case_id, caller, body)
        except CaseNotFound as exc:
            raise HTTPException(404, detail=str(exc)) from exc
        except NotTheLeadUnit as exc:
            return JSONResponse(status_code=403, content={"error": str(exc)})
        except ActsOnlyForItself as exc:
            raise HTTPException(403, detail=str(exc)) from exc
        except UnitNotNamed as exc:
            raise HTTPException(422, detail=[{"loc": ["body", exc.field], "type": "missing",
                                              "msg": str(exc)}]) from exc

    tags = ["lifecycle"]
    answers: dict[int | str, dict[str, Any]] = {
        403: {"model": Problem}, 404: {"model": Problem}, 409: {"model": Refused},
        422: {"model": Unprocessable}}

    def post(path: str):
        return app.post(f"/v1/cases/{{case_id}}/{path}", tags=tags, responses=answers)

    # -- acceptance ------------------------------------------------------------------------

    @post("acceptance")
    async def acceptance(case_id: UUID, body: Annotated[AcceptanceIn, Body()],
                         caller: Caller) -> Any:
        """Accept (assign or transfer), not accept, not accept again, or answer on the spot."""
        return await act("acceptance", case_id, caller, body)

    # -- handling --------------------------------------------------------------------------

    @post("progress-reports")
    async def progress(case_id: UUID, body: ProgressIn, caller: Caller) -> Any:
        return await act("progress-reports", case_id, caller, body)

    @post("hearings")
    async def hearing(case_id: UUID, body: HearingIn, caller: Caller) -> Any:
        return await act("hearings", case_id, caller, body)

    @post("objections")
    async def objection(case_id: UUID, body: ObjectionIn, caller: Caller) -> Any:
        return await act("objections", case_id, caller, body)

    @post("objection-decisions")
    async def objection_decision(case_id: UUID, body: ObjectionDecisionIn,
                                 caller: Caller) -> Any:
        return await act("objection-decisions", case_id, caller, body)

    @post("extensions")
    async def extension(case_id: UUID, body: ExtensionIn, caller: Caller) -> Any:
        """The one extension (at most 30 days); `reason` is what the petitioner is told."""
        return await act("extensions", case_id, caller, body)

    @post("replies")
    async def reply(case_id: UUID, body: ReplyIn, caller: Caller) -> Any:
        return await act("replies", case_id, caller, body)

    @post("reply-receipts")
    async def reply_receipt(case_id: UUID, body: ReplyReceiptIn, caller: Caller) -> Any:
        return await act("reply-receipts", case_id, caller, body)

    # -- review and re-review --------------------------------------------------------------

    @post("review-requests")
    async def review_request(case_id: UUID, body: ReviewRequestIn, caller: Caller) -> Any:
        return await act("review-requests", case_id, caller, body)

    @post("review-opinions")
    async def review_opinion(case_id: UUID, body: OpinionIn, caller: Caller) -> Any:
        return await act("review-opinions", case_id, caller, body)

    @post("re-review-requests")
    async def re_review_request(case_id: UUID, body: ReviewRequestIn, caller: Caller) -> Any:
        return await act("re-review-requests", case_id, caller, body)

    @post("re-review-opinions")
    async def re_review_opinion(case_id: UUID, body: OpinionIn, caller: Caller) -> Any:
        return await act("re-review-opinions", case_id, caller, body)

    # -- return visit and withdrawal -------------------------------------------------------

    @post("return-visits")
    async def return_visit(case_id: UUID, body: ReturnVisitIn, caller: Caller) -> Any:
        """A dissatisfied petitioner reopens the work (a new reply is required)."""
        return await act("return-visits", case_id, caller, body)

    @post("withdrawal")
    async def withdrawal(case_id: UUID, body: WithdrawalIn, caller: Caller) -> Any:
        """Voluntary: the case is withdrawn. Not voluntary: flagged for investigation, and the
        case stays as it is."""
        return await act("withdrawal", case_id, caller, body)

    # -- the case file, closing and archiving ----------------------------------------------

    @post("file/handling-opinion")
    async def handling_opinion(case_id: UUID, body: HandlingOpinionIn, caller: Caller) -> Any:
        return await act("file/handling-opinion", case_id, caller, body)

    @post("file/leader-sign-off")
    async def leader_sign_off(case_id: UUID, body: LeaderSignOffIn, caller: Caller) -> Any:
        return await act("file/leader-sign-off", case_id, caller, body)

    @post("file/petitioner-signature")
    async def petitioner_signature(case_id: UUID, body: PetitionerSignatureIn,
                                   caller: Caller) -> Any:
        return await act("file/petitioner-signature", case_id, caller, body)

    @post("closure")
    async def closure(case_id: UUID, body: ClosureIn, caller: Caller) -> Any:
        """Close on a complete file; otherwise 422 with the list of what is `missing`."""
        return await act("closure", case_id, caller, body)

    @post("archive")
    async def archive(case_id: UUID, body: ArchiveIn, caller: Caller) -> Any:
        return await act("archive", case_id, caller, body)
