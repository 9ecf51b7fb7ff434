# SPDX-License-Identifier: Apache-2.0
"""The demo's A2A hop: the researcher agent as its own OS process, serving A2A JSON-RPC.

The researcher process (``python -m otel_agents._demo_a2a``) binds ``127.0.0.1`` on a port the
OS picks, prints one JSON line ``{"port": N}`` on stdout, serves ``SendMessage`` (A2A v1.0
JSON-RPC binding) and its Agent Card at ``/.well-known/agent-card.json`` until its stdin closes,
then flushes its own OTLP exporter and prints ``{"spans": N, "failed": M}`` (spans the
endpoint acknowledged, spans the exporter gave up on).

Trace context crosses the hop the otel-agents way: the planner's ``a2a_client_span`` writes W3C
``traceparent`` into the message's ``metadata``; the researcher's ``a2a_server_span`` reads it,
so both processes' spans form one trace. The demo's own run parameters (seed, run index,
faults) travel in the same map under the ``otel-agents.demo`` key.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import logging
import os
import random
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import IO, Any

from opentelemetry import trace

from otel_agents import AgentEvents
from otel_agents import _demo_faults as faults_mod
from otel_agents._a2a import a2a_client_span, a2a_server_span
from otel_agents._demo_agents import (
    PLANNER,
    RESEARCHER,
    RESEARCHER_DESCRIPTION,
    RESEARCHER_SERVICE,
    Pace,
    ResearchRequest,
    ResearchResult,
    RunSpec,
    Telemetry,
    deterministic_uuid,
    run_researcher,
)
from otel_agents._demo_faults import FaultSet

__all__ = ["RESEARCHER_CARD", "A2AResearcherClient", "ResearcherProcess", "loopback_opener", "main"]

_log = logging.getLogger(__name__)

METHOD = "SendMessage"
DEMO_METADATA_KEY = "otel-agents.demo"
# JSON-RPC 2.0 error codes (and the A2A-specific one for unsupported operations)
_PARSE_ERROR = -32700
_INVALID_REQUEST = -32600
_METHOD_NOT_FOUND = -32601
_INVALID_PARAMS = -32602
_INTERNAL_ERROR = -32603

RESEARCHER_CARD: dict[str, Any] = {
    "name": RESEARCHER,
    "description": RESEARCHER_DESCRIPTION,
    "version": "1.0.0",
    "capabilities": {"streaming": False, "pushNotifications": False},
    "defaultInputModes": ["text/plain"],
    "defaultOutputModes": ["text/plain"],
    "skills": [
        {
            "id": "research",
            "name": "Research a question",
            "description": "Web search, page reading and summarisation",
            "tags": ["research"],
        }
    ],
}


# --------------------------------------------------------------------------------------------
# Server side (runs in the researcher process)
# --------------------------------------------------------------------------------------------
class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, pace: Pace) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.pace = pace
        self.card = dict(RESEARCHER_CARD, url=f"http://127.0.0.1:{self.server_address[1]}/")


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("a2a: " + format, *args)

    def do_GET(self) -> None:
        if self.path == "/.well-known/agent-card.json":
            self._send(200, self.server.card)
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length))
        except ValueError:
            self._send(200, _rpc_error(None, _PARSE_ERROR, "Parse error"))
            return
        if not isinstance(body, dict) or body.get("jsonrpc") != "2.0" or "method" not in body:
            self._send(200, _rpc_error(None, _INVALID_REQUEST, "Invalid Request"))
            return
        rpc_id = body.get("id")
        if body["method"] != METHOD:
            self._send(200, _rpc_error(rpc_id, _METHOD_NOT_FOUND, "Method not found"))
            return
        params = body.get("params")
        message = params.get("message") if isinstance(params, dict) else None
        if not isinstance(message, dict):
            self._send(200, _rpc_error(rpc_id, _INVALID_PARAMS, "params.message is required"))
            return
        self._send(200, self._send_message(rpc_id, message))

    def _send_message(self, rpc_id: Any, message: dict[str, Any]) -> dict[str, Any]:
        with a2a_server_span(METHOD, message, agent_card=self.server.card) as a2a:
            try:
                request = _decode_request(message)
            except (KeyError, TypeError, ValueError) as exc:
                a2a.set_error(_INVALID_PARAMS, str(exc))
                return _rpc_error(rpc_id, _INVALID_PARAMS, f"bad demo message: {exc}")
            events = AgentEvents(RESEARCHER)
            task_id = _task_id(message)
            events.a2a_received(METHOD, message_id=message.get("messageId"), peer=PLANNER)
            events.task_start(task_id, conversation_id=message.get("contextId"))
            try:
                result = run_researcher(request, self.server.pace)
            except Exception as exc:  # the agent failed: the client gets a FAILED task
                _log.exception("researcher failed")
                a2a.set_error(type(exc).__qualname__, str(exc))
                events.task_error(task_id, exc)
                task = _task(message, "TASK_STATE_FAILED", None)
            else:
                events.task_complete(task_id)
                task = _task(message, "TASK_STATE_COMPLETED", result)
            a2a.set_task(task)
            return {"jsonrpc": "2.0", "id": rpc_id, "result": {"task": task}}

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _rpc_error(rpc_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rpc_id, "error": {"code": code, "message": message}}


def _task_id(message: dict[str, Any]) -> str:
    # deterministic: derived from the message id the planner drew from the run's seed
    return "task-" + str(message.get("messageId", ""))[-12:]


def _task(message: dict[str, Any], state: str, result: ResearchResult | None) -> dict[str, Any]:
    task: dict[str, Any] = {
        "id": _task_id(message),
        "contextId": message.get("contextId", ""),
        "status": {"state": state},
    }
    if result is not None:
        task["artifacts"] = [
            {
                "artifactId": "research",
                "parts": [{"text": result.summary}],
                "metadata": {"sources": list(result.sources)},
            }
        ]
    return task


def _decode_request(message: dict[str, Any]) -> ResearchRequest:
    demo = message["metadata"][DEMO_METADATA_KEY]
    spec = RunSpec(
        seed=int(demo["seed"]),
        run=int(demo["run"]),
        faults=FaultSet.from_wire(demo.get("faults")),
    )
    text = "".join(str(p.get("text", "")) for p in message.get("parts", []) if isinstance(p, dict))
    return ResearchRequest(spec=spec, question=text)


# --------------------------------------------------------------------------------------------
# Client side (the planner's delegate)
# --------------------------------------------------------------------------------------------
class A2AResearcherClient:
    """Delegates research requests to the researcher over A2A JSON-RPC on loopback.

    Args:
        url: the researcher's JSON-RPC endpoint (``http://127.0.0.1:PORT/``).
        timeout_s: per-request HTTP timeout.
    """

    def __init__(self, url: str, *, timeout_s: float = 120.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.card = self._get_json(url.rstrip("/") + "/.well-known/agent-card.json")

    def __call__(self, request: ResearchRequest) -> ResearchResult:
        """Send one ``SendMessage``; raises ``RuntimeError`` when the task did not complete."""
        spec = request.spec
        rng = spec.rng("a2a")
        message: dict[str, Any] = {
            "messageId": deterministic_uuid(rng),
            "contextId": spec.conversation_id(),
            "role": "ROLE_USER",
            "parts": [{"text": request.question}],
            "metadata": {
                DEMO_METADATA_KEY: {
                    "seed": spec.seed,
                    "run": spec.run,
                    "faults": spec.faults.to_wire(),
                }
            },
        }
        with a2a_client_span(METHOD, message, peer_card=self.card) as a2a:
            if faults_mod.A2A_BREAK in spec.faults:
                _break_trace_context(message, rng)
            AgentEvents(PLANNER).a2a_sent(METHOD, message_id=message["messageId"], peer=RESEARCHER)
            payload = {
                "jsonrpc": "2.0",
                "id": spec.run,
                "method": METHOD,
                "params": {"message": message},
            }
            reply = self._post_json(payload)
            if "error" in reply:
                error = reply["error"]
                a2a.set_error(int(error.get("code", _INTERNAL_ERROR)), str(error.get("message")))
                raise RuntimeError(f"researcher refused the request: {error}")
            task = reply["result"]["task"]
            a2a.set_task(task)
            if task["status"]["state"] != "TASK_STATE_COMPLETED":
                raise RuntimeError(f"research task ended {task['status']['state']}")
        artifact = task["artifacts"][0]
        return ResearchResult(
            summary="".join(p.get("text", "") for p in artifact["parts"]),
            sources=tuple(artifact["metadata"]["sources"]),
        )

    def _post_json(self, payload: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(payload).encode()
        req = urllib.request.Request(
            self.url, data=data, headers={"Content-Type": "application/json"}, method="POST"
        )
        with loopback_opener().open(req, timeout=self.timeout_s) as response:
            reply = json.loads(response.read())
        if not isinstance(reply, dict):
            raise RuntimeError("researcher sent a non-object JSON-RPC reply")
        return reply

    def _get_json(self, url: str) -> dict[str, Any]:
        with loopback_opener().open(url, timeout=self.timeout_s) as response:
            card = json.loads(response.read())
        if not isinstance(card, dict):
            raise RuntimeError("researcher sent a non-object agent card")
        return card


def loopback_opener() -> urllib.request.OpenerDirector:
    """A urllib opener that ignores HTTP(S)_PROXY: the demo talks to loopback only."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _break_trace_context(message: dict[str, Any], rng: random.Random) -> None:
    """The a2a-break fault: an uninstrumented hop re-parents the request on a span it never exports.

    The trace id is kept (the gateway propagates it) but the parent span id names a span no
    exporter ever sends, so the researcher's SERVER span is an orphan in the planner's trace.
    """
    current = trace.get_current_span().get_span_context()
    phantom_span_id = rng.getrandbits(64) | 1
    message["metadata"]["traceparent"] = f"00-{current.trace_id:032x}-{phantom_span_id:016x}-01"


