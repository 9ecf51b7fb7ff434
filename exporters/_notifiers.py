# SPDX-License-Identifier: Apache-2.0
"""Alert notifiers: generic webhook, Slack, PagerDuty Events v2, email, Alertmanager API v2.

Receivers are configured with Alertmanager's names (``receivers: [{name, webhook_configs,
slack_configs, pagerduty_configs, email_configs}]``) so the same block routes our alerts and a
real Alertmanager's. Delivery runs on worker threads, one bounded lane per integration (the
pipeline never waits on the network; a dead target never delays the others), retries with
exponential backoff and jitter, and goes through the single egress policy of :mod:`._ssrf` (a
refused target fails permanently, never retried).

Secrets (webhook URLs that embed tokens, PagerDuty routing keys, SMTP passwords) come from the
config, an environment variable (``*_env``) or a file (``*_file``); they are held in
:class:`Secret`, whose ``repr`` never shows the value, and log lines name only the receiver.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import email.utils
import logging
import os
import queue
import random
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any

from otel_agents.exporters._ssrf import RefusedTarget, UrlPolicy, post_json

from otel_agents._configtypes import DURATION, decode
from otel_agents._errors import ConfigError

if TYPE_CHECKING:
    # type-only: processors imports this module (no import cycle at runtime)
    from otel_agents.processors._alert_state import AlertSnapshot, Notification

__all__ = [
    "AlertmanagerPushConfig",
    "AlertmanagerPusher",
    "DeliveryError",
    "EmailConfig",
    "EmailNotifier",
    "Notifier",
    "NotifierWorker",
    "PagerDutyConfig",
    "PagerDutyNotifier",
    "ReceiverConfig",
    "RetryConfig",
    "Secret",
    "SlackConfig",
    "SlackNotifier",
    "WebhookConfig",
    "WebhookNotifier",
    "build_receivers",
    "pagerduty_event",
    "rfc3339",
    "slack_message",
    "webhook_payload",
]

_log = logging.getLogger(__name__)

PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
_ZERO_TIME = "0001-01-01T00:00:00Z"


class DeliveryError(Exception):
    """A delivery failed; ``retryable`` says whether another attempt may succeed."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class Secret:
    """A secret string whose ``repr``/``str`` never reveal it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        """The secret value (only at the point of use)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('<redacted>')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


def resolve_secret(value: str, env: str, file: str, path: str, *, required: bool = True) -> Secret:
    """One secret from exactly one of: inline value, environment variable, file.

    Raises:
        ConfigError: naming ``path`` (never the value) when missing or ambiguous.
    """
    given = [k for k, v in (("", value), ("_env", env), ("_file", file)) if v]
    if len(given) > 1:
        raise ConfigError(f"{path}: set only one of {path.rsplit('.', 1)[-1]}, *_env, *_file")
    if value:
        return Secret(value)
    if env:
        got = os.environ.get(env)
        if not got:
            raise ConfigError(f"{path}_env: environment variable {env} is not set")
        return Secret(got)
    if file:
        try:
            return Secret(Path(file).read_text(encoding="utf-8").strip())
        except OSError as exc:
            raise ConfigError(f"{path}_file: cannot read {file}: {exc.strerror}") from None
    if required:
        raise ConfigError(f"{path}: required (inline, {path.rsplit('.', 1)[-1]}_env or _file)")
    return Secret("")


def rfc3339(ts: float | None) -> str:
    """Unix seconds → RFC 3339 UTC with milliseconds (``None`` → Go's zero time)."""
    if ts is None:
        return _ZERO_TIME
    d = dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


# ------------------------------------------------------------------------------------------------
# Config
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WebhookConfig:
    """Generic webhook (Alertmanager webhook payload, ``version: "4"``)."""

    url: str = ""
    url_env: str = ""
    url_file: str = ""
    send_resolved: bool = True
    max_alerts: int = 0
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class SlackConfig:
    """Slack incoming webhook with a Block Kit message."""

    url: str = ""
    url_env: str = ""
    url_file: str = ""
    channel: str = ""
    send_resolved: bool = True
    max_alerts: int = 10


