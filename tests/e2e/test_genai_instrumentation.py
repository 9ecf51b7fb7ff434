# SPDX-License-Identifier: Apache-2.0
"""The official OpenTelemetry GenAI OpenAI instrumentation, end to end through our receiver.

The real ``openai`` client talks to a local OpenAI-compatible provider on loopback; the official
instrumentation (``opentelemetry-instrumentation-genai-openai``) traces it on a plain SDK
``TracerProvider`` — no otel-agents processor, so the spans arrive *unpriced*, as third-party
spans do — and the official OTLP/HTTP exporters send traces and metrics to a real
``otel_agents.receiver.Receiver``, which forwards them to a recording OTLP sink.

Asserted: the forwarded spans are the ones the instrumentation made, byte for byte in ids and
attributes (the receiver adds nothing on the forwarding path); the receiver priced them itself
(cached input tokens at the cache-read rate, checked against ``genai-prices`` directly) and
shows tokens, cost, calls and the agent graph on ``/metrics`` and ``/api/v1/agents``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from otel_agents import semconv as sc
from tests.e2e._clients_fake_openai import FakeOpenAI, Usage
from tests.e2e.conftest import (
    RunningReceiver,
    Samples,
    http_get,
    require,
    run_forwarding_receiver,
    sample_sum,
    wait_for_sample,
    wait_until,
)

pytestmark = pytest.mark.e2e

REQUEST_MODEL = "gpt-4o-mini"
RESPONSE_MODEL = "gpt-4o-mini-2024-07-18"
AGENT = "support"
SERVICE = "support-bot"
# Four calls: one mostly served from the prompt cache, one plain, one with reasoning tokens, and
# a streamed one whose usage comes in the stream's last chunk.
USAGES = (
    Usage(prompt_tokens=1200, completion_tokens=300, cached_tokens=1000),
    Usage(prompt_tokens=800, completion_tokens=200),
    Usage(prompt_tokens=1500, completion_tokens=100, cached_tokens=1280, reasoning_tokens=64),
    Usage(prompt_tokens=2000, completion_tokens=150, cached_tokens=1536),
)
STREAMED = 3  # index of the streamed call


def _instrumentor() -> Any:
    try:
        from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor
    except ImportError as exc:
        require(
            False,
            f"opentelemetry-instrumentation-genai-openai is not installed ({exc}; "
            "pip install -e '.[test]')",
        )
        raise
    return OpenAIInstrumentor()


@dataclass
class Run:
    """One application run against the receiver: what it sent and where it went."""

    rx: RunningReceiver
    sink: Any  # otel_agents.testing.OtlpSink
    sent: list[ReadableSpan]
    provider_requests: list[dict[str, Any]]
    samples: Samples  # /metrics once the trace completed


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """The app run once against our receiver (ephemeral ports), which forwards to an in-process
    OTLP sink over gRPC; yields once the receiver has completed the trace."""
    instrumentor = _instrumentor()
    with run_forwarding_receiver(tmp_path_factory.mktemp("genai") / "receiver") as (rx, sink):
        with FakeOpenAI(RESPONSE_MODEL, USAGES) as fake:
            sent = _run_app(rx, fake, instrumentor)
        samples = wait_for_sample(
            rx.admin_url,
            "otel_agents_traces_completed_total",
            1,
            timeout=20,
            what="the trace analysed",
        )
        yield Run(rx, sink, sent, list(fake.requests), samples)


def _run_app(rx: RunningReceiver, fake: FakeOpenAI, instrumentor: Any) -> list[ReadableSpan]:
    """The application: an agent span around four chat calls (one streamed) by the real openai client.

    Returns the spans exactly as the instrumentation finished them (a second, in-memory
    exporter on the same provider records what was handed to the OTLP exporter).
    """
    import openai

    resource = Resource.create({"service.name": SERVICE})
    sent = InMemorySpanExporter()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(sent))
    tracer_provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{rx.http_url}/v1/traces", timeout=10))
    )
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{rx.http_url}/v1/metrics", timeout=10),
        export_interval_millis=60_000,  # exported once, at shutdown
    )
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        client = openai.OpenAI(base_url=fake.base_url, api_key="sk-local", max_retries=0)
        tracer = tracer_provider.get_tracer("support-app")
        with tracer.start_as_current_span(
            f"{sc.OP_INVOKE_AGENT} {AGENT}",
            kind=SpanKind.INTERNAL,
            attributes={sc.GEN_AI_OPERATION_NAME: sc.OP_INVOKE_AGENT, sc.GEN_AI_AGENT_NAME: AGENT},
        ):
            for i in range(len(USAGES)):
                messages: Any = [{"role": "user", "content": f"question {i}"}]
                if i == STREAMED:
                    stream = client.chat.completions.create(
                        model=REQUEST_MODEL,
                        messages=messages,
                        stream=True,
                        stream_options={"include_usage": True},
                    )
                    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
                else:
                    reply = client.chat.completions.create(model=REQUEST_MODEL, messages=messages)
                    text = reply.choices[0].message.content or ""
                assert text == f"answer {i + 1}"
        client.close()
    finally:
        instrumentor.uninstrument()
        tracer_provider.shutdown()  # flushes the batch processor
        meter_provider.shutdown()  # one final metric export
    return list(sent.get_finished_spans())


def _python(value: Any) -> Any:
    """SDK attribute values as the OTLP decoder gives them back (sequences as lists)."""
    return list(value) if isinstance(value, tuple) else value


def _expected_cost() -> float:
    """The calls priced by ``genai-prices`` directly (not through our PriceBook)."""
    from genai_prices import Usage as PriceUsage
    from genai_prices import calc_price

    total = Decimal(0)
    for u in USAGES:
        usage = PriceUsage(
            input_tokens=u.prompt_tokens,
            cache_read_tokens=u.cached_tokens,
            output_tokens=u.completion_tokens,
        )
        total += calc_price(usage, REQUEST_MODEL, provider_id="openai").total_price
    return float(total)


def _uncached_cost() -> float:
    """What the calls would cost if cached input were billed at the full input rate."""
    from genai_prices import Usage as PriceUsage
    from genai_prices import calc_price

    return float(
        sum(
            calc_price(
                PriceUsage(input_tokens=u.prompt_tokens, output_tokens=u.completion_tokens),
                REQUEST_MODEL,
                provider_id="openai",
            ).total_price
            for u in USAGES
        )
    )


def test_the_official_instrumentation_traced_the_real_client(run: Run) -> None:
    """The openai client reached the local provider and the official instrumentation made one
    unpriced CLIENT chat span per call (streamed too) with the provider's usage, under the agent
    span."""
    assert [r["model"] for r in run.provider_requests] == [REQUEST_MODEL] * len(USAGES)
    assert [bool(r.get("stream")) for r in run.provider_requests] == [
        i == STREAMED for i in range(len(USAGES))
    ]
    chats = [s for s in run.sent if s.name == f"{sc.OP_CHAT} {REQUEST_MODEL}"]
    assert len(chats) == len(USAGES) and len(run.sent) == len(USAGES) + 1
    (agent,) = [s for s in run.sent if s not in chats]
    assert agent.context is not None
    assert all(s.kind is SpanKind.CLIENT for s in chats)
    assert all(s.parent is not None and s.parent.span_id == agent.context.span_id for s in chats)
    usage_keys = (
        sc.GEN_AI_USAGE_INPUT_TOKENS,
        sc.GEN_AI_USAGE_OUTPUT_TOKENS,
        sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
        sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
    )
    assert [tuple((s.attributes or {}).get(k, 0) for k in usage_keys) for s in chats] == [
        (u.prompt_tokens, u.completion_tokens, u.cached_tokens, u.reasoning_tokens) for u in USAGES
    ]
    assert all(sc.GEN_AI_USAGE_COST_AMOUNT not in (s.attributes or {}) for s in chats)
    assert {(s.attributes or {}).get(sc.GEN_AI_RESPONSE_MODEL) for s in chats} == {RESPONSE_MODEL}


def test_spans_and_metrics_are_forwarded_unchanged(run: Run) -> None:
    """The sink behind the receiver gets every span with the ids, parents, kinds, names,
    attributes and resource the instrumentation gave it, and the instrumentation's metrics."""
    forwarded = {s.span_id: s for s in run.sink.wait_for_spans(len(run.sent), timeout=15)}
    assert len(forwarded) == len(run.sent)
    for s in run.sent:
        ctx = s.get_span_context()
        assert ctx is not None
        got = forwarded[f"{ctx.span_id:016x}"]
        assert got.trace_id == f"{ctx.trace_id:032x}"
        assert got.parent_span_id == (f"{s.parent.span_id:016x}" if s.parent else "")
        assert (got.name, got.kind) == (s.name, s.kind.value + 1)  # OTLP kinds are SDK + 1
        assert got.attributes == {k: _python(v) for k, v in (s.attributes or {}).items()}
        assert got.service_name == SERVICE
    wait_until(
        lambda: "gen_ai.client.token.usage" in run.sink.metric_names(),
        timeout=15,
        what="gen_ai.client.token.usage forwarded",
    )


