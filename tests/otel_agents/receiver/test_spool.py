# SPDX-License-Identifier: Apache-2.0
"""The SQLite spool: commit before ack, cursors, retention, byte cap, storage failures (RC-08)."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from otel_agents._errors import RetryableError
from otel_agents.receiver._spool import DB_NAME, Spool, SpoolInUseError


def _fill(spool: Spool, n: int, size: int = 100) -> list[int]:
    return [spool.append("traces", bytes([i % 256]) * size, 1) for i in range(n)]


def test_append_is_visible_to_a_new_connection_before_it_returns(tmp_path: Path) -> None:
    """A committed row is readable by another SQLite connection as soon as append returns."""
    spool = Spool(tmp_path, cursors=["a"])
    seq = spool.append("traces", b"payload", 3)
    other = sqlite3.connect(tmp_path / DB_NAME)
    assert other.execute("SELECT payload, items FROM batches WHERE seq=?", (seq,)).fetchone() == (
        b"payload",
        3,
    )
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    other.close()
    spool.close()


def test_each_cursor_reads_independently_and_resumes_after_reopen(tmp_path: Path) -> None:
    """Cursors advance separately and their positions survive closing and reopening."""
    spool = Spool(tmp_path, cursors=["a", "b"])
    seqs = _fill(spool, 5)
    a, b = spool.cursor("a"), spool.cursor("b")
    assert [r.seq for r in a.read()] == seqs
    a.ack(seqs[2])
    assert [r.seq for r in a.read()] == seqs[3:]
    assert [r.seq for r in b.read()] == seqs
    spool.close()
    spool = Spool(tmp_path, cursors=["a", "b"])
    assert [r.seq for r in spool.cursor("a").read()] == seqs[3:]
    assert spool.cursor("b").pending() == (5, 5)
    spool.close()


def test_new_cursor_starts_at_the_end_and_removed_cursor_stops_pinning(tmp_path: Path) -> None:
    """A reader added later gets only new rows; a reader taken out no longer holds rows back."""
    spool = Spool(tmp_path, cursors=["old"])
    _fill(spool, 3)
    spool.close()
    spool = Spool(tmp_path, cursors=["new"])
    assert spool.cursor("new").read() == []
    assert spool.compact() == 3
    assert spool.bytes == 0
    spool.close()


def test_compact_deletes_only_rows_every_cursor_passed(tmp_path: Path) -> None:
    """Retention keeps every row some cursor still needs and updates the byte/item gauges."""
    spool = Spool(tmp_path, cursors=["a", "b"])
    seqs = _fill(spool, 4, size=10)
    spool.ack("a", seqs[3])
    spool.ack("b", seqs[1])
    assert spool.compact() == 2
    assert spool.bytes == 20
    assert spool.items()["traces"] == 2
    assert [r.seq for r in spool.cursor("b").read()] == seqs[2:]
    spool.close()


def test_byte_cap_refuses_with_retryable_error_and_recovers_when_readers_catch_up(
    tmp_path: Path,
) -> None:
    """When a lagging cursor pins max_bytes, append throttles instead of dropping anything."""
    spool = Spool(tmp_path, cursors=["slow"], max_bytes=1000, retry_after=2.5)
    seqs = _fill(spool, 10)
    with pytest.raises(RetryableError) as err:
        spool.append("traces", b"x" * 100, 1)
    assert err.value.retry_after == 2.5
    assert spool.cursor("slow").pending() == (10, 10)
    spool.ack("slow", seqs[4])
    assert spool.append("traces", b"x" * 100, 1) > seqs[-1]
    spool.close()


def test_retention_age_drops_and_counts_rows_a_dead_reader_never_took(tmp_path: Path) -> None:
    """Rows older than retention are dropped for a reader that did not take them, and counted."""
    spool = Spool(tmp_path, cursors=["dead"], retention=60.0)
    now = time.time()
    spool.append("traces", b"old", 7, received_at=now - 120)
    keep = spool.append("traces", b"new", 2, received_at=now)
    spool.compact(now=now)
    assert [r.seq for r in spool.cursor("dead").read()] == [keep]
    assert spool.take_expired("dead") == 7
    assert spool.take_expired("dead") == 0
    spool.close()


def test_read_groups_same_signal_rows_and_skips_internal_ones_on_request(tmp_path: Path) -> None:
    """Same-signal reads stop at a signal change; analysis reads skip receiver-made rows."""
    spool = Spool(tmp_path, cursors=["a"])
    s1 = spool.append("traces", b"t1", 1)
    s2 = spool.append("traces", b"t2", 1)
    s3 = spool.append("logs", b"l1", 1, internal=True)
    s4 = spool.append("metrics", b"m1", 1)
    assert [r.seq for r in spool.read(0, same_signal=True)] == [s1, s2]
    assert [r.seq for r in spool.read(s2, include_internal=False)] == [s4]
    only_internal = spool.read(s2, max_rows=1, include_internal=False)
    assert [(r.seq, r.internal) for r in only_internal] == [(s3, True)]
    spool.close()


def test_wait_wakes_a_reader_when_a_row_is_committed(tmp_path: Path) -> None:
    """A reader blocked in wait() returns promptly once another thread appends."""
    spool = Spool(tmp_path, cursors=["a"])
    woke: list[bool] = []
    t = threading.Thread(target=lambda: woke.append(spool.cursor("a").wait(5.0)))
    t.start()
    time.sleep(0.05)
    spool.append("traces", b"x", 1)
    t.join(5.0)
    assert woke == [True]
    spool.close()


def test_rc08_disk_full_is_a_retryable_refusal_and_recovers(tmp_path: Path) -> None:
    """RC-08: SQLITE_FULL (PRAGMA max_page_count) refuses retryably, keeps rows, then recovers."""
    spool = Spool(tmp_path, cursors=["a"])
    acked = _fill(spool, 3, size=1000)
    conn = spool._conn  # the spool's own connection: max_page_count is per connection
    assert conn is not None
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count={pages}")
    with pytest.raises(RetryableError, match="disk_full"):
        for _ in range(50):  # fills the free pages left, then fails; bounded
            acked.append(spool.append("traces", b"y" * 4000, 1))
    assert not spool.healthy and spool.problem == "disk_full"
    assert not spool.check()
    conn.execute(f"PRAGMA max_page_count={pages * 100}")
    assert spool.check()
    acked.append(spool.append("traces", b"z", 1))
    assert [r.seq for r in spool.cursor("a").read(max_rows=1000)] == acked
    assert spool.integrity_check() == "ok"
    spool.close()


def test_rc08_deleted_database_file_is_recreated_with_every_pending_row(tmp_path: Path) -> None:
    """RC-08: deleting spool.db under a running spool loses nothing: pending rows move over."""
    spool = Spool(tmp_path, cursors=["a"])
    seqs = _fill(spool, 5)
    spool.ack("a", seqs[1])
    os.unlink(tmp_path / DB_NAME)
    assert spool.check()  # the rescue runs inside check() and succeeds
    new_seq = spool.append("traces", b"after", 1)
    assert new_seq > seqs[-1]
    assert (tmp_path / DB_NAME).exists()
    assert [r.seq for r in spool.cursor("a").read()] == [*seqs[2:], new_seq]
    spool.close()
    reopened = Spool(tmp_path, cursors=["a"])
    assert [r.seq for r in reopened.cursor("a").read()] == [*seqs[2:], new_seq]
    reopened.close()


def test_rc08_unwritable_data_dir_refuses_until_it_can_be_created(tmp_path: Path) -> None:
    """RC-08: when the database cannot be (re)created the spool refuses, then heals by itself."""
    data = tmp_path / "data"
    spool = Spool(data, cursors=["a"])
    seqs = _fill(spool, 2)
    os.unlink(data / DB_NAME)
    for f in data.iterdir():
        f.unlink()
    data.rmdir()
    data.write_bytes(b"not a directory")  # the path is now taken by a file
    with pytest.raises(RetryableError):
        spool.append("traces", b"refused", 1)
    assert spool.problem == "deleted"
    data.unlink()
    seq = spool.append("traces", b"accepted", 1)
    assert [r.seq for r in spool.cursor("a").read()] == [*seqs, seq]
    spool.close()


def test_closed_spool_refuses_retryably(tmp_path: Path) -> None:
    """After close (shutdown) appends get a retryable refusal, not an exception of another kind."""
    spool = Spool(tmp_path)
    spool.close()
    with pytest.raises(RetryableError):
        spool.append("traces", b"x", 1)


def test_a_lossy_reader_skips_ahead_instead_of_making_the_spool_refuse(tmp_path: Path) -> None:
    """A lagging lossy reader (analysis) is moved to the slowest other reader when the cap is hit,
    with the skipped items counted; a lagging normal reader still makes the spool refuse."""
    spool = Spool(tmp_path, cursors=["fwd", "analysis"], lossy_cursors=["analysis"], max_bytes=1000)
    seqs = _fill(spool, 10)
    spool.ack("fwd", seqs[-1])
    seq = spool.append("traces", b"x" * 100, 1)  # accepted: analysis gave way
    assert spool.position("analysis") == seqs[-1]
    assert spool.take_expired("analysis") == 10
    assert [r.seq for r in spool.cursor("analysis").read()] == [seq]
    _fill(spool, 9)  # the forwarder does not ack these: now it pins the spool
    with pytest.raises(RetryableError):
        spool.append("traces", b"x" * 100, 1)
    spool.close()


class SpoolMachine(RuleBasedStateMachine):
    """Stateful model (reliability.md §5.1): append / read+ack / reopen / disk full / compact.

    Invariant: every acknowledged append is either still readable by a cursor that has not
    passed it or was passed by that cursor; nothing is ever lost or reordered, and the byte
    gauge matches the table.
    """

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="spool-sm-"))
        self.spool = Spool(self.dir, cursors=["a", "b"], max_bytes=20_000)
        self.acked: list[int] = []
        self.passed = {"a": 0, "b": 0}

    @rule(size=st.integers(1, 3000))
    def append(self, size: int) -> None:
        # A refusal means the sender keeps the data and retries: nothing to check.
        with contextlib.suppress(RetryableError):
            self.acked.append(self.spool.append("traces", b"p" * size, 1))

    @rule(name=st.sampled_from(["a", "b"]), n=st.integers(1, 5))
    def consume(self, name: str, n: int) -> None:
        rows = self.spool.cursor(name).read(max_rows=n)
        expected = [s for s in self.acked if s > self.passed[name]][: len(rows)]
        assert [r.seq for r in rows] == expected
        if rows:
            self.spool.ack(name, rows[-1].seq)
            self.passed[name] = rows[-1].seq

    @rule()
    def crash_and_reopen(self) -> None:
        conn = self.spool._conn
        if conn is not None:
            conn.close()  # no checkpoint, no cleanup: like a killed process
        if self.spool._lock_fd is not None:
            os.close(self.spool._lock_fd)  # the kernel drops a dead process's flock
            self.spool._lock_fd = None
        self.spool = Spool(self.dir, cursors=["a", "b"], max_bytes=20_000)

    @rule(full=st.booleans())
    def disk(self, full: bool) -> None:
        conn = self.spool._conn
        if conn is not None:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count={pages if full else 1_000_000}")
            if not full:
                self.spool.check()

    @rule()
    def compact(self) -> None:
        self.spool.compact()

    @invariant()
    def nothing_acked_is_lost(self) -> None:
        for name in ("a", "b"):
            pending = [s for s in self.acked if s > self.passed[name]]
            assert self.spool.cursor(name).pending()[0] == len(pending)

    def teardown(self) -> None:
        self.spool.close()
        shutil.rmtree(self.dir, ignore_errors=True)


TestSpoolMachine = SpoolMachine.TestCase
TestSpoolMachine.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)


def test_a_data_dir_it_creates_is_owner_only(tmp_path: Path) -> None:
    """The spool creates its directory with mode 0700 (it holds other systems' telemetry)."""
    spool = Spool(tmp_path / "new", cursors=["a"])
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o700
    spool.close()


def test_compaction_gives_freed_pages_back(tmp_path: Path) -> None:
    """After readers pass a large backlog the file shrinks (auto_vacuum=INCREMENTAL)."""
    spool = Spool(tmp_path, cursors=["a"])
    seqs = _fill(spool, 200, size=20_000)
    conn = spool._conn
    assert conn is not None
    before = conn.execute("PRAGMA page_count").fetchone()[0]
    spool.ack("a", seqs[-1])
    spool.compact()
    after = conn.execute("PRAGMA page_count").fetchone()[0]
    assert after < before / 4
    spool.close()
    assert (tmp_path / DB_NAME).stat().st_size < 1_000_000


def test_two_receivers_cannot_share_a_data_dir(tmp_path: Path) -> None:
    """A second spool on a directory in use fails with a config error naming data_dir; the
    lock goes with the first spool (close, or the process dying)."""
    first = Spool(tmp_path, cursors=["a"])
    with pytest.raises(SpoolInUseError, match=r"^storage\.data_dir: .* is in use"):
        Spool(tmp_path, cursors=["a"])
    first.close()
    Spool(tmp_path, cursors=["a"]).close()


def test_a_spool_written_by_the_previous_schema_opens_counts_and_compacts(tmp_path: Path) -> None:
    """A spool.db without nbytes (payload before items) is upgraded in place and keeps its rows."""
    old = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)
    old.execute("PRAGMA journal_mode=WAL")
    old.executescript(
        """
        CREATE TABLE batches (seq INTEGER PRIMARY KEY AUTOINCREMENT, signal INTEGER NOT NULL,
            payload BLOB NOT NULL, items INTEGER NOT NULL, received_at REAL NOT NULL,
            internal INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE cursors (name TEXT PRIMARY KEY, seq INTEGER NOT NULL);
        INSERT INTO cursors VALUES ('a', 0);
        """
    )
    for signal, size, items in ((0, 30_000, 4), (2, 500, 2), (0, 700, 1)):
        old.execute(
            "INSERT INTO batches(signal, payload, items, received_at) VALUES (?, ?, ?, 1.0)",
            (signal, b"x" * size, items),
        )
    old.close()
    spool = Spool(tmp_path, cursors=["a"])
    assert spool.bytes == 31_200
    assert spool.items() == {"traces": 5, "metrics": 0, "logs": 2}
    rows = spool.cursor("a").read()
    assert [(r.signal, len(r.payload), r.items) for r in rows] == [
        ("traces", 30_000, 4), ("logs", 500, 2), ("traces", 700, 1),
    ]  # fmt: skip
    seq = spool.append("metrics", b"y" * 100, 3)
    spool.ack("a", rows[1].seq)
    assert spool.compact() == 2
    assert spool.bytes == 800 and spool.items() == {"traces": 1, "metrics": 3, "logs": 0}
    assert [r.seq for r in spool.cursor("a").read()] == [rows[2].seq, seq]
    spool.close()


