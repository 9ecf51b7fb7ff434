# SPDX-License-Identifier: Apache-2.0
"""One outbound-URL policy for notifier targets, applied at save, test and delivery.

Webhook URLs are user-supplied, so a notifier is a server-side request forgery vector (Cortex
#2036, Grafana #123581, goalert #4562). The rules here:

* ``https`` only unless ``allow_http``; no credentials in the URL;
* metadata-service host names are refused by name;
* every address the host name resolves to is checked, and the connection is made to that
  checked address (pinned), so DNS rebinding between check and connect cannot redirect it;
* refused ranges: loopback, RFC 1918, link-local (incl. 169.254.169.254), CGNAT, ULA,
  unspecified, multicast, reserved, benchmarking, documentation and site-local ranges; IPv6
  forms that embed IPv4 (mapped, compatible, NAT64, 6to4, Teredo) are checked on the embedded
  address;
* redirects are followed only for 307/308 and only after the new target passes the same policy;
* ``allow_hosts`` / ``allow_cidrs`` are the explicit, reviewed exceptions (e.g. an on-prem
  Alertmanager, or the loopback sink of a test).

:class:`UrlPolicy` is the single entry point; :func:`post_json` is the only HTTP client the
notifiers use.
"""

from __future__ import annotations

import dataclasses
import http.client
import ipaddress
import json
import socket
import ssl
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = [
    "METADATA_HOSTNAMES",
    "Delivery",
    "EgressConfig",
    "RefusedTarget",
    "UrlPolicy",
    "post_json",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_HOSTNAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.com",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
        "100-100-100-200.metadata",
    }
)

_V4_DENY = [
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",  # RFC 1918
        "100.64.0.0/10",  # CGNAT (RFC 6598); also Alibaba's 100.100.100.200 metadata
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local, cloud metadata 169.254.169.254
        "172.16.0.0/12",  # RFC 1918
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # TEST-NET-1
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",  # RFC 1918
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # TEST-NET-2
        "203.0.113.0/24",  # TEST-NET-3
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, broadcast
    )
]
_V6_DENY = [
    ipaddress.ip_network(n)
    for n in (
        "::/128",  # unspecified
        "::1/128",  # loopback
        "100::/64",  # discard
        "2001:db8::/32",  # documentation
        "fc00::/7",  # ULA (AWS IMDS IPv6 fd00:ec2::254 lives here)
        "fe80::/10",  # link-local
        "fec0::/10",  # deprecated site-local
        "ff00::/8",  # multicast
    )
]
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_6TO4 = ipaddress.ip_network("2002::/16")
_TEREDO = ipaddress.ip_network("2001::/32")
_V4_COMPAT = ipaddress.ip_network("::/96")


class RefusedTarget(Exception):
    """The URL or one of its addresses is not allowed by the egress policy (permanent)."""


@dataclasses.dataclass(frozen=True)
class EgressConfig:
    """Which outbound targets notifiers may reach.

    Attributes:
        allow_http: permit plain ``http://`` (https only by default).
        allow_hosts: host names allowed even when they resolve to refused ranges.
        allow_cidrs: address ranges allowed even when in refused ranges (``127.0.0.1/32``).
        connect_timeout: seconds to connect.
        read_timeout: seconds to wait for the answer.
        max_redirects: 307/308 redirects followed (each re-checked); 0 disables them.
    """

    allow_http: bool = False
    allow_hosts: list[str] = dataclasses.field(default_factory=list)
    allow_cidrs: list[str] = dataclasses.field(default_factory=list)
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    max_redirects: int = 3

    def validate(self) -> list[str]:
        """Problems, each starting with the key."""
        out = []
        for i, c in enumerate(self.allow_cidrs):
            try:
                ipaddress.ip_network(c, strict=False)
            except ValueError:
                out.append(f"allow_cidrs[{i}]: not an address range: {c!r}")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            out.append("connect_timeout: timeouts must be positive")
        if self.max_redirects < 0:
            out.append("max_redirects: must not be negative")
        return out


Resolver = Callable[[str, int], Sequence[str]]


