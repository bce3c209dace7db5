"""The asyncio layer over :class:`edgectl.agent.streams.spdy_session.Session`.

One task reads the transport and feeds the session; everything that writes
goes through :meth:`SpdyConnection.flush`, the only code that drains the
session's output. A transport is a raw upgraded stream, or a websocket whose
binary messages carry the SPDY byte stream (kubectl 1.31+ port-forward).

Read back-pressure: when more than ``MAX_BUFFERED`` received bytes wait for
their readers, the read loop pauses, so TCP pushes back on the peer (the only
flow control Kubernetes' SPDY peers honour).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Protocol

from edgectl.agent.streams.spdy_frames import HeaderList, RstStatus, header_value
from edgectl.agent.streams.spdy_session import (
    ConnectionClosed,
    InvalidState,
    ConnectionFailed,
    DataReceived,
    GoAwayReceived,
    Role,
    SendWindowOpened,
    Session,
    StreamEnded,
    StreamOpened,
    StreamReplied,
    StreamReset,
)
from edgectl.httpd import RawStream
from edgectl.log import fields

from .wsconn import WebSocketConnection

log = logging.getLogger(__name__)

MAX_BUFFERED = 4 * 1024 * 1024
WRITE_HIGH_WATER = 256 * 1024  # strict mode: writers wait while this much is held back
REPLY_TIMEOUT = 30.0


class ByteTransport(Protocol):
    async def read(self) -> bytes: ...  # b"" at EOF

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


class RawTransport:
    def __init__(self, raw: RawStream) -> None:
        self._raw = raw
        self._pending = raw.pending

    async def read(self) -> bytes:
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        try:
            return await self._raw.reader.read(64 * 1024)
        except (ConnectionError, OSError):
            return b""

    async def write(self, data: bytes) -> None:
        self._raw.writer.write(data)
        await self._raw.writer.drain()

    async def close(self) -> None:
        self._raw.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._raw.writer.wait_closed(), 2)


class WebSocketTransport:
    """SPDY bytes inside websocket binary messages (no alignment to frames)."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self._ws = ws

    async def read(self) -> bytes:
        while True:
            data = await self._ws.recv()
            if data is None:
                return b""
            if data:
                return data

    async def write(self, data: bytes) -> None:
        if not await self._ws.send(data):
            raise ConnectionError("websocket closed")

    async def close(self) -> None:
        await self._ws.close()


class SpdyStream:
    def __init__(self, conn: "SpdyConnection", stream_id: int, headers: HeaderList) -> None:
        self.conn = conn
        self.id = stream_id
        self.headers = headers
        self._chunks: deque[bytes] = deque()
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self.replied = asyncio.Event()
        self.eof = False
        self.reset_by_peer = False

    def header(self, name: str) -> str | None:
        return header_value(self.headers, name)

    def _push(self, data: bytes) -> None:
        self._chunks.append(data)
        self.conn._buffered += len(data)
        self._readable.set()

    def _end(self) -> None:
        self.eof = True
        self._readable.set()
        self._writable.set()

    async def read(self) -> bytes:
        """Next chunk of data; b"" once the peer half-closed or reset the stream."""
        while not self._chunks:
            if self.eof:
                return b""
            self._readable.clear()
            await self._readable.wait()
        data = self._chunks.popleft()
        self.conn._consumed(self.id, len(data))
        return data

    async def read_all(self, limit: int = 1 << 20) -> bytes:
        out = bytearray()
        while len(out) <= limit:
            data = await self.read()
            if not data:
                break
            out += data
        return bytes(out)

    async def write(self, data: bytes) -> bool:
        session = self.conn.session
        if not session.send_data(self.id, data):
            return False
        await self.conn.flush()
        while session.strict and session.buffered(self.id) > WRITE_HIGH_WATER and not self.eof:
            self._writable.clear()
            await self._writable.wait()
        return True

    async def close(self) -> None:
        """Half-close: send FIN; the peer may still send."""
        self.conn.session.end_stream(self.id)
        await self.conn.flush()

    async def reset(self, status: int = RstStatus.CANCEL) -> None:
        self.conn.session.reset_stream(self.id, status)
        self.conn.streams.pop(self.id, None)
        self._end()
        await self.conn.flush()


