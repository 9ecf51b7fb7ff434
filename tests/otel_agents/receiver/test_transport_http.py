# SPDX-License-Identifier: Apache-2.0
"""OTLP/HTTP server: official exporter, encodings, compression, limits, codes, timeouts."""

from __future__ import annotations

import gzip
import json
import socket
import time
import zlib
from collections.abc import Iterator

import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult

from otel_agents.receiver import HttpConfig, LimitsConfig

from ._transport_fixtures import (
    Stack,
    http_post,
    stack_fixture,
    trace_request,
    trickle_until_closed,
    wait_for,
    with_attr,
)

LIMIT = 1024 * 1024
VALID_JSON = json.dumps(
    {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b174",
                                "name": "json-span",
                                "kind": 2,
                                "startTimeUnixNano": "1544712660000000000",
                                "endTimeUnixNano": "1544712661000000000",
                            }
                        ]
                    }
                ]
            }
        ]
    }
).encode()


@pytest.fixture
def stack() -> Iterator[Stack]:
    yield from stack_fixture(
        limits=LimitsConfig(max_request_bytes=LIMIT),
        http_config=HttpConfig(
            endpoint="127.0.0.1:0", read_header_timeout=0.5, idle_timeout=2.0, max_connections=8
        ),
    )


def _status(body: bytes) -> status_pb2.Status:
    return status_pb2.Status.FromString(body)


def test_official_exporter_sends_traces_gzip(stack: Stack) -> None:
    """The SDK's OTLP/HTTP exporter (protobuf, gzip) delivers spans."""
    exporter = OTLPSpanExporter(
        endpoint=f"http://127.0.0.1:{stack.http.port}/v1/traces", compression=Compression.Gzip
    )
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    for i in range(3):
        tracer.start_span(f"s{i}").end()
    provider.shutdown()
    assert sorted(s.name for s in stack.ingestor.spans()) == ["s0", "s1", "s2"]


def test_official_exporter_honours_retry_after(stack: Stack) -> None:
    """A 503 + Retry-After makes the SDK HTTP exporter retry; the span then gets stored."""
    stack.ingestor.refuse(1, retry_after=0.5)
    exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{stack.http.port}/v1/traces", timeout=8)
    span = TracerProvider().get_tracer("t").start_span("x")
    span.end()
    assert isinstance(span, ReadableSpan)
    assert exporter.export([span]) is SpanExportResult.SUCCESS
    exporter.shutdown()
    gap = stack.ingestor.stored_at[0] - stack.ingestor.refused_at[0]
    assert 0.9 <= gap < 2.0, gap  # Retry-After is whole seconds: 0.5 s rounds up to 1


def test_protobuf_response_content_type(stack: Stack) -> None:
    """A protobuf request gets a protobuf response; full success has partial_success unset."""
    r = http_post(stack, "/v1/traces", trace_request(2).SerializeToString())
    assert r.status == 200
    assert r.headers["content-type"] == "application/x-protobuf"
    assert not ExportTraceServiceResponse.FromString(r.body).HasField("partial_success")


def test_json_request_and_response(stack: Stack) -> None:
    """OTLP/JSON with hex IDs is stored as protobuf with 16/8-byte IDs; response is JSON."""
    r = http_post(stack, "/v1/traces", VALID_JSON, {"Content-Type": "application/json"})
    assert r.status == 200
    assert r.headers["content-type"] == "application/json"
    assert json.loads(r.body) == {}
    (span,) = stack.ingestor.spans()
    assert span.trace_id.hex() == "5b8efff798038103d269b633813fc60c"
    assert span.span_id.hex() == "eee19b7ec3c1b174"
    assert span.kind == 2


