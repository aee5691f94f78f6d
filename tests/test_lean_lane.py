"""A lean lane answers what its fast path takes, inside the service's own gate and tracing,
and leaves everything else, refusals included, to FastAPI's own handling of the same route."""
from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI, Header, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from petitions.domain.access import Principal, Role
from petitions.domain.errors import RuleViolation
from petitions.infra.auth import TokenAuthority
from petitions.infra.http import REQUESTS, CompactJSONResponse, bearer_principal, build_app
from services.intake.lean_lane import add_lean_lane

KEY = b"k" * 32
MAX_BODY = 200


class Body(BaseModel):
    n: int


async def _ready() -> dict[str, bool]:
    return {"store": True}


def _app(taken: list[int]) -> FastAPI:
    """A service app (gate, tracing, error handlers) with one route and its lane: the fast
    path takes requests marked `x-way: fast`, and raises for a few numbers."""
    app = build_app("lane-test", "lane test", _ready, TokenAuthority(KEY),
                    max_body_bytes=MAX_BODY)

    async def endpoint(body: Body, x_way: str | None = Header(None)) -> dict[str, str]:
        return {"via": "standard", "n": str(body.n)}

    async def fast(request: Request) -> Response | None:
        if request.headers.get("x-way") != "fast":
            return None
        body = Body.model_validate_json(await request.body())
        if body.n == 403:
            raise HTTPException(403, detail="not yours", headers={"X-Why": "jurisdiction"})
        if body.n == 422:
            raise RuleViolation("a rule says no")
        if body.n == 500:
            raise LookupError("a bug")
        taken.append(body.n)
        return JSONResponse({"via": "fast", "n": str(body.n)}, status_code=201)

    app.router.add_api_route("/things", endpoint, methods=["POST"])
    add_lean_lane(app, "/things", "POST", fast)
    return app


async def _post(app: FastAPI, body: bytes, **headers: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.post("/things", content=body,
                                 headers={"content-type": "application/json", **headers})


def _counted(status: int) -> float:
    return REQUESTS.labels("lane-test", "POST", "/things", str(status))._value.get()


async def test_a_request_the_fast_path_takes_is_answered_by_it_alone() -> None:
    taken: list[int] = []
    before = _counted(201)
    response = await _post(_app(taken), b'{"n": 7}', **{"x-way": "fast"})
    assert (response.status_code, response.json()) == (201, {"via": "fast", "n": "7"})
    assert taken == [7]
    # Counted under its route, as the router would have named it.
    assert _counted(201) == before + 1


async def test_a_request_it_declines_goes_the_standard_way_body_and_all() -> None:
    taken: list[int] = []
    app = _app(taken)
    served = await _post(app, b'{"n": 8}')
    assert (served.status_code, served.json()) == (200, {"via": "standard", "n": "8"})
    # The body the fast path did not read, and a refusal that is FastAPI's own.
    refused = await _post(app, b'{"n": "eight"}')
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["body", "n"]
    assert taken == []


async def test_what_the_fast_path_raises_is_answered_by_the_apps_own_handlers() -> None:
    app = _app([])
    denied = await _post(app, b'{"n": 403}', **{"x-way": "fast"})
    assert (denied.status_code, denied.json()) == (403, {"detail": "not yours"})
    assert denied.headers["x-why"] == "jurisdiction"
    ruled = await _post(app, b'{"n": 422}', **{"x-way": "fast"})
    assert (ruled.status_code, ruled.json()) == (422, {"error": "a rule says no"})
    before = _counted(500)
    failed = await _post(app, b'{"n": 500}', **{"x-way": "fast"})
    assert failed.status_code == 500
    assert _counted(500) == before + 1


async def test_the_gate_stands_in_front_of_the_lane() -> None:
    taken: list[int] = []
    app = _app(taken)
    big = b'{"n": 9, "pad": "' + b"x" * MAX_BODY + b'"}'
    assert (await _post(app, big, **{"x-way": "fast"})).status_code == 413
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        text = await client.post("/things", content=b'{"n": 9}',
                                 headers={"content-type": "text/plain", "x-way": "fast"})
        other_method = await client.get("/things")
    assert text.status_code == 415
    assert other_method.status_code == 405  # not the lane's: the router's answer
    assert taken == []


def test_the_route_schema_is_the_standard_one() -> None:
    lean, plain = _app([]), build_app("plain", "lane test", _ready, TokenAuthority(KEY))

    async def endpoint(body: Body, x_way: str | None = Header(None)) -> dict[str, str]:
        return {}

    plain.router.add_api_route("/things", endpoint, methods=["POST"])
    assert lean.openapi()["paths"] == plain.openapi()["paths"]


@pytest.mark.parametrize("header, accepted", [
    ("Bearer {token}", True), ("bearer {token}", True), ("Basic {token}", False),
    ("Bearer", False), ("Bearer ", False), ("{token}", False), ("Bearer x{token}", False),
    ("", False)])
async def test_only_a_valid_bearer_token_names_the_caller(header: str, accepted: bool) -> None:
    authority = TokenAuthority(KEY)
    caller = Principal("clerk-1", Role.INTAKE_CLERK, "330106")
    token = authority.mint(caller)
    app = FastAPI()
    app.state.token_authority = authority
    scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"", "app": app,
             "headers": [(b"authorization", header.format(token=token).encode())]}
    found = await bearer_principal(Request(scope))
    assert (found == caller) if accepted else found is None


@pytest.mark.parametrize("content", [
    {"case_id": "9f1c", "status": "registered", "linked_as": None, "n": 3, "ok": True},
    {"text": "村里重新分配宅基地\u2028\"引号\"\\", "list": [1.5, -0.0, 10**20, []], "nested": {}},
])
def test_a_compact_json_response_is_byte_for_byte_a_json_response(content: dict) -> None:
    assert CompactJSONResponse(content).body == JSONResponse(content).body
