# SPDX-License-Identifier: Apache-2.0
"""The ``otlp`` forwarder against a real downstream (RC-05, RC-06, RC-07 and the basics)."""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from otel_agents.exporters import OtlpExporterConfig, OtlpForwarder

from otel_agents._configtypes import decode
from otel_agents._errors import ConfigError
from otel_agents.receiver._config import load_config
from otel_agents.receiver._pipeline import Pipeline
from tests.exporters._fwd_sink import (
    Decision,
    RecordingSink,
    always,
    make_logs,
    make_traces,
    share_unavailable,
)

FAST_RETRY = {
    "initial_interval": "50ms",
    "max_interval": "200ms",
    "multiplier": 1.5,
    "randomization_factor": 0.5,
}


@pytest.fixture
def sinks() -> Iterator[list[RecordingSink]]:
    """Sinks created by a test, stopped afterwards."""
    made: list[RecordingSink] = []
    yield made
    for s in made:
        s.stop()


def _sink(sinks: list[RecordingSink], decide: Any = None, http: bool = False) -> RecordingSink:
    sink = RecordingSink(decide) if decide else RecordingSink()
    sink.start_http() if http else sink.start_grpc()
    sinks.append(sink)
    return sink


def _pipeline(tmp_path: Path, exporters: dict[str, dict[str, Any]], **storage: Any) -> Pipeline:
    overrides: dict[str, Any] = {
        "storage.data_dir": str(tmp_path),
        "exporters": {k: {"retry_on_failure": FAST_RETRY, **v} for k, v in exporters.items()},
        "pipeline.exporters": list(exporters),
        "pipeline.processors": [],
        "pipeline.tick_interval": "100ms",
    }
    overrides.update({f"storage.{k}": v for k, v in storage.items()})
    pipeline = Pipeline(load_config(None, overrides), analysis=False)
    pipeline.start()
    return pipeline


def _ingest(pipeline: Pipeline, batches: int, spans: int = 5, **attrs: str) -> list[Any]:
    made = [make_traces(spans, attrs or None) for _ in range(batches)]
    for b in made:
        pipeline.ingest("traces", b.request, b.payload, spans)
    return made


def _keys(batches: list[Any]) -> set[tuple[bytes, bytes]]:
    return {k for b in batches for k in b.keys}


def _metric(pipeline: Pipeline, name: str, **labels: str) -> float:
    return pipeline.metrics_registry.get_sample_value(name, labels) or 0.0


@contextlib.contextmanager
def _forwarding(
    tmp_path: Path,
    sinks: list[RecordingSink],
    decide: Any = None,
    *,
    http: bool = False,
    storage: dict[str, Any] | None = None,
    **settings: Any,
) -> Iterator[tuple[RecordingSink, Pipeline]]:
    """A started pipeline whose one destination ``otlp/a`` is a new sink answering ``decide``.

    gRPC, or OTLP/HTTP protobuf with ``http``; ``settings`` are further exporter settings,
    ``storage`` ``storage.*`` overrides. The pipeline is stopped (1 s drain) on exit, the sink by
    the ``sinks`` fixture.
    """
    sink = _sink(sinks, decide, http)
    if http:
        dest = {"endpoint": f"http://127.0.0.1:{sink.http_port}", "protocol": "http/protobuf"}
    else:
        dest = {"endpoint": f"grpc://127.0.0.1:{sink.grpc_port}"}
    p = _pipeline(tmp_path, {"otlp/a": {**dest, **settings}}, **(storage or {}))
    try:
        yield sink, p
    finally:
        p.stop(drain_timeout=1)


def _delivered(sink: RecordingSink, batches: list[Any], timeout: float = 10.0) -> bool:
    """Wait until the sink holds exactly the spans of ``batches``."""
    return sink.wait_for(lambda: sink.received == _keys(batches), timeout=timeout)


def _sent(p: Pipeline) -> float:
    return _metric(
        p, "otel_agents_forwarder_sent_items_total", destination="otlp/a", signal="traces"
    )


