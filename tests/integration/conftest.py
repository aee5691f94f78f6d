from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
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


async def commit_one_by_one_while(follow: Callable[[asyncio.Event], Awaitable[None]],
                                  store: CaseStore, event_log: EventLog,
                                  position: Callable[[], int], n: int = 12) -> list[Case]:
    """Runs a log follower (`follow(stopping)`) while `n` new cases are saved one commit
    each, some right after the last and some a little later (landing while it works or
    while it waits), until `position()` reaches the log's head: 30 s at most, failing."""
    stopping = asyncio.Event()
    running = asyncio.create_task(follow(stopping))
    try:
        cases = []
        for i in range(n):
            cases.append(new_case())
            await asyncio.to_thread(store.save, cases[-1])
            await asyncio.sleep(0.01 * (i % 3))
        head = await event_log.head()
        async with asyncio.timeout(30):
            while position() < head:
                await asyncio.sleep(0.05)
    finally:
        stopping.set()
        running.cancel()  # a long poll interval would hold it that long
        await asyncio.gather(running, return_exceptions=True)
    return cases
