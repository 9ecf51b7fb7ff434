# SPDX-License-Identifier: Apache-2.0
"""The receiver's component model: one small interface for every pipeline stage and sink.

Like the Collector's factory/config/component triad: each stage in ``otel_agents.processors``
and each sink in ``otel_agents.exporters`` has a type name, a frozen config dataclass, and a
factory that builds the component from its config and the :class:`Host`.  The pipeline
configuration references components by ``type[/name]`` IDs.
"""

from __future__ import annotations

import builtins
import dataclasses
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )

    from otel_agents._cost import PriceBook
    from otel_agents.processors import SpanBatch

__all__ = [
    "ApiHandler",
    "ApiResponse",
    "Component",
    "Factory",
    "Finding",
    "Host",
    "Severity",
]

Severity = str
"""One of ``"info"``, ``"warning"``, ``"critical"``."""

SEVERITIES = ("info", "warning", "critical")


@dataclasses.dataclass(frozen=True)
class Finding:
    """One actionable result of analysis (a bottleneck, an anomaly, a broken chain...).

    Attributes:
        kind: detector family, e.g. ``"bottleneck"``, ``"anomaly"``, ``"tool_loop"``,
            ``"cost_runaway"``, ``"orphan_span"``, ``"a2a_break"``, ``"slow_span"``.
        key: the subject, stable across repeats (e.g. ``"agent=researcher,tool=web_search"``);
            ``(kind, key)`` identifies a finding series.
        severity: ``info`` | ``warning`` | ``critical``.
        score: 0..100 (Elastic-style anomaly score; bottlenecks use their share in percent).
        title: one line for a person.
        explanation: plain-language sentence with the figures.
        labels: low-cardinality labels (``agent``, ``tool``, ``model``, ``operation``...).
        value: the observed value; ``baseline`` the expected one where there is one.
        trace_ids: hex trace IDs of example traces (a few, not all).
        observed_at: receiver time (unix seconds) the finding was made.
    """

    kind: str
    key: str
    severity: Severity
    score: float
    title: str
    explanation: str
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    value: float | None = None
    baseline: float | None = None
    trace_ids: tuple[str, ...] = ()
    observed_at: float = dataclasses.field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the shape of ``/api/v1`` answers and of the findings store)."""
        d = dataclasses.asdict(self)
        d["labels"] = dict(self.labels)
        d["trace_ids"] = list(self.trace_ids)
        return d


ApiResponse = tuple[int, Any]
"""``(http_status, json_serialisable_body)``."""

ApiHandler = Callable[[str, Mapping[str, list[str]], bytes | None], ApiResponse]
"""``handler(method, query, body) -> (status, body)`` for an ``/api/v1/...`` route."""

FindingListener = Callable[[Finding], None]


class Host(Protocol):
    """What the pipeline offers its components."""

    @property
    def data_dir(self) -> Path:
        """Directory for the component's own files (SQLite stores...)."""

    @property
    def pricebook(self) -> PriceBook:
        """Shared pricing (the SDK's code)."""

    def now(self) -> float:
        """Receiver clock, unix seconds (injectable in tests; never the sender's clock)."""

    def emit_finding(self, finding: Finding) -> None:
        """Publish a finding to every subscriber (stores, metrics, alerting, OTLP logs)."""

    def subscribe_findings(self, listener: FindingListener) -> None:
        """Be called with every finding emitted by any component."""

    def export_logs(self, request: ExportLogsServiceRequest) -> None:
        """Send log records the receiver made (findings, alerts) to the forwarding destinations.

        They are spooled like received data (durable, retried) but not fed back to the
        processors.
        """

    def register_api(self, path: str, handler: ApiHandler) -> None:
        """Serve ``handler`` at ``path`` (e.g. ``/api/v1/anomalies``) on the admin endpoint."""

    @property
    def metrics_registry(self) -> Any:
        """The ``prometheus_client.CollectorRegistry`` served at ``/metrics``."""


class Component:
    """Base class of pipeline stages and sinks; every method has a harmless default.

    ``process_*`` run on the pipeline thread, after the batch is durable in the spool.
    They must not block for long (no network I/O: hand it to a worker thread).
    """

    def start(self, host: Host) -> None:
        """Called once before the first batch."""

    def process_traces(self, batch: SpanBatch) -> None:
        """A normalized, priced, columnar batch of spans."""

    def process_metrics(self, request: ExportMetricsServiceRequest) -> None:
        """A decoded OTLP metrics request (e.g. process resource metrics from the SDK)."""

    def process_logs(self, request: ExportLogsServiceRequest) -> None:
        """A decoded OTLP logs request (e.g. agent event records for the audit trail)."""

    def tick(self, now: float) -> None:
        """Called about once a second, batches or not (timers: decision wait, `for`...)."""

    def shutdown(self) -> None:
        """Flush and release resources; called once."""


C = TypeVar("C")


@dataclasses.dataclass(frozen=True)
class Factory(Generic[C]):
    """Builds one type of component.

    Attributes:
        type: the type name used in the YAML (``bottleneck``, ``otlp``...).
        config_class: frozen dataclass of the component's settings; every field has a default.
        create: ``create(config, host_config_name) -> Component``; ``name`` is the ``/name``
            part of the ID (``""`` when absent).
    """

    type: str
    config_class: builtins.type[C]  # `builtins`: the field `type` shadows the name here
    create: Callable[[C, str], Component]
