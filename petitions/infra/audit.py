"""The audit trail in the database: read a case's stored events with their chain hashes
(asyncpg), verify one case or every case, rebuild a case as it stood at a version or time, and
assemble the export an auditor archives.

The chain itself is written by the database (migration 2); the verifier is
`petitions.domain.audit`. `python -m petitions.audit` is the command line.
"""
from __future__ import annotations

import asyncio
import base64
import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter
from typing import Any
from uuid import UUID

import asyncpg

from petitions.domain.access import Permission, Principal
from petitions.domain.audit import (
    ALGORITHM,
    CONSTRUCTION,
    ChainHead,
    VerificationResult,
    chain_intact,
    verify_chain,
)
from petitions.infra.events import (
    Decoder,
    EventDecoder,
    fold_domain_events,
    fold_stored,
    history_entry,
)
from petitions.infra.identity import IdentityReads, redact_identity
from petitions.infra.store import EVENTS_TABLE

EXPORT_FORMAT = "petitions.case-export/1"
HEADS_TABLE = "case_chain_heads"


_CASE_ROWS = (f"SELECT originator_version, topic, state, chain_hash, notification_id "
              f"FROM {EVENTS_TABLE} WHERE originator_id = $1 ORDER BY originator_version")
_CASE_ROWS_UPTO = (f"SELECT originator_version, topic, state FROM {EVENTS_TABLE} "
                   f"WHERE originator_id = $1 AND originator_version <= $2 "
                   f"ORDER BY originator_version")
_MAX_VERSION = 2**63 - 1
_CASE_HEAD = f"SELECT version, chain_hash FROM {HEADS_TABLE} WHERE case_id = $1"
# Every event, case by case: the primary key's index delivers this order without a sort.
_ALL_ROWS = (f"SELECT originator_version, topic, state, chain_hash, originator_id "
             f"FROM {EVENTS_TABLE} ORDER BY originator_id, originator_version")
_HEADS = f"SELECT case_id, version, chain_hash FROM {HEADS_TABLE}"
_CASE_ID = itemgetter(4)


@dataclass(frozen=True)
class CaseSnapshot:
    """A case's stored events (version, topic, state, chain_hash, notification_id), ordered by
    version, and its chain head, read in one snapshot."""

    case_id: UUID
    rows: list[asyncpg.Record]
    head: ChainHead | None

    @property
    def exists(self) -> bool:
        return bool(self.rows) or self.head is not None

    def verify(self) -> VerificationResult:
        return verify_chain(self.case_id, self.rows, self.head)


@dataclass
class AuditReport:
    cases: int = 0
    events: int = 0
    failed: int = 0
    failures: list[VerificationResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failed == 0

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "cases": self.cases, "events": self.events, "failed": self.failed,
                "seconds": round(self.seconds, 3),
                "events_per_second": round(self.events_per_second),
                "failures": [f.as_dict() for f in self.failures]}


