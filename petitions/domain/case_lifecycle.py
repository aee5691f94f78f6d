"""The statutory life of a case after registration, as commands on `Case`: acceptance,
handling, extension, reply, review and re-review, return visits, withdrawal, the case file,
closing and archiving, and the state they keep.

A mixin of `Case`: the events it triggers are `Case`'s own nested classes (their topics name
`Case`), and the status each allows is the table in lifecycle.py. Every command asks that
table first (IllegalTransition → 409), then checks its content (RuleViolation → 422), and only
then triggers its events, so a refused command appends nothing.

Pure: imports nothing from web, RPC, broker or database libraries.
"""
from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from eventsourcing.domain import Aggregate

from petitions.domain.calendar import WorkCalendar
from petitions.domain.deadlines import (
    MAX_EXTENSION_DAYS,
    OBJECTION_WORKING_DAYS,
    RE_REVIEW_REQUEST_DAYS,
    REVIEW_REQUEST_DAYS,
    working_days_deadline,
)
from petitions.domain.errors import IncompleteFile, RuleViolation
from petitions.domain.lifecycle import (
    ACCEPT_MODES,
    CLOSES_WITHOUT_FILE,
    NOT_ACCEPTED_AGAIN_GROUNDS,
    NOT_ACCEPTED_REASONS,
    OPINION_OUTCOMES,
    REPLY_OUTCOMES,
    SATISFACTION,
    STATUS_AFTER,
    Action,
    Flags,
    require_allowed,
)
from petitions.domain.lifecycle import allowed_actions as lifecycle_allowed_actions
from petitions.domain.lifecycle import day_within as _within
from petitions.domain.lifecycle import missing_file_items as lifecycle_missing_file_items
from petitions.domain.lifecycle import reported_day as _day
from petitions.domain.lifecycle import require_one_of as _one_of
from petitions.domain.lifecycle import require_text as _text
from petitions.domain.values import Actor, CaseStatus, local_date

if TYPE_CHECKING:
    from petitions.domain.case import Case


