# SPDX-License-Identifier: Apache-2.0
"""SDK overhead: cost of otel-agents' processors per span, against the plain SDK in the same run.

    .venv/bin/python -m benchmarks.sdk_overhead            # 7 rounds x 2000 traces (~1 min)
    .venv/bin/python -m benchmarks.sdk_overhead --quick    # 5 rounds x 500 traces

Same application code in both configurations — an agent trace of 5 spans: ``invoke_agent``
(otel_agents API), a GenAI ``chat`` span with token usage, an OpenInference LLM span, a tool span
and a plain HTTP client span (the last four through the raw OpenTelemetry API, as third-party
instrumentations would create them):

* ``baseline`` — ``TracerProvider`` + ``BatchSpanProcessor(exporter)``
* ``otel-agents`` — ``TracerProvider`` + ``AgentIdentitySpanProcessor`` +
  ``EnrichingSpanProcessor(BatchSpanProcessor(exporter))`` (identity, normalization, pricing)
* ``identity only`` / ``enrichment only`` — each half alone, to show where the cost goes
* ``baseline, same attributes`` — the plain SDK with the application writing by hand what our
  processors add (identity on every span, canonical names, cost): the price of the extra
  telemetry itself, separated from the processors' own work

The exporter encodes every batch with the OTLP exporter's own encoder (``encode_spans`` +
``SerializeToString``) and drops the bytes, so "total" includes what an OTLP export costs in
CPU without the network. The queue is sized so no span is dropped.

Reported per span: application-thread CPU (``time.thread_time`` of the thread that creates the
spans), application wall time, and total process CPU (``time.process_time``: app thread plus
the batch processor's export thread) up to a completed ``force_flush``. Medians over rounds;
configurations alternate within each round; ratios are otel-agents / baseline from the same run.
Targets: app-thread ≤ 1.10×, total ≤ 1.10×.

A second table measures the enriched copy itself: the instance-dict copy the processor uses, the
public ``ReadableSpan`` constructor, and ``copy.copy``.
"""

from __future__ import annotations

import argparse
import copy
import gc
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

import otel_agents
from otel_agents import AgentIdentitySpanProcessor, EnrichingSpanProcessor
from otel_agents._processors import _enriched_copy, _EnrichedSpan

SPANS_PER_TRACE = 5
MAX_ROUND_SECONDS = 60.0


class EncodingExporter(SpanExporter):
    """Encodes like the OTLP exporters do, then drops the bytes."""

    def __init__(self) -> None:
        self.spans = 0
        self.bytes = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.bytes += len(encode_spans(spans).SerializeToString())
        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


CONFIGS = (
    "baseline",
    "otel-agents",
    "identity only",
    "enrichment only",
    "baseline, same attributes",
)


def make_provider(config: str, exporter: EncodingExporter) -> TracerProvider:
    provider = TracerProvider()
    batch = BatchSpanProcessor(
        exporter, max_queue_size=65536, max_export_batch_size=512, schedule_delay_millis=200
    )
    processors: list[SpanProcessor]
    processors: list[SpanProcessor] = {
        "baseline": [batch],
        "otel-agents": [AgentIdentitySpanProcessor(), EnrichingSpanProcessor(batch)],
        "identity only": [AgentIdentitySpanProcessor(), batch],
        "enrichment only": [EnrichingSpanProcessor(batch)],
        "baseline, same attributes": [batch],
    }[config]
    for p in processors:
        provider.add_span_processor(p)
    return provider


IDENTITY = {
    "gen_ai.agent.name": "planner",
    "gen_ai.agent.id": "agt-1",
    "gen_ai.conversation.id": "conv-1",
}


def _cost(amount: float) -> dict[str, str | float]:
    return {
        "gen_ai.usage.cost.amount": amount,
        "gen_ai.usage.cost.currency": "USD",
        "gen_ai.usage.cost.source": "local",
        "agent.cost.price_source": "genai-prices",
    }


def workload(provider: TracerProvider, traces: int, prewritten: bool = False) -> None:
    """The application. ``prewritten``: the app itself writes what our processors would add
    (identity, canonical names, cost), so the plain SDK exports the same attributes."""
    tracer = provider.get_tracer("app.instrumentation")
    for i in range(traces):
        with otel_agents.invoke_agent(
            "planner", agent_id="agt-1", conversation_id="conv-1", tracer_provider=provider
        ):
            inp, out = 1000 + i % 97, 200 + i % 13
            chat: dict[str, str | int | float] = {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.response.model": "gpt-4o-2024-08-06",
                "gen_ai.usage.input_tokens": inp,
                "gen_ai.usage.output_tokens": out,
                "gen_ai.usage.cache_read.input_tokens": 512,
            }
            prompt = 400 + i % 31
            llm: dict[str, str | int | float] = {
                "openinference.span.kind": "LLM",
                "llm.model_name": "claude-3-5-haiku",
                "llm.provider": "anthropic",
                "llm.token_count.prompt": prompt,
                "llm.token_count.completion": 40,
            }
            tool: dict[str, str | int | float] = {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "web_search",
            }
            http: dict[str, str | int | float] = {
                "http.request.method": "POST",
                "server.address": "api.example.com",
            }
            if prewritten:
                chat.update(IDENTITY)
                chat.update(_cost(((inp - 512) * 2.5 + 512 * 1.25 + out * 10.0) / 1e6))
                llm = {
                    "openinference.span.kind": "LLM",
                    "gen_ai.request.model": "claude-3-5-haiku",
                    "gen_ai.provider.name": "anthropic",
                    "gen_ai.usage.input_tokens": prompt,
                    "gen_ai.usage.output_tokens": 40,
                    "gen_ai.operation.name": "chat",
                    "agent.dialect": "openinference",
                    **IDENTITY,
                    **_cost((prompt * 0.8 + 40 * 4.0) / 1e6),
                }
                tool.update(IDENTITY)
                http.update(IDENTITY)
            with tracer.start_as_current_span("chat gpt-4o", kind=SpanKind.CLIENT, attributes=chat):
                pass
            with tracer.start_as_current_span("ChatCompletion", attributes=llm):
                pass
            with tracer.start_as_current_span("execute_tool web_search", attributes=tool):
                pass
            with tracer.start_as_current_span("POST", kind=SpanKind.CLIENT, attributes=http):
                pass


