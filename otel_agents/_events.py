# SPDX-License-Identifier: Apache-2.0
"""Structured agent events through the OpenTelemetry *logs* API.

Each event is one log record with ``event_name`` set (OTel API >= 1.35; the Events API was
folded into the Logs API), severity, attributes in the project vocabulary and the trace / span
ids of the current context, so a backend can jump from the event to the span.  Names are the
``AGENT_EVENT_*`` constants of :mod:`otel_agents.semconv`.

Example::

    events = AgentEvents()          # global LoggerProvider
    events.task_start("t-1", agent_name="planner")
    events.decision("route", chosen="researcher", options=["researcher", "self"], confidence=0.8)

Emitting never raises into the caller; with no SDK LoggerProvider configured the API's no-op
logger drops the events.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import _logs
from opentelemetry._logs import SeverityNumber
from opentelemetry.context import Context

from otel_agents import semconv as sc

__all__ = ["AgentEvents", "emit_agent_event"]

_log = logging.getLogger(__name__)

_SCOPE = "otel_agents.events"


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if v is not None}


def emit_agent_event(
    name: str,
    attributes: Mapping[str, Any] | None = None,
    *,
    body: Any = None,
    severity: SeverityNumber = SeverityNumber.INFO,
    exception: BaseException | None = None,
    logger_provider: _logs.LoggerProvider | None = None,
    context: Context | None = None,
) -> None:
    """Emits one agent event as a log record correlated with the current span.

    Args:
        name: the event name (``semconv.AGENT_EVENT_*``), carried in ``event_name``.
        attributes: event attributes; None values are dropped.
        body: optional body (AnyValue).
        severity: severity number; INFO by default.
        exception: an exception to attach (``exception.*`` attributes).
        logger_provider: provider to use; the global one when None.
        context: the context whose span the record is correlated with; the current one when
            None.
    """
    try:
        logger = _logs.get_logger(_SCOPE, logger_provider=logger_provider)
        logger.emit(
            context=context,
            event_name=name,
            severity_number=severity,
            severity_text=severity.name,
            body=body,
            attributes=_clean(attributes or {}),
            exception=exception,
        )
    except Exception:
        _log.debug("agent event %r dropped", name, exc_info=True)


class AgentEvents:
    """Typed emitters for the agent event vocabulary.

    Args:
        agent_name: default ``gen_ai.agent.name`` stamped on every event.
        logger_provider: provider to use; the global one when None.
    """

    def __init__(
        self,
        agent_name: str | None = None,
        logger_provider: _logs.LoggerProvider | None = None,
    ) -> None:
        self._agent = agent_name
        self._provider = logger_provider

    def _emit(
        self,
        name: str,
        attributes: dict[str, Any],
        *,
        agent_name: str | None,
        severity: SeverityNumber = SeverityNumber.INFO,
        exception: BaseException | None = None,
    ) -> None:
        attributes.setdefault(sc.GEN_AI_AGENT_NAME, agent_name or self._agent)
        emit_agent_event(
            name,
            attributes,
            severity=severity,
            exception=exception,
            logger_provider=self._provider,
        )

    def _emit_a2a(
        self,
        name: str,
        method: str,
        message_id: str | None,
        peer: str | None,
        agent_name: str | None,
    ) -> None:
        # sent and received carry the same attributes; only the event name says the direction
        self._emit(
            name,
            {
                sc.A2A_METHOD_NAME: method,
                sc.A2A_MESSAGE_ID: message_id,
                sc.AGENT_A2A_PEER_AGENT: peer,
            },
            agent_name=agent_name,
        )

    def task_start(
        self, task_id: str, *, agent_name: str | None = None, conversation_id: str | None = None
    ) -> None:
        """A task was accepted and work started."""
        self._emit(
            sc.AGENT_EVENT_TASK_START,
            {sc.A2A_TASK_ID: task_id, sc.GEN_AI_CONVERSATION_ID: conversation_id},
            agent_name=agent_name,
        )

    def task_complete(
        self, task_id: str, *, agent_name: str | None = None, state: str = "TASK_STATE_COMPLETED"
    ) -> None:
        """A task reached a final state without error."""
        self._emit(
            sc.AGENT_EVENT_TASK_COMPLETE,
            {sc.A2A_TASK_ID: task_id, sc.A2A_TASK_STATE: state},
            agent_name=agent_name,
        )

    def task_error(
        self, task_id: str, error: BaseException | str, *, agent_name: str | None = None
    ) -> None:
        """A task failed; ``error.type`` is the exception class (or the given code)."""
        exc = error if isinstance(error, BaseException) else None
        self._emit(
            sc.AGENT_EVENT_TASK_ERROR,
            {
                sc.A2A_TASK_ID: task_id,
                sc.A2A_TASK_STATE: "TASK_STATE_FAILED",
                sc.ERROR_TYPE: type(error).__qualname__ if exc is not None else str(error),
            },
            agent_name=agent_name,
            severity=SeverityNumber.ERROR,
            exception=exc,
        )

    def state_change(
        self, state: str, *, previous: str | None = None, agent_name: str | None = None
    ) -> None:
        """The agent moved from ``previous`` to ``state`` (planning, waiting, acting, ...)."""
        self._emit(
            sc.AGENT_EVENT_STATE_CHANGE,
            {sc.AGENT_EVENT_STATE: state, sc.AGENT_EVENT_PREVIOUS_STATE: previous},
            agent_name=agent_name,
        )

    def decision(
        self,
        decision_type: str,
        *,
        chosen: str,
        options: Sequence[str] | None = None,
        confidence: float | None = None,
        agent_name: str | None = None,
    ) -> None:
        """A decision point (reasoning is content and is not emitted here)."""
        self._emit(
            sc.AGENT_EVENT_DECISION,
            {
                sc.AGENT_DECISION_TYPE: decision_type,
                sc.AGENT_DECISION_CHOSEN: chosen,
                sc.AGENT_DECISION_OPTIONS: list(options) if options is not None else None,
                sc.AGENT_DECISION_CONFIDENCE: confidence,
            },
            agent_name=agent_name,
        )

    def a2a_sent(
        self,
        method: str,
        *,
        message_id: str | None = None,
        peer: str | None = None,
        agent_name: str | None = None,
    ) -> None:
        """An A2A request was sent to ``peer``."""
        self._emit_a2a(sc.AGENT_EVENT_A2A_SENT, method, message_id, peer, agent_name)

    def a2a_received(
        self,
        method: str,
        *,
        message_id: str | None = None,
        peer: str | None = None,
        agent_name: str | None = None,
    ) -> None:
        """An A2A request was received from ``peer``."""
        self._emit_a2a(sc.AGENT_EVENT_A2A_RECEIVED, method, message_id, peer, agent_name)

    def security(
        self,
        action: str,
        *,
        rule_id: str | None = None,
        severity: str = "medium",
        agent_name: str | None = None,
    ) -> None:
        """A security gate fired (``action``: allow / ask / block / warn)."""
        self._emit(
            sc.AGENT_EVENT_SECURITY,
            {
                sc.AGENT_SECURITY_ACTION: action,
                sc.AGENT_SECURITY_RULE_ID: rule_id,
                sc.AGENT_SECURITY_SEVERITY: severity,
            },
            agent_name=agent_name,
            severity=SeverityNumber.WARN
            if action in ("block", "warn", "ask")
            else SeverityNumber.INFO,
        )
