"""Notify's webhook throughput and latency, on embedded PostgreSQL and NATS.

    python -m bench.notify_bench [--rate 1000] [--duration 5] [--replicas 1]
    python -m bench.notify_bench cpu [N]     # CPU per event of fold, plan+render, body

NOTIFY_BENCH_LATENCIES=<file> writes each event's commit time and stage latencies.

What it does, all on loopback and all removed at the end:
  1. embedded PostgreSQL and NATS in a temporary directory (or POSTGRES_DSN / NATS_URL), a
     fresh database and JetStream stream;
  2. a webhook receiver process that de-duplicates on the idempotency key and notes when each
     case's notice first arrived;
  3. N registered cases, each of its own petitioner (not measured), then the notify service
     as a process (its relay publishes the log, its consumer plans, its senders POST, its
     recorder appends the outcome);
  4. after a warm-up (500 events at 250/s, not measured), at a fixed offered rate,
     RoutedToUnit is committed for those cases as routing commits (the commit time is noted
     when the store's transaction returns); each makes one signed assignment slip to the
     lead unit's webhook;
  5. measured: deliveries per second (first to last arrival), latency from each event's
     commit to its arrival at the receiver (p50, p99) and where it goes (into the stream, the
     plan stored, the send), and when the outcome is recorded on every case; baseline (same
     run, same receiver): signed POSTs straight from one asyncio client with no store, bus or
     bookkeeping.

`run(...)` returns rows {what, measured, baseline, target}; `main` prints them.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
# Events before the measured run, at a low rate, once the services are up: the first of each
# kind of work (templates compiled, statements prepared, connections opened) is not what a
# running service costs.
WARM_UP = 500
WARM_UP_RATE = 250.0


def log(msg: str) -> None:
    print(f"[notify-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- receiver


def _receiver_main(port: int) -> None:
    """A minimal HTTP/1.1 keep-alive webhook receiver: 200 to every POST, de-duplicating on
    Idempotency-Key; GET /stats -> counts, GET /dump -> {case_id: first arrival (unix s)}."""
    arrivals: dict[str, float] = {}
    keys: set[str] = set()
    posts = 0

    def response(status: str, body: bytes = b"") -> bytes:
        return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal posts
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                now = time.time()
                lines = head.split(b"\r\n")
                method, path, _ = lines[0].split(b" ", 2)
                length, key = 0, ""
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"idempotency-key":
                        key = value.strip().decode()
                if length:
                    await reader.readexactly(length)
                if method == b"POST" and key.startswith("baseline-"):
                    writer.write(response("200 OK", b'{"duplicate":false}'))
                elif method == b"POST":
                    posts += 1
                    duplicate = key in keys
                    if not duplicate:
                        keys.add(key)
                        arrivals.setdefault(key.split(":", 1)[0], now)
                    writer.write(response("200 OK", b'{"duplicate":%s}' % (
                        b"true" if duplicate else b"false")))
                elif path == b"/stats":
                    writer.write(response("200 OK", json.dumps(
                        {"cases": len(arrivals), "keys": len(keys), "posts": posts}).encode()))
                elif path == b"/dump":
                    writer.write(response("200 OK", json.dumps(arrivals).encode()))
                else:
                    writer.write(response("404 Not Found"))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with server:
            await stop.wait()

    # on libuv's loop, as the services: the receiver stands in for systems that run
    # elsewhere, so it should take as little of this machine as it can
    run_loop(serve())


def run_loop(main: Any) -> Any:
    """`main` run to its end on libuv's loop, as the services run (uvloop), and its result."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def _get_json(port: int, path: str) -> Any:
    import httpx

    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10).json()


# ----------------------------------------------------------------------------- baseline


