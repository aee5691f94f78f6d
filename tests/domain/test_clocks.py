"""Clock rules: which fact starts, stops, moves or pauses which clock, on the published 2025 and
2026 holiday schedules; reconciling a case with its plan; what a due timer means. No I/O."""
from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from uuid import uuid4

import pytest

from petitions.domain.calendar import WorkCalendar, calendar_from_chinese_calendar
from petitions.domain.case import Case
from petitions.domain.clocks import (
    CANCELLED,
    CLOSED,
    DUE,
    DUTY,
    FIRED,
    LATE,
    MET,
    PENDING,
    RULES,
    SPECS,
    STALE,
    WARN,
    WINDOW,
    ClockPolicy,
    Fact,
    Move,
    Pause,
    Start,
    Stop,
    StopAll,
    UnitLimit,
    due_fire_at,
    facts_from_events,
    fire_timer,
    plan_clocks,
    reconcile,
    timer_rows,
    warn_fire_at,
)
from petitions.domain.errors import RuleViolation
from petitions.domain.summary import fold_summary
from petitions.domain.values import CHINA_TZ, Actor, Category, Channel, Petitioner
from petitions.infra.events import event_data

CAL = calendar_from_chinese_calendar([2025, 2026])
SERVICE = Actor(id="deadlines-service", role="service")
CLERK = Actor(id="clerk-7", role="intake_clerk", jurisdiction="330106")
BUREAU = Actor(id="supervisor-1", role="bureau_supervisor", jurisdiction="330106")
UNIT = Actor(id="officer-land", role="handling_unit", jurisdiction="330106")
NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
LEAD = "land-330106"


def D(text: str) -> date:
    return date.fromisoformat(text)


def cst(text: str) -> datetime:
    """A moment given in China time."""
    return datetime.fromisoformat(text).replace(tzinfo=CHINA_TZ)


class Facts:
    """A case's facts, built one by one with increasing versions."""

    def __init__(self, received: str = "2026-09-28T09:00:00", division: str = "330106"):
        self.items: list[Fact] = []
        self.add("Registered", division=division, received_at=cst(received).isoformat())

    def add(self, type_: str, at: datetime | None = None, **data) -> Facts:
        version = len(self.items) + 1
        self.items.append(Fact(type_, version, at or NOW, data))
        return self

    def plan(self, calendar: WorkCalendar = CAL, policy: ClockPolicy = ClockPolicy()):
        return plan_clocks(self.items, calendar, policy)


def only(plan, clock):
    [run] = plan.clocks[clock]
    return run


# --- the table --------------------------------------------------------------------------------


def test_the_table_covers_every_lifecycle_fact_named_by_the_regulation():
    named = {"Registered", "Accepted", "NotAccepted", "NotAcceptedAgain", "AnsweredOnTheSpot",
             "HearingHeld", "AssignmentObjected", "ObjectionDecided", "ExtensionGranted",
             "Replied", "ReplyReceived", "ReviewRequested", "ReviewOpinionIssued",
             "ReReviewRequested", "ReReviewOpinionIssued", "ReturnVisitRecorded",
             "WorkReopened", "Withdrawn", "Closed"}
    assert named <= set(RULES)
    assert set(ClockPolicy().trigger_types()) >= named | {"RoutedToUnit",
                                                          "TransferredToJurisdiction"}
    # every clock a rule names exists, and windows are exactly the three "may" periods
    for actions in RULES.values():
        for a in actions:
            for name in getattr(a, "clocks", ()) or ((a.clock,) if hasattr(a, "clock") else ()):
                assert name in SPECS
    assert {n for n, s in SPECS.items() if s.obligation == WINDOW} == {
        "objection", "review_request", "re_review_request"}
    assert RULES["ExtensionGranted"] == (Move("handling", by="days"),)
    assert isinstance(RULES["Closed"][0], StopAll) and isinstance(RULES["Withdrawn"][0], StopAll)
    assert Pause(("review_opinion", "re_review_opinion"), by="duration_days") in RULES[
        "HearingHeld"]
    assert Stop("handling", on="replied_on") in RULES["Replied"]
    assert Start("handling", on=None, restart=True) in RULES["WorkReopened"]


