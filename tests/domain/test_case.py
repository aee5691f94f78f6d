"""The Case aggregate: given events, when a command, then events. No I/O."""
from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest

from petitions.domain.case import Case
from petitions.domain.errors import RuleViolation
from petitions.domain.values import Actor, Category, Channel, Petitioner

CLERK = Actor(id="clerk-7", role="intake_clerk", jurisdiction="330106")
ROUTER = Actor(id="routing-service", role="service")
AT = datetime(2026, 9, 28, 9, 30, tzinfo=UTC)


def registered(**overrides) -> Case:
    fields = dict(
        case_id=uuid4(), case_number="330106-2026-000042", channel=Channel.VISIT,
        category=Category.APPEAL, division="330106", subject="land", content="宅基地",
        requests=["重新丈量"], people_count=1, petitioner=Petitioner(name="李四"),
        received_at=AT, submission_digest="abc", actor=CLERK, at=AT,
    )
    fields.update(overrides)
    return Case.register(**fields)


def given(*cases_events) -> Case:
    """Rebuild a case from its events, as the repository does."""
    case = None
    for e in cases_events:
        case = e.mutate(case)
    return case


def new_events(case: Case) -> list[str]:
    return [type(e).__name__ for e in case.collect_events()]


def route(case: Case) -> None:
    case.route_to_unit(unit_id="land-330106", unit_name="西湖区自然资源局", rule_id="r1",
                       rule_set_version="1", explanation="appeal/land in 330106", actor=ROUTER,
                       at=AT)


def test_registering_records_one_event_with_actor_time_and_reason():
    case = registered()
    [event] = case.collect_events()
    assert type(event).__name__ == "Registered"
    assert event.actor == CLERK.as_dict()
    assert event.timestamp == AT
    assert event.reason
    assert event.class_version == 3
    assert case.status.value == "registered"


def test_an_anonymous_petition_has_no_petitioner():
    case = registered(petitioner=None)
    assert case.anonymous and case.petitioner is None


def test_people_count_below_one_is_refused():
    with pytest.raises(RuleViolation):
        registered(people_count=0)


def test_routing_a_registered_case_appends_routed_to_unit():
    case = given(*registered().collect_events())
    route(case)
    assert new_events(case) == ["RoutedToUnit"]
    assert case.routing["unit_id"] == "land-330106"
    assert case.version == 2


def test_routing_twice_is_refused_and_appends_nothing():
    first = registered()
    route(first)
    case = given(*first.collect_events())
    with pytest.raises(RuleViolation):
        route(case)
    assert new_events(case) == []


def test_a_clock_runs_once():
    case = given(*registered().collect_events())
    start = dict(clock="acceptance", started_on="2026-09-28", due_on="2026-10-13", length=15,
                 day_kind="calendar", explanation="15 days", provisional=False, actor=ROUTER,
                 at=AT, reason="registered")
    case.start_clock(**start)
    with pytest.raises(RuleViolation):
        case.start_clock(**start)
    assert new_events(case) == ["ClockStarted"]
    assert case.clocks["acceptance"]["due_on"] == "2026-10-13"


def test_a_delivered_notice_is_settled_and_cannot_be_recorded_again():
    case = given(*registered().collect_events())
    notice = dict(notice_id="n1", kind="assignment", recipient="land-330106", channel="webhook",
                  trigger_version=2, actor=ROUTER, at=AT)
    case.record_notice_failed(**notice, attempts=1, error="HTTP 503", final=False)
    assert not case.has_delivered("n1")
    case.record_notice_delivered(**notice, attempts=2)
    assert case.has_delivered("n1")
    with pytest.raises(RuleViolation):
        case.record_notice_delivered(**notice, attempts=3)
    assert new_events(case) == ["NoticeDeliveryFailed", "NoticeDelivered"]


def test_replaying_the_events_rebuilds_the_same_state():
    case = registered()
    route(case)
    events = case.collect_events()
    rebuilt = given(*events)
    assert (rebuilt.version, rebuilt.routing, rebuilt.case_number) == (
        case.version, case.routing, case.case_number)
