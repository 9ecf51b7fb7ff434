# SPDX-License-Identifier: Apache-2.0
"""The otel-agents receiver: a spec-exact, durable, drop-in OTLP endpoint that analyses agent
traces and forwards everything to your backends.

Embedded use (tests, the demo)::

    from otel_agents.receiver import Receiver, load_config

    receiver = Receiver(load_config(None, overrides={...}))
    receiver.start()
    ...
    receiver.stop()
"""

from __future__ import annotations

__all__: list[str] = []  # each block below extends this list

# --- transport (gRPC/HTTP servers, validation, admission, admin) ---
from otel_agents.receiver._admin import AdminServer, HealthCheck
from otel_agents.receiver._admission import AdmissionController
from otel_agents.receiver._auth import BearerAuthenticator
from otel_agents.receiver._common import (
    STATUS_MAP,
    ExportHandler,
    Ingestor,
    NoopIngestor,
    Outcome,
    Signal,
    serve_noop,
)
from otel_agents.receiver._grpc import GrpcServer
from otel_agents.receiver._http import HttpServer
from otel_agents.receiver._telemetry import ReceiverTelemetry
from otel_agents.receiver._transport_config import (
    AdminConfig,
    AdmissionConfig,
    AuthConfig,
    GrpcConfig,
    HttpConfig,
    LimitsConfig,
    TlsConfig,
)
from otel_agents.receiver._validate import ValidationResult, validate

__all__ += [
    "STATUS_MAP",
    "AdminConfig",
    "AdminServer",
    "AdmissionConfig",
    "AdmissionController",
    "AuthConfig",
    "BearerAuthenticator",
    "ExportHandler",
    "GrpcConfig",
    "GrpcServer",
    "HealthCheck",
    "HttpConfig",
    "HttpServer",
    "Ingestor",
    "LimitsConfig",
    "NoopIngestor",
    "Outcome",
    "ReceiverTelemetry",
    "Signal",
    "TlsConfig",
    "ValidationResult",
    "serve_noop",
    "validate",
]
# --- end transport ---

# --- spool, pipeline, config, Receiver ---
from otel_agents.receiver._config import ReceiverConfig, load_config  # noqa: E402
from otel_agents.receiver._serve import Receiver  # noqa: E402

__all__ += ["Receiver", "ReceiverConfig", "load_config"]

# --- end spool ---
