# SPDX-License-Identifier: Apache-2.0
"""OTLP/JSON ↔ protobuf: hex IDs, integer enums, lowerCamelCase only, unknown fields ignored."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_agents._errors import InvalidRequestError
from otel_agents.receiver._otlp_json import MAX_MESSAGE_DEPTH, decode, encode, to_json_obj

from ._transport_fixtures import logs_request, metrics_request, trace_request

TID = "5b8efff798038103d269b633813fc60c"
SID = "eee19b7ec3c1b174"


def _doc(**span: Any) -> bytes:
    base = {"traceId": TID, "spanId": SID, "name": "s", "kind": 2}
    base.update(span)
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [base]}]}]}).encode()


def _span(data: bytes) -> Any:
    req = decode(data, ExportTraceServiceRequest)
    return req.resource_spans[0].scope_spans[0].spans[0]  # type: ignore[attr-defined]


def test_hex_ids_decode_to_16_and_8_bytes() -> None:
    """traceId/spanId/parentSpanId are hex, not base64 (plain json_format gets 24/12 bytes)."""
    span = _span(_doc(parentSpanId="0102030405060708"))
    assert span.trace_id == bytes.fromhex(TID) and len(span.trace_id) == 16
    assert span.span_id == bytes.fromhex(SID) and len(span.span_id) == 8
    assert span.parent_span_id == bytes.fromhex("0102030405060708")
    naive = json_format.Parse(_doc().decode(), ExportTraceServiceRequest())
    assert len(naive.resource_spans[0].scope_spans[0].spans[0].trace_id) == 24


def test_base64_ids_are_refused() -> None:
    """A base64 trace ID (what proto3 JSON would use) is a 400-class error naming the path."""
    b64 = base64.b64encode(bytes.fromhex(TID)).decode()
    with pytest.raises(InvalidRequestError, match=r"traceId: trace and span IDs are hex"):
        decode(_doc(traceId=b64), ExportTraceServiceRequest)


def test_enum_names_are_refused() -> None:
    """Enum values MUST be integers in OTLP/JSON."""
    with pytest.raises(InvalidRequestError, match="enum values must be integers"):
        decode(_doc(kind="SPAN_KIND_SERVER"), ExportTraceServiceRequest)


def test_snake_case_keys_are_refused() -> None:
    """Original protobuf field names are not valid keys."""
    with pytest.raises(InvalidRequestError, match=r"lowerCamelCase \('traceId'\)"):
        decode(
            json.dumps(
                {"resourceSpans": [{"scopeSpans": [{"spans": [{"trace_id": TID}]}]}]}
            ).encode(),
            ExportTraceServiceRequest,
        )


def test_unknown_fields_are_ignored() -> None:
    """Unknown keys at any level are ignored (forward compatibility)."""
    span = _span(_doc(futureField={"a": [1, 2]}, anotherOne=3))
    assert span.name == "s"


def test_int64_as_string_or_number_and_bytes_value_base64() -> None:
    """64-bit ints may be strings or numbers; AnyValue.bytesValue stays base64."""
    span = _span(
        _doc(
            startTimeUnixNano="1544712660000000000",
            endTimeUnixNano=1544712661000000000,
            attributes=[
                {"key": "b", "value": {"bytesValue": base64.b64encode(b"\x00\xff").decode()}},
                {"key": "i", "value": {"intValue": "-42"}},
                {"key": "d", "value": {"doubleValue": "NaN"}},
            ],
        )
    )
    assert span.start_time_unix_nano == 1544712660000000000
    assert span.end_time_unix_nano == 1544712661000000000
    vals = {a.key: a.value for a in span.attributes}
    assert vals["b"].bytes_value == b"\x00\xff"
    assert vals["i"].int_value == -42
    assert math.isnan(vals["d"].double_value)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"\xff\xfe{}", "not valid UTF-8"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"resourceSpans": {}}', "expected an array"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": 5}]}]}]}', "expected a string"),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "x"}]}]}]}',
            "expected an integer",
        ),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"droppedAttributesCount": -1}]}]}]}',
            "out of range",
        ),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "\\ud800"}]}]}]}',
            "spans\\[0\\].name",
        ),
        (b"{", "invalid JSON"),
    ],
)
def test_malformed_json_names_the_problem(body: bytes, match: str) -> None:
    """Each malformed document raises InvalidRequestError with a useful path/message."""
    with pytest.raises(InvalidRequestError, match=match):
        decode(body, ExportTraceServiceRequest)


def test_nesting_deeper_than_upb_is_refused() -> None:
    """Nested arrays past upb's message depth are refused like on the protobuf path."""
    value: dict[str, Any] = {"intValue": "1"}
    for _ in range(MAX_MESSAGE_DEPTH):
        value = {"arrayValue": {"values": [value]}}
    with pytest.raises(InvalidRequestError, match="nesting exceeds"):
        decode(_doc(attributes=[{"key": "d", "value": value}]), ExportTraceServiceRequest)


def test_null_means_default_and_empty_body() -> None:
    """null values are defaults; an empty, null or {} body is an empty request."""
    assert _span(_doc(name=None)).name == ""
    assert decode(b"null", ExportTraceServiceRequest).ByteSize() == 0
    assert decode(b"{}", ExportTraceServiceRequest).ByteSize() == 0
    assert decode(b"", ExportTraceServiceRequest).ByteSize() == 0
    assert decode(b" \n", ExportTraceServiceRequest).ByteSize() == 0


def test_empty_object_selects_oneof() -> None:
    """An empty kvlistValue object still sets the oneof (presence is kept)."""
    span = _span(_doc(attributes=[{"key": "m", "value": {"kvlistValue": {}}}]))
    assert span.attributes[0].value.WhichOneof("value") == "kvlist_value"


def test_encode_uses_otlp_json_rules() -> None:
    """Encoding writes hex IDs, integer enums, camelCase keys and 64-bit ints as strings."""
    obj = json.loads(encode(trace_request(1)))
    span = obj["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert span["traceId"] == bytes(range(1, 17)).hex()
    assert span["spanId"] == (1).to_bytes(8, "big").hex()
    assert span["kind"] == 1
    assert span["startTimeUnixNano"] == "1700000000000000000"


@pytest.mark.parametrize(
    "request_msg",
    [trace_request(3), metrics_request(3), logs_request(3)],
    ids=["traces", "metrics", "logs"],
)
def test_round_trip(request_msg: Any) -> None:
    """encode → decode gives back the identical message for every signal."""
    back = decode(encode(request_msg), type(request_msg))
    assert back == request_msg


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(max_size=20),
            st.integers(min_value=-(2**63), max_value=2**63 - 1),
            st.floats(allow_nan=False),
            st.booleans(),
            st.binary(max_size=10),
        ),
        max_size=8,
    )
)
def test_property_round_trip_values(values: list[Any]) -> None:
    """Any attribute value survives encode → decode."""
    from ._transport_fixtures import trace_request as tr

    req = tr(1)
    span = req.resource_spans[0].scope_spans[0].spans[0]
    for i, v in enumerate(values):
        av = span.attributes.add(key=f"a{i}").value
        if isinstance(v, bool):
            av.bool_value = v
        elif isinstance(v, int):
            av.int_value = v
        elif isinstance(v, float):
            av.double_value = v
        elif isinstance(v, bytes):
            av.bytes_value = v
        else:
            av.string_value = v
    assert decode(encode(req), ExportTraceServiceRequest) == req
    assert to_json_obj(ExportLogsServiceRequest()) == {}
    assert (
        decode(encode(ExportMetricsServiceRequest()), ExportMetricsServiceRequest).ByteSize() == 0
    )
