# SPDX-License-Identifier: Apache-2.0
"""The admin endpoint (default ``127.0.0.1:4319``).

=====================  ===========================================================================
``GET /healthz``       liveness: 200 while the process serves (never needs credentials)
``GET /readyz``        readiness from the health callback: 200 or 503, JSON details
``GET /metrics``       Prometheus exposition of the registry (OpenMetrics when asked for)
``/api/v1/<path>``     routes registered with :meth:`AdminServer.register_api` (JSON in and out)
``GET /``              the web page (an HTML file given by path)
=====================  ===========================================================================

With ``auth`` configured, everything but ``/healthz`` and ``/readyz`` needs
``Authorization: Bearer <token>`` — or the ``otel_agents_token`` cookie, so the page can call
the API from a browser — and answers 401 otherwise.
"""

from __future__ import annotations

import gzip
import http.cookies
import http.server
import itertools
import json
import logging
import socketserver
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from otel_agents._component import ApiHandler
from otel_agents.exporters._analysis_metrics import exposition_chunks
from otel_agents.receiver._admission import trim_heap
from otel_agents.receiver._auth import BearerAuthenticator, ReloadingSSLContext, check_exposure
from otel_agents.receiver._common import bind_and_serve
from otel_agents.receiver._transport_config import AdminConfig

__all__ = ["API_PREFIX", "SUBPATH_KEY", "AdminServer", "HealthCheck"]

_log = logging.getLogger("otel_agents.receiver")

API_PREFIX = "/api/v1/"
#: Query key carrying the rest of the path when a route serves its sub-paths
#: (``/api/v1/traces/abc`` → handler of ``/api/v1/traces`` with ``query["_subpath"] == ["abc"]``).
SUBPATH_KEY = "_subpath"
TOKEN_COOKIE = "otel_agents_token"
MAX_API_BODY = 1024 * 1024
_TRIM_AFTER_BYTES = 1 << 20  # expositions this large are worth a heap trim afterwards
_TRIM_INTERVAL_S = 10.0  # at most one trim per interval (3-5 ms each for a 250 MiB heap)

