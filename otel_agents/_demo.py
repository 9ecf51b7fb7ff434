# SPDX-License-Identifier: Apache-2.0
"""``otel-agents demo``: a deterministic, offline multi-agent app, traced end to end.

A planner agent delegates research to a researcher agent that runs in a second OS process and is
reached over A2A (JSON-RPC on loopback); both use tools and a scripted LLM with real model names
and realistic token counts, and record their decisions. Both processes export OTLP:

* to ``--endpoint`` / ``OTEL_EXPORTER_OTLP_ENDPOINT`` over ``--protocol`` /
  ``OTEL_EXPORTER_OTLP_PROTOCOL`` (``grpc`` or ``http/protobuf``) when one is given; or
* with no endpoint, to an embedded otel-agents receiver (SQLite spool in a temporary data
  directory), whose analysis is then printed: the critical-path bottleneck, anomalies, alerts
  fired and cost per agent — and, with ``--forward URL``, the same spans go on to your backend.

``--inject FAULT`` (repeatable) misbehaves on purpose in the last third of the runs; see
:mod:`otel_agents._demo_faults`.  Time is compressed (``--time-scale``): span durations keep
their real-world proportions while a demo of dozens of runs takes seconds.

Example::

    otel-agents demo                                  # embedded receiver + report
    otel-agents demo --endpoint http://127.0.0.1:4317 --protocol grpc --runs 5 --inject tool-loop
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from otel_agents import _demo_faults as faults_mod
from otel_agents._demo_a2a import A2AResearcherClient, ResearcherProcess
from otel_agents._demo_agents import Pace, RunSpec, Telemetry, run_planner
from otel_agents._demo_faults import FaultSet

__all__ = ["DemoOptions", "DemoResult", "main_demo", "run_demo"]

PROTOCOLS = ("grpc", "http/protobuf")
DEFAULT_RUNS = 24
DEFAULT_SEED = 7
DEFAULT_TIME_SCALE = 0.005
PLANNER_SERVICE = "demo-planner"
RESEARCHER_SERVICE = "demo-researcher"


@dataclasses.dataclass(frozen=True)
class DemoOptions:
    """What one demo does.

    Attributes:
        endpoint: OTLP base URL both processes export to.
        protocol: ``grpc`` or ``http/protobuf``.
        runs: number of planner runs (one trace each).
        seed: makes the runs reproducible.
        faults: faults injected into :func:`~otel_agents._demo_faults.faulted_runs`.
        time_scale: real seconds per simulated second.
    """

    endpoint: str
    protocol: str = "grpc"
    runs: int = DEFAULT_RUNS
    seed: int = DEFAULT_SEED
    faults: FaultSet = dataclasses.field(default_factory=FaultSet)
    time_scale: float = DEFAULT_TIME_SCALE


@dataclasses.dataclass(frozen=True)
class DemoResult:
    """What a demo run sent and where.

    Attributes:
        trace_ids: hex trace id of each run, in run order.
        faulted: indices of the runs that had the faults.
        planner_pid: the planner's process id (this process).
        researcher_pid: the researcher process's id.
        planner_spans: spans the endpoint acknowledged from the planner.
        researcher_spans: same for the researcher (``None`` if it did not report).
        failed_spans: planner spans the exporter gave up on.
        wall_s: wall-clock seconds of the runs.
    """

    trace_ids: tuple[str, ...]
    faulted: tuple[int, ...]
    planner_pid: int
    researcher_pid: int
    planner_spans: int
    researcher_spans: int | None
    failed_spans: int
    wall_s: float


def run_demo(options: DemoOptions, out: TextIO = sys.stdout) -> DemoResult:
    """Run the planner here and the researcher in a child process; flush both.

    Installs a global tracer provider in this process, so call it once per process.
    """
    researcher = ResearcherProcess(
        endpoint=options.endpoint, protocol=options.protocol, time_scale=options.time_scale
    ).start()
    telemetry = Telemetry.start(
        service_name=PLANNER_SERVICE, endpoint=options.endpoint, protocol=options.protocol
    )
    trace_ids: list[str] = []
    faulted = faults_mod.faulted_runs(options.runs) if options.faults else range(0)
    started = time.monotonic()
    try:
        delegate = A2AResearcherClient(researcher.url)
        pace = Pace(options.time_scale)
        for run in range(options.runs):
            spec = RunSpec(
                seed=options.seed,
                run=run,
                faults=options.faults if run in faulted else FaultSet(),
            )
            outcome = run_planner(spec, pace, delegate)
            trace_ids.append(outcome.trace_id)
            notes = [", ".join(spec.faults.to_wire())] if spec.faults else []
            if outcome.research is None:
                notes.append("delegation failed")
            marker = f"  [{'; '.join(notes)}]" if notes else ""
            print(f"  run {run + 1:>3}/{options.runs}  trace {outcome.trace_id}{marker}", file=out)
    finally:
        wall = time.monotonic() - started
        failed = telemetry.spans_failed
        planner_spans = telemetry.shutdown()
        researcher.stop()
    return DemoResult(
        trace_ids=tuple(trace_ids),
        faulted=tuple(faulted),
        planner_pid=os.getpid(),
        researcher_pid=researcher.pid,
        planner_spans=planner_spans,
        researcher_spans=researcher.spans_sent,
        failed_spans=failed,
        wall_s=wall,
    )


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otel-agents demo",
        description=(
            "Run a deterministic, offline multi-agent demo (planner -> researcher over A2A, "
            "tools, scripted LLM calls) and export its OTLP. With no endpoint, an embedded "
            "otel-agents receiver analyses it and prints a report."
        ),
    )
    parser.add_argument(
        "--endpoint",
        help="OTLP endpoint base URL, e.g. http://127.0.0.1:4317 "
        "(default: $OTEL_EXPORTER_OTLP_ENDPOINT; unset = embedded receiver)",
    )
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        help="OTLP protocol (default: $OTEL_EXPORTER_OTLP_PROTOCOL, else grpc)",
    )
    parser.add_argument(
        "--runs", type=_positive_int, default=DEFAULT_RUNS, help="planner runs (traces)"
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help="seed; same seed, same telemetry"
    )
    parser.add_argument(
        "--inject",
        action="append",
        default=[],
        metavar="FAULT",
        help=f"inject a fault into the last third of the runs (repeatable): {', '.join(faults_mod.FAULTS)}; "
        f"embedded mode defaults to {','.join(faults_mod.DEFAULT_MAIN_JOB_FAULTS)}, 'none' for none",
    )
    parser.add_argument(
        "--forward",
        action="append",
        default=[],
        metavar="URL",
        help="embedded receiver: also forward everything to this OTLP destination "
        "(grpc://host:port or http://host:port; repeatable)",
    )
    parser.add_argument(
        "--time-scale",
        type=_time_scale,
        default=DEFAULT_TIME_SCALE,
        help=f"real seconds per simulated second (default {DEFAULT_TIME_SCALE}: 200x faster)",
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="embedded receiver: keep it (and its admin page) running after the report until Ctrl-C",
    )
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _time_scale(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError("must be in (0, 1]")
    return value


def main_demo(argv: Sequence[str] | None = None) -> int:
    """``otel-agents demo [options]``; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    endpoint = args.endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None
    protocol = args.protocol or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
    if protocol not in PROTOCOLS:
        parser.error(
            f"unsupported OTEL_EXPORTER_OTLP_PROTOCOL {protocol!r}: use grpc or http/protobuf"
        )
    inject = [v for v in args.inject if v.strip().lower() != "none"]
    if not args.inject and endpoint is None:
        inject = list(faults_mod.DEFAULT_MAIN_JOB_FAULTS)
    try:
        faults = faults_mod.parse_faults(inject)
    except ValueError as exc:
        parser.error(str(exc))
    if args.forward and endpoint is not None:
        parser.error(
            "--forward needs the embedded receiver (no --endpoint): the demo itself "
            "exports only to its endpoint"
        )
    if endpoint is None:
        return _run_embedded(args, protocol, faults)
    options = DemoOptions(
        endpoint=endpoint,
        protocol=protocol,
        runs=args.runs,
        seed=args.seed,
        faults=faults,
        time_scale=args.time_scale,
    )
    print(_banner(options), flush=True)
    result = run_demo(options)
    print(where_it_went(options, result))
    return 0


