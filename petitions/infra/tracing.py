"""OpenTelemetry tracing: one trace per petition, from the REST or gRPC call through the event
append, the relay and NATS to each consuming service and the outgoing notice.

How the context travels:

    HTTP headers / gRPC metadata (W3C traceparent)
      -> server span (TracingMiddleware, GrpcServerTracing)
      -> append span; CaseStore records its traceparent beside each event it saves
         (table event_trace_context, written before the events, see store.py)
      -> the relay reads it with the log and starts a PRODUCER span as its child;
         that span's context goes into the NATS message headers (`publishing`)
      -> the consumer extracts it and runs the handler in a CONSUMER span (`consuming`)
      -> the handler's own appends carry that span's context, and so on
      -> webhook requests carry it too (TracingTransport).

Because the context is stored with the event, republishing (a relay restart, a replay into a
new stream) keeps the link. Nothing outside petitions.infra imports OpenTelemetry.

Configured by the standard variables; tracing is off (the API's no-op provider) unless one
of them asks for it:

- OTEL_TRACES_EXPORTER: `otlp`, `console`, `jsonl` (this project's: one JSON object per span
  into `$PETITIONS_TRACES_DIR/<service>.jsonl`, used by the tests), `none`; comma-separated for
  several. Unset, `otlp` is used when an OTLP endpoint is set, else tracing stays off.
- OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, _PROTOCOL (`http/protobuf`,
  the default, or `grpc`), _HEADERS, _TIMEOUT ...: read by the OTLP exporter.
- OTEL_SERVICE_NAME (default: the service's own name), OTEL_RESOURCE_ATTRIBUTES,
  OTEL_TRACES_SAMPLER(_ARG), OTEL_BSP_*, OTEL_PROPAGATORS: read by the SDK.
- OTEL_SDK_DISABLED=true turns it off whatever else is set.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import httpx
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Receive, Scope, Send

from petitions.infra.asgi import StatusNoted
from petitions.infra.metrics import GRPC_LATENCY, GRPC_REQUESTS

log = logging.getLogger(__name__)

TRACER = trace.get_tracer("petitions")
_W3C = TraceContextTextMapPropagator()
_provider: Any = None

CASE_ID_ATTRIBUTE = "petitions.case_id"
UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


# -- configuration ----------------------------------------------------------------------


def exporter_names(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The exporters the environment asks for; empty means tracing stays off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    raw = environ.get("OTEL_TRACES_EXPORTER", "").strip()
    if raw:
        names = [n.strip().lower() for n in raw.split(",") if n.strip()]
    elif environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        names = ["otlp"]
    else:
        names = []
    return [n for n in names if n != "none"]


def configure_tracing(service: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Install the SDK tracer provider when the environment asks for tracing; True if on."""
    global _provider
    if _provider is not None:
        return True
    names = exporter_names(environ)
    if not names:
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service}))
    provider = TracerProvider(resource=resource)
    added = 0
    for name in names:
        if name == "otlp":
            provider.add_span_processor(BatchSpanProcessor(_otlp_exporter(environ)))
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        elif name == "jsonl":
            directory = Path(environ.get("PETITIONS_TRACES_DIR") or ".")
            exporter = JsonLinesSpanExporter(directory / f"{service}.jsonl", service)
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        else:
            log.warning("unknown OTEL_TRACES_EXPORTER %r ignored", name)
            continue
        added += 1
    if not added:
        return False
    trace.set_tracer_provider(provider)
    _provider = provider
    log.info("tracing on", extra={"exporters": names})
    return True


def _otlp_exporter(environ: Mapping[str, str]) -> Any:
    protocol = (environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").strip().lower()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[no-redef]
            OTLPSpanExporter,
        )
    return OTLPSpanExporter()


def tracing_enabled() -> bool:
    return _provider is not None


def worth_a_span(header_names: Iterable[str]) -> bool:
    """Whether a request or message with these headers gets a span: always with tracing on;
    with it off only when the caller sent a trace context (a field the configured
    propagators read, e.g. traceparent), which the no-op span carries on to the log lines and
    the events appended. Otherwise the span would record nothing and pass nothing on, and
    starting one per request or message is a measurable share of a busy service's CPU."""
    return tracing_enabled() or not _propagated_fields().isdisjoint(header_names)


_fields_of: tuple[Any, frozenset[str]] = (None, frozenset())


def _propagated_fields() -> frozenset[str]:
    """The configured propagators' fields, worked out again only when the propagators change
    (a composite propagator builds its set on every call)."""
    global _fields_of
    textmap = propagate.get_global_textmap()
    if _fields_of[0] is not textmap:
        _fields_of = (textmap, frozenset(textmap.fields))
    return _fields_of[1]