def _system_resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def embedded_ipv4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, NAT64, 6to4, Teredo)."""
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr in _NAT64 or addr in _NAT64_LOCAL:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr.teredo is not None:
        return addr.teredo[1]
    if addr in _V4_COMPAT and int(addr) > 1:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def refused_reason(addr: IPAddress) -> str | None:
    """Why ``addr`` is refused, or ``None`` when it is a public address."""
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.scope_id:
            return "scoped IPv6 address"
        v4 = embedded_ipv4(addr)
        if v4 is not None:
            inner = refused_reason(v4)
            return f"IPv6 address embedding {v4} ({inner})" if inner else None
        for net in _V6_DENY:
            if addr in net:
                return f"address in {net}"
        return None
    for net4 in _V4_DENY:
        if addr in net4:
            return f"address in {net4}"
    return None


@dataclasses.dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (pinned address) and what to ask for."""

    url: str
    scheme: str
    host: str
    port: int
    path: str
    address: str


class UrlPolicy:
    """Checks outbound URLs; the same object serves save, test and delivery."""

    def __init__(
        self, config: EgressConfig | None = None, *, resolver: Resolver | None = None
    ) -> None:
        self.config = config or EgressConfig()
        self._allow_hosts = {h.lower().rstrip(".") for h in self.config.allow_hosts}
        self._allow_nets = [ipaddress.ip_network(c, strict=False) for c in self.config.allow_cidrs]
        self._resolve = resolver or _system_resolve

    def _allowed_address(self, addr: IPAddress) -> bool:
        return any(addr.version == n.version and addr in n for n in self._allow_nets)

    def check_syntax(self, url: str) -> urllib.parse.SplitResult:
        """Static checks only (scheme, credentials, metadata names, literal addresses).

        Used when a notifier is saved; :meth:`resolve` repeats them with DNS at delivery.

        Raises:
            RefusedTarget: naming the reason (never echoing secrets in the URL's path/query).
        """
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise RefusedTarget(f"invalid URL: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme not in ("https", "http"):
            raise RefusedTarget(f"scheme {scheme or '(none)'!r} is not allowed")
        if scheme == "http" and not self.config.allow_http:
            raise RefusedTarget("plain http is not allowed (set allow_http)")
        if parts.username is not None or parts.password is not None:
            raise RefusedTarget("credentials in the URL are not allowed")
        host = (parts.hostname or "").lower().rstrip(".")
        if not host:
            raise RefusedTarget("URL has no host")
        if port is not None and not 0 < port < 65536:
            raise RefusedTarget("invalid port")
        self.check_host(host)
        return parts

    def check_host(self, host: str) -> None:
        """Refuse metadata names and refused literal addresses (allow-lists win).

        Raises:
            RefusedTarget: when the host is refused.
        """
        host = host.lower().rstrip(".")
        if host in self._allow_hosts:
            return
        if host in METADATA_HOSTNAMES or host.endswith(".metadata.google.internal"):
            raise RefusedTarget(f"host {host!r} is a cloud metadata service")
        addr = _literal(host)
        if addr is not None:
            self.check_address(addr, host)

    def check_address(self, addr: IPAddress, host: str) -> None:
        """Refuse one resolved/literal address unless allow-listed.

        Raises:
            RefusedTarget: naming the address and the range.
        """
        if host.lower().rstrip(".") in self._allow_hosts or self._allowed_address(addr):
            return
        reason = refused_reason(addr)
        if reason is not None:
            raise RefusedTarget(f"{host} -> {addr}: {reason}")

    def resolve(self, url: str) -> Target:
        """Full check with DNS: every address of the host must pass; connect to the first.

        Raises:
            RefusedTarget: when any resolved address is refused.
            OSError: when the name does not resolve (retryable).
        """
        parts = self.check_syntax(url)
        host = (parts.hostname or "").lower().rstrip(".")
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        address = self.resolve_endpoint(host, port)
        path = parts.path or "/"
        if parts.query:
            path = f"{path}?{parts.query}"
        return Target(url, parts.scheme.lower(), host, port, path, address)

    def resolve_endpoint(self, host: str, port: int) -> str:
        """Check ``host`` and every address it resolves to; the address to connect to.

        Used directly for non-HTTP targets (SMTP smarthosts).

        Raises:
            RefusedTarget: when the host or any of its addresses is refused.
        """
        host = host.lower().rstrip(".").strip("[]")
        self.check_host(host)
        literal = _literal(host)
        if literal is not None:
            addresses = [str(literal)]
        else:
            try:
                addresses = list(dict.fromkeys(self._resolve(host, port)))
            except OSError as exc:
                # A lookup failure is transient (retryable), not a refusal.
                raise OSError(f"{host}: cannot resolve ({exc.__class__.__name__})") from None
        if not addresses:
            raise RefusedTarget(f"{host}: no address")
        for a in addresses:
            addr = ipaddress.ip_address(a.split("%", 1)[0]) if "%" not in a else None
            if addr is None:
                raise RefusedTarget(f"{host} -> {a}: scoped IPv6 address")
            self.check_address(addr, host)
        return addresses[0]

    def check(self, url: str) -> None:
        """Save/test-time check (with DNS). Raises :class:`RefusedTarget`."""
        self.resolve(url)


def _literal(host: str) -> IPAddress | None:
    h = host.strip("[]")
    try:
        return ipaddress.ip_address(h)
    except ValueError:
        pass
    # Legacy numeric forms that resolvers accept (2130706433, 0x7f000001, 0177.0.0.1, 127.1).
    if h and all(c in "0123456789abcdefx." for c in h) and any(c.isdigit() for c in h):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(h))
        except OSError:
            return None
    return None


