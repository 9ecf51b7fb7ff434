# SPDX-License-Identifier: Apache-2.0
"""Critical path: hand-checked cases and a property test against a brute-force reference."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from otel_agents.processors._critical_path import critical_path_times


def _cp(spans: list[tuple[int, int, int]], root: int = 0) -> list[int]:
    start = np.array([s for s, _, _ in spans], dtype=np.int64)
    end = np.array([e for _, e, _ in spans], dtype=np.int64)
    parent = np.array([p for _, _, p in spans], dtype=np.int64)
    return critical_path_times(start, end, parent, np.array([root], dtype=np.int64)).tolist()


def _brute(spans: list[tuple[int, int, int]], root: int = 0) -> list[int]:
    """Reference: the last-finishing-child definition, by naive scanning with no sorting."""
    out = [0] * len(spans)
    kids = {i: [k for k, (_, _, p) in enumerate(spans) if p == i] for i in range(len(spans))}

    def walk(i: int, lo: int, hi: int, seen: set[int]) -> None:
        cur = hi
        while True:
            best = None
            for k in kids[i]:
                if k in seen:
                    continue
                ks, ke = max(spans[k][0], lo), min(max(spans[k][1], spans[k][0]), hi)
                if ke <= ks or ke > cur:
                    continue
                cand = (ke, -ks, -k)
                if best is None or cand > best[0]:
                    best = (cand, k, ks, ke)
            if best is None:
                out[i] += cur - lo
                return
            _, k, ks, ke = best
            out[i] += cur - ke
            seen.add(k)
            walk(k, ks, ke, seen)
            cur = ks

    s, e, _ = spans[root]
    walk(root, s, max(e, s), {root})
    return out


def test_sequential_children_share_the_path() -> None:
    """Two sequential children and the gaps around them are all on the path."""
    spans = [(0, 100, -1), (10, 40, 0), (50, 90, 0)]
    assert _cp(spans) == [30, 30, 40]


def test_parallel_children_only_last_finishing_counts() -> None:
    """Of two overlapping siblings, only the one finishing last is on the path."""
    spans = [(0, 100, -1), (10, 80, 0), (20, 90, 0)]
    # Path: root 90..100, child2 20..90, root 0..20; child1 overlaps child2 and is off the path.
    assert _cp(spans) == [30, 0, 70]


def test_child_overflowing_parent_is_clipped() -> None:
    """A child ending after its parent counts only up to the parent's end."""
    spans = [(0, 100, -1), (50, 150, 0)]
    assert _cp(spans) == [50, 50]


def test_deep_chain_does_not_recurse() -> None:
    """A 5000-deep chain is walked iteratively and sums to the root's duration."""
    n = 5000
    spans = [(i, 2 * n - i, i - 1) for i in range(n)]
    cp = _cp(spans)
    assert sum(cp) == 2 * n
    assert cp[-1] == 2


def test_cycle_in_parent_links_terminates() -> None:
    """A parent cycle unreachable from the root is ignored instead of looping."""
    spans = [(0, 10, -1), (1, 5, 2), (2, 6, 1)]
    assert _cp(spans) == [10, 0, 0]


@st.composite
def _trees(draw: st.DrawFn) -> list[tuple[int, int, int]]:
    n = draw(st.integers(min_value=1, max_value=30))
    spans: list[tuple[int, int, int]] = []
    for i in range(n):
        parent = -1 if i == 0 else draw(st.integers(min_value=0, max_value=i - 1))
        start = draw(st.integers(min_value=0, max_value=200))
        length = draw(st.integers(min_value=-5, max_value=120))  # negative: end before start
        spans.append((start, start + length, parent))
    return spans


@settings(max_examples=400, deadline=None)
@given(_trees())
def test_matches_brute_force_reference(spans: list[tuple[int, int, int]]) -> None:
    """Random trees (overlaps, overflowing and inverted spans) agree with the reference."""
    cp = _cp(spans)
    assert cp == _brute(spans)
    root_len = max(spans[0][1] - spans[0][0], 0)
    assert sum(cp) == root_len
    for (s, e, _), c in zip(spans, cp, strict=True):
        assert 0 <= c <= max(e - s, 0)


def test_many_traces_in_one_call() -> None:
    """Several roots in one call give each trace its own path."""
    start = np.array([0, 10, 0, 5], dtype=np.int64)
    end = np.array([100, 20, 50, 45], dtype=np.int64)
    parent = np.array([-1, 0, -1, 2], dtype=np.int64)
    cp = critical_path_times(start, end, parent, np.array([0, 2], dtype=np.int64))
    assert cp.tolist() == [90, 10, 10, 40]


@settings(max_examples=400, deadline=None)
@given(_trees())
def test_level_walk_matches_brute_force_reference(spans: list[tuple[int, int, int]]) -> None:
    """The array (level-by-level) walk, forced on from the root, agrees with the reference."""
    from otel_agents.processors import _critical_path as mod

    saved = mod._VECTOR_MIN
    mod._VECTOR_MIN = 1
    try:
        assert _cp(spans) == _brute(spans)
    finally:
        mod._VECTOR_MIN = saved


@settings(max_examples=100, deadline=None)
@given(st.lists(_trees(), min_size=8, max_size=20))
def test_forest_of_traces_matches_brute_force_per_trace(
    forest: list[list[tuple[int, int, int]]],
) -> None:
    """Many traces in one call (the array walk's case) give each its own reference path."""
    start, end, parent, roots, expect = [], [], [], [], []
    for spans in forest:
        base = len(start)
        roots.append(base)
        for s, e, p in spans:
            start.append(s)
            end.append(e)
            parent.append(p + base if p >= 0 else -1)
        expect += _brute(spans)
    cp = critical_path_times(
        np.array(start, dtype=np.int64), np.array(end, dtype=np.int64),
        np.array(parent, dtype=np.int64), np.array(roots, dtype=np.int64),
    )  # fmt: skip
    assert cp.tolist() == expect
