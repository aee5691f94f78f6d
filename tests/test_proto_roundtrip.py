"""Conversions between intake's gRPC messages and the plain data the REST API uses.

Pure: no server, no database. The generated modules come from gen/ (built from proto/).
"""
from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID, uuid4

import grpc
import pytest

from petitions.domain.access import Principal, Role
from petitions.infra.auth import TokenAuthority
from google.protobuf import json_format
from petitionsapi.v1 import intake_pb2

from petitions.domain.case import Case
from petitions.domain.values import Actor, Category, Channel
from petitions.infra.store import ConcurrencyConflict
from services.intake import grpc_api
from services.intake.api import PetitionIn
from services.intake.queries import BadPageToken
from services.intake.registration import IdempotencyKeyReused, Registration

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def full_request(**overrides) -> intake_pb2.RegisterPetitionRequest:
    fields = dict(
        channel=intake_pb2.CHANNEL_VISIT,
        category=intake_pb2.CATEGORY_ACCUSATION,
        division="330106",
        subject="道路施工噪音",
        content="夜间施工影响休息。",
        requests=["停止夜间施工", "赔偿损失"],
        people_count=3,
        petitioner=intake_pb2.Petitioner(name="张三", id_number="33010619800101123X",
                                         phone="+86 138-0000-0000", address="杭州市西湖区"),
        received_at=grpc_api.to_timestamp(datetime(2026, 3, 1, 8, 0, tzinfo=UTC)),
        idempotency_key="k-1",
    )
    fields.update(overrides)
    return intake_pb2.RegisterPetitionRequest(**fields)


def anonymous_request(**overrides) -> intake_pb2.RegisterPetitionRequest:
    fields = dict(channel=intake_pb2.CHANNEL_LETTER, category=intake_pb2.CATEGORY_SUGGESTION,
                  division="330100", subject="s", content="c", anonymous=True)
    fields.update(overrides)
    return intake_pb2.RegisterPetitionRequest(**fields)


def invalid_message(request: intake_pb2.RegisterPetitionRequest) -> str:
    with pytest.raises(grpc_api.RpcFailure) as caught:
        grpc_api.validate_petition(request)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return caught.value.message


# -- request -> PetitionIn -----------------------------------------------------------------


def test_contacts_become_the_rest_body():
    fields = grpc_api.petition_fields(full_request(
        representatives=["赵六"],
        representative_contacts=[intake_pb2.Contact(name="钱七", phone="13700000301")],
        contact=intake_pb2.Contact(name="孙八", email="sunba@example.cn")))
    assert fields["representatives"] == [
        "赵六", {"name": "钱七", "phone": "13700000301", "email": "", "address": ""}]
    assert fields["contact"] == {"name": "孙八", "phone": "", "email": "sunba@example.cn",
                                 "address": ""}
    assert "contact" not in grpc_api.petition_fields(full_request())


def test_full_request_becomes_the_rest_body():
    fields = grpc_api.petition_fields(full_request())
    assert fields == {
        "channel": "visit",
        "category": "accusation",
        "division": "330106",
        "subject": "道路施工噪音",
        "content": "夜间施工影响休息。",
        "requests": ["停止夜间施工", "赔偿损失"],
        "people_count": 3,
        "petitioner": {"name": "张三", "id_number": "33010619800101123X",
                       "phone": "+86 138-0000-0000", "address": "杭州市西湖区", "email": ""},
        "anonymous": False,
        "received_at": datetime(2026, 3, 1, 8, 0, tzinfo=UTC),
        "representatives": [],
    }
    petition = PetitionIn.model_validate(fields)
    assert petition.channel is Channel.VISIT
    assert petition.category is Category.ACCUSATION
    assert petition.received_at.tzinfo is not None


def test_every_enum_value_maps_to_a_domain_value():
    for channel in Channel:
        number = intake_pb2.Channel.Value(f"CHANNEL_{channel.name}")
        fields = grpc_api.petition_fields(anonymous_request(channel=number))
        assert fields["channel"] == channel.value
    for category in Category:
        number = intake_pb2.Category.Value(f"CATEGORY_{category.name}")
        fields = grpc_api.petition_fields(anonymous_request(category=number))
        assert fields["category"] == category.value