# --- acceptance on the published calendars -----------------------------------------------------


def test_acceptance_received_before_national_day_2026_is_due_after_the_break():
    run = only(Facts("2026-09-28T09:00:00").plan(), "acceptance")
    assert (run.started_on, run.due_on, run.running) == (D("2026-09-28"), D("2026-10-13"), True)
    assert "2026-10-01..2026-10-07" in run.explanation
    assert "roll-forward: on" in run.explanation and not run.provisional
    assert run.unit_id == "bureau-330106" and run.obligation == DUTY


def test_acceptance_ending_inside_national_day_2026_rolls_to_the_first_working_day():
    run = only(Facts("2026-09-20T10:00:00").plan(), "acceptance")
    assert run.deadline.nominal_due_on == D("2026-10-05")
    assert run.due_on == D("2026-10-08")
    assert "rolled forward to the next working day 2026-10-08" in run.explanation


def test_acceptance_ending_in_spring_festival_2026_rolls_past_the_break():
    run = only(Facts("2026-02-01T10:00:00").plan(), "acceptance")
    assert run.deadline.nominal_due_on == D("2026-02-16")
    assert run.due_on == D("2026-02-24")  # 15-23 February is the break
    assert "2026-02-15..2026-02-23" in run.explanation


def test_acceptance_ending_in_national_day_2025_rolls_to_9_october():
    run = only(Facts("2025-09-23T10:00:00").plan(), "acceptance")
    assert (run.deadline.nominal_due_on, run.due_on) == (D("2025-10-08"), D("2025-10-09"))


def test_receipt_is_counted_on_the_china_date():
    late_evening_utc = Facts().items[0]
    facts = Facts()
    facts.items[0] = Fact("Registered", 1, NOW, {
        "division": "330106", "received_at": datetime(2026, 9, 27, 20, 0, tzinfo=UTC).isoformat()})
    assert late_evening_utc.day("received_at") == D("2026-09-28")
    assert only(facts.plan(), "acceptance").started_on == D("2026-09-28")  # 04:00 in China


def test_a_jurisdiction_without_roll_forward_ends_on_the_last_calendar_day():
    policy = ClockPolicy.from_config(None, {"no_roll_forward": ["330108"]})
    run = only(Facts("2026-09-20T10:00:00", division="330108").plan(policy=policy), "acceptance")
    assert run.due_on == D("2026-10-05")
    assert "roll-forward: off in jurisdiction 330108" in run.explanation
    # the neighbouring county keeps the statutory rule
    run = only(Facts("2026-09-20T10:00:00", division="330106").plan(policy=policy), "acceptance")
    assert run.due_on == D("2026-10-08")


@pytest.mark.parametrize("decision", ["NotAccepted", "NotAcceptedAgain", "AnsweredOnTheSpot"])
def test_every_acceptance_decision_meets_the_acceptance_clock(decision):
    run = only(Facts().add(decision, decided_on="2026-10-13").plan(), "acceptance")
    assert (run.running, run.outcome, run.stopped_on) == (False, MET, D("2026-10-13"))


def test_a_decision_after_the_due_date_is_late_and_withdrawal_closes():
    assert only(Facts().add("NotAccepted", decided_on="2026-10-14").plan(),
                "acceptance").outcome == LATE
    run = only(Facts().add("Withdrawn", at=cst("2026-10-02T10:00:00"), voluntary=True).plan(),
               "acceptance")
    assert (run.outcome, run.stopped_on) == (CLOSED, D("2026-10-02"))


# --- handling, objection, extension ------------------------------------------------------------


