# SPDX-License-Identifier: Apache-2.0
"""A real HTTP webhook sink on 127.0.0.1 (port 0) for notifier and alerting tests."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Received:
    """One request the sink got."""

    path: str
    headers: dict[str, str]
    body: Any
    at: float


@dataclass
class WebhookSink:
    """Records POSTed JSON; answers with scripted statuses (default 200)."""

    server: ThreadingHTTPServer
    received: list[Received] = field(default_factory=list)
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        """Base URL (``http://127.0.0.1:PORT``)."""
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def respond(self, *statuses: int | tuple[int, dict[str, str]]) -> None:
        """Answer the next requests with these statuses (then 200)."""
        with self.lock:
            for s in statuses:
                self.script.append(s if isinstance(s, tuple) else (s, {}))

    def wait_for(self, n: int, timeout: float = 10.0) -> list[Received]:
        """Poll until ``n`` requests arrived (fail after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= n:
                    return list(self.received)
            time.sleep(0.01)
        with self.lock:
            pytest.fail(f"sink got {len(self.received)} requests, expected {n}")
        raise AssertionError  # unreachable

    def bodies(self) -> list[Any]:
        """The JSON bodies received so far."""
        with self.lock:
            return [r.body for r in self.received]

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> WebhookSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _handler(sink_ref: list[WebhookSink]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            sink = sink_ref[0]
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                body: Any = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")
            with sink.lock:
                sink.received.append(
                    Received(
                        self.path,
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                        time.monotonic(),
                    )
                )
                status, headers = sink.script.pop(0) if sink.script else (200, {})
            payload = b"ok"
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


def start_sink() -> WebhookSink:
    """A running sink; stop it with :meth:`WebhookSink.stop` or use it as a context manager."""
    ref: list[WebhookSink] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(ref))
    sink = WebhookSink(server)
    ref.append(sink)
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    return sink