def test_unset_optional_fields_are_left_out_so_rest_defaults_apply():
    fields = grpc_api.petition_fields(anonymous_request())
    assert "people_count" not in fields
    assert "petitioner" not in fields
    assert "received_at" not in fields
    petition = grpc_api.validate_petition(anonymous_request())
    assert petition.people_count == 1
    assert petition.received_at is None
    assert grpc_api.idempotency_key(anonymous_request()) is None


def test_unspecified_enums_count_as_missing_fields():
    message = invalid_message(anonymous_request(channel=intake_pb2.CHANNEL_UNSPECIFIED,
                                                category=intake_pb2.CATEGORY_UNSPECIFIED))
    assert "channel: Field required" in message
    assert "category: Field required" in message


def test_unknown_enum_number_is_refused():
    message = invalid_message(anonymous_request(channel=99))
    assert message.startswith("channel: ")


def test_explicit_zero_people_count_is_refused_not_defaulted():
    message = invalid_message(anonymous_request(people_count=0))
    assert message.startswith("people_count: ")


def test_message_names_each_bad_field():
    request = full_request(division="12", subject="", requests=["ok", ""],
                           petitioner=intake_pb2.Petitioner(name="李四", phone="abc"))
    message = invalid_message(request)
    for field in ("division: ", "subject: ", "requests[1]: ", "petitioner.phone: "):
        assert field in message, message
    assert "channel" not in message


def test_cross_field_rules_are_rests():
    message = invalid_message(anonymous_request(anonymous=False))
    assert message == "petition: give the petitioner, or set anonymous: true"
    both = anonymous_request(petitioner=intake_pb2.Petitioner(name="王五"))
    assert invalid_message(both) == "petition: an anonymous petition has no petitioner"


def test_timestamp_out_of_range_is_refused_as_received_at():
    request = anonymous_request()
    request.received_at.seconds = 10**12  # past year 9999
    assert invalid_message(request).startswith("received_at: ")


def test_long_idempotency_key_is_refused():
    with pytest.raises(grpc_api.RpcFailure) as caught:
        grpc_api.idempotency_key(anonymous_request(idempotency_key="k" * 201))
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert grpc_api.idempotency_key(anonymous_request(idempotency_key="k" * 200)) == "k" * 200


def test_case_ids_and_list_arguments():
    case_id = uuid4()
    assert grpc_api.parse_case_id(str(case_id)) == case_id
    with pytest.raises(grpc_api.RpcFailure) as caught:
        grpc_api.parse_case_id("not-a-uuid")
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT

    assert grpc_api.list_cases_args(intake_pb2.ListCasesRequest()) == {
        "division": None, "status": None, "page_token": None, "page_size": 50}
    args = grpc_api.list_cases_args(intake_pb2.ListCasesRequest(
        division="330000", status="registered", page_token="cDo1", page_size=200))
    assert args == {"division": "330000", "status": "registered", "page_token": "cDo1",
                    "page_size": 200}
    with pytest.raises(grpc_api.RpcFailure) as caught:
        grpc_api.list_cases_args(intake_pb2.ListCasesRequest(division="0", status="shelved",
                                                             page_size=201))
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    for field in ("division: ", "status: ", "page_size: "):
        assert field in caught.value.message


# -- summary -> Case ---------------------------------------------------------------------


