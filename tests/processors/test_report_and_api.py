# SPDX-License-Identifier: Apache-2.0
"""The stage's API routes, metrics exposition, findings to subscribers, and the report."""

from __future__ import annotations

from pathlib import Path

import pytest
from otel_agents.processors import FACTORIES, AnalysisConfig, render_report
from otel_agents.processors._batch import build_span_batch
from prometheus_client.parser import text_string_to_metric_families

from otel_agents import semconv as sc
from otel_agents._component import Finding
from otel_agents._configtypes import decode
from otel_agents._errors import ConfigError

from ._gen import MS, request
from ._scenario import Scenario


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    """Two minutes clean, then 30 s with tool loops and slow searches."""
    sc = Scenario(tmp_path_factory.mktemp("faulty"))
    sc.run(120)
    sc.run(30, fault="slow-tool", fault_share=0.5)
    sc.run(30, fault="tool-loop", fault_share=0.3)
    return sc


def test_factory_decodes_yaml_config_with_key_paths() -> None:
    """The agent_analysis factory's config decodes durations and names bad keys."""
    f = FACTORIES["agent_analysis"]
    cfg = decode(f.config_class, {"assembly": {"decision_wait": "2s"}, "tool_loop_threshold": 4})
    assert cfg.assembly.decision_wait == 2.0 and cfg.tool_loop_threshold == 4
    with pytest.raises(ConfigError, match=r"anomaly\.baseline\.windw"):
        decode(AnalysisConfig, {"anomaly": {"baseline": {"windw": 3}}}, "processors.x")
    with pytest.raises(ConfigError, match="detectors"):
        decode(AnalysisConfig, {"anomaly": {"detectors": ["nope"]}})


def test_agents_route_has_graph_and_costs(faulty: Scenario) -> None:
    """/api/v1/agents: the agent graph and cost roll-ups per agent and session."""
    status, body = faulty.host.get("/api/v1/agents")
    assert status == 200
    edges = {(e["client"], e["server"], e["connection_type"]) for e in body["graph"]["edges"]}
    assert {("user", "planner", "agent"), ("planner", "researcher", "a2a"),
            ("researcher", "web_search", "tool")} <= edges  # fmt: skip
    agents = {c["agent"]: c for c in body["cost_by_agent"]}
    assert set(agents) == {"planner", "researcher"}
    assert agents["planner"]["cost_usd"] > 0 and agents["planner"]["unpriced_calls"] == 0
    assert body["sessions"] and body["sessions"][0]["cost_usd"] > 0


def test_bottlenecks_route(faulty: Scenario) -> None:
    """/api/v1/bottlenecks: ranked shares with explanations and per-operation percentiles."""
    status, body = faulty.host.get("/api/v1/bottlenecks")
    assert status == 200
    assert body["bottlenecks"][0]["explanation"].endswith("s in total)")
    ops = {(o["agent"], o["kind"], o["name"]): o for o in body["operations"]}
    ws = ops[("researcher", "tool", "web_search")]
    assert 0 < ws["p50_seconds"] <= ws["p95_seconds"]


def test_anomalies_route_filters_and_shows_warmup_state(faulty: Scenario) -> None:
    """/api/v1/anomalies lists keys with their state and filters by detector."""
    status, body = faulty.host.get("/api/v1/anomalies", {"detector": ["latency"]})
    assert status == 200
    assert body["keys"] and {k["detector"] for k in body["keys"]} == {"latency"}
    assert {k["state"] for k in body["keys"]} <= {"ready", "warming_up"}
    assert any(r["labels"].get("tool") == "web_search" for r in body["recent"])
    assert faulty.host.routes["/api/v1/anomalies"]("POST", {}, b"")[0] == 405


