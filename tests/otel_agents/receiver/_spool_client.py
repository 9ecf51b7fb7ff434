# SPDX-License-Identifier: Apache-2.0
"""Test helpers: a raw OTLP/gRPC client (bytes in, status + trailers out) and receiver processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.rpc import error_details_pb2

TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
ROOT = Path(__file__).resolve().parents[3]


@dataclass
class Reply:
    """Outcome of one raw export call."""

    code: grpc.StatusCode
    retry_delay: float | None = None  # from the google.rpc.retryinfo-bin trailer


class RawClient:
    """Sends serialized ExportTraceServiceRequests over one gRPC channel."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self._call = self.channel.unary_unary(TRACES)

    def export(self, payload: bytes, timeout: float = 5.0) -> Reply:
        """One Export call; never raises for RPC errors."""
        try:
            self._call(payload, timeout=timeout)
        except grpc.RpcError as err:
            delay = None
            for key, value in err.trailing_metadata() or ():  # type: ignore[attr-defined]
                if key == "google.rpc.retryinfo-bin":
                    info = error_details_pb2.RetryInfo.FromString(value)
                    delay = info.retry_delay.ToTimedelta().total_seconds()
            return Reply(err.code(), delay)  # type: ignore[attr-defined]
        return Reply(grpc.StatusCode.OK)

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()


def http_status(url: str) -> tuple[int, dict[str, object]]:
    """GET ``url`` → (status, JSON body)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def poll(predicate: object, timeout: float, interval: float = 0.05) -> bool:
    """Call ``predicate`` until it is truthy or ``timeout`` passes; returns the last result."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


class ReceiverProcess:
    """``python -m otel_agents._cli serve`` as a child process with ports on 0."""

    def __init__(self, tmp: Path, data_dir: Path, *extra: str, wrapper: Sequence[str] = ()) -> None:
        self.ports_file = tmp / f"ports-{time.monotonic_ns()}.json"
        self.log = tmp / "receiver.log"
        args = [
            sys.executable,
            "-m",
            "otel_agents._cli",
            "serve",
            "--grpc-endpoint",
            "127.0.0.1:0",
            "--http-endpoint",
            "127.0.0.1:0",
            "--admin-endpoint",
            "127.0.0.1:0",
            "--data-dir",
            str(data_dir),
            "--ports-file",
            str(self.ports_file),
            "--log-level",
            "WARNING",
            *extra,
        ]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([*wrapper, *args], cwd=ROOT, stdout=log, stderr=log)
        if not poll(lambda: self.ports_file.exists() or self.proc.poll() is not None, 60):
            self.kill()
            raise TimeoutError("receiver did not start in 60 s")
        if self.proc.poll() is not None:
            raise RuntimeError(f"receiver exited: {self.log.read_text()[-2000:]}")
        self.ports = json.loads(self.ports_file.read_text())

    def kill(self) -> None:
        """SIGKILL (no cleanup at all) and reap."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 20) -> int:
        """SIGTERM and wait for a clean exit; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
