# SPDX-License-Identifier: Apache-2.0
"""Bearer tokens before parsing, TLS / mTLS with generated certificates, bind policy (RC-14)."""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import os
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult

from otel_agents._errors import ConfigError
from otel_agents.receiver import AuthConfig, BearerAuthenticator, GrpcConfig, HttpConfig, TlsConfig
from otel_agents.receiver._auth import check_exposure, is_loopback_host

from ._transport_fixtures import Stack, grpc_call, http_post, stack_fixture, trace_request

TOKEN = "tok-" + "a" * 28


@pytest.fixture
def stack() -> Iterator[Stack]:
    auth = AuthConfig(tokens=(TOKEN, "second-token"))
    yield from stack_fixture(
        grpc_config=GrpcConfig(endpoint="127.0.0.1:0", auth=auth),
        http_config=HttpConfig(endpoint="127.0.0.1:0", auth=auth),
    )


def test_grpc_missing_or_wrong_token_is_unauthenticated_before_parsing(stack: Stack) -> None:
    """No/wrong token → UNAUTHENTICATED even for garbage bytes (nothing was parsed)."""
    for md in (None, [("authorization", "Bearer nope")], [("authorization", TOKEN)]):
        result = grpc_call(stack.grpc_target, b"\xff\xff garbage", metadata=md)
        assert result.code == grpc.StatusCode.UNAUTHENTICATED, md
    ok = [("authorization", f"Bearer {TOKEN}")]
    assert (
        grpc_call(stack.grpc_target, b"\xff\xff", metadata=ok).code
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    good = trace_request(2).SerializeToString()
    assert grpc_call(stack.grpc_target, good, metadata=ok).code == grpc.StatusCode.OK
    other = [("authorization", "bearer second-token")]  # scheme is case-insensitive
    assert grpc_call(stack.grpc_target, good, metadata=other).code == grpc.StatusCode.OK
    assert stack.ingestor.items == 4
    assert (
        stack.registry.get_sample_value(
            "otel_agents_receiver_requests_total",
            {"signal": "traces", "transport": "grpc", "code": "UNAUTHENTICATED"},
        )
        == 3
    )


def test_http_401_before_the_body_is_read(stack: Stack) -> None:
    """No/wrong token → 401 + WWW-Authenticate, even with a garbage body; right token parses."""
    r = http_post(stack, "/v1/traces", b"\xff\xff garbage")
    assert r.status == 401 and r.headers["www-authenticate"] == "Bearer"
    assert http_post(stack, "/v1/traces", b"\xff", {"Authorization": "Bearer x"}).status == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert http_post(stack, "/v1/traces", b"\xff\xff", auth).status == 400
    assert http_post(stack, "/v1/traces", trace_request(1).SerializeToString(), auth).status == 200
    assert stack.ingestor.items == 1


def test_http_401_without_waiting_for_a_huge_body(stack: Stack) -> None:
    """A 50 MB Content-Length with a bad token is answered at once; the body is never sent."""
    import socket

    with socket.create_connection(("127.0.0.1", stack.http.port), timeout=5) as s:
        s.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            b"Content-Length: 50000000\r\n\r\n"
        )
        assert s.recv(1024).startswith(b"HTTP/1.1 401")


def test_token_file_rotation(tmp_path: Path) -> None:
    """Tokens from token_file are re-read when the file changes."""
    path = tmp_path / "tokens"
    path.write_text("first\n")
    auth = BearerAuthenticator(AuthConfig(token_file=str(path)))
    assert auth.check("Bearer first") and not auth.check("Bearer second")
    path.write_text("second\n\n")
    os.utime(path, (time.time() + 5, time.time() + 5))  # mtime granularity
    assert auth.check("Bearer second") and not auth.check("Bearer first")
    with pytest.raises(ConfigError, match="token_file"):
        BearerAuthenticator(AuthConfig(token_file=str(tmp_path / "missing")))


def test_auth_config_never_prints_tokens() -> None:
    """repr() of the auth config redacts the tokens."""
    assert TOKEN not in repr(AuthConfig(tokens=(TOKEN,)))


def test_exposure_policy() -> None:
    """Non-loopback binds need a token or mTLS unless insecure_public (RC-14)."""
    none, tls = AuthConfig(), TlsConfig()
    check_exposure("grpc", "127.0.0.1:4317", tls, none, False)
    check_exposure("grpc", "localhost:4317", tls, none, False)
    check_exposure("grpc", "[::1]:4317", tls, none, False)
    with pytest.raises(ConfigError, match=r"grpc\.endpoint"):
        check_exposure("grpc", "0.0.0.0:4317", tls, none, False)
    check_exposure("grpc", "0.0.0.0:4317", tls, AuthConfig(tokens=("t",)), False)
    check_exposure("grpc", "0.0.0.0:4317", TlsConfig("c", "k", "ca"), none, False)
    check_exposure("grpc", "0.0.0.0:4317", tls, none, True)
    assert is_loopback_host("127.0.0.2") and not is_loopback_host("10.0.0.1")


