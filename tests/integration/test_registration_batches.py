"""Registrations in batches: petitions arriving together are screened in one statement and
their new cases appended in one transaction; a petition that joins a case, or that the domain
refuses, changes nothing for the others; a stop commits what was taken, or refuses it."""
from __future__ import annotations

import asyncio
import uuid

import pytest
from prometheus_client import REGISTRY

from petitions.infra.committer import CommitterStopped, GroupCommit
from services.intake.matching import Match, OpenCaseFinder, Screening, screening_request
from services.intake.registration_batches import RegistrationBatches
from tests.integration.conftest import new_case
from tests.integration.test_screening import _county, _summary

pytestmark = pytest.mark.integration


def _batches(pool, store, **limits) -> RegistrationBatches:
    return RegistrationBatches(OpenCaseFinder(pool), GroupCommit(store, pool=pool), **limits)


def _request(county: str, *, key: str | None = None, content: str | None = None):
    return screening_request(petitioner_key=key or uuid.uuid4().hex, division=county,
                             category="appeal", subject="land",
                             content=content or uuid.uuid4().hex, number_for=(county, 2026))


def _numbered(county: str):
    def build(screening: Screening):
        return new_case(county, f"{county}-2026-{screening.seq:06d}")
    return build


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_petitions_arriving_together_are_screened_and_appended_in_batches(pool, store):
    batches, county = _batches(pool, store, max_in_flight=1), _county()
    before = {stage: _sample("petitions_registration_stage_seconds_count", stage=stage)
              for stage in ("queued", "screen", "commit")}
    answers = await asyncio.gather(*(batches.register(_request(county), _numbered(county))
                                     for _ in range(30)))
    assert all(a.error is None and a.case is not None for a in answers)
    numbers = sorted(a.case.case_number for a in answers)
    assert numbers == [f"{county}-2026-{n:06d}" for n in range(1, 31)]
    assert all(store.get(a.case.id) is not None for a in answers)
    # The first ran alone (nothing was running); the others queued behind it.
    assert 2 <= batches.batches < 30
    assert batches.commit.transactions == batches.batches
    # One queue wait per petition; one screening time and one commit time per batch.
    after = {stage: _sample("petitions_registration_stage_seconds_count", stage=stage)
             for stage in ("queued", "screen", "commit")}
    assert after["queued"] - before["queued"] == 30
    assert after["screen"] - before["screen"] == batches.batches
    assert after["commit"] - before["commit"] == batches.batches
    await batches.stop()


async def test_a_petition_joining_an_open_case_is_only_screened(pool, store):
    batches, county = _batches(pool, store), _county()
    key = uuid.uuid4().hex
    open_case = await _summary(pool, division=county, key=key)
    built = []

    def build(screening: Screening):
        built.append(screening)
        return new_case(county)

    answer = await batches.register(_request(county, key=key), build)
    assert answer.screening == Screening(match=Match(open_case, "repeat"))
    assert (answer.case, answer.error, built) == (None, None, [])
    assert batches.commit.saved == 0
    # It took no number: the next new petition of the county gets the first.
    new = await batches.register(_request(county), _numbered(county))
    assert new.case.case_number == f"{county}-2026-000001"
    await batches.stop()


async def test_a_case_the_domain_refuses_fails_only_its_own_registration(pool, store):
    batches, county = _batches(pool, store, max_in_flight=1), _county()

    def refused(screening: Screening):
        raise ValueError("people_count must be at least 1")

    builders = [_numbered(county)] * 3 + [refused] + [_numbered(county)] * 3
    answers = await asyncio.gather(*(batches.register(_request(county), b) for b in builders))
    assert isinstance(answers[3].error, ValueError) and answers[3].case is None
    saved = [a for i, a in enumerate(answers) if i != 3]
    assert all(a.error is None and store.get(a.case.id) is not None for a in saved)
    assert batches.commit.saved == 6
    await batches.stop()


async def test_every_petition_taken_is_committed_before_stopping(pool, store):
    batches, county = _batches(pool, store, max_batch=7), _county()
    registering = [asyncio.create_task(batches.register(_request(county), _numbered(county)))
                   for _ in range(40)]
    await asyncio.sleep(0)  # every petition is taken
    await batches.stop()
    answers = await asyncio.gather(*registering)
    assert all(store.get(a.case.id) is not None for a in answers)
    with pytest.raises(CommitterStopped):
        await batches.register(_request(county), _numbered(county))


async def test_petitions_not_finished_when_the_stop_times_out_are_refused_not_left_hanging(
        pool, store):
    """The case-number counters are locked by another transaction (a database that stopped
    answering, as far as screening can tell): the stop gives up on its timeout and every
    petition taken gets CommitterStopped instead of waiting for ever."""
    batches, county = _batches(pool, store, max_batch=2, max_in_flight=1), _county()
    async with pool.acquire() as blocker:
        locked = blocker.transaction()
        await locked.start()
        await blocker.execute("LOCK TABLE case_numbers IN SHARE MODE")
        try:
            registering = [asyncio.create_task(
                batches.register(_request(county), _numbered(county))) for _ in range(5)]
            await asyncio.sleep(0.1)
            await batches.stop(timeout=0.1)
            answers = await asyncio.wait_for(
                asyncio.gather(*registering, return_exceptions=True), 5)
        finally:
            await locked.rollback()
    assert [type(a) for a in answers] == [CommitterStopped] * 5
    assert batches.commit.saved == 0
    with pytest.raises(CommitterStopped):
        await batches.register(_request(county), _numbered(county))
