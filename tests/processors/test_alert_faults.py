# SPDX-License-Identifier: Apache-2.0
"""Acceptance: the default rule pack fires for every demo fault within 30 s of its first spans,
resolves after the fault stops, and stays silent on sustained clean traffic.

Drives the real analysis stage (trace assembly, anomaly detectors) and the alert stage together
on one simulated receiver clock, with the generated planner/researcher traffic of
``tests/processors/_gen.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from otel_agents.processors._alert import AlertConfig, AlertEngine

from otel_agents._configtypes import decode

from ._scenario import Scenario

WARMUP_S = 120
DEADLINE_S = 30

# fault -> alert names of the default pack that name it
EXPECTED: dict[str, set[str]] = {
    "slow-tool": {"AgentAnomalyScoreHigh"},
    "token-spike": {"AgentAnomalyScoreHigh"},
    "error-burst": {"ToolErrorRatioHigh", "AgentAnomalyScoreHigh"},
    "tool-loop": {"ToolLoopDetected"},
    "a2a-break": {"A2AChainBroken"},
    "cost-runaway": {"AgentCostRunaway", "CostPerHourHigh", "AgentAnomalyScoreHigh"},
}


class _Run:
    def __init__(self, tmp: Path) -> None:
        self.sc = Scenario(tmp)
        self.alerts = AlertEngine(decode(AlertConfig, {"evaluation_interval": "1s"}))
        self.alerts.start(self.sc.host)

    def run(self, seconds: int, fault: str | None = None, share: float = 0.5) -> None:
        self.sc.run(seconds, fault, share, also=(self.alerts,))

    def history(self) -> list[dict[str, Any]]:
        return list(
            reversed(
                self.sc.host.get("/api/v1/alerts", {"state": ["history"], "limit": ["1000"]})[1][
                    "history"
                ]
            )
        )

    def active(self) -> list[dict[str, Any]]:
        return list(self.sc.host.get("/api/v1/alerts")[1]["alerts"])

    def close(self) -> None:
        self.alerts.shutdown()


@pytest.mark.parametrize("fault", sorted(EXPECTED))
def test_default_pack_alerts_on_each_fault_and_resolves(fault: str, tmp_path: Path) -> None:
    """Clean warm-up fires nothing; the fault fires its alert within 30 s; it resolves after."""
    r = _Run(tmp_path)
    try:
        r.run(WARMUP_S)
        assert [h for h in r.history() if h["event"] == "firing"] == []
        start = r.sc.host.clock
        r.run(DEADLINE_S, fault=fault)
        fired = [h for h in r.history() if h["event"] == "firing"]
        names = {h["alertname"] for h in fired}
        assert names & EXPECTED[fault], (fault, names)
        first = min(h["at"] for h in fired if h["alertname"] in EXPECTED[fault])
        assert first - start <= DEADLINE_S
        # the fault stops: every alert it raised resolves (bounded simulated time)
        for _ in range(40):
            r.run(10)
            if not r.active():
                break
        assert r.active() == [], [a["labels"] for a in r.active()]
    finally:
        r.close()


def test_clean_sustained_run_fires_nothing(tmp_path: Path) -> None:
    """Ten simulated minutes of clean traffic raise no default-pack alert."""
    r = _Run(tmp_path)
    try:
        r.run(600)
        assert r.history() == []
    finally:
        r.close()