@dataclasses.dataclass(frozen=True)
class PagerDutyConfig:
    """PagerDuty Events API v2: one event per alert, ``dedup_key`` from the fingerprint."""

    routing_key: str = ""
    routing_key_env: str = ""
    routing_key_file: str = ""
    url: str = PAGERDUTY_EVENTS_URL
    source: str = "otel-agents"
    client: str = "otel-agents"
    client_url: str = ""
    send_resolved: bool = True


@dataclasses.dataclass(frozen=True)
class EmailConfig:
    """SMTP with STARTTLS (required unless ``require_tls: false``)."""

    to: list[str] = dataclasses.field(default_factory=list)
    from_: str = "otel-agents@localhost"
    smarthost: str = ""
    hello: str = "localhost"
    auth_username: str = ""
    auth_password: str = ""
    auth_password_env: str = ""
    auth_password_file: str = ""
    require_tls: bool = True
    ca_file: str = ""
    send_resolved: bool = False

    def validate(self) -> list[str]:
        """Problems, each starting with the key."""
        out = []
        if not self.to:
            out.append("to: at least one recipient is required")
        host, _, port = self.smarthost.rpartition(":")
        if not host or not port.isdigit():
            out.append(f"smarthost: expected host:port, got {self.smarthost!r}")
        return out


@dataclasses.dataclass(frozen=True)
class ReceiverConfig:
    """A named receiver with its integrations (Alertmanager's ``receivers`` entry)."""

    name: str = ""
    webhook_configs: list[WebhookConfig] = dataclasses.field(default_factory=list)
    slack_configs: list[SlackConfig] = dataclasses.field(default_factory=list)
    pagerduty_configs: list[PagerDutyConfig] = dataclasses.field(default_factory=list)
    email_configs: list[EmailConfig] = dataclasses.field(default_factory=list)

    def validate(self) -> list[str]:
        """Problems, each starting with the key."""
        return [] if self.name else ["name: a receiver needs a name"]


@dataclasses.dataclass(frozen=True)
class AlertmanagerPushConfig:
    """Push alerts to a real Alertmanager's API v2 (``POST /api/v2/alerts``)."""

    url: str = ""
    resend_interval: float = dataclasses.field(default=60.0, metadata=DURATION)
    resolved_retention: float = dataclasses.field(default=900.0, metadata=DURATION)

    def validate(self) -> list[str]:
        """Problems, each starting with the key."""
        return [] if self.url else ["url: the Alertmanager base URL is required"]


@dataclasses.dataclass(frozen=True)
class RetryConfig:
    """Exponential backoff with jitter for deliveries."""

    initial_interval: float = dataclasses.field(default=1.0, metadata=DURATION)
    max_interval: float = dataclasses.field(default=30.0, metadata=DURATION)
    multiplier: float = 2.0
    max_elapsed_time: float = dataclasses.field(default=300.0, metadata=DURATION)
    max_attempts: int = 8
    queue_size: int = 1000


def decode_receivers(data: Sequence[Mapping[str, Any]], path: str) -> list[ReceiverConfig]:
    """Decode receiver blocks (maps the YAML key ``from`` to ``from_``).

    Raises:
        ConfigError: naming the key path; also on duplicate receiver names.
    """
    out: list[ReceiverConfig] = []
    for i, raw in enumerate(data):
        item = dict(raw) if isinstance(raw, Mapping) else raw
        if isinstance(item, dict) and isinstance(item.get("email_configs"), list):
            item["email_configs"] = [
                {("from_" if k == "from" else k): v for k, v in e.items()}
                if isinstance(e, Mapping)
                else e
                for e in item["email_configs"]
            ]
        name = item.get("name") if isinstance(item, dict) else None
        rpath = f"{path}.{name}" if isinstance(name, str) and name else f"{path}[{i}]"
        out.append(decode(ReceiverConfig, item, rpath))
    names = [r.name for r in out]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise ConfigError(f"{path}.{dup}: duplicate receiver name")
    return out