def accepted(mode: str = "assign", decided_on: str = "2026-10-09") -> Facts:
    return Facts().add("Accepted", mode=mode, lead_unit=LEAD, assisting_units=[],
                       decided_on=decided_on)


def test_acceptance_starts_handling_and_for_an_assignment_the_objection_window():
    plan = accepted().plan()
    assert only(plan, "acceptance").outcome == MET
    handling = only(plan, "handling")
    assert (handling.started_on, handling.due_on) == (D("2026-10-09"), D("2026-12-08"))
    assert handling.unit_id == LEAD
    objection = only(plan, "objection")
    # 5 working days: Sat 10 Oct 2026 is a swapped working day, Sun 11 Oct rests
    assert objection.due_on == D("2026-10-15") and objection.obligation == WINDOW
    assert "swapped working days counted: 2026-10-10" in objection.explanation
    assert "objection" not in accepted(mode="transfer").plan().clocks


def test_an_extension_moves_handling_and_into_an_unknown_year_it_is_provisional():
    plan = accepted().add("ExtensionGranted", days=30, approver="局长",
                          petitioner_told=True).plan()
    run = only(plan, "handling")
    assert (run.length, run.due_on, run.provisional) == (90, D("2027-01-07"), True)
    assert "extended by 30 days" in run.explanation
    assert "no official holiday notice loaded for 2027" in run.explanation


def test_reply_meets_handling_in_time_or_late():
    assert only(accepted().add("Replied", replied_on="2026-12-08").plan(),
                "handling").outcome == MET
    assert only(accepted().add("Replied", replied_on="2026-12-09").plan(),
                "handling").outcome == LATE


def test_an_objection_closes_the_window_and_an_upheld_one_moves_the_matter():
    plan = (accepted().add("AssignmentObjected", unit_id=LEAD, reasons="x",
                           objected_on="2026-10-12")
            .add("ObjectionDecided", at=cst("2026-10-20T10:00:00"), upheld=True,
                 new_lead_unit="agri-330106", decided_by="区政府").plan())
    first, second = plan.clocks["objection"]
    assert (first.outcome, first.stopped_on) == (MET, D("2026-10-12"))
    assert (second.started_on, second.unit_id, second.running) == (
        D("2026-10-20"), "agri-330106", True)
    assert only(plan, "handling").unit_id == "agri-330106"


def test_a_local_working_day_limit_counts_a_swapped_sunday_2025():
    limit = UnitLimit(division="3301", clock="local_simple_reply", working_days=5,
                      trigger="Accepted", unit_id=LEAD, description="5 working days")
    policy = ClockPolicy(unit_limits=(limit,))
    # decided Friday 26 Sep 2025: Sun 28 Sep is a working day, 1-8 Oct the break
    run = only(accepted(decided_on="2025-09-26").plan(policy=policy), "local_simple_reply")
    assert run.due_on == D("2025-10-10")
    assert "swapped working days counted: 2025-09-28" in run.explanation
    assert "2025-10-01..2025-10-08 (public holiday)" in run.explanation
    # Friday 18 Sep 2026: Sunday 20 Sep works, so the fifth working day is Thursday 24 Sep
    run = only(accepted(decided_on="2026-09-18").plan(policy=policy), "local_simple_reply")
    assert run.due_on == D("2026-09-24")
    met = accepted(decided_on="2026-09-18").add("Replied", replied_on="2026-09-24")
    assert only(met.plan(policy=policy), "local_simple_reply").outcome == MET
    # another unit, or another province, is not bound by it
    other = Facts().add("Accepted", mode="assign", lead_unit="hr-330106", assisting_units=[],
                        decided_on="2026-09-18")
    assert "local_simple_reply" not in other.plan(policy=policy).clocks


