# SPDX-License-Identifier: Apache-2.0
"""Admin endpoint: health, readiness, Prometheus metrics, API routing, page, token auth."""

from __future__ import annotations

import gzip
import http.client
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from otel_agents._errors import ConfigError
from otel_agents.receiver import AdminConfig, AdminServer, AuthConfig

TOKEN = "s3cret-token"


def _get(
    server: AdminServer,
    path: str,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    body: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


@pytest.fixture
def registry() -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=True)
    Counter("demo_things", "Things.", registry=reg).inc(3)
    return reg


@pytest.fixture
def admin(registry: CollectorRegistry, tmp_path: Path) -> Iterator[AdminServer]:
    page = tmp_path / "index.html"
    page.write_text("<html><body>otel-agents</body></html>")
    state = {"ready": True}
    server = AdminServer(
        AdminConfig(endpoint="127.0.0.1:0", page_file=str(page)),
        registry,
        health=lambda: (state["ready"], {"spool": "ok" if state["ready"] else "full"}),
    )
    server.state = state  # type: ignore[attr-defined]
    server.start()
    yield server
    server.stop()


def test_healthz(admin: AdminServer) -> None:
    """/healthz answers 200 JSON."""
    status, headers, body = _get(admin, "/healthz")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    assert headers["content-type"] == "application/json"


def test_readyz_follows_health_callback(admin: AdminServer) -> None:
    """/readyz is 200 when the callback says ready, 503 with details otherwise."""
    assert _get(admin, "/readyz")[0] == 200
    admin.state["ready"] = False  # type: ignore[attr-defined]
    status, _, body = _get(admin, "/readyz")
    assert status == 503 and json.loads(body) == {"ready": False, "spool": "full"}


def test_readyz_failing_callback_is_not_ready(registry: CollectorRegistry) -> None:
    """A callback that raises makes /readyz 503, not a crash."""

    def broken() -> tuple[bool, Mapping[str, Any]]:
        raise RuntimeError("boom")

    server = AdminServer(AdminConfig(endpoint="127.0.0.1:0"), registry, health=broken)
    server.start()
    try:
        status, _, body = _get(server, "/readyz")
        assert status == 503 and json.loads(body)["error"] == "RuntimeError"
    finally:
        server.stop()


def test_metrics_exposition(admin: AdminServer) -> None:
    """/metrics serves the registry in the Prometheus text format (OpenMetrics on request)."""
    status, headers, body = _get(admin, "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert b"demo_things_total 3.0" in body
    status, headers, body = _get(
        admin, "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert headers["content-type"].startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")
    status, headers, body = _get(admin, "/metrics", {"Accept-Encoding": "gzip"})
    assert headers["content-encoding"] == "gzip"
    assert b"demo_things_total 3.0" in gzip.decompress(body)


def test_api_routes_and_subpaths(admin: AdminServer) -> None:
    """Registered handlers get method, query and body; sub-paths arrive as query['_subpath']."""
    calls: list[tuple[str, dict[str, list[str]], bytes | None]] = []

    def handler(method: str, query: Mapping[str, list[str]], body: bytes | None) -> tuple[int, Any]:
        calls.append((method, dict(query), body))
        return 200, {"ok": True, "q": dict(query)}

    admin.register_api("/api/v1/findings", handler)
    status, _, body = _get(admin, "/api/v1/findings?kind=anomaly&limit=5")
    assert status == 200 and json.loads(body)["q"] == {"kind": ["anomaly"], "limit": ["5"]}
    status, _, body = _get(admin, "/api/v1/findings/abc123")
    assert json.loads(body)["q"] == {"_subpath": ["abc123"]}
    status, _, _ = _get(
        admin, "/api/v1/findings", {"Content-Type": "application/json"}, "POST", b'{"x":1}'
    )
    assert calls[-1] == ("POST", {}, b'{"x":1}')
    assert _get(admin, "/api/v1/nothing")[0] == 404
    with pytest.raises(ValueError, match="already registered"):
        admin.register_api("/api/v1/findings", handler)
    with pytest.raises(ValueError, match="under /api/v1/"):
        admin.register_api("/findings", handler)


def test_api_handler_error_is_500(admin: AdminServer) -> None:
    """An exception in a handler is a JSON 500, and the server keeps serving."""

    def broken(method: str, query: Mapping[str, list[str]], body: bytes | None) -> tuple[int, Any]:
        raise KeyError("x")

    admin.register_api("/api/v1/broken", broken)
    status, _, body = _get(admin, "/api/v1/broken")
    assert status == 500 and json.loads(body) == {"error": "internal error"}
    assert _get(admin, "/healthz")[0] == 200


def test_page_served_from_file(admin: AdminServer) -> None:
    """GET / serves the configured HTML file."""
    status, headers, body = _get(admin, "/")
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert b"otel-agents" in body
    assert _get(admin, "/nope")[0] == 404


def test_token_auth(registry: CollectorRegistry) -> None:
    """With a token, /metrics, the API and the page need it (header or cookie); probes do not."""
    server = AdminServer(
        AdminConfig(endpoint="127.0.0.1:0", auth=AuthConfig(tokens=(TOKEN,))), registry
    )
    server.register_api("/api/v1/x", lambda m, q, b: (200, {"x": 1}))
    server.start()
    try:
        assert _get(server, "/healthz")[0] == 200
        assert _get(server, "/readyz")[0] == 200
        status, headers, _ = _get(server, "/metrics")
        assert status == 401 and headers["www-authenticate"] == "Bearer"
        assert _get(server, "/api/v1/x")[0] == 401
        assert _get(server, "/api/v1/x", {"Authorization": "Bearer wrong"})[0] == 401
        assert _get(server, "/api/v1/x", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
        assert _get(server, "/metrics", {"Cookie": f"otel_agents_token={TOKEN}"})[0] == 200
    finally:
        server.stop()


def test_public_bind_without_token_refused(registry: CollectorRegistry) -> None:
    """Binding beyond loopback without a token is refused unless insecure_public is set."""
    server = AdminServer(AdminConfig(endpoint="0.0.0.0:0"), registry)
    with pytest.raises(ConfigError, match="insecure_public"):
        server.start()


def test_default_admin_endpoint_is_loopback() -> None:
    """The admin endpoint defaults to 127.0.0.1:4319."""
    assert AdminConfig().endpoint == "127.0.0.1:4319"
