"""Routing applied to cases, and routing-configuration versions. No I/O: the handler's
`route` runs on an in-memory case with the sample directory and rules."""
from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest

from petitions.domain.case import Case
from petitions.domain.errors import RuleViolation
from petitions.domain.routing_config import RoutingConfiguration
from petitions.domain.values import Actor, Category, Channel, Petitioner
from services.routing.handler import RoutingHandler

CONFIG = Path(__file__).resolve().parents[2] / "config"
AT = datetime(2026, 5, 6, 10, 0, tzinfo=UTC)
ADMIN = Actor("admin", "province_admin", "330000")
SUPERVISOR = Actor("supervisor-330106", "bureau_supervisor", "330106")


@pytest.fixture(scope="module")
def configuration() -> RoutingConfiguration:
    return seeded_configuration()


def seeded_configuration() -> RoutingConfiguration:
    """The routing configuration of the sample province (config/directory.json and
    config/routing-rules.json)."""
    config = RoutingConfiguration.start(actor=ADMIN, at=AT)
    config.publish_directory(json.loads((CONFIG / "directory.json").read_text("utf-8")),
                             actor=ADMIN, at=AT, reason="seed")
    config.publish_rules(json.loads((CONFIG / "routing-rules.json").read_text("utf-8"))["rules"],
                         actor=ADMIN, at=AT, reason="seed")
    return config


@pytest.fixture
def handler(configuration) -> RoutingHandler:
    return RoutingHandler(store=None, router=configuration.router,
                          directory=configuration.router().directory, clock=lambda: AT)


def case(category=Category.APPEAL, subject="land", content="宅基地", accused_unit="",
         division="330106") -> Case:
    c = Case.register(case_id=uuid4(), case_number=f"{division}-2026-000001",
                      channel=Channel.LETTER, category=category, division=division,
                      subject=subject, content=content, requests=[], people_count=1,
                      petitioner=Petitioner(name="钱七"), received_at=AT, submission_digest="d",
                      actor=SUPERVISOR, at=AT, accused_unit=accused_unit)
    c.collect_events()
    return c


def new_event_types(c: Case) -> list[str]:
    return [type(e).__name__ for e in c.collect_events()]


def test_an_appeal_is_routed_by_the_rule_table_and_names_the_version(handler):
    c = case()
    handler.route(c)
    assert new_event_types(c) == ["RoutedToUnit"]
    assert c.routing["unit_id"] == "land-330106"
    assert c.routing["rule_set_version"] == "1"
    assert "rule 330106-appeal-land of version 1" in c.routing["explanation"]


def test_an_accusation_never_goes_to_the_accused_unit(handler):
    c = case(category=Category.ACCUSATION, subject="misconduct", content="土地局工作人员索贿",
             accused_unit="land-330106")
    handler.route(c)
    assert c.routing["unit_id"] not in ("land-330106",)
    assert c.routing["unit_id"].startswith("di-")
    assert "land-330106" in c.routing["explanation"]


def test_litigation_is_proposed_for_not_accepting_with_its_channel_not_routed(handler):
    c = case(subject="litigation", content="法院判决不公，要求重审")
    handler.route(c)
    assert new_event_types(c) == ["NonAcceptanceProposed"]
    assert c.routing is None and c.routing_proposal["proposed_channel"] == "people's court"
    assert c.is_routed  # settled: a redelivery does nothing
    handler.route(c)
    assert new_event_types(c) == []


def test_a_redelivered_registration_routes_once(handler):
    c = case()
    handler.route(c)
    handler.route(c)
    assert new_event_types(c) == ["RoutedToUnit"]


def test_a_transfer_moves_the_case_and_it_is_routed_again_in_the_new_county(handler):
    c = case()
    handler.route(c)
    c.transfer_to_jurisdiction(to_division="330108", actor=SUPERVISOR, at=AT,
                               reason="the land lies in Binjiang")
    assert (c.division, c.jurisdictions, c.routing) == ("330108", ["330106", "330108"], None)
    handler.route(c)
    assert c.routing["unit_id"] == "land-330108"
    assert new_event_types(c) == ["RoutedToUnit", "TransferredToJurisdiction", "RoutedToUnit"]
    with pytest.raises(RuleViolation):
        c.transfer_to_jurisdiction(to_division="330108", actor=SUPERVISOR, at=AT, reason="x")


def test_reassignment_and_remit_disputes_are_recorded(handler):
    c = case()
    with pytest.raises(RuleViolation):  # nothing to reassign before routing
        c.reassign_to_unit(unit_id="hr-330106", unit_name="人社局", actor=SUPERVISOR, at=AT,
                           reason="x")
    handler.route(c)
    c.reassign_to_unit(unit_id="housing-330106", unit_name="住建局", actor=SUPERVISOR, at=AT,
                       reason="the matter is about housing")
    c.escalate_remit_dispute(units=["housing-330106", "land-330106"], common_superior="gov-330106",
                             actor=SUPERVISOR, at=AT, reason="both units decline")
    assert c.routing["unit_id"] == "housing-330106"
    assert c.remit_disputes == [{"units": ["housing-330106", "land-330106"],
                                 "common_superior": "gov-330106"}]


def test_every_configuration_change_is_a_new_version(configuration):
    rules = configuration.rules
    before = configuration.rule_set_version
    configuration.publish_rules(rules[:-1], actor=ADMIN, at=AT, reason="drop the last rule")
    assert configuration.rule_set_version == before + 1
    assert configuration.router().rule_set.version == str(before + 1)
    with pytest.raises(ValueError):  # a rule naming an unknown unit is refused
        configuration.publish_rules([{**rules[0], "lead_unit": "no-such-unit"}], actor=ADMIN,
                                    at=AT, reason="typo")
    assert configuration.rule_set_version == before + 1


def test_a_stored_version_1_routing_event_is_upcast():
    from eventsourcing.application import Application
    from eventsourcing.persistence import StoredEvent

    app = Application(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    c = case()
    c.route_to_unit(unit_id="land-330106", unit_name="L", rule_id="r", rule_set_version="1",
                    explanation="x", actor=ADMIN, at=AT)
    [event] = c.collect_events()
    stored = app.mapper.to_stored_event(event)
    state = json.loads(stored.state)
    for key in ("assisting_units", "skipped", "class_version"):
        state.pop(key)
    old = app.mapper.to_domain_event(StoredEvent(stored.originator_id, stored.originator_version,
                                                 stored.topic, json.dumps(state).encode()))
    assert (old.assisting_units, old.skipped) == ([], [])


def test_a_declared_recusal_skips_the_unit_and_records_why(configuration):
    key = "petitioner-key-of-钱七"
    configuration.declare_recusal(unit_id="land-330106", conflict_with=key, actor=ADMIN, at=AT,
                                  reason="the officer is the petitioner's brother-in-law")
    handler = RoutingHandler(store=None, router=configuration.router,
                             directory=configuration.router().directory, clock=lambda: AT)
    c = Case.register(case_id=uuid4(), case_number="330106-2026-000009", channel=Channel.LETTER,
                      category=Category.APPEAL, division="330106", subject="land", content="x",
                      requests=[], people_count=1, petitioner=Petitioner(name="钱七"),
                      received_at=AT, submission_digest="d", actor=SUPERVISOR, at=AT,
                      petitioner_key=key)
    handler.route(c)
    assert c.routing["unit_id"] != "land-330106"
    assert any(unit == "land-330106" for unit, _ in c.routing["skipped"])
