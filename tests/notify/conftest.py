"""Real receivers for notify's channels, on loopback: a webhook receiver and an SMS gateway that
de-duplicate on the idempotency key (as the counties' systems do), and an SMTP server
(aiosmtpd). Plus a notifier wired to them on the test's PostgreSQL."""
from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import hmac
import itertools
import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from uuid import uuid4

import asyncpg
import pytest
from aiosmtpd.controller import Controller

from petitions.devstack import free_port
from petitions.domain.case import Case
from petitions.domain.values import Actor, Category, Channel, Contact, Petitioner, local_date
from petitions.infra.dsn import as_uri
from petitions.infra.settings import DEV_WEBHOOK_SECRET, CommonAuthSettings
from petitions.infra.store import CaseStore
from tests.conftest import isolated_env

CLERK = Actor(id="clerk-330106", role="intake_clerk", jurisdiction="330106")
SUPERVISOR = Actor(id="supervisor-330106", role="bureau_supervisor", jurisdiction="330106")
ROUTER = Actor(id="routing-service", role="service")
PETITIONER = Petitioner(name="欧阳明月", id_number="330106199001011234",
                        phone="13812345678", address="西湖区转塘街道某村12号")
IDENTITY = [PETITIONER.name, PETITIONER.id_number, PETITIONER.phone, PETITIONER.address]


# ------------------------------------------------------------------------- receivers


def _server(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, int]:
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, port


@dataclass
class WebhookReceiver:
    """Records every POST; processes each idempotency key once. Per-path behaviour:
    "fail" answers 503, "gone" 410, "block" holds the first POST of a key (after processing
    it) until `release` is set, like a county system that is slow to acknowledge."""

    port: int = 0
    posts: list[dict[str, Any]] = field(default_factory=list)
    processed: dict[str, dict[str, Any]] = field(default_factory=dict)
    modes: dict[str, str] = field(default_factory=dict)
    blocked: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, unit_template: bool = True) -> str:
        return f"http://127.0.0.1:{self.port}/units/{{unit_id}}"

    def for_case(self, case_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [b for b in self.processed.values() if b.get("case_id") == case_id]

    def posts_for(self, case_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [p for p in self.posts if p["body"].get("case_id") == case_id]


@pytest.fixture(scope="session")
def webhook_sink() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            key = self.headers.get("Idempotency-Key", "")
            expected = "sha256=" + hmac.new(DEV_WEBHOOK_SECRET.encode(), raw,
                                            hashlib.sha256).hexdigest()
            body = json.loads(raw)
            mode = receiver.modes.get(self.path, "")
            with receiver.lock:
                receiver.posts.append({"path": self.path, "key": key, "body": body,
                                       "raw": raw.decode(),
                                       "signed": self.headers.get("X-Petitions-Signature")
                                       == expected})
                duplicate = key in receiver.processed
                if mode not in ("fail", "gone") and not duplicate:
                    receiver.processed[key] = body
            if mode == "fail":
                return self._answer(503, {"error": "down"})
            if mode == "gone":
                return self._answer(410, {"error": "gone"})
            if mode == "block" and not duplicate:
                receiver.blocked.set()
                receiver.release.wait(30)
            self._answer(200, {"duplicate": duplicate})

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the sender died while we were slow

        def log_message(self, *_: object) -> None:
            pass

    server, receiver.port = _server(Handler)
    yield receiver
    receiver.release.set()
    server.shutdown()
    server.server_close()


@dataclass
class SmsGateway:
    port: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)  # by idempotency key
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/messages"

    def to(self, phone: str) -> list[dict[str, Any]]:
        with self.lock:
            return [m for m in self.messages.values() if m["to"] == phone]


@pytest.fixture(scope="session")
def sms_gateway() -> Iterator[SmsGateway]:
    gateway = SmsGateway()
    ids = itertools.count(1)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            key = self.headers.get("Idempotency-Key", "")
            with gateway.lock:
                gateway.requests.append(body)
                if key not in gateway.messages:
                    gateway.messages[key] = {**body, "message_id": f"sms-{next(ids)}"}
                message_id = gateway.messages[key]["message_id"]
            data = json.dumps({"message_id": message_id}).encode()
            self.send_response(202)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_: object) -> None:
            pass

    server, gateway.port = _server(Handler)
    yield gateway
    server.shutdown()
    server.server_close()


@dataclass
class Mailbox:
    port: int = 0
    messages: list[email.message.EmailMessage] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def to(self, address: str) -> list[email.message.EmailMessage]:
        with self.lock:
            return [m for m in self.messages if address in str(m["To"])]


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[Mailbox]:
    box = Mailbox()

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802
            msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
            with box.lock:
                box.messages.append(msg)
            return "250 Message accepted for delivery"

    box.port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=box.port)
    controller.start()
    yield box
    controller.stop()


# ------------------------------------------------------------------------- database, notifier


@pytest.fixture(scope="session")
def notify_env(servers):
    with isolated_env(servers, "notify") as env:
        yield env