def test_unit_limit_configuration_is_validated():
    with pytest.raises(ValueError):
        UnitLimit(division="33", clock="handling", working_days=5, trigger="Accepted")
    with pytest.raises(ValueError):
        UnitLimit(division="33", clock="x", working_days=0, trigger="Accepted")
    with pytest.raises(ValueError):
        UnitLimit.from_dict({"division": "33", "clock": "x", "working_days": 5,
                             "trigger": "Accepted", "days": 3})
    with pytest.raises(ValueError):
        ClockPolicy.from_config(None, {"no_roll_forward": ["Hangzhou"]})


# --- reply, review, re-review, return visit ----------------------------------------------------


def replied() -> Facts:
    return (accepted().add("Replied", replied_on="2026-11-02")
            .add("ReplyReceived", received_on="2026-11-04"))


def test_receiving_the_reply_opens_the_review_window_and_the_return_visit():
    plan = replied().plan()
    window, visit = only(plan, "review_request"), only(plan, "return_visit")
    assert (window.due_on, window.obligation) == (D("2026-12-04"), WINDOW)
    assert (visit.due_on, visit.obligation) == (D("2026-11-16"), DUTY)  # 14 Nov is a Saturday


def test_hearing_time_does_not_count_against_the_review_opinion():
    facts = replied().add("ReviewRequested", requested_on="2026-11-20", organ="bureau-330100")
    assert only(facts.plan(), "review_opinion").due_on == D("2026-12-21")  # 20 Dec: Sunday
    assert only(facts.plan(), "review_request").outcome == MET
    facts.add("HearingHeld", held_on="2026-11-25", duration_days=10)
    run = only(facts.plan(), "review_opinion")
    assert (run.paused_days, run.due_on) == (10, D("2026-12-30"))
    assert "plus 10 paused days" in run.explanation
    assert run.unit_id == "bureau-330100"


def test_re_review_terminates_the_matter_and_closes_every_other_clock():
    facts = (replied().add("ReviewRequested", requested_on="2026-11-10", organ="city")
             .add("ReviewOpinionIssued", outcome="upheld", opinion="o", issued_on="2026-11-30")
             .add("ReReviewRequested", requested_on="2026-12-10", organ="province")
             .add("HearingHeld", held_on="2026-12-15", duration_days=5))
    plan = facts.plan()
    assert only(plan, "re_review_request").outcome == MET
    assert only(plan, "re_review_opinion").due_on == D("2027-01-14")  # 9 Jan + 5 paused days
    facts.add("ReReviewOpinionIssued", outcome="upheld", opinion="o", issued_on="2027-01-05")
    plan = facts.plan()
    assert only(plan, "re_review_opinion").outcome == MET
    assert only(plan, "return_visit").outcome == CLOSED
    assert all(not r.running for runs in plan.clocks.values() for r in runs)


def test_a_review_asked_after_the_window_closed_the_window_not_late():
    facts = replied().add("ReviewRequested", requested_on="2026-12-20", organ="city")
    assert only(facts.plan(), "review_request").outcome == CLOSED


def test_reopened_work_gets_a_new_handling_run_and_two_reopenings_escalate():
    facts = (replied().add("ReturnVisitRecorded", satisfaction="dissatisfied", comment="",
                           visited_on="2026-11-10")
             .add("WorkReopened", at=cst("2026-11-11T10:00:00")))
    plan = facts.plan()
    first, second = plan.clocks["handling"]
    assert (first.outcome, second.running, second.started_on) == (MET, True, D("2026-11-11"))
    assert second.due_on == D("2027-01-11")  # 10 Jan 2027 is a Sunday (provisional)
    assert only(plan, "review_request").outcome == CLOSED
    assert only(plan, "return_visit").outcome == MET
    assert plan.escalations == ()
    facts.add("Replied", replied_on="2026-12-01").add("ReplyReceived", received_on="2026-12-02")
    facts.add("WorkReopened", at=cst("2026-12-05T10:00:00"))
    plan = facts.plan()
    assert len(plan.clocks["handling"]) == 3 and len(plan.clocks["review_request"]) == 2
    [esc] = plan.escalations
    assert (esc.key, esc.clock) == ("replies-sent-back", "handling")


