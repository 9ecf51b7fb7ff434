# SPDX-License-Identifier: Apache-2.0
"""SpanBatch decoding: columns, normalization of the canonical names, cost rules."""

from __future__ import annotations

import numpy as np
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from otel_agents.processors._batch import (
    COLUMNS,
    SpanBatch,
    agent_pending,
    build_span_batch,
    factorize,
)

from otel_agents import semconv as sc
from otel_agents import tool_args_hash

from ._gen import TraceGen, kv, request


def _one_span(attrs: dict[str, object], **fields: object) -> ExportTraceServiceRequest:
    span = Span(
        trace_id=b"\x01" * 16,
        span_id=b"\x02" * 8,
        name="chat m",
        start_time_unix_nano=1_000,
        end_time_unix_nano=3_000,
        attributes=[kv(k, v) for k, v in attrs.items()],
        **fields,  # type: ignore[arg-type]
    )
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])]
    )


def test_generated_trace_decodes_into_equal_length_columns() -> None:
    """Every column has one entry per span and the identity columns are filled."""
    gen = TraceGen(3)
    spans = gen.trace(10**18)
    batch = build_span_batch(request(spans), pricebook=None, received_at=123.0)
    assert batch.n == len(spans) == 10
    assert batch.received_at == 123.0
    assert set(batch.service_name.tolist()) == {"planner-svc", "researcher-svc"}
    # The A2A CLIENT span's agent name (the remote agent) moved to a2a_peer; the caller is
    # its parent's agent (here in the same batch).
    assert sorted(set(batch.agent_name.tolist())) == ["planner", "researcher"]
    client = (batch.kind == 3) & (batch.a2a_method != "")
    assert batch.agent_name[client].tolist() == ["planner"]
    assert batch.a2a_peer[client].tolist() == ["researcher"]
    # Exported alone (parent elsewhere), the caller is left for assembly to fill in.
    alone = [g for g in spans if g.span.name == "message/send" and g.span.kind == 3]
    lone = build_span_batch(request(alone), pricebook=None, received_at=0.0)
    assert lone.agent_name.tolist() == [""] and lone.a2a_peer.tolist() == ["researcher"]
    assert (batch.parent_span_id == b"").sum() == 1
    tools = batch.tool_name[batch.operation == sc.OP_EXECUTE_TOOL].tolist()
    assert sorted(tools) == ["summarize", "web_search", "web_search"]
    inf = batch.is_inference
    assert inf.sum() == 3 and (batch.cost[inf] > 0).all() and (batch.cost[~inf] == 0).all()
    assert not batch.unpriced.any()


def test_cost_from_sender_only_on_inference_spans() -> None:
    """A cost attribute on a non-inference span (a parent's total) is ignored."""
    req = _one_span({sc.GEN_AI_OPERATION_NAME: "invoke_agent", sc.GEN_AI_USAGE_COST_AMOUNT: 5.0})
    batch = build_span_batch(req, pricebook=None, received_at=0.0)
    assert batch.cost.tolist() == [0.0] and not batch.unpriced[0]


def test_inference_with_tokens_and_no_price_is_unpriced() -> None:
    """Tokens without a sender cost and without a price book are marked unpriced, cost 0."""
    req = _one_span(
        {
            sc.GEN_AI_OPERATION_NAME: "chat",
            sc.GEN_AI_REQUEST_MODEL: "no-such-model",
            sc.GEN_AI_USAGE_INPUT_TOKENS: 10,
            sc.GEN_AI_USAGE_OUTPUT_TOKENS: 2,
        }
    )
    batch = build_span_batch(req, pricebook=None, received_at=0.0)
    assert batch.unpriced.tolist() == [True] and batch.cost.tolist() == [0.0]
    assert batch.input_tokens.tolist() == [10] and batch.output_tokens.tolist() == [2]


def test_error_status_and_tool_arguments_hash() -> None:
    """Status ERROR marks the span an error; tool arguments without a hash get one."""
    req = _one_span(
        {
            sc.GEN_AI_OPERATION_NAME: "execute_tool",
            sc.GEN_AI_TOOL_NAME: "web_search",
            sc.GEN_AI_TOOL_CALL_ARGUMENTS: '{"q": "otel"}',
        },
        status={"code": 2},
    )
    batch = build_span_batch(req, pricebook=None, received_at=0.0)
    assert batch.is_error.tolist() == [True]
    # The SDK's canonical hash: the same call hashes alike whoever computed it.
    assert batch.tool_args_hash.tolist() == [tool_args_hash({"q": "otel"})]