# --------------------------------------------------------------------------------------------
# The researcher process
# --------------------------------------------------------------------------------------------
class ResearcherProcess:
    """Starts and stops the researcher agent as a child process.

    Args:
        endpoint: OTLP endpoint the researcher exports to.
        protocol: ``grpc`` or ``http/protobuf``.
        time_scale: as :class:`~otel_agents._demo_agents.Pace`.
        start_timeout_s: how long to wait for the child's port line.
    """

    def __init__(
        self, *, endpoint: str, protocol: str, time_scale: float, start_timeout_s: float = 30.0
    ) -> None:
        self._args = [
            sys.executable,
            "-m",
            "otel_agents._demo_a2a",
            "--endpoint",
            endpoint,
            "--protocol",
            protocol,
            "--time-scale",
            repr(time_scale),
        ]
        self._start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.pid = 0
        self.spans_sent: int | None = None
        self.spans_failed = 0

    @property
    def url(self) -> str:
        """The researcher's A2A JSON-RPC URL."""
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> ResearcherProcess:
        """Spawn the child and wait for its port (raises ``RuntimeError`` if it fails)."""
        self._proc = subprocess.Popen(
            self._args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.pid = self._proc.pid
        line = _read_line(self._proc.stdout, self._start_timeout_s)
        if not line:
            self.stop()
            raise RuntimeError("researcher process exited before serving (see stderr above)")
        self.port = int(json.loads(line)["port"])
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Close the child's stdin (it flushes its spans and exits); kill it after a timeout."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()
            line = _read_line(proc.stdout, timeout_s)
            if line:
                report = json.loads(line)
                self.spans_sent = int(report.get("spans", 0))
                self.spans_failed = int(report.get("failed", 0))
            proc.wait(timeout_s)
        except (subprocess.TimeoutExpired, ValueError, OSError):
            proc.kill()
            proc.wait(5)
        finally:
            if proc.stdout is not None:
                proc.stdout.close()


def _read_line(stream: IO[str] | None, timeout_s: float) -> str:
    """One line from a child's stdout, or "" on EOF / timeout (a thread keeps it bounded)."""
    if stream is None:
        return ""
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    return box[0].strip() if box else ""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the researcher process."""
    parser = argparse.ArgumentParser(prog="otel_agents._demo_a2a")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--protocol", required=True, choices=("grpc", "http/protobuf"))
    parser.add_argument("--time-scale", type=float, required=True)
    args = parser.parse_args(argv)

    telemetry = Telemetry.start(
        service_name=RESEARCHER_SERVICE,
        endpoint=args.endpoint,
        protocol=args.protocol,
        main_agent=RESEARCHER,
    )
    server = _Server(Pace(args.time_scale))
    serving = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    serving.start()
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        sys.stdin.read()  # until the planner closes our stdin
    server.shutdown()
    server.server_close()
    sent = telemetry.shutdown()
    print(json.dumps({"spans": sent, "failed": telemetry.spans_failed}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
