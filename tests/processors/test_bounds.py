# SPDX-License-Identifier: Apache-2.0
"""RC-13 style bounds: unique names and open traces cannot grow analysis state without limit."""

from __future__ import annotations

from pathlib import Path

import pytest
from otel_agents.processors import AgentAnalysis, AnalysisConfig
from otel_agents.processors._assembly import AssemblyConfig, TraceAssembler
from otel_agents.processors._batch import SpanBatch, build_span_batch
from otel_agents.processors._bottleneck import BottleneckState
from prometheus_client.parser import text_string_to_metric_families

from otel_agents import semconv as sc
from otel_agents._configtypes import decode

from ._gen import GenSpan, TraceGen, request
from ._host import TestHost

CAP = 100


def test_unique_names_and_open_traces_stay_bounded(tmp_path: Path) -> None:
    """5,000 distinct tool and agent names and 3,000 traces: every table stays at its cap."""
    host = TestHost(tmp_path)
    cfg = decode(
        AnalysisConfig,
        {
            "max_keys": CAP,
            "max_edges": CAP,
            "anomaly": {"max_keys": CAP, "interval": "1s"},
            "assembly": {"max_open_traces": 500, "decision_wait": "30s"},
        },
    )
    stage = AgentAnalysis(cfg)
    stage.start(host)
    gen = TraceGen(51)
    for rnd in range(6):
        spans: list[GenSpan] = []
        for i in range(500):
            for g in gen.trace(0):
                for kv in g.span.attributes:
                    if kv.key in (sc.GEN_AI_TOOL_NAME, sc.GEN_AI_AGENT_NAME):
                        kv.value.string_value = f"{kv.value.string_value}-{rnd}-{i % 900}"
                spans.append(g)
        stage.process_traces(build_span_batch(request(spans), pricebook=None, received_at=0.0))
        host.clock += 2.0
        stage.tick(host.clock)
        assert stage.assembler.open_traces <= 500
    host.clock += 60.0
    stage.tick(host.clock)
    assert stage.assembler.evicted == 2500 and stage.assembler.open_traces == 0
    for table in stage.anomaly._tables.values():
        assert len(table) <= CAP
    assert stage.anomaly.evicted_keys() > 0
    for bucket in stage.bottleneck._buckets.values():
        # one overflow key per analysis kind (tool, model, agent, a2a, other)
        assert len(bucket.cp) <= CAP + 5 and len(bucket.hist) <= CAP + 5
    assert len(stage.graph.edges) <= CAP + 3  # + one overflow edge per connection type
    for fam in text_string_to_metric_families(host.exposition()):
        series = {tuple(sorted(s.labels.items())) for s in fam.samples if "le" not in s.labels}
        assert len(series) <= CAP + 1, fam.name


def _distinct_tool_spans(gen: TraceGen, n: int) -> SpanBatch:
    """One batch of ``n`` tool spans, each naming its own tool (``tool-0`` ...)."""
    spans: list[GenSpan] = []
    for i in range(n):
        g = gen.trace(0)[1]
        for kv in g.span.attributes:
            if kv.key == sc.GEN_AI_TOOL_NAME:
                kv.value.string_value = f"tool-{i}"
        spans.append(g)
    return build_span_batch(request(spans), pricebook=None, received_at=0.0)


def test_interval_accumulators_are_capped() -> None:
    """One interval with 5,000 distinct tools accumulates at most the cap plus overflow keys."""
    from otel_agents.processors._anomaly import OVERFLOW, AnomalyConfig, AnomalyEngine

    eng = AnomalyEngine(AnomalyConfig(max_keys=10, detectors=("latency",)))
    eng.add_spans(_distinct_tool_spans(TraceGen(52), 5000))
    assert len(eng._acc) <= 2 * 10 + 1
    assert ("latency", ("researcher", "tool", "tool-0")) in eng._acc
    assert ("latency", (OVERFLOW, "tool", OVERFLOW)) in eng._acc


