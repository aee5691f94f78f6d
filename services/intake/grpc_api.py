"""Intake's gRPC API (petitionsapi.v1.IntakeService): the REST API's operations over grpc.aio.

Validation is the REST API's own: a request is turned into the dict a JSON body would be and
checked by `PetitionIn`, so both front doors accept and refuse exactly the same petitions.
The case lifecycle and audit services (services.intake.grpc_lifecycle) share this module's
error mapping (`translate_errors`), authentication and message conversion.

The generated modules (`petitionsapi.v1.intake_pb2`, `_grpc`) are built into gen/ at build
time; whoever imports this module puts gen/ on sys.path first.
"""
from __future__ import annotations

import functools
import logging
import re
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import Enum
from typing import Any, Protocol, TypeVar
from uuid import UUID

import asyncpg
import grpc
import psycopg
from eventsourcing import persistence as es_persistence
from fastapi import HTTPException
from google.protobuf import struct_pb2, timestamp_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from petitionsapi.v1 import intake_pb2, intake_pb2_grpc
from pydantic import ValidationError

from petitions.domain.case import Case
from petitions.domain.errors import IllegalTransition, IncompleteFile, RuleViolation
from petitions.domain.values import CaseStatus, Category, Channel
from petitions.infra.store import ConcurrencyConflict
from petitions.domain.access import AccessDenied, Principal
from petitions.infra.auth import InvalidToken, TokenAuthority
from services.intake.api import DIVISION_PATTERN, PetitionIn
from services.intake.auditing import BadAsOf
from services.intake.lifecycle import (
    ActsOnlyForItself,
    CaseNotFound,
    NotTheLeadUnit,
    UnitNotNamed,
)
from services.intake.queries import MAX_PAGE_SIZE, BadPageToken, CaseQueries
from services.intake.registration import (
    IdempotencyKeyReused,
    OutsideJurisdiction,
    Registrar,
    registration_view,
)

log = logging.getLogger(__name__)

SERVICE_NAME: str = intake_pb2.DESCRIPTOR.services_by_name["IntakeService"].full_name

# The REST API refuses bodies over 1 MiB of JSON; the same petition is smaller as protobuf,
# so 1 MiB plus a margin for framing never refuses what REST would accept.
MAX_MESSAGE_BYTES = 1024 * 1024 + 16 * 1024

DEFAULT_PAGE_SIZE = 50  # as REST
MAX_IDEMPOTENCY_KEY_CHARS = 200  # as REST's Idempotency-Key header
MAX_PAGE_TOKEN_CHARS = 100  # as REST's page_token query parameter

# Errors that mean "the database cannot be reached right now", not "this request is wrong".
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes ConnectionError and TimeoutError
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # admin/crash shutdown, cannot connect now
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.InterfaceError,  # pool or connection closed
    psycopg.OperationalError,  # includes psycopg_pool.PoolTimeout
    psycopg.InterfaceError,
    es_persistence.OperationalError,  # eventsourcing's wrappers of the psycopg errors
    es_persistence.InterfaceError,
    ConcurrencyConflict,
)

_DIVISION = re.compile(DIVISION_PATTERN)

_CHANNEL_TO_PROTO: dict[str, int] = {c.value: intake_pb2.Channel.Value(f"CHANNEL_{c.name}")
                                     for c in Channel}
_CHANNEL_FROM_PROTO: dict[int, str] = {v: k for k, v in _CHANNEL_TO_PROTO.items()}
_CATEGORY_TO_PROTO: dict[str, int] = {c.value: intake_pb2.Category.Value(f"CATEGORY_{c.name}")
                                      for c in Category}
_CATEGORY_FROM_PROTO: dict[int, str] = {v: k for k, v in _CATEGORY_TO_PROTO.items()}


