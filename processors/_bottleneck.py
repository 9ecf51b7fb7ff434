# SPDX-License-Identifier: Apache-2.0
"""Fleet-level bottleneck analysis over completed traces, as mergeable windowed state.

Per completed set: the critical path of every complete trace (:mod:`._critical_path`), then
sums per ``(agent, kind, name)`` — the time each agent's tools, models, A2A hops and own code
spend on critical paths — plus latency histograms per operation, cost roll-ups per agent and
model (inference spans only, so nothing is counted twice), and per session.

State lives in time buckets of receiver time (``bucket`` seconds, the last ``window`` kept), and
holds only counts, sums and fixed log-bucket histograms, so :meth:`BottleneckState.merge` of
the states of N shards (traces partitioned by trace ID) gives exactly the single-instance
state; percentiles come from the merged histograms.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import math
from typing import Any

import numpy as np
import numpy.typing as npt

from ._assembly import CompletedTraces
from ._batch import KIND_A2A, KIND_AGENT, KIND_MODEL, KIND_TOOL, analysis_keys, group_keys
from ._critical_path import critical_path_times

__all__ = ["Bottleneck", "BottleneckState", "SlowSpan", "latency_bin", "quantile_from_hist"]

Key = tuple[str, str, str]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
# Per-bucket latency histograms are int32: a 10-s bucket's count per key fits with room to
# spare, and with max_keys busy keys the window holds (window / bucket) x max_keys rows of 162
# bins — ~78 MiB at int64 for 2,000 keys over 30 buckets, half that now.
Hist = npt.NDArray[np.int32]

# Log-spaced latency bins: bin 0 below 100 µs, bin k covers [1e-4·γ^(k-1), 1e-4·γ^k), γ = 1.15
# (±7 % relative error), last bin open-ended (> ~5·10^5 s).
_GAMMA = 1.15
_LAT_MIN = 1e-4
LAT_BINS = 162
_LOG_GAMMA = math.log(_GAMMA)
_TOP_TRACES = 20

_KIND_WORDS = {KIND_TOOL: "tool", KIND_MODEL: "model", KIND_A2A: "A2A hop to", KIND_AGENT: "agent"}


def latency_bin(seconds: F64) -> I64:
    """Histogram bin of each duration."""
    with np.errstate(divide="ignore"):
        k = np.floor(np.log(np.maximum(seconds, 1e-12) / _LAT_MIN) / _LOG_GAMMA) + 1
    out: I64 = np.clip(k, 0, LAT_BINS - 1).astype(np.int64)
    return out


def quantile_from_hist(hist: npt.NDArray[np.integer[Any]], q: float) -> float:
    """Upper edge of the bin holding quantile ``q`` (0 for an empty histogram)."""
    total = int(hist.sum())
    if total == 0:
        return 0.0
    k = int(np.searchsorted(np.cumsum(hist), math.ceil(q * total)))
    return float(_LAT_MIN * _GAMMA ** min(k, LAT_BINS - 1))


@dataclasses.dataclass
class _Bucket:
    cp: dict[Key, list[float]] = dataclasses.field(default_factory=dict)  # [seconds, traces]
    cp_total: float = 0.0
    traces: int = 0
    hist: dict[Key, Hist] = dataclasses.field(default_factory=dict)
    errors: dict[Key, int] = dataclasses.field(default_factory=dict)
    cost: dict[tuple[str, str], list[float]] = dataclasses.field(default_factory=dict)
    top: list[tuple[float, str, str]] = dataclasses.field(default_factory=list)

    def merge(self, o: _Bucket) -> None:
        for k, v in o.cp.items():
            cur = self.cp.setdefault(k, [0.0, 0.0])
            cur[0] += v[0]
            cur[1] += v[1]
        self.cp_total += o.cp_total
        self.traces += o.traces
        for k, h in o.hist.items():
            if k in self.hist:
                self.hist[k] = self.hist[k] + h
            else:
                self.hist[k] = h.copy()
        for k, e in o.errors.items():
            self.errors[k] = self.errors.get(k, 0) + e
        for k2, c in o.cost.items():
            cur = self.cost.setdefault(k2, [0.0] * 5)
            for i in range(5):
                cur[i] += c[i]
        for t in o.top:
            _push_top(self.top, t)


def _push_top(top: list[tuple[float, str, str]], item: tuple[float, str, str]) -> None:
    if len(top) < _TOP_TRACES:
        heapq.heappush(top, item)
    elif item > top[0]:
        heapq.heapreplace(top, item)


@dataclasses.dataclass(frozen=True)
class Bottleneck:
    """One ``(agent, kind, name)`` and its share of critical-path time in the window."""

    agent: str
    kind: str
    name: str
    share: float
    seconds: float
    traces: int
    total_traces: int
    window: float

    def explanation(self) -> str:
        """Plain-language sentence with the figures."""
        what = f"{_KIND_WORDS.get(self.kind, self.kind)} `{self.name}`"
        if self.kind == KIND_AGENT:
            what = f"agent `{self.agent}`'s own work"
        else:
            what += f" under agent `{self.agent}`"
        mins = self.window / 60
        span = f"{mins:g} min" if mins >= 1 else f"{self.window:g} s"
        return (
            f"{what} is {self.share:.0%} of critical-path time across {self.total_traces} "
            f"traces in the last {span} (on the path in {self.traces} of them, "
            f"{self.seconds:.1f} s in total)"
        )


@dataclasses.dataclass(frozen=True)
class SlowSpan:
    """A span far slower than its operation's recent p95."""

    agent: str
    kind: str
    name: str
    seconds: float
    p95: float
    trace_id: str


