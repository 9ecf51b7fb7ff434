# SPDX-License-Identifier: Apache-2.0
"""The ``otlp`` exporter: forwards spooled OTLP requests to a backend (Jaeger, Tempo, a Collector).

Each destination has its own worker thread and its own spool cursor, so a slow or dead backend
only delays itself (OTLP spec: multi-destination clients keep one queue and retry loop per
destination).  The worker sends the stored request bytes unchanged — several consecutive stored
requests of one signal are concatenated, which the protobuf wire format defines as merging their
``resource_*`` lists — and re-encodes only when redaction changed something.

Outcome handling follows the OTLP specification and the Collector's ``otlpexporter``:

* retryable: gRPC ``CANCELLED``, ``DEADLINE_EXCEEDED``, ``ABORTED``, ``OUT_OF_RANGE``,
  ``UNAVAILABLE``, ``DATA_LOSS``; HTTP 429, 502, 503, 504 and connection failures.  The wait is
  ``max(backoff, server delay)`` where the server delay comes from ``google.rpc.RetryInfo`` (rich
  status ``grpc-status-details-bin`` or the ``google.rpc.retryinfo-bin`` trailer) or
  ``Retry-After`` (seconds or HTTP-date); backoff is exponential with jitter (Collector defaults:
  5 s × 1.5 up to 30 s, ±50 %).
* ``RESOURCE_EXHAUSTED`` with RetryInfo is throttling (retryable).  Without RetryInfo the spec calls
  it permanent, but Tempo 2.x and others use it for recoverable rate limits; since our data is
  safe in the spool we retry it with the capped backoff while the spool has room, and count it
  (``reason="resource_exhausted"`` on ``retries``) — a documented deviation.
* a refusal for size (HTTP 413, or ``RESOURCE_EXHAUSTED`` without RetryInfo whose message says the
  message is too large — gRPC servers default to 4 MiB) halves the request until it fits; a
  single item that still does not fit is dropped as ``too_large``.  Requests are also split up
  front to ``max_batch_bytes``.
* everything else (``INVALID_ARGUMENT``, HTTP 400, ...) is permanent: dropped after one attempt and
  counted in ``otel_agents_forwarder_failed_items_total{reason}``.
* ``partial_success.rejected_*`` are counted as failed with ``reason="partial_success"``; the rest
  of the request counts as sent.  A partial success is never retried.

The cursor advances only after the outcome is final, so a crash resends at most the batch in
flight (at-least-once).
"""

from __future__ import annotations

import dataclasses
import email.utils
import http.client
import logging
import random
import ssl
import threading
import time
import urllib.parse
import weakref
import zlib
from collections.abc import Mapping
from typing import Any, Literal

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from otel_agents import semconv as sc
from otel_agents._component import Component, Host
from otel_agents._configtypes import DURATION, SIZE

from ._redact import RedactionConfig, Redactor

__all__ = [
    "DEFAULT_HTTP_GZIP_LEVEL",
    "CompressionParams",
    "OtlpExporterConfig",
    "OtlpForwarder",
    "RetryConfig",
    "create_otlp_exporter",
]

_log = logging.getLogger(__name__)

GRPC_METHODS = {
    "traces": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    "logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
}
HTTP_PATHS = {"traces": "/v1/traces", "metrics": "/v1/metrics", "logs": "/v1/logs"}
_RESPONSES: dict[str, Any] = {
    "traces": (ExportTraceServiceResponse, "rejected_spans"),
    "metrics": (ExportMetricsServiceResponse, "rejected_data_points"),
    "logs": (ExportLogsServiceResponse, "rejected_log_records"),
}
_RETRYABLE_GRPC = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
_RETRYABLE_HTTP = frozenset({429, 502, 503, 504})
_RETRY_INFO_TRAILER = "google.rpc.retryinfo-bin"
_STATUS_DETAILS_TRAILER = "grpc-status-details-bin"


