# SPDX-License-Identifier: Apache-2.0
"""Agent-specific detectors on completed traces: tool loops, broken A2A chains, orphans.

All work on the columns of a :class:`CompletedTraces` set; results are grouped per subject so
the stage emits one finding per subject (with a count and example traces), not one per trace.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from otel_agents import semconv as sc

from ._assembly import CompletedTraces
from ._batch import SPAN_KIND_SERVER, group_keys

__all__ = ["ChainBreak", "OrphanGroup", "ToolLoop", "a2a_breaks", "orphan_groups", "tool_loops"]

_EXAMPLES = 3


@dataclasses.dataclass(frozen=True)
class ToolLoop:
    """The same tool called with the same arguments ``calls`` times in one trace."""

    agent: str
    tool: str
    args_hash: str
    calls: int
    trace_id: str


@dataclasses.dataclass(frozen=True)
class ChainBreak:
    """Broken A2A chains of one subject in this set.

    ``side`` is ``server`` (a SERVER span whose CLIENT never arrived; ``agent`` is the serving
    agent) or ``client`` (a CLIENT span with no SERVER child; ``agent`` is the caller).
    """

    side: str
    agent: str
    peer: str
    method: str
    service: str
    count: int
    trace_ids: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class OrphanGroup:
    """Spans of one service whose (non-A2A) parent never arrived."""

    service: str
    count: int
    trace_ids: tuple[str, ...]


def tool_loops(traces: CompletedTraces, threshold: int) -> list[ToolLoop]:
    """``(agent, tool, args_hash)`` repeated at least ``threshold`` times in one trace."""
    s = traces.spans
    m = (s.operation == sc.OP_EXECUTE_TOOL) & (s.tool_args_hash != "")
    if threshold < 2 or int(m.sum()) < threshold:
        return []
    idx = np.nonzero(m)[0]
    keys, inv = group_keys(s.agent_name[idx], s.tool_name[idx], s.tool_args_hash[idx])
    composite = traces.trace_no[idx] * max(len(keys), 1) + inv
    uniq, first, counts = np.unique(composite, return_index=True, return_counts=True)
    out = []
    for u, f, c in zip(uniq.tolist(), first.tolist(), counts.tolist(), strict=True):
        if c >= threshold:
            agent, tool, h = keys[u % max(len(keys), 1)]
            t = int(traces.trace_no[idx[f]])
            out.append(ToolLoop(agent, tool, h, int(c), traces.trace_id_hex(t)))
    return out


def _examples(traces: CompletedTraces, rows: np.ndarray) -> tuple[str, ...]:  # type: ignore[type-arg]
    tnos = dict.fromkeys(traces.trace_no[rows].tolist())
    return tuple(traces.trace_id_hex(t) for t in list(tnos)[:_EXAMPLES])


def a2a_breaks(traces: CompletedTraces) -> list[ChainBreak]:
    """Orphan A2A SERVER spans and A2A CLIENT spans without a SERVER child, grouped."""
    s = traces.spans
    out: list[ChainBreak] = []
    for side, mask in (("server", traces.a2a_server_orphan), ("client", traces.a2a_client_broken)):
        idx = np.nonzero(mask)[0]
        if idx.shape[0] == 0:
            continue
        keys, inv = group_keys(
            s.agent_name[idx], s.a2a_peer[idx], s.a2a_method[idx], s.service_name[idx]
        )
        for k, (agent, peer, method, service) in enumerate(keys):
            rows = idx[inv == k]
            out.append(
                ChainBreak(
                    side, agent, peer, method, service, int(rows.shape[0]), _examples(traces, rows)
                )
            )
    return out


def orphan_groups(traces: CompletedTraces) -> list[OrphanGroup]:
    """Spans with a missing parent that are not A2A SERVER spans, grouped by service."""
    s = traces.spans
    m = traces.orphan & ~((s.kind == SPAN_KIND_SERVER) & (s.a2a_method != ""))
    idx = np.nonzero(m)[0]
    if idx.shape[0] == 0:
        return []
    keys, inv = group_keys(s.service_name[idx])
    return [
        OrphanGroup(svc, int((inv == k).sum()), _examples(traces, idx[inv == k]))
        for k, (svc,) in enumerate(keys)
    ]
