# SPDX-License-Identifier: Apache-2.0
"""The ``alert`` pipeline stage: rules → alert states → Alertmanager-style notifications.

Per evaluation (every ``evaluation_interval`` of receiver time, from ``tick``):

1. every rule evaluates its groups (:mod:`._alert_rules`);
2. each alert instance moves ``inactive → pending → firing → resolved`` as a Prometheus rule
   (``for``, ``keep_firing_for``), state changes go to the SQLite store with history, to the
   ``otel_agents_alerts`` gauge and as OTLP log records (``host.export_logs``);
3. firing and resolved alerts enter the :class:`Dispatcher` (routing, grouping, inhibition,
   silences), whose due flushes become notifications delivered on the notifier worker thread;
4. optionally the same alerts are pushed to real Alertmanagers (API v2).

The admin API (``/api/v1/alerts``, ``/api/v1/silences``) reads the store and lets a person
acknowledge, resolve or silence an alert; each action records who and when.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from otel_agents.exporters._alert_outputs import AlertMetrics, alert_log_request
from otel_agents.exporters._alert_store import AlertStore
from otel_agents.exporters._notifiers import (
    AlertmanagerPushConfig,
    AlertmanagerPusher,
    Notifier,
    NotifierWorker,
    ReceiverConfig,
    RetryConfig,
    build_receivers,
    decode_receivers,
)
from otel_agents.exporters._ssrf import EgressConfig, RefusedTarget, UrlPolicy
from otel_agents.processors._alert_rules import (
    Rule,
    RuleEvaluator,
    load_default_rules,
    load_rule_file,
    load_rules,
    render_template,
)
from otel_agents.processors._alert_state import (
    Alert,
    AlertSnapshot,
    Dispatcher,
    InhibitRuleConfig,
    Notification,
    Route,
    build_route,
    fingerprint,
    format_labels,
    iter_routes,
    parse_matcher,
)

from otel_agents._component import ApiResponse, Component, Finding, Host
from otel_agents._configtypes import DURATION, decode, parse_duration
from otel_agents._errors import ConfigError

__all__ = ["AlertConfig", "AlertEngine", "create_alert_engine"]

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class AlertConfig:
    """Settings of the ``alert`` processor (Alertmanager's ``route``/``receivers`` names).

    Attributes:
        default_rules: load the shipped default rule pack (``default_rules.yaml``).
        disabled_rules: names of rules (default or not) to skip.
        rule_files: more YAML rule files; a rule named like a default one replaces it.
        rules: inline rules (same shape as in the files).
        evaluation_interval: how often rules are evaluated (receiver time).
        external_labels: labels added to every alert.
        external_url: base URL of this receiver's admin endpoint (links in notifications).
        trace_url: template of a trace link, ``{trace_id}`` substituted (Jaeger, Tempo...).
        dashboard_url: template of a dashboard link, alert labels substituted.
        route: Alertmanager routing tree (root receiver defaults to ``default``).
        receivers: Alertmanager-style receivers (webhook/slack/pagerduty/email configs).
        inhibit_rules: Alertmanager inhibition rules.
        alertmanagers: real Alertmanagers to push alerts to (API v2).
        egress: the outbound URL policy for every notifier target.
        retry: delivery retry/backoff and queue size.
        history_retention: how long resolved alerts, history and expired silences are kept.
        log_records: emit alert state changes as OTLP log records.
    """

    default_rules: bool = True
    disabled_rules: list[str] = dataclasses.field(default_factory=list)
    rule_files: list[str] = dataclasses.field(default_factory=list)
    rules: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    evaluation_interval: float = dataclasses.field(default=1.0, metadata=DURATION)
    external_labels: dict[str, str] = dataclasses.field(default_factory=dict)
    external_url: str = ""
    trace_url: str = ""
    dashboard_url: str = ""
    route: dict[str, Any] = dataclasses.field(default_factory=dict)
    receivers: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    inhibit_rules: list[InhibitRuleConfig] = dataclasses.field(default_factory=list)
    alertmanagers: list[AlertmanagerPushConfig] = dataclasses.field(default_factory=list)
    egress: EgressConfig = dataclasses.field(default_factory=EgressConfig)
    retry: RetryConfig = dataclasses.field(default_factory=RetryConfig)
    history_retention: float = dataclasses.field(default=7 * 86400.0, metadata=DURATION)
    log_records: bool = True

    def validate(self) -> list[str]:
        """Load-time validation of rules, route and receivers (messages name rule and key)."""
        try:
            self.load_rules()
            route = self.build_route()
            receivers = self.receiver_configs()
            names = {r.name for r in receivers} | ({"default"} if not receivers else set())
            for node in iter_routes(route):
                if node.receiver not in names:
                    return [f"route: receiver {node.receiver!r} is not defined in receivers"]
            for i, ir in enumerate(self.inhibit_rules):
                ir.build(f"inhibit_rules[{i}]")
            policy = UrlPolicy(self.egress)
            for r in receivers:
                for kind in ("webhook_configs", "slack_configs", "pagerduty_configs"):
                    for j, c in enumerate(getattr(r, kind)):
                        url = getattr(c, "url", "")
                        if url:
                            try:
                                policy.check_syntax(url)
                            except RefusedTarget as exc:
                                return [
                                    f"receivers.{r.name}.{kind}[{j}].url: target refused: {exc}"
                                ]
            for i, am in enumerate(self.alertmanagers):
                try:
                    policy.check_syntax(am.url)
                except RefusedTarget as exc:
                    return [f"alertmanagers[{i}].url: target refused: {exc}"]
            if self.evaluation_interval <= 0:
                return ["evaluation_interval: must be positive"]
        except ConfigError as exc:
            return [str(exc)]
        return []

    def load_rules(self) -> list[Rule]:
        """Default pack, then files, then inline rules; later definitions replace earlier ones.

        Raises:
            ConfigError: naming the file/rule/key.
        """
        by_name: dict[str, Rule] = {}
        if self.default_rules:
            for r in load_default_rules():
                by_name[r.name] = r
        for f in self.rule_files:
            for r in load_rule_file(f):
                by_name[r.name] = r
        for r in load_rules(self.rules, "inline", "rules"):
            by_name[r.name] = r
        unknown = [n for n in self.disabled_rules if n not in by_name]
        if unknown:
            raise ConfigError(f"disabled_rules: no rule named {unknown[0]!r}")
        return [r for n, r in by_name.items() if n not in self.disabled_rules and r.config.enabled]

    def build_route(self) -> Route:
        """The routing tree (root receiver ``default`` when not configured)."""
        data = dict(self.route)
        data.setdefault("receiver", "default" if not self.receivers else None)
        if data["receiver"] is None:
            del data["receiver"]
        return build_route(data, path="route")

    def receiver_configs(self) -> list[ReceiverConfig]:
        """Decoded receivers."""
        return decode_receivers(self.receivers, "receivers")


@dataclasses.dataclass
class _State:
    labels: dict[str, str]
    fingerprint: str
    rule: str
    state: str  # pending | firing | resolved
    active_at: float
    value: float
    annotations: dict[str, str]
    fired_at: float | None = None
    resolved_at: float | None = None
    last_true: float = 0.0
    suppressed: bool = False  # resolved by a person: ignore until the condition clears
    hold_until: float = 0.0  # restored after a restart: no data yet is not "condition false"
    generator_url: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "state": self.state,
            "value": None if math.isnan(self.value) else self.value,
            "active_at": self.active_at,
            "starts_at": self.fired_at,
            "ends_at": self.resolved_at,
            "updated_at": self.last_true,
            "generator_url": self.generator_url,
        }


class AlertEngine(Component):
    """The ``alert`` component."""

    def __init__(self, config: AlertConfig, name: str = "") -> None:
        self.config = config
        self.name = name
        self.rules = config.load_rules()
        self._evaluators = [RuleEvaluator(r) for r in self.rules]
        self._route = config.build_route()
        self._receiver_cfgs = config.receiver_configs()
        self._policy = UrlPolicy(config.egress)
        self._inhibit = [
            ir.build(f"inhibit_rules[{i}]") for i, ir in enumerate(config.inhibit_rules)
        ]
        self._notifiers: dict[str, list[Notifier]] = {}
        self._send_resolved: dict[str, bool] = {}
        # rebuilt in start() once the receivers' send_resolved settings are known
        self.dispatcher = Dispatcher(self._route, self._inhibit)
        self._states: dict[str, _State] = {}
        self._lock = threading.RLock()
        self._last_eval = -math.inf
        self._last_prune = -math.inf
        self._host: Host | None = None
        self.store: AlertStore | None = None
        self.metrics: AlertMetrics | None = None
        self.worker = NotifierWorker(config.retry, on_outcome=self._on_outcome)
        self._pushers = [
            AlertmanagerPusher(i, c, self._policy) for i, c in enumerate(config.alertmanagers)
        ]
        self._push_state: dict[str, tuple[AlertSnapshot, float]] = {}
        self._push_dirty = False
        self._last_push = -math.inf

    # ------------------------------------------------------------ lifecycle
    def start(self, host: Host) -> None:
        """Open the store, build the notifiers (targets checked), register the API."""
        self._host = host
        suffix = f"-{self.name}" if self.name else ""
        self.store = AlertStore(Path(host.data_dir) / f"alerts{suffix}.sqlite")
        self.metrics = AlertMetrics.for_registry(host.metrics_registry)
        self._notifiers = build_receivers(
            self._receiver_cfgs, self._policy, external_url=self.config.external_url
        )
        # Alertmanager receivers send resolved notifications when any integration wants them.
        self._send_resolved = {
            name: any(n.send_resolved for n in items) for name, items in self._notifiers.items()
        }
        self.dispatcher = Dispatcher(self._route, self._inhibit, send_resolved=self._send_resolved)
        for p in self._pushers:
            try:
                p.check()
            except RefusedTarget as exc:
                raise ConfigError(f"alertmanagers: target refused: {exc}") from None
            except OSError:
                _log.warning("alertmanager %s does not resolve yet", p.name)
        now = host.now()
        for s in self.store.load_silences():
            try:
                self.dispatcher.add_silence(
                    [parse_matcher(m) for m in s["matchers_text"]],
                    starts_at=s["starts_at"],
                    ends_at=s["ends_at"],
                    created_by=s["created_by"],
                    comment=s.get("comment", ""),
                    now=now,
                    silence_id=s["id"],
                )
            except (KeyError, ValueError, ConfigError):
                _log.warning("skipping an unreadable stored silence")
        self._restore(now)
        self.worker.start()
        host.subscribe_findings(self.on_finding)
        # A second, named stage (``alert/eu``) serves its own routes: /api/v1/alerts-eu...
        sfx = f"-{self.name}" if self.name else ""
        host.register_api(f"/api/v1/alerts{sfx}", self.api_alerts)
        host.register_api(f"/api/v1/alerts{sfx}/ack", self.api_ack)
        host.register_api(f"/api/v1/alerts{sfx}/resolve", self.api_resolve)
        host.register_api(f"/api/v1/alerts{sfx}/silence", self.api_silence_alert)
        host.register_api(f"/api/v1/alerts{sfx}/test", self.api_test_receiver)
        host.register_api(f"/api/v1/silences{sfx}", self.api_silences)
        host.register_api(f"/api/v1/silences{sfx}/expire", self.api_expire_silence)

    def _restore(self, now: float) -> None:
        """Take over the alerts the store says were active before a restart.

        Their rules decide at the next evaluation whether they still hold; an alert whose rule
        no longer exists resolves now. Firing ones re-enter the dispatcher (the notification
        log is in memory, so a receiver may hear about them once more — rather that than a
        resolution nobody is told about).
        """
        assert self.store is not None
        rules = {r.name: r for r in self.rules}
        for row in self.store.active():
            st = _State(
                dict(row["labels"]), row["fingerprint"], row["alertname"], row["state"],
                row["active_at"], math.nan if row["value"] is None else float(row["value"]),
                dict(row["annotations"]), fired_at=row["starts_at"], last_true=row["updated_at"],
                generator_url=row["generator_url"] or "",
            )  # fmt: skip
            rule = rules.get(st.rule)
            if rule is None:
                st.state, st.resolved_at = "resolved", now
                self.store.upsert({**st.to_json(), "updated_at": now})
                self.store.record(
                    st.fingerprint, st.rule, now, "resolved", "", {"rule_removed": True}
                )
                continue
            c = rule.config
            st.hold_until = now + (
                c.resolve_after if c.kind in ("anomaly", "finding") else rule.max_window
            )
            self._states[st.fingerprint] = st
            if st.state == "firing":
                self.dispatcher.put(self._alert(st), now)
                self._push_state[st.fingerprint] = (self._snapshot(st), now)
                self._push_dirty = True

    def shutdown(self) -> None:
        """Deliver queued notifications (bounded) and close the store."""
        self.worker.shutdown(timeout=5.0)
        if self.store is not None:
            self.store.close()

    def _now(self) -> float:
        assert self._host is not None
        return self._host.now()

    # ---------------------------------------------------------------- input
    def process_traces(self, batch: Any) -> None:
        """Accumulate a span batch into every span rule (at receiver time)."""
        now = self._now()
        with self._lock:
            for ev in self._evaluators:
                if not ev.is_span_rule:
                    continue
                try:
                    ev.add_batch(batch, now)
                except Exception:  # one rule's trouble must not stop the pipeline or the others
                    _log.exception("alert rule %s: could not take a span batch", ev.rule.name)

    def on_finding(self, finding: Finding) -> None:
        """Findings feed anomaly/finding rules."""
        if self._host is None:
            return
        now = self._now()
        with self._lock:
            for ev in self._evaluators:
                try:
                    ev.add_finding(finding, now)
                except Exception:  # a malformed finding must not break its emitter
                    _log.exception("alert rule %s: could not take a finding", ev.rule.name)

    def tick(self, now: float) -> None:
        """Evaluate rules when due, flush due groups, push to Alertmanagers."""
        try:
            if now - self._last_eval >= self.config.evaluation_interval - 1e-9:
                self._last_eval = now
                self.evaluate(now)
            for n in self.dispatcher.flush_due(now):
                self._deliver(n)
            self._push(now)
            if now - self._last_prune > 3600 and self.store is not None:
                self._last_prune = now
                self.store.prune(now - self.config.history_retention)
                self.dispatcher.gc_silences(now, self.config.history_retention)
        except Exception:  # a broken rule must not stop the pipeline
            _log.exception("alert evaluation failed")

    # ----------------------------------------------------------- evaluation
    def evaluate(self, now: float) -> list[dict[str, Any]]:
        """Run every rule once; returns the state changes made."""
        changes: list[dict[str, Any]] = []
        with self._lock:
            for ev in self._evaluators:
                rule = ev.rule
                seen: set[str] = set()
                for sample in ev.evaluate(now):
                    labels = {**self.config.external_labels, **sample.labels}
                    fp = fingerprint(labels)
                    seen.add(fp)
                    st = self._states.get(fp)
                    if not sample.active:
                        if st is not None:
                            self._inactive(st, rule, sample.value, now, changes)
                        continue
                    if st is not None and st.suppressed:
                        continue
                    annotations = self._annotations(sample.annotations, labels, sample.trace_ids)
                    if st is None or st.state == "resolved":
                        st = _State(
                            labels, fp, rule.name, "pending", now, sample.value, annotations
                        )
                        st.generator_url = annotations.get("trace_url") or self._generator_url(fp)
                        self._states[fp] = st
                        changes.append(self._change(st, "pending", now))
                    st.value = sample.value
                    st.annotations = annotations
                    st.last_true = now
                    if st.state == "pending" and now - st.active_at >= rule.config.for_ - 1e-9:
                        st.state = "firing"
                        st.fired_at = now
                        changes.append(self._change(st, "firing", now))
                        self.dispatcher.put(self._alert(st), now)
                # An active alert whose group produced no sample at all (its data aged out
                # earlier, or it was restored after a restart) has a false condition.
                for st in [s for s in self._states.values() if s.rule == rule.name]:
                    if st.fingerprint in seen or st.state not in ("pending", "firing"):
                        continue
                    if now < st.hold_until:
                        continue  # windows refill after a restart before "no data" counts
                    self._inactive(st, rule, math.nan, now, changes)
            # forget resolved states after a while (the store keeps history)
            for fp in [
                fp
                for fp, s in self._states.items()
                if s.state == "resolved"
                and not s.suppressed
                and (s.resolved_at or now) < now - 3600
            ]:
                del self._states[fp]
            self._publish(changes, now)
        return changes

    def _inactive(
        self, st: _State, rule: Rule, value: float, now: float, changes: list[dict[str, Any]]
    ) -> None:
        """The rule's condition is false for ``st`` at ``now``."""
        if st.suppressed:
            st.suppressed = False  # the condition cleared once: a hand-resolved alert may re-fire
            return
        if st.state == "pending":
            del self._states[st.fingerprint]
            changes.append(self._change(st, "inactive", now))
        elif st.state == "firing":
            if now - st.last_true < rule.config.keep_firing_for:
                return
            st.state = "resolved"
            st.resolved_at = now
            if not math.isnan(value):
                st.value = value
            changes.append(self._change(st, "resolved", now))
            self.dispatcher.put(self._alert(st), now)

    def _annotations(
        self, base: Mapping[str, str], labels: Mapping[str, str], trace_ids: Sequence[str]
    ) -> dict[str, str]:
        out = dict(base)
        if trace_ids and self.config.trace_url and "trace_url" not in out:
            out["trace_url"] = render_template(self.config.trace_url, {"trace_id": trace_ids[0]})
        if self.config.dashboard_url and "dashboard_url" not in out:
            out["dashboard_url"] = render_template(self.config.dashboard_url, labels)
        return out

    def _generator_url(self, fp: str) -> str:
        base = self.config.external_url.rstrip("/")
        return f"{base}/api/v1/alerts?fingerprint={fp}" if base else ""

    @staticmethod
    def _alert(st: _State) -> Alert:
        return Alert(
            labels=dict(st.labels),
            annotations=dict(st.annotations),
            starts_at=st.fired_at if st.fired_at is not None else st.active_at,
            ends_at=st.resolved_at if st.state == "resolved" else None,
            generator_url=st.generator_url,
        )

    def _change(self, st: _State, event: str, now: float) -> dict[str, Any]:
        d = st.to_json()
        d["event"] = event
        d["at"] = now
        return d

    def _publish(self, changes: list[dict[str, Any]], now: float) -> None:
        if self.store is not None:
            for c in changes:
                if c["event"] == "inactive":
                    # a pending alert that never fired: keep only the history line
                    self.store.record(c["fingerprint"], c["labels"]["alertname"], now, "inactive")
                    row = self.store.get(c["fingerprint"])
                    if row is not None and row["state"] == "pending":
                        self.store.upsert(
                            {**c, "state": "resolved", "ends_at": now, "updated_at": now}
                        )
                    continue
                self.store.upsert({**c, "updated_at": now})
                self.store.record(
                    c["fingerprint"],
                    c["labels"]["alertname"],
                    now,
                    c["event"],
                    detail={"value": c["value"], "labels": c["labels"]},
                )
        if self.metrics is not None:
            self.metrics.set_active((s.to_json() for s in self._states.values()), self.name)
        fired = [c for c in changes if c["event"] in ("firing", "resolved")]
        if fired:
            self._push_dirty = True
            for c in fired:
                st = self._states.get(c["fingerprint"])
                if st is not None:
                    self._push_state[c["fingerprint"]] = (self._snapshot(st), now)
        if self.config.log_records and self._host is not None and fired:
            log_changes = [{**c, "state": c["event"]} for c in fired]
            try:
                self._host.export_logs(alert_log_request(log_changes))
            except Exception:
                _log.exception("could not export alert log records")

    @staticmethod
    def _snapshot(st: _State) -> AlertSnapshot:
        return AlertSnapshot(
            "resolved" if st.state == "resolved" else "firing",
            dict(st.labels),
            dict(st.annotations),
            st.fired_at if st.fired_at is not None else st.active_at,
            st.resolved_at if st.state == "resolved" else None,
            st.generator_url,
            st.fingerprint,
        )

    # ------------------------------------------------------------- delivery
    def _deliver(self, n: Notification) -> None:
        if self.store is not None:
            for a in n.alerts:
                self.store.record(
                    a.fingerprint,
                    a.labels.get("alertname", ""),
                    n.sent_at,
                    "notified",
                    detail={"receiver": n.receiver, "status": a.status, "group_key": n.group_key},
                )
        for notifier in self._notifiers.get(n.receiver, []):
            payload = n
            if not notifier.send_resolved:
                firing = n.firing
                if not firing:
                    continue
                payload = dataclasses.replace(n, alerts=firing)
            self.worker.submit(notifier.name, notifier.kind, _bind(notifier.notify, payload))

    def _push(self, now: float) -> None:
        if not self._pushers:
            return
        due = now - self._last_push >= min(p.config.resend_interval for p in self._pushers)
        if not (self._push_dirty or due):
            return
        with self._lock:
            retention = max(p.config.resolved_retention for p in self._pushers)
            resend = max(p.config.resend_interval for p in self._pushers)
            items = []
            for fp, (snap, at) in list(self._push_state.items()):
                if snap.status == "resolved":
                    if now - at > retention:
                        del self._push_state[fp]
                        continue
                    items.append(snap)
                else:
                    # As Prometheus does: a firing alert ends 4 resend intervals from now unless
                    # refreshed, so Alertmanager resolves it if the receiver stops.
                    items.append(dataclasses.replace(snap, ends_at=now + 4 * resend))
            self._push_dirty = False
            self._last_push = now
        if not items:
            return
        for p in self._pushers:
            self.worker.submit(p.name, p.kind, _bind(p.push, items))

    def _on_outcome(self, kind: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.outcome(kind, outcome)

    # ------------------------------------------------------------------ API
    def active_alerts(self) -> list[dict[str, Any]]:
        """Pending and firing alerts with acknowledgement and muting information."""
        assert self.store is not None
        now = self._now()
        out = []
        for a in self.store.active():
            a["silenced_by"] = self.dispatcher.silenced_by(a["labels"], now)
            a["inhibited_by"] = self.dispatcher.inhibited_by(a["labels"], now)
            out.append(a)
        return out

    def api_alerts(
        self, method: str, query: Mapping[str, list[str]], body: bytes | None
    ) -> ApiResponse:
        """``GET /api/v1/alerts?state=active|history|all[&fingerprint=&alertname=&since=&limit=&before=]``."""
        if method != "GET":
            return 405, {"error": "method not allowed"}
        if self.store is None:
            return 503, {"error": "not started"}
        state = _q(query, "state") or "active"
        try:
            limit = int(_q(query, "limit") or 100)
            since = _time_param(_q(query, "since"))
            before = _q(query, "before")
            before_id = int(before) if before else None
        except ValueError as exc:
            return 400, {"error": str(exc)}
        if state == "active":
            return 200, {"alerts": self.active_alerts()}
        if state == "all":
            return 200, {"alerts": self.store.alerts()}
        if state == "history":
            items = self.store.history(
                fingerprint=_q(query, "fingerprint"),
                alertname=_q(query, "alertname"),
                since=since,
                limit=limit,
                before_id=before_id,
            )
            nxt = str(items[-1]["id"]) if len(items) == max(1, min(limit, 1000)) else None
            return 200, {"history": items, "next_before": nxt}
        return 400, {"error": "state must be active, history or all"}

    def _action_body(
        self, method: str, body: bytes | None
    ) -> tuple[dict[str, Any] | None, ApiResponse | None]:
        if method != "POST":
            return None, (405, {"error": "method not allowed"})
        data, err = _json_object(body)
        if err is not None or data is None:
            return None, err
        if not isinstance(data.get("by"), str) or not data["by"].strip():
            return None, (400, {"error": "'by' (who) is required"})
        return data, None

    def api_ack(
        self, method: str, query: Mapping[str, list[str]], body: bytes | None
    ) -> ApiResponse:
        """``POST /api/v1/alerts/ack {"fingerprint", "by", "comment"?}``."""
        data, err = self._action_body(method, body)
        if err is not None or data is None or self.store is None:
            return err or (503, {"error": "not started"})
        fp = str(data.get("fingerprint", ""))
        now = self._now()
        if not self.store.acknowledge(fp, data["by"], now):
            return 404, {"error": "no active alert with that fingerprint"}
        row = self.store.get(fp)
        assert row is not None
        self.store.record(
            fp,
            row["alertname"],
            now,
            "acknowledged",
            data["by"],
            {"comment": str(data.get("comment", ""))},
        )
        with self._lock:
            st = self._states.get(fp)
        if st is not None:
            snap = self._snapshot(st)
            for route in self._route.match(st.labels):
                for notifier in self._notifiers.get(route.receiver, []):
                    self.worker.submit(notifier.name, notifier.kind, _bind_ack(notifier, snap))
        return 200, {"fingerprint": fp, "acked_by": data["by"], "acked_at": now}

    def api_resolve(
        self, method: str, query: Mapping[str, list[str]], body: bytes | None
    ) -> ApiResponse:
        """``POST /api/v1/alerts/resolve {"fingerprint", "by"}`` — resolve by hand."""
        data, err = self._action_body(method, body)
        if err is not None or data is None or self.store is None:
            return err or (503, {"error": "not started"})
        fp = str(data.get("fingerprint", ""))
        now = self._now()
        with self._lock:
            st = self._states.get(fp)
            if st is None or st.state not in ("pending", "firing"):
                return 404, {"error": "no active alert with that fingerprint"}
            was_firing = st.state == "firing"
            st.state = "resolved"
            st.resolved_at = now
            st.suppressed = True
            change = self._change(st, "resolved", now)
            self.store.upsert({**change, "updated_at": now})
            self.store.mark_resolved_by(fp, data["by"])
            self.store.record(fp, st.rule, now, "resolved", data["by"], {"manual": True})
            if was_firing:
                self.dispatcher.put(self._alert(st), now)
                self._push_state[fp] = (self._snapshot(st), now)
                self._push_dirty = True
            if self.metrics is not None:
                self.metrics.set_active((s.to_json() for s in self._states.values()), self.name)
        return 200, {"fingerprint": fp, "resolved_by": data["by"], "resolved_at": now}

    def api_silence_alert(
        self, method: str, query: Mapping[str, list[str]], body: bytes | None
    ) -> ApiResponse:
        """``POST /api/v1/alerts/silence {"fingerprint", "by", "duration": "1h", "comment"}``."""
        data, err = self._action_body(method, body)
        if err is not None or data is None or self.store is None:
            return err or (503, {"error": "not started"})
        row = self.store.get(str(data.get("fingerprint", "")))
        if row is None:
            return 404, {"error": "no alert with that fingerprint"}
        matchers = [f'{k}="{_esc(v)}"' for k, v in sorted(row["labels"].items())]
        return self._create_silence({**data, "matchers": matchers, "created_by": data["by"]})

    def api_test_receiver(
        self, method: str, query: Mapping[str, list[str]], body: bytes | None
    ) -> ApiResponse:
        """``POST /api/v1/alerts/test {"receiver", "by"}`` — send a test notification.

        The targets go through the same egress policy as delivery first; a refused target
        answers 400 with the reason and nothing is sent (the test path is no SSRF side door).
        """
        data, err = self._action_body(method, body)
        if err is not None or data is None:
            return err or (400, {"error": "bad request"})
        name = str(data.get("receiver", ""))
        notifiers = self._notifiers.get(name)
        if notifiers is None:
            return 404, {"error": f"no receiver named {name!r}"}
        for n in notifiers:
            try:
                n.check()
            except RefusedTarget as exc:
                return 400, {"error": f"{n.name}: target refused: {exc}"}
            except OSError as exc:
                return 400, {"error": f"{n.name}: {exc}"}
        now = self._now()
        labels = {"alertname": "TestNotification", "severity": "info", "receiver": name}
        snap = AlertSnapshot(
            "firing", labels,
            {"summary": f"Test notification requested by {data['by']}"},
            now, None, "", fingerprint(labels),
        )  # fmt: skip
        note = Notification(
            name, "{}:" + format_labels({"receiver": name}), "firing", labels, labels, dict(snap.annotations),
            (snap,), now,
        )  # fmt: skip
        for n in notifiers:
            self.worker.submit(n.name, n.kind, _bind(n.notify, note))
        return 202, {
            "receiver": name,
            "integrations": [n.name for n in notifiers],
            "by": data["by"],
        }

    def api_silences(
        self, method: str, query: Mapping[str, list[str]], body: bytes | None
    ) -> ApiResponse:
        """``GET /api/v1/silences`` or ``POST {"matchers": [...], "created_by", "ends_at"|"duration"}``."""
        now = self._now()
        if method == "GET":
            return 200, {"silences": [s.to_json(now) for s in self.dispatcher.silences()]}
        if method != "POST":
            return 405, {"error": "method not allowed"}
        data, err = _json_object(body)
        if err is not None or data is None:
            return err or (400, {"error": "bad request"})
        return self._create_silence(data)

    def _create_silence(self, data: Mapping[str, Any]) -> ApiResponse:
        now = self._now()
        by = data.get("created_by") or data.get("by")
        if not isinstance(by, str) or not by.strip():
            return 400, {"error": "'created_by' (who) is required"}
        raw = data.get("matchers")
        if not isinstance(raw, list) or not all(isinstance(m, str) for m in raw):
            return 400, {"error": "'matchers' must be a list of strings like severity=\"critical\""}
        try:
            matchers = [parse_matcher(m) for m in raw]
            starts = _time_param(data.get("starts_at")) or now
            if data.get("ends_at") is not None:
                ends = _time_param(data.get("ends_at"))
                assert ends is not None
            else:
                ends = starts + parse_duration(data.get("duration", "1h"), "duration")
            s = self.dispatcher.add_silence(
                matchers,
                starts_at=starts,
                ends_at=ends,
                created_by=by,
                comment=str(data.get("comment", "")),
                now=now,
            )
        except (ValueError, ConfigError) as exc:
            return 400, {"error": str(exc)}
        body = s.to_json(now)
        if self.store is not None:
            self.store.save_silence(s.id, body, s.ends_at)
            for st in list(self._states.values()):
                if st.state != "resolved" and all(m.matches(st.labels) for m in s.matchers):
                    self.store.record(
                        st.fingerprint, st.rule, now, "silenced", by, {"silence": s.id}
                    )
        return 200, body

    def api_expire_silence(
        self, method: str, query: Mapping[str, list[str]], body: bytes | None
    ) -> ApiResponse:
        """``POST /api/v1/silences/expire {"id", "by"}``."""
        data, err = self._action_body(method, body)
        if err is not None or data is None:
            return err or (400, {"error": "bad request"})
        now = self._now()
        s = self.dispatcher.expire_silence(str(data.get("id", "")), now)
        if s is None:
            return 404, {"error": "no silence with that id"}
        body_json = s.to_json(now)
        body_json["expired_by"] = data["by"]
        if self.store is not None:
            self.store.save_silence(s.id, body_json, s.ends_at)
        return 200, body_json


def _bind(fn: Any, arg: Any) -> Any:
    return lambda: fn(arg)


def _bind_ack(notifier: Notifier, snap: AlertSnapshot) -> Any:
    return lambda: notifier.acknowledge(snap)


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"')


def _json_object(body: bytes | None) -> tuple[dict[str, Any] | None, ApiResponse | None]:
    """A request body that must be a JSON object (empty means ``{}``), or the 400 to answer."""
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        return None, (400, {"error": "body must be JSON"})
    if not isinstance(data, dict):
        return None, (400, {"error": "body must be a JSON object"})
    return data, None


def _q(query: Mapping[str, list[str]], key: str) -> str | None:
    v = query.get(key)
    return v[0] if v else None


def _time_param(v: Any) -> float | None:
    """Unix seconds (number or numeric string) or RFC 3339."""
    if v is None or v == "":
        return None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    s = str(v)
    try:
        return float(s)
    except ValueError:
        pass
    import datetime as dt

    try:
        d = dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"invalid time {s!r} (unix seconds or RFC 3339)") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.timezone.utc)
    return d.timestamp()


def create_alert_engine(config: AlertConfig, name: str) -> AlertEngine:
    """Factory entry point."""
    return AlertEngine(config, name)


def decode_alert_config(data: object, path: str = "processors.alert") -> AlertConfig:
    """Decode and validate the ``alert`` block (errors name the key path)."""
    return decode(AlertConfig, data, path)
