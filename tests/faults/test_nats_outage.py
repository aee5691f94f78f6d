"""NATS stopped for 10 seconds under a steady load, then started again on the same port and
storage: intake keeps registering, the relay catches up, the consumers resume, and nothing
is lost or done twice. The scenario has its own nats-server, so stopping it disturbs no
other test."""
from __future__ import annotations

import functools

import pytest

from petitions.devstack import Infrastructure, embedded_nats, free_port
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
BEFORE, OUTAGE, AFTER = 4.0, 10.0, 5.0


async def _scenario(cluster: Cluster, load: PetitionLoad, nats_server: RestartableServer,
                    env, receiver) -> list[str]:
    await cluster.wait_ready()
    problems: list[str] = []
    outage = await load_through_outage(load, nats_server, before=BEFORE, outage=OUTAGE,
                                       after=AFTER)
    print(summary_line("nats", load, outage.elapsed),
          f"nats down {outage.stopped_at:.1f}s..{outage.restarted_at:.1f}s",
          f"\n{timeline(load)}")
    during = [o for v in load.outcomes.values() for o in v
              if outage.stopped_at + 1 < o.at < outage.restarted_at - 1]
    if not any(o.status == 201 for o in during):
        problems.append("intake registered nothing while NATS was down")
    problems += check_answers(load, await load.complete(timeout=30))
    problems += await check_invariants(env, load, receiver, settle_timeout=90)
    if cluster.dead():
        problems.append(f"not running after the outage: {cluster.dead()}")
    return problems


def test_nats_stopped_for_ten_seconds(servers, clerk_tokens):
    port = free_port()
    with RestartableServer("nats", functools.partial(embedded_nats, port=port)) as nats_server:
        infra = Infrastructure(servers.postgres_dsn, nats_server.address)
        with isolated_env(infra, "faults_nats") as env, WebhookReceiver() as receiver:
            def restore() -> None:  # so that isolated_env can delete the stream
                if not nats_server.running:
                    nats_server.start()

            run_scenario(
                Cluster("nats", env, receiver), clerk_tokens,
                lambda cluster, load: _scenario(cluster, load, nats_server, env, receiver),
                rate=RATE, max_duration=BEFORE + OUTAGE + AFTER + 10, after_stop=restore)
