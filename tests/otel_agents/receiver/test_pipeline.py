# SPDX-License-Identifier: Apache-2.0
"""The pipeline host: feeds components after commit, ticks them, isolates their failures."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import otel_agents.processors as processors
import pytest

from otel_agents._component import Component, Factory, Finding, Host
from otel_agents._errors import RetryableError
from otel_agents.receiver._config import load_config
from otel_agents.receiver._pipeline import ANALYSIS_CURSOR, Pipeline
from tests.exporters._fwd_sink import make_logs, make_traces


@dataclasses.dataclass(frozen=True)
class RecorderConfig:
    """Settings of the recording stage."""

    fail: bool = False


class Recorder(Component):
    """A real pipeline stage that keeps what it is given (the component under observation)."""

    instances: list[Recorder] = []

    def __init__(self, config: RecorderConfig, name: str) -> None:
        self.config, self.name = config, name
        self.batches: list[Any] = []
        self.logs: list[Any] = []
        self.metrics: list[Any] = []
        self.ticks: list[float] = []
        self.host: Host | None = None
        self.shut = False
        self.event = threading.Event()
        Recorder.instances.append(self)

    def start(self, host: Host) -> None:
        self.host = host

    def process_traces(self, batch: Any) -> None:
        if self.config.fail:
            raise RuntimeError("stage bug")
        self.batches.append(batch)
        self.event.set()

    def process_logs(self, request: Any) -> None:
        self.logs.append(request)
        self.event.set()

    def process_metrics(self, request: Any) -> None:
        self.metrics.append(request)

    def tick(self, now: float) -> None:
        self.ticks.append(now)

    def shutdown(self) -> None:
        self.shut = True


@pytest.fixture
def recorder_type(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Registers the ``recorder`` processor type for the duration of a test."""
    Recorder.instances = []
    monkeypatch.setitem(
        processors.FACTORIES, "recorder", Factory("recorder", RecorderConfig, Recorder)
    )
    yield


def _pipeline(tmp_path: Path, procs: dict[str, Any], **extra: Any) -> Pipeline:
    overrides: dict[str, Any] = {
        "storage.data_dir": str(tmp_path),
        "processors": procs,
        "pipeline.processors": list(procs),
        "pipeline.exporters": [],
        "pipeline.tick_interval": "50ms",
    }
    overrides.update(extra)
    return Pipeline(load_config(None, overrides), clock=lambda: 1_000_000.0)