# ------------------------------------------------------------------------------------------------
# Payloads (pure functions: the published formats)
# ------------------------------------------------------------------------------------------------


def _alert_json(a: AlertSnapshot) -> dict[str, Any]:
    return {
        "status": a.status,
        "labels": dict(a.labels),
        "annotations": dict(a.annotations),
        "startsAt": rfc3339(a.starts_at),
        # Alertmanager hides the end of an alert that has not ended yet.
        "endsAt": rfc3339(a.ends_at) if a.status == "resolved" else _ZERO_TIME,
        "generatorURL": a.generator_url,
        "fingerprint": a.fingerprint,
    }


def webhook_payload(
    n: Notification, *, external_url: str = "", max_alerts: int = 0
) -> dict[str, Any]:
    """Alertmanager's webhook body (``version: "4"``), ``max_alerts`` truncation included."""
    alerts = list(n.alerts)
    truncated = 0
    if max_alerts and len(alerts) > max_alerts:
        truncated = len(alerts) - max_alerts
        alerts = alerts[:max_alerts]
    return {
        "version": "4",
        "groupKey": n.group_key,
        "truncatedAlerts": truncated,
        "status": n.status,
        "receiver": n.receiver,
        "groupLabels": dict(n.group_labels),
        "commonLabels": dict(n.common_labels),
        "commonAnnotations": dict(n.common_annotations),
        "externalURL": external_url,
        "alerts": [_alert_json(a) for a in alerts],
    }


def _trunc(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _title(n: Notification) -> str:
    count = f":{len(n.firing)}" if n.status == "firing" else ""
    name = n.group_labels.get("alertname") or n.common_labels.get("alertname") or "alerts"
    rest = " ".join(v for k, v in sorted(n.group_labels.items()) if k != "alertname")
    return f"[{n.status.upper()}{count}] {name}{(' ' + rest) if rest else ''}"


def slack_message(n: Notification, *, channel: str = "", max_alerts: int = 10) -> dict[str, Any]:
    """Slack incoming-webhook body: ``text`` fallback plus Block Kit ``blocks``.

    Respects Block Kit limits: header text ≤ 150 characters, section text ≤ 3000, at most 10
    fields per section, button text ≤ 75, URLs ≤ 3000, at most 50 blocks.
    """
    title = _title(n)
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _trunc(title, 150), "emoji": True},
        }
    ]
    shown = list(n.alerts)[: max(1, max_alerts)]
    for a in shown:
        summary = a.annotations.get("summary") or a.labels.get("alertname", "alert")
        desc = a.annotations.get("description", "")
        icon = ":red_circle:" if a.status == "firing" else ":large_green_circle:"
        text = f"{icon} *{_mrkdwn_escape(summary)}*"
        if desc:
            text += f"\n{_mrkdwn_escape(desc)}"
        fields = [
            {"type": "mrkdwn", "text": _trunc(f"*{_mrkdwn_escape(k)}:* {_mrkdwn_escape(v)}", 2000)}
            for k, v in sorted(a.labels.items())
            if k != "alertname"
        ][:10]
        section: dict[str, Any] = {
            "type": "section",
            "text": {"type": "mrkdwn", "text": _trunc(text, 3000)},
        }
        if fields:
            section["fields"] = fields
        blocks.append(section)
        buttons = []
        for key, label in (
            ("runbook_url", "Runbook"),
            ("dashboard_url", "Dashboard"),
            ("trace_url", "Trace"),
        ):
            url = a.annotations.get(key, "")
            if url.startswith(("https://", "http://")) and len(url) <= 3000:
                buttons.append(
                    {"type": "button", "text": {"type": "plain_text", "text": label}, "url": url}
                )
        if a.generator_url.startswith(("https://", "http://")) and "trace_url" not in a.annotations:
            buttons.append(
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Source"},
                    "url": a.generator_url[:3000],
                }
            )
        if buttons:
            blocks.append({"type": "actions", "elements": buttons[:25]})
        if len(blocks) >= 47:
            break
    hidden = len(n.alerts) - len(shown)
    context = f"otel-agents · {len(n.firing)} firing, {len(n.resolved)} resolved"
    if hidden > 0:
        context += f" · {hidden} more not shown"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    body: dict[str, Any] = {"text": _trunc(title, 3000), "blocks": blocks[:50]}
    if channel:
        body["channel"] = channel
    return body


