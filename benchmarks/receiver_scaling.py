# SPDX-License-Identifier: Apache-2.0
"""Receiver scaling: CPU and RSS vs offered load, name cardinality and open traces; detection
delay vs load.

    .venv/bin/python -m benchmarks.receiver_scaling            # full table (~6 min)
    .venv/bin/python -m benchmarks.receiver_scaling --quick    # fewer points, shorter (~2 min)

Every point runs the full receiver (``otel-agents serve``: validate, spool, forward to a counting
sink, analysis with the default rule pack) in a fresh data directory with
``admission.memory_limit`` set to the RSS budget (``--budget``, 256 MiB), driven by the paced
load client (``benchmarks._load``, a separate process, open-loop schedule, bounded in requests and
seconds).

1. **Capacity**: an unpaced run; capacity = spans per receiver CPU-second (CPU charged until
   the receiver is idle again), i.e. what one core sustains.  Later loads are fractions of it.
2. **Offered load** (25 %, 50 %, 100 %, 200 % of capacity): receiver cores used, peak RSS vs
   the budget, p99 ack latency, refused requests, and how long the backlog took to drain.
3. **Cardinality** (distinct agent / tool / model names at 50 % load): CPU, RSS, /metrics
   series.
4. **Open traces** (spans per trace 64 / 8 / 2 at 50 % load, so 8× / 64× / 256× the traces per
   span): ``otel_agents_open_traces`` at the end, CPU, RSS.
5. **Detection delay** vs load: while the background load runs, a tool starts failing (its
   first failing span is the fault's start); the delay is until the ``ToolErrorRatioHigh``
   alert for that tool reaches a loopback webhook sink (default rule: ratio over 1 m, ``for:
   5s``; route ``group_wait: 1s``).  p50 / p95 over ``--repeats`` faults per load.

``--write`` puts the tables into benchmarks/RESULTS.md (section ``receiver_scaling``).
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import psutil
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from benchmarks._load import TRACE_EXPORT
from benchmarks.receiver_throughput import PY, ROOT, _stop, machine, sink

MIB = 1 << 20


# ---------------------------------------------------------------------------------- receiver


@dataclass
class Running:
    """A started receiver."""

    proc: subprocess.Popen[bytes]
    grpc_port: int
    admin_port: int

    def processes(self) -> list[psutil.Process]:
        root = psutil.Process(self.proc.pid)
        return [root, *root.children(recursive=True)]

    def cpu(self) -> float:
        total = 0.0
        for p in self.processes():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def rss(self) -> float:
        total = 0
        for p in self.processes():
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total / MIB

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.admin_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:  # loopback URL we built
            return str(resp.read().decode())

    def gauge(self, name: str) -> float:
        total = 0.0
        for line in self.metrics().splitlines():
            if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total


@contextlib.contextmanager
def receiver(tmp: Path, sink_port: int, budget: int, extra: list[str] = ()) -> Iterator[Running]:  # type: ignore[assignment]
    """The full receiver (analysis on, forwarding to the sink) with an RSS budget."""
    data = Path(tempfile.mkdtemp(dir=tmp, prefix="data-"))
    ports_file = data / "ports.json"
    log = (data / "serve.log").open("wb")
    args = [
        PY, "-m", "otel_agents._cli", "serve",
        "--grpc-endpoint", "127.0.0.1:0", "--http-endpoint", "127.0.0.1:0",
        "--admin-endpoint", "127.0.0.1:0", "--data-dir", str(data / "spool"),
        "--ports-file", str(ports_file),
        "--set", f"exporters.otlp/sink={{endpoint: 'grpc://127.0.0.1:{sink_port}'}}",
        "--set", "pipeline.processors=[agent_analysis, alert, audit]",
        "--set", f"admission.memory_limit={budget}",
        *extra,
    ]  # fmt: skip
    proc = subprocess.Popen(args, cwd=tmp, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 90
        while not ports_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"receiver did not start: {(data / 'serve.log').read_text()}")
            time.sleep(0.05)
        ports = json.loads(ports_file.read_text())
        yield Running(proc, int(ports["grpc"]), int(ports["admin"]))
    finally:
        _stop(proc)
        log.close()
        shutil.rmtree(data, ignore_errors=True)


# ---------------------------------------------------------------------------------- load


@dataclass
class Point:
    """One measured load window."""

    offered: float  # spans/s asked for (0 = unpaced)
    acked: float  # spans/s acknowledged
    cores: float  # receiver CPU seconds per wall second during the load
    spans_per_cpu_s: float  # acked spans / CPU charged until idle
    peak_rss_mib: float
    p99_ms: float
    failed: int
    drain_s: float  # time after the last ack until the receiver was idle


def run_load(
    target: Running,
    *,
    rate_spans: float,
    seconds: float,
    spans: int,
    streams: int,
    names: int = 0,
    spans_per_trace: int = 8,
    settle: float = 60.0,
) -> Point:
    """Drive ``target`` for ``seconds`` at ``rate_spans`` spans/s (0 = as fast as it acks)."""
    rate_req = rate_spans / spans if rate_spans else 0.0
    max_requests = int(rate_req * seconds) + 1 if rate_req else 100_000
    peak = 0.0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.wait(0.2):
            peak = max(peak, target.rss())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu0, t0 = target.cpu(), time.monotonic()
    out = subprocess.run(
        [
            PY, "-m", "benchmarks._load", f"127.0.0.1:{target.grpc_port}", "grpc",
            str(streams), str(spans), str(max_requests), str(seconds), str(rate_req),
            str(names), str(spans_per_trace),
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=seconds + 120, check=True,
    )  # fmt: skip
    cpu_load, t_load = target.cpu(), time.monotonic()
    cpu1, idle_at = cpu_load, t_load
    deadline = t_load + settle
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = target.cpu()
        if now - cpu1 < 0.05:
            break
        cpu1, idle_at = now, time.monotonic()
    stop.set()
    sampler.join()
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return Point(
        offered=rate_spans,
        acked=r["ok_spans"] / r["wall"],
        cores=(cpu_load - cpu0) / max(t_load - t0, 1e-9),
        spans_per_cpu_s=r["ok_spans"] / max(cpu1 - cpu0, 1e-9),
        peak_rss_mib=peak,
        p99_ms=r["p99"] * 1000,
        failed=r["failed"],
        drain_s=idle_at - t_load,
    )


# ---------------------------------------------------------------------------------- faults


class _Webhook(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _WebhookHandler)
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.lock = threading.Lock()


class _WebhookHandler(http.server.BaseHTTPRequestHandler):
    server: _Webhook

    def do_POST(self) -> None:  # http.server naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.received.append((time.monotonic(), json.loads(body or b"{}")))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # stdlib signature
        pass


@contextlib.contextmanager
def webhook() -> Iterator[_Webhook]:
    """A loopback Alertmanager-webhook sink recording arrival times."""
    server = _Webhook()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def fault_request(tool: str, seq: int) -> bytes:
    """One agent run whose four calls of ``tool`` fail (status ERROR, ``error.type``)."""
    now = time.time_ns()
    trace_id = os.urandom(16)
    root = os.urandom(8)
    spans = [
        Span(
            trace_id=trace_id, span_id=root, name="invoke_agent planner", kind=1,
            start_time_unix_nano=now - 2_000_000_000, end_time_unix_nano=now,
            attributes=[_kv("gen_ai.operation.name", "invoke_agent"),
                        _kv("gen_ai.agent.name", "planner")],
        )
    ]  # fmt: skip
    for i in range(4):
        spans.append(
            Span(
                trace_id=trace_id, span_id=os.urandom(8), parent_span_id=root,
                name=f"execute_tool {tool}", kind=1,
                start_time_unix_nano=now - 1_000_000_000 + i, end_time_unix_nano=now - 500_000,
                attributes=[_kv("gen_ai.operation.name", "execute_tool"),
                            _kv("gen_ai.tool.name", tool), _kv("gen_ai.agent.name", "planner"),
                            _kv("error.type", "TimeoutError")],
                status=Status(code=2, message=f"timeout #{seq}"),
            )
        )  # fmt: skip
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.append(_kv("service.name", "agent-app"))
    rs.scope_spans.add().spans.extend(spans)
    return request.SerializeToString()


def detection_delay(target: Running, hook: _Webhook, tool: str, timeout: float) -> float | None:
    """Start failing ``tool`` now (one failing run every 0.5 s); seconds until its alert."""
    with grpc.insecure_channel(f"127.0.0.1:{target.grpc_port}") as channel:
        call = channel.unary_unary(TRACE_EXPORT)
        start = time.monotonic()
        seq = 0
        while time.monotonic() - start < timeout:
            with contextlib.suppress(grpc.RpcError):  # a refusal under load is part of the test
                call(fault_request(tool, seq), timeout=10)
            seq += 1
            with hook.lock:
                for at, body in hook.received:
                    for alert in body.get("alerts", []):
                        labels = alert.get("labels", {})
                        if labels.get("tool") == tool and alert.get("status") == "firing":
                            return at - start
            time.sleep(max(0.0, start + seq * 0.5 - time.monotonic()))
    return None


def _background(target: Running, rate_spans: float, seconds: float, spans: int) -> Any:
    rate_req = rate_spans / spans
    return subprocess.Popen(
        [
            PY, "-m", "benchmarks._load", f"127.0.0.1:{target.grpc_port}", "grpc", "4",
            str(spans), str(int(rate_req * seconds) + 1), str(seconds), str(rate_req),
        ],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


# ---------------------------------------------------------------------------------- main


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer points, shorter windows")
    parser.add_argument("--seconds", type=float, default=12.0, help="load window per point")
    parser.add_argument("--spans", type=int, default=512, help="spans per request")
    parser.add_argument("--budget", type=int, default=256 * MIB, help="RSS budget, bytes")
    parser.add_argument("--repeats", type=int, default=5, help="faults per load level")
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    loads = [0.25, 0.5, 1.0, 2.0]
    cardinalities = [0, 100, 1000, 10000]
    per_trace = [64, 8, 2]
    delay_loads = [0.1, 0.5, 1.0]
    if args.quick:
        args.seconds, args.repeats = 6.0, 2
        loads, cardinalities, per_trace, delay_loads = [0.5, 2.0], [0, 1000], [8, 2], [0.5]
    out: list[str] = []
    log = sys.stderr

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        with sink(tmp) as sink_port:
            # 1. capacity
            with receiver(tmp, sink_port, args.budget) as r:
                cap = run_load(r, rate_spans=0, seconds=args.seconds, spans=args.spans, streams=4)
            capacity = cap.spans_per_cpu_s
            print(f"capacity {capacity:,.0f} spans per CPU-s ({cap.acked:,.0f} acked/s)", file=log)
            out += [
                f"Capacity (full pipeline, one core): **{capacity:,.0f} spans per CPU-s** "
                f"(unpaced: {cap.acked:,.0f} spans/s acked, peak RSS {cap.peak_rss_mib:.0f} MiB).",
                "",
                "| offered | spans/s offered | acked | receiver cores | peak RSS MiB "
                f"(budget {args.budget // MIB}) | p99 ms | refused | drain s |",
                "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            ]
            # 2. offered load
            for f in loads:
                with receiver(tmp, sink_port, args.budget) as r:
                    p = run_load(
                        r, rate_spans=f * capacity, seconds=args.seconds, spans=args.spans,
                        streams=8,
                    )  # fmt: skip
                print(f"load {f:.0%}: {p}", file=log)
                out.append(
                    f"| {f:.0%} | {p.offered:,.0f} | {p.acked:,.0f} | {p.cores:.2f} | "
                    f"{p.peak_rss_mib:.0f} | {p.p99_ms:.0f} | {p.failed} | {p.drain_s:.1f} |"
                )
            # 3. cardinality
            out += [
                "",
                "| distinct agent/tool/model names (50 % load) | acked spans/s | refused "
                "| receiver cores | peak RSS MiB | /metrics lines |",
                "| ---: | ---: | ---: | ---: | ---: | ---: |",
            ]
            for names in cardinalities:
                with receiver(tmp, sink_port, args.budget) as r:
                    p = run_load(
                        r, rate_spans=0.5 * capacity, seconds=args.seconds, spans=args.spans,
                        streams=4, names=names,
                    )  # fmt: skip
                    series = sum(1 for ln in r.metrics().splitlines() if ln and ln[0] != "#")
                print(f"names {names}: {p} series {series}", file=log)
                label = names or "4 / 4 / 3"
                out.append(
                    f"| {label} | {p.acked:,.0f} | {p.failed} | {p.cores:.2f} | "
                    f"{p.peak_rss_mib:.0f} | {series:,} |"
                )
            # 4. open traces
            out += [
                "",
                "| spans per trace (50 % load) | open traces at end | receiver cores "
                "| peak RSS MiB |",
                "| ---: | ---: | ---: | ---: |",
            ]
            for spt in per_trace:
                with receiver(tmp, sink_port, args.budget) as r:
                    p = run_load(
                        r, rate_spans=0.5 * capacity, seconds=args.seconds, spans=args.spans,
                        streams=4, spans_per_trace=spt, settle=0.0,
                    )  # fmt: skip
                    # Read right after the load: traces stay open for decision_wait (10 s).
                    open_traces = r.gauge("otel_agents_open_traces")
                print(f"spans/trace {spt}: open {open_traces:.0f} {p}", file=log)
                out.append(f"| {spt} | {open_traces:,.0f} | {p.cores:.2f} | {p.peak_rss_mib:.0f} |")
            # 5. detection delay
            out += [
                "",
                "| background load | faults | detected | delay p50 s | delay p95 s "
                "| analysed fraction |",
                "| ---: | ---: | ---: | ---: | ---: | ---: |",
            ]
            for f in delay_loads:
                delays: list[float] = []
                # The analysis budget samples traces under load; a fault is seen only through
                # its sampled runs, so the fraction analysed explains the delay.
                fractions: list[float] = []
                with webhook() as hook:
                    hook_url = f"http://127.0.0.1:{hook.server_address[1]}/alerts"
                    extra = [
                        "--set", "processors.alert.route={receiver: hook, group_by: [alertname, "
                        "agent, tool], group_wait: 1s, group_interval: 5s, repeat_interval: 1h}",
                        "--set", f"processors.alert.receivers=[{{name: hook, webhook_configs: "
                        f"[{{url: '{hook_url}'}}]}}]",
                        "--set", "processors.alert.egress={allow_http: true, "
                        "allow_cidrs: ['127.0.0.1/32']}",
                    ]  # fmt: skip
                    with receiver(tmp, sink_port, args.budget, extra) as r:
                        seconds = 20.0 + args.repeats * 32.0
                        bg = _background(r, f * capacity, seconds, args.spans)
                        try:
                            time.sleep(3.0)  # the background load is running
                            for i in range(args.repeats):
                                delay = detection_delay(r, hook, f"flaky_tool_{i}", 30.0)
                                with contextlib.suppress(OSError, ValueError):
                                    fractions.append(
                                        r.gauge("otel_agents_analysis_sampled_fraction")
                                    )
                                print(f"load {f:.0%} fault {i}: {delay}", file=log)
                                if delay is not None:
                                    delays.append(delay)
                        finally:
                            bg.terminate()
                            bg.wait(10)
                p50 = f"{statistics.median(delays):.1f}" if delays else "—"
                p95 = f"{_pct(delays, 0.95):.1f}" if delays else "—"
                frac = f"{statistics.median(fractions):.3f}" if fractions else "—"
                out.append(f"| {f:.0%} | {args.repeats} | {len(delays)} | {p50} | {p95} | {frac} |")

    head = (
        f"Receiver scaling — full pipeline, {args.spans}-span requests, {args.seconds:.0f} s "
        f"windows, {time.strftime('%Y-%m-%d')}; {machine()}"
    )
    table = "\n".join([head, "", *out])
    print(table)
    if args.write:
        write_results(table)
    return 0


def write_results(table: str) -> None:
    """Replace (or append) the ``receiver_scaling`` section of benchmarks/RESULTS.md."""
    path = ROOT / "benchmarks" / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    start, end = "<!-- receiver_scaling -->", "<!-- /receiver_scaling -->"
    block = f"{start}\n{table}\n{end}"
    if start in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n## Receiver scaling\n\n" + block + "\n"
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
