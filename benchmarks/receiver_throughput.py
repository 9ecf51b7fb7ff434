# SPDX-License-Identifier: Apache-2.0
"""Receiver throughput: spans/s and spans per receiver CPU-second, against rotel in the same run.

    .venv/bin/python -m benchmarks.receiver_throughput            # full table (~3-6 min)
    .venv/bin/python -m benchmarks.receiver_throughput --quick    # 1 round, fewer cases

A load client (separate process, loopback, bounded in count and time) sends 512-span batches of
realistic agent traces over 1, 4 and 16 streams, gRPC and HTTP. Targets, each measured with the
same client in the same run:

* ``rotel``            — rotel (Rust, PyPI) forwarding OTLP/gRPC to the sink: the anchor
* ``ingest``           — transport + validation with the no-op ingestor (``serve_noop_main``)
* ``ingest+spool``     — our receiver, durable spool, no destination, no analysis
* ``+forward``         — our receiver forwarding to the sink (``--no-analysis``)
* ``+analysis``        — our receiver forwarding and running the full analysis pipeline
* ``+forward 2w``      — ``+forward`` with ``serve --workers 2`` (two ingest processes)

rotel and our forwarder use the same compression (``--compression``, gzip by default as both
ship).  Receiver CPU is the target's user+system CPU time (psutil, all its processes) from the
first request until it is idle again after the last ack, so forwarding and analysis backlogs are
charged; RSS is its peak sample.  Figures are medians over ``--rounds`` rounds; ratios are
against rotel's median in the same run.  Results as a markdown table with the headline ratios
(``--write`` updates benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def _wait_port_file(path: Path, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return int(path.read_text().strip())
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        time.sleep(0.05)
    raise TimeoutError(f"no port in {path}")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_tcp(port: int, timeout: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} not listening")


def _stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


#: The sink's process, for its CPU share (set by sink()).
_SINK_PID: int | None = None


@contextlib.contextmanager
def sink(tmp: Path) -> Iterator[int]:
    """A counting OTLP/gRPC sink in its own process; yields its port."""
    global _SINK_PID
    port_file = tmp / "sink.port"
    proc = subprocess.Popen(
        [PY, "-m", "benchmarks._sink", str(port_file)], cwd=ROOT, stderr=subprocess.DEVNULL
    )
    try:
        port = _wait_port_file(port_file, proc)
        _SINK_PID = proc.pid
        yield port
    finally:
        _SINK_PID = None
        _stop(proc)


@dataclass
class Target:
    """A running receiver under test."""

    name: str
    proc: subprocess.Popen[bytes]
    grpc_port: int
    http_port: int | None


def rotel_binary() -> str | None:
    try:
        import rotel  # type: ignore[import-not-found]
    except ImportError:
        return None
    path = Path(rotel.__file__).parent / "rotel-agent"
    return str(path) if path.exists() else None


@contextlib.contextmanager
def rotel_target(tmp: Path, sink_port: int, compression: str = "gzip") -> Iterator[Target]:
    binary = rotel_binary()
    if binary is None:
        raise RuntimeError("rotel is not installed (pip install rotel)")
    gport, hport = _free_port(), _free_port()
    proc = subprocess.Popen(
        [
            binary,
            "start",
            "--otlp-grpc-endpoint",
            f"127.0.0.1:{gport}",
            "--otlp-http-endpoint",
            f"127.0.0.1:{hport}",
            "--otlp-grpc-max-recv-msg-size-mib",
            "64",
            "--exporter",
            "otlp",
            "--otlp-exporter-endpoint",
            f"http://127.0.0.1:{sink_port}",
            "--otlp-exporter-protocol",
            "grpc",
            "--otlp-exporter-compression",
            compression,
            "--pid-file",
            str(tmp / "rotel.pid"),
            "--log-file",
            str(tmp / "rotel.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_tcp(gport)
        _wait_tcp(hport)
        yield Target("rotel", proc, gport, hport)
    finally:
        _stop(proc)


_RECEIVER_CONFIGS = {
    "ingest+spool": "",
    "+forward": "forward",
    "+analysis": "forward,analysis",
    "+forward 2w": "forward,workers2",
}


@contextlib.contextmanager
def noop_target(tmp: Path) -> Iterator[Target]:
    """Transport + validation with the no-op ingestor (``serve_noop_main``): "ingest only"."""
    code = "from otel_agents.receiver._common import serve_noop_main; serve_noop_main()"
    proc = subprocess.Popen(
        [PY, "-c", code, "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"],
        cwd=tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()  # "grpc=<port> http=<port>"
        ports = dict(item.split("=") for item in line.split())
        yield Target("ingest", proc, int(ports["grpc"]), int(ports["http"]))
    finally:
        _stop(proc)


@contextlib.contextmanager
def receiver_target(
    tmp: Path, sink_port: int, mode: str, compression: str = "gzip"
) -> Iterator[Target]:
    """Our receiver via the CLI; ``mode`` picks forwarding/analysis from _RECEIVER_CONFIGS."""
    features = _RECEIVER_CONFIGS[mode].split(",")
    gport, hport, aport = _free_port(), _free_port(), _free_port()
    data = tmp / f"data-{mode.strip('+').replace(' ', '-')}"
    if data.exists():
        shutil.rmtree(data)
    args = [
        PY,
        "-m",
        "otel_agents._cli",
        "serve",
        "--grpc-endpoint",
        f"127.0.0.1:{gport}",
        "--http-endpoint",
        f"127.0.0.1:{hport}",
        "--admin-endpoint",
        f"127.0.0.1:{aport}",
        "--data-dir",
        str(data),
    ]
    if "forward" in features:
        # Not --forward: the compression must match rotel's (--compression applies to both).
        settings = f"{{endpoint: 'grpc://127.0.0.1:{sink_port}', compression: {compression}}}"
        args += ["--set", f"exporters.otlp/sink={settings}"]
    if "analysis" not in features:
        args += ["--no-analysis"]
    if "workers2" in features:
        args += ["--workers", "2"]
    ports_file = tmp / f"ports-{data.name}.json"
    ports_file.unlink(missing_ok=True)
    args += ["--ports-file", str(ports_file)]
    # A file, not a pipe: nobody reads a pipe during the run, and a full one blocks the logger.
    log_path = tmp / f"serve-{data.name}.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(args, cwd=tmp, stdout=subprocess.DEVNULL, stderr=log)
    try:
        # The ports file is written once every worker serves (a bare port check would pass as
        # soon as the first of several workers listens).
        deadline = time.monotonic() + 90
        while not ports_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"receiver {mode!r} did not start ({proc.returncode})")
            time.sleep(0.05)
        yield Target(mode, proc, gport, hport)
    finally:
        _stop(proc)
        log.close()
        if proc.returncode not in (0, -signal.SIGTERM):
            print(log_path.read_text(errors="replace")[-2000:], file=sys.stderr)


@dataclass
class Sample:
    spans_per_s: float
    spans_per_cpu_s: float
    peak_rss_mib: float
    p99_ms: float
    failed: int
    client_cores: float = 0.0  # the load client's CPU per wall second (it shares the machine)
    receiver_cores: float = 0.0  # the target's CPU per wall second of the load
    sink_cores: float = 0.0  # the sink's CPU per wall second of the load


@dataclass
class Case:
    target: str
    protocol: str
    streams: int
    samples: list[Sample] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return statistics.median(getattr(s, attr) for s in self.samples)


def measure(target: Target, protocol: str, streams: int, args: argparse.Namespace) -> Sample:
    port = target.grpc_port if protocol == "grpc" else target.http_port
    proc = psutil.Process(target.proc.pid)
    procs = [proc, *proc.children(recursive=True)]
    peak = 0.0
    stop = threading.Event()

    def sample_rss() -> None:
        nonlocal peak
        while not stop.wait(0.25):
            with contextlib.suppress(psutil.Error):
                peak = max(peak, sum(p.memory_info().rss for p in procs) / 2**20)

    def cpu() -> float:
        total = 0.0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def sink_cpu() -> float:
        if _SINK_PID is None:
            return 0.0
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(_SINK_PID).cpu_times()
            return float(t.user + t.system)
        return 0.0

    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    cpu0 = cpu()
    sink0 = sink_cpu()
    client0 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the load client, once reaped
    out = subprocess.run(
        [
            PY,
            "-m",
            "benchmarks._load",
            f"127.0.0.1:{port}",
            protocol,
            str(streams),
            str(args.spans),
            str(args.requests),
            str(args.seconds),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=args.seconds + 120,
        check=True,
    )
    client1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = (client1.ru_utime - client0.ru_utime) + (client1.ru_stime - client0.ru_stime)
    load_cpu = cpu() - cpu0  # during the load only: the cores it could use next to the others
    sink_used = sink_cpu() - sink0
    # Work the receiver finishes after the last ack (forwarding, analysis backlog) is part of
    # its cost: wait until it is idle (< 10 % of a core over 0.5 s), at most --settle seconds.
    settle = time.monotonic() + args.settle
    cpu1 = cpu()
    while time.monotonic() < settle:
        time.sleep(0.5)
        now = cpu()
        idle = now - cpu1 < 0.05
        cpu1 = now
        if idle:
            break
    stop.set()
    sampler.join()
    r = json.loads(out.stdout.strip().splitlines()[-1])
    used = max(cpu1 - cpu0, 1e-9)
    return Sample(
        spans_per_s=r["ok_spans"] / r["wall"],
        spans_per_cpu_s=r["ok_spans"] / used,
        peak_rss_mib=peak,
        p99_ms=r["p99"] * 1000,
        failed=r["failed"],
        client_cores=client_cpu / r["wall"],
        receiver_cores=load_cpu / r["wall"],
        sink_cores=sink_used / r["wall"],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--spans", type=int, default=512, help="spans per request")
    parser.add_argument("--requests", type=int, default=400, help="max requests per case")
    parser.add_argument("--seconds", type=float, default=10.0, help="max seconds per case")
    parser.add_argument(
        "--settle", type=float, default=60.0, help="max wait for the receiver to go idle, s"
    )
    parser.add_argument("--streams", default="1,4,16")
    parser.add_argument("--protocols", default="grpc,http")
    parser.add_argument(
        "--targets",
        default="rotel,ingest,ingest+spool,+forward,+analysis,+forward 2w",
        help="comma list of rotel and our modes",
    )
    parser.add_argument(
        "--compression",
        choices=("gzip", "none"),
        default="gzip",
        help="forwarding compression of rotel and of our receiver (both default to gzip)",
    )
    parser.add_argument("--quick", action="store_true", help="1 round, 1 and 4 streams, gRPC")
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.streams, args.protocols, args.requests = 1, "1,4", "grpc", 200
    streams = [int(s) for s in args.streams.split(",")]
    protocols = args.protocols.split(",")
    targets = args.targets.split(",")
    cases: dict[tuple[str, str, int], Case] = {}

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        with sink(tmp) as sink_port:
            for rnd in range(args.rounds):
                for name in targets:
                    ctx = (
                        rotel_target(tmp, sink_port, args.compression)
                        if name == "rotel"
                        else noop_target(tmp)
                        if name == "ingest"
                        else receiver_target(tmp, sink_port, name, args.compression)
                    )
                    with ctx as target:
                        for protocol in protocols:
                            for n in streams:
                                case = cases.setdefault(
                                    (name, protocol, n), Case(name, protocol, n)
                                )
                                s = measure(target, protocol, n, args)
                                case.samples.append(s)
                                print(
                                    f"round {rnd + 1} {name:<13} {protocol:<4} {n:>2} streams: "
                                    f"{s.spans_per_s:>9.0f} spans/s "
                                    f"{s.spans_per_cpu_s:>9.0f} spans/CPU-s "
                                    f"rss {s.peak_rss_mib:.0f} MiB failed {s.failed}",
                                    file=sys.stderr,
                                )
    table = render(cases, protocols, streams, targets, args)
    print(table)
    if args.write:
        write_results(table, "" if args.compression == "gzip" else f"_{args.compression}")
    return 0


def machine() -> str:
    """CPU, cores and the versions that decide the figures."""
    from importlib.metadata import PackageNotFoundError, version

    model = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = []
    for pkg in ("grpcio", "protobuf", "rotel"):
        try:
            versions.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            versions.append(f"{pkg} -")
    import sqlite3

    return (
        f"{model}, {os.cpu_count()} cores (shared with the load client and sink), "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        + ", ".join(versions)
    )


def render(
    cases: dict[tuple[str, str, int], Case],
    protocols: list[str],
    streams: list[int],
    targets: list[str],
    args: argparse.Namespace,
) -> str:
    lines = [
        f"Receiver throughput — {args.spans}-span batches, medians of {args.rounds} round(s), "
        f"{args.compression} forwarding, {time.strftime('%Y-%m-%d')}; {machine()}",
        "",
        "| target | protocol | streams | spans/s | spans per CPU-s | × rotel (CPU-s) "
        "| peak RSS MiB | p99 ms | failed | receiver cores | client cores | sink cores |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for protocol in protocols:
        for n in streams:
            base = cases.get(("rotel", protocol, n))
            for name in targets:
                c = cases.get((name, protocol, n))
                if c is None or not c.samples:
                    continue
                eff = c.median("spans_per_cpu_s")
                ratio = f"{eff / base.median('spans_per_cpu_s'):.2f}" if base else "—"
                lines.append(
                    f"| {name} | {protocol} | {n} | {c.median('spans_per_s'):,.0f} | "
                    f"{eff:,.0f} | {ratio} | {c.median('peak_rss_mib'):.0f} | "
                    f"{c.median('p99_ms'):.0f} | {sum(s.failed for s in c.samples)} | "
                    f"{c.median('receiver_cores'):.2f} | {c.median('client_cores'):.2f} | "
                    f"{c.median('sink_cores'):.2f} |"
                )
    lines += ["", *headline(cases, protocols, streams)]
    return "\n".join(lines)


def headline(
    cases: dict[tuple[str, str, int], Case], protocols: list[str], streams: list[int]
) -> list[str]:
    """The issue's target ratios, at the largest stream count of each protocol."""
    out = []
    n = max(streams)

    def med(name: str, protocol: str, attr: str) -> float | None:
        c = cases.get((name, protocol, n))
        return c.median(attr) if c and c.samples else None

    for protocol in protocols:
        rotel = med("rotel", protocol, "spans_per_cpu_s")
        parts = []
        for name, label, target in (
            ("+analysis", "full pipeline", "≥ 1.0"),
            ("+forward", "ingest+spool+forward", "≥ 1.5"),
            ("ingest+spool", "ingest+spool", "—"),
        ):
            ours = med(name, protocol, "spans_per_cpu_s")
            if rotel and ours:
                parts.append(f"{label} {ours / rotel:.2f}× rotel per CPU-s (target {target})")
        one, two = (
            med("+forward", protocol, "spans_per_s"),
            med("+forward 2w", protocol, "spans_per_s"),
        )
        if one and two:
            parts.append(f"2 workers {two / one:.2f}× one process's spans/s (target ≥ 1.7)")
        if parts:
            out.append(f"* {protocol}, {n} streams: " + "; ".join(parts))
    return out


def write_results(table: str, suffix: str = "") -> None:
    """Replace (or append) this benchmark's marked section of benchmarks/RESULTS.md.

    Args:
        table: the rendered table.
        suffix: section variant (``""`` for gzip forwarding, ``"_none"`` without compression).
    """
    path = ROOT / "benchmarks" / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    name = f"receiver_throughput{suffix}"
    marker_start, marker_end = f"<!-- {name} -->", f"<!-- /{name} -->"
    block = f"{marker_start}\n{table}\n{marker_end}"
    if marker_start in text:
        head, rest = text.split(marker_start, 1)
        text = head + block + rest.split(marker_end, 1)[1]
    else:
        title = "Receiver throughput" + (f" ({suffix[1:]} compression)" if suffix else "")
        text = text.rstrip() + f"\n\n## {title}\n\n" + block + "\n"
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
