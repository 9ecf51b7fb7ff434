# SPDX-License-Identifier: Apache-2.0
"""Acceptance: each demo fault yields the right finding within 30 s; clean traffic stays quiet."""

from __future__ import annotations

from pathlib import Path

import pytest

from otel_agents._component import Finding

from ._scenario import Scenario

WARMUP_S = 120
DEADLINE_S = 30.0

# fault -> (finding kind, labels the finding must carry)
EXPECTED: dict[str, tuple[str, dict[str, str]]] = {
    "slow-tool": ("anomaly", {"detector": "latency", "agent": "researcher", "tool": "web_search"}),
    "token-spike": (
        "anomaly",
        {"detector": "tokens_per_call", "agent": "researcher", "model": "gpt-4o-mini"},
    ),
    "error-burst": (
        "anomaly",
        {"detector": "tool_error_rate", "agent": "researcher", "tool": "web_search"},
    ),
    "tool-loop": ("tool_loop", {"agent": "researcher", "tool": "web_search"}),
    "a2a-break": ("a2a_break", {"agent": "researcher", "side": "server"}),
    "cost-runaway": ("cost_runaway", {"detector": "cost_rate", "agent": "researcher"}),
}


def _matches(f: Finding, kind: str, labels: dict[str, str]) -> bool:
    return (
        f.kind == kind
        and f.severity in ("warning", "critical")
        and all(f.labels.get(k) == v for k, v in labels.items())
    )


@pytest.mark.parametrize("fault", sorted(EXPECTED))
def test_fault_is_named_within_30s(fault: str, tmp_path: Path) -> None:
    """After clean warm-up, half the traffic turns faulty; the right finding follows in 30 s."""
    sc = Scenario(tmp_path)
    sc.run(WARMUP_S)
    assert not [f for f in sc.host.findings if f.severity != "info"]
    fault_start = sc.host.clock
    sc.run(int(DEADLINE_S), fault=fault, fault_share=0.5)
    kind, labels = EXPECTED[fault]
    hits = [f for f in sc.host.findings if _matches(f, kind, labels)]
    assert hits, [(f.kind, f.severity, f.key) for f in sc.host.findings]
    first = min(hits, key=lambda f: f.observed_at)
    assert first.observed_at - fault_start <= DEADLINE_S
    assert first.explanation and first.trace_ids
    # The finding names the faulty subject, and the explanation carries it too.
    assert "researcher" in first.explanation


def test_clean_traffic_raises_nothing_above_info(tmp_path: Path) -> None:
    """Fifteen minutes of clean traffic: no finding reaches the warning band."""
    sc = Scenario(tmp_path, seed=11)
    sc.run(900)
    loud = [(f.kind, f.severity, f.key, f.explanation) for f in sc.host.findings
            if f.severity != "info"]  # fmt: skip
    assert loud == []
    assert any(f.kind == "bottleneck" for f in sc.host.findings)
    scores = [s["score"] for s in sc.stage.anomaly.states()]
    assert scores and max(scores) < 50


def test_sustained_fault_is_not_reemitted_every_interval(tmp_path: Path) -> None:
    """Hysteresis: a fault lasting 50 s emits its series at most once per severity."""
    sc = Scenario(tmp_path)
    sc.run(WARMUP_S)
    sc.run(50, fault="slow-tool")
    kind, labels = EXPECTED["slow-tool"]
    hits = [f for f in sc.host.findings if _matches(f, kind, labels)]
    assert 1 <= len(hits) <= 2  # first emission, plus at most one severity change
    assert len({f.severity for f in hits}) == len(hits)


def test_no_anomaly_before_warmup(tmp_path: Path) -> None:
    """Faulty traffic from the first second: nothing scores while baselines warm up."""
    sc = Scenario(tmp_path)
    sc.run(25, fault="slow-tool")  # < 6 intervals of 5 s
    assert not [f for f in sc.host.findings if f.kind == "anomaly"]
    states = list(sc.stage.anomaly.states())
    assert states and all(s["state"] == "warming_up" for s in states)


def test_gate_hysteresis_band(tmp_path: Path) -> None:
    """Scores wobbling between 45 and 55 are one episode; below 40 the episode ends."""
    from otel_agents.processors._anomaly import AnomalyResult

    sc = Scenario(tmp_path)
    stage, now = sc.stage, sc.host.clock

    def result(score: float) -> AnomalyResult:
        sev = "warning" if score >= 50 else "info"
        key = ("researcher", "tool", "web_search")
        return AnomalyResult("latency", key, 1.0, 0.3, score, 4.0, 10, sev, ("ab" * 16,))

    for i, score in enumerate((55, 45, 55, 45, 55)):
        stage._anomalies([result(score)], now + 5 * i)
    assert len([f for f in sc.host.findings if f.kind == "anomaly"]) == 1
    stage._anomalies([result(30)], now + 30)  # episode over
    stage._anomalies([result(55)], now + 35)  # a new one
    assert len([f for f in sc.host.findings if f.kind == "anomaly"]) == 2
