"""Notify on real PostgreSQL with a real SMTP server, an SMS gateway and a webhook receiver:
the right documents to the right parties, once, with every attempt on the case."""
from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest

from petitions.domain.values import Channel, Contact, local_date
from services.notify.handler import webhook_payload
from tests.notify.conftest import (
    IDENTITY,
    PETITIONER,
    ROUTER,
    SUPERVISOR,
    accepted,
    history_types,
    make_notifier,
    notices,
    registered,
    routed,
    wait_until,
)

pytestmark = pytest.mark.integration


async def save(store, case):
    await asyncio.to_thread(store.save, case)
    return case


async def test_routed_case_gets_one_signed_assignment_slip(notifier, notify_store, webhook_sink):
    case = await save(notify_store, routed(registered()))
    created = await notifier.handle_event(case.id, 2)
    assert [(d.recipient, d.channel) for d in created] == [("land-330106", "webhook")]

    bodies = await wait_until(lambda: webhook_sink.for_case(str(case.id)))
    assert len(bodies) == 1
    body = bodies[0]
    assert body["idempotency_key"] == f"{case.id}:2:land-330106:webhook"
    assert body["documents"][0]["title"] == "交办单（主办）"
    assert "西湖区自然资源和规划局" in body["documents"][0]["html"]
    post = webhook_sink.posts_for(str(case.id))[0]
    assert post["signed"] and post["path"] == "/units/land-330106"
    await wait_until(lambda: "NoticeDelivered" in history_types(notify_store, case.id))

    # the event delivered again (a redelivery, a second consumer): nothing new
    assert await notifier.handle_event(case.id, 2) == []
    await asyncio.sleep(0.3)
    assert len(webhook_sink.posts_for(str(case.id))) == 1
    assert history_types(notify_store, case.id).count("NoticeDelivered") == 1


async def test_two_replicas_deliver_once(notify_store, notify_pool, webhook_sink, smtp_server,
                                         sms_gateway):
    replicas = [make_notifier(notify_store, notify_pool, webhook_sink, smtp_server, sms_gateway,
                              instance=f"replica-{i}") for i in range(2)]
    for r in replicas:
        r.start()
    stopping = asyncio.Event()
    loops = [asyncio.create_task(r.run(stopping)) for r in replicas]
    try:
        cases = [await save(notify_store, accepted(routed(registered()), assisting=[
            "housing-330106"])) for _ in range(5)]
        # both replicas get every event, at the same time
        await asyncio.gather(*(r.handle_event(c.id, 3) for c in cases for r in replicas))
        for c in cases:
            await wait_until(lambda c=c: history_types(notify_store, c.id).count(
                "NoticeDelivered") + history_types(notify_store, c.id).count("NoticeSent") == 3)
    finally:
        stopping.set()
        await asyncio.gather(*loops)
        for r in replicas:
            await r.client.aclose()
    for c in cases:
        posts = webhook_sink.posts_for(str(c.id))
        assert sorted({p["path"] for p in posts}) == ["/units/housing-330106",
                                                      "/units/land-330106"]
        # one idempotency key per unit, processed once (a POST repeated after a lease ran
        # out on a very slow machine carries the same key)
        assert len({p["key"] for p in posts}) == 2
        assert len(webhook_sink.for_case(str(c.id))) == 2
        kinds = [(t, d["recipient"], d["channel"]) for t, d in notices(notify_store, c.id)]
        assert sorted(kinds) == [("NoticeDelivered", "housing-330106", "webhook"),
                                 ("NoticeDelivered", "land-330106", "webhook"),
                                 ("NoticeSent", "petitioner", "sms")]
    # one SMS per case, whatever the replicas did
    refs = [m for m in sms_gateway.messages.values()
            if any(m["reference"].startswith(str(c.id)) for c in cases)]
    assert len(refs) == len(cases)


