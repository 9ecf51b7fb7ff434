# SPDX-License-Identifier: Apache-2.0
"""Enriching span processors: agent identity, dialect normalization and cost.

Three processors, all exact :class:`opentelemetry.sdk.trace.SpanProcessor` subclasses that never
raise into the application (failures are logged with a traceback at most once a minute per site):

:class:`AgentIdentitySpanProcessor`
    ``on_start``: puts the enclosing agent's ``gen_ai.agent.name`` / ``gen_ai.agent.id`` /
    ``gen_ai.conversation.id`` on *every* live span started inside :func:`otel_agents.invoke_agent`,
    including spans of third-party instrumentations (HTTP clients, LLM SDKs). Keys the span
    already has win. (The exporting path, below, writes it on GenAI spans only.)

:class:`EnrichingSpanProcessor`
    Wraps the next processor (typically ``BatchSpanProcessor(exporter)``) and, in ``on_end``, hands
    it an enriched *copy* of the read-only span: attributes normalized to the current GenAI names
    (:func:`otel_agents._normalize.normalize_attributes`) and, on inference spans only, priced
    (``gen_ai.usage.cost.*``; ``agent.cost.unpriced=true`` for unknown models;
    ``agent.cost.price_source`` only when a user override priced it). With ``identity=True``,
    GenAI spans of other instrumentations also get the enclosing agent's identity. The SDK's span
    is never mutated. The SDK's own spans are handed on as such a copy even when nothing changes
    (plain containers and a hash-once resource, which the OTLP encoder reads faster than the
    copy costs: :func:`_enriched_copy`); other span types that need no change pass as they are.

:class:`EnrichOnEndingSpanProcessor`
    For the zero-code path, where the exporting processor already exists: uses the SDK's
    experimental ``_on_ending`` hook (the specification's *OnEnding*) to add the same attributes
    while the span is still writable. It can only *add* attributes (dialect keys stay next to their
    canonical copies). SDK 1.45 calls ``_on_ending`` after the end timestamp is set, which makes
    ``set_attribute`` a no-op there; :func:`on_ending_can_mutate` probes that once, and the
    zero-code hook falls back to wrapping the exporting processors instead.

Cost semantics: ``gen_ai.usage.cost.source`` is ``local`` when we priced the span and
``provider`` when the span already carried a cost (kept as it is). Only inference operations
(``chat``, ``text_completion``, ``generate_content``, ``embeddings``) are priced, so roll-ups over
a trace never double count.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Generic, TypeAlias, TypeVar, cast

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.util import BoundedList
from opentelemetry.util.types import AttributeValue

from otel_agents import semconv as sc
from otel_agents._cost import PRICE_SOURCE_GENAI_PRICES, PriceBook
from otel_agents._errors import ConfigError
from otel_agents._metrics import plain_attributes as _plain_attributes
from otel_agents._normalize import DIALECT_KEYS as _DIALECT_KEYS
from otel_agents._normalize import normalize_attributes, normalize_in_place
from otel_agents._spans import _CURRENT_AGENT, AgentIdentity, current_agent, rate_limited
from otel_agents.environment_variables import OTEL_AGENTS_COST_ENABLED

__all__ = [
    "AgentIdentitySpanProcessor",
    "EnrichOnEndingSpanProcessor",
    "EnrichingSpanProcessor",
    "SpanEnricher",
    "on_ending_can_mutate",
]

logger = logging.getLogger(__name__)

_MAX_UNPRICED_MODELS: Final = 256
_OVERFLOW: Final = "__overflow__"
_INFERENCE: Final = sc.INFERENCE_OPERATIONS
_OP: Final = sc.GEN_AI_OPERATION_NAME
_IN: Final = sc.GEN_AI_USAGE_INPUT_TOKENS
_OUT: Final = sc.GEN_AI_USAGE_OUTPUT_TOKENS
_CACHE_READ: Final = sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS
_CACHE_CREATION: Final = sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS
_RESPONSE_MODEL: Final = sc.GEN_AI_RESPONSE_MODEL
_REQUEST_MODEL: Final = sc.GEN_AI_REQUEST_MODEL
_PROVIDER: Final = sc.GEN_AI_PROVIDER_NAME
_COST_AMOUNT: Final = sc.GEN_AI_USAGE_COST_AMOUNT
_COST_CURRENCY: Final = sc.GEN_AI_USAGE_COST_CURRENCY
_COST_SOURCE: Final = sc.GEN_AI_USAGE_COST_SOURCE
_UNPRICED: Final = sc.AGENT_COST_UNPRICED
_PRICE_SOURCE: Final = sc.AGENT_COST_PRICE_SOURCE
_A2A_METHOD: Final = sc.A2A_METHOD_NAME
_AGENT_NAME: Final = sc.GEN_AI_AGENT_NAME
_AGENT_ID: Final = sc.GEN_AI_AGENT_ID
_CONVERSATION_ID: Final = sc.GEN_AI_CONVERSATION_ID
_IDENTITY_KEYS: Final = frozenset((_AGENT_NAME, _AGENT_ID, _CONVERSATION_ID))
# Spans of the otel_agents spans API carry the identity from creation (attributes passed to
# start_span, validated once by the SDK): identity processing skips them.
_OWN_SCOPE: Final = "otel_agents"
# Open spans whose identity waits in EnrichingSpanProcessor's side table; past this (spans that
# are never ended, or a huge fan-out) identity is written on the live span as before.
_MAX_PENDING_IDENTITIES: Final = 16384
# Off-thread delivery: the worker wakes every _DELIVERY_DELAY_S or when _DELIVERY_BATCH spans
# wait; past _MAX_PENDING_DELIVERIES the application thread delivers itself (backpressure, no loss).
# 128, not 512: the worker then reads spans the application thread wrote moments ago, still in
# the CPU cache; with 512 the total CPU per span was 2-4 % higher in three same-run comparisons
# (benchmarks/sdk_overhead.py workloads), more than the smaller metric batches cost.
_DELIVERY_DELAY_S: Final = 0.1
_DELIVERY_BATCH: Final = 128
_MAX_PENDING_DELIVERIES: Final = 16384


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    return value not in ("false", "0", "no", "off")


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


class SpanEnricher:
    """Computes the attributes an ended span should carry (shared by both enriching processors).

    Args:
        pricebook: the price book; default ``PriceBook()`` (reads :envvar:`OTEL_AGENTS_PRICES_FILE`).
        cost: price inference spans; default from :envvar:`OTEL_AGENTS_COST_ENABLED` (true).
        normalize: translate dialect attributes (OpenInference, OpenLLMetry, ``gen_ai.system``).
        strict: raise ``ConfigError`` for an invalid prices file (code-based set-up); when
            ``False`` (zero-code), log it and price with the bundled data only.

    Raises:
        ConfigError: ``strict`` and the file named by :envvar:`OTEL_AGENTS_PRICES_FILE` is invalid.
    """

    def __init__(
        self,
        pricebook: PriceBook | None = None,
        *,
        cost: bool | None = None,
        normalize: bool = True,
        strict: bool = True,
    ) -> None:
        self._cost = _env_flag(OTEL_AGENTS_COST_ENABLED, True) if cost is None else cost
        if self._cost and pricebook is None:
            try:
                pricebook = PriceBook()
            except ConfigError:
                if strict:
                    raise
                logger.exception("otel_agents: price overrides ignored; using genai-prices only")
                pricebook = PriceBook({})
        self._pricebook = pricebook if self._cost else None
        # PriceBook._quote (a tuple, no Price object) unless a subclass overrides price().
        self._quote = (
            pricebook._quote
            if self._pricebook is not None
            and isinstance(pricebook, PriceBook)
            and type(pricebook).price is PriceBook.price
            and type(pricebook)._quote is PriceBook._quote
            else None
        )
        self._normalize = normalize
        self._lock = threading.Lock()
        self._unpriced_total = 0
        self._unpriced_by_model: dict[str, int] = {}

    @property
    def normalizes(self) -> bool:
        """Whether :meth:`enrich` translates dialect attributes (``normalize=True``)."""
        return self._normalize

    @property
    def unpriced_calls(self) -> int:
        """Inference spans with tokens whose model had no price (marked ``agent.cost.unpriced``)."""
        return self._unpriced_total

    def unpriced_models(self) -> dict[str, int]:
        """Unpriced calls per model (bounded; the overflow is counted under ``__overflow__``)."""
        with self._lock:
            return dict(self._unpriced_by_model)

    def enrich(
        self,
        attrs: Mapping[str, AttributeValue],
        start_time_ns: int | None,
        *,
        owned: bool = False,
    ) -> dict[str, AttributeValue] | None:
        """The complete new attribute dict, or ``None`` when the span needs no change.

        Hot path (every span): a set-disjointness test and one ``get`` for spans that are
        neither in a dialect nor inference; inference spans are copied once and priced in place.

        Args:
            attrs: the span's attributes (not modified unless ``owned``).
            start_time_ns: the span's start (epoch ns), for time-dependent prices.
            owned: ``attrs`` is a plain dict the caller owns; it may be modified and returned.
        """
        out: dict[str, AttributeValue] | None = None
        if self._normalize and not _DIALECT_KEYS.isdisjoint(attrs):
            if owned and type(attrs) is dict:
                out = normalize_in_place(attrs)
            else:
                out = normalize_attributes(attrs)
        if self._cost:
            op = (attrs if out is None else out).get(_OP)
            if op in _INFERENCE:
                if out is None:
                    priced = attrs if owned and type(attrs) is dict else dict(attrs)
                    return priced if self._apply_cost(priced, start_time_ns) else None
                self._apply_cost(out, start_time_ns)
        return out

    def _enrich_owned(
        self, attrs: dict[str, AttributeValue], start_time_ns: int | None
    ) -> dict[str, AttributeValue] | None:
        """:meth:`enrich` with ``owned=True`` (positional: the worker calls it per span)."""
        out: dict[str, AttributeValue] | None = None
        if self._normalize and not _DIALECT_KEYS.isdisjoint(attrs):
            out = normalize_in_place(attrs)
        if self._cost and (attrs if out is None else out).get(_OP) in _INFERENCE:
            if out is None:
                return attrs if self._apply_cost(attrs, start_time_ns) else None
            self._apply_cost(out, start_time_ns)
        return out

    def _apply_cost(self, attrs: dict[str, AttributeValue], start_time_ns: int | None) -> bool:
        """Add the cost attributes to ``attrs`` (an inference span's); whether anything changed."""
        if _COST_AMOUNT in attrs:
            if _COST_SOURCE in attrs:
                return False
            # The instrumentation / provider reported the cost: keep it and say so.
            attrs[_COST_SOURCE] = sc.COST_SOURCE_PROVIDER
            return True
        if attrs.get(_UNPRICED) is True:
            return False
        get = attrs.get
        inp, out = get(_IN), get(_OUT)
        if type(inp) is not int:
            inp = _int(inp)
        if type(out) is not int:
            out = _int(out)
        if inp is None and out is None:
            return False  # no usage reported (e.g. a failed call): nothing to price
        model = get(_RESPONSE_MODEL) or get(_REQUEST_MODEL)
        provider = get(_PROVIDER)
        quote: tuple[float, str, str, str] | None = None
        if isinstance(model, str) and model and self._pricebook is not None:
            cache_read = get(_CACHE_READ)
            cache_creation = get(_CACHE_CREATION)
            if self._quote is not None:
                quote = self._quote(
                    model,
                    provider if isinstance(provider, str) else None,
                    inp or 0,
                    out or 0,
                    (cache_read if type(cache_read) is int else _int(cache_read)) or 0,
                    (cache_creation if type(cache_creation) is int else _int(cache_creation)) or 0,
                    start_time_ns,
                )
            else:
                price = self._pricebook.price(
                    model=model,
                    provider=provider if isinstance(provider, str) else None,
                    input_tokens=inp or 0,
                    output_tokens=out or 0,
                    cache_read_tokens=_int(cache_read) or 0,
                    cache_creation_tokens=_int(cache_creation) or 0,
                    timestamp=start_time_ns,
                )
                if price is not None:
                    quote = (price.amount, price.currency, price.source, price.price_source)
        if quote is None:
            self._count_unpriced(model if isinstance(model, str) and model else "")
            attrs[_UNPRICED] = True
            return True
        amount, currency, source, price_source = quote
        attrs[_COST_AMOUNT] = amount
        attrs[_COST_CURRENCY] = currency
        attrs[_COST_SOURCE] = source
        # Only a non-default source is worth an exported attribute (each costs the OTLP encoder
        # ~2 µs per span): absent means the bundled genai-prices table priced the span.
        if price_source != PRICE_SOURCE_GENAI_PRICES:
            attrs[_PRICE_SOURCE] = price_source
        return True

    def _count_unpriced(self, model: str) -> None:
        with self._lock:
            self._unpriced_total += 1
            key = model
            if (
                key not in self._unpriced_by_model
                and len(self._unpriced_by_model) >= _MAX_UNPRICED_MODELS
            ):
                key = _OVERFLOW
            self._unpriced_by_model[key] = self._unpriced_by_model.get(key, 0) + 1


class _EnrichedSpan(ReadableSpan):
    """A read-only copy of an ended span with other attributes; drop counts are preserved.

    Built through the public ``ReadableSpan`` constructor; :func:`_enriched_copy` has a faster
    path for the SDK's own ``ReadableSpan``.
    """

    def __init__(self, span: ReadableSpan, attributes: dict[str, AttributeValue]) -> None:
        super().__init__(
            name=span.name,
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes=attributes,
            events=span.events,
            links=span.links,
            kind=span.kind,
            status=span.status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )
        self._dropped: tuple[int, int, int] = (
            span.dropped_attributes,
            span.dropped_events,
            span.dropped_links,
        )

    @property
    def dropped_attributes(self) -> int:
        return self._dropped[0]

    @property
    def dropped_events(self) -> int:
        return self._dropped[1]

    @property
    def dropped_links(self) -> int:
        return self._dropped[2]


def _frozen(items: object) -> tuple[tuple[Any, ...], int] | None:
    """An ended span's event or link list as a tuple, and its drop count (None: unknown type).

    The SDK keeps them in a ``BoundedList`` whose iteration takes a lock and copies a list in
    Python on every ``span.events`` / ``span.links`` read; ended, it no longer changes.
    """
    if type(items) is BoundedList:
        bounded = items
        queue = getattr(bounded, "_dq", None)
        if type(queue) is collections.deque:
            return (tuple(queue) if queue else ()), bounded.dropped
        return tuple(bounded), bounded.dropped
    if type(items) is tuple:
        return items, 0  # ReadableSpan counts no drops for a plain tuple
    return None


class _HashedResource(Resource):
    """An equal copy of an (immutable) ``Resource`` whose hash is computed once.

    ``Resource.__hash__`` serializes every attribute to sorted JSON on each call (~3.5 µs), and
    the OTLP encoder hashes each span's resource to group the spans of a batch; the resource of
    the copies this module hands on is this equal, hash-once copy (same attributes, schema URL,
    hash, so the encoder groups and encodes exactly as before).
    """

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource.attributes, resource.schema_url)
        self._hash = hash(resource)

    def __hash__(self) -> int:
        return self._hash


