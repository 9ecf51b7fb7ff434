# SPDX-License-Identifier: Apache-2.0
"""Receiver-side analysis stages (installed as ``otel_agents.processors``).

Each stage is a :class:`otel_agents._component.Component` built by a factory registered in
:data:`FACTORIES` under its type name, as referenced from the receiver's YAML.
"""

from __future__ import annotations

from typing import Any

from otel_agents._component import Factory

# --- span batch, assembly, bottleneck, anomaly (analysis) ---
# Re-exported with ``as`` (``__all__`` is assembled below the blocks).
from ._analysis import AgentAnalysis as AgentAnalysis
from ._analysis import AnalysisConfig as AnalysisConfig
from ._batch import SpanBatch as SpanBatch
from ._batch import build_span_batch as build_span_batch
from ._report import render_report as render_report
from ._sampling import AnalysisBudget as AnalysisBudget

# --- end analysis ---

# --- alerting ---
# Alerting is registered by a function in its factories block (no module-level imports here,
# so this block does not merge into the analysis block's import section). Public names live in
# otel_agents.processors._alert, _alert_rules, _alert_state and _audit.
# --- end alerting ---

FACTORIES: dict[str, Factory[Any]] = {}
"""Type name → factory for every processor stage."""

# --- analysis factories ---
FACTORIES["agent_analysis"] = Factory(
    type="agent_analysis",
    config_class=AnalysisConfig,
    create=lambda config, name: AgentAnalysis(config, name),
)
# --- end analysis factories ---


# --- alerting factories ---
def _register_alerting() -> None:
    from ._alert import AlertConfig, create_alert_engine
    from ._audit import AuditConfig, create_audit_trail

    FACTORIES["alert"] = Factory("alert", AlertConfig, create_alert_engine)
    FACTORIES["audit"] = Factory("audit", AuditConfig, create_audit_trail)


_register_alerting()
# --- end alerting factories ---

__all__ = ["FACTORIES"]  # each block above extends this list
