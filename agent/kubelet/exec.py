"""``/exec``: a new process in the container, served as remotecommand over
websocket channels (v5/v4) and SPDY (v1-v5) by :mod:`.remotecommand`.

The session starts ``nsenter`` into the container (:mod:`.execproc`); the
outcome is the exit code as a Status; the client going away kills the process.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgectl.agent.runtime.interface import ContainerProcess
from edgectl.agent.streams import channels as ch
from edgectl.httpd import Request, Response

from .execproc import ExecProcess, ExecRequest
from .remotecommand import StreamOptionError, StreamOptions, serve_spdy, serve_websocket

# kubectl -t usually sends its terminal size at once (under load it was seen seconds late,
# after the command had started; the resize then reaches it as SIGWINCH).
INITIAL_SIZE_WAIT = 1.0

ExecOptionError = StreamOptionError


@dataclass(frozen=True, kw_only=True)
class ExecOptions(StreamOptions):
    command: tuple[str, ...]

    @classmethod
    def from_query(cls, query: Mapping[str, Sequence[str]]) -> "ExecOptions":
        command = tuple(query.get("command", ()))
        if not command or not command[0]:
            raise ExecOptionError("command is required")
        return cls(command=command, **cls.streams_from_query(query))


class ExecSession:
    """One exec'd command behind a remotecommand connection."""

    def __init__(self, target: ContainerProcess, opts: ExecOptions) -> None:
        self.opts = opts
        self.proc = ExecProcess(ExecRequest(argv=tuple(target.enter_argv(opts.command)), env=dict(target.env),
                                            stdin=opts.stdin, stdout=opts.stdout, stderr=opts.stderr, tty=opts.tty))

    async def start(self) -> None:
        """With a tty, first give the client's initial resize a moment to arrive
        (kubectl sends it right after the streams are set up), so the command's
        first look at its terminal sees the real size."""
        if self.opts.tty:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.proc.sized.wait(), INITIAL_SIZE_WAIT)
        await self.proc.start()

    async def read(self) -> tuple[int, bytes] | None:
        return await self.proc.read()

    async def write_stdin(self, data: bytes) -> None:
        await self.proc.write_stdin(data)

    def close_stdin(self) -> None:
        self.proc.close_stdin()

    def resize(self, width: int, height: int) -> None:
        self.proc.resize(width, height)

    async def outcome(self) -> tuple[dict[str, Any], dict[str, Any]]:
        code = await self.proc.wait()
        return (ch.status_success() if code == 0 else ch.status_exit_code(code)), {"exit_code": code}

    def abort(self) -> None:
        self.proc.kill()

    async def close(self) -> None:
        await self.proc.close()


async def serve_exec_websocket(request: Request, opts: ExecOptions, target: ContainerProcess) -> Response:
    return await serve_websocket(request, opts, ExecSession(target, opts), label="exec")


async def serve_exec_spdy(request: Request, opts: ExecOptions, target: ContainerProcess) -> Response:
    return await serve_spdy(request, opts, ExecSession(target, opts), label="exec")