# id(original resource) -> (original, its hashed copy); a provider has one resource, so a few.
_HASHED: dict[int, tuple[Resource, Resource]] = {}
_MAX_HASHED: Final = 64


def _hashed(resource: Any) -> Any:
    """The :class:`_HashedResource` equal to ``resource`` (itself for any other type)."""
    if type(resource) is not Resource:
        return resource
    entry = _HASHED.get(id(resource))
    if entry is not None and entry[0] is resource:
        return entry[1]
    try:
        copy = _HashedResource(resource)
    except Exception:
        rate_limited.exception(logger, "copying a span resource")
        return resource
    if len(_HASHED) >= _MAX_HASHED:
        _HASHED.clear()
    _HASHED[id(resource)] = (resource, copy)
    return copy


def _enriched_copy(span: ReadableSpan, attributes: dict[str, AttributeValue]) -> ReadableSpan:
    """A new read-only span equal to ``span`` but with ``attributes``; ``span`` is not touched.

    For the SDK's plain ``ReadableSpan`` (what ``Span.end`` hands to ``on_end``) this is a shallow
    copy of its instance dict whose attributes (a plain dict), events and links (tuples) are held
    in plain containers: every property the OTLP encoder reads then costs a C-level copy or
    iteration instead of the SDK's locking ``BoundedAttributes`` / ``BoundedList`` Python code,
    and its resource is an equal one whose hash is computed once (:class:`_HashedResource`) —
    together about 6 µs less OTLP encoding per span (``benchmarks/sdk_overhead.py``), far more
    than the copy costs, so the enricher hands every such span on as a copy, changed or not.
    Anything else, or a future SDK with another layout, goes through the public constructor.
    """
    state = getattr(span, "__dict__", None)
    if type(span) is ReadableSpan and state is not None and "_attributes" in state:
        events = _frozen(state.get("_events"))
        links = _frozen(state.get("_links"))
        if events is not None and links is not None:  # known containers
            new = object.__new__(_EnrichedSpan)
            new.__dict__.update(state)
            new._attributes = attributes
            new._events = events[0]
            new._links = links[0]
            new._resource = _hashed(state.get("_resource"))
            # The property's isinstance test against the ABC-derived BoundedAttributes is slow.
            original = state["_attributes"]
            dropped = (
                original.dropped if type(original) is BoundedAttributes else span.dropped_attributes
            )
            new._dropped = (dropped, events[1], links[1])
            return new
    return _EnrichedSpan(span, attributes)


