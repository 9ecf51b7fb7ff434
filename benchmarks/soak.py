# SPDX-License-Identifier: Apache-2.0
"""Soak with churn (reliability scorecard RC-12): bounded load for a long time, leak checks.

    .venv/bin/python -m benchmarks.soak --minutes 60 --write     # the >= 1 h nightly soak
    .venv/bin/python -m benchmarks.soak --minutes 2 --json       # CI-lite (RC-12 test)

A receiver (``otel-agents serve``, ports 0, default analysis, one forward destination) runs as a
child process; this process sends ``--rate`` spans/s (default 2,500: about a quarter of the
10k spans/s RC-01 sustains here, i.e. half of its CPU headroom) in 100-span requests with churn:
a fresh trace ID per request, agent and model names drawn from ``--names`` (10,000) distinct
values, attribute values of 16 B … 2 KiB.  Span IDs carry a sequence number, so the in-process
sink accounts for every span exactly (a bitmap: sent, acked, forwarded, duplicates, lost).

Every 3 s (the Collector testbed period) it samples the receiver's RSS, CPU, open FDs, threads,
spool size on disk and ``otel_agents_open_traces``.  After ``--warmup`` minutes it fits the RSS
slope by least squares.  Pass criteria (reliability.md §6 RC-12): slope <= ``--max-slope``
MiB per 10 min, FD and thread counts flat (<= the post-warm-up value + 2), spool <= its cap,
open traces <= their cap, 0 acknowledged spans lost, and >= 90 % of the offered spans
acknowledged (a receiver refusing at its memory budget is not soaking).  With ``--in-process`` the receiver runs
inside this process instead and ``tracemalloc`` top-10 growth (<= 5 MiB) is checked too.

Exit code 0 when every criterion holds; ``--write`` appends a row to benchmarks/RESULTS.md
(section "Soak (RC-12)"), ``--json`` prints the figures as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import urllib.request
from concurrent import futures
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psutil
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

ROOT = Path(__file__).resolve().parent.parent
TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
SPANS_PER_REQUEST = 100
MIB = 1 << 20
SPOOL_CAP = 256 * MIB  # storage.max_bytes given to the receiver
OPEN_TRACES_CAP = 50_000  # assembly.max_open_traces default


class BitmapSink:
    """OTLP/gRPC sink that marks span sequence numbers (from the span ID) in a bitmap."""

    def __init__(self, capacity: int) -> None:
        self.bits = bytearray(capacity // 8 + 1)
        self.received = 0
        self.duplicates = 0
        self._lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "opentelemetry.proto.collector.trace.v1.TraceService",
                    {"Export": grpc.unary_unary_rpc_method_handler(self._export)},
                ),
                grpc.method_handlers_generic_handler(
                    "opentelemetry.proto.collector.logs.v1.LogsService",
                    {"Export": grpc.unary_unary_rpc_method_handler(lambda r, c: b"")},
                ),
                grpc.method_handlers_generic_handler(
                    "opentelemetry.proto.collector.metrics.v1.MetricsService",
                    {"Export": grpc.unary_unary_rpc_method_handler(lambda r, c: b"")},
                ),
            )
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _export(self, payload: bytes, _context: grpc.ServicerContext) -> bytes:
        request = ExportTraceServiceRequest.FromString(payload)
        with self._lock:
            for rs in request.resource_spans:
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        seq = int.from_bytes(span.span_id, "big") - 1
                        if not 0 <= seq < len(self.bits) * 8:
                            continue  # not ours (e.g. the receiver's own findings)
                        byte, bit = divmod(seq, 8)
                        if self.bits[byte] & (1 << bit):
                            self.duplicates += 1
                        else:
                            self.bits[byte] |= 1 << bit
                            self.received += 1
        return b""

    def has(self, seq: int) -> bool:
        """Whether span ``seq`` arrived."""
        byte, bit = divmod(seq, 8)
        return bool(self.bits[byte] & (1 << bit))

    def stop(self) -> None:
        """Stop serving."""
        self.server.stop(0).wait(5)


def _kv(key: str, value: str | int) -> KeyValue:
    if isinstance(value, str):
        return KeyValue(key=key, value=AnyValue(string_value=value))
    return KeyValue(key=key, value=AnyValue(int_value=value))


def build_request(first_seq: int, rng: random.Random, names: int) -> bytes:
    """100 spans of one fresh trace: an agent root and inference / tool children with churned
    names and attribute sizes; span ID = sequence number + 1."""
    agent = f"agent-{rng.randrange(names)}"
    trace_id = rng.randbytes(16)
    root = (first_seq + 1).to_bytes(8, "big")
    now = time.time_ns()
    spans = []
    for i in range(SPANS_PER_REQUEST):
        is_root = i == 0
        model = f"model-{rng.randrange(names)}"
        attrs = [
            _kv("gen_ai.operation.name", "invoke_agent" if is_root else "chat"),
            _kv("gen_ai.agent.name", agent),
            _kv("gen_ai.request.model", model),
            _kv("gen_ai.provider.name", "openai"),
            _kv("gen_ai.usage.input_tokens", rng.randrange(10, 4000)),
            _kv("gen_ai.usage.output_tokens", rng.randrange(1, 800)),
            _kv("soak.payload", "x" * rng.choice((16, 64, 256, 2048))),
        ]
        spans.append(
            Span(
                trace_id=trace_id,
                span_id=(first_seq + i + 1).to_bytes(8, "big"),
                parent_span_id=b"" if is_root else root,
                name=f"invoke_agent {agent}" if is_root else f"chat {model}",
                kind=Span.SPAN_KIND_INTERNAL if is_root else Span.SPAN_KIND_CLIENT,
                start_time_unix_nano=now + i * 1000,
                end_time_unix_nano=now + i * 1000 + rng.randrange(1_000_000, 900_000_000),
                attributes=attrs,
            )
        )
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.append(_kv("service.name", "soak"))
    rs.scope_spans.add().spans.extend(spans)
    return request.SerializeToString()


def _open_traces(admin_port: int) -> float | None:
    """``otel_agents_open_traces`` now; ``None`` when the scrape did not answer in time (a busy
    in-process receiver under tracemalloc) — a missed sample, not a failed soak."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=20) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("otel_agents_open_traces "):
                    return float(line.split()[1])
    except OSError:
        return None
    return 0.0


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.glob("*") if p.is_file())


