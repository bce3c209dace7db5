"""containerLogs options on real CRI-format files: tail (block-wise backwards,
partial records), since, limit, timestamps, follow across rotation and restart."""
from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from edgectl.agent.kubelet import logs
from edgectl.agent.kubelet.logs import LogOptionError, LogOptions, parse_timestamp, stream_logs, tail_offset
from edgectl.agent.runtime.interface import ContainerLogs

T0 = "2026-01-02T03:04:05.000000001Z"
T1 = "2026-01-02T03:04:06.500000000Z"


def rec(ts: str, tag: str, text: str, stream: str = "stdout") -> bytes:
    return f"{ts} {stream} {tag} {text}\n".encode()


def collect(path: Path, options: LogOptions, refresh=None, poll: float = 0.02) -> bytes:  # type: ignore[no-untyped-def]
    async def main() -> bytes:
        out = b""
        async for chunk in stream_logs(path=str(path), options=options, refresh=refresh or (lambda: None),
                                       poll_interval=poll):
            out += chunk
        return out
    return asyncio.run(asyncio.wait_for(main(), 10))


def test_parse_timestamp() -> None:
    assert parse_timestamp("1970-01-01T00:00:01.5Z") == 1_500_000_000
    assert parse_timestamp("1970-01-01T01:00:00+01:00") == 0
    assert parse_timestamp(T0) % 1_000_000_000 == 1
    with pytest.raises(ValueError):
        parse_timestamp("yesterday")


def test_query_parsing_and_errors() -> None:
    opts = LogOptions.from_query({"follow": ["true"], "tailLines": ["10"], "sinceSeconds": ["5"], "limitBytes": ["9"]},
                                 now_ns=100 * 10**9)
    assert (opts.follow, opts.tail_lines, opts.since_ns, opts.limit_bytes) == (True, 10, 95 * 10**9, 9)
    assert LogOptions.from_query({"sinceTime": [T0]}).since_ns == parse_timestamp(T0)
    for bad, word in (({"tailLines": ["-1"]}, "tailLines"), ({"follow": ["maybe"]}, "follow"),
                      ({"limitBytes": ["0"]}, "limitBytes"), ({"sinceTime": ["x"]}, "sinceTime"),
                      ({"sinceSeconds": ["1"], "sinceTime": [T0]}, "both")):
        with pytest.raises(LogOptionError, match=word):
            LogOptions.from_query(bad)


def test_tail_counts_logical_lines_across_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "READ_BLOCK", 7)  # force many backwards reads and records cut by blocks
    path = tmp_path / "0.log"
    path.write_bytes(rec(T0, "F", "a") + rec(T0, "P", "b1-") + rec(T0, "P", "b2-") + rec(T0, "F", "b3")
                     + rec(T1, "F", "c", "stderr") + rec(T1, "F", "d"))
    assert collect(path, LogOptions(tail_lines=2)) == b"c\nd\n"
    assert collect(path, LogOptions(tail_lines=3)) == b"b1-b2-b3\nc\nd\n"  # partial pieces stay with their line
    assert collect(path, LogOptions(tail_lines=100)) == b"a\nb1-b2-b3\nc\nd\n"
    assert collect(path, LogOptions(tail_lines=0)) == b""
    fd = os.open(path, os.O_RDONLY)
    try:
        assert tail_offset(fd, os.fstat(fd).st_size, 1) == path.read_bytes().rindex(rec(T1, "F", "d"))
    finally:
        os.close(fd)


def test_since_timestamps_limit_and_foreign_lines(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    path.write_bytes(rec(T0, "F", "old") + b"not a cri line\n" + rec(T1, "F", "new"))
    assert collect(path, LogOptions()) == b"old\nnot a cri line\nnew\n"  # kept, not dropped
    assert collect(path, LogOptions(since_ns=parse_timestamp(T1))) == b"not a cri line\nnew\n"
    assert collect(path, LogOptions(timestamps=True, tail_lines=1)) == f"{T1} new\n".encode()
    assert collect(path, LogOptions(limit_bytes=6)) == b"old\nno"


def test_large_log_tail_reads_only_the_end(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    line = rec(T0, "F", "x" * 100)
    with path.open("wb") as f:
        for _ in range(20):
            f.write(line * 5000)  # ~12 MB
        f.write(rec(T1, "F", "the end"))
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        assert size - tail_offset(fd, size, 2) == len(line) + len(rec(T1, "F", "the end"))
    finally:
        os.close(fd)


def test_follow_survives_rotation_and_restart(tmp_path: Path) -> None:
    first = tmp_path / "0.log"
    first.write_bytes(rec(T0, "F", "one"))
    state = {"current": str(first), "running": True}

    def refresh() -> ContainerLogs:
        return ContainerLogs(current=state["current"], previous=None, running=bool(state["running"]))

    async def main() -> bytes:
        out = bytearray()
        gen = stream_logs(path=str(first), options=LogOptions(follow=True), refresh=refresh, poll_interval=0.02)

        async def until(text: bytes) -> None:
            while text not in out:
                out.extend(await gen.__anext__())

        await until(b"one\n")
        with first.open("ab") as f:  # a line written in two pieces: nothing until it is complete
            f.write(rec(T0, "F", "two")[:10])
            f.flush()
            await asyncio.sleep(0.1)
            f.write(rec(T0, "F", "two")[10:])
        await until(b"two\n")
        # Rotation: the writer renames the file, appends a last line to it, and starts a new one.
        first.rename(tmp_path / "0.log.1")
        with (tmp_path / "0.log.1").open("ab") as f:
            f.write(rec(T0, "F", "three"))
        first.write_bytes(rec(T0, "F", "four"))
        await until(b"four\n")
        # Restart: the runtime points at a new instance's file.
        second = tmp_path / "1.log"
        second.write_bytes(rec(T1, "F", "five"))
        state["current"] = str(second)
        await until(b"five\n")
        state["running"] = False
        with second.open("ab") as f:
            f.write(rec(T1, "F", "six"))
        async for chunk in gen:  # ends by itself once the container is gone and all is read
            out.extend(chunk)
        return bytes(out)

    assert asyncio.run(asyncio.wait_for(main(), 10)) == b"one\ntwo\nthree\nfour\nfive\nsix\n"


def test_stream_selects_stdout_or_stderr(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    path.write_bytes(rec(T0, "F", "out1") + rec(T0, "F", "err1", "stderr") + rec(T1, "F", "out2"))
    assert collect(path, LogOptions.from_query({"stream": ["Stdout"]})) == b"out1\nout2\n"
    assert collect(path, LogOptions.from_query({"stream": ["Stderr"]})) == b"err1\n"
    assert collect(path, LogOptions.from_query({"stream": ["All"]})) == b"out1\nerr1\nout2\n"
    for bad in ({"stream": ["both"]}, {"stream": ["Stdout"], "tailLines": ["1"]}):
        with pytest.raises(LogOptionError):
            LogOptions.from_query(bad)
