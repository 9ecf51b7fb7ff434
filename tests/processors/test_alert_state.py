# SPDX-License-Identifier: Apache-2.0
"""Alertmanager semantics of the dispatcher (routing, grouping, timers, inhibition, silences)."""

from __future__ import annotations

import pytest
from otel_agents.processors._alert_state import (
    Alert,
    Dispatcher,
    InhibitRuleConfig,
    build_route,
    fingerprint,
    format_labels,
    parse_matcher,
)

from otel_agents._errors import ConfigError

T0 = 1_700_000_000.0


def _route(**kw: object) -> object:
    base = {"receiver": "team", "group_by": ["alertname"], "group_wait": "30s",
            "group_interval": "5m", "repeat_interval": "4h"}  # fmt: skip
    base.update(kw)
    return build_route(base)


def _alert(name: str, t: float, **labels: str) -> Alert:
    return Alert(labels={"alertname": name, **labels}, starts_at=t)


def _run(
    d: Dispatcher, until: float, step: float = 1.0, start: float = T0
) -> list[tuple[float, object]]:
    out = []
    t = start
    while t <= until:
        out += [(t, n) for n in d.flush_due(t)]
        t += step
    return out


def test_group_wait_batches_alerts_of_one_group() -> None:
    """Two alerts of one group arriving within group_wait are sent once, together, at group_wait."""
    d = Dispatcher(_route())  # type: ignore[arg-type]
    d.put(_alert("A", T0, agent="x"), T0)
    d.put(_alert("A", T0 + 10, agent="y"), T0 + 10)
    sent = _run(d, T0 + 60)
    assert [t for t, _ in sent] == [T0 + 30]
    n = sent[0][1]
    assert n.status == "firing" and len(n.alerts) == 2  # type: ignore[attr-defined]
    assert n.group_key == '{}:{alertname="A"}'  # type: ignore[attr-defined]
    assert n.common_labels == {"alertname": "A"}  # type: ignore[attr-defined]


def test_new_alert_waits_for_group_interval_and_repeat_interval_renotifies() -> None:
    """After the first flush a new alert goes out at the next group_interval tick; unchanged
    groups are repeated only once repeat_interval has passed."""
    d = Dispatcher(_route(group_interval="60s", repeat_interval="150s"))  # type: ignore[arg-type]
    d.put(_alert("A", T0, agent="x"), T0)
    sent = _run(d, T0 + 39)
    d.put(_alert("A", T0 + 40, agent="y"), T0 + 40)  # after the first flush at T0+30
    sent += _run(d, T0 + 400, start=T0 + 40)
    times = [t - T0 for t, _ in sent]
    # 30: x; 90: y is new; 150: nothing new, 90 + 150 = 240 -> at the 270 tick (first tick >= 240)
    assert times == [30, 90, 270]
    assert [len(n.alerts) for _, n in sent] == [1, 2, 2]  # type: ignore[attr-defined]


def test_resolved_alert_notifies_then_group_is_destroyed() -> None:
    """A resolved alert is sent (send_resolved) at the next tick and the group then disappears."""
    d = Dispatcher(_route(group_interval="60s"))  # type: ignore[arg-type]
    d.put(_alert("A", T0), T0)
    _run(d, T0 + 30)
    a = _alert("A", T0)
    a.ends_at = T0 + 45
    d.put(a, T0 + 45)
    sent = _run(d, T0 + 200, start=T0 + 31)
    assert [(t - T0, n.status) for t, n in sent] == [(90, "resolved")]  # type: ignore[attr-defined]
    assert d.next_deadline() is None


def test_send_resolved_false_sends_nothing_on_resolve() -> None:
    """With send_resolved off for the receiver, resolution is logged but not sent."""
    d = Dispatcher(_route(group_interval="60s"), send_resolved={"team": False})  # type: ignore[arg-type]
    d.put(_alert("A", T0), T0)
    assert len(_run(d, T0 + 30)) == 1
    a = _alert("A", T0)
    a.ends_at = T0 + 40
    d.put(a, T0 + 40)
    assert _run(d, T0 + 300, start=T0 + 31) == []


def test_alert_older_than_group_wait_flushes_immediately() -> None:
    """An alert whose start is already group_wait in the past opens a group that flushes at once."""
    d = Dispatcher(_route())  # type: ignore[arg-type]
    d.put(_alert("A", T0 - 100), T0)
    assert len(d.flush_due(T0)) == 1