SUMMARY = {
    "case_id": "6f1c1d0e-7d1b-4a44-9d59-2d7e0b0c5a11",
    "status": "registered",
    "unit": {"unit_id": "u-1", "unit_name": "西湖区住建局", "rule_id": "r-7",
             "rule_set_version": "2026.1", "explanation": "施工噪音归住建"},
    "deadlines": {
        "acceptance": {"started_on": "2026-03-02", "due_on": "2026-03-16", "length": 15,
                       "day_kind": "working", "explanation": "15 working days",
                       "provisional": True, "state": "running"},
    },
    "notices": {
        "n-1": {"kind": "assignment", "recipient": "u-1", "channel": "webhook", "attempts": 2,
                "state": "delivered", "at": "2026-03-02T09:31:00.250000+00:00"},
    },
    "version": 4,
    "updated_at": "2026-03-02T09:31:00.250000+00:00",
    "case_number": "330106-2026-000042",
    "channel": "online",
    "category": "appeal",
    "division": "330106",
    "subject": "s",
    "requests": ["a", "b"],
    "people_count": 2,
    "anonymous": True,
    "received_at": "2026-03-01T16:00:00+08:00",
    "registered_at": "2026-03-02T09:30:00+00:00",
}


def test_summary_becomes_case():
    case = grpc_api.case_message(SUMMARY)
    assert case.case_id == SUMMARY["case_id"]
    assert case.case_number == "330106-2026-000042"
    assert case.status == "registered"
    assert case.channel == intake_pb2.CHANNEL_ONLINE
    assert case.category == intake_pb2.CATEGORY_APPEAL
    assert (case.division, case.subject) == ("330106", "s")
    assert list(case.requests) == ["a", "b"]
    assert (case.people_count, case.anonymous, case.version) == (2, True, 4)
    assert case.unit.unit_name == "西湖区住建局"
    assert case.unit.rule_set_version == "2026.1"
    deadline = case.deadlines["acceptance"]
    assert (deadline.started_on, deadline.due_on) == ("2026-03-02", "2026-03-16")
    assert deadline.length == 15
    assert (deadline.day_kind, deadline.provisional, deadline.state) == ("working", True, "running")
    notice = case.notices["n-1"]
    assert (notice.kind, notice.recipient, notice.channel) == ("assignment", "u-1", "webhook")
    assert (notice.attempts, notice.state) == (2, "delivered")
    assert notice.at.ToDatetime(tzinfo=UTC) == datetime(2026, 3, 2, 9, 31, 0, 250000, tzinfo=UTC)
    # +08:00 is kept as the same instant
    assert case.received_at.ToDatetime(tzinfo=UTC) == datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    assert case.registered_at.ToDatetime(tzinfo=UTC) == datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    # survives the wire
    assert intake_pb2.Case.FromString(case.SerializeToString()) == case


def test_summary_before_registration_leaves_defaults():
    summary = {"case_id": "6f1c1d0e-7d1b-4a44-9d59-2d7e0b0c5a11", "status": None, "unit": None,
               "deadlines": {}, "notices": {}, "version": 1,
               "updated_at": "2026-03-02T09:30:00+00:00"}
    case = grpc_api.case_message(summary)
    assert case.status == ""
    assert case.channel == intake_pb2.CHANNEL_UNSPECIFIED
    assert not case.HasField("unit")
    assert not case.HasField("received_at")
    assert len(case.deadlines) == 0 and len(case.notices) == 0


# -- history entry -> Event --------------------------------------------------------------


def test_history_entry_becomes_event_with_struct_data():
    data = {
        "clock": "acceptance",
        "length": 15,
        "provisional": False,
        "petitioner": None,
        "requests": ["a", None, ["nested", 1, {"deep": [True, None]}]],
        "unit": {"unit_id": "u-1", "tags": []},
        "at": datetime(2026, 3, 2, tzinfo=UTC),
        "id": UUID("6f1c1d0e-7d1b-4a44-9d59-2d7e0b0c5a11"),
        "pair": ("x", 2),
    }
    entry = {"type": "ClockStarted", "version": 3,
             "recorded_at": "2026-03-02T09:30:00.123456+00:00", "class_version": 1,
             "actor": {"id": "deadlines", "role": "service", "jurisdiction": "330106"},
             "reason": "case routed", "data": data}
    event = grpc_api.event_message(entry)
    assert (event.type, event.version, event.class_version) == ("ClockStarted", 3, 1)
    assert event.recorded_at.ToDatetime(tzinfo=UTC) == datetime(2026, 3, 2, 9, 30, 0, 123456,
                                                                tzinfo=UTC)
    assert (event.actor.id, event.actor.role, event.actor.jurisdiction) == (
        "deadlines", "service", "330106")
    assert event.reason == "case routed"
    wire = intake_pb2.Event.FromString(event.SerializeToString())
    assert json_format.MessageToDict(wire.data) == {
        "clock": "acceptance",
        "length": 15,
        "provisional": False,
        "petitioner": None,
        "requests": ["a", None, ["nested", 1, {"deep": [True, None]}]],
        "unit": {"unit_id": "u-1", "tags": []},
        "at": "2026-03-02T00:00:00+00:00",
        "id": "6f1c1d0e-7d1b-4a44-9d59-2d7e0b0c5a11",
        "pair": ["x", 2],
    }
    assert wire.data.fields["petitioner"].WhichOneof("kind") == "null_value"


