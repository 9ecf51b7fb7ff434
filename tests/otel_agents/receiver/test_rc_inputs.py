# SPDX-License-Identifier: Apache-2.0
"""Reliability scorecard RC-09 (malformed-input catalogue) and RC-10 (size limits, bombs) against
a real receiver *process*: the rows of reliability.md §3 that test_badinput.py (in-process stack)
does not drive, each followed by a valid request that must still succeed, the receiver log
checked for unhandled exceptions, and the memory cost of a decompression bomb measured.
"""

from __future__ import annotations

import gzip
import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import psutil
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from tests.exporters._fwd_sink import RecordingSink
from tests.otel_agents.receiver._rc_fixtures import (
    MIB,
    TRACES,
    agent_request,
    record_figures,
)
from tests.otel_agents.receiver._spool_client import ReceiverProcess, poll

LIMIT = 8 * MIB  # limits.max_request_bytes given to the receiver


@dataclass
class Stack:
    """A receiver process forwarding to a recording backend."""

    receiver: ReceiverProcess
    sink: RecordingSink
    channel: grpc.Channel

    def grpc(self, payload: bytes, **kw: object) -> tuple[grpc.StatusCode, bytes]:
        """Raw gRPC export → (code, response bytes)."""
        try:
            out = self.channel.unary_unary(TRACES)(payload, timeout=30, **kw)
            return grpc.StatusCode.OK, out
        except grpc.RpcError as err:
            return err.code(), b""  # type: ignore[attr-defined]

    def http(self, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """OTLP/HTTP protobuf POST → (status, body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.receiver.ports["http"], timeout=30)
        try:
            conn.request(
                "POST",
                "/v1/traces",
                body,
                {"Content-Type": "application/x-protobuf", **(headers or {})},
            )
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def still_serves(self) -> None:
        """A valid request right after a bad one is accepted and forwarded."""
        payload, keys = agent_request(3)
        assert self.grpc(payload)[0] is grpc.StatusCode.OK
        assert self.http(agent_request(3)[0])[0] == 200
        assert poll(lambda: set(keys) <= self.sink.received, 20)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """Receiver process (8 MiB request limit, 1 s HTTP header timeout) → recording backend."""
    sink = RecordingSink()
    sink.start_grpc()
    receiver = ReceiverProcess(
        tmp_path,
        tmp_path / "data",
        "--forward",
        f"grpc://127.0.0.1:{sink.grpc_port}",
        "--no-analysis",
        "--set",
        f"limits.max_request_bytes={LIMIT}",
        "--set",
        "receivers.otlp.protocols.http.read_header_timeout=1s",
    )
    channel = grpc.insecure_channel(
        f"127.0.0.1:{receiver.ports['grpc']}",
        options=[("grpc.max_send_message_length", 128 * MIB)],
    )
    yield Stack(receiver, sink, channel)
    channel.close()
    assert receiver.terminate() == 0
    sink.stop()
    log = receiver.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]


def _request(mutate: Callable[[ExportTraceServiceRequest], None]) -> bytes:
    request = ExportTraceServiceRequest.FromString(agent_request(4)[0])
    mutate(request)
    return request.SerializeToString()


def _far_future(r: ExportTraceServiceRequest) -> None:
    for s in r.resource_spans[0].scope_spans[0].spans:
        s.start_time_unix_nano = 2**63 - 10
        s.end_time_unix_nano = 2**63 - 1


def _ancient(r: ExportTraceServiceRequest) -> None:
    for s in r.resource_spans[0].scope_spans[0].spans:
        s.start_time_unix_nano, s.end_time_unix_nano = 1, 2


def _huge_value(r: ExportTraceServiceRequest) -> None:
    r.resource_spans[0].scope_spans[0].spans[0].attributes.append(
        KeyValue(key="gen_ai.input.messages", value=AnyValue(string_value="p" * (2 * MIB)))
    )


def _duplicate_keys(r: ExportTraceServiceRequest) -> None:
    span = r.resource_spans[0].scope_spans[0].spans[0]
    for v in ("first", "second"):
        span.attributes.append(KeyValue(key="dup", value=AnyValue(string_value=v)))


def _child_before_parent(r: ExportTraceServiceRequest) -> None:
    spans = r.resource_spans[0].scope_spans[0].spans
    ordered = list(reversed(spans))
    del spans[:]
    spans.extend(ordered)


def _self_parent(r: ExportTraceServiceRequest) -> None:
    span = r.resource_spans[0].scope_spans[0].spans[1]
    span.parent_span_id = span.span_id


def _with_unknown_field(body: bytes) -> bytes:
    # B21/B19: profiles-only ``*_strindex`` fields are unknown to the trace schema of this proto
    # version; an unknown top-level field (3, varint) is what this receiver sees from a newer
    # sender, and the spec says it MUST be ignored.
    return body + bytes([0x18, 0x07])


ROWS: list[tuple[str, Callable[[], bytes], int]] = [
    # (catalogue row, body, spans expected stored)
    ("B12-far-future-timestamps", lambda: _request(_far_future), 4),
    ("B12-ancient-timestamps", lambda: _request(_ancient), 4),
    ("B14-2MiB-attribute-value", lambda: _request(_huge_value), 4),
    ("B16-duplicate-attribute-keys", lambda: _request(_duplicate_keys), 4),
    ("B18-child-before-parent", lambda: _request(_child_before_parent), 4),
    ("B10-self-parent", lambda: _request(_self_parent), 4),
    ("B21-unknown-field", lambda: _with_unknown_field(agent_request(4)[0]), 4),
]


def test_rc09_catalogue_rows_get_their_documented_answer_on_a_live_receiver(stack: Stack) -> None:
    """RC-09: B10/B12/B14/B16/B18/B21 over gRPC and HTTP are accepted in full (OK, every span
    stored and forwarded), a valid request works after each, and the log has no traceback."""
    tried = 0
    for name, body, stored in ROWS:
        for transport in ("grpc", "http"):
            payload = body()
            keys = {
                (s.trace_id, s.span_id)
                for s in ExportTraceServiceRequest.FromString(payload)
                .resource_spans[0]
                .scope_spans[0]
                .spans
            }
            if transport == "grpc":
                code, raw = stack.grpc(payload)
                assert code is grpc.StatusCode.OK, name
            else:
                status, raw = stack.http(payload)
                assert status == 200, (name, raw[:200])
            response = ExportTraceServiceResponse.FromString(raw)
            assert response.partial_success.rejected_spans == 0, name
            assert len(keys) == stored
            assert poll(lambda k=keys: k <= stack.sink.received, 20), name  # type: ignore[misc]
            stack.still_serves()
            tried += 1
    record_figures(
        "RC-09",
        "test_rc09_catalogue_rows_get_their_documented_answer_on_a_live_receiver",
        bad_inputs_tried=tried,
        spans_lost=0,
    )


def test_rc09_b17_duplicate_spans_are_accepted_and_delivered(stack: Stack) -> None:
    """RC-09 B17: a client retry re-sends the same spans; both are acknowledged and every span is
    forwarded (at-least-once; de-duplication is the backend's, like Tempo 3.0)."""
    payload, keys = agent_request(5)
    assert stack.grpc(payload)[0] is grpc.StatusCode.OK
    assert stack.grpc(payload)[0] is grpc.StatusCode.OK
    assert poll(lambda: set(keys) <= stack.sink.received, 20)
    assert poll(lambda: stack.sink.duplicates == len(keys), 20)
    stack.still_serves()


def test_rc09_b23_slowloris_headers_are_cut_off(stack: Stack) -> None:
    """RC-09 B23: a client that sends headers byte by byte never finishing is disconnected after
    read_header_timeout (1 s here) while other clients are served."""
    with socket.create_connection(("127.0.0.1", stack.receiver.ports["http"]), timeout=10) as s:
        s.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        stack.still_serves()
        closed = False
        while time.monotonic() - started < 8:
            try:
                s.sendall(b"X-Slow: 1\r\n")
            except OSError:
                closed = True
                break
            s.settimeout(0.3)
            try:
                data = s.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
            if data == b"" or data.startswith(b"HTTP/1.1 408"):
                closed = True
                break
        assert closed, "the slow client was never cut off"
        assert time.monotonic() - started < 5


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_rc10_gzip_bomb_is_refused_with_bounded_memory(stack: Stack, transport: str) -> None:
    """RC-10: 64 MiB of zeros gzip-compressed (~64 KiB on the wire) is refused (gRPC
    RESOURCE_EXHAUSTED / HTTP 413) and the receiver's RSS grows by at most 2 × the 8 MiB limit."""
    proc = psutil.Process(stack.receiver.proc.pid)
    stack.still_serves()  # warm: both servers have handled a request
    base = proc.memory_info().rss
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.005):
            try:
                peak[0] = max(peak[0], proc.memory_info().rss)
            except psutil.Error:
                return

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        zeros = bytes(64 * MIB)
        if transport == "grpc":
            code, _ = stack.grpc(zeros, compression=grpc.Compression.Gzip)
            assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
        else:
            status, _ = stack.http(gzip.compress(zeros, 1), {"Content-Encoding": "gzip"})
            assert status == 413
    finally:
        stop.set()
        sampler.join(5)
    growth = (peak[0] - base) / MIB
    assert growth <= 2 * LIMIT / MIB, f"RSS grew {growth:.1f} MiB"
    stack.still_serves()
    record_figures(
        "RC-10",
        f"test_rc10_gzip_bomb_is_refused_with_bounded_memory[{transport}]",
        bomb_decompressed_mib=64,
        limit_mib=LIMIT // MIB,
        rss_growth_mib=round(growth, 1),
    )


def test_rc10_limit_plus_one_over_grpc_and_http(stack: Stack) -> None:
    """RC-10: a request of limit + 1 bytes is refused (RESOURCE_EXHAUSTED / 413), one of exactly
    the limit is decoded (here: answered INVALID_ARGUMENT / 400 for its zero-filled content)."""
    over = bytes(LIMIT + 1)
    assert stack.grpc(over)[0] is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert stack.http(over)[0] == 413
    # field 1 (length 0) then zero bytes: tag 0 is a decode error, not a size error
    exact = b"\x0a" + bytes(LIMIT - 1)
    assert stack.grpc(exact)[0] is grpc.StatusCode.INVALID_ARGUMENT
    assert stack.http(exact)[0] == 400
    stack.still_serves()
