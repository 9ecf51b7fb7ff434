# SPDX-License-Identifier: Apache-2.0
"""Admission control: bounded in-flight bytes and a process memory budget.

Refusals are :class:`~otel_agents._errors.RetryableError` with a computed delay, which the
transports answer as ``UNAVAILABLE`` + RetryInfo / 503 + ``Retry-After`` — never as a bare
``RESOURCE_EXHAUSTED``, which Go senders treat as permanent and drop (reliability.md §0.2, §0.4;
grpcio's ``maximum_concurrent_rpcs`` is deliberately not used).

The RSS check is sampled at most every ``memory_check_interval`` (psutil costs ~10 µs, too much
per request at high rates, and RSS moves slowly).

Whose RSS: a process started as the receiver (``otel-agents serve`` / ``python -m
otel_agents._cli``, and the workers of ``serve --workers``) is all receiver, so the budget is
its RSS.  A receiver embedded in another Python process (an application, a test session) shares
that process with a host whose memory is not the receiver's: a pytest session that has run the
analysis tests already holds ~190 MiB, which alone would put a 256 MiB budget's 80 % threshold
within reach.  There the budget counts the RSS growth since the controller was created.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Literal

import psutil

from otel_agents._errors import RetryableError
from otel_agents.receiver._transport_config import AdmissionConfig

__all__ = ["AdmissionController", "Ticket", "process_is_receiver"]

#: Spike headroom: refuse from ``memory_limit - memory_limit / 5`` on.
_SPIKE_FRACTION = 5


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None)  # the C library already linked into the interpreter
        trim: Callable[[int], int] = libc.malloc_trim  # glibc only; absent on musl / macOS
    except (OSError, AttributeError):
        return None
    return trim


_MALLOC_TRIM = _load_malloc_trim()


def trim_heap() -> None:
    """Hand the C heap's free pages back to the OS (glibc ``malloc_trim(0)``; a no-op elsewhere).

    Freed Python and native memory stays in glibc's per-thread arenas, so RSS can sit above the
    budget's refusal threshold after the garbage is gone, and refusing requests frees nothing
    more: the receiver would refuse until something else shrinks the heap (seen in the RC-12
    soak with analysis at 100 %: 150 s of refusals at 208 MiB).  A trim took 3-5 ms for a
    250 MiB heap here and returned ~35 MiB.
    """
    if _MALLOC_TRIM is not None:
        with contextlib.suppress(Exception):  # never let an allocator hint fail a request
            _MALLOC_TRIM(0)


def process_is_receiver() -> bool:
    """Whether this process was started as the receiver (the ``otel-agents`` command line)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name == "otel_agents._cli":
        return True  # python -m otel_agents._cli (also how serve --workers starts workers)
    return bool(sys.argv) and os.path.basename(sys.argv[0]) == "otel-agents"


