"""A request about one case names that case in its log lines; others name none. HTTP plumbing
only (the app is served in process; no store or bus is involved)."""
from __future__ import annotations

import asyncio
from uuid import uuid4

import httpx

from petitions.infra.auth import TokenAuthority
from petitions.infra.http import build_app
from petitions.infra.logs import CASE_ID
from petitions.infra.settings import CommonAuthSettings


def app_reporting_the_bound_case():
    async def ready() -> dict[str, bool]:
        return {"postgresql": True, "nats": True}

    app = build_app("probe", "Probe", ready,
                    TokenAuthority(CommonAuthSettings().auth_signing_key))

    @app.get("/v1/cases/{case_id}/probe")
    async def about_a_case(case_id: str) -> dict[str, str | None]:
        return {"bound": CASE_ID.get()}

    @app.get("/v1/sync-cases/{case_id}")
    def about_a_case_in_a_thread(case_id: str) -> dict[str, str | None]:
        return {"bound": CASE_ID.get()}

    @app.post("/v1/things")
    async def about_no_case() -> dict[str, str | None]:
        return {"bound": CASE_ID.get()}

    return app


async def test_a_route_naming_a_case_binds_it_and_others_bind_none() -> None:
    case_id = str(uuid4())
    transport = httpx.ASGITransport(app=app_reporting_the_bound_case())
    # Each request in a task of its own, as a server runs it: the in-process transport
    # would otherwise run the app in the test's context, and a binding would carry over.
    async with httpx.AsyncClient(transport=transport, base_url="http://probe") as client:
        for path in (f"/v1/cases/{case_id}/probe", f"/v1/sync-cases/{case_id}"):
            r = await asyncio.create_task(client.get(path))
            assert r.status_code == 200, r.text
            assert r.json() == {"bound": case_id}, path
        r = await asyncio.create_task(client.post("/v1/things", json={}))
        assert r.status_code == 200, r.text
        assert r.json() == {"bound": None}
