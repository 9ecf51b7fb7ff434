# SPDX-License-Identifier: Apache-2.0
"""Agent metrics derived from finished spans, and process metrics.

:class:`AgentMetricsProcessor` is a :class:`~opentelemetry.sdk.trace.SpanProcessor` whose
``on_end`` turns GenAI / agent spans into measurements through the OpenTelemetry *metrics API*,
so any reader or exporter the application configured (OTLP, Prometheus, in-memory) gets them:

==================================  ===========  ===============================================
metric                              instrument   from
==================================  ===========  ===============================================
``gen_ai.client.token.usage``       histogram    inference spans, one point per token type
``gen_ai.client.operation.duration`` histogram   inference spans (``s``, spec buckets)
``gen_ai.invoke_agent.duration``    histogram    ``invoke_agent`` spans
``gen_ai.execute_tool.duration``    histogram    ``execute_tool`` spans
``agent.cost``                      counter      ``gen_ai.usage.cost.amount`` (``USD``)
``agent.cost.unpriced_calls``       counter      inference spans marked ``agent.cost.unpriced``
``agent.decisions``                 counter      ``agent.decision`` span events
``agent.a2a.messages``              counter      spans with ``a2a.method.name``
==================================  ===========  ===============================================

Bucket boundaries are given as the explicit-bucket *advisory* (OTel API 1.23+), so a user View
still wins.  Attribute sets are the conventions' low-cardinality ones; the SDK's per-reader
cardinality limit (default 2000) plus its ``otel.metric.overflow=true`` series keeps memory
bounded even when agent or tool names are attacker-controlled (CVE-2023-45142 class).

Behind the enriching processor the spans arrive in batches on its worker thread
(:meth:`AgentMetricsProcessor.otel_agents_on_end_batch`): counter increments are summed per series
and added once per batch; histogram values are collected per series and merged into the SDK's
own aggregations once per series (:class:`_SdkHistogramMerge`, the one guarded use of SDK metrics
internals — proven equal to per-value ``record()`` by a probe at first use, public ``record()``
otherwise; see ``docs/architecture.md``). Exemplars come from each span's own context.

:func:`install_metrics` is the one call ``configure()`` and the zero-code hook make: it attaches
the processor to the tracer provider that exists (never replaces it) and registers the process
metrics (CPU, RSS, open file descriptors, threads, GC collections) via psutil.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import gc
import logging
import os
import threading
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any, cast

from opentelemetry import metrics, trace
from opentelemetry.context import Context, get_current
from opentelemetry.metrics import CallbackOptions, Counter, Histogram, Observation
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanContext, SpanKind, StatusCode
from opentelemetry.util.types import AttributeValue

from otel_agents import semconv as sc

__all__ = [
    "AgentMetricsProcessor",
    "ProcessMetrics",
    "install_metrics",
    "span_cost",
]

_log = logging.getLogger(__name__)

_SCOPE = "otel_agents"
_OTHER_ERROR = "_OTHER"  # the conventions' fallback error.type when none is known
_STATUS_ERROR = StatusCode.ERROR

_INFERENCE_KEYS = (
    sc.GEN_AI_OPERATION_NAME,
    sc.GEN_AI_PROVIDER_NAME,
    sc.GEN_AI_REQUEST_MODEL,
    sc.GEN_AI_RESPONSE_MODEL,
    sc.SERVER_ADDRESS,
    sc.SERVER_PORT,
)
_AGENT_KEYS = (
    sc.GEN_AI_OPERATION_NAME,
    sc.GEN_AI_PROVIDER_NAME,
    sc.GEN_AI_AGENT_NAME,
    sc.GEN_AI_REQUEST_MODEL,
    sc.SERVER_ADDRESS,
    sc.SERVER_PORT,
)
_TOOL_KEYS = (
    sc.GEN_AI_OPERATION_NAME,
    sc.GEN_AI_TOOL_NAME,
    sc.GEN_AI_TOOL_TYPE,
    sc.GEN_AI_AGENT_NAME,
)
_COST_KEYS = (sc.GEN_AI_AGENT_NAME, sc.GEN_AI_PROVIDER_NAME, sc.GEN_AI_REQUEST_MODEL)
_OP = sc.GEN_AI_OPERATION_NAME
_PROVIDER = sc.GEN_AI_PROVIDER_NAME
_REQUEST_MODEL = sc.GEN_AI_REQUEST_MODEL
_RESPONSE_MODEL = sc.GEN_AI_RESPONSE_MODEL
_SERVER_ADDRESS = sc.SERVER_ADDRESS
_SERVER_PORT = sc.SERVER_PORT
_AGENT = sc.GEN_AI_AGENT_NAME
_TOOL = sc.GEN_AI_TOOL_NAME
_TOOL_TYPE = sc.GEN_AI_TOOL_TYPE
# AgentMetricsProcessor._shape spells the key tuples out with these (tested to match).
_MEASURED_OPERATIONS = frozenset((*sc.INFERENCE_OPERATIONS, sc.OP_INVOKE_AGENT, sc.OP_EXECUTE_TOOL))


class _ForkSafe:
    """Base for objects whose locks must be fresh in a forked child.

    A lock held by another thread at ``fork()`` stays locked forever in the child; subclasses
    re-create theirs in ``_after_fork``, called in the child for every live instance.
    """

    def __init__(self) -> None:
        _fork_safe.add(self)

    def _after_fork(self) -> None:
        raise NotImplementedError


_fork_safe: weakref.WeakSet[_ForkSafe] = weakref.WeakSet()


def _reinit_after_fork() -> None:
    for obj in list(_fork_safe):
        with contextlib.suppress(Exception):
            obj._after_fork()
    global _install_lock
    _install_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)


def _identity(attrs: Mapping[str, Any]) -> Mapping[str, Any]:
    return attrs


def _normalizer() -> Callable[[Mapping[str, Any]], Mapping[str, Any]]:
    """The shared dialect normalizer (OpenInference / OpenLLMetry / old ``gen_ai.system``).

    Spans behind the enriching processor are already normalized: the cheap pre-check skips
    the copy for them.  Optional here so this module still works if that module cannot load.
    """
    try:
        from otel_agents._normalize import has_dialect_keys, normalize_attributes
    except Exception:
        return _identity

    def normalize(attrs: Mapping[str, Any]) -> Mapping[str, Any]:
        return normalize_attributes(attrs) if has_dialect_keys(attrs) else attrs

    return normalize


def _pick(attrs: Mapping[str, Any], keys: Iterable[str]) -> dict[str, AttributeValue]:
    return {k: attrs[k] for k in keys if attrs.get(k) not in (None, "")}


def plain_attributes(span: ReadableSpan) -> dict[str, Any]:
    """The span's attributes as a plain dict copy (also used by the enricher).

    ``ReadableSpan.attributes`` is a ``MappingProxyType`` over the SDK's ``BoundedAttributes``,
    whose ``get`` / ``__getitem__`` are Python-level; ``MappingProxyType.copy()`` delegates to the
    public ``BoundedAttributes.copy()``, a C-level dict copy, so every later lookup is a dict one.
    """
    attrs = span.attributes
    if attrs is None:
        return {}
    try:
        plain = attrs.copy()  # type: ignore[attr-defined]
    except AttributeError:  # a Mapping without copy()
        return dict(attrs)
    return plain if type(plain) is dict else dict(plain)


def _may_have_events(span: ReadableSpan) -> bool:
    """False only when the span certainly has no events.

    ``ReadableSpan.events`` builds a new tuple through a Python-level iterator (~1 µs) on every
    access; the SDK's own spans keep them in ``_events``, whose length is read instead. Any other
    layout answers True and the public property is used.
    """
    events = getattr(span, "_events", None)
    if events is None:
        return True
    # The SDK's BoundedList counts in Python; its deque (an ended span's no longer changes) in C.
    queue = getattr(events, "_dq", events)
    try:
        return len(queue) > 0
    except TypeError:
        return True


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def span_cost(attrs: Mapping[str, Any], pricebook: Any = None) -> tuple[float | None, bool]:
    """The USD cost of one inference span: ``(amount, unpriced)``.

    Reads ``gen_ai.usage.cost.amount`` (set by the enriching processor or the provider); when it
    is absent and a ``pricebook`` (``otel_agents.PriceBook``) is given, prices the tokens.
    Costs in another currency are not converted and return ``(None, False)``.

    Args:
        attrs: normalized span attributes.
        pricebook: optional price book for spans nobody priced yet.
    """
    if attrs.get(sc.GEN_AI_OPERATION_NAME) not in sc.INFERENCE_OPERATIONS:
        return None, False
    amount = attrs.get(sc.GEN_AI_USAGE_COST_AMOUNT)
    currency = attrs.get(sc.GEN_AI_USAGE_COST_CURRENCY, "USD")
    if isinstance(amount, (int, float)) and not isinstance(amount, bool):
        return (float(amount), False) if currency == "USD" else (None, False)
    if attrs.get(sc.AGENT_COST_UNPRICED) is True:
        return None, True
    inp = _int(attrs.get(sc.GEN_AI_USAGE_INPUT_TOKENS))
    out = _int(attrs.get(sc.GEN_AI_USAGE_OUTPUT_TOKENS))
    if pricebook is None or (inp is None and out is None):
        return None, False
    model = attrs.get(sc.GEN_AI_RESPONSE_MODEL) or attrs.get(sc.GEN_AI_REQUEST_MODEL)
    if not isinstance(model, str) or not model:
        return None, True
    provider = attrs.get(sc.GEN_AI_PROVIDER_NAME)
    provider = provider if isinstance(provider, str) else None
    cache_read = _int(attrs.get(sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS)) or 0
    cache_creation = _int(attrs.get(sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS)) or 0
    quote = _quote_of(pricebook)
    if quote is not None:  # a PriceBook: its tuple path, no Price object per span
        quoted = quote(model, provider, inp or 0, out or 0, cache_read, cache_creation, None)
        if quoted is None:
            return None, True
        return (quoted[0], False) if quoted[1] == "USD" else (None, False)
    price = pricebook.price(
        model=model,
        provider=provider,
        input_tokens=inp or 0,
        output_tokens=out or 0,
        cache_read_tokens=cache_read,
        cache_creation_tokens=cache_creation,
    )
    if price is None:
        return None, True
    return (price.amount, False) if price.currency == "USD" else (None, False)


@functools.cache
def _pricebook_class() -> Any:
    try:
        from otel_agents._cost import PriceBook
    except Exception:  # optional here, as the normalizer is
        return None
    return PriceBook


def _quote_of(pricebook: Any) -> Callable[..., tuple[float, str, str, str] | None] | None:
    """``PriceBook._quote`` when ``pricebook`` is a PriceBook whose ``price`` is not overridden."""
    book_class = _pricebook_class()
    if book_class is None:
        return None
    if isinstance(pricebook, book_class) and type(pricebook).price is book_class.price:
        quote: Callable[..., tuple[float, str, str, str] | None] = pricebook._quote
        return quote
    return None


# --------------------------------------------------------------------------------------------
# Histograms per delivered batch
# --------------------------------------------------------------------------------------------
# (id(histogram), attribute items) -> [histogram, dims, values, span contexts, times (ns)]
_Hists = dict[tuple[int, tuple[tuple[str, Any], ...]], list[Any]]


def _span_context_in(span_ctx: SpanContext | None) -> Context | None:
    """The context an exemplar of ``span_ctx`` is recorded in (None: not sampled)."""
    if span_ctx is None or not span_ctx.trace_flags.sampled:
        return None
    return trace.set_span_in_context(trace.NonRecordingSpan(span_ctx))


# (id(histogram), attribute items) -> (histogram, reader storages, resolved merge targets)
_Targets = dict[tuple[int, tuple[tuple[str, Any], ...]], tuple[Any, Any, Any]]


class _SdkHistogramMerge(_ForkSafe):
    """Merges one batch's values of one histogram series into the OpenTelemetry SDK at once.

    Why: through the public ``Histogram.record`` every value costs the Python SDK 4–7 µs
    (``Measurement`` construction and attribute validation, the exemplar filter, per reader and
    view the attribute copy and ``_hash_attributes``, two locks, the reservoir) — per span more
    than the whole OTLP export of it (benchmarks/sdk_overhead.py). There is no public API to add
    several values at once, so this is the one guarded use of SDK *metrics* internals
    (``docs/architecture.md``, *SDK performance*): for each reader storage and view of the
    instrument it takes the aggregation the SDK itself would have used (the SDK's own
    ``_get_or_create_aggregation``, so cardinality limit, overflow series and view attribute
    filters apply unchanged) and, when that is the explicit-bucket histogram (or the drop)
    aggregation, adds the batch's bucket counts, sum, min and max under the aggregation's lock,
    and offers the exemplar reservoir what the per-value path would have kept (for the default
    aligned-bucket reservoir — last value per bucket — only the last eligible value of each
    bucket; any other reservoir gets every eligible value, in order).

    Guards: used only after :meth:`works` has proven, once per process, that merging gives the
    same collected points (counts, sum, min, max, buckets, exemplars; cumulative and delta) as
    recording each value publicly; the layout is resolved before anything is changed, and any
    other aggregation (exponential histogram view, a sum view), instrument, meter provider or
    SDK layout makes :meth:`merge` return False, so the caller records the values publicly.
    """

    def __init__(self) -> None:
        _ForkSafe.__init__(self)
        self._ok: bool | None = None
        self._lock = threading.Lock()
        try:
            from opentelemetry.sdk.metrics import (
                AlignedHistogramBucketExemplarReservoir,
                AlwaysOffExemplarFilter,
                AlwaysOnExemplarFilter,
                TraceBasedExemplarFilter,
            )
            from opentelemetry.sdk.metrics._internal._view_instrument_match import (
                _hash_attributes,
            )
            from opentelemetry.sdk.metrics._internal.aggregation import (
                _DropAggregation,
                _ExplicitBucketHistogramAggregation,
            )
            from opentelemetry.sdk.metrics._internal.instrument import _Histogram
            from opentelemetry.sdk.metrics._internal.measurement_consumer import (
                SynchronousMeasurementConsumer,
            )
        except Exception:  # another SDK layout: the public path only
            self._ok = False
            return
        self._aligned: type = AlignedHistogramBucketExemplarReservoir
        self._always_on: type = AlwaysOnExemplarFilter
        self._always_off: type = AlwaysOffExemplarFilter
        self._trace_based: type = TraceBasedExemplarFilter
        self._hash: Callable[[Any], Any] = _hash_attributes
        self._drop: type = _DropAggregation
        self._explicit: type = _ExplicitBucketHistogramAggregation
        self._histogram: Any = _Histogram
        self._consumer: Any = SynchronousMeasurementConsumer

    def _after_fork(self) -> None:
        self._lock = threading.Lock()

    def works(self) -> bool:
        """Whether merging is proven equal to per-value recording on this SDK (probed once)."""
        if self._ok is None:
            with self._lock:
                if self._ok is None:
                    try:
                        self._ok = _probe_merge(self)
                    except Exception:
                        _log.debug("agent metrics: batch histogram probe failed", exc_info=True)
                        self._ok = False
                    if not self._ok:
                        _log.debug("agent metrics: histograms recorded value by value")
        return self._ok

    def merge(
        self,
        hist: Any,
        dims: Mapping[str, AttributeValue],
        values: Sequence[float],
        span_ctxs: Sequence[SpanContext | None],
        times: Sequence[int],
        cache: _Targets | None = None,
    ) -> bool:
        """Adds ``values`` (one series of one batch) to every reader's aggregation of ``hist``.

        Returns False, having changed nothing, when the fast path does not apply. ``cache``
        keeps the resolved targets per series between batches; the caller owns it (the
        metrics processor: one per meter provider, so it never outlives the instruments).
        """
        if type(hist) is not self._histogram:
            return False
        hist = cast(Any, hist)  # the SDK's Histogram (checked above)
        if not hist._is_enabled():
            return True  # the public API drops it too
        consumer: Any = hist._measurement_consumer
        if type(consumer) is not self._consumer:
            return False
        storages = consumer._reader_storages
        cache_key = (id(hist), tuple(dims.items()))
        cached = cache.get(cache_key) if cache is not None else None
        if cached is not None and cached[0] is hist and cached[1] is storages:
            # Same instrument, same readers (the SDK replaces that mapping when one is added
            # or removed) and views never change for an instrument: the same targets.
            targets = cached[2]
        else:
            resolved = self._resolve(hist, dims, storages)
            if resolved is None:
                return False
            targets = resolved
            if cache is not None:
                if len(cache) >= _MAX_SHAPES:
                    cache.clear()
                cache[cache_key] = (hist, storages, targets)
        if not targets:
            return True
        check = self._eligibility(
            consumer._sdk_config.exemplar_filter, dims, values, span_ctxs, times
        )
        counted: dict[tuple[float, ...], tuple[list[int], list[int]]] = {}
        total = sum(values)
        low, high = min(values), max(values)
        for vim, attrs, key in targets:
            if vim._reset_on_collect:
                # A delta collection swaps the aggregations out: hold the view's lock from
                # lookup to update, as the SDK does, so no value lands in a collected one.
                with vim._lock:
                    agg = vim._get_or_create_aggregation(key, attrs)
                    self._add(agg, dims, values, span_ctxs, times, check, total, low, high, counted)
            else:
                agg = vim._attributes_aggregation.get(key)
                if agg is None:
                    with vim._lock:
                        agg = vim._get_or_create_aggregation(key, attrs)
                self._add(agg, dims, values, span_ctxs, times, check, total, low, high, counted)
        return True

    def _resolve(
        self, hist: Any, dims: Mapping[str, AttributeValue], storages: Any
    ) -> list[tuple[Any, dict[str, AttributeValue], Any]] | None:
        """Every (view match, attributes, aggregation key) ``dims`` lands in; None when one of
        them is not an explicit-bucket histogram (or Drop). Creating an aggregation the public
        path would create anyway is harmless; nothing is added here."""
        targets: list[tuple[Any, dict[str, AttributeValue], Any]] = []
        for storage in storages.values():
            for vim in storage._get_or_init_view_instrument_match(hist):
                keys = vim._view._attribute_keys
                attrs = dict(dims) if keys is None else {k: v for k, v in dims.items() if k in keys}
                key = self._hash(attrs)
                with vim._lock:
                    agg = vim._get_or_create_aggregation(key, attrs)
                kind = type(agg)
                if kind is self._drop:
                    continue
                if kind is not self._explicit:
                    return None
                targets.append((vim, attrs, key))
        return targets

    def _eligibility(
        self,
        exemplar_filter: Any,
        dims: Mapping[str, AttributeValue],
        values: Sequence[float],
        span_ctxs: Sequence[SpanContext | None],
        times: Sequence[int],
    ) -> Callable[[int], bool] | None:
        """The exemplar filter's verdict for value ``i``, asked only where it matters for the
        known filters (None: no value is eligible); any other filter is asked for every value,
        in order, as per-value recording would."""
        kind = type(exemplar_filter)
        if kind is self._trace_based:
            # What TraceBasedExemplarFilter decides for the context _span_context_in builds.
            def sampled(i: int) -> bool:
                ctx = span_ctxs[i]
                return ctx is not None and bool(ctx.trace_flags.sampled)

            return sampled
        if kind is self._always_off:
            return None
        if kind is self._always_on:
            return lambda i: True
        verdicts = [
            bool(exemplar_filter.should_sample(v, t, dims, _span_context_in(c) or get_current()))
            for v, c, t in zip(values, span_ctxs, times, strict=True)
        ]
        return verdicts.__getitem__ if any(verdicts) else None

    def _add(
        self,
        agg: Any,
        dims: Mapping[str, AttributeValue],
        values: Sequence[float],
        span_ctxs: Sequence[SpanContext | None],
        times: Sequence[int],
        check: Callable[[int], bool] | None,
        total: float,
        low: float,
        high: float,
        counted: dict[tuple[float, ...], tuple[list[int], list[int]]],
    ) -> None:
        if type(agg) is self._drop:
            return
        bounds = agg._boundaries
        known = counted.get(bounds)
        if known is None:
            # Bucket of every value, once per boundary set (readers usually share one).
            where = list(map(partial(bisect_left, bounds), values))
            counts = [0] * (len(bounds) + 1)
            if len(where) < 32:  # building a Counter costs more than a short loop
                for i in where:
                    counts[i] += 1
            else:
                for i, n in collections.Counter(where).items():
                    counts[i] = n
            known = counted[bounds] = (counts, where)
        counts, where = known
        with agg._lock:
            if agg._value is None:
                agg._value = agg._get_empty_bucket_counts()
            buckets = agg._value
            for i, n in enumerate(counts):
                if n:
                    buckets[i] += n
            agg._sum += total
            if agg._record_min_max:
                agg._min = min(agg._min, low)
                agg._max = max(agg._max, high)
        if check is None:
            return
        reservoir = agg._reservoir
        offers: Iterable[int]
        if type(reservoir) is self._aligned:
            # It keeps, per bucket, the last offered value and the span of the last offer that
            # had one (an offer without a span leaves the previous span id in place). So per
            # bucket: the last eligible value and, when that one has no span, before it the
            # last eligible value that has one — the same outcome as offering every value.
            # Walk back from the end until every bucket with values is settled.
            need = {i for i, n in enumerate(counts) if n}
            last: dict[int, int] = {}
            with_span: dict[int, int] = {}
            for i in range(len(values) - 1, -1, -1):
                bucket = where[i]
                if bucket not in need or not check(i):
                    continue
                ctx = span_ctxs[i]  # a span only when sampled, as _span_context_in decides
                has_span = ctx is not None and bool(ctx.trace_flags.sampled)
                if bucket not in last:
                    last[bucket] = i
                if has_span:
                    with_span[bucket] = i
                    need.discard(bucket)
                    if not need:
                        break
            chosen: list[int] = []
            for bucket, i in last.items():
                j = with_span.get(bucket)
                if j is not None and j != i:
                    chosen.append(j)
                chosen.append(i)
            offers = chosen
        else:
            offers = (i for i in range(len(values)) if check(i))
        for i in offers:
            reservoir.offer(values[i], times[i], dims, _span_context_in(span_ctxs[i]))


def _probe_merge(merge: _SdkHistogramMerge) -> bool:
    """Records the same values publicly and by merging (cumulative and delta readers, twice
    with a collection between) and compares every collected point."""
    from opentelemetry.sdk.metrics import Histogram as HistogramKind
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader

    def collect(reader: InMemoryMetricReader) -> list[tuple[Any, ...]]:
        data = reader.get_metrics_data()
        out: list[tuple[Any, ...]] = []
        for rm in data.resource_metrics if data is not None else ():
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    for point in m.data.data_points:
                        p: Any = point
                        exemplars = [
                            (e.value, e.span_id, e.trace_id, dict(e.filtered_attributes or {}))
                            for e in p.exemplars
                        ]
                        out.append(
                            (
                                dict(p.attributes or {}),
                                p.count,
                                p.sum,
                                p.min,
                                p.max,
                                tuple(p.bucket_counts),
                                exemplars,
                            )
                        )
        return out

    rounds = [
        [0.5, 5.0, 50.0, 5.0, 2.0],
        [7.0, 1.0],
    ]
    results: list[list[list[tuple[Any, ...]]]] = []
    for use_merge in (False, True):
        per_reader: list[list[tuple[Any, ...]]] = []
        readers = [
            InMemoryMetricReader(),
            InMemoryMetricReader(
                preferred_temporality={HistogramKind: AggregationTemporality.DELTA}
            ),
        ]
        provider = MeterProvider(metric_readers=readers, shutdown_on_exit=False)
        try:
            hist = provider.get_meter("otel_agents.probe").create_histogram(
                "probe", explicit_bucket_boundaries_advisory=[1.0, 10.0]
            )
            dims = {"k": "v"}
            for r, values in enumerate(rounds):
                ctxs = [
                    SpanContext(1 + r, 10 + i, False, trace.TraceFlags(i % 2))
                    for i in range(len(values))
                ]
                times = [1_000 + i for i in range(len(values))]
                if use_merge:
                    if not merge.merge(hist, dims, values, ctxs, times):
                        return False
                else:
                    for v, c in zip(values, ctxs, strict=True):
                        hist.record(v, dims, context=_span_context_in(c) or Context())
                per_reader.extend(collect(reader) for reader in readers)
        finally:
            provider.shutdown()
        results.append(per_reader)
    return results[0] == results[1] and bool(results[0][0])


_MERGE = _SdkHistogramMerge()


# (id(counter), sorted attributes) -> [counter, summed amount, attributes, latest span context]
_Sums = dict[tuple[int, tuple[tuple[str, Any], ...]], list[Any]]
#: ``listener(cost_by_agent, tokens_by_agent)``, see ``AgentMetricsProcessor.add_spend_listener``.
SpendListener = Callable[[dict[str | None, float], dict[str | None, float]], None]


# Per kind of span: ((attributes, batch key or None), ...) — see AgentMetricsProcessor._shape.
_Shape = tuple[tuple[dict[str, AttributeValue], Any], ...]
# Cached shapes per processor (distinct attribute combinations); cleared when full.
_MAX_SHAPES = 4096
_KIND_OF_OPERATION: dict[str, str] = {
    **dict.fromkeys(sc.INFERENCE_OPERATIONS, "i"),
    sc.OP_INVOKE_AGENT: "a",
    sc.OP_EXECUTE_TOOL: "t",
}
_A2A_METHOD = sc.A2A_METHOD_NAME
_ERROR_TYPE = sc.ERROR_TYPE
_IN = sc.GEN_AI_USAGE_INPUT_TOKENS
_OUT = sc.GEN_AI_USAGE_OUTPUT_TOKENS
_COST_AMOUNT = sc.GEN_AI_USAGE_COST_AMOUNT
_COST_CURRENCY = sc.GEN_AI_USAGE_COST_CURRENCY
_SAMPLED = int(trace.TraceFlags.SAMPLED)


def _shape_key(kind: str, err: str | None, op: Any, get: Callable[[str], Any]) -> tuple[Any, ...]:
    """The values a span's metric attribute sets are built from (``_build_shape``), as a key:
    spans with equal keys feed the same series. ``kind``: ``i`` inference, ``a`` agent,
    ``t`` tool; the agent name is last for inference (the spend owner)."""
    # Spelled out (no comprehension): this runs for every measured span.
    if kind == "i":
        return (
            kind,
            err,
            op,
            get(_PROVIDER),
            get(_REQUEST_MODEL),
            get(_RESPONSE_MODEL),
            get(_SERVER_ADDRESS),
            get(_SERVER_PORT),
            get(_AGENT),
        )
    if kind == "a":
        return (
            kind,
            err,
            op,
            get(_PROVIDER),
            get(_AGENT),
            get(_REQUEST_MODEL),
            get(_SERVER_ADDRESS),
            get(_SERVER_PORT),
        )
    return (kind, err, op, get(_TOOL), get(_TOOL_TYPE), get(_AGENT))


class _Batch:
    """What one delivered batch adds: counter sums, histogram values, spending per agent."""

    __slots__ = ("hists", "spend", "sums")

    def __init__(self) -> None:
        self.sums: _Sums = {}
        self.hists: _Hists = {}
        self.spend: dict[str | None, list[Any]] = {}


class AgentMetricsProcessor(SpanProcessor):
    """Derives the GenAI / agent metrics from every finished span.

    Example::

        provider.add_span_processor(AgentMetricsProcessor(meter_provider=mp))

    Args:
        meter_provider: where the instruments live; the global meter provider when None.
        pricebook: optional ``PriceBook`` for inference spans that reached this processor
            without ``gen_ai.usage.cost.amount`` (e.g. added beside, not behind, the enriching
            processor).  Unpriceable calls are counted, never priced at 0.
    """

    # EnrichingSpanProcessor may hand it spans later, from its worker thread (it only
    # aggregates); exemplars still point at the span because _record passes its context.
    otel_agents_deferrable = True
    otel_agents_noop_on_start = True
    # otel_agents_on_end_batch(spans, attributes=..., normalized=...) takes the enricher's dicts.
    otel_agents_takes_attributes = True

    def __init__(
        self,
        meter_provider: metrics.MeterProvider | None = None,
        pricebook: Any = None,
    ) -> None:
        meter = metrics.get_meter(_SCOPE, meter_provider=meter_provider)
        self._pricebook = pricebook
        self._normalize = _normalizer()
        self._spend_listeners: tuple[SpendListener, ...] = ()
        self._shapes: dict[tuple[Any, ...], _Shape] = {}
        self._merge_targets: _Targets = {}
        self.token_usage = meter.create_histogram(
            sc.METRIC_GEN_AI_CLIENT_TOKEN_USAGE,
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=[float(b) for b in sc.TOKEN_USAGE_BUCKETS],
        )
        self.operation_duration = meter.create_histogram(
            sc.METRIC_GEN_AI_CLIENT_OPERATION_DURATION,
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=list(sc.OPERATION_DURATION_BUCKETS),
        )
        self.agent_duration = meter.create_histogram(
            sc.METRIC_GEN_AI_INVOKE_AGENT_DURATION,
            unit="s",
            description="Duration of agent invocations.",
            explicit_bucket_boundaries_advisory=list(sc.OPERATION_DURATION_BUCKETS),
        )
        self.tool_duration = meter.create_histogram(
            sc.METRIC_GEN_AI_EXECUTE_TOOL_DURATION,
            unit="s",
            description="Duration of tool executions.",
            explicit_bucket_boundaries_advisory=list(sc.OPERATION_DURATION_BUCKETS),
        )
        # "USD", not "{USD}": annotation units are mangled by Prometheus remote-write.
        self.cost = meter.create_counter(
            sc.METRIC_AGENT_COST, unit="USD", description="Cost of inference calls."
        )
        self.unpriced = meter.create_counter(
            sc.METRIC_AGENT_UNPRICED_CALLS,
            unit="",
            description="Inference calls whose model has no known price (never counted as 0).",
        )
        self.decisions = meter.create_counter(
            sc.METRIC_AGENT_DECISIONS, unit="", description="Agent decisions recorded."
        )
        self.a2a_messages = meter.create_counter(
            sc.METRIC_AGENT_A2A_MESSAGES, unit="", description="A2A requests sent and received."
        )

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Does nothing: every figure is known only at the end of the span."""

    def on_end(self, span: ReadableSpan) -> None:
        """Records the span's measurements; never raises."""
        try:
            self._record(span)
        except Exception:
            _log.debug("agent metrics: failed on span %r", span.name, exc_info=True)

    def add_spend_listener(self, listener: SpendListener) -> None:
        """Calls ``listener(cost_by_agent, tokens_by_agent)`` once per delivered batch.

        The sums are what the batch's inference spans add to ``agent.cost`` (USD) and to the
        input + output tokens, per ``gen_ai.agent.name`` (None for spans without one); only
        batches with spending call it. ``BudgetGuard.feed_from`` uses this, so a guard needs no
        metric reader of its own. Spans handed to :meth:`on_end` one by one (this processor
        added beside, not behind, the enriching processor) are reported one by one.
        """
        self._spend_listeners = (*self._spend_listeners, listener)

    def otel_agents_on_end_batch(
        self,
        spans: Sequence[ReadableSpan],
        *,
        attributes: Sequence[Mapping[str, Any] | None] | None = None,
        normalized: bool = False,
    ) -> None:
        """Records a batch of spans (``EnrichingSpanProcessor``'s worker calls this).

        Counter increments are summed per series within the batch and added once (the latest
        span's context carries the exemplar); histogram values are collected per series and
        merged into the SDK once per series (:class:`_SdkHistogramMerge`), or recorded one by
        one where that fast path does not apply. Every value is kept either way. Never raises.

        Args:
            spans: ended spans, in order.
            attributes: optional, per span, its attributes as a plain dict (read, never
                changed), or None to read them from the span; what the enriching processor
                already holds, so they are not copied again.
            normalized: the given ``attributes`` are normalized already (the dialect check is
                skipped for them).
        """
        batch = _Batch()
        # Measured spans (inference, invoke_agent, execute_tool without events or A2A) grouped
        # by their shape key: the attribute sets, batch keys and the spend owner are then
        # resolved once per group and the values collected in list passes, instead of a dozen
        # calls per span. Positions keep each series' values in span order (exemplars).
        groups: dict[tuple[Any, ...], tuple[list[ReadableSpan], list[Mapping[str, Any]], list[int]]]
        groups = {}
        normalize = self._normalize
        kind_of = _KIND_OF_OPERATION
        for i, span in enumerate(spans):
            try:
                given = attributes[i] if attributes is not None else None
                if given is None:
                    attrs: Mapping[str, Any] = normalize(plain_attributes(span))
                else:
                    attrs = given if normalized else normalize(given)
                get = attrs.get
                op = get(_OP)
                kind = kind_of.get(op) if type(op) is str else None
                if get(_A2A_METHOD) or _may_have_events(span):
                    self._record(span, batch, attrs, True, i)  # A2A / decisions: span by span
                    continue
                if kind is None:
                    continue  # most other spans of a trace (plan, HTTP, DB): nothing to measure
                err = get(_ERROR_TYPE)
                if type(err) is not str or not err:
                    err = _OTHER_ERROR if span.status.status_code is _STATUS_ERROR else None
                key = _shape_key(kind, err, op, get)
                try:
                    group = groups.get(key)
                except TypeError:  # an unhashable attribute value: this span on its own
                    self._record(span, batch, attrs, True, i)
                    continue
                if group is None:
                    groups[key] = ([span], [attrs], [i])
                else:
                    group[0].append(span)
                    group[1].append(attrs)
                    group[2].append(i)
            except Exception:
                _log.debug("agent metrics: failed on span %r", span.name, exc_info=True)
        for key, (g_spans, g_attrs, g_pos) in groups.items():
            try:
                self._record_group(key, g_spans, g_attrs, g_pos, batch)
            except Exception:
                _log.debug("agent metrics: failed on a group of spans", exc_info=True)
        self._flush(batch)

    def _flush(self, batch: _Batch) -> None:
        for counter, amount, dims, span_ctx, _pos in batch.sums.values():
            try:
                counter.add(amount, dims, context=_span_context_in(span_ctx))
            except Exception:
                _log.debug("agent metrics: counter add failed", exc_info=True)
        if batch.hists:
            fast = _MERGE.works()
            for hist, dims, values, span_ctxs, times, positions, unordered in batch.hists.values():
                if unordered:  # filled from several groups: back to span order (exemplars)
                    order = sorted(range(len(positions)), key=positions.__getitem__)
                    values = [values[j] for j in order]
                    span_ctxs = [span_ctxs[j] for j in order]
                    times = [times[j] for j in order]
                try:
                    if fast and _MERGE.merge(
                        hist, dims, values, span_ctxs, times, self._merge_targets
                    ):
                        continue
                except Exception:
                    # Resolution failed before anything was added: record publicly below.
                    _log.debug("agent metrics: batch merge failed", exc_info=True)
                for value, span_ctx in zip(values, span_ctxs, strict=True):
                    try:
                        hist.record(value, dims, context=_span_context_in(span_ctx))
                    except Exception:
                        _log.debug("agent metrics: histogram record failed", exc_info=True)
        if batch.spend and self._spend_listeners:
            cost = {agent: v[0] for agent, v in batch.spend.items()}
            tokens = {agent: v[1] for agent, v in batch.spend.items()}
            for listener in self._spend_listeners:
                try:
                    listener(cost, tokens)
                except Exception:
                    _log.debug("agent metrics: spend listener failed", exc_info=True)

    @staticmethod
    def _add(
        counter: Counter,
        amount: float,
        dims: dict[str, AttributeValue],
        span_ctx: SpanContext | None,
        sums: _Sums,
        key: tuple[int, tuple[tuple[str, Any], ...]] | None = None,
        pos: int = 0,
    ) -> None:
        """Adds ``amount`` to the batch's sum of ``counter`` at ``dims`` (``key``: precomputed;
        ``pos``: the span's position in the batch, the latest one's context is the exemplar)."""
        if key is None:
            try:
                key = (id(counter), tuple(sorted(dims.items())))
                hash(key)
            except TypeError:  # an unhashable (sequence) attribute value: add it directly
                counter.add(amount, dims, context=_span_context_in(span_ctx))
                return
        entry = sums.get(key)
        if entry is None:
            sums[key] = [counter, amount, dims, span_ctx, pos]
        else:
            entry[1] += amount
            if pos >= entry[4]:
                entry[3] = span_ctx  # the latest span carries the exemplar
                entry[4] = pos

    @staticmethod
    def _observe(
        hist: Histogram,
        value: float,
        dims: dict[str, AttributeValue],
        span_ctx: SpanContext | None,
        time_ns: int,
        hists: _Hists,
        key: tuple[int, tuple[tuple[str, Any], ...]] | None = None,
        pos: int = 0,
    ) -> None:
        """Collects ``value`` for ``hist`` at ``dims`` in the batch (``key``: precomputed)."""
        if key is None:
            try:
                key = (id(hist), tuple(dims.items()))
                hash(key)
            except TypeError:  # an unhashable (sequence) attribute value: record it directly
                hist.record(value, dims, context=_span_context_in(span_ctx))
                return
        entry = hists.get(key)
        if entry is None:
            hists[key] = [hist, dims, [value], [span_ctx], [time_ns], [pos], False]
        else:
            if entry[5][-1] > pos:
                entry[6] = True
            entry[2].append(value)
            entry[3].append(span_ctx)
            entry[4].append(time_ns)
            entry[5].append(pos)

    @staticmethod
    def _extend(
        hist: Histogram,
        dims: dict[str, AttributeValue],
        key: Any,
        values: list[float],
        span_ctxs: list[SpanContext | None],
        times: list[int],
        positions: list[int],
        hists: _Hists,
    ) -> None:
        """Adds a group's values (in span order) to the batch's series of ``hist`` at ``dims``."""
        if not values:
            return
        if key is None:  # unhashable dims (cannot happen for a hashable group key): one by one
            for value, ctx, at, pos in zip(values, span_ctxs, times, positions, strict=True):
                AgentMetricsProcessor._observe(hist, value, dims, ctx, at, hists, None, pos)
            return
        entry = hists.get(key)
        if entry is None:
            hists[key] = [hist, dims, values, span_ctxs, times, positions, False]
            return
        if entry[5][-1] > positions[0]:
            entry[6] = True
        entry[2].extend(values)
        entry[3].extend(span_ctxs)
        entry[4].extend(times)
        entry[5].extend(positions)

    def _shape(self, kind: str, attrs: Mapping[str, Any], err: str | None) -> _Shape:
        """The attribute sets (and their batch keys) of one kind of span, cached by the values
        they are built from (:func:`_shape_key`): a batch mostly repeats a few shapes, and
        building the dicts and keys per span cost more than the rest of the span's accounting."""
        get = attrs.get
        cache_key = _shape_key(kind, err, get(_OP), get)
        try:
            shape = self._shapes.get(cache_key)
        except TypeError:  # an unhashable attribute value: build it for this span only
            return self._build_shape(kind, attrs, err)
        if shape is None:
            shape = self._cached_shape(cache_key, kind, attrs, err)
        return shape

    def _cached_shape(
        self, cache_key: tuple[Any, ...], kind: str, attrs: Mapping[str, Any], err: str | None
    ) -> _Shape:
        shape = self._shapes.get(cache_key)
        if shape is None:
            if len(self._shapes) >= _MAX_SHAPES:
                self._shapes.clear()  # a churn of names: start over rather than grow
            shape = self._shapes[cache_key] = self._build_shape(kind, attrs, err)
        return shape

    def _record_group(
        self,
        key: tuple[Any, ...],
        spans: list[ReadableSpan],
        attrs_list: list[Mapping[str, Any]],
        positions: list[int],
        batch: _Batch,
    ) -> None:
        """Records measured spans of one shape (same kind, error and series attributes), in
        batch order: what :meth:`_record` does per span, with the per-shape work done once."""
        kind, err = key[0], key[1]
        shape = self._cached_shape(key, kind, attrs_list[0], err)
        # The span's own context, not the calling thread's: exemplars link to this span even
        # when it is recorded off the application thread (EnrichingSpanProcessor's worker).
        ctxs: list[SpanContext | None] = []
        for span in spans:
            ctx = span.context
            ctxs.append(ctx if ctx is not None and ctx.trace_flags & _SAMPLED else None)
        starts = [span.start_time for span in spans]
        ends = [span.end_time for span in spans]
        hists = batch.hists
        # Lists built here may become the batch's series lists (and grow with later groups):
        # this group only reads them before that.
        durations: list[float]
        d_ctxs: list[SpanContext | None]
        d_times: list[int]
        d_pos: list[int]
        ats: list[int]
        if None not in starts and None not in ends:
            done = cast(list[int], ends)
            durations = [
                max(0, b - a) / 1e9 for a, b in zip(cast(list[int], starts), done, strict=True)
            ]
            d_ctxs, d_times, d_pos, ats = ctxs, done, positions, done
        else:  # copies of unfinished spans: no duration, exemplar time 0 (as _record)
            timed = [
                j
                for j, (a, b) in enumerate(zip(starts, ends, strict=True))
                if a is not None and b is not None
            ]
            durations = [max(0, cast(int, ends[j]) - cast(int, starts[j])) / 1e9 for j in timed]
            d_ctxs = [ctxs[j] for j in timed]
            d_times = [cast(int, ends[j]) for j in timed]
            d_pos = [positions[j] for j in timed]
            ats = [0 if end is None else end for end in ends]
        if kind != "i":
            ((dims, hkey),) = shape
            hist = self.agent_duration if kind == "a" else self.tool_duration
            self._extend(hist, dims, hkey, durations, d_ctxs, d_times, d_pos, hists)
            return
        (
            (dur_dims, dur_key),
            (in_dims, in_key),
            (out_dims, out_key),
            (cost_dims, cost_key),
            (unpriced_dims, unpriced_key),
        ) = shape
        self._extend(
            self.operation_duration, dur_dims, dur_key, durations, d_ctxs, d_times, d_pos, hists
        )
        in_vals: list[float] = []
        in_ctxs: list[SpanContext | None] = []
        in_at: list[int] = []
        in_pos: list[int] = []
        out_vals: list[float] = []
        out_ctxs: list[SpanContext | None] = []
        out_at: list[int] = []
        out_pos: list[int] = []
        spent = 0.0
        tokens = 0
        costed = unpriced = 0
        cost_ctx = unpriced_ctx = None
        cost_pos = unpriced_pos = 0
        pricebook = self._pricebook
        for j, attrs in enumerate(attrs_list):
            get = attrs.get
            ctx, at, pos = ctxs[j], ats[j], positions[j]
            count = get(_IN)
            if type(count) is not int:
                count = _int(count)
            if count is not None and count >= 0:
                tokens += count
                in_vals.append(count)
                in_ctxs.append(ctx)
                in_at.append(at)
                in_pos.append(pos)
            count = get(_OUT)
            if type(count) is not int:
                count = _int(count)
            if count is not None and count >= 0:
                tokens += count
                out_vals.append(count)
                out_ctxs.append(ctx)
                out_at.append(at)
                out_pos.append(pos)
            amount = get(_COST_AMOUNT)
            if type(amount) is float and get(_COST_CURRENCY, "USD") == "USD":
                is_unpriced = False
            else:
                amount, is_unpriced = span_cost(attrs, pricebook)
            if amount is not None and amount >= 0:
                spent += amount
                costed += 1
                cost_ctx, cost_pos = ctx, pos
            elif is_unpriced:
                unpriced += 1
                unpriced_ctx, unpriced_pos = ctx, pos
        self._extend(self.token_usage, in_dims, in_key, in_vals, in_ctxs, in_at, in_pos, hists)
        self._extend(
            self.token_usage, out_dims, out_key, out_vals, out_ctxs, out_at, out_pos, hists
        )
        sums = batch.sums
        if costed:
            self._add(self.cost, spent, cost_dims, cost_ctx, sums, cost_key, cost_pos)
        if unpriced:
            self._add(
                self.unpriced,
                unpriced,
                unpriced_dims,
                unpriced_ctx,
                sums,
                unpriced_key,
                unpriced_pos,
            )
        if self._spend_listeners:
            agent = key[8]
            agent = agent if isinstance(agent, str) and agent else None
            total = batch.spend.get(agent)
            if total is None:
                total = batch.spend[agent] = [0.0, 0]
            total[0] += spent
            total[1] += tokens

    def _build_shape(self, kind: str, attrs: Mapping[str, Any], err: str | None) -> _Shape:
        def hkey(inst: Any, dims: dict[str, AttributeValue]) -> Any:
            try:
                key = (id(inst), tuple(dims.items()))
                hash(key)
                return key
            except TypeError:
                return None

        def ckey(inst: Any, dims: dict[str, AttributeValue]) -> Any:
            try:
                key = (id(inst), tuple(sorted(dims.items())))
                hash(key)
                return key
            except TypeError:
                return None

        if kind == "i":
            base = _pick(attrs, _INFERENCE_KEYS)
            dur = dict(base)
            if err:
                dur[sc.ERROR_TYPE] = err
            inp = {**base, sc.GEN_AI_TOKEN_TYPE: sc.TOKEN_TYPE_INPUT}
            out = {**base, sc.GEN_AI_TOKEN_TYPE: sc.TOKEN_TYPE_OUTPUT}
            cost = _pick(attrs, _COST_KEYS)
            return (
                (dur, hkey(self.operation_duration, dur)),
                (inp, hkey(self.token_usage, inp)),
                (out, hkey(self.token_usage, out)),
                (cost, ckey(self.cost, cost)),
                (cost, ckey(self.unpriced, cost)),
            )
        dims = _pick(attrs, _AGENT_KEYS if kind == "a" else _TOOL_KEYS)
        if err:
            dims[sc.ERROR_TYPE] = err
        inst = self.agent_duration if kind == "a" else self.tool_duration
        return ((dims, hkey(inst, dims)),)

    def _record(
        self,
        span: ReadableSpan,
        batch: _Batch | None = None,
        plain: Mapping[str, Any] | None = None,
        normalized: bool = False,
        pos: int = 0,
    ) -> None:
        if batch is None:  # one span (on_end): the same aggregation, flushed at once
            one = _Batch()
            self._record(span, one)
            self._flush(one)
            return
        sums, hists = batch.sums, batch.hists
        # A plain dict: lookups of absent keys on the SDK's attribute proxy cost ~1 µs each.
        attrs: Mapping[str, Any] = plain if plain is not None else plain_attributes(span)
        if not normalized:
            attrs = self._normalize(attrs)
        get = attrs.get
        op = get(sc.GEN_AI_OPERATION_NAME)
        method = get(sc.A2A_METHOD_NAME)
        events = _may_have_events(span)
        if op not in _MEASURED_OPERATIONS and not method and not events:
            return  # most spans of a trace (plan, workflow, HTTP, DB): nothing to measure
        # The span's own context, not the calling thread's: exemplars link to this span even
        # when it is recorded off the application thread (EnrichingSpanProcessor's worker).
        span_ctx = span.context
        if span_ctx is not None and not span_ctx.trace_flags.sampled:
            span_ctx = None
        # error.type, else the conventions' fallback for an ERROR status
        err = get(sc.ERROR_TYPE)
        if type(err) is not str or not err:
            err = _OTHER_ERROR if span.status.status_code is _STATUS_ERROR else None
        duration = None
        end = span.end_time
        start = span.start_time
        if start is not None and end is not None:
            duration = max(0, end - start) / 1e9
        at = end if end is not None else 0

        if op in sc.INFERENCE_OPERATIONS:
            (
                (dur_dims, dur_key),
                (in_dims, in_key),
                (out_dims, out_key),
                (cost_dims, cost_key),
                (unpriced_dims, unpriced_key),
            ) = self._shape("i", attrs, err)
            if duration is not None:
                self._observe(
                    self.operation_duration, duration, dur_dims, span_ctx, at, hists, dur_key, pos
                )
            tokens = 0
            count = _int(get(sc.GEN_AI_USAGE_INPUT_TOKENS))
            if count is not None and count >= 0:
                tokens += count
                self._observe(self.token_usage, count, in_dims, span_ctx, at, hists, in_key, pos)
            count = _int(get(sc.GEN_AI_USAGE_OUTPUT_TOKENS))
            if count is not None and count >= 0:
                tokens += count
                self._observe(self.token_usage, count, out_dims, span_ctx, at, hists, out_key, pos)
            amount, unpriced = span_cost(attrs, self._pricebook)
            if amount is not None and amount >= 0:
                self._add(self.cost, amount, cost_dims, span_ctx, sums, cost_key, pos)
            elif unpriced:
                self._add(self.unpriced, 1, unpriced_dims, span_ctx, sums, unpriced_key, pos)
            if self._spend_listeners:
                agent = get(sc.GEN_AI_AGENT_NAME)
                agent = agent if isinstance(agent, str) and agent else None
                spent = batch.spend.get(agent)
                if spent is None:
                    spent = batch.spend[agent] = [0.0, 0]
                if amount is not None and amount >= 0:
                    spent[0] += amount
                spent[1] += tokens
        elif op == sc.OP_INVOKE_AGENT and duration is not None:
            ((dims, key),) = self._shape("a", attrs, err)
            self._observe(self.agent_duration, duration, dims, span_ctx, at, hists, key, pos)
        elif op == sc.OP_EXECUTE_TOOL and duration is not None:
            ((dims, key),) = self._shape("t", attrs, err)
            self._observe(self.tool_duration, duration, dims, span_ctx, at, hists, key, pos)

        for event in span.events if events else ():
            if event.name == sc.EVENT_AGENT_DECISION:
                ev = event.attributes or {}
                dims = _pick(attrs, (sc.GEN_AI_AGENT_NAME,))
                dims.update(_pick(ev, (sc.AGENT_DECISION_TYPE,)))
                self._add(self.decisions, 1, dims, span_ctx, sums, None, pos)

        if isinstance(method, str) and method and span.kind in (SpanKind.CLIENT, SpanKind.SERVER):
            dims = {
                sc.A2A_METHOD_NAME: method,
                sc.NETWORK_IO_DIRECTION: "transmit" if span.kind is SpanKind.CLIENT else "receive",
            }
            dims.update(_pick(attrs, (sc.GEN_AI_AGENT_NAME,)))
            if err:
                dims[sc.ERROR_TYPE] = err
            self._add(self.a2a_messages, 1, dims, span_ctx, sums, None, pos)

    def shutdown(self) -> None:
        """Nothing to release: the meter provider owns the instruments."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered here; always True."""
        return True


