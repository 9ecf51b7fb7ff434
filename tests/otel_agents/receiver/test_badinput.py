# SPDX-License-Identifier: Apache-2.0
"""Bad-input corpus (RC-09) and size limits / bombs (RC-10), over gRPC, HTTP protobuf and JSON.

Each case asserts the exact code and partial-success counts, and a valid request must succeed
right after it (the server keeps serving); no error may be logged by the receiver.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from otel_agents.receiver import ExportHandler, HttpConfig, LimitsConfig, Outcome, validate
from otel_agents.receiver._common import SIGNALS

from ._transport_fixtures import (
    ListIngestor,
    Stack,
    grpc_call,
    http_post,
    stack_fixture,
    trace_request,
    with_attr,
)

LIMIT = 1024 * 1024
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    yield from stack_fixture(
        limits=LimitsConfig(max_request_bytes=LIMIT),
        http_config=HttpConfig(endpoint="127.0.0.1:0", read_header_timeout=2.0),
    )


@pytest.fixture(autouse=True)
def no_receiver_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    with caplog.at_level(logging.WARNING, logger="otel_agents.receiver"):
        yield
    errors = [r for r in caplog.records if r.name.startswith("otel_agents.receiver")]
    assert errors == [], [r.getMessage() for r in errors]


def _set(i: int, field: str, value: Any, which: int = 1) -> Callable[[int, Any], None]:
    def f(idx: int, span: Any) -> None:
        if idx == which:
            setattr(span, field, value)

    return f


def _deep(levels: int) -> Callable[[int, Any], None]:
    def f(idx: int, span: Any) -> None:
        v = span.attributes.add(key="deep").value
        for _ in range(levels):
            v = v.array_value.values.add()
        v.int_value = 1

    return f


def _bad_utf8() -> bytes:
    body = trace_request(1, customize=_set(0, "name", "NAME-MARK", 0)).SerializeToString()
    return body.replace(b"NAME-MARK", b"NAME\xffMARK")


def _unknown_field() -> bytes:
    req = trace_request(2)
    # Field 99 (varint) on the span: a field from a newer proto version.
    req.resource_spans[0].scope_spans[0].spans[0].MergeFromString(b"\x98\x06\x2a")
    return req.SerializeToString()


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    body: Callable[[], bytes]
    grpc_code: grpc.StatusCode
    http_status: int
    rejected: int | None = None  # partial_success.rejected_spans for OK answers
    warning: str | None = None  # substring of the message (error or warning)
    stored: int = 0


VALID = trace_request(3).SerializeToString()

CASES = [
    Case(
        "RC-09-B1-garbage",
        lambda: b"\xff\xff\xff\xff\xff",
        grpc.StatusCode.INVALID_ARGUMENT,
        400,
        warning="protobuf",
    ),
    Case("RC-09-B2-truncated", lambda: VALID[:-7], grpc.StatusCode.INVALID_ARGUMENT, 400),
    Case("RC-09-B3-empty", lambda: b"", grpc.StatusCode.OK, 200),
    Case(
        "RC-09-B7-invalid-utf8", _bad_utf8, grpc.StatusCode.INVALID_ARGUMENT, 400, warning="UTF-8"
    ),
    Case(
        "RC-09-B8-short-trace-id",
        lambda: trace_request(
            3, customize=_set(1, "trace_id", b"\x01\x02\x03")
        ).SerializeToString(),
        grpc.StatusCode.OK,
        200,
        rejected=1,
        warning="trace_id",
        stored=2,
    ),
    Case(
        "RC-09-B8-long-span-id",
        lambda: trace_request(3, customize=_set(1, "span_id", b"\x01" * 9)).SerializeToString(),
        grpc.StatusCode.OK,
        200,
        rejected=1,
        warning="span_id",
        stored=2,
    ),
    Case(
        "RC-09-B9-zero-trace-id",
        lambda: trace_request(3, customize=_set(0, "trace_id", bytes(16), 0)).SerializeToString(),
        grpc.StatusCode.OK,
        200,
        rejected=1,
        warning="trace_id",
        stored=2,
    ),
    Case(
        "RC-09-B9-empty-span-id",
        lambda: trace_request(3, customize=_set(2, "span_id", b"", 2)).SerializeToString(),
        grpc.StatusCode.OK,
        200,
        rejected=1,
        warning="span_id",
        stored=2,
    ),
    Case(
        "RC-09-B10-bad-parent",
        lambda: trace_request(
            3, customize=_set(1, "parent_span_id", b"\x01" * 4)
        ).SerializeToString(),
        grpc.StatusCode.OK,
        200,
        rejected=0,
        warning="parent_span_id",
        stored=3,
    ),
    Case(
        "RC-09-B11-end-before-start",
        lambda: trace_request(3, customize=_set(1, "end_time_unix_nano", 5)).SerializeToString(),
        grpc.StatusCode.OK,
        200,
        rejected=0,
        warning="ending before",
        stored=3,
    ),
    Case(
        "RC-09-B13-many-attributes",
        lambda: trace_request(1, attrs=300).SerializeToString(),
        grpc.StatusCode.OK,
        200,
        rejected=0,
        warning="172 attributes",
        stored=1,
    ),
    Case(
        "RC-09-B15-deep-nesting",
        lambda: trace_request(1, customize=_deep(60)).SerializeToString(),
        grpc.StatusCode.INVALID_ARGUMENT,
        400,
        warning="nested too deeply",
    ),
    Case("RC-09-B19-unknown-fields", _unknown_field, grpc.StatusCode.OK, 200, stored=2),
    Case(
        "RC-10-oversize",
        lambda: trace_request(1, customize=with_attr("big", "x" * LIMIT)).SerializeToString(),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        413,
    ),
]


def _items(stack: Stack) -> int:
    return stack.ingestor.items


def _valid_still_works(stack: Stack, transport: str) -> None:
    before = _items(stack)
    if transport == "grpc":
        assert grpc_call(stack.grpc_target, VALID).code == grpc.StatusCode.OK
    else:
        assert http_post(stack, "/v1/traces", VALID).status == 200
    assert _items(stack) == before + 3


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_grpc(stack: Stack, case: Case) -> None:
    """Each corpus entry gets its documented gRPC status and counts; the server keeps serving."""
    before = _items(stack)
    result = grpc_call(stack.grpc_target, case.body())
    assert result.code == case.grpc_code, result.details
    if case.grpc_code is grpc.StatusCode.OK:
        partial = ExportTraceServiceResponse.FromString(result.response).partial_success
        assert partial.rejected_spans == (case.rejected or 0)
        if case.warning:
            assert case.warning in partial.error_message
        else:
            assert not partial.error_message
    else:
        assert "google.rpc.retryinfo-bin" not in result.trailers  # never retryable
        if case.grpc_code is grpc.StatusCode.INVALID_ARGUMENT:
            bad = result.detail(error_details_pb2.BadRequest)
            assert bad is not None
            if case.warning:
                assert case.warning in result.details
    assert _items(stack) == before + case.stored
    _valid_still_works(stack, "grpc")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_http_protobuf(stack: Stack, case: Case) -> None:
    """The same corpus over OTLP/HTTP protobuf: documented HTTP status and counts."""
    before = _items(stack)
    r = http_post(stack, "/v1/traces", case.body())
    assert r.status == case.http_status, r.body
    if r.status == 200:
        partial = ExportTraceServiceResponse.FromString(r.body).partial_success
        assert partial.rejected_spans == (case.rejected or 0)
        if case.warning:
            assert case.warning in partial.error_message
    else:
        status = status_pb2.Status.FromString(r.body)
        assert status.message
        assert "retry-after" not in r.headers
        if case.warning:
            assert case.warning in status.message
    assert _items(stack) == before + case.stored
    _valid_still_works(stack, "http")


def _json_doc(**span: Any) -> bytes:
    base = {
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": "eee19b7ec3c1b174",
        "name": "j",
        "startTimeUnixNano": "1",
        "endTimeUnixNano": "2",
    }
    base.update(span)
    base = {k: v for k, v in base.items() if v is not None}
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [base]}]}]}).encode()


JSON_CASES = [
    ("RC-09-B20-hex-ids", _json_doc(), 200, 1),
    (
        "RC-09-B20-base64-ids",
        _json_doc(traceId=base64.b64encode(bytes(range(16))).decode()),
        400,
        0,
    ),
    ("RC-09-B20-enum-name", _json_doc(kind="SPAN_KIND_CLIENT"), 400, 0),
    ("RC-09-B20-snake-case", _json_doc(trace_id="5b8efff798038103d269b633813fc60c"), 400, 0),
    ("RC-09-B19-json-unknown-field", _json_doc(someFutureField={"x": 1}), 200, 1),
    ("RC-09-B1-json-garbage", b"{]", 400, 0),
    ("RC-09-B7-json-invalid-utf8", _json_doc(name="x").replace(b'"x"', b'"\xff"'), 400, 0),
    ("RC-09-B9-json-zero-span-id", _json_doc(spanId="0000000000000000"), 200, 0),
    ("RC-09-B8-json-short-id", _json_doc(traceId="0102"), 200, 0),
    ("RC-09-B3-json-empty-object", b"{}", 200, 0),
]


@pytest.mark.parametrize(
    ("body", "status", "stored"),
    [c[1:] for c in JSON_CASES],
    ids=[c[0] for c in JSON_CASES],
)
def test_http_json(stack: Stack, body: bytes, status: int, stored: int) -> None:
    """OTLP/JSON corpus: hex IDs accepted, base64 IDs / enum names / snake_case refused."""
    before = _items(stack)
    r = http_post(stack, "/v1/traces", body, {"Content-Type": "application/json"})
    assert r.status == status, r.body
    assert r.headers["content-type"] == "application/json"
    doc = json.loads(r.body)
    if status == 200 and stored == 0 and body != b"{}":
        assert doc["partialSuccess"]["rejectedSpans"] == "1"
    if status == 400:
        assert doc["details"][0]["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert _items(stack) == before + stored
    if stored:
        span = stack.ingestor.spans()[-1]
        assert len(span.trace_id) == 16 and len(span.span_id) == 8
    _valid_still_works(stack, "http")


def test_rc10_grpc_gzip_bomb(stack: Stack) -> None:
    """RC-10: 64 MiB of zeros, gzip-compressed by the client → RESOURCE_EXHAUSTED."""
    bomb = trace_request(1, customize=with_attr("z", "\0" * (64 * MIB))).SerializeToString()
    result = grpc_call(stack.grpc_target, bomb, compression=grpc.Compression.Gzip, timeout=30)
    assert result.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "google.rpc.retryinfo-bin" not in result.trailers
    _valid_still_works(stack, "grpc")


def test_rc10_http_gzip_bomb(stack: Stack) -> None:
    """RC-10: the same bomb over HTTP → 413 (streaming inflate stops at the cap)."""
    bomb = gzip.compress(b"\0" * (64 * MIB), compresslevel=9)
    r = http_post(stack, "/v1/traces", bomb, {"Content-Encoding": "gzip"})
    assert r.status == 413
    _valid_still_works(stack, "http")


def test_rc10_http_limit_plus_one_uncompressed(stack: Stack) -> None:
    """RC-10: exactly limit+1 bytes with Content-Length → 413; exactly the limit is decoded."""
    r = http_post(stack, "/v1/traces", b"\0" * (LIMIT + 1))
    assert r.status == 413
    r = http_post(stack, "/v1/traces", b"\0" * LIMIT)
    assert r.status == 400  # within the limit: decoded (and invalid), not refused for size
    _valid_still_works(stack, "http")


def test_rc10_http_chunked_without_content_length(stack: Stack) -> None:
    """RC-10: a chunked body (no Content-Length) over the limit → 413."""
    conn = stack.http_conn()
    conn.request(
        "POST",
        "/v1/traces",
        body=iter([b"\0" * (LIMIT // 2)] * 3),
        headers={"Content-Type": "application/x-protobuf"},
        encode_chunked=True,
    )
    assert conn.getresponse().status == 413
    conn.close()
    _valid_still_works(stack, "http")


def test_rc10_unsupported_encoding(stack: Stack) -> None:
    """RC-10: Content-Encoding zstd (not supported) → 415, documented in _http.py."""
    r = http_post(stack, "/v1/traces", b"\x28\xb5\x2f\xfd\x00", {"Content-Encoding": "zstd"})
    assert r.status == 415
    _valid_still_works(stack, "http")


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=400), json_body=st.booleans())
def test_property_any_bytes_get_a_defined_answer(data: bytes, json_body: bool) -> None:
    """RC-11 (lite): arbitrary bytes never raise out of the handler; the answer is OK, PARTIAL
    or INVALID, and whatever is stored decodes and validates cleanly."""
    ingestor = ListIngestor()
    handler = ExportHandler(ingestor, LimitsConfig(max_attribute_value_length=16))
    for signal in ("traces", "metrics", "logs"):
        answer = handler.handle(signal, "test", data, json_body=json_body)  # type: ignore[arg-type]
        assert answer.outcome in (Outcome.OK, Outcome.PARTIAL, Outcome.INVALID)
    for signal, payload, items in ingestor.batches:
        request = SIGNALS[signal].request_class.FromString(payload)
        again = validate(signal, request, LimitsConfig(max_attribute_value_length=16))
        assert (again.rejected, again.modified, again.accepted) == (0, False, items)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_property_mutated_valid_requests(data: st.DataObject) -> None:
    """Byte flips / truncations of a valid request: defined answers, and never a stored span
    with invalid IDs."""
    body = bytearray(VALID)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(body) - 1))
        body[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(body)))
    ingestor = ListIngestor()
    answer = ExportHandler(ingestor).handle("traces", "test", bytes(body[:cut]), json_body=False)
    assert answer.outcome in (Outcome.OK, Outcome.PARTIAL, Outcome.INVALID)
    for span in ingestor.spans():
        assert len(span.trace_id) == 16 and any(span.trace_id)
        assert len(span.span_id) == 8 and any(span.span_id)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    head=st.one_of(
        st.binary(max_size=200),
        st.builds(
            lambda m, p, h: m + b" " + p + b" HTTP/1.1\r\n" + h + b"\r\n\r\n",
            st.sampled_from([b"POST", b"GET", b"PUT", b"BREW", b""]),
            st.sampled_from([b"/v1/traces", b"/v1/logs", b"/x", b"*", b"/v1/traces?x=1"]),
            st.binary(max_size=120),
        ),
    )
)
def test_property_raw_http_garbage_never_breaks_the_server(stack: Stack, head: bytes) -> None:
    """Arbitrary bytes on the HTTP socket get an HTTP answer or a close, never a hang or a
    crash, and the next valid request succeeds."""
    import socket

    with socket.create_connection(("127.0.0.1", stack.http.port), timeout=5) as s:
        s.sendall(head)
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    assert reply == b"" or reply.startswith(b"HTTP/1.")
    _valid_still_works(stack, "http")
