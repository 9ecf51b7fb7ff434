# SPDX-License-Identifier: Apache-2.0
"""Arize Phoenix as a real downstream trace backend of the receiver's forwarders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from otel_agents import semconv as sc
from otel_agents.receiver import Receiver, load_config
from tests.e2e._fwd_components import PHOENIX, Phoenix, run_phoenix
from tests.e2e.conftest import require, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def phoenix() -> Iterator[Phoenix]:
    """One Phoenix per test session (it takes ~25 s to start)."""
    require(PHOENIX.exists(), "Arize Phoenix not installed in .venv-phoenix")
    with run_phoenix() as p:
        yield p


def _receiver(tmp_path: Path, exporter: dict[str, object]) -> Receiver:
    config = load_config(
        None,
        {
            "storage.data_dir": str(tmp_path / "data"),
            "receivers.otlp.protocols.grpc.endpoint": "127.0.0.1:0",
            "receivers.otlp.protocols.http.enabled": False,
            "admin.endpoint": "127.0.0.1:0",
            "exporters": {"otlp/phoenix": {"signals": ["traces"], **exporter}},
            "pipeline.processors": [],
            "pipeline.exporters": ["otlp/phoenix"],
        },
    )
    receiver = Receiver(config, analysis=False)
    receiver.start()
    return receiver


def _send(receiver: Receiver, service: str, names: list[str], attributes: dict[str, str]) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=receiver.grpc_endpoint, insecure=True))
    )
    tracer = provider.get_tracer("phoenix-e2e")
    for name in names:
        with tracer.start_as_current_span(name, attributes=attributes):
            pass
    provider.shutdown()


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_phoenix_stores_forwarded_spans_with_secrets_masked(
    protocol: str, phoenix: Phoenix, tmp_path: Path
) -> None:
    """SDK → receiver → Phoenix (OTLP/HTTP or gRPC): the spans are queryable in Phoenix and the
    credential attribute arrives masked."""
    endpoint = (
        f"http://127.0.0.1:{phoenix.http_port}"
        if protocol == "http/protobuf"
        else f"grpc://127.0.0.1:{phoenix.grpc_port}"
    )
    receiver = _receiver(tmp_path, {"endpoint": endpoint, "protocol": protocol})
    tag = protocol.replace("/", "-")
    names = [f"execute_tool web_search {tag} {i}" for i in range(5)]
    try:
        _send(
            receiver,
            f"phoenix-e2e-{tag}",
            names,
            {sc.GEN_AI_TOOL_NAME: "web_search", "db.password": "hunter2"},
        )

        def stored() -> list[dict[str, object]]:
            spans = [s for s in phoenix.spans() if s.get("name") in names]
            return spans if len(spans) == len(names) else []

        spans = wait_until(stored, timeout=30, what="spans in Phoenix")
        for span in spans:
            attrs = span["attributes"]
            assert isinstance(attrs, dict)
            assert attrs.get(sc.GEN_AI_TOOL_NAME) == "web_search"
            assert attrs.get("db.password") == "[REDACTED]"
    finally:
        receiver.stop(drain_timeout=2)


def test_phoenix_refusing_metrics_is_a_counted_permanent_error(
    phoenix: Phoenix, tmp_path: Path
) -> None:
    """Phoenix takes traces only: metrics forwarded to it get 405, are dropped once and counted,
    while the traces in the same spool still arrive."""
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    config = load_config(
        None,
        {
            "storage.data_dir": str(tmp_path / "data"),
            "receivers.otlp.protocols.grpc.endpoint": "127.0.0.1:0",
            "receivers.otlp.protocols.http.enabled": False,
            "admin.endpoint": "127.0.0.1:0",
            "exporters": {
                "otlp/phoenix": {
                    "endpoint": f"http://127.0.0.1:{phoenix.http_port}",
                    "protocol": "http/protobuf",
                }
            },
            "pipeline.processors": [],
            "pipeline.exporters": ["otlp/phoenix"],
        },
    )
    receiver = Receiver(config, analysis=False)
    receiver.start()
    try:
        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=receiver.grpc_endpoint, insecure=True),
            export_interval_millis=60_000,
        )
        meters = MeterProvider(metric_readers=[reader])
        meters.get_meter("e2e").create_counter("agent.runs").add(1)
        meters.shutdown()  # flushes one metrics export
        names = ["invoke_agent phoenix-405"]
        _send(receiver, "phoenix-e2e-405", names, {})

        def failed() -> float:
            return (
                receiver.registry.get_sample_value(
                    "otel_agents_forwarder_failed_items_total",
                    {"destination": "otlp/phoenix", "signal": "metrics", "reason": "http_405"},
                )
                or 0.0
            )

        wait_until(failed, timeout=15, what="metrics counted as failed with http_405")
        wait_until(
            lambda: [s for s in phoenix.spans() if s.get("name") in names],
            timeout=30,
            what="the trace after the refused metrics",
        )
    finally:
        receiver.stop(drain_timeout=2)
