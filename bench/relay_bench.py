"""The relay's CPU per event: read the log, decode, publish to JetStream and wait for the acks.

`python -m bench.relay_bench [events]` writes `events` (cases of four events, as the rebuild
bench writes them) to a fresh database, then times the relay publishing them all to a fresh
stream, on the embedded servers (or POSTGRES_DSN / NATS_URL). Prints events/s and process
CPU per event; every server and database it started is removed at the end."""
from __future__ import annotations

import asyncio
import sys
import time
from contextlib import ExitStack
from datetime import UTC, datetime

from bench.projection import _case
from bench.stack import Stack, case_store
from petitions.infra.bus import Bus
from petitions.infra.eventlog import EventLog
from petitions.infra.pools import create_pool
from petitions.infra.relay import Relay
from petitions.infra.schema import migrate


async def _relay_all(dsn: str, store, url: str, stream: str, prefix: str) -> dict[str, float]:
    pool = await create_pool(dsn, min_size=1, max_size=4)
    bus = await Bus.connect(url, stream, prefix, "relay-bench")
    try:
        await bus.ensure_stream()
        relay = Relay(pool, EventLog(pool, store.decode), bus, service="relay-bench")
        wall, cpu = time.perf_counter(), time.process_time()
        while await relay.publish_next_batch():
            pass
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return {"events": relay.published, "events_per_s": relay.published / wall,
                "cpu_us_per_event": 1e6 * cpu / relay.published}
    finally:
        await bus.close()
        await pool.close()


def run(n_events: int = 8000) -> dict[str, float]:
    with ExitStack() as exits:
        stack = Stack(exits)
        dsn = stack.database("relay")
        migrate(dsn)
        store = case_store(dsn, pool_size=2)
        try:
            at = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
            cases = [_case(i, at) for i in range(n_events // 4)]
            for i in range(0, len(cases), 100):
                store.save(*cases[i:i + 100])
            stream, prefix = stack.stream("relay")
            return asyncio.run(_relay_all(dsn, store, stack.infra.nats_url, stream, prefix))
        finally:
            store.close()


if __name__ == "__main__":
    result = run(int(sys.argv[1]) if len(sys.argv) > 1 else 8000)
    print(f"relayed {result['events']} events: {result['events_per_s']:.0f}/s, "
          f"process CPU {result['cpu_us_per_event']:.0f} µs/event")
