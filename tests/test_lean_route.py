"""A lean route answers what its fast path takes and leaves everything else, refusals
included, to FastAPI's own handling of the same route."""
from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI, Header, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from petitions.domain.access import Principal, Role
from petitions.infra.auth import TokenAuthority
from petitions.infra.http import bearer_principal
from services.intake.lean_route import lean_route

KEY = b"k" * 32


class Body(BaseModel):
    n: int


def _app(taken: list[int]) -> FastAPI:
    app = FastAPI()

    async def endpoint(body: Body, x_way: str | None = Header(None)) -> dict[str, str]:
        return {"via": "standard", "n": str(body.n)}

    async def fast(request: Request) -> Response | None:
        if request.headers.get("x-way") != "fast":
            return None
        body = Body.model_validate_json(await request.body())
        taken.append(body.n)
        return JSONResponse({"via": "fast", "n": str(body.n)}, status_code=201)

    app.router.add_api_route("/things", endpoint, methods=["POST"],
                             route_class_override=lean_route(fast))
    return app


async def _post(app: FastAPI, body: bytes, **headers: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.post("/things", content=body,
                                 headers={"content-type": "application/json", **headers})


async def test_a_request_the_fast_path_takes_is_answered_by_it_alone() -> None:
    taken: list[int] = []
    response = await _post(_app(taken), b'{"n": 7}', **{"x-way": "fast"})
    assert (response.status_code, response.json()) == (201, {"via": "fast", "n": "7"})
    assert taken == [7]


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


def test_the_route_schema_is_the_standard_one() -> None:
    lean, plain = _app([]), FastAPI()

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
