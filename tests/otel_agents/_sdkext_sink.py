# SPDX-License-Identifier: Apache-2.0
"""A tiny OTLP/gRPC sink on 127.0.0.1 (ephemeral port) that keeps every request it receives.

Used by the SDK-extension tests whose subject runs in another process (A2A across processes,
zero-code under ``opentelemetry-instrument``): the subprocess exports real OTLP to this sink and
the test reads the decoded protobuf requests back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any, TypeVar

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

T = TypeVar("T")


def any_value(value: AnyValue) -> Any:
    """Converts an OTLP ``AnyValue`` to the Python value it carries."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


def attrs(kvs: Any) -> dict[str, Any]:
    """Converts a repeated ``KeyValue`` field to a dict."""
    out: dict[str, Any] = {}
    kv: KeyValue
    for kv in kvs:
        out[kv.key] = any_value(kv.value)
    return out


class OtlpSink(
    trace_service_pb2_grpc.TraceServiceServicer,
    metrics_service_pb2_grpc.MetricsServiceServicer,
    logs_service_pb2_grpc.LogsServiceServicer,
):
    """OTLP/gRPC server for traces, metrics and logs that records the requests.

    Example::

        with OtlpSink() as sink:
            run_app(endpoint=sink.endpoint)
            sink.wait_for(lambda: len(sink.spans()) >= 3, timeout=10)
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.traces: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.metrics: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self.logs: list[logs_service_pb2.ExportLogsServiceRequest] = []
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(self, self._server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> OtlpSink:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop(grace=None)

    # -- gRPC services --------------------------------------------------------------------
    def Export(self, request: Any, context: Any) -> Any:
        """Stores the request and answers the matching empty (full success) response."""
        with self._cond:
            if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
                self.traces.append(request)
                response: Any = trace_service_pb2.ExportTraceServiceResponse()
            elif isinstance(request, metrics_service_pb2.ExportMetricsServiceRequest):
                self.metrics.append(request)
                response = metrics_service_pb2.ExportMetricsServiceResponse()
            else:
                self.logs.append(request)
                response = logs_service_pb2.ExportLogsServiceResponse()
            self._cond.notify_all()
        return response

    # -- reading back ---------------------------------------------------------------------
    def wait_for(self, predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
        """Waits (bounded) until ``predicate()`` is true; returns its last value."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.2))
            return True

    def spans(self) -> list[tuple[Resource, Span]]:
        """Every span received so far with its resource."""
        with self._cond:
            return [
                (rs.resource, span)
                for req in self.traces
                for rs in req.resource_spans
                for ss in rs.scope_spans
                for span in ss.spans
            ]

    def metric_list(self) -> list[tuple[Resource, Metric]]:
        """Every metric received so far with its resource."""
        with self._cond:
            return [
                (rm.resource, metric)
                for req in self.metrics
                for rm in req.resource_metrics
                for sm in rm.scope_metrics
                for metric in sm.metrics
            ]

    def log_records(self) -> list[tuple[Resource, LogRecord]]:
        """Every log record received so far with its resource."""
        with self._cond:
            return [
                (rl.resource, rec)
                for req in self.logs
                for rl in req.resource_logs
                for sl in rl.scope_logs
                for rec in sl.log_records
            ]


def iter_metric_names(sink: OtlpSink) -> Iterator[str]:
    """Names of the metrics received so far."""
    for _, metric in sink.metric_list():
        yield metric.name
