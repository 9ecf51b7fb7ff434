# SPDX-License-Identifier: Apache-2.0
"""Alert outputs: Prometheus metrics, OTLP log records, and the demo report's text table.

* ``otel_agents_alerts{alertname,alertstate,severity}`` — gauge in the shape of Prometheus'
  ``ALERTS`` series (``alertstate`` is ``pending`` or ``firing``); the value is the number of
  alert instances in that state, so the label set stays bounded by the rule count.
* ``otel_agents_notifications_total{notifier,outcome}`` — ``notifier`` is the integration type
  (``webhook``, ``slack``, ``pagerduty``, ``email``, ``alertmanager``), ``outcome`` one of
  ``success``, ``retried``, ``failed``, ``refused``, ``dropped``.
* every state change as an OTLP log record (``event_name`` ``agent.alert``) handed to
  ``host.export_logs`` so it travels with the rest of the telemetry.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs, SeverityNumber
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from prometheus_client import CollectorRegistry, Counter, Gauge

from otel_agents import semconv as sc

__all__ = ["AlertMetrics", "alert_log_request", "render_alerts"]

_STATES = ("pending", "firing")
_SEVERITY_NUMBER = {
    "info": SeverityNumber.SEVERITY_NUMBER_INFO,
    "warning": SeverityNumber.SEVERITY_NUMBER_WARN,
    "critical": SeverityNumber.SEVERITY_NUMBER_ERROR,
}


_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, AlertMetrics] = (
    weakref.WeakKeyDictionary()
)
_BY_REGISTRY_LOCK = threading.Lock()


class AlertMetrics:
    """The two alerting metric families, registered once per registry."""

    @classmethod
    def for_registry(cls, registry: CollectorRegistry) -> AlertMetrics:
        """The registry's instance (several ``alert/<name>`` stages share the families)."""
        with _BY_REGISTRY_LOCK:
            inst = _BY_REGISTRY.get(registry)
            if inst is None:
                inst = _BY_REGISTRY[registry] = cls(registry)
            return inst

    def __init__(self, registry: CollectorRegistry) -> None:
        self.alerts = Gauge(
            sc.METRIC_ALERTS,
            "Active alerts by rule, state (pending|firing) and severity, as Prometheus' ALERTS.",
            ["alertname", "alertstate", "severity"],
            registry=registry,
        )
        self.notifications = Counter(
            sc.METRIC_NOTIFICATIONS,
            "Notification deliveries by integration type and outcome.",
            ["notifier", "outcome"],
            registry=registry,
        )
        self._seen: set[tuple[str, str, str]] = set()
        self._by_owner: dict[str, dict[tuple[str, str, str], int]] = {}
        self._lock = threading.Lock()

    def set_active(self, alerts: Iterable[Mapping[str, Any]], owner: str = "") -> None:
        """Replace ``owner``'s share of the gauge with counts of ``alerts``.

        ``alerts`` are dicts with ``labels`` and ``state``; ``owner`` is the alert stage's name,
        so several stages sharing a registry add up instead of overwriting each other.
        """
        counts: dict[tuple[str, str, str], int] = {}
        for a in alerts:
            if a["state"] not in _STATES:
                continue
            key = (a["labels"].get("alertname", ""), a["state"], a["labels"].get("severity", ""))
            counts[key] = counts.get(key, 0) + 1
        with self._lock:
            self._by_owner[owner] = counts
            total: dict[tuple[str, str, str], int] = {}
            for part in self._by_owner.values():
                for key, n in part.items():
                    total[key] = total.get(key, 0) + n
            # Series that went to zero are removed (like ALERTS, an inactive alert has no sample).
            for key in self._seen - total.keys():
                with contextlib.suppress(KeyError):
                    self.alerts.remove(*key)
            for key, n in total.items():
                self.alerts.labels(*key).set(n)
            self._seen = set(total)

    def outcome(self, notifier: str, outcome: str) -> None:
        """Count one delivery outcome."""
        self.notifications.labels(notifier, outcome).inc()