def _failed(p: Pipeline, reason: str) -> float:
    return _metric(
        p,
        "otel_agents_forwarder_failed_items_total",
        destination="otlp/a",
        signal="traces",
        reason=reason,
    )


def _fail_first(n: int, code: grpc.StatusCode, retry_after: float | None = None) -> Any:
    """A decision function refusing the first ``n`` requests with ``code``, then accepting."""
    return lambda _s, i: Decision(code, retry_after) if i <= n else Decision()


def _attempt_gaps(sink: RecordingSink) -> list[float]:
    """Seconds between consecutive requests the sink answered."""
    return [b - a for a, b in itertools.pairwise([t for t, _, _ in sink.attempts])]


def _retry_gaps(
    tmp_path: Path,
    sinks: list[RecordingSink],
    failures: int,
    *,
    multiplier: float,
    max_ms: int,
    randomization_factor: float,
) -> list[float]:
    """The waits between attempts at one request refused ``failures`` times (initial 100 ms)."""
    retry = {
        "initial_interval": "100ms",
        "multiplier": multiplier,
        "max_interval": f"{max_ms}ms",
        "randomization_factor": randomization_factor,
    }
    decide = _fail_first(failures, grpc.StatusCode.UNAVAILABLE)
    with _forwarding(tmp_path, sinks, decide, retry_on_failure=retry) as (sink, p):
        assert _delivered(sink, _ingest(p, 1))
        return _attempt_gaps(sink)


def test_forwards_the_spooled_bytes_unchanged_over_grpc(
    tmp_path: Path, sinks: list[RecordingSink]
) -> None:
    """Every acked span reaches the gRPC destination and the bytes sent are the bytes received."""
    with _forwarding(tmp_path, sinks) as (sink, p):
        batches = _ingest(p, 4)
        assert _delivered(sink, batches)
        assert b"".join(sink.bodies) == b"".join(b.payload for b in batches)
        assert sink.duplicates == 0
        assert sink.wait_for(lambda: _sent(p) == 20)


def test_forwards_over_http_protobuf_with_gzip_and_headers(
    tmp_path: Path, sinks: list[RecordingSink]
) -> None:
    """OTLP/HTTP: POST /v1/traces, application/x-protobuf, gzip, configured headers sent."""
    with _forwarding(tmp_path, sinks, http=True, headers={"x-tenant": "t1"}) as (sink, p):
        assert _delivered(sink, _ingest(p, 3))
        assert sink.headers[0]["content-encoding"] == "gzip"
        assert sink.headers[0]["content-type"] == "application/x-protobuf"
        assert sink.headers[0]["x-tenant"] == "t1"


def test_rc05_dead_destination_does_not_block_a_healthy_one_and_catches_up(
    tmp_path: Path, sinks: list[RecordingSink]
) -> None:
    """RC-05: while one backend is down the other gets everything; after restore both have all."""
    healthy = _sink(sinks)
    dead = _sink(sinks)
    dead_port = dead.grpc_port
    dead.stop_grpc()
    p = _pipeline(
        tmp_path,
        {
            "otlp/dead": {"endpoint": f"grpc://127.0.0.1:{dead_port}", "timeout": "500ms"},
            "otlp/healthy": {"endpoint": f"grpc://127.0.0.1:{healthy.grpc_port}"},
        },
    )
    try:
        batches = _ingest(p, 10)
        assert healthy.wait_for(lambda: healthy.received == _keys(batches))
        assert healthy.wait_for(
            lambda: _metric(p, "otel_agents_forwarder_retries_total", destination="otlp/dead") >= 2
        )
        assert healthy.wait_for(
            lambda: _metric(p, "otel_agents_forwarder_pending_items", destination="otlp/dead") == 50
        )
        more = _ingest(p, 5)  # ingestion is unaffected by the dead destination
        assert healthy.wait_for(lambda: healthy.received == _keys(batches + more))
        dead.start_grpc(dead_port)
        assert dead.wait_for(lambda: dead.received == _keys(batches + more), timeout=15)
        assert dead.duplicates == 0
    finally:
        p.stop(drain_timeout=1)


