# SPDX-License-Identifier: Apache-2.0
"""Trace assembly: decision wait, eviction cap, late spans, duplicates, orphans, inheritance."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from otel_agents.processors._assembly import AssemblyConfig, TraceAssembler, inherit
from otel_agents.processors._batch import build_span_batch

from ._gen import TraceGen, request

T0 = 1_700_000_000 * 10**9


def _batch(spans, at: float = 0.0):  # type: ignore[no-untyped-def]
    return build_span_batch(request(spans), pricebook=None, received_at=at)


def test_trace_completes_after_decision_wait_of_quiet() -> None:
    """A trace is released only once no span arrived for decision_wait seconds."""
    gen = TraceGen(1)
    spans = gen.trace(T0)
    asm = TraceAssembler(AssemblyConfig(decision_wait=5.0))
    asm.add(_batch(spans[:4]), now=100.0)
    asm.add(_batch(spans[4:]), now=103.0)
    assert asm.collect(107.9) is None and asm.open_traces == 1
    done = asm.collect(108.0)
    assert done is not None and done.n_traces == 1 and done.spans.n == len(spans)
    assert asm.open_traces == 0 and asm.completed == 1
    assert not done.orphan.any() and done.root[0] >= 0
    root = int(done.root[0])
    assert done.spans.name[root] == "invoke_agent planner"
    # every non-root span found its parent
    assert ((done.parent >= 0) | (done.spans.parent_span_id == b"")).all()


def test_duplicates_are_counted_once() -> None:
    """A retried batch (same spans twice) yields each span once and counts the duplicates."""
    spans = TraceGen(2).trace(T0)
    asm = TraceAssembler(AssemblyConfig(decision_wait=1.0))
    asm.add(_batch(spans), now=0.0)
    asm.add(_batch(spans), now=0.5)
    done = asm.collect(2.0)
    assert done is not None and done.spans.n == len(spans)
    assert done.duplicates == len(spans) == asm.duplicate_spans


def test_cap_evicts_oldest_and_counts() -> None:
    """Beyond max_open_traces the oldest trace is completed early and counted as evicted."""
    gen = TraceGen(3)
    asm = TraceAssembler(AssemblyConfig(decision_wait=60.0, max_open_traces=3))
    traces = [gen.trace(T0 + i) for i in range(5)]
    for i, tr in enumerate(traces):
        asm.add(_batch(tr), now=float(i))
    assert asm.open_traces == 3 and asm.evicted == 2
    done = asm.collect(5.0)
    assert done is not None and done.n_traces == 2 and done.evicted.all()
    first = {bytes(done.spans.trace_id[int(o)]) for o in done.offsets[:-1]}
    assert first == {traces[0][0].span.trace_id, traces[1][0].span.trace_id}


def test_late_spans_are_counted_and_not_orphans() -> None:
    """Spans after completion are late; their parents in the completed part are known."""
    spans = TraceGen(4).trace(T0)
    asm = TraceAssembler(AssemblyConfig(decision_wait=1.0))
    asm.add(_batch(spans[:-3]), now=0.0)
    first = asm.collect(5.0)
    assert first is not None and not first.late.any()
    asm.add(_batch(spans[-3:]), now=6.0)
    assert asm.late_spans == 3
    frag = asm.collect(10.0)
    assert frag is not None and frag.late.all() and frag.spans.n == 3
    # The last three include the root; its children in the first part are not orphans here.
    assert not frag.orphan.any()


def test_a2a_break_flags_orphan_server_span() -> None:
    """A SERVER span whose A2A CLIENT never arrived is an orphan with the a2a reason."""
    spans = TraceGen(5).trace(T0, fault="a2a-break")
    asm = TraceAssembler(AssemblyConfig(decision_wait=1.0))
    asm.add(_batch(spans), now=0.0)
    done = asm.collect(2.0)
    assert done is not None
    assert done.a2a_server_orphan.sum() == 1 and done.orphan.sum() == 1
    assert asm.orphans["a2a_server_without_client"] == 1
    assert asm.orphans["missing_parent"] == 0


def test_a2a_client_without_server_is_flagged() -> None:
    """A CLIENT A2A span with no SERVER child is reported as a broken chain."""
    spans = [g for g in TraceGen(6).trace(T0) if g.service == "planner-svc"]
    asm = TraceAssembler(AssemblyConfig(decision_wait=1.0))
    asm.add(_batch(spans), now=0.0)
    done = asm.collect(2.0)
    assert done is not None and done.a2a_client_broken.sum() == 1
    assert asm.orphans["a2a_client_without_server"] == 1


def test_flush_releases_everything() -> None:
    """flush=True completes every open trace (shutdown)."""
    gen = TraceGen(7)
    asm = TraceAssembler(AssemblyConfig(decision_wait=60.0))
    asm.add(_batch(gen.trace(T0) + gen.trace(T0)), now=0.0)
    done = asm.collect(1.0, flush=True)
    assert done is not None and done.n_traces == 2 and asm.open_traces == 0


def test_inherit_fills_from_nearest_ancestor() -> None:
    """Empty names take the nearest named ancestor's value; unnamed roots stay empty."""
    values = np.array(["a", "", "", "b", "", ""], dtype=object)
    parent = np.array([-1, 0, 1, 2, 3, -1], dtype=np.int64)
    assert inherit(values, parent).tolist() == ["a", "a", "a", "b", "b", ""]


