# SPDX-License-Identifier: Apache-2.0
"""Acceptance tests of ``otel-agents demo`` against an explicit endpoint (an in-process sink).

The demo runs as the user runs it — ``python -m otel_agents._cli demo`` in a child process,
which starts the researcher as a grandchild process — and exports real OTLP to
:class:`otel_agents.testing.OtlpSink`.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from otel_agents import semconv as sc
from otel_agents._demo_a2a import ResearcherProcess
from otel_agents.testing import OtlpSink, ReceivedSpan

# 500x compression: the demo's ~40 simulated seconds per run take ~0.1 s
TIME_SCALE = "0.002"
SERVER, CLIENT = 2, 3  # OTLP SpanKind values
PLANNER_SERVICE, RESEARCHER_SERVICE = "demo-planner", "demo-researcher"
_RUN_LINE = re.compile(r"run\s+(\d+)/\d+\s+trace ([0-9a-f]{32})")


@dataclasses.dataclass
class DemoRun:
    """What one demo child process printed and what the sink received from it."""

    stdout: str
    spans: list[ReceivedSpan]
    trace_ids: list[str]  # in run order
    metric_names: set[str]
    log_records: list[Any]  # opentelemetry.proto.logs.v1.LogRecord

    def trace(self, run: int) -> list[ReceivedSpan]:
        """Spans of the 0-based run ``run``."""
        wanted = self.trace_ids[run]
        return [s for s in self.spans if s.trace_id == wanted]


def env_without_otel() -> dict[str, str]:
    """This process's environment minus every ``OTEL_*`` variable, so only the flags count."""
    return {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}