def _wait(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


def test_traces_reach_stages_as_span_batches_after_commit(
    tmp_path: Path, recorder_type: None
) -> None:
    """An ingested trace request is in the spool and arrives at the stage as a SpanBatch."""
    p = _pipeline(tmp_path, {"recorder": {}})
    p.start()
    try:
        batch = make_traces(4)
        p.ingest("traces", batch.request, batch.payload, 4)
        (rec,) = Recorder.instances
        assert _wait(lambda: rec.batches)
        got = rec.batches[0]
        assert len(got.span_id) == 4
        assert set(got.span_id) == {k[1] for k in batch.keys}
        assert float(got.received_at) == 1_000_000.0
        assert rec.host is p
    finally:
        p.stop(drain_timeout=0)
    assert rec.shut


def test_rows_committed_before_start_or_a_crash_are_analysed_on_start(
    tmp_path: Path, recorder_type: None
) -> None:
    """The analysis cursor resumes: requests spooled but not analysed are processed later."""
    p = _pipeline(tmp_path, {"recorder": {}})
    batch = make_traces(2)
    p.ingest("traces", batch.request, batch.payload, 2)  # committed; pipeline thread not running
    p.start()
    try:
        (rec,) = Recorder.instances
        assert _wait(lambda: rec.batches)
        assert _wait(lambda: p.spool.cursor(ANALYSIS_CURSOR).pending() == (0, 0))
    finally:
        p.stop(drain_timeout=0)


def test_receiver_made_logs_are_not_fed_back_to_stages(tmp_path: Path, recorder_type: None) -> None:
    """export_logs() rows are skipped by analysis, while received logs are processed."""
    p = _pipeline(
        tmp_path,
        {"recorder": {}},
        exporters={"otlp/x": {"endpoint": "grpc://127.0.0.1:9"}},
        **{"pipeline.exporters": ["otlp/x"]},
    )
    p.start()
    try:
        (rec,) = Recorder.instances
        p.export_logs(make_logs(2))
        received = make_logs(3)
        p.ingest("logs", received, received.SerializeToString(), 3)
        assert _wait(lambda: rec.logs)
        time.sleep(0.1)
        assert [len(r.resource_logs[0].scope_logs[0].log_records) for r in rec.logs] == [3]
        assert p.spool.items()["logs"] == 5  # both spooled for the destination
    finally:
        p.stop(drain_timeout=0)


def test_a_failing_stage_does_not_stop_the_others(tmp_path: Path, recorder_type: None) -> None:
    """An exception in one stage is logged; the next stage still gets the batch."""
    p = _pipeline(tmp_path, {"recorder/bad": {"fail": True}, "recorder/good": {}})
    p.start()
    try:
        batch = make_traces(1)
        p.ingest("traces", batch.request, batch.payload, 1)
        bad, good = Recorder.instances
        assert _wait(lambda: good.batches)
        assert bad.batches == []
    finally:
        p.stop(drain_timeout=0)


def test_components_are_ticked_with_the_receiver_clock(tmp_path: Path, recorder_type: None) -> None:
    """tick(now) runs about every tick_interval with host.now()."""
    p = _pipeline(tmp_path, {"recorder": {}})
    p.start()
    try:
        (rec,) = Recorder.instances
        assert _wait(lambda: len(rec.ticks) >= 3)
        assert set(rec.ticks) == {1_000_000.0}
    finally:
        p.stop(drain_timeout=0)


def test_findings_reach_every_subscriber_even_if_one_fails(
    tmp_path: Path, recorder_type: None
) -> None:
    """emit_finding calls each listener; a raising listener does not hide it from the others."""
    p = _pipeline(tmp_path, {"recorder": {}})
    got: list[Finding] = []

    def broken(_f: Finding) -> None:
        raise ValueError("listener bug")

    p.subscribe_findings(broken)
    p.subscribe_findings(got.append)
    finding = Finding(
        kind="bottleneck", key="agent=a", severity="warning", score=50, title="t", explanation="e"
    )
    p.emit_finding(finding)
    assert got == [finding]
    p.spool.close()


def test_register_api_feeds_the_admin_sink(tmp_path: Path, recorder_type: None) -> None:
    """Routes registered by components go to the admin server's register_api; bad paths fail."""
    p = _pipeline(tmp_path, {"recorder": {}})
    seen: list[str] = []
    p.api_sink = lambda path, _h: seen.append(path)

    def handler(method: str, query: Any, body: bytes | None) -> tuple[int, Any]:
        return 200, {}

    p.register_api("/api/v1/things", handler)
    assert seen == ["/api/v1/things"] and p.api_routes["/api/v1/things"] is handler
    with pytest.raises(ValueError):
        p.register_api("/metrics", handler)
    p.spool.close()


def test_no_analysis_means_no_analysis_cursor(tmp_path: Path, recorder_type: None) -> None:
    """With analysis off nothing pins the spool for it: rows go once the forwarders pass them."""
    config = load_config(
        None,
        {
            "storage.data_dir": str(tmp_path),
            "processors": {"recorder": {}},
            "pipeline.exporters": [],
        },
    )
    p = Pipeline(config, analysis=False)
    batch = make_traces(1)
    p.ingest("traces", batch.request, batch.payload, 1)
    assert p.spool.compact() == 1
    assert Recorder.instances == []
    p.spool.close()


def test_health_reports_storage_trouble(tmp_path: Path, recorder_type: None) -> None:
    """health() is not ready while the spool refuses data, with the reason."""
    p = _pipeline(tmp_path, {"recorder": {}})
    assert p.health()[0]
    conn = p.spool._conn
    assert conn is not None
    conn.execute(f"PRAGMA max_page_count={conn.execute('PRAGMA page_count').fetchone()[0]}")
    with pytest.raises(RetryableError):
        for _ in range(100):
            b = make_traces(100)
            p.ingest("traces", b.request, b.payload, 100)
    ready, details = p.health()
    assert not ready and details["spool"] == "degraded: disk_full"
    p.spool.close()


def test_a_stuck_stage_never_blocks_ingestion(tmp_path: Path, recorder_type: None) -> None:
    """When analysis lags and the spool is full, the backlog is skipped (counted), not refused."""
    p = _pipeline(
        tmp_path,
        {"recorder": {}},
        **{"storage.max_bytes": "1MiB", "limits.max_request_bytes": "1MiB"},
    )
    release = threading.Event()
    (rec,) = Recorder.instances
    rec.process_traces = lambda batch: release.wait(10)  # type: ignore[method-assign]
    p.start()
    try:
        for _ in range(120):  # ~16 KiB each: about twice the spool; none may be refused
            b = make_traces(200)
            p.ingest("traces", b.request, b.payload, 200)
        release.set()
        assert _wait(
            lambda: (
                (
                    p.metrics_registry.get_sample_value("otel_agents_pipeline_skipped_items_total")
                    or 0
                )
                > 0
            )
        )
    finally:
        release.set()
        p.stop(drain_timeout=0)


def test_stages_see_secrets_masked_at_ingest(tmp_path: Path, recorder_type: None) -> None:
    """storage.redact_secrets masks before the commit, so analysis gets the masked request too."""
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    p = _pipeline(tmp_path, {"recorder": {}})
    p.start()
    try:
        logs = make_logs(1)
        record = logs.resource_logs[0].scope_logs[0].log_records[0]
        record.attributes.append(
            KeyValue(key="user.password", value=AnyValue(string_value="hunter2"))
        )
        p.ingest("logs", logs, logs.SerializeToString(), 1)
        (rec,) = Recorder.instances
        assert _wait(lambda: rec.logs)
        got = rec.logs[0].resource_logs[0].scope_logs[0].log_records[0].attributes[0]
        assert got.value.string_value == "[REDACTED]"
    finally:
        p.stop(drain_timeout=0)


def test_sampled_spans_reach_stages_coalesced_and_every_span_is_accounted(
    tmp_path: Path, recorder_type: None
) -> None:
    """At a fixed 1/4 sample the stage gets exactly the traces the consistent rule keeps (weight
    4), decoded together from several requests, and analysed + skipped = received."""
    from otel_agents.processors._sampling import probability_to_threshold

    p = _pipeline(tmp_path, {"recorder": {}}, **{"analysis.sampling": 0.25})
    threshold = probability_to_threshold(0.25)
    sent = [make_traces(8) for _ in range(40)]
    p.start()
    try:
        for b in sent:
            p.ingest("traces", b.request, b.payload, 8)
        kept = {k[1] for b in sent for k in b.keys if int.from_bytes(k[0][-7:], "big") >= threshold}
        (rec,) = Recorder.instances
        assert _wait(lambda: sum(x.n for x in rec.batches) >= len(kept))
    finally:
        p.stop(drain_timeout=0)
    got = [s for x in rec.batches for s in x.span_id.tolist()]
    assert set(got) == kept and len(got) == len(kept)
    assert all((x.weight == 4.0).all() and x.analysed_fraction == 0.25 for x in rec.batches)
    if len(kept) > 16:  # spans of several requests were decoded as one batch
        assert len(rec.batches) < len(kept) // 8
    skipped = p.metrics_registry.get_sample_value("otel_agents_pipeline_skipped_items_total")
    assert skipped == 40 * 8 - len(kept)


def test_light_traffic_is_analysed_in_full_under_the_adaptive_budget(
    tmp_path: Path, recorder_type: None
) -> None:
    """A few hundred spans a second with the default adaptive budget: every span reaches the
    stage with weight 1 and the sampled-fraction gauge stays at 1."""
    p = _pipeline(tmp_path, {"recorder": {}})
    p.start()
    try:
        for _ in range(10):
            b = make_traces(30)
            p.ingest("traces", b.request, b.payload, 30)
            time.sleep(0.05)
        (rec,) = Recorder.instances
        assert _wait(lambda: sum(x.n for x in rec.batches) >= 300)
    finally:
        p.stop(drain_timeout=0)
    assert sum(x.n for x in rec.batches) == 300
    assert all((x.weight == 1.0).all() for x in rec.batches)
    fraction = p.metrics_registry.get_sample_value("otel_agents_analysis_sampled_fraction")
    assert fraction == 1.0
