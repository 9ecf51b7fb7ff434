# SPDX-License-Identifier: Apache-2.0
"""OTLP/gRPC server: official exporters, status codes, RetryInfo in both encodings, limits."""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterator

import grpc
import pytest
from google.rpc import error_details_pb2
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult

from otel_agents.receiver import GrpcConfig, LimitsConfig

from ._transport_fixtures import (
    LOGS_METHOD,
    METRICS_METHOD,
    Stack,
    grpc_call,
    logs_request,
    metrics_request,
    retry_delay,
    stack_fixture,
    trace_request,
    with_attr,
)

LIMIT = 1024 * 1024


@pytest.fixture
def stack() -> Iterator[Stack]:
    yield from stack_fixture(limits=LimitsConfig(max_request_bytes=LIMIT))


def test_official_exporter_sends_traces(stack: Stack) -> None:
    """The SDK's OTLP/gRPC span exporter (gzip) delivers spans that are stored byte-exact."""
    exporter = OTLPSpanExporter(
        endpoint=stack.grpc_target, insecure=True, compression=grpc.Compression.Gzip
    )
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("parent"), tracer.start_as_current_span("child"):
        pass
    provider.shutdown()
    spans = stack.ingestor.spans()
    assert sorted(s.name for s in spans) == ["child", "parent"]
    assert all(len(s.trace_id) == 16 and len(s.span_id) == 8 for s in spans)


def test_official_exporters_send_metrics_and_logs(stack: Stack) -> None:
    """Metrics and logs from the SDK exporters arrive through MetricsService / LogsService."""
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=stack.grpc_target, insecure=True),
        export_interval_millis=60_000,
    )
    meters = MeterProvider(metric_readers=[reader])
    meters.get_meter("m").create_counter("calls").add(3)
    meters.shutdown()
    logs = LoggerProvider()
    logs.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(endpoint=stack.grpc_target, insecure=True))
    )
    logs.get_logger("l").emit(body="hello")
    logs.shutdown()
    signals = sorted({b[0] for b in stack.ingestor.batches})
    assert signals == ["logs", "metrics"]


def test_metrics_and_logs_raw(stack: Stack) -> None:
    """Raw metrics and logs requests are OK with partial_success unset and counted as items."""
    m = grpc_call(stack.grpc_target, metrics_request(3).SerializeToString(), method=METRICS_METHOD)
    lg = grpc_call(stack.grpc_target, logs_request(4).SerializeToString(), method=LOGS_METHOD)
    assert (m.code, lg.code) == (grpc.StatusCode.OK, grpc.StatusCode.OK)
    assert (m.response, lg.response) == (b"", b"")  # full success: empty response message
    assert [b[2] for b in stack.ingestor.batches] == [3, 4]


def test_payload_is_original_bytes_when_unchanged(stack: Stack) -> None:
    """A clean request is stored as the exact bytes received (no re-serialization)."""
    body = trace_request(5).SerializeToString()
    assert grpc_call(stack.grpc_target, body).code == grpc.StatusCode.OK
    assert stack.ingestor.batches == [("traces", body, 5)]


def test_malformed_is_invalid_argument_with_bad_request(stack: Stack) -> None:
    """Garbage bytes → INVALID_ARGUMENT + BadRequest in the rich status (not grpcio's INTERNAL)."""
    result = grpc_call(stack.grpc_target, b"\xff\xff\xff\xff")
    assert result.code == grpc.StatusCode.INVALID_ARGUMENT
    bad = result.detail(error_details_pb2.BadRequest)
    assert bad is not None and "protobuf" in bad.field_violations[0].description
    assert result.rich_status().code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "google.rpc.retryinfo-bin" not in result.trailers


def test_partial_success_counts_rejected_spans(stack: Stack) -> None:
    """Spans with a bad trace_id are rejected via partial_success; the rest are stored."""

    def bad(i: int, span: object) -> None:
        if i == 1:
            span.trace_id = b"\x01\x02\x03"  # type: ignore[attr-defined]

    result = grpc_call(stack.grpc_target, trace_request(3, customize=bad).SerializeToString())
    assert result.code == grpc.StatusCode.OK
    partial = ExportTraceServiceResponse.FromString(result.response).partial_success
    assert partial.rejected_spans == 1
    assert "trace_id" in partial.error_message
    assert stack.ingestor.items == 2
    assert len(stack.ingestor.spans()) == 2


def test_retryable_refusal_carries_retry_info_twice(stack: Stack) -> None:
    """UNAVAILABLE carries the delay in grpc-status-details-bin (Go) and the trailer (Python)."""
    stack.ingestor.refuse(1, retry_after=1.25)
    result = grpc_call(stack.grpc_target, trace_request(2).SerializeToString())
    assert result.code == grpc.StatusCode.UNAVAILABLE
    rich, trailer = retry_delay(result)
    assert rich == pytest.approx(1.25)
    assert trailer == pytest.approx(1.25)
    # The same request succeeds afterwards: nothing was half-stored.
    assert (
        grpc_call(stack.grpc_target, trace_request(2).SerializeToString()).code
        == grpc.StatusCode.OK
    )
    assert stack.ingestor.items == 2


