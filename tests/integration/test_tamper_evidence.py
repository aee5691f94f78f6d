"""The hash chain on a real PostgreSQL: the database chains every stored event, and the
verifier names the first event an intruder altered, removed or reordered — in one case, across
the whole store, and in an exported document checked offline. Also: a case as it stood then.

This module tampers with rows, so it runs on a database of its own.
"""
from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import psycopg
import pytest

from petitions.audit_cli import main as audit_cli
from petitions.domain.access import Principal, Role
from petitions.domain.audit import chain, verify_export
from petitions.domain.values import Actor
from petitions.infra.audit import CaseAudit, export_case, summary_as_of
from petitions.infra.dsn import as_uri
from petitions.infra.identity import IdentityReads
from petitions.infra.schema import migrate
from petitions.infra.settings import CommonAuthSettings
from petitions.infra.store import CaseStore
from tests.conftest import isolated_env
from tests.integration.conftest import new_case

pytestmark = pytest.mark.integration

ROUTER = Actor(id="routing-service", role="service")
NOTIFIER = Actor(id="notify-service", role="service")
AUDITOR = Principal("auditor-1", Role.AUDITOR, "330000")
ADMIN = Principal("admin-1", Role.PROVINCE_ADMIN, "330000")
KEY = CommonAuthSettings().payload_encryption_key


@pytest.fixture(scope="module")
def audit_env(servers):
    with isolated_env(servers, "audit") as env:
        yield env


@pytest.fixture(scope="module")
def astore(audit_env) -> Iterator[CaseStore]:
    s = CaseStore(audit_env.postgres_dsn, pool_size=2, cipher_key=KEY)
    yield s
    s.close()


@pytest.fixture(scope="module")
async def apool(audit_env) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(as_uri(audit_env.postgres_dsn), min_size=1, max_size=3)
    yield p
    await p.close()


@pytest.fixture(scope="module")
def audit(apool) -> CaseAudit:
    return CaseAudit(apool)


@pytest.fixture
def sql(audit_env) -> Iterator[psycopg.Connection]:
    """What an intruder with database access does."""
    with psycopg.connect(audit_env.postgres_dsn, autocommit=True) as conn:
        yield conn


def written_case(store: CaseStore, events: int = 5):
    """A case with `events` events: Registered, RoutedToUnit an hour later, then notices an
    hour apart."""
    case = new_case()
    store.save(case)
    t0 = case.created_on
    if events >= 2:
        case.route_to_unit(unit_id="land-330106", unit_name="国土", rule_id="r1",
                           rule_set_version="1", explanation="land", actor=ROUTER,
                           at=t0 + timedelta(hours=1))
        store.save(case)
    for k in range(events - 2):
        case.record_notice_delivered(notice_id=f"n{k}", kind="unit_assigned",
                                     recipient="land-330106", channel="webhook",
                                     trigger_version=2, attempts=1, actor=NOTIFIER,
                                     at=t0 + timedelta(hours=2 + k))
        store.save(case)
    assert case.version == events
    return case


async def test_the_database_chains_every_stored_event(astore, audit, sql):
    case = written_case(astore, 4)
    rows = sql.execute("SELECT originator_version, topic, state, chain_hash FROM cases_events "
                       "WHERE originator_id = %s ORDER BY originator_version", (case.id,)).fetchall()
    expected = chain(case.id, [(v, t, bytes(s)) for v, t, s, _ in rows])
    assert [bytes(r[3]) for r in rows] == expected
    head = sql.execute("SELECT version, chain_hash FROM case_chain_heads WHERE case_id = %s",
                       (case.id,)).fetchone()
    assert (head[0], bytes(head[1])) == (4, expected[-1])
    result = await audit.verify_case(case.id)
    assert result.ok and result.events == 4 and result.head_version == 4
    assert await audit.verify_case(uuid.uuid4()) is None


def test_the_store_still_reads_and_writes_with_the_chain_column(astore):
    case = written_case(astore, 3)
    assert [e.originator_version for e in astore.history(case.id)] == [1, 2, 3]
    assert astore.get(case.id).version == 3
    two = new_case(), new_case()
    astore.save(*two)  # several cases in one transaction, as intake's group commit does
    assert all(astore.get(c.id) is not None for c in two)


def test_an_insert_without_its_predecessor_is_refused(astore, sql):
    case = written_case(astore, 2)
    with pytest.raises(psycopg.errors.RaiseException, match="no hashed predecessor"):
        sql.execute("INSERT INTO cases_events (originator_id, originator_version, topic, state) "
                    "VALUES (%s, 4, 't', 'x')", (case.id,))


# -- tampering, each named at its first bad event ------------------------------------------

