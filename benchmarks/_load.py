# SPDX-License-Identifier: Apache-2.0
"""Load generation shared by the receiver benchmarks.

Builds realistic agent-trace OTLP requests once (serialized), then sends them from a separate
process over gRPC (generic unary call with bytes, so the client spends no time encoding) or
OTLP/HTTP protobuf, with N concurrent streams. Bounded by a request count *and* a time limit.
"""

from __future__ import annotations

import http.client
import os
import random
import threading
import time
from dataclasses import dataclass

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

_AGENTS = ("planner", "researcher", "writer", "critic")
_TOOLS = ("web_search", "fetch_page", "summarize", "calculator")
_MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5")


def _kv(key: str, value: str | int | float) -> KeyValue:
    if isinstance(value, str):
        return KeyValue(key=key, value=AnyValue(string_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(double_value=value))


def _pool(base: tuple[str, ...], names: int) -> tuple[str, ...]:
    """``names`` distinct names (0: the small realistic default set)."""
    if names <= 0:
        return base
    return tuple(f"{base[i % len(base)]}-{i}" for i in range(names))


def build_request(
    spans_per_request: int,
    rng: random.Random,
    t0_ns: int,
    *,
    names: int = 0,
    spans_per_trace: int = 8,
    tool_error: str | None = None,
    tool_latency_ns: int | None = None,
) -> bytes:
    """One serialized request: whole agent traces of ``spans_per_trace`` spans (a root
    ``invoke_agent`` + chat/tool children), 8–12 attributes per span.

    Args:
        spans_per_request: spans in the request.
        rng: randomness (IDs, names, durations).
        t0_ns: base start time.
        names: distinct agent / tool / model names to draw from (cardinality; 0 = 4/4/3).
        spans_per_trace: spans per trace (fewer → more traces per span → more open traces).
        tool_error: make every tool span fail with this ``error.type`` (fault injection).
        tool_latency_ns: fixed duration of every tool span (fault injection).
    """
    agents, tools, models = _pool(_AGENTS, names), _pool(_TOOLS, names), _pool(_MODELS, names)
    spans: list[Span] = []
    while len(spans) < spans_per_request:
        trace_id = rng.randbytes(16)
        agent = rng.choice(agents)
        root_id = rng.randbytes(8)
        start = t0_ns + rng.randrange(1_000_000_000)
        end = start + rng.randrange(1_000_000, 3_000_000_000)
        spans.append(
            Span(
                trace_id=trace_id,
                span_id=root_id,
                name=f"invoke_agent {agent}",
                kind=1,
                start_time_unix_nano=start,
                end_time_unix_nano=end,
                attributes=[
                    _kv("gen_ai.operation.name", "invoke_agent"),
                    _kv("gen_ai.agent.name", agent),
                    _kv("gen_ai.agent.id", f"{agent}-1"),
                    _kv("gen_ai.conversation.id", f"conv-{rng.randrange(1000)}"),
                ],
            )
        )
        for _ in range(max(0, spans_per_trace - 1)):
            if len(spans) >= spans_per_request:
                break
            s = start + rng.randrange(max(1, end - start))
            e = min(end, s + rng.randrange(100_000, 500_000_000))
            status = Status(code=0)
            if rng.random() < 0.5 and tool_error is None and tool_latency_ns is None:
                model = rng.choice(models)
                attrs = [
                    _kv("gen_ai.operation.name", "chat"),
                    _kv("gen_ai.provider.name", "openai"),
                    _kv("gen_ai.request.model", model),
                    _kv("gen_ai.response.model", model),
                    _kv("gen_ai.agent.name", agent),
                    _kv("gen_ai.usage.input_tokens", rng.randrange(100, 4000)),
                    _kv("gen_ai.usage.output_tokens", rng.randrange(10, 800)),
                    _kv("gen_ai.response.id", f"chatcmpl-{rng.getrandbits(64):x}"),
                    _kv("server.address", "api.openai.com"),
                    _kv("server.port", 443),
                ]
                name, kind = f"chat {model}", 3
            else:
                tool = rng.choice(tools)
                attrs = [
                    _kv("gen_ai.operation.name", "execute_tool"),
                    _kv("gen_ai.tool.name", tool),
                    _kv("gen_ai.tool.type", "function"),
                    _kv("gen_ai.tool.call.id", f"call_{rng.getrandbits(48):x}"),
                    _kv("gen_ai.agent.name", agent),
                    _kv("agent.tool.args_hash", f"{rng.getrandbits(32):08x}"),
                    _kv("http.response.status_code", 200),
                    _kv("url.full", f"https://example.com/{rng.getrandbits(32):x}"),
                ]
                name, kind = f"execute_tool {tool}", 1
                if tool_error is not None:
                    attrs.append(_kv("error.type", tool_error))
                    status = Status(code=2, message=tool_error)
                if tool_latency_ns is not None:
                    e = s + tool_latency_ns
            spans.append(
                Span(
                    trace_id=trace_id,
                    span_id=rng.randbytes(8),
                    parent_span_id=root_id,
                    name=name,
                    kind=kind,
                    start_time_unix_nano=s,
                    end_time_unix_nano=e,
                    attributes=attrs,
                    status=status,
                )
            )
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(
                    attributes=[
                        _kv("service.name", "agent-app"),
                        _kv("service.instance.id", "bench"),
                        _kv("telemetry.sdk.language", "python"),
                    ]
                ),
                scope_spans=[ScopeSpans(spans=spans)],
            )
        ]
    )
    return request.SerializeToString()


