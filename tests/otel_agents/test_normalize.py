# SPDX-License-Identifier: Apache-2.0
"""Dialect normalization: OpenInference, OpenLLMetry, old gen_ai.system, underscore cache keys."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from otel_agents import normalize_attributes
from otel_agents import semconv as sc
from otel_agents._normalize import ALIASES, has_dialect_keys


def test_openinference_llm_span() -> None:
    """OpenInference token counts, model, provider, session and span kind map to GenAI names."""
    out = normalize_attributes(
        {
            "openinference.span.kind": "LLM",
            "llm.model_name": "gpt-4o-2024-08-06",
            "llm.provider": "openai",
            "llm.system": "openai",
            "llm.token_count.prompt": 1200,
            "llm.token_count.completion": 300,
            "llm.token_count.total": 1500,
            "llm.token_count.prompt_details.cache_read": 1000,
            "llm.token_count.prompt_details.cache_write": 100,
            "llm.token_count.completion_details.reasoning": 120,
            "session.id": "s-1",
        }
    )
    assert out[sc.GEN_AI_OPERATION_NAME] == sc.OP_CHAT
    assert out[sc.GEN_AI_REQUEST_MODEL] == "gpt-4o-2024-08-06"
    assert out[sc.GEN_AI_PROVIDER_NAME] == "openai"
    assert out[sc.GEN_AI_USAGE_INPUT_TOKENS] == 1200
    assert out[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 300
    assert out[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 1000
    assert out[sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] == 100
    assert out[sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 120
    assert out[sc.GEN_AI_CONVERSATION_ID] == "s-1"
    assert out[sc.AGENT_DIALECT] == "openinference"
    assert "llm.token_count.prompt" not in out and "llm.model_name" not in out


def test_openinference_total_fills_missing_completion() -> None:
    """llm.token_count.total minus prompt gives output tokens when completion is missing."""
    out = normalize_attributes({"llm.token_count.prompt": 10, "llm.token_count.total": 15})
    assert out[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 5


def test_openinference_agent_tool_chain_kinds() -> None:
    """AGENT, TOOL and CHAIN span kinds become invoke_agent, execute_tool and invoke_workflow."""
    agent = normalize_attributes({"openinference.span.kind": "AGENT", "agent.name": "planner"})
    assert agent[sc.GEN_AI_OPERATION_NAME] == sc.OP_INVOKE_AGENT
    assert agent[sc.GEN_AI_AGENT_NAME] == "planner"
    tool = normalize_attributes({"openinference.span.kind": "TOOL", "tool.name": "search"})
    assert tool[sc.GEN_AI_OPERATION_NAME] == sc.OP_EXECUTE_TOOL
    assert tool[sc.GEN_AI_TOOL_NAME] == "search"
    chain = normalize_attributes({"openinference.span.kind": "CHAIN"})
    assert chain[sc.GEN_AI_OPERATION_NAME] == sc.OP_INVOKE_WORKFLOW
    emb = normalize_attributes({"openinference.span.kind": "EMBEDDING"})
    assert emb[sc.GEN_AI_OPERATION_NAME] == sc.OP_EMBEDDINGS


def test_openllmetry_llm_span() -> None:
    """OpenLLMetry prompt/completion tokens, underscore cache keys, request type and gen_ai.system map over."""
    out = normalize_attributes(
        {
            "gen_ai.system": "Anthropic",
            "gen_ai.request.model": "claude-3-5-sonnet",
            "llm.request.type": "chat",
            "gen_ai.usage.prompt_tokens": 500,
            "gen_ai.usage.completion_tokens": 50,
            "gen_ai.usage.cache_read_input_tokens": 400,
            "gen_ai.usage.cache_creation_input_tokens": 20,
        }
    )
    assert out[sc.GEN_AI_PROVIDER_NAME] == "anthropic"
    assert out[sc.GEN_AI_OPERATION_NAME] == sc.OP_CHAT
    assert out[sc.GEN_AI_USAGE_INPUT_TOKENS] == 500
    assert out[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 50
    assert out[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 400
    assert out[sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] == 20
    assert sc.GEN_AI_SYSTEM not in out


def test_openllmetry_legacy_llm_usage_keys() -> None:
    """The older llm.usage.* spellings are read too."""
    out = normalize_attributes({"llm.usage.prompt_tokens": 7, "llm.usage.completion_tokens": 3})
    assert (out[sc.GEN_AI_USAGE_INPUT_TOKENS], out[sc.GEN_AI_USAGE_OUTPUT_TOKENS]) == (7, 3)
    assert out[sc.AGENT_DIALECT] == "openllmetry"


def test_traceloop_entity_name_follows_span_kind() -> None:
    """traceloop.entity.name becomes the agent, tool or workflow name according to traceloop.span.kind."""
    agent = normalize_attributes(
        {"traceloop.span.kind": "agent", "traceloop.entity.name": "writer"}
    )
    assert agent[sc.GEN_AI_OPERATION_NAME] == sc.OP_INVOKE_AGENT
    assert agent[sc.GEN_AI_AGENT_NAME] == "writer"
    tool = normalize_attributes({"traceloop.span.kind": "tool", "traceloop.entity.name": "grep"})
    assert tool[sc.GEN_AI_OPERATION_NAME] == sc.OP_EXECUTE_TOOL
    assert tool[sc.GEN_AI_TOOL_NAME] == "grep"
    wf = normalize_attributes({"traceloop.span.kind": "workflow", "traceloop.entity.name": "crew"})
    assert wf[sc.GEN_AI_WORKFLOW_NAME] == "crew"
    task = normalize_attributes({"traceloop.span.kind": "task", "traceloop.entity.name": "step"})
    assert sc.GEN_AI_OPERATION_NAME not in task
    assert task["traceloop.entity.name"] == "step"


def test_old_provider_values_are_mapped() -> None:
    """Old gen_ai.system spellings map to the current well-known gen_ai.provider.name values."""
    assert normalize_attributes({"gen_ai.system": "az.ai.inference"})[sc.GEN_AI_PROVIDER_NAME] == (
        "azure.ai.inference"
    )
    assert normalize_attributes({"gen_ai.system": "vertex_ai"})[sc.GEN_AI_PROVIDER_NAME] == (
        "gcp.vertex_ai"
    )
    assert (
        normalize_attributes({"llm.provider": "mistralai"})[sc.GEN_AI_PROVIDER_NAME] == "mistral_ai"
    )


def test_canonical_keys_already_present_win() -> None:
    """A canonical key already on the span is kept; the dialect value is dropped."""
    out = normalize_attributes(
        {
            sc.GEN_AI_USAGE_INPUT_TOKENS: 100,
            "llm.token_count.prompt": 999,
            sc.GEN_AI_PROVIDER_NAME: "openai",
            "gen_ai.system": "anthropic",
            sc.GEN_AI_OPERATION_NAME: "text_completion",
            "openinference.span.kind": "LLM",
        }
    )
    assert out[sc.GEN_AI_USAGE_INPUT_TOKENS] == 100
    assert out[sc.GEN_AI_PROVIDER_NAME] == "openai"
    assert out[sc.GEN_AI_OPERATION_NAME] == "text_completion"
    assert "llm.token_count.prompt" not in out


def test_canonical_only_input_is_copied_unchanged() -> None:
    """Spans already in the GenAI vocabulary come back equal, as a new dict."""
    attrs: dict[str, Any] = {sc.GEN_AI_OPERATION_NAME: "chat", sc.GEN_AI_USAGE_INPUT_TOKENS: 3}
    out = normalize_attributes(attrs)
    assert out == attrs and out is not attrs
    assert not has_dialect_keys(attrs)


def test_aliases_target_only_known_canonical_names() -> None:
    """Every alias points at a name defined in semconv."""
    canonical = {v for k, v in vars(sc).items() if k.isupper() and isinstance(v, str)}
    assert set(ALIASES.values()) <= canonical


_keys = st.sampled_from(
    [
        *ALIASES,
        "openinference.span.kind",
        "traceloop.span.kind",
        "traceloop.entity.name",
        "llm.request.type",
        "llm.token_count.total",
        sc.GEN_AI_OPERATION_NAME,
        "other.key",
    ]
)
_values = st.one_of(st.integers(0, 10**6), st.sampled_from(["LLM", "AGENT", "tool", "chat", "x"]))


@given(st.dictionaries(_keys, _values, max_size=12))
def test_normalization_is_idempotent(attrs: dict[str, Any]) -> None:
    """Normalizing twice gives the same result as once, and the input is never modified."""
    before = dict(attrs)
    once = normalize_attributes(attrs)
    assert attrs == before
    assert normalize_attributes(once) == once


@given(st.dictionaries(_keys, _values, max_size=12))
def test_in_place_normalization_equals_the_copying_one(attrs: dict[str, Any]) -> None:
    """normalize_in_place changes and returns the given dict, with exactly normalize_attributes' result."""
    from otel_agents._normalize import normalize_in_place

    expected = normalize_attributes(attrs)
    mine = dict(attrs)
    out = normalize_in_place(mine)
    assert out is mine
    assert out == expected