class RpcFailure(Exception):
    """End the call with this status code and message (and trailing metadata)."""

    def __init__(self, code: grpc.StatusCode, message: str,
                 trailing_metadata: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.trailing_metadata = trailing_metadata


# -- request conversion ----------------------------------------------------------------


def petition_fields(request: intake_pb2.RegisterPetitionRequest) -> dict[str, Any]:
    """The JSON body REST would receive for this request, for `PetitionIn.model_validate`.

    Fields proto3 cannot tell from their default are left out when unset, so they count as
    missing just as in JSON: an UNSPECIFIED channel or category, an unset people_count,
    petitioner or received_at. An enum number this server does not know is passed through
    as the number, which validation then refuses.
    """
    fields: dict[str, Any] = {
        "division": request.division,
        "subject": request.subject,
        "content": request.content,
        "requests": list(request.requests),
        "anonymous": request.anonymous,
        "representatives": [*request.representatives,
                            *(_contact(c) for c in request.representative_contacts)],
    }
    if request.HasField("contact"):
        fields["contact"] = _contact(request.contact)
    if request.accused_unit:
        fields["accused_unit"] = request.accused_unit
    if request.channel != intake_pb2.CHANNEL_UNSPECIFIED:
        fields["channel"] = _CHANNEL_FROM_PROTO.get(request.channel, request.channel)
    if request.category != intake_pb2.CATEGORY_UNSPECIFIED:
        fields["category"] = _CATEGORY_FROM_PROTO.get(request.category, request.category)
    if request.HasField("people_count"):
        fields["people_count"] = request.people_count
    if request.HasField("petitioner"):
        p = request.petitioner
        fields["petitioner"] = {"name": p.name, "id_number": p.id_number, "phone": p.phone,
                                "address": p.address, "email": p.email}
    if request.HasField("received_at"):
        fields["received_at"] = _timestamp_to_datetime(request.received_at)
    return fields


def _contact(c: intake_pb2.Contact) -> dict[str, str]:
    return {"name": c.name, "phone": c.phone, "email": c.email, "address": c.address}


def _timestamp_to_datetime(ts: timestamp_pb2.Timestamp) -> datetime | str:
    try:
        return ts.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        # Out of Timestamp's range: hand validation something it will name as invalid.
        return f"invalid timestamp (seconds={ts.seconds}, nanos={ts.nanos})"


def validate_petition(request: intake_pb2.RegisterPetitionRequest) -> PetitionIn:
    """The request as a validated `PetitionIn`; RpcFailure(INVALID_ARGUMENT) naming each bad
    field otherwise."""
    try:
        return PetitionIn.model_validate(petition_fields(request))
    except ValidationError as exc:
        raise RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, validation_message(exc)) from exc


def validation_message(exc: ValidationError) -> str:
    """One line naming each bad field: "channel: Field required; requests[1]: ..."."""
    parts = []
    for error in exc.errors(include_url=False):
        msg = error["msg"]
        if error["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        parts.append(f"{field_path(error['loc'])}: {msg}")
    return "; ".join(parts)


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """("requests", 1) -> "requests[1]"; ("petitioner", "phone") -> "petitioner.phone";
    () (a check across fields) -> "petition"."""
    path = ""
    for part in loc:
        if part == "body" and not path:
            continue
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "petition"


def idempotency_key(request: intake_pb2.RegisterPetitionRequest) -> str | None:
    key = request.idempotency_key
    if len(key) > MAX_IDEMPOTENCY_KEY_CHARS:
        raise RpcFailure(grpc.StatusCode.INVALID_ARGUMENT,
                         f"idempotency_key: at most {MAX_IDEMPOTENCY_KEY_CHARS} characters")
    return key or None


def parse_case_id(raw: str) -> UUID:
    try:
        return UUID(raw)
    except ValueError as exc:
        raise RpcFailure(grpc.StatusCode.INVALID_ARGUMENT,
                         f"case_id: not a valid UUID: {raw[:100]!r}") from exc


def list_cases_args(request: intake_pb2.ListCasesRequest) -> dict[str, Any]:
    """Keyword arguments for `CaseQueries.list_cases`, checked as REST checks its query."""
    problems = []
    if request.division and not _DIVISION.match(request.division):
        problems.append("division: must be a 6-digit division code")
    if request.status and request.status not in {s.value for s in CaseStatus}:
        allowed = ", ".join(repr(s.value) for s in CaseStatus)
        problems.append(f"status: must be one of {allowed}")
    if len(request.page_token) > MAX_PAGE_TOKEN_CHARS:
        problems.append(f"page_token: at most {MAX_PAGE_TOKEN_CHARS} characters")
    if not 0 <= request.page_size <= MAX_PAGE_SIZE:
        problems.append(f"page_size: must be between 1 and {MAX_PAGE_SIZE} (0 for the default)")
    if problems:
        raise RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, "; ".join(problems))
    return {
        "division": request.division or None,
        "status": request.status or None,
        "page_token": request.page_token or None,
        "page_size": request.page_size or DEFAULT_PAGE_SIZE,
    }


