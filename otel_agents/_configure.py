# SPDX-License-Identifier: Apache-2.0
"""``configure()``: code-based set-up of the SDK extension.

Attach, never replace:

* ``tracer_provider`` given → use it;
* else the global provider, when it is an SDK ``TracerProvider`` another library (or
  ``opentelemetry-instrument``) already set → attach to it, leaving its exporters alone;
* else (the global is still the API's proxy) → create a ``TracerProvider`` (resource from
  ``Resource.create``, so ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` / detectors apply;
  sampler and limits from ``OTEL_TRACES_SAMPLER`` / ``OTEL_*_LIMIT`` as the SDK reads them), an
  exporter from the standard variables, and set it as the global provider.

The exporter honours the standard variables: ``OTEL_TRACES_EXPORTER`` (``otlp`` — default —,
``console``, ``none``), ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`` (``http/protobuf`` — the
specification's default —, or ``grpc``), and the official OTLP exporters read
``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`` / ``HEADERS`` / ``COMPRESSION`` / ``TIMEOUT`` /
certificates themselves. Arguments win over variables.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from otel_agents._cost import PriceBook
from otel_agents._errors import ConfigError
from otel_agents._processors import (
    AgentIdentitySpanProcessor,
    EnrichingSpanProcessor,
    SpanEnricher,
    attach_to_provider,
    deliver_pending,
    mark_attached,
)

__all__ = ["Configured", "configure"]

logger = logging.getLogger(__name__)

_PROTOCOLS = ("grpc", "http/protobuf")
_BUILTIN_EXPORTERS = frozenset({"otlp", "otlp_proto_grpc", "otlp_proto_http", "console", "none"})


class Configured:
    """What :func:`configure` set up; keep it to flush and shut down.

    Attributes:
        tracer_provider: the provider spans go to (``None`` if none could be used).
        created_provider: whether :func:`configure` created (and set) that provider.
        enricher: the span enricher (``unpriced_calls`` counts unknown models).
        mode: how it attached: ``created``, ``on_ending``, ``wrapped``, ``identity_only``,
            ``unsupported`` or ``disabled``.
        meter_provider: the meter provider given to :func:`configure`, if any.
        logger_provider: the logger provider given to :func:`configure`, if any.
        metrics_processor: the span-derived metrics processor (``AgentMetricsProcessor``)
            chained behind the enricher, or ``None`` (``metrics=False``, or unavailable); feed a
            budget guard from it with ``BudgetGuard.feed_from``.
    """

    def __init__(
        self,
        tracer_provider: TracerProvider | None,
        created_provider: bool,
        enricher: SpanEnricher | None,
        mode: str,
        processors: Sequence[SpanProcessor] = (),
        meter_provider: Any = None,
        logger_provider: Any = None,
        metrics_processor: Any = None,
    ) -> None:
        self.tracer_provider = tracer_provider
        self.created_provider = created_provider
        self.enricher = enricher
        self.mode = mode
        self.meter_provider = meter_provider
        self.logger_provider = logger_provider
        self.metrics_processor = metrics_processor
        self._processors = tuple(processors)
        self._shut_down = False

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export what is buffered; ``False`` on timeout or failure. Never raises.

        Returns within ``timeout_millis``: the SDK's BatchSpanProcessor (1.45) ignores the
        timeout and exports every queued batch with the exporter's own timeout, so the flush
        runs on a helper thread that is abandoned (it finishes in the background) when time
        is up.
        """
        outcome: list[bool] = []

        def flush() -> None:
            try:
                if self.created_provider and self.tracer_provider is not None:
                    outcome.append(bool(self.tracer_provider.force_flush(timeout_millis)))
                    return
                deliver_pending(self.tracer_provider)
                outcome.append(all(p.force_flush(timeout_millis) for p in self._processors))
            except Exception:
                logger.exception("otel_agents: force_flush failed")
                outcome.append(False)

        try:
            worker = threading.Thread(target=flush, name="otel_agents-force-flush", daemon=True)
            worker.start()
            worker.join(max(timeout_millis, 0) / 1000)
        except Exception:
            logger.exception("otel_agents: force_flush failed")
            return False
        return bool(outcome) and outcome[0]

    def shutdown(self) -> None:
        """Flush and stop what :func:`configure` created; a later ``configure()`` starts afresh.

        A provider that :func:`configure` did not create is not shut down (it belongs to
        someone else); only the processors added to it are.
        """
        global _current
        with _lock:
            if self._shut_down:
                return
            self._shut_down = True
            if _current is self:
                _current = None
        try:
            if self.created_provider and self.tracer_provider is not None:
                self.tracer_provider.shutdown()
            else:
                deliver_pending(self.tracer_provider)
                for p in self._processors:
                    p.shutdown()
        except Exception:
            logger.exception("otel_agents: shutdown failed")


