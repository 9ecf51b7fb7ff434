# SPDX-License-Identifier: Apache-2.0
"""a2a-sdk server / client run as separate OS processes by ``test_a2a_instrumentor.py``.

Neither side has tracing code beyond the SDK set-up: the A2A spans and the trace-context
propagation come from ``A2AInstrumentor``.  ``server ENDPOINT`` serves a real a2a-sdk agent
(JSON-RPC, REST and gRPC bindings) on ephemeral loopback ports (the HTTP one printed on stdout)
until stdin closes; ``client ENDPOINT URL`` sends one message and polls the task once.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from otel_agents._a2a_instrumentor import A2AInstrumentor


def _provider(service: str, endpoint: str) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    # Simple (synchronous) export: the test reads the sink right after the process exits
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True))
    )
    trace.set_tracer_provider(provider)
    return provider


def server(endpoint: str) -> None:
    import grpc
    import httpx
    import uvicorn
    from a2a.helpers.proto_helpers import new_task_from_user_message, new_text_message
    from a2a.server.agent_execution import AgentExecutor, RequestContext
    from a2a.server.events import EventQueue
    from a2a.server.request_handlers import DefaultRequestHandler, GrpcHandler
    from a2a.server.routes import (
        create_agent_card_routes,
        create_jsonrpc_routes,
        create_rest_routes,
    )
    from a2a.server.tasks import (
        BasePushNotificationSender,
        InMemoryPushNotificationConfigStore,
        InMemoryTaskStore,
        TaskUpdater,
    )
    from a2a.types import a2a_pb2_grpc
    from a2a.types.a2a_pb2 import AgentCapabilities, AgentCard, AgentInterface, AgentSkill
    from starlette.applications import Starlette

    provider = _provider("a2a-sdk-server", endpoint)
    A2AInstrumentor().instrument()
    tracer = trace.get_tracer("researcher")

    class Researcher(AgentExecutor):
        async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
            with tracer.start_as_current_span("invoke_agent researcher"):
                assert context.message is not None
                task = context.current_task or new_task_from_user_message(context.message)
                await event_queue.enqueue_event(task)
                updater = TaskUpdater(event_queue, task.id, task.context_id)
                await updater.start_work()
                await updater.complete(
                    new_text_message(
                        "found it", context_id=context.context_id, task_id=context.task_id
                    )
                )

        async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
            raise NotImplementedError

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # accept (queue) connections before uvicorn starts serving
    port = sock.getsockname()[1]
    stop = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.read()  # returns when the test closes our stdin
        stop.set()

    async def serve() -> None:
        # grpc.aio objects belong to the running loop: create them inside it
        grpc_server = grpc.aio.server()
        grpc_port = grpc_server.add_insecure_port("127.0.0.1:0")
        card = AgentCard(
            name="researcher",
            description="Finds things",
            version="1.0.0",
            supported_interfaces=[
                AgentInterface(
                    url=f"http://127.0.0.1:{port}/",
                    protocol_binding="JSONRPC",
                    protocol_version="1.0",
                ),
                AgentInterface(
                    url=f"http://127.0.0.1:{port}/rest",
                    protocol_binding="HTTP+JSON",
                    protocol_version="1.0",
                ),
                AgentInterface(
                    url=f"127.0.0.1:{grpc_port}", protocol_binding="GRPC", protocol_version="1.0"
                ),
            ],
            capabilities=AgentCapabilities(streaming=True, push_notifications=True),
            default_input_modes=["text/plain"],
            default_output_modes=["text/plain"],
            skills=[AgentSkill(id="research", name="research", description="research", tags=["r"])],
        )
        push_store = InMemoryPushNotificationConfigStore()
        handler = DefaultRequestHandler(
            agent_executor=Researcher(),
            task_store=InMemoryTaskStore(),
            agent_card=card,
            push_config_store=push_store,
            push_sender=BasePushNotificationSender(httpx.AsyncClient(timeout=5), push_store),
        )
        app = Starlette(
            routes=[
                *create_agent_card_routes(card),
                *create_rest_routes(handler, path_prefix="/rest"),
                *create_jsonrpc_routes(handler, "/"),
            ]
        )
        a2a_pb2_grpc.add_A2AServiceServicer_to_server(GrpcHandler(handler), grpc_server)
        srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))

        async def stopper() -> None:
            while not stop.is_set():
                await asyncio.sleep(0.1)
            srv.should_exit = True

        await grpc_server.start()
        stopping = asyncio.ensure_future(stopper())
        try:
            await srv.serve(sockets=[sock])
        finally:
            stopping.cancel()
            await grpc_server.stop(grace=None)

    threading.Thread(target=watch_stdin, daemon=True).start()
    print(port, flush=True)
    asyncio.run(serve())
    provider.shutdown()


async def _client(url: str) -> dict[str, str]:
    import httpx
    from a2a.client import ClientConfig, create_client
    from a2a.helpers.proto_helpers import new_text_message
    from a2a.types.a2a_pb2 import GetTaskRequest, Role, SendMessageRequest

    tracer = trace.get_tracer("planner")
    out: dict[str, str] = {}
    async with httpx.AsyncClient(timeout=10) as http:
        client = await create_client(
            url, client_config=ClientConfig(streaming=False, httpx_client=http)
        )
        with tracer.start_as_current_span("invoke_agent planner"):
            msg = new_text_message("find X", context_id="conv-42", role=Role.ROLE_USER)
            async for event in client.send_message(SendMessageRequest(message=msg)):
                out["task_id"] = event.task.id
                out["state"] = str(event.task.status.state)
            task = await client.get_task(GetTaskRequest(id=out["task_id"]))
            out["polled_state"] = str(task.status.state)
        await client.close()
    return out


def client(endpoint: str, url: str) -> None:
    provider = _provider("a2a-sdk-client", endpoint)
    A2AInstrumentor().instrument()
    try:
        print(json.dumps(asyncio.run(_client(url))), flush=True)
    finally:
        provider.shutdown()


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(sys.argv[2])
    else:
        client(sys.argv[2], sys.argv[3])
