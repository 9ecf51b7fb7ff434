# SPDX-License-Identifier: Apache-2.0
"""Sharding proof for collector-config/otelcol/loadbalancing.yaml: N receivers, each fed the
traces the Collector's ``loadbalancing`` exporter would route to it (consistent hash ring on the
trace ID), produce — merged the way Prometheus and the findings API merge them — exactly what
one receiver fed everything produces.

The workload is the demo's real OTLP (captured once in an OTLP sink, with tool-loop, A2A-break
and error faults), replayed as export requests split per trace ID with resource and scope kept,
as the loadbalancing exporter splits batches. Merge rules checked:

* additive analysis metrics (calls, durations, tokens, cost, critical-path seconds, agent-graph
  edges, completed traces): the sum over shards equals the single receiver's value;
* per-trace findings (tool loops, broken A2A chains, orphan spans): the union over shards
  match the single receiver's: counts per (kind, key, severity) sum up, tool loops trace for
  trace — dedup cooldown off so every trace's finding is kept.

Window statistics (bottleneck shares, anomaly scores, slow-span outliers) are not expected to
merge by union: they are recomputed from the summed counters in Prometheus.
"""

from __future__ import annotations

import bisect
import json
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import RunningReceiver, http_get, run_demo, run_receiver, wait_until

pytestmark = pytest.mark.e2e

SHARDS = 3
PER_TRACE_FINDINGS = {"tool_loop", "a2a_break", "orphan_span"}
ADDITIVE = (
    "otel_agents_operation_calls_total",
    "otel_agents_operation_duration_seconds_bucket",
    "otel_agents_operation_duration_seconds_count",
    "otel_agents_operation_duration_seconds_sum",
    "otel_agents_tokens_total",
    "otel_agents_cost_usd_total",
    "otel_agents_critical_path_seconds_total",
    "otel_agents_traces_completed_total",
    "traces_service_graph_request_total",
    "traces_service_graph_request_failed_total",
    "traces_service_graph_request_server_seconds_bucket",
    "traces_service_graph_request_server_seconds_count",
)


# --------------------------------------------------------------------------- the hash ring
class HashRing:
    """The loadbalancing exporter's ring: 100 CRC-32 positions per endpoint on 36000 slots;
    a trace goes to the first endpoint at or after ``crc32(trace_id) % 36000``, wrapping."""

    SLOTS = 36000
    WEIGHT = 100

    def __init__(self, endpoints: Sequence[str]) -> None:
        taken: dict[int, str] = {}
        for endpoint in endpoints:
            for i in range(self.WEIGHT):
                pos = zlib.crc32(endpoint.encode() + bytes([i])) % self.SLOTS
                taken.setdefault(pos, endpoint)  # an occupied position keeps its first owner
        self._positions = sorted(taken)
        self._owners = [taken[p] for p in self._positions]

    def endpoint_for(self, trace_id: bytes) -> str:
        """The endpoint owning ``trace_id``."""
        pos = zlib.crc32(trace_id) % self.SLOTS
        i = bisect.bisect_left(self._positions, pos)
        return self._owners[i % len(self._owners)]


def split_by_trace(
    request: ExportTraceServiceRequest, ring: HashRing
) -> dict[str, ExportTraceServiceRequest]:
    """One request per endpoint with that endpoint's spans, resource and scope preserved."""
    out: dict[str, ExportTraceServiceRequest] = {}
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                req = out.setdefault(ring.endpoint_for(span.trace_id), ExportTraceServiceRequest())
                # Same resource + scope as the last group of this request: append, else open one.
                if (
                    not req.resource_spans
                    or req.resource_spans[-1].resource != rs.resource
                    or req.resource_spans[-1].schema_url != rs.schema_url
                ):
                    new_rs = req.resource_spans.add()
                    new_rs.resource.CopyFrom(rs.resource)
                    new_rs.schema_url = rs.schema_url
                target_rs = req.resource_spans[-1]
                if not target_rs.scope_spans or target_rs.scope_spans[-1].scope != ss.scope:
                    new_ss = target_rs.scope_spans.add()
                    new_ss.scope.CopyFrom(ss.scope)
                    new_ss.schema_url = ss.schema_url
                target_rs.scope_spans[-1].spans.add().CopyFrom(span)
    return out


