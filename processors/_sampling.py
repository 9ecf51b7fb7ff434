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

:class:`AnalysisBudget` sets ``p`` for each group of spans the analysis thread reads: from an
online cost model and a CPU ledger it keeps analysis at most ``cpu_budget`` × the rest of the
receiver's CPU, within a few reads of a burst's start (but always allows ``cpu_floor`` of a
core, so light traffic — the demo, tests — is analysed in full).
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
    """Adaptive analysed fraction: analysis CPU ≤ ``cpu_budget`` × the rest of the receiver,
    held per read of the spool, not only on average (see docs/architecture.md "Analysis CPU
    budget").

    The analysis thread calls :meth:`plan` before each group of spans it is about to offer to
    analysis, with its cumulative analysis CPU; :meth:`plan` sets :attr:`threshold` for them
    from two parts:

    * a cost model, measured online (:meth:`record_offered`, :meth:`record_analysed`): CPU per
      span offered and skipped (reading the spool, the trace-ID pass), CPU per span analysed
      (full decode and processors), and the rest of the process's CPU per span offered.  The
      group may cost ``MARGIN`` × ``cpu_budget`` × (rest CPU per span) × spans — what the
      rest of the receiver spends on those spans — or, at light load, ``cpu_floor`` × the time
      since the previous group (at most ``FLOOR_WINDOW``): the fraction is what fits.
    * a ledger: at every call it is credited with what the interval allowed
      (max(``MARGIN`` × ``cpu_budget`` × rest CPU, ``cpu_floor`` × seconds)) and debited with the
      analysis CPU actually spent (trace completion in ticks included).  Its balance, bounded
      to [-``DEBT_MAX``, ``CREDIT_MAX``] seconds, is added to the next group's allowance, so
      model errors and deferred costs are paid back within a few reads instead of a window.

    A burst therefore starts at the fraction its first read can afford (no history needed:
    the cost per span is known from earlier traffic or the priors) and light traffic — a few
    thousand spans a second — is analysed in full.

    ``mode`` ``"off"`` pins 1.0, a float pins that fraction; only ``"adaptive"`` adapts.

    Args:
        mode: ``"adaptive"``, ``"off"`` or a fixed fraction in (0, 1].
        cpu_budget: analysis CPU as a share of the rest of the receiver's CPU.
        cpu_floor: analysis CPU always allowed, in cores (light load is analysed in full).
        window: shortest window of the smoothed rates reported by :meth:`update` (telemetry).
        min_fraction: lowest adaptive fraction.
        process_cpu: cumulative CPU seconds of the whole process (tests inject one).
        clock: monotonic seconds (tests inject one).
    """

    #: Share of the budget the analysis thread plans to use: the rest is headroom for the
    #: analysis costs other threads pay (a larger heap to collect, the GIL hand-overs).
    MARGIN = 0.35
    #: Ledger bounds, CPU seconds: a small credit (so a quiet spell does not bank a burst at
    #: 100 %), a larger debt (an expensive tick is paid back, not forgotten).
    CREDIT_MAX = 0.005
    DEBT_MAX = 0.25
    #: Share of the balance one group spends or pays back (spread over a few reads, so the
    #: fraction does not swing between reads).
    BALANCE_USE = 0.5
    #: Longest quiet spell whose floor allowance one group may use, seconds.
    FLOOR_WINDOW = 0.25
    #: Longest interval the ledger credits with the floor, seconds: the caller settles at
    #: least every tick, so a quiet receiver earns the floor, but the quiet spell after a
    #: burst does not pay for the burst's deferred work (trace completion) — the next load's
    #: ratio allowance does.
    FLOOR_CREDIT_WINDOW = 0.1
    #: Half-life of the cost model's averages, seconds.
    HALF_LIFE = 2.0
    #: Longest gap between groups that still measures the rest's CPU per span (longer gaps
    #: are mostly idle CPU, which no span caused).
    LOADED_GAP = 0.5
    #: Priors (seconds per span) until measurements arrive, worth PRIOR_SPANS spans: the
    #: receiver's own cost, and what skipping and analysing a span cost, on a 2-core x86 box
    #: (benchmarks/RESULTS.md); the model replaces them within the first groups.
    PRIOR_OTHER = 3.0e-6
    PRIOR_SKIP = 0.4e-6
    PRIOR_ANALYSED = 15.0e-6
    PRIOR_SPANS = 512.0
    SMOOTHING = 0.5

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
        self._mark: tuple[float, float, float] | None = None
        self._primed = False
        #: Ledger balance, CPU seconds (positive: unspent allowance).
        self.balance = 0.0
        # Cost model: decayed sums (numerator CPU seconds, denominator spans).
        w = self.PRIOR_SPANS
        self._other = [self.PRIOR_OTHER * w, w]
        self._skip = [self.PRIOR_SKIP * w, w]
        self._analysed = [self.PRIOR_ANALYSED * w, w]
        self._pending_skip = [0.0, 0]  # recorded since the last plan
        self._pending_analysed = [0.0, 0]
        self._plan_mark: tuple[float, float, float, int | None] | None = None

    @property
    def effective_fraction(self) -> float:
        """The fraction the current threshold keeps (``fraction`` rounded as the spec rounds)."""
        return threshold_to_probability(self.threshold)

    @property
    def costs(self) -> tuple[float, float, float]:
        """The cost model, seconds per span: ``(rest of the receiver per span offered, skipping
        one, analysing one)``."""
        return (
            self._other[0] / self._other[1],
            self._skip[0] / self._skip[1],
            self._analysed[0] / self._analysed[1],
        )

    def record_offered(self, spans: int, cpu: float) -> None:
        """``spans`` were offered to analysis; reading and sampling them cost ``cpu`` seconds."""
        self._pending_skip[0] += cpu
        self._pending_skip[1] += spans

    def record_analysed(self, spans: int, cpu: float) -> None:
        """``spans`` sampled spans were decoded and fed to the processors in ``cpu`` seconds."""
        self._pending_analysed[0] += cpu
        self._pending_analysed[1] += spans

    def plan(self, spans: int, analysis_cpu: float, arrived: int | None = None) -> int:
        """Settle the ledger and the cost model, and set the threshold for the next ``spans``.

        Args:
            spans: spans about to be offered to analysis (the group just read).
            analysis_cpu: cumulative CPU seconds of analysis so far.
            arrived: cumulative spans received (committed by ingest), if known: the rest of
                the receiver's CPU is measured per span received, which leads what analysis
                reads by up to a read; without it, per span read.

        Returns:
            The rejection threshold for these spans.
        """
        now, proc = self._clock(), self._process_cpu()
        mark, self._plan_mark = self._plan_mark, (now, proc, analysis_cpu, arrived)
        if mark is None:
            dt, other, spent, load = self.FLOOR_WINDOW, 0.0, 0.0, 0
        else:
            dt = max(now - mark[0], 0.0)
            spent = max(analysis_cpu - mark[2], 0.0)
            other = max(proc - mark[1] - spent, 0.0)
            a0 = mark[3]
            load = spans if arrived is None or a0 is None else max(arrived - a0, 0)
        self._learn(dt, other, load)
        share = self.MARGIN * self.cpu_budget
        self.balance = min(
            self.CREDIT_MAX,
            max(
                -self.DEBT_MAX,
                self.balance
                + max(share * other, self.cpu_floor * min(dt, self.FLOOR_CREDIT_WINDOW))
                - spent,
            ),
        )
        if not self.adaptive or spans <= 0:
            return self.threshold
        per_other, per_skip, per_analysed = self.costs
        allowed = max(share * per_other * spans, self.cpu_floor * min(dt, self.FLOOR_WINDOW))
        p = (allowed + self.BALANCE_USE * self.balance - per_skip * spans) / (per_analysed * spans)
        p = min(1.0, max(self.min_fraction, p))
        if p != self.fraction:
            self.fraction = p
            self.threshold = probability_to_threshold(p)
        return self.threshold

    def _learn(self, dt: float, other: float, spans: int) -> None:
        decay = 0.5 ** (dt / self.HALF_LIFE)
        for acc, pending in (
            (self._skip, self._pending_skip),
            (self._analysed, self._pending_analysed),
        ):
            if pending[1]:
                acc[0] = acc[0] * decay + pending[0]
                acc[1] = acc[1] * decay + pending[1]
                pending[0], pending[1] = 0.0, 0
        if spans > 0 and dt <= self.LOADED_GAP:
            # The rest's CPU of the interval is mostly ingest of the spans that arrived in it.
            acc = self._other
            acc[0] = acc[0] * decay + other
            acc[1] = acc[1] * decay + spans

    def update(self, analysis_cpu: float) -> float:
        """Refresh the smoothed CPU rates (telemetry) once a ``window`` has passed; returns the
        fraction.

        Args:
            analysis_cpu: cumulative CPU seconds of analysis.
        """
        now, proc = self._clock(), self._process_cpu()
        if self._mark is None:
            self._mark = (now, proc, analysis_cpu)
            return self.fraction
        t0, p0, a0 = self._mark
        wall = now - t0
        if wall < self.window:
            return self.fraction
        self._mark = (now, proc, analysis_cpu)
        a = max(analysis_cpu - a0, 0.0) / wall
        other = max((proc - p0) / wall - a, 0.0)
        if self._primed:
            s = self.SMOOTHING
            self.analysis_rate = s * a + (1 - s) * self.analysis_rate
            self.other_rate = s * other + (1 - s) * self.other_rate
        else:
            self.analysis_rate, self.other_rate, self._primed = a, other, True
        return self.fraction
