# SPDX-License-Identifier: Apache-2.0
"""Alert rules: load-time validation naming rule and key, and windowed evaluation per kind."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from otel_agents.processors._alert_rules import (
    RuleEvaluator,
    load_default_rules,
    load_rules,
    parse_rule,
)
from otel_agents.processors._batch import SpanBatch

from otel_agents._component import Finding
from otel_agents._errors import ConfigError

T0 = 1_700_000_000.0
_STR_COLS = (
    "trace_id", "span_id", "parent_span_id", "name", "service_name", "operation", "agent_name",
    "agent_id", "tool_name", "tool_args_hash", "request_model", "response_model", "provider",
    "conversation_id", "error_type", "a2a_method", "a2a_task_id", "a2a_peer",
)  # fmt: skip
_INT_COLS = (
    "kind", "start_ns", "end_ns", "status_code", "input_tokens", "output_tokens",
    "cache_read_tokens", "cache_creation_tokens", "reasoning_tokens",
)  # fmt: skip


def span(
    *,
    agent: str = "planner",
    operation: str = "invoke_agent",
    tool: str = "",
    model: str = "",
    seconds: float = 0.1,
    error: bool = False,
    cost: float = 0.0,
    input_tokens: int = 0,
    output_tokens: int = 0,
) -> dict[str, Any]:
    """One span's columns."""
    return {
        "agent_name": agent, "operation": operation, "tool_name": tool, "request_model": model,
        "start_ns": 0, "end_ns": int(seconds * 1e9), "status_code": 2 if error else 1,
        "cost": cost, "input_tokens": input_tokens, "output_tokens": output_tokens,
    }  # fmt: skip


def make_batch(spans: Sequence[dict[str, Any]], received_at: float = T0) -> SpanBatch:
    """A real SpanBatch holding ``spans`` (unspecified columns empty/zero)."""
    cols: dict[str, Any] = {}
    for c in _STR_COLS:
        cols[c] = np.array([s.get(c, "") for s in spans], dtype=object)
    for c in _INT_COLS:
        cols[c] = np.array([int(s.get(c, 0)) for s in spans], dtype=np.int64)
    cols["cost"] = np.array([float(s.get("cost", 0.0)) for s in spans], dtype=np.float64)
    cols["unpriced"] = np.zeros(len(spans), dtype=bool)
    fields = {f.name for f in dataclasses.fields(SpanBatch)}
    return SpanBatch(**{k: v for k, v in cols.items() if k in fields}, received_at=received_at)


def _ev(**rule: Any) -> RuleEvaluator:
    rule.setdefault("name", "R")
    return RuleEvaluator(parse_rule(rule, "rules"))


def test_default_pack_loads_and_names_are_unique() -> None:
    """The shipped default rules validate and cover the design notes' alert families."""
    rules = load_default_rules()
    names = {r.name for r in rules}
    assert len(names) == len(rules)
    kinds = {r.config.kind for r in rules}
    assert {
        "ratio",
        "percentile",
        "threshold",
        "burn_rate",
        "budget",
        "finding",
        "anomaly",
    } <= kinds
    assert {"AgentErrorRatioHigh", "ToolLatencyP95High", "CostPerHourHigh", "BudgetBurnRateHigh",
            "ToolLoopDetected", "AgentAnomalyScoreHigh", "A2AChainBroken"} <= names  # fmt: skip
    for r in rules:
        assert r.config.annotations.get("runbook_url", "").startswith("https://"), r.name
        assert r.config.annotations.get("summary"), r.name


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"name": "Bad", "window": "soon"}, r"rules\.Bad\.window: expected a duration"),
        (
            {"name": "Bad", "kind": "ratio", "numerator": "oops"},
            r"rules\.Bad\.numerator: unknown measure",
        ),
        ({"name": "Bad", "where": ['bogus="x"']}, r"rules\.Bad\.where\[0\]: unknown span label"),
        ({"name": "Bad", "where": ["nonsense"]}, r"rules\.Bad\.where\[0\]"),
        ({"name": "Bad", "kind": "percentile", "quantile": 1.5}, r"rules\.Bad\.quantile"),
        ({"name": "Bad", "kind": "burn_rate", "budget": 1}, r"rules\.Bad\.windows"),
        ({"name": "Bad", "severity": "page"}, r"rules\.Bad\.severity"),
        ({"name": "Bad", "for": "-1s"}, r"rules\.Bad\.for: expected a duration"),
        ({"name": "Bad", "unknown": 1}, r"rules\.Bad\.unknown: unknown key"),
        ({"kind": "threshold"}, r"rules\[0\]\.name"),
        ({"name": "Bad", "kind": "finding"}, r"rules\.Bad\.finding_kinds"),
    ],
)
def test_invalid_rules_name_rule_and_key(rule: dict[str, Any], message: str) -> None:
    """Every invalid rule is refused at load with the rule's name and the offending key."""
    with pytest.raises(ConfigError, match=message):
        load_rules([rule], "inline")


def test_duplicate_rule_names_are_refused() -> None:
    """Two rules with one name are an error naming it."""
    with pytest.raises(ConfigError, match=r"rules\.X: duplicate"):
        load_rules([{"name": "X"}, {"name": "X"}], "inline")