def test_receiver_prices_and_counts_the_third_party_spans(run: Run) -> None:
    """/metrics: the receiver priced the unpriced spans itself (cache reads at their own rate,
    as genai-prices prices them), counted their tokens and calls, and completed the trace."""
    expected_cost, uncached = _expected_cost(), _uncached_cost()
    assert expected_cost < uncached  # the cached tokens make a difference worth asserting
    samples, model = run.samples, {"model": REQUEST_MODEL}
    assert sample_sum(samples, "otel_agents_tokens_total", token_type="input", **model) == sum(
        u.prompt_tokens for u in USAGES
    )
    assert sample_sum(samples, "otel_agents_tokens_total", token_type="output", **model) == sum(
        u.completion_tokens for u in USAGES
    )
    cost = sample_sum(samples, "otel_agents_cost_usd_total", **model)
    assert math.isclose(cost, expected_cost, rel_tol=1e-9), (cost, expected_cost, uncached)
    assert sample_sum(samples, "otel_agents_unpriced_calls_total") == 0
    calls = sample_sum(
        samples, "otel_agents_operation_calls_total", operation="model", name=REQUEST_MODEL
    )
    assert (
        calls
        == sample_sum(samples, "otel_agents_operation_calls_total", status="ok") - 1
        == len(USAGES)
    )
    assert sample_sum(samples, "otel_agents_traces_completed_total") == 1


