# SPDX-License-Identifier: Apache-2.0
"""Reliability scorecard RC-14: security defaults, end to end on a receiver process.

The detailed unit tests live with their modules (tests/otel_agents/receiver/test_auth.py: TLS,
mTLS, bind policy; tests/exporters/test_ssrf.py and test_redact.py; tests/otel_agents/
test_spans.py content capture); this file checks the defaults as an operator gets them.
"""

from __future__ import annotations

import http.client
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import grpc
import psutil
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otel_agents.exporters._ssrf import RefusedTarget, UrlPolicy

import otel_agents
from tests.exporters._fwd_sink import RecordingSink, iter_spans, make_traces
from tests.otel_agents.receiver._rc_fixtures import TRACES, record_figures
from tests.otel_agents.receiver._spool_client import ReceiverProcess, poll

TOKEN = "rc14-0123456789abcdef"
SECRET = "sk-proj-RC14SECRETabcdefghijklmnop0123456789"


@pytest.fixture
def sink() -> Iterator[RecordingSink]:
    """A recording downstream on an ephemeral port."""
    s = RecordingSink()
    s.start_grpc()
    yield s
    s.stop()


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    mapped = getattr(addr, "ipv4_mapped", None)  # gRPC listens on ::ffff:127.0.0.1
    return (mapped or addr).is_loopback


def _get(port: int, path: str, token: str | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def _post(port: int, body: bytes, token: str | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Content-Type": "application/x-protobuf"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request("POST", "/v1/traces", body, headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def _grpc(port: int, body: bytes, token: str | None = None) -> grpc.StatusCode:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            channel.unary_unary(TRACES)(
                body,
                timeout=10,
                metadata=(("authorization", f"Bearer {token}"),) if token else None,
            )
            return grpc.StatusCode.OK
        except grpc.RpcError as err:
            return err.code()  # type: ignore[no-any-return, attr-defined]


def test_rc14_security_defaults_of_a_running_receiver(tmp_path: Path, sink: RecordingSink) -> None:
    """RC-14: only loopback sockets; with tokens configured, a missing/wrong token is refused
    before the body is parsed (UNAUTHENTICATED / 401 even for garbage) and the admin API answers
    401; secrets are masked in the spool and in forwarded data."""
    tokens = f"[{TOKEN}]"
    receiver = ReceiverProcess(
        tmp_path,
        tmp_path / "data",
        "--forward",
        f"grpc://127.0.0.1:{sink.grpc_port}",
        "--no-analysis",
        "--set",
        f"receivers.otlp.protocols.grpc.auth.tokens={tokens}",
        "--set",
        f"receivers.otlp.protocols.http.auth.tokens={tokens}",
        "--set",
        f"admin.auth.tokens={tokens}",
    )
    try:
        g, h, a = receiver.ports["grpc"], receiver.ports["http"], receiver.ports["admin"]
        # 1. Every listening socket of the process is on a loopback address.
        listening = [
            c.laddr
            for c in psutil.Process(receiver.proc.pid).net_connections("inet")
            if c.status == psutil.CONN_LISTEN
        ]
        assert {port for _, port in listening} >= {g, h, a}
        assert all(_loopback(ip) for ip, _ in listening), listening
        # 2. Authentication before parsing: garbage without a token is UNAUTHENTICATED / 401,
        #    with the token it reaches the decoder (INVALID_ARGUMENT / 400).
        garbage = b"\xff\x00 definitely not protobuf"
        assert _grpc(g, garbage) is grpc.StatusCode.UNAUTHENTICATED
        assert _grpc(g, garbage, "wrong-token") is grpc.StatusCode.UNAUTHENTICATED
        assert _grpc(g, garbage, TOKEN) is grpc.StatusCode.INVALID_ARGUMENT
        assert _post(h, garbage) == 401
        assert _post(h, garbage, "wrong-token") == 401
        assert _post(h, garbage, TOKEN) == 400
        # 3. The admin API: health is open, data and metrics need the token.
        assert _get(a, "/healthz") == 200
        assert _get(a, "/metrics") == 401 and _get(a, "/metrics", TOKEN) == 200
        assert _get(a, "/api/v1/findings") == 401
        # 4. Secrets in attributes are masked before the spool and before forwarding.
        batch = make_traces(3, {"api_key": SECRET, "http.request.header.authorization": SECRET})
        assert _grpc(g, batch.payload, TOKEN) is grpc.StatusCode.OK
        assert poll(lambda: set(batch.keys) <= sink.received, 20)
    finally:
        assert receiver.terminate() == 0
    forwarded = [
        kv.value.string_value
        for body in sink.bodies
        for span in iter_spans(type(batch.request).FromString(body))
        for kv in span.attributes
    ]
    assert forwarded and SECRET not in " ".join(forwarded)
    on_disk = b"".join(p.read_bytes() for p in (tmp_path / "data").rglob("*") if p.is_file())
    assert SECRET.encode() not in on_disk
    record_figures(
        "RC-14",
        "test_rc14_security_defaults_of_a_running_receiver",
        listening_sockets=len(listening),
        unauthenticated_refusals=4,
        secrets_leaked=0,
    )


def test_rc14_genai_content_is_not_captured_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """RC-14: with OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT unset, tool arguments and
    results never reach a span."""
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with (
        otel_agents.invoke_agent("a", tracer_provider=provider),
        otel_agents.execute_tool(
            "search", arguments={"q": "PRIVATE-QUERY"}, tracer_provider=provider
        ) as tool,
    ):
        tool.set_result("PRIVATE-RESULT")
    provider.shutdown()
    spans = memory.get_finished_spans()
    assert len(spans) == 2
    values = " ".join(str(v) for s in spans for v in (s.attributes or {}).values())
    assert "PRIVATE-QUERY" not in values and "PRIVATE-RESULT" not in values


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://10.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://localhost/hook",
        "https://metadata.google.internal/",
        "http://example.com/hook",  # plain http is refused by default
    ],
)
def test_rc14_webhook_targets_refused_by_the_shared_policy(url: str) -> None:
    """RC-14: the one URL policy used at save, test and delivery refuses loopback, private,
    link-local/metadata and mapped addresses, loopback names and plain http by default."""
    with pytest.raises(RefusedTarget):
        UrlPolicy().check(url)
