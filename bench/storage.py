"""Storage figures: write/read/watch latency, group commit, compaction pauses.

Run: .venv/bin/python bench/storage.py   (about 20 s; uses a temp directory)

Also measures the two design alternatives side by side, so the comments in
server/storage/sqlite.py stay honest:
- writes on the event loop (one fsync per write, loop blocked meanwhile)
  versus the writer thread with group commit;
- WAL checkpoint TRUNCATE versus PASSIVE after compaction.
"""
from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from edgectl.server.storage.retention import Retention
from edgectl.server.storage.sqlite import SCHEMA, SQLiteBackend, SQLiteOptions


def pod(i: int) -> bytes:
    """A realistic ~1.3 KB pod object."""
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"pod-{i:05d}", "namespace": "default", "uid": f"{i:032x}",
                     "labels": {"app": "bench", "tier": "web", "idx": str(i)},
                     "annotations": {"note": "x" * 200}},
        "spec": {"nodeName": f"node-{i % 10}", "containers": [
            {"name": "app", "image": "registry.example/app:1.2.3", "ports": [{"containerPort": 8080}],
             "env": [{"name": f"E{j}", "value": "v" * 20} for j in range(10)]}]},
        "status": {"phase": "Running", "podIP": f"10.42.{i % 250}.{i % 200 + 2}"},
    }).encode()


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] * 1e3


def fmt(name: str, xs: list[float]) -> str:
    return f"{name:<44} p50 {pct(xs, .5):7.3f} ms  p95 {pct(xs, .95):7.3f} ms  p99 {pct(xs, .99):7.3f} ms  (n={len(xs)})"


class LoopLag:
    """Largest delay of a 1 ms ticker: how long the loop was blocked."""

    def __init__(self) -> None:
        self.max = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            self.max = max(self.max, time.perf_counter() - t - 0.001)

    def __enter__(self) -> "LoopLag":
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def bench_backend(tmp: Path) -> None:
    b = SQLiteBackend(tmp / "bench.db", options=SQLiteOptions(compact_interval=0))
    await b.start()
    try:
        # sequential writes (what one client sees), with the loop-lag probe on
        lat = []
        with LoopLag() as lag:
            for i in range(1000):
                t = time.perf_counter()
                await b.create(f"/registry/pods/default/pod-{i:05d}", pod(i))
                lat.append(time.perf_counter() - t)
        print(fmt("write, sequential (thread + group commit)", lat), f" loop lag max {lag.max * 1e3:.2f} ms")

        # updates, so the list below walks a multi-revision history
        for i in range(1000):
            kv = await b.get(f"/registry/pods/default/pod-{i:05d}")
            assert kv is not None
            await b.update(kv.key, pod(i), expected_revision=kv.mod_revision)

        # concurrent writers share fsyncs
        for conc in (8, 32):
            lat = []

            async def one(j: int, conc: int = conc) -> None:
                for k in range(50):
                    t = time.perf_counter()
                    await b.create(f"/registry/configmaps/c{conc}/w{j}-{k}", pod(k))
                    lat.append(time.perf_counter() - t)

            t0 = time.perf_counter()
            await asyncio.gather(*(one(j) for j in range(conc)))
            rate = len(lat) / (time.perf_counter() - t0)
            print(fmt(f"write, {conc} concurrent writers", lat), f" {rate:,.0f} writes/s")

        # reads
        lat = []
        for i in range(2000):
            t = time.perf_counter()
            await b.get(f"/registry/pods/default/pod-{i % 1000:05d}")
            lat.append(time.perf_counter() - t)
        print(fmt("get one object", lat))
        lat = []
        for _ in range(50):
            t = time.perf_counter()
            res = await b.list("/registry/pods/")
            lat.append(time.perf_counter() - t)
        assert len(res.items) == 1000
        print(fmt("list 1,000 pods (2 revisions each)", lat))
        lat = []
        for _ in range(20):
            t = time.perf_counter()
            after, n = "", 0
            while True:
                page = await b.list("/registry/pods/", revision=res.revision, start_after=after, limit=100)
                n += len(page.items)
                if not page.more:
                    break
                after = page.items[-1].key
            assert n == 1000
            lat.append(time.perf_counter() - t)
        print(fmt("list 1,000 pods in 10 pages of 100", lat))

        # write-to-watch latency
        w = b.watch("/registry/leases/", start_revision=await b.current_revision())
        it = w.__aiter__()
        lat = []
        for i in range(500):
            t = time.perf_counter()
            task = asyncio.ensure_future(it.__anext__())
            await b.create(f"/registry/leases/l{i}", b"{}")
            await task
            lat.append(time.perf_counter() - t)
        await w.close()
        print(fmt("write -> watcher receives (incl. fsync)", lat))

        # watch replay from history
        t = time.perf_counter()
        w = b.watch("/registry/pods/", start_revision=0)
        n = 0
        async for batch in w:
            n += len(batch)
            if n >= 2000:
                break
        await w.close()
        print(f"{'watch replay of 2,000 events':<44} {(time.perf_counter() - t) * 1e3:7.1f} ms")
        st = await b.stats()
        print(f"{'db size after':<44} {st.db_size_bytes / 1e6:.1f} MB, revision {st.revision}")
    finally:
        await b.close()


