# SPDX-License-Identifier: Apache-2.0
"""The vocabulary shared by the SDK extension and the receiver.

Names defined by the OpenTelemetry GenAI semantic conventions (status: Development) are spelled
exactly as there; everything else lives under the ``agent.`` extension namespace and is listed in
``docs/semconv.md``.  Nothing here has behaviour: it is names only, so both halves import it.

Example::

    from otel_agents import semconv as sc

    span.set_attribute(sc.GEN_AI_AGENT_NAME, "planner")
"""

from __future__ import annotations

from typing import Final

# --------------------------------------------------------------------------------------------
# gen_ai.operation.name values
# --------------------------------------------------------------------------------------------
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"

OP_INVOKE_AGENT: Final = "invoke_agent"
OP_CREATE_AGENT: Final = "create_agent"
OP_INVOKE_WORKFLOW: Final = "invoke_workflow"
OP_PLAN: Final = "plan"
OP_EXECUTE_TOOL: Final = "execute_tool"
OP_CHAT: Final = "chat"
OP_TEXT_COMPLETION: Final = "text_completion"
OP_GENERATE_CONTENT: Final = "generate_content"
OP_EMBEDDINGS: Final = "embeddings"
OP_RETRIEVAL: Final = "retrieval"

#: Operations that are model inference: the only spans that carry cost.
INFERENCE_OPERATIONS: Final = frozenset(
    {OP_CHAT, OP_TEXT_COMPLETION, OP_GENERATE_CONTENT, OP_EMBEDDINGS}
)

# --------------------------------------------------------------------------------------------
# Identity
# --------------------------------------------------------------------------------------------
GEN_AI_AGENT_NAME: Final = "gen_ai.agent.name"
GEN_AI_AGENT_ID: Final = "gen_ai.agent.id"
GEN_AI_AGENT_DESCRIPTION: Final = "gen_ai.agent.description"
GEN_AI_AGENT_VERSION: Final = "gen_ai.agent.version"
GEN_AI_WORKFLOW_NAME: Final = "gen_ai.workflow.name"
GEN_AI_CONVERSATION_ID: Final = "gen_ai.conversation.id"
GEN_AI_TOOL_NAME: Final = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ID: Final = "gen_ai.tool.call.id"
GEN_AI_TOOL_TYPE: Final = "gen_ai.tool.type"
GEN_AI_TOOL_DESCRIPTION: Final = "gen_ai.tool.description"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_ID: Final = "gen_ai.response.id"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TEMPERATURE: Final = "gen_ai.request.temperature"
GEN_AI_OUTPUT_TYPE: Final = "gen_ai.output.type"
GEN_AI_DATA_SOURCE_ID: Final = "gen_ai.data_source.id"
ERROR_TYPE: Final = "error.type"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"

#: Resource entity for the main agent of a process (Development).
GEN_AI_MAIN_AGENT_ID: Final = "gen_ai.main_agent.id"
GEN_AI_MAIN_AGENT_NAME: Final = "gen_ai.main_agent.name"
GEN_AI_MAIN_AGENT_DESCRIPTION: Final = "gen_ai.main_agent.description"

#: Old name of gen_ai.provider.name (before semconv v1.37); read, never written.
GEN_AI_SYSTEM: Final = "gen_ai.system"

# --------------------------------------------------------------------------------------------
# Usage
# --------------------------------------------------------------------------------------------
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: Final = "gen_ai.usage.cache_creation.input_tokens"
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: Final = "gen_ai.usage.reasoning.output_tokens"

# Cost (proposed upstream: semantic-conventions-genai PR #443); inference spans only.
GEN_AI_USAGE_COST_AMOUNT: Final = "gen_ai.usage.cost.amount"
GEN_AI_USAGE_COST_CURRENCY: Final = "gen_ai.usage.cost.currency"
GEN_AI_USAGE_COST_SOURCE: Final = "gen_ai.usage.cost.source"
COST_SOURCE_PROVIDER: Final = "provider"
COST_SOURCE_LOCAL: Final = "local"

