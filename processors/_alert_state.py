# SPDX-License-Identifier: Apache-2.0
"""Alertmanager-compatible notification state: routing, grouping, inhibition, silences.

This is a re-implementation of the documented behaviour of Prometheus Alertmanager (v0.25) for
alerts made inside the receiver, so that an operator who knows Alertmanager's configuration gets
the same notifications from us:

* a routing tree (``matchers``, ``continue``, inherited ``receiver`` / ``group_by`` /
  ``group_wait`` / ``group_interval`` / ``repeat_interval``);
* aggregation groups keyed by route and ``group_by`` labels, flushed after ``group_wait`` and then
  every ``group_interval``; a flush notifies only when the notification log says so (a new
  firing alert, a newly resolved alert with ``send_resolved``, all resolved, or
  ``repeat_interval`` elapsed) — the ``DedupStage.needsUpdate`` rules;
* inhibition rules (``source_matchers``, ``target_matchers``, ``equal``; an alert matching both
  sides never inhibits itself);
* silences (label matchers, start/end, creator, comment; expiry).

Everything is driven by an explicit ``now`` so the pipeline's clock (``host.now()``) and fake
clocks in tests give the same behaviour; nothing here sleeps or does I/O.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from otel_agents._errors import ConfigError

__all__ = [
    "Alert",
    "Dispatcher",
    "InhibitRule",
    "Matcher",
    "Notification",
    "Route",
    "Silence",
    "fingerprint",
    "format_labels",
    "parse_matcher",
]

MatchOp = Literal["=", "!=", "=~", "!~"]

_FNV64_OFFSET = 14695981039346656037
_FNV64_PRIME = 1099511628211
_SEP = 0xFF
_NFLOG_RETENTION = 120 * 3600.0


def fingerprint(labels: Mapping[str, str]) -> str:
    """The label set's fingerprint exactly as Alertmanager computes it (FNV-1a 64, hex).

    Same bytes as ``model.LabelSet.Fingerprint()``: names sorted, each ``name 0xff value 0xff``.
    Sharing the algorithm lets the differential test compare fingerprints across engines.
    """
    h = _FNV64_OFFSET
    for name in sorted(labels):
        for chunk in (name.encode(), bytes([_SEP]), labels[name].encode(), bytes([_SEP])):
            for b in chunk:
                h ^= b
                h = (h * _FNV64_PRIME) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def format_labels(labels: Mapping[str, str]) -> str:
    """``{a="1", b="2"}`` — Prometheus' ``LabelSet.String()`` (sorted, Go-quoted values)."""
    parts = [f"{k}={_go_quote(labels[k])}" for k in sorted(labels)]
    return "{" + ", ".join(parts) + "}"


def _go_quote(value: str) -> str:
    out = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{out}"'


_MATCHER_RE = re.compile(
    r"""^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|[^"]*?)\s*$"""
)