def test_rc05_waits_at_least_the_retry_info_delay(
    tmp_path: Path, sinks: list[RecordingSink]
) -> None:
    """RC-05: a throttled export (UNAVAILABLE + RetryInfo 0.4 s) is retried no sooner than asked."""
    decide = _fail_first(2, grpc.StatusCode.UNAVAILABLE, 0.4)
    with _forwarding(tmp_path, sinks, decide) as (sink, p):
        assert _delivered(sink, _ingest(p, 1))
        gaps = _attempt_gaps(sink)
        assert len(gaps) == 2
        assert min(gaps) >= 0.39


def test_rc05_http_retry_after_is_honoured(tmp_path: Path, sinks: list[RecordingSink]) -> None:
    """RC-05: HTTP 503 + Retry-After: 1 delays the next attempt by at least a second."""
    decide = _fail_first(1, grpc.StatusCode.UNAVAILABLE, 1.0)
    with _forwarding(tmp_path, sinks, decide, http=True) as (sink, p):
        assert _delivered(sink, _ingest(p, 1))
        (t1, _, c1), (t2, _, c2) = sink.attempts
        assert (c1, c2) == ("UNAVAILABLE", "OK")
        assert t2 - t1 >= 0.99


def test_rc06_flaky_destination_gets_everything_without_a_retry_storm(
    tmp_path: Path, sinks: list[RecordingSink]
) -> None:
    """RC-06: 70 % UNAVAILABLE still delivers every span once, with attempts bounded by backoff."""
    with _forwarding(tmp_path, sinks, share_unavailable(0.7), max_batch_requests=1) as (sink, p):
        assert _delivered(sink, _ingest(p, 8), timeout=20)
        assert sink.duplicates == 0
        # 8 batches at 30 % success need ~27 attempts on average; a storm would be hundreds.
        assert sink.attempt_count() < 80


def test_rc06_hanging_destination_does_not_delay_the_other(
    tmp_path: Path, sinks: list[RecordingSink]
) -> None:
    """RC-06: a backend that never answers only times out its own exports."""
    hanging = _sink(sinks, always(Decision(hang=True)))
    healthy = _sink(sinks)
    p = _pipeline(
        tmp_path,
        {
            "otlp/hang": {"endpoint": f"grpc://127.0.0.1:{hanging.grpc_port}", "timeout": "300ms"},
            "otlp/ok": {"endpoint": f"grpc://127.0.0.1:{healthy.grpc_port}"},
        },
    )
    try:
        batches = _ingest(p, 5)
        assert healthy.wait_for(lambda: healthy.received == _keys(batches), timeout=5)
        assert healthy.wait_for(
            lambda: _metric(p, "otel_agents_forwarder_retries_total", destination="otlp/hang") >= 1
        )
    finally:
        hanging.stop()
        p.stop(drain_timeout=0.5)


def test_rc07_permanent_errors_are_dropped_after_one_attempt_and_counted(
    tmp_path: Path, sinks: list[RecordingSink]
) -> None:
    """RC-07: INVALID_ARGUMENT is not retried; the items are counted by reason."""
    decide = always(Decision(grpc.StatusCode.INVALID_ARGUMENT, message="bad"))
    with _forwarding(tmp_path, sinks, decide, max_batch_requests=1) as (sink, p):
        _ingest(p, 3, spans=4)
        assert sink.wait_for(lambda: _failed(p, "invalid_argument") == 12)
        time.sleep(0.3)  # would reveal a retry (initial interval is 50 ms)
        assert sink.attempt_count() == 3
        assert p.spool.cursor("otlp/a").pending() == (0, 0)