# --------------------------------------------------------------------------------------------
# Content (opt-in only)
# --------------------------------------------------------------------------------------------
GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
GEN_AI_SYSTEM_INSTRUCTIONS: Final = "gen_ai.system_instructions"
GEN_AI_TOOL_DEFINITIONS: Final = "gen_ai.tool.definitions"
GEN_AI_TOOL_CALL_ARGUMENTS: Final = "gen_ai.tool.call.arguments"
GEN_AI_TOOL_CALL_RESULT: Final = "gen_ai.tool.call.result"

#: Attributes that carry content and are redactable in the receiver.
CONTENT_ATTRIBUTES: Final = frozenset(
    {
        GEN_AI_INPUT_MESSAGES,
        GEN_AI_OUTPUT_MESSAGES,
        GEN_AI_SYSTEM_INSTRUCTIONS,
        GEN_AI_TOOL_DEFINITIONS,
        GEN_AI_TOOL_CALL_ARGUMENTS,
        GEN_AI_TOOL_CALL_RESULT,
        "agent.decision.reasoning",
    }
)

# --------------------------------------------------------------------------------------------
# A2A (semantic-conventions-genai docs/gen-ai/a2a.md, Development)
# --------------------------------------------------------------------------------------------
A2A_METHOD_NAME: Final = "a2a.method.name"
A2A_MESSAGE_ID: Final = "a2a.message.id"
A2A_TASK_ID: Final = "a2a.task.id"
A2A_TASK_STATE: Final = "a2a.task.state"
A2A_PROTOCOL_VERSION: Final = "a2a.protocol.version"

# --------------------------------------------------------------------------------------------
# Extension namespace (agent.*) — listed in docs/semconv.md
# --------------------------------------------------------------------------------------------
AGENT_COST_UNPRICED: Final = "agent.cost.unpriced"
AGENT_COST_PRICE_SOURCE: Final = "agent.cost.price_source"
AGENT_PARENT_NAME: Final = "agent.parent.name"
AGENT_RUN_ID: Final = "agent.run.id"
AGENT_TOOL_ARGS_HASH: Final = "agent.tool.args_hash"
AGENT_A2A_PEER_AGENT: Final = "agent.a2a.peer.name"
AGENT_DIALECT: Final = "agent.dialect"

# Decision event
EVENT_AGENT_DECISION: Final = "agent.decision"
AGENT_DECISION_TYPE: Final = "agent.decision.type"
AGENT_DECISION_CHOSEN: Final = "agent.decision.chosen"
AGENT_DECISION_OPTIONS: Final = "agent.decision.options"
AGENT_DECISION_CONFIDENCE: Final = "agent.decision.confidence"
AGENT_DECISION_REASONING: Final = "agent.decision.reasoning"

# Agent event log records (event name carried in the log record's event_name)
AGENT_EVENT_TASK_START: Final = "agent.task.start"
AGENT_EVENT_TASK_COMPLETE: Final = "agent.task.complete"
AGENT_EVENT_TASK_ERROR: Final = "agent.task.error"
AGENT_EVENT_STATE_CHANGE: Final = "agent.state.change"
AGENT_EVENT_A2A_SENT: Final = "agent.a2a.sent"
AGENT_EVENT_A2A_RECEIVED: Final = "agent.a2a.received"
AGENT_EVENT_SECURITY: Final = "agent.security"

# --------------------------------------------------------------------------------------------
# Metrics (SDK side, OTel naming; Prometheus names are derived by the exporter)
# --------------------------------------------------------------------------------------------
METRIC_GEN_AI_CLIENT_TOKEN_USAGE: Final = "gen_ai.client.token.usage"
METRIC_GEN_AI_CLIENT_OPERATION_DURATION: Final = "gen_ai.client.operation.duration"
METRIC_GEN_AI_INVOKE_AGENT_DURATION: Final = "gen_ai.invoke_agent.duration"
METRIC_GEN_AI_EXECUTE_TOOL_DURATION: Final = "gen_ai.execute_tool.duration"
METRIC_AGENT_COST: Final = "agent.cost"
METRIC_AGENT_DECISIONS: Final = "agent.decisions"
METRIC_AGENT_A2A_MESSAGES: Final = "agent.a2a.messages"
METRIC_AGENT_UNPRICED_CALLS: Final = "agent.cost.unpriced_calls"
GEN_AI_TOKEN_TYPE: Final = "gen_ai.token.type"
TOKEN_TYPE_INPUT: Final = "input"
TOKEN_TYPE_OUTPUT: Final = "output"

