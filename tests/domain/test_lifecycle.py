"""The statutory life of a case: given events, when a command, then events (or a refusal that
appends nothing). No I/O."""
from __future__ import annotations

from datetime import UTC, date, datetime
from uuid import uuid4

import pytest

from petitions.domain.calendar import calendar_from_chinese_calendar
from petitions.domain.case import Case
from petitions.domain.errors import IllegalTransition, IncompleteFile, RuleViolation
from petitions.domain.lifecycle import FILE_ITEMS, TABLE, Action
from petitions.domain.summary import fold_summary
from petitions.domain.values import Actor, CaseStatus, Category, Channel, Petitioner
from petitions.infra.events import event_data

CAL = calendar_from_chinese_calendar([2026])
CLERK = Actor(id="clerk-7", role="intake_clerk", jurisdiction="330106")
BUREAU = Actor(id="supervisor-1", role="bureau_supervisor", jurisdiction="330106")
UNIT = Actor(id="officer-land", role="handling_unit", jurisdiction="330106")
RECEIVED = datetime(2026, 8, 3, 1, 0, tzinfo=UTC)  # Monday 3 August, 09:00 in China
NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)  # the clock for every command: after every date
LEAD, HELPER = "land-330106", "housing-330106"


def D(text: str) -> date:
    return date.fromisoformat(text)


def register(*, anonymous: bool = False) -> Case:
    return Case.register(
        case_id=uuid4(), case_number="330106-2026-000042", channel=Channel.LETTER,
        category=Category.APPEAL, division="330106", subject="land", content="宅基地",
        requests=["重新丈量"], people_count=1,
        petitioner=None if anonymous else Petitioner(name="李四", id_number="330106199001011234"),
        received_at=RECEIVED, submission_digest="abc", actor=CLERK, at=RECEIVED)


# -- the commands, with the arguments of the happy path (override any of them) ------------


def accept(c: Case, **kw) -> None:
    c.accept(**{"mode": "assign", "lead_unit": LEAD, "assisting_units": [HELPER],
                "decided_on": D("2026-08-10"), "actor": BUREAU, "at": NOW,
                "reason": "within remit", **kw})


def reply(c: Case, **kw) -> None:
    c.reply(**{"outcome": "supported", "reply_text": "重新丈量", "replied_on": D("2026-09-01"),
               "actor": UNIT, "at": NOW, "reason": "investigated", **kw})


def receipt(c: Case, **kw) -> None:
    c.record_reply_receipt(**{"received_on": D("2026-09-04"), "actor": UNIT, "at": NOW,
                              "reason": "signed for", **kw})


def review(c: Case, **kw) -> None:
    c.request_review(**{"requested_on": D("2026-09-20"), "organ": "杭州市信访局",
                        "calendar": CAL, "actor": CLERK, "at": NOW, "reason": "dissatisfied",
                        **kw})


def review_opinion(c: Case, **kw) -> None:
    c.issue_review_opinion(**{"outcome": "upheld", "opinion": "维持", "issued_on":
                              D("2026-10-15"), "actor": BUREAU, "at": NOW,
                              "reason": "reviewed", **kw})


def re_review(c: Case, **kw) -> None:
    c.request_re_review(**{"requested_on": D("2026-10-20"), "organ": "浙江省信访局",
                           "calendar": CAL, "actor": CLERK, "at": NOW, "reason": "dissatisfied",
                           **kw})


def re_review_opinion(c: Case, **kw) -> None:
    c.issue_re_review_opinion(**{"outcome": "upheld", "opinion": "维持", "issued_on":
                                 D("2026-11-15"), "actor": BUREAU, "at": NOW,
                                 "reason": "re-reviewed", **kw})


def extension(c: Case, **kw) -> None:
    c.grant_extension(**{"days": 30, "approver": "局长", "petitioner_told": True,
                         "actor": BUREAU, "at": NOW, "reason": "needs a survey", **kw})


def visit(c: Case, **kw) -> None:
    c.record_return_visit(**{"satisfaction": "satisfied", "comment": "", "visited_on":
                             D("2026-09-10"), "actor": CLERK, "at": NOW, "reason": "回访",
                             **kw})


