# SPDX-License-Identifier: Apache-2.0
"""The protocol boundary shared by the gRPC and HTTP servers.

* :class:`Ingestor` — what the transports hand accepted data to (the spool, in production).
* :data:`STATUS_MAP` — the single table from an outcome to the gRPC status / HTTP status, each
  row citing the OTLP specification (opentelemetry-proto ``docs/specification.md`` v1.11.0).
* :class:`ExportHandler` — decode → validate → ingest → answer, transport-neutral.
* :func:`serve_noop` — the servers with a no-op ingestor, for measuring transport+validation.
* :func:`bind_and_serve` — bind a ``socketserver`` server and serve it on a daemon thread (the
  OTLP/HTTP and admin servers).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import (  # type: ignore[import-untyped]  # no stubs/py.typed
    code_pb2,
    error_details_pb2,
    status_pb2,
)
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as logs_svc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as metrics_svc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as trace_svc

from otel_agents._errors import ConfigError, InvalidRequestError, RetryableError
from otel_agents.receiver import _otlp_json
from otel_agents.receiver._admission import AdmissionController, Ticket
from otel_agents.receiver._telemetry import ReceiverTelemetry
from otel_agents.receiver._transport_config import LimitsConfig, split_endpoint
from otel_agents.receiver._validate import validate

if TYPE_CHECKING:
    from otel_agents.receiver._admin import AdminServer
    from otel_agents.receiver._grpc import GrpcServer
    from otel_agents.receiver._http import HttpServer

__all__ = [
    "SIGNALS",
    "STATUS_MAP",
    "Answer",
    "ExportHandler",
    "Ingestor",
    "NoopIngestor",
    "Outcome",
    "Signal",
    "SignalSpec",
    "StatusMapping",
    "bind_and_serve",
    "serve_noop",
    "serve_noop_main",
]

_log = logging.getLogger("otel_agents.receiver")

Signal = Literal["traces", "metrics", "logs"]


class Ingestor(Protocol):
    """Receives validated data; implemented by the spool.

    ``ingest`` must return only once the data is durable (the transport acknowledges right
    after), and raise :class:`~otel_agents._errors.RetryableError` (with ``retry_after``) when
    it cannot make it durable now.
    """

    def ingest(self, signal: Signal, request: Message, payload: bytes, items: int) -> None:
        """Store one validated request.

        Args:
            signal: ``"traces"``, ``"metrics"`` or ``"logs"``.
            request: the decoded, validated ``Export*ServiceRequest`` (do not mutate).
            payload: ``request`` serialized as protobuf — the received bytes when validation
                changed nothing, re-serialized for JSON input or after repairs.
            items: spans / data points / log records in ``request`` (> 0).
        """


class NoopIngestor:
    """Accepts everything and keeps nothing (benchmarks of transport + validation)."""

    def __init__(self) -> None:
        self.requests = 0
        self.items = 0

    def ingest(self, signal: Signal, request: Message, payload: bytes, items: int) -> None:
        """Count and drop."""
        self.requests += 1
        self.items += items


@dataclasses.dataclass(frozen=True)
class SignalSpec:
    """Per-signal protocol facts."""

    signal: Signal
    request_class: type[Message]
    response_class: type[Message]
    partial_class: type[Message]
    rejected_field: str
    grpc_service: str
    noun: str


SIGNALS: Mapping[str, SignalSpec] = {
    "traces": SignalSpec(
        "traces",
        trace_svc.ExportTraceServiceRequest,
        trace_svc.ExportTraceServiceResponse,
        trace_svc.ExportTracePartialSuccess,
        "rejected_spans",
        "opentelemetry.proto.collector.trace.v1.TraceService",
        "spans",
    ),
    "metrics": SignalSpec(
        "metrics",
        metrics_svc.ExportMetricsServiceRequest,
        metrics_svc.ExportMetricsServiceResponse,
        metrics_svc.ExportMetricsPartialSuccess,
        "rejected_data_points",
        "opentelemetry.proto.collector.metrics.v1.MetricsService",
        "data points",
    ),
    "logs": SignalSpec(
        "logs",
        logs_svc.ExportLogsServiceRequest,
        logs_svc.ExportLogsServiceResponse,
        logs_svc.ExportLogsPartialSuccess,
        "rejected_log_records",
        "opentelemetry.proto.collector.logs.v1.LogsService",
        "log records",
    ),
}


class Outcome(enum.Enum):
    """What the receiver decided about a request."""

    OK = "ok"
    PARTIAL = "partial"
    INVALID = "invalid"
    TOO_LARGE = "too_large"
    UNAUTHENTICATED = "unauthenticated"
    RETRYABLE = "retryable"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"


@dataclasses.dataclass(frozen=True)
class StatusMapping:
    """One row of the protocol boundary."""

    grpc_code: grpc.StatusCode
    http_status: int
    retryable: bool
    spec: str


_SPEC = "opentelemetry-proto docs/specification.md"

#: Outcome → wire status.  The only place the transports get their codes from.
STATUS_MAP: Mapping[Outcome, StatusMapping] = {
    Outcome.OK: StatusMapping(
        grpc.StatusCode.OK,
        200,
        False,
        f"{_SPEC} §Full Success: OK / 200, partial_success unset (also for empty requests)",
    ),
    Outcome.PARTIAL: StatusMapping(
        grpc.StatusCode.OK,
        200,
        False,
        f"{_SPEC} §Partial Success: OK / 200 with partial_success.rejected_<items> and an "
        "English error_message; rejected=0 + message = warning; MUST NOT be retried",
    ),
    Outcome.INVALID: StatusMapping(
        grpc.StatusCode.INVALID_ARGUMENT,
        400,
        False,
        f"{_SPEC} §Failures (gRPC: INVALID_ARGUMENT + google.rpc.BadRequest for bad data) and "
        "§Bad Data (HTTP 400 + BadRequest); not retryable",
    ),
    Outcome.TOO_LARGE: StatusMapping(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        413,
        False,
        f"{_SPEC} §Request size limits (v1.11.0): over the limit after decompression → "
        "RESOURCE_EXHAUSTED without RetryInfo (non-retryable) / 413",
    ),
    Outcome.UNAUTHENTICATED: StatusMapping(
        grpc.StatusCode.UNAUTHENTICATED,
        401,
        False,
        f"{_SPEC} §Failures: UNAUTHENTICATED is in the non-retryable list; HTTP 401 (not in "
        "the retryable set 429/502/503/504)",
    ),
    Outcome.RETRYABLE: StatusMapping(
        grpc.StatusCode.UNAVAILABLE,
        503,
        True,
        f"{_SPEC} §OTLP/gRPC Throttling (UNAVAILABLE + google.rpc.RetryInfo retry_delay) and "
        "§OTLP/HTTP Throttling (503 + Retry-After)",
    ),
    Outcome.NOT_FOUND: StatusMapping(
        grpc.StatusCode.UNIMPLEMENTED,
        404,
        False,
        f"{_SPEC} §OTLP/HTTP Request (only /v1/traces, /v1/metrics, /v1/logs); unknown gRPC "
        "methods are UNIMPLEMENTED",
    ),
    Outcome.METHOD_NOT_ALLOWED: StatusMapping(
        grpc.StatusCode.UNIMPLEMENTED,
        405,
        False,
        f"{_SPEC} §OTLP/HTTP Request: requests are POST; RFC 9110 §15.5.6 405 + Allow",
    ),
    Outcome.UNSUPPORTED_MEDIA_TYPE: StatusMapping(
        grpc.StatusCode.INVALID_ARGUMENT,
        415,
        False,
        f"{_SPEC} §Binary/JSON Protobuf Encoding (application/x-protobuf, application/json) "
        "and §OTLP/HTTP Request (Content-Encoding none or gzip); RFC 9110 §15.5.16 415 for "
        "an unsupported media type or content coding",
    ),
}


@dataclasses.dataclass
class Answer:
    """The transport-neutral answer to one export request.

    Attributes:
        outcome: the decision.
        response: the ``Export*ServiceResponse`` for OK / PARTIAL.
        message: English explanation (status message / ``error_message``).
        retry_after: seconds, for RETRYABLE.
        violations: ``(field, description)`` pairs for the ``BadRequest`` detail.
        items: items the request carried, when known.
    """

    outcome: Outcome
    response: Message | None = None
    message: str = ""
    retry_after: float | None = None
    violations: tuple[tuple[str, str], ...] = ()
    items: int | None = None

    @property
    def mapping(self) -> StatusMapping:
        """The wire status row."""
        return STATUS_MAP[self.outcome]

    def retry_info(self) -> error_details_pb2.RetryInfo | None:
        """``google.rpc.RetryInfo`` for retryable answers."""
        if self.retry_after is None:
            return None
        seconds = math.floor(self.retry_after)
        nanos = round((self.retry_after - seconds) * 1e9)
        return error_details_pb2.RetryInfo(
            retry_delay=duration_pb2.Duration(seconds=seconds, nanos=min(nanos, 999_999_999))
        )

    def status_proto(self) -> status_pb2.Status:
        """The rich ``google.rpc.Status`` (gRPC details trailer, HTTP error body)."""
        details: list[any_pb2.Any] = []
        if self.violations:
            bad = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                    for f, d in self.violations
                ]
            )
            details.append(_pack(bad))
        info = self.retry_info()
        if info is not None:
            details.append(_pack(info))
        code = self.mapping.grpc_code.value[0]
        if self.outcome is Outcome.NOT_FOUND:
            code = code_pb2.NOT_FOUND
        return status_pb2.Status(code=code, message=self.message, details=details)


def _pack(msg: Message) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(msg)
    return a


class _NullTicket:
    nbytes = 0

    def grow(self, extra: int) -> None:
        pass

    def release(self) -> None:
        pass

    def __enter__(self) -> _NullTicket:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


_NULL_TICKET = _NullTicket()


def _decode_error_message(exc: Exception) -> tuple[str, str]:
    text = str(exc)
    if "MaxDepth" in text:
        return (
            "attribute values nested too deeply: the decoder's message depth limit (100, "
            "about 47 nested arrays/maps inside an attribute) was exceeded",
            "depth",
        )
    if "UTF-8" in text:
        return (
            "a string field is not valid UTF-8 (OTLP strings must be UTF-8; send binary data "
            "as bytes_value)",
            "utf8",
        )
    return f"request is not a valid protobuf message: {text}", "decode"


class ExportHandler:
    """Decode → validate → ingest → answer; shared by the gRPC and HTTP servers.

    Args:
        ingestor: where validated data goes.
        limits: size and attribute limits.
        admission: overload protection (``None``: admit everything).
        telemetry: self-metrics (``None``: a private registry).
    """

    def __init__(
        self,
        ingestor: Ingestor,
        limits: LimitsConfig | None = None,
        admission: AdmissionController | None = None,
        telemetry: ReceiverTelemetry | None = None,
    ) -> None:
        self.ingestor = ingestor
        self.limits = limits or LimitsConfig()
        self.admission = admission
        self.telemetry = telemetry or ReceiverTelemetry()
        if admission is not None:
            self.telemetry.watch_inflight(lambda: admission.inflight_bytes)

    def admit(self, nbytes: int) -> Ticket | _NullTicket:
        """Reserve in-flight bytes.

        Raises:
            RetryableError: over budget.
        """
        if self.admission is None:
            return _NULL_TICKET
        return self.admission.admit(nbytes)

    def handle(self, signal: Signal, transport: str, data: bytes, *, json_body: bool) -> Answer:
        """Process one request body (already decompressed and within the size limit)."""
        spec = SIGNALS[signal]
        tel = self.telemetry
        # Decode.
        try:
            if json_body:
                request: Any = _otlp_json.decode(data, spec.request_class)
            else:
                request = spec.request_class.FromString(data)
        except InvalidRequestError as exc:
            return self.invalid(signal, transport, str(exc), "json", "decode")
        except DecodeError as exc:
            message, reason = _decode_error_message(exc)
            return self.invalid(signal, transport, message, "", reason)
        # Validate.
        try:
            result = validate(signal, request, self.limits, encoded_size=len(data))
        except Exception:  # a validator bug must not become a stack trace on the wire
            _log.exception("validation failed on a %s request", signal)
            return Answer(
                Outcome.RETRYABLE,
                message="internal error while validating; retry later",
                retry_after=1.0,
            )
        for reason, n in result.reasons.items():
            tel.rejected_items(signal, transport, reason, n)
        items = result.accepted
        # Ingest (nothing to store for empty requests: they succeed, B3).
        if items > 0:
            payload = data if not (json_body or result.modified) else request.SerializeToString()
            try:
                self.ingestor.ingest(signal, request, payload, items)
            except RetryableError as exc:
                tel.refused_items(signal, transport, "storage", items)
                return Answer(
                    Outcome.RETRYABLE,
                    message=str(exc),
                    retry_after=exc.retry_after,
                    items=items + result.rejected,
                )
            except Exception:
                # Like the Collector ("unknown error → Unavailable"): nothing was stored, so
                # asking the client to retry loses nothing; a permanent bug is bounded by the
                # client's retry budget.
                _log.exception("ingest failed on a %s request", signal)
                tel.refused_items(signal, transport, "internal", items)
                return Answer(
                    Outcome.RETRYABLE,
                    message="internal error while storing; retry later",
                    retry_after=1.0,
                    items=items + result.rejected,
                )
            tel.accepted_items(signal, transport, items)
        response = spec.response_class()
        if result.rejected or result.message:
            # Python exporters ignore partial_success, so this log and the metrics are the only
            # place a rejection is visible; debug level because senders control its rate.
            _log.debug("partial success on %s/%s: %s", transport, signal, result.message)
            partial = response.partial_success  # type: ignore[attr-defined]
            setattr(partial, spec.rejected_field, result.rejected)
            partial.error_message = result.message
            return Answer(Outcome.PARTIAL, response, result.message, items=items + result.rejected)
        return Answer(Outcome.OK, response, items=items)

    def invalid(
        self, signal: Signal, transport: str, message: str, field: str, reason: str
    ) -> Answer:
        """A whole-request INVALID_ARGUMENT / 400 answer with a ``BadRequest`` detail."""
        self.telemetry.rejected.labels(signal, transport, reason)  # make the series visible
        _log.debug("invalid %s request on %s (%s): %s", signal, transport, reason, message)
        return Answer(Outcome.INVALID, message=message, violations=((field, message),))

    def too_large(self, limit: int) -> Answer:
        """The size-limit answer."""
        return Answer(
            Outcome.TOO_LARGE,
            message=f"request exceeds the {limit} byte limit (after decompression)",
        )

    @staticmethod
    def retryable(exc: RetryableError) -> Answer:
        """The answer to an admission refusal."""
        return Answer(Outcome.RETRYABLE, message=str(exc), retry_after=exc.retry_after)

    def record(self, signal: str, transport: str, code: str, started: float) -> None:
        """Count one answered request (``started`` from ``time.perf_counter()``)."""
        self.telemetry.request(signal, transport, code, time.perf_counter() - started)


_S = TypeVar("_S", bound=socketserver.TCPServer)


def bind_and_serve(
    server_class: type[_S],
    handler_class: type[socketserver.BaseRequestHandler],
    endpoint: str,
    *,
    config_key: str,
    thread_name: str,
    setup: Callable[[_S], None] = lambda server: None,
    **class_attributes: Any,
) -> tuple[_S, threading.Thread, int]:
    """Bind ``server_class`` on ``endpoint`` and serve it on a daemon thread.

    Args:
        server_class: a ``socketserver.TCPServer`` subclass; a subclass of it is made with the
            address family of ``endpoint`` and ``class_attributes``.
        handler_class: the request handler.
        endpoint: ``host:port`` (``[v6]:port``); port 0 picks a free port.
        config_key: the config key named in the bind error (``http.endpoint``).
        thread_name: name of the serving thread.
        setup: called with the bound server before it serves (owner, TLS context).
        class_attributes: class attributes of the subclass (``reuse_port=True``).

    Returns:
        ``(server, thread, bound port)``.

    Raises:
        ConfigError: the address cannot be bound.
    """
    host, port = split_endpoint(endpoint)
    attributes = {
        "address_family": socket.AF_INET6 if ":" in host else socket.AF_INET,
        **class_attributes,
    }
    bound_class = type(server_class.__name__, (server_class,), attributes)
    try:
        server = bound_class((host, port), handler_class)
    except OSError as exc:
        raise ConfigError(f"{config_key}: cannot bind {endpoint!r}: {exc}") from None
    setup(server)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.2},
        name=thread_name,
        daemon=True,
    )
    thread.start()
    return server, thread, int(server.server_address[1])


@dataclasses.dataclass
class NoopServers:
    """Running servers from :func:`serve_noop`; ``stop()`` them."""

    grpc: GrpcServer | None
    http: HttpServer | None
    admin: AdminServer | None
    ingestor: NoopIngestor

    def stop(self) -> None:
        """Stop every server."""
        for server in (self.grpc, self.http, self.admin):
            if server is not None:
                server.stop()


def serve_noop(
    grpc_endpoint: str | None = "127.0.0.1:0",
    http_endpoint: str | None = "127.0.0.1:0",
    admin_endpoint: str | None = None,
    *,
    limits: LimitsConfig | None = None,
) -> NoopServers:
    """Start the OTLP servers with a :class:`NoopIngestor` (transport + validation only).

    :func:`serve_noop_main` does the same in a separate process (``python -c "from
    otel_agents.receiver._common import serve_noop_main; serve_noop_main()" --grpc
    127.0.0.1:0``) and prints ``grpc=<port> http=<port>``.
    """
    from prometheus_client import CollectorRegistry

    from otel_agents.receiver._admin import AdminServer
    from otel_agents.receiver._grpc import GrpcServer
    from otel_agents.receiver._http import HttpServer
    from otel_agents.receiver._transport_config import AdminConfig, GrpcConfig, HttpConfig

    ingestor = NoopIngestor()
    registry = CollectorRegistry(auto_describe=True)
    handler = ExportHandler(ingestor, limits, None, ReceiverTelemetry(registry))
    g = h = a = None
    try:
        if grpc_endpoint:
            g = GrpcServer(GrpcConfig(endpoint=grpc_endpoint), handler)
            g.start()
        if http_endpoint:
            h = HttpServer(HttpConfig(endpoint=http_endpoint), handler)
            h.start()
        if admin_endpoint:
            a = AdminServer(AdminConfig(endpoint=admin_endpoint), registry)
            a.start()
    except BaseException:
        NoopServers(g, h, a, ingestor).stop()
        raise
    return NoopServers(g, h, a, ingestor)


def serve_noop_main(argv: list[str] | None = None) -> None:
    """Command line of :func:`serve_noop`: serve until SIGTERM/SIGINT (for benchmarks)."""
    import argparse
    import signal as signals
    import threading

    parser = argparse.ArgumentParser(description="OTLP servers with a no-op ingestor")
    parser.add_argument("--grpc", default="127.0.0.1:0")
    parser.add_argument("--http", default="127.0.0.1:0")
    parser.add_argument("--admin", default=None)
    args = parser.parse_args(argv)
    servers = serve_noop(args.grpc, args.http, args.admin)
    ports = {
        "grpc": servers.grpc.port if servers.grpc else None,
        "http": servers.http.port if servers.http else None,
        "admin": servers.admin.port if servers.admin else None,
    }
    print(" ".join(f"{k}={v}" for k, v in ports.items() if v), flush=True)
    done = threading.Event()
    signals.signal(signals.SIGTERM, lambda *_: done.set())
    signals.signal(signals.SIGINT, lambda *_: done.set())
    done.wait()
    servers.stop()
