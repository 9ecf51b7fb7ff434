# SPDX-License-Identifier: Apache-2.0
"""The receiver's glibc allocator settings (otel_agents._allocator), checked by behaviour."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
    reason="mallopt/mallinfo2 are glibc's",
)

# Runs in a fresh interpreter: allocator settings are process-wide and must not leak into the
# test process. After a 4 MiB malloc/free, glibc's *dynamic* mmap threshold rises to 4 MiB, so
# a following 2 MiB block comes from the arena; with the threshold pinned at 1 MiB it is
# mmapped (mallinfo2().hblkhd grows by it).
_PROBE = r"""
import ctypes, json, sys
from otel_agents._allocator import tune_allocator
applied = tune_allocator() if sys.argv[1] == "tune" else {}
libc = ctypes.CDLL(None)
class MI2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = MI2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
libc.free(libc.malloc(4 << 20))
before = libc.mallinfo2().hblkhd
block = libc.malloc(2 << 20)
mapped = libc.mallinfo2().hblkhd - before
libc.free(block)
print(json.dumps({"applied": applied, "mapped": mapped}))
"""


def _probe(mode: str, **env: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_tuning_pins_the_mmap_threshold_and_caps_arenas() -> None:
    """With the tuning a large block is mmapped even after a larger one was freed."""
    baseline = _probe("plain")
    tuned = _probe("tune")
    assert baseline["mapped"] == 0  # glibc's dynamic threshold: the block came from the arena
    assert tuned["applied"] == {
        "arena_max": 2,
        "mmap_threshold": 1 << 20,
        "trim_threshold": 2 << 20,
    }
    assert isinstance(tuned["mapped"], int) and tuned["mapped"] >= 2 << 20


def test_user_environment_wins_and_the_switch_turns_it_off() -> None:
    """MALLOC_* variables keep the user's setting; OTEL_AGENTS_MALLOC_TUNING=false skips all."""
    user = _probe("tune", MALLOC_ARENA_MAX="4")
    assert user["applied"] == {"mmap_threshold": 1 << 20, "trim_threshold": 2 << 20}
    off = _probe("tune", OTEL_AGENTS_MALLOC_TUNING="false")
    assert off["applied"] == {} and off["mapped"] == 0
