# SPDX-License-Identifier: Apache-2.0
"""Streaming anomaly detection on agent semantics, per batch on columns.

Each batch is grouped once by ``(agent, kind, name)`` (numpy); per group the interval
accumulators get the raw values (latencies, token counts) or counts (errors/calls).  Every
``interval`` seconds of receiver time each key's interval statistic is scored against its
baseline (:mod:`._baselines`) *before* being learned, so a fault is measured against the
clean past.  Detectors:

=================  =================================================  ======================
detector           interval statistic                                  key
=================  =================================================  ======================
latency            median span duration                                (agent, kind, name)
a2a_latency        median A2A CLIENT span duration                     (agent, a2a, peer)
error_ratio        errors / calls (binomial z)                         (agent, kind, name)
tool_error_rate    errors / calls of a tool                            (agent, tool, name)
tokens_per_call    median input+output tokens per inference call       (agent, model, model)
cost_per_trace     median cost of the traces an agent roots           (agent, trace, cost)
cost_per_session   largest session total (cumulative cost) reached     (agent, session, cost)
cost_rate          cost per interval of an agent's inference calls     (agent, rate, cost)
process_resource   mean of a process metric's points                   (service, process, metric)
=================  =================================================  ======================
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt

from otel_agents import semconv as sc

from ._baselines import (
    BaselineConfig,
    BaselineTable,
    RateBaseline,
    SeasonalBaseline,
    severity_for,
)
from ._batch import (
    KIND_A2A,
    KIND_MODEL,
    KIND_OTHER,
    KIND_TOOL,
    SpanBatch,
    analysis_keys,
    group_keys,
)

if TYPE_CHECKING:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )

    from ._assembly import CompletedTraces

__all__ = ["AnomalyConfig", "AnomalyEngine", "AnomalyResult"]

Key = tuple[str, str, str]
F64 = npt.NDArray[np.float64]

LATENCY = "latency"
A2A_LATENCY = "a2a_latency"
ERROR_RATIO = "error_ratio"
TOOL_ERROR_RATE = "tool_error_rate"
TOKENS_PER_CALL = "tokens_per_call"
COST_PER_TRACE = "cost_per_trace"
COST_RATE = "cost_rate"
COST_PER_SESSION = "cost_per_session"
PROCESS_RESOURCE = "process_resource"
DETECTORS = (
    LATENCY, A2A_LATENCY, ERROR_RATIO, TOOL_ERROR_RATE, TOKENS_PER_CALL, COST_PER_TRACE,
    COST_PER_SESSION, COST_RATE, PROCESS_RESOURCE,
)  # fmt: skip

# Spread floors per detector (units of the statistic): below these a change is noise.
_ABS_FLOOR = {
    LATENCY: 0.005,
    A2A_LATENCY: 0.005,
    TOKENS_PER_CALL: 5.0,
    COST_PER_TRACE: 1e-5,
    COST_PER_SESSION: 1e-5,
    COST_RATE: 1e-4,
    PROCESS_RESOURCE: 1e-9,
}
_EXAMPLES = 3
OVERFLOW = "__overflow__"
_DUAL = frozenset({LATENCY, A2A_LATENCY, TOKENS_PER_CALL})  # median and tail baselines
_TAIL_Q = 0.8
_TAIL_MIN_N = 10


@dataclasses.dataclass(frozen=True)
class AnomalyConfig:
    """Anomaly detection settings.

    Attributes:
        interval: evaluation interval (receiver time).
        baseline: how baselines learn and score.
        max_keys: cap on keys tracked per detector (least recently seen evicted).
        detectors: detectors to run (names in the module table).
        process_metrics: metric names read from OTLP metrics for ``process_resource``.
    """

    interval: float = dataclasses.field(default=5.0, metadata={"unit": "duration"})
    baseline: BaselineConfig = dataclasses.field(default_factory=BaselineConfig)
    max_keys: int = 2000
    detectors: tuple[str, ...] = DETECTORS
    process_metrics: tuple[str, ...] = (
        "process.cpu.utilization",
        sc.METRIC_PROCESS_MEMORY_USAGE,
        sc.METRIC_PROCESS_CPU_TIME,
        sc.METRIC_PROCESS_THREAD_COUNT,
        sc.METRIC_PROCESS_FD_COUNT,
    )

    def validate(self) -> list[str]:
        """Problems with the values."""
        out = [f"detectors: unknown {d!r}" for d in self.detectors if d not in DETECTORS]
        if self.interval <= 0:
            out.append("interval: must be positive")
        if self.max_keys < 1:
            out.append("max_keys: must be at least 1")
        return out


@dataclasses.dataclass(frozen=True)
class AnomalyResult:
    """One key's evaluation in one interval."""

    detector: str
    key: Key
    value: float
    baseline: float
    score: float
    z: float
    observations: int
    severity: str
    trace_ids: tuple[str, ...] = ()
    statistic: str = "median"

    @property
    def agent(self) -> str:
        """The agent (or service, for process metrics) of the key."""
        return self.key[0]


