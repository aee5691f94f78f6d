"""HTTP plumbing every service shares: health, readiness, metrics, limits, error mapping."""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import uvicorn
from eventsourcing.persistence import InterfaceError as StoreInterfaceError
from eventsourcing.persistence import OperationalError as StoreOperationalError
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from petitions.domain.access import AccessDenied, Principal
from petitions.domain.errors import IllegalTransition, RuleViolation
from petitions.infra import tracing
from petitions.infra.asgi import StatusNoted
from petitions.infra.auth import InvalidToken, TokenAuthority
from petitions.infra.http_protocol import HeadWithBodyProtocol
from petitions.infra.logs import bind_case
from petitions.infra.store import ConcurrencyConflict

log = logging.getLogger(__name__)

REQUESTS = Counter("http_requests_total", "HTTP requests", ["service", "method", "route", "status"])
LATENCY = Histogram("http_request_seconds", "HTTP request latency", ["service", "method", "route"])

BODY_METHODS = {"POST", "PUT", "PATCH"}


class RequestGate:
    """Every HTTP request's way in, as one plain ASGI layer rather than three (each layer is
    a coroutine per request, and the metrics' also wrapped every message sent). In order:

    - once shutdown has begun, new requests (not probes) get 503 with Retry-After and
      `Connection: close`; requests already in flight are past this point and finish;
    - U+0000 in the path or query is refused (PostgreSQL text cannot hold it);
    - a body is refused before any handler runs when it is oversized (413), not JSON (415)
      or holds U+0000;
    - what passes is counted and timed per route (`http_requests_total`,
      `http_request_seconds`)."""

    def __init__(self, app: ASGIApp, *, service: str, draining: asyncio.Event,
                 max_bytes: int) -> None:
        self.app = app
        self.service = service
        self.draining = draining
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.draining.is_set() and scope["path"] not in PROBE_PATHS:
            response = JSONResponse({"error": "shutting down; retry later"}, status_code=503,
                                    headers={"Retry-After": "2", "Connection": "close"})
            await response(scope, receive, send)
            return
        if _nul_in_url(scope):
            await _send_nul_refusal(send, "query")
            return
        if scope["method"] in BODY_METHODS:
            body = await self._checked_body(scope, receive, send)
            if body is None:
                return  # refused
            receive = replay_body(body, receive)
        await self._measured(scope, receive, send)

    async def _checked_body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The request's body, or None once a refusal is sent."""
        length, ctype = _length_and_type(scope)
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await _send_error(send, 413, f"body is larger than {self.max_bytes} bytes")
            return None
        if ctype.split(";")[0].strip().lower() != "application/json":
            await _send_error(send, 415, "content type must be application/json")
            return None
        body = await self._read_body(receive)
        if body is None:
            await _send_error(send, 413, f"body is larger than {self.max_bytes} bytes")
            return None
        # PostgreSQL text and jsonb cannot hold U+0000: refuse it before anything is written.
        if b"\x00" in body or b"\\u0000" in body:
            await _send_nul_refusal(send, "body")
            return None
        return body

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body (at most max_bytes; None when larger)."""
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return bytes(body)
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                return None
            if not message.get("more_body", False):
                return bytes(body)

    async def _measured(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        noted = StatusNoted(send)
        try:
            await self.app(scope, receive, noted)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            REQUESTS.labels(self.service, method, route, str(noted.status)).inc()
            LATENCY.labels(self.service, method, route).observe(time.perf_counter() - start)


def _length_and_type(scope: Scope) -> tuple[str | None, str]:
    """Content-Length (None when absent) and Content-Type ("" when absent); the last of each
    when sent twice. Names arrive lower-cased (ASGI); values are read as latin-1, which any
    bytes decode as."""
    length, ctype = None, ""
    for name, value in scope["headers"]:
        if name == b"content-length":
            length = value.decode("latin-1")
        elif name == b"content-type":
            ctype = value.decode("latin-1")
    return length, ctype


def _nul_in_url(scope: Scope) -> bool:
    """U+0000 anywhere in the path or query (PostgreSQL text cannot hold it)."""
    query = scope.get("query_string", b"").lower()
    return b"%00" in query or b"\x00" in query or "\x00" in scope.get("path", "")


async def _send_nul_refusal(send: Send, where: str) -> None:
    await _send_json(send, 422, {"detail": [{
        "loc": [where], "msg": "text may not contain the NUL character (U+0000)",
        "type": "value_error"}]})


def replay_body(body: bytes, receive: Receive) -> Receive:
    """`receive` for a request whose body was read already: the body once, then `receive`."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


class CompactJSONResponse(JSONResponse):
    """JSONResponse's very bytes, written by one encoder kept between responses: JSONResponse
    calls `json.dumps` with options, which builds a new encoder for every response."""

    ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, indent=None,
                               separators=(",", ":"))

    def render(self, content: Any) -> bytes:
        return self.ENCODER.encode(content).encode("utf-8")


PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

# Newer FastAPI traces, meters and logs natively as soon as a tracer provider is set. Ours is
# tracing.TracingMiddleware (probes untraced, case ids on spans); FastAPI's own log records of
# validation failures would carry petition input, so its native telemetry stays off.
_NO_NATIVE_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False,
                   "operation_spans": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters else {})