@dataclasses.dataclass(frozen=True)
class Matcher:
    """One label matcher (``name op value``); regexes are fully anchored, as in Alertmanager."""

    name: str
    op: MatchOp
    value: str

    def __post_init__(self) -> None:
        if self.op in ("=~", "!~"):
            try:
                re.compile(self.value)
            except re.error as exc:
                raise ConfigError(f"invalid regular expression {self.value!r}: {exc}") from None

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy the matcher (a missing label counts as ``""``)."""
        v = labels.get(self.name, "")
        if self.op == "=":
            return v == self.value
        if self.op == "!=":
            return v != self.value
        hit = _compiled(self.value).fullmatch(v) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f"{self.name}{self.op}{_go_quote(self.value)}"

    def to_json(self) -> dict[str, Any]:
        """Alertmanager API v2 matcher shape."""
        return {
            "name": self.name,
            "value": self.value,
            "isRegex": self.op in ("=~", "!~"),
            "isEqual": self.op in ("=", "=~"),
        }


_REGEX_CACHE: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    rx = _REGEX_CACHE.get(pattern)
    if rx is None:
        if len(_REGEX_CACHE) > 4096:
            _REGEX_CACHE.clear()
        rx = _REGEX_CACHE[pattern] = re.compile(pattern)
    return rx


def parse_matcher(text: str) -> Matcher:
    """Parse ``severity="critical"``, ``agent=~"plan.*"``, ``team!=ops`` (quotes optional).

    Raises:
        ConfigError: when the text is not a matcher.
    """
    m = _MATCHER_RE.match(text)
    if not m:
        raise ConfigError(f'invalid matcher {text!r} (expected name="value", !=, =~ or !~)')
    name, op, raw = m.group(1), m.group(2), m.group(3)
    if raw.startswith('"'):
        value = re.sub(r"\\(.)", lambda g: {"n": "\n"}.get(g.group(1), g.group(1)), raw[1:-1])
    else:
        value = raw
    return Matcher(name, op, value)  # type: ignore[arg-type]


def parse_matchers(items: Iterable[str], path: str) -> tuple[Matcher, ...]:
    """Parse a list of matcher strings; errors name ``path[i]``."""
    out = []
    for i, text in enumerate(items):
        try:
            out.append(parse_matcher(text))
        except ConfigError as exc:
            raise ConfigError(f"{path}[{i}]: {exc}") from None
    return tuple(out)


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    """All matchers match (an empty list matches everything)."""
    return all(m.matches(labels) for m in matchers)


@dataclasses.dataclass
class Alert:
    """One alert as Alertmanager knows it (labels identify it; ``ends_at`` resolves it).

    Attributes:
        labels: identifying labels (``alertname``, ``severity``, grouping dimensions...).
        annotations: ``summary``, ``description``, ``runbook_url``, ``dashboard_url``...
        starts_at: unix seconds the alert started firing.
        ends_at: unix seconds it resolved, or ``None`` while firing.
        generator_url: link back to what made it (a trace link, a rule page).
        updated_at: when we last received it.
    """

    labels: dict[str, str]
    annotations: dict[str, str] = dataclasses.field(default_factory=dict)
    starts_at: float = 0.0
    ends_at: float | None = None
    generator_url: str = ""
    updated_at: float = 0.0

    @property
    def fingerprint(self) -> str:
        """Alertmanager fingerprint of the labels."""
        return fingerprint(self.labels)

    def resolved(self, now: float) -> bool:
        """Resolved at ``now`` (``ends_at`` reached)."""
        return self.ends_at is not None and self.ends_at <= now


@dataclasses.dataclass(frozen=True)
class Route:
    """A node of the routing tree, settings already inherited from the parent."""

    receiver: str
    group_by: tuple[str, ...] | None  # None means "..." (every label: no grouping)
    group_wait: float
    group_interval: float
    repeat_interval: float
    matchers: tuple[Matcher, ...] = ()
    continue_: bool = False
    routes: tuple[Route, ...] = ()
    key: str = "{}"

    def match(self, labels: Mapping[str, str]) -> list[Route]:
        """Routes an alert goes to, as Alertmanager's ``Route.Match`` (depth first)."""
        if not matches_all(self.matchers, labels):
            return []
        out: list[Route] = []
        for child in self.routes:
            hits = child.match(labels)
            out.extend(hits)
            if hits and not child.continue_:
                break
        return out or [self]

    def group_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        """The grouping labels of an alert on this route."""
        if self.group_by is None:
            return dict(labels)
        return {k: labels[k] for k in self.group_by if k in labels}


@dataclasses.dataclass(frozen=True)
class RouteConfig:
    """YAML shape of a route (Alertmanager's names; durations as ``30s``/``5m``/``4h``)."""

    receiver: str | None = None
    group_by: list[str] | None = None
    group_wait: str | float | None = None
    group_interval: str | float | None = None
    repeat_interval: str | float | None = None
    matchers: list[str] = dataclasses.field(default_factory=list)
    # ``continue`` is a Python keyword; the YAML key is mapped in build_route.
    continue_: bool = False
    routes: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def build_route(
    data: Mapping[str, Any] | None,
    *,
    path: str = "route",
    parent: Route | None = None,
    key_prefix: str = "",
) -> Route:
    """Build a route tree from Alertmanager-style YAML, inheriting settings from ``parent``.

    Raises:
        ConfigError: naming the key path of the first problem.
    """
    from otel_agents._configtypes import decode, parse_duration

    raw = dict(data or {})
    if "continue" in raw:
        raw["continue_"] = raw.pop("continue")
    cfg = decode(RouteConfig, raw, path)
    if parent is None:
        if cfg.matchers:
            raise ConfigError(f"{path}.matchers: the root route must match every alert")
        if cfg.continue_:
            raise ConfigError(f"{path}.continue: cannot be set on the root route")
    receiver = cfg.receiver or (parent.receiver if parent else "")
    if not receiver:
        raise ConfigError(f"{path}.receiver: the root route needs a receiver")

    def dur(value: str | float | None, name: str, inherited: float) -> float:
        if value is None:
            return inherited
        return parse_duration(value, f"{path}.{name}")

    group_by: tuple[str, ...] | None
    if cfg.group_by is None:
        group_by = parent.group_by if parent else ()
    elif "..." in cfg.group_by:
        if len(cfg.group_by) != 1:
            raise ConfigError(f"{path}.group_by: '...' must be the only entry")
        group_by = None
    else:
        group_by = tuple(cfg.group_by)
    matchers = parse_matchers(cfg.matchers, f"{path}.matchers")
    group_interval = dur(
        cfg.group_interval, "group_interval", parent.group_interval if parent else 300.0
    )
    if group_interval <= 0:
        raise ConfigError(f"{path}.group_interval: must be greater than 0")
    repeat_interval = dur(
        cfg.repeat_interval, "repeat_interval", parent.repeat_interval if parent else 14400.0
    )
    if repeat_interval <= 0:
        raise ConfigError(f"{path}.repeat_interval: must be greater than 0")
    # Alertmanager's route key: parent key + "/" + the matchers in braces.
    own = "{" + ",".join(str(m) for m in matchers) + "}"
    key = own if parent is None else f"{parent.key}/{own}"
    node = Route(
        receiver=receiver,
        group_by=group_by,
        group_wait=dur(cfg.group_wait, "group_wait", parent.group_wait if parent else 30.0),
        group_interval=group_interval,
        repeat_interval=repeat_interval,
        matchers=matchers,
        continue_=cfg.continue_,
        key=key,
    )
    children = tuple(
        build_route(child, path=f"{path}.routes[{i}]", parent=node)
        for i, child in enumerate(cfg.routes)
    )
    return dataclasses.replace(node, routes=children)


