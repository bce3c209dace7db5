"""Run an exec'd command inside a container, with pipes or a real pty.

We start ``nsenter`` (via :meth:`ContainerProcess.enter_argv`) rather than
calling setns() ourselves: joining a PID namespace only applies to children,
so a double fork and exit-status relay would be needed anyway, and nsenter
already does exactly that (it exits with the child's code, or re-raises its
signal).

With ``tty`` the command gets a fresh pty as its controlling terminal (stderr
merged into it, as upstream does), and resizes set the pty's window size with
TIOCSWINSZ, which makes the kernel send SIGWINCH to the foreground job.
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import functools
import logging
import os
import signal
import struct
import termios
from collections.abc import Mapping
from dataclasses import dataclass

from edgectl.log import fields

log = logging.getLogger(__name__)

STDOUT, STDERR = 1, 2
OUTPUT_DRAIN_TIMEOUT = 5.0  # after exit, how long background children may keep output open


@dataclass(frozen=True, kw_only=True)
class ExecRequest:
    argv: tuple[str, ...]  # the full argv to spawn (already wrapped in nsenter)
    env: Mapping[str, str]
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool


def _set_size(fd: int, width: int, height: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


def _set_controlling_tty(slave: int) -> None:  # runs in the child between fork and exec
    # uvloop runs preexec_fn before it dups the pty onto fd 0, so name the
    # slave by its own fd; setsid may or may not have happened yet (EPERM: done).
    try:
        os.setsid()
    except OSError:
        pass
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)


class ExecProcess:
    """One running exec. Output is read with :meth:`read`, which returns
    ``(channel, data)`` pairs and ``None`` once all output is consumed."""

    def __init__(self, request: ExecRequest) -> None:
        self.request = request
        self._proc: asyncio.subprocess.Process | None = None
        self._master: int | None = None
        self._output: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue(maxsize=64)
        self._readers: list[asyncio.Task[None]] = []
        self._stdin_closed = False
        self._closer: asyncio.Task[None] | None = None
        self._started = asyncio.Event()
        self._close_stdin_at_start = False
        self._size: tuple[int, int] | None = None
        # Set by the first resize: a tty exec waits briefly for it, so the command
        # starts with the client's terminal size rather than 0x0.
        self.sized = asyncio.Event()

    async def start(self) -> None:
        req = self.request
        env = dict(req.env)
        if req.tty:
            env.setdefault("TERM", "xterm")
            master, slave = os.openpty()
            if self._size is not None:
                _set_size(master, *self._size)
            try:
                self._proc = await asyncio.create_subprocess_exec(
                    *req.argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                    start_new_session=True, preexec_fn=functools.partial(_set_controlling_tty, slave),
                )
            except BaseException:
                os.close(master)
                raise
            finally:
                os.close(slave)
            os.set_blocking(master, False)
            self._master = master
            self._readers.append(asyncio.create_task(self._read_pty(master)))
        else:
            pipe, null = asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL
            self._proc = await asyncio.create_subprocess_exec(
                *req.argv,
                stdin=pipe if req.stdin else null,
                stdout=pipe if req.stdout else null,
                stderr=pipe if req.stderr else null,
                env=env, start_new_session=True,
            )
            if self._proc.stdout is not None:
                self._readers.append(asyncio.create_task(self._read_pipe(self._proc.stdout, STDOUT)))
            if self._proc.stderr is not None:
                self._readers.append(asyncio.create_task(self._read_pipe(self._proc.stderr, STDERR)))
        self._closer = asyncio.create_task(self._close_output_when_done())
        self._started.set()
        if self._close_stdin_at_start:
            self.close_stdin()

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    async def _read_pipe(self, stream: asyncio.StreamReader, channel: int) -> None:
        while True:
            data = await stream.read(32 * 1024)
            if not data:
                return
            await self._output.put((channel, data))

    async def _read_pty(self, master: int) -> None:
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        loop.add_reader(master, readable.set)
        try:
            while True:
                await readable.wait()
                readable.clear()
                try:
                    data = os.read(master, 32 * 1024)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    if exc.errno == errno.EIO:  # every slave fd closed: the session ended
                        return
                    raise
                if not data:
                    return
                await self._output.put((STDOUT, data))
        finally:
            loop.remove_reader(master)

    async def _close_output_when_done(self) -> None:
        assert self._proc is not None
        await self._proc.wait()
        if self._readers:
            # A background child may hold the pipe open forever; do not wait for it.
            _, pending = await asyncio.wait(self._readers, timeout=OUTPUT_DRAIN_TIMEOUT)
            for task in pending:
                task.cancel()
        await self._output.put(None)

    async def read(self) -> tuple[int, bytes] | None:
        return await self._output.get()

    async def write_stdin(self, data: bytes) -> None:
        await self._started.wait()
        if self._stdin_closed or not data:
            return
        if self._master is not None:
            await self._write_pty(data)
            return
        assert self._proc is not None
        if self._proc.stdin is None:
            return
        try:
            self._proc.stdin.write(data)
            await self._proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            self._stdin_closed = True  # the command stopped reading; drop input like upstream

    async def _write_pty(self, data: bytes) -> None:
        assert self._master is not None
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._master, view)
                view = view[n:]
            except BlockingIOError:
                await asyncio.sleep(0.01)
            except OSError:
                self._stdin_closed = True
                return

    def close_stdin(self) -> None:
        if not self._started.is_set():
            self._close_stdin_at_start = True  # stdin ended before the command started
            return
        if self._stdin_closed:
            return
        self._stdin_closed = True
        if self._master is not None:
            # A terminal has no half-close; end-of-file is the EOF character (^D).
            with contextlib.suppress(OSError):
                os.write(self._master, b"\x04")
        elif self._proc is not None and self._proc.stdin is not None:
            self._proc.stdin.close()

    def resize(self, width: int, height: int) -> None:
        self._size = (width, height)
        self.sized.set()
        if self._master is not None:
            _set_size(self._master, width, height)

    async def wait(self) -> int:
        """Exit code as Kubernetes reports it: 128+N for death by signal N."""
        assert self._proc is not None
        code = await self._proc.wait()
        return 128 - code if code < 0 else code

    def kill(self) -> None:
        """End the whole exec session (client went away)."""
        if self._proc is None or self._proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self._proc.kill()

    async def close(self) -> None:
        self.kill()
        if self._proc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._proc.wait(), 5)
        tasks = [*self._readers, *([self._closer] if self._closer else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._master is not None:
            os.close(self._master)
            self._master = None
        log.debug("exec closed", extra=fields(argv=" ".join(self.request.argv[-3:])))

