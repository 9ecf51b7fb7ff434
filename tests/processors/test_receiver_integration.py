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


def _config(tmp_path: Path, **overrides: Any) -> Any:
    """Receiver config on ephemeral loopback ports with a 1-s decision wait, plus ``overrides``."""
    return receiver_mod.load_config(
        None,
        overrides={
            "receivers.otlp.protocols.grpc.endpoint": "127.0.0.1:0",
            "receivers.otlp.protocols.http.endpoint": "127.0.0.1:0",
            "admin.endpoint": "127.0.0.1:0",
            "storage.data_dir": str(tmp_path),
            "processors.agent_analysis.assembly.decision_wait": "1s",
            **overrides,
        },
    )


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Any]:
    """A receiver on ephemeral loopback ports with fast analysis timers."""
    cfg = _config(tmp_path, **{"processors.agent_analysis.bottleneck.report_interval": "1s"})
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


def test_receiver_analyses_a_consistent_sample_at_a_fixed_fraction(tmp_path: Path) -> None:
    """With ``analysis.sampling: 0.25`` the receiver completes exactly the traces the OTel
    threshold rule keeps, counts the others as unsampled, and says so on /metrics and the API."""
    from otel_agents.processors._sampling import probability_to_threshold

    cfg = _config(tmp_path, **{"analysis.sampling": 0.25})
    rec = receiver_mod.Receiver(cfg)
    rec.start()
    try:
        gen = TraceGen(62)
        now_ns = time.time_ns()
        spans = [s for i in range(40) for s in gen.trace(now_ns - (3000 + i) * MS)]
        t = probability_to_threshold(0.25)
        tids = {g.span.trace_id for g in spans}
        kept = {tid for tid in tids if int.from_bytes(tid[-7:], "big") >= t}
        unsampled = sum(1 for g in spans if g.span.trace_id not in kept)
        req = urllib.request.Request(
            rec.http_endpoint + "/v1/traces",
            data=request(spans).SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200
        want = f"otel_agents_traces_completed_total {float(len(kept))}"
        deadline = time.monotonic() + 15.0
        metrics = ""
        while time.monotonic() < deadline and want not in metrics:
            time.sleep(0.2)
            metrics = _get(rec.admin_url + "/metrics").decode()
        assert want in metrics
        assert f"otel_agents_analysis_unsampled_spans_total {float(unsampled)}" in metrics
        assert "otel_agents_analysis_sampled_fraction 0.25" in metrics
        agents = _get(rec.admin_url + "/api/v1/agents")
        assert agents["sampling"]["analysed_fraction"] == 0.25
        assert agents["sampling"]["estimated"] is True
    finally:
        rec.stop()
