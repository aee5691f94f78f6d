"""End to end: from the POST's 201 to the routing event, the deadline event and the delivered
notice; and the baseline hop (one JetStream publish -> durable pull consumer fetch, the way the
services consume) at the same rate.

Times: the 201 is stamped by the load generator (wall clock, on receipt); `RoutedToUnit` and
`ClockStarted` by their `recorded_at` in the case history (the event's timestamp, taken by the
service when it decided, just before its commit); the notice by the webhook receiver on arrival.
All on one machine, one clock.
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx

from bench.load import percentile


async def jetstream_hop(nats_url: str, stream: str, prefix: str, rate: float,
                        duration: float) -> dict[str, Any]:
    """Publish at a fixed rate (awaiting each PubAck, as the relay does) and receive with a
    durable pull consumer fetching up to 64 as soon as there is one (`Puller`) with explicit
    acks (as the services do)."""
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

    from petitions.infra.pull import Puller

    nc = await nats.connect(nats_url, connect_timeout=3)
    js = nc.jetstream()
    latencies: list[float] = []
    try:
        await js.add_stream(StreamConfig(name=stream, subjects=[f"{prefix}.>"]))
        await js.add_consumer(stream, ConsumerConfig(durable_name="hop",
                                                     ack_policy=AckPolicy.EXPLICIT,
                                                     max_ack_pending=1000))
        puller = await Puller(nc, stream, "hop").start()
        total = int(rate * duration)
        done = asyncio.Event()

        async def consume() -> None:
            while len(latencies) < total and not done.is_set():
                msgs = await puller.fetch(64, wait=1.0)
                now = time.perf_counter()
                for m in msgs:
                    latencies.append(now - float(m.data))
                await asyncio.gather(*(m.ack() for m in msgs))

        consumer = asyncio.create_task(consume())
        start = time.perf_counter()
        pending: set[asyncio.Task[Any]] = set()
        for i in range(total):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            t = asyncio.create_task(js.publish(f"{prefix}.hop", repr(time.perf_counter()).encode(),
                                               stream=stream, headers={"Nats-Msg-Id": str(i)}))
            pending.add(t)
            t.add_done_callback(pending.discard)
        try:
            await asyncio.wait_for(consumer, timeout=10)
        except TimeoutError:
            done.set()
    finally:
        try:
            await js.delete_stream(stream)
        except Exception:
            pass
        await nc.close()
    latencies.sort()
    return {"n": len(latencies), "p50_ms": _ms(percentile(latencies, 50)),
            "p99_ms": _ms(percentile(latencies, 99))}


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 2)


async def wait_for_notices(receiver_port: int, case_ids: set[str], timeout: float
                           ) -> dict[str, float]:
    """Wait (bounded) until every case in `case_ids` had its assignment notice delivered;
    returns case_id -> arrival time for those that arrived."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=30) as client:
        while True:
            dump = (await client.get(f"http://127.0.0.1:{receiver_port}/dump")).json()
            got = {c: t for c, t in dump.items() if c in case_ids}
            if len(got) >= len(case_ids) or time.monotonic() > deadline:
                return got
            await asyncio.sleep(0.5)


async def receiver_stats(receiver_port: int) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as client:
        return (await client.get(f"http://127.0.0.1:{receiver_port}/stats")).json()


WANTED = ("RoutedToUnit", "ClockStarted", "NoticeDelivered")


async def backlog(nats_url: str, stream: str, dsn: str) -> int:
    """Work not yet done downstream: events not yet relayed, plus messages the consumers have
    not yet received or acknowledged."""
    import asyncpg
    import nats

    nc = await nats.connect(nats_url, connect_timeout=3, max_reconnect_attempts=1)
    try:
        infos = await nc.jetstream().consumers_info(stream)
        pending = sum(i.num_pending + i.num_ack_pending for i in infos)
    finally:
        await nc.close()
    conn = await asyncpg.connect(dsn)
    try:
        head = await conn.fetchval("SELECT coalesce(max(notification_id), 0) FROM cases_events")
        relayed = await conn.fetchval(
            "SELECT coalesce(max(position), 0) FROM log_positions WHERE reader = 'relay'")
    finally:
        await conn.close()
    return int(pending) + max(0, int(head) - int(relayed or 0))


