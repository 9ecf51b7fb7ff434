# SPDX-License-Identifier: Apache-2.0
"""The alert component end to end on a fake receiver clock: rules → states → webhook sink on
loopback, store and history, metrics, OTLP log records, and the admin API actions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from otel_agents.processors._alert import AlertConfig, AlertEngine

from otel_agents._configtypes import decode
from otel_agents._errors import ConfigError
from tests.exporters.test_notifiers_sink import WebhookSink, start_sink
from tests.processors._host import TestHost
from tests.processors.test_alert_rules import T0, make_batch, span

RULE = {
    "name": "ToolErrors", "kind": "ratio", "where": ['operation="execute_tool"'], "by": ["tool"],
    "window": "60s", "min_count": 2, "threshold": 0.5, "for": "5s", "severity": "warning",
    "annotations": {"summary": "tool {tool} fails {value:.0%}"},
}  # fmt: skip


@pytest.fixture
def sink() -> Iterator[WebhookSink]:
    """Loopback webhook sink."""
    with start_sink() as s:
        yield s


def _config(sink: WebhookSink, **extra: Any) -> AlertConfig:
    data: dict[str, Any] = {
        "default_rules": False,
        "rules": [RULE],
        "evaluation_interval": "1s",
        "trace_url": "http://jaeger.example/trace/{trace_id}",
        "route": {
            "receiver": "hook",
            "group_by": ["alertname"],
            "group_wait": "1s",
            "group_interval": "2s",
            "repeat_interval": "1h",
        },
        "receivers": [{"name": "hook", "webhook_configs": [{"url": f"{sink.url}/hook"}]}],
        "egress": {"allow_http": True, "allow_cidrs": ["127.0.0.1/32"]},
        "retry": {"initial_interval": "10ms", "max_interval": "50ms"},
    }
    data.update(extra)
    return decode(AlertConfig, data, "processors.alert")


@pytest.fixture
def engine(tmp_path: Path, sink: WebhookSink) -> Iterator[tuple[AlertEngine, TestHost]]:
    """A started engine on a TestHost at T0."""
    host = TestHost(tmp_path, now=T0)
    eng = AlertEngine(_config(sink))
    eng.start(host)
    yield eng, host
    eng.shutdown()


def _advance(eng: AlertEngine, host: TestHost, seconds: float) -> None:
    end = host.clock + seconds
    while host.clock < end - 1e-9:
        host.clock += 1.0
        eng.tick(host.clock)


def _errors(eng: AlertEngine, host: TestHost, n: int = 3) -> None:
    eng.process_traces(make_batch([span(operation="execute_tool", tool="search", error=True)] * n))


def _post(host: TestHost, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    return host.routes[path]("POST", {}, json.dumps(body).encode())


def test_for_duration_then_webhook_then_resolve(
    engine: tuple[AlertEngine, TestHost], sink: WebhookSink
) -> None:
    """An alert is pending for `for`, fires, reaches the webhook after group_wait, and resolves
    (with a resolved notification) once the errors leave the window."""
    eng, host = engine
    _errors(eng, host)
    eng.tick(host.clock)
    (a,) = host.get("/api/v1/alerts")[1]["alerts"]
    assert a["state"] == "pending" and a["labels"] == {
        "alertname": "ToolErrors",
        "severity": "warning",
        "tool": "search",
    }
    _advance(eng, host, 4)
    assert host.get("/api/v1/alerts")[1]["alerts"][0]["state"] == "pending"
    _advance(eng, host, 1)  # for: 5s reached
    assert host.get("/api/v1/alerts")[1]["alerts"][0]["state"] == "firing"
    assert (
        'otel_agents_alerts{alertname="ToolErrors",alertstate="firing",severity="warning"} 1.0'
        in host.exposition()
    )
    assert sink.received == []  # group_wait not over yet
    _advance(eng, host, 1)
    (msg,) = sink.wait_for(1)
    assert msg.path == "/hook"
    body = msg.body
    assert body["version"] == "4" and body["status"] == "firing" and body["receiver"] == "hook"
    assert body["groupKey"] == '{}:{alertname="ToolErrors"}'
    assert body["alerts"][0]["annotations"]["summary"] == "tool search fails 100%"
    assert body["alerts"][0]["endsAt"] == "0001-01-01T00:00:00Z"
    # the errors age out of the 60 s window -> resolved -> resolved notification
    _advance(eng, host, 62)
    got = sink.wait_for(2)
    assert got[1].body["status"] == "resolved"
    assert got[1].body["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"
    assert host.get("/api/v1/alerts")[1]["alerts"] == []
    assert 'alertstate="firing"' not in host.exposition()
    events = [
        h["event"]
        for h in reversed(host.get("/api/v1/alerts", {"state": ["history"]})[1]["history"])
    ]
    assert events == ["pending", "firing", "notified", "resolved", "notified"]
    # OTLP log records for firing and resolved
    recs = [
        r
        for req in host.logs
        for rl in req.resource_logs
        for sl in rl.scope_logs
        for r in sl.log_records
    ]
    assert [r.event_name for r in recs] == ["agent.alert", "agent.alert"]
    states = [
        next(kv.value.string_value for kv in r.attributes if kv.key == "agent.alert.state")
        for r in recs
    ]
    assert states == ["firing", "resolved"]
    assert (
        'otel_agents_notifications_total{notifier="webhook",outcome="success"} 2.0'
        in host.exposition()
    )


def test_pending_alert_that_clears_never_notifies(
    engine: tuple[AlertEngine, TestHost], sink: WebhookSink
) -> None:
    """A condition that clears before `for` elapses leaves no notification."""
    eng, host = engine
    _errors(eng, host)
    eng.tick(host.clock)
    eng.process_traces(make_batch([span(operation="execute_tool", tool="search")] * 10))
    _advance(eng, host, 10)
    assert host.get("/api/v1/alerts")[1]["alerts"] == []
    assert sink.received == []


def test_ack_resolve_and_silence_record_who_and_when(
    engine: tuple[AlertEngine, TestHost], sink: WebhookSink
) -> None:
    """Acknowledge, resolve and silence through the admin API record the person and time."""
    eng, host = engine
    _errors(eng, host)
    _advance(eng, host, 6)
    (a,) = host.get("/api/v1/alerts")[1]["alerts"]
    fp = a["fingerprint"]
    assert _post(host, "/api/v1/alerts/ack", {"fingerprint": fp})[0] == 400  # who is required
    status, body = _post(
        host, "/api/v1/alerts/ack", {"fingerprint": fp, "by": "alice", "comment": "on it"}
    )
    assert status == 200 and body["acked_by"] == "alice" and body["acked_at"] == host.clock
    assert host.get("/api/v1/alerts")[1]["alerts"][0]["acked_by"] == "alice"
    # resolve by hand: stays resolved while the condition still holds
    status, body = _post(host, "/api/v1/alerts/resolve", {"fingerprint": fp, "by": "bob"})
    assert status == 200 and body["resolved_by"] == "bob"
    _errors(eng, host)
    _advance(eng, host, 10)
    assert host.get("/api/v1/alerts")[1]["alerts"] == []
    hist = host.get("/api/v1/alerts", {"state": ["history"], "fingerprint": [fp]})[1]["history"]
    by_event = {h["event"]: h for h in hist}
    assert by_event["acknowledged"]["by"] == "alice"
    assert by_event["resolved"]["by"] == "bob"
    # a silence created for the alert's labels is listed with its creator and is active
    status, sil = _post(
        host, "/api/v1/alerts/silence", {"fingerprint": fp, "by": "carol", "duration": "30m"}
    )
    assert status == 200 and sil["created_by"] == "carol" and sil["status"] == "active"
    assert sil["ends_at"] == pytest.approx(host.clock + 1800)
    listed = host.get("/api/v1/silences")[1]["silences"]
    assert [s["id"] for s in listed] == [sil["id"]]
    status, exp = _post(host, "/api/v1/silences/expire", {"id": sil["id"], "by": "carol"})
    assert status == 200 and exp["status"] == "expired"


def test_action_and_silence_endpoints_reject_a_body_that_is_not_a_json_object(
    engine: tuple[AlertEngine, TestHost],
) -> None:
    """Every POST endpoint answers 400 naming the fault for a non-JSON or non-object body."""
    _, host = engine
    for path in ("/api/v1/alerts/ack", "/api/v1/silences", "/api/v1/silences/expire"):
        route = host.routes[path]
        assert route("POST", {}, b"{not json") == (400, {"error": "body must be JSON"})
        assert route("POST", {}, b"[1, 2]") == (400, {"error": "body must be a JSON object"})
        assert route("PUT", {}, b"{}") == (405, {"error": "method not allowed"})
    # an empty body is an empty object: what is missing is the person, not the JSON
    assert host.routes["/api/v1/alerts/ack"]("POST", {}, None) == (
        400,
        {"error": "'by' (who) is required"},
    )
    assert host.routes["/api/v1/silences"]("POST", {}, b"") == (
        400,
        {"error": "'created_by' (who) is required"},
    )


def test_silenced_alert_is_not_notified(
    engine: tuple[AlertEngine, TestHost], sink: WebhookSink
) -> None:
    """An alert firing under a matching silence never reaches the webhook; the API shows it as
    silenced."""
    eng, host = engine
    status, sil = _post(
        host,
        "/api/v1/silences",
        {"matchers": ['tool="search"'], "created_by": "dave", "duration": "1h"},
    )
    assert status == 200
    _errors(eng, host)
    _advance(eng, host, 10)
    (a,) = host.get("/api/v1/alerts")[1]["alerts"]
    assert a["state"] == "firing" and a["silenced_by"] == [sil["id"]]
    eng.worker.wait_idle(5)
    assert sink.received == []


def test_invalid_config_names_rule_and_key(sink: WebhookSink) -> None:
    """Rules, routes and receivers are validated when the config is decoded."""
    with pytest.raises(ConfigError, match=r"processors\.alert\.rules\.ToolErrors\.window"):
        _config(sink, rules=[{**RULE, "window": "later"}])
    with pytest.raises(ConfigError, match=r"receiver 'nobody' is not defined"):
        _config(sink, route={"receiver": "nobody"})
    with pytest.raises(ConfigError, match=r"disabled_rules"):
        _config(sink, disabled_rules=["Nope"])


def test_metadata_target_refused_at_save(sink: WebhookSink) -> None:
    """A webhook pointing at the metadata service is refused when the config is loaded."""
    with pytest.raises(
        ConfigError, match=r"receivers\.hook\.webhook_configs\[0\]\.url: target refused"
    ):
        _config(
            sink,
            receivers=[
                {"name": "hook", "webhook_configs": [{"url": "http://169.254.169.254/latest"}]}
            ],
        )


def test_default_pack_is_quiet_on_clean_traffic(tmp_path: Path, sink: WebhookSink) -> None:
    """Ten minutes of healthy traffic fire no default-pack alert."""
    host = TestHost(tmp_path, now=T0)
    eng = AlertEngine(_config(sink, default_rules=True, rules=[]))
    eng.start(host)
    try:
        for _ in range(600):
            eng.process_traces(make_batch(
                [span(agent="planner", seconds=4.0)]
                + [span(agent="researcher", operation="execute_tool", tool="web_search", seconds=0.3)] * 2
                + [span(agent="researcher", operation="chat", model="gpt-4o", seconds=1.2, cost=0.002)]
            ))  # fmt: skip
            host.clock += 1
            eng.tick(host.clock)
        assert host.get("/api/v1/alerts", {"state": ["all"]})[1]["alerts"] == []
    finally:
        eng.shutdown()


def test_render_alerts_lists_what_fired(
    engine: tuple[AlertEngine, TestHost], sink: WebhookSink
) -> None:
    """The demo report's table lists every alert that fired, resolved ones included."""
    from otel_agents.exporters._alert_outputs import render_alerts

    eng, host = engine
    assert (
        render_alerts(host.get("/api/v1/alerts", {"state": ["all"]})[1]["alerts"])
        == "Alerts: none fired.\n"
    )
    _errors(eng, host)
    _advance(eng, host, 6)
    _advance(eng, host, 62)
    text = render_alerts(host.get("/api/v1/alerts", {"state": ["all"]})[1]["alerts"])
    lines = text.splitlines()
    assert lines[0] == "Alerts: 1 fired (0 still firing)"
    assert lines[1].split()[:3] == ["STATE", "SEVERITY", "ALERT"]
    row = lines[2].split()
    assert row[:4] == ["resolved", "warning", "ToolErrors", "tool=search"]
    assert lines[2].endswith("tool search fails 100%")


