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
    if n == 0 or roots.shape[0] == 0:
        return np.zeros(n, dtype=np.int64)
    ptr, flat = children_index(parent)
    en = np.maximum(end, start)
    cp = np.zeros(n, dtype=np.int64)
    visited = np.zeros(n, dtype=np.bool_)
    # Roots in first-seen order, each walked once.
    _, first = np.unique(roots, return_index=True)
    level = roots[np.sort(first)].astype(np.int64)
    visited[level] = True
    lo, hi = start[level].copy(), en[level].copy()
    cp[level] = hi - lo
    # Level by level, every parent of a level at once (see _level); narrow levels (deep
    # chains) go to the per-span walk, which costs less than a round of array calls.
    while level.shape[0] >= _VECTOR_MIN:
        level, lo, hi = _level(level, lo, hi, start, en, ptr, flat, visited, cp)
    if level.shape[0]:
        _walk(level, lo, hi, start, en, ptr, flat, visited, cp)
    return cp


# Below this many spans on a level the array rounds cost more than the per-span walk.
_VECTOR_MIN = 8


def _level(
    level: I64, lo: I64, hi: I64, start: I64, en: I64, ptr: I64, flat: I64,
    visited: npt.NDArray[np.bool_], cp: I64,
) -> tuple[I64, I64, I64]:  # fmt: skip
    """One level of the walk for every parent in ``level`` (on the path, with their clipped
    intervals ``[lo, hi]``): choose their children on the path, charge the parents, and return
    the chosen children with their clipped intervals (the next level).

    Per parent the walk is: children clipped to the parent, empty ones dropped, ordered by end
    descending (ties: earliest start, then index); the first is chosen; after a chosen child
    ``c`` the next chosen is the first later child ending at or before ``c``'s start.  That
    "next" is one ``searchsorted`` per level; the chain from the first child is followed by
    pointer doubling.  A parent's own time is its interval minus its chosen children's.
    """
    counts = ptr[level + 1] - ptr[level]
    total = int(counts.sum())
    if total == 0:
        return level[:0], lo[:0], hi[:0]
    # Children of the level, each with its parent's position in the level.
    seg = np.repeat(np.arange(level.shape[0]), counts)
    offs = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    kid = flat[np.repeat(ptr[level], counts) + offs]
    ks = np.maximum(start[kid], lo[seg])
    ke = np.minimum(en[kid], hi[seg])
    ok = (ke > ks) & ~visited[kid]
    kid, seg, ks, ke = kid[ok], seg[ok], ks[ok], ke[ok]
    if kid.shape[0] == 0:
        return level[:0], lo[:0], hi[:0]
    order = np.lexsort((kid, ks, -ke, seg))
    kid, seg, ks, ke = kid[order], seg[order], ks[order], ke[order]
    m = kid.shape[0]
    # Times as ranks, so (segment, -end) packs into one sortable int64.
    times, inv = np.unique(np.concatenate((ks, ke)), return_inverse=True)
    inv = inv.reshape(-1)
    r_start, r_end = inv[:m], inv[m:]
    span = np.int64(times.shape[0] + 1)
    key = seg * span + (span - 1 - r_end)  # ascending within a segment = end descending
    q = seg * span + (span - 1 - r_start)  # first later child with end <= this start
    nxt = np.searchsorted(key, q, side="left")
    nxt_c = np.minimum(nxt, m - 1)
    nxt = np.where((nxt < m) & (seg[nxt_c] == seg), nxt, -1)
    # Chain membership from each segment's first child, by pointer doubling.
    on = np.zeros(m, dtype=np.bool_)
    heads = np.ones(m, dtype=np.bool_)
    heads[1:] = seg[1:] != seg[:-1]
    on[heads] = True
    jump = nxt
    while True:
        src = np.nonzero(on & (jump >= 0))[0]
        if src.shape[0]:
            on[jump[src]] = True
        live = jump >= 0
        if not live.any():
            break
        jump = np.where(live, jump[np.maximum(jump, 0)], -1)
    kid, seg, ks, ke = kid[on], seg[on], ks[on], ke[on]
    dur = ke - ks
    # Exact integer sums per parent (seg is sorted): a parent's own time is what is left.
    firsts = np.nonzero(np.concatenate(([True], seg[1:] != seg[:-1])))[0]
    cp[level[seg[firsts]]] -= np.add.reduceat(dur, firsts)
    visited[kid] = True
    cp[kid] = dur
    return kid, ks, ke


def _walk(
    level: I64, lo: I64, hi: I64, start: I64, en: I64, ptr_a: I64, flat_a: I64,
    visited_a: npt.NDArray[np.bool_], cp_a: I64,
) -> None:  # fmt: skip
    """The per-span walk from spans already on the path (``cp`` holds their full interval)."""
    ptr = ptr_a.tolist()
    flat = flat_a.tolist()
    st = start.tolist()
    ens = en.tolist()
    visited = visited_a.tolist()
    cp = cp_a.tolist()
    for root, r_lo, r_hi in zip(level.tolist(), lo.tolist(), hi.tolist(), strict=True):
        cp[root] -= r_hi - r_lo  # the walk below adds the root's own time
        # frame: [span, lo, cur, sorted kids as (-eff_end, eff_start, idx), position]
        stack = [[root, r_lo, r_hi, _sorted_kids(root, r_lo, r_hi, ptr, flat, st, ens), 0]]
        while stack:
            frame = stack[-1]
            span, flo, cur, kids, pos = frame
            chosen = None
            while pos < len(kids):
                neg_end, k_start, k = kids[pos]
                pos += 1
                if -neg_end <= cur and not visited[k]:
                    chosen = (-neg_end, k_start, k)
                    break
            frame[4] = pos
            if chosen is None:
                cp[span] += cur - flo
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
                    [k, k_start, k_end, _sorted_kids(k, k_start, k_end, ptr, flat, st, ens), 0]
                )
    cp_a[:] = cp


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
