"""Storage contract suite, parametrised over drivers.

Every test in the first part runs against each entry of DRIVERS; an etcd
driver (HA issue) adds one factory there. Driver-specific tests (SQLite's
durability, unique index, lock file, retention) follow at the end.
"""
from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from edgectl.server.storage.base import (
    Backend,
    Compacted,
    Conflict,
    Event,
    FutureRevision,
    KeyExists,
    NotFound,
    StorageError,
)
from edgectl.server.storage.retention import Retention, compaction_target, prune_marks
from edgectl.server.storage.sqlite import SQLiteBackend, SQLiteOptions


def _sqlite(tmp: Path, **opts: Any) -> Backend:
    return SQLiteBackend(tmp / "state.db", options=SQLiteOptions(compact_interval=0, **opts))


# name -> factory(tmp_path, **driver options) ; etcd slots in here.
DRIVERS: dict[str, Callable[..., Backend]] = {"sqlite": _sqlite}


@pytest.fixture(params=sorted(DRIVERS))
def run(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., None]:
    """run(body, **opts): open a fresh backend, await body(backend), close it."""
    factory = DRIVERS[request.param]

    def runner(body: Callable[[Backend], Awaitable[None]], **opts: Any) -> None:
        async def main() -> None:
            b = factory(tmp_path, **opts)
            await b.start()
            try:
                await asyncio.wait_for(body(b), 60)
            finally:
                await b.close()

        asyncio.run(main())

    return runner


async def collect(w: Any, n: int, *, timeout: float = 5.0) -> list[Event]:
    """The first n events of a watcher (fails on timeout)."""
    out: list[Event] = []

    async def go() -> None:
        async for batch in w:
            out.extend(batch)
            if len(out) >= n:
                return

    await asyncio.wait_for(go(), timeout)
    return out


# ---------------------------------------------------------------- contract
def test_create_then_exists(run: Callable[..., None]) -> None:
    async def body(b: Backend) -> None:
        kv = await b.create("/registry/pods/ns/a", b"v1")
        assert kv.create_revision == kv.mod_revision == await b.current_revision()
        with pytest.raises(KeyExists):
            await b.create("/registry/pods/ns/a", b"v2")
        got = await b.get("/registry/pods/ns/a")
        assert got is not None and got.value == b"v1" and got.mod_revision == kv.mod_revision
        assert await b.get("/registry/pods/ns/missing") is None

    run(body)


def test_update_compare_and_swap(run: Callable[..., None]) -> None:
    async def body(b: Backend) -> None:
        kv = await b.create("/k", b"1")
        kv2 = await b.update("/k", b"2", expected_revision=kv.mod_revision)
        assert kv2.mod_revision > kv.mod_revision and kv2.create_revision == kv.create_revision
        with pytest.raises(Conflict):
            await b.update("/k", b"3", expected_revision=kv.mod_revision)  # stale
        assert (await b.get("/k")).value == b"2"  # type: ignore[union-attr]
        with pytest.raises(NotFound):
            await b.update("/nope", b"x", expected_revision=1)

    run(body)


def test_concurrent_updates_one_wins(run: Callable[..., None]) -> None:
    async def body(b: Backend) -> None:
        kv = await b.create("/k", b"0")
        results = await asyncio.gather(
            *(b.update("/k", str(i).encode(), expected_revision=kv.mod_revision) for i in range(20)),
            return_exceptions=True)
        wins = [r for r in results if not isinstance(r, BaseException)]
        assert len(wins) == 1
        assert all(isinstance(r, Conflict) for r in results if isinstance(r, BaseException))
        assert (await b.get("/k")).value == wins[0].value  # type: ignore[union-attr]

    run(body)


