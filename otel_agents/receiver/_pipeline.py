# SPDX-License-Identifier: Apache-2.0
"""The receiver's pipeline: the spool, the components built from the config, and the threads
that feed them.

:class:`Pipeline` is three things at once:

* the ``Ingestor`` the transport servers call: :meth:`Pipeline.ingest` commits the request to the
  spool and returns only once it is durable (or raises :class:`RetryableError`);
* the :class:`otel_agents._component.Host` of every processor and exporter;
* the driver: one pipeline thread reads the spool from the ``analysis`` cursor *after* commit,
  decodes each request once (a span batch via ``otel_agents.processors.build_span_batch``) and
  hands it to the processors then the exporters in pipeline order, and ticks every component
  about once a second.  Forwarders (``otlp`` exporters) read the spool on their own threads from
  their own cursors.

Analysis never starves ingest: the pipeline thread measures its own CPU (``time.thread_time``)
spent on analysis against the rest of the process's CPU, and an
:class:`otel_agents.processors.AnalysisBudget` (config ``analysis``) turns that into the
fraction of traces analysed, per read of the spool; the spans of the other traces are skipped
after a reduced parse that reads only their trace IDs (consistent probability sampling, so
whole traces are kept), and only the sampled spans are parsed in full and decoded
(``otel_agents.processors._batch.sample_payload``).

Receiver-made log records (findings, alerts) reach the destinations through
:meth:`Pipeline.export_logs`: they are spooled with the ``internal`` flag, so forwarders send them
but the analysis cursor skips them (no feedback loop).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from otel_agents import semconv as sc
from otel_agents._component import ApiHandler, Component, Finding, FindingListener
from otel_agents._errors import RetryableError
from otel_agents.receiver._config import ComponentConfig, ReceiverConfig
from otel_agents.receiver._spool import Row, Signal, Spool, SpoolCursor

if TYPE_CHECKING:
    from otel_agents._cost import PriceBook
    from otel_agents.exporters._redact import Redactor

__all__ = ["ANALYSIS_CURSOR", "Pipeline"]

_log = logging.getLogger(__name__)

ANALYSIS_CURSOR = "analysis"
#: Exporter types that read the spool themselves (kept when analysis is off).
FORWARDER_TYPES = frozenset({"otlp"})
_REQUEST_TYPES: dict[str, type[Message]] = {
    "traces": ExportTraceServiceRequest,
    "metrics": ExportMetricsServiceRequest,
    "logs": ExportLogsServiceRequest,
}
# The pipeline thread parses spooled payloads itself rather than being handed ingest's parsed
# requests: keeping those alive past the transport's handler cost the other threads more than
# the parse (benchmarks/analysis_cost.py, 1,500 x 512 spans: whole-process CPU per span with
# every trace analysed 21-22 µs with the hand-over, 15-18 µs without; at a 1/1024 sample
# +0.8-1.6 vs +0.5-1.1 µs over forwarding alone), and it hid that cost from the analysis
# budget, which measures the analysis thread.
# Rows per read of the analysis cursor, and the pause after a read that caught up.
_READ_ROWS = 32
_READ_PAUSE = 0.05
# Coalescing of sampled batches: feed the processors once this many spans are held, or once
# the oldest has waited this long (well below any decision_wait).
_COALESCE_SPANS = 512
_COALESCE_SECONDS = 0.5


def _counter_name(name: str) -> str:
    return name.removesuffix("_total")  # prometheus_client appends it to counters


class _Stage:
    __slots__ = ("component", "id", "kind")

    def __init__(self, cid: str, kind: str, component: Component) -> None:
        self.id, self.kind, self.component = cid, kind, component


class Pipeline:
    """Spool + components + pipeline thread (see the module docstring).

    Args:
        config: the receiver configuration.
        registry: Prometheus registry for every component's metrics (a new one if omitted).
        clock: receiver clock, unix seconds (tests inject one).
        analysis: run processors and non-forwarding exporters (``--no-analysis`` turns it off).
    """

    def __init__(
        self,
        config: ReceiverConfig,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
        analysis: bool = True,
    ) -> None:
        self.config = config
        self._registry = registry if registry is not None else CollectorRegistry()
        self._clock = clock
        self._data_dir = Path(config.storage.data_dir)
        self._pricebook: PriceBook | None = None
        self._listeners: list[FindingListener] = []
        self.api_routes: dict[str, ApiHandler] = {}
        #: Where registered routes go as well (the admin server's ``register_api``).
        self.api_sink: Callable[[str, ApiHandler], None] | None = None
        self._stages: list[_Stage] = []
        self._forwarders: list[_Stage] = []
        for kind in ("processors", "exporters"):
            if kind == "processors" and not analysis:
                continue
            for cc in config.components(kind):
                if not analysis and cc.type not in FORWARDER_TYPES:
                    continue  # analysis outputs (stores, metrics) have nothing to do
                stage = _Stage(cc.id, kind, self._create(kind, cc))
                if hasattr(stage.component, "cursor_name"):
                    self._forwarders.append(stage)
                elif analysis:
                    self._stages.append(stage)
        cursors = [str(getattr(f.component, "cursor_name")) for f in self._forwarders]  # noqa: B009
        if self._stages:
            cursors.append(ANALYSIS_CURSOR)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = False
        self._spool_items = Gauge(
            sc.METRIC_SPOOL_ITEMS,
            "Items held in the spool.",
            ["signal"],
            registry=self._registry,
        )
        self._spool_bytes = Gauge(
            sc.METRIC_SPOOL_BYTES, "Payload bytes held in the spool.", registry=self._registry
        )
        self._redactor: Redactor | None = None
        if config.storage.redact_secrets:
            from otel_agents.exporters._redact import RedactionConfig, Redactor

            self._redactor = Redactor(RedactionConfig(secrets=True))
        self._redacted = Counter(
            _counter_name(sc.METRIC_SPOOL_REDACTED_VALUES),
            "Secret-looking attribute values masked before storage (storage.redact_secrets).",
            registry=self._registry,
        )
        self._skipped = Counter(
            _counter_name(sc.METRIC_PIPELINE_SKIPPED_ITEMS),
            "Items not analysed: dropped from the analysis backlog to keep accepting data "
            "(spool full) or past storage.retention, or outside the analysis sample "
            "(analysis.sampling).",
            registry=self._registry,
        )
        self._budget: Any = None
        # Sampled spans are few per request: their serialized sub-requests are held and decoded
        # together, so per-batch costs (columns, agent resolution, every stage's batch work)
        # are paid per ~512 analysed spans, not per request.
        self._held: list[tuple[bytes, list[float]]] = []
        self._held_fraction = 1.0
        self._held_received = 0.0
        self._held_spans = 0
        self._held_since = 0.0
        self._analysis_cpu = 0.0  # pipeline-thread CPU seconds spent on analysis
        self._arrived = 0  # trace spans committed by ingest (the budget's load measure)
        self._arrived_lock = threading.Lock()
        self._feed_cpu = 0.0  # pipeline-thread CPU spent decoding and feeding sampled spans
        if self._stages:
            from otel_agents.processors import AnalysisBudget

            ac = config.analysis
            # The budget plans every read itself; the window only paces the CPU-rate gauges.
            self._budget = AnalysisBudget(
                ac.mode, cpu_budget=ac.cpu_budget, cpu_floor=ac.cpu_floor, window=0.5
            )
            self._fraction = Gauge(
                sc.METRIC_ANALYSIS_FRACTION,
                "Fraction of traces analysed (analysis.sampling; 1 = every trace). Counts, cost "
                "and tokens of analysis are estimates scaled by 1/fraction when it is below 1.",
                registry=self._registry,
            )
            self._fraction.set(self._budget.effective_fraction)
            self._unsampled = Counter(
                _counter_name(sc.METRIC_ANALYSIS_UNSAMPLED_SPANS),
                "Spans forwarded but not analysed: their trace was outside the analysis sample.",
                registry=self._registry,
            )
            self._cpu_total = Counter(
                _counter_name(sc.METRIC_ANALYSIS_CPU_SECONDS),
                "CPU seconds the pipeline thread spent on analysis (reading the analysis cursor, "
                "decoding, processors, their ticks).",
                registry=self._registry,
            )
            self._cpu_seen = 0.0
            self._cpu = Gauge(
                sc.METRIC_ANALYSIS_CPU,
                "Analysis CPU, cores (smoothed), which analysis.cpu_budget bounds.",
                registry=self._registry,
            )
            self._other_cpu = Gauge(
                sc.METRIC_ANALYSIS_OTHER_CPU,
                "CPU of the rest of the receiver (ingest, spool, forwarding), cores (smoothed).",
                registry=self._registry,
            )
        self._stage_duration = Histogram(
            sc.METRIC_PIPELINE_BATCH_DURATION,
            "Time a pipeline stage spent on one batch.",
            ["stage"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self._registry,
        )
        # Last: everything above may fail; the spool holds a file open.
        st = config.storage
        self.spool = Spool(
            self._data_dir,
            max_bytes=st.max_bytes,
            retention=st.retention,
            cursors=cursors,
            lossy_cursors=[ANALYSIS_CURSOR],
            synchronous="FULL" if st.synchronous == "FULL" else "NORMAL",
            retry_after=config.admission.min_retry_delay,
        )
        #: Rows after this sequence number were stored with secrets masked by the default rules
        #: (``storage.redact_secrets``), so forwarders with the same rules need not scan them
        #: again; ``None`` when storage does not mask.
        self.secrets_redacted_after: int | None = (
            self.spool.last_seq if self._redactor is not None else None
        )

    @staticmethod
    def _create(kind: str, cc: ComponentConfig) -> Component:
        if kind == "processors":
            from otel_agents.processors import FACTORIES as factories
        else:
            from otel_agents.exporters import FACTORIES as factories
        return factories[cc.type].create(cc.config, cc.name)

    # ------------------------------------------------------------------ Host

    @property
    def data_dir(self) -> Path:
        """Directory for components' own files (the spool lives here too)."""
        return self._data_dir

    @property
    def pricebook(self) -> PriceBook:
        """The shared price book (loaded on first use: genai-prices data is large)."""
        if self._pricebook is None:
            from otel_agents._cost import PriceBook

            self._pricebook = PriceBook()
        return self._pricebook

    def now(self) -> float:
        """Receiver clock, unix seconds."""
        return self._clock()

    def emit_finding(self, finding: Finding) -> None:
        """Call every subscriber; a failing subscriber is logged and does not stop the others."""
        for listener in list(self._listeners):
            try:
                listener(finding)
            except Exception:
                _log.exception("finding subscriber %r failed", listener)

    def subscribe_findings(self, listener: FindingListener) -> None:
        """Be called with every finding emitted by any component."""
        self._listeners.append(listener)

    def export_logs(self, request: ExportLogsServiceRequest) -> None:
        """Spool receiver-made log records for the destinations (never fed back to analysis)."""
        items = sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)
        if not items or not self._forwarders:
            return
        try:
            self.spool.append(
                "logs", request.SerializeToString(), items, received_at=self.now(), internal=True
            )
        except RetryableError as exc:
            _log.warning("dropping %d receiver-made log records: %s", items, exc)

    def register_api(self, path: str, handler: ApiHandler) -> None:
        """Serve ``handler`` at ``path`` on the admin endpoint."""
        if not path.startswith("/api/"):
            raise ValueError(f"API paths start with /api/, got {path!r}")
        self.api_routes[path] = handler
        if self.api_sink is not None:
            self.api_sink(path, handler)

    @property
    def metrics_registry(self) -> CollectorRegistry:
        """The registry served at ``/metrics``."""
        return self._registry

    def spool_cursor(self, name: str) -> SpoolCursor:
        """The spool cursor of a forwarder (``SpoolHost``)."""
        return self.spool.cursor(name)

    # ------------------------------------------------------------------ Ingestor

    def ingest(self, signal: str, request: Message, payload: bytes, items: int) -> None:
        """Make one validated request durable; returns once it is committed.

        Raises:
            RetryableError: the spool is full or its storage is failing (nothing was stored).
        """
        if signal not in _REQUEST_TYPES:
            raise ValueError(f"unknown signal {signal!r}")
        sig: Signal = signal  # type: ignore[assignment]
        if self._redactor is not None:
            payload, masked = self._redactor.apply(signal, payload)
            if masked:
                self._redacted.inc(masked)
        # Analysis parses the stored payload on its own thread (see _REQUEST_TYPES' note).
        self.spool.append(sig, payload, items, received_at=self.now())
        if sig == "traces" and self._budget is not None:
            with self._arrived_lock:  # several transport threads ingest at once
                self._arrived += items

    def health(self) -> tuple[bool, dict[str, Any]]:
        """``(ready, details)`` for ``/readyz``: not ready while the spool refuses data."""
        details: dict[str, Any] = {
            "spool": "ok" if self.spool.healthy else f"degraded: {self.spool.problem}",
            "spool_bytes": self.spool.bytes,
            "spool_max_bytes": self.spool.max_bytes,
        }
        ready = self.spool.healthy and not self.spool.full
        if self.spool.healthy and self.spool.full:
            details["spool"] = "full"
        return ready, details

    # ------------------------------------------------------------------ lifecycle

    @property
    def components(self) -> Mapping[str, Component]:
        """Component ID → component, in pipeline order (forwarders last)."""
        return {s.id: s.component for s in (*self._stages, *self._forwarders)}

    def start(self) -> None:
        """Start every component, then the pipeline thread."""
        if self._started:
            return
        self._started = True
        if self._stages:
            self._warm_pricebook()
        for stage in (*self._stages, *self._forwarders):
            stage.component.start(self)
        self._thread = threading.Thread(target=self._run, name="otel-agents pipeline", daemon=True)
        self._thread.start()

    def _warm_pricebook(self) -> None:
        """Load the genai-prices data now (~0.25 s of CPU) rather than under the first traces,
        where it stalls analysis and is charged to the analysis CPU budget."""
        try:
            self.pricebook.price(model="gpt-4o", provider="openai", input_tokens=1, output_tokens=1)
        except Exception:  # pricing problems show up (and are logged) when spans are priced
            _log.debug("pipeline: warming the price book failed", exc_info=True)
        # numpy imports numpy.ma (~40 ms) on the first np.median, which the anomaly baselines
        # call at their first evaluation: under the first burst, charged to the budget.
        import numpy.ma  # noqa: F401

    def stop(self, drain_timeout: float | None = None) -> None:
        """Finish the batch in hand, let forwarders drain for ``drain_timeout``, shut down."""
        timeout = self.config.pipeline.drain_timeout if drain_timeout is None else drain_timeout
        self._stop.set()
        self.spool.wake()
        if self._thread is not None:
            self._thread.join(timeout + 5.0)
        for stage in self._forwarders:
            drain = getattr(stage.component, "drain", None)
            if callable(drain):
                drain(timeout)
        for stage in (*self._stages, *self._forwarders):
            try:
                stage.component.shutdown()
            except Exception:
                _log.exception("%s: shutdown failed", stage.id)
        self.spool.close()

    # ------------------------------------------------------------------ pipeline thread

    def _run(self) -> None:
        cursor = self.spool.cursor(ANALYSIS_CURSOR) if self._stages else None
        interval = self.config.pipeline.tick_interval
        next_tick = time.monotonic()
        cpu = time.thread_time
        while not self._stop.is_set():
            if time.monotonic() >= next_tick:
                self._tick()
                next_tick = time.monotonic() + interval
            if cursor is None:
                self._stop.wait(max(0.0, next_tick - time.monotonic()))
                continue
            t0 = cpu()
            try:
                rows = cursor.read(max_rows=_READ_ROWS, include_internal=False)
            except Exception:
                _log.exception("pipeline: reading the spool failed")
                rows = []
            if not rows:
                self._analysis_cpu += cpu() - t0
                cursor.wait(max(0.01, min(0.25, next_tick - time.monotonic())))
                continue
            budget = self._budget
            offered = sum(r.items for r in rows if r.signal == "traces" and not r.internal)
            if budget is not None and offered:
                # The fraction for exactly these spans, from what the last reads cost and
                # what the rest of the receiver spent meanwhile.
                try:
                    budget.plan(offered, self._analysis_cpu + cpu() - t0, self._arrived)
                except Exception:  # the budget must never stop the pipeline
                    _log.exception("pipeline: analysis budget plan failed")
            fed = self._feed_cpu
            for row in rows:
                if not row.internal:
                    self._process(row)
            cursor.ack(rows[-1].seq)
            # Reading, decoding and feeding rows is analysis work: the spool's analysis cursor
            # exists only for it.
            used = cpu() - t0
            self._analysis_cpu += used
            if budget is not None and offered:
                budget.record_offered(offered, max(used - (self._feed_cpu - fed), 0.0))
            self._update_budget()
            if rows[-1].seq >= self.spool.last_seq:
                # Caught up: let a few rows accumulate rather than waking (and reading, acking:
                # SQLite work under the spool's lock, contending with ingest) per request.  Not
                # after a read cut short by its byte bound: a pause there lets analysis fall
                # behind a burst, and the budget then plans reads against stale load.
                self._stop.wait(_READ_PAUSE)
        if cursor is not None:
            # Finish what was committed before shutdown (bounded by one read).
            for row in cursor.read(max_rows=256, include_internal=False):
                if not row.internal:
                    self._process(row)
                cursor.ack(row.seq)
            self._feed_held()  # before the stages' shutdown analyses what is open

    def _tick(self) -> None:
        now = self.now()
        self.spool.check()
        self.spool.compact(now)
        for signal, n in self.spool.items().items():
            self._spool_items.labels(signal).set(n)
        self._spool_bytes.set(self.spool.bytes)
        if self._stages:
            skipped = self.spool.take_expired(ANALYSIS_CURSOR)
            if skipped:
                self._skipped.inc(skipped)
        t0 = time.thread_time()
        if self._held:
            self._feed_held()  # held spans reach assembly before it decides what is complete
        for stage in self._stages:
            try:
                stage.component.tick(now)
            except Exception:
                _log.exception("%s: tick failed", stage.id)
        if self._budget is not None:
            # Trace completion (critical paths, aggregates, detectors) is analysis work too.
            self._analysis_cpu += time.thread_time() - t0
            try:  # settle the ledger at every tick, with or without traffic
                self._budget.plan(0, self._analysis_cpu, self._arrived)
            except Exception:  # the budget must never stop the pipeline
                _log.exception("pipeline: analysis budget plan failed")
            self._update_budget()
        for stage in self._forwarders:
            try:
                stage.component.tick(now)
            except Exception:
                _log.exception("%s: tick failed", stage.id)

    def _update_budget(self) -> None:
        budget = self._budget
        try:
            budget.update(self._analysis_cpu)
        except Exception:  # the budget must never stop the pipeline
            _log.exception("pipeline: analysis budget update failed")
            return
        self._fraction.set(budget.effective_fraction)
        self._cpu_total.inc(self._analysis_cpu - self._cpu_seen)
        self._cpu_seen = self._analysis_cpu
        self._cpu.set(budget.analysis_rate)
        self._other_cpu.set(budget.other_rate)

    @property
    def analysed_fraction(self) -> float:
        """Fraction of traces analysed now (1.0 without sampling or without analysis)."""
        return 1.0 if self._budget is None else float(self._budget.effective_fraction)

    def _decode(self, row: Row) -> Message | None:
        request = _REQUEST_TYPES[row.signal]()
        try:
            request.ParseFromString(row.payload)
        except DecodeError:
            _log.error(
                "pipeline: spooled %s request %d does not parse; skipped", row.signal, row.seq
            )
            return None
        return request

    def _process(self, row: Row) -> None:
        if row.signal == "traces":
            self._process_traces(row)
            return
        request = self._decode(row)
        if request is None:
            return
        if row.signal == "metrics":
            self._feed("process_metrics", request)
        else:
            self._feed("process_logs", request)

    def _process_traces(self, row: Row) -> None:
        from otel_agents.processors._batch import sample_payload
        from otel_agents.processors._sampling import threshold_to_probability

        threshold = self._budget.threshold if self._budget is not None else 0
        if threshold == 0:
            self._feed_held()  # keep arrival order when the fraction returns to 1
            t0 = time.thread_time()
            batch = self._build(row)
            if batch is not None and batch.n:
                self._feed("process_traces", batch)
            self._account_feed(batch.n if batch is not None else 0, t0)
            return
        start = time.perf_counter()
        try:
            part = sample_payload(row.payload, threshold)
        except DecodeError:
            _log.error("pipeline: spooled traces request %d does not parse; skipped", row.seq)
            return
        except Exception:
            _log.exception("pipeline: sampling a span batch failed; batch skipped for analysis")
            return
        self._stage_duration.labels("span_sample").observe(time.perf_counter() - start)
        kept = len(part[1])
        if kept < row.items:
            # Outside the analysis sample: forwarded, not analysed.  Counted as skipped too,
            # so analysed + skipped still accounts for every span received.
            self._unsampled.inc(row.items - kept)
            self._skipped.inc(row.items - kept)
        if kept:
            if not self._held:
                self._held_since = time.monotonic()
                self._held_fraction = 1.0
                self._held_received = row.received_at
            self._held.append(part)
            self._held_spans += kept
            self._held_received = max(self._held_received, row.received_at)
            self._held_fraction = min(self._held_fraction, threshold_to_probability(threshold))
        if self._held_spans >= _COALESCE_SPANS or (
            self._held and time.monotonic() - self._held_since >= _COALESCE_SECONDS
        ):
            self._feed_held()

    def _feed_held(self) -> None:
        if not self._held:
            return
        from otel_agents.processors._batch import build_sampled_span_batch

        t0 = time.thread_time()
        held, self._held, self._held_spans = self._held, [], 0
        start = time.perf_counter()
        try:
            batch = build_sampled_span_batch(
                held,
                pricebook=self.pricebook,
                received_at=self._held_received,
                fraction=self._held_fraction,
            )
        except Exception:  # DecodeError included: the kept spans are skipped, not the stream
            _log.exception("pipeline: building a sampled span batch failed; batch skipped")
            self._account_feed(0, t0)
            return
        self._stage_duration.labels("span_batch").observe(time.perf_counter() - start)
        if batch.n:
            self._feed("process_traces", batch)
        self._account_feed(batch.n, t0)

    def _account_feed(self, spans: int, t0: float) -> None:
        """Charge decoding and feeding ``spans`` sampled spans to the budget's cost model."""
        used = time.thread_time() - t0
        self._feed_cpu += used
        if self._budget is not None:
            self._budget.record_analysed(spans, used)

    def _build(self, row: Row) -> Any:
        """Every span of a spooled traces request as a batch (``None``: it does not parse)."""
        from otel_agents.processors._batch import build_span_batch_from_payload

        start = time.perf_counter()
        try:
            batch = build_span_batch_from_payload(
                row.payload, pricebook=self.pricebook, received_at=row.received_at
            )
        except DecodeError:
            _log.error("pipeline: spooled traces request %d does not parse; skipped", row.seq)
            return None
        except Exception:
            _log.exception("pipeline: building a span batch failed; batch skipped for analysis")
            return None
        self._stage_duration.labels("span_batch").observe(time.perf_counter() - start)
        return batch

    def _feed(self, method: str, data: Any) -> None:
        for stage in self._stages:
            start = time.perf_counter()
            try:
                getattr(stage.component, method)(data)
            except Exception:
                _log.exception("%s: %s failed", stage.id, method)
            self._stage_duration.labels(stage.id).observe(time.perf_counter() - start)