async def wait_drained(nats_url: str, stream: str, dsn: str, timeout: float
                       ) -> tuple[float, int]:
    """Wait (bounded) until the consumers have caught up; returns (seconds waited, backlog)."""
    start = time.monotonic()
    left, zeros = -1, 0
    while time.monotonic() - start < timeout:
        left = await backlog(nats_url, stream, dsn)
        zeros = zeros + 1 if left == 0 else 0
        if zeros >= 2:
            break
        await asyncio.sleep(0.5)
    return round(time.monotonic() - start, 1), left


async def store_histories(dsn: str, store: Any, case_ids: list[str]
                          ) -> dict[str, dict[str, float]]:
    """case_id -> {event type: its timestamp (recorded_at), unix time}, read straight from the
    event store and decoded as the services decode it."""
    from uuid import UUID

    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT originator_id, originator_version, topic, state FROM cases_events "
            "WHERE originator_id = ANY($1::uuid[]) ORDER BY originator_id, originator_version",
            [UUID(c) for c in case_ids])
    finally:
        await conn.close()
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        e = store.decode(r["originator_id"], r["originator_version"], r["topic"], r["state"])
        seen = out.setdefault(str(r["originator_id"]), {})
        seen.setdefault(type(e).__name__, e.timestamp.timestamp())
    return out


def latencies(records: list[tuple[str, float, float]], notice_arrivals: dict[str, float],
              events: dict[str, dict[str, float]]) -> dict[str, Any]:
    """p50/p99 (ms) from each case's 201 to each later fact; missing facts are counted."""
    series: dict[str, list[float]] = {"routed": [], "deadline": [], "notice_recorded": [],
                                      "notice_delivered": []}
    missing = dict.fromkeys(series, 0)
    for case_id, t201, _ in records:
        ev = events.get(case_id, {})
        for name, key in (("routed", "RoutedToUnit"), ("deadline", "ClockStarted"),
                          ("notice_recorded", "NoticeDelivered")):
            if key in ev:
                series[name].append(ev[key] - t201)
            else:
                missing[name] += 1
        if case_id in notice_arrivals:
            series["notice_delivered"].append(notice_arrivals[case_id] - t201)
        else:
            missing["notice_delivered"] += 1
    out: dict[str, Any] = {"cases": len(records)}
    delivered = [notice_arrivals[c] for c, _, _ in records if c in notice_arrivals]
    if records and delivered:
        first = min(t for _, t, _ in records)
        out["completion_per_s"] = round(len(delivered) / max(max(delivered) - first, 1e-3), 1)
    for name, values in series.items():
        values.sort()
        out[name] = {"n": len(values), "missing": missing[name],
                     "p50_ms": _ms(percentile(values, 50)), "p99_ms": _ms(percentile(values, 99)),
                     "max_ms": _ms(values[-1] if values else None)}
    return out


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str)


# ---------------------------------------------------------------------------- consumer burst
#
# `python -m bench.pipeline --cases 2000`: what routing and deadlines cost per case. Intake
# (the only relay) and the two consumers run as processes; a burst of registrations goes in
# through intake; CPU seconds of each consumer from before the burst until both have caught
# up, divided by the cases; how many optimistic-concurrency conflicts each had (its
# /metrics; each one a whole batch decided again), how many cases were re-read just before
# an append to avoid one; and the 201 -> RoutedToUnit / ClockStarted latencies of the burst.

CONSUMERS = ("routing", "deadlines")