class Ticket:
    """Bytes reserved for one request; release exactly once (it is a context manager)."""

    __slots__ = ("_controller", "_released", "nbytes")

    def __init__(self, controller: AdmissionController, nbytes: int) -> None:
        self._controller = controller
        self._released = False
        self.nbytes = nbytes

    def grow(self, extra: int) -> None:
        """Reserve ``extra`` more bytes (streaming decompression learns the size as it goes).

        Raises:
            RetryableError: when the in-flight budget cannot take them.
        """
        if extra > 0:
            self._controller._reserve(extra, own=self.nbytes)
            self.nbytes += extra

    def release(self) -> None:
        """Give the bytes back; idempotent."""
        if not self._released:
            self._released = True
            self._controller._release(self.nbytes)

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class AdmissionController:
    """Decides whether a request may be processed now.

    Args:
        config: budgets and retry-delay bounds.
        rss: returns the memory to hold against ``memory_limit``, in bytes (injectable so tests
            need not allocate memory); default: see ``memory_scope``.
        clock: monotonic clock.
        memory_scope: what the default ``rss`` measures: ``"process"`` the process RSS,
            ``"growth"`` the RSS growth since this controller was created (a receiver embedded
            in a host process), ``"auto"`` (default) ``"process"`` when
            :func:`process_is_receiver`, else ``"growth"``.
    """

    def __init__(
        self,
        config: AdmissionConfig,
        *,
        rss: Callable[[], int] | None = None,
        clock: Callable[[], float] = time.monotonic,
        memory_scope: Literal["auto", "process", "growth"] = "auto",
    ) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._inflight = 0
        self._clock = clock
        if memory_scope == "auto":
            # An injected reading is taken as it is.
            memory_scope = "process" if rss is not None or process_is_receiver() else "growth"
        #: What the memory budget is held against (``"process"`` or ``"growth"``).
        self.memory_scope = memory_scope
        if rss is None:
            proc = psutil.Process()
            baseline = int(proc.memory_info().rss) if memory_scope == "growth" else 0

            def rss() -> int:
                return max(0, int(proc.memory_info().rss) - baseline)

        self._rss = rss
        self._rss_value = 0
        self._rss_at = float("-inf")
        self._gc_at = float("-inf")
        # Drain-rate estimate (bytes/s of completed requests), for the retry delay.
        self._rate = 0.0
        self._rate_window_start = clock()
        self._rate_window_bytes = 0

    @property
    def inflight_bytes(self) -> int:
        """Bytes currently reserved."""
        return self._inflight

    def admit(self, nbytes: int) -> Ticket:
        """Reserve ``nbytes`` for a request.

        Raises:
            RetryableError: over the in-flight or memory budget; ``retry_after`` is how long
                the backlog should take to drain, within the configured bounds.
        """
        self._check_memory()
        self._reserve(nbytes, own=0)
        return Ticket(self, nbytes)

    def retry_delay(self) -> float:
        """Delay to ask clients for now: time to drain the in-flight bytes at the observed rate."""
        cfg = self.config
        rate = self._rate
        delay = self._inflight / rate if rate > 0 else cfg.min_retry_delay
        return min(cfg.max_retry_delay, max(cfg.min_retry_delay, delay))

    def _check_memory(self) -> None:
        budget = self.config.memory_limit
        if budget <= 0:
            return
        # Refuse with spike headroom left (the Collector's memory_limiter soft limit, default
        # 20 %): what is admitted keeps growing after the check.  Measured at 2x sustainable
        # load with a 256 MiB budget, refusing only at the budget let RSS peak at 277 MiB.
        limit = budget - budget // _SPIKE_FRACTION
        now = self._clock()
        if now - self._rss_at >= self.config.memory_check_interval:
            self._rss_at = now
            self._rss_value = self._rss()
            if self._rss_value > limit and now - self._gc_at >= 1.0:
                # Like the Collector's memory_limiter: collect once when over the limit, so
                # garbage in reference cycles does not keep us refusing; at most once a second.
                self._gc_at = now
                gc.collect()
                trim_heap()
                self._rss_value = self._rss()
        if self._rss_value > limit:
            over = self._rss_value / limit
            delay = min(self.config.max_retry_delay, self.config.min_retry_delay * 2 * over)
            what = "RSS" if self.memory_scope == "process" else "RSS growth since start"
            raise RetryableError(
                f"receiver near its memory budget ({self._rss_value >> 20} MiB {what} > "
                f"{limit >> 20} MiB, 80 % of {budget >> 20} MiB); retry later",
                retry_after=max(self.config.min_retry_delay, delay),
            )

    def _reserve(self, nbytes: int, *, own: int) -> None:
        cap = self.config.max_inflight_bytes
        with self._lock:
            # A request alone in the receiver is always admitted (even past the budget), so a
            # maximal request can never be starved forever; `own` is what it already holds.
            if self._inflight + nbytes > cap and self._inflight - own > 0:
                delay = self.retry_delay()
                raise RetryableError(
                    f"receiver busy ({self._inflight >> 10} KiB in flight, budget "
                    f"{cap >> 10} KiB); retry in {delay:.2f}s",
                    retry_after=delay,
                )
            self._inflight += nbytes

    def _release(self, nbytes: int) -> None:
        now = self._clock()
        with self._lock:
            self._inflight -= nbytes
            self._rate_window_bytes += nbytes
            elapsed = now - self._rate_window_start
            if elapsed >= 0.5:
                sample = self._rate_window_bytes / elapsed
                self._rate = sample if self._rate == 0 else 0.7 * self._rate + 0.3 * sample
                self._rate_window_start = now
                self._rate_window_bytes = 0
