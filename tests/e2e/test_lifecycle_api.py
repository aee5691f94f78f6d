"""A case's statutory life over REST, through the running services."""
from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import bearer
from tests.e2e.test_end_to_end import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def as_(system, tokens) -> Iterator:
    """as_("county_330106_supervisor") -> an intake HTTP client acting as that principal."""
    clients: dict[str, httpx.Client] = {}

    def client(who: str) -> httpx.Client:
        if who not in clients:
            clients[who] = httpx.Client(base_url=system.urls["intake"], headers=bearer(tokens[who]))
        return clients[who]

    yield client
    for c in clients.values():
        c.close()


def register(as_, division: str = "330106") -> str:
    """A new case (its own petitioner and content, so it never joins another as a repeat)."""
    tag = uuid.uuid4().int
    petition = {
        "channel": "letter", "category": "appeal", "division": division, "subject": "land",
        "content": f"宅基地重新分配时漏掉了我家 ({tag})", "requests": ["重新丈量并登记"],
        "people_count": 1,
        "petitioner": {"name": "王五", "id_number": f"{tag % 10**18:018d}",
                       "phone": "13800000000"},
    }
    r = as_(f"county_{division}_clerk").post("/v1/petitions", json=petition)
    assert r.status_code == 201, r.text
    return r.json()["case_id"]


def do(as_, who: str, case_id: str, path: str, status: int = 200, **body) -> dict:
    body.setdefault("reason", f"{path} for the test")
    r = as_(who).post(f"/v1/cases/{case_id}/{path}", json=body)
    assert r.status_code == status, r.text
    return r.json()


SUPERVISOR, CLERK, UNIT = "county_330106_supervisor", "county_330106_clerk", "unit_land_330106"
ACCEPT = {"decision": "accept", "mode": "assign", "lead_unit": "land-330106",
          "assisting_units": ["housing-330106"]}
REPLY = {"outcome": "supported", "reply_text": "经核实，将重新丈量并登记。"}


def test_a_case_from_registration_to_archive(as_):
    case_id = register(as_)
    case = do(as_, SUPERVISOR, case_id, "acceptance", **ACCEPT)
    assert case["status"] == "accepted" and case["lead_unit"] == "land-330106"
    assert case["acceptance"]["mode"] == "assign" and "reply" in case["allowed_actions"]

    case = do(as_, UNIT, case_id, "progress-reports", note="已现场勘查")
    assert case["progress_reports"] == 1
    case = do(as_, SUPERVISOR, case_id, "extensions", days=30, approver="局长",
              petitioner_told=True, reason="需要重新测绘，已告知信访人")
    assert case["extension"]["days"] == 30 and "grant_extension" not in case["allowed_actions"]
    second = do(as_, SUPERVISOR, case_id, "extensions", 409, days=5, approver="局长",
                petitioner_told=True)
    assert second["current_state"] == "accepted"

    case = do(as_, UNIT, case_id, "replies", **REPLY)
    assert case["status"] == "replied" and case["reply"]["outcome"] == "supported"
    case = do(as_, UNIT, case_id, "reply-receipts")
    assert case["reply"]["received_on"] and "request_review" in case["allowed_actions"]
    case = do(as_, CLERK, case_id, "return-visits", satisfaction="satisfied", comment="满意")
    assert case["satisfaction"] == "satisfied" and case["status"] == "replied"

    do(as_, UNIT, case_id, "file/handling-opinion", opinion="依法重新丈量")
    do(as_, UNIT, case_id, "file/leader-sign-off", leader="王局长")
    case = do(as_, UNIT, case_id, "file/petitioner-signature", signed=True)
    assert case["file"]["missing"] == []

    case = do(as_, SUPERVISOR, case_id, "closure")
    assert case["status"] == "closed" and case["allowed_actions"] == ["archive"]
    case = do(as_, SUPERVISOR, case_id, "archive")
    assert case["status"] == "archived" and case["allowed_actions"] == []
    assert case["closed_on"] and case["archived_on"]
    assert "王五" not in str(case)

    history = as_(SUPERVISOR).get(f"/v1/cases/{case_id}/events").json()["events"]
    lifecycle = [e for e in history if e["type"] in {
        "Accepted", "ProgressReported", "ExtensionGranted", "Replied", "ReplyReceived",
        "ReturnVisitRecorded", "HandlingOpinionRecorded", "LeaderSignedOff",
        "PetitionerSignatureRecorded", "Closed", "Archived"}]
    assert [e["type"] for e in lifecycle] == [
        "Accepted", "ProgressReported", "ExtensionGranted", "Replied", "ReplyReceived",
        "ReturnVisitRecorded", "HandlingOpinionRecorded", "LeaderSignedOff",
        "PetitionerSignatureRecorded", "Closed", "Archived"]
    assert lifecycle[0]["actor"] == {"id": "supervisor-330106", "role": "bureau_supervisor",
                                     "jurisdiction": "330106"}
    assert lifecycle[1]["actor"]["role"] == "handling_unit"
    assert all(e["reason"] and e["recorded_at"] for e in lifecycle)


