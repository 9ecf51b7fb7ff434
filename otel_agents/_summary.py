# SPDX-License-Identifier: Apache-2.0
"""Per-run summary of one agent run, computed from the spans that run produced.

``run_summary()`` marks the current context with a run; a span processor (attached once to the
tracer provider) adopts every span *started* under that context — children, grandchildren,
async tasks that inherited the context — and folds it into the run's totals when it ends.  The
figures are therefore exactly those of the exported spans: tokens and cost from inference spans
only (cost lives on inference spans so roll-ups never double count), LLM and tool calls by
``gen_ai.operation.name``, errors by span status, retries as calls repeated under the same parent
right after the same call failed.

Example::

    with run_summary("nightly-research") as run:
        run_agents()
    print(run.summary.cost_usd, run.summary.llm_calls, run.summary.peak_rss_bytes)
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import StatusCode

from otel_agents import semconv as sc
from otel_agents._metrics import _ForkSafe, _int, _normalizer, span_cost

__all__ = ["RunSummary", "RunTracker", "run_summary"]

_log = logging.getLogger(__name__)

_RUN_KEY = otel_context.create_key("otel_agents.run_summary")


@dataclasses.dataclass
class RunSummary:
    """Totals of one agent run.

    Attributes:
        name: the run's name.
        run_id: unique id (also the ``agent.run.id`` convention value).
        duration_s: wall-clock duration of the ``run_summary`` block.
        spans: spans of the run that ended inside the block.
        input_tokens / output_tokens / cache_read_tokens / cache_creation_tokens /
            reasoning_tokens: sums over inference spans.
        cost_usd: sum of ``gen_ai.usage.cost.amount`` (USD) over inference spans.
        unpriced_calls: inference spans that could not be priced.
        llm_calls: inference spans; tool_calls: ``execute_tool`` spans;
        agent_invocations: ``invoke_agent`` spans.
        errors: spans with status ERROR.
        retries: calls repeated under the same parent right after the same call failed.
        peak_rss_bytes: highest resident set size sampled during the run (psutil).
        peak_traced_bytes: tracemalloc peak when the run traced memory, else None.
    """

    name: str
    run_id: str
    duration_s: float = 0.0
    spans: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0
    unpriced_calls: int = 0
    llm_calls: int = 0
    tool_calls: int = 0
    agent_invocations: int = 0
    errors: int = 0
    retries: int = 0
    peak_rss_bytes: int = 0
    peak_traced_bytes: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The summary as a plain dict (for logs, JSON, span attributes)."""
        return dataclasses.asdict(self)


class RunTracker(_ForkSafe):
    """The live state of one run; ``summary`` is final once the block exits."""

    def __init__(self, name: str, *, pricebook: Any = None) -> None:
        super().__init__()
        self.summary = RunSummary(name=name, run_id=uuid.uuid4().hex)
        self._lock = threading.Lock()
        self._pricebook = pricebook
        self._normalize = _normalizer()
        # (parent span id, span name) of calls whose last attempt failed: a retry candidate.
        self._failed: set[tuple[int, str]] = set()
        self._closed = False
        self._proc: Any = None
        try:
            import psutil

            self._proc = psutil.Process()
        except Exception:
            self._proc = None
        self._sample_rss()

    def _after_fork(self) -> None:
        self._lock = threading.Lock()

    def _sample_rss(self) -> None:
        if self._proc is None:
            return
        try:
            rss = int(self._proc.memory_info().rss)
        except Exception:
            return
        with self._lock:
            if rss > self.summary.peak_rss_bytes:
                self.summary.peak_rss_bytes = rss

    def add_span(self, span: ReadableSpan) -> None:
        """Folds one finished span of this run into the totals."""
        attrs = self._normalize(span.attributes or {})
        op = attrs.get(sc.GEN_AI_OPERATION_NAME)
        failed = span.status.status_code is StatusCode.ERROR
        parent = span.parent.span_id if span.parent is not None else 0
        key = (parent, span.name)
        with self._lock:
            if self._closed:
                return
            s = self.summary
            s.spans += 1
            if failed:
                s.errors += 1
            if op in sc.INFERENCE_OPERATIONS or op == sc.OP_EXECUTE_TOOL:
                if key in self._failed:
                    s.retries += 1
                if failed:
                    self._failed.add(key)
                else:
                    self._failed.discard(key)
            if op in sc.INFERENCE_OPERATIONS:
                s.llm_calls += 1
                s.input_tokens += _int(attrs.get(sc.GEN_AI_USAGE_INPUT_TOKENS)) or 0
                s.output_tokens += _int(attrs.get(sc.GEN_AI_USAGE_OUTPUT_TOKENS)) or 0
                s.cache_read_tokens += _int(attrs.get(sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS)) or 0
                s.cache_creation_tokens += (
                    _int(attrs.get(sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS)) or 0
                )
                s.reasoning_tokens += _int(attrs.get(sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS)) or 0
                amount, unpriced = span_cost(attrs, self._pricebook)
                if amount is not None:
                    s.cost_usd += amount
                elif unpriced:
                    s.unpriced_calls += 1
            elif op == sc.OP_EXECUTE_TOOL:
                s.tool_calls += 1
            elif op == sc.OP_INVOKE_AGENT:
                s.agent_invocations += 1
        self._sample_rss()

    def close(self, duration_s: float, peak_traced: int | None) -> None:
        """Freezes the totals; spans ending later are not counted."""
        self._sample_rss()
        with self._lock:
            self.summary.duration_s = duration_s
            self.summary.peak_traced_bytes = peak_traced
            self._closed = True