def consumer_counters(port: int) -> dict[str, float]:
    """The consumer counters a service exposes on /metrics (conflicts, handled messages)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        for name in ("petitions_consumer_conflicts_total", "petitions_consumer_rereads_total",
                     "petitions_messages_handled_total"):
            if line.startswith(name + "{") or line.startswith(name + " "):
                out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def burst(cases: int, concurrency: int, drain_timeout: float) -> dict[str, Any]:
    import os
    import subprocess
    import sys
    from contextlib import ExitStack

    from bench.procs import cpu_seconds
    from bench.stack import LOG_DIR, Stack, bearer_token, case_store, log, stop_services
    from petitions.devstack import (
        PORT_VARIABLES,
        REPO_ROOT,
        SERVICES,
        Infrastructure,
        free_port,
        service_env,
        start_service,
        wait_until_ready,
    )

    with ExitStack() as exits:
        stack = Stack(exits)
        dsn = stack.database("burst")
        stream, prefix = stack.stream("burst")
        overrides = {"POSTGRES_DSN": dsn, "NATS_STREAM": stream, "NATS_SUBJECT_PREFIX": prefix,
                     "INTAKE_GRPC_PORT": str(free_port())}
        overrides.update({PORT_VARIABLES[n]: str(free_port()) for n in SERVICES})
        env = service_env(Infrastructure(dsn, stack.infra.nats_url), overrides)
        # Only intake relays, so the consumers' CPU is their own work.
        envs = {"intake": env, **{n: {**env, "RELAY_ENABLED": "false"} for n in CONSUMERS}}
        started = [start_service(n, e, LOG_DIR / "burst") for n, e in envs.items()]
        services = {s.name: s for s in started}
        exits.callback(stop_services, services)
        wait_until_ready(started, timeout=90)
        time.sleep(1.0)  # start-up work (configuration, calendars) settles
        before = {n: cpu_seconds(services[n].proc.pid) for n in CONSUMERS}
        counters_before = {n: consumer_counters(services[n].port) for n in CONSUMERS}
        log(f"burst: {cases} registrations at {concurrency} concurrent clients")
        argv = [sys.executable, "-m", "bench.load", "--port", str(services["intake"].port),
                "--mode", "closed", "--concurrency", str(concurrency), "--duration", "120",
                "--max-requests", str(cases), "--record", "--seed", "7"]
        token = bearer_token()
        if token:
            argv += ["--token", token]
        t0 = time.monotonic()
        load = json.loads(subprocess.run(
            argv, check=True, stdout=subprocess.PIPE,
            cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}).stdout)
        registered = time.monotonic() - t0
        waited, left = asyncio.run(wait_drained(stack.infra.nats_url, stream, dsn, drain_timeout))
        spent = {n: cpu_seconds(services[n].proc.pid) - before[n] for n in CONSUMERS}
        counters = {n: {k: v - counters_before[n].get(k, 0.0)
                        for k, v in consumer_counters(services[n].port).items()}
                    for n in CONSUMERS}
        records = load.pop("records")
        store = case_store(dsn, pool_size=1)
        try:
            events = asyncio.run(store_histories(dsn, store, sorted({c for c, _, _ in records})))
        finally:
            store.close()
        n = max(len(records), 1)
        lat = latencies(records, {}, events)
        lat.pop("notice_delivered", None)
        lat.pop("notice_recorded", None)
        return {
            "cases": len(records), "registered_in_s": round(registered, 1),
            "intake_per_s": round(len(records) / max(registered, 1e-9), 1),
            "drained_after_s": waited, "backlog_left": left,
            "cpu_ms_per_case": {k: round(v * 1000 / n, 2) for k, v in spent.items()},
            "conflicts_per_case": {k: round(c.get("petitions_consumer_conflicts_total", 0) / n, 3)
                                   for k, c in counters.items()},
            "rereads_per_case": {k: round(c.get("petitions_consumer_rereads_total", 0) / n, 3)
                                 for k, c in counters.items()},
            "messages_handled": {k: c.get("petitions_messages_handled_total")
                                 for k, c in counters.items()},
            "latency": lat,
            "load_average": os.getloadavg(),
        }


def _main() -> None:
    import argparse

    p = argparse.ArgumentParser(description="routing and deadlines under a burst of "
                                            "registrations: CPU per case, conflicts, latency")
    p.add_argument("--cases", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--drain-timeout", type=float, default=120.0)
    a = p.parse_args()
    print(dumps(burst(a.cases, a.concurrency, a.drain_timeout)))


if __name__ == "__main__":
    _main()