def _mrkdwn_escape(text: str) -> str:
    # Slack requires &, < and > escaped in mrkdwn text (they introduce links/mentions).
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_PD_SEVERITY = {"critical": "critical", "warning": "warning", "info": "info", "error": "error"}


def pagerduty_event(
    action: str,
    alert: AlertSnapshot,
    *,
    routing_key: str,
    source: str = "otel-agents",
    client: str = "otel-agents",
    client_url: str = "",
) -> dict[str, Any]:
    """One PagerDuty Events API v2 event (``trigger`` | ``acknowledge`` | ``resolve``).

    ``dedup_key`` is the alert fingerprint (≤ 255 characters), so acknowledge and resolve reach
    the incident the trigger opened; ``summary`` ≤ 1024 characters; severity is one of
    critical/error/warning/info.
    """
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": f"otel-agents-{alert.fingerprint}"[:255],
    }
    if action != "trigger":
        return event
    summary = alert.annotations.get("summary") or alert.labels.get("alertname", "alert")
    labels = dict(alert.labels)
    event["payload"] = {
        "summary": _trunc(summary, 1024),
        "source": labels.get("agent") or labels.get("service") or source,
        "severity": _PD_SEVERITY.get(labels.get("severity", ""), "warning"),
        "timestamp": rfc3339(alert.starts_at),
        "component": labels.get("tool") or labels.get("agent") or "",
        "group": labels.get("agent", ""),
        "class": labels.get("alertname", ""),
        "custom_details": {
            "labels": labels,
            "annotations": dict(alert.annotations),
        },
    }
    links = [
        {"href": alert.annotations[k], "text": t}
        for k, t in (
            ("runbook_url", "Runbook"),
            ("dashboard_url", "Dashboard"),
            ("trace_url", "Trace"),
        )
        if alert.annotations.get(k, "").startswith(("https://", "http://"))
    ]
    if links:
        event["links"] = links
    event["client"] = client
    if client_url:
        event["client_url"] = client_url
    return event


# ------------------------------------------------------------------------------------------------
# Notifiers
# ------------------------------------------------------------------------------------------------


class Notifier:
    """One integration of a receiver (``receiver/webhook[0]``)."""

    kind = "notifier"

    def __init__(self, receiver: str, index: int, send_resolved: bool, policy: UrlPolicy) -> None:
        self.receiver = receiver
        self.name = f"{receiver}/{self.kind}[{index}]"
        self.send_resolved = send_resolved
        self.policy = policy

    def check(self) -> None:
        """Save/test-time check of the target (same policy as delivery).

        Raises:
            RefusedTarget: when the target is refused.
        """

    def notify(self, n: Notification) -> None:
        """Deliver one group notification.

        Raises:
            DeliveryError: on failure (``retryable`` tells the worker what to do).
            RefusedTarget: when the egress policy refuses the target.
        """
        raise NotImplementedError

    def acknowledge(self, alert: AlertSnapshot) -> bool:
        """Tell the target an alert was acknowledged; ``False`` when it has no such notion."""
        return False


