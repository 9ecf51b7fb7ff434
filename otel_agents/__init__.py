# SPDX-License-Identifier: Apache-2.0
"""otel-agents: agent-aware observability inside the OpenTelemetry pipeline."""

__all__: list[str] = []
