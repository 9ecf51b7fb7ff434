# SPDX-License-Identifier: Apache-2.0
"""SQLite store of agent event log records: the audit trail.

Rows are indexed for the questions an operator asks — what did *this agent* / *this user* /
*this session* do in *this time range*, and what happened in *this trace*. Pages are ordered
newest first by ``(time, id)`` with an opaque keyset cursor, so paging is stable while new
events arrive and never skips or repeats a row.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from otel_agents.exporters._sqlite import SqliteStore

__all__ = ["AgentEvent", "EventQuery", "EventsStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    time      REAL NOT NULL,
    type      TEXT NOT NULL,
    agent     TEXT NOT NULL DEFAULT '',
    trace_id  TEXT NOT NULL DEFAULT '',
    span_id   TEXT NOT NULL DEFAULT '',
    session   TEXT NOT NULL DEFAULT '',
    user      TEXT NOT NULL DEFAULT '',
    service   TEXT NOT NULL DEFAULT '',
    severity  TEXT NOT NULL DEFAULT '',
    body      TEXT NOT NULL DEFAULT '',
    attributes TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS events_time    ON events(time, id);
CREATE INDEX IF NOT EXISTS events_agent   ON events(agent, time, id);
CREATE INDEX IF NOT EXISTS events_type    ON events(type, time, id);
CREATE INDEX IF NOT EXISTS events_trace   ON events(trace_id);
CREATE INDEX IF NOT EXISTS events_session ON events(session, time, id);
CREATE INDEX IF NOT EXISTS events_user    ON events(user, time, id);
"""


@dataclasses.dataclass(frozen=True)
class AgentEvent:
    """One audit-trail event (a decoded agent event log record)."""

    time: float
    type: str
    agent: str = ""
    trace_id: str = ""
    span_id: str = ""
    session: str = ""
    user: str = ""
    service: str = ""
    severity: str = ""
    body: str = ""
    attributes: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class EventQuery:
    """Filters (all optional, combined with AND); ``since`` inclusive, ``until`` exclusive."""

    agent: str | None = None
    type: str | None = None
    since: float | None = None
    until: float | None = None
    trace_id: str | None = None
    session: str | None = None
    user: str | None = None
    limit: int = 100
    cursor: str | None = None

    def matches(self, e: AgentEvent) -> bool:
        """Brute-force form of the same filter (the definition the SQL must agree with)."""
        return (
            (self.agent is None or e.agent == self.agent)
            and (self.type is None or e.type == self.type)
            and (self.since is None or e.time >= self.since)
            and (self.until is None or e.time < self.until)
            and (self.trace_id is None or e.trace_id == self.trace_id.lower())
            and (self.session is None or e.session == self.session)
            and (self.user is None or e.user == self.user)
        )


MAX_LIMIT = 1000


def encode_cursor(time: float, row_id: int) -> str:
    """Opaque keyset cursor for the row after which the next page starts."""
    return base64.urlsafe_b64encode(json.dumps([time, row_id]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, int]:
    """Inverse of :func:`encode_cursor`.

    Raises:
        ValueError: on a malformed cursor.
    """
    try:
        pad = "=" * (-len(cursor) % 4)
        t, i = json.loads(base64.urlsafe_b64decode(cursor + pad))
        return float(t), int(i)
    except (ValueError, TypeError) as exc:
        raise ValueError("invalid cursor") from exc


class EventsStore(SqliteStore):
    """The audit trail's SQLite file (WAL); thread-safe."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path, _SCHEMA)

    def add(self, events: Iterable[AgentEvent]) -> int:
        """Insert events in one transaction; returns how many."""
        rows = [
            (
                e.time,
                e.type,
                e.agent,
                e.trace_id.lower(),
                e.span_id.lower(),
                e.session,
                e.user,
                e.service,
                e.severity,
                e.body,
                json.dumps(e.attributes, sort_keys=True, default=str),
            )
            for e in events
        ]
        if not rows:
            return 0
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "INSERT INTO events(time, type, agent, trace_id, span_id, session, user, service,"
                    " severity, body, attributes) VALUES(?,?,?,?,?,?,?,?,?,?,?)",
                    rows,
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return len(rows)

    def query(self, q: EventQuery) -> tuple[list[dict[str, Any]], str | None]:
        """Matching events newest first and the cursor of the next page (``None`` at the end).

        Raises:
            ValueError: on a malformed cursor.
        """
        sql = (
            "SELECT id, time, type, agent, trace_id, span_id, session, user, service, severity,"
            " body, attributes FROM events WHERE 1=1"
        )
        args: list[Any] = []
        for col, val in (
            ("agent", q.agent),
            ("type", q.type),
            ("session", q.session),
            ("user", q.user),
        ):
            if val is not None:
                sql += f" AND {col} = ?"
                args.append(val)
        if q.trace_id is not None:
            sql += " AND trace_id = ?"
            args.append(q.trace_id.lower())
        if q.since is not None:
            sql += " AND time >= ?"
            args.append(q.since)
        if q.until is not None:
            sql += " AND time < ?"
            args.append(q.until)
        if q.cursor:
            t, i = decode_cursor(q.cursor)
            sql += " AND (time < ? OR (time = ? AND id < ?))"
            args += [t, t, i]
        limit = max(1, min(int(q.limit), MAX_LIMIT))
        sql += " ORDER BY time DESC, id DESC LIMIT ?"
        args.append(limit + 1)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        items = [_row(r) for r in rows]
        cursor = encode_cursor(rows[-1][1], rows[-1][0]) if more and rows else None
        return items, cursor

    def prune(self, *, before: float | None = None, max_rows: int | None = None) -> int:
        """Retention: drop events older than ``before`` and beyond the newest ``max_rows``."""
        removed = 0
        with self._lock:
            if before is not None:
                removed += self._db.execute("DELETE FROM events WHERE time < ?", (before,)).rowcount
            if max_rows is not None:
                # The newest row beyond the cap (one index seek), then a range delete — not a
                # NOT IN over a million ids every prune.
                edge = self._db.execute(
                    "SELECT time, id FROM events ORDER BY time DESC, id DESC LIMIT 1 OFFSET ?",
                    (max_rows,),
                ).fetchone()
                if edge is not None:
                    removed += self._db.execute(
                        "DELETE FROM events WHERE time < ? OR (time = ? AND id <= ?)",
                        (edge[0], edge[0], edge[1]),
                    ).rowcount
        return removed

    def count(self) -> int:
        """Number of stored events."""
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM events").fetchone()[0])


def _row(r: Sequence[Any]) -> dict[str, Any]:
    return {
        "id": r[0],
        "time": r[1],
        "type": r[2],
        "agent": r[3],
        "trace_id": r[4],
        "span_id": r[5],
        "session": r[6],
        "user": r[7],
        "service": r[8],
        "severity": r[9],
        "body": r[10],
        "attributes": json.loads(r[11]),
    }
