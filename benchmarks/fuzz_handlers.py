# SPDX-License-Identifier: Apache-2.0
"""Coverage-guided fuzzing of the receiver's request handlers with atheris (RC-11).

    .venv/bin/python -m benchmarks.fuzz_handlers --seconds 1800 --write   # nightly, 30 min
    .venv/bin/python -m benchmarks.fuzz_handlers --runs 3000 --json       # CI-lite (RC-11 test)

The first input byte picks the entry point, the rest is the request:

* ``0..5`` — ``ExportHandler.handle`` (what both servers call after transport checks) for
  traces / metrics / logs, protobuf or OTLP/JSON;
* ``6``    — a real ``HttpServer`` on 127.0.0.1:0: the fuzzer chooses path, Content-Type,
  Content-Encoding, chunked or fixed length and the body bytes, sent over a raw socket;
* ``7``    — a real ``GrpcServer`` on 127.0.0.1:0: the body as a raw unary call, optionally gzip.

Invariants checked on every input (any violation raises → atheris reports a crash): the handler
never raises; the answer is one of the documented outcomes (HTTP: a parseable ``HTTP/1.1``
status line with a status from the documented set; gRPC: OK / INVALID_ARGUMENT /
RESOURCE_EXHAUSTED / UNAVAILABLE); whatever was stored decodes and re-validates without change
and carries only 16/8-byte non-zero IDs.

The seed corpus is serialized valid requests of many shapes (GenAI agent/inference/tool spans,
events, links, nested attributes, metrics of every type, logs) plus their OTLP/JSON forms.  The
protobuf parser is C (upb), so coverage feedback comes from our Python decoding, validation and
transport code (reliability.md §5.2).  libFuzzer ends the process itself, so the fuzz loop runs in
a child process; this parent reads its summary and exit status and writes the results row
(``--write`` → benchmarks/RESULTS.md, section "Fuzz (RC-11)"; crashers are kept under
``artifacts/fuzz/`` for regression seeds).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts" / "fuzz"
_SIGNALS = ("traces", "metrics", "logs")
_HTTP_OK = {200, 400, 404, 405, 408, 411, 413, 415, 429, 431, 501, 503, 505}


# ------------------------------------------------------------------------------ seeds


def seeds() -> list[bytes]:
    """Valid requests of many shapes, each prefixed with its entry-point selector byte."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import (
        AnyValue,
        ArrayValue,
        KeyValue,
        KeyValueList,
    )
    from opentelemetry.proto.metrics.v1.metrics_pb2 import AGGREGATION_TEMPORALITY_CUMULATIVE
    from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

    from otel_agents.receiver import _otlp_json

    def kv(k: str, v: Any) -> KeyValue:
        if isinstance(v, str):
            return KeyValue(key=k, value=AnyValue(string_value=v))
        if isinstance(v, bool):
            return KeyValue(key=k, value=AnyValue(bool_value=v))
        if isinstance(v, int):
            return KeyValue(key=k, value=AnyValue(int_value=v))
        return KeyValue(key=k, value=AnyValue(double_value=v))

    tid, root = bytes(range(1, 17)), bytes(range(1, 9))
    nested = AnyValue(
        kvlist_value=KeyValueList(
            values=[
                KeyValue(
                    key="messages",
                    value=AnyValue(array_value=ArrayValue(values=[AnyValue(string_value="hi")])),
                )
            ]
        )
    )
    traces = ExportTraceServiceRequest()
    rs = traces.resource_spans.add()
    rs.resource.attributes.extend([kv("service.name", "agent-app")])
    ss = rs.scope_spans.add()
    ss.scope.name = "otel_agents"
    ss.spans.extend(
        [
            Span(
                trace_id=tid,
                span_id=root,
                name="invoke_agent planner",
                kind=Span.SPAN_KIND_INTERNAL,
                start_time_unix_nano=1_700_000_000_000_000_000,
                end_time_unix_nano=1_700_000_001_000_000_000,
                attributes=[
                    kv("gen_ai.operation.name", "invoke_agent"),
                    kv("gen_ai.agent.name", "planner"),
                    kv("gen_ai.conversation.id", "c1"),
                ],
                events=[
                    Span.Event(
                        name="agent.decision",
                        time_unix_nano=1_700_000_000_500_000_000,
                        attributes=[kv("agent.decision.type", "route"), kv("x", 0.5)],
                    )
                ],
            ),
            Span(
                trace_id=tid,
                span_id=bytes(range(2, 10)),
                parent_span_id=root,
                name="chat gpt-4o",
                kind=Span.SPAN_KIND_CLIENT,
                start_time_unix_nano=1_700_000_000_100_000_000,
                end_time_unix_nano=1_700_000_000_900_000_000,
                attributes=[
                    kv("gen_ai.operation.name", "chat"),
                    kv("gen_ai.request.model", "gpt-4o"),
                    kv("gen_ai.provider.name", "openai"),
                    kv("gen_ai.usage.input_tokens", 1200),
                    kv("gen_ai.usage.output_tokens", 300),
                    kv("llm.token_count.prompt", 1200),
                    KeyValue(key="gen_ai.input.messages", value=nested),
                ],
                links=[Span.Link(trace_id=bytes(range(3, 19)), span_id=bytes(range(3, 11)))],
            ),
            Span(
                trace_id=tid,
                span_id=bytes(range(4, 12)),
                parent_span_id=root,
                name="execute_tool web_search",
                attributes=[
                    kv("gen_ai.operation.name", "execute_tool"),
                    kv("gen_ai.tool.name", "web_search"),
                    kv("agent.cost.unpriced", True),
                ],
                status=Status(code=Status.STATUS_CODE_ERROR, message="boom"),
            ),
        ]
    )
    metrics = ExportMetricsServiceRequest()
    m = metrics.resource_metrics.add().scope_metrics.add().metrics
    g = m.add(name="gen_ai.client.token.usage", unit="{token}")
    g.histogram.data_points.add(
        count=2, sum=3.0, bucket_counts=[1, 1], explicit_bounds=[1.0], attributes=[kv("a", "b")]
    )
    s = m.add(name="agent.cost")
    s.sum.is_monotonic = True
    s.sum.aggregation_temporality = AGGREGATION_TEMPORALITY_CUMULATIVE
    s.sum.data_points.add(as_double=0.25, time_unix_nano=1)
    m.add(name="q").gauge.data_points.add(as_int=3)
    logs = ExportLogsServiceRequest()
    lr = logs.resource_logs.add().scope_logs.add().log_records.add()
    lr.body.CopyFrom(nested)
    lr.trace_id, lr.span_id = tid, root
    lr.event_name = "agent.finding"
    out: list[bytes] = []
    for i, msg in enumerate((traces, metrics, logs)):
        out.append(bytes([i]) + msg.SerializeToString())
        out.append(bytes([3 + i]) + _otlp_json.encode(msg))
    body = traces.SerializeToString()
    out.append(b"\x06" + bytes([0, 0, 0]) + body)  # HTTP: path 0, protobuf, identity, fixed
    out.append(b"\x07" + b"\x00" + body)  # gRPC, no compression
    return out


