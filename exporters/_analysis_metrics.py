# SPDX-License-Identifier: Apache-2.0
"""Analysis results as Prometheus metrics (docs/architecture.md "Analysis" names).

Numpy-fed state: the analysis stage adds whole batches (grouped once) instead of calling
``observe()`` per span.  Every family caps its label sets (``max_series``, the spec's default
2000): new label sets beyond the cap go to one series whose label values are all
``__overflow__`` (CVE-2023-45142, reliability B22), and the measurements folded into it are
counted per family in ``otel_agents_metric_overflow_total{metric}`` (the receiver's analogue of
the SDK's ``otel.metric.overflow=true`` series).

Scrapes do not go through ``prometheus_client``'s ``Metric``/``Sample`` objects:
:func:`exposition_chunks` renders the families straight from this state into text chunks of
about 64 KiB, one family snapshot (a copy taken under the lock) at a time.  Under name churn
the families hold ~2,001 series each (the duration histogram alone ~36,000 samples): building
a ``Sample`` and a label dict per sample and a multi-MiB body per 3-s scrape was the receiver's
largest allocation churn in the RC-12 soak.  :meth:`AnalysisMetrics.collect` still yields the
same families as ``prometheus_client`` objects, so ``generate_latest(registry)`` keeps working,
and the two renderings are byte-identical (tests/exporters/test_analysis_metrics.py).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from otel_agents import semconv as sc
from otel_agents._component import Finding

if TYPE_CHECKING:
    from otel_agents.processors._anomaly import AnomalyResult
    from otel_agents.processors._batch import SpanBatch
    from otel_agents.processors._bottleneck import Bottleneck
    from otel_agents.processors._graph import Edge, EdgeKey

__all__ = ["OVERFLOW", "AnalysisMetrics", "exposition_chunks"]

OVERFLOW = "__overflow__"
_GRAPH_BUCKETS = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 51.2, 102.4)
_CHUNK_CHARS = 64 * 1024  # text per yielded chunk: no multi-MiB body per scrape
# Set while exposition_chunks asks the registry for everything else, so the registry's
# encoder skips the families rendered directly (thread-local: concurrent scrapes and
# generate_latest() on other threads are unaffected).
_direct = threading.local()


def _escape_value(v: str) -> str:
    return v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _fmt(v: float) -> str:
    """``prometheus_client``'s float formatting (Go-style exponents), with a fast path for the
    small whole numbers most counters and bucket counts are."""
    v = float(v)
    if v.is_integer() and 0 <= v < 1_000_000:
        return f"{int(v)}.0"
    return str(floatToGoString(v))  # type: ignore[no-untyped-call]


class _Family:
    """One metric family's series, capped."""

    def __init__(
        self, kind: str, name: str, doc: str, labels: Sequence[str], max_series: int,
        buckets: Sequence[float] = (),
    ) -> None:  # fmt: skip
        self.kind = kind
        self.name = name
        self.doc = doc
        self.labels = tuple(labels)
        self.max_series = max_series
        self.buckets = tuple(buckets)
        self.values: dict[tuple[str, ...], float] = {}
        # Histograms: one row per series in a 2-D array (slot order = insertion order of
        # ``slots``) instead of a numpy array and a list per series — 2,001 series of 17
        # buckets are one 272 KiB block, and a scrape snapshot is one copy.
        nb = len(self.buckets) + 1
        self.slots: dict[tuple[str, ...], int] = {}
        # float: under analysis sampling each span counts with its adjusted count (1/p)
        self.counts: np.ndarray[Any, np.dtype[np.float64]] = np.zeros((0, nb), np.float64)
        self.sums: np.ndarray[Any, np.dtype[np.float64]] = np.zeros(0, np.float64)
        #: measurements folded into the overflow series (exposed as
        #: ``otel_agents_metric_overflow_total{metric}``)
        self.overflowed = 0
        self._le = [*(repr(float(b)) for b in self.buckets), "+Inf"]
        # Exposition label order is sorted by label name (what prometheus_client writes), with
        # ``le`` placed among them for histogram buckets.
        self._order = sorted(range(len(self.labels)), key=lambda i: self.labels[i])
        self._le_at = sum(1 for n in self.labels if n < "le")

    def _key(self, key: tuple[str, ...], table: Mapping[tuple[str, ...], Any]) -> tuple[str, ...]:
        if key in table or len(table) < self.max_series:
            return key
        self.overflowed += 1
        return (OVERFLOW,) * len(self.labels)

    def add(self, key: tuple[str, ...], value: float) -> None:
        k = self._key(key, self.values)
        self.values[k] = self.values.get(k, 0.0) + value

    def set(self, key: tuple[str, ...], value: float) -> None:
        self.values[self._key(key, self.values)] = value

    def ensure(self, key: tuple[str, ...]) -> None:
        """Create the series at 0 if there is room (never spills into the overflow series)."""
        if key not in self.values and len(self.values) < self.max_series:
            self.values[key] = 0.0

    def observe_counts(
        self, key: tuple[str, ...], counts: np.ndarray[Any, Any], total: float
    ) -> None:
        """Add per-bucket (non-cumulative, last = +Inf) counts and their sum."""
        k = self._key(key, self.slots)
        slot = self.slots.get(k)
        if slot is None:
            slot = len(self.slots)
            if slot == self.counts.shape[0]:  # grow by doubling, up to the cap + overflow
                rows = min(max(8, 2 * slot), self.max_series + 1)
                grown = np.zeros((rows, self.counts.shape[1]), np.float64)
                grown[:slot] = self.counts
                self.counts = grown
                sums = np.zeros(rows, np.float64)
                sums[:slot] = self.sums
                self.sums = sums
            self.slots[k] = slot
        self.counts[slot] += counts
        self.sums[slot] += total

    # -- exposition --------------------------------------------------------------------------

    def snapshot(self) -> tuple[list[tuple[str, ...]], Any, Any]:
        """A consistent copy to render outside the lock (call with the lock held)."""
        if self.kind == "histogram":
            n = len(self.slots)
            return list(self.slots), self.counts[:n].copy(), self.sums[:n].copy()
        return list(self.values), list(self.values.values()), None

    def metric(self) -> Metric:
        """The family as a ``prometheus_client`` object (for ``generate_latest``)."""
        if self.kind == "histogram":
            h = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
            n = len(self.slots)
            cum = np.cumsum(self.counts[:n], axis=1).tolist()
            for key, row, total in zip(self.slots, cum, self.sums[:n].tolist(), strict=True):
                h.add_metric(list(key), list(zip(self._le, row, strict=True)), total)
            return h
        cls = CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily
        m = cls(self.name, self.doc, labels=self.labels)
        for key, v in self.values.items():
            m.add_metric(list(key), v)
        return m

    def header(self, openmetrics: bool) -> str:
        """``# HELP`` / ``# TYPE`` lines (counter names carry ``_total`` in the 0.0.4 format)."""
        name = self.name
        if self.kind == "counter" and not openmetrics:
            name += "_total"
        doc = self.doc.replace("\\", r"\\").replace("\n", r"\n")
        if openmetrics:
            doc = doc.replace('"', r"\"")
        return f"# HELP {name} {doc}\n# TYPE {name} {self.kind}\n"

    def lines(self, snap: tuple[list[tuple[str, ...]], Any, Any]) -> Iterator[str]:
        """Sample lines of a snapshot, one series at a time."""
        keys, values, sums = snap
        labels, order = self.labels, self._order
        if self.kind != "histogram":
            name = self.name + "_total" if self.kind == "counter" else self.name
            for key, v in zip(keys, values, strict=True):
                if labels:
                    lab = ",".join(f'{labels[i]}="{_escape_value(key[i])}"' for i in order)
                    yield f"{name}{{{lab}}} {_fmt(v)}\n"
                else:
                    yield f"{name} {_fmt(v)}\n"
            return
        name, le_at, les = self.name, self._le_at, self._le
        cum = np.cumsum(values, axis=1)
        for key, row, total in zip(keys, cum, sums.tolist(), strict=True):
            pairs = [f'{labels[i]}="{_escape_value(key[i])}"' for i in order]
            before = "".join(p + "," for p in pairs[:le_at])
            after = "".join("," + p for p in pairs[le_at:])
            plain = ",".join(pairs)
            row_l = row.tolist()
            out = [
                f'{name}_bucket{{{before}le="{le}"{after}}} {_fmt(float(c))}\n'
                for le, c in zip(les, row_l, strict=True)
            ]
            count = _fmt(float(row_l[-1]))
            if plain:
                out.append(
                    f"{name}_count{{{plain}}} {count}\n{name}_sum{{{plain}}} {_fmt(total)}\n"
                )
            else:
                out.append(f"{name}_count {count}\n{name}_sum {_fmt(total)}\n")
            yield "".join(out)


