# SPDX-License-Identifier: Apache-2.0
"""The durable spool: every accepted OTLP request is committed here before the sender gets ``OK``.

One SQLite database (``<data_dir>/spool.db``) in WAL mode holds the serialized requests in
arrival order; forwarders and the analysis pipeline each read it from their own **cursor** (the
last sequence number they finished), so a slow or dead destination only holds back its own
cursor.  Rows every cursor has passed are deleted; a byte cap bounds what a lagging cursor can
pin, and hitting it turns into a retryable refusal (throttling), never a silent drop.

Group commit: requests that arrive while a transaction is being committed are committed
together in the next one (:meth:`Spool.append`); nothing waits on a timer, so a lone request
is committed at once, and every caller returns only after the transaction with its row
committed.  Under the benchmark's gRPC load (16 streams, 512-span requests) the transport's
GIL-bound decode and validation space the arrivals out, so groups stay small (~1.2 rows per
transaction); they grow where the commit itself is slow (``synchronous=FULL``, slow disks).

Readers get the newest payloads from memory (the last ``_RECENT_BYTES``): the row's fields
are read from SQLite without its payload column, whose overflow pages were the largest part
of reading a row back.  Each append transaction first deletes the rows every reader has
finished, so its inserts reuse their pages: the WAL cycles through a small set of pages and
a checkpoint (every ~60 MB of WAL) copies that set, not every page written since the last one.

Durability: ``journal_mode=WAL`` + ``synchronous=NORMAL``.  A commit survives a crash of *this
process* (``kill -9``) because it is in the WAL file before ``append`` returns; after a power
loss or OS crash the most recent commits may roll back (SQLite only fsyncs the WAL at checkpoints
in this mode).  Set ``synchronous`` to ``FULL`` for power-loss durability at the cost of one
fsync per request.

Storage trouble (``SQLITE_FULL``, read-only files, I/O errors, the database file deleted under a
running receiver) makes :meth:`Spool.append` raise :class:`RetryableError`; the spool reports
itself unhealthy and repairs itself: :meth:`Spool.check` (called about once a second) re-opens the
database and, if the file was deleted, copies the rows the cursors still need from the orphaned
file into a new one, so no acknowledged request is lost.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from otel_agents._errors import ConfigError, RetryableError

__all__ = ["SIGNALS", "Row", "Signal", "Spool", "SpoolCursor", "SpoolHost", "SpoolInUseError"]

_log = logging.getLogger(__name__)

Signal = Literal["traces", "metrics", "logs"]
SIGNALS: tuple[Signal, ...] = ("traces", "metrics", "logs")
_SIGNAL_CODE = {s: i for i, s in enumerate(SIGNALS)}

DB_NAME = "spool.db"
_WAL_SIZE_LIMIT = 64 << 20  # bytes the WAL file is truncated to after a checkpoint
_WAL_CHECKPOINT_BYTES = 60 << 20  # WAL size that triggers a checkpoint (under the limit)
#: Payload bytes of the newest rows kept in memory for readers (see Spool.read): at 100 MB/s of
#: ingest that is the last ~160 ms, while forwarders, woken per commit, read within milliseconds.
_RECENT_BYTES = 16 << 20
_PAGE_SIZE = 16384
#: Minimum seconds between two returns of free pages to the filesystem (see compact()).
_SHRINK_INTERVAL = 30.0
LOCK_NAME = "spool.lock"


class SpoolInUseError(ConfigError):
    """The data directory is already used by another receiver process."""


# SQLite primary result codes that mean "storage trouble, try again later" (sqlite3.h).
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY, _SQLITE_IOERR = 5, 6, 8, 10
_SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 11, 13, 14, 26
_STORAGE_ERRORS = {
    _SQLITE_BUSY: "busy",
    _SQLITE_LOCKED: "locked",
    _SQLITE_READONLY: "read_only",
    _SQLITE_IOERR: "io_error",
    _SQLITE_FULL: "disk_full",
    _SQLITE_CANTOPEN: "cannot_open",
}

# Items per signal and payload bytes of all rows / of the rows with seq <= ?.  No GROUP BY:
# SQLite's sorter copies every column the query names, and naming payload (for the length()
# fallback of old spools) copied each 200 KB blob: 135 µs per row, most of compaction's cost.
_TOTALS_SQL = (
    "SELECT COALESCE(SUM(CASE WHEN signal = 0 THEN items END), 0), "
    "COALESCE(SUM(CASE WHEN signal = 1 THEN items END), 0), "
    "COALESCE(SUM(CASE WHEN signal = 2 THEN items END), 0), "
    "COALESCE(SUM(COALESCE(nbytes, length(payload))), 0) FROM batches"
)
_TOTALS_UPTO_SQL = _TOTALS_SQL + " WHERE seq <= ?"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    -- The payload is the last column: SQLite stores a record's columns in order and a large
    -- blob spills into a chain of overflow pages, so every column after it (even a count used
    -- by compaction) would cost a walk of that chain to read.
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, cursors compare to it
    signal      INTEGER NOT NULL,                   -- 0 traces, 1 metrics, 2 logs
    items       INTEGER NOT NULL,                   -- spans / data points / log records
    received_at REAL    NOT NULL,                   -- receiver clock, unix seconds
    internal    INTEGER NOT NULL DEFAULT 0,         -- made by the receiver: not analysed again
    nbytes      INTEGER,                            -- length(payload), without reading it
    payload     BLOB    NOT NULL                    -- serialized Export*ServiceRequest
);
CREATE TABLE IF NOT EXISTS probe (x BLOB);         -- write probe while recovering
CREATE TABLE IF NOT EXISTS cursors (
    name TEXT PRIMARY KEY,
    seq  INTEGER NOT NULL                           -- last row this reader has finished
);
"""


