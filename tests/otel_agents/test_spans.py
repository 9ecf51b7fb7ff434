# SPDX-License-Identifier: Apache-2.0
"""Spans API: names, kinds, attributes, identity inheritance, decorators, errors, content."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import otel_agents
from otel_agents import semconv as sc
from otel_agents._content import parse_capture_mode
from tests.otel_agents._sdkcore_helpers import provider_with_memory, subprocess_env

CAPTURE = sc.ENV_CAPTURE_MESSAGE_CONTENT


@pytest.fixture
def mem() -> tuple[TracerProvider, InMemorySpanExporter]:
    provider, exporter = provider_with_memory()
    yield provider, exporter
    provider.shutdown()


@pytest.fixture(autouse=True)
def _content_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CAPTURE, raising=False)


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {s.name: s for s in exporter.get_finished_spans()}


def test_span_names_kinds_and_operation_attributes(mem: Any) -> None:
    """Each entry point produces the GenAI span name, kind and gen_ai.operation.name."""
    tp, exp = mem
    with otel_agents.invoke_agent("planner", tracer_provider=tp):
        with otel_agents.invoke_workflow("research", tracer_provider=tp):
            pass
        with otel_agents.plan(tracer_provider=tp):
            pass
        with otel_agents.execute_tool("web_search", call_id="call_1", tracer_provider=tp):
            pass
        with otel_agents.inference("gpt-4o", provider="openai", tracer_provider=tp):
            pass
        with otel_agents.text_completion("davinci-002", "openai", tracer_provider=tp):
            pass
        with otel_agents.embeddings("text-embedding-3-small", "openai", tracer_provider=tp):
            pass
    spans = by_name(exp)
    expected = {
        "invoke_agent planner": (SpanKind.INTERNAL, sc.OP_INVOKE_AGENT),
        "invoke_workflow research": (SpanKind.INTERNAL, sc.OP_INVOKE_WORKFLOW),
        "plan planner": (SpanKind.INTERNAL, sc.OP_PLAN),
        "execute_tool web_search": (SpanKind.INTERNAL, sc.OP_EXECUTE_TOOL),
        "chat gpt-4o": (SpanKind.CLIENT, sc.OP_CHAT),
        "text_completion davinci-002": (SpanKind.CLIENT, sc.OP_TEXT_COMPLETION),
        "embeddings text-embedding-3-small": (SpanKind.CLIENT, sc.OP_EMBEDDINGS),
    }
    assert set(spans) == set(expected)
    for name, (kind, op) in expected.items():
        assert spans[name].kind is kind, name
        assert spans[name].attributes[sc.GEN_AI_OPERATION_NAME] == op, name
    tool = spans["execute_tool web_search"].attributes
    assert tool[sc.GEN_AI_TOOL_NAME] == "web_search"
    assert tool[sc.GEN_AI_TOOL_CALL_ID] == "call_1"
    assert tool[sc.GEN_AI_TOOL_TYPE] == "function"
    chat = spans["chat gpt-4o"].attributes
    assert chat[sc.GEN_AI_REQUEST_MODEL] == "gpt-4o"
    assert chat[sc.GEN_AI_PROVIDER_NAME] == "openai"
    assert spans["invoke_workflow research"].attributes[sc.GEN_AI_WORKFLOW_NAME] == "research"


def test_children_inherit_agent_identity_and_conversation(mem: Any) -> None:
    """Spans inside an agent carry its name/id and conversation; nested agents inherit the conversation."""
    tp, exp = mem
    with otel_agents.invoke_agent(
        "planner",
        agent_id="agt-1",
        description="plans",
        conversation_id="conv-9",
        tracer_provider=tp,
    ):
        with otel_agents.chat("gpt-4o", "openai", tracer_provider=tp) as llm:
            llm.record_usage(input_tokens=10, output_tokens=2, cache_read_tokens=4)
            llm.set_response_model("gpt-4o-2024-08-06")
        with (
            otel_agents.invoke_agent("researcher", agent_id="agt-2", tracer_provider=tp),
            otel_agents.execute_tool("fetch", tracer_provider=tp),
        ):
            assert otel_agents.current_agent() == otel_agents.AgentIdentity(
                "researcher", "agt-2", "conv-9"
            )
        assert otel_agents.current_agent() == otel_agents.AgentIdentity(
            "planner", "agt-1", "conv-9"
        )
    assert otel_agents.current_agent() is None
    spans = by_name(exp)
    chat = spans["chat gpt-4o"].attributes
    assert (chat[sc.GEN_AI_AGENT_NAME], chat[sc.GEN_AI_AGENT_ID]) == ("planner", "agt-1")
    assert chat[sc.GEN_AI_CONVERSATION_ID] == "conv-9"
    assert chat[sc.GEN_AI_USAGE_INPUT_TOKENS] == 10
    assert chat[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 4
    assert chat[sc.GEN_AI_RESPONSE_MODEL] == "gpt-4o-2024-08-06"
    inner = spans["invoke_agent researcher"].attributes
    assert inner[sc.GEN_AI_CONVERSATION_ID] == "conv-9"
    assert inner[sc.AGENT_PARENT_NAME] == "planner"
    tool = spans["execute_tool fetch"].attributes
    assert (tool[sc.GEN_AI_AGENT_NAME], tool[sc.GEN_AI_AGENT_ID]) == ("researcher", "agt-2")
    assert spans["invoke_agent planner"].attributes[sc.GEN_AI_AGENT_DESCRIPTION] == "plans"
    # Parent/child structure follows the with-blocks.
    agent_ctx = spans["invoke_agent planner"].context
    assert spans["chat gpt-4o"].parent.span_id == agent_ctx.span_id


def test_sync_and_async_decorators_create_spans_per_call(mem: Any) -> None:
    """Decorated sync and async functions run inside a fresh span per call; coroutines are awaited inside it."""
    tp, exp = mem

    @otel_agents.invoke_agent("worker", tracer_provider=tp)
    def work(x: int) -> int:
        with otel_agents.execute_tool("inner", tracer_provider=tp):
            return x * 2

    @otel_agents.invoke_agent("async_worker", tracer_provider=tp)
    async def awork(x: int) -> int:
        await asyncio.sleep(0.01)
        with otel_agents.execute_tool("async_inner", tracer_provider=tp):
            await asyncio.sleep(0)
        return x + 1

    assert work(2) == 4
    assert work(3) == 6
    assert asyncio.run(awork(1)) == 2
    assert work.__name__ == "work" and awork.__name__ == "awork"
    spans = exp.get_finished_spans()
    assert [s.name for s in spans].count("invoke_agent worker") == 2
    outer = next(s for s in spans if s.name == "invoke_agent async_worker")
    inner = next(s for s in spans if s.name == "execute_tool async_inner")
    assert inner.parent.span_id == outer.context.span_id
    assert inner.attributes[sc.GEN_AI_AGENT_NAME] == "async_worker"
    # The span covers the awaited body, not only the coroutine's creation.
    assert outer.end_time - outer.start_time >= 10_000_000
    assert outer.end_time >= inner.end_time


def test_async_with_and_concurrent_tasks_keep_identities_apart(mem: Any) -> None:
    """Concurrent asyncio tasks each see their own agent identity."""
    tp, exp = mem

    async def agent(name: str) -> str | None:
        async with otel_agents.invoke_agent(name, tracer_provider=tp):
            await asyncio.sleep(0.01)
            with otel_agents.chat("gpt-4o", tracer_provider=tp):
                await asyncio.sleep(0.01)
            ident = otel_agents.current_agent()
            return None if ident is None else ident.name

    async def main() -> list[str | None]:
        return list(await asyncio.gather(agent("a"), agent("b"), agent("c")))

    assert asyncio.run(main()) == ["a", "b", "c"]
    chats = [s for s in exp.get_finished_spans() if s.name == "chat gpt-4o"]
    assert sorted(s.attributes[sc.GEN_AI_AGENT_NAME] for s in chats) == ["a", "b", "c"]
    for s in chats:
        parent = next(p for p in exp.get_finished_spans() if p.context.span_id == s.parent.span_id)
        assert parent.name == f"invoke_agent {s.attributes[sc.GEN_AI_AGENT_NAME]}"


def test_exception_is_recorded_and_propagates_unchanged(mem: Any) -> None:
    """A user exception sets error.type, ERROR status and an exception event, then propagates as the same object."""
    tp, exp = mem

    class QuotaExceeded(RuntimeError):
        pass

    boom = QuotaExceeded("over quota")
    with (
        pytest.raises(QuotaExceeded) as caught,
        otel_agents.execute_tool("pay", tracer_provider=tp),
    ):
        raise boom
    assert caught.value is boom

    @otel_agents.chat("gpt-4o", tracer_provider=tp)
    async def call() -> None:
        raise ValueError("bad request")

    with pytest.raises(ValueError, match="bad request"):
        asyncio.run(call())
    spans = by_name(exp)
    tool = spans["execute_tool pay"]
    assert tool.attributes[sc.ERROR_TYPE] == QuotaExceeded.__qualname__
    assert tool.status.status_code is StatusCode.ERROR
    assert [e.name for e in tool.events] == ["exception"]
    assert spans["chat gpt-4o"].attributes[sc.ERROR_TYPE] == "ValueError"
    assert spans["chat gpt-4o"].status.status_code is StatusCode.ERROR
    assert otel_agents.current_agent() is None


def test_content_is_off_by_default(mem: Any) -> None:
    """Without the capture variable, tool arguments/results, messages and reasoning are not recorded; the args hash is."""
    tp, exp = mem
    with otel_agents.execute_tool("search", arguments={"q": "secret"}, tracer_provider=tp) as tool:
        tool.set_result({"hits": 3})
        tool.record_decision("route", "web", ["web", "db"], 0.9, reasoning="user said so")
    with otel_agents.chat("gpt-4o", tracer_provider=tp) as llm:
        llm.set_input_messages([{"role": "user", "parts": [{"type": "text", "content": "hi"}]}])
        llm.set_output_messages([])
    spans = by_name(exp)
    tool_attrs = spans["execute_tool search"].attributes
    assert sc.GEN_AI_TOOL_CALL_ARGUMENTS not in tool_attrs
    assert sc.GEN_AI_TOOL_CALL_RESULT not in tool_attrs
    assert tool_attrs[sc.AGENT_TOOL_ARGS_HASH] == otel_agents.tool_args_hash({"q": "secret"})
    (event,) = spans["execute_tool search"].events
    assert sc.AGENT_DECISION_REASONING not in event.attributes
    assert sc.GEN_AI_INPUT_MESSAGES not in spans["chat gpt-4o"].attributes
    assert sc.GEN_AI_OUTPUT_MESSAGES not in spans["chat gpt-4o"].attributes


@pytest.mark.parametrize("value", ["true", "SPAN_ONLY", "span_and_event", "True"])
def test_content_is_recorded_when_opted_in(
    mem: Any, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """The values the GenAI instrumentations accept as 'on spans' turn content capture on."""
    tp, exp = mem
    monkeypatch.setenv(CAPTURE, value)
    with otel_agents.execute_tool("search", arguments={"q": "x"}, tracer_provider=tp) as tool:
        tool.set_result({"hits": 3})
        otel_agents.record_decision("route", "web", ["web", "db"], 0.5, reasoning="cheaper")
    with otel_agents.chat("gpt-4o", tracer_provider=tp) as llm:
        llm.set_input_messages([{"role": "user"}])
    spans = by_name(exp)
    tool_attrs = spans["execute_tool search"].attributes
    assert tool_attrs[sc.GEN_AI_TOOL_CALL_ARGUMENTS] == '{"q":"x"}'
    assert tool_attrs[sc.GEN_AI_TOOL_CALL_RESULT] == '{"hits":3}'
    (event,) = spans["execute_tool search"].events
    assert event.attributes[sc.AGENT_DECISION_REASONING] == "cheaper"
    assert spans["chat gpt-4o"].attributes[sc.GEN_AI_INPUT_MESSAGES] == '[{"role":"user"}]'


@pytest.mark.parametrize(
    ("value", "on"),
    [
        (None, False),
        ("", False),
        ("false", False),
        ("NO_CONTENT", False),
        ("EVENT_ONLY", False),
        ("maybe", False),
        ("true", True),
        ("SPAN_ONLY", True),
        (" SPAN_AND_EVENT ", True),
    ],
)
def test_capture_mode_parsing(value: str | None, on: bool) -> None:
    """The capture switch is parsed like the OTel GenAI instrumentations parse it; unknown values stay off."""
    assert parse_capture_mode(value) is on


def test_decision_event_attributes_and_confidence_validation(
    mem: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """agent.decision carries type/chosen/options/confidence; an out-of-range confidence is dropped with a warning."""
    tp, exp = mem
    with otel_agents.invoke_agent("router", tracer_provider=tp) as agent:
        otel_agents.record_decision("route", "researcher", ["researcher", "self"], 0.8)
        with caplog.at_level(logging.WARNING, logger="otel_agents._spans"):
            agent.record_decision("route", "self", ["researcher", "self"], 1.5)
            agent.record_decision("route", "self", None, float("nan"))
    first, second, third = by_name(exp)["invoke_agent router"].events
    assert first.name == sc.EVENT_AGENT_DECISION
    assert dict(first.attributes) == {
        sc.AGENT_DECISION_TYPE: "route",
        sc.AGENT_DECISION_CHOSEN: "researcher",
        sc.AGENT_DECISION_OPTIONS: ("researcher", "self"),
        sc.AGENT_DECISION_CONFIDENCE: 0.8,
    }
    assert sc.AGENT_DECISION_CONFIDENCE not in second.attributes
    assert sc.AGENT_DECISION_CONFIDENCE not in third.attributes
    assert sum("confidence" in r.getMessage() for r in caplog.records) == 2


def test_record_decision_without_a_recording_span_is_a_no_op() -> None:
    """Outside any span, record_decision does nothing and raises nothing."""
    otel_agents.record_decision("route", "x", ["x"], 0.5)


def test_tool_decorator_records_bound_arguments_hash_and_result(
    mem: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decorated tool hashes its bound call arguments and, with capture on, records them and the result."""
    tp, exp = mem
    monkeypatch.setenv(CAPTURE, "true")

    @otel_agents.execute_tool("add", tracer_provider=tp)
    def add(a: int, b: int = 0) -> int:
        return a + b

    assert add(1, b=2) == 3
    assert add(b=2, a=1) == 3
    assert add(5) == add(5, 0) == 5
    first, second, third, fourth = exp.get_finished_spans()
    assert third.attributes[sc.AGENT_TOOL_ARGS_HASH] == fourth.attributes[sc.AGENT_TOOL_ARGS_HASH]
    assert first.attributes[sc.AGENT_TOOL_ARGS_HASH] == otel_agents.tool_args_hash({"a": 1, "b": 2})
    assert first.attributes[sc.AGENT_TOOL_ARGS_HASH] == second.attributes[sc.AGENT_TOOL_ARGS_HASH]
    assert first.attributes[sc.GEN_AI_TOOL_CALL_RESULT] == "3"