def handling_opinion(c: Case, **kw) -> None:
    c.record_handling_opinion(**{"opinion": "依法处理", "actor": UNIT, "at": NOW,
                                 "reason": "file", **kw})


def sign_off(c: Case, **kw) -> None:
    c.record_leader_sign_off(**{"leader": "王局长", "actor": UNIT, "at": NOW, "reason": "file",
                                **kw})


def signature(c: Case, **kw) -> None:
    c.record_petitioner_signature(**{"signed": True, "refusal_note": "", "actor": UNIT,
                                     "at": NOW, "reason": "file", **kw})


def close(c: Case, **kw) -> None:
    c.close(**{"closed_on": D("2026-11-20"), "actor": BUREAU, "at": NOW, "reason": "结案",
               **kw})


def archive(c: Case, **kw) -> None:
    c.archive(**{"archived_on": D("2026-11-25"), "actor": BUREAU, "at": NOW, "reason": "归档",
                 **kw})


def objection(c: Case, **kw) -> None:
    c.object_to_assignment(**{"unit_id": LEAD, "reasons": "不属本单位职责",
                              "objected_on": D("2026-08-12"), "calendar": CAL, "actor": UNIT,
                              "at": NOW, "reason": "not our remit", **kw})


def decide(c: Case, **kw) -> None:
    c.decide_objection(**{"upheld": True, "new_lead_unit": "agri-330106",
                          "decided_by": "西湖区人民政府", "actor": BUREAU, "at": NOW,
                          "reason": "common superior decided", **kw})


def withdraw(c: Case, **kw) -> None:
    c.withdraw(**{"voluntary": True, "actor": CLERK, "at": NOW, "reason": "resolved", **kw})


def given(*steps, anonymous: bool = False) -> Case:
    """A case after `steps`, rebuilt from its events as the repository does."""
    case = register(anonymous=anonymous)
    for step in steps:
        step(case)
    rebuilt = None
    for e in case.collect_events():
        rebuilt = e.mutate(rebuilt)
    return rebuilt


def then(case: Case) -> list[str]:
    return [type(e).__name__ for e in case.collect_events()]


def refused(case: Case, error: type[Exception], step, **kw) -> Exception:
    """The command is refused with `error` and appends nothing."""
    version = case.version
    with pytest.raises(error) as raised:
        step(case, **kw)
    assert case.collect_events() == [] and case.version == version
    return raised.value


REPLIED = (accept, reply)
RECEIVED_REPLY = (accept, reply, receipt)
TERMINATED = (*RECEIVED_REPLY, review, review_opinion, re_review, re_review_opinion)
COMPLETE_FILE = (handling_opinion, sign_off, signature)


# -- the table -----------------------------------------------------------------------------


def test_every_status_has_a_row_and_only_archived_is_a_dead_end():
    assert set(TABLE) == set(CaseStatus)
    assert [s for s, actions in TABLE.items() if not actions] == [CaseStatus.ARCHIVED]


def test_a_registered_case_may_be_decided_routed_or_withdrawn():
    assert given().allowed_actions() == sorted(
        ["accept", "answer_on_the_spot", "not_accept", "not_accept_again", "route", "withdraw"])


# -- acceptance ----------------------------------------------------------------------------


def test_accepting_assigns_a_lead_unit_and_starts_handling():
    case = given()
    accept(case)
    assert then(case) == ["Accepted"]
    assert case.status is CaseStatus.ACCEPTED
    assert (case.lead_unit, case.assisting_units) == (LEAD, [HELPER])
    assert case.acceptance == {"decision": "accepted", "decided_on": "2026-08-10",
                               "mode": "assign"}
    assert "reply" in case.allowed_actions() and "accept" not in case.allowed_actions()


def test_an_acceptance_after_the_fifteen_days_is_still_recorded():
    case = given()
    accept(case, decided_on=D("2026-09-28"))
    assert then(case) == ["Accepted"]


