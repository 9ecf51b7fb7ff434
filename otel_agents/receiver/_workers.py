# SPDX-License-Identifier: Apache-2.0
"""``otel-agents serve --workers N``: N ingest processes sharing the OTLP ports.

One Python process decodes, validates and spools on about one core (the GIL); a supervisor runs
N worker processes (each a plain ``otel-agents serve --no-analysis``) bound to the same gRPC and
HTTP ports with ``SO_REUSEPORT``, so the kernel spreads connections over them.  Each worker has
its own spool (``<data_dir>/worker-<i>``) and its own forwarders; the supervisor serves the admin
endpoint once: ``/metrics`` is every worker's exposition with a ``worker`` label added, and
``/readyz`` is ready when every worker is.  A worker that dies is started again on the same
spool (its file lock dies with it, so nothing blocks the restart); SIGTERM / SIGINT stop every
worker cleanly (each drains its forwarders) before the supervisor exits.

Memory: ``admission.memory_limit`` applies to each worker process on its own (a worker's idle
RSS is ~70 MiB, so one 256 MiB budget split three ways would leave a worker under load refusing
everything); the whole receiver can use N times the budget plus the supervisor's RSS.

Analysis needs every span of a trace in one place, and a worker sees only the connections the
kernel gave it, so ``--workers`` > 1 requires ``--no-analysis`` until one analysis consumer reads
all the workers' spools.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from otel_agents._errors import ConfigError
from otel_agents.receiver._config import ReceiverConfig

__all__ = ["WorkerSupervisor", "main_workers"]

_log = logging.getLogger("otel_agents.receiver")

_PROTOCOLS = "receivers.otlp.protocols"
#: How long a worker may take to bind its ports (imports + spool open).
_START_TIMEOUT = 60.0
#: A worker dying more often than this is not restarted in a tight loop.
_RESTART_BACKOFF = 2.0
_SCRAPE_TIMEOUT = 2.0


class _Worker:
    __slots__ = ("admin_port", "index", "ports_file", "proc", "started")

    def __init__(self, index: int, ports_file: Path) -> None:
        self.index = index
        self.ports_file = ports_file
        self.proc: subprocess.Popen[bytes] | None = None
        self.admin_port = 0
        self.started = 0.0


class _WorkerMetrics:
    """A Prometheus collector: every worker's ``/metrics``, each sample labelled ``worker``."""

    def __init__(self, supervisor: WorkerSupervisor) -> None:
        self._supervisor = supervisor

    def describe(self) -> list[Metric]:
        # Nothing at registration time (the workers may not be up yet).
        return []

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        headers = self._supervisor.admin_headers()
        for index, port in self._supervisor.admin_ports():
            request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers)
            try:
                with urllib.request.urlopen(  # loopback URL we built
                    request, timeout=_SCRAPE_TIMEOUT
                ) as resp:
                    text = resp.read().decode("utf-8")
            except (OSError, urllib.error.URLError) as exc:
                _log.warning("worker %d: /metrics scrape failed: %s", index, exc)
                continue
            for family in text_string_to_metric_families(text):
                out = merged.get(family.name)
                if out is None:
                    out = merged[family.name] = Metric(
                        family.name, family.documentation, family.type, family.unit
                    )
                out.samples.extend(
                    Sample(s.name, {**s.labels, "worker": str(index)}, s.value, s.timestamp)
                    for s in family.samples
                )
        yield from merged.values()


