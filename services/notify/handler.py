"""Notify: from case events, the documents the procedure requires, delivered once per
(event, recipient, channel), every attempt and outcome appended to the case.

    bus event --> plan (documents + deliveries) --> documents, deliveries rows (one transaction)
              --> ack; the new deliveries are sent at once by this instance
    poller    --> claims due retries and sends whose sender died (lease ran out), SKIP LOCKED
    send      --> webhook | e-mail | SMS, with the idempotency key
              --> outcome appended to the case (batched) --> delivery row settled

A redelivered event inserts nothing new (ON CONFLICT DO NOTHING); a crash after the send and
before the record leaves the row `sending` until its lease runs out, then it is resent with the
same key (the receiver de-duplicates) unless the case already records it; two replicas never
hold one row at once.
"""
from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from contextvars import Context
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from petitions.domain.case import Case
from petitions.domain.values import Actor
from petitions.infra import tracing
from petitions.infra.offload import run_sized
from petitions.infra.batching import HISTORIES_SQL, decode_histories, rebuild
from petitions.infra.events import event_data
from petitions.infra.metrics import NOTICES_DEAD_LETTERED, NOTICES_DELIVERED, NOTICES_FAILED
from petitions.infra.store import CaseStore
from services.notify.channels import (
    Attachment,
    EmailChannel,
    PermanentFailure,
    SendResult,
    SmsChannel,
    WebhookChannel,
)
from services.notify.config import EMAIL, PETITIONER, SMS, WEBHOOK
from services.notify.confidentiality import ConfidentialityBreach, assert_clean, identity_terms
from services.notify.documents import Rendered, html_to_pdf
from services.notify.facts import CaseFacts, fold
from services.notify.plan import TRIGGERS, Plan, PlannedDelivery, Planner, Trigger, kinds_for
from services.notify.recorder import CaseRecorder
from services.notify.repository import Delivery, NotifyRepository, StoredDocument
from services.notify.webhook import DeliveryFailed, body_text

NOTIFY_ACTOR = Actor(id="notify-service", role="service")
log = logging.getLogger(__name__)

EventRow = tuple[str, int, str, dict[str, Any]]


@dataclass(frozen=True)
class Planned:
    facts: CaseFacts
    plan: Plan


@dataclass(frozen=True)
class Refused:
    """The confidentiality check refused a document of the event."""

    trigger: Trigger
    error: str


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_s: float = 2.0
    cap_s: float = 600.0

    def delay(self, attempts: int) -> float:
        """Exponential backoff with jitter: base * 2^(n-1), capped, times U(0.5, 1)."""
        return min(self.cap_s, self.base_s * 2 ** max(0, attempts - 1)) * random.uniform(0.5, 1.0)