def test_compaction_reads_no_payload_of_the_rows_it_deletes(tmp_path: Path) -> None:
    """Counting what compaction removes uses the small columns only (not the blobs' pages)."""
    spool = Spool(tmp_path, cursors=["a"])
    conn = spool._conn
    assert conn is not None
    names = [row[1] for row in conn.execute("PRAGMA table_info(batches)")]
    assert names[-1] == "payload" and "nbytes" in names
    from otel_agents.receiver import _spool

    for sql in (_spool._TOTALS_SQL, _spool._TOTALS_UPTO_SQL):
        plan = " ".join(
            str(r[-1]) for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", (1,)[: sql.count("?")])
        )
        assert "TEMP B-TREE" not in plan, plan  # no sorter that would copy the payloads
    spool.close()


def _append_in_threads(spool: Spool, payloads: list[bytes]) -> list[int | BaseException]:
    """Start one append per payload on its own thread while the test holds the commit lock."""
    results: list[int | BaseException] = [0] * len(payloads)

    def run(i: int) -> None:
        try:
            results[i] = spool.append("traces", payloads[i], i + 1)
        except BaseException as exc:  # handed back to the test thread
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(payloads))]
    with spool._lock:  # a commit in progress: every append queues behind it
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while len(spool._queue) < len(payloads) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert len(spool._queue) == len(payloads)
        assert results == [0] * len(payloads)  # nobody is acknowledged before the commit
    for t in threads:
        t.join(10)
    return results