def iter_routes(route: Route) -> Iterable[Route]:
    """Every node of the tree (for validating receiver names)."""
    yield route
    for child in route.routes:
        yield from iter_routes(child)


@dataclasses.dataclass(frozen=True)
class InhibitRule:
    """Mute ``target`` alerts while a firing ``source`` alert has the same ``equal`` labels."""

    source_matchers: tuple[Matcher, ...]
    target_matchers: tuple[Matcher, ...]
    equal: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class InhibitRuleConfig:
    """YAML shape of an inhibition rule."""

    source_matchers: list[str] = dataclasses.field(default_factory=list)
    target_matchers: list[str] = dataclasses.field(default_factory=list)
    equal: list[str] = dataclasses.field(default_factory=list)

    def build(self, path: str) -> InhibitRule:
        """Parse the matchers (errors name ``path``)."""
        return InhibitRule(
            parse_matchers(self.source_matchers, f"{path}.source_matchers"),
            parse_matchers(self.target_matchers, f"{path}.target_matchers"),
            tuple(self.equal),
        )


@dataclasses.dataclass
class Silence:
    """Mutes every alert whose labels match all ``matchers`` between ``starts_at`` and ``ends_at``."""

    id: str
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str = ""
    updated_at: float = 0.0

    def active(self, now: float) -> bool:
        """Silencing at ``now``."""
        return self.starts_at <= now < self.ends_at

    def state(self, now: float) -> str:
        """``pending`` | ``active`` | ``expired`` (Alertmanager's silence states)."""
        if now < self.starts_at:
            return "pending"
        return "active" if now < self.ends_at else "expired"

    def to_json(self, now: float) -> dict[str, Any]:
        """JSON for ``/api/v1/silences``."""
        return {
            "id": self.id,
            "matchers": [m.to_json() for m in self.matchers],
            "matchers_text": [str(m) for m in self.matchers],
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "created_by": self.created_by,
            "comment": self.comment,
            "updated_at": self.updated_at,
            "status": self.state(now),
        }


@dataclasses.dataclass(frozen=True)
class AlertSnapshot:
    """An alert as sent in one notification (immutable copy)."""

    status: str  # firing | resolved
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: float
    ends_at: float | None
    generator_url: str
    fingerprint: str


@dataclasses.dataclass(frozen=True)
class Notification:
    """What one flush of one aggregation group sends to one receiver."""

    receiver: str
    group_key: str
    status: str  # firing when any alert fires, else resolved
    group_labels: Mapping[str, str]
    common_labels: Mapping[str, str]
    common_annotations: Mapping[str, str]
    alerts: tuple[AlertSnapshot, ...]
    sent_at: float

    @property
    def firing(self) -> tuple[AlertSnapshot, ...]:
        """The firing alerts."""
        return tuple(a for a in self.alerts if a.status == "firing")

    @property
    def resolved(self) -> tuple[AlertSnapshot, ...]:
        """The resolved alerts."""
        return tuple(a for a in self.alerts if a.status == "resolved")


@dataclasses.dataclass
class _NflogEntry:
    firing: frozenset[str]
    resolved: frozenset[str]
    timestamp: float


