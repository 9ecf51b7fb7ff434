# SPDX-License-Identifier: Apache-2.0
"""The a2a-sdk client and server in two processes, traced with zero code, through our receiver.

Both sides of ``_clients_a2a_app.py`` (a plain a2a-sdk app without a line of OpenTelemetry) run
under ``opentelemetry-instrument`` with ``OTEL_EXPORTER_OTLP_ENDPOINT`` at a real
``otel_agents.receiver.Receiver``; the A2A spans and the W3C context carried in the message
metadata come only from our ``a2a_sdk`` instrumentor entry point.  The receiver forwards to a
recording OTLP sink and analyses the trace.

Asserted: the forwarded spans form one trace across both processes (the server's SendMessage
span is the child of the client's), and the receiver's agent graph and
``traces_service_graph_request_total{connection_type="a2a"}`` show the A2A hop.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from otel_agents import semconv as sc
from tests.e2e.conftest import (
    RunningReceiver,
    Samples,
    http_get,
    require,
    run_forwarding_receiver,
    sample_sum,
    wait_for_sample,
    wait_until,
)

pytestmark = pytest.mark.e2e

APP = Path(__file__).with_name("_clients_a2a_app.py")
CLIENT_SERVICE, SERVER_SERVICE = "a2a-zero-code-client", "a2a-zero-code-server"
SERVER_AGENT = "researcher"  # the server's Agent Card name
CLIENT_AGENT = "planner"  # declared by the client's environment (OTEL_AGENTS_AGENT_NAME)
CONTEXT_ID = "conv-zero-code"  # the client app's A2A contextId
SERVER_KIND, CLIENT_KIND = 2, 3  # OTLP Span.SpanKind values


def _opentelemetry_instrument() -> str:
    """The ``opentelemetry-instrument`` launcher of this interpreter's environment."""
    launcher = Path(sys.executable).with_name("opentelemetry-instrument")
    require(launcher.is_file(), "opentelemetry-instrument not installed (opentelemetry-distro)")
    for module in ("a2a.client", "starlette", "uvicorn"):
        try:
            __import__(module)
        except ImportError as exc:
            require(False, f"a2a-sdk[http-server] / uvicorn not installed ({exc})")
    return str(launcher)


def _env(service: str, grpc_endpoint: str, **extra: str) -> dict[str, str]:
    """A zero-code environment: only standard OTel variables, none inherited from ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PYTHONPATH"))}
    env.update(
        OTEL_SERVICE_NAME=service,
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://{grpc_endpoint}",
        OTEL_BSP_SCHEDULE_DELAY="100",
        # the A2A instrumentor only: the app makes no LLM calls anyway
        OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="openai",
        OTEL_EXPERIMENTAL_RESOURCE_DETECTORS="otel_agents",
        **extra,
    )
    return env


@dataclass
class Run:
    """The two processes' run against the receiver."""

    rx: RunningReceiver
    sink: Any  # otel_agents.testing.OtlpSink
    result: dict[str, str]  # what the client app printed
    server_log: str


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """Receiver (forwarding to a sink), the server app, then the client app; yields once the
    receiver completed the trace."""
    launcher = _opentelemetry_instrument()
    work = tmp_path_factory.mktemp("a2a")
    with run_forwarding_receiver(work / "receiver") as (rx, sink):
        server_log = work / "server.log"
        with server_log.open("w") as log:
            server = subprocess.Popen(
                [launcher, sys.executable, str(APP), "server"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=_env(SERVER_SERVICE, rx.grpc_endpoint),
            )
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            assert line.strip().isdigit(), server_log.read_text()[-3000:]
            out = subprocess.run(
                [
                    launcher,
                    sys.executable,
                    str(APP),
                    "client",
                    f"http://127.0.0.1:{line.strip()}/",
                ],
                capture_output=True,
                text=True,
                timeout=60,
                env=_env(CLIENT_SERVICE, rx.grpc_endpoint, OTEL_AGENTS_AGENT_NAME=CLIENT_AGENT),
                check=False,
            )
            assert out.returncode == 0, out.stderr[-3000:]
            result = json.loads(out.stdout.strip().splitlines()[-1])
        finally:
            assert server.stdin is not None
            server.stdin.close()  # the app exits; the SDK flushes its spans at exit
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)
        wait_for_sample(
            rx.admin_url,
            "otel_agents_traces_completed_total",
            1,
            timeout=20,
            what="a trace completed by the receiver",
        )
        yield Run(rx, sink, result, server_log.read_text())


def _ours(run: Run) -> list[Any]:
    """Forwarded spans of the two app processes (a stray exporter elsewhere on the machine may
    reach a recycled ephemeral port; its spans are not ours)."""
    return [s for s in run.sink.spans() if s.service_name in (CLIENT_SERVICE, SERVER_SERVICE)]


def _a2a_span(spans: list[Any], method: str, kind: int) -> Any:
    """The one instrumentor span of ``method`` and ``kind``."""
    (span,) = [
        s
        for s in spans
        if s.kind == kind and s.attributes.get(sc.A2A_METHOD_NAME) == method and s.name == method
    ]
    return span