class WorkerSupervisor:
    """Starts, watches and stops the worker processes; serves the shared admin endpoint.

    Args:
        config: the resolved configuration (for endpoints, data_dir, admin, drain timeout).
        workers: number of worker processes (>= 2).
        passthrough: ``serve`` arguments every worker gets (config file, ``--set``,
            ``--forward``, log level).
    """

    def __init__(self, config: ReceiverConfig, workers: int, passthrough: Iterable[str]) -> None:
        if workers < 2:
            raise ConfigError("--workers: the supervisor runs 2 or more workers")
        self.config = config
        self._passthrough = list(passthrough)
        self._data_dir = Path(config.storage.data_dir)
        self._run_dir = self._data_dir / "workers"
        self._workers = [
            _Worker(i, self._run_dir / f"worker-{i}.ports.json") for i in range(workers)
        ]
        self._grpc = config.grpc.endpoint
        self._http = config.http.endpoint
        self.grpc_port = 0
        self.http_port = 0
        self._admin: Any = None
        self._lock = threading.Lock()
        self._stopping = False

    # ------------------------------------------------------------------ workers

    def _argv(self, worker: _Worker) -> list[str]:
        argv = [sys.executable, "-m", "otel_agents._cli", "serve", *self._passthrough]
        argv += ["--no-analysis", "--data-dir", str(self._data_dir / f"worker-{worker.index}")]
        argv += ["--admin-endpoint", "127.0.0.1:0", "--set", "admin.enabled=true"]
        argv += ["--ports-file", str(worker.ports_file)]
        cfg = self.config
        for proto, endpoint, enabled in (
            ("grpc", self._grpc, cfg.grpc.enabled),
            ("http", self._http, cfg.http.enabled),
        ):
            # JSON strings are YAML strings: "[::1]:4317" must not become a list.
            argv += ["--set", f"{_PROTOCOLS}.{proto}.endpoint={json.dumps(endpoint)}"]
            argv += ["--set", f"{_PROTOCOLS}.{proto}.enabled={json.dumps(enabled)}"]
            argv += ["--set", f"{_PROTOCOLS}.{proto}.reuse_port=true"]
        return argv

    def _spawn(self, worker: _Worker) -> None:
        worker.ports_file.unlink(missing_ok=True)
        worker.started = time.monotonic()
        worker.proc = subprocess.Popen(self._argv(worker), stdin=subprocess.DEVNULL)

    def _await_ports(self, worker: _Worker) -> dict[str, int]:
        deadline = time.monotonic() + _START_TIMEOUT
        assert worker.proc is not None
        while time.monotonic() < deadline:
            if worker.ports_file.exists():
                ports: dict[str, int] = json.loads(worker.ports_file.read_text("utf-8"))
                worker.admin_port = int(ports.get("admin") or 0)
                return ports
            if worker.proc.poll() is not None:
                raise ConfigError(
                    f"worker {worker.index} exited with {worker.proc.returncode} while starting"
                )
            time.sleep(0.05)
        raise ConfigError(f"worker {worker.index} did not start within {_START_TIMEOUT:.0f} s")

    @staticmethod
    def _with_port(endpoint: str, port: int) -> str:
        host = endpoint.rpartition(":")[0]
        return f"{host}:{port}"

    def start(self) -> None:
        """Start worker 0, pin the ports it bound (port 0 → a free port), start the others.

        Raises:
            ConfigError: a worker failed to start (the others are stopped).
        """
        self._run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            first = self._workers[0]
            self._spawn(first)
            ports = self._await_ports(first)
            self.grpc_port = int(ports.get("grpc") or 0)
            self.http_port = int(ports.get("http") or 0)
            if self.config.grpc.enabled:
                self._grpc = self._with_port(self._grpc, self.grpc_port)
            if self.config.http.enabled:
                self._http = self._with_port(self._http, self.http_port)
            for worker in self._workers[1:]:
                self._spawn(worker)
            for worker in self._workers[1:]:
                self._await_ports(worker)
            if self.config.admin.enabled:
                from otel_agents.receiver._admin import AdminServer

                registry = CollectorRegistry(auto_describe=False)
                registry.register(_WorkerMetrics(self))  # type: ignore[arg-type]
                self._admin = AdminServer(self.config.admin, registry, health=self.health)
                self._admin.start()
        except BaseException:
            self.stop()
            raise

    @property
    def admin_port(self) -> int:
        """The shared admin endpoint's port (0 when off)."""
        return int(getattr(self._admin, "port", 0) or 0)

    def pids(self) -> list[int]:
        """Worker process IDs."""
        return [w.proc.pid for w in self._workers if w.proc is not None]

    def admin_ports(self) -> list[tuple[int, int]]:
        """``(worker index, admin port)`` of the running workers."""
        with self._lock:
            return [
                (w.index, w.admin_port)
                for w in self._workers
                if w.admin_port and w.proc is not None and w.proc.poll() is None
            ]

    def admin_headers(self) -> dict[str, str]:
        """Credentials for the workers' ``/metrics`` (they share the admin auth config)."""
        auth = self.config.admin.auth
        token = auth.tokens[0] if auth.tokens else None
        if token is None and auth.token_file is not None:
            try:
                lines = Path(auth.token_file).read_text("utf-8").splitlines()
            except OSError:
                lines = []
            token = next((ln.strip() for ln in lines if ln.strip()), None)
        return {auth.header: f"{auth.scheme} {token}"} if token else {}

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Ready when every worker's ``/readyz`` answers 200."""
        details: dict[str, Any] = {}
        ready = True
        running = dict(self.admin_ports())
        for worker in self._workers:
            port = running.get(worker.index)
            state = "down"
            if port:
                try:
                    with urllib.request.urlopen(  # loopback URL we built
                        f"http://127.0.0.1:{port}/readyz", timeout=_SCRAPE_TIMEOUT
                    ) as resp:
                        state = "ready" if resp.status == 200 else f"status {resp.status}"
                except urllib.error.HTTPError as exc:
                    state = f"not ready ({exc.code})"
                except OSError as exc:
                    state = f"unreachable ({exc})"
            details[f"worker-{worker.index}"] = state
            ready = ready and state == "ready"
        return ready, details

    def watch(self) -> None:
        """Restart workers that died (not while stopping); call periodically."""
        for worker in self._workers:
            proc = worker.proc
            if self._stopping or proc is None or proc.poll() is None:
                continue
            if time.monotonic() - worker.started < _RESTART_BACKOFF:
                continue
            _log.error(
                "worker %d (pid %d) exited with %s; starting it again",
                worker.index,
                proc.pid,
                proc.returncode,
            )
            with self._lock:
                worker.admin_port = 0
            self._spawn(worker)
            try:
                self._await_ports(worker)
            except ConfigError as exc:
                _log.error("worker %d: %s", worker.index, exc)

    def stop(self) -> None:
        """SIGTERM every worker, wait for their drains, then stop the admin endpoint."""
        self._stopping = True
        procs = [w.proc for w in self._workers if w.proc is not None and w.proc.poll() is None]
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.config.pipeline.drain_timeout + 15.0
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _log.error("worker pid %d did not stop in time; killing it", proc.pid)
                proc.kill()
                proc.wait(5)
        if self._admin is not None:
            self._admin.stop()
            self._admin = None