def test_agents_api_attributes_cost_and_graph(run: Run) -> None:
    """/api/v1/agents: the user → support edge, and the calls' cost attributed to the agent
    the spans ran under (inherited from the parent span in the assembled trace)."""
    status, body = http_get(f"{run.rx.admin_url}/api/v1/agents")
    assert status == 200
    agents = json.loads(body)
    edges = {(e["client"], e["server"], e["connection_type"]) for e in agents["graph"]["edges"]}
    assert edges == {("user", AGENT, "agent")}
    (by_model,) = agents["cost_by_model"]
    assert (by_model["agent"], by_model["model"], by_model["calls"]) == (
        AGENT,
        REQUEST_MODEL,
        len(USAGES),
    )
    assert math.isclose(by_model["cost_usd"], _expected_cost(), rel_tol=1e-9)
    assert by_model["input_tokens"] == sum(u.prompt_tokens for u in USAGES)
    assert by_model["unpriced_calls"] == 0
    (top,) = agents["top_traces_by_cost"]
    ctx = run.sent[0].get_span_context()
    assert ctx is not None and top["trace_id"] == f"{ctx.trace_id:032x}"


def test_metrics_attribute_third_party_spans_to_their_agent(run: Run) -> None:
    """/metrics counts the chat calls' tokens and cost under the agent they ran in, as
    /api/v1/agents does."""
    labels = {"agent": AGENT, "model": REQUEST_MODEL}
    assert sample_sum(run.samples, "otel_agents_tokens_total", token_type="input", **labels) == sum(
        u.prompt_tokens for u in USAGES
    )
    assert math.isclose(
        sample_sum(run.samples, "otel_agents_cost_usd_total", **labels), _expected_cost()
    )
