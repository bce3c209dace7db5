"""The asyncio layer: one :class:`Session` over one websocket on asyncio streams.

We drive websockets' sans-I/O ``Protocol`` ourselves instead of using its
asyncio connection, because:
- the server side starts from a connection our HTTPS server already parsed
  (``Request.take_over()``), so the handshake is ours anyway;
- back-pressure stays in one place: the write loop is the only code that
  calls ``data_to_send`` on both the session and the websocket, and the only
  code that awaits ``drain``. The read loop never awaits anything but the
  socket, so one slow stream cannot stall the session (its data waits in its
  reader, bounded by the window it was granted).

Three tasks per connection: read loop, write loop, timer (pings, liveness).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import time
from collections.abc import Callable
from typing import Any, cast

from websockets.frames import Frame, Opcode
from websockets.protocol import CLIENT, OPEN, SERVER, Protocol

from ..log import fields

try:  # websockets' C masking, as its own frame serializer uses
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - pure-Python build of websockets
    from websockets.utils import apply_mask
from .errors import DialError, StreamReset
from .events import (
    DataReceived,
    GoAwayReceived,
    HelloReceived,
    PongReceived,
    SessionClosed,
    StreamAccepted,
    StreamEnded,
    StreamOpened,
    StreamRejected,
)
from .events import StreamReset as StreamResetEvent
from .frames import ErrorCode
from .pipe import take_read_ahead
from .session import Session
from .streams import TunnelStream
from .wsread import BinaryMessageReader

log = logging.getLogger(__name__)

READ_SIZE = 1024 * 1024
MESSAGE_LIMIT = 1024 * 1024 + 64 * 1024  # bytes of tunnel frames per websocket message
WS_MAX_SIZE = 4 * 1024 * 1024  # websocket message cap (several frames per message)
TRANSPORT_HIGH_WATER = 4 * 1024 * 1024

_REJECT_REASON: dict[int, str] = {
    ErrorCode.REFUSED: DialError.REFUSED,
    ErrorCode.BAD_TARGET: DialError.REFUSED,
    ErrorCode.CONNECT_FAILED: DialError.CONNECT_FAILED,
    ErrorCode.TIMEOUT: DialError.TIMEOUT,
    ErrorCode.GOING_AWAY: DialError.SESSION_CLOSED,
}


def ws_binary_header(length: int, mask: bytes | None) -> bytes:
    """RFC 6455 header of one unfragmented binary message.

    The data path writes its messages with this header plus the payload views
    instead of going through websockets' ``Frame.serialize``, which copies every
    payload twice (BytesIO write + getvalue). Everything else (handshake, parsing,
    ping/pong, close) stays with websockets' Protocol.
    """
    bit = 0x80 if mask is not None else 0
    if length < 126:
        head = struct.pack("!BB", 0x82, bit | length)
    elif length < 65536:
        head = struct.pack("!BBH", 0x82, bit | 126, length)
    else:
        head = struct.pack("!BBQ", 0x82, bit | 127, length)
    return head + mask if mask is not None else head


def code_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return str(code)


class _WireProtocol(asyncio.BufferedProtocol):
    """Receives the websocket's bytes straight from the transport; tracks write pause.

    A buffered protocol: whole binary messages are read (decrypted, with TLS)
    in place into one buffer per message by :class:`BinaryMessageReader`;
    everything else goes to websockets' Protocol as before.
    """

    def __init__(self, conn: "TunnelConnection") -> None:
        self.conn = conn
        self.paused = False
        self.lost = False
        self._resume: asyncio.Future[None] | None = None
        ws = conn.ws
        self.reader = BinaryMessageReader(
            masked=ws.side is SERVER,
            max_size=ws.max_message_size or WS_MAX_SIZE,
            on_message=conn._on_message,
            on_passthrough=conn._on_bytes,
            fast_ok=lambda: ws.state is OPEN and ws.current_size is None,
        )
        self.get_buffer = self.reader.get_buffer  # type: ignore[method-assign]
        self.buffer_updated = self.reader.buffer_updated  # type: ignore[method-assign]

    def data_received(self, data: bytes) -> None:  # transports without get_buffer
        self.reader.feed(data)

    def eof_received(self) -> bool | None:
        self.conn._on_eof()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.resume_writing()
        self.conn._on_eof()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self._resume is not None and not self._resume.done():
            self._resume.set_result(None)

    async def resumed(self) -> None:
        if self.paused and not self.lost:
            self._resume = asyncio.get_running_loop().create_future()
            await self._resume


class TunnelConnection:
    """Runs a session until it ends. ``on_stream_opened`` handles peer OPENs."""

    def __init__(
        self,
        *,
        session: Session,
        ws: Protocol,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        name: str,
        remote: str,
        on_stream_opened: Callable[[TunnelStream], None] | None = None,
    ) -> None:
        self.session = session
        self.ws = ws
        self.reader = reader
        self.writer = writer
        self.name = name
        self.remote = remote
        self.on_stream_opened = on_stream_opened
        self.streams: dict[int, TunnelStream] = {}
        self.connected_since = time.time()
        self.hello = asyncio.Event()
        self.ended = asyncio.Event()
        self.close_info: SessionClosed | None = None
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._next_trim = self._loop.time()

    # ---- identity and stats ------------------------------------------------

    @property
    def peer_identity(self) -> str:
        return self.session.peer.identity if self.session.peer else ""

    @property
    def now(self) -> float:
        return self._loop.time()

    # ---- lifecycle ----------------------------------------------------------

    async def run(self, pending: bytes = b"") -> None:
        """Serve until the session ends; always closes the transport."""
        transport = cast(asyncio.Transport, self.writer.transport)
        with contextlib.suppress(Exception):
            transport.set_write_buffer_limits(high=TRANSPORT_HIGH_WATER)
        # From here on the transport feeds us directly (no StreamReader copy);
        # bytes the StreamReader had already read ahead are taken first.
        ahead = take_read_ahead(self.reader)
        at_eof = self.reader.at_eof()
        self._wire = _WireProtocol(self)
        transport.set_protocol(self._wire)
        with contextlib.suppress(Exception):
            transport.resume_reading()
        if pending or ahead:
            self._wire.reader.feed(pending + ahead)
        self._process_ws_events()
        if at_eof:
            self._on_eof()
        self._wake.set()
        self._tasks = [asyncio.create_task(self._timer_loop(), name=f"tunnel-timer-{self.name}")]
        try:
            await self._write_loop()
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self.session.closed is None:  # cancelled from outside
                self.session.close(ErrorCode.INTERNAL, "connection task cancelled")
                self._process_session_events()
            # close() flushes the final GOAWAY/close frame; a peer that stopped
            # reading must not keep the buffer (and the socket) alive forever.
            transport.close()
            self._loop.call_later(2.0, transport.abort)
            self.ended.set()

    def open_stream(self, target: str) -> TunnelStream:
        sid = self.session.open_stream(target, self.now)
        st = TunnelStream(self, sid, target)
        self.streams[sid] = st
        self._wake.set()
        return st

    async def drain(self, timeout: float, message: str = "draining") -> None:
        """GOAWAY, wait for open streams to finish (up to ``timeout``), then close."""
        if self.session.closed is not None:
            return
        self.session.goaway(message)
        self._wake.set()
        deadline = self.now + timeout
        while self.session.open_streams and self.session.closed is None and self.now < deadline:
            await asyncio.sleep(0.05)
        self.close(ErrorCode.OK, message)

    def close(self, code: int = ErrorCode.OK, message: str = "closed") -> None:
        self.session.close(code, message)
        self._process_session_events()
        self._wake.set()

    # ---- called by streams ---------------------------------------------------

    def send_data(self, sid: int, data: bytes | bytearray | memoryview, *, owned: bool = False) -> None:
        self.session.send_data(sid, data, owned=owned)
        self._wake.set()

    def send_fin(self, sid: int) -> None:
        self.session.send_fin(sid)
        self._wake.set()

    def reset(self, sid: int, code: int, reason: str) -> None:
        self.session.reset_stream(sid, code, reason)
        self.streams.pop(sid, None)
        self._wake.set()

    def accept(self, sid: int) -> None:
        self.session.accept_stream(sid, self.now)
        self._wake.set()

    def reject(self, sid: int, code: int, message: str) -> None:
        if self.session.closed is None and self.session.stream_state(sid) is not None:
            self.session.reject_stream(sid, code, message)
        self.streams.pop(sid, None)
        self._wake.set()

    def consumed(self, sid: int, n: int) -> None:
        self.session.consumed(sid, n, self.now)
        self._wake.set()

    def pending_out(self, sid: int) -> int:
        return self.session.pending_out(sid)

    def stream_done(self, sid: int) -> None:
        self.streams.pop(sid, None)

    # ---- loops ----------------------------------------------------------------

    def _on_message(self, data: bytes | memoryview) -> None:
        """One whole binary websocket message (the fast path of BinaryMessageReader)."""
        if self.session.closed is None:
            self.session.receive_data(data, self.now)
            self._process_session_events()
            self._wake.set()

    def _on_bytes(self, data: bytes) -> None:
        if self.session.closed is None:
            self.ws.receive_data(data)
            self._process_ws_events()

    def _on_eof(self) -> None:
        if self.session.closed is None:
            cut = self._wire.reader.buffered if hasattr(self, "_wire") else 0
            if cut:  # websockets never saw this message's header, so it cannot tell
                self.session.close(ErrorCode.PROTOCOL, f"websocket error: connection ended inside a message ({cut} bytes)")
                self._process_session_events()
            self.ws.receive_eof()
            self._process_ws_events()
            self.session.receive_eof(self.now)
            self._process_session_events()
        self._wake.set()

    async def _timer_loop(self) -> None:
        session = self.session
        while session.closed is None:
            delay = session.next_deadline() - self.now
            if delay > 0:
                await asyncio.sleep(delay)
            session.tick(self.now)
            self._process_session_events()
            self._wake.set()
            if self.now >= self._next_trim:  # idle sessions give back their message buffers
                self._next_trim = self.now + session.config.ping_interval
                self._wire.reader.trim_idle()

    async def _write_loop(self) -> None:
        session, ws, wire = self.session, self.ws, self._wire
        transport = self.writer.transport
        while True:
            await self._wake.wait()
            self._wake.clear()
            client = ws.side is CLIENT
            while True:
                parts, size = session.data_to_send_parts(MESSAGE_LIMIT)
                out = ws.data_to_send()  # websockets' own frames (pong, close) first
                if not transport.is_closing():
                    for chunk in out:
                        if chunk:
                            transport.write(chunk)
                    if size and ws.state is OPEN and not ws.close_sent:
                        if client:  # clients must mask: one join, one mask pass
                            key = os.urandom(4)
                            transport.writelines([ws_binary_header(size, key), apply_mask(b"".join(parts), key)])
                        else:  # server: header + the user's buffers, no copy before TLS
                            transport.writelines([ws_binary_header(size, None), *parts])
                    if session.closed is not None and not ws.close_sent and ws.state is OPEN:
                        ws.send_close(1000 if not session.closed.code else 1002, session.closed.message[:100])
                        for chunk in ws.data_to_send():
                            if chunk:
                                transport.write(chunk)
                msg = size
                writable = session.writable_streams()
                if writable:
                    for sid in writable:
                        st = self.streams.get(sid)
                        if st is not None:
                            st.wake_writer()
                if not msg:
                    break
                if wire.paused:
                    await wire.resumed()
            if session.closed is not None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(wire.resumed(), 2.0)
                return

    # ---- event dispatch ------------------------------------------------------

    def _process_ws_events(self) -> None:
        session = self.session
        for ev in self.ws.events_received():
            if not isinstance(ev, Frame):
                continue
            if ev.opcode is Opcode.BINARY or ev.opcode is Opcode.CONT:
                session.receive_data(ev.data, self.now)
            elif ev.opcode is Opcode.TEXT:
                session.close(ErrorCode.PROTOCOL, "text websocket message (the tunnel is binary)")
            elif ev.opcode is Opcode.CLOSE:
                session.receive_eof(self.now)
        if self.ws.parser_exc is not None and session.closed is None:
            session.close(ErrorCode.PROTOCOL, f"websocket error: {self.ws.parser_exc}")
        self._process_session_events()
        self._wake.set()

    def _process_session_events(self) -> None:
        for ev in self.session.events_received():
            t = type(ev)
            if t is DataReceived:
                st = self.streams.get(ev.stream_id)  # type: ignore[union-attr]
                if st is not None:
                    st.on_data(ev.data)  # type: ignore[union-attr]
                else:  # user already let go of the stream: drop and credit
                    self.session.consumed(ev.stream_id, len(ev.data), self.now)  # type: ignore[union-attr]
            elif t is StreamOpened:
                st = TunnelStream(self, ev.stream_id, ev.target)  # type: ignore[union-attr]
                self.streams[st.id] = st
                if self.on_stream_opened is None:
                    self.session.reject_stream(st.id, ErrorCode.REFUSED, "this side accepts no streams")
                    self.streams.pop(st.id, None)
                else:
                    self.on_stream_opened(st)
            elif t is StreamAccepted:
                st = self.streams.get(ev.stream_id)  # type: ignore[union-attr]
                if st is not None and not st.accepted.done():
                    st.accepted.set_result(None)
            elif t is StreamRejected:
                st = self.streams.pop(ev.stream_id, None)  # type: ignore[union-attr]
                if st is not None:
                    reason = _REJECT_REASON.get(ev.code, DialError.CONNECT_FAILED)  # type: ignore[union-attr]
                    st.on_reset(DialError(reason, ev.message or code_name(ev.code)))  # type: ignore[union-attr]
            elif t is StreamEnded:
                st = self.streams.get(ev.stream_id)  # type: ignore[union-attr]
                if st is not None:
                    st.on_eof()
            elif t is StreamResetEvent:
                st = self.streams.pop(ev.stream_id, None)  # type: ignore[union-attr]
                if st is not None:
                    st.on_reset(StreamReset(ev.code, ev.reason))  # type: ignore[union-attr]
            elif t is HelloReceived:
                self.hello.set()
            elif t is GoAwayReceived:
                log.info("tunnel peer is draining", extra=fields(session=self.name, message=ev.message))  # type: ignore[union-attr]
            elif t is SessionClosed:
                self.close_info = ev  # type: ignore[assignment]
                if ev.code:  # type: ignore[union-attr]
                    log.warning(
                        "tunnel session ended with an error",
                        extra=fields(session=self.name, remote=self.remote, code=code_name(ev.code), error=ev.message, local=ev.local),  # type: ignore[union-attr]
                    )
                else:
                    log.info("tunnel session closed", extra=fields(session=self.name, reason=ev.message))  # type: ignore[union-attr]
                self.hello.set()
                self._wake.set()
            elif t is PongReceived:
                pass
