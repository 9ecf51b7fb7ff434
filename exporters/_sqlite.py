# SPDX-License-Identifier: Apache-2.0
"""The SQLite connection the admin-facing stores (alerts, audit events) share."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

__all__ = ["SqliteStore"]


class SqliteStore:
    """One autocommit connection guarded by one lock; ``":memory:"`` for a private store.

    The pipeline thread writes and the admin API's threads read, so every use of ``_db`` is
    under ``_lock``; a file store runs in WAL mode so readers never block the writer on disk.
    """

    def __init__(self, path: str | Path, schema: str) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            if str(path) != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(schema)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
