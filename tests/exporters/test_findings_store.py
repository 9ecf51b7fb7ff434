# SPDX-License-Identifier: Apache-2.0
"""Findings store: SQLite history, queries, keyset pagination, retention, API."""

from __future__ import annotations

from pathlib import Path

from otel_agents.exporters import FACTORIES
from otel_agents.exporters._findings_store import FindingsQuery, FindingsStore, FindingsStoreConfig

from otel_agents._component import Finding
from tests.processors._host import TestHost


def _finding(
    i: int, *, kind: str = "anomaly", agent: str = "researcher", at: float = 0.0
) -> Finding:
    return Finding(
        kind=kind,
        key=f"agent={agent},n={i}",
        severity="critical" if i % 5 == 0 else "warning",
        score=50.0 + i % 50,
        title=f"finding {i}",
        explanation=f"explanation {i}",
        labels={"agent": agent, "tool": "web_search"},
        value=float(i),
        baseline=1.0,
        trace_ids=("ab" * 16,),
        observed_at=at or 1_700_000_000.0 + i,
    )


def _store(tmp_path: Path, **cfg: object) -> tuple[TestHost, FindingsStore]:
    host = TestHost(tmp_path)
    store = FindingsStore(FindingsStoreConfig(**cfg))  # type: ignore[arg-type]
    store.start(host)
    return host, store


def test_findings_from_host_are_stored_and_queryable(tmp_path: Path) -> None:
    """Emitted findings land in SQLite on tick and come back newest first with all fields."""
    host, store = _store(tmp_path)
    for i in range(10):
        host.emit_finding(_finding(i, kind="tool_loop" if i % 2 else "anomaly"))
    store.tick(host.now())
    rows, cursor = store.query(FindingsQuery(kind=["tool_loop"]))
    assert [r["title"] for r in rows] == [f"finding {i}" for i in (9, 7, 5, 3, 1)]
    assert cursor is None
    r = rows[0]
    assert r["labels"] == {"agent": "researcher", "tool": "web_search"}
    assert r["trace_ids"] == ["ab" * 16] and r["value"] == 9.0 and r["baseline"] == 1.0
    assert (tmp_path / "findings.db").exists()


def test_filters_by_agent_severity_and_time(tmp_path: Path) -> None:
    """agent, severity and [since, until) filters combine."""
    host, store = _store(tmp_path)
    for i in range(20):
        host.emit_finding(_finding(i, agent="planner" if i < 10 else "researcher"))
    store.flush()
    t0 = 1_700_000_000.0
    rows, _ = store.query(FindingsQuery(agent="planner", severity=["critical"]))
    assert sorted(r["value"] for r in rows) == [0.0, 5.0]
    rows, _ = store.query(FindingsQuery(since=t0 + 12, until=t0 + 15))
    assert sorted(r["value"] for r in rows) == [12.0, 13.0, 14.0]


def test_keyset_pagination_visits_every_row_once(tmp_path: Path) -> None:
    """Paging with the returned cursor yields every finding exactly once, even while adding."""
    host, store = _store(tmp_path)
    for i in range(250):
        host.emit_finding(_finding(i))
    store.flush()
    seen: list[float] = []
    cursor = None
    for page in range(10):  # bounded
        rows, cursor = store.query(FindingsQuery(limit=100, cursor=cursor))
        seen += [r["value"] for r in rows]
        if page == 0:  # new findings during paging do not shift later pages
            host.emit_finding(_finding(999))
            store.flush()
        if cursor is None:
            break
    assert sorted(seen) == [float(i) for i in range(250)]


def test_retention_by_age_and_rows(tmp_path: Path) -> None:
    """Rows older than retention and beyond max_rows are deleted, oldest first."""
    host, store = _store(tmp_path, retention=100.0, max_rows=5)
    t0 = 1_700_000_000.0
    for i in range(12):
        host.emit_finding(_finding(i, at=t0 + i * 10))
    store.flush()
    store.apply_retention(t0 + 150)  # keeps observed_at >= t0 + 50 → 7 rows, then cap at 5
    rows, _ = store.query(FindingsQuery())
    assert sorted(r["value"] for r in rows) == [7.0, 8.0, 9.0, 10.0, 11.0]
    assert store.count() == 5 and store.deleted == 7


def test_history_survives_restart(tmp_path: Path) -> None:
    """A new store on the same file sees earlier findings."""
    host, store = _store(tmp_path)
    host.emit_finding(_finding(1))
    store.shutdown()
    _, again = _store(tmp_path)
    assert again.count() == 1


def test_api_route(tmp_path: Path) -> None:
    """/api/v1/findings filters and pages; bad numbers are 400."""
    host, _ = _store(tmp_path)
    for i in range(3):
        host.emit_finding(_finding(i))
    status, body = host.get("/api/v1/findings", {"limit": ["2"], "kind": ["anomaly,tool_loop"]})
    assert status == 200 and len(body["findings"]) == 2 and body["next_cursor"] is not None
    status, body = host.get("/api/v1/findings", {"cursor": [str(body["next_cursor"])]})
    assert status == 200 and [f["value"] for f in body["findings"]] == [0.0]
    assert host.get("/api/v1/findings", {"limit": ["x"]})[0] == 400
    assert host.routes["/api/v1/findings"]("DELETE", {}, None)[0] == 405


def test_factory_registered(tmp_path: Path) -> None:
    """The findings_store type is registered with its config class."""
    f = FACTORIES["findings_store"]
    assert f.config_class is FindingsStoreConfig
    assert isinstance(f.create(FindingsStoreConfig(), ""), FindingsStore)