def test_json_partial_success(stack: Stack) -> None:
    """JSON partial success reports rejectedSpans in camelCase JSON."""
    doc = json.loads(VALID_JSON)
    spans = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans.append({**spans[0], "spanId": "0000000000000000"})
    r = http_post(
        stack, "/v1/traces", json.dumps(doc).encode(), {"Content-Type": "application/json"}
    )
    assert r.status == 200
    body = json.loads(r.body)
    assert body["partialSuccess"]["rejectedSpans"] == "1"
    assert "span_id" in body["partialSuccess"]["errorMessage"]


def test_json_error_body_is_json_status(stack: Stack) -> None:
    """Errors for JSON requests are a google.rpc.Status in JSON with BadRequest details."""
    r = http_post(stack, "/v1/traces", b"{not json", {"Content-Type": "application/json"})
    assert r.status == 400
    assert r.headers["content-type"] == "application/json"
    body = json.loads(r.body)
    assert "invalid JSON" in body["message"]
    assert body["details"][0]["@type"].endswith("google.rpc.BadRequest")


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "deflate-raw"])
def test_compressed_bodies(stack: Stack, encoding: str) -> None:
    """gzip, zlib-wrapped deflate and raw deflate bodies are accepted."""
    raw = trace_request(4).SerializeToString()
    if encoding == "gzip":
        body = gzip.compress(raw)
    elif encoding == "deflate":
        body = zlib.compress(raw)
    else:
        c = zlib.compressobj(wbits=-15)
        body = c.compress(raw) + c.flush()
    r = http_post(stack, "/v1/traces", body, {"Content-Encoding": encoding.split("-")[0]})
    assert r.status == 200, r.body
    assert stack.ingestor.items == 4


def test_unknown_encoding_is_415(stack: Stack) -> None:
    """An unsupported Content-Encoding (zstd) → 415 before the body is read."""
    r = http_post(stack, "/v1/traces", b"\x28\xb5\x2f\xfd", {"Content-Encoding": "zstd"})
    assert r.status == 415
    assert "Content-Encoding" in _status(r.body).message


def test_wrong_content_type_is_415(stack: Stack) -> None:
    """text/plain → 415."""
    r = http_post(stack, "/v1/traces", b"hello", {"Content-Type": "text/plain"})
    assert r.status == 415


def test_wrong_method_is_405(stack: Stack) -> None:
    """GET on an OTLP path → 405 with Allow: POST."""
    r = http_post(stack, "/v1/traces", b"", method="GET")
    assert r.status == 405
    assert r.headers["allow"] == "POST"


def test_unknown_path_is_404(stack: Stack) -> None:
    """POST to an unknown path → 404."""
    r = http_post(stack, "/v1/profiles", trace_request(1).SerializeToString())
    assert r.status == 404


def test_content_length_over_limit_is_413_without_reading(stack: Stack) -> None:
    """A Content-Length over the limit → 413 from the headers alone."""
    with socket.create_connection(("127.0.0.1", stack.http.port), timeout=5) as s:
        s.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            + f"Content-Length: {LIMIT + 1}\r\n\r\n".encode()
        )
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413")
    assert b"Connection: close" in reply


def test_chunked_body_over_limit_is_413(stack: Stack) -> None:
    """A chunked body growing past the limit is cut off with 413."""
    conn = stack.http_conn()
    chunks = (b"\0" * (256 * 1024) for _ in range(8))
    conn.request(
        "POST",
        "/v1/traces",
        body=chunks,
        headers={"Content-Type": "application/x-protobuf"},
        encode_chunked=True,
    )
    r = conn.getresponse()
    assert r.status == 413
    conn.close()


