"""Projection rebuild speed: `CaseSummaryProjection.rebuild` over a log of ~100k events, against
a plain asyncpg fetch of the same rows.

The log is written quickly with `CaseStore.save` in batches of 100 aggregates: each case gets
the four events of its ordinary first day (Registered, RoutedToUnit, ClockStarted,
NoticeDelivered), so a rebuild folds and upserts as it would on a real log. The store is
configured as the services configure it (payload encryption included, when they use it).
Both the rebuild and the plain fetch read the log vacuumed, as a running system keeps it.
The rebuild's CPU is reported for this process, its forked workers and the PostgreSQL server.
"""
from __future__ import annotations

import resource
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from bench.procs import cpu_seconds
from petitions.domain.case import Case
from petitions.domain.values import Actor, Category, Channel, Petitioner
from petitions.infra.eventlog import EventLog
from petitions.infra.events import EventDecoder
from petitions.infra.pools import create_pool
from petitions.infra.projection import CaseSummaryProjection
from petitions.devstack import REBUILD_WORKERS
from petitions.infra.store import EVENTS_TABLE

CLERK = Actor(id="bench-clerk", role="intake_clerk", jurisdiction="330106")
SERVICE = Actor(id="bench-service", role="service")
DIVISIONS = ("330102", "330106", "330108")


def _case(i: int, at: datetime) -> Case:
    division = DIVISIONS[i % 3]
    case = Case.register(
        case_id=uuid.uuid4(), case_number=f"{division}-2026-{i:06d}", channel=Channel.LETTER,
        category=Category.APPEAL, division=division, subject="land",
        content="村里重新分配宅基地时漏掉了我家，请求依法处理。", requests=["重新丈量并登记"],
        people_count=1, petitioner=Petitioner(name="张三", id_number="330106199001011234"),
        received_at=at, submission_digest="0" * 64, actor=CLERK, at=at,
    )
    case.route_to_unit(unit_id=f"land-{division}", unit_name=f"LAND of {division}",
                       rule_id=f"{division}-appeal-land", rule_set_version="1",
                       explanation="appeal in county → land bureau", actor=SERVICE, at=at)
    case.start_clock(clock="acceptance", started_on="2026-03-02", due_on="2026-03-17", length=15,
                     day_kind="calendar", explanation="15 calendar days", provisional=False,
                     actor=SERVICE, at=at, reason="petition registered")
    case.record_notice_delivered(notice_id=f"{case.id}:2:assignment:land-{division}:webhook",
                                 kind="assignment", recipient=f"land-{division}",
                                 channel="webhook", trigger_version=2, attempts=1,
                                 actor=SERVICE, at=at)
    return case


def write_log(store: Any, n_events: int, per_save: int = 100) -> dict[str, float]:
    at = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    cases = n_events // 4
    build = save = 0.0
    written = 0
    for start in range(0, cases, per_save):
        t0 = time.perf_counter()
        batch = [_case(i, at) for i in range(start, min(cases, start + per_save))]
        t1 = time.perf_counter()
        store.save(*batch)
        save += time.perf_counter() - t1
        build += t1 - t0
        written += 4 * len(batch)
    return {"events": written, "cases": cases, "build_s": build, "save_s": save,
            "save_events_per_s": written / save if save else 0.0}


