"""asyncio reader/writer pair for one tunnel stream, shaped like asyncio's streams.

``TunnelReader`` buffers what the session delivered (never more than the
window it granted) and reports every byte the user reads back to the session,
which is what releases flow-control credit. ``TunnelWriter.drain`` waits while
the stream's queued output is above a high-water mark, so a fast producer is
paced by the peer's credit rather than by memory.
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

from .errors import StreamReset
from .frames import ErrorCode

if TYPE_CHECKING:
    from .connection import TunnelConnection

WRITE_HIGH_WATER = 1024 * 1024


class TunnelStream:
    """State shared by the reader and writer of one stream."""

    def __init__(self, conn: "TunnelConnection", sid: int, target: str) -> None:
        self.conn = conn
        self.id = sid
        self.target = target
        self.reader = TunnelReader(self)
        self.writer = TunnelWriter(self)
        self.accepted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed = asyncio.Event()  # both directions done, or reset
        self.exc: BaseException | None = None
        self.fin_sent = False
        self.discard = False  # user closed: incoming data is dropped (and credited)
        self._drain_waiter: asyncio.Future[None] | None = None

    # called by the connection
    def on_data(self, data: memoryview | bytes) -> None:
        if self.discard:
            self.conn.consumed(self.id, len(data))
            return
        self.reader._feed(data)

    def on_eof(self) -> None:
        self.reader._feed_eof()
        self._maybe_closed()

    def on_reset(self, exc: BaseException) -> None:
        self.exc = exc
        if not self.accepted.done():
            self.accepted.set_exception(exc)
            self.accepted.exception()  # mark retrieved: nobody may be waiting
        self.reader._set_exception(exc)
        self.wake_writer()
        self.closed.set()
        self.conn.stream_done(self.id)

    def wake_writer(self) -> None:
        w = self._drain_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _maybe_closed(self) -> None:
        if self.fin_sent and self.reader._eof:
            self.closed.set()
            self.conn.stream_done(self.id)

    async def _wait_writable(self) -> None:
        while self.exc is None and self.conn.pending_out(self.id) > WRITE_HIGH_WATER:
            self._drain_waiter = asyncio.get_running_loop().create_future()
            await self._drain_waiter
            self._drain_waiter = None
        if self.exc is not None:
            raise self.exc


class TunnelReader:
    def __init__(self, stream: TunnelStream) -> None:
        self._stream = stream
        self._chunks: deque[memoryview | bytes] = deque()
        self._size = 0
        self._eof = False
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    def _feed(self, data: memoryview | bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        self._wake()

    def _feed_eof(self) -> None:
        self._eof = True
        self._wake()

    def _set_exception(self, exc: BaseException) -> None:
        self._exc = exc
        self._chunks.clear()  # the session already released these bytes
        self._size = 0
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def _wait(self) -> None:
        if self._exc is not None:
            raise self._exc
        if self._size or self._eof:
            return
        await self._next_change()

    async def _next_change(self) -> None:
        """Sleep until data, EOF or an error arrives (raising the error)."""
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self._exc is not None:
            raise self._exc

    def _take(self, n: int) -> bytes:
        """Remove up to n bytes (n > 0) and credit them back to the session."""
        first = self._chunks[0]
        if len(first) <= n:
            self._chunks.popleft()
            out = bytes(first)
        else:
            parts: list[memoryview | bytes] = []
            got = 0
            while self._chunks and got < n:
                c = self._chunks[0]
                if got + len(c) <= n:
                    parts.append(self._chunks.popleft())
                    got += len(c)
                else:
                    k = n - got
                    mv = memoryview(c)
                    parts.append(mv[:k])
                    self._chunks[0] = mv[k:]
                    got = n
            out = b"".join(parts)
        self._size -= len(out)
        self._stream.conn.consumed(self._stream.id, len(out))
        return out

    def at_eof(self) -> bool:
        return self._eof and not self._size

    def exception(self) -> BaseException | None:
        return self._exc

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (one chunk's worth when n < 0 is not given); b"" at EOF."""
        if n == 0:
            return b""
        if n < 0:
            parts: list[bytes] = []
            while True:
                await self._wait()
                if not self._size:
                    return b"".join(parts)
                parts.append(self._take(self._size))
        await self._wait()
        if not self._size:
            return b""
        # Whole chunks when they fit: avoids re-slicing big DATA payloads.
        return self._take(min(n, self._size))

    async def read_chunk(self) -> memoryview | bytes:
        """The next received chunk as delivered (zero-copy, may be a memoryview); b"" at EOF.

        For relays that pass data straight to another transport.
        """
        await self._wait()
        if not self._size:
            return b""
        chunk = self._chunks.popleft()
        self._size -= len(chunk)
        self._stream.conn.consumed(self._stream.id, len(chunk))
        return chunk

    async def readexactly(self, n: int) -> bytes:
        parts: list[bytes] = []
        got = 0
        while got < n:
            await self._wait()
            if not self._size:
                raise asyncio.IncompleteReadError(b"".join(parts), n)
            chunk = self._take(min(n - got, self._size))
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        """Line-oriented helper (control traffic); bounded by the stream window."""
        while True:
            if self._exc is not None:
                raise self._exc
            data = b"".join(self._chunks)
            idx = data.find(separator)
            if idx >= 0:
                return self._take_all_parts(idx + len(separator))
            if self._eof:
                partial = self._take_all_parts(len(data)) if data else b""
                raise asyncio.IncompleteReadError(partial, None)
            size = self._size
            while self._size == size and not self._eof:
                await self._next_change()

    def _take_all_parts(self, n: int) -> bytes:
        parts = []
        while n:
            chunk = self._take(n)
            parts.append(chunk)
            n -= len(chunk)
        return b"".join(parts)

    async def readline(self) -> bytes:
        try:
            return await self.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            return exc.partial

    def __aiter__(self) -> "TunnelReader":
        return self

    async def __anext__(self) -> bytes:
        line = await self.readline()
        if not line:
            raise StopAsyncIteration
        return line


