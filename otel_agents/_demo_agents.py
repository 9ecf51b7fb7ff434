# SPDX-License-Identifier: Apache-2.0
"""The demo's two agents — a planner and a researcher — with tools and a scripted LLM.

Everything is offline and deterministic for a seed: the "LLM" is a script that draws token
counts from realistic ranges for real model names (so ``genai-prices`` prices them), and
latencies are simulated — LLM time-to-first-token plus output tokens at the model's typical
decoding speed, tool round-trips — then slept for real, compressed by ``time_scale``. Span
durations are therefore real, and realistic *relative to each other*, while a demo of dozens of
runs takes seconds.

The agents are instrumented only through the public otel-agents spans API (``invoke_workflow``,
``invoke_agent``, ``plan``, ``execute_tool``, ``chat``, ``record_decision``): the demo is also
the reference for how an application uses it.

The researcher runs in its own process behind A2A (:mod:`otel_agents._demo_a2a`); the planner
reaches it through a :class:`Delegate` callable.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry import _logs, metrics, trace
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.environment_variables import OTEL_BSP_SCHEDULE_DELAY
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import PROCESS_PID, SERVICE_NAME, SERVICE_NAMESPACE, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otel_agents import (
    PriceBook,
    chat,
    configure,
    execute_tool,
    invoke_agent,
    invoke_workflow,
    plan,
    record_decision,
)
from otel_agents import _demo_faults as faults_mod
from otel_agents import semconv as sc
from otel_agents._demo_faults import FaultSet

__all__ = [
    "MODELS",
    "PLANNER",
    "PLANNER_SERVICE",
    "RESEARCHER",
    "RESEARCHER_SERVICE",
    "Delegate",
    "ModelSpec",
    "Pace",
    "ResearchRequest",
    "ResearchResult",
    "RunOutcome",
    "RunSpec",
    "SearchBackendUnavailable",
    "Telemetry",
    "deterministic_uuid",
    "otlp_exporter",
    "run_planner",
    "run_researcher",
]

PLANNER = "planner"
RESEARCHER = "researcher"
WORKFLOW = "research_report"
PLANNER_SERVICE = "demo-planner"
RESEARCHER_SERVICE = "demo-researcher"
PLANNER_ID = "agent_planner_01"
RESEARCHER_ID = "agent_researcher_01"
PLANNER_DESCRIPTION = "Plans research reports and delegates the reading"
RESEARCHER_DESCRIPTION = "Finds and reads sources, returns a sourced summary"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """How the scripted LLM behaves for one model.

    Attributes:
        provider: ``gen_ai.provider.name`` value.
        response_model: the dated snapshot the provider answers with.
        ttft_s: typical time to first token, seconds.
        tokens_per_s: typical decoding speed.
    """

    provider: str
    response_model: str
    ttft_s: float
    tokens_per_s: float


#: Models the demo calls; all are known to ``genai-prices``.
MODELS: Mapping[str, ModelSpec] = {
    "gpt-4o": ModelSpec("openai", "gpt-4o-2024-08-06", 0.45, 85.0),
    "gpt-4o-mini": ModelSpec("openai", "gpt-4o-mini-2024-07-18", 0.30, 120.0),
    "claude-sonnet-4-5": ModelSpec("anthropic", "claude-sonnet-4-5-20250929", 0.90, 65.0),
    "claude-opus-4-1": ModelSpec("anthropic", "claude-opus-4-1-20250805", 1.40, 38.0),
}

# Simulated latency of one call is capped here: a very long generation would stream for minutes,
# and the demo's wall time must stay short even for the cost-runaway fault.
_LLM_MAX_LATENCY_S = 60.0

_TOPICS = (
    "state of EU battery-recycling regulation",
    "heat-pump adoption in cold climates",
    "open-source vector databases compared",
    "small modular reactor licensing timelines",
    "retrieval-augmented generation evaluation methods",
    "grid-scale sodium-ion storage pilots",
    "carbon-removal procurement by large buyers",
    "WebAssembly outside the browser in production",
)

_REPHRASINGS = ("overview", "recent", "statistics", "sources", "summary")

_SITES = (
    "https://en.wikipedia.org/wiki/",
    "https://arxiv.org/abs/",
    "https://www.iea.org/reports/",
    "https://github.com/topics/",
    "https://www.nature.com/articles/",
)


class Pace:
    """Sleeps simulated seconds, compressed by ``time_scale`` (0.005 → 200x faster).

    Args:
        time_scale: real seconds per simulated second, in (0, 1].
    """

    def __init__(self, time_scale: float) -> None:
        if not 0 < time_scale <= 1:
            raise ValueError(f"time_scale must be in (0, 1], got {time_scale!r}")
        self.time_scale = time_scale

    def wait(self, simulated_s: float) -> None:
        """Block for ``simulated_s * time_scale`` real seconds."""
        time.sleep(max(0.0, simulated_s) * self.time_scale)


class SearchBackendUnavailable(Exception):
    """The search tool's backend refused the query (the error-burst fault)."""


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """What identifies one demo run; derived identically in both processes.

    Attributes:
        seed: the demo's ``--seed``.
        run: 0-based run index.
        faults: faults active in this run.
    """

    seed: int
    run: int
    faults: FaultSet = dataclasses.field(default_factory=FaultSet)

    def rng(self, stream: str) -> random.Random:
        """An independent, deterministic random stream for one agent/purpose of this run."""
        # str seeds are hashed with SHA-512 by random.seed: stable across processes and runs
        return random.Random(f"otel-agents-demo:{self.seed}:{self.run}:{stream}")

    def topic(self) -> str:
        """The research question of this run."""
        return self.rng("topic").choice(_TOPICS)

    def conversation_id(self) -> str:
        """A2A ``contextId`` / ``gen_ai.conversation.id`` of the run."""
        return deterministic_uuid(self.rng("conversation"))