class _Acc:
    """One key's accumulators for the current interval.

    Slotted, values in one growable array, the example heap made on first use, trace IDs kept
    as the batch's own ``bytes`` (hex only for the result): under name churn an interval holds
    up to ``2 · max_keys`` of these per detector, rebuilt every interval, and the overflow
    key's list took one small array per folded key and batch (~160,000 objects between two
    evaluations in RC-13's flood).  Hex encoding preserves byte order, so examples rank as
    they did with hex strings.
    """

    __slots__ = ("_buf", "_n", "_owned", "calls", "events", "examples")

    def __init__(self, first: F64 | None = None) -> None:
        self._buf: F64 | None = first
        self._n = 0 if first is None else int(first.shape[0])
        self._owned = False  # _buf is the caller's array until the first append copies it
        self.events = 0
        self.calls = 0
        self.examples: list[tuple[float, bytes]] | None = None

    def add(self, values: F64) -> None:
        """Append raw values (amortised O(1) per value: capacity doubles)."""
        buf, n, m = self._buf, self._n, int(values.shape[0])
        if buf is None:
            self._buf, self._n = values, m  # most keys get a single piece per interval
            return
        end = n + m
        if not self._owned or end > buf.shape[0]:
            grown = np.empty(max(end, 2 * n, 8), dtype=np.float64)
            grown[:n] = buf[:n]
            self._buf = buf = grown
            self._owned = True
        buf[n:end] = values
        self._n = end

    @property
    def values(self) -> F64:
        """Every value added this interval."""
        if self._buf is None:
            return np.zeros(0, dtype=np.float64)
        return self._buf[: self._n]

    def example(self, value: float, trace_id: bytes) -> None:
        ex = self.examples
        if ex is None:
            self.examples = [(value, trace_id)]
        elif len(ex) < _EXAMPLES:
            heapq.heappush(ex, (value, trace_id))
        elif value > ex[0][0]:
            heapq.heapreplace(ex, (value, trace_id))

    def trace_ids(self) -> tuple[str, ...]:
        """The example trace IDs (hex), largest value first."""
        if not self.examples:
            return ()
        return tuple(t.hex() for _, t in sorted(self.examples, reverse=True))