def _http_outcome(status: int, headers: Mapping[str, str], what: str) -> None:
    if 200 <= status < 300:
        return
    retry_after = None
    ra = headers.get("retry-after")
    if ra and ra.strip().isdigit():
        retry_after = float(ra.strip())
    retryable = status == 429 or status >= 500 or status == 408
    raise DeliveryError(f"{what}: HTTP {status}", retryable=retryable, retry_after=retry_after)


class _HttpNotifier(Notifier):
    def __init__(
        self, receiver: str, index: int, send_resolved: bool, policy: UrlPolicy, url: Secret
    ) -> None:
        super().__init__(receiver, index, send_resolved, policy)
        self._url = url
        self.ssl_context: ssl.SSLContext | None = None

    def check(self) -> None:
        self.policy.check(self._url.get())

    def _post(self, body: Any, headers: Mapping[str, str] | None = None) -> None:
        try:
            d = post_json(
                self.policy, self._url.get(), body, headers=headers, ssl_context=self.ssl_context
            )
        except RefusedTarget:
            raise
        except (OSError, http_client_errors()) as exc:
            raise DeliveryError(f"{self.name}: {exc.__class__.__name__}", retryable=True) from None
        _http_outcome(d.status, d.headers, self.name)


def http_client_errors() -> type[Exception]:
    """The base class of ``http.client`` protocol errors (retryable)."""
    import http.client

    return http.client.HTTPException


class WebhookNotifier(_HttpNotifier):
    """Generic webhook with Alertmanager's payload."""

    kind = "webhook"

    def __init__(
        self,
        receiver: str,
        index: int,
        cfg: WebhookConfig,
        policy: UrlPolicy,
        *,
        external_url: str = "",
    ) -> None:
        url = resolve_secret(
            cfg.url, cfg.url_env, cfg.url_file, f"receivers.{receiver}.webhook_configs[{index}].url"
        )
        super().__init__(receiver, index, cfg.send_resolved, policy, url)
        self._cfg = cfg
        self._external_url = external_url

    def notify(self, n: Notification) -> None:
        self._post(
            webhook_payload(n, external_url=self._external_url, max_alerts=self._cfg.max_alerts),
            self._cfg.headers,
        )


class SlackNotifier(_HttpNotifier):
    """Slack incoming webhook (Block Kit)."""

    kind = "slack"

    def __init__(self, receiver: str, index: int, cfg: SlackConfig, policy: UrlPolicy) -> None:
        url = resolve_secret(
            cfg.url, cfg.url_env, cfg.url_file, f"receivers.{receiver}.slack_configs[{index}].url"
        )
        super().__init__(receiver, index, cfg.send_resolved, policy, url)
        self._cfg = cfg

    def notify(self, n: Notification) -> None:
        self._post(slack_message(n, channel=self._cfg.channel, max_alerts=self._cfg.max_alerts))


class PagerDutyNotifier(_HttpNotifier):
    """PagerDuty Events API v2 (trigger / acknowledge / resolve per alert)."""

    kind = "pagerduty"

    def __init__(self, receiver: str, index: int, cfg: PagerDutyConfig, policy: UrlPolicy) -> None:
        self._key = resolve_secret(
            cfg.routing_key,
            cfg.routing_key_env,
            cfg.routing_key_file,
            f"receivers.{receiver}.pagerduty_configs[{index}].routing_key",
        )
        super().__init__(receiver, index, cfg.send_resolved, policy, Secret(cfg.url))
        self._cfg = cfg

    def _event(self, action: str, a: AlertSnapshot) -> dict[str, Any]:
        return pagerduty_event(
            action,
            a,
            routing_key=self._key.get(),
            source=self._cfg.source,
            client=self._cfg.client,
            client_url=self._cfg.client_url,
        )

    def notify(self, n: Notification) -> None:
        for a in n.alerts:
            if a.status == "resolved" and not self.send_resolved:
                continue
            self._post(self._event("trigger" if a.status == "firing" else "resolve", a))

    def acknowledge(self, alert: AlertSnapshot) -> bool:
        self._post(self._event("acknowledge", alert))
        return True


