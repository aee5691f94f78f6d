"""The statutory life of a case, independent of the front door (REST or gRPC).

Each command is a validated body (the pydantic models below, shared by both front doors so they
accept and refuse exactly the same input), the permissions that allow it, and the domain call
it makes. `CaseLifecycle.run` applies one: it checks that the case is visible to the caller
(jurisdiction), that the caller's role may act, that a handling unit leads the case, and saves
with the store's retry on a version conflict; it answers the case summary folded from the store.

Refusals are exceptions the front doors translate: `CaseNotFound` (404 / NOT_FOUND),
`AccessDenied`, `NotTheLeadUnit` and `ActsOnlyForItself` (403 / PERMISSION_DENIED),
`UnitNotNamed` (422 / INVALID_ARGUMENT), and the domain's `IllegalTransition`, `RuleViolation`
and `IncompleteFile`.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cached_property
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from petitions.domain.access import AccessDenied, Permission, Principal, Role
from petitions.domain.calendar import WorkCalendar
from petitions.domain.case import Case
from petitions.domain.deadlines import MAX_EXTENSION_DAYS
from petitions.domain.values import Actor, local_date
from petitions.infra.events import fold_domain_events
from petitions.infra.store import CaseStore, in_thread
from services.intake.queries import CaseQueries

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



# -- refusals ----------------------------------------------------------------------------


class CaseNotFound(Exception):
    """No such case, or one outside the caller's jurisdiction (indistinguishable on purpose)."""

    def __init__(self, case_id: UUID, message: str = "") -> None:
        super().__init__(message or f"no case {case_id}")
        self.case_id = case_id


class NotTheLeadUnit(Exception):
    """A handling unit acts only on the cases it leads."""


class ActsOnlyForItself(Exception):
    """A handling unit named another unit than itself."""


class UnitNotNamed(Exception):
    """A caller that is not a handling unit must name the unit it acts for."""

    field = "unit_id"


# -- the commands ------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """What a command knows when it runs: who, when, the calendar, and the acting unit."""

    actor: Actor
    at: datetime
    calendar: WorkCalendar
    unit: str = ""

    def today(self, given: date | None) -> date:
        """A date the caller left out is today in China, at the command's time."""
        return given if given is not None else local_date(self.at)


Apply = Callable[[Case, Any, Step], None]

DECIDE = (Permission.DECIDE,)
HANDLE = (Permission.HANDLE,)
CLERK_OR_DECIDE = (Permission.REGISTER, Permission.DECIDE)  # a clerk registers these


@dataclass(frozen=True)
class LifecycleCommand:
    """One lifecycle command: its body, who may give it, and the domain call it makes."""

    name: str
    body: Any
    permissions: tuple[Permission, ...]
    apply: Apply
    names_unit: bool = False  # the body's unit_id is the acting unit

    @cached_property
    def adapter(self) -> TypeAdapter[Any]:
        return TypeAdapter(self.body)

    def validate(self, fields: dict[str, Any]) -> Any:
        """The body from plain data (a JSON object's worth); pydantic's ValidationError
        otherwise."""
        return self.adapter.validate_python(fields)


def _acceptance(case: Case, body: Any, s: Step) -> None:
    common = {"decided_on": s.today(body.decided_on), "actor": s.actor, "at": s.at,
              "reason": body.reason}
    if isinstance(body, AcceptIn):
        case.accept(mode=body.mode, lead_unit=body.lead_unit,
                    assisting_units=list(body.assisting_units), **common)
    elif isinstance(body, NotAcceptIn):
        case.not_accept(reason_code=body.reason_code, redirect_organ=body.redirect_organ,
                        **common)
    elif isinstance(body, NotAcceptAgainIn):
        case.not_accept_again(earlier_case_id=str(body.earlier_case_id), ground=body.ground,
                              **common)
    else:
        case.answer_on_the_spot(answer=body.answer, **common)


def _progress(case: Case, b: ProgressIn, s: Step) -> None:
    case.report_progress(unit_id=s.unit, note=b.note, actor=s.actor, at=s.at, reason=b.reason)