def _is_deferrable(processor: SpanProcessor) -> bool:
    """Whether ``processor`` tolerates receiving ended spans later and on another thread.

    ``BatchSpanProcessor`` queues spans for its own worker anyway, and processors that declare
    ``otel_agents_deferrable = True`` (the agent metrics) only aggregate; anything else (a
    ``SimpleSpanProcessor``, a user's processor) keeps synchronous delivery.
    """
    return isinstance(processor, BatchSpanProcessor) or (
        getattr(processor, "otel_agents_deferrable", False) is True
    )


def _noop_on_start(processor: SpanProcessor) -> bool:
    """Whether ``processor.on_start`` does nothing (so it is not called per span)."""
    on_start = getattr(type(processor), "on_start", None)
    return (
        on_start is SpanProcessor.on_start
        or on_start is BatchSpanProcessor.on_start
        or getattr(type(processor), "otel_agents_noop_on_start", False) is True
    )


def _own_span(span: Span) -> bool:
    """Whether ``span`` comes from the otel_agents spans API (identity set at creation)."""
    scope = span.instrumentation_scope
    return scope is not None and scope.name == _OWN_SCOPE


def _is_genai(attrs: Mapping[str, AttributeValue]) -> bool:
    """Whether (normalized) ``attrs`` describe a GenAI or A2A operation.

    The GenAI conventions put the agent's identity on GenAI spans (agent, inference, tool,
    embeddings ...), not on the HTTP / database spans an agent causes: those get none, and the
    receiver attributes them to the agent of their nearest ancestor in the trace (each identity
    attribute costs the OTLP encoder ~2 µs per span).
    """
    return _OP in attrs or _A2A_METHOD in attrs