def shutdown_tracing() -> None:
    """Flush and stop exporting (at the end of a clean shutdown)."""
    global _provider
    if _provider is not None:
        try:
            _provider.shutdown()
        except Exception:  # never fail a shutdown on telemetry
            log.warning("tracer provider shutdown failed", exc_info=True)
        _provider = None


class JsonLinesSpanExporter:
    """One JSON object per finished span, appended to a file (tests and local debugging)."""

    def __init__(self, path: Path, service: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.service = service
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in shutdown
        self._lock = threading.Lock()

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        lines = [json.dumps(span_record(s, self.service), ensure_ascii=False) for s in spans]
        with self._lock:
            if self._file.closed:
                return SpanExportResult.FAILURE
            self._file.write("".join(line + "\n" for line in lines))
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def span_record(span: Any, service: str) -> dict[str, Any]:
    ctx = span.get_span_context()
    return {
        "service": span.resource.attributes.get("service.name", service),
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "parent_span_id": format(span.parent.span_id, "016x") if span.parent else None,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
    }


# -- context helpers ----------------------------------------------------------------------


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span, None outside any span (stored with events)."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier.get("traceparent")


def annotate_case(case_id: Any) -> None:
    """Mark the current span as being about this case (to find a petition's trace)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute(CASE_ID_ATTRIBUTE, str(case_id))


@contextlib.contextmanager
def span(name: str, attributes: Mapping[str, Any] | None = None,
         kind: SpanKind = SpanKind.INTERNAL) -> Iterator[Span]:
    if _no_tracer_provider():
        # The API's no-op span would record nothing and carry the current context on
        # unchanged: the current span is that already, without starting one per call.
        yield trace.get_current_span()
        return
    with TRACER.start_as_current_span(name, kind=kind, attributes=dict(attributes or {})) as s:
        yield s


def _no_tracer_provider() -> bool:
    """No provider set, neither by `configure_tracing` nor by anyone else."""
    return _provider is None and isinstance(trace.get_tracer_provider(),
                                            trace.ProxyTracerProvider)


@contextlib.contextmanager
def publishing(event_type: str, event_id: str, case_id: str, traceparent: str | None,
               subject: str) -> Iterator[dict[str, str]]:
    """A PRODUCER span, child of the context stored with the event; yields the message
    headers that carry it. An event stored without a context is published without one."""
    if not traceparent:
        yield {}
        return
    parent = _W3C.extract({"traceparent": traceparent})
    attributes = {"messaging.system": "nats", "messaging.operation.type": "send",
                  "messaging.destination.name": subject, "messaging.message.id": event_id,
                  CASE_ID_ATTRIBUTE: case_id}
    with TRACER.start_as_current_span(f"publish {event_type}", context=parent,
                                      kind=SpanKind.PRODUCER, attributes=attributes):
        headers: dict[str, str] = {}
        propagate.inject(headers)
        yield headers


@contextlib.contextmanager
def resumed(traceparent: str | None, name: str,
            attributes: Mapping[str, Any] | None = None) -> Iterator[None]:
    """An INTERNAL span continuing the trace stored with an event, for work done later on
    its behalf (a retried delivery): what it appends stays in that trace. Nothing without a
    stored context."""
    if not traceparent:
        yield
        return
    parent = _W3C.extract({"traceparent": traceparent})
    with TRACER.start_as_current_span(name, context=parent, kind=SpanKind.INTERNAL,
                                      attributes=dict(attributes or {})):
        yield


@contextlib.contextmanager
def consuming(consumer: str, subject: str, headers: Mapping[str, str] | None,
              event_type: str, event_id: str, case_id: str, deliveries: int) -> Iterator[Span]:
    """A CONSUMER span, child of the context in the message headers."""
    parent = propagate.extract(dict(headers or {}))
    attributes = {"messaging.system": "nats", "messaging.operation.type": "process",
                  "messaging.destination.name": subject,
                  "messaging.consumer.group.name": consumer, "messaging.message.id": event_id,
                  "messaging.nats.deliveries": deliveries, CASE_ID_ATTRIBUTE: case_id}
    with TRACER.start_as_current_span(f"process {event_type}", context=parent,
                                      kind=SpanKind.CONSUMER, attributes=attributes,
                                      record_exception=True) as s:
        yield s


def mark_failed(exc: BaseException) -> None:
    s = trace.get_current_span()
    if s.is_recording():
        s.record_exception(exc)
        s.set_status(Status(StatusCode.ERROR, type(exc).__name__))


# -- HTTP server ------------------------------------------------------------------------


class TracingMiddleware:
    """A SERVER span per HTTP request, child of the caller's traceparent (probes untraced)."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["path"] in UNTRACED_PATHS
                or not worth_a_span(k.decode("latin-1") for k, _ in scope["headers"])):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        method = scope["method"]
        attributes = {"http.request.method": method, "url.path": scope["path"],
                      "url.scheme": scope.get("scheme", "http")}
        with TRACER.start_as_current_span(method, context=propagate.extract(headers),
                                          kind=SpanKind.SERVER, attributes=attributes,
                                          set_status_on_exception=False) as s:
            noted = StatusNoted(send)
            try:
                await self.app(scope, receive, noted)
            finally:
                route = getattr(scope.get("route"), "path", None)
                if route:
                    s.update_name(f"{method} {route}")
                    s.set_attribute("http.route", route)
                status = noted.status
                s.set_attribute("http.response.status_code", status)
                if status >= 500:
                    s.set_status(Status(StatusCode.ERROR))


