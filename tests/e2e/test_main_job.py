# SPDX-License-Identifier: Apache-2.0
"""The main job: ``otel-agents demo`` with no endpoint, as the README runs it.

One real run (embedded receiver, default runs and faults, about half a minute) whose printed
report must name the critical-path bottleneck, the token-spike anomaly, a fired alert and the
cost per agent — and, with ``--forward``, whose spans must all reach the user's backend (an
OTLP sink standing in for Jaeger/Tempo).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_agents import _demo_faults as faults
from otel_agents.testing import OtlpSink

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _command() -> list[str]:
    # the console script the README's ./scripts/demo execs; the module when not installed
    script = Path(sys.executable).with_name("otel-agents")
    if script.exists():
        return [str(script), "demo"]
    return [sys.executable, "-m", "otel_agents._cli", "demo"]


def _section(report: str, title: str) -> str:
    """The lines under a report heading, up to the next blank line."""
    match = re.search(rf"^{re.escape(title)}.*?\n(?:-+\n)?(.*?)(?:\n\n|\Z)", report, re.M | re.S)
    assert match is not None, f"no {title!r} section in:\n{report}"
    return match.group(1)


@pytest.fixture(scope="module")
def backend() -> Iterator[OtlpSink]:
    with OtlpSink(http=False) as sink:
        yield sink


@pytest.fixture(scope="module")
def main_job(backend: OtlpSink) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    proc = subprocess.run(
        [*_command(), "--forward", f"grpc://127.0.0.1:{backend.grpc_port}"],
        capture_output=True,
        text=True,
        timeout=150,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def test_report_is_complete(main_job: str) -> None:
    """The analysis found everything the default faults should cause before the report was printed."""
    assert "had not found everything expected" not in main_job, main_job
    assert "not available in this build" not in main_job, main_job
    for fault in faults.DEFAULT_MAIN_JOB_FAULTS:
        assert fault in main_job.splitlines()[1]  # the banner lists the injected faults


def test_names_the_critical_path_bottleneck(main_job: str) -> None:
    """The top critical-path item is the slow tool, under the researcher agent."""
    top = _section(main_job, "Critical-path bottlenecks").splitlines()[0]
    assert f"`{faults.SLOW_TOOL_NAME}`" in top and "`researcher`" in top, top


def test_finds_the_token_spike(main_job: str) -> None:
    """An anomaly names the token spike of the researcher on its model."""
    anomalies = _section(main_job, "Anomalies and agent findings")
    spike = [line for line in anomalies.splitlines() if "token" in line.lower()]
    assert any(
        faults.TOKEN_SPIKE_AGENT in line and faults.TOKEN_SPIKE_MODEL in line for line in spike
    ), anomalies


def test_fires_an_alert_for_the_error_burst(main_job: str) -> None:
    """At least one alert fired, one of them on the failing tool."""
    match = re.search(r"^Alerts: (\d+) fired", main_job, re.M)
    assert match is not None and int(match.group(1)) >= 1, main_job
    alerts = _section(main_job, "Alerts:")
    assert any(
        line.split()[0] == "firing" and f"tool={faults.ERROR_BURST_TOOL}" in line
        for line in alerts.splitlines()[1:]
    ), alerts


def test_rolls_up_cost_per_agent(main_job: str) -> None:
    """Both agents have a positive cost under the cost roll-up."""
    costs = _section(main_job, "Cost per agent")
    for agent in ("planner", "researcher"):
        line = next(line for line in costs.splitlines() if line.split()[:1] == [agent])
        amount = re.search(r"\$([0-9.]+)", line)
        assert amount is not None and float(amount.group(1)) > 0, line


def test_says_where_telemetry_went_and_forwards_all_of_it(main_job: str, backend: OtlpSink) -> None:
    """The spans both processes exported reached the --forward destination, all of them."""
    match = re.search(
        r"demo-planner \(pid \d+\): (\d+), demo-researcher \(pid \d+\): (\d+)", main_job
    )
    assert match is not None, main_job
    exported = int(match.group(1)) + int(match.group(2))
    assert "(the embedded receiver)" in main_job
    assert f"Forwarded to grpc://127.0.0.1:{backend.grpc_port}: {exported} spans sent" in main_job
    spans = backend.wait_for_spans(exported, timeout=10)
    assert len({s.span_id for s in spans}) == exported
    assert len(backend.traces()) == 30
    assert re.search(r"Admin page: http://127\.0\.0\.1:\d+/", main_job)