def _add_identity(attrs: dict[str, AttributeValue], agent: AgentIdentity) -> bool:
    """Add ``agent``'s identity keys ``attrs`` lacks (keys the span has win); whether any was."""
    added = False
    name = attrs.get(_AGENT_NAME)
    if name is None and agent.name is not None:
        attrs[_AGENT_NAME] = agent.name
        added = True
    # A span naming another agent (a dialect's own agent span) does not get this agent's id.
    same_agent = name is None or name == agent.name
    if agent.id is not None and same_agent and _AGENT_ID not in attrs:
        attrs[_AGENT_ID] = agent.id
        added = True
    if agent.conversation_id is not None and _CONVERSATION_ID not in attrs:
        attrs[_CONVERSATION_ID] = agent.conversation_id
        added = True
    return added


# A span to enrich, or (already enriched copy, its attributes or None) from the sync path.
_Pending: TypeAlias = ReadableSpan | tuple[ReadableSpan, dict[str, AttributeValue] | None]
_T = TypeVar("_T")


class _Delivery(Generic[_T]):
    """Hands queued items (ended spans) to ``deliver`` from one worker thread, in batches.

    The application thread only appends to a deque (and notifies the worker once per
    ``_DELIVERY_BATCH``); the worker enriches and delivers. ``flush()`` delivers everything
    pending on the calling thread, so after it returns the processors have seen every span.
    Fork-safe: the child starts its own worker and drops the parent's pending spans (the parent
    delivers those).
    """

    def __init__(self, deliver: Callable[[list[_T]], None], name: str) -> None:
        self._deliver = deliver
        self._queue: collections.deque[_T] = collections.deque()
        self._name = name
        self._cond = threading.Condition(threading.Lock())
        self._drain_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopped = False
        _deliveries.add(self)

    def put(self, item: _T) -> None:
        queue = self._queue
        queue.append(item)
        n = len(queue)
        if self._thread is None:
            self._start()
        if n == _DELIVERY_BATCH:
            with self._cond:
                self._cond.notify()
        elif n >= _MAX_PENDING_DELIVERIES or self._stopped:
            self.flush()  # the worker cannot keep up (or is gone): deliver here, lose nothing

    def _start(self) -> None:
        with self._cond:
            if self._thread is not None or self._stopped:
                return
            thread = threading.Thread(
                target=self._run, name=f"otel_agents.{self._name}", daemon=True
            )
            self._thread = thread
        try:
            thread.start()
        except Exception:  # e.g. no new threads at interpreter shutdown: deliver synchronously
            self._stopped = True
            rate_limited.exception(logger, f"{self._name} worker start")
            return
        # Registered at first use, so after the application's providers: atexit runs it first and
        # the last spans reach the metrics / exporters before those shut down.
        atexit.register(_flush_at_exit, weakref.ref(self))

    def _run(self) -> None:
        while not self._stopped:
            with self._cond:
                self._cond.wait(_DELIVERY_DELAY_S)
            if self._queue:
                self.flush()

    def flush(self) -> None:
        """Deliver every item queued before the call, on this thread (waits for the worker).

        Bounded by the queue length at the call: producers that keep appending cannot hold a
        flushing caller forever.
        """
        queue = self._queue
        with self._drain_lock:
            remaining = len(queue)
            while remaining > 0:
                batch: list[_T] = []
                try:
                    for _ in range(min(remaining, _DELIVERY_BATCH)):
                        batch.append(queue.popleft())
                except IndexError:
                    pass
                if not batch:
                    return
                remaining -= len(batch)
                try:
                    self._deliver(batch)
                except Exception:
                    rate_limited.exception(logger, f"{self._name} delivery")

    def stop(self) -> None:
        """Stop the worker after delivering what is pending."""
        with self._cond:
            self._stopped = True
            self._cond.notify()
            thread = self._thread
        if (
            thread is not None
            and thread.ident is not None
            and thread is not threading.current_thread()
        ):
            thread.join(5.0)
        self.flush()

    def _after_fork(self) -> None:
        self._queue = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._drain_lock = threading.Lock()
        self._thread = None