async def _baseline(port: int, n: int, concurrency: int = 64) -> float:
    """Signed POSTs of a realistic body straight to the receiver: deliveries/s."""
    from services.notify.http11 import Http11Client
    from services.notify.webhook import WebhookSender

    body = {"case_id": "x", "documents": [{"html": "交办单" * 600}]}
    client = Http11Client(10, concurrency)
    try:
        sender = WebhookSender(client, "bench-secret")
        url = f"http://127.0.0.1:{port}/units/baseline"
        queue = list(range(n))

        async def worker() -> None:
            while queue:
                i = queue.pop()
                await sender.send(url, f"baseline-{uuid.uuid4().hex}:{i}", body)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return n / (time.perf_counter() - started)
    finally:
        await client.aclose()


# ----------------------------------------------------------------------------- the run


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def run(rate: float = 1000.0, duration: float = 5.0, *, data_dir: Path | None = None,
        timeout: float = 120.0, replicas: int = 1) -> list[dict[str, Any]]:
    """Run once; returns rows {what, measured, baseline, target}. `replicas` notify processes
    share the work (one of them relays); the CPU row is all of them together."""
    import psycopg

    from petitions.devstack import (
        ServiceProcess,
        free_port,
        infrastructure,
        service_env,
        start_service,
        stop_process,
        wait_for_port,
        wait_until_ready,
    )
    from petitions.infra.dsn import as_uri
    from petitions.infra.schema import migrate
    from petitions.infra.settings import CommonAuthSettings
    from petitions.infra.store import CaseStore

    n = int(rate * duration)
    tmp = Path(tempfile.mkdtemp(prefix="notify-bench-", dir=data_dir))
    run_id = uuid.uuid4().hex[:8]
    with ExitStack() as exits:
        exits.callback(shutil.rmtree, tmp, True)
        infra = exits.enter_context(infrastructure(tmp))
        dbname = f"notify_bench_{run_id}"
        with psycopg.connect(infra.postgres_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')

        def drop() -> None:
            with psycopg.connect(infra.postgres_dsn, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')

        exits.callback(drop)
        dsn = as_uri(infra.postgres_dsn, dbname)
        migrate(dsn)
        stream = f"NOTIFY_BENCH_{run_id.upper()}"
        exits.callback(lambda: asyncio.run(_delete_stream(infra.nats_url, stream)))

        receiver_port = free_port()
        receiver = subprocess.Popen([sys.executable, "-m", "bench.notify_bench", "receiver",
                                     str(receiver_port)], cwd=REPO_ROOT,
                                    env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
        exits.callback(stop_process, receiver)

        log(f"baseline: {n} signed POSTs straight to the receiver")
        wait_for_port(receiver_port, timeout)
        baseline = asyncio.run(_baseline(receiver_port, n))

        store = CaseStore(dsn, pool_size=2, cipher_key=CommonAuthSettings().payload_encryption_key)
        exits.callback(store.close)
        log(f"registering {n} + {WARM_UP} cases (not measured)")
        cases = _register(store, n + WARM_UP)
        warm_up, cases = cases[:WARM_UP], cases[WARM_UP:]

        log_dir = tmp / "logs"
        profile = os.environ.get("NOTIFY_BENCH_PROFILE")
        notifies = []
        for replica in range(replicas):
            notify_port = free_port()
            env = service_env(infra, {
                "POSTGRES_DSN": dsn, "NATS_STREAM": stream,
                "NATS_SUBJECT_PREFIX": f"nbench{run_id}", "NOTIFY_HTTP_PORT": str(notify_port),
                "NOTIFY_DEFAULT_WEBHOOK_URL":
                    f"http://127.0.0.1:{receiver_port}/units/{{unit_id}}",
                "LOG_LEVEL": "WARNING",
            })
            if profile and replica == 0:  # cProfile around the service, written as it stops
                log_dir.mkdir(parents=True, exist_ok=True)
                proc = subprocess.Popen(
                    [sys.executable, "-m", "cProfile", "-o", profile, "-m",
                     "services.notify.main"], env=env, cwd=REPO_ROOT,
                    stdout=open(log_dir / "notify.log", "ab"),  # noqa: SIM115
                    stderr=subprocess.STDOUT)
                notify = ServiceProcess("notify", notify_port, proc)
            else:
                notify = start_service("notify", env, log_dir)
            exits.callback(notify.stop)
            notifies.append(notify)
        wait_until_ready(notifies)
        _wait_relay_caught_up(dsn, timeout)
        log(f"warming up: {WARM_UP} RoutedToUnit at {WARM_UP_RATE:.0f}/s (not measured)")
        run_loop(_route_at_rate(store, dsn, warm_up, WARM_UP_RATE))
        deadline = time.monotonic() + timeout
        _wait_delivered(receiver_port, WARM_UP, deadline)
        _wait_recorded(dsn, WARM_UP, deadline)
        cpu_before = sum(_cpu_seconds(n.proc.pid) for n in notifies)

        log(f"offering {rate:.0f} RoutedToUnit/s for {duration:.0f} s")
        commits = run_loop(_route_at_rate(store, dsn, cases, rate))
        deadline = time.monotonic() + timeout
        _wait_delivered(receiver_port, WARM_UP + n, deadline)
        arrivals = _get_json(receiver_port, "/dump")
        recorded_at = _wait_recorded(dsn, WARM_UP + n, deadline)
        stats = _get_json(receiver_port, "/stats")
        cpu = sum(_cpu_seconds(n.proc.pid) for n in notifies) - cpu_before
        published = asyncio.run(_published_at(infra.nats_url, stream,
                                               f"nbench{run_id}.case.RoutedToUnit",
                                               WARM_UP + n))
        planned = _planned_at(dsn)

    latencies = [(arrivals[c] - t) * 1000 for c, t in commits.items() if c in arrivals]
    if os.environ.get("NOTIFY_BENCH_LATENCIES"):
        _write_latencies(Path(os.environ["NOTIFY_BENCH_LATENCIES"]), commits, published,
                         planned, arrivals)
    first_commit = min(commits.values())
    # Rates as offered and as delivered: events over the span from the first to the last
    # (commit, or arrival). Delivery keeps up when the two agree; one falling behind spreads
    # its arrivals over a longer span.
    times = sorted(arrivals[c] for c in commits if c in arrivals)
    throughput = (len(times) - 1) / max(1e-9, times[-1] - times[0]) if len(times) > 1 else 0.0
    offered = (n - 1) / max(1e-9, max(commits.values()) - first_commit)
    recorded_rate = n / max(1e-9, recorded_at - first_commit) if recorded_at else 0.0
    rows = [
        {"what": "notify: webhook deliveries/s, first to last arrival (offered "
                 f"{offered:.0f}/s, {n} events, {replicas} "
                 f"replica{'s' if replicas > 1 else ''})", "measured": round(throughput, 1),
         "baseline": f"{baseline:.0f}/s signed POSTs straight to the receiver",
         "target": ">= 1000", "met": throughput >= 1000},
        {"what": "notify: commit -> receiver p50 (ms)", "measured": round(_pct(latencies, 50), 1),
         "baseline": None, "target": None},
        {"what": "notify: commit -> receiver p99 (ms)", "measured": round(_pct(latencies, 99), 1),
         "baseline": None, "target": "< 100", "met": _pct(latencies, 99) < 100},
        {"what": "notify: outcomes recorded on the cases/s", "measured": round(recorded_rate, 1),
         "baseline": None, "target": None},
        {"what": "notify: process CPU per delivery (ms; relay, plan, send, record)"
                 + (f"; {replicas} replicas together" if replicas > 1 else ""),
         "measured": round(cpu * 1000 / max(1, len(latencies)), 2), "baseline": None,
         "target": "<= 1 (one core for 1000/s)"},
        *_stage_rows(commits, published, planned, arrivals),
        {"what": "notify: receiver posts / distinct keys / cases delivered (with the "
                 f"{WARM_UP} of the warm-up)",
         "measured": f"{stats['posts']} / {stats['keys']} / "
                     f"{len(latencies) + WARM_UP} of {n + WARM_UP}",
         "baseline": None, "target": " / ".join([str(n + WARM_UP)] * 3)},
    ]
    return rows


def _write_latencies(path: Path, commits: dict[str, float], published: dict[str, float],
                     planned: dict[str, float], arrivals: dict[str, float]) -> None:
    """One line per event, in commit order: its commit (unix s), then ms from the commit to
    the stream, to the plan stored and to the receiver (to see when a tail formed)."""
    def ms(marks: dict[str, float], case: str, committed: float) -> str:
        return f"{(marks[case] - committed) * 1000:.1f}" if case in marks else "-"

    with path.open("w") as out:
        out.write("commit_unix_s stream_ms planned_ms receiver_ms\n")
        for case, committed in sorted(commits.items(), key=lambda kv: kv[1]):
            out.write(f"{committed:.4f} {ms(published, case, committed)} "
                      f"{ms(planned, case, committed)} {ms(arrivals, case, committed)}\n")


def _stage_rows(commits: dict[str, float], published: dict[str, float],
                planned: dict[str, float], arrivals: dict[str, float]) -> list[dict[str, Any]]:
    """Where the time from commit to receiver goes, p50 / p99 of each stage (ms): the relay
    (commit -> in the stream), the consumer (-> the plan's transaction began), the send (->
    the receiver)."""
    marks = [("commit -> in the stream", commits, published),
             ("in the stream -> plan stored", published, planned),
             ("plan stored -> receiver", planned, arrivals)]
    rows = []
    for what, start, end in marks:
        spans = [(end[c] - start[c]) * 1000 for c in commits if c in start and c in end]
        rows.append({"what": f"notify: stage {what} p50 / p99 (ms)",
                     "measured": f"{_pct(spans, 50):.1f} / {_pct(spans, 99):.1f}",
                     "baseline": None, "target": None})
    return rows


async def _published_at(url: str, stream: str, subject: str, n: int) -> dict[str, float]:
    """When JetStream stored each case's RoutedToUnit (the message's stream timestamp)."""
    import nats

    nc = await nats.connect(url)
    out: dict[str, float] = {}
    try:
        sub = await nc.jetstream().subscribe(subject, stream=stream, ordered_consumer=True)
        while len(out) < n:
            try:
                msg = await sub.next_msg(timeout=5)
            except Exception:
                break
            body = json.loads(msg.data)
            out[str(body["case_id"])] = msg.metadata.timestamp.timestamp()
        await sub.unsubscribe()
    finally:
        await nc.close()
    return out


def _planned_at(dsn: str) -> dict[str, float]:
    """When each case's delivery row was stored (the plan's transaction start)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        return {str(case): float(at) for case, at in conn.execute(
            "SELECT case_id, extract(epoch FROM created_at) FROM deliveries")}


async def _delete_stream(url: str, stream: str) -> None:
    import nats

    nc = await nats.connect(url)
    try:
        await nc.jetstream().delete_stream(stream)
    except Exception:
        pass
    finally:
        await nc.close()


def _petitioner(i: int) -> Any:
    """Every case its own petitioner, as in life: what a case's notices must keep from its
    units (its petitioner's identity) is worked out per case, never shared between cases."""
    from petitions.domain.values import Petitioner

    return Petitioner(name=f"张{_GIVEN[i % len(_GIVEN)]}{_GIVEN[i // len(_GIVEN) % len(_GIVEN)]}",
                      phone=f"138{i:08d}", id_number=f"330106{19700101 + i % 9000:08d}{i % 1000:03d}X",
                      address=f"西湖区转塘街道某村{i}号")


_GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂"


def _register(store: Any, n: int) -> list[Any]:
    from petitions.domain.case import Case
    from petitions.domain.values import Actor, Category, Channel

    clerk = Actor(id="bench-clerk", role="intake_clerk", jurisdiction="330106")
    now = datetime.now(UTC)
    cases = []
    for i in range(n):
        cases.append(Case.register(
            case_id=uuid.uuid4(), case_number=f"330106-2026-{i:06d}", channel=Channel.LETTER,
            category=Category.APPEAL, division="330106", subject="land",
            content=f"村里重新分配宅基地时漏掉了我家（{i}号）", requests=["重新丈量并登记"],
            people_count=1, petitioner=_petitioner(i), received_at=now,
            submission_digest=uuid.uuid4().hex, actor=clerk, at=now))
    # 100 per transaction: a pipelined insert of several hundred Registered events at once
    # was seen to stall (client and server both waiting) on this machine
    for i in range(0, n, 100):
        store.save(*cases[i:i + 100])
    return cases


def _wait_relay_caught_up(dsn: str, timeout: float) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        head = conn.execute("SELECT max(notification_id) FROM cases_events").fetchone()[0] or 0
        while True:
            row = conn.execute("SELECT position FROM log_positions WHERE reader = 'relay'"
                               ).fetchone()
            if row and row[0] >= head:
                return
            if time.monotonic() > deadline:
                raise TimeoutError("the relay did not catch up")
            time.sleep(0.2)


async def _route_at_rate(store: Any, dsn: str, cases: list[Any], rate: float
                         ) -> dict[str, float]:
    """Commit RoutedToUnit for every case at `rate`/s, in small transactions every 10 ms, as
    routing commits its batches (`CaseStore.save_async` over an asyncpg pool)."""
    from petitions.domain.values import Actor
    from petitions.infra.pools import create_pool

    router = Actor(id="routing-service", role="service")
    commits: dict[str, float] = {}
    tick = 0.01
    pool = await create_pool(dsn, min_size=1, max_size=2)
    try:
        started = time.monotonic()
        done, ticks = 0, 0
        while done < len(cases):
            ticks += 1
            delay = started + ticks * tick - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            # every case due by the end of this tick (the rate need not be a whole number
            # of cases per tick)
            upto = min(len(cases), int(ticks * tick * rate))
            if upto <= done:
                continue
            batch, done = cases[done:upto], upto
            now = datetime.now(UTC)
            for case in batch:
                case.route_to_unit(unit_id="land-330106", unit_name="西湖区自然资源和规划局",
                                   rule_id="bench", rule_set_version="bench",
                                   explanation="bench", actor=router, at=now)
            await store.save_async(pool, *batch)
            committed = time.time()
            for case in batch:
                commits[str(case.id)] = committed
    finally:
        await pool.close()
    return commits


def _wait_delivered(receiver_port: int, n: int, deadline: float) -> None:
    while _get_json(receiver_port, "/stats")["cases"] < n:
        if time.monotonic() > deadline:
            log("timed out waiting for the deliveries")
            return
        time.sleep(0.2)


def _wait_recorded(dsn: str, n: int, deadline: float) -> float | None:
    """When every delivery row was settled after its outcome was recorded on the case."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            row = conn.execute("SELECT count(*), extract(epoch FROM max(updated_at)) FROM "
                               "deliveries WHERE state = 'delivered'").fetchone()
            if row[0] >= n:
                return float(row[1])
            if time.monotonic() > deadline:
                return None
            time.sleep(0.2)


def cpu(n: int = 2000) -> dict[str, float]:
    """CPU (process time, ms) per RoutedToUnit of notify's pure path: fold the case, plan and
    render the slip, build, scan, encode and sign the webhook body. Process time, not wall
    time, so a busy shared machine disturbs it far less than the end-to-end run."""
    from petitions.domain.directory import Directory
    from petitions.infra.settings import REPO_ROOT as ROOT
    from services.notify.config import Contacts, Routes
    from services.notify.confidentiality import assert_clean, identity_terms
    from services.notify.documents import Renderer
    from services.notify.facts import fold
    from services.notify.handler import webhook_payload
    from services.notify.plan import Planner, Trigger
    from services.notify.repository import Delivery, delivery_id
    from services.notify.webhook import encode_body, sign

    def load(name: str) -> Any:
        return json.loads((ROOT / "config" / name).read_text("utf-8"))

    planner = Planner(Directory.from_dict(load("directory.json")),
                      Routes.from_dict(load("notify-routes.json")),
                      Contacts.from_dict(load("notify-contacts.json")), Renderer())
    case = _register_one()
    rows = _rows(case)
    phases = {"fold": 0.0, "plan+render": 0.0, "body (payload, scan, encode, sign)": 0.0}
    for i in range(n + 50):  # the first 50 warm the caches and are not counted
        t0 = time.process_time()
        facts = fold(str(case.id), rows)
        t1 = time.process_time()
        etype, version, at, data = rows[-1]
        plan = planner.plan(facts, Trigger(str(case.id), version, etype, at, data))
        t2 = time.process_time()
        for p in plan.deliveries:
            d = Delivery(delivery_id(p.key), p.event_id, p.recipient, p.channel, case.id,
                         p.trigger_version, p.division, p.kind, p.party,
                         [doc.id for doc in p.documents], p.optional, "sending", 1)
            body = encode_body(webhook_payload(d, p.documents))
            assert_clean(body.decode(), identity_terms(facts))
            sign("bench-secret", body)
        t3 = time.process_time()
        if i >= 50:
            for name, dt in zip(phases, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                phases[name] += dt
    return {name: round(total * 1000 / n, 3) for name, total in phases.items()}


def _register_one() -> Any:
    from petitions.domain.case import Case
    from petitions.domain.values import Actor, Category, Channel, Petitioner

    now = datetime.now(UTC)
    case = Case.register(
        case_id=uuid.uuid4(), case_number="330106-2026-000001", channel=Channel.LETTER,
        category=Category.APPEAL, division="330106", subject="land",
        content="村里重新分配宅基地时漏掉了我家", requests=["重新丈量并登记"], people_count=1,
        petitioner=Petitioner(name="张三", phone="13800000000"), received_at=now,
        submission_digest=uuid.uuid4().hex,
        actor=Actor(id="bench-clerk", role="intake_clerk", jurisdiction="330106"), at=now)
    case.route_to_unit(unit_id="land-330106", unit_name="西湖区自然资源和规划局",
                       rule_id="bench", rule_set_version="bench", explanation="bench",
                       actor=Actor(id="routing-service", role="service"), at=now)
    return case


def _rows(case: Any) -> list[tuple[str, int, str, dict[str, Any]]]:
    from petitions.infra.events import event_data

    return [(type(e).__name__, e.originator_version, e.timestamp.isoformat(), event_data(e))
            for e in case.collect_events()]


def main(argv: list[str]) -> int:
    if argv[:1] == ["receiver"]:
        _receiver_main(int(argv[1]))
        return 0
    if argv[:1] == ["cpu"]:  # python -m bench.notify_bench cpu [N]
        print(json.dumps(cpu(int(argv[1]) if len(argv) > 1 else 2000), ensure_ascii=False))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.notify_bench")
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--replicas", type=int, default=1,
                        help="notify processes sharing the consumer (one relays)")
    args = parser.parse_args(argv)
    rows = run(args.rate, args.duration, replicas=args.replicas)
    width = max(len(r["what"]) for r in rows)
    print(f"{'what':<{width}}  {'measured':>14}  {'baseline':>10}  target")
    for r in rows:
        baseline = "—" if r["baseline"] is None else r["baseline"]
        print(f"{r['what']:<{width}}  {r['measured']!s:>14}  {baseline!s:>10}  "
              f"{r['target'] or '—'}")
    print(json.dumps(rows, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
