# SPDX-License-Identifier: Apache-2.0
"""Findings as OTLP log records handed to Host.export_logs."""

from __future__ import annotations

from pathlib import Path

from opentelemetry.proto.logs.v1.logs_pb2 import SeverityNumber
from otel_agents.exporters import FACTORIES
from otel_agents.exporters._findings_otlp import FindingsLogExporter, FindingsLogsConfig

from otel_agents import semconv as sc
from otel_agents._component import Finding
from tests.processors._host import TestHost


def _finding(severity: str, n: int = 0) -> Finding:
    return Finding(
        kind="tool_loop",
        key=f"agent=researcher,tool=web_search,{n}",
        severity=severity,
        score=70.0,
        title="Tool loop",
        explanation="Agent `researcher` called tool `web_search` 6 times",
        labels={"agent": "researcher", "tool": "web_search"},
        value=6.0,
        trace_ids=("0123456789abcdef0123456789abcdef",),
        observed_at=1_700_000_000.5,
    )


def test_finding_becomes_event_log_record(tmp_path: Path) -> None:
    """event_name agent.finding, explanation body, fields as attributes, trace link, severity."""
    host = TestHost(tmp_path)
    exp = FindingsLogExporter(FindingsLogsConfig())
    exp.start(host)
    host.emit_finding(_finding("critical"))
    exp.tick(host.now())
    (req,) = host.logs
    rl = req.resource_logs[0]
    assert rl.resource.attributes[0].value.string_value == "otel-agents-receiver"
    (rec,) = rl.scope_logs[0].log_records
    assert rec.event_name == sc.EVENT_AGENT_FINDING
    assert rec.body.string_value.startswith("Agent `researcher` called")
    assert rec.severity_number == SeverityNumber.SEVERITY_NUMBER_ERROR
    assert rec.time_unix_nano == 1_700_000_000_500_000_000
    assert rec.trace_id.hex() == "0123456789abcdef0123456789abcdef"
    attrs = {kv.key: kv.value for kv in rec.attributes}
    assert attrs[sc.AGENT_FINDING_KIND].string_value == "tool_loop"
    assert attrs[sc.AGENT_FINDING_SCORE].double_value == 70.0
    assert attrs[sc.AGENT_FINDING_LABELS_PREFIX + "tool"].string_value == "web_search"
    ids = attrs[sc.AGENT_FINDING_TRACE_IDS].array_value.values
    assert [v.string_value for v in ids] == ["0123456789abcdef0123456789abcdef"]


def test_min_severity_and_batching(tmp_path: Path) -> None:
    """Below min_severity is skipped; more than max_batch waits for the next tick."""
    host = TestHost(tmp_path)
    exp = FindingsLogExporter(FindingsLogsConfig(min_severity="warning", max_batch=2))
    exp.start(host)
    host.emit_finding(_finding("info"))
    for n in range(3):
        host.emit_finding(_finding("warning", n))
    exp.tick(host.now())
    assert [len(r.resource_logs[0].scope_logs[0].log_records) for r in host.logs] == [2]
    exp.shutdown()
    assert [len(r.resource_logs[0].scope_logs[0].log_records) for r in host.logs] == [2, 1]
    assert exp.exported == 3


def test_factory_registered() -> None:
    """The findings_otlp type is registered."""
    assert FACTORIES["findings_otlp"].config_class is FindingsLogsConfig
