# SPDX-License-Identifier: Apache-2.0
"""Streaming, robust per-key baselines and the 0–100 anomaly score.

A baseline learns from *interval statistics* (one value per key per evaluation interval, e.g.
the median latency of a tool's calls in the last 5 s): a ring of the last ``window`` values
gives the median and the MAD (robust: up to half the ring can be anomalous without moving
them), an EWMA follows the level for display.  Optional seasonal buckets (hour of day / hour of
week, by receiver time) keep separate rings and take over once warm.

Scores follow Elastic ML's scale: 0–100, ``warning`` ≥ 50, ``critical`` ≥ 75.  A robust
z-score ``z = (x - median) / spread`` maps to ``100 · (1 - 2^(-z / z_half))`` so that
``z = z_half`` is the warning threshold and ``2 · z_half`` the critical one.  Only increases
score (latency, errors, tokens and cost going *down* is not an incident).  The spread has a
floor (a fraction of the median and an absolute minimum) so that a perfectly flat history does
not turn a 1 % wobble into an alarm, and a minimum relative effect is required.

Nothing scores before the baseline is warm: ``warmup_intervals`` intervals carrying at least
``warmup_observations`` raw observations in total.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import time
from collections.abc import Hashable
from typing import Literal

import numpy as np

__all__ = [
    "BAND_CRITICAL",
    "BAND_WARNING",
    "BaselineConfig",
    "BaselineTable",
    "RateBaseline",
    "RobustBaseline",
    "score_from_z",
    "severity_for",
]

BAND_WARNING = 50.0
BAND_CRITICAL = 75.0
_MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution × this = its standard deviation
_INITIAL_RING = 8  # interval slots a new RobustBaseline starts with (grows to the window)


def score_from_z(z: float, z_half: float = 4.0) -> float:
    """Map a one-sided z-score to 0..100 (``z_half`` → 50, ``2·z_half`` → 75)."""
    if not z > 0 or not math.isfinite(z):
        return 100.0 if z == math.inf else 0.0
    return float(100.0 * (1.0 - math.pow(2.0, -z / z_half)))


def severity_for(
    score: float, warning: float = BAND_WARNING, critical: float = BAND_CRITICAL
) -> str:
    """``info`` / ``warning`` / ``critical`` for a score."""
    if score >= critical:
        return "critical"
    if score >= warning:
        return "warning"
    return "info"


@dataclasses.dataclass(frozen=True)
class BaselineConfig:
    """How baselines learn and score.

    Attributes:
        window: interval values kept per key (rolling median/MAD).
        warmup_intervals: intervals with data before a key scores.
        warmup_observations: raw observations before a key scores.
        ewma_alpha: smoothing of the displayed level.
        rel_floor: spread floor as a fraction of the median.
        min_effect: minimum relative increase over the median to score at all.
        z_half: robust z that scores 50 (warning); twice it scores 75 (critical).
        seasonality: ``none``, ``hour_of_day`` or ``hour_of_week`` buckets (receiver time).
    """

    window: int = 120
    warmup_intervals: int = 6
    warmup_observations: int = 20
    ewma_alpha: float = 0.1
    rel_floor: float = 0.1
    min_effect: float = 0.25
    z_half: float = 4.0
    seasonality: Literal["none", "hour_of_day", "hour_of_week"] = "none"

    def validate(self) -> list[str]:
        """Problems with the values."""
        out = []
        if self.window < 3:
            out.append("window: must be at least 3")
        if not 0 < self.ewma_alpha <= 1:
            out.append("ewma_alpha: must be in (0, 1]")
        if self.z_half <= 0:
            out.append("z_half: must be positive")
        return out


class RobustBaseline:
    """Rolling median/MAD plus EWMA of one key's interval values."""

    __slots__ = ("_cfg", "_pos", "_ring", "abs_floor", "ewma", "intervals", "observations")

    def __init__(self, config: BaselineConfig, abs_floor: float) -> None:
        self._cfg = config
        # Row 0: interval values, row 1: observations per interval.  The ring starts small and
        # doubles up to ``window``: under name churn most keys are evicted after an interval or
        # two, and full-size rings for every one of the tables' keys were ~40 MiB (RC-12).
        self._ring = np.empty((2, min(_INITIAL_RING, config.window)), dtype=np.float64)
        self._pos = 0
        self.intervals = 0
        self.observations = 0
        self.ewma: float | None = None
        self.abs_floor = abs_floor

    @property
    def ready(self) -> bool:
        """Warm: enough intervals and observations to score."""
        c = self._cfg
        return self.intervals >= c.warmup_intervals and self.observations >= c.warmup_observations

    def center_spread(self) -> tuple[float, float]:
        """Median and floored robust spread (σ-equivalent) of the ring."""
        vals = self._ring[0, : min(self.intervals, self._cfg.window)]
        if vals.shape[0] == 0:
            return 0.0, self.abs_floor
        med = float(np.median(vals))
        mad = float(np.median(np.abs(vals - med))) * _MAD_TO_SIGMA
        return med, max(mad, self._cfg.rel_floor * abs(med), self.abs_floor)

    def score(self, value: float, observations: int = 0) -> tuple[float, float, float]:
        """``(score, z, median)`` of ``value``; score 0 while warming up.

        An interval statistic over fewer observations than the baseline's typical interval is
        noisier (its standard error grows as 1/√n), so its z is scaled by √(n / n_typical).
        """
        med, spread = self.center_spread()
        if not self.ready:
            return 0.0, 0.0, med
        z = (value - med) / spread
        if observations > 0:
            typical = float(np.median(self._ring[1, : min(self.intervals, self._cfg.window)]))
            if typical > observations:
                z *= math.sqrt(observations / typical)
        if value <= med * (1.0 + self._cfg.min_effect) or value - med < self.abs_floor:
            return 0.0, z, med
        return score_from_z(z, self._cfg.z_half), z, med

    def update(self, value: float, observations: int) -> None:
        """Learn one interval value that summarised ``observations`` raw observations."""
        if not math.isfinite(value):
            return
        cap = self._ring.shape[1]
        if self._pos == cap and cap < self._cfg.window:  # still filling: grow, keep the order
            ring = np.empty((2, min(2 * cap, self._cfg.window)), dtype=np.float64)
            ring[:, :cap] = self._ring
            self._ring = ring
        self._ring[0, self._pos] = value
        self._ring[1, self._pos] = observations
        self._pos = (self._pos + 1) % self._cfg.window
        self.intervals += 1
        self.observations += observations
        a = self._cfg.ewma_alpha
        self.ewma = value if self.ewma is None else (1 - a) * self.ewma + a * value


