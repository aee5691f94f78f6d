"""Who holds the append lock, and what it is doing, sampled during a load run.

Every append takes the same transaction-level advisory lock (`cases_append`, migration 18), so
every writer of every service queues on it. Sampling pg_locks/pg_stat_activity every few
milliseconds shows how busy the lock is, how many transactions wait behind it, and whether the
holder is working in the server or waiting for its (Python) client to send the next statement -
time the lock is held for nothing.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import psycopg

from petitions.infra.schema import APPEND_LOCK_KEY

# An advisory lock on one bigint key shows its high and low 32 bits as classid and objid.
SQL = f"""
SELECT l.granted, a.state, coalesce(a.wait_event_type, ''), coalesce(a.wait_event, ''),
       coalesce(nullif(a.application_name, ''), '?')
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.database = (SELECT oid FROM pg_database
                                                 WHERE datname = current_database())
  AND l.classid = {APPEND_LOCK_KEY >> 32} AND l.objid = {APPEND_LOCK_KEY & 0xFFFFFFFF}
  AND l.objsubid = 1
"""


class LockWatch:
    def __init__(self, dsn: str, interval: float = 0.01, max_samples: int = 20_000) -> None:
        self.dsn = dsn
        self.interval = interval
        self.max_samples = max_samples
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.samples = 0
        self.held = 0
        self.holder: Counter[str] = Counter()
        self.waiters = 0

    def __enter__(self) -> LockWatch:
        self._thread = threading.Thread(target=self._run, name="lockwatch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                while not self._stop.is_set() and self.samples < self.max_samples:
                    rows = conn.execute(SQL).fetchall()
                    self.samples += 1
                    for granted, state, wtype, wevent, _app in rows:
                        if granted:
                            self.held += 1
                            if state == "idle in transaction":
                                what = "waiting for its client"
                            elif wtype == "IO" and wevent.startswith("WAL"):
                                what = "flushing WAL (commit)"
                            elif wtype == "Client":
                                what = "waiting for its client"
                            else:
                                what = "working in the server"
                            self.holder[what] += 1
                        else:
                            self.waiters += 1
                    time.sleep(self.interval)
        except Exception:  # a diagnostic: never fail the benchmark over it
            pass

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {}
        held = max(self.held, 1)
        return {
            "samples": self.samples,
            "held_pct": round(100 * self.held / self.samples, 1),
            "avg_waiters": round(self.waiters / self.samples, 2),
            "holder_pct": {k: round(100 * v / held, 1) for k, v in self.holder.most_common()},
        }
