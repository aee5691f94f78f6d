"""Which OTEL_* settings turn tracing on, and with which exporter (no I/O)."""
from __future__ import annotations

import pytest

from petitions.infra.tracing import _otlp_exporter, exporter_names


@pytest.mark.parametrize("environ, names", [
    ({}, []),  # nothing set: off (the no-op provider)
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"]),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, ["otlp"]),
    ({"OTEL_TRACES_EXPORTER": "console,jsonl"}, ["console", "jsonl"]),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, []),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, []),
])
def test_tracing_is_off_unless_asked_for(environ, names):
    assert exporter_names(environ) == names


def test_the_otlp_protocol_picks_the_exporter():
    http = _otlp_exporter({})
    grpc = _otlp_exporter({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    try:
        assert type(http).__module__.startswith("opentelemetry.exporter.otlp.proto.http")
        assert type(grpc).__module__.startswith("opentelemetry.exporter.otlp.proto.grpc")
    finally:
        http.shutdown()
        grpc.shutdown()


# -- the HTTP server span when tracing is off ----------------------------------------------

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_PARENT = f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"


async def _context_seen_by_handler(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The trace context a request handler sees (what its appended events would store)."""
    from petitions.infra import tracing

    seen: list[str | None] = []

    async def app(scope, receive, send):
        seen.append(tracing.current_traceparent())

    scope = {"type": "http", "method": "POST", "path": "/v1/petitions", "headers": headers}
    await tracing.TracingMiddleware(app, service="intake")(scope, None, None)
    return seen[0]


async def test_with_tracing_off_a_callers_trace_context_still_reaches_the_stored_events(
        monkeypatch):
    from petitions.infra import tracing

    monkeypatch.setattr(tracing, "_provider", None)
    seen = await _context_seen_by_handler([(b"traceparent", CALLER_PARENT.encode())])
    assert seen is not None and seen.split("-")[1] == CALLER_TRACE
    assert await _context_seen_by_handler([(b"content-type", b"application/json")]) is None


async def test_with_no_provider_an_inner_span_carries_the_callers_context_unchanged(
        monkeypatch):
    from opentelemetry import context, propagate, trace

    from petitions.infra import tracing

    monkeypatch.setattr(tracing, "_provider", None)
    monkeypatch.setattr(trace, "get_tracer_provider", trace.ProxyTracerProvider)
    token = context.attach(propagate.extract({"traceparent": CALLER_PARENT}))
    try:
        with tracing.span("append Registered") as inner:
            assert not inner.is_recording()
            assert tracing.current_traceparent() == CALLER_PARENT
    finally:
        context.detach(token)
    with tracing.span("append Registered"):
        assert tracing.current_traceparent() is None
