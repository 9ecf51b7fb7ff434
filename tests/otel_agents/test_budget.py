# SPDX-License-Identifier: Apache-2.0
"""Budget guard policies: warn, callback and refuse, fed by spans or by the metric reader."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from otel_agents import semconv as sc
from otel_agents._budget import (
    EACH_AGENT,
    Budget,
    BudgetGuard,
    BudgetMetricReader,
    BudgetStatus,
    check_budget,
    install_budget_guard,
    unregister_guard,
)
from otel_agents._errors import BudgetExceededError
from otel_agents._metrics import AgentMetricsProcessor
from tests.otel_agents._sdk_fixtures import fork_child, wait_child


def _llm(tp: TracerProvider, agent: str, cost: float, tokens: int = 100) -> None:
    attrs: dict[str, Any] = {
        sc.GEN_AI_OPERATION_NAME: sc.OP_CHAT,
        sc.GEN_AI_REQUEST_MODEL: "gpt-4o",
        sc.GEN_AI_AGENT_NAME: agent,
        sc.GEN_AI_USAGE_INPUT_TOKENS: tokens,
        sc.GEN_AI_USAGE_OUTPUT_TOKENS: 0,
        sc.GEN_AI_USAGE_COST_AMOUNT: cost,
        sc.GEN_AI_USAGE_COST_CURRENCY: "USD",
    }
    with tp.get_tracer("t").start_as_current_span(
        "chat gpt-4o", kind=SpanKind.CLIENT, attributes=attrs
    ):
        pass


@pytest.fixture
def tp() -> Iterator[TracerProvider]:
    provider = TracerProvider()
    yield provider
    provider.shutdown()


def test_refuse_policy_raises_from_check(tp: TracerProvider) -> None:
    """Past a refuse budget, check_budget raises for that agent only; reset clears it."""
    guard = install_budget_guard(
        [Budget(1.0, agent="researcher", policy="refuse")], tracer_provider=tp
    )
    try:
        for _ in range(3):
            check_budget("researcher")  # under budget: no error
            _llm(tp, "researcher", 0.4)
        assert guard.spent("researcher") == pytest.approx(1.2)
        with pytest.raises(BudgetExceededError, match="researcher"):
            check_budget("researcher")
        check_budget("writer")  # other agents are not covered by this budget
        guard.reset()
        check_budget("researcher")
    finally:
        unregister_guard(guard)


def test_warn_policy_logs_once(tp: TracerProvider, caplog: pytest.LogCaptureFixture) -> None:
    """A warn budget over all agents logs one warning at the crossing and never raises."""
    guard = install_budget_guard([Budget(0.5, policy="warn")], tracer_provider=tp)
    try:
        with caplog.at_level(logging.WARNING, logger="otel_agents._budget"):
            for agent in ("a", "b", "a", "b"):
                _llm(tp, agent, 0.2)
            check_budget("a")
        warnings = [r for r in caplog.records if "exceeded" in r.getMessage()]
        assert len(warnings) == 1
        assert "0.6" in warnings[0].getMessage()
    finally:
        unregister_guard(guard)


def test_callback_policy_per_agent_tokens(tp: TracerProvider) -> None:
    """An EACH_AGENT token budget calls back once per agent that crosses it and emits one
    agent.budget.exceeded record per crossing."""
    seen: list[BudgetStatus] = []
    exporter = InMemoryLogRecordExporter()
    logs = LoggerProvider()
    logs.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    guard = BudgetGuard(
        [Budget(250, kind="tokens", agent=EACH_AGENT, policy="callback", callback=seen.append)],
        logger_provider=logs,
    )
    tp.add_span_processor(guard)
    for agent in ("a", "a", "b", "a", "b", "b"):
        _llm(tp, agent, 0.0, tokens=100)
    assert [(s.agent, s.spent) for s in seen] == [("a", 300.0), ("b", 300.0)]
    assert all(s.kind == "tokens" and s.limit == 250 for s in seen)
    records = [r.log_record for r in exporter.get_finished_logs()]
    assert [r.event_name for r in records] == [sc.EVENT_AGENT_BUDGET_EXCEEDED] * 2
    assert [dict(r.attributes or {})[sc.GEN_AI_AGENT_NAME] for r in records] == ["a", "b"]
    assert dict(records[0].attributes or {})[sc.AGENT_BUDGET_SPENT] == 300.0
    logs.shutdown()


def test_failing_callback_does_not_reach_app(tp: TracerProvider) -> None:
    """A callback that raises is logged, the span still ends normally."""

    calls: list[BudgetStatus] = []

    def bad(status: BudgetStatus) -> None:
        calls.append(status)
        raise RuntimeError("injected")

    tp.add_span_processor(BudgetGuard([Budget(0.0, policy="callback", callback=bad)]))
    _llm(tp, "a", 0.1)
    assert len(calls) == 1


def test_invalid_budget_rejected() -> None:
    """A callback policy without a callback is a configuration error."""
    with pytest.raises(ValueError, match="callback"):
        BudgetGuard([Budget(1.0, policy="callback")])


def test_metric_reader_feeds_guard(tp: TracerProvider) -> None:
    """With the MetricReader source, totals come from the cumulative agent.cost counter."""
    guard = BudgetGuard([Budget(1.0, agent="researcher", policy="refuse")])
    reader = BudgetMetricReader(guard, refresh_interval=0.0)
    mp = MeterProvider(metric_readers=[reader])
    tp.add_span_processor(AgentMetricsProcessor(mp))
    try:
        _llm(tp, "researcher", 0.7)
        guard.check("researcher")  # collects: 0.7 <= 1.0
        assert guard.spent("researcher") == pytest.approx(0.7)
        _llm(tp, "researcher", 0.7)
        with pytest.raises(BudgetExceededError):
            guard.check("researcher")
        assert guard.spent("researcher") == pytest.approx(1.4)  # cumulative, not double counted
        assert guard.spent(None, "tokens") == 200
    finally:
        mp.shutdown()


def test_forked_child_is_not_deadlocked_by_a_held_lock(tp: TracerProvider) -> None:
    """A guard lock held by another thread at fork() is fresh in the child, which can spend."""
    guard = BudgetGuard([Budget(1.0, policy="refuse", agent="a")])
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with guard._lock:
            holding.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    assert holding.wait(5)

    def child() -> bool:  # must not block on the lock the parent's thread holds
        guard.add("a", cost=2.0)
        try:
            guard.check("a")
        except BudgetExceededError:
            return True
        return False

    pid = fork_child(child)
    release.set()
    t.join(5)
    assert wait_child(pid) == 0


def test_failing_reader_collection_never_raises_from_check() -> None:
    """A collection that fails inside the budget reader is swallowed by check_budget."""
    guard = BudgetGuard([Budget(1.0, policy="refuse")])
    reader = BudgetMetricReader(guard, refresh_interval=0.0)
    mp = MeterProvider(metric_readers=[reader])

    calls: list[int] = []

    def broken_totals(cost: dict[str, float], tokens: dict[str, float]) -> None:
        calls.append(1)
        raise RuntimeError("injected")

    guard.set_totals = broken_totals  # type: ignore[method-assign]
    mp.get_meter("test").create_counter(sc.METRIC_AGENT_COST, unit="USD").add(2.0)
    try:
        guard.check("a")  # collects; the injected failure must not escape
        assert calls == [1]
    finally:
        mp.shutdown()


def test_inference_entry_refuses_when_wired(tp: TracerProvider) -> None:
    """The spans API's inference() refuses the next LLM call once a refuse budget is exceeded."""
    from otel_agents import _spans

    guard = install_budget_guard([Budget(0.5, agent="writer", policy="refuse")], tracer_provider=tp)
    try:
        with _spans.invoke_agent("writer", tracer_provider=tp):
            _llm(tp, "writer", 0.6)
            with (
                pytest.raises(BudgetExceededError),
                _spans.inference("gpt-4o", provider="openai", tracer_provider=tp),
            ):
                pass
    finally:
        unregister_guard(guard)


