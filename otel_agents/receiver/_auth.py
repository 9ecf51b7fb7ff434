# SPDX-License-Identifier: Apache-2.0
"""Authentication and exposure: bearer tokens, TLS / mTLS server credentials, bind policy.

Tokens are checked from the request headers / gRPC metadata *before* the body is read or
parsed (cheap refusal, reliability.md §4.1), compared in constant time, and never logged.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

from otel_agents._errors import ConfigError
from otel_agents.receiver._transport_config import AuthConfig, TlsConfig, split_endpoint

_log = logging.getLogger("otel_agents.receiver")

__all__ = [
    "BearerAuthenticator",
    "ReloadingSSLContext",
    "check_exposure",
    "grpc_server_credentials",
    "http_ssl_context",
    "is_loopback_host",
]


class BearerAuthenticator:
    """Checks ``<scheme> <token>`` credentials against the configured tokens.

    ``token_file`` holds one token per line and is re-read when its modification time changes,
    so tokens rotate without a restart (like ``bearertokenauth``'s ``filename``).
    """

    def __init__(self, config: AuthConfig) -> None:
        self.config = config
        self.header = config.header
        self._prefix = config.scheme.lower() + " "
        self._static = [t.encode() for t in config.tokens]
        self._file_tokens: list[bytes] = []
        self._file_mtime: float | None = None
        self._lock = threading.Lock()
        if config.token_file is not None:
            self._reload(force=True)

    @property
    def enabled(self) -> bool:
        """Whether credentials are required."""
        return self.config.enabled

    def check(self, value: str | bytes | None) -> bool:
        """Whether ``value`` (the header / metadata value) carries an accepted token."""
        if not self.enabled:
            return True
        if value is None:
            return False
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        if value[: len(self._prefix)].lower() != self._prefix:
            return False
        presented = value[len(self._prefix) :].strip().encode()
        tokens = self._static + self._current_file_tokens()
        ok = False
        for token in tokens:
            # Compare against every token (no early exit), each in constant time, so timing
            # reveals neither the token nor which one matched.
            ok |= hmac.compare_digest(presented, token)
        return ok

    def check_metadata(self, metadata: Any) -> bool:
        """Check gRPC invocation metadata (a sequence of ``(key, value)`` pairs)."""
        if not self.enabled:
            return True
        for key, value in metadata:
            if key == self.header:
                return self.check(value)
        return False

    def _current_file_tokens(self) -> list[bytes]:
        if self.config.token_file is None:
            return []
        self._reload(force=False)
        return self._file_tokens

    def _reload(self, *, force: bool) -> None:
        path = self.config.token_file
        assert path is not None
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            if force:
                raise ConfigError(f"auth.token_file: cannot read {path!r}") from None
            return  # keep the last good tokens while the file is being replaced
        if not force and mtime == self._file_mtime:
            return
        with self._lock:
            try:
                lines = Path(path).read_text(encoding="utf-8").splitlines()
            except OSError:
                if force:
                    raise ConfigError(f"auth.token_file: cannot read {path!r}") from None
                return
            self._file_tokens = [ln.strip().encode() for ln in lines if ln.strip()]
            self._file_mtime = mtime


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (an address or a name) only reaches this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def check_exposure(
    name: str, endpoint: str, tls: TlsConfig, auth: AuthConfig, insecure_public: bool
) -> None:
    """Refuse to serve a non-loopback address without credentials (reliability.md §4.1).

    Raises:
        ConfigError: bound beyond loopback with neither a token nor mTLS, and
            ``insecure_public`` not set.
    """
    host, _port = split_endpoint(endpoint)
    if is_loopback_host(host) or insecure_public:
        return
    if auth.enabled or tls.client_ca_file is not None:
        return
    raise ConfigError(
        f"{name}.endpoint: {endpoint!r} is reachable from other machines but neither "
        f"{name}.auth (bearer token) nor {name}.tls.client_ca_file (mTLS) is set; configure "
        f"one, or set {name}.insecure_public: true to accept unauthenticated traffic"
    )


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"tls.{what}: cannot read {path!r}: {exc.strerror}") from None


class _CertFiles:
    """Watches the TLS files; ``changed()`` is true once per modification (checked ≤ 1/s).

    Certificates rotate without a restart, like the Collector's ``reload_interval``: new
    connections get the new files, established ones keep theirs.
    """

    def __init__(self, tls: TlsConfig) -> None:
        self.paths = [p for p in (tls.cert_file, tls.key_file, tls.client_ca_file) if p]
        self._lock = threading.Lock()
        self._checked = time.monotonic()
        self._stamp = self._stat()

    def _stat(self) -> tuple[tuple[float, int], ...]:
        out = []
        for p in self.paths:
            try:
                st = os.stat(p)
                out.append((st.st_mtime, st.st_size))
            except OSError:
                out.append((0.0, -1))
        return tuple(out)

    def changed(self) -> bool:
        now = time.monotonic()
        with self._lock:
            if now - self._checked < 1.0:
                return False
            self._checked = now
            stamp = self._stat()
            if stamp == self._stamp or any(size < 0 for _, size in stamp):
                return False  # unchanged, or mid-replacement: keep the current files
            self._stamp = stamp
            return True


def grpc_server_credentials(tls: TlsConfig) -> Any:
    """``grpc.ServerCredentials`` for ``tls`` (client certificates required when a CA is set).

    The files are re-read when they change (checked at most once a second, before a handshake).
    """
    import grpc

    assert tls.cert_file is not None and tls.key_file is not None
    cert_file, key_file, ca_file = tls.cert_file, tls.key_file, tls.client_ca_file

    def load() -> Any:
        key = _read(key_file, "key_file")
        cert = _read(cert_file, "cert_file")
        ca = _read(ca_file, "client_ca_file") if ca_file else None
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    watch = _CertFiles(tls)

    def fetch() -> Any:
        if not watch.changed():
            return None
        try:
            return load()
        except ConfigError:
            _log.warning("TLS files changed but cannot be read; keeping the current ones")
            return None

    return grpc.dynamic_ssl_server_credentials(
        load(), fetch, require_client_authentication=ca_file is not None
    )


class ReloadingSSLContext:
    """A server ``SSLContext`` for ``tls`` that is rebuilt when the files change.

    ``CERT_REQUIRED`` when a client CA is set; minimum version from ``tls.min_version``.
    """

    def __init__(self, tls: TlsConfig) -> None:
        self.tls = tls
        self._ctx = http_ssl_context(tls)
        self._watch = _CertFiles(tls)

    def current(self) -> ssl.SSLContext:
        """The context for the next handshake."""
        if self._watch.changed():
            try:
                self._ctx = http_ssl_context(self.tls)
            except ConfigError:
                _log.warning("TLS files changed but cannot be loaded; keeping the current ones")
        return self._ctx


def http_ssl_context(tls: TlsConfig) -> ssl.SSLContext:
    """A server ``SSLContext`` for ``tls`` (``CERT_REQUIRED`` when a client CA is set)."""
    assert tls.cert_file is not None and tls.key_file is not None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if tls.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    )
    try:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls.cert_file: cannot load certificate/key: {exc}") from None
    if tls.client_ca_file:
        try:
            ctx.load_verify_locations(tls.client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"tls.client_ca_file: cannot load: {exc}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
