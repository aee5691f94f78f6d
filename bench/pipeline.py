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
    durable pull consumer using fetch(64, timeout=1) and explicit acks (as the services do)."""
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

    nc = await nats.connect(nats_url, connect_timeout=3)
    js = nc.jetstream()
    latencies: list[float] = []
    try:
        await js.add_stream(StreamConfig(name=stream, subjects=[f"{prefix}.>"]))
        await js.add_consumer(stream, ConsumerConfig(durable_name="hop",
                                                     ack_policy=AckPolicy.EXPLICIT,
                                                     max_ack_pending=1000))
        sub = await js.pull_subscribe_bind("hop", stream=stream)
        total = int(rate * duration)
        done = asyncio.Event()

        async def consume() -> None:
            while len(latencies) < total and not done.is_set():
                try:
                    msgs = await sub.fetch(64, timeout=1.0)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
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