def test_two_alert_stages_share_the_gauge(tmp_path: Path, sink: WebhookSink) -> None:
    """Two named alert stages on one registry add up in otel_agents_alerts."""
    host = TestHost(tmp_path, now=T0)
    a, b = AlertEngine(_config(sink), "a"), AlertEngine(_config(sink), "b")
    a.start(host)
    b.start(host)  # named stages serve /api/v1/alerts-<name>: no route collision
    try:
        for eng in (a, b):
            eng.process_traces(
                make_batch([span(operation="execute_tool", tool="search", error=True)] * 3)
            )
        for _ in range(6):
            host.clock += 1
            a.tick(host.clock)
            b.tick(host.clock)
        assert (
            'otel_agents_alerts{alertname="ToolErrors",alertstate="firing",severity="warning"} 2.0'
            in host.exposition()
        )
        assert len(host.get("/api/v1/alerts-b")[1]["alerts"]) == 1
    finally:
        a.shutdown()
        b.shutdown()


def test_receiver_test_endpoint_sends_through_the_policy(
    engine: tuple[AlertEngine, TestHost], sink: WebhookSink
) -> None:
    """POST /api/v1/alerts/test sends a test notification to the named receiver (who required)."""
    _eng, host = engine
    assert _post(host, "/api/v1/alerts/test", {"receiver": "hook"})[0] == 400
    assert _post(host, "/api/v1/alerts/test", {"receiver": "nobody", "by": "eve"})[0] == 404
    status, body = _post(host, "/api/v1/alerts/test", {"receiver": "hook", "by": "eve"})
    assert status == 202 and body["integrations"] == ["hook/webhook[0]"]
    (msg,) = sink.wait_for(1)
    assert msg.body["groupKey"] == '{}:{receiver="hook"}'
    assert msg.body["alerts"][0]["labels"]["alertname"] == "TestNotification"
    assert msg.body["alerts"][0]["annotations"]["summary"] == "Test notification requested by eve"