def test_metrics_exposition(faulty: Scenario) -> None:
    """The analysis families are exposed with the documented names and labels."""
    fams = {f.name: f for f in text_string_to_metric_families(faulty.host.exposition())}
    for name in (
        "otel_agents_operation_calls", "otel_agents_operation_duration_seconds",
        "otel_agents_tokens", "otel_agents_cost_usd", "otel_agents_critical_path_seconds",
        "otel_agents_critical_path_share", "otel_agents_anomaly_score", "otel_agents_findings",
        "otel_agents_traces_completed", "otel_agents_open_traces",
        "traces_service_graph_request", "traces_service_graph_request_failed",
        "traces_service_graph_request_server_seconds",
    ):  # fmt: skip
        assert name in fams, name
    calls = fams["otel_agents_operation_calls"].samples
    assert any(s.labels == {"agent": "researcher", "operation": "tool", "name": "web_search",
                            "status": "ok"} for s in calls)  # fmt: skip
    edges = fams["traces_service_graph_request"].samples
    assert any(s.labels["connection_type"] == "a2a" and s.value > 0 for s in edges)
    found = fams["otel_agents_findings"].samples
    assert any(s.labels["kind"] == "tool_loop" for s in found)
    completed = [s.value for s in fams["otel_agents_traces_completed"].samples
                 if s.name.endswith("_total")]  # fmt: skip
    assert completed and completed[0] == faulty.stage.assembler.completed


def test_report_lists_bottleneck_anomalies_and_costs(faulty: Scenario) -> None:
    """render_report shows the critical-path bottleneck, the anomalies and cost per agent."""
    text = render_report(faulty.host.findings, faulty.stage.rollups())
    assert "Critical-path bottlenecks" in text and "under agent `researcher`" in text
    assert "Tool loop: `web_search` under agent `researcher`" in text
    assert "Slow tool `web_search` under agent `researcher`" in text
    assert "planner" in text.split("Cost per agent")[1]


def test_report_on_empty_input() -> None:
    """With nothing analysed the report still renders every section."""
    text = render_report([], {})
    assert "(no completed traces yet)" in text and "none above the warning band" in text
    f = Finding(kind="anomaly", key="k", severity="warning", score=60, title="T", explanation="E")
    assert "[WARNING ] score  60  T" in render_report([f], {})


def test_shutdown_flushes_open_traces(tmp_path: Path) -> None:
    """shutdown() analyses traces still inside their decision wait."""
    sc = Scenario(tmp_path)
    sc.run(3)
    assert sc.stage.assembler.open_traces > 0
    sc.stage.shutdown()
    assert sc.stage.assembler.open_traces == 0 and sc.stage.assembler.completed > 0


def _samples(host_text: str, family: str) -> dict[tuple[tuple[str, str], ...], float]:
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for fam in text_string_to_metric_families(host_text):
        if fam.name == family:
            for s in fam.samples:
                if s.name.endswith("_total"):
                    out[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_spans_whose_agent_is_in_another_batch_are_counted_at_completion(tmp_path: Path) -> None:
    """A child chat span exported before its agent span is counted once, under the inherited
    agent, when the trace completes — never under agent ""."""
    scn = Scenario(tmp_path)
    trace = scn.gen.trace(int(scn.host.clock * 1e9) - 3000 * MS)
    # The researcher's spans carry no agent on their own below its invoke_agent span.
    for g in trace:
        names = {a.key for a in g.span.attributes}
        if g.span.name.startswith("chat") and sc.GEN_AI_AGENT_NAME in names:
            keep = [a for a in g.span.attributes if a.key != sc.GEN_AI_AGENT_NAME]
            del g.span.attributes[:]
            g.span.attributes.extend(keep)
    chats = [g for g in trace if g.span.name.startswith("chat")]
    rest = [g for g in trace if not g.span.name.startswith("chat")]
    assert chats and rest
    stage, host = scn.stage, scn.host
    for part in (chats, rest):  # children first, as a BatchSpanProcessor exports them
        stage.process_traces(build_span_batch(request(part), pricebook=None, received_at=0.0))
    before = _samples(host.exposition(), "otel_agents_tokens")
    assert before == {}, before  # nothing under agent "" (nor anywhere) before completion
    host.clock += 60.0
    stage.tick(host.clock)
    after = _samples(host.exposition(), "otel_agents_tokens")
    assert {dict(k)["agent"] for k in after} == {"planner", "researcher"}, after
    want = sum(a.value.int_value for g in chats for a in g.span.attributes
               if a.key == sc.GEN_AI_USAGE_INPUT_TOKENS)  # fmt: skip
    got = sum(v for k, v in after.items() if dict(k)["token_type"] == "input")
    assert got == want
    calls = _samples(host.exposition(), "otel_agents_operation_calls")
    assert sum(calls.values()) == len(trace)  # every span counted exactly once