async def rebuild_and_select(dsn_uri: str, store: Any, workers: int = REBUILD_WORKERS
                             ) -> dict[str, Any]:
    pool = await create_pool(dsn_uri, min_size=1, max_size=2)
    try:
        projection = CaseSummaryProjection(pool, EventLog(pool, store.decode))
        # The log as a running system keeps it: read as it was written (by the live projector)
        # and vacuumed. Right after the bulk write, the first reader of the log pays to set
        # every row's commit hint bits (a sixth of a rebuild's CPU here), and that reader was
        # the rebuild, leaving a settled log to the plain SELECT it is compared with.
        settle_s = time.perf_counter()
        await pool.execute(f"VACUUM (ANALYZE) {EVENTS_TABLE}")
        # ... and its pages on disk: the checkpoint of the bulk write is not the rebuild's.
        try:
            await pool.execute("CHECKPOINT")
        except asyncpg.InsufficientPrivilegeError:
            pass  # a server of the environment's, where this role may not checkpoint
        settle_s = time.perf_counter() - settle_s
        server = _postmaster(await pool.fetchval("SELECT pg_backend_pid()"))
        vacuums0 = await pool.fetchval(_VACUUMS)
        server0, workers0 = _server_cpu(server), _children_cpu()
        cpu0, t0 = time.process_time(), time.perf_counter()
        position = await projection.rebuild(workers=workers, dsn=dsn_uri)
        rebuild_s = time.perf_counter() - t0
        rebuild_cpu_s = time.process_time() - cpu0
        workers_cpu_s = _children_cpu() - workers0
        server1 = _server_cpu(server)
        server_cpu_s = server1 - server0 if server0 is not None and server1 is not None else None
        vacuums = await pool.fetchval(_VACUUMS) - vacuums0
        summaries = await pool.fetchval("SELECT count(*) FROM case_summaries")
        events = await pool.fetchval(f"SELECT count(*) FROM {EVENTS_TABLE}")

        t0 = time.perf_counter()
        rows = await pool.fetch(f"SELECT * FROM {EVENTS_TABLE} ORDER BY notification_id")
        select_s = time.perf_counter() - t0
        # and what decoding alone (bytes -> domain event: decompress/decrypt/deserialise) costs,
        t0 = time.perf_counter()
        for r in rows:
            store.decode(r["originator_id"], r["originator_version"], r["topic"], r["state"])
        decode_s = time.perf_counter() - t0
        # ... and straight to plain data, as the rebuild decodes
        decoder = EventDecoder.for_decode(store.decode)
        t0 = time.perf_counter()
        for r in rows:
            decoder.decode(r["originator_id"], r["originator_version"], r["topic"], r["state"])
        plain_decode_s = time.perf_counter() - t0
        return {"position": position, "events": events, "summaries": summaries,
                "rebuild_s": rebuild_s, "rebuild_events_per_s": events / rebuild_s,
                "rebuild_cpu_s": rebuild_cpu_s, "rebuild_workers": workers,
                "rebuild_workers_cpu_s": workers_cpu_s, "rebuild_server_cpu_s": server_cpu_s,
                "rebuild_cpu_per_100k_events": _per_100k(
                    events, rebuild_cpu_s, workers_cpu_s, server_cpu_s),
                "autovacuums_during_rebuild": vacuums, "log_vacuum_s": settle_s,
                "plain_decode_events_per_s": len(rows) / plain_decode_s,
                "select_rows": len(rows), "select_s": select_s,
                "select_rows_per_s": len(rows) / select_s, "decode_s": decode_s,
                "decode_events_per_s": len(rows) / decode_s}
    finally:
        await pool.close()


# Autovacuum and autoanalyze runs so far on the log and the projection: the log was just
# written, and one that lands during the rebuild takes CPU from it.
_VACUUMS = ("SELECT coalesce(sum(autovacuum_count + autoanalyze_count), 0) "
            "FROM pg_stat_user_tables WHERE relname IN ('cases_events', 'case_summaries')")


def _children_cpu() -> float:
    """CPU seconds of this process's ended children (the rebuild's forked workers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _postmaster(backend_pid: int) -> int | None:
    """The server's postmaster, when it runs on this machine (the embedded one does)."""
    try:
        with open(f"/proc/{backend_pid}/cmdline", "rb") as f:
            if not f.read().startswith(b"postgres"):
                return None  # a server elsewhere: that pid is not its backend
        with open(f"/proc/{backend_pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("PPid:"))
    except (OSError, StopIteration, ValueError):
        return None


def _server_cpu(postmaster: int | None) -> float | None:
    """CPU seconds of the whole server: its live processes and the backends it has reaped
    (those of the rebuild's workers, closed by the end)."""
    if postmaster is None:
        return None
    try:
        with open(f"/proc/{postmaster}/task/{postmaster}/children") as f:
            children = f.read().split()
    except OSError:
        return None
    # a child that ended meanwhile counts with the reaped ones next time
    return cpu_seconds(postmaster, reaped_children=True) + sum(
        cpu_seconds(int(pid)) for pid in children)


def _per_100k(events: int, *cpu_s: float | None) -> float | None:
    if not events or any(c is None for c in cpu_s):
        return None
    return sum(cpu_s) * 100_000 / events  # type: ignore[arg-type]
