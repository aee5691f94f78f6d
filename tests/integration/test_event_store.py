"""The event store on a real PostgreSQL: appends, optimistic concurrency, history."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest
from eventsourcing.persistence import IntegrityError

from petitions.domain.values import Actor
from tests.integration.conftest import new_case

pytestmark = pytest.mark.integration

ROUTER = Actor(id="routing-service", role="service")


def test_registration_is_one_event_in_the_case_stream(store):
    case = new_case()
    store.save(case)
    history = store.history(case.id)
    assert [type(e).__name__ for e in history] == ["Registered"]
    assert history[0].originator_version == 1
    assert store.get(case.id).case_number == case.case_number


def test_second_writer_of_the_same_version_gets_a_conflict(store):
    case = new_case()
    store.save(case)
    first, second = store.get(case.id), store.get(case.id)
    first.route_to_unit(unit_id="a", unit_name="A", rule_id="r1", rule_set_version="1",
                        explanation="x", actor=ROUTER, at=datetime.now(UTC))
    second.start_clock(clock="acceptance", started_on="2026-01-05", due_on="2026-01-20",
                       length=15, day_kind="calendar", explanation="x", provisional=False,
                       actor=ROUTER, at=datetime.now(UTC), reason="r")
    store.save(first)
    with pytest.raises(IntegrityError):
        store.save(second)
    assert [e.originator_version for e in store.history(case.id)] == [1, 2]


def test_update_retries_on_conflict_and_keeps_both_facts(store):
    case = new_case()
    store.save(case)
    interloper = store.get(case.id)
    calls = []

    def route(c):
        calls.append(c.version)
        if len(calls) == 1:
            # Another service appends between our load and our save.
            interloper.start_clock(clock="acceptance", started_on="2026-01-05",
                                   due_on="2026-01-20", length=15, day_kind="calendar",
                                   explanation="x", provisional=False, actor=ROUTER,
                                   at=datetime.now(UTC), reason="r")
            store.save(interloper)
        if not c.is_routed:
            c.route_to_unit(unit_id="a", unit_name="A", rule_id="r1", rule_set_version="1",
                            explanation="x", actor=ROUTER, at=datetime.now(UTC))

    store.update(case.id, route)
    assert calls == [1, 2]
    assert [type(e).__name__ for e in store.history(case.id)] == [
        "Registered", "ClockStarted", "RoutedToUnit"]


def test_confidential_identity_is_stored_with_the_event_and_read_back(store):
    case = new_case()
    store.save(case)
    assert store.get(case.id).petitioner["id_number"] == "330106199001011234"
