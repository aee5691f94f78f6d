"""Pieces the fault suites share: the services as restartable processes, a webhook receiver
standing in for the units' systems, a steady bounded petition load, and the invariants that
must hold once the system has recovered.

Every scenario runs on its own database, stream and subject prefix (tests.conftest
.isolated_env). Traffic goes to 127.0.0.1 only; every loop is bounded in count and time.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

import asyncpg
import httpx
import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from petitions.devstack import (
    DATA_DIR,
    PORT_VARIABLES,
    REPO_ROOT,
    SERVICES,
    Infrastructure,
    ServiceProcess,
    free_port,
    service_env,
)
from petitions.infra.dsn import as_uri
from petitions.infra.settings import CommonAuthSettings
from petitions.infra.store import CaseStore
from tests.conftest import TestEnv

CONSUMING = ("routing", "deadlines", "notify")
# The notice that tells the lead unit it has the case ("assignment" before the documents
# rework of notify, "assignment_slip" since).
ASSIGNMENT_KINDS = frozenset({"assignment", "assignment_slip"})
ACCEPTANCE = "acceptance"
DIVISIONS = ("330106", "330108")
SUBJECTS = ("land", "labour", "housing", "consumer", "pension", "roads")
LOG_ROOT = DATA_DIR / "test-logs" / "faults"


def seed_from_env(name: str) -> int:
    """FAULTS_SEED reproduces a run; otherwise a fresh seed (printed with every failure)."""
    raw = os.environ.get("FAULTS_SEED")
    seed = int(raw) if raw else random.SystemRandom().randrange(2**32)
    print(f"[faults:{name}] seed={seed} (set FAULTS_SEED={seed} to repeat)")
    return seed


def assert_webhooks_stay_local() -> None:
    """Notices must only ever reach the test receiver on loopback."""
    directory = json.loads((REPO_ROOT / "config" / "directory.json").read_text("utf-8"))
    for unit in directory.get("units", []):
        url = unit.get("webhook") or ""
        host = urlsplit(url).hostname if url else None
        assert host in (None, "127.0.0.1", "localhost", "::1"), (
            f"unit {unit.get('id')} has a non-loopback webhook {url!r}: refusing to run")


# -- the units' systems ----------------------------------------------------------------


@dataclass
class Receipt:
    path: str
    idempotency_key: str
    case_id: str
    kind: str
    recipient: str


class WebhookReceiver:
    """Accepts every notice (204) and records its idempotency key per case."""

    def __init__(self) -> None:
        self.port = free_port()
        self.lock = threading.Lock()
        self.receipts: list[Receipt] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    self.rfile.readline()
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))

            def do_POST(self) -> None:
                body = self._body()
                try:
                    notice = json.loads(body)
                except ValueError:
                    notice = {}
                with receiver.lock:
                    receiver.receipts.append(Receipt(
                        self.path, self.headers.get("Idempotency-Key", ""),
                        str(notice.get("case_id", "")), str(notice.get("kind", "")),
                        str(notice.get("recipient") or notice.get("unit_id")
                            or self.path.rsplit("/", 1)[-1])))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url_template(self) -> str:
        return f"http://127.0.0.1:{self.port}/units/{{unit_id}}"

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def assignment_keys(self) -> dict[tuple[str, str], set[str]]:
        """(case id, recipient unit) -> the distinct idempotency keys of assignment notices."""
        keys: dict[tuple[str, str], set[str]] = defaultdict(set)
        with self.lock:
            for r in self.receipts:
                if r.kind in ASSIGNMENT_KINDS:
                    keys[(r.case_id, r.recipient)].add(r.idempotency_key)
        return keys


# -- the services ----------------------------------------------------------------------


def _prune_old_logs(log_root: Path, name: str, max_age_s: float = 24 * 3600) -> None:
    for old in log_root.glob(f"{name}-*"):
        try:
            if time.time() - old.stat().st_mtime > max_age_s:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass


@dataclass
class Instance:
    key: str  # "routing" or "routing#2"
    service: str
    env: dict[str, str]
    process: ServiceProcess | None = None
    kills: int = 0

    @property
    def port(self) -> int:
        return int(self.env[PORT_VARIABLES[self.service]])

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.proc.poll() is None


class Cluster:
    """The four services as processes on fixed ports (a killed one restarts in place), with
    `replicas` extra instances of any consuming service."""

    def __init__(self, name: str, test_env: TestEnv, receiver: WebhookReceiver,
                 replicas: dict[str, int] | None = None, extra_env: dict[str, str] | None = None,
                 log_root: Path = LOG_ROOT):
        self.name = name
        # One directory per run: concurrent runs never mix or remove each other's logs.
        log_root.mkdir(parents=True, exist_ok=True)
        _prune_old_logs(log_root, name)
        self.log_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=log_root))
        self.grpc_port = free_port()
        base = {**test_env.as_env(), "INTAKE_GRPC_PORT": str(self.grpc_port),
                "NOTIFY_DEFAULT_WEBHOOK_URL": receiver.url_template, **(extra_env or {})}
        base.update({PORT_VARIABLES[n]: str(free_port()) for n in SERVICES})
        infra = Infrastructure(test_env.postgres_dsn, test_env.nats_url)
        self.instances: dict[str, Instance] = {}
        for service in SERVICES:
            for n in range(1, 1 + (replicas or {}).get(service, 1)):
                key = service if n == 1 else f"{service}#{n}"
                env = service_env(infra, {**base, PORT_VARIABLES[service]: str(free_port())})
                self.instances[key] = Instance(key, service, env)

    @property
    def intake_url(self) -> str:
        return f"http://127.0.0.1:{self.instances['intake'].port}"

    def discard_logs(self) -> None:
        shutil.rmtree(self.log_dir, ignore_errors=True)

    def start(self, key: str) -> None:
        inst = self.instances[key]
        assert not inst.alive, f"{key} is already running"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{key.replace('#', '-')}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, "-m", f"services.{inst.service}.main"],
                                env=inst.env, cwd=REPO_ROOT, stdout=log,
                                stderr=subprocess.STDOUT)
        log.close()  # the child holds its own descriptor
        inst.process = ServiceProcess(inst.service, inst.port, proc)

    def start_all(self) -> None:
        for key in self.instances:
            self.start(key)

    def kill(self, key: str) -> None:
        """kill -9: no shutdown code runs."""
        inst = self.instances[key]
        assert inst.process is not None
        os.kill(inst.process.proc.pid, signal.SIGKILL)
        inst.process.proc.wait()
        inst.kills += 1

    async def wait_ready(self, keys: Iterable[str] | None = None, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2.0) as client:
            for key in list(keys or self.instances):
                inst = self.instances[key]
                while True:
                    assert inst.process is not None
                    if inst.process.proc.poll() is not None:
                        raise RuntimeError(f"{key} exited with {inst.process.proc.returncode}; "
                                           f"see {self.log_dir}")
                    try:
                        r = await client.get(f"http://127.0.0.1:{inst.port}/readyz")
                        if r.status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{key} not ready after {timeout}s; see {self.log_dir}")
                    await asyncio.sleep(0.1)

    def dead(self) -> list[str]:
        return [k for k, i in self.instances.items() if not i.alive]

    def stop_all(self, grace: float = 20.0) -> dict[str, int | None]:
        """One SIGTERM to each at once, then wait for all (SIGKILL after `grace`): their
        exit codes. (A second SIGTERM after a service's event loop has closed would kill it
        by signal during interpreter teardown, so each gets exactly one.)"""
        running = [i.process.proc for i in self.instances.values() if i.alive and i.process]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in running:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return {i.key: i.process.proc.returncode for i in self.instances.values()
                if i.process is not None}

    def kill_all(self) -> None:
        for inst in self.instances.values():
            if inst.alive:
                assert inst.process is not None
                inst.process.proc.kill()
                inst.process.proc.wait()


# -- the load ---------------------------------------------------------------------------


@dataclass
class Outcome:
    status: int | None  # None: no HTTP answer (connection refused, reset, timeout)
    error: str = ""
    retry_after: str | None = None
    case_id: str | None = None
    at: float = 0.0
    phase: str = "load"
    latency: float = 0.0


@dataclass
class PetitionLoad:
    """An open-loop load: `rate` petitions a second until `stop` is set or `max_duration`
    passes, each with its own Idempotency-Key, at most `max_in_flight` at once."""

    intake_url: str
    tokens: dict[str, str]  # division -> clerk token
    rate: float = 25.0
    max_duration: float = 20.0
    max_in_flight: int = 64
    timeout: float = 10.0
    run_id: str = field(default_factory=lambda: os.urandom(4).hex())
    outcomes: dict[str, list[Outcome]] = field(default_factory=lambda: defaultdict(list))
    started: float = 0.0

    def key(self, i: int) -> str:
        return f"faults-{self.run_id}-{i:05d}"

    def petition(self, i: int) -> tuple[str, dict[str, Any]]:
        division = DIVISIONS[i % len(DIVISIONS)]
        subject = SUBJECTS[i % len(SUBJECTS)]
        # Unique content and petitioner: nothing here is a repeat or duplicate of another.
        return division, {
            "channel": "online", "category": "appeal", "division": division,
            "subject": subject,
            "content": f"故障测试 {self.run_id} 第 {i} 件：{subject} 问题需要处理",
            "requests": [f"请求处理第 {i} 件"], "people_count": 1,
            "petitioner": {"name": f"测试人{i}",
                           "id_number": f"{division}{1950 + i % 50}0101{i % 10_000:04d}",
                           "phone": "13800000000"},
        }

    async def send(self, client: httpx.AsyncClient, i: int, phase: str) -> Outcome:
        division, body = self.petition(i)
        headers = {"Authorization": f"Bearer {self.tokens[division]}",
                   "Idempotency-Key": self.key(i)}
        at = time.monotonic() - self.started
        try:
            r = await client.post(f"{self.intake_url}/v1/petitions", json=body, headers=headers,
                                  timeout=self.timeout)
        except httpx.HTTPError as exc:
            outcome = Outcome(None, f"{type(exc).__name__}: {exc}"[:200], at=at, phase=phase)
        else:
            case_id = None
            if r.status_code == 201:
                case_id = r.json()["case_id"]
            outcome = Outcome(r.status_code, "" if r.status_code == 201 else r.text[:300],
                              r.headers.get("Retry-After"), case_id, at, phase)
        outcome.latency = time.monotonic() - self.started - at
        self.outcomes[self.key(i)].append(outcome)
        return outcome

    @property
    def sent(self) -> int:
        return len(self.outcomes)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Send until `stop` is set (or max_duration passes); then wait for answers."""
        stop = stop or asyncio.Event()
        self.started = time.monotonic()
        limit = asyncio.Semaphore(self.max_in_flight)
        tasks: list[asyncio.Task[Outcome]] = []
        limits = httpx.Limits(max_connections=self.max_in_flight,
                              max_keepalive_connections=self.max_in_flight)
        async with httpx.AsyncClient(limits=limits) as client:
            async def one(i: int) -> Outcome:
                async with limit:
                    return await self.send(client, i, "load")

            i = 0
            while not stop.is_set() and time.monotonic() - self.started < self.max_duration:
                due = self.started + i / self.rate
                delay = due - time.monotonic()
                if delay > 0:
                    try:
                        await asyncio.wait_for(stop.wait(), delay)
                        break
                    except TimeoutError:
                        pass
                tasks.append(asyncio.create_task(one(i)))
                i += 1
            await asyncio.gather(*tasks)

    async def complete(self, timeout: float = 60.0) -> list[str]:
        """Resend every petition that has no 201 yet, with its own Idempotency-Key, until each
        has one (or `timeout`); returns the keys still without one."""
        deadline = time.monotonic() + timeout
        pending = [i for i in range(self.sent) if not self.answered(self.key(i))]
        async with httpx.AsyncClient() as client:
            async def settle(i: int) -> None:
                while time.monotonic() < deadline:
                    outcome = await self.send(client, i, "retry")
                    if outcome.status == 201:
                        return
                    if outcome.status not in (None, 503):
                        return  # a refusal: retrying changes nothing (reported by checks)
                    wait = float(outcome.retry_after or 0.5)
                    await asyncio.sleep(min(wait, max(0.0, deadline - time.monotonic())))

            limit = asyncio.Semaphore(16)

            async def limited(i: int) -> None:
                async with limit:
                    await settle(i)

            await asyncio.gather(*(limited(i) for i in pending))
        return [self.key(i) for i in range(self.sent) if not self.answered(self.key(i))]

    def answered(self, key: str) -> bool:
        return any(o.status == 201 for o in self.outcomes[key])

    def case_ids(self) -> dict[str, set[str]]:
        return {k: {o.case_id for o in v if o.status == 201 and o.case_id}
                for k, v in self.outcomes.items()}

    def statuses(self) -> Counter[Any]:
        return Counter(o.status for v in self.outcomes.values() for o in v)

    def failures(self, *, status: int | None = None) -> list[tuple[str, Outcome]]:
        return [(k, o) for k, v in self.outcomes.items() for o in v if o.status == status]