class TunnelWriter:
    def __init__(self, stream: TunnelStream) -> None:
        self._stream = stream

    @property
    def stream_id(self) -> int:
        return self._stream.id

    def write(self, data: bytes | bytearray | memoryview) -> None:
        st = self._stream
        if st.exc is not None:
            raise st.exc
        if st.fin_sent:
            raise ConnectionResetError("write after write_eof()/close()")
        st.conn.send_data(st.id, data)

    def write_owned(self, data: memoryview) -> None:
        """Like :meth:`write`, without the copy a mutable buffer gets: the caller
        hands ``data`` over and never changes it (relays reading into fresh buffers)."""
        st = self._stream
        if st.exc is not None:
            raise st.exc
        if st.fin_sent:
            raise ConnectionResetError("write after write_eof()/close()")
        st.conn.send_data(st.id, data, owned=True)

    def writelines(self, data: Any) -> None:
        for chunk in data:
            self.write(chunk)

    async def drain(self) -> None:
        await self._stream._wait_writable()

    def queued(self) -> int:
        """Bytes written and not yet sent (waiting for credit or the socket)."""
        return self._stream.conn.pending_out(self._stream.id)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        st = self._stream
        if st.fin_sent or st.exc is not None:
            return
        st.fin_sent = True
        st.conn.send_fin(st.id)
        st._maybe_closed()

    def close(self) -> None:
        """Half-close our side; further incoming data is discarded (and credited)."""
        st = self._stream
        self.write_eof()
        if not st.discard:
            st.discard = True
            r = st.reader
            if r._size:
                st.conn.consumed(st.id, r._size)
                r._chunks.clear()
                r._size = 0

    def abort(self, reason: str = "aborted by user") -> None:
        """Reset the stream both ways (RST)."""
        st = self._stream
        if st.exc is None:
            st.conn.reset(st.id, ErrorCode.CANCEL, reason)
            st.on_reset(StreamReset(ErrorCode.CANCEL, reason))

    def is_closing(self) -> bool:
        return self._stream.fin_sent or self._stream.exc is not None

    async def wait_closed(self) -> None:
        await self._stream.closed.wait()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        st = self._stream
        return {
            "peername": st.target,
            "stream_id": st.id,
            "tunnel_peer": st.conn.peer_identity,
        }.get(name, default)

    @property
    def transport(self) -> None:
        return None
