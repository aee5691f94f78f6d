"""The store's one-round-trip append (migration 8's `cases_append`): the same guarantees as
eventsourcing's own insert path — optimistic concurrency, notification ids in commit order,
the hash chain, the stored bytes, the trace context beside the events."""
from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError

from petitions.domain.values import Actor
from petitions.infra.schema import APPEND_LOCK_KEY
from petitions.infra.settings import CommonAuthSettings
from petitions.infra.store import CaseStore, TraceContextRecorder
from tests.conftest import isolated_env
from tests.integration.conftest import new_case

pytestmark = pytest.mark.integration

ROUTER = Actor(id="routing-service", role="service")
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _recorder(store: CaseStore) -> TraceContextRecorder:
    recorder = store.app.recorder
    assert isinstance(recorder, TraceContextRecorder)
    return recorder


@pytest.fixture(scope="module")
def library_path_store(test_env):
    """A store that appends through eventsourcing's own transaction (the path before
    migration 8), to compare what the two paths store."""
    s = CaseStore(test_env.postgres_dsn, pool_size=2,
                  cipher_key=CommonAuthSettings().payload_encryption_key)
    _recorder(s).use_append_function = False
    yield s
    s.close()


@pytest.fixture(scope="module")
def traced_store(test_env):
    s = CaseStore(test_env.postgres_dsn, pool_size=2,
                  cipher_key=CommonAuthSettings().payload_encryption_key,
                  trace_context=lambda: TRACEPARENT)
    yield s
    s.close()


def _rows(dsn: str, sql: str, *params):
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()


def test_a_migrated_store_appends_through_the_database_function(store):
    assert _recorder(store).use_append_function


def test_the_append_returns_the_notification_ids_it_assigned(store, test_env):
    cases = [new_case() for _ in range(3)]
    stored = [e for c in cases for e in c.collect_events()]
    mapped = [store.mapper.to_stored_event(e) for e in stored]
    ids = _recorder(store).insert_events(mapped)
    rows = _rows(test_env.postgres_dsn,
                 "SELECT notification_id FROM cases_events WHERE originator_id = ANY(%s) "
                 "ORDER BY notification_id", [c.id for c in cases])
    assert ids == [r[0] for r in rows]
    assert ids == sorted(ids)


def test_a_conflicting_append_raises_integrity_error_and_leaves_nothing(traced_store, test_env):
    case = new_case()
    traced_store.save(case)
    first, second = traced_store.get(case.id), traced_store.get(case.id)
    at = datetime.now(UTC)
    for c in (first, second):
        c.route_to_unit(unit_id="a", unit_name="A", rule_id="r1", rule_set_version="1",
                        explanation="x", actor=ROUTER, at=at)
    other = new_case()  # saved in the same (failing) transaction as the conflicting event
    traced_store.save(first)
    with pytest.raises(IntegrityError):
        traced_store.save(second, other)
    assert traced_store.get(other.id) is None
    assert _rows(test_env.postgres_dsn,
                 "SELECT count(*) FROM event_trace_context WHERE originator_id = %s",
                 other.id) == [(0,)]
    assert [e.originator_version for e in traced_store.history(case.id)] == [1, 2]


def test_the_trace_context_is_stored_beside_each_event(traced_store, test_env):
    case = new_case()
    traced_store.save(case)
    assert _rows(test_env.postgres_dsn,
                 "SELECT originator_version, traceparent FROM event_trace_context "
                 "WHERE originator_id = %s", case.id) == [(1, TRACEPARENT)]


