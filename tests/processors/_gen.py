# SPDX-License-Identifier: Apache-2.0
"""Realistic agent traces as OTLP protobuf requests, with injectable faults.

A ``planner`` agent (service ``planner-svc``) calls a model, delegates to a ``researcher``
agent (service ``researcher-svc``) over A2A (CLIENT ``message/send`` → SERVER span), which runs
``web_search`` twice in parallel, calls a model and runs ``summarize``; the planner finishes
with another model call.  Faults: ``slow-tool``, ``token-spike``, ``error-burst``,
``tool-loop``, ``a2a-break``, ``cost-runaway``.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable, Sequence
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from otel_agents import semconv as sc

FAULTS = ("slow-tool", "token-spike", "error-burst", "tool-loop", "a2a-break", "cost-runaway")
MS = 1_000_000
INTERNAL, SERVER, CLIENT = 1, 2, 3

# USD per token (input, output) the generator prices with (sender-side cost).
PRICES = {"gpt-4o": (2.5e-6, 10e-6), "gpt-4o-mini": (0.15e-6, 0.6e-6)}


def kv(key: str, value: Any) -> KeyValue:
    """One OTLP attribute."""
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


@dataclasses.dataclass
class GenSpan:
    """A span before encoding, with the service that emits it."""

    service: str
    span: Span


class TraceGen:
    """Deterministic generator of planner/researcher traces (seeded)."""

    def __init__(self, seed: int = 1, *, sender_cost: bool = True, jitter: float = 0.15) -> None:
        self.rng = random.Random(seed)
        self.sender_cost = sender_cost
        self.jitter = jitter  # sigma of the log-normal factor on every duration

    def _id(self, n: int) -> bytes:
        return self.rng.getrandbits(8 * n).to_bytes(n, "big") or b"\1" * n

    def _jit(self, ms: float) -> int:
        return max(1, int(ms * self.rng.lognormvariate(0.0, self.jitter) * MS))

    def _span(
        self,
        out: list[GenSpan],
        service: str,
        trace_id: bytes,
        parent: bytes,
        name: str,
        kind: int,
        start: int,
        end: int,
        attrs: dict[str, Any],
        error: str | None = None,
    ) -> bytes:
        sid = self._id(8)
        span = Span(
            trace_id=trace_id,
            span_id=sid,
            parent_span_id=parent,
            name=name,
            kind=kind,  # type: ignore[arg-type]
            start_time_unix_nano=start,
            end_time_unix_nano=end,
            attributes=[kv(k, v) for k, v in attrs.items()],
        )
        if error:
            span.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message=error))
            span.attributes.append(kv(sc.ERROR_TYPE, error))
        out.append(GenSpan(service, span))
        return sid

    def _chat(
        self, out: list[GenSpan], svc: str, tid: bytes, parent: bytes, agent: str, model: str,
        start: int, tokens_in: int, tokens_out: int, ms: float,
    ) -> int:  # fmt: skip
        end = start + self._jit(ms)
        attrs: dict[str, Any] = {
            sc.GEN_AI_OPERATION_NAME: sc.OP_CHAT,
            sc.GEN_AI_AGENT_NAME: agent,
            sc.GEN_AI_PROVIDER_NAME: "openai",
            sc.GEN_AI_REQUEST_MODEL: model,
            sc.GEN_AI_USAGE_INPUT_TOKENS: tokens_in,
            sc.GEN_AI_USAGE_OUTPUT_TOKENS: tokens_out,
        }
        if self.sender_cost:
            p_in, p_out = PRICES[model]
            attrs[sc.GEN_AI_USAGE_COST_AMOUNT] = tokens_in * p_in + tokens_out * p_out
            attrs[sc.GEN_AI_USAGE_COST_CURRENCY] = "USD"
        self._span(out, svc, tid, parent, f"chat {model}", CLIENT, start, end, attrs)
        return end

    def _tool(
        self, out: list[GenSpan], svc: str, tid: bytes, parent: bytes, agent: str, tool: str,
        start: int, ms: float, args_hash: str, error: str | None = None,
    ) -> int:  # fmt: skip
        end = start + self._jit(ms)
        attrs = {
            sc.GEN_AI_OPERATION_NAME: sc.OP_EXECUTE_TOOL,
            sc.GEN_AI_AGENT_NAME: agent,
            sc.GEN_AI_TOOL_NAME: tool,
            sc.AGENT_TOOL_ARGS_HASH: args_hash,
        }
        self._span(
            out, svc, tid, parent, f"execute_tool {tool}", INTERNAL, start, end, attrs, error
        )
        return end

    def trace(
        self, start_ns: int, fault: str | None = None, session: str | None = None
    ) -> list[GenSpan]:
        """One planner → researcher trace starting at ``start_ns``."""
        out: list[GenSpan] = []
        tid = self._id(16)
        session = session or f"sess-{self.rng.randrange(10**6)}"
        p, r = "planner-svc", "researcher-svc"
        t = start_ns
        spike = 10 if fault == "token-spike" else 1
        runaway = fault == "cost-runaway"
        # Children first, root filled in at the end (its end time is known then).
        root_id = self._id(8)
        t = self._chat(out, p, tid, root_id, "planner", "gpt-4o", t + 2 * MS,
                       self.rng.randint(900, 1300), self.rng.randint(150, 300), 600)  # fmt: skip
        a2a_start = t + MS
        client_id = self._id(8)
        srv_start = a2a_start + self._jit(5)
        srv_id = self._id(8)
        agent_id = self._id(8)
        rt = srv_start + MS
        # Two searches in parallel.
        search_ms = 2400.0 if fault == "slow-tool" else 300.0
        err = "TimeoutError" if fault == "error-burst" else None
        e1 = self._tool(
            out, r, tid, agent_id, "researcher", "web_search", rt, search_ms, "h-q1", err
        )
        e2 = self._tool(
            out, r, tid, agent_id, "researcher", "web_search", rt + MS, search_ms, "h-q2", err
        )
        rt = max(e1, e2)
        if fault == "tool-loop":
            for _ in range(6):
                rt = self._tool(
                    out, r, tid, agent_id, "researcher", "web_search", rt, 300, "h-same"
                )
        calls = 8 if runaway else 1
        for _ in range(calls):
            rt = self._chat(out, r, tid, agent_id, "researcher", "gpt-4o-mini", rt,
                            self.rng.randint(2500, 3500) * spike * (20 if runaway else 1),
                            self.rng.randint(300, 500) * spike, 900)  # fmt: skip
        rt = self._tool(out, r, tid, agent_id, "researcher", "summarize", rt, 80, "h-sum")
        agent_end = rt + MS
        self._span_with_id(out, r, tid, srv_id, agent_id, "invoke_agent researcher", INTERNAL,
                           srv_start + MS // 2, agent_end,
                           {sc.GEN_AI_OPERATION_NAME: sc.OP_INVOKE_AGENT,
                            sc.GEN_AI_AGENT_NAME: "researcher",
                            sc.GEN_AI_CONVERSATION_ID: session})  # fmt: skip
        srv_end = agent_end + MS
        self._span_with_id(out, r, tid, client_id, srv_id, "message/send", SERVER, srv_start, srv_end,
                           {sc.A2A_METHOD_NAME: "message/send", sc.GEN_AI_AGENT_NAME: "researcher",
                            sc.GEN_AI_CONVERSATION_ID: session})  # fmt: skip
        client_end = srv_end + self._jit(5)
        if fault != "a2a-break":  # the CLIENT span is lost: the SERVER span is an orphan
            self._span_with_id(out, p, tid, root_id, client_id, "message/send", CLIENT, a2a_start,
                               client_end,
                               # as the SDK does: the CLIENT span names the remote agent
                               {sc.A2A_METHOD_NAME: "message/send", sc.GEN_AI_AGENT_NAME: "researcher",
                                sc.AGENT_A2A_PEER_AGENT: "researcher"})  # fmt: skip
        t = self._chat(out, p, tid, root_id, "planner", "gpt-4o", client_end + MS,
                       self.rng.randint(1500, 2000), self.rng.randint(200, 400), 700)  # fmt: skip
        self._span_with_id(out, p, tid, b"", root_id, "invoke_agent planner", INTERNAL, start_ns,
                           t + MS, {sc.GEN_AI_OPERATION_NAME: sc.OP_INVOKE_AGENT,
                                    sc.GEN_AI_AGENT_NAME: "planner",
                                    sc.GEN_AI_CONVERSATION_ID: session})  # fmt: skip
        return out

    def _span_with_id(
        self, out: list[GenSpan], service: str, tid: bytes, parent: bytes, sid: bytes, name: str,
        kind: int, start: int, end: int, attrs: dict[str, Any],
    ) -> None:  # fmt: skip
        out.append(GenSpan(service, Span(
            trace_id=tid, span_id=sid, parent_span_id=parent, name=name, kind=kind,  # type: ignore[arg-type]
            start_time_unix_nano=start, end_time_unix_nano=end,
            attributes=[kv(k, v) for k, v in attrs.items()],
        )))  # fmt: skip


def request(spans: Iterable[GenSpan]) -> ExportTraceServiceRequest:
    """One OTLP request with a ResourceSpans per service."""
    by_service: dict[str, list[Span]] = {}
    for g in spans:
        by_service.setdefault(g.service, []).append(g.span)
    req = ExportTraceServiceRequest()
    for svc, ss in by_service.items():
        req.resource_spans.append(
            ResourceSpans(
                resource=Resource(attributes=[kv("service.name", svc)]),
                scope_spans=[ScopeSpans(spans=ss)],
            )
        )
    return req


def traces_request(traces: Sequence[list[GenSpan]]) -> ExportTraceServiceRequest:
    """One request holding several traces."""
    return request(g for tr in traces for g in tr)