class ProcessMetrics:
    """Observable process metrics read through psutil at collection time.

    ``process.cpu.time`` (``s``, by ``cpu.mode``), ``process.memory.usage`` (RSS, ``By``),
    ``process.unix.file_descriptor.count``, ``process.thread.count`` and
    ``cpython.gc.collections`` (by ``cpython.gc.generation``) — the OTel process / CPython
    semantic-convention names.  A failing probe yields no observation; it never raises.

    Args:
        meter_provider: where to register; the global meter provider when None.
    """

    def __init__(self, meter_provider: metrics.MeterProvider | None = None) -> None:
        import psutil

        self._proc = psutil.Process()
        meter = metrics.get_meter(_SCOPE, meter_provider=meter_provider)
        meter.create_observable_counter(
            sc.METRIC_PROCESS_CPU_TIME, [self._cpu], unit="s", description="CPU time."
        )
        meter.create_observable_up_down_counter(
            sc.METRIC_PROCESS_MEMORY_USAGE, [self._rss], unit="By", description="Resident memory."
        )
        meter.create_observable_up_down_counter(
            sc.METRIC_PROCESS_FD_COUNT, [self._fds], unit="", description="Open file descriptors."
        )
        meter.create_observable_up_down_counter(
            sc.METRIC_PROCESS_THREAD_COUNT, [self._threads], unit="", description="Threads."
        )
        meter.create_observable_counter(
            sc.METRIC_CPYTHON_GC_COLLECTIONS, [self._gc], unit="", description="GC collections."
        )

    def _cpu(self, options: CallbackOptions) -> Iterable[Observation]:
        try:
            t = self._proc.cpu_times()
            return [
                Observation(t.user, {sc.CPU_MODE: "user"}),
                Observation(t.system, {sc.CPU_MODE: "system"}),
            ]
        except Exception:
            return []

    def _rss(self, options: CallbackOptions) -> Iterable[Observation]:
        try:
            return [Observation(self._proc.memory_info().rss)]
        except Exception:
            return []

    def _fds(self, options: CallbackOptions) -> Iterable[Observation]:
        try:
            return [Observation(self._proc.num_fds())]
        except Exception:  # not on Windows
            return []

    def _threads(self, options: CallbackOptions) -> Iterable[Observation]:
        try:
            return [Observation(self._proc.num_threads())]
        except Exception:
            return []

    def _gc(self, options: CallbackOptions) -> Iterable[Observation]:
        try:
            return [
                Observation(stats["collections"], {sc.CPYTHON_GC_GENERATION: gen})
                for gen, stats in enumerate(gc.get_stats())
            ]
        except Exception:
            return []