class AnalysisMetrics:
    """The analysis metric families; one instance per registry (shared by analysis stages)."""

    _shared: weakref.WeakKeyDictionary[Any, AnalysisMetrics] = weakref.WeakKeyDictionary()
    _shared_lock = threading.Lock()

    @classmethod
    def for_registry(cls, registry: Any, max_series: int = 2000) -> AnalysisMetrics:
        """The instance registered on ``registry`` (created and registered on first use)."""
        with cls._shared_lock:
            inst = cls._shared.get(registry)
            if inst is None:
                inst = cls(max_series)
                registry.register(inst)
                cls._shared[registry] = inst
            return inst

    def __init__(self, max_series: int = 2000) -> None:
        self._lock = threading.Lock()
        ms = max_series
        f = _Family
        self.calls = f("counter", "otel_agents_operation_calls", "Agent operations by outcome.",
                       ("agent", "operation", "name", "status"), ms)  # fmt: skip
        self.duration = f("histogram", "otel_agents_operation_duration_seconds",
                          "Agent operation durations (GenAI buckets).",
                          ("agent", "operation", "name"), ms, sc.OPERATION_DURATION_BUCKETS)  # fmt: skip
        self.tokens = f("counter", "otel_agents_tokens", "Tokens used by inference calls.",
                        ("agent", "model", "token_type"), ms)  # fmt: skip
        self.cost = f("counter", "otel_agents_cost_usd", "Inference cost in USD.",
                      ("agent", "model"), ms)  # fmt: skip
        self.unpriced = f("counter", "otel_agents_unpriced_calls",
                          "Inference calls with tokens that no price table could price.",
                          ("model",), ms)  # fmt: skip
        self.cp_seconds = f("counter", "otel_agents_critical_path_seconds",
                            "Time on trace critical paths.", ("agent", "kind", "name"), ms)  # fmt: skip
        self.cp_share = f("gauge", "otel_agents_critical_path_share",
                          "Share of critical-path time in the last window.",
                          ("agent", "kind", "name"), ms)  # fmt: skip
        self.score = f("gauge", "otel_agents_anomaly_score", "Anomaly score 0-100.",
                       ("detector", "agent", "key"), ms)  # fmt: skip
        self.findings = f("counter", "otel_agents_findings", "Findings emitted.",
                          ("kind", "severity"), ms)  # fmt: skip
        self.completed = f("counter", "otel_agents_traces_completed", "Traces assembled.", (), ms)
        self.evicted = f("counter", "otel_agents_traces_evicted",
                         "Traces completed early because the open-trace table was full.", (), ms)  # fmt: skip
        self.late = f("counter", "otel_agents_late_spans",
                      "Spans that arrived after their trace completed.", (), ms)  # fmt: skip
        self.orphans = f("counter", "otel_agents_orphan_spans",
                         "Spans whose parent (or A2A peer span) never arrived.", ("reason",), ms)  # fmt: skip
        self.open = f(
            "gauge", "otel_agents_open_traces", "Traces waiting for decision_wait.", (), ms
        )
        g = ("client", "server", "connection_type")
        self.g_total = f(
            "counter", "traces_service_graph_request", "Agent graph edge calls.", g, ms
        )
        self.g_failed = f("counter", "traces_service_graph_request_failed",
                          "Agent graph edge failed calls.", g, ms)  # fmt: skip
        self.g_seconds = f("histogram", "traces_service_graph_request_server_seconds",
                           "Agent graph edge server-side duration.", g, ms, _GRAPH_BUCKETS)  # fmt: skip
        self.families = [
            self.calls, self.duration, self.tokens, self.cost, self.unpriced, self.cp_seconds,
            self.cp_share, self.score, self.findings, self.completed, self.evicted, self.late,
            self.orphans, self.open, self.g_total, self.g_failed, self.g_seconds,
        ]  # fmt: skip
        # Refreshed from the families' counts at every snapshot (one series per family, 0 until
        # it overflows, so rate() sees the first overflow).
        self.overflow = f("counter", sc.METRIC_ANALYSIS_METRIC_OVERFLOW.removesuffix("_total"),
                          "Measurements folded into a family's __overflow__ series because the "
                          "family was at its series cap.", ("metric",), len(self.families))  # fmt: skip
        self._findings_claimed = False

    def _all(self) -> list[_Family]:
        """Every family, the overflow counts brought up to date (call with the lock held)."""
        self.overflow.values = {(fam.name,): float(fam.overflowed) for fam in self.families}
        return [*self.families, self.overflow]

    # -- prometheus_client Collector protocol ------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        """A consistent snapshot of every family (nothing while :func:`exposition_chunks`
        renders them directly on this thread)."""
        if getattr(_direct, "active", False):
            return
        with self._lock:
            out = [fam.metric() for fam in self._all()]
        yield from out

    def describe(self) -> Iterable[Metric]:
        """Family names (lets the registry reject duplicate registrations)."""
        fams = [*self.families, self.overflow]
        return [_Family(f.kind, f.name, f.doc, f.labels, 0).metric() for f in fams]

    def render(self, openmetrics: bool = False) -> Iterator[str]:
        """The families as exposition text pieces (text format 0.0.4, or OpenMetrics 1.0
        without the ``# EOF`` line), each family from its own snapshot."""
        with self._lock:
            fams = self._all()
        for fam in fams:
            with self._lock:
                snap = fam.snapshot()
            yield fam.header(openmetrics)
            yield from fam.lines(snap)

    # -- updates from the analysis stage -----------------------------------------------------

    def on_spans(self, batch: SpanBatch) -> None:
        """Calls, durations, tokens, cost and unpriced calls of a batch (grouped once).

        Under analysis sampling (``batch.weight`` != 1) every span counts with its adjusted
        count, so these counters estimate all received traffic, like the ``/api/v1``
        roll-ups (Horvitz-Thompson); with every trace analysed the weights are 1 and the
        figures exact.
        """
        from otel_agents.processors._batch import analysis_keys, group_keys

        if batch.n == 0:
            return
        ak = analysis_keys(batch)
        err = batch.is_error
        w = batch.weight
        ucode, inv = np.unique(ak.inv * 2 + err, return_inverse=True)
        inv = inv.reshape(-1)
        keys = [(*ak.keys[c // 2], "error" if c % 2 else "ok") for c in ucode.tolist()]
        g = len(keys)
        calls = np.bincount(inv, weights=w, minlength=g)
        dur = batch.duration_s
        sums = np.bincount(inv, weights=dur * w, minlength=g)
        nb = len(sc.OPERATION_DURATION_BUCKETS) + 1
        b = np.searchsorted(np.asarray(sc.OPERATION_DURATION_BUCKETS), dur, side="left")
        hist = np.bincount(inv * nb + b, weights=w, minlength=g * nb).reshape(g, nb)
        inf = batch.is_inference
        idx = np.nonzero(inf)[0]
        with self._lock:
            for k, key in enumerate(keys):
                self.calls.add(key, float(calls[k]))
                # Both outcomes exist from a label set's first batch on: an error series that
                # first appears at its final count gives Prometheus' rate() no increase to see.
                self.calls.ensure((*key[:3], "ok" if key[3] == "error" else "error"))
                self.duration.observe_counts(key[:3], hist[k], float(sums[k]))
            if idx.shape[0]:
                mkeys, minv = group_keys(batch.agent_name[idx], batch.request_model[idx])
                mg = len(mkeys)
                wi = w[idx]
                tin = np.bincount(minv, weights=batch.input_tokens[idx] * wi, minlength=mg)
                tout = np.bincount(minv, weights=batch.output_tokens[idx] * wi, minlength=mg)
                cost = np.bincount(minv, weights=batch.cost[idx] * wi, minlength=mg)
                unp = np.bincount(minv, weights=batch.unpriced[idx] * wi, minlength=mg)
                for k, (agent, model) in enumerate(mkeys):
                    if tin[k]:
                        self.tokens.add((agent, model, sc.TOKEN_TYPE_INPUT), float(tin[k]))
                    if tout[k]:
                        self.tokens.add((agent, model, sc.TOKEN_TYPE_OUTPUT), float(tout[k]))
                    self.cost.add((agent, model), float(cost[k]))
                    if unp[k]:
                        self.unpriced.add((model,), float(unp[k]))

    def on_critical_path(self, seconds: Mapping[tuple[str, str, str], float]) -> None:
        """Critical-path seconds per ``(agent, kind, name)`` of a completed set."""
        with self._lock:
            for key, v in seconds.items():
                self.cp_seconds.add(key, v)

    def set_shares(self, bottlenecks: Sequence[Bottleneck]) -> None:
        """The window's critical-path shares (replaces the previous window)."""
        with self._lock:
            self.cp_share.values.clear()
            for b in bottlenecks:
                self.cp_share.set((b.agent, b.kind, b.name), b.share)

    def on_edges(self, edges: Mapping[EdgeKey, Edge]) -> None:
        """Agent graph edge deltas."""
        with self._lock:
            for key, e in edges.items():
                self.g_total.add(key, float(e.calls))
                self.g_failed.add(key, float(e.failed))
                self.g_seconds.observe_counts(key, e.buckets, e.seconds)

    def set_scores(self, results: Iterable[AnomalyResult]) -> None:
        """The last interval's anomaly scores (keys without data this interval disappear, so a
        score never stays up after its key went quiet)."""
        with self._lock:
            self.score.values.clear()
            for r in results:
                self.score.set((r.detector, r.key[0], r.key[2]), r.score)

    def claim_findings(self) -> bool:
        """True once: the caller subscribes :meth:`on_finding` (so findings count once)."""
        with self._lock:
            first = not self._findings_claimed
            self._findings_claimed = True
            return first

    def on_finding(self, finding: Finding) -> None:
        """Count an emitted finding (subscribed through the host)."""
        with self._lock:
            self.findings.add((finding.kind, finding.severity), 1.0)

    def on_assembly(
        self, *, completed: int, evicted: int, late: int, orphans: Mapping[str, int],
        open_traces: int,
    ) -> None:  # fmt: skip
        """Assembly counter deltas since the last call, and the current open-trace count."""
        with self._lock:
            self.completed.add((), float(completed))
            self.evicted.add((), float(evicted))
            self.late.add((), float(late))
            for reason, delta in orphans.items():
                self.orphans.add((reason,), float(delta))
            self.open.set((), float(open_traces))


def exposition_chunks(
    registry: Any, encoder: Callable[[Any], bytes], *, openmetrics: bool
) -> Iterator[bytes]:
    """The registry's exposition as UTF-8 chunks of about 64 KiB: ``encoder`` (from
    ``prometheus_client.exposition.choose_encoder``) renders every other collector, the
    :class:`AnalysisMetrics` registered on ``registry`` (if any) is rendered directly.

    Args:
        registry: a ``prometheus_client.CollectorRegistry``.
        encoder: the encoder chosen for the scraper's ``Accept`` header.
        openmetrics: whether ``encoder`` writes OpenMetrics (its ``# EOF`` line stays last).
    """
    with AnalysisMetrics._shared_lock:
        analysis = AnalysisMetrics._shared.get(registry)
    if analysis is None:
        yield encoder(registry)
        return
    _direct.active = True
    try:
        head = encoder(registry)
    finally:
        _direct.active = False
    eof = b"# EOF\n"
    if openmetrics and head.endswith(eof):
        head = head[: -len(eof)]
    yield head
    buf: list[str] = []
    size = 0
    for piece in analysis.render(openmetrics):
        buf.append(piece)
        size += len(piece)
        if size >= _CHUNK_CHARS:
            yield "".join(buf).encode()
            buf.clear()
            size = 0
    if openmetrics:
        buf.append("# EOF\n")
    if buf:
        yield "".join(buf).encode()
