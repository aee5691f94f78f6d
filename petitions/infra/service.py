"""The run loop shared by the consuming services: start the runtime, serve HTTP, stop cleanly."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi import FastAPI

from petitions.infra.auth import TokenAuthority
from petitions.infra.collector import settle_after_start_up
from petitions.infra.http import build_app, serve_http
from petitions.infra.logs import configure_logging
from petitions.infra.runtime import Runtime
from petitions.infra.settings import CommonSettings


async def run_service(name: str, title: str, settings: CommonSettings,
                      wire: Callable[[Runtime, FastAPI], Awaitable[None] | None]) -> None:
    """Build adapters, let `wire` add consumers and routes, serve until SIGTERM, then stop."""
    configure_logging(name, settings.log_level)
    runtime = await Runtime.start(name, settings)
    app = build_app(name, title, runtime.ready, TokenAuthority(settings.auth_signing_key))
    try:
        maybe = wire(runtime, app)
        if maybe is not None:
            await maybe
        settle_after_start_up()
        await serve_http(app, settings.http_host, settings.http_port,  # type: ignore[attr-defined]
                         on_signal=runtime.stopping.set, drain_seconds=settings.shutdown_drain_s)
    finally:
        await runtime.stop()


def run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run a service's main coroutine on libuv's event loop (uvloop) when it is installed,
    else on asyncio's own. The services are event-loop bound (sockets to PostgreSQL, NATS and
    HTTP clients on every request and message), and asyncio's pure-Python transports cost
    them several times what libuv's do."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)