class _PinnedSMTP(smtplib.SMTP):
    """SMTP client connecting to the policy-checked address (host name kept for TLS)."""

    def __init__(self, address: str, timeout: float, **kw: Any) -> None:
        self._pinned = address
        super().__init__(timeout=timeout, **kw)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return socket.create_connection((self._pinned, port), timeout)


class EmailNotifier(Notifier):
    """Email over SMTP with STARTTLS."""

    kind = "email"

    def __init__(self, receiver: str, index: int, cfg: EmailConfig, policy: UrlPolicy) -> None:
        super().__init__(receiver, index, cfg.send_resolved, policy)
        self._cfg = cfg
        host, _, port = cfg.smarthost.rpartition(":")
        self._host = host.strip("[]")
        self._port = int(port)
        self._password = resolve_secret(
            cfg.auth_password,
            cfg.auth_password_env,
            cfg.auth_password_file,
            f"receivers.{receiver}.email_configs[{index}].auth_password",
            required=False,
        )

    def check(self) -> None:
        self.policy.resolve_endpoint(self._host, self._port)

    def _tls_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self._cfg.ca_file or None)
        return ctx

    def message(self, n: Notification) -> EmailMessage:
        """The email for one notification (plain text, Alertmanager-style subject)."""
        msg = EmailMessage()
        msg["Subject"] = _trunc(_title(n), 200)
        msg["From"] = self._cfg.from_
        msg["To"] = ", ".join(self._cfg.to)
        msg["Date"] = email.utils.formatdate(n.sent_at, usegmt=True)
        msg["Message-ID"] = email.utils.make_msgid(domain=self._cfg.hello or None)
        lines = [_title(n), ""]
        for a in n.alerts:
            lines.append(
                f"[{a.status}] {a.annotations.get('summary') or a.labels.get('alertname', '')}"
            )
            if a.annotations.get("description"):
                lines.append(f"  {a.annotations['description']}")
            lines.append("  labels: " + ", ".join(f"{k}={v}" for k, v in sorted(a.labels.items())))
            for key in ("runbook_url", "dashboard_url", "trace_url"):
                if a.annotations.get(key):
                    lines.append(f"  {key}: {a.annotations[key]}")
            lines.append(f"  since: {rfc3339(a.starts_at)}")
            lines.append("")
        msg.set_content("\n".join(lines))
        return msg

    def notify(self, n: Notification) -> None:
        try:
            address = self.policy.resolve_endpoint(self._host, self._port)
        except OSError as exc:
            raise DeliveryError(f"{self.name}: {exc}", retryable=True) from None
        cfg = self.policy.config
        try:
            # host/port given to the constructor: smtplib keeps the host name for the STARTTLS
            # certificate check while _PinnedSMTP connects to the checked address.
            with _PinnedSMTP(
                address,
                cfg.read_timeout,
                host=self._host,
                port=self._port,
                local_hostname=self._cfg.hello,
            ) as smtp:
                smtp.ehlo()
                if smtp.has_extn("starttls"):
                    smtp.starttls(context=self._tls_context())
                    smtp.ehlo()
                elif self._cfg.require_tls:
                    raise DeliveryError(
                        f"{self.name}: server does not offer STARTTLS", retryable=False
                    )
                if self._cfg.auth_username:
                    smtp.login(self._cfg.auth_username, self._password.get())
                smtp.send_message(self.message(n))
        except DeliveryError:
            raise
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(
                f"{self.name}: SMTP {exc.smtp_code}", retryable=exc.smtp_code < 500
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"{self.name}: {exc.__class__.__name__}", retryable=True) from None