HealthCheck = Callable[[], tuple[bool, Mapping[str, Any]]]
"""``() -> (ready, details)``; details are JSON-serialisable."""


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30.0
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("admin %s: " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        owner = self.server.owner
        url = urlsplit(self.path)
        path = url.path
        try:
            if path == "/healthz":
                self._json(200, {"status": "ok"})
                return
            if path == "/readyz":
                ready, details = owner.readiness()
                self._json(200 if ready else 503, {"ready": ready, **details})
                return
            if not self._authorized():
                self._json(
                    401,
                    {"error": "missing or invalid credentials"},
                    [("WWW-Authenticate", owner.auth.config.scheme)],
                )
                return
            if path == "/metrics":
                self._metrics()
            elif path.startswith(API_PREFIX):
                self._api(path, url.query)
            elif path in ("/", "/index.html"):
                self._page()
            else:
                self._json(404, {"error": f"not found: {path}"})
        except (TimeoutError, ConnectionError):
            self.close_connection = True
        except Exception:
            _log.exception("admin request %s %s failed", self.command, path)
            self._json(500, {"error": "internal error"})

    def _authorized(self) -> bool:
        auth = self.server.owner.auth
        if not auth.enabled:
            return True
        if auth.check(self.headers.get(auth.header)):
            return True
        cookie = http.cookies.SimpleCookie()
        try:
            cookie.load(self.headers.get("Cookie") or "")
        except http.cookies.CookieError:
            return False
        morsel = cookie.get(TOKEN_COOKIE)
        return morsel is not None and auth.check(f"{auth.config.scheme} {morsel.value}")

    def _metrics(self) -> None:
        if self.command != "GET":
            self._json(405, {"error": "use GET"}, [("Allow", "GET")])
            return
        encoder, ctype = choose_encoder(self.headers.get("Accept") or "")
        # Streamed in ~64 KiB chunks (the analysis families are rendered straight from their
        # state): a full exposition under name churn is ~9 MiB, and building it whole per
        # scrape was the RC-12 soak's largest allocation churn.
        chunks = exposition_chunks(
            self.server.owner.registry,
            encoder,
            openmetrics=ctype.startswith("application/openmetrics-text"),
        )
        first = next(chunks)  # the registry's other collectors: fails before any header is sent
        gz = "gzip" in (self.headers.get("Accept-Encoding") or "")  # Prometheus asks for gzip
        if self.request_version == "HTTP/1.0":  # no chunked encoding before HTTP/1.1
            body = first + b"".join(chunks)
            if gz:
                self._send(200, ctype, gzip.compress(body, 6), [("Content-Encoding", "gzip")])
            else:
                self._send(200, ctype, body)
            return
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("X-Content-Type-Options", "nosniff")
        if gz:
            self.send_header("Content-Encoding", "gzip")
        self.end_headers()
        comp = zlib.compressobj(6, zlib.DEFLATED, 31) if gz else None  # wbits 31: gzip framing
        rendered = 0
        try:
            for chunk in itertools.chain((first,), chunks):
                rendered += len(chunk)
                self._chunk(comp.compress(chunk) if comp is not None else chunk)
            if comp is not None:
                self._chunk(comp.flush())
        except (TimeoutError, ConnectionError):
            raise
        except Exception:
            # Headers are out: no 500 can follow.  Without the last chunk the scraper sees a
            # truncated body, never a partial exposition taken as complete.
            _log.exception("admin /metrics rendering failed mid-stream")
            self.close_connection = True
            return
        self.wfile.write(b"0\r\n\r\n")
        self.server.owner.after_scrape(rendered)

    def _chunk(self, data: bytes) -> None:
        if data:  # an empty chunk would end the body
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _api(self, path: str, raw_query: str) -> None:
        owner = self.server.owner
        route = path.rstrip("/")
        query = parse_qs(raw_query, keep_blank_values=True)
        handler = owner.api_route(route, query)
        if handler is None:
            self._json(404, {"error": f"no API route {path}"})
            return
        body: bytes | None = None
        if self.command in ("POST", "PUT"):
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                self._json(400, {"error": "invalid Content-Length"})
                return
            if length > MAX_API_BODY:
                self.close_connection = True
                self._json(413, {"error": f"body over {MAX_API_BODY} bytes"})
                return
            body = self.rfile.read(length) if length else b""
        status, payload = handler(self.command, query, body)
        self._json(status, payload, [("Cache-Control", "no-store")])

    def _page(self) -> None:
        page = self.server.owner.config.page_file
        if self.command != "GET":
            self._json(405, {"error": "use GET"}, [("Allow", "GET")])
            return
        if page is None:
            self._json(404, {"error": "no page configured"})
            return
        try:
            content = Path(page).read_bytes()  # read per request: edits show without restart
        except OSError:
            self._json(404, {"error": "page file missing"})
            return
        self._send(200, "text/html; charset=utf-8", content, [("Cache-Control", "no-cache")])

    def _json(self, status: int, body: Any, headers: list[tuple[str, str]] | None = None) -> None:
        data = json.dumps(body, default=str, separators=(",", ":")).encode()
        self._send(status, "application/json", data, headers or [])

    def _send(
        self, status: int, ctype: str, body: bytes, headers: list[tuple[str, str]] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        for k, v in headers or []:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    owner: AdminServer
    ssl_context: ReloadingSSLContext | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.ssl_context is None:
            super().finish_request(request, client_address)
            return
        # Handshake in the connection's thread, bounded, never in the accept loop.
        request.settimeout(10.0)
        try:
            tls_sock = self.ssl_context.current().wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            _log.debug("admin TLS handshake with %s failed: %s", client_address, exc)
            return
        try:
            super().finish_request(tls_sock, client_address)
        finally:
            tls_sock.close()

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # skip HTTPServer's reverse DNS lookup
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        _log.debug("admin connection %s failed", client_address, exc_info=True)


class AdminServer:
    """``/healthz``, ``/readyz``, ``/metrics``, ``/api/v1/...``, ``/``.

    Args:
        config: endpoint, page file, auth.
        registry: the ``prometheus_client.CollectorRegistry`` to expose.
        health: readiness callback; ``None`` = always ready.
    """

    def __init__(
        self,
        config: AdminConfig,
        registry: CollectorRegistry,
        health: HealthCheck | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.health = health
        self.auth = BearerAuthenticator(config.auth)
        self._routes: dict[str, ApiHandler] = {}
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._trimmed_at = float("-inf")
        self.port = 0

    def register_api(self, path: str, handler: ApiHandler) -> None:
        """Serve ``handler`` at ``path`` (``/api/v1/...``) and its sub-paths.

        Raises:
            ValueError: the path is outside ``/api/v1/`` or already taken.
        """
        route = path.rstrip("/")
        if not route.startswith(API_PREFIX) or len(route) <= len(API_PREFIX):
            raise ValueError(f"API routes live under {API_PREFIX}, got {path!r}")
        with self._lock:
            if route in self._routes:
                raise ValueError(f"API route {route!r} is already registered")
            self._routes[route] = handler

    def api_route(self, route: str, query: dict[str, list[str]]) -> ApiHandler | None:
        """The handler for ``route``: exact match, else the longest registered parent path
        (the remainder goes to ``query[SUBPATH_KEY]``)."""
        with self._lock:
            handler = self._routes.get(route)
            if handler is not None:
                return handler
            best = ""
            for prefix in self._routes:
                if route.startswith(prefix + "/") and len(prefix) > len(best):
                    best = prefix
            if not best:
                return None
            query[SUBPATH_KEY] = [route[len(best) + 1 :]]
            return self._routes[best]

    def after_scrape(self, nbytes: int) -> None:
        """After a large exposition (``nbytes`` of text), at most every 10 s: hand the C heap's
        free pages back to the OS.  glibc keeps freed memory in per-thread arenas and only trims
        the top of the main heap; without this, RSS under name churn (a ~9 MiB exposition of
        2,001 series per family every scrape) reflects the allocator's high-water mark rather
        than live memory, which is what the RC-12 soak and the admission budget read."""
        if nbytes < _TRIM_AFTER_BYTES:
            return
        now = time.monotonic()
        with self._lock:
            if now - self._trimmed_at < _TRIM_INTERVAL_S:
                return
            self._trimmed_at = now
        trim_heap()

    def readiness(self) -> tuple[bool, Mapping[str, Any]]:
        """Call the health callback; a failing callback means not ready."""
        if self.health is None:
            return True, {}
        try:
            return self.health()
        except Exception as exc:
            _log.exception("readiness check failed")
            return False, {"error": type(exc).__name__}

    def start(self) -> None:
        """Bind and serve; ``port`` is the bound port afterwards.

        Raises:
            ConfigError: exposure policy violated or the port cannot be bound.
        """
        cfg = self.config
        check_exposure("admin", cfg.endpoint, cfg.tls, cfg.auth, cfg.insecure_public)

        def setup(server: _Server) -> None:
            if cfg.tls.enabled:
                server.ssl_context = ReloadingSSLContext(cfg.tls)
            server.owner = self

        self._server, self._thread, self.port = bind_and_serve(
            _Server,
            _Handler,
            cfg.endpoint,
            config_key="admin.endpoint",
            thread_name="otel-agents-admin",
            setup=setup,
        )
        _log.info("admin endpoint on %s (port %d)", cfg.endpoint, self.port)

    def stop(self, grace: float = 5.0) -> None:
        """Stop serving; waits up to ``grace`` seconds for the serving thread."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(grace)
