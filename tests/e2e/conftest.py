# SPDX-License-Identifier: Apache-2.0
"""Shared helpers and fixtures for real-component tests: the skip-or-fail rule, polling, Prometheus
on a free port with a private data dir (``launch_prometheus``), headless Chromium, the receiver
in-process (``run_receiver``), the demo in a child process (``run_demo``), and ``agent_stack``:
one receiver fed by the demo and scraped by Prometheus, shared by the whole session.

A missing component skips its tests, unless ``OTEL_AGENTS_E2E=1`` (CI, after scripts/e2e-setup)
where it fails them: CI must never go green by skipping.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.exporters.test_notifiers_sink import WebhookSink, start_sink

if TYPE_CHECKING:
    from otel_agents.testing import OtlpSink

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
WEBPAGE = ROOT / "otel_agents" / "receiver" / "webpage.html"
E2E_REQUIRED = os.environ.get("OTEL_AGENTS_E2E") == "1"


def require(condition: object, reason: str) -> None:
    """Skips the test when ``condition`` is falsy — or fails it under ``OTEL_AGENTS_E2E=1``."""
    if condition:
        return
    if E2E_REQUIRED:
        pytest.fail(f"OTEL_AGENTS_E2E=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def require_binary(name: str, hint: str) -> str:
    """The path of executable ``name``; skip/fail with the install ``hint`` when missing."""
    path = shutil.which(name)
    require(path, f"{name} not installed ({hint}; scripts/e2e-setup installs it)")
    assert path is not None
    return path


def wait_until(
    predicate: Callable[[], Any], *, timeout: float, interval: float = 0.2, what: str = ""
) -> Any:
    """Polls ``predicate`` until it returns something truthy; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = predicate()
        except (OSError, ValueError, urllib.error.URLError) as exc:  # not up yet
            last = exc
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what or predicate}: {last!r}")
        time.sleep(interval)


