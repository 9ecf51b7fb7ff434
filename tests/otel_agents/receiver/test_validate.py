# SPDX-License-Identifier: Apache-2.0
"""Validation rules of the bad-input catalogue, on decoded requests."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from otel_agents.receiver import LimitsConfig, validate
from otel_agents.receiver._validate import MAX_MESSAGE_CHARS, count_items

from ._transport_fixtures import kv, logs_request, metrics_request, trace_request

LIMITS = LimitsConfig()


def _spans(req: ExportTraceServiceRequest) -> list[Any]:
    return [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]


def test_clean_request_is_untouched() -> None:
    """A valid request: nothing rejected, no message, not modified, same bytes."""
    req = trace_request(10)
    before = req.SerializeToString()
    res = validate("traces", req, LIMITS)
    assert (res.rejected, res.message, res.modified, res.accepted) == (0, "", False, 10)
    assert req.SerializeToString() == before


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("trace_id", b"\x01\x02\x03", "invalid_trace_id"),
        ("trace_id", bytes(16), "invalid_trace_id"),
        ("trace_id", b"", "invalid_trace_id"),
        ("trace_id", b"\x01" * 17, "invalid_trace_id"),
        ("span_id", bytes(8), "invalid_span_id"),
        ("span_id", b"\x01" * 7, "invalid_span_id"),
        ("span_id", b"", "invalid_span_id"),
    ],
)
def test_bad_ids_reject_the_span(field: str, value: bytes, reason: str) -> None:
    """Wrong-length or all-zero trace/span IDs reject that span only (B8, B9)."""

    def bad(i: int, span: Any) -> None:
        if i == 2:
            setattr(span, field, value)

    req = trace_request(4, customize=bad)
    res = validate("traces", req, LIMITS)
    assert (res.rejected, res.accepted, res.modified) == (1, 3, True)
    assert dict(res.reasons) == {reason: 1}
    assert "spans[2]" in res.message and field in res.message
    assert [s.name for s in _spans(req)] == ["span-0", "span-1", "span-3"]


def test_bad_parent_is_dropped_span_kept() -> None:
    """A 5-byte, zero or self-referencing parent_span_id is dropped; the span stays (B10)."""

    def bad(i: int, span: Any) -> None:
        span.parent_span_id = (
            b"\x01" * 5
            if i == 0
            else bytes(8)
            if i == 1
            else span.span_id
            if i == 2
            else b"\x02" * 8
        )

    req = trace_request(4, customize=bad)
    res = validate("traces", req, LIMITS)
    assert (res.rejected, res.accepted, res.modified) == (0, 4, True)
    assert [s.parent_span_id for s in _spans(req)] == [b"", b"", b"", b"\x02" * 8]
    assert "parent_span_id" in res.message


def test_end_before_start_is_a_warning() -> None:
    """end < start keeps the span and warns, without modifying it (B11)."""

    def bad(i: int, span: Any) -> None:
        span.end_time_unix_nano = span.start_time_unix_nano - 1

    req = trace_request(2, customize=bad)
    res = validate("traces", req, LIMITS)
    assert (res.rejected, res.accepted, res.modified) == (0, 2, False)
    assert "ending before they start" in res.message


def test_attribute_count_limit_drops_extras() -> None:
    """Attributes over the limit are dropped and counted in dropped_attributes_count (B13)."""
    req = trace_request(1, attrs=200)
    _spans(req)[0].dropped_attributes_count = 5
    ev = _spans(req)[0].events.add(name="e")
    ev.attributes.extend(kv(f"e{i}", i) for i in range(130))
    res = validate("traces", req, LIMITS)
    span = _spans(req)[0]
    assert len(span.attributes) == 128 and span.dropped_attributes_count == 77
    assert [a.key for a in span.attributes][:2] == ["k0", "k1"]  # first ones kept
    assert len(span.events[0].attributes) == 128 and span.events[0].dropped_attributes_count == 2
    assert res.rejected == 0 and res.modified
    assert "74 attributes over the count limit dropped" in res.message  # 72 + 2


def test_value_length_truncation_is_utf8_safe() -> None:
    """Long strings are cut to the limit in characters (never mid-code-point), bytes in bytes."""
    req = trace_request(1)
    span = _spans(req)[0]
    span.attributes.append(kv("s", "日本語" * 10))
    span.attributes.add(key="b").value.bytes_value = b"\xff" * 40
    nested = span.attributes.add(key="arr").value.array_value.values.add()
    nested.string_value = "x" * 40
    limits = LimitsConfig(max_attribute_value_length=7)
    res = validate("traces", req, limits)
    values = {a.key: a.value for a in span.attributes}
    assert values["s"].string_value == "日本語日本語日"
    assert values["b"].bytes_value == b"\xff" * 7
    assert values["arr"].array_value.values[0].string_value == "x" * 7
    assert values["k0"].string_value == "v0"
    assert res.modified and "3 attribute values truncated" in res.message
    req.SerializeToString()  # still valid UTF-8 for upb


def test_length_check_skipped_for_small_requests() -> None:
    """When the whole request is shorter than the length limit, values are not even visited."""
    req = trace_request(2)
    res = validate("traces", req, LimitsConfig(max_attribute_value_length=1000), encoded_size=500)
    assert not res.modified


def _deep(depth: int) -> AnyValue:
    root = AnyValue()
    v = root
    for _ in range(depth):
        v = v.array_value.values.add()
    v.int_value = 1
    return root


def test_depth_limit_rejects_span() -> None:
    """Values nested deeper than a configured limit reject the span (B15)."""

    def deep(i: int, span: Any) -> None:
        span.attributes.add(key="d").value.CopyFrom(_deep(5 if i == 0 else 3))

    req = trace_request(2, customize=deep)
    res = validate("traces", req, LimitsConfig(max_attribute_depth=3))
    assert (res.rejected, dict(res.reasons)) == (1, {"too_deep": 1})
    assert [s.name for s in _spans(req)] == ["span-1"]


def test_default_depth_limit_is_left_to_upb() -> None:
    """At the spec default (64 ≥ upb's ~47) no traversal happens: upb is the limit."""
    req = trace_request(
        1, customize=lambda i, s: s.attributes.add(key="d").value.CopyFrom(_deep(40))
    )
    assert validate("traces", req, LIMITS).rejected == 0


def test_logs_bad_ids_cleared_and_deep_rejected() -> None:
    """Log records: malformed IDs are cleared (record kept), too-deep bodies rejected."""
    req = logs_request(3)
    recs = req.resource_logs[0].scope_logs[0].log_records
    recs[0].trace_id = b"\x01" * 3
    recs[0].span_id = b"\x02" * 8
    recs[1].body.CopyFrom(_deep(4))
    res = validate("logs", req, LimitsConfig(max_attribute_depth=2))
    assert (res.rejected, res.accepted) == (1, 2)
    assert recs[0].trace_id == b"" and recs[0].span_id == b""
    assert "log record" in res.message


def test_logs_attribute_limits() -> None:
    """Log record attributes obey the count limit and string bodies the length limit."""
    req = logs_request(1)
    rec = req.resource_logs[0].scope_logs[0].log_records[0]
    rec.attributes.extend(kv(f"a{i}", i) for i in range(5))
    rec.body.string_value = "z" * 100
    res = validate("logs", req, LimitsConfig(max_attributes=2, max_attribute_value_length=10))
    assert len(rec.attributes) == 2 and rec.dropped_attributes_count == 3
    assert rec.body.string_value == "z" * 10
    assert res.rejected == 0 and res.modified


def test_metrics_rules() -> None:
    """Unnamed metrics and mismatched histogram buckets reject their points; bad exemplar IDs are cleared."""
    req = metrics_request(2)
    sm = req.resource_metrics[0].scope_metrics[0]
    sm.metrics[0].sum.data_points[0].exemplars.add(as_int=1, trace_id=b"\x01" * 3)
    sm.metrics.add(name="").gauge.data_points.add(as_double=1.0)
    h = sm.metrics.add(name="latency").histogram
    h.data_points.add(bucket_counts=[1, 2], explicit_bounds=[1.0, 2.0])  # needs 3 counts
    h.data_points.add(bucket_counts=[1, 2, 3], explicit_bounds=[1.0, 2.0])
    assert count_items("metrics", req) == 5
    res = validate("metrics", req, LIMITS)
    assert (res.rejected, res.accepted) == (2, 3)
    assert dict(res.reasons) == {"unnamed_metric": 1, "bucket_mismatch": 1}
    assert [m.name for m in sm.metrics] == ["requests", "latency"]
    assert sm.metrics[0].sum.data_points[0].exemplars[0].trace_id == b""


def test_message_is_bounded() -> None:
    """The partial_success message stays short however many problems there are."""
    req = trace_request(500, customize=lambda i, s: setattr(s, "trace_id", b"\x01"))
    res = validate("traces", req, LIMITS)
    assert res.rejected == 500 and len(res.message) <= MAX_MESSAGE_CHARS
    assert res.message.startswith("rejected 500 spans")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.binary(max_size=20), st.binary(max_size=10), st.binary(max_size=10)),
        max_size=12,
    )
)
def test_property_accounting_and_ids(ids: list[tuple[bytes, bytes, bytes]]) -> None:
    """For any IDs: accepted + rejected = sent, and every kept span has valid IDs."""

    def set_ids(i: int, span: Any) -> None:
        span.trace_id, span.span_id, span.parent_span_id = ids[i]

    req = trace_request(len(ids), customize=set_ids)
    res = validate("traces", req, LIMITS)
    assert res.accepted + res.rejected == len(ids)
    kept = _spans(req)
    assert len(kept) == res.accepted
    for s in kept:
        assert len(s.trace_id) == 16 and any(s.trace_id)
        assert len(s.span_id) == 8 and any(s.span_id)
        assert s.parent_span_id == b"" or (len(s.parent_span_id) == 8 and any(s.parent_span_id))
    ExportTraceServiceRequest.FromString(req.SerializeToString())  # still encodes/decodes


def test_empty_request() -> None:
    """An empty request validates to zero items."""
    res = validate("traces", ExportTraceServiceRequest(), LIMITS)
    assert (res.accepted, res.rejected, res.message) == (0, 0, "")
    assert validate("logs", ExportLogsServiceRequest(), LIMITS).accepted == 0
