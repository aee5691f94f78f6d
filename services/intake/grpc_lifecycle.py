"""A case's statutory life and its audit over gRPC (petitionsapi.v1.CaseLifecycle and
petitionsapi.v1.CaseAudit).

Nothing here decides anything: a request becomes the dict its REST body would be, is
validated by the same pydantic model, and runs through the same `CaseLifecycle` or
`CaseAuditing` as REST; refusals become status codes in `translate_errors`.

The generated modules are built into gen/ at build time; whoever imports this module puts
gen/ on sys.path first.
"""
from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import grpc
from fastapi.encoders import jsonable_encoder
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from petitionsapi.v1 import lifecycle_pb2, lifecycle_pb2_grpc

from petitions.infra.auth import TokenAuthority
from services.intake.auditing import CaseAuditing, check_version
from services.intake.grpc_api import (
    RpcFailure,
    caller_of,
    case_message,
    parse_case_id,
    to_struct,
    to_timestamp,
    translate_errors,
)
from services.intake.lifecycle import COMMANDS, CaseLifecycle

_SERVICES = lifecycle_pb2.DESCRIPTOR.services_by_name
LIFECYCLE_SERVICE_NAME: str = _SERVICES["CaseLifecycle"].full_name
AUDIT_SERVICE_NAME: str = _SERVICES["CaseAudit"].full_name

DECISIONS = ("accept", "not_accept", "not_accept_again", "answer_on_the_spot")


# -- request conversion ----------------------------------------------------------------


def command_fields(request: Message) -> dict[str, Any]:
    """The JSON body REST would receive for this request (without the case id).

    Fields proto3 cannot tell from their default are left out when unset, so they count as
    missing, or take REST's default, just as in JSON: an empty string (an empty date is
    today, an empty unit_id the calling unit), a zero number, an unset optional bool.
    """
    fields = MessageToDict(request, preserving_proto_field_name=True)
    fields.pop("case_id", None)
    return fields


def acceptance_fields(request: lifecycle_pb2.DecideAcceptanceRequest) -> dict[str, Any]:
    """REST's acceptance body: the chosen decision's fields beside `decision` naming it."""
    which = request.WhichOneof("decision")
    if which is None:
        raise RpcFailure(grpc.StatusCode.INVALID_ARGUMENT,
                         f"decision: set one of {', '.join(DECISIONS)}")
    fields = command_fields(request)
    chosen = fields.pop(which, {})
    return {**fields, **chosen, "decision": which}


def as_of_point(request: lifecycle_pb2.GetCaseAsOfRequest
                ) -> tuple[int | None, datetime | None, str]:
    """The version or time asked for, and how to echo it."""
    which = request.WhichOneof("point")
    if which == "version":
        return check_version(request.version), None, str(request.version)
    if which == "at":
        try:
            at = request.at.ToDatetime(tzinfo=UTC)
        except (ValueError, OverflowError, OSError) as exc:
            raise RpcFailure(grpc.StatusCode.INVALID_ARGUMENT,
                             "at: not a valid timestamp") from exc
        return None, at, at.isoformat()
    raise RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, "point: give a version or a time (at)")


# -- response conversion ---------------------------------------------------------------


def case_state(summary: Mapping[str, Any]) -> lifecycle_pb2.CaseState:
    """A case summary (with its lifecycle part) as a CaseState message."""
    return lifecycle_pb2.CaseState(
        case=case_message(summary),
        allowed_actions=list(summary.get("allowed_actions") or []),
        lead_unit=summary.get("lead_unit") or "",
        assisting_units=list(summary.get("assisting_units") or []),
        missing_file_items=list((summary.get("file") or {}).get("missing") or []),
        summary=to_struct(summary),
    )


def verification_message(result: Mapping[str, Any], verified_at: str | datetime
                         ) -> lifecycle_pb2.Verification:
    msg = lifecycle_pb2.Verification(
        case_id=str(result.get("case_id") or ""), ok=bool(result.get("ok")),
        events=int(result.get("events") or 0), problem=result.get("problem") or "",
        detail=result.get("detail") or "", verified_at=to_timestamp(verified_at))
    if result.get("head_version") is not None:
        msg.head_version = int(result["head_version"])
    if result.get("version") is not None:
        msg.version = int(result["version"])
    return msg


def document_bytes(document: Mapping[str, Any]) -> bytes:
    """The export as UTF-8 JSON, encoded as REST's JSONResponse encodes it."""
    return json.dumps(jsonable_encoder(document), ensure_ascii=False, allow_nan=False,
                      indent=None, separators=(",", ":")).encode("utf-8")


