# SPDX-License-Identifier: Apache-2.0
"""Test helpers for applications instrumented with otel-agents (public).

:class:`OtlpSink` is an in-process OTLP receiver on loopback — gRPC and HTTP, ephemeral ports —
that records every decoded ``Export*ServiceRequest``, so a test can point a real exporter (or a
whole child process) at it and assert on what went over the wire::

    from otel_agents.testing import OtlpSink

    with OtlpSink() as sink:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.grpc_endpoint}
        subprocess.run([sys.executable, "app.py"], env={**os.environ, **env}, check=True)
        spans = sink.wait_for_spans(5, timeout=10.0)
        assert {s.name for s in spans} >= {"invoke_agent planner"}
        for trace_id, trace in sink.traces().items():
            ...

:func:`make_tracer_provider` builds a ``TracerProvider`` with the otel-agents enriching
processors in front of an ``InMemorySpanExporter`` (no network, synchronous)::

    from otel_agents.testing import make_tracer_provider

    provider, exporter = make_tracer_provider()
    tracer = provider.get_tracer("test")
    ...
    finished = exporter.get_finished_spans()
"""

from __future__ import annotations

import dataclasses
import gzip
import http.server
import math
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent import futures
from typing import Any, Literal, TypeVar

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2  # type: ignore[import-untyped]
from google.rpc.error_details_pb2 import RetryInfo  # type: ignore[import-untyped]
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_agents._cost import PriceBook
from otel_agents._errors import OtelAgentsError
from otel_agents._processors import AgentIdentitySpanProcessor, EnrichingSpanProcessor

__all__ = [
    "OtlpSink",
    "ReceivedRequest",
    "ReceivedSpan",
    "Signal",
    "Transport",
    "any_value_to_python",
    "attributes_to_dict",
    "make_tracer_provider",
]

Signal = Literal["traces", "metrics", "logs"]
"""The three OTLP signals."""

Transport = Literal["grpc", "http"]
"""How a request reached the sink."""

AttrValue = Any
"""A decoded OTLP ``AnyValue``: str, bool, int, float, bytes, list or dict (``None`` if unset)."""

_T = TypeVar("_T")

_REQUEST_TYPES: dict[str, type[Message]] = {
    "traces": trace_service_pb2.ExportTraceServiceRequest,
    "metrics": metrics_service_pb2.ExportMetricsServiceRequest,
    "logs": logs_service_pb2.ExportLogsServiceRequest,
}
_RESPONSE_TYPES: dict[str, type[Message]] = {
    "traces": trace_service_pb2.ExportTraceServiceResponse,
    "metrics": metrics_service_pb2.ExportMetricsServiceResponse,
    "logs": logs_service_pb2.ExportLogsServiceResponse,
}
_HTTP_PATHS: dict[str, Signal] = {
    "/v1/traces": "traces",
    "/v1/metrics": "metrics",
    "/v1/logs": "logs",
}
_MAX_BODY = 64 * 1024 * 1024