class AlertmanagerPusher:
    """Pushes alerts to a real Alertmanager (``POST {url}/api/v2/alerts``)."""

    kind = "alertmanager"

    def __init__(self, index: int, cfg: AlertmanagerPushConfig, policy: UrlPolicy) -> None:
        self.name = f"alertmanager[{index}]"
        self.config = cfg
        self.policy = policy
        self._url = cfg.url.rstrip("/") + "/api/v2/alerts"

    def check(self) -> None:
        """Save/test-time target check."""
        self.policy.check(self._url)

    @staticmethod
    def postable(a: AlertSnapshot) -> dict[str, Any]:
        """API v2 ``postableAlert``."""
        body: dict[str, Any] = {
            "labels": dict(a.labels),
            "annotations": dict(a.annotations),
            "startsAt": rfc3339(a.starts_at),
        }
        if a.ends_at is not None:
            body["endsAt"] = rfc3339(a.ends_at)
        if a.generator_url:
            body["generatorURL"] = a.generator_url
        return body

    def push(self, alerts: Sequence[AlertSnapshot]) -> None:
        """Send alerts.

        Raises:
            DeliveryError: on failure.
            RefusedTarget: when the target is refused.
        """
        try:
            d = post_json(self.policy, self._url, [self.postable(a) for a in alerts])
        except RefusedTarget:
            raise
        except (OSError, http_client_errors()) as exc:
            raise DeliveryError(f"{self.name}: {exc.__class__.__name__}", retryable=True) from None
        _http_outcome(d.status, d.headers, self.name)


def build_receivers(
    receivers: Sequence[ReceiverConfig],
    policy: UrlPolicy,
    *,
    external_url: str = "",
    check_targets: bool = True,
) -> dict[str, list[Notifier]]:
    """Notifiers per receiver name; every target is checked by the policy (save-time check).

    Raises:
        ConfigError: naming the receiver integration whose target is refused or misconfigured.
    """
    out: dict[str, list[Notifier]] = {}
    for r in receivers:
        items: list[Notifier] = []
        items += [
            WebhookNotifier(r.name, i, c, policy, external_url=external_url)
            for i, c in enumerate(r.webhook_configs)
        ]
        items += [SlackNotifier(r.name, i, c, policy) for i, c in enumerate(r.slack_configs)]
        items += [
            PagerDutyNotifier(r.name, i, c, policy) for i, c in enumerate(r.pagerduty_configs)
        ]
        items += [EmailNotifier(r.name, i, c, policy) for i, c in enumerate(r.email_configs)]
        if check_targets:
            for item in items:
                try:
                    item.check()
                except RefusedTarget as exc:
                    raise ConfigError(f"receivers.{item.name}: target refused: {exc}") from None
                except OSError:
                    # Unresolvable now: delivery re-checks and retries; not a config error.
                    _log.warning("receiver %s: target does not resolve yet", item.name)
        out[r.name] = items
    return out


# ------------------------------------------------------------------------------------------------
# Worker
# ------------------------------------------------------------------------------------------------

Outcome = Callable[[str, str], None]
"""``outcome(notifier_name_kind, outcome)`` — counts ``otel_agents_notifications_total``."""


@dataclasses.dataclass
class _Job:
    name: str
    kind: str
    run: Callable[[], None]
    enqueued: float


class _Lane:
    """One integration's queue and thread."""

    def __init__(self, name: str, size: int) -> None:
        self.q: queue.Queue[_Job | None] = queue.Queue(maxsize=size)
        self.thread: threading.Thread | None = None
        self.name = name


