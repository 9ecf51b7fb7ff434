# SPDX-License-Identifier: Apache-2.0
"""Opt-in profiling attaches cProfile top functions and tracemalloc figures to the span."""

from __future__ import annotations

import tracemalloc

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_agents import semconv as sc
from otel_agents._profiling import profile_span


def _hot_function() -> int:
    return sum(i * i for i in range(200_000))


def _allocate() -> list[bytes]:
    return [bytes(1024) for _ in range(2048)]  # ~2 MiB kept alive until the block ends


def test_profile_attaches_to_current_span() -> None:
    """The span gets the hot function in its top list, CPU time and a peak >= the allocation."""
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    with tp.get_tracer("t").start_as_current_span("plan"), profile_span(top_n=5) as prof:
        _hot_function()
        kept = _allocate()
        del kept
    (span,) = exporter.get_finished_spans()
    attrs = dict(span.attributes or {})
    top = list(attrs[sc.AGENT_PROFILE_TOP])
    assert 1 <= len(top) <= 5
    assert any("_hot_function" in row for row in top)
    assert attrs[sc.AGENT_PROFILE_MEMORY_PEAK] >= 2048 * 1024
    assert attrs[sc.AGENT_PROFILE_MEMORY_PEAK] == prof.memory_peak_bytes
    assert attrs[sc.AGENT_PROFILE_CPU_TIME] > 0
    assert not tracemalloc.is_tracing()  # we started it, we stopped it


def test_profile_without_span_or_with_running_tracemalloc() -> None:
    """Outside any span it still measures; an app's own tracemalloc session is left running."""
    tracemalloc.start()
    try:
        with profile_span(top_n=3) as prof:
            kept = _allocate()
            del kept
        assert tracemalloc.is_tracing()
        assert prof.memory_peak_bytes >= 2048 * 1024
        assert len(prof.top_functions) <= 3
    finally:
        tracemalloc.stop()
