"""A case's statutory life and its audit over gRPC, through the running services: the same
commands, refusals and audit reads as REST."""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import grpc
import httpx
import pytest
from google.protobuf.json_format import MessageToDict
from grpc_health.v1 import health_pb2, health_pb2_grpc
from petitionsapi.v1 import intake_pb2, intake_pb2_grpc, lifecycle_pb2, lifecycle_pb2_grpc

from petitions.audit_cli import main as audit_cli
from tests.conftest import bearer

pytestmark = pytest.mark.e2e

L = lifecycle_pb2
SUPERVISOR, CLERK, UNIT = "county_330106_supervisor", "county_330106_clerk", "unit_land_330106"
AUDITOR = "province_auditor"
ACCEPT = L.DecideAcceptanceRequest.Accept(mode="assign", lead_unit="land-330106",
                                          assisting_units=["housing-330106"])
REPLY = dict(outcome="supported", reply_text="经核实，将重新丈量并登记。")
REQUESTS = {name: method.input_type.name for name, method in
            L.DESCRIPTOR.services_by_name["CaseLifecycle"].methods_by_name.items()}


class Api:
    """The three services on one channel, each call made as the principal named."""

    def __init__(self, channel: grpc.Channel, tokens: dict[str, str]) -> None:
        self.channel = channel
        self.tokens = tokens
        self.intake = intake_pb2_grpc.IntakeServiceStub(channel)
        self.lifecycle = lifecycle_pb2_grpc.CaseLifecycleStub(channel)
        self.audit = lifecycle_pb2_grpc.CaseAuditStub(channel)

    def metadata(self, who: str | None) -> list[tuple[str, str]]:
        return [] if who is None else [("authorization", f"Bearer {self.tokens[who]}")]

    def act(self, who: str | None, rpc: str, **fields):
        """Call CaseLifecycle.<rpc> with its request built from fields (a reason by default)."""
        method = getattr(self.lifecycle, rpc)
        fields.setdefault("reason", f"{rpc} for the test")
        request = getattr(L, REQUESTS[rpc])(**fields)
        return method(request, metadata=self.metadata(who), timeout=30)

    def refused(self, code: grpc.StatusCode, who: str | None, rpc: str,
                **fields) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as caught:
            self.act(who, rpc, **fields)
        assert caught.value.code() == code, caught.value.details()
        return caught.value

    def register(self, division: str = "330106") -> str:
        """A new case (its own petitioner and content, so it never joins another)."""
        tag = uuid.uuid4().int
        created = self.intake.RegisterPetition(intake_pb2.RegisterPetitionRequest(
            channel=intake_pb2.CHANNEL_LETTER, category=intake_pb2.CATEGORY_APPEAL,
            division=division, subject="land", content=f"宅基地重新分配时漏掉了我家 ({tag})",
            requests=["重新丈量并登记"], people_count=1,
            petitioner=intake_pb2.Petitioner(name="王五", id_number=f"{tag % 10**18:018d}",
                                             phone="13800000000")),
            metadata=self.metadata(f"county_{division}_clerk"), timeout=30)
        assert created.status == "registered"
        return created.case_id

    def status(self, case_id: str, who: str = SUPERVISOR) -> str:
        return self.intake.GetCase(intake_pb2.GetCaseRequest(case_id=case_id),
                                   metadata=self.metadata(who), timeout=30).status


@pytest.fixture(scope="module")
def api(system, tokens) -> Iterator[Api]:
    with grpc.insecure_channel(system.grpc_target) as channel:
        yield Api(channel, tokens)


def trailing(error: grpc.RpcError) -> dict[str, str]:
    return dict(error.trailing_metadata() or ())


