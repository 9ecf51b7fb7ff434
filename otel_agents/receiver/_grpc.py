# SPDX-License-Identifier: Apache-2.0
"""OTLP/gRPC server: ``TraceService``, ``MetricsService``, ``LogsService`` ``Export``.

grpcio quirks handled here (reliability.md §0):

* Methods are registered with a pass-through (bytes) deserializer and parsed in the handler:
  grpcio would answer malformed protobuf with ``INTERNAL`` "Exception deserializing request!",
  the spec wants ``INVALID_ARGUMENT`` + ``google.rpc.BadRequest``.
* ``grpc.max_receive_message_length`` is the request limit; grpcio enforces it on the
  *decompressed* size (gzip bombs → ``RESOURCE_EXHAUSTED`` before any handler sees the message).
  A unary-unary handler is never called for such a request, so nothing could count it.  The
  methods are registered stream-unary instead: the handler runs before the message is read and
  reading it raises when the core ended the call.  grpcio does not say why it ended it, so such
  calls are counted as ``requests_total{code="ENDED_BEFORE_MESSAGE"}``: over the size limit
  (the client got ``RESOURCE_EXHAUSTED``), a message the core could not decompress, or a client
  that cancelled or timed out while uploading.
* ``maximum_concurrent_rpcs`` is not used (it answers bare ``RESOURCE_EXHAUSTED``, which Go
  senders drop); overload goes through admission control → ``UNAVAILABLE`` + RetryInfo.
* RetryInfo is sent twice: inside the rich status (``grpc-status-details-bin``, read by Go
  clients) and as the ``google.rpc.retryinfo-bin`` trailer (the only place the Python exporter
  reads it).
* ``grpc.so_reuseport`` is off (grpcio turns it on by default on Linux), so a second receiver
  cannot silently share a fixed port; ``reuse_port`` turns it on for ``serve --workers``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc

from otel_agents._errors import ConfigError, RetryableError
from otel_agents.receiver._auth import BearerAuthenticator, check_exposure, grpc_server_credentials
from otel_agents.receiver._common import SIGNALS, Answer, ExportHandler, Outcome, Signal
from otel_agents.receiver._transport_config import GrpcConfig

__all__ = ["ENDED_BEFORE_MESSAGE", "RETRY_INFO_TRAILER", "STATUS_DETAILS_TRAILER", "GrpcServer"]

_log = logging.getLogger("otel_agents.receiver")

STATUS_DETAILS_TRAILER = "grpc-status-details-bin"
RETRY_INFO_TRAILER = "google.rpc.retryinfo-bin"
#: ``code`` label of calls the gRPC core ended before the handler got their message.
ENDED_BEFORE_MESSAGE = "ENDED_BEFORE_MESSAGE"

#: OTLP responses are tiny; the spec caps them at 4 MiB.
_MAX_SEND = 4 * 1024 * 1024


#: How long a call whose request stream ended empty may take to show it was ended by the core.
_END_SETTLE_S = 0.25


def _terminates_soon(context: grpc.ServicerContext) -> bool:
    """True when the call ends (without our answer) within ``_END_SETTLE_S``."""
    ended = threading.Event()
    if not context.add_callback(ended.set):
        return True  # already terminated
    return ended.wait(_END_SETTLE_S)


class GrpcServer:
    """The OTLP/gRPC endpoint.

    Args:
        config: endpoint, workers, TLS, auth.
        handler: the shared decode/validate/ingest logic (carries the limits).
    """

    def __init__(self, config: GrpcConfig, handler: ExportHandler) -> None:
        self.config = config
        self.handler = handler
        self._auth = BearerAuthenticator(config.auth)
        self._server: Any = None
        self.port = 0

    def start(self) -> None:
        """Bind and start serving; ``port`` is the bound port afterwards.

        Raises:
            ConfigError: exposure policy violated, bad TLS files, or the port cannot be bound.
        """
        cfg = self.config
        check_exposure("grpc", cfg.endpoint, cfg.tls, cfg.auth, cfg.insecure_public)
        limit = self.handler.limits.max_request_bytes
        options = [
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", _MAX_SEND),
            ("grpc.max_concurrent_streams", cfg.max_concurrent_streams),
            ("grpc.so_reuseport", 1 if cfg.reuse_port else 0),
        ]
        handlers = [
            grpc.method_handlers_generic_handler(
                spec.grpc_service,
                {
                    "Export": grpc.stream_unary_rpc_method_handler(
                        self._export(name), request_deserializer=None, response_serializer=None
                    )
                },
            )
            for name, spec in SIGNALS.items()
        ]
        server = grpc.server(
            futures.ThreadPoolExecutor(cfg.max_workers, thread_name_prefix="otlp-grpc"),
            handlers=handlers,
            options=options,
        )
        try:
            if cfg.tls.enabled:
                port = server.add_secure_port(cfg.endpoint, grpc_server_credentials(cfg.tls))
            else:
                port = server.add_insecure_port(cfg.endpoint)
        except RuntimeError as exc:
            raise ConfigError(f"grpc.endpoint: cannot bind {cfg.endpoint!r}: {exc}") from None
        if not port:
            raise ConfigError(f"grpc.endpoint: cannot bind {cfg.endpoint!r}")
        server.start()
        self._server = server
        self.port = port
        _log.info("OTLP/gRPC listening on %s (port %d)", cfg.endpoint, port)

    def stop(self, grace: float | None = 5.0) -> None:
        """Stop accepting, let in-flight calls finish for up to ``grace`` seconds."""
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None

    def _export(
        self, signal: str
    ) -> Callable[[Iterator[bytes], grpc.ServicerContext], bytes | None]:
        handler = self.handler
        auth = self._auth
        sig: Signal = SIGNALS[signal].signal

        def export(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes | None:
            started = time.perf_counter()
            if auth.enabled and not auth.check_metadata(context.invocation_metadata()):
                # Checked before the request is even read.
                answer = Answer(Outcome.UNAUTHENTICATED, message="missing or invalid credentials")
                return self._respond(sig, answer, context, started)
            try:
                request = next(requests)
            except grpc.RpcError:
                # The core ended the call before handing the message over (module docstring);
                # the client already has its status.
                handler.record(sig, "grpc", ENDED_BEFORE_MESSAGE, started)
                return None
            except StopIteration:
                # grpcio also ends the iterator this way when the core failed the read (over the
                # size limit) and its close event has not reached the call state yet: the call
                # then terminates within moments without our answer.  Only a client that really
                # half-closed without a message keeps waiting, and gets INVALID_ARGUMENT.
                if _terminates_soon(context):
                    handler.record(sig, "grpc", ENDED_BEFORE_MESSAGE, started)
                    return None
                message = "Export requires exactly one request message"
                answer = handler.invalid(sig, "grpc", message, "", "no_message")
                return self._respond(sig, answer, context, started)
            try:
                ticket = handler.admit(len(request))
            except RetryableError as exc:
                return self._respond(sig, handler.retryable(exc), context, started)
            with ticket:
                answer = handler.handle(sig, "grpc", request, json_body=False)
            return self._respond(sig, answer, context, started)

        return export

    def _respond(
        self, signal: Signal, answer: Answer, context: grpc.ServicerContext, started: float
    ) -> bytes:
        row = answer.mapping
        self.handler.record(signal, "grpc", row.grpc_code.name, started)
        if row.grpc_code is grpc.StatusCode.OK:
            assert answer.response is not None
            return answer.response.SerializeToString()
        trailers: list[tuple[str, bytes]] = [
            (STATUS_DETAILS_TRAILER, answer.status_proto().SerializeToString())
        ]
        info = answer.retry_info()
        if info is not None:
            trailers.append((RETRY_INFO_TRAILER, info.SerializeToString()))
        context.set_trailing_metadata(trailers)
        context.abort(row.grpc_code, answer.message)
        raise AssertionError("unreachable: abort() raises")  # pragma: no cover
