# SPDX-License-Identifier: Apache-2.0
"""The shipped topologies with real components: rotel stands in for the OpenTelemetry Collector
(otelcol cannot be installed here), configured from the settings of collector-config/otelcol/*.yaml,
and the demo (official OTel Python SDK + OTLP exporters, two processes joined over A2A) is the app.

(a) app → Collector (rotel, the ``otlp/otel-agents`` exporter of fanout.yaml) → receiver.
(c) app → receiver (collector-config/otel-agents/receiver-front.yaml, loaded by the real config
    loader, only its addresses moved to free loopback ports) → Collector (rotel, listening like
    behind-receiver.yaml) → trace store (an OTLP sink standing in for Jaeger/Tempo ingest).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e._fwd_components import rotel_binary, run_rotel
from tests.e2e.conftest import ROOT, RunningReceiver, http_get, require, run_demo, wait_until
from tests.test_collector_config import load_collector

pytestmark = pytest.mark.e2e

CONFIG = ROOT / "collector-config"
DEMO = ("--runs", "6", "--time-scale", "0.002", "--inject", "error-burst")


def demo_traces(output: str) -> set[str]:
    """Trace IDs the demo printed, one per run."""
    return set(re.findall(r"^\s+run\s+\d+/\d+\s+trace ([0-9a-f]{32})", output, re.MULTILINE))


def receiver_tokens(admin_url: str) -> float:
    """Total tokens the receiver counted (analysis happened)."""
    from prometheus_client.parser import text_string_to_metric_families

    status, body = http_get(admin_url + "/metrics")
    assert status == 200
    return sum(
        s.value
        for fam in text_string_to_metric_families(body.decode())
        for s in fam.samples
        if s.name == "otel_agents_tokens_total"
    )


def agents_seen(admin_url: str, token: str | None = None) -> set[str]:
    """Agents in the receiver's cost roll-up (traces completed and analysed)."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    status, body = http_get(admin_url + "/api/v1/agents", headers=headers)
    assert status == 200
    return {a["agent"] for a in json.loads(body)["cost_by_agent"]}


@pytest.fixture
def rotel() -> Path:
    """The rotel binary (PyPI ``rotel``)."""
    binary = rotel_binary()
    require(binary, "rotel not installed (pip install rotel; scripts/e2e-setup installs it)")
    assert binary is not None
    return binary


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[RunningReceiver]:
    """A receiver with a short decision wait on free ports."""
    from tests.e2e.conftest import run_receiver

    with run_receiver(
        tmp_path / "rx", **{"processors.agent_analysis.assembly.decision_wait": "1s"}
    ) as rx:
        yield rx


def test_fanout_collector_exporter_feeds_the_receiver(
    rotel: Path, receiver: RunningReceiver
) -> None:
    """Topology (a): the app's traces pass the Collector's otlp/otel-agents exporter and get analysed."""
    exporter = load_collector(CONFIG / "otelcol" / "fanout.yaml")["exporters"]["otlp/otel-agents"]
    compression = exporter["compression"]
    # The fanout file targets the receiver's gRPC port; here the same exporter settings point at
    # this test's receiver.
    with run_rotel(
        rotel,
        "http://" + receiver.grpc_endpoint,
        "grpc",
        "--otlp-exporter-compression",
        compression,
    ) as (collector_grpc, _http, log):
        output = run_demo(f"http://127.0.0.1:{collector_grpc}", *DEMO)
        traces = demo_traces(output)
        assert len(traces) == 6
        wait_until(
            lambda: agents_seen(receiver.admin_url) >= {"planner", "researcher"},
            timeout=30,
            what=f"the demo's agents analysed behind the Collector (rotel log: {log})",
        )
    assert receiver_tokens(receiver.admin_url) > 0


TOKEN = "e2e-token-0123456789abcdef"


def _front_config(tmp_path: Path, collector_grpc: int) -> Path:
    """receiver-front.yaml with only its addresses and token file moved to this machine."""
    cfg: dict[str, Any] = yaml.safe_load(
        (CONFIG / "otel-agents" / "receiver-front.yaml").read_text()
    )
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    protocols = cfg["receivers"]["otlp"]["protocols"]
    for section in (protocols["grpc"], protocols["http"], cfg["admin"]):
        section["endpoint"] = "127.0.0.1:0"
        assert section["auth"]["token_file"] == "/run/secrets/otel-agents-token"
        section["auth"]["token_file"] = str(token_file)
    cfg["storage"]["data_dir"] = str(tmp_path / "front")
    forward = cfg["exporters"]["otlp/collector"]
    assert forward["endpoint"].startswith("grpc://") and forward["endpoint"].endswith(":14317")
    forward["endpoint"] = f"grpc://127.0.0.1:{collector_grpc}"
    cfg.setdefault("processors", {})["agent_analysis"] = {"assembly": {"decision_wait": "1s"}}
    path = tmp_path / "receiver-front.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_receiver_in_front_forwards_through_the_collector(rotel: Path, tmp_path: Path) -> None:
    """Topology (c): receiver-front.yaml (token auth) analyses the app's traces and forwards every span via the Collector."""
    from otel_agents.receiver import Receiver, load_config
    from otel_agents.testing import OtlpSink

    with (
        OtlpSink(http=False) as store,
        run_rotel(rotel, store.grpc_endpoint, "grpc") as (collector_grpc, _h, log),
    ):
        config = load_config(_front_config(tmp_path, collector_grpc))
        config.check()
        rx = Receiver(config)
        rx.start()
        try:
            status, _ = http_get(rx.admin_url + "/api/v1/agents")
            assert status == 401, "the admin API must require the token"
            headers = {"OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer {TOKEN}"}
            output = run_demo("http://" + rx.grpc_endpoint, *DEMO, env=headers)
            traces = demo_traces(output)
            assert len(traces) == 6
            wait_until(
                lambda: {s.trace_id for s in store.spans()} >= traces,
                timeout=30,
                what=f"every demo trace forwarded through the Collector (rotel log: {log})",
            )
            wait_until(
                lambda: agents_seen(rx.admin_url, TOKEN) >= {"planner", "researcher"},
                timeout=30,
                what="the demo's agents analysed in front of the Collector",
            )
        finally:
            rx.stop()
    services = {s.service_name for s in store.spans()}
    assert services >= {"demo-planner", "demo-researcher"}
