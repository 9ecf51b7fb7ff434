# SPDX-License-Identifier: Apache-2.0
"""The egress policy refuses private, loopback and metadata targets (literal, resolved,
redirected) unless explicitly allowed, identically at save, test and delivery."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from otel_agents.exporters._notifiers import (
    NotifierWorker,
    ReceiverConfig,
    RetryConfig,
    WebhookConfig,
    WebhookNotifier,
    build_receivers,
)
from otel_agents.exporters._ssrf import EgressConfig, RefusedTarget, UrlPolicy, post_json
from otel_agents.processors._alert_state import Notification

from otel_agents._errors import ConfigError
from tests.exporters.test_notifiers_sink import WebhookSink, start_sink

REFUSED_LITERALS = [
    "https://127.0.0.1/", "https://127.8.9.10/", "https://10.1.2.3/", "https://172.16.0.1/",
    "https://172.31.255.255/", "https://192.168.1.1/", "https://169.254.169.254/latest/meta-data",
    "https://100.64.0.1/", "https://100.100.100.200/", "https://0.0.0.0/", "https://[::1]/",
    "https://[::]/", "https://[fd00:ec2::254]/", "https://[fe80::1]/", "https://[fc00::1]/",
    "https://[::ffff:127.0.0.1]/", "https://[::ffff:169.254.169.254]/",
    "https://[::ffff:a9fe:a9fe]/", "https://[64:ff9b::a9fe:a9fe]/", "https://[2002:7f00:1::]/",
    "https://[::127.0.0.1]/", "https://2130706433/", "https://0x7f000001/", "https://0177.0.0.1/",
    "https://127.1/", "https://224.0.0.1/", "https://255.255.255.255/", "https://198.18.0.1/",
    "https://metadata.google.internal/computeMetadata/v1/", "https://metadata/",
    "https://instance-data/latest", "https://METADATA.GOOGLE.INTERNAL./",
]  # fmt: skip


def _no_dns(host: str, port: int) -> Sequence[str]:
    raise AssertionError(f"unexpected DNS lookup of {host}")


@pytest.mark.parametrize("url", REFUSED_LITERALS)
def test_refused_literal_and_metadata_targets(url: str) -> None:
    """Every private, loopback, link-local, mapped or metadata target is refused."""
    with pytest.raises(RefusedTarget):
        UrlPolicy(resolver=_no_dns).check(url)


def test_public_literal_and_scheme_rules() -> None:
    """Public https targets pass; http, credentials and other schemes are refused by default."""
    p = UrlPolicy(resolver=_no_dns)
    p.check("https://93.184.216.34/hook")
    p.check("https://[2606:2800:220:1:248:1893:25c8:1946]:8443/x")
    for url in ("http://93.184.216.34/", "ftp://93.184.216.34/", "https://u:p@93.184.216.34/",
                "file:///etc/passwd", "https:///nohost"):  # fmt: skip
        with pytest.raises(RefusedTarget):
            p.check(url)
    UrlPolicy(EgressConfig(allow_http=True), resolver=_no_dns).check("http://93.184.216.34/")


def test_hostname_resolving_to_private_addresses_is_refused() -> None:
    """A name is refused when any address it resolves to is refused (real resolver for
    localhost; a fixed resolver for names that must not leave the machine)."""
    with pytest.raises(RefusedTarget, match="localhost"):
        UrlPolicy().check("https://localhost/hook")
    answers = {"evil.test": ["10.0.0.5"], "mixed.test": ["93.184.216.34", "fd00::1"],
               "mapped.test": ["::ffff:192.168.0.1"], "ok.test": ["93.184.216.34"]}  # fmt: skip
    p = UrlPolicy(resolver=lambda h, _p: answers[h])
    for host in ("evil.test", "mixed.test", "mapped.test"):
        with pytest.raises(RefusedTarget, match=host):
            p.check(f"https://{host}/")
    assert p.resolve("https://ok.test/x?y=1").address == "93.184.216.34"


def test_allowlist_is_explicit_and_narrow() -> None:
    """allow_cidrs / allow_hosts open exactly what they name."""
    p = UrlPolicy(EgressConfig(allow_http=True, allow_cidrs=["127.0.0.1/32"]), resolver=_no_dns)
    p.check("http://127.0.0.1:9/")
    with pytest.raises(RefusedTarget):
        p.check("http://127.0.0.2:9/")
    with pytest.raises(RefusedTarget):
        p.check("http://169.254.169.254/")
    h = UrlPolicy(EgressConfig(allow_hosts=["am.internal"]), resolver=lambda _h, _p: ["10.0.0.7"])
    h.check("https://am.internal/api/v2/alerts")
    with pytest.raises(RefusedTarget):
        h.check("https://other.internal/")


@given(st.sampled_from(["10.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
                        "192.168.0.0/16", "100.64.0.0/10"]), st.integers(0, 2**32 - 1))  # fmt: skip
@settings(max_examples=300, deadline=None)
def test_every_private_ipv4_and_its_ipv6_forms_are_refused(net: str, n: int) -> None:
    """Any address of a refused IPv4 range is refused as literal, mapped and NAT64 IPv6."""
    network = ipaddress.ip_network(net)
    addr = network[n % network.num_addresses]
    p = UrlPolicy(resolver=_no_dns)
    for host in (str(addr), f"[::ffff:{addr}]", f"[64:ff9b::{addr}]"):
        with pytest.raises(RefusedTarget):
            p.check(f"https://{host}/")


@pytest.fixture
def sink() -> Iterator[WebhookSink]:
    """Loopback webhook sink."""
    with start_sink() as s:
        yield s


def test_redirects_are_rechecked(sink: WebhookSink) -> None:
    """A 307 to a refused target is refused; a 307 to an allowed one is followed; 302 is not."""
    p = UrlPolicy(EgressConfig(allow_http=True, allow_cidrs=["127.0.0.1/32"]))
    port = sink.server.server_address[1]
    for target in (f"http://127.0.0.2:{port}/x", "http://169.254.169.254/latest",
                   f"http://[::1]:{port}/", f"http://localhost.:{port}/"):  # fmt: skip
        sink.respond((307, {"Location": target}))
        if "localhost" in target:
            # localhost resolves to loopback addresses beyond 127.0.0.1/32 on some systems; on
            # others only to 127.0.0.1 — either way the answer is decided by the same policy
            try:
                p.resolve(target)
            except RefusedTarget:
                with pytest.raises(RefusedTarget):
                    post_json(p, f"{sink.url}/start", {"a": 1})
            else:
                post_json(p, f"{sink.url}/start", {"a": 1})
            continue
        with pytest.raises(RefusedTarget):
            post_json(p, f"{sink.url}/start", {"a": 1})
    n_before = len(sink.received)
    sink.respond((308, {"Location": "/moved"}))
    d = post_json(p, f"{sink.url}/start", {"a": 1})
    assert d.status == 200
    got = sink.wait_for(n_before + 2)
    assert [r.path for r in got[-2:]] == ["/start", "/moved"]
    assert got[-1].body == {"a": 1}
    sink.respond((302, {"Location": "/elsewhere"}))
    assert post_json(p, f"{sink.url}/start", {}).status == 302


def test_connection_is_pinned_to_the_checked_address(sink: WebhookSink) -> None:
    """Delivery connects to the address that passed the check, not to a second lookup."""
    lookups: list[str] = []

    def resolver(host: str, _port: int) -> list[str]:
        lookups.append(host)
        # first answer allowed; a rebinding second answer would be refused
        return ["127.0.0.1"] if len(lookups) == 1 else ["169.254.169.254"]

    p = UrlPolicy(EgressConfig(allow_http=True, allow_cidrs=["127.0.0.1/32"]), resolver=resolver)
    port = sink.server.server_address[1]
    assert post_json(p, f"http://hook.test:{port}/pinned", {"x": 1}).status == 200
    (r,) = sink.wait_for(1)
    assert r.headers["host"] == f"hook.test:{port}" and lookups == ["hook.test"]


def test_same_policy_at_save_test_and_delivery(sink: WebhookSink) -> None:
    """The refused URL fails config load, the test path and delivery alike; delivery is not
    retried."""
    bad = "http://169.254.169.254/hook"
    policy = UrlPolicy(EgressConfig(allow_http=True, allow_cidrs=["127.0.0.1/32"]))
    with pytest.raises(ConfigError, match="target refused"):
        build_receivers([ReceiverConfig("r", [WebhookConfig(url=bad)])], policy)
    n = WebhookNotifier("r", 0, WebhookConfig(url=bad), policy)
    with pytest.raises(RefusedTarget):
        n.check()
    outcomes: list[tuple[str, str]] = []
    w = NotifierWorker(
        RetryConfig(initial_interval=0.01), on_outcome=lambda k, o: outcomes.append((k, o))
    )
    w.start()
    note = Notification("r", "{}:{}", "firing", {}, {}, {}, (), 0.0)
    w.submit(n.name, n.kind, lambda: n.notify(note))
    assert w.wait_idle(5)
    w.shutdown()
    assert outcomes == [("webhook", "refused")]


def test_smtp_smarthost_goes_through_the_same_policy() -> None:
    """An email smarthost on a metadata or private address is refused at save time too."""
    from otel_agents.exporters._notifiers import EmailConfig

    policy = UrlPolicy(resolver=_no_dns)
    for host in ("169.254.169.254:25", "10.0.0.1:587", "[::1]:25", "metadata.google.internal:25"):
        with pytest.raises(ConfigError, match=r"email_configs|email\[0\]"):
            build_receivers(
                [ReceiverConfig("r", email_configs=[EmailConfig(to=["a@b.c"], smarthost=host)])],
                policy,
            )


def test_https_delivery_verifies_the_url_host_on_the_pinned_connection(tmp_path: Path) -> None:
    """Over https the certificate is checked against the URL's host while TCP goes to the
    checked address: right name passes, a name the certificate does not cover fails."""
    import ssl
    import threading
    from http.server import ThreadingHTTPServer

    from tests.exporters.test_notifiers import _self_signed
    from tests.exporters.test_notifiers_sink import _handler

    cert, key = _self_signed(tmp_path)
    ref: list[WebhookSink] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(ref))
    ref.append(WebhookSink(server))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        port = server.server_address[1]
        client = ssl.create_default_context(cafile=str(cert))
        policy = UrlPolicy(
            EgressConfig(allow_cidrs=["127.0.0.1/32"]), resolver=lambda _h, _p: ["127.0.0.1"]
        )
        assert (
            post_json(policy, f"https://127.0.0.1:{port}/tls", {"ok": 1}, ssl_context=client).status
            == 200
        )
        assert ref[0].wait_for(1)[0].body == {"ok": 1}
        with pytest.raises(ssl.SSLCertVerificationError):
            post_json(policy, f"https://hook.test:{port}/tls", {"ok": 2}, ssl_context=client)
    finally:
        server.shutdown()
        server.server_close()
        t.join(5)
