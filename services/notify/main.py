"""Composition root of the notify service."""
from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import asyncpg
import httpx
from fastapi import FastAPI

from petitions.domain.directory import Directory
from petitions.infra.batching import consume_batches
from petitions.infra.identity import IdentityReads
from petitions.infra.runtime import Runtime
from petitions.infra.service import run_event_loop, run_service
from petitions.infra.tracing import TracingTransport
from services.notify.api import mount_routes
from services.notify.channels import EmailChannel, SmsChannel, SmtpConfig, WebhookChannel
from services.notify.config import Contacts, Routes
from services.notify.documents import Renderer
from services.notify.handler import Notifier, RetryPolicy
from services.notify.http11 import Http11Client
from services.notify.plan import TRIGGERS, Planner
from services.notify.repository import DocumentCipher, NotifyRepository
from services.notify.settings import NotifyServiceSettings
from services.notify.webhook import WebhookSender


log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


def build_notifier(settings: NotifyServiceSettings, runtime: Runtime,
                   client: httpx.AsyncClient, pool: asyncpg.Pool | None = None) -> Notifier:
    directory = Directory.from_dict(json.loads(settings.directory_file.read_text("utf-8")))
    routes = Routes.from_dict(json.loads(settings.routes_file.read_text("utf-8")))
    contacts = Contacts.from_dict(json.loads(settings.contacts_file.read_text("utf-8")))
    planner = Planner(directory, routes, contacts, Renderer(settings.templates_dir))
    repo = NotifyRepository(pool or runtime.pool, DocumentCipher(settings.payload_encryption_key),
                            settings.instance_id, settings.lease_s)
    return Notifier(
        runtime.store, repo, planner,
        webhook=WebhookChannel(WebhookSender(
            Http11Client(settings.webhook_timeout_s, settings.send_concurrency),
            settings.webhook_secret)),
        email=EmailChannel(SmtpConfig(
            settings.smtp_host, settings.smtp_port, settings.smtp_from, settings.smtp_username,
            settings.smtp_password, settings.smtp_starttls, settings.webhook_timeout_s * 2)),
        sms=SmsChannel(client, settings.sms_gateway_url, settings.sms_gateway_token),
        default_webhook=settings.default_webhook_url,
        retry=RetryPolicy(settings.max_attempts, settings.retry_base_s, settings.retry_cap_s),
        clock=utc_now, send_concurrency=settings.send_concurrency, poll_s=settings.poll_s,
        record_linger_s=settings.record_linger_s,
    )


async def refresh_consumer_filter(runtime: Runtime, durable: str, types: list[str]) -> None:
    """A durable consumer made by an older notify listens to fewer event types: widen it
    (JetStream updates a durable's filter subjects in place, keeping its position)."""
    from nats.js.errors import NotFoundError

    bus = runtime.bus
    try:
        info = await bus.js.consumer_info(bus.stream, durable)
    except NotFoundError:
        return
    want = sorted(bus.subject(t) for t in types)
    config = info.config
    have = sorted(config.filter_subjects or ([config.filter_subject]
                                              if config.filter_subject else []))
    if have == want:
        return
    config.filter_subjects = want
    config.filter_subject = None
    try:
        await bus.js.add_consumer(bus.stream, config)
        log.info("notify consumer now listens to %d event types", len(want))
    except Exception:
        log.warning("could not update the notify consumer's filter subjects", exc_info=True)


def main() -> None:
    settings = NotifyServiceSettings()

    async def wire(runtime: Runtime, app: FastAPI) -> None:
        # Outgoing notices are traced (a CLIENT span, traceparent in the request headers).
        client = httpx.AsyncClient(
            timeout=settings.webhook_timeout_s,
            transport=TracingTransport(httpx.AsyncHTTPTransport(limits=httpx.Limits(
                max_connections=settings.send_concurrency,
                max_keepalive_connections=settings.send_concurrency))))
        # the runtime's pool: plans and outcomes are written in batches, so a few connections
        # do, and several replicas stay within PostgreSQL's connection limit
        notifier = build_notifier(settings, runtime, client)
        notifier.start()
        mount_routes(app, notifier, IdentityReads(runtime.pool), utc_now)
        await refresh_consumer_filter(runtime, "notify", list(TRIGGERS))
        # each pull of up to 64 is one batch: its cases are read with one query and its plans
        # stored in one transaction, acked after that commit (with `consumer_linger_s` set, a
        # short pull on a busy stream waits that long for what comes next).
        # Planning a batch holds the event loop (sends, the relay, recording wait): after a
        # stall, pulls of 256 held it for ~60 ms at a time and made the tail longer; 64
        # bounds that to ~15 ms.
        consume_batches(runtime, "notify", list(TRIGGERS), notifier.on_batch,
                        ack_wait=max(30.0, settings.webhook_timeout_s * 4), batch=64,
                        linger=settings.consumer_linger_s, linger_when_quiet=False)

        async def deliveries() -> None:
            try:
                await notifier.run(runtime.stopping)
            finally:
                await client.aclose()

        runtime.spawn(deliveries(), "deliveries")

    run_event_loop(run_service("notify", "Petition notices", settings, wire))


if __name__ == "__main__":
    main()
