# SPDX-License-Identifier: Apache-2.0
"""Alert rules: YAML definitions, validation at load, and windowed evaluation over span columns.

Rule kinds (``kind:``):

``threshold``
    an aggregation (``sum`` | ``rate`` | ``avg`` | ``max`` | ``count``) of a span ``measure`` over
    ``window`` compared with ``threshold`` (``rate`` is per ``rate_unit``, e.g. cost per hour).
``ratio``
    ``numerator`` / ``denominator`` sums over ``window`` (error ratio), evaluated once the
    denominator reaches ``min_count``.
``percentile``
    the ``quantile`` of a measure over ``window`` (p95 latency) from a log-bucketed histogram
    (relative error below 5 %, as ``histogram_quantile`` interpolation).
``budget``
    spend in the current UTC-aligned ``period`` as a fraction of ``budget``.
``burn_rate``
    multi-window, multi-burn-rate (Google SRE workbook): every ``windows`` entry fires when both
    its ``long`` and ``short`` window burn faster than ``factor``; burn is error ratio over
    ``1 - objective``, or spend rate over ``budget / period``.
``anomaly`` / ``finding``
    findings from other stages (``finding_kinds``, ``min_score``, ``min_severity``) hold the alert
    while they keep arriving; it resolves ``resolve_after`` the last one.

Spans are attributed to the receiver clock at processing time, so windows are arrival windows.
Every rule has Prometheus-rule semantics: ``pending`` for ``for``, then ``firing``; it resolves
as soon as the condition is false (after ``keep_firing_for``).
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from otel_agents.processors._alert_state import Matcher, matches_all, parse_matchers
from otel_agents.processors._batch import group_keys

from otel_agents._component import SEVERITIES, Finding
from otel_agents._configtypes import DURATION, decode
from otel_agents._errors import ConfigError

__all__ = [
    "MEASURES",
    "SPAN_LABELS",
    "BurnWindow",
    "Rule",
    "RuleConfig",
    "RuleEvaluator",
    "load_default_rules",
    "load_rules",
]

RuleKind = Literal["threshold", "ratio", "percentile", "budget", "burn_rate", "anomaly", "finding"]

#: Span label -> SpanBatch column; usable in ``where`` matchers and ``by``.
SPAN_LABELS: Mapping[str, str] = {
    "agent": "agent_name",
    "operation": "operation",
    "tool": "tool_name",
    "model": "request_model",
    "provider": "provider",
    "service": "service_name",
    "error_type": "error_type",
    "name": "name",
}

#: Per-span values a rule can aggregate.
MEASURES = (
    "calls",
    "errors",
    "duration",
    "cost",
    "input_tokens",
    "output_tokens",
    "tokens",
    "unpriced",
)

_OPS: Mapping[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}

#: Groups one rule tracks at most; further label combinations share the ``__overflow__`` series.
MAX_SERIES_PER_RULE = 1000
OVERFLOW = "__overflow__"

# Log-spaced histogram for percentiles: 1e-6 .. 1e9 with ratio 1.1 between bounds (≤ 5 % error).
_HIST_BOUNDS = np.exp(np.arange(math.log(1e-6), math.log(1e9), math.log(1.1)))


@dataclasses.dataclass(frozen=True)
class BurnWindow:
    """One window pair of a multi-window burn-rate rule."""

    long: float = dataclasses.field(default=3600.0, metadata=DURATION)
    short: float = dataclasses.field(default=300.0, metadata=DURATION)
    factor: float = 14.4
    severity: str = "critical"

    def validate(self) -> list[str]:
        """Problems, each starting with the key."""
        out = []
        if self.short <= 0 or self.long <= 0:
            out.append("long: windows must be positive")
        elif self.short >= self.long:
            out.append("short: must be shorter than long")
        if self.factor <= 0:
            out.append("factor: must be positive")
        if self.severity not in SEVERITIES:
            out.append(f"severity: must be one of {', '.join(SEVERITIES)}")
        return out


@dataclasses.dataclass(frozen=True)
class RuleConfig:
    """One alert rule as written in YAML (``for`` is spelled ``for`` there)."""

    name: str = ""
    kind: RuleKind = "threshold"
    where: list[str] = dataclasses.field(default_factory=list)
    by: list[str] = dataclasses.field(default_factory=list)
    measure: str = "calls"
    aggregation: Literal["sum", "rate", "avg", "max", "count"] = "sum"
    rate_unit: float = dataclasses.field(default=1.0, metadata=DURATION)
    numerator: str = "errors"
    denominator: str = "calls"
    quantile: float = 0.95
    window: float = dataclasses.field(default=300.0, metadata=DURATION)
    op: Literal[">", ">=", "<", "<="] = ">"
    threshold: float = 0.0
    min_count: int = 1
    for_: float = dataclasses.field(default=0.0, metadata=DURATION)
    keep_firing_for: float = dataclasses.field(default=0.0, metadata=DURATION)
    severity: str = "warning"
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    annotations: dict[str, str] = dataclasses.field(default_factory=dict)
    budget: float = 0.0
    period: float = dataclasses.field(default=86400.0, metadata=DURATION)
    objective: float = 0.0
    windows: list[BurnWindow] = dataclasses.field(default_factory=list)
    finding_kinds: list[str] = dataclasses.field(default_factory=list)
    min_score: float = 0.0
    min_severity: str = "info"
    resolve_after: float = dataclasses.field(default=60.0, metadata=DURATION)
    enabled: bool = True

    def validate(self) -> list[str]:
        """Problems, each starting with the offending key."""
        out: list[str] = []
        if not self.name or not self.name.replace("_", "a").isalnum() or self.name[0].isdigit():
            out.append(f"name: must be a metric-style identifier, got {self.name!r}")
        if self.severity not in (*SEVERITIES, "from_finding"):
            out.append(f"severity: must be one of {', '.join(SEVERITIES)}, got {self.severity!r}")
        if self.min_severity not in SEVERITIES:
            out.append(f"min_severity: must be one of {', '.join(SEVERITIES)}")
        span_kind = self.kind in ("threshold", "ratio", "percentile", "budget", "burn_rate")
        allowed_by = set(SPAN_LABELS) if span_kind else None
        for i, b in enumerate(self.by):
            if allowed_by is not None and b not in allowed_by:
                out.append(f"by[{i}]: unknown span label {b!r} (known: {', '.join(SPAN_LABELS)})")
        for i, w in enumerate(self.where):
            name = w.split("=", 1)[0].rstrip("!~ ").strip()
            if span_kind and name not in SPAN_LABELS:
                out.append(f"where[{i}]: unknown span label {name!r}")
        for key, value in (
            ("measure", self.measure),
            ("numerator", self.numerator),
            ("denominator", self.denominator),
        ):
            if value not in MEASURES:
                out.append(f"{key}: unknown measure {value!r} (known: {', '.join(MEASURES)})")
        if span_kind and self.window <= 0:
            out.append("window: must be positive")
        if self.kind == "percentile" and not 0 < self.quantile < 1:
            out.append(f"quantile: must be between 0 and 1 (exclusive), got {self.quantile}")
        if self.min_count < 0:
            out.append("min_count: must not be negative")
        if self.rate_unit <= 0:
            out.append("rate_unit: must be positive")
        if self.kind in ("budget",) and self.budget <= 0:
            out.append("budget: must be positive for a budget rule")
        if self.kind == "budget" and self.period <= 0:
            out.append("period: must be positive")
        if self.kind == "burn_rate":
            if not self.windows:
                out.append("windows: a burn_rate rule needs at least one window pair")
            if (self.objective > 0) == (self.budget > 0):
                out.append("objective: set exactly one of objective (error SLO) or budget (spend)")
            if self.objective and not 0 < self.objective < 1:
                out.append("objective: must be between 0 and 1 (exclusive)")
        if self.kind in ("anomaly", "finding") and self.resolve_after <= 0:
            out.append("resolve_after: must be positive")
        if self.kind == "finding" and not self.finding_kinds:
            out.append("finding_kinds: a finding rule needs at least one finding kind")
        for k in self.labels:
            if k in ("alertname",):
                out.append(f"labels.{k}: reserved label")
        return out


@dataclasses.dataclass(frozen=True)
class Rule:
    """A validated rule with its matchers parsed."""

    config: RuleConfig
    where: tuple[Matcher, ...]
    source: str

    @property
    def name(self) -> str:
        """The ``alertname``."""
        return self.config.name

    @property
    def max_window(self) -> float:
        """Longest history the rule needs."""
        c = self.config
        if c.kind == "burn_rate":
            return max(w.long for w in c.windows)
        if c.kind == "budget":
            return c.period
        return c.window


def parse_rule(data: object, path: str, source: str = "") -> Rule:
    """Decode and validate one rule; errors name the rule and the key.

    Raises:
        ConfigError: ``rules.AgentErrorRatioHigh.window: expected a duration ...``.
    """
    if isinstance(data, Mapping):
        raw = dict(data)
        if "for" in raw:
            raw["for_"] = raw.pop("for")
        if isinstance(raw.get("name"), str) and raw["name"]:
            path = f"{path}.{raw['name']}"
    else:
        raw = data  # type: ignore[assignment]
    try:
        cfg = decode(RuleConfig, raw, path)
    except ConfigError as exc:
        # the YAML key is ``for``; the dataclass field is ``for_``
        raise ConfigError(str(exc).replace(".for_:", ".for:")) from None
    where = parse_matchers(cfg.where, f"{path}.where")
    return Rule(cfg, where, source)


def load_rules(data: object, source: str, path: str = "rules") -> list[Rule]:
    """Rules from a YAML document (``{rules: [...]}`` or a bare list).

    Raises:
        ConfigError: naming the file, rule and key; also on duplicate rule names.
    """
    if isinstance(data, Mapping):
        unknown = [k for k in data if k != "rules"]
        if unknown:
            raise ConfigError(f"{source}: {unknown[0]}: unknown key (known keys: rules)")
        data = data.get("rules") or []
    if not isinstance(data, list):
        raise ConfigError(f"{source}: {path}: expected a list of rules")
    rules: list[Rule] = []
    seen: set[str] = set()
    for i, item in enumerate(data):
        rule = parse_rule(item, f"{path}[{i}]" if not _named(item) else path, source)
        if rule.name in seen:
            raise ConfigError(f"{path}.{rule.name}: duplicate rule name")
        seen.add(rule.name)
        rules.append(rule)
    return rules


def _named(item: object) -> bool:
    return isinstance(item, Mapping) and isinstance(item.get("name"), str) and bool(item["name"])


def load_rule_file(path: str | Path) -> list[Rule]:
    """Rules from a YAML file; errors are prefixed with the file name.

    Raises:
        ConfigError: on unreadable YAML or an invalid rule.
    """
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{p}: cannot load rules: {exc}") from None
    try:
        return load_rules(data, str(p))
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


def load_default_rules() -> list[Rule]:
    """The default rule pack shipped as ``otel_agents/processors/default_rules.yaml``."""
    return load_rule_file(Path(__file__).with_name("default_rules.yaml"))


# ------------------------------------------------------------------------------------------------
# Evaluation
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Sample:
    """A rule's verdict for one group at one evaluation."""

    labels: dict[str, str]
    value: float
    active: bool
    severity: str
    annotations: dict[str, str] = dataclasses.field(default_factory=dict)
    trace_ids: tuple[str, ...] = ()


