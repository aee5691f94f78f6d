"""The Case's notice and emergency facts notify records: given events, when a command, then
events. No I/O."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from petitions.domain.errors import RuleViolation
from petitions.domain.summary import fold_summary
from petitions.infra.events import event_data
from tests.notify.conftest import ROUTER, registered

AT = datetime(2026, 9, 29, 1, 0, tzinfo=UTC)
NOTICE = dict(notice_id="c:2:land-330106:webhook", kind="assignment_slip",
              recipient="land-330106", channel="webhook", trigger_version=2, actor=ROUTER, at=AT)


def names(case) -> list[str]:
    return [type(e).__name__ for e in case.collect_events()]


def test_failed_then_dead_lettered_then_requeued_then_delivered():
    case = registered()
    case.collect_events()
    case.record_notice_failed(**NOTICE, attempts=1, error="HTTP 503", final=False)
    case.record_notice_dead_lettered(**NOTICE, attempts=2, error="HTTP 503")
    assert case.notices[NOTICE["notice_id"]]["state"] == "dead_lettered"
    with pytest.raises(RuleViolation):
        case.record_notice_dead_lettered(**NOTICE, attempts=2, error="again")
    case.record_notice_requeued(notice_id=NOTICE["notice_id"], kind="assignment_slip",
                                recipient="land-330106", channel="webhook", actor=ROUTER, at=AT)
    assert case.notices[NOTICE["notice_id"]]["state"] == "requeued"
    with pytest.raises(RuleViolation):  # only a dead letter can be requeued
        case.record_notice_requeued(notice_id=NOTICE["notice_id"], kind="k", recipient="r",
                                    channel="webhook", actor=ROUTER, at=AT)
    case.record_notice_delivered(**NOTICE, attempts=1)
    assert case.has_delivered(NOTICE["notice_id"])
    with pytest.raises(RuleViolation):
        case.record_notice_failed(**NOTICE, attempts=2, error="late", final=False)
    assert names(case) == ["NoticeDeliveryFailed", "NoticeDeadLettered", "NoticeRequeued",
                           "NoticeDelivered"]


def test_sent_settles_a_notice_with_its_provider_reference():
    case = registered()
    case.collect_events()
    case.record_notice_sent(**{**NOTICE, "channel": "sms", "recipient": "petitioner"},
                            attempts=1, provider_ref="sms-42")
    assert case.has_delivered(NOTICE["notice_id"])
    with pytest.raises(RuleViolation):
        case.record_notice_sent(**NOTICE, attempts=1, provider_ref="x")
    [event] = case.collect_events()
    assert event_data(event)["provider_ref"] == "sms-42"


def test_emergency_report_and_its_summary():
    case = registered()
    case.report_emergency(occurred_at=AT, place="区政府门口", scale="约30人", people="村民",
                          cause="宅基地", requests=["见区长"], nature="集体访", actor=ROUTER, at=AT)
    with pytest.raises(RuleViolation):
        case.report_emergency(occurred_at=AT.replace(tzinfo=None), place="p", scale="s",
                              people="", cause="c", requests=[], nature="", actor=ROUTER, at=AT)
    with pytest.raises(RuleViolation):
        case.report_emergency(occurred_at=AT, place=" ", scale="s", people="", cause="c",
                              requests=[], nature="", actor=ROUTER, at=AT)
    summary = None
    for e in case.collect_events():
        summary = fold_summary(summary, str(case.id), type(e).__name__, e.originator_version,
                               e.timestamp.isoformat(), event_data(e))
    assert summary["emergencies"][0]["place"] == "区政府门口"
    assert "people" not in summary["emergencies"][0]


def test_summary_shows_sent_dead_lettered_and_requeued():
    s = None
    for i, (etype, data) in enumerate([
        ("NoticeSent", {"notice_id": "a", "kind": "k", "recipient": "petitioner",
                        "channel": "sms", "attempts": 1}),
        ("NoticeDeadLettered", {"notice_id": "b", "kind": "k", "recipient": "u",
                                "channel": "webhook", "attempts": 8}),
        ("NoticeRequeued", {"notice_id": "b", "kind": "k", "recipient": "u",
                            "channel": "webhook"}),
    ], start=2):
        s = fold_summary(s, "c", etype, i, f"t{i}", data)
    assert s["notices"]["a"]["state"] == "sent"
    assert s["notices"]["b"]["state"] == "requeued" and s["notices"]["b"]["attempts"] == 8
