# SPDX-License-Identifier: Apache-2.0
"""A downstream OTLP backend for forwarding tests (the Collector testbed's MockBackend pattern).

A real grpcio server and a real HTTP server on 127.0.0.1:0 answer every export through a
pluggable *decision function* (OK, UNAVAILABLE + RetryInfo, a share of UNAVAILABLE, permanent
INVALID_ARGUMENT, partial success, added latency, hang) and record the (trace_id, span_id) pairs
they accepted, with duplicates counted, for exact loss/duplicate accounting.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import gzip
import ipaddress
import os
import random
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as logs_pb
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as metrics_pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as trace_pb
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span

SpanKey = tuple[bytes, bytes]

_SERVICES = {
    "traces": "opentelemetry.proto.collector.trace.v1.TraceService",
    "metrics": "opentelemetry.proto.collector.metrics.v1.MetricsService",
    "logs": "opentelemetry.proto.collector.logs.v1.LogsService",
}
_REQUESTS: dict[str, Any] = {
    "traces": trace_pb.ExportTraceServiceRequest,
    "metrics": metrics_pb.ExportMetricsServiceRequest,
    "logs": logs_pb.ExportLogsServiceRequest,
}
_RESPONSES: dict[str, Any] = {
    "traces": (trace_pb.ExportTraceServiceResponse, "rejected_spans"),
    "metrics": (metrics_pb.ExportMetricsServiceResponse, "rejected_data_points"),
    "logs": (logs_pb.ExportLogsServiceResponse, "rejected_log_records"),
}


@dataclasses.dataclass(frozen=True)
class Decision:
    """What the sink answers to one request.

    ``code`` None = success (with ``rejected`` items as partial success); otherwise a gRPC code
    (mapped to HTTP 503/429/400 on the HTTP server).  ``retry_after`` adds RetryInfo (both gRPC
    encodings) / Retry-After.  ``delay`` sleeps first; ``hang`` never answers (until stopped).
    """

    code: grpc.StatusCode | None = None
    retry_after: float | None = None
    rejected: int = 0
    message: str = ""
    delay: float = 0.0
    hang: bool = False


OK = Decision()
DecisionFn = Callable[[str, int], Decision]
"""``decide(signal, attempt_number) -> Decision``; attempt numbers start at 1 per sink."""


def always(decision: Decision) -> DecisionFn:
    """A decision function giving the same answer to every request."""
    return lambda _signal, _n: decision


def share_unavailable(share: float, seed: int = 7, retry_after: float | None = None) -> DecisionFn:
    """UNAVAILABLE for ``share`` of requests (seeded, so runs repeat), OK otherwise."""
    rng = random.Random(seed)
    lock = threading.Lock()

    def decide(_signal: str, _n: int) -> Decision:
        with lock:
            fail = rng.random() < share
        return Decision(grpc.StatusCode.UNAVAILABLE, retry_after) if fail else OK

    return decide


_HTTP_STATUS = {
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


class RecordingSink:
    """OTLP gRPC + HTTP backend recording what it accepted (see module docstring)."""

    def __init__(self, decide: DecisionFn | None = None) -> None:
        self.decide = decide or always(OK)
        self._lock = threading.Lock()
        self.spans: collections.Counter[SpanKey] = collections.Counter()
        self.items: collections.Counter[str] = collections.Counter()
        self.attempts: list[tuple[float, str, str]] = []  # (monotonic time, signal, code name)
        self.headers: list[dict[str, str]] = []
        self.bodies: list[bytes] = []
        self._released = threading.Event()
        #: Close every HTTP connection after its response without saying so (idle timeouts).
        self.drop_idle_connections = False
        #: Answer 413 to HTTP bodies larger than this (after decompression).
        self.max_http_body: int | None = None
        self._grpc: grpc.Server | None = None
        self._http: ThreadingHTTPServer | None = None
        self.grpc_port = 0
        self.http_port = 0

    # ------------------------------------------------------------------ accounting

    @property
    def received(self) -> set[SpanKey]:
        """Distinct (trace_id, span_id) pairs accepted."""
        with self._lock:
            return set(self.spans)

    @property
    def duplicates(self) -> int:
        """Spans accepted more than once (extra copies)."""
        with self._lock:
            return sum(n - 1 for n in self.spans.values() if n > 1)

    def attempt_count(self) -> int:
        """Requests answered so far (any outcome)."""
        with self._lock:
            return len(self.attempts)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Poll ``predicate`` until true or ``timeout``; returns its last value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.02)
        return predicate()

    def _handle(
        self, signal: str, payload: bytes, headers: dict[str, str]
    ) -> tuple[Decision, bytes]:
        with self._lock:
            n = len(self.attempts) + 1
        decision = self.decide(signal, n)
        if decision.delay:
            self._released.wait(decision.delay)
        if decision.hang:
            self._released.wait(60.0)
        with self._lock:
            self.attempts.append(
                (time.monotonic(), signal, decision.code.name if decision.code else "OK")
            )
            self.headers.append(headers)
        if decision.code is not None:
            return decision, b""
        request = _REQUESTS[signal].FromString(payload)
        with self._lock:
            self.bodies.append(payload)
            if signal == "traces":
                for rs in request.resource_spans:
                    for ss in rs.scope_spans:
                        for span in ss.spans:
                            self.spans[(span.trace_id, span.span_id)] += 1
                        self.items[signal] += len(ss.spans)
            elif signal == "logs":
                self.items[signal] += sum(
                    len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs
                )
            else:
                self.items[signal] += sum(
                    len(m.gauge.data_points) + len(m.sum.data_points)
                    for rm in request.resource_metrics
                    for sm in rm.scope_metrics
                    for m in sm.metrics
                )
        response_type, field = _RESPONSES[signal]
        response = response_type()
        if decision.rejected or decision.message:
            setattr(response.partial_success, field, decision.rejected)
            response.partial_success.error_message = decision.message
        return decision, response.SerializeToString()

    # ------------------------------------------------------------------ gRPC

    def start_grpc(
        self, port: int = 0, tls: tuple[bytes, bytes] | None = None, max_receive: int = 4 << 20
    ) -> int:
        """Serve OTLP/gRPC on 127.0.0.1:``port`` (0 = ephemeral; ``tls`` = (cert PEM, key PEM));
        returns the port."""
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4),
            options=[("grpc.max_receive_message_length", max_receive)],
        )
        for signal, service in _SERVICES.items():
            server.add_generic_rpc_handlers(
                (
                    grpc.method_handlers_generic_handler(
                        service,
                        {"Export": grpc.unary_unary_rpc_method_handler(self._grpc_export(signal))},
                    ),
                )
            )
        if tls is None:
            self.grpc_port = server.add_insecure_port(f"127.0.0.1:{port}")
        else:
            creds = grpc.ssl_server_credentials([(tls[1], tls[0])])
            self.grpc_port = server.add_secure_port(f"127.0.0.1:{port}", creds)
        self._released.clear()
        server.start()
        self._grpc = server
        return self.grpc_port

    def _grpc_export(self, signal: str) -> Callable[[bytes, grpc.ServicerContext], bytes]:
        def export(payload: bytes, context: grpc.ServicerContext) -> bytes:
            headers = {k: str(v) for k, v in context.invocation_metadata()}
            decision, body = self._handle(signal, payload, headers)
            if decision.code is None:
                return body
            status = status_pb2.Status(
                code=decision.code.value[0], message=decision.message or "refused"
            )
            trailers: list[tuple[str, bytes]] = []
            if decision.retry_after is not None:
                info = error_details_pb2.RetryInfo(
                    retry_delay=duration_pb2.Duration(
                        seconds=int(decision.retry_after),
                        nanos=int((decision.retry_after % 1) * 1e9),
                    )
                )
                detail = any_pb2.Any()
                detail.Pack(info)
                status.details.append(detail)
                trailers.append(("google.rpc.retryinfo-bin", info.SerializeToString()))
            trailers.append(("grpc-status-details-bin", status.SerializeToString()))
            context.set_trailing_metadata(tuple(trailers))
            context.abort(decision.code, status.message)
            raise AssertionError("unreachable")

        return export

    def stop_grpc(self) -> None:
        """Stop the gRPC server at once (a dead backend); ``start_grpc(port)`` revives it."""
        if self._grpc is not None:
            self._released.set()
            self._grpc.stop(0).wait(5)
            self._grpc = None

    # ------------------------------------------------------------------ HTTP

    def start_http(self, port: int = 0, tls: ssl.SSLContext | None = None) -> int:
        """Serve OTLP/HTTP (protobuf) on 127.0.0.1:``port`` (HTTPS with ``tls``); returns the port."""
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                signal = {"/v1/traces": "traces", "/v1/metrics": "metrics", "/v1/logs": "logs"}.get(
                    self.path
                )
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if signal is None:
                    self._reply(404, b"")
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if sink.max_http_body is not None and len(body) > sink.max_http_body:
                    self._reply(
                        413, status_pb2.Status(message="request too large").SerializeToString()
                    )
                    return
                decision, out = sink._handle(
                    signal, body, {k.lower(): v for k, v in self.headers.items()}
                )
                if decision.code is None:
                    self._reply(200, out)
                    return
                extra = {}
                if decision.retry_after is not None:
                    extra["Retry-After"] = str(round(decision.retry_after))
                status = status_pb2.Status(
                    code=code_pb2.UNAVAILABLE, message=decision.message or "refused"
                )
                self._reply(_HTTP_STATUS.get(decision.code, 500), status.SerializeToString(), extra)

            def _reply(self, code: int, body: bytes, extra: dict[str, str] | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)
                if sink.drop_idle_connections:
                    self.close_connection = True  # silently, as an idle timeout would

        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        server.daemon_threads = True
        if tls is not None:
            server.socket = tls.wrap_socket(server.socket, server_side=True)
        self.http_port = server.server_address[1]
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        self._http = server
        return self.http_port

    def stop_http(self) -> None:
        """Stop the HTTP server."""
        if self._http is not None:
            self._released.set()
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    def stop(self) -> None:
        """Stop both servers."""
        self.stop_grpc()
        self.stop_http()


@dataclasses.dataclass
class Batch:
    """A serialized ExportTraceServiceRequest and the span keys in it."""

    payload: bytes
    keys: list[SpanKey]
    request: trace_pb.ExportTraceServiceRequest


def make_traces(spans: int, attributes: dict[str, str] | None = None) -> Batch:
    """A request with ``spans`` spans of one fresh trace (random IDs, valid lengths)."""
    request = trace_pb.ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.append(
        KeyValue(key="service.name", value=AnyValue(string_value="fwd-test"))
    )
    ss = rs.scope_spans.add()
    trace_id = os.urandom(16)
    now = time.time_ns()
    keys = []
    for i in range(spans):
        span_id = os.urandom(8)
        span = Span(
            trace_id=trace_id,
            span_id=span_id,
            name=f"op {i}",
            kind=Span.SPAN_KIND_INTERNAL,
            start_time_unix_nano=now,
            end_time_unix_nano=now + 1000,
        )
        for k, v in (attributes or {}).items():
            span.attributes.append(KeyValue(key=k, value=AnyValue(string_value=v)))
        ss.spans.append(span)
        keys.append((trace_id, span_id))
    return Batch(request.SerializeToString(), keys, request)


def make_logs(records: int) -> logs_pb.ExportLogsServiceRequest:
    """A logs request with ``records`` records."""
    request = logs_pb.ExportLogsServiceRequest()
    sl = request.resource_logs.add().scope_logs.add()
    for i in range(records):
        sl.log_records.append(
            LogRecord(time_unix_nano=time.time_ns(), body=AnyValue(string_value=f"r{i}"))
        )
    return request


def iter_spans(request: trace_pb.ExportTraceServiceRequest) -> Iterator[Span]:
    """Every span of a request."""
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            yield from ss.spans


def self_signed(tmp: Path) -> tuple[bytes, bytes, Path]:
    """A self-signed certificate for 127.0.0.1 / localhost: ``(cert PEM, key PEM, cert file)``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = tmp / "cert.pem"
    path.write_bytes(cert_pem)
    return cert_pem, key_pem, path
