# SPDX-License-Identifier: Apache-2.0
"""The agent graph: agent→agent, agent→tool and A2A edges, as mergeable counters.

In-process agents emit INTERNAL spans, so the Collector's servicegraph connector never sees
them as edges (it pairs CLIENT/SERVER spans only).  Here edges come from the assembled trace:

* ``agent``: an ``invoke_agent`` span whose parent belongs to another agent (``user`` for a
  root invocation);
* ``tool``: an ``execute_tool`` span, from its agent to the tool;
* ``a2a``: an A2A SERVER span, from the agent of its CLIENT parent to the serving agent.

Each edge keeps calls, failed calls, the server-side duration sum and a histogram with
Tempo's service-graph buckets, exported as ``traces_service_graph_*`` so Grafana's node graph
works unchanged.  The state is plain sums: :meth:`GraphState.merge` of per-shard states equals
the single-instance state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import ItemsView, Iterator, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from otel_agents import semconv as sc

from ._assembly import CompletedTraces
from ._batch import SPAN_KIND_SERVER, group_keys

__all__ = ["EDGE_BUCKETS", "Edge", "EdgeDelta", "GraphState", "edges_of"]

#: Tempo / servicegraph connector default histogram buckets (seconds), plus longer ones for
#: agents, whose calls take seconds to minutes.
EDGE_BUCKETS = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 51.2, 102.4)
CONNECTION_AGENT = "agent"
CONNECTION_TOOL = "tool"
CONNECTION_A2A = "a2a"
USER = "user"

EdgeKey = tuple[str, str, str]


@dataclasses.dataclass(slots=True)
class Edge:
    """Counters of one ``(client, server, connection_type)`` edge (slotted: a completed set
    makes one per distinct edge before the cap folds them, ~20,000 per tick under RC-13)."""

    calls: int = 0
    failed: int = 0
    seconds: float = 0.0
    buckets: npt.NDArray[np.int64] = dataclasses.field(
        default_factory=lambda: np.zeros(len(EDGE_BUCKETS) + 1, dtype=np.int64)
    )

    def merge(self, other: Edge) -> None:
        """Add ``other``'s counts."""
        self.calls += other.calls
        self.failed += other.failed
        self.seconds += other.seconds
        self.buckets += other.buckets


def edges_of(traces: CompletedTraces) -> EdgeDelta:
    """The edges of a set of completed traces."""
    s = traces.spans
    parent = traces.parent
    has_p = parent >= 0
    pagent = np.where(has_p, s.agent_name[np.maximum(parent, 0)], "")
    is_root = s.parent_span_id == b""
    agent_m = (s.operation == sc.OP_INVOKE_AGENT) & (s.agent_name != "")
    agent_client = np.where(is_root, USER, pagent)
    agent_m &= (agent_client != s.agent_name) & (agent_client != "")
    tool_m = (s.operation == sc.OP_EXECUTE_TOOL) & (s.tool_name != "")
    a2a_m = (s.kind == SPAN_KIND_SERVER) & (s.a2a_method != "") & has_p
    parts = []
    for mask, cli, srv, conn in (
        (agent_m, agent_client, s.agent_name, CONNECTION_AGENT),
        (tool_m, s.agent_name, s.tool_name, CONNECTION_TOOL),
        (a2a_m, pagent, s.agent_name, CONNECTION_A2A),
    ):
        sel = np.nonzero(mask)[0]
        if sel.shape[0]:
            ct = np.full(sel.shape[0], conn, dtype=object)
            parts.append((cli[sel], srv[sel], ct, sel))
    if not parts:
        none = np.zeros(0, np.int64)
        return EdgeDelta([], none, none.astype(np.float64), none.astype(np.float64), none)
    client = np.concatenate([p[0] for p in parts]).astype(object)
    server = np.concatenate([p[1] for p in parts]).astype(object)
    ctype = np.concatenate([p[2] for p in parts])
    idx = np.concatenate([p[3] for p in parts])
    client = np.where(client == "", "unknown", client).astype(object)
    server = np.where(server == "", "unknown", server).astype(object)
    keys, inv = group_keys(client, server, ctype)
    g = len(keys)
    dur = s.duration_s[idx]
    failed = s.is_error[idx]
    calls = np.bincount(inv, minlength=g)
    nfail = np.bincount(inv, weights=failed, minlength=g)
    secs = np.bincount(inv, weights=dur, minlength=g)
    nb = len(EDGE_BUCKETS) + 1
    b = np.searchsorted(np.asarray(EDGE_BUCKETS), dur, side="left")
    hist = np.bincount(inv * nb + b, minlength=g * nb).reshape(g, nb)
    return EdgeDelta(keys, calls, nfail, secs, hist)  # type: ignore[arg-type]


