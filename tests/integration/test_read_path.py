"""The read side's shortcuts give exactly what the slow, obvious way gives: decoding stored
events straight to plain data (upcasters, custom-typed values), folding without decoding
what cannot matter, and rebuilding the projection into a fresh table swapped in."""
from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import MapperDeserialisationError, StoredEvent

from petitions.domain.case import Case
from petitions.domain.values import Actor, local_date
from petitions.infra.audit import summary_as_of
from petitions.infra.dsn import as_uri
from petitions.infra.eventlog import EventLog
from petitions.infra.events import (
    EventDecoder,
    GenericDecoder,
    event_data,
    fold_domain_events,
    fold_stored,
)
from petitions.infra.mapper import CaseEventMapper
from petitions.infra.projection import READER, CaseSummaryProjection, _summary_json
from petitions.infra.settings import CommonAuthSettings
from petitions.infra.store import CaseApplication
from tests.integration.conftest import new_case

pytestmark = pytest.mark.integration

SERVICE = Actor(id="svc", role="service")
CHIEF = Actor(id="chief", role="bureau_supervisor", jurisdiction="330106")


def _rich(case: Case, n_notices: int = 3) -> Case:
    """A case past registration: routed, its clock running, notices delivered and failed,
    accepted, progress reported, extended (a minute apart)."""
    at = iter(case.created_on + timedelta(minutes=k) for k in range(1, 1000))
    case.route_to_unit(unit_id="land-330106", unit_name="国土", rule_id="r1",
                       rule_set_version="1", explanation="land", actor=SERVICE, at=next(at))
    case.start_clock(clock="acceptance", started_on="2026-03-02", due_on="2026-03-17",
                     length=15, day_kind="calendar", explanation="15 days", provisional=False,
                     actor=SERVICE, at=next(at), reason="registered")
    for k in range(n_notices):
        case.record_notice_delivered(notice_id=f"n{k}", kind="assignment",
                                     recipient="land-330106", channel="webhook",
                                     trigger_version=2, attempts=1, actor=SERVICE, at=next(at))
    case.record_notice_failed(notice_id="f1", kind="acceptance", recipient="petitioner",
                              channel="sms", trigger_version=2, attempts=2, error="timeout",
                              final=False, actor=SERVICE, at=next(at))
    accepted_at = next(at)
    case.accept(mode="assign", lead_unit="land-330106", assisting_units=["water-330106"],
                decided_on=local_date(accepted_at), actor=CHIEF, at=accepted_at,
                reason="in remit")
    case.report_progress(unit_id="land-330106", note="measured", actor=SERVICE, at=next(at),
                         reason="progress")
    case.grant_extension(days=30, approver="chief", petitioner_told=True, actor=CHIEF,
                         at=next(at), reason="survey needed")
    return case


@pytest.fixture(scope="module")
def popo_mapper():
    key = CommonAuthSettings().payload_encryption_key
    return CaseApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo",
                                "CIPHER_TOPIC": "eventsourcing.cryptography:AESCipher",
                                "CIPHER_KEY": key}).mapper


def _stored(mapper, case: Case) -> list[StoredEvent]:
    return [mapper.to_stored_event(e) for e in case.collect_events()]


def _reencrypted(mapper, stored: StoredEvent, change) -> StoredEvent:
    state = json.loads(mapper.cipher.decrypt(stored.state))
    change(state)
    plain = json.dumps(state, ensure_ascii=False).encode()
    return StoredEvent(originator_id=stored.originator_id,
                       originator_version=stored.originator_version, topic=stored.topic,
                       state=mapper.cipher.encrypt(plain))


def _as_the_store_does(mapper, s: StoredEvent) -> tuple[str, str, dict[str, Any]]:
    e = mapper.to_domain_event(s)
    return type(e).__name__, e.timestamp.isoformat(), event_data(e)


