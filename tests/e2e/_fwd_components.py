# SPDX-License-Identifier: Apache-2.0
"""Real components for the forwarding e2e tests: rotel (upstream collector) and Arize Phoenix
(downstream trace backend), each on free loopback ports with private files."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.e2e.conftest import stop_process

ROOT = Path(__file__).resolve().parents[2]
PHOENIX = ROOT / ".venv-phoenix" / "bin" / "phoenix"


def free_port() -> int:
    """A currently free loopback port (for programs that cannot bind port 0 themselves)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_tcp(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    """Poll until something accepts on 127.0.0.1:``port``; ``False`` at the timeout, or at once
    when ``proc`` (the program that should listen) has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


def rotel_binary() -> Path | None:
    """The rotel-agent binary bundled in the ``rotel`` wheel, if installed."""
    try:
        import rotel
    except ImportError:
        return None
    path = Path(os.path.dirname(rotel.__file__)) / "rotel-agent"
    return path if path.exists() else None


@contextmanager
def run_rotel(
    binary: Path, exporter_endpoint: str, protocol: str, *extra: str
) -> Iterator[tuple[int, int, Path]]:
    """rotel with OTLP in on free ports, exporting OTLP to ``exporter_endpoint``.

    Yields ``(grpc_port, http_port, log_file)``; pid/log files in a private temp dir (the
    defaults are shared files in the system temp dir).
    """
    tmp = Path(tempfile.mkdtemp(prefix="rotel-"))
    gport, hport = free_port(), free_port()
    log = tmp / "rotel.log"  # rotel writes --log-file only when daemonized: capture output too
    out = open(tmp / "rotel.out", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [
            str(binary),
            "start",
            "--otlp-grpc-endpoint",
            f"127.0.0.1:{gport}",
            "--otlp-http-endpoint",
            f"127.0.0.1:{hport}",
            "--exporter",
            "otlp",
            "--otlp-exporter-endpoint",
            exporter_endpoint,
            "--otlp-exporter-protocol",
            protocol,
            "--pid-file",
            str(tmp / "rotel.pid"),
            "--log-file",
            str(log),
            *extra,
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        if not (wait_tcp(gport, 15, proc) and wait_tcp(hport, 15, proc)):
            # a free port taken by someone else in between makes rotel exit 1: say so
            raise RuntimeError(
                f"rotel did not listen (exit code {proc.poll()}): {(tmp / 'rotel.out').read_text()}"
            )
        yield gport, hport, tmp / "rotel.out"
    finally:
        out.close()
        stop_process(proc)


class Phoenix:
    """A running Phoenix server (REST + OTLP/HTTP on ``http_port``, OTLP/gRPC on ``grpc_port``)."""

    def __init__(
        self, proc: subprocess.Popen[bytes], http_port: int, grpc_port: int, log: Path
    ) -> None:
        self.proc, self.http_port, self.grpc_port, self.log = proc, http_port, grpc_port, log

    def get(self, path: str) -> Any:
        """GET a JSON document from the REST API."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=10) as r:
            return json.loads(r.read())

    def spans(self, project: str = "default", limit: int = 1000) -> list[dict[str, Any]]:
        """Spans stored in ``project`` (newest first), [] while the project does not exist."""
        try:
            return list(self.get(f"/v1/projects/{project}/spans?limit={limit}")["data"])
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return []
            raise


@contextmanager
def run_phoenix(timeout: float = 120.0) -> Iterator[Phoenix]:
    """Start Phoenix from .venv-phoenix on free ports with a private working dir."""
    work = Path(tempfile.mkdtemp(prefix="phoenix-"))
    http_port, grpc_port = free_port(), free_port()
    env = {
        **os.environ,
        "PHOENIX_WORKING_DIR": str(work),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(http_port),
        "PHOENIX_GRPC_PORT": str(grpc_port),
        "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
        "PHOENIX_TELEMETRY_ENABLED": "false",
    }
    log = work / "phoenix.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(PHOENIX), "serve"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    phoenix = Phoenix(proc, http_port, grpc_port, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"phoenix exited: {log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{http_port}/healthz", timeout=2
                ) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"phoenix not healthy after {timeout}s: {log.read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield phoenix
    finally:
        stop_process(proc, grace=15)
