"""The case summary fold: pure, order-driven, and the same whichever path feeds it."""
from __future__ import annotations

from petitions.domain.summary import fold_summary

REGISTERED = {"case_number": "330106-2026-000001", "channel": "letter", "category": "appeal",
              "division": "330106", "subject": "land", "requests": [], "people_count": 1,
              "anonymous": False, "received_at": "2026-09-28T09:00:00+08:00",
              "petitioner": {"name": "张三"}}


def test_fold_builds_status_unit_deadlines_and_notices():
    s = fold_summary(None, "c1", "Registered", 1, "t1", REGISTERED)
    s = fold_summary(s, "c1", "RoutedToUnit", 2, "t2", {
        "unit_id": "u", "unit_name": "U", "rule_id": "r", "rule_set_version": "1",
        "explanation": "x"})
    s = fold_summary(s, "c1", "ClockStarted", 3, "t3", {
        "clock": "acceptance", "started_on": "2026-09-28", "due_on": "2026-10-13", "length": 15,
        "day_kind": "calendar", "explanation": "e", "provisional": False})
    s = fold_summary(s, "c1", "NoticeDeliveryFailed", 4, "t4", {
        "notice_id": "n", "kind": "assignment", "recipient": "u", "channel": "webhook",
        "attempts": 1, "final": True})
    assert s["status"] == "registered" and s["version"] == 4
    assert s["unit"]["unit_id"] == "u"
    assert s["deadlines"]["acceptance"]["due_on"] == "2026-10-13"
    assert s["notices"]["n"]["state"] == "dead_lettered"


def test_the_summary_never_holds_the_petitioner_identity():
    s = fold_summary(None, "c1", "Registered", 1, "t1", REGISTERED)
    assert "张三" not in str(s)


def test_fold_does_not_mutate_its_input():
    s1 = fold_summary(None, "c1", "Registered", 1, "t1", REGISTERED)
    snapshot = str(s1)
    fold_summary(s1, "c1", "RoutedToUnit", 2, "t2", {
        "unit_id": "u", "unit_name": "U", "rule_id": "r", "rule_set_version": "1",
        "explanation": "x"})
    assert str(s1) == snapshot
