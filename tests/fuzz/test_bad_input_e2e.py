"""Hand-picked bad input through the running system, for cases random generation rarely hits:
what REST accepts must be processed by every service, and what it refuses it refuses with a
4xx, never a 5xx."""
from __future__ import annotations

import base64
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import bearer

pytestmark = pytest.mark.e2e


def _id_number() -> str:
    return f"3301061990{uuid.uuid4().int % 10**8:08d}"


def _petition(**overrides: Any) -> dict[str, Any]:
    """A petition no earlier one repeats or duplicates (own petitioner, own content)."""
    body = {"channel": "letter", "category": "appeal", "division": "330106",
            "subject": "land", "content": f"宅基地纠纷 {uuid.uuid4()}",
            "requests": ["重新丈量"], "people_count": 1,
            "petitioner": {"name": "张三", "id_number": _id_number()}}
    body.update(overrides)
    return body


@pytest.fixture
def clerk(fuzz_system, tokens):
    with httpx.Client(base_url=fuzz_system.urls["intake"],
                      headers=bearer(tokens["county_330106_clerk"]), timeout=30) as client:
        yield client


def _wait(check, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def _listed(clerk: httpx.Client, case_id: str) -> bool:
    r = clerk.get("/v1/cases", params={"division": "330106", "page_size": 200})
    assert r.status_code == 200, r.text
    return case_id in {c["case_id"] for c in r.json()["items"]}


@pytest.mark.parametrize("field", ["subject", "content", "requests", "petitioner.name"])
def test_nul_characters_are_refused_or_carried_through_everything(clerk, field):
    """U+0000 is valid JSON; PostgreSQL text and jsonb cannot hold it. A petition carrying one
    is either refused (422) or registered AND projected, and the projection keeps going for
    the petitions after it."""
    value = "before\u0000after"
    if field == "requests":
        body = _petition(requests=[value])
    elif field == "petitioner.name":
        body = _petition(petitioner={"name": value, "id_number": _id_number()})
    else:
        body = _petition(**{field: value})
    r = clerk.post("/v1/petitions", json=body)
    assert r.status_code in (201, 422), r.text
    after = clerk.post("/v1/petitions", json=_petition())
    assert after.status_code == 201, after.text
    problems = []
    if not _wait(lambda: _listed(clerk, after.json()["case_id"])):
        problems.append(f"the projection stopped after a petition with U+0000 in {field}")
    if r.status_code == 201 and not _listed(clerk, r.json()["case_id"]):
        problems.append(f"case {r.json()['case_id']} with U+0000 in {field} was registered "
                        f"(201) but never reached the case list")
    assert not problems, "; ".join(problems)


def test_a_page_token_that_decodes_to_no_position_is_a_400(clerk):
    token = base64.urlsafe_b64encode(b"p:99999999999999999999").decode().rstrip("=")
    r = clerk.get("/v1/cases", params={"page_token": token})
    assert r.status_code == 400, (r.status_code, r.text)


@pytest.mark.parametrize("received_at", ["0001-01-01T00:00:00+23:00", "0001-01-01T00:00:00Z",
                                         "1900-02-29T12:00:00+08:00"])
def test_an_accepted_received_at_gets_its_acceptance_deadline(clerk, received_at):
    """Whatever received_at intake accepts, the deadlines service can start the acceptance
    clock from; otherwise intake must refuse it."""
    r = clerk.post("/v1/petitions", json=_petition(received_at=received_at))
    assert r.status_code in (201, 422), r.text
    if r.status_code == 422:
        return
    case_id = r.json()["case_id"]

    def timed() -> bool:
        case = clerk.get(f"/v1/cases/{case_id}").json()
        return "acceptance" in (case.get("deadlines") or {})

    assert _wait(timed, 20), (
        f"received_at={received_at} was accepted (201) but the acceptance clock never started")


@pytest.mark.parametrize("body", [b"\xff\xfe not utf-8", b'{"channel": ', b"[]", b"null",
                                  b'{"channel": "letter"}' * 1000, b"{" * 5000 + b"}" * 5000])
def test_malformed_bodies_are_4xx(clerk, body):
    r = clerk.post("/v1/petitions", content=body, headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])


def test_an_oversized_body_is_413(clerk, fuzz_system):
    big = _petition(content="字" * 600_000)  # over 1 MiB of UTF-8
    r = clerk.post("/v1/petitions", json=big)
    assert r.status_code in (413, 422), (r.status_code, r.text[:300])


@pytest.mark.parametrize("header", ["Bearer", "Basic abc", "Bearer a.b.c",
                                    "Bearer " + "A" * 8000, "bearer\tx"])
def test_bad_authorization_headers_are_401(fuzz_system, header):
    r = httpx.get(f"{fuzz_system.urls['intake']}/v1/cases", headers={"Authorization": header},
                  timeout=30)
    assert r.status_code in (401, 431), (r.status_code, r.text[:300])


@pytest.mark.parametrize("header", ["Bearer", "Basic abc", "Bearer a.b.c", "bearer\tx"])
def test_a_registration_with_a_bad_token_is_401(fuzz_system, header):
    r = httpx.post(f"{fuzz_system.urls['intake']}/v1/petitions", json=_petition(),
                   headers={"Authorization": header}, timeout=30)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer", r.text[:300]


def test_registration_refusals_name_what_is_wrong(clerk):
    """Refused registrations get FastAPI's validation answer: where, and what."""
    long_key = clerk.post("/v1/petitions", json=_petition(),
                          headers={"Idempotency-Key": "k" * 201})
    assert long_key.status_code == 422
    assert [e["loc"] for e in long_key.json()["detail"]] == [["header", "idempotency-key"]]
    body = _petition()
    del body["channel"]
    no_channel = clerk.post("/v1/petitions", json=body)
    assert no_channel.status_code == 422
    assert [e["loc"] for e in no_channel.json()["detail"]] == [["body", "channel"]]
    # The longest key taken, and a well-formed petition: registered.
    longest = "k" * 168 + uuid.uuid4().hex  # 200 characters, new on every run
    taken = clerk.post("/v1/petitions", json=_petition(), headers={"Idempotency-Key": longest})
    assert taken.status_code == 201, taken.text[:300]