def test_the_decoder_gives_what_the_store_decodes(popo_mapper):
    case = _rich(new_case())
    stored = _stored(popo_mapper, case)
    decoder = EventDecoder(popo_mapper)
    assert len({s.topic for s in stored}) >= 8
    for s in stored:
        assert decoder.decode(s.originator_id, s.originator_version, s.topic, s.state) == \
            _as_the_store_does(popo_mapper, s)


def test_the_decoder_upcasts_old_events(popo_mapper):
    stored = _stored(popo_mapper, _rich(new_case()))

    def registered_v1(state):
        for k in ("petitioner_key", "accused_unit", "representatives", "class_version"):
            state.pop(k, None)

    def routed_v1(state):
        state.pop("assisting_units"), state.pop("skipped"), state.pop("class_version")

    old = [_reencrypted(popo_mapper, stored[0], registered_v1),
           _reencrypted(popo_mapper, stored[1], routed_v1)]
    decoder = EventDecoder(popo_mapper)
    for s in old:
        got = decoder.decode(s.originator_id, s.originator_version, s.topic, s.state)
        assert got == _as_the_store_does(popo_mapper, s)
    assert decoder.decode(*_args(old[0]))[2]["representatives"] == []
    assert decoder.decode(*_args(old[1]))[2]["assisting_units"] == []


def test_other_custom_typed_values_are_decoded_by_the_transcoder(popo_mapper):
    stored = _stored(popo_mapper, new_case())[0]
    odd = _reencrypted(popo_mapper, stored, lambda state: state.update(
        extra={"_type_": "datetime_iso", "_data_": "2026-03-02T09:00:00+08:00"},
        note='text quoting "_type_" as a key'))
    got = EventDecoder(popo_mapper).decode(*_args(odd))
    assert got == _as_the_store_does(popo_mapper, odd)
    assert got[2]["extra"] == datetime.fromisoformat("2026-03-02T09:00:00+08:00")


def test_json_beyond_the_fast_parser_is_read_as_the_store_reads_it(popo_mapper):
    stored = _stored(popo_mapper, new_case())[0]
    odd = _reencrypted(popo_mapper, stored, lambda state: state.update(
        big=2 ** 70 + 1, small=-(2 ** 63) - 1, note="id 330106199001011234, [ -1234567890123456789 ]"))
    got = EventDecoder(popo_mapper).decode(*_args(odd))
    assert got == _as_the_store_does(popo_mapper, odd)
    assert (got[2]["big"], got[2]["small"]) == (2 ** 70 + 1, -(2 ** 63) - 1)


def test_summaries_the_fast_encoder_refuses_are_written_as_before():
    for summary in ({"n": 2 ** 70, "text": "重新丈量"}, {1: "a", "b": [None, 1.5]}):
        assert json.loads(_summary_json(summary)) == \
            json.loads(json.dumps(summary, ensure_ascii=False))


def test_a_tampered_state_does_not_decode(popo_mapper):
    s = _stored(popo_mapper, new_case())[0]
    bad = bytearray(s.state)
    bad[-1] ^= 1
    with pytest.raises(ValueError):
        EventDecoder(popo_mapper).decode(s.originator_id, 1, s.topic, bytes(bad))


@pytest.fixture(scope="module")
def store_mapper(popo_mapper) -> CaseEventMapper:
    return CaseEventMapper(transcoder=popo_mapper.transcoder, cipher=popo_mapper.cipher)


def _variants(mapper, case: Case) -> list[StoredEvent]:
    """A case's events as stored, and some as older or odder writers stored them: before an
    upcaster's fields existed, with a second custom-typed value, with integers past 64 bits."""
    stored = _stored(mapper, case)

    def routed_v1(state):
        state.pop("assisting_units"), state.pop("skipped"), state.pop("class_version")

    return stored + [
        _reencrypted(mapper, stored[1], routed_v1),
        _reencrypted(mapper, stored[0], lambda state: state.update(
            extra={"_type_": "datetime_iso", "_data_": "2026-03-02T09:00:00+08:00"})),
        _reencrypted(mapper, stored[0], lambda state: state.update(big=2 ** 70 + 1)),
    ]


