# SPDX-License-Identifier: Apache-2.0
"""The ``agent_analysis`` pipeline stage: assembly → bottlenecks, anomalies, agent detectors.

One stage owns trace assembly and feeds every completed set to the sub-analyses, so traces are
grouped once (sharing assembled traces between stages through the host would copy them):

* per batch (no waiting): span-level anomaly accumulators and the span metrics, for spans whose
  agent is known from the batch (see :func:`._batch.resolve_agents`); spans whose agent comes
  from an ancestor in another batch are counted when their trace completes (one
  ``decision_wait`` later), under the inherited agent;
* per tick, for traces quiet for ``decision_wait``: critical path and fleet aggregates
  (:mod:`._bottleneck`), the agent graph (:mod:`._graph`), tool loops and broken A2A chains
  (:mod:`._detectors`), cost per trace;
* every ``anomaly.interval``: scores against baselines (:mod:`._anomaly`);
* every ``bottleneck.report_interval``: ranked bottleneck findings.

Findings go through :class:`FindingGate` (hysteresis: the same ``(kind, key)`` is emitted again
only when its severity changes or after ``cooldown``) to ``Host.emit_finding``.  All windows use
the receiver clock (``Host.now()``), never span timestamps.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from otel_agents._component import Component, Finding, Host
from otel_agents._configtypes import DURATION

from ._anomaly import (
    A2A_LATENCY,
    COST_PER_SESSION,
    COST_PER_TRACE,
    COST_RATE,
    ERROR_RATIO,
    LATENCY,
    TOKENS_PER_CALL,
    TOOL_ERROR_RATE,
    AnomalyConfig,
    AnomalyEngine,
    AnomalyResult,
)
from ._assembly import AssemblyConfig, CompletedTraces, TraceAssembler
from ._baselines import BAND_WARNING
from ._batch import (
    KIND_A2A,
    KIND_AGENT,
    KIND_MODEL,
    KIND_TOOL,
    SpanBatch,
    agent_pending,
    analysis_keys,
)
from ._bottleneck import BottleneckState
from ._detectors import a2a_breaks, orphan_groups, tool_loops
from ._graph import GraphState

if TYPE_CHECKING:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )
    from otel_agents.exporters._analysis_metrics import AnalysisMetrics

__all__ = ["AgentAnalysis", "AnalysisConfig", "BottleneckConfig", "FindingGate"]

_log = logging.getLogger(__name__)

ANALYSIS_KINDS = (
    "anomaly", "cost_runaway", "bottleneck", "slow_span", "tool_loop", "a2a_break", "orphan_span",
)  # fmt: skip
_LEAF_KINDS = (KIND_TOOL, KIND_MODEL)
_CLEAR_RATIO = 0.8  # an anomaly episode ends below 80 % of the warning score (40)
_STALE_INTERVALS = 3
_KIND_LABEL = {KIND_TOOL: "tool", KIND_MODEL: "model", KIND_A2A: "peer", KIND_AGENT: "agent"}


@dataclasses.dataclass(frozen=True)
class BottleneckConfig:
    """Bottleneck analysis settings.

    Attributes:
        bucket: time-bucket size of the windowed aggregates.
        window: the window findings and ``/api/v1/bottlenecks`` describe.
        report_interval: how often ranked bottleneck findings are made.
        min_share: smallest critical-path share reported as a finding.
        min_traces: traces needed in the window before reporting.
        top: at most this many bottleneck findings per report.
        slow_span_factor: a span slower than this × its operation's window p95 is an outlier.
        slow_span_min_count: observations an operation needs before outliers are judged.
        slow_span_warning_factor: an outlier this many × the p95 is a warning, not info (with
            log-normal latencies of σ = 0.6, 10 × p95 is a 5.5 σ event: not noise).
    """

    bucket: float = dataclasses.field(default=10.0, metadata=DURATION)
    window: float = dataclasses.field(default=300.0, metadata=DURATION)
    report_interval: float = dataclasses.field(default=30.0, metadata=DURATION)
    min_share: float = 0.2
    min_traces: int = 5
    top: int = 3
    slow_span_factor: float = 3.0
    slow_span_min_count: int = 50
    slow_span_warning_factor: float = 10.0


@dataclasses.dataclass(frozen=True)
class AnalysisConfig:
    """``agent_analysis`` stage settings (YAML under ``processors: agent_analysis:``).

    Attributes:
        assembly: trace assembly (decision wait, open-trace cap, late spans).
        bottleneck: critical path aggregates and reports.
        anomaly: baselines, warm-up, score bands.
        tool_loop_threshold: same (agent, tool, arguments) this many times in one trace.
        cost_per_trace_limit: USD; a trace above it is a critical ``cost_runaway`` (0 = off).
        cooldown: re-emit an unchanged finding at most this often.
        anomaly_confirm: consecutive intervals a warning-level anomaly must hold before it is
            a finding (critical ones are emitted at once).
        max_keys: cap on distinct keys tracked per table (label cardinality, B22).
        max_edges: cap on agent-graph edges.
        metrics: publish analysis metrics on the admin ``/metrics``.
    """

    assembly: AssemblyConfig = dataclasses.field(default_factory=AssemblyConfig)
    bottleneck: BottleneckConfig = dataclasses.field(default_factory=BottleneckConfig)
    anomaly: AnomalyConfig = dataclasses.field(default_factory=AnomalyConfig)
    tool_loop_threshold: int = 3
    cost_per_trace_limit: float = 0.0
    cooldown: float = dataclasses.field(default=300.0, metadata=DURATION)
    anomaly_confirm: int = 2
    max_keys: int = 2000
    max_edges: int = 2000
    metrics: bool = True


class FindingGate:
    """Hysteresis: emit a ``(kind, key)`` again only on a severity change or after a cool-down."""

    def __init__(self, cooldown: float) -> None:
        self.cooldown = cooldown
        self._last: dict[tuple[str, str], tuple[str, float]] = {}

    def admit(self, finding: Finding, now: float) -> bool:
        """Whether to emit ``finding`` now (and remember it if so)."""
        k = (finding.kind, finding.key)
        prev = self._last.get(k)
        if prev is not None and prev[0] == finding.severity and now - prev[1] < self.cooldown:
            return False
        self._last[k] = (finding.severity, now)
        return True

    def clear(self, kind: str, key: str) -> None:
        """The condition ended: the next occurrence is a new episode."""
        self._last.pop((kind, key), None)

    def expire(self, now: float) -> None:
        """Forget series quiet for longer than the cool-down (bounded memory)."""
        for k in [k for k, (_, t) in self._last.items() if now - t >= self.cooldown]:
            del self._last[k]


def _param(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _key_str(parts: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in parts.items())


def _subject(kind: str, name: str, agent: str) -> str:
    if kind == KIND_A2A and not agent:
        return f"A2A calls to `{name}`"
    agent = agent or "(unnamed)"
    if kind == KIND_TOOL:
        return f"tool `{name}` under agent `{agent}`"
    if kind == KIND_MODEL:
        return f"model `{name}` called by agent `{agent}`"
    if kind == KIND_A2A:
        return f"A2A calls from agent `{agent}` to `{name}`"
    if kind == KIND_AGENT:
        return f"agent `{agent}`"
    return f"`{name}` spans of agent `{agent}`"


def _fmt(v: float, unit: str) -> str:
    if unit == "s":
        return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"
    if unit == "$":
        return f"${v:.4f}" if v < 1 else f"${v:.2f}"
    if unit == "%":
        return f"{v:.0%}"
    return f"{v:,.0f}"


class AgentAnalysis(Component):
    """The ``agent_analysis`` stage."""

    def __init__(self, config: AnalysisConfig, name: str = "") -> None:
        self.config = config
        self.name = name
        self.assembler = TraceAssembler(config.assembly)
        bc = config.bottleneck
        self.bottleneck = BottleneckState(
            bucket=bc.bucket, window=bc.window, max_keys=config.max_keys
        )
        self.graph = GraphState(config.max_edges)
        self.anomaly = AnomalyEngine(config.anomaly)
        self.gate = FindingGate(config.cooldown)
        self.recent: collections.deque[Finding] = collections.deque(maxlen=500)
        self.slow: collections.deque[dict[str, Any]] = collections.deque(maxlen=100)
        self._host: Host | None = None
        self._metrics: AnalysisMetrics | None = None
        self._lock = threading.RLock()
        self._next_report: float | None = None
        self._asm_seen: dict[str, int] = {}
        self._active: dict[tuple[str, str], AnomalyResult] = {}
        self._active_at: dict[tuple[str, str], float] = {}
        self._streak: dict[tuple[str, str], int] = {}
        self._pending: list[tuple[float, Finding]] = []
        self._trace_causes: dict[str, str] = {}
        self._typical_cp: dict[tuple[str, str, str], float] = {}
        self._causes: collections.deque[tuple[float, str, float]] = collections.deque(maxlen=1000)
        self._p95: tuple[float, dict[tuple[str, str, str], float]] | None = None
        #: Analysis sampling (receiver ``analysis.sampling``): the fraction of traces the latest
        #: batch was analysed at, and when a batch was last sampled (< 1).
        self.analysed_fraction = 1.0
        self._sampled_at: float | None = None

    # -- Component ---------------------------------------------------------------------------

    def start(self, host: Host) -> None:
        """Attach to the host: metrics, finding counter, API routes."""
        self._host = host
        if self.config.metrics:
            from otel_agents.exporters._analysis_metrics import AnalysisMetrics

            self._metrics = AnalysisMetrics.for_registry(
                host.metrics_registry, self.config.max_keys
            )
            if self._metrics.claim_findings():
                host.subscribe_findings(self._metrics.on_finding)
        host.register_api("/api/v1/anomalies", self._api_anomalies)
        host.register_api("/api/v1/bottlenecks", self._api_bottlenecks)
        host.register_api("/api/v1/agents", self._api_agents)

    def process_traces(self, batch: SpanBatch) -> None:
        """Take a batch: into assembly, span-level anomaly accumulators and span metrics."""
        now = self._now()
        self.analysed_fraction = batch.analysed_fraction
        if batch.analysed_fraction < 1.0:
            self._sampled_at = now
        # Spans whose agent only assembly can name (parent in another batch) are counted when
        # their trace completes, so /metrics and baselines never see them under agent "".
        pending = agent_pending(batch)
        ready = batch if not pending.any() else batch.take(~pending)
        with self._lock:
            self.assembler.add(batch, now)
            self.anomaly.add_spans(ready)
        if self._metrics is not None:
            self._metrics.on_spans(ready)

    def process_metrics(self, request: ExportMetricsServiceRequest) -> None:
        """Process resource metrics for the ``process_resource`` detector."""
        with self._lock:
            self.anomaly.add_metrics(request)

    def tick(self, now: float) -> None:
        """Complete quiet traces, evaluate intervals and reports that are due."""
        with self._lock:
            done = self.assembler.collect(now)
            if done is not None:
                self._analyse(done, now)
            if self.anomaly.due(now):
                self._anomalies(self.anomaly.evaluate(now), now)
            self._release(now)
            if self._next_report is None:
                self._next_report = now + self.config.bottleneck.report_interval
            elif now >= self._next_report:
                self._next_report = now + self.config.bottleneck.report_interval
                self._report_bottlenecks(now)
            self.gate.expire(now)
            self._publish_assembly()

    def shutdown(self) -> None:
        """Analyse every trace still open."""
        now = self._now()
        with self._lock:
            done = self.assembler.collect(now, flush=True)
            if done is not None:
                self._analyse(done, now)
            self._release(now, force=True)  # held findings go out now rather than never
            self._publish_assembly()

    # -- analysis ----------------------------------------------------------------------------

    def _now(self) -> float:
        if self._host is None:
            raise RuntimeError("agent_analysis used before start()")
        return self._host.now()

    def _emit(self, finding: Finding, now: float) -> None:
        if not self.gate.admit(finding, now):
            return
        self.recent.append(finding)
        if self._host is not None:
            try:
                self._host.emit_finding(finding)
            except Exception:  # a subscriber's failure must not stop analysis
                _log.exception("emitting finding %s failed", finding.key)

    def _analyse(self, done: CompletedTraces, now: float) -> None:
        cfg = self.config
        if self._p95 is None or now - self._p95[0] >= cfg.bottleneck.bucket:
            # Baselines change slowly: re-read the window's p95s once per bucket, not per tick.
            self._p95 = (now, self.bottleneck.latency_p95(now, cfg.bottleneck.slow_span_min_count))
            self._typical_cp = self.bottleneck.typical_cp(now)
        p95 = self._p95[1]
        slow = self.bottleneck.slow_spans(done, p95, cfg.bottleneck.slow_span_factor, limit=5)
        cp, trace_cost = self.bottleneck.add(done, now)
        if self._pending:
            self._explain_traces(done, cp, now)
        edges = self.graph.add(done)
        self.anomaly.add_traces(done, trace_cost, self.bottleneck.sessions)
        if done.agent_pending.any():
            resolved = done.spans.take(done.agent_pending)
            self.anomaly.add_spans(resolved)
            if self._metrics is not None:
                self._metrics.on_spans(resolved)
        if self._metrics is not None:
            ak = analysis_keys(done.spans)
            secs = np.bincount(ak.inv, weights=cp / 1e9, minlength=len(ak.keys))
            self._metrics.on_critical_path(
                {k: float(secs[i]) for i, k in enumerate(ak.keys) if secs[i] > 0}
            )
            self._metrics.on_edges(edges)
        for s in slow:
            self.slow.append(dataclasses.asdict(s) | {"observed_at": now})
            if s.p95 and s.seconds >= cfg.bottleneck.slow_span_warning_factor * s.p95:
                self._note_cause(now, "a slow call of " + _subject(s.kind, s.name, s.agent), 100.0)
            labels = {"agent": s.agent, _KIND_LABEL.get(s.kind, "name"): s.name}
            self._emit(
                Finding(
                    kind="slow_span",
                    key=_key_str(labels),
                    severity=(
                        "warning"
                        if s.p95 and s.seconds >= cfg.bottleneck.slow_span_warning_factor * s.p95
                        else "info"
                    ),
                    score=min(100.0, 25.0 * s.seconds / s.p95) if s.p95 else 100.0,
                    title=f"Slow call: {_subject(s.kind, s.name, s.agent)}",
                    explanation=(
                        f"A call of {_subject(s.kind, s.name, s.agent)} took "
                        f"{_fmt(s.seconds, 's')}, {s.seconds / s.p95:.1f}× the p95 of "
                        f"{_fmt(s.p95, 's')} in the last {cfg.bottleneck.window / 60:g} min"
                    ),
                    labels=labels,
                    value=s.seconds,
                    baseline=s.p95,
                    trace_ids=(s.trace_id,),
                    observed_at=now,
                ),
                now,
            )
        for loop in tool_loops(done, cfg.tool_loop_threshold):
            labels = {"agent": loop.agent, "tool": loop.tool}
            ratio = loop.calls / cfg.tool_loop_threshold
            score = min(100.0, 50.0 + 25.0 * (ratio - 1.0))
            self._emit(
                Finding(
                    kind="tool_loop",
                    key=_key_str(labels),
                    severity="critical" if ratio >= 2 else "warning",
                    score=score,
                    title=f"Tool loop: `{loop.tool}` under agent `{loop.agent}`",
                    explanation=(
                        f"Agent `{loop.agent}` called tool `{loop.tool}` {loop.calls} times "
                        f"with the same arguments (hash {loop.args_hash}) in one run "
                        f"(threshold {cfg.tool_loop_threshold})"
                    ),
                    labels=labels,
                    value=float(loop.calls),
                    baseline=float(cfg.tool_loop_threshold),
                    trace_ids=(loop.trace_id,),
                    observed_at=now,
                ),
                now,
            )
        for br in a2a_breaks(done):
            if br.side == "server":
                labels = {"agent": br.agent, "method": br.method, "side": "server"}
                text = (
                    f"{br.count} A2A `{br.method}` SERVER span(s) of agent `{br.agent}` "
                    f"(service `{br.service}`) arrived without the caller's CLIENT span within "
                    f"the {cfg.assembly.decision_wait:g} s decision wait: the delegation chain "
                    "is broken (trace context lost or the caller's spans dropped)"
                )
            else:
                labels = {"agent": br.agent, "peer": br.peer or "unknown", "method": br.method,
                          "side": "client"}  # fmt: skip
                text = (
                    f"{br.count} A2A `{br.method}` CLIENT span(s) from agent `{br.agent}` to "
                    f"`{br.peer or 'unknown'}` have no SERVER span: the callee's spans did not "
                    "arrive or did not join the trace"
                )
            self._emit(
                Finding(
                    kind="a2a_break",
                    key=_key_str(labels),
                    severity="warning",
                    score=60.0,
                    title=f"Broken A2A chain at agent `{br.agent}`",
                    explanation=text,
                    labels=labels,
                    value=float(br.count),
                    trace_ids=br.trace_ids,
                    observed_at=now,
                ),
                now,
            )
        for og in orphan_groups(done):
            labels = {"service": og.service}
            self._emit(
                Finding(
                    kind="orphan_span",
                    key=_key_str(labels),
                    severity="info",
                    score=min(100.0, 10.0 * og.count),
                    title=f"Orphan spans from service `{og.service}`",
                    explanation=(
                        f"{og.count} span(s) of service `{og.service}` reference a parent that "
                        f"never arrived within {cfg.assembly.decision_wait:g} s (context lost "
                        "across a thread pool or a dropped export)"
                    ),
                    labels=labels,
                    value=float(og.count),
                    trace_ids=og.trace_ids,
                    observed_at=now,
                ),
                now,
            )
        if cfg.cost_per_trace_limit > 0:
            over = np.nonzero((trace_cost > cfg.cost_per_trace_limit) & (done.root >= 0))[0]
            for t in over.tolist()[:5]:
                agent = str(done.root_agent[t])
                labels = {"agent": agent, "detector": "cost_per_trace_limit"}
                self._emit(
                    Finding(
                        kind="cost_runaway",
                        key=_key_str(labels),
                        severity="critical",
                        score=100.0,
                        title=f"Trace cost above limit for agent `{agent}`",
                        explanation=(
                            f"A run of agent `{agent}` cost {_fmt(float(trace_cost[t]), '$')}, "
                            f"above the {_fmt(cfg.cost_per_trace_limit, '$')} limit"
                        ),
                        labels=labels,
                        value=float(trace_cost[t]),
                        baseline=cfg.cost_per_trace_limit,
                        trace_ids=(done.trace_id_hex(t),),
                        observed_at=now,
                    ),
                    now,
                )

    def _anomalies(self, results: list[AnomalyResult], now: float) -> None:
        if self._metrics is not None:
            self._metrics.set_scores(results)
        recent = 3 * self.config.bottleneck.bucket
        shares = {
            (b.agent, b.kind, b.name): b.share
            for b in self.bottleneck.bottlenecks(now, window=recent)
        }
        # Latency propagates upwards: a slow tool makes its agent, the A2A hop and the caller
        # slow too.  Leaf latency anomalies are causes; derived ones wait (see _release).
        for r in results:
            if r.detector == LATENCY and r.key[1] in _LEAF_KINDS and r.score >= BAND_WARNING:
                self._note_cause(now, _subject(r.key[1], r.key[2], r.key[0]), r.score)
        for r in results:
            finding = self._anomaly_finding(r, shares, now)
            ak = (finding.kind, finding.key)
            streak = self._streak[ak] = (
                self._streak.get(ak, 0) + 1 if r.score >= BAND_WARNING else 0
            )
            if r.score < BAND_WARNING:
                # Hysteresis band: the episode ends only well below the warning threshold, so
                # a score wobbling around 50 is one episode, not a stream of new ones.
                if ak in self._active and r.score < BAND_WARNING * _CLEAR_RATIO:
                    del self._active[ak]
                    self.gate.clear(*ak)
                continue
            if r.severity != "critical" and streak < self.config.anomaly_confirm:
                # Like Prometheus' `for`: a warning must hold for consecutive intervals, so a
                # heavy-tailed metric's one-interval excursion is not an incident.
                continue
            self._active[ak] = r
            self._active_at[ak] = now
            if r.detector in (LATENCY, A2A_LATENCY) and r.key[1] not in _LEAF_KINDS:
                # An agent / A2A hop / workflow being slow is usually explained by a slow tool
                # or model below it, which may only show once its trace completes (slow-span
                # outliers): hold the finding for decision_wait + one interval, then emit it,
                # demoted to info with the cause named if one turned up.
                if all(p[1].key != finding.key for p in self._pending):
                    wait = self.config.assembly.decision_wait + self.config.anomaly.interval
                    self._pending.append((now + wait, finding))
                continue
            self._emit(finding, now)
        # Keys with no data for a few intervals are no longer active (e.g. a tool not called).
        stale = now - _STALE_INTERVALS * self.config.anomaly.interval
        for ak in [k for k, t in self._active_at.items() if t < stale]:
            self._active.pop(ak, None)
            del self._active_at[ak]
        if len(self._streak) > 4 * self.config.anomaly.max_keys:
            self._streak = {k: v for k, v in self._streak.items() if v}

    def _explain_traces(self, done: CompletedTraces, cp: Any, now: float) -> None:
        """For example traces of held derived-latency findings: the tool or model whose time on
        that trace's critical path exceeds its usual per-trace share the most."""
        watch = {t for _, f in self._pending for t in f.trace_ids} - self._trace_causes.keys()
        if not watch:
            return
        ak = analysis_keys(done.spans)
        for t in range(done.n_traces):
            hx = done.trace_id_hex(t)
            if hx not in watch:
                continue
            lo, hi = int(done.offsets[t]), int(done.offsets[t + 1])
            per_key: dict[tuple[str, str, str], float] = {}
            for i in range(lo, hi):
                key = ak.keys[int(ak.inv[i])]
                if cp[i] > 0 and key[1] in _LEAF_KINDS:
                    per_key[key] = per_key.get(key, 0.0) + float(cp[i]) / 1e9
            excess = {k: v - self._typical_cp.get(k, 0.0) for k, v in per_key.items()}
            if excess:
                k = max(excess, key=lambda x: excess[x])
                if excess[k] > 0:
                    usual = self._typical_cp.get(k, 0.0)
                    self._trace_causes[hx] = (
                        f"{_subject(k[1], k[2], k[0])} ({_fmt(per_key[k], 's')} on the critical "
                        f"path of trace {hx}, usually {_fmt(usual, 's')})"
                    )
        while len(self._trace_causes) > 1000:
            self._trace_causes.pop(next(iter(self._trace_causes)))

    def _note_cause(self, now: float, subject: str, score: float) -> None:
        self._causes.append((now, subject, score))

    def _release(self, now: float, *, force: bool = False) -> None:
        """Emit held derived-latency findings whose wait is over (see :meth:`_anomalies`)."""
        if not self._pending:
            return
        horizon = 2 * self.config.assembly.decision_wait + 3 * self.config.anomaly.interval
        while self._causes and self._causes[0][0] < now - horizon:
            self._causes.popleft()
        keep = []
        for due, finding in self._pending:
            if due > now and not force:
                keep.append((due, finding))
                continue
            # The example trace's own critical path first; else a leaf cause seen from shortly
            # before the anomaly until now.
            since = finding.observed_at - horizon / 2
            causes = [c for c in self._causes if c[0] >= since]
            traced = [self._trace_causes[t] for t in finding.trace_ids if t in self._trace_causes]
            if traced or causes:
                cause = traced[0] if traced else max(causes, key=lambda c: c[2])[1]
                finding = dataclasses.replace(
                    finding,
                    severity="info",
                    explanation=f"{finding.explanation}; likely explained by {cause}",
                )
            self._emit(finding, now)
        self._pending = keep

    def _anomaly_finding(
        self, r: AnomalyResult, shares: Mapping[tuple[str, str, str], float], now: float
    ) -> Finding:
        agent, kind, name = r.key
        interval = self.config.anomaly.interval
        det = r.detector
        labels = {"detector": det, "agent": agent}
        fkind = "anomaly"
        if det in (LATENCY, A2A_LATENCY):
            labels[_KIND_LABEL.get(kind, "name")] = name
            what = f"{_subject(kind, name, agent)}: {r.statistic} latency {_fmt(r.value, 's')}"
            base = _fmt(r.baseline, "s")
            title = (
                f"{'Slow' if kind == KIND_TOOL else 'Latency up:'} {_subject(kind, name, agent)}"
            )
        elif det in (ERROR_RATIO, TOOL_ERROR_RATE):
            labels[_KIND_LABEL.get(kind, "name")] = name
            what = f"{_subject(kind, name, agent)}: error ratio {_fmt(r.value, '%')}"
            base = _fmt(r.baseline, "%")
            title = f"Error burst: {_subject(kind, name, agent)}"
        elif det == TOKENS_PER_CALL:
            labels["model"] = name
            what = (
                f"{_subject(kind, name, agent)}: {r.statistic} {_fmt(r.value, 'n')} tokens per call"
            )
            base = f"{_fmt(r.baseline, 'n')} tokens"
            title = f"Token spike: agent `{agent}` on model `{name}`"
        elif det == COST_PER_TRACE:
            fkind = "cost_runaway"
            what = f"runs of agent `{agent}` cost a median {_fmt(r.value, '$')} per trace"
            base = _fmt(r.baseline, "$")
            title = f"Cost runaway: agent `{agent}` (cost per trace)"
        elif det == COST_PER_SESSION:
            fkind = "cost_runaway"
            what = f"a session run by agent `{agent}` reached {_fmt(r.value, '$')} in total"
            base = _fmt(r.baseline, "$")
            title = f"Cost runaway: agent `{agent}` (cost per session)"
        elif det == COST_RATE:
            fkind = "cost_runaway"
            what = f"agent `{agent}` spent {_fmt(r.value, '$')} on inference"
            base = _fmt(r.baseline, "$") + " per interval"
            title = f"Cost runaway: agent `{agent}` (spend rate)"
        else:  # PROCESS_RESOURCE
            labels = {"detector": det, "service": agent, "metric": name}
            what = f"process metric `{name}` of service `{agent}` averages {r.value:.4g}"
            base = f"{r.baseline:.4g}"
            title = f"Resource anomaly: `{name}` of `{agent}`"
        text = (
            f"{what} over {r.observations} observation(s) in the last {interval:g} s vs a "
            f"baseline of {base} (robust z {r.z:.1f}, score {r.score:.0f})"
        )
        share = shares.get(r.key)
        if det == LATENCY and share and share >= 0.01 and kind in _LEAF_KINDS:
            recent = 3 * self.config.bottleneck.bucket
            text += f"; it is {share:.0%} of critical-path time in the last {recent:g} s"
        return Finding(
            kind=fkind,
            key=_key_str(labels),
            severity=r.severity,
            score=r.score,
            title=title,
            explanation=text,
            labels=labels,
            value=r.value,
            baseline=r.baseline,
            trace_ids=r.trace_ids,
            observed_at=now,
        )

    def _report_bottlenecks(self, now: float) -> None:
        bc = self.config.bottleneck
        ranked = self.bottleneck.bottlenecks(now)
        if self._metrics is not None:
            self._metrics.set_shares(ranked)
        for b in ranked[: bc.top]:
            if b.share < bc.min_share or b.total_traces < bc.min_traces:
                continue
            labels = {"agent": b.agent, _KIND_LABEL.get(b.kind, "name"): b.name}
            self._emit(
                Finding(
                    kind="bottleneck",
                    key=_key_str(labels),
                    severity="info",
                    score=round(100.0 * b.share, 1),
                    title=f"Bottleneck: {_subject(b.kind, b.name, b.agent)}",
                    explanation=b.explanation(),
                    labels=labels,
                    value=b.share,
                    observed_at=now,
                ),
                now,
            )

    def _publish_assembly(self) -> None:
        if self._metrics is None:
            return
        a = self.assembler
        totals = {"completed": a.completed, "evicted": a.evicted, "late": a.late_spans}
        totals |= {"orphan:" + k: v for k, v in a.orphans.items()}
        delta = {k: v - self._asm_seen.get(k, 0) for k, v in totals.items()}
        self._asm_seen = totals
        self._metrics.on_assembly(
            completed=delta["completed"],
            evicted=delta["evicted"],
            late=delta["late"],
            orphans={k[7:]: v for k, v in delta.items() if k.startswith("orphan:")},
            open_traces=a.open_traces,
        )

    # -- API ---------------------------------------------------------------------------------

    def sampling(self, now: float) -> dict[str, Any]:
        """How the window's figures were obtained: ``analysed_fraction`` (latest), ``estimated``
        (some traces in the window were analysed at a fraction < 1, so the ``scaled`` fields are
        Horvitz-Thompson estimates — sampled values × 1/fraction — and the rest describe the
        sample as is)."""
        estimated = self._sampled_at is not None and (
            now - self._sampled_at <= self.config.bottleneck.window
            or self.bottleneck.sessions_sampled
        )
        return {
            "analysed_fraction": self.analysed_fraction,
            "estimated": bool(estimated),
            "scaled": ["cost_by_agent", "cost_by_model", "sessions"],
        }

    def _api_anomalies(
        self, method: str, query: Mapping[str, list[str]], body: bytes | None
    ) -> tuple[int, Any]:
        if method != "GET":
            return 405, {"error": "method not allowed"}
        detector = _param(query, "detector")
        agent = _param(query, "agent")
        with self._lock:
            now = self._now()
            active = [
                self._anomaly_finding(r, {}, now).to_json()
                for r in self._active.values()
                if (detector is None or r.detector == detector)
                and (agent is None or r.agent == agent)
            ]
            keys = [
                s for s in self.anomaly.states()
                if (detector is None or s["detector"] == detector)
                and (agent is None or s["key"][0] == agent)
            ]  # fmt: skip
            recent = [f.to_json() for f in self.recent if f.kind in ("anomaly", "cost_runaway")]
            sampling = self.sampling(now)
        return 200, {
            "active": active, "keys": keys[:1000], "recent": recent[-200:], "sampling": sampling,
        }  # fmt: skip

    def _api_bottlenecks(
        self, method: str, query: Mapping[str, list[str]], body: bytes | None
    ) -> tuple[int, Any]:
        if method != "GET":
            return 405, {"error": "method not allowed"}
        with self._lock:
            now = self._now()
            snap = self.bottleneck.snapshot(now)
            snap["slow_spans"] = list(self.slow)
            snap["sampling"] = self.sampling(now)
        return 200, snap

    def _api_agents(
        self, method: str, query: Mapping[str, list[str]], body: bytes | None
    ) -> tuple[int, Any]:
        if method != "GET":
            return 405, {"error": "method not allowed"}
        with self._lock:
            now = self._now()
            snap = self.bottleneck.snapshot(now)
            out = {
                "graph": self.graph.to_json(),
                "cost_by_agent": snap["cost_by_agent"],
                "cost_by_model": snap["cost_by_model"],
                "sessions": self.bottleneck.session_rollups(),
                "top_traces_by_cost": snap["top_traces_by_cost"],
                "window_seconds": snap["window_seconds"],
                "sampling": self.sampling(now),
            }
        return 200, out

    def rollups(self) -> dict[str, Any]:
        """Cost roll-ups and bottlenecks for :func:`render_report`."""
        with self._lock:
            now = self._now()
            snap = self.bottleneck.snapshot(now)
            snap["sessions"] = self.bottleneck.session_rollups(10)
            snap["graph"] = self.graph.to_json()
            snap["sampling"] = self.sampling(now)
        return snap