class AnomalyEngine:
    """Accumulates per interval, scores against baselines, learns."""

    def __init__(self, config: AnomalyConfig) -> None:
        self.config = config
        self._on = frozenset(config.detectors)
        self._acc: dict[tuple[str, Key], _Acc] = {}
        self._acc_n = dict.fromkeys(DETECTORS, 0)  # accumulators per detector this interval
        self._tables = {d: BaselineTable(config.max_keys) for d in DETECTORS}
        self._rate_cfg = dataclasses.replace(
            config.baseline, min_effect=max(config.baseline.min_effect, 1.0)
        )
        # Sessions legitimately span several runs: only a multiple of the usual total is news.
        self._session_cfg = dataclasses.replace(
            config.baseline, min_effect=max(config.baseline.min_effect, 3.0)
        )
        self._next_eval: float | None = None
        self._cumulative: dict[tuple[str, str, tuple[tuple[str, str], ...]], tuple[float, int]] = {}
        self.last: dict[tuple[str, Key], AnomalyResult] = {}

    # -- accumulate ---------------------------------------------------------------------------

    def _acc_for(self, detector: str, key: Key) -> _Acc:
        a = self._acc.get((detector, key))
        if a is None:
            if self._acc_n[detector] >= 2 * self.config.max_keys:
                # Unbounded names (B22): beyond the cap an interval's new keys share one
                # overflow series per detector and kind instead of a baseline each.  The cap
                # is per detector (twice its baseline table): a shared cap let one detector
                # take every detector's share, and keys past its table's size only churn it.
                key = (OVERFLOW, key[1], OVERFLOW)
                a = self._acc.get((detector, key))
                if a is not None:
                    return a
            a = self._acc[(detector, key)] = _Acc()
            self._acc_n[detector] += 1
        return a

    def add_spans(self, batch: SpanBatch) -> None:
        """Accumulate a batch's latencies, errors, tokens and cost (columns, grouped once)."""
        if batch.n == 0:
            return
        ak = analysis_keys(batch)
        keys, inv = ak.keys, ak.inv
        g = len(keys)
        dur = batch.duration_s
        err = batch.is_error
        calls = np.bincount(inv, minlength=g)
        errors = np.bincount(inv, weights=err, minlength=g).astype(np.int64)
        order = np.argsort(inv, kind="stable")
        bounds = np.searchsorted(inv[order], np.arange(g + 1))
        tokens = (batch.input_tokens + batch.output_tokens).astype(np.float64)
        inf = batch.is_inference
        # Spend per interval is a total: under analysis sampling it is estimated (cost x the
        # span's adjusted count), so a drop in the analysed fraction is not a drop in spend.
        cost_by_group = np.bincount(
            inv, weights=np.where(inf, batch.cost * batch.weight, 0.0), minlength=g
        )
        tid = batch.trace_id
        for k, key in enumerate(keys):
            rows = order[bounds[k] : bounds[k + 1]]
            kk = key[1]
            if kk == KIND_OTHER and key[2] == "span":
                continue  # spans with no agent semantics: their parents' keys cover them
            lat_det = A2A_LATENCY if kk == KIND_A2A else LATENCY
            if lat_det in self._on:
                a = self._acc_for(lat_det, key)  # type: ignore[arg-type]
                d = dur[rows]
                a.add(d)
                j = int(np.argmax(d))
                a.example(float(d[j]), bytes(tid[rows[j]]))
            err_det = TOOL_ERROR_RATE if kk == KIND_TOOL else ERROR_RATIO
            if err_det in self._on:
                a = self._acc_for(err_det, key)  # type: ignore[arg-type]
                a.events += int(errors[k])
                a.calls += int(calls[k])
                if errors[k]:
                    e = rows[err[rows]]
                    a.example(float(errors[k]), bytes(tid[e[0]]))
            if kk == KIND_MODEL and TOKENS_PER_CALL in self._on:
                t = tokens[rows]
                t = t[t > 0]
                if t.shape[0]:
                    a = self._acc_for(TOKENS_PER_CALL, key)  # type: ignore[arg-type]
                    a.add(t)
                    j = int(np.argmax(tokens[rows]))
                    a.example(float(tokens[rows][j]), bytes(tid[rows[j]]))
            if kk == KIND_MODEL and COST_RATE in self._on and cost_by_group[k] > 0:
                a = self._acc_for(COST_RATE, (key[0], "rate", "cost"))
                a.add(np.array([cost_by_group[k]]))
                a.calls += int(calls[k])
                j = int(np.argmax(batch.cost[rows]))
                a.example(float(batch.cost[rows][j]), bytes(tid[rows[j]]))

    def add_traces(
        self,
        traces: CompletedTraces,
        trace_cost: F64,
        session_cost: Mapping[str, Sequence[float]] | None = None,
    ) -> None:
        """Accumulate cost per trace by the agent that roots it (complete traces only) and,
        with ``session_cost`` (conversation ID → ``[cumulative cost, ...]``), the largest session
        total each agent's runs reached in this interval."""
        on_trace, on_session = COST_PER_TRACE in self._on, COST_PER_SESSION in self._on
        if not (on_trace or on_session) or traces.n_traces == 0:
            return
        ok = (traces.root >= 0) & ~traces.late
        if not ok.any():
            return
        roots = traces.root[ok]
        agents = traces.root_agent[ok]
        convs = traces.spans.conversation_id[roots].tolist()
        costs = trace_cost[ok]
        tno = np.nonzero(ok)[0]
        keys, inv = group_keys(agents)
        for k, (agent,) in enumerate(keys):
            m = inv == k
            j = int(np.argmax(costs[m]))
            example = bytes(traces.spans.trace_id[int(traces.offsets[int(tno[m][j])])])
            if on_trace:
                a = self._acc_for(COST_PER_TRACE, (agent, "trace", "cost"))
                a.add(costs[m])
                a.example(float(costs[m][j]), example)
            if on_session and session_cost:
                totals = [
                    (session_cost.get(convs[i], (0.0,))[0], int(tno[i]))
                    for i in np.nonzero(m)[0].tolist()
                    if convs[i]
                ]
                if totals:
                    top, t = max(totals)
                    a = self._acc_for(COST_PER_SESSION, (agent, "session", "cost"))
                    a.add(np.array([top]))
                    a.example(top, bytes(traces.spans.trace_id[int(traces.offsets[t])]))

    def add_metrics(self, request: ExportMetricsServiceRequest) -> None:
        """Accumulate process resource metrics (gauge and sum points) by service."""
        if PROCESS_RESOURCE not in self._on:
            return
        wanted = set(self.config.process_metrics)
        for rm in request.resource_metrics:
            service = ""
            for kv in rm.resource.attributes:
                if kv.key == "service.name":
                    service = kv.value.string_value
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name not in wanted:
                        continue
                    which = m.WhichOneof("data")
                    if which not in ("gauge", "sum"):
                        continue
                    value = self._metric_value(service, m, which)
                    if value is not None:
                        a = self._acc_for(PROCESS_RESOURCE, (service, "process", m.name))
                        a.add(np.array([value]))

    def _metric_value(self, service: str, metric: Any, which: str) -> float | None:
        """One value per metric and request: gauges and non-monotonic sums are summed over their
        series; monotonic sums (``process.cpu.time``) become a rate per second, since a
        cumulative counter only ever rises and would look anomalous against its own past."""
        data = getattr(metric, which)
        monotonic = which == "sum" and data.is_monotonic
        cumulative = data.aggregation_temporality == 2  # AGGREGATION_TEMPORALITY_CUMULATIVE
        total, seen = 0.0, False
        for p in data.data_points:
            v = p.as_double if p.WhichOneof("value") == "as_double" else float(p.as_int)
            if not monotonic:
                total, seen = total + v, True
                continue
            if not cumulative:  # delta: the value covers [start, time]
                dt = (p.time_unix_nano - p.start_time_unix_nano) / 1e9
                if dt > 0:
                    total, seen = total + v / dt, True
                continue
            attrs = tuple(sorted((kv.key, str(kv.value)) for kv in p.attributes))
            skey = (service, metric.name, attrs)
            prev = self._cumulative.get(skey)
            self._cumulative[skey] = (v, p.time_unix_nano)
            if prev is not None and p.time_unix_nano > prev[1] and v >= prev[0]:
                total, seen = total + (v - prev[0]) / ((p.time_unix_nano - prev[1]) / 1e9), True
        while len(self._cumulative) > self.config.max_keys:
            self._cumulative.pop(next(iter(self._cumulative)))
        return total if seen else None

    # -- evaluate -----------------------------------------------------------------------------

    def due(self, now: float) -> bool:
        """An evaluation is due at ``now``."""
        if self._next_eval is None:
            self._next_eval = (now // self.config.interval + 1) * self.config.interval
            return False
        return now >= self._next_eval

    def evaluate(self, now: float) -> list[AnomalyResult]:
        """Score every key with data in the closed interval, then learn it."""
        self._next_eval = (now // self.config.interval + 1) * self.config.interval
        acc, self._acc = self._acc, {}
        self._acc_n = dict.fromkeys(DETECTORS, 0)
        # Rate keys with a baseline but no cost this interval learn a zero (quiet interval).
        for key, _b in self._tables[COST_RATE].items():
            acc.setdefault((COST_RATE, key), _Acc(np.zeros(1)))  # type: ignore[arg-type]
        out: list[AnomalyResult] = []
        for (det, key), a in acc.items():
            r = self._evaluate_one(det, key, a, now)
            if r is not None:
                out.append(r)
                self.last[(det, key)] = r
        if len(self.last) > 4 * self.config.max_keys:  # bounded: drop the oldest half
            for k in list(self.last)[: len(self.last) // 2]:
                del self.last[k]
        return out

    def _evaluate_one(self, det: str, key: Key, a: _Acc, now: float) -> AnomalyResult | None:
        table = self._tables[det]
        bl: Any = table.get(key)
        if det in (ERROR_RATIO, TOOL_ERROR_RATE):
            if a.calls == 0:
                return None
            if bl is None:
                bl = RateBaseline(self.config.baseline)
            score, z, base = bl.score(a.events, a.calls)
            bl.update(a.events, a.calls)
            table.put(key, bl)
            value, n = a.events / a.calls, a.calls
        else:
            vals = a.values
            if not vals.shape[0]:
                return None
            if det == COST_RATE:
                value, n = float(vals.sum()), max(a.calls, 1)
            elif det == PROCESS_RESOURCE:
                value, n = float(vals.mean()), int(vals.shape[0])
            elif det == COST_PER_SESSION:
                value, n = float(vals.max()), int(vals.shape[0])
            elif det in _DUAL:
                return self._evaluate_dual(det, key, a, vals, now)
            else:
                value, n = float(np.median(vals)), int(vals.shape[0])
            if bl is None:
                cfg = {COST_RATE: self._rate_cfg, COST_PER_SESSION: self._session_cfg}.get(
                    det, self.config.baseline
                )
                bl = SeasonalBaseline(cfg, _ABS_FLOOR.get(det, 0.0))
            score, z, base = bl.score(value, now)
            bl.update(value, n, now)
            table.put(key, bl)
        examples = a.trace_ids()
        return AnomalyResult(
            detector=det,
            key=key,
            value=value,
            baseline=base,
            score=round(score, 2),
            z=z,
            observations=n,
            severity=severity_for(score),
            trace_ids=examples,
        )

    def _evaluate_dual(self, det: str, key: Key, a: _Acc, vals: F64, now: float) -> AnomalyResult:
        """Median and upper-tail (p80) statistics against their own baselines.

        The median cannot see a fault hitting a minority of calls (it is robust to up to half
        of them); the p80 sees a fault on ≥ 20 % of calls but needs enough calls per interval
        (``_TAIL_MIN_N``) not to be one call's noise.  The higher score wins.
        """
        table = self._tables[det]
        pair: Any = table.get(key)
        if pair is None:
            floor = _ABS_FLOOR.get(det, 0.0)
            pair = (
                SeasonalBaseline(self.config.baseline, floor),
                SeasonalBaseline(self.config.baseline, floor),
            )
        n = int(vals.shape[0])
        med = float(np.median(vals))
        best = (*pair[0].score(med, now, n), med, "median")
        pair[0].update(med, n, now)
        if n >= _TAIL_MIN_N:
            tail = float(np.quantile(vals, _TAIL_Q))
            cand = (*pair[1].score(tail, now, n), tail, f"p{round(_TAIL_Q * 100)}")
            pair[1].update(tail, n, now)
            if cand[0] > best[0]:
                best = cand
        table.put(key, pair)
        score, z, base, value, stat = best
        return AnomalyResult(
            detector=det,
            key=key,
            value=value,
            baseline=base,
            score=round(score, 2),
            z=z,
            observations=n,
            severity=severity_for(score),
            trace_ids=a.trace_ids(),
            statistic=stat,
        )

    # -- introspection ------------------------------------------------------------------------

    def states(self) -> Iterable[dict[str, Any]]:
        """Every tracked key with its warm-up state and last result (for the API)."""
        for det, table in self._tables.items():
            for key, bl in table.items():
                last = self.last.get((det, key))  # type: ignore[arg-type]
                b: Any = bl[0] if isinstance(bl, tuple) else bl
                if isinstance(b, RateBaseline):
                    level: dict[str, Any] = {"ratio": b.ratio}
                else:
                    med, spread = b.glob.center_spread()
                    level = {"median": med, "spread": spread, "ewma": b.glob.ewma}
                yield level | {
                    "detector": det,
                    "key": list(cast("Key", key)),
                    "state": "ready" if b.ready else "warming_up",
                    "intervals": b.intervals if isinstance(b, RateBaseline) else b.glob.intervals,
                    "observations": (
                        int(b.calls) if isinstance(b, RateBaseline) else b.glob.observations
                    ),
                    "score": last.score if last else 0.0,
                    "value": last.value if last else None,
                    "baseline": last.baseline if last else None,
                }

    def evicted_keys(self) -> int:
        """Keys dropped by the per-detector caps."""
        return sum(t.evicted for t in self._tables.values())
