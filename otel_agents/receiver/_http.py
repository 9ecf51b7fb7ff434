# SPDX-License-Identifier: Apache-2.0
"""OTLP/HTTP server: ``POST /v1/traces``, ``/v1/metrics``, ``/v1/logs``; protobuf and JSON.

Built on the standard library's ``http.server`` with HTTP/1.1 keep-alive and one thread per
connection (bounded by ``max_connections``).  Why not an asyncio framework: OTLP requests are
few and large (a 512-span batch is ~200 KB), so per-request framework overhead is small next to
decoding; the work is upb parsing and SQLite commits, which release the GIL, so threads use both
cores; and it adds no dependency.  What the stdlib lacks is added here:

* slowloris guards — a *total* deadline for the request line + headers, for the body and for
  keep-alive idling (a per-``recv`` timeout alone lets a client trickle one byte at a time);
* streaming decompression (``gzip``, ``deflate``) under a hard byte cap: a bomb is refused with
  413 after at most ``max_request_bytes + 1`` bytes were produced (CVE-2024-36129 class);
* ``401`` / ``413`` / ``415`` decided from the headers, before the body is read; an
  ``Expect: 100-continue`` client gets its ``100 Continue`` only after those checks;
* one ``sendall`` per response (headers and body together), so Nagle + delayed ACK never add
  40 ms to a keep-alive exchange.

Codes (``STATUS_MAP``): malformed → 400 + ``BadRequest``; over the limit → 413; unsupported
``Content-Type`` or ``Content-Encoding`` (anything but identity/gzip/deflate, e.g. zstd) → 415;
wrong method → 405 + ``Allow: POST``; unknown path → 404; missing/bad token → 401; overload or
storage trouble → 503 + ``Retry-After`` (whole seconds, rounded up); too many connections → 503.
Error bodies are a ``google.rpc.Status`` in the request's encoding.
"""

from __future__ import annotations

import contextlib
import email.utils
import http.server
import io
import logging
import math
import re
import socket
import socketserver
import ssl
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any

from google.protobuf import json_format

from otel_agents._errors import RetryableError
from otel_agents.receiver import _otlp_json
from otel_agents.receiver._auth import BearerAuthenticator, ReloadingSSLContext, check_exposure
from otel_agents.receiver._common import Answer, ExportHandler, Outcome, Signal, bind_and_serve
from otel_agents.receiver._transport_config import HttpConfig

__all__ = ["HttpServer"]

_log = logging.getLogger("otel_agents.receiver")

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_PROTOBUF_TYPES = frozenset({PROTOBUF, "application/protobuf"})
_ENCODINGS = frozenset({"", "identity", "gzip", "x-gzip", "deflate"})
_CHUNK = 64 * 1024
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
#: Lingering close: at most this much unread body is drained (and dropped) after an early answer.
_LINGER_BYTES = 8 * 1024 * 1024
_LINGER_SECONDS = 2.0