class CaseRoute(APIRoute):
    """A route whose path names a case (`{case_id}`) names it in every log line and in the
    trace of its requests. Done by the route rather than as an app-wide dependency: FastAPI
    resolves each dependency on every request of every route, petition registrations
    included, which name no case in their path."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()
        if "case_id" not in self.param_convertors:
            return handler

        async def handle_naming_the_case(request: Request) -> Response:
            case_id = request.path_params.get("case_id")
            if case_id:
                bind_case(case_id)
                tracing.annotate_case(case_id)
            return await handler(request)

        return handle_naming_the_case


async def _send_error(send: Send, status: int, detail: str) -> None:
    await _send_json(send, status, {"error": detail})


async def _send_json(send: Send, status: int, content: dict[str, Any]) -> None:
    response = JSONResponse(content, status_code=status)
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <token>")


async def current_principal(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),  # noqa: B008
) -> Principal:
    """The authenticated caller; 401 without a valid bearer token."""
    try:
        return _verified(request, credentials)
    except InvalidToken as exc:
        raise HTTPException(401, detail=f"unauthenticated: {exc}",
                            headers={"WWW-Authenticate": "Bearer"}) from exc


async def bearer_principal(request: Request) -> Principal | None:
    """The caller `current_principal` finds, read the same way outside FastAPI's dependency
    solving; None where it would answer 401."""
    try:
        return _verified(request, await _bearer(request))
    except InvalidToken:
        return None


def _verified(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    if credentials is None:
        raise InvalidToken("missing bearer token")
    authority: TokenAuthority = request.app.state.token_authority
    return authority.verify(credentials.credentials)


def build_app(service: str, title: str, ready: Callable[[], Awaitable[dict[str, bool]]],
              authority: TokenAuthority, *, max_body_bytes: int = 1024 * 1024) -> FastAPI:
    app = FastAPI(title=title, version="1.0.0",
                  responses={400: {"description": "the body is not valid UTF-8 JSON"}},
                  **_NO_NATIVE_TELEMETRY)
    app.router.route_class = CaseRoute  # before any route is added
    app.state.token_authority = authority
    app.state.draining = asyncio.Event()
    _add_probes(app, ready)
    _add_error_handlers(app)
    app.add_middleware(RequestGate, service=service, draining=app.state.draining,
                       max_bytes=max_body_bytes)
    # Outermost: the server span covers everything below, 413/415/503 answers included.
    app.add_middleware(tracing.TracingMiddleware, service=service)
    return app


def _add_probes(app: FastAPI, ready: Callable[[], Awaitable[dict[str, bool]]]) -> None:
    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", tags=["ops"])
    async def readyz() -> JSONResponse:
        checks = await ready()
        if app.state.draining.is_set():
            checks["accepting"] = False  # shutting down
        ok = all(checks.values())
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(IllegalTransition)
    async def illegal(_: Request, exc: IllegalTransition) -> JSONResponse:
        return JSONResponse(status_code=409, content={
            "error": str(exc), "current_state": exc.current_state, "allowed_actions": exc.allowed,
        })

    @app.exception_handler(AccessDenied)
    async def denied(_: Request, exc: AccessDenied) -> JSONResponse:
        return JSONResponse(status_code=403, content={"error": str(exc)})

    @app.exception_handler(RuleViolation)
    async def rule(_: Request, exc: RuleViolation) -> JSONResponse:
        return JSONResponse(status_code=422, content={"error": str(exc)})

    # The database or broker is away (e.g. PostgreSQL restarting): 503 with Retry-After, never
    # 500. asyncpg raises InternalClientError when a pooled connection dies mid-query, and
    # AdminShutdown/CannotConnectNow while the server shuts down or starts.
    unavailable = (ConcurrencyConflict, StoreOperationalError, StoreInterfaceError,
                   asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError,
                   asyncpg.InterfaceError, asyncpg.InternalClientError, asyncpg.AdminShutdownError,
                   asyncpg.TooManyConnectionsError, ConnectionError, OSError,
                   asyncio.TimeoutError)
    for exc_type in unavailable:
        app.add_exception_handler(exc_type, _unavailable)


async def _unavailable(_: Request, exc: Exception) -> JSONResponse:
    log.warning("dependency unavailable: %s", exc)
    return JSONResponse(status_code=503, headers={"Retry-After": "2"},
                        content={"error": "temporarily unavailable, retry later"})


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM after its shutdown, which makes the process exit by signal;
    the composition root owns signals instead, so a clean stop exits 0."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_http(app: FastAPI, host: str, port: int,
                     on_signal: Callable[[], None] | None = None, *,
                     drain_seconds: float = 0.0) -> None:
    """Serve until SIGTERM/SIGINT: `on_signal` runs first and readiness goes false; for
    `drain_seconds` new requests get 503 (Retry-After) while those in flight go on; then
    uvicorn stops accepting connections and finishes the requests in flight. A second signal
    skips the rest of the drain."""
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                            timeout_graceful_shutdown=15, lifespan="off",
                            http=HeadWithBodyProtocol)
    server = _Server(config)

    draining: asyncio.Event | None = getattr(app.state, "draining", None)

    def close_listener() -> None:
        server.should_exit = True

    def stop() -> None:
        if draining is not None and draining.is_set():
            close_listener()  # a second signal: no more waiting
            return
        log.info("shutdown requested: not ready; draining for %.1fs", drain_seconds)
        if draining is not None:
            draining.set()
        if on_signal is not None:
            on_signal()
        if drain_seconds > 0:
            loop.call_later(drain_seconds, close_listener)
        else:
            close_listener()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    await server.serve()
