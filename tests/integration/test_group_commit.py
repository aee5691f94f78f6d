"""The group committer keeps up to `max_in_flight` transactions going at once, never more,
and every queued save is committed."""
from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY

from petitions.domain.case import Case
from petitions.domain.values import Category, Channel, Petitioner
from petitions.infra.committer import CommitterStopped, GroupCommitter
from tests.integration.conftest import CLERK, new_case

pytestmark = pytest.mark.integration

REGISTRATION = dict(
    case_number="330106-2026-999999", channel=Channel.LETTER, category=Category.APPEAL,
    division="330106", subject="land", content="宅基地纠纷", requests=["重新丈量"],
    people_count=1, petitioner=Petitioner(name="张三", id_number="330106199001011234"),
    submission_digest="d", actor=CLERK)


class CountingStore:
    """The real store, counting the transactions in progress at once. The first two wait for
    each other (a barrier), so they can only both finish if they really overlap."""

    def __init__(self, store) -> None:
        self.store = store
        self.lock = threading.Lock()
        self.now = self.most = self.calls = 0
        self.barrier = threading.Barrier(2, timeout=10)

    def save(self, *cases, contexts=None) -> None:
        with self.lock:
            self.now += 1
            self.calls += 1
            self.most = max(self.most, self.now)
            first_two = self.calls <= 2
        try:
            if first_two:
                self.barrier.wait()
            self.store.save(*cases, contexts=contexts)
        finally:
            with self.lock:
                self.now -= 1


async def test_two_transactions_are_in_flight_at_once_and_never_more(store):
    counting = CountingStore(store)
    committer = GroupCommitter(counting, max_batch=5, max_in_flight=2)  # type: ignore[arg-type]
    cases = [new_case() for _ in range(60)]
    await asyncio.gather(*(committer.save(c) for c in cases))
    await committer.stop()
    assert counting.most == 2
    assert committer.saved == 60 and committer.transactions >= 12
    assert all(store.get(c.id) is not None for c in cases)


@pytest.mark.parametrize("over", ["thread", "pool"])
async def test_a_conflict_in_one_batch_fails_only_its_own_save(store, pool, over):
    committer = GroupCommitter(store, pool=pool if over == "pool" else None, max_batch=10,
                               max_in_flight=2)
    taken = new_case()
    store.save(taken)
    # A second registration of the same case id (as a concurrent idempotent retry would be):
    # version 1 of that case is already stored, so its save conflicts.
    duplicate = Case.register(**{**REGISTRATION, "case_id": taken.id,
                                 "at": datetime.now(UTC), "received_at": datetime.now(UTC)})
    others = [new_case() for _ in range(15)]
    results = await asyncio.gather(*(committer.save(c) for c in [*others[:7], duplicate,
                                                                 *others[7:]]),
                                   return_exceptions=True)
    await committer.stop()
    assert [type(r).__name__ for r in results].count("IntegrityError") == 1
    assert all(store.get(c.id) is not None for c in others)


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_each_save_is_timed_in_the_queue_and_each_batch_in_its_commit(store):
    before = {"queued": _sample("petitions_registration_stage_seconds_count", stage="queued"),
              "commit": _sample("petitions_registration_stage_seconds_count", stage="commit"),
              "cases": _sample("petitions_group_commit_cases_sum"),
              "batches": _sample("petitions_group_commit_cases_count")}
    committer = GroupCommitter(store, max_batch=4, max_in_flight=1)
    await asyncio.gather(*(committer.save(new_case()) for _ in range(10)))
    await committer.stop()
    # One queue wait per case; one commit time and one batch size per transaction.
    assert _sample("petitions_registration_stage_seconds_count", stage="queued") \
        == before["queued"] + 10
    assert _sample("petitions_registration_stage_seconds_count", stage="commit") \
        == before["commit"] + committer.transactions
    assert _sample("petitions_group_commit_cases_sum") == before["cases"] + 10
    assert _sample("petitions_group_commit_cases_count") \
        == before["batches"] + committer.transactions
    assert committer.transactions >= 3  # batches of at most 4


class StuckStore:
    """A store whose saves wait until released (a database that stopped answering)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def save(self, *cases, contexts=None) -> None:
        self.release.wait(10)


async def test_saves_not_committed_when_the_stop_times_out_are_refused_not_left_hanging():
    stuck = StuckStore()
    committer = GroupCommitter(stuck, max_batch=2, max_in_flight=1)  # type: ignore[arg-type]
    saves = [asyncio.create_task(committer.save(new_case())) for _ in range(5)]
    await asyncio.sleep(0.05)
    try:
        await committer.stop(timeout=0.1)
        results = await asyncio.wait_for(asyncio.gather(*saves, return_exceptions=True), 5)
    finally:
        stuck.release.set()
    assert [type(r) for r in results] == [CommitterStopped] * 5
    with pytest.raises(CommitterStopped):
        await committer.save(new_case())