def cli_demo(
    *args: str, timeout: float = 30.0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m otel_agents._cli demo ARGS`` in a child process, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "otel_agents._cli", "demo", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def run_demo(
    sink: OtlpSink,
    *args: str,
    protocol: str = "grpc",
    runs: int = 2,
    timeout: float = 60.0,
    time_scale: str = TIME_SCALE,
) -> DemoRun:
    """Run ``otel-agents demo`` in a child process against ``sink`` and wait for its spans."""
    endpoint = sink.grpc_endpoint if protocol == "grpc" else sink.http_endpoint
    sink.clear()
    proc = cli_demo(
        "--endpoint",
        endpoint,
        "--protocol",
        protocol,
        "--runs",
        str(runs),
        "--time-scale",
        time_scale,
        *args,
        timeout=timeout,
        env=env_without_otel(),
    )
    assert proc.returncode == 0, proc.stderr
    trace_ids = [m.group(2) for m in _RUN_LINE.finditer(proc.stdout)]
    assert len(trace_ids) == runs, proc.stdout
    counts = re.search(r"\(pid \d+\): (\d+), .*\(pid \d+\): (\d+)", proc.stdout)
    assert counts is not None, proc.stdout
    expected = int(counts.group(1)) + int(counts.group(2))
    # both processes flushed before exiting: everything they counted as acknowledged is here
    spans = sink.wait_for_spans(expected, timeout=10)
    assert len(spans) == expected
    return DemoRun(proc.stdout, spans, trace_ids, sink.metric_names(), sink.log_records())


@pytest.fixture(scope="module")
def sink() -> Iterator[OtlpSink]:
    with OtlpSink() as s:
        yield s


@pytest.fixture(scope="module")
def grpc_run(sink: OtlpSink) -> DemoRun:
    return run_demo(sink, "--seed", "11", protocol="grpc", runs=3)


@pytest.fixture(scope="module")
def http_run(sink: OtlpSink) -> DemoRun:
    return run_demo(sink, "--seed", "11", protocol="http/protobuf", runs=3)


def signature(spans: Sequence[ReceivedSpan]) -> collections.Counter[str]:
    """Everything a seed determines: names, kinds, statuses, attributes, events, parentage.

    Identifiers the SDK draws at random (trace/span ids), timings and the resource (pids) are
    left out.
    """
    by_id = {s.span_id: s for s in spans}
    out: collections.Counter[str] = collections.Counter()
    for s in spans:
        parent = by_id.get(s.parent_span_id)
        out[
            json.dumps(
                [
                    s.service_name,
                    s.name,
                    s.kind,
                    s.status_code,
                    sorted(s.attributes.items()),
                    [[n, sorted(a.items())] for n, a in s.events if n != "exception"],
                    parent.name if parent else None,
                ],
                default=str,
            )
        ] += 1
    return out


class TestDemoTelemetry:
    """Acceptance (a): what one demo run puts on the wire."""

    def test_operations(self, grpc_run: DemoRun) -> None:
        """Agent, tool and chat spans are there, named as the GenAI conventions say."""
        ops = collections.Counter(
            s.attributes.get(sc.GEN_AI_OPERATION_NAME) for s in grpc_run.spans
        )
        assert {sc.OP_INVOKE_AGENT, sc.OP_EXECUTE_TOOL, sc.OP_CHAT} <= set(ops)
        names = {s.name for s in grpc_run.spans}
        assert {"invoke_agent planner", "invoke_agent researcher"} <= names
        assert {
            "execute_tool web_search",
            "execute_tool fetch_page",
            "execute_tool summarize",
        } <= names
        assert {"chat gpt-4o", "chat gpt-4o-mini", "chat claude-sonnet-4-5"} <= names
        for span in grpc_run.spans:
            if span.attributes.get(sc.GEN_AI_OPERATION_NAME) == sc.OP_CHAT:
                assert span.kind == CLIENT
                assert span.attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] > 0
                assert span.attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] > 0
                assert span.attributes[sc.GEN_AI_PROVIDER_NAME] in {"openai", "anthropic"}

    def test_cost_on_inference_spans_only(self, grpc_run: DemoRun) -> None:
        """Every inference span has a positive cost with its currency, and no other span has one."""
        for span in grpc_run.spans:
            attrs = span.attributes
            if attrs.get(sc.GEN_AI_OPERATION_NAME) in sc.INFERENCE_OPERATIONS:
                assert attrs[sc.GEN_AI_USAGE_COST_AMOUNT] > 0, span.name
                assert attrs[sc.GEN_AI_USAGE_COST_CURRENCY] == "USD"
                assert sc.AGENT_COST_UNPRICED not in attrs
            else:
                assert sc.GEN_AI_USAGE_COST_AMOUNT not in attrs, span.name
                assert sc.GEN_AI_USAGE_COST_CURRENCY not in attrs, span.name

    def test_decisions(self, grpc_run: DemoRun) -> None:
        """Both agents record agent.decision events with type, choice, options and confidence."""
        decisions: dict[str, set[str]] = collections.defaultdict(set)
        for span in grpc_run.spans:
            for name, attrs in span.events:
                if name == sc.EVENT_AGENT_DECISION:
                    assert attrs[sc.AGENT_DECISION_CHOSEN] in attrs[sc.AGENT_DECISION_OPTIONS]
                    assert 0 <= attrs[sc.AGENT_DECISION_CONFIDENCE] <= 1
                    assert sc.AGENT_DECISION_REASONING not in attrs  # content is opt-in
                    decisions[str(span.service_name)].add(attrs[sc.AGENT_DECISION_TYPE])
        assert decisions[PLANNER_SERVICE] >= {"route", "review"}
        assert decisions[RESEARCHER_SERVICE] >= {"tool_choice", "stop"}

    def test_one_trace_per_run_across_two_processes(self, grpc_run: DemoRun) -> None:
        """Each run is one complete trace holding both processes' spans, joined by A2A CLIENT/SERVER."""
        assert set(grpc_run.trace_ids) == {s.trace_id for s in grpc_run.spans}
        for run in range(len(grpc_run.trace_ids)):
            spans = grpc_run.trace(run)
            by_id = {s.span_id: s for s in spans}
            roots = [s for s in spans if not s.parent_span_id]
            assert [r.name for r in roots] == ["invoke_workflow research_report"]
            for span in spans:  # every parent present
                assert not span.parent_span_id or span.parent_span_id in by_id, span.name
            pids = {s.service_name: s.resource["process.pid"] for s in spans}
            assert set(pids) == {PLANNER_SERVICE, RESEARCHER_SERVICE}
            assert pids[PLANNER_SERVICE] != pids[RESEARCHER_SERVICE]
            main_agents = {s.service_name: s.resource[sc.GEN_AI_MAIN_AGENT_NAME] for s in spans}
            assert main_agents == {PLANNER_SERVICE: "planner", RESEARCHER_SERVICE: "researcher"}
            (server,) = [s for s in spans if s.name == "SendMessage" and s.kind == SERVER]
            client = by_id[server.parent_span_id]
            assert (client.name, client.kind, client.service_name) == (
                "SendMessage",
                CLIENT,
                PLANNER_SERVICE,
            )
            assert server.service_name == RESEARCHER_SERVICE
            assert server.attributes[sc.A2A_METHOD_NAME] == "SendMessage"
            assert server.attributes[sc.A2A_TASK_STATE] == "TASK_STATE_COMPLETED"
            assert client.attributes[sc.A2A_MESSAGE_ID] == server.attributes[sc.A2A_MESSAGE_ID]
            assert (
                client.attributes[sc.GEN_AI_CONVERSATION_ID]
                == server.attributes[sc.GEN_AI_CONVERSATION_ID]
            )
            researcher = next(s for s in spans if s.name == "invoke_agent researcher")
            assert researcher.parent_span_id == server.span_id

    def test_metrics(self, grpc_run: DemoRun) -> None:
        """Both processes export the GenAI and agent metrics derived from their spans, and process metrics."""
        assert {
            sc.METRIC_GEN_AI_CLIENT_TOKEN_USAGE,
            sc.METRIC_GEN_AI_CLIENT_OPERATION_DURATION,
            sc.METRIC_GEN_AI_INVOKE_AGENT_DURATION,
            sc.METRIC_GEN_AI_EXECUTE_TOOL_DURATION,
            sc.METRIC_AGENT_COST,
            sc.METRIC_AGENT_DECISIONS,
        } <= grpc_run.metric_names
        assert "process.cpu.time" in grpc_run.metric_names

    def test_agent_events_are_log_records_in_the_run_traces(self, grpc_run: DemoRun) -> None:
        """A2A and task events go out as OTLP log records correlated with each run's trace."""
        by_trace: dict[str, set[str]] = collections.defaultdict(set)
        for record in grpc_run.log_records:
            by_trace[record.trace_id.hex()].add(record.event_name)
        expected = {
            sc.AGENT_EVENT_A2A_SENT,
            sc.AGENT_EVENT_A2A_RECEIVED,
            sc.AGENT_EVENT_TASK_START,
            sc.AGENT_EVENT_TASK_COMPLETE,
        }
        assert {t: expected for t in grpc_run.trace_ids} == dict(by_trace)

    def test_prints_where_telemetry_went(self, grpc_run: DemoRun, sink: OtlpSink) -> None:
        """The last paragraph names the protocol, the endpoint and both processes."""
        assert f"exported over OTLP/grpc to {sink.grpc_endpoint}" in grpc_run.stdout
        assert PLANNER_SERVICE in grpc_run.stdout and RESEARCHER_SERVICE in grpc_run.stdout