class Notifier:
    def __init__(self, store: CaseStore, repo: NotifyRepository, planner: Planner, *,
                 webhook: WebhookChannel, email: EmailChannel, sms: SmsChannel,
                 default_webhook: str, retry: RetryPolicy, clock: Callable[[], datetime],
                 send_concurrency: int = 64, poll_s: float = 0.5,
                 record_linger_s: float = 0.02) -> None:
        self.store = store
        self.repo = repo
        self.planner = planner
        self.webhook = webhook
        self.email = email
        self.sms = sms
        self.default_webhook = default_webhook
        self.retry = retry
        self.clock = clock
        self.poll_s = poll_s
        self.recorder = CaseRecorder(store, repo.settle, pool=repo.pool,
                                     linger=record_linger_s)
        self._loads: asyncio.Queue[tuple[UUID, asyncio.Future[Any]]] = asyncio.Queue()
        self._case_loader: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(send_concurrency)
        self._capacity = send_concurrency
        self._inflight: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self.sent = 0

    def start(self) -> None:
        self.recorder.start()
        self._case_loader = asyncio.create_task(self._load_cases(), name="notify-loads")

    # ------------------------------------------------------------------ events in

    async def on_batch(self, batch: Sequence[Any]) -> dict[int, BaseException]:
        """Batch consumer handler (`petitions.infra.batching.BatchConsumer`): the cases of the
        whole fetch read in one query, planned, and every plan stored in one transaction;
        the consumer acks after this returns, i.e. after the commit. A message named in the
        result is nak'd and redelivered."""
        wanted = [(i, m) for i, m in enumerate(batch) if m.message.type in TRIGGERS]
        if not wanted:
            return {}
        _, failed = await self.handle_events(
            [(UUID(m.message.case_id), m.message.version, m.context) for _, m in wanted])
        return {wanted[j][0]: exc for j, exc in failed.items()}

    async def handle_event(self, case_id: UUID, version: int) -> list[Delivery]:
        """One event (as `on_batch` does for many); returns the deliveries it created."""
        created, failed = await self.handle_events([(case_id, version, None)])
        if failed:
            raise failed[0]
        return created

    async def handle_events(self, events: Sequence[tuple[UUID, int, Context | None]]
                            ) -> tuple[list[Delivery], dict[int, BaseException]]:
        """Plan and store what the events require and start sending what this call created
        (a delivery stored already is someone else's: a redelivery creates nothing).
        `events`: (case, version, the context its work runs in: its trace and log fields).
        Returns the created deliveries and the events that failed, by index."""
        records = await self.repo.pool.fetch(
            HISTORIES_SQL, list(dict.fromkeys(case_id for case_id, _, _ in events)))
        planned, aggregates = self._plan_events(records, events)
        for aggregate in aggregates:
            self.recorder.remember(aggregate)
        failed = {i: p for i, p in enumerate(planned) if isinstance(p, BaseException)}
        breaches = [self._refused(events[i], p) for i, p in enumerate(planned)
                    if isinstance(p, Refused)]
        if breaches:
            await asyncio.gather(*breaches)
        plans = [(i, p) for i, p in enumerate(planned) if isinstance(p, Planned)]
        deliveries: dict[str, PlannedDelivery] = {}
        for _, p in plans:
            for reason in p.plan.skipped:
                log.warning("recipient skipped", extra={"case_id": p.facts.case_id,
                                                        "reason": reason})
            for d in p.plan.deliveries:
                deliveries.setdefault(d.key, d)  # the same event twice in one batch
        created = await self.repo.save_plan(
            [doc for _, p in plans for doc in p.plan.documents], list(deliveries.values()))
        by_key = {d.key: d for d in created}
        for i, p in plans:
            for planned_delivery in p.plan.deliveries:
                d = by_key.pop(planned_delivery.key, None)
                if d is not None:
                    self._spawn(d, p.facts, planned_delivery.documents, events[i][2])
        return created, failed

    def _plan_events(self, records: Sequence[Any],
                     events: Sequence[tuple[UUID, int, Context | None]]
                     ) -> tuple[list[Planned | Refused | BaseException | None], list[Case]]:
        """The cases decoded and folded, each event planned (its documents rendered). A
        failure of one event is that event's alone.

        On the event loop, whatever the batch's size (a fetch of 256 plans in tens of
        milliseconds): in a thread, planning waited for the interpreter lock while the loop
        ran, and sends, acks and recording waited for both; at 1,000 notices a second that
        put p99 from the commit to the receiver at 0.6-2.3 s, against 0.2-0.27 s here."""
        cases = self._decode_cases(records)
        out: list[Planned | Refused | BaseException | None] = []
        for case_id, version, _ in events:
            try:
                out.append(self._plan_one(case_id, version, cases.get(case_id, ([], None))[0]))
            except Exception as exc:
                out.append(exc)
        return out, [aggregate for _, aggregate in cases.values() if aggregate is not None]

    def _plan_one(self, case_id: UUID, version: int, events: list[EventRow]
                  ) -> Planned | Refused | None:
        upto = events[:version]
        facts = fold(str(case_id), upto)
        if facts is None or len(upto) < version or upto[version - 1][1] != version:
            return None
        etype, _, at, data = upto[version - 1]
        if etype not in TRIGGERS:
            return None
        trigger = Trigger(str(case_id), version, etype, at, data)
        try:
            return Planned(facts, self.planner.plan(facts, trigger))
        except ConfidentialityBreach as exc:
            # a (province) template put identity into a unit's document: send nothing
            return Refused(trigger, str(exc))

    async def _refused(self, event: tuple[UUID, int, Context | None], refused: Refused) -> None:
        """The event's documents were refused by the confidentiality check: recorded on the
        case as one dead letter for the whole event."""
        case_id, version, context = event
        trigger, error = refused.trigger, refused.error
        kind = "+".join(kinds_for(trigger.type, trigger.data))
        log.error("document refused by the confidentiality check",
                  extra={"case_id": str(case_id), "version": version, "error": error})
        NOTICES_DEAD_LETTERED.labels(kind, "*").inc()
        record = self.recorder.record(case_id, lambda c: c.record_notice_dead_lettered(
            notice_id=f"{trigger.event_id}:*:*", kind=kind, recipient="*", channel="*",
            trigger_version=version, attempts=0, error=error, actor=NOTIFY_ACTOR,
            at=self.clock()), None)
        await (asyncio.create_task(record, context=context.copy()) if context else record)

    async def load(self, case_id: UUID) -> tuple[list[EventRow], Case | None]:
        """The case's events and aggregate. Concurrent loads share one query."""
        if self._case_loader is None:
            return await asyncio.to_thread(self._load, case_id)
        done: asyncio.Future[tuple[list[EventRow], Case | None]] = \
            asyncio.get_running_loop().create_future()
        self._loads.put_nowait((case_id, done))
        return await done

    async def _load_cases(self) -> None:
        while True:
            batch = [await self._loads.get()]
            while len(batch) < 256 and not self._loads.empty():
                batch.append(self._loads.get_nowait())
            try:
                records = await self.repo.pool.fetch(
                    HISTORIES_SQL, list({case_id for case_id, _ in batch}))
                loaded = await run_sized(self._decode_cases, len(batch), records)
            except Exception as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for case_id, done in batch:
                if not done.done():
                    done.set_result(loaded.get(case_id, ([], None)))

    def _decode_cases(self, records: list[Any]) -> dict[UUID, tuple[list[EventRow], Case | None]]:
        return {case_id: self._fold_events(events)
                for case_id, events in decode_histories(self.store, records).items()}

    def _load(self, case_id: UUID) -> tuple[list[EventRow], Case | None]:
        return self._fold_events(self.store.history(case_id))

    @staticmethod
    def _fold_events(events: list[Any]) -> tuple[list[EventRow], Case | None]:
        """The case's events as rows, and the aggregate they make (for recording later)."""
        aggregate = rebuild(events)
        rows = [(type(e).__name__, e.originator_version, e.timestamp.isoformat(), event_data(e))
                for e in events]
        return rows, aggregate

    async def facts_of(self, case_id: UUID) -> CaseFacts | None:
        return fold(str(case_id), (await self.load(case_id))[0])

    # ------------------------------------------------------------------ the poller

    async def run(self, stopping: asyncio.Event) -> None:
        """Claim due retries and orphaned sends until stopping; then let sends finish."""
        while not stopping.is_set():
            free = self._capacity - len(self._inflight)
            try:
                claimed = await self.repo.claim_due(min(100, free)) if free > 0 else []
            except Exception:
                log.warning("claiming due deliveries failed", exc_info=True)
                claimed = []
            for d in claimed:
                self._spawn(d, None)
            if len(claimed) < 100 or free <= 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self.poll_s)
                except TimeoutError:
                    pass
        await self.drain()

    def wake(self) -> None:
        self._wake.set()

    async def drain(self, timeout: float = 15.0) -> None:
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=timeout)
        await self.recorder.stop()
        if self._case_loader is not None:
            self._case_loader.cancel()
            await asyncio.gather(self._case_loader, return_exceptions=True)
            self._case_loader = None

    # ------------------------------------------------------------------ sending

    def _spawn(self, d: Delivery, facts: CaseFacts | None,
               rendered: list[Rendered] | None = None, context: Context | None = None) -> None:
        """Send in a task of its own; `context`: the triggering message's (its trace and log
        fields), copied, as the message's own is left when it is acked."""
        task = asyncio.create_task(self.deliver(d, facts, rendered), name=f"deliver:{d.key}",
                                   context=context.copy() if context is not None else None)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def deliver(self, d: Delivery, facts: CaseFacts | None,
                      rendered: list[Rendered] | None = None) -> None:
        async with self._slots:
            # A later attempt (claimed by the poller) continues the triggering event's trace,
            # so its outcome is recorded in the petition's trace too.
            with tracing.resumed(d.traceparent, f"deliver {d.kind}", _span_attributes(d)):
                try:
                    await self._deliver(d, facts, rendered)
                except Exception:
                    # the row stays `sending`; its lease runs out and the poller retries it
                    log.exception("delivery bookkeeping failed", extra={"delivery": str(d.id)})

    async def _deliver(self, d: Delivery, facts: CaseFacts | None,
                       rendered: list[Rendered] | None) -> None:
        if d.prior_state == "sending":
            # the previous sender died mid-send: if the case records the outcome, do not resend
            case = await asyncio.to_thread(self.store.get, d.case_id)
            notice = (case.notices.get(d.key) if case is not None else None) or {}
            if notice.get("state") in ("delivered", "sent"):
                await self.repo.settle([(d, notice["state"], None, None, None)])
                return
        if facts is None:
            facts = await self.facts_of(d.case_id)
        try:
            if facts is None:
                raise PermanentFailure("the case does not exist")
            # just rendered (the same bytes as stored), except e-mail, which needs the PDF
            docs: list[Any] = (rendered if rendered and len(rendered) == len(d.document_ids)
                               and d.channel != EMAIL
                               else await self.repo.documents(d.document_ids))
            if not docs:
                raise PermanentFailure("the delivery's documents are missing")
            result = await self.send(d, docs, facts)
        except PermanentFailure as exc:
            await self._failed(d, str(exc), final=True)
        except (DeliveryFailed, ConfidentialityBreach) as exc:
            final = d.attempts >= self.retry.max_attempts or isinstance(exc, ConfidentialityBreach)
            await self._failed(d, str(exc), final=final)
        except Exception as exc:  # a bug or an outage of our own: retried like a failure
            log.warning("delivery attempt raised", exc_info=True)
            await self._failed(d, f"{type(exc).__name__}", final=d.attempts >= self.retry.max_attempts)
        else:
            self.sent += 1
            await self._succeeded(d, result)

    async def send(self, d: Delivery, docs: list[Any], facts: CaseFacts) -> SendResult:
        guard = d.party != PETITIONER
        terms = identity_terms(facts) if guard else []
        address = self.address(d, facts)
        if not address:
            raise PermanentFailure(f"no {d.channel} address for {d.party} {_safe_recipient(d)}")
        if d.channel == WEBHOOK:
            payload = webhook_payload(d, docs)
            text = body_text(payload)
            if guard:
                assert_clean(text, terms)  # the very text whose UTF-8 bytes are sent
            return await self.webhook.send(address, d.key, payload, body=text.encode())
        if d.channel == SMS:
            text = "\n".join(doc.text for doc in docs)[:600]
            if guard:
                assert_clean(text, terms)
            return await self.sms.send(address, d.key, text)
        if d.channel == EMAIL:
            attachments = [Attachment(f"{doc.title}-{doc.id.hex[:8]}.pdf",
                                      await self.pdf_of(doc)) for doc in docs]
            subject = "、".join(doc.title for doc in docs) + f"（{_case_number(docs)}）"
            html = docs[0].html if len(docs) == 1 else "<hr>".join(doc.html for doc in docs)
            text = "\n\n".join(doc.text for doc in docs)
            if guard:
                assert_clean(subject + text + html, terms)
            return await self.email.send(address, d.key, subject, text, html, attachments)
        raise PermanentFailure(f"unknown channel {d.channel}")

    def address(self, d: Delivery, facts: CaseFacts) -> str:
        address = self.planner.address(d.party, d.recipient, d.channel, facts)
        if not address and d.channel == WEBHOOK and d.party not in (PETITIONER, "leader"):
            address = self.default_webhook.replace("{unit_id}", d.recipient)
        return address

    async def pdf_of(self, doc: StoredDocument) -> bytes:
        if doc.pdf is None:
            doc.pdf = await asyncio.to_thread(html_to_pdf, doc.html, doc.title)
            await self.repo.store_pdf(doc, doc.pdf)
        return doc.pdf

    # ------------------------------------------------------------------ outcomes

    async def _succeeded(self, d: Delivery, result: SendResult) -> None:
        at = self.clock()
        NOTICES_DELIVERED.labels(d.kind, d.channel).inc()
        if result.outcome == "sent":
            command = lambda c: c.record_notice_sent(  # noqa: E731
                notice_id=d.key, kind=d.kind, recipient=d.recipient, channel=d.channel,
                trigger_version=d.trigger_version, attempts=d.attempts,
                provider_ref=result.provider_ref, actor=NOTIFY_ACTOR, at=at)
        else:
            command = lambda c: c.record_notice_delivered(  # noqa: E731
                notice_id=d.key, kind=d.kind, recipient=d.recipient, channel=d.channel,
                trigger_version=d.trigger_version, attempts=d.attempts, actor=NOTIFY_ACTOR,
                at=at)
        await self.recorder.record(d.case_id, command,
                                   (d, result.outcome, None, result.provider_ref, None))

    async def _failed(self, d: Delivery, error: str, *, final: bool) -> None:
        at = self.clock()
        log.warning("delivery attempt failed", extra={
            "delivery": str(d.id), "channel": d.channel, "attempt": d.attempts,
            "final": final, "error": error})
        NOTICES_FAILED.labels(d.kind, d.channel).inc()
        if final:
            NOTICES_DEAD_LETTERED.labels(d.kind, d.channel).inc()
            command: Callable[[Case], None] = lambda c: c.record_notice_dead_lettered(  # noqa: E731
                notice_id=d.key, kind=d.kind, recipient=d.recipient, channel=d.channel,
                trigger_version=d.trigger_version, attempts=d.attempts, error=error,
                actor=NOTIFY_ACTOR, at=at)
            outcome = (d, "dead_lettered", error[:500], None, None)
        else:
            command = lambda c: c.record_notice_failed(  # noqa: E731
                notice_id=d.key, kind=d.kind, recipient=d.recipient, channel=d.channel,
                trigger_version=d.trigger_version, attempts=d.attempts, error=error,
                final=False, actor=NOTIFY_ACTOR, at=at)
            outcome = (d, "failed", error[:500], None, self.retry.delay(d.attempts))
        await self.recorder.record(d.case_id, command, outcome)
        if not final:
            asyncio.get_running_loop().call_later(outcome[4] or 0, self.wake)  # type: ignore[arg-type]