def test_a_case_through_review_and_re_review_to_termination(api):
    case_id = api.register()
    state = api.act(SUPERVISOR, "DecideAcceptance", case_id=case_id, accept=ACCEPT)
    assert state.case.status == "accepted" and state.lead_unit == "land-330106"
    assert list(state.assisting_units) == ["housing-330106"]
    assert "reply" in state.allowed_actions
    assert state.summary["acceptance"]["mode"] == "assign"

    state = api.act(UNIT, "ReportProgress", case_id=case_id, note="已现场勘查")
    assert state.summary["progress_reports"] == 1
    state = api.act(SUPERVISOR, "GrantExtension", case_id=case_id, days=30, approver="局长",
                    petitioner_told=True, reason="需要重新测绘，已告知信访人")
    assert state.summary["extension"]["days"] == 30
    assert "grant_extension" not in state.allowed_actions
    state = api.act(UNIT, "Reply", case_id=case_id, **REPLY)
    assert state.case.status == "replied" and state.summary["reply"]["outcome"] == "supported"
    state = api.act(UNIT, "RecordReplyReceipt", case_id=case_id)
    assert "request_review" in state.allowed_actions

    state = api.act(CLERK, "RequestReview", case_id=case_id, organ="杭州市信访局")
    assert state.case.status == "under_review"
    assert state.summary["review"]["organ"] == "杭州市信访局"
    api.act(SUPERVISOR, "IssueReviewOpinion", case_id=case_id, outcome="upheld",
            opinion="维持原答复")
    state = api.act(CLERK, "RequestReReview", case_id=case_id, organ="浙江省信访局")
    assert state.case.status == "under_re_review"
    state = api.act(SUPERVISOR, "IssueReReviewOpinion", case_id=case_id, outcome="upheld",
                    opinion="维持，终结")
    assert state.case.status == "terminated" and state.case.case_id == case_id
    assert list(state.allowed_actions) == ["close", "record_handling_opinion",
                                           "record_leader_sign_off",
                                           "record_petitioner_signature"]

    events = api.intake.ListCaseEvents(intake_pb2.ListCaseEventsRequest(case_id=case_id),
                                       metadata=api.metadata(SUPERVISOR), timeout=30).events
    lifecycle = [e for e in events if e.type in {
        "Accepted", "ProgressReported", "ExtensionGranted", "Replied", "ReplyReceived",
        "ReviewRequested", "ReviewOpinionIssued", "ReReviewRequested",
        "ReReviewOpinionIssued"}]
    assert [e.type for e in lifecycle] == [
        "Accepted", "ProgressReported", "ExtensionGranted", "Replied", "ReplyReceived",
        "ReviewRequested", "ReviewOpinionIssued", "ReReviewRequested", "ReReviewOpinionIssued"]
    # Actor and role come from the token, as on REST; the reason is the request's.
    assert (lifecycle[0].actor.id, lifecycle[0].actor.role, lifecycle[0].actor.jurisdiction) \
        == ("supervisor-330106", "bureau_supervisor", "330106")
    assert lifecycle[1].actor.role == "handling_unit"
    assert lifecycle[2].reason == "需要重新测绘，已告知信访人"
    assert all(e.reason for e in lifecycle)


def test_an_illegal_transition_is_failed_precondition_naming_the_state(api):
    case_id = api.register()
    refused = api.refused(grpc.StatusCode.FAILED_PRECONDITION, SUPERVISOR, "Reply",
                          case_id=case_id, **REPLY)
    assert "'registered'" in refused.details() and "accept" in refused.details()
    meta = trailing(refused)
    assert meta["current-state"] == "registered"
    assert "accept" in meta["allowed-actions"].split(",")
    assert "reply" not in meta["allowed-actions"].split(",")
    assert api.status(case_id) == "registered"


def test_closing_an_incomplete_file_names_what_is_missing_then_closes_and_archives(api):
    case_id = api.register()
    api.act(SUPERVISOR, "DecideAcceptance", case_id=case_id, accept=ACCEPT)
    api.act(UNIT, "Reply", case_id=case_id, **REPLY)
    refused = api.refused(grpc.StatusCode.FAILED_PRECONDITION, SUPERVISOR, "CloseCase",
                          case_id=case_id)
    assert "handling_opinion" in refused.details()
    assert trailing(refused)["missing"] == "handling_opinion,leader_sign_off,petitioner_signature"

    api.act(UNIT, "RecordHandlingOpinion", case_id=case_id, opinion="依法重新丈量")
    state = api.act(UNIT, "RecordLeaderSignOff", case_id=case_id, leader="王局长")
    assert list(state.missing_file_items) == ["petitioner_signature"]
    state = api.act(UNIT, "RecordPetitionerSignature", case_id=case_id, signed=True)
    assert list(state.missing_file_items) == []
    early = api.refused(grpc.StatusCode.INVALID_ARGUMENT, SUPERVISOR, "CloseCase",
                        case_id=case_id, closed_on="2001-03-02")  # a rule, not a state
    assert "closed_on" in early.details()
    state = api.act(SUPERVISOR, "CloseCase", case_id=case_id)  # today
    assert state.case.status == "closed" and state.summary["closed_on"]
    state = api.act(SUPERVISOR, "ArchiveCase", case_id=case_id)
    assert state.case.status == "archived" and list(state.allowed_actions) == []
    assert "王五" not in str(state)


