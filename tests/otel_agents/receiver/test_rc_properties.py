# SPDX-License-Identifier: Apache-2.0
"""Reliability scorecard RC-11: property tests of validation and JSON/protobuf equivalence, and a
short atheris run of the handler fuzzer (benchmarks/fuzz_handlers.py).

Strategies are hand-written (reliability.md §5.1): ``AnyValue`` trees with ``st.recursive``
(strings incl. any non-surrogate unicode, int64 bounds, floats incl. NaN/inf, bytes, bools,
arrays, key-value lists), IDs of right and wrong lengths, and spans with events and links.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import threading
from typing import Any

import pytest
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otel_agents.receiver import ExportHandler, LimitsConfig, Outcome, _otlp_json
from otel_agents.receiver._validate import validate
from tests.otel_agents.receiver._rc_fixtures import ROOT, record_figures

EXAMPLES = 500  # reliability.md RC-11: ≥ 500 examples per property in CI
LIMITS = LimitsConfig(max_attributes=16, max_attribute_value_length=64)

_text = st.text(st.characters(codec="utf-8"), max_size=24)  # any non-surrogate code point
_leaf = st.one_of(
    _text.map(lambda s: AnyValue(string_value=s)),
    st.integers(-(2**63), 2**63 - 1).map(lambda i: AnyValue(int_value=i)),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda f: AnyValue(double_value=f)),
    st.booleans().map(lambda b: AnyValue(bool_value=b)),
    st.binary(max_size=16).map(lambda b: AnyValue(bytes_value=b)),
)


def _array(values: list[AnyValue]) -> AnyValue:
    return AnyValue(array_value=ArrayValue(values=values))


def _kvlist(items: list[tuple[str, AnyValue]]) -> AnyValue:
    return AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=k, value=v) for k, v in items]))


any_values = st.recursive(
    _leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=3).map(_array),
        st.lists(st.tuples(_text, children), max_size=3).map(_kvlist),
    ),
    max_leaves=8,
)
_attrs = st.lists(
    st.tuples(
        st.one_of(
            _text,
            st.sampled_from(
                ["gen_ai.agent.name", "gen_ai.request.model", "llm.token_count.prompt"]
            ),
        ),
        any_values,
    ),
    max_size=20,
).map(lambda kvs: [KeyValue(key=k, value=v) for k, v in kvs])
# Mostly valid IDs, sometimes the wrong length or all zeros (B8/B9).
_trace_id = st.one_of(
    st.binary(min_size=16, max_size=16), st.binary(max_size=20), st.just(bytes(16))
)
_span_id = st.one_of(st.binary(min_size=8, max_size=8), st.binary(max_size=10), st.just(bytes(8)))
_times = st.integers(0, 2**63 - 1)


@st.composite
def spans(draw: st.DrawFn) -> Span:
    """One span: any IDs, parent, times, attributes, an event and a link sometimes."""
    span = Span(
        trace_id=draw(_trace_id),
        span_id=draw(_span_id),
        parent_span_id=draw(st.one_of(st.just(b""), _span_id)),
        name=draw(_text),
        kind=Span.SpanKind.ValueType(draw(st.integers(0, 5))),
        start_time_unix_nano=draw(_times),
        end_time_unix_nano=draw(_times),
        attributes=draw(_attrs),
    )
    if draw(st.booleans()):
        span.events.add(name=draw(_text), time_unix_nano=draw(_times)).attributes.extend(
            draw(_attrs)
        )
    if draw(st.booleans()):
        span.links.add(trace_id=draw(_trace_id), span_id=draw(_span_id))
    return span


@st.composite
def trace_requests(draw: st.DrawFn) -> ExportTraceServiceRequest:
    """1–3 resources × 1–2 scopes × 0–4 spans."""
    request = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(1, 3))):
        rs = request.resource_spans.add()
        rs.resource.attributes.extend(draw(_attrs))
        for _ in range(draw(st.integers(1, 2))):
            ss = rs.scope_spans.add()
            ss.scope.name = draw(_text)
            ss.spans.extend(draw(st.lists(spans(), max_size=4)))
    return request


class _Keep:
    """A real ingestor keeping (request, payload, items) in memory."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stored: list[tuple[Message, bytes, int]] = []

    def ingest(self, signal: str, request: Message, payload: bytes, items: int) -> None:
        with self.lock:
            self.stored.append((request, payload, items))


def _count(request: ExportTraceServiceRequest) -> int:
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)