def test_gzip_bomb_is_413_with_bounded_memory(stack: Stack) -> None:
    """A 64 MiB-of-zeros gzip bomb → 413 after at most limit+1 decompressed bytes."""
    import tracemalloc

    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 100_000
    tracemalloc.start()
    try:
        r = http_post(stack, "/v1/traces", bomb, {"Content-Encoding": "gzip"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.status == 413
    assert "limit" in _status(r.body).message
    assert peak < 4 * LIMIT, peak  # not 64 MiB
    assert http_post(stack, "/v1/traces", trace_request(1).SerializeToString()).status == 200


def test_truncated_gzip_is_400(stack: Stack) -> None:
    """A gzip stream cut short → 400."""
    body = gzip.compress(trace_request(3).SerializeToString())[:-12]
    r = http_post(stack, "/v1/traces", body, {"Content-Encoding": "gzip"})
    assert r.status == 400


def test_retryable_is_503_with_retry_after(stack: Stack) -> None:
    """A refusal from the ingestor → 503 + Retry-After (seconds) and RetryInfo in the body."""
    stack.ingestor.refuse(1, retry_after=2.2)
    r = http_post(stack, "/v1/traces", trace_request(1).SerializeToString())
    assert r.status == 503
    assert r.headers["retry-after"] == "3"
    info = error_details_pb2.RetryInfo()
    assert _status(r.body).details[0].Unpack(info)
    assert info.retry_delay.seconds == 2


def test_keep_alive_serves_many_requests_on_one_connection(stack: Stack) -> None:
    """HTTP/1.1 keep-alive: 20 requests on one connection, including after a partial success."""
    conn = stack.http_conn()
    body = trace_request(2).SerializeToString()
    for _ in range(20):
        assert http_post(stack, "/v1/traces", body, conn=conn).status == 200
    sock = conn.sock
    assert http_post(stack, "/v1/traces", body, conn=conn).status == 200
    assert conn.sock is sock  # the same socket was reused
    conn.close()
    assert stack.ingestor.items == 42


def test_slow_headers_are_cut_off(stack: Stack) -> None:
    """A client trickling its headers is disconnected at read_header_timeout (slowloris)."""
    with socket.create_connection(("127.0.0.1", stack.http.port), timeout=5) as s:
        s.sendall(b"POST /v1/traces HTTP/1.1\r\n")
        start = time.monotonic()
        # one header byte every 0.1 s: each recv is quick, the total is not
        closed = trickle_until_closed(s, [b"X"] * 20)
        elapsed = time.monotonic() - start
    assert closed
    assert elapsed < 1.5, elapsed


def test_expect_100_continue_after_checks(stack: Stack) -> None:
    """An Expect: 100-continue client gets 100 only when headers pass; 413 otherwise."""
    body = trace_request(1).SerializeToString()
    with socket.create_connection(("127.0.0.1", stack.http.port), timeout=5) as s:
        s.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            + f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        assert s.recv(1024).startswith(b"HTTP/1.1 100 Continue")
        s.sendall(body)
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
    assert stack.ingestor.items == 1


def test_too_many_connections_get_503(stack: Stack) -> None:
    """Past max_connections (8), a new connection gets 503 + Retry-After and is closed."""
    held = [socket.create_connection(("127.0.0.1", stack.http.port), timeout=5) for _ in range(8)]
    try:
        assert wait_for(lambda: len(stack.http._conns) == 8)
        with socket.create_connection(("127.0.0.1", stack.http.port), timeout=5) as s:
            reply = s.recv(1024)
        assert reply.startswith(b"HTTP/1.1 503")
        assert b"Retry-After: 1" in reply
    finally:
        for s in held:
            s.close()
    assert wait_for(lambda: len(stack.http._conns) == 0)
    assert http_post(stack, "/v1/traces", trace_request(1).SerializeToString()).status == 200


def test_value_truncation_reserializes_payload() -> None:
    """With a value length limit, long values are truncated and the stored payload re-serialized."""
    gen = stack_fixture(limits=LimitsConfig(max_attribute_value_length=10))
    stack = next(gen)
    try:
        body = trace_request(1, customize=with_attr("prompt", "é" * 50)).SerializeToString()
        r = http_post(stack, "/v1/traces", body)
        assert r.status == 200
        partial = ExportTraceServiceResponse.FromString(r.body).partial_success
        assert partial.rejected_spans == 0 and "truncated" in partial.error_message
        (span,) = stack.ingestor.spans()
        values = {kv.key: kv.value.string_value for kv in span.attributes}
        assert values["prompt"] == "é" * 10
    finally:
        gen.close()


def test_default_config_binds_loopback() -> None:
    """The default HTTP endpoint is loopback port 4318 (RC-14)."""
    assert HttpConfig().endpoint == "127.0.0.1:4318"


def test_cors_preflight_and_headers() -> None:
    """Allowed origins get a preflight answer and Access-Control-Allow-Origin; others do not."""
    gen = stack_fixture(
        http_config=HttpConfig(endpoint="127.0.0.1:0", cors_allowed_origins=("https://app.test",))
    )
    stack = next(gen)
    try:
        pre = http_post(
            stack,
            "/v1/traces",
            b"",
            method="OPTIONS",
            headers={
                "Origin": "https://app.test",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        assert pre.status == 204
        assert pre.headers["access-control-allow-origin"] == "https://app.test"
        assert pre.headers["access-control-allow-methods"] == "POST"
        assert pre.headers["access-control-allow-headers"] == "content-type"
        body = trace_request(1).SerializeToString()
        r = http_post(stack, "/v1/traces", body, {"Origin": "https://app.test"})
        assert r.status == 200 and r.headers["access-control-allow-origin"] == "https://app.test"
        other = http_post(stack, "/v1/traces", body, {"Origin": "https://evil.test"})
        assert other.status == 200 and "access-control-allow-origin" not in other.headers
        denied = http_post(
            stack, "/v1/traces", b"", method="OPTIONS", headers={"Origin": "https://evil.test"}
        )
        assert denied.status == 405
    finally:
        gen.close()


def test_json_gzip_with_charset(stack: Stack) -> None:
    """gzip-compressed OTLP/JSON with a charset parameter is accepted; responses carry Date."""
    r = http_post(
        stack,
        "/v1/traces",
        gzip.compress(VALID_JSON),
        {"Content-Type": "application/json; charset=utf-8", "Content-Encoding": "gzip"},
    )
    assert r.status == 200 and r.headers["content-type"] == "application/json"
    assert r.headers["date"].endswith(" GMT")
    assert [s.name for s in stack.ingestor.spans()] == ["json-span"]


def test_malformed_chunk_header_is_400(stack: Stack) -> None:
    """A chunk-size line that is not hex → 400; a valid request still succeeds afterwards."""
    with socket.create_connection(("127.0.0.1", stack.http.port), timeout=5) as s:
        s.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
        )
        assert s.recv(4096).startswith(b"HTTP/1.1 400")
    assert http_post(stack, "/v1/traces", trace_request(1).SerializeToString()).status == 200


def test_stop_lets_an_upload_in_progress_finish() -> None:
    """stop() closes idle connections at once but lets a request mid-body finish and answer."""
    import threading

    gen = stack_fixture()
    stack = next(gen)
    body = trace_request(3).SerializeToString()
    idle = socket.create_connection(("127.0.0.1", stack.http.port), timeout=5)
    busy = socket.create_connection(("127.0.0.1", stack.http.port), timeout=5)
    try:
        busy.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:10]
        )
        assert wait_for(lambda: len(stack.http._busy) == 1)
        stopper = threading.Thread(target=stack.http.stop, args=(5.0,))
        stopper.start()
        assert idle.recv(1024) == b""  # the idle keep-alive connection is closed promptly
        assert stopper.is_alive()  # still waiting for the upload
        busy.sendall(body[10:])
        reply = busy.recv(4096)
        assert reply.startswith(b"HTTP/1.1 200") and b"Connection: close" in reply
        stopper.join(5)
        assert not stopper.is_alive()
        assert stack.ingestor.items == 3
    finally:
        idle.close()
        busy.close()
        gen.close()