async def run_for(load: PetitionLoad, seconds: float) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(load.run(stop))
    await asyncio.sleep(seconds)
    stop.set()
    await task


@dataclass(frozen=True)
class Outage:
    """When a server was stopped and started again, in seconds after the load began."""

    stopped_at: float
    restarted_at: float
    elapsed: float


async def load_through_outage(load: PetitionLoad, server: RestartableServer, *, before: float,
                              outage: float, after: float) -> Outage:
    """Keep `load` running; stop `server` after `before` seconds, start it again `outage`
    seconds later, and keep the load on for `after` seconds more."""
    stop = asyncio.Event()
    task = asyncio.create_task(load.run(stop))
    started = time.monotonic()
    await asyncio.sleep(before)
    await asyncio.to_thread(server.stop)
    stopped_at = time.monotonic() - started
    await asyncio.sleep(outage)
    await asyncio.to_thread(server.start)
    restarted_at = time.monotonic() - started
    await asyncio.sleep(after)
    stop.set()
    await task
    return Outage(stopped_at, restarted_at, time.monotonic() - started)


def run_scenario(cluster: Cluster, clerk_tokens: dict[str, str], scenario: Any, *, rate: float,
                 max_duration: float, after_stop: Any = None) -> None:
    """Start `cluster`, run `scenario(cluster, load)` under a steady load of petitions, stop
    every process (then `after_stop()`), and fail with every problem found or any unclean
    exit. The logs are kept only when something failed."""
    cluster.start_all()
    try:
        load = PetitionLoad(cluster.intake_url, clerk_tokens, rate=rate,
                            max_duration=max_duration)
        problems = asyncio.run(scenario(cluster, load))
    finally:
        codes = cluster.stop_all()
        if after_stop is not None:
            after_stop()
    assert not problems, report(problems) + f"\nlogs: {cluster.log_dir}"
    assert codes == {k: 0 for k in cluster.instances}, f"unclean shutdown: {codes}"
    cluster.discard_logs()


