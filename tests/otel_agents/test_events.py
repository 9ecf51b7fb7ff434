# SPDX-License-Identifier: Apache-2.0
"""Agent event log records: names, attributes, severity and trace correlation."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider

from otel_agents import semconv as sc
from otel_agents._events import AgentEvents, emit_agent_event


@pytest.fixture
def logs() -> Iterator[tuple[LoggerProvider, InMemoryLogRecordExporter]]:
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def test_events_are_correlated_with_current_span(
    logs: tuple[LoggerProvider, InMemoryLogRecordExporter],
) -> None:
    """Every typed event carries its event_name, attributes and the current trace/span ids."""
    provider, exporter = logs
    events = AgentEvents("planner", logger_provider=provider)
    with TracerProvider().get_tracer("t").start_as_current_span("invoke_agent planner") as span:
        events.task_start("t-1", conversation_id="c-1")
        events.state_change("acting", previous="planning")
        events.decision(
            "route", chosen="researcher", options=["researcher", "self"], confidence=0.75
        )
        events.a2a_sent("SendMessage", message_id="m-1", peer="researcher")
        events.a2a_received("SendMessage", message_id="m-2", peer="researcher")
        events.security("block", rule_id="no-shell", severity="high")
        events.task_complete("t-1")
    records = [r.log_record for r in exporter.get_finished_logs()]
    assert [r.event_name for r in records] == [
        sc.AGENT_EVENT_TASK_START,
        sc.AGENT_EVENT_STATE_CHANGE,
        sc.AGENT_EVENT_DECISION,
        sc.AGENT_EVENT_A2A_SENT,
        sc.AGENT_EVENT_A2A_RECEIVED,
        sc.AGENT_EVENT_SECURITY,
        sc.AGENT_EVENT_TASK_COMPLETE,
    ]
    ctx = span.get_span_context()
    assert all(r.trace_id == ctx.trace_id and r.span_id == ctx.span_id for r in records)
    assert all(dict(r.attributes or {})[sc.GEN_AI_AGENT_NAME] == "planner" for r in records)
    decision = dict(records[2].attributes or {})
    assert decision[sc.AGENT_DECISION_OPTIONS] == ("researcher", "self")
    assert decision[sc.AGENT_DECISION_CONFIDENCE] == 0.75
    assert records[5].severity_number is SeverityNumber.WARN
    assert dict(records[1].attributes or {})[sc.AGENT_EVENT_PREVIOUS_STATE] == "planning"


def test_task_error_carries_exception(
    logs: tuple[LoggerProvider, InMemoryLogRecordExporter],
) -> None:
    """A task error is ERROR severity with error.type and the exception.* attributes."""
    provider, exporter = logs
    try:
        raise TimeoutError("llm too slow")
    except TimeoutError as exc:
        AgentEvents(logger_provider=provider).task_error("t-9", exc, agent_name="writer")
    (rec,) = [r.log_record for r in exporter.get_finished_logs()]
    attrs = dict(rec.attributes or {})
    assert rec.severity_number is SeverityNumber.ERROR
    assert attrs[sc.ERROR_TYPE] == "TimeoutError"
    assert attrs["exception.type"] == "TimeoutError"
    assert attrs[sc.A2A_TASK_STATE] == "TASK_STATE_FAILED"


def test_emit_never_raises_on_bad_input(
    logs: tuple[LoggerProvider, InMemoryLogRecordExporter],
) -> None:
    """Unserializable attribute values and a failing processor do not reach the caller."""
    provider, exporter = logs

    class Boom(SimpleLogRecordProcessor):
        def on_emit(self, log_record: object) -> None:  # type: ignore[override]
            raise RuntimeError("injected")

    provider.add_log_record_processor(Boom(exporter))
    emit_agent_event("agent.custom", {"x": object(), "y": None}, logger_provider=provider)
    assert [r.log_record.event_name for r in exporter.get_finished_logs()] == ["agent.custom"]
