"""Lifecycle of the service processes, on their own database and stream (not the shared
`system`): SIGTERM under load loses nothing, and a service started before its broker waits for
it instead of crashing."""
from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest

from petitions.devstack import (
    DATA_DIR,
    PORT_VARIABLES,
    SERVICES,
    Infrastructure,
    ServiceProcess,
    embedded_nats,
    free_port,
    service_env,
    start_service,
    wait_until_ready,
)
from petitions.infra.settings import CommonAuthSettings
from petitions.infra.store import CaseStore
from tests.conftest import bearer, isolated_env

pytestmark = pytest.mark.e2e

WORKERS = 6
STEADY_LOAD = 3 * WORKERS  # registrations answered before SIGTERM


@dataclass
class Stack:
    env: dict[str, str]
    services: dict[str, ServiceProcess]
    log_dir: Path

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.services[name].port}"

    def start(self, name: str) -> ServiceProcess:
        self.services[name] = start_service(name, self.env, self.log_dir)
        return self.services[name]


@pytest.fixture(scope="module")
def stack(servers, webhook_receiver) -> Iterator[Stack]:
    with isolated_env(servers, "shutdown") as test_env:
        overrides = {**test_env.as_env(), "INTAKE_GRPC_PORT": str(free_port()),
                     "NOTIFY_DEFAULT_WEBHOOK_URL":
                         f"http://127.0.0.1:{webhook_receiver.port}/units/{{unit_id}}"}
        overrides.update({PORT_VARIABLES[n]: str(free_port()) for n in SERVICES})
        env = service_env(Infrastructure(test_env.postgres_dsn, test_env.nats_url), overrides)
        s = Stack(env, {}, DATA_DIR / "test-logs" / "shutdown")
        for name in SERVICES:
            s.start(name)
        try:
            wait_until_ready(list(s.services.values()))
            yield s
        finally:
            codes = {name: p.stop() for name, p in s.services.items()}
            assert codes == {name: 0 for name in SERVICES}, f"unclean shutdown: {codes}"