@dataclasses.dataclass(frozen=True)
class ResearchRequest:
    """What the planner asks the researcher (the A2A message, decoded).

    Attributes:
        spec: the run.
        question: the research question.
    """

    spec: RunSpec
    question: str


@dataclasses.dataclass(frozen=True)
class ResearchResult:
    """What the researcher answers (the A2A task artifact, decoded).

    Attributes:
        summary: the findings text.
        sources: URLs read.
    """

    summary: str
    sources: tuple[str, ...]


Delegate = Callable[[ResearchRequest], ResearchResult]
"""Sends a research request to the researcher agent (over A2A in the demo)."""


def deterministic_uuid(rng: random.Random) -> str:
    """A version-4-shaped UUID drawn from ``rng`` (so ids repeat for a seed)."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _llm(
    pace: Pace,
    rng: random.Random,
    model: str,
    *,
    input_tokens: int,
    output_tokens: int,
    cache_read_tokens: int = 0,
    decision: tuple[str, str, list[str]] | None = None,
    confidence: tuple[float, float] = (0.5, 1.0),
) -> None:
    """One scripted chat completion, instrumented as an inference span.

    With ``decision`` = ``(decision_type, chosen, options)`` the model's answer is a decision:
    it is recorded after the call, on the enclosing span, with a confidence drawn from the
    ``confidence`` range (the model states it in its answer).
    """
    spec = MODELS[model]
    with chat(model, provider=spec.provider) as llm:
        jitter = rng.uniform(0.85, 1.2)
        pace.wait(
            min(_LLM_MAX_LATENCY_S, (spec.ttft_s + output_tokens / spec.tokens_per_s) * jitter)
        )
        llm.record_usage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=cache_read_tokens,
        )
        llm.set_response_model(spec.response_model)
    if decision is not None:
        decision_type, chosen, options = decision
        record_decision(
            decision_type=decision_type,
            chosen=chosen,
            options=options,
            confidence=round(rng.uniform(*confidence), 2),
        )


# --------------------------------------------------------------------------------------------
# Researcher (runs in its own process, behind A2A)
# --------------------------------------------------------------------------------------------
def _web_search(pace: Pace, rng: random.Random, query: str, *, fail: bool) -> list[str]:
    with execute_tool("web_search", call_id=_call_id(rng), arguments={"query": query}) as tool:
        pace.wait(rng.uniform(0.6, 1.4) if not fail else rng.uniform(2.5, 3.5))
        if fail:
            # the backend times out behind a gateway: the span records the exception type
            raise SearchBackendUnavailable("search backend returned 503 Service Unavailable")
        slug = query.replace(" ", "_")
        urls = [f"{site}{slug}-{rng.randrange(1000, 9999)}" for site in rng.sample(_SITES, 3)]
        tool.set_result({"urls": urls})
        return urls


def _fetch_page(pace: Pace, rng: random.Random, url: str, *, slow: bool = False) -> int:
    with execute_tool("fetch_page", call_id=_call_id(rng), arguments={"url": url}) as tool:
        seconds = rng.uniform(0.3, 1.6)
        pace.wait(faults_mod.SLOW_TOOL_SECONDS if slow else seconds)
        page_tokens = rng.randint(1800, 3600)
        tool.set_result({"url": url, "tokens": page_tokens})
        return page_tokens


def _summarize(pace: Pace, rng: random.Random, url: str, page_tokens: int) -> None:
    with execute_tool("summarize", call_id=_call_id(rng), arguments={"url": url}) as tool:
        _llm(
            pace,
            rng,
            "gpt-4o-mini",
            input_tokens=page_tokens + 220,
            output_tokens=rng.randint(180, 320),
        )
        tool.set_result({"url": url})


def _call_id(rng: random.Random) -> str:
    return "call_" + format(rng.getrandbits(96), "024x")


def run_researcher(request: ResearchRequest, pace: Pace) -> ResearchResult:
    """The researcher agent: search, read, summarise, synthesise.

    Must run inside the A2A SERVER span, so its spans join the planner's trace.
    """
    spec, active = request.spec, request.spec.faults
    rng = spec.rng(RESEARCHER)
    with invoke_agent(
        RESEARCHER,
        agent_id=RESEARCHER_ID,
        description=RESEARCHER_DESCRIPTION,
        conversation_id=spec.conversation_id(),
    ):
        _llm(
            pace,
            rng,
            "gpt-4o-mini",
            input_tokens=rng.randint(900, 1300),
            output_tokens=rng.randint(60, 140),
            decision=("tool_choice", "web_search", ["web_search", "answer_from_memory"]),
            confidence=(0.72, 0.95),
        )

        urls: list[str] = []
        queries = [request.question, f"{request.question} latest data"]
        for index, query in enumerate(queries):
            failing = faults_mod.ERROR_BURST in active and index == 0
            attempts = faults_mod.ERROR_BURST_FAILURES if failing else 1
            for attempt in range(attempts):
                # after a failure the agent rephrases the query (arguments differ each time, so
                # a burst of errors is not also a loop of identical calls)
                attempt_query = query if attempt == 0 else f"{query} ({_REPHRASINGS[attempt % 5]})"
                try:
                    urls += _web_search(pace, rng, attempt_query, fail=failing)
                    break
                except SearchBackendUnavailable:
                    if attempt == attempts - 1:
                        record_decision(
                            decision_type="fallback",
                            chosen="cached_index",
                            options=["retry_search", "cached_index", "give_up"],
                            confidence=0.6,
                        )
                        urls.append(f"{_SITES[0]}{query.replace(' ', '_')}-cached")
                    else:
                        pace.wait(0.5 * 2**attempt)  # client back-off between retries

        pages: list[tuple[str, int]] = []
        for index, url in enumerate(urls[:3]):
            slow = faults_mod.SLOW_TOOL in active and index == 0
            pages.append((url, _fetch_page(pace, rng, url, slow=slow)))
        if faults_mod.TOOL_LOOP in active:
            # the agent keeps re-reading the same page, convinced the next read will differ
            stuck = urls[0]
            for _ in range(faults_mod.TOOL_LOOP_REPEATS):
                _fetch_page(pace, rng, stuck)

        for url, page_tokens in pages:
            _summarize(pace, rng, url, page_tokens)

        synth_input = rng.randint(2600, 4200)
        if faults_mod.TOKEN_SPIKE in active:
            synth_input *= faults_mod.TOKEN_SPIKE_FACTOR  # raw pages pasted into the prompt
        _llm(
            pace,
            rng,
            faults_mod.TOKEN_SPIKE_MODEL,
            input_tokens=synth_input,
            output_tokens=rng.randint(450, 800),
            cache_read_tokens=1024,
            decision=("stop", "answer", ["answer", "search_more"]),
            confidence=(0.7, 0.92),
        )
        sources = tuple(url for url, _ in pages)
        return ResearchResult(
            summary=f"{len(sources)} sources on {request.question}", sources=sources
        )


# --------------------------------------------------------------------------------------------
# Planner (the demo's main process)
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RunOutcome:
    """What one planner run produced.

    Attributes:
        trace_id: hex id of the run's trace.
        research: the researcher's answer; ``None`` when the delegation failed.
    """

    trace_id: str
    research: ResearchResult | None


def run_planner(spec: RunSpec, pace: Pace, delegate: Delegate) -> RunOutcome:
    """One demo run: the planner plans, delegates research over A2A, and writes the report.

    A failed delegation does not end the run: the planner decides to answer from its own
    knowledge (the failure is on the A2A CLIENT span), as a production agent would.
    """
    rng = spec.rng(PLANNER)
    active = spec.faults
    question = spec.topic()
    with (
        invoke_workflow(WORKFLOW),
        invoke_agent(
            PLANNER,
            agent_id=PLANNER_ID,
            description=PLANNER_DESCRIPTION,
            conversation_id=spec.conversation_id(),
        ),
    ):
        trace_id = format(trace.get_current_span().get_span_context().trace_id, "032x")
        with plan(agent_name=PLANNER):
            _llm(
                pace,
                rng,
                "gpt-4o",
                input_tokens=rng.randint(1500, 2200),
                output_tokens=rng.randint(250, 450),
                decision=("route", RESEARCHER, [RESEARCHER, "answer_directly"]),
                confidence=(0.75, 0.97),
            )
        with execute_tool(
            "recall_memory", call_id=_call_id(rng), arguments={"topic": question}
        ) as tool:
            pace.wait(rng.uniform(0.05, 0.15))
            tool.set_result({"notes": rng.randint(0, 4)})

        research: ResearchResult | None
        try:
            research = delegate(ResearchRequest(spec=spec, question=question))
        except Exception:
            research = None
            record_decision(
                decision_type="fallback",
                chosen="answer_directly",
                options=["retry_delegation", "answer_directly"],
                confidence=0.4,
            )

        if faults_mod.COST_RUNAWAY in active:
            # the writer escalates to the most capable model and keeps rewriting at full length
            for revision in range(faults_mod.COST_RUNAWAY_REVISIONS):
                last = revision == faults_mod.COST_RUNAWAY_REVISIONS - 1
                _llm(
                    pace,
                    rng,
                    faults_mod.COST_RUNAWAY_MODEL,
                    input_tokens=rng.randint(18_000, 24_000),
                    output_tokens=faults_mod.COST_RUNAWAY_OUTPUT_TOKENS + rng.randint(0, 2000),
                    decision=("review", "deliver" if last else "revise", ["deliver", "revise"]),
                    confidence=(0.3, 0.5),
                )
        else:
            _llm(
                pace,
                rng,
                "claude-sonnet-4-5",
                input_tokens=rng.randint(2500, 4000),
                output_tokens=rng.randint(700, 1100),
                decision=("review", "deliver", ["deliver", "revise"]),
                confidence=(0.8, 0.95),
            )
        return RunOutcome(trace_id=trace_id, research=research)


# --------------------------------------------------------------------------------------------
# Telemetry of one demo process
# --------------------------------------------------------------------------------------------
#: ``(signal, protocol)`` → the SDK exporter class, by module path (imported on use).
_OTLP_EXPORTERS: Mapping[tuple[str, str], tuple[str, str]] = {
    ("traces", "grpc"): ("opentelemetry.exporter.otlp.proto.grpc.trace_exporter", "OTLPSpanExporter"),
    ("metrics", "grpc"): ("opentelemetry.exporter.otlp.proto.grpc.metric_exporter", "OTLPMetricExporter"),
    ("logs", "grpc"): ("opentelemetry.exporter.otlp.proto.grpc._log_exporter", "OTLPLogExporter"),
    ("traces", "http/protobuf"): ("opentelemetry.exporter.otlp.proto.http.trace_exporter", "OTLPSpanExporter"),
    ("metrics", "http/protobuf"): ("opentelemetry.exporter.otlp.proto.http.metric_exporter", "OTLPMetricExporter"),
    ("logs", "http/protobuf"): ("opentelemetry.exporter.otlp.proto.http._log_exporter", "OTLPLogExporter"),
}  # fmt: skip


def otlp_exporter(signal: str, endpoint: str, protocol: str) -> Any:
    """The SDK's OTLP exporter of ``signal`` (``traces``, ``metrics``, ``logs``) for ``protocol``.

    ``endpoint`` is the base URL, as in ``OTEL_EXPORTER_OTLP_ENDPOINT``: gRPC takes it as it
    is (the scheme decides TLS), HTTP appends the signal path ``/v1/<signal>``, as the OTLP
    exporter specification says.

    Raises:
        ValueError: an unknown signal or protocol.
    """
    try:
        module, name = _OTLP_EXPORTERS[(signal, protocol)]
    except KeyError:
        raise ValueError(f"no OTLP exporter for {signal} over {protocol!r}") from None
    exporter_class = getattr(importlib.import_module(module), name)
    if protocol == "grpc":
        return exporter_class(endpoint=endpoint)
    return exporter_class(endpoint=f"{endpoint.rstrip('/')}/v1/{signal}")


class _CountingExporter(SpanExporter):
    """Passes spans to the OTLP exporter and counts the ones it acknowledged."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self.exported = 0
        self.failed = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self._inner.export(spans)
        with self._lock:
            if result is SpanExportResult.SUCCESS:
                self.exported += len(spans)
            else:
                self.failed += len(spans)
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class Telemetry:
    """The tracer, meter and logger providers of one demo process, exporting OTLP, global.

    :func:`otel_agents.configure` wires the spans: agent identity on start, a normalized and
    priced copy to the OTLP span exporter and to the span-derived GenAI metrics
    (``gen_ai.client.token.usage``, ``gen_ai.client.operation.duration``, cost...) — and the
    metrics, with the process metrics, are exported over OTLP every ``metric_interval_s``.

    Agent events (``agent.task.*``, ``agent.a2a.*``) go out as OTLP log records.

    Attributes:
        provider: the SDK tracer provider.
        meter_provider: the SDK meter provider.
        logger_provider: the SDK logger provider.
    """

    def __init__(
        self,
        provider: TracerProvider,
        meter_provider: MeterProvider,
        logger_provider: LoggerProvider,
        counter: _CountingExporter,
    ) -> None:
        self.provider = provider
        self.meter_provider = meter_provider
        self.logger_provider = logger_provider
        self._counter = counter

    @classmethod
    def start(
        cls,
        *,
        service_name: str,
        endpoint: str,
        protocol: str,
        main_agent: str,
        metric_interval_s: float = 2.0,
    ) -> Telemetry:
        """Build both providers and set them global.

        The resource names the service, the process (``process.pid``: the two demo processes
        differ) and the process's main agent (``gen_ai.main_agent.*``, PLANNER or RESEARCHER).
        """
        agent_id, description = {
            PLANNER: (PLANNER_ID, PLANNER_DESCRIPTION),
            RESEARCHER: (RESEARCHER_ID, RESEARCHER_DESCRIPTION),
        }[main_agent]
        resource = Resource.create(
            {
                SERVICE_NAME: service_name,
                SERVICE_NAMESPACE: "otel-agents-demo",
                PROCESS_PID: os.getpid(),
                sc.GEN_AI_MAIN_AGENT_NAME: main_agent,
                sc.GEN_AI_MAIN_AGENT_ID: agent_id,
                sc.GEN_AI_MAIN_AGENT_DESCRIPTION: description,
            }
        )
        reader = PeriodicExportingMetricReader(
            otlp_exporter("metrics", endpoint, protocol),
            export_interval_millis=metric_interval_s * 1000,
        )
        meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
        logger_provider = LoggerProvider(resource=resource)
        logger_provider.add_log_record_processor(
            BatchLogRecordProcessor(
                otlp_exporter("logs", endpoint, protocol), schedule_delay_millis=500
            )
        )
        provider = TracerProvider(resource=resource)
        counter = _CountingExporter(otlp_exporter("traces", endpoint, protocol))
        # Export every half second (unless the user chose otherwise): the receiver's analysis
        # counts in 1 s intervals of arrival time, so spans should arrive as a stream.
        os.environ.setdefault(OTEL_BSP_SCHEDULE_DELAY, "500")
        # The otel-agents set-up, as an application does it: agent identity on every span, and
        # normalized, priced copies to the exporter and to the span-derived metrics.
        configure(
            tracer_provider=provider,
            span_exporter=counter,
            meter_provider=meter_provider,
            logger_provider=logger_provider,
        )
        # The first price lookup loads genai-prices' tables (about half a second); do it now so
        # it does not land inside the first run's spans as a fake slowdown.
        PriceBook().price(model="gpt-4o", provider="openai", input_tokens=1, output_tokens=1)
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(meter_provider)
        _logs.set_logger_provider(logger_provider)
        return cls(provider, meter_provider, logger_provider, counter)

    @property
    def spans_exported(self) -> int:
        """Spans the endpoint acknowledged so far."""
        return self._counter.exported

    @property
    def spans_failed(self) -> int:
        """Spans the exporter gave up on."""
        return self._counter.failed

    def shutdown(self) -> int:
        """Flush and shut down; returns the number of spans the endpoint acknowledged."""
        self.provider.force_flush(30_000)
        self.provider.shutdown()
        self.meter_provider.shutdown()  # a last collection and export
        self.logger_provider.shutdown()
        return self._counter.exported
