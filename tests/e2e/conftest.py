"""The four services as separate processes on the test's PostgreSQL and NATS, plus a webhook
receiver standing in for the units' systems."""
from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.conftest import TestEnv, isolated_env

from petitions.devstack import (
    DATA_DIR,
    PORT_VARIABLES,
    SERVICES,
    Infrastructure,
    free_port,
    service_env,
    start_service,
    wait_until_ready,
)


@dataclass
class WebhookReceiver:
    port: int
    received: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, path: str, headers: dict[str, str], body: bytes) -> None:
        with self.lock:
            self.received.append({"path": path, "headers": headers, "body": json.loads(body)})

    def for_case(self, case_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.received if r["body"].get("case_id") == case_id]


@pytest.fixture(scope="session")
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            receiver.record(self.path, dict(self.headers), body)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", receiver.port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    server.shutdown()
    server.server_close()


@dataclass
class System:
    urls: dict[str, str]
    grpc_target: str
    env: dict[str, str]


@pytest.fixture(scope="package")
def e2e_env(servers) -> Iterator[TestEnv]:
    with isolated_env(servers, "e2e") as env:
        yield env


@pytest.fixture(scope="package")
def system(e2e_env, webhook_receiver) -> Iterator[System]:
    test_env = e2e_env
    ports = {name: free_port() for name in SERVICES}
    grpc_port = free_port()
    overrides = {**test_env.as_env(), "INTAKE_GRPC_PORT": str(grpc_port),
                 "NOTIFY_DEFAULT_WEBHOOK_URL":
                     f"http://127.0.0.1:{webhook_receiver.port}/units/{{unit_id}}"}
    overrides.update({PORT_VARIABLES[n]: str(p) for n, p in ports.items()})
    # Every span into a file per service, so a test can follow one petition's trace across
    # the four processes (test_observability.py); consumer lag refreshed every second.
    traces_dir = DATA_DIR / "test-traces" / test_env.nats_stream.lower()
    overrides.update({"OTEL_TRACES_EXPORTER": "jsonl", "PETITIONS_TRACES_DIR": str(traces_dir),
                      "METRICS_INTERVAL_SECONDS": "1"})
    env = service_env(Infrastructure(test_env.postgres_dsn, test_env.nats_url), overrides)
    log_dir = DATA_DIR / "test-logs"
    services = [start_service(name, env, log_dir) for name in SERVICES]
    try:
        wait_until_ready(services)
        yield System({n: f"http://127.0.0.1:{p}" for n, p in ports.items()},
                     f"127.0.0.1:{grpc_port}", env)
    finally:
        codes = {s.name: s.stop() for s in services}
        shutil.rmtree(traces_dir, ignore_errors=True)
        assert codes == {name: 0 for name in SERVICES}, f"unclean shutdown: {codes}"