@dataclass
class Sample:
    app_cpu_us: float
    app_wall_us: float
    total_cpu_us: float


def run_once(config: str, traces: int) -> Sample:
    exporter = EncodingExporter()
    provider = make_provider(config, exporter)
    prewritten = config == "baseline, same attributes"
    workload(provider, 20, prewritten)  # warm caches (price lookups, tracer creation)
    provider.force_flush()
    exporter.spans = 0
    gc.collect()
    cpu0, wall0, thread0 = time.process_time(), time.perf_counter(), time.thread_time()
    workload(provider, traces, prewritten)
    thread1, wall1 = time.thread_time(), time.perf_counter()
    deadline = time.monotonic() + MAX_ROUND_SECONDS
    while not provider.force_flush(1000) and time.monotonic() < deadline:
        pass
    cpu1 = time.process_time()
    provider.shutdown()
    spans = traces * SPANS_PER_TRACE
    if exporter.spans != spans:
        raise RuntimeError(
            f"exported {exporter.spans} of {spans} spans: the benchmark dropped data"
        )
    return Sample(
        app_cpu_us=(thread1 - thread0) / spans * 1e6,
        app_wall_us=(wall1 - wall0) / spans * 1e6,
        total_cpu_us=(cpu1 - cpu0) / spans * 1e6,
    )


def per_call_us(fn: Callable[[], object], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def copy_costs(rounds: int) -> dict[str, float]:
    provider = TracerProvider()
    span = provider.get_tracer("x").start_span(
        "chat gpt-4o", attributes={f"k{i}": i for i in range(12)}
    )
    span.end()
    readable = span._readable_span()
    attrs = dict(readable.attributes or {})
    attrs["gen_ai.usage.cost.amount"] = 0.01

    def fast() -> object:
        return _enriched_copy(readable, attrs)

    def public() -> object:
        return _EnrichedSpan(readable, attrs)

    def shallow() -> object:
        c = copy.copy(readable)
        c._attributes = attrs
        return c

    cases = {
        "_enriched_copy (used: instance-dict copy)": fast,
        "_EnrichedSpan via the public ReadableSpan constructor": public,
        "copy.copy + set _attributes": shallow,
    }
    return {
        name: statistics.median(per_call_us(fn, 20000) for _ in range(rounds))
        for name, fn in cases.items()
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--traces", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="5 rounds x 500 traces")
    args = parser.parse_args(argv)
    rounds, traces = (5, 500) if args.quick else (max(5, args.rounds), args.traces)

    samples: dict[str, list[Sample]] = {c: [] for c in CONFIGS}
    for r in range(rounds):
        # Rotate the order so no configuration always runs first (or right after another).
        for k in range(len(CONFIGS)):
            config = CONFIGS[(r + k) % len(CONFIGS)]
            samples[config].append(run_once(config, traces))

    def med(config: str, field: str) -> float:
        return statistics.median(getattr(s, field) for s in samples[config])

    print(
        f"## SDK overhead per span ({rounds} rounds x {traces} traces x {SPANS_PER_TRACE} spans,"
        " medians)\n"
    )
    print(
        "| metric | baseline (SDK + BatchSpanProcessor) | otel-agents processors | ratio | target |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    fields = (
        ("app_cpu_us", "app-thread CPU µs/span", "≤ 1.10×"),
        ("app_wall_us", "app-thread wall µs/span", "—"),
        ("total_cpu_us", "total CPU µs/span (incl. OTLP encode)", "≤ 1.10×"),
    )
    for field, label, target in fields:
        base, ours = med("baseline", field), med("otel-agents", field)
        print(f"| {label} | {base:.2f} | {ours:.2f} | {ours / base:.3f}× | {target} |")
    print()
    print("### Where it goes (ratios to baseline, same run)\n")
    print("| configuration | app-thread CPU | total CPU |")
    print("| --- | ---: | ---: |")
    for config in CONFIGS[1:]:
        app = med(config, "app_cpu_us") / med("baseline", "app_cpu_us")
        total = med(config, "total_cpu_us") / med("baseline", "total_cpu_us")
        print(f"| {config} | {app:.3f}× | {total:.3f}× |")
    same = "baseline, same attributes"
    app = med("otel-agents", "app_cpu_us") / med(same, "app_cpu_us")
    total = med("otel-agents", "total_cpu_us") / med(same, "total_cpu_us")
    print(f"| otel-agents vs {same} (the processors' own work) | {app:.3f}× | {total:.3f}× |")
    print()
    print("## Enriched copy of a ReadableSpan (µs per copy, medians)\n")
    print("| method | µs |")
    print("| --- | ---: |")
    for name, us in copy_costs(rounds).items():
        print(f"| {name} | {us:.2f} |")


if __name__ == "__main__":
    main()
