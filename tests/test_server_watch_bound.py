"""A watch client that stops reading cannot grow the server's memory: its
stream buffers at most ``watch_buffer`` live events, then drops them, closes
its storage watcher and ends, and the client re-watches from the last
resourceVersion it received without missing anything.

In process: the real Registry over real SQLite. End to end: a real
``edgectl server`` and a raw TLS client that opens a watch and never reads.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from edgectl.server.registry import Registry, WatchStream
from edgectl.server.testing import ServerProcess, sqlite_registry


def _storage_watchers() -> float:
    return REGISTRY.get_sample_value("edgectl_storage_watchers") or 0.0


def run_registry(tmp_path: Path, body: Any, *, watch_buffer: int, slow_seconds: float = 0.3) -> Any:
    async def main() -> Any:
        async with sqlite_registry(tmp_path / "state.db", watch_buffer=watch_buffer, watch_slow_seconds=slow_seconds) as reg:
            return await body(reg)

    return asyncio.run(main())


def _cm(i: int) -> dict[str, Any]:
    return {"metadata": {"name": f"cm-{i:04d}"}, "data": {"k": "v" * 200}}


def test_unread_stream_stays_bounded_and_ends(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    limit, writes = 50, 400

    async def body(reg: Registry) -> None:
        cms = reg.resource("configmaps")
        start = await reg.store.current_revision()
        before = _storage_watchers()
        stream = await reg.watch(cms, "default", resource_version=str(start), send_initial=False)
        assert _storage_watchers() == before + 1
        peak = 0
        for i in range(writes):  # the client never reads meanwhile
            await reg.create(cms, _cm(i), namespace="default")
            peak = max(peak, stream.pending)
        await asyncio.sleep(0.5)  # the buffer stayed full past slow_seconds
        assert peak <= limit, f"stream buffered {peak} events with a limit of {limit}"
        assert stream.ended == "slow" and stream.pending == 0
        assert _storage_watchers() == before  # its storage watcher was closed, not left buffering
        assert await asyncio.wait_for(stream.next(), 1) is None  # the client sees the end at once
        await stream.close()

        # The client's recovery: re-watch from the last resourceVersion it received
        # (none here, so the one it started from) and get every write, in order:
        # a replay larger than the buffer flows to a client that reads.
        again = await reg.watch(cms, "default", resource_version=str(stream.revision), send_initial=False)
        seen = []
        while len(seen) < writes:
            ev = await asyncio.wait_for(again.next(), 5)
            assert ev is not None and ev.type == "ADDED"
            seen.append(ev.object["metadata"]["name"])
        assert seen == [f"cm-{i:04d}" for i in range(writes)]
        assert again.ended is None
        await again.close()

    with caplog.at_level(logging.INFO, logger="edgectl.server.registry"):
        run_registry(tmp_path, body, watch_buffer=limit)
    assert any("too slow" in r.getMessage() for r in caplog.records)


def test_slow_end_still_delivers_the_initial_list(tmp_path: Path) -> None:
    """Ending amid the initial ADDED events would lose objects the client never
    saw (a re-watch from an older resourceVersion only replays changes)."""

    async def body(reg: Registry) -> None:
        cms = reg.resource("configmaps")
        for i in range(30):
            await reg.create(cms, _cm(i), namespace="default")
        stream = await reg.watch(cms, "default")  # initial ADDED events, then live
        for i in range(30, 60):
            await reg.create(cms, _cm(i), namespace="default")
        await asyncio.sleep(0.5)
        assert stream.ended == "slow"
        got = []
        while (ev := await asyncio.wait_for(stream.next(), 1)) is not None:
            got.append(ev.object["metadata"]["name"])
        assert got == [f"cm-{i:04d}" for i in range(30)]
        await stream.close()

    run_registry(tmp_path, body, watch_buffer=10)


def test_reading_client_is_never_cut_off(tmp_path: Path) -> None:
    """The bound is about a client that stops reading, not about how many events pass
    or how far behind a reading client is."""

    async def body(reg: Registry) -> None:
        cms = reg.resource("configmaps")
        stream = await reg.watch(cms, "default", resource_version=str(await reg.store.current_revision()),
                                 send_initial=False)
        for i in range(100):
            await reg.create(cms, _cm(i), namespace="default")
            ev = await asyncio.wait_for(stream.next(), 5)
            assert ev is not None and ev.object["metadata"]["name"] == f"cm-{i:04d}"
        # A burst of 200 writes while the client reads slowly (more than the buffer,
        # but it never leaves the buffer full for slow_seconds).
        writer = asyncio.ensure_future(asyncio.gather(*(reg.create(cms, _cm(i), namespace="default")
                                                       for i in range(100, 300))))
        got = []
        while len(got) < 200:
            ev = await asyncio.wait_for(stream.next(), 5)
            assert ev is not None
            got.append(ev.object["metadata"]["name"])
            await asyncio.sleep(0.001)
        await writer
        assert sorted(got) == [f"cm-{i:04d}" for i in range(100, 300)]
        assert stream.ended is None
        await stream.close()

    run_registry(tmp_path, body, watch_buffer=5)


def test_failed_stream_has_a_reason() -> None:
    from edgectl.server import status

    async def main() -> None:
        stream = WatchStream.failed(status.gone("too old resource version: 1 (5)"), 5)
        ev = await stream.next(1)
        assert ev is not None and ev.type == "ERROR" and ev.object["code"] == 410
        assert await stream.next(1) is None and stream.ended == "failed"

    asyncio.run(main())


# --- end to end -------------------------------------------------------------------------------------


def _metric(srv: ServerProcess, name: str) -> float:
    code, _, body = srv.request("GET", "/metrics")
    assert code == 200
    m = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", body.decode(), re.M)
    return float(m.group(1)) if m else 0.0


@pytest.mark.slow
def test_http_client_that_never_reads(tmp_path: Path) -> None:
    """Default limits: the stream ends about WATCH_SLOW_SECONDS after its buffer filled."""
    srv = ServerProcess(tmp_path / "srv")
    stuck: ssl.SSLSocket | None = None
    try:
        srv.start()
        baseline = _metric(srv, "edgectl_storage_watchers")
        code, listed = srv.json("GET", "/api/v1/namespaces/default/configmaps")
        assert code == 200
        rv = listed["metadata"]["resourceVersion"]
        raw = socket.socket()
        # A small receive buffer (which also turns off autotuning) so the kernel
        # stops taking bytes soon; then the server's writes block for good.
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect((srv.host, srv.port))
        assert srv._ctx is not None  # noqa: SLF001 - the admin client context
        stuck = srv._ctx.wrap_socket(raw, server_hostname=srv.host)  # noqa: SLF001
        stuck.sendall(f"GET /api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv} HTTP/1.1\r\n"
                      f"Host: {srv.host}\r\nAccept: application/json\r\n\r\n".encode())
        deadline = time.monotonic() + 10
        while _metric(srv, "edgectl_storage_watchers") < baseline + 1:
            assert time.monotonic() < deadline, "the watch never started"
            time.sleep(0.02)
        payload = json.dumps({"k": "v" * 8000})  # big events fill the socket buffers sooner
        ended = re.compile(r"watch client too slow|watch stream ended .*reason=slow")
        # Enough events to fill the kernel's socket buffers (~500 of these here)
        # plus the stream's 2000-event buffer; after that, time ends the stream.
        for i in range(3000):
            code, _, body = srv.request("POST", "/api/v1/namespaces/default/configmaps",
                                        f'{{"metadata":{{"name":"cm-{i}"}},"data":{payload}}}'.encode(),
                                        headers={"Content-Type": "application/json"})
            assert code == 201, body
            if i % 200 == 199 and ended.search(srv.log_path.read_text()):
                break
        deadline = time.monotonic() + 20
        while not ended.search(srv.log_path.read_text()):
            assert time.monotonic() < deadline, "a client that never reads kept its watch"
            time.sleep(0.1)
        # The storage watcher is gone although the client still holds its connection.
        deadline = time.monotonic() + 5
        while _metric(srv, "edgectl_storage_watchers") != baseline:
            assert time.monotonic() < deadline, "the stuck stream kept its storage watcher"
            time.sleep(0.05)
        assert srv.json("GET", "/api/v1/namespaces/default/configmaps?limit=1")[0] == 200  # server healthy
    finally:
        if stuck is not None:
            stuck.close()
        srv.stop()