class BottleneckState:
    """Windowed, mergeable aggregates of completed traces."""

    def __init__(
        self, *, bucket: float = 10.0, window: float = 300.0, max_keys: int = 2000,
        max_sessions: int = 10_000,
    ) -> None:  # fmt: skip
        self.bucket = bucket
        self.window = window
        self.max_keys = max_keys
        self.max_sessions = max_sessions
        self._buckets: dict[int, _Bucket] = {}
        # Keys admitted in the window -> last bucket number they were seen in.  The cap applies to
        # the whole window, not per bucket: a per-bucket cap let every 10 s bucket fill its own
        # max_keys entries (and an uncapped cost table) under name churn, i.e. 30 x the state of
        # one bucket, growing for a whole window (RC-12).  Keys leave when their last bucket does.
        self._keys: dict[Key, int] = {}
        self._cost_keys: dict[tuple[str, str], int] = {}
        self.sessions: collections.OrderedDict[str, list[float]] = collections.OrderedDict()
        self.sessions_evicted = 0
        #: Some session totals were summed from sampled spans (estimates, see _sampling.py).
        self.sessions_sampled = False
        self.keys_overflowed = 0

    # -- ingest -------------------------------------------------------------------------------

    def _bucket_for(self, now: float) -> _Bucket:
        b = int(now // self.bucket)
        cur = self._buckets.get(b)
        if cur is None:
            cur = self._buckets[b] = _Bucket()
            horizon = int((now - self.window) // self.bucket)
            for old in [k for k in self._buckets if k <= horizon]:
                del self._buckets[old]
            regs: tuple[dict[Any, int], ...] = (self._keys, self._cost_keys)
            for reg in regs:
                for k in [k for k, last in reg.items() if last <= horizon]:
                    del reg[k]
        return cur

    def _admit(self, reg: dict[Any, int], key: Any, bucket_no: int, overflow: Any) -> Any:
        """``key`` if it is (or can become) one of the window's ``max_keys``, else ``overflow``."""
        if key in reg or len(reg) < self.max_keys:
            reg[key] = bucket_no
            return key
        self.keys_overflowed += 1
        return overflow

    def add(self, traces: CompletedTraces, now: float) -> tuple[I64, F64]:
        """Analyse a completed set at receiver time ``now``.

        Returns:
            ``(cp_ns per span, cost per trace)`` for the other analyses.
        """
        s = traces.spans
        b = self._bucket_for(now)
        bno = int(now // self.bucket)
        ok = (traces.root >= 0) & ~traces.late
        roots = traces.root[ok]
        cp = critical_path_times(s.start_ns, s.end_ns, traces.parent, roots)
        ak = analysis_keys(s)
        keys, inv = ak.keys, ak.inv
        g = len(keys)
        # Admission first: every key maps to its slot (itself or its kind's overflow key), so
        # the per-key arrays below have at most max_keys + 5 rows.  Histograms over every key
        # of a completed set were g x 162 int64: 26 MiB (and a temporary as large) for the
        # ~20,000 unique keys one tick completes in RC-13's flood.
        slot_of: dict[Key, int] = {}
        slot_keys: list[Key] = []
        slot = np.empty(g, dtype=np.int64)
        for k, key in enumerate(keys):
            kh: Key = self._admit(self._keys, key, bno, ("__overflow__", key[1], "__overflow__"))
            j = slot_of.get(kh)
            if j is None:
                j = slot_of[kh] = len(slot_keys)
                slot_keys.append(kh)
            slot[k] = j
        ns = len(slot_keys)
        # Critical path: seconds per key and number of traces in which the key is on the path
        # (per key, then per slot: an overflow slot counts each of its keys' traces).
        on = cp > 0
        cp_sec = np.bincount(slot[inv], weights=cp / 1e9, minlength=ns)
        pairs = np.unique(traces.trace_no[on] * max(g, 1) + inv[on])
        cp_traces = np.bincount(slot[pairs % max(g, 1)], minlength=ns)
        b.cp_total += float(cp.sum()) / 1e9
        b.traces += int(ok.sum())
        # Latency histograms and errors per slot.
        dur = s.duration_s
        nb = LAT_BINS
        hist = np.bincount(slot[inv] * nb + latency_bin(dur), minlength=ns * nb).reshape(ns, nb)
        errs = np.bincount(slot[inv], weights=s.is_error, minlength=ns)
        for j, kh in enumerate(slot_keys):
            if cp_sec[j] > 0:
                cur = b.cp.setdefault(kh, [0.0, 0.0])
                cur[0] += float(cp_sec[j])
                cur[1] += float(cp_traces[j])
            row = b.hist.get(kh)
            if row is not None:
                row += hist[j].astype(np.int32)  # the bucket owns its rows (merges copy them)
            else:
                b.hist[kh] = hist[j].astype(np.int32)
            if errs[j]:
                b.errors[kh] = b.errors.get(kh, 0) + int(errs[j])
        # Cost roll-ups: inference spans only.
        inf = s.is_inference
        trace_cost: F64 = np.bincount(
            traces.trace_no, weights=np.where(inf, s.cost, 0.0), minlength=traces.n_traces
        ).astype(np.float64)
        idx = np.nonzero(inf)[0]
        if idx.shape[0]:
            ckeys, cinv = group_keys(s.agent_name[idx], s.request_model[idx])
            cg = len(ckeys)
            # Horvitz-Thompson: under analysis sampling a span stands for ``weight`` arrivals,
            # so totals are estimates of all traffic (weight 1 when every trace is analysed).
            hw = s.weight[idx]
            sums = [
                np.bincount(cinv, weights=w, minlength=cg)
                for w in (
                    s.cost[idx] * hw,
                    s.input_tokens[idx] * hw,
                    s.output_tokens[idx] * hw,
                    hw,
                    s.unpriced[idx] * hw,
                )
            ]
            for k, ck in enumerate(ckeys):
                ckey = self._admit(
                    self._cost_keys, (ck[0], ck[1]), bno, ("__overflow__", "__overflow__")
                )
                cur = b.cost.setdefault(ckey, [0.0] * 5)
                for i in range(5):
                    cur[i] += float(sums[i][k])
            self._add_sessions(s.conversation_id[idx], s.cost[idx], now, hw)
        for t in np.nonzero(ok)[0].tolist():
            _push_top(
                b.top, (float(trace_cost[t]), traces.trace_id_hex(t), str(traces.root_agent[t]))
            )
        return cp, trace_cost

    def _add_sessions(
        self, conv: npt.NDArray[np.object_], cost: F64, now: float, weight: F64
    ) -> None:
        m = conv != ""
        if not m.any():
            return
        if not self.sessions_sampled and bool((weight[m] != 1.0).any()):
            self.sessions_sampled = True  # cumulative totals are estimates from now on
        keys, inv = group_keys(conv[m])
        sums = np.bincount(inv, weights=cost[m] * weight[m], minlength=len(keys))
        calls = np.bincount(inv, weights=weight[m], minlength=len(keys))
        for k, (c,) in enumerate(keys):
            cur = self.sessions.pop(c, None) or [0.0, 0.0, now]
            cur[0] += float(sums[k])
            cur[1] += float(calls[k])
            cur[2] = now
            self.sessions[c] = cur
        while len(self.sessions) > self.max_sessions:
            self.sessions.popitem(last=False)
            self.sessions_evicted += 1

    def merge(self, other: BottleneckState) -> None:
        """Add another shard's state (same bucket size)."""
        for k, ob in other._buckets.items():
            self._buckets.setdefault(k, _Bucket()).merge(ob)
        self.sessions_sampled |= other.sessions_sampled
        for c, v in other.sessions.items():
            cur = self.sessions.setdefault(c, [0.0, 0.0, v[2]])
            cur[0] += v[0]
            cur[1] += v[1]
            cur[2] = max(cur[2], v[2])

    # -- read ---------------------------------------------------------------------------------

    def _window(self, now: float, window: float | None = None) -> _Bucket:
        horizon = int((now - (window or self.window)) // self.bucket)
        acc = _Bucket()
        for k in sorted(self._buckets):
            if k > horizon:
                acc.merge(self._buckets[k])
        return acc

    def bottlenecks(
        self, now: float, *, min_share: float = 0.0, window: float | None = None
    ) -> list[Bottleneck]:
        """Keys ranked by share of critical-path time in the window (or a shorter one)."""
        w = self._window(now, window)
        if w.cp_total <= 0:
            return []
        out = [
            Bottleneck(
                k[0],
                k[1],
                k[2],
                v[0] / w.cp_total,
                v[0],
                int(v[1]),
                w.traces,
                window or self.window,
            )
            for k, v in w.cp.items()
            if v[0] / w.cp_total >= min_share
        ]
        out.sort(key=lambda x: (-x.share, x.agent, x.kind, x.name))
        return out

    def typical_cp(self, now: float) -> dict[Key, float]:
        """Mean critical-path seconds per trace of each key in the window."""
        w = self._window(now)
        return {k: v[0] / w.traces for k, v in w.cp.items()} if w.traces else {}

    def latency_p95(self, now: float, min_count: int) -> dict[Key, float]:
        """Window p95 per key with at least ``min_count`` observations."""
        w = self._window(now)
        return {
            k: quantile_from_hist(h, 0.95) for k, h in w.hist.items() if int(h.sum()) >= min_count
        }

    def slow_spans(
        self, traces: CompletedTraces, p95: dict[Key, float], factor: float, limit: int
    ) -> list[SlowSpan]:
        """Spans slower than ``factor`` × their key's p95 (the slowest ``limit`` of them)."""
        if not p95:
            return []
        s = traces.spans
        ak = analysis_keys(s)
        keys, inv = ak.keys, ak.inv
        thr = np.array([p95.get(k, math.inf) * factor for k in keys])
        base = np.array([p95.get(k, math.inf) for k in keys])
        dur = s.duration_s
        idx = np.nonzero(dur > thr[inv])[0]
        if idx.shape[0] == 0:
            return []
        ratio = dur[idx] / base[inv[idx]]
        idx = idx[np.argsort(-ratio, kind="stable")][:limit]
        return [
            SlowSpan(
                keys[inv[i]][0],
                keys[inv[i]][1],
                keys[inv[i]][2],
                float(dur[i]),
                float(base[inv[i]]),
                traces.trace_id_hex(int(traces.trace_no[i])),
            )
            for i in idx.tolist()
        ]

    def snapshot(self, now: float) -> dict[str, Any]:
        """JSON-ready window view: critical-path shares, latency percentiles, cost roll-ups."""
        w = self._window(now)
        ops = []
        for k, h in sorted(w.hist.items()):
            n = int(h.sum())
            ops.append(
                {
                    "agent": k[0], "kind": k[1], "name": k[2], "calls": n,
                    "errors": w.errors.get(k, 0),
                    "p50_seconds": quantile_from_hist(h, 0.5),
                    "p95_seconds": quantile_from_hist(h, 0.95),
                }
            )  # fmt: skip
        by_agent: dict[str, list[float]] = {}
        by_model = []
        for (agent, model), c in sorted(w.cost.items()):
            a = by_agent.setdefault(agent, [0.0] * 5)
            for i in range(5):
                a[i] += c[i]
            by_model.append(_cost_json({"agent": agent, "model": model}, c))
        return {
            "window_seconds": self.window,
            "traces": w.traces,
            "critical_path_seconds": w.cp_total,
            "bottlenecks": [
                dataclasses.asdict(x) | {"explanation": x.explanation()}
                for x in self.bottlenecks(now)
            ],
            "operations": ops,
            "cost_by_agent": [_cost_json({"agent": a}, c) for a, c in sorted(by_agent.items())],
            "cost_by_model": by_model,
            "top_traces_by_cost": [
                {"trace_id": t, "agent": a, "cost_usd": c}
                for c, t, a in sorted(w.top, reverse=True)
            ],
        }

    def session_rollups(self, limit: int = 50) -> list[dict[str, Any]]:
        """The most expensive sessions (conversation IDs) seen, cumulative."""
        top = heapq.nlargest(limit, self.sessions.items(), key=lambda kv: kv[1][0])
        return [{"conversation_id": c, "cost_usd": v[0], "calls": round(v[1]), "last_seen": v[2]}
                for c, v in top]  # fmt: skip


def _cost_json(head: dict[str, str], c: list[float]) -> dict[str, Any]:
    return head | {
        "cost_usd": c[0],
        "input_tokens": round(c[1]),
        "output_tokens": round(c[2]),
        "calls": round(c[3]),
        "unpriced_calls": round(c[4]),
    }