def _rejected(answer: Any) -> int:
    if answer.response is None or not answer.response.HasField("partial_success"):
        return 0
    return int(answer.response.partial_success.rejected_spans)


def _canonical(msg: Message) -> str:
    """Deterministic comparison form (NaN == NaN, unlike message equality)."""

    def fix(o: Any) -> Any:
        if isinstance(o, float) and math.isnan(o):
            return "NaN"
        if isinstance(o, dict):
            return {k: fix(v) for k, v in o.items()}
        if isinstance(o, list):
            return [fix(v) for v in o]
        return o

    return json.dumps(fix(_otlp_json.to_json_obj(msg)), sort_keys=True)


_COUNTER = {"validation": 0, "equivalence": 0}


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=trace_requests())
def test_rc11_property_validation_accounts_for_every_span_and_stores_clean_data(
    request: ExportTraceServiceRequest,
) -> None:
    """RC-11: for any request the answer is OK/PARTIAL/INVALID, accepted + rejected == spans
    sent, what is stored re-validates unchanged (idempotent) with valid IDs and within limits."""
    _COUNTER["validation"] += 1
    keep = _Keep()
    answer = ExportHandler(keep, LIMITS).handle(
        "traces", "test", request.SerializeToString(), json_body=False
    )
    assert answer.outcome in (Outcome.OK, Outcome.PARTIAL, Outcome.INVALID)
    if answer.outcome is Outcome.INVALID:
        assert not keep.stored
        return
    accepted = sum(items for _, _, items in keep.stored)
    assert accepted + _rejected(answer) == _count(request)
    for _, payload, items in keep.stored:
        again = ExportTraceServiceRequest.FromString(payload)
        result = validate("traces", again, LIMITS)
        assert (result.rejected, result.modified, result.accepted) == (0, False, items)
        for rs in again.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    assert len(span.trace_id) == 16 and any(span.trace_id)
                    assert len(span.span_id) == 8 and any(span.span_id)
                    assert len(span.attributes) <= LIMITS.max_attributes


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=trace_requests())
def test_rc11_property_json_and_protobuf_requests_get_the_same_answer_and_storage(
    request: ExportTraceServiceRequest,
) -> None:
    """RC-11: the OTLP/JSON form of any request gets the same outcome, the same rejected count
    and stores the same data as its protobuf form."""
    _COUNTER["equivalence"] += 1
    proto_keep, json_keep = _Keep(), _Keep()
    as_proto = ExportHandler(proto_keep, LIMITS).handle(
        "traces", "test", request.SerializeToString(), json_body=False
    )
    as_json = ExportHandler(json_keep, LIMITS).handle(
        "traces", "test", _otlp_json.encode(request), json_body=True
    )
    assert as_json.outcome is as_proto.outcome, (as_json.message, as_proto.message)
    assert _rejected(as_json) == _rejected(as_proto)
    stored_proto = [
        _canonical(ExportTraceServiceRequest.FromString(p)) for _, p, _ in proto_keep.stored
    ]
    stored_json = [
        _canonical(ExportTraceServiceRequest.FromString(p)) for _, p, _ in json_keep.stored
    ]
    assert stored_json == stored_proto


def test_rc11_properties_ran_their_examples() -> None:
    """RC-11: the two properties above each ran the required number of examples in this run."""
    if not all(_COUNTER.values()):
        pytest.skip("run together with the property tests (e.g. -k rc11)")
    assert min(_COUNTER.values()) >= EXAMPLES
    record_figures(
        "RC-11",
        "test_rc11_property_*",
        examples_validation=_COUNTER["validation"],
        examples_equivalence=_COUNTER["equivalence"],
    )


@pytest.mark.skipif(
    importlib.util.find_spec("atheris") is None,
    reason="atheris not installed: the hypothesis properties above carry RC-11 in this run",
)
def test_rc11_atheris_fuzz_of_the_handlers_finds_no_crash() -> None:
    """RC-11: a bounded atheris run (3,000 inputs over ExportHandler, the HTTP server and the
    gRPC server, seeded with valid GenAI requests) ends without a crash, hang or leak."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.fuzz_handlers", "--runs", "3000", "--json"],
        cwd=ROOT,
        capture_output=True,
        timeout=240,
        check=False,
    )
    res = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    assert res["ok"], res
    assert res["inputs"] >= 3000 and res["coverage"]
    record_figures(
        "RC-11",
        "test_rc11_atheris_fuzz_of_the_handlers_finds_no_crash",
        inputs=res["inputs"],
        coverage=res["coverage"],
        crashers=len(res["crashers"]),
    )
