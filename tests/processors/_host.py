# SPDX-License-Identifier: Apache-2.0
"""A small real Host for driving analysis components in tests (manual receiver clock)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from otel_agents._component import ApiHandler, ApiResponse, Finding, FindingListener


class TestHost:
    """Implements ``otel_agents._component.Host`` with an injectable clock."""

    __test__ = False  # not a pytest class

    def __init__(self, data_dir: Path, *, now: float = 1_700_000_000.0) -> None:
        self._data_dir = data_dir
        self.clock = now
        self.findings: list[Finding] = []
        self.logs: list[ExportLogsServiceRequest] = []
        self.routes: dict[str, ApiHandler] = {}
        self._listeners: list[FindingListener] = []
        self.registry = CollectorRegistry()

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    @property
    def pricebook(self) -> Any:
        return None

    def now(self) -> float:
        return self.clock

    def emit_finding(self, finding: Finding) -> None:
        self.findings.append(finding)
        for listener in self._listeners:
            listener(finding)

    def subscribe_findings(self, listener: FindingListener) -> None:
        self._listeners.append(listener)

    def export_logs(self, request: ExportLogsServiceRequest) -> None:
        self.logs.append(request)

    def register_api(self, path: str, handler: ApiHandler) -> None:
        if path in self.routes:
            raise ValueError(f"route {path} registered twice")
        self.routes[path] = handler

    @property
    def metrics_registry(self) -> Any:
        return self.registry

    # helpers -------------------------------------------------------------------------------

    def get(self, path: str, query: Mapping[str, list[str]] | None = None) -> ApiResponse:
        """Call a registered API route with GET."""
        return self.routes[path]("GET", dict(query or {}), None)

    def exposition(self) -> str:
        """The Prometheus text exposition of the registry."""
        return generate_latest(self.registry).decode()
