# SPDX-License-Identifier: Apache-2.0
"""Enriching span processors: enriched copies, cost on inference spans only, identity, no raising."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import otel_agents
from otel_agents import (
    AgentIdentitySpanProcessor,
    EnrichingSpanProcessor,
    EnrichOnEndingSpanProcessor,
    PriceBook,
    SpanEnricher,
)
from otel_agents import semconv as sc
from otel_agents._processors import (
    MODE_ON_ENDING,
    MODE_UNSUPPORTED,
    MODE_WRAPPED,
    attach_to_provider,
    on_ending_can_mutate,
)
from tests.otel_agents._sdk_fixtures import fork_child, wait_child


class Recorder(SpanProcessor):
    """Keeps the spans it is handed in on_end (a real SpanProcessor, no mocking)."""

    def __init__(self) -> None:
        self.ended: list[ReadableSpan] = []
        self.started = 0
        self.flushed = 0
        self.shut = 0

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.started += 1

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self.flushed += 1
        return True

    def shutdown(self) -> None:
        self.shut += 1


class Exploding(SpanProcessor):
    """A next processor that fails in every callback."""

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        raise RuntimeError("on_start failed")

    def on_end(self, span: ReadableSpan) -> None:
        raise RuntimeError("on_end failed")

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        raise RuntimeError("flush failed")

    def shutdown(self) -> None:
        raise RuntimeError("shutdown failed")


class ExplodingPriceBook(PriceBook):
    def price(self, **kwargs: Any) -> Any:
        raise ArithmeticError("pricing bug")


def enriched_pipeline(**kwargs: Any) -> tuple[TracerProvider, InMemorySpanExporter, Recorder]:
    """Provider -> Enriching(Simple(InMemory)), plus a plain Recorder that sees the originals."""
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(EnrichingSpanProcessor(SimpleSpanProcessor(exporter), **kwargs))
    original = Recorder()
    provider.add_span_processor(original)
    return provider, exporter, original


def test_exporter_sees_enriched_copy_and_sdk_span_is_untouched() -> None:
    """The wrapped exporter gets normalized, priced attributes; the SDK's own span is not modified."""
    provider, exporter, original = enriched_pipeline()
    tracer = provider.get_tracer("third.party")
    with tracer.start_as_current_span(
        "ChatCompletion",
        kind=SpanKind.CLIENT,
        attributes={
            "openinference.span.kind": "LLM",
            "llm.model_name": "gpt-4o-mini",
            "llm.provider": "openai",
            "llm.token_count.prompt": 1000,
            "llm.token_count.completion": 100,
        },
    ):
        pass
    (span,) = exporter.get_finished_spans()
    attrs = span.attributes
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == 1000
    assert attrs[sc.GEN_AI_OPERATION_NAME] == sc.OP_CHAT
    assert attrs[sc.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx(1000 * 0.15e-6 + 100 * 0.6e-6)
    assert attrs[sc.GEN_AI_USAGE_COST_CURRENCY] == "USD"
    assert attrs[sc.GEN_AI_USAGE_COST_SOURCE] == "local"
    assert sc.AGENT_COST_PRICE_SOURCE not in attrs  # the default table: not exported
    (orig,) = original.ended
    assert "llm.token_count.prompt" in orig.attributes
    assert sc.GEN_AI_USAGE_COST_AMOUNT not in orig.attributes
    assert span.context == orig.context and span.name == orig.name
    assert (span.start_time, span.end_time, span.kind) == (
        orig.start_time,
        orig.end_time,
        orig.kind,
    )
    assert span.resource == orig.resource and hash(span.resource) == hash(orig.resource)
    assert span.instrumentation_scope == orig.instrumentation_scope


def test_cost_only_on_inference_spans() -> None:
    """Agent and tool spans with token attributes get no cost; only the inference span is priced."""
    provider, exporter, _ = enriched_pipeline()
    with otel_agents.invoke_agent("a", tracer_provider=provider) as agent:
        agent.set_attribute(sc.GEN_AI_USAGE_INPUT_TOKENS, 5000)  # a roll-up: must not be priced
        agent.set_attribute(sc.GEN_AI_REQUEST_MODEL, "gpt-4o")
        with otel_agents.chat("gpt-4o", "openai", tracer_provider=provider) as llm:
            llm.record_usage(input_tokens=5000, output_tokens=10)
        with otel_agents.execute_tool("t", tracer_provider=provider):
            pass
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert sc.GEN_AI_USAGE_COST_AMOUNT in spans["chat gpt-4o"].attributes
    assert sc.GEN_AI_USAGE_COST_AMOUNT not in spans["invoke_agent a"].attributes
    assert sc.GEN_AI_USAGE_COST_AMOUNT not in spans["execute_tool t"].attributes
    assert sc.AGENT_COST_UNPRICED not in spans["execute_tool t"].attributes


def test_response_model_is_preferred_for_pricing() -> None:
    """The exact response model prices the call when it differs from the requested alias."""
    book = PriceBook({"alias": otel_agents.ModelPriceOverride(input=1, output=1)})
    provider, exporter, _ = enriched_pipeline(pricebook=book)
    with otel_agents.chat("alias", tracer_provider=provider) as llm:
        llm.record_usage(input_tokens=1_000_000, output_tokens=0)
        llm.set_response_model("gpt-4o-2024-08-06")
    (span,) = exporter.get_finished_spans()
    assert span.attributes[sc.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx(2.5)


def test_unknown_model_is_marked_unpriced_and_counted() -> None:
    """An unknown model gets agent.cost.unpriced=true, no amount, and is counted per model."""
    provider, exporter, _ = enriched_pipeline()
    processor = provider._active_span_processor._span_processors[0]
    for _ in range(3):
        with otel_agents.chat("house-llm-13b", "acme", tracer_provider=provider) as llm:
            llm.record_usage(input_tokens=10, output_tokens=1)
    with otel_agents.chat("gpt-4o", "openai", tracer_provider=provider):
        pass  # no usage reported: neither priced nor unpriced
    spans = exporter.get_finished_spans()
    assert all(s.attributes.get(sc.AGENT_COST_UNPRICED) is True for s in spans[:3])
    assert all(sc.GEN_AI_USAGE_COST_AMOUNT not in s.attributes for s in spans)
    assert sc.AGENT_COST_UNPRICED not in spans[3].attributes
    assert processor.enricher.unpriced_calls == 3
    assert processor.enricher.unpriced_models() == {"house-llm-13b": 3}


def test_provider_reported_cost_is_kept() -> None:
    """A span that already carries a cost keeps its amount and is marked source=provider."""
    provider, exporter, _ = enriched_pipeline()
    with otel_agents.chat(
        "gpt-4o",
        "openai",
        tracer_provider=provider,
        attributes={sc.GEN_AI_USAGE_COST_AMOUNT: 0.123, sc.GEN_AI_USAGE_COST_CURRENCY: "USD"},
    ) as llm:
        llm.record_usage(input_tokens=10, output_tokens=10)
    (span,) = exporter.get_finished_spans()
    assert span.attributes[sc.GEN_AI_USAGE_COST_AMOUNT] == 0.123
    assert span.attributes[sc.GEN_AI_USAGE_COST_SOURCE] == "provider"


def test_cost_recorded_through_the_api_is_kept() -> None:
    """InferenceSpan.record_cost marks the cost as provider-reported and the processor leaves it."""
    provider, exporter, _ = enriched_pipeline()
    with otel_agents.chat("gpt-4o", "openai", tracer_provider=provider) as llm:
        llm.record_usage(input_tokens=10, output_tokens=10)
        llm.record_cost(0.5, "EUR")
    (span,) = exporter.get_finished_spans()
    assert span.attributes[sc.GEN_AI_USAGE_COST_AMOUNT] == 0.5
    assert span.attributes[sc.GEN_AI_USAGE_COST_CURRENCY] == "EUR"
    assert span.attributes[sc.GEN_AI_USAGE_COST_SOURCE] == "provider"


def test_cost_can_be_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_AGENTS_COST_ENABLED=false keeps normalization but prices nothing."""
    monkeypatch.setenv("OTEL_AGENTS_COST_ENABLED", "false")
    provider, exporter, _ = enriched_pipeline()
    with provider.get_tracer("x").start_as_current_span(
        "llm",
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.prompt_tokens": 5,
        },
    ):
        pass
    (span,) = exporter.get_finished_spans()
    assert span.attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] == 5
    assert sc.GEN_AI_USAGE_COST_AMOUNT not in span.attributes


def test_unchanged_spans_reach_the_next_processor_as_an_equal_plain_copy() -> None:
    """An unchanged SDK span is handed on as a copy in plain containers that encodes to the same OTLP bytes; the SDK's span is untouched."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.trace import Link

    provider = TracerProvider(span_limits=SpanLimits(max_events=2, max_span_attributes=3))
    rec, beside = Recorder(), Recorder()
    provider.add_span_processor(EnrichingSpanProcessor(rec, defer=False))
    provider.add_span_processor(beside)
    tracer = provider.get_tracer("x", "1.0")
    with tracer.start_as_current_span("parent") as parent:
        link = Link(parent.get_span_context(), {"why": "retry"})
        attrs = {"http.method": "GET", "a": 1, "b": [1, 2], "dropped": True}
        with tracer.start_as_current_span("GET /", attributes=attrs, links=[link]) as span:
            for n in range(3):
                span.add_event(f"e{n}", {"n": n})
    copy, original = rec.ended[0], beside.ended[0]
    assert type(original) is ReadableSpan and copy is not original
    assert rec.started == 2
    assert dict(copy.attributes) == dict(original.attributes)
    assert (copy.events, copy.links) == (original.events, original.links)
    assert (copy.dropped_attributes, copy.dropped_events, copy.dropped_links) == (1, 1, 0)
    assert (copy.name, copy.context, copy.parent, copy.kind, copy.status.status_code) == (
        original.name,
        original.context,
        original.parent,
        original.kind,
        original.status.status_code,
    )
    assert encode_spans(rec.ended).SerializeToString() == (
        encode_spans(beside.ended).SerializeToString()
    )


def test_spans_of_other_types_are_copied_through_the_public_constructor() -> None:
    """A ReadableSpan subclass is passed through unchanged when nothing changes, and copied through the public constructor when it is enriched."""

    class Custom(ReadableSpan):
        pass

    rec = Recorder()
    processor = EnrichingSpanProcessor(rec, defer=False)
    plain = Custom(name="plain", attributes={"http.method": "GET"}, start_time=1, end_time=2)
    dialect = Custom(name="llm", attributes={"gen_ai.system": "openai"}, start_time=1, end_time=2)
    processor.on_end(plain)
    processor.on_end(dialect)
    assert rec.ended[0] is plain
    assert rec.ended[1] is not dialect
    assert rec.ended[1].attributes[sc.GEN_AI_PROVIDER_NAME] == "openai"
    assert (rec.ended[1].start_time, rec.ended[1].end_time, rec.ended[1].name) == (1, 2, "llm")


def test_drop_counts_survive_the_copy() -> None:
    """Dropped attribute/event counts of the original are reported on the enriched copy."""
    provider = TracerProvider(span_limits=SpanLimits(max_span_attributes=6, max_events=1))
    rec = Recorder()
    provider.add_span_processor(EnrichingSpanProcessor(rec))
    attrs = {f"k{i}": i for i in range(8)}
    attrs.update({"gen_ai.system": "openai"})
    span = provider.get_tracer("x").start_span("s", attributes=attrs)
    span.set_attribute("llm.provider", "openai")
    span.add_event("e1")
    span.add_event("e2")
    span.end()
    (copy,) = rec.ended
    assert copy.dropped_attributes > 0 and copy.dropped_events == 1


def test_failing_next_processor_and_pricing_never_raise(caplog: pytest.LogCaptureFixture) -> None:
    """A failing wrapped processor or price book is logged; the application and other processors carry on."""
    provider = TracerProvider()
    rec = Recorder()
    provider.add_span_processor(
        EnrichingSpanProcessor([Exploding(), rec], pricebook=ExplodingPriceBook())
    )
    with caplog.at_level(logging.ERROR, logger="otel_agents"):
        for _ in range(3):
            with otel_agents.chat("gpt-4o", "openai", tracer_provider=provider) as llm:
                llm.record_usage(input_tokens=10, output_tokens=10)
        assert provider.force_flush() is False
        provider.shutdown()
    assert len(rec.ended) == 3  # still delivered, unenriched
    assert sc.GEN_AI_USAGE_COST_AMOUNT not in rec.ended[0].attributes
    assert rec.shut == 1
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "on_end" in messages and "enrichment" in messages
    # Rate limited: three failing spans, one traceback per call site.
    assert sum("enrichment" in r.getMessage() for r in caplog.records) == 1


def test_force_flush_and_shutdown_are_forwarded() -> None:
    """force_flush and shutdown reach the wrapped processor."""
    rec = Recorder()
    processor = EnrichingSpanProcessor(rec)
    assert processor.force_flush(100) is True
    processor.shutdown()
    assert (rec.flushed, rec.shut) == (1, 1)


def test_constructor_rejects_non_processors() -> None:
    """The wrapped object must be a SpanProcessor (validated at construction, not per span)."""
    with pytest.raises(TypeError, match="next_processor"):
        EnrichingSpanProcessor(InMemorySpanExporter())  # type: ignore[arg-type]


def test_identity_processor_attributes_live_third_party_spans() -> None:
    """Live spans of other instrumentations started inside an agent carry its identity (no id when they name another agent)."""
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(AgentIdentitySpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    http = provider.get_tracer("opentelemetry.instrumentation.httpx")
    with otel_agents.invoke_agent(
        "scout", agent_id="s-1", conversation_id="c-7", tracer_provider=provider
    ):
        with http.start_as_current_span("POST", kind=SpanKind.CLIENT):
            pass
        with http.start_as_current_span("other", attributes={sc.GEN_AI_AGENT_NAME: "explicit"}):
            pass
    with http.start_as_current_span("outside"):
        pass
    spans = {s.name: s.attributes for s in exporter.get_finished_spans()}
    assert spans["POST"][sc.GEN_AI_AGENT_NAME] == "scout"
    assert spans["POST"][sc.GEN_AI_AGENT_ID] == "s-1"
    assert spans["POST"][sc.GEN_AI_CONVERSATION_ID] == "c-7"
    assert spans["other"][sc.GEN_AI_AGENT_NAME] == "explicit"
    assert sc.GEN_AI_AGENT_ID not in spans["other"]
    assert spans["other"][sc.GEN_AI_CONVERSATION_ID] == "c-7"
    assert sc.GEN_AI_AGENT_NAME not in spans["outside"]


def test_attach_to_existing_provider_enriches_its_exporter() -> None:
    """attach_to_provider makes an existing BatchSpanProcessor export enriched spans, identity included."""
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=50))
    mode = attach_to_provider(provider)
    assert mode in (MODE_ON_ENDING, MODE_WRAPPED)
    assert mode == (MODE_ON_ENDING if on_ending_can_mutate() else MODE_WRAPPED)
    third_party = provider.get_tracer("openinference.instrumentation.openai")
    llm_attrs = {
        "openinference.span.kind": "LLM",
        "llm.model_name": "gpt-4o",
        "llm.token_count.prompt": 100,
        "llm.token_count.completion": 10,
    }
    with (
        otel_agents.invoke_agent("planner", tracer_provider=provider),
        third_party.start_as_current_span("ChatCompletion", attributes=llm_attrs),
    ):
        pass
    assert provider.force_flush(5000)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    llm = spans["ChatCompletion"].attributes
    assert llm[sc.GEN_AI_AGENT_NAME] == "planner"
    assert llm[sc.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx(100 * 2.5e-6 + 10 * 10e-6)
    provider.shutdown()


def test_attach_ignores_providers_without_processors() -> None:
    """A no-op / proxy provider is left alone."""
    from opentelemetry.trace import NoOpTracerProvider

    assert attach_to_provider(NoOpTracerProvider()) == MODE_UNSUPPORTED


def test_on_ending_probe_matches_sdk_behaviour() -> None:
    """The probe reports whether set_attribute in _on_ending reaches the exported span on this SDK."""
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(EnrichOnEndingSpanProcessor(enricher=SpanEnricher()))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("x").start_as_current_span(
        "llm", attributes={"gen_ai.system": "openai"}
    ):
        pass
    (span,) = exporter.get_finished_spans()
    added = span.attributes.get(sc.GEN_AI_PROVIDER_NAME) == "openai"
    assert added is on_ending_can_mutate()


def test_on_ending_processor_adds_attributes_to_a_writable_span() -> None:
    """Given a span that is still writable (as OnEnding specifies), the processor adds canonical and cost keys."""
    provider, exporter = TracerProvider(), InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    processor = EnrichOnEndingSpanProcessor(enricher=SpanEnricher())
    span = provider.get_tracer("x").start_span(
        "llm",
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.prompt_tokens": 1000,
        },
    )
    processor._on_ending(span)  # what an SDK implementing OnEnding before end-time would do
    span.end()
    (done,) = exporter.get_finished_spans()
    assert done.attributes[sc.GEN_AI_PROVIDER_NAME] == "openai"
    assert done.attributes["gen_ai.system"] == "openai"  # can only add: the dialect key stays
    assert done.attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] == 1000
    assert done.attributes[sc.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx(0.0025)


class DeferrableRecorder(Recorder):
    """A Recorder that declares it tolerates late, off-thread delivery, and notes the thread."""

    otel_agents_deferrable = True

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[str] = set()

    def on_end(self, span: ReadableSpan) -> None:
        self.threads.add(threading.current_thread().name)
        super().on_end(span)


def _llm_attrs(prompt: int = 100) -> dict[str, Any]:
    return {
        "openinference.span.kind": "LLM",
        "llm.model_name": "gpt-4o",
        "llm.token_count.prompt": prompt,
        "llm.token_count.completion": 10,
    }


def test_deferrable_processors_get_enriched_copies_from_the_worker() -> None:
    """A deferrable processor is not called in on_end but gets the same enriched copies, in order, by force_flush at the latest."""
    provider = TracerProvider()
    deferred, sync = DeferrableRecorder(), Recorder()
    provider.add_span_processor(EnrichingSpanProcessor([deferred, sync]))
    tracer = provider.get_tracer("openinference.instrumentation.openai")
    for i in range(20):
        with tracer.start_as_current_span("ChatCompletion", attributes=_llm_attrs(100 + i)):
            pass
    assert len(sync.ended) == 20  # synchronous processors keep synchronous delivery
    assert provider.force_flush(5000)
    assert [s.attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] for s in deferred.ended] == [
        100 + i for i in range(20)
    ]
    assert deferred.ended[0] is sync.ended[0]  # enriched once, shared
    provider.shutdown()