class TestProtocolsAndDeterminism:
    """Acceptance (c) and (d): both protocols deliver; a seed fixes the telemetry."""

    def test_http_protobuf_delivers_the_same_telemetry_as_grpc(
        self, grpc_run: DemoRun, http_run: DemoRun
    ) -> None:
        """Same seed over http/protobuf and grpc: identical span names, attributes, events and counts."""
        assert {s.transport for s in http_run.spans} == {"http"}
        assert {s.transport for s in grpc_run.spans} == {"grpc"}
        assert signature(http_run.spans) == signature(grpc_run.spans)

    def test_another_seed_changes_the_telemetry(self, sink: OtlpSink, grpc_run: DemoRun) -> None:
        """A different seed gives different token counts and identifiers."""
        other = run_demo(sink, "--seed", "12", runs=3)
        assert signature(other.spans) != signature(grpc_run.spans)
        assert len(other.spans) == len(grpc_run.spans)  # same shape without faults

    @pytest.mark.skipif(
        shutil.which("unshare") is None, reason="needs unshare(1) for a network namespace"
    )
    def test_runs_with_loopback_only(self, tmp_path: Any) -> None:
        """In a network namespace with nothing but loopback the demo still delivers every run."""
        probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True, check=False)
        if probe.returncode != 0:
            pytest.skip(f"user network namespaces unavailable: {probe.stderr.decode().strip()}")
        script = tmp_path / "isolated.py"
        script.write_text(
            textwrap.dedent(
                f"""
                import json, subprocess, sys
                from otel_agents.testing import OtlpSink
                with OtlpSink(http=False) as sink:
                    proc = subprocess.run(
                        [sys.executable, "-m", "otel_agents._cli", "demo", "--endpoint",
                         sink.grpc_endpoint, "--runs", "1", "--time-scale", "{TIME_SCALE}"],
                        capture_output=True, text=True, timeout=60)
                    traces = len(sink.traces()) if proc.returncode == 0 else 0
                    print(json.dumps({{"rc": proc.returncode, "traces": traces, "err": proc.stderr[-2000:]}}))
                """
            )
        )
        ip = shutil.which("ip") or "/usr/sbin/ip"
        proc = subprocess.run(
            [
                "unshare",
                "-rn",
                "sh",
                "-c",
                f'{ip} link set lo up && exec "$0" "$1"',
                sys.executable,
                str(script),
            ],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        assert result["rc"] == 0, result["err"]
        assert result["traces"] == 1


class TestCommandLine:
    """Argument handling of ``otel-agents demo``."""

    def test_unknown_fault_is_a_usage_error(self) -> None:
        """An unknown --inject value exits 2 and lists the valid faults."""
        proc = cli_demo("--endpoint", "http://127.0.0.1:1", "--inject", "meteor")
        assert proc.returncode == 2
        assert "unknown fault 'meteor'" in proc.stderr and "tool-loop" in proc.stderr

    def test_endpoint_must_be_a_url(self) -> None:
        """An endpoint without http:// or https:// is a usage error (the scheme decides TLS)."""
        proc = cli_demo("--endpoint", "localhost:4317")
        assert proc.returncode == 2
        assert "expected a URL such as http://127.0.0.1:4317" in proc.stderr

    def test_forward_requires_the_embedded_receiver(self) -> None:
        """--forward with an explicit endpoint is refused (the demo exports only to its endpoint)."""
        proc = cli_demo("--endpoint", "http://127.0.0.1:1", "--forward", "grpc://127.0.0.1:2")
        assert proc.returncode == 2
        assert "--forward needs the embedded receiver" in proc.stderr

    def test_endpoint_and_protocol_from_environment(self, sink: OtlpSink) -> None:
        """OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_EXPORTER_OTLP_PROTOCOL are honoured without flags."""
        sink.clear()
        env = env_without_otel()
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink.http_endpoint
        env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf"
        proc = cli_demo("--runs", "1", "--time-scale", TIME_SCALE, timeout=60, env=env)
        assert proc.returncode == 0, proc.stderr
        assert f"OTLP/http/protobuf to {sink.http_endpoint}" in proc.stdout
        spans = sink.wait_for(lambda s: s.spans() if len(s.traces()) == 1 else [], timeout=10)
        assert {s.transport for s in spans} == {"http"}

    def test_unreachable_endpoint_is_reported_not_fatal(self) -> None:
        """With nothing listening, the demo still finishes, exits 0 and says how many spans were lost."""
        with socket.socket() as bound:  # bound, never listening: connections are refused
            bound.bind(("127.0.0.1", 0))
            port = bound.getsockname()[1]
            env = env_without_otel()
            env["OTEL_EXPORTER_OTLP_TIMEOUT"] = "0.3"  # seconds; bounds the exporters' retries
            proc = cli_demo(
                "--endpoint",
                f"http://127.0.0.1:{port}",
                "--protocol",
                "http/protobuf",
                "--runs",
                "1",
                "--time-scale",
                TIME_SCALE,
                timeout=60,
                env=env,
            )
        assert proc.returncode == 0, proc.stderr
        assert re.search(
            r"demo-planner \(pid \d+\): 0, demo-researcher \(pid \d+\): 0", proc.stdout
        )
        lost = re.search(r"warning: (\d+) spans could not be exported", proc.stdout)
        assert lost is not None and int(lost.group(1)) > 0, proc.stdout


class TestResearcherA2AServer:
    """The researcher process speaks A2A JSON-RPC and reports protocol errors as JSON-RPC errors."""

    @pytest.fixture(scope="class")
    def researcher(self, sink: OtlpSink) -> Iterator[ResearcherProcess]:
        proc = ResearcherProcess(
            endpoint=sink.grpc_endpoint, protocol="grpc", time_scale=float(TIME_SCALE)
        ).start()
        yield proc
        proc.stop()

    @staticmethod
    def _post(url: str, body: bytes) -> dict[str, Any]:
        request = urllib.request.Request(
            url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=10) as response:
            reply: dict[str, Any] = json.loads(response.read())
        return reply

    def test_agent_card(self, researcher: ResearcherProcess) -> None:
        """The Agent Card is served at the well-known path with the loopback URL."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(researcher.url + ".well-known/agent-card.json", timeout=10) as response:
            card = json.loads(response.read())
        assert card["name"] == "researcher"
        assert card["url"] == researcher.url
        assert card["skills"][0]["id"] == "research"

    @pytest.mark.parametrize(
        ("body", "code"),
        [
            (b"{not json", -32700),
            (b'{"jsonrpc": "2.0", "id": 1}', -32600),
            (b'{"jsonrpc": "2.0", "id": 1, "method": "message/stream", "params": {}}', -32601),
            (b'{"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {}}', -32602),
            (
                b'{"jsonrpc": "2.0", "id": 1, "method": "SendMessage", '
                b'"params": {"message": {"messageId": "m", "parts": []}}}',
                -32602,
            ),
        ],
    )
    def test_protocol_errors(self, researcher: ResearcherProcess, body: bytes, code: int) -> None:
        """Malformed JSON, requests, unknown methods and invalid params get their JSON-RPC codes."""
        reply = self._post(researcher.url, body)
        assert reply["jsonrpc"] == "2.0"
        assert reply["error"]["code"] == code

    def test_a_message_without_the_demo_metadata_is_a_failed_server_span(
        self, sink: OtlpSink
    ) -> None:
        """An A2A message the researcher cannot decode still gets a SERVER span, marked as an error."""
        sink.clear()
        researcher = ResearcherProcess(
            endpoint=sink.grpc_endpoint, protocol="grpc", time_scale=float(TIME_SCALE)
        ).start()
        body = {
            "jsonrpc": "2.0",
            "id": 7,
            "method": "SendMessage",
            "params": {
                "message": {"messageId": "m-x", "contextId": "c-x", "parts": [{"text": "q"}]}
            },
        }
        try:
            reply = self._post(researcher.url, json.dumps(body).encode())
        finally:
            researcher.stop()  # flushes the researcher's spans
        assert reply["error"]["code"] == -32602
        (server,) = sink.wait_for(
            lambda s: [x for x in s.spans() if x.attributes.get(sc.A2A_MESSAGE_ID) == "m-x"], 10
        )
        assert server.kind == SERVER and server.status_code == 2
        assert server.attributes[sc.ERROR_TYPE] == "-32602"
        assert server.attributes[sc.GEN_AI_CONVERSATION_ID] == "c-x"


class TestEmbeddedReceiver:
    """``otel-agents demo`` with no endpoint: the embedded receiver analyses the runs."""

    def test_serve_keeps_the_admin_page_up_until_interrupted(self) -> None:
        """With --serve the report is printed, the admin API answers, and Ctrl-C exits cleanly."""
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "otel_agents._cli",
                "demo",
                "--runs",
                "4",
                "--inject",
                "tool-loop",
                "--time-scale",
                TIME_SCALE,
                "--serve",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env_without_otel(),
        )
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")))  # type: ignore[union-attr]
        reader.start()
        try:
            deadline = time.monotonic() + 60
            while not any("serving until Ctrl-C" in line for line in lines):
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "".join(lines)
                time.sleep(0.1)
            output = "".join(lines)
            admin = re.search(r"Admin page: (http://127\.0\.0\.1:\d+)/", output)
            assert admin is not None, output
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(admin.group(1) + "/api/v1/agents", timeout=10) as response:
                agents = json.loads(response.read())
            assert {"planner", "researcher"} <= {row["agent"] for row in agents["cost_by_agent"]}
            assert "Tool loop" in output and "`fetch_page`" in output
            assert "had not found everything expected" not in output
        finally:
            proc.send_signal(signal.SIGINT)
            rc = proc.wait(30)
            reader.join(10)
        assert rc == 0, proc.stderr.read() if proc.stderr else ""
