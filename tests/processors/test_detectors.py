# SPDX-License-Identifier: Apache-2.0
"""Agent detectors on completed traces: tool loops, A2A breaks, orphans; the agent graph."""

from __future__ import annotations

from otel_agents.processors._assembly import AssemblyConfig, CompletedTraces, TraceAssembler
from otel_agents.processors._batch import build_span_batch
from otel_agents.processors._detectors import a2a_breaks, orphan_groups, tool_loops
from otel_agents.processors._graph import edges_of

from ._gen import GenSpan, TraceGen, request


def _complete(spans: list[GenSpan]) -> CompletedTraces:
    asm = TraceAssembler(AssemblyConfig(decision_wait=1))
    asm.add(build_span_batch(request(spans), pricebook=None, received_at=0.0), 0.0)
    done = asm.collect(5.0)
    assert done is not None
    return done


def test_tool_loop_needs_same_arguments_threshold_times() -> None:
    """Six calls with one argument hash are a loop; the two distinct searches are not."""
    gen = TraceGen(31)
    done = _complete(gen.trace(0, fault="tool-loop") + gen.trace(0))
    loops = tool_loops(done, threshold=3)
    assert [(x.agent, x.tool, x.args_hash, x.calls) for x in loops] == [
        ("researcher", "web_search", "h-same", 6)
    ]
    assert tool_loops(done, threshold=7) == []


def test_a2a_break_names_the_serving_agent() -> None:
    """A lost CLIENT span yields one server-side break for researcher with an example trace."""
    done = _complete(TraceGen(32).trace(0, fault="a2a-break"))
    (br,) = a2a_breaks(done)
    assert (br.side, br.agent, br.method, br.service, br.count) == (
        "server", "researcher", "message/send", "researcher-svc", 1,
    )  # fmt: skip
    assert br.trace_ids == (done.trace_id_hex(0),)
    assert orphan_groups(done) == []  # the A2A orphan is reported as a break, not twice


def test_plain_orphans_grouped_by_service() -> None:
    """A span whose parent never arrived (not A2A) is an orphan of its service."""
    spans = TraceGen(33).trace(0)
    lost = next(i for i, g in enumerate(spans) if g.span.name == "invoke_agent researcher")
    del spans[lost]
    done = _complete(spans)
    groups = orphan_groups(done)
    assert [(g.service, g.count) for g in groups] == [("researcher-svc", 4)]


def test_graph_edges_agent_tool_a2a() -> None:
    """Edges: user→planner (agent), planner→researcher (a2a), researcher→tools (tool)."""
    gen = TraceGen(34)
    done = _complete(gen.trace(0) + gen.trace(0, fault="error-burst"))
    edges = edges_of(done)
    calls = {k: (e.calls, e.failed) for k, e in edges.items()}
    assert calls == {
        ("user", "planner", "agent"): (2, 0),
        ("planner", "researcher", "a2a"): (2, 0),
        ("researcher", "web_search", "tool"): (4, 2),
        ("researcher", "summarize", "tool"): (2, 0),
    }
    e = edges[("researcher", "web_search", "tool")]
    assert int(e.buckets.sum()) == 4 and e.seconds > 0
