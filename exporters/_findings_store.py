# SPDX-License-Identifier: Apache-2.0
"""``findings_store``: queryable history of findings in SQLite, with retention.

Findings arrive through ``Host.subscribe_findings`` (any thread), are buffered, and are written
in one transaction per tick on the pipeline thread.  Retention is by age and by row count
(oldest first).  ``/api/v1/findings`` queries by kind, agent, severity and time range, newest
first, with keyset pagination (``cursor`` = the last ``id`` seen; stable while rows are added).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from otel_agents._component import ApiResponse, Component, Finding, Host
from otel_agents._configtypes import DURATION

__all__ = ["FindingsQuery", "FindingsStore", "FindingsStoreConfig"]

_log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS findings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    observed_at REAL NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    severity TEXT NOT NULL,
    score REAL NOT NULL,
    agent TEXT NOT NULL,
    title TEXT NOT NULL,
    explanation TEXT NOT NULL,
    labels TEXT NOT NULL,
    value REAL,
    baseline REAL,
    trace_ids TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS findings_time ON findings (observed_at);
CREATE INDEX IF NOT EXISTS findings_kind ON findings (kind, id);
CREATE INDEX IF NOT EXISTS findings_agent ON findings (agent, id);
"""
_MAX_LIMIT = 1000


@dataclasses.dataclass(frozen=True)
class FindingsStoreConfig:
    """Findings store settings.

    Attributes:
        path: database file; relative paths and the default live in the receiver's data dir.
        retention: findings older than this are deleted.
        max_rows: at most this many findings are kept (oldest deleted first).
        api: serve ``/api/v1/findings``.
    """

    path: str = "findings.db"
    retention: float = dataclasses.field(default=7 * 86400.0, metadata=DURATION)
    max_rows: int = 100_000
    api: bool = True

    def validate(self) -> list[str]:
        """Problems with the values."""
        out = []
        if self.max_rows < 1:
            out.append("max_rows: must be at least 1")
        if self.retention <= 0:
            out.append("retention: must be positive")
        return out


@dataclasses.dataclass(frozen=True)
class FindingsQuery:
    """Filters for :meth:`FindingsStore.query` (``None`` = any)."""

    kind: Sequence[str] | None = None
    agent: str | None = None
    severity: Sequence[str] | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 100
    cursor: int | None = None