def test_both_paths_store_the_same_bytes_and_chain(store, library_path_store, test_env):
    """The same events appended by the function and by the library's transaction: the
    stored state, topic and chain hash agree (so encryption and the chain trigger see the
    rows exactly as before)."""
    at = datetime.now(UTC)
    results = []
    for s in (store, library_path_store):
        case = new_case()
        s.save(case)
        case = s.get(case.id)
        case.route_to_unit(unit_id="a", unit_name="A", rule_id="r1", rule_set_version="1",
                           explanation="x", actor=ROUTER, at=at)
        s.save(case)
        rows = _rows(test_env.postgres_dsn,
                     "SELECT originator_version, topic, state, chain_hash FROM cases_events WHERE originator_id = %s ORDER BY originator_version",
                     case.id)
        # The chain recomputed from the stored bytes matches the stored hashes.
        recomputed = _rows(test_env.postgres_dsn,
                           "SELECT case_chain(case_event_piece(originator_id, "
                           "originator_version, topic, state)) OVER (ORDER BY "
                           "originator_version) FROM cases_events WHERE originator_id = %s "
                           "ORDER BY originator_version", case.id)
        assert [r[3] for r in rows] == [r[0] for r in recomputed]
        assert [r[0] for r in rows] == [1, 2]
        # State is encrypted at rest: the plain subject is not in the stored bytes.
        assert all("宅基地纠纷".encode() not in bytes(r[2]) for r in rows)
        assert s.get(case.id).is_routed
        assert store.get(case.id).version == 2  # each reads what the other wrote
        results.append([r[1] for r in rows])
    assert results[0] == results[1]


@pytest.mark.parametrize("paths", ["function", "function and library"])
def test_concurrent_writers_never_let_a_tailing_reader_skip_an_id(store, library_path_store,
                                                                  paths):
    """Writers append in many small transactions at once while a reader tails the log the
    way the relay and the projection do (ids after the last one seen). Every id that ends up
    in the log must have been seen by the tailing reader: an id committed after a higher one
    was read would be skipped for good. Also with half the writers on the library's path (a
    writer not yet upgraded), which takes turns on the table lock, not the append lock."""
    stores = [store, library_path_store] if paths == "function and library" else [store]
    recorder = _recorder(store)
    start = recorder.max_notification_id() or 0
    writers, saves_per_writer = 6, 60
    done = threading.Event()
    seen: list[int] = []
    errors: list[BaseException] = []

    def tail() -> None:
        position = start
        try:
            while True:
                finished = done.is_set()  # read before the query: one more pass after the end
                batch = recorder.select_notifications(position + 1, 1000)
                seen.extend(n.id for n in batch)
                if batch:
                    position = batch[-1].id
                if finished and not batch:
                    return
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    def write(k: int) -> None:
        try:
            for i in range(saves_per_writer):
                stores[k % len(stores)].save(*(new_case() for _ in range(1 + (i + k) % 3)))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    reader = threading.Thread(target=tail)
    threads = [threading.Thread(target=write, args=(k,)) for k in range(writers)]
    reader.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    reader.join(timeout=60)
    assert not errors
    everything = [n.id for n in recorder.select_notifications(start + 1, 100_000)]
    expected = sum(1 + (i + k) % 3 for k in range(writers) for i in range(saves_per_writer))
    assert len(everything) >= expected  # other tests may append meanwhile
    assert seen == everything, f"skipped: {sorted(set(everything) - set(seen))[:20]}"


def _route(case, at):
    case.route_to_unit(unit_id="a", unit_name="A", rule_id="r1", rule_set_version="1",
                       explanation="x", actor=ROUTER, at=at)
    return case


def test_one_append_chains_every_case_from_where_it_stood(store, test_env):
    """New cases and stored ones, several events each, interleaved in one append (migration
    10 hashes the batch per statement): every stored hash and head is what the verifier
    computes from the stored rows, and the notification ids follow the order given."""
    from petitions.domain.audit import chain

    at = datetime.now(UTC)
    stored = [new_case() for _ in range(3)]
    store.save(*stored)
    old = [_route(store.get(c.id), at) for c in stored]
    fresh = [_route(new_case(), at) for _ in range(3)]
    batch = [c for pair in zip(fresh, old, strict=True) for c in pair]
    order = [(c.id, e.originator_version) for c in batch for e in c.pending_events]
    store.save(*batch)

    for case in batch:
        rows = _rows(test_env.postgres_dsn,
                     "SELECT originator_version, topic, state, chain_hash FROM cases_events "
                     "WHERE originator_id = %s ORDER BY originator_version", case.id)
        expected = chain(case.id, [(v, t, bytes(s)) for v, t, s, _ in rows])
        assert [bytes(r[3]) for r in rows] == expected
        assert [r[0] for r in rows] == [1, 2]
        head = _rows(test_env.postgres_dsn, "SELECT version, chain_hash FROM case_chain_heads "
                     "WHERE case_id = %s", case.id)
        assert [(v, bytes(h)) for v, h in head] == [(2, expected[-1])]
    logged = _rows(test_env.postgres_dsn,
                   "SELECT originator_id, originator_version FROM cases_events "
                   "WHERE originator_id = ANY(%s) AND (originator_version = 2 "
                   "OR originator_id = ANY(%s)) ORDER BY notification_id",
                   [c.id for c in batch], [c.id for c in fresh])
    assert logged == order


