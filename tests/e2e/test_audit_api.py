"""Verify, export and as-of views through the running intake service."""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta

import httpx
import psycopg
import pytest

from petitions.audit_cli import main as audit_cli
from tests.conftest import bearer
from tests.e2e.test_end_to_end import PETITION, fully_processed, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def client(system, tokens):
    clients: dict[str, httpx.Client] = {}

    def get(who: str) -> httpx.Client:
        if who not in clients:
            clients[who] = httpx.Client(base_url=system.urls["intake"],
                                        headers=bearer(tokens[who]))
        return clients[who]

    yield get
    for c in clients.values():
        c.close()


def _petition(division: str) -> dict:
    """A petition no other test's petitioner or content repeats (it must not be linked as a
    repeat or merged as a duplicate, here or there)."""
    tag = uuid.uuid4().int
    return {**PETITION, "division": division, "content": f"宅基地纠纷 {tag:x}",
            "petitioner": {**PETITION["petitioner"], "name": f"审计人{tag % 10**6}",
                           "id_number": f"{division}{tag % 10**11:011d}X"}}


@pytest.fixture(scope="module")
def case_330106(client):
    r = client("county_330106_clerk").post("/v1/petitions", json=_petition("330106"))
    assert r.status_code == 201, r.text
    case_id = r.json()["case_id"]
    wait_for(fully_processed(client("county_330106_clerk"), case_id), timeout=30)
    return case_id


@pytest.fixture(scope="module")
def case_330108(client):
    r = client("county_330108_clerk").post("/v1/petitions", json=_petition("330108"))
    assert r.status_code == 201, r.text
    return r.json()["case_id"]


def test_an_auditor_verifies_a_case(client, case_330106):
    r = client("province_auditor").get(f"/v1/cases/{case_330106}/verify")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ok"] is True and body["case_id"] == case_330106
    assert body["events"] >= 3 and body["head_version"] == body["events"]
    assert body["problem"] is None and body["verified_at"]


def test_verify_and_export_need_the_audit_permission(client, case_330106):
    clerk = client("county_330106_clerk")
    assert clerk.get(f"/v1/cases/{case_330106}").status_code == 200
    assert clerk.get(f"/v1/cases/{case_330106}/verify").status_code == 403
    assert clerk.get(f"/v1/cases/{case_330106}/export").status_code == 403
    assert clerk.get(f"/v1/cases/{case_330106}", params={"as_of": "1"}).status_code == 403


def test_an_auditor_of_another_county_cannot_see_the_case(client, case_330108):
    supervisor = client("county_330106_supervisor")  # may audit, but only in 330106
    for path in ("verify", "export"):
        assert supervisor.get(f"/v1/cases/{case_330108}/{path}").status_code == 404
    assert supervisor.get(f"/v1/cases/{case_330108}", params={"as_of": "1"}).status_code == 404
    assert client("province_auditor").get(f"/v1/cases/{case_330108}/verify").json()["ok"]
    assert client("province_auditor").get(
        "/v1/cases/00000000-0000-4000-8000-000000000000/verify").status_code == 404


def test_an_export_is_archivable_and_verifies_offline(client, case_330106, tmp_path, system):
    r = client("province_auditor").get(f"/v1/cases/{case_330106}/export")
    assert r.status_code == 200, r.text
    assert "attachment" in r.headers["content-disposition"]
    doc = r.json()
    assert doc["case_id"] == case_330106 and doc["verification"]["ok"] is True
    assert doc["exported_by"] == {"subject": "province-auditor", "role": "auditor",
                                  "jurisdiction": "330000"}
    assert datetime.fromisoformat(doc["exported_at"]).tzinfo is not None
    assert doc["head"]["version"] == len(doc["stored_events"]) == len(doc["history"])
    first = doc["stored_events"][0]
    assert first["version"] == 1 and len(bytes.fromhex(first["chain_hash"])) == 32
    assert first["topic"].endswith("Registered") and first["notification_id"] > 0
    assert doc["identity"] == "redacted" and doc["history"][0]["data"]["petitioner"] == "[redacted]"
    assert doc["summary"]["case_id"] == case_330106 and doc["summary"]["unit"]
    first_event = doc["stored_events"][0]
    assert doc["history"][0]["data"]["petitioner"] == "[redacted]" and first_event["state"]
    assert "审计人" not in r.text  # the petitioner's name appears nowhere

    path = tmp_path / "case.json"
    path.write_text(r.text, "utf-8")
    assert audit_cli(["verify-export", str(path), "--decode"]) == 0
    doc["stored_events"][0]["topic"] += "X"
    path.write_text(json.dumps(doc), "utf-8")
    assert audit_cli(["verify-export", str(path)]) == 1


def test_an_export_with_identity_is_recorded(client, case_330106, system):
    r = client("county_330106_supervisor").get(f"/v1/cases/{case_330106}/export")
    assert r.status_code == 200
    doc = r.json()
    assert doc["identity"] == "included"
    assert doc["history"][0]["data"]["petitioner"]["id_number"].startswith("330106")
    assert doc["history"][0]["data"]["petitioner"]["name"].startswith("审计人")
    with psycopg.connect(system.env["POSTGRES_DSN"]) as conn:
        reads = conn.execute("SELECT subject, purpose FROM identity_reads WHERE case_id = %s",
                             (case_330106,)).fetchall()
    assert ("supervisor-330106", "audit export") in reads


def test_a_case_as_it_stood_then(client, case_330106):
    auditor = client("province_auditor")
    now = auditor.get(f"/v1/cases/{case_330106}").json()
    assert now["unit"] is not None and now["version"] >= 3

    first = auditor.get(f"/v1/cases/{case_330106}", params={"as_of": "1"})
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["version"], body["status"], body["unit"]) == (1, "registered", None)
    assert body["case_number"] == now["case_number"] and body["as_of"]["version"] == 1

    at_registration = auditor.get(f"/v1/cases/{case_330106}",
                                  params={"as_of": now["registered_at"]}).json()
    assert at_registration["version"] == 1 and at_registration["unit"] is None
    latest = auditor.get(f"/v1/cases/{case_330106}",
                         params={"as_of": str(now["version"])}).json()
    assert {k: v for k, v in latest.items() if k != "as_of"} == now

    before = datetime.fromisoformat(now["registered_at"]) - timedelta(days=1)
    assert auditor.get(f"/v1/cases/{case_330106}",
                       params={"as_of": before.isoformat()}).status_code == 404
    # An unencoded '+' in the offset arrives as a space; still understood.
    raw = auditor.get(f"/v1/cases/{case_330106}?as_of=2020-01-01T00:00:00+08:00")
    assert raw.status_code == 404, raw.text
    assert auditor.get(f"/v1/cases/{case_330106}",
                       params={"as_of": "999"}).status_code == 404
    for bad in ("yesterday", "0", "2026-01-05T09:00:00", "x" * 65, "9" * 20, "²"):
        r = auditor.get(f"/v1/cases/{case_330106}", params={"as_of": bad})
        assert r.status_code == 422, (bad, r.text)
