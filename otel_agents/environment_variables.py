# SPDX-License-Identifier: Apache-2.0
"""Environment variables read by the otel-agents SDK extension.

Standard ``OTEL_*`` variables are read only for their standard meaning (by the OpenTelemetry SDK
and exporters themselves); knobs of this project carry the ``OTEL_AGENTS_`` prefix. Precedence
everywhere is: explicit argument > environment variable > default.

``opentelemetry-instrument`` turns every ``OTEL_*`` constant of a module registered under the
``opentelemetry_environment_variables`` entry point into a CLI flag; these names are safe for that.
"""

from __future__ import annotations

from typing import Final

OTEL_AGENTS_PRICES_FILE: Final = "OTEL_AGENTS_PRICES_FILE"
"""
.. envvar:: OTEL_AGENTS_PRICES_FILE

Path of a YAML or JSON file with per-model price overrides (USD or another ISO 4217 currency per
million tokens) that win over the bundled ``genai-prices`` data::

    models:
      my-finetune:
        input: 3.0
        output: 12.0
        cache_read: 0.3
        cache_write: 3.75
        currency: USD

Read by :class:`otel_agents.PriceBook` when it is built without explicit overrides.
"""

OTEL_AGENTS_COST_ENABLED: Final = "OTEL_AGENTS_COST_ENABLED"
"""
.. envvar:: OTEL_AGENTS_COST_ENABLED

``false`` disables local pricing in the enriching processors (normalization still runs).
Default: ``true``.
"""

OTEL_AGENTS_ENABLED: Final = "OTEL_AGENTS_ENABLED"
"""
.. envvar:: OTEL_AGENTS_ENABLED

``false`` makes the zero-code hook (``opentelemetry_post_instrument``) a no-op, so a deployment
can switch the extension off without uninstalling it. Default: ``true``.
"""

OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT: Final = (
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
)
"""
.. envvar:: OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT

The OpenTelemetry Python GenAI content switch, read with the values its instrumentations accept:
unset, ``false``, ``NO_CONTENT`` or ``EVENT_ONLY`` → content is not put on spans; ``true``,
``SPAN_ONLY`` or ``SPAN_AND_EVENT`` → tool arguments/results, messages and decision reasoning are
recorded on spans. Read at every use, so tests and operators can flip it at run time.
"""

# --- Resource detector (otel_agents._detector, issue 3) ---
OTEL_AGENTS_AGENT_ID: Final = "OTEL_AGENTS_AGENT_ID"
"""
.. envvar:: OTEL_AGENTS_AGENT_ID

``gen_ai.main_agent.id`` on the Resource: a stable, provider-level id of this process's main agent
(an ARN, a registry id, the Agent Card URL) — never process-local. Wins over the Agent Card.
"""

OTEL_AGENTS_AGENT_NAME: Final = "OTEL_AGENTS_AGENT_NAME"
"""
.. envvar:: OTEL_AGENTS_AGENT_NAME

``gen_ai.main_agent.name`` on the Resource. Wins over the Agent Card's ``name``.
"""

OTEL_AGENTS_AGENT_DESCRIPTION: Final = "OTEL_AGENTS_AGENT_DESCRIPTION"
"""
.. envvar:: OTEL_AGENTS_AGENT_DESCRIPTION

``gen_ai.main_agent.description`` on the Resource. Wins over the Agent Card's ``description``.
"""

OTEL_AGENTS_AGENT_CARD: Final = "OTEL_AGENTS_AGENT_CARD"
"""
.. envvar:: OTEL_AGENTS_AGENT_CARD

Path of this agent's A2A Agent Card (JSON). The resource detector reads ``name``,
``description``, ``version`` and the first interface URL (as the id) from it.
"""
