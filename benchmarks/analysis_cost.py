# SPDX-License-Identifier: Apache-2.0
"""Analysis CPU cost per span, against the receiver's own per-span cost measured in the same run.

In-process, on realistic 512-span requests (``benchmarks._load.build_request``: whole agent
traces, 8–12 attributes a span, unpriced chat spans the receiver prices), medians of
``--rounds`` rounds of the µs of CPU per span of:

* ``protobuf parse`` — ``ExportTraceServiceRequest.ParseFromString`` alone (the receiver does it
  once for validation; analysis reuses the parsed request);
* ``build_span_batch`` — the one decode into priced, normalized columns (and, shown apart, the
  same without a pricebook: what the decode costs before pricing unpriced inference spans);
* each processor stage's ``process_traces`` (default configs, real host: SQLite in a temp dir,
  a real pricebook, a Prometheus registry), and ``agent_analysis`` tick work (completing the
  traces after ``decision_wait``: critical path, graph, aggregates, detectors), timed apart.

The baseline is the receiver's own per-span CPU with forwarding (transport, validation, spool,
forwarder to an OTLP sink), measured with ``benchmarks.receiver_throughput`` in this run (its
``+forward`` and ``+analysis`` modes, one gRPC stream); the table gives the ratio
(decode + stages) / (+forward), and the whole-process delta (+analysis − +forward) / +forward.

    .venv/bin/python -m benchmarks.analysis_cost [--rounds 5] [--write]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client import CollectorRegistry

from benchmarks._load import build_request
from otel_agents._component import ApiHandler, Component, Finding, FindingListener
from otel_agents._configtypes import decode
from otel_agents._cost import PriceBook

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
BEGIN, END = "<!-- analysis_cost -->", "<!-- /analysis_cost -->"
SPANS = 512
_UNPRICED = "(build_span_batch without a pricebook: decode alone)"
_NOT_ADDED = ("protobuf parse", _UNPRICED)


class BenchHost:
    """A real ``Host``: temp data dir, shared pricebook, Prometheus registry, manual clock."""

    def __init__(self, data_dir: Path, pricebook: PriceBook) -> None:
        self._data_dir = data_dir
        self._pricebook = pricebook
        self.clock = time.time()
        self.registry = CollectorRegistry()
        self._listeners: list[FindingListener] = []
        self.routes: dict[str, ApiHandler] = {}
        self.logs = 0

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    @property
    def pricebook(self) -> PriceBook:
        return self._pricebook

    def now(self) -> float:
        return self.clock

    def emit_finding(self, finding: Finding) -> None:
        for listener in self._listeners:
            listener(finding)

    def subscribe_findings(self, listener: FindingListener) -> None:
        self._listeners.append(listener)

    def export_logs(self, request: ExportLogsServiceRequest) -> None:
        self.logs += 1

    def register_api(self, path: str, handler: ApiHandler) -> None:
        self.routes[path] = handler

    @property
    def metrics_registry(self) -> Any:
        return self.registry


def _cpu_us(fn: Callable[[], object]) -> float:
    t0 = time.process_time()
    fn()
    return (time.process_time() - t0) * 1e6


def _requests(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    t0 = time.time_ns()
    return [build_request(SPANS, rng, t0 + i * 1_000_000_000) for i in range(n)]


def in_process_round(payloads: list[bytes], pricebook: PriceBook, tmp: Path) -> dict[str, float]:
    """µs of CPU per span of each step over ``payloads`` (one round, fresh stages)."""
    from otel_agents.processors import FACTORIES, build_span_batch

    spans = SPANS * len(payloads)
    out: dict[str, float] = {}
    requests: list[ExportTraceServiceRequest] = []

    def parse() -> None:
        for p in payloads:
            r = ExportTraceServiceRequest()
            r.ParseFromString(p)
            requests.append(r)

    out["protobuf parse"] = _cpu_us(parse) / spans
    host = BenchHost(Path(tempfile.mkdtemp(dir=tmp)), pricebook)
    now = host.clock
    batches: list[Any] = []

    def decode_unpriced() -> None:
        for r in requests:
            build_span_batch(r, pricebook=None, received_at=now)

    def decode_all() -> None:
        for r in requests:
            batches.append(build_span_batch(r, pricebook=pricebook, received_at=now))

    # Shown apart, not added: the priced decode below is what the receiver runs.
    out[_UNPRICED] = _cpu_us(decode_unpriced) / spans
    out["build_span_batch"] = _cpu_us(decode_all) / spans
    stages: dict[str, Component] = {}
    for name, factory in FACTORIES.items():
        comp = factory.create(decode(factory.config_class, {}), name)
        comp.start(host)
        stages[name] = comp
    for name, comp in stages.items():

        def feed(c: Component = comp) -> None:
            for b in batches:
                c.process_traces(b)

        out[f"{name}: process_traces"] = _cpu_us(feed) / spans
    # Completion work: one tick after decision_wait completes every trace of the round.
    host.clock = now + 60.0
    for name, comp in stages.items():

        def tick(c: Component = comp) -> None:
            c.tick(host.clock)

        out[f"{name}: tick"] = _cpu_us(tick) / spans
    for comp in stages.values():
        comp.shutdown()
    return out


def receiver_rounds(rounds: int, seconds: float, requests: int) -> dict[str, list[float]]:
    """Per round, the receiver's CPU µs per span in ``+forward`` and ``+analysis`` modes."""
    from benchmarks import receiver_throughput as rt

    args = argparse.Namespace(spans=SPANS, requests=requests, seconds=seconds, settle=1.0)
    out: dict[str, list[float]] = {"+forward": [], "+analysis": []}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        with rt.sink(tmp) as sink_port:
            for rnd in range(rounds):
                for mode in out:
                    with rt.receiver_target(tmp, sink_port, mode) as target:
                        s = rt.measure(target, "grpc", 1, args)
                    out[mode].append(1e6 / s.spans_per_cpu_s)
                    print(
                        f"round {rnd + 1} {mode:<10} {out[mode][-1]:.2f} µs/span", file=sys.stderr
                    )
    return out


