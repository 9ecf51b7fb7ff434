# SPDX-License-Identifier: Apache-2.0
"""Dialect normalization: OpenInference / OpenLLMetry / older GenAI names → current GenAI names.

Shared by the SDK's enriching processors and the receiver (``build_span_batch``), so both halves
see one vocabulary. The receiver calls :func:`normalize_attributes` once per span, so the common
case — a span that already speaks the current GenAI conventions — is a dict copy plus one set
intersection.

Rules:

* :data:`ALIASES` are pure renames (dialect key → canonical key). A canonical key that is already
  present wins; the dialect key is dropped either way (it is *renamed*, not duplicated).
* ``gen_ai.operation.name`` is inferred when absent from ``openinference.span.kind``,
  ``traceloop.span.kind`` or OpenLLMetry's ``llm.request.type``.
* ``traceloop.entity.name`` becomes the agent / tool / workflow name according to
  ``traceloop.span.kind``.
* ``gen_ai.system`` (renamed ``gen_ai.provider.name`` in semconv 1.37) and OpenInference's
  ``llm.provider`` / ``llm.system`` become ``gen_ai.provider.name``, with the few old spellings
  mapped to the current well-known values.
* OpenInference's ``llm.token_count.total`` fills ``gen_ai.usage.output_tokens`` only when the
  completion count is missing and the prompt count is known.
* ``agent.dialect`` records which dialect was translated (``openinference``, ``openllmetry``,
  ``gen_ai_legacy``), so the receiver can count senders per dialect.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from opentelemetry.util.types import AttributeValue

from otel_agents import semconv as sc

__all__ = [
    "ALIASES",
    "DIALECT_KEYS",
    "AttrValue",
    "has_dialect_keys",
    "normalize_attributes",
    "normalize_in_place",
]

#: An OpenTelemetry attribute value (the SDK's ``AttributeValue``).
AttrValue = AttributeValue

# Dialect key names (spelled once here; they are other projects' vocabularies, not ours).
OI_SPAN_KIND: Final = "openinference.span.kind"
OI_TOKEN_PROMPT: Final = "llm.token_count.prompt"
OI_TOKEN_COMPLETION: Final = "llm.token_count.completion"
OI_TOKEN_TOTAL: Final = "llm.token_count.total"
OI_TOKEN_CACHE_READ: Final = "llm.token_count.prompt_details.cache_read"
OI_TOKEN_CACHE_WRITE: Final = "llm.token_count.prompt_details.cache_write"
OI_TOKEN_REASONING: Final = "llm.token_count.completion_details.reasoning"
OI_MODEL_NAME: Final = "llm.model_name"
OI_PROVIDER: Final = "llm.provider"
OI_SYSTEM: Final = "llm.system"
OI_TOOL_NAME: Final = "tool.name"
OI_TOOL_DESCRIPTION: Final = "tool.description"
OI_TOOL_CALL_ID: Final = "tool_call.id"
OI_SESSION_ID: Final = "session.id"
OI_AGENT_NAME: Final = "agent.name"
TL_SPAN_KIND: Final = "traceloop.span.kind"
TL_ENTITY_NAME: Final = "traceloop.entity.name"
TL_WORKFLOW_NAME: Final = "traceloop.workflow.name"
TL_REQUEST_TYPE: Final = "llm.request.type"
TL_PROMPT_TOKENS: Final = "gen_ai.usage.prompt_tokens"
TL_COMPLETION_TOKENS: Final = "gen_ai.usage.completion_tokens"
TL_LLM_PROMPT_TOKENS: Final = "llm.usage.prompt_tokens"
TL_LLM_COMPLETION_TOKENS: Final = "llm.usage.completion_tokens"
TL_CACHE_READ: Final = "gen_ai.usage.cache_read_input_tokens"
TL_CACHE_CREATION: Final = "gen_ai.usage.cache_creation_input_tokens"
TL_LLM_CACHE_READ: Final = "llm.usage.cache_read_input_tokens"
TL_LLM_CACHE_CREATION: Final = "llm.usage.cache_creation_input_tokens"
TL_REASONING: Final = "gen_ai.usage.reasoning_tokens"
TL_LLM_REASONING: Final = "llm.usage.reasoning_tokens"

DIALECT_OPENINFERENCE: Final = "openinference"
DIALECT_OPENLLMETRY: Final = "openllmetry"
DIALECT_GEN_AI_LEGACY: Final = "gen_ai_legacy"

_ALIASES: dict[str, str] = {
    # OpenInference
    OI_TOKEN_PROMPT: sc.GEN_AI_USAGE_INPUT_TOKENS,
    OI_TOKEN_COMPLETION: sc.GEN_AI_USAGE_OUTPUT_TOKENS,
    OI_TOKEN_CACHE_READ: sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
    OI_TOKEN_CACHE_WRITE: sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,
    OI_TOKEN_REASONING: sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
    OI_MODEL_NAME: sc.GEN_AI_REQUEST_MODEL,
    OI_PROVIDER: sc.GEN_AI_PROVIDER_NAME,
    OI_SYSTEM: sc.GEN_AI_PROVIDER_NAME,
    OI_TOOL_NAME: sc.GEN_AI_TOOL_NAME,
    OI_TOOL_DESCRIPTION: sc.GEN_AI_TOOL_DESCRIPTION,
    OI_TOOL_CALL_ID: sc.GEN_AI_TOOL_CALL_ID,
    OI_SESSION_ID: sc.GEN_AI_CONVERSATION_ID,
    OI_AGENT_NAME: sc.GEN_AI_AGENT_NAME,
    # OpenLLMetry (current and older spellings, underscore cache variants)
    TL_PROMPT_TOKENS: sc.GEN_AI_USAGE_INPUT_TOKENS,
    TL_COMPLETION_TOKENS: sc.GEN_AI_USAGE_OUTPUT_TOKENS,
    TL_LLM_PROMPT_TOKENS: sc.GEN_AI_USAGE_INPUT_TOKENS,
    TL_LLM_COMPLETION_TOKENS: sc.GEN_AI_USAGE_OUTPUT_TOKENS,
    TL_CACHE_READ: sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
    TL_CACHE_CREATION: sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,
    TL_LLM_CACHE_READ: sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
    TL_LLM_CACHE_CREATION: sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,
    TL_REASONING: sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
    TL_LLM_REASONING: sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
    TL_WORKFLOW_NAME: sc.GEN_AI_WORKFLOW_NAME,
    # GenAI semconv before 1.37
    sc.GEN_AI_SYSTEM: sc.GEN_AI_PROVIDER_NAME,
}

#: Dialect key → canonical key (pure renames; a canonical key already present wins).
ALIASES: Mapping[str, str] = MappingProxyType(_ALIASES)

_DIALECT_OF: dict[str, str] = {
    k: DIALECT_OPENINFERENCE
    for k in _ALIASES
    if not k.startswith(("gen_ai.", "llm.usage", "traceloop."))
}
_DIALECT_OF.update(
    {
        k: DIALECT_OPENLLMETRY
        for k in _ALIASES
        if k.startswith(("gen_ai.usage.", "llm.usage.", "traceloop."))
    }
)
_DIALECT_OF[sc.GEN_AI_SYSTEM] = DIALECT_GEN_AI_LEGACY
_DIALECT_OF[OI_SPAN_KIND] = DIALECT_OPENINFERENCE
_DIALECT_OF[TL_SPAN_KIND] = DIALECT_OPENLLMETRY
_DIALECT_OF[TL_ENTITY_NAME] = DIALECT_OPENLLMETRY
_DIALECT_OF[TL_REQUEST_TYPE] = DIALECT_OPENLLMETRY

_ALIAS_RANK: Final[Mapping[str, int]] = {key: rank for rank, key in enumerate(_ALIASES)}

#: Every key that makes a span need more than a copy (``has_dialect_keys``' set).
DIALECT_KEYS: Final = frozenset(_DIALECT_OF)
_TRIGGER_KEYS: Final = DIALECT_KEYS

_OI_KIND_TO_OPERATION: Final[Mapping[str, str]] = {
    "LLM": sc.OP_CHAT,
    "EMBEDDING": sc.OP_EMBEDDINGS,
    "AGENT": sc.OP_INVOKE_AGENT,
    "TOOL": sc.OP_EXECUTE_TOOL,
    # A CHAIN is OpenInference's generic orchestration step: the closest GenAI operation.
    "CHAIN": sc.OP_INVOKE_WORKFLOW,
    "RETRIEVER": sc.OP_RETRIEVAL,
}
_TL_KIND_TO_OPERATION: Final[Mapping[str, str]] = {
    "agent": sc.OP_INVOKE_AGENT,
    "tool": sc.OP_EXECUTE_TOOL,
    "workflow": sc.OP_INVOKE_WORKFLOW,
}
_TL_REQUEST_TYPE_TO_OPERATION: Final[Mapping[str, str]] = {
    "chat": sc.OP_CHAT,
    "completion": sc.OP_TEXT_COMPLETION,
    "embedding": sc.OP_EMBEDDINGS,
}
# traceloop.span.kind → which canonical key traceloop.entity.name fills.
_TL_ENTITY_TARGET: Final[Mapping[str, str]] = {
    "agent": sc.GEN_AI_AGENT_NAME,
    "tool": sc.GEN_AI_TOOL_NAME,
    "workflow": sc.GEN_AI_WORKFLOW_NAME,
}
# Old / dialect provider spellings → GenAI well-known gen_ai.provider.name values.
_PROVIDER_VALUES: Final[Mapping[str, str]] = {
    "az.ai.inference": "azure.ai.inference",
    "az.ai.openai": "azure.ai.openai",
    "azure": "azure.ai.openai",
    "vertex_ai": "gcp.vertex_ai",
    "gemini": "gcp.gemini",
    "google": "gcp.gen_ai",
    "aws": "aws.bedrock",
    "bedrock": "aws.bedrock",
    "mistralai": "mistral_ai",
    "mistral": "mistral_ai",
    "xai": "x_ai",
    "watsonx": "ibm.watsonx.ai",
}


def normalize_attributes(attrs: Mapping[str, AttrValue]) -> dict[str, AttrValue]:
    """Return a new attribute dict in the current GenAI vocabulary.

    Args:
        attrs: span attributes in any supported dialect (not modified).

    Returns:
        A new dict: dialect keys renamed to canonical keys (canonical keys already present win),
        ``gen_ai.operation.name`` inferred from the dialect's span kind when absent, provider
        spellings mapped to the GenAI well-known values.
    """
    return normalize_in_place(dict(attrs))


def normalize_in_place(out: dict[str, AttrValue]) -> dict[str, AttrValue]:
    """:func:`normalize_attributes` on a dict the caller owns: ``out`` is changed and returned.

    Spares the copy where the caller already holds a private copy (the SDK enricher's).
    """
    if _TRIGGER_KEYS.isdisjoint(out):
        return out
    dialect: str | None = None
    # Walk the span's keys (about ten) rather than all aliases; when several dialect keys name
    # the same canonical key, the one listed first in ALIASES wins.
    hits = [key for key in out if key in _ALIASES]
    if len(hits) > 1:
        hits.sort(key=_ALIAS_RANK.__getitem__)
    for key in hits:
        canonical = _ALIASES[key]
        value = out.pop(key)
        dialect = dialect or _DIALECT_OF[key]
        if canonical not in out:
            if canonical == sc.GEN_AI_PROVIDER_NAME and isinstance(value, str):
                value = _provider_value(value)
            out[canonical] = value
    if sc.GEN_AI_OPERATION_NAME not in out:
        operation = _infer_operation(out)
        if operation is not None:
            out[sc.GEN_AI_OPERATION_NAME] = operation
    tl_kind = out.get(TL_SPAN_KIND)
    if TL_ENTITY_NAME in out and isinstance(tl_kind, str):
        target = _TL_ENTITY_TARGET.get(tl_kind)
        if target is not None:
            entity = out.pop(TL_ENTITY_NAME)
            out.setdefault(target, entity)
    if OI_TOKEN_TOTAL in out and sc.GEN_AI_USAGE_OUTPUT_TOKENS not in out:
        total, prompt = out[OI_TOKEN_TOTAL], out.get(sc.GEN_AI_USAGE_INPUT_TOKENS)
        if _is_int(total) and _is_int(prompt) and total >= prompt:  # type: ignore[operator]
            out[sc.GEN_AI_USAGE_OUTPUT_TOKENS] = total - prompt  # type: ignore[operator]
    if dialect is None:
        for key in (OI_SPAN_KIND, TL_SPAN_KIND, TL_ENTITY_NAME, TL_REQUEST_TYPE):
            if key in out:
                dialect = _DIALECT_OF[key]
                break
    if dialect is not None:
        out.setdefault(sc.AGENT_DIALECT, dialect)
    return out


def has_dialect_keys(attrs: Mapping[str, AttrValue]) -> bool:
    """Whether :func:`normalize_attributes` would change ``attrs`` (cheap pre-check)."""
    return not _TRIGGER_KEYS.isdisjoint(attrs)


def _infer_operation(attrs: Mapping[str, AttrValue]) -> str | None:
    kind = attrs.get(OI_SPAN_KIND)
    if isinstance(kind, str):
        op = _OI_KIND_TO_OPERATION.get(kind.upper())
        if op is not None:
            return op
    request_type = attrs.get(TL_REQUEST_TYPE)
    if isinstance(request_type, str):
        op = _TL_REQUEST_TYPE_TO_OPERATION.get(request_type.lower())
        if op is not None:
            return op
    kind = attrs.get(TL_SPAN_KIND)
    if isinstance(kind, str):
        return _TL_KIND_TO_OPERATION.get(kind.lower())
    return None


def _provider_value(value: str) -> str:
    lowered = value.lower()
    return _PROVIDER_VALUES.get(lowered, lowered)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
