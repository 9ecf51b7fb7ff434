# SPDX-License-Identifier: Apache-2.0
"""Reliability scorecard RC-15: the SDK extension never hurts the application.

Each scenario runs ``_rc_sdk_app`` (an agent app configured with ``otel_agents.configure()``)
in its own process against a real in-process OTLP sink or a destination that never answers.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from otel_agents.testing import OtlpSink
from tests.otel_agents.receiver._rc_fixtures import ROOT, record_figures

EXPORT_TIMEOUT_S = 2  # OTEL_EXPORTER_OTLP_TIMEOUT given to the app


@pytest.fixture
def sink() -> Iterator[OtlpSink]:
    """A real OTLP/gRPC sink on an ephemeral port."""
    with OtlpSink(http=False) as s:
        yield s


def _app(mode: str, endpoint: str) -> dict[str, Any]:
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_TIMEOUT": str(EXPORT_TIMEOUT_S),
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_METRIC_EXPORT_INTERVAL": "600000",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "tests.otel_agents.receiver._rc_sdk_app", mode, endpoint],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    return result


def test_rc15_injected_hook_failures_never_reach_the_app(sink: OtlpSink) -> None:
    """RC-15: pricing, normalization, the metrics processor and the resource detector all raise;
    the app sees no exception and every span is still exported."""
    out = _app("faults", sink.grpc_endpoint)
    assert out["reached_app"] == 0
    assert out["detector_raised"] is False
    assert out["flushed"] is True
    spans = sink.wait_for_spans(out["spans"], timeout=15)
    assert len(spans) == out["spans"]
    record_figures(
        "RC-15",
        "test_rc15_injected_hook_failures_never_reach_the_app",
        injected_faults=4,
        spans=len(spans),
        reached_app=out["reached_app"],
    )


def _against_black_hole() -> dict[str, Any]:
    with socket.socket() as black_hole:
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(1)  # never accepted: the gRPC handshake hangs
        return _app("down", f"http://127.0.0.1:{black_hole.getsockname()[1]}")


def test_rc15_exporter_down_never_blocks_the_app_and_shutdown_is_bounded() -> None:
    """RC-15: against a destination that accepts TCP but never answers, agent runs stay fast and
    shutdown returns within one export timeout per queued batch.

    force_flush(1000) gives up after 1 s, so the 900 spans it could not export (2 batches) are
    still queued at shutdown beside the 900 queued after it (2 more): 4 batches."""
    out = _against_black_hole()
    assert out["reached_app"] == 0
    assert out["run_p99_ms"] <= 20.0, out  # 3 spans; a blocked export would take seconds
    queued_batches = 4
    assert out["shutdown_s"] <= queued_batches * EXPORT_TIMEOUT_S + 1.0, out
    record_figures(
        "RC-15",
        "test_rc15_exporter_down_never_blocks_the_app_and_shutdown_is_bounded",
        run_p99_ms=round(out["run_p99_ms"], 2),
        run_max_ms=round(out["run_max_ms"], 2),
        flush_s=round(out["flush_s"], 2),
        shutdown_s=round(out["shutdown_s"], 2),
    )


def test_rc15_force_flush_returns_within_its_timeout_when_the_exporter_hangs() -> None:
    """RC-15: force_flush(1000) returns within ~1 s and reports False when nothing got out."""
    out = _against_black_hole()
    assert out["flush_s"] <= 1.0 + 0.5, out
    assert out["flushed"] is False, out


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_rc15_forked_child_exports_its_spans(sink: OtlpSink) -> None:
    """RC-15: after fork() the child's spans are exported (the SDK and our queues re-initialise)."""
    out = _app("fork", sink.grpc_endpoint)
    assert out["child_exit"] == 0 and out["reached_app"] == 0
    spans = sink.wait_for_spans(5 * 3 + 10 * 3, timeout=15)
    agents = {s.attributes.get("gen_ai.agent.name") for s in spans}
    assert {"parent-agent", "child-agent"} <= agents
    child = [s for s in spans if s.attributes.get("gen_ai.agent.name") == "child-agent"]
    assert len(child) == 10 * 3
    record_figures("RC-15", "test_rc15_forked_child_exports_its_spans", child_spans=len(child))
