# SPDX-License-Identifier: Apache-2.0
"""A2A JSON-RPC peer run as a separate OS process by ``test_a2a.py``.

``python _sdkext_a2a_peer.py server OTLP_ENDPOINT`` serves A2A JSON-RPC over loopback HTTP
(prints its ephemeral port on stdout first) until its stdin is closed; ``... client
OTLP_ENDPOINT URL`` sends one ``SendMessage``.  Both export their spans over OTLP/gRPC to the test's sink.
"""

from __future__ import annotations

import json
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from otel_agents._a2a import a2a_client_span, a2a_server_span


def _provider(service: str, endpoint: str) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True))
    )
    trace.set_tracer_provider(provider)
    return provider


SERVER_CARD = {"name": "researcher", "description": "finds things", "version": "1.2.0"}


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            message = body["params"]["message"]
            method = body["method"]
        except (ValueError, KeyError, TypeError):
            # a stray client (another suite's exporter retrying a recycled port): not ours
            self.send_error(400)
            return
        with a2a_server_span(method, message, agent_card=SERVER_CARD) as a2a:
            seen_baggage = baggage.get_baggage("agent.caller")
            with trace.get_tracer("peer").start_as_current_span("research work"):
                pass
            task = {
                "id": "task-1",
                "contextId": message.get("contextId"),
                "status": {"state": "TASK_STATE_COMPLETED"},
                "metadata": {"sawBaggage": seen_baggage},
            }
            a2a.set_task(task)
        payload = json.dumps(
            {"jsonrpc": "2.0", "id": body.get("id"), "result": {"task": task}}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


def server(endpoint: str) -> None:
    provider = _provider("a2a-server", endpoint)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    print(httpd.server_address[1], flush=True)
    sys.stdin.read()  # serve until the test closes our stdin
    httpd.shutdown()
    thread.join(timeout=10)
    httpd.server_close()
    provider.shutdown()


def client(endpoint: str, url: str) -> None:
    provider = _provider("a2a-client", endpoint)
    tracer = trace.get_tracer("peer")
    token = otel_context.attach(baggage.set_baggage("agent.caller", "planner"))
    try:
        with tracer.start_as_current_span("invoke_agent planner"):
            message = {
                "messageId": "msg-1",
                "contextId": "conv-1",
                "role": "ROLE_USER",
                "parts": [{"text": "find X"}],
            }
            with a2a_client_span("SendMessage", message, peer_card=SERVER_CARD) as a2a:
                req = urllib.request.Request(
                    url,
                    data=json.dumps(
                        {
                            "jsonrpc": "2.0",
                            "id": 1,
                            "method": "SendMessage",
                            "params": {"message": message},
                        }
                    ).encode(),
                    headers={"Content-Type": "application/json"},
                )
                with urllib.request.urlopen(req, timeout=10) as resp:
                    result = json.loads(resp.read())["result"]
                a2a.set_task(result["task"])
        print(json.dumps(result), flush=True)
    finally:
        otel_context.detach(token)
        provider.shutdown()


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(sys.argv[2])
    else:
        client(sys.argv[2], sys.argv[3])
