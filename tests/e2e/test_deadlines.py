"""The deadlines service as a process: the clocks a registered petition starts are listed by
jurisdiction from the timers table, and only there."""
from __future__ import annotations

import uuid

import httpx
import pytest

from tests.conftest import bearer
from tests.e2e.test_end_to_end import PETITION, wait_for

pytestmark = pytest.mark.e2e


def test_a_registered_petition_is_listed_with_its_acceptance_clock(system, tokens):
    intake = httpx.Client(base_url=system.urls["intake"],
                          headers=bearer(tokens["county_330106_clerk"]))
    deadlines = httpx.Client(base_url=system.urls["deadlines"])
    try:
        # Its own petitioner and content, so it is a new case rather than a repeat.
        petition = {**PETITION, "content": f"宅基地纠纷 {uuid.uuid4()}",
                    "petitioner": {"name": "王五",
                                   "id_number": f"3301061990{uuid.uuid4().int % 10**8:08d}"}}
        r = intake.post("/v1/petitions", json=petition)
        assert r.status_code == 201, r.text
        case_id = r.json()["case_id"]

        def listed(token: str):
            items = deadlines.get("/v1/deadlines", params={"limit": 1000},
                                  headers=bearer(tokens[token])).json()["items"]
            return [i for i in items if i["case_id"] == case_id]

        [item] = wait_for(lambda: listed("county_330106_clerk"), timeout=20)
        assert (item["clock"], item["state"], item["obligation"]) == (
            "acceptance", "running", "duty")
        assert item["unit_id"] == "bureau-330106"
        assert listed("county_330108_clerk") == []  # another county sees nothing of it
        assert deadlines.get("/v1/deadlines").status_code == 401
        case = intake.get(f"/v1/cases/{case_id}").json()
        assert "roll-forward: on" in case["deadlines"]["acceptance"]["explanation"]
        assert case["deadlines"]["acceptance"]["state"] == "running"
    finally:
        intake.close()
        deadlines.close()
