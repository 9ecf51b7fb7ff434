# SPDX-License-Identifier: Apache-2.0
"""A2A propagation and spans: in-process shapes and a two-process JSON-RPC exchange."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from otel_agents import semconv as sc
from otel_agents._a2a import (
    a2a_client_span,
    a2a_server_span,
    extract_a2a_context,
    inject_a2a_context,
)
from otel_agents.testing import OtlpSink

from ._sdkext_sink import arrived

HERE = Path(__file__).parent


@pytest.fixture
def tp() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def test_inject_extract_roundtrip_dict(tp: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    """Trace context and baggage injected into a dict message come back out of it."""
    provider, _ = tp
    message: dict[str, Any] = {"messageId": "m"}
    token = otel_context.attach(baggage.set_baggage("agent.caller", "planner"))
    try:
        with provider.get_tracer("t").start_as_current_span("parent") as parent:
            inject_a2a_context(message)
    finally:
        otel_context.detach(token)
    assert message["metadata"]["traceparent"].split("-")[2] == format(
        parent.get_span_context().span_id, "016x"
    )
    extracted = extract_a2a_context(message, otel_context.Context())
    assert trace.get_current_span(extracted).get_span_context().span_id == (
        parent.get_span_context().span_id
    )
    assert baggage.get_baggage("agent.caller", extracted) == "planner"


def test_inject_into_a2a_sdk_message() -> None:
    """An a2a-sdk protobuf Message carries the traceparent in its metadata Struct."""
    a2a_pb2 = pytest.importorskip("a2a.types.a2a_pb2")
    provider = TracerProvider()
    message = a2a_pb2.Message(message_id="m1", context_id="c1")
    with provider.get_tracer("t").start_as_current_span("p") as parent:
        inject_a2a_context(message)
    wire = a2a_pb2.Message()
    wire.ParseFromString(message.SerializeToString())
    got = trace.get_current_span(extract_a2a_context(wire, otel_context.Context()))
    assert got.get_span_context().trace_id == parent.get_span_context().trace_id


def test_extract_tolerates_garbage() -> None:
    """Malformed metadata never raises and yields the base context."""
    base = otel_context.Context()
    for message in (
        None,
        {},
        {"metadata": None},
        {"metadata": {"traceparent": "zz"}},
        42,
        object(),
    ):
        ctx = extract_a2a_context(message, base)
        assert not trace.get_current_span(ctx).get_span_context().is_valid


def test_inject_uses_global_propagators(monkeypatch: pytest.MonkeyPatch) -> None:
    """The carrier fields come from the global propagator, not a hard-coded W3C writer."""
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    monkeypatch.setattr(
        propagate, "_HTTP_TEXT_FORMAT", CompositePropagator([TraceContextTextMapPropagator()])
    )
    message: dict[str, Any] = {}
    token = otel_context.attach(baggage.set_baggage("k", "v"))
    try:
        with TracerProvider().get_tracer("t").start_as_current_span("p"):
            inject_a2a_context(message)
    finally:
        otel_context.detach(token)
    assert set(message["metadata"]) == {"traceparent"}


def test_client_and_server_span_attributes(tp: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    """Client/server spans follow the A2A conventions and the server is the client's child."""
    provider, exporter = tp
    card = {"name": "researcher", "description": "finds", "version": "2"}
    message: dict[str, Any] = {"messageId": "m1", "contextId": "ctx-9"}
    with a2a_client_span("SendMessage", message, peer_card=card, tracer_provider=provider) as c:
        wire = json.loads(json.dumps(message))
        with a2a_server_span("SendMessage", wire, agent_card=card, tracer_provider=provider) as s:
            s.set_task({"id": "t1", "status": {"state": "completed"}})
        c.set_task(
            {
                "task": {
                    "id": "t1",
                    "contextId": "ctx-9",
                    "status": {"state": "TASK_STATE_COMPLETED"},
                }
            }
        )
    server, client = exporter.get_finished_spans()
    assert (client.name, client.kind, server.name, server.kind) == (
        "SendMessage",
        SpanKind.CLIENT,
        "SendMessage",
        SpanKind.SERVER,
    )
    assert server.parent is not None and server.parent.span_id == client.context.span_id
    for span in (client, server):
        a = dict(span.attributes or {})
        assert a[sc.A2A_METHOD_NAME] == "SendMessage"
        assert a[sc.A2A_MESSAGE_ID] == "m1"
        assert a[sc.GEN_AI_CONVERSATION_ID] == "ctx-9"
        assert a[sc.A2A_TASK_ID] == "t1"
        assert a[sc.A2A_TASK_STATE] == "TASK_STATE_COMPLETED"
        assert a[sc.GEN_AI_AGENT_NAME] == "researcher"
        assert a[sc.GEN_AI_AGENT_VERSION] == "2"
    assert dict(client.attributes or {})[sc.AGENT_A2A_PEER_AGENT] == "researcher"
    assert sc.AGENT_A2A_PEER_AGENT not in dict(server.attributes or {})


