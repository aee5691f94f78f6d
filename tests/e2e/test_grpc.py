"""The same registration and queries over gRPC, through the running services."""
from __future__ import annotations

import time

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from petitionsapi.v1 import intake_pb2, intake_pb2_grpc

from tests.conftest import bearer
from tests.e2e.test_end_to_end import fully_processed, wait_for

pytestmark = pytest.mark.e2e


class _Authenticated(grpc.UnaryUnaryClientInterceptor):
    def __init__(self, token: str) -> None:
        self.token = token

    def intercept_unary_unary(self, continuation, details, request):
        metadata = list(details.metadata or []) + [("authorization", f"Bearer {self.token}")]
        return continuation(details._replace(metadata=metadata), request)


@pytest.fixture
def stub(system, tokens):
    with grpc.insecure_channel(system.grpc_target) as channel:
        authed = grpc.intercept_channel(channel, _Authenticated(tokens["county_330102_clerk"]))
        yield intake_pb2_grpc.IntakeServiceStub(authed), channel


def petition(**overrides) -> intake_pb2.RegisterPetitionRequest:
    fields = dict(
        channel=intake_pb2.CHANNEL_ONLINE, category=intake_pb2.CATEGORY_APPEAL,
        division="330102", subject="labour", content="工厂拖欠三个月工资",
        requests=["支付欠薪"], people_count=1,
        petitioner=intake_pb2.Petitioner(name="王五", id_number="330102198505051234"),
    )
    fields.update(overrides)
    return intake_pb2.RegisterPetitionRequest(**fields)


def test_grpc_petition_goes_through_every_service(system, stub, tokens, webhook_receiver):
    client, _ = stub
    created = client.RegisterPetition(petition())
    assert created.case_number.startswith("330102-")
    with httpx.Client(base_url=system.urls["intake"],
                      headers=bearer(tokens["county_330102_clerk"])) as rest:
        case = wait_for(fully_processed(rest, created.case_id))
    assert case["unit"]["unit_id"] == "hr-330102"
    assert len(webhook_receiver.for_case(created.case_id)) == 1

    got = client.GetCase(intake_pb2.GetCaseRequest(case_id=created.case_id))
    assert got.unit.unit_id == "hr-330102"
    assert got.deadlines["acceptance"].length == 15
    events = client.ListCaseEvents(intake_pb2.ListCaseEventsRequest(case_id=created.case_id))
    assert {e.type for e in events.events} >= {
        "Registered", "RoutedToUnit", "ClockStarted", "NoticeDelivered"}
    # the read model follows the log a moment later
    assert wait_for(lambda: created.case_id in {c.case_id for c in client.ListCases(
        intake_pb2.ListCasesRequest(division="330102", page_size=50)).cases})


def test_grpc_registers_representatives_and_a_joint_contact(system, stub, tokens):
    client, _ = stub

    def someone(n: int) -> intake_pb2.Petitioner:   # a new petitioner: not a repeat
        return intake_pb2.Petitioner(
            name="周九", id_number=f"3301021985{time.time_ns() % 10**7:07d}{n}")

    visit = client.RegisterPetition(petition(
        petitioner=someone(1), channel=intake_pb2.CHANNEL_VISIT, people_count=6,
        content="集体访：工厂拖欠六人工资",
        representatives=["赵六"], representative_contacts=[
            intake_pb2.Contact(name="钱七", phone="13700000301", email="qianqi@example.cn")]))
    joint = client.RegisterPetition(petition(
        petitioner=someone(2), channel=intake_pb2.CHANNEL_LETTER, people_count=3,
        content="联名信：拖欠三人工资",
        contact=intake_pb2.Contact(name="孙八", phone="13700000302")))
    with httpx.Client(base_url=system.urls["intake"],
                      headers=bearer(tokens["county_330102_clerk"])) as rest:
        def registered(case_id):
            return rest.get(f"/v1/cases/{case_id}/events").json()["events"][0]["data"]

        representatives = registered(visit.case_id)["representatives"]
        assert [r["name"] for r in representatives] == ["赵六", "钱七"]
        assert representatives[1]["email"] == "qianqi@example.cn"
        assert registered(joint.case_id)["contact"]["phone"] == "13700000302"
    with pytest.raises(grpc.RpcError) as misplaced:   # one signatory has no designated contact
        client.RegisterPetition(petition(contact=intake_pb2.Contact(name="孙八")))
    assert misplaced.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "joint petition" in misplaced.value.details()


def test_grpc_refuses_bad_input_with_the_right_codes(stub):
    client, _ = stub
    with pytest.raises(grpc.RpcError) as bad:
        client.RegisterPetition(petition(division="33", channel=intake_pb2.CHANNEL_UNSPECIFIED))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "division" in bad.value.details() and "channel" in bad.value.details()

    with pytest.raises(grpc.RpcError) as missing:
        client.GetCase(intake_pb2.GetCaseRequest(case_id="00000000-0000-4000-8000-000000000000"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND

    with pytest.raises(grpc.RpcError) as malformed:
        client.GetCase(intake_pb2.GetCaseRequest(case_id="not-a-uuid"))
    assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    with pytest.raises(grpc.RpcError) as huge:
        client.RegisterPetition(petition(content="x" * (2 * 1024 * 1024)))
    assert huge.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_grpc_health_service_reports_serving(stub):
    _, channel = stub
    health = health_pb2_grpc.HealthStub(channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service="petitionsapi.v1.IntakeService"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