@dataclasses.dataclass(frozen=True)
class RetryConfig:
    """``retry_on_failure`` (Collector ``configretry`` names and defaults).

    Attributes:
        enabled: retry retryable failures; when off they are dropped and counted.
        initial_interval: first wait.
        multiplier: growth of the wait per attempt.
        max_interval: cap of one wait.
        randomization_factor: each wait is ``interval × (1 ± factor)``.
        max_elapsed_time: give a batch up after this long (counted as ``retries_exhausted``);
            ``0`` (default) = keep retrying: the spool, not the retry loop, bounds what waits.
    """

    enabled: bool = True
    initial_interval: float = dataclasses.field(default=5.0, metadata=DURATION)
    multiplier: float = 1.5
    max_interval: float = dataclasses.field(default=30.0, metadata=DURATION)
    randomization_factor: float = 0.5
    max_elapsed_time: float = dataclasses.field(default=0.0, metadata=DURATION)

    def validate(self) -> list[str]:
        """Key paths with a problem, for ``decode``."""
        problems = []
        if self.initial_interval <= 0:
            problems.append("initial_interval: must be positive")
        if self.multiplier < 1:
            problems.append("multiplier: must be at least 1")
        if self.max_interval < self.initial_interval:
            problems.append("max_interval: must be >= initial_interval")
        if not 0 <= self.randomization_factor < 1:
            problems.append("randomization_factor: must be in [0, 1)")
        return problems


#: gzip level for OTLP/HTTP destinations when ``compression_params.level`` is not set.  Level 1
#: (zlib's fastest) on a 512-span agent request
#: (199 KB): 0.62 ms for a 5.9x smaller body; level 6 (zlib's default, what grpcio uses): 1.37 ms
#: for 6.9x.  On loopback and LAN links the CPU is the scarcer resource.
DEFAULT_HTTP_GZIP_LEVEL = 1


@dataclasses.dataclass(frozen=True)
class CompressionParams:
    """``compression_params`` (Collector ``configcompression`` name).

    Attributes:
        level: gzip level 1 (fastest) to 9 (smallest) for ``http/protobuf`` destinations;
            unset = :data:`DEFAULT_HTTP_GZIP_LEVEL`.  gRPC destinations cannot take one: grpcio
            compresses inside its C core with ``deflateInit2(Z_DEFAULT_COMPRESSION)`` (level 6,
            ``src/core/lib/compression/message_compress.cc``), and its
            ``grpc.default_compression_level`` channel argument picks an *algorithm*
            (none/deflate/gzip), not a deflate level.  Sending a body we compressed ourselves
            (still ``grpc-encoding: gzip`` with the message's compressed flag) needs the core's
            ``GRPC_WRITE_INTERNAL_COMPRESS`` write flag, which the compression filter honours
            by not compressing again; grpcio's Python layer never passes a write flag
            (``cygrpc.SendMessageOperation(serialized_request, _EMPTY_FLAGS)`` in
            ``grpc/_channel.py``, grpcio 1.85), so reaching it would mean driving private
            ``cygrpc`` calls.  Where gzip CPU matters, forward over ``http/protobuf`` (level 1:
            0.64 ms vs 1.37 ms per 512-span request).
    """

    level: int | None = None

    def validate(self) -> list[str]:
        """Key paths with a problem, for ``decode``."""
        if self.level is not None and not 1 <= self.level <= 9:
            return [f"level: gzip levels are 1..9, got {self.level}"]
        return []