def test_a_withdrawal_under_pressure_is_flagged_and_a_voluntary_one_withdraws(api):
    case_id = api.register()
    state = api.act(CLERK, "Withdraw", case_id=case_id, voluntary=False,
                    reason="被村干部劝说撤回")
    assert state.case.status == "registered"
    assert state.summary["withdrawal"]["flagged_for_investigation"] == 1
    state = api.act(CLERK, "Withdraw", case_id=case_id, voluntary=True, reason="问题已自行解决")
    assert state.case.status == "withdrawn" and list(state.allowed_actions) == ["close"]


def test_a_county_clerk_cannot_act_on_another_countys_case(api):
    other = api.register("330108")
    for who, rpc, fields in [
            (CLERK, "RecordReturnVisit", {"satisfaction": "satisfied"}),
            (CLERK, "Withdraw", {"voluntary": True}),
            (SUPERVISOR, "DecideAcceptance", {"accept": ACCEPT})]:
        refused = api.refused(grpc.StatusCode.NOT_FOUND, who, rpc, case_id=other, **fields)
        assert other in refused.details()
    missing = "00000000-0000-4000-8000-000000000000"
    api.refused(grpc.StatusCode.NOT_FOUND, SUPERVISOR, "DecideAcceptance", case_id=missing,
                accept=ACCEPT)
    assert api.status(other, "county_330108_clerk") == "registered"


def test_permissions_tokens_and_bad_requests_are_refused_before_anything_is_recorded(api):
    case_id = api.register()
    api.refused(grpc.StatusCode.PERMISSION_DENIED, AUDITOR, "DecideAcceptance",
                case_id=case_id, accept=ACCEPT)
    api.refused(grpc.StatusCode.PERMISSION_DENIED, CLERK, "GrantExtension", case_id=case_id,
                days=10, approver="局长", petitioner_told=True)
    # A handling unit acts only on cases it leads; this one leads nothing yet.
    api.refused(grpc.StatusCode.PERMISSION_DENIED, UNIT, "Reply", case_id=case_id, **REPLY)
    api.refused(grpc.StatusCode.PERMISSION_DENIED, UNIT, "ReportProgress", case_id=case_id,
                unit_id="agri-330106", note="for another unit")
    api.refused(grpc.StatusCode.UNAUTHENTICATED, None, "DecideAcceptance", case_id=case_id,
                accept=ACCEPT)

    no_reason = api.refused(grpc.StatusCode.INVALID_ARGUMENT, SUPERVISOR, "DecideAcceptance",
                            case_id=case_id, accept=ACCEPT, reason="")
    assert "reason" in no_reason.details()
    no_decision = api.refused(grpc.StatusCode.INVALID_ARGUMENT, SUPERVISOR, "DecideAcceptance",
                              case_id=case_id)
    assert "decision" in no_decision.details()
    bad_mode = api.refused(grpc.StatusCode.INVALID_ARGUMENT, SUPERVISOR, "DecideAcceptance",
                           case_id=case_id, decided_on="2026-02-30",
                           accept=L.DecideAcceptanceRequest.Accept(mode="delegate"))
    for name in ("accept.mode", "accept.lead_unit", "decided_on"):
        assert name in bad_mode.details()
    lead_assists = api.refused(grpc.StatusCode.INVALID_ARGUMENT, SUPERVISOR,
                               "DecideAcceptance", case_id=case_id,
                               accept=L.DecideAcceptanceRequest.Accept(
                                   mode="assign", lead_unit="land-330106",
                                   assisting_units=["land-330106"]))
    assert "assisting units" in lead_assists.details()
    unset_bool = api.refused(grpc.StatusCode.INVALID_ARGUMENT, CLERK, "Withdraw",
                             case_id=case_id)
    assert "voluntary" in unset_bool.details()
    no_unit = api.refused(grpc.StatusCode.INVALID_ARGUMENT, SUPERVISOR, "ReportProgress",
                          case_id=case_id, note="进展")
    assert "unit_id" in no_unit.details()
    api.refused(grpc.StatusCode.INVALID_ARGUMENT, SUPERVISOR, "DecideAcceptance",
                case_id="not-a-uuid", accept=ACCEPT)
    assert api.status(case_id) == "registered"


# -- audit ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def audited_case(api) -> str:
    case_id = api.register()
    api.act(SUPERVISOR, "DecideAcceptance", case_id=case_id, accept=ACCEPT)
    api.act(UNIT, "Reply", case_id=case_id, **REPLY)
    return case_id


def test_verify_over_grpc(api, audited_case):
    result = api.audit.VerifyCase(L.VerifyCaseRequest(case_id=audited_case),
                                  metadata=api.metadata(AUDITOR), timeout=30)
    assert result.ok and result.case_id == audited_case and not result.problem
    assert result.events >= 3 and result.head_version == result.events
    assert not result.HasField("version") and result.verified_at.seconds > 0


