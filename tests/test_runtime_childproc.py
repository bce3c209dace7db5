"""childproc: short-lived children that neither a timeout nor a cancellation
(even asyncio.run's teardown) can leave behind or wedge."""
from __future__ import annotations

import asyncio
import time
import os
from pathlib import Path

import pytest

from edgectl.agent.runtime import childproc


def gone(pid: int) -> bool:
    """Not running: no such process any more (reaped), or at worst a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    except (OSError, IndexError):
        return True


def test_output_exit_code_stdin_larger_than_a_pipe_and_merged_stderr() -> None:
    async def main() -> None:
        big = os.urandom(300_000)  # more than a pipe buffer: written as the child reads
        done = await childproc.run(["sh", "-c", "cat; echo oops >&2; exit 3"], stdin=big, timeout=10)
        assert (done.returncode, done.stdout, done.stderr) == (3, big, b"oops\n")
        merged = await childproc.run(["sh", "-c", "echo a; echo b >&2"], stderr=childproc.STDOUT, timeout=10)
        assert (merged.stdout, merged.stderr) == (b"a\nb\n", b"")
        early = await childproc.run(["true"], stdin=big, timeout=10)  # never reads its stdin
        assert early.returncode == 0

    asyncio.run(main())


def test_timeout_and_cancel_kill_and_reap_the_child(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"

    async def main() -> list[int]:
        pids = []
        with pytest.raises(TimeoutError):
            await childproc.run(["sh", "-c", f"echo $$ > {pid_file}; exec sleep 30"], timeout=0.5)
        pids.append(int(pid_file.read_text()))
        task = asyncio.create_task(childproc.run(["sh", "-c", f"echo $$ > {pid_file}; exec sleep 30"], timeout=30))
        while not pid_file.exists() or int(pid_file.read_text() or 0) == pids[0]:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        pids.append(int(pid_file.read_text()))
        return pids

    for pid in asyncio.run(main()):
        assert gone(pid)


@pytest.mark.timeout(30)  # the old hang was forever; the children sleep 60 s
def test_asyncio_run_teardown_during_a_child_does_not_hang(tmp_path: Path) -> None:
    async def main() -> None:
        for i in range(5):
            asyncio.create_task(childproc.run(["sh", "-c", f"echo $$ > {tmp_path}/{i}; exec sleep 60"], timeout=90))
        while len(list(tmp_path.iterdir())) < 5 or any(not p.read_text() for p in tmp_path.iterdir()):
            await asyncio.sleep(0.01)
        # Leave them running: asyncio.run cancels every task at once on the way out.

    asyncio.run(main())
    for f in tmp_path.iterdir():
        assert gone(int(f.read_text())), f"child {f.name} outlived the event loop"


def test_timeout_of_a_new_session_kills_what_the_child_forked(tmp_path: Path) -> None:
    """An exec probe's nsenter forks the command: a timeout must take the whole group."""
    pid_file = tmp_path / "grandchild"

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await childproc.run(["sh", "-c", f"sleep 30 & echo $! > {pid_file}; wait"], timeout=0.5,
                                start_new_session=True)

    asyncio.run(main())
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while not gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(grandchild)
