"""Short-lived child processes (CNI plugins, ``ip netns``, the shim's start)
that a cancellation can never wedge.

On 3.11, asyncio's subprocess transport connects the child's pipes in a task
of its own. ``asyncio.run`` cancels *every* task on teardown, so a
``create_subprocess_exec`` cancelled before that task ran leaves a transport
that waits forever for pipes that never connect, and ``asyncio.run`` never
returns (an agent stopped while it runs an adopted pod's CNI CHECK). Here
there is no transport and no child watcher: ``Popen``, the loop's readers on
the pipes and a pidfd for the exit. Cancel or timeout kill the child and
reap it synchronously (a SIGKILLed child goes at once), so nothing is left
for teardown to wait on.
"""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from dataclasses import dataclass
from typing import IO, Mapping, Sequence, Union

PIPE = subprocess.PIPE
STDOUT = subprocess.STDOUT
REAP_TIMEOUT = 5.0  # a SIGKILLed child stuck in the kernel: give up waiting, never hang

Stderr = Union[int, IO[bytes]]  # PIPE, STDOUT or an open file


@dataclass(frozen=True, kw_only=True)
class Finished:
    returncode: int
    stdout: bytes
    stderr: bytes  # empty unless ``stderr=PIPE``


async def run(argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None,
              stdin: bytes | None = None, stderr: Stderr = PIPE, start_new_session: bool = False) -> Finished:
    """Run ``argv`` until it exits and its pipes reach EOF. ``TimeoutError``
    after ``timeout`` seconds; a timeout or a cancellation kills and reaps the
    child before it propagates."""
    loop = asyncio.get_running_loop()
    proc = subprocess.Popen(list(argv), env=env, stdin=PIPE if stdin is not None else subprocess.DEVNULL,
                            stdout=PIPE, stderr=stderr, start_new_session=start_new_session)
    try:
        pidfd = os.pidfd_open(proc.pid)
    except OSError:  # no pidfd (kernel < 5.3): do not leave the child running
        proc.kill()
        proc.wait()
        raise
    out_fd = proc.stdout.fileno()  # type: ignore[union-attr]
    err_fd = proc.stderr.fileno() if proc.stderr is not None else -1
    outputs = {fd: bytearray() for fd in (out_fd, err_fd) if fd >= 0}
    open_fds = set(outputs)
    finished = loop.create_future()
    exited = False
    watched: list[tuple[str, int]] = []

    def check() -> None:
        if exited and not open_fds and not finished.done():
            finished.set_result(None)

    def readable(fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            outputs[fd] += data
            return
        loop.remove_reader(fd)
        open_fds.discard(fd)
        check()

    def gone() -> None:
        nonlocal exited
        loop.remove_reader(pidfd)
        exited = True
        check()

    pending = memoryview(stdin or b"")

    def writable() -> None:
        nonlocal pending
        assert proc.stdin is not None
        try:
            pending = pending[os.write(proc.stdin.fileno(), pending):]
        except BlockingIOError:
            return
        except OSError:  # the child closed its stdin early: what it did not read is its business
            pending = pending[:0]
        if not pending:
            loop.remove_writer(proc.stdin.fileno())
            watched.remove(("w", proc.stdin.fileno()))  # its number may be reused once closed
            proc.stdin.close()

    try:
        for fd in outputs:
            os.set_blocking(fd, False)
            loop.add_reader(fd, readable, fd)
            watched.append(("r", fd))
        loop.add_reader(pidfd, gone)
        watched.append(("r", pidfd))
        if proc.stdin is not None:
            if pending:
                os.set_blocking(proc.stdin.fileno(), False)
                loop.add_writer(proc.stdin.fileno(), writable)
                watched.append(("w", proc.stdin.fileno()))
            else:
                proc.stdin.close()
        async with asyncio.timeout(timeout):
            await finished
    finally:
        for kind, fd in watched:  # fds still open here: removing twice is harmless
            try:
                loop.remove_writer(fd) if kind == "w" else loop.remove_reader(fd)
            except (ValueError, OSError):
                pass
        if proc.returncode is None and proc.poll() is None:
            try:
                if start_new_session:  # it leads its own group: take what it forked (nsenter's child) along
                    os.killpg(proc.pid, signal.SIGKILL)
                else:
                    proc.kill()
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=REAP_TIMEOUT)  # exited or SIGKILLed: immediate
        except subprocess.TimeoutExpired:
            pass
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f is not None:
                f.close()
        os.close(pidfd)
    return Finished(returncode=proc.returncode or 0, stdout=bytes(outputs[out_fd]),
                    stderr=bytes(outputs.get(err_fd, b"")))
