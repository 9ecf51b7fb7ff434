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
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any, TextIO

from otel_agents import _demo_faults as faults_mod
from otel_agents import semconv as sc
from otel_agents._component import Finding
from otel_agents._demo_a2a import A2AResearcherClient, ResearcherProcess, loopback_opener
from otel_agents._demo_agents import (
    PLANNER,
    PLANNER_SERVICE,
    RESEARCHER_SERVICE,
    Pace,
    RunSpec,
    Telemetry,
    run_planner,
)
from otel_agents._demo_faults import FaultSet
from otel_agents._errors import OtelAgentsError

__all__ = ["DemoOptions", "DemoResult", "main_demo", "run_demo"]

PROTOCOLS = ("grpc", "http/protobuf")
DEFAULT_RUNS = 30
DEFAULT_SEED = 7
DEFAULT_TIME_SCALE = 0.01


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
        failed_spans: spans the exporters of both processes gave up on.
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
    try:
        telemetry = Telemetry.start(
            service_name=PLANNER_SERVICE,
            endpoint=options.endpoint,
            protocol=options.protocol,
            main_agent=PLANNER,
        )
    except BaseException:
        researcher.stop()
        raise
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
            print(
                f"  run {run + 1:>3}/{options.runs}  trace {outcome.trace_id}{marker}",
                file=out,
                flush=True,
            )
    finally:
        wall = time.monotonic() - started
        planner_spans = telemetry.shutdown()
        failed = telemetry.spans_failed
        researcher.stop()
        failed += researcher.spans_failed
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
        "--runs",
        type=_positive_int,
        default=DEFAULT_RUNS,
        help=f"planner runs, one trace each (default {DEFAULT_RUNS})",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help=f"same seed, same telemetry (default {DEFAULT_SEED})",
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
        help=f"real seconds per simulated second (default {DEFAULT_TIME_SCALE:g}: {1 / DEFAULT_TIME_SCALE:g}x faster)",
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
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        # the OTLP exporter specification: the endpoint is a URL; the scheme decides TLS
        parser.error(f"endpoint {endpoint!r}: expected a URL such as http://127.0.0.1:4317")
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
        try:
            return _run_embedded(args, protocol, faults, sys.stdout)
        except (RuntimeError, OSError, OtelAgentsError) as exc:
            print(f"otel-agents demo: {exc}", file=sys.stderr)
            return 1
    options = _options(args, endpoint, protocol, faults)
    print(_banner(options), flush=True)
    try:
        result = run_demo(options)
    except (RuntimeError, OSError) as exc:
        print(f"otel-agents demo: {exc}", file=sys.stderr)
        return 1
    print(where_it_went(options, result))
    return 0


def _options(
    args: argparse.Namespace, endpoint: str, protocol: str, faults: FaultSet
) -> DemoOptions:
    """The run options from the command line, for an explicit or the embedded endpoint alike."""
    return DemoOptions(
        endpoint=endpoint,
        protocol=protocol,
        runs=args.runs,
        seed=args.seed,
        faults=faults,
        time_scale=args.time_scale,
    )


def _banner(options: DemoOptions) -> str:
    lines = [f"otel-agents demo: {options.runs} runs (one trace each), seed {options.seed}"]
    if options.faults:
        runs = faults_mod.faulted_runs(options.runs)
        lines.append(
            f"  faults injected in runs {runs[0] + 1}–{runs[-1] + 1}: "
            + ", ".join(options.faults.to_wire())
        )
    else:
        lines.append("  no faults injected")
    lines.append(
        f"  time compressed {1 / options.time_scale:g}x: span durations keep their real-world "
        "proportions; per-hour rates (spend, calls) look that much higher"
    )
    return "\n".join(lines)


def where_it_went(options: DemoOptions, result: DemoResult, *, label: str | None = None) -> str:
    """The "where did my telemetry go" paragraph."""
    researcher = "?" if result.researcher_spans is None else str(result.researcher_spans)
    lines = [
        f"Telemetry: {len(result.trace_ids)} traces, spans from 2 processes — "
        f"{PLANNER_SERVICE} (pid {result.planner_pid}): {result.planner_spans}, "
        f"{RESEARCHER_SERVICE} (pid {result.researcher_pid}): {researcher} — "
        f"with their metrics and agent-event logs, exported over OTLP/{options.protocol} to "
        f"{options.endpoint}" + (f" ({label})" if label else ""),
    ]
    if result.failed_spans:
        lines.append(f"  warning: {result.failed_spans} spans could not be exported")
    if result.researcher_spans is None:
        lines.append("  warning: the researcher process did not report its span count")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Embedded receiver (the main job)