@pytest.fixture(scope="session")
def notify_store(notify_env) -> Iterator[CaseStore]:
    s = CaseStore(notify_env.postgres_dsn, pool_size=4,
                  cipher_key=CommonAuthSettings().payload_encryption_key)
    yield s
    s.close()


@pytest.fixture(scope="session")
async def notify_pool(notify_env) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(as_uri(notify_env.postgres_dsn), min_size=1, max_size=8)
    yield p
    await p.close()


def make_notifier(store, pool, webhook_sink, smtp_server, sms_gateway, *, instance: str,
                  max_attempts: int = 3, lease_s: float = 10.0, routes: dict | None = None):
    import httpx

    from petitions.domain.directory import Directory
    from petitions.infra.settings import REPO_ROOT
    from services.notify.channels import EmailChannel, SmsChannel, SmtpConfig, WebhookChannel
    from services.notify.config import Contacts, Routes
    from services.notify.documents import Renderer
    from services.notify.handler import Notifier, RetryPolicy
    from services.notify.http11 import Http11Client
    from services.notify.plan import Planner
    from services.notify.repository import DocumentCipher, NotifyRepository
    from services.notify.webhook import WebhookSender

    config = REPO_ROOT / "config"
    directory = Directory.from_dict(json.loads((config / "directory.json").read_text("utf-8")))
    routes_doc = routes or json.loads((config / "notify-routes.json").read_text("utf-8"))
    contacts = Contacts.from_dict(json.loads((config / "notify-contacts.json").read_text("utf-8")))
    planner = Planner(directory, Routes.from_dict(routes_doc), contacts, Renderer())
    key = CommonAuthSettings().payload_encryption_key
    client = httpx.AsyncClient(timeout=5)
    notifier = Notifier(
        store, NotifyRepository(pool, DocumentCipher(key), instance, lease_s), planner,
        webhook=WebhookChannel(WebhookSender(Http11Client(5), DEV_WEBHOOK_SECRET)),
        email=EmailChannel(SmtpConfig("127.0.0.1", smtp_server.port, "notify@test.invalid")),
        sms=SmsChannel(client, sms_gateway.url),
        default_webhook=webhook_sink.url(), retry=RetryPolicy(max_attempts, 0.05, 1.0),
        clock=lambda: datetime.now(UTC), poll_s=0.1,
    )
    notifier.client = client  # type: ignore[attr-defined]
    return notifier


@pytest.fixture
async def notifier(notify_store, notify_pool, webhook_sink, smtp_server, sms_gateway):
    """A running notifier (poller and recorder), stopped at the end of the test."""
    n = make_notifier(notify_store, notify_pool, webhook_sink, smtp_server, sms_gateway,
                      instance=f"test-{uuid4().hex[:6]}")
    n.start()
    stopping = asyncio.Event()
    task = asyncio.create_task(n.run(stopping))
    yield n
    stopping.set()
    await task
    await n.client.aclose()


# ------------------------------------------------------------------------- cases


def registered(division: str = "330106", *, petitioner: Petitioner | None = PETITIONER,
               category: Category = Category.APPEAL, accused_unit: str = "",
               content: str | None = None, channel: Channel = Channel.LETTER,
               people_count: int = 1, representatives: list[Contact] | None = None,
               contact: Contact | None = None) -> Case:
    now = datetime.now(UTC)
    return Case.register(
        case_id=uuid4(), case_number=f"{division}-2026-{uuid4().int % 10**6:06d}",
        channel=channel, category=category, division=division, subject="land",
        content=content or f"宅基地分配漏掉了我家。我是{PETITIONER.name}，电话 138-1234-5678。",
        requests=["重新丈量并登记"], people_count=people_count, petitioner=petitioner,
        received_at=now, submission_digest=uuid4().hex, actor=CLERK, at=now,
        accused_unit=accused_unit, representatives=representatives, contact=contact,
    )


def routed(case: Case, unit_id: str = "land-330106") -> Case:
    case.route_to_unit(unit_id=unit_id, unit_name="西湖区自然资源和规划局", rule_id="land",
                       rule_set_version="t", explanation="subject land", actor=ROUTER,
                       at=datetime.now(UTC))
    return case


def accepted(case: Case, mode: str = "assign", assisting: list[str] | None = None) -> Case:
    now = datetime.now(UTC)
    case.accept(mode=mode, lead_unit="land-330106", assisting_units=assisting or [],
                decided_on=local_date(now), actor=SUPERVISOR, at=now, reason="符合受理条件")
    return case


async def wait_until(check, timeout: float = 10.0, interval: float = 0.05):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met within the time limit")
        await asyncio.sleep(interval)


def history_types(store: CaseStore, case_id) -> list[str]:
    return [type(e).__name__ for e in store.history(case_id)]


def notices(store: CaseStore, case_id) -> list[tuple[str, dict[str, Any]]]:
    from petitions.infra.events import event_data

    return [(type(e).__name__, event_data(e)) for e in store.history(case_id)
            if type(e).__name__.startswith("Notice")]
