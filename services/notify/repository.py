"""The `documents` and `deliveries` tables.

A delivery is one (event, recipient, channel): its primary key. Whoever inserts it first owns
the first attempt (INSERT ... ON CONFLICT DO NOTHING RETURNING); later attempts, retries after
a failure and sends whose sender died are claimed with SELECT ... FOR UPDATE SKIP LOCKED under a
lease, so two replicas never hold the same delivery at once. States:

    pending -> sending -> delivered | sent | failed -> sending ... -> dead_lettered -> pending

`sent` is a channel that does not confirm receipt (SMTP relay, SMS gateway) having accepted it.
Documents addressed to the petitioner carry identity, so their HTML and PDF are AES-GCM
encrypted at rest with the payload key, like the events.
"""
from __future__ import annotations

import base64
import json
import os
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from petitions.infra import jsoncodec
from petitions.infra.columns import as_columns
from petitions.infra.divisions import division_condition
from petitions.infra.store import TRACE_CONTEXT_TABLE
from services.notify.documents import Rendered
from services.notify.plan import PlannedDelivery

DELIVERY_NAMESPACE = uuid.UUID("0d5f2b8e-7a61-4f0b-b1d4-6a3c9e2f7b10")
FINAL_STATES = ("delivered", "sent", "dead_lettered")


def delivery_id(key: str) -> uuid.UUID:
    return uuid.uuid5(DELIVERY_NAMESPACE, key)