def _openinference_llm(tp: TracerProvider, prompt: int) -> None:
    attrs = {
        "openinference.span.kind": "LLM",
        "llm.model_name": "gpt-4o",
        "llm.provider": "openai",
        "llm.token_count.prompt": prompt,
        "llm.token_count.completion": 0,
        sc.GEN_AI_AGENT_NAME: "writer",
    }
    with tp.get_tracer("openinference.instrumentation.openai").start_as_current_span(
        "ChatCompletion", attributes=attrs
    ):
        pass


def test_spans_priced_off_thread_are_accounted_before_a_refusal_check(tp: TracerProvider) -> None:
    """A span the guard must normalize and price is queued, yet check_budget right after it sees its cost."""
    from otel_agents import PriceBook

    guard = install_budget_guard(
        [Budget(0.002, agent="writer", policy="refuse")], tracer_provider=tp, pricebook=PriceBook()
    )
    try:
        _openinference_llm(tp, 400)  # 400 x 2.5e-6 = 0.001 USD
        check_budget("writer")
        _openinference_llm(tp, 800)  # +0.002 USD: over the limit
        with pytest.raises(BudgetExceededError, match="writer"):
            check_budget("writer")
        assert guard.spent("writer") == pytest.approx(0.003)
        assert guard.spent("writer", "tokens") == 1200
    finally:
        unregister_guard(guard)


