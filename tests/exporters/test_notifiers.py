# SPDX-License-Identifier: Apache-2.0
"""Notifiers against real loopback servers: webhook, Slack (Block Kit), PagerDuty Events v2,
email over SMTP with STARTTLS (aiosmtpd), retries with backoff, and secrets that never leak."""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import logging
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from otel_agents.exporters._notifiers import (
    DeliveryError,
    EmailConfig,
    EmailNotifier,
    NotifierWorker,
    PagerDutyConfig,
    PagerDutyNotifier,
    RetryConfig,
    SlackConfig,
    SlackNotifier,
    WebhookConfig,
    WebhookNotifier,
    slack_message,
    webhook_payload,
)
from otel_agents.exporters._ssrf import EgressConfig, UrlPolicy
from otel_agents.processors._alert_state import AlertSnapshot, Notification

from otel_agents._errors import ConfigError
from tests.exporters.test_notifiers_sink import WebhookSink, start_sink

T0 = 1_700_000_000.0
LOOPBACK = UrlPolicy(EgressConfig(allow_http=True, allow_cidrs=["127.0.0.1/32"]))


def _snap(status: str = "firing", **labels: str) -> AlertSnapshot:
    lab = {"alertname": "ToolErrorRatioHigh", "severity": "warning", "agent": "researcher",
           "tool": "web_search", **labels}  # fmt: skip
    return AlertSnapshot(
        status, lab,
        {"summary": "Tool web_search fails 80% <of> calls & more", "description": "details",
         "runbook_url": "https://runbooks.example/tool", "trace_url": "https://jaeger.example/trace/ab"},
        T0, T0 + 60 if status == "resolved" else None, "https://receiver.example/a", "0123456789abcdef",
    )  # fmt: skip


def _note(*alerts: AlertSnapshot) -> Notification:
    firing = any(a.status == "firing" for a in alerts)
    return Notification("team", '{}:{alertname="ToolErrorRatioHigh"}', "firing" if firing else "resolved",
                        {"alertname": "ToolErrorRatioHigh"}, {"alertname": "ToolErrorRatioHigh"}, {},
                        tuple(alerts), T0)  # fmt: skip


@pytest.fixture
def sink() -> Iterator[WebhookSink]:
    """Loopback HTTP sink."""
    with start_sink() as s:
        yield s


def test_webhook_payload_is_alertmanager_v4(sink: WebhookSink) -> None:
    """The webhook body has Alertmanager's fields, RFC 3339 times and max_alerts truncation."""
    n = WebhookNotifier("team", 0, WebhookConfig(url=f"{sink.url}/wh", max_alerts=1), LOOPBACK)
    n.notify(_note(_snap(), _snap("resolved", agent="planner")))
    (r,) = sink.wait_for(1)
    b = r.body
    assert set(b) == {"version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels",
                      "commonLabels", "commonAnnotations", "externalURL", "alerts"}  # fmt: skip
    assert b["version"] == "4" and b["truncatedAlerts"] == 1 and len(b["alerts"]) == 1
    a = b["alerts"][0]
    assert set(a) == {
        "status",
        "labels",
        "annotations",
        "startsAt",
        "endsAt",
        "generatorURL",
        "fingerprint",
    }
    assert dt.datetime.fromisoformat(a["startsAt"].replace("Z", "+00:00")).timestamp() == T0
    assert r.headers["content-type"] == "application/json"
    assert webhook_payload(_note(_snap("resolved")))["alerts"][0]["endsAt"].startswith(
        "2023-11-14T"
    )


def test_slack_block_kit_message(sink: WebhookSink) -> None:
    """Slack gets a text fallback and Block Kit blocks within the published limits."""
    long = _snap(agent="a" * 300)
    msg = slack_message(_note(*(long for _ in range(30))), channel="#alerts", max_alerts=20)
    assert msg["text"].startswith("[FIRING:30] ToolErrorRatioHigh")
    blocks = msg["blocks"]
    assert len(blocks) <= 50
    assert blocks[0]["type"] == "header" and blocks[0]["text"]["type"] == "plain_text"
    assert len(blocks[0]["text"]["text"]) <= 150
    assert blocks[-1]["type"] == "context" and "not shown" in blocks[-1]["elements"][0]["text"]
    for b in blocks:
        assert b["type"] in {"header", "section", "actions", "context"}
        if b["type"] == "section":
            assert b["text"]["type"] == "mrkdwn" and len(b["text"]["text"]) <= 3000
            assert len(b.get("fields", [])) <= 10
            assert all(len(f["text"]) <= 2000 for f in b.get("fields", []))
            assert (
                "<of>" not in b["text"]["text"]
                and "&lt;of&gt; calls &amp; more" in b["text"]["text"]
            )
        if b["type"] == "actions":
            for e in b["elements"]:
                assert e["type"] == "button" and len(e["text"]["text"]) <= 75
                assert e["url"].startswith("https://")
    n = SlackNotifier(
        "team",
        0,
        SlackConfig(url=f"{sink.url}/services/T000/B000/XXXX", channel="#alerts"),
        LOOPBACK,
    )
    n.notify(_note(_snap()))
    (r,) = sink.wait_for(1)
    assert r.path == "/services/T000/B000/XXXX" and r.body["channel"] == "#alerts"
    labels = [
        e["text"]["text"] for b in r.body["blocks"] if b["type"] == "actions" for e in b["elements"]
    ]
    assert labels == ["Runbook", "Trace"]