def test_concurrent_creates_exactly_one_wins(run: Callable[..., None]) -> None:
    async def body(b: Backend) -> None:
        results = await asyncio.gather(*(b.create("/race", str(i).encode()) for i in range(50)),
                                       return_exceptions=True)
        wins = [r for r in results if not isinstance(r, BaseException)]
        assert len(wins) == 1
        assert sum(isinstance(r, KeyExists) for r in results) == 49
        got = await b.get("/race")
        assert got is not None and got.value == wins[0].value

    run(body)


def test_delete_is_a_tombstone(run: Callable[..., None]) -> None:
    async def body(b: Backend) -> None:
        kv = await b.create("/k", b"1")
        with pytest.raises(Conflict):
            await b.delete("/k", expected_revision=kv.mod_revision + 100)
        gone = await b.delete("/k", expected_revision=kv.mod_revision)
        assert gone.value == b"1" and gone.mod_revision > kv.mod_revision
        assert await b.get("/k") is None
        with pytest.raises(NotFound):
            await b.delete("/k")
        # history still answers at the old revision
        old = await b.get("/k", revision=kv.mod_revision)
        assert old is not None and old.value == b"1"
        # and the key can be created again, with a fresh create_revision
        again = await b.create("/k", b"2")
        assert again.create_revision == again.mod_revision > gone.mod_revision
        assert (await b.list("/")).items == [again]

    run(body)


def test_get_at_revision(run: Callable[..., None]) -> None:
    async def body(b: Backend) -> None:
        revs = []
        await b.create("/other", b"x")
        kv = await b.create("/k", b"0")
        revs.append(kv.mod_revision)
        for i in range(1, 5):
            kv = await b.update("/k", str(i).encode(), expected_revision=kv.mod_revision)
            revs.append(kv.mod_revision)
        for i, r in enumerate(revs):
            got = await b.get("/k", revision=r)
            assert got is not None and got.value == str(i).encode() and got.mod_revision == r
        assert await b.get("/k", revision=revs[0] - 1) is None  # before it existed
        with pytest.raises(FutureRevision):
            await b.get("/k", revision=revs[-1] + 10)

    run(body)


def test_list_prefix_and_paging(run: Callable[..., None]) -> None:
    async def body(b: Backend) -> None:
        for i in range(25):
            await b.create(f"/registry/pods/ns/p{i:02d}", b"x")
        await b.create("/registry/pods/other/p", b"x")
        await b.create("/registry/podsx/ns/p", b"x")  # shares the string prefix without the slash
        await b.delete("/registry/pods/ns/p03")
        whole = await b.list("/registry/pods/ns/")
        assert [kv.key for kv in whole.items] == [f"/registry/pods/ns/p{i:02d}" for i in range(25) if i != 3]
        assert not whole.more
        assert await b.count("/registry/pods/") == 25
        pages, after = [], ""
        while True:
            page = await b.list("/registry/pods/ns/", revision=whole.revision, start_after=after, limit=10)
            pages.append(page)
            if not page.more:
                break
            after = page.items[-1].key
        assert [len(p.items) for p in pages] == [10, 10, 4]
        assert [kv for p in pages for kv in p.items] == whole.items

    run(body)


def test_list_paging_is_consistent_while_writes_happen(run: Callable[..., None]) -> None:
    async def body(b: Backend) -> None:
        for i in range(60):
            await b.create(f"/p/{i:03d}", b"v0")
        first = await b.list("/p/", limit=20)
        snapshot = {kv.key: kv for kv in (await b.list("/p/", revision=first.revision)).items}
        stop = asyncio.Event()

        async def churn() -> None:
            i = 0
            while not stop.is_set():
                kv = await b.get(f"/p/{i % 60:03d}")
                if kv is not None:
                    if i % 7 == 0:
                        await b.delete(kv.key)
                    else:
                        await b.update(kv.key, f"v{i}".encode(), expected_revision=kv.mod_revision)
                await b.create(f"/p/new{i:04d}", b"n")
                i += 1

        task = asyncio.create_task(churn())
        try:
            got = list(first.items)
            after = first.items[-1].key
            while True:
                await asyncio.sleep(0.01)  # let writes land between pages
                page = await b.list("/p/", revision=first.revision, start_after=after, limit=20)
                assert page.revision == first.revision
                got.extend(page.items)
                if not page.more:
                    break
                after = page.items[-1].key
        finally:
            stop.set()
            await task
        assert await b.current_revision() > first.revision + 10  # writes did happen meanwhile
        assert {kv.key: kv for kv in got} == snapshot
        assert len(got) == 60

    run(body)


