// SPDX-License-Identifier: Apache-2.0
//
// An agent written in JavaScript, traced with the official OpenTelemetry JS SDK and its
// OTLP/HTTP protobuf exporter, using the GenAI semantic conventions. Used by
// tests/e2e/test_js_exporter.py to show the receiver analyses and forwards traces from a
// client it did not write.
//
// Env: OTLP_TRACES_URL (e.g. http://127.0.0.1:4318/v1/traces), TRACES (default 4).
// Prints {"trace_ids": [...], "spans": n} on stdout; exits 1 if any export failed.

import { context, trace, SpanKind, SpanStatusCode } from "@opentelemetry/api";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-proto";
import { defaultResource, resourceFromAttributes } from "@opentelemetry/resources";
import { BatchSpanProcessor, TracerProvider } from "@opentelemetry/sdk-trace";

const url = process.env.OTLP_TRACES_URL;
if (!url) {
  console.error("OTLP_TRACES_URL is required");
  process.exit(2);
}
const traces = Number(process.env.TRACES || "4");

// Counts export outcomes so the process exit code says whether the receiver took everything.
class CountingExporter {
  constructor(inner) {
    this.inner = inner;
    this.failed = 0;
    this.exported = 0;
  }
  export(spans, done) {
    this.inner.export(spans, (result) => {
      if (result.code === 0) this.exported += spans.length;
      else this.failed += spans.length;
      done(result);
    });
  }
  shutdown() { return this.inner.shutdown(); }
  forceFlush() { return this.inner.forceFlush ? this.inner.forceFlush() : Promise.resolve(); }
}

const exporter = new CountingExporter(new OTLPTraceExporter({ url, compression: "gzip", timeoutMillis: 10000 }));
const provider = new TracerProvider({
  // defaultResource() carries telemetry.sdk.{name,language,version}.
  resource: defaultResource().merge(resourceFromAttributes({ "service.name": "js-agent", "service.version": "1.0.0" })),
  spanProcessors: [new BatchSpanProcessor({ exporter, scheduledDelayMillis: 200 })],
});
const tracer = provider.getTracer("otel-agents-e2e-js", "1.0.0");
const AGENT = "js-planner";

function child(parent, name, kind, attributes, ms, error) {
  const ctx = trace.setSpan(context.active(), parent);
  const start = Date.now();
  const span = tracer.startSpan(name, { kind, attributes, startTime: start }, ctx);
  if (error) {
    span.setAttribute("error.type", error);
    span.setStatus({ code: SpanStatusCode.ERROR, message: error });
  }
  span.end(start + ms);
}

const traceIds = [];
for (let i = 0; i < traces; i++) {
  const start = Date.now();
  const root = tracer.startSpan(`invoke_agent ${AGENT}`, {
    kind: SpanKind.INTERNAL,
    startTime: start,
    attributes: {
      "gen_ai.operation.name": "invoke_agent",
      "gen_ai.agent.name": AGENT,
      "gen_ai.agent.id": "js-planner-1",
      "gen_ai.conversation.id": `conv-${i}`,
    },
  });
  traceIds.push(root.spanContext().traceId);
  child(root, "chat gpt-4o", SpanKind.CLIENT, {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.response.model": "gpt-4o-2024-08-06",
    "gen_ai.agent.name": AGENT,
    "gen_ai.usage.input_tokens": 1200,
    "gen_ai.usage.output_tokens": 300,
  }, 40);
  // Every other run the search tool fails.
  child(root, "execute_tool web_search", SpanKind.INTERNAL, {
    "gen_ai.operation.name": "execute_tool",
    "gen_ai.tool.name": "web_search",
    "gen_ai.tool.type": "function",
    "gen_ai.agent.name": AGENT,
  }, 25, i % 2 === 1 ? "TimeoutError" : undefined);
  root.end(start + 80);
}

await provider.forceFlush();
await provider.shutdown();
process.stdout.write(JSON.stringify({ trace_ids: traceIds, spans: exporter.exported, failed: exporter.failed }) + "\n");
process.exit(exporter.failed ? 1 : 0);
