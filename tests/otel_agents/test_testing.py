# SPDX-License-Identifier: Apache-2.0
"""Tests of the public test helpers in ``otel_agents.testing``."""

from __future__ import annotations

import gzip
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcMetricExporter,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind

from otel_agents import chat, invoke_agent
from otel_agents import semconv as sc
from otel_agents.testing import OtlpSink, attributes_to_dict, make_tracer_provider


@pytest.fixture
def sink() -> Iterator[OtlpSink]:
    with OtlpSink() as s:
        yield s


def _emit_trace(exporter: SpanExporter) -> str:
    """Exports a two-span trace synchronously and returns its hex trace id."""
    provider = TracerProvider(resource=Resource({"service.name": "unit"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("unit-test")
    with tracer.start_as_current_span("parent", kind=SpanKind.SERVER) as parent:
        parent.set_attribute("tags", ["a", "b"])
        parent.add_event("agent.decision", {"agent.decision.chosen": "x"})
        with tracer.start_as_current_span("child") as child:
            child.set_attribute("n", 3)
    provider.shutdown()
    return format(parent.get_span_context().trace_id, "032x")


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


class TestOtlpSink:
    """OtlpSink receives real OTLP exports and exposes them decoded."""

    def test_binds_ephemeral_loopback_ports(self, sink: OtlpSink) -> None:
        """Both transports listen on distinct OS-chosen ports on 127.0.0.1."""
        assert sink.grpc_port > 0 and sink.http_port > 0
        assert sink.grpc_port != sink.http_port
        assert sink.grpc_endpoint == f"http://127.0.0.1:{sink.grpc_port}"

    def test_grpc_trace_export_is_recorded(self, sink: OtlpSink) -> None:
        """A span exported by the SDK's gRPC exporter arrives with attributes, events, resource and parentage."""
        trace_id = _emit_trace(GrpcSpanExporter(endpoint=sink.grpc_endpoint, insecure=True))
        spans = sink.wait_for_spans(2, timeout=10)
        by_name = {s.name: s for s in spans}
        parent, child = by_name["parent"], by_name["child"]
        assert parent.transport == "grpc"
        assert parent.trace_id == trace_id == child.trace_id
        assert child.parent_span_id == parent.span_id
        assert parent.parent_span_id == ""
        assert parent.kind == 2  # SPAN_KIND_SERVER
        assert parent.attributes["tags"] == ["a", "b"]
        assert parent.events == [("agent.decision", {"agent.decision.chosen": "x"})]
        assert child.attributes == {"n": 3}
        assert parent.service_name == "unit"
        assert parent.scope_name == "unit-test"
        assert list(sink.traces()) == [trace_id]

    def test_http_protobuf_gzip_export_is_recorded(self, sink: OtlpSink) -> None:
        """The SDK's OTLP/HTTP exporter with gzip compression delivers to /v1/traces."""
        exporter = HttpSpanExporter(
            endpoint=f"{sink.http_endpoint}/v1/traces", compression=Compression.Gzip
        )
        _emit_trace(exporter)
        spans = sink.wait_for_spans(2, timeout=10)
        assert {s.transport for s in spans} == {"http"}
        request = sink.requests("traces")[0]
        assert request.headers["content-encoding"] == "gzip"

    def test_http_json_with_hex_ids(self, sink: OtlpSink) -> None:
        """OTLP/JSON bodies with hex trace/span ids decode to the right bytes and get a JSON reply."""
        body = {
            "resourceSpans": [
                {
                    "resource": {
                        "attributes": [{"key": "service.name", "value": {"stringValue": "js"}}]
                    },
                    "scopeSpans": [
                        {
                            "scope": {"name": "s"},
                            "spans": [
                                {
                                    "traceId": "5b8efff798038103d269b633813fc60c",
                                    "spanId": "eee19b7ec3c1b174",
                                    "parentSpanId": "",
                                    "name": "json-span",
                                    "kind": 3,
                                    "startTimeUnixNano": "1000",
                                    "endTimeUnixNano": "3000",
                                }
                            ],
                        }
                    ],
                }
            ]
        }
        status, reply = _post(
            f"{sink.http_endpoint}/v1/traces",
            json.dumps(body).encode(),
            {"Content-Type": "application/json"},
        )
        assert status == 200
        assert json.loads(reply) == {}
        (span,) = sink.spans()
        assert span.trace_id == "5b8efff798038103d269b633813fc60c"
        assert span.span_id == "eee19b7ec3c1b174"
        assert span.duration_s == pytest.approx(2e-6)
        assert span.service_name == "js"

    def test_bad_requests_are_refused_and_not_recorded(self, sink: OtlpSink) -> None:
        """Undecodable bodies get 400, unknown paths 404, unknown media types 415; none is recorded."""
        base = sink.http_endpoint
        proto = {"Content-Type": "application/x-protobuf"}
        assert _post(f"{base}/v1/traces", b"\xff\xff\xff", proto)[0] == 400
        assert (
            _post(f"{base}/v1/traces", b"not gzip", {**proto, "Content-Encoding": "gzip"})[0] == 400
        )
        assert _post(f"{base}/v1/other", b"", proto)[0] == 404
        assert _post(f"{base}/v1/traces", b"", {"Content-Type": "text/plain"})[0] == 415
        assert sink.requests() == []

    def test_gzip_protobuf_request_by_hand(self, sink: OtlpSink) -> None:
        """A hand-built gzip protobuf request is decoded and answered with a protobuf response."""
        request = trace_service_pb2.ExportTraceServiceRequest()
        span = request.resource_spans.add().scope_spans.add().spans.add()
        span.trace_id = bytes(range(16))
        span.span_id = bytes(range(8))
        span.name = "by-hand"
        status, reply = _post(
            f"{sink.http_endpoint}/v1/traces",
            gzip.compress(request.SerializeToString()),
            {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
        )
        assert status == 200
        trace_service_pb2.ExportTraceServiceResponse().ParseFromString(reply)
        assert [s.name for s in sink.spans()] == ["by-hand"]

    def test_metrics_and_logs_over_grpc(self, sink: OtlpSink) -> None:
        """Metric and log exports are recorded under their own signals."""
        reader = PeriodicExportingMetricReader(
            GrpcMetricExporter(endpoint=sink.grpc_endpoint, insecure=True),
            export_interval_millis=60_000,
        )
        meter_provider = MeterProvider(metric_readers=[reader])
        meter_provider.get_meter("m").create_counter("demo.counter").add(2)
        meter_provider.shutdown()  # final collection exports once

        logger_provider = LoggerProvider()
        logger_provider.add_log_record_processor(
            SimpleLogRecordProcessor(GrpcLogExporter(endpoint=sink.grpc_endpoint, insecure=True))
        )
        logger_provider.get_logger("l").emit(body="hello", event_name="agent.task.start")
        logger_provider.shutdown()

        sink.wait_for(lambda s: s.requests("metrics") and s.requests("logs"), timeout=10)
        assert "demo.counter" in sink.metric_names()
        (record,) = sink.log_records()
        assert record.body.string_value == "hello"
        assert sink.spans() == []

    def test_wait_for_spans_times_out_with_a_count(self, sink: OtlpSink) -> None:
        """Waiting for more spans than arrive raises TimeoutError naming how many came, promptly."""
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="0 of 1 spans"):
            sink.wait_for_spans(1, timeout=0.2)
        assert time.monotonic() - started < 2.0

    def test_clear_and_restart(self) -> None:
        """clear() forgets requests; stop() is idempotent and keeps what was recorded."""
        sink = OtlpSink(http=False).start()
        _emit_trace(GrpcSpanExporter(endpoint=sink.grpc_endpoint, insecure=True))
        sink.wait_for_spans(2)
        sink.stop()
        sink.stop()
        assert len(sink.spans()) == 2
        sink.clear()
        assert sink.spans() == []
        with pytest.raises(RuntimeError):
            _ = sink.http_port

    def test_refusal_makes_the_grpc_exporter_retry_after_the_advertised_delay(
        self, sink: OtlpSink
    ) -> None:
        """A refused gRPC export gets UNAVAILABLE + RetryInfo; the SDK exporter waits and retries."""
        sink.refuse_next(1, retry_after=0.3)
        started = time.monotonic()
        _emit_trace(GrpcSpanExporter(endpoint=sink.grpc_endpoint, insecure=True, timeout=10))
        elapsed = time.monotonic() - started
        assert sink.refused == 1
        assert len(sink.wait_for_spans(2)) == 2  # the retry delivered, once
        assert len(sink.requests("traces")) == 2  # one per span (SimpleSpanProcessor), none lost
        assert elapsed >= 0.3  # the exporter honoured the RetryInfo delay

    def test_refusal_over_http_is_503_with_retry_after(self, sink: OtlpSink) -> None:
        """A refused HTTP export is 503 with Retry-After in whole seconds, and is not recorded."""
        sink.refuse_next(1, retry_after=0.2)
        request = trace_service_pb2.ExportTraceServiceRequest()
        req = urllib.request.Request(
            f"{sink.http_endpoint}/v1/traces",
            data=request.SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"},
            method="POST",
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=5)
        assert refused.value.code == 503
        assert refused.value.headers["Retry-After"] == "1"
        refused.value.close()
        assert sink.requests() == [] and sink.refused == 1
        assert (
            _post(
                f"{sink.http_endpoint}/v1/traces",
                request.SerializeToString(),
                {"Content-Type": "application/x-protobuf"},
            )[0]
            == 200
        )

    def test_needs_a_transport(self) -> None:
        """Disabling both transports is a constructor error."""
        with pytest.raises(ValueError, match="at least one"):
            OtlpSink(grpc=False, http=False)


def test_attributes_to_dict_decodes_nested_values() -> None:
    """Arrays and key-value lists decode to lists and dicts."""
    request = trace_service_pb2.ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    kv = span.attributes.add()
    kv.key = "list"
    kv.value.array_value.values.add().int_value = 1
    kv.value.array_value.values.add().string_value = "x"
    nested = span.attributes.add()
    nested.key = "map"
    inner = nested.value.kvlist_value.values.add()
    inner.key = "k"
    inner.value.double_value = 0.5
    assert attributes_to_dict(span.attributes) == {"list": [1, "x"], "map": {"k": 0.5}}


class TestMakeTracerProvider:
    """make_tracer_provider wires the otel-agents processors in front of an in-memory exporter."""

    def test_inference_spans_are_priced_and_others_are_not(self) -> None:
        """A chat span gets a positive USD cost; the enclosing agent span gets none."""
        provider, memory = make_tracer_provider()
        with (
            invoke_agent("planner", tracer_provider=provider),
            chat("gpt-4o", provider="openai", tracer_provider=provider) as llm,
        ):
            llm.record_usage(input_tokens=1000, output_tokens=200)
        provider.shutdown()
        spans = {s.name: s for s in memory.get_finished_spans()}
        llm_attrs = spans["chat gpt-4o"].attributes or {}
        assert llm_attrs[sc.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx(
            0.0045
        )  # $2.50/M in, $10/M out
        assert llm_attrs[sc.GEN_AI_USAGE_COST_CURRENCY] == "USD"
        assert sc.GEN_AI_USAGE_COST_AMOUNT not in (spans["invoke_agent planner"].attributes or {})

    def test_agent_identity_reaches_foreign_spans(self) -> None:
        """A span started with a plain tracer inside an agent carries that agent's identity."""
        provider, memory = make_tracer_provider()
        tracer = provider.get_tracer("third-party")
        with (
            invoke_agent("researcher", agent_id="r-1", tracer_provider=provider),
            tracer.start_as_current_span("HTTP GET"),
        ):
            pass
        provider.shutdown()
        (http_span,) = [s for s in memory.get_finished_spans() if s.name == "HTTP GET"]
        assert (http_span.attributes or {})[sc.GEN_AI_AGENT_NAME] == "researcher"
        assert (http_span.attributes or {})[sc.GEN_AI_AGENT_ID] == "r-1"

    def test_extra_exporter_gets_the_same_enriched_spans_over_otlp(self) -> None:
        """An extra OTLP exporter pointed at an OtlpSink receives the priced span too."""
        with OtlpSink(http=False) as sink:
            provider, memory = make_tracer_provider(
                exporter=GrpcSpanExporter(endpoint=sink.grpc_endpoint, insecure=True),
                resource=Resource({"service.name": "custom"}),
            )
            with chat("gpt-4o-mini", provider="openai", tracer_provider=provider) as llm:
                llm.record_usage(input_tokens=100, output_tokens=10)
            provider.shutdown()
            (received,) = sink.wait_for_spans(1)
        (local,) = memory.get_finished_spans()
        assert received.service_name == "custom"
        assert (
            received.attributes[sc.GEN_AI_USAGE_COST_AMOUNT]
            == (local.attributes or {})[sc.GEN_AI_USAGE_COST_AMOUNT]
        )

    def test_cost_can_be_turned_off(self) -> None:
        """cost=False leaves inference spans unpriced."""
        provider, memory = make_tracer_provider(cost=False)
        with chat("gpt-4o", provider="openai", tracer_provider=provider) as llm:
            llm.record_usage(input_tokens=10, output_tokens=1)
        provider.shutdown()
        (span,) = memory.get_finished_spans()
        assert sc.GEN_AI_USAGE_COST_AMOUNT not in (span.attributes or {})