def test_every_lifecycle_event_records_actor_time_reason_and_version_1():
    case = register()
    accept(case)
    reply(case)
    events = case.collect_events()[1:]
    assert all(e.class_version == 1 and e.actor and e.reason and e.timestamp == NOW
               for e in events)
    assert events[0].actor == BUREAU.as_dict()


@pytest.mark.parametrize("bad", [
    {"mode": "delegate"},
    {"lead_unit": " "},
    {"assisting_units": [LEAD]},
    {"assisting_units": [HELPER, HELPER]},
    {"decided_on": D("2026-08-02")},  # before the petition was received
    {"decided_on": D("2026-12-02")},  # in the future
    {"reason": ""},
])
def test_an_acceptance_with_bad_content_is_refused(bad):
    refused(given(), RuleViolation, accept, **bad)


def test_accepting_twice_is_an_illegal_transition():
    error = refused(given(accept), IllegalTransition, accept)
    assert error.current_state == "accepted" and "reply" in error.allowed


def test_not_accepting_says_why_and_where_to_go_and_is_final():
    case = given()
    case.not_accept(reason_code="litigation_arbitration_review", redirect_organ="西湖区人民法院",
                    decided_on=D("2026-08-05"), actor=BUREAU, at=NOW, reason="in litigation")
    assert then(case) == ["NotAccepted"]
    assert case.status is CaseStatus.NOT_ACCEPTED and case.allowed_actions() == ["close"]
    error = refused(case, IllegalTransition, accept)
    assert error.current_state == "not_accepted" and error.allowed == ["close"]


def test_not_accepting_needs_a_known_reason_and_a_redirect():
    def not_accept(c: Case, **kw) -> None:
        c.not_accept(**{"reason_code": "outside_remit", "redirect_organ": "",
                        "decided_on": D("2026-08-05"), "actor": BUREAU, "at": NOW,
                        "reason": "r", **kw})

    refused(given(), RuleViolation, not_accept)  # outside remit: where to, then?
    refused(given(), RuleViolation, not_accept, reason_code="dislike", redirect_organ="x")
    case = given()
    not_accept(case, reason_code="no_clear_subject_or_facts")  # nowhere to send it
    assert then(case) == ["NotAccepted"]


def test_not_accepting_again_points_at_the_earlier_case():
    case = given()
    earlier = str(uuid4())
    case.not_accept_again(earlier_case_id=earlier, ground="terminated_after_re_review",
                          decided_on=D("2026-08-05"), actor=BUREAU, at=NOW, reason="终结")
    assert then(case) == ["NotAcceptedAgain"]
    assert case.status is CaseStatus.NOT_ACCEPTED_AGAIN
    assert case.acceptance["earlier_case_id"] == earlier


@pytest.mark.parametrize("bad", [{"ground": "annoying"}, {"earlier_case_id": ""}, "self"])
def test_not_accepting_again_with_a_bad_ground_or_case_is_refused(bad):
    case = given()
    kw = {"earlier_case_id": str(case.id)} if bad == "self" else bad

    def not_accept_again(c: Case, **over) -> None:
        c.not_accept_again(**{"earlier_case_id": str(uuid4()), "ground": "same_matter_open",
                              "decided_on": D("2026-08-05"), "actor": BUREAU, "at": NOW,
                              "reason": "r", **over})

    refused(case, RuleViolation, not_accept_again, **kw)


def test_answering_on_the_spot_closes_the_case_in_one_step():
    case = given()
    case.answer_on_the_spot(answer="政策解释", decided_on=D("2026-08-03"), actor=CLERK, at=NOW,
                            reason="answered at the window")
    assert then(case) == ["AnsweredOnTheSpot"]
    assert case.status is CaseStatus.CLOSED and case.closed_on == "2026-08-03"
    assert case.allowed_actions() == ["archive"]


# -- handling ------------------------------------------------------------------------------


def test_the_lead_and_assisting_units_report_progress():
    case = given(accept)
    for unit in (LEAD, HELPER):
        case.report_progress(unit_id=unit, note="调查中", actor=UNIT, at=NOW, reason="weekly")
    assert then(case) == ["ProgressReported", "ProgressReported"]


