# SPDX-License-Identifier: Apache-2.0
"""SQLite store of alerts, their history (state changes, acks, notifications) and silences.

One file under the receiver's data directory (WAL mode). The alert engine writes from the
pipeline thread; the admin API reads from its own threads — every connection use is under one
lock, and writes are small single transactions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from otel_agents.exporters._sqlite import SqliteStore

__all__ = ["AlertStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    fingerprint TEXT PRIMARY KEY,
    alertname   TEXT NOT NULL,
    severity    TEXT NOT NULL,
    state       TEXT NOT NULL,          -- pending | firing | resolved
    labels      TEXT NOT NULL,
    annotations TEXT NOT NULL,
    value       REAL,
    active_at   REAL NOT NULL,
    starts_at   REAL,
    ends_at     REAL,
    updated_at  REAL NOT NULL,
    acked_by    TEXT,
    acked_at    REAL,
    resolved_by TEXT,
    generator_url TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS alerts_state ON alerts(state, updated_at);
CREATE TABLE IF NOT EXISTS alert_history (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    fingerprint TEXT NOT NULL,
    alertname   TEXT NOT NULL,
    at          REAL NOT NULL,
    event       TEXT NOT NULL,          -- pending | firing | resolved | acknowledged | ...
    by          TEXT NOT NULL DEFAULT '',
    detail      TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS alert_history_at ON alert_history(at);
CREATE INDEX IF NOT EXISTS alert_history_fp ON alert_history(fingerprint, at);
CREATE TABLE IF NOT EXISTS silences (
    id          TEXT PRIMARY KEY,
    body        TEXT NOT NULL,
    ends_at     REAL NOT NULL
);
"""