def test_interval_accumulator_cap_is_per_detector() -> None:
    """5,000 distinct tools fill only their own detector's share (2 x max_keys plus the
    overflow key) even beside an idle detector, and the folded values sit in one array."""
    from otel_agents.processors._anomaly import OVERFLOW, AnomalyConfig, AnomalyEngine

    # error_ratio sees no tool spans: a shared cap would have let latency take its share too.
    eng = AnomalyEngine(AnomalyConfig(max_keys=10, detectors=("latency", "error_ratio")))
    eng.add_spans(_distinct_tool_spans(TraceGen(53), 5000))
    per_det: dict[str, int] = {}
    for det, _key in eng._acc:
        per_det[det] = per_det.get(det, 0) + 1
    assert per_det == {"latency": 2 * 10 + 1}
    over = eng._acc[("latency", (OVERFLOW, "tool", OVERFLOW))]
    assert over.values.shape == (5000 - 2 * 10,)


def test_repeated_touches_keep_one_entry_per_open_trace() -> None:
    """Traces touched by many batches keep one last-touched entry each (not one per touch), and
    complete with every span once their quiet time has passed."""
    asm = TraceAssembler(AssemblyConfig(decision_wait=30.0, max_open_traces=1000))
    gen = TraceGen(54)
    traces = [gen.trace(0) for _ in range(50)]
    now = 1_700_000_000.0
    for rnd in range(20):  # every round sends one more span of each trace, 1 s apart
        spans = [t[rnd % len(t)] for t in traces]
        batch = build_span_batch(request(spans), pricebook=None, received_at=now)
        asm.add(batch, now)
        now += 1.0
        assert len(asm._quiet) == asm.open_traces == 50
    assert asm.collect(now + 28.0) is None  # the last touch was < decision_wait ago
    done = asm.collect(now + 29.0)
    assert done is not None and done.n_traces == 50 and asm.open_traces == 0
    assert done.spans.n + done.duplicates == 20 * 50


def _renamed_batch(gen: TraceGen, tag: str, traces: int) -> SpanBatch:
    """``traces`` generated traces with every agent, tool and model name made unique by ``tag``."""
    spans: list[GenSpan] = []
    for i in range(traces):
        for g in gen.trace(0):
            for kv in g.span.attributes:
                if kv.key in (sc.GEN_AI_TOOL_NAME, sc.GEN_AI_AGENT_NAME, sc.GEN_AI_REQUEST_MODEL):
                    kv.value.string_value = f"{kv.value.string_value}-{tag}-{i}"
            spans.append(g)
    return build_span_batch(request(spans), pricebook=None, received_at=0.0)


def test_bottleneck_key_cap_holds_across_the_window_and_frees_expired_keys() -> None:
    """Name churn over many buckets: the window holds at most max_keys keys (and cost rows) in
    all its buckets together, not per bucket, and keys free their slots when they leave it."""
    state = BottleneckState(bucket=10.0, window=60.0, max_keys=CAP)
    asm = TraceAssembler(AssemblyConfig(decision_wait=1.0))
    gen = TraceGen(52)
    now = 1_700_000_000.0

    def feed(tag: str) -> None:
        asm.add(_renamed_batch(gen, tag, 40), now)
        done = asm.collect(now + 5.0, flush=True)
        assert done is not None
        state.add(done, now)

    for b in range(6):  # six 10 s buckets, all inside the 60 s window
        feed(f"b{b}")
        now += 10.0
    keys = {k for bk in state._buckets.values() for k in bk.hist if k[0] != "__overflow__"}
    cost = {k for bk in state._buckets.values() for k in bk.cost if k[0] != "__overflow__"}
    assert len(keys) == CAP and len(cost) <= CAP
    assert all(len(bk.hist) <= 5 for bk in list(state._buckets.values())[1:])  # overflow only
    assert state.keys_overflowed > 0
    now += 70.0  # past the window: every admitted key has expired
    feed("fresh")
    fresh = [k for bk in state._buckets.values() for k in bk.hist if k[0] != "__overflow__"]
    assert fresh and all("-fresh-" in k[0] or "-fresh-" in k[2] for k in fresh)


def test_unique_model_names_do_not_grow_the_price_library_caches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unknown model names flooding the price book leave genai-prices' memo tables bounded."""
    from genai_prices import data_snapshot

    from otel_agents import _cost

    monkeypatch.setattr(_cost, "_CACHE_LIMIT", 50)
    book = _cost.PriceBook()
    for i in range(300):
        assert (
            book.price(model=f"rc13-model-{i}", provider=None, input_tokens=10, output_tokens=1)
            is None
        )
    snap = data_snapshot.get_snapshot()
    assert len(snap._provider_misses) <= 51 and len(snap._provider_cache) <= 51