def _forwarded(run: Run) -> list[Any]:
    """Our spans once the A2A client and server spans of both calls were forwarded."""

    def complete() -> list[Any] | None:
        spans = _ours(run)
        a2a = [s for s in spans if s.attributes.get(sc.A2A_METHOD_NAME)]
        return spans if len(a2a) >= 4 else None

    spans: list[Any] = wait_until(complete, timeout=15, what="the A2A spans forwarded")
    return spans


def _analysed(run: Run) -> Samples:
    """/metrics once the receiver has counted both A2A calls on the agent graph (the send and
    the poll are two traces, completed one decision wait after their last span)."""
    return wait_for_sample(
        run.rx.admin_url,
        "traces_service_graph_request_total",
        2,
        connection_type="a2a",
        timeout=15,
        what="both A2A calls on the agent graph",
    )


def test_the_apps_ran_a_task_to_completion(run: Run) -> None:
    """The plain a2a-sdk client got its task completed by the server process."""
    assert run.result["state"] == run.result["polled_state"] == "TASK_STATE_COMPLETED"
    assert run.result["context_id"] == CONTEXT_ID


def test_one_trace_joins_both_processes(run: Run) -> None:
    """The forwarded spans of SendMessage form one trace across the two processes: the server
    span is the child of the client span, and every span of the trace has its parent in it."""
    spans = _forwarded(run)
    client = _a2a_span(spans, "SendMessage", CLIENT_KIND)
    server = _a2a_span(spans, "SendMessage", SERVER_KIND)
    assert (client.service_name, server.service_name) == (CLIENT_SERVICE, SERVER_SERVICE)
    assert client.parent_span_id == ""  # the app has no span of its own: the call is the root
    assert server.trace_id == client.trace_id
    assert server.parent_span_id == client.span_id

    trace = [s for s in spans if s.trace_id == client.trace_id]
    ids = {s.span_id for s in trace}
    assert all(s.parent_span_id in ids for s in trace if s is not client)
    assert {s.service_name for s in trace} == {CLIENT_SERVICE, SERVER_SERVICE}
    for span in (client, server):
        attrs = span.attributes
        assert attrs[sc.A2A_TASK_ID] == run.result["task_id"]
        assert attrs[sc.GEN_AI_CONVERSATION_ID] == CONTEXT_ID
        assert attrs[sc.A2A_TASK_STATE] == "TASK_STATE_COMPLETED"
    assert server.attributes[sc.GEN_AI_AGENT_NAME] == SERVER_AGENT
    assert client.attributes[sc.AGENT_A2A_PEER_AGENT] == SERVER_AGENT


def test_task_poll_is_joined_and_linked(run: Run) -> None:
    """GetTask, which carries no message, still joins client and server (trace context in the
    request headers), and links back to the SendMessage that created the task."""
    spans = _forwarded(run)
    send = _a2a_span(spans, "SendMessage", CLIENT_KIND)
    client = _a2a_span(spans, "GetTask", CLIENT_KIND)
    server = _a2a_span(spans, "GetTask", SERVER_KIND)
    assert (server.trace_id, server.parent_span_id) == (client.trace_id, client.span_id)
    assert [(link.trace_id.hex(), link.span_id.hex()) for link in client.span.links] == [
        (send.trace_id, send.span_id)
    ]


def test_receiver_analyses_the_a2a_hop(run: Run) -> None:
    """The receiver saw no broken A2A chain and counts the hop to the researcher as an ``a2a``
    edge, on /metrics and in the agent graph API."""
    _forwarded(run)
    samples = _analysed(run)
    assert sample_sum(samples, "otel_agents_orphan_spans_total") == 0
    a2a = [
        (labels, v)
        for labels, v in samples.get("traces_service_graph_request_total", [])
        if labels.get("connection_type") == "a2a"
    ]
    assert [(labels["server"], v) for labels, v in a2a] == [(SERVER_AGENT, 2.0)]  # send + poll
    assert (
        sample_sum(samples, "traces_service_graph_request_failed_total", connection_type="a2a") == 0
    )

    status, body = http_get(f"{run.rx.admin_url}/api/v1/agents")
    assert status == 200
    edges = [e for e in json.loads(body)["graph"]["edges"] if e["connection_type"] == "a2a"]
    assert [(e["server"], e["calls"], e["failed"]) for e in edges] == [(SERVER_AGENT, 2, 0)]
    assert 0 < edges[0]["mean_seconds"] < 10


def test_a2a_edge_names_the_calling_agent_declared_on_the_resource(run: Run) -> None:
    """The A2A edge's client is the client process's main agent, declared by environment."""
    spans = _forwarded(run)
    client = _a2a_span(spans, "SendMessage", CLIENT_KIND)
    assert client.resource.get(sc.GEN_AI_MAIN_AGENT_NAME) == CLIENT_AGENT
    samples = _analysed(run)
    edge = {"client": CLIENT_AGENT, "server": SERVER_AGENT, "connection_type": "a2a"}
    assert sample_sum(samples, "traces_service_graph_request_total", **edge) == 2
