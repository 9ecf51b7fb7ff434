# SPDX-License-Identifier: Apache-2.0
"""configure(): attaches to existing providers, honours the standard OTEL_* variables, idempotent."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otel_agents
from otel_agents import semconv as sc
from otel_agents.testing import OtlpSink, ReceivedSpan
from tests.otel_agents._sdkcore_helpers import provider_with_memory, subprocess_env


@pytest.fixture(scope="module")
def sink() -> Iterator[OtlpSink]:
    with OtlpSink() as s:
        yield s


def spans_of(sink: OtlpSink, service: str) -> list[ReceivedSpan]:
    """Wait for the spans of one ``service.name`` (the sink is shared by the module's tests)."""
    return sink.wait_for(lambda s: [x for x in s.spans() if x.service_name == service], 15.0)


def run_app(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_attaches_to_given_provider_and_is_idempotent() -> None:
    """With an existing provider, configure() enriches what its exporter sends and returns one handle."""
    provider, exporter = provider_with_memory()
    handle = otel_agents.configure(tracer_provider=provider, metrics=False)
    try:
        assert otel_agents.configure(tracer_provider=provider) is handle
        assert handle.tracer_provider is provider and not handle.created_provider
        with (
            otel_agents.invoke_agent("a", tracer_provider=provider),
            otel_agents.chat("gpt-4o", "openai", tracer_provider=provider) as llm,
        ):
            llm.record_usage(input_tokens=1000, output_tokens=0)
        spans = {s.name: s for s in exporter.get_finished_spans()}
        assert spans["chat gpt-4o"].attributes[sc.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx(0.0025)
    finally:
        handle.shutdown()
    # The provider belongs to the caller: still usable after our shutdown.
    with provider.get_tracer("x").start_as_current_span("after"):
        pass
    assert exporter.get_finished_spans()[-1].name == "after"
    again = otel_agents.configure(tracer_provider=provider, metrics=False)
    assert again is not handle
    again.shutdown()


def test_agent_metrics_are_chained_behind_the_enricher() -> None:
    """The metrics processor sees priced spans: agent.cost sums the locally computed cost."""
    provider, _ = provider_with_memory()
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    handle = otel_agents.configure(tracer_provider=provider, meter_provider=meters)
    try:
        with otel_agents.chat("gpt-4o", "openai", tracer_provider=provider) as llm:
            llm.record_usage(input_tokens=1000, output_tokens=100)
        # Metrics are recorded off the application thread; flushing delivers what is pending.
        assert handle.force_flush(5000)
        data = reader.get_metrics_data()
        points = [
            p.value
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
            if m.name == sc.METRIC_AGENT_COST
            for p in m.data.data_points
        ]
        assert points == [pytest.approx(1000 * 2.5e-6 + 100 * 10e-6)]
    finally:
        handle.shutdown()
        meters.shutdown()


def test_handle_exposes_the_metrics_processor_for_a_budget_guard() -> None:
    """Configured.metrics_processor is the chained metrics processor, and a guard fed from it sees priced spend."""
    from otel_agents._budget import Budget, BudgetGuard
    from otel_agents._metrics import AgentMetricsProcessor

    provider, _ = provider_with_memory()
    meters = MeterProvider()
    handle = otel_agents.configure(tracer_provider=provider, meter_provider=meters)
    try:
        assert isinstance(handle.metrics_processor, AgentMetricsProcessor)
        guard = BudgetGuard([Budget(1.0)]).feed_from(handle.metrics_processor)
        with otel_agents.chat("gpt-4o", "openai", tracer_provider=provider) as llm:
            llm.record_usage(input_tokens=1000, output_tokens=100)
        assert handle.force_flush(5000)
        assert guard.spent() == pytest.approx(1000 * 2.5e-6 + 100 * 10e-6)
    finally:
        handle.shutdown()
        meters.shutdown()
    provider2, _ = provider_with_memory()
    handle2 = otel_agents.configure(tracer_provider=provider2, metrics=False)
    try:
        assert handle2.metrics_processor is None
    finally:
        handle2.shutdown()


def test_invalid_protocol_and_exporter_are_config_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unknown protocol or exporter arguments fail fast with ConfigError naming the value."""
    provider, _ = provider_with_memory()
    with pytest.raises(otel_agents.ConfigError, match="protocol"):
        otel_agents.configure(tracer_provider=provider, protocol="carrier-pigeon")
    with pytest.raises(otel_agents.ConfigError, match="zipkin_json"):
        otel_agents.configure(tracer_provider=provider, exporter="otlp,zipkin_json")
    # A variable meant for someone else's exporter set-up is not ours to reject when attaching.
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin_json")
    handle = otel_agents.configure(tracer_provider=provider, metrics=False)
    try:
        assert handle.mode in ("wrapped", "on_ending")
    finally:
        handle.shutdown()


def test_sdk_disabled_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_SDK_DISABLED=true makes configure() a no-op."""
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    handle = otel_agents.configure()
    try:
        assert handle.mode == "disabled" and handle.tracer_provider is None
    finally:
        handle.shutdown()


def test_creates_provider_from_env_grpc(sink: OtlpSink) -> None:
    """With no provider set, configure() creates one exporting OTLP/gRPC per the OTEL_* variables."""
    out = run_app(
        """
        import otel_agents
        from opentelemetry import trace
        handle = otel_agents.configure()
        assert handle.created_provider and trace.get_tracer_provider() is handle.tracer_provider
        with otel_agents.invoke_agent("env-agent"):
            with otel_agents.chat("gpt-4o", "openai") as llm:
                llm.record_usage(input_tokens=2000, output_tokens=100)
        handle.shutdown()
        """,
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{sink.grpc_port}",
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
        OTEL_EXPORTER_OTLP_HEADERS="authorization=Bearer%20s3cret",
        OTEL_SERVICE_NAME="svc-grpc",
    )
    assert out.returncode == 0, out.stderr
    mine = {s.name: s for s in spans_of(sink, "svc-grpc")}
    chat = mine["chat gpt-4o"].attributes
    assert chat[sc.GEN_AI_AGENT_NAME] == "env-agent"
    assert chat[sc.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx(2000 * 2.5e-6 + 100 * 10e-6)
    assert any(
        m.get("authorization") == "Bearer s3cret" for m in (r.headers for r in sink.requests())
    )


def test_creates_provider_http_by_default_and_argument_wins(sink: OtlpSink) -> None:
    """Without a protocol variable the spec default http/protobuf is used; service_name beats OTEL_SERVICE_NAME."""
    out = run_app(
        """
        import otel_agents
        handle = otel_agents.configure(service_name="svc-arg")
        with otel_agents.execute_tool("lookup", arguments={"id": 1}):
            pass
        handle.shutdown()
        """,
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{sink.http_port}",
        OTEL_SERVICE_NAME="svc-env",
    )
    assert out.returncode == 0, out.stderr
    (tool,) = spans_of(sink, "svc-arg")
    assert tool.name == "execute_tool lookup"
    assert tool.attributes[sc.AGENT_TOOL_ARGS_HASH] == otel_agents.tool_args_hash({"id": 1})
    assert any(
        m.get("content-type") == "application/x-protobuf"
        for m in (r.headers for r in sink.requests())
    )


def test_never_replaces_a_global_provider_set_by_someone_else(sink: OtlpSink) -> None:
    """A global SDK provider set by another library is kept, and its exporter receives enriched spans."""
    out = run_app(
        f"""
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        theirs = TracerProvider(resource=Resource.create({{"service.name": "svc-theirs"}}))
        theirs.add_span_processor(BatchSpanProcessor(
            OTLPSpanExporter(endpoint="http://127.0.0.1:{sink.grpc_port}", insecure=True)))
        trace.set_tracer_provider(theirs)

        import otel_agents
        handle = otel_agents.configure(service_name="ignored")
        assert trace.get_tracer_provider() is theirs and handle.tracer_provider is theirs
        assert not handle.created_provider
        tracer = trace.get_tracer("other.lib")
        with tracer.start_as_current_span("llm", attributes={{
            "gen_ai.operation.name": "chat", "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.prompt_tokens": 1000,
            "gen_ai.usage.completion_tokens": 0}}):
            pass
        handle.shutdown()
        theirs.shutdown()
        print(handle.mode)
        """,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in ("wrapped", "on_ending")
    (llm,) = spans_of(sink, "svc-theirs")
    assert llm.attributes[sc.GEN_AI_PROVIDER_NAME] == "openai"
    assert llm.attributes[sc.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx(1000 * 0.15e-6)


def test_explicit_span_exporter_is_wrapped() -> None:
    """A span_exporter passed to configure() on an existing provider receives enriched spans."""
    provider, _ = provider_with_memory()
    exporter = InMemorySpanExporter()
    handle = otel_agents.configure(tracer_provider=provider, span_exporter=exporter, metrics=False)
    try:
        with provider.get_tracer("x").start_as_current_span(
            "llm", attributes={"openinference.span.kind": "LLM", "llm.token_count.prompt": 3}
        ):
            pass
        assert handle.force_flush(5000)
        (span,) = exporter.get_finished_spans()
        assert span.attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] == 3
    finally:
        handle.shutdown()


def test_configure_after_zero_code_hook_does_not_attach_twice() -> None:
    """When the zero-code hook already enriches the provider, configure() adds nothing (no double metrics)."""
    from otel_agents._autoinstrument import install

    provider, exporter = provider_with_memory()
    assert install(provider) is not None
    handle = otel_agents.configure(tracer_provider=provider, metrics=False)
    try:
        assert handle.mode == "already_attached"
        processors = provider._active_span_processor._span_processors
        with otel_agents.chat("gpt-4o", "openai", tracer_provider=provider) as llm:
            llm.record_usage(input_tokens=10, output_tokens=1)
        assert provider._active_span_processor._span_processors == processors
        (span,) = exporter.get_finished_spans()
        assert span.attributes[sc.GEN_AI_USAGE_COST_SOURCE] == "local"
    finally:
        handle.shutdown()


def test_bad_prices_file_fails_configure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Code-based set-up validates the prices file up front and names the bad key."""
    bad = tmp_path / "prices.yaml"
    bad.write_text("models:\n  m:\n    input: 1\n")
    monkeypatch.setenv("OTEL_AGENTS_PRICES_FILE", str(bad))
    provider, _ = provider_with_memory()
    with pytest.raises(otel_agents.ConfigError, match="output"):
        otel_agents.configure(tracer_provider=provider, metrics=False)


def test_exporter_list_from_env_builds_each_exporter(sink: OtlpSink) -> None:
    """OTEL_TRACES_EXPORTER=console,otlp_proto_http exports every span to both, enriched."""
    out = run_app(
        """
        import otel_agents
        handle = otel_agents.configure(metrics=False)
        with otel_agents.chat("gpt-4o", "openai") as llm:
            llm.record_usage(input_tokens=100, output_tokens=0)
        handle.shutdown()
        """,
        OTEL_TRACES_EXPORTER="console,otlp_proto_http",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"http://127.0.0.1:{sink.http_port}/v1/traces",
        OTEL_SERVICE_NAME="svc-two-exporters",
    )
    assert out.returncode == 0, out.stderr
    assert '"gen_ai.usage.cost.amount"' in out.stdout  # the console exporter's JSON
    (chat,) = spans_of(sink, "svc-two-exporters")
    assert chat.attributes[sc.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx(100 * 2.5e-6)
