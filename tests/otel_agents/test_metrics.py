# SPDX-License-Identifier: Apache-2.0
"""Span-derived agent metrics, process metrics and cardinality bounds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    AlwaysOnExemplarFilter,
    ExemplarFilter,
    MeterProvider,
    TraceBasedExemplarFilter,
)
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Metric
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.trace import NoOpTracerProvider, SpanKind, Status, StatusCode

from otel_agents import semconv as sc
from otel_agents._metrics import AgentMetricsProcessor, install_metrics, span_cost

LLM_ATTRS: dict[str, Any] = {
    sc.GEN_AI_OPERATION_NAME: sc.OP_CHAT,
    sc.GEN_AI_PROVIDER_NAME: "openai",
    sc.GEN_AI_REQUEST_MODEL: "gpt-4o",
    sc.GEN_AI_RESPONSE_MODEL: "gpt-4o-2024-08-06",
    sc.GEN_AI_AGENT_NAME: "planner",
    sc.GEN_AI_USAGE_INPUT_TOKENS: 1200,
    sc.GEN_AI_USAGE_OUTPUT_TOKENS: 300,
    sc.GEN_AI_USAGE_COST_AMOUNT: 0.006,
    sc.GEN_AI_USAGE_COST_CURRENCY: "USD",
}


class Env:
    """A tracer provider whose spans feed an AgentMetricsProcessor read by an in-memory reader.

    With ``behind_enricher`` the processor is chained behind an ``EnrichingSpanProcessor`` (as
    ``configure()`` does), so its worker records the metrics; ``scope`` names the tracer.
    """

    def __init__(
        self, *, behind_enricher: bool = False, scope: str = "test", **reader_kwargs: Any
    ) -> None:
        from otel_agents import EnrichingSpanProcessor

        self.reader = InMemoryMetricReader(**reader_kwargs)
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.tracer_provider = TracerProvider()
        self.processor = AgentMetricsProcessor(self.meter_provider)
        self.tracer_provider.add_span_processor(
            EnrichingSpanProcessor(self.processor) if behind_enricher else self.processor
        )
        self.tracer = self.tracer_provider.get_tracer(scope)

    def metrics(self) -> dict[str, Metric]:
        data = self.reader.get_metrics_data()
        out: dict[str, Metric] = {}
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    out[m.name] = m
        return out


@pytest.fixture
def env() -> Iterator[Env]:
    e = Env()
    yield e
    e.meter_provider.shutdown()
    e.tracer_provider.shutdown()


def points(metric: Metric) -> list[Any]:
    return list(metric.data.data_points)


def test_inference_span_metrics(env: Env) -> None:
    """An inference span yields token histograms per type, duration with spec buckets, and cost."""
    with env.tracer.start_as_current_span(
        "chat gpt-4o", kind=SpanKind.CLIENT, attributes=LLM_ATTRS
    ):
        pass
    m = env.metrics()
    tokens = {
        dict(p.attributes)[sc.GEN_AI_TOKEN_TYPE]: p
        for p in points(m[sc.METRIC_GEN_AI_CLIENT_TOKEN_USAGE])
    }
    assert tokens["input"].sum == 1200 and tokens["output"].sum == 300
    assert tuple(tokens["input"].explicit_bounds) == tuple(float(b) for b in sc.TOKEN_USAGE_BUCKETS)
    assert m[sc.METRIC_GEN_AI_CLIENT_TOKEN_USAGE].unit == "{token}"
    assert dict(tokens["input"].attributes) == {
        sc.GEN_AI_OPERATION_NAME: "chat",
        sc.GEN_AI_PROVIDER_NAME: "openai",
        sc.GEN_AI_REQUEST_MODEL: "gpt-4o",
        sc.GEN_AI_RESPONSE_MODEL: "gpt-4o-2024-08-06",
        sc.GEN_AI_TOKEN_TYPE: "input",
    }
    (dur,) = points(m[sc.METRIC_GEN_AI_CLIENT_OPERATION_DURATION])
    assert tuple(dur.explicit_bounds) == sc.OPERATION_DURATION_BUCKETS
    assert m[sc.METRIC_GEN_AI_CLIENT_OPERATION_DURATION].unit == "s"
    assert dur.count == 1 and sc.ERROR_TYPE not in dur.attributes
    (cost,) = points(m[sc.METRIC_AGENT_COST])
    assert cost.value == pytest.approx(0.006)
    assert m[sc.METRIC_AGENT_COST].unit == "USD"
    assert dict(cost.attributes)[sc.GEN_AI_AGENT_NAME] == "planner"


def test_agent_tool_decision_and_a2a_metrics(env: Env) -> None:
    """Agent/tool durations, decision events and A2A messages are counted with their dimensions."""
    with env.tracer.start_as_current_span(
        "invoke_agent planner",
        attributes={sc.GEN_AI_OPERATION_NAME: sc.OP_INVOKE_AGENT, sc.GEN_AI_AGENT_NAME: "planner"},
    ) as agent:
        agent.add_event(
            sc.EVENT_AGENT_DECISION,
            {sc.AGENT_DECISION_TYPE: "route", sc.AGENT_DECISION_CHOSEN: "x"},
        )
        agent.add_event(sc.EVENT_AGENT_DECISION, {sc.AGENT_DECISION_TYPE: "route"})
        with env.tracer.start_as_current_span(
            "execute_tool search",
            attributes={
                sc.GEN_AI_OPERATION_NAME: sc.OP_EXECUTE_TOOL,
                sc.GEN_AI_TOOL_NAME: "search",
                sc.GEN_AI_AGENT_NAME: "planner",
            },
        ) as tool:
            tool.set_status(Status(StatusCode.ERROR))
        with env.tracer.start_as_current_span(
            "SendMessage", kind=SpanKind.CLIENT, attributes={sc.A2A_METHOD_NAME: "SendMessage"}
        ):
            pass
    m = env.metrics()
    (agent_p,) = points(m[sc.METRIC_GEN_AI_INVOKE_AGENT_DURATION])
    assert dict(agent_p.attributes)[sc.GEN_AI_AGENT_NAME] == "planner"
    (tool_p,) = points(m[sc.METRIC_GEN_AI_EXECUTE_TOOL_DURATION])
    assert dict(tool_p.attributes) == {
        sc.GEN_AI_OPERATION_NAME: "execute_tool",
        sc.GEN_AI_TOOL_NAME: "search",
        sc.GEN_AI_AGENT_NAME: "planner",
        sc.ERROR_TYPE: "_OTHER",
    }
    (dec,) = points(m[sc.METRIC_AGENT_DECISIONS])
    assert dec.value == 2 and dict(dec.attributes) == {
        sc.GEN_AI_AGENT_NAME: "planner",
        sc.AGENT_DECISION_TYPE: "route",
    }
    (a2a,) = points(m[sc.METRIC_AGENT_A2A_MESSAGES])
    assert dict(a2a.attributes) == {
        sc.A2A_METHOD_NAME: "SendMessage",
        sc.NETWORK_IO_DIRECTION: "transmit",
    }


def test_dialect_spans_are_normalized(env: Env) -> None:
    """OpenLLMetry-style token keys are read through the shared normalizer."""
    pytest.importorskip("otel_agents._normalize")
    attrs: dict[str, Any] = {
        "gen_ai.system": "openai",
        sc.GEN_AI_OPERATION_NAME: "chat",
        sc.GEN_AI_REQUEST_MODEL: "gpt-4o",
        "gen_ai.usage.prompt_tokens": 10,
        "gen_ai.usage.completion_tokens": 5,
    }
    with env.tracer.start_as_current_span("chat", attributes=attrs):
        pass
    tokens = {
        dict(p.attributes)[sc.GEN_AI_TOKEN_TYPE]: p.sum
        for p in points(env.metrics()[sc.METRIC_GEN_AI_CLIENT_TOKEN_USAGE])
    }
    assert tokens == {"input": 10, "output": 5}


def test_unpriced_counted_never_zero(env: Env) -> None:
    """An inference span marked unpriced increments the unpriced counter and adds no cost."""
    attrs = {k: v for k, v in LLM_ATTRS.items() if not k.startswith("gen_ai.usage.cost")}
    attrs[sc.AGENT_COST_UNPRICED] = True
    with env.tracer.start_as_current_span("chat", attributes=attrs):
        pass
    m = env.metrics()
    assert sc.METRIC_AGENT_COST not in m
    (p,) = points(m[sc.METRIC_AGENT_UNPRICED_CALLS])
    assert p.value == 1


def test_span_cost_with_real_pricebook() -> None:
    """Spans nobody priced are priced from the PriceBook; unknown models are unpriced."""
    cost_mod = pytest.importorskip("otel_agents._cost")
    book = cost_mod.PriceBook({"house-model": cost_mod.ModelPriceOverride(input=1.0, output=2.0)})
    attrs = {k: v for k, v in LLM_ATTRS.items() if not k.startswith("gen_ai.usage.cost")}
    attrs[sc.GEN_AI_RESPONSE_MODEL] = "house-model"
    amount, unpriced = span_cost(attrs, book)
    assert amount == pytest.approx(1200 * 1e-6 + 300 * 2e-6) and not unpriced
    attrs[sc.GEN_AI_RESPONSE_MODEL] = "no-such-model-xyz-123"
    attrs[sc.GEN_AI_REQUEST_MODEL] = "no-such-model-xyz-123"
    assert span_cost(attrs, book) == (None, True)


def test_cardinality_bounded_with_overflow_series() -> None:
    """10,000 distinct tool names stay within the SDK cardinality limit plus one overflow series."""
    e = Env()
    try:
        for i in range(10_000):
            with e.tracer.start_as_current_span(
                "execute_tool",
                attributes={
                    sc.GEN_AI_OPERATION_NAME: sc.OP_EXECUTE_TOOL,
                    sc.GEN_AI_TOOL_NAME: f"tool-{i}",
                },
            ):
                pass
        pts = points(e.metrics()[sc.METRIC_GEN_AI_EXECUTE_TOOL_DURATION])
    finally:
        e.meter_provider.shutdown()
    assert len(pts) == 2000 + 1  # the SDK default limit plus the overflow series (RC-13)
    overflow = [p for p in pts if dict(p.attributes).get("otel.metric.overflow") is True]
    assert len(overflow) == 1
    assert sum(p.count for p in pts) == 10_000  # nothing lost, only folded


def test_failures_never_reach_the_app(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """An instrument that raises inside on_end does not propagate into the span's with-block."""

    calls: list[int] = []

    def boom(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        raise RuntimeError("injected")

    from otel_agents import _metrics

    # Both histogram routes fail: the batch merge, then the per-value fallback.
    monkeypatch.setattr(_metrics._MERGE, "merge", boom)
    monkeypatch.setattr(env.processor.token_usage, "record", boom)
    with env.tracer.start_as_current_span("chat", attributes=LLM_ATTRS):
        pass  # must not raise at span end
    assert len(calls) >= 2  # the failures really happened inside on_end


def test_process_metrics_and_install_idempotent() -> None:
    """install_metrics attaches once per provider and registers psutil process metrics."""
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    tp = TracerProvider()
    try:
        first = install_metrics(mp, tracer_provider=tp)
        assert first is not None and install_metrics(mp, tracer_provider=tp) is first
        second_tp = TracerProvider()
        assert install_metrics(mp, tracer_provider=second_tp) is not first  # no 2nd callback set
        assert install_metrics(mp, tracer_provider=NoOpTracerProvider()) is None
        data = reader.get_metrics_data()
        assert data is not None
        got = {
            m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
        }
        rss = points(got[sc.METRIC_PROCESS_MEMORY_USAGE])[0].value
        assert rss > 1_000_000
        assert {
            dict(p.attributes)[sc.CPU_MODE] for p in points(got[sc.METRIC_PROCESS_CPU_TIME])
        } == {"user", "system"}
        assert points(got[sc.METRIC_PROCESS_THREAD_COUNT])[0].value >= 1
        assert points(got[sc.METRIC_PROCESS_FD_COUNT])[0].value >= 3
        assert len(points(got[sc.METRIC_CPYTHON_GC_COLLECTIONS])) == 3
        gc_scopes = [
            sm.scope.name
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
            if m.name == sc.METRIC_CPYTHON_GC_COLLECTIONS
        ]
        assert gc_scopes == ["otel_agents"]
    finally:
        mp.shutdown()


def test_process_metrics_of_vanished_process_yield_nothing() -> None:
    """When psutil cannot read the process (it is gone), collection returns no points and
    does not raise."""
    import subprocess
    import sys

    import psutil

    from otel_agents._metrics import ProcessMetrics

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    proc = psutil.Process(child.pid)
    child.wait(timeout=10)
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    try:
        pm = ProcessMetrics(mp)
        pm._proc = proc  # the real psutil handle of an exited process: every probe raises
        data = reader.get_metrics_data()
        names = set()
        if data is not None:
            names = {
                m.name
                for rm in data.resource_metrics
                for sm in rm.scope_metrics
                for m in sm.metrics
                if m.data.data_points
            }
        assert sc.METRIC_PROCESS_MEMORY_USAGE not in names
        assert sc.METRIC_CPYTHON_GC_COLLECTIONS in names  # the GC probe does not need psutil
    finally:
        mp.shutdown()


def test_metrics_recorded_off_thread_keep_the_span_as_exemplar() -> None:
    """Behind the enriching processor the metrics are recorded by its worker, and exemplars still point at the span."""
    env = Env(behind_enricher=True, scope="openinference.instrumentation.openai")
    attrs: dict[str, Any] = {
        "openinference.span.kind": "LLM",
        "llm.model_name": "gpt-4o",
        "llm.token_count.prompt": 100,
        "llm.token_count.completion": 10,
    }
    with env.tracer.start_as_current_span("ChatCompletion", attributes=attrs) as span:
        ids = (span.get_span_context().trace_id, span.get_span_context().span_id)
    assert env.tracer_provider.force_flush(5000)
    metrics = env.metrics()
    (duration,) = points(metrics[sc.METRIC_GEN_AI_CLIENT_OPERATION_DURATION])
    assert [(e.trace_id, e.span_id) for e in duration.exemplars] == [ids]
    (cost,) = points(metrics[sc.METRIC_AGENT_COST])
    assert cost.value == pytest.approx(100 * 2.5e-6 + 10 * 10e-6)  # priced before recording
    env.meter_provider.shutdown()
    env.tracer_provider.shutdown()


def test_batched_counters_sum_exactly_and_histograms_keep_every_value() -> None:
    """Delivered in batches, counter increments of one series are summed once; histograms still see every span."""
    env = Env(behind_enricher=True, scope="third.party")
    tracer = env.tracer
    for prompt in (100, 200, 300):
        attrs = {
            sc.GEN_AI_OPERATION_NAME: "chat",
            sc.GEN_AI_REQUEST_MODEL: "gpt-4o",
            sc.GEN_AI_AGENT_NAME: "a",
            sc.GEN_AI_USAGE_INPUT_TOKENS: prompt,
            sc.GEN_AI_USAGE_OUTPUT_TOKENS: 10,
        }
        with tracer.start_as_current_span("chat gpt-4o", attributes=attrs):
            pass
    with tracer.start_as_current_span(
        "chat x",
        attributes={
            sc.GEN_AI_OPERATION_NAME: "chat",
            sc.GEN_AI_REQUEST_MODEL: "house-model",
            sc.GEN_AI_USAGE_INPUT_TOKENS: 1,
        },
    ):
        pass
    assert env.tracer_provider.force_flush(5000)
    metrics = env.metrics()
    (cost,) = points(metrics[sc.METRIC_AGENT_COST])
    assert cost.value == pytest.approx((100 + 200 + 300) * 2.5e-6 + 30 * 10e-6)
    (unpriced,) = points(metrics[sc.METRIC_AGENT_UNPRICED_CALLS])
    assert unpriced.value == 1
    counts = {
        dict(p.attributes or {})[sc.GEN_AI_TOKEN_TYPE]: p.count
        for p in points(metrics[sc.METRIC_GEN_AI_CLIENT_TOKEN_USAGE])
        if dict(p.attributes or {}).get(sc.GEN_AI_REQUEST_MODEL) == "gpt-4o"
    }
    assert counts == {"input": 3, "output": 3}
    env.meter_provider.shutdown()
    env.tracer_provider.shutdown()


def _histogram_points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    assert data is not None
    return [
        p
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == name
        for p in m.data.data_points
    ]


def _run_batches(
    meters: MeterProvider,
    batches: list[list[float]],
    processor: AgentMetricsProcessor | None = None,
) -> None:
    """Feed tool spans of the given durations through the batch path (one call per batch)."""
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import SpanContext, TraceFlags

    processor = processor or AgentMetricsProcessor(meters)
    span_id = 1
    for durations in batches:
        spans = []
        for d in durations:
            spans.append(
                ReadableSpan(
                    name="execute_tool t",
                    context=SpanContext(7, span_id, False, TraceFlags(span_id % 2)),
                    attributes={
                        sc.GEN_AI_OPERATION_NAME: sc.OP_EXECUTE_TOOL,
                        sc.GEN_AI_TOOL_NAME: "t",
                    },
                    start_time=1_000_000_000,
                    end_time=1_000_000_000 + int(d * 1e9),
                )
            )
            span_id += 1
        processor.otel_agents_on_end_batch(spans)


class _OddSpanFilter(ExemplarFilter):
    """A filter of another type than the SDK's: asked for every value."""

    def should_sample(self, value: Any, time_unix_nano: int, attributes: Any, context: Any) -> bool:
        from opentelemetry import trace as api

        return api.get_current_span(context).get_span_context().span_id % 3 == 1


@pytest.mark.parametrize(
    "exemplar_filter",
    [
        TraceBasedExemplarFilter(),
        AlwaysOnExemplarFilter(),
        AlwaysOffExemplarFilter(),
        _OddSpanFilter(),
    ],
    ids=["trace_based", "always_on", "always_off", "custom"],
)
def test_batch_merge_equals_per_value_recording_cumulative_and_delta(
    exemplar_filter: ExemplarFilter,
) -> None:
    """Merged per batch, tool durations give the same points and exemplars as recording each value (cumulative and delta readers, each exemplar filter)."""
    from opentelemetry.sdk.metrics import Histogram
    from opentelemetry.sdk.metrics.export import AggregationTemporality

    from otel_agents import _metrics

    assert _metrics._MERGE.works()  # the SDK this project pins must take the fast path
    # small batches and one long enough for the counted (Counter) path
    batches = [[0.005, 0.3, 0.3, 12.0, 100.0], [0.02, 0.3], [(i % 13) * 0.7 for i in range(40)]]
    results = []
    for fast in (True, False):
        readers = [
            InMemoryMetricReader(),
            InMemoryMetricReader(preferred_temporality={Histogram: AggregationTemporality.DELTA}),
        ]
        meters = MeterProvider(metric_readers=readers, exemplar_filter=exemplar_filter)
        saved = _metrics._MERGE._ok
        _metrics._MERGE._ok = fast  # False: every value through the public record()
        try:
            out = []
            processor = AgentMetricsProcessor(meters)
            for batch in batches:
                _run_batches(meters, [batch], processor)
                for reader in readers:
                    (point,) = _histogram_points(reader, sc.METRIC_GEN_AI_EXECUTE_TOOL_DURATION)
                    out.append(
                        (
                            point.count,
                            point.sum,
                            point.min,
                            point.max,
                            tuple(point.bucket_counts),
                            [(e.value, e.span_id) for e in point.exemplars],
                        )
                    )
            results.append(out)
        finally:
            _metrics._MERGE._ok = saved
            meters.shutdown()
    assert results[0] == results[1]
    cumulative_first = results[0][0]
    assert cumulative_first[0] == 5 and cumulative_first[3] == 100.0
    exemplar_ids = [span_id for _, span_id in cumulative_first[5]]
    if isinstance(exemplar_filter, AlwaysOffExemplarFilter):
        assert exemplar_ids == []
    else:
        assert exemplar_ids, "eligible values leave exemplars"
    if isinstance(exemplar_filter, TraceBasedExemplarFilter):
        assert all(span_id % 2 == 1 for span_id in exemplar_ids)  # only sampled spans


def test_batch_merge_falls_back_for_other_aggregations() -> None:
    """A View with an exponential histogram is not merged: the values go through record() and none is lost."""
    from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View

    reader = InMemoryMetricReader()
    meters = MeterProvider(
        metric_readers=[reader],
        views=[
            View(
                instrument_name=sc.METRIC_GEN_AI_EXECUTE_TOOL_DURATION,
                aggregation=ExponentialBucketHistogramAggregation(),
            )
        ],
    )
    try:
        _run_batches(meters, [[0.1, 0.2, 0.4], [0.8]])
        (point,) = _histogram_points(reader, sc.METRIC_GEN_AI_EXECUTE_TOOL_DURATION)
        assert point.count == 4 and point.sum == pytest.approx(1.5)
        assert hasattr(point, "scale")  # exponential buckets, as the View asked
    finally:
        meters.shutdown()


def test_batch_merge_respects_view_attribute_filter_and_drop() -> None:
    """A View's attribute keys filter the merged series; a dropped instrument records nothing."""
    from opentelemetry.sdk.metrics.view import DropAggregation, View

    reader = InMemoryMetricReader()
    meters = MeterProvider(
        metric_readers=[reader],
        views=[
            View(
                instrument_name=sc.METRIC_GEN_AI_EXECUTE_TOOL_DURATION,
                attribute_keys={sc.GEN_AI_OPERATION_NAME},
            ),
            View(
                instrument_name=sc.METRIC_GEN_AI_INVOKE_AGENT_DURATION,
                aggregation=DropAggregation(),
            ),
        ],
    )
    try:
        _run_batches(meters, [[0.1, 0.2]])
        (point,) = _histogram_points(reader, sc.METRIC_GEN_AI_EXECUTE_TOOL_DURATION)
        assert dict(point.attributes) == {sc.GEN_AI_OPERATION_NAME: sc.OP_EXECUTE_TOOL}
        assert point.count == 2
    finally:
        meters.shutdown()


def test_decision_events_counted_through_the_batch_path() -> None:
    """Decision events on spans delivered in a batch are counted (the no-event shortcut does not skip them)."""
    from otel_agents import EnrichingSpanProcessor

    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    provider = TracerProvider()
    provider.add_span_processor(EnrichingSpanProcessor(AgentMetricsProcessor(meters)))
    tracer = provider.get_tracer("t")
    for _ in range(3):
        with tracer.start_as_current_span("plan", attributes={sc.GEN_AI_AGENT_NAME: "a"}) as span:
            span.add_event(sc.EVENT_AGENT_DECISION, {sc.AGENT_DECISION_TYPE: "route"})
    with tracer.start_as_current_span("plain work"):
        pass
    assert provider.force_flush(5000)
    (point,) = [
        p
        for p in _histogram_points(reader, sc.METRIC_AGENT_DECISIONS)
        if dict(p.attributes).get(sc.AGENT_DECISION_TYPE) == "route"
    ]
    assert point.value == 3
    meters.shutdown()
    provider.shutdown()


def test_shape_cache_keys_cover_every_attribute_of_the_series() -> None:
    """Spans that differ in any attribute of a series' attribute set get their own series (the shape cache key is complete)."""
    from otel_agents import _metrics

    assert set(_metrics._INFERENCE_KEYS) | {_metrics._AGENT} == {
        _metrics._OP,
        _metrics._PROVIDER,
        _metrics._REQUEST_MODEL,
        _metrics._RESPONSE_MODEL,
        _metrics._SERVER_ADDRESS,
        _metrics._SERVER_PORT,
        _metrics._AGENT,
    }
    assert set(_metrics._AGENT_KEYS) == {
        _metrics._OP,
        _metrics._PROVIDER,
        _metrics._AGENT,
        _metrics._REQUEST_MODEL,
        _metrics._SERVER_ADDRESS,
        _metrics._SERVER_PORT,
    }
    assert set(_metrics._TOOL_KEYS) == {
        _metrics._OP,
        _metrics._TOOL,
        _metrics._TOOL_TYPE,
        _metrics._AGENT,
    }
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    processor = AgentMetricsProcessor(meters)
    provider = TracerProvider()
    tracer = provider.get_tracer("t")
    spans: list[ReadableSpan] = []
    for port in (443, 8443):
        span = tracer.start_span("chat", attributes={**LLM_ATTRS, sc.SERVER_PORT: port})
        span.end()
        assert isinstance(span, ReadableSpan)  # the SDK's span, ended
        spans.append(span)
    processor.otel_agents_on_end_batch(spans)
    ports = sorted(
        dict(p.attributes)[sc.SERVER_PORT]
        for p in _histogram_points(reader, sc.METRIC_GEN_AI_CLIENT_OPERATION_DURATION)
    )
    assert ports == [443, 8443]
    meters.shutdown()
    provider.shutdown()


def test_batch_merge_follows_a_reader_added_later() -> None:
    """A metric reader added after the first merged batch receives the later batches (resolved targets are not stale)."""
    first = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[first])
    processor = AgentMetricsProcessor(meters)
    try:
        _run_batches(meters, [[0.1, 0.2]], processor)
        second = InMemoryMetricReader()
        meters.add_metric_reader(second)
        _run_batches(meters, [[0.4]], processor)
        (a,) = _histogram_points(first, sc.METRIC_GEN_AI_EXECUTE_TOOL_DURATION)
        (b,) = _histogram_points(second, sc.METRIC_GEN_AI_EXECUTE_TOOL_DURATION)
        assert a.count == 3 and b.count == 1
    finally:
        meters.shutdown()


