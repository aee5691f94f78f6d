"""A petition through all four services, as processes, on real PostgreSQL and NATS."""
from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.conftest import bearer

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def as_(system, tokens):
    """as_("county_330106_clerk") -> an HTTP client for intake acting as that principal."""
    clients: dict[str, httpx.Client] = {}

    def client(who: str) -> httpx.Client:
        if who not in clients:
            clients[who] = httpx.Client(base_url=system.urls["intake"], headers=bearer(tokens[who]))
        return clients[who]

    yield client
    for c in clients.values():
        c.close()

PETITION = {
    "channel": "letter",
    "category": "appeal",
    "division": "330106",
    "subject": "land",
    "content": "村里重新分配宅基地时漏掉了我家",
    "requests": ["重新丈量并登记"],
    "people_count": 1,
    "petitioner": {"name": "张三", "id_number": "330106199001011234",
                   "phone": "13800000000", "address": "西湖区某村"},
}


def petition(**overrides: Any) -> dict[str, Any]:
    """A petition from a new petitioner with new content, so it is never taken for a repeat or
    a duplicate of another test's petition (those join the open case instead)."""
    n = time.time_ns() % 10**11
    body = {**PETITION, "content": f"{PETITION['content']}（编号{n}）",
            "petitioner": {**PETITION["petitioner"], "id_number": f"330106{n:011d}X"}}
    body.update(overrides)
    return body


def wait_for(check, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within the time limit")
        time.sleep(0.1)


def fully_processed(client: httpx.Client, case_id: str):
    def check():
        case = client.get(f"/v1/cases/{case_id}").json()
        delivered = [n for n in case.get("notices", {}).values() if n["state"] == "delivered"]
        if case.get("unit") and "acceptance" in case.get("deadlines", {}) and delivered:
            return case
        return None

    return check


def test_rest_petition_is_routed_timed_and_notified(as_, webhook_receiver):
    clerk = as_("county_330106_clerk")
    r = clerk.post("/v1/petitions", json=petition())
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["status"] == "registered"
    assert created["case_number"].startswith("330106-")
    case_id = created["case_id"]

    case = wait_for(fully_processed(clerk, case_id))
    assert case["unit"]["unit_id"] == "land-330106"
    assert case["deadlines"]["acceptance"]["length"] == 15
    assert case["case_number"] == created["case_number"]

    notices = webhook_receiver.for_case(case_id)
    assert len(notices) == 1
    assert notices[0]["path"] == "/units/land-330106"
    assert notices[0]["headers"]["X-Petitions-Signature"].startswith("sha256=")
    assert "张三" not in str(notices[0]["body"]), "a unit received the petitioner's identity"

    history = clerk.get(f"/v1/cases/{case_id}/events").json()["events"]
    by_actor = {e["type"]: e["actor"]["id"] for e in history}
    assert by_actor["Registered"] == "clerk-330106"
    assert by_actor["RoutedToUnit"] == "routing-service"
    assert by_actor["ClockStarted"] == "deadlines-service"
    assert by_actor["NoticeDelivered"] == "notify-service"
    assert [e["version"] for e in history] == list(range(1, len(history) + 1))


def test_idempotency_key_returns_the_same_case(as_):
    clerk = as_("county_330106_clerk")
    headers = {"Idempotency-Key": f"retry-{time.time_ns()}"}
    body = petition()
    first = clerk.post("/v1/petitions", json=body, headers=headers)
    second = clerk.post("/v1/petitions", json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert second.headers.get("Idempotent-Replayed") == "true"
    changed = clerk.post("/v1/petitions", json={**body, "subject": "labour"},
                         headers=headers)
    assert changed.status_code == 422


def test_listing_is_paginated_and_filtered(as_):
    clerk = as_("county_330108_clerk")
    ids = [clerk.post("/v1/petitions", json=petition(division="330108")).json()
           ["case_id"] for _ in range(3)]
    wait_for(lambda: all(clerk.get(f"/v1/cases/{i}").json().get("unit") for i in ids))

    def all_pages():
        seen, token = [], None
        while True:
            params = {"division": "330108", "page_size": 2, **({"page_token": token} if token else {})}
            page = clerk.get("/v1/cases", params=params).json()
            seen += [c["case_id"] for c in page["items"]]
            token = page["next_page_token"]
            if not token:
                return seen

    seen = wait_for(lambda: (s := all_pages()) and set(ids) <= set(s) and s)
    assert len(seen) == len(set(seen))
    everything = as_("province_admin").get("/v1/cases", params={"division": "330100"}).json()
    assert all(c["division"].startswith("3301") for c in everything["items"])


@pytest.mark.parametrize("body, status", [
    ({**PETITION, "division": "33010"}, 422),
    ({k: v for k, v in PETITION.items() if k != "category"}, 422),
    ({**PETITION, "petitioner": None}, 422),
    ({**PETITION, "people_count": 0}, 422),
])
def test_bad_petitions_are_refused_and_write_nothing(as_, body, status):
    clerk = as_("county_330106_clerk")
    before = settled_list(clerk)
    r = clerk.post("/v1/petitions", json=body)
    assert r.status_code == status
    assert [c["case_id"] for c in settled_list(clerk)] == [c["case_id"] for c in before]


def settled_list(clerk) -> list[dict[str, Any]]:
    """The county's case list once the read model has caught up with earlier tests' cases
    (the projector applies commits a moment after them): the same ids twice, 0.5 s apart."""
    def read() -> list[dict[str, Any]]:
        return clerk.get("/v1/cases", params={"page_size": 200}).json()["items"]

    def same_twice() -> tuple[list[dict[str, Any]]] | None:  # a tuple: an empty list counts
        first = read()
        time.sleep(0.5)
        second = read()
        return (second,) if [c["case_id"] for c in first] == [c["case_id"] for c in second] \
            else None
    return wait_for(same_twice)[0]


def test_transport_level_refusals(as_):
    clerk = as_("county_330106_clerk")
    big = {**PETITION, "content": "x" * (1024 * 1024 + 1)}
    assert clerk.post("/v1/petitions", json=big).status_code == 413
    r = clerk.post("/v1/petitions", content=b"channel=letter",
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415
    assert clerk.post("/v1/petitions", content=b"{not json",
                      headers={"Content-Type": "application/json"}).status_code == 422
    missing = "00000000-0000-4000-8000-000000000000"
    assert clerk.get(f"/v1/cases/{missing}").status_code == 404
    assert clerk.get(f"/v1/cases/{missing}/events").status_code == 404
    assert clerk.get("/v1/cases/not-a-uuid").status_code == 422
    assert clerk.get("/v1/cases", params={"page_token": "garbage"}).status_code == 400


def test_every_service_reports_health_and_readiness(system):
    for name, url in system.urls.items():
        assert httpx.get(f"{url}/healthz").status_code == 200, name
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 200 and ready.json()["checks"] == {
            "postgresql": True, "nats": True}, name