def test_closing_stops_every_running_clock():
    plan = replied().add("Closed", closed_on="2026-11-06").plan()
    for name in ("review_request", "return_visit"):
        assert (only(plan, name).outcome, only(plan, name).stopped_on) == (CLOSED,
                                                                           D("2026-11-06"))
    assert only(plan, "handling").outcome == MET  # stopped earlier by the reply


def test_facts_are_folded_in_version_order_and_unknown_facts_are_ignored():
    facts = accepted().add("ProgressReported", unit_id=LEAD, note="n")
    shuffled = list(reversed(facts.items))
    assert plan_clocks(shuffled, CAL) == facts.plan()


# --- reconciling a case -----------------------------------------------------------------------


def register(received_at: datetime = cst("2026-09-28T09:00:00")) -> Case:
    return Case.register(
        case_id=uuid4(), case_number="330106-2026-000042", channel=Channel.LETTER,
        category=Category.APPEAL, division="330106", subject="land", content="宅基地",
        requests=["重新丈量"], people_count=1, petitioner=Petitioner(name="李四"),
        received_at=received_at, submission_digest="abc", actor=CLERK, at=received_at)


def stored(case: Case) -> tuple[Case, list]:
    """Save `case` as a store would: collect its events and rebuild it from all of them."""
    history = getattr(case, "_test_history", []) + case.collect_events()
    rebuilt = None
    for e in history:
        rebuilt = e.mutate(rebuilt)
    rebuilt._test_history = history
    return rebuilt, history


def reconciled(case: Case, calendar: WorkCalendar = CAL, policy: ClockPolicy = ClockPolicy()):
    case, history = stored(case)
    plan = plan_clocks(facts_from_events(history), calendar, policy)
    appended = reconcile(case, plan, actor=SERVICE, at=NOW)
    case, history = stored(case)
    return case, appended, plan


def test_reconcile_starts_the_acceptance_clock_once():
    case, appended, _ = reconciled(register())
    assert appended == ["ClockStarted"]
    assert case.clocks["acceptance"]["due_on"] == "2026-10-13"
    case, appended, _ = reconciled(case)
    assert appended == []


def test_reconcile_follows_the_lifecycle_commands():
    case, _, _ = reconciled(register())
    case.accept(mode="assign", lead_unit=LEAD, assisting_units=[], decided_on=D("2026-10-09"),
                actor=BUREAU, at=NOW, reason="within remit")
    case, appended, _ = reconciled(case)
    assert appended == ["ClockStopped", "ClockStarted", "ClockStarted"]
    assert case.clocks["acceptance"]["state"] == MET
    assert case.clocks["handling"]["due_on"] == "2026-12-08"
    case.grant_extension(days=30, approver="局长", petitioner_told=True, actor=BUREAU, at=NOW,
                         reason="needs a survey")
    case, appended, _ = reconciled(case)
    assert appended == ["ClockMoved"]
    assert (case.clocks["handling"]["due_on"], case.clocks["handling"]["provisional"]) == (
        "2027-01-07", True)
    assert reconciled(case)[1] == []


def test_a_late_start_records_the_whole_story():
    """The service was down while the case was accepted and answered: it catches up."""
    case = register()
    case.accept(mode="transfer", lead_unit=LEAD, assisting_units=[], decided_on=D("2026-10-20"),
                actor=BUREAU, at=NOW, reason="x")
    case, appended, _ = reconciled(case)
    assert appended == ["ClockStarted", "ClockStopped", "ClockStarted"]
    assert case.clocks["acceptance"]["outcome"] == LATE


