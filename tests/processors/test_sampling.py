# SPDX-License-Identifier: Apache-2.0
"""Analysis sampling: the OTel consistent probability rule, shard agreement, HT estimates, and
the CPU-budget controller."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from otel_agents.processors._batch import build_span_batch
from otel_agents.processors._sampling import (
    MAX_THRESHOLD,
    AnalysisBudget,
    adjusted_count,
    parse_ot_tracestate,
    probability_to_threshold,
    randomness,
    th_to_threshold,
    threshold_to_probability,
    threshold_to_th,
)

from ._gen import MS, TraceGen, request
from ._scenario import Scenario
from .test_analysis_faults import EXPECTED, _matches

# "Converting floating-point probability to threshold value": the spec's table of 1-in-N
# probabilities and their th values at precision 3, 4 and 5.
SPEC_TABLE = [
    (1.0, ("0", "0", "0")),
    (0.5, ("8", "8", "8")),
    (1 / 3, ("aab", "aaab", "aaaab")),
    (0.25, ("c", "c", "c")),
    (0.2, ("ccd", "cccd", "ccccd")),
    (0.125, ("e", "e", "e")),
    (0.1, ("e66", "e666", "e6666")),
    (0.0625, ("f", "f", "f")),
    (0.01, ("fd71", "fd70a", "fd70a4")),
    (0.001, ("ffbe7", "ffbe77", "ffbe76d")),
    (0.0001, ("fff972", "fff9724", "fff97247")),
    (0.00001, ("ffff584", "ffff583a", "ffff583a5")),
    (0.000001, ("ffffef4", "ffffef39", "ffffef391")),
]


@pytest.mark.parametrize(("p", "expected"), SPEC_TABLE)
def test_probability_to_threshold_matches_the_spec_table(
    p: float, expected: tuple[str, ...]
) -> None:
    """Thresholds for the spec's 1-in-N table match its th values at precisions 3, 4 and 5."""
    got = tuple(threshold_to_th(probability_to_threshold(p, prec)) for prec in (3, 4, 5))
    assert got == expected


def test_th_encoding_round_trips_and_rejects_malformed_values() -> None:
    """th values decode to 56-bit thresholds (trailing zeros implied) and encode back."""
    assert th_to_threshold("8") == 1 << 55
    assert th_to_threshold("0") == 0
    assert th_to_threshold("fd70a4") == 0xFD70A400000000
    assert threshold_to_th(0xFD70A400000000) == "fd70a4"
    for bad in ("", "g", "F", "123456789abcdef", "8 "):
        assert th_to_threshold(bad) is None
    assert threshold_to_probability(1 << 55) == 0.5
    assert adjusted_count(0xC0000000000000) == 4.0


def test_tracestate_rv_overrides_trace_id_randomness() -> None:
    """The ot entry's rv is the randomness when present; else the trace ID's last 7 bytes."""
    tid = bytes.fromhex("0123456789abcdef00f0e0d0c0b0a090")
    assert randomness(tid) == 0xF0E0D0C0B0A090
    ts = "vendor=x,ot=th:c;rv:0a0b0c0d0e0f10,other=y"
    assert parse_ot_tracestate(ts) == (0xC0000000000000, 0x0A0B0C0D0E0F10)
    assert randomness(tid, ts) == 0x0A0B0C0D0E0F10
    assert parse_ot_tracestate("ot=rv:short;th:zz") == (None, None)
    assert randomness(tid, "ot=th:8") == 0xF0E0D0C0B0A090


def _batch_trace_ids(req: ExportTraceServiceRequest, threshold: int) -> set[bytes]:
    b = build_span_batch(req, pricebook=None, received_at=0.0, threshold=threshold)
    return set(b.trace_id.tolist())


def _traces(n: int, seed: int) -> list[ExportTraceServiceRequest]:
    gen = TraceGen(seed)
    return [request(gen.trace(1_700_000_000_000 * MS + i * MS)) for i in range(n)]


