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
