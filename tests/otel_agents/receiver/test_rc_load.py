# SPDX-License-Identifier: Apache-2.0
"""Reliability scorecard, load rows: RC-01 steady throughput, RC-02 idle, RC-03 overload.

The receiver runs as a real child process (``otel-agents serve``, ports 0, default analysis)
forwarding to two recording OTLP backends (the testbed's mock Jaeger + mock Tempo); its CPU and
RSS are sampled with psutil every 3 s like the Collector testbed.  Loads are scaled to what a
shared 2-core CI box sustains (docs/reliability.md gives the figures and the knobs):

* ``OTEL_AGENTS_RC01_RATE`` spans/s (default 5000) for ``OTEL_AGENTS_RC01_SECONDS`` (15 s) per
  compression;
* ``OTEL_AGENTS_RC02_SECONDS`` idle seconds (20);
* ``OTEL_AGENTS_RC03_SECONDS`` per overload factor (8).
"""

from __future__ import annotations

import http.client
import os
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from google.rpc import code_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.exporters._fwd_sink import Decision, RecordingSink
from tests.otel_agents.receiver._rc_fixtures import (
    MIB,
    TRACES,
    ProcSampler,
    SpanKey,
    agent_request,
    go_style_retry_delay,
    metric_sum,
    percentile,
    record_figures,
    scrape,
    trailer_retry_delay,
)
from tests.otel_agents.receiver._spool_client import ReceiverProcess, poll

RC01_RATE = int(os.environ.get("OTEL_AGENTS_RC01_RATE", "5000"))
RC01_SECONDS = float(os.environ.get("OTEL_AGENTS_RC01_SECONDS", "15"))
RC02_SECONDS = float(os.environ.get("OTEL_AGENTS_RC02_SECONDS", "20"))
RC03_SECONDS = float(os.environ.get("OTEL_AGENTS_RC03_SECONDS", "8"))
RC06_SECONDS = float(os.environ.get("OTEL_AGENTS_RC06_SECONDS", "8"))
SPANS_PER_REQUEST = 100

# Pass criteria (reliability.md §6, calibrated on the 2-core box; docs/reliability.md).
RC01_CPU_AVG_MAX = 100.0  # % of one core
RC01_RSS_MAX_MIB = 150.0
RC01_P99_MAX_S = 0.1  # server-side: share of Exports within the 0.1 s histogram bucket ≥ 99 %
RC01_CLIENT_P99_MAX_S = 0.25  # as the sender sees it (it shares its process with the backends)
RC02_CPU_AVG_MAX = 2.0
RC02_RSS_MAX_MIB = 150.0
RC02_RSS_GROWTH_MAX_MIB = 2.0
RC03_RSS_BUDGET_MIB = 256.0


@pytest.fixture
def backends() -> Iterator[tuple[RecordingSink, RecordingSink]]:
    """Two healthy downstreams ("jaeger", "tempo") on ephemeral gRPC ports."""
    jaeger, tempo = RecordingSink(), RecordingSink()
    jaeger.start_grpc()
    tempo.start_grpc()
    yield jaeger, tempo
    jaeger.stop()
    tempo.stop()


def _receiver(tmp_path: Path, sinks: tuple[RecordingSink, ...], *extra: str) -> ReceiverProcess:
    forwards = [a for s in sinks for a in ("--forward", f"grpc://127.0.0.1:{s.grpc_port}")]
    return ReceiverProcess(tmp_path, tmp_path / "data", *forwards, *extra)


def _server_share_within(admin_port: int, bound: float) -> float:
    """Share of gRPC trace Exports the receiver answered within ``bound`` seconds, from its
    ``otel_agents_receiver_request_duration_seconds`` histogram (``bound`` is a bucket edge)."""
    m = scrape(admin_port)
    labels = {"signal": "traces", "transport": "grpc"}
    total = metric_sum(m, "otel_agents_receiver_request_duration_seconds_count", **labels)
    within = metric_sum(
        m, "otel_agents_receiver_request_duration_seconds_bucket", le=str(bound), **labels
    )
    assert total > 0
    return within / total


def _no_tracebacks(receiver: ReceiverProcess) -> None:
    log = receiver.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]


# ------------------------------------------------------------------------------ RC-01