def any_value_to_python(value: AnyValue) -> AttrValue:
    """Decode one OTLP ``AnyValue`` into the matching Python value."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value_to_python(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes_to_dict(value.kvlist_value.values)
    return getattr(value, kind)


def attributes_to_dict(attributes: Sequence[KeyValue]) -> dict[str, AttrValue]:
    """Decode a repeated OTLP ``KeyValue`` field into a plain dict (arrays become lists).

    Args:
        attributes: e.g. ``span.attributes`` or ``resource.attributes`` of a decoded request.

    Returns:
        ``{key: value}``; a repeated key keeps its last value.
    """
    return {kv.key: any_value_to_python(kv.value) for kv in attributes}


@dataclasses.dataclass(frozen=True)
class ReceivedRequest:
    """One decoded export request as the sink received it.

    Attributes:
        signal: ``traces``, ``metrics`` or ``logs``.
        transport: ``grpc`` or ``http``.
        request: the decoded ``Export{Trace,Metrics,Logs}ServiceRequest``.
        headers: request metadata (gRPC) or HTTP headers, keys lower-cased.
        received_at: ``time.time()`` at receipt.
    """

    signal: Signal
    transport: Transport
    request: Message
    headers: Mapping[str, str]
    received_at: float


@dataclasses.dataclass(frozen=True)
class ReceivedSpan:
    """A span flattened out of an ``ExportTraceServiceRequest``, with its resource and scope.

    Attributes:
        span: the protobuf ``Span`` as received.
        resource: decoded resource attributes of the ``ResourceSpans`` it came in.
        scope_name: instrumentation scope name.
        transport: ``grpc`` or ``http``.
    """

    span: trace_pb2.Span
    resource: Mapping[str, AttrValue]
    scope_name: str
    transport: Transport

    @property
    def name(self) -> str:
        """The span name."""
        return self.span.name

    @property
    def trace_id(self) -> str:
        """32 lower-case hex digits."""
        return self.span.trace_id.hex()

    @property
    def span_id(self) -> str:
        """16 lower-case hex digits."""
        return self.span.span_id.hex()

    @property
    def parent_span_id(self) -> str:
        """16 hex digits, or ``""`` for a root span."""
        return self.span.parent_span_id.hex()

    @property
    def kind(self) -> int:
        """``opentelemetry.proto.trace.v1.Span.SpanKind`` value (1 internal … 5 consumer)."""
        return int(self.span.kind)

    @property
    def attributes(self) -> dict[str, AttrValue]:
        """Decoded span attributes."""
        return attributes_to_dict(self.span.attributes)

    @property
    def events(self) -> list[tuple[str, dict[str, AttrValue]]]:
        """``(name, attributes)`` of each span event, in order."""
        return [(e.name, attributes_to_dict(e.attributes)) for e in self.span.events]

    @property
    def status_code(self) -> int:
        """0 unset, 1 ok, 2 error."""
        return int(self.span.status.code)

    @property
    def duration_s(self) -> float:
        """End minus start, in seconds."""
        return (self.span.end_time_unix_nano - self.span.start_time_unix_nano) / 1e9

    @property
    def service_name(self) -> str | None:
        """The resource's ``service.name``."""
        value = self.resource.get("service.name")
        return value if isinstance(value, str) else None


