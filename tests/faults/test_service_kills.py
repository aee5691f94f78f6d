"""kill -9 of each service at random moments under a steady load, one at a time, each
restarted in place: once the system has recovered nothing is lost, nothing is done twice."""
from __future__ import annotations

import asyncio
import random
import time

import pytest

from tests.conftest import isolated_env
from tests.faults.harness import (
    Cluster,
    PetitionLoad,
    WebhookReceiver,
    check_answers,
    check_invariants,
    report,
    seed_from_env,
    summary_line,
    timeline,
)

pytestmark = pytest.mark.slow

RATE = 20.0
MAX_LOAD_SECONDS = 40.0
# A consumer killed with messages in hand gets them back only after the consumer's ack wait
# (60 s for routing and deadlines, 30 s for notify), so routing and deadlines go first and
# their recovery overlaps the rest of the run.
FIRST = ["routing", "deadlines"]
THEN = ["intake", "notify"]


async def _kill_and_restart(cluster: Cluster, rng: random.Random, started: float,
                            kills: list[str]) -> None:
    order = rng.sample(FIRST, len(FIRST)) + rng.sample(THEN, len(THEN))
    order.append(rng.choice(THEN))  # one of them a second time
    for key in order:
        await asyncio.sleep(rng.uniform(0.3, 2.0))
        cluster.kill(key)
        kills.append(f"{key}@{time.monotonic() - started:.1f}s")
        await asyncio.sleep(rng.uniform(0.1, 1.0))
        cluster.start(key)
        await cluster.wait_ready([key], timeout=60)


async def _scenario(cluster: Cluster, load: PetitionLoad, env, receiver,
                    rng: random.Random) -> tuple[list[str], list[str]]:
    await cluster.wait_ready()
    stop = asyncio.Event()
    load_task = asyncio.create_task(load.run(stop))
    started = time.monotonic()
    kills: list[str] = []
    problems: list[str] = []
    try:
        await asyncio.wait_for(_kill_and_restart(cluster, rng, started, kills), MAX_LOAD_SECONDS)
    except (TimeoutError, RuntimeError) as exc:
        problems.append(f"kill/restart cycle failed: {exc!r}")
    await asyncio.sleep(1.0)  # a little steady load after the last restart
    stop.set()
    await load_task
    print(summary_line("kills", load, time.monotonic() - started), "kills:", kills,
          f"\n{timeline(load)}")
    problems += check_answers(load, await load.complete(timeout=30))
    problems += await check_invariants(env, load, receiver, settle_timeout=100)
    if cluster.dead():
        problems.append(f"not running at the end: {cluster.dead()}")
    return problems, kills


def test_kill_9_each_service_under_load(servers, clerk_tokens):
    rng = random.Random(seed_from_env("kills"))
    with isolated_env(servers, "faults_kills") as env, WebhookReceiver() as receiver:
        cluster = Cluster("kills", env, receiver)
        cluster.start_all()
        try:
            load = PetitionLoad(cluster.intake_url, clerk_tokens, rate=RATE,
                                max_duration=MAX_LOAD_SECONDS + 5)
            problems, kills = asyncio.run(_scenario(cluster, load, env, receiver, rng))
        finally:
            codes = cluster.stop_all()
    assert not problems, report(problems) + f"\nkills: {kills}\nlogs: {cluster.log_dir}"
    assert {k for k, i in cluster.instances.items() if i.kills} == set(cluster.instances), kills
    assert codes == {k: 0 for k in cluster.instances}, f"unclean shutdown: {codes}"
    cluster.discard_logs()  # kept only when something failed