class _RunSpanProcessor(SpanProcessor, _ForkSafe):
    """Adopts spans started under a run context and feeds them to that run when they end."""

    def __init__(self) -> None:
        _ForkSafe.__init__(self)
        self._lock = threading.Lock()
        self._live: dict[tuple[int, int], RunTracker] = {}

    def _after_fork(self) -> None:
        self._lock = threading.Lock()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        try:
            ctx = parent_context if parent_context is not None else otel_context.get_current()
            run = ctx.get(_RUN_KEY)
            if isinstance(run, RunTracker):
                sctx = span.get_span_context()
                with self._lock:
                    self._live[(sctx.trace_id, sctx.span_id)] = run
        except Exception:
            _log.debug("run summary: on_start failed", exc_info=True)

    def on_end(self, span: ReadableSpan) -> None:
        try:
            sctx = span.get_span_context()
            if sctx is None:
                return
            with self._lock:
                run = self._live.pop((sctx.trace_id, sctx.span_id), None)
            if run is not None:
                run.add_span(span)
        except Exception:
            _log.debug("run summary: on_end failed", exc_info=True)

    def forget(self, run: RunTracker) -> None:
        # Spans still open when the run ends would otherwise stay mapped forever.
        with self._lock:
            for key in [k for k, v in self._live.items() if v is run]:
                del self._live[key]

    def shutdown(self) -> None:
        with self._lock:
            self._live.clear()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


_processors_lock = threading.Lock()
_processors: dict[int, tuple[object, _RunSpanProcessor]] = {}


def _reinit_after_fork() -> None:
    global _processors_lock
    _processors_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)


def _processor_for(tracer_provider: trace.TracerProvider | None) -> _RunSpanProcessor | None:
    tp = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
    with _processors_lock:
        existing = _processors.get(id(tp))
        if existing is not None and existing[0] is tp:
            return existing[1]
        add = getattr(tp, "add_span_processor", None)
        if add is None:
            return None
        processor = _RunSpanProcessor()
        add(processor)
        _processors[id(tp)] = (tp, processor)
        return processor


@contextmanager
def run_summary(
    name: str = "run",
    *,
    tracer_provider: trace.TracerProvider | None = None,
    trace_memory: bool = False,
    pricebook: Any = None,
) -> Iterator[RunTracker]:
    """Collects one agent run's figures from the spans started inside the block.

    Args:
        name: the run's name.
        tracer_provider: provider whose spans are collected; the global one when None (must
            be an SDK provider; with a no-op provider only duration and memory are filled).
        trace_memory: also measure the Python-allocation peak with tracemalloc (slower).
        pricebook: optional ``PriceBook`` for inference spans that arrive unpriced.

    Yields:
        The :class:`RunTracker`; read ``.summary`` after the block.
    """
    run = RunTracker(name, pricebook=pricebook)
    processor: _RunSpanProcessor | None = None
    try:
        processor = _processor_for(tracer_provider)
    except Exception:
        _log.warning("otel-agents: run summary cannot see spans", exc_info=True)
    started_tm = False
    if trace_memory:
        try:
            import tracemalloc

            if tracemalloc.is_tracing():
                tracemalloc.reset_peak()
            else:
                tracemalloc.start()
                started_tm = True
        except Exception:
            trace_memory = False
    token = otel_context.attach(otel_context.set_value(_RUN_KEY, run))
    t0 = time.perf_counter()
    try:
        yield run
    finally:
        duration = time.perf_counter() - t0
        otel_context.detach(token)
        peak: int | None = None
        if trace_memory:
            try:
                import tracemalloc

                peak = tracemalloc.get_traced_memory()[1]
                if started_tm:
                    tracemalloc.stop()
            except Exception:
                peak = None
        run.close(duration, peak)
        if processor is not None:
            processor.forget(run)