class AlertStore(SqliteStore):
    """Alerts with history; ``path`` ``":memory:"`` for a private in-memory store."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path, _SCHEMA)

    # ------------------------------------------------------------------ writes
    def upsert(self, alert: Mapping[str, Any]) -> None:
        """Insert or update the current row of an alert (keys as :meth:`active` returns)."""
        with self._lock:
            self._db.execute(
                """INSERT INTO alerts(fingerprint, alertname, severity, state, labels, annotations,
                       value, active_at, starts_at, ends_at, updated_at, generator_url)
                   VALUES(?,?,?,?,?,?,?,?,?,?,?,?)
                   ON CONFLICT(fingerprint) DO UPDATE SET
                       severity=excluded.severity, state=excluded.state,
                       annotations=excluded.annotations, value=excluded.value,
                       active_at=excluded.active_at, starts_at=excluded.starts_at,
                       ends_at=excluded.ends_at, updated_at=excluded.updated_at,
                       generator_url=excluded.generator_url,
                       acked_by=CASE WHEN excluded.state='pending' THEN NULL ELSE acked_by END,
                       acked_at=CASE WHEN excluded.state='pending' THEN NULL ELSE acked_at END,
                       resolved_by=CASE WHEN excluded.state='resolved' THEN resolved_by ELSE NULL END
                """,
                (
                    alert["fingerprint"],
                    alert["labels"].get("alertname", ""),
                    alert["labels"].get("severity", ""),
                    alert["state"],
                    json.dumps(dict(alert["labels"]), sort_keys=True),
                    json.dumps(dict(alert.get("annotations") or {}), sort_keys=True),
                    _finite(alert.get("value")),
                    alert["active_at"],
                    alert.get("starts_at"),
                    alert.get("ends_at"),
                    alert["updated_at"],
                    alert.get("generator_url", ""),
                ),
            )

    def record(
        self,
        fingerprint: str,
        alertname: str,
        at: float,
        event: str,
        by: str = "",
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Append one history event."""
        with self._lock:
            self._db.execute(
                "INSERT INTO alert_history(fingerprint, alertname, at, event, by, detail) VALUES(?,?,?,?,?,?)",
                (
                    fingerprint,
                    alertname,
                    at,
                    event,
                    by,
                    json.dumps(dict(detail or {}), sort_keys=True, default=str),
                ),
            )

    def acknowledge(self, fingerprint: str, by: str, at: float) -> bool:
        """Mark an alert acknowledged; ``False`` when unknown or not active."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE alerts SET acked_by=?, acked_at=? WHERE fingerprint=? AND state IN ('pending','firing')",
                (by, at, fingerprint),
            )
            return cur.rowcount > 0

    def mark_resolved_by(self, fingerprint: str, by: str) -> None:
        """Record who resolved an alert by hand."""
        with self._lock:
            self._db.execute(
                "UPDATE alerts SET resolved_by=? WHERE fingerprint=?", (by, fingerprint)
            )

    def save_silence(self, silence_id: str, body: Mapping[str, Any], ends_at: float) -> None:
        """Persist a silence (so it survives a restart)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO silences(id, body, ends_at) VALUES(?,?,?) ON CONFLICT(id) DO UPDATE SET body=excluded.body, ends_at=excluded.ends_at",
                (silence_id, json.dumps(dict(body), sort_keys=True), ends_at),
            )

    def load_silences(self) -> list[dict[str, Any]]:
        """Every stored silence."""
        with self._lock:
            rows = self._db.execute("SELECT body FROM silences").fetchall()
        return [json.loads(r[0]) for r in rows]

    def prune(self, before: float) -> None:
        """Drop history, resolved alerts and expired silences older than ``before``."""
        with self._lock:
            self._db.execute("DELETE FROM alert_history WHERE at < ?", (before,))
            self._db.execute(
                "DELETE FROM alerts WHERE state='resolved' AND updated_at < ?", (before,)
            )
            self._db.execute("DELETE FROM silences WHERE ends_at < ?", (before,))

    # ------------------------------------------------------------------- reads
    def get(self, fingerprint: str) -> dict[str, Any] | None:
        """One alert row."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLS} FROM alerts WHERE fingerprint=?", (fingerprint,)
            ).fetchone()
        return _row(row) if row else None

    def active(self) -> list[dict[str, Any]]:
        """Pending and firing alerts, newest first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLS} FROM alerts WHERE state IN ('pending','firing') ORDER BY active_at DESC, fingerprint"
            ).fetchall()
        return [_row(r) for r in rows]

    def alerts(
        self, states: Sequence[str] = ("pending", "firing", "resolved")
    ) -> list[dict[str, Any]]:
        """Alerts in ``states``, newest first."""
        marks = ",".join("?" * len(states))
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLS} FROM alerts WHERE state IN ({marks}) ORDER BY active_at DESC, fingerprint",
                tuple(states),
            ).fetchall()
        return [_row(r) for r in rows]

    def history(
        self,
        *,
        fingerprint: str | None = None,
        alertname: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> list[dict[str, Any]]:
        """History events, newest first (``before_id`` pages further back)."""
        sql = (
            "SELECT id, fingerprint, alertname, at, event, by, detail FROM alert_history WHERE 1=1"
        )
        args: list[Any] = []
        for cond, val in (
            ("fingerprint=?", fingerprint),
            ("alertname=?", alertname),
            ("at>=?", since),
            ("at<?", until),
            ("id<?", before_id),
        ):
            if val is not None:
                sql += f" AND {cond}"
                args.append(val)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(max(1, min(limit, 1000)))
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [
            {
                "id": r[0],
                "fingerprint": r[1],
                "alertname": r[2],
                "at": r[3],
                "event": r[4],
                "by": r[5],
                "detail": json.loads(r[6]),
            }
            for r in rows
        ]


_COLS = (
    "fingerprint, alertname, severity, state, labels, annotations, value, active_at, "
    "starts_at, ends_at, updated_at, acked_by, acked_at, resolved_by, generator_url"
)


def _finite(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return f if f == f and f not in (float("inf"), float("-inf")) else None


def _row(r: Sequence[Any]) -> dict[str, Any]:
    return {
        "fingerprint": r[0],
        "alertname": r[1],
        "severity": r[2],
        "state": r[3],
        "labels": json.loads(r[4]),
        "annotations": json.loads(r[5]),
        "value": r[6],
        "active_at": r[7],
        "starts_at": r[8],
        "ends_at": r[9],
        "updated_at": r[10],
        "acked_by": r[11],
        "acked_at": r[12],
        "resolved_by": r[13],
        "generator_url": r[14],
    }
