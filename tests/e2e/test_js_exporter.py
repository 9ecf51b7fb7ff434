# SPDX-License-Identifier: Apache-2.0
"""A JavaScript agent traced with the official OpenTelemetry JS SDK and its OTLP/HTTP protobuf
exporter from npm (tests/e2e/js) sends to the receiver, which analyses the traces (tokens,
cost, tool errors, agent graph) and forwards them unchanged to an OTLP destination.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import RunningReceiver, http_get, require, run_receiver, wait_until

pytestmark = pytest.mark.e2e

JS_DIR = Path(__file__).parent / "js"
TRACES = 4


def metric_samples(admin_url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The receiver's /metrics as ``{(sample name, labels): value}``."""
    status, body = http_get(admin_url + "/metrics")
    assert status == 200
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


@pytest.fixture
def js_receiver(tmp_path: Path) -> Iterator[tuple[RunningReceiver, Any]]:
    """A receiver forwarding to an in-process OTLP sink, with a short decision wait."""
    from otel_agents.testing import OtlpSink

    with OtlpSink() as sink:
        overrides = {
            "exporters": {
                "otlp/sink": {
                    "endpoint": sink.grpc_endpoint.replace("http://", "grpc://"),
                    "protocol": "grpc",
                }
            },
            "processors.agent_analysis.assembly.decision_wait": "1s",
        }
        with run_receiver(tmp_path / "receiver", **overrides) as rx:
            yield rx, sink


def test_js_sdk_traces_are_analysed_and_forwarded(js_receiver: tuple[RunningReceiver, Any]) -> None:
    """Spans from @opentelemetry/exporter-trace-otlp-proto (gzip) are priced, counted and forwarded intact."""
    node = shutil.which("node")
    require(node, "node not installed (apt-get install nodejs)")
    require(
        (JS_DIR / "node_modules" / "@opentelemetry" / "exporter-trace-otlp-proto").is_dir(),
        "tests/e2e/js/node_modules missing (scripts/e2e-setup runs npm install there)",
    )
    rx, sink = js_receiver
    proc = subprocess.run(
        [str(node), "send_spans.mjs"],
        cwd=JS_DIR,
        env={**os.environ, "OTLP_TRACES_URL": rx.http_url + "/v1/traces", "TRACES": str(TRACES)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sent = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sent["spans"] == 3 * TRACES and sent["failed"] == 0

    # Forwarded: every span reaches the destination, with the JS SDK's resource.
    spans = sink.wait_for_spans(3 * TRACES, timeout=20.0)
    assert {s.trace_id for s in spans} == set(sent["trace_ids"])
    assert {s.service_name for s in spans} == {"js-agent"}
    resource = sink.requests("traces")[0].request.resource_spans[0].resource
    attrs = {kv.key: kv.value.string_value for kv in resource.attributes}
    assert attrs["telemetry.sdk.language"] == "nodejs"
    assert attrs["telemetry.sdk.name"] == "opentelemetry"
    scopes = {
        ss.scope.name for ss in sink.requests("traces")[0].request.resource_spans[0].scope_spans
    }
    assert scopes == {"otel-agents-e2e-js"}

    # Analysed: tokens, receiver-side pricing, tool errors per agent, the agent graph.
    def analysed() -> dict[Any, float]:
        m = metric_samples(rx.admin_url)
        key = (
            "otel_agents_tokens_total",
            frozenset({"agent": "js-planner", "model": "gpt-4o", "token_type": "input"}.items()),
        )
        return m if m.get(key) == 1200 * TRACES else {}

    m = wait_until(analysed, timeout=20, what="the JS agent's tokens in /metrics")
    labels = {"agent": "js-planner", "model": "gpt-4o", "token_type": "output"}
    assert m[("otel_agents_tokens_total", frozenset(labels.items()))] == 300 * TRACES
    cost = m[
        (
            "otel_agents_cost_usd_total",
            frozenset({"agent": "js-planner", "model": "gpt-4o"}.items()),
        )
    ]
    assert cost > 0  # priced by the receiver: the JS agent sent no cost attributes
    errors = {"agent": "js-planner", "operation": "tool", "name": "web_search", "status": "error"}
    oks = {**errors, "status": "ok"}
    assert m[("otel_agents_operation_calls_total", frozenset(errors.items()))] == TRACES // 2
    assert m[("otel_agents_operation_calls_total", frozenset(oks.items()))] == TRACES - TRACES // 2

    def agents_view() -> dict[str, Any]:
        # Cost roll-ups and the graph are per completed trace (after the decision wait).
        status, body = http_get(rx.admin_url + "/api/v1/agents")
        assert status == 200
        view: dict[str, Any] = json.loads(body)
        return view if "js-planner" in {a["agent"] for a in view["cost_by_agent"]} else {}

    agents = wait_until(agents_view, timeout=20, what="js-planner in /api/v1/agents")
    (planner,) = [a for a in agents["cost_by_agent"] if a["agent"] == "js-planner"]
    assert planner["cost_usd"] == pytest.approx(cost)
    edges = {(e["client"], e["server"], e["connection_type"]) for e in agents["graph"]["edges"]}
    assert ("js-planner", "web_search", "tool") in edges