_install_lock = threading.Lock()
# id(provider) -> (provider, processor); the provider is kept so a recycled id never matches
_installed: dict[int, tuple[object, AgentMetricsProcessor]] = {}
_process_metrics_on: list[object] = []  # meter providers that have the process metrics


def install_metrics(
    meter_provider: metrics.MeterProvider | None = None,
    *,
    tracer_provider: trace.TracerProvider | None = None,
    process_metrics: bool = True,
    attach: bool = True,
    pricebook: Any = None,
) -> AgentMetricsProcessor | None:
    """Attaches the span-derived metrics (and process metrics) to the existing providers.

    Idempotent per tracer provider; never raises (returns None when it could not install).
    The zero-code hook and ``configure()`` call this.

    Args:
        meter_provider: the meter provider; the global one when None.
        tracer_provider: the tracer provider to attach to; the global one when None.
        process_metrics: also register the psutil process metrics.
        attach: add the processor to ``tracer_provider``; pass False when the caller chains it
            behind its own enriching processor instead.
        pricebook: optional ``PriceBook`` for spans that arrive unpriced.

    Returns:
        The processor, or None if the providers are no-op / installation failed.
    """
    try:
        tp = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        with _install_lock:
            existing = _installed.get(id(tp))
            if existing is not None and existing[0] is tp:
                return existing[1]
            processor = AgentMetricsProcessor(meter_provider, pricebook=pricebook)
            if attach:
                add = getattr(tp, "add_span_processor", None)
                if add is None:
                    _log.debug("install_metrics: tracer provider %r takes no processors", tp)
                    return None
                add(processor)
            if process_metrics:
                mp = meter_provider if meter_provider is not None else metrics.get_meter_provider()
                # once per meter provider: a second set of callbacks would double every point
                if not any(m is mp for m in _process_metrics_on):
                    try:
                        ProcessMetrics(mp)
                        _process_metrics_on.append(mp)
                    except Exception:
                        _log.warning("otel-agents: process metrics unavailable", exc_info=True)
            _installed[id(tp)] = (tp, processor)
            return processor
    except Exception:
        _log.warning("otel-agents: could not install agent metrics", exc_info=True)
        return None
