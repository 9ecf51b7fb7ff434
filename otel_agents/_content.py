# SPDX-License-Identifier: Apache-2.0
"""The content-capture switch, read the way the OpenTelemetry Python GenAI instrumentations do.

``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` (util-genai values, case-insensitive):

=====================================  ==========================================
value                                  content on spans (messages, tool args/results, reasoning)
=====================================  ==========================================
unset, ``false``, ``NO_CONTENT``       no
``EVENT_ONLY``                         no (content belongs in log events only)
``true``, ``SPAN_ONLY``,               yes
``SPAN_AND_EVENT``
anything else                          no (content is opt-in; a typo must not leak it)
=====================================  ==========================================

The variable is read at every call (an ``os.environ`` lookup, ~100 ns) so operators and tests can
flip it while the process runs.
"""

from __future__ import annotations

import os
from typing import Final

from otel_agents.environment_variables import OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT

__all__ = ["capture_content_on_spans", "parse_capture_mode"]

_ON_SPAN: Final = frozenset({"true", "span_only", "span_and_event"})


def parse_capture_mode(value: str | None) -> bool:
    """Whether ``value`` of the capture variable means "put content on spans"."""
    return value is not None and value.strip().lower() in _ON_SPAN


def capture_content_on_spans() -> bool:
    """Whether content may be recorded on spans now (see the module docstring)."""
    return parse_capture_mode(os.environ.get(OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT))
