"""Raw bytes at intake's gRPC methods (every method of every intake service): random and malformed protobuf, invalid UTF-8, deep
nesting, absurd lengths and oversized messages. Each call ends with a status a client can act
on (never UNKNOWN, never a hang), and the server keeps serving afterwards."""
from __future__ import annotations

import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from petitionsapi.v1 import intake_pb2, lifecycle_pb2

from tests.conftest import bearer

pytestmark = pytest.mark.e2e

SERVICE = "petitionsapi.v1.IntakeService"


def _methods() -> dict[str, type]:
    """"<service>/<method>" -> the response class, for every method the protos declare."""
    methods = {}
    for module in (intake_pb2, lifecycle_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                output = method.output_type
                home = intake_pb2 if output.file.name.endswith("intake.proto") else module
                methods[f"{service.full_name}/{method.name}"] = getattr(home, output.name)
    return methods


METHODS = _methods()
REGISTER = f"{SERVICE}/RegisterPetition"
# What a malformed request may end in: refused as a bad request, as too large, as not
# parseable at all (grpc's own INTERNAL "deserializing" status), or an answer if the bytes
# happen to be a valid request. UNKNOWN (an exception escaped the servicer), UNAVAILABLE
# (the server went away) and DEADLINE_EXCEEDED (it hung) are failures.
ACCEPTABLE = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
              grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAUTHENTICATED,
              grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED,
              grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OK}
TIMEOUT = 15.0
MAX_MESSAGE = 1024 * 1024 + 16 * 1024  # services.intake.grpc_api.MAX_MESSAGE_BYTES


@pytest.fixture(scope="module")
def channel(fuzz_system):
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(fuzz_system.grpc_target, options=options) as ch:
        grpc.channel_ready_future(ch).result(timeout=30)
        yield ch


@pytest.fixture(scope="module")
def metadata(tokens):
    return [("authorization", bearer(tokens["county_330106_clerk"])["Authorization"])]


def _raw_call(channel: grpc.Channel, method: str, payload: bytes,
              metadata: list[tuple[str, str]] | None) -> tuple[grpc.StatusCode, str]:
    call = channel.unary_unary(f"/{method}", request_serializer=None,
                               response_deserializer=None)
    try:
        response = call(payload, timeout=TIMEOUT, metadata=metadata)
    except grpc.RpcError as err:
        return err.code(), err.details() or ""
    METHODS[method].FromString(response)  # an answer is a well-formed response
    return grpc.StatusCode.OK, ""


def _unparseable(code: grpc.StatusCode, details: str) -> bool:
    """grpc.aio's own answer to bytes that do not parse as the request type: UNKNOWN naming
    protobuf's DecodeError, before any servicer code runs. (INVALID_ARGUMENT would say more;
    grpc.aio gives no hook to choose.)"""
    return code is grpc.StatusCode.UNKNOWN and "DecodeError" in details


def _check(code: grpc.StatusCode, details: str, method: str, payload: bytes) -> None:
    shown = payload[:40]
    if _unparseable(code, details):
        return
    assert code in ACCEPTABLE, f"{method}({len(payload)} bytes {shown!r}...) -> {code}: {details}"
    if code is grpc.StatusCode.INTERNAL:
        # grpc's own refusal of unparseable bytes, not the servicer failing on them.
        assert "internal error" != details, (
            f"{method}({len(payload)} bytes {shown!r}...): the servicer failed: {details}")


def _still_serving(channel: grpc.Channel, metadata, fuzz_system) -> None:
    assert fuzz_system.alive("intake"), f"intake died; logs: {fuzz_system.cluster.log_dir}"
    health = health_pb2_grpc.HealthStub(channel)
    status = health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=TIMEOUT)
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    petition = intake_pb2.RegisterPetitionRequest(
        channel=intake_pb2.CHANNEL_LETTER, category=intake_pb2.CATEGORY_SUGGESTION,
        division="330106", subject="roads", content=f"路灯损坏 {uuid.uuid4()}",
        requests=["修复路灯"], people_count=1, anonymous=True)
    code, details = _raw_call(channel, REGISTER, petition.SerializeToString(), metadata)
    assert code is grpc.StatusCode.OK, (code, details)


@settings(max_examples=260, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(method=st.sampled_from(sorted(METHODS)), payload=st.binary(max_size=3000),
       authenticated=st.booleans())
def test_random_bytes_never_crash_a_method(channel, metadata, method, payload, authenticated):
    code, details = _raw_call(channel, method, payload, metadata if authenticated else None)
    _check(code, details, method, payload)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, wire_type: int, body: bytes = b"") -> bytes:
    return _varint(number << 3 | wire_type) + body


def _bytes_field(number: int, value: bytes) -> bytes:
    return _field(number, 2, _varint(len(value)) + value)


MALFORMED = {
    "truncated varint": b"\x08\xff\xff",
    "truncated length": _field(3, 2, b"\x05ab"),
    "length past the end": _field(5, 2, _varint(2**32 - 1)) + b"x",
    "invalid UTF-8 in a string": _bytes_field(3, b"\xff\xfe\xfd"),
    "overlong UTF-8": _bytes_field(4, b"\xc0\xaf"),
    "lone surrogate as UTF-8": _bytes_field(4, b"\xed\xa0\x80"),
    "wrong wire type for a string": _field(3, 0, _varint(12345)),
    "wrong wire type for an enum": _bytes_field(1, b"letter"),
    "enum number nobody knows": _field(1, 0, _varint(2**31 - 1)),
    "negative people_count": _field(7, 0, _varint(2**64 - 1)),
    "field number zero": _field(0, 0, b"\x01"),
    "field number too large": _varint((2**29) << 3 | 0) + b"\x01",
    "unknown group nested deeply": _field(15, 3) * 20_000,
    "end-group without start": _field(15, 4),
    "deprecated wire type 6": _varint(1 << 3 | 6) + b"\x00",
    "nested petitioner garbage": _bytes_field(8, b"\xff" * 64),
    "timestamp out of range": _bytes_field(10, _field(1, 0, _varint(2**63 - 1))),
    "timestamp nanos out of range": _bytes_field(10, _field(2, 0, _varint(2**31 - 1))),
    "50k repeated requests": _bytes_field(6, b"x") * 50_000,
    "a million-character idempotency key": _bytes_field(11, b"k" * 1_000_000),
    "case id of junk": _bytes_field(1, "не-uuid\u0000".encode()),
}


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_messages_are_refused(channel, metadata, fuzz_system, method, name):
    code, details = _raw_call(channel, method, MALFORMED[name], metadata)
    _check(code, details, method, MALFORMED[name])


@pytest.mark.parametrize("method", sorted(METHODS))
def test_oversized_messages_are_resource_exhausted(channel, metadata, method):
    payload = _bytes_field(5, b"x" * (MAX_MESSAGE + 1024))
    code, details = _raw_call(channel, method, payload, metadata)
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED, (code, details)


def test_a_message_just_under_the_limit_is_judged_on_its_content(channel, metadata):
    petition = intake_pb2.RegisterPetitionRequest(
        channel=intake_pb2.CHANNEL_LETTER, category=intake_pb2.CATEGORY_APPEAL,
        division="330106", subject="land", content="字" * 300_000, anonymous=True)
    payload = petition.SerializeToString()
    assert len(payload) < MAX_MESSAGE
    code, details = _raw_call(channel, REGISTER, payload, metadata)
    assert code is grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    assert "content" in details


def test_the_server_still_serves_after_all_of_it(channel, metadata, fuzz_system):
    _still_serving(channel, metadata, fuzz_system)