# ------------------------------------------------------------------------------ target


class _Harness:
    """The servers and checks used by the fuzz target (built once per process)."""

    def __init__(self) -> None:
        from google.protobuf.message import Message

        from otel_agents.receiver import (
            ExportHandler,
            GrpcConfig,
            GrpcServer,
            HttpConfig,
            HttpServer,
            LimitsConfig,
        )
        from otel_agents.receiver._common import SIGNALS, Outcome
        from otel_agents.receiver._validate import validate

        limits = LimitsConfig(max_request_bytes=1 << 20)
        harness = self

        class CheckingIngestor:
            """Stores nothing; asserts every stored payload is clean (re-validates unchanged)."""

            def ingest(self, signal: str, request: Message, payload: bytes, items: int) -> None:
                again = SIGNALS[signal].request_class.FromString(payload)
                result = validate(signal, again, limits)
                assert (result.rejected, result.modified, result.accepted) == (0, False, items)
                if signal == "traces":
                    for rs in again.resource_spans:  # type: ignore[attr-defined]
                        for ss in rs.scope_spans:
                            for sp in ss.spans:
                                assert len(sp.trace_id) == 16 and any(sp.trace_id)
                                assert len(sp.span_id) == 8 and any(sp.span_id)
                harness.stored += items

        self.stored = 0
        self.Outcome = Outcome
        self.handler = ExportHandler(CheckingIngestor(), limits)  # type: ignore[arg-type]
        self.http = HttpServer(HttpConfig(endpoint="127.0.0.1:0"), self.handler)
        self.http.start()
        self.grpc = GrpcServer(GrpcConfig(endpoint="127.0.0.1:0"), self.handler)
        self.grpc.start()
        import grpc

        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.grpc.port}")
        self.calls = {
            "traces": self.channel.unary_unary(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
            ),
            "metrics": self.channel.unary_unary(
                "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
            ),
            "logs": self.channel.unary_unary(
                "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
            ),
        }

    def direct(self, selector: int, body: bytes) -> None:
        signal = _SIGNALS[selector % 3]
        answer = self.handler.handle(signal, "fuzz", body, json_body=selector >= 3)  # type: ignore[arg-type]
        o = self.Outcome
        assert answer.outcome in (o.OK, o.PARTIAL, o.INVALID), answer

    def http_request(self, data: bytes) -> None:
        if len(data) < 3:
            return
        path = ("/v1/traces", "/v1/metrics", "/v1/logs", "/v1/x")[data[0] % 4]
        ctype = ("application/x-protobuf", "application/json", "text/plain", "")[data[1] % 4]
        enc = ("", "gzip", "identity", "zstd", "deflate")[data[2] % 5]
        chunked = data[2] >= 128
        body = data[3:]
        if enc == "gzip" and data[1] >= 128:
            import gzip

            body = gzip.compress(body)
        head = [f"POST {path} HTTP/1.1", "Host: fuzz", "Connection: close"]
        if ctype:
            head.append(f"Content-Type: {ctype}")
        if enc:
            head.append(f"Content-Encoding: {enc}")
        if chunked:
            head.append("Transfer-Encoding: chunked")
            payload = (
                f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n" if body else b"0\r\n\r\n"
            )
        else:
            head.append(f"Content-Length: {len(body)}")
            payload = body
        raw = ("\r\n".join(head) + "\r\n\r\n").encode() + payload
        with socket.create_connection(("127.0.0.1", self.http.port), timeout=10) as s:
            s.sendall(raw)
            s.shutdown(socket.SHUT_WR)
            reply = b""
            while len(reply) < 65536 and (chunk := s.recv(65536)):
                reply += chunk
        m = re.match(rb"HTTP/1\.1 (\d{3}) ", reply)
        assert m is not None, reply[:200]
        assert int(m.group(1)) in _HTTP_OK, reply[:200]

    def grpc_call(self, data: bytes) -> None:
        import grpc

        if not data:
            return
        signal = _SIGNALS[data[0] % 3]
        compression = grpc.Compression.Gzip if data[0] >= 128 else grpc.Compression.NoCompression
        try:
            self.calls[signal](data[1:], timeout=10, compression=compression)
        except grpc.RpcError as err:
            code = err.code()  # type: ignore[attr-defined]
            allowed = (
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.StatusCode.UNAVAILABLE,
            )
            assert code in allowed, (code, err.details())  # type: ignore[attr-defined]

    def one(self, data: bytes) -> None:
        if not data:
            return
        selector, body = data[0] % 8, data[1:]
        if selector < 6:
            self.direct(selector, body)
        elif selector == 6:
            self.http_request(body)
        else:
            self.grpc_call(body)


