# SPDX-License-Identifier: Apache-2.0
"""Ack means durable: kill -9 (RC-04), spool full → throttling (RC-05), storage failures (RC-08)."""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from otel_agents.receiver import Receiver, load_config
from otel_agents.receiver._spool import DB_NAME
from tests.exporters._fwd_sink import RecordingSink, make_traces
from tests.otel_agents.receiver._spool_client import (
    RawClient,
    ReceiverProcess,
    Reply,
    http_status,
    poll,
)

SPANS = 10
MAX_BATCH_REQUESTS = 8
ITERATIONS = int(os.environ.get("OTEL_AGENTS_RC04_ITERATIONS", "3"))


@pytest.fixture
def sink() -> Iterator[RecordingSink]:
    """A healthy downstream on an ephemeral gRPC port."""
    s = RecordingSink()
    s.start_grpc()
    yield s
    s.stop()


def _config_file(tmp_path: Path, endpoint: str, protocol: str = "grpc") -> Path:
    path = tmp_path / "receiver.yaml"
    path.write_text(
        f"""
exporters:
  otlp/sink:
    endpoint: {endpoint}
    protocol: {protocol}
    max_batch_requests: {MAX_BATCH_REQUESTS}
    retry_on_failure: {{initial_interval: 50ms, max_interval: 200ms}}
pipeline:
  processors: []
  exporters: [otlp/sink]
  tick_interval: 200ms
""",
        encoding="utf-8",
    )
    return path


def _load(port: int, acked: set[tuple[bytes, bytes]], stop: threading.Event) -> None:
    client = RawClient(port)
    try:
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            batch = make_traces(SPANS)
            reply = client.export(batch.payload, timeout=2.0)
            if reply.code is grpc.StatusCode.OK:
                acked.update(batch.keys)
            elif reply.code is grpc.StatusCode.UNAVAILABLE and stop.wait(0.05):
                return
    finally:
        client.close()


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_rc04_kill_9_loses_no_acknowledged_span(
    protocol: str, tmp_path: Path, sink: RecordingSink
) -> None:
    """RC-04: SIGKILL at a random moment under load; after restart every acked span is delivered
    (forwarding over OTLP/gRPC and over OTLP/HTTP)."""
    rng = random.Random(4)
    data = tmp_path / "data"
    if protocol == "grpc":
        config = _config_file(tmp_path, f"grpc://127.0.0.1:{sink.grpc_port}")
        iterations = ITERATIONS
    else:
        config = _config_file(tmp_path, f"http://127.0.0.1:{sink.start_http()}", protocol)
        iterations = max(1, ITERATIONS - 1)
    acked: set[tuple[bytes, bytes]] = set()
    for i in range(iterations):
        receiver = ReceiverProcess(tmp_path, data, "--config", str(config))
        stop = threading.Event()
        loaders = [
            threading.Thread(target=_load, args=(receiver.ports["grpc"], acked, stop))
            for _ in range(2)
        ]
        dup_before = sink.duplicates
        for t in loaders:
            t.start()
        time.sleep(rng.uniform(0.3, 1.2))
        receiver.kill()
        stop.set()
        for t in loaders:
            t.join(10)
        assert acked, f"iteration {i}: nothing was acknowledged before the kill"
        restarted = ReceiverProcess(tmp_path, data, "--config", str(config))
        try:
            assert poll(lambda: acked <= sink.received, 30), (
                f"iteration {i}: {len(acked - sink.received)} acknowledged spans never delivered"
            )
        finally:
            assert restarted.terminate() == 0
        # At-least-once: the kill may resend at most the batch the forwarder had in flight.
        assert sink.duplicates - dup_before <= MAX_BATCH_REQUESTS * SPANS
    db = sqlite3.connect(data / DB_NAME)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()


def _receiver(tmp_path: Path, **overrides: object) -> Receiver:
    base: dict[str, object] = {
        "storage.data_dir": str(tmp_path / "data"),
        "receivers.otlp.protocols.grpc.endpoint": "127.0.0.1:0",
        "receivers.otlp.protocols.http.enabled": False,
        "admin.endpoint": "127.0.0.1:0",
        "pipeline.processors": [],
        "pipeline.tick_interval": "100ms",
    }
    base.update(overrides)
    receiver = Receiver(load_config(None, base), analysis=False)
    receiver.start()
    return receiver


