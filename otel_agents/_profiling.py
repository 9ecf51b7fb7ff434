# SPDX-License-Identifier: Apache-2.0
"""Opt-in profiling of a block of agent code, attached to the current span.

``profile_span()`` runs the block under :mod:`cProfile` and :mod:`tracemalloc` and, at the end,
puts the top-N functions by cumulative time (``agent.profile.top_functions``, string[] of
``"file:line(function) cumtime_s"``), the CPU time spent in the block and tracemalloc's current /
peak traced memory (bytes) on the span that was current when the block started.

Profiling is slow (cProfile hooks every call); it is for diagnosing one run, never on by
default.  Failures inside the profiler never reach the application.
"""

from __future__ import annotations

import cProfile
import logging
import pstats
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from opentelemetry import trace

from otel_agents import semconv as sc

__all__ = ["ProfileResult", "profile_span"]

_log = logging.getLogger(__name__)


@dataclass
class ProfileResult:
    """What a :func:`profile_span` block measured (filled when the block ends)."""

    top_functions: list[str] = field(default_factory=list)
    cpu_time_s: float = 0.0
    memory_current_bytes: int = 0
    memory_peak_bytes: int = 0


def _top(profiler: cProfile.Profile, limit: int) -> list[str]:
    stats = pstats.Stats(profiler)
    rows = []
    # stats.stats: {(file, line, func): (cc, nc, tt, ct, callers)}
    for (filename, line, func), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((ct, f"{filename}:{line}({func}) {ct:.6f}s"))
    rows.sort(key=lambda r: r[0], reverse=True)
    return [text for _, text in rows[:limit]]


@contextmanager
def profile_span(top_n: int = 10, *, memory: bool = True) -> Iterator[ProfileResult]:
    """Profiles the block and records the result on the current span.

    Example::

        with invoke_agent("planner"), profile_span(top_n=5) as prof:
            run_planner()
        print(prof.memory_peak_bytes)

    Args:
        top_n: how many functions (by cumulative time) to keep.
        memory: also trace allocations with tracemalloc (started/stopped here unless the
            application already runs it, in which case its peak is reset and it keeps running).
    """
    result = ProfileResult()
    span = trace.get_current_span()
    profiler: cProfile.Profile | None = None
    started_tracemalloc = False
    try:
        if memory:
            if tracemalloc.is_tracing():
                tracemalloc.reset_peak()
            else:
                tracemalloc.start()
                started_tracemalloc = True
        profiler = cProfile.Profile()
        profiler.enable()
    except Exception:
        # another profiler active (sys.setprofile is single-slot) or tracemalloc failure
        _log.debug("profile_span: profiler could not start", exc_info=True)
        profiler = None
    cpu0 = time.process_time()
    try:
        yield result
    finally:
        result.cpu_time_s = time.process_time() - cpu0
        try:
            if profiler is not None:
                profiler.disable()
                result.top_functions = _top(profiler, top_n)
            if memory and tracemalloc.is_tracing():
                result.memory_current_bytes, result.memory_peak_bytes = (
                    tracemalloc.get_traced_memory()
                )
            if started_tracemalloc:
                tracemalloc.stop()
            if span.is_recording():
                span.set_attribute(sc.AGENT_PROFILE_CPU_TIME, result.cpu_time_s)
                if result.top_functions:
                    span.set_attribute(sc.AGENT_PROFILE_TOP, result.top_functions)
                if memory:
                    span.set_attribute(sc.AGENT_PROFILE_MEMORY_CURRENT, result.memory_current_bytes)
                    span.set_attribute(sc.AGENT_PROFILE_MEMORY_PEAK, result.memory_peak_bytes)
        except Exception:
            _log.debug("profile_span: recording failed", exc_info=True)
