"""A group commit appends its batch of new cases in one transaction; a conflict fails only
the case that conflicts."""
from __future__ import annotations

import contextvars
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY

from petitions.domain.case import Case
from petitions.domain.values import Category, Channel, Petitioner
from petitions.infra.committer import GroupCommit, NewAggregate
from tests.integration.conftest import CLERK, new_case

pytestmark = pytest.mark.integration

REGISTRATION = dict(
    case_number="330106-2026-999999", channel=Channel.LETTER, category=Category.APPEAL,
    division="330106", subject="land", content="宅基地纠纷", requests=["重新丈量"],
    people_count=1, petitioner=Petitioner(name="张三", id_number="330106199001011234"),
    submission_digest="d", actor=CLERK)


def _new(*cases: Case) -> list[NewAggregate]:
    return [NewAggregate(c, contextvars.copy_context()) for c in cases]


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_batch_is_one_transaction_timed_and_counted(store, pool):
    before = {"commit": _sample("petitions_registration_stage_seconds_count", stage="commit"),
              "cases": _sample("petitions_group_commit_cases_sum"),
              "batches": _sample("petitions_group_commit_cases_count")}
    commit = GroupCommit(store, pool=pool)
    cases = [new_case() for _ in range(10)]
    assert await commit.append(_new(*cases)) == [None] * 10
    assert (commit.transactions, commit.saved) == (1, 10)
    assert all(store.get(c.id) is not None for c in cases)
    assert not any(c.pending_events for c in cases)  # saved: nothing left pending
    assert _sample("petitions_registration_stage_seconds_count", stage="commit") \
        == before["commit"] + 1
    assert _sample("petitions_group_commit_cases_sum") == before["cases"] + 10
    assert _sample("petitions_group_commit_cases_count") == before["batches"] + 1
    assert await commit.append([]) == [] and commit.transactions == 1


@pytest.mark.parametrize("over", ["thread", "pool"])
async def test_a_conflict_in_one_batch_fails_only_its_own_case(store, pool, over):
    commit = GroupCommit(store, pool=pool if over == "pool" else None)
    taken = new_case()
    store.save(taken)
    # A second registration of the same case id (as a concurrent idempotent retry would be):
    # version 1 of that case is already stored, so its append conflicts.
    duplicate = Case.register(**{**REGISTRATION, "case_id": taken.id,
                                 "at": datetime.now(UTC), "received_at": datetime.now(UTC)})
    others = [new_case() for _ in range(15)]
    answers = await commit.append(_new(*others[:7], duplicate, *others[7:]))
    assert [type(a).__name__ for a in answers] == ["NoneType"] * 7 + ["IntegrityError"] \
        + ["NoneType"] * 8
    assert all(store.get(c.id) is not None for c in others)
    assert commit.saved == 15
