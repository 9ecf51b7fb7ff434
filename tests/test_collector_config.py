# SPDX-License-Identifier: Apache-2.0
"""Static checks of collector-config/: Collector pipelines, Prometheus rules, Grafana dashboards,
provisioning and the compose file, all against the receiver's documented defaults and metric
names (docs/architecture.md). No external component needed; the e2e tests run the same files
against real Prometheus, rotel and Chromium.

The helpers at the top (metric catalogue, dashboard query extraction, macro substitution) are
shared with tests/e2e/test_dashboards.py and tests/e2e/test_prometheus.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "collector-config"
OTELCOL = CONFIG / "otelcol"
PROMETHEUS = CONFIG / "prometheus"
GRAFANA = CONFIG / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
COLLECTOR_FILES = sorted(OTELCOL.glob("*.yaml"))

#: The receiver's documented default ports (docs/architecture.md, _transport_config.py).
RECEIVER_GRPC_PORT, RECEIVER_HTTP_PORT, RECEIVER_ADMIN_PORT = 4317, 4318, 4319

# Component types of otelcol-contrib used here; a typo in a type must fail rather than be
# discovered when the Collector refuses to start.
KNOWN_TYPES = {
    "receivers": {"otlp", "prometheus", "hostmetrics"},
    "processors": {
        "memory_limiter",
        "batch",
        "resourcedetection",
        "resource",
        "attributes",
        "transform",
        "tail_sampling",
        "groupbytrace",
        "filter",
        "redaction",
    },
    "exporters": {"otlp", "otlphttp", "loadbalancing", "prometheus", "debug"},
    "connectors": {"spanmetrics", "servicegraph", "routing", "forward"},
    "extensions": {"health_check", "zpages", "pprof", "bearertokenauth", "file_storage"},
}
SIGNALS = ("traces", "metrics", "logs")
_ENV_REF = re.compile(r"\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_COMPONENT_ID = re.compile(r"^[a-z][a-z0-9_]*(/[A-Za-z0-9_.\-]+)?$")


# --------------------------------------------------------------------------- shared helpers
def resolve_env_defaults(text: str) -> str:
    """Replaces Collector ``${env:VAR:-default}`` references with their defaults."""
    return _ENV_REF.sub(lambda m: m.group(2) or "", text)


def load_collector(path: Path) -> dict[str, Any]:
    """A Collector YAML file with environment references resolved to their defaults."""
    data = yaml.safe_load(resolve_env_defaults(path.read_text(encoding="utf-8")))
    assert isinstance(data, dict), path
    return data


def metric_catalogue() -> dict[str, tuple[str, frozenset[str]]]:
    """Metric name → (type, label names) from docs/architecture.md "Metric names".

    Histograms appear as their ``_bucket`` / ``_sum`` / ``_count`` series (``_bucket`` with
    ``le``), counters with their ``_total`` name as documented.
    """
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = doc.split("## Metric names", 1)[1].split("\n## ", 1)[0]
    out: dict[str, tuple[str, frozenset[str]]] = {}
    for m in re.finditer(r"`([a-z_][a-z0-9_]*)(?:\{([a-z_,]*)\})?`([^`]{0,40})", section):
        name, labels_s, after = m.group(1), m.group(2) or "", m.group(3)
        if not name.startswith(("otel_agents_", "traces_service_graph_")):
            continue
        labels = frozenset(x for x in labels_s.split(",") if x)
        if after.lstrip().startswith("(histogram"):
            out[name + "_bucket"] = ("histogram", labels | {"le"})
            out[name + "_sum"] = ("histogram", labels)
            out[name + "_count"] = ("histogram", labels)
        else:
            out[name] = ("gauge" if not name.endswith("_total") else "counter", labels)
    return out


def rule_groups() -> list[dict[str, Any]]:
    """Every rule group of collector-config/prometheus/rules/*.yml."""
    groups: list[dict[str, Any]] = []
    for path in sorted((PROMETHEUS / "rules").glob("*.yml")):
        groups += yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
    return groups


def recorded_names() -> set[str]:
    """Names of the series the recording rules produce."""
    return {r["record"] for g in rule_groups() for r in g["rules"] if "record" in r}


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """All panels, including those nested in collapsed rows."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))


def load_dashboard(path: Path) -> dict[str, Any]:
    """A dashboard JSON file."""
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def dashboard_queries(dashboard: Mapping[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """``(panel title, refId, target)`` of every Prometheus target of a dashboard."""
    out = []
    for panel in iter_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            ds = target.get("datasource") or panel.get("datasource") or {}
            if ds.get("type") == "prometheus":
                out.append((panel["title"], target["refId"], target))
    return out


#: What Grafana's Tempo data source sends to Prometheus for a service-map (node graph) query
#: (grafana/public/app/plugins/datasource/tempo: serviceMapMetrics, makePromServiceMapRequest).
TEMPO_SERVICE_MAP_METRICS = (
    "traces_service_graph_request_server_seconds_sum",
    "traces_service_graph_request_total",
    "traces_service_graph_request_failed_total",
    "traces_service_graph_request_server_seconds_bucket",
)


def service_map_queries(dashboard: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(panel title, PromQL)`` Grafana's Tempo service map issues for each serviceMap target."""
    out = []
    for panel in iter_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            if target.get("queryType") == "serviceMap":
                selector = target.get("serviceMapQuery", "")
                for metric in TEMPO_SERVICE_MAP_METRICS:
                    expr = f"sum by (client, server) (rate({metric}{selector}[$__range]))"
                    out.append((panel["title"], expr))
    return out


def substitute_macros(expr: str, variables: Mapping[str, str] | None = None) -> str:
    """Grafana macros and template variables → concrete PromQL (as Grafana would send it)."""
    values = {"agent": ".*", "model": ".*", "connection_type": "agent|tool|a2a"}
    values.update(variables or {})
    expr = expr.replace("$__rate_interval", "1m").replace("$__range", "5m")
    expr = expr.replace("$__interval", "15s")

    def var(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise KeyError(f"undefined template variable ${name} in {expr!r}")
        return values[name]

    # ${var}, ${var:format} (pipe/regex/raw: identical for the values used here), $var
    return re.sub(r"\$\{([a-z_]+)(?::[a-z]+)?\}|\$([a-z_]+)", var, expr)


_SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?")
_PROMQL_WORDS = {
    "sum",
    "max",
    "min",
    "avg",
    "count",
    "rate",
    "increase",
    "irate",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "histogram_quantile",
    "sort_desc",
    "sort",
    "vector",
    "scalar",
    "or",
    "and",
    "unless",
    "le",
    "topk",
    "bottomk",
    "abs",
    "clamp_min",
    "label_values",
    "bool",
    "offset",
    "time",
    "delta",
    "deriv",
    "absent",
    "round",
}


def metric_selectors(expr: str) -> list[tuple[str, dict[str, str]]]:
    """Metric names and their matchers (label → value) referenced by a PromQL expression."""
    # Drop `by (...)` / `on (...)` label lists and string literals before finding names.
    stripped = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    stripped = re.sub(r"\[[^\]]*\]", " ", stripped)  # range/subquery durations, macros
    out: list[tuple[str, dict[str, str]]] = []
    for m in _SELECTOR.finditer(re.sub(r'"[^"]*"(?![^{]*\})', '""', stripped)):
        name, matchers = m.group(1), m.group(2) or ""
        if name in _PROMQL_WORDS or re.fullmatch(r"[0-9.e]+", name):
            continue
        if not re.search(r"[_:]", name) and name != "up":
            continue  # durations like 5m and other non-metric words
        labels = dict(
            re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"([^"]*)"', matchers)
        )
        out.append((name, labels))
    return out


def grouping_labels(expr: str) -> set[str]:
    """Label names used in ``by (...)`` / ``on (...)`` clauses."""
    out: set[str] = set()
    for m in re.finditer(r"\b(?:by|on)\s*\(([^)]*)\)", expr):
        out |= {x.strip() for x in m.group(1).split(",") if x.strip()}
    return out


def check_expr_against_catalogue(expr: str, where: str) -> list[str]:
    """Problems of one PromQL expression: unknown metrics, undeclared labels."""
    catalogue = metric_catalogue()
    recorded = recorded_names()
    problems = []
    usable_labels: set[str] = {"instance", "job", "le"}
    for name, matchers in metric_selectors(expr):
        if name in recorded or name in ("up", "ALERTS"):
            usable_labels |= set(matchers) | {"agent", "operation", "name", "model", "token_type"}
            usable_labels |= {"client", "server", "connection_type"}
            continue
        if name not in catalogue:
            problems.append(f"{where}: unknown metric {name!r} (not in docs/architecture.md)")
            continue
        labels = catalogue[name][1] | {"instance", "job"}
        usable_labels |= labels
        for label in matchers:
            if label not in labels:
                problems.append(f"{where}: {name} has no label {label!r}")
    for label in grouping_labels(expr) - usable_labels:
        problems.append(f"{where}: grouping by {label!r}, which no metric in the query has")
    return problems


# --------------------------------------------------------------------------- Collector YAML
@pytest.mark.parametrize("path", COLLECTOR_FILES, ids=lambda p: p.name)
def test_collector_pipelines_reference_defined_components(path: Path) -> None:
    """Every component a pipeline names is defined and every defined one is used, as otelcol requires."""
    cfg = load_collector(path)
    assert set(cfg) <= {
        "extensions",
        "receivers",
        "processors",
        "exporters",
        "connectors",
        "service",
    }
    service = cfg["service"]
    used: dict[str, set[str]] = {kind: set() for kind in KNOWN_TYPES}
    for ext in service.get("extensions", []):
        assert ext in (cfg.get("extensions") or {}), f"extension {ext} not defined"
        used["extensions"].add(ext)
    connectors = set(cfg.get("connectors") or {})
    assert service["pipelines"], "no pipelines"
    for pid, pipeline in service["pipelines"].items():
        assert pid.split("/")[0] in SIGNALS, (
            f"pipeline ID {pid!r} is not traces|metrics|logs[/name]"
        )
        assert pipeline.get("receivers"), f"{pid}: no receivers"
        assert pipeline.get("exporters"), f"{pid}: no exporters"
        for kind in ("receivers", "processors", "exporters"):
            for cid in pipeline.get(kind, []):
                if cid in connectors and kind != "processors":
                    used["connectors"].add(cid)
                    continue
                assert cid in (cfg.get(kind) or {}), f"{pid}: {kind[:-1]} {cid!r} is not defined"
                used[kind].add(cid)
    for kind in KNOWN_TYPES:
        for cid in cfg.get(kind) or {}:
            assert _COMPONENT_ID.match(cid), f"{kind}.{cid}: IDs are type[/name]"
            assert cid.split("/")[0] in KNOWN_TYPES[kind], f"{kind}.{cid}: unknown component type"
            assert cid in used[kind], f"{kind}.{cid} is defined but no pipeline uses it"


@pytest.mark.parametrize("path", COLLECTOR_FILES, ids=lambda p: p.name)
def test_collector_processor_order_and_resilience(path: Path) -> None:
    """memory_limiter runs first and batch last in every pipeline; OTLP exporters queue and retry."""
    cfg = load_collector(path)
    for pid, pipeline in cfg["service"]["pipelines"].items():
        procs = pipeline.get("processors", [])
        assert procs and procs[0].split("/")[0] == "memory_limiter", f"{pid}: memory_limiter first"
        assert procs[-1].split("/")[0] == "batch", f"{pid}: batch last"
    for cid, exp in (cfg.get("exporters") or {}).items():
        type_ = cid.split("/")[0]
        if type_ in ("otlp", "otlphttp", "loadbalancing"):
            assert exp["retry_on_failure"]["enabled"] is True, cid
            assert exp["sending_queue"]["enabled"] is True, cid
        if type_ == "otlp":
            assert exp["tls"]["insecure"] is True, f"{cid}: plaintext inside the compose network"
    ml = cfg["processors"]["memory_limiter"]
    assert (
        ml["check_interval"] == "1s"
        and 0 < ml["spike_limit_percentage"] < ml["limit_percentage"] <= 90
    )


@pytest.mark.parametrize("path", COLLECTOR_FILES, ids=lambda p: p.name)
def test_collector_env_references_have_defaults(path: Path) -> None:
    """Every ``${env:VAR}`` has a ``:-default`` so the file runs unmodified in compose."""
    text = path.read_text(encoding="utf-8")
    refs = re.findall(r"\$\{[^}]*\}", text)
    assert refs
    for ref in refs:
        m = _ENV_REF.fullmatch(ref)
        assert m and ref.startswith("${env:") and m.group(2), (
            f"{path.name}: {ref} needs ${{env:VAR:-default}}"
        )


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1].rstrip("/"))


def test_fanout_sends_to_jaeger_tempo_and_the_receiver_grpc_port() -> None:
    """Topology (a): traces go to Jaeger, Tempo and otel-agents, the latter on the receiver's gRPC port."""
    cfg = load_collector(OTELCOL / "fanout.yaml")
    traces = cfg["service"]["pipelines"]["traces"]["exporters"]
    assert {"otlp/jaeger", "otlp/tempo", "otlp/otel-agents"} <= set(traces)
    assert _port(cfg["exporters"]["otlp/otel-agents"]["endpoint"]) == RECEIVER_GRPC_PORT
    grpc = cfg["receivers"]["otlp"]["protocols"]
    assert _port(grpc["grpc"]["endpoint"]) == 4317 and _port(grpc["http"]["endpoint"]) == 4318


def test_loadbalancing_routes_traces_and_logs_by_trace_id_to_receivers() -> None:
    """Topology (b): traceID routing to N receivers on their gRPC port, never for metrics."""
    cfg = load_collector(OTELCOL / "loadbalancing.yaml")
    lb = cfg["exporters"]["loadbalancing/otel-agents"]
    assert lb["routing_key"] == "traceID"
    assert "endpoint" not in lb["protocol"]["otlp"], "the resolver sets the endpoint per backend"
    hosts = lb["resolver"]["static"]["hostnames"]
    assert len(hosts) >= 2 and len(set(hosts)) == len(hosts)
    assert all(_port(h) == RECEIVER_GRPC_PORT for h in hosts)
    pipelines = cfg["service"]["pipelines"]
    for pid in ("traces", "logs"):
        assert pipelines[pid]["exporters"] == ["loadbalancing/otel-agents"]
    assert "loadbalancing/otel-agents" not in pipelines["metrics"]["exporters"]
    # Per-backend retry must give up before the exporter-level one so data is re-routed.
    inner = lb["protocol"]["otlp"]["retry_on_failure"]["max_elapsed_time"]
    assert _seconds(inner) < _seconds(lb["retry_on_failure"]["max_elapsed_time"])


def _seconds(duration: str) -> float:
    value, unit = re.fullmatch(r"([0-9.]+)(ms|s|m|h)", duration).groups()  # type: ignore[union-attr]
    return float(value) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def test_receiver_in_front_forwards_to_the_collector_behind_it() -> None:
    """Topology (c): the receiver config forwards to the port the Collector behind it listens on."""
    collector = load_collector(OTELCOL / "behind-receiver.yaml")
    receiver = yaml.safe_load((CONFIG / "otel-agents" / "receiver-front.yaml").read_text())
    listen = _port(collector["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"])
    forward = receiver["exporters"]["otlp/collector"]
    assert forward["protocol"] == "grpc" and forward["endpoint"].startswith("grpc://")
    assert _port(forward["endpoint"]) == listen
    assert listen not in (RECEIVER_GRPC_PORT, RECEIVER_HTTP_PORT, RECEIVER_ADMIN_PORT)
    assert {"otlp/jaeger", "otlp/tempo"} <= set(
        collector["service"]["pipelines"]["traces"]["exporters"]
    )


@pytest.mark.parametrize("name", ["receiver.yaml", "receiver-front.yaml"])
def test_receiver_configs_use_the_default_ports(name: str) -> None:
    """The shipped receiver configs only widen the bind address, keeping ports 4317/4318/4319."""
    cfg = yaml.safe_load((CONFIG / "otel-agents" / name).read_text())
    protocols = cfg["receivers"]["otlp"]["protocols"]
    assert _port(protocols["grpc"]["endpoint"]) == RECEIVER_GRPC_PORT
    assert _port(protocols["http"]["endpoint"]) == RECEIVER_HTTP_PORT
    assert _port(cfg["admin"]["endpoint"]) == RECEIVER_ADMIN_PORT


def test_receiver_defaults_match_the_documented_ports() -> None:
    """The receiver's own defaults are the ports every file here assumes."""
    config_mod = pytest.importorskip("otel_agents.receiver._config")
    cfg = config_mod.load_config(None)
    assert cfg.grpc.endpoint == f"127.0.0.1:{RECEIVER_GRPC_PORT}"
    assert cfg.http.endpoint == f"127.0.0.1:{RECEIVER_HTTP_PORT}"
    assert cfg.admin.endpoint == f"127.0.0.1:{RECEIVER_ADMIN_PORT}"


@pytest.mark.parametrize("name", ["receiver.yaml", "receiver-front.yaml"])
def test_receiver_configs_load_with_the_real_config_loader(name: str) -> None:
    """The shipped receiver configs pass the receiver's own typed validation."""
    config_mod = pytest.importorskip("otel_agents.receiver._config")
    from otel_agents.exporters import FACTORIES

    cfg = yaml.safe_load((CONFIG / "otel-agents" / name).read_text())
    for cid in cfg.get("exporters") or {}:
        if cid.split("/")[0] not in FACTORIES:
            pytest.skip(
                f"exporter type {cid.split('/')[0]!r} is not registered yet (forwarding lands separately)"
            )
    config_mod.load_config(CONFIG / "otel-agents" / name).check()


# --------------------------------------------------------------------------- Prometheus
def test_prometheus_scrapes_the_receiver_admin_port_and_loads_the_rules() -> None:
    """The otel-agents job scrapes /metrics on the admin port; rule_files match the rules shipped."""
    cfg = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    job = next(j for j in cfg["scrape_configs"] if j["job_name"] == "otel-agents")
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets and all(_port(t) == RECEIVER_ADMIN_PORT for t in targets)
    matched = {p for pattern in cfg["rule_files"] for p in PROMETHEUS.glob(pattern)}
    assert matched == set((PROMETHEUS / "rules").glob("*.yml"))


def test_rules_use_documented_metrics_and_labels() -> None:
    """Every metric and label in a rule exists in the receiver's documented metric list."""
    problems = []
    for group in rule_groups():
        for rule in group["rules"]:
            name = rule.get("record") or rule.get("alert")
            problems += check_expr_against_catalogue(rule["expr"], f"{group['name']}/{name}")
    assert not problems, "\n".join(problems)


def test_rules_follow_naming_and_annotation_conventions() -> None:
    """Recorded names are [level:]metric:operations; alerts carry severity, summary and description.

    The level is left out only for series aggregated over every label (the budget, total spend).
    """
    names = set()
    for group in rule_groups():
        for rule in group["rules"]:
            if "record" in rule:
                assert re.fullmatch(r"([a-z_]+:)?[a-z_]+:[a-z0-9_]+", rule["record"]), rule[
                    "record"
                ]
                if rule["record"].count(":") == 1:
                    assert not grouping_labels(rule["expr"]), rule["record"]
                assert "for" not in rule and "labels" not in rule
            else:
                assert re.fullmatch(r"OtelAgents[A-Z][A-Za-z0-9]+", rule["alert"]), rule["alert"]
                assert rule["alert"] not in names, f"duplicate alert {rule['alert']}"
                names.add(rule["alert"])
                assert rule["labels"]["severity"] in ("info", "warning", "critical")
                assert {"summary", "description"} <= set(rule["annotations"])


def test_every_alert_has_a_promtool_unit_test() -> None:
    """Each alert rule is exercised (firing) by at least one case in prometheus/tests."""
    alerts = {r["alert"] for g in rule_groups() for r in g["rules"] if "alert" in r}
    tested: set[str] = set()
    for path in (PROMETHEUS / "tests").glob("*.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for art in case.get("alert_rule_test", []):
                if art.get("exp_alerts"):
                    tested.add(art["alertname"])
    assert alerts - tested == set()


# --------------------------------------------------------------------------- Grafana
def test_dashboards_have_stable_unique_uids_and_titles() -> None:
    """Dashboard UIDs are stable, unique and 8–40 characters so links survive re-import."""
    uids = [load_dashboard(p)["uid"] for p in DASHBOARDS]
    assert len(DASHBOARDS) >= 3 and len(set(uids)) == len(uids)
    assert all(re.fullmatch(r"[a-z0-9-]{8,40}", u) for u in uids)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_layout_is_sane(path: Path) -> None:
    """Panel IDs are unique and panels sit on the 24-column grid without overlapping."""
    dash = load_dashboard(path)
    assert dash["schemaVersion"] >= 36 and dash["annotations"]["list"][0]["builtIn"] == 1
    panels = list(iter_panels(dash["panels"]))
    ids = [p["id"] for p in panels]
    assert len(set(ids)) == len(ids)
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not (mine & cells), f"{p['title']} overlaps another panel"
        cells |= mine
        if p["type"] != "row":
            assert p["targets"] and p.get("description"), f"{p['title']}: targets and description"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_queries_use_documented_metrics_and_defined_variables(path: Path) -> None:
    """Every Prometheus query names documented metrics/labels and only defined template variables."""
    dash = load_dashboard(path)
    variables = {v["name"] for v in dash["templating"]["list"]}
    problems = []
    for title, ref, target in dashboard_queries(dash):
        expr = target["expr"]
        for var in re.findall(r"\$\{?([a-z_]+)", expr):
            if not var.startswith("__") and var not in variables:
                problems.append(f"{title}/{ref}: undefined variable ${var}")
        problems += check_expr_against_catalogue(expr, f"{title}/{ref}")
    for title, expr in service_map_queries(dash):
        problems += check_expr_against_catalogue(substitute_macros(expr), f"{title}/serviceMap")
    assert not problems, "\n".join(problems)


def test_dashboard_datasources_are_provisioned() -> None:
    """Every datasource UID a dashboard uses is provisioned (or is the datasource variable)."""
    prov = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "otel-agents.yaml").read_text()
    )
    provisioned = {d["uid"]: d["type"] for d in prov["datasources"]}
    assert provisioned["tempo"] == "tempo"
    assert (
        prov["datasources"][[d["uid"] for d in prov["datasources"]].index("tempo")]["jsonData"][
            "serviceMap"
        ]["datasourceUid"]
        == "prometheus"
    )
    for path in DASHBOARDS:
        for panel in iter_panels(load_dashboard(path)["panels"]):
            for obj in [panel, *panel.get("targets", [])]:
                ds = obj.get("datasource")
                if not ds:
                    continue
                if ds["uid"] == "${datasource}":
                    assert ds["type"] == "prometheus"
                else:
                    assert provisioned.get(ds["uid"]) == ds["type"], f"{path.name}: {ds}"


def test_agent_graph_uses_the_node_graph_over_edge_metrics() -> None:
    """The agent graph is a nodeGraph panel fed by the Tempo service map over traces_service_graph_*."""
    dash = load_dashboard(GRAFANA / "dashboards" / "agent-graph.json")
    graphs = [p for p in iter_panels(dash["panels"]) if p["type"] == "nodeGraph"]
    assert graphs and graphs[0]["targets"][0]["queryType"] == "serviceMap"
    assert len(service_map_queries(dash)) == len(TEMPO_SERVICE_MAP_METRICS)


def test_findings_link_to_the_trace_in_tempo_and_jaeger() -> None:
    """The findings table links each finding's trace ID to Tempo (internal link) and Jaeger."""
    dash = load_dashboard(GRAFANA / "dashboards" / "agents-overview.json")
    panel = next(p for p in iter_panels(dash["panels"]) if p["title"].startswith("Findings ("))
    assert panel["targets"][0]["url"] == "/api/v1/findings"
    assert panel["targets"][0]["root_selector"].startswith("findings.{")  # the API wraps the list
    links = [
        link
        for o in panel["fieldConfig"]["overrides"]
        for prop in o["properties"]
        if prop["id"] == "links"
        for link in prop["value"]
    ]
    assert any(link.get("internal", {}).get("datasourceUid") == "tempo" for link in links)
    assert any("/trace/${__value.raw}" in link["url"] for link in links)


def test_dashboard_provider_path_is_where_compose_mounts_the_dashboards() -> None:
    """Grafana's file provider reads the directory compose.yaml mounts the JSON files into."""
    prov = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "otel-agents.yaml").read_text()
    )
    path = prov["providers"][0]["options"]["path"]
    compose = yaml.safe_load((CONFIG / "compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{path}:ro" in mounts


# --------------------------------------------------------------------------- compose
def test_compose_mounts_existing_files_and_wires_the_stack() -> None:
    """Every bind mount exists, the full stack is there, and its wiring matches the configs."""
    compose = yaml.safe_load((CONFIG / "compose.yaml").read_text())
    services = compose["services"]
    assert {
        "otel-collector",
        "otel-agents",
        "demo",
        "jaeger",
        "tempo",
        "prometheus",
        "grafana",
    } <= set(services)
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            src = vol.split(":", 1)[0]
            if src.startswith("."):
                assert (CONFIG / src).exists(), f"{name}: {src} does not exist"
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name}: publish on loopback only"
        for dep in svc.get("depends_on", []):
            assert dep in services, f"{name}: depends on unknown {dep}"
    build = services["otel-agents"]["build"]
    assert (CONFIG / build["context"] / build["dockerfile"]).is_file()
    fanout = load_collector(OTELCOL / "fanout.yaml")
    for exporter, service in (
        ("otlp/otel-agents", "otel-agents"),
        ("otlp/jaeger", "jaeger"),
        ("otlp/tempo", "tempo"),
    ):
        assert fanout["exporters"][exporter]["endpoint"].split(":")[0] == service
    prom = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    hosts = {
        t.split(":")[0]
        for j in prom["scrape_configs"]
        for sc in j["static_configs"]
        for t in sc["targets"]
    }
    assert hosts - {"localhost"} <= set(services)
    am_targets = [
        t
        for am in prom["alerting"]["alertmanagers"]
        for sc in am["static_configs"]
        for t in sc["targets"]
    ]
    assert {t.split(":")[0] for t in am_targets} <= set(services)


# --------------------------------------------------------------------------- label values
def _label_values(expr: str, label: str) -> set[str]:
    """Values an expression's matchers select for ``label`` (``a|b`` regexes split)."""
    out: set[str] = set()
    for op, value in re.findall(rf'\b{label}\s*(=~|=)\s*"([^"]*)"', expr):
        if value.startswith("$"):
            continue  # a template variable; its options are checked separately
        out |= set(value.split("|")) if op == "=~" else {value}
    return out


def _all_exprs() -> list[str]:
    exprs = [r["expr"] for g in rule_groups() for r in g["rules"]]
    for path in DASHBOARDS:
        dash = load_dashboard(path)
        exprs += [t["expr"] for _, _, t in dashboard_queries(dash)]
        exprs += [substitute_macros(e) for _, e in service_map_queries(dash)]
    return exprs


def test_selected_label_values_are_the_ones_the_receiver_emits() -> None:
    """operation / status / connection_type values in rules and dashboards are the receiver's own."""
    from otel_agents.processors import _batch

    kinds = {
        _batch.KIND_AGENT,
        _batch.KIND_TOOL,
        _batch.KIND_MODEL,
        _batch.KIND_A2A,
        _batch.KIND_OTHER,
    }
    allowed = {
        "operation": kinds,
        "status": {"ok", "error"},
        "connection_type": {"agent", "tool", "a2a"},
    }
    for expr in _all_exprs():
        for label, values in allowed.items():
            assert _label_values(expr, label) <= values, f"{label} in {expr}"
    graph = load_dashboard(GRAFANA / "dashboards" / "agent-graph.json")
    var = next(v for v in graph["templating"]["list"] if v["name"] == "connection_type")
    assert set(var["query"].split(",")) == allowed["connection_type"]
    assert set(var["allValue"].split("|")) == allowed["connection_type"]


def test_dockerfile_copies_existing_sources_and_ships_the_page() -> None:
    """The receiver image copies paths that exist and links the packaged web page compose serves."""
    dockerfile = (CONFIG / "otel-agents" / "Dockerfile").read_text()
    for src in re.findall(r"^COPY\s+(.+?)\s+\S+$", dockerfile, re.MULTILINE):
        for path in src.split():
            assert (ROOT / path).exists(), f"COPY {path}: missing"
    page = yaml.safe_load((CONFIG / "otel-agents" / "receiver.yaml").read_text())["admin"][
        "page_file"
    ]
    assert page in dockerfile and "webpage.html" in page
    assert (ROOT / "otel_agents" / "receiver" / "webpage.html").is_file()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"*.html"' in pyproject, "webpage.html must be package data"


def test_readme_documents_every_alert_and_dashboard() -> None:
    """collector-config/README.md names every alert rule and every dashboard file."""
    readme = (CONFIG / "README.md").read_text()
    for group in rule_groups():
        for rule in group["rules"]:
            if "alert" in rule:
                assert f"| {rule['alert']} |" in readme, rule["alert"]
    for path in DASHBOARDS:
        assert load_dashboard(path)["title"].split(" / ", 1)[1] in readme, path.name
