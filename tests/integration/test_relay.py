"""The relay on real PostgreSQL and NATS JetStream: each event published once, in order,
resuming after a restart, with republishes dropped by Nats-Msg-Id."""
from __future__ import annotations

import asyncio
import json

import pytest

from petitions.infra.eventlog import _SET_UNFLUSHED, Positions
from petitions.infra.events import LoggedEvent
from petitions.infra.relay import READER, Relay
from tests.integration.conftest import commit_one_by_one_while, new_case

pytestmark = pytest.mark.integration


async def _stream_messages(bus, subject_filter):
    """Every message currently in the stream for the filter, via an ephemeral consumer."""
    sub = await bus.js.pull_subscribe(subject_filter, stream=bus.stream)
    seen = []
    while True:
        try:
            msgs = await sub.fetch(500, timeout=0.5)
        except (TimeoutError, asyncio.TimeoutError, Exception) as exc:  # empty: fetch times out
            if "timeout" in type(exc).__name__.lower():
                break
            raise
        for m in msgs:
            seen.append((m.headers.get("Nats-Msg-Id"), json.loads(m.data)))
            await m.ack()
    await sub.unsubscribe()
    return seen


async def _relay_to_head(relay, event_log):
    head = await event_log.head()
    while relay.position < head:
        await relay.publish_next_batch()


async def test_relay_publishes_each_event_once_and_resumes(pool, store, event_log, bus):
    relay = Relay(pool, event_log, bus, batch=7)
    relay.position = await relay.positions.get(READER)
    cases = [new_case() for _ in range(20)]
    await asyncio.to_thread(store.save, *cases)
    await _relay_to_head(relay, event_log)

    # A restarted relay starts from the recorded position: nothing new to publish.
    restarted = Relay(pool, event_log, bus, batch=7)
    restarted.position = await restarted.positions.get(READER)
    assert restarted.position == relay.position
    assert await restarted.publish_next_batch() is False

    more = [new_case() for _ in range(5)]
    await asyncio.to_thread(store.save, *more)
    await _relay_to_head(restarted, event_log)

    ids = {str(c.id) for c in cases + more}
    seen = [(mid, body) for mid, body in await _stream_messages(bus, f"{bus.prefix}.case.>")
            if body["case_id"] in ids]
    assert sorted(mid for mid, _ in seen) == sorted(f"{i}:1" for i in ids)
    # Ids, version, type and position: nothing of the event's content leaves the store.
    assert all(set(body) == {"event_id", "case_id", "version", "type", "position"}
               for _, body in seen), seen[0]
    assert all(body["event_id"] == mid and body["type"] == "Registered" for mid, body in seen)


async def test_a_republish_is_dropped_by_message_id(pool, store, event_log, bus):
    case = new_case()
    await asyncio.to_thread(store.save, case)
    [event] = [e for e in await event_log.read_notices_after(0, 100_000)
               if e.case_id == case.id]
    assert await bus.publish(event.type, event.event_id, event.to_message()) is True
    # A relay that crashed before recording its position publishes the same event again.
    assert await bus.publish(event.type, event.event_id, event.to_message()) is False


async def test_only_one_relay_leads(pool, event_log, bus):
    first, second = Relay(pool, event_log, bus), Relay(pool, event_log, bus)
    stopping = asyncio.Event()
    tasks = [asyncio.create_task(r.run(stopping)) for r in (first, second)]
    await asyncio.sleep(1.5)
    leaders = [r.is_leader for r in (first, second)]
    stopping.set()
    await asyncio.gather(*tasks)
    assert leaders.count(True) == 1


async def test_the_relay_announces_each_event_as_the_domain_event_names_it(store, event_log):
    """The relay reads no payload, yet names every kind of event of a busy case as its domain
    event object does, at its position in the log."""
    from tests.integration.test_read_path import _rich

    case = _rich(new_case())
    await asyncio.to_thread(store.save, case)
    first = await event_log.pool.fetchval(
        "SELECT min(notification_id) - 1 FROM cases_events WHERE originator_id = $1", case.id)
    ours = [e for e in await event_log.read_notices_after(first, 1000) if e.case_id == case.id]
    rows = await event_log.pool.fetch(
        "SELECT notification_id, originator_id, originator_version, topic, state "
        "FROM cases_events WHERE originator_id = $1 ORDER BY notification_id", case.id)
    domain = [LoggedEvent.from_domain_event(r["notification_id"], store.decode(
        r["originator_id"], r["originator_version"], r["topic"], r["state"])) for r in rows]
    assert len(ours) == len(domain) == case.version and len({e.type for e in ours}) >= 8
    assert [(e.position, e.case_id, e.version, e.type, e.event_id) for e in ours] == \
        [(e.position, e.case_id, e.version, e.type, e.event_id) for e in domain]


async def test_a_running_relay_is_woken_by_each_commit_without_polling(pool, store, event_log,
                                                                      bus):
    """After a short batch the relay waits for the next commit's NOTIFY instead of reading
    again: commits that land while it publishes, and those after, all go out with polling
    off (a lost wake-up would leave them waiting for the hour-long poll)."""
    relay = Relay(pool, event_log, bus, batch=3, poll_interval=3600)
    cases = await commit_one_by_one_while(relay.run, store, event_log, lambda: relay.position)
    ids = {str(c.id) for c in cases}
    seen = {mid for mid, body in await _stream_messages(bus, f"{bus.prefix}.case.>")
            if body["case_id"] in ids}
    assert seen == {f"{i}:1" for i in ids}


async def test_a_relayed_position_is_committed_without_waiting_for_the_disk(pool):
    """A position lost in a crash only republishes what the bus drops as repeats: its commit
    skips the WAL flush, and leaves the connection's own setting as it was."""
    async with pool.acquire() as conn:
        async with conn.transaction():
            await conn.execute(_SET_UNFLUSHED, "probe:unflushed", 41)
            assert await conn.fetchval("SHOW synchronous_commit") == "off"
        assert await conn.fetchval("SHOW synchronous_commit") == "on"
    positions = Positions(pool)
    await positions.set("probe:unflushed", 42)
    assert await positions.get("probe:unflushed") == 42
    async with pool.acquire() as conn:
        assert await conn.fetchval("SHOW synchronous_commit") == "on"