def render(
    steps: Mapping[str, list[float]], receiver: Mapping[str, list[float]], args: argparse.Namespace
) -> str:
    med = {k: statistics.median(v) for k, v in steps.items()}
    lines = [
        f"Analysis CPU per span — {SPANS}-span requests ({args.requests_per_round} a round), "
        f"medians of {args.rounds} rounds, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d')} "
        "(`python -m benchmarks.analysis_cost`)",
        "",
        "| step | µs / span (median) | min–max |",
        "|---|---:|---:|",
    ]
    for k, v in steps.items():
        lines.append(f"| {k} | {med[k]:.2f} | {min(v):.2f}–{max(v):.2f} |")
    analysis = sum(v for k, v in med.items() if k not in _NOT_ADDED)
    lines.append(f"| **decode + all stages** | **{analysis:.2f}** | |")
    if receiver.get("+forward"):
        fwd = statistics.median(receiver["+forward"])
        full = statistics.median(receiver["+analysis"])
        lines += [
            f"| receiver ingest+spool+forward (process CPU, gRPC, 1 stream) | {fwd:.2f} | "
            f"{min(receiver['+forward']):.2f}–{max(receiver['+forward']):.2f} |",
            f"| receiver +analysis (process CPU) | {full:.2f} | "
            f"{min(receiver['+analysis']):.2f}–{max(receiver['+analysis']):.2f} |",
            "",
            f"Ratio (decode + stages) / (ingest+spool+forward): **{analysis / fwd:.0%}** "
            "(budget ≤ 30%).  Whole-process delta (+analysis − +forward) / +forward: "
            f"{(full - fwd) / fwd:.0%}.",
        ]
    return "\n".join(lines)


def write_results(table: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    block = f"{BEGIN}\n{table}\n{END}"
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    RESULTS.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests-per-round", type=int, default=20)
    parser.add_argument("--receiver-seconds", type=float, default=6.0)
    parser.add_argument("--receiver-requests", type=int, default=300)
    parser.add_argument("--no-receiver", action="store_true", help="in-process steps only")
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    args.rounds = max(args.rounds, 1)
    pricebook = PriceBook()
    steps: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        warm = _requests(2, seed=99)  # imports, pricebook caches, numpy first calls
        in_process_round(warm, pricebook, tmp)
        for rnd in range(args.rounds):
            payloads = _requests(args.requests_per_round, seed=rnd)
            for k, v in in_process_round(payloads, pricebook, tmp).items():
                steps.setdefault(k, []).append(v)
            print(f"round {rnd + 1} in-process done", file=sys.stderr)
    receiver: dict[str, list[float]] = {}
    if not args.no_receiver:
        receiver = receiver_rounds(args.rounds, args.receiver_seconds, args.receiver_requests)
    table = render(steps, receiver, args)
    print(table)
    if args.write:
        write_results(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
