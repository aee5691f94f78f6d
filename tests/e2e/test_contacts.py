"""Who the bureau answers through, as registered over REST: a collective visit's
representatives with their phones and e-mail, a joint petition's designated contact, and a
petitioner's e-mail; misuse is refused with the rule named and nothing registered."""
from __future__ import annotations

import httpx
import psycopg
import pytest

from tests.conftest import bearer
from tests.e2e.test_end_to_end import petition

pytestmark = pytest.mark.e2e


@pytest.fixture
def clerk(system, tokens):
    with httpx.Client(base_url=system.urls["intake"],
                      headers=bearer(tokens["county_330106_clerk"])) as client:
        yield client


def registrations(system) -> int:
    with psycopg.connect(system.env["POSTGRES_DSN"]) as conn:
        return conn.execute("SELECT count(*) FROM cases_events "
                            "WHERE topic LIKE '%Case.Registered'").fetchone()[0]


def test_a_collective_visit_names_representatives_with_contacts(clerk):
    body = petition(channel="visit", people_count=7, representatives=[
        {"name": "王五", "phone": "13700000201", "email": "wangwu@example.cn"},
        "赵六",   # a name alone is still accepted
    ])
    answer = clerk.post("/v1/petitions", json=body)
    assert answer.status_code == 201, answer.text
    case_id = answer.json()["case_id"]
    assert clerk.get(f"/v1/cases/{case_id}").json()["representatives_count"] == 2
    registered = clerk.get(f"/v1/cases/{case_id}/events").json()["events"][0]["data"]
    assert registered["representatives"][0] == {
        "name": "王五", "phone": "13700000201", "email": "wangwu@example.cn", "address": ""}
    assert registered["representatives"][1]["name"] == "赵六"


def test_an_auditor_sees_that_there_were_representatives_not_who(system, clerk, tokens):
    body = petition(people_count=3, contact={"name": "李四", "phone": "13900000205"})
    case_id = clerk.post("/v1/petitions", json=body).json()["case_id"]
    with httpx.Client(base_url=system.urls["intake"],
                      headers=bearer(tokens["province_auditor"])) as auditor:
        data = auditor.get(f"/v1/cases/{case_id}/events").json()["events"][0]["data"]
    assert data["contact"] == "[redacted]" and data["petitioner"] == "[redacted]"


def test_a_joint_petition_names_its_contact_and_a_petitioner_an_email(clerk):
    body = petition(people_count=3, contact={"name": "李四", "phone": "13900000204",
                                             "email": "lisi@example.cn"})
    body["petitioner"]["email"] = "zhangsan@example.cn"
    answer = clerk.post("/v1/petitions", json=body)
    assert answer.status_code == 201, answer.text


@pytest.mark.parametrize("overrides, expected", [
    ({"contact": {"name": "李四"}}, "joint petition"),                   # one signatory
    ({"channel": "visit", "people_count": 6, "representatives": ["甲"],
      "contact": {"name": "李四"}}, "joint petition"),                   # a visit: representatives
    ({"people_count": 3, "contact": {"name": "李四", "email": "not-an-address"}}, "email"),
    ({"channel": "visit", "people_count": 6,
      "representatives": [{"name": "甲", "phone": "x"}]}, "phone"),
    ({"channel": "visit", "people_count": 6,
      "representatives": [{"name": "甲", "fax": "1"}]}, "fax"),
])
def test_misplaced_or_malformed_contacts_are_refused(system, clerk, overrides, expected):
    before = registrations(system)
    answer = clerk.post("/v1/petitions", json=petition(**overrides))
    assert answer.status_code == 422, answer.text
    assert expected in answer.text
    assert registrations(system) == before
