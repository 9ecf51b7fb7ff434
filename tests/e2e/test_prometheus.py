# SPDX-License-Identifier: Apache-2.0
"""collector-config/prometheus with the real Prometheus 2.42 tools: promtool checks and unit
tests of the rules, then a live Prometheus scraping a receiver fed by the demo and evaluating
the recording and alerting rules on its real metrics.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    ROOT,
    AgentStack,
    http_get,
    listening_ports,
    require_binary,
    stop_process,
    wait_until,
)
from tests.test_collector_config import metric_catalogue

pytestmark = pytest.mark.e2e

PROM_DIR = ROOT / "collector-config" / "prometheus"


def promtool(*args: str, cwd: Path = PROM_DIR) -> subprocess.CompletedProcess[str]:
    """Runs promtool (Debian prometheus package)."""
    binary = require_binary("promtool", "apt-get install prometheus")
    return subprocess.run(
        [binary, *args], capture_output=True, text=True, timeout=60, check=False, cwd=cwd
    )


def test_promtool_check_config() -> None:
    """prometheus.yml is valid and its rule_files resolve to valid rules."""
    proc = promtool("check", "config", "prometheus.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: prometheus.yml is valid" in proc.stdout + proc.stderr


def test_promtool_check_rules() -> None:
    """Every rule file passes promtool's checks."""
    files = sorted(str(p.relative_to(PROM_DIR)) for p in (PROM_DIR / "rules").glob("*.yml"))
    proc = promtool("check", "rules", *files)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_promtool_test_rules() -> None:
    """The rule unit tests (synthetic series, hand-computed expectations) pass."""
    tests = sorted(str(p.relative_to(PROM_DIR)) for p in (PROM_DIR / "tests").glob("*.yml"))
    proc = promtool("test", "rules", *tests)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_promtool_test_rules_catches_a_wrong_threshold(tmp_path: Path) -> None:
    """The unit tests are discriminating: loosening one alert's threshold makes them fail."""
    shutil.copytree(PROM_DIR / "rules", tmp_path / "rules")
    shutil.copytree(PROM_DIR / "tests", tmp_path / "tests")
    rules = tmp_path / "rules" / "otel-agents.rules.yml"
    text = rules.read_text()
    needle = 'ratio_rate5m{operation="agent"} > 0.1'
    assert needle in text
    rules.write_text(text.replace(needle, 'ratio_rate5m{operation="agent"} > 0.3'))
    proc = promtool("test", "rules", "tests/otel-agents.rules.test.yml", cwd=tmp_path)
    assert proc.returncode != 0
    assert "OtelAgentsAgentErrorRatioHigh" in proc.stdout + proc.stderr


