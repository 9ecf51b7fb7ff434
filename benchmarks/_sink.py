# SPDX-License-Identifier: Apache-2.0
"""A cheap OTLP/gRPC sink for benchmarks: answers every Export with an empty (= full success)
response without parsing, counts requests and bytes. ``python -m benchmarks._sink PORTFILE``
binds 127.0.0.1:0, writes the port to PORTFILE, serves until SIGTERM."""

from __future__ import annotations

import signal
import sys
import threading
from concurrent import futures

import grpc

_SERVICES = ("trace.v1.TraceService", "metrics.v1.MetricsService", "logs.v1.LogsService")


def main() -> None:
    port_file = sys.argv[1]
    counts = {"requests": 0, "bytes": 0}
    lock = threading.Lock()

    def export(request: bytes, context: grpc.ServicerContext) -> bytes:
        with lock:
            counts["requests"] += 1
            counts["bytes"] += len(request)
        return b""

    handlers = [
        grpc.method_handlers_generic_handler(
            f"opentelemetry.proto.collector.{svc}",
            {"Export": grpc.unary_unary_rpc_method_handler(export)},
        )
        for svc in _SERVICES
    ]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8),
        handlers=handlers,
        options=[("grpc.max_receive_message_length", 64 << 20)],
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with open(port_file, "w") as f:
        f.write(str(port))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait(3600)
    server.stop(0)
    print(f"sink requests={counts['requests']} bytes={counts['bytes']}", file=sys.stderr)


if __name__ == "__main__":
    main()