def petition(worker: int, n: int) -> dict[str, Any]:
    serial = (time.time_ns() // 1000 + worker * 1_000_003 + n) % 10**11
    return {"channel": "online", "category": "appeal", "division": "330106",
            "subject": "land", "content": f"负载测试信访（{worker}-{n}-{serial}）",
            "requests": ["重新丈量"], "people_count": 1,
            "petitioner": {"name": "负载测试", "id_number": f"330106{serial:011d}X"}}


class Load:
    """Workers POSTing petitions as fast as they are answered, each on a new connection.

    201: registered. 503: refused while draining; the worker honours Retry-After and sends
    the same petition (same Idempotency-Key) again. Connection refused: the listener has
    closed; that petition was never sent. Anything else (a reset, a 5xx other than 503,
    another status) is a failure."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token
        self.created: list[tuple[str, float]] = []
        self.counts: Counter[str] = Counter()
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._work, args=(i,), daemon=True)
                        for i in range(WORKERS)]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _work(self, worker: int) -> None:
        headers = {**bearer(self.token), "Connection": "close"}
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=self.url, headers=headers, limits=limits,
                          timeout=30) as client:
            n = 0
            while not self.stop.is_set():
                n += 1
                body, key = petition(worker, n), f"load-{worker}-{n}-{time.time_ns()}"
                while not self.stop.is_set():
                    try:
                        r = client.post("/v1/petitions", json=body,
                                        headers={"Idempotency-Key": key})
                    except httpx.ConnectError:
                        self._count("refused (not sent)")
                        return
                    except httpx.HTTPError as exc:
                        self._fail(f"{type(exc).__name__}: {exc}")
                        return
                    if r.status_code == 201:
                        with self.lock:
                            self.created.append((r.json()["case_id"], time.monotonic()))
                        self._count("201")
                        break
                    if r.status_code == 503:
                        self._count("503")
                        time.sleep(float(r.headers.get("Retry-After", "1")))
                        continue
                    self._fail(f"HTTP {r.status_code}: {r.text[:200]}")
                    return

    def _count(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1

    def _fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)


def handled(case: Any) -> bool:
    delivered = [n for n in case.notices.values() if n.get("state") == "delivered"]
    return bool(case.is_routed and "acceptance" in case.clocks and delivered)


def test_sigterm_under_load_drains_and_loses_nothing(stack, tokens):
    intake = stack.services["intake"]
    with Load(stack.url("intake"), tokens["county_330106_clerk"]) as load:
        deadline = time.monotonic() + 20
        while len(load.created) < STEADY_LOAD and time.monotonic() < deadline:
            time.sleep(0.05)
        sent_at = time.monotonic()
        intake.proc.send_signal(signal.SIGTERM)
        # Readiness goes false at once, while requests are still answered.
        ready = httpx.get(f"{stack.url('intake')}/readyz", timeout=5)
        assert ready.status_code == 503, ready.text
        code = intake.proc.wait(25)
        stopped_in = time.monotonic() - sent_at
        # Workers told to retry later find the listener closed: their petitions are not sent.
        time.sleep(2.5)
    assert code == 0
    assert stopped_in < 20, f"intake took {stopped_in:.1f}s to stop"
    during_drain = sum(1 for _, at in load.created if at > sent_at)
    print("load:", dict(load.counts), f"{during_drain} answered 201 after SIGTERM;",
          f"stopped in {stopped_in:.1f}s")
    assert load.failures == [], (load.failures, load.counts)
    assert load.counts["201"] > 0 and load.counts["refused (not sent)"] == WORKERS, load.counts

    case_ids = [UUID(c) for c, _ in load.created]
    assert len(set(case_ids)) == len(case_ids)
    store = CaseStore(stack.env["POSTGRES_DSN"], pool_size=2,
                      cipher_key=CommonAuthSettings().payload_encryption_key)
    try:
        # Every petition answered 201 was durably registered, also those answered during
        # the drain (the registration batches finished before the pools closed).
        assert [c for c in case_ids if store.get(c) is None] == []

        # Restarted, intake serves again; the other services handled every case: routed,
        # acceptance clock started, assignment notice delivered (no message lost).
        stack.start("intake")
        wait_until_ready([stack.services["intake"]])
        pending = set(case_ids)
        deadline = time.monotonic() + 30
        while pending and time.monotonic() < deadline:
            pending = {c for c in pending if not handled(store.get(c))}
            if pending:
                time.sleep(0.3)
        assert not pending, f"{len(pending)} of {len(case_ids)} cases not fully handled"
    finally:
        store.close()
    clerk = httpx.Client(base_url=stack.url("intake"),
                         headers=bearer(tokens["county_330106_clerk"]))
    with clerk:
        for case_id in (case_ids[0], case_ids[-1]):
            summary = clerk.get(f"/v1/cases/{case_id}").json()
            assert summary["unit"] and "acceptance" in summary["deadlines"], summary


def test_a_service_started_before_nats_waits_for_it(stack, tmp_path):
    """Start-up retries with backoff: routing started against a NATS that is not up yet
    becomes ready once it is."""
    port = free_port()
    env = {**stack.env, "NATS_URL": f"nats://127.0.0.1:{port}",
           "ROUTING_HTTP_PORT": str(free_port()), "RELAY_ENABLED": "false"}
    log_file = stack.log_dir / "startup" / "routing.log"
    log_file.unlink(missing_ok=True)
    routing = start_service("routing", env, log_file.parent)
    try:
        # It tries, fails, and keeps trying (a log line per attempt) ...
        deadline = time.monotonic() + 30
        while "nats not ready" not in log_file.read_text("utf-8"):
            assert routing.proc.poll() is None, "routing gave up instead of waiting for NATS"
            assert time.monotonic() < deadline, "routing never tried to reach NATS"
            time.sleep(0.1)
        time.sleep(1.0)
        assert routing.proc.poll() is None, "routing gave up instead of waiting for NATS"
        # ... and is ready soon after NATS comes up.
        with embedded_nats(tmp_path / "nats", port):
            wait_until_ready([routing], timeout=30)
            assert routing.stop() == 0
    finally:
        routing.stop()