_lock = threading.RLock()
_current: Configured | None = None


def configure(
    *,
    service_name: str | None = None,
    tracer_provider: TracerProvider | None = None,
    span_exporter: SpanExporter | None = None,
    exporter: str | None = None,
    endpoint: str | None = None,
    protocol: str | None = None,
    headers: Mapping[str, str] | None = None,
    pricebook: PriceBook | None = None,
    cost: bool | None = None,
    metrics: bool = True,
    meter_provider: Any = None,
    logger_provider: Any = None,
    set_global: bool = True,
) -> Configured:
    """Set up agent-aware tracing; idempotent (a second call returns the first handle).

    Args:
        service_name: ``service.name`` of a provider we create (wins over ``OTEL_SERVICE_NAME``).
        tracer_provider: attach to this provider instead of the global one.
        span_exporter: export through this exporter (wrapped for enrichment) instead of one
            built from the environment; also added to an existing provider when given.
        exporter: comma list of span exporter names (``otlp``, ``otlp_proto_grpc``,
            ``otlp_proto_http``, ``console``, ``none`` or any ``opentelemetry_traces_exporter``
            entry point); default ``OTEL_TRACES_EXPORTER`` or ``otlp``. Only used when we
            create the provider.
        endpoint: OTLP base endpoint (as ``OTEL_EXPORTER_OTLP_ENDPOINT``; ``/v1/traces`` is
            appended for HTTP). Default: the exporter reads the environment.
        protocol: ``grpc`` or ``http/protobuf``; default ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``,
            ``OTEL_EXPORTER_OTLP_PROTOCOL``, then ``http/protobuf``.
        headers: OTLP headers; default ``OTEL_EXPORTER_OTLP_[TRACES_]HEADERS``.
        pricebook: default ``PriceBook()`` (reads ``OTEL_AGENTS_PRICES_FILE``).
        cost: price inference spans; default ``OTEL_AGENTS_COST_ENABLED`` (true).
        metrics: derive the agent metrics from spans (``otel_agents._metrics``) through
            ``meter_provider`` (default: the global meter provider).
        meter_provider: meter provider for the agent metrics.
        logger_provider: logger provider for agent event logs (kept on the handle for the
            events integration).
        set_global: set a provider we create as the global tracer provider.

    Returns:
        The :class:`Configured` handle (``shutdown()``, ``force_flush()``).

    Raises:
        ConfigError: an argument or variable names an unknown exporter or protocol.
    """
    global _current
    with _lock:
        if _current is not None:
            logger.debug("otel_agents.configure: already configured; returning the first handle")
            return _current
        if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            _current = Configured(None, False, None, "disabled")
            return _current
        # Arguments are validated up front; variables only when an exporter is built from them
        # (attaching to someone else's provider must not fail over their exporter choice).
        if protocol is not None:
            _protocol(protocol)
        if exporter is not None:
            _exporter_names(exporter, "exporter")
        enricher = SpanEnricher(pricebook, cost=cost)

        provider: Any = tracer_provider
        created = False
        if provider is None:
            global_provider = trace.get_tracer_provider()
            if hasattr(global_provider, "add_span_processor"):
                provider = global_provider
            elif isinstance(global_provider, trace.ProxyTracerProvider):
                provider = TracerProvider(resource=_resource(service_name))
                created = True
            else:
                logger.warning(
                    "otel_agents.configure: the global tracer provider %s is not an SDK "
                    "provider and is left alone; agent spans go where it sends them",
                    type(global_provider).__name__,
                )
                _current = Configured(None, False, enricher, "unsupported")
                return _current

        extra = _extra_processors(metrics, meter_provider, provider)
        added: list[SpanProcessor] = []
        if created or span_exporter is not None:
            exporters = (
                [span_exporter]
                if span_exporter is not None
                else _build_exporters(exporter, protocol, endpoint, headers)
            )
            fresh = mark_attached(provider)
            nexts: list[SpanProcessor] = [BatchSpanProcessor(e) for e in exporters]
            if fresh:  # else identity and metrics are already on this provider
                nexts.extend(extra)
            if nexts:
                # Identity goes on the enriched copy (captured at start, written off the
                # application thread), see docs/architecture.md "Performance".
                enriching = EnrichingSpanProcessor(nexts, enricher=enricher, identity=fresh)
                provider.add_span_processor(enriching)
                added.append(enriching)
            elif fresh:  # nothing exported here: identity on the live spans for other processors
                identity = AgentIdentitySpanProcessor()
                provider.add_span_processor(identity)
                added.append(identity)
            mode = "created" if created else "exporter_added"
        else:
            mode = attach_to_provider(provider, enricher=enricher, extra_processors=extra)
            added.extend(extra)
        if created and set_global:
            trace.set_tracer_provider(provider)
        metrics_processor = next((p for p in extra if _is_metrics_processor(p)), None)
        _current = Configured(
            provider,
            created,
            enricher,
            mode,
            added,
            meter_provider,
            logger_provider,
            metrics_processor,
        )
        return _current