def test_the_store_mapper_reads_events_as_the_library_mapper_does(popo_mapper, store_mapper):
    for s in _variants(popo_mapper, _rich(new_case())):
        mine, theirs = store_mapper.to_domain_event(s), popo_mapper.to_domain_event(s)
        assert type(mine) is type(theirs)
        # the same fields in the same order (histories and exports list them so)
        assert list(vars(mine).items()) == list(vars(theirs).items())
        assert type(mine.timestamp) is datetime and type(mine.originator_id) is UUID


def test_the_store_mapper_writes_what_either_mapper_reads(popo_mapper, store_mapper):
    for event in _rich(new_case()).collect_events():
        s = store_mapper.to_stored_event(event)
        assert vars(popo_mapper.to_domain_event(s)) == vars(event)
        assert vars(store_mapper.to_domain_event(s)) == vars(event)


def test_a_tampered_state_is_the_library_mappers_error(store_mapper):
    s = _stored(store_mapper, new_case())[0]
    bad = bytearray(s.state)
    bad[-1] ^= 1
    with pytest.raises(MapperDeserialisationError, match="originator_version 1"):
        store_mapper.to_domain_event(StoredEvent(s.originator_id, 1, s.topic, bytes(bad)))


def test_the_store_reads_through_its_mapper(store):
    assert type(store.mapper) is CaseEventMapper
    case = _rich(new_case())
    store.save(case)
    assert vars(store.get(case.id)) == vars(case)


def _args(s: StoredEvent) -> tuple[UUID, int, str, bytes]:
    return s.originator_id, s.originator_version, s.topic, s.state


class _Counting:
    """A decoder that records which versions it decoded."""

    def __init__(self, inner) -> None:
        self.inner, self.decoded = inner, []

    def type_name(self, topic: str) -> str:
        return topic.rsplit(".", 1)[-1]

    def decode(self, case_id, version, topic, state):
        self.decoded.append(version)
        return self.inner(version)


def test_events_that_change_nothing_are_decoded_only_when_last():
    cid = uuid4()
    data = {1: ("Registered", "2026-03-02T09:00:00+00:00", {
        "case_number": "330106-2026-000001", "channel": "letter", "category": "appeal",
        "division": "330106", "subject": "land", "requests": [], "people_count": 1,
        "anonymous": False, "received_at": "2026-03-02T09:00:00+00:00"}),
        2: ("SomethingUnrelated", "2026-03-02T10:00:00+00:00", {}),
        3: ("ProgressReported", "2026-03-02T11:00:00+00:00", {}),
        4: ("SomethingUnrelated", "2026-03-02T12:00:00+00:00", {})}
    rows = [(v, f"petitions.domain.case:Case.{data[v][0]}", b"") for v in data]
    assert fold_stored(_Counting(lambda v: data[v]), cid, []) is None
    decoder = _Counting(lambda v: data[v])
    folded = fold_stored(decoder, cid, rows)
    assert decoder.decoded == [1, 3, 4]
    assert (folded["version"], folded["updated_at"]) == (4, "2026-03-02T12:00:00+00:00")
    assert folded["progress_reports"] == 1
    # the middle one is skipped only when the fold goes to the end, not when cut by time
    decoder = _Counting(lambda v: data[v])
    cut = fold_stored(decoder, cid, rows, at=datetime(2026, 3, 2, 10, 30, tzinfo=UTC))
    assert decoder.decoded == [1, 2, 3]
    assert (cut["version"], cut["progress_reports"]) == (2, 0)


# -- on the database --------------------------------------------------------------------------

class Unrelated(Aggregate):
    """Another aggregate sharing the log (as the routing configuration does)."""

    class Created(Aggregate.Created):
        note: str

    @classmethod
    def make(cls, note: str) -> Unrelated:
        return cls._create(cls.Created, id=uuid4(), note=note)


