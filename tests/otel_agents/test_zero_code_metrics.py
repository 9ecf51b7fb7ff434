# SPDX-License-Identifier: Apache-2.0
"""Zero-code: under ``opentelemetry-instrument`` the detector, the span-derived metrics and the
process metrics reach an OTLP sink from an app that contains no otel-agents code."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from otel_agents import semconv as sc
from otel_agents.testing import OtlpSink, attributes_to_dict

from ._sdkext_sink import arrived, metrics_with_resource

HERE = Path(__file__).parent
APP = HERE / "_sdkext_zero_code_app.py"
INSTRUMENT = Path(sys.executable).parent / "opentelemetry-instrument"

pytestmark = pytest.mark.skipif(not INSTRUMENT.exists(), reason="opentelemetry-instrument missing")


def _entry_point_dir(tmp_path: Path) -> Path | None:
    """A dist-info that declares our detector and instrumentor when the installed metadata
    predates them (an editable install is not re-run when pyproject entry points change)."""
    eps = metadata.entry_points()
    have = {
        "detector": bool(eps.select(group="opentelemetry_resource_detector", name="otel_agents")),
        "instrumentor": bool(eps.select(group="opentelemetry_instrumentor", name="a2a_sdk")),
    }
    if all(have.values()):
        return None
    dist = tmp_path / "eps" / "otel_agents_sdkext_eps-0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: otel-agents-sdkext-eps\nVersion: 0\n"
    )
    lines = []
    if not have["detector"]:
        lines += [
            "[opentelemetry_resource_detector]",
            "otel_agents = otel_agents._detector:AgentResourceDetector",
        ]
    if not have["instrumentor"]:
        lines += [
            "[opentelemetry_instrumentor]",
            "a2a_sdk = otel_agents._a2a_instrumentor:A2AInstrumentor",
        ]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return dist.parent


def _run(sink: OtlpSink, tmp_path: Path, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTEL_AGENTS_"))}
    env.update(
        OTEL_SERVICE_NAME="zero-code-app",
        OTEL_EXPERIMENTAL_RESOURCE_DETECTORS="otel_agents",
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_METRICS_EXPORTER="otlp",
        OTEL_LOGS_EXPORTER="none",
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
        OTEL_EXPORTER_OTLP_ENDPOINT=sink.grpc_endpoint,
        OTEL_EXPORTER_OTLP_INSECURE="true",
        OTEL_METRIC_EXPORT_INTERVAL="60000",  # the exit-time shutdown exports the final state
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    env.update(extra_env)
    ep_dir = _entry_point_dir(tmp_path)
    if ep_dir is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ep_dir), env.get("PYTHONPATH", "")) if p
        )
    return subprocess.run(
        [str(INSTRUMENT), sys.executable, str(APP)],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        cwd=str(tmp_path),
    )


def _ours(resource: Mapping[str, Any]) -> bool:
    # a stray exporter of another suite may hit a recycled ephemeral port: keep our app's data
    return resource.get("service.name") == "zero-code-app"


def _metrics(sink: OtlpSink) -> dict[str, Any]:
    return {m.name: m for res, m in metrics_with_resource(sink) if _ours(res)}


def test_zero_code_resource_and_metrics(tmp_path: Path) -> None:
    """The resource carries the detector's attributes; span-derived and process metrics arrive."""
    with OtlpSink(http=False) as sink:
        proc = _run(
            sink,
            tmp_path,
            OTEL_AGENTS_AGENT_NAME="planner",
            OTEL_AGENTS_AGENT_ID="agents/planner-1",
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert proc.stdout.strip().splitlines()[-1] == "ok"
        if importlib.util.find_spec("a2a") is not None:  # the instrumentor entry point loaded
            assert "a2a-instrumented=True" in proc.stdout.splitlines()
        assert arrived(
            sink, lambda: sc.METRIC_GEN_AI_CLIENT_TOKEN_USAGE in _metrics(sink), timeout=20
        ), proc.stderr[-4000:]
        assert arrived(sink, lambda: sum(_ours(s.resource) for s in sink.spans()) >= 3, 20)
        metrics = _metrics(sink)
        # only our app's data: a stray exporter may hit a recycled ephemeral port
        resources = [
            a
            for a in [dict(s.resource) for s in sink.spans()]
            + [res for res, _ in metrics_with_resource(sink)]
            if a.get("service.name") == "zero-code-app"
        ]
        assert resources
    for res in resources:
        assert res[sc.GEN_AI_MAIN_AGENT_NAME] == "planner"
        assert res[sc.GEN_AI_MAIN_AGENT_ID] == "agents/planner-1"
        assert res["service.name"] == "zero-code-app"
        assert isinstance(res["process.pid"], int)
    tokens = {
        attributes_to_dict(p.attributes)[sc.GEN_AI_TOKEN_TYPE]: p.sum
        for p in metrics[sc.METRIC_GEN_AI_CLIENT_TOKEN_USAGE].histogram.data_points
    }
    assert tokens == {"input": 1000, "output": 200}
    for name in (
        sc.METRIC_GEN_AI_CLIENT_OPERATION_DURATION,
        sc.METRIC_GEN_AI_INVOKE_AGENT_DURATION,
        sc.METRIC_GEN_AI_EXECUTE_TOOL_DURATION,
        sc.METRIC_PROCESS_MEMORY_USAGE,
        sc.METRIC_PROCESS_CPU_TIME,
        sc.METRIC_CPYTHON_GC_COLLECTIONS,
    ):
        assert name in metrics, sorted(metrics)
    # gpt-4o is in genai-prices: the enriching processor priced it before the metrics saw it
    (cost,) = metrics[sc.METRIC_AGENT_COST].sum.data_points
    assert cost.as_double > 0
    assert attributes_to_dict(cost.attributes)[sc.GEN_AI_AGENT_NAME] == "planner"


def test_zero_code_survives_broken_agent_card(tmp_path: Path) -> None:
    """A broken Agent Card file is logged by the detector; the app and the exports go on."""
    card = tmp_path / "card.json"
    card.write_text("{broken")
    with OtlpSink(http=False) as sink:
        proc = _run(sink, tmp_path, OTEL_AGENTS_AGENT_CARD=str(card))
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert proc.stdout.strip().splitlines()[-1] == "ok"
        assert arrived(sink, lambda: sum(_ours(s.resource) for s in sink.spans()) >= 3, 20)
        res = next(s.resource for s in sink.spans() if _ours(s.resource))
    assert sc.GEN_AI_MAIN_AGENT_NAME not in res
    assert res["process.pid"] > 0  # the rest of the detector still ran
    assert "otel-agents resource detector" in proc.stderr


def test_zero_code_survives_broken_psutil(tmp_path: Path) -> None:
    """With psutil failing to import, the detector and the process metrics degrade (logged) while
    the app, the span-derived metrics and the rest of the resource keep working."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "psutil.py").write_text('raise ImportError("psutil broken for this test")\n')
    with OtlpSink(http=False) as sink:
        proc = _run(
            sink,
            tmp_path,
            OTEL_AGENTS_AGENT_NAME="planner",
            PYTHONPATH=str(shadow),
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert proc.stdout.strip().splitlines()[-1] == "ok"
        assert arrived(
            sink, lambda: sc.METRIC_GEN_AI_CLIENT_TOKEN_USAGE in _metrics(sink), timeout=20
        ), proc.stderr[-4000:]
        metrics = _metrics(sink)
        res = next(s.resource for s in sink.spans() if _ours(s.resource))
    assert sc.METRIC_PROCESS_MEMORY_USAGE not in metrics
    assert sc.METRIC_GEN_AI_EXECUTE_TOOL_DURATION in metrics
    assert res[sc.GEN_AI_MAIN_AGENT_NAME] == "planner"
    assert res["process.pid"] > 0 and "process.parent_pid" not in res  # psutil facts skipped
    assert "process metrics unavailable" in proc.stderr
