# SPDX-License-Identifier: Apache-2.0
"""Every Grafana panel query of collector-config/grafana/dashboards against a real Prometheus
holding the receiver's metrics (the receiver fed by the demo, see ``agent_stack``).

Grafana itself is not installable here, so the test sends what Grafana would send: macros and
template variables substituted, range queries as ``query_range``, instant ones as ``query``,
the Tempo service map's PromQL, and the variables' ``label_values``. A parse error (HTTP 400
``bad_data``) or an empty answer fails — an empty answer means a wrong metric, label or value.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from tests.e2e.conftest import AgentStack, http_get, require
from tests.test_collector_config import (
    DASHBOARDS,
    dashboard_queries,
    iter_panels,
    load_dashboard,
    service_map_queries,
    substitute_macros,
)

pytestmark = pytest.mark.e2e


def _cases() -> list[Any]:
    cases = []
    for path in DASHBOARDS:
        dash = load_dashboard(path)
        for title, ref, target in dashboard_queries(dash):
            cases.append(pytest.param(target, id=f"{path.stem}/{title}/{ref}"))
    return cases


def _run(stack: AgentStack, expr: str, instant: bool) -> tuple[int, dict[str, Any]]:
    prom = stack.prometheus
    if instant:
        return prom.query(expr)
    now = time.time()
    return prom.api("query_range", query=expr, start=f"{now - 60:.3f}", end=f"{now:.3f}", step="5")


@pytest.mark.parametrize("target", _cases())
def test_panel_query_returns_data(agent_stack: AgentStack, target: dict[str, Any]) -> None:
    """The panel's query parses in Prometheus and returns series from the demo's telemetry."""
    expr = substitute_macros(target["expr"])
    status, body = _run(agent_stack, expr, bool(target.get("instant")))
    assert status == 200, f"{expr}: {body.get('errorType')}: {body.get('error')}"
    result = body["data"]["result"]
    assert result, f"no data for {expr}"
    values = [v for s in result for v in ([s["value"]] if "value" in s else s["values"])]
    assert any(v[1] not in ("NaN", "+Inf", "-Inf") for v in values), f"only NaN/Inf for {expr}"


@pytest.mark.parametrize(
    "expr",
    [
        pytest.param(expr, id=f"{p.stem}/{title}/{expr.split('(')[2].split('{')[0]}")
        for p in DASHBOARDS
        for title, expr in service_map_queries(load_dashboard(p))
    ],
)
def test_node_graph_service_map_queries_return_edges(agent_stack: AgentStack, expr: str) -> None:
    """What Grafana's Tempo service map asks Prometheus for returns client→server edges."""
    status, body = agent_stack.prometheus.query(substitute_macros(expr))
    assert status == 200, body
    result = body["data"]["result"]
    assert result and all({"client", "server"} <= set(s["metric"]) for s in result), expr


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_template_variables_resolve(agent_stack: AgentStack, path: Any) -> None:
    """Each label_values(...) variable lists values from the receiver's metrics."""
    dash = load_dashboard(path)
    queried = 0
    for var in dash["templating"]["list"]:
        if var["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", var["query"]["query"])
        assert m, var["query"]
        metric, label = m.groups()
        status, body = agent_stack.prometheus.api(f"label/{label}/values", **{"match[]": metric})
        assert status == 200 and body["data"], f"${var['name']}: no values of {label} on {metric}"
        queried += 1
    if path.stem == "agents-overview":
        assert queried == 2


def test_findings_table_reads_the_receivers_findings_api(agent_stack: AgentStack) -> None:
    """The findings table's API URL answers on the receiver and every column selector resolves."""
    dash = load_dashboard(next(p for p in DASHBOARDS if p.stem == "agents-overview"))
    panel = next(p for p in iter_panels(dash["panels"]) if p["title"].startswith("Findings ("))
    target = panel["targets"][0]
    status, raw = http_get(agent_stack.receiver.admin_url + target["url"])
    require(
        status != 404, f"the receiver does not serve {target['url']} (findings store not wired)"
    )
    assert status == 200, raw[:500]
    body = json.loads(raw)
    rows = jsonata_map(target["root_selector"], body)
    assert rows, "the demo's faults produced no findings"
    for row in rows:
        for column in target["columns"]:
            if column["text"] != "Trace":  # findings about a window may carry no example trace
                assert row.get(column["selector"]) is not None, (column, row)
    traces = [r["trace_id"] for r in rows if r.get("trace_id") is not None]
    assert traces and all(re.fullmatch(r"[0-9a-f]{32}", t) for t in traces)


def jsonata_map(expr: str, body: Any) -> list[dict[str, Any]]:
    """Evaluates the one JSONata form the findings panel uses: ``array.{"out": path, ...}`` where
    a path is ``field`` or ``field[i]`` (an absent value leaves the key out, as JSONata does).
    Anything else fails, so the panel cannot drift to an expression this test does not check."""
    m = re.fullmatch(r"(\w+)\.\{(.*)\}", expr.strip(), re.DOTALL)
    assert m, f"unsupported root selector {expr!r}"
    pairs = re.findall(r'"(\w+)":\s*(\w+)(?:\[(\d+)\])?\s*(?:,|$)', m.group(2).strip())
    assert len(pairs) == m.group(2).count(":"), f"unsupported mapping in {expr!r}"
    rows = []
    for item in body[m.group(1)]:
        row = {}
        for out, field, index in pairs:
            value = item.get(field)
            if index and isinstance(value, list):
                value = value[int(index)] if int(index) < len(value) else None
            if value is not None:
                row[out] = value
        rows.append(row)
    return rows
