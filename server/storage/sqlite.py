"""SQLite driver: a revisioned single-table log in the spirit of kine.

Every write appends one row; the row id is the cluster-wide revision.

    kvlog(id, name, created, deleted, create_revision, prev_revision, value, old_value)

- ``prev_revision`` is the id of the key's previous row (0 for a first create),
  and UNIQUE(name, prev_revision) turns a lost create/update race into an
  error instead of a fork of the key's history.
- A delete appends a tombstone (``deleted=1``, ``value`` = the last value).
- ``old_value`` is kept on updates so watch replay can send the previous object
  without a second lookup (tombstones need not repeat it).
- ``meta`` holds the compact revision and compaction progress.

Threads (measured, see bench/storage.py; figures in the module's report):
- One writer thread owns the only write connection and runs group commit:
  every write queued while the previous COMMIT was fsyncing goes into the next
  transaction, so N concurrent writers share one fsync. Doing writes on the
  event loop instead would stall every request, watch and timer for the whole
  fsync (sub-ms on this VM, but 5-50 ms on SD cards and eMMC, the media edge
  boards actually have), and would serialise one fsync per write.
- Reads run on a small pool of read-only connections in threads. WAL readers
  never wait for the writer; each read is one snapshot transaction so the
  revision, compact check and rows agree.
- Committed batches are published to the WatchHub on the loop before the
  writers' futures resolve, so an acknowledged write is already visible to
  watchers and readers (read-your-writes).
"""
from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from edgectl.log import fields

from . import metrics
from .base import (
    Compacted,
    Conflict,
    Event,
    FutureRevision,
    KeyExists,
    KeyValue,
    ListResult,
    NotFound,
    StorageError,
    StorageStats,
)
from .retention import Retention, compaction_target, prune_marks
from .watch import LogWatcher, WatchHub

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS kvlog (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    created INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    value BLOB,
    old_value BLOB
);
CREATE UNIQUE INDEX IF NOT EXISTS kvlog_name_prev_revision ON kvlog (name, prev_revision);
CREATE INDEX IF NOT EXISTS kvlog_name_id ON kvlog (name, id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', 1), ('compact_revision', 0), ('compact_progress', 0);
"""

# Revision as seen inside a read snapshot: sqlite_sequence is transactional and,
# unlike MAX(id), survives compaction removing the newest tombstone.
_SQL_REVISION = "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'kvlog'), 0)"
_SQL_COMPACT = "SELECT value FROM meta WHERE key = 'compact_revision'"
_SQL_LATEST = "SELECT id, create_revision, deleted, value FROM kvlog WHERE name = ? ORDER BY id DESC LIMIT 1"
_SQL_INSERT = (
    "INSERT INTO kvlog (id, name, created, deleted, create_revision, prev_revision, value, old_value)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_REPLAY_CHUNK = 500


@dataclass(frozen=True, slots=True, kw_only=True)
class SQLiteOptions:
    retention: Retention = field(default_factory=Retention)
    compact_interval: float = 300.0  # seconds between compaction runs; 0 disables the timer
    compact_batch: int = 100  # revisions per transaction: ~1-3 ms each here, 500 took 7-14 ms
    # TRUNCATE returns the WAL file to zero bytes so an idle server does not
    # keep a large WAL; measured at ~4 ms here after 5,000 revisions (bench/storage.py); it runs
    # on the writer thread so it cannot interleave with a write.
    checkpoint: Literal["TRUNCATE", "PASSIVE"] = "TRUNCATE"
    watch_buffer: int = 2000  # pending events per watcher before it is ended
    max_write_batch: int = 128  # writes per group commit
    readers: int = 2  # read connections/threads


@dataclass(slots=True)
class _Job:
    fn: Callable[[sqlite3.Connection], Any]
    fut: asyncio.Future[Any]
    exclusive: bool  # runs alone and manages its own transaction


def _prefix_end(prefix: str) -> str | None:
    """Smallest string greater than every string starting with ``prefix``."""
    p = prefix
    while p:
        last = ord(p[-1])
        if last < 0x10FFFF:
            return p[:-1] + chr(last + 1)
        p = p[:-1]
    return None


def _range_sql(prefix: str, column: str = "name") -> tuple[str, list[str]]:
    end = _prefix_end(prefix)
    if end is None:
        return f"{column} >= ?", [prefix]
    return f"{column} >= ? AND {column} < ?", [prefix, end]


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA busy_timeout = 30000")
    if readonly:
        conn.execute("PRAGMA query_only = 1")
    else:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StorageError(f"{path}: cannot switch the database to WAL mode (got {mode})")
        # SQLite's auto-checkpoint (every 1000 pages) stays on, inside the
        # writer's COMMIT. Measured alternative: PASSIVE checkpoints from a
        # separate thread never caught up under steady writes, because a
        # WAL only restarts once fully backfilled; the WAL grew to 160 MB in
        # bench/storage.py, against ~4 MB here at the cost of a ~2 ms p99.
    # FULL: the WAL is fsynced at every COMMIT, so an acknowledged write
    # survives power loss, not only a process crash.
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def _event(row: tuple[Any, ...]) -> Event:
    rid, name, created, deleted, create_rev, prev_rev, value, old_value = row
    if deleted:
        kv = KeyValue(name, value, create_rev, rid)
        return Event("DELETE", kv, KeyValue(name, value, create_rev, prev_rev))
    if created:
        return Event("CREATE", KeyValue(name, value, rid, rid), None)
    return Event("UPDATE", KeyValue(name, value, create_rev, rid), KeyValue(name, old_value, create_rev, prev_rev))


class _Snapshot:
    """One read transaction: everything inside sees the same committed state."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN")
        return self.conn

    def __exit__(self, *exc: object) -> None:
        self.conn.execute("COMMIT")


