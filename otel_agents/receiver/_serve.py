# SPDX-License-Identifier: Apache-2.0
"""The receiver process: :class:`Receiver` (embeddable) and the ``serve`` / ``check-config``
commands.

::

    otel-agents serve [--config FILE] [--grpc-endpoint HOST:PORT] [--http-endpoint HOST:PORT]
                      [--admin-endpoint HOST:PORT] [--data-dir DIR] [--forward URL ...]
                      [--no-analysis] [--set KEY.PATH=VALUE ...] [--ports-file FILE]
                      [--workers N]
    otel-agents check-config FILE

Flags override the YAML; ``--set`` reaches every other field (``--set storage.max_bytes=2GiB``,
values parsed as YAML), like ``otelcol --set``.  Port 0 binds a free port; ``--ports-file`` writes
the bound ports as JSON once the receiver is serving.  SIGTERM / SIGINT stop it cleanly: the
servers stop accepting, in-flight requests finish (and are committed), forwarders get
``pipeline.drain_timeout`` to send what is spooled, and the spool is checkpointed.
``--workers N`` runs N ingest processes on the same ports (``_workers.py``; needs
``--no-analysis``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from otel_agents._errors import ConfigError
from otel_agents.receiver._config import ReceiverConfig, forward_exporter, load_config
from otel_agents.receiver._pipeline import Pipeline

__all__ = ["Receiver", "main_check_config", "main_serve"]

_log = logging.getLogger(__name__)


class Receiver:
    """The whole receiver in-process: spool, pipeline, OTLP servers and admin endpoint.

    Args:
        config: the configuration (``load_config(...)``); defaults if omitted.
        analysis: run the analysis processors (``--no-analysis`` turns it off).
        registry: Prometheus registry for all self-telemetry (a new one if omitted).

    Example::

        receiver = Receiver(load_config(None, {"storage.data_dir": "/tmp/r",
                                               "receivers.otlp.protocols.grpc.endpoint": "127.0.0.1:0"}))
        receiver.start()
        print(receiver.grpc_endpoint)
        receiver.stop()
    """

    def __init__(
        self,
        config: ReceiverConfig | None = None,
        *,
        analysis: bool = True,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.config = config if config is not None else load_config(None)
        self.analysis = analysis
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.pipeline: Pipeline | None = None
        self._servers: list[Any] = []
        self._grpc: Any = None
        self._http: Any = None
        self._admin: Any = None
        self._lock = threading.Lock()
        self._running = False

    # ------------------------------------------------------------------ addresses

    @property
    def grpc_port(self) -> int:
        """Bound OTLP/gRPC port (0 when gRPC is off or not started)."""
        return int(getattr(self._grpc, "port", 0) or 0)

    @property
    def http_port(self) -> int:
        """Bound OTLP/HTTP port (0 when HTTP is off or not started)."""
        return int(getattr(self._http, "port", 0) or 0)

    @property
    def admin_port(self) -> int:
        """Bound admin port (0 when the admin endpoint is off or not started)."""
        return int(getattr(self._admin, "port", 0) or 0)

    def _host(self, endpoint: str) -> str:
        host = endpoint.rpartition(":")[0].strip("[]")
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        return f"[{host}]" if ":" in host else host

    @property
    def grpc_endpoint(self) -> str:
        """``host:port`` to give an OTLP/gRPC exporter."""
        return f"{self._host(self.config.grpc.endpoint)}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """Base URL to give an OTLP/HTTP exporter (``/v1/traces`` etc. are appended)."""
        return f"http://{self._host(self.config.http.endpoint)}:{self.http_port}"

    @property
    def admin_url(self) -> str:
        """Base URL of the admin endpoint."""
        return f"http://{self._host(self.config.admin.endpoint)}:{self.admin_port}"

    def ports(self) -> dict[str, int]:
        """Bound ports by server name."""
        return {"grpc": self.grpc_port, "http": self.http_port, "admin": self.admin_port}

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Open the spool, start the components, then the admin and OTLP servers.

        Raises:
            ConfigError: a port cannot be bound, TLS files are bad, or exposure is refused.
        """
        with self._lock:
            if self._running:
                return
            try:
                self._start()
            except BaseException:
                self._stop(grace=0.0, drain_timeout=0.0)
                raise
            self._running = True

    def _start(self) -> None:
        from otel_agents.receiver._admission import AdmissionController
        from otel_agents.receiver._common import ExportHandler
        from otel_agents.receiver._telemetry import ReceiverTelemetry

        cfg = self.config
        self.pipeline = Pipeline(cfg, registry=self.registry, analysis=self.analysis)
        if cfg.admin.enabled:
            from otel_agents.receiver._admin import AdminServer

            self._admin = AdminServer(cfg.admin, self.registry, health=self.pipeline.health)
            self.pipeline.api_sink = self._admin.register_api
        self.pipeline.start()
        handler = ExportHandler(
            self.pipeline,
            cfg.limits,
            AdmissionController(cfg.admission),
            ReceiverTelemetry(self.registry),
        )
        if self._admin is not None:
            self._admin.start()
            self._servers.append(self._admin)
        if cfg.grpc.enabled:
            from otel_agents.receiver._grpc import GrpcServer

            self._grpc = GrpcServer(cfg.grpc, handler)
            self._grpc.start()
            self._servers.append(self._grpc)
        if cfg.http.enabled:
            from otel_agents.receiver._http import HttpServer

            self._http = HttpServer(cfg.http, handler)
            self._http.start()
            self._servers.append(self._http)

    def stop(self, grace: float = 5.0, drain_timeout: float | None = None) -> None:
        """Stop accepting, finish in-flight requests, drain forwarders, close the spool.

        Args:
            grace: how long in-flight OTLP requests may take to finish.
            drain_timeout: how long forwarders may keep sending (default:
                ``pipeline.drain_timeout``).
        """
        with self._lock:
            if not self._running:
                return
            self._running = False
            self._stop(grace, drain_timeout)

    def _stop(self, grace: float, drain_timeout: float | None) -> None:
        # OTLP servers first (what they accepted is committed), then the pipeline, admin last so
        # /readyz answers while draining.
        for server in (self._grpc, self._http):
            if server is not None:
                try:
                    server.stop(grace)
                except Exception:
                    _log.exception("stopping %r failed", server)
        if self.pipeline is not None:
            self.pipeline.stop(drain_timeout)
        if self._admin is not None:
            try:
                self._admin.stop()
            except Exception:
                _log.exception("stopping the admin endpoint failed")
        self._servers.clear()

    def __enter__(self) -> Receiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------------- CLI


