# SPDX-License-Identifier: Apache-2.0
"""The receiver's web page (otel_agents/receiver/webpage.html) in real headless Chromium.

First against a local server answering the three API routes with fixed JSON (so the rendering
is checked exactly, including hostile strings), then against a real receiver fed by the demo.
Screenshots go to artifacts/ (kept by CI).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ARTIFACTS, AgentStack, Chromium, http_get, wait_until

pytestmark = pytest.mark.e2e

PAGE = Path(__file__).resolve().parents[2] / "otel_agents" / "receiver" / "webpage.html"
TRACE_A = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACE_B = "00f067aa0ba902b7a3ce929d0e0e4736"
HOSTILE = '<img src=x onerror="document.title=1">'

FINDINGS = [
    {
        "kind": "bottleneck",
        "key": "agent=researcher,tool=web_search",
        "severity": "warning",
        "score": 62.0,
        "title": "web_search holds 62% of the critical path",
        "explanation": "Across 40 traces, web_search spent 6.2 s of 10 s end-to-end.",
        "labels": {"agent": "researcher", "tool": "web_search"},
        "value": 0.62,
        "baseline": None,
        "trace_ids": [TRACE_A, "not-a-trace-id"],
        "observed_at": 1764070000.0,
    },
    {
        "kind": "tool_loop",
        "key": "agent=researcher,tool=fetch",
        "severity": "critical",
        "score": 91.0,
        "title": HOSTILE,
        "explanation": "fetch was called 12 times with the same arguments.",
        "labels": {"agent": "researcher"},
        "value": 12.0,
        "baseline": 1.0,
        "trace_ids": [TRACE_B],
        "observed_at": 1764070100.0,
    },
]
AGENTS = {  # the shape of the receiver's /api/v1/agents
    "graph": {
        "nodes": [
            {"id": "planner", "type": "agent"},
            {"id": "researcher", "type": "agent"},
            {"id": "web_search", "type": "tool"},
        ],
        "edges": [
            {
                "client": "planner",
                "server": "researcher",
                "connection_type": "a2a",
                "calls": 40,
                "failed": 3,
                "mean_seconds": 2.1,
            },
            {
                "client": "researcher",
                "server": "web_search",
                "connection_type": "tool",
                "calls": 120,
                "failed": 0,
                "mean_seconds": 0.4,
            },
            {
                "client": "researcher",
                "server": "researcher",
                "connection_type": "a2a",
                "calls": 2,
                "failed": 0,
                "mean_seconds": 0.1,
            },
        ],
    },
    "cost_by_agent": [
        {
            "agent": "planner",
            "cost_usd": 0.0812,
            "input_tokens": 41000,
            "output_tokens": 11000,
            "calls": 80,
            "unpriced_calls": 0,
        },
        {
            "agent": "researcher",
            "cost_usd": 1.9375,
            "input_tokens": 290000,
            "output_tokens": 20000,
            "calls": 160,
            "unpriced_calls": 4,
        },
    ],
    "cost_by_model": [
        {
            "agent": "researcher",
            "model": "gpt-4o",
            "cost_usd": 1.9375,
            "input_tokens": 290000,
            "output_tokens": 20000,
            "calls": 160,
            "unpriced_calls": 0,
        },
    ],
}
ALERTS = [  # items of the receiver's /api/v1/alerts {"alerts": [...]}
    {
        "alertname": "AgentToolLoop",
        "severity": "critical",
        "labels": {"alertname": "AgentToolLoop", "severity": "critical", "agent": "researcher"},
        "annotations": {"summary": "researcher loops on fetch"},
        "state": "firing",
    }
]


class Element:
    """A parsed start tag."""

    def __init__(self, tag: str, attrs: dict[str, str]) -> None:
        self.tag, self.attrs, self.text = tag, attrs, ""


class _Dom(HTMLParser):
    """Minimal DOM: every element with its attributes and its direct-and-nested text."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[Element] = []
        self._open: list[Element] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        el = Element(tag, {k: v or "" for k, v in attrs})
        self.elements.append(el)
        if tag not in ("meta", "link", "br", "img", "input", "path", "circle", "line"):
            self._open.append(el)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i].tag == tag:
                del self._open[i:]
                break

    def handle_data(self, data: str) -> None:
        for el in self._open:
            el.text += data

    def find(self, tag: str | None = None, **attrs: str) -> list[Element]:
        """Elements matching a tag and attribute values (``class_`` matches one class)."""
        out = []
        for el in self.elements:
            if tag and el.tag != tag:
                continue
            ok = True
            for key, value in attrs.items():
                if key == "class_":
                    ok &= value in el.attrs.get("class", "").split()
                else:
                    ok &= el.attrs.get(key.replace("_", "-")) == value
            if ok:
                out.append(el)
        return out


def parse(dom: str) -> _Dom:
    """Parses a DOM dump."""
    p = _Dom()
    p.feed(dom)
    return p