def test_tool_args_hash_is_canonical_and_short() -> None:
    """The hash ignores key order and JSON formatting and differs for different arguments."""
    h = otel_agents.tool_args_hash({"b": 1, "a": [1, 2]})
    assert h == otel_agents.tool_args_hash('{"a": [1, 2], "b": 1}')
    assert h == otel_agents.tool_args_hash({"a": [1, 2], "b": 1})
    assert h != otel_agents.tool_args_hash({"a": [2, 1], "b": 1})
    assert len(h) == 16 and int(h, 16) >= 0
    assert otel_agents.tool_args_hash("not json") == otel_agents.tool_args_hash("not json")
    assert len(otel_agents.tool_args_hash({1: object()})) == 16


def test_broken_tracer_provider_never_breaks_the_application(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """If our span start fails, the user's code still runs and its result/exception are untouched."""

    class BrokenProvider(TracerProvider):
        def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("provider bug")

    bp = BrokenProvider()
    with caplog.at_level(logging.ERROR, logger="otel_agents._spans"):
        with otel_agents.invoke_agent("a", tracer_provider=bp) as span:
            span.set_attribute("k", "v")  # non-recording span: accepted, ignored
            ran = True

        @otel_agents.execute_tool("t", tracer_provider=bp)
        def tool() -> str:
            return "result"

        assert tool() == "result"
        with pytest.raises(KeyError), otel_agents.chat("m", tracer_provider=bp):
            raise KeyError("user")
    assert ran
    assert any("provider bug" in (r.exc_text or "") or r.exc_info for r in caplog.records)


def test_generator_functions_are_refused_at_decoration() -> None:
    """Decorating a generator function fails at decoration time with a clear TypeError."""
    with pytest.raises(TypeError, match="generator"):

        @otel_agents.execute_tool("gen")
        def gen() -> Any:
            yield 1


def test_plan_uses_explicit_agent_name(mem: Any) -> None:
    """plan(agent_name=...) names the span after that agent even outside invoke_agent."""
    tp, exp = mem
    with otel_agents.plan("solo", tracer_provider=tp):
        pass
    with otel_agents.plan(tracer_provider=tp):
        pass
    names = [s.name for s in exp.get_finished_spans()]
    assert names == ["plan solo", "plan"]
    assert exp.get_finished_spans()[0].attributes[sc.GEN_AI_AGENT_NAME] == "solo"


def test_global_tracer_provider_is_used_by_default() -> None:
    """Without tracer_provider, spans go to the global provider, even one set after otel_agents was imported."""
    script = textwrap.dedent(
        """
        import otel_agents  # imported before any provider exists
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        with otel_agents.invoke_agent("late"):
            pass
        print([s.name for s in exporter.get_finished_spans()])
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "['invoke_agent late']"


def test_one_scope_object_reused_across_threads_and_recursively(mem: Any) -> None:
    """A single scope template entered concurrently from threads and recursively keeps every block's span apart."""
    import threading

    tp, exp = mem
    scope = otel_agents.execute_tool("shared", tracer_provider=tp)
    barrier = threading.Barrier(4, timeout=10)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with scope as outer:
                barrier.wait()
                with scope as inner:
                    assert inner.span is not outer.span
                barrier.wait()
        except BaseException as exc:  # surfaced below; a thread cannot fail the test itself
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert not errors
    spans = exp.get_finished_spans()
    assert len(spans) == 8
    by_id = {s.context.span_id: s for s in spans}
    inner_spans = [s for s in spans if s.parent is not None and s.parent.span_id in by_id]
    assert len(inner_spans) == 4
    assert all(by_id[s.parent.span_id].end_time >= s.end_time for s in inner_spans)