def test_servers_refuse_public_bind_without_auth() -> None:
    """GrpcServer/HttpServer.start() refuse 0.0.0.0 without credentials."""
    with pytest.raises(ConfigError, match="insecure_public"):
        next(stack_fixture(grpc_config=GrpcConfig(endpoint="0.0.0.0:0")))
    with pytest.raises(ConfigError, match="insecure_public"):
        next(stack_fixture(http_config=HttpConfig(endpoint="0.0.0.0:0")))


# -- TLS ----------------------------------------------------------------------------------------


def _cert(
    subject: str,
    issuer_key: ec.EllipticCurvePrivateKey | None,
    issuer: x509.Name | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return key, builder.sign(issuer_key or key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    ca_key, ca = _cert("test-ca", None, None, ca=True)
    srv_key, srv = _cert("localhost", ca_key, ca.subject, server=True)
    cli_key, cli = _cert("client", ca_key, ca.subject)
    files = {}
    for name, key, cert in (("ca", ca_key, ca), ("server", srv_key, srv), ("client", cli_key, cli)):
        files[f"{name}.crt"] = d / f"{name}.crt"
        files[f"{name}.crt"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{name}.key"] = d / f"{name}.key"
        files[f"{name}.key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return files


def _tls(pki: dict[str, Path], mtls: bool) -> TlsConfig:
    return TlsConfig(
        cert_file=str(pki["server.crt"]),
        key_file=str(pki["server.key"]),
        client_ca_file=str(pki["ca.crt"]) if mtls else None,
    )


def test_tls_grpc_with_official_exporter_and_token(pki: dict[str, Path]) -> None:
    """The SDK gRPC exporter over TLS with a bearer token header is accepted."""
    tls = _tls(pki, mtls=False)
    auth = AuthConfig(tokens=(TOKEN,))
    gen = stack_fixture(grpc_config=GrpcConfig(endpoint="127.0.0.1:0", tls=tls, auth=auth))
    stack = next(gen)
    try:
        creds = grpc.ssl_channel_credentials(root_certificates=pki["ca.crt"].read_bytes())
        exporter = OTLPSpanExporter(
            endpoint=f"localhost:{stack.grpc.port}",
            credentials=creds,
            headers={"authorization": f"Bearer {TOKEN}"},
        )
        span = TracerProvider().get_tracer("t").start_span("tls")
        span.end()
        assert isinstance(span, ReadableSpan)
        assert exporter.export([span]) is SpanExportResult.SUCCESS
        exporter.shutdown()
        assert [s.name for s in stack.ingestor.spans()] == ["tls"]
        # Plaintext against the TLS port fails.
        plain = grpc_call(stack.grpc_target, b"", timeout=2)
        assert plain.code == grpc.StatusCode.UNAVAILABLE
    finally:
        gen.close()


def test_mtls_grpc_requires_client_certificate(pki: dict[str, Path]) -> None:
    """With client_ca_file, a client without a certificate cannot connect; with one it can."""
    gen = stack_fixture(grpc_config=GrpcConfig(endpoint="127.0.0.1:0", tls=_tls(pki, mtls=True)))
    stack = next(gen)
    try:
        target = f"localhost:{stack.grpc.port}"
        ca = pki["ca.crt"].read_bytes()
        no_cert = grpc.ssl_channel_credentials(root_certificates=ca)
        result = grpc_call(target, b"", credentials=no_cert, timeout=2)
        assert result.code == grpc.StatusCode.UNAVAILABLE
        with_cert = grpc.ssl_channel_credentials(
            root_certificates=ca,
            private_key=pki["client.key"].read_bytes(),
            certificate_chain=pki["client.crt"].read_bytes(),
        )
        body = trace_request(1).SerializeToString()
        assert grpc_call(target, body, credentials=with_cert).code == grpc.StatusCode.OK
    finally:
        gen.close()


def test_mtls_http(pki: dict[str, Path]) -> None:
    """HTTPS with mTLS: no client cert → handshake failure; with cert → 200."""
    gen = stack_fixture(http_config=HttpConfig(endpoint="127.0.0.1:0", tls=_tls(pki, mtls=True)))
    stack = next(gen)
    try:
        body = trace_request(1).SerializeToString()
        ctx = ssl.create_default_context(cafile=str(pki["ca.crt"]))
        conn = http.client.HTTPSConnection("localhost", stack.http.port, context=ctx, timeout=5)
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            conn.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
            conn.getresponse().read()
        conn.close()
        ctx.load_cert_chain(str(pki["client.crt"]), str(pki["client.key"]))
        conn = http.client.HTTPSConnection("localhost", stack.http.port, context=ctx, timeout=5)
        conn.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
        assert conn.getresponse().status == 200
        conn.close()
        assert stack.ingestor.items == 1
    finally:
        gen.close()


def test_tls_config_validation() -> None:
    """cert_file without key_file, or a client CA without a server cert, is a config error."""
    from otel_agents._configtypes import decode

    with pytest.raises(ConfigError, match="cert_file"):
        decode(TlsConfig, {"cert_file": "a.crt"}, "grpc.tls")
    with pytest.raises(ConfigError, match="client_ca_file"):
        decode(TlsConfig, {"client_ca_file": "ca.crt"}, "grpc.tls")


def test_admin_over_tls_with_token(pki: dict[str, Path]) -> None:
    """The admin endpoint serves HTTPS; /metrics needs the token, /healthz does not."""
    from prometheus_client import CollectorRegistry

    from otel_agents.receiver import AdminConfig, AdminServer

    server = AdminServer(
        AdminConfig(
            endpoint="127.0.0.1:0", tls=_tls(pki, mtls=False), auth=AuthConfig(tokens=(TOKEN,))
        ),
        CollectorRegistry(),
    )
    server.start()
    try:
        ctx = ssl.create_default_context(cafile=str(pki["ca.crt"]))

        def get(path: str, headers: dict[str, str]) -> int:
            conn = http.client.HTTPSConnection("localhost", server.port, context=ctx, timeout=5)
            try:
                conn.request("GET", path, headers=headers)
                return conn.getresponse().status
            finally:
                conn.close()

        assert get("/healthz", {}) == 200
        assert get("/metrics", {}) == 401
        assert get("/metrics", {"Authorization": f"Bearer {TOKEN}"}) == 200
    finally:
        server.stop()


def _write_pair(cert_path: Path, key_path: Path, key: Any, cert: x509.Certificate) -> None:
    # Write both, then push the mtimes forward: the watcher compares (mtime, size).
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    later = time.time() + 10
    for p in (cert_path, key_path):
        os.utime(p, (later, later))


def test_certificates_rotate_without_restart(tmp_path: Path) -> None:
    """After the cert/key files are replaced, new gRPC and HTTPS connections get the new cert."""
    ca1_key, ca1 = _cert("ca-one", None, None, ca=True)
    ca2_key, ca2 = _cert("ca-two", None, None, ca=True)
    cert_path, key_path = tmp_path / "server.crt", tmp_path / "server.key"
    _write_pair(cert_path, key_path, *_cert("localhost", ca1_key, ca1.subject, server=True))
    tls = TlsConfig(cert_file=str(cert_path), key_file=str(key_path))
    gen = stack_fixture(
        grpc_config=GrpcConfig(endpoint="127.0.0.1:0", tls=tls),
        http_config=HttpConfig(endpoint="127.0.0.1:0", tls=tls),
    )
    stack = next(gen)
    pem1 = ca1.public_bytes(serialization.Encoding.PEM)
    pem2 = ca2.public_bytes(serialization.Encoding.PEM)
    body = trace_request(1).SerializeToString()

    def grpc_ok(ca_pem: bytes) -> bool:
        creds = grpc.ssl_channel_credentials(root_certificates=ca_pem)
        target = f"localhost:{stack.grpc.port}"
        return grpc_call(target, body, credentials=creds, timeout=3).code == grpc.StatusCode.OK

    def https_ok(ca_pem: bytes) -> bool:
        ctx = ssl.create_default_context(cadata=ca_pem.decode())
        conn = http.client.HTTPSConnection("localhost", stack.http.port, context=ctx, timeout=5)
        try:
            conn.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
            return conn.getresponse().status == 200
        except (ssl.SSLError, OSError):
            return False
        finally:
            conn.close()

    try:
        assert grpc_ok(pem1) and https_ok(pem1)
        _write_pair(cert_path, key_path, *_cert("localhost", ca2_key, ca2.subject, server=True))
        deadline = time.monotonic() + 5  # the watcher looks at most once a second
        while time.monotonic() < deadline and not (grpc_ok(pem2) and https_ok(pem2)):
            time.sleep(0.2)
        assert grpc_ok(pem2) and https_ok(pem2)
        assert not https_ok(pem1)
    finally:
        gen.close()


def _non_loopback_ip() -> str | None:
    import socket

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 9))  # UDP connect: picks a route, sends nothing
            ip = str(s.getsockname()[0])
    except OSError:
        return None
    return None if ip.startswith("127.") or ip == "0.0.0.0" else ip


def test_default_endpoints_are_unreachable_from_other_interfaces(stack: Stack) -> None:
    """RC-14: servers bound like the defaults (127.0.0.1) refuse connections on the host's
    other addresses; the default endpoints are all loopback."""
    import socket

    from otel_agents.receiver import AdminConfig

    for cfg in (GrpcConfig(), HttpConfig(), AdminConfig()):
        assert cfg.endpoint.startswith("127.0.0.1:")
    ip = _non_loopback_ip()
    if ip is None:
        pytest.skip("this host has no non-loopback IPv4 address")
    for port in (stack.grpc.port, stack.http.port):
        with pytest.raises(OSError):
            socket.create_connection((ip, port), timeout=2).close()