def http_get(
    url: str, timeout: float = 5.0, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """``(status, body)`` of a GET, HTTP errors included (no exception for 4xx/5xx)."""
    try:
        req = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


Samples = dict[str, list[tuple[dict[str, str], float]]]
"""A Prometheus exposition as ``{sample name: [(labels, value), ...]}``."""


def scrape_samples(admin_url: str) -> Samples:
    """The receiver's ``/metrics`` as :data:`Samples`."""
    status, body = http_get(f"{admin_url}/metrics")
    assert status == 200
    out: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return out


def sample_sum(samples: Samples, metric: str, /, **labels: str) -> float:
    """The sum of ``metric``'s samples whose labels include ``labels`` (0 when none)."""
    return sum(
        v for lab, v in samples.get(metric, []) if all(lab.get(k) == x for k, x in labels.items())
    )


def wait_for_sample(
    admin_url: str, metric: str, at_least: float, /, *, timeout: float, what: str, **labels: str
) -> Samples:
    """The receiver's ``/metrics`` once ``sample_sum(metric, **labels)`` reached ``at_least``."""

    def reached() -> Samples | None:
        samples = scrape_samples(admin_url)
        return samples if sample_sum(samples, metric, **labels) >= at_least else None

    samples: Samples = wait_until(reached, timeout=timeout, what=what)
    return samples


def listening_ports(pid: int) -> list[int]:
    """TCP ports process ``pid`` listens on (how a server started on port 0 is found)."""
    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []
    return sorted({c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN})


# --------------------------------------------------------------------------- Prometheus
@dataclass
class Prometheus:
    """A running Prometheus on loopback."""

    url: str
    process: subprocess.Popen[bytes]
    config_dir: Path

    def api(self, path: str, **params: str) -> tuple[int, dict[str, Any]]:
        """``(status, JSON)`` of ``GET /api/v1/<path>?params``."""
        query = urllib.parse.urlencode(params)
        status, body = http_get(f"{self.url}/api/v1/{path}?{query}")
        return status, json.loads(body)

    def query(self, expr: str) -> tuple[int, dict[str, Any]]:
        """An instant query."""
        return self.api("query", query=expr)

    def wait_for_series(self, expr: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Polls until ``expr`` returns a non-empty result; returns it."""

        def ready() -> list[dict[str, Any]]:
            status, body = self.query(expr)
            return body["data"]["result"] if status == 200 else []

        result: list[dict[str, Any]] = wait_until(ready, timeout=timeout, what=f"series {expr}")
        return result


def launch_prometheus(
    work: Path, config_text: str, rules_dir: Path | None = None, extra_args: tuple[str, ...] = ()
) -> Prometheus:
    """Starts Prometheus 2.x in ``work`` with ``config_text`` on a free loopback port.

    The rules directory is copied next to the config as ``rules/``. The caller stops the
    process (:func:`stop_process`).
    """
    binary = require_binary("prometheus", "apt-get install prometheus")
    work.mkdir(parents=True, exist_ok=True)
    (work / "prometheus.yml").write_text(config_text, encoding="utf-8")
    if rules_dir is not None:
        shutil.copytree(rules_dir, work / "rules")
    with (work / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'data'}",
                "--web.listen-address=127.0.0.1:0",
                "--storage.tsdb.retention.time=1h",
                *extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def bound() -> list[int]:
        if proc.poll() is not None:
            log_text = (work / "prometheus.log").read_text(errors="replace")[-2000:]
            pytest.fail(f"prometheus exited {proc.returncode}: {log_text}")
        return listening_ports(proc.pid)

    try:
        port = wait_until(bound, timeout=20, what="prometheus to listen")[0]
        url = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: http_get(f"{url}/-/ready")[0] == 200, timeout=20, what="prometheus ready"
        )
    except BaseException:
        stop_process(proc)
        raise
    return Prometheus(url=url, process=proc, config_dir=work)


def stop_process(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Terminates a child process we started, killing it if it does not exit within ``grace``
    seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


# --------------------------------------------------------------------------- Chromium
@dataclass
class ChromiumResult:
    """What headless Chromium saw."""

    dom: str
    console: list[str]


class Chromium:
    """Headless Chromium driven through its command line (dump DOM, screenshot)."""

    FLAGS = (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
    )

    def __init__(self, binary: str) -> None:
        self.binary = binary

    def _run(self, url: str, action: list[str], budget_ms: int, size: str) -> tuple[str, str]:
        with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
            proc = subprocess.run(
                [
                    self.binary,
                    *self.FLAGS,
                    f"--user-data-dir={profile}",
                    f"--window-size={size}",
                    f"--virtual-time-budget={budget_ms}",
                    *action,
                    url,
                ],
                capture_output=True,
                timeout=60,
                check=False,
            )
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
        return proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")

    @staticmethod
    def _console(stderr: str) -> list[str]:
        # Chromium logs every console message (and uncaught exceptions) as ":CONSOLE(" lines.
        return [line for line in stderr.splitlines() if ":CONSOLE" in line]

    def dump_dom(self, url: str, budget_ms: int = 4000, size: str = "1280,1000") -> ChromiumResult:
        """The DOM after scripts ran for ``budget_ms`` of virtual time, and the console output."""
        out, err = self._run(url, ["--dump-dom"], budget_ms, size)
        return ChromiumResult(dom=out, console=self._console(err))

    def screenshot(
        self, url: str, path: Path, budget_ms: int = 4000, size: str = "1280,1000"
    ) -> ChromiumResult:
        """Writes a PNG screenshot of ``url`` to ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        _, err = self._run(url, [f"--screenshot={path}"], budget_ms, size)
        assert path.is_file() and path.stat().st_size > 0
        return ChromiumResult(dom="", console=self._console(err))


@pytest.fixture(scope="session")
def chromium() -> Chromium:
    """Headless Chromium (Debian ``chromium``)."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    require(
        binary, "chromium not installed (apt-get install chromium; scripts/e2e-setup installs it)"
    )
    assert binary is not None
    return Chromium(binary)


# --------------------------------------------------------------------------- receiver
@dataclass
class RunningReceiver:
    """An in-process otel-agents receiver on ephemeral loopback ports."""

    receiver: Any
    grpc_endpoint: str  # host:port
    http_url: str  # http://host:port
    admin_url: str  # http://host:port


@contextlib.contextmanager
def run_receiver(data_dir: Path, **overrides: Any) -> Iterator[RunningReceiver]:
    """Starts ``otel_agents.receiver.Receiver`` on port 0 everywhere; stops it on exit.

    Skips (fails under OTEL_AGENTS_E2E=1) while the receiver is not importable.
    """
    try:
        from otel_agents.receiver import Receiver, load_config
    except ImportError as exc:
        require(False, f"otel_agents.receiver.Receiver is not available yet ({exc})")
        raise
    settings: dict[str, Any] = {
        "receivers.otlp.protocols.grpc.endpoint": "127.0.0.1:0",
        "receivers.otlp.protocols.http.endpoint": "127.0.0.1:0",
        "admin.endpoint": "127.0.0.1:0",
        "admin.page_file": str(WEBPAGE),
        "storage.data_dir": str(data_dir),
    }
    settings.update(overrides)
    receiver = Receiver(load_config(None, overrides=settings))
    receiver.start()
    try:
        yield RunningReceiver(
            receiver=receiver,
            grpc_endpoint=receiver.grpc_endpoint,
            http_url=receiver.http_endpoint,
            admin_url=receiver.admin_url,
        )
    finally:
        receiver.stop()


@contextlib.contextmanager
def run_forwarding_receiver(data_dir: Path) -> Iterator[tuple[RunningReceiver, OtlpSink]]:
    """:func:`run_receiver` forwarding everything over OTLP/gRPC to an in-process
    :class:`~otel_agents.testing.OtlpSink`; a trace is complete once its spans are quiet for
    1 s. Yields ``(receiver, sink)``."""
    from otel_agents.testing import OtlpSink

    with OtlpSink() as sink:
        forward = {"endpoint": sink.grpc_endpoint.replace("http://", "grpc://"), "protocol": "grpc"}
        overrides = {
            "exporters": {"otlp/sink": forward},
            "processors.agent_analysis.assembly.decision_wait": "1s",
        }
        with run_receiver(data_dir, **overrides) as rx:
            yield rx, sink


# --------------------------------------------------------------------------- the fed stack
@dataclass
class AgentStack:
    """Receiver fed by the demo, forwarding to an OTLP sink, scraped by a real Prometheus."""

    receiver: RunningReceiver
    prometheus: Prometheus
    sink: Any  # otel_agents.testing.OtlpSink
    webhook: WebhookSink  # alert notifications
    demo_output: str


PROMETHEUS_RULES = ROOT / "collector-config" / "prometheus" / "rules"


def stack_prometheus_config(admin_url: str) -> str:
    """collector-config/prometheus/prometheus.yml's jobs and rules, pointed at a local receiver.

    Scrape and evaluation every second so a test sees data within seconds.
    """
    target = admin_url.split("://", 1)[1]
    return (
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "rule_files:\n  - rules/*.yml\n"
        "scrape_configs:\n"
        "  - job_name: otel-agents\n    metrics_path: /metrics\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )


def run_demo(
    endpoint: str, *extra: str, timeout: float = 120.0, env: dict[str, str] | None = None
) -> str:
    """Runs ``otel-agents demo`` in a child process (it installs a global tracer provider).

    ``env`` is added to this process's environment (e.g. ``OTEL_EXPORTER_OTLP_HEADERS``).
    """
    proc = subprocess.run(
        [sys.executable, "-m", "otel_agents._cli", "demo", "--endpoint", endpoint, *extra],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, f"demo failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


DEMO_FAULTS = (
    "--inject", "slow-tool", "--inject", "error-burst", "--inject", "token-spike", "--inject", "tool-loop",
)  # fmt: skip
# 12 runs at 500x: every fault in the last third, a few seconds of wall time.
DEMO_ARGS = (*DEMO_FAULTS, "--runs", "12", "--time-scale", "0.002")


@pytest.fixture(scope="session")
def agent_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentStack]:
    """The receiver fed by the demo while a real Prometheus scrapes it (once per session).

    The receiver forwards to an in-process OTLP sink (so forwarder metrics exist) and notifies
    alerts to a loopback webhook (so notification metrics exist); assembly waits 2 s instead of
    10 s so traces complete quickly.
    """
    require_binary("prometheus", "apt-get install prometheus")
    from otel_agents.testing import OtlpSink

    work = tmp_path_factory.mktemp("stack")
    with start_sink() as hook, OtlpSink() as sink:
        sink_endpoint = sink.grpc_endpoint.replace("http://", "grpc://")
        overrides = {
            "exporters": {"otlp/sink": {"endpoint": sink_endpoint, "protocol": "grpc"}},
            "processors.agent_analysis.assembly.decision_wait": "2s",
            "processors.agent_analysis.bottleneck.report_interval": "2s",
            "processors.alert.receivers": [
                {"name": "default", "webhook_configs": [{"url": f"{hook.url}/alerts"}]}
            ],
            "processors.alert.route": {
                "receiver": "default",
                "group_wait": "1s",
                "group_interval": "2s",
            },
            "processors.alert.egress.allow_http": True,
            "processors.alert.egress.allow_cidrs": ["127.0.0.1/32"],
        }
        with run_receiver(work / "receiver", **overrides) as rx:
            prom = launch_prometheus(
                work / "prometheus", stack_prometheus_config(rx.admin_url), PROMETHEUS_RULES
            )
            try:
                prom.wait_for_series('up{job="otel-agents"} == 1', timeout=30)
                output = run_demo("http://" + rx.grpc_endpoint, *DEMO_ARGS)
                # Counters must move between scrapes for rate() to see them, and traces complete
                # after the decision wait.
                prom.wait_for_series(
                    "sum(rate(otel_agents_operation_calls_total[1m])) > 0", timeout=30
                )
                prom.wait_for_series("otel_agents_open_traces == 0", timeout=30)
                # Analysis outputs: bottleneck report, findings, alert notifications delivered —
                # each seen in at least three scrapes so rate() over them has data.
                for family in (
                    "otel_agents_critical_path_share",
                    "otel_agents_findings_total",
                    "otel_agents_notifications_total",
                ):
                    prom.wait_for_series(f"count_over_time({family}[1m]) >= 3", timeout=30)
                yield AgentStack(
                    receiver=rx, prometheus=prom, sink=sink, webhook=hook, demo_output=output
                )
            finally:
                stop_process(prom.process)