async def test_documents_by_every_channel_and_no_identity_to_units(
        notifier, notify_store, webhook_sink, smtp_server, sms_gateway):
    """Acceptance (SMS to the petitioner, slips to units), a reminder and a supervision notice
    by webhook and e-mail, an emergency to the bureau and the leader (330106 routes e-mail and
    SMS), then a scan of everything that went to anyone but the petitioner."""
    case = accepted(routed(registered()), assisting=["housing-330106"])
    now = datetime.now(UTC)
    case.start_clock(clock="handling", started_on=local_date(now).isoformat(),
                     due_on=local_date(now).isoformat(), length=60, day_kind="calendar",
                     explanation="60 days", provisional=False,
                     actor=ROUTER, at=now, reason="accepted")
    case.warn_clock(clock="handling", due_on=local_date(now).isoformat(), actor=case_actor(),
                    at=now)
    case.record_clock_missed(clock="handling", due_on=local_date(now).isoformat(),
                             actor=case_actor(), at=now)
    case.report_emergency(occurred_at=now, place="区政府门口", scale="约30人聚集",
                          people=f"{PETITIONER.name}等村民", cause="宅基地分配",
                          requests=["见区长"], nature="可能引发群体性事件", actor=case_actor(),
                          at=now)
    await save(notify_store, case)
    types = history_types(notify_store, case.id)
    for version, etype in enumerate(types, start=1):
        await notifier.handle_event(case.id, version)
    assert types[2:] == ["Accepted", "ClockStarted", "ClockWarned", "ClockMissed",
                         "EmergencyReported"]

    def settled():
        ns = notices(notify_store, case.id)
        return len([n for n in ns if n[0] in ("NoticeDelivered", "NoticeSent")]) >= 12 and ns

    ns = await wait_until(settled, timeout=15)
    got = sorted({(d["kind"], d["recipient"], d["channel"]) for t, d in ns
                  if t in ("NoticeDelivered", "NoticeSent")})
    assert got == sorted({
        ("assignment_slip", "land-330106", "webhook"),       # RoutedToUnit
        ("acceptance_notice", "petitioner", "sms"),
        ("assignment_slip", "housing-330106", "webhook"),
        ("reminder", "land-330106", "webhook"),
        ("reminder", "land-330106", "email"),
        ("supervision_notice", "land-330106", "webhook"),
        ("supervision_notice", "land-330106", "email"),
        ("emergency_report", "bureau-330106", "webhook"),
        ("emergency_report", "bureau-330106", "email"),
        ("emergency_report", "leader:leader-330106", "sms"),
        ("emergency_report", "leader:leader-330106", "email"),
    })
    assert not [n for n in ns if n[0] in ("NoticeDeliveryFailed", "NoticeDeadLettered")]

    # what the petitioner got: the acceptance notice by SMS, nothing identifying in it needed
    sms = [m for m in sms_gateway.to(PETITIONER.phone) if m["reference"].startswith(str(case.id))]
    assert len(sms) == 1 and "受理" in sms[0]["text"]

    # e-mails: HTML and a PDF of the document
    mails = [m for m in smtp_server.to("zrzy@xihu.example")
             if str(case.id) in m["X-Idempotency-Key"]]
    assert sorted(str(m["Subject"]).split("（")[0] for m in mails) == sorted(["督办通知", "催办通知"])
    pdfs = [p for m in mails for p in m.iter_attachments()]
    assert pdfs and all(p.get_content_type() == "application/pdf" for p in pdfs)
    assert all(p.get_content().startswith(b"%PDF") for p in pdfs)

    # the confidentiality scan: every webhook body, e-mail and SMS not for the petitioner
    unit_output = [p["raw"] for p in webhook_sink.posts_for(str(case.id))]
    for m in (smtp_server.messages):
        if str(case.id) in str(m["X-Idempotency-Key"]):
            unit_output += [str(m["Subject"])] + [
                part.get_content() for part in m.walk()
                if part.get_content_type() in ("text/plain", "text/html")]
    unit_output += [m["text"] for m in sms_gateway.messages.values()
                    if m["reference"].startswith(str(case.id)) and m["to"] != PETITIONER.phone]
    assert len(unit_output) >= 10
    for text in unit_output:
        for term in IDENTITY:
            assert term not in text
        assert "13812345678" not in text.replace("-", "").replace(" ", "")
    # and every stored document addressed to a unit
    docs = await notifier.repo.documents([d.id for d in await notifier.repo.case_documents(
        case.id)])
    for doc in docs:
        if not doc.for_petitioner:
            for term in IDENTITY:
                assert term not in doc.html and term not in doc.text
        else:
            assert PETITIONER.name in doc.html


