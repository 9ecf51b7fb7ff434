# SPDX-License-Identifier: Apache-2.0
"""rotel (a real OTLP collector) as the upstream of the receiver, which forwards to a sink."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from otel_agents.receiver import Receiver, load_config
from tests.e2e._fwd_components import rotel_binary, run_rotel
from tests.e2e.conftest import require
from tests.exporters._fwd_sink import RecordingSink, make_traces
from tests.otel_agents.receiver._spool_client import RawClient

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


def test_rotel_backs_off_on_our_throttling_and_loses_nothing(tmp_path: Path) -> None:
    """Spool full (dead destination) → we answer UNAVAILABLE + RetryInfo; rotel keeps retrying
    instead of dropping, and once the destination is back every span arrives."""
    binary = rotel_binary()
    require(binary, "rotel not installed (pip package `rotel`)")
    assert binary is not None
    sink = RecordingSink()
    sink_port = sink.start_grpc()
    sink.stop_grpc()
    config = load_config(
        None,
        {
            "storage.data_dir": str(tmp_path / "data"),
            "storage.max_bytes": "1MiB",
            "limits.max_request_bytes": "1MiB",
            "receivers.otlp.protocols.grpc.endpoint": "127.0.0.1:0",
            "receivers.otlp.protocols.http.enabled": False,
            "admin.endpoint": "127.0.0.1:0",
            "exporters": {
                "otlp/sink": {
                    "endpoint": f"grpc://127.0.0.1:{sink_port}",
                    "timeout": "300ms",
                    "retry_on_failure": {"initial_interval": "100ms", "max_interval": "300ms"},
                }
            },
            "pipeline.processors": [],
            "pipeline.exporters": ["otlp/sink"],
        },
    )
    receiver = Receiver(config, analysis=False)
    receiver.start()
    try:
        with run_rotel(
            binary,
            f"http://127.0.0.1:{receiver.grpc_port}",
            "grpc",
            "--batch-max-size",
            "1000",
            "--otlp-exporter-retry-initial-backoff",
            "100ms",
            "--otlp-exporter-retry-max-backoff",
            "500ms",
            "--otlp-exporter-retry-max-elapsed-time",
            "60s",
        ) as (rotel_grpc, _http, log):
            # Raw OTLP requests to rotel, each retried until rotel acknowledges it: what is lost
            # after that point would be lost by rotel or by us, not by the test's sender.
            client = RawClient(rotel_grpc)
            ids: set[tuple[bytes, bytes]] = set()
            try:
                for _ in range(8):  # 8 × 500 spans × ~400 B: ~1.6 MiB, more than the spool holds
                    batch = make_traces(500, {"pad": "x" * 300})
                    for _attempt in range(100):
                        if client.export(batch.payload, timeout=10).code is grpc.StatusCode.OK:
                            ids.update(batch.keys)
                            break
                        time.sleep(0.1)
            finally:
                client.close()
            assert len(ids) == 4000
            assert receiver.pipeline is not None
            spool = receiver.pipeline.spool
            assert sink.wait_for(lambda: spool.full, timeout=20), (
                f"the spool never filled ({spool.bytes} bytes): {log.read_text()[-2000:]}"
            )
            time.sleep(1.0)  # rotel is now being refused and retrying
            sink.start_grpc(sink_port)
            delivered = sink.wait_for(lambda: ids <= sink.received, timeout=60)
            errors = [ln for ln in log.read_text().splitlines() if "ERROR" in ln or "WARN" in ln]
            accepted = receiver.registry.get_sample_value(
                "otel_agents_receiver_accepted_items_total",
                {"signal": "traces", "transport": "grpc"},
            )
            assert delivered, (
                f"{len(ids - sink.received)} of {len(ids)} spans missing; receiver acked "
                f"{accepted}, sink has {len(sink.received)}; rotel said: {errors[-5:]}"
            )
    finally:
        sink.stop()
        receiver.stop(drain_timeout=1)
