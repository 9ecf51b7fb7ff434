# SPDX-License-Identifier: Apache-2.0
"""Analysis metrics collector: names, batch updates, bounded label cardinality."""

from __future__ import annotations

from otel_agents.exporters._analysis_metrics import OVERFLOW, AnalysisMetrics
from otel_agents.processors._batch import build_span_batch
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from otel_agents import semconv as sc
from tests.processors._gen import GenSpan, TraceGen, request


def _families(reg: CollectorRegistry) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    out: dict[str, list[tuple[str, dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(generate_latest(reg).decode()):
        out[fam.name] = [(s.name, s.labels, s.value) for s in fam.samples]
    return out


def test_span_batch_counts_tokens_cost_and_durations() -> None:
    """A batch adds calls by status, GenAI-bucket durations, tokens and cost per agent/model."""
    reg = CollectorRegistry()
    m = AnalysisMetrics.for_registry(reg)
    assert AnalysisMetrics.for_registry(reg) is m  # one per registry
    gen = TraceGen(41)
    spans = gen.trace(0) + gen.trace(0, fault="error-burst")
    batch = build_span_batch(request(spans), pricebook=None, received_at=0.0)
    m.on_spans(batch)
    fams = _families(reg)
    calls = {(s[1]["name"], s[1]["status"]): s[2] for s in fams["otel_agents_operation_calls"]
             if s[0].endswith("_total")}  # fmt: skip
    assert calls[("web_search", "ok")] == 2 and calls[("web_search", "error")] == 2
    buckets = [s for s in fams["otel_agents_operation_duration_seconds"]
               if s[0].endswith("_bucket") and s[1]["name"] == "web_search"]  # fmt: skip
    assert [b[1]["le"] for b in buckets][-1] == "+Inf" and buckets[-1][2] == 4
    assert len(buckets) == len(sc.OPERATION_DURATION_BUCKETS) + 1
    tokens = {(s[1]["agent"], s[1]["token_type"]): s[2] for s in fams["otel_agents_tokens"]
              if s[0].endswith("_total")}  # fmt: skip
    inf = batch.is_inference & (batch.agent_name == "planner")
    assert tokens[("planner", "input")] == batch.input_tokens[inf].sum()
    cost = sum(s[2] for s in fams["otel_agents_cost_usd"] if s[0].endswith("_total"))
    assert abs(cost - batch.cost.sum()) < 1e-9


def test_label_cardinality_is_capped_with_overflow_series() -> None:
    """3000 distinct tool names make at most max_series series plus one overflow series."""
    reg = CollectorRegistry()
    m = AnalysisMetrics.for_registry(reg, max_series=50)
    gen = TraceGen(42)
    spans: list[GenSpan] = []
    for i in range(3000):
        g = gen.trace(0)[1]  # a web_search span
        for kv in g.span.attributes:
            if kv.key == sc.GEN_AI_TOOL_NAME:
                kv.value.string_value = f"tool-{i}"
        spans.append(g)
    m.on_spans(build_span_batch(request(spans), pricebook=None, received_at=0.0))
    fams = _families(reg)
    series = [s for s in fams["otel_agents_operation_calls"] if s[0].endswith("_total")]
    assert len(series) == 51
    over = [s for s in series if s[1]["name"] == OVERFLOW]
    # Each tool's series comes with its zero-valued other-outcome twin (ok/error), so 25 tools
    # fill the 50 slots and the other 2975 tools' calls are counted in the overflow series.
    assert len(over) == 1 and over[0][2] == 3000 - 50 // 2
    twins = [s for s in series if s[1]["name"] != OVERFLOW and s[1]["status"] == "error"]
    assert len(twins) == 25 and all(s[2] == 0 for s in twins)
    assert all(v == OVERFLOW for v in over[0][1].values())