def test_amtool_check_config() -> None:
    """The Alertmanager config the Prometheus config points at is valid."""
    binary = require_binary("amtool", "apt-get install prometheus-alertmanager")
    proc = subprocess.run(
        [
            binary,
            "check-config",
            str(ROOT / "collector-config" / "alertmanager" / "alertmanager.yml"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_prometheus_scrapes_the_receiver(agent_stack: AgentStack) -> None:
    """Prometheus scrapes the receiver's /metrics; every documented analysis family the demo feeds is there."""
    prom = agent_stack.prometheus
    status, body = prom.api("targets")
    assert status == 200
    (target,) = body["data"]["activeTargets"]
    assert target["labels"]["job"] == "otel-agents" and target["health"] == "up", target
    expected = {
        "otel_agents_operation_calls_total",
        "otel_agents_operation_duration_seconds_bucket",
        "otel_agents_tokens_total",
        "otel_agents_cost_usd_total",
        "otel_agents_critical_path_seconds_total",
        "otel_agents_traces_completed_total",
        "otel_agents_receiver_accepted_items_total",
        "otel_agents_receiver_requests_total",
        "otel_agents_forwarder_sent_items_total",
        "traces_service_graph_request_total",
        "traces_service_graph_request_server_seconds_bucket",
    }
    assert expected <= set(metric_catalogue())
    status, body = prom.api("label/__name__/values")
    names = set(body["data"])
    assert expected <= names, f"missing: {sorted(expected - names)}"


def test_rules_evaluate_cleanly_on_real_metrics(agent_stack: AgentStack) -> None:
    """Every rule evaluates without error and every recording rule over demo data yields series."""
    prom = agent_stack.prometheus
    prom.wait_for_series("agent_operation_name:otel_agents_operation_calls:rate5m", timeout=20)
    status, body = prom.api("rules")
    assert status == 200
    rules = [r for g in body["data"]["groups"] for r in g["rules"]]
    assert len(rules) >= 30
    broken = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not broken
    # Recording rules over the demo's agents, tools, models, edges and spend.
    for record in (
        "agent_operation_name:otel_agents_operation_calls:rate5m",
        "agent_operation_name:otel_agents_operation_errors:ratio_rate5m",
        "agent_operation_name:otel_agents_operation_duration_seconds:p95_5m",
        "agent_model_token_type:otel_agents_tokens:rate5m",
        "agent_model:otel_agents_cost_usd:rate5m",
        "otel_agents_cost_budget:burn_rate1h",
        "client_server_connection_type:traces_service_graph_request:rate5m",
        "client_server_connection_type:traces_service_graph_request_server_seconds:p95_5m",
    ):
        assert prom.wait_for_series(record, timeout=10), record
    # The demo's agents appear with the analysis kinds the rules select on.
    series = prom.wait_for_series(
        'agent_operation_name:otel_agents_operation_calls:rate5m{operation="agent"}'
    )
    assert {s["metric"]["agent"] for s in series} >= {"planner", "researcher"}


def test_alert_rules_catch_the_demos_error_burst(agent_stack: AgentStack) -> None:
    """The demo's injected tool error burst makes the tool error-ratio alert go pending in Prometheus."""
    prom = agent_stack.prometheus
    alerts = prom.wait_for_series('ALERTS{alertname="OtelAgentsToolErrorRatioHigh"}', timeout=20)
    tools = {a["metric"]["name"] for a in alerts}
    assert "web_search" in tools
    # `for: 10m` has not elapsed in a test: pending, not firing.
    assert {a["metric"]["alertstate"] for a in alerts} == {"pending"}
    # Healthy agents have a zero error ratio rather than no series.
    status, body = prom.query(
        'agent_operation_name:otel_agents_operation_errors:ratio_rate5m{operation="model"}'
    )
    assert status == 200 and body["data"]["result"]
    assert all(float(s["value"][1]) == 0.0 for s in body["data"]["result"])


def test_alertmanager_config_inhibits_warnings_of_a_down_receiver(tmp_path: Path) -> None:
    """With collector-config's alertmanager.yml, a down receiver silences its own warnings, not others'."""
    binary = require_binary("prometheus-alertmanager", "apt-get install prometheus-alertmanager")
    log = (tmp_path / "am.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={ROOT / 'collector-config' / 'alertmanager' / 'alertmanager.yml'}",
            f"--storage.path={tmp_path / 'data'}",
            "--web.listen-address=127.0.0.1:0",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        port = wait_until(lambda: listening_ports(proc.pid), timeout=20, what="alertmanager")[0]
        url = f"http://127.0.0.1:{port}/api/v2/alerts"
        alerts = [
            {
                "labels": {
                    "alertname": "OtelAgentsReceiverDown",
                    "severity": "critical",
                    "instance": "r1:4319",
                }
            },
            {
                "labels": {
                    "alertname": "OtelAgentsForwarderBacklog",
                    "severity": "warning",
                    "instance": "r1:4319",
                    "destination": "otlp/jaeger",
                }
            },
            {
                "labels": {
                    "alertname": "OtelAgentsForwarderBacklog",
                    "severity": "warning",
                    "instance": "r2:4319",
                    "destination": "otlp/jaeger",
                }
            },
        ]
        req = urllib.request.Request(
            url, data=json.dumps(alerts).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200

        def states() -> dict[str, str]:
            status, body = http_get(url)
            if status != 200:
                return {}
            got = {
                a["labels"]["instance"] + "/" + a["labels"]["alertname"]: a["status"]["state"]
                for a in json.loads(body)
            }
            return got if len(got) == 3 and "unprocessed" not in got.values() else {}

        got = wait_until(states, timeout=10, what="alerts processed")
        assert got == {
            "r1:4319/OtelAgentsReceiverDown": "active",
            "r1:4319/OtelAgentsForwarderBacklog": "suppressed",
            "r2:4319/OtelAgentsForwarderBacklog": "active",
        }
    finally:
        stop_process(proc)
        log.close()
