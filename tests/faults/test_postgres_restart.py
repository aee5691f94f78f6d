"""PostgreSQL stopped and started again under a steady load: while it is down clients get
503 with Retry-After (never another 5xx), no case is half written, and once it is back every
petition completes. The scenario has its own embedded PostgreSQL (even when POSTGRES_DSN
names an external one), so restarting it disturbs no other test."""
from __future__ import annotations

import asyncio
import time

import pytest

from petitions.devstack import Infrastructure, embedded_postgres
from tests.conftest import isolated_env
from tests.faults.harness import (
    Cluster,
    PetitionLoad,
    RestartableServer,
    WebhookReceiver,
    check_answers,
    check_invariants,
    report,
    summary_line,
    timeline,
)

pytestmark = pytest.mark.slow

RATE = 20.0
BEFORE, OUTAGE, AFTER = 4.0, 8.0, 6.0


async def _scenario(cluster: Cluster, load: PetitionLoad, postgres: RestartableServer,
                    env, receiver) -> list[str]:
    await cluster.wait_ready()
    problems: list[str] = []
    stop = asyncio.Event()
    load_task = asyncio.create_task(load.run(stop))
    started = time.monotonic()
    await asyncio.sleep(BEFORE)
    await asyncio.to_thread(postgres.stop)
    stopped_at = time.monotonic() - started
    await asyncio.sleep(OUTAGE)
    await asyncio.to_thread(postgres.start)
    restarted_at = time.monotonic() - started
    await asyncio.sleep(AFTER)
    stop.set()
    await load_task
    print(summary_line("postgres", load, time.monotonic() - started),
          f"postgres down {stopped_at:.1f}s..{restarted_at:.1f}s\n{timeline(load)}")

    # During the outage: 503 with Retry-After, and an answer to every request.
    during = [o for v in load.outcomes.values() for o in v
              if stopped_at + 0.5 < o.at + o.latency < restarted_at - 0.5]
    if not any(o.status == 503 for o in during):
        problems.append(f"no 503 while PostgreSQL was down: {load.statuses()}")
    for key, outcomes in load.outcomes.items():
        for o in outcomes:
            if o.status is None:
                problems.append(f"{key}: no HTTP answer at {o.at:.1f}s: {o.error}")
    problems += check_answers(load, await load.complete(timeout=30))
    problems += await check_invariants(env, load, receiver, settle_timeout=90)
    if cluster.dead():
        problems.append(f"not running after the restart: {cluster.dead()}")
    return problems


def test_postgres_restarted_under_load(servers, clerk_tokens):
    with RestartableServer("postgres", embedded_postgres) as postgres:
        infra = Infrastructure(postgres.address, servers.nats_url)
        with isolated_env(infra, "faults_pg") as env, WebhookReceiver() as receiver:
            cluster = Cluster("postgres", env, receiver)
            cluster.start_all()
            try:
                load = PetitionLoad(cluster.intake_url, clerk_tokens, rate=RATE,
                                    max_duration=BEFORE + OUTAGE + AFTER + 10)
                problems = asyncio.run(_scenario(cluster, load, postgres, env, receiver))
            finally:
                codes = cluster.stop_all()
                if not postgres.running:  # so that isolated_env can drop the database
                    postgres.start()
    assert not problems, report(problems) + f"\nlogs: {cluster.log_dir}"
    assert codes == {k: 0 for k in cluster.instances}, f"unclean shutdown: {codes}"
    cluster.discard_logs()  # kept only when something failed