def test_restart_restores_active_alerts_and_resolves_them_later(
    tmp_path: Path, sink: WebhookSink
) -> None:
    """After a restart the store's firing alerts are taken over, and resolve once the rule's
    window has passed without the condition (not at the first evaluation)."""
    host = TestHost(tmp_path, now=T0)
    first = AlertEngine(_config(sink))
    first.start(host)
    _errors(first, host)
    _advance(first, host, 6)
    first.shutdown()
    host.routes.clear()
    second = AlertEngine(_config(sink))
    second.start(host)
    try:
        (a,) = host.get("/api/v1/alerts")[1]["alerts"]
        assert a["state"] == "firing"
        _advance(second, host, 30)
        assert [x["state"] for x in host.get("/api/v1/alerts")[1]["alerts"]] == ["firing"]
        _advance(second, host, 40)
        assert host.get("/api/v1/alerts")[1]["alerts"] == []
        assert host.get("/api/v1/alerts", {"state": ["all"]})[1]["alerts"][0]["state"] == "resolved"
    finally:
        second.shutdown()


def test_finding_alert_carries_trace_dashboard_and_runbook_links(
    tmp_path: Path, sink: WebhookSink
) -> None:
    """A finding-based alert links to an example trace, a dashboard and its runbook."""
    from otel_agents._component import Finding

    host = TestHost(tmp_path, now=T0)
    cfg = _config(sink, default_rules=True, rules=[], dashboard_url="https://grafana.example/d/agents?var-agent={agent}",
                  external_url="http://127.0.0.1:4319/")  # fmt: skip
    eng = AlertEngine(cfg)
    eng.start(host)
    try:
        host.emit_finding(Finding(kind="tool_loop", key="agent=r,tool=t", severity="warning", score=80,
                                  title="Tool loop: t", explanation="t called 6 times with the same arguments",
                                  labels={"agent": "r", "tool": "t"}, trace_ids=("ab" * 16,)))  # fmt: skip
        _advance(eng, host, 2)
        (a,) = host.get("/api/v1/alerts")[1]["alerts"]
        assert a["labels"] == {
            "alertname": "ToolLoopDetected",
            "severity": "warning",
            "agent": "r",
            "tool": "t",
        }
        ann = a["annotations"]
        assert ann["summary"] == "Tool loop: t"
        assert ann["trace_url"] == "http://jaeger.example/trace/" + "ab" * 16
        assert ann["dashboard_url"] == "https://grafana.example/d/agents?var-agent=r"
        assert ann["runbook_url"].endswith("docs/alerting.md#toolloopdetected")
        assert a["generator_url"] == ann["trace_url"]
        (msg,) = sink.wait_for(1)
        assert msg.body["alerts"][0]["generatorURL"] == ann["trace_url"]
        _advance(eng, host, 61)  # resolve_after 1m without a new finding
        assert host.get("/api/v1/alerts")[1]["alerts"] == []
    finally:
        eng.shutdown()


