# SPDX-License-Identifier: Apache-2.0
"""A readable plain-text report of analysis results (what ``otel-agents demo`` prints)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from otel_agents._component import Finding

__all__ = ["render_report"]

_SEV_ORDER = {"critical": 0, "warning": 1, "info": 2}
_WIDTH = 78


def _money(v: float) -> str:
    return f"${v:,.4f}" if v < 1 else f"${v:,.2f}"


def _section(title: str) -> list[str]:
    return ["", title, "-" * min(len(title), _WIDTH)]


def render_report(findings: Iterable[Finding], rollups: Mapping[str, Any]) -> str:
    """The report: critical-path bottlenecks, anomalies and detector findings, cost per agent.

    Args:
        findings: findings to list (e.g. from the findings store or a host subscription);
            the latest of each ``(kind, key)`` is shown.
        rollups: the analysis stage's :meth:`AgentAnalysis.rollups` (``bottlenecks``,
            ``cost_by_agent``, ``sessions``, ``operations``, ``traces``, ``window_seconds``,
            ``sampling``); missing keys are skipped.

    Returns:
        Multi-line text, ending with a newline.
    """
    latest: dict[tuple[str, str], Finding] = {}
    for f in findings:
        k = (f.kind, f.key)
        if k not in latest or f.observed_at >= latest[k].observed_at:
            latest[k] = f
    window = float(rollups.get("window_seconds", 0) or 0)
    lines = ["otel-agents analysis report"]
    if window:
        lines.append(f"window: last {window / 60:g} min, {rollups.get('traces', 0)} traces")
    sampling = rollups.get("sampling") or {}
    fraction = float(sampling.get("analysed_fraction", 1.0))
    if sampling.get("estimated"):
        lines.append(
            f"analysed: a consistent sample of whole traces (now {fraction:.1%}; analysis CPU "
            "budget); costs, tokens and call counts below are estimates (sample x 1/fraction)"
        )
    elif sampling:
        lines.append(f"analysed: {fraction:.0%} of traces")

    lines += _section("Critical-path bottlenecks")
    bns = list(rollups.get("bottlenecks", []))[:5]
    if bns:
        for b in bns:
            lines.append(f"  {b['share']:>5.0%}  {b.get('explanation') or b['name']}")
    else:
        lines.append("  (no completed traces yet)")

    lines += _section("Anomalies and agent findings")
    problems = sorted(
        (f for f in latest.values() if f.kind != "bottleneck"),
        key=lambda f: (_SEV_ORDER.get(f.severity, 3), -f.score, f.kind, f.key),
    )
    shown = [f for f in problems if f.severity != "info"] or []
    if shown:
        for f in shown:
            lines.append(f"  [{f.severity.upper():8}] score {f.score:>3.0f}  {f.title}")
            lines.append(f"      {f.explanation}")
            if f.trace_ids:
                lines.append(f"      e.g. trace {f.trace_ids[0]}")
    else:
        lines.append("  none above the warning band")
    info = [f for f in problems if f.severity == "info"]
    if info:
        lines.append(f"  ({len(info)} informational finding(s): "
                     + ", ".join(sorted({f.kind for f in info})) + ")")  # fmt: skip

    estimated = " (estimated from the analysed sample)" if sampling.get("estimated") else ""
    lines += _section(f"Cost per agent (inference spans only){estimated}")
    costs = list(rollups.get("cost_by_agent", []))
    if costs:
        total = sum(float(c["cost_usd"]) for c in costs)
        for c in sorted(costs, key=lambda c: -float(c["cost_usd"])):
            unp = int(c.get("unpriced_calls", 0))
            extra = f", {unp} unpriced call(s) not included" if unp else ""
            lines.append(
                f"  {c['agent'] or '(unnamed)':<20} {_money(float(c['cost_usd'])):>12}  "
                f"{int(c['calls'])} calls, {int(c['input_tokens']):,} in / "
                f"{int(c['output_tokens']):,} out tokens{extra}"
            )
        lines.append(f"  {'total':<20} {_money(total):>12}")
    else:
        lines.append("  (no inference spans yet)")
    sessions = list(rollups.get("sessions", []))[:3]
    if sessions:
        lines.append("  most expensive sessions: " + ", ".join(
            f"{s['conversation_id']} {_money(float(s['cost_usd']))}" for s in sessions))  # fmt: skip
    return "\n".join(lines) + "\n"
