"""The Case aggregate: one petition's whole history as immutable, past-tense events.

Every event carries the actor (who, in which role and jurisdiction), the reason, and its
timestamp (passed in by the caller's clock, so time is injectable). Events carry a
`class_version`; a new shape gets an `upcast_vN_vN+1` method, never an edit of stored rows.

Pure: imports nothing from web, RPC, broker or database libraries.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from petitions.domain.case_lifecycle import CaseLifecycle
from petitions.domain.errors import IllegalTransition, RuleViolation
from petitions.domain.intake_rules import (
    check_registration,
    is_major_collective_visit,
    leader_escalation_reason,
)
from petitions.domain.values import Actor, CaseStatus, Category, Channel, Contact, Petitioner


class Case(CaseLifecycle, Aggregate):
    """A registered petition and everything that happened to it."""

    class Registered(Aggregate.Created):
        # v2 added petitioner_key (keyed hash of the ID number, for matching repeats without
        # the number in clear), accused_unit and representatives (names).
        # v3: representatives are contacts (name, phone, e-mail, address), and a joint
        # petition's designated contact.
        class_version = 3
        case_number: str
        channel: str
        category: str
        division: str
        subject: str
        content: str
        requests: list[str]
        people_count: int
        anonymous: bool
        petitioner: dict[str, str] | None
        received_at: str
        submission_digest: str
        actor: dict[str, str]
        reason: str
        petitioner_key: str
        accused_unit: str
        representatives: list[dict[str, str]]
        contact: dict[str, str] | None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state.update(petitioner_key="", accused_unit="", representatives=[])

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            state["representatives"] = [Contact(name=n).as_dict()
                                        for n in state["representatives"]]
            state["contact"] = None

        def apply(self, case: Case) -> None:
            case._apply_registration(self.__dict__)

    class RoutedToUnit(Aggregate.Event):
        """A handling unit was chosen for the case by the routing rules."""

        # v2 added the assisting units and the units skipped (recusal, accused) with why.
        class_version = 2
        unit_id: str
        unit_name: str
        rule_id: str
        rule_set_version: str
        explanation: str
        actor: dict[str, str]
        reason: str
        assisting_units: list[str]
        skipped: list[list[str]]

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state.update(assisting_units=[], skipped=[])

        def apply(self, case: Case) -> None:
            case._apply_routed(self)

    class NonAcceptanceProposed(Aggregate.Event):
        """The matter belongs to another channel (litigation, arbitration, administrative
        review): routing proposes not accepting it and names the channel; a person decides."""

        class_version = 1
        reason_code: str
        proposed_channel: str
        explanation: str
        rule_set_version: str
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case.routing_proposal = {"reason_code": self.reason_code,
                                     "proposed_channel": self.proposed_channel,
                                     "explanation": self.explanation}

    class TransferredToJurisdiction(Aggregate.Event):
        """The case moved to another county's queue; both keep its history."""

        class_version = 1
        from_division: str
        to_division: str
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case.division = self.to_division
            if self.to_division not in case.jurisdictions:
                case.jurisdictions.append(self.to_division)
            case.routing = None
            case.routing_proposal = None

    class ReassignedToUnit(Aggregate.Event):
        """A bureau user chose another handling unit by hand."""

        class_version = 1
        unit_id: str
        unit_name: str
        previous_unit_id: str
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case.routing = {**(case.routing or {}), "unit_id": self.unit_id,
                            "unit_name": self.unit_name, "rule_id": "",
                            "explanation": f"reassigned by {self.actor.get('id')}: {self.reason}",
                            "routed_in_version": self.originator_version}

    class RemitDisputeEscalated(Aggregate.Event):
        """Units disputed whose remit the matter is; their common superior decides."""

        class_version = 1
        units: list[str]
        common_superior: str
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case.remit_disputes.append({"units": list(self.units),
                                        "common_superior": self.common_superior})

    class ClockStarted(Aggregate.Event):
        """A statutory clock began to run for the case."""

        class_version = 1
        clock: str
        started_on: str
        due_on: str
        length: int
        day_kind: str
        explanation: str
        provisional: bool
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case._apply_clock_started(self)

    class ClockMoved(Aggregate.Event):
        """A running clock's due date changed because of a fact (an extension, a hearing
        pause); `length` and `paused_days` are the clock's basis after the move."""

        class_version = 1
        clock: str
        due_on: str
        explanation: str
        provisional: bool
        length: int
        paused_days: int
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case._apply_clock_moved(self)

    class ClockStopped(Aggregate.Event):
        """A clock stopped: its duty was met in time ("met"), late ("late"), or the clock was
        closed without a violation ("closed": case closed or withdrawn, a window expired)."""

        class_version = 1
        clock: str
        outcome: str
        stopped_on: str
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case._apply_clock_stopped(self)

    class ClockWarned(Aggregate.Event):
        """A reminder notice (催办预告) went to the responsible unit before the due date."""

        class_version = 1
        clock: str
        due_on: str
        kind: str
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case._apply_clock_warned(self)

    class ClockMissed(Aggregate.Event):
        """The due date passed without the duty met: a supervision notice (督办); the case is
        flagged overdue and the clock keeps running until the duty is met."""

        class_version = 1
        clock: str
        due_on: str
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case._apply_clock_missed(self)

    class EscalationProposed(Aggregate.Event):
        """Reminders or sent-back replies went unanswered: a sanction is proposed (通报批评).
        `key` identifies what was escalated, so the same matter is escalated once."""

        class_version = 1
        clock: str
        key: str
        proposed_action: str
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case._apply_escalation_proposed(self)

    class ClockRecomputed(Aggregate.Event):
        """A provisional due date was recomputed on a newly loaded holiday calendar."""

        class_version = 1
        clock: str
        due_on: str
        was_provisional: bool
        provisional: bool
        explanation: str
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case._apply_clock_recomputed(self)

    class NoticeDelivered(Aggregate.Event):
        """A notice reached its recipient through a channel."""

        class_version = 1
        notice_id: str
        kind: str
        recipient: str
        channel: str
        trigger_version: int
        attempts: int
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case._apply_notice(self, "delivered")

    class NoticeDeliveryFailed(Aggregate.Event):
        """An attempt to deliver a notice failed; `final` means it was dead-lettered."""

        class_version = 1
        notice_id: str
        kind: str
        recipient: str
        channel: str
        trigger_version: int
        attempts: int
        error: str
        final: bool
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case._apply_notice(self, "dead_lettered" if self.final else "failed")

    class NoticeSent(Aggregate.Event):
        """A channel that does not confirm receipt (an SMTP relay, an SMS gateway) accepted
        the notice; `provider_ref` is its message id."""

        class_version = 1
        notice_id: str
        kind: str
        recipient: str
        channel: str
        trigger_version: int
        attempts: int
        provider_ref: str
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case._apply_notice(self, "sent")

    class NoticeDeadLettered(Aggregate.Event):
        """The last attempt failed (or the recipient has no address on the channel): the
        notice waits in the dead-letter list for an operator."""

        class_version = 1
        notice_id: str
        kind: str
        recipient: str
        channel: str
        trigger_version: int
        attempts: int
        error: str
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case._apply_notice(self, "dead_lettered")

    class NoticeRequeued(Aggregate.Event):
        """An operator sent a dead-lettered notice back for delivery (same idempotency key)."""

        class_version = 1
        notice_id: str
        kind: str
        recipient: str
        channel: str
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            notice = case.notices.get(self.notice_id)
            case.notices[self.notice_id] = {
                "notice_id": self.notice_id, "kind": self.kind, "recipient": self.recipient,
                "channel": self.channel,
                "attempts": notice["attempts"] if notice else 0, "state": "requeued",
            }

    class EmergencyReported(Aggregate.Event):
        """An emergency reported at once (2022 Art. 25): time, place, scale, people, cause
        and requests."""

        class_version = 1
        occurred_at: str
        place: str
        scale: str
        people: str
        cause: str
        requests: list[str]
        nature: str
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case.emergencies = [*getattr(case, "emergencies", []), {
                "occurred_at": self.occurred_at, "place": self.place, "scale": self.scale,
                "nature": self.nature, "version": self.originator_version,
            }]

    # -- construction -------------------------------------------------------------------

    def __init__(self) -> None:
        """State is set by `Registered.apply`, so replay and creation share one path."""

    def _apply_registration(self, r: dict[str, Any]) -> None:
        self.case_number: str = r["case_number"]
        self.channel = Channel(r["channel"])
        self.category = Category(r["category"])
        self.division: str = r["division"]
        self.subject: str = r["subject"]
        self.content: str = r["content"]
        self.requests: list[str] = list(r["requests"])
        self.people_count: int = r["people_count"]
        self.anonymous: bool = r["anonymous"]
        self.petitioner: dict[str, str] | None = r["petitioner"]
        self.received_at: str = r["received_at"]
        self.submission_digest: str = r["submission_digest"]
        self.petitioner_key: str = r["petitioner_key"]
        self.accused_unit: str = r["accused_unit"]
        self.representatives: list[dict[str, str]] = list(r["representatives"])
        self.contact: dict[str, str] | None = r["contact"]
        self.jurisdictions: list[str] = [self.division]
        self.routing_proposal: dict[str, str] | None = None
        self.remit_disputes: list[dict[str, Any]] = []
        self.repeat_count = 0
        self.visit_count = 1 if self.channel is Channel.VISIT else 0
        self.duplicates = 0
        self.escalations: list[str] = []
        self.status = CaseStatus.REGISTERED
        self.routing: dict[str, str] | None = None
        self.clocks: dict[str, dict[str, Any]] = {}
        # Escalations proposed by the deadlines service, by key (see propose_escalation).
        self.clock_escalations: dict[str, dict[str, Any]] = {}
        self.notices: dict[str, dict[str, Any]] = {}
        self._init_lifecycle()

    @classmethod
    def register(
        cls,
        *,
        case_id: UUID,
        case_number: str,
        channel: Channel,
        category: Category,
        division: str,
        subject: str,
        content: str,
        requests: list[str],
        people_count: int,
        petitioner: Petitioner | None,
        received_at: datetime,
        submission_digest: str,
        actor: Actor,
        at: datetime,
        reason: str = "petition received",
        petitioner_key: str = "",
        accused_unit: str = "",
        representatives: list[Contact | str] | None = None,
        contact: Contact | None = None,
    ) -> Case:
        """Register a petition: the first fact of every case."""
        reps = [Contact.named(r) for r in representatives or []]
        check_registration(channel, people_count, reps, contact=contact,
                           anonymous=petitioner is None)
        case = cls._create(
            cls.Registered,
            id=case_id,
            timestamp=at,
            case_number=case_number,
            channel=channel.value,
            category=category.value,
            division=division,
            subject=subject,
            content=content,
            requests=list(requests),
            people_count=people_count,
            anonymous=petitioner is None,
            petitioner=petitioner.as_dict() if petitioner else None,
            received_at=received_at.isoformat(),
            submission_digest=submission_digest,
            actor=actor.as_dict(),
            reason=reason,
            petitioner_key=petitioner_key,
            accused_unit=accused_unit,
            representatives=[r.as_dict() for r in reps],
            contact=contact.as_dict() if contact else None,
        )
        case._escalate_if_due(channel, people_count, case.visit_count, actor, at)
        return case

    @property
    def is_major(self) -> bool:
        return is_major_collective_visit(self.people_count)

    # -- routing ------------------------------------------------------------------------

    @property
    def is_routed(self) -> bool:
        """Routing has settled: a unit was chosen, or not accepting was proposed."""
        return self.routing is not None or self.routing_proposal is not None

    def route_to_unit(
        self,
        *,
        unit_id: str,
        unit_name: str,
        rule_id: str,
        rule_set_version: str,
        explanation: str,
        actor: Actor,
        at: datetime,
        assisting_units: list[str] | None = None,
        skipped: list[tuple[str, str]] | None = None,
    ) -> None:
        """Record the handling unit the routing rules chose (and the units they skipped)."""
        self._check_routable()
        self.trigger_event(
            self.RoutedToUnit,
            timestamp=at,
            unit_id=unit_id,
            unit_name=unit_name,
            rule_id=rule_id,
            rule_set_version=rule_set_version,
            explanation=explanation,
            actor=actor.as_dict(),
            reason="routing rules applied",
            assisting_units=list(assisting_units or []),
            skipped=[list(s) for s in (skipped or [])],
        )

    def propose_non_acceptance(self, *, reason_code: str, proposed_channel: str,
                               explanation: str, rule_set_version: str, actor: Actor,
                               at: datetime) -> None:
        self._check_routable()
        self.trigger_event(
            self.NonAcceptanceProposed, timestamp=at, reason_code=reason_code,
            proposed_channel=proposed_channel, explanation=explanation,
            rule_set_version=rule_set_version, actor=actor.as_dict(),
            reason="matter belongs to another legal channel (hard rule)")

    def _check_routable(self) -> None:
        if self.status is not CaseStatus.REGISTERED:
            raise IllegalTransition("route", self.status.value, self.allowed_actions())
        if self.is_routed:
            raise RuleViolation("case routing has already settled")

    def transfer_to_jurisdiction(self, *, to_division: str, actor: Actor, at: datetime,
                                 reason: str) -> None:
        if self.status is not CaseStatus.REGISTERED:
            raise IllegalTransition("transfer_jurisdiction", self.status.value,
                                    self.allowed_actions())
        if to_division == self.division:
            raise RuleViolation(f"the case is already in {to_division}")
        self.trigger_event(self.TransferredToJurisdiction, timestamp=at,
                           from_division=self.division, to_division=to_division,
                           actor=actor.as_dict(), reason=reason)

    def reassign_to_unit(self, *, unit_id: str, unit_name: str, actor: Actor, at: datetime,
                         reason: str) -> None:
        if self.routing is None:
            raise RuleViolation("the case has no handling unit to reassign yet")
        if unit_id == self.routing["unit_id"]:
            raise RuleViolation(f"the case is already with {unit_id}")
        self.trigger_event(self.ReassignedToUnit, timestamp=at, unit_id=unit_id,
                           unit_name=unit_name, previous_unit_id=self.routing["unit_id"],
                           actor=actor.as_dict(), reason=reason)

    def escalate_remit_dispute(self, *, units: list[str], common_superior: str, actor: Actor,
                               at: datetime, reason: str) -> None:
        if len(set(units)) < 2:
            raise RuleViolation("a remit dispute involves at least two units")
        self.trigger_event(self.RemitDisputeEscalated, timestamp=at, units=list(units),
                           common_superior=common_superior, actor=actor.as_dict(),
                           reason=reason)

    def _apply_routed(self, e: Case.RoutedToUnit) -> None:
        self.routing = {
            "unit_id": e.unit_id,
            "unit_name": e.unit_name,
            "rule_id": e.rule_id,
            "rule_set_version": e.rule_set_version,
            "explanation": e.explanation,
            "routed_in_version": e.originator_version,
            "assisting_units": list(e.assisting_units),
            "skipped": [list(x) for x in e.skipped],
        }

    # -- clocks -------------------------------------------------------------------------

    def start_clock(
        self,
        *,
        clock: str,
        started_on: str,
        due_on: str,
        length: int,
        day_kind: str,
        explanation: str,
        provisional: bool,
        actor: Actor,
        at: datetime,
        reason: str,
    ) -> None:
        """Start a statutory clock. A running clock is not started again (moving it is a
        different fact); a stopped one may start a new run (e.g. handling after reopening)."""
        if self.clock_is_running(clock):
            raise RuleViolation(f"clock '{clock}' is already running")
        self.trigger_event(
            self.ClockStarted,
            timestamp=at,
            clock=clock,
            started_on=started_on,
            due_on=due_on,
            length=length,
            day_kind=day_kind,
            explanation=explanation,
            provisional=provisional,
            actor=actor.as_dict(),
            reason=reason,
        )

    def _apply_clock_started(self, e: Case.ClockStarted) -> None:
        self.clocks[e.clock] = {
            "clock": e.clock,
            "started_on": e.started_on,
            "due_on": e.due_on,
            "length": e.length,
            "day_kind": e.day_kind,
            "explanation": e.explanation,
            "provisional": e.provisional,
            "state": "running",
            # Bookkeeping of the deadlines service: which run of this clock this is, and which
            # notices it already sent (so a re-fired timer finds them and sends nothing).
            "instance": (self.clocks.get(e.clock) or {}).get("instance", 0) + 1,
            "paused_days": 0,
            "warned_for": None,
            "missed_for": None,
            "notices": 0,
            "outcome": None,
            "stopped_on": None,
        }

    # -- clock supervision (the deadlines service) ------------------------------------------
    # Each command refuses a fact the case already holds (RuleViolation), so a handler that
    # re-runs after a crash or redelivery checks the case first and appends nothing twice.

    CLOCK_RUNNING_STATES = ("running", "overdue")
    CLOCK_OUTCOMES = ("met", "late", "closed")

    def clock_is_running(self, clock: str) -> bool:
        c = self.clocks.get(clock)
        return c is not None and c["state"] in self.CLOCK_RUNNING_STATES

    @property
    def overdue(self) -> bool:
        """True while any clock has passed its due date without its duty being met."""
        return any(c["state"] == "overdue" for c in self.clocks.values())

    def _running_clock(self, clock: str, action: str) -> dict[str, Any]:
        if not self.clock_is_running(clock):
            state = (self.clocks.get(clock) or {}).get("state", "not started")
            raise RuleViolation(f"cannot {action} clock '{clock}': it is {state}")
        return self.clocks[clock]

    def move_clock(self, *, clock: str, due_on: str, explanation: str, provisional: bool,
                   length: int, paused_days: int, actor: Actor, at: datetime,
                   reason: str) -> None:
        """Move a running clock's due date (its basis changed: an extension, a pause)."""
        c = self._running_clock(clock, "move")
        if (c["due_on"], c["length"], c["paused_days"], c["provisional"]) == (
                due_on, length, paused_days, provisional):
            raise RuleViolation(f"clock '{clock}' already has this basis and due date")
        self.trigger_event(self.ClockMoved, timestamp=at, clock=clock, due_on=due_on,
                           explanation=explanation, provisional=provisional, length=length,
                           paused_days=paused_days, actor=actor.as_dict(), reason=reason)

    def _apply_clock_moved(self, e: Case.ClockMoved) -> None:
        c = self.clocks[e.clock]
        c.update(due_on=e.due_on, explanation=e.explanation, provisional=e.provisional,
                 length=e.length, paused_days=e.paused_days,
                 state="overdue" if c["missed_for"] == e.due_on else "running")

    def stop_clock(self, *, clock: str, outcome: str, stopped_on: str, actor: Actor,
                   at: datetime, reason: str) -> None:
        """Stop a running clock: its duty was met (in time or late) or it was closed."""
        if outcome not in self.CLOCK_OUTCOMES:
            raise RuleViolation(f"clock outcome must be one of {self.CLOCK_OUTCOMES}")
        self._running_clock(clock, "stop")
        self.trigger_event(self.ClockStopped, timestamp=at, clock=clock, outcome=outcome,
                           stopped_on=stopped_on, actor=actor.as_dict(), reason=reason)

    def _apply_clock_stopped(self, e: Case.ClockStopped) -> None:
        self.clocks[e.clock].update(state=e.outcome, outcome=e.outcome, stopped_on=e.stopped_on)

    def warn_clock(self, *, clock: str, due_on: str, actor: Actor, at: datetime,
                   kind: str = "reminder",
                   reason: str = "reminder notice (催办预告) before the due date") -> None:
        """Record the reminder sent to the responsible unit for the clock's current due date."""
        c = self._running_clock(clock, "warn about")
        if c["due_on"] != due_on:
            raise RuleViolation(f"clock '{clock}' is due on {c['due_on']}, not {due_on}")
        if c["warned_for"] == due_on:
            raise RuleViolation(f"clock '{clock}': reminder for {due_on} already sent")
        self.trigger_event(self.ClockWarned, timestamp=at, clock=clock, due_on=due_on,
                           kind=kind, actor=actor.as_dict(), reason=reason)

    def _apply_clock_warned(self, e: Case.ClockWarned) -> None:
        c = self.clocks[e.clock]
        c.update(warned_for=e.due_on, notices=c["notices"] + 1)

    def record_clock_missed(self, *, clock: str, due_on: str, actor: Actor, at: datetime,
                            reason: str = "due date passed: supervision notice (督办)") -> None:
        """Record that the clock's current due date passed with its duty unmet."""
        c = self._running_clock(clock, "mark missed")
        if c["due_on"] != due_on:
            raise RuleViolation(f"clock '{clock}' is due on {c['due_on']}, not {due_on}")
        if c["missed_for"] == due_on:
            raise RuleViolation(f"clock '{clock}': {due_on} already recorded as missed")
        self.trigger_event(self.ClockMissed, timestamp=at, clock=clock, due_on=due_on,
                           actor=actor.as_dict(), reason=reason)

    def _apply_clock_missed(self, e: Case.ClockMissed) -> None:
        c = self.clocks[e.clock]
        c.update(missed_for=e.due_on, state="overdue", notices=c["notices"] + 1)

    def propose_escalation(self, *, key: str, clock: str, actor: Actor, at: datetime,
                           reason: str, proposed_action: str = "public_criticism") -> None:
        """Propose a sanction once per `key` (e.g. one run of one clock)."""
        if key in self.clock_escalations:
            raise RuleViolation(f"escalation '{key}' was already proposed")
        self.trigger_event(self.EscalationProposed, timestamp=at, clock=clock, key=key,
                           proposed_action=proposed_action, actor=actor.as_dict(),
                           reason=reason)

    def _apply_escalation_proposed(self, e: Case.EscalationProposed) -> None:
        self.clock_escalations[e.key] = {"clock": e.clock, "proposed_action": e.proposed_action,
                                         "reason": e.reason, "version": e.originator_version}

    def recompute_clock(self, *, clock: str, due_on: str, provisional: bool, explanation: str,
                        actor: Actor, at: datetime,
                        reason: str = "holiday calendar loaded: provisional due date "
                                      "recomputed") -> None:
        """Replace a provisional due date by one computed on a newly loaded calendar."""
        c = self._running_clock(clock, "recompute")
        if not c["provisional"]:
            raise RuleViolation(f"clock '{clock}' is not provisional")
        if (c["due_on"], c["provisional"]) == (due_on, provisional):
            raise RuleViolation(f"clock '{clock}' already has this due date")
        self.trigger_event(self.ClockRecomputed, timestamp=at, clock=clock, due_on=due_on,
                           was_provisional=True, provisional=provisional,
                           explanation=explanation, actor=actor.as_dict(), reason=reason)

    def _apply_clock_recomputed(self, e: Case.ClockRecomputed) -> None:
        c = self.clocks[e.clock]
        c.update(due_on=e.due_on, provisional=e.provisional, explanation=e.explanation,
                 state="overdue" if c["missed_for"] == e.due_on else "running")

    # -- repeats, duplicates and escalation ---------------------------------------------

    class RepeatPetitionLinked(Aggregate.Event):
        """The same petitioner came again on the same matter while the case was open: linked
        to this case, not registered as a new one."""

        class_version = 1
        channel: str
        received_at: str
        people_count: int
        repeat_number: int
        visit_number: int
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case.repeat_count = self.repeat_number
            case.visit_count = self.visit_number

    class DuplicateMerged(Aggregate.Event):
        """The same content arrived again (another channel, or forwarded by another organ)
        and was merged into this case."""

        class_version = 1
        channel: str
        received_at: str
        source: str
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case.duplicates += 1

    class EscalatedToPrincipalLeader(Aggregate.Event):
        """Repeat or collective visits that the principal leader must receive in person."""

        class_version = 1
        trigger: str
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case.escalations.append(self.trigger)

    def link_repeat(self, *, channel: Channel, received_at: datetime, people_count: int,
                    actor: Actor, at: datetime) -> None:
        visit_number = self.visit_count + (1 if channel is Channel.VISIT else 0)
        self.trigger_event(
            self.RepeatPetitionLinked, timestamp=at, channel=channel.value,
            received_at=received_at.isoformat(), people_count=people_count,
            repeat_number=self.repeat_count + 1, visit_number=visit_number,
            actor=actor.as_dict(), reason="same petitioner, same matter, case still open")
        self._escalate_if_due(channel, people_count, visit_number, actor, at)

    def merge_duplicate(self, *, channel: Channel, received_at: datetime, source: str,
                        actor: Actor, at: datetime) -> None:
        self.trigger_event(
            self.DuplicateMerged, timestamp=at, channel=channel.value,
            received_at=received_at.isoformat(), source=source, actor=actor.as_dict(),
            reason="same content already registered; merged into this case")

    def _escalate_if_due(self, channel: Channel, people_count: int, visit_number: int,
                         actor: Actor, at: datetime) -> None:
        trigger = leader_escalation_reason(channel, people_count, visit_number)
        if trigger is not None:
            self.trigger_event(self.EscalatedToPrincipalLeader, timestamp=at, trigger=trigger,
                               actor=actor.as_dict(),
                               reason="the principal leader receives this visit in person")

    # -- notices ------------------------------------------------------------------------

    def has_delivered(self, notice_id: str) -> bool:
        notice = self.notices.get(notice_id)
        # A dead-lettered notice is not settled: an operator may replay it.
        return notice is not None and notice["state"] in ("delivered", "sent")

    def record_notice_delivered(
        self,
        *,
        notice_id: str,
        kind: str,
        recipient: str,
        channel: str,
        trigger_version: int,
        attempts: int,
        actor: Actor,
        at: datetime,
    ) -> None:
        if self.has_delivered(notice_id):
            raise RuleViolation(f"notice {notice_id} is already settled")
        self.trigger_event(
            self.NoticeDelivered,
            timestamp=at,
            notice_id=notice_id,
            kind=kind,
            recipient=recipient,
            channel=channel,
            trigger_version=trigger_version,
            attempts=attempts,
            actor=actor.as_dict(),
            reason=f"{kind} notice delivered",
        )

    def record_notice_failed(
        self,
        *,
        notice_id: str,
        kind: str,
        recipient: str,
        channel: str,
        trigger_version: int,
        attempts: int,
        error: str,
        final: bool,
        actor: Actor,
        at: datetime,
    ) -> None:
        if self.has_delivered(notice_id):
            raise RuleViolation(f"notice {notice_id} is already settled")
        self.trigger_event(
            self.NoticeDeliveryFailed,
            timestamp=at,
            notice_id=notice_id,
            kind=kind,
            recipient=recipient,
            channel=channel,
            trigger_version=trigger_version,
            attempts=attempts,
            error=error[:500],
            final=final,
            actor=actor.as_dict(),
            reason="dead-lettered after the last attempt" if final else "delivery attempt failed",
        )

    def _apply_notice(self, e: Any, state: str) -> None:
        self.notices[e.notice_id] = {
            "notice_id": e.notice_id,
            "kind": e.kind,
            "recipient": e.recipient,
            "channel": e.channel,
            "attempts": e.attempts,
            "state": state,
        }

    def record_notice_sent(
        self,
        *,
        notice_id: str,
        kind: str,
        recipient: str,
        channel: str,
        trigger_version: int,
        attempts: int,
        provider_ref: str,
        actor: Actor,
        at: datetime,
    ) -> None:
        if self.has_delivered(notice_id):
            raise RuleViolation(f"notice {notice_id} is already settled")
        self.trigger_event(
            self.NoticeSent, timestamp=at, notice_id=notice_id, kind=kind, recipient=recipient,
            channel=channel, trigger_version=trigger_version, attempts=attempts,
            provider_ref=provider_ref[:200], actor=actor.as_dict(),
            reason=f"{kind} notice handed to the {channel} provider",
        )

    def record_notice_dead_lettered(
        self,
        *,
        notice_id: str,
        kind: str,
        recipient: str,
        channel: str,
        trigger_version: int,
        attempts: int,
        error: str,
        actor: Actor,
        at: datetime,
    ) -> None:
        notice = self.notices.get(notice_id)
        if notice is not None and notice["state"] in ("delivered", "sent", "dead_lettered"):
            raise RuleViolation(f"notice {notice_id} is already settled")
        self.trigger_event(
            self.NoticeDeadLettered, timestamp=at, notice_id=notice_id, kind=kind,
            recipient=recipient, channel=channel, trigger_version=trigger_version,
            attempts=attempts, error=error[:500], actor=actor.as_dict(),
            reason="dead-lettered: waiting for an operator",
        )

    def record_notice_requeued(
        self, *, notice_id: str, kind: str, recipient: str, channel: str, actor: Actor,
        at: datetime, reason: str = "operator replay of a dead-lettered notice",
    ) -> None:
        notice = self.notices.get(notice_id)
        if notice is None or notice["state"] != "dead_lettered":
            raise RuleViolation(f"notice {notice_id} is not dead-lettered")
        self.trigger_event(
            self.NoticeRequeued, timestamp=at, notice_id=notice_id, kind=kind,
            recipient=recipient, channel=channel, actor=actor.as_dict(), reason=reason,
        )

    # -- emergencies --------------------------------------------------------------------

    def report_emergency(
        self,
        *,
        occurred_at: datetime,
        place: str,
        scale: str,
        people: str,
        cause: str,
        requests: list[str],
        nature: str,
        actor: Actor,
        at: datetime,
    ) -> None:
        """Report an emergency at once (self-harm, dangerous items, violence, illness on site,
        a visit heading to the provincial or national capital); allowed in any state."""
        if occurred_at.tzinfo is None:
            raise RuleViolation("occurred_at needs a time zone")
        if not place.strip() or not cause.strip():
            raise RuleViolation("an emergency report names the place and the cause")
        self.trigger_event(
            self.EmergencyReported, timestamp=at, occurred_at=occurred_at.isoformat(),
            place=place, scale=scale, people=people, cause=cause, requests=list(requests),
            nature=nature, actor=actor.as_dict(), reason="emergency reported at once (Art. 25)",
        )

    # -- lifecycle: acceptance, handling, reply, review, re-review, closing -------------
    # The events; the commands that trigger them and the state they keep are in
    # case_lifecycle.py (CaseLifecycle, a base of Case).

    class Accepted(Aggregate.Event):
        """受理: assigned (交办, the unit reports the result back) or transferred (转送, the unit
        handles it under its own remit) to a lead unit, with any assisting units. A decision
        after the 15-day acceptance clock is still recorded (the deadlines service flags it)."""

        class_version = 1
        mode: str
        lead_unit: str
        assisting_units: list[str]
        decided_on: str
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case._on_accepted(self)

    class NotAccepted(Aggregate.Event):
        """不予受理, with the reason and the organ the petitioner should go to instead."""

        class_version = 1
        reason_code: str
        redirect_organ: str
        decided_on: str
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case._on_decided(self, "not_accepted", reason_code=self.reason_code,
                             redirect_organ=self.redirect_organ)

    class NotAcceptedAgain(Aggregate.Event):
        """不再受理: the same matter is already open, or was terminated after re-review."""

        class_version = 1
        earlier_case_id: str
        ground: str
        decided_on: str
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case._on_decided(self, "not_accepted_again", earlier_case_id=self.earlier_case_id,
                             ground=self.ground)

    class AnsweredOnTheSpot(Aggregate.Event):
        """Answered on the spot and registered as such: the case is closed in one step."""

        class_version = 1
        answer: str
        decided_on: str
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case._on_decided(self, "answered_on_the_spot")
            case.closed_on = self.decided_on

    class ProgressReported(Aggregate.Event):
        class_version = 1
        unit_id: str
        note: str
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case.progress_reports.append({"unit_id": self.unit_id,
                                          "at": self.timestamp.isoformat()})

    class HearingHeld(Aggregate.Event):
        """听证. Its days do not count against review or re-review opinion time (Art. 36)."""

        class_version = 1
        held_on: str
        duration_days: int
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case._on_hearing(self)

    class AssignmentObjected(Aggregate.Event):
        """The assigned lead unit says the matter is not its remit (Art. 23, 5 working days)."""

        class_version = 1
        unit_id: str
        reasons: str
        objected_on: str
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case.objection = {"unit_id": self.unit_id, "objected_on": self.objected_on,
                              "state": "pending", "decided_by": None, "new_lead_unit": None}

    class ObjectionDecided(Aggregate.Event):
        """The units' common superior decided the objection (Art. 24); upheld moves the case."""

        class_version = 1
        upheld: bool
        new_lead_unit: str | None
        decided_by: str
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case._on_objection_decided(self)

    class ExtensionGranted(Aggregate.Event):
        """The one extension of handling (at most 30 days); `reason` is what the petitioner
        was told."""

        class_version = 1
        days: int
        approver: str
        petitioner_told: bool
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case.extension = {"days": self.days, "approver": self.approver,
                              "reason": self.reason, "petitioner_told": self.petitioner_told}

    class Replied(Aggregate.Event):
        """The written reply (答复意见书): adopted, supported, or explained and not supported."""

        class_version = 1
        outcome: str
        reply_text: str
        replied_on: str
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case.written_reply = {"outcome": self.outcome, "replied_on": self.replied_on,
                          "received_on": None}
            case._advance(self)

    class ReplyReceived(Aggregate.Event):
        """The petitioner received the written reply: the review window and the return
        visit run from here."""

        class_version = 1
        received_on: str
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case.written_reply = {**case.written_reply, "received_on": self.received_on}

    class ReviewRequested(Aggregate.Event):
        """复查 asked of the next higher organ, within 30 days of receiving the reply."""

        class_version = 1
        requested_on: str
        organ: str
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case.review = case._new_stage(self)
            case._advance(self)

    class ReviewOpinionIssued(Aggregate.Event):
        class_version = 1
        outcome: str
        opinion: str
        issued_on: str
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case.review = case._with_opinion(case.review, self)

    class ReReviewRequested(Aggregate.Event):
        """复核 asked of the reviewing organ's superior, within 30 days of the review opinion."""

        class_version = 1
        requested_on: str
        organ: str
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case.re_review = case._new_stage(self)
            case._advance(self)

    class ReReviewOpinionIssued(Aggregate.Event):
        """The re-review opinion: the matter is terminated (终结)."""

        class_version = 1
        outcome: str
        opinion: str
        issued_on: str
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case.re_review = case._with_opinion(case.re_review, self)

    class ReturnVisitRecorded(Aggregate.Event):
        """回访: satisfied / basically satisfied / dissatisfied, with comments."""

        class_version = 1
        satisfaction: str
        comment: str
        visited_on: str
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case.return_visits.append({"satisfaction": self.satisfaction,
                                       "visited_on": self.visited_on})

    class WorkReopened(Aggregate.Event):
        """Handling starts again (the petitioner was dissatisfied): a new reply is required."""

        class_version = 1
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case.written_reply = None
            case.reopened += 1
            case._advance(self)

    class Withdrawn(Aggregate.Event):
        """撤回, checked to be voluntary."""

        class_version = 1
        voluntary: bool
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case.withdrawal = {"voluntary": self.voluntary, "reason": self.reason}
            case._advance(self)

    class WithdrawalFlaggedForInvestigation(Aggregate.Event):
        """A withdrawal that was not voluntary: it is investigated, and the case stays open."""

        class_version = 1
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case.withdrawal_flags += 1

    class HandlingOpinionRecorded(Aggregate.Event):
        class_version = 1
        opinion: str
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case.file = {**case.file, "handling_opinion": True}

    class LeaderSignedOff(Aggregate.Event):
        class_version = 1
        leader: str
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case.file = {**case.file, "leader_sign_off": self.leader}

    class PetitionerSignatureRecorded(Aggregate.Event):
        """The petitioner signed the file, or a note records that they refused to."""

        class_version = 1
        signed: bool
        refusal_note: str
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case.file = {**case.file,
                         "petitioner_signature": "signed" if self.signed else "refused"}

    class Closed(Aggregate.Event):
        """结案, on a complete file (or none needed: not accepted, withdrawn)."""

        class_version = 1
        closed_on: str
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case.closed_on = self.closed_on
            case._advance(self)

    class Archived(Aggregate.Event):
        class_version = 1
        archived_on: str
        actor: dict[str, str]
        reason: str

        def apply(self, case: Case) -> None:
            case.archived_on = self.archived_on
            case._advance(self)

    # state ------------------------------------------------------------------------------
