# SPDX-License-Identifier: Apache-2.0
"""Shared machinery for the reliability scorecard tests (RC-01 … RC-15, docs/reliability.md).

* :class:`ProcSampler` — the Collector testbed's resource check: CPU % (of one core) and RSS of a
  process sampled every ``period`` seconds, plus FD and thread counts.
* :func:`go_style_retry_delay` / :func:`trailer_retry_delay` — the two readings of a throttling
  answer: the rich ``google.rpc.Status`` in ``grpc-status-details-bin`` (what the Go
  ``otlpexporter`` decodes) and the ``google.rpc.retryinfo-bin`` trailer (what the Python SDK
  exporter reads).
* :func:`agent_request` — a unique-ID agent-trace request (10 attributes per span) and its keys.
* :func:`scrape` — the admin ``/metrics`` exposition as ``{(name, labels): value}``.
* :func:`record_figures` — each scorecard test appends its measured figures to
  ``artifacts/reliability-figures.jsonl`` so docs/reliability.md can quote the latest run.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psutil
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[3]
FIGURES = ROOT / "artifacts" / "reliability-figures.jsonl"
TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
MIB = 1 << 20

SpanKey = tuple[bytes, bytes]


# ------------------------------------------------------------------------------ sampling


@dataclass
class Samples:
    """What a :class:`ProcSampler` saw."""

    cpu_pct: list[float] = field(default_factory=list)  # per interval, % of one core
    rss: list[int] = field(default_factory=list)  # bytes, one per sample
    fds: list[int] = field(default_factory=list)
    threads: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # monotonic seconds of each sample
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def cpu_avg(self) -> float:
        """Average CPU % of one core over the whole sampling window (testbed definition)."""
        return 100.0 * self.cpu_seconds / self.wall_seconds if self.wall_seconds else 0.0

    @property
    def rss_max_mib(self) -> float:
        """Largest RSS sample in MiB."""
        return max(self.rss, default=0) / MIB

    def rss_slope_mib_per_min(self, skip: int = 0) -> float:
        """Least-squares slope of RSS (MiB per minute) over the samples after ``skip``."""
        xs, ys = self.times[skip:], [r / MIB for r in self.rss[skip:]]
        if len(xs) < 2:
            return 0.0
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        den = sum((x - mx) ** 2 for x in xs)
        return 60.0 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den


class ProcSampler:
    """Samples a process every ``period`` seconds in a background thread (bounded by ``stop``).

    Args:
        pid: process to watch.
        period: seconds between samples (the testbed uses 3 s).
    """

    def __init__(self, pid: int, period: float = 3.0) -> None:
        self.proc = psutil.Process(pid)
        self.period = period
        self.samples = Samples()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = 0.0
        self._cpu0 = 0.0

    def _cpu(self) -> float:
        t = self.proc.cpu_times()
        return float(t.user + t.system)

    def _sample(self) -> None:
        s = self.samples
        with self.proc.oneshot():
            s.rss.append(int(self.proc.memory_info().rss))
            s.fds.append(self.proc.num_fds())
            s.threads.append(self.proc.num_threads())
        s.times.append(time.monotonic())

    def _run(self) -> None:
        last_t, last_cpu = self._t0, self._cpu0
        while not self._stop.wait(self.period):
            try:
                now, cpu = time.monotonic(), self._cpu()
                self._sample()
            except psutil.Error:
                return
            self.samples.cpu_pct.append(100.0 * (cpu - last_cpu) / max(now - last_t, 1e-9))
            last_t, last_cpu = now, cpu

    def start(self) -> ProcSampler:
        """Take the first sample and start the thread."""
        self._t0, self._cpu0 = time.monotonic(), self._cpu()
        self._sample()
        self._thread.start()
        return self

    def stop(self) -> Samples:
        """Stop, take a last sample, and return everything."""
        self._stop.set()
        self._thread.join(self.period + 5)
        now, cpu = time.monotonic(), self._cpu()
        self._sample()
        self.samples.cpu_seconds = cpu - self._cpu0
        self.samples.wall_seconds = now - self._t0
        return self.samples


# ------------------------------------------------------------------------------ retry delays


def _seconds(info: error_details_pb2.RetryInfo) -> float:
    return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)


def go_style_retry_delay(err: grpc.RpcError) -> float | None:
    """RetryInfo as the Go ``otlpexporter`` reads it: ``status.FromError(err).Details()``, i.e.
    the ``google.rpc.Status`` in ``grpc-status-details-bin``; ``None`` without RetryInfo.

    Raises:
        AssertionError: the rich status disagrees with the call's status code.
    """
    for key, value in err.trailing_metadata() or ():  # type: ignore[attr-defined]
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            code = err.code()  # type: ignore[attr-defined]
            assert status.code == code.value[0], (status.code, code)
            for detail in status.details:
                if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                    info = error_details_pb2.RetryInfo()
                    detail.Unpack(info)
                    return _seconds(info)
    return None


def trailer_retry_delay(err: grpc.RpcError) -> float | None:
    """RetryInfo as the Python SDK exporter reads it: the ``google.rpc.retryinfo-bin`` trailer."""
    for key, value in err.trailing_metadata() or ():  # type: ignore[attr-defined]
        if key == "google.rpc.retryinfo-bin":
            return _seconds(error_details_pb2.RetryInfo.FromString(value))
    return None


# ------------------------------------------------------------------------------ requests

_AGENTS = ("planner", "researcher", "writer", "critic")
_TOOLS = ("web_search", "fetch_page", "summarize", "calculator")


def _kv(key: str, value: str | int) -> KeyValue:
    if isinstance(value, str):
        return KeyValue(key=key, value=AnyValue(string_value=value))
    return KeyValue(key=key, value=AnyValue(int_value=value))


def agent_request(
    spans: int,
    *,
    seq: int = 0,
    agent: str | None = None,
    tool: str | None = None,
    trace_per_span: bool = False,
) -> tuple[bytes, list[SpanKey]]:
    """A serialized request: one agent trace (root ``invoke_agent`` + ``execute_tool`` children)
    with 10 attributes per span and fresh random IDs, or one trace per span.

    Args:
        spans: spans in the request.
        seq: stamped as ``load.seq`` (the testbed's sequence number) and picks default names.
        agent: agent name (default: one of four).
        tool: tool name (default: one of four).
        trace_per_span: every span its own trace (many open traces).

    Returns:
        The payload and the (trace_id, span_id) keys it carries.
    """
    agent = agent or _AGENTS[seq % len(_AGENTS)]
    tool = tool or _TOOLS[seq % len(_TOOLS)]
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.extend([_kv("service.name", "rc-load"), _kv("service.instance.id", "t")])
    ss = rs.scope_spans.add()
    now = time.time_ns()
    trace_id, root = os.urandom(16), os.urandom(8)
    keys: list[SpanKey] = []
    for i in range(spans):
        tid = os.urandom(16) if trace_per_span else trace_id
        sid = root if i == 0 and not trace_per_span else os.urandom(8)
        is_root = trace_per_span or i == 0
        span = Span(
            trace_id=tid,
            span_id=sid,
            parent_span_id=b"" if is_root else root,
            name=f"invoke_agent {agent}" if is_root else f"execute_tool {tool}",
            kind=Span.SPAN_KIND_INTERNAL,
            start_time_unix_nano=now + i * 1000,
            end_time_unix_nano=now + i * 1000 + 5_000_000,
        )
        span.attributes.extend(
            [
                _kv("gen_ai.operation.name", "invoke_agent" if is_root else "execute_tool"),
                _kv("gen_ai.agent.name", agent),
                _kv("gen_ai.agent.id", f"{agent}-1"),
                _kv("gen_ai.tool.name", tool),
                _kv("gen_ai.tool.type", "function"),
                _kv("gen_ai.tool.call.id", f"call_{seq}_{i}"),
                _kv("gen_ai.conversation.id", f"conv-{seq % 97}"),
                _kv("http.response.status_code", 200),
                _kv("url.full", f"https://example.com/{seq}/{i}"),
                _kv("load.seq", seq),
            ]
        )
        ss.spans.append(span)
        keys.append((tid, sid))
    return request.SerializeToString(), keys


# ------------------------------------------------------------------------------ metrics


def scrape(admin_port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the receiver's ``/metrics`` keyed by (sample name, sorted labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def quick_sum(admin_port: int, name: str) -> float:
    """Sum of the samples called exactly ``name``, by a line scan of ``/metrics`` (a full parse
    of an exposition with tens of thousands of bucket lines takes seconds)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def metric_sum(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lbl), v in samples.items() if n == name and want <= set(lbl))


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def record_figures(rc: str, test: str, **figures: Any) -> None:
    """Append one results row (the testbed's PerformanceResults) for docs/reliability.md."""
    FIGURES.parent.mkdir(exist_ok=True)
    row = {"rc": rc, "test": test, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    row.update(figures)
    with FIGURES.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")
