# SPDX-License-Identifier: Apache-2.0
"""Trace assembly: spans grouped by trace until the trace has been quiet for ``decision_wait``.

The Collector's tail-sampling pattern (``decision_wait``, ``num_traces``): a trace is "complete"
when no span of it arrived for ``decision_wait`` seconds of *receiver* time (nobody can know
that a trace is complete, contrib discussion #9949).  The open-trace table is capped; the oldest
trace is completed early and counted as evicted when the cap is hit.  Spans arriving for a
trace that already completed are counted as late and analysed as a *late fragment*: their own
figures (calls, tokens, cost, edges) count once, missing parents are
not judged (their parents are normally in the completed part), and no critical path is
computed for a fragment.

Completed traces come out as one columnar :class:`CompletedTraces` per tick (rows grouped by
trace, duplicates of ``(trace_id, span_id)`` removed, agent name and conversation ID inherited
from the nearest ancestor that carries them), with parent links, roots and orphan flags
computed with numpy over the whole set.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from otel_agents._configtypes import DURATION

from ._batch import (
    COLUMNS,
    SPAN_KIND_CLIENT,
    SPAN_KIND_SERVER,
    SpanBatch,
    _server_main_agents,
    agent_pending,
)

__all__ = ["AssemblyConfig", "CompletedTraces", "TraceAssembler"]

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
BoolA = npt.NDArray[np.bool_]

ORPHAN_MISSING_PARENT = "missing_parent"
ORPHAN_A2A_SERVER = "a2a_server_without_client"
ORPHAN_A2A_CLIENT = "a2a_client_without_server"
_ZERO_ID = b"\0" * 8
_MAX_DEPTH = 64  # pointer-jumping rounds: resolves ancestor chains up to 2**64 deep


@dataclasses.dataclass(frozen=True)
class AssemblyConfig:
    """Trace assembly settings.

    Attributes:
        decision_wait: quiet time after the last span of a trace before it is analysed.
        max_open_traces: cap on traces held open; the oldest is completed early (evicted).
        completed_memory: completed traces remembered to recognise late spans.
        completed_ttl: how long a completed trace is remembered.
    """

    decision_wait: float = dataclasses.field(default=10.0, metadata=DURATION)
    max_open_traces: int = 50_000
    completed_memory: int = 20_000
    completed_ttl: float = dataclasses.field(default=300.0, metadata=DURATION)

    def validate(self) -> list[str]:
        """Problems with the values (key: message)."""
        out = []
        if self.max_open_traces < 1:
            out.append("max_open_traces: must be at least 1")
        if self.completed_memory < 0:
            out.append("completed_memory: must not be negative")
        return out


@dataclasses.dataclass(frozen=True, eq=False)
class CompletedTraces:
    """Completed traces as one columnar set.

    Attributes:
        spans: the spans, grouped by trace (``offsets[t]:offsets[t+1]`` is trace ``t``), with
            ``agent_name`` / ``conversation_id`` inherited from ancestors where unset.
        offsets: trace boundaries (length ``traces + 1``).
        trace_no: trace number of each span.
        parent: index of each span's parent in ``spans``, -1 for roots and orphans.
        root: per trace, the index of its root span (longest of the parentless spans), -1 if
            the root is missing (fragments, broken traces).
        orphan: per span, its parent never arrived (reasons in :attr:`orphan_reason`).
        a2a_client_broken: A2A CLIENT spans without a SERVER child.
        late: per trace, a late fragment of a trace that had already completed.
        evicted: per trace, completed early because the open-trace table was full.
        duplicates: spans dropped as duplicates of an earlier ``(trace_id, span_id)``.
        completed_at: receiver time of completion.
        root_agent: per trace, the agent the run belongs to (the root span's agent or, when
            it has none, its Resource's main agent; else the top-most agent under the root;
            else the root's ``service.name``; ``""`` only for traces without a root).
        agent_pending: per span, its agent was left to assembly (see
            :func:`._batch.agent_pending`): span-level metrics and baselines take these rows
            at completion, every other row when its batch arrived.
    """

    spans: SpanBatch
    offsets: I64
    trace_no: I64
    parent: I64
    root: I64
    orphan: BoolA
    a2a_client_broken: BoolA
    late: BoolA
    evicted: BoolA
    duplicates: int
    completed_at: float
    root_agent: npt.NDArray[np.object_] = dataclasses.field(
        default_factory=lambda: np.empty(0, dtype=object)
    )
    agent_pending: BoolA = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=np.bool_))

    @property
    def n_traces(self) -> int:
        """Number of traces in the set."""
        return int(self.offsets.shape[0] - 1)

    @property
    def a2a_server_orphan(self) -> BoolA:
        """Orphan SERVER spans of A2A calls (their CLIENT never arrived)."""
        s = self.spans
        m: BoolA = self.orphan & (s.kind == SPAN_KIND_SERVER) & (s.a2a_method != "")
        return m

    def trace_id_hex(self, t: int) -> str:
        """Hex trace ID of trace ``t``."""
        return bytes(self.spans.trace_id[int(self.offsets[t])]).hex()


class _Part:
    """One added batch, grouped by trace once: trace ``g``'s rows are
    ``order[bounds[g]:bounds[g + 1]]``.  Shared by every trace of the batch, so an open trace
    costs a reference and an int per batch it was seen in, not an index array each."""

    __slots__ = ("batch", "bounds", "order")

    def __init__(self, batch: SpanBatch, order: I64, bounds: I64) -> None:
        self.batch = batch
        self.order = order
        self.bounds = bounds


class _Open:
    """An open trace: its first part inline (most traces arrive in one batch), more in a list.

    ~120 bytes per trace instead of ~350 for a list of ``(batch, index array)`` tuples: the
    open-trace table (50,000 by default) and the traces evicted between two ticks (~20,000 in
    RC-13's flood) are the largest per-trace state of the analysis.
    """

    __slots__ = ("g", "last_seen", "late", "more", "part")

    def __init__(self, part: _Part, g: int, now: float) -> None:
        self.part = part
        self.g = g
        self.more: list[tuple[_Part, int]] | None = None
        self.last_seen = now
        self.late = False

    def parts(self) -> list[tuple[_Part, int]]:
        """Every ``(part, trace number in the part)`` of the trace, in arrival order."""
        first = (self.part, self.g)
        return [first] if self.more is None else [first, *self.more]


def ids_to_u64(ids: npt.NDArray[np.object_]) -> U64:
    """8-byte span IDs as uint64 (``b""`` → 0, which is never a valid span ID)."""
    n = ids.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    items = ids.tolist()
    joined = b"".join(items)
    if len(joined) != 8 * n:  # roots (b""): zero; then any malformed length is padded/cut
        items = [x or _ZERO_ID for x in items]
        joined = b"".join(items)
        if len(joined) != 8 * n:
            joined = b"".join(bytes(x).ljust(8, b"\0")[:8] for x in items)
    return np.frombuffer(joined, dtype=">u8").astype(np.uint64)


def _mix(trace_no: I64, sid: U64) -> U64:
    # One 64-bit key per (trace, span): collisions are checked afterwards, never trusted.
    with np.errstate(over="ignore"):
        k: U64 = sid ^ (trace_no.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
    return k


class TraceAssembler:
    """Groups spans into traces and releases them after ``decision_wait`` of quiet.

    Counters (read by the metrics exporter): ``completed``, ``evicted``, ``late_spans``,
    ``duplicate_spans``, ``orphans`` (by reason).
    """

    def __init__(self, config: AssemblyConfig) -> None:
        self.config = config
        # Open traces in first-seen order (eviction takes the oldest) and, separately, in
        # last-touched order (completion takes the quietest).  One entry per open trace in
        # each, so both are bounded by ``max_open_traces``: a deque with one entry per touch
        # held a tuple, a float and the trace-ID bytes per *batch* a trace was seen in, for
        # ``decision_wait`` — 100,000 entries (~11 MiB) under RC-13's flood of unique traces.
        self._open: dict[bytes, _Open] = {}
        self._quiet: collections.OrderedDict[bytes, _Open] = collections.OrderedDict()
        self._recent: collections.OrderedDict[bytes, float] = collections.OrderedDict()
        self._evicted_pending: list[_Open] = []
        self.completed = 0
        self.evicted = 0
        self.late_spans = 0
        self.duplicate_spans = 0
        self.orphans: collections.Counter[str] = collections.Counter()

    @property
    def open_traces(self) -> int:
        """Traces currently held open."""
        return len(self._open)

    def add(self, batch: SpanBatch, now: float) -> None:
        """Take a batch's spans into the open-trace table."""
        if batch.n == 0:
            return
        tid = batch.trace_id
        _, first, inverse = np.unique(tid.astype("S16"), return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(first.shape[0] + 1))
        part = _Part(batch, order, bounds)
        sizes = np.diff(bounds).tolist()
        for g, f in enumerate(first.tolist()):
            key = bytes(tid[f])
            tr = self._open.get(key)
            if tr is None:
                tr = _Open(part, g, now)
                if key in self._recent:
                    tr.late = True
                self._open[key] = tr
                self._quiet[key] = tr
            else:
                if tr.more is None:
                    tr.more = [(part, g)]
                else:
                    tr.more.append((part, g))
                tr.last_seen = now
                self._quiet.move_to_end(key)
            if tr.late:
                self.late_spans += sizes[g]
        while len(self._open) > self.config.max_open_traces:
            key = next(iter(self._open))
            self._evicted_pending.append(self._open.pop(key))
            del self._quiet[key]
            self.evicted += 1
            self._remember(key, now)

    def collect(self, now: float, *, flush: bool = False) -> CompletedTraces | None:
        """Traces quiet for ``decision_wait`` (all open traces when ``flush``), evicted ones
        included; ``None`` when there are none."""
        done: list[_Open] = self._evicted_pending
        evicted_n = len(done)
        self._evicted_pending = []
        wait = self.config.decision_wait
        if flush:
            done.extend(self._open.values())
            for key in self._open:
                self._remember(key, now)
            self._open.clear()
            self._quiet.clear()
        else:
            # Last-touched order is last_seen order (receiver time never goes back), so the
            # quiet traces are a prefix: the same set, in the same order, the per-touch log gave.
            quiet = self._quiet
            while quiet:
                key, tr = next(iter(quiet.items()))
                if tr.last_seen + wait > now:
                    break
                quiet.popitem(last=False)
                del self._open[key]
                done.append(tr)
                self._remember(key, now)
        self._expire_recent(now)
        if not done:
            return None
        self.completed += len(done) - evicted_n
        evicted = np.zeros(len(done), dtype=np.bool_)
        evicted[:evicted_n] = True
        return self._build(done, evicted, now)

    # -- internals ---------------------------------------------------------------------------

    def _remember(self, key: bytes, now: float) -> None:
        if self.config.completed_memory == 0:
            return
        self._recent[key] = now
        self._recent.move_to_end(key)
        while len(self._recent) > self.config.completed_memory:
            self._recent.popitem(last=False)

    def _expire_recent(self, now: float) -> None:
        ttl = self.config.completed_ttl
        while self._recent:
            _key, t = next(iter(self._recent.items()))
            if t + ttl > now:
                break
            self._recent.popitem(last=False)

    def _build(self, done: Sequence[_Open], evicted: BoolA, now: float) -> CompletedTraces:
        # Gather rows per source batch (one take per batch), then group rows by trace.
        by_part: dict[int, tuple[_Part, list[int], list[int]]] = {}
        for t, tr in enumerate(done):
            for p, g in tr.parts():
                entry = by_part.setdefault(id(p), (p, [], []))
                entry[1].append(g)
                entry[2].append(t)
        # Rows are addressed in the concatenation of the source batches (concatenating object
        # columns is a copy; a fancy take costs ~6x more per element), so the columns are
        # gathered once, in final order, instead of per batch and then again after sorting.
        sources, rows, numbers = [], [], []
        base = 0
        for p, gs, ts in by_part.values():
            sources.append(p.batch)
            gi = np.asarray(gs, dtype=np.int64)
            starts = p.bounds[gi]
            lens = p.bounds[gi + 1] - starts
            # Each trace's slice of ``order``, all traces of the part in one gather.
            ends = np.cumsum(lens)
            pos = np.arange(int(ends[-1]) if ends.shape[0] else 0) + np.repeat(
                starts - ends + lens, lens
            )
            rows.append(p.order[pos] + base)
            numbers.append(np.repeat(np.asarray(ts, dtype=np.int64), lens))  # one call per batch
            base += p.batch.n
        row = np.concatenate(rows)
        trace_no = np.concatenate(numbers)
        sid = ids_to_u64(_column(sources, "span_id")[row])
        # Sort by trace, then by key: groups traces and puts duplicates next to each other.
        key = _mix(trace_no, sid)
        order = np.lexsort((key, trace_no))
        trace_no, key, sid = trace_no[order], key[order], sid[order]
        keep = np.ones(order.shape[0], dtype=np.bool_)
        keep[1:] = (key[1:] != key[:-1]) | (trace_no[1:] != trace_no[:-1]) | (sid[1:] != sid[:-1])
        dups = int((~keep).sum())
        self.duplicate_spans += dups
        sel = order[keep]
        spans, trace_no, key, sid = _gather(sources, row[sel]), trace_no[keep], key[keep], sid[keep]
        n_tr = len(done)
        offsets = np.searchsorted(trace_no, np.arange(n_tr + 1)).astype(np.int64)

        # Parent links: look up (trace, parent_span_id) among (trace, span_id), vectorized.
        pid = ids_to_u64(spans.parent_span_id)
        has_parent = pid != 0
        by_key = np.argsort(key, kind="stable")
        sorted_keys = key[by_key]
        pkey = _mix(trace_no, pid)
        pos = np.searchsorted(sorted_keys, pkey)
        pos_c = np.minimum(pos, max(key.shape[0] - 1, 0))
        cand = by_key[pos_c] if key.shape[0] else pos_c
        found = (
            has_parent
            & (pos < key.shape[0])
            & (sorted_keys[pos_c] == pkey)
            & (trace_no[cand] == trace_no)
            & (sid[cand] == pid)
        )
        parent = np.where(found, cand, -1).astype(np.int64)
        parent[parent == np.arange(parent.shape[0])] = -1  # self-parent (B10)
        orphan = has_parent & (parent < 0)

        late = np.array([tr.late for tr in done], dtype=np.bool_)
        # A late fragment's parents are normally in the part that already completed: its
        # missing parents are not orphans (they were judged with the completed part).
        orphan &= ~late[trace_no]

        # Roots: the longest parentless span of each trace.
        is_root = ~has_parent
        dur = spans.end_ns - spans.start_ns
        root = np.full(n_tr, -1, dtype=np.int64)
        ridx = np.nonzero(is_root)[0]
        if ridx.shape[0]:
            o = ridx[np.lexsort((-dur[ridx], trace_no[ridx]))]
            tn = trace_no[o]
            firsts = np.ones(o.shape[0], dtype=np.bool_)
            firsts[1:] = tn[1:] != tn[:-1]
            root[tn[firsts]] = o[firsts]

        # A2A: CLIENT spans with no SERVER child; SERVER orphans are flagged by `orphan`.
        is_a2a = spans.a2a_method != ""
        srv = is_a2a & (spans.kind == SPAN_KIND_SERVER) & (parent >= 0)
        has_srv_child = np.zeros(spans.n, dtype=np.bool_)
        has_srv_child[parent[srv]] = True
        client_broken = is_a2a & (spans.kind == SPAN_KIND_CLIENT) & ~has_srv_child

        a2a_srv_orphans = int((orphan & is_a2a & (spans.kind == SPAN_KIND_SERVER)).sum())
        self.orphans[ORPHAN_A2A_SERVER] += a2a_srv_orphans
        self.orphans[ORPHAN_MISSING_PARENT] += int(orphan.sum()) - a2a_srv_orphans
        self.orphans[ORPHAN_A2A_CLIENT] += int(client_broken.sum())

        pending = agent_pending(spans)
        # An A2A CLIENT span that does not name its peer (no Agent Card on the client side):
        # the peer is the agent its SERVER child declares (own name, else its process's main
        # agent) — before inheritance, which would give the SERVER span the caller's agent.
        peer = spans.a2a_peer
        srv_idx = np.nonzero(srv)[0]
        if srv_idx.shape[0]:
            server_agent = np.where(
                spans.agent_name[srv_idx] != "",
                spans.agent_name[srv_idx],
                spans.main_agent[srv_idx],
            )
            cli = parent[srv_idx]
            fill = (peer[cli] == "") & (spans.kind[cli] == SPAN_KIND_CLIENT) & (server_agent != "")
            if fill.any():
                peer = peer.copy()
                peer[cli[fill]] = server_agent[fill]
        own = spans.agent_name
        if ((spans.kind == SPAN_KIND_SERVER) & (own == "") & (spans.main_agent != "")).any():
            own = own.copy()
            _server_main_agents(spans.kind, own, spans.main_agent)
        agent = inherit(own, parent)
        # No agent above: the process's declared main agent (zero-code set-ups declare it on
        # the Resource only), after inheritance so a caller's agent still wins.
        unnamed = agent == ""
        if unnamed.any():
            agent = agent.copy()
            agent[unnamed] = spans.main_agent[unnamed]
        spans = spans.with_columns(
            a2a_peer=peer,
            agent_name=agent,
            conversation_id=inherit(spans.conversation_id, parent),
        )
        # The agent a run belongs to: the root's, else the top-most agent below a root that
        # has none (a workflow or HTTP root span) — the first such span by start time.
        has_parent_agent = (parent >= 0) & (agent[np.maximum(parent, 0)] != "")
        top = np.nonzero((agent != "") & ~has_parent_agent)[0]
        root_agent = np.full(n_tr, "", dtype=object)
        if top.shape[0]:
            o = top[np.lexsort((spans.start_ns[top], trace_no[top]))]
            tn = trace_no[o]
            firsts = np.ones(o.shape[0], dtype=np.bool_)
            firsts[1:] = tn[1:] != tn[:-1]
            root_agent[tn[firsts]] = agent[o[firsts]]
        has_root = root >= 0
        root_own = np.where(has_root, agent[np.maximum(root, 0)], "")
        root_agent = np.where(root_own != "", root_own, root_agent).astype(object)
        # A run nobody named (a workflow of a process that declares no agent) is still
        # somebody's: its root's service, so reports and cost keys never read agent ``.
        root_service = np.where(has_root, spans.service_name[np.maximum(root, 0)], "")
        root_agent = np.where(root_agent != "", root_agent, root_service).astype(object)
        return CompletedTraces(
            spans=spans,
            offsets=offsets,
            trace_no=trace_no,
            parent=parent,
            root=root,
            orphan=orphan,
            a2a_client_broken=client_broken,
            late=late,
            evicted=evicted,
            duplicates=dups,
            completed_at=now,
            root_agent=root_agent,
            agent_pending=pending,
        )


def _column(sources: Sequence[SpanBatch], name: str) -> npt.NDArray[Any]:
    """One column of the concatenation of ``sources``."""
    if len(sources) == 1:
        col: npt.NDArray[Any] = getattr(sources[0], name)
        return col
    return np.concatenate([getattr(b, name) for b in sources])


def _gather(sources: Sequence[SpanBatch], rows: I64) -> SpanBatch:
    """``SpanBatch.concat(sources).take(rows)``, one column at a time: the concatenation of
    every column at once was a full extra copy of the completed rows (~5 MB for the ~20,000
    traces a tick completes under RC-13's flood) next to the result."""
    if len(sources) == 1:
        return sources[0].take(rows)
    cols = {c: _column(sources, c)[rows] for c in COLUMNS}
    return SpanBatch(
        **cols,
        received_at=max(b.received_at for b in sources),
        analysed_fraction=min(b.analysed_fraction for b in sources),
    )


def inherit(values: npt.NDArray[np.object_], parent: I64) -> npt.NDArray[np.object_]:
    """Fill empty strings from the nearest ancestor that has a value (pointer jumping)."""
    has = values != ""
    if has.all() or values.shape[0] == 0:
        return values
    ptr = np.where(has, np.arange(values.shape[0]), parent)
    for _ in range(_MAX_DEPTH):
        valid = np.nonzero(ptr >= 0)[0]
        pending = valid[~has[ptr[valid]]]
        if pending.shape[0] == 0:
            break
        ptr[pending] = ptr[ptr[pending]]
    resolved = (ptr >= 0) & has[np.maximum(ptr, 0)]
    out: npt.NDArray[np.object_] = values.copy()
    fill = resolved & ~has
    out[fill] = values[ptr[fill]]
    return out