async def test_a_collective_visit_is_told_through_its_representatives(
        notifier, notify_store, smtp_server, sms_gateway):
    reps = [Contact("王五", phone="13700000101", email="wangwu@example.cn"),
            Contact("赵六", phone="13700000102")]
    case = accepted(routed(registered(channel=Channel.VISIT, people_count=8,
                                      representatives=reps)))
    await save(notify_store, case)
    await notifier.handle_event(case.id, 3)

    def settled():
        ns = [d for t, d in notices(notify_store, case.id)
              if t in ("NoticeSent", "NoticeDelivered") and d["kind"] == "acceptance_notice"]
        return len(ns) >= 3 and ns

    got = sorted((d["recipient"], d["channel"]) for d in await wait_until(settled))
    assert got == [("representative:1", "email"), ("representative:1", "sms"),
                   ("representative:2", "sms")]
    assert len(sms_gateway.to("13700000101")) == 1 and len(sms_gateway.to("13700000102")) == 1
    assert not [m for m in sms_gateway.to(PETITIONER.phone)
                if m["reference"].startswith(str(case.id))]
    [mail] = [m for m in smtp_server.to("wangwu@example.cn")
              if str(case.id) in m["X-Idempotency-Key"]]
    assert "受理" in str(mail["Subject"])


async def test_a_joint_petition_is_told_through_its_contact_by_email_too(
        notifier, notify_store, smtp_server, sms_gateway):
    contact = Contact("李四", phone="13900000103", email="lisi@example.cn")
    case = accepted(routed(registered(people_count=3, contact=contact)))
    await save(notify_store, case)
    await notifier.handle_event(case.id, 3)
    await wait_until(lambda: len([d for t, d in notices(notify_store, case.id)
                                  if t in ("NoticeSent", "NoticeDelivered")
                                  and d["kind"] == "acceptance_notice"]) >= 2)
    assert len(sms_gateway.to("13900000103")) == 1
    [mail] = [m for m in smtp_server.to("lisi@example.cn")
              if str(case.id) in m["X-Idempotency-Key"]]
    html = next(p.get_content() for p in mail.walk() if p.get_content_type() == "text/html")
    assert "李四" in html and "联名信访联系人" in html


async def test_failures_are_retried_then_dead_lettered_and_replayed_with_the_same_key(
        notifier, notify_store, webhook_sink):
    webhook_sink.modes["/units/hr-330106"] = "fail"
    case = await save(notify_store, routed(registered(), unit_id="hr-330106"))
    await notifier.handle_event(case.id, 2)
    await wait_until(lambda: "NoticeDeadLettered" in history_types(notify_store, case.id))
    ns = notices(notify_store, case.id)
    assert [t for t, _ in ns] == ["NoticeDeliveryFailed", "NoticeDeliveryFailed",
                                  "NoticeDeadLettered"]
    assert [d["attempts"] for _, d in ns] == [1, 2, 3]
    key = f"{case.id}:2:hr-330106:webhook"

    async def listed() -> list:
        # the delivery row is settled just after the outcome is appended to the case
        return [d for d in await notifier.repo.dead_letters("330106")
                if d["idempotency_key"] == key]

    dead = await wait_until(listed)
    assert len(dead) == 1 and "503" in dead[0]["last_error"]

    webhook_sink.modes.pop("/units/hr-330106")
    from uuid import UUID
    assert await notifier.repo.requeue(UUID(dead[0]["id"]))
    notifier.wake()
    await wait_until(lambda: "NoticeDelivered" in history_types(notify_store, case.id))
    posts = webhook_sink.posts_for(str(case.id))
    assert {p["key"] for p in posts} == {key} and len(posts) == 4
    assert len(webhook_sink.for_case(str(case.id))) == 1