def _exporter_names(raw: str, source: str) -> list[str]:
    """The names of a comma list (``none`` → no exporter), checked against known exporters."""
    names = [n.strip().lower() for n in raw.split(",") if n.strip()]
    if names == ["none"] or not names:
        return []
    for name in names:
        if name in _BUILTIN_EXPORTERS:
            continue
        if _entry_point(name) is None:
            raise ConfigError(
                f"{source}: unknown span exporter {name!r} (built in: "
                f"{', '.join(sorted(_BUILTIN_EXPORTERS))}; others are looked up in the "
                "opentelemetry_traces_exporter entry points)"
            )
    return [n for n in names if n != "none"]


def _entry_point(name: str) -> Any:
    from importlib.metadata import entry_points

    for ep in entry_points(group="opentelemetry_traces_exporter", name=name):
        return ep
    return None


def _protocol(explicit: str | None) -> str:
    raw = (
        explicit
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if raw not in _PROTOCOLS:
        raise ConfigError(f"protocol: expected one of {', '.join(_PROTOCOLS)}, got {raw!r}")
    return raw


def _resource(service_name: str | None) -> Resource:
    resource = Resource.create()
    if service_name:
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    return resource


def _build_exporters(
    explicit: str | None,
    protocol: str | None,
    endpoint: str | None,
    headers: Mapping[str, str] | None,
) -> list[SpanExporter]:
    """Exporters named by ``explicit`` or ``OTEL_TRACES_EXPORTER`` (default ``otlp``).

    ``otlp`` follows ``protocol`` / ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`` (specification default
    ``http/protobuf``); ``otlp_proto_grpc`` / ``otlp_proto_http`` / ``console`` are built in;
    any other name is loaded from the ``opentelemetry_traces_exporter`` entry points, as the SDK's
    own configurator does, and built without arguments (it reads its own variables).
    """
    source = "exporter" if explicit else "OTEL_TRACES_EXPORTER"
    raw = explicit or os.environ.get("OTEL_TRACES_EXPORTER", "") or "otlp"
    out: list[SpanExporter] = []
    hdrs = dict(headers) if headers else None
    for name in _exporter_names(raw, source):
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            out.append(ConsoleSpanExporter())
        elif name == "otlp_proto_grpc" or (name == "otlp" and _protocol(protocol) == "grpc"):
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcExporter,
            )

            out.append(GrpcExporter(endpoint=endpoint, headers=hdrs))
        elif name in ("otlp", "otlp_proto_http"):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter as HttpExporter,
            )

            url = None if endpoint is None else endpoint.rstrip("/") + "/v1/traces"
            out.append(HttpExporter(endpoint=url, headers=hdrs))
        else:
            out.append(_entry_point(name).load()())
    return out


def _is_metrics_processor(processor: object) -> bool:
    try:
        from otel_agents._metrics import AgentMetricsProcessor
    except ImportError:
        return False
    return isinstance(processor, AgentMetricsProcessor)


def _extra_processors(
    metrics: bool, meter_provider: Any, tracer_provider: TracerProvider
) -> list[SpanProcessor]:
    """Processors chained behind the enricher (so they see normalized, priced spans)."""
    extra: list[SpanProcessor] = []
    # --- A2A, metrics, events, detector (issue 3) ---
    if metrics:
        try:
            from otel_agents._metrics import install_metrics

            processor = install_metrics(
                meter_provider, tracer_provider=tracer_provider, attach=False
            )
            if processor is not None:
                extra.append(processor)
        except ImportError:
            logger.debug("otel_agents.configure: agent metrics module not available")
    # --- end issue 3 ---
    return extra
