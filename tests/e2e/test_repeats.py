"""Repeat, duplicate and collective petitions through the running services."""
from __future__ import annotations

import httpx
import pytest

from tests.conftest import bearer
from tests.e2e.test_end_to_end import petition, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def clerk(system, tokens):
    with httpx.Client(base_url=system.urls["intake"],
                      headers=bearer(tokens["county_330106_clerk"])) as c:
        yield c


def projected(clerk, case_id):
    """The case routed, and in the read model a new petition is screened against (the case
    list shows it): the projector lets commits gather briefly before it applies them."""
    def listed() -> bool:
        items = clerk.get("/v1/cases", params={"page_size": 200}).json()["items"]
        return any(i["case_id"] == case_id for i in items)
    return wait_for(lambda: clerk.get(f"/v1/cases/{case_id}").json().get("unit") and listed())


def test_the_same_petitioner_on_the_same_matter_is_linked_as_a_repeat(clerk):
    first_body = petition(channel="visit")
    first = clerk.post("/v1/petitions", json=first_body).json()
    projected(clerk, first["case_id"])
    again = {**first_body, "content": "第二次来访，问题仍未解决", "channel": "visit"}
    second = clerk.post("/v1/petitions", json=again)
    assert second.status_code == 200
    assert second.json()["case_id"] == first["case_id"]
    assert second.json()["linked_as"] == "repeat"
    third = clerk.post("/v1/petitions", json={**again, "content": "第三次来访"})
    assert third.json()["linked_as"] == "repeat"
    history = clerk.get(f"/v1/cases/{first['case_id']}/events").json()["events"]
    types = [e["type"] for e in history]
    assert types.count("RepeatPetitionLinked") == 2
    # The person's 3rd visit on the matter goes to the principal leader.
    assert "EscalatedToPrincipalLeader" in types
    summary = wait_for(lambda: (s := clerk.get(f"/v1/cases/{first['case_id']}").json())
                       .get("repeat_count") == 2 and s)
    assert summary["visit_count"] == 3


def test_the_same_content_from_another_channel_is_merged(clerk):
    body = petition(channel="letter")
    first = clerk.post("/v1/petitions", json=body).json()
    projected(clerk, first["case_id"])
    other_person = {**body, "channel": "online",
                    "petitioner": {**body["petitioner"], "id_number": "330106200001019999"},
                    "content": "  " + body["content"].replace("，", ",") + " "}
    merged = clerk.post("/v1/petitions", json=other_person)
    assert merged.status_code == 200 and merged.json()["linked_as"] == "duplicate"
    assert merged.json()["case_id"] == first["case_id"]
    types = [e["type"] for e in clerk.get(f"/v1/cases/{first['case_id']}/events").json()["events"]]
    assert "DuplicateMerged" in types


def test_collective_visits_and_representatives(clerk):
    six = ["甲", "乙", "丙", "丁", "戊", "己"]
    too_many = clerk.post("/v1/petitions", json=petition(channel="visit", people_count=12,
                                                          representatives=six))
    assert too_many.status_code == 422
    none_named = clerk.post("/v1/petitions", json=petition(channel="visit", people_count=6))
    assert none_named.status_code == 422
    major = clerk.post("/v1/petitions", json=petition(channel="visit", people_count=35,
                                                       representatives=six[:5]))
    assert major.status_code == 201
    case_id = major.json()["case_id"]
    summary = wait_for(lambda: (s := clerk.get(f"/v1/cases/{case_id}").json()).get("major") and s)
    assert summary["leader_escalations"][0]["trigger"].startswith("collective visit of 35")