def test_loading_2027_recomputes_provisional_dates_and_an_old_calendar_never_undoes_it():
    case, _, _ = reconciled(register(received_at=cst("2026-12-28T09:00:00")))
    assert case.clocks["acceptance"]["provisional"] is True
    assert case.clocks["acceptance"]["due_on"] == "2027-01-12"
    # A hypothetical 2027 notice (test data, not the official one): 11-13 Jan as rest days.
    cal_2027 = CAL.with_year(2027, [D("2027-01-01"), D("2027-01-11"), D("2027-01-12"),
                                    D("2027-01-13")], [D("2027-01-16")])
    case, appended, _ = reconciled(case, cal_2027)
    assert appended == ["ClockRecomputed"]
    assert (case.clocks["acceptance"]["due_on"], case.clocks["acceptance"]["provisional"]) == (
        "2027-01-14", False)
    assert reconciled(case, cal_2027)[1] == []
    assert reconciled(case, CAL)[1] == []  # a replica that has not loaded 2027 yet


def test_two_reopenings_propose_an_escalation_once():
    facts_case, _, _ = reconciled(register())
    case = facts_case
    plan = (accepted().add("Replied", replied_on="2026-10-20").add("WorkReopened")
            .add("Replied", replied_on="2026-10-25").add("WorkReopened").plan())
    appended = reconcile(case, plan, actor=SERVICE, at=NOW)
    assert appended.count("EscalationProposed") == 1
    case, _ = stored(case)
    assert "replies-sent-back" in case.clock_escalations
    assert reconcile(case, plan, actor=SERVICE, at=NOW) == []


# --- timers -----------------------------------------------------------------------------------


def acceptance_case() -> Case:
    return reconciled(register())[0]


def test_timers_of_a_duty_and_of_a_window():
    case = acceptance_case()
    rows = {(r.clock, r.kind): r for r in timer_rows(case)}
    warn, due = rows[("acceptance", WARN)], rows[("acceptance", DUE)]
    assert warn.fire_at == cst("2026-10-10T00:00:00") == warn_fire_at(D("2026-10-13"))
    assert due.fire_at == cst("2026-10-14T00:00:00") == due_fire_at(D("2026-10-13"))
    assert warn.state == due.state == PENDING
    case.accept(mode="assign", lead_unit=LEAD, assisting_units=[], decided_on=D("2026-10-09"),
                actor=BUREAU, at=NOW, reason="x")
    case, _, plan = reconciled(case)
    rows = {(r.clock, r.kind): r for r in timer_rows(case, plan)}
    assert rows[("acceptance", WARN)].state == rows[("acceptance", DUE)].state == CANCELLED
    assert ("objection", WARN) not in rows  # a window gets no reminder
    assert rows[("objection", DUE)].obligation == WINDOW
    assert rows[("handling", DUE)].unit_id == LEAD


def test_reminder_3_days_before_then_missed_the_day_after_then_escalation():
    case = acceptance_case()
    due = D("2026-10-13")
    assert fire_timer(case, "acceptance", WARN, due, DUTY, cst("2026-10-10T00:00:01"),
                      actor=SERVICE) == FIRED
    assert fire_timer(case, "acceptance", WARN, due, DUTY, cst("2026-10-10T00:00:02"),
                      actor=SERVICE) == FIRED  # re-fired: nothing more
    case, history = stored(case)
    assert [type(e).__name__ for e in history][-1] == "ClockWarned"
    assert fire_timer(case, "acceptance", DUE, due, DUTY, cst("2026-10-14T00:00:01"),
                      actor=SERVICE) == FIRED
    assert fire_timer(case, "acceptance", DUE, due, DUTY, cst("2026-10-14T00:00:02"),
                      actor=SERVICE) == FIRED
    case, history = stored(case)
    assert [type(e).__name__ for e in history][-3:] == ["ClockWarned", "ClockMissed",
                                                         "EscalationProposed"]
    assert case.overdue and case.clocks["acceptance"]["state"] == "overdue"
    rows = {(r.clock, r.kind): r.state for r in timer_rows(case)}
    assert rows == {("acceptance", WARN): FIRED, ("acceptance", DUE): FIRED}
    # the duty is met late: the clock stops, the case is no longer overdue
    case.not_accept(reason_code="litigation_arbitration_review", redirect_organ="法院",
                    decided_on=D("2026-10-15"),
                    actor=BUREAU, at=NOW, reason="x")
    case, appended, _ = reconciled(case)
    assert appended == ["ClockStopped"]
    assert case.clocks["acceptance"]["outcome"] == LATE and not case.overdue


