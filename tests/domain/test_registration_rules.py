"""Registration rules and the Registered event's upcaster. No I/O."""
from __future__ import annotations

import json
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from eventsourcing.application import Application
from eventsourcing.persistence import StoredEvent

from petitions.domain.case import Case
from petitions.domain.errors import RuleViolation
from petitions.domain.intake_rules import leader_escalation_reason
from petitions.domain.values import Actor, Category, Channel, Petitioner

AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CLERK = Actor("clerk-1", "intake_clerk", "330106")


def register(**overrides) -> Case:
    fields = dict(case_id=uuid4(), case_number="330106-2026-000001", channel=Channel.VISIT,
                  category=Category.APPEAL, division="330106", subject="land", content="c",
                  requests=[], people_count=1, petitioner=Petitioner(name="赵六"),
                  received_at=AT, submission_digest="d", actor=CLERK, at=AT)
    fields.update(overrides)
    return Case.register(**fields)


@pytest.mark.parametrize("people, representatives, ok", [
    (4, [], True),                       # fewer than 5: no representatives needed
    (5, [], False),                      # a collective visit must name them
    (5, ["甲"], True),
    (12, ["甲", "乙", "丙", "丁", "戊"], True),
    (12, ["甲", "乙", "丙", "丁", "戊", "己"], False),  # at most 5
])
def test_collective_visits_name_at_most_five_representatives(people, representatives, ok):
    if ok:
        assert register(people_count=people, representatives=representatives).people_count == people
    else:
        with pytest.raises(RuleViolation):
            register(people_count=people, representatives=representatives)


def test_thirty_or_more_people_is_a_major_collective_visit():
    assert not register(people_count=29, representatives=["甲"]).is_major
    assert register(people_count=30, representatives=["甲"]).is_major


@pytest.mark.parametrize("channel, people, visit, escalate", [
    (Channel.VISIT, 1, 1, False),
    (Channel.VISIT, 1, 3, True),        # a person's 3rd visit on a matter
    (Channel.VISIT, 10, 1, True),       # a collective visit of 10+
    (Channel.VISIT, 3, 3, True),        # 3+ people on their 3rd visit
    (Channel.VISIT, 9, 2, False),
    (Channel.LETTER, 50, 5, False),     # letters are not visits
])
def test_escalation_to_the_principal_leader(channel, people, visit, escalate):
    assert (leader_escalation_reason(channel, people, visit) is not None) is escalate


def test_a_stored_version_1_registration_is_upcast_with_defaults():
    app = Application(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    case = register()
    [event] = case.collect_events()
    stored = app.mapper.to_stored_event(event)
    state = json.loads(stored.state)
    for field in ("petitioner_key", "accused_unit", "representatives", "class_version"):
        state.pop(field, None)  # exactly what a version 1 event stored
    old = StoredEvent(stored.originator_id, stored.originator_version, stored.topic,
                      json.dumps(state).encode())
    upcast = app.mapper.to_domain_event(old)
    assert (upcast.petitioner_key, upcast.accused_unit, upcast.representatives) == ("", "", [])
    assert upcast.mutate(None).case_number == case.case_number