def test_an_append_with_a_gap_in_a_case_is_refused_and_stores_nothing(store, test_env):
    """Versions 1 and 3 of a case in one append: its chain cannot be computed, and the
    database refuses the whole append as it refuses a row without its predecessor."""
    case = _route(new_case(), datetime.now(UTC))
    one, two = (store.mapper.to_stored_event(e) for e in case.collect_events())
    gap = type(two)(originator_id=two.originator_id, originator_version=3,
                    topic=two.topic, state=two.state)
    with pytest.raises(Exception, match="no hashed predecessor"):
        _recorder(store).insert_events([one, gap])
    assert _rows(test_env.postgres_dsn, "SELECT count(*) FROM cases_events "
                 "WHERE originator_id = %s", case.id) == [(0,)]


def test_the_append_is_planned_once_per_connection(store, test_env):
    """Planned for each call's arrays, the append's statement was planned afresh every time
    (a custom plan always looked cheaper): most of a small append's server time, with the
    append lock held. Migration 12 pins it to its generic plan; the same plan, shown here."""
    with psycopg.connect(test_env.postgres_dsn) as conn:
        settings = conn.execute(
            "SELECT p.oid::regprocedure::text, p.proconfig FROM pg_proc p "
            "WHERE p.proname = %s", (TraceContextRecorder.APPEND_FUNCTION,)).fetchall()
    assert len(settings) == 2  # the append of migration 10, and migration 8's for old writers
    for signature, config in settings:
        assert "plan_cache_mode=force_generic_plan" in (config or []), signature


@pytest.fixture(scope="module")
def scratch_log(servers):
    """A migrated database of its own: these appends store rows no case stands behind."""
    with isolated_env(servers, "append_lock") as env:
        yield env.postgres_dsn


# One event of a new case; lock_timeout_s = 1: a wait for a lock fails in a second instead of
# hanging.
_APPEND_ONE = ("SELECT cases_append(%s::uuid[], %s::bigint[], %s::text[], %s::bytea[], "
               "NULL, NULL, NULL, 1)")


def _append_one(conn: psycopg.Connection) -> list[tuple[int]]:
    return conn.execute(_APPEND_ONE, ([uuid.uuid4()], [1], ["t"], [b"state"])).fetchall()


def test_an_append_does_not_wait_for_a_vacuum_or_analyze_of_the_log(scratch_log):
    """VACUUM and ANALYZE, autovacuum's too, hold the log's SHARE UPDATE EXCLUSIVE lock while
    they run. Appends take turns on an advisory lock (migration 18), not on the table's
    EXCLUSIVE lock, which conflicts with it: an append found autovacuum on the log, waited a
    second for the deadlock check to cancel it, and held up every append behind it."""
    with psycopg.connect(scratch_log) as analysing, \
            psycopg.connect(scratch_log, autocommit=True) as writer:
        analysing.execute("ANALYZE cases_events")  # its lock held until this transaction ends
        held = analysing.execute(
            "SELECT mode FROM pg_locks WHERE pid = pg_backend_pid() "
            "AND relation = 'cases_events'::regclass").fetchall()
        assert ("ShareUpdateExclusiveLock",) in held
        assert len(_append_one(writer)) == 1
        analysing.rollback()


def test_appends_take_turns_on_the_append_lock(scratch_log):
    """What keeps notification ids in commit order: while one transaction holds the append
    lock, another append waits for it (here until its lock timeout), and stores nothing."""
    with psycopg.connect(scratch_log) as holder, \
            psycopg.connect(scratch_log, autocommit=True) as writer:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (APPEND_LOCK_KEY,))
        before = writer.execute("SELECT count(*) FROM cases_events").fetchone()
        with pytest.raises(psycopg.errors.LockNotAvailable):
            _append_one(writer)
        assert writer.execute("SELECT count(*) FROM cases_events").fetchone() == before
        holder.rollback()
        assert len(_append_one(writer)) == 1