def test_a_missed_deadline_without_a_reminder_is_not_yet_escalated():
    case = acceptance_case()
    # the service was down during the reminder window: a reminder after the due date is moot
    assert fire_timer(case, "acceptance", WARN, D("2026-10-13"), DUTY, cst("2026-10-14T08:00"),
                      actor=SERVICE) == FIRED
    assert fire_timer(case, "acceptance", DUE, D("2026-10-13"), DUTY, cst("2026-10-14T08:00"),
                      actor=SERVICE) == FIRED
    case, history = stored(case)
    assert [type(e).__name__ for e in history][-1] == "ClockMissed"
    assert case.clock_escalations == {}


def test_stale_and_stopped_timers_fire_nothing():
    case = acceptance_case()
    assert fire_timer(case, "acceptance", DUE, D("2026-10-12"), DUTY, NOW, actor=SERVICE) == STALE
    assert fire_timer(case, "handling", DUE, D("2026-10-12"), DUTY, NOW, actor=SERVICE) == STALE
    case.withdraw(voluntary=True, actor=CLERK, at=NOW, reason="resolved")
    case, appended, _ = reconciled(case)
    assert appended == ["ClockStopped"]
    assert fire_timer(case, "acceptance", DUE, D("2026-10-13"), DUTY, NOW,
                      actor=SERVICE) == CANCELLED
    assert case.collect_events() == []


def test_an_expiring_window_closes_and_is_never_missed():
    case = acceptance_case()
    case.accept(mode="assign", lead_unit=LEAD, assisting_units=[], decided_on=D("2026-10-09"),
                actor=BUREAU, at=NOW, reason="x")
    case, _, _ = reconciled(case)
    assert fire_timer(case, "objection", DUE, D("2026-10-15"), WINDOW, cst("2026-10-16T00:00"),
                      actor=SERVICE) == CANCELLED
    case, history = stored(case)
    last = history[-1]
    assert (type(last).__name__, last.outcome, last.stopped_on) == ("ClockStopped", CLOSED,
                                                                    "2026-10-15")
    assert not case.overdue
    assert reconciled(case)[1] == []  # the plan does not restart an expired window


# --- the case commands refuse duplicates ------------------------------------------------------


def test_clock_commands_refuse_what_the_case_already_holds():
    case = acceptance_case()
    kw = dict(actor=SERVICE, at=NOW)
    case.warn_clock(clock="acceptance", due_on="2026-10-13", **kw)
    with pytest.raises(RuleViolation):
        case.warn_clock(clock="acceptance", due_on="2026-10-13", **kw)
    with pytest.raises(RuleViolation):
        case.record_clock_missed(clock="acceptance", due_on="2026-10-12", **kw)
    case.record_clock_missed(clock="acceptance", due_on="2026-10-13", **kw)
    with pytest.raises(RuleViolation):
        case.record_clock_missed(clock="acceptance", due_on="2026-10-13", **kw)
    with pytest.raises(RuleViolation):
        case.recompute_clock(clock="acceptance", due_on="2026-10-14", provisional=False,
                             explanation="x", **kw)  # not provisional
    with pytest.raises(RuleViolation):
        case.move_clock(clock="acceptance", due_on="2026-10-13", explanation="x",
                        provisional=False, length=15, paused_days=0, reason="x", **kw)
    case.propose_escalation(key="acceptance#1", clock="acceptance", reason="x", **kw)
    with pytest.raises(RuleViolation):
        case.propose_escalation(key="acceptance#1", clock="acceptance", reason="x", **kw)
    with pytest.raises(RuleViolation):
        case.stop_clock(clock="acceptance", outcome="finished", stopped_on="2026-10-15",
                        reason="x", **kw)
    case.stop_clock(clock="acceptance", outcome=LATE, stopped_on="2026-10-15", reason="x", **kw)
    with pytest.raises(RuleViolation):
        case.stop_clock(clock="acceptance", outcome=LATE, stopped_on="2026-10-15", reason="x",
                        **kw)
    with pytest.raises(RuleViolation):
        case.warn_clock(clock="handling", due_on="2026-10-13", **kw)
    events = case.collect_events()
    assert [type(e).__name__ for e in events] == ["ClockWarned", "ClockMissed",
                                                  "EscalationProposed", "ClockStopped"]
    assert all(e.class_version == 1 and e.actor == SERVICE.as_dict() and e.reason
               for e in events)