def test_rc07_http_400_is_permanent(tmp_path: Path, sinks: list[RecordingSink]) -> None:
    """RC-07: HTTP 400 is dropped after one attempt and counted as http_400."""
    decide = always(Decision(grpc.StatusCode.INVALID_ARGUMENT))
    with _forwarding(tmp_path, sinks, decide, http=True) as (sink, p):
        _ingest(p, 1, spans=3)
        assert sink.wait_for(lambda: _failed(p, "http_400") == 3)
        time.sleep(0.3)
        assert sink.attempt_count() == 1


def test_rc07_partial_success_is_counted_and_not_retried(
    tmp_path: Path, sinks: list[RecordingSink]
) -> None:
    """RC-07: rejected_spans from partial_success are counted as failed; the rest as sent."""
    decide = always(Decision(rejected=2, message="2 spans too old"))
    with _forwarding(tmp_path, sinks, decide, max_batch_requests=1) as (sink, p):
        _ingest(p, 1, spans=5)
        assert sink.wait_for(lambda: _failed(p, "partial_success") == 2)
        assert _sent(p) == 3
        time.sleep(0.3)
        assert sink.attempt_count() == 1


def test_resource_exhausted_without_retry_info_is_retried(
    tmp_path: Path, sinks: list[RecordingSink]
) -> None:
    """Bare RESOURCE_EXHAUSTED (Tempo 2.x rate limiting) is retried with backoff, not dropped."""
    decide = _fail_first(2, grpc.StatusCode.RESOURCE_EXHAUSTED)
    with _forwarding(tmp_path, sinks, decide) as (sink, p):
        assert _delivered(sink, _ingest(p, 1))
        assert [c for _, _, c in sink.attempts] == [
            "RESOURCE_EXHAUSTED",
            "RESOURCE_EXHAUSTED",
            "OK",
        ]


def test_only_configured_signals_are_sent(tmp_path: Path, sinks: list[RecordingSink]) -> None:
    """A traces-only destination (Phoenix, Tempo) never gets metrics or logs requests."""
    with _forwarding(tmp_path, sinks, signals=["traces"]) as (sink, p):
        logs = make_logs(3)
        p.ingest("logs", logs, logs.SerializeToString(), 3)
        assert _delivered(sink, _ingest(p, 1))
        assert sink.wait_for(lambda: p.spool.cursor("otlp/a").pending() == (0, 0))
        assert {s for _, s, _ in sink.attempts} == {"traces"}


def test_receiver_made_logs_are_forwarded(tmp_path: Path, sinks: list[RecordingSink]) -> None:
    """Host.export_logs spools log records that the destinations then receive."""
    with _forwarding(tmp_path, sinks) as (sink, p):
        p.export_logs(make_logs(4))
        assert sink.wait_for(lambda: sink.items["logs"] == 4)


def test_restart_resumes_from_the_cursor(tmp_path: Path, sinks: list[RecordingSink]) -> None:
    """Data spooled while the destination was down is sent by the next process on the same dir."""
    sink = _sink(sinks)
    port = sink.grpc_port
    sink.stop_grpc()
    cfg = {"otlp/a": {"endpoint": f"grpc://127.0.0.1:{port}", "timeout": "300ms"}}
    p = _pipeline(tmp_path, cfg)
    batches = _ingest(p, 3)
    p.stop(drain_timeout=0.2)
    sink.start_grpc(port)
    p2 = _pipeline(tmp_path, cfg)
    try:
        assert sink.wait_for(lambda: sink.received == _keys(batches))
    finally:
        p2.stop(drain_timeout=1)


def test_shutdown_drains_what_is_spooled(tmp_path: Path, sinks: list[RecordingSink]) -> None:
    """stop() lets the forwarder send what was committed before returning."""
    sink = _sink(sinks, always(Decision(delay=0.05)))
    p = _pipeline(
        tmp_path,
        {"otlp/a": {"endpoint": f"grpc://127.0.0.1:{sink.grpc_port}", "max_batch_requests": 1}},
    )
    batches = _ingest(p, 5)
    p.stop(drain_timeout=5)
    assert sink.received == _keys(batches)


