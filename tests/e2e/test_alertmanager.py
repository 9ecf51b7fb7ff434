# SPDX-License-Identifier: Apache-2.0
"""Differential test against a real Prometheus Alertmanager (Debian prometheus-alertmanager):
the same alert stream, the same routing/grouping/inhibition/silence config, and both engines'
webhook sinks must receive the same groups; plus pushing to Alertmanager's API v2."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from otel_agents.exporters._notifiers import WebhookConfig, WebhookNotifier, rfc3339
from otel_agents.exporters._ssrf import EgressConfig, UrlPolicy
from otel_agents.processors._alert_state import (
    Alert,
    Dispatcher,
    InhibitRuleConfig,
    build_route,
    fingerprint,
    parse_matcher,
)

from tests.e2e.conftest import http_get, listening_ports, require_binary, stop_process, wait_until
from tests.exporters.test_notifiers_sink import WebhookSink, start_sink

pytestmark = pytest.mark.e2e

ROUTE = {
    "receiver": "hook",
    "group_by": ["alertname", "agent"],
    "group_wait": "1s",
    "group_interval": "3s",
    "repeat_interval": "1h",
    "routes": [{"receiver": "pager", "matchers": ['severity="critical"'], "continue": True}],
}
INHIBIT = [{"source_matchers": ['alertname="AgentDown"'], "target_matchers": ['severity="warning"'],
            "equal": ["agent"]}]  # fmt: skip


@dataclass
class Alertmanager:
    """A running Alertmanager on loopback."""

    url: str
    process: subprocess.Popen[bytes]

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        """POST JSON to the API."""
        req = urllib.request.Request(f"{self.url}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")  # fmt: skip
        with urllib.request.urlopen(req, timeout=5) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None

    def get(self, path: str) -> Any:
        """GET JSON from the API."""
        status, body = http_get(f"{self.url}{path}")
        assert status == 200, body
        return json.loads(body)


@pytest.fixture
def sinks() -> Iterator[tuple[WebhookSink, WebhookSink]]:
    """One loopback sink for Alertmanager, one for our engine."""
    with start_sink() as a, start_sink() as b:
        yield a, b


def _start_alertmanager(
    tmp: Path, sink_url: str, route: dict[str, Any] | None = None
) -> Alertmanager:
    binary = require_binary("prometheus-alertmanager", "apt-get install prometheus-alertmanager")
    cfg = {
        "global": {"resolve_timeout": "5m"},
        "route": dict(route or ROUTE),
        "receivers": [
            {
                "name": "hook",
                "webhook_configs": [{"url": f"{sink_url}/hook", "send_resolved": True}],
            },
            {
                "name": "pager",
                "webhook_configs": [{"url": f"{sink_url}/pager", "send_resolved": True}],
            },
        ],
        "inhibit_rules": INHIBIT if route is None else [],
    }
    (tmp / "am.yml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    log = (tmp / "am.log").open("wb")
    proc = subprocess.Popen(
        [binary, f"--config.file={tmp / 'am.yml'}", f"--storage.path={tmp / 'data'}",
         "--web.listen-address=127.0.0.1:0", "--cluster.listen-address="],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip

    def bound() -> list[int]:
        if proc.poll() is not None:
            pytest.fail(
                f"alertmanager exited {proc.returncode}: {(tmp / 'am.log').read_text()[-2000:]}"
            )
        return listening_ports(proc.pid)

    port = wait_until(bound, timeout=20, what="alertmanager to listen")[0]
    am = Alertmanager(f"http://127.0.0.1:{port}", proc)
    wait_until(
        lambda: http_get(f"{am.url}/api/v2/status")[0] == 200, timeout=20, what="alertmanager ready"
    )
    return am


@pytest.fixture
def alertmanager(tmp_path: Path, sinks: tuple[WebhookSink, WebhookSink]) -> Iterator[Alertmanager]:
    """Alertmanager 0.25 with the shared routing config, webhooks to the first sink."""
    am = _start_alertmanager(tmp_path, sinks[0].url)
    yield am
    stop_process(am.process)


def _groups(
    bodies: list[Any],
) -> dict[tuple[str, str], list[tuple[str, tuple[tuple[str, str], ...]]]]:
    out: dict[tuple[str, str], list[tuple[str, tuple[tuple[str, str], ...]]]] = {}
    for b in bodies:
        alerts = tuple(sorted((a["fingerprint"], a["status"]) for a in b["alerts"]))
        out.setdefault((b["receiver"], b["groupKey"]), []).append((b["status"], alerts))
    return out


def test_same_stream_same_notifications(
    alertmanager: Alertmanager, sinks: tuple[WebhookSink, WebhookSink]
) -> None:
    """Grouping, group_wait/interval, resolve, inhibition (equal), silences and continue routing
    give the same notification groups in our engine as in Alertmanager."""
    am_sink, our_sink = sinks
    policy = UrlPolicy(EgressConfig(allow_http=True, allow_cidrs=["127.0.0.1/32"]))
    notifiers = {name: WebhookNotifier(name, 0, WebhookConfig(url=f"{our_sink.url}/{name}"), policy)
                 for name in ("hook", "pager")}  # fmt: skip
    ours = Dispatcher(build_route(ROUTE), [InhibitRuleConfig(**r).build("i") for r in INHIBIT])

    start = time.time()
    silence_end = start + 600
    alertmanager.post("/api/v2/silences", {
        "matchers": [{"name": "alertname", "value": "Noisy", "isRegex": False, "isEqual": True}],
        "startsAt": rfc3339(start), "endsAt": rfc3339(silence_end), "createdBy": "e2e", "comment": "diff",
    })  # fmt: skip
    ours.add_silence([parse_matcher('alertname="Noisy"')], starts_at=start, ends_at=silence_end,
                     created_by="e2e", now=start)  # fmt: skip

    firing = [
        {"alertname": "ToolErrors", "agent": "planner", "severity": "warning"},
        {"alertname": "ToolErrors", "agent": "researcher", "severity": "warning"},
        {"alertname": "AgentDown", "agent": "critic", "severity": "critical"},
        {"alertname": "ToolErrors", "agent": "critic", "severity": "warning"},  # inhibited
        {"alertname": "Noisy", "agent": "planner", "severity": "warning"},  # silenced
    ]

    def push(labels: dict[str, str], starts: float, ends: float | None, now: float) -> None:
        body: dict[str, Any] = {"labels": labels, "startsAt": rfc3339(starts)}
        if ends is not None:
            body["endsAt"] = rfc3339(ends)
        alertmanager.post("/api/v2/alerts", [body])
        ours.put(Alert(labels=dict(labels), starts_at=starts, ends_at=ends), now)

    now = time.time()
    for labels in firing:
        push(labels, now, None, now)
    resolved = False
    deadline = now + 5.5  # flushes at +1 s (first) and +4 s (resolve); margin for the second
    while time.time() < deadline:
        t = time.time()
        if not resolved and t >= now + 2.5:
            push(firing[0], now, t, t)  # resolve planner's ToolErrors between two flushes
            resolved = True
        for n in ours.flush_due(t):
            notifiers[n.receiver].notify(n)
        time.sleep(0.05)

    am_groups = _groups(am_sink.bodies())
    our_groups = _groups(our_sink.bodies())
    assert our_groups == am_groups
    fp = {k: fingerprint(v) for k, v in (("planner", firing[0]), ("critic", firing[2]))}
    # the expected shape, spelled out: planner fired then resolved; critic's warning inhibited
    assert am_groups[("hook", '{}:{agent="planner", alertname="ToolErrors"}')] == [
        ("firing", ((fp["planner"], "firing"),)), ("resolved", ((fp["planner"], "resolved"),)),
    ]  # fmt: skip
    assert am_groups[
        ("pager", '{}/{severity="critical"}:{agent="critic", alertname="AgentDown"}')
    ] == [
        ("firing", ((fp["critic"], "firing"),)),
    ]
    assert not any(
        "Noisy" in k[1] or k[1].endswith('{agent="critic", alertname="ToolErrors"}')
        for k in am_groups
    )


def test_repeat_late_joiner_and_silence_expiry_match(
    tmp_path: Path, sinks: tuple[WebhookSink, WebhookSink]
) -> None:
    """repeat_interval, an alert joining a notified group, and a silence expiring mid-run give
    the same notifications in both engines."""
    route = {"receiver": "hook", "group_by": ["alertname", "agent"], "group_wait": "1s",
             "group_interval": "2s", "repeat_interval": "3s"}  # fmt: skip
    am_sink, our_sink = sinks
    am = _start_alertmanager(tmp_path, am_sink.url, route)
    try:
        policy = UrlPolicy(EgressConfig(allow_http=True, allow_cidrs=["127.0.0.1/32"]))
        hook = WebhookNotifier("hook", 0, WebhookConfig(url=f"{our_sink.url}/hook"), policy)
        ours = Dispatcher(build_route(route))
        start = time.time()
        _, sil = am.post("/api/v2/silences", {
            "matchers": [{"name": "alertname", "value": "Muted", "isRegex": False, "isEqual": True}],
            "startsAt": rfc3339(start), "endsAt": rfc3339(start + 600), "createdBy": "e2e", "comment": "x",
        })  # fmt: skip
        ours_sil = ours.add_silence([parse_matcher('alertname="Muted"')], starts_at=start,
                                    ends_at=start + 600, created_by="e2e", now=start)  # fmt: skip

        def push(labels: dict[str, str], t: float) -> None:
            am.post("/api/v2/alerts", [{"labels": labels, "startsAt": rfc3339(t)}])
            ours.put(Alert(labels=dict(labels), starts_at=t), t)

        t0 = time.time()
        push({"alertname": "Rep", "agent": "a"}, t0)
        push({"alertname": "Late", "agent": "b", "tool": "x"}, t0)
        push({"alertname": "Muted", "agent": "c"}, t0)
        joined = expired = False
        while time.time() < t0 + 10.0:
            t = time.time()
            if not joined and t >= t0 + 2.0:
                push({"alertname": "Late", "agent": "b", "tool": "y"}, t)
                joined = True
            if not expired and t >= t0 + 4.0:
                urllib.request.urlopen(
                    urllib.request.Request(
                        f"{am.url}/api/v2/silence/{sil['silenceID']}", method="DELETE"
                    ),
                    timeout=5,
                ).close()
                ours.expire_silence(ours_sil.id, t)
                expired = True
            for n in ours.flush_due(t):
                hook.notify(n)
            time.sleep(0.05)
        am_groups, our_groups = _groups(am_sink.bodies()), _groups(our_sink.bodies())
        assert our_groups == am_groups
        counts = {k[1]: len(v) for k, v in am_groups.items()}
        # Rep: first + repeats at +5 s and +9 s; Late: first, then the joiner, then a repeat;
        # Muted: only after its silence expired (flush at +5 s), then a repeat at +9 s
        assert counts == {'{}:{agent="a", alertname="Rep"}': 3, '{}:{agent="b", alertname="Late"}': 3,
                          '{}:{agent="c", alertname="Muted"}': 2}  # fmt: skip
        late = am_groups[("hook", '{}:{agent="b", alertname="Late"}')]
        assert [len(alerts) for _, alerts in late] == [1, 2, 2]
    finally:
        am.process.terminate()
        am.process.wait(timeout=10)


def test_push_to_alertmanager_api_v2(tmp_path: Path, alertmanager: Alertmanager) -> None:
    """The alert engine pushes its alerts to Alertmanager's API v2; they read back with the same
    labels, annotations and fingerprint."""
    from otel_agents.processors._alert import AlertConfig, AlertEngine

    from otel_agents._configtypes import decode
    from tests.processors._host import TestHost
    from tests.processors.test_alert_rules import make_batch, span

    cfg = decode(AlertConfig, {
        "default_rules": False,
        "rules": [{"name": "ToolErrors", "kind": "ratio", "where": ['operation="execute_tool"'],
                   "by": ["tool"], "window": "60s", "threshold": 0.5,
                   "annotations": {"summary": "tool {tool} failing"}}],
        "alertmanagers": [{"url": alertmanager.url, "resend_interval": "30s"}],
        "egress": {"allow_http": True, "allow_cidrs": ["127.0.0.1/32"]},
        "retry": {"initial_interval": "50ms"},
    })  # fmt: skip
    host = TestHost(tmp_path / "host", now=time.time())
    (tmp_path / "host").mkdir()
    eng = AlertEngine(cfg)
    eng.start(host)
    try:
        eng.process_traces(
            make_batch([span(operation="execute_tool", tool="search", error=True)] * 3)
        )
        eng.tick(host.clock)
        assert eng.worker.wait_idle(10)

        def read_back() -> list[dict[str, Any]]:
            return [
                a
                for a in alertmanager.get("/api/v2/alerts")
                if a["labels"].get("alertname") == "ToolErrors"
            ]

        (got,) = wait_until(read_back, timeout=10, what="pushed alert in Alertmanager")
        labels = {"alertname": "ToolErrors", "severity": "warning", "tool": "search"}
        assert got["labels"] == labels
        assert got["annotations"] == {"summary": "tool search failing"}
        assert got["fingerprint"] == fingerprint(labels)
        assert got["status"]["state"] == "active"
        assert (
            'otel_agents_notifications_total{notifier="alertmanager",outcome="success"} 1.0'
            in host.exposition()
        )
    finally:
        eng.shutdown()


def test_receiver_end_to_end_alerts_and_audit(
    tmp_path: Path, alertmanager: Alertmanager, sinks: tuple[WebhookSink, WebhookSink]
) -> None:
    """Through the real receiver: failing tool spans from the OTel SDK exporter fire an alert that
    reaches the webhook sink, Alertmanager's API and /api/v1/alerts; agent events from the SDK's
    AgentEvents land in /api/v1/events."""
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import StatusCode

    from otel_agents import semconv as sc
    from otel_agents._events import AgentEvents
    from tests.e2e.conftest import run_receiver

    _, sink = sinks
    alert_cfg = {
        "default_rules": False,
        "rules": [{"name": "ToolErrors", "kind": "ratio", "where": ['operation="execute_tool"'],
                   "by": ["agent", "tool"], "window": "60s", "min_count": 2, "threshold": 0.5,
                   "annotations": {"summary": "{tool} fails {value:.0%}"}}],
        "route": {"receiver": "hook", "group_by": ["alertname"], "group_wait": "0s",
                  "group_interval": "1s"},
        "receivers": [{"name": "hook", "webhook_configs": [{"url": f"{sink.url}/hook"}]}],
        "alertmanagers": [{"url": alertmanager.url}],
        "egress": {"allow_http": True, "allow_cidrs": ["127.0.0.1/32"]},
    }  # fmt: skip
    with run_receiver(
        tmp_path / "data", **{"processors.alert": alert_cfg, "processors.audit": {}}
    ) as rr:
        resource = Resource.create({"service.name": "e2e-agents"})
        tp = TracerProvider(resource=resource)
        tp.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{rr.http_url}/v1/traces"))
        )
        lp = LoggerProvider(resource=resource)
        lp.add_log_record_processor(
            SimpleLogRecordProcessor(OTLPLogExporter(endpoint=f"{rr.http_url}/v1/logs"))
        )
        try:
            tracer = tp.get_tracer("e2e")
            events = AgentEvents("planner", logger_provider=lp)
            with tracer.start_as_current_span("invoke_agent planner") as root:
                events.task_start("t-1", conversation_id="ctx-9")
                for _ in range(3):
                    with tracer.start_as_current_span("execute_tool web_search") as s:
                        s.set_attributes({sc.GEN_AI_OPERATION_NAME: sc.OP_EXECUTE_TOOL,
                                          sc.GEN_AI_AGENT_NAME: "planner", sc.GEN_AI_TOOL_NAME: "web_search"})  # fmt: skip
                        s.set_status(StatusCode.ERROR, "timeout")
                events.task_error("t-1", "TimeoutError")
                trace_hex = f"{root.get_span_context().trace_id:032x}"
        finally:
            tp.shutdown()
            lp.shutdown()

        (hook,) = sink.wait_for(1, timeout=20)[:1]
        assert hook.body["status"] == "firing"
        assert hook.body["alerts"][0]["labels"] == {
            "alertname": "ToolErrors", "severity": "warning", "agent": "planner", "tool": "web_search",
        }  # fmt: skip

        def am_has_it() -> list[Any]:
            return [
                a
                for a in alertmanager.get("/api/v2/alerts")
                if a["labels"].get("alertname") == "ToolErrors"
            ]

        wait_until(am_has_it, timeout=20, what="alert pushed to Alertmanager")
        status, body = http_get(f"{rr.admin_url}/api/v1/alerts")
        assert status == 200
        assert [a["state"] for a in json.loads(body)["alerts"]] == ["firing"]

        def audit() -> list[dict[str, Any]]:
            st, b = http_get(f"{rr.admin_url}/api/v1/events?agent=planner&trace_id={trace_hex}")
            return json.loads(b)["events"] if st == 200 else []

        got = wait_until(lambda: len(audit()) >= 2 and audit(), timeout=20, what="audit events")
        assert sorted(e["type"] for e in got) == [
            sc.AGENT_EVENT_TASK_ERROR,
            sc.AGENT_EVENT_TASK_START,
        ]
        assert {e["session"] for e in got if e["type"] == sc.AGENT_EVENT_TASK_START} == {"ctx-9"}