def test_watch_replay_then_live_without_gaps_or_duplicates(run: Callable[..., None]) -> None:
    async def body(b: Backend) -> None:
        start = await b.current_revision()
        for i in range(30):
            await b.create(f"/w/{i}", b"x")
        w = b.watch("/w/", start_revision=start)
        stop = asyncio.Event()

        async def writer() -> None:
            for i in range(30, 300):
                await b.create(f"/w/{i}", b"x")
                if i % 50 == 0:
                    await asyncio.sleep(0)
            stop.set()

        task = asyncio.create_task(writer())
        events = await collect(w, 300, timeout=20)
        await task
        await w.close()
        revs = [e.kv.mod_revision for e in events]
        assert revs == list(range(start + 1, start + 301)), "gap, duplicate or reordering"
        assert [e.kv.key for e in events] == [f"/w/{i}" for i in range(300)]
        assert all(e.type == "CREATE" and e.prev is None for e in events)

    run(body)


def test_watch_event_types_and_prev(run: Callable[..., None]) -> None:
    async def body(b: Backend) -> None:
        start = await b.current_revision()
        kv = await b.create("/k", b"1")
        kv2 = await b.update("/k", b"2", expected_revision=kv.mod_revision)
        gone = await b.delete("/k")
        for w in (b.watch("/k", start_revision=start),):  # replayed from history
            ev = await collect(w, 3)
            await w.close()
            assert [e.type for e in ev] == ["CREATE", "UPDATE", "DELETE"]
            assert ev[1].prev is not None and ev[1].prev.value == b"1" and ev[1].prev.mod_revision == kv.mod_revision
            assert ev[1].kv == kv2
            assert ev[2].kv.value == b"2" and ev[2].kv.mod_revision == gone.mod_revision
            assert ev[2].prev is not None and ev[2].prev.mod_revision == kv2.mod_revision
        # the same shapes arrive live
        w = b.watch("/k", start_revision=await b.current_revision())
        kv = await b.create("/k", b"a")
        kv2 = await b.update("/k", b"b", expected_revision=kv.mod_revision)
        await b.delete("/k")
        ev = await collect(w, 3)
        await w.close()
        assert [e.type for e in ev] == ["CREATE", "UPDATE", "DELETE"]
        assert ev[1].prev is not None and ev[1].prev.value == b"a"
        assert ev[2].kv.value == b"b"

    run(body)


def test_watch_by_prefix(run: Callable[..., None]) -> None:
    async def body(b: Backend) -> None:
        rev = await b.current_revision()
        pods = b.watch("/registry/pods/", start_revision=rev)
        ns_a = b.watch("/registry/pods/a/", start_revision=rev)
        for key in ("/registry/pods/a/1", "/registry/nodes/n1", "/registry/pods/b/1", "/registry/podsx/a", "/registry/pods/a/2"):
            await b.create(key, b"x")
        assert [e.kv.key for e in await collect(pods, 3)] == ["/registry/pods/a/1", "/registry/pods/b/1", "/registry/pods/a/2"]
        assert [e.kv.key for e in await collect(ns_a, 2)] == ["/registry/pods/a/1", "/registry/pods/a/2"]
        await pods.close()
        await ns_a.close()

    run(body)