def _banner(options: DemoOptions) -> str:
    faults = ", ".join(options.faults.to_wire()) or "none"
    return (
        f"otel-agents demo: {options.runs} runs, seed {options.seed}, faults: {faults}; "
        f"time compressed {1 / options.time_scale:g}x"
    )


def where_it_went(options: DemoOptions, result: DemoResult, *, label: str | None = None) -> str:
    """The "where did my telemetry go" paragraph."""
    researcher = "?" if result.researcher_spans is None else str(result.researcher_spans)
    lines = [
        f"Telemetry: {len(result.trace_ids)} traces, spans from 2 processes — "
        f"{PLANNER_SERVICE} (pid {result.planner_pid}): {result.planner_spans}, "
        f"{RESEARCHER_SERVICE} (pid {result.researcher_pid}): {researcher} — "
        f"exported over OTLP/{options.protocol} to {options.endpoint}"
        + (f" ({label})" if label else ""),
    ]
    if result.failed_spans:
        lines.append(f"  warning: {result.failed_spans} planner spans could not be exported")
    if result.researcher_spans is None:
        lines.append("  warning: the researcher process did not report its span count")
    return "\n".join(lines)


def _run_embedded(args: argparse.Namespace, protocol: str, faults: FaultSet) -> int:
    raise NotImplementedError
