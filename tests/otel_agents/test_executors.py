# SPDX-License-Identifier: Apache-2.0
"""Context-carrying executors: spans started in worker threads keep their parent and agent."""

from __future__ import annotations

import asyncio
import contextvars
import pickle
import textwrap
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_agents import (
    ContextExecutor,
    execute_tool,
    instrument_threading,
    invoke_agent,
    run_in_thread,
    wrap_context,
)
from otel_agents import semconv as sc
from otel_agents.testing import OtlpSink, make_tracer_provider
from tests.otel_agents._sdk_fixtures import run_zero_code

_WAIT = 10.0  # seconds: upper bound for any hand-over between threads in these tests


@pytest.fixture
def tp() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    provider, memory = make_tracer_provider()
    yield provider, memory
    provider.shutdown()


def _tool(provider: TracerProvider, name: str = "search") -> str:
    """Run one tool span in the current thread; returns the thread's name."""
    with execute_tool(name, tracer_provider=provider):
        pass
    return threading.current_thread().name


def _by_name(memory: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {s.name: s for s in memory.get_finished_spans()}


def _assert_under(
    memory: InMemorySpanExporter, tool: str, agent: str, *, identity: bool = True
) -> None:
    """Tool span ``tool`` is a child of agent span ``agent`` (and names it, with ``identity``)."""
    spans = _by_name(memory)
    child, parent = spans[f"execute_tool {tool}"], spans[f"invoke_agent {agent}"]
    assert child.context is not None and parent.context is not None
    assert child.parent is not None, f"{child.name} is an orphan root span"
    assert child.parent.span_id == parent.context.span_id
    assert child.context.trace_id == parent.context.trace_id
    assert (child.attributes or {}).get(sc.GEN_AI_AGENT_NAME) == (agent if identity else None)


def test_bare_thread_pool_loses_the_parent(
    tp: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """The control case: plain ThreadPoolExecutor.submit starts an orphan root span."""
    provider, memory = tp
    with (
        ThreadPoolExecutor(max_workers=1) as pool,
        invoke_agent("planner", tracer_provider=provider),
    ):
        pool.submit(_tool, provider).result(_WAIT)
    tool = _by_name(memory)["execute_tool search"]
    assert tool.parent is None
    assert (tool.attributes or {}).get(sc.GEN_AI_AGENT_NAME) is None


def test_context_executor_keeps_parent_and_agent(
    tp: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """A tool span submitted through ContextExecutor is the agent span's child and names it."""
    provider, memory = tp
    with (
        ContextExecutor(max_workers=2, thread_name_prefix="ctxpool") as pool,
        invoke_agent("planner", tracer_provider=provider),
    ):
        worker = pool.submit(_tool, provider).result(_WAIT)
    assert worker.startswith("ctxpool")
    _assert_under(memory, "search", "planner")


def test_context_executor_parent_ended_before_task_runs(
    tp: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """A task that starts after its submitter's span has ended still becomes that span's child."""
    provider, memory = tp
    release = threading.Event()

    def late() -> str:
        assert release.wait(_WAIT)
        return _tool(provider)

    with ContextExecutor(max_workers=1) as pool:
        with invoke_agent("planner", tracer_provider=provider):
            future = pool.submit(late)
        release.set()
        future.result(_WAIT)
    _assert_under(memory, "search", "planner")


def test_context_executor_map_parents_every_task(
    tp: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """Executor.map goes through submit, so every mapped call is parented."""
    provider, memory = tp
    names = [f"tool{i}" for i in range(8)]
    with ContextExecutor(max_workers=3) as pool, invoke_agent("planner", tracer_provider=provider):
        list(pool.map(lambda n: _tool(provider, n), names, timeout=_WAIT))
    for name in names:
        _assert_under(memory, name, "planner")


def test_context_executor_does_not_leak_between_tasks(
    tp: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """A task that attaches a span and never detaches leaves the next task on that thread clean."""
    provider, _ = tp
    tracer = provider.get_tracer("test")

    def leaky() -> None:
        otel_context.attach(trace.set_span_in_context(tracer.start_span("leaked")))

    with ContextExecutor(max_workers=1) as pool:
        pool.submit(leaky).result(_WAIT)
        current = pool.submit(trace.get_current_span).result(_WAIT)
    assert current is trace.INVALID_SPAN


def test_context_executor_propagates_task_exceptions_unchanged() -> None:
    """The application's exception reaches the future as raised, not wrapped by the helper."""

    class Boom(Exception):
        pass

    def fail() -> None:
        raise Boom("tool failed")

    with ContextExecutor(max_workers=1) as pool, pytest.raises(Boom, match="tool failed"):
        pool.submit(fail).result(_WAIT)


def test_wrap_context_carries_into_a_thread(
    tp: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """threading.Thread(target=wrap_context(fn)) runs fn under the wrapping agent."""
    provider, memory = tp
    with invoke_agent("researcher", tracer_provider=provider):
        worker = threading.Thread(target=wrap_context(_tool), args=(provider,))
    worker.start()
    worker.join(_WAIT)
    assert not worker.is_alive()
    _assert_under(memory, "search", "researcher")


def test_wrap_context_callable_runs_concurrently_and_keeps_metadata(
    tp: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """One wrapped callable used by several threads at once enters its own context copy each time."""
    provider, memory = tp
    barrier = threading.Barrier(4, timeout=_WAIT)
    var: contextvars.ContextVar[int] = contextvars.ContextVar("n", default=0)

    def task(name: str) -> int:
        """Tool task."""
        barrier.wait()  # all four inside the context at the same time
        var.set(var.get() + 1)  # must not be seen by the others
        _tool(provider, name)
        return var.get()

    with invoke_agent("planner", tracer_provider=provider):
        wrapped = wrap_context(task)
    assert wrapped.__name__ == "task" and wrapped.__doc__ == "Tool task."
    with ThreadPoolExecutor(max_workers=4) as pool:
        counts = list(pool.map(wrapped, [f"t{i}" for i in range(4)], timeout=_WAIT))
    assert counts == [1, 1, 1, 1]
    for i in range(4):
        _assert_under(memory, f"t{i}", "planner")


def test_wrap_context_pickles_as_the_bare_function() -> None:
    """Process pools pickle their callables: a wrapped one travels as the plain function."""
    wrapped = wrap_context(len)
    assert pickle.loads(pickle.dumps(wrapped)) is len
    assert wrapped([1, 2, 3]) == 3


def test_run_in_executor_loses_the_parent_run_in_thread_keeps_it(
    tp: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """loop.run_in_executor drops the context (haystack#9433); run_in_thread carries it, as
    asyncio.to_thread does on the default executor."""
    provider, memory = tp

    async def main() -> None:
        loop = asyncio.get_running_loop()
        with (
            ThreadPoolExecutor(max_workers=1) as pool,
            invoke_agent("planner", tracer_provider=provider),
        ):
            await loop.run_in_executor(pool, _tool, provider, "bare")
            await run_in_thread(_tool, provider, "carried", executor=pool)
            await run_in_thread(_tool, provider, name="default")
            await asyncio.to_thread(_tool, provider, "to_thread")

    asyncio.run(main())
    assert _by_name(memory)["execute_tool bare"].parent is None
    _assert_under(memory, "carried", "planner")
    _assert_under(memory, "default", "planner")
    _assert_under(memory, "to_thread", "planner")


def test_context_executor_as_default_executor(
    tp: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """With ContextExecutor as the loop's default, run_in_executor(None, ...) keeps the parent."""
    provider, memory = tp

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ContextExecutor(max_workers=1))
        with invoke_agent("planner", tracer_provider=provider):
            await loop.run_in_executor(None, _tool, provider)

    asyncio.run(main())  # shuts the default executor down
    _assert_under(memory, "search", "planner")


def test_instrument_threading_keeps_parent_but_not_agent(
    tp: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """The contrib threading instrumentation parents pool tasks but carries no agent identity."""
    threading_mod = pytest.importorskip(
        "opentelemetry.instrumentation.threading",
        reason="opentelemetry-instrumentation-threading is not installed",
    )
    instrumentor = threading_mod.ThreadingInstrumentor()
    was_on = instrumentor.is_instrumented_by_opentelemetry
    provider, memory = tp
    try:
        assert instrument_threading() is True
        assert instrument_threading() is True  # idempotent
        with (
            ThreadPoolExecutor(max_workers=1) as pool,
            invoke_agent("planner", tracer_provider=provider),
        ):
            pool.submit(_tool, provider, "plain").result(_WAIT)
        with (
            ContextExecutor(max_workers=1) as pool,
            invoke_agent("planner2", tracer_provider=provider),
        ):
            pool.submit(_tool, provider, "both").result(_WAIT)
    finally:
        if not was_on:
            instrumentor.uninstrument()
    _assert_under(memory, "plain", "planner", identity=False)
    _assert_under(memory, "both", "planner2")


# An app run with zero code: a bare ThreadPoolExecutor and a ContextExecutor inside one agent.
ZERO_CODE_APP = """
from concurrent.futures import ThreadPoolExecutor
from opentelemetry import trace
import otel_agents

def tool(name):
    with otel_agents.execute_tool(name):
        pass

with ThreadPoolExecutor(1) as pool, otel_agents.ContextExecutor(1) as ctx_pool:
    with otel_agents.invoke_agent("planner"):
        pool.submit(tool, "plain").result(10)
        ctx_pool.submit(tool, "carried").result(10)
trace.get_tracer_provider().shutdown()
"""


@pytest.mark.parametrize("threading_on", [True, False], ids=["threading", "no-threading"])
def test_zero_code_pool_tasks_with_and_without_the_threading_instrumentation(
    threading_on: bool, tmp_path: Path
) -> None:
    """Under opentelemetry-instrument the installed threading instrumentation parents bare pool
    tasks (without the agent); disabled, they are orphans; ContextExecutor carries both anyway."""
    pytest.importorskip(
        "opentelemetry.instrumentation.threading",
        reason="opentelemetry-instrumentation-threading is not installed",
    )
    app = tmp_path / "app.py"
    app.write_text(textwrap.dedent(ZERO_CODE_APP))
    with OtlpSink(http=False) as sink:
        disabled = "" if threading_on else "threading"
        out = run_zero_code(
            app, sink.grpc_endpoint, "pool-app", OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=disabled
        )
        assert out.returncode == 0, out.stderr
        spans = {s.name: s for s in sink.wait_for_spans(3, timeout=15)}
    agent = spans["invoke_agent planner"]
    plain, carried = spans["execute_tool plain"], spans["execute_tool carried"]
    assert carried.parent_span_id == agent.span_id
    assert carried.attributes.get(sc.GEN_AI_AGENT_NAME) == "planner"
    assert plain.parent_span_id == (agent.span_id if threading_on else "")
    assert sc.GEN_AI_AGENT_NAME not in plain.attributes
