# SPDX-License-Identifier: Apache-2.0
"""Receiver-side sinks (installed as ``otel_agents.exporters``): OTLP forwarders, Prometheus
metrics, the findings store, alert notifiers.

Each sink is a :class:`otel_agents._component.Component` built by a factory registered in
:data:`FACTORIES` under its type name, as referenced from the receiver's YAML.
"""

from __future__ import annotations

from typing import Any

from otel_agents._component import Factory

# --- forwarding (OTLP) ---
from ._otlp import OtlpExporterConfig as OtlpExporterConfig
from ._otlp import OtlpForwarder as OtlpForwarder
from ._otlp import RetryConfig as RetryConfig
from ._otlp import create_otlp_exporter
from ._redact import RedactionConfig as RedactionConfig
from ._redact import Redactor as Redactor

# --- end forwarding ---

# --- analysis outputs (findings store, metrics, OTLP logs) ---
# isort: split
from ._analysis_metrics import AnalysisMetrics as AnalysisMetrics
from ._findings_otlp import FindingsLogExporter as FindingsLogExporter
from ._findings_otlp import FindingsLogsConfig as FindingsLogsConfig
from ._findings_otlp import findings_log_request as findings_log_request
from ._findings_store import FindingsQuery as FindingsQuery
from ._findings_store import FindingsStore as FindingsStore
from ._findings_store import FindingsStoreConfig as FindingsStoreConfig

# --- end analysis outputs ---

# --- alerting (notifiers) ---
# Notifiers, the egress policy, alert outputs and the alert/event stores are used by the
# ``alert`` and ``audit`` processors; import them from their modules: _notifiers, _ssrf,
# _alert_outputs (render_alerts for the demo report), _alert_store, _events_store.
# --- end alerting ---

FACTORIES: dict[str, Factory[Any]] = {}
"""Type name → factory for every sink."""

# --- forwarding factories ---
FACTORIES["otlp"] = Factory("otlp", OtlpExporterConfig, create_otlp_exporter)
# --- end forwarding factories ---

# --- analysis output factories ---
FACTORIES["findings_store"] = Factory(
    "findings_store", FindingsStoreConfig, lambda config, name: FindingsStore(config, name)
)
FACTORIES["findings_otlp"] = Factory(
    "findings_otlp", FindingsLogsConfig, lambda config, name: FindingsLogExporter(config, name)
)
# --- end analysis output factories ---

# --- alerting factories ---
# --- end alerting factories ---

__all__ = ["FACTORIES"]  # each block above extends this list
