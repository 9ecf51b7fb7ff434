# SPDX-License-Identifier: Apache-2.0
"""Analysis metrics collector: names, batch updates, bounded label cardinality."""

from __future__ import annotations

import gzip
import random
import urllib.request

import numpy as np
from otel_agents.exporters._analysis_metrics import OVERFLOW, AnalysisMetrics, exposition_chunks
from otel_agents.processors._batch import build_span_batch
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.parser import text_string_to_metric_families

from otel_agents import semconv as sc
from otel_agents.receiver._admin import AdminServer
from otel_agents.receiver._transport_config import AdminConfig
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


def test_sampled_batch_counts_estimate_all_traffic() -> None:
    """Under analysis sampling each analysed span counts with its weight (1/p): calls, bucket
    counts, duration sums, tokens and cost are the unsampled figures times the weight."""
    gen = TraceGen(43)
    spans = gen.trace(0) + gen.trace(0, fault="error-burst")
    full = build_span_batch(request(spans), pricebook=None, received_at=0.0)
    weighted = full.with_columns(weight=np.full(full.n, 4.0))
    figures = []
    for batch in (full, weighted):
        reg = CollectorRegistry()
        AnalysisMetrics.for_registry(reg).on_spans(batch)
        figures.append(
            {
                (name, tuple(sorted(labels.items()))): v
                for fam in _families(reg).values()
                for name, labels, v in fam
            }
        )
    assert figures[0].keys() == figures[1].keys()
    for key, v in figures[0].items():
        assert abs(figures[1][key] - 4.0 * v) < 1e-6 * max(1.0, v), key


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


def _churned(max_series: int, names: int, seed: int) -> tuple[CollectorRegistry, AnalysisMetrics]:
    """A registry whose analysis families hold ``names`` churned label sets (some with the
    characters the exposition must escape) next to an ordinary prometheus_client counter."""
    reg = CollectorRegistry()
    Counter("other_requests", "A metric of another collector.", ["code"], registry=reg).labels(
        "200"
    ).inc(3)
    m = AnalysisMetrics.for_registry(reg, max_series=max_series)
    rng = random.Random(seed)
    nb = len(sc.OPERATION_DURATION_BUCKETS) + 1
    for i in range(names):
        agent = f'agent-{rng.randrange(names)}"q\\b' if i % 7 == 0 else f"agent-{i}"
        model = f"model-\n{i}" if i % 11 == 0 else f"model-{rng.randrange(names)}"
        counts = np.asarray([rng.randrange(3) for _ in range(nb)], np.int64) * 10**5
        m.calls.add((agent, "model", model, "ok"), 1.0)
        m.calls.ensure((agent, "model", model, "error"))
        m.duration.observe_counts((agent, "model", model), counts, 1.5e7 * rng.random())
        m.cost.add((agent, model), rng.random())
        m.tokens.add((agent, model, sc.TOKEN_TYPE_INPUT), float(rng.randrange(10**9)))
        m.g_seconds.observe_counts((agent, model, "agent"), np.ones(12, np.int64), 0.25)
    m.on_assembly(completed=5, evicted=1, late=0, orphans={"missing_parent": 2}, open_traces=3)
    m.set_scores([])
    return reg, m


def test_direct_exposition_is_byte_identical_to_prometheus_client() -> None:
    """The streamed rendering equals prometheus_client's own text and OpenMetrics output."""
    reg, _ = _churned(max_series=300, names=800, seed=7)
    for encoder, om in ((generate_latest, False), (openmetrics.generate_latest, True)):
        chunks = list(exposition_chunks(reg, encoder, openmetrics=om))
        assert len(chunks) > 3  # streamed, not one body
        assert max(len(c) for c in chunks[1:]) < 2 * 64 * 1024
        assert b"".join(chunks) == encoder(reg)
    # The registry's own rendering still includes the analysis families (other threads).
    assert b"otel_agents_operation_calls_total{" in generate_latest(reg)


def test_overflow_measurements_are_counted_per_family() -> None:
    """Label sets beyond the cap are folded into __overflow__ and counted per family."""
    reg, m = _churned(max_series=100, names=400, seed=8)
    fams = _families(reg)
    over = {s[1]["metric"]: s[2] for s in fams["otel_agents_metric_overflow"]
            if s[0].endswith("_total")}  # fmt: skip
    assert set(over) == {f.name for f in m.families}  # every family, 0 until it overflows
    assert over["otel_agents_cost_usd"] == m.cost.overflowed > 0
    assert over["otel_agents_operation_duration_seconds"] == 400 - 100
    assert over["otel_agents_traces_completed"] == 0
    cost = [s for s in fams["otel_agents_cost_usd"] if s[0].endswith("_total")]
    assert len(cost) == 101 and sum(1 for s in cost if s[1]["agent"] == OVERFLOW) == 1


def test_admin_metrics_streams_chunked_gzip_and_openmetrics() -> None:
    """/metrics of a real admin server streams every format the parsers accept, gzip too."""
    reg, _ = _churned(max_series=2000, names=2500, seed=9)
    server = AdminServer(AdminConfig(endpoint="127.0.0.1:0"), reg)
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as plain:
            assert plain.headers["Transfer-Encoding"] == "chunked"
            text = plain.read().decode()
        assert text.encode() == generate_latest(reg)
        names = {f.name for f in text_string_to_metric_families(text)}
        assert {"otel_agents_operation_duration_seconds", "other_requests"} <= names
        req = urllib.request.Request(
            url,
            headers={"Accept": "application/openmetrics-text; version=1.0.0",
                     "Accept-Encoding": "gzip"},
        )  # fmt: skip
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.headers["Content-Encoding"] == "gzip"
            assert r.headers["Content-Type"].startswith("application/openmetrics-text")
            om_text = gzip.decompress(r.read()).decode()
        assert om_text.endswith("# EOF\n") and om_text.count("# EOF") == 1
        parsed = {f.name: f for f in openmetrics_parser.text_string_to_metric_families(om_text)}
        hist = parsed["otel_agents_operation_duration_seconds"]
        assert hist.type == "histogram"
        assert len([s for s in hist.samples if s.name.endswith("_count")]) == 2000 + 1
        assert parsed["other_requests"].samples[0].value == 3
    finally:
        server.stop()