def _hearing(case: Case, b: HearingIn, s: Step) -> None:
    case.hold_hearing(held_on=s.today(b.held_on), duration_days=b.duration_days, actor=s.actor,
                      at=s.at, reason=b.reason)


def _objection(case: Case, b: ObjectionIn, s: Step) -> None:
    case.object_to_assignment(unit_id=s.unit, reasons=b.reasons,
                              objected_on=s.today(b.objected_on), calendar=s.calendar,
                              actor=s.actor, at=s.at, reason=b.reason)


def _objection_decision(case: Case, b: ObjectionDecisionIn, s: Step) -> None:
    case.decide_objection(upheld=b.upheld, new_lead_unit=b.new_lead_unit,
                          decided_by=b.decided_by, actor=s.actor, at=s.at, reason=b.reason)


def _extension(case: Case, b: ExtensionIn, s: Step) -> None:
    case.grant_extension(days=b.days, approver=b.approver, petitioner_told=b.petitioner_told,
                         actor=s.actor, at=s.at, reason=b.reason)


def _reply(case: Case, b: ReplyIn, s: Step) -> None:
    case.reply(outcome=b.outcome, reply_text=b.reply_text, replied_on=s.today(b.replied_on),
               actor=s.actor, at=s.at, reason=b.reason)


def _reply_receipt(case: Case, b: ReplyReceiptIn, s: Step) -> None:
    case.record_reply_receipt(received_on=s.today(b.received_on), actor=s.actor, at=s.at,
                              reason=b.reason)


def _review_request(case: Case, b: ReviewRequestIn, s: Step) -> None:
    case.request_review(requested_on=s.today(b.requested_on), organ=b.organ,
                        calendar=s.calendar, actor=s.actor, at=s.at, reason=b.reason)


def _review_opinion(case: Case, b: OpinionIn, s: Step) -> None:
    case.issue_review_opinion(outcome=b.outcome, opinion=b.opinion,
                              issued_on=s.today(b.issued_on), actor=s.actor, at=s.at,
                              reason=b.reason)


def _re_review_request(case: Case, b: ReviewRequestIn, s: Step) -> None:
    case.request_re_review(requested_on=s.today(b.requested_on), organ=b.organ,
                           calendar=s.calendar, actor=s.actor, at=s.at, reason=b.reason)


def _re_review_opinion(case: Case, b: OpinionIn, s: Step) -> None:
    case.issue_re_review_opinion(outcome=b.outcome, opinion=b.opinion,
                                 issued_on=s.today(b.issued_on), actor=s.actor, at=s.at,
                                 reason=b.reason)


def _return_visit(case: Case, b: ReturnVisitIn, s: Step) -> None:
    case.record_return_visit(satisfaction=b.satisfaction, comment=b.comment,
                             visited_on=s.today(b.visited_on), actor=s.actor, at=s.at,
                             reason=b.reason)


def _withdrawal(case: Case, b: WithdrawalIn, s: Step) -> None:
    case.withdraw(voluntary=b.voluntary, actor=s.actor, at=s.at, reason=b.reason)


def _handling_opinion(case: Case, b: HandlingOpinionIn, s: Step) -> None:
    case.record_handling_opinion(opinion=b.opinion, actor=s.actor, at=s.at, reason=b.reason)


def _leader_sign_off(case: Case, b: LeaderSignOffIn, s: Step) -> None:
    case.record_leader_sign_off(leader=b.leader, actor=s.actor, at=s.at, reason=b.reason)


def _petitioner_signature(case: Case, b: PetitionerSignatureIn, s: Step) -> None:
    case.record_petitioner_signature(signed=b.signed, refusal_note=b.refusal_note,
                                     actor=s.actor, at=s.at, reason=b.reason)


def _closure(case: Case, b: ClosureIn, s: Step) -> None:
    case.close(closed_on=s.today(b.closed_on), actor=s.actor, at=s.at, reason=b.reason)


def _archive(case: Case, b: ArchiveIn, s: Step) -> None:
    case.archive(archived_on=s.today(b.archived_on), actor=s.actor, at=s.at, reason=b.reason)