async def test_a_receiver_that_refuses_for_good_is_dead_lettered_at_once(
        notifier, notify_store, webhook_sink):
    webhook_sink.modes["/units/market-330106"] = "gone"
    case = await save(notify_store, routed(registered(), unit_id="market-330106"))
    await notifier.handle_event(case.id, 2)
    await wait_until(lambda: "NoticeDeadLettered" in history_types(notify_store, case.id))
    assert [t for t, _ in notices(notify_store, case.id)] == ["NoticeDeadLettered"]


async def test_anonymous_petitioners_get_nothing_and_units_still_do(
        notifier, notify_store, sms_gateway, webhook_sink):
    case = await save(notify_store, accepted(routed(registered(petitioner=None))))
    created = await notifier.handle_event(case.id, 3)
    assert [(d.party, d.channel) for d in created] == [("lead_unit", "webhook")]


async def test_the_accused_unit_is_never_sent_the_accusation(notifier, notify_store):
    from petitions.domain.values import Category

    case = accepted(routed(registered(category=Category.ACCUSATION,
                                      accused_unit="housing-330106")))
    await save(notify_store, case)
    created = await notifier.handle_event(case.id, 3)
    assert "housing-330106" not in {d.recipient for d in created}


async def test_webhook_body_is_the_same_bytes_on_a_resend(notifier, notify_store):
    case = await save(notify_store, routed(registered()))
    created = await notifier.handle_event(case.id, 2)
    docs = await notifier.repo.documents(created[0].document_ids)
    again = await notifier.repo.documents(created[0].document_ids)
    one, two = webhook_payload(created[0], docs), webhook_payload(created[0], again)
    assert json.dumps(one, sort_keys=True) == json.dumps(two, sort_keys=True)


def case_actor():
    return SUPERVISOR


async def test_a_retried_delivery_stays_in_the_trace_of_the_event_that_caused_it(
        notify_env, notify_store, notify_pool, webhook_sink, smtp_server, sms_gateway):
    """The poller's later attempts continue the trigger's trace, so the outcomes they append
    (and what consumers do with them) are found in the petition's one trace."""
    from uuid import uuid4

    from petitions.infra import tracing
    from petitions.infra.settings import CommonAuthSettings
    from petitions.infra.store import CaseStore

    trace_id = uuid4().hex
    trigger_context = f"00-{trace_id}-{uuid4().hex[:16]}-01"
    traced = CaseStore(notify_env.postgres_dsn, pool_size=2,
                       cipher_key=CommonAuthSettings().payload_encryption_key,
                       trace_context=tracing.current_traceparent)
    notifier = make_notifier(traced, notify_pool, webhook_sink, smtp_server, sms_gateway,
                             instance=f"test-{uuid4().hex[:6]}")
    notifier.start()
    stopping = asyncio.Event()
    poller = asyncio.create_task(notifier.run(stopping))
    try:
        webhook_sink.modes["/units/hr-330106"] = "fail"
        case = await save(notify_store, routed(registered(), unit_id="hr-330106"))
        await notify_pool.execute(
            "INSERT INTO event_trace_context (originator_id, originator_version, traceparent) "
            "VALUES ($1, 2, $2)", case.id, trigger_context)
        await notifier.handle_event(case.id, 2)
        await wait_until(lambda: "NoticeDeadLettered" in history_types(notify_store, case.id))
    finally:
        webhook_sink.modes.pop("/units/hr-330106", None)
        stopping.set()
        await poller
        await notifier.client.aclose()
        traced.close()
    rows = await notify_pool.fetch(
        "SELECT originator_version, traceparent FROM event_trace_context "
        "WHERE originator_id = $1 AND originator_version > 3 ORDER BY 1", case.id)
    # attempts 2 and 3 were claimed by the poller: their outcomes are versions 4 and 5
    assert [r["originator_version"] for r in rows] == [4, 5]
    assert all(r["traceparent"].split("-")[1] == trace_id for r in rows)
