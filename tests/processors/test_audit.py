# SPDX-License-Identifier: Apache-2.0
"""The audit trail: agent event log records in, exactly the matching events out."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from otel_agents.exporters._events_store import AgentEvent, EventQuery, EventsStore
from otel_agents.processors._audit import AuditConfig, AuditTrail

from otel_agents import semconv as sc
from tests.processors._host import TestHost

T0 = 1_700_000_000.0


def _kv(k: str, v: str) -> KeyValue:
    return KeyValue(key=k, value=AnyValue(string_value=v))


def _record(name: str, t: float, **attrs: str) -> LogRecord:
    return LogRecord(time_unix_nano=int(t * 1e9), event_name=name,
                     attributes=[_kv(k, v) for k, v in attrs.items()],
                     body=AnyValue(string_value=f"{name} body"), trace_id=bytes(range(16)),
                     span_id=bytes(range(8)), severity_text="INFO")  # fmt: skip


def _request(
    *records: LogRecord, resource: dict[str, str] | None = None
) -> ExportLogsServiceRequest:
    res = Resource(
        attributes=[_kv(k, v) for k, v in (resource or {"service.name": "planner-svc"}).items()]
    )
    return ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(resource=res, scope_logs=[ScopeLogs(log_records=records)])]
    )


def test_process_logs_extracts_fields_and_filters_event_names(tmp_path: Path) -> None:
    """Agent events are stored with agent, type, trace, session and user; other records and
    content attributes are not."""
    host = TestHost(tmp_path, now=T0)
    audit = AuditTrail(AuditConfig())
    audit.start(host)
    rec = _record(sc.AGENT_EVENT_A2A_SENT, T0, **{"gen_ai.agent.name": "planner",
                  "gen_ai.conversation.id": "ctx-1", "user.id": "u-7"})  # fmt: skip
    rec.attributes.append(_kv(sc.GEN_AI_INPUT_MESSAGES, "secret prompt"))
    legacy = LogRecord(time_unix_nano=int((T0 + 1) * 1e9), attributes=[_kv("event.name", sc.EVENT_AGENT_DECISION)],
                       body=AnyValue(string_value="reasoning text"))  # fmt: skip
    other = LogRecord(time_unix_nano=int(T0 * 1e9), body=AnyValue(string_value="plain app log"))
    alert = _record(sc.EVENT_AGENT_ALERT, T0)
    audit.process_logs(
        _request(
            rec,
            legacy,
            other,
            alert,
            resource={"service.name": "svc", "gen_ai.agent.name": "res-agent"},
        )
    )
    status, body = host.get("/api/v1/events")
    assert status == 200
    events = body["events"]
    assert [e["type"] for e in events] == [sc.EVENT_AGENT_DECISION, sc.AGENT_EVENT_A2A_SENT]
    a2a = events[1]
    assert a2a["agent"] == "planner" and a2a["session"] == "ctx-1" and a2a["user"] == "u-7"
    assert a2a["trace_id"] == bytes(range(16)).hex() and a2a["service"] == "svc"
    assert sc.GEN_AI_INPUT_MESSAGES not in a2a["attributes"]
    assert (
        events[0]["agent"] == "res-agent" and events[0]["body"] == ""
    )  # decision reasoning not kept
    audit.shutdown()


def test_api_validation_and_retention(tmp_path: Path) -> None:
    """Bad parameters answer 400; retention drops old events and caps the count."""
    host = TestHost(tmp_path, now=T0)
    audit = AuditTrail(AuditConfig(retention=3600, max_events=5, prune_interval=1))
    audit.start(host)
    audit.process_logs(
        _request(*(_record(sc.AGENT_EVENT_TASK_START, T0 - 7200 + i * 600) for i in range(20)))
    )
    assert host.get("/api/v1/events", {"limit": ["0"]})[0] == 400
    assert host.get("/api/v1/events", {"cursor": ["!!"]})[0] == 400
    assert host.get("/api/v1/events", {"since": ["yesterday"]})[0] == 400
    audit.tick(T0)
    assert audit.store is not None and audit.store.count() == 5
    times = [e["time"] for e in host.get("/api/v1/events", {"limit": ["100"]})[1]["events"]]
    assert min(times) >= T0 - 3600
    got = host.get(
        "/api/v1/events", {"since": ["2023-11-14T22:00:00Z"], "until": [str(T0 + 5000)]}
    )[1]["events"]
    assert all(e["time"] >= T0 - 3600 for e in got)
    audit.shutdown()


_AGENTS = st.sampled_from(["planner", "researcher", "critic", ""])
_TYPES = st.sampled_from(sorted({sc.AGENT_EVENT_TASK_START, sc.AGENT_EVENT_TASK_ERROR, sc.EVENT_AGENT_DECISION,
                                 sc.AGENT_EVENT_A2A_SENT, sc.AGENT_EVENT_SECURITY}))  # fmt: skip
_IDS = st.sampled_from(["", "a", "b", "c"])
_TRACES = st.sampled_from(["", "0" * 31 + "1", "ab" * 16])
_EVENT = st.builds(
    AgentEvent, time=st.integers(0, 50).map(lambda i: T0 + i), type=_TYPES, agent=_AGENTS,
    trace_id=_TRACES, session=_IDS, user=_IDS,
)  # fmt: skip
_QUERY = st.builds(
    EventQuery, agent=st.none() | _AGENTS, type=st.none() | _TYPES,
    since=st.none() | st.integers(0, 50).map(lambda i: T0 + i),
    until=st.none() | st.integers(0, 50).map(lambda i: T0 + i),
    trace_id=st.none() | _TRACES, session=st.none() | _IDS, user=st.none() | _IDS,
    limit=st.integers(1, 7),
)  # fmt: skip


@given(events=st.lists(_EVENT, max_size=40), query=_QUERY)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_queries_return_exactly_the_matching_events(
    events: list[AgentEvent], query: EventQuery
) -> None:
    """All pages of a query together equal a brute-force filter, newest first, no repeats."""
    store = EventsStore(":memory:")  # the same SQL as the file store, without disk I/O
    try:
        store.add(events)
        got: list[dict[str, object]] = []
        cursor = None
        for _ in range(len(events) + 2):
            page, cursor = store.query(EventQuery(**{**query.__dict__, "cursor": cursor}))
            assert len(page) <= query.limit
            got += page
            if cursor is None:
                break
        assert cursor is None
        expected = sorted(
            ((e.time, i) for i, e in enumerate(events) if query.matches(e)), reverse=True
        )
        assert [(g["time"], g["id"]) for g in got] == [(t, i + 1) for t, i in expected]
    finally:
        store.close()


def test_cursor_is_stable_while_events_arrive(tmp_path: Path) -> None:
    """Events added between pages do not shift or repeat rows of the next page."""
    store = EventsStore(tmp_path / "e.sqlite")
    store.add(AgentEvent(T0 + i, sc.AGENT_EVENT_TASK_START, "a") for i in range(10))
    page1, cur = store.query(EventQuery(limit=4))
    store.add([AgentEvent(T0 + 100, sc.AGENT_EVENT_TASK_START, "a")])
    page2, _ = store.query(EventQuery(limit=4, cursor=cur))
    assert [e["time"] for e in page1] == [T0 + 9, T0 + 8, T0 + 7, T0 + 6]
    assert [e["time"] for e in page2] == [T0 + 5, T0 + 4, T0 + 3, T0 + 2]
    with pytest.raises(ValueError, match="cursor"):
        store.query(EventQuery(cursor="bm90IGpzb24"))
    store.close()
