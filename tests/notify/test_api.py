"""Notify's REST API: documents (HTML and PDF), dead letters and their replay, emergency
reports; bearer tokens and jurisdiction scoping."""
from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from uuid import UUID

import httpx
import pytest

from petitions.infra.auth import TokenAuthority
from petitions.infra.http import build_app
from petitions.infra.identity import IdentityReads
from petitions.infra.settings import CommonAuthSettings
from services.notify.api import mount_routes
from tests.conftest import bearer
from tests.notify.conftest import (
    PETITIONER,
    accepted,
    history_types,
    notices,
    registered,
    routed,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def api(notifier, notify_pool):
    async def ready() -> dict[str, bool]:
        return {"postgresql": True, "nats": True}

    app = build_app("notify", "Petition notices", ready,
                    TokenAuthority(CommonAuthSettings().auth_signing_key))
    mount_routes(app, notifier, IdentityReads(notify_pool), lambda: datetime.now(UTC))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://notify") as client:
        yield client


async def save(store, case):
    await asyncio.to_thread(store.save, case)
    return case


EMERGENCY = {"occurred_at": "2026-09-29T09:15:00+08:00", "place": "区政府东门",
             "scale": "约30人聚集，情绪激动", "people": "转塘街道某村村民",
             "cause": "宅基地分配争议", "requests": ["要求区长接见"],
             "nature": "集体访，可能引发群体性事件"}


async def test_emergency_report_is_appended_and_sent_to_the_bureau_at_once(
        api, tokens, notify_store, webhook_sink, smtp_server, sms_gateway):
    case = await save(notify_store, routed(registered()))
    r = await api.post(f"/v1/cases/{case.id}/emergency-reports", json=EMERGENCY,
                       headers=bearer(tokens["county_330106_clerk"]))
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 3
    assert {(d["recipient"], d["channel"]) for d in r.json()["deliveries"]} == {
        ("bureau-330106", "webhook"), ("bureau-330106", "email"),
        ("leader:leader-330106", "sms"), ("leader:leader-330106", "email")}
    assert history_types(notify_store, case.id)[2] == "EmergencyReported"

    bodies = await wait_until(lambda: [b for b in webhook_sink.for_case(str(case.id))
                                       if b["kind"] == "emergency_report"])
    html = bodies[0]["documents"][0]["html"]
    for part in ("紧急情况报告", "区政府东门", "约30人聚集", "宅基地分配争议", "要求区长接见"):
        assert part in html
    assert bodies[0]["recipient"] == "bureau-330106"
    await wait_until(lambda: len(sms_gateway.to("13900000006")) >= 1)
    assert "区政府东门" in sms_gateway.to("13900000006")[-1]["text"]

    # a handling unit may not report; another county sees no such case; bad input is refused
    unit = await api.post(f"/v1/cases/{case.id}/emergency-reports", json=EMERGENCY,
                          headers=bearer(tokens["unit_land_330106"]))
    assert unit.status_code == 403
    other = await api.post(f"/v1/cases/{case.id}/emergency-reports", json=EMERGENCY,
                           headers=bearer(tokens["county_330108_supervisor"]))
    assert other.status_code == 404
    bad = await api.post(f"/v1/cases/{case.id}/emergency-reports",
                         json={**EMERGENCY, "place": ""},
                         headers=bearer(tokens["county_330106_supervisor"]))
    assert bad.status_code == 422
    naive = await api.post(f"/v1/cases/{case.id}/emergency-reports",
                           json={**EMERGENCY, "occurred_at": "2026-09-29T09:15:00"},
                           headers=bearer(tokens["county_330106_supervisor"]))
    assert naive.status_code == 422
    assert (await api.post(f"/v1/cases/{case.id}/emergency-reports", json=EMERGENCY)
            ).status_code == 401
    assert history_types(notify_store, case.id).count("EmergencyReported") == 1


async def test_documents_are_listed_and_served_as_html_and_pdf(api, tokens, notifier,
                                                             notify_store, notify_pool):
    case = await save(notify_store, accepted(routed(registered())))
    await notifier.handle_event(case.id, 3)
    clerk = bearer(tokens["county_330106_clerk"])
    listing = (await api.get(f"/v1/cases/{case.id}/documents", headers=clerk)).json()
    docs = {d["kind"]: d for d in listing["documents"]}
    assert set(docs) == {"acceptance_notice", "assignment_slip"}
    assert docs["acceptance_notice"]["addressed_to_petitioner"] is True
    assert {d["channel"] for d in listing["deliveries"]} == {"sms", "webhook"}

    slip = docs["assignment_slip"]
    r = await api.get(slip["href"], headers={**clerk, "Accept": "text/html"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "交办单" in r.text and slip["digest"] in r.headers["etag"]
    pdf = await api.get(slip["href"], headers={**clerk, "Accept": "application/pdf"})
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF") and b"STSong-Light" in pdf.content
    stored = await notify_pool.fetchval("SELECT pdf IS NOT NULL FROM documents WHERE id = $1",
                                        UUID(slip["document_id"]))
    assert stored
    assert (await api.get(slip["href"], headers={**clerk, "Accept": "image/png"})
            ).status_code == 406

    # the petitioner's notice: identity inside, so READ_IDENTITY and a recorded read
    notice = docs["acceptance_notice"]
    r = await api.get(notice["href"], headers=clerk)
    assert r.status_code == 200 and PETITIONER.name in r.text
    reads = await notify_pool.fetch("SELECT subject, purpose FROM identity_reads "
                                    "WHERE case_id = $1", case.id)
    assert [(x["subject"], x["purpose"]) for x in reads] == [
        ("clerk-330106", "notify document acceptance_notice")]
    # at rest it is encrypted
    raw = await notify_pool.fetchval("SELECT html FROM documents WHERE id = $1",
                                     UUID(notice["document_id"]))
    assert PETITIONER.name not in raw
    unit = bearer(tokens["unit_land_330106"])
    assert (await api.get(notice["href"], headers=unit)).status_code == 403
    assert (await api.get(slip["href"], headers=unit)).status_code == 200

    # outside the caller's jurisdiction the case does not exist
    other = bearer(tokens["county_330108_clerk"])
    assert (await api.get(f"/v1/cases/{case.id}/documents", headers=other)).status_code == 404
    assert (await api.get(slip["href"], headers=other)).status_code == 404
    city = bearer(tokens["city_330100_supervisor"])
    assert (await api.get(slip["href"], headers=city)).status_code == 200
    missing = f"/v1/cases/{case.id}/documents/00000000-0000-4000-8000-000000000000"
    assert (await api.get(missing, headers=clerk)).status_code == 404
    assert (await api.get(f"/v1/cases/{case.id}/documents")).status_code == 401


async def test_dead_letters_are_listed_and_replayed_by_an_administrator(
        api, tokens, notify_store, notifier, webhook_sink):
    webhook_sink.modes["/units/housing-330106"] = "fail"
    case = await save(notify_store, routed(registered(), unit_id="housing-330106"))
    await notifier.handle_event(case.id, 2)
    await wait_until(lambda: "NoticeDeadLettered" in history_types(notify_store, case.id))
    admin = bearer(tokens["province_admin"])

    async def listed() -> list:
        # the delivery row is settled just after the case records the dead letter
        items = (await api.get("/v1/dead-letters", headers=admin,
                               params={"division": "330106"})).json()["items"]
        return [i for i in items if i["case_id"] == str(case.id)]

    mine = await wait_until(listed)
    assert len(mine) == 1 and mine[0]["attempts"] == 3
    assert (await api.get("/v1/dead-letters", headers=bearer(
        tokens["county_330106_supervisor"]))).status_code == 403
    assert not [i for i in (await api.get("/v1/dead-letters", headers=admin, params={
        "division": "330108"})).json()["items"] if i["case_id"] == str(case.id)]

    webhook_sink.modes.pop("/units/housing-330106")
    r = await api.post(f"/v1/dead-letters/{mine[0]['id']}/replay", headers=admin, json={})
    assert r.status_code == 202, r.text
    assert r.json()["idempotency_key"] == f"{case.id}:2:housing-330106:webhook"
    await wait_until(lambda: "NoticeDelivered" in history_types(notify_store, case.id))
    requeued = [d for t, d in notices(notify_store, case.id) if t == "NoticeRequeued"]
    assert requeued[0]["actor"]["id"] == "province-admin"
    assert (await api.post(f"/v1/dead-letters/{mine[0]['id']}/replay", headers=admin,
                           json={})).status_code == 409
    assert (await api.post("/v1/dead-letters/00000000-0000-4000-8000-000000000000/replay",
                           headers=admin, json={})).status_code == 404
    assert len(webhook_sink.for_case(str(case.id))) == 1