# --- the summary --------------------------------------------------------------------------------


def test_the_summary_shows_each_clock_state_and_the_overdue_flag():
    case = acceptance_case()
    case.warn_clock(clock="acceptance", due_on="2026-10-13", actor=SERVICE, at=NOW)
    case.record_clock_missed(clock="acceptance", due_on="2026-10-13", actor=SERVICE, at=NOW)
    case.propose_escalation(key="acceptance#1", clock="acceptance", reason="two notices",
                            actor=SERVICE, at=NOW)
    case, history = stored(case)
    s = None
    for e in history:
        s = fold_summary(s, str(case.id), type(e).__name__, e.originator_version,
                         e.timestamp.isoformat(), event_data(e))
    d = s["deadlines"]["acceptance"]
    assert (d["state"], d["due_on"], d["provisional"]) == ("overdue", "2026-10-13", False)
    assert "roll-forward: on" in d["explanation"]
    assert s["overdue"] is True
    assert s["escalations_proposed"][0]["proposed_action"] == "public_criticism"
    snapshot = str(s)
    s2 = fold_summary(s, str(case.id), "ClockStopped", 99, NOW.isoformat(), {
        "clock": "acceptance", "outcome": "late", "stopped_on": "2026-10-15"})
    assert str(s) == snapshot  # the fold does not mutate its input
    assert (s2["deadlines"]["acceptance"]["state"], s2["overdue"]) == ("late", False)
    s3 = fold_summary(s, str(case.id), "ClockMoved", 99, NOW.isoformat(), {
        "clock": "acceptance", "due_on": "2026-10-20", "explanation": "e",
        "provisional": False, "length": 22, "paused_days": 0})
    assert (s3["deadlines"]["acceptance"]["state"], s3["overdue"]) == ("running", False)


def test_every_new_event_day_is_a_plain_iso_date():
    case = acceptance_case()
    for c in case.clocks.values():
        date.fromisoformat(c["due_on"])
        date.fromisoformat(c["started_on"])
    assert timedelta(days=3) == D("2026-10-13") - warn_fire_at(D("2026-10-13")).date()


@pytest.mark.parametrize("received_at, started_on", [
    ("0001-01-01T00:00:00+23:00", date(1, 1, 1)),  # China's date would be in year 0
    ("0001-01-01T00:00:00+00:00", date(1, 1, 1)),
])
def test_receipt_at_the_edge_of_the_calendar_still_starts_a_clock(received_at, started_on):
    facts = Facts()
    facts.items[0] = Fact("Registered", 1, NOW, {"division": "330106",
                                                  "received_at": received_at})
    run = only(facts.plan(), "acceptance")
    assert run.started_on == started_on and run.provisional
    case = register()
    assert timer_rows(reconciled(case)[0])  # and its timers can be computed