class OtlpSink:
    """An in-process OTLP receiver that records decoded requests (for tests).

    Serves OTLP/gRPC (``TraceService``, ``MetricsService``, ``LogsService``) and OTLP/HTTP
    (``POST /v1/traces|metrics|logs``, protobuf or JSON, optionally gzip/deflate) on
    ``127.0.0.1`` with ports chosen by the OS, answers every valid request with an empty
    (fully successful) response, and answers undecodable bodies with ``INVALID_ARGUMENT`` /
    400 without recording them.  Thread-safe; usable as a context manager.

    Args:
        host: interface to bind; loopback by default.
        grpc: serve OTLP/gRPC.
        http: serve OTLP/HTTP.

    Example::

        with OtlpSink() as sink:
            exporter = OTLPSpanExporter(endpoint=sink.grpc_endpoint, insecure=True)
            ...
            sink.wait_for_spans(3)
    """

    def __init__(self, *, host: str = "127.0.0.1", grpc: bool = True, http: bool = True) -> None:
        if not (grpc or http):
            raise ValueError("OtlpSink: enable at least one of grpc, http")
        self._host = host
        self._want_grpc = grpc
        self._want_http = http
        self._lock = threading.Condition()
        self._requests: list[ReceivedRequest] = []
        self._to_refuse = 0
        self._refused = 0
        self._retry_after = 1.0
        self._grpc_server: Any = None
        self._http_server: _HttpServer | None = None
        self._http_thread: threading.Thread | None = None
        self._grpc_port: int | None = None
        self._http_port: int | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> OtlpSink:
        """Bind the ports and start serving; returns ``self``."""
        if self._want_grpc and self._grpc_server is None:
            self._start_grpc()
        if self._want_http and self._http_server is None:
            self._start_http()
        return self

    def stop(self) -> None:
        """Stop serving (idempotent); recorded requests stay readable."""
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=None).wait(5)
            self._grpc_server = None
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
            self._http_server = None
        if self._http_thread is not None:
            self._http_thread.join(5)
            self._http_thread = None

    def __enter__(self) -> OtlpSink:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- addresses

    @property
    def grpc_port(self) -> int:
        """The bound OTLP/gRPC port."""
        if self._grpc_port is None:
            raise RuntimeError("OtlpSink: gRPC is not serving (call start())")
        return self._grpc_port

    @property
    def http_port(self) -> int:
        """The bound OTLP/HTTP port."""
        if self._http_port is None:
            raise RuntimeError("OtlpSink: HTTP is not serving (call start())")
        return self._http_port

    @property
    def grpc_endpoint(self) -> str:
        """``http://127.0.0.1:PORT``, the form ``OTEL_EXPORTER_OTLP_ENDPOINT`` takes for gRPC."""
        return f"http://{self._host}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` (base URL; exporters append ``/v1/<signal>``)."""
        return f"http://{self._host}:{self.http_port}"

    # ---------------------------------------------------------------- recorded data

    def requests(self, signal: Signal | None = None) -> list[ReceivedRequest]:
        """Every recorded request, in arrival order, optionally of one signal."""
        with self._lock:
            return [r for r in self._requests if signal is None or r.signal == signal]

    def spans(self) -> list[ReceivedSpan]:
        """Every span received so far, flattened, in arrival order."""
        return list(_iter_spans(self.requests("traces")))

    def traces(self) -> dict[str, list[ReceivedSpan]]:
        """Spans grouped by hex trace ID (insertion order = first arrival)."""
        grouped: dict[str, list[ReceivedSpan]] = {}
        for span in self.spans():
            grouped.setdefault(span.trace_id, []).append(span)
        return grouped

    def metric_names(self) -> set[str]:
        """Names of every metric received so far."""
        names: set[str] = set()
        for rec in self.requests("metrics"):
            request = rec.request
            if not isinstance(request, metrics_service_pb2.ExportMetricsServiceRequest):
                continue
            for rm in request.resource_metrics:
                for sm in rm.scope_metrics:
                    names.update(m.name for m in sm.metrics)
        return names

    def log_records(self) -> list[Any]:
        """Every received ``LogRecord`` protobuf, flattened, in arrival order."""
        out: list[Any] = []
        for rec in self.requests("logs"):
            request = rec.request
            if not isinstance(request, logs_service_pb2.ExportLogsServiceRequest):
                continue
            for rl in request.resource_logs:
                for sl in rl.scope_logs:
                    out.extend(sl.log_records)
        return out

    def refuse_next(self, count: int = 1, *, retry_after: float = 1.0) -> None:
        """Refuse the next ``count`` export requests as retryable, to test an exporter's retries.

        As the OTLP specification says for a server that is temporarily unable to accept data:
        gRPC answers ``UNAVAILABLE`` with a ``google.rpc.RetryInfo`` (in the rich status and in
        the ``google.rpc.retryinfo-bin`` trailer the Python exporter reads); HTTP answers 503
        with ``Retry-After`` (whole seconds, rounded up). Refused requests are not recorded;
        :attr:`refused` counts them.

        Args:
            count: how many of the next requests (any signal, any transport) to refuse.
            retry_after: the retry delay to advertise, seconds.
        """
        if count < 0 or retry_after < 0:
            raise ValueError("refuse_next: count and retry_after must not be negative")
        with self._lock:
            self._to_refuse = count
            self._retry_after = retry_after

    @property
    def refused(self) -> int:
        """Requests refused so far (see :meth:`refuse_next`)."""
        with self._lock:
            return self._refused

    def _take_refusal(self) -> float | None:
        """The retry delay when this request must be refused, else ``None``."""
        with self._lock:
            if self._to_refuse <= 0:
                return None
            self._to_refuse -= 1
            self._refused += 1
            return self._retry_after

    def clear(self) -> None:
        """Forget everything recorded so far."""
        with self._lock:
            self._requests.clear()

    def wait_for(self, predicate: Callable[[OtlpSink], _T], timeout: float = 10.0) -> _T:
        """Wait until ``predicate(self)`` is truthy and return its value.

        The predicate is re-evaluated on each received request (and at least every 50 ms).

        Raises:
            TimeoutError: ``timeout`` seconds passed first.
        """
        deadline = time.monotonic() + timeout
        while True:
            value = predicate(self)
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"OtlpSink: condition not met within {timeout:g}s")
            with self._lock:
                self._lock.wait(min(remaining, 0.05))

    def wait_for_spans(self, n: int, timeout: float = 10.0) -> list[ReceivedSpan]:
        """Wait until at least ``n`` spans arrived; return all spans received.

        Raises:
            TimeoutError: fewer than ``n`` spans within ``timeout`` seconds (the message says
                how many arrived).
        """

        def enough(sink: OtlpSink) -> list[ReceivedSpan]:
            spans = sink.spans()
            return spans if len(spans) >= n else []

        try:
            return self.wait_for(enough, timeout)
        except TimeoutError:
            got = len(self.spans())
            raise TimeoutError(
                f"OtlpSink: {got} of {n} spans arrived within {timeout:g}s"
            ) from None

    # ---------------------------------------------------------------- internals

    def _record(
        self, signal: Signal, transport: Transport, request: Message, headers: Mapping[str, str]
    ) -> None:
        rec = ReceivedRequest(signal, transport, request, dict(headers), time.time())
        with self._lock:
            self._requests.append(rec)
            self._lock.notify_all()

    def _start_grpc(self) -> None:
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="otlp-sink")
        )
        sink = self

        def metadata(context: Any) -> dict[str, str]:
            return {k.lower(): v for k, v in context.invocation_metadata() if isinstance(v, str)}

        def export(signal: Signal, request: Message, context: Any) -> Message:
            _refuse_if_asked(sink, context)
            sink._record(signal, "grpc", request, metadata(context))
            return _RESPONSE_TYPES[signal]()

        class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Message, context: Any) -> Message:
                return export("traces", request, context)

        class _Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request: Message, context: Any) -> Message:
                return export("metrics", request, context)

        class _Logs(logs_service_pb2_grpc.LogsServiceServicer):
            def Export(self, request: Message, context: Any) -> Message:
                return export("logs", request, context)

        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Traces(), server)  # type: ignore[no-untyped-call]
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_Metrics(), server)  # type: ignore[no-untyped-call]
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_Logs(), server)  # type: ignore[no-untyped-call]
        port = server.add_insecure_port(f"{self._host}:0")
        if not port:
            raise OSError(f"OtlpSink: cannot bind gRPC on {self._host}")
        server.start()
        self._grpc_server = server
        self._grpc_port = port

    def _start_http(self) -> None:
        server = _HttpServer((self._host, 0), _HttpHandler, self)
        self._http_server = server
        self._http_port = int(server.server_address[1])
        self._http_thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="otlp-sink-http",
            daemon=True,
        )
        self._http_thread.start()


