# SPDX-License-Identifier: Apache-2.0
"""Critical path of assembled traces (Jaeger's last-finishing-child walk, self-time aware).

The walk (jaeger-ui#1288): start at the root with the synchronisation point at its end; take
the child that finishes last *before* the point; the gap between that child's end and the point
is the parent's own time on the path; descend into the child; continue in the parent from the
child's start.  When no child is left, the remainder down to the span's start is the span's
own time.  Children are clipped to their parent's (clipped) interval, children entirely
outside it are ignored, and parallel siblings that overlap the chosen child are off the path.
Ties in end time go to the child that started first (it covers more of the parent).

Each span's result is the time it *itself* is on the path (not its children's), so the values
of one trace sum to the root's duration.  The walk is iterative (no recursion limit on deep
traces) and visits each span at most once (cycles from bad parent links cannot loop).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["children_index", "critical_path_times"]

I64 = npt.NDArray[np.int64]


def children_index(parent: I64) -> tuple[I64, I64]:
    """CSR children lists: the children of ``i`` are ``flat[ptr[i]:ptr[i + 1]]``.

    Args:
        parent: index of each span's parent in the same arrays, -1 for none.
    """
    n = parent.shape[0]
    has = parent >= 0
    kids = np.nonzero(has)[0]
    order = kids[np.argsort(parent[kids], kind="stable")]
    counts = np.bincount(parent[has], minlength=n) if n else np.zeros(0, dtype=np.int64)
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    return ptr, order.astype(np.int64)


def critical_path_times(start: I64, end: I64, parent: I64, roots: I64) -> I64:
    """Nanoseconds each span spends *itself* on the critical path of its trace.

    Args:
        start: span start times (ns).
        end: span end times (ns); an end before the start counts as a zero-length span.
        parent: index of each span's parent, -1 for none.
        roots: the spans to walk from (one per trace); spans not reachable get 0.

    Returns:
        int64 array, one value per span.
    """
    n = start.shape[0]
    cp = [0] * n
    if n == 0 or roots.shape[0] == 0:
        return np.zeros(n, dtype=np.int64)
    ptr_a, flat_a = children_index(parent)
    ptr = ptr_a.tolist()
    flat = flat_a.tolist()
    st = start.tolist()
    en = np.maximum(end, start).tolist()
    visited = [False] * n
    for root in roots.tolist():
        if visited[root]:
            continue
        visited[root] = True
        # frame: [span, lo, cur, sorted kids as (-eff_end, eff_start, idx), position]
        stack = [
            [root, st[root], en[root], _sorted_kids(root, st[root], en[root], ptr, flat, st, en), 0]
        ]
        while stack:
            frame = stack[-1]
            span, lo, cur, kids, pos = frame
            chosen = None
            while pos < len(kids):
                neg_end, k_start, k = kids[pos]
                pos += 1
                if -neg_end <= cur and not visited[k]:
                    chosen = (-neg_end, k_start, k)
                    break
            frame[4] = pos
            if chosen is None:
                cp[span] += cur - lo
                stack.pop()
                continue
            k_end, k_start, k = chosen
            cp[span] += cur - k_end
            frame[2] = k_start
            visited[k] = True
            if ptr[k] == ptr[k + 1]:
                cp[k] += k_end - k_start  # a leaf (most spans): its whole clipped span, no frame
            else:
                stack.append(
                    [k, k_start, k_end, _sorted_kids(k, k_start, k_end, ptr, flat, st, en), 0]
                )
    return np.asarray(cp, dtype=np.int64)


def _sorted_kids(
    span: int, lo: int, hi: int, ptr: list[int], flat: list[int], st: list[int], en: list[int]
) -> list[tuple[int, int, int]]:
    """Children clipped to ``[lo, hi]``, non-empty ones, latest end first (ties: earliest start),
    as ``(-end, start, index)`` so that the plain tuple sort orders them (no key function)."""
    a, b = ptr[span], ptr[span + 1]
    if a == b:
        return []  # a leaf: most spans
    out = []
    for k in flat[a:b]:
        ks = st[k] if st[k] > lo else lo
        ke = en[k] if en[k] < hi else hi
        if ke > ks:
            out.append((-ke, ks, k))
    out.sort()
    return out