@dataclasses.dataclass
class _Group:
    route: Route
    labels: dict[str, str]
    key: str
    alerts: dict[str, Alert]
    next_flush: float
    has_flushed: bool = False


class Dispatcher:
    """Routes, groups, inhibits, silences and decides when to notify (single-threaded core).

    All methods are thread-safe (one lock): the pipeline thread puts alerts and ticks, the admin
    API thread adds silences.
    """

    def __init__(
        self,
        route: Route,
        inhibit_rules: Sequence[InhibitRule] = (),
        *,
        send_resolved: Mapping[str, bool] | None = None,
    ) -> None:
        self._route = route
        self._inhibit = tuple(inhibit_rules)
        self._send_resolved = dict(send_resolved or {})
        self._alerts: dict[str, Alert] = {}
        self._groups: dict[tuple[str, str], _Group] = {}
        self._nflog: dict[tuple[str, str], _NflogEntry] = {}
        self._silences: dict[str, Silence] = {}
        self._lock = threading.RLock()

    # ---------------------------------------------------------------- alerts
    def put(self, alert: Alert, now: float) -> None:
        """Receive (or update) an alert, as ``POST /api/v2/alerts`` does."""
        with self._lock:
            fp = alert.fingerprint
            prev = self._alerts.get(fp)
            if prev is not None and not prev.resolved(now) and alert.starts_at > prev.starts_at:
                # A firing alert keeps its original start (Alertmanager merges overlapping ones).
                alert = dataclasses.replace(alert, starts_at=prev.starts_at)
            alert.updated_at = now
            self._alerts[fp] = alert
            for route in self._route.match(alert.labels):
                glabels = route.group_labels(alert.labels)
                gkey = f"{route.key}:{format_labels(glabels)}"
                k = (route.receiver, gkey)
                group = self._groups.get(k)
                if group is None:
                    if alert.resolved(now):
                        # A group is never opened for an alert that is already resolved and
                        # was never notified: Alertmanager would flush it and notify nothing.
                        continue
                    group = _Group(route, glabels, gkey, {}, now + route.group_wait)
                    self._groups[k] = group
                group.alerts[fp] = alert
                if not group.has_flushed and alert.starts_at + route.group_wait < now:
                    group.next_flush = now

    def alerts(self) -> list[Alert]:
        """Every alert the dispatcher holds (firing and recently resolved)."""
        with self._lock:
            return list(self._alerts.values())

    # -------------------------------------------------------------- silences
    def add_silence(
        self,
        matchers: Sequence[Matcher],
        *,
        starts_at: float,
        ends_at: float,
        created_by: str,
        comment: str = "",
        now: float,
        silence_id: str | None = None,
    ) -> Silence:
        """Create a silence (``created_by`` required, ``ends_at`` after ``starts_at``).

        Raises:
            ValueError: on an invalid silence.
        """
        if not matchers:
            raise ValueError("a silence needs at least one matcher")
        if all(m.matches({}) for m in matchers):
            # Alertmanager refuses matchers that all match the empty string (they would mute
            # every alert).
            raise ValueError("at least one matcher must not match the empty string")
        if ends_at <= starts_at:
            raise ValueError("ends_at must be after starts_at")
        if not created_by:
            raise ValueError("created_by is required")
        with self._lock:
            s = Silence(
                silence_id or str(uuid.uuid4()),
                tuple(matchers),
                starts_at,
                ends_at,
                created_by,
                comment,
                now,
            )
            self._silences[s.id] = s
            return s

    def expire_silence(self, silence_id: str, now: float) -> Silence | None:
        """End a silence now (``None`` when unknown)."""
        with self._lock:
            s = self._silences.get(silence_id)
            if s is None:
                return None
            if s.ends_at > now:
                s.ends_at = max(now, s.starts_at)
                s.updated_at = now
            return s

    def silences(self) -> list[Silence]:
        """All silences, expired included."""
        with self._lock:
            return list(self._silences.values())

    def gc_silences(self, now: float, retention: float) -> None:
        """Forget silences expired longer than ``retention`` ago."""
        with self._lock:
            for sid in [s.id for s in self._silences.values() if s.ends_at + retention < now]:
                del self._silences[sid]

    # ---------------------------------------------------------------- muting
    def silenced_by(self, labels: Mapping[str, str], now: float) -> list[str]:
        """IDs of active silences muting ``labels``."""
        with self._lock:
            return [
                s.id
                for s in self._silences.values()
                if s.active(now) and matches_all(s.matchers, labels)
            ]

    def inhibited_by(self, labels: Mapping[str, str], now: float) -> list[str]:
        """Fingerprints of firing alerts inhibiting ``labels``."""
        out: list[str] = []
        with self._lock:
            target_fp = fingerprint(labels)
            for rule in self._inhibit:
                if not matches_all(rule.target_matchers, labels):
                    continue
                for src in self._alerts.values():
                    if src.resolved(now) or not matches_all(rule.source_matchers, src.labels):
                        continue
                    if src.fingerprint == target_fp:
                        continue  # never inhibits itself
                    if all(src.labels.get(k, "") == labels.get(k, "") for k in rule.equal):
                        out.append(src.fingerprint)
        return out

    def muted(self, labels: Mapping[str, str], now: float) -> bool:
        """Silenced or inhibited at ``now``."""
        return bool(self.silenced_by(labels, now) or self.inhibited_by(labels, now))

    # ---------------------------------------------------------------- timers
    def next_deadline(self) -> float | None:
        """Earliest pending group flush (for callers that sleep until then)."""
        with self._lock:
            return min((g.next_flush for g in self._groups.values()), default=None)

    def flush_due(self, now: float) -> list[Notification]:
        """Flush every group whose timer is due; return the notifications to send."""
        out: list[Notification] = []
        with self._lock:
            for k, group in list(self._groups.items()):
                if group.next_flush > now:
                    continue
                group.has_flushed = True
                group.next_flush = now + group.route.group_interval
                n = self._flush(group, now)
                if n is not None:
                    out.append(n)
                # Resolved alerts leave the group once flushed (Alertmanager deletes them
                # after a successful notification); an empty group is destroyed.
                for fp in [fp for fp, a in group.alerts.items() if a.resolved(now)]:
                    del group.alerts[fp]
                if not group.alerts:
                    del self._groups[k]
            self._gc_alerts(now)
            # The notification log forgets entries after Alertmanager's default retention
            # (--data.retention=120h), bounding memory.
            for k in [k for k, e in self._nflog.items() if e.timestamp < now - _NFLOG_RETENTION]:
                del self._nflog[k]
        return out

    def _flush(self, group: _Group, now: float) -> Notification | None:
        visible = [a for a in group.alerts.values() if not self.muted(a.labels, now)]
        if not visible:
            return None
        firing = frozenset(a.fingerprint for a in visible if not a.resolved(now))
        resolved = frozenset(a.fingerprint for a in visible if a.resolved(now))
        key = (group.route.receiver, group.key)
        entry = self._nflog.get(key)
        send_resolved = self._send_resolved.get(group.route.receiver, True)
        if not self._needs_update(
            entry, firing, resolved, group.route.repeat_interval, now, send_resolved
        ):
            return None
        self._nflog[key] = _NflogEntry(firing, resolved, now)
        if not firing and not send_resolved:
            return None  # the log is updated, the receiver hears nothing (Alertmanager: same)
        snaps = tuple(
            AlertSnapshot(
                "resolved" if a.resolved(now) else "firing",
                dict(a.labels),
                dict(a.annotations),
                a.starts_at,
                a.ends_at,
                a.generator_url,
                a.fingerprint,
            )
            for a in sorted(visible, key=lambda a: format_labels(a.labels))
            if send_resolved or not a.resolved(now)
        )
        return Notification(
            receiver=group.route.receiver,
            group_key=group.key,
            status="firing" if firing else "resolved",
            group_labels=dict(group.labels),
            common_labels=_common([a.labels for a in snaps]),
            common_annotations=_common([a.annotations for a in snaps]),
            alerts=snaps,
            sent_at=now,
        )

    @staticmethod
    def _needs_update(
        entry: _NflogEntry | None,
        firing: frozenset[str],
        resolved: frozenset[str],
        repeat: float,
        now: float,
        send_resolved: bool,
    ) -> bool:
        # Alertmanager notify.DedupStage.needsUpdate, rule for rule.
        if entry is None:
            return bool(firing)
        if not firing <= entry.firing:
            return True
        if not firing:
            return bool(entry.firing)
        if send_resolved and not resolved <= entry.resolved:
            return True
        return entry.timestamp < now - repeat

    def _gc_alerts(self, now: float) -> None:
        # Resolved alerts that are no longer in any group are forgotten (they can no longer
        # inhibit anything and nothing will notify about them again).
        grouped = {fp for g in self._groups.values() for fp in g.alerts}
        for fp in [fp for fp, a in self._alerts.items() if a.resolved(now) and fp not in grouped]:
            del self._alerts[fp]


def _common(maps: Sequence[Mapping[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = dict(maps[0])
    for m in maps[1:]:
        first = {k: v for k, v in first.items() if m.get(k) == v}
    return first
