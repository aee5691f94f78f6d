"""A lane that takes well-formed requests of one route past FastAPI's per-request machinery.

Between the service's own outer layers (`RequestGate`, tracing) and a route's function,
FastAPI runs several layers per request: exception handling, an exit stack for dependencies,
the router's matching, the route's dependency solving and its body validation through generic
code. On petition registration, the route every petition takes, that was about a third of
intake's CPU per petition. A `LeanLane` sits innermost among the app's middleware (so the
gate's refusals, draining, metrics and the server span still cover it) and offers each request
of its route to a fast path, which answers a request it fully understands (token verified,
header read, body parsed and validated by pydantic straight from the JSON bytes) by calling
the route's own function. An exception it raises is answered by the app's own exception
handlers, as the route's would be. The fast path returns None for anything else, and the
request then goes FastAPI's way, body and all: every refusal (401, 422...) is FastAPI's own,
word for word. The route itself, its OpenAPI schema included, stays FastAPI's.
"""
from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from petitions.infra.http import replay_body

FastPath = Callable[[Request], Awaitable[Response | None]]


def add_lean_lane(app: FastAPI, path: str, method: str, fast: FastPath) -> None:
    """Offer requests of the route `method path` to `fast` first. Call before the app serves
    its first request (the middleware stack is built then)."""
    # Appended, not added with `add_middleware` (which puts a layer outermost): the lane must
    # run inside the gate and the tracing layer.
    app.user_middleware.append(Middleware(LeanLane, owner=app, path=path, method=method,
                                          fast=fast))


class LeanLane:
    """The ASGI layer `add_lean_lane` installs (see the module's docstring)."""

    def __init__(self, app: ASGIApp, *, owner: FastAPI, path: str, method: str,
                 fast: FastPath) -> None:
        self.app = app
        self.owner = owner
        self.path = path
        self.method = method
        self.fast = fast
        self._route: BaseRoute | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["path"] != self.path
                or scope["method"] != self.method):
            await self.app(scope, receive, send)
            return
        scope["route"] = self._own_route()  # as the router sets it: metrics and span name
        request = Request(scope, receive)
        response = await self._answer(request)
        if response is None:
            # Declined: FastAPI's way, with the body the fast path may have read.
            await self.app(scope, replay_body(await request.body(), receive), send)
            return
        await response(scope, receive, send)

    async def _answer(self, request: Request) -> Response | None:
        try:
            return await self.fast(request)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise  # unanswered, as from the route: the server's 500
            answered = handler(request, exc)
            return await answered if inspect.isawaitable(answered) else answered

    def _handler_for(self, exc: Exception) -> Callable[[Request, Any], Any] | None:
        """The app's handler for `exc`'s class or its nearest base, as the exception layer
        FastAPI builds from `exception_handlers` finds it."""
        handlers = self.owner.exception_handlers
        if isinstance(exc, HTTPException) and exc.status_code in handlers:
            return handlers[exc.status_code]
        for cls in type(exc).__mro__:
            if cls in handlers:
                return handlers[cls]
        return None

    def _own_route(self) -> BaseRoute | None:
        if self._route is None:
            self._route = next(
                (r for r in self.owner.router.routes
                 if getattr(r, "path", None) == self.path
                 and self.method in (getattr(r, "methods", None) or ())), None)
        return self._route
