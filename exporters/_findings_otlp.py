# SPDX-License-Identifier: Apache-2.0
"""``findings_otlp``: findings as OTLP log records to the forwarding destinations.

Each finding becomes one LogRecord with ``event_name`` ``agent.finding``, the explanation as
the body, the finding's fields as ``agent.finding.*`` attributes (labels under
``agent.finding.label.<name>``), the severity mapped to OTel severity numbers (info → INFO,
warning → WARN, critical → ERROR), the receiver time as timestamp, and the first example
trace as the record's ``trace_id`` so backends link the finding to the trace.  Records are
batched per tick into one request handed to ``Host.export_logs`` (spooled and forwarded like
received data, never fed back to analysis).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence
from typing import Literal

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs, SeverityNumber
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from otel_agents import semconv as sc
from otel_agents._component import SEVERITIES, Component, Finding, Host

__all__ = ["FindingsLogExporter", "FindingsLogsConfig", "findings_log_request"]

_SEVERITY = {
    "info": (SeverityNumber.SEVERITY_NUMBER_INFO, "INFO"),
    "warning": (SeverityNumber.SEVERITY_NUMBER_WARN, "WARN"),
    "critical": (SeverityNumber.SEVERITY_NUMBER_ERROR, "ERROR"),
}
_SCOPE = "otel_agents.exporters.findings_otlp"
_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class FindingsLogsConfig:
    """Findings → OTLP logs settings.

    Attributes:
        min_severity: findings below this are not exported.
        service_name: ``service.name`` of the resource the records carry.
        max_batch: at most this many records per request (the rest wait for the next tick).
    """

    min_severity: Literal["info", "warning", "critical"] = "info"
    service_name: str = "otel-agents-receiver"
    max_batch: int = 512

    def validate(self) -> list[str]:
        """Problems with the values."""
        return ["max_batch: must be at least 1"] if self.max_batch < 1 else []


def _kv(key: str, value: str | float | Sequence[str]) -> KeyValue:
    if isinstance(value, str):
        return KeyValue(key=key, value=AnyValue(string_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    arr = ArrayValue(values=[AnyValue(string_value=v) for v in value])
    return KeyValue(key=key, value=AnyValue(array_value=arr))


def _record(f: Finding) -> LogRecord:
    number, text = _SEVERITY.get(f.severity, _SEVERITY["info"])
    ts = int(f.observed_at * 1e9)
    attrs = [
        _kv(sc.AGENT_FINDING_KIND, f.kind),
        _kv(sc.AGENT_FINDING_KEY, f.key),
        _kv(sc.AGENT_FINDING_SEVERITY, f.severity),
        _kv(sc.AGENT_FINDING_SCORE, float(f.score)),
        _kv(sc.AGENT_FINDING_TITLE, f.title),
    ]
    if f.value is not None:
        attrs.append(_kv(sc.AGENT_FINDING_VALUE, float(f.value)))
    if f.baseline is not None:
        attrs.append(_kv(sc.AGENT_FINDING_BASELINE, float(f.baseline)))
    if f.trace_ids:
        attrs.append(_kv(sc.AGENT_FINDING_TRACE_IDS, list(f.trace_ids)))
    for k, v in sorted(f.labels.items()):
        attrs.append(_kv(sc.AGENT_FINDING_LABELS_PREFIX + k, str(v)))
    rec = LogRecord(
        time_unix_nano=ts,
        observed_time_unix_nano=ts,
        severity_number=number,
        severity_text=text,
        event_name=sc.EVENT_AGENT_FINDING,
        body=AnyValue(string_value=f.explanation),
        attributes=attrs,
    )
    if f.trace_ids:
        try:
            tid = bytes.fromhex(f.trace_ids[0])
        except ValueError:
            tid = b""
        if len(tid) == 16:
            rec.trace_id = tid
    return rec


def findings_log_request(
    findings: Sequence[Finding], service_name: str = "otel-agents-receiver"
) -> ExportLogsServiceRequest:
    """One OTLP logs request carrying ``findings``."""
    return ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource=Resource(attributes=[_kv("service.name", service_name)]),
                scope_logs=[
                    ScopeLogs(
                        scope=InstrumentationScope(name=_SCOPE),
                        log_records=[_record(f) for f in findings],
                    )
                ],
            )
        ]
    )


class FindingsLogExporter(Component):
    """The ``findings_otlp`` sink."""

    def __init__(self, config: FindingsLogsConfig, name: str = "") -> None:
        self.config = config
        self.name = name
        self._min = SEVERITIES.index(config.min_severity)
        self._buffer: list[Finding] = []
        self._lock = threading.Lock()
        self._host: Host | None = None
        self.exported = 0

    def start(self, host: Host) -> None:
        """Subscribe to findings."""
        self._host = host
        host.subscribe_findings(self.add)

    def add(self, finding: Finding) -> None:
        """Buffer a finding at or above ``min_severity``."""
        sev = SEVERITIES.index(finding.severity) if finding.severity in SEVERITIES else 0
        if sev >= self._min:
            with self._lock:
                self._buffer.append(finding)

    def tick(self, now: float) -> None:
        """Hand buffered findings to the host as one request."""
        self.flush()

    def shutdown(self) -> None:
        """Export what is buffered."""
        while self.flush():
            pass

    def flush(self) -> int:
        """Export up to ``max_batch`` buffered findings; returns how many."""
        with self._lock:
            batch = self._buffer[: self.config.max_batch]
            self._buffer = self._buffer[self.config.max_batch :]
        if not batch or self._host is None:
            return 0
        try:
            self._host.export_logs(findings_log_request(batch, self.config.service_name))
        except Exception:  # the host spools; a failure there must not stop the pipeline
            _log.exception("exporting %d findings as logs failed; they are dropped", len(batch))
            return 0
        self.exported += len(batch)
        return len(batch)
