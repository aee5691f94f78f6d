"""Random command sequences against the Case lifecycle, with random dates and clocks.

After every step the statutory invariants must hold on the events collected so far, and
replaying them must rebuild the same case (and the same summary). Pure: no I/O.
"""
from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from uuid import uuid4

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from petitions.domain.calendar import calendar_from_chinese_calendar
from petitions.domain.case import Case
from petitions.domain.deadlines import (
    RE_REVIEW_REQUEST_DAYS,
    REVIEW_REQUEST_DAYS,
    calendar_days_deadline,
)
from petitions.domain.errors import IllegalTransition, RuleViolation
from petitions.domain.lifecycle import (
    NOT_ACCEPTED_AGAIN_GROUNDS,
    NOT_ACCEPTED_REASONS,
    OPINION_OUTCOMES,
    REPLY_OUTCOMES,
    SATISFACTION,
    STATUS_AFTER,
    Action,
)
from petitions.domain.summary import fold_summary
from petitions.domain.values import Actor, CaseStatus, Category, Channel, Petitioner
from petitions.infra.events import event_data

CAL = calendar_from_chinese_calendar()
ACTOR = Actor(id="someone", role="bureau_supervisor", jurisdiction="330106")
RECEIVED = datetime(2026, 8, 3, 1, 0, tzinfo=UTC)
LATE = datetime(2028, 6, 1, 2, 0, tzinfo=UTC)  # most commands run on a clock after every date
UNITS = ["land-330106", "housing-330106", "agri-330106"]

AFTER_TERMINATION = {"Closed", "Archived", "HandlingOpinionRecorded", "LeaderSignedOff",
                     "PetitionerSignatureRecorded"}

deltas = st.integers(min_value=-3, max_value=40)  # days after the latest date on record
texts = st.sampled_from(["", "理由", "说明"])


def mostly_refused(valid) -> st.SearchStrategy:
    """Commands that end a case early are mostly given bad content, so that sequences also
    reach the later stages (review, re-review, termination) often."""
    return st.one_of(*[st.just("bad")] * 5, st.sampled_from(valid))


def noon(d: date) -> datetime:
    return datetime.combine(d, time(4, 0), tzinfo=UTC)  # 12:00 in China