class PacedSender:
    """Open-loop load: ``rate`` spans/s in 100-span requests over ``streams`` channels, each
    request with fresh IDs; records every acknowledged key and every call's latency."""

    def __init__(self, port: int, rate: int, streams: int, compression: grpc.Compression) -> None:
        self.port, self.rate, self.streams, self.compression = port, rate, streams, compression
        self.lock = threading.Lock()
        self.acked: list[SpanKey] = []
        self.latencies: list[float] = []
        self.codes: list[grpc.StatusCode] = []
        self.behind = 0  # requests sent late because the previous call was still running

    def _worker(self, k: int, seconds: float) -> None:
        channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        call = channel.unary_unary(TRACES)
        interval = self.streams * SPANS_PER_REQUEST / self.rate
        start = time.monotonic() + k * interval / self.streams
        n = 0
        try:
            while (due := start + n * interval) < start + seconds:
                if (wait := due - time.monotonic()) > 0:
                    time.sleep(wait)
                elif wait < -interval:
                    with self.lock:
                        self.behind += 1
                payload, keys = agent_request(SPANS_PER_REQUEST, seq=k * 1_000_000 + n)
                t = time.perf_counter()
                try:
                    call(payload, timeout=10, compression=self.compression)
                    code = grpc.StatusCode.OK
                except grpc.RpcError as err:
                    code = err.code()  # type: ignore[attr-defined]
                elapsed = time.perf_counter() - t
                with self.lock:
                    self.codes.append(code)
                    self.latencies.append(elapsed)
                    if code is grpc.StatusCode.OK:
                        self.acked.extend(keys)
                n += 1
        finally:
            channel.close()

    def run(self, seconds: float) -> None:
        """Send for ``seconds`` (bounded: one pass over the schedule per stream)."""
        threads = [
            threading.Thread(target=self._worker, args=(k, seconds)) for k in range(self.streams)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(seconds + 30)


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_rc01_steady_throughput_exact_span_accounting(
    tmp_path: Path, backends: tuple[RecordingSink, RecordingSink], compression: str
) -> None:
    """RC-01: steady load: sent == stored == forwarded to each backend (exact key sets, no
    duplicates), receiver CPU and RSS within budget at every 3-s sample, Export p99 ≤ 100 ms
    (receiver histogram) and ≤ 250 ms as the sender sees it."""
    jaeger, tempo = backends
    receiver = _receiver(tmp_path, backends)
    try:
        codec = grpc.Compression.Gzip if compression == "gzip" else grpc.Compression.NoCompression
        sender = PacedSender(receiver.ports["grpc"], RC01_RATE, streams=4, compression=codec)
        sampler = ProcSampler(receiver.proc.pid).start()
        sender.run(RC01_SECONDS)
        samples = sampler.stop()
        sent = set(sender.acked)
        assert set(sender.codes) == {grpc.StatusCode.OK}, "a steady load below capacity is refused"
        assert len(sent) == len(sender.acked) == len(sender.codes) * SPANS_PER_REQUEST
        assert poll(lambda: jaeger.received == sent and tempo.received == sent, 60), (
            f"jaeger missing {len(sent - jaeger.received)}, tempo {len(sent - tempo.received)}"
        )
        assert jaeger.duplicates == 0 and tempo.duplicates == 0
        metrics = scrape(receiver.ports["admin"])
        stored = metric_sum(metrics, "otel_agents_receiver_accepted_items_total", signal="traces")
        assert stored == len(sent)
        for sink in backends:
            forwarded = metric_sum(
                metrics,
                "otel_agents_forwarder_sent_items_total",
                destination=f"otlp/127.0.0.1:{sink.grpc_port}",
                signal="traces",
            )
            assert forwarded == len(sent)
        p99 = percentile(sender.latencies, 0.99)
        within = _server_share_within(receiver.ports["admin"], RC01_P99_MAX_S)
        assert samples.cpu_avg <= RC01_CPU_AVG_MAX, samples.cpu_pct
        assert samples.rss_max_mib <= RC01_RSS_MAX_MIB, [r / MIB for r in samples.rss]
        assert within >= 0.99, f"only {within:.2%} of Exports answered within 100 ms"
        assert p99 <= RC01_CLIENT_P99_MAX_S, p99
        rate = len(sent) / RC01_SECONDS
        assert rate >= 0.9 * RC01_RATE, f"the sender only achieved {rate:.0f} spans/s"
        record_figures(
            "RC-01",
            f"test_rc01_steady_throughput_exact_span_accounting[{compression}]",
            spans_per_s=round(rate),
            seconds=RC01_SECONDS,
            sent=len(sent),
            stored=int(stored),
            forwarded_jaeger=len(jaeger.received),
            forwarded_tempo=len(tempo.received),
            duplicates=jaeger.duplicates + tempo.duplicates,
            lost=len(sent - jaeger.received) + len(sent - tempo.received),
            cpu_avg_pct=round(samples.cpu_avg, 1),
            cpu_max_pct=round(max(samples.cpu_pct, default=0.0), 1),
            rss_max_mib=round(samples.rss_max_mib, 1),
            p50_ms=round(1000 * percentile(sender.latencies, 0.5), 1),
            p99_ms=round(1000 * p99, 1),
            server_share_within_100ms=round(within, 4),
        )
        _no_tracebacks(receiver)
    finally:
        assert receiver.terminate() == 0


# ------------------------------------------------------------------------------ RC-02


def test_rc02_idle_receiver_costs_almost_nothing(
    tmp_path: Path, backends: tuple[RecordingSink, RecordingSink]
) -> None:
    """RC-02: with no load, the receiver (analysis on, two destinations) uses ≤ 2 % of a core on
    average, stays under its RSS budget, and does not grow."""
    receiver = _receiver(tmp_path, backends)
    try:
        time.sleep(3.0)  # start-up settles (first pipeline ticks, forwarder channels)
        samples = ProcSampler(receiver.proc.pid, period=2.0)
        samples.start()
        time.sleep(RC02_SECONDS)
        idle = samples.stop()
        growth = (idle.rss[-1] - idle.rss[0]) / MIB
        assert idle.cpu_avg <= RC02_CPU_AVG_MAX, idle.cpu_pct
        assert idle.rss_max_mib <= RC02_RSS_MAX_MIB
        assert growth <= RC02_RSS_GROWTH_MAX_MIB, [r / MIB for r in idle.rss]
        assert idle.fds[-1] <= idle.fds[0] and idle.threads[-1] <= idle.threads[0]
        record_figures(
            "RC-02",
            "test_rc02_idle_receiver_costs_almost_nothing",
            seconds=RC02_SECONDS,
            cpu_avg_pct=round(idle.cpu_avg, 2),
            rss_max_mib=round(idle.rss_max_mib, 1),
            rss_growth_mib=round(growth, 2),
            fds=idle.fds[-1],
            threads=idle.threads[-1],
        )
    finally:
        assert receiver.terminate() == 0


# ------------------------------------------------------------------------------ RC-03


class Overload:
    """Refusal bookkeeping shared by the overload clients."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acked: set[SpanKey] = set()
        self.ok = 0
        self.refused = 0
        self.bad: list[str] = []  # any answer that is neither OK nor a proper throttle
        self.delays: list[float] = []  # gRPC RetryInfo seconds
        self.retry_after: list[int] = []  # HTTP Retry-After seconds
        self.gave_up = 0

    def fail(self, what: str) -> None:
        with self.lock:
            self.bad.append(what)


def _go_client(port: int, stop_at: float, interval: float, seq0: int, book: Overload) -> None:
    """Behaves like the Go ``otlpexporter``: a retryable code is honoured only with RetryInfo,
    read from the rich status; it waits at least that delay before resending the same batch."""
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    call = channel.unary_unary(TRACES)
    n = 0
    next_at = time.monotonic()
    try:
        while time.monotonic() < stop_at:
            payload, keys = agent_request(SPANS_PER_REQUEST, seq=seq0 + n)
            n += 1
            give_up = time.monotonic() + 15.0
            while True:
                try:
                    call(payload, timeout=10)
                except grpc.RpcError as err:
                    code = err.code()  # type: ignore[attr-defined]
                    rich, trailer = go_style_retry_delay(err), trailer_retry_delay(err)
                    if code is not grpc.StatusCode.UNAVAILABLE or rich is None or rich != trailer:
                        book.fail(f"{code.name} rich={rich} trailer={trailer}")
                        break
                    with book.lock:
                        book.refused += 1
                        book.delays.append(rich)
                    if time.monotonic() + rich > give_up:
                        with book.lock:
                            book.gave_up += 1
                        break
                    time.sleep(rich)
                    continue
                with book.lock:
                    book.ok += 1
                    book.acked.update(keys)
                break
            next_at += interval
            if (wait := next_at - time.monotonic()) > 0:
                time.sleep(wait)
    finally:
        channel.close()


def _http_client(port: int, stop_at: float, interval: float, seq0: int, book: Overload) -> None:
    """OTLP/HTTP sender: refusals must be 503/429 with ``Retry-After`` and a google.rpc.Status."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    n = 0
    try:
        while time.monotonic() < stop_at:
            payload, keys = agent_request(SPANS_PER_REQUEST, seq=seq0 + n)
            n += 1
            give_up = time.monotonic() + 15.0
            while True:
                conn.request(
                    "POST", "/v1/traces", payload, {"Content-Type": "application/x-protobuf"}
                )
                resp = conn.getresponse()
                body = resp.read()
                if resp.status == 200:
                    with book.lock:
                        book.ok += 1
                        book.acked.update(keys)
                    break
                after = resp.getheader("Retry-After")
                status = status_pb2.Status.FromString(body)
                if (
                    resp.status not in (429, 503)
                    or after is None
                    or status.code != code_pb2.UNAVAILABLE
                ):
                    book.fail(f"HTTP {resp.status} Retry-After={after} status={status.code}")
                    break
                with book.lock:
                    book.refused += 1
                    book.retry_after.append(int(after))
                if time.monotonic() + float(after) > give_up:
                    with book.lock:
                        book.gave_up += 1
                    break
                time.sleep(float(after))
            time.sleep(interval)
    finally:
        conn.close()


def _sdk_spans(n: int) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("rc03")
    for i in range(n):
        with tracer.start_as_current_span(f"execute_tool t{i}") as span:
            span.set_attribute("gen_ai.operation.name", "execute_tool")
    provider.shutdown()
    return list(memory.get_finished_spans())


def _cap_bytes() -> int:
    """An in-flight budget of about two 100-span requests, so overload is reachable at once."""
    return 2 * len(agent_request(SPANS_PER_REQUEST)[0]) + 512


@pytest.mark.parametrize("factor", [2, 5])
def test_rc03_overload_answers_retryable_with_retry_delay_and_loses_nothing(
    tmp_path: Path, backends: tuple[RecordingSink, RecordingSink], factor: int
) -> None:
    """RC-03: offered load of 2× / 5× capacity (admission budget lowered): every refusal is
    UNAVAILABLE with RetryInfo in the rich status and the trailer (HTTP: 503/429 + Retry-After),
    never another code; the Python SDK exporter gets everything through by honouring it; RSS stays
    in budget; afterwards every acknowledged span is stored and forwarded to both backends."""
    jaeger, tempo = backends
    receiver = _receiver(
        tmp_path,
        backends,
        "--set",
        f"admission.max_inflight_bytes={_cap_bytes()}",
        "--set",
        "admission.min_retry_delay=100ms",
        "--set",
        "admission.max_retry_delay=1s",
        "--set",
        f"admission.memory_limit={int(RC03_RSS_BUDGET_MIB)}MiB",
    )
    try:
        port, hport = receiver.ports["grpc"], receiver.ports["http"]
        # Capacity: one closed-loop stream with every request admitted.
        capacity_book = Overload()
        cap_stop = time.monotonic() + 3.0
        _go_client(port, cap_stop, 0.0, 0, capacity_book)
        assert capacity_book.refused == 0 and not capacity_book.bad
        capacity = capacity_book.ok / 3.0  # requests/s
        # Offered: factor × capacity, split over senders pacing their own share.
        book = Overload()
        senders = 2 * factor
        interval = senders / (factor * capacity)
        sampler = ProcSampler(receiver.proc.pid, period=1.0).start()
        stop_at = time.monotonic() + RC03_SECONDS
        sdk_spans = _sdk_spans(50)
        exporter = OTLPSpanExporter(
            endpoint=f"127.0.0.1:{port}", insecure=True, timeout=RC03_SECONDS + 20
        )
        with ThreadPoolExecutor(senders + 3) as pool:
            futures = [
                pool.submit(
                    _go_client if k % 2 == 0 else _http_client,
                    port if k % 2 == 0 else hport,
                    stop_at,
                    interval,
                    (k + 1) * 1_000_000,
                    book,
                )
                for k in range(senders)
            ]
            sdk_results = [pool.submit(exporter.export, sdk_spans[i::3]) for i in range(3)]
            for f in futures:
                f.result(RC03_SECONDS + 60)
            sdk = [f.result(RC03_SECONDS + 60) for f in sdk_results]
        exporter.shutdown()
        samples = sampler.stop()
        assert not book.bad, book.bad[:5]
        assert book.refused > 0, "the offered load never exceeded capacity"
        # The configured bounds: 100 ms … 1 s over gRPC; HTTP rounds up to whole seconds.
        assert book.delays and all(0.1 <= d <= 1.0 for d in book.delays)
        assert all(a >= 1 for a in book.retry_after)
        assert sdk == [SpanExportResult.SUCCESS] * 3, "the Python exporter did not get through"
        sdk_keys = {
            (s.context.trace_id.to_bytes(16, "big"), s.context.span_id.to_bytes(8, "big"))
            for s in sdk_spans
        }
        want = book.acked | sdk_keys
        assert poll(lambda: want <= jaeger.received and want <= tempo.received, 60), (
            f"acked but not forwarded: {len(want - jaeger.received)}/{len(want - tempo.received)}"
        )
        metrics = scrape(receiver.ports["admin"])
        stored = metric_sum(metrics, "otel_agents_receiver_accepted_items_total", signal="traces")
        # Everything stored was acknowledged: the capacity probe plus the overload phase.
        assert stored == len(want) + len(capacity_book.acked)
        codes = {
            dict(lbl).get("code")
            for (n, lbl), v in metrics.items()
            if n == "otel_agents_receiver_requests_total" and v > 0
        }
        assert codes <= {"OK", "UNAVAILABLE", "200", "503", "429"}, codes
        assert samples.rss_max_mib <= RC03_RSS_BUDGET_MIB
        record_figures(
            "RC-03",
            f"test_rc03_overload_answers_retryable_with_retry_delay_and_loses_nothing[{factor}]",
            capacity_spans_per_s=round(capacity * SPANS_PER_REQUEST),
            offered_factor=factor,
            seconds=RC03_SECONDS,
            acked_requests=book.ok,
            refusals=book.refused,
            refusals_http=len(book.retry_after),
            improper_answers=len(book.bad),
            client_gave_up=book.gave_up,
            sdk_export=str(sdk[0]),
            spans_acked=len(want),
            spans_lost=len(want - jaeger.received) + len(want - tempo.received),
            rss_max_mib=round(samples.rss_max_mib, 1),
            cpu_avg_pct=round(samples.cpu_avg, 1),
        )
        _no_tracebacks(receiver)
    finally:
        assert receiver.terminate() == 0


# ------------------------------------------------------------------------------ RC-06 (ingest)


def test_rc06_ingest_latency_is_decoupled_from_a_slow_flaky_downstream(tmp_path: Path) -> None:
    """RC-06: while the only backend answers after 2 s and refuses half the exports (UNAVAILABLE),
    Export p99 at the RC-01 rate stays within the RC-01 bound (forwarding is decoupled) and,
    after the backend recovers, every acknowledged span is delivered."""
    slow = threading.Event()
    slow.set()
    rng = random.Random(6)

    def decide(_signal: str, _n: int) -> Decision:
        if not slow.is_set():
            return Decision()
        fail = rng.random() < 0.5
        return Decision(grpc.StatusCode.UNAVAILABLE if fail else None, delay=2.0)

    backend = RecordingSink(decide)
    backend.start_grpc()
    receiver = _receiver(tmp_path, (backend,))
    try:
        sender = PacedSender(
            receiver.ports["grpc"], RC01_RATE, streams=4, compression=grpc.Compression.NoCompression
        )
        sender.run(RC06_SECONDS)
        p99 = percentile(sender.latencies, 0.99)
        within = _server_share_within(receiver.ports["admin"], RC01_P99_MAX_S)
        assert set(sender.codes) == {grpc.StatusCode.OK}
        assert within >= 0.99, f"only {within:.2%} of Exports answered within 100 ms"
        assert p99 <= RC01_CLIENT_P99_MAX_S, p99
        attempts_while_slow = backend.attempt_count()
        slow.clear()
        sent = set(sender.acked)
        assert poll(lambda: sent <= backend.received, 90), len(sent - backend.received)
        record_figures(
            "RC-06",
            "test_rc06_ingest_latency_is_decoupled_from_a_slow_flaky_downstream",
            spans_per_s=RC01_RATE,
            seconds=RC06_SECONDS,
            sent=len(sent),
            delivered=len(backend.received & sent),
            lost=len(sent - backend.received),
            downstream_attempts_while_slow=attempts_while_slow,
            p99_ms=round(1000 * p99, 1),
            server_share_within_100ms=round(within, 4),
        )
        _no_tracebacks(receiver)
    finally:
        assert receiver.terminate() == 0
        backend.stop()
