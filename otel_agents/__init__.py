# SPDX-License-Identifier: Apache-2.0
"""otel-agents: agent-aware observability inside the OpenTelemetry pipeline.

The public surface of the SDK extension. Implementation lives in underscore modules; everything
exported here reports ``otel_agents`` as its ``__module__`` (as httpx does), so reprs, docs and
pickles name the public path. ``otel_agents.semconv`` (names) and
``otel_agents.environment_variables`` (variables) are public modules of their own.

Example::

    import otel_agents

    otel_agents.configure(service_name="research-bot")

    with otel_agents.invoke_agent("planner", conversation_id=session_id):
        with otel_agents.chat("gpt-4o", provider="openai") as llm:
            llm.record_usage(input_tokens=1200, output_tokens=300)
"""

from __future__ import annotations

import contextlib as _contextlib

from otel_agents._configure import Configured, configure
from otel_agents._cost import ModelPriceOverride, Price, PriceBook, load_price_overrides
from otel_agents._errors import ConfigError, OtelAgentsError
from otel_agents._normalize import normalize_attributes
from otel_agents._processors import (
    AgentIdentitySpanProcessor,
    EnrichingSpanProcessor,
    EnrichOnEndingSpanProcessor,
    SpanEnricher,
)
from otel_agents._spans import (
    AgentIdentity,
    AgentSpan,
    InferenceSpan,
    SpanHandle,
    SpanScope,
    ToolSpan,
    chat,
    current_agent,
    embeddings,
    execute_tool,
    inference,
    invoke_agent,
    invoke_workflow,
    plan,
    record_decision,
    text_completion,
    tool_args_hash,
)

# --- A2A, metrics, events, detector (issue 3) ---
# Imports of the A2A / metrics / events / detector public names go here; add the names to
# __all__ below in sorted position (tests/otel_agents/test_public_api.py checks both).
# isort: split
from otel_agents._a2a import (
    A2ASpan,
    a2a_client_span,
    a2a_server_span,
    extract_a2a_context,
    inject_a2a_context,
)
from otel_agents._a2a_instrumentor import A2AInstrumentor
from otel_agents._budget import (
    Budget,
    BudgetGuard,
    BudgetMetricReader,
    BudgetStatus,
    check_budget,
    install_budget_guard,
)
from otel_agents._detector import AgentResourceDetector
from otel_agents._errors import BudgetExceededError
from otel_agents._events import AgentEvents, emit_agent_event
from otel_agents._executors import (
    ContextExecutor,
    instrument_threading,
    run_in_thread,
    wrap_context,
)
from otel_agents._metrics import AgentMetricsProcessor, ProcessMetrics, install_metrics
from otel_agents._profiling import ProfileResult, profile_span
from otel_agents._summary import RunSummary, RunTracker, run_summary

# --- end issue 3 ---

__all__ = [
    "A2AInstrumentor",
    "A2ASpan",
    "AgentEvents",
    "AgentIdentity",
    "AgentIdentitySpanProcessor",
    "AgentMetricsProcessor",
    "AgentResourceDetector",
    "AgentSpan",
    "Budget",
    "BudgetExceededError",
    "BudgetGuard",
    "BudgetMetricReader",
    "BudgetStatus",
    "ConfigError",
    "Configured",
    "ContextExecutor",
    "EnrichOnEndingSpanProcessor",
    "EnrichingSpanProcessor",
    "InferenceSpan",
    "ModelPriceOverride",
    "OtelAgentsError",
    "Price",
    "PriceBook",
    "ProcessMetrics",
    "ProfileResult",
    "RunSummary",
    "RunTracker",
    "SpanEnricher",
    "SpanHandle",
    "SpanScope",
    "ToolSpan",
    "a2a_client_span",
    "a2a_server_span",
    "chat",
    "check_budget",
    "configure",
    "current_agent",
    "embeddings",
    "emit_agent_event",
    "execute_tool",
    "extract_a2a_context",
    "inference",
    "inject_a2a_context",
    "install_budget_guard",
    "install_metrics",
    "instrument_threading",
    "invoke_agent",
    "invoke_workflow",
    "load_price_overrides",
    "normalize_attributes",
    "plan",
    "profile_span",
    "record_decision",
    "run_in_thread",
    "run_summary",
    "text_completion",
    "tool_args_hash",
    "wrap_context",
]

# Report the public path in reprs, docs and tracebacks (httpx does the same).
_locals = locals()
for _name in __all__:
    with _contextlib.suppress(AttributeError, TypeError):  # objects without a settable name
        _locals[_name].__module__ = "otel_agents"
del _locals, _name
