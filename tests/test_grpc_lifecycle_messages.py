"""gRPC lifecycle and audit requests become exactly the bodies REST validates, and answers
carry the summary. Pure: no server, no database."""
from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import grpc
import pytest
from google.protobuf import timestamp_pb2
from petitionsapi.v1 import lifecycle_pb2 as L
from pydantic import ValidationError

from services.intake import grpc_lifecycle as g
from services.intake.auditing import BadAsOf
from services.intake.grpc_api import RpcFailure, validation_message
from services.intake.lifecycle import COMMANDS, AcceptIn, WithdrawalIn


def test_every_lifecycle_rpc_runs_a_rest_command_and_every_command_has_an_rpc():
    rpcs = {name for name in L.DESCRIPTOR.services_by_name["CaseLifecycle"].methods_by_name}
    assert len(rpcs) == len(COMMANDS) == 19
    for name in rpcs:
        assert callable(getattr(g.CaseLifecycleServicer, name))


def test_an_acceptance_is_rest_s_body_with_the_decision_named():
    request = L.DecideAcceptanceRequest(
        case_id=str(uuid4()), reason="本机关职责范围", decided_on="2026-03-02",
        accept=L.DecideAcceptanceRequest.Accept(mode="assign", lead_unit="land-330106",
                                                assisting_units=["housing-330106"]))
    fields = g.acceptance_fields(request)
    assert fields == {"decision": "accept", "reason": "本机关职责范围",
                      "decided_on": "2026-03-02", "mode": "assign",
                      "lead_unit": "land-330106", "assisting_units": ["housing-330106"]}
    body = COMMANDS["acceptance"].validate(fields)
    assert isinstance(body, AcceptIn) and body.decided_on.isoformat() == "2026-03-02"


def test_an_acceptance_without_a_decision_is_refused_naming_the_choices():
    with pytest.raises(RpcFailure) as caught:
        g.acceptance_fields(L.DecideAcceptanceRequest(case_id=str(uuid4()), reason="r"))
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "accept, not_accept, not_accept_again, answer_on_the_spot" in caught.value.message


def test_unset_fields_count_as_missing_or_take_rest_s_default():
    fields = g.command_fields(L.WithdrawRequest(case_id=str(uuid4()), reason="r"))
    assert fields == {"reason": "r"}  # no case id, no voluntary
    with pytest.raises(ValidationError) as caught:
        COMMANDS["withdrawal"].validate(fields)
    assert validation_message(caught.value) == "voluntary: Field required"
    body = COMMANDS["withdrawal"].validate(g.command_fields(
        L.WithdrawRequest(case_id="x", reason="r", voluntary=False)))
    assert isinstance(body, WithdrawalIn) and body.voluntary is False  # set, though false

    progress = COMMANDS["progress-reports"].validate(g.command_fields(
        L.ReportProgressRequest(reason="r", note="n")))
    assert progress.unit_id is None  # empty: the calling unit
    with pytest.raises(ValidationError) as zero:
        COMMANDS["hearings"].validate(g.command_fields(L.RecordHearingRequest(reason="r")))
    assert "duration_days: Field required" in validation_message(zero.value)


def test_an_as_of_point_is_a_version_or_a_time():
    assert g.as_of_point(L.GetCaseAsOfRequest(version=3)) == (3, None, "3")
    moment = datetime(2026, 1, 5, 1, 0, tzinfo=UTC)
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(moment)
    assert g.as_of_point(L.GetCaseAsOfRequest(at=ts)) == (None, moment, moment.isoformat())
    with pytest.raises(BadAsOf):
        g.as_of_point(L.GetCaseAsOfRequest(version=0))
    for request in (L.GetCaseAsOfRequest(), L.GetCaseAsOfRequest(
            at=timestamp_pb2.Timestamp(seconds=2**62))):
        with pytest.raises(RpcFailure) as caught:
            g.as_of_point(request)
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_a_case_state_carries_the_lifecycle_and_the_whole_summary():
    summary = {"case_id": "c", "status": "accepted", "version": 4, "lead_unit": "land-330106",
               "assisting_units": ["housing-330106"], "allowed_actions": ["reply"],
               "file": {"missing": ["handling_opinion"]}, "extension": {"days": 30},
               "unit": None, "deadlines": {}, "notices": {}}
    state = g.case_state(summary)
    assert (state.case.status, state.case.version, state.lead_unit) == ("accepted", 4,
                                                                         "land-330106")
    assert list(state.allowed_actions) == ["reply"]
    assert list(state.missing_file_items) == ["handling_opinion"]
    assert state.summary["extension"]["days"] == 30


def test_a_verification_keeps_unset_versions_unset():
    ok = g.verification_message({"case_id": "c", "ok": True, "events": 3, "head_version": 3,
                                 "problem": None, "version": None, "detail": ""},
                                "2026-03-02T09:30:00+00:00")
    assert ok.ok and ok.head_version == 3 and not ok.HasField("version")
    bad = g.verification_message({"case_id": "c", "ok": False, "events": 3,
                                  "head_version": None, "problem": "altered", "version": 2,
                                  "detail": "hash differs"}, datetime(2026, 3, 2, tzinfo=UTC))
    assert not bad.HasField("head_version") and (bad.problem, bad.version) == ("altered", 2)
