# SPDX-License-Identifier: Apache-2.0
"""Robust baselines: score bands, warm-up, robustness to outliers, binomial error ratio."""

from __future__ import annotations

import numpy as np
import pytest
from otel_agents.processors._baselines import (
    BaselineConfig,
    RateBaseline,
    RobustBaseline,
    SeasonalBaseline,
    score_from_z,
    severity_for,
)


def test_score_bands() -> None:
    """z_half scores 50 (warning), twice it 75 (critical); decreases score 0."""
    assert score_from_z(4.0) == pytest.approx(50.0)
    assert score_from_z(8.0) == pytest.approx(75.0)
    assert score_from_z(-3.0) == 0.0 and score_from_z(float("inf")) == 100.0
    assert severity_for(49.9) == "info"
    assert severity_for(50.0) == "warning"
    assert severity_for(75.0) == "critical"


def test_no_score_until_warm() -> None:
    """A huge value scores 0 until both interval and observation warm-up counts are met."""
    cfg = BaselineConfig(warmup_intervals=4, warmup_observations=40)
    b = RobustBaseline(cfg, abs_floor=0.001)
    for _ in range(3):
        b.update(1.0, 20)
    assert not b.ready and b.score(100.0)[0] == 0.0
    b.update(1.0, 20)
    assert b.ready and b.score(100.0)[0] == 100.0


def test_median_mad_ignore_a_third_of_outliers() -> None:
    """A history with 30 % wild values keeps its median; normal values still score 0."""
    cfg = BaselineConfig(window=60, warmup_intervals=5, warmup_observations=5)
    b = RobustBaseline(cfg, abs_floor=0.001)
    rng = np.random.default_rng(1)
    for i in range(60):
        b.update(50.0 if i % 3 == 0 else float(rng.normal(1.0, 0.05)), 10)
    med, spread = b.center_spread()
    assert 0.95 < med < 1.1 and spread < 0.5
    assert b.score(1.1)[0] == 0.0
    assert b.score(3.0)[0] >= 75


def test_min_effect_suppresses_tiny_relative_changes() -> None:
    """A flat history does not turn a 5 % rise into an alarm."""
    b = RobustBaseline(BaselineConfig(warmup_intervals=3, warmup_observations=3), abs_floor=0.0)
    for _ in range(10):
        b.update(100.0, 1)
    assert b.score(105.0)[0] == 0.0
    assert b.score(200.0)[0] > 50


def test_rate_baseline_binomial() -> None:
    """A 2 % error history scores a 60 % burst critical and a 4 % interval zero."""
    cfg = BaselineConfig(warmup_intervals=5, warmup_observations=50)
    r = RateBaseline(cfg)
    for _ in range(20):
        r.update(1, 50)
    assert r.ratio == pytest.approx(0.02)
    assert r.score(30, 50)[0] >= 75
    assert r.score(2, 50)[0] == 0.0
    assert r.score(2, 2)[0] == 0.0  # too few events to call a burst


def test_seasonal_bucket_takes_over_when_warm() -> None:
    """With hour-of-day seasonality the current hour's own baseline scores once warm."""
    cfg = BaselineConfig(warmup_intervals=3, warmup_observations=3, seasonality="hour_of_day")
    b = SeasonalBaseline(cfg, abs_floor=0.0)
    day = 86400.0
    for d in range(5):  # 02:00 is busy (10), 14:00 is quiet (1)
        b.update(10.0, 1, d * day + 2 * 3600)
        b.update(1.0, 1, d * day + 14 * 3600)
    assert b.score(10.0, 9 * day + 2 * 3600)[0] == 0.0
    assert b.score(10.0, 9 * day + 14 * 3600)[0] > 75