#: Bucket boundaries the GenAI conventions specify.
TOKEN_USAGE_BUCKETS: Final = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)
OPERATION_DURATION_BUCKETS: Final = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)

# --------------------------------------------------------------------------------------------
# Content capture switch (OTel Python GenAI convention)
# --------------------------------------------------------------------------------------------
ENV_CAPTURE_MESSAGE_CONTENT: Final = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

# --------------------------------------------------------------------------------------------
# Receiver self-telemetry (Prometheus names, docs/architecture.md "Metric names")
# --------------------------------------------------------------------------------------------
METRIC_RECEIVER_ACCEPTED_ITEMS: Final = "otel_agents_receiver_accepted_items_total"
METRIC_RECEIVER_REFUSED_ITEMS: Final = "otel_agents_receiver_refused_items_total"
METRIC_RECEIVER_REJECTED_ITEMS: Final = "otel_agents_receiver_rejected_items_total"
METRIC_RECEIVER_REQUESTS: Final = "otel_agents_receiver_requests_total"
METRIC_RECEIVER_REQUEST_DURATION: Final = "otel_agents_receiver_request_duration_seconds"
METRIC_RECEIVER_INFLIGHT_BYTES: Final = "otel_agents_receiver_inflight_bytes"
METRIC_SPOOL_ITEMS: Final = "otel_agents_spool_items"
METRIC_SPOOL_BYTES: Final = "otel_agents_spool_bytes"
METRIC_FORWARDER_PENDING_ITEMS: Final = "otel_agents_forwarder_pending_items"
METRIC_FORWARDER_SENT_ITEMS: Final = "otel_agents_forwarder_sent_items_total"
METRIC_FORWARDER_FAILED_ITEMS: Final = "otel_agents_forwarder_failed_items_total"
METRIC_FORWARDER_RETRIES: Final = "otel_agents_forwarder_retries_total"
METRIC_FORWARDER_QUEUE_LATENCY: Final = "otel_agents_forwarder_queue_latency_seconds"
METRIC_FORWARDER_REDACTED_VALUES: Final = "otel_agents_forwarder_redacted_values_total"
#: Analysis: traces assembled after their decision wait (the demo waits on it).
METRIC_TRACES_COMPLETED: Final = "otel_agents_traces_completed_total"
METRIC_PIPELINE_BATCH_DURATION: Final = "otel_agents_pipeline_batch_duration_seconds"
METRIC_PIPELINE_SKIPPED_ITEMS: Final = "otel_agents_pipeline_skipped_items_total"
METRIC_SPOOL_REDACTED_VALUES: Final = "otel_agents_spool_redacted_values_total"
#: Analysis metric families: measurements folded into a family's ``__overflow__`` series
#: (label ``metric`` = the family; the receiver's ``otel.metric.overflow=true`` count).
METRIC_ANALYSIS_METRIC_OVERFLOW: Final = "otel_agents_metric_overflow_total"
#: Analysis CPU budget: fraction of traces analysed now (1 = all; consistent trace sampling).
METRIC_ANALYSIS_FRACTION: Final = "otel_agents_analysis_sampled_fraction"
#: Spans forwarded but not analysed by the analysis sampling.
METRIC_ANALYSIS_UNSAMPLED_SPANS: Final = "otel_agents_analysis_unsampled_spans_total"
#: CPU seconds the pipeline thread spent on analysis (rate() = cores).
METRIC_ANALYSIS_CPU_SECONDS: Final = "otel_agents_analysis_cpu_seconds_total"
#: Smoothed analysis CPU (cores) and the rest of the receiver's CPU (cores).
METRIC_ANALYSIS_CPU: Final = "otel_agents_analysis_cpu_cores"
METRIC_ANALYSIS_OTHER_CPU: Final = "otel_agents_analysis_other_cpu_cores"

