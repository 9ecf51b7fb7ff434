# SPDX-License-Identifier: Apache-2.0
"""Test helpers for the SDK core tests: private tracer providers with in-memory exporters."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def provider_with_memory() -> tuple[TracerProvider, InMemorySpanExporter]:
    """A private (non-global) provider exporting synchronously to memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def subprocess_env(**extra: str) -> dict[str, str]:
    """The current environment minus OTEL_* settings, plus ``extra``; repo on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env