def test_python_exporter_backs_off_by_our_retry_info(stack: Stack) -> None:
    """The SDK exporter waits our RetryInfo delay (0.25 s, read from the trailer), not its own
    0.8-1.2 s backoff: measured server-side from the refused attempt to the stored retry."""
    stack.ingestor.refuse(1, retry_after=0.25)
    exporter = OTLPSpanExporter(endpoint=stack.grpc_target, insecure=True, timeout=8)
    provider = TracerProvider()
    span = provider.get_tracer("t").start_span("x")
    span.end()
    assert isinstance(span, ReadableSpan)
    assert exporter.export([span]) is SpanExportResult.SUCCESS
    exporter.shutdown()
    assert len(stack.ingestor.refused_at) == 1 and stack.ingestor.items == 1
    gap = stack.ingestor.stored_at[0] - stack.ingestor.refused_at[0]
    assert 0.24 <= gap < 0.78, gap  # its own first backoff is 0.8-1.2 s


def test_oversize_is_resource_exhausted_without_retry_info(stack: Stack) -> None:
    """A request over the limit → RESOURCE_EXHAUSTED (non-retryable: no RetryInfo)."""
    body = trace_request(1, customize=with_attr("big", "x" * (LIMIT + 10))).SerializeToString()
    result = grpc_call(stack.grpc_target, body)
    assert result.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert retry_delay(result) == (None, None)
    assert stack.ingestor.items == 0
    # grpcio refuses it before the handler sees the message; it is still counted.
    assert _ended_before_message(stack) == 1


def _ended_before_message(stack: Stack) -> float:
    from otel_agents.receiver._grpc import ENDED_BEFORE_MESSAGE

    labels = {"signal": "traces", "transport": "grpc", "code": ENDED_BEFORE_MESSAGE}
    deadline = time.monotonic() + 5  # the handler records after the client has its status
    while time.monotonic() < deadline:
        value = stack.registry.get_sample_value("otel_agents_receiver_requests_total", labels)
        if value:
            return value
        time.sleep(0.01)
    return 0.0


def test_a_call_without_a_message_is_invalid(stack: Stack) -> None:
    """A client that half-closes an Export call without a message gets INVALID_ARGUMENT."""
    channel = grpc.insecure_channel(stack.grpc_target)
    try:
        call = channel.stream_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        with pytest.raises(grpc.RpcError) as err:
            call(iter(()), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    finally:
        channel.close()
    assert stack.ingestor.items == 0


def test_gzip_bomb_is_resource_exhausted(stack: Stack) -> None:
    """A small gzip body inflating past the limit is refused by the decompressed-size check."""
    inner = trace_request(1, customize=with_attr("z", "\0" * (8 * LIMIT))).SerializeToString()
    assert len(gzip.compress(inner)) < LIMIT // 10  # tiny on the wire
    result = grpc_call(stack.grpc_target, inner, compression=grpc.Compression.Gzip)
    assert result.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in result.details.lower() or "exceed" in result.details.lower()
    assert _ended_before_message(stack) == 1
    assert (
        grpc_call(stack.grpc_target, trace_request(1).SerializeToString()).code
        == grpc.StatusCode.OK
    )


def test_empty_request_succeeds_without_storage(stack: Stack) -> None:
    """An empty request is OK and writes nothing (spec: empty requests SHOULD succeed)."""
    assert grpc_call(stack.grpc_target, b"").code == grpc.StatusCode.OK
    assert stack.ingestor.batches == []


def test_unknown_method_is_unimplemented(stack: Stack) -> None:
    """A method we do not serve answers UNIMPLEMENTED."""
    result = grpc_call(
        stack.grpc_target,
        b"",
        method="/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export",
    )
    assert result.code == grpc.StatusCode.UNIMPLEMENTED


def test_default_config_binds_loopback() -> None:
    """The default gRPC endpoint is loopback port 4317 (RC-14)."""
    assert GrpcConfig().endpoint == "127.0.0.1:4317"


def test_telemetry_counts_requests(stack: Stack) -> None:
    """requests_total and accepted/rejected items are exported on the registry."""
    grpc_call(stack.grpc_target, trace_request(2).SerializeToString())
    grpc_call(stack.grpc_target, b"\xff")
    reg = stack.registry
    assert (
        reg.get_sample_value(
            "otel_agents_receiver_accepted_items_total", {"signal": "traces", "transport": "grpc"}
        )
        == 2
    )
    assert (
        reg.get_sample_value(
            "otel_agents_receiver_requests_total",
            {"signal": "traces", "transport": "grpc", "code": "INVALID_ARGUMENT"},
        )
        == 1
    )
    assert (
        reg.get_sample_value(
            "otel_agents_receiver_request_duration_seconds_count",
            {"signal": "traces", "transport": "grpc"},
        )
        == 2
    )


def test_serve_noop_main_for_benchmarks() -> None:
    """serve_noop_main runs the servers with a no-op ingestor in a process and prints ports."""
    import signal
    import subprocess
    import sys

    code = "from otel_agents.receiver._common import serve_noop_main; serve_noop_main()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        ports = dict(kv.split("=") for kv in proc.stdout.readline().decode().split())
        body = trace_request(512).SerializeToString()
        assert grpc_call(f"127.0.0.1:{ports['grpc']}", body).code == grpc.StatusCode.OK
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
