# SPDX-License-Identifier: Apache-2.0
"""rotel (a real OTLP collector) as the upstream of the receiver, which forwards to a sink."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from otel_agents.receiver import Receiver, load_config
from tests.e2e._fwd_components import rotel_binary, run_rotel
from tests.e2e.conftest import require
from tests.exporters._fwd_sink import RecordingSink

pytestmark = pytest.mark.e2e


@pytest.fixture
def sink() -> Iterator[RecordingSink]:
    """The downstream that the receiver forwards to."""
    s = RecordingSink()
    s.start_grpc()
    yield s
    s.stop()


@pytest.fixture
def receiver(tmp_path: Path, sink: RecordingSink) -> Iterator[Receiver]:
    """The receiver in-process on ephemeral ports, forwarding everything to ``sink``."""
    config = load_config(
        None,
        {
            "storage.data_dir": str(tmp_path / "data"),
            "receivers.otlp.protocols.grpc.endpoint": "127.0.0.1:0",
            "receivers.otlp.protocols.http.endpoint": "127.0.0.1:0",
            "admin.endpoint": "127.0.0.1:0",
            "exporters": {"otlp/sink": {"endpoint": f"grpc://127.0.0.1:{sink.grpc_port}"}},
            "pipeline.processors": [],
            "pipeline.exporters": ["otlp/sink"],
        },
    )
    r = Receiver(config, analysis=False)
    r.start()
    yield r
    r.stop(drain_timeout=1)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_rotel_upstream_delivers_every_span_through_the_receiver(
    protocol: str, receiver: Receiver, sink: RecordingSink
) -> None:
    """SDK → rotel → receiver (gRPC or HTTP/protobuf) → sink: every span arrives exactly once."""
    binary = rotel_binary()
    require(binary, "rotel not installed (pip package `rotel`)")
    assert binary is not None
    endpoint = (
        f"http://127.0.0.1:{receiver.grpc_port}" if protocol == "grpc" else receiver.http_endpoint
    )
    with run_rotel(binary, endpoint, protocol) as (rotel_grpc, _rotel_http, log):
        provider = TracerProvider(resource=Resource.create({"service.name": "rotel-e2e"}))
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=f"127.0.0.1:{rotel_grpc}", insecure=True))
        )
        tracer = provider.get_tracer("e2e")
        ids = set()
        for i in range(50):
            with tracer.start_as_current_span(f"invoke_agent planner {i}") as span:
                ctx = span.get_span_context()
                ids.add((ctx.trace_id.to_bytes(16, "big"), ctx.span_id.to_bytes(8, "big")))
        provider.shutdown()
        assert sink.wait_for(lambda: ids <= sink.received, timeout=20), log.read_text()[-2000:]
        assert sink.duplicates == 0