def test_appends_queued_behind_a_commit_share_one_transaction(tmp_path: Path) -> None:
    """Appends arriving during a commit are committed together, each with its own seq."""
    spool = Spool(tmp_path, cursors=["a"])
    before = spool.transactions
    payloads = [bytes([i]) * (1000 + i) for i in range(6)]
    results = _append_in_threads(spool, payloads)
    assert spool.transactions == before + 1
    seqs = [r for r in results if isinstance(r, int)]
    assert sorted(seqs) == list(range(1, 7))
    other = sqlite3.connect(tmp_path / DB_NAME)
    stored = {
        (int(items), bytes(payload)): seq
        for seq, items, payload in other.execute("SELECT seq, items, payload FROM batches")
    }
    other.close()
    for i, seq in enumerate(seqs):
        assert stored[(i + 1, payloads[i])] == seq  # each caller got the seq of its own row
    in_order = [p for _, p in sorted(zip(seqs, payloads, strict=True))]
    assert [r.payload for r in spool.cursor("a").read()] == in_order
    spool.close()


def test_group_commit_refuses_only_what_does_not_fit(tmp_path: Path) -> None:
    """In one group, the requests past the byte cap are refused and the others stored."""
    spool = Spool(tmp_path, max_bytes=2500, cursors=["a"])
    results = _append_in_threads(spool, [b"x" * 1000] * 3)
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(refused) == 1 and isinstance(refused[0], RetryableError)
    assert "full" in str(refused[0])
    assert spool.bytes == 2000
    assert len(spool.cursor("a").read()) == 2
    spool.close()