# -- the services ----------------------------------------------------------------------

_Handler = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[lifecycle_pb2.CaseState]]


def _command(name: str, fields: Callable[[Any], dict[str, Any]] = command_fields,
             ) -> _Handler:
    """The RPC method that runs the lifecycle command REST serves at POST .../<name>."""

    async def method(self: CaseLifecycleServicer, request: Any,
                     context: grpc.aio.ServicerContext) -> lifecycle_pb2.CaseState:
        caller = caller_of(self.authority, context)
        case_id = parse_case_id(request.case_id)
        command = COMMANDS[name]
        body = command.validate(fields(request))
        return case_state(await self.lifecycle.run(command, case_id, caller, body))

    method.__name__ = f"command_{name.replace('/', '_').replace('-', '_')}"
    return translate_errors(method)


class CaseLifecycleServicer(lifecycle_pb2_grpc.CaseLifecycleServicer):
    service_name = LIFECYCLE_SERVICE_NAME

    def __init__(self, lifecycle: CaseLifecycle, authority: TokenAuthority) -> None:
        self.lifecycle = lifecycle
        self.authority = authority

    def add_to_server(self, server: grpc.aio.Server) -> None:
        lifecycle_pb2_grpc.add_CaseLifecycleServicer_to_server(self, server)

    DecideAcceptance = _command("acceptance", acceptance_fields)
    ReportProgress = _command("progress-reports")
    RecordHearing = _command("hearings")
    ObjectToAssignment = _command("objections")
    DecideObjection = _command("objection-decisions")
    GrantExtension = _command("extensions")
    Reply = _command("replies")
    RecordReplyReceipt = _command("reply-receipts")
    RequestReview = _command("review-requests")
    IssueReviewOpinion = _command("review-opinions")
    RequestReReview = _command("re-review-requests")
    IssueReReviewOpinion = _command("re-review-opinions")
    RecordReturnVisit = _command("return-visits")
    Withdraw = _command("withdrawal")
    RecordHandlingOpinion = _command("file/handling-opinion")
    RecordLeaderSignOff = _command("file/leader-sign-off")
    RecordPetitionerSignature = _command("file/petitioner-signature")
    CloseCase = _command("closure")
    ArchiveCase = _command("archive")


class CaseAuditServicer(lifecycle_pb2_grpc.CaseAuditServicer):
    service_name = AUDIT_SERVICE_NAME

    def __init__(self, auditing: CaseAuditing, authority: TokenAuthority) -> None:
        self.auditing = auditing
        self.authority = authority

    def add_to_server(self, server: grpc.aio.Server) -> None:
        lifecycle_pb2_grpc.add_CaseAuditServicer_to_server(self, server)

    @translate_errors
    async def GetCaseAsOf(self, request: lifecycle_pb2.GetCaseAsOfRequest,
                          context: grpc.aio.ServicerContext) -> lifecycle_pb2.CaseAsOf:
        caller = caller_of(self.authority, context)
        case_id = parse_case_id(request.case_id)
        version, at, requested = as_of_point(request)
        summary = await self.auditing.as_of(case_id, caller, version=version, at=at,
                                            requested=requested)
        point = summary.pop("as_of")
        return lifecycle_pb2.CaseAsOf(state=case_state(summary), version=int(point["version"]),
                                      recorded_at=to_timestamp(point["recorded_at"]))

    @translate_errors
    async def VerifyCase(self, request: lifecycle_pb2.VerifyCaseRequest,
                         context: grpc.aio.ServicerContext) -> lifecycle_pb2.Verification:
        caller = caller_of(self.authority, context)
        case_id = parse_case_id(request.case_id)
        result = await self.auditing.verify(case_id, caller)
        return verification_message(result, result["verified_at"])

    @translate_errors
    async def ExportCase(self, request: lifecycle_pb2.ExportCaseRequest,
                         context: grpc.aio.ServicerContext) -> lifecycle_pb2.CaseExport:
        caller = caller_of(self.authority, context)
        case_id = parse_case_id(request.case_id)
        document = await self.auditing.export(case_id, caller)
        return lifecycle_pb2.CaseExport(
            case_id=str(case_id), document=document_bytes(document),
            filename=f"case-{case_id}.json",
            verification=verification_message(document["verification"],
                                              document["exported_at"]),
            identity=document["identity"])