# --------------------------------------------------------------------------------------------
# SDK metrics / events / resource extras (issue 3: A2A, metrics, events, detector)
# --------------------------------------------------------------------------------------------
#: OTel general semconv: direction of an A2A message on agent.a2a.messages (transmit|receive).
NETWORK_IO_DIRECTION: Final = "network.io.direction"
AGENT_EVENT_DECISION: Final = "agent.decision"
AGENT_EVENT_STATE: Final = "agent.state"
AGENT_EVENT_PREVIOUS_STATE: Final = "agent.state.previous"
AGENT_SECURITY_ACTION: Final = "agent.threat.detection.action"
AGENT_SECURITY_RULE_ID: Final = "agent.threat.detection.rule_id"
AGENT_SECURITY_SEVERITY: Final = "agent.threat.detection.severity"
AGENT_BUDGET_NAME: Final = "agent.budget.name"
AGENT_BUDGET_LIMIT: Final = "agent.budget.limit"
AGENT_BUDGET_SPENT: Final = "agent.budget.spent"
AGENT_BUDGET_KIND: Final = "agent.budget.kind"
EVENT_AGENT_BUDGET_EXCEEDED: Final = "agent.budget.exceeded"
AGENT_PROFILE_TOP: Final = "agent.profile.top_functions"
AGENT_PROFILE_MEMORY_CURRENT: Final = "agent.profile.memory.current"
AGENT_PROFILE_MEMORY_PEAK: Final = "agent.profile.memory.peak"
AGENT_PROFILE_CPU_TIME: Final = "agent.profile.cpu_time"
AGENT_FRAMEWORKS: Final = "agent.frameworks"
AGENT_FRAMEWORK_VERSION_PREFIX: Final = "agent.framework.version."
# Process metrics (OTel process / CPython semconv names)
METRIC_PROCESS_CPU_TIME: Final = "process.cpu.time"
METRIC_PROCESS_MEMORY_USAGE: Final = "process.memory.usage"
METRIC_PROCESS_FD_COUNT: Final = "process.unix.file_descriptor.count"
METRIC_PROCESS_THREAD_COUNT: Final = "process.thread.count"
METRIC_CPYTHON_GC_COLLECTIONS: Final = "cpython.gc.collections"
CPU_MODE: Final = "cpu.mode"
CPYTHON_GC_GENERATION: Final = "cpython.gc.generation"

# --------------------------------------------------------------------------------------------
# Alerting and the audit trail (receiver side; docs/alerting.md)
# --------------------------------------------------------------------------------------------
#: Log record event_name of alert state changes the receiver emits over OTLP.
EVENT_AGENT_ALERT: Final = "agent.alert"
AGENT_ALERT_NAME: Final = "agent.alert.name"
AGENT_ALERT_STATE: Final = "agent.alert.state"
AGENT_ALERT_SEVERITY: Final = "agent.alert.severity"
AGENT_ALERT_FINGERPRINT: Final = "agent.alert.fingerprint"
AGENT_ALERT_VALUE: Final = "agent.alert.value"
AGENT_ALERT_LABELS_PREFIX: Final = "agent.alert.label."
#: General OTel registry attributes the audit trail indexes (user and session of an event).
USER_ID: Final = "user.id"
SESSION_ID: Final = "session.id"
ENDUSER_ID: Final = "enduser.id"
#: Older event-name carrier (before LogRecord.event_name existed in OTLP).
EVENT_NAME: Final = "event.name"
METRIC_ALERTS: Final = "otel_agents_alerts"
METRIC_NOTIFICATIONS: Final = "otel_agents_notifications_total"

# --------------------------------------------------------------------------------------------
# Analysis findings as OTLP log records (receiver side; exporters/_findings_otlp.py)
# --------------------------------------------------------------------------------------------
#: Log record event_name of a finding (bottleneck, anomaly, tool loop, broken A2A chain...).
EVENT_AGENT_FINDING: Final = "agent.finding"
AGENT_FINDING_KIND: Final = "agent.finding.kind"
AGENT_FINDING_KEY: Final = "agent.finding.key"
AGENT_FINDING_SEVERITY: Final = "agent.finding.severity"
AGENT_FINDING_SCORE: Final = "agent.finding.score"
AGENT_FINDING_TITLE: Final = "agent.finding.title"
AGENT_FINDING_VALUE: Final = "agent.finding.value"
AGENT_FINDING_BASELINE: Final = "agent.finding.baseline"
AGENT_FINDING_TRACE_IDS: Final = "agent.finding.trace_ids"
AGENT_FINDING_LABELS_PREFIX: Final = "agent.finding.label."