def test_hash_ring_is_stable_and_balanced() -> None:
    """Routing is deterministic, every backend gets a share, and dropping one moves about 1/N."""
    ends = [f"otel-agents-{i}:4317" for i in range(1, 4)]
    ring = HashRing(ends)
    ids = [zlib.crc32(str(i).encode()).to_bytes(4, "big") * 4 for i in range(3000)]
    owners = [ring.endpoint_for(t) for t in ids]
    assert owners == [HashRing(ends).endpoint_for(t) for t in ids]
    counts = Counter(owners)
    assert set(counts) == set(ends) and min(counts.values()) > 3000 * 0.15
    smaller = HashRing(ends[:2])
    moved = sum(
        1 for t, o in zip(ids, owners, strict=True) if o != ends[2] and smaller.endpoint_for(t) != o
    )
    assert moved == 0  # only the removed backend's traces move


# --------------------------------------------------------------------------- the experiment
def send(rx: RunningReceiver, requests: Sequence[ExportTraceServiceRequest]) -> None:
    """Exports the requests to a receiver over OTLP/gRPC, in order."""
    with grpc.insecure_channel(rx.grpc_endpoint) as channel:
        stub = TraceServiceStub(channel)
        for req in requests:
            resp = stub.Export(req, timeout=10)
            assert not resp.partial_success.rejected_spans, resp


def samples(rx: RunningReceiver) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The receiver's /metrics samples."""
    status, body = http_get(rx.admin_url + "/metrics")
    assert status == 200
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def findings(rx: RunningReceiver) -> list[dict[str, Any]]:
    """All of the receiver's per-trace findings (every page of /api/v1/findings)."""
    out: list[dict[str, Any]] = []
    query = f"kind={','.join(sorted(PER_TRACE_FINDINGS))}&limit=1000"
    for _ in range(50):  # bounded: 50 000 findings is far beyond this workload
        status, body = http_get(f"{rx.admin_url}/api/v1/findings?{query}")
        assert status == 200, body[:300]
        page = json.loads(body)
        out += page["findings"]
        if not page.get("next_cursor"):
            return out
        query = (
            f"kind={','.join(sorted(PER_TRACE_FINDINGS))}&limit=1000&cursor={page['next_cursor']}"
        )
    pytest.fail("more pages of findings than expected")


@pytest.fixture(scope="module")
def demo_requests(tmp_path_factory: pytest.TempPathFactory) -> list[ExportTraceServiceRequest]:
    """The demo's trace export requests, captured once by an OTLP sink."""
    from otel_agents.testing import OtlpSink

    with OtlpSink(http=False) as sink:
        run_demo(
            sink.grpc_endpoint,
            *("--inject", "tool-loop", "--inject", "a2a-break", "--inject", "error-burst"),
            *("--runs", "12", "--time-scale", "0.002"),
        )
        reqs = [r.request for r in sink.requests("traces")]
    assert sum(len(ss.spans) for r in reqs for rs in r.resource_spans for ss in rs.scope_spans) > 50
    return reqs


@pytest.fixture
def receivers(tmp_path: Path) -> Iterator[list[RunningReceiver]]:
    """One reference receiver and SHARDS shard receivers, same config, dedup cooldown off.

    Analysis sampling is off: under the adaptive CPU budget each receiver picks its own
    threshold (the single one sees the whole burst, each shard a third of it), so the sets of
    analysed traces, and with them the estimates, would differ. Sharding with sampling on
    agrees only at a fixed fraction (tests/processors: shard agreement of the th/rv rule).
    """
    overrides = {
        "processors.agent_analysis.assembly.decision_wait": "1s",
        "processors.agent_analysis.cooldown": "0s",
        "analysis.sampling": "off",
    }
    with ExitStack() as stack:
        yield [
            stack.enter_context(run_receiver(tmp_path / f"r{i}", **overrides))
            for i in range(SHARDS + 1)
        ]


