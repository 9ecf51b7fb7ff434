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
    """A simulated receiver: the rest of it costs ``other`` s per span received, analysis
    ``skip`` s per span offered and ``analysed`` s per span it keeps; the analysis thread
    reads every ``dt`` seconds what arrived since."""

    def __init__(self, other: float = 3e-6, skip: float = 0.3e-6, analysed: float = 13e-6) -> None:
        self.t = 0.0
        self.proc = 0.0
        self.analysis = 0.0
        self.arrived = 0
        self.other, self.skip, self.analysed = other, skip, analysed

    def read(self, budget: AnalysisBudget, rate: float, dt: float) -> float:
        """One read of ``rate`` x ``dt`` spans; returns the fraction it was analysed at."""
        spans = int(rate * dt)
        self.t += dt
        self.arrived += spans
        self.proc += self.other * spans
        if spans == 0:
            budget.plan(0, self.analysis, self.arrived)
            return budget.effective_fraction
        budget.plan(spans, self.analysis, self.arrived)
        p = budget.effective_fraction
        skip, kept = self.skip * spans, round(p * spans)
        cost = skip + kept * self.analysed
        self.analysis += cost
        self.proc += cost
        budget.record_offered(spans, skip)
        budget.record_analysed(kept, kept * self.analysed)
        return p

    def tick(self, budget: AnalysisBudget, cost: float) -> None:
        """Deferred analysis work (trace completion) with no spans read."""
        self.analysis += cost
        self.proc += cost
        budget.plan(0, self.analysis, self.arrived)


def _budget(plant: _Plant, **kw: object) -> AnalysisBudget:
    return AnalysisBudget(
        "adaptive",
        process_cpu=lambda: plant.proc,
        clock=lambda: plant.t,
        **kw,  # type: ignore[arg-type]
    )


def test_a_burst_from_start_stays_within_budget_from_its_first_reads() -> None:
    """At 250k spans/s (full analysis would cost 4x the rest) analysis CPU stays within
    cpu_budget x the rest over the first 0.2 s, the first second, and every later second."""
    plant = _Plant(skip=0.2e-6)
    budget = _budget(plant)
    a0, p0 = plant.analysis, plant.proc
    for step in range(100):  # 5 s of 50-ms reads
        plant.read(budget, 250_000, 0.05)
        if step + 1 in (4, 20) or (step + 1) % 20 == 0:
            analysis = plant.analysis - a0
            other = plant.proc - p0 - analysis
            assert analysis <= budget.cpu_budget * other, (step, analysis, other)
    # Settled at what fits MARGIN x budget: (0.35 x 0.3 x 3 - 0.2) / 13 = 0.9 %.
    expected = (budget.MARGIN * budget.cpu_budget * plant.other - plant.skip) / plant.analysed
    assert budget.fraction == pytest.approx(expected, rel=0.25)


def test_light_traffic_is_analysed_in_full_and_returns_to_full_after_a_burst() -> None:
    """A few hundred spans a second (and a single 1,000-span request after a quiet spell) are
    analysed at 100 %; after a burst, light traffic is back at 100 % within a second."""
    plant = _Plant()
    budget = _budget(plant)
    assert [plant.read(budget, 500, 0.1) for _ in range(50)] == [1.0] * 50
    for _ in range(20):
        plant.read(budget, 0, 1.0)  # idle ticks
    assert plant.read(budget, 1000 / 0.25, 0.25) == 1.0  # one 1,000-span request
    for _ in range(40):
        plant.read(budget, 250_000, 0.05)
    assert budget.fraction < 0.05
    light = [plant.read(budget, 500, 0.1) for _ in range(30)]
    assert light[-20:] == [1.0] * 20, light


def test_a_burst_after_a_quiet_spell_starts_at_the_budget_not_at_full() -> None:
    """The quiet spell after a burst banks at most CREDIT_MAX: the next burst's first read is
    sampled, not analysed in full, and the burst stays within budget from its first reads."""
    plant = _Plant()
    budget = _budget(plant)
    for _ in range(40):
        plant.read(budget, 250_000, 0.05)
    for _ in range(10):
        plant.read(budget, 0, 1.0)
    a0, p0 = plant.analysis, plant.proc
    first = plant.read(budget, 250_000, 0.05)
    assert first < 0.1
    for _ in range(5):
        plant.read(budget, 250_000, 0.05)
    analysis = plant.analysis - a0
    assert analysis <= budget.cpu_budget * (plant.proc - p0 - analysis)


def test_deferred_work_is_charged_and_paid_back_by_the_next_reads() -> None:
    """Trace completion in ticks (analysis CPU with no spans read) puts the ledger in debt:
    the following reads analyse less, and over the whole run analysis stays within budget."""
    plant = _Plant(skip=0.2e-6)
    budget = _budget(plant)
    for _ in range(40):
        plant.read(budget, 250_000, 0.05)
    before = budget.fraction
    plant.tick(budget, 0.04)  # 40 ms of trace completion
    assert budget.balance < 0
    after = plant.read(budget, 250_000, 0.05)
    assert after < before
    for _ in range(40):
        plant.read(budget, 250_000, 0.05)
    assert budget.balance > -budget.DEBT_MAX
    other = plant.proc - plant.analysis
    assert plant.analysis <= budget.cpu_budget * other


def test_cost_model_learns_the_measured_costs() -> None:
    """Costs far from the priors are learned within a few seconds of reads."""
    plant = _Plant(other=6e-6, skip=0.8e-6, analysed=30e-6)
    budget = _budget(plant)
    for _ in range(100):
        plant.read(budget, 100_000, 0.05)
    other, skip, analysed = budget.costs
    assert other == pytest.approx(6e-6, rel=0.1)
    assert skip == pytest.approx(0.8e-6, rel=0.1)
    assert analysed == pytest.approx(30e-6, rel=0.1)


def test_fixed_modes_do_not_adapt_and_rates_need_a_full_window() -> None:
    """``off`` and a fixed fraction never move; the telemetry rates change only once a window
    has passed."""
    plant = _Plant()
    for mode, expect in (("off", 1.0), (0.2, 0.2)):
        fixed = AnalysisBudget(mode, process_cpu=lambda: plant.proc, clock=lambda: plant.t)
        for _ in range(20):
            plant.read(fixed, 250_000, 0.05)
        assert fixed.fraction == expect
    assert AnalysisBudget(0.2).threshold == probability_to_threshold(0.2)
    with pytest.raises(ValueError):
        AnalysisBudget(0.0)
    budget = _budget(plant, window=2.0)
    budget.update(plant.analysis)
    plant.read(budget, 250_000, 1.0)
    budget.update(plant.analysis)
    assert budget.analysis_rate == 0.0  # half a window: nothing measured yet
    plant.read(budget, 250_000, 1.0)
    budget.update(plant.analysis)
    assert budget.analysis_rate > 0.0 and budget.other_rate > 0.0


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
