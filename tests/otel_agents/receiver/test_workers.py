# SPDX-License-Identifier: Apache-2.0
"""``otel-agents serve --workers N``: worker processes sharing the OTLP ports, one admin endpoint."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _request(n: int, seed: int) -> bytes:
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    for i in range(n):
        spans.append(
            Span(
                trace_id=seed.to_bytes(8, "big") + (i + 1).to_bytes(8, "big"),
                span_id=(i + 1).to_bytes(8, "big"),
                name="execute_tool web_search",
                start_time_unix_nano=1,
                end_time_unix_nano=2,
            )
        )
    return request.SerializeToString()


def _wait_file(path: Path, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return json.loads(path.read_text())
        assert proc.poll() is None, f"serve exited with {proc.returncode}"
        time.sleep(0.05)
    raise AssertionError(f"no {path} within {timeout} s")


def _accepted_by_worker(admin: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("otel_agents_receiver_accepted_items_total{"):
            labels, value = line.rsplit(" ", 1)
            worker = labels.split('worker="', 1)[1].split('"', 1)[0]
            out[worker] = out.get(worker, 0.0) + float(value)
    return out


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, Any]]]:
    ports_file = tmp_path / "ports.json"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "otel_agents._cli", "serve", "--workers", "2", "--no-analysis",
            "--grpc-endpoint", "127.0.0.1:0", "--http-endpoint", "127.0.0.1:0",
            "--admin-endpoint", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"),
            "--ports-file", str(ports_file),
        ],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield proc, _wait_file(ports_file, proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_workers_share_the_ports_and_the_admin_endpoint_sums_them(
    served: tuple[subprocess.Popen[bytes], dict[str, Any]], tmp_path: Path
) -> None:
    """Connections over gRPC and HTTP land on both workers; /metrics labels each worker."""
    _, ports = served
    assert len(ports["workers"]) == 2
    sent = 0
    deadline = time.monotonic() + 20
    # New connections until the kernel has handed some to each worker (bounded in time).
    while time.monotonic() < deadline:
        for i in range(4):
            with grpc.insecure_channel(f"127.0.0.1:{ports['grpc']}") as channel:
                channel.unary_unary(TRACE_EXPORT)(_request(5, sent + i), timeout=10)
            conn = http.client.HTTPConnection("127.0.0.1", ports["http"], timeout=10)
            conn.request(
                "POST", "/v1/traces", _request(5, 1000 + sent + i),
                {"Content-Type": "application/x-protobuf"},
            )  # fmt: skip
            assert conn.getresponse().status == 200
            conn.close()
            sent += 2
        by_worker = _accepted_by_worker(ports["admin"])
        if len(by_worker) == 2 and all(v > 0 for v in by_worker.values()):
            break
    assert sum(by_worker.values()) == sent * 5
    assert set(by_worker) == {"0", "1"} and all(v > 0 for v in by_worker.values())
    with urllib.request.urlopen(f"http://127.0.0.1:{ports['admin']}/readyz", timeout=5) as r:
        assert r.status == 200
    assert (tmp_path / "data" / "worker-0" / "spool.db").exists()
    assert (tmp_path / "data" / "worker-1" / "spool.db").exists()


def test_sigterm_stops_every_worker(served: tuple[subprocess.Popen[bytes], dict[str, Any]]) -> None:
    """SIGTERM to the supervisor stops both workers cleanly and exits 0."""
    proc, ports = served
    workers = [psutil.Process(pid) for pid in ports["workers"]]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    # The supervisor reaped them (their exit codes are its business): none may be left running.
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive


def test_a_dead_worker_is_started_again(
    served: tuple[subprocess.Popen[bytes], dict[str, Any]],
) -> None:
    """A worker killed with SIGKILL is replaced and the admin endpoint sees two workers again."""
    proc, ports = served
    psutil.Process(ports["workers"][1]).kill()
    deadline = time.monotonic() + 30
    children: list[psutil.Process] = []
    while time.monotonic() < deadline:
        children = [c for c in psutil.Process(proc.pid).children() if c.pid not in ports["workers"]]
        if children and len(_accepted_by_worker_or_up(ports["admin"])) == 2:
            break
        time.sleep(0.2)
    assert children, "no replacement worker"
    assert proc.poll() is None


def _accepted_by_worker_or_up(admin: int) -> set[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        line.split('worker="', 1)[1].split('"', 1)[0]
        for line in text.splitlines()
        if 'worker="' in line
    }


def test_workers_need_no_analysis(tmp_path: Path) -> None:
    """--workers 2 without --no-analysis exits 2 and says why, before starting anything."""
    out = subprocess.run(
        [
            sys.executable, "-m", "otel_agents._cli", "serve", "--workers", "2",
            "--grpc-endpoint", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"),
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 2
    assert "--workers > 1 requires --no-analysis" in out.stderr
    assert not (tmp_path / "data" / "worker-0").exists()


def test_the_shared_metrics_scrape_uses_the_admin_token(tmp_path: Path) -> None:
    """With admin auth on, the supervisor scrapes the workers with the configured token."""
    ports_file = tmp_path / "ports.json"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "otel_agents._cli", "serve", "--workers", "2", "--no-analysis",
            "--grpc-endpoint", "127.0.0.1:0", "--http-endpoint", "127.0.0.1:0",
            "--admin-endpoint", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"),
            "--set", "admin.auth.tokens=[s3cret-token]", "--ports-file", str(ports_file),
        ],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        ports = _wait_file(ports_file, proc)
        url = f"http://127.0.0.1:{ports['admin']}/metrics"
        request = urllib.request.Request(url, headers={"Authorization": "Bearer s3cret-token"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            text = resp.read().decode()
        assert 'worker="0"' in text and 'worker="1"' in text
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url, timeout=10)
        assert err.value.code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
