# SPDX-License-Identifier: Apache-2.0
"""An app with no otel-agents code, run under ``opentelemetry-instrument`` by the zero-code test.

It only uses the plain OpenTelemetry API, as a GenAI instrumentation would: one agent span with
an inference span and a tool span inside.  Prints ``ok`` when it ran to the end.
"""

from __future__ import annotations

from opentelemetry import trace

tracer = trace.get_tracer("zero-code-app")
with tracer.start_as_current_span(
    "invoke_agent planner",
    attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner"},
):
    with tracer.start_as_current_span(
        "chat gpt-4o",
        kind=trace.SpanKind.CLIENT,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.agent.name": "planner",
            "gen_ai.usage.input_tokens": 1000,
            "gen_ai.usage.output_tokens": 200,
        },
    ):
        pass
    with tracer.start_as_current_span(
        "execute_tool search",
        attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"},
    ):
        pass
try:  # introspection only: did opentelemetry-instrument load the a2a-sdk instrumentor?
    from a2a.client.transports.jsonrpc import JsonRpcTransport

    wrapped = hasattr(JsonRpcTransport.send_message, "__otel_agents_wrapped__")
    print(f"a2a-instrumented={wrapped}", flush=True)
except ImportError:
    print("a2a-instrumented=absent", flush=True)
print("ok", flush=True)