def _child(args: argparse.Namespace) -> None:
    import atheris  # type: ignore[import-untyped]

    with atheris.instrument_imports(include=["otel_agents"]):
        from otel_agents.receiver import _common, _grpc, _http, _otlp_json, _validate  # noqa: F401

    harness = _Harness()
    atheris.Setup(
        [
            sys.argv[0],
            f"-runs={args.runs}" if args.runs else "-runs=-1",
            f"-max_total_time={int(args.seconds)}" if args.seconds else "-max_total_time=0",
            "-print_final_stats=1",
            f"-artifact_prefix={ARTIFACTS}/",
            "-rss_limit_mb=2048",
            "-timeout=20",
            args.corpus,
        ],
        harness.one,
    )
    atheris.Fuzz()


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the fuzz child and summarise libFuzzer's report."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="otel-agents-fuzz-") as corpus:
        for i, seed in enumerate(seeds()):
            Path(corpus, f"seed-{i:02d}").write_bytes(seed)
        before = set(ARTIFACTS.iterdir())
        started = time.monotonic()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.fuzz_handlers",
                "--child",
                f"--runs={args.runs}",
                f"--seconds={args.seconds}",
                f"--corpus={corpus}",
            ],
            cwd=ROOT,
            capture_output=True,
            timeout=(args.seconds or 600) + 120,
            check=False,
        )
        corpus_size = len(os.listdir(corpus))
    log = proc.stderr.decode(errors="replace")
    done = re.findall(r"#(\d+)\s+DONE\s+cov: (\d+) ft: (\d+)", log)
    runs = (
        int(re.findall(r"stat::number_of_executed_units: (\d+)", log)[-1]) if "stat::" in log else 0
    )
    crashers = sorted(str(p) for p in set(ARTIFACTS.iterdir()) - before)
    return {
        "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "inputs": runs,
        "seconds": round(time.monotonic() - started, 1),
        "coverage": int(done[-1][1]) if done else None,
        "features": int(done[-1][2]) if done else None,
        "corpus": corpus_size,
        "exit_code": proc.returncode,
        "crashers": crashers,
        "ok": proc.returncode == 0 and not crashers,
        "log_tail": "" if proc.returncode == 0 else log[-3000:],
    }