def test_progress_from_another_unit_or_before_acceptance_is_refused():
    def report(c: Case, **kw) -> None:
        c.report_progress(**{"unit_id": LEAD, "note": "n", "actor": UNIT, "at": NOW,
                             "reason": "r", **kw})

    refused(given(accept), RuleViolation, report, unit_id="police-330106")
    assert refused(given(), IllegalTransition, report).current_state == "registered"


def test_hearings_during_review_add_to_the_review_hearing_days():
    def hearing(c: Case, **kw) -> None:
        c.hold_hearing(**{"held_on": D("2026-09-25"), "duration_days": 3, "actor": UNIT,
                          "at": NOW, "reason": "complex", **kw})

    case = given(*RECEIVED_REPLY, review)
    hearing(case)
    assert then(case) == ["HearingHeld"]
    assert case.review["hearing_days"] == 3 and case.hearings[0]["stage"] == "review"
    refused(case, RuleViolation, hearing, duration_days=0)
    refused(case, RuleViolation, hearing, held_on=D("2026-09-19"))  # before the request
    assert refused(given(*REPLIED), IllegalTransition, hearing).current_state == "replied"


def test_the_lead_unit_objects_within_five_working_days_counted_over_national_day():
    # Assigned Monday 28 September 2026: Tue 29, Wed 30, (1-7 October holiday), Thu 8, Fri 9,
    # Saturday 10 October (a swapped working day) is the fifth working day.
    accepted_late = (lambda c: accept(c, decided_on=D("2026-09-28")),)
    case = given(*accepted_late)
    objection(case, objected_on=D("2026-10-10"))
    assert then(case) == ["AssignmentObjected"]
    assert case.allowed_actions().count("decide_objection") == 1
    late = refused(given(*accepted_late), RuleViolation, objection, objected_on=D("2026-10-12"))
    assert "2026-10-10" in str(late)


@pytest.mark.parametrize("bad", [{"unit_id": HELPER}, {"objected_on": D("2026-08-09")},
                                 {"reasons": ""}])
def test_only_the_lead_unit_objects_with_reasons_after_the_assignment(bad):
    refused(given(accept), RuleViolation, objection, **bad)


def test_a_transfer_cannot_be_objected_to():
    refused(given(lambda c: accept(c, mode="transfer")), RuleViolation, objection)


def test_an_upheld_objection_moves_the_case_to_the_new_lead_unit():
    case = given(accept, objection)
    refused(case, IllegalTransition, objection)  # one pending objection at a time
    decide(case)
    assert then(case) == ["ObjectionDecided"]
    assert case.lead_unit == "agri-330106" and case.objection["state"] == "upheld"
    assert "object_to_assignment" in case.allowed_actions()  # the new unit's own window
    assert case.assigned_on == "2026-12-01"


def test_a_rejected_objection_keeps_the_lead_unit_and_is_not_repeated():
    case = given(accept, objection)
    decide(case, upheld=False, new_lead_unit=None)
    assert then(case) == ["ObjectionDecided"] and case.lead_unit == LEAD
    assert "object_to_assignment" not in case.allowed_actions()
    refused(case, IllegalTransition, objection)


@pytest.mark.parametrize("bad", [{"new_lead_unit": None}, {"new_lead_unit": LEAD},
                                 {"upheld": False}, {"decided_by": ""}])
def test_an_objection_decision_must_be_consistent(bad):
    refused(given(accept, objection), RuleViolation, decide, **bad)


def test_an_objection_is_decided_only_when_one_is_pending():
    assert "decide_objection" not in given(accept).allowed_actions()
    refused(given(accept), IllegalTransition, decide)


def test_one_extension_of_at_most_thirty_days_while_handling():
    case = given(accept)
    extension(case)
    assert then(case) == ["ExtensionGranted"]
    assert case.extension == {"days": 30, "approver": "局长", "reason": "needs a survey",
                              "petitioner_told": True}
    error = refused(case, IllegalTransition, extension, days=5)
    assert error.action == "grant_extension" and error.current_state == "accepted"


@pytest.mark.parametrize("bad", [{"days": 31}, {"days": 0}, {"days": True},
                                 {"petitioner_told": False}, {"approver": ""}, {"reason": ""}])
