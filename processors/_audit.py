# SPDX-License-Identifier: Apache-2.0
"""The ``audit`` pipeline stage: agent event log records → queryable audit trail.

The SDK emits agent events (task start/complete/error, state changes, A2A messages sent and
received, security events, decisions) as OTel log records whose ``event_name`` is one of the
``agent.*`` names in :mod:`otel_agents.semconv`. This stage keeps those records (and only
those), extracts the fields people search by — agent, event type, time, trace, session, user —
and stores them in SQLite under the receiver's data directory with retention by age and count.
``GET /api/v1/events`` answers queries with keyset pagination.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from otel_agents.exporters._events_store import AgentEvent, EventQuery, EventsStore

from otel_agents import semconv as sc
from otel_agents._component import ApiResponse, Component, Host
from otel_agents._configtypes import DURATION

if TYPE_CHECKING:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

__all__ = ["AUDIT_EVENT_NAMES", "AuditConfig", "AuditTrail", "events_from_request"]

_log = logging.getLogger(__name__)

#: The agent event names the SDK emits (decisions included).
AUDIT_EVENT_NAMES = frozenset(
    {
        sc.AGENT_EVENT_TASK_START,
        sc.AGENT_EVENT_TASK_COMPLETE,
        sc.AGENT_EVENT_TASK_ERROR,
        sc.AGENT_EVENT_STATE_CHANGE,
        sc.AGENT_EVENT_A2A_SENT,
        sc.AGENT_EVENT_A2A_RECEIVED,
        sc.AGENT_EVENT_SECURITY,
        sc.EVENT_AGENT_DECISION,
    }
)


@dataclasses.dataclass(frozen=True)
class AuditConfig:
    """Settings of the ``audit`` processor.

    Attributes:
        event_names: extra event names to keep besides the agent events.
        all_agent_events: keep any ``agent.*`` event name (future event types), not only the
            known ones; receiver-made ``agent.alert`` records are never fed back here.
        retention: events older than this (by event time) are deleted.
        max_events: at most this many events are kept (oldest dropped first).
        prune_interval: how often retention runs.
        store_content: keep content attributes (prompts, reasoning); off by default.
        max_body_chars: bodies are truncated to this many characters.
    """

    event_names: list[str] = dataclasses.field(default_factory=list)
    all_agent_events: bool = True
    retention: float = dataclasses.field(default=7 * 86400.0, metadata=DURATION)
    max_events: int = 1_000_000
    prune_interval: float = dataclasses.field(default=60.0, metadata=DURATION)
    store_content: bool = False
    max_body_chars: int = 4096

    def validate(self) -> list[str]:
        """Problems, each starting with the key."""
        out = []
        if self.max_events <= 0:
            out.append("max_events: must be positive")
        if self.retention <= 0:
            out.append("retention: must be positive")
        return out


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind)


def _attrs(kvs: Iterable[KeyValue]) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


def _first(*maps_keys: tuple[Mapping[str, Any], str]) -> str:
    for m, k in maps_keys:
        v = m.get(k)
        if v not in (None, ""):
            return str(v)
    return ""


def events_from_request(
    request: ExportLogsServiceRequest,
    *,
    keep: frozenset[str] = AUDIT_EVENT_NAMES,
    all_agent_events: bool = True,
    store_content: bool = False,
    max_body_chars: int = 4096,
    now: float = 0.0,
) -> list[AgentEvent]:
    """Decode the agent event records of one OTLP logs request."""
    out: list[AgentEvent] = []
    for rl in request.resource_logs:
        res = _attrs(rl.resource.attributes)
        service = str(res.get("service.name", ""))
        for sl in rl.scope_logs:
            for r in sl.log_records:
                attrs = _attrs(r.attributes)
                name = r.event_name or str(attrs.get(sc.EVENT_NAME, ""))
                if not name or name == sc.EVENT_AGENT_ALERT:
                    continue
                if name not in keep and not (all_agent_events and name.startswith("agent.")):
                    continue
                if not store_content:
                    attrs = {k: v for k, v in attrs.items() if k not in sc.CONTENT_ATTRIBUTES}
                ts_ns = r.time_unix_nano or r.observed_time_unix_nano
                ts = ts_ns / 1e9 if ts_ns else now
                body = _value(r.body)
                body_text = (
                    body
                    if isinstance(body, str)
                    else ("" if body is None else json.dumps(body, default=str))
                )
                if not store_content and name == sc.EVENT_AGENT_DECISION:
                    # a decision body may carry reasoning (content): keep only structured fields
                    body_text = ""
                out.append(
                    AgentEvent(
                        time=ts,
                        type=name,
                        agent=_first(
                            (attrs, sc.GEN_AI_AGENT_NAME),
                            (res, sc.GEN_AI_AGENT_NAME),
                            (res, sc.GEN_AI_MAIN_AGENT_NAME),
                        ),
                        trace_id=r.trace_id.hex() if any(r.trace_id) else "",
                        span_id=r.span_id.hex() if any(r.span_id) else "",
                        session=_first(
                            (attrs, sc.GEN_AI_CONVERSATION_ID),
                            (attrs, sc.SESSION_ID),
                            (res, sc.SESSION_ID),
                        ),
                        user=_first(
                            (attrs, sc.USER_ID),
                            (attrs, sc.ENDUSER_ID),
                            (res, sc.USER_ID),
                            (res, sc.ENDUSER_ID),
                        ),
                        service=service,
                        severity=r.severity_text
                        or (str(r.severity_number) if r.severity_number else ""),
                        body=body_text[:max_body_chars],
                        attributes=attrs,
                    )
                )
    return out


class AuditTrail(Component):
    """The ``audit`` component."""

    def __init__(self, config: AuditConfig, name: str = "") -> None:
        self.config = config
        self.name = name
        self.store: EventsStore | None = None
        self._host: Host | None = None
        self._keep = AUDIT_EVENT_NAMES | frozenset(config.event_names)
        self._last_prune = -math.inf

    def start(self, host: Host) -> None:
        """Open the store and register ``/api/v1/events``."""
        self._host = host
        suffix = f"-{self.name}" if self.name else ""
        self.store = EventsStore(Path(host.data_dir) / f"events{suffix}.sqlite")
        host.register_api(f"/api/v1/events{suffix}", self.api_events)

    def process_logs(self, request: ExportLogsServiceRequest) -> None:
        """Store the agent event records of one request."""
        if self.store is None or self._host is None:
            return
        try:
            events = events_from_request(
                request,
                keep=self._keep,
                all_agent_events=self.config.all_agent_events,
                store_content=self.config.store_content,
                max_body_chars=self.config.max_body_chars,
                now=self._host.now(),
            )
            self.store.add(events)
        except Exception:  # malformed input must not stop the pipeline
            _log.exception("audit trail: could not store events")

    def tick(self, now: float) -> None:
        """Retention."""
        if self.store is None or now - self._last_prune < self.config.prune_interval:
            return
        self._last_prune = now
        self.store.prune(before=now - self.config.retention, max_rows=self.config.max_events)

    def shutdown(self) -> None:
        """Close the store."""
        if self.store is not None:
            self.store.close()

    def api_events(
        self, method: str, query: Mapping[str, list[str]], body: bytes | None
    ) -> ApiResponse:
        """``GET /api/v1/events?agent=&type=&since=&until=&trace_id=&session=&user=&limit=&cursor=``."""
        if method != "GET":
            return 405, {"error": "method not allowed"}
        if self.store is None:
            return 503, {"error": "not started"}
        from otel_agents.processors._alert import _q, _time_param

        try:
            limit = int(_q(query, "limit") or 100)
            if limit <= 0:
                raise ValueError("limit must be positive")
            eq = EventQuery(
                agent=_q(query, "agent"),
                type=_q(query, "type"),
                since=_time_param(_q(query, "since")),
                until=_time_param(_q(query, "until")),
                trace_id=_q(query, "trace_id"),
                session=_q(query, "session"),
                user=_q(query, "user"),
                limit=limit,
                cursor=_q(query, "cursor"),
            )
            items, cursor = self.store.query(eq)
        except ValueError as exc:
            return 400, {"error": str(exc)}
        return 200, {"events": items, "next_cursor": cursor}


def create_audit_trail(config: AuditConfig, name: str) -> AuditTrail:
    """Factory entry point."""
    return AuditTrail(config, name)