def test_take_concat_and_inverted_durations() -> None:
    """take/concat keep rows aligned; an end before the start is a zero duration."""
    req = _one_span({}, kind=3)
    batch = build_span_batch(req, pricebook=None, received_at=1.0)
    inverted = batch.with_columns(end_ns=np.array([0], dtype=np.int64))
    both = SpanBatch.concat([batch, inverted])
    assert both.n == 2 and both.duration_s.tolist() == [2e-6, 0.0]
    assert both.take(np.array([1])).end_ns.tolist() == [0]
    assert SpanBatch.empty().n == 0


def test_factorize_gives_codes_and_sorted_values() -> None:
    """factorize maps strings to codes into the sorted distinct values."""
    codes, values = factorize(np.array(["b", "a", "b", ""], dtype=object))
    assert values.tolist() == ["", "a", "b"]
    assert codes.tolist() == [2, 1, 2, 0]


def test_dialect_attributes_are_normalized() -> None:
    """OpenInference / OpenLLMetry keys land in the canonical columns (SDK normalization)."""
    req = _one_span(
        {
            "openinference.span.kind": "LLM",
            "llm.model_name": "gpt-4o",
            "llm.token_count.prompt": 100,
            "llm.token_count.completion": 20,
            "session.id": "s-1",
        }
    )
    batch = build_span_batch(req, pricebook=None, received_at=0.0)
    assert batch.operation.tolist() == ["chat"]
    assert batch.request_model.tolist() == ["gpt-4o"]
    assert (batch.input_tokens[0], batch.output_tokens[0]) == (100, 20)
    assert batch.conversation_id.tolist() == ["s-1"]
    req = _one_span({"gen_ai.usage.prompt_tokens": 7, "gen_ai.system": "OpenAI"})
    batch = build_span_batch(req, pricebook=None, received_at=0.0)
    assert batch.input_tokens.tolist() == [7] and batch.provider.tolist() == ["openai"]


def test_receiver_prices_unpriced_inference_with_the_pricebook() -> None:
    """Tokens without a sender cost are priced with the shared PriceBook; unknown models not."""
    from otel_agents._cost import PriceBook

    book = PriceBook()
    attrs = {
        sc.GEN_AI_OPERATION_NAME: "chat",
        sc.GEN_AI_PROVIDER_NAME: "openai",
        sc.GEN_AI_USAGE_INPUT_TOKENS: 1_000_000,
        sc.GEN_AI_USAGE_OUTPUT_TOKENS: 0,
    }
    known = build_span_batch(
        _one_span({**attrs, sc.GEN_AI_REQUEST_MODEL: "gpt-4o"}), pricebook=book, received_at=0.0
    )
    expected = book.price(
        model="gpt-4o", provider="openai", input_tokens=1_000_000, output_tokens=0
    )
    assert expected is not None and known.cost[0] == pytest.approx(expected.amount)
    assert known.cost[0] > 0 and not known.unpriced[0]
    unknown = build_span_batch(
        _one_span({**attrs, sc.GEN_AI_REQUEST_MODEL: "no-such-model-xyz"}),
        pricebook=book,
        received_at=0.0,
    )
    assert unknown.unpriced.tolist() == [True] and unknown.cost.tolist() == [0.0]


def test_garbage_timestamps_and_counts_are_clamped_not_fatal() -> None:
    """fixed64 timestamps beyond int64 and absurd token counts keep the span (clamped)."""
    req = _one_span({sc.GEN_AI_USAGE_INPUT_TOKENS: 1e300, sc.GEN_AI_USAGE_OUTPUT_TOKENS: -5})
    span = req.resource_spans[0].scope_spans[0].spans[0]
    span.end_time_unix_nano = 2**64 - 1
    batch = build_span_batch(req, pricebook=None, received_at=0.0)
    assert batch.end_ns.tolist() == [2**63 - 1]
    assert batch.input_tokens.tolist() == [2**63 - 1] and batch.output_tokens.tolist() == [0]
    assert batch.duration_s[0] > 0


def _agent_request(spans: list[Span], main_agent: str = "") -> ExportTraceServiceRequest:
    attrs = [kv("service.name", "svc")]
    if main_agent:
        attrs.append(kv(sc.GEN_AI_MAIN_AGENT_NAME, main_agent))
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=attrs), scope_spans=[ScopeSpans(spans=spans)]
            )
        ]
    )