# -- response conversion ---------------------------------------------------------------


def to_timestamp(value: str | datetime | None) -> timestamp_pb2.Timestamp | None:
    """An ISO 8601 string or datetime as a Timestamp (naive means UTC); None stays None."""
    if value is None or value == "":
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(moment)
    return ts


def registration_response(case: Case, replayed: bool,
                          linked_as: str | None = None) -> intake_pb2.RegisterPetitionResponse:
    view = registration_view(case)
    return intake_pb2.RegisterPetitionResponse(
        case_id=view["case_id"], case_number=view["case_number"], status=view["status"],
        received_at=to_timestamp(view["received_at"]), replayed=replayed,
        linked_as=linked_as or "",
    )


def case_message(summary: Mapping[str, Any]) -> intake_pb2.Case:
    """A case summary (petitions.domain.summary) as a Case message.

    A summary folded before its Registered event has no number, status or channel yet: those
    stay at their defaults.
    """
    msg = intake_pb2.Case(
        case_id=str(summary.get("case_id") or ""),
        case_number=summary.get("case_number") or "",
        status=summary.get("status") or "",
        channel=_CHANNEL_TO_PROTO.get(summary.get("channel") or "", intake_pb2.CHANNEL_UNSPECIFIED),
        category=_CATEGORY_TO_PROTO.get(summary.get("category") or "",
                                        intake_pb2.CATEGORY_UNSPECIFIED),
        division=summary.get("division") or "",
        subject=summary.get("subject") or "",
        version=int(summary.get("version") or 0),
        requests=list(summary.get("requests") or []),
        people_count=int(summary.get("people_count") or 0),
        anonymous=bool(summary.get("anonymous")),
        received_at=to_timestamp(summary.get("received_at")),
        registered_at=to_timestamp(summary.get("registered_at")),
        updated_at=to_timestamp(summary.get("updated_at")),
    )
    unit = summary.get("unit")
    if unit:
        msg.unit.CopyFrom(intake_pb2.Unit(
            unit_id=unit.get("unit_id") or "", unit_name=unit.get("unit_name") or "",
            rule_id=unit.get("rule_id") or "",
            rule_set_version=str(unit.get("rule_set_version") or ""),
            explanation=unit.get("explanation") or "",
        ))
    for clock, d in (summary.get("deadlines") or {}).items():
        msg.deadlines[clock].CopyFrom(intake_pb2.Deadline(
            started_on=d.get("started_on") or "", due_on=d.get("due_on") or "",
            length=int(d.get("length") or 0), day_kind=d.get("day_kind") or "",
            explanation=d.get("explanation") or "", provisional=bool(d.get("provisional")),
            state=d.get("state") or "",
        ))
    for notice_id, n in (summary.get("notices") or {}).items():
        msg.notices[notice_id].CopyFrom(intake_pb2.Notice(
            kind=n.get("kind") or "", recipient=n.get("recipient") or "",
            channel=n.get("channel") or "", attempts=int(n.get("attempts") or 0),
            state=n.get("state") or "", at=to_timestamp(n.get("at")),
        ))
    return msg


def event_message(entry: Mapping[str, Any]) -> intake_pb2.Event:
    """A history entry (petitions.infra.events.history_entry) as an Event message."""
    msg = intake_pb2.Event(
        type=entry.get("type") or "",
        version=int(entry.get("version") or 0),
        recorded_at=to_timestamp(entry.get("recorded_at")),
        class_version=int(entry.get("class_version") or 0),
        reason=entry.get("reason") or "",
    )
    actor = entry.get("actor")
    if actor:
        msg.actor.CopyFrom(intake_pb2.Actor(id=actor.get("id") or "",
                                            role=actor.get("role") or "",
                                            jurisdiction=actor.get("jurisdiction") or ""))
    msg.data.CopyFrom(to_struct(entry.get("data") or {}))
    return msg