def test_decisions_follow_the_threshold_rule_and_keep_whole_traces() -> None:
    """A trace is analysed iff its randomness >= T, with every one of its spans, weight 1/p."""
    reqs = _traces(200, seed=3)
    t = probability_to_threshold(0.3)
    kept = 0
    for req in reqs:
        spans = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
        b = build_span_batch(req, pricebook=None, received_at=0.0, threshold=t)
        by_trace: dict[bytes, int] = {}
        for s in spans:
            by_trace[s.trace_id] = by_trace.get(s.trace_id, 0) + 1
        for tid, count in by_trace.items():
            expect = int.from_bytes(tid[-7:], "big") >= t
            assert int((b.trace_id == tid).sum()) == (count if expect else 0)
            kept += expect
        assert np.allclose(b.weight, adjusted_count(t))
        assert b.analysed_fraction == pytest.approx(0.3, rel=1e-4)
    # 200 uniform trace IDs at p = 0.3: a binomial(200, 0.3) count, 8 sigma apart from 0 or 200.
    assert 30 < kept < 100


def test_shards_by_trace_id_agree_with_the_single_instance() -> None:
    """Traces routed to 3 receivers by trace ID (as the Collector's loadbalancing exporter does)
    and sampled at one threshold keep exactly the traces one receiver keeps."""
    spans = [s for req in _traces(150, seed=5) for rs in req.resource_spans
             for ss in rs.scope_spans for s in ss.spans]  # fmt: skip
    t = probability_to_threshold(0.25)
    whole = ExportTraceServiceRequest()
    whole.resource_spans.add().scope_spans.add().spans.extend(spans)
    shards = [ExportTraceServiceRequest() for _ in range(3)]
    for shard in shards:
        shard.resource_spans.add().scope_spans.add()
    for s in spans:
        # Routed by the trace ID's first bytes, independent of the randomness bytes.
        shard = shards[int.from_bytes(s.trace_id[:4], "big") % 3]
        shard.resource_spans[0].scope_spans[0].spans.append(s)
    merged = set().union(*(_batch_trace_ids(sh, t) for sh in shards))
    assert merged == _batch_trace_ids(whole, t)
    assert 0 < len(merged) < 150


def test_upstream_threshold_composes_as_a_downstream_sampler() -> None:
    """Spans already sampled upstream (ot=th) are weighted relative to arrivals: an upstream
    threshold at or above ours keeps weight 1; below it, the conditional probability."""
    gen = TraceGen(9)
    t = probability_to_threshold(0.5)  # th:8
    base = 1_700_000_000_000 * MS
    cases = []
    for i, ts in enumerate(
        ("ot=th:c", "ot=th:4", "ot=th:4;rv:ffffffffffffff", "ot=rv:00000000000001")
    ):
        req = request(gen.trace(base + i * MS))
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    s.trace_state = ts
        cases.append(build_span_batch(req, pricebook=None, received_at=0.0, threshold=t))
    c_hi, c_lo, c_rv_hi, c_rv_lo = cases
    # th:c (25 %) upstream > our th:8: nothing more removed, weight 1 when kept.
    assert c_hi.n == 0 or np.all(c_hi.weight == 1.0)
    # rv forces the decision: all kept / none kept whatever the trace ID.
    assert c_rv_hi.n > 0 and c_rv_lo.n == 0
    # th:4 (75 %) upstream, ours 50 %: P(keep | arrived) = 0.5 / 0.75.
    assert np.allclose(c_rv_hi.weight, 0.75 / 0.5)
    if c_lo.n:
        assert np.allclose(c_lo.weight, 0.75 / 0.5)


class _Plant:
    """A receiver whose analysis costs ``full_cost`` cores at 100 % and the rest ``other``."""

    def __init__(self, other: float, full_cost: float) -> None:
        self.t = 0.0
        self.proc = 0.0
        self.analysis = 0.0
        self.other = other
        self.full_cost = full_cost

    def step(self, fraction: float, dt: float = 1.0) -> None:
        a = self.full_cost * fraction * dt
        self.analysis += a
        self.proc += a + self.other * dt
        self.t += dt