def test_error_sets_error_type(tp: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    """An exception in the block marks the span ERROR with the JSON-RPC code as error.type."""
    provider, exporter = tp

    class RpcError(Exception):
        code = -32001

    with pytest.raises(RpcError), a2a_client_span("GetTask", task_id="x", tracer_provider=provider):
        raise RpcError("task not found")
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None and span.attributes[sc.ERROR_TYPE] == "-32001"


def test_one_way_and_polling_use_links(tp: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    """Push-notification delivery links to the sender; GetTask polling links to the creator."""
    provider, exporter = tp
    message: dict[str, Any] = {"messageId": "m2"}
    with a2a_client_span("SendMessage", message, tracer_provider=provider) as send:
        send.set_task({"id": "task-77", "status": {"state": "TASK_STATE_WORKING"}})
    send_ctx = exporter.get_finished_spans()[0].context
    with a2a_client_span("GetTask", task_id="task-77", tracer_provider=provider):
        pass
    notification: dict[str, Any] = {"taskId": "task-77"}
    with provider.get_tracer("t").start_as_current_span("notifier") as notifier:
        inject_a2a_context(notification)
    with (
        provider.get_tracer("t").start_as_current_span("webhook handler") as local,
        a2a_server_span("TaskPushNotification", notification, tracer_provider=provider),
    ):
        pass
    spans = {s.name: s for s in exporter.get_finished_spans()}
    poll = spans["GetTask"]
    assert [link.context.span_id for link in poll.links] == [send_ctx.span_id]
    assert poll.context.trace_id != send_ctx.trace_id
    push = spans["TaskPushNotification"]
    assert push.parent is not None and push.parent.span_id == local.get_span_context().span_id
    assert [link.context.span_id for link in push.links] == [notifier.get_span_context().span_id]


def test_two_processes_one_trace() -> None:
    """Client and server in two OS processes over loopback HTTP produce ONE complete trace."""
    peer = str(HERE / "_sdkext_a2a_peer.py")
    with OtlpSink(http=False) as sink:
        server = subprocess.Popen(
            [sys.executable, peer, "server", sink.grpc_endpoint],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None and server.stdin is not None
            port = int(server.stdout.readline())
            out = subprocess.run(
                [sys.executable, peer, "client", sink.grpc_endpoint, f"http://127.0.0.1:{port}/"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert out.returncode == 0, out.stderr[-4000:]
            _, server_err = server.communicate("", timeout=30)  # closes stdin: server stops
        finally:
            if server.poll() is None:
                server.kill()
                server.wait(timeout=10)

        def ours() -> list[Any]:
            # only our two services: a stray exporter may hit a recycled ephemeral port
            return [
                (span.service_name, span)
                for span in sink.spans()
                if span.service_name in ("a2a-client", "a2a-server")
            ]

        assert arrived(sink, lambda: len(ours()) >= 4, timeout=15), server_err[-3000:]
        spans = ours()
    result = json.loads(out.stdout)
    assert result["task"]["metadata"]["sawBaggage"] == "planner"  # baggage crossed too
    assert {service for service, _ in spans} == {"a2a-client", "a2a-server"}
    assert len({span.trace_id for _, span in spans}) == 1
    ids = {span.span_id for _, span in spans}
    roots = [span for _, span in spans if not span.parent_span_id]
    assert [r.name for r in roots] == ["invoke_agent planner"]
    assert all(span.parent_span_id in ids for _, span in spans if span.parent_span_id)
    by_name = {(span.name, span.kind): span for _, span in spans}
    client = by_name[("SendMessage", 3)]  # SPAN_KIND_CLIENT
    srv = by_name[("SendMessage", 2)]  # SPAN_KIND_SERVER
    assert srv.parent_span_id == client.span_id
    assert by_name[("research work", 1)].parent_span_id == srv.span_id
    assert srv.attributes[sc.GEN_AI_CONVERSATION_ID] == "conv-1"
    assert client.attributes[sc.A2A_TASK_STATE] == "TASK_STATE_COMPLETED"