def test_an_extension_with_bad_content_is_refused(bad):
    refused(given(accept), RuleViolation, extension, **bad)


def test_an_anonymous_petitioner_cannot_be_told_so_need_not_be():
    case = given(accept, anonymous=True)
    extension(case, petitioner_told=False)
    assert then(case) == ["ExtensionGranted"]


def test_no_extension_outside_handling():
    assert refused(given(), IllegalTransition, extension).current_state == "registered"
    assert refused(given(*REPLIED), IllegalTransition, extension).current_state == "replied"


# -- reply ---------------------------------------------------------------------------------


def test_no_reply_before_acceptance():
    error = refused(given(), IllegalTransition, reply)
    assert (error.action, error.current_state) == ("reply", "registered")
    assert "accept" in error.allowed


def test_replying_moves_the_case_to_replied():
    case = given(accept)
    reply(case)
    assert then(case) == ["Replied"] and case.status is CaseStatus.REPLIED
    assert case.written_reply == {"outcome": "supported", "replied_on": "2026-09-01",
                          "received_on": None}


@pytest.mark.parametrize("bad", [{"outcome": "ignored"}, {"reply_text": ""},
                                 {"replied_on": D("2026-08-09")}])
def test_a_reply_with_bad_content_is_refused(bad):
    refused(given(accept), RuleViolation, reply, **bad)


def test_the_reply_receipt_is_recorded_once_and_not_before_the_reply():
    case = given(*REPLIED)
    refused(case, RuleViolation, receipt, received_on=D("2026-08-31"))
    receipt(case)
    assert then(case) == ["ReplyReceived"] and case.written_reply["received_on"] == "2026-09-04"
    refused(case, IllegalTransition, receipt)


# -- review and re-review ------------------------------------------------------------------


def test_review_waits_for_the_receipt_of_the_reply():
    error = refused(given(*REPLIED), IllegalTransition, review)
    assert error.current_state == "replied" and "record_reply_receipt" in error.allowed


def test_review_within_thirty_days_of_receipt_rolled_past_national_day():
    # Received Friday 4 September: day 30 is Sunday 4 October, inside the National Day break,
    # so the window ends on the next working day, Thursday 8 October.
    case = given(*RECEIVED_REPLY)
    review(case, requested_on=D("2026-10-08"))
    assert then(case) == ["ReviewRequested"] and case.status is CaseStatus.UNDER_REVIEW
    late = refused(given(*RECEIVED_REPLY), RuleViolation, review, requested_on=D("2026-10-09"))
    assert "2026-10-08" in str(late)
    refused(given(*RECEIVED_REPLY), RuleViolation, review, requested_on=D("2026-09-03"))
    refused(given(*RECEIVED_REPLY), RuleViolation, review, organ="")


def test_the_review_opinion_then_the_re_review_within_its_window():
    case = given(*RECEIVED_REPLY, review)
    refused(case, RuleViolation, review_opinion, outcome="quashed")
    refused(case, RuleViolation, review_opinion, issued_on=D("2026-09-19"))
    review_opinion(case)
    assert then(case) == ["ReviewOpinionIssued"] and case.status is CaseStatus.REVIEWED
    # 30 days from 15 October is 14 November, a Saturday: the window runs to Monday 16th.
    refused(case, RuleViolation, re_review, requested_on=D("2026-11-17"))
    re_review(case, requested_on=D("2026-11-16"))
    assert then(case) == ["ReReviewRequested"] and case.status is CaseStatus.UNDER_RE_REVIEW


def test_re_review_hearing_days_are_recorded_apart_from_handling():
    case = given(*RECEIVED_REPLY, review, review_opinion, re_review)
    case.hold_hearing(held_on=D("2026-10-25"), duration_days=2, actor=BUREAU, at=NOW,
                      reason="听证")
    assert case.re_review["hearing_days"] == 2 and case.review["hearing_days"] == 0