def _refuse_if_asked(sink: OtlpSink, context: Any) -> None:
    delay = sink._take_refusal()
    if delay is None:
        return
    retry = RetryInfo()
    retry.retry_delay.FromNanoseconds(int(delay * 1e9))
    detail = any_pb2.Any()
    detail.Pack(retry)
    status = status_pb2.Status(code=grpc.StatusCode.UNAVAILABLE.value[0], message="unavailable")
    status.details.append(detail)
    context.set_trailing_metadata(
        (
            ("google.rpc.retryinfo-bin", retry.SerializeToString()),
            ("grpc-status-details-bin", status.SerializeToString()),
        )
    )
    context.abort(grpc.StatusCode.UNAVAILABLE, "unavailable")


class _HttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[_HttpHandler], sink: OtlpSink
    ) -> None:
        super().__init__(address, handler)
        self.sink = sink


class _HttpHandler(http.server.BaseHTTPRequestHandler):
    server: _HttpServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests should not see an access log on stderr

    def do_POST(self) -> None:
        signal = _HTTP_PATHS.get(self.path.split("?", 1)[0])
        if signal is None:
            self._reply(404, "text/plain", b"unknown path")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            self._reply(413, "text/plain", b"body too large")
            return
        body = self.rfile.read(length)
        delay = self.server.sink._take_refusal()
        if delay is not None:
            self.send_response(503)
            self.send_header("Retry-After", str(math.ceil(delay)))
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "11")
            self.end_headers()
            self.wfile.write(b"unavailable")
            return
        encoding = (self.headers.get("Content-Encoding") or "identity").lower()
        content_type = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            elif encoding != "identity":
                self._reply(415, "text/plain", f"unsupported encoding {encoding}".encode())
                return
            request = _REQUEST_TYPES[signal]()
            if content_type == "application/x-protobuf":
                request.ParseFromString(body)
            elif content_type == "application/json":
                # the receiver's spec-exact OTLP/JSON codec (hex ids, integer enums, camelCase)
                from otel_agents.receiver._otlp_json import decode as decode_json

                request = decode_json(body, _REQUEST_TYPES[signal])
            else:
                self._reply(415, "text/plain", f"unsupported content type {content_type}".encode())
                return
        except (
            DecodeError,
            OtelAgentsError,
            ValueError,
            OSError,
            EOFError,
            zlib.error,
        ) as exc:
            self._reply(400, "text/plain", f"cannot decode request: {exc}".encode())
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.sink._record(signal, "http", request, headers)
        response = _RESPONSE_TYPES[signal]()
        if content_type == "application/json":
            from otel_agents.receiver._otlp_json import encode as encode_json

            self._reply(200, "application/json", encode_json(response))
        else:
            self._reply(200, "application/x-protobuf", response.SerializeToString())

    def _reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _iter_spans(requests: Sequence[ReceivedRequest]) -> Iterator[ReceivedSpan]:
    for rec in requests:
        request = rec.request
        if not isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
            continue
        for rs in request.resource_spans:
            resource = attributes_to_dict(rs.resource.attributes)
            for ss in rs.scope_spans:
                for span in ss.spans:
                    yield ReceivedSpan(span, resource, ss.scope.name, rec.transport)