def test_warn_for_queued_spans_fires_without_any_check(
    tp: TracerProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """Queued spans are accounted by the worker on its own: a warn budget fires with no check_budget call."""
    from otel_agents import PriceBook

    guard = BudgetGuard([Budget(0.0005, policy="warn")], pricebook=PriceBook())
    tp.add_span_processor(guard)
    with caplog.at_level(logging.WARNING, logger="otel_agents._budget"):
        _openinference_llm(tp, 400)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and not any(
            "exceeded" in r.getMessage() for r in caplog.records
        ):
            time.sleep(0.01)
    assert sum("exceeded" in r.getMessage() for r in caplog.records) == 1
    guard.shutdown()


def test_guard_fed_from_the_metrics_processor_batches(tp: TracerProvider) -> None:
    """A guard fed by the metrics processor sums each delivered batch per agent, priced by the enricher, without a reader."""
    from otel_agents import EnrichingSpanProcessor

    guard = BudgetGuard(
        [
            Budget(1.0, agent=EACH_AGENT, policy="refuse"),
            Budget(1_000_000, kind="tokens", policy="warn"),
        ]
    )
    mp = MeterProvider()
    processor = AgentMetricsProcessor(mp)
    assert guard.feed_from(processor) is guard
    tp.add_span_processor(EnrichingSpanProcessor(processor))
    try:
        for _ in range(3):
            _llm(tp, "researcher", 0.3, tokens=10)
        _llm(tp, "writer", 0.9, tokens=5)
        with tp.get_tracer("t").start_as_current_span(
            "chat gpt-4o",
            attributes={
                sc.GEN_AI_OPERATION_NAME: sc.OP_CHAT,
                sc.GEN_AI_REQUEST_MODEL: "gpt-4o",
                sc.GEN_AI_USAGE_INPUT_TOKENS: 1000,
                sc.GEN_AI_USAGE_OUTPUT_TOKENS: 100,
            },
        ):
            pass  # no agent, no cost attribute: the enricher prices it before the guard sees it
        guard.check("researcher")  # 0.9 at most, delivered or not: below the limit
        assert tp.force_flush(5000)
        assert guard.spent("researcher") == pytest.approx(0.9)
        assert guard.spent("writer") == pytest.approx(0.9)
        assert guard.spent() == pytest.approx(1.8 + 1000 * 2.5e-6 + 100 * 10e-6)
        assert guard.spent(None, "tokens") == 3 * 10 + 5 + 1100
        guard.check("researcher")  # 0.9 <= 1.0 each
        _llm(tp, "researcher", 0.2)
        assert tp.force_flush(5000)
        with pytest.raises(BudgetExceededError):
            guard.check("researcher")
        guard.check("writer")  # the limit applies per agent
    finally:
        mp.shutdown()