@dataclasses.dataclass(frozen=True)
class OtlpExporterConfig:
    """``exporters.otlp[/name]``: one forwarding destination.

    Attributes:
        endpoint: ``grpc://host:port`` / ``host:port`` (gRPC, plaintext), ``https://host:port``
            (TLS), or for ``http/protobuf`` the base URL to which ``/v1/traces`` etc. are added.
        protocol: ``grpc`` or ``http/protobuf``.
        compression: ``gzip`` (Collector default) or ``none``.
        compression_params: ``level`` of gzip (``http/protobuf`` destinations only).
        timeout: per attempt.
        headers: extra request headers / gRPC metadata (e.g. ``authorization``).
        ca_file: PEM bundle to verify a TLS endpoint (default: system roots).
        signals: which signals go to this destination (Phoenix, Tempo, Jaeger take traces only).
        max_batch_bytes: upper bound of one export request built from spooled requests.
        max_batch_requests: upper bound of spooled requests merged into one export request.
        flush_timeout: how long after its oldest spooled request a batch may wait for more to
            merge before it is sent (Collector batching's ``flush_timeout``), when the forwarder
            finds fewer than ``max_batch_requests`` and under half of ``max_batch_bytes``
            waiting; 0 sends at once.  Only forwarding waits: senders were acknowledged at the
            spool commit.
        retry_on_failure: retry/backoff policy.
        redaction: secrets / content redaction applied before sending.
    """

    endpoint: str = ""
    protocol: Literal["grpc", "http/protobuf"] = "grpc"
    compression: Literal["gzip", "none"] = "gzip"
    compression_params: CompressionParams = dataclasses.field(default_factory=CompressionParams)
    timeout: float = dataclasses.field(default=5.0, metadata=DURATION)
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    ca_file: str | None = None
    signals: tuple[Literal["traces", "metrics", "logs"], ...] = ("traces", "metrics", "logs")
    max_batch_bytes: int = dataclasses.field(default=4 << 20, metadata=SIZE)
    max_batch_requests: int = 64
    flush_timeout: float = dataclasses.field(default=0.02, metadata=DURATION)
    retry_on_failure: RetryConfig = dataclasses.field(default_factory=RetryConfig)
    redaction: RedactionConfig = dataclasses.field(default_factory=RedactionConfig)

    def validate(self) -> list[str]:
        """Key paths with a problem, for ``decode``."""
        problems = []
        if not self.endpoint:
            problems.append("endpoint: must be set (e.g. grpc://127.0.0.1:4317)")
        else:
            try:
                _target(self)
            except ValueError as exc:
                problems.append(f"endpoint: {exc}")
        if self.compression_params.level is not None and self.protocol == "grpc":
            problems.append(
                "compression_params: a gzip level applies to http/protobuf destinations only; "
                "grpcio compresses at zlib's default level 6 and offers no setting for it"
            )
        if self.timeout <= 0:
            problems.append("timeout: must be positive")
        if self.max_batch_requests < 1:
            problems.append("max_batch_requests: must be at least 1")
        if not 0 <= self.flush_timeout <= 10:
            problems.append("flush_timeout: must be between 0 and 10 seconds")
        if not self.signals:
            problems.append("signals: must list at least one signal")
        return problems


def _target(config: OtlpExporterConfig) -> tuple[str, str, int, str]:
    """``(scheme, host, port, base path)`` of the endpoint."""
    endpoint = config.endpoint
    if "://" not in endpoint:
        endpoint = ("grpc://" if config.protocol == "grpc" else "http://") + endpoint
    url = urllib.parse.urlsplit(endpoint)
    if url.scheme not in ("grpc", "http", "https"):
        raise ValueError(f"unsupported scheme {url.scheme!r} (grpc, http, https)")
    if not url.hostname:
        raise ValueError(f"no host in {config.endpoint!r}")
    try:
        port = url.port or (
            443 if url.scheme == "https" else 4317 if config.protocol == "grpc" else 4318
        )
    except ValueError as exc:
        raise ValueError(f"bad port in {config.endpoint!r}") from exc
    return url.scheme, url.hostname, port, url.path.rstrip("/")


# ---------------------------------------------------------------------------------- metrics


def _counter_name(name: str) -> str:
    # prometheus_client appends "_total" to counters itself.
    return name.removesuffix("_total")