def _metrics_request(service: str, t_s: float, cpu_seconds: float, rss: int):  # type: ignore[no-untyped-def]
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )
    from opentelemetry.proto.metrics.v1 import metrics_pb2 as m

    from ._gen import kv

    t = int(t_s * 1e9)
    cpu = m.Metric(
        name="process.cpu.time",
        sum=m.Sum(
            is_monotonic=True,
            aggregation_temporality=m.AGGREGATION_TEMPORALITY_CUMULATIVE,
            data_points=[m.NumberDataPoint(time_unix_nano=t, as_double=cpu_seconds,
                                           attributes=[kv("cpu.mode", "user")])],
        ),
    )  # fmt: skip
    mem = m.Metric(
        name="process.memory.usage",
        sum=m.Sum(
            is_monotonic=False, data_points=[m.NumberDataPoint(time_unix_nano=t, as_int=rss)]
        ),
    )
    return ExportMetricsServiceRequest(
        resource_metrics=[
            m.ResourceMetrics(
                resource={"attributes": [kv("service.name", service)]},
                scope_metrics=[m.ScopeMetrics(metrics=[cpu, mem])],
            )
        ]
    )


def test_process_resources_cumulative_cpu_is_a_rate() -> None:
    """A steadily rising CPU counter is a flat rate (no anomaly); a CPU jump scores critical."""
    from otel_agents.processors._anomaly import AnomalyConfig, AnomalyEngine

    eng = AnomalyEngine(AnomalyConfig(interval=5.0, detectors=("process_resource",)))
    t, cpu = 1000.0, 0.0
    eng.due(t)
    results = []
    for step in range(60):
        cpu += 5 * (0.2 if step < 50 else 0.9)  # 20 % of a core, then 90 %
        t += 5
        eng.add_metrics(_metrics_request("planner-svc", t, cpu, 100_000_000))
        results.append({r.key[2]: r for r in eng.evaluate(t)})
    assert all(r["process.cpu.time"].score == 0 for r in results[1:50])
    assert all(r["process.memory.usage"].score == 0 for r in results)
    cpu_jump = results[50]["process.cpu.time"]
    assert cpu_jump.severity == "critical" and cpu_jump.value == pytest.approx(0.9)


def test_fewer_observations_than_usual_weigh_less() -> None:
    """The same jump scores lower when the interval had a quarter of the usual observations."""
    b = RobustBaseline(BaselineConfig(warmup_intervals=3, warmup_observations=3), abs_floor=0.0)
    rng = np.random.default_rng(3)
    for _ in range(50):
        b.update(float(rng.normal(1.0, 0.1)), 40)
    full = b.score(1.6, 40)
    few = b.score(1.6, 10)
    assert few[1] == pytest.approx(full[1] / 2)
    assert few[0] < full[0]


def test_growing_ring_matches_a_full_window_of_the_latest_values() -> None:
    """The ring grows from a few slots to the window and wraps: at every step its median, spread
    and observation-scaled z equal those of the latest ``window`` values computed directly."""
    cfg = BaselineConfig(window=37, warmup_intervals=1, warmup_observations=1, min_effect=0.0)
    b = RobustBaseline(cfg, abs_floor=1e-9)
    rng = np.random.default_rng(7)
    values = rng.lognormal(0.0, 0.5, 120)
    counts = rng.integers(1, 50, 120)
    for i, (v, n) in enumerate(zip(values.tolist(), counts.tolist(), strict=True)):
        b.update(v, n)
        last = values[max(0, i + 1 - cfg.window) : i + 1]
        med = float(np.median(last))
        mad = float(np.median(np.abs(last - med))) * 1.4826
        got_med, got_spread = b.center_spread()
        assert got_med == med
        assert got_spread == max(mad, cfg.rel_floor * med, 1e-9)
        typical = float(np.median(counts[max(0, i + 1 - cfg.window) : i + 1]))
        z = (3 * med - med) / got_spread * min(1.0, (1 / typical) ** 0.5)
        assert b.score(3 * med, 1)[1] == pytest.approx(z, rel=1e-12)