def test_readers_get_the_same_bytes_from_memory_and_from_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows whose payload left the in-memory cache are read back from SQLite unchanged."""
    from otel_agents.receiver import _spool

    monkeypatch.setattr(_spool, "_RECENT_BYTES", 2500)
    spool = Spool(tmp_path, cursors=["a"])
    payloads = [os.urandom(1000) for _ in range(5)]
    seqs = [spool.append("traces", p, 1) for p in payloads]
    assert list(spool._recent) == seqs[-2:]  # the cache holds the newest rows only
    rows = spool.cursor("a").read()
    assert [r.payload for r in rows] == payloads
    assert [r.seq for r in rows] == seqs
    # The byte bound applies to rows read from disk and from memory alike.
    assert [r.seq for r in spool.cursor("a").read(max_bytes=2500)] == seqs[:2]
    spool.cursor("a").ack(seqs[-1])
    spool.compact()
    assert not spool._recent
    spool.close()
    reopened = Spool(tmp_path, cursors=["a"])
    seq = reopened.append("traces", b"after reopen", 1)
    assert [r.payload for r in reopened.cursor("a").read()] == [b"after reopen"]
    assert seq > seqs[-1]
    reopened.close()


def test_rows_every_reader_finished_go_in_the_next_append(tmp_path: Path) -> None:
    """An append deletes the rows all readers have passed in its own transaction."""
    spool = Spool(tmp_path, cursors=["a", "b"])
    seqs = _fill(spool, 4, size=1000)
    spool.cursor("a").ack(seqs[2])
    spool.cursor("b").ack(seqs[1])
    new = spool.append("logs", b"y" * 500, 7)
    other = sqlite3.connect(tmp_path / DB_NAME)
    assert [r[0] for r in other.execute("SELECT seq FROM batches ORDER BY seq")] == [
        seqs[2],
        seqs[3],
        new,
    ]
    other.close()
    assert spool.bytes == 2500
    assert spool.items() == {"traces": 2, "metrics": 0, "logs": 7}
    assert [r.seq for r in spool.cursor("b").read()] == [seqs[2], seqs[3], new]
    spool.close()


def test_without_readers_an_append_leaves_only_its_own_rows(tmp_path: Path) -> None:
    """With no reader configured, nothing is kept past the next append (ingest-only set-ups)."""
    spool = Spool(tmp_path)
    _fill(spool, 3)
    last = spool.append("traces", b"z" * 10, 1)
    other = sqlite3.connect(tmp_path / DB_NAME)
    assert [r[0] for r in other.execute("SELECT seq FROM batches")] == [last]
    other.close()
    assert spool.bytes == 10 and spool.items()["traces"] == 1
    spool.close()
