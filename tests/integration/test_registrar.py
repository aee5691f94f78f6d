"""Registering through the Registrar on real PostgreSQL: retries of one request sent at once
(a client that gave up waiting and sent it again) end in one case, answered to all of them."""
from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from petitions.domain.access import Principal, Role
from petitions.domain.values import Category, Channel, Petitioner
from petitions.infra.committer import GroupCommit
from services.intake.matching import OpenCaseFinder
from services.intake.registration import IdempotencyKeyReused, RegisterPetition, Registrar
from services.intake.registration_batches import RegistrationBatches
from tests.integration.test_screening import _county

pytestmark = pytest.mark.integration


def _registrar(pool, store, **limits) -> Registrar:
    batches = RegistrationBatches(OpenCaseFinder(pool), GroupCommit(store, pool=pool), **limits)
    return Registrar(store, batches, b"test-identity-key")


def _petition(county: str, content: str) -> RegisterPetition:
    return RegisterPetition(
        channel=Channel.LETTER, category=Category.APPEAL, division=county, subject="land",
        content=content, requests=["重新丈量"], people_count=1,
        petitioner=Petitioner(name="张三", id_number="330106199001011234"),
        received_at=datetime.now(UTC))


@pytest.mark.parametrize("together", [False, True])
async def test_retries_sent_at_once_register_one_case_and_all_get_it(pool, store, together):
    """`together`: the retries are screened in one batch (another petition's batch runs
    meanwhile), so none of them sees the others' case stored: they all build it, the batch's
    append conflicts, and each is then appended alone: one wins, the others answer with its
    case. Otherwise they come in batches of their own, as they happen to."""
    registrar, county = _registrar(pool, store, max_in_flight=1), _county()
    clerk = Principal("clerk-1", Role.INTAKE_CLERK, county)
    petition = _petition(county, uuid.uuid4().hex)
    now = datetime.now(UTC)
    running = None
    if together:
        running = asyncio.create_task(
            registrar.register(_petition(county, uuid.uuid4().hex), clerk, now))
        await asyncio.sleep(0)  # its batch runs; the retries queue behind it, as one batch
    answers = await asyncio.gather(*(
        registrar.register(petition, clerk, now, idempotency_key="retry-1") for _ in range(6)))
    if running is not None:
        assert not (await running).replayed
        # The retries were one batch; its append failed, and alone only one was saved.
        assert registrar.batches.batches == 2
        assert (registrar.batches.commit.saved, registrar.batches.commit.transactions) == (2, 2)
    case_ids = {a.case.id for a in answers}
    assert len(case_ids) == 1
    assert [a.replayed for a in answers].count(False) == 1
    [case_id] = case_ids
    assert len(store.history(case_id)) == 1  # one Registered event, whoever won
    # Later, the same request is answered with that case; the key with another petition is
    # refused, and registers nothing.
    later = await registrar.register(petition, clerk, now, idempotency_key="retry-1")
    assert later.replayed and later.case.id == case_id
    saved = registrar.batches.commit.saved
    with pytest.raises(IdempotencyKeyReused):
        await registrar.register(_petition(county, uuid.uuid4().hex), clerk, now,
                                 idempotency_key="retry-1")
    assert registrar.batches.commit.saved == saved
    await registrar.batches.stop()
