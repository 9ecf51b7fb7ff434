# SPDX-License-Identifier: Apache-2.0
"""Drives an AgentAnalysis stage with generated traffic on a simulated receiver clock."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from otel_agents.processors import AgentAnalysis, AnalysisConfig
from otel_agents.processors._batch import build_span_batch
from otel_agents.processors._sampling import probability_to_threshold

from otel_agents._configtypes import decode

from ._gen import MS, TraceGen, request
from ._host import TestHost

FAST = {
    "assembly": {"decision_wait": "5s"},
    "anomaly": {"interval": "5s"},
    "bottleneck": {"report_interval": "10s"},
    "cooldown": "60s",
}


@dataclasses.dataclass
class Scenario:
    """A stage, its host, and a traffic generator sharing one simulated clock."""

    tmp: Path
    seed: int = 7
    jitter: float = 0.15
    config: dict[str, object] = dataclasses.field(default_factory=lambda: dict(FAST))
    #: Analysis sampling fraction (the receiver's ``analysis.sampling``) and a traffic
    #: multiplier (sampling happens under load, so sampled scenarios send more).
    sample: float = 1.0
    rate: int = 1

    def __post_init__(self) -> None:
        self.host = TestHost(self.tmp)
        self.stage = AgentAnalysis(decode(AnalysisConfig, self.config))
        self.stage.start(self.host)
        self.gen = TraceGen(self.seed, jitter=self.jitter)
        self.rng = random.Random(self.seed + 1)
        self.threshold = probability_to_threshold(self.sample)

    def run(
        self,
        seconds: int,
        fault: str | None = None,
        fault_share: float = 1.0,
        also: Sequence[Any] = (),
    ) -> None:
        """Simulate ``seconds`` of traffic (1–3 traces a second), ticking once a second.

        ``also``: further stages (e.g. the alert engine) fed the same batches and ticked after
        the analysis stage.
        """
        for _ in range(seconds):
            now = self.host.clock
            spans = []
            for _ in range(self.rng.choice((1, 2, 2, 3)) * self.rate):
                f = fault if fault and self.rng.random() < fault_share else None
                spans += self.gen.trace(int(now * 1e9) - 3000 * MS, fault=f)
            # Each service exports on its own, as separate requests.
            for svc in ("planner-svc", "researcher-svc"):
                part = [g for g in spans if g.service == svc]
                if part:
                    batch = build_span_batch(
                        request(part), pricebook=None, received_at=now, threshold=self.threshold
                    )
                    self.stage.process_traces(batch)
                    for stage in also:
                        stage.process_traces(batch)
            self.host.clock = now + 1.0
            self.stage.tick(self.host.clock)
            for stage in also:
                stage.tick(self.host.clock)