def write_row(res: dict[str, Any]) -> None:
    """Append the run to benchmarks/RESULTS.md under "Fuzz (RC-11)"."""
    path = ROOT / "benchmarks" / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if "## Fuzz (RC-11)" not in text:
        text = text.rstrip("\n") + (
            "\n\n## Fuzz (RC-11)\n\n`python -m benchmarks.fuzz_handlers --seconds N --write` "
            "(atheris over ExportHandler.handle, the HTTP server and the gRPC server).\n\n"
            "| date (UTC) | inputs | seconds | coverage | features | corpus | crashers | verdict |\n"
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n"
        )
    row = (
        f"| {res['date']} | {res['inputs']} | {res['seconds']} | {res['coverage']} | "
        f"{res['features']} | {res['corpus']} | {len(res['crashers'])} | "
        f"{'pass' if res['ok'] else 'FAIL (exit ' + str(res['exit_code']) + ')'} |\n"
    )
    head, _, tail = text.partition("## Fuzz (RC-11)")
    # The next section starts at a heading or at another script's <!-- marker -->.
    rest = re.split(r"\n(?=## |<!-- )", tail, maxsplit=1)
    section = rest[0].rstrip("\n") + "\n" + row
    path.write_text(head + "## Fuzz (RC-11)" + section + ("\n" + rest[1] if len(rest) > 1 else ""))


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; 0 when the run found no crash."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=0, help="stop after N inputs (0 = no limit)")
    p.add_argument("--seconds", type=float, default=0, help="stop after N seconds (0 = no limit)")
    p.add_argument("--write", action="store_true", help="append a row to benchmarks/RESULTS.md")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--corpus", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child(args)
        return 0
    if not args.runs and not args.seconds:
        args.seconds = 60.0  # bounded by default
    res = run(args)
    if args.write:
        write_row(res)
    print(json.dumps(res) if args.json else "\n".join(f"{k:10} {v}" for k, v in res.items()))
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
