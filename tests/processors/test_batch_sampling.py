# SPDX-License-Identifier: Apache-2.0
"""Sampling before the full parse: ``sample_payload`` / ``build_span_batch_from_payload`` equal
the full parse followed by ``build_span_batch`` on any request, canonical or not."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from otel_agents.processors._batch import (
    COLUMNS,
    SpanBatch,
    build_sampled_span_batch,
    build_span_batch,
    build_span_batch_from_payload,
    sample_payload,
)
from otel_agents.processors._sampling import probability_to_threshold

from otel_agents import semconv as sc

from ._gen import kv


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field: how sub-messages, bytes and strings go on the wire."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


_HEX = "0123456789abcdef"
_tracestate = st.one_of(
    st.just(""),
    st.builds(lambda rv: f"ot=rv:{rv}", st.text(_HEX, min_size=14, max_size=14)),
    st.builds(
        lambda th, rv: f"vendor=x,ot=th:{th};rv:{rv}",
        st.text(_HEX, min_size=1, max_size=3),
        st.text(_HEX, min_size=14, max_size=14),
    ),
    st.builds(lambda th: f"ot=th:{th}", st.text(_HEX, min_size=1, max_size=2)),
    st.just("ot=rv:zz"),  # malformed: the trace ID decides
)


@st.composite
def _span(draw: st.DrawFn, trace_ids: list[bytes]) -> bytes:
    """One serialized span; sometimes with fields out of order or sent twice (valid protobuf:
    the last value of a singular field wins), which a canonical encoder never produces."""
    tid = draw(st.sampled_from(trace_ids))
    span = Span(
        trace_id=tid,
        span_id=draw(st.binary(min_size=8, max_size=8)),
        trace_state=draw(_tracestate),
        name=draw(st.sampled_from(["chat gpt-4o", "execute_tool search", "invoke_agent a"])),
        kind=draw(st.integers(0, 5)),
        start_time_unix_nano=1_700_000_000_000_000_000,
        end_time_unix_nano=1_700_000_000_500_000_000,
        attributes=[
            kv(sc.GEN_AI_OPERATION_NAME, draw(st.sampled_from(["chat", "execute_tool"]))),
            kv(sc.GEN_AI_AGENT_NAME, draw(st.sampled_from(["planner", "researcher"]))),
            kv(sc.GEN_AI_USAGE_INPUT_TOKENS, draw(st.integers(0, 5000))),
        ],
    )
    data = span.SerializeToString()
    tail = draw(st.sampled_from(["", "trace_id", "trace_state", "both"]))
    if tail in ("trace_id", "both"):
        data += _field(1, draw(st.sampled_from(trace_ids)))
    if tail in ("trace_state", "both"):
        data += _field(3, draw(_tracestate).encode())
    return data


@st.composite
def _payload(draw: st.DrawFn) -> bytes:
    """A serialized ExportTraceServiceRequest: resources, scopes, spans of a few traces (runs
    of a trace ID, repeats across scopes), a trace ID of another length now and then."""
    lengths = st.sampled_from([16, 16, 16, 16, 8])
    trace_ids = draw(st.lists(lengths.flatmap(lambda n: st.binary(min_size=n, max_size=n)),
                              min_size=1, max_size=6))  # fmt: skip
    out = b""
    for r in range(draw(st.integers(0, 3))):
        resource = Resource(attributes=[kv("service.name", f"svc-{r}")]).SerializeToString()
        rs = _field(1, resource)
        for _ in range(draw(st.integers(0, 3))):
            ss = _field(1, InstrumentationScope(name="lib").SerializeToString())
            for span in draw(st.lists(_span(trace_ids), max_size=12)):
                ss += _field(2, span)
            rs += _field(2, ss)
        out += _field(1, rs)
    return out


_FRACTIONS = st.sampled_from([1.0, 0.9, 0.5, 0.25, 0.05, 1 / 1024])


def _equal(a: SpanBatch, b: SpanBatch) -> None:
    assert a.n == b.n
    assert a.analysed_fraction == b.analysed_fraction
    for c in COLUMNS:
        assert np.array_equal(getattr(a, c), getattr(b, c)), c


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=_payload(), fraction=_FRACTIONS)
def test_payload_sampling_equals_the_full_parse(payload: bytes, fraction: float) -> None:
    """Sampling the serialized request keeps exactly the spans, weights and columns that the
    full parse and ``build_span_batch`` at the same threshold give."""
    threshold = probability_to_threshold(fraction)
    full = build_span_batch(
        ExportTraceServiceRequest.FromString(payload),
        pricebook=None,
        received_at=5.0,
        threshold=threshold,
    )
    fast = build_span_batch_from_payload(
        payload, pricebook=None, received_at=5.0, threshold=threshold
    )
    _equal(full, fast)
    if threshold:
        sub, weights = sample_payload(payload, threshold)
        assert weights == full.weight.tolist()
        assert len(sub) <= len(payload)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads=st.lists(_payload(), min_size=1, max_size=4), fraction=_FRACTIONS)
def test_coalesced_parts_equal_the_concatenated_batches(
    payloads: list[bytes], fraction: float
) -> None:
    """Several requests' kept spans decoded together give the rows of their batches, in order."""
    threshold = probability_to_threshold(fraction)
    if not threshold:
        return
    one = [
        build_span_batch(
            ExportTraceServiceRequest.FromString(p),
            pricebook=None,
            received_at=5.0,
            threshold=threshold,
        )
        for p in payloads
    ]
    together = build_sampled_span_batch(
        [sample_payload(p, threshold) for p in payloads],
        pricebook=None,
        received_at=5.0,
        fraction=one[0].analysed_fraction,
    )
    # Agent resolution sees the coalesced rows together (a parent in an earlier request names
    # a child's agent), so compare the columns it does not touch.
    concat = SpanBatch.concat(one)
    assert together.n == concat.n
    for c in ("trace_id", "span_id", "name", "kind", "input_tokens", "weight", "service_name"):
        assert np.array_equal(getattr(together, c), getattr(concat, c)), c


def test_a_request_without_sampled_traces_decodes_nothing() -> None:
    """At a threshold above every trace's randomness nothing is kept, and the batch is empty
    with the sample's fraction."""
    tid = bytes(16)  # randomness 0: below any threshold > 0
    span = Span(trace_id=tid, span_id=b"\x01" * 8, name="x").SerializeToString()
    payload = _field(1, _field(2, _field(2, span)))
    assert sample_payload(payload, probability_to_threshold(0.5)) == (b"", [])
    batch = build_span_batch_from_payload(
        payload, pricebook=None, received_at=1.0, threshold=probability_to_threshold(0.5)
    )
    assert batch.n == 0 and batch.analysed_fraction == 0.5