def _budget(plant: _Plant, **kw: object) -> AnalysisBudget:
    return AnalysisBudget(
        "adaptive",
        process_cpu=lambda: plant.proc,
        clock=lambda: plant.t,
        **kw,  # type: ignore[arg-type]
    )


def test_controller_keeps_analysis_within_budget_under_load() -> None:
    """At a load where full analysis would cost 3x the rest, the fraction settles so analysis
    stays at or under 30 % of the rest, and holds (hysteresis) once there."""
    plant = _Plant(other=0.8, full_cost=2.4)
    budget = _budget(plant)
    budget.update(plant.analysis)
    fractions = []
    for _ in range(40):
        plant.step(budget.effective_fraction)
        fractions.append(budget.update(plant.analysis))
    share = plant.full_cost * budget.effective_fraction / plant.other
    assert 0.15 < share <= 0.3 + 1e-9, (share, fractions)
    assert len(set(fractions[-10:])) == 1  # settled: no flapping inside the band


def test_controller_analyses_everything_when_load_allows() -> None:
    """Light traffic (analysis below the floor) stays at 100 %, and after a burst the fraction
    returns to 100 % once the load is gone."""
    plant = _Plant(other=0.02, full_cost=0.01)
    budget = _budget(plant)
    budget.update(0.0)
    for _ in range(10):
        plant.step(budget.effective_fraction)
        budget.update(plant.analysis)
    assert budget.fraction == 1.0
    plant.other, plant.full_cost = 1.0, 3.0  # burst
    for _ in range(10):
        plant.step(budget.effective_fraction)
        budget.update(plant.analysis)
    assert budget.fraction < 0.2
    plant.other, plant.full_cost = 0.02, 0.01  # quiet again
    for _ in range(30):
        plant.step(budget.effective_fraction)
        budget.update(plant.analysis)
    assert budget.fraction == 1.0


def test_controller_waits_for_a_full_window_and_fixed_modes_do_not_adapt() -> None:
    """Updates inside one window change nothing; ``off`` and a fixed fraction never move."""
    plant = _Plant(other=1.0, full_cost=5.0)
    budget = _budget(plant, window=2.0)
    budget.update(0.0)
    plant.step(1.0, dt=1.0)
    assert budget.update(plant.analysis) == 1.0  # half a window: no decision yet
    plant.step(1.0, dt=1.0)
    assert budget.update(plant.analysis) < 1.0
    for mode, expect in (("off", 1.0), (0.2, 0.2)):
        fixed = AnalysisBudget(mode, process_cpu=lambda: plant.proc, clock=lambda: plant.t)
        for _ in range(5):
            plant.step(1.0)
            fixed.update(plant.analysis)
        assert fixed.fraction == expect
    assert AnalysisBudget(0.2).threshold == probability_to_threshold(0.2)
    with pytest.raises(ValueError):
        AnalysisBudget(0.0)


def test_fault_is_found_at_a_forced_20_percent_sample(tmp_path: Path) -> None:
    """At 20 % analysis sampling (5x the traffic, as under load), a slow tool is still named
    within 30 s, and the cost roll-up estimates the unsampled total within 15 %."""
    sc = Scenario(tmp_path / "sampled", sample=0.2, rate=5)
    truth = Scenario(tmp_path / "full", rate=5)  # same seed: the same traffic, all analysed
    sc.run(120)
    truth.run(120)
    assert not [f for f in sc.host.findings if f.severity != "info"]
    start = sc.host.clock
    sc.run(30, fault="slow-tool", fault_share=0.5)
    truth.run(30, fault="slow-tool", fault_share=0.5)
    kind, labels = EXPECTED["slow-tool"]
    hits = [f for f in sc.host.findings if _matches(f, kind, labels)]
    assert hits and min(f.observed_at for f in hits) - start <= 30.0
    status, body = sc.host.get("/api/v1/agents")
    assert status == 200
    assert body["sampling"]["estimated"] is True
    assert body["sampling"]["analysed_fraction"] == pytest.approx(0.2, rel=1e-3)
    estimated = {c["agent"]: c for c in body["cost_by_agent"]}
    _, full = truth.host.get("/api/v1/agents")
    assert full["sampling"] == {
        "analysed_fraction": 1.0, "estimated": False, "scaled": body["sampling"]["scaled"],
    }  # fmt: skip
    for c in full["cost_by_agent"]:
        est = estimated[c["agent"]]
        assert est["cost_usd"] == pytest.approx(c["cost_usd"], rel=0.15)
        assert est["calls"] == pytest.approx(c["calls"], rel=0.15)
        assert est["input_tokens"] == pytest.approx(c["input_tokens"], rel=0.15)