def test_watch_from_current_revision_sees_only_new(run: Callable[..., None]) -> None:
    async def body(b: Backend) -> None:
        await b.create("/old", b"x")
        w = b.watch("/", start_revision=await b.current_revision())
        kv = await b.create("/new", b"x")
        ev = await collect(w, 1)
        await w.close()
        assert [e.kv.mod_revision for e in ev] == [kv.mod_revision]

    run(body)


def test_compacted_revision_is_refused(run: Callable[..., None]) -> None:
    async def body(b: Backend) -> None:
        kv = await b.create("/k", b"0")
        first = kv.mod_revision
        for i in range(10):
            kv = await b.update("/k", str(i + 1).encode(), expected_revision=kv.mod_revision)
        await b.create("/gone", b"x")
        await b.delete("/gone")
        target = kv.mod_revision
        assert await b.compact(target) == target
        with pytest.raises(Compacted) as err:
            b.watch("/", start_revision=first)
        assert err.value.compact_revision == target
        with pytest.raises(Compacted):
            await b.get("/k", revision=first)
        with pytest.raises(Compacted):
            await b.list("/", revision=first)
        # the compact revision itself and everything newer still answer
        got = await b.get("/k", revision=target)
        assert got is not None and got.value == b"10"
        assert [x.key for x in (await b.list("/", revision=target)).items] == ["/k"]
        assert [x.key for x in (await b.list("/")).items] == ["/k"]
        w = b.watch("/", start_revision=target)
        kv2 = await b.update("/k", b"after", expected_revision=kv.mod_revision)
        ev = await collect(w, 3)
        await w.close()
        # the create+delete of /gone happened after target, and kv2 after that
        assert [e.kv.mod_revision for e in ev] == [target + 1, target + 2, kv2.mod_revision]
        assert (await b.stats()).compact_revision == target

    run(body)


def test_slow_watcher_is_ended(run: Callable[..., None]) -> None:
    async def body(b: Backend) -> None:
        start = await b.current_revision()
        slow = b.watch("/s/", start_revision=start)
        fast = b.watch("/s/", start_revision=start)
        seen_fast: list[Event] = []

        async def consume_fast() -> None:
            async for batch in fast:
                seen_fast.extend(batch)
                if len(seen_fast) >= 200:
                    return

        consumer = asyncio.create_task(consume_fast())
        for i in range(200):  # slow never reads: its buffer (50) overflows
            await b.create(f"/s/{i}", b"x")
        await asyncio.wait_for(consumer, 10)
        got: list[Event] = []
        async for batch in slow:  # ends instead of blocking forever
            got.extend(batch)
        assert len(got) < 200
        assert [e.kv.mod_revision for e in got] == list(range(start + 1, start + 1 + len(got)))
        assert getattr(slow, "ended", "slow") == "slow"
        assert len(seen_fast) == 200
        await fast.close()

    run(body, watch_buffer=50)


# ------------------------------------------------------------ sqlite-only
def test_sqlite_unique_index_closes_races(tmp_path: Path) -> None:
    async def body() -> None:
        b = _sqlite(tmp_path)
        await b.start()
        try:
            kv = await b.create("/k", b"1")
            await b.update("/k", b"2", expected_revision=kv.mod_revision)
        finally:
            await b.close()

    asyncio.run(body())
    conn = sqlite3.connect(tmp_path / "state.db")
    # a second writer that read the same "previous row" would insert this:
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO kvlog (name, created, deleted, create_revision, prev_revision, value)"
                     " VALUES ('/k', 0, 0, 1, 1, x'33')")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_sqlite_second_process_is_refused(tmp_path: Path) -> None:
    async def body() -> None:
        a = _sqlite(tmp_path)
        await a.start()
        try:
            with pytest.raises(StorageError, match="in use by pid"):
                await _sqlite(tmp_path).start()
        finally:
            await a.close()
        b = _sqlite(tmp_path)  # free again after close
        await b.start()
        await b.close()

    asyncio.run(body())