def _snapshot_revisions(conn: sqlite3.Connection, revision: int) -> tuple[int, int]:
    """(revision to read at, current) inside a snapshot; checks compaction/future."""
    current = conn.execute(_SQL_REVISION).fetchone()[0]
    if revision <= 0:
        return current, current
    if revision > current:
        raise FutureRevision(f"revision {revision} is newer than the current revision {current}")
    compact = conn.execute(_SQL_COMPACT).fetchone()[0]
    if revision < compact:
        raise Compacted(revision, compact)
    return revision, current


class SQLiteBackend:
    """``Backend`` over SQLite. One process owns a database (enforced by a lock file)."""

    def __init__(self, path: Path | str, *, options: SQLiteOptions | None = None) -> None:
        self.path = Path(path)
        self.options = options or SQLiteOptions()
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._rev = 0  # last revision published on the loop
        self._compact_rev = 0
        self._w_rev = 0  # writer thread: last revision assigned (possibly uncommitted)
        self._w_committed = 0
        self._marks: list[tuple[float, int]] = []
        self._compact_lock = asyncio.Lock()
        self._closed = True
        self._lock_fd: int | None = None
        self._thread: threading.Thread | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._reader_conns: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._all_reader_conns: list[sqlite3.Connection] = []
        self._compactor: asyncio.Task[None] | None = None
        self._hub = WatchHub(revision=0, buffer_events=self.options.watch_buffer)

    # -- lifecycle ---------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = self._acquire_lock()
        try:
            wconn = _connect(self.path, readonly=False)
        except sqlite3.Error as exc:
            self._release_lock()
            raise StorageError(f"{self.path}: cannot open database: {exc}") from exc
        self._closed = False
        self._thread = threading.Thread(target=self._writer_main, args=(wconn,), name="storage-writer", daemon=True)
        self._thread.start()
        try:
            self._rev, self._compact_rev = await self._exclusive(self._init_schema)
        except BaseException:
            await self.close()
            raise
        self._hub.revision = self._rev
        for _ in range(max(1, self.options.readers)):
            conn = _connect(self.path, readonly=True)
            self._all_reader_conns.append(conn)
            self._reader_conns.put(conn)
        self._readers = ThreadPoolExecutor(max_workers=len(self._all_reader_conns), thread_name_prefix="storage-read")
        self._marks = [(time.monotonic(), self._rev)]
        if self.options.compact_interval > 0:
            self._compactor = asyncio.create_task(self._compact_loop(), name="storage-compactor")
        metrics.bind(self)
        log.info("storage opened", extra=fields(path=str(self.path), revision=self._rev, compact_revision=self._compact_rev))

    async def close(self) -> None:
        if self._compactor is not None:
            self._compactor.cancel()
            try:
                await self._compactor
            except (asyncio.CancelledError, Exception):
                pass
            self._compactor = None
        self._hub.shutdown()
        if self._thread is not None:
            self._queue.put(None)
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
            self._thread = None
        self._closed = True
        if self._readers is not None:
            self._readers.shutdown(wait=True)
            self._readers = None
        for conn in self._all_reader_conns:
            conn.close()
        self._all_reader_conns.clear()
        self._reader_conns = queue.SimpleQueue()
        self._release_lock()

    def _acquire_lock(self) -> int:
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise StorageError(f"{self.path} is in use by pid {holder}; only one server may open it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None

    def _init_schema(self, conn: sqlite3.Connection) -> tuple[int, int]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for stmt in SCHEMA.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            rev = conn.execute(_SQL_REVISION).fetchone()[0]
            compact = conn.execute(_SQL_COMPACT).fetchone()[0]
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._w_rev = self._w_committed = rev
        return rev, compact

    # -- writer thread -----------------------------------------------------
    def _writer_main(self, conn: sqlite3.Connection) -> None:
        q = self._queue
        stop = False
        try:
            while not stop:
                job = q.get()
                if job is None:
                    break
                if job.exclusive:
                    self._run_exclusive(conn, job)
                    continue
                batch = [job]
                held: _Job | None = None
                while len(batch) < self.options.max_write_batch:
                    try:
                        nxt = q.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop = True
                        break
                    if nxt.exclusive:
                        held = nxt
                        break
                    batch.append(nxt)
                self._run_writes(conn, batch)
                if held is not None:
                    self._run_exclusive(conn, held)
        finally:
            conn.close()

    def _deliver(self, jobs: list[_Job], results: list[Any], events: list[Event], revision: int) -> None:
        try:
            self._loop.call_soon_threadsafe(self._on_commit, jobs, results, events, revision)
        except RuntimeError:  # loop closed: nobody is waiting any more
            pass

    def _run_exclusive(self, conn: sqlite3.Connection, job: _Job) -> None:
        try:
            result: Any = job.fn(conn)
        except BaseException as exc:  # handed to the caller, never kills the thread
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            result = exc
        self._deliver([job], [result], [], self._w_committed)

    def _run_writes(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        results: list[Any] = []
        events: list[Event] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                try:
                    result, evs = job.fn(conn)
                except StorageError as exc:  # a refused op; the others still commit
                    result, evs = exc, []
                except sqlite3.IntegrityError as exc:
                    # UNIQUE(name, prev_revision): someone else wrote this key first.
                    result, evs = Conflict(f"concurrent write: {exc}"), []
                results.append(result)
                events.extend(evs)
            conn.execute("COMMIT")
            self._w_committed = self._w_rev
        except Exception as exc:  # disk full, I/O error, a bug: nothing of the batch is kept
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            self._w_rev = self._w_committed
            log.error("storage write failed; batch rolled back", extra=fields(writes=len(batch), error=repr(exc)))
            results = [StorageError(f"database write failed: {exc}") for _ in batch]
            events = []
        self._deliver(batch, results, events, self._w_committed)

    def _on_commit(self, jobs: list[_Job], results: list[Any], events: list[Event], revision: int) -> None:
        if revision > self._rev:
            self._rev = revision
        self._hub.publish(events, self._rev)
        for job, result in zip(jobs, results):
            if job.fut.done():
                continue
            if isinstance(result, BaseException):
                job.fut.set_exception(result)
            else:
                job.fut.set_result(result)

    def _submit(self, fn: Callable[[sqlite3.Connection], Any], *, exclusive: bool) -> asyncio.Future[Any]:
        if self._closed:
            raise StorageError("storage is closed")
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._queue.put(_Job(fn, fut, exclusive))
        return fut

    async def _exclusive(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._submit(fn, exclusive=True)  # type: ignore[no-any-return]

    async def _write(self, op: str, fn: Callable[[sqlite3.Connection], tuple[KeyValue, list[Event]]]) -> KeyValue:
        t0 = time.perf_counter()
        try:
            return await self._submit(fn, exclusive=False)  # type: ignore[no-any-return]
        finally:
            metrics.OPERATION_SECONDS.labels(operation=op).observe(time.perf_counter() - t0)

    def _append(self, conn: sqlite3.Connection, name: str, *, created: bool, deleted: bool,
                create_revision: int | None, prev_revision: int, value: bytes, old_value: bytes | None) -> int:
        rid = self._w_rev + 1
        conn.execute(_SQL_INSERT, (rid, name, int(created), int(deleted),
                                   rid if create_revision is None else create_revision,
                                   prev_revision, value, old_value))
        self._w_rev = rid  # only after the INSERT succeeded
        return rid

    # -- writes ------------------------------------------------------------
    async def create(self, key: str, value: bytes) -> KeyValue:
        _check_key(key)

        def op(conn: sqlite3.Connection) -> tuple[KeyValue, list[Event]]:
            row = conn.execute(_SQL_LATEST, (key,)).fetchone()
            if row is not None and not row[2]:
                raise KeyExists(key)
            rid = self._append(conn, key, created=True, deleted=False, create_revision=None,
                               prev_revision=row[0] if row else 0, value=value, old_value=None)
            kv = KeyValue(key, value, rid, rid)
            return kv, [Event("CREATE", kv, None)]

        return await self._write("create", op)

    async def update(self, key: str, value: bytes, *, expected_revision: int) -> KeyValue:
        _check_key(key)

        def op(conn: sqlite3.Connection) -> tuple[KeyValue, list[Event]]:
            rid_prev, create_rev, old = _live(conn, key, expected_revision=expected_revision)
            rid = self._append(conn, key, created=False, deleted=False, create_revision=create_rev,
                               prev_revision=rid_prev, value=value, old_value=old)
            kv = KeyValue(key, value, create_rev, rid)
            return kv, [Event("UPDATE", kv, KeyValue(key, old, create_rev, rid_prev))]

        return await self._write("update", op)

    async def delete(self, key: str, *, expected_revision: int | None = None) -> KeyValue:
        _check_key(key)

        def op(conn: sqlite3.Connection) -> tuple[KeyValue, list[Event]]:
            rid_prev, create_rev, old = _live(conn, key, expected_revision=expected_revision)
            rid = self._append(conn, key, created=False, deleted=True, create_revision=create_rev,
                               prev_revision=rid_prev, value=old, old_value=None)
            kv = KeyValue(key, old, create_rev, rid)
            return kv, [Event("DELETE", kv, KeyValue(key, old, create_rev, rid_prev))]

        return await self._write("delete", op)

    # -- reads -------------------------------------------------------------
    def _with_reader(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._reader_conns.get()
        try:
            return fn(conn)
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._reader_conns.put(conn)

    async def _read(self, op: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed or self._readers is None:
            raise StorageError("storage is closed")
        t0 = time.perf_counter()
        try:
            return await self._loop.run_in_executor(self._readers, self._with_reader, fn)
        except sqlite3.Error as exc:
            raise StorageError(f"database read failed: {exc}") from exc
        finally:
            metrics.OPERATION_SECONDS.labels(operation=op).observe(time.perf_counter() - t0)

    async def current_revision(self) -> int:
        return self._rev

    async def get(self, key: str, *, revision: int = 0) -> KeyValue | None:
        def op(conn: sqlite3.Connection) -> KeyValue | None:
            with _Snapshot(conn):
                at, _ = _snapshot_revisions(conn, revision)
                row = conn.execute(
                    "SELECT id, create_revision, deleted, value FROM kvlog WHERE name = ? AND id <= ?"
                    " ORDER BY id DESC LIMIT 1", (key, at)).fetchone()
            if row is None or row[2]:
                return None
            return KeyValue(key, row[3], row[1], row[0])

        return await self._read("get", op)

    async def list(self, prefix: str, *, revision: int = 0, start_after: str = "", limit: int = 0) -> ListResult:
        where, args = _range_sql(prefix, "k.name")

        def op(conn: sqlite3.Connection) -> ListResult:
            with _Snapshot(conn):
                at, _ = _snapshot_revisions(conn, revision)
                # Walk names in key order over the (name, id) index; for each row
                # keep it only if it is the key's newest row at ``at``. This stops
                # after ``limit`` hits, so paging does not rescan the whole range.
                sql = (f"SELECT k.name, k.value, k.create_revision, k.id FROM kvlog k WHERE {where}"
                       " AND k.name > ? AND k.id = (SELECT MAX(id) FROM kvlog WHERE name = k.name AND id <= ?)"
                       " AND k.deleted = 0 ORDER BY k.name")
                params: list[Any] = [*args, start_after, at]
                if limit > 0:
                    sql += " LIMIT ?"
                    params.append(limit + 1)
                rows = conn.execute(sql, params).fetchall()
            more = limit > 0 and len(rows) > limit
            if more:
                rows = rows[:limit]
            return ListResult([KeyValue(r[0], r[1], r[2], r[3]) for r in rows], at, more)

        return await self._read("list", op)

    async def count(self, prefix: str) -> int:
        where, args = _range_sql(prefix, "k.name")

        def op(conn: sqlite3.Connection) -> int:
            return int(conn.execute(
                f"SELECT COUNT(*) FROM kvlog k WHERE {where}"
                " AND k.id = (SELECT MAX(id) FROM kvlog WHERE name = k.name) AND k.deleted = 0", args).fetchone()[0])

        return await self._read("count", op)

    # -- watch -------------------------------------------------------------
    def watch(self, prefix: str, *, start_revision: int) -> LogWatcher:
        """Events with revision > ``start_revision`` (history first, then live).
        Raises Compacted at once when that history is gone. There is no "from
        now" shortcut: pass the revision of the list the client holds, so no
        write between the list and the watch can be missed."""
        if self._closed:
            raise StorageError("storage is closed")
        if start_revision < 0:
            raise ValueError("start_revision must be >= 0")
        if start_revision < self._compact_rev:
            raise Compacted(start_revision, self._compact_rev)
        return self._hub.watcher(prefix, start_revision=start_revision, replay=self._replay)

    async def _replay(self, after: int, upto: int, prefix: str) -> tuple[list[Event], int] | None:
        where, args = _range_sql(prefix)

        def op(conn: sqlite3.Connection) -> tuple[list[Event], int] | None:
            with _Snapshot(conn):
                if after < conn.execute(_SQL_COMPACT).fetchone()[0]:
                    return None  # compaction overtook this replay
                rows = conn.execute(
                    "SELECT id, name, created, deleted, create_revision, prev_revision, value, old_value"
                    f" FROM kvlog WHERE id > ? AND id <= ? AND {where} ORDER BY id LIMIT ?",
                    [after, upto, *args, _REPLAY_CHUNK]).fetchall()
            scanned_to = upto if len(rows) < _REPLAY_CHUNK else rows[-1][0]
            return [_event(r) for r in rows], scanned_to

        return await self._read("watch_replay", op)

    # -- compaction ----------------------------------------------------------
    async def _compact_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.compact_interval)
            try:
                await self.run_compaction()
            except asyncio.CancelledError:
                raise
            except Exception:  # a failed run must not stop later runs (kine#414)
                log.exception("storage compaction failed; will retry next interval")

    async def run_compaction(self, *, now: float | None = None) -> int:
        """One timer tick: record a time mark and compact what the retention allows."""
        now = time.monotonic() if now is None else now
        self._marks.append((now, self._rev))
        r = self.options.retention
        target = compaction_target(current=self._rev, compact_revision=self._compact_rev,
                                   marks=self._marks, now=now, retention=r)
        self._marks = prune_marks(self._marks, now=now, retention=r)
        return await self.compact(target)

    async def compact(self, revision: int) -> int:
        async with self._compact_lock:
            revision = min(revision, self._rev)
            t0 = time.perf_counter()
            prev, progress = await self._exclusive(lambda c: _set_compact(c, revision))
            self._compact_rev = max(prev, revision)
            if progress >= self._compact_rev:
                return self._compact_rev
            removed = 0
            lo = progress
            while lo < self._compact_rev:
                hi = min(lo + self.options.compact_batch, self._compact_rev)
                removed += await self._exclusive(lambda c, lo=lo, hi=hi: _compact_window(c, lo, hi))
                lo = hi
            mode = self.options.checkpoint
            busy, wal_frames, done = await self._exclusive(
                lambda c: c.execute(f"PRAGMA wal_checkpoint({mode})").fetchone())
            elapsed = time.perf_counter() - t0
            metrics.COMPACTION_SECONDS.observe(elapsed)
            metrics.COMPACTED_ROWS.inc(removed)
            log.info("storage compacted", extra=fields(
                compact_revision=self._compact_rev, rows_removed=removed, ms=round(elapsed * 1e3, 1),
                checkpoint=mode, checkpoint_busy=busy, wal_frames=wal_frames))
            return self._compact_rev

    # -- stats / metrics -----------------------------------------------------
    def metric_db_size(self) -> int:
        size = 0
        for suffix in ("", "-wal"):
            try:
                size += os.stat(f"{self.path}{suffix}").st_size
            except FileNotFoundError:
                pass
        return size

    def metric_revision(self) -> int:
        return self._rev

    def metric_compact_revision(self) -> int:
        return self._compact_rev

    @property
    def watcher_count(self) -> int:
        return len(self._hub)

    async def stats(self) -> StorageStats:
        keys = await self.count("")
        return StorageStats(revision=self._rev, compact_revision=self._compact_rev,
                            db_size_bytes=self.metric_db_size(), keys=keys)


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not key:
        raise ValueError("storage keys are non-empty strings")


def _live(conn: sqlite3.Connection, key: str, *, expected_revision: int | None) -> tuple[int, int, bytes]:
    """The key's current revision, create revision and value, for a write guarded by
    ``expected_revision`` (None: any): NotFound when it is absent or deleted, Conflict
    when it has moved on."""
    row = conn.execute(_SQL_LATEST, (key,)).fetchone()
    if row is None or row[2]:
        raise NotFound(key)
    rid_prev, create_rev, _, old = row
    if expected_revision is not None and rid_prev != expected_revision:
        raise Conflict(f"{key}: expected revision {expected_revision}, current is {rid_prev}")
    return rid_prev, create_rev, old


def _set_compact(conn: sqlite3.Connection, revision: int) -> tuple[int, int]:
    """Publish the new compact revision first: from this commit on, reads below it
    get Compacted, so the batches that follow never pull rows from under a reader."""
    conn.execute("BEGIN IMMEDIATE")
    prev = conn.execute(_SQL_COMPACT).fetchone()[0]
    progress = conn.execute("SELECT value FROM meta WHERE key = 'compact_progress'").fetchone()[0]
    if revision > prev:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'compact_revision'", (revision,))
    conn.execute("COMMIT")
    return prev, progress


def _compact_window(conn: sqlite3.Connection, lo: int, hi: int) -> int:
    """Drop rows superseded by a write in (lo, hi], and tombstones in (lo, hi]."""
    conn.execute("BEGIN IMMEDIATE")
    n = conn.execute(
        "DELETE FROM kvlog WHERE id IN (SELECT prev_revision FROM kvlog WHERE id > ? AND id <= ? AND prev_revision > 0)",
        (lo, hi)).rowcount
    n += conn.execute("DELETE FROM kvlog WHERE id > ? AND id <= ? AND deleted = 1", (lo, hi)).rowcount
    # Progress lets an interrupted compaction resume where it stopped.
    conn.execute("UPDATE meta SET value = ? WHERE key = 'compact_progress'", (hi,))
    conn.execute("COMMIT")
    return n