def test_pagerduty_trigger_acknowledge_resolve_share_dedup_key(
    sink: WebhookSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PagerDuty events follow Events API v2 and one alert keeps one dedup_key across actions."""
    monkeypatch.setenv("PD_KEY_TEST", "R0UT1NGKEY0123456789012345678901")
    cfg = PagerDutyConfig(
        routing_key_env="PD_KEY_TEST",
        url=f"{sink.url}/v2/enqueue",
        client_url="https://recv.example",
    )
    n = PagerDutyNotifier("team", 0, cfg, LOOPBACK)
    sink.respond(202, 202, 202)
    n.notify(_note(_snap()))
    n.acknowledge(_snap())
    n.notify(_note(_snap("resolved")))
    trig, ack, res = (r.body for r in sink.wait_for(3))
    assert trig["event_action"] == "trigger" and ack["event_action"] == "acknowledge"
    assert res["event_action"] == "resolve"
    assert trig["routing_key"] == "R0UT1NGKEY0123456789012345678901"
    assert (
        trig["dedup_key"] == ack["dedup_key"] == res["dedup_key"] and len(trig["dedup_key"]) <= 255
    )
    p = trig["payload"]
    assert {"summary", "source", "severity"} <= set(p)
    assert p["severity"] in {"critical", "error", "warning", "info"} and len(p["summary"]) <= 1024
    assert p["source"] == "researcher" and p["class"] == "ToolErrorRatioHigh"
    assert p["timestamp"].endswith("Z") and trig["client_url"] == "https://recv.example"
    assert {"href": "https://runbooks.example/tool", "text": "Runbook"} in trig["links"]
    assert set(ack) == {"routing_key", "event_action", "dedup_key"}


def test_retries_with_backoff_then_success_and_permanent_failure(sink: WebhookSink) -> None:
    """5xx and 429 are retried (honouring Retry-After); 4xx fails at once; outcomes are counted."""
    outcomes: list[tuple[str, str]] = []
    w = NotifierWorker(RetryConfig(initial_interval=0.02, max_interval=0.05, max_attempts=5),
                       on_outcome=lambda k, o: outcomes.append((k, o)))  # fmt: skip
    w.start()
    try:
        n = WebhookNotifier("team", 0, WebhookConfig(url=f"{sink.url}/wh"), LOOPBACK)
        sink.respond(503, (429, {"Retry-After": "0"}), 200)
        w.submit(n.name, n.kind, lambda: n.notify(_note(_snap())))
        assert w.wait_idle(10)
        assert outcomes == [("webhook", "retried"), ("webhook", "retried"), ("webhook", "success")]
        assert len(sink.received) == 3
        outcomes.clear()
        sink.respond(400)
        w.submit(n.name, n.kind, lambda: n.notify(_note(_snap())))
        assert w.wait_idle(10)
        assert outcomes == [("webhook", "failed")] and len(sink.received) == 4
    finally:
        w.shutdown()


def test_secrets_from_env_and_file_never_logged(tmp_path: Path, sink: WebhookSink, caplog: pytest.LogCaptureFixture,
                                               monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Secrets load from env or file, are missing-key errors without the value, and never
    appear in reprs or logs."""
    secret_path = "/services/T1/B1/s3cr3t-token-value"
    f = tmp_path / "slack-url"
    f.write_text(f"{sink.url}{secret_path}\n")
    n = SlackNotifier("team", 0, SlackConfig(url_file=str(f)), LOOPBACK)
    assert "s3cr3t" not in repr(n.__dict__)
    with pytest.raises(ConfigError, match=r"url_env: environment variable NOPE_UNSET is not set"):
        SlackNotifier("team", 0, SlackConfig(url_env="NOPE_UNSET"), LOOPBACK)
    with pytest.raises(ConfigError, match="set only one"):
        SlackNotifier("team", 0, SlackConfig(url="https://a.example", url_env="X"), LOOPBACK)
    caplog.set_level(logging.DEBUG)
    w = NotifierWorker(RetryConfig(initial_interval=0.01, max_attempts=2))
    w.start()
    sink.respond(500, 500)
    w.submit(n.name, n.kind, lambda: n.notify(_note(_snap())))
    assert w.wait_idle(10)
    w.shutdown()
    assert "giving up" in caplog.text
    assert "s3cr3t" not in caplog.text


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert_path, key_path


class _Smtp:
    """aiosmtpd on 127.0.0.1:0 with STARTTLS required and AUTH (only after TLS)."""

    def __init__(self, cert: Path, key: Path, password: str) -> None:
        from aiosmtpd.smtp import SMTP, AuthResult

        self.messages: list[tuple[Any, bool]] = []
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        outer = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                outer.messages.append((envelope, session.ssl is not None))
                return "250 OK"

        def authenticator(
            server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
        ) -> Any:
            ok = auth_data.login == b"alerts" and auth_data.password == password.encode()
            return AuthResult(success=ok)

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def serve() -> Any:
            return await self.loop.create_server(
                lambda: SMTP(
                    Handler(),
                    tls_context=ctx,
                    require_starttls=True,
                    authenticator=authenticator,
                    hostname="mx.test",
                ),
                host="127.0.0.1",
                port=0,
            )

        self.server = asyncio.run_coroutine_threadsafe(serve(), self.loop).result(10)
        self.port = self.server.sockets[0].getsockname()[1]

    def close(self) -> None:
        async def stop() -> None:
            # asyncio servers are not thread-safe: close on the loop's own thread
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def test_email_over_smtp_with_starttls_and_auth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Email goes through STARTTLS (certificate verified) and AUTH to a real SMTP server."""
    cert, key = _self_signed(tmp_path)
    monkeypatch.setenv("SMTP_PW_TEST", "pa55-word")
    smtp = _Smtp(cert, key, "pa55-word")
    try:
        cfg = EmailConfig(to=["oncall@example.com"], from_="alerts@example.com",
                          smarthost=f"127.0.0.1:{smtp.port}", auth_username="alerts",
                          auth_password_env="SMTP_PW_TEST", ca_file=str(cert))  # fmt: skip
        n = EmailNotifier("team", 0, cfg, LOOPBACK)
        n.check()
        n.notify(_note(_snap()))
        ((envelope, over_tls),) = smtp.messages
        assert over_tls
        assert (
            envelope.rcpt_tos == ["oncall@example.com"]
            and envelope.mail_from == "alerts@example.com"
        )
        msg = email.message_from_bytes(envelope.content)
        assert msg["Subject"].startswith("[FIRING:1] ToolErrorRatioHigh")
        assert "Tool web_search fails" in msg.get_payload()
        # a server certificate the client does not trust is refused
        bad = EmailNotifier(
            "team",
            0,
            EmailConfig(to=["a@example.com"], smarthost=f"127.0.0.1:{smtp.port}"),
            LOOPBACK,
        )
        with pytest.raises(DeliveryError, match="SSLCertVerificationError"):
            bad.notify(_note(_snap()))
        assert len(smtp.messages) == 1
    finally:
        smtp.close()


def test_a_failing_target_does_not_delay_the_others(sink: WebhookSink) -> None:
    """Each integration has its own lane: a target backing off never holds up another."""
    dead = start_sink()
    try:
        outcomes: list[tuple[str, str]] = []
        w = NotifierWorker(RetryConfig(initial_interval=1.0, max_interval=1.0, max_attempts=3),
                           on_outcome=lambda k, o: outcomes.append((k, o)))  # fmt: skip
        w.start()
        bad = WebhookNotifier("dead", 0, WebhookConfig(url=f"{dead.url}/wh"), LOOPBACK)
        good = SlackNotifier("team", 0, SlackConfig(url=f"{sink.url}/slack"), LOOPBACK)
        dead.respond(503, 503, 503)
        w.submit(bad.name, bad.kind, lambda: bad.notify(_note(_snap())))
        dead.wait_for(1)
        t0 = time.monotonic()
        w.submit(good.name, good.kind, lambda: good.notify(_note(_snap())))
        sink.wait_for(1, timeout=5)
        # one shared thread would hold it behind two backoffs of at least 0.5 s each
        assert time.monotonic() - t0 < 0.9
        assert w.wait_idle(15)
        w.shutdown()
        assert ("slack", "success") in outcomes and ("webhook", "failed") in outcomes
    finally:
        dead.server.shutdown()
        dead.server.server_close()


def test_full_queue_drops_and_counts(sink: WebhookSink) -> None:
    """A full lane drops the notification and counts outcome=dropped instead of blocking."""
    gate = threading.Event()
    outcomes: list[tuple[str, str]] = []
    w = NotifierWorker(RetryConfig(queue_size=1), on_outcome=lambda k, o: outcomes.append((k, o)))
    w.start()
    try:
        assert w.submit("x/webhook[0]", "webhook", lambda: gate.wait(5))  # running
        deadline = time.monotonic() + 5
        accepted = [True]
        while time.monotonic() < deadline and all(accepted):
            accepted.append(w.submit("x/webhook[0]", "webhook", lambda: None))
        assert accepted[-1] is False and ("webhook", "dropped") in outcomes
    finally:
        gate.set()
        w.shutdown()