def test_the_re_review_opinion_terminates_the_matter():
    case = given(*RECEIVED_REPLY, review, review_opinion, re_review)
    re_review_opinion(case)
    assert then(case) == ["ReReviewOpinionIssued"] and case.status is CaseStatus.TERMINATED
    assert set(case.allowed_actions()) == {"close"} | {a.value for a in FILE_ITEMS}


@pytest.mark.parametrize("step", [accept, reply, receipt, review, review_opinion, re_review,
                                  re_review_opinion, extension, visit, withdraw, objection,
                                  archive])
def test_after_termination_nothing_but_completing_closing_and_archiving(step):
    error = refused(given(*TERMINATED), IllegalTransition, step)
    assert error.current_state == "terminated"
    assert "close" in error.allowed


def test_a_terminated_case_completes_its_file_closes_and_archives():
    case = given(*TERMINATED, *COMPLETE_FILE)
    close(case)
    archive(case)
    assert then(case) == ["Closed", "Archived"] and case.status is CaseStatus.ARCHIVED


# -- return visit --------------------------------------------------------------------------


def test_a_satisfied_return_visit_changes_nothing_else():
    case = given(*REPLIED)
    visit(case)
    assert then(case) == ["ReturnVisitRecorded"] and case.status is CaseStatus.REPLIED


def test_a_dissatisfied_petitioner_reopens_the_work_and_needs_a_new_reply():
    case = given(accept, extension, reply)
    visit(case, satisfaction="dissatisfied", comment="没有重新丈量")
    assert then(case) == ["ReturnVisitRecorded", "WorkReopened"]
    assert case.status is CaseStatus.ACCEPTED and case.written_reply is None and case.reopened == 1
    assert "grant_extension" not in case.allowed_actions()  # still only one extension
    reply(case, replied_on=D("2026-10-10"))
    assert then(case) == ["Replied"]


@pytest.mark.parametrize("bad", [{"satisfaction": "meh"}, {"visited_on": D("2026-08-31")}])
def test_a_return_visit_with_bad_content_is_refused(bad):
    refused(given(*REPLIED), RuleViolation, visit, **bad)


def test_a_return_visit_comes_after_a_reply():
    assert refused(given(accept), IllegalTransition, visit).current_state == "accepted"


# -- withdrawal ----------------------------------------------------------------------------


def test_a_voluntary_withdrawal_ends_the_case_which_closes_without_a_file():
    case = given(accept)
    withdraw(case)
    assert then(case) == ["Withdrawn"] and case.status is CaseStatus.WITHDRAWN
    assert case.allowed_actions() == ["close"]
    close(case)
    assert then(case) == ["Closed"]


def test_a_withdrawal_under_pressure_is_flagged_and_the_case_stays_open():
    case = given(accept)
    withdraw(case, voluntary=False, reason="单位施压")
    assert then(case) == ["WithdrawalFlaggedForInvestigation"]
    assert case.status is CaseStatus.ACCEPTED and case.withdrawal_flags == 1


def test_a_withdrawal_needs_a_reason_and_an_open_case():
    refused(given(accept), RuleViolation, withdraw, reason=" ")
    assert refused(given(*REPLIED, *COMPLETE_FILE, close), IllegalTransition,
                   withdraw).current_state == "closed"


# -- the file, closing and archiving -------------------------------------------------------


def test_closing_an_incomplete_file_lists_what_is_missing():
    error = refused(given(*REPLIED), IncompleteFile, close)
    assert error.missing == ["handling_opinion", "leader_sign_off", "petitioner_signature"]
    assert isinstance(error, RuleViolation)
    error = refused(given(*REPLIED, handling_opinion), IncompleteFile, close)
    assert error.missing == ["leader_sign_off", "petitioner_signature"]


def test_a_complete_file_closes_and_then_archives():
    case = given(*REPLIED, *COMPLETE_FILE)
    close(case)
    assert then(case) == ["Closed"] and case.allowed_actions() == ["archive"]
    refused(case, RuleViolation, archive, archived_on=D("2026-11-19"))  # before closing
    archive(case)
    assert then(case) == ["Archived"] and case.allowed_actions() == []