_deliveries: weakref.WeakSet[_Delivery[Any]] = weakref.WeakSet()


def _flush_at_exit(ref: weakref.ref[_Delivery[Any]]) -> None:
    delivery = ref()
    if delivery is not None:
        delivery.flush()


def _deliveries_after_fork() -> None:
    for d in list(_deliveries):
        with contextlib.suppress(Exception):  # never let a fork hook fail the child
            d._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_deliveries_after_fork)


class EnrichingSpanProcessor(SpanProcessor):
    """Wraps the next processor and hands it enriched copies of ended spans.

    Example::

        provider.add_span_processor(
            EnrichingSpanProcessor(BatchSpanProcessor(OTLPSpanExporter()))
        )

    Where the work runs (see ``docs/architecture.md``, *Performance*): the SDK's ended span is
    read-only and its attributes immutable, so the enrichment can run on another thread. Wrapped
    processors that queue for a worker anyway (``BatchSpanProcessor``) or only aggregate
    (the agent metrics processor) are *deferred*: the application thread appends the span to a
    queue and this processor's worker enriches it and hands them the copy, in batches. Any other
    wrapped processor (``SimpleSpanProcessor``, a user's) gets the enriched copy synchronously in
    ``on_end``, as before. ``force_flush`` / ``shutdown`` deliver everything pending first, so
    flush through the provider or this processor (a wrapped ``BatchSpanProcessor`` flushed on its
    own does not see spans still queued here); ``defer=False`` restores synchronous delivery.

    Args:
        next_processor: the processor (or processors, called in order) that receives the spans.
        pricebook: default ``PriceBook()`` (overrides from :envvar:`OTEL_AGENTS_PRICES_FILE`).
        cost: price inference spans; default from :envvar:`OTEL_AGENTS_COST_ENABLED` (true).
        normalize: translate dialect attributes to the GenAI names.
        enricher: share one :class:`SpanEnricher` (and its counters) between processors.
        identity: also attribute GenAI spans started inside :func:`otel_agents.invoke_agent` to
            that agent (what :class:`AgentIdentitySpanProcessor` does), but on the enriched copy:
            the identity is captured in ``on_start`` and written when the copy is made, so the
            application thread does not pay the SDK's attribute validation, and after
            normalization, so the span's own (dialect) keys win and only spans that are GenAI
            spans at their end get it. Only the wrapped processors see it.
        defer: ``False`` delivers to every wrapped processor synchronously.

    Raises:
        TypeError: ``next_processor`` is not a ``SpanProcessor``.
    """

    def __init__(
        self,
        next_processor: SpanProcessor | Sequence[SpanProcessor],
        *,
        pricebook: PriceBook | None = None,
        cost: bool | None = None,
        normalize: bool = True,
        enricher: SpanEnricher | None = None,
        identity: bool = False,
        defer: bool = True,
    ) -> None:
        if isinstance(next_processor, SpanProcessor):
            nexts: tuple[object, ...] = (next_processor,)
        elif isinstance(next_processor, (list, tuple)):
            nexts = tuple(next_processor)
        else:
            nexts = (next_processor,)
        for p in nexts:
            if not isinstance(p, SpanProcessor):
                raise TypeError(f"next_processor: expected a SpanProcessor, got {type(p).__name__}")
        self._next: tuple[SpanProcessor, ...] = cast(tuple[SpanProcessor, ...], nexts)
        # Only processors that override the experimental hook are called from it (per span).
        base_hook = getattr(SpanProcessor, "_on_ending", None)
        self._ending = tuple(
            p for p in self._next if getattr(type(p), "_on_ending", base_hook) is not base_hook
        )
        # Likewise on_start: BatchSpanProcessor's and the metrics processor's do nothing.
        self._starting = tuple(p for p in self._next if not _noop_on_start(p))
        self._deferred = tuple(p for p in self._next if defer and _is_deferrable(p))
        self._sync = tuple(p for p in self._next if p not in self._deferred)
        self._delivery: _Delivery[_Pending] | None = (
            _Delivery(self._deliver, "EnrichingSpanProcessor") if self._deferred else None
        )
        self._identity = identity
        # span_id -> identity captured at start; popped at end (dict ops are atomic in CPython).
        self._agents: dict[int, AgentIdentity] = {}
        self.enricher = enricher or SpanEnricher(pricebook, cost=cost, normalize=normalize)

    @property
    def next_processors(self) -> tuple[SpanProcessor, ...]:
        """The wrapped processors."""
        return self._next

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Capture the agent identity (``identity=True``) and forward to the wrapped processors."""
        if self._identity:
            try:
                agent = _CURRENT_AGENT.get()  # current_agent() minus a call, once per span
                if agent is not None:
                    scope = span.instrumentation_scope  # _own_span(), inlined
                    if scope is None or scope.name != _OWN_SCOPE:
                        agents = self._agents
                        if len(agents) < _MAX_PENDING_IDENTITIES:
                            agents[span.get_span_context().span_id] = agent
                        else:
                            _LIVE_IDENTITY.on_start(span, parent_context)
            except Exception:
                rate_limited.exception(logger, "EnrichingSpanProcessor identity")
        for p in self._starting:
            try:
                p.on_start(span, parent_context=parent_context)
            except Exception:
                rate_limited.exception(logger, f"{type(p).__name__}.on_start")

    def _on_ending(self, span: Span) -> None:
        for p in self._ending:
            try:
                p._on_ending(span)
            except Exception:
                rate_limited.exception(logger, f"{type(p).__name__}._on_ending")

    def _enriched_and_attributes(
        self, span: ReadableSpan, agent: AgentIdentity | None
    ) -> tuple[ReadableSpan, dict[str, AttributeValue] | None]:
        """The copy the wrapped processors get (``span`` itself when nothing changes and it is
        not the SDK's own ``ReadableSpan``) and its attributes as a plain dict (None after a
        failure, when ``span`` itself is handed on)."""
        try:
            attrs = _plain_attributes(span)
            new = self.enricher._enrich_owned(attrs, span.start_time) if attrs else None
            target = attrs if new is None else new
            changed = new is not None
            # Identity after normalization: a dialect's own agent / session keys win over the
            # enclosing agent, and only spans that turn out to be GenAI spans get it.
            if agent is not None and (_OP in target or _A2A_METHOD in target):
                changed = _add_identity(target, agent) or changed
            # An SDK span is copied even when unchanged: the copy's plain containers encode
            # faster than the copy costs (_enriched_copy).
            if changed or type(span) is ReadableSpan:
                return _enriched_copy(span, target), target
            return span, attrs
        except Exception:
            rate_limited.exception(logger, "EnrichingSpanProcessor enrichment")
        return span, None

    def on_end(self, span: ReadableSpan) -> None:
        """Hand the wrapped processors an enriched copy (or the span itself if unchanged)."""
        if self._sync:
            out, attrs = self._enriched_and_attributes(span, self._pop_agent(span))
            for p in self._sync:
                try:
                    p.on_end(out)
                except Exception:
                    rate_limited.exception(logger, f"{type(p).__name__}.on_end")
            if self._delivery is not None:
                self._put((out, attrs))
        else:
            delivery = self._delivery
            if delivery is not None:
                # Only the span: its identity is popped by the worker (no tuple per span here).
                try:
                    delivery.put(span)
                except Exception:
                    rate_limited.exception(logger, "EnrichingSpanProcessor queue")

    def _pop_agent(self, span: ReadableSpan) -> AgentIdentity | None:
        """The identity captured at the span's start, removed from the side table."""
        if not self._agents:
            return None
        try:
            return self._agents.pop(span.context.span_id, None)
        except Exception:
            rate_limited.exception(logger, "EnrichingSpanProcessor identity")
            return None

    def _put(self, item: _Pending) -> None:
        try:
            self._delivery.put(item)  # type: ignore[union-attr]
        except Exception:
            rate_limited.exception(logger, "EnrichingSpanProcessor queue")

    def _deliver(self, batch: list[_Pending]) -> None:
        """Worker side: enrich the batch, then hand it to each deferred processor (in order)."""
        outs: list[ReadableSpan] = []
        # The copies' attributes as plain dicts, for processors that take them (the metrics
        # processor): no second copy, and no second dialect check when they are normalized.
        attributes: list[dict[str, AttributeValue] | None] = []
        enrich = self._enriched_and_attributes
        agents = self._agents
        for item in batch:
            if isinstance(item, tuple):  # enriched on the application thread (sync processors)
                out, attrs = item
            else:
                agent = None
                if agents:  # _pop_agent(), inlined: this runs for every span
                    try:
                        agent = agents.pop(item.context.span_id, None)
                    except Exception:
                        rate_limited.exception(logger, "EnrichingSpanProcessor identity")
                out, attrs = enrich(item, agent)
            outs.append(out)
            attributes.append(attrs)
        normalized = self.enricher.normalizes
        for p in self._deferred:
            # A processor may take the whole batch (the metrics processor sums its counters).
            on_batch = getattr(p, "otel_agents_on_end_batch", None)
            if on_batch is not None:
                try:
                    if getattr(p, "otel_agents_takes_attributes", False) is True:
                        on_batch(outs, attributes=attributes, normalized=normalized)
                    else:
                        on_batch(outs)
                except Exception:
                    rate_limited.exception(logger, f"{type(p).__name__}.otel_agents_on_end_batch")
                continue
            for out in outs:
                try:
                    p.on_end(out)
                except Exception:
                    rate_limited.exception(logger, f"{type(p).__name__}.on_end")

    def deliver_pending(self) -> None:
        """Hand every span still queued for the deferred processors to them now (no flush)."""
        if self._delivery is not None:
            self._delivery.flush()

    def shutdown(self) -> None:
        """Deliver what is pending, then shut the wrapped processors down."""
        if self._delivery is not None:
            self._delivery.stop()
        for p in self._next:
            try:
                p.shutdown()
            except Exception:
                rate_limited.exception(logger, f"{type(p).__name__}.shutdown")

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Deliver what is pending, then flush the wrapped processors; ``False`` on a failure."""
        ok = True
        if self._delivery is not None:
            self._delivery.flush()
        for p in self._next:
            try:
                ok = p.force_flush(timeout_millis) and ok
            except Exception:
                rate_limited.exception(logger, f"{type(p).__name__}.force_flush")
                ok = False
        return ok


class AgentIdentitySpanProcessor(SpanProcessor):
    """Copies the enclosing agent's identity onto every span started inside it, live.

    Sets ``gen_ai.agent.name``, ``gen_ai.agent.id`` and ``gen_ai.conversation.id`` (when known and
    not already on the span; no id when the span names another agent) in ``on_start``, so
    third-party spans (LLM SDKs, HTTP clients, databases) are attributed to the agent that caused
    them by processors that see the live span (tests, the ``identity_only`` fallback). At start
    it cannot tell which spans will be GenAI spans; :class:`EnrichingSpanProcessor` with
    ``identity=True`` (what ``configure()`` and the zero-code hook use) writes the identity on the
    exported copy of GenAI spans only.
    """

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Add the current agent identity to ``span``."""
        try:
            agent = current_agent()
            if agent is None or _own_span(span):
                return  # spans of our own API got the identity as start_span attributes
            # A C-level dict copy: `in` on the SDK's attribute proxy raises and catches KeyError
            # per missing key (~4x slower for the usual case, a third-party span without them).
            have = _plain_attributes(span)
            present = {k: have[k] for k in _IDENTITY_KEYS if k in have}
            if _add_identity(present, agent):
                span.set_attributes({k: v for k, v in present.items() if k not in have})
        except Exception:
            rate_limited.exception(logger, "AgentIdentitySpanProcessor.on_start")