def test_export_over_grpc_is_rest_s_document_and_verifies_offline(api, audited_case, system,
                                                                 tmp_path):
    export = api.audit.ExportCase(L.ExportCaseRequest(case_id=audited_case),
                                  metadata=api.metadata(AUDITOR), timeout=30)
    assert export.filename == f"case-{audited_case}.json" and export.identity == "redacted"
    assert export.verification.ok
    doc = json.loads(export.document)
    assert doc["case_id"] == audited_case and doc["identity"] == "redacted"
    assert doc["exported_by"]["role"] == "auditor"
    assert doc["head"]["version"] == len(doc["stored_events"]) == export.verification.events
    assert "王五" not in export.document.decode("utf-8")
    with httpx.Client(base_url=system.urls["intake"], headers=bearer(api.tokens[AUDITOR])) as r:
        rest = r.get(f"/v1/cases/{audited_case}/export").json()
    # The same document (the services go on appending notices and clocks meanwhile, so
    # compare the events both saw).
    assert rest.keys() == doc.keys() and rest["identity"] == doc["identity"]
    seen = min(len(rest["stored_events"]), len(doc["stored_events"]))
    assert rest["stored_events"][:seen] == doc["stored_events"][:seen]
    assert rest["history"][:seen] == doc["history"][:seen]

    path = tmp_path / export.filename
    path.write_bytes(export.document)
    assert audit_cli(["verify-export", str(path), "--decode"]) == 0


def test_a_case_as_it_stood_then_over_grpc(api, audited_case, system):
    def as_of(**point):
        return api.audit.GetCaseAsOf(L.GetCaseAsOfRequest(case_id=audited_case, **point),
                                     metadata=api.metadata(AUDITOR), timeout=30)

    first = as_of(version=1)
    assert (first.version, first.state.case.status, first.state.lead_unit) == (
        1, "registered", "")
    assert "accept" in first.state.allowed_actions
    # GetCase reads the read model, which trails the log by the projector's gathering
    # window: wait until it shows the reply before taking its version as the head
    deadline = time.monotonic() + 30
    while True:
        now = api.intake.GetCase(intake_pb2.GetCaseRequest(case_id=audited_case),
                                 metadata=api.metadata(AUDITOR), timeout=30)
        if now.status == "replied" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    at_registration = as_of(at=now.registered_at)
    assert at_registration.version == 1 and at_registration.recorded_at == now.registered_at

    latest = as_of(version=now.version)
    assert latest.state.case.status == "replied" and latest.state.lead_unit == "land-330106"
    with httpx.Client(base_url=system.urls["intake"], headers=bearer(api.tokens[AUDITOR])) as r:
        rest = r.get(f"/v1/cases/{audited_case}", params={"as_of": str(now.version)}).json()
    rest.pop("as_of")
    assert MessageToDict(latest.state.summary) == rest

    for point, code in [({"version": 999}, grpc.StatusCode.NOT_FOUND),
                        ({"version": 0}, grpc.StatusCode.INVALID_ARGUMENT),
                        ({}, grpc.StatusCode.INVALID_ARGUMENT)]:
        with pytest.raises(grpc.RpcError) as caught:
            as_of(**point)
        assert caught.value.code() == code, (point, caught.value.details())


def test_audit_needs_the_permission_and_the_jurisdiction(api, audited_case):
    other = api.register("330108")
    for rpc, request in [("VerifyCase", L.VerifyCaseRequest),
                         ("ExportCase", L.ExportCaseRequest)]:
        method = getattr(api.audit, rpc)
        for who, case_id, code in [(CLERK, audited_case, grpc.StatusCode.PERMISSION_DENIED),
                                   (SUPERVISOR, other, grpc.StatusCode.NOT_FOUND),
                                   (None, audited_case, grpc.StatusCode.UNAUTHENTICATED)]:
            with pytest.raises(grpc.RpcError) as caught:
                method(request(case_id=case_id), metadata=api.metadata(who), timeout=30)
            assert caught.value.code() == code, (rpc, who)
    with pytest.raises(grpc.RpcError) as caught:
        api.audit.GetCaseAsOf(L.GetCaseAsOfRequest(case_id=audited_case, version=1),
                              metadata=api.metadata(CLERK), timeout=30)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_the_new_services_report_serving(api):
    health = health_pb2_grpc.HealthStub(api.channel)
    for service in ("petitionsapi.v1.CaseLifecycle", "petitionsapi.v1.CaseAudit"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=30)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