def test_history_entry_without_actor_or_reason():
    event = grpc_api.event_message({"type": "Legacy", "version": 1,
                                    "recorded_at": "2026-03-02T09:30:00+00:00",
                                    "class_version": 1, "actor": None, "reason": None,
                                    "data": {}})
    assert not event.HasField("actor")
    assert event.reason == ""
    assert len(event.data.fields) == 0


def test_real_domain_event_history_entry():
    from petitions.infra.events import history_entry

    case = registered_case()
    entry = history_entry(case.collect_events()[0])
    event = grpc_api.event_message(entry)
    assert event.type == "Registered"
    assert event.actor.role == "intake_clerk"
    data = json_format.MessageToDict(event.data)
    assert data["case_number"] == "330106-2026-000007"
    assert data["petitioner"] is None
    assert data["requests"] == ["r1"]


# -- registration -> response ------------------------------------------------------------


def registered_case() -> Case:
    return Case.register(
        case_id=uuid4(), case_number="330106-2026-000007", channel=Channel.PHONE,
        category=Category.SUGGESTION, division="330106", subject="s", content="c",
        requests=["r1"], people_count=1, petitioner=None,
        received_at=datetime(2026, 3, 1, 8, 0, tzinfo=timezone(timedelta(hours=8))),
        submission_digest="d", actor=Actor("api-client", "intake_clerk"), at=NOW,
    )


def test_registration_response():
    case = registered_case()
    response = grpc_api.registration_response(case, replayed=True)
    assert response.case_id == str(case.id)
    assert response.case_number == "330106-2026-000007"
    assert response.status == "registered"
    assert response.replayed is True
    assert response.received_at.ToDatetime(tzinfo=UTC) == datetime(2026, 3, 1, 0, 0, tzinfo=UTC)


# -- the servicer's status codes, with stand-ins for the registrar and queries ----------------


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


AUTHORITY = TokenAuthority("test-signing-key-of-at-least-32-bytes!!")
CLERK_TOKEN = AUTHORITY.mint(Principal("clerk-330106", Role.INTAKE_CLERK, "330106"))


class FakeContext:
    def __init__(self, token: str | None = CLERK_TOKEN) -> None:
        self.token = token

    def invocation_metadata(self):
        return [("authorization", f"Bearer {self.token}")] if self.token else []

    async def abort(self, code, message=""):
        raise Aborted(code, message)


class FakeRegistrar:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls = []

    async def register(self, cmd, actor, at, idempotency_key=None):
        self.calls.append((cmd, actor, at, idempotency_key))
        if self.error is not None:
            raise self.error
        return Registration(registered_case(), replayed=False)


class FakeQueries:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    async def get_case(self, case_id, principal):
        if self.error is not None:
            raise self.error
        return None

    async def history(self, case_id, principal):
        return None

    async def list_cases(self, principal, **kwargs):
        if kwargs["page_token"]:
            raise BadPageToken("page_token is not one this service issued")
        return {"items": [SUMMARY], "next_page_token": None}