_LIVE_IDENTITY: Final = AgentIdentitySpanProcessor()


class EnrichOnEndingSpanProcessor(SpanProcessor):
    """Adds normalized and cost attributes in the SDK's ``_on_ending`` hook (zero-code path).

    Only effective where the SDK lets ``_on_ending`` modify the span
    (:func:`on_ending_can_mutate`); attributes can be added, not removed, so dialect keys stay.

    Args:
        pricebook: default ``PriceBook()``.
        cost: price inference spans; default from :envvar:`OTEL_AGENTS_COST_ENABLED` (true).
        enricher: share one :class:`SpanEnricher`.
    """

    def __init__(
        self,
        *,
        pricebook: PriceBook | None = None,
        cost: bool | None = None,
        enricher: SpanEnricher | None = None,
    ) -> None:
        self.enricher = enricher or SpanEnricher(pricebook, cost=cost)

    def _on_ending(self, span: Span) -> None:
        try:
            # SDK 1.45 already reports the span as ended here; writing would only log warnings.
            if not span.is_recording():
                return
            attrs = _plain_attributes(span)
            if not attrs:
                return
            new = self.enricher.enrich(attrs, span.start_time)
            if new is None:
                return
            added = {k: v for k, v in new.items() if k not in attrs}
            if added:
                span.set_attributes(added)
        except Exception:
            rate_limited.exception(logger, "EnrichOnEndingSpanProcessor._on_ending")


