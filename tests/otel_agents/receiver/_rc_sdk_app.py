# SPDX-License-Identifier: Apache-2.0
"""RC-15 application: an agent app using ``otel_agents.configure()`` in its own process (a global
provider, ``fork()``, and monkey-patched faults must not leak into the pytest process).

    python -m tests.otel_agents.receiver._rc_sdk_app MODE ENDPOINT

Modes print one JSON line of findings:

* ``faults`` — every hook of ours is made to raise (pricing, dialect normalization, the agent
  metrics processor, the resource detector); the app counts exceptions that reached it.
* ``down``   — the OTLP endpoint is a closed port; per-span app-thread cost, then
  ``force_flush`` / ``shutdown`` durations against their timeouts.
* ``fork``   — the parent forks after configuring; the child records spans and flushes.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import otel_agents
from otel_agents import _metrics, _processors
from otel_agents._cost import PriceBook

RUNS = 100  # agent runs, 3 spans each


class _RaisingPriceBook(PriceBook):
    def price(self, **kwargs: Any) -> Any:  # every inference span reaches it
        raise RuntimeError("injected pricing failure")


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("injected hook failure")


def _run(tag: str, runs: int = RUNS) -> tuple[int, list[float]]:
    """``runs`` agent runs; returns (exceptions that reached the app, per-run seconds)."""
    reached = 0
    times: list[float] = []
    for i in range(runs):
        t = time.perf_counter()
        try:
            with otel_agents.invoke_agent(f"{tag}-agent", conversation_id=f"c{i}"):
                with otel_agents.inference("gpt-4o", provider="openai") as llm:
                    llm.record_usage(input_tokens=100, output_tokens=20)
                with otel_agents.execute_tool(
                    "search", attributes={"llm.token_count.prompt": 5}
                ) as tool:
                    tool.set_result("ok")
        except Exception:
            reached += 1
        times.append(time.perf_counter() - t)
    return reached, times


def main() -> None:
    """Run one mode (see the module docstring)."""
    mode, endpoint = sys.argv[1], sys.argv[2]
    out: dict[str, Any] = {"mode": mode}
    reader = InMemoryMetricReader()
    if mode == "faults":
        os.environ["OTEL_AGENTS_AGENT_CARD"] = "/nonexistent/agent-card.json"
        setattr(_processors, "normalize_attributes", _boom)  # noqa: B010 (injected fault)
        _metrics.AgentMetricsProcessor._record = _boom  # type: ignore[method-assign]
    configured = otel_agents.configure(
        service_name=f"rc15-{mode}",
        endpoint=endpoint,
        protocol="grpc",
        pricebook=_RaisingPriceBook() if mode == "faults" else None,
        meter_provider=MeterProvider(metric_readers=[reader]),
    )
    if mode == "faults":
        from otel_agents._detector import AgentResourceDetector

        try:
            AgentResourceDetector().detect()
            out["detector_raised"] = False
        except Exception:
            out["detector_raised"] = True
        reached, _ = _run("faults")
        try:
            reader.collect()
        except Exception:
            reached += 1
        out["reached_app"] = reached
        out["flushed"] = configured.force_flush(10_000)
        out["spans"] = RUNS * 3
    elif mode == "down":
        reached, times = _run("down", 300)
        times.sort()
        out["reached_app"] = reached
        out["run_p99_ms"] = 1000 * times[int(0.99 * len(times))]
        out["run_max_ms"] = 1000 * times[-1]
        t = time.monotonic()
        out["flushed"] = configured.force_flush(1000)
        out["flush_s"] = time.monotonic() - t
        _run("down", 300)  # queued again: shutdown must not wait for them forever
        t = time.monotonic()
        configured.shutdown()
        out["shutdown_s"] = time.monotonic() - t
    elif mode == "fork":
        reached, _ = _run("parent", 5)
        configured.force_flush(10_000)
        pid = os.fork()
        if pid == 0:  # child: spans go out through the re-initialised exporters
            code = 0
            try:
                child_reached, _ = _run("child", 10)
                code = 3 if child_reached else (0 if configured.force_flush(10_000) else 4)
            except BaseException:
                code = 5
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        out["child_exit"] = os.waitstatus_to_exitcode(status)
        out["reached_app"] = reached
        out["flushed"] = configured.force_flush(10_000)
    configured.shutdown()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