@dataclass
class Result:
    """One soak run's figures (one results row)."""

    minutes: float
    rate: int
    names: int
    mode: str
    sent_spans: int = 0
    acked_spans: int = 0
    refused_requests: int = 0
    forwarded_spans: int = 0
    duplicates: int = 0
    lost_spans: int = 0
    rss_start_mib: float = 0.0
    rss_max_mib: float = 0.0
    rss_slope_mib_per_10min: float = 0.0
    cpu_avg_pct: float = 0.0
    fds_after_warmup: int = 0
    fds_end: int = 0
    threads_after_warmup: int = 0
    threads_end: int = 0
    spool_max_mib: float = 0.0
    open_traces_max: float = 0.0
    tracemalloc_top10_growth_mib: float | None = None
    tracemalloc_total_growth_mib: float | None = None
    tracemalloc_top: list[str] = field(default_factory=list)  # by line, then by file
    rss_series: list[tuple[float, float]] = field(default_factory=list)  # (s, MiB) per sample
    failures: list[str] = field(default_factory=list)


def _slope_per_10min(times: list[float], values: list[float]) -> float:
    if len(times) < 2:
        return 0.0
    mx, my = sum(times) / len(times), sum(values) / len(values)
    den = sum((x - mx) ** 2 for x in times) or 1.0
    return 600.0 * sum((x - mx) * (y - my) for x, y in zip(times, values, strict=True)) / den