def test_report_shows_the_analysed_fraction(tmp_path: Path) -> None:
    """The demo report says what fraction was analysed and marks sampled costs as estimates."""
    from otel_agents.processors import render_report

    full = Scenario(tmp_path / "a")
    full.run(20)
    assert "analysed: 100% of traces" in render_report([], full.stage.rollups())
    sampled = Scenario(tmp_path / "b", sample=0.25, rate=4)
    sampled.run(20)
    text = render_report([], sampled.stage.rollups())
    assert "now 25.0%" in text and "estimated" in text


def test_randomness_uses_exactly_56_bits() -> None:
    """Only the trace ID's last 7 bytes matter: the 8th-from-last byte never changes a decision."""
    rng = random.Random(1)
    t = probability_to_threshold(0.5)
    for _ in range(100):
        tid = bytearray(rng.randbytes(16))
        r = randomness(bytes(tid))
        tid[8] ^= 0xFF
        assert randomness(bytes(tid)) == r < MAX_THRESHOLD
        assert (r >= t) == (tid[9] >= 0x80)


def test_controller_holds_its_fraction_while_nothing_arrives() -> None:
    """Idle windows (no spans offered) carry no load information: the fraction stays where the
    last burst left it, and rises again once light traffic arrives."""
    plant = _Plant(other=1.0, full_cost=3.0)
    budget = _budget(plant)
    offered = 0
    budget.update(0.0, offered)
    for _ in range(10):
        plant.step(budget.effective_fraction)
        offered += 1000
        budget.update(plant.analysis, offered)
    low = budget.fraction
    assert low < 0.2
    plant.other, plant.full_cost = 0.0, 0.0
    for _ in range(20):
        plant.step(budget.effective_fraction)
        budget.update(plant.analysis, offered)  # nothing offered
    assert budget.fraction == low
    plant.other, plant.full_cost = 0.02, 0.01
    for _ in range(30):
        plant.step(budget.effective_fraction)
        offered += 10
        budget.update(plant.analysis, offered)
    assert budget.fraction == 1.0


def test_alert_cost_rules_see_estimates_of_all_traffic(tmp_path: Path) -> None:
    """A cost-rate alert rule sums sampled spans' cost × 1/p, so budget alerts do not under-fire
    when only a sample is analysed."""
    from otel_agents.processors._alert import AlertConfig, create_alert_engine

    from otel_agents._configtypes import decode

    from ._host import TestHost

    gen = TraceGen(21)
    reqs = [request(gen.trace(1_700_000_000_000 * MS + i * MS)) for i in range(300)]
    t = probability_to_threshold(0.25)
    totals = []
    for threshold in (0, t):
        (tmp_path / str(threshold)).mkdir()
        host = TestHost(tmp_path / str(threshold))
        engine = create_alert_engine(decode(AlertConfig, {}), "alert")
        engine.start(host)
        for req in reqs:
            batch = build_span_batch(
                req, pricebook=None, received_at=host.clock, threshold=threshold
            )
            engine.process_traces(batch)
        rule = next(e for e in engine._evaluators if e.rule.name == "CostPerHourHigh")
        totals.append(sum(float(b.buckets[-1][1][0]) for b in rule._series.values()))
    full, estimated = totals
    assert full > 0
    assert estimated == pytest.approx(full, rel=0.2)