def _span_attributes(d: Delivery) -> dict[str, Any]:
    return {tracing.CASE_ID_ATTRIBUTE: str(d.case_id), "petitions.delivery.channel": d.channel,
            "petitions.delivery.attempt": d.attempts}


def webhook_payload(d: Delivery, docs: list[Any]) -> dict[str, Any]:
    """The signed body: a pure function of the stored delivery and documents, so a resend
    after a crash is byte-for-byte the same."""
    return {
        "idempotency_key": d.key,
        "notice_id": d.key,
        "event_id": d.event_id,
        "case_id": str(d.case_id),
        "case_number": _case_number(docs),
        "division": d.division,
        "kind": d.kind,
        "recipient": d.recipient,
        "party": d.party,
        "documents": [{
            "document_id": str(doc.id), "kind": doc.kind, "title": doc.title,
            "digest": doc.digest, "template": doc.template, "data": doc.data,
            "html": doc.html, "text": doc.text,
            "href": f"/v1/cases/{d.case_id}/documents/{doc.id}",
        } for doc in docs],
    }


def _case_number(docs: list[Any]) -> str:
    for doc in docs:
        number = (doc.data.get("case") or {}).get("case_number")
        if number:
            return str(number)
    return ""


def _safe_recipient(d: Delivery) -> str:
    return "" if d.party == PETITIONER else d.recipient