def _settled(rx: RunningReceiver, traces: int) -> bool:
    m = samples(rx)
    done = m.get(("otel_agents_traces_completed_total", frozenset()), 0)
    return done >= traces and m.get(("otel_agents_open_traces", frozenset()), 1) == 0


def test_sharded_receivers_merge_to_the_single_receiver(
    demo_requests: list[ExportTraceServiceRequest], receivers: list[RunningReceiver]
) -> None:
    """Traces partitioned by trace ID over N receivers merge to exactly one receiver's results."""
    single, shards = receivers[0], receivers[1:]
    names = [f"otel-agents-{i}:4317" for i in range(1, SHARDS + 1)]
    ring = HashRing(names)
    per_shard: dict[str, list[ExportTraceServiceRequest]] = defaultdict(list)
    trace_owner: dict[bytes, str] = {}
    for req in demo_requests:
        for name, part in split_by_trace(req, ring).items():
            per_shard[name].append(part)
            for rs in part.resource_spans:
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        assert trace_owner.setdefault(span.trace_id, name) == name
    assert set(per_shard) == set(names), "every shard must own some traces"

    send(single, demo_requests)
    for name, rx in zip(names, shards, strict=True):
        send(rx, per_shard[name])
    traces = len(trace_owner)
    wait_until(lambda: _settled(single, traces), timeout=30, what="the single receiver")
    for name, rx in zip(names, shards, strict=True):
        owned = sum(1 for o in trace_owner.values() if o == name)
        wait_until(lambda rx=rx, owned=owned: _settled(rx, owned), timeout=30, what=name)

    # Additive metrics: sum over shards == single.
    ref = samples(single)
    merged: dict[tuple[str, frozenset[tuple[str, str]]], float] = defaultdict(float)
    for rx in shards:
        for key, value in samples(rx).items():
            merged[key] += value
    compared = 0
    for key, value in ref.items():
        if key[0] in ADDITIVE:
            assert merged.get(key, 0.0) == pytest.approx(value, rel=1e-9, abs=1e-9), key
            compared += 1
    extra = {k for k in merged if k[0] in ADDITIVE and k not in ref and merged[k]}
    assert not extra, f"series only the shards have: {sorted(extra)[:5]}"
    assert compared > 50

    # Per-trace findings. Every finding carries its count in `value` (loop calls, broken
    # spans), so per (kind, key, severity) the totals over shards equal the single receiver's;
    # tool loops are one finding per trace, so those match trace for trace. (Findings that
    # group several traces name only a few example trace IDs: not comparable per trace.)
    def totals(items: list[dict[str, Any]]) -> dict[tuple[str, str, str], float]:
        out: dict[tuple[str, str, str], float] = defaultdict(float)
        for f in items:
            if f["kind"] in PER_TRACE_FINDINGS:
                out[(f["kind"], f["key"], f["severity"])] += f["value"]
        return dict(out)

    def loops(items: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
        return {
            (f["key"], f["severity"], *f["trace_ids"]) for f in items if f["kind"] == "tool_loop"
        }

    single_findings = findings(single)
    shard_findings = [f for rx in shards for f in findings(rx)]
    expected = totals(single_findings)
    assert {k[0] for k in expected} >= {"tool_loop", "a2a_break"}, expected
    merged_totals: dict[tuple[str, str, str], float] = defaultdict(float)
    for key, value in totals(shard_findings).items():
        merged_totals[key] += value
    assert dict(merged_totals) == pytest.approx(expected)
    assert loops(shard_findings) == loops(single_findings)
