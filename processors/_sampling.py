# SPDX-License-Identifier: Apache-2.0
"""Consistent trace sampling for analysis, and the CPU budget that sets its probability.

Analysis never starves ingest: under load the receiver analyses a consistent sample of whole
traces and forwards everything.  The decision follows the OpenTelemetry consistent probability
sampling rule ("TraceState: Probability Sampling", OTEP 235): a trace's randomness ``R`` is the
explicit ``rv`` of its OpenTelemetry TraceState entry (``ot=...;rv:<14 hex>``) when present, else
the least-significant 56 bits of the trace ID (W3C Trace Context Level 2); a rejection threshold
``T = (1 - p) · 2^56`` keeps the trace iff ``R >= T``.  So every span of a trace gets the same
decision, N receiver shards with the same threshold keep the same traces, and the decision
composes with upstream consistent samplers (a span whose ``th`` is already above ``T`` is kept:
a downstream stage can only raise the threshold).

Estimates: a kept span stands for ``1 / p`` arriving spans, where ``p`` is the probability of
keeping it *given that it arrived*: with an upstream threshold ``T_u`` (the span's ``th``),
``p = (2^56 - max(T, T_u)) / (2^56 - T_u)``.  Counts, cost and tokens are summed with these
weights (Horvitz-Thompson); ratios, latency quantiles and anomaly baselines use the sample as is.

:class:`AnalysisBudget` sets ``p``: it compares the analysis thread's CPU with the CPU of the
rest of the receiver over windows and keeps analysis at most ``cpu_budget`` × the rest (but
always allows ``cpu_floor`` of a core, so light traffic — the demo, tests — is analysed in full).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from fractions import Fraction

__all__ = [
    "MAX_THRESHOLD", "AnalysisBudget", "adjusted_count", "parse_ot_tracestate",
    "probability_to_threshold", "randomness", "th_to_threshold", "threshold_to_probability",
    "threshold_to_th",
]  # fmt: skip

#: 2^56: thresholds and randomness values are 56-bit (7 bytes of the trace ID).
MAX_THRESHOLD = 1 << 56
#: Smallest sampling probability the spec defines.
MIN_PROBABILITY = 1.0 / MAX_THRESHOLD
_HEX = frozenset("0123456789abcdef")


def probability_to_threshold(probability: float, precision: int = 4) -> int:
    """The 56-bit rejection threshold for ``probability``, rounded to ``precision`` hex digits.

    As the spec's reference algorithm: the precision grows by one digit per four leading
    binary zeros of the probability (so small probabilities keep ``precision`` significant
    digits), capped at 12 digits, and the rejection probability is rounded half up.

    Raises:
        ValueError: ``probability`` outside ``[2^-56, 1]``.
    """
    if not MIN_PROBABILITY <= probability <= 1.0:
        raise ValueError(f"sampling probability must be in [2^-56, 1], got {probability!r}")
    if probability == 1.0:
        return 0
    _, exp = math.frexp(probability)
    digits = max(1, min(12, precision + exp // -4))
    scale = 16**digits
    # Exact rational arithmetic: no float rounding between the probability and the digits.
    scaled = math.floor((1 - Fraction(probability)) * scale + Fraction(1, 2))
    scaled = min(scaled, scale - 1)  # p ≥ 2^-56 never rounds to a threshold of 2^56
    return int(scaled) << (4 * (14 - digits))


def threshold_to_probability(threshold: int) -> float:
    """Sampling probability of a rejection threshold."""
    return (MAX_THRESHOLD - threshold) / MAX_THRESHOLD


def adjusted_count(threshold: int) -> float:
    """Items one kept item represents at this threshold (``1 / probability``)."""
    return MAX_THRESHOLD / (MAX_THRESHOLD - threshold)


def threshold_to_th(threshold: int) -> str:
    """The TraceState ``th`` value: 14 hex digits with trailing zeros removed (``0`` = 100 %)."""
    if not 0 <= threshold < MAX_THRESHOLD:
        raise ValueError(f"threshold must be in [0, 2^56), got {threshold!r}")
    if threshold == 0:
        return "0"
    return f"{threshold:014x}".rstrip("0")


def th_to_threshold(th: str) -> int | None:
    """Threshold of a ``th`` value (1–14 lowercase hex digits), ``None`` when malformed."""
    if not 1 <= len(th) <= 14 or not _HEX.issuperset(th):
        return None
    return int(th.ljust(14, "0"), 16)


def parse_ot_tracestate(trace_state: str) -> tuple[int | None, int | None]:
    """``(th, rv)`` of the ``ot`` entry of a W3C ``tracestate`` (``None`` where absent/invalid)."""
    th: int | None = None
    rv: int | None = None
    for member in trace_state.split(","):
        key, sep, value = member.strip().partition("=")
        if not sep or key != "ot":
            continue
        for sub in value.split(";"):
            k, sep, v = sub.partition(":")
            if not sep:
                continue
            if k == "th":
                th = th_to_threshold(v)
            elif k == "rv" and len(v) == 14 and _HEX.issuperset(v):
                rv = int(v, 16)
        break  # keys are unique in a tracestate
    return th, rv


def randomness(trace_id: bytes, trace_state: str = "") -> int:
    """The trace's 56-bit randomness: the TraceState ``rv`` if given, else the trace ID's last
    7 bytes."""
    if trace_state and "ot=" in trace_state:
        rv = parse_ot_tracestate(trace_state)[1]
        if rv is not None:
            return rv
    return int.from_bytes(trace_id[-7:], "big")


class SpanSampler:
    """Per-span keep/weight decisions at one threshold (see the module docstring).

    Spans of one trace usually come together: the last trace's decision is reused.
    """

    __slots__ = ("_last", "threshold")

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self._last: tuple[bytes, str, float] = (b"", "", 0.0)

    def weight(self, trace_id: bytes, trace_state: str) -> float:
        """``0.0`` for a span not analysed, else its adjusted count (≥ 1) relative to arrivals."""
        last = self._last
        if trace_id == last[0] and trace_state == last[1]:
            return last[2]
        t = self.threshold
        w: float
        if trace_state and "ot=" in trace_state:
            th, rv = parse_ot_tracestate(trace_state)
            r = rv if rv is not None else int.from_bytes(trace_id[-7:], "big")
            upstream = th or 0
            if r < t:
                w = 0.0
            elif upstream >= t:
                w = 1.0  # an upstream stage already sampled at least this selectively
            else:
                w = (MAX_THRESHOLD - upstream) / (MAX_THRESHOLD - t)
        else:
            w = 0.0 if int.from_bytes(trace_id[-7:], "big") < t else adjusted_count(t)
        self._last = (trace_id, trace_state, w)
        return w


class AnalysisBudget:
    """Adaptive analysed fraction: analysis CPU ≤ ``cpu_budget`` × the rest of the receiver.

    Call :meth:`update` about once a second from the analysis thread with the cumulative CPU
    seconds that thread spent on analysis; it reads the whole process's CPU and the clock, and
    over windows of at least ``window`` seconds compares smoothed rates:

    * allowed = max(``cpu_budget`` × other CPU, ``cpu_floor``) (core-seconds per second);
    * above allowed, the fraction drops at once to what fits ``MARGIN`` (0.7) × allowed, never
      below ``min_fraction``: a burst is answered within one window;
    * below ``LOW_WATER`` (0.5) × allowed it rises by at most ×1.25 a window, up to 1 (100 %);
    * in between it stays (hysteresis: no flapping around the budget).

    ``mode`` ``"off"`` pins 1.0, a float pins that fraction; only ``"adaptive"`` adapts.

    Args:
        mode: ``"adaptive"``, ``"off"`` or a fixed fraction in (0, 1].
        cpu_budget: analysis CPU as a share of the rest of the receiver's CPU.
        cpu_floor: analysis CPU always allowed, in cores (light load is analysed in full).
        window: shortest measurement window, seconds.
        min_fraction: lowest adaptive fraction.
        process_cpu: cumulative CPU seconds of the whole process (tests inject one).
        clock: monotonic seconds (tests inject one).
    """

    # The fraction is set to fit MARGIN x allowed: a margin for the window's noise and for the
    # little analysis costs outside its thread (the spool's extra cursor).
    LOW_WATER = 0.5
    MARGIN = 0.7
    SMOOTHING = 0.5
    MAX_RISE = 1.25

    def __init__(
        self,
        mode: str | float = "adaptive",
        *,
        cpu_budget: float = 0.3,
        cpu_floor: float = 0.05,
        window: float = 1.0,
        min_fraction: float = 1.0 / 1024,
        process_cpu: Callable[[], float] = time.process_time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.adaptive = mode == "adaptive"
        if self.adaptive or mode == "off":
            fraction = 1.0
        else:
            fraction = float(mode)
            if not MIN_PROBABILITY <= fraction <= 1.0:
                raise ValueError(f"analysis.sampling fraction must be in (0, 1], got {mode!r}")
        self.cpu_budget = cpu_budget
        self.cpu_floor = cpu_floor
        self.window = window
        self.min_fraction = min_fraction
        self._process_cpu = process_cpu
        self._clock = clock
        self.fraction = fraction
        self.threshold = probability_to_threshold(fraction)
        #: Smoothed rates (core-seconds per second) of the last update, for telemetry.
        self.analysis_rate = 0.0
        self.other_rate = 0.0
        self._mark: tuple[float, float, float, int | None] | None = None
        self._primed = False

    @property
    def effective_fraction(self) -> float:
        """The fraction the current threshold keeps (``fraction`` rounded as the spec rounds)."""
        return threshold_to_probability(self.threshold)

    def update(self, analysis_cpu: float, offered: int | None = None) -> float:
        """Take a measurement; returns the fraction.

        Args:
            analysis_cpu: cumulative CPU seconds of analysis.
            offered: cumulative spans offered to analysis (sampled or not), if known: a window
                in which none arrived says nothing about the load, so the fraction holds (the
                next burst does not start at 100 % just because the receiver was idle).
        """
        now, proc = self._clock(), self._process_cpu()
        if self._mark is None:
            self._mark = (now, proc, analysis_cpu, offered)
            return self.fraction
        t0, p0, a0, o0 = self._mark
        wall = now - t0
        if wall < self.window:
            return self.fraction
        self._mark = (now, proc, analysis_cpu, offered)
        idle = offered is not None and offered == o0
        a = max(analysis_cpu - a0, 0.0) / wall
        other = max((proc - p0) / wall - a, 0.0)
        if self._primed:
            s = self.SMOOTHING
            self.analysis_rate = s * a + (1 - s) * self.analysis_rate
            self.other_rate = s * other + (1 - s) * self.other_rate
        else:
            self.analysis_rate, self.other_rate, self._primed = a, other, True
        if self.adaptive:
            self._adapt(idle)
        return self.fraction

    def _adapt(self, idle: bool = False) -> None:
        p = self.fraction
        allowed = max(self.cpu_budget * self.other_rate, self.cpu_floor)
        a = self.analysis_rate
        if a > allowed:
            # Cost is about proportional to the fraction: scale to fit, with a margin.
            target = p * self.MARGIN * allowed / a
            p = max(self.min_fraction, target)
        elif a < self.LOW_WATER * allowed and p < 1.0 and not idle:
            target = p * self.MARGIN * allowed / a if a > 0 else 1.0
            p = min(1.0, max(p, min(target, p * self.MAX_RISE)))
        else:
            return
        self.fraction = p
        self.threshold = probability_to_threshold(p)
