# SPDX-License-Identifier: Apache-2.0
"""Shared helpers for the transport tests: a real in-memory ingestor, request builders, clients."""

from __future__ import annotations

import dataclasses
import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from prometheus_client import CollectorRegistry

from otel_agents._errors import RetryableError
from otel_agents.receiver import (
    AdmissionController,
    ExportHandler,
    GrpcConfig,
    GrpcServer,
    HttpConfig,
    HttpServer,
    LimitsConfig,
    ReceiverTelemetry,
)

TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
METRICS_METHOD = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
LOGS_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
METHODS = {"traces": TRACE_METHOD, "metrics": METRICS_METHOD, "logs": LOGS_METHOD}


class ListIngestor:
    """A real ingestor that keeps what it is given in a list (thread-safe).

    ``refuse(n, retry_after)`` makes the next ``n`` calls raise ``RetryableError`` — what the
    spool does when it cannot commit.
    """

    def __init__(self) -> None:
        self.batches: list[tuple[str, bytes, int]] = []
        self._lock = threading.Lock()
        self._refuse = 0
        self._retry_after = 0.5
        self.refused_at: list[float] = []
        self.refused_payloads: list[bytes] = []
        self.stored_at: list[float] = []

    def refuse(self, n: int, retry_after: float = 0.5) -> None:
        with self._lock:
            self._refuse = n
            self._retry_after = retry_after

    def ingest(self, signal: str, request: Message, payload: bytes, items: int) -> None:
        with self._lock:
            if self._refuse > 0:
                self._refuse -= 1
                self.refused_at.append(time.monotonic())
                self.refused_payloads.append(payload)
                raise RetryableError("spool full (test)", retry_after=self._retry_after)
            self.batches.append((signal, payload, items))
            self.stored_at.append(time.monotonic())

    @property
    def items(self) -> int:
        with self._lock:
            return sum(b[2] for b in self.batches)

    def spans(self) -> list[Any]:
        """Every stored span, decoded from the stored payloads."""
        out = []
        with self._lock:
            batches = list(self.batches)
        for signal, payload, _ in batches:
            if signal == "traces":
                req = ExportTraceServiceRequest.FromString(payload)
                out.extend(
                    s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans
                )
        return out


@dataclasses.dataclass
class Stack:
    """Running gRPC + HTTP servers over one ingestor."""

    ingestor: ListIngestor
    handler: ExportHandler
    grpc: GrpcServer
    http: HttpServer
    registry: CollectorRegistry

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc.port}"

    def http_conn(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.http.port, timeout=timeout)

    def stop(self) -> None:
        self.grpc.stop(0.5)
        self.http.stop(0.5)


def start_stack(
    limits: LimitsConfig | None = None,
    admission: AdmissionController | None = None,
    grpc_config: GrpcConfig | None = None,
    http_config: HttpConfig | None = None,
) -> Stack:
    ingestor = ListIngestor()
    registry = CollectorRegistry(auto_describe=True)
    handler = ExportHandler(
        ingestor, limits or LimitsConfig(), admission, ReceiverTelemetry(registry)
    )
    g = GrpcServer(grpc_config or GrpcConfig(endpoint="127.0.0.1:0", max_workers=4), handler)
    h = HttpServer(http_config or HttpConfig(endpoint="127.0.0.1:0"), handler)
    g.start()
    try:
        h.start()
    except BaseException:
        g.stop(0)
        raise
    return Stack(ingestor, handler, g, h, registry)


def stack_fixture(**kwargs: Any) -> Iterator[Stack]:
    stack = start_stack(**kwargs)
    try:
        yield stack
    finally:
        stack.stop()


# -- request builders --------------------------------------------------------------------------


def with_attr(key: str, value: Any) -> Callable[[int, Any], None]:
    """A ``customize`` callback adding one attribute to every span."""

    def add(i: int, span: Any) -> None:
        span.attributes.append(kv(key, value))

    return add


def kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, str):
        return KeyValue(key=key, value=AnyValue(string_value=value))
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    raise TypeError(value)


