"""Once and only once across a crash: notify is SIGKILLed after the receiver got the POST and
before the outcome was recorded; after a restart the notice is resent with the same
idempotency key, the receiver processes it once, and the case records it once."""
from __future__ import annotations

import signal
import time
from datetime import UTC, datetime

import pytest

from petitions.devstack import (
    DATA_DIR,
    Infrastructure,
    free_port,
    service_env,
    start_service,
    wait_until_ready,
)
from petitions.infra.settings import CommonAuthSettings
from petitions.infra.store import CaseStore
from tests.conftest import isolated_env
from tests.notify.conftest import ROUTER, notices, registered

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

UNIT = "slowunit-330106"  # not in the directory: reached through the default webhook URL


@pytest.fixture(scope="module")
def crash_env(servers):
    with isolated_env(servers, "notifycrash") as env:
        yield env


def wait(check, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within the time limit")
        time.sleep(0.05)


def test_sigkill_between_send_and_record_delivers_once(crash_env, webhook_sink, smtp_server,
                                                       sms_gateway):
    port = free_port()
    env = service_env(Infrastructure(crash_env.postgres_dsn, crash_env.nats_url), {
        **crash_env.as_env(), "NOTIFY_HTTP_PORT": str(port),
        "NOTIFY_DEFAULT_WEBHOOK_URL": webhook_sink.url(),
        "NOTIFY_SMS_GATEWAY_URL": sms_gateway.url,
        "NOTIFY_SMTP_HOST": "127.0.0.1", "NOTIFY_SMTP_PORT": str(smtp_server.port),
        "NOTIFY_LEASE_S": "2", "NOTIFY_WEBHOOK_TIMEOUT_S": "1.5", "NOTIFY_POLL_S": "0.2",
    })
    log_dir = DATA_DIR / "test-logs"
    webhook_sink.modes[f"/units/{UNIT}"] = "block"
    webhook_sink.blocked.clear()
    webhook_sink.release.clear()
    store = CaseStore(crash_env.postgres_dsn, pool_size=2,
                      cipher_key=CommonAuthSettings().payload_encryption_key)
    first = start_service("notify", env, log_dir)
    second = None
    try:
        wait_until_ready([first])
        case = registered()
        case.route_to_unit(unit_id=UNIT, unit_name="慢单位", rule_id="t", rule_set_version="t",
                           explanation="test", actor=ROUTER,
                           at=datetime.now(UTC))
        store.save(case)
        key = f"{case.id}:2:{UNIT}:webhook"

        # the receiver has the POST (and has processed it) but has not answered: kill now
        assert webhook_sink.blocked.wait(20), "the notice never reached the receiver"
        assert [p["key"] for p in webhook_sink.posts_for(str(case.id))] == [key]
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        assert not [t for t, _ in notices(store, case.id)], "recorded before the kill"

        second = start_service("notify", env, log_dir)
        wait_until_ready([second])
        delivered = wait(lambda: [d for t, d in notices(store, case.id)
                                  if t == "NoticeDelivered"])
        posts = webhook_sink.posts_for(str(case.id))
        assert len(posts) >= 2, "not resent after the crash"
        assert {p["key"] for p in posts} == {key}, "a resend used a new idempotency key"
        assert len(webhook_sink.for_case(str(case.id))) == 1, "processed more than once"
        assert posts[0]["raw"] == posts[-1]["raw"], "the resend is not the same body"
        time.sleep(0.5)
        assert [t for t, _ in notices(store, case.id)] == ["NoticeDelivered"]
        assert delivered[0]["notice_id"] == key and delivered[0]["attempts"] == 2
    finally:
        webhook_sink.release.set()
        webhook_sink.modes.pop(f"/units/{UNIT}", None)
        if first.proc.poll() is None:
            first.proc.kill()
        code = second.stop() if second is not None else 0
        store.close()
    assert code == 0, "notify did not stop cleanly"