# -- invariants ---------------------------------------------------------------------------


@dataclass
class StoredEvent:
    position: int
    case_id: str
    version: int
    type: str
    qualname: str  # "Case.Registered"; other aggregates' events are not a case's
    attrs: dict[str, Any]


# The store also holds other aggregates (e.g. the published routing configuration): a case
# is an aggregate whose stream starts with Case.Registered.
CASES_ONLY = ("originator_id IN (SELECT originator_id FROM cases_events "
              "WHERE originator_version = 1 AND topic LIKE '%:Case.Registered')")


class Inspector:
    """Reads the store, the projection, the stream and the consumers of one scenario."""

    def __init__(self, test_env: TestEnv) -> None:
        self.env = test_env

    async def __aenter__(self) -> Self:
        self.pool = await asyncpg.create_pool(as_uri(self.env.postgres_dsn), min_size=1,
                                              max_size=2)
        self.nc = await nats.connect(self.env.nats_url, connect_timeout=3)
        self.js = self.nc.jetstream()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.nc.close()
        await self.pool.close()

    async def progress(self) -> dict[str, Any]:
        """What is still to do, by cheap queries (no decoding)."""
        row = await self.pool.fetchrow(f"""
            WITH per_case AS (
              SELECT originator_id,
                     max(originator_version) AS last,
                     count(*) FILTER (WHERE topic LIKE '%.RoutedToUnit') AS routed,
                     count(*) FILTER (WHERE topic LIKE '%.ClockStarted') AS clocks,
                     count(*) FILTER (WHERE topic LIKE '%.NoticeDelivered') AS delivered
              FROM cases_events WHERE {CASES_ONLY} GROUP BY originator_id)
            SELECT count(*) AS cases,
                   count(*) FILTER (WHERE routed = 0) AS unrouted,
                   count(*) FILTER (WHERE clocks = 0) AS untimed,
                   count(*) FILTER (WHERE delivered = 0) AS unnotified,
                   count(*) FILTER (WHERE s.version IS DISTINCT FROM p.last) AS unprojected
            FROM per_case p LEFT JOIN case_summaries s ON s.case_id = p.originator_id""")
        head = await self.pool.fetchval("SELECT coalesce(max(notification_id), 0) FROM cases_events")
        relay = await self.pool.fetchval(
            "SELECT coalesce(max(position), 0) FROM log_positions WHERE reader = 'relay'")
        consumers: dict[str, Any] = {}
        try:
            for info in await self.js.consumers_info(self.env.nats_stream):
                if info.config.durable_name:
                    consumers[info.name] = (info.num_pending, info.num_ack_pending)
        except Exception as exc:  # noqa: BLE001 - broker trouble: not settled
            consumers["?"] = (repr(exc)[:80], None)
        if not consumers:
            consumers["?"] = ("no durable consumers yet", None)
        return {**dict(row), "head": head, "relay": relay, "consumers": consumers}

    @staticmethod
    def settled(p: dict[str, Any]) -> bool:
        return (p["cases"] > 0 and p["unrouted"] == 0 and p["untimed"] == 0
                and p["unnotified"] == 0 and p["unprojected"] == 0 and p["relay"] == p["head"]
                and all(c == (0, 0) for c in p["consumers"].values()))

    async def wait_settled(self, timeout: float) -> tuple[bool, dict[str, Any], float]:
        """Until every case is routed, timed, notified and projected, the relay is at the
        head of the log and no consumer has a message pending or unacknowledged."""
        start = time.monotonic()
        p: dict[str, Any] = {}
        while time.monotonic() - start < timeout:
            try:
                p = await self.progress()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                p = {"error": repr(exc)}
            else:
                if self.settled(p):
                    return True, p, time.monotonic() - start
            await asyncio.sleep(0.5)
        return False, p, time.monotonic() - start

    async def unsettled(self, limit: int = 5) -> list[str]:
        """What is known about a few cases that are not done: their events (position,
        version, type), their projected version, and where every log reader stands."""
        rows = await self.pool.fetch(f"""
            WITH per_case AS (
              SELECT originator_id, max(originator_version) AS last,
                     bool_or(topic LIKE '%.RoutedToUnit') AS routed,
                     bool_or(topic LIKE '%.ClockStarted') AS timed,
                     bool_or(topic LIKE '%.NoticeDelivered') AS notified
              FROM cases_events WHERE {CASES_ONLY} GROUP BY originator_id)
            SELECT p.originator_id, s.version AS projected
            FROM per_case p LEFT JOIN case_summaries s ON s.case_id = p.originator_id
            WHERE NOT (p.routed AND p.timed AND p.notified)
               OR s.version IS DISTINCT FROM p.last
            LIMIT $1""", limit)
        lines = []
        for r in rows:
            events = await self.pool.fetch(
                "SELECT notification_id, originator_version, topic FROM cases_events "
                "WHERE originator_id = $1 ORDER BY originator_version", r["originator_id"])
            shown = ", ".join(f"#{e['notification_id']} v{e['originator_version']} "
                              f"{e['topic'].rsplit('.', 1)[-1]}" for e in events)
            lines.append(f"case {r['originator_id']}: [{shown}], projected v{r['projected']}")
        positions = await self.pool.fetch("SELECT reader, position FROM log_positions")
        lines.append("log positions: " + ", ".join(f"{p['reader']}={p['position']}"
                                                   for p in positions))
        return lines

    async def events(self) -> list[StoredEvent]:
        store = await asyncio.to_thread(
            CaseStore, self.env.postgres_dsn, cipher_key=CommonAuthSettings().payload_encryption_key,
            pool_size=1)
        try:
            rows = await self.pool.fetch(
                "SELECT notification_id, originator_id, originator_version, topic, state "
                "FROM cases_events ORDER BY notification_id")
            out = []
            for r in rows:
                e = store.decode(r["originator_id"], r["originator_version"], r["topic"], r["state"])
                out.append(StoredEvent(r["notification_id"], str(r["originator_id"]),
                                       r["originator_version"], type(e).__name__,
                                       type(e).__qualname__, dict(e.__dict__)))
            return out
        finally:
            await asyncio.to_thread(store.close)

    async def summaries(self) -> dict[str, tuple[int, str]]:
        rows = await self.pool.fetch("SELECT case_id, version, case_number FROM case_summaries")
        return {str(r["case_id"]): (r["version"], r["case_number"]) for r in rows}

    async def stream_event_ids(self) -> list[str]:
        """Every case event message in the stream (event ids), read once from the start."""
        subject = f"{self.env.subject_prefix}.case.>"
        info = await self.js.stream_info(self.env.nats_stream, subjects_filter=subject)
        expected = sum((info.state.subjects or {}).values())
        sub = await self.js.pull_subscribe(
            subject, durable=None, stream=self.env.nats_stream,
            config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL,
                                  inactive_threshold=30.0))
        ids: list[str] = []
        try:
            deadline = time.monotonic() + 30
            while len(ids) < expected and time.monotonic() < deadline:
                try:
                    msgs = await sub.fetch(500, timeout=2.0)
                except nats.errors.TimeoutError:
                    continue
                for m in msgs:
                    body = json.loads(m.data)
                    ids.append(str(body["event_id"]))
        finally:
            await sub.unsubscribe()
        return ids