def test_secrets_are_masked_before_storage_and_forwarding(
    tmp_path: Path, sinks: list[RecordingSink]
) -> None:
    """By default secrets are masked at ingest: the spool and the destination never see them."""
    with _forwarding(tmp_path, sinks) as (sink, p):
        batches = _ingest(
            p, 1, spans=1, **{"http.request.header.authorization": "Bearer abcdefghijkl"}
        )
        assert _delivered(sink, batches)
        assert b"abcdefghijkl" not in sink.bodies[0]
        assert b"[REDACTED]" in sink.bodies[0]
        stored = b"".join(f.read_bytes() for f in tmp_path.glob("spool.db*"))  # db + WAL
        assert b"fwd-test" in stored and b"abcdefghijkl" not in stored
        assert _metric(p, "otel_agents_spool_redacted_values_total") == 1


def test_forwarder_masks_secrets_when_storage_keeps_them(
    tmp_path: Path, sinks: list[RecordingSink]
) -> None:
    """With storage.redact_secrets off, each destination's own redaction still masks them."""
    with _forwarding(tmp_path, sinks, storage={"redact_secrets": False}) as (sink, p):
        assert _delivered(sink, _ingest(p, 1, spans=1, **{"db.password": "hunter2"}))
        assert b"hunter2" not in sink.bodies[0]
        assert _metric(p, "otel_agents_forwarder_redacted_values_total", destination="otlp/a") == 1


def test_rows_stored_unmasked_before_a_restart_are_still_masked_when_forwarded(
    tmp_path: Path, sinks: list[RecordingSink]
) -> None:
    """Forwarders skip re-scanning only rows this process masked; older spooled rows are checked."""
    sink = _sink(sinks)
    port = sink.grpc_port
    sink.stop_grpc()
    cfg = {"otlp/a": {"endpoint": f"grpc://127.0.0.1:{port}", "timeout": "300ms"}}
    p = _pipeline(tmp_path, cfg, redact_secrets=False)
    old = _ingest(p, 1, spans=1, **{"db.password": "hunter2"})
    p.stop(drain_timeout=0.2)
    sink.start_grpc(port)
    p2 = _pipeline(tmp_path, cfg)
    try:
        assert p2.secrets_redacted_after is not None and p2.secrets_redacted_after >= 1
        new = _ingest(p2, 1, spans=1, **{"api_key": "sk-abcdefghijklmnopqrstuv"})
        assert sink.wait_for(lambda: sink.received == _keys(old + new))
        body = b"".join(sink.bodies)
        assert b"hunter2" not in body and b"sk-abcdefghijklmnop" not in body
        assert _metric(p2, "otel_agents_forwarder_redacted_values_total", destination="otlp/a") == 1
        assert _metric(p2, "otel_agents_spool_redacted_values_total") == 1
    finally:
        p2.stop(drain_timeout=1)


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({}, "exporters.otlp.endpoint: must be set (e.g. grpc://127.0.0.1:4317)"),
        (
            {"endpoint": "ftp://x:1"},
            "exporters.otlp.endpoint: unsupported scheme 'ftp' (grpc, http, https)",
        ),
        (
            {"endpoint": "grpc://h:1", "protocol": "udp"},
            "exporters.otlp.protocol: must be one of 'grpc', 'http/protobuf', got 'udp'",
        ),
        (
            {"endpoint": "grpc://h:1", "retry_on_failure": {"multiplier": 0.5}},
            "exporters.otlp.retry_on_failure.multiplier: must be at least 1",
        ),
        (
            {"endpoint": "grpc://h:1", "compression_params": {"level": 1}},
            "exporters.otlp.compression_params: a gzip level applies to http/protobuf "
            "destinations only; grpcio compresses at zlib's default level 6 and offers no "
            "setting for it",
        ),
        (
            {
                "endpoint": "http://h:1",
                "protocol": "http/protobuf",
                "compression_params": {"level": 11},
            },
            "exporters.otlp.compression_params.level: gzip levels are 1..9, got 11",
        ),
        (
            {"endpoint": "grpc://h:1", "flush_timeout": "11s"},
            "exporters.otlp.flush_timeout: must be between 0 and 10 seconds",
        ),
    ],
)
def test_invalid_settings_name_the_key(settings: dict[str, Any], error: str) -> None:
    """Invalid exporter settings fail at load with the key path in the message."""
    with pytest.raises(ConfigError) as err:
        decode(OtlpExporterConfig, settings, "exporters.otlp")
    assert str(err.value) == error