def _span(sid: int, parent: int, name: str, **attrs: object) -> Span:
    return Span(
        trace_id=b"\x07" * 16,
        span_id=sid.to_bytes(8, "big"),
        parent_span_id=parent.to_bytes(8, "big") if parent else b"",
        name=name,
        start_time_unix_nano=1_000,
        end_time_unix_nano=2_000,
        attributes=[kv(k, v) for k, v in attrs.items()],
    )


def test_agents_resolve_within_the_batch_and_from_the_resource_main_agent() -> None:
    """Agent-less spans take the nearest in-batch ancestor's agent, chains ending at an
    agent-less root take the Resource's main agent, and chains leaving the batch are pending."""
    op = sc.GEN_AI_OPERATION_NAME
    spans = [
        _span(1, 0, "invoke_workflow flow", **{op: "invoke_workflow"}),
        _span(2, 1, "invoke_agent triage", **{op: "invoke_agent", sc.GEN_AI_AGENT_NAME: "triage"}),
        _span(3, 2, "POST", **{"http.request.method": "POST"}),
        _span(4, 3, "chat m", **{op: "chat"}),  # two levels below the agent
        _span(5, 1, "chat m", **{op: "chat"}),  # below the agent-less root
        _span(6, 99, "chat m", **{op: "chat"}),  # parent in another batch
    ]
    batch = build_span_batch(_agent_request(spans, "support"), pricebook=None, received_at=0.0)
    assert batch.main_agent.tolist() == ["support"] * 6
    assert batch.agent_name.tolist() == ["support", "triage", "triage", "triage", "support", ""]
    assert agent_pending(batch).tolist() == [False] * 5 + [True]
    plain = build_span_batch(_agent_request(spans), pricebook=None, received_at=0.0)
    assert plain.agent_name.tolist() == ["", "triage", "triage", "triage", "", ""]
    assert agent_pending(plain).tolist() == [False, False, False, False, True, True]


def test_batches_without_a_main_agent_column_default_to_empty() -> None:
    """A SpanBatch built without ``main_agent`` gets one empty entry per span, kept by take."""
    b = build_span_batch(request(TraceGen(2).trace(10**18)), pricebook=None, received_at=0.0)
    cols = {c: getattr(b, c) for c in COLUMNS if c != "main_agent"}
    bare = SpanBatch(**cols)
    assert bare.main_agent.tolist() == [""] * b.n
    assert bare.take(np.arange(2)).main_agent.tolist() == ["", ""]


def test_values_of_unexpected_types_convert_and_the_last_duplicate_wins() -> None:
    """A string key holding an int, an int key holding a numeric string or a double, and a
    duplicated key decode as the general conversion says, the last duplicate winning."""
    req = _one_span(
        {
            sc.GEN_AI_OPERATION_NAME: "chat",
            sc.GEN_AI_REQUEST_MODEL: 42,  # int where a string belongs
            sc.GEN_AI_USAGE_INPUT_TOKENS: "120",  # numeric string
            sc.GEN_AI_USAGE_OUTPUT_TOKENS: 7.9,  # double
        }
    )
    attrs = req.resource_spans[0].scope_spans[0].spans[0].attributes
    attrs.extend([kv(sc.GEN_AI_AGENT_NAME, "first"), kv(sc.GEN_AI_AGENT_NAME, "")])
    attrs.extend([kv(sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, -5)])
    b = build_span_batch(req, pricebook=None, received_at=0.0)
    assert b.request_model.tolist() == ["42"]
    assert b.input_tokens.tolist() == [120] and b.output_tokens.tolist() == [7]
    assert b.agent_name.tolist() == [""]  # the later empty value wins; root: no main agent
    assert b.cache_read_tokens.tolist() == [0]  # negative counts clamp to 0
    assert b.unpriced.tolist() == [True]  # tokens, no pricebook


def test_agent_resolution_terminates_on_cycles_and_self_parents() -> None:
    """Malformed parent links (a two-span cycle, a span its own parent) leave those spans for
    assembly instead of looping or naming them from nowhere."""
    op = sc.GEN_AI_OPERATION_NAME
    spans = [
        _span(1, 2, "a", **{op: "chat"}),
        _span(2, 1, "b", **{op: "chat"}),
        _span(3, 3, "self", **{op: "chat"}),
        _span(4, 0, "invoke_agent x", **{op: "invoke_agent", sc.GEN_AI_AGENT_NAME: "x"}),
        _span(5, 4, "chat", **{op: "chat"}),
    ]
    batch = build_span_batch(_agent_request(spans, "main"), pricebook=None, received_at=0.0)
    assert batch.agent_name.tolist() == ["", "", "", "x", "x"]
    assert agent_pending(batch).tolist() == [True, True, True, False, False]
