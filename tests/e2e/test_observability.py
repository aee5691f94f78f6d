"""Observability of the four service processes: one trace per petition across them (spans
exported by each process to its own file: OTEL_TRACES_EXPORTER=jsonl), Prometheus metrics on
every service, and logs that carry trace and case ids but never the petitioner's identity."""
from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from petitions.devstack import DATA_DIR, SERVICES
from tests.conftest import bearer

pytestmark = pytest.mark.e2e

SURNAMES = "赵钱孙李周吴郑王冯陈褚卫蒋沈韩杨朱秦尤许何吕施"
GIVEN = "子涵欣怡梓萱诗涵梦琪忆柳之桃慕青问兰尔岚元香初夏沛菡傲珊曼文乐菱痴珊"


def unique_identity() -> dict[str, str]:
    """A petitioner no other test (or earlier run) used: a name, an ID number, a mobile."""
    rng = random.Random(time.time_ns())
    name = "".join([rng.choice(SURNAMES)] + rng.sample(GIVEN, 3))
    id_number = f"330106{rng.randrange(10**10, 10**11)}X"
    phone = f"139{rng.randrange(10**7, 10**8)}"
    assert len(id_number) == 18 and len(phone) == 11
    return {"name": name, "id_number": id_number, "phone": phone, "address": "西湖区某村某号"}