def test_review_and_re_review_end_in_termination(as_):
    case_id = register(as_)
    do(as_, SUPERVISOR, case_id, "acceptance", **ACCEPT)
    do(as_, UNIT, case_id, "replies", **REPLY)
    do(as_, UNIT, case_id, "reply-receipts")
    case = do(as_, CLERK, case_id, "review-requests", organ="杭州市信访局")
    assert case["status"] == "under_review" and case["review"]["organ"] == "杭州市信访局"
    do(as_, SUPERVISOR, case_id, "review-opinions", outcome="upheld", opinion="维持原答复")
    case = do(as_, CLERK, case_id, "re-review-requests", organ="浙江省信访局")
    assert case["status"] == "under_re_review"
    case = do(as_, SUPERVISOR, case_id, "re-review-opinions", outcome="upheld",
              opinion="维持，终结")
    assert case["status"] == "terminated"

    for who, path, body in [(UNIT, "replies", REPLY),
                            (CLERK, "review-requests", {"organ": "杭州市信访局"}),
                            (CLERK, "withdrawal", {"voluntary": True}),
                            (SUPERVISOR, "acceptance", ACCEPT)]:
        refused = do(as_, who, case_id, path, 409, **body)
        assert refused["current_state"] == "terminated"
        assert refused["allowed_actions"] == ["close", "record_handling_opinion",
                                              "record_leader_sign_off",
                                              "record_petitioner_signature"]


def test_a_reply_before_acceptance_is_refused_naming_the_state(as_):
    case_id = register(as_)
    refused = do(as_, SUPERVISOR, case_id, "replies", 409, **REPLY)
    assert refused["current_state"] == "registered"
    assert "accept" in refused["allowed_actions"] and "reply" not in refused["allowed_actions"]
    assert as_(SUPERVISOR).get(f"/v1/cases/{case_id}").json()["status"] == "registered"


def test_closing_an_incomplete_file_lists_what_is_missing(as_):
    case_id = register(as_)
    do(as_, SUPERVISOR, case_id, "acceptance", **ACCEPT)
    do(as_, UNIT, case_id, "replies", **REPLY)
    refused = do(as_, SUPERVISOR, case_id, "closure", 422)
    assert refused["missing"] == ["handling_opinion", "leader_sign_off", "petitioner_signature"]
    do(as_, UNIT, case_id, "file/leader-sign-off", leader="王局长")
    refused = do(as_, SUPERVISOR, case_id, "closure", 422)
    assert refused["missing"] == ["handling_opinion", "petitioner_signature"]


def test_another_countys_case_is_not_found(as_):
    other = register(as_, "330108")
    refused = as_(SUPERVISOR).post(f"/v1/cases/{other}/acceptance",
                                   json={**ACCEPT, "reason": "not mine"})
    assert refused.status_code == 404