def servicer(registrar=None, queries=None) -> grpc_api.IntakeServicer:
    return grpc_api.IntakeServicer(registrar or FakeRegistrar(), queries or FakeQueries(),
                                   AUTHORITY, lambda: NOW)


async def status_of(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(Aborted) as caught:
        await call
    return caught.value.code, caught.value.message


async def test_register_passes_command_actor_clock_and_key():
    registrar = FakeRegistrar()
    response = await servicer(registrar).RegisterPetition(full_request(), FakeContext())
    assert response.case_number == "330106-2026-000007"
    cmd, actor, at, key = registrar.calls[0]
    assert (cmd.channel, cmd.people_count, cmd.petitioner.name) == (Channel.VISIT, 3, "张三")
    assert actor.role == "intake_clerk" and actor.subject == "clerk-330106"
    assert at == NOW and key == "k-1"


async def test_calls_without_a_valid_token_are_unauthenticated():
    registrar = FakeRegistrar()
    for context in (FakeContext(token=None), FakeContext(token="not-a-token")):
        code, _ = await status_of(servicer(registrar).RegisterPetition(full_request(), context))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        code, _ = await status_of(servicer().GetCase(
            intake_pb2.GetCaseRequest(case_id=str(uuid4())), context))
        assert code == grpc.StatusCode.UNAUTHENTICATED
    assert registrar.calls == []


@pytest.mark.parametrize("error, code", [
    (IdempotencyKeyReused("this Idempotency-Key was already used for a different petition"),
     grpc.StatusCode.FAILED_PRECONDITION),
    (ConnectionRefusedError("db down"), grpc.StatusCode.UNAVAILABLE),
    (ConcurrencyConflict("busy"), grpc.StatusCode.UNAVAILABLE),
    (RuntimeError("a bug"), grpc.StatusCode.INTERNAL),
])
async def test_register_errors(error, code):
    got, message = await status_of(
        servicer(FakeRegistrar(error)).RegisterPetition(full_request(), FakeContext()))
    assert got == code
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        assert message == str(error)
    if code == grpc.StatusCode.INTERNAL:
        assert "a bug" not in message


async def test_register_refuses_invalid_and_future_petitions():
    registrar = FakeRegistrar()
    code, message = await status_of(servicer(registrar).RegisterPetition(
        full_request(channel=intake_pb2.CHANNEL_UNSPECIFIED), FakeContext()))
    assert (code, message) == (grpc.StatusCode.INVALID_ARGUMENT, "channel: Field required")
    future = full_request(received_at=grpc_api.to_timestamp(NOW + timedelta(minutes=1)))
    code, message = await status_of(servicer(registrar).RegisterPetition(future, FakeContext()))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message.startswith("received_at: ")
    assert registrar.calls == []


async def test_queries_status_codes():
    s = servicer()
    ctx = FakeContext()
    assert (await status_of(s.GetCase(intake_pb2.GetCaseRequest(case_id="x"), ctx)))[0] \
        == grpc.StatusCode.INVALID_ARGUMENT
    assert (await status_of(s.GetCase(intake_pb2.GetCaseRequest(case_id=str(uuid4())), ctx)))[0] \
        == grpc.StatusCode.NOT_FOUND
    assert (await status_of(s.ListCaseEvents(
        intake_pb2.ListCaseEventsRequest(case_id=str(uuid4())), ctx)))[0] \
        == grpc.StatusCode.NOT_FOUND
    assert (await status_of(s.ListCases(intake_pb2.ListCasesRequest(page_token="zz"), ctx)))[0] \
        == grpc.StatusCode.INVALID_ARGUMENT
    page = await s.ListCases(intake_pb2.ListCasesRequest(), ctx)
    assert [c.case_number for c in page.cases] == ["330106-2026-000042"]
    assert page.next_page_token == ""
    down = servicer(queries=FakeQueries(OSError("connection refused")))
    missing = intake_pb2.GetCaseRequest(case_id=str(uuid4()))
    assert (await status_of(down.GetCase(missing, ctx)))[0] == grpc.StatusCode.UNAVAILABLE
