from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from uuid import uuid4

import asyncpg
import pytest

from petitions.domain.case import Case
from petitions.domain.values import Actor, Category, Channel, Petitioner
from petitions.infra.bus import Bus
from petitions.infra.eventlog import EventLog
from petitions.infra.pools import create_pool
from petitions.infra.settings import CommonAuthSettings
from petitions.infra.store import CaseStore

pytestmark = pytest.mark.integration

CLERK = Actor(id="clerk-1", role="intake_clerk", jurisdiction="330106")


def new_case(division: str = "330106", number: str | None = None) -> Case:
    now = datetime.now(UTC)
    return Case.register(
        case_id=uuid4(), case_number=number or f"{division}-2026-{uuid4().int % 10**6:06d}",
        channel=Channel.LETTER, category=Category.APPEAL, division=division,
        subject="land", content="宅基地纠纷", requests=["重新丈量"], people_count=1,
        petitioner=Petitioner(name="张三", id_number="330106199001011234"),
        received_at=now, submission_digest="d", actor=CLERK, at=now,
    )


@pytest.fixture(scope="session")
def store(test_env) -> Iterator[CaseStore]:
    s = CaseStore(test_env.postgres_dsn, pool_size=4,
                  cipher_key=CommonAuthSettings().payload_encryption_key)
    yield s
    s.close()


@pytest.fixture(scope="session")
async def pool(test_env) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(test_env.postgres_dsn, min_size=1, max_size=5)  # as the services do
    yield p
    await p.close()


@pytest.fixture(scope="session")
def event_log(pool, store) -> EventLog:
    return EventLog(pool, store.decode)


@pytest.fixture
async def bus(test_env) -> AsyncIterator[Bus]:
    b = await Bus.connect(test_env.nats_url, test_env.nats_stream, test_env.subject_prefix, "test")
    await b.ensure_stream()
    yield b
    await b.close()