async def check_invariants(test_env: TestEnv, load: PetitionLoad, receiver: WebhookReceiver,
                           *, settle_timeout: float = 90.0) -> list[str]:
    """Every violation of the fault suite's invariants, as readable lines (empty: all hold)."""
    problems: list[str] = []
    async with Inspector(test_env) as inspector:
        ok, progress, waited = await inspector.wait_settled(settle_timeout)
        print(f"[faults] settled={ok} after {waited:.1f}s: {progress}")
        if not ok:
            problems.append(f"not settled within {settle_timeout}s: {progress}")
            try:
                problems += [f"  unsettled: {line}" for line in await inspector.unsettled()]
            except Exception as exc:  # noqa: BLE001 - diagnostics only
                problems.append(f"  (no details: {exc!r})")
        await asyncio.sleep(1.0)  # anything still in flight would show up now
        events = await inspector.events()
        summaries = await inspector.summaries()
        stream_ids = await inspector.stream_event_ids()

    cases = {e.case_id for e in events if e.qualname == "Case.Registered"}
    by_case: dict[str, list[StoredEvent]] = defaultdict(list)
    for e in events:
        if e.case_id in cases:
            by_case[e.case_id].append(e)

    # Every 201 has its case; a key answered twice answers the same case; no orphan cases.
    answered: set[str] = set()
    for key, ids in load.case_ids().items():
        if len(ids) > 1:
            problems.append(f"Idempotency-Key {key} answered with several cases: {sorted(ids)}")
        for case_id in ids:
            answered.add(case_id)
            if case_id not in by_case:
                problems.append(f"201 for key {key} but no case {case_id} in the store")
    for case_id in set(by_case) - answered:
        problems.append(f"case {case_id} in the store was never answered with a 201")

    # Per case: contiguous versions, one registration, one routing, one acceptance clock,
    # one assignment notice, and the projection at the store's last version.
    receipts = receiver.assignment_keys()
    numbers: Counter[str] = Counter()
    for case_id, evs in by_case.items():
        versions = sorted(e.version for e in evs)
        if versions != list(range(1, len(versions) + 1)):
            problems.append(f"case {case_id}: versions not 1..n: {versions}")
        kinds = Counter(e.type for e in evs)
        if kinds["Registered"] != 1:
            problems.append(f"case {case_id}: {kinds['Registered']} Registered events")
        if kinds["RoutedToUnit"] != 1:
            problems.append(f"case {case_id}: {kinds['RoutedToUnit']} RoutedToUnit events")
        clocks = [e for e in evs if e.type == "ClockStarted" and e.attrs.get("clock") == ACCEPTANCE]
        if len(clocks) != 1:
            problems.append(f"case {case_id}: {len(clocks)} acceptance ClockStarted events")
        routed = [e for e in evs if e.type == "RoutedToUnit"]
        lead = routed[0].attrs.get("unit_id") if routed else None
        delivered = [e for e in evs if e.type == "NoticeDelivered"
                     and e.attrs.get("kind") in ASSIGNMENT_KINDS
                     and e.attrs.get("recipient") == lead]
        if len(delivered) != 1:
            problems.append(f"case {case_id}: {len(delivered)} assignment NoticeDelivered "
                            f"events for its unit {lead}")
        keys = receipts.get((case_id, lead or ""), set())
        if len(keys) != 1:
            problems.append(f"case {case_id}: receiver saw {len(keys)} distinct assignment "
                            f"idempotency keys for {lead}: {sorted(keys)}")
        elif delivered and keys != {delivered[0].attrs.get("notice_id")}:
            problems.append(f"case {case_id}: receiver key {keys} is not the recorded notice "
                            f"{delivered[0].attrs.get('notice_id')}")
        summary = summaries.get(case_id)
        if summary is None:
            problems.append(f"case {case_id}: not in case_summaries")
        else:
            if summary[0] != versions[-1]:
                problems.append(f"case {case_id}: projection at version {summary[0]}, "
                                f"store at {versions[-1]}")
            numbers[summary[1]] += 1
    for case_id in set(summaries) - set(by_case):
        problems.append(f"case_summaries has {case_id}, which the store does not")
    for (case_id, recipient), keys in receipts.items():
        if case_id not in by_case:
            problems.append(f"receiver got an assignment for unknown case {case_id}")
        elif len(keys) > 1:
            problems.append(f"case {case_id}: {recipient} got {len(keys)} distinct assignment "
                            f"idempotency keys: {sorted(keys)}")
    for number, n in numbers.items():
        if n > 1:
            problems.append(f"case number {number} given to {n} cases")

    # The stream holds every event exactly once.
    in_store = Counter(f"{e.case_id}:{e.version}" for e in events)
    in_stream = Counter(stream_ids)
    missing = set(in_store) - set(in_stream)
    extra = set(in_stream) - set(in_store)
    dups = sorted(i for i, n in in_stream.items() if n > 1)
    if missing:
        problems.append(f"{len(missing)} events never reached the stream, e.g. {sorted(missing)[:3]}")
    if extra:
        problems.append(f"{len(extra)} stream messages match no stored event, e.g. {sorted(extra)[:3]}")
    if dups:
        problems.append(f"{len(dups)} events are in the stream more than once, e.g. {dups[:3]}")
    print(f"[faults] checked {len(by_case)} cases, {len(events)} events, "
          f"{len(stream_ids)} stream messages, {sum(len(k) for k in receipts.values())} notices")
    return problems