def test_ack_through_the_api_acknowledges_the_pagerduty_incident(tmp_path: Path, sink: WebhookSink,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Trigger, acknowledge (via the admin API) and resolve reach PagerDuty with one dedup_key."""
    monkeypatch.setenv("PD_TEST_KEY", "k" * 32)
    receivers = [
        {
            "name": "hook",
            "pagerduty_configs": [
                {"routing_key_env": "PD_TEST_KEY", "url": f"{sink.url}/v2/enqueue"}
            ],
        }
    ]
    host = TestHost(tmp_path, now=T0)
    eng = AlertEngine(_config(sink, receivers=receivers))
    eng.start(host)
    try:
        _errors(eng, host)
        _advance(eng, host, 7)
        sink.wait_for(1)
        (a,) = host.get("/api/v1/alerts")[1]["alerts"]
        assert (
            _post(host, "/api/v1/alerts/ack", {"fingerprint": a["fingerprint"], "by": "alice"})[0]
            == 200
        )
        sink.wait_for(2)
        _advance(eng, host, 62)
        events = [r.body for r in sink.wait_for(3)]
        assert [e["event_action"] for e in events] == ["trigger", "acknowledge", "resolve"]
        assert len({e["dedup_key"] for e in events}) == 1
    finally:
        eng.shutdown()


def test_keep_firing_for_holds_a_flapping_alert(tmp_path: Path, sink: WebhookSink) -> None:
    """keep_firing_for keeps a firing alert through a short gap in its condition."""
    rule = {**RULE, "window": "5s", "for": "0s", "keep_firing_for": "20s"}
    host = TestHost(tmp_path, now=T0)
    eng = AlertEngine(_config(sink, rules=[rule]))
    eng.start(host)
    try:
        _errors(eng, host)
        _advance(eng, host, 1)
        assert host.get("/api/v1/alerts")[1]["alerts"][0]["state"] == "firing"
        _advance(eng, host, 15)  # data left the 5 s window 10 s ago: still firing
        assert host.get("/api/v1/alerts")[1]["alerts"][0]["state"] == "firing"
        _advance(eng, host, 10)
        assert host.get("/api/v1/alerts")[1]["alerts"] == []
    finally:
        eng.shutdown()


def test_bad_input_never_raises_into_the_pipeline(
    engine: tuple[AlertEngine, TestHost], caplog: pytest.LogCaptureFixture
) -> None:
    """A batch without the documented columns is logged, not raised; later batches still count."""
    eng, host = engine
    eng.process_traces(object())
    assert "could not take a span batch" in caplog.text
    _errors(eng, host)
    _advance(eng, host, 6)
    assert host.get("/api/v1/alerts")[1]["alerts"][0]["state"] == "firing"