def run(args: argparse.Namespace) -> Result:
    """Run the soak; returns the figures with ``failures`` filled by the criteria."""
    seconds = args.minutes * 60.0
    warmup = min(args.warmup * 60.0, seconds / 3)
    total_requests = int(args.rate * seconds / SPANS_PER_REQUEST) + 1
    mode = (
        ("in-process" if args.in_process else "child")
        + (", no analysis" if args.no_analysis else "")
        + "".join(f", {kv}" for kv in args.set)
    )
    res = Result(args.minutes, args.rate, args.names, mode)
    sink = BitmapSink(total_requests * SPANS_PER_REQUEST + SPANS_PER_REQUEST)
    tmp = Path(tempfile.mkdtemp(prefix="otel-agents-soak-"))
    data = tmp / "data"
    settings = {
        "storage.max_bytes": f"{SPOOL_CAP // MIB}MiB",
        "exporters": {"otlp/sink": {"endpoint": f"grpc://127.0.0.1:{sink.port}"}},
    }
    proc: subprocess.Popen[bytes] | None = None
    receiver: Any = None
    try:
        if args.in_process:
            from otel_agents.receiver import Receiver, load_config

            tracemalloc.start(10)
            receiver = Receiver(
                load_config(
                    None,
                    {
                        "storage.data_dir": str(data),
                        "receivers.otlp.protocols.grpc.endpoint": "127.0.0.1:0",
                        "receivers.otlp.protocols.http.enabled": False,
                        "admin.endpoint": "127.0.0.1:0",
                        **settings,
                        **{
                            k: yaml.safe_load(v)
                            for k, _, v in (kv.partition("=") for kv in args.set)
                        },
                    },
                ),
                analysis=not args.no_analysis,
            )
            receiver.start()
            grpc_port, admin_port, pid = receiver.grpc_port, receiver.admin_port, os.getpid()
        else:
            ports_file = tmp / "ports.json"
            cmd = [
                sys.executable,
                "-m",
                "otel_agents._cli",
                "serve",
                "--grpc-endpoint=127.0.0.1:0",
                "--http-endpoint=127.0.0.1:0",
                "--admin-endpoint=127.0.0.1:0",
                f"--data-dir={data}",
                f"--ports-file={ports_file}",
                "--log-level=WARNING",
                f"--forward=grpc://127.0.0.1:{sink.port}",
                f"--set=storage.max_bytes={SPOOL_CAP // MIB}MiB",
                *(f"--set={kv}" for kv in args.set),
                *(["--no-analysis"] if args.no_analysis else []),
            ]
            with open(tmp / "receiver.log", "wb") as log:
                proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=log)
            deadline = time.monotonic() + 60
            while not ports_file.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((tmp / "receiver.log").read_text()[-2000:])
                time.sleep(0.05)
            ports = json.loads(ports_file.read_text())
            grpc_port, admin_port, pid = ports["grpc"], ports["admin"], proc.pid
        watched = psutil.Process(pid)
        acked = bytearray(len(sink.bits))
        stop = threading.Event()
        counters = {"sent": 0, "acked": 0, "refused": 0}
        lock = threading.Lock()

        def load() -> None:
            rng = random.Random(12)
            channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
            call = channel.unary_unary(TRACES)
            interval = SPANS_PER_REQUEST / args.rate
            start = time.monotonic()
            n = 0
            try:
                while n < total_requests and not stop.is_set():
                    if (wait := start + n * interval - time.monotonic()) > 0:
                        time.sleep(wait)
                    first = n * SPANS_PER_REQUEST
                    payload = build_request(first, rng, args.names)
                    n += 1
                    for _attempt in range(20):  # bounded retries, honouring RetryInfo
                        try:
                            call(payload, timeout=10)
                        except grpc.RpcError as err:
                            with lock:
                                counters["refused"] += 1
                            if err.code() is not grpc.StatusCode.UNAVAILABLE:  # type: ignore[attr-defined]
                                break
                            time.sleep(0.5)
                            continue
                        for s in range(first, first + SPANS_PER_REQUEST):
                            acked[s // 8] |= 1 << (s % 8)
                        with lock:
                            counters["acked"] += SPANS_PER_REQUEST
                        break
                    with lock:
                        counters["sent"] += SPANS_PER_REQUEST
            finally:
                channel.close()

        loader = threading.Thread(target=load, daemon=True)
        t0 = time.monotonic()
        cpu0 = sum(watched.cpu_times()[:2])
        times: list[float] = []
        rss: list[float] = []
        fds: list[int] = []
        threads: list[int] = []
        snap0: Any = None
        loader.start()
        while (elapsed := time.monotonic() - t0) < seconds:
            time.sleep(min(3.0, max(0.0, seconds - elapsed)))
            elapsed = time.monotonic() - t0
            with watched.oneshot():
                times.append(elapsed)
                rss.append(watched.memory_info().rss / MIB)
                fds.append(watched.num_fds())
                threads.append(watched.num_threads())
            res.spool_max_mib = max(res.spool_max_mib, _dir_bytes(data) / MIB)
            if (open_now := _open_traces(admin_port)) is not None:
                res.open_traces_max = max(res.open_traces_max, open_now)
            if snap0 is None and elapsed >= warmup:
                res.fds_after_warmup, res.threads_after_warmup = fds[-1], threads[-1]
                if args.in_process:
                    snap0 = tracemalloc.take_snapshot()
        stop.set()
        loader.join(30)
        res.cpu_avg_pct = 100 * (sum(watched.cpu_times()[:2]) - cpu0) / (time.monotonic() - t0)
        if args.in_process and snap0 is not None:
            snap1 = tracemalloc.take_snapshot()
            top = snap1.compare_to(snap0, "lineno")[:10]
            res.tracemalloc_top10_growth_mib = sum(max(0, s.size_diff) for s in top) / MIB
            by_file = snap1.compare_to(snap0, "filename")
            res.tracemalloc_total_growth_mib = sum(s.size_diff for s in by_file) / MIB
            res.tracemalloc_top = [str(s) for s in top] + [str(s) for s in by_file[:10]]
            tracemalloc.stop()
        # Drain: every acknowledged span must reach the destination.
        deadline = time.monotonic() + 60
        while sink.received < counters["acked"] and time.monotonic() < deadline:
            time.sleep(0.2)
        res.sent_spans, res.acked_spans = counters["sent"], counters["acked"]
        res.refused_requests = counters["refused"]
        res.forwarded_spans, res.duplicates = sink.received, sink.duplicates
        res.lost_spans = sum(
            1
            for s in range(total_requests * SPANS_PER_REQUEST)
            if acked[s // 8] & (1 << (s % 8)) and not sink.has(s)
        )
        res.rss_start_mib, res.rss_max_mib = rss[0], max(rss)
        res.rss_series = [(round(t, 1), round(r, 1)) for t, r in zip(times, rss, strict=True)]
        steady = [i for i, t in enumerate(times) if t >= warmup]
        res.rss_slope_mib_per_10min = _slope_per_10min(
            [times[i] for i in steady], [rss[i] for i in steady]
        )
        res.fds_end, res.threads_end = fds[-1], threads[-1]
    finally:
        if receiver is not None:
            receiver.stop()
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        sink.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    f = res.failures
    if res.lost_spans:
        f.append(f"{res.lost_spans} acknowledged spans never forwarded")
    if res.acked_spans == 0:
        f.append("nothing was acknowledged")
    # A receiver that sheds the load (memory-budget refusals, a stalled loader) would pass the
    # memory criteria without soaking: like RC-01, >= 90 % of the offered spans must be acked.
    offered = total_requests * SPANS_PER_REQUEST
    if res.acked_spans < 0.9 * offered:
        f.append(
            f"only {res.acked_spans} of {offered} offered spans acknowledged "
            f"({res.refused_requests} refusals): the load was shed"
        )
    if res.rss_slope_mib_per_10min > args.max_slope:
        f.append(f"RSS slope {res.rss_slope_mib_per_10min:.2f} MiB/10 min > {args.max_slope}")
    if res.fds_end > res.fds_after_warmup + 2:
        f.append(f"FDs grew {res.fds_after_warmup} -> {res.fds_end}")
    if res.threads_end > res.threads_after_warmup + 2:
        f.append(f"threads grew {res.threads_after_warmup} -> {res.threads_end}")
    if res.spool_max_mib * MIB > SPOOL_CAP * 1.05:  # WAL may overshoot by a checkpoint
        f.append(f"spool {res.spool_max_mib:.0f} MiB above its cap")
    if res.open_traces_max > OPEN_TRACES_CAP:
        f.append(f"open traces {res.open_traces_max:.0f} above the cap")
    growth = res.tracemalloc_top10_growth_mib
    if growth is not None and growth > 5.0:
        f.append(f"tracemalloc top-10 growth {growth:.1f} MiB > 5")
    return res


def write_row(res: Result, note: str = "") -> None:
    """Append the run to benchmarks/RESULTS.md under "Soak (RC-12)" (``note`` goes into the
    verdict cell, e.g. what else ran on the machine)."""
    path = ROOT / "benchmarks" / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    header = (
        "\n## Soak (RC-12)\n\n`python -m benchmarks.soak --minutes N --write`; criteria in "
        "docs/reliability.md.\n\n"
        "| date (UTC) | minutes | spans/s | names | mode | acked | forwarded | dup | lost | "
        "RSS start/max MiB | slope MiB/10 min | CPU % | FDs | threads | spool max MiB | "
        "open traces max | tracemalloc MiB | verdict |\n"
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- "
        "| --- | ---: | ---: | ---: | --- |\n"
    )
    if "## Soak (RC-12)" not in text:
        text = text.rstrip("\n") + "\n" + header
    tm = res.tracemalloc_top10_growth_mib
    row = (
        f"| {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} | {res.minutes:g} | {res.rate} | "
        f"{res.names} | {res.mode} | {res.acked_spans} | {res.forwarded_spans} | "
        f"{res.duplicates} | {res.lost_spans} | {res.rss_start_mib:.0f}/{res.rss_max_mib:.0f} | "
        f"{res.rss_slope_mib_per_10min:.2f} | {res.cpu_avg_pct:.0f} | "
        f"{res.fds_after_warmup}→{res.fds_end} | {res.threads_after_warmup}→{res.threads_end} | "
        f"{res.spool_max_mib:.1f} | {res.open_traces_max:.0f} | "
        f"{'-' if tm is None else f'{tm:.1f}'} | "
        f"{'pass' if not res.failures else 'FAIL: ' + '; '.join(res.failures)}"
        f"{f' ({res.refused_requests} refused requests)' if res.refused_requests else ''}"
        f"{f'. {note}' if note else ''} |\n"
    )
    # Insert at the end of the soak table (it is the last section we own).
    head, _, tail = text.partition("## Soak (RC-12)")
    # The next section starts at a heading or at another script's <!-- marker -->.
    rest = re.split(r"\n(?=## |<!-- )", tail, maxsplit=1)
    section = rest[0].rstrip("\n") + "\n" + row
    text = head + "## Soak (RC-12)" + section + ("\n" + rest[1] if len(rest) > 1 else "")
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns 0 when every RC-12 criterion holds."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=60.0, help="soak length (default 60)")
    p.add_argument("--warmup", type=float, default=10.0, help="warm-up minutes (<= 1/3 of run)")
    p.add_argument("--rate", type=int, default=2500, help="spans/s (default 2500)")
    p.add_argument("--names", type=int, default=10_000, help="distinct agent/model names")
    p.add_argument("--max-slope", type=float, default=1.0, help="MiB per 10 min (default 1)")
    p.add_argument("--in-process", action="store_true", help="receiver in-process + tracemalloc")
    p.add_argument("--no-analysis", action="store_true", help="ingest and forward only")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="receiver setting, as `otel-agents serve --set` (repeatable)",
    )
    p.add_argument("--write", action="store_true", help="append a row to benchmarks/RESULTS.md")
    p.add_argument("--note", default="", help="text for the results row's verdict cell")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    args = p.parse_args(argv)
    res = run(args)
    if args.write:
        write_row(res, args.note)
    if args.json:
        print(json.dumps(asdict(res)))
    else:
        for k, v in asdict(res).items():
            if k != "rss_series":  # in --json only
                print(f"{k:32} {v}")
    return 0 if not res.failures else 1


if __name__ == "__main__":
    sys.exit(main())
