"""Registration rules and the Registered event's upcaster. No I/O."""
from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from eventsourcing.application import Application
from eventsourcing.persistence import StoredEvent

from petitions.domain.case import Case
from petitions.domain.errors import RuleViolation
from petitions.domain.intake_rules import leader_escalation_reason
from petitions.domain.values import Actor, Category, Channel, Contact, Petitioner

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


def test_representatives_are_recorded_with_their_contacts():
    reps = [Contact("甲", phone="13700000001", email="jia@example.cn"), "乙"]
    case = register(people_count=6, representatives=reps)
    assert case.representatives == [
        {"name": "甲", "phone": "13700000001", "email": "jia@example.cn", "address": ""},
        {"name": "乙", "phone": "", "email": "", "address": ""}]
    assert case.contact is None


def test_a_joint_petition_names_its_designated_contact():
    contact = Contact("李四", phone="13911111111")
    case = register(channel=Channel.LETTER, people_count=3, contact=contact)
    assert case.contact == contact.as_dict()


@pytest.mark.parametrize("channel, people, petitioner, why", [
    (Channel.LETTER, 1, Petitioner(name="赵六"), "joint petition"),   # one signatory
    (Channel.VISIT, 6, Petitioner(name="赵六"), "joint petition"),    # a visit has representatives
    (Channel.LETTER, 3, None, "anonymous"),
])
def test_a_designated_contact_only_for_a_named_joint_petition(channel, people, petitioner, why):
    with pytest.raises(RuleViolation, match=why):
        register(channel=channel, people_count=people, petitioner=petitioner,
                 representatives=["甲"] if channel is Channel.VISIT else [],
                 contact=Contact("李四"))


def test_a_stored_version_2_registration_gets_contacts_from_representative_names():
    app = Application(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    case = register(people_count=6, representatives=["甲", "乙"])
    [event] = case.collect_events()
    stored = app.mapper.to_stored_event(event)
    state = json.loads(stored.state)
    state.pop("contact")
    state["representatives"] = ["甲", "乙"]   # exactly what a version 2 event stored
    state["class_version"] = 2
    old = StoredEvent(stored.originator_id, stored.originator_version, stored.topic,
                      json.dumps(state).encode())
    upcast = app.mapper.to_domain_event(old)
    assert upcast.representatives == [Contact("甲").as_dict(), Contact("乙").as_dict()]
    assert upcast.contact is None
    assert upcast.mutate(None).representatives[1]["name"] == "乙"


@pytest.mark.parametrize("value", [
    CLERK,
    Petitioner("赵六", "33010619800101001X", "13800000000", "杭州", "z@example.cn"),
    Contact("甲", "13900000000", "j@example.cn", "宁波"),
])
def test_the_spelled_out_dicts_hold_every_field(value) -> None:
    # A field added to the dataclass and not to its as_dict would leave the stored event,
    # and the submission's fingerprint, without it.
    assert value.as_dict() == dataclasses.asdict(value)
    assert list(value.as_dict()) == [f.name for f in dataclasses.fields(value)]