@pytest.fixture(scope="module")
def tampered(astore, audit_env) -> dict[str, tuple[uuid.UUID, str, int]]:
    """Four cases of five events, each tampered with differently; name -> (case, problem,
    first bad version)."""
    cases = {name: written_case(astore, 5).id
             for name in ("altered", "removed", "swapped", "truncated")}
    with psycopg.connect(audit_env.postgres_dsn, autocommit=True) as db:
        db.execute("UPDATE cases_events SET state = overlay(state placing '\\xff'::bytea "
                   "from 20 for 1) WHERE originator_id = %s AND originator_version = 3",
                   (cases["altered"],))
        db.execute("DELETE FROM cases_events WHERE originator_id = %s AND originator_version = 2",
                   (cases["removed"],))
        with db.transaction():
            for old, new in ((4, -1), (2, 4), (-1, 2)):
                db.execute("UPDATE cases_events SET originator_version = %s "
                           "WHERE originator_id = %s AND originator_version = %s",
                           (new, cases["swapped"], old))
        db.execute("DELETE FROM cases_events WHERE originator_id = %s AND originator_version = 5",
                   (cases["truncated"],))
    return {"altered": (cases["altered"], "altered", 3),
            "removed": (cases["removed"], "removed", 2),
            "swapped": (cases["swapped"], "reordered", 2),
            "truncated": (cases["truncated"], "removed", 5)}


@pytest.mark.parametrize("kind", ["altered", "removed", "swapped", "truncated"])
async def test_tampering_is_named_at_the_first_bad_event(audit, tampered, kind):
    case_id, problem, version = tampered[kind]
    result = await audit.verify_case(case_id)
    assert (result.ok, result.problem, result.version) == (False, problem, version), result


async def test_a_replaced_tail_is_detected(astore, audit, sql):
    case = written_case(astore, 4)
    sql.execute("DELETE FROM cases_events WHERE originator_id = %s AND originator_version = 4",
                (case.id,))
    # The application appends a new fourth event in its place: the chain is whole again,
    # but the head remembers the original.
    reloaded = astore.get(case.id)
    reloaded.record_notice_delivered(notice_id="other", kind="k", recipient="r",
                                     channel="webhook", trigger_version=2, attempts=1,
                                     actor=NOTIFIER, at=reloaded.modified_on)
    astore.save(reloaded)
    result = await audit.verify_case(case.id)
    assert (result.problem, result.version) == ("head_mismatch", 4)


async def test_verify_all_reports_every_tampered_case(audit, tampered, sql):
    report = await audit.verify_all(batch_size=7)  # small batches: cases span batch borders
    expected = {(c, p, v) for c, p, v in tampered.values()}
    found = {(uuid.UUID(str(f.case_id)), f.problem, f.version) for f in report.failures}
    assert expected <= found
    total = sql.execute("SELECT count(*), count(DISTINCT originator_id) FROM cases_events"
                        ).fetchone()
    assert report.events == total[0] and report.cases == total[1]
    assert report.failed == len(report.failures) and not report.ok
    assert (await audit.verify_all(batch_size=100_000)).as_dict()["failures"] == \
        report.as_dict()["failures"]


async def test_a_case_whose_events_are_all_gone_is_reported(astore, audit, sql):
    case = written_case(astore, 2)
    sql.execute("DELETE FROM cases_events WHERE originator_id = %s", (case.id,))
    result = await audit.verify_case(case.id)
    assert (result.problem, result.version) == ("removed", 1)
    report = await audit.verify_all(batch_size=5)
    assert any(str(f.case_id) == str(case.id) for f in report.failures)


def test_the_command_line_names_the_first_bad_event(audit_env, tampered, monkeypatch, capsys):
    monkeypatch.setenv("POSTGRES_DSN", audit_env.postgres_dsn)
    case_id, _, _ = tampered["swapped"]
    assert audit_cli(["verify", "--case", str(case_id)]) == 1
    assert f"case {case_id}: event 2 reordered" in capsys.readouterr().out
    assert audit_cli(["verify"]) == 1
    out = capsys.readouterr().out
    assert f"case {tampered['altered'][0]}: event 3 altered" in out
    assert "FAILED:" in out


# -- export ----------------------------------------------------------------------------------