def test_root_agent_falls_back_to_top_most_agent() -> None:
    """A run under a workflow root (no agent) belongs to its top-most agent."""
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    from otel_agents import semconv as sc

    from ._gen import GenSpan, kv

    spans = TraceGen(8).trace(T0)
    root = next(g for g in spans if g.span.parent_span_id == b"")
    wf = Span(
        trace_id=root.span.trace_id,
        span_id=b"\x77" * 8,
        name="invoke_workflow research",
        start_time_unix_nano=T0 - 10,
        end_time_unix_nano=root.span.end_time_unix_nano + 10,
        attributes=[kv(sc.GEN_AI_OPERATION_NAME, "invoke_workflow")],
    )
    root.span.parent_span_id = wf.span_id
    asm = TraceAssembler(AssemblyConfig(decision_wait=1.0))
    asm.add(_batch([*spans, GenSpan("planner-svc", wf)]), now=0.0)
    done = asm.collect(2.0)
    assert done is not None and done.spans.name[int(done.root[0])] == "invoke_workflow research"
    assert done.root_agent.tolist() == ["planner"]


def _summary(done) -> list[tuple[str, ...]]:  # type: ignore[no-untyped-def]
    """Order-independent view of a completed set: per span its trace, parent and agent."""
    s = done.spans
    out = []
    for i in range(s.n):
        p = int(done.parent[i])
        out.append(
            (
                bytes(s.trace_id[i]).hex(),
                bytes(s.span_id[i]).hex(),
                bytes(s.span_id[p]).hex() if p >= 0 else "",
                str(s.agent_name[i]),
                str(done.root_agent[int(done.trace_no[i])]),
                str(bool(done.orphan[i])),
            )
        )
    return sorted(out)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), cuts=st.lists(st.integers(1, 40), max_size=4),
       dup=st.booleans())  # fmt: skip