def passthrough_args(args: argparse.Namespace) -> list[str]:
    """The ``serve`` flags each worker inherits (endpoints, data dir and admin are per worker)."""
    out: list[str] = ["--log-level", str(args.log_level)]
    if args.config:
        out += ["--config", str(args.config)]
    for item in args.set:
        out += ["--set", item]
    for url in args.forward:
        out += ["--forward", url]
    return out


def main_workers(args: argparse.Namespace, config: ReceiverConfig) -> int:
    """Run the supervisor until SIGTERM / SIGINT; the exit code of ``serve``."""
    if not args.no_analysis:
        print(
            "otel-agents serve: --workers > 1 requires --no-analysis: each worker receives only "
            "the connections the kernel hands it, and analysis must see every span of a trace "
            "(a shared analysis consumer is not built yet). Run analysis in a separate "
            "single-process receiver, or use --workers 1.",
            file=sys.stderr,
        )
        return 2
    supervisor = WorkerSupervisor(config, int(args.workers), passthrough_args(args))
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        _log.info("received %s, stopping %d workers", signal.Signals(signum).name, args.workers)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        supervisor.start()
    except ConfigError as exc:
        print(f"otel-agents serve: {exc}", file=sys.stderr)
        return 2
    ports = {
        "grpc": supervisor.grpc_port,
        "http": supervisor.http_port,
        "admin": supervisor.admin_port,
    }
    _log.info(
        "serving with %d workers (pids %s): grpc=%s http=%s admin=%s",
        args.workers,
        supervisor.pids(),
        ports["grpc"] or "off",
        ports["http"] or "off",
        ports["admin"] or "off",
    )
    if args.ports_file:
        tmp = Path(args.ports_file + ".tmp")
        tmp.write_text(
            json.dumps({**ports, "pid": os.getpid(), "workers": supervisor.pids()}),
            encoding="utf-8",
        )
        os.replace(tmp, args.ports_file)
    while not stop.wait(0.5):
        supervisor.watch()
    supervisor.stop()
    _log.info("stopped")
    return 0