async def test_an_export_round_trips_through_offline_verification(astore, audit, apool, tmp_path,
                                                                 capsys):
    case = written_case(astore, 4)
    now = case.modified_on + timedelta(days=1)
    doc = await export_case(audit, astore, IdentityReads(apool), case.id, AUDITOR, now)
    doc = json.loads(json.dumps(doc))  # as archived
    assert doc["verification"]["ok"] and doc["head"]["version"] == 4
    assert [e["version"] for e in doc["stored_events"]] == [1, 2, 3, 4]
    assert all(e["notification_id"] > 0 for e in doc["stored_events"])
    assert doc["exported_by"]["subject"] == "auditor-1" and doc["exported_at"] == now.isoformat()
    assert doc["identity"] == "redacted"
    assert doc["history"][0]["data"]["petitioner"] == "[redacted]"
    assert doc["summary"]["version"] == 4 and doc["summary"]["unit"]["unit_id"] == "land-330106"
    assert verify_export(doc).ok

    path = tmp_path / "export.json"
    path.write_text(json.dumps(doc), "utf-8")
    assert audit_cli(["verify-export", str(path)]) == 0
    assert audit_cli(["verify-export", str(path), "--decode"]) == 0
    capsys.readouterr()

    forged_state = json.loads(path.read_text("utf-8"))
    raw = bytearray(base64.b64decode(forged_state["stored_events"][2]["state"]))
    raw[-1] ^= 1
    forged_state["stored_events"][2]["state"] = base64.b64encode(bytes(raw)).decode()
    path.write_text(json.dumps(forged_state), "utf-8")
    assert audit_cli(["verify-export", str(path)]) == 1
    assert "event 3 altered" in capsys.readouterr().out

    dropped = json.loads(json.dumps(doc))
    del dropped["stored_events"][-1]
    path.write_text(json.dumps(dropped), "utf-8")
    assert audit_cli(["verify-export", str(path)]) == 1

    # The decoded history is not covered by the chain; --decode checks it against the bytes.
    rewritten = json.loads(json.dumps(doc))
    rewritten["history"][1]["data"]["unit_id"] = "someone-else"
    path.write_text(json.dumps(rewritten), "utf-8")
    assert audit_cli(["verify-export", str(path)]) == 0
    assert audit_cli(["verify-export", str(path), "--decode"]) == 1
    assert "version 2" in capsys.readouterr().out

    path.write_text("{}", "utf-8")
    assert audit_cli(["verify-export", str(path)]) == 2


async def test_an_export_with_identity_records_the_read(astore, audit, apool):
    case = written_case(astore, 2)
    reads = IdentityReads(apool)
    doc = await export_case(audit, astore, reads, case.id, ADMIN, case.modified_on)
    assert doc["identity"] == "included"
    assert doc["history"][0]["data"]["petitioner"]["name"] == "张三"
    assert [r["purpose"] for r in await reads.for_case(case.id)] == ["audit export"]


async def test_a_tampered_case_still_exports_with_its_failure(audit, astore, apool, tampered):
    case_id, _, _ = tampered["altered"]
    doc = await export_case(audit, astore, IdentityReads(apool), case_id, AUDITOR,
                            datetime.now(UTC))
    assert doc["verification"]["problem"] == "altered"
    assert doc["undecodable_versions"] == [3]  # AES-GCM refuses the altered state too
    assert verify_export(doc).version == 3


# -- as of -----------------------------------------------------------------------------------

async def test_a_case_as_it_stood_at_a_version_or_a_time(astore, apool):
    case = written_case(astore, 4)
    history = astore.history(case.id)
    registered, routed = history[0].timestamp, history[1].timestamp

    async def as_of(**when):
        return await summary_as_of(apool, astore.decode, case.id, **when)

    first = await as_of(version=1)
    assert (first["version"], first["status"], first["unit"]) == (1, "registered", None)
    second = await as_of(version=2)
    assert second["unit"]["unit_id"] == "land-330106" and second["notices"] == {}
    assert await as_of(version=4) == await as_of(version=99) == await as_of()
    assert (await as_of(version=4))["version"] == 4

    assert await as_of(at=routed - timedelta(minutes=1)) == first
    assert await as_of(at=routed) == second
    assert await as_of(at=registered - timedelta(seconds=1)) is None
    assert await summary_as_of(apool, astore.decode, uuid.uuid4(), version=1) is None


# -- the migration backfills what was stored before it ----------------------------------------

async def test_the_migration_chains_events_stored_before_it(servers):
    dbname = f"petitions_test_backfill_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(servers.postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    dsn = as_uri(servers.postgres_dsn, dbname)
    try:
        before = CaseStore(dsn, create_table=True, pool_size=1, cipher_key=KEY)
        try:
            cases = [written_case(before, n) for n in (1, 3, 6)]
        finally:
            before.close()
        assert 2 in migrate(dsn)
        pool = await asyncpg.create_pool(as_uri(dsn), min_size=1, max_size=2)
        try:
            report = await CaseAudit(pool).verify_all()
            assert report.ok and (report.cases, report.events) == (3, 10)
            after = CaseStore(dsn, pool_size=1, cipher_key=KEY)
            try:
                case = after.get(cases[2].id)
                case.record_notice_delivered(notice_id="late", kind="k", recipient="r",
                                             channel="webhook", trigger_version=2, attempts=1,
                                             actor=NOTIFIER, at=case.modified_on)
                after.save(case)  # chains onto the backfilled hashes
            finally:
                after.close()
            result = await CaseAudit(pool).verify_case(cases[2].id)
            assert result.ok and result.head_version == 7
        finally:
            await pool.close()
    finally:
        with psycopg.connect(servers.postgres_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