def test_ratio_rule_by_agent_with_min_count_and_window() -> None:
    """Error ratio is computed per agent over the window and needs min_count calls."""
    ev = _ev(kind="ratio", by=["agent"], where=['operation="invoke_agent"'], window="60s",
             min_count=4, threshold=0.5)  # fmt: skip
    ev.add_batch(make_batch([span(agent="a", error=True)] * 3 + [span(agent="b")] * 5
                            + [span(agent="a", operation="execute_tool", error=True)]), T0)  # fmt: skip
    res = {s.labels["agent"]: s for s in ev.evaluate(T0)}
    assert not res["a"].active  # 3 calls < min_count
    ev.add_batch(make_batch([span(agent="a")]), T0 + 10)
    res = {s.labels["agent"]: s for s in ev.evaluate(T0 + 10)}
    assert res["a"].value == pytest.approx(0.75) and res["a"].active
    assert res["b"].value == 0.0 and not res["b"].active
    # 61 s later every span left the window: the groups report inactive once, then vanish
    res = {s.labels["agent"]: s for s in ev.evaluate(T0 + 75)}
    assert not res["a"].active
    assert ev.evaluate(T0 + 200) == []


def test_percentile_rule_matches_numpy_within_histogram_error() -> None:
    """p95 from the log histogram is within 10 % of the exact quantile."""
    rng = np.random.default_rng(3)
    secs = rng.lognormal(0.0, 1.0, 2000)
    ev = _ev(kind="percentile", measure="duration", quantile=0.95, window="5m", threshold=1.0)
    ev.add_batch(make_batch([span(seconds=float(s)) for s in secs]), T0)
    (s,) = ev.evaluate(T0)
    exact = float(np.quantile(secs, 0.95))
    assert s.value == pytest.approx(exact, rel=0.1)
    assert s.active


def test_threshold_rate_is_per_rate_unit() -> None:
    """A cost rate rule extrapolates spend in the window to dollars per hour."""
    ev = _ev(kind="threshold", measure="cost", aggregation="rate", rate_unit="1h", window="60s",
             threshold=10, by=["agent"])  # fmt: skip
    ev.add_batch(make_batch([span(agent="a", operation="chat", cost=0.1)] * 2), T0)
    (s,) = ev.evaluate(T0)
    assert s.value == pytest.approx(0.2 / 60 * 3600)  # $12/h
    assert s.active


def test_burn_rate_needs_both_windows() -> None:
    """A multi-window burn-rate rule fires only when long and short windows both burn fast."""
    ev = _ev(kind="burn_rate", budget=24.0, period="1d",
             windows=[{"long": "1h", "short": "5m", "factor": 10, "severity": "critical"}])  # fmt: skip
    # $1/h is the sustainable rate; spend $1 in one minute = burn 60x on the short window
    ev.add_batch(make_batch([span(operation="chat", cost=1.0)]), T0)
    (s,) = ev.evaluate(T0 + 60)
    # long window: $1 per hour -> burn 1x; short: $1 per 5 min -> 12x -> not both
    assert not s.active
    for i in range(1, 12):
        ev.add_batch(make_batch([span(operation="chat", cost=1.0)]), T0 + 60 * i)
    (s,) = ev.evaluate(T0 + 660)
    assert s.active and s.severity == "critical" and s.labels["severity"] == "critical"


def test_budget_rule_resets_each_period() -> None:
    """Budget spend counts from the start of the UTC-aligned period and resets after it."""
    ev = _ev(kind="budget", budget=10.0, period="1h", op=">=", threshold=0.9)
    start = (T0 // 3600) * 3600
    ev.add_batch(make_batch([span(operation="chat", cost=9.5)]), start + 10)
    (s,) = ev.evaluate(start + 20)
    assert s.active and s.value == pytest.approx(0.95)
    (s,) = ev.evaluate(start + 3600 + 1)
    assert not s.active and s.value == 0.0


def test_finding_rule_holds_then_resolves_after_quiet_period() -> None:
    """Finding rules stay active while findings arrive and resolve resolve_after the last one."""
    ev = _ev(kind="finding", finding_kinds=["tool_loop"], by=["agent"], min_severity="warning",
             resolve_after="30s", severity="from_finding",
             annotations={"summary": "{title} ({score:.0f})"})  # fmt: skip
    f = Finding(kind="tool_loop", key="agent=r,tool=t", severity="critical", score=90, title="Loop",
                explanation="e", labels={"agent": "r", "tool": "t"}, trace_ids=("ab" * 16,))  # fmt: skip
    assert not ev.add_finding(dataclasses.replace(f, severity="info"), T0)
    assert not ev.add_finding(dataclasses.replace(f, kind="anomaly"), T0)
    assert ev.add_finding(f, T0)
    (s,) = ev.evaluate(T0 + 10)
    assert s.active and s.labels == {"alertname": "R", "severity": "critical", "agent": "r"}
    assert s.annotations["summary"] == "Loop (90)"
    assert s.trace_ids == ("ab" * 16,)
    (s,) = ev.evaluate(T0 + 41)
    assert not s.active
    assert ev.evaluate(T0 + 42) == []


def test_series_per_rule_are_bounded_with_overflow() -> None:
    """Label combinations beyond the cap share one __overflow__ series (bounded memory)."""
    from otel_agents.processors._alert_rules import MAX_SERIES_PER_RULE, OVERFLOW

    ev = _ev(kind="threshold", measure="calls", by=["agent"], threshold=0)
    n = MAX_SERIES_PER_RULE + 25
    ev.add_batch(make_batch([span(agent=f"a{i:05d}") for i in range(n)]), T0)
    samples = ev.evaluate(T0)
    assert len(samples) == MAX_SERIES_PER_RULE + 1
    (overflow,) = [s for s in samples if s.labels["agent"] == OVERFLOW]
    assert overflow.value == 25
