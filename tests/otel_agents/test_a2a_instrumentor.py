# SPDX-License-Identifier: Apache-2.0
"""A2AInstrumentor against a real a2a-sdk JSON-RPC server and client on loopback."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("a2a.client", reason="a2a-sdk is not installed")
pytest.importorskip("starlette", reason="a2a-sdk[http-server] (starlette) is not installed")
pytest.importorskip("uvicorn", reason="uvicorn is not installed")

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from otel_agents import _a2a_instrumentor
from otel_agents import semconv as sc
from otel_agents._a2a_instrumentor import A2AInstrumentor
from otel_agents.testing import OtlpSink, ReceivedSpan

PEER = str(Path(__file__).parent / "_sdkext_a2a_sdk_peer.py")
SERVER_KIND, CLIENT_KIND = 2, 3  # OTLP Span.SpanKind values


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[OtlpSink, str]]:
    """A real a2a-sdk agent in its own process, exporting spans to a loopback sink."""
    with OtlpSink(http=False) as sink:
        proc = subprocess.Popen(
            [sys.executable, PEER, "server", sink.grpc_endpoint],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            port = int(proc.stdout.readline())
            yield sink, f"http://127.0.0.1:{port}/"
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def test_dependencies_and_uninstrument_restores() -> None:
    """The instrumentor declares a2a-sdk and puts every wrapped method back on uninstrument."""
    from a2a.client.transports.jsonrpc import JsonRpcTransport
    from a2a.server.request_handlers import DefaultRequestHandler

    inst = A2AInstrumentor()
    assert list(inst.instrumentation_dependencies()) == ["a2a-sdk >= 1.0, < 2"]
    before = (
        JsonRpcTransport.__dict__["send_message"],
        DefaultRequestHandler.__dict__["on_message_send"],
    )
    inst.instrument()
    try:
        assert JsonRpcTransport.__dict__["send_message"] is not before[0]
        assert DefaultRequestHandler.__dict__["on_message_send"] is not before[1]
        again = A2AInstrumentor()  # the per-class singleton, constructed anew elsewhere
        assert again is inst
    finally:
        A2AInstrumentor().uninstrument()
    assert (
        JsonRpcTransport.__dict__["send_message"],
        DefaultRequestHandler.__dict__["on_message_send"],
    ) == before


def test_two_processes_one_trace(server: tuple[OtlpSink, str]) -> None:
    """Client and server processes with no tracing code of their own yield one complete trace."""
    sink, url = server
    out = subprocess.run(
        [sys.executable, PEER, "client", sink.grpc_endpoint, url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = json.loads(out.stdout)

    def ours() -> list[Any]:
        return [s for s in sink.spans() if s.name in ("SendMessage", "GetTask")]

    assert sink.wait_for(lambda _: len(ours()) >= 4, timeout=15)
    # only our two services: a stray exporter may hit a recycled ephemeral port
    spans = [s for s in sink.spans() if s.service_name in ("a2a-sdk-client", "a2a-sdk-server")]
    planner = [s for s in spans if s.name == "invoke_agent planner"]
    assert len(planner) == 1
    trace_id = planner[0].trace_id
    in_trace = [s for s in spans if s.trace_id == trace_id]
    ids = {s.span_id for s in in_trace}
    assert all(s.parent_span_id in ids for s in in_trace if s.span_id != planner[0].span_id)
    # a2a-sdk's own transport.close span starts after our root ended: the only other trace
    assert all(s.name.endswith(".close") for s in spans if s.trace_id != trace_id)
    services = {s.service_name for s in in_trace}
    assert services == {"a2a-sdk-client", "a2a-sdk-server"}

    by = {(s.name, s.kind): s for s in in_trace}
    send_c, send_s = by[("SendMessage", CLIENT_KIND)], by[("SendMessage", SERVER_KIND)]
    assert send_s.parent_span_id == send_c.span_id
    assert by[("GetTask", SERVER_KIND)].parent_span_id == by[("GetTask", CLIENT_KIND)].span_id
    work = next(s for s in in_trace if s.name == "invoke_agent researcher")
    ancestors, cur = set(), work
    by_id = {s.span_id: s for s in in_trace}
    while cur.parent_span_id in by_id:
        ancestors.add(cur.parent_span_id)
        cur = by_id[cur.parent_span_id]
    assert send_s.span_id in ancestors  # the agent's work runs under the SERVER span
    a = send_c.attributes
    assert a[sc.A2A_TASK_ID] == result["task_id"]
    assert a[sc.A2A_TASK_STATE] == "TASK_STATE_COMPLETED"
    assert a[sc.GEN_AI_CONVERSATION_ID] == "conv-42"
    assert a[sc.GEN_AI_AGENT_NAME] == "researcher"
    poll = by[("GetTask", CLIENT_KIND)]
    assert [link.span_id.hex() for link in poll.span.links] == [send_c.span_id]


async def _send(url: str, *, streaming: bool = False, context_id: str = "conv-in-proc") -> str:
    import httpx
    from a2a.client import ClientConfig, create_client
    from a2a.helpers.proto_helpers import new_text_message
    from a2a.types.a2a_pb2 import Role, SendMessageRequest

    async with httpx.AsyncClient(timeout=10) as http:
        client = await create_client(
            url, client_config=ClientConfig(streaming=streaming, httpx_client=http)
        )
        state = ""
        msg = new_text_message("hi", context_id=context_id, role=Role.ROLE_USER)
        async for event in client.send_message(SendMessageRequest(message=msg)):
            if event.HasField("task"):
                state = str(event.task.status.state)
            elif event.HasField("status_update"):
                state = str(event.status_update.status.state)
        await client.close()
        return state


def _ours(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    """The finished spans the instrumentor itself made (not a2a-sdk's own)."""
    return [
        s
        for s in exporter.get_finished_spans()
        if s.instrumentation_scope and s.instrumentation_scope.name == "otel_agents.a2a"
    ]


def _server_children(
    sink: OtlpSink, clients: Mapping[str, ReadableSpan]
) -> dict[str, ReceivedSpan]:
    """For each named CLIENT span, the one remote SERVER span of that name that is its child.

    Waits (bounded) until every client span has exactly one such child.
    """

    def children(name: str) -> list[ReceivedSpan]:
        parent = format(clients[name].context.span_id, "016x")
        return [
            s
            for s in sink.spans()
            if s.name == name and s.kind == SERVER_KIND and s.parent_span_id == parent
        ]

    assert sink.wait_for(lambda _: all(len(children(name)) == 1 for name in clients), 15)
    return {name: children(name)[0] for name in clients}


@pytest.fixture
def instrumented() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    inst = A2AInstrumentor()
    inst.instrument(tracer_provider=provider)
    try:
        yield provider, exporter
    finally:
        inst.uninstrument()
        provider.shutdown()


def test_in_process_client_span(
    server: tuple[OtlpSink, str], instrumented: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """An in-process a2a-sdk client gets a CLIENT SendMessage span on the given provider."""
    _, url = server
    _, exporter = instrumented
    assert asyncio.run(_send(url)) == "3"  # TASK_STATE_COMPLETED
    ours = _ours(exporter)
    assert [(s.name, s.kind) for s in ours] == [("SendMessage", SpanKind.CLIENT)]
    assert (ours[0].attributes or {})[sc.GEN_AI_CONVERSATION_ID] == "conv-in-proc"


def test_wrapper_failure_does_not_break_the_call(
    server: tuple[OtlpSink, str],
    instrumented: tuple[TracerProvider, InMemorySpanExporter],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If span creation fails inside the wrapper, the A2A call still succeeds, untraced."""
    _, url = server
    _, exporter = instrumented

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected")

    monkeypatch.setattr(_a2a_instrumentor, "start_client_span", boom)
    assert asyncio.run(_send(url)) == "3"
    assert not _ours(exporter)


def test_streaming_client_and_server(
    server: tuple[OtlpSink, str], instrumented: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """SendStreamingMessage: the client span follows the stream to its final state and the
    remote SERVER span is its child."""
    sink, url = server
    _, exporter = instrumented
    assert asyncio.run(_send(url, streaming=True, context_id="conv-stream")) == "3"
    ours = _ours(exporter)
    assert [(s.name, s.kind) for s in ours] == [("SendStreamingMessage", SpanKind.CLIENT)]
    client = ours[0]
    assert (client.attributes or {})[sc.A2A_TASK_STATE] == "TASK_STATE_COMPLETED"

    def remote() -> list[Any]:
        return [
            s for s in sink.spans() if s.name == "SendStreamingMessage" and s.kind == SERVER_KIND
        ]

    assert sink.wait_for(lambda _: len(remote()) == 1, timeout=15)
    (srv,) = remote()
    assert srv.trace_id == format(client.context.trace_id, "032x")
    assert srv.parent_span_id == format(client.context.span_id, "016x")
    assert srv.attributes[sc.GEN_AI_CONVERSATION_ID] == "conv-stream"


def test_protocol_error_sets_jsonrpc_code(
    server: tuple[OtlpSink, str], instrumented: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """GetTask for an unknown task fails with TaskNotFoundError; the CLIENT span is ERROR with
    error.type = the JSON-RPC code -32001, and so is the remote SERVER span."""
    import httpx
    from a2a.client import ClientConfig, create_client
    from a2a.types.a2a_pb2 import GetTaskRequest
    from a2a.utils.errors import TaskNotFoundError

    sink, url = server
    _, exporter = instrumented

    async def poll_unknown() -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            client = await create_client(url, client_config=ClientConfig(httpx_client=http))
            try:
                await client.get_task(GetTaskRequest(id="no-such-task"))
            finally:
                await client.close()

    with pytest.raises(TaskNotFoundError):
        asyncio.run(poll_unknown())
    (client_span,) = _ours(exporter)
    assert client_span.name == "GetTask"
    assert client_span.status.status_code is StatusCode.ERROR
    assert (client_span.attributes or {})[sc.ERROR_TYPE] == "-32001"

    remote = _server_children(sink, {"GetTask": client_span})
    assert remote["GetTask"].attributes[sc.ERROR_TYPE] == "-32001"


class _Webhook:
    """The client's push-notification endpoint: records each delivery and, as application code
    would, opens a one-way A2A SERVER span from the request headers."""

    def __init__(self, provider: TracerProvider) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from otel_agents._a2a import a2a_server_span

        self.deliveries: list[dict[str, str]] = []
        self.cond = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with a2a_server_span(
                    "TaskPushNotification",
                    carrier_message={"metadata": headers},
                    tracer_provider=provider,
                ):
                    pass
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with outer.cond:
                    outer.deliveries.append(headers)
                    outer.cond.notify_all()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/webhook"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}
        )
        self.thread.start()

    def wait(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.deliveries) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True

    def close(self) -> None:
        self.httpd.shutdown()
        self.thread.join(timeout=10)
        self.httpd.server_close()


def test_push_notifications_are_linked_not_parented(
    server: tuple[OtlpSink, str], instrumented: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """The server's push deliveries run in TaskPushNotification CLIENT spans whose context travels
    in the webhook request headers; the webhook's SERVER span links to it instead of parenting."""
    import httpx
    from a2a.client import ClientConfig, create_client
    from a2a.helpers.proto_helpers import new_text_message
    from a2a.types.a2a_pb2 import (
        Role,
        SendMessageConfiguration,
        SendMessageRequest,
        TaskPushNotificationConfig,
    )

    sink, url = server
    provider, exporter = instrumented
    hook = _Webhook(provider)
    try:

        async def send() -> str:
            async with httpx.AsyncClient(timeout=10) as http:
                client = await create_client(
                    url, client_config=ClientConfig(streaming=False, httpx_client=http)
                )
                msg = new_text_message("notify me", context_id="conv-push", role=Role.ROLE_USER)
                config = SendMessageConfiguration(
                    task_push_notification_config=TaskPushNotificationConfig(
                        url=hook.url, token="t"
                    )
                )
                task_id = ""
                async for event in client.send_message(
                    SendMessageRequest(message=msg, configuration=config)
                ):
                    task_id = event.task.id
                await client.close()
                return task_id

        task_id = asyncio.run(send())
        assert hook.wait(1, timeout=15)
    finally:
        hook.close()

    def deliveries() -> list[Any]:
        return [
            s
            for s in sink.spans()
            if s.name == "TaskPushNotification"
            and s.kind == CLIENT_KIND
            and s.attributes.get(sc.A2A_TASK_ID) == task_id
        ]

    assert sink.wait_for(lambda _: len(deliveries()) >= len(hook.deliveries), timeout=15)
    sent = {s.span_id: s for s in deliveries()}
    for headers in hook.deliveries:
        assert headers["traceparent"].split("-")[2] in sent  # each request carries its span
    received = [s for s in exporter.get_finished_spans() if s.name == "TaskPushNotification"]
    assert len(received) == len(hook.deliveries)
    for span in received:
        assert span.kind is SpanKind.SERVER
        assert span.parent is None  # one-way: not parented on the sender ...
        (link,) = span.links  # ... but linked to it
        assert format(link.context.span_id, "016x") in sent
    states = {s.attributes.get(sc.A2A_TASK_STATE) for s in sent.values()}
    assert "TASK_STATE_COMPLETED" in states


def test_opt_in_a2a_event_records(server: tuple[OtlpSink, str]) -> None:
    """instrument(emit_events=True) adds an agent.a2a.sent record correlated with the CLIENT
    span; without it no record is emitted."""
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import (
        InMemoryLogRecordExporter,
        SimpleLogRecordProcessor,
    )

    _, url = server
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    records = InMemoryLogRecordExporter()
    logs = LoggerProvider()
    logs.add_log_record_processor(SimpleLogRecordProcessor(records))
    inst = A2AInstrumentor()
    inst.instrument(tracer_provider=provider, emit_events=True, logger_provider=logs)
    try:
        assert asyncio.run(_send(url, context_id="conv-events")) == "3"
    finally:
        inst.uninstrument()
    inst.instrument(tracer_provider=provider, logger_provider=logs)  # events off by default
    try:
        assert asyncio.run(_send(url, context_id="conv-quiet")) == "3"
    finally:
        inst.uninstrument()
        provider.shutdown()
    (rec,) = [r.log_record for r in records.get_finished_logs()]
    logs.shutdown()
    (span,) = [
        s
        for s in exporter.get_finished_spans()
        if s.name == "SendMessage"
        and (s.attributes or {}).get(sc.GEN_AI_CONVERSATION_ID) == "conv-events"
    ]
    assert rec.event_name == sc.AGENT_EVENT_A2A_SENT
    assert (rec.trace_id, rec.span_id) == (span.context.trace_id, span.context.span_id)
    a = dict(rec.attributes or {})
    assert a[sc.A2A_METHOD_NAME] == "SendMessage"
    assert a[sc.GEN_AI_CONVERSATION_ID] == "conv-events"
    assert a[sc.AGENT_A2A_PEER_AGENT] == "researcher"


async def _send_then_get(url: str, text: str, context_id: str, **config: Any) -> str:
    """SendMessage then GetTask of the created task over the binding ``config`` selects."""
    import httpx
    from a2a.client import ClientConfig, create_client
    from a2a.helpers.proto_helpers import new_text_message
    from a2a.types.a2a_pb2 import GetTaskRequest, Role, SendMessageRequest

    async with httpx.AsyncClient(timeout=10) as http:
        client = await create_client(
            url, client_config=ClientConfig(streaming=False, httpx_client=http, **config)
        )
        msg = new_text_message(text, context_id=context_id, role=Role.ROLE_USER)
        task_id = ""
        async for event in client.send_message(SendMessageRequest(message=msg)):
            task_id = event.task.id
        await client.get_task(GetTaskRequest(id=task_id))
        await client.close()
        return task_id


def test_rest_binding_client_and_server(
    server: tuple[OtlpSink, str], instrumented: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """Over the HTTP+JSON (REST) binding the same CLIENT/SERVER pairs form: SendMessage via the
    message metadata, GetTask via the request headers."""
    sink, url = server
    _, exporter = instrumented
    task_id = asyncio.run(
        _send_then_get(url, "via rest", "conv-rest", supported_protocol_bindings=["HTTP+JSON"])
    )
    ours = {s.name: s for s in _ours(exporter)}
    assert set(ours) == {"SendMessage", "GetTask"}
    assert (ours["SendMessage"].attributes or {})[sc.A2A_TASK_ID] == task_id
    remote = _server_children(sink, ours)
    assert remote["SendMessage"].attributes[sc.GEN_AI_CONVERSATION_ID] == "conv-rest"


def test_grpc_binding_client_and_server(
    server: tuple[OtlpSink, str], instrumented: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """Over the gRPC binding, GetTask (no message) is connected through the gRPC metadata."""
    import grpc

    sink, url = server
    _, exporter = instrumented
    task_id = asyncio.run(
        _send_then_get(
            url,
            "via grpc",
            "conv-grpc",
            supported_protocol_bindings=["GRPC"],
            grpc_channel_factory=grpc.aio.insecure_channel,
        )
    )
    ours = {s.name: s for s in _ours(exporter)}
    assert set(ours) == {"SendMessage", "GetTask"}
    assert (ours["GetTask"].attributes or {})[sc.A2A_TASK_ID] == task_id
    remote = _server_children(sink, ours)
    assert remote["GetTask"].attributes[sc.A2A_TASK_STATE] == "TASK_STATE_COMPLETED"