def report(problems: list[str], limit: int = 40) -> str:
    head = "\n  ".join(problems[:limit])
    more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
    return f"{len(problems)} invariant violations:\n  {head}{more}"


def check_answers(load: PetitionLoad, unanswered: list[str]) -> list[str]:
    """What clients saw: never a 5xx other than 503, every 503 with Retry-After, no refusal
    of a valid petition, and in the end a 201 for every petition sent."""
    problems = []
    for key, outcomes in load.outcomes.items():
        for o in outcomes:
            if o.status is None or o.status == 201:
                continue
            if o.status == 503:
                if not o.retry_after:
                    problems.append(f"{key}: 503 without Retry-After at {o.at:.1f}s: {o.error}")
                continue
            problems.append(f"{key}: HTTP {o.status} ({o.phase}, {o.at:.1f}s): {o.error}")
    for key in unanswered:
        problems.append(f"{key}: never answered 201: {load.outcomes[key][-3:]}")
    return problems


def summary_line(name: str, load: PetitionLoad, elapsed: float) -> str:
    statuses = ", ".join(f"{s}: {n}" for s, n in sorted(load.statuses().items(), key=str))
    latencies = sorted(o.latency for v in load.outcomes.values() for o in v)
    p50 = latencies[len(latencies) // 2] if latencies else 0.0
    worst = latencies[-1] if latencies else 0.0
    return (f"[faults:{name}] {load.sent} petitions in {elapsed:.1f}s of load; "
            f"answers {{{statuses}}}; latency p50 {p50:.2f}s max {worst:.2f}s")


# -- servers that a scenario stops and starts again ---------------------------------------


class RestartableServer:
    """A devstack context manager (embedded_nats / embedded_postgres) that can be left and
    entered again on the same data directory (and so the same address)."""

    def __init__(self, kind: str, factory: Any) -> None:
        self.kind = kind
        self.factory = factory
        self.data_dir = Path(tempfile.mkdtemp(prefix=f"faults-{kind}-", dir=DATA_DIR))
        self._cm: Any = None
        self.address: str | None = None

    @property
    def running(self) -> bool:
        return self._cm is not None

    def start(self) -> str:
        assert self._cm is None
        cm = self.factory(self.data_dir)
        address = cm.__enter__()
        self._cm = cm
        if self.address is not None:
            assert address == self.address, f"{self.kind} came back at {address}, not {self.address}"
        self.address = address
        return address

    def stop(self) -> None:
        cm, self._cm = self._cm, None
        if cm is not None:
            cm.__exit__(None, None, None)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def timeline(load: PetitionLoad, bucket: float = 1.0) -> str:
    """Per `bucket` seconds of send time: the answers and the slowest of them."""
    rows: dict[int, list[Outcome]] = defaultdict(list)
    for outcomes in load.outcomes.values():
        for o in outcomes:
            if o.phase == "load":
                rows[int(o.at // bucket)].append(o)
    lines = []
    for slot in sorted(rows):
        answers = Counter(o.status for o in rows[slot])
        worst = max(o.latency for o in rows[slot])
        shown = " ".join(f"{s}x{n}" for s, n in sorted(answers.items(), key=str))
        lines.append(f"  {slot * bucket:5.1f}s: {shown:<28} slowest {worst:5.2f}s")
    return "\n".join(lines)
