# SPDX-License-Identifier: Apache-2.0
"""Receiver self-telemetry (the ``otel_agents_receiver_*`` names of docs/architecture.md).

Like the Collector's ``otelcol_receiver_accepted_spans`` / ``refused_spans``: *accepted* items
were made durable, *refused* items got a retryable answer (the client will re-send them),
*rejected* items were dropped for good (partial success or an invalid request).  Items a
request carried are counted only when known, i.e. after decoding; refusals before decoding
(admission) show in ``requests_total{code}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from otel_agents import semconv as sc

__all__ = ["ReceiverTelemetry"]

#: Request latency buckets (seconds): sub-millisecond parses up to multi-second commits.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ReceiverTelemetry:
    """Counters and histograms registered on ``registry`` (the one served at ``/metrics``).

    Args:
        registry: a ``prometheus_client.CollectorRegistry``; ``None`` makes a private one.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        # prometheus_client appends "_total" to counters, so strip it from the documented names.
        self.accepted: Any = Counter(
            _base(sc.METRIC_RECEIVER_ACCEPTED_ITEMS),
            "Items (spans, data points, log records) made durable and acknowledged.",
            ["signal", "transport"],
            registry=r,
        )
        self.refused: Any = Counter(
            _base(sc.METRIC_RECEIVER_REFUSED_ITEMS),
            "Items refused with a retryable answer (UNAVAILABLE / 503 + retry delay).",
            ["signal", "transport", "reason"],
            registry=r,
        )
        self.rejected: Any = Counter(
            _base(sc.METRIC_RECEIVER_REJECTED_ITEMS),
            "Items dropped as invalid (partial success or a rejected request).",
            ["signal", "transport", "reason"],
            registry=r,
        )
        self.requests: Any = Counter(
            _base(sc.METRIC_RECEIVER_REQUESTS),
            "Export requests by answer (gRPC status code name or HTTP status).",
            ["signal", "transport", "code"],
            registry=r,
        )
        self.duration: Any = Histogram(
            sc.METRIC_RECEIVER_REQUEST_DURATION,
            "Time from request start to answer, including the spool commit.",
            ["signal", "transport"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )

        self.inflight: Any = Gauge(
            sc.METRIC_RECEIVER_INFLIGHT_BYTES,
            "Request bytes admitted and not yet answered (admission control's budget in use).",
            registry=r,
        )

    def watch_inflight(self, read: Callable[[], float]) -> None:
        """Report ``read()`` (the admission controller's in-flight bytes) at scrape time."""
        self.inflight.set_function(read)

    def request(self, signal: str, transport: str, code: str, seconds: float) -> None:
        """Count one answered request."""
        self.requests.labels(signal, transport, code).inc()
        self.duration.labels(signal, transport).observe(seconds)

    def accepted_items(self, signal: str, transport: str, n: int) -> None:
        """Count items acknowledged as durable."""
        if n:
            self.accepted.labels(signal, transport).inc(n)

    def refused_items(self, signal: str, transport: str, reason: str, n: int) -> None:
        """Count items refused with a retryable answer."""
        if n:
            self.refused.labels(signal, transport, reason).inc(n)

    def rejected_items(self, signal: str, transport: str, reason: str, n: int) -> None:
        """Count items dropped as invalid."""
        if n:
            self.rejected.labels(signal, transport, reason).inc(n)


def _base(name: str) -> str:
    return name[: -len("_total")] if name.endswith("_total") else name
