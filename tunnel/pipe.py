"""Copy bytes both ways between two asyncio stream pairs, with half-close.

Used by the agent (tunnel stream <-> local TCP), the demo forwarder and the
benchmarks. EOF on one side becomes write_eof on the other; an error on
either side aborts both, so nothing is left half-open forever.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from ..log import fields
from .bufpool import BufferPool
from .streams import WRITE_HIGH_WATER

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
# Pooled TCP read buffers; reads fill one in turn. They start small (1,000 idle
# streams must not pin 1 MiB each) and grow 4x whenever a read fills all it was offered.
READ_BUFFER_MIN = 16 * 1024
READ_BUFFER_MAX = 1024 * 1024
MIN_READ = 4 * 1024  # start a new buffer when less than this is left


def take_read_ahead(reader: asyncio.StreamReader) -> bytes:
    """Bytes a StreamReader already read off the socket, before its transport is
    handed to another protocol (asyncio has no public API for this)."""
    buf: bytearray = reader._buffer  # type: ignore[attr-defined]  # noqa: SLF001
    data = bytes(buf)
    buf.clear()
    return data


async def _copy(reader: Any, writer: Any) -> None:
    read_chunk = getattr(reader, "read_chunk", None)  # tunnel streams: no copy
    while True:
        data = await read_chunk() if read_chunk is not None else await reader.read(CHUNK)
        if not data:
            break
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()


async def pipe(a_reader: Any, a_writer: Any, b_reader: Any, b_writer: Any) -> None:
    """Run until both directions finished; closes both writers."""
    tasks = [asyncio.create_task(_copy(a_reader, b_writer)), asyncio.create_task(_copy(b_reader, a_writer))]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        errors = [t.exception() for t in done if not t.cancelled() and t.exception() is not None]
        if errors:
            log.debug("pipe aborted: %r", errors[0], extra=fields(error=repr(errors[0])))
            for t in pending:
                t.cancel()
            for w in (a_writer, b_writer):
                abort = getattr(w, "abort", None) or getattr(getattr(w, "transport", None), "abort", None)
                if abort is not None:
                    with contextlib.suppress(Exception):
                        abort()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for t in tasks:
            t.cancel()
        for w in (a_writer, b_writer):
            with contextlib.suppress(Exception):
                w.close()


class _TcpSide(asyncio.BufferedProtocol):
    """Reads the TCP side straight into the tunnel writer (no StreamReader copies)
    and tracks the TCP transport's write pause for the other direction.

    A buffered protocol: the socket is read into big pooled buffers and the
    tunnel gets views of them, handed over without a copy (``write_owned``).
    Measured at 1 GiB: the default fresh 256 KiB ``bytes`` per recv cost the
    server ~30 % of its CPU in page faults inside recv (see bufpool.py).
    """

    def __init__(self, transport: asyncio.Transport, tunnel_writer: Any) -> None:
        self.transport = transport
        self.tw = tunnel_writer
        self._write = getattr(tunnel_writer, "write_owned", None) or tunnel_writer.write
        loop = asyncio.get_running_loop()
        self.read_done: asyncio.Future[None] = loop.create_future()
        self.lost = False
        self._reading_paused = False
        self._write_paused = False
        self._resume: asyncio.Future[None] | None = None
        self._drainer: asyncio.Task[None] | None = None
        self._pool = BufferPool(READ_BUFFER_MIN)
        self._view: memoryview | None = None
        self._off = 0
        self._offered = 0
        self._small_reads = 0

    def _finish(self, exc: BaseException | None) -> None:
        if not self.read_done.done():
            if exc is None:
                self.read_done.set_result(None)
            else:
                self.read_done.set_exception(exc)
                self.read_done.exception()  # retrieved by pipe_tcp; avoid "never retrieved" noise

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._view is None or len(self._view) - self._off < MIN_READ:
            self._view = None  # our own view would keep the old buffer "shared"
            self._view = memoryview(self._pool.get())
            self._off = 0
        self._offered = len(self._view) - self._off
        return self._view[self._off :]

    def buffer_updated(self, nbytes: int) -> None:
        assert self._view is not None
        start, self._off = self._off, self._off + nbytes
        data = self._view[start : self._off]
        if nbytes == self._offered and self._pool.size < READ_BUFFER_MAX:
            self._pool.size = min(self._pool.size * 4, READ_BUFFER_MAX)  # a bulk sender: read more at once
        if nbytes >= MIN_READ:
            self._small_reads = 0
        elif self._pool.size > READ_BUFFER_MIN:
            self._small_reads += 1
            if self._small_reads >= 16:  # bulk is over: do not pin big buffers for an idle stream
                self._pool.clear()
                self._pool.size = READ_BUFFER_MIN
                self._view = None
        self._deliver(data, self._write)

    def data_received(self, data: bytes) -> None:  # transports without get_buffer
        self._deliver(data, self.tw.write)

    def _deliver(self, data: bytes | memoryview, write: Any) -> None:
        try:
            write(data)
        except Exception as exc:  # the tunnel stream was reset
            self._finish(exc)
            return
        if not self._reading_paused and self.tw.queued() > WRITE_HIGH_WATER:
            self._reading_paused = True
            self.transport.pause_reading()
            self._drainer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            await self.tw.drain()
        except Exception as exc:
            self._finish(exc)
            return
        self._reading_paused = False
        if not self.lost:
            self.transport.resume_reading()

    def eof_received(self) -> bool:
        with contextlib.suppress(Exception):
            self.tw.write_eof()
        self._finish(None)
        return True  # keep the transport open: the other direction may still write

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._finish(exc)
        self.resume_writing()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._resume is not None and not self._resume.done():
            self._resume.set_result(None)

    async def writable(self) -> None:
        if self._write_paused and not self.lost:
            self._resume = asyncio.get_running_loop().create_future()
            await self._resume
        if self.lost:
            raise ConnectionResetError("TCP side closed")


async def pipe_tcp(tcp_reader: asyncio.StreamReader, tcp_writer: asyncio.StreamWriter, t_reader: Any, t_writer: Any) -> None:
    """Relay a TCP connection and a tunnel stream until both directions end.

    The TCP transport is switched to a plain Protocol, so bytes go from the
    socket into the tunnel (and back) without the StreamReader's two copies.
    """
    transport: asyncio.Transport = tcp_writer.transport  # type: ignore[assignment]
    ahead = take_read_ahead(tcp_reader)
    side = _TcpSide(transport, t_writer)
    transport.set_protocol(side)
    if ahead:
        side.data_received(ahead)
    if tcp_reader.at_eof():
        side.eof_received()
    elif not side._reading_paused:  # a big read-ahead may have paused it already
        with contextlib.suppress(Exception):
            transport.resume_reading()

    async def tunnel_to_tcp() -> None:
        while True:
            chunk = await t_reader.read_chunk()
            if not chunk:
                break
            await side.writable()
            transport.write(chunk)
        await side.writable()
        if transport.can_write_eof() and not transport.is_closing():
            transport.write_eof()

    down = asyncio.ensure_future(tunnel_to_tcp())
    try:
        done, _ = await asyncio.wait({down, side.read_done}, return_when=asyncio.FIRST_EXCEPTION)
        failed = [f.exception() for f in done if not f.cancelled() and f.exception() is not None]
        if failed:
            log.debug("pipe aborted: %r", failed[0], extra=fields(error=repr(failed[0])))
            down.cancel()
            with contextlib.suppress(Exception):
                t_writer.abort(f"relay failed: {failed[0]}")
            transport.abort()
        await asyncio.gather(down, side.read_done, return_exceptions=True)
    finally:
        down.cancel()
        if side._drainer is not None:
            side._drainer.cancel()
        transport.close()
        with contextlib.suppress(Exception):
            t_writer.close()
