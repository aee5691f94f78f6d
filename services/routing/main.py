"""Composition root of the routing service."""
from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from fastapi import FastAPI

from petitions.domain.routing_config import ROUTING_CONFIGURATION_ID
from petitions.infra.batching import consume_batches
from petitions.infra.runtime import Runtime
from petitions.infra.service import run_event_loop, run_service
from petitions.infra.settings import RoutingSettings
from services.routing.api import mount_routing_routes
from services.routing.configuration import ConfigurationHolder
from services.routing.handler import RoutingHandler

log = logging.getLogger(__name__)


async def follow_configuration(runtime: Runtime, holder: ConfigurationHolder,
                               handler: RoutingHandler, interval: float) -> None:
    """Install changes another replica published (the store is the source of truth)."""
    while not runtime.stopping.is_set():
        try:
            await asyncio.wait_for(runtime.stopping.wait(), interval)
        except TimeoutError:
            pass
        try:
            stored = await runtime.pool.fetchval(
                "SELECT max(originator_version) FROM cases_events WHERE originator_id = $1",
                ROUTING_CONFIGURATION_ID)
            if stored and stored > holder.snapshot().version:
                await asyncio.to_thread(holder.reload)
                handler.directory = holder.directory()
        except Exception:  # a database blip: try again next round
            log.warning("could not check the routing configuration", exc_info=True)


def utc_now() -> datetime:
    return datetime.now(UTC)


def main() -> None:
    settings = RoutingSettings()

    async def wire(runtime: Runtime, app: FastAPI) -> None:
        holder = ConfigurationHolder(runtime.store, utc_now)
        await asyncio.to_thread(holder.load_or_seed, settings.directory_file, settings.rules_file)
        handler = RoutingHandler(runtime.store, holder.router, holder.directory(), utc_now,
                                 runtime.pool)
        consume_batches(runtime, "routing", ["Registered", "TransferredToJurisdiction"],
                        handler.on_batch, linger=settings.consumer_linger_s,
                        linger_when_quiet=False)
        runtime.spawn(follow_configuration(runtime, holder, handler, settings.config_poll_s),
                      "configuration")
        mount_routing_routes(app, runtime.store, holder, utc_now,
                             settings.identity_hash_key.encode())

    run_event_loop(run_service("routing", "Petition routing", settings, wire))


if __name__ == "__main__":
    main()