class _Buckets:
    """Time-bucketed accumulator vectors for one rule and one group (bounded by the window)."""

    __slots__ = ("buckets", "res", "span", "width")

    def __init__(self, res: float, span: float, width: int) -> None:
        self.res = res
        self.span = span
        self.width = width
        self.buckets: deque[tuple[int, np.ndarray[Any, np.dtype[np.float64]]]] = deque()

    def add(self, now: float, vec: np.ndarray[Any, np.dtype[np.float64]]) -> None:
        idx = int(now // self.res)
        if self.buckets and self.buckets[-1][0] == idx:
            self.buckets[-1][1][:] += vec
        else:
            self.buckets.append((idx, vec.astype(np.float64, copy=True)))
        self.prune(now)

    def prune(self, now: float) -> None:
        oldest = int((now - self.span) // self.res)
        while self.buckets and self.buckets[0][0] < oldest:
            self.buckets.popleft()

    def total(self, now: float, window: float) -> np.ndarray[Any, np.dtype[np.float64]]:
        # A bucket counts when its start lies inside (now - window, now]: windows are exact to
        # one bucket (window / 60).
        first = int((now - window) // self.res) + 1
        acc = np.zeros(self.width)
        for idx, vec in reversed(self.buckets):
            if idx < first:
                break
            acc += vec
        return acc


def _quantile(hist: np.ndarray[Any, np.dtype[np.float64]], q: float) -> float | None:
    total = float(hist.sum())
    if total <= 0:
        return None
    rank = q * total
    cum = np.cumsum(hist)
    i = int(np.searchsorted(cum, rank, side="left"))
    i = min(i, len(hist) - 1)
    # bucket 0 holds values <= first bound (incl. zero); bucket i holds (b[i-1], b[i]]
    lower = 0.0 if i == 0 else float(_HIST_BOUNDS[i - 1])
    upper = float(_HIST_BOUNDS[min(i, len(_HIST_BOUNDS) - 1)])
    before = float(cum[i - 1]) if i > 0 else 0.0
    inside = float(hist[i])
    frac = (rank - before) / inside if inside > 0 else 1.0
    return lower + (upper - lower) * frac


class _SafeDict(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def render_template(template: str, values: Mapping[str, Any]) -> str:
    """``{agent}``/``{value:.2f}`` substitution that leaves unknown fields untouched."""
    try:
        return template.format_map(_SafeDict(values))
    except (ValueError, IndexError, KeyError, AttributeError, TypeError):
        return template


class RuleEvaluator:
    """Accumulates span batches and findings for one rule and answers its condition per group."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        c = rule.config
        self._cfg = c
        # Which per-span measures this rule accumulates (vector layout).
        if c.kind == "threshold":
            self._measures = [c.measure]
        elif c.kind == "ratio" or (c.kind == "burn_rate" and c.objective > 0):
            self._measures = [c.numerator, c.denominator]
        elif c.kind in ("budget", "burn_rate"):
            self._measures = ["cost"]
        elif c.kind == "percentile":
            self._measures = [c.measure]
        else:
            self._measures = []
        self._width = (
            len(_HIST_BOUNDS) + 1 if c.kind == "percentile" else len(self._measures) + 2
        )  # + count + max
        horizon = rule.max_window
        shortest = min([w.short for w in c.windows] or [horizon])
        self._res = max(min(horizon, shortest) / 60.0, 0.05)
        self._horizon = horizon
        self._series: dict[tuple[str, ...], _Buckets] = {}
        self._findings: dict[tuple[str, ...], tuple[float, Finding]] = {}
        self._budget_period: dict[tuple[str, ...], tuple[int, float]] = {}

    @property
    def is_span_rule(self) -> bool:
        """Fed by span batches (as opposed to findings)."""
        return self._cfg.kind not in ("anomaly", "finding")

    # -------------------------------------------------------------- spans
    def add_batch(self, batch: Any, now: float) -> None:
        """Accumulate a SpanBatch (columns per docs/architecture.md) at receiver time ``now``."""
        n = len(batch.kind) if hasattr(batch, "kind") else int(batch.n)
        if n == 0 or not self.is_span_rule:
            return
        mask = np.ones(n, dtype=bool)
        for m in self.rule.where:
            mask &= _match_column(_column(batch, SPAN_LABELS[m.name]), m)
        if not mask.any():
            return
        idx = np.nonzero(mask)[0]
        keys, inverse = _group_codes(batch, self._cfg.by, idx)
        values = {name: _measure(batch, name)[idx] for name in self._measures}
        c = self._cfg
        g = len(keys)
        if c.kind == "percentile":
            vals = values[c.measure]
            slot = np.searchsorted(_HIST_BOUNDS, vals, side="left")
            flat = inverse * self._width + slot
            mat = np.bincount(flat, minlength=g * self._width).reshape(g, self._width)
            mats = mat.astype(np.float64)
        else:
            mats = np.zeros((g, self._width))
            # Under analysis sampling a span stands for ``weight`` received spans: sums and
            # counts are Horvitz-Thompson estimates of all traffic (cost and budget rules must
            # not under-fire under load); ratios are unchanged in expectation.
            weight = getattr(batch, "weight", None)
            w = None
            if weight is not None and bool(getattr(batch, "sampled", False)):
                w = np.asarray(weight, dtype=np.float64)[idx]
            for j, name in enumerate(self._measures):
                v = values[name] if w is None else values[name] * w
                mats[:, j] = np.bincount(inverse, weights=v, minlength=g)
            mats[:, -2] = np.bincount(inverse, weights=w, minlength=g)
            if self._measures:
                vmax = np.full(g, -np.inf)
                np.maximum.at(vmax, inverse, values[self._measures[0]])
                mats[:, -1] = vmax
        for gi, key in enumerate(keys):
            series = self._series.get(key)
            if series is None:
                if len(self._series) >= MAX_SERIES_PER_RULE:
                    # label cardinality is bounded: the excess shares one overflow series
                    key = tuple(OVERFLOW for _ in key)
                    series = self._series.get(key)
                if series is None:
                    series = self._series[key] = _Buckets(self._res, self._horizon, self._width)
            if c.kind == "percentile":
                series.add(now, mats[gi])
            else:
                vec = mats[gi].copy()
                # max is not additive: keep it in its own bucket slot via maximum on merge
                if series.buckets and series.buckets[-1][0] == int(now // self._res):
                    prev_max = series.buckets[-1][1][-1]
                    series.buckets[-1][1][-1] = 0.0
                    series.add(now, vec)
                    series.buckets[-1][1][-1] = max(prev_max, vec[-1])
                else:
                    series.add(now, vec)
            if c.kind == "budget":
                period_idx = int(now // c.period)
                prev_idx, spent = self._budget_period.get(key, (period_idx, 0.0))
                if prev_idx != period_idx:
                    spent = 0.0
                self._budget_period[key] = (period_idx, spent + float(mats[gi][0]))

    # ----------------------------------------------------------- findings
    def add_finding(self, finding: Finding, now: float) -> bool:
        """Record a finding when the rule selects it; ``True`` when it did."""
        c = self._cfg
        if self.is_span_rule:
            return False
        kinds = c.finding_kinds or (["anomaly"] if c.kind == "anomaly" else [])
        if finding.kind not in kinds:
            return False
        if finding.score < c.min_score:
            return False
        if _sev_rank(finding.severity) < _sev_rank(c.min_severity):
            return False
        labels = {**finding.labels, "kind": finding.kind, "key": finding.key}
        if not matches_all(self.rule.where, labels):
            return False
        key = tuple(labels.get(b, "") for b in c.by)
        if key not in self._findings and len(self._findings) >= MAX_SERIES_PER_RULE:
            key = tuple(OVERFLOW for _ in key)
        prev = self._findings.get(key)
        if prev is not None and now - prev[0] <= c.resolve_after and prev[1].score > finding.score:
            # keep the worst finding of the current episode as the alert's value
            self._findings[key] = (now, dataclasses.replace(prev[1], observed_at=now))
        else:
            self._findings[key] = (now, finding)
        return True

    # ----------------------------------------------------------- evaluate
    def evaluate(self, now: float) -> list[Sample]:
        """The rule's value and condition for every group with data."""
        c = self._cfg
        out: list[Sample] = []
        if not self.is_span_rule:
            for key, (seen, f) in list(self._findings.items()):
                if now - seen > c.resolve_after:
                    del self._findings[key]
                    out.append(self._sample(key, f.score, False, f.severity, finding=f))
                    continue
                out.append(self._sample(key, f.score, True, f.severity, finding=f))
            return out
        for key, series in list(self._series.items()):
            series.prune(now)
            if not series.buckets and key not in self._budget_period:
                del self._series[key]
                out.append(self._sample(key, math.nan, False, c.severity))
                continue
            value, active, severity = self._condition(key, series, now)
            out.append(self._sample(key, value, active, severity))
        return out

    def _condition(
        self, key: tuple[str, ...], series: _Buckets, now: float
    ) -> tuple[float, bool, str]:
        c = self._cfg
        op = _OPS[c.op]
        if c.kind == "threshold":
            tot = series.total(now, c.window)
            count = tot[-2]
            if c.aggregation == "sum":
                value = tot[0]
            elif c.aggregation == "rate":
                value = tot[0] / c.window * c.rate_unit
            elif c.aggregation == "count":
                value = count
            elif c.aggregation == "avg":
                value = tot[0] / count if count else math.nan
            else:  # max over buckets in the window
                first = int((now - c.window) // series.res) + 1
                maxes = [v[-1] for i, v in series.buckets if i >= first]
                value = max(maxes) if maxes else math.nan
            ok = count >= c.min_count and not math.isnan(value)
            return float(value), bool(ok and op(value, c.threshold)), c.severity
        if c.kind == "ratio":
            tot = series.total(now, c.window)
            num, den = tot[0], tot[1]
            if den <= 0 or den < c.min_count:
                return math.nan, False, c.severity
            value = num / den
            return float(value), bool(op(value, c.threshold)), c.severity
        if c.kind == "percentile":
            hist = series.total(now, c.window)
            if hist.sum() < max(c.min_count, 1):
                return math.nan, False, c.severity
            q = _quantile(hist, c.quantile)
            if q is None:
                return math.nan, False, c.severity
            return q, bool(op(q, c.threshold)), c.severity
        if c.kind == "budget":
            period_idx, spent = self._budget_period.get(key, (int(now // c.period), 0.0))
            if period_idx != int(now // c.period):
                spent = 0.0
                self._budget_period[key] = (int(now // c.period), 0.0)
            value = spent / c.budget
            return value, bool(op(value, c.threshold)), c.severity
        # burn_rate
        best: tuple[float, str] | None = None
        worst_burn = 0.0
        for w in c.windows:
            burns = [self._burn(series, now, win) for win in (w.long, w.short)]
            worst_burn = max(worst_burn, burns[0])
            if all(b > w.factor for b in burns) and (
                best is None or _sev_rank(w.severity) > _sev_rank(best[1])
            ):
                best = (burns[0], w.severity)
        if best is not None:
            return best[0], True, best[1]
        return worst_burn, False, c.severity

    def _burn(self, series: _Buckets, now: float, window: float) -> float:
        c = self._cfg
        tot = series.total(now, window)
        if c.objective > 0:
            num, den = tot[0], tot[1]
            if den <= 0 or den < c.min_count:
                return 0.0
            return float((num / den) / (1.0 - c.objective))
        allowed_per_s = c.budget / c.period
        return float((tot[0] / window) / allowed_per_s)

    def _sample(
        self,
        key: tuple[str, ...],
        value: float,
        active: bool,
        severity: str,
        *,
        finding: Finding | None = None,
    ) -> Sample:
        c = self._cfg
        sev = c.severity
        if sev == "from_finding" or (c.kind == "burn_rate" and active):
            sev = severity
        labels = {**c.labels, "alertname": c.name, "severity": sev}
        for b, v in zip(c.by, key, strict=False):
            if v:
                labels[b] = v
        values: dict[str, Any] = {
            **labels,
            "value": value,
            "threshold": c.threshold,
            "window": _fmt_duration(c.window),
        }
        if finding is not None:
            values.update(
                title=finding.title,
                explanation=finding.explanation,
                kind=finding.kind,
                key=finding.key,
                score=finding.score,
            )
        annotations = {k: render_template(v, values) for k, v in c.annotations.items()}
        trace_ids = finding.trace_ids if finding is not None else ()
        return Sample(labels, value, active, sev, annotations, tuple(trace_ids))


def _fmt_duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _sev_rank(severity: str) -> int:
    try:
        return SEVERITIES.index(severity)
    except ValueError:
        return -1


def _column(batch: Any, name: str) -> np.ndarray[Any, Any]:
    col = getattr(batch, name)
    arr: np.ndarray[Any, Any] = (
        col if isinstance(col, np.ndarray) else np.asarray(col, dtype=object)
    )
    return arr


def _distinct(col: np.ndarray[Any, Any]) -> tuple[list[str], np.ndarray[Any, Any]]:
    """Distinct values (as strings) and each row's index into them.

    Hash-based (``_batch.group_keys``): label columns are Python strings, which numpy sorts with
    Python comparisons after an ``astype(str)`` copy; unhashable values take that sort path.
    """
    try:
        keys, inv = group_keys(col)
    except TypeError:
        u, sinv = np.unique(col.astype(str), return_inverse=True)
        return [str(x) for x in u.tolist()], sinv.reshape(-1)
    return [k[0] if isinstance(k[0], str) else str(k[0]) for k in keys], inv


def _match_column(col: np.ndarray[Any, Any], m: Matcher) -> np.ndarray[Any, np.dtype[np.bool_]]:
    # Evaluate the matcher once per distinct value, then broadcast (no per-span Python loop).
    uniq, inv = _distinct(col)
    hits = np.fromiter((m.matches({m.name: u}) for u in uniq), dtype=bool, count=len(uniq))
    out: np.ndarray[Any, np.dtype[np.bool_]] = hits[inv]
    return out


def _group_codes(
    batch: Any, by: Sequence[str], idx: np.ndarray[Any, Any]
) -> tuple[list[tuple[str, ...]], np.ndarray[Any, Any]]:
    if not by:
        return [()], np.zeros(len(idx), dtype=np.int64)
    code = np.zeros(len(idx), dtype=np.int64)
    uniqs = []
    for b in by:
        u, inv = _distinct(_column(batch, SPAN_LABELS[b])[idx])
        code = code * len(u) + inv
        uniqs.append(u)
    ucode, inverse = np.unique(code, return_inverse=True)
    keys: list[tuple[str, ...]] = []
    sizes = [len(u) for u in uniqs]
    for c in ucode.tolist():
        parts = []
        for size, u in zip(reversed(sizes), reversed(uniqs), strict=False):
            parts.append(u[c % size])
            c //= size
        keys.append(tuple(reversed(parts)))
    return keys, inverse.reshape(-1)


def _measure(batch: Any, name: str) -> np.ndarray[Any, np.dtype[np.float64]]:
    if name == "calls":
        return np.ones(len(batch.kind), dtype=np.float64)
    if name == "errors":
        status = np.asarray(batch.status_code)
        err = status == 2
        et = getattr(batch, "error_type", None)
        if et is not None:
            err = err | (np.asarray(et, dtype=object).astype(str) != "")
        out: np.ndarray[Any, np.dtype[np.float64]] = err.astype(np.float64)
        return out
    if name == "duration":
        d = np.asarray(batch.end_ns, dtype=np.int64) - np.asarray(batch.start_ns, dtype=np.int64)
        return np.maximum(d, 0).astype(np.float64) / 1e9
    if name == "tokens":
        tok: np.ndarray[Any, np.dtype[np.float64]] = (
            np.asarray(batch.input_tokens) + np.asarray(batch.output_tokens)
        ).astype(np.float64)
        return tok
    if name == "unpriced":
        return np.asarray(batch.unpriced).astype(np.float64)
    return np.asarray(getattr(batch, name), dtype=np.float64)