class DocumentCipher:
    def __init__(self, key_b64: str) -> None:
        self.aead = AESGCM(base64.b64decode(key_b64))

    def seal(self, data: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self.aead.encrypt(nonce, data, b"notify-document")

    def open(self, blob: bytes) -> bytes:
        return self.aead.decrypt(blob[:12], blob[12:], b"notify-document")


@dataclass
class Delivery:
    id: uuid.UUID
    event_id: str
    recipient: str
    channel: str
    case_id: uuid.UUID
    trigger_version: int
    division: str
    kind: str
    party: str
    document_ids: list[uuid.UUID]
    optional: bool
    state: str
    attempts: int
    prior_state: str = "pending"
    last_error: str | None = None
    # The trace context stored with the triggering event, for an attempt made later (a
    # retry, or a send a dead sender left): it stays in the petition's trace.
    traceparent: str | None = None

    @property
    def key(self) -> str:
        return f"{self.event_id}:{self.recipient}:{self.channel}"

    @classmethod
    def from_row(cls, r: Any) -> Delivery:
        return cls(r["id"], r["event_id"], r["recipient"], r["channel"], r["case_id"],
                   r["trigger_version"], r["division"], r["kind"], r["party"],
                   list(r["document_ids"]), r["optional"], r["state"], r["attempts"],
                   r.get("prior_state") or "pending", r.get("last_error"),
                   r.get("traceparent"))


@dataclass
class StoredDocument:
    id: uuid.UUID
    case_id: uuid.UUID
    kind: str
    recipient: str
    title: str
    template: str
    data: dict[str, Any]
    html: str
    text: str
    pdf: bytes | None
    digest: str
    created_at: datetime
    for_petitioner: bool
    event_id: str
    division: str


_CLAIM_COLUMNS = ("id, event_id, recipient, channel, case_id, trigger_version, division, kind, "
                  "party, document_ids, optional, state, attempts, last_error")


# Rows go in as one array per column (asyncpg sends arrays in binary): no JSON to build on
# our side and none to parse on the server's, which for documents' HTML was a measurable
# part of storing a plan.
_INSERT_DOCUMENTS = (
    "INSERT INTO documents (id, case_id, event_id, kind, recipient, division, title, template,"
    " data, html, text, encrypted, digest)"
    " SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[],"
    " $6::text[], $7::text[], $8::text[], $9::jsonb[], $10::text[], $11::text[], $12::bool[],"
    " $13::text[]) ON CONFLICT (id) DO NOTHING")
# document_ids travel comma-joined: PostgreSQL arrays of arrays must be rectangular
_INSERT_DELIVERIES = (
    f"INSERT INTO deliveries (event_id, recipient, channel, id, case_id, trigger_version,"
    f" division, kind, party, document_ids, optional, state, attempts, lease_until, claimed_by)"
    f" SELECT d.event_id, d.recipient, d.channel, d.id, d.case_id, d.trigger_version,"
    f" d.division, d.kind, d.party, string_to_array(d.document_ids, ',')::uuid[], d.optional,"
    f" 'sending', 1, now() + make_interval(secs => $12), $13"
    f" FROM unnest($1::text[], $2::text[], $3::text[], $4::uuid[], $5::uuid[], $6::int[],"
    f" $7::text[], $8::text[], $9::text[], $10::text[], $11::bool[]) AS d(event_id, recipient,"
    f" channel, id, case_id, trigger_version, division, kind, party, document_ids, optional)"
    f" ON CONFLICT (event_id, recipient, channel) DO NOTHING RETURNING {_CLAIM_COLUMNS}")
# One delivery's outcome, by its primary key; a batch of outcomes is sent as one pipeline of
# these (atomic, one round trip). As one UPDATE joined to the unnested outcomes, a plan made
# while the table was small (a new database; pooled connections keep their plans) hashed
# every delivery ever made on every settled batch, its cost growing with the table.
_SETTLE = (
    "UPDATE deliveries SET state = $2, last_error = $3,"
    " provider_ref = coalesce($4, provider_ref),"
    " next_attempt_at = CASE WHEN $5::float8 IS NULL THEN next_attempt_at"
    "   ELSE now() + make_interval(secs => $5::float8) END,"
    " lease_until = NULL, updated_at = now()"
    " WHERE id = $1 AND state NOT IN ('delivered', 'sent')")


class NotifyRepository:
    def __init__(self, pool: asyncpg.Pool, cipher: DocumentCipher, instance: str,
                 lease_s: float) -> None:
        self.pool = pool
        self.cipher = cipher
        self.instance = instance
        self.lease_s = lease_s

    # ------------------------------------------------------------------ writing a plan

    async def save_plan(self, documents: list[Rendered],
                        deliveries: list[PlannedDelivery]) -> list[Delivery]:
        """Store the documents and deliveries of one or many events in one transaction;
        returns the deliveries this call created, already claimed by this instance for their
        first attempt (a delivery that exists already is someone else's)."""
        if not deliveries and not documents:
            return []
        async with self.pool.acquire() as conn, conn.transaction():
            if documents:
                await conn.execute(_INSERT_DOCUMENTS, *as_columns(
                    [self._document_row(d) for d in documents], 13))
            if not deliveries:
                return []
            rows = await conn.fetch(_INSERT_DELIVERIES, *as_columns([(
                p.event_id, p.recipient, p.channel, delivery_id(p.key), p.case_id,
                p.trigger_version, p.division, p.kind, p.party,
                ",".join(str(d.id) for d in p.documents), p.optional,
            ) for p in deliveries], 11), self.lease_s, self.instance)
        return [Delivery.from_row(r) for r in rows]

    def _document_row(self, d: Rendered) -> tuple[Any, ...]:
        html, text = d.html, d.text
        if d.for_petitioner:
            html = base64.b64encode(self.cipher.seal(html.encode())).decode()
            text = base64.b64encode(self.cipher.seal(text.encode())).decode()
        return (d.id, d.event_id.split(":", 1)[0], d.event_id, d.kind, d.recipient,
                d.division, d.title, d.template, jsoncodec.dumps(d.data).decode(), html, text,
                d.for_petitioner, d.digest)

    # ------------------------------------------------------------------ claiming

    async def claim_due(self, limit: int = 100) -> list[Delivery]:
        """Deliveries due for an attempt: new, failed and due again, or held by a sender whose
        lease ran out (it died mid-send)."""
        rows = await self.pool.fetch(
            f"WITH due AS ("
            f"  SELECT event_id, recipient, channel, state AS prior_state FROM deliveries"
            f"  WHERE (state IN ('pending', 'failed') AND next_attempt_at <= now())"
            f"     OR (state = 'sending' AND lease_until < now())"
            f"  ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)"
            f" UPDATE deliveries d SET state = 'sending', attempts = d.attempts + 1,"
            f"  lease_until = now() + make_interval(secs => $2), claimed_by = $3,"
            f"  updated_at = now()"
            f" FROM due WHERE (d.event_id, d.recipient, d.channel) ="
            f"  (due.event_id, due.recipient, due.channel)"
            f" RETURNING {', '.join('d.' + c for c in _CLAIM_COLUMNS.split(', '))},"
            f"  due.prior_state, (SELECT t.traceparent FROM {TRACE_CONTEXT_TABLE} t"
            f"   WHERE t.originator_id = d.case_id"
            f"     AND t.originator_version = d.trigger_version) AS traceparent",
            limit, self.lease_s, self.instance,
        )
        return [Delivery.from_row(r) for r in rows]

    async def settle(self, outcomes: list[tuple[Delivery, str, str | None, str | None,
                                                 float | None]]) -> None:
        """(delivery, new state, error, provider ref, retry in seconds) for many at once."""
        if not outcomes:
            return
        await self.pool.executemany(_SETTLE, [
            (d.id, state, error, ref, retry_in) for d, state, error, ref, retry_in in outcomes])

    # ------------------------------------------------------------------ documents

    async def documents(self, ids: list[uuid.UUID]) -> list[StoredDocument]:
        rows = await self.pool.fetch(
            "SELECT * FROM documents WHERE id = ANY($1::uuid[])", ids)
        by_id = {r["id"]: self._document(r) for r in rows}
        return [by_id[i] for i in ids if i in by_id]

    async def case_documents(self, case_id: uuid.UUID) -> list[StoredDocument]:
        rows = await self.pool.fetch(
            "SELECT * FROM documents WHERE case_id = $1 ORDER BY created_at, id", case_id)
        return [self._document(r, with_content=False) for r in rows]

    async def document(self, case_id: uuid.UUID, doc_id: uuid.UUID) -> StoredDocument | None:
        row = await self.pool.fetchrow(
            "SELECT * FROM documents WHERE case_id = $1 AND id = $2", case_id, doc_id)
        return self._document(row) if row else None

    async def store_pdf(self, doc: StoredDocument, pdf: bytes) -> None:
        blob = self.cipher.seal(pdf) if doc.for_petitioner else pdf
        await self.pool.execute("UPDATE documents SET pdf = $2 WHERE id = $1 AND pdf IS NULL",
                                doc.id, blob)

    def _document(self, r: Any, with_content: bool = True) -> StoredDocument:
        html, text, pdf = r["html"], r["text"], r["pdf"]
        if not with_content:
            html, text, pdf = "", "", None
        elif r["encrypted"]:
            html = self.cipher.open(base64.b64decode(html)).decode()
            text = self.cipher.open(base64.b64decode(text)).decode()
            pdf = self.cipher.open(pdf) if pdf is not None else None
        data = r["data"]
        return StoredDocument(r["id"], r["case_id"], r["kind"], r["recipient"], r["title"],
                              r["template"], json.loads(data) if isinstance(data, str) else data,
                              html, text, pdf, r["digest"], r["created_at"], r["encrypted"],
                              r["event_id"], r["division"])

    # ------------------------------------------------------------------ operators

    async def dead_letters(self, prefix: str, limit: int = 100) -> list[dict[str, Any]]:
        division, args = division_condition(prefix)  # deliveries_dead_idx
        rows = await self.pool.fetch(
            "SELECT id, event_id, recipient, channel, case_id, division, kind, party, attempts,"
            f" last_error, updated_at FROM deliveries WHERE state = 'dead_lettered'"
            f" AND {division} ORDER BY updated_at DESC LIMIT ${len(args) + 1}", *args, limit)
        return [_public(r) for r in rows]

    async def delivery(self, delivery_id_: uuid.UUID) -> Delivery | None:
        row = await self.pool.fetchrow(
            f"SELECT {_CLAIM_COLUMNS} FROM deliveries WHERE id = $1", delivery_id_)
        return Delivery.from_row(row) if row else None

    async def requeue(self, delivery_id_: uuid.UUID) -> bool:
        """A dead letter back to pending, due now, with the same idempotency key."""
        status = await self.pool.execute(
            "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = now(),"
            " lease_until = NULL, updated_at = now() WHERE id = $1 AND state = 'dead_lettered'",
            delivery_id_)
        return status.endswith(" 1")

    async def for_case(self, case_id: uuid.UUID) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT id, event_id, recipient, channel, case_id, division, kind, party, state,"
            " attempts, last_error, updated_at FROM deliveries WHERE case_id = $1"
            " ORDER BY created_at, recipient, channel", case_id)
        return [_public(r) for r in rows]


def _public(r: Any) -> dict[str, Any]:
    out = dict(r)
    out["id"] = str(out["id"])
    out["case_id"] = str(out["case_id"])
    out["idempotency_key"] = f"{r['event_id']}:{r['recipient']}:{r['channel']}"
    if out.get("updated_at") is not None:
        out["updated_at"] = out["updated_at"].isoformat()
    return out