# Named by their REST path under /v1/cases/{case_id}/.
COMMANDS: dict[str, LifecycleCommand] = {c.name: c for c in (
    LifecycleCommand("acceptance", AcceptanceIn, DECIDE, _acceptance),
    LifecycleCommand("progress-reports", ProgressIn, HANDLE, _progress, names_unit=True),
    LifecycleCommand("hearings", HearingIn, HANDLE, _hearing),
    LifecycleCommand("objections", ObjectionIn, HANDLE, _objection, names_unit=True),
    LifecycleCommand("objection-decisions", ObjectionDecisionIn, DECIDE, _objection_decision),
    LifecycleCommand("extensions", ExtensionIn, DECIDE, _extension),
    LifecycleCommand("replies", ReplyIn, HANDLE, _reply),
    LifecycleCommand("reply-receipts", ReplyReceiptIn, HANDLE, _reply_receipt),
    LifecycleCommand("review-requests", ReviewRequestIn, CLERK_OR_DECIDE, _review_request),
    LifecycleCommand("review-opinions", OpinionIn, DECIDE, _review_opinion),
    LifecycleCommand("re-review-requests", ReviewRequestIn, CLERK_OR_DECIDE, _re_review_request),
    LifecycleCommand("re-review-opinions", OpinionIn, DECIDE, _re_review_opinion),
    LifecycleCommand("return-visits", ReturnVisitIn, CLERK_OR_DECIDE, _return_visit),
    LifecycleCommand("withdrawal", WithdrawalIn, CLERK_OR_DECIDE, _withdrawal),
    LifecycleCommand("file/handling-opinion", HandlingOpinionIn, HANDLE, _handling_opinion),
    LifecycleCommand("file/leader-sign-off", LeaderSignOffIn, HANDLE, _leader_sign_off),
    LifecycleCommand("file/petitioner-signature", PetitionerSignatureIn, HANDLE,
                     _petitioner_signature),
    LifecycleCommand("closure", ClosureIn, DECIDE, _closure),
    LifecycleCommand("archive", ArchiveIn, DECIDE, _archive),
)}


# -- running a command -------------------------------------------------------------------


def acting_unit(caller: Principal, given: str | None) -> str:
    """The unit a handling unit acts for is itself; others name the unit."""
    if caller.role is Role.HANDLING_UNIT:
        if given not in (None, caller.unit_id):
            raise ActsOnlyForItself(f"unit '{caller.unit_id}' may act only for itself")
        return caller.unit_id or ""
    if given is None:
        raise UnitNotNamed("name the unit")
    return given


class CaseLifecycle:
    """Applies lifecycle commands to the cases in the store, for whichever front door."""

    def __init__(self, store: CaseStore, queries: CaseQueries, calendar: WorkCalendar,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store = store
        self.queries = queries
        self.calendar = calendar
        self.clock = clock

    async def run(self, command: LifecycleCommand, case_id: UUID, caller: Principal,
                  body: Any) -> dict[str, Any]:
        """Apply one validated command body; the case summary after it."""
        unit = acting_unit(caller, body.unit_id) if command.names_unit else ""
        if await self.queries.get_case(case_id, caller) is None:
            raise CaseNotFound(case_id)
        if not any(caller.may(p) for p in command.permissions):
            raise AccessDenied(caller, command.permissions[-1])
        step = Step(caller.actor(), self.clock(), self.calendar, unit)

        def apply(case: Case) -> None:
            # Checked on the loaded case, inside the retry: the lead unit may have just changed.
            if caller.role is Role.HANDLING_UNIT and case.lead_unit != caller.unit_id:
                raise NotTheLeadUnit(f"unit '{caller.unit_id}' does not lead case {case_id}")
            command.apply(case, body, step)

        if await in_thread(self.store.update, case_id, apply) is None:
            raise CaseNotFound(case_id)
        return await asyncio.to_thread(self.summary_of, case_id)

    def summary_of(self, case_id: UUID) -> dict[str, Any] | None:
        return fold_domain_events(case_id, self.store.history(case_id))