class _Probe(SpanProcessor):
    def _on_ending(self, span: Span) -> None:
        # SDK 1.45 sets the end time before _on_ending, so the span reports not recording and
        # set_attribute would only log "Setting attribute on ended span".
        if span.is_recording():
            span.set_attribute("otel_agents.probe", True)


_PROBE_RESULT: bool | None = None


def on_ending_can_mutate() -> bool:
    """Whether this SDK calls ``_on_ending`` while ``set_attribute`` still takes effect.

    Probed once with a private tracer provider (no exporter, no global state touched).
    """
    global _PROBE_RESULT
    if _PROBE_RESULT is None:
        result = False
        try:
            if hasattr(SpanProcessor, "_on_ending"):
                provider = TracerProvider()
                provider.add_span_processor(_Probe())
                span = provider.get_tracer("otel_agents.probe").start_span("probe")
                span.end()
                attrs = getattr(span, "attributes", None) or {}
                result = attrs.get("otel_agents.probe") is True
                provider.shutdown()
        except Exception:
            rate_limited.exception(logger, "probing SpanProcessor._on_ending")
        _PROBE_RESULT = result
    return _PROBE_RESULT


# --------------------------------------------------------------------------------------------
# Attaching to a provider that already exists (zero-code, or configure() on a user's provider)
# --------------------------------------------------------------------------------------------
MODE_ON_ENDING: Final = "on_ending"
MODE_WRAPPED: Final = "wrapped"
MODE_IDENTITY_ONLY: Final = "identity_only"
MODE_UNSUPPORTED: Final = "unsupported"
MODE_ALREADY: Final = "already_attached"

