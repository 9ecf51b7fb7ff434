# SPDX-License-Identifier: Apache-2.0
"""Settings of the receiver's transport half: servers, TLS, auth, limits, admission, admin.

Frozen dataclasses decoded with :func:`otel_agents._configtypes.decode`; every field has a
default, and the defaults bind to loopback (Collector: ``localhost:4317`` / ``localhost:4318``).
``ReceiverConfig`` (``_config.py``) composes them; ``LimitsConfig`` and ``AdmissionConfig`` are
shared by the gRPC and HTTP servers.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from otel_agents._configtypes import DURATION, SIZE

__all__ = [
    "AdminConfig",
    "AdmissionConfig",
    "AuthConfig",
    "GrpcConfig",
    "HttpConfig",
    "LimitsConfig",
    "TlsConfig",
    "split_endpoint",
]

MIB = 1024 * 1024

#: upb's default message nesting limit (100) leaves room for about 47 nested
#: ``AnyValue.array_value`` levels inside a span attribute; deeper requests fail to parse as a
#: whole (measured, reliability.md B15).  The spec's SDK default depth limit is 64.
UPB_EFFECTIVE_ATTRIBUTE_DEPTH = 47


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """``"127.0.0.1:4317"`` / ``"[::1]:4317"`` → ``(host, port)``.

    Raises:
        ValueError: when the endpoint has no valid port.
    """
    host, sep, port_s = endpoint.rpartition(":")
    if not sep or not port_s.isdigit() or not host:
        raise ValueError(f"expected host:port, got {endpoint!r}")
    port = int(port_s)
    if port > 65535:
        raise ValueError(f"port out of range in {endpoint!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


def _endpoint_problems(name: str, endpoint: str) -> list[str]:
    try:
        split_endpoint(endpoint)
    except ValueError as exc:
        return [f"{name}: {exc}"]
    return []


def _below_minimum(*checks: tuple[str, int, int]) -> list[str]:
    """``"<key>: must be at least <minimum>"`` for each ``(key, value, minimum)`` below it."""
    return [f"{key}: must be at least {low}" for key, value, low in checks if value < low]


@dataclasses.dataclass(frozen=True)
class TlsConfig:
    """Server TLS (Collector ``configtls``); setting ``client_ca_file`` requires client certs (mTLS).

    The files are re-read when they change (checked at most once a second, before handshakes),
    so certificates rotate without a restart.

    Attributes:
        cert_file: PEM certificate chain of the server.
        key_file: PEM private key of the server.
        client_ca_file: PEM CA bundle; when set, clients must present a certificate it signed.
        min_version: lowest TLS version accepted (HTTP server; gRPC core negotiates 1.2+).
    """

    cert_file: str | None = None
    key_file: str | None = None
    client_ca_file: str | None = None
    min_version: Literal["1.2", "1.3"] = "1.2"

    @property
    def enabled(self) -> bool:
        """Whether TLS is configured."""
        return self.cert_file is not None

    def validate(self) -> list[str]:
        """Key paths with a problem, for ``decode``."""
        if (self.cert_file is None) != (self.key_file is None):
            return ["cert_file: cert_file and key_file must be set together"]
        if self.client_ca_file is not None and self.cert_file is None:
            return ["client_ca_file: mTLS needs cert_file and key_file too"]
        return []


@dataclasses.dataclass(frozen=True)
class AuthConfig:
    """Bearer-token authentication (Collector ``bearertokenauth``).

    Attributes:
        tokens: accepted tokens; empty together with no ``token_file`` means auth is off.
        token_file: file holding one token per line, re-read when it changes (rotation).
        scheme: the authorization scheme expected before the token.
        header: the header (HTTP) / metadata key (gRPC) carrying the credentials.
    """

    tokens: tuple[str, ...] = ()
    token_file: str | None = None
    scheme: str = "Bearer"
    header: str = "authorization"

    @property
    def enabled(self) -> bool:
        """Whether requests must carry a token."""
        return bool(self.tokens) or self.token_file is not None

    def validate(self) -> list[str]:
        """Key paths with a problem, for ``decode``."""
        if any(not t or t != t.strip() for t in self.tokens):
            return ["tokens: tokens must be non-empty and have no surrounding whitespace"]
        if not self.header or self.header != self.header.lower():
            return ["header: must be a non-empty lower-case header name"]
        return []

    def __repr__(self) -> str:  # never print secrets
        return (
            f"AuthConfig(tokens=<{len(self.tokens)} redacted>, token_file={self.token_file!r}, "
            f"scheme={self.scheme!r}, header={self.header!r})"
        )


@dataclasses.dataclass(frozen=True)
class LimitsConfig:
    """Per-request limits applied by both servers.

    Attributes:
        max_request_bytes: request size limit *after decompression* (OTLP v1.11.0: RECOMMENDED
            64 MiB); over it → ``RESOURCE_EXHAUSTED`` / HTTP 413.
        max_attributes: per span / span event / span link / log record attribute count
            (SDK ``AttributeCountLimit``, 128); extras are dropped and counted in
            ``dropped_attributes_count``; resource and scope attributes are exempt.
        max_attribute_value_length: string/bytes value length limit (bytes); longer values are
            truncated on a UTF-8 boundary.  ``None`` = unlimited (the SDK default).
        max_attribute_depth: nesting limit of array/kvlist attribute values (spec default 64);
            deeper spans / log records are rejected.  upb itself rejects a whole request at about
            47 nested array levels (``UPB_EFFECTIVE_ATTRIBUTE_DEPTH``), so on the protobuf paths
            only a lower setting has an effect.
    """

    max_request_bytes: int = dataclasses.field(default=64 * MIB, metadata=SIZE)
    max_attributes: int = 128
    max_attribute_value_length: int | None = None
    max_attribute_depth: int = 64

    def validate(self) -> list[str]:
        """Key paths with a problem, for ``decode``."""
        problems = []
        if self.max_request_bytes < 1024:
            problems.append("max_request_bytes: must be at least 1KiB")
        if self.max_attributes < 0:
            problems.append("max_attributes: must not be negative")
        if self.max_attribute_value_length is not None and self.max_attribute_value_length < 1:
            problems.append("max_attribute_value_length: must be positive (or null)")
        problems += _below_minimum(("max_attribute_depth", self.max_attribute_depth, 1))
        return problems


@dataclasses.dataclass(frozen=True)
class AdmissionConfig:
    """Overload protection: refusals are retryable (``UNAVAILABLE`` + RetryInfo / 503 + Retry-After).

    Attributes:
        max_inflight_bytes: total size of requests being processed at once; must be at least
            ``limits.max_request_bytes`` or a maximal request could never be admitted.
        memory_limit: RSS budget of the receiver (default 256 MiB, issue 8).  New requests are
            refused from 80 % of it on (the Collector memory_limiter's default 20 % spike
            headroom: requests already admitted, their decoded copies and analysis state still
            grow after the check), so RSS stays under the budget itself.  In a process started
            as the receiver (``otel-agents serve``, its workers) the budget is the process RSS;
            a receiver embedded in another Python process (``Receiver(...)`` in an application
            or a test) counts the RSS growth since it started, since the host's memory is not
            its own (see :class:`~otel_agents.receiver._admission.AdmissionController`).
            With ``serve --workers N`` every worker process holds its own RSS to it (N times
            the budget in all, plus the supervisor's ~50 MiB): set it to the total divided by
            N for a cap on the whole receiver.  ``0`` = off.
        memory_check_interval: how often RSS is sampled (not per request).
        min_retry_delay: smallest retry delay we ask clients for.
        max_retry_delay: largest retry delay (keep it well under the Python exporter's 10 s
            timeout, or its retries give up).
    """

    max_inflight_bytes: int = dataclasses.field(default=256 * MIB, metadata=SIZE)
    memory_limit: int = dataclasses.field(default=256 * MIB, metadata=SIZE)
    memory_check_interval: float = dataclasses.field(default=0.1, metadata=DURATION)
    min_retry_delay: float = dataclasses.field(default=0.5, metadata=DURATION)
    max_retry_delay: float = dataclasses.field(default=5.0, metadata=DURATION)

    def validate(self) -> list[str]:
        """Key paths with a problem, for ``decode``."""
        problems = []
        if self.max_inflight_bytes < 1024:
            problems.append("max_inflight_bytes: must be at least 1KiB")
        if self.min_retry_delay <= 0:
            problems.append("min_retry_delay: must be positive")
        if self.max_retry_delay < self.min_retry_delay:
            problems.append("max_retry_delay: must be >= min_retry_delay")
        return problems


@dataclasses.dataclass(frozen=True)
class GrpcConfig:
    """The OTLP/gRPC server.

    Attributes:
        enabled: serve OTLP/gRPC.
        endpoint: ``host:port`` to bind; port 0 picks a free port.
        max_workers: handler threads.  Handlers spend their time in upb parsing and SQLite
            commits, which release the GIL, so a few threads keep both cores busy; more only
            add GIL hand-offs (~40 futex calls per request with 8): with 16 streams of 512-span
            requests 4 threads took ~5 % less CPU per request than 8 at the same spans/s.
        max_concurrent_streams: HTTP/2 streams per connection (``grpc.max_concurrent_streams``,
            rapid-reset / stream-flood protection).
        insecure_public: allow binding a non-loopback address without TLS client certs or tokens.
        tls: server TLS / mTLS.
        auth: bearer tokens.
        reuse_port: bind with ``SO_REUSEPORT`` so several processes share the port (set by
            ``serve --workers``; off otherwise, so a second receiver cannot silently take half of
            a fixed port's connections).
    """

    enabled: bool = True
    endpoint: str = "127.0.0.1:4317"
    max_workers: int = 4
    max_concurrent_streams: int = 100
    insecure_public: bool = False
    tls: TlsConfig = TlsConfig()
    auth: AuthConfig = AuthConfig()
    reuse_port: bool = False

    def validate(self) -> list[str]:
        """Key paths with a problem, for ``decode``."""
        return _endpoint_problems("endpoint", self.endpoint) + _below_minimum(
            ("max_workers", self.max_workers, 1),
            ("max_concurrent_streams", self.max_concurrent_streams, 1),
        )


@dataclasses.dataclass(frozen=True)
class HttpConfig:
    """The OTLP/HTTP server.

    Attributes:
        enabled: serve OTLP/HTTP.
        endpoint: ``host:port`` to bind; port 0 picks a free port.
        traces_url_path: path of the traces endpoint; likewise metrics and logs.
        read_header_timeout: time allowed for the request line and headers (slowloris guard).
        read_timeout: time allowed for the whole body.
        idle_timeout: how long a keep-alive connection may wait for its next request.
        max_connections: open connections served at once (one thread each); more are answered
            503 + Retry-After and closed.
        cors_allowed_origins: origins (``https://app.example``, or ``*``) allowed to send from a
            browser (Collector ``cors.allowed_origins``); empty = no CORS headers.
        insecure_public: allow binding a non-loopback address without TLS client certs or tokens.
        tls: server TLS / mTLS.
        auth: bearer tokens.
        reuse_port: bind with ``SO_REUSEPORT`` so several processes share the port (set by
            ``serve --workers``; off otherwise, so a second receiver cannot silently take half of
            a fixed port's connections).
    """

    enabled: bool = True
    endpoint: str = "127.0.0.1:4318"
    traces_url_path: str = "/v1/traces"
    metrics_url_path: str = "/v1/metrics"
    logs_url_path: str = "/v1/logs"
    read_header_timeout: float = dataclasses.field(default=10.0, metadata=DURATION)
    read_timeout: float = dataclasses.field(default=30.0, metadata=DURATION)
    idle_timeout: float = dataclasses.field(default=60.0, metadata=DURATION)
    max_connections: int = 256
    cors_allowed_origins: tuple[str, ...] = ()
    insecure_public: bool = False
    tls: TlsConfig = TlsConfig()
    auth: AuthConfig = AuthConfig()
    reuse_port: bool = False

    def validate(self) -> list[str]:
        """Key paths with a problem, for ``decode``."""
        problems = _endpoint_problems("endpoint", self.endpoint)
        paths = (self.traces_url_path, self.metrics_url_path, self.logs_url_path)
        if any(not p.startswith("/") for p in paths):
            problems.append("traces_url_path: URL paths must start with '/'")
        if len(set(paths)) != len(paths):
            problems.append("traces_url_path: the three URL paths must differ")
        problems += _below_minimum(("max_connections", self.max_connections, 1))
        if min(self.read_header_timeout, self.read_timeout, self.idle_timeout) <= 0:
            problems.append("read_timeout: timeouts must be positive")
        return problems


@dataclasses.dataclass(frozen=True)
class AdminConfig:
    """The admin endpoint: ``/healthz``, ``/readyz``, ``/metrics``, ``/api/v1/...``, ``/``.

    Attributes:
        enabled: serve the admin endpoint.
        endpoint: ``host:port`` to bind (default loopback 4319).
        page_file: HTML file served at ``GET /`` (``None``: no page).
        insecure_public: allow binding a non-loopback address without a token.
        auth: bearer tokens required for everything but ``/healthz`` and ``/readyz``.
        tls: server TLS.
    """

    enabled: bool = True
    endpoint: str = "127.0.0.1:4319"
    page_file: str | None = None
    insecure_public: bool = False
    auth: AuthConfig = AuthConfig()
    tls: TlsConfig = TlsConfig()

    def validate(self) -> list[str]:
        """Key paths with a problem, for ``decode``."""
        return _endpoint_problems("endpoint", self.endpoint)