def test_factory_builds_a_forwarder_named_by_its_id() -> None:
    """The ``otlp`` factory gives a forwarder whose spool cursor is its component ID."""
    from otel_agents.exporters import FACTORIES

    f = FACTORIES["otlp"].create(OtlpExporterConfig(endpoint="grpc://127.0.0.1:1"), "tempo")
    assert isinstance(f, OtlpForwarder) and f.cursor_name == "otlp/tempo"


def test_backoff_follows_initial_multiplier_and_cap(
    tmp_path: Path, sinks: list[RecordingSink]
) -> None:
    """RC-05: without jitter the waits are 0.1, 0.2, 0.4, 0.4 s (initial × multiplier, capped)."""
    gaps = _retry_gaps(tmp_path, sinks, 4, multiplier=2.0, max_ms=400, randomization_factor=0)
    for gap, expected in zip(gaps, [0.1, 0.2, 0.4, 0.4], strict=True):
        assert expected - 0.01 <= gap < expected + 0.15, gaps


def test_jittered_waits_stay_within_the_randomization_factor(
    tmp_path: Path, sinks: list[RecordingSink]
) -> None:
    """RC-05: with factor 0.5 each wait is within interval × [0.5, 1.5]."""
    gaps = _retry_gaps(tmp_path, sinks, 5, multiplier=1.0, max_ms=100, randomization_factor=0.5)
    assert len(gaps) == 5
    assert all(0.049 <= g < 0.15 + 0.1 for g in gaps), gaps


def test_a_request_larger_than_max_batch_bytes_is_split(
    tmp_path: Path, sinks: list[RecordingSink]
) -> None:
    """A spooled request over the destination's size budget goes out in several smaller ones."""
    with _forwarding(tmp_path, sinks, max_batch_bytes="4KiB") as (sink, p):
        assert _delivered(sink, _ingest(p, 1, spans=200))
        assert len(sink.bodies) >= 3 and max(len(b) for b in sink.bodies) <= 4096
        assert sink.duplicates == 0
        assert _sent(p) == 200


def test_split_request_keeps_every_item_resource_and_scope() -> None:
    """split_request regroups spans under copies of their resource and scope, in order."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from otel_agents.exporters._otlp import split_request

    batch = make_traces(50)
    chunks = split_request("traces", batch.payload, 1000)
    assert len(chunks) > 1 and sum(n for _, n in chunks) == 50
    spans = []
    for data, n in chunks:
        req = ExportTraceServiceRequest.FromString(data)
        assert req.resource_spans[0].resource == batch.request.resource_spans[0].resource
        got = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
        assert len(got) == n
        spans += got
    assert [(s.trace_id, s.span_id) for s in spans] == batch.keys
    assert split_request("traces", b"\xff\xff", 10) == []


def test_forwards_over_tls_to_grpc_and_https(tmp_path: Path, sinks: list[RecordingSink]) -> None:
    """https:// endpoints use TLS verified against ca_file, for gRPC and for OTLP/HTTP."""
    import ssl

    from tests.exporters._fwd_sink import self_signed

    cert, key, cert_file = self_signed(tmp_path)
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(key)
    grpc_sink = RecordingSink()
    grpc_sink.start_grpc(tls=(cert, key))
    http_sink = RecordingSink()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file)
    http_sink.start_http(tls=ctx)
    sinks += [grpc_sink, http_sink]
    p = _pipeline(
        tmp_path / "data",
        {
            "otlp/g": {
                "endpoint": f"https://127.0.0.1:{grpc_sink.grpc_port}",
                "ca_file": str(cert_file),
            },
            "otlp/h": {
                "endpoint": f"https://127.0.0.1:{http_sink.http_port}",
                "protocol": "http/protobuf",
                "ca_file": str(cert_file),
            },
        },
    )
    try:
        batches = _ingest(p, 2)
        assert grpc_sink.wait_for(lambda: grpc_sink.received == _keys(batches))
        assert http_sink.wait_for(lambda: http_sink.received == _keys(batches))
    finally:
        p.stop(drain_timeout=1)