async def _table(pool) -> list[tuple[Any, ...]]:
    # Rows with events behind them: other tests share the table, some with rows made by hand,
    # which a rebuild rightly does not bring back.
    rows = await pool.fetch("SELECT * FROM case_summaries s WHERE EXISTS (SELECT 1 FROM "
                            "cases_events e WHERE e.originator_id = s.case_id) ORDER BY case_id")
    return [tuple(json.loads(v) if k == "summary" else v for k, v in r.items()) for r in rows]


async def _indexes(pool) -> list[tuple[str, str]]:
    rows = await pool.fetch("SELECT indexname, indexdef FROM pg_indexes "
                            "WHERE tablename = 'case_summaries' ORDER BY indexname")
    constraints = await pool.fetch(
        "SELECT conname, contype FROM pg_constraint "
        "WHERE conrelid = 'case_summaries'::regclass ORDER BY conname")
    return [tuple(r) for r in rows] + [tuple(r) for r in constraints]


async def test_rebuild_reproduces_what_following_the_log_built(pool, store, event_log,
                                                              test_env):
    cases = [new_case() for _ in range(12)]
    await asyncio.to_thread(store.save, *cases)
    await asyncio.to_thread(store.app.save, Unrelated.make("not a case"))
    for c in cases[:8]:
        _rich(c, n_notices=len(str(c.id)) % 5 + 1)
    await asyncio.to_thread(store.save, *cases[:8])
    projection = CaseSummaryProjection(pool, event_log, batch=7)
    head = await event_log.head()
    assert await projection.catch_up() == head
    followed, indexes = await _table(pool), await _indexes(pool)
    storage = await _storage(pool)
    assert "toast_tuple_target=8160" in storage and "fillfactor=75" in storage  # as migrated
    ours = {c.id for c in cases}
    mine = [r for r in followed if r[0] in ours]
    assert len(mine) == 12 and {r[3] for r in mine} == {"registered", "accepted"}
    assert all(r[12] for r in mine)  # content_digest, from the Registered event

    # a statement prepared on the old table goes on working on the new one
    async with pool.acquire() as reader:
        query = await reader.prepare("SELECT summary FROM case_summaries WHERE case_id = $1")
        before = await query.fetchval(cases[0].id)

        # the fast decoder, and a plain decode function, rebuild the same table
        assert await projection.rebuild(fetch=5, copy_rows=3) == head
        assert await _table(pool) == followed
        assert await _indexes(pool) == indexes
        plain = CaseSummaryProjection(pool, event_log, decoder=GenericDecoder(store.decode))
        assert await plain.rebuild() == head
        assert await _table(pool) == followed
        # and so do three processes, each folding its range of case ids
        assert await projection.rebuild(workers=3, dsn=as_uri(test_env.postgres_dsn),
                                        fetch=4, copy_rows=2) == head
        assert await _table(pool) == followed
        assert await _indexes(pool) == indexes
        assert await _storage(pool) == storage  # the table's settings survive the swap
        assert await query.fetchval(cases[0].id) == before

    # the position is the log's head, and the live projector goes on from there
    assert await projection.positions.get(READER) == head
    cases[8].route_to_unit(unit_id="u9", unit_name="U9", rule_id="r", rule_set_version="1",
                           explanation="x", actor=SERVICE, at=datetime.now(UTC))
    await asyncio.to_thread(store.save, cases[8])
    assert await projection.catch_up() == await event_log.head()
    row = await pool.fetchrow("SELECT unit_id, version FROM case_summaries WHERE case_id = $1",
                              cases[8].id)
    assert (row["unit_id"], row["version"]) == ("u9", 2)


async def _storage(pool) -> list[str]:
    return list(await pool.fetchval(
        "SELECT coalesce(reloptions, '{}') FROM pg_class WHERE oid = 'case_summaries'::regclass"))


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_failed_rebuild_leaves_the_projection_as_it_was(pool, store, event_log,
                                                                test_env, workers):
    await asyncio.to_thread(store.save, new_case())
    projection = CaseSummaryProjection(pool, event_log)
    await projection.catch_up()
    before, position = await _table(pool), await projection.positions.get(READER)

    class Broken(GenericDecoder):
        def decode(self, *args):
            raise ValueError("cannot decode")

    with pytest.raises((ValueError, RuntimeError)):
        await CaseSummaryProjection(pool, event_log, decoder=Broken(store.decode)).rebuild(
            copy_rows=1, workers=workers, dsn=as_uri(test_env.postgres_dsn))
    assert await _table(pool) == before
    assert await projection.positions.get(READER) == position
    assert await pool.fetchval("SELECT to_regclass('case_summaries_rebuild')") is None