def trace_request(
    n: int = 3,
    *,
    trace_id: bytes = bytes(range(1, 17)),
    attrs: int = 2,
    customize: Callable[[int, Any], None] | None = None,
) -> ExportTraceServiceRequest:
    """``n`` valid spans in one trace; ``customize(i, span)`` edits span ``i``."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(kv("service.name", "svc"))
    ss = rs.scope_spans.add()
    ss.scope.name = "test"
    for i in range(n):
        span = ss.spans.add(
            trace_id=trace_id,
            span_id=(i + 1).to_bytes(8, "big"),
            name=f"span-{i}",
            kind=1,
            start_time_unix_nano=1_700_000_000_000_000_000 + i,
            end_time_unix_nano=1_700_000_000_000_100_000 + i,
        )
        span.attributes.extend(kv(f"k{j}", f"v{j}") for j in range(attrs))
        if customize is not None:
            customize(i, span)
    return req


def metrics_request(points: int = 2) -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    sm = req.resource_metrics.add().scope_metrics.add()
    m = sm.metrics.add(name="requests", unit="1")
    for i in range(points):
        dp = m.sum.data_points.add(as_int=i, time_unix_nano=1_700_000_000_000_000_000)
        dp.attributes.append(kv("i", i))
    m.sum.aggregation_temporality = 2
    m.sum.is_monotonic = True
    return req


def logs_request(records: int = 2) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    sl = req.resource_logs.add().scope_logs.add()
    for i in range(records):
        rec = sl.log_records.add(time_unix_nano=1_700_000_000_000_000_000, severity_number=9)
        rec.body.string_value = f"line {i}"
    return req


# -- raw clients -------------------------------------------------------------------------------


@dataclasses.dataclass
class GrpcResult:
    code: grpc.StatusCode
    details: str
    response: bytes
    trailers: dict[str, Any]

    def rich_status(self) -> status_pb2.Status:
        return status_pb2.Status.FromString(self.trailers["grpc-status-details-bin"])

    def detail(self, cls: type[Message]) -> Any:
        for any_msg in self.rich_status().details:
            if any_msg.Is(cls.DESCRIPTOR):
                out = cls()
                any_msg.Unpack(out)
                return out
        return None

    def partial(self) -> Any:
        return ExportTraceServiceResponse.FromString(self.response).partial_success


def grpc_call(
    target: str,
    body: bytes,
    *,
    method: str = TRACE_METHOD,
    metadata: list[tuple[str, str]] | None = None,
    compression: grpc.Compression | None = None,
    channel_options: list[tuple[str, Any]] | None = None,
    credentials: grpc.ChannelCredentials | None = None,
    timeout: float = 10.0,
) -> GrpcResult:
    """One raw unary call with bytes in and out."""
    options = [("grpc.max_send_message_length", 256 * 1024 * 1024), *(channel_options or [])]
    if credentials is not None:
        channel = grpc.secure_channel(target, credentials, options=options)
    else:
        channel = grpc.insecure_channel(target, options=options)
    with channel:
        stub = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        try:
            resp, call = stub.with_call(
                body, metadata=metadata, compression=compression, timeout=timeout
            )
            return GrpcResult(grpc.StatusCode.OK, "", resp, dict(call.trailing_metadata() or ()))
        except grpc.RpcError as err:
            return GrpcResult(
                err.code(),
                err.details() or "",
                b"",
                dict(err.trailing_metadata() or ()),  # type: ignore[attr-defined]
            )


def retry_delay(result: GrpcResult) -> tuple[float | None, float | None]:
    """(RetryInfo delay from the rich status, from the ``google.rpc.retryinfo-bin`` trailer)."""
    rich = (
        result.detail(error_details_pb2.RetryInfo)
        if "grpc-status-details-bin" in result.trailers
        else None
    )
    raw = result.trailers.get("google.rpc.retryinfo-bin")
    trailer = error_details_pb2.RetryInfo.FromString(raw) if raw is not None else None

    def seconds(info: Any) -> float | None:
        if info is None:
            return None
        return info.retry_delay.seconds + info.retry_delay.nanos / 1e9

    return seconds(rich), seconds(trailer)


@dataclasses.dataclass
class HttpResult:
    status: int
    headers: dict[str, str]
    body: bytes


def http_post(
    stack: Stack,
    path: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    *,
    conn: http.client.HTTPConnection | None = None,
    method: str = "POST",
) -> HttpResult:
    own = conn is None
    c = conn or stack.http_conn()
    try:
        hdrs = {"Content-Type": "application/x-protobuf", **(headers or {})}
        c.request(method, path, body=body, headers=hdrs)
        r = c.getresponse()
        data = r.read()
        return HttpResult(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        if own:
            c.close()


def trickle_until_closed(sock: socket.socket, pieces: Iterable[bytes]) -> bool:
    """Send ``pieces`` one at a time, waiting up to 0.1 s after each for the server to hang up;
    returns whether it did (a slow-client test then checks when)."""
    for piece in pieces:
        try:
            sock.sendall(piece)
        except OSError:
            return True
        sock.settimeout(0.1)
        try:
            if sock.recv(1024) == b"":
                return True
        except TimeoutError:
            pass
        except OSError:
            return True
    return False


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()
