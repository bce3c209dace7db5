"""``/attach``: the container's own console, served as remotecommand by
:mod:`.remotecommand` (same negotiation as exec).

The session is one connection to the shim's attach socket
(``edgectl.agent.runtime.attachproto``): output from the moment of attaching
(no replay), stdin, resizes. As upstream, the terminal is the container's
(``tty`` in its spec), not the client's choice, and the outcome is always
Success: attach reports no exit code. The client going away only detaches;
with ``stdinOnce`` the shim then closes the container's stdin.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from edgectl.agent.runtime import attachproto as ap
from edgectl.agent.runtime.interface import ContainerAttach
from edgectl.agent.streams import channels as ch
from edgectl.log import fields

from .remotecommand import STDERR, STDOUT, StreamOptions

log = logging.getLogger(__name__)

HELLO_TIMEOUT = 5.0


class AttachRefused(OSError):
    """The shim said no (or was not there); becomes a failure Status."""


class AttachSession:
    def __init__(self, target: ContainerAttach, opts: StreamOptions) -> None:
        self.target, self.opts = target, opts
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pump: asyncio.Task[None] | None = None
        self._output: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue(maxsize=64)
        self._started = asyncio.Event()
        self._stdin_ended = False
        self._size: tuple[int, int] | None = None
        self.exit_code: int | None = None

    async def start(self) -> None:
        try:
            self._reader, self._writer = await connect(self.target.socket)
            welcome = await hello(self._reader, self._writer, stdin=self.opts.stdin, stdout=self.opts.stdout,
                                  stderr=self.opts.stderr)
        except OSError:
            self._started.set()
            raise
        log.debug("attached", extra=fields(container=self.target.container_id, tty=welcome.get("tty")))
        self._pump = asyncio.create_task(self._read_frames(self._reader))
        self._started.set()
        if self._size is not None:
            self.resize(*self._size)
        if self._stdin_ended:
            self._send(ap.encode(ap.STDIN_EOF))

    async def _read_frames(self, reader: asyncio.StreamReader) -> None:
        decoder = ap.FrameDecoder()
        try:
            while data := await reader.read(65536):
                for kind, payload in decoder.feed(data):
                    if kind in (ap.STDOUT, ap.STDERR):  # the shim sends only the streams we asked for
                        await self._output.put((STDOUT if kind == ap.STDOUT else STDERR, payload))
                    elif kind == ap.EXIT:
                        self.exit_code = ap.decode_json(payload).get("exit_code")
        except (OSError, ap.AttachProtocolError) as exc:
            log.info("attach connection to the shim failed", extra=fields(error=str(exc)))
        finally:
            await self._output.put(None)

    async def read(self) -> tuple[int, bytes] | None:
        return await self._output.get()

    def _send(self, frame: bytes) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(frame)

    async def write_stdin(self, data: bytes) -> None:
        await self._started.wait()
        if self._stdin_ended or not data or self._writer is None:
            return
        for i in range(0, len(data), ap.MAX_PAYLOAD):
            self._send(ap.encode(ap.STDIN, data[i:i + ap.MAX_PAYLOAD]))
        with contextlib.suppress(ConnectionError):
            await self._writer.drain()

    def close_stdin(self) -> None:
        if self._stdin_ended:
            return
        self._stdin_ended = True
        self._send(ap.encode(ap.STDIN_EOF))

    def resize(self, width: int, height: int) -> None:
        self._size = (width, height)
        self._send(ap.encode_resize(width, height))

    async def outcome(self) -> tuple[dict[str, Any], dict[str, Any]]:
        return ch.status_success(), {"exit_code": self.exit_code if self.exit_code is not None else ""}

    def abort(self) -> None:
        """The client is gone: detach (the shim sees us leave; stdinOnce applies)."""
        if self._writer is not None:
            self._writer.close()
        if self._pump is not None:
            self._pump.cancel()
        with contextlib.suppress(asyncio.QueueFull):
            self._output.put_nowait(None)

    async def close(self) -> None:
        self.abort()
        if self._pump is not None:
            await asyncio.gather(self._pump, return_exceptions=True)
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer.wait_closed(), 2)


async def connect(socket_path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if not socket_path:
        raise AttachRefused("the container has no attach socket (it was started before attach was supported)")
    with ap.short_unix_path(socket_path) as name:
        try:
            return await asyncio.open_unix_connection(name, limit=1 << 20)
        except (FileNotFoundError, ConnectionRefusedError):
            raise AttachRefused("the container's console is gone (it exited)") from None


async def hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, stdin: bool, stdout: bool,
                stderr: bool) -> dict[str, Any]:
    """Send HELLO, wait for WELCOME; REFUSED (or anything else) raises AttachRefused."""
    writer.write(ap.encode_json(ap.HELLO, {"stdin": stdin, "stdout": stdout, "stderr": stderr}))
    try:
        await writer.drain()
        head = await asyncio.wait_for(reader.readexactly(ap.HEADER.size), HELLO_TIMEOUT)
        kind, length = ap.HEADER.unpack(head)
        if length > ap.MAX_PAYLOAD:
            raise AttachRefused("oversized answer from the container's console")
        payload = await asyncio.wait_for(reader.readexactly(length), HELLO_TIMEOUT)
    except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError) as exc:
        writer.close()
        raise AttachRefused(f"the container's console did not answer: {exc or type(exc).__name__}") from None
    if kind == ap.WELCOME:
        try:
            return ap.decode_json(payload)
        except ap.AttachProtocolError as exc:
            writer.close()
            raise AttachRefused(str(exc)) from None
    writer.close()
    if kind == ap.REFUSED:
        raise AttachRefused(payload.decode(errors="replace"))
    raise AttachRefused(f"unexpected {ap.NAMES.get(kind, kind)} from the container's console")