def test_tls_with_an_unknown_ca_never_delivers(tmp_path: Path, sinks: list[RecordingSink]) -> None:
    """Without the CA the TLS handshake fails (retried, counted), nothing is sent in clear."""
    from tests.exporters._fwd_sink import self_signed

    cert, key, _ = self_signed(tmp_path)
    sink = RecordingSink()
    sink.start_grpc(tls=(cert, key))
    sinks.append(sink)
    p = _pipeline(
        tmp_path / "data", {"otlp/g": {"endpoint": f"https://127.0.0.1:{sink.grpc_port}"}}
    )
    try:
        _ingest(p, 1)
        assert sink.wait_for(
            lambda: _metric(p, "otel_agents_forwarder_retries_total", destination="otlp/g") >= 2
        )
        assert sink.received == set()
    finally:
        p.stop(drain_timeout=0)


def test_http_keep_alive_closed_by_the_server_is_not_a_failure(
    tmp_path: Path, sinks: list[RecordingSink]
) -> None:
    """A keep-alive connection the server closed while idle is replaced at once, no backoff."""
    slow_retry = {"initial_interval": "5s", "max_interval": "5s"}
    with _forwarding(tmp_path, sinks, http=True, retry_on_failure=slow_retry) as (sink, p):
        sink.drop_idle_connections = True
        first = _ingest(p, 1)
        assert _delivered(sink, first)
        time.sleep(0.1)  # the server has closed the idle connection by now
        assert _delivered(sink, first + _ingest(p, 1), timeout=3)
        assert _metric(p, "otel_agents_forwarder_retries_total", destination="otlp/a") == 0


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    """Retry-After is read as delta-seconds or as an HTTP-date (RFC 9110 §10.2.3)."""
    import email.utils

    from otel_agents.exporters._otlp import _parse_retry_after

    assert _parse_retry_after("7") == 7.0
    in_30s = email.utils.formatdate(time.time() + 30, usegmt=True)
    delay = _parse_retry_after(in_30s)
    assert delay is not None and 28 <= delay <= 31
    assert _parse_retry_after("soon") is None and _parse_retry_after(None) is None


def test_retry_info_is_read_from_the_rich_status_alone() -> None:
    """Go-style servers send RetryInfo only inside grpc-status-details-bin; that is enough."""
    from google.protobuf import any_pb2, duration_pb2
    from google.rpc import error_details_pb2, status_pb2
    from otel_agents.exporters._otlp import _retry_info_delay

    detail = any_pb2.Any()
    detail.Pack(
        error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=2, nanos=500_000_000))
    )
    status = status_pb2.Status(code=14, message="slow down", details=[detail])
    assert _retry_info_delay(status.SerializeToString(), True) == 2.5
    assert _retry_info_delay(b"\xff", True) is None


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_a_destination_size_limit_below_ours_is_met_by_splitting(
    protocol: str, tmp_path: Path, sinks: list[RecordingSink]
) -> None:
    """gRPC "larger than max" (RESOURCE_EXHAUSTED) or HTTP 413: the request is halved until the
    destination takes it, instead of being retried forever or dropped."""
    sink = RecordingSink()
    sinks.append(sink)
    if protocol == "grpc":
        endpoint = f"grpc://127.0.0.1:{sink.start_grpc(max_receive=4096)}"
    else:
        sink.max_http_body = 4096
        endpoint = f"http://127.0.0.1:{sink.start_http()}"
    p = _pipeline(tmp_path, {"otlp/a": {"endpoint": endpoint, "protocol": protocol}})
    try:
        assert _delivered(sink, _ingest(p, 1, spans=300))  # ~17 KB
        assert sink.duplicates == 0
        assert _sent(p) == 300
        assert _metric(p, "otel_agents_forwarder_retries_total", destination="otlp/a") == 0
    finally:
        p.stop(drain_timeout=1)