# Providers otel_agents already enriches (by configure() or the zero-code hook): attaching twice
# would chain the metrics processor twice and double count.
_attached: weakref.WeakSet[object] = weakref.WeakSet()
_attached_lock = threading.Lock()


# Provider -> the EnrichingSpanProcessor attach_to_provider wrapped its processors in.
_wrappers: weakref.WeakKeyDictionary[object, EnrichingSpanProcessor] = weakref.WeakKeyDictionary()


def deliver_pending(provider: object) -> None:
    """Deliver the spans queued in the processor :func:`attach_to_provider` added (never raises).

    ``configure()`` on someone else's provider flushes only what it added; the spans its
    metrics processor should see may still wait in the wrapper's queue.
    """
    try:
        wrapper = _wrappers.get(provider)
        if wrapper is not None:
            wrapper.deliver_pending()
    except Exception:
        rate_limited.exception(logger, "delivering pending spans")


def mark_attached(provider: object) -> bool:
    """Record that ``provider`` is enriched by otel_agents; ``False`` if it already was."""
    with _attached_lock:
        try:
            if provider in _attached:
                return False
            _attached.add(provider)
        except TypeError:  # not weakly referenceable: cannot track, treat as new
            pass
        return True


def _sdk_processors(existing: tuple[object, ...]) -> bool:
    """Whether a provider's processor tuple has the layout the ``wrapped`` mode relies on."""
    return all(isinstance(p, SpanProcessor) for p in existing)


def attach_to_provider(
    provider: object,
    *,
    enricher: SpanEnricher | None = None,
    extra_processors: Sequence[SpanProcessor] = (),
) -> str:
    """Add identity + enrichment to a tracer provider whose exporting processors already exist.

    In order of preference:

    1. ``on_ending``: the SDK lets ``_on_ending`` modify spans (:func:`on_ending_can_mutate`):
       :class:`AgentIdentitySpanProcessor` and :class:`EnrichOnEndingSpanProcessor` are appended
       with ``add_span_processor``, then ``extra_processors``.
    2. ``wrapped``: otherwise (SDK 1.45), the provider's processor tuple is replaced, under the
       multi-processor's own lock, by ``(EnrichingSpanProcessor(existing + extra_processors,
       identity=True),)``, so every processor that was there receives enriched copies (agent
       identity included). This relies on the SDK's ``_active_span_processor._span_processors``
       layout (a lock and a tuple of ``SpanProcessor``) and is checked first; there is no public
       route, see ``docs/architecture.md`` (*Zero-code*).
    3. ``identity_only``: the layout is not recognised: identity and ``extra_processors`` are
       appended and spans are not enriched in-process (the receiver still prices them).

    Args:
        provider: the tracer provider (anything without ``add_span_processor`` is left alone).
        enricher: shared enricher; default ``SpanEnricher()``.
        extra_processors: processors that should see enriched spans (e.g. the metrics processor).

    Returns:
        The mode used, ``unsupported`` for a provider that takes no processors, or
        ``already_attached`` when otel_agents enriches this provider already (nothing added).
    """
    add = getattr(provider, "add_span_processor", None)
    if add is None:
        return MODE_UNSUPPORTED
    if not mark_attached(provider):
        return MODE_ALREADY
    enricher = enricher or SpanEnricher()
    identity = AgentIdentitySpanProcessor()
    if on_ending_can_mutate():
        add(identity)
        add(EnrichOnEndingSpanProcessor(enricher=enricher))
        for p in extra_processors:
            add(p)
        return MODE_ON_ENDING
    multi = getattr(provider, "_active_span_processor", None)
    lock = getattr(multi, "_lock", None)
    existing = getattr(multi, "_span_processors", None)
    if lock is not None and isinstance(existing, tuple) and _sdk_processors(existing):
        with lock:
            current = multi._span_processors  # type: ignore[union-attr]
            wrapped = EnrichingSpanProcessor(
                tuple(current) + tuple(extra_processors), enricher=enricher, identity=True
            )
            multi._span_processors = (wrapped,)  # type: ignore[union-attr]
        with contextlib.suppress(TypeError):
            _wrappers[provider] = wrapped
        return MODE_WRAPPED
    logger.warning(
        "otel_agents: cannot enrich spans in-process on %s (unknown processor layout); "
        "agent identity only",
        type(provider).__name__,
    )
    add(identity)
    for p in extra_processors:
        add(p)
    return MODE_IDENTITY_ONLY