def make_tracer_provider(
    *,
    resource: Resource | None = None,
    exporter: SpanExporter | None = None,
    pricebook: PriceBook | None = None,
    cost: bool = True,
) -> tuple[TracerProvider, InMemorySpanExporter]:
    """A ``TracerProvider`` wired the way otel-agents wires one, exporting to memory.

    The provider has :class:`~otel_agents.AgentIdentitySpanProcessor` (agent identity on every
    span started inside an agent) and :class:`~otel_agents.EnrichingSpanProcessor` (dialect
    normalization, cost on inference spans) in front of a ``SimpleSpanProcessor``, so finished
    spans are visible synchronously, exactly as an exporter would receive them.  It is not
    installed globally: pass it as ``tracer_provider=`` to the spans API, or set it yourself.

    Args:
        resource: the provider's resource; default ``service.name=otel-agents-test``.
        exporter: an extra exporter that receives the same enriched spans (e.g. an OTLP exporter
            pointed at an :class:`OtlpSink`); the in-memory one always receives them.
        pricebook: prices for the cost enrichment; default ``PriceBook()`` (genai-prices).
        cost: price inference spans.

    Returns:
        ``(provider, in_memory_exporter)``; call ``provider.shutdown()`` when done.

    Example::

        from otel_agents import chat
        from otel_agents.testing import make_tracer_provider

        provider, spans = make_tracer_provider()
        with chat("gpt-4o", provider="openai", tracer_provider=provider) as llm:
            llm.record_usage(input_tokens=1000, output_tokens=200)
        (span,) = spans.get_finished_spans()
        assert span.attributes["gen_ai.usage.cost.amount"] > 0
    """
    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=resource
        if resource is not None
        else Resource({"service.name": "otel-agents-test"})
    )
    nexts = [SimpleSpanProcessor(memory)]
    if exporter is not None:
        nexts.append(SimpleSpanProcessor(exporter))
    provider.add_span_processor(AgentIdentitySpanProcessor())
    provider.add_span_processor(EnrichingSpanProcessor(nexts, pricebook=pricebook, cost=cost))
    return provider, memory