def _kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def alert_log_request(
    changes: Sequence[Mapping[str, Any]], *, service_name: str = "otel-agents-receiver"
) -> ExportLogsServiceRequest:
    """OTLP log records for alert state changes (one record per change).

    Each change is a dict with ``labels``, ``annotations``, ``state``, ``fingerprint``, ``value``
    and ``at`` (unix seconds).
    """
    records = []
    for c in changes:
        labels: Mapping[str, str] = c["labels"]
        attrs = [
            _kv(sc.AGENT_ALERT_NAME, labels.get("alertname", "")),
            _kv(sc.AGENT_ALERT_STATE, c["state"]),
            _kv(sc.AGENT_ALERT_SEVERITY, labels.get("severity", "")),
            _kv(sc.AGENT_ALERT_FINGERPRINT, c["fingerprint"]),
        ]
        value = c.get("value")
        if isinstance(value, (int, float)) and value == value:
            attrs.append(_kv(sc.AGENT_ALERT_VALUE, float(value)))
        for k, v in sorted(labels.items()):
            if k not in ("alertname", "severity"):
                attrs.append(_kv(sc.AGENT_ALERT_LABELS_PREFIX + k, v))
        if labels.get("agent"):
            attrs.append(_kv(sc.GEN_AI_AGENT_NAME, labels["agent"]))
        body = c.get("annotations", {}).get("summary") or labels.get("alertname", "")
        ts = int(float(c["at"]) * 1e9)
        sev = labels.get("severity", "warning") if c["state"] == "firing" else "info"
        records.append(
            LogRecord(
                time_unix_nano=ts,
                observed_time_unix_nano=ts,
                severity_number=_SEVERITY_NUMBER.get(sev, SeverityNumber.SEVERITY_NUMBER_WARN),
                severity_text=sev.upper(),
                event_name=sc.EVENT_AGENT_ALERT,
                body=AnyValue(string_value=f"[{c['state']}] {body}"),
                attributes=attrs,
            )
        )
    return ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource=Resource(attributes=[_kv("service.name", service_name)]),
                scope_logs=[
                    ScopeLogs(
                        scope=InstrumentationScope(name="otel_agents.processors.alert"),
                        log_records=records,
                    )
                ],
            )
        ]
    )


def _ts(v: Any) -> str:
    if v is None:
        return "-"
    return dt.datetime.fromtimestamp(float(v), tz=dt.timezone.utc).strftime("%H:%M:%S")


def render_alerts(alerts: Iterable[Mapping[str, Any]]) -> str:
    """A plain-text table of alerts for the demo report (the ``/api/v1/alerts`` JSON shape).

    Every alert that fired is listed with its state, severity, subject labels, value, when it
    fired and resolved, and its summary; an empty list says so explicitly.
    """
    rows = [a for a in alerts if a.get("state") in ("firing", "resolved", "pending")]
    if not rows:
        return "Alerts: none fired.\n"
    order = {"firing": 0, "pending": 1, "resolved": 2}
    rows.sort(key=lambda a: (order.get(str(a.get("state")), 3), -(a.get("active_at") or 0)))
    fired = sum(1 for a in rows if a.get("state") in ("firing", "resolved"))
    lines = [
        f"Alerts: {fired} fired ({sum(1 for a in rows if a.get('state') == 'firing')} still firing)"
    ]
    header = ("STATE", "SEVERITY", "ALERT", "SUBJECT", "VALUE", "FIRED", "RESOLVED", "SUMMARY")
    table = [header]
    for a in rows:
        labels: Mapping[str, str] = a.get("labels") or {}
        subject = ",".join(
            f"{k}={v}" for k, v in sorted(labels.items()) if k not in ("alertname", "severity")
        )
        value = a.get("value")
        table.append(
            (
                str(a.get("state", "")),
                str(labels.get("severity", a.get("severity", ""))),
                str(labels.get("alertname", a.get("alertname", ""))),
                subject or "-",
                f"{value:.4g}" if isinstance(value, (int, float)) else "-",
                _ts(a.get("starts_at")),
                _ts(a.get("ends_at")) if a.get("state") == "resolved" else "-",
                str((a.get("annotations") or {}).get("summary", "")),
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header) - 1)]
    for r in table:
        lines.append(
            "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1]
        )
    return "\n".join(lines) + "\n"
