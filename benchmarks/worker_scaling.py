# SPDX-License-Identifier: Apache-2.0
"""Worker scaling: wall throughput of ``serve --workers 2`` against one process, same run.

    .venv/bin/python -m benchmarks.worker_scaling                 # 5 rounds, OTLP/HTTP + gRPC
    .venv/bin/python -m benchmarks.worker_scaling --write         # also update RESULTS.md

Issue 8's target: "wall throughput scales to both cores (>= 1.7x one process's) with more than
one worker process". On a 2-core machine the Python load client of ``receiver_throughput`` takes
~0.6-1.0 core itself, so two workers there cannot show more than the core left to them. This
benchmark drives the receiver with ``h2load`` (nghttp2's C load generator, Debian package
``nghttp2-client``, installed by ``scripts/e2e-setup``), which posts one pre-built 512-span
request (``benchmarks._load.build_request``: whole agent traces, 8-12 attributes a span) over
32 keep-alive connections (OTLP/HTTP protobuf) or 8 HTTP/2 connections x 4 streams (OTLP/gRPC,
the same bytes in gRPC framing) at a small fraction of a core.

Pipeline: ingest + spool (validation, admission, durable spool commit before the answer;
``--no-analysis``, no forwarding destination). Per round and protocol, 1 worker and 2 workers
alternate; each case sends ``--requests`` requests after a warm-up, bounded by h2load's own
count and a wall-clock timeout. Every case is checked exactly: the receiver's
``otel_agents_receiver_accepted_items_total`` (summed over workers) must equal the spans sent,
and h2load must report every request answered 2xx. Reported: wall spans/s, the receiver's CPU
(all its processes) and the client's CPU per wall second, medians over rounds; the verdict is
the median of the per-round ratio 2 workers / 1 worker.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from benchmarks._load import TRACE_EXPORT, build_request
from benchmarks.receiver_scaling import Running
from benchmarks.receiver_throughput import _free_port, _stop

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
BLOCK = "worker_scaling"
SPANS = 512
PY = sys.executable
_H2LOAD_TIMEOUT = 240.0


@dataclass
class Receiver(Running):
    """A started ``serve`` (one process or a supervisor and its workers)."""

    http_port: int

    def accepted(self) -> float:
        """Spans acknowledged as durable, summed over workers (their ``worker`` label)."""
        pattern = r"^otel_agents_receiver_accepted_items_total\{([^}]*)\} ([0-9.e+]+)$"
        return sum(
            float(m.group(2))
            for m in re.finditer(pattern, self.metrics(), re.M)
            if 'signal="traces"' in m.group(1) or "signal" not in m.group(1)
        )


@contextlib.contextmanager
def receiver(tmp: Path, workers: int) -> Iterator[Receiver]:
    """``otel-agents serve`` with ``workers`` ingest processes on loopback ports it picks."""
    data = tmp / f"data-{workers}w"
    shutil.rmtree(data, ignore_errors=True)
    ports_file = tmp / f"ports-{workers}w.json"
    ports_file.unlink(missing_ok=True)
    # --workers needs fixed ports (every worker binds the same one): let the kernel pick free
    # ones for the single-process case and reuse its choice for the supervisor.
    args = [PY, "-m", "otel_agents._cli", "serve", "--no-analysis", "--log-level=WARNING"]
    args += [f"--data-dir={data}", f"--ports-file={ports_file}", "--admin-endpoint=127.0.0.1:0"]
    if workers > 1:
        gport, hport = _free_port(), _free_port()
        args += [f"--grpc-endpoint=127.0.0.1:{gport}", f"--http-endpoint=127.0.0.1:{hport}"]
        args += ["--workers", str(workers)]
    else:
        args += ["--grpc-endpoint=127.0.0.1:0", "--http-endpoint=127.0.0.1:0"]
    log = (tmp / f"serve-{workers}w.log").open("wb")
    proc = subprocess.Popen(args, cwd=tmp, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 120
        while not ports_file.exists() or not ports_file.read_text().strip():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"receiver with {workers} worker(s) did not start")
            time.sleep(0.05)
        ports = json.loads(ports_file.read_text())
        yield Receiver(proc, int(ports["grpc"]), int(ports["admin"]), int(ports["http"]))
    finally:
        _stop(proc, timeout=60.0)  # a supervisor drains every worker before it exits
        log.close()


def h2load(protocol: str, port: int, body: Path, requests: int) -> tuple[float, float, int]:
    """Send ``requests`` requests; returns (wall seconds, client CPU seconds, 2xx answers)."""
    if protocol == "http":
        target = f"http://127.0.0.1:{port}/v1/traces"
        shape = ["--h1", "-c", "32", "-m", "1"]
        headers = ["-H", "content-type: application/x-protobuf"]
    else:
        target = f"http://127.0.0.1:{port}{TRACE_EXPORT}"
        shape = ["-c", "8", "-m", "4"]
        headers = ["-H", "content-type: application/grpc", "-H", "te: trailers"]
    cmd = ["h2load", "-n", str(requests), "-t", "1", *shape, *headers, "-d", str(body), target]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=_H2LOAD_TIMEOUT, check=True)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    m = re.search(r"status codes: (\d+) 2xx", out.stdout)
    ok = int(m.group(1)) if m else 0
    finished = re.search(r"finished in ([0-9.]+)(m?s)", out.stdout)
    if finished:  # h2load's own clock excludes its start-up
        wall = float(finished.group(1)) / (1000.0 if finished.group(2) == "ms" else 1.0)
    return wall, cpu, ok


@dataclass
class Sample:
    spans_per_s: float
    receiver_cores: float
    client_cores: float
    spans_per_cpu_s: float
    peak_rss_mib: float


@dataclass
class Case:
    protocol: str
    workers: int
    samples: list[Sample] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return float(statistics.median(float(getattr(s, attr)) for s in self.samples))


def measure(rcv: Receiver, protocol: str, body: Path, requests: int, warmup: int) -> Sample:
    port = rcv.http_port if protocol == "http" else rcv.grpc_port
    h2load(protocol, port, body, warmup)
    accepted0 = rcv.accepted()
    cpu0 = rcv.cpu()
    wall, client_cpu, ok = h2load(protocol, port, body, requests)
    cpu = rcv.cpu() - cpu0
    rss = rcv.rss()
    deadline = time.monotonic() + 10
    accepted = rcv.accepted() - accepted0
    while accepted < requests * SPANS and time.monotonic() < deadline:
        time.sleep(0.2)  # the supervisor's /metrics reads each worker's
        accepted = rcv.accepted() - accepted0
    if ok != requests or int(accepted) != requests * SPANS:
        raise RuntimeError(
            f"{protocol}: {ok}/{requests} answered 2xx, {int(accepted)} of "
            f"{requests * SPANS} spans accepted"
        )
    return Sample(
        spans_per_s=requests * SPANS / wall,
        receiver_cores=cpu / wall,
        client_cores=client_cpu / wall,
        spans_per_cpu_s=requests * SPANS / cpu if cpu else 0.0,
        peak_rss_mib=rss,
    )


def run(args: argparse.Namespace) -> dict[tuple[str, int], Case]:
    if shutil.which("h2load") is None:
        raise SystemExit("worker_scaling: h2load not found (apt-get install nghttp2-client)")
    cases = {(p, w): Case(p, w) for p in args.protocols for w in (1, 2)}
    payload = build_request(SPANS, random.Random(7), time.time_ns())
    with tempfile.TemporaryDirectory(prefix="otel-agents-workers-") as name:
        tmp = Path(name)
        bodies = {"http": tmp / "body.pb", "grpc": tmp / "body.grpc"}
        bodies["http"].write_bytes(payload)
        bodies["grpc"].write_bytes(b"\x00" + len(payload).to_bytes(4, "big") + payload)
        for rnd in range(args.rounds):
            order = (1, 2) if rnd % 2 == 0 else (2, 1)
            for workers in order:
                with receiver(tmp, workers) as rcv:
                    for protocol in args.protocols:
                        s = measure(rcv, protocol, bodies[protocol], args.requests, args.warmup)
                        cases[(protocol, workers)].samples.append(s)
                        print(
                            f"round {rnd + 1} {protocol} {workers}w: {s.spans_per_s:,.0f} spans/s"
                            f", receiver {s.receiver_cores:.2f} cores, client "
                            f"{s.client_cores:.2f}",
                            file=sys.stderr,
                        )
    return cases


def ratios(cases: dict[tuple[str, int], Case], protocol: str) -> list[float]:
    one, two = cases[(protocol, 1)].samples, cases[(protocol, 2)].samples
    return [b.spans_per_s / a.spans_per_s for a, b in zip(one, two, strict=True)]


def table(cases: dict[tuple[str, int], Case], args: argparse.Namespace) -> str:
    load = os.getloadavg()
    lines = [
        f"Worker scaling — ingest + spool, 512-span requests from h2load, medians of "
        f"{args.rounds} rounds × {args.requests} requests, {dt.date.today()}; "
        f"{_cpu_model()}, {psutil.cpu_count()} cores (shared "
        f"with the client), Python {platform.python_version()}, load average before "
        f"{args.load_before:.2f}, after {load[0]:.2f} (`python -m benchmarks.worker_scaling`)",
        "",
        "| protocol | workers | spans/s (wall) | receiver cores | client cores | spans per "
        "receiver CPU-s | RSS MiB (all processes) | 2 workers / 1 (per-round median) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (protocol, workers), case in cases.items():
        r = ratios(cases, protocol)
        scale = (
            f"**{statistics.median(r):.2f}×** ({min(r):.2f}–{max(r):.2f})" if workers == 2 else ""
        )
        lines.append(
            f"| {protocol} | {workers} | {case.median('spans_per_s'):,.0f} | "
            f"{case.median('receiver_cores'):.2f} | {case.median('client_cores'):.2f} | "
            f"{case.median('spans_per_cpu_s'):,.0f} | {case.median('peak_rss_mib'):.0f} | "
            f"{scale} |"
        )
    return "\n".join(lines)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def write(text: str) -> None:
    content = RESULTS.read_text()
    block = f"<!-- {BLOCK} -->\n{text}\n<!-- /{BLOCK} -->"
    pattern = re.compile(rf"<!-- {BLOCK} -->.*?<!-- /{BLOCK} -->", re.S)
    if pattern.search(content):
        content = pattern.sub(lambda _m: block, content)
    else:
        content = content.rstrip("\n") + f"\n\n## Worker scaling\n\n{block}\n"
    RESULTS.write_text(content)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 1 when the median scaling is under ``--target``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--requests", type=int, default=2000, help="requests per case (512 spans)")
    p.add_argument("--warmup", type=int, default=200, help="requests before each measured case")
    p.add_argument("--protocols", default="http,grpc", type=lambda s: s.split(","))
    p.add_argument("--target", type=float, default=1.7, help="2 workers / 1 worker (wall)")
    p.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    if min(args.requests, args.warmup) < 32:
        p.error("--requests and --warmup must be at least 32 (h2load opens 32 connections)")
    args.load_before = os.getloadavg()[0]
    cases = run(args)
    text = table(cases, args)
    print(text)
    if args.write:
        write(text)
    return (
        0 if all(statistics.median(ratios(cases, q)) >= args.target for q in args.protocols) else 1
    )


if __name__ == "__main__":
    sys.exit(main())