class FindingsStore(Component):
    """The ``findings_store`` sink."""

    def __init__(self, config: FindingsStoreConfig, name: str = "") -> None:
        self.config = config
        self.name = name
        self._buffer: list[Finding] = []
        self._buf_lock = threading.Lock()
        self._db_lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._host: Host | None = None
        self.written = 0
        self.deleted = 0

    # -- Component ---------------------------------------------------------------------------

    def start(self, host: Host) -> None:
        """Open the database, subscribe to findings, register the API route."""
        self._host = host
        path = Path(self.config.path)
        if not path.is_absolute():
            path = Path(host.data_dir) / path
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        self._db = db
        host.subscribe_findings(self.add)
        if self.config.api:
            host.register_api("/api/v1/findings", self._api)

    def add(self, finding: Finding) -> None:
        """Buffer a finding (called by the host from any component)."""
        with self._buf_lock:
            self._buffer.append(finding)

    def tick(self, now: float) -> None:
        """Write buffered findings and apply retention."""
        self.flush()
        self.apply_retention(now)

    def shutdown(self) -> None:
        """Write what is buffered and close."""
        self.flush()
        with self._db_lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- storage -----------------------------------------------------------------------------

    def flush(self) -> int:
        """Write buffered findings in one transaction; returns how many."""
        with self._buf_lock:
            batch, self._buffer = self._buffer, []
        if not batch:
            return 0
        rows = [
            (
                f.observed_at, f.kind, f.key, f.severity, float(f.score),
                str(f.labels.get("agent", "")), f.title, f.explanation,
                json.dumps(dict(f.labels), sort_keys=True), f.value, f.baseline,
                json.dumps(list(f.trace_ids)),
            )
            for f in batch
        ]  # fmt: skip
        with self._db_lock:
            if self._db is None:
                return 0
            try:
                with self._db:
                    self._db.execute("BEGIN")
                    self._db.executemany(
                        "INSERT INTO findings (observed_at, kind, key, severity, score, agent, "
                        "title, explanation, labels, value, baseline, trace_ids) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        rows,
                    )
            except sqlite3.Error:
                _log.exception("writing %d findings failed; they are dropped", len(rows))
                return 0
        self.written += len(rows)
        return len(rows)

    def apply_retention(self, now: float) -> int:
        """Delete findings beyond the age and row limits; returns how many."""
        with self._db_lock:
            if self._db is None:
                return 0
            try:
                cur = self._db.execute(
                    "DELETE FROM findings WHERE observed_at < ?", (now - self.config.retention,)
                )
                n = cur.rowcount
                cur = self._db.execute(
                    "DELETE FROM findings WHERE id <= (SELECT id FROM findings ORDER BY id DESC "
                    "LIMIT 1 OFFSET ?)",
                    (self.config.max_rows,),
                )
                n += cur.rowcount
            except sqlite3.Error:
                _log.exception("findings retention failed")
                return 0
        self.deleted += n
        return n

    def query(self, q: FindingsQuery) -> tuple[list[dict[str, Any]], int | None]:
        """Findings matching ``q``, newest first; and the cursor of the next page (or None)."""
        where: list[str] = []
        args: list[str | float | int] = []
        if q.kind:
            where.append(f"kind IN ({','.join('?' * len(q.kind))})")
            args += list(q.kind)
        if q.severity:
            where.append(f"severity IN ({','.join('?' * len(q.severity))})")
            args += list(q.severity)
        if q.agent is not None:
            where.append("agent = ?")
            args.append(q.agent)
        if q.since is not None:
            where.append("observed_at >= ?")
            args.append(q.since)
        if q.until is not None:
            where.append("observed_at < ?")
            args.append(q.until)
        if q.cursor is not None:
            where.append("id < ?")
            args.append(q.cursor)
        limit = max(1, min(q.limit, _MAX_LIMIT))
        sql = (
            "SELECT id, observed_at, kind, key, severity, score, title, explanation, labels, "
            "value, baseline, trace_ids FROM findings"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY id DESC LIMIT ?"
        )
        with self._db_lock:
            if self._db is None:
                return [], None
            rows = self._db.execute(sql, [*args, limit + 1]).fetchall()
        out = [
            {
                "id": r[0], "observed_at": r[1], "kind": r[2], "key": r[3], "severity": r[4],
                "score": r[5], "title": r[6], "explanation": r[7], "labels": json.loads(r[8]),
                "value": r[9], "baseline": r[10], "trace_ids": json.loads(r[11]),
            }
            for r in rows[:limit]
        ]  # fmt: skip
        return out, (out[-1]["id"] if len(rows) > limit else None)

    def count(self) -> int:
        """Rows stored."""
        with self._db_lock:
            if self._db is None:
                return 0
            return int(self._db.execute("SELECT COUNT(*) FROM findings").fetchone()[0])

    # -- API ---------------------------------------------------------------------------------

    def _api(self, method: str, query: Mapping[str, list[str]], body: bytes | None) -> ApiResponse:
        if method != "GET":
            return 405, {"error": "method not allowed"}
        try:
            q = parse_query(query)
        except ValueError as exc:
            return 400, {"error": str(exc)}
        self.flush()
        rows, cursor = self.query(q)
        return 200, {"findings": rows, "next_cursor": cursor}


def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    out = [v for s in values for v in s.split(",") if v]
    return out or None


def _num(query: Mapping[str, list[str]], name: str, kind: type[float] | type[int]) -> Any:
    v = query.get(name)
    if not v:
        return None
    try:
        return kind(v[0])
    except ValueError:
        raise ValueError(f"{name}: expected a number, got {v[0]!r}") from None


def parse_query(query: Mapping[str, list[str]]) -> FindingsQuery:
    """``/api/v1/findings`` parameters: ``kind`` and ``severity`` (comma lists), ``agent``,
    ``since`` / ``until`` (unix seconds), ``limit`` (≤ 1000), ``cursor``."""
    limit = _num(query, "limit", int)
    if limit is not None and limit < 1:
        raise ValueError("limit: must be at least 1")
    agent = query.get("agent")
    return FindingsQuery(
        kind=_split(query.get("kind")),
        agent=agent[0] if agent else None,
        severity=_split(query.get("severity")),
        since=_num(query, "since", float),
        until=_num(query, "until", float),
        limit=100 if limit is None else limit,
        cursor=_num(query, "cursor", int),
    )