# --------------------------------------------------------------------------------------------
#: Receiver settings the demo changes, because it compresses time: analysis windows measured in
#: receiver seconds shrink with it. Everything else is the receiver's default configuration.
DEMO_RECEIVER_OVERRIDES: dict[str, Any] = {
    "processors.agent_analysis.assembly.decision_wait": "1s",
    "processors.agent_analysis.bottleneck.report_interval": "2s",
    "processors.agent_analysis.bottleneck.bucket": "1s",
    "processors.agent_analysis.anomaly.interval": "1s",
    # a single run above $1 is a runaway for this app (a clean run costs about 5 cents)
    "processors.agent_analysis.cost_per_trace_limit": 1.0,
    # 30 runs in ~10 s from two processes are bursts a real app spreads over minutes; on a busy
    # machine the analysis CPU budget may sample a few of them, and the report is about all.
    "analysis.sampling": "off",
}
_ANALYSIS_ID = "agent_analysis"
_SETTLE_TIMEOUT_S = 25.0


class _Findings:
    """Collects every finding the receiver's components emit (a ``Host`` subscriber)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Finding] = []

    def __call__(self, finding: Finding) -> None:
        with self._lock:
            self._items.append(finding)

    def snapshot(self) -> list[Finding]:
        with self._lock:
            return list(self._items)


def _run_embedded(args: argparse.Namespace, protocol: str, faults: FaultSet, out: TextIO) -> int:
    from otel_agents.receiver import Receiver, load_config
    from otel_agents.receiver._config import forward_exporter

    with tempfile.TemporaryDirectory(prefix="otel-agents-demo-") as data_dir:
        overrides: dict[str, Any] = {
            "receivers.otlp.protocols.grpc.endpoint": "127.0.0.1:0",
            "receivers.otlp.protocols.http.endpoint": "127.0.0.1:0",
            "admin.endpoint": "127.0.0.1:0",
            "storage.data_dir": data_dir,
        }
        from otel_agents.processors import FACTORIES as processor_factories

        if _ANALYSIS_ID in processor_factories:
            overrides.update(DEMO_RECEIVER_OVERRIDES)
        forwards = dict(forward_exporter(url) for url in args.forward)
        if forwards:
            overrides["exporters"] = forwards
        receiver = Receiver(load_config(None, overrides))
        receiver.start()
        try:
            findings = _Findings()
            pipeline = receiver.pipeline
            if pipeline is None:
                raise RuntimeError("the embedded receiver started without a pipeline")
            pipeline.subscribe_findings(findings)
            endpoint = (
                f"http://{receiver.grpc_endpoint}" if protocol == "grpc" else receiver.http_endpoint
            )
            options = _options(args, endpoint, protocol, faults)
            print(_banner(options), file=out, flush=True)
            print(
                f"Embedded otel-agents receiver: OTLP/gRPC {receiver.grpc_endpoint}, "
                f"OTLP/HTTP {receiver.http_endpoint}, data in {data_dir}",
                file=out,
                flush=True,
            )
            result = run_demo(options, out)
            print(where_it_went(options, result, label="the embedded receiver"), file=out)
            report = _analyse(receiver, findings, result, faults, out)
            print(report, file=out)
            admin = f"\nAdmin page: {receiver.admin_url}/ (API under {receiver.admin_url}/api/v1/)"
            if args.serve:
                print(f"{admin}; serving until Ctrl-C ...", file=out, flush=True)
                with contextlib.suppress(KeyboardInterrupt):
                    threading.Event().wait()
            else:
                print(
                    f"{admin} — the receiver stops now; rerun with --serve to keep it up and "
                    "browse it.",
                    file=out,
                )
        finally:
            receiver.stop()
        for url, line in _forward_summary(receiver, args.forward):
            print(f"Forwarded to {url}: {line}", file=out)
    return 0


#: What the analysis should find for each fault: ``(finding kinds, words in the subject)``; a
#: finding — or a firing alert — of one of the kinds whose key/labels mention every word counts.
_EXPECTED: dict[str, tuple[frozenset[str], tuple[str, ...]]] = {
    faults_mod.SLOW_TOOL: (frozenset({"bottleneck"}), (faults_mod.SLOW_TOOL_NAME,)),
    faults_mod.TOKEN_SPIKE: (
        frozenset({"anomaly", "token_spike"}),
        (faults_mod.TOKEN_SPIKE_AGENT, faults_mod.TOKEN_SPIKE_MODEL),
    ),
    # an error ratio this high must page someone: wait for the alert (the anomaly comes first)
    faults_mod.ERROR_BURST: (frozenset({"alert"}), (faults_mod.ERROR_BURST_TOOL,)),
    faults_mod.TOOL_LOOP: (frozenset({"tool_loop"}), (faults_mod.TOOL_LOOP_TOOL,)),
    faults_mod.A2A_BREAK: (frozenset({"a2a_break", "orphan_span"}), ()),
    faults_mod.COST_RUNAWAY: (frozenset({"cost_runaway"}), ()),
}


def _found(
    fault: str, findings: Sequence[Finding], alerts: Sequence[dict[str, Any]], has_alerts: bool
) -> bool:
    kinds, words = _EXPECTED[fault]
    if not has_alerts and "alert" in kinds:
        kinds = frozenset({"anomaly"})  # no alert stage in this build: its finding will do
    subjects = [f.key + " " + " ".join(f.labels.values()) for f in findings if f.kind in kinds]
    if "alert" in kinds:
        subjects += [
            " ".join(str(v) for v in (a.get("labels") or {}).values())
            for a in alerts
            if a.get("state") == "firing"
        ]
    return any(all(w in subject for w in words) for subject in subjects)


def _sample(receiver: Any, name: str, labels: dict[str, str] | None = None) -> float:
    value = receiver.registry.get_sample_value(name, labels or {})
    return float(value) if value is not None else 0.0


def _get_json(url: str) -> Any:
    with loopback_opener().open(url, timeout=10) as response:
        return json.loads(response.read())


def _active_alerts(receiver: Any) -> list[dict[str, Any]]:
    try:
        body = _get_json(f"{receiver.admin_url}/api/v1/alerts?state=all")
    except (OSError, ValueError):
        return []
    alerts = body.get("alerts") if isinstance(body, dict) else None
    return [a for a in alerts or [] if isinstance(a, dict)]


def _analyse(
    receiver: Any, findings: _Findings, result: DemoResult, faults: FaultSet, out: TextIO
) -> str:
    """Wait until the receiver has analysed every run, then render its report."""
    from otel_agents.receiver._pipeline import ANALYSIS_CURSOR

    pipeline = receiver.pipeline
    components = pipeline.components
    analysis = components.get(_ANALYSIS_ID)
    if analysis is None:
        return (
            "Analysis: not available in this build (no 'agent_analysis' processor registered); "
            "the spans are stored and forwarded, but no findings are made."
        )
    has_alerts = "alert" in components
    print(
        "Waiting for the receiver's analysis (trace decision wait, anomaly intervals, alert 'for')...",
        file=out,
        flush=True,
    )
    deadline = time.monotonic() + _SETTLE_TIMEOUT_S
    traces = len(result.trace_ids)

    def settled() -> bool:
        if pipeline.spool.pending(ANALYSIS_CURSOR)[0]:
            return False
        if _sample(receiver, sc.METRIC_TRACES_COMPLETED) < traces:
            return False
        seen = findings.snapshot()
        alerts = _active_alerts(receiver) if has_alerts else []
        return all(_found(fault, seen, alerts, has_alerts) for fault in faults.faults)

    while not settled() and time.monotonic() < deadline:
        time.sleep(0.25)
    timed_out = not settled()

    rollups = analysis.rollups() if hasattr(analysis, "rollups") else {}
    parts: list[str] = []
    try:
        from otel_agents.processors import render_report

        parts.append(render_report(findings.snapshot(), rollups).rstrip())
    except ImportError:
        parts.append(
            "Analysis report: not available in this build (processors.render_report missing)."
        )
    if has_alerts:
        try:
            from otel_agents.exporters._alert_outputs import render_alerts

            parts.append(render_alerts(_active_alerts(receiver)).rstrip())
        except ImportError:
            parts.append(
                "Alerts: the alert engine runs, but render_alerts is missing in this build."
            )
    else:
        parts.append("Alerts: not available in this build (no 'alert' processor registered).")
    if timed_out:
        parts.append(
            f"(The analysis had not found everything expected after {_SETTLE_TIMEOUT_S:g}s; "
            "the report shows what it had.)"
        )
    return "\n\n".join(parts)


def _forward_summary(receiver: Any, urls: Sequence[str]) -> list[tuple[str, str]]:
    from otel_agents.receiver._config import forward_exporter

    lines = []
    for url in urls:
        destination = forward_exporter(url)[0]
        sent = _sample(
            receiver,
            sc.METRIC_FORWARDER_SENT_ITEMS,
            {"destination": destination, "signal": "traces"},
        )
        failed = sum(
            _sample(
                receiver,
                sc.METRIC_FORWARDER_FAILED_ITEMS,
                {"destination": destination, "signal": "traces", "reason": reason},
            )
            for reason in ("permanent", "rejected", "expired", "dropped")
        )
        line = f"{int(sent)} spans sent"
        if failed:
            line += f", {int(failed)} failed"
        lines.append((url, line))
    return lines