class RateBaseline:
    """Long-run event ratio (errors / calls) with a binomial z for a new interval."""

    __slots__ = ("_cfg", "calls", "events", "floor", "intervals", "min_events")

    def __init__(self, config: BaselineConfig, floor: float = 0.02, min_events: int = 3) -> None:
        self._cfg = config
        self.calls = 0.0
        self.events = 0.0
        self.intervals = 0
        self.floor = floor
        self.min_events = min_events

    @property
    def ready(self) -> bool:
        """Warm: enough intervals and calls to score."""
        c = self._cfg
        return self.intervals >= c.warmup_intervals and self.calls >= c.warmup_observations

    @property
    def ratio(self) -> float:
        """The learned ratio."""
        return self.events / self.calls if self.calls else 0.0

    def score(self, events: int, calls: int) -> tuple[float, float, float]:
        """``(score, z, baseline_ratio)`` for ``events`` of ``calls`` in one interval."""
        p0 = self.ratio
        if not self.ready or calls == 0:
            return 0.0, 0.0, p0
        obs = events / calls
        p = min(max(p0, self.floor), 0.999)
        z = (events - calls * p) / math.sqrt(calls * p * (1 - p))
        if events < self.min_events or obs < p0 + self._cfg.min_effect * max(p0, 0.2):
            return 0.0, z, p0
        return score_from_z(z, self._cfg.z_half), z, p0

    def update(self, events: int, calls: int) -> None:
        """Learn one interval; older intervals fade (effective memory ≈ ``window`` intervals)."""
        decay = 1.0 - 1.0 / self._cfg.window
        self.calls = self.calls * decay + calls
        self.events = self.events * decay + events
        self.intervals += 1


class SeasonalBaseline:
    """A global :class:`RobustBaseline` plus one per seasonal bucket (used once warm)."""

    __slots__ = ("_buckets", "_cfg", "abs_floor", "glob")

    def __init__(self, config: BaselineConfig, abs_floor: float) -> None:
        self._cfg = config
        self.abs_floor = abs_floor
        self.glob = RobustBaseline(config, abs_floor)
        self._buckets: dict[int, RobustBaseline] = {}

    def _bucket(self, now: float) -> int | None:
        s = self._cfg.seasonality
        if s == "none":
            return None
        tm = time.gmtime(now)
        return tm.tm_hour if s == "hour_of_day" else tm.tm_wday * 24 + tm.tm_hour

    def active(self, now: float) -> RobustBaseline:
        """The baseline that scores at ``now``: the seasonal bucket once warm, else global."""
        b = self._bucket(now)
        if b is not None:
            sb = self._buckets.get(b)
            if sb is not None and sb.ready:
                return sb
        return self.glob

    @property
    def ready(self) -> bool:
        """The global baseline is warm."""
        return self.glob.ready

    def score(self, value: float, now: float, observations: int = 0) -> tuple[float, float, float]:
        """See :meth:`RobustBaseline.score`."""
        return self.active(now).score(value, observations)

    def update(self, value: float, observations: int, now: float) -> None:
        """Learn into the global ring and the current seasonal bucket."""
        self.glob.update(value, observations)
        b = self._bucket(now)
        if b is not None:
            sb = self._buckets.get(b)
            if sb is None:
                sb = self._buckets[b] = RobustBaseline(self._cfg, self.abs_floor)
            sb.update(value, observations)


class BaselineTable:
    """Baselines per key, at most ``max_keys`` of them (least recently updated evicted)."""

    def __init__(self, max_keys: int) -> None:
        self.max_keys = max_keys
        self._items: collections.OrderedDict[Hashable, object] = collections.OrderedDict()
        self.evicted = 0

    def get(self, key: Hashable) -> object | None:
        """The baseline for ``key`` or ``None``."""
        return self._items.get(key)

    def put(self, key: Hashable, value: object) -> None:
        """Store (or refresh) ``key``; evicts the stalest key beyond the cap."""
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.max_keys:
            self._items.popitem(last=False)
            self.evicted += 1

    def items(self) -> list[tuple[Hashable, object]]:
        """Snapshot of ``(key, baseline)`` pairs."""
        return list(self._items.items())

    def __len__(self) -> int:
        return len(self._items)