def test_sqlite_state_survives_restart(tmp_path: Path) -> None:
    async def body() -> None:
        a = _sqlite(tmp_path)
        await a.start()
        kv = await a.create("/k", b"1")
        await a.delete("/k")
        kv = await a.create("/k", b"2")
        await a.compact(kv.mod_revision - 1)
        await a.close()
        b = _sqlite(tmp_path)
        await b.start()
        try:
            assert await b.current_revision() == kv.mod_revision
            assert (await b.stats()).compact_revision == kv.mod_revision - 1
            assert await b.get("/k") == kv
            nxt = await b.create("/j", b"x")
            assert nxt.mod_revision == kv.mod_revision + 1  # revisions never reused
        finally:
            await b.close()

    asyncio.run(body())


def test_sqlite_compaction_keeps_last_1000_revisions(tmp_path: Path) -> None:
    async def body() -> None:
        b = _sqlite(tmp_path, retention=Retention(keep_revisions=1000, keep_seconds=0), compact_batch=100)
        await b.start()
        try:
            kvs = {}
            for i in range(50):
                kvs[i] = await b.create(f"/c/{i}", b"0")
            while await b.current_revision() < 1500:
                i = (await b.current_revision()) % 50
                kvs[i] = await b.update(f"/c/{i}", b"u", expected_revision=kvs[i].mod_revision)
            await b.create("/c/tomb", b"x")
            await b.delete("/c/tomb")
            cur = await b.current_revision()
            assert await b.run_compaction() == cur - 1000
            stats = await b.stats()
            assert stats.compact_revision == cur - 1000
            # the last 1000 revisions are all still watchable
            w = b.watch("/c/", start_revision=cur - 1000)
            ev = await collect(w, 1000)
            await w.close()
            assert [e.kv.mod_revision for e in ev] == list(range(cur - 999, cur + 1))
            with pytest.raises(Compacted):
                b.watch("/c/", start_revision=cur - 1001)
            assert len((await b.list("/c/")).items) == 50
            # superseded rows really went away
            conn = sqlite3.connect(tmp_path / "state.db")
            rows = conn.execute("SELECT COUNT(*) FROM kvlog").fetchone()[0]
            conn.close()
            assert rows <= 1000 + 50 + 2
            # a second run soon after keeps 1000 again (nothing new to drop)
            assert await b.run_compaction() == cur - 1000
        finally:
            await b.close()

    asyncio.run(body())


def test_sqlite_compaction_respects_age(tmp_path: Path) -> None:
    async def body() -> None:
        b = _sqlite(tmp_path, retention=Retention(keep_revisions=10, keep_seconds=300))
        await b.start()
        try:
            for i in range(100):
                await b.create(f"/a/{i}", b"x")
            # all 100 revisions are younger than 5 minutes: nothing may go
            assert await b.run_compaction() == 0
            for i in range(100, 200):
                await b.create(f"/a/{i}", b"x")
            # 301 s later, only what existed at the first mark is old enough
            import time as _t
            assert await b.run_compaction(now=_t.monotonic() + 301) == 100
        finally:
            await b.close()

    asyncio.run(body())


def test_retention_policy_is_pure() -> None:
    r = Retention(keep_revisions=1000, keep_seconds=300)
    marks = [(0.0, 500), (100.0, 3000), (400.0, 9000)]
    # by age only revisions <= 3000 are 5 minutes old at t=410; by count <= 9000
    assert compaction_target(current=10000, compact_revision=0, marks=marks, now=410.0, retention=r) == 3000
    # by count wins when fewer than 1000 newer revisions exist
    assert compaction_target(current=3500, compact_revision=0, marks=marks, now=410.0, retention=r) == 2500
    # never goes backwards
    assert compaction_target(current=3500, compact_revision=2800, marks=marks, now=410.0, retention=r) == 2800
    assert compaction_target(current=10000, compact_revision=0, marks=[], now=410.0, retention=r) == 0
    assert prune_marks(marks, now=410.0, retention=r) == [(100.0, 3000), (400.0, 9000)]