@dataclasses.dataclass(frozen=True)
class Delivery:
    """Result of one HTTP delivery (the body is never handed back beyond a short excerpt)."""

    status: int
    headers: Mapping[str, str]
    excerpt: str


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, target: Target, timeout: float, connect_timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._target = target
        self._connect_timeout = connect_timeout

    def connect(self) -> None:
        self.sock = socket.create_connection(
            (self._target.address, self._target.port), timeout=self._connect_timeout
        )
        self.sock.settimeout(self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(
        self, target: Target, timeout: float, connect_timeout: float, context: ssl.SSLContext
    ) -> None:
        super().__init__(target.host, target.port, timeout=timeout, context=context)
        self._target = target
        self._connect_timeout = connect_timeout
        self._ctx = context

    def connect(self) -> None:
        raw = socket.create_connection(
            (self._target.address, self._target.port), timeout=self._connect_timeout
        )
        raw.settimeout(self.timeout)
        # Certificate verification and SNI use the URL's host name, the TCP connection the
        # checked address.
        self.sock = self._ctx.wrap_socket(raw, server_hostname=self._target.host)


def post_json(
    policy: UrlPolicy,
    url: str,
    body: Any,
    *,
    headers: Mapping[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> Delivery:
    """POST ``body`` as JSON to ``url`` through the policy (checked per hop, address pinned).

    Raises:
        RefusedTarget: the URL or a redirect target is refused (do not retry).
        OSError: connection problems (retryable).
    """
    data = json.dumps(body, separators=(",", ":")).encode()
    hdrs = {"Content-Type": "application/json", "User-Agent": "otel-agents-notifier/0.1"}
    hdrs.update(headers or {})
    cfg = policy.config
    current = url
    for _hop in range(cfg.max_redirects + 1):
        target = policy.resolve(current)
        conn: http.client.HTTPConnection
        if target.scheme == "https":
            conn = _PinnedHTTPSConnection(
                target,
                cfg.read_timeout,
                cfg.connect_timeout,
                ssl_context or ssl.create_default_context(),
            )
        else:
            conn = _PinnedHTTPConnection(target, cfg.read_timeout, cfg.connect_timeout)
        try:
            conn.request("POST", target.path, body=data, headers=hdrs)
            resp = conn.getresponse()
            raw = resp.read(4096)
            status = resp.status
            resp_headers = {k.lower(): v for k, v in resp.getheaders()}
        finally:
            conn.close()
        if status in (301, 302, 303, 307, 308):
            location = resp_headers.get("location")
            if status not in (307, 308) or not location:
                # A 301/302/303 would turn the POST into a GET and drop the payload: report it
                # as a failure instead of following.
                return Delivery(status, resp_headers, "redirect not followed")
            current = urllib.parse.urljoin(current, location)
            continue
        return Delivery(status, resp_headers, raw[:512].decode("utf-8", "replace"))
    raise RefusedTarget(f"more than {cfg.max_redirects} redirects")