class CaseAudit:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def snapshot(self, case_id: UUID) -> CaseSnapshot:
        async with self.pool.acquire() as conn, \
                conn.transaction(isolation="repeatable_read", readonly=True):
            rows = await conn.fetch(_CASE_ROWS, case_id)
            head = await conn.fetchrow(_CASE_HEAD, case_id)
        return CaseSnapshot(case_id, rows, _head(head))

    async def verify_case(self, case_id: UUID) -> VerificationResult | None:
        """The case's chain verified; None when the store never held the case."""
        snap = await self.snapshot(case_id)
        return snap.verify() if snap.exists else None

    async def verify_all(self, *, batch_size: int = 20_000, keep_failures: int = 1_000,
                         on_failure: Callable[[VerificationResult], Any] | None = None
                         ) -> AuditReport:
        """Every case in the store, in (case, version) order, streamed in batches from one
        consistent snapshot. Keeps the first `keep_failures` failures (all are counted)."""
        report = AuditReport()
        started = time.perf_counter()

        def failed(result: VerificationResult) -> None:
            report.failed += 1
            if len(report.failures) < keep_failures:
                report.failures.append(result)
            if on_failure is not None:
                on_failure(result)

        async with self.pool.acquire() as conn, \
                conn.transaction(isolation="repeatable_read", readonly=True):
            cursor = await conn.cursor(_ALL_ROWS)
            carried: list[asyncpg.Record] = []
            events = 0
            done_upto: UUID | None = None   # heads up to here have been matched
            while True:
                batch = await cursor.fetch(batch_size)
                last_batch = len(batch) < batch_size
                groups = [(cid, list(rows)) for cid, rows
                          in itertools.groupby(carried + batch if carried else batch, _CASE_ID)]
                # The last case of a full batch may continue in the next one.
                carried = groups.pop()[1] if groups and not last_batch else []
                if groups:
                    upto = groups[-1][0]
                    heads = {r[0]: r for r in await _heads_between(conn, done_upto, upto)}
                    pop = heads.pop
                    for cid, rows in groups:
                        head = pop(cid, None)
                        if head is None or not chain_intact(cid, rows, head[1], head[2]):
                            # Name the first bad event (the slow path, failures only).
                            result = verify_chain(cid, rows, _head(head))
                            if not result.ok:
                                failed(result)
                        events += len(rows)
                    report.cases += len(groups)
                    for cid, head in sorted(heads.items()):  # heads whose events are all gone
                        report.cases += 1
                        failed(verify_chain(cid, [], _head(head)))
                    done_upto = upto
                if last_batch:
                    break
            # Heads after the last stored event.
            for r in await _heads_between(conn, done_upto, None):
                report.cases += 1
                failed(verify_chain(r[0], [], _head(r)))
        report.events = events
        report.seconds = time.perf_counter() - started
        return report


async def _heads_between(conn: asyncpg.Connection, after: UUID | None,
                         upto: UUID | None) -> list[asyncpg.Record]:
    """Chain heads with after < case_id <= upto (an open end when None), by the index."""
    if after is None and upto is None:
        return await conn.fetch(f"{_HEADS} ORDER BY case_id")
    if after is None:
        return await conn.fetch(f"{_HEADS} WHERE case_id <= $1 ORDER BY case_id", upto)
    if upto is None:
        return await conn.fetch(f"{_HEADS} WHERE case_id > $1 ORDER BY case_id", after)
    return await conn.fetch(f"{_HEADS} WHERE case_id > $1 AND case_id <= $2 ORDER BY case_id",
                            after, upto)


def _head(record: asyncpg.Record | None) -> ChainHead | None:
    return None if record is None else ChainHead(record["version"], record["chain_hash"])


# -- a case as it stood then ----------------------------------------------------------------

def fold_events(case_id: UUID, events: Iterable[Any]) -> dict[str, Any] | None:
    return fold_domain_events(case_id, events)


def fold_as_of(decode: Decoder, case_id: UUID, rows: Sequence[Any],
               at: datetime | None = None) -> dict[str, Any] | None:
    """Fold stored rows (version, topic, state), in version order, into the case summary; with
    `at`, only the prefix recorded at or before it. None: nothing to fold. Decodes straight
    to plain data (`EventDecoder`) when `decode` is a store's."""
    return fold_stored(EventDecoder.for_decode(decode), case_id, rows, at)


async def summary_as_of(pool: asyncpg.Pool, decode: Decoder, case_id: UUID, *,
                        version: int | None = None,
                        at: datetime | None = None) -> dict[str, Any] | None:
    """The case summary exactly as it stood at `version` or at time `at`, folded from the
    stored events (None when the case did not exist yet)."""
    rows = await pool.fetch(_CASE_ROWS_UPTO, case_id,
                            version if version is not None else _MAX_VERSION)
    if not rows:
        return None
    return await asyncio.to_thread(fold_as_of, decode, case_id, rows, at)


# -- export -----------------------------------------------------------------------------------