class _Deadline(io.RawIOBase):
    """Socket reader that enforces a total deadline across reads (slowloris guard)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.deadline = math.inf

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("read deadline exceeded")
        self.sock.settimeout(remaining)
        return self.sock.recv_into(buffer)


class _BodyError(Exception):
    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.message)
        self.answer = answer


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    _deadline: _Deadline

    # -- connection setup: our own reader (deadlines) and an unbuffered writer -------------
    def setup(self) -> None:
        self.connection = self.request
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._deadline = _Deadline(self.connection)
        self.rfile = io.BufferedReader(self._deadline, _CHUNK)  # type: ignore[assignment]
        self.wfile = socketserver._SocketWriter(self.connection)  # type: ignore[attr-defined]
        self._first = True

    def handle_one_request(self) -> None:
        cfg = self.server.owner.config
        now = time.monotonic()
        # Waiting for a request: the idle timeout (the header timeout for a fresh connection).
        self._deadline.deadline = now + (
            cfg.read_header_timeout if self._first else cfg.idle_timeout
        )
        self._first = False
        try:
            if not self.rfile.peek(1):  # type: ignore[attr-defined]
                self.close_connection = True
                return
        except (TimeoutError, OSError):
            self.close_connection = True
            return
        # Once it starts: the whole request line + headers within read_header_timeout.
        self._deadline.deadline = time.monotonic() + cfg.read_header_timeout
        self._expect_continue = False
        owner = self.server.owner
        with owner._conn_lock:
            owner._busy.add(self.connection)  # stop() lets busy connections finish
        try:
            super().handle_one_request()
        finally:
            with owner._conn_lock:
                owner._busy.discard(self.connection)
            if owner._stopping:
                self.close_connection = True

    def handle_expect_100(self) -> bool:
        # Send "100 Continue" only after auth and size checks (in do_POST).
        self._expect_continue = True
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # The stdlib answers a malformed request line with a bare HTML page (HTTP/0.9 style,
        # no status line); answer every protocol error with a real HTTP/1.1 status and close.
        self.close_connection = True
        text = message or http.HTTPStatus(code).phrase
        body = text.encode("utf-8", "replace") + b"\n"
        self._send(code, "text/plain; charset=utf-8", body, [])

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("otlp-http %s: " + format, self.address_string(), *args)

    # -- routing ------------------------------------------------------------------------------
    def do_POST(self) -> None:
        started = time.perf_counter()
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        signal = owner.routes.get(path)
        ctype = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        json_body = ctype == JSON
        if signal is None:
            self._fail(
                "",
                Answer(Outcome.NOT_FOUND, message=f"no OTLP endpoint at {path}"),
                json_body,
                started,
                close=True,
            )
            return
        if not owner.auth.check(self.headers.get(owner.auth.header)):
            answer = Answer(Outcome.UNAUTHENTICATED, message="missing or invalid credentials")
            self._fail(signal, answer, json_body, started, close=True, auth_challenge=True)
            return
        if not json_body and ctype not in _PROTOBUF_TYPES:
            message = f"unsupported Content-Type {ctype!r}; use {PROTOBUF} or {JSON}"
            self._fail(
                signal,
                Answer(Outcome.UNSUPPORTED_MEDIA_TYPE, message=message),
                json_body,
                started,
                close=True,
            )
            return
        encoding = (self.headers.get("Content-Encoding") or "").strip().lower()
        if encoding not in _ENCODINGS:
            message = f"unsupported Content-Encoding {encoding!r}; use gzip, deflate or none"
            self._fail(
                signal,
                Answer(Outcome.UNSUPPORTED_MEDIA_TYPE, message=message),
                json_body,
                started,
                close=True,
            )
            return
        handler = owner.handler
        limit = handler.limits.max_request_bytes
        chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
        length = 0
        if not chunked:
            try:
                length = int(self.headers.get("Content-Length") or 0)
                if length < 0:
                    raise ValueError
            except ValueError:
                answer = handler.invalid(signal, "http", "invalid Content-Length", "", "decode")
                self._fail(signal, answer, json_body, started, close=True)
                return
            if length > limit:
                self._fail(signal, handler.too_large(limit), json_body, started, close=True)
                return
        try:
            ticket = handler.admit(length)
        except RetryableError as exc:
            self._fail(signal, handler.retryable(exc), json_body, started, close=True)
            return
        with ticket:
            if self._expect_continue:
                self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self._deadline.deadline = time.monotonic() + owner.config.read_timeout
            try:
                identity = encoding in ("", "identity")
                if identity and not chunked and length <= _DIRECT_BYTES:
                    data = _read_exact(self.rfile, length)
                else:
                    raw = _chunked(self.rfile, limit) if chunked else _fixed(self.rfile, length)
                    if identity:
                        data = _collect(raw, limit, ticket)
                    else:
                        data = _inflate(raw, encoding, limit, ticket)
            except _BodyError as exc:
                self._fail(signal, exc.answer, json_body, started, close=True)
                return
            except RetryableError as exc:
                self._fail(signal, handler.retryable(exc), json_body, started, close=True)
                return
            except (TimeoutError, ConnectionError):
                self.close_connection = True
                handler.record(signal, "http", "timeout", started)
                return
            answer = handler.handle(signal, "http", data, json_body=json_body)
        self._answer(signal, answer, json_body, started)

    def do_OPTIONS(self) -> None:
        """CORS preflight for browser senders (only for allowed origins and OTLP paths)."""
        owner = self.server.owner
        origin = self._cors_origin()
        path = self.path.split("?", 1)[0]
        if origin is None or path not in owner.routes:
            self._not_post()
            return
        requested = self.headers.get("Access-Control-Request-Headers") or ""
        allowed = "Content-Type, Content-Encoding, Authorization"
        names = [h.strip() for h in requested.split(",")]
        if names and all(_TOKEN.fullmatch(h) for h in names):  # echo only header-name tokens
            allowed = ", ".join(names)
        headers = [
            ("Access-Control-Allow-Methods", "POST"),
            ("Access-Control-Allow-Headers", allowed),
            ("Access-Control-Max-Age", "7200"),
        ]
        self._send(204, "text/plain", b"", headers)

    def _cors_origin(self) -> str | None:
        headers = getattr(self, "headers", None)  # unset when the request line was malformed
        origin = headers.get("Origin") if headers is not None else None
        allowed = self.server.owner.config.cors_allowed_origins
        if not origin or not allowed:
            return None
        if "*" in allowed:
            return "*"  # never reflect an arbitrary header value back
        return origin if origin in allowed else None

    def _not_post(self) -> None:
        started = time.perf_counter()
        path = self.path.split("?", 1)[0]
        owner = self.server.owner
        signal = owner.routes.get(path)
        if signal is None:
            answer = Answer(Outcome.NOT_FOUND, message=f"no OTLP endpoint at {path}")
        else:
            answer = Answer(
                Outcome.METHOD_NOT_ALLOWED, message=f"{self.command} not allowed; use POST"
            )
        self._fail(signal or "", answer, False, started, close=True, allow=True)

    do_GET = do_PUT = do_DELETE = do_PATCH = _not_post

    def do_HEAD(self) -> None:
        self._not_post()

    # -- answers ------------------------------------------------------------------------------
    def _answer(self, signal: Signal, answer: Answer, json_body: bool, started: float) -> None:
        row = answer.mapping
        if row.http_status != 200:
            self._fail(signal, answer, json_body, started, close=False)
            return
        assert answer.response is not None
        if json_body:
            body = _otlp_json.encode(answer.response)
        else:
            body = answer.response.SerializeToString()
        self.server.owner.handler.record(signal, "http", "200", started)
        self._send(200, JSON if json_body else PROTOBUF, body, [])

    def _fail(
        self,
        signal: str,
        answer: Answer,
        json_body: bool,
        started: float,
        *,
        close: bool,
        auth_challenge: bool = False,
        allow: bool = False,
    ) -> None:
        row = answer.mapping
        status = answer.status_proto()
        if json_body:
            body = json_format.MessageToJson(status, indent=None).encode()
        else:
            body = status.SerializeToString()
        headers: list[tuple[str, str]] = []
        if answer.retry_after is not None:
            headers.append(("Retry-After", str(max(1, math.ceil(answer.retry_after)))))
        if auth_challenge:
            headers.append(("WWW-Authenticate", self.server.owner.auth.config.scheme))
        if allow:
            headers.append(("Allow", "POST"))
        if close:
            self.close_connection = True
        if signal:
            self.server.owner.handler.record(signal, "http", str(row.http_status), started)
        self._send(row.http_status, JSON if json_body else PROTOBUF, body, headers)
        if close:
            self._linger()

    def _linger(self) -> None:
        """Lingering close after answering without reading the whole body.

        Closing a socket with unread input makes the kernel send RST, and a client still
        writing its body then fails with EPIPE/ECONNRESET before it reads our 401/413/415.
        So: half-close, then read and discard what the client still sends, bounded in bytes and
        time (never buffered, never parsed).
        """
        sock = self.connection
        if isinstance(sock, ssl.SSLSocket):
            return  # a TLS half-close would need a close_notify exchange; just close
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return
        budget = _LINGER_BYTES
        deadline = time.monotonic() + _LINGER_SECONDS
        buf = bytearray(_CHUNK)
        while budget > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                sock.settimeout(min(remaining, 0.25))
                n = sock.recv_into(buf)
            except OSError:  # includes timeouts: the client stopped sending
                break
            if n == 0:
                break
            budget -= n

    def _send(self, status: int, ctype: str, body: bytes, headers: list[tuple[str, str]]) -> None:
        phrase = http.HTTPStatus(status).phrase
        lines = [
            f"HTTP/1.1 {status} {phrase}",
            f"Date: {_http_date()}",
            f"Content-Type: {ctype}",
            f"Content-Length: {len(body)}",
        ]
        lines.extend(f"{k}: {v}" for k, v in headers)
        origin = self._cors_origin()
        if origin is not None:
            lines.append(f"Access-Control-Allow-Origin: {origin}")
            if origin != "*":
                lines.append("Vary: Origin")
        if self.server.owner._stopping:
            self.close_connection = True  # tell the client before it reuses the connection
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.connection.settimeout(self.server.owner.config.read_timeout)
        try:
            self.wfile.write(head + body if self.command != "HEAD" else head)
        except OSError:
            self.close_connection = True


_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    """RFC 9110 Date header value, formatted at most once per second."""
    global _date_cache
    now = int(time.time())
    cached = _date_cache
    if cached[0] != now:
        cached = (now, email.utils.formatdate(now, usegmt=True))
        _date_cache = cached
    return cached[1]


#: Uncompressed bodies with a Content-Length up to this size are read into one buffer at once
#: (see _read_exact()); larger ones arrive in pieces, so memory follows the bytes received.
_DIRECT_BYTES = 4 << 20


def _read_exact(rfile: Any, length: int) -> bytes:
    """A ``Content-Length`` body read straight into the ``bytes`` object that is returned.

    ``BufferedReader.read(n)`` allocates the result once and hands the socket the rest of it, so
    each ``recv`` takes all the socket holds (a 200 KB request is usually one or two) instead of
    64 KiB pieces that were each copied again into a growing body and then into ``bytes``; every
    ``recv`` also releases and re-takes the GIL, which with 16 busy connections meant a switch
    to another thread per piece.  One allocation, no copy: with the receiver's fixed 128 KiB
    mmap threshold (``otel_agents._allocator``) each large buffer is a fresh ``mmap``.  The
    deadline reader still bounds the whole read.
    """
    data: bytes = rfile.read(length)
    if len(data) != length:
        raise ConnectionError("client closed the connection mid-body")
    return data


def _fixed(rfile: Any, length: int) -> Iterator[bytes]:
    remaining = length
    while remaining > 0:
        chunk = rfile.read1(min(remaining, _CHUNK))
        if not chunk:
            raise ConnectionError("client closed the connection mid-body")
        remaining -= len(chunk)
        yield chunk


def _chunked(rfile: Any, limit: int) -> Iterator[bytes]:
    total = 0
    while True:
        line = rfile.readline(1024)
        if not line:
            raise ConnectionError("client closed the connection mid-body")
        if not line.endswith(b"\n"):
            raise _BodyError(Answer(Outcome.INVALID, message="malformed chunk header"))
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _BodyError(
                Answer(Outcome.INVALID, message="malformed chunked transfer encoding")
            ) from None
        if size == 0:
            while rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                pass  # trailers: ignored
            return
        total += size
        if total > limit * 2:  # compressed bodies may exceed the cap only a little
            raise _BodyError(Answer(Outcome.TOO_LARGE, message=f"request exceeds {limit} bytes"))
        yield from _fixed(rfile, size)
        rfile.readline(16)  # CRLF after the chunk


def _collect(chunks: Iterator[bytes], limit: int, ticket: Any) -> bytes:
    out = bytearray()
    reserved = ticket.nbytes
    for chunk in chunks:
        out += chunk
        if len(out) > limit:
            raise _BodyError(_too_large(limit))
        if len(out) > reserved:  # chunked bodies: reserve as they arrive
            ticket.grow(len(out) - reserved)
            reserved = len(out)
    return bytes(out)


def _too_large(limit: int) -> Answer:
    return Answer(
        Outcome.TOO_LARGE, message=f"request exceeds the {limit} byte limit (after decompression)"
    )


#: Largest piece of decompressed output produced at once (see _inflate()).
_INFLATE_PIECE = 1 << 20


def _inflate(chunks: Iterator[bytes], encoding: str, limit: int, ticket: Any) -> bytes:
    """Stream-decompress under a hard cap: never produces more than ``limit + 1`` bytes.

    Output comes in pieces of at most :data:`_INFLATE_PIECE`: one ``limit``-sized piece appended
    to the body doubled the peak (piece + grown copy), which let a gzip bomb's refusal take
    ~17.5 MiB of RSS against an 8 MiB limit (RC-10 bounds it by 2x the limit).
    """
    gzip = encoding != "deflate"
    d = zlib.decompressobj(31 if gzip else 15)
    out = bytearray()
    first = True
    for chunk in chunks:
        data = chunk
        while data:
            try:
                piece = d.decompress(data, min(_INFLATE_PIECE, limit + 1 - len(out)))
            except zlib.error as exc:
                if first and not gzip:
                    # "deflate" is zlib-wrapped per RFC 9110, but some senders use raw deflate.
                    d = zlib.decompressobj(-15)
                    first = False
                    continue
                raise _BodyError(
                    Answer(Outcome.INVALID, message=f"invalid {encoding} data: {exc}")
                ) from None
            first = False
            out += piece
            if len(out) > limit:
                raise _BodyError(_too_large(limit))
            ticket.grow(len(piece))
            data = d.unconsumed_tail
            if d.eof:
                rest = d.unused_data
                if gzip and rest:
                    d = zlib.decompressobj(31)  # concatenated gzip members
                    data = rest
                elif rest:
                    raise _BodyError(
                        Answer(Outcome.INVALID, message=f"trailing bytes after {encoding} data")
                    )
    if not d.eof and (out or not first):
        raise _BodyError(Answer(Outcome.INVALID, message=f"truncated {encoding} data"))
    return bytes(out)


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128
    owner: HttpServer
    reuse_port = False

    def server_bind(self) -> None:
        if self.reuse_port:
            # serve --workers: each worker process binds the same port; the kernel spreads
            # connections across them.
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn); not needed, can be slow.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        owner = self.owner
        with owner._conn_lock:
            full = len(owner._conns) >= owner.config.max_connections
            if not full:
                owner._conns.add(request)
        if full:
            try:
                request.settimeout(1.0)
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n"
                    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
                )
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.owner._conn_lock:
                self.owner._conns.discard(request)

    def finish_request(self, request: Any, client_address: Any) -> None:
        ctx = self.owner._ssl
        if ctx is None:
            self.RequestHandlerClass(request, client_address, self)  # type: ignore[arg-type]
            return
        # TLS handshake in the connection's own thread, bounded by the header timeout.
        request.settimeout(self.owner.config.read_header_timeout)
        try:
            tls_sock = ctx.current().wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            _log.debug("TLS handshake with %s failed: %s", client_address, exc)
            return
        # Track the TLS socket instead of the (now detached) raw one, so stop() can wake it.
        with self.owner._conn_lock:
            self.owner._conns.discard(request)
            self.owner._conns.add(tls_sock)
        try:
            self.RequestHandlerClass(tls_sock, client_address, self)  # type: ignore[arg-type]
        finally:
            with self.owner._conn_lock:
                self.owner._conns.discard(tls_sock)
            tls_sock.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        _log.debug("otlp-http connection %s failed", client_address, exc_info=True)


class HttpServer:
    """The OTLP/HTTP endpoint.

    Args:
        config: endpoint, paths, timeouts, TLS, auth.
        handler: the shared decode/validate/ingest logic (carries the limits).
    """

    def __init__(self, config: HttpConfig, handler: ExportHandler) -> None:
        self.config = config
        self.handler = handler
        self.auth = BearerAuthenticator(config.auth)
        self.routes: dict[str, Signal] = {
            config.traces_url_path: "traces",
            config.metrics_url_path: "metrics",
            config.logs_url_path: "logs",
        }
        self._ssl: ReloadingSSLContext | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[Any] = set()
        self._busy: set[Any] = set()
        self._stopping = False
        self._conn_lock = threading.Lock()
        self.port = 0

    def start(self) -> None:
        """Bind and start serving; ``port`` is the bound port afterwards.

        Raises:
            ConfigError: exposure policy violated, bad TLS files, or the port cannot be bound.
        """
        cfg = self.config
        check_exposure("http", cfg.endpoint, cfg.tls, cfg.auth, cfg.insecure_public)
        if cfg.tls.enabled:
            self._ssl = ReloadingSSLContext(cfg.tls)

        def setup(server: _Server) -> None:
            server.owner = self

        self._server, self._thread, self.port = bind_and_serve(
            _Server,
            _Handler,
            cfg.endpoint,
            config_key="http.endpoint",
            thread_name="otlp-http",
            setup=setup,
            reuse_port=cfg.reuse_port,
        )
        _log.info("OTLP/HTTP listening on %s (port %d)", cfg.endpoint, self.port)

    def stop(self, grace: float = 5.0) -> None:
        """Stop accepting; let requests in progress finish for up to ``grace`` seconds (their
        connections then close); close idle keep-alive connections at once."""
        server = self._server
        if server is None:
            return
        self._server = None
        self._stopping = True
        server.shutdown()
        server.server_close()
        deadline = time.monotonic() + grace
        while True:
            with self._conn_lock:
                conns = list(self._conns)
                busy = set(self._busy)
            if not conns:
                break
            expired = time.monotonic() >= deadline
            for conn in conns:
                if expired or conn not in busy:
                    # Idle keep-alive connections would wait for their idle timeout: wake them.
                    with contextlib.suppress(OSError):
                        conn.shutdown(socket.SHUT_RDWR if expired else socket.SHUT_RD)
            if expired:
                break
            time.sleep(0.02)
        if self._thread is not None:
            self._thread.join(grace)
