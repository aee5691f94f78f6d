"""Routing across jurisdictions through the running services: hard rules, transfers between
counties, manual reassignment, remit disputes, and versioned rule tables."""
from __future__ import annotations

import httpx
import pytest

from tests.conftest import bearer
from tests.e2e.test_end_to_end import petition, wait_for

pytestmark = pytest.mark.e2e


def client(system, tokens, who, service="intake"):
    return httpx.Client(base_url=system.urls[service], headers=bearer(tokens[who]))


def routed(intake: httpx.Client, case_id: str) -> dict:
    return wait_for(lambda: (c := intake.get(f"/v1/cases/{case_id}").json()).get("unit") and c)


def test_an_accusation_is_routed_to_discipline_inspection_not_the_accused(system, tokens,
                                                                          webhook_receiver):
    with client(system, tokens, "county_330106_clerk") as clerk:
        body = petition(category="accusation", subject="misconduct",
                        content="土地局工作人员收受好处", accused_unit="land-330106")
        case_id = clerk.post("/v1/petitions", json=body).json()["case_id"]
        case = routed(clerk, case_id)
    assert case["unit"]["unit_id"].startswith("di-")
    assert "land-330106" in case["unit"]["explanation"]
    wait_for(lambda: webhook_receiver.for_case(case_id))
    assert all("/units/land-330106" != r["path"] for r in webhook_receiver.for_case(case_id))


def test_litigation_is_proposed_not_accepted_with_its_channel(system, tokens):
    with client(system, tokens, "county_330106_clerk") as clerk:
        case_id = clerk.post("/v1/petitions", json=petition(
            subject="litigation", content="不服法院一审判决")).json()["case_id"]
        case = wait_for(lambda: (c := clerk.get(f"/v1/cases/{case_id}").json())
                        .get("routing_proposal") and c)
    assert case["routing_proposal"]["proposed_channel"] == "people's court"
    assert case["unit"] is None


def test_a_case_transferred_between_counties_is_seen_by_both_and_routed_again(system, tokens):
    with client(system, tokens, "county_330106_clerk") as a_clerk, \
            client(system, tokens, "county_330106_supervisor", "routing") as a_bureau, \
            client(system, tokens, "county_330108_clerk") as b_clerk:
        case_id = a_clerk.post("/v1/petitions", json=petition()).json()["case_id"]
        routed(a_clerk, case_id)
        assert b_clerk.get(f"/v1/cases/{case_id}").status_code == 404
        r = a_bureau.post(f"/v1/cases/{case_id}/transfer",
                          json={"to_division": "330108", "reason": "土地位于滨江区"})
        assert r.status_code == 200, r.text
        case = wait_for(lambda: (c := b_clerk.get(f"/v1/cases/{case_id}")).status_code == 200
                        and (s := c.json()).get("unit") and s)
        assert case["unit"]["unit_id"] == "land-330108"
        assert case["division"] == "330108"
        assert a_clerk.get(f"/v1/cases/{case_id}").status_code == 200  # both keep it
        # the read model follows the log a moment later
        assert wait_for(lambda: case_id in {c["case_id"] for c in b_clerk.get(
            "/v1/cases", params={"page_size": 200}).json()["items"]})


def test_manual_reassignment_respects_the_accused_unit(system, tokens):
    with client(system, tokens, "county_330106_clerk") as clerk, \
            client(system, tokens, "county_330106_supervisor", "routing") as bureau:
        case_id = clerk.post("/v1/petitions", json=petition(
            category="accusation", subject="misconduct", content="住建局违规审批",
            accused_unit="housing-330106")).json()["case_id"]
        routed(clerk, case_id)
        refused = bureau.post(f"/v1/cases/{case_id}/reassignment",
                              json={"unit_id": "housing-330106", "reason": "试图交给被举报单位"})
        assert refused.status_code == 422
        ok = bureau.post(f"/v1/cases/{case_id}/reassignment",
                         json={"unit_id": "gov-330106", "reason": "由区政府督办"})
        assert ok.status_code == 200 and ok.json()["routing"]["unit_id"] == "gov-330106"
        dispute = bureau.post(f"/v1/cases/{case_id}/remit-disputes",
                              json={"units": ["land-330106", "housing-330106"],
                                    "reason": "两单位均认为不属本单位职责"})
        assert dispute.status_code == 200
        assert dispute.json()["remit_disputes"][0]["common_superior"]


def test_routing_commands_are_scoped_and_permissioned(system, tokens):
    with client(system, tokens, "county_330108_clerk") as b_clerk, \
            client(system, tokens, "county_330106_supervisor", "routing") as a_bureau, \
            client(system, tokens, "county_330108_clerk", "routing") as b_clerk_routing:
        case_id = b_clerk.post("/v1/petitions", json=petition(division="330108")).json()["case_id"]
        missing = a_bureau.post(f"/v1/cases/{case_id}/transfer",
                                json={"to_division": "330106", "reason": "x"})
        assert missing.status_code == 404
        denied = b_clerk_routing.post(f"/v1/cases/{case_id}/transfer",
                                      json={"to_division": "330106", "reason": "x"})
        assert denied.status_code == 403


def test_rule_changes_are_versioned_and_only_administrators_make_them(system, tokens):
    with client(system, tokens, "province_admin", "routing") as admin, \
            client(system, tokens, "county_330106_clerk", "routing") as clerk:
        current = admin.get("/v1/routing/rules").json()
        forbidden = clerk.put("/v1/routing/rules", json={"rules": current["rules"],
                                                         "reason": "x"})
        assert forbidden.status_code == 403
        bad = admin.put("/v1/routing/rules", json={
            "rules": [{**current["rules"][0], "lead_unit": "no-such-unit"}], "reason": "typo"})
        assert bad.status_code == 422
        published = admin.put("/v1/routing/rules", json={"rules": current["rules"],
                                                         "reason": "annual review"})
        assert published.status_code == 200
        assert published.json()["rule_set_version"] == current["rule_set_version"] + 1


def test_a_unit_declares_a_recusal_and_is_skipped(system, tokens):
    with client(system, tokens, "county_330106_supervisor", "routing") as bureau, \
            client(system, tokens, "county_330106_clerk") as clerk:
        body = petition(subject="housing", content="小区违建无人处理")
        r = bureau.post("/v1/recusals", json={
            "unit_id": "housing-330106", "reason": "经办人与信访人系亲属",
            "petitioner_id_number": body["petitioner"]["id_number"]})
        assert r.status_code == 201, r.text
        case_id = wait_for(lambda: (c := clerk.post("/v1/petitions", json=body)).status_code
                           in (200, 201) and c.json()["case_id"])
        case = routed(clerk, case_id)
    assert case["unit"]["unit_id"] != "housing-330106"
    assert any(unit == "housing-330106" for unit, _ in case["unit"]["skipped"])