def _serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="otel-agents serve",
        description="Run the otel-agents OTLP receiver (flags override the config file).",
    )
    p.add_argument("--config", metavar="FILE", help="receiver YAML config")
    p.add_argument("--grpc-endpoint", metavar="HOST:PORT", help="OTLP/gRPC listen address")
    p.add_argument("--http-endpoint", metavar="HOST:PORT", help="OTLP/HTTP listen address")
    p.add_argument("--admin-endpoint", metavar="HOST:PORT", help="admin endpoint listen address")
    p.add_argument("--data-dir", metavar="DIR", help="spool and stores directory")
    p.add_argument(
        "--forward",
        metavar="URL",
        action="append",
        default=[],
        help="add an OTLP destination: grpc://host:port or http://host:port (repeatable)",
    )
    p.add_argument("--no-analysis", action="store_true", help="ingest and forward only")
    p.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="set any config field by dotted path, value in YAML (repeatable)",
    )
    p.add_argument("--ports-file", metavar="FILE", help="write bound ports as JSON when serving")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="ingest worker processes sharing the OTLP ports (SO_REUSEPORT); N > 1 needs "
        "--no-analysis",
    )
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return p


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The ``load_config`` overrides the ``serve`` flags stand for.

    Raises:
        ConfigError: a malformed ``--set`` or ``--forward``.
    """
    overrides: dict[str, Any] = {}
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set: expected KEY.PATH=VALUE, got {item!r}")
        try:
            overrides[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key}: invalid value: {exc}") from None
    proto = "receivers.otlp.protocols"
    if args.grpc_endpoint:
        overrides[f"{proto}.grpc.endpoint"] = args.grpc_endpoint
        overrides[f"{proto}.grpc.enabled"] = True
    if args.http_endpoint:
        overrides[f"{proto}.http.endpoint"] = args.http_endpoint
        overrides[f"{proto}.http.enabled"] = True
    if args.admin_endpoint:
        overrides["admin.endpoint"] = args.admin_endpoint
    if args.data_dir:
        overrides["storage.data_dir"] = args.data_dir
    if args.forward:
        overrides["exporters"] = dict(forward_exporter(url) for url in args.forward)
    return overrides


def main_serve(argv: Sequence[str]) -> int:
    """``otel-agents serve``; returns the exit code (0 after a clean shutdown, 2 on bad config)."""
    args = _serve_parser().parse_args(list(argv))
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = load_config(args.config, overrides_from_args(args))
        if args.workers < 1:
            raise ConfigError(f"--workers: must be at least 1, got {args.workers}")
        if args.workers > 1:
            from otel_agents.receiver._workers import main_workers

            return main_workers(args, config)
        receiver = Receiver(config, analysis=not args.no_analysis)
        stop = threading.Event()

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            _log.info("received %s, shutting down", signal.Signals(signum).name)
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        receiver.start()
    except ConfigError as exc:
        print(f"otel-agents serve: {exc}", file=sys.stderr)
        return 2
    ports = receiver.ports()
    _log.info(
        "serving: grpc=%s http=%s admin=%s data_dir=%s",
        ports["grpc"] or "off",
        ports["http"] or "off",
        ports["admin"] or "off",
        config.storage.data_dir,
    )
    if args.ports_file:
        tmp = Path(args.ports_file + ".tmp")
        tmp.write_text(json.dumps({**ports, "pid": os.getpid()}), encoding="utf-8")
        os.replace(tmp, args.ports_file)  # atomic: readers never see a partial file
    while not stop.wait(0.5):
        pass
    receiver.stop()
    _log.info("stopped")
    return 0


def _check_exposure(config: ReceiverConfig) -> None:
    """The servers' start-up exposure rule, applied at check time (no port is bound)."""
    from otel_agents.receiver._auth import check_exposure

    servers: list[tuple[str, Any]] = [
        ("receivers.otlp.protocols.grpc", config.grpc),
        ("receivers.otlp.protocols.http", config.http),
        ("admin", config.admin),
    ]
    for name, server in servers:
        if server.enabled:
            check_exposure(name, server.endpoint, server.tls, server.auth, server.insecure_public)


def main_check_config(argv: Sequence[str]) -> int:
    """``otel-agents check-config FILE``: 0 when valid, 1 with the key-path error otherwise."""
    p = argparse.ArgumentParser(prog="otel-agents check-config", description=__doc__)
    p.add_argument("file", metavar="FILE", help="receiver YAML config")
    args = p.parse_args(list(argv))
    try:
        config = load_config(args.file)
        processors = [c.id for c in config.components("processors")]
        exporters = [c.id for c in config.components("exporters")]
        _check_exposure(config)
    except ConfigError as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return 1
    print(
        f"{args.file}: OK (grpc {'on' if config.grpc.enabled else 'off'}, "
        f"http {'on' if config.http.enabled else 'off'}, processors: {', '.join(processors) or '-'}, "
        f"exporters: {', '.join(exporters) or '-'})"
    )
    return 0