def test_roles_and_units_act_only_within_their_permissions(as_):
    case_id = register(as_)
    auditor = as_("province_auditor").post(f"/v1/cases/{case_id}/acceptance",
                                           json={**ACCEPT, "reason": "audit"})
    assert auditor.status_code == 403
    # A handling unit acts only on cases it leads; this one leads nothing yet.
    do(as_, UNIT, case_id, "replies", 403, **REPLY)
    do(as_, SUPERVISOR, case_id, "acceptance", **{**ACCEPT, "lead_unit": "agri-330106",
                                                 "assisting_units": []})
    do(as_, UNIT, case_id, "progress-reports", 403, note="not ours")
    # A clerk registers return visits and withdrawals, but does not decide.
    do(as_, CLERK, case_id, "extensions", 403, days=10, approver="局长", petitioner_told=True)


def test_bad_bodies_are_refused_before_anything_is_recorded(as_):
    case_id = register(as_)
    no_reason = as_(SUPERVISOR).post(f"/v1/cases/{case_id}/acceptance", json=ACCEPT)
    assert no_reason.status_code == 422
    do(as_, SUPERVISOR, case_id, "acceptance", 422, **ACCEPT, surprise=True)
    do(as_, SUPERVISOR, case_id, "acceptance", 422, **{**ACCEPT, "mode": "delegate"})
    do(as_, SUPERVISOR, case_id, "acceptance", 422, decision="maybe")
    do(as_, SUPERVISOR, case_id, "acceptance", 422,
       **{**ACCEPT, "assisting_units": ["land-330106"]})  # the lead cannot also assist
    assert as_(SUPERVISOR).get(f"/v1/cases/{case_id}").json()["status"] == "registered"


def test_a_withdrawal_under_pressure_is_flagged_and_a_voluntary_one_closes(as_):
    case_id = register(as_)
    case = do(as_, CLERK, case_id, "withdrawal", voluntary=False, reason="被村干部劝说撤回")
    assert case["status"] == "registered"
    assert case["withdrawal"] == {"withdrawn": False, "flagged_for_investigation": 1}
    case = do(as_, CLERK, case_id, "withdrawal", voluntary=True, reason="问题已自行解决")
    assert case["status"] == "withdrawn" and case["allowed_actions"] == ["close"]
    case = do(as_, SUPERVISOR, case_id, "closure")
    assert case["status"] == "closed"


def test_a_terminated_matter_brought_again_is_not_accepted_again(as_):
    tag = uuid.uuid4().int
    petition = {"channel": "visit", "category": "appeal", "division": "330106",
                "subject": "land", "content": f"征地补偿标准过低 ({tag})", "people_count": 1,
                "petitioner": {"name": "孙八", "id_number": f"{tag % 10**18:018d}"}}
    clerk = as_(CLERK)
    case_id = clerk.post("/v1/petitions", json=petition).json()["case_id"]
    do(as_, SUPERVISOR, case_id, "acceptance", **ACCEPT)
    do(as_, UNIT, case_id, "replies", **REPLY)
    do(as_, UNIT, case_id, "reply-receipts")
    do(as_, CLERK, case_id, "review-requests", organ="杭州市信访局")
    do(as_, SUPERVISOR, case_id, "review-opinions", outcome="upheld", opinion="维持")
    do(as_, CLERK, case_id, "re-review-requests", organ="浙江省信访局")
    do(as_, SUPERVISOR, case_id, "re-review-opinions", outcome="upheld", opinion="终结")
    # Wait until the read model knows the matter is terminated, then come back with it.
    wait_for(lambda: any(c["case_id"] == case_id and c["status"] == "terminated" for c in
                     clerk.get("/v1/cases", params={"status": "terminated",
                                                    "page_size": 200}).json()["items"]))
    again = clerk.post("/v1/petitions", json={**petition, "content": "还是征地补偿问题"})
    assert again.status_code == 201, again.text
    assert again.json()["case_id"] != case_id
    history = clerk.get(f"/v1/cases/{again.json()['case_id']}/events").json()["events"]
    refusal = next(e for e in history if e["type"] == "NotAcceptedAgain")
    assert refusal["data"]["earlier_case_id"] == case_id
    assert refusal["data"]["ground"] == "terminated_after_re_review"