def to_struct(data: Mapping[str, Any]) -> struct_pb2.Struct:
    """Plain data as a Struct. Struct holds JSON only: keys become strings, tuples lists,
    dates ISO strings, anything else its str(); numbers become doubles."""
    struct = struct_pb2.Struct()
    struct.update(_jsonable(dict(data)))
    return struct


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Enum):
        return _jsonable(value.value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return str(value)


# -- the service -----------------------------------------------------------------------

_Method = TypeVar("_Method", bound=Callable[..., Awaitable[Any]])


def translate_errors(method: _Method) -> _Method:
    """Turn the exceptions a method raises into status codes (as REST's answers: 404 ->
    NOT_FOUND, 403 -> PERMISSION_DENIED, 409 -> FAILED_PRECONDITION, 422 -> INVALID_ARGUMENT,
    but an incomplete case file, a precondition of closing, is FAILED_PRECONDITION)."""

    @functools.wraps(method)
    async def call(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except RpcFailure as exc:
            failure = exc
        except (AccessDenied, OutsideJurisdiction, NotTheLeadUnit, ActsOnlyForItself) as exc:
            failure = RpcFailure(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        except CaseNotFound as exc:
            failure = RpcFailure(grpc.StatusCode.NOT_FOUND, str(exc))
        except IllegalTransition as exc:
            failure = RpcFailure(grpc.StatusCode.FAILED_PRECONDITION, str(exc), (
                ("current-state", exc.current_state),
                ("allowed-actions", ",".join(exc.allowed))))
        except IncompleteFile as exc:
            failure = RpcFailure(grpc.StatusCode.FAILED_PRECONDITION, str(exc),
                                 (("missing", ",".join(exc.missing)),))
        except RuleViolation as exc:
            failure = RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except UnitNotNamed as exc:
            failure = RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, f"{exc.field}: {exc}")
        except BadAsOf as exc:
            failure = RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, f"as_of: {exc}")
        except ValidationError as exc:
            failure = RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, validation_message(exc))
        except UNAVAILABLE_ERRORS as exc:
            log.warning("%s: database unavailable: %r", method.__name__, exc)
            failure = RpcFailure(grpc.StatusCode.UNAVAILABLE,
                                 "the case store is unavailable; retry later")
        except grpc.aio.AbortError:
            raise  # context.abort() inside the method: already decided
        except Exception:
            log.exception("%s failed", method.__name__)
            failure = RpcFailure(grpc.StatusCode.INTERNAL, "internal error")
        if failure.trailing_metadata:
            await context.abort(failure.code, failure.message, failure.trailing_metadata)
        await context.abort(failure.code, failure.message)

    return call  # type: ignore[return-value]


class IntakeServicer(intake_pb2_grpc.IntakeServiceServicer):
    def __init__(self, registrar: Registrar, queries: CaseQueries, authority: TokenAuthority,
                 clock: Callable[[], datetime]) -> None:
        self.registrar = registrar
        self.queries = queries
        self.authority = authority
        self.clock = clock

    def _caller(self, context: grpc.aio.ServicerContext) -> Principal:
        return caller_of(self.authority, context)

    @translate_errors
    async def RegisterPetition(self, request: intake_pb2.RegisterPetitionRequest,
                               context: grpc.aio.ServicerContext,
                               ) -> intake_pb2.RegisterPetitionResponse:
        caller = self._caller(context)
        petition = validate_petition(request)
        key = idempotency_key(request)
        now = self.clock()
        try:
            command = petition.to_command(now)
        except HTTPException as exc:  # REST's 422 for a received_at in the future
            raise RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, _http_detail(exc)) from exc
        try:
            result = await self.registrar.register(command, caller, now, key)
        except IdempotencyKeyReused as exc:
            raise RpcFailure(grpc.StatusCode.FAILED_PRECONDITION, str(exc)) from exc
        except RuleViolation as exc:
            raise RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from exc
        return registration_response(result.case, result.replayed, result.linked_as)

    @translate_errors
    async def GetCase(self, request: intake_pb2.GetCaseRequest,
                      context: grpc.aio.ServicerContext) -> intake_pb2.Case:
        caller = self._caller(context)
        case_id = parse_case_id(request.case_id)
        summary = await self.queries.get_case(case_id, caller)
        if summary is None:
            raise RpcFailure(grpc.StatusCode.NOT_FOUND, f"no case {case_id}")
        return case_message(summary)

    @translate_errors
    async def ListCases(self, request: intake_pb2.ListCasesRequest,
                        context: grpc.aio.ServicerContext) -> intake_pb2.ListCasesResponse:
        caller = self._caller(context)
        args = list_cases_args(request)
        try:
            page = await self.queries.list_cases(caller, **args)
        except BadPageToken as exc:
            raise RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, f"page_token: {exc}") from exc
        return intake_pb2.ListCasesResponse(
            cases=[case_message(s) for s in page["items"]],
            next_page_token=page["next_page_token"] or "",
        )

    @translate_errors
    async def ListCaseEvents(self, request: intake_pb2.ListCaseEventsRequest,
                             context: grpc.aio.ServicerContext,
                             ) -> intake_pb2.ListCaseEventsResponse:
        caller = self._caller(context)
        case_id = parse_case_id(request.case_id)
        events = await self.queries.history(case_id, caller)
        if events is None:
            raise RpcFailure(grpc.StatusCode.NOT_FOUND, f"no case {case_id}")
        return intake_pb2.ListCaseEventsResponse(
            case_id=str(case_id), events=[event_message(e) for e in events])