async def test_a_rebuild_that_died_leaves_nothing_in_the_way_of_the_next(pool, store,
                                                                        event_log, test_env):
    await asyncio.to_thread(store.save, new_case())
    projection = CaseSummaryProjection(pool, event_log)
    await projection.catch_up()
    followed = await _table(pool)
    # what a rebuild killed after building its indexes leaves behind
    await pool.execute("CREATE TABLE case_summaries_rebuild (LIKE case_summaries)")
    await pool.execute("CREATE INDEX case_summaries_rebuild_0 ON case_summaries_rebuild "
                       "(division)")
    assert await projection.rebuild(workers=2, dsn=as_uri(test_env.postgres_dsn)) == \
        await event_log.head()
    assert await _table(pool) == followed
    assert await pool.fetchval("SELECT to_regclass('case_summaries_rebuild')") is None


async def test_a_case_as_of_every_version_is_the_fold_of_its_first_events(pool, store):
    case = new_case()
    case = _rich(case, n_notices=4)
    case.record_notice_delivered(notice_id="f1", kind="acceptance", recipient="petitioner",
                                 channel="sms", trigger_version=2, attempts=3, actor=SERVICE,
                                 at=case.created_on + timedelta(days=1))
    await asyncio.to_thread(store.save, case)
    history = await asyncio.to_thread(store.history, case.id)
    for v in range(1, len(history) + 1):
        expected = fold_domain_events(case.id, history[:v])
        assert await summary_as_of(pool, store.decode, case.id, version=v) == expected
        at = history[v - 1].timestamp
        assert await summary_as_of(pool, store.decode, case.id, at=at) == expected
    assert (await summary_as_of(pool, store.decode, case.id))["notices"]["f1"]["state"] == \
        "delivered"


async def test_a_pool_of_one_connection_rebuilds_too(pool, store, test_env):
    await asyncio.to_thread(store.save, *[new_case() for _ in range(5)])
    async with asyncpg.create_pool(as_uri(test_env.postgres_dsn), min_size=1,
                                   max_size=1) as single:
        projection = CaseSummaryProjection(single, EventLog(single, store.decode))
        await projection.catch_up()
        followed = await _table(single)
        assert await projection.rebuild(fetch=3, copy_rows=2) == await projection.log.head()
        assert await _table(single) == followed


def test_the_application_saves_and_replays_as_the_library_does():
    """`CaseApplication.save` collects pending events without the library's protocol checks,
    and the store replays without its per-event assertion: the same events, recordings and
    aggregates as `Application` itself gives."""
    from eventsourcing.application import Application

    from petitions.infra.store import CaseApplication, project

    env = {"PERSISTENCE_MODULE": "eventsourcing.popo"}
    mine, theirs = CaseApplication(env=env), Application(env=env)
    first, second = _rich(new_case()), new_case()
    events = {c.id: list(c.pending_events) for c in (first, second)}
    recordings = mine.save(first, None, second)
    assert [(r.notification.originator_id, r.notification.originator_version)
            for r in recordings] == [(e.originator_id, e.originator_version)
                                     for c in (first, second) for e in events[c.id]]
    assert not first.pending_events and not second.pending_events
    for case_id, case_events in events.items():
        theirs.save(*case_events)
        stored = list(mine.events.get(case_id))
        assert [vars(e) for e in stored] == [vars(e) for e in case_events]
        assert vars(mine.repository.get(case_id, projector_func=project)) == \
            vars(theirs.repository.get(case_id))