class NotifierWorker:
    """Delivers notifications with retries; one thread per integration, ``submit`` never blocks.

    Each integration (``team/slack[0]``, ``alertmanager[0]``...) has its own bounded queue and
    thread, so a dead webhook backing off never delays Slack or PagerDuty.
    """

    def __init__(
        self,
        retry: RetryConfig | None = None,
        *,
        on_outcome: Outcome | None = None,
        on_delivered: Callable[[str, str, str], None] | None = None,
    ) -> None:
        self.retry = retry or RetryConfig()
        self._on_outcome = on_outcome or (lambda _n, _o: None)
        self._on_delivered = on_delivered or (lambda _n, _k, _o: None)
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._lanes: dict[str, _Lane] = {}
        self._rng = random.Random()
        self._started = False
        self._pending = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        """Allow deliveries (threads start lazily, one per integration)."""
        with self._lock:
            self._started = True
            for lane in self._lanes.values():
                self._start_lane(lane)

    def _start_lane(self, lane: _Lane) -> None:
        if lane.thread is None and self._started and not self._stop.is_set():
            lane.thread = threading.Thread(
                target=self._loop,
                args=(lane,),
                name=f"otel-agents-notifier-{lane.name}",
                daemon=True,
            )
            lane.thread.start()

    def submit(self, name: str, kind: str, run: Callable[[], None]) -> bool:
        """Queue a delivery; ``False`` (and outcome ``dropped``) when that queue is full."""
        with self._lock:
            lane = self._lanes.get(name)
            if lane is None:
                lane = self._lanes[name] = _Lane(name, self.retry.queue_size)
            self._start_lane(lane)
            self._pending += 1
            self._idle.clear()
        try:
            lane.q.put_nowait(_Job(name, kind, run, time.monotonic()))
        except queue.Full:
            self._done()
            self._on_outcome(kind, "dropped")
            _log.warning("notifier %s: queue full, notification dropped", name)
            return False
        return True

    def _done(self) -> None:
        with self._lock:
            self._pending -= 1
            if self._pending <= 0:
                self._pending = 0
                self._idle.set()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every queued delivery finished (tests, shutdown)."""
        return self._idle.wait(timeout)

    def _loop(self, lane: _Lane) -> None:
        while True:
            job = lane.q.get()
            if job is None:
                return
            try:
                self._deliver(job)
            except Exception:  # never let one bad notifier kill the thread
                _log.exception("notifier %s: unexpected error", job.name)
                self._on_outcome(job.kind, "failed")
            finally:
                self._done()

    def _deliver(self, job: _Job) -> None:
        r = self.retry
        start = time.monotonic()
        interval = r.initial_interval
        for attempt in range(1, max(r.max_attempts, 1) + 1):
            try:
                job.run()
            except RefusedTarget as exc:
                _log.warning("notifier %s: target refused by egress policy: %s", job.name, exc)
                self._on_outcome(job.kind, "refused")
                self._on_delivered(job.name, job.kind, "refused")
                return
            except DeliveryError as exc:
                if not exc.retryable:
                    _log.warning("notifier %s: permanent failure: %s", job.name, exc)
                    break
                delay = exc.retry_after if exc.retry_after is not None else interval
                delay = min(delay, r.max_interval) * (0.5 + self._rng.random())
                if (
                    attempt >= r.max_attempts
                    or time.monotonic() - start + delay > r.max_elapsed_time
                ):
                    _log.warning(
                        "notifier %s: giving up after %d attempts: %s", job.name, attempt, exc
                    )
                    break
                self._on_outcome(job.kind, "retried")
                if self._stop.wait(delay):
                    break
                interval = min(interval * r.multiplier, r.max_interval)
                continue
            self._on_outcome(job.kind, "success")
            self._on_delivered(job.name, job.kind, "success")
            return
        self._on_outcome(job.kind, "failed")
        self._on_delivered(job.name, job.kind, "failed")

    def shutdown(self, timeout: float = 5.0) -> None:
        """Deliver what is queued within ``timeout``, then stop every thread."""
        if not self._started:
            self._stop.set()
            return
        self._idle.wait(timeout)
        self._stop.set()
        with self._lock:
            lanes = list(self._lanes.values())
        for lane in lanes:
            with contextlib.suppress(queue.Full):
                lane.q.put_nowait(None)
        deadline = time.monotonic() + timeout
        for lane in lanes:
            if lane.thread is not None:
                lane.thread.join(max(0.0, deadline - time.monotonic()))
