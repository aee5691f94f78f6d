"""PostgreSQL stopped and started again under a steady load: while it is down clients get
503 with Retry-After (never another 5xx), no case is half written, and once it is back every
petition completes. The scenario has its own embedded PostgreSQL (even when POSTGRES_DSN
names an external one), so restarting it disturbs no other test."""
from __future__ import annotations

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
    load_through_outage,
    run_scenario,
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
    outage = await load_through_outage(load, postgres, before=BEFORE, outage=OUTAGE,
                                       after=AFTER)
    stopped_at, restarted_at = outage.stopped_at, outage.restarted_at
    print(summary_line("postgres", load, outage.elapsed),
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
            def restore() -> None:  # so that isolated_env can drop the database
                if not postgres.running:
                    postgres.start()

            run_scenario(
                Cluster("postgres", env, receiver), clerk_tokens,
                lambda cluster, load: _scenario(cluster, load, postgres, env, receiver),
                rate=RATE, max_duration=BEFORE + OUTAGE + AFTER + 10, after_stop=restore)
