"""Two replicas of each consuming service (routing, deadlines, notify) share the work for the
whole load: every case is still handled exactly once."""
from __future__ import annotations

import asyncio
import time

import pytest

from tests.conftest import isolated_env
from tests.faults.harness import (
    CONSUMING,
    Cluster,
    PetitionLoad,
    WebhookReceiver,
    check_answers,
    check_invariants,
    run_scenario,
    summary_line,
    timeline,
)

pytestmark = pytest.mark.slow

LOAD_SECONDS = 15.0
RATE = 20.0


async def _scenario(cluster: Cluster, load: PetitionLoad, env, receiver) -> list[str]:
    await cluster.wait_ready()
    problems: list[str] = []
    stop = asyncio.Event()
    task = asyncio.create_task(load.run(stop))
    start = time.monotonic()
    while time.monotonic() - start < LOAD_SECONDS:
        await asyncio.sleep(0.5)
        if cluster.dead():
            problems.append(f"died during the load: {cluster.dead()}")
            break
    stop.set()
    await task
    print(summary_line("replicas", load, time.monotonic() - start), f"\n{timeline(load)}")
    problems += check_answers(load, await load.complete(timeout=30))
    problems += await check_invariants(env, load, receiver, settle_timeout=60)
    if cluster.dead():
        problems.append(f"died: {cluster.dead()}")
    return problems


def test_two_replicas_of_each_consuming_service(servers, clerk_tokens):
    with isolated_env(servers, "faults_replicas") as env, WebhookReceiver() as receiver:
        cluster = Cluster("replicas", env, receiver, replicas={s: 2 for s in CONSUMING})
        assert len(cluster.instances) == 7
        run_scenario(cluster, clerk_tokens,
                     lambda cluster, load: _scenario(cluster, load, env, receiver),
                     rate=RATE, max_duration=LOAD_SECONDS + 5)