class SpdyConnection:
    def __init__(self, transport: ByteTransport, role: Role, *, strict_flow_control: bool) -> None:
        self.transport = transport
        self.session = Session(role, strict_flow_control=strict_flow_control)
        self.streams: dict[int, SpdyStream] = {}
        self.incoming: asyncio.Queue[SpdyStream | None] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.failure: str | None = None
        self._buffered = 0
        self._drained = asyncio.Event()
        self._write_lock = asyncio.Lock()

    def _consumed(self, stream_id: int, size: int) -> None:
        self._buffered -= size
        if self._buffered <= MAX_BUFFERED // 2:
            self._drained.set()
        self.session.consumed(stream_id, size)
        # WINDOW_UPDATEs go out with the next flush; do not block the reader.

    async def flush(self) -> None:
        async with self._write_lock:
            data = self.session.data_to_send()
            if data:
                try:
                    await self.transport.write(data)
                except (ConnectionError, OSError) as exc:
                    self._finish(f"write failed: {exc}")

    async def run(self) -> None:
        """Read until the peer closes or the session fails; then end every stream."""
        try:
            while not self.closed.is_set():
                data = await self.transport.read()
                if data:
                    self.session.receive_data(data)
                else:
                    self.session.receive_eof()
                self._dispatch()
                await self.flush()
                if self.session.failed is not None:
                    break  # GOAWAY is out; the handler closes the transport
                while self._buffered > MAX_BUFFERED and not self.closed.is_set():
                    self._drained.clear()
                    await self._drained.wait()
        finally:
            self._finish(self.failure)

    def _dispatch(self) -> None:
        for event in self.session.events_received():
            if isinstance(event, StreamOpened):
                stream = SpdyStream(self, event.stream_id, event.headers)
                self.streams[event.stream_id] = stream
                self.incoming.put_nowait(stream)
                if event.fin:
                    stream._end()
            elif isinstance(event, DataReceived):
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream._push(event.data)
                else:
                    self.session.consumed(0, len(event.data))
            elif isinstance(event, StreamEnded):
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream._end()
            elif isinstance(event, StreamReplied):
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream.replied.set()
                    if event.fin:
                        stream._end()
            elif isinstance(event, StreamReset):
                stream = self.streams.pop(event.stream_id, None)
                if stream is not None:
                    stream.reset_by_peer = event.by_peer
                    stream.replied.set()
                    stream._end()
            elif isinstance(event, SendWindowOpened):
                targets = self.streams.values() if event.stream_id == 0 else [self.streams.get(event.stream_id)]
                for stream in targets:
                    if stream is not None:
                        stream._writable.set()
            elif isinstance(event, ConnectionFailed):
                log.info("spdy session failed", extra=fields(reason=event.reason))
                self.failure = event.reason
            elif isinstance(event, ConnectionClosed):
                self._finish(None)
            elif isinstance(event, GoAwayReceived):
                pass  # the peer opens no more streams; the ones running finish normally

    def _finish(self, reason: str | None) -> None:
        if self.closed.is_set():
            return
        if reason and self.failure is None:
            self.failure = reason
        self.closed.set()
        self._drained.set()
        for stream in list(self.streams.values()):
            stream.replied.set()
            stream._end()
        self.incoming.put_nowait(None)

    async def accept(self) -> SpdyStream | None:
        """Next stream the peer opened (already unanswered); None when the connection ended."""
        stream = await self.incoming.get()
        if stream is None:
            self.incoming.put_nowait(None)  # keep later callers from blocking
        return stream

    async def reply(self, stream: SpdyStream) -> None:
        if self.session.is_open(stream.id):
            with contextlib.suppress(InvalidState):  # the session ended meanwhile
                self.session.reply(stream.id)
        await self.flush()

    async def open_stream(self, headers: HeaderList, *, fin: bool = False) -> SpdyStream:
        """Client side: open a stream and wait for the peer's SYN_REPLY."""
        sid = self.session.open_stream(headers, fin=fin)
        stream = SpdyStream(self, sid, headers)
        self.streams[sid] = stream
        await self.flush()
        await asyncio.wait_for(stream.replied.wait(), REPLY_TIMEOUT)
        if stream.reset_by_peer or (self.closed.is_set() and not self.session.is_open(sid)):
            raise ConnectionError(f"stream {sid} was refused")
        return stream

    async def close(self) -> None:
        """GOAWAY, then drop the transport."""
        self.session.go_away()
        await self.flush()
        await self.transport.close()
        self._finish(None)
