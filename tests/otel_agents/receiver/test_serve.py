# SPDX-License-Identifier: Apache-2.0
"""The Receiver class and the ``serve`` command: ports, flags, clean shutdown with drain."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from otel_agents._errors import ConfigError
from otel_agents.receiver import Receiver, load_config
from tests.exporters._fwd_sink import RecordingSink, make_traces
from tests.otel_agents.receiver._spool_client import ROOT, RawClient, ReceiverProcess, http_status


@pytest.fixture
def sink() -> Iterator[RecordingSink]:
    """A downstream on an ephemeral gRPC port."""
    s = RecordingSink()
    s.start_grpc()
    yield s
    s.stop()


def _config(tmp_path: Path, **extra: object) -> dict[str, object]:
    base: dict[str, object] = {
        "storage.data_dir": str(tmp_path / "data"),
        "receivers.otlp.protocols.grpc.endpoint": "127.0.0.1:0",
        "receivers.otlp.protocols.http.endpoint": "127.0.0.1:0",
        "admin.endpoint": "127.0.0.1:0",
        "pipeline.processors": [],
    }
    base.update(extra)
    return base


def test_embedded_receiver_binds_port_zero_and_accepts_otlp_http(
    tmp_path: Path, sink: RecordingSink
) -> None:
    """Receiver(config).start() exposes bound ports; the official HTTP exporter's spans arrive."""
    config = load_config(
        None,
        _config(tmp_path, exporters={"otlp/s": {"endpoint": f"grpc://127.0.0.1:{sink.grpc_port}"}}),
    )
    with Receiver(config, analysis=False) as receiver:
        assert min(receiver.grpc_port, receiver.http_port, receiver.admin_port) > 0
        assert receiver.grpc_endpoint == f"127.0.0.1:{receiver.grpc_port}"
        assert http_status(receiver.admin_url + "/readyz")[0] == 200
        provider = TracerProvider()
        provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=receiver.http_endpoint + "/v1/traces"))
        )
        with provider.get_tracer("t").start_as_current_span("s") as span:
            ctx = span.get_span_context()
        provider.shutdown()
        key = (ctx.trace_id.to_bytes(16, "big"), ctx.span_id.to_bytes(8, "big"))
        assert sink.wait_for(lambda: key in sink.received)
    receiver.stop()  # idempotent


def test_a_port_in_use_fails_start_cleanly(tmp_path: Path) -> None:
    """Binding an occupied port raises ConfigError and leaves nothing running."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        receiver = Receiver(
            load_config(None, _config(tmp_path, **{"admin.endpoint": f"127.0.0.1:{port}"}))
        )
        with pytest.raises(ConfigError, match="cannot bind"):
            receiver.start()
    # The spool was closed on the way out: a new receiver can open the same directory.
    again = Receiver(load_config(None, _config(tmp_path)))
    again.start()
    again.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_shuts_down_cleanly_and_drains_on_signal(
    sig: signal.Signals, tmp_path: Path, sink: RecordingSink
) -> None:
    """SIGTERM/SIGINT: exit 0 after forwarding what was acknowledged just before."""
    proc = ReceiverProcess(
        tmp_path,
        tmp_path / "data",
        "--forward",
        f"grpc://127.0.0.1:{sink.grpc_port}",
        "--no-analysis",
    )
    client = RawClient(proc.ports["grpc"])
    acked = set()
    for _ in range(20):
        batch = make_traces(5)
        assert client.export(batch.payload).code is grpc.StatusCode.OK
        acked.update(batch.keys)
    client.close()
    proc.proc.send_signal(sig)
    assert proc.proc.wait(30) == 0
    assert acked <= sink.received


def test_set_flag_overrides_any_field(tmp_path: Path) -> None:
    """``--set storage.max_bytes=2MiB`` reaches the spool (visible in /readyz details)."""
    proc = ReceiverProcess(
        tmp_path,
        tmp_path / "data",
        "--set",
        "storage.max_bytes=2MiB",
        "--set",
        "limits.max_request_bytes=1MiB",
        "--no-analysis",
    )
    try:
        status, body = http_status(f"http://127.0.0.1:{proc.ports['admin']}/readyz")
        assert status == 200 and body["spool_max_bytes"] == 2 << 20
    finally:
        assert proc.terminate() == 0


def test_bad_config_exits_2_with_the_key_path(tmp_path: Path) -> None:
    """A config error is reported on stderr, naming the key, with exit code 2."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("storage:\n  max_bytes: lots\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "otel_agents._cli", "serve", "--config", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "storage.max_bytes: expected a size such as '64MiB', got 'lots'" in result.stderr


def test_check_config_command_through_the_cli(tmp_path: Path) -> None:
    """``otel-agents check-config FILE`` is dispatched by the CLI and exits 0 / 1."""
    good = tmp_path / "good.yaml"
    good.write_text("receivers:\n  otlp:\n    protocols:\n      grpc:\n", encoding="utf-8")
    ok = subprocess.run(
        [sys.executable, "-m", "otel_agents._cli", "check-config", str(good)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0 and "OK" in ok.stdout and "http off" in ok.stdout
    good.write_text(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: nope\n",
        encoding="utf-8",
    )
    bad = subprocess.run(
        [sys.executable, "-m", "otel_agents._cli", "check-config", str(good)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "receivers.otlp.protocols.grpc.endpoint" in bad.stderr
