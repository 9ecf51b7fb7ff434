# SPDX-License-Identifier: Apache-2.0
"""glibc allocator settings for the long-running receiver process.

The receiver allocates from many threads (gRPC's server threads, the spool writer, the
forwarder, the analysis thread, the admin server) and handles large short-lived buffers
(~200 KB request bodies, multi-MiB ``/metrics`` expositions). With glibc's defaults that
shape creeps: every thread that meets contention gets its own arena (up to 8 per core), freed
memory stays in the arena it came from, and the dynamic mmap threshold rises to the size of the
largest buffer freed so far, after which every large buffer is carved out of an arena and
fragments it. RC-12's 60-minute soak measured the result: live heap flat, free-but-retained
arena memory growing, RSS creeping ~1.2 MiB per 10 minutes.

Three ``mallopt`` settings, applied once at start-up before any thread exists, answer it:

* ``M_ARENA_MAX`` 2 — all threads share two arenas, so memory one thread frees is reused by
  the next thread that allocates (Python code holds the GIL anyway, so arena contention is
  not a cost here);
* ``M_MMAP_THRESHOLD`` 1 MiB, fixed — buffers of 1 MiB and more (``/metrics`` expositions,
  the largest request bodies) always come from ``mmap`` and go back to the OS in full when
  freed, instead of fragmenting an arena once the dynamic threshold has risen to their size.
  Request bodies (~200 KB for 512 spans) stay below it: pinned at glibc's initial 128 KiB,
  every one of them was an ``mmap``/``munmap`` pair plus page faults, which cost OTLP/HTTP
  with 16 connections up to a quarter of its throughput per CPU-second;
* ``M_TRIM_THRESHOLD`` 2 MiB — pinning the mmap threshold also pins this one (glibc would
  keep it at twice the dynamic threshold); at its 128 KiB default every freed body at the top
  of the heap would be handed back and faulted in again by the next request.

Measured in RC-12's 60-minute soak (2,500 spans/s, 10,000 names): glibc's defaults crept
1.19-1.20 MiB / 10 min after warm-up (free-but-retained arena memory growing while the live
heap stayed flat); with these settings 1.00 MiB / 10 min, the remainder a bounded fill of the
analysis' per-key tables that levels off at ~40 minutes.

Users keep the last word: a ``MALLOC_ARENA_MAX`` / ``MALLOC_MMAP_THRESHOLD_`` /
``MALLOC_TRIM_THRESHOLD_`` environment variable or a ``GLIBC_TUNABLES`` entry for the same setting wins, and
``OTEL_AGENTS_MALLOC_TUNING=false`` turns the whole thing off. Elsewhere than glibc this is a
no-op.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["tune_allocator"]

# From glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

ARENA_MAX = 2
MMAP_THRESHOLD = 1024 * 1024
TRIM_THRESHOLD = 2 * 1024 * 1024


def _user_set(env_name: str, tunable: str) -> bool:
    return env_name in os.environ or tunable in os.environ.get("GLIBC_TUNABLES", "")


def tune_allocator() -> dict[str, int]:
    """Apply the receiver's glibc ``mallopt`` settings; returns what was set (empty if none).

    Call once, early, in the receiver process (before its threads start). Never raises.
    """
    applied: dict[str, int] = {}
    if not sys.platform.startswith("linux"):
        return applied
    if os.environ.get("OTEL_AGENTS_MALLOC_TUNING", "").strip().lower() in ("false", "0", "off"):
        return applied
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return applied
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    settings = (
        ("arena_max", _M_ARENA_MAX, ARENA_MAX, "MALLOC_ARENA_MAX", "glibc.malloc.arena_max"),
        (
            "mmap_threshold",
            _M_MMAP_THRESHOLD,
            MMAP_THRESHOLD,
            "MALLOC_MMAP_THRESHOLD_",
            "glibc.malloc.mmap_threshold",
        ),
        (
            "trim_threshold",
            _M_TRIM_THRESHOLD,
            TRIM_THRESHOLD,
            "MALLOC_TRIM_THRESHOLD_",
            "glibc.malloc.trim_threshold",
        ),
    )
    for name, param, value, env_name, tunable in settings:
        if _user_set(env_name, tunable):
            continue
        try:
            if mallopt(param, value) == 1:  # glibc returns 1 on success
                applied[name] = value
        except Exception:  # an allocator hint must never stop the receiver
            continue
    return applied