async def bench_on_loop(tmp: Path) -> None:
    """The alternative: sqlite3 calls straight on the event loop."""
    conn = sqlite3.connect(tmp / "onloop.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    for stmt in SCHEMA.split(";"):
        if stmt.strip():
            conn.execute(stmt)
    lat = []
    with LoopLag() as lag:
        for i in range(1000):
            t = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("SELECT id FROM kvlog WHERE name=? ORDER BY id DESC LIMIT 1", (f"/p/{i}",)).fetchone()
            conn.execute("INSERT INTO kvlog (name, created, deleted, create_revision, prev_revision, value)"
                         " VALUES (?, 1, 0, 0, 0, ?)", (f"/p/{i}", pod(i)))
            conn.execute("COMMIT")
            lat.append(time.perf_counter() - t)
            await asyncio.sleep(0)
    print(fmt("write, sequential, ON the loop", lat), f" loop lag max {lag.max * 1e3:.2f} ms")
    # concurrency cannot help: each write is its own fsync
    t0 = time.perf_counter()
    for i in range(400):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO kvlog (name, created, deleted, create_revision, prev_revision, value)"
                     " VALUES (?, 1, 0, 0, 0, ?)", (f"/q/{i}", pod(i)))
        conn.execute("COMMIT")
    print(f"{'write, ON the loop, best case rate':<44} {400 / (time.perf_counter() - t0):,.0f} writes/s")
    conn.close()


async def bench_compaction(tmp: Path) -> None:
    for mode in ("PASSIVE", "TRUNCATE"):
        path = tmp / f"compact-{mode}.db"
        b = SQLiteBackend(path, options=SQLiteOptions(
            compact_interval=0, checkpoint=mode,  # type: ignore[arg-type]
            retention=Retention(keep_revisions=1000, keep_seconds=0)))
        await b.start()
        try:
            kvs = [await b.create(f"/registry/leases/n{i}", pod(i)) for i in range(50)]
            for r in range(6000):  # lease churn: the kine growth case
                i = r % 50
                kvs[i] = await b.update(kvs[i].key, pod(i), expected_revision=kvs[i].mod_revision)
            wal_before = os.stat(f"{path}-wal").st_size
            # a writer keeps going during compaction: its worst latency is the pause
            stop = asyncio.Event()
            lat: list[float] = []

            async def writer() -> None:
                j = 0
                while not stop.is_set():
                    t = time.perf_counter()
                    await b.create(f"/registry/events/e{j}", b"{}")
                    lat.append(time.perf_counter() - t)
                    j += 1

            task = asyncio.create_task(writer())
            t = time.perf_counter()
            await b.run_compaction()
            took = time.perf_counter() - t
            stop.set()
            await task
            wal_after = os.stat(f"{path}-wal").st_size
            print(f"compaction 5,000 revisions, checkpoint {mode:<8} {took * 1e3:6.1f} ms total;"
                  f" concurrent write p95 {pct(lat, .95):.2f} ms max {max(lat) * 1e3:.2f} ms;"
                  f" WAL {wal_before / 1e6:.1f} MB -> {wal_after / 1e6:.2f} MB")
        finally:
            await b.close()


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="edgectl-bench-storage-") as d:
        tmp = Path(d)
        print(f"python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}, tmp on {tmp}")
        await bench_backend(tmp)
        await bench_on_loop(tmp)
        await bench_compaction(tmp)


if __name__ == "__main__":
    asyncio.run(main())