class ForwarderMetrics:
    """The ``otel_agents_forwarder_*`` instruments, once per registry."""

    _by_registry: weakref.WeakKeyDictionary[CollectorRegistry, ForwarderMetrics] = (
        weakref.WeakKeyDictionary()
    )
    _lock = threading.Lock()

    def __init__(self, registry: CollectorRegistry) -> None:
        self.pending = Gauge(
            sc.METRIC_FORWARDER_PENDING_ITEMS,
            "Items spooled and not yet finished by the destination.",
            ["destination"],
            registry=registry,
        )
        self.sent = Counter(
            _counter_name(sc.METRIC_FORWARDER_SENT_ITEMS),
            "Items the destination accepted.",
            ["destination", "signal"],
            registry=registry,
        )
        self.failed = Counter(
            _counter_name(sc.METRIC_FORWARDER_FAILED_ITEMS),
            "Items the destination did not take, by reason (permanent code, partial_success, expired).",
            ["destination", "signal", "reason"],
            registry=registry,
        )
        self.retries = Counter(
            _counter_name(sc.METRIC_FORWARDER_RETRIES),
            "Export attempts that will be retried.",
            ["destination"],
            registry=registry,
        )
        self.latency = Histogram(
            sc.METRIC_FORWARDER_QUEUE_LATENCY,
            "Time from receipt to acceptance by the destination.",
            ["destination"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
            registry=registry,
        )
        self.redacted = Counter(
            _counter_name(sc.METRIC_FORWARDER_REDACTED_VALUES),
            "Attribute values masked or removed before forwarding.",
            ["destination"],
            registry=registry,
        )

    @classmethod
    def for_registry(cls, registry: CollectorRegistry) -> ForwarderMetrics:
        """The instruments registered on ``registry`` (created on first use)."""
        with cls._lock:
            metrics = cls._by_registry.get(registry)
            if metrics is None:
                metrics = cls._by_registry[registry] = cls(registry)
            return metrics


# ---------------------------------------------------------------------------------- senders


@dataclasses.dataclass(frozen=True)
class Outcome:
    """Result of one export attempt."""

    kind: Literal["ok", "retry", "permanent"]
    reason: str = ""
    retry_after: float | None = None
    rejected: int = 0
    message: str = ""


def _parse_ok(signal: str, body: bytes) -> Outcome:
    response_type, field = _RESPONSES[signal]
    response = response_type()
    try:
        response.ParseFromString(body)
    except DecodeError:
        return Outcome("ok")
    if response.HasField("partial_success"):
        ps = response.partial_success
        return Outcome("ok", rejected=int(getattr(ps, field)), message=ps.error_message)
    return Outcome("ok")


def _retry_info_delay(data: bytes, from_status: bool) -> float | None:
    try:
        if from_status:
            status = status_pb2.Status.FromString(data)
            for detail in status.details:
                if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                    info = error_details_pb2.RetryInfo()
                    detail.Unpack(info)
                    return float(info.retry_delay.ToTimedelta().total_seconds())
            return None
        info = error_details_pb2.RetryInfo.FromString(data)
        return float(info.retry_delay.ToTimedelta().total_seconds())
    except (DecodeError, ValueError, OverflowError):
        return None


class _GrpcSender:
    def __init__(self, config: OtlpExporterConfig) -> None:
        scheme, host, port, _ = _target(config)
        target = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
        retry = config.retry_on_failure
        options = [
            ("grpc.max_send_message_length", -1),
            ("grpc.max_receive_message_length", 4 << 20),
            # gRPC's own reconnect backoff grows to 120 s; a channel still waiting would fail
            # our retries fast long after the destination came back. Keep it within our policy.
            ("grpc.initial_reconnect_backoff_ms", max(100, int(retry.initial_interval * 1000))),
            ("grpc.min_reconnect_backoff_ms", max(100, int(retry.initial_interval * 1000))),
            ("grpc.max_reconnect_backoff_ms", max(100, int(retry.max_interval * 1000))),
        ]
        if scheme == "https":
            roots = None
            if config.ca_file:
                with open(config.ca_file, "rb") as f:
                    roots = f.read()
            self._channel = grpc.secure_channel(
                target, grpc.ssl_channel_credentials(root_certificates=roots), options=options
            )
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._calls = {
            signal: self._channel.unary_unary(method) for signal, method in GRPC_METHODS.items()
        }
        self._metadata = tuple((k.lower(), v) for k, v in config.headers.items())
        self._compression = grpc.Compression.Gzip if config.compression == "gzip" else None
        self._timeout = config.timeout

    def send(self, signal: str, payload: bytes) -> Outcome:
        try:
            body = self._calls[signal](
                payload,
                timeout=self._timeout,
                metadata=self._metadata or None,
                compression=self._compression,
            )
        except grpc.RpcError as err:
            return self._failure(err)
        return _parse_ok(signal, body)

    @staticmethod
    def _failure(err: grpc.RpcError) -> Outcome:
        code: grpc.StatusCode = err.code()  # type: ignore[attr-defined]
        details = str(err.details() or "")  # type: ignore[attr-defined]
        delay = None
        for key, value in err.trailing_metadata() or ():  # type: ignore[attr-defined]
            if key == _STATUS_DETAILS_TRAILER and isinstance(value, bytes):
                delay = _retry_info_delay(value, True) if delay is None else delay
            elif key == _RETRY_INFO_TRAILER and isinstance(value, bytes):
                delay = _retry_info_delay(value, False)
        reason = code.name.lower()
        if code in _RETRYABLE_GRPC:
            return Outcome("retry", reason, delay, message=details)
        if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
            # With RetryInfo: throttling. Without: see the module docstring (retried, counted).
            return Outcome("retry", reason, delay, message=details)
        return Outcome("permanent", reason, message=details)

    def close(self) -> None:
        self._channel.close()


class _HttpSender:
    def __init__(self, config: OtlpExporterConfig) -> None:
        scheme, host, port, base = _target(config)
        self._https = scheme == "https"
        self._host, self._port, self._base = host, port, base
        self._context = ssl.create_default_context(cafile=config.ca_file) if self._https else None
        self._timeout = config.timeout
        self._gzip = config.compression == "gzip"
        level = config.compression_params.level
        self._level = DEFAULT_HTTP_GZIP_LEVEL if level is None else level
        self._headers = {"Content-Type": "application/x-protobuf", **config.headers}
        if self._gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._https:
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self._timeout, context=self._context
                )
            else:
                self._conn = http.client.HTTPConnection(
                    self._host, self._port, timeout=self._timeout
                )
        return self._conn

    def send(self, signal: str, payload: bytes) -> Outcome:
        body = payload
        if self._gzip:
            # A gzip member (wbits 16 + 15) in one call; gzip.compress adds a Python wrapper.
            deflate = zlib.compressobj(self._level, zlib.DEFLATED, 31)
            body = deflate.compress(payload) + deflate.flush()
        for attempt in (1, 2):
            reused = self._conn is not None
            try:
                conn = self._connection()
                conn.request(
                    "POST", self._base + HTTP_PATHS[signal], body=body, headers=self._headers
                )
                response = conn.getresponse()
                data = response.read()
                status = response.status
                retry_after = response.getheader("Retry-After")
                if response.getheader("Connection", "").lower() == "close":
                    self.close()
                break
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if reused and attempt == 1 and not isinstance(exc, TimeoutError):
                    # The server closed an idle keep-alive connection: not a failure of the
                    # destination, so try once more at once on a fresh connection.
                    continue
                return Outcome("retry", "connection", message=str(exc) or type(exc).__name__)
        if 200 <= status < 300:
            return _parse_ok(signal, data)
        message = _status_message(data)
        if status in _RETRYABLE_HTTP:
            return Outcome(
                "retry", f"http_{status}", _parse_retry_after(retry_after), message=message
            )
        return Outcome("permanent", f"http_{status}", message=message)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