def wait_for(check, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within the time limit")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def clerk(system, tokens):
    with httpx.Client(base_url=system.urls["intake"],
                      headers=bearer(tokens["county_330106_clerk"])) as client:
        yield client


@pytest.fixture(scope="module")
def petition(clerk) -> dict[str, Any]:
    """One petition registered over REST and handled by every service (unit, acceptance
    clock, delivered assignment notice)."""
    identity = unique_identity()
    body = {"channel": "visit", "category": "appeal", "division": "330106", "subject": "land",
            "content": f"宅基地重新分配遗漏（{time.time_ns()}）", "requests": ["重新丈量"],
            "people_count": 1, "petitioner": identity}
    r = clerk.post("/v1/petitions", json=body)
    assert r.status_code == 201, r.text
    case_id = r.json()["case_id"]

    def processed():
        case = clerk.get(f"/v1/cases/{case_id}").json()
        delivered = [n for n in case.get("notices", {}).values() if n["state"] == "delivered"]
        return case if case.get("unit") and "acceptance" in case.get("deadlines", {}) \
            and delivered else None

    case = wait_for(processed)
    # Reads that show (and log the reading of) the identity, as a clerk may.
    assert clerk.get(f"/v1/cases/{case_id}/events").status_code == 200
    return {"case_id": case_id, "case": case, "identity": identity}


# -- traces -------------------------------------------------------------------------------


def read_spans(directory: Path) -> list[dict[str, Any]]:
    spans = []
    for path in sorted(directory.glob("*.jsonl")):
        for line in path.read_text("utf-8").splitlines():
            if line.strip():
                spans.append(json.loads(line))
    return spans


def tree(spans: list[dict[str, Any]]) -> str:
    """The spans as an indented tree (for assertion messages)."""
    children: dict[str | None, list[dict[str, Any]]] = {}
    ids = {s["span_id"] for s in spans}
    for s in sorted(spans, key=lambda s: s["start_ns"]):
        parent = s["parent_span_id"] if s["parent_span_id"] in ids else None
        children.setdefault(parent, []).append(s)
    lines: list[str] = []

    def walk(parent: str | None, depth: int) -> None:
        for s in children.get(parent, []):
            lines.append(f"{'  ' * depth}{s['service']}: {s['name']} [{s['kind']}]")
            walk(s["span_id"], depth + 1)

    walk(None, 0)
    return "\n".join(lines)


def children(spans: list[dict[str, Any]], parents: list[dict[str, Any]],
             **where: Any) -> list[dict[str, Any]]:
    """The spans matching `where`: at least one, each a child of one of `parents`."""
    found = [s for s in spans if all(s.get(k) == v for k, v in where.items())]
    parent_ids = {p["span_id"] for p in parents}
    assert found and all(s["parent_span_id"] in parent_ids for s in found), (where, tree(spans))
    return found


def the_one(spans: list[dict[str, Any]], **where: Any) -> dict[str, Any]:
    found = [s for s in spans if all(s.get(k) == v for k, v in where.items())]
    assert len(found) == 1, (where, [(s["service"], s["name"]) for s in spans])
    return found[0]


def test_one_petition_is_one_trace_across_the_four_services(system, petition,
                                                            webhook_receiver):
    case_id = petition["case_id"]
    traces_dir = Path(system.env["PETITIONS_TRACES_DIR"])

    def about_case() -> list[dict[str, Any]]:
        return [s for s in read_spans(traces_dir)
                if s["attributes"].get("petitions.case_id") == case_id]

    def complete() -> list[dict[str, Any]] | None:
        spans = about_case()
        names = {(s["service"], s["name"]) for s in spans}
        wanted = {("routing", "process Registered"), ("deadlines", "process Registered"),
                  ("notify", "process RoutedToUnit")}
        return spans if wanted <= names else None

    spans = wait_for(complete)
    post = the_one(spans, service="intake", kind="SERVER", name="POST /v1/petitions")
    trace_id = post["trace_id"]

    # Everything that happened to the petition because it was registered is in that trace:
    # the append, every publish and every consumer (the GETs polling it are traces of their own).
    caused = [s for s in spans if s["kind"] in ("PRODUCER", "CONSUMER")
              or s["name"].startswith("append") or s["name"] == "screen and append"]
    strays = [(s["service"], s["name"], s["trace_id"], s["parent_span_id"]) for s in caused
              if s["trace_id"] != trace_id]
    assert not strays, f"spans of this case outside its trace {trace_id}: {strays}"
    in_trace = [s for s in read_spans(traces_dir) if s["trace_id"] == trace_id]
    assert {s["service"] for s in in_trace} == set(SERVICES)

    # Parent links, hop by hop: request -> screen and append -> publish -> (NATS) -> consumer -> its
    # append -> publish -> (NATS) -> notify -> the webhook call. (A republish or a redelivery
    # would add spans with the same parent, so each hop may have several.)
    append = the_one(in_trace, service="intake", name="screen and append")
    assert append["parent_span_id"] == post["span_id"], tree(in_trace)
    published = children(in_trace, [append], name="publish Registered", kind="PRODUCER")
    routing = children(in_trace, published, service="routing", name="process Registered")
    children(in_trace, published, service="deadlines", name="process Registered")
    routed = children(in_trace, routing, name="publish RoutedToUnit", kind="PRODUCER")
    notify = children(in_trace, routed, service="notify", name="process RoutedToUnit")

    webhook = wait_for(lambda: [s for s in read_spans(traces_dir) if s["trace_id"] == trace_id
                                and s["service"] == "notify" and s["kind"] == "CLIENT"])
    notify_ids = {s["span_id"] for s in notify}
    assert all(s["parent_span_id"] in notify_ids for s in webhook), tree(in_trace)
    # ... and the unit's system receives the trace context with the notice.
    notices = [r for r in webhook_receiver.for_case(case_id)
               if r["body"].get("kind") == "assignment_slip"]
    assert notices
    for notice in notices:
        headers = {k.lower(): v for k, v in notice["headers"].items()}
        _, header_trace, header_parent, _ = headers["traceparent"].split("-")
        assert header_trace == trace_id
        assert header_parent in {s["span_id"] for s in webhook}


# -- metrics ------------------------------------------------------------------------------


def metric_lines(url: str) -> list[str]:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_every_service_serves_its_metrics(system, petition):
    intake = metric_lines(system.urls["intake"])
    assert any(line.startswith('http_requests_total{') and 'route="/v1/petitions"' in line
               for line in intake)
    assert any(line.startswith("http_request_seconds_bucket{") for line in intake)
    # A registration's time by stage: each stage timed at least once for the petition.
    for stage in ("screen", "queued", "commit"):
        [count] = [line for line in intake if line.startswith(
            f'petitions_registration_stage_seconds_count{{stage="{stage}"}}')]
        assert float(count.rsplit(" ", 1)[1]) >= 1, count
    assert any(line.startswith("petitions_events_appended_total{")
               and 'service="intake"' in line and 'type="Registered"' in line for line in intake)
    assert any(line.startswith("petitions_events_appended_total{")
               and 'type="RoutedToUnit"' in line for line in metric_lines(system.urls["routing"]))
    notify = metric_lines(system.urls["notify"])
    assert any(line.startswith("petitions_notices_delivered_total{") for line in notify)

    def lag_reported(service: str, durable_prefix: str):
        lines = metric_lines(system.urls[service])
        return [line for line in lines if line.startswith("petitions_consumer_pending_messages{")
                and f'durable="{durable_prefix}' in line]

    for service, durable in (("routing", "routing"), ("deadlines", ""), ("notify", "notify")):
        [line] = wait_for(lambda s=service, d=durable: lag_reported(s, d), timeout=10)
        assert float(line.rsplit(" ", 1)[1]) >= 0
    for service in SERVICES:
        lines = metric_lines(system.urls[service])
        lag = [line for line in lines if line.startswith("petitions_relay_lag_events{")]
        assert lag, service
        assert any(line.startswith("petitions_relay_leader{") for line in lines)
    leaders = [line for service in SERVICES for line in metric_lines(system.urls[service])
               if line.startswith("petitions_relay_leader{") and line.endswith(" 1.0")]
    assert len(leaders) == 1


# -- logs ---------------------------------------------------------------------------------


def test_logs_carry_case_and_trace_ids_but_no_identity(system, petition):
    case_id = petition["case_id"]
    identity = petition["identity"]
    log_dir = DATA_DIR / "test-logs"
    texts = {name: (log_dir / f"{name}.log").read_text("utf-8", errors="replace")
             for name in SERVICES}
    for name, text in texts.items():
        for field in ("name", "id_number", "phone"):
            assert identity[field] not in text, f"{field} of the petitioner in {name}'s log"
        # Nor the ID number or the phone in another spelling.
        assert identity["id_number"].lower() not in text
        assert f"{identity['phone'][:3]} {identity['phone'][3:7]} {identity['phone'][7:]}" \
            not in text

    # Lines written while handling the case name it and its trace (the files accumulate
    # across runs; tests/integration/test_observability.py checks the fields precisely).
    lines = [json.loads(line) for text in texts.values() for line in text.splitlines()
             if line.startswith("{")]
    assert lines
    for entry in lines:
        if entry.get("case_id") == case_id:
            assert len(entry.get("trace_id", "")) == 32, entry


def test_a_grpc_call_continues_the_callers_trace_to_every_consumer(system, tokens):
    """The caller's traceparent (gRPC metadata) is the root: the server span, and through
    the bus the consumers, are in the caller's trace."""
    import grpc
    from petitionsapi.v1 import intake_pb2, intake_pb2_grpc

    caller_trace, caller_span = f"{random.getrandbits(128):032x}", f"{random.getrandbits(64):016x}"
    identity = unique_identity()
    request = intake_pb2.RegisterPetitionRequest(
        channel=intake_pb2.CHANNEL_ONLINE, category=intake_pb2.CATEGORY_APPEAL,
        division="330106", subject="land", content=f"gRPC 追踪测试（{time.time_ns()}）",
        requests=["重新丈量"], people_count=1,
        petitioner=intake_pb2.Petitioner(name=identity["name"],
                                         id_number=identity["id_number"]))
    metadata = [("authorization", f"Bearer {tokens['county_330106_clerk']}"),
                ("traceparent", f"00-{caller_trace}-{caller_span}-01")]
    with grpc.insecure_channel(system.grpc_target) as channel:
        created = intake_pb2_grpc.IntakeServiceStub(channel).RegisterPetition(
            request, metadata=metadata)
    traces_dir = Path(system.env["PETITIONS_TRACES_DIR"])

    def consumed() -> list[dict[str, Any]] | None:
        spans = [s for s in read_spans(traces_dir) if s["trace_id"] == caller_trace]
        consumers = {s["service"] for s in spans if s["name"] == "process Registered"}
        return spans if {"routing", "deadlines"} <= consumers else None

    spans = wait_for(consumed)
    server = the_one(spans, service="intake", kind="SERVER")
    assert server["name"] == "petitionsapi.v1.IntakeService/RegisterPetition"
    assert server["parent_span_id"] == caller_span
    assert server["attributes"]["petitions.case_id"] == created.case_id
    assert server["attributes"]["rpc.grpc.status_code"] == 0
    grpc_metrics = metric_lines(system.urls["intake"])
    assert any(line.startswith("grpc_server_requests_total{") and "RegisterPetition" in line
               and 'code="OK"' in line for line in grpc_metrics)