class _EdgeItems(ItemsView[EdgeKey, Edge]):
    """``(key, Edge)`` pairs made one at a time from the delta's columns."""

    _mapping: EdgeDelta

    def __iter__(self) -> Iterator[tuple[EdgeKey, Edge]]:
        d = self._mapping
        for i, key in enumerate(d.keys_list):
            yield key, d.edge(i)


class EdgeDelta(Mapping[EdgeKey, Edge]):
    """The edges of a completed set as columns (a read-only mapping of :class:`Edge`).

    A completed set under name churn has one edge per unique agent or tool (~20,000 per tick
    in RC-13's flood); an :class:`Edge` and a histogram array per edge were ~8 MiB held until
    the metrics had taken them.  Iterating :meth:`items` builds each ``Edge`` on the fly (its
    ``buckets`` a view of the delta's histogram rows).
    """

    def __init__(
        self, keys: list[EdgeKey], calls: npt.NDArray[np.int64], failed: npt.NDArray[np.float64],
        seconds: npt.NDArray[np.float64], hist: npt.NDArray[np.int64],
    ) -> None:  # fmt: skip
        self.keys_list = keys
        self._calls, self._failed, self._seconds, self._hist = calls, failed, seconds, hist
        self._index: dict[EdgeKey, int] | None = None

    def edge(self, i: int) -> Edge:
        """The ``i``-th edge's counters."""
        return Edge(
            int(self._calls[i]), int(self._failed[i]), float(self._seconds[i]), self._hist[i]
        )

    def __getitem__(self, key: EdgeKey) -> Edge:
        if self._index is None:
            self._index = {k: i for i, k in enumerate(self.keys_list)}
        return self.edge(self._index[key])

    def __iter__(self) -> Iterator[EdgeKey]:
        return iter(self.keys_list)

    def __len__(self) -> int:
        return len(self.keys_list)

    def items(self) -> _EdgeItems:
        """``(key, Edge)`` pairs, each ``Edge`` made as it is reached."""
        return _EdgeItems(self)


class GraphState:
    """Cumulative edges since start (bounded: at most ``max_edges``; extra ones overflow)."""

    def __init__(self, max_edges: int = 2000) -> None:
        self.max_edges = max_edges
        self.edges: dict[EdgeKey, Edge] = {}

    def add(self, traces: CompletedTraces) -> EdgeDelta:
        """Count a set's edges; returns them (the deltas, for the metrics exporter)."""
        delta = edges_of(traces)
        for key, e in delta.items():
            self._edge(key).merge(e)
        return delta

    def _edge(self, key: EdgeKey) -> Edge:
        e = self.edges.get(key)
        if e is None:
            if len(self.edges) >= self.max_edges:
                key = ("__overflow__", "__overflow__", key[2])
                e = self.edges.get(key)
            if e is None:
                e = self.edges[key] = Edge()
        return e

    def merge(self, other: GraphState) -> None:
        """Add another shard's edges."""
        for key, e in other.edges.items():
            self._edge(key).merge(e)

    def to_json(self) -> dict[str, Any]:
        """Nodes and edges for ``/api/v1/agents``."""
        nodes: dict[str, str] = {}
        edges = []
        for (client, server, ctype), e in sorted(self.edges.items()):
            nodes.setdefault(client, "user" if client == USER else "agent")
            nodes.setdefault(server, "tool" if ctype == CONNECTION_TOOL else "agent")
            edges.append(
                {
                    "client": client,
                    "server": server,
                    "connection_type": ctype,
                    "calls": e.calls,
                    "failed": e.failed,
                    "mean_seconds": e.seconds / e.calls if e.calls else 0.0,
                }
            )
        return {
            "nodes": [{"id": n, "type": t} for n, t in sorted(nodes.items())],
            "edges": edges,
        }