def _collected(reader: InMemoryMetricReader) -> dict[tuple[str, tuple[Any, ...]], Any]:
    """Every collected point by (metric, attributes): values, buckets, histogram exemplars."""
    data = reader.get_metrics_data()
    assert data is not None
    out: dict[tuple[str, tuple[Any, ...]], Any] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                for p in m.data.data_points:
                    exemplars: list[Any]
                    if hasattr(p, "bucket_counts"):
                        shape = (p.count, p.min, p.max, tuple(p.bucket_counts))
                        total = p.sum
                        exemplars = [(e.value, e.span_id) for e in p.exemplars]
                    else:
                        # Sums keep random exemplars (the SDK's fixed-size reservoir), and a
                        # batch adds its sum once: only the values are compared.
                        shape, total, exemplars = (), p.value, []
                    key = (m.name, tuple(sorted(dict(p.attributes or {}).items())))
                    out[key] = (shape, pytest.approx(total), exemplars)
    return out


def test_grouped_batch_path_equals_span_by_span_recording() -> None:
    """A mixed batch (interleaved shapes, series shared by several shapes and by spans with events, unfinished, failed, unpriced, unhashable) collects exactly what span-by-span on_end does, exemplars included."""
    from opentelemetry.sdk.trace import Event
    from opentelemetry.trace import SpanContext, TraceFlags

    spans: list[ReadableSpan] = []

    def add(attrs: dict[str, Any], *, end: int | None = 1, status: Status | None = None,
            events: tuple[Event, ...] = ()) -> None:  # fmt: skip
        n = len(spans) + 1
        spans.append(
            ReadableSpan(
                name=f"s{n}",
                context=SpanContext(9, n, False, TraceFlags(n % 3 != 0)),
                attributes=attrs,
                events=events,
                status=status or Status(StatusCode.UNSET),
                start_time=1_000_000_000 * n,
                end_time=None if end is None else 1_000_000_000 * n + 7_000_000 * (n % 5 + end),
            )
        )

    chat = dict(LLM_ATTRS)
    other = {**LLM_ATTRS, sc.GEN_AI_REQUEST_MODEL: "gpt-4o-mini", sc.GEN_AI_USAGE_COST_AMOUNT: 0.5}
    agent = {sc.GEN_AI_OPERATION_NAME: sc.OP_INVOKE_AGENT, sc.GEN_AI_AGENT_NAME: "planner"}
    decision = Event(
        sc.EVENT_AGENT_DECISION, {sc.AGENT_DECISION_TYPE: "route"}, timestamp=5_000_000_000
    )
    for i in range(40):
        add({**chat, sc.GEN_AI_USAGE_INPUT_TOKENS: 100 + i})
        add({**other, sc.SERVER_PORT: ""} if i % 3 else other)  # "" and absent: one series
        add(agent, events=(decision,) if i % 4 == 0 else ())  # with events: span by span
        if i % 7 == 0:
            add({**chat, sc.GEN_AI_USAGE_COST_AMOUNT: None, sc.AGENT_COST_UNPRICED: True})
            add({**chat, sc.ERROR_TYPE: "timeout"}, status=Status(StatusCode.ERROR))
            add({**chat}, end=None)
            add({**chat, "tags": ["x", "y"], sc.GEN_AI_REQUEST_MODEL: ["a", "b"]})
        add({sc.GEN_AI_OPERATION_NAME: sc.OP_EXECUTE_TOOL, sc.GEN_AI_TOOL_NAME: "search"})
        add({"http.request.method": "GET"})

    def run(batched: bool) -> dict[tuple[str, tuple[Any, ...]], Any]:
        reader = InMemoryMetricReader()
        meters = MeterProvider(metric_readers=[reader], exemplar_filter=AlwaysOnExemplarFilter())
        processor = AgentMetricsProcessor(meters)
        spent: list[tuple[dict[str | None, float], dict[str | None, float]]] = []
        processor.add_spend_listener(lambda cost, tokens: spent.append((cost, tokens)))
        if batched:
            processor.otel_agents_on_end_batch(spans)
        else:
            for span in spans:
                processor.on_end(span)
        out = _collected(reader)
        costs: dict[str | None, float] = {}
        tokens: dict[str | None, float] = {}
        for c, t in spent:
            for k, v in c.items():
                costs[k] = costs.get(k, 0.0) + v
            for k, v in t.items():
                tokens[k] = tokens.get(k, 0) + v
        out[("spend", ())] = ((), pytest.approx(costs), [tokens])
        meters.shutdown()
        return out

    batched, one_by_one = run(True), run(False)
    assert batched.keys() == one_by_one.keys()
    for key, (shape, total, exemplars) in one_by_one.items():
        assert batched[key][0] == shape, key
        assert batched[key][1] == total.expected, key
        assert batched[key][2] == exemplars, key
