# SPDX-License-Identifier: Apache-2.0
"""Zero-code hook: ``opentelemetry_post_instrument`` entry point (leaf module).

``opentelemetry-instrument python app.py`` runs the distro, the configurator (which sets the
global providers and their exporters), the instrumentors and then every
``opentelemetry_post_instrument`` hook. :func:`post_instrument` attaches the agent identity and
enrichment (normalization + cost) to whatever tracer provider exists then, plus the agent
metrics; it never replaces a provider and never raises (a failure is logged and the application
runs untouched).

Disabled with ``OTEL_AGENTS_ENABLED=false``; a no-op when the SDK is disabled
(``OTEL_SDK_DISABLED=true``) or the provider takes no processors.
"""

from __future__ import annotations

import logging
import os
from typing import Any

__all__ = ["post_instrument"]

logger = logging.getLogger(__name__)


def post_instrument(**kwargs: Any) -> None:
    """Attach otel-agents to the global tracer provider (idempotent, never raises).

    Args:
        **kwargs: ignored; the hook protocol may pass keyword arguments in the future.
    """
    try:
        from otel_agents.environment_variables import OTEL_AGENTS_ENABLED

        if os.environ.get(OTEL_AGENTS_ENABLED, "").strip().lower() in ("false", "0", "no", "off"):
            return
        if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return
        from opentelemetry import trace

        install(trace.get_tracer_provider())
    except Exception:
        logger.exception(
            "otel_agents: zero-code set-up failed; the application runs untraced by us"
        )


def install(provider: object) -> str | None:
    """Attach identity, enrichment and agent metrics to ``provider`` once.

    Returns:
        The attach mode (see :func:`otel_agents._processors.attach_to_provider`), or ``None``
        when otel_agents already enriches ``provider`` (e.g. ``configure()`` ran first).
    """
    from otel_agents._processors import MODE_ALREADY, SpanEnricher, attach_to_provider

    extra = []
    # --- A2A, metrics, events, detector (issue 3) ---
    try:
        from otel_agents._metrics import install_metrics

        metrics_processor = install_metrics(tracer_provider=provider, attach=False)  # type: ignore[arg-type]
        if metrics_processor is not None:
            extra.append(metrics_processor)
    except ImportError:
        pass
    # --- end issue 3 ---
    # Zero-code must not leave the app untraced over a bad prices file: log it, use bundled prices.
    enricher = SpanEnricher(strict=False)
    mode = attach_to_provider(provider, enricher=enricher, extra_processors=extra)
    logger.debug("otel_agents: %s (%s)", type(provider).__name__, mode)
    return None if mode == MODE_ALREADY else mode