def test_split_order_and_retries_do_not_change_assembly(
    seed: int, cuts: list[int], dup: bool
) -> None:
    """Any split of the spans into batches, any order, with a retried batch, assembles to the
    same traces as one batch (B17 duplicates, B18 out-of-order)."""
    import itertools
    import random

    gen = TraceGen(seed)
    spans = gen.trace(T0) + gen.trace(T0, fault="a2a-break") + gen.trace(T0)
    ref = TraceAssembler(AssemblyConfig(decision_wait=1.0))
    ref.add(_batch(spans), now=0.0)
    expected = ref.collect(5.0)
    shuffled = list(spans)
    random.Random(seed).shuffle(shuffled)
    bounds = sorted({min(c, len(shuffled)) for c in cuts} | {0, len(shuffled)})
    parts = [shuffled[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    if dup:
        parts.append(parts[0])
    asm = TraceAssembler(AssemblyConfig(decision_wait=1.0))
    for k, part in enumerate(parts):
        asm.add(_batch(part), now=k * 0.1)
    got = asm.collect(10.0)
    assert expected is not None and got is not None
    assert _summary(got) == _summary(expected)
    assert got.duplicates == (len(parts[0]) if dup else 0)


def _resource_request(spans, main_agent: str = ""):  # type: ignore[no-untyped-def]
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans

    from otel_agents import semconv as sc

    from ._gen import kv

    attrs = [kv("service.name", "zero-code-svc")]
    if main_agent:
        attrs.append(kv(sc.GEN_AI_MAIN_AGENT_NAME, main_agent))
    rs = ResourceSpans(resource=Resource(attributes=attrs), scope_spans=[ScopeSpans(spans=spans)])
    return build_span_batch(
        ExportTraceServiceRequest(resource_spans=[rs]), pricebook=None, received_at=0.0
    )


def test_main_agent_names_agentless_spans_across_batches_and_runs_fall_back_to_service() -> None:
    """A child exported before its agent-less root gets the Resource's main agent after assembly
    (pending until then), and a run nobody names belongs to its root's service."""
    from opentelemetry.proto.trace.v1.trace_pb2 import Span
    from otel_agents.processors._batch import agent_pending

    def span(tid: int, sid: int, parent: int) -> Span:
        return Span(
            trace_id=bytes([tid]) * 16,
            span_id=bytes([sid]) * 8,
            parent_span_id=bytes([parent]) * 8 if parent else b"",
            name=f"span {sid}",
            start_time_unix_nano=T0,
            end_time_unix_nano=T0 + 1000 * sid,
        )

    asm = TraceAssembler(AssemblyConfig(decision_wait=1.0))
    child = _resource_request([span(1, 2, 1)], "support")
    assert child.agent_name.tolist() == [""] and agent_pending(child).tolist() == [True]
    asm.add(child, now=0.0)
    asm.add(_resource_request([span(1, 1, 0)], "support"), now=0.0)
    asm.add(_resource_request([span(2, 3, 0), span(2, 4, 3)]), now=0.0)
    done = asm.collect(5.0)
    assert done is not None and done.n_traces == 2
    by_trace = {
        done.trace_id_hex(t): (
            done.spans.agent_name[done.offsets[t] : done.offsets[t + 1]].tolist(),
            done.agent_pending[done.offsets[t] : done.offsets[t + 1]].tolist(),
            done.root_agent[t],
        )
        for t in range(done.n_traces)
    }
    assert by_trace[(b"\x01" * 16).hex()][0] == ["support", "support"]
    assert sorted(by_trace[(b"\x01" * 16).hex()][1]) == [False, True]
    assert by_trace[(b"\x01" * 16).hex()][2] == "support"
    agents, pending, run = by_trace[(b"\x02" * 16).hex()]
    assert (agents, sorted(pending), run) == (["", ""], [False, True], "zero-code-svc")


def test_a2a_client_without_a_peer_name_takes_its_server_childs_agent() -> None:
    """An A2A CLIENT span that names no peer is pending at batch time and, once assembled, its
    peer is the agent its SERVER child declares (here through its Resource's main agent), which
    is also the SERVER span's own agent."""
    from opentelemetry.proto.trace.v1.trace_pb2 import Span
    from otel_agents.processors._batch import agent_pending

    from otel_agents import semconv as sc

    from ._gen import kv

    def span(sid: int, parent: int, kind: int, **attrs: object) -> Span:
        return Span(
            trace_id=b"\x05" * 16,
            span_id=bytes([sid]) * 8,
            parent_span_id=bytes([parent]) * 8 if parent else b"",
            name=f"span {sid}",
            kind=kind,  # type: ignore[arg-type]
            start_time_unix_nano=T0,
            end_time_unix_nano=T0 + 10_000 - sid,
            attributes=[kv(k, v) for k, v in attrs.items()],
        )

    method = {sc.A2A_METHOD_NAME: "SendMessage"}
    client = _resource_request([span(1, 0, 1), span(2, 1, 3, **method)], "planner")
    assert client.agent_name.tolist() == ["planner", "planner"]
    assert agent_pending(client).tolist() == [False, True]  # peer unknown until the server
    server = _resource_request([span(3, 2, 2, **method)], "researcher")
    asm = TraceAssembler(AssemblyConfig(decision_wait=1.0))
    asm.add(client, now=0.0)
    asm.add(server, now=0.0)
    done = asm.collect(5.0)
    assert done is not None
    by_name = dict(zip(done.spans.name.tolist(), done.spans.a2a_peer.tolist(), strict=True))
    assert by_name["span 2"] == "researcher"  # the CLIENT span names the agent it called
    assert by_name["span 3"] == ""
    agents = dict(zip(done.spans.name.tolist(), done.spans.agent_name.tolist(), strict=True))
    # The SERVER span belongs to its own process's agent, not to the caller by inheritance.
    assert agents == {"span 1": "planner", "span 2": "planner", "span 3": "researcher"}
