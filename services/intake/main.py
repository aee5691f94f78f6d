"""Composition root of the intake service: REST and gRPC front door, the case summary
projection, and (like every service) a relay candidate."""
from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime

from petitions.domain.calendar import calendar_from_chinese_calendar
from petitions.infra.auth import TokenAuthority
from petitions.infra.collector import settle_after_start_up
from petitions.infra.committer import GroupCommit
from petitions.infra.http import build_app, serve_http
from petitions.infra.logs import configure_logging
from petitions.infra.projection import CaseSummaryProjection
from petitions.infra.runtime import Runtime
from petitions.infra.service import run_event_loop
from petitions.infra.settings import REPO_ROOT, IntakeSettings
from petitions.infra.tracing import GrpcServerTracing
from services.intake.api import mount_routes
from services.intake.lifecycle_api import mount_lifecycle_routes
from services.intake.audit_api import mount_audit_routes
from services.intake.auditing import CaseAuditing
from services.intake.lifecycle import CaseLifecycle
from services.intake.matching import OpenCaseFinder
from services.intake.queries import CaseQueries
from services.intake.registration import Registrar
from services.intake.registration_batches import RegistrationBatches


def utc_now() -> datetime:
    return datetime.now(UTC)


async def main() -> None:
    settings = IntakeSettings()
    configure_logging("intake", settings.log_level)
    runtime = await Runtime.start("intake", settings)
    registrations = RegistrationBatches(OpenCaseFinder(runtime.pool),
                                        GroupCommit(runtime.store, pool=runtime.pool))
    registrar = Registrar(runtime.store, registrations, settings.identity_hash_key.encode())
    queries = CaseQueries(runtime.pool, runtime.store)
    projection = CaseSummaryProjection(runtime.pool, runtime.log)
    runtime.spawn(projection.run(runtime.stopping), "projection")

    authority = TokenAuthority(settings.auth_signing_key)
    app = build_app("intake", "Petition intake", runtime.ready, authority,
                    max_body_bytes=settings.max_body_bytes)
    mount_routes(app, registrar, queries, utc_now)
    calendar = calendar_from_chinese_calendar()
    mount_lifecycle_routes(app, runtime.store, queries, calendar, utc_now)
    mount_audit_routes(app, queries, runtime.store, runtime.pool, utc_now)

    # gRPC runs the same lifecycle and audit operations as REST.
    lifecycle = CaseLifecycle(runtime.store, queries, calendar, utc_now)
    auditing = CaseAuditing(queries, runtime.store, runtime.pool, utc_now)
    grpc_server = await _start_grpc(registrar, queries, authority, settings, lifecycle,
                                    auditing)
    from services.intake.grpc_api import stop_grpc_server

    grpc_stopped: list[asyncio.Task[None]] = []

    def on_signal() -> None:
        # Readiness goes false; gRPC reports NOT_SERVING and refuses new calls at once while
        # calls in flight finish (REST drains in serve_http).
        runtime.stopping.set()
        grpc_stopped.append(asyncio.ensure_future(stop_grpc_server(grpc_server, grace=10)))

    settle_after_start_up()
    try:
        await serve_http(app, settings.http_host, settings.http_port,
                         on_signal=on_signal, drain_seconds=settings.shutdown_drain_s)
    finally:
        runtime.stopping.set()
        if grpc_stopped:
            await grpc_stopped[0]
        else:
            await stop_grpc_server(grpc_server, grace=10)
        # Registrations taken by requests that finished are committed before the pools close.
        await registrations.stop()
        await runtime.stop()


async def _start_grpc(registrar: Registrar, queries: CaseQueries, authority: TokenAuthority,
                      settings: IntakeSettings, lifecycle: CaseLifecycle,
                      auditing: CaseAuditing):
    # Generated protobuf modules live in gen/ (built by `make proto`, never committed).
    sys.path.insert(0, str(REPO_ROOT / "gen"))
    from services.intake.grpc_api import IntakeServicer, build_grpc_server
    from services.intake.grpc_lifecycle import CaseAuditServicer, CaseLifecycleServicer

    server = build_grpc_server(IntakeServicer(registrar, queries, authority, utc_now),
                               settings.http_host, settings.grpc_port,
                               also=(CaseLifecycleServicer(lifecycle, authority),
                                     CaseAuditServicer(auditing, authority)),
                               interceptors=(GrpcServerTracing("intake"),))
    await server.start()
    return server


if __name__ == "__main__":
    run_event_loop(main())