def caller_of(authority: TokenAuthority, context: grpc.aio.ServicerContext) -> Principal:
    """The bearer token in the `authorization` metadata, as on REST."""
    metadata = dict(context.invocation_metadata() or ())
    try:
        return authority.from_header(metadata.get("authorization"))
    except InvalidToken as exc:
        raise RpcFailure(grpc.StatusCode.UNAUTHENTICATED, f"unauthenticated: {exc}") from exc


def _http_detail(exc: HTTPException) -> str:
    detail = exc.detail
    if isinstance(detail, list):
        return "; ".join(f"{field_path(d.get('loc', ()))}: {d.get('msg', '')}" for d in detail)
    return str(detail)


# -- the server ------------------------------------------------------------------------


class _HealthServicer(health.aio.HealthServicer):
    """grpc_health's asyncio servicer, with services marked SERVING before the loop runs
    (its `set` is a coroutine; the server is built synchronously)."""

    def __init__(self, serving: tuple[str, ...]) -> None:
        super().__init__()
        for name in serving:
            self._server_status[name] = health_pb2.HealthCheckResponse.SERVING


class ServiceOnServer(Protocol):
    """A servicer that registers itself on a server under its full service name."""

    service_name: str

    def add_to_server(self, server: grpc.aio.Server) -> None: ...


@dataclass
class _ServerParts:
    health: _HealthServicer
    port: int


_PARTS: weakref.WeakKeyDictionary[grpc.aio.Server, _ServerParts] = weakref.WeakKeyDictionary()


def build_grpc_server(servicer: IntakeServicer, host: str, port: int, *,
                      also: Sequence[ServiceOnServer] = (),
                      max_message_bytes: int = MAX_MESSAGE_BYTES,
                      interceptors: tuple[grpc.aio.ServerInterceptor, ...] = ()
                      ) -> grpc.aio.Server:
    """An unstarted server with the intake service and the services in `also`, health
    checking (SERVING for "" and each service) and reflection, listening without TLS on
    host:port.

    Port 0 picks a free port (see `bound_port`). Requests over `max_message_bytes` are
    refused with RESOURCE_EXHAUSTED. Call `set_not_serving` (or `stop_grpc_server`) on
    shutdown.
    """
    server = grpc.aio.server(interceptors=interceptors, options=[
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),  # a second server on the same port fails instead of sharing
    ])
    intake_pb2_grpc.add_IntakeServiceServicer_to_server(servicer, server)
    for other in also:
        other.add_to_server(server)
    served = (SERVICE_NAME, *(other.service_name for other in also))
    health_servicer = _HealthServicer(("", *served))
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*served, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    address_host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    bound = server.add_insecure_port(f"{address_host}:{port}")
    _PARTS[server] = _ServerParts(health_servicer, bound)
    return server


def bound_port(server: grpc.aio.Server) -> int:
    """The port a server from `build_grpc_server` listens on."""
    return _PARTS[server].port


async def set_not_serving(server: grpc.aio.Server) -> None:
    """Report NOT_SERVING for every service from now on (graceful shutdown has begun)."""
    await _PARTS[server].health.enter_graceful_shutdown()


async def stop_grpc_server(server: grpc.aio.Server, grace: float | None = 10) -> None:
    """Report NOT_SERVING, then stop, letting calls in flight finish within `grace` seconds."""
    await set_not_serving(server)
    await server.stop(grace)