# -- gRPC server ------------------------------------------------------------------------


class GrpcServerTracing(grpc.aio.ServerInterceptor):
    """A SERVER span, a request counter and a latency histogram per unary gRPC call."""

    UNTRACED_PREFIXES = ("/grpc.health.", "/grpc.reflection.")

    def __init__(self, service: str) -> None:
        self.service = service

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        method: str = details.method
        if (handler is None or handler.unary_unary is None
                or method.startswith(self.UNTRACED_PREFIXES)):
            return handler
        inner = handler.unary_unary
        metadata = {k: v for k, v in (details.invocation_metadata or ())
                    if isinstance(v, str)}
        rpc_service, _, rpc_method = method.lstrip("/").rpartition("/")
        service = self.service

        async def traced(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start = time.perf_counter()
            code = grpc.StatusCode.OK
            attributes = {"rpc.system": "grpc", "rpc.service": rpc_service,
                          "rpc.method": rpc_method}
            with TRACER.start_as_current_span(method.lstrip("/"),
                                              context=propagate.extract(metadata),
                                              kind=SpanKind.SERVER, attributes=attributes,
                                              record_exception=False,
                                              set_status_on_exception=False) as s:
                try:
                    return await inner(request, context)
                except grpc.aio.AbortError:
                    code = _context_code(context) or grpc.StatusCode.UNKNOWN
                    raise
                except BaseException:
                    code = grpc.StatusCode.UNKNOWN
                    raise
                finally:
                    code = _context_code(context) or code
                    s.set_attribute("rpc.grpc.status_code", code.value[0])
                    if code in _SERVER_ERRORS:
                        s.set_status(Status(StatusCode.ERROR, code.name))
                    GRPC_REQUESTS.labels(service, method, code.name).inc()
                    GRPC_LATENCY.labels(service, method).observe(time.perf_counter() - start)

        return grpc.unary_unary_rpc_method_handler(
            traced, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


_SERVER_ERRORS = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED,
                  grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INTERNAL,
                  grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS}


def _context_code(context: Any) -> grpc.StatusCode | None:
    try:
        code = context.code()
    except Exception:
        return None
    return code if isinstance(code, grpc.StatusCode) else None


# -- HTTP client ------------------------------------------------------------------------


class ClientCall:
    """An outgoing request being traced: add `headers` to it, report its `status`."""

    def __init__(self, span: Span) -> None:
        self.span = span
        self.headers: dict[str, str] = {}
        propagate.inject(self.headers)

    def status(self, code: int) -> None:
        self.span.set_attribute("http.response.status_code", code)
        if code >= 400:
            self.span.set_status(Status(StatusCode.ERROR))


@contextlib.contextmanager
def client_call(method: str, url: str) -> Iterator[ClientCall]:
    """A CLIENT span for an outgoing HTTP request made by any client (for httpx, use
    TracingTransport): the request must carry `call.headers` (traceparent)."""
    parts = urlsplit(url)
    attributes = {"http.request.method": method, "server.address": parts.hostname or "",
                  "url.path": parts.path or "/"}
    with TRACER.start_as_current_span(method, kind=SpanKind.CLIENT,
                                      attributes=attributes) as s:
        yield ClientCall(s)


class TracingTransport(httpx.AsyncBaseTransport):
    """A CLIENT span per outgoing httpx request, with traceparent in the request headers."""

    def __init__(self, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self.inner = inner or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        with client_call(request.method, str(request.url)) as call:
            for key, value in call.headers.items():
                request.headers[key] = value
            response = await self.inner.handle_async_request(request)
            call.status(response.status_code)
            return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def extract_context(carrier: Mapping[str, str]) -> Context:
    return propagate.extract(dict(carrier))
