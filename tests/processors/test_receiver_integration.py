# SPDX-License-Identifier: Apache-2.0
"""The analysis stage and sinks inside the real receiver, fed over OTLP/HTTP on loopback."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ._gen import MS, TraceGen, request

receiver_mod = pytest.importorskip("otel_agents.receiver")


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Any]:
    """A receiver on ephemeral loopback ports with fast analysis timers."""
    cfg = receiver_mod.load_config(
        None,
        overrides={
            "receivers.otlp.protocols.grpc.endpoint": "127.0.0.1:0",
            "receivers.otlp.protocols.http.endpoint": "127.0.0.1:0",
            "admin.endpoint": "127.0.0.1:0",
            "storage.data_dir": str(tmp_path),
            "processors.agent_analysis.assembly.decision_wait": "1s",
            "processors.agent_analysis.bottleneck.report_interval": "1s",
        },
    )
    rec = receiver_mod.Receiver(cfg)
    rec.start()
    try:
        yield rec
    finally:
        rec.stop()


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = resp.read()
        return json.loads(body) if resp.headers.get_content_type() == "application/json" else body


def test_findings_flow_from_otlp_to_api_store_and_metrics(receiver: Any) -> None:
    """Tool-loop and broken-A2A traces sent over OTLP/HTTP show up in /api/v1/findings,
    /api/v1/agents and /metrics within seconds."""
    gen = TraceGen(61)
    now_ns = time.time_ns()
    spans = gen.trace(now_ns - 3000 * MS, fault="tool-loop") + gen.trace(
        now_ns - 3000 * MS, fault="a2a-break"
    )
    req = urllib.request.Request(
        receiver.http_endpoint + "/v1/traces",
        data=request(spans).SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200
    kinds: set[str] = set()
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline and not {"tool_loop", "a2a_break"} <= kinds:
        time.sleep(0.2)
        found = _get(receiver.admin_url + "/api/v1/findings?kind=tool_loop,a2a_break")
        kinds = {f["kind"] for f in found["findings"]}
    assert {"tool_loop", "a2a_break"} <= kinds
    loop = _get(receiver.admin_url + "/api/v1/findings?kind=tool_loop")["findings"][0]
    assert loop["labels"] == {"agent": "researcher", "tool": "web_search"}
    agents = _get(receiver.admin_url + "/api/v1/agents")
    edges = {(e["client"], e["server"]) for e in agents["graph"]["edges"]}
    assert ("researcher", "web_search") in edges
    metrics = _get(receiver.admin_url + "/metrics").decode()
    assert 'otel_agents_findings_total{kind="tool_loop",severity="critical"}' in metrics
    assert "otel_agents_traces_completed_total 2.0" in metrics