def test_a_refusal_to_sign_is_recorded_with_a_note_and_completes_the_file():
    case = given(*REPLIED, handling_opinion, sign_off)
    refused(case, RuleViolation, signature, signed=False, refusal_note="")
    refused(case, RuleViolation, signature, signed=True, refusal_note="拒签")
    signature(case, signed=False, refusal_note="信访人拒绝签字，经办人二人在场")
    assert case.file["petitioner_signature"] == "refused" and case.missing_file_items() == []


def test_an_anonymous_case_needs_no_signature():
    case = given(*REPLIED, handling_opinion, sign_off, anonymous=True)
    assert "record_petitioner_signature" not in case.allowed_actions()
    close(case)
    assert then(case) == ["Closed"]


def test_a_case_not_accepted_closes_without_a_file():
    case = given(lambda c: c.not_accept(reason_code="outside_remit", redirect_organ="法院",
                                        decided_on=D("2026-08-05"), actor=BUREAU, at=NOW,
                                        reason="r"))
    close(case)
    assert then(case) == ["Closed"]


def test_no_closing_while_handling_or_under_review_and_no_archive_before_closing():
    assert refused(given(accept), IllegalTransition, close).current_state == "accepted"
    assert refused(given(*RECEIVED_REPLY, review), IllegalTransition,
                   close).current_state == "under_review"
    assert refused(given(*REPLIED), IllegalTransition, archive).current_state == "replied"


def test_routing_after_acceptance_is_an_illegal_transition():
    def route(c: Case) -> None:
        c.route_to_unit(unit_id=LEAD, unit_name="x", rule_id="r", rule_set_version="1",
                        explanation="e", actor=CLERK, at=NOW)

    assert refused(given(accept), IllegalTransition, route).current_state == "accepted"


# -- replay and the summary ----------------------------------------------------------------


def test_replay_and_summary_agree_with_the_aggregate_over_a_whole_life():
    case = register()
    for step in (accept, objection, lambda c: decide(c, upheld=False, new_lead_unit=None),
                 extension, reply, receipt, visit, review, review_opinion, re_review,
                 re_review_opinion, *COMPLETE_FILE, close, archive):
        step(case)
    events = case.collect_events()
    rebuilt, summary = None, None
    for e in events:
        rebuilt = e.mutate(rebuilt)
        summary = fold_summary(summary, str(e.originator_id), type(e).__name__,
                               e.originator_version, e.timestamp.isoformat(), event_data(e))
        assert summary["status"] == rebuilt.status.value
        assert summary["allowed_actions"] == rebuilt.allowed_actions()
    assert [e.originator_version for e in events] == list(range(1, len(events) + 1))
    assert (rebuilt.status, rebuilt.version) == (case.status, case.version)
    assert summary["acceptance"]["mode"] == "assign" and summary["lead_unit"] == LEAD
    assert summary["extension"]["days"] == 30
    assert summary["reply"] == {"outcome": "supported", "replied_on": "2026-09-01",
                                "received_on": "2026-09-04"}
    assert summary["review"]["outcome"] == "upheld" and summary["re_review"]["issued_on"]
    assert summary["satisfaction"] == "satisfied"
    assert summary["file"]["missing"] == [] and summary["file"]["leader_sign_off"] == "王局长"
    assert (summary["closed_on"], summary["archived_on"]) == ("2026-11-20", "2026-11-25")
    text = str(summary)
    assert "李四" not in text and "330106199001011234" not in text
    assert "重新丈量" not in text or summary["requests"] == ["重新丈量"]  # only the requests


def test_the_summary_lists_what_an_incomplete_file_lacks():
    case = register()
    accept(case)
    reply(case)
    summary = None
    for e in case.collect_events():
        summary = fold_summary(summary, "c", type(e).__name__, e.originator_version,
                               e.timestamp.isoformat(), event_data(e))
    assert summary["file"]["missing"] == ["handling_opinion", "leader_sign_off",
                                          "petitioner_signature"]
    assert "close" in summary["allowed_actions"]


def test_action_names_are_the_enum_values():
    assert {a.value for a in Action} >= set().union(*({x.value for x in v}
                                                      for v in TABLE.values()))
