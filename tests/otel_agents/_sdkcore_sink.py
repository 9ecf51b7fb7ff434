# SPDX-License-Identifier: Apache-2.0
"""Test fixture: an in-process OTLP trace sink (gRPC and HTTP/protobuf) on loopback, port 0.

A small stand-in until the public ``otel_agents.testing`` sink lands; real servers (grpcio's
server with the generated ``TraceServiceServicer``, ``http.server``), no mocks.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def any_value(v: AnyValue) -> Any:
    """Python value of an OTLP ``AnyValue``."""
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind is None:
        return None
    return getattr(v, kind)


@dataclass
class ReceivedSpan:
    """One span as the sink received it."""

    name: str
    kind: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes


@dataclass
class OtlpSink:
    """Collects OTLP trace requests over gRPC and HTTP."""

    requests: list[trace_service_pb2.ExportTraceServiceRequest] = field(default_factory=list)
    metadata: list[dict[str, str]] = field(default_factory=list)
    grpc_port: int = 0
    http_port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _grpc: Any = None
    _http: ThreadingHTTPServer | None = None

    def _record(
        self, req: trace_service_pb2.ExportTraceServiceRequest, meta: dict[str, str]
    ) -> None:
        with self._lock:
            self.requests.append(req)
            self.metadata.append(meta)

    def start(self) -> OtlpSink:
        """Start both servers on ephemeral loopback ports."""
        sink = self

        class Servicer(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                sink._record(request, {k: v for k, v in context.invocation_metadata()})
                return trace_service_pb2.ExportTraceServiceResponse()

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Servicer(), server)
        self.grpc_port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._grpc = server

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                req = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                sink._record(req, {k.lower(): v for k, v in self.headers.items()})
                payload = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http_port = self._http.server_address[1]
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop both servers."""
        if self._grpc is not None:
            self._grpc.stop(grace=None)
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()

    def spans(self) -> list[ReceivedSpan]:
        """Every span received so far, flattened."""
        out: list[ReceivedSpan] = []
        with self._lock:
            requests = list(self.requests)
        for req in requests:
            for rs in req.resource_spans:
                resource = {kv.key: any_value(kv.value) for kv in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        out.append(
                            ReceivedSpan(
                                name=s.name,
                                kind=s.kind,
                                attributes={kv.key: any_value(kv.value) for kv in s.attributes},
                                resource=resource,
                                scope=ss.scope.name,
                                trace_id=s.trace_id,
                                span_id=s.span_id,
                                parent_span_id=s.parent_span_id,
                            )
                        )
        return out

    def wait_for(
        self, predicate: Callable[[list[ReceivedSpan]], bool], timeout: float = 15.0
    ) -> list[ReceivedSpan]:
        """Poll until ``predicate(spans)`` holds or ``timeout`` passes; return the spans."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if predicate(spans) or time.monotonic() > deadline:
                return spans
            time.sleep(0.05)
