# SPDX-License-Identifier: Apache-2.0
"""Third-party acceptance: the real OpenInference OpenAI instrumentation + the real openai client,
against a local OpenAI-compatible HTTP server; our processors normalize and price its spans."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otel_agents
from otel_agents import AgentIdentitySpanProcessor, EnrichingSpanProcessor
from otel_agents import semconv as sc

openai = pytest.importorskip("openai", reason="openai is in the test extra")
oi_openai = pytest.importorskip(
    "openinference.instrumentation.openai",
    reason="openinference-instrumentation-openai is in the test extra",
)

COMPLETION = {
    "id": "chatcmpl-123",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Paris."},
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 1200,
        "completion_tokens": 30,
        "total_tokens": 1230,
        "prompt_tokens_details": {"cached_tokens": 1024},
        "completion_tokens_details": {"reasoning_tokens": 0},
    },
}


class FakeOpenAI(BaseHTTPRequestHandler):
    """Answers POST /v1/chat/completions like the OpenAI API does."""

    requests: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != "/v1/chat/completions":
            self.send_response(404)
            self.end_headers()
            return
        FakeOpenAI.requests.append(json.loads(body))
        payload = json.dumps(COMPLETION).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_openinference_openai_spans_are_normalized_priced_and_attributed(fake_openai: str) -> None:
    """A real instrumented chat.completions call yields a priced GenAI span carrying the agent's identity."""
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(AgentIdentitySpanProcessor())
    provider.add_span_processor(EnrichingSpanProcessor(SimpleSpanProcessor(exporter)))
    instrumentor = oi_openai.OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        client = openai.OpenAI(base_url=fake_openai, api_key="test-key", max_retries=0)
        with otel_agents.invoke_agent("geo", conversation_id="conv-1", tracer_provider=provider):
            reply = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "Capital of France?"}]
            )
        assert reply.choices[0].message.content == "Paris."
    finally:
        instrumentor.uninstrument()
    assert FakeOpenAI.requests and FakeOpenAI.requests[-1]["model"] == "gpt-4o-mini"
    spans = exporter.get_finished_spans()
    llm = next(
        s
        for s in spans
        if s.attributes.get("openinference.span.kind") == "LLM"
        or s.attributes.get(sc.GEN_AI_OPERATION_NAME) == "chat"
    )
    attrs = llm.attributes
    assert attrs[sc.GEN_AI_OPERATION_NAME] == sc.OP_CHAT
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == 1200
    assert attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 30
    assert attrs[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 1024
    assert attrs[sc.GEN_AI_REQUEST_MODEL] == "gpt-4o-mini-2024-07-18"
    assert attrs[sc.GEN_AI_PROVIDER_NAME] == "openai"
    # gpt-4o-mini: $0.15/M input, $0.075/M cached input, $0.6/M output.
    expected = (1200 - 1024) * 0.15e-6 + 1024 * 0.075e-6 + 30 * 0.6e-6
    assert attrs[sc.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx(expected)
    assert attrs[sc.GEN_AI_USAGE_COST_SOURCE] == "local"
    assert attrs[sc.GEN_AI_AGENT_NAME] == "geo"
    assert attrs[sc.GEN_AI_CONVERSATION_ID] == "conv-1"
    assert attrs[sc.AGENT_DIALECT] == "openinference"
