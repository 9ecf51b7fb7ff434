# SPDX-License-Identifier: Apache-2.0
"""OTLP/HTTP request bodies read into one buffer (``Content-Length``, no compression): pieces,
deadlines, early close, and the bound above which bodies are still read in pieces."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from otel_agents.receiver import HttpConfig, LimitsConfig, _http

from ._transport_fixtures import (
    Stack,
    http_post,
    stack_fixture,
    trace_request,
    trickle_until_closed,
    wait_for,
)

READ_TIMEOUT = 0.6


@pytest.fixture
def stack() -> Iterator[Stack]:
    yield from stack_fixture(
        limits=LimitsConfig(max_request_bytes=16 << 20),
        http_config=HttpConfig(
            endpoint="127.0.0.1:0",
            read_header_timeout=2.0,
            read_timeout=READ_TIMEOUT,
            idle_timeout=2.0,
        ),
    )


def _head(length: int) -> bytes:
    return (
        "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def _read_response(sock: socket.socket, deadline: float) -> bytes:
    """Everything the server sends until it closes or one whole response has arrived."""
    data = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            if len(body) >= length:
                break
    return data


def test_body_sent_in_pauses_is_read_whole(stack: Stack) -> None:
    """A body arriving in four pieces with pauses between them is read in full and stored."""
    body = trace_request(300, attrs=8).SerializeToString()
    assert len(body) > 4 * 1024
    with socket.create_connection(("127.0.0.1", stack.http.port), timeout=5) as s:
        s.sendall(_head(len(body)))
        step = len(body) // 4 + 1
        for i in range(0, len(body), step):
            s.sendall(body[i : i + step])
            time.sleep(0.05)  # each piece is its own recv on the server
        data = _read_response(s, time.monotonic() + 5)
    assert data.startswith(b"HTTP/1.1 200 "), data[:200]
    ExportTraceServiceResponse.FromString(data.partition(b"\r\n\r\n")[2])
    assert stack.ingestor.items == 300
    assert stack.ingestor.batches[0][1] == body  # the stored payload is the received bytes


def test_trickled_body_is_cut_off_at_read_timeout(stack: Stack) -> None:
    """A client sending its body a byte at a time is disconnected once read_timeout passes."""
    body = trace_request(20).SerializeToString()
    with socket.create_connection(("127.0.0.1", stack.http.port), timeout=5) as s:
        s.sendall(_head(len(body)))
        start = time.monotonic()
        # 40 bytes, 0.1 s apart: 4 s if never cut off
        closed = trickle_until_closed(s, (body[i : i + 1] for i in range(min(len(body), 40))))
        elapsed = time.monotonic() - start
    assert closed
    assert READ_TIMEOUT * 0.8 <= elapsed < READ_TIMEOUT + 1.0, elapsed
    assert stack.ingestor.items == 0


def test_client_closing_mid_body_stores_nothing(stack: Stack) -> None:
    """A connection closed before the declared Content-Length arrived is dropped unanswered."""
    body = trace_request(50).SerializeToString()
    with socket.create_connection(("127.0.0.1", stack.http.port), timeout=5) as s:
        s.sendall(_head(len(body)) + body[: len(body) // 2])
        s.shutdown(socket.SHUT_WR)
        data = _read_response(s, time.monotonic() + 3)
    assert data == b""
    assert stack.ingestor.items == 0
    # The server is still serving afterwards.
    assert http_post(stack, "/v1/traces", body).status == 200
    assert wait_for(lambda: stack.ingestor.items == 50)


def test_bodies_over_the_direct_bound_are_read_in_pieces(stack: Stack) -> None:
    """A body above the one-buffer bound goes through the piecewise reader and is stored intact."""
    # Pad with a long attribute value so the body exceeds _DIRECT_BYTES.
    req = trace_request(1)
    req.resource_spans[0].scope_spans[0].spans[0].attributes.add(key="pad").value.string_value = (
        "x" * (_http._DIRECT_BYTES + 1024)
    )
    body = req.SerializeToString()
    assert len(body) > _http._DIRECT_BYTES
    result = http_post(stack, "/v1/traces", body)
    assert result.status == 200
    assert stack.ingestor.batches[-1][1] == body