def test_inhibition_with_equal_labels() -> None:
    """A firing critical alert mutes warnings with the same agent, not other agents' or itself."""
    rules = [
        InhibitRuleConfig(['severity="critical"'], ['severity="warning"'], ["agent"]).build("r"),
        InhibitRuleConfig(['alertname="Self"'], ['alertname="Self"'], []).build("s"),
    ]
    d = Dispatcher(_route(group_by=["alertname", "agent"]), rules)  # type: ignore[arg-type]
    d.put(_alert("Crit", T0, severity="critical", agent="x"), T0)
    d.put(_alert("Warn", T0, severity="warning", agent="x"), T0)
    d.put(_alert("Warn", T0, severity="warning", agent="y"), T0)
    d.put(_alert("Self", T0), T0)
    sent = d.flush_due(T0 + 30)
    got = sorted(format_labels(a.labels) for n in sent for a in n.alerts)
    assert got == [
        '{agent="x", alertname="Crit", severity="critical"}',
        '{agent="y", alertname="Warn", severity="warning"}',
        '{alertname="Self"}',
    ]
    # once the source resolves, the target is no longer inhibited
    src = _alert("Crit", T0, severity="critical", agent="x")
    src.ends_at = T0 + 31
    d.put(src, T0 + 31)
    assert d.inhibited_by({"alertname": "Warn", "severity": "warning", "agent": "x"}, T0 + 32) == []


def test_silence_mutes_until_expired() -> None:
    """A silenced alert is not sent; after the silence expires it goes out at the next tick."""
    d = Dispatcher(_route(group_interval="60s"))  # type: ignore[arg-type]
    s = d.add_silence([parse_matcher('agent="x"')], starts_at=T0, ends_at=T0 + 1000,
                      created_by="alice", comment="maintenance", now=T0)  # fmt: skip
    d.put(_alert("A", T0, agent="x"), T0)
    assert _run(d, T0 + 100) == []
    assert s.state(T0 + 1) == "active"
    d.expire_silence(s.id, T0 + 120)
    assert s.state(T0 + 120) == "expired"
    sent = _run(d, T0 + 200, start=T0 + 101)
    assert [t - T0 for t, _ in sent] == [150]


def test_silence_validation() -> None:
    """Silences need a creator, an end after the start, and a matcher not matching everything."""
    d = Dispatcher(_route())  # type: ignore[arg-type]
    m = [parse_matcher('agent="x"')]
    with pytest.raises(ValueError, match="created_by"):
        d.add_silence(m, starts_at=T0, ends_at=T0 + 1, created_by="", now=T0)
    with pytest.raises(ValueError, match="after"):
        d.add_silence(m, starts_at=T0, ends_at=T0, created_by="a", now=T0)
    with pytest.raises(ValueError, match="empty string"):
        d.add_silence(
            [parse_matcher('agent=~".*"')], starts_at=T0, ends_at=T0 + 1, created_by="a", now=T0
        )


def test_routing_tree_first_match_and_continue() -> None:
    """Children match in order; the first match wins unless it sets continue."""
    root = build_route({
        "receiver": "default", "group_by": ["alertname"],
        "routes": [
            {"receiver": "pager", "matchers": ['severity="critical"'], "continue": True},
            {"receiver": "slack", "matchers": ['severity=~"critical|warning"']},
            {"receiver": "never", "matchers": ['severity="warning"']},
        ],
    })  # fmt: skip
    assert [r.receiver for r in root.match({"severity": "critical"})] == ["pager", "slack"]
    assert [r.receiver for r in root.match({"severity": "warning"})] == ["slack"]
    assert [r.receiver for r in root.match({"severity": "info"})] == ["default"]
    assert root.routes[0].key == '{}/{severity="critical"}'
    assert root.routes[0].group_wait == 30.0  # inherited default


def test_route_errors_name_the_key() -> None:
    """Invalid routes fail at load with the key path."""
    with pytest.raises(ConfigError, match=r"route\.routes\[0\]\.matchers\[0\]"):
        build_route({"receiver": "a", "routes": [{"matchers": ["not a matcher"]}]})
    with pytest.raises(ConfigError, match=r"route\.group_interval"):
        build_route({"receiver": "a", "group_interval": "soon"})
    with pytest.raises(ConfigError, match=r"route\.matchers"):
        build_route({"receiver": "a", "matchers": ['a="b"']})


def test_matchers_are_anchored_and_treat_missing_as_empty() -> None:
    """Regex matchers match the whole value; a missing label equals the empty string."""
    m = parse_matcher('agent=~"plan"')
    assert not m.matches({"agent": "planner"})
    assert parse_matcher("agent=~plan.*").matches({"agent": "planner"})
    assert parse_matcher('team!=""').matches({"team": "a"})
    assert parse_matcher('team=""').matches({})
    assert parse_matcher('x!~"a|b"').matches({"x": "c"})
    assert str(parse_matcher('a = "q\\"x"')) == 'a="q\\"x"'


def test_fingerprint_is_order_independent_and_label_sensitive() -> None:
    """The fingerprint depends on the label set only, like Alertmanager's."""
    a = fingerprint({"alertname": "A", "agent": "x"})
    assert a == fingerprint({"agent": "x", "alertname": "A"})
    assert a != fingerprint({"alertname": "A", "agent": "y"})
    assert len(a) == 16
