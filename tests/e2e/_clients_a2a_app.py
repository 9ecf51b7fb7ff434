# SPDX-License-Identifier: Apache-2.0
"""A plain a2a-sdk application with no OpenTelemetry code at all, for test_a2a_sdk_receiver.py.

Run under ``opentelemetry-instrument``: every span and the trace-context propagation between
the two processes come from the installed instrumentor (``otel_agents``' ``a2a_sdk`` entry
point) and the zero-code hook, exactly as for an application someone else wrote.

``server``: an A2A agent ("researcher", JSON-RPC binding) on an ephemeral loopback port, printed
on stdout; serves until stdin closes.  ``client URL``: sends one message to the agent, polls the
task once, prints ``{"task_id", "state", "polled_state", "context_id"}`` as JSON.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading

CONTEXT_ID = "conv-zero-code"


def server() -> None:
    """Serves the researcher agent until stdin is closed."""
    import uvicorn
    from a2a.helpers.proto_helpers import new_task_from_user_message, new_text_message
    from a2a.server.agent_execution import AgentExecutor, RequestContext
    from a2a.server.events import EventQueue
    from a2a.server.request_handlers import DefaultRequestHandler
    from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
    from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
    from a2a.types.a2a_pb2 import AgentCapabilities, AgentCard, AgentInterface, AgentSkill
    from starlette.applications import Starlette

    class Researcher(AgentExecutor):
        async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
            assert context.message is not None
            task = context.current_task or new_task_from_user_message(context.message)
            await event_queue.enqueue_event(task)
            updater = TaskUpdater(event_queue, task.id, task.context_id)
            await updater.start_work()
            await asyncio.sleep(0.05)  # the "research"
            await updater.complete(
                new_text_message("found it", context_id=context.context_id, task_id=task.id)
            )

        async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
            raise NotImplementedError

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # connections queue before uvicorn serves
    port = sock.getsockname()[1]
    card = AgentCard(
        name="researcher",
        description="Finds things",
        version="1.0.0",
        supported_interfaces=[
            AgentInterface(
                url=f"http://127.0.0.1:{port}/", protocol_binding="JSONRPC", protocol_version="1.0"
            )
        ],
        capabilities=AgentCapabilities(streaming=False),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id="research", name="research", description="research", tags=["r"])],
    )
    handler = DefaultRequestHandler(
        agent_executor=Researcher(), task_store=InMemoryTaskStore(), agent_card=card
    )
    app = Starlette(routes=[*create_agent_card_routes(card), *create_jsonrpc_routes(handler, "/")])
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    stop = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.read()  # returns when the parent closes our stdin
        stop.set()

    async def serve() -> None:
        async def stopper() -> None:
            while not stop.is_set():
                await asyncio.sleep(0.1)
            srv.should_exit = True

        stopping = asyncio.ensure_future(stopper())
        try:
            await srv.serve(sockets=[sock])
        finally:
            stopping.cancel()

    threading.Thread(target=watch_stdin, daemon=True).start()
    print(port, flush=True)
    asyncio.run(serve())


async def _client(url: str) -> dict[str, str]:
    import httpx
    from a2a.client import ClientConfig, create_client
    from a2a.helpers.proto_helpers import new_text_message
    from a2a.types.a2a_pb2 import GetTaskRequest, Role, SendMessageRequest, TaskState

    out: dict[str, str] = {}
    async with httpx.AsyncClient(timeout=10) as http:
        client = await create_client(
            url, client_config=ClientConfig(streaming=False, httpx_client=http)
        )
        msg = new_text_message("find X", context_id=CONTEXT_ID, role=Role.ROLE_USER)
        async for event in client.send_message(SendMessageRequest(message=msg)):
            out["task_id"] = event.task.id
            out["context_id"] = event.task.context_id
            out["state"] = TaskState.Name(event.task.status.state)
        task = await client.get_task(GetTaskRequest(id=out["task_id"]))
        out["polled_state"] = TaskState.Name(task.status.state)
        await client.close()
    return out


def client(url: str) -> None:
    """Sends one message to the agent at ``url`` and polls its task."""
    print(json.dumps(asyncio.run(_client(url))), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server()
    else:
        client(sys.argv[2])