async def export_case(audit: CaseAudit, store: Any, identity_reads: IdentityReads,
                      case_id: UUID, principal: Principal, now: datetime) -> dict[str, Any] | None:
    """One JSON document an auditor can archive: the raw stored events with their chain hashes
    and the head, the decoded history (identity redacted unless the principal may read it, and
    such a read is recorded), the state they fold to, the verification result, and who
    exported it when. `python -m petitions.audit verify-export` re-verifies it offline."""
    snap = await audit.snapshot(case_id)
    if not snap.exists:
        return None
    verification = snap.verify()
    history, summary, undecodable = await asyncio.to_thread(_decode_history, store, snap)
    with_identity = principal.may(Permission.READ_IDENTITY)
    if with_identity:
        await identity_reads.record(case_id, principal, "audit export")
    else:
        history = [redact_identity(e) for e in history]
    return {
        "format": EXPORT_FORMAT,
        "case_id": str(case_id),
        "exported_at": now.isoformat(),
        "exported_by": {"subject": principal.subject, "role": principal.role.value,
                        "jurisdiction": principal.jurisdiction},
        "hash": {"algorithm": ALGORITHM, "construction": CONSTRUCTION},
        "head": (None if snap.head is None else
                 {"version": snap.head.version, "chain_hash": snap.head.chain_hash.hex()}),
        "stored_events": [
            {"version": r[0], "topic": r[1],
             "state": base64.b64encode(r[2] or b"").decode("ascii"),
             "chain_hash": r[3].hex() if r[3] is not None else None,
             "notification_id": r[4]}
            for r in snap.rows
        ],
        "identity": "included" if with_identity else "redacted",
        "history": history,
        "undecodable_versions": undecodable,
        "summary": summary,
        "verification": verification.as_dict(),
    }


def _decode_history(store: Any, snap: CaseSnapshot
                    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None, list[int]]:
    history, events, undecodable = [], [], []
    for version, topic, state, _, _ in snap.rows:
        try:
            event = store.decode(snap.case_id, version, topic, bytes(state or b""))
        except Exception as exc:  # noqa: BLE001 - a tampered event must not stop the export
            undecodable.append(version)
            history.append({"type": None, "version": version,
                            "error": f"cannot decode: {type(exc).__name__}"})
            continue
        events.append(event)
        history.append(history_entry(event))
    return history, fold_events(snap.case_id, events), undecodable


def offline_decoder(cipher_key: str) -> Decoder:
    """Decode stored events with the payload key alone (no database): for checking an
    export's decoded history against its stored bytes."""
    from eventsourcing.persistence import StoredEvent

    from petitions.infra.store import CaseApplication

    app = CaseApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo",
                               "CIPHER_TOPIC": "eventsourcing.cryptography:AESCipher",
                               "CIPHER_KEY": cipher_key})

    def decode(case_id: UUID, version: int, topic: str, state: bytes) -> Any:
        return app.mapper.to_domain_event(StoredEvent(
            originator_id=case_id, originator_version=version, topic=topic, state=state))

    return decode


def check_export_contents(document: dict[str, Any], decode: Decoder) -> str | None:
    """Decrypt the exported stored events and compare them with the exported history and
    summary (which the hash chain does not cover). None when they agree, else the first
    difference."""
    case_id = UUID(document["case_id"])
    redacted = document.get("identity") != "included"
    history = document.get("history") or []
    events = []
    for i, stored in enumerate(document["stored_events"]):
        version = int(stored["version"])
        try:
            event = decode(case_id, version, stored["topic"], base64.b64decode(stored["state"]))
        except Exception as exc:  # noqa: BLE001
            if i < len(history) and history[i].get("error"):
                continue  # exported as undecodable
            return f"version {version}: the stored state does not decrypt ({type(exc).__name__})"
        events.append(event)
        entry = history_entry(event)
        if redacted:
            entry = redact_identity(entry)
        if i >= len(history) or _normal(history[i]) != _normal(entry):
            return f"version {version}: the exported history entry differs from the stored event"
    if len(history) != len(document["stored_events"]):
        return "the exported history has a different number of events than were stored"
    if _normal(document.get("summary")) != _normal(fold_events(case_id, events)):
        return "the exported summary is not what the stored events fold to"
    return None


def _normal(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, sort_keys=True, default=_jsonable))


def _jsonable(value: Any) -> Any:
    # As FastAPI's encoder renders them in the exported document.
    return value.isoformat() if hasattr(value, "isoformat") else str(value)
