"""The way in of every HTTP request: draining, URL and body refusals, then metrics."""
from __future__ import annotations

import asyncio

import httpx
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from petitions.infra.http import RequestGate

SERVICE = "gate-test"


def _gated(max_bytes: int = 64) -> tuple[RequestGate, asyncio.Event, list[bytes]]:
    seen: list[bytes] = []

    async def echo(request: Request) -> JSONResponse:
        seen.append(await request.body())
        return JSONResponse({"ok": True}, status_code=201)

    draining = asyncio.Event()
    app = Starlette(routes=[Route("/things", echo, methods=["POST", "GET"])])
    return RequestGate(app, service=SERVICE, draining=draining, max_bytes=max_bytes), \
        draining, seen


async def _post(app, body: bytes, headers: list[tuple[bytes, bytes]],
                path: str = "/things") -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        request = client.build_request("POST", path, content=body)
        request.headers.clear()
        for name, value in headers:
            request.headers[name.decode("latin-1")] = value.decode("latin-1")
        request.headers["content-length"] = str(len(body))
        return await client.send(request)


JSON = [(b"content-type", b"application/json")]


def _counted(status: str) -> float:
    return REGISTRY.get_sample_value("http_requests_total", {
        "service": SERVICE, "method": "POST", "route": "/things", "status": status}) or 0.0


async def test_a_json_body_within_the_limit_reaches_the_handler_and_is_counted() -> None:
    app, _, seen = _gated()
    before = _counted("201")
    r = await _post(app, b'{"a": 1}', JSON)
    assert r.status_code == 201 and seen == [b'{"a": 1}']
    assert _counted("201") == before + 1


async def test_bodies_are_refused_before_the_handler() -> None:
    app, _, seen = _gated(max_bytes=16)
    too_big = await _post(app, b'{"a": "' + b"x" * 32 + b'"}', JSON)
    not_json = await _post(app, b'{"a": 1}', [(b"content-type", b"text/plain")])
    nul = await _post(app, b'{"a": "\\u0000"}', JSON)
    assert [too_big.status_code, not_json.status_code, nul.status_code] == [413, 415, 422]
    assert seen == []


async def test_a_content_type_that_is_not_utf_8_is_a_415_not_a_crash() -> None:
    # Raw ASGI: HTTP clients refuse to send such a header, a hostile one need not.
    app, _, seen = _gated()
    scope = {"type": "http", "method": "POST", "path": "/things", "query_string": b"",
             "headers": [(b"content-type", b"application/json\xff"),
                         (b"content-length", b"2")]}
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    assert sent[0]["status"] == 415 and seen == []


async def test_the_last_content_type_sent_is_the_one_that_counts() -> None:
    app, _, seen = _gated()
    r = await _post(app, b"{}", [(b"content-type", b"text/plain"), *JSON])
    assert r.status_code == 201 and seen == [b"{}"]


async def test_once_draining_new_requests_get_503_and_probes_do_not() -> None:
    app, draining, seen = _gated()
    draining.set()
    r = await _post(app, b"{}", JSON)
    assert r.status_code == 503
    assert r.headers["retry-after"] == "2" and r.headers["connection"] == "close"
    assert seen == []
    probe = await _post(app, b"{}", JSON, path="/healthz")
    assert probe.status_code == 404  # past the gate, to the app (which has no such route)