def test_worker_delivers_without_flush_within_its_interval() -> None:
    """Spans reach a deferred processor by the worker alone (no flush), on the worker thread."""
    provider = TracerProvider()
    deferred = DeferrableRecorder()
    provider.add_span_processor(EnrichingSpanProcessor(deferred))
    with provider.get_tracer("x").start_as_current_span("llm", attributes=_llm_attrs()):
        pass
    deadline = time.monotonic() + 5.0
    while not deferred.ended and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(deferred.ended) == 1
    assert deferred.threads == {"otel_agents.EnrichingSpanProcessor"}
    assert deferred.ended[0].attributes[sc.GEN_AI_USAGE_COST_AMOUNT] > 0
    provider.shutdown()


def test_full_queue_is_delivered_on_the_caller_without_loss(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past the pending limit the application thread delivers itself: backpressure, no dropped span."""
    from otel_agents import _processors

    monkeypatch.setattr(_processors, "_MAX_PENDING_DELIVERIES", 5)
    monkeypatch.setattr(_processors, "_DELIVERY_DELAY_S", 30.0)  # the worker stays asleep
    provider = TracerProvider()
    deferred = DeferrableRecorder()
    processor = EnrichingSpanProcessor(deferred)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("x")
    for _ in range(12):
        with tracer.start_as_current_span("s", attributes={"gen_ai.system": "openai"}):
            pass
    assert len(deferred.ended) == 10  # delivered by the caller at 5 and at 10 pending
    processor.shutdown()  # delivers the rest before shutting the wrapped processor down
    assert len(deferred.ended) == 12 and deferred.shut == 1
    assert all(s.attributes[sc.GEN_AI_PROVIDER_NAME] == "openai" for s in deferred.ended)
    with tracer.start_as_current_span("late", attributes={"gen_ai.system": "openai"}):
        pass
    assert len(deferred.ended) == 13  # after shutdown: delivered at once, not queued forever


def test_identity_is_written_on_the_enriched_copy_only() -> None:
    """identity=True attributes third-party GenAI spans on the exported copy, not HTTP spans; the SDK's span and processors beside it are untouched."""
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    beside = Recorder()
    processor = EnrichingSpanProcessor(SimpleSpanProcessor(exporter), identity=True)
    provider.add_span_processor(processor)
    provider.add_span_processor(beside)
    http = provider.get_tracer("opentelemetry.instrumentation.httpx")
    oi = provider.get_tracer("openinference.instrumentation.openai")
    llm = {"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o"}
    own = {"openinference.span.kind": "AGENT", "agent.name": "inner", "session.id": "s-9"}
    with otel_agents.invoke_agent(
        "scout", agent_id="s-1", conversation_id="c-7", tracer_provider=provider
    ):
        with oi.start_as_current_span("ChatCompletion", attributes=llm):
            pass
        with oi.start_as_current_span("Agent", attributes=own):
            pass
        with http.start_as_current_span("POST", kind=SpanKind.CLIENT):
            pass
        with http.start_as_current_span("GET", attributes={sc.GEN_AI_AGENT_NAME: "explicit"}):
            pass
        with otel_agents.execute_tool("search", tracer_provider=provider):
            pass
    with oi.start_as_current_span("outside", attributes=llm):
        pass
    spans = {s.name: s for s in exporter.get_finished_spans()}
    chat = spans["ChatCompletion"].attributes
    assert (chat[sc.GEN_AI_AGENT_NAME], chat[sc.GEN_AI_AGENT_ID]) == ("scout", "s-1")
    assert chat[sc.GEN_AI_CONVERSATION_ID] == "c-7"
    # The span's own (dialect) agent and session keys win over the enclosing agent's.
    inner = spans["Agent"].attributes
    assert (inner[sc.GEN_AI_AGENT_NAME], inner[sc.GEN_AI_CONVERSATION_ID]) == ("inner", "s-9")
    assert sc.GEN_AI_AGENT_ID not in inner  # the enclosing agent's id would name another agent
    assert not {sc.GEN_AI_AGENT_NAME, sc.GEN_AI_AGENT_ID, sc.GEN_AI_CONVERSATION_ID} & set(
        spans["POST"].attributes
    )
    assert spans["GET"].attributes[sc.GEN_AI_AGENT_NAME] == "explicit"
    assert spans["execute_tool search"].attributes[sc.GEN_AI_AGENT_NAME] == "scout"
    assert sc.GEN_AI_AGENT_NAME not in spans["outside"].attributes
    live = {s.name: s for s in beside.ended}
    assert sc.GEN_AI_AGENT_NAME not in live["ChatCompletion"].attributes
    assert processor._agents == {}  # nothing left behind once the spans ended


def test_own_api_spans_skip_identity_work() -> None:
    """Spans of the otel_agents API carry identity from start_span; the processors do not redo it."""
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    processor = EnrichingSpanProcessor(SimpleSpanProcessor(exporter), identity=True)
    provider.add_span_processor(processor)
    with (
        otel_agents.invoke_agent("scout", tracer_provider=provider),
        otel_agents.chat("gpt-4o", "openai", tracer_provider=provider),
    ):
        captured = dict(processor._agents)
    assert captured == {}
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert spans["chat gpt-4o"].attributes[sc.GEN_AI_AGENT_NAME] == "scout"


def test_forked_child_delivers_its_own_spans_not_the_parents(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After fork() the child drops the parent's pending spans (the parent delivers them) and delivers its own."""
    from otel_agents import _processors

    monkeypatch.setattr(_processors, "_DELIVERY_DELAY_S", 30.0)
    provider = TracerProvider()
    deferred = DeferrableRecorder()
    processor = EnrichingSpanProcessor(deferred)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("x")
    with tracer.start_as_current_span("parent", attributes={"gen_ai.system": "openai"}):
        pass

    def child() -> bool:
        with tracer.start_as_current_span("child", attributes={"gen_ai.system": "openai"}):
            pass
        processor.deliver_pending()
        return [s.name for s in deferred.ended] == ["child"]

    assert wait_child(fork_child(child)) == 0
    processor.deliver_pending()
    assert [s.name for s in deferred.ended] == ["parent"]
    provider.shutdown()


class OwnMultiProcessor(SpanProcessor):
    """A provider's active processor of another layout (public TracerProvider parameter)."""

    def __init__(self) -> None:
        self.processors: list[SpanProcessor] = []

    def add_span_processor(self, processor: SpanProcessor) -> None:
        self.processors.append(processor)

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        for p in self.processors:
            p.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        for p in self.processors:
            p.on_end(span)

    def shutdown(self) -> None:
        for p in self.processors:
            p.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return all(p.force_flush(timeout_millis) for p in self.processors)


def test_unknown_processor_layout_degrades_to_identity_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without the SDK's multi-processor layout nothing internal is touched: identity only, a warning, spans still exported."""
    from otel_agents._processors import MODE_IDENTITY_ONLY

    if on_ending_can_mutate():
        pytest.skip("this SDK lets _on_ending write: the on_ending mode needs no internals")
    multi = OwnMultiProcessor()
    provider = TracerProvider(active_span_processor=multi)  # type: ignore[arg-type]
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with caplog.at_level(logging.WARNING, logger="otel_agents"):
        mode = attach_to_provider(provider)
    assert mode == MODE_IDENTITY_ONLY
    assert "unknown processor layout" in caplog.text
    third_party = provider.get_tracer("openinference.instrumentation.openai")
    with (
        otel_agents.invoke_agent("planner", tracer_provider=provider),
        third_party.start_as_current_span("ChatCompletion", attributes=_llm_attrs()),
    ):
        pass
    spans = {s.name: s for s in exporter.get_finished_spans()}
    llm = spans["ChatCompletion"].attributes
    assert llm[sc.GEN_AI_AGENT_NAME] == "planner"
    assert sc.GEN_AI_USAGE_COST_AMOUNT not in llm  # unpriced here; the receiver prices it
    provider.shutdown()


def test_worker_that_cannot_start_means_synchronous_delivery(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """If no thread can be started (interpreter shutdown), spans are delivered in on_end and nothing reaches the app."""

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")

    provider = TracerProvider()
    deferred = DeferrableRecorder()
    provider.add_span_processor(EnrichingSpanProcessor(deferred))
    monkeypatch.setattr(threading.Thread, "start", refuse)
    with caplog.at_level(logging.ERROR, logger="otel_agents"):
        for _ in range(3):
            with provider.get_tracer("x").start_as_current_span("s", attributes=_llm_attrs()):
                pass
    monkeypatch.undo()
    assert len(deferred.ended) == 3  # delivered in on_end, nothing left waiting
    assert "worker start" in caplog.text
    provider.shutdown()
    assert deferred.shut == 1


def test_copies_share_one_equal_hash_once_resource() -> None:
    """Copies of one provider's spans carry one Resource equal to (and hashing like) the provider's; unknown layouts fall back to the public constructor."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event

    from otel_agents._processors import _enriched_copy

    resource = Resource.create({"service.name": "svc", "k": "v"})
    provider = TracerProvider(resource=resource)
    rec = Recorder()
    provider.add_span_processor(EnrichingSpanProcessor(rec, defer=False))
    for name in ("a", "b"):
        with provider.get_tracer("x").start_as_current_span(name):
            pass
    first, second = rec.ended
    assert first.resource is second.resource
    assert first.resource == resource and hash(first.resource) == hash(resource)
    assert dict(first.resource.attributes) == dict(resource.attributes)
    # Events in a plain list (not the SDK's BoundedList): the public constructor, same content.
    odd = ReadableSpan(name="odd", events=[Event("e", {"n": 1})], resource=resource)
    copy = _enriched_copy(odd, {"x": 1})
    assert copy.events == odd.events and copy.dropped_events == 0
    assert copy.resource is resource and dict(copy.attributes) == {"x": 1}
