# SPDX-License-Identifier: Apache-2.0
"""Zero-code: `opentelemetry-instrument python app.py` picks otel_agents up via its entry point."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otel_agents
from otel_agents import semconv as sc
from otel_agents._autoinstrument import install, post_instrument
from otel_agents.testing import OtlpSink, ReceivedSpan
from tests.otel_agents._sdk_fixtures import run_zero_code

# The application knows nothing about otel_agents: it only uses the OpenTelemetry API.
APP = """
from opentelemetry import trace
from opentelemetry.trace import SpanKind

tracer = trace.get_tracer("my.llm.client")
with tracer.start_as_current_span("invoke_agent support", attributes={
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support"}):
    with tracer.start_as_current_span("chat gpt-4o", kind=SpanKind.CLIENT, attributes={
            "gen_ai.operation.name": "chat", "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o-2024-08-06",
            "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 200,
            "gen_ai.usage.cache_read_input_tokens": 800}):
        pass
    with tracer.start_as_current_span("ChatCompletion", attributes={
            "openinference.span.kind": "LLM", "llm.model_name": "claude-3-5-haiku",
            "llm.provider": "anthropic", "llm.token_count.prompt": 500,
            "llm.token_count.completion": 50}):
        pass
    with tracer.start_as_current_span("chat mystery-model", attributes={
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "mystery-model",
            "gen_ai.usage.input_tokens": 1, "gen_ai.usage.output_tokens": 1}):
        pass
trace.get_tracer_provider().shutdown()
"""


@pytest.fixture(scope="module")
def sink() -> Iterator[OtlpSink]:
    with OtlpSink() as s:
        yield s


def attributes_by_name(sink: OtlpSink, service: str, n: int) -> dict[str, dict[str, Any]]:
    """Wait for ``n`` spans of one ``service.name``; their attributes by span name."""

    def enough(s: OtlpSink) -> list[ReceivedSpan]:
        mine = [x for x in s.spans() if x.service_name == service]
        return mine if len(mine) >= n else []

    return {x.name: x.attributes for x in sink.wait_for(enough, 15.0)}


def run_instrumented(tmp_path: Path, sink: OtlpSink, service: str, **env: str) -> str:
    app = tmp_path / "app.py"
    app.write_text(textwrap.dedent(APP))
    out = run_zero_code(app, sink.grpc_endpoint, service, **env)
    assert out.returncode == 0, out.stderr
    return out.stderr


def test_entry_point_is_registered() -> None:
    """The installed distribution declares the opentelemetry_post_instrument hook."""
    names = {ep.value for ep in entry_points(group="opentelemetry_post_instrument")}
    assert "otel_agents._autoinstrument:post_instrument" in names


def test_zero_code_spans_are_normalized_and_priced(tmp_path: Path, sink: OtlpSink) -> None:
    """Under opentelemetry-instrument, an API-only app's LLM spans arrive normalized and priced."""
    run_instrumented(tmp_path, sink, "zero-code-app")
    mine = attributes_by_name(sink, "zero-code-app", 4)
    chat = mine["chat gpt-4o"]
    assert chat[sc.GEN_AI_PROVIDER_NAME] == "openai"
    assert chat[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 800
    # gpt-4o: $2.5/M input, $1.25/M cached input, $10/M output.
    expected = 200 * 2.5e-6 + 800 * 1.25e-6 + 200 * 10e-6
    assert chat[sc.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx(expected)
    assert chat[sc.GEN_AI_USAGE_COST_SOURCE] == "local"
    oi = mine["ChatCompletion"]
    assert oi[sc.GEN_AI_OPERATION_NAME] == "chat"
    assert oi[sc.GEN_AI_USAGE_INPUT_TOKENS] == 500
    assert oi[sc.GEN_AI_USAGE_COST_AMOUNT] > 0
    assert mine["chat mystery-model"][sc.AGENT_COST_UNPRICED] is True
    assert sc.GEN_AI_USAGE_COST_AMOUNT not in mine["invoke_agent support"]


def test_zero_code_can_be_switched_off(tmp_path: Path, sink: OtlpSink) -> None:
    """OTEL_AGENTS_ENABLED=false leaves the pipeline exactly as the SDK configured it."""
    run_instrumented(tmp_path, sink, "zero-code-off", OTEL_AGENTS_ENABLED="false")
    mine = attributes_by_name(sink, "zero-code-off", 4)
    assert sc.GEN_AI_USAGE_COST_AMOUNT not in mine["chat gpt-4o"]
    assert "llm.token_count.prompt" in mine["ChatCompletion"]


def test_install_is_idempotent_and_never_raises() -> None:
    """install() attaches once per provider; post_instrument swallows failures."""
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    first = install(provider)
    assert first is not None
    assert install(provider) is None
    with (
        otel_agents.invoke_agent("solo", tracer_provider=provider),
        otel_agents.chat("gpt-4o", tracer_provider=provider) as llm,
    ):
        llm.record_usage(input_tokens=10, output_tokens=1)
    priced = [s for s in exporter.get_finished_spans() if s.name == "chat gpt-4o"]
    assert len(priced) == 1  # enriched once, exported once
    assert priced[0].attributes[sc.GEN_AI_USAGE_COST_AMOUNT] > 0
    post_instrument()  # global provider is the API proxy here: nothing to attach, no error


def test_bad_prices_file_degrades_to_bundled_prices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Zero-code with an invalid OTEL_AGENTS_PRICES_FILE logs the error and still enriches with genai-prices."""
    bad = tmp_path / "prices.yaml"
    bad.write_text("models:\n  m:\n    input: cheap\n")
    monkeypatch.setenv("OTEL_AGENTS_PRICES_FILE", str(bad))
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with caplog.at_level("ERROR", logger="otel_agents"):
        assert install(provider) is not None
    assert any("models.m.input" in (r.exc_text or "") for r in caplog.records)
    with otel_agents.chat("gpt-4o", tracer_provider=provider) as llm:
        llm.record_usage(input_tokens=1000, output_tokens=0)
    (span,) = exporter.get_finished_spans()
    assert span.attributes[sc.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx(0.0025)