def _down(sink: RecordingSink) -> dict[str, object]:
    """Stop ``sink`` (``sink.start_grpc(sink.grpc_port)`` revives it) and return exporter
    settings for it that time out and retry fast, so spans stay pending in the spool."""
    sink.stop_grpc()
    return {
        "endpoint": f"grpc://127.0.0.1:{sink.grpc_port}",
        "timeout": "300ms",
        "retry_on_failure": {"initial_interval": "50ms", "max_interval": "200ms"},
    }


def _export_until_refused(
    client: RawClient, spans: int, attempts: int
) -> tuple[set[tuple[bytes, bytes]], Reply | None]:
    """Export ``spans``-span requests until one is refused (at most ``attempts``).

    Returns the acknowledged span keys and the refusing reply (``None`` if none was refused).
    """
    acked: set[tuple[bytes, bytes]] = set()
    for _ in range(attempts):
        batch = make_traces(spans)
        reply = client.export(batch.payload)
        if reply.code is not grpc.StatusCode.OK:
            return acked, reply
        acked.update(batch.keys)
    return acked, None


def test_rc05_full_spool_throttles_with_retry_info_and_drains_after_recovery(
    tmp_path: Path, sink: RecordingSink
) -> None:
    """RC-05: a dead destination fills the spool; the receiver answers UNAVAILABLE + RetryInfo
    (never drops), reports not ready, and accepts again once the destination drained it."""
    receiver = _receiver(
        tmp_path,
        **{
            "storage.max_bytes": "1MiB",
            "limits.max_request_bytes": "1MiB",
            "exporters": {"otlp/down": _down(sink)},
        },
    )
    client = RawClient(receiver.grpc_port)
    try:
        # 1 MiB / ~16 KiB per request: full after ~65
        acked, refused = _export_until_refused(client, spans=200, attempts=200)
        assert refused is not None and refused.code is grpc.StatusCode.UNAVAILABLE
        assert refused.retry_delay is not None and refused.retry_delay > 0
        status, body = http_status(receiver.admin_url + "/readyz")
        assert (status, body["spool"]) == (503, "full")
        sink.start_grpc(sink.grpc_port)
        assert poll(lambda: acked <= sink.received, 30)
        assert poll(lambda: http_status(receiver.admin_url + "/readyz")[0] == 200, 10)
        assert client.export(make_traces(5).payload).code is grpc.StatusCode.OK
    finally:
        client.close()
        receiver.stop(drain_timeout=1)


def test_rc08_disk_full_refuses_retryably_degrades_readyz_and_recovers(
    tmp_path: Path, sink: RecordingSink
) -> None:
    """RC-08: SQLITE_FULL under a running receiver → UNAVAILABLE + RetryInfo, /readyz 503;
    when space returns it accepts again and every acked span reaches the destination."""
    # The destination is down at first: rows stay pending, so the spool must grow (appends
    # reuse the pages of rows the destination has finished, which would never fill it).
    receiver = _receiver(tmp_path, exporters={"otlp/sink": _down(sink)})
    client = RawClient(receiver.grpc_port)
    try:
        assert receiver.pipeline is not None
        spool = receiver.pipeline.spool
        conn = spool._conn  # max_page_count is per connection: set it on the spool's own
        assert conn is not None
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count={pages}")
        acked, refused = _export_until_refused(client, spans=50, attempts=100)
        assert refused is not None and refused.code is grpc.StatusCode.UNAVAILABLE
        assert refused.retry_delay is not None
        status, body = http_status(receiver.admin_url + "/readyz")
        assert status == 503 and "disk_full" in str(body["spool"])
        conn.execute(f"PRAGMA max_page_count={pages * 1000}")
        assert poll(lambda: http_status(receiver.admin_url + "/readyz")[0] == 200, 10)
        batch = make_traces(5)
        assert client.export(batch.payload).code is grpc.StatusCode.OK
        acked.update(batch.keys)
        sink.start_grpc(sink.grpc_port)
        assert poll(lambda: acked <= sink.received, 15)
    finally:
        client.close()
        receiver.stop(drain_timeout=1)