def test_storage_metrics_are_exported(tmp_path: Path) -> None:
    from prometheus_client import generate_latest

    async def body() -> None:
        b = _sqlite(tmp_path)
        await b.start()
        try:
            await b.create("/m", b"x")
            w = b.watch("/", start_revision=0)
            text = generate_latest().decode()
            assert 'edgectl_storage_operation_duration_seconds_count{operation="create"}' in text
            assert "edgectl_storage_watchers 1.0" in text
            assert "edgectl_storage_revision 1.0" in text
            assert "edgectl_storage_compact_revision 0.0" in text
            size = [ln for ln in text.splitlines() if ln.startswith("edgectl_storage_db_size_bytes ")]
            assert size and float(size[0].split()[1]) > 0
            await w.close()
        finally:
            await b.close()

    asyncio.run(body())


DURABILITY_WRITER = textwrap.dedent("""
    import asyncio, sys
    from edgectl.server.storage.sqlite import SQLiteBackend, SQLiteOptions

    async def main():
        b = SQLiteBackend(sys.argv[1], options=SQLiteOptions(compact_interval=0))
        await b.start()
        for i in range(1000):
            kv = await b.create(f"/d/{i:04d}", str(i).encode())
            print(kv.key, kv.mod_revision, flush=True)  # acknowledged
    asyncio.run(main())
""")


@pytest.mark.slow
def test_sqlite_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    proc = subprocess.Popen([sys.executable, "-c", DURABILITY_WRITER, str(db)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    acked: list[tuple[str, int]] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            key, rev = line.split()
            acked.append((key, int(rev)))
            if len(acked) == 400:
                os.kill(proc.pid, signal.SIGKILL)
                break
        for line in proc.stdout:  # lines written before the kill landed
            key, rev = line.split()
            acked.append((key, int(rev)))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    assert 400 <= len(acked) < 1000

    async def check() -> None:
        b = SQLiteBackend(db, options=SQLiteOptions(compact_interval=0))
        await b.start()  # the dead process's lock is gone with it
        try:
            for key, rev in acked:
                kv = await b.get(key)
                assert kv is not None and kv.mod_revision == rev, key
            assert await b.current_revision() >= acked[-1][1]
        finally:
            await b.close()

    asyncio.run(check())


def test_watch_from_a_future_revision_waits_for_it(run: Callable[..., None]) -> None:
    async def body(b: Backend) -> None:
        cur = await b.current_revision()
        w = b.watch("/f/", start_revision=cur + 2)
        for i in range(4):
            await b.create(f"/f/{i}", b"x")
        ev = await collect(w, 2)
        await w.close()
        assert [e.kv.mod_revision for e in ev] == [cur + 3, cur + 4]

    run(body)


def test_sqlite_replay_overtaken_by_compaction_ends_the_watcher(tmp_path: Path) -> None:
    async def body() -> None:
        b = _sqlite(tmp_path)
        await b.start()
        try:
            kv = await b.create("/o/k", b"0")
            start = kv.mod_revision
            for i in range(1200):  # more than one replay chunk of history
                kv = await b.update("/o/k", str(i).encode(), expected_revision=kv.mod_revision)
            w = b.watch("/o/", start_revision=start)
            it = w.__aiter__()
            first = await it.__anext__()  # the first chunk of history
            assert first[0].kv.mod_revision == start + 1
            await b.compact(kv.mod_revision - 10)  # overtakes the replay position
            rest = [batch async for batch in it]
            assert rest == [] and w.ended == "compacted"
            with pytest.raises(Compacted):  # the re-watch is refused: the client re-lists
                b.watch("/o/", start_revision=first[-1].kv.mod_revision)
        finally:
            await b.close()

    asyncio.run(body())