@pytest.mark.parametrize(("params", "xfl"), [({}, 4), ({"level": 6}, 0), ({"level": 9}, 2)])
def test_http_gzip_level_is_the_configured_one(params: dict[str, Any], xfl: int) -> None:
    """OTLP/HTTP bodies are one gzip member at the configured level (default 1, the fastest)."""
    import gzip
    import http.server
    import threading

    from otel_agents.exporters._otlp import _HttpSender

    bodies: list[bytes] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        config = decode(
            OtlpExporterConfig,
            {
                "endpoint": f"http://127.0.0.1:{server.server_address[1]}",
                "protocol": "http/protobuf",
                "compression_params": params,
            },
        )
        sender = _HttpSender(config)
        payload = make_traces(200).payload
        assert sender.send("traces", payload).kind == "ok"
        sender.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    (body,) = bodies
    assert gzip.decompress(body) == payload
    # RFC 1952 XFL: zlib writes 4 for its fastest level, 2 for the best, 0 otherwise.
    assert body[:3] == b"\x1f\x8b\x08" and body[8] == xfl


def test_requests_spooled_within_flush_timeout_go_out_in_one_export(
    tmp_path: Path, sinks: list[RecordingSink]
) -> None:
    """Requests spooled while the first waits out flush_timeout are merged into one export."""
    with _forwarding(tmp_path, sinks, flush_timeout="500ms") as (sink, p):
        started = time.monotonic()
        batches = _ingest(p, 1)
        time.sleep(0.05)  # the forwarder has read the first request and is waiting for more
        batches += _ingest(p, 3)
        assert _delivered(sink, batches)
        waited = time.monotonic() - started
        assert sink.attempt_count() == 1
        assert b"".join(sink.bodies) == b"".join(b.payload for b in batches)
        assert 0.4 <= waited < 5.0, waited  # sent once the oldest request's wait was over


def test_flush_timeout_zero_sends_each_request_at_once(
    tmp_path: Path, sinks: list[RecordingSink]
) -> None:
    """With flush_timeout 0 a lone spooled request is sent without waiting for company."""
    with _forwarding(tmp_path, sinks, flush_timeout=0) as (sink, p):
        started = time.monotonic()
        batches = _ingest(p, 1)
        assert _delivered(sink, batches)
        assert time.monotonic() - started < 0.4
        more = _ingest(p, 1)
        assert _delivered(sink, batches + more)
        assert sink.attempt_count() == 2


def test_full_and_overdue_batches_do_not_wait_again(
    tmp_path: Path, sinks: list[RecordingSink]
) -> None:
    """After a flush_timeout wait, a full batch and an overdue remainder go out at once."""
    with _forwarding(tmp_path, sinks, flush_timeout="2s", max_batch_requests=3) as (sink, p):
        started = time.monotonic()
        batches = _ingest(p, 1)
        time.sleep(0.2)  # the forwarder has read the lone request and waits for company
        batches += _ingest(p, 6)
        assert _delivered(sink, batches, timeout=8.0)
        elapsed = time.monotonic() - started
        # 1 + 2 after the wait, then 3 (a full batch), then 1 (older than flush_timeout).
        assert sink.attempt_count() == 3
        assert 1.8 <= elapsed < 3.5, elapsed