class CaseLifecycle:
    """Lifecycle commands and state of `Case` (see the module docstring)."""

    def _init_lifecycle(self) -> None:
        self.acceptance: dict[str, Any] | None = None
        self.lead_unit: str | None = None
        self.assisting_units: list[str] = []
        self.assigned_on: str | None = None  # the lead unit's assignment (objection window)
        self.objection: dict[str, Any] | None = None
        self.progress_reports: list[dict[str, str]] = []
        self.hearings: list[dict[str, Any]] = []
        self.extension: dict[str, Any] | None = None
        self.written_reply: dict[str, Any] | None = None
        self.review: dict[str, Any] | None = None
        self.re_review: dict[str, Any] | None = None
        self.return_visits: list[dict[str, str]] = []
        self.reopened = 0
        self.withdrawal: dict[str, Any] | None = None
        self.withdrawal_flags = 0
        self.file: dict[str, Any] = {"handling_opinion": None, "leader_sign_off": None,
                                     "petitioner_signature": None}
        self.closed_on: str | None = None
        self.archived_on: str | None = None

    def _advance(self, e: Any) -> None:
        self.status = STATUS_AFTER.get(type(e).__name__, self.status)

    @staticmethod
    def _new_stage(e: Any) -> dict[str, Any]:
        """A review or re-review as it stands when requested."""
        return {"requested_on": e.requested_on, "organ": e.organ, "outcome": None,
                "issued_on": None, "hearing_days": 0}

    def _with_opinion(self, stage: dict[str, Any], e: Any) -> dict[str, Any]:
        self._advance(e)
        return {**stage, "outcome": e.outcome, "issued_on": e.issued_on}

    def _on_accepted(self, e: Case.Accepted) -> None:
        self._on_decided(e, "accepted", mode=e.mode)
        self.lead_unit = e.lead_unit
        self.assisting_units = list(e.assisting_units)
        self.assigned_on = e.decided_on
        self.objection = None

    def _on_decided(self, e: Any, decision: str, **details: str) -> None:
        self.acceptance = {"decision": decision, "decided_on": e.decided_on, **details}
        self._advance(e)

    def _on_hearing(self, e: Case.HearingHeld) -> None:
        stage = {CaseStatus.UNDER_REVIEW: "review",
                 CaseStatus.UNDER_RE_REVIEW: "re_review"}.get(self.status, "handling")
        self.hearings.append({"held_on": e.held_on, "duration_days": e.duration_days,
                              "stage": stage})
        if stage != "handling":
            current = getattr(self, stage)
            setattr(self, stage, {**current,
                                  "hearing_days": current["hearing_days"] + e.duration_days})

    def _on_objection_decided(self, e: Case.ObjectionDecided) -> None:
        self.objection = {**self.objection, "state": "upheld" if e.upheld else "rejected",
                          "decided_by": e.decided_by, "new_lead_unit": e.new_lead_unit}
        if e.upheld and e.new_lead_unit:
            self.lead_unit = e.new_lead_unit
            self.assisting_units = [u for u in self.assisting_units if u != e.new_lead_unit]
            self.assigned_on = local_date(e.timestamp).isoformat()

    def lifecycle_flags(self) -> Flags:
        objection = self.objection
        return Flags(
            routed=self.is_routed,
            anonymous=self.anonymous,
            objection_pending=objection is not None and objection["state"] == "pending",
            assignment_objected=objection is not None and objection["state"] != "upheld",
            extended=self.extension is not None,
            reply_received=bool(self.written_reply and self.written_reply["received_on"]),
        )

    def allowed_actions(self) -> list[str]:
        return lifecycle_allowed_actions(self)

    def missing_file_items(self) -> list[str]:
        """What the case file lacks before a handled case may be closed."""
        return lifecycle_missing_file_items(
            has_reply=self.written_reply is not None,
            has_handling_opinion=self.file["handling_opinion"] is not None,
            has_leader_sign_off=self.file["leader_sign_off"] is not None,
            has_petitioner_signature=self.file["petitioner_signature"] is not None,
            anonymous=self.anonymous,
        )

    @property
    def received_on(self) -> date:
        return local_date(datetime.fromisoformat(self.received_at))

    # acceptance -------------------------------------------------------------------------

    def accept(self, *, mode: str, lead_unit: str, assisting_units: list[str], decided_on: date,
               actor: Actor, at: datetime, reason: str) -> None:
        """Accept, and assign or transfer to a lead unit (with assisting units)."""
        require_allowed(self, Action.ACCEPT)
        _one_of(mode, ACCEPT_MODES, "mode")
        _text(lead_unit, "lead_unit")
        assisting = list(assisting_units)
        for unit in assisting:
            _text(unit, "assisting unit")
        if lead_unit in assisting or len(set(assisting)) != len(assisting):
            raise RuleViolation("assisting units must be distinct and must not include the "
                                "lead unit")
        self.trigger_event(
            self.Accepted, timestamp=at, mode=mode, lead_unit=lead_unit,
            assisting_units=assisting,
            decided_on=_day(decided_on, "decided_on", at, self.received_on, "the receipt"),
            actor=actor.as_dict(), reason=_text(reason, "reason"))

    def not_accept(self, *, reason_code: str, redirect_organ: str, decided_on: date,
                   actor: Actor, at: datetime, reason: str) -> None:
        """不予受理: say why, and where the petitioner should go instead."""
        require_allowed(self, Action.NOT_ACCEPT)
        _one_of(reason_code, NOT_ACCEPTED_REASONS, "reason_code")
        if reason_code != "no_clear_subject_or_facts":  # then there is nowhere to send it
            _text(redirect_organ, "redirect_organ")
        self.trigger_event(
            self.NotAccepted, timestamp=at, reason_code=reason_code,
            redirect_organ=redirect_organ,
            decided_on=_day(decided_on, "decided_on", at, self.received_on, "the receipt"),
            actor=actor.as_dict(), reason=_text(reason, "reason"))

    def not_accept_again(self, *, earlier_case_id: str, ground: str, decided_on: date,
                         actor: Actor, at: datetime, reason: str) -> None:
        """不再受理: the same matter is open in `earlier_case_id`, or terminated there."""
        require_allowed(self, Action.NOT_ACCEPT_AGAIN)
        _one_of(ground, NOT_ACCEPTED_AGAIN_GROUNDS, "ground")
        if _text(earlier_case_id, "earlier_case_id") == str(self.id):
            raise RuleViolation("earlier_case_id must name another case")
        self.trigger_event(
            self.NotAcceptedAgain, timestamp=at, earlier_case_id=earlier_case_id, ground=ground,
            decided_on=_day(decided_on, "decided_on", at, self.received_on, "the receipt"),
            actor=actor.as_dict(), reason=_text(reason, "reason"))

    def answer_on_the_spot(self, *, answer: str, decided_on: date, actor: Actor, at: datetime,
                           reason: str) -> None:
        """Answered on the spot: registered and closed in one step."""
        require_allowed(self, Action.ANSWER_ON_THE_SPOT)
        self.trigger_event(
            self.AnsweredOnTheSpot, timestamp=at, answer=_text(answer, "answer"),
            decided_on=_day(decided_on, "decided_on", at, self.received_on, "the receipt"),
            actor=actor.as_dict(), reason=_text(reason, "reason"))

    # handling ---------------------------------------------------------------------------

    def report_progress(self, *, unit_id: str, note: str, actor: Actor, at: datetime,
                        reason: str) -> None:
        require_allowed(self, Action.REPORT_PROGRESS)
        if unit_id != self.lead_unit and unit_id not in self.assisting_units:
            raise RuleViolation(f"unit '{unit_id}' is neither the lead nor an assisting unit")
        self.trigger_event(self.ProgressReported, timestamp=at, unit_id=unit_id,
                           note=_text(note, "note"), actor=actor.as_dict(),
                           reason=_text(reason, "reason"))

    def hold_hearing(self, *, held_on: date, duration_days: int, actor: Actor, at: datetime,
                     reason: str) -> None:
        """Record a hearing (handling, review or re-review stage, by the current status)."""
        require_allowed(self, Action.HOLD_HEARING)
        if isinstance(duration_days, bool) or not isinstance(duration_days, int) \
                or duration_days < 1:
            raise RuleViolation("duration_days must be a whole number of days, at least 1")
        if self.status is CaseStatus.UNDER_REVIEW:
            since, what = self.review["requested_on"], "the review request"
        elif self.status is CaseStatus.UNDER_RE_REVIEW:
            since, what = self.re_review["requested_on"], "the re-review request"
        else:
            since, what = self.acceptance["decided_on"], "the acceptance"
        self.trigger_event(self.HearingHeld, timestamp=at,
                           held_on=_day(held_on, "held_on", at, since, what),
                           duration_days=duration_days, actor=actor.as_dict(),
                           reason=_text(reason, "reason"))

    def object_to_assignment(self, *, unit_id: str, reasons: str, objected_on: date,
                             calendar: WorkCalendar, actor: Actor, at: datetime,
                             reason: str) -> None:
        """The assigned lead unit objects within 5 working days of the assignment (Art. 23)."""
        require_allowed(self, Action.OBJECT_TO_ASSIGNMENT)
        if self.acceptance.get("mode") != "assign":
            raise RuleViolation("only an assignment (交办) can be objected to; this case was "
                                "transferred")
        if unit_id != self.lead_unit:
            raise RuleViolation(f"only the lead unit {self.lead_unit} may object, "
                                f"not '{unit_id}'")
        assigned = date.fromisoformat(self.assigned_on)
        window = working_days_deadline(assigned, OBJECTION_WORKING_DAYS, calendar)
        day = _day(objected_on, "objected_on", at, assigned, "the assignment")
        if objected_on > window.due_on:
            raise RuleViolation(f"the objection is late: due by {window.due_on} "
                                f"({window.explanation})")
        self.trigger_event(self.AssignmentObjected, timestamp=at, unit_id=unit_id,
                           reasons=_text(reasons, "reasons"), objected_on=day,
                           actor=actor.as_dict(), reason=_text(reason, "reason"))

    def decide_objection(self, *, upheld: bool, new_lead_unit: str | None, decided_by: str,
                         actor: Actor, at: datetime, reason: str) -> None:
        """The common superior decides; upheld names the unit that leads from now on."""
        require_allowed(self, Action.DECIDE_OBJECTION)
        new_lead_unit = new_lead_unit or None
        if upheld:
            if new_lead_unit is None or new_lead_unit == self.lead_unit:
                raise RuleViolation("an upheld objection names a new lead unit")
        elif new_lead_unit is not None:
            raise RuleViolation("a rejected objection keeps the lead unit; give no "
                                "new_lead_unit")
        self.trigger_event(self.ObjectionDecided, timestamp=at, upheld=bool(upheld),
                           new_lead_unit=new_lead_unit,
                           decided_by=_text(decided_by, "decided_by"),
                           actor=actor.as_dict(), reason=_text(reason, "reason"))

    def grant_extension(self, *, days: int, approver: str, petitioner_told: bool, actor: Actor,
                        at: datetime, reason: str) -> None:
        """The one extension of handling: at most 30 days, and the petitioner told why."""
        require_allowed(self, Action.GRANT_EXTENSION)
        if isinstance(days, bool) or not isinstance(days, int) \
                or not 1 <= days <= MAX_EXTENSION_DAYS:
            raise RuleViolation(f"an extension is 1 to {MAX_EXTENSION_DAYS} days")
        if not petitioner_told and not self.anonymous:
            raise RuleViolation("the petitioner must be told the reason for the extension")
        self.trigger_event(self.ExtensionGranted, timestamp=at, days=days,
                           approver=_text(approver, "approver"),
                           petitioner_told=bool(petitioner_told), actor=actor.as_dict(),
                           reason=_text(reason, "reason"))

    def reply(self, *, outcome: str, reply_text: str, replied_on: date, actor: Actor,
              at: datetime, reason: str) -> None:
        """The written reply; only an accepted case (being handled) is replied to."""
        require_allowed(self, Action.REPLY)
        _one_of(outcome, REPLY_OUTCOMES, "outcome")
        self.trigger_event(
            self.Replied, timestamp=at, outcome=outcome,
            reply_text=_text(reply_text, "reply_text"),
            replied_on=_day(replied_on, "replied_on", at, self.acceptance["decided_on"],
                            "the acceptance"),
            actor=actor.as_dict(), reason=_text(reason, "reason"))

    def record_reply_receipt(self, *, received_on: date, actor: Actor, at: datetime,
                             reason: str) -> None:
        require_allowed(self, Action.RECORD_REPLY_RECEIPT)
        self.trigger_event(
            self.ReplyReceived, timestamp=at,
            received_on=_day(received_on, "received_on", at, self.written_reply["replied_on"],
                             "the reply"),
            actor=actor.as_dict(), reason=_text(reason, "reason"))

    # review and re-review ---------------------------------------------------------------

    def request_review(self, *, requested_on: date, organ: str, calendar: WorkCalendar,
                       actor: Actor, at: datetime, reason: str) -> None:
        """复查, asked within 30 days of receiving the reply (Art. 35)."""
        require_allowed(self, Action.REQUEST_REVIEW)
        self._request_stage(self.ReviewRequested, requested_on, organ, calendar,
                            since=self.written_reply["received_on"],
                            since_what="receiving the reply", days=REVIEW_REQUEST_DAYS,
                            actor=actor, at=at, reason=reason)

    def issue_review_opinion(self, *, outcome: str, opinion: str, issued_on: date,
                             actor: Actor, at: datetime, reason: str) -> None:
        require_allowed(self, Action.ISSUE_REVIEW_OPINION)
        self._issue_opinion(self.ReviewOpinionIssued, outcome, opinion, issued_on,
                            requested_on=self.review["requested_on"],
                            request_name="the review request", actor=actor, at=at,
                            reason=reason)

    def request_re_review(self, *, requested_on: date, organ: str, calendar: WorkCalendar,
                          actor: Actor, at: datetime, reason: str) -> None:
        """复核, asked within 30 days of the review opinion (Art. 36)."""
        require_allowed(self, Action.REQUEST_RE_REVIEW)
        self._request_stage(self.ReReviewRequested, requested_on, organ, calendar,
                            since=self.review["issued_on"], since_what="the review opinion",
                            days=RE_REVIEW_REQUEST_DAYS, actor=actor, at=at, reason=reason)

    def issue_re_review_opinion(self, *, outcome: str, opinion: str, issued_on: date,
                                actor: Actor, at: datetime, reason: str) -> None:
        """The re-review opinion terminates the matter."""
        require_allowed(self, Action.ISSUE_RE_REVIEW_OPINION)
        self._issue_opinion(self.ReReviewOpinionIssued, outcome, opinion, issued_on,
                            requested_on=self.re_review["requested_on"],
                            request_name="the re-review request", actor=actor, at=at,
                            reason=reason)

    # Review and re-review are the same two steps one level apart: a request to the higher
    # organ inside a window counted from the previous decision, then that organ's opinion.
    # The callers check the action is allowed first: the earlier stage exists only then.

    def _request_stage(self, event: type[Aggregate.Event], requested_on: date, organ: str,
                       calendar: WorkCalendar, *, since: str, since_what: str, days: int,
                       actor: Actor, at: datetime, reason: str) -> None:
        day = _within(requested_on, "requested_on", at, since, since_what, days, calendar)
        self.trigger_event(event, timestamp=at, requested_on=day, organ=_text(organ, "organ"),
                           actor=actor.as_dict(), reason=_text(reason, "reason"))

    def _issue_opinion(self, event: type[Aggregate.Event], outcome: str, opinion: str,
                       issued_on: date, *, requested_on: str, request_name: str, actor: Actor,
                       at: datetime, reason: str) -> None:
        _one_of(outcome, OPINION_OUTCOMES, "outcome")
        self.trigger_event(
            event, timestamp=at, outcome=outcome, opinion=_text(opinion, "opinion"),
            issued_on=_day(issued_on, "issued_on", at, requested_on, request_name),
            actor=actor.as_dict(), reason=_text(reason, "reason"))

    # return visit and withdrawal --------------------------------------------------------

    def record_return_visit(self, *, satisfaction: str, comment: str, visited_on: date,
                            actor: Actor, at: datetime, reason: str) -> None:
        """回访 after the reply; a dissatisfied petitioner reopens the work."""
        require_allowed(self, Action.RECORD_RETURN_VISIT)
        _one_of(satisfaction, SATISFACTION, "satisfaction")
        day = _day(visited_on, "visited_on", at, self.written_reply["replied_on"], "the reply")
        reason = _text(reason, "reason")
        self.trigger_event(self.ReturnVisitRecorded, timestamp=at, satisfaction=satisfaction,
                           comment=comment, visited_on=day, actor=actor.as_dict(),
                           reason=reason)
        if satisfaction == "dissatisfied":
            self.trigger_event(
                self.WorkReopened, timestamp=at, actor=actor.as_dict(),
                reason=f"petitioner dissatisfied at the return visit on {day}: "
                       "handling resumes and a new reply is required")

    def withdraw(self, *, voluntary: bool, actor: Actor, at: datetime, reason: str) -> None:
        """撤回. Only a voluntary withdrawal ends the case; one under pressure is flagged for
        investigation and the case stays as it is."""
        require_allowed(self, Action.WITHDRAW)
        reason = _text(reason, "reason")
        if voluntary:
            self.trigger_event(self.Withdrawn, timestamp=at, voluntary=True,
                               actor=actor.as_dict(), reason=reason)
        else:
            self.trigger_event(self.WithdrawalFlaggedForInvestigation, timestamp=at,
                               actor=actor.as_dict(), reason=reason)

    # the case file, closing and archiving -----------------------------------------------

    def record_handling_opinion(self, *, opinion: str, actor: Actor, at: datetime,
                                reason: str) -> None:
        require_allowed(self, Action.RECORD_HANDLING_OPINION)
        self.trigger_event(self.HandlingOpinionRecorded, timestamp=at,
                           opinion=_text(opinion, "opinion"), actor=actor.as_dict(),
                           reason=_text(reason, "reason"))

    def record_leader_sign_off(self, *, leader: str, actor: Actor, at: datetime,
                               reason: str) -> None:
        require_allowed(self, Action.RECORD_LEADER_SIGN_OFF)
        self.trigger_event(self.LeaderSignedOff, timestamp=at, leader=_text(leader, "leader"),
                           actor=actor.as_dict(), reason=_text(reason, "reason"))

    def record_petitioner_signature(self, *, signed: bool, refusal_note: str, actor: Actor,
                                    at: datetime, reason: str) -> None:
        require_allowed(self, Action.RECORD_PETITIONER_SIGNATURE)
        if signed and refusal_note.strip():
            raise RuleViolation("a signed file has no refusal note")
        if not signed:
            _text(refusal_note, "refusal_note")
        self.trigger_event(self.PetitionerSignatureRecorded, timestamp=at, signed=bool(signed),
                           refusal_note=refusal_note, actor=actor.as_dict(),
                           reason=_text(reason, "reason"))

    def close(self, *, closed_on: date, actor: Actor, at: datetime, reason: str) -> None:
        """结案. A handled case needs its complete file; a case not accepted or withdrawn
        closes without one."""
        require_allowed(self, Action.CLOSE)
        day = _day(closed_on, "closed_on", at, self.received_on, "the receipt")
        if self.status not in CLOSES_WITHOUT_FILE:
            missing = self.missing_file_items()
            if missing:
                raise IncompleteFile(missing)
        self.trigger_event(self.Closed, timestamp=at, closed_on=day, actor=actor.as_dict(),
                           reason=_text(reason, "reason"))

    def archive(self, *, archived_on: date, actor: Actor, at: datetime, reason: str) -> None:
        """归档, only after closing (one case, one file)."""
        require_allowed(self, Action.ARCHIVE)
        self.trigger_event(
            self.Archived, timestamp=at,
            archived_on=_day(archived_on, "archived_on", at, self.closed_on, "the closing"),
            actor=actor.as_dict(), reason=_text(reason, "reason"))
