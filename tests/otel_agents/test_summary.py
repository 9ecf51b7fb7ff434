# SPDX-License-Identifier: Apache-2.0
"""run_summary figures equal the totals of the spans the run produced."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from otel_agents import semconv as sc
from otel_agents._summary import run_summary


@pytest.fixture
def tp() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def _llm(tracer: Any, i: int, *, fail: bool = False) -> None:
    attrs = {
        sc.GEN_AI_OPERATION_NAME: sc.OP_CHAT,
        sc.GEN_AI_REQUEST_MODEL: "gpt-4o",
        sc.GEN_AI_USAGE_INPUT_TOKENS: 100 + i,
        sc.GEN_AI_USAGE_OUTPUT_TOKENS: 10 + i,
        sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: i,
        sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: 2,
        sc.GEN_AI_USAGE_COST_AMOUNT: 0.001 * (i + 1),
        sc.GEN_AI_USAGE_COST_CURRENCY: "USD",
    }
    with tracer.start_as_current_span(
        "chat gpt-4o", kind=SpanKind.CLIENT, attributes=attrs
    ) as span:
        if fail:
            span.set_status(Status(StatusCode.ERROR))


def _workload(tracer: Any) -> None:
    with tracer.start_as_current_span(
        "invoke_agent planner",
        attributes={sc.GEN_AI_OPERATION_NAME: sc.OP_INVOKE_AGENT, sc.GEN_AI_AGENT_NAME: "planner"},
    ):
        for i in range(5):
            _llm(tracer, i)
        _llm(tracer, 9, fail=True)  # fails ...
        _llm(tracer, 9)  # ... and is retried under the same parent
        for name in ("search", "fetch"):
            with tracer.start_as_current_span(
                f"execute_tool {name}",
                attributes={
                    sc.GEN_AI_OPERATION_NAME: sc.OP_EXECUTE_TOOL,
                    sc.GEN_AI_TOOL_NAME: name,
                },
            ):
                pass
        with tracer.start_as_current_span(
            "chat unknown",
            attributes={sc.GEN_AI_OPERATION_NAME: sc.OP_CHAT, sc.AGENT_COST_UNPRICED: True},
        ):
            pass


def _expected(spans: list[ReadableSpan]) -> dict[str, Any]:
    def total(key: str) -> int:
        return sum(int((s.attributes or {}).get(key, 0)) for s in spans)  # type: ignore[call-overload]

    return {
        "spans": len(spans),
        "input_tokens": total(sc.GEN_AI_USAGE_INPUT_TOKENS),
        "output_tokens": total(sc.GEN_AI_USAGE_OUTPUT_TOKENS),
        "cache_read_tokens": total(sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS),
        "reasoning_tokens": total(sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS),
        "cost_usd": sum(
            float((s.attributes or {}).get(sc.GEN_AI_USAGE_COST_AMOUNT, 0.0)) for s in spans
        ),  # type: ignore[arg-type]
        "llm_calls": sum(
            (s.attributes or {}).get(sc.GEN_AI_OPERATION_NAME) == sc.OP_CHAT for s in spans
        ),
        "tool_calls": sum(
            (s.attributes or {}).get(sc.GEN_AI_OPERATION_NAME) == sc.OP_EXECUTE_TOOL for s in spans
        ),
        "errors": sum(s.status.status_code is StatusCode.ERROR for s in spans),
    }


def test_summary_matches_spans(tp: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    """Tokens, cost, calls, errors and retries equal what the exported spans carry."""
    provider, exporter = tp
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("outside before"):
        pass
    exporter.clear()
    with run_summary("research", tracer_provider=provider) as run:
        _workload(tracer)
    with tracer.start_as_current_span(
        "outside after", attributes={sc.GEN_AI_OPERATION_NAME: sc.OP_CHAT}
    ):
        pass
    spans = [s for s in exporter.get_finished_spans() if not s.name.startswith("outside")]
    s = run.summary
    exp = _expected(spans)
    got = {k: getattr(s, k) for k in exp}
    assert got.pop("cost_usd") == pytest.approx(exp.pop("cost_usd"))
    assert got == exp
    assert s.retries == 1 and s.unpriced_calls == 1 and s.agent_invocations == 1
    assert s.duration_s > 0 and s.peak_rss_bytes > 1_000_000
    assert s.peak_traced_bytes is None


def test_concurrent_runs_are_separate(tp: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    """Two runs in two threads each count only their own spans."""
    provider, _ = tp
    tracer = provider.get_tracer("t")
    results: dict[int, Any] = {}

    def worker(n: int) -> None:
        with run_summary(f"r{n}", tracer_provider=provider) as run:
            for i in range(n):
                _llm(tracer, i)
        results[n] = run.summary

    threads = [threading.Thread(target=worker, args=(n,)) for n in (3, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert results[3].llm_calls == 3 and results[7].llm_calls == 7
    assert results[3].input_tokens == sum(100 + i for i in range(3))


def test_trace_memory_peak(tp: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    """With trace_memory the tracemalloc peak covers an allocation made inside the run."""
    provider, _ = tp
    with run_summary("mem", tracer_provider=provider, trace_memory=True) as run:
        blob = [bytes(1024) for _ in range(1024)]
        del blob
    assert (
        run.summary.peak_traced_bytes is not None and run.summary.peak_traced_bytes >= 1024 * 1024
    )