@dataclass(frozen=True)
class Row:
    """One spooled request."""

    seq: int
    signal: Signal
    payload: bytes
    items: int
    received_at: float
    internal: bool


class _Pending:
    """One :meth:`Spool.append` call waiting for its group commit."""

    __slots__ = ("error", "internal", "items", "payload", "received_at", "seq", "signal")

    def __init__(
        self, signal: int, payload: bytes, items: int, received_at: float, internal: bool
    ) -> None:
        self.signal = signal
        self.payload = payload
        self.items = items
        self.received_at = received_at
        self.internal = internal
        self.seq = 0
        self.error: BaseException | None = None


def _fail(batch: list[_Pending], error: BaseException) -> None:
    for entry in batch:
        entry.error = error


def _error_reason(exc: sqlite3.Error) -> str | None:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return None
    return _STORAGE_ERRORS.get(code & 0xFF)


class Spool:
    """SQLite-backed, crash-safe queue of OTLP requests with per-reader cursors.

    Args:
        data_dir: directory of ``spool.db`` (created if missing).
        max_bytes: cap on the payload bytes kept; beyond it :meth:`append` raises
            :class:`RetryableError` until readers catch up.
        retention: oldest age (seconds) a row may reach before it is dropped even though a
            cursor has not passed it (counted per cursor as ``expired``); ``0`` keeps rows until
            every cursor has passed them.
        cursors: names of the readers; each starts at the current end on first use and resumes
            from its stored position afterwards.  Stored cursors not listed are removed, so a
            destination taken out of the configuration no longer pins rows.
        lossy_cursors: readers (among ``cursors``) that must not make the spool refuse data:
            when the byte cap is hit and they pin rows the others have passed, they skip ahead
            to the slowest other reader, and the rows they skipped are counted (see
            :meth:`take_expired`).  The analysis pipeline is one: forwarding is the guarantee,
            analysis of an overload backlog is best effort.
        synchronous: SQLite ``synchronous`` pragma (``NORMAL`` or ``FULL``).
        retry_after: delay suggested to senders when the spool refuses data.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        max_bytes: int = 1 << 30,
        retention: float = 0.0,
        cursors: Iterable[str] = (),
        lossy_cursors: Iterable[str] = (),
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        retry_after: float = 1.0,
    ) -> None:
        self._dir = Path(data_dir)
        self._path = self._dir / DB_NAME
        self.max_bytes = max_bytes
        self.retention = retention
        self._synchronous = synchronous
        self._retry_after = retry_after
        self._cursor_names = tuple(dict.fromkeys(cursors))
        self._lock = threading.RLock()
        # Appends waiting for the group commit (see append()).  A deque, not a list under a
        # lock: append() and popleft() are atomic, and with a lock its release woke a
        # contending handler thread on every request while holding the GIL (~6 % of the GIL
        # time forwarding 512-span requests).
        self._queue: deque[_Pending] = deque()
        # Threads in wait(), read without the condition's lock (see _notify()).
        self._waiting = 0
        #: Append transactions committed (rows / transactions = the group-commit batch size).
        self.transactions = 0
        # Rows up to this seq are known to be deleted (see _commit()).
        self._purged = 0
        # The payloads of the newest rows, by seq (see read()).
        self._recent: OrderedDict[int, bytes] = OrderedDict()
        self._recent_bytes = 0
        self._new_data = threading.Condition(threading.Lock())
        self._conn: sqlite3.Connection | None = None
        self._inode: tuple[int, int] | None = None
        self._problem: str | None = None
        self._closed = False
        self._lock_fd: int | None = None
        self._full = False
        self._last_shrink = -_SHRINK_INTERVAL
        self._bytes = 0
        self._items = dict.fromkeys(SIGNALS, 0)
        self._positions: dict[str, int] = {}
        self._last_seq = 0
        self._expired: dict[str, int] = dict.fromkeys(self._cursor_names, 0)
        self._lossy = frozenset(lossy_cursors) & set(self._cursor_names)
        self._open_or_degrade(initial=True)

    # ------------------------------------------------------------------ opening / health

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    @property
    def healthy(self) -> bool:
        """False while the database cannot take writes (see :attr:`problem`)."""
        return self._problem is None

    @property
    def problem(self) -> str | None:
        """Why the spool refuses data (``disk_full``, ``read_only``, ``deleted``...), or None."""
        return self._problem

    def _open_or_degrade(self, initial: bool = False) -> None:
        try:
            self._open()
        except SpoolInUseError as exc:
            if initial:
                raise  # at start-up: a configuration error for the operator
            self._degrade("in_use", exc)
        except sqlite3.Error as exc:
            self._degrade(_error_reason(exc) or "cannot_open", exc)
        except OSError as exc:
            self._degrade("cannot_open", exc)

    def _open(self) -> None:
        # Spooled requests are telemetry of other people's systems: owner-only when we create it.
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._take_dir_lock()
        conn = sqlite3.connect(
            self._path, timeout=5.0, isolation_level=None, check_same_thread=False
        )
        try:
            # Must precede table creation (no effect on an existing file): lets compact() give
            # freed pages back, so the file stays near max_bytes instead of its high-water mark.
            # 16 KiB pages (new files only; SQLite's default is 4 KiB): a 512-span request
            # (~200 KB) is a chain of 13 overflow pages instead of 50, and every page costs a WAL
            # frame, a checkpoint copy and a freelist entry when compaction deletes it.
            # Measured per append + delete: 200 KB 406 vs 890 µs CPU, 20 KB 86 vs 121 µs;
            # a 1 KB request pays 29 vs 18 µs (a whole page per commit), and 64 KiB pages
            # would cost small requests 60 µs for little more gain on large ones.
            conn.execute(f"PRAGMA page_size={_PAGE_SIZE}")
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            conn.execute("PRAGMA journal_mode=WAL")
            # The WAL is not payload, so max_bytes does not see it: without a limit it keeps its
            # high-water mark (a soak reached 2x the cap on disk while a slow reader held back
            # checkpoints). After each checkpoint SQLite truncates it back to this size.
            conn.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT}")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            # A checkpoint every ~60 MB of WAL instead of SQLite's 1000 pages (16 MB here):
            # appends reuse the pages of finished rows (see _commit()), so a longer interval
            # copies the same small page set a quarter as often.  A/B forwarding 512-span
            # requests: 1.62 vs 1.73 ms CPU per request (medians of 3).  The WAL stays under
            # journal_size_limit, so it is not truncated and regrown after each checkpoint.
            conn.execute(f"PRAGMA wal_autocheckpoint={_WAL_CHECKPOINT_BYTES // _PAGE_SIZE}")
            # Debian/Ubuntu build SQLite with SECURE_DELETE on: every page compaction frees is
            # overwritten with zeros and written to the WAL again, which made deleting a 512-span
            # request cost ~280 µs CPU, more than appending it.  FAST still zeroes deleted content
            # inside b-tree pages but leaves freed overflow pages as they are (until reused or
            # returned by incremental_vacuum); their content is spooled telemetry that was masked
            # on the way in and sits in an owner-only directory.  Append + delete: 260 vs 440 µs.
            conn.execute("PRAGMA secure_delete=FAST")
            conn.executescript(_SCHEMA)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(batches)")}
            if "nbytes" not in columns:
                # A spool written by an older version: the column goes last, where it saves
                # nothing (COALESCE falls back to length()), but the same SQL works on both.
                conn.execute("ALTER TABLE batches ADD COLUMN nbytes INTEGER")
            self._load_state(conn)
            self._forget_recent()
            self._purged = 0
        except BaseException:
            conn.close()
            raise
        st = os.stat(self._path)
        self._conn, self._inode, self._problem = conn, (st.st_dev, st.st_ino), None

    def _take_dir_lock(self) -> None:
        """Hold ``spool.lock`` so two receivers never share one spool (their cursors would fight).

        ``flock`` is released by the kernel when the process dies, so a restart after
        ``kill -9`` is never blocked.  On a read-only directory without the file there is
        nothing to protect (nobody can write) and the lock is skipped.

        Raises:
            SpoolInUseError: another process holds the lock.
        """
        if self._lock_fd is not None:
            return
        path = self._dir / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise SpoolInUseError(
                f"storage.data_dir: {self._dir} is in use by another otel-agents receiver "
                f"(lock {path}); give each receiver its own data_dir"
            ) from None
        self._lock_fd = fd

    def _load_state(self, conn: sqlite3.Connection) -> None:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name='batches'").fetchone()
        self._last_seq = int(row[0]) if row else 0
        stored = dict(conn.execute("SELECT name, seq FROM cursors").fetchall())
        conn.execute("BEGIN IMMEDIATE")
        try:
            for name in stored.keys() - set(self._cursor_names):
                _log.info("spool: removing cursor %r (no longer configured)", name)
                conn.execute("DELETE FROM cursors WHERE name=?", (name,))
            for name in self._cursor_names:
                if name not in stored:
                    # A new reader starts at the end: it gets what arrives from now on.
                    conn.execute(
                        "INSERT INTO cursors(name, seq) VALUES (?, ?)", (name, self._last_seq)
                    )
                    stored[name] = self._last_seq
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._positions = {n: int(stored[n]) for n in self._cursor_names}
        self._bytes = 0
        self._items = dict.fromkeys(SIGNALS, 0)
        *items, nbytes = conn.execute(_TOTALS_SQL).fetchone()
        self._items = {sig: int(n) for sig, n in zip(SIGNALS, items, strict=True)}
        self._bytes = int(nbytes)

    def _degrade(self, reason: str, exc: BaseException) -> None:
        if self._problem != reason:
            _log.error(
                "spool: storage problem (%s): %s; refusing data until it clears", reason, exc
            )
        self._problem = reason

    def check(self) -> bool:
        """Detect a deleted database file and retry a broken one; returns :attr:`healthy`.

        Called about once a second by the pipeline and before every append that follows a
        failure; cheap when all is well (one ``stat``).
        """
        with self._lock:
            if self._closed:
                return False
            if self._conn is not None and self._file_replaced():
                self._degrade("deleted", FileNotFoundError(str(self._path)))
                self._rescue_orphan()
            elif self._conn is None:
                self._open_or_degrade()
            elif self._problem is not None:
                try:
                    # A write probe: disk-full/read-only clear only when a write succeeds.
                    # A write probe that allocates pages and reaches the WAL: disk-full and
                    # read-only only clear when such a write succeeds.
                    self._conn.execute("BEGIN IMMEDIATE")
                    self._conn.execute("INSERT INTO probe VALUES (zeroblob(16384))")
                    self._conn.execute("COMMIT")
                    self._conn.execute("DELETE FROM probe")
                    _log.warning("spool: storage recovered (was %s)", self._problem)
                    self._problem = None
                except sqlite3.Error as exc:
                    with contextlib.suppress(sqlite3.Error):
                        self._conn.execute("ROLLBACK")
                    self._degrade(_error_reason(exc) or "io_error", exc)
            return self._problem is None

    def _file_replaced(self) -> bool:
        try:
            st = os.stat(self._path)
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != self._inode

    def _rescue_orphan(self) -> None:
        """Copy an unlinked database (still open here) into a fresh file at the same path.

        The old connection still sees every committed row.  SQLite's online backup copies it to
        a side file first (the old connection must be closed before anything opens the original
        path again, or the two would share ``-wal``/``-shm`` files), then the copy is renamed
        into place and opened as usual.
        """
        old = self._conn
        assert old is not None
        rescue = self._path.with_name(DB_NAME + ".rescue")
        try:
            if self._path.exists():
                # Another file was put in place: never overwrite it; keep refusing data.
                raise FileExistsError(f"{self._path} was replaced by another file")
            self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                rescue.unlink()
            dst = sqlite3.connect(rescue)
            try:
                old.backup(dst)
            finally:
                dst.close()
        except (sqlite3.Error, OSError) as exc:
            self._degrade("deleted", exc)
            return
        with contextlib.suppress(sqlite3.Error):
            old.close()
        self._conn = None
        try:
            os.replace(rescue, self._path)
            self._open()
        except (sqlite3.Error, OSError) as exc:
            self._degrade("deleted", exc)
            return
        _log.warning("spool: database file was deleted; re-created it with every pending row")

    # ------------------------------------------------------------------ writing

    def append(
        self,
        signal: Signal,
        payload: bytes,
        items: int,
        *,
        received_at: float | None = None,
        internal: bool = False,
    ) -> int:
        """Commit one request; returns its sequence number once it is durable.

        Group commit: requests that arrive while another thread is committing wait for it and
        are then committed together in one transaction by whichever of them gets the lock
        first; each call still returns only after the transaction holding its row committed.
        One transaction per request rewrote the table's last b-tree page, the
        ``sqlite_sequence`` page and the WAL index for every request, and each waiting thread
        woke to take the lock in turn.

        Raises:
            RetryableError: the spool is full or its storage is failing; nothing was stored.
        """
        entry = _Pending(
            _SIGNAL_CODE[signal],
            payload,
            items,
            time.time() if received_at is None else received_at,
            internal,
        )
        queue = self._queue
        queue.append(entry)
        with self._lock:
            # Committed by the thread that held the lock before us, or ours to commit along
            # with everything queued meanwhile.
            if entry.seq == 0 and entry.error is None:
                batch: list[_Pending] = []
                while queue:
                    batch.append(queue.popleft())
                try:
                    self._commit(batch)
                finally:
                    # Interrupted half-way (KeyboardInterrupt...): the waiting callers must
                    # not take "no error" for success.
                    for other in batch:
                        if other.seq == 0 and other.error is None:
                            other.error = RetryableError(
                                "spool commit interrupted; retry later", self._retry_after
                            )
        error = entry.error
        if error is not None:
            if isinstance(error, RetryableError):
                # One exception object per caller: raising a shared one from several threads
                # would interleave their tracebacks.
                raise RetryableError(str(error), error.retry_after) from error.__cause__
            raise error
        self._notify()
        return entry.seq

    def _notify(self) -> None:
        """Wake readers blocked in :meth:`wait`, and only if there are any.

        Taking the condition's lock on every append cost a futex wake-up per request with the
        GIL held (~6 % of the GIL time forwarding), mostly for nobody: a forwarder that keeps
        up is busy sending.  No wake-up is lost: ``_last_seq`` is set before ``_waiting`` is
        read here, and :meth:`wait` counts itself in before it reads ``_last_seq``.
        """
        if self._waiting:
            with self._new_data:
                self._new_data.notify_all()

    def _commit(self, batch: list[_Pending]) -> None:
        """Store ``batch`` in one transaction (under ``_lock``); sets each entry's outcome."""
        if self._closed:
            return _fail(batch, RetryableError("receiver is shutting down", self._retry_after))
        if (self._problem is not None or self._file_replaced()) and not self.check():
            return _fail(
                batch, RetryableError(f"storage unavailable ({self._problem})", self._retry_after)
            )
        # The byte cap, in arrival order: what fits is stored, the rest refused.
        accepted: list[_Pending] = []
        size = self._bytes
        for entry in batch:
            n = len(entry.payload)
            if size + n > self.max_bytes:
                self.compact()
                size = self._bytes + sum(len(e.payload) for e in accepted)
                if size + n > self.max_bytes and self._skip_lossy():
                    self.compact()
                    size = self._bytes + sum(len(e.payload) for e in accepted)
                if size + n > self.max_bytes:
                    self._full = True
                    entry.error = RetryableError(
                        "spool is full: a destination is behind; retry later", self._retry_after
                    )
                    continue
            accepted.append(entry)
            size += n
        if not accepted:
            return None
        conn = self._conn
        assert conn is not None
        # Rows every reader has finished are deleted in the same transaction, before the
        # inserts, so the new rows reuse their pages at once: the WAL then cycles through a
        # small set of pages, and a checkpoint (which copies the newest version of each page
        # in the WAL) copies that set instead of every page written since the last one.
        # Deleting only on the pipeline's 1-s tick left ~1 s of rows' pages distinct in the
        # WAL, all copied to the database file again and synced.
        floor = min(self._positions.values(), default=self._last_seq)
        gone: tuple[int, ...] = ()
        try:
            explicit = len(accepted) > 1 or floor > self._purged
            if explicit:
                conn.execute("BEGIN IMMEDIATE")
            try:
                if floor > self._purged:
                    gone = tuple(
                        int(n) for n in conn.execute(_TOTALS_UPTO_SQL, (floor,)).fetchone()
                    )
                    conn.execute("DELETE FROM batches WHERE seq <= ?", (floor,))
                for entry in accepted:
                    cur = conn.execute(
                        "INSERT INTO batches(signal, payload, items, received_at, internal, "
                        "nbytes) VALUES (?, ?, ?, ?, ?, ?)",
                        (
                            entry.signal,
                            entry.payload,
                            entry.items,
                            entry.received_at,
                            int(entry.internal),
                            len(entry.payload),
                        ),
                    )
                    entry.seq = int(cur.lastrowid or 0)
                if explicit:
                    conn.execute("COMMIT")
            except BaseException:
                for entry in accepted:
                    entry.seq = 0
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            reason = _error_reason(exc)
            if reason is None:
                return _fail(accepted, exc)
            self._degrade(reason, exc)
            error = RetryableError(f"storage unavailable ({reason})", self._retry_after)
            error.__cause__ = exc
            return _fail(accepted, error)
        except Exception as exc:  # handed to every caller, as if each had run it alone
            return _fail(accepted, exc)
        self._last_seq = accepted[-1].seq
        self.transactions += 1
        self._full = False
        if gone:
            *gone_items, gone_bytes = gone
            for sig, n in zip(SIGNALS, gone_items, strict=True):
                self._items[sig] -= n
            self._bytes -= gone_bytes
            self._purged = floor
            self._forget_recent(floor)
        recent = self._recent
        keep = bool(self._positions)  # without readers nobody would take them
        for entry in accepted:
            n = len(entry.payload)
            self._bytes += n
            self._items[SIGNALS[entry.signal]] += entry.items
            if keep and n <= _RECENT_BYTES:
                recent[entry.seq] = entry.payload
                self._recent_bytes += n
        while self._recent_bytes > _RECENT_BYTES:
            self._recent_bytes -= len(recent.popitem(last=False)[1])
        return None

    def _forget_recent(self, upto: int | None = None) -> None:
        """Drop cached payloads of rows ``<= upto`` (all when None); under ``_lock``."""
        recent = self._recent
        if upto is None:
            recent.clear()
            self._recent_bytes = 0
            return
        while recent:
            seq = next(iter(recent))
            if seq > upto:
                break
            self._recent_bytes -= len(recent.pop(seq))

    # ------------------------------------------------------------------ reading

    def cursor(self, name: str) -> SpoolCursor:
        """The reader named ``name`` (must be one of the ``cursors`` given at construction)."""
        if name not in self._positions and name not in self._cursor_names:
            raise KeyError(f"unknown spool cursor {name!r}")
        return SpoolCursor(self, name)

    def position(self, name: str) -> int:
        """Last sequence number the reader ``name`` has finished."""
        return self._positions[name]

    @property
    def last_seq(self) -> int:
        """Sequence number of the newest committed row."""
        return self._last_seq

    def read(
        self,
        after: int,
        *,
        max_rows: int = 256,
        max_bytes: int = 4 << 20,
        same_signal: bool = False,
        include_internal: bool = True,
    ) -> list[Row]:
        """Rows with ``seq > after`` in order, bounded by count and payload bytes (at least one).

        With ``same_signal`` the result stops before the first row of another signal, so the
        rows can be sent as one request.
        """
        out: list[Row] = []
        size = 0
        last_internal: Row | None = None
        with self._lock:
            conn = self._conn
            if conn is None:
                return []
            recent = self._recent
            try:
                # The row's fields without its payload: the payload is the last column, a chain
                # of overflow pages that SQLite only reads when asked for it, and the newest
                # payloads (what a forwarder that keeps up reads) are still in memory. Reading
                # them back cost ~15 % of the receiver's GIL time forwarding 512-span requests.
                rows = conn.execute(
                    "SELECT seq, signal, items, received_at, internal, nbytes FROM batches "
                    "WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after, max_rows),
                ).fetchall()
                for seq, sig, items, received_at, internal, nbytes in rows:
                    if not include_internal and internal:
                        last_internal = Row(seq, SIGNALS[sig], b"", 0, received_at, True)
                        continue
                    if out and (
                        (nbytes is not None and size + nbytes > max_bytes)
                        or (same_signal and SIGNALS[sig] != out[0].signal)
                    ):
                        break
                    payload = recent.get(seq)
                    if payload is None:
                        found = conn.execute(
                            "SELECT payload FROM batches WHERE seq = ?", (seq,)
                        ).fetchone()
                        if found is None:  # deleted meanwhile (retention): nothing to read
                            continue
                        payload = bytes(found[0])
                        if out and size + len(payload) > max_bytes:
                            break
                    out.append(Row(seq, SIGNALS[sig], payload, items, received_at, bool(internal)))
                    size += len(payload)
            except sqlite3.Error as exc:
                _log.warning("spool: read failed: %s", exc)
                return []
        if not out and last_internal is not None:
            # Only internal rows: report the position reached so the caller can advance.
            out.append(last_internal)
        return out

    def pending(self, name: str) -> tuple[int, int]:
        """``(rows, items)`` the reader ``name`` has not finished."""
        with self._lock:
            conn = self._conn
            if conn is None:
                return (0, 0)
            try:
                rows, items = conn.execute(
                    "SELECT COUNT(*), COALESCE(SUM(items), 0) FROM batches WHERE seq > ?",
                    (self._positions[name],),
                ).fetchone()
            except sqlite3.Error:
                return (0, 0)
        return int(rows), int(items)

    def ack(self, name: str, seq: int) -> None:
        """Record that reader ``name`` has finished every row up to ``seq``."""
        with self._lock:
            if seq <= self._positions.get(name, -1):
                return
            self._positions[name] = seq
            conn = self._conn
            if conn is None:
                return
            try:
                conn.execute("UPDATE cursors SET seq=? WHERE name=?", (seq, name))
            except sqlite3.Error as exc:
                # The in-memory position still advances; on restart the reader resends at most
                # what it acked since (at-least-once).
                reason = _error_reason(exc)
                if reason is None:
                    raise
                self._degrade(reason, exc)

    def wait(self, after: int, timeout: float) -> bool:
        """Block until a row newer than ``after`` exists (or ``timeout``); True if one does."""
        with self._new_data:
            self._waiting += 1
            try:
                if self._last_seq > after:
                    return True
                self._new_data.wait(timeout)
                return self._last_seq > after
            finally:
                self._waiting -= 1

    def wake(self) -> None:
        """Wake every :meth:`wait` (used on shutdown)."""
        with self._new_data:
            self._new_data.notify_all()

    # ------------------------------------------------------------------ retention

    def compact(self, now: float | None = None) -> int:
        """Delete rows every cursor has passed and rows past ``retention``; returns rows deleted."""
        with self._lock:
            conn = self._conn
            if conn is None or self._problem is not None:
                return 0
            floor = min(self._positions.values(), default=self._last_seq)
            deleted = 0
            try:
                conn.execute("BEGIN IMMEDIATE")
                if self.retention > 0:
                    cutoff = (time.time() if now is None else now) - self.retention
                    row = conn.execute(
                        "SELECT MAX(seq) FROM batches WHERE seq > ? AND received_at < ?",
                        (floor, cutoff),
                    ).fetchone()
                    if row and row[0] is not None:
                        horizon = int(row[0])
                        for name, pos in self._positions.items():
                            if pos < horizon:
                                lost = conn.execute(
                                    "SELECT COALESCE(SUM(items), 0) FROM batches "
                                    "WHERE seq > ? AND seq <= ?",
                                    (pos, horizon),
                                ).fetchone()[0]
                                self._expired[name] = self._expired.get(name, 0) + int(lost)
                                _log.warning(
                                    "spool: %d items older than retention dropped for %r",
                                    lost,
                                    name,
                                )
                                self._positions[name] = horizon
                                conn.execute(
                                    "UPDATE cursors SET seq=? WHERE name=?", (horizon, name)
                                )
                        floor = max(floor, horizon)
                *gone_items, gone_bytes = conn.execute(_TOTALS_UPTO_SQL, (floor,)).fetchone()
                deleted = conn.execute("DELETE FROM batches WHERE seq <= ?", (floor,)).rowcount
                self._forget_recent(floor)
                conn.execute("COMMIT")
                self._purged = max(self._purged, floor)
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                reason = _error_reason(exc)
                if reason is None:
                    raise
                self._degrade(reason, exc)
                return 0
            for sig, n in zip(SIGNALS, gone_items, strict=True):
                self._items[sig] -= int(n)
            self._bytes -= int(gone_bytes)
            if deleted:
                self._full = False
            # At most every _SHRINK_INTERVAL: under steady load the pages compaction frees are
            # reused by the next appends, and giving them back every tick made the file shrink
            # and grow again each second (measured: 153 µs per 512-span request).
            if time.monotonic() - self._last_shrink >= _SHRINK_INTERVAL and self._shrink(conn):
                self._last_shrink = time.monotonic()
            return int(deleted)

    @staticmethod
    def _shrink(conn: sqlite3.Connection) -> bool:
        """Return free pages to the filesystem once they are a quarter of the file.

        Returns:
            Whether pages were returned.
        """
        try:
            free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
            pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
            page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
            # In bytes: files created before the page size changed keep their 4 KiB pages.
            if free * page_size > 1 << 20 and free * 4 > pages:
                # executescript steps the pragma to completion (execute() frees one page).
                conn.executescript("PRAGMA incremental_vacuum;")
                return True
        except sqlite3.Error as exc:  # space is reclaimed next time; data is unaffected
            _log.debug("spool: incremental vacuum failed: %s", exc)
        return False

    def _skip_lossy(self) -> bool:
        """Advance lossy readers to the slowest other reader; True if one moved."""
        conn = self._conn
        if not self._lossy or conn is None:
            return False
        others = [p for n, p in self._positions.items() if n not in self._lossy]
        target = min(others, default=self._last_seq)
        moved = False
        for name in self._lossy:
            pos = self._positions[name]
            if pos >= target:
                continue
            try:
                skipped = conn.execute(
                    "SELECT COALESCE(SUM(items), 0) FROM batches WHERE seq > ? AND seq <= ?",
                    (pos, target),
                ).fetchone()[0]
                conn.execute("UPDATE cursors SET seq=? WHERE name=?", (target, name))
            except sqlite3.Error as exc:
                _log.warning("spool: could not advance %r: %s", name, exc)
                continue
            self._positions[name] = target
            self._expired[name] = self._expired.get(name, 0) + int(skipped)
            _log.warning("spool full: %r skipped %d items to keep accepting data", name, skipped)
            moved = True
        return moved

    def take_expired(self, name: str) -> int:
        """Items dropped for reader ``name`` (retention, or skipped as lossy) since the last call."""
        with self._lock:
            n = self._expired.get(name, 0)
            self._expired[name] = 0
            return n

    # ------------------------------------------------------------------ stats / lifecycle

    @property
    def full(self) -> bool:
        """True since an append was refused for the byte cap, until rows are freed."""
        return self._full

    @property
    def bytes(self) -> int:
        """Payload bytes currently spooled."""
        return self._bytes

    def items(self) -> dict[Signal, int]:
        """Items currently spooled per signal."""
        return dict(self._items)

    def integrity_check(self) -> str:
        """SQLite ``PRAGMA integrity_check`` result (``"ok"`` when the file is sound)."""
        with self._lock:
            if self._conn is None:
                return "not open"
            return str(self._conn.execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        """Checkpoint and close; further appends are refused."""
        with self._lock:
            self._closed = True
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._conn.close()
                self._conn = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None
        self.wake()


class SpoolCursor:
    """One reader's view of the spool (a forwarder or the analysis pipeline)."""

    def __init__(self, spool: Spool, name: str) -> None:
        self.spool = spool
        self.name = name

    @property
    def position(self) -> int:
        """Last finished sequence number."""
        return self.spool.position(self.name)

    def read(
        self,
        *,
        max_rows: int = 256,
        max_bytes: int = 4 << 20,
        same_signal: bool = False,
        include_internal: bool = True,
    ) -> list[Row]:
        """Next rows after :attr:`position` (see :meth:`Spool.read`)."""
        return self.spool.read(
            self.position,
            max_rows=max_rows,
            max_bytes=max_bytes,
            same_signal=same_signal,
            include_internal=include_internal,
        )

    def ack(self, seq: int) -> None:
        """Mark every row up to ``seq`` finished."""
        self.spool.ack(self.name, seq)

    def wait(self, timeout: float) -> bool:
        """Wait for rows after :attr:`position`."""
        return self.spool.wait(self.position, timeout)

    def pending(self) -> tuple[int, int]:
        """``(rows, items)`` not yet finished."""
        return self.spool.pending(self.name)


@runtime_checkable
class SpoolHost(Protocol):
    """A :class:`~otel_agents._component.Host` that also hands out spool cursors (the receiver's
    pipeline); forwarders need it to read what they send."""

    def spool_cursor(self, name: str) -> SpoolCursor:
        """The cursor registered for ``name`` (``exporter/<component id>``)."""