@pytest.fixture
def fixture_server() -> Iterator[dict[str, Any]]:
    """Serves the page at / and fixed JSON at /api/v1/* on an ephemeral loopback port."""
    routes: dict[str, Any] = {
        "/api/v1/findings": (200, {"findings": FINDINGS, "next_cursor": None}),
        "/api/v1/agents": (200, AGENTS),
        "/api/v1/alerts": (200, {"alerts": ALERTS}),
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/":
                status, body, ctype = 200, PAGE.read_bytes(), "text/html; charset=utf-8"
            elif path in routes:
                status, data = routes[path]
                body, ctype = json.dumps(data).encode(), "application/json"
            else:
                status, body, ctype = 404, b"{}", "application/json"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"url": f"http://127.0.0.1:{server.server_address[1]}", "routes": routes}
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_page_renders_findings_graph_cost_and_alerts(
    chromium: Chromium, fixture_server: dict[str, Any]
) -> None:
    """The page shows every finding, the agent graph, cost per agent and alerts, without console output."""
    url = fixture_server["url"] + "/?jaeger=http://jaeger.example:16686"
    result = chromium.dump_dom(url)
    assert result.console == []
    dom = parse(result.dom)
    body = dom.find("body")[0]
    assert body.attrs["data-state"] == "ready" and body.attrs["data-errors"] == "0"

    rows = dom.find("tr", class_="finding")
    assert [r.attrs["data-kind"] for r in rows] == ["tool_loop", "bottleneck"]  # newest first
    assert "web_search holds 62% of the critical path" in rows[1].text
    assert "6.2 s of 10 s" in rows[1].text
    links = dom.find("a", class_="trace-link")
    assert [a.attrs["data-trace-id"] for a in links] == [TRACE_B, TRACE_A]
    assert links[1].attrs["href"] == f"http://jaeger.example:16686/trace/{TRACE_A}"
    assert "not-a-trace-id" not in result.dom  # invalid IDs are never turned into links

    agents = dom.find("tr", class_="agent")
    assert [a.attrs["data-agent"] for a in agents] == ["researcher", "planner"]  # by cost
    assert (
        "1.94" in agents[0].text
        and "290,000 / 20,000" in agents[0].text
        and "0.0812" in agents[1].text
    )
    assert agents[0].attrs["title"] == "gpt-4o: $1.94 (160 calls)"

    nodes = {n.attrs["data-name"]: n.attrs["class"] for n in dom.find("g", class_="node")}
    assert nodes == {"planner": "node agent", "researcher": "node agent", "web_search": "node tool"}
    edges = {
        (e.attrs["data-from"], e.attrs["data-to"]): e.attrs["class"]
        for e in dom.find("g", class_="edge")
    }
    assert edges == {
        ("planner", "researcher"): "edge failed",
        ("researcher", "web_search"): "edge",
        ("researcher", "researcher"): "edge",
    }

    alerts = dom.find("tr", class_="alert")
    assert len(alerts) == 1 and "AgentToolLoop" in alerts[0].text and "firing" in alerts[0].text


def test_page_renders_hostile_strings_as_text(
    chromium: Chromium, fixture_server: dict[str, Any]
) -> None:
    """Markup inside API data stays text: no element is created from it and no handler runs."""
    result = chromium.dump_dom(fixture_server["url"] + "/")
    dom = parse(result.dom)
    assert dom.find("img") == []
    titles = [el.text for el in dom.find("div", class_="finding-title")]
    assert HOSTILE in titles
    assert dom.find("title")[0].text == "otel-agents receiver"  # the onerror never ran
    assert result.console == []


def test_page_reports_api_failures_without_console_errors(
    chromium: Chromium, fixture_server: dict[str, Any]
) -> None:
    """When the API fails the page says so in its status line instead of throwing."""
    routes = fixture_server["routes"]
    routes["/api/v1/findings"] = (500, {"error": "boom"})
    routes["/api/v1/agents"] = (503, {"error": "starting"})
    routes["/api/v1/alerts"] = (500, {"error": "boom"})
    result = chromium.dump_dom(fixture_server["url"] + "/")
    dom = parse(result.dom)
    assert dom.find("body")[0].attrs["data-state"] == "error"
    status = dom.find(id="status")[0]
    assert "HTTP 500" in status.text and "HTTP 503" in status.text
    assert dom.find("tr", class_="finding") == []
    # A failed fetch must not be shown as "No findings yet".
    assert dom.find(id="findings-empty")[0].attrs.get("hidden") is not None
    assert result.console == []


def test_page_screenshot_with_fixture_data(
    chromium: Chromium, fixture_server: dict[str, Any]
) -> None:
    """A screenshot of the rendered page is kept as a CI artifact."""
    shot = ARTIFACTS / "webpage-fixture.png"
    result = chromium.screenshot(fixture_server["url"] + "/", shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.console == []


def test_receiver_serves_the_page_with_the_demo_findings(
    chromium: Chromium, agent_stack: AgentStack
) -> None:
    """The real receiver serves the page at / and, fed by the demo, the page lists its findings."""
    admin = agent_stack.receiver.admin_url
    status, page = http_get(admin + "/")
    assert status == 200 and page == PAGE.read_bytes()

    def findings() -> list[Any]:
        status, body = http_get(admin + "/api/v1/findings")
        assert status == 200, body[:300]
        data = json.loads(body)
        return data if isinstance(data, list) else data.get("findings", [])

    expected = wait_until(findings, timeout=30, what="the demo's findings")
    result = chromium.dump_dom(admin + "/", budget_ms=5000)
    chromium.screenshot(admin + "/", ARTIFACTS / "webpage-receiver.png", budget_ms=5000)
    assert result.console == []
    dom = parse(result.dom)
    assert dom.find("body")[0].attrs["data-state"] == "ready"
    assert dom.find("body")[0].attrs["data-errors"] == "0"
    shown = {r.attrs["data-kind"] for r in dom.find("tr", class_="finding")}
    assert {f["kind"] for f in expected} <= shown
    nodes = {n.attrs["data-name"] for n in dom.find("g", class_="node")}
    assert {"planner", "researcher", "web_search"} <= nodes
    agents = {a.attrs["data-agent"]: a for a in dom.find("tr", class_="agent")}
    assert {"planner", "researcher"} <= set(agents)
    costs = [float(el.text) for el in dom.find("td", class_="cost")]
    assert costs and all(c > 0 for c in costs)
