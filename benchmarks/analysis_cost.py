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

* ``sampling skip`` — ``build_span_batch_from_payload`` at a 1/1024 analysis sample, from the
  serialized request as the receiver runs it: what a span outside the sample costs (a reduced
  parse that reads trace IDs only; only sampled spans are parsed in full).

The baseline is the receiver's own per-span CPU with forwarding (transport, validation, spool,
forwarder to an OTLP sink), measured with ``benchmarks.receiver_throughput``'s load client in
this run (one gRPC stream): ``+forward`` (no analysis), ``+analysis`` with the default adaptive
analysis CPU budget (``analysis.sampling: adaptive``, ``cpu_budget: 0.3``), at a fixed 1/1024
sample (the whole-process floor of offering spans to analysis) and with sampling off (every trace
analysed).  The table gives the in-process ratio (decode + stages) / (+forward),
the whole-process deltas (+analysis − +forward) / +forward for both, the analysed fraction at
this load (1 − unsampled / accepted spans, from the receiver's /metrics) and the CPU per
analysed span (sampling off − +forward).

    .venv/bin/python -m benchmarks.analysis_cost [--rounds 5] [--write]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
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
_SKIP = "(sampling skip: build_span_batch_from_payload at a 1/1024 sample, per span offered)"
_NOT_ADDED = ("protobuf parse", _UNPRICED, _SKIP)


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
    from otel_agents.processors._batch import build_span_batch_from_payload

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
    from otel_agents.processors._sampling import probability_to_threshold

    skip_t = probability_to_threshold(1 / 1024)

    def decode_skipping() -> None:
        for p in payloads:
            build_span_batch_from_payload(p, pricebook=pricebook, received_at=now, threshold=skip_t)

    out[_SKIP] = _cpu_us(decode_skipping) / spans
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


_FWD, _ADAPTIVE, _OFF, _FRACTION = "+forward", "+analysis", "+analysis, sampling off", "fraction"
_FLOOR = "+analysis, 1/1024 sample"


@contextlib.contextmanager
def _analysing_receiver(tmp: Path, sink_port: int, sampling: str) -> Iterator[tuple[Any, int]]:
    """Our receiver forwarding to the sink with analysis on; yields (target, admin port)."""
    from benchmarks import receiver_throughput as rt

    data = tmp / f"data-analysis-{sampling}"
    ports_file = tmp / f"ports-analysis-{sampling}.json"
    ports_file.unlink(missing_ok=True)
    settings = f"{{endpoint: 'grpc://127.0.0.1:{sink_port}', compression: gzip}}"
    args = [
        rt.PY, "-m", "otel_agents._cli", "serve",
        "--grpc-endpoint", "127.0.0.1:0", "--http-endpoint", "127.0.0.1:0",
        "--admin-endpoint", "127.0.0.1:0", "--data-dir", str(data),
        "--set", f"exporters.otlp/sink={settings}",
        "--set", f"analysis.sampling={sampling}",
        "--ports-file", str(ports_file),
    ]  # fmt: skip
    log = (tmp / f"serve-analysis-{sampling}.log").open("wb")
    proc = subprocess.Popen(args, cwd=tmp, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 90
        while not ports_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"receiver (sampling {sampling}) did not start")
            time.sleep(0.05)
        ports = json.loads(ports_file.read_text())
        yield rt.Target(f"+analysis {sampling}", proc, ports["grpc"], ports["http"]), ports["admin"]
    finally:
        rt._stop(proc)
        log.close()


def _scrape_sum(admin_port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=30) as r:
        text = r.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " ")
    )


def receiver_rounds(rounds: int, seconds: float, requests: int) -> dict[str, list[float]]:
    """Per round, the receiver's CPU µs per span with forwarding only, with analysis under the
    default adaptive budget, and with analysis sampling off; and the analysed fraction."""
    from benchmarks import receiver_throughput as rt

    args = argparse.Namespace(spans=SPANS, requests=requests, seconds=seconds, settle=1.0)
    out: dict[str, list[float]] = {_FWD: [], _ADAPTIVE: [], _FLOOR: [], _OFF: [], _FRACTION: []}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        with rt.sink(tmp) as sink_port:
            for rnd in range(rounds):
                with rt.receiver_target(tmp, sink_port, _FWD) as target:
                    s = rt.measure(target, "grpc", 1, args)
                out[_FWD].append(1e6 / s.spans_per_cpu_s)
                for mode, sampling in (
                    (_ADAPTIVE, "adaptive"),
                    (_FLOOR, "0.0009765625"),
                    (_OFF, "off"),
                ):
                    with _analysing_receiver(tmp, sink_port, sampling) as (target, admin):
                        s = rt.measure(target, "grpc", 1, args)
                        out[mode].append(1e6 / s.spans_per_cpu_s)
                        if sampling == "adaptive":
                            accepted = _scrape_sum(
                                admin, "otel_agents_receiver_accepted_items_total"
                            )
                            unsampled = _scrape_sum(
                                admin, "otel_agents_analysis_unsampled_spans_total"
                            )
                            out[_FRACTION].append(1 - unsampled / max(accepted, 1.0))
                print(
                    f"round {rnd + 1}: " + ", ".join(f"{k} {v[-1]:.3g}" for k, v in out.items()),
                    file=sys.stderr,
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
    if receiver.get(_FWD):
        rm = {k: statistics.median(v) for k, v in receiver.items()}
        fwd, adaptive, off, frac = rm[_FWD], rm[_ADAPTIVE], rm[_OFF], rm[_FRACTION]
        floor = rm[_FLOOR]

        def row(label: str, key: str) -> str:
            v = receiver[key]
            return f"| {label} | {rm[key]:.2f} | {min(v):.2f}–{max(v):.2f} |"

        lines += [
            row("receiver ingest+spool+forward (process CPU, gRPC, 1 stream)", _FWD),
            row("receiver +analysis, adaptive budget (default; process CPU)", _ADAPTIVE),
            row("receiver +analysis, fixed 1/1024 sample (offering spans to analysis)", _FLOOR),
            row("receiver +analysis, sampling off (every trace analysed)", _OFF),
            "",
            f"In-process, per analysed span: (decode + stages) / (ingest+spool+forward) = "
            f"**{analysis / fwd:.0%}**; in the receiver, CPU per analysed span (sampling off − "
            f"+forward) = {off - fwd:.2f} µs.",
            "",
            f"Whole process at this load (one stream, {args.receiver_requests} requests): "
            f"analysis adds **{(adaptive - fwd) / fwd:.0%}** to the per-span CPU with the "
            f"adaptive budget (target ≤ 30%), analysing **{frac:.1%}** of traces "
            f"(rounds {min(receiver[_FRACTION]):.1%}–{max(receiver[_FRACTION]):.1%}); "
            f"{(floor - fwd) / fwd:.0%} ({floor - fwd:.2f} µs per span) at a 1/1024 sample; "
            f"**{(off - fwd) / fwd:.0%}** with sampling off.",
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
    parser.add_argument("--receiver-seconds", type=float, default=10.0)
    parser.add_argument("--receiver-requests", type=int, default=1500)
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