class Template:
    """A serialized request whose trace IDs are replaced by fresh ones on every send.

    Re-sending the same 16 requests would hand the receiver the same traces again and again
    (duplicates in assembly, a fixed number of open traces); re-encoding each request would
    make the client the bottleneck.  Trace IDs are unique random 16-byte values, so their
    offsets in the encoded bytes are found once and overwritten per send (~0.1 ms).
    """

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        request = ExportTraceServiceRequest.FromString(payload)
        ids = {
            s.trace_id for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans
        }
        self.offsets: list[list[int]] = []
        for trace_id in ids:
            at, where = payload.find(trace_id), []
            while at >= 0:
                where.append(at)
                at = payload.find(trace_id, at + 16)
            self.offsets.append(where)

    def fresh(self) -> bytes:
        """The request with every trace ID replaced (consistently within the request)."""
        out = bytearray(self.payload)
        new = os.urandom(16 * len(self.offsets))
        for i, where in enumerate(self.offsets):
            trace_id = new[16 * i : 16 * i + 16]
            for at in where:
                out[at : at + 16] = trace_id
        return bytes(out)


@dataclass
class LoadResult:
    sent_requests: int
    ok_requests: int
    failed_requests: int
    ok_spans: int
    wall_seconds: float
    latencies: list[float]


def run_load(
    target: str,
    protocol: str,
    *,
    streams: int,
    spans_per_request: int,
    max_requests: int,
    max_seconds: float,
    seed: int = 1,
    rate: float = 0.0,
    names: int = 0,
    spans_per_trace: int = 8,
) -> LoadResult:
    """Send up to ``max_requests`` requests over ``streams`` concurrent streams; stop at
    ``max_seconds`` whatever happens. ``target`` is ``host:port``.

    ``rate`` > 0 paces the requests (requests/s over all streams, an open-loop schedule: a slow
    receiver makes the streams fall behind, it does not lower the offered rate); ``names`` and
    ``spans_per_trace`` shape the data (see :func:`build_request`).
    """
    rng = random.Random(seed)
    t0 = time.time_ns()
    templates = [
        Template(
            build_request(spans_per_request, rng, t0, names=names, spans_per_trace=spans_per_trace)
        )
        for _ in range(16)
    ]

    def payload(n: int) -> bytes:
        return templates[n % len(templates)].fresh()

    lock = threading.Lock()
    counters = {"sent": 0, "ok": 0, "failed": 0}
    latencies: list[float] = []
    started = time.monotonic()
    deadline = started + max_seconds

    def take() -> int | None:
        with lock:
            if counters["sent"] >= max_requests or time.monotonic() > deadline:
                return None
            counters["sent"] += 1
            n = counters["sent"]
        if rate > 0:
            due = started + (n - 1) / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        return n

    def grpc_worker() -> None:
        channel = grpc.insecure_channel(
            target, options=[("grpc.max_send_message_length", 64 << 20)]
        )
        call = channel.unary_unary(TRACE_EXPORT)
        try:
            while (n := take()) is not None:
                t = time.perf_counter()
                try:
                    call(payload(n), timeout=30)
                    ok = True
                except grpc.RpcError:
                    ok = False
                record(ok, time.perf_counter() - t)
        finally:
            channel.close()

    def http_worker() -> None:
        host, port = target.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            while (n := take()) is not None:
                t = time.perf_counter()
                try:
                    conn.request(
                        "POST",
                        "/v1/traces",
                        body=payload(n),
                        headers={"Content-Type": "application/x-protobuf"},
                    )
                    resp = conn.getresponse()
                    resp.read()
                    ok = resp.status == 200
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection(host, int(port), timeout=30)
                    ok = False
                record(ok, time.perf_counter() - t)
        finally:
            conn.close()

    def record(ok: bool, seconds: float) -> None:
        with lock:
            counters["ok" if ok else "failed"] += 1
            latencies.append(seconds)

    worker = grpc_worker if protocol == "grpc" else http_worker
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(streams)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(max_seconds + 35)
    wall = time.perf_counter() - start
    return LoadResult(
        sent_requests=counters["sent"],
        ok_requests=counters["ok"],
        failed_requests=counters["failed"],
        ok_spans=counters["ok"] * spans_per_request,
        wall_seconds=wall,
        latencies=latencies,
    )


def main() -> None:
    """``python -m benchmarks._load TARGET PROTOCOL STREAMS SPANS MAX_REQ MAX_S [RATE NAMES
    SPANS_PER_TRACE]`` → one JSON line."""
    import json
    import sys

    target, protocol, streams, spans, max_req, max_s = sys.argv[1:7]
    given = sys.argv[7:10]
    extra = given + ["0", "0", "8"][len(given) :]  # defaults: unpaced, default names, 8
    r = run_load(
        target,
        protocol,
        streams=int(streams),
        spans_per_request=int(spans),
        max_requests=int(max_req),
        max_seconds=float(max_s),
        seed=os.getpid(),
        rate=float(extra[0]),
        names=int(extra[1]),
        spans_per_trace=int(extra[2]),
    )
    lat = sorted(r.latencies) or [0.0]
    print(
        json.dumps(
            {
                "sent": r.sent_requests,
                "ok": r.ok_requests,
                "failed": r.failed_requests,
                "ok_spans": r.ok_spans,
                "wall": r.wall_seconds,
                "p50": lat[len(lat) // 2],
                "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
            }
        )
    )


if __name__ == "__main__":
    main()
