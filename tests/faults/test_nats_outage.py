"""NATS stopped for 10 seconds under a steady load, then started again on the same port and
storage: intake keeps registering, the relay catches up, the consumers resume, and nothing
is lost or done twice. The scenario has its own nats-server, so stopping it disturbs no
other test."""
from __future__ import annotations

import asyncio
import functools
import time

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
    report,
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
    stop = asyncio.Event()
    load_task = asyncio.create_task(load.run(stop))
    started = time.monotonic()
    await asyncio.sleep(BEFORE)
    await asyncio.to_thread(nats_server.stop)
    stopped_at = time.monotonic() - started
    await asyncio.sleep(OUTAGE)
    await asyncio.to_thread(nats_server.start)
    restarted_at = time.monotonic() - started
    await asyncio.sleep(AFTER)
    stop.set()
    await load_task
    print(summary_line("nats", load, time.monotonic() - started),
          f"nats down {stopped_at:.1f}s..{restarted_at:.1f}s", f"\n{timeline(load)}")
    during = [o for v in load.outcomes.values() for o in v
              if stopped_at + 1 < o.at < restarted_at - 1]
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
            cluster = Cluster("nats", env, receiver)
            cluster.start_all()
            try:
                load = PetitionLoad(cluster.intake_url, clerk_tokens, rate=RATE,
                                    max_duration=BEFORE + OUTAGE + AFTER + 10)
                problems = asyncio.run(_scenario(cluster, load, nats_server, env, receiver))
            finally:
                codes = cluster.stop_all()
                if not nats_server.running:  # so that isolated_env can delete the stream
                    nats_server.start()
    assert not problems, report(problems) + f"\nlogs: {cluster.log_dir}"
    assert codes == {k: 0 for k in cluster.instances}, f"unclean shutdown: {codes}"
    cluster.discard_logs()  # kept only when something failed