class LifecycleMachine(RuleBasedStateMachine):
    @initialize(anonymous=st.booleans())
    def register(self, anonymous: bool) -> None:
        self.case = Case.register(
            case_id=uuid4(), case_number="330106-2026-000001", channel=Channel.LETTER,
            category=Category.APPEAL, division="330106", subject="land", content="c",
            requests=[], people_count=1,
            petitioner=None if anonymous else Petitioner(name="张三"), received_at=RECEIVED,
            submission_digest="d", actor=ACTOR, at=RECEIVED)
        self.log = list(self.case.collect_events())
        self.last_day = RECEIVED.date()

    # -- driving ----------------------------------------------------------------------------

    def day(self, delta: int) -> date:
        return self.last_day + timedelta(days=delta)

    def attempt(self, action: Action, command, day: date | None = None, *,
                strict: bool = True) -> None:
        allowed_before = self.case.allowed_actions()
        version, status = self.case.version, self.case.status
        try:
            command(self.case)
        except IllegalTransition as refused:
            assert refused.action == action.value and action.value not in allowed_before
            assert refused.current_state == status.value
            assert refused.allowed == allowed_before
            self.assert_nothing_appended(version, status)
            return
        except RuleViolation:
            assert action.value in allowed_before or not strict  # state first, then content
            self.assert_nothing_appended(version, status)
            return
        assert action.value in allowed_before
        new = self.case.collect_events()
        assert new, f"{action} succeeded but recorded nothing"
        self.log.extend(new)
        if day is not None:
            self.last_day = max(self.last_day, day)

    def assert_nothing_appended(self, version: int, status: CaseStatus) -> None:
        assert self.case.collect_events() == []
        assert (self.case.version, self.case.status) == (version, status)

    # -- rules ----------------------------------------------------------------------------

    clock = st.one_of(st.just(None), st.just(None), st.just(None), deltas)

    def at(self, clock_delta: int | None) -> datetime:
        return LATE if clock_delta is None else noon(self.day(clock_delta))

    @rule(mode=st.sampled_from(["assign", "assign", "transfer", "delegate"]),
          lead=st.sampled_from(UNITS),
          assisting=st.lists(st.sampled_from(["helper-1", "helper-2", UNITS[0]]), max_size=2),
          delta=deltas, clock=clock)
    def accept(self, mode, lead, assisting, delta, clock):
        d = self.day(delta)
        self.attempt(Action.ACCEPT, lambda c: c.accept(
            mode=mode, lead_unit=lead, assisting_units=assisting, decided_on=d, actor=ACTOR,
            at=self.at(clock), reason="r"), d)

    @rule(unit=st.sampled_from(UNITS))
    def route(self, unit):
        # Routing twice is a RuleViolation (its settled flag), not an IllegalTransition.
        self.attempt(Action.ROUTE, lambda c: c.route_to_unit(
            unit_id=unit, unit_name=unit, rule_id="r1", rule_set_version="1",
            explanation="rule", actor=ACTOR, at=LATE), strict=False)

    @rule(code=mostly_refused(NOT_ACCEPTED_REASONS), organ=texts, delta=deltas)
    def not_accept(self, code, organ, delta):
        d = self.day(delta)
        self.attempt(Action.NOT_ACCEPT, lambda c: c.not_accept(
            reason_code=code, redirect_organ=organ, decided_on=d, actor=ACTOR, at=LATE,
            reason="r"), d)

    @rule(ground=mostly_refused(NOT_ACCEPTED_AGAIN_GROUNDS), delta=deltas)
    def not_accept_again(self, ground, delta):
        d = self.day(delta)
        self.attempt(Action.NOT_ACCEPT_AGAIN, lambda c: c.not_accept_again(
            earlier_case_id=str(uuid4()), ground=ground, decided_on=d, actor=ACTOR, at=LATE,
            reason="r"), d)

    @rule(answer=mostly_refused([" ", "答复"]).map(lambda a: "" if a == "bad" else a),
          delta=deltas)
    def answer_on_the_spot(self, answer, delta):
        d = self.day(delta)
        self.attempt(Action.ANSWER_ON_THE_SPOT, lambda c: c.answer_on_the_spot(
            answer=answer, decided_on=d, actor=ACTOR, at=LATE, reason="r"), d)

    @rule(unit=st.sampled_from(UNITS), note=texts)
    def report_progress(self, unit, note):
        self.attempt(Action.REPORT_PROGRESS, lambda c: c.report_progress(
            unit_id=unit, note=note, actor=ACTOR, at=LATE, reason="r"))

    @rule(delta=deltas, duration=st.integers(0, 5))
    def hold_hearing(self, delta, duration):
        d = self.day(delta)
        self.attempt(Action.HOLD_HEARING, lambda c: c.hold_hearing(
            held_on=d, duration_days=duration, actor=ACTOR, at=LATE, reason="r"), d)

    @rule(unit=st.sampled_from(UNITS), delta=st.integers(-2, 10), reasons=texts)
    def object_to_assignment(self, unit, delta, reasons):
        d = self.day(delta)
        self.attempt(Action.OBJECT_TO_ASSIGNMENT, lambda c: c.object_to_assignment(
            unit_id=unit, reasons=reasons, objected_on=d, calendar=CAL, actor=ACTOR, at=LATE,
            reason="r"), d)

    @rule(upheld=st.booleans(), new_lead=st.sampled_from([None, *UNITS]))
    def decide_objection(self, upheld, new_lead):
        self.attempt(Action.DECIDE_OBJECTION, lambda c: c.decide_objection(
            upheld=upheld, new_lead_unit=new_lead, decided_by="superior", actor=ACTOR, at=LATE,
            reason="r"))

    @rule(days=st.integers(0, 35), told=st.booleans())
    def grant_extension(self, days, told):
        self.attempt(Action.GRANT_EXTENSION, lambda c: c.grant_extension(
            days=days, approver="head", petitioner_told=told, actor=ACTOR, at=LATE, reason="r"))

    @rule(outcome=st.sampled_from([*REPLY_OUTCOMES, "bad"]), delta=deltas, clock=clock)
    def reply(self, outcome, delta, clock):
        d = self.day(delta)
        self.attempt(Action.REPLY, lambda c: c.reply(
            outcome=outcome, reply_text="text", replied_on=d, actor=ACTOR, at=self.at(clock),
            reason="r"), d)

    @rule(delta=deltas)
    def record_reply_receipt(self, delta):
        d = self.day(delta)
        self.attempt(Action.RECORD_REPLY_RECEIPT, lambda c: c.record_reply_receipt(
            received_on=d, actor=ACTOR, at=LATE, reason="r"), d)

    @rule(delta=deltas, clock=clock)
    def request_review(self, delta, clock):
        d = self.day(delta)
        self.attempt(Action.REQUEST_REVIEW, lambda c: c.request_review(
            requested_on=d, organ="city", calendar=CAL, actor=ACTOR, at=self.at(clock),
            reason="r"), d)

    @rule(outcome=st.sampled_from(OPINION_OUTCOMES), delta=deltas)
    def issue_review_opinion(self, outcome, delta):
        d = self.day(delta)
        self.attempt(Action.ISSUE_REVIEW_OPINION, lambda c: c.issue_review_opinion(
            outcome=outcome, opinion="o", issued_on=d, actor=ACTOR, at=LATE, reason="r"), d)

    @rule(delta=deltas)
    def request_re_review(self, delta):
        d = self.day(delta)
        self.attempt(Action.REQUEST_RE_REVIEW, lambda c: c.request_re_review(
            requested_on=d, organ="province", calendar=CAL, actor=ACTOR, at=LATE,
            reason="r"), d)

    @rule(outcome=st.sampled_from(OPINION_OUTCOMES), delta=deltas)
    def issue_re_review_opinion(self, outcome, delta):
        d = self.day(delta)
        self.attempt(Action.ISSUE_RE_REVIEW_OPINION, lambda c: c.issue_re_review_opinion(
            outcome=outcome, opinion="o", issued_on=d, actor=ACTOR, at=LATE, reason="r"), d)

    @rule(satisfaction=st.sampled_from([*SATISFACTION, "meh"]), delta=deltas)
    def record_return_visit(self, satisfaction, delta):
        d = self.day(delta)
        self.attempt(Action.RECORD_RETURN_VISIT, lambda c: c.record_return_visit(
            satisfaction=satisfaction, comment="", visited_on=d, actor=ACTOR, at=LATE,
            reason="r"), d)

    @rule(voluntary=st.sampled_from([False] * 7 + [True]), reason=texts)
    def withdraw(self, voluntary, reason):
        self.attempt(Action.WITHDRAW, lambda c: c.withdraw(
            voluntary=voluntary, actor=ACTOR, at=LATE, reason=reason))

    @rule(opinion=texts)
    def record_handling_opinion(self, opinion):
        self.attempt(Action.RECORD_HANDLING_OPINION, lambda c: c.record_handling_opinion(
            opinion=opinion, actor=ACTOR, at=LATE, reason="r"))

    @rule(leader=texts)
    def record_leader_sign_off(self, leader):
        self.attempt(Action.RECORD_LEADER_SIGN_OFF, lambda c: c.record_leader_sign_off(
            leader=leader, actor=ACTOR, at=LATE, reason="r"))

    @rule(signed=st.booleans(), note=texts)
    def record_petitioner_signature(self, signed, note):
        self.attempt(Action.RECORD_PETITIONER_SIGNATURE, lambda c: c.record_petitioner_signature(
            signed=signed, refusal_note=note, actor=ACTOR, at=LATE, reason="r"))

    @rule(delta=deltas)
    def close(self, delta):
        d = self.day(delta)
        self.attempt(Action.CLOSE, lambda c: c.close(closed_on=d, actor=ACTOR, at=LATE,
                                                     reason="r"), d)

    @rule(delta=deltas)
    def archive(self, delta):
        d = self.day(delta)
        self.attempt(Action.ARCHIVE, lambda c: c.archive(archived_on=d, actor=ACTOR, at=LATE,
                                                         reason="r"), d)

    @rule(delta=st.integers(0, 28), outcome=st.sampled_from(OPINION_OUTCOMES),
          side_road=st.booleans())
    def take_the_main_road(self, delta, outcome, side_road):
        """The next step of the ordinary statutory road (or a common side road), with a random
        date that is usually in time, so that random sequences reach review, re-review and
        termination."""
        status, allowed = self.case.status, self.case.allowed_actions()
        if status is CaseStatus.REGISTERED:
            self.accept("assign", UNITS[0], [], delta, None)
        elif status is CaseStatus.ACCEPTED and side_road and "decide_objection" in allowed:
            self.decide_objection(outcome == "upheld", UNITS[1] if outcome == "upheld" else None)
        elif status is CaseStatus.ACCEPTED and side_road:
            self.object_to_assignment(self.case.lead_unit, delta % 8, "理由")
        elif status is CaseStatus.ACCEPTED:
            self.reply("supported", delta, None)
        elif status is CaseStatus.REPLIED and "record_reply_receipt" in allowed:
            self.record_reply_receipt(delta)
        elif status is CaseStatus.REPLIED and side_road:
            self.record_return_visit("dissatisfied" if outcome == "revoked" else "satisfied",
                                     delta)
        elif status is CaseStatus.REPLIED:
            self.request_review(delta, None)
        elif status is CaseStatus.UNDER_REVIEW:
            self.issue_review_opinion(outcome, delta)
        elif status is CaseStatus.REVIEWED:
            self.request_re_review(delta)
        elif status is CaseStatus.UNDER_RE_REVIEW:
            self.issue_re_review_opinion(outcome, delta)
        else:
            self.close(delta)

    # -- invariants -------------------------------------------------------------------------

    def names(self) -> list[str]:
        return [type(e).__name__ for e in self.log]

    @invariant()
    def versions_strictly_increase_by_one(self):
        assert [e.originator_version for e in self.log] == list(range(1, len(self.log) + 1))
        assert self.case.version == len(self.log)

    @invariant()
    def no_reply_before_acceptance(self):
        status = CaseStatus.REGISTERED
        for e in self.log:
            if type(e).__name__ == "Replied":
                assert status is CaseStatus.ACCEPTED
            status = STATUS_AFTER.get(type(e).__name__, status)

    @invariant()
    def at_most_one_extension(self):
        assert self.names().count("ExtensionGranted") <= 1

    @invariant()
    def review_and_re_review_only_in_their_windows(self):
        received = opinion = None
        for e in self.log:
            name = type(e).__name__
            if name == "ReplyReceived":
                received = date.fromisoformat(e.received_on)
            elif name == "ReviewOpinionIssued":
                opinion = date.fromisoformat(e.issued_on)
            elif name == "ReviewRequested":
                asked = date.fromisoformat(e.requested_on)
                assert received is not None
                assert received <= asked <= calendar_days_deadline(
                    received, REVIEW_REQUEST_DAYS, CAL).due_on
            elif name == "ReReviewRequested":
                asked = date.fromisoformat(e.requested_on)
                assert opinion is not None
                assert opinion <= asked <= calendar_days_deadline(
                    opinion, RE_REVIEW_REQUEST_DAYS, CAL).due_on

    @invariant()
    def nothing_after_termination_but_the_file_closing_and_archiving(self):
        names = self.names()
        if "ReReviewOpinionIssued" in names:
            after = names[names.index("ReReviewOpinionIssued") + 1:]
            assert set(after) <= AFTER_TERMINATION

    @invariant()
    def replay_rebuilds_the_same_case_and_summary(self):
        rebuilt, summary = None, None
        for e in self.log:
            rebuilt = e.mutate(rebuilt)
            summary = fold_summary(summary, str(e.originator_id), type(e).__name__,
                                   e.originator_version, e.timestamp.isoformat(), event_data(e))
        assert (rebuilt.status, rebuilt.version) == (self.case.status, self.case.version)
        assert rebuilt.lifecycle_flags() == self.case.lifecycle_flags()
        assert rebuilt.allowed_actions() == self.case.allowed_actions()
        assert summary["status"] == self.case.status.value
        assert summary["allowed_actions"] == self.case.allowed_actions()
        assert summary["version"] == self.case.version
        assert "张三" not in str(summary)


LifecycleMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestLifecycleMachine = LifecycleMachine.TestCase
