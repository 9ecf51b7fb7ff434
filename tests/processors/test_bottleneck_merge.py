# SPDX-License-Identifier: Apache-2.0
"""Bottleneck aggregates: sharded analysis merges to the single-instance result; quantiles."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from otel_agents.processors._assembly import AssemblyConfig, TraceAssembler
from otel_agents.processors._batch import SpanBatch, build_span_batch
from otel_agents.processors._bottleneck import (
    BottleneckState,
    latency_bin,
    quantile_from_hist,
)
from otel_agents.processors._graph import GraphState

from ._gen import MS, TraceGen, request

T0 = 1_700_000_000.0
FAULTS = (None, None, None, "slow-tool", "tool-loop", "a2a-break", "cost-runaway")


def _approx(a: Any, b: Any, path: str = "") -> None:
    """Equal structures; floats equal up to summation-order rounding."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _approx(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _approx(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12), path
    else:
        assert a == b, path


def _shard_of(batch: SpanBatch, n: int) -> np.ndarray:  # type: ignore[type-arg]
    # The loadbalancing exporter's routing key: the trace ID.
    return np.array([int.from_bytes(bytes(t)[:8], "big") % n for t in batch.trace_id])


def test_sharded_state_merges_to_single_instance_state() -> None:
    """Traces partitioned by trace ID over 3 instances merge to exactly the 1-instance state."""
    gen = TraceGen(21)
    n_shards = 3
    single = (TraceAssembler(AssemblyConfig(decision_wait=5)), BottleneckState(), GraphState())
    shards = [
        (TraceAssembler(AssemblyConfig(decision_wait=5)), BottleneckState(), GraphState())
        for _ in range(n_shards)
    ]
    now = T0
    for sec in range(90):
        spans = []
        for j in range(2):
            spans += gen.trace(int(now * 1e9) - 3000 * MS, fault=FAULTS[(sec + j) % len(FAULTS)])
        batch = build_span_batch(request(spans), pricebook=None, received_at=now)
        part = _shard_of(batch, n_shards)
        single[0].add(batch, now)
        for i, (asm, _, _) in enumerate(shards):
            asm.add(batch.take(part == i), now)
        now += 1.0
        for asm, state, graph in (single, *shards):
            done = asm.collect(now)
            if done is not None:
                state.add(done, now)
                graph.add(done)
    merged, merged_graph = BottleneckState(), GraphState()
    for _, state, graph in shards:
        merged.merge(state)
        merged_graph.merge(graph)
    _approx(merged.snapshot(now), single[1].snapshot(now))
    _approx(merged_graph.to_json(), single[2].to_json())
    _approx(merged.session_rollups(), single[1].session_rollups())
    snap = single[1].snapshot(now)
    assert snap["traces"] > 100 and snap["bottlenecks"]
    # Shares sum to one over the window.
    assert sum(b["share"] for b in snap["bottlenecks"]) == pytest.approx(1.0)


def test_window_forgets_old_buckets() -> None:
    """Aggregates older than the window no longer count."""
    gen = TraceGen(22)
    asm = TraceAssembler(AssemblyConfig(decision_wait=1))
    state = BottleneckState(bucket=10, window=60)
    batch = build_span_batch(request(gen.trace(0)), pricebook=None, received_at=T0)
    asm.add(batch, T0)
    done = asm.collect(T0 + 2)
    assert done is not None
    state.add(done, T0 + 2)
    assert state.snapshot(T0 + 30)["traces"] == 1
    assert state.snapshot(T0 + 100)["traces"] == 0
    assert state.bottlenecks(T0 + 100) == []


def test_quantiles_from_log_histogram_are_within_bin_error() -> None:
    """p50/p95 from the log histogram are within one bin (15 %) of the exact quantile."""
    rng = np.random.default_rng(5)
    vals = rng.lognormal(mean=-1.0, sigma=0.8, size=5000)
    hist = np.bincount(latency_bin(vals), minlength=162)
    for q in (0.5, 0.95):
        exact = float(np.quantile(vals, q))
        est = quantile_from_hist(hist, q)
        assert exact <= est * 1.0001 and est <= exact * 1.15 + 1e-12
    assert quantile_from_hist(np.zeros(162, dtype=np.int64), 0.5) == 0.0
    assert math.isfinite(quantile_from_hist(hist, 1.0))


def test_explanation_names_subject_and_figures() -> None:
    """The bottleneck sentence names the tool, agent, share, trace count and window."""
    gen = TraceGen(23)
    asm = TraceAssembler(AssemblyConfig(decision_wait=1))
    state = BottleneckState(window=300)
    spans = []
    for _ in range(10):
        spans += gen.trace(0, fault="slow-tool")
    asm.add(build_span_batch(request(spans), pricebook=None, received_at=T0), T0)
    done = asm.collect(T0 + 2)
    assert done is not None
    state.add(done, T0 + 2)
    top = state.bottlenecks(T0 + 2)[0]
    assert (top.agent, top.kind, top.name) == ("researcher", "tool", "web_search")
    text = top.explanation()
    assert text.startswith("tool `web_search` under agent `researcher` is ")
    assert "% of critical-path time across 10 traces in the last 5 min" in text