def test_rc08_deleted_spool_file_loses_no_acked_span(tmp_path: Path, sink: RecordingSink) -> None:
    """RC-08: spool.db deleted under a running receiver: pending rows are rescued, nothing lost."""
    # a stopped destination keeps rows pending, so the rescue has something to carry over
    receiver = _receiver(tmp_path, exporters={"otlp/sink": _down(sink)})
    client = RawClient(receiver.grpc_port)
    try:
        acked: set[tuple[bytes, bytes]] = set()
        for _ in range(5):
            batch = make_traces(10)
            assert client.export(batch.payload).code is grpc.StatusCode.OK
            acked.update(batch.keys)
        os.unlink(tmp_path / "data" / DB_NAME)
        for _ in range(5):
            batch = make_traces(10)
            assert client.export(batch.payload).code is grpc.StatusCode.OK
            acked.update(batch.keys)
        assert (tmp_path / "data" / DB_NAME).exists()
        sink.start_grpc(sink.grpc_port)
        assert poll(lambda: acked <= sink.received, 15)
    finally:
        client.close()
        receiver.stop(drain_timeout=1)


def _read_only_mount_wrapper(data: Path) -> list[str]:
    """Run the command in a user + mount namespace where ``data`` is a read-only bind mount."""
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    return ["unshare", "-rm", "sh", "-c", script, str(data)]


def test_rc08_read_only_data_dir_refuses_then_recovers(tmp_path: Path, sink: RecordingSink) -> None:
    """RC-08: started on a read-only filesystem the receiver refuses retryably and reports not
    ready; when the filesystem becomes writable it recovers by itself and delivers everything."""
    probe = (
        subprocess.run(
            ["unshare", "-rm", "sh", "-c", f"mount --bind {tmp_path} {tmp_path}"],
            capture_output=True,
            timeout=10,
        )
        if shutil.which("unshare") and shutil.which("nsenter")
        else None
    )
    if probe is None or probe.returncode != 0:
        pytest.skip(
            "needs unshare/nsenter with unprivileged user+mount namespaces for a read-only mount"
        )
    data = tmp_path / "data"
    port = sink.grpc_port
    sink.stop_grpc()
    common = (
        "--forward",
        f"grpc://127.0.0.1:{port}",
        "--no-analysis",
        "--set",
        "pipeline.drain_timeout=200ms",
        "--set",
        "pipeline.tick_interval=200ms",
    )
    first = ReceiverProcess(tmp_path, data, *common)
    client = RawClient(first.ports["grpc"])
    acked: set[tuple[bytes, bytes]] = set()
    for _ in range(3):
        batch = make_traces(5)
        assert client.export(batch.payload).code is grpc.StatusCode.OK
        acked.update(batch.keys)
    client.close()
    assert first.terminate() == 0

    ro = ReceiverProcess(tmp_path, data, *common, wrapper=_read_only_mount_wrapper(data))
    client = RawClient(ro.ports["grpc"])
    admin = f"http://127.0.0.1:{ro.ports['admin']}/readyz"
    try:
        status, body = http_status(admin)
        assert status == 503 and str(body["spool"]).startswith("degraded"), body
        reply = client.export(make_traces(5).payload)
        assert reply.code is grpc.StatusCode.UNAVAILABLE and reply.retry_delay is not None
        subprocess.run(
            [
                "nsenter",
                "-t",
                str(ro.proc.pid),
                "-U",
                "-m",
                "--preserve-credentials",
                "mount",
                "-o",
                "remount,bind,rw",
                str(data),
            ],
            check=True,
            timeout=10,
        )
        assert poll(lambda: http_status(admin)[0] == 200, 10)
        batch = make_traces(5)
        assert client.export(batch.payload).code is grpc.StatusCode.OK
        acked.update(batch.keys)
        sink.start_grpc(port)
        assert poll(lambda: acked <= sink.received, 15)
    finally:
        client.close()
        assert ro.terminate() == 0
