"""asyncpg pools as the services use them.

asyncpg's default release runs a reset query (unlock advisory locks, close cursors, unlisten,
reset settings) every time a connection goes back to the pool: a second round trip for
every one-statement use, and four statements for the server to run. Our code keeps session
state only on the few connections it holds for long (the relay's leader lock, the log
waker's LISTEN, a rebuild's lock); those are marked with `holds_session_state` and get the
full reset on release. Every other connection only needs what asyncpg does anyway without
a query: an open transaction rolled back and listener callbacks dropped.
"""
from __future__ import annotations

import weakref
from typing import Any

import asyncpg

from petitions.infra.dsn import as_uri

_STATEFUL: weakref.WeakSet[Any] = weakref.WeakSet()


def holds_session_state(conn: Any) -> Any:
    """Mark a pooled connection (or its pool proxy) as holding session state (an advisory
    lock, LISTEN, a SET): it is fully reset when released, whatever path releases it."""
    _STATEFUL.add(getattr(conn, "_con", conn))  # the raw connection behind a pool proxy
    return conn


async def reset_released(conn: asyncpg.Connection) -> None:
    """The pool's reset: the full reset query only for connections marked stateful."""
    if conn in _STATEFUL:
        _STATEFUL.discard(conn)
        query = conn.get_reset_query()
        if query:
            await conn.execute(query)


# Session settings of every pooled connection (a reset returns to them). The services run
# short statements on small batches; PostgreSQL's JIT compilation and parallel workers are
# for long analytical queries, and a row estimate gone wrong (a table not analysed yet, a
# generic plan of a prepared statement) turned them on for these: 150 ms of JIT compiling
# for a 1 ms lookup, and worker processes started for every 500-event read of the log.
#
# And each prepared statement runs on its generic plan, planned once per connection: left
# to choose, PostgreSQL kept planning the statements that take arrays of case ids afresh on
# every execution (a plan for the given array always looked cheaper), which was two thirds
# to three quarters of their server time (a batch's histories 50-70 us, of which 20-30 the
# query; the moved-case check 100-110, of which 30). Every statement the services prepare
# is written so that its generic plan is the right one: lookups by key, pages in index order,
# prefixes written into the statement (tests/integration/test_query_plans.py reads the plans
# both ways).
SERVICE_SESSION_SETTINGS = {"jit": "off", "max_parallel_workers_per_gather": "0",
                            "plan_cache_mode": "force_generic_plan"}


async def create_pool(dsn: str, **options: Any) -> asyncpg.Pool:
    """An asyncpg pool on `dsn` (a libpq URI or key=value string) that resets only what
    needs resetting (see the module's docstring), with `SERVICE_SESSION_SETTINGS` unless
    `server_settings` says otherwise."""
    options["server_settings"] = {**SERVICE_SESSION_SETTINGS,
                                  **(options.get("server_settings") or {})}
    return await asyncpg.create_pool(as_uri(dsn), reset=reset_released, **options)
