"""Real PostgreSQL and NATS for the tests: embedded servers by default, or the ones named by
POSTGRES_DSN / NATS_URL. Each suite gets its own database, stream and subject prefix, so runs
(and the integration and end-to-end suites of one run) never see each other's data, and
everything a run creates or starts is removed or stopped at the end."""
from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import nats
import psycopg
import pytest

from petitions.devstack import DATA_DIR, Infrastructure, infrastructure
from petitions.infra.dsn import as_uri
from petitions.infra.schema import migrate


@dataclass(frozen=True)
class TestEnv:
    postgres_dsn: str
    nats_url: str
    nats_stream: str
    subject_prefix: str

    def as_env(self) -> dict[str, str]:
        return {
            "POSTGRES_DSN": self.postgres_dsn,
            "NATS_URL": self.nats_url,
            "NATS_STREAM": self.nats_stream,
            "NATS_SUBJECT_PREFIX": self.subject_prefix,
            # Several suites keep a whole system running at once; small pools keep them all
            # within an external server's default max_connections (100).
            "DB_POOL_SIZE": "4",
        }


@pytest.fixture(scope="session")
def servers() -> Iterator[Infrastructure]:
    data_dir = DATA_DIR / f"test-{uuid.uuid4().hex[:10]}"
    try:
        with infrastructure(data_dir) as infra:
            yield infra
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@contextmanager
def isolated_env(infra: Infrastructure, suite: str) -> Iterator[TestEnv]:
    """A fresh database (migrated) and a fresh stream and subject prefix for one suite."""
    run_id = f"{suite}_{uuid.uuid4().hex[:8]}"
    dbname = f"petitions_test_{run_id}"
    stream = f"PETITIONS_TEST_{run_id.upper()}"
    with psycopg.connect(infra.postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    try:
        dsn = as_uri(infra.postgres_dsn, dbname)
        migrate(dsn)
        yield TestEnv(dsn, infra.nats_url, stream, f"test{run_id}")
    finally:
        with psycopg.connect(infra.postgres_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        asyncio.run(_delete_stream(infra.nats_url, stream))


async def _delete_stream(url: str, stream: str) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().delete_stream(stream)
    except nats.js.errors.NotFoundError:
        pass
    finally:
        await nc.close()


@pytest.fixture(scope="session")
def test_env(servers) -> Iterator[TestEnv]:
    with isolated_env(servers, "integration") as env:
        yield env


@pytest.fixture(scope="session")
def tokens() -> dict[str, str]:
    """Bearer tokens signed with the development key the services use in tests."""
    from petitions.domain.access import Principal, Role
    from petitions.infra.auth import TokenAuthority, dev_principals
    from petitions.infra.settings import CommonAuthSettings

    authority = TokenAuthority(CommonAuthSettings().auth_signing_key)
    principals = dev_principals(["330102", "330106", "330108"], "330000")
    principals["city_330100_supervisor"] = Principal("supervisor-330100", Role.BUREAU_SUPERVISOR,
                                                     "330100")
    principals["unit_land_330106"] = Principal("officer-land-330106", Role.HANDLING_UNIT,
                                               "330106", "land-330106")
    return {name: authority.mint(p) for name, p in principals.items()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