_SIZE_WORDS = ("larger than max", "too large", "message size", "exceeds the limit")


def _too_large(outcome: Outcome) -> bool:
    """The destination refused the request for its size (HTTP 413, gRPC RESOURCE_EXHAUSTED
    without RetryInfo saying so)."""
    if outcome.reason == "http_413":
        return True
    if outcome.reason != "resource_exhausted" or outcome.retry_after is not None:
        return False
    message = outcome.message.lower()
    return any(word in message for word in _SIZE_WORDS)


def _status_message(data: bytes) -> str:
    try:
        return str(status_pb2.Status.FromString(data).message)
    except DecodeError:
        return data[:200].decode("utf-8", "replace")


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# ---------------------------------------------------------------------------------- component


class OtlpForwarder(Component):
    """Forwards the spool to one OTLP destination on its own thread (see module docstring).

    Args:
        config: destination settings.
        component_id: the ``type[/name]`` ID; also the spool cursor name.
    """

    def __init__(self, config: OtlpExporterConfig, component_id: str) -> None:
        self.config = config
        self.component_id = component_id
        self.cursor_name = component_id
        self._redactor = Redactor(config.redaction)
        self._stop = threading.Event()
        self._drain_deadline = 0.0
        self._thread: threading.Thread | None = None
        self._cursor: Any = None
        self._metrics: ForwarderMetrics | None = None
        self._clean_after: int | None = None
        self._rng = random.Random()
        self.attempts = 0

    def start(self, host: Host) -> None:
        """Open this destination's spool cursor and start the worker thread."""
        from otel_agents.receiver._spool import SpoolHost

        if not isinstance(host, SpoolHost):
            _log.error("%s: the host has no spool; nothing will be forwarded", self.component_id)
            return
        self._cursor = host.spool_cursor(self.cursor_name)
        self._metrics = ForwarderMetrics.for_registry(host.metrics_registry)
        # The pipeline masks secrets before storage with the default rules; when ours are the
        # same, rows it stored are already clean and the pre-check (a scan of every byte) would
        # only find masked keys and change nothing.  Rows from before this process started and
        # receiver-made (internal) rows are checked as usual.
        after = getattr(host, "secrets_redacted_after", None)
        self._clean_after = after if self.config.redaction == RedactionConfig() else None
        self._sender = (
            _GrpcSender(self.config) if self.config.protocol == "grpc" else _HttpSender(self.config)
        )
        self._thread = threading.Thread(
            target=self._run, name=f"otel-agents forwarder {self.component_id}", daemon=True
        )
        self._thread.start()

    def tick(self, now: float) -> None:
        """Refresh the pending gauge and count items dropped by spool retention."""
        if self._cursor is None or self._metrics is None:
            return
        _, items = self._cursor.pending()
        self._metrics.pending.labels(self.component_id).set(items)
        expired = self._cursor.spool.take_expired(self.cursor_name)
        if expired:
            self._metrics.failed.labels(self.component_id, "any", "expired").inc(expired)

    def drain(self, timeout: float) -> None:
        """Ask the worker to stop once the spool is empty for it or ``timeout`` has passed."""
        self._drain_deadline = time.monotonic() + timeout
        self._stop.set()
        if self._cursor is not None:
            self._cursor.spool.wake()

    def shutdown(self) -> None:
        """Stop (after :meth:`drain`, if it was called) and close the connection."""
        if not self._stop.is_set():
            self.drain(0.0)
        if self._thread is not None:
            self._thread.join(
                max(0.0, self._drain_deadline - time.monotonic()) + self.config.timeout + 1
            )
            self._sender.close()

    def _stopping(self) -> bool:
        return self._stop.is_set() and time.monotonic() >= self._drain_deadline

    def _read(self) -> list[Any]:
        config = self.config
        cursor = self._cursor

        def read() -> list[Any]:
            rows: list[Any] = cursor.read(
                max_rows=config.max_batch_requests,
                max_bytes=config.max_batch_bytes,
                same_signal=True,
            )
            return rows

        rows = read()
        if (
            not rows
            or config.flush_timeout <= 0
            or self._stop.is_set()
            or len(rows) >= config.max_batch_requests
            or sum(len(r.payload) for r in rows) * 2 >= config.max_batch_bytes
        ):
            return rows
        # A small batch waits for more, up to flush_timeout after its oldest request: each
        # export call costs a fixed ~0.1-0.2 ms of CPU (the gRPC call's hand-offs, the ack),
        # which one request per call paid in full with 1-4 senders.  One sleep, not a wake-up
        # per commit: re-reading the spool on every commit cost more than it saved.  Re-reading
        # returns the same rows first (nothing is acked yet), from the spool's memory.
        wait = rows[0].received_at + config.flush_timeout - time.time()
        if wait > 0:
            self._stop.wait(min(wait, config.flush_timeout))
            rows = read()
        return rows

    def _run(self) -> None:
        cursor = self._cursor
        while not self._stopping():
            try:
                rows = self._read()
            except Exception:  # the worker must survive anything; data stays spooled
                _log.exception("%s: reading the spool failed", self.component_id)
                self._stop.wait(1.0)
                continue
            if not rows:
                if self._stop.is_set():
                    return  # drained
                cursor.wait(0.5)
                continue
            try:
                self._forward(rows)
            except Exception:
                _log.exception("%s: forwarding failed unexpectedly; will retry", self.component_id)
                self._stop.wait(1.0)

    def _forward(self, rows: list[Any]) -> None:
        cursor, metrics = self._cursor, self._metrics
        assert metrics is not None
        signal = rows[0].signal
        last = rows[-1].seq
        items = sum(r.items for r in rows)
        if signal not in self.config.signals:
            cursor.ack(last)
            return
        payload = rows[0].payload if len(rows) == 1 else b"".join(r.payload for r in rows)
        clean = self._clean_after is not None and rows[0].seq > self._clean_after
        if not (clean and not any(r.internal for r in rows)):
            payload, redacted = self._redactor.apply(signal, payload)
            if redacted:
                metrics.redacted.labels(self.component_id).inc(redacted)
        chunks = [(payload, items)]
        if len(payload) > self.config.max_batch_bytes:
            # One spooled request larger than the destination takes (OTLP allows 64 MiB in,
            # gRPC servers default to 4 MiB): split it instead of retrying it forever.
            chunks = split_request(signal, payload, self.config.max_batch_bytes) or chunks
        for chunk, chunk_items in chunks:
            if not self._send_with_retry(signal, chunk, chunk_items):
                return  # stopping: not acked, sent again after restart
        now = time.time()
        for r in rows:
            metrics.latency.labels(self.component_id).observe(max(0.0, now - r.received_at))
        cursor.ack(last)

    def _send_with_retry(self, signal: str, payload: bytes, items: int) -> bool:
        """Send until the outcome is final (sent, permanent, given up); False when stopping."""
        metrics = self._metrics
        assert metrics is not None
        retry = self.config.retry_on_failure
        interval = retry.initial_interval
        started = time.monotonic()
        while True:
            self.attempts += 1
            outcome = self._sender.send(signal, payload)
            if outcome.kind == "ok":
                metrics.sent.labels(self.component_id, signal).inc(max(0, items - outcome.rejected))
                if outcome.rejected:
                    metrics.failed.labels(self.component_id, signal, "partial_success").inc(
                        outcome.rejected
                    )
                    _log.warning(
                        "%s: destination rejected %d %s: %s",
                        self.component_id,
                        outcome.rejected,
                        signal,
                        outcome.message,
                    )
                return True
            if _too_large(outcome):
                # The destination's size limit is below ours (gRPC servers default to 4 MiB,
                # gateways answer 413/429): halve until it fits rather than retry in vain.
                halves = split_request(signal, payload, max(1, len(payload) // 2))
                if len(halves) > 1:
                    _log.info(
                        "%s: request of %d bytes too large for the destination; splitting",
                        self.component_id,
                        len(payload),
                    )
                    return all(self._send_with_retry(signal, c, n) for c, n in halves)
                outcome = dataclasses.replace(outcome, kind="permanent", reason="too_large")
            if outcome.kind == "permanent" or not retry.enabled:
                metrics.failed.labels(self.component_id, signal, outcome.reason).inc(items)
                _log.warning(
                    "%s: dropping %d %s after a permanent error (%s): %s",
                    self.component_id,
                    items,
                    signal,
                    outcome.reason,
                    outcome.message,
                )
                return True
            if retry.max_elapsed_time and time.monotonic() - started > retry.max_elapsed_time:
                metrics.failed.labels(self.component_id, signal, "retries_exhausted").inc(items)
                _log.warning(
                    "%s: dropping %d %s: still failing after %.0fs (%s)",
                    self.component_id,
                    items,
                    signal,
                    retry.max_elapsed_time,
                    outcome.reason,
                )
                return True
            metrics.retries.labels(self.component_id).inc()
            jitter = 1 + retry.randomization_factor * (2 * self._rng.random() - 1)
            delay = interval * jitter
            if outcome.retry_after is not None:
                delay = max(delay, outcome.retry_after)
            interval = min(interval * retry.multiplier, retry.max_interval)
            _log.info(
                "%s: %s export failed (%s), retrying in %.2fs",
                self.component_id,
                signal,
                outcome.reason,
                delay,
            )
            if self._sleep(delay):
                return False

    def _sleep(self, delay: float) -> bool:
        """Wait ``delay`` seconds; True when the worker must stop instead."""
        end = time.monotonic() + delay
        while (remaining := end - time.monotonic()) > 0:
            if self._stopping():
                return True
            if self._stop.is_set():  # draining: keep the backoff, but respect the deadline
                time.sleep(min(remaining, max(0.01, self._drain_deadline - time.monotonic())))
            else:
                self._stop.wait(remaining)
        return self._stopping()


_LEVELS = {
    "traces": ("resource_spans", "scope_spans", "spans"),
    "logs": ("resource_logs", "scope_logs", "log_records"),
    "metrics": ("resource_metrics", "scope_metrics", "metrics"),
}


def _leaf_items(signal: str, leaf: Any) -> int:
    if signal != "metrics":
        return 1
    kind = leaf.WhichOneof("data")
    return len(getattr(leaf, kind).data_points) if kind else 0


def split_request(signal: str, payload: bytes, limit: int) -> list[tuple[bytes, int]]:
    """Split a serialized request into requests of at most about ``limit`` bytes each.

    Spans / log records / metrics are regrouped under copies of their resource and scope, in
    order.  A single item larger than ``limit`` travels alone.  Returns ``[]`` when the
    payload does not parse (the caller then sends it whole).
    """
    from otel_agents.exporters._redact import _REQUEST_TYPES

    request_type = _REQUEST_TYPES[signal]
    try:
        request = request_type.FromString(payload)
    except DecodeError:
        return []
    top, mid, leaf_field = _LEVELS[signal]
    chunks: list[tuple[bytes, int]] = []
    current = request_type()
    size = items = 0

    def flush() -> None:
        nonlocal current, size, items
        if size:
            chunks.append((current.SerializeToString(), items))
        current, size, items = request_type(), 0, 0

    for outer in getattr(request, top):
        for inner in getattr(outer, mid):
            target_inner = None
            for leaf in getattr(inner, leaf_field):
                leaf_size = leaf.ByteSize() + 8
                if size and size + leaf_size > limit:
                    flush()
                    target_inner = None
                if target_inner is None:
                    target_outer = getattr(current, top).add()
                    target_outer.resource.CopyFrom(outer.resource)
                    target_outer.schema_url = outer.schema_url
                    target_inner = getattr(target_outer, mid).add()
                    target_inner.scope.CopyFrom(inner.scope)
                    target_inner.schema_url = inner.schema_url
                    size += target_outer.resource.ByteSize() + target_inner.scope.ByteSize() + 16
                getattr(target_inner, leaf_field).add().CopyFrom(leaf)
                size += leaf_size
                items += _leaf_items(signal, leaf)
    flush()
    return chunks


def create_otlp_exporter(config: OtlpExporterConfig, name: str) -> Component:
    """Factory function for ``otlp`` / ``otlp/<name>``."""
    return OtlpForwarder(config, f"otlp/{name}" if name else "otlp")
