"""The sans-I/O tunnel session: bytes in, events and bytes out.

No sockets, tasks or clocks: the I/O layer feeds ``receive_data(data, now)``,
collects ``events_received()`` and writes ``data_to_send()``; user calls
(``open_stream``, ``send_data``, ``consumed`` ...) only change state and queue
frames. Time is always an argument, so tests are exact and instant.

Flow control (see docs/tunnel-protocol.md, "Flow control"):
- Each direction of each stream has credit. OPEN and OPEN_ACK carry the
  sender's initial receive window; WINDOW_UPDATE adds more. A DATA frame over
  the credit is a FlowControlError, so a receiver never buffers more than it
  granted.
- The receiver re-grants once half the window has been consumed. If the
  previous grant happened less than two RTTs ago the window was too small for
  the bandwidth-delay product, so it doubles (up to ``max_window``).
- A session-wide window (WINDOW_UPDATE on stream 0, initial value in HELLO)
  caps the bytes in flight plus buffered over all streams, as HTTP/2's
  connection window does: the receiver never buffers more than
  ``session_buffer`` in total, whatever credit idle streams still hold.
- The writer serves streams round-robin, at most ``write_quantum`` bytes per
  turn, so a bulk stream cannot starve an interactive one.
"""
from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Any

from . import frames as fr
from .errors import FlowControlError, InvalidState, ProtocolError, VersionMismatch
from .events import (
    DataReceived,
    Event,
    GoAwayReceived,
    HelloReceived,
    PongReceived,
    SessionClosed,
    StreamAccepted,
    StreamEnded,
    StreamOpened,
    StreamRejected,
    StreamReset,
)
from .frames import ErrorCode, FrameType
from .states import Ev, StreamState, can_receive, can_send, next_state

KiB = 1024
MiB = 1024 * KiB


class Side(enum.Enum):
    """Which end of the tunnel; decides stream id parity (server even, agent odd)."""

    SERVER = 0
    AGENT = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionConfig:
    identity: str = ""
    capabilities: int = 0
    max_frame: int = fr.DEFAULT_MAX_FRAME  # largest payload we accept (sent in HELLO)
    initial_window: int = 256 * KiB
    max_window: int = 16 * MiB
    session_buffer: int = 64 * MiB  # session window: bytes buffered, all streams
    write_quantum: int = 256 * KiB  # round-robin share per stream per turn
    ping_interval: float = 10.0
    dead_after: float = 30.0
    min_rtt: float = 0.002  # RTT floor for window tuning (scheduling noise on loopback)

    def __post_init__(self) -> None:
        if not fr.MIN_MAX_FRAME <= self.max_frame <= fr.MAX_FRAME_LIMIT:
            raise ValueError(f"max_frame must be in [{fr.MIN_MAX_FRAME}, {fr.MAX_FRAME_LIMIT}]")
        if not 0 < self.initial_window <= self.max_window <= self.session_buffer <= fr.MAX_WINDOW:
            raise ValueError("need 0 < initial_window <= max_window <= session_buffer <= 2^31-1")


class _Stream:
    __slots__ = (
        "id", "target", "state", "local", "opened_at",
        "send_credit", "out", "out_bytes", "fin_queued", "fin_sent", "in_active",
        "window", "recv_credit", "buffered", "last_update", "bytes_in", "bytes_out",
    )

    def __init__(self, sid: int, target: str, local: bool, now: float) -> None:
        self.id = sid
        self.target = target
        self.state: StreamState | None = None
        self.local = local
        self.opened_at = now
        self.send_credit = 0
        self.out: deque[memoryview] = deque()
        self.out_bytes = 0
        self.fin_queued = False
        self.fin_sent = False
        self.in_active = False
        self.window = 0
        self.recv_credit = 0
        self.buffered = 0
        self.last_update = -1e18
        self.bytes_in = 0
        self.bytes_out = 0


class Session:
    """One tunnel session (one websocket). Never raises on peer input."""

    def __init__(self, side: Side, *, config: SessionConfig = SessionConfig(), now: float = 0.0) -> None:
        self.side = side
        self.config = config
        self._parser = fr.FrameParser(max_frame=config.max_frame)
        self._control: list[bytes] = []
        self._events: list[Event] = []
        self._streams: dict[int, _Stream] = {}
        self._active: deque[_Stream] = deque()
        self._writable: set[int] = set()
        self._next_local = 2 if side is Side.SERVER else 1
        self._last_local = 0
        self._last_peer = 0
        self._session_credit = config.session_buffer  # peer may send this much, all streams
        self._session_buffered = 0
        self._session_send = 0  # our session send credit (from the peer's HELLO)
        self._session_last_update = now
        self.peer: fr.Hello | None = None
        self.peer_max_frame = fr.MIN_MAX_FRAME
        self.closed: SessionClosed | None = None
        self.goaway_sent = False
        self.goaway_received = False
        self.srtt: float | None = None
        self.last_rtt: float | None = None
        self.last_received = now
        self._next_ping = now + config.ping_interval
        self.bytes_in = 0
        self.bytes_out = 0
        # HELLO first, then an immediate PING so window tuning has an RTT early.
        self._control.append(
            fr.encode_hello(
                version=fr.PROTOCOL_VERSION,
                capabilities=config.capabilities,
                max_frame=config.max_frame,
                identity=config.identity,
                session_window=config.session_buffer,
            )
        )
        self._control.append(fr.encode_ping(_stamp(now)))

    # ---- input -------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> None:
        """Feed bytes from the peer. The object must not be mutated afterwards."""
        if self.closed is not None:
            return
        self.last_received = now
        self._parser.feed(data)
        try:
            for frame in self._parser.frames():
                self._handle(frame, now)
                if self.closed is not None:
                    return
        except ProtocolError as exc:
            self._terminate(exc.code, str(exc), local=True, send_goaway=True)

    def receive_eof(self, now: float) -> None:
        if self.closed is not None:
            return
        if self._parser.buffered:
            self._terminate(ErrorCode.PROTOCOL, f"connection ended inside a frame ({self._parser.buffered} bytes)", local=False, send_goaway=False)
        elif self.goaway_received:
            self._terminate(ErrorCode.OK, "peer closed the connection after GOAWAY", local=False, send_goaway=False)
        else:
            self._terminate(ErrorCode.INTERNAL, "connection closed by peer", local=False, send_goaway=False)

    def events_received(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    # ---- output ------------------------------------------------------------

    def data_to_send(self, limit: int = 4 * MiB) -> bytes:
        """Frames ready to go: control frames first, then DATA round-robin.

        Returns about ``limit`` bytes at most (control frames are never held back).
        """
        return b"".join(self.data_to_send_parts(limit)[0])

    def data_to_send_parts(self, limit: int = 4 * MiB) -> tuple[list[bytes | memoryview], int]:
        """Like :meth:`data_to_send` but as (buffers, total size), without joining:
        payloads are views of what the user wrote, so the I/O layer can hand them
        to the transport without a copy."""
        out: list[Any] = self._control
        self._control = []
        size = sum(map(len, out))
        if self.peer is None:
            return out, size
        quantum = min(self.config.write_quantum, self.peer_max_frame)
        active = self._active
        while active and size < limit and self._session_send > 0:
            st = active.popleft()
            n = min(st.out_bytes, st.send_credit, quantum, limit - size, self._session_send) if can_send_queue(st) else 0
            if n <= 0:
                st.in_active = False
                continue
            self._session_send -= n
            out.append(fr.header(FrameType.DATA, st.id, n))
            self._take(st, n, out)
            size += fr.HEADER_SIZE + n
            st.send_credit -= n
            st.bytes_out += n
            self.bytes_out += n
            self._writable.add(st.id)
            if st.out_bytes == 0 and st.fin_queued and not st.fin_sent:
                st.fin_sent = True
                out.append(fr.encode_fin(st.id))
                size += fr.HEADER_SIZE
                self._maybe_forget(st)
            if st.out_bytes and st.send_credit:
                active.append(st)
            else:
                st.in_active = False
        return out, size

    @staticmethod
    def _take(st: _Stream, n: int, out: list[bytes]) -> None:
        q = st.out
        st.out_bytes -= n
        while n:
            chunk = q[0]
            if len(chunk) <= n:
                q.popleft()
                out.append(chunk)  # type: ignore[arg-type]
                n -= len(chunk)
            else:
                out.append(chunk[:n])  # type: ignore[arg-type]
                q[0] = chunk[n:]
                n = 0

    def writable_streams(self) -> set[int]:
        """Streams whose queued output shrank since the last call (wake their writers)."""
        ws, self._writable = self._writable, set()
        return ws

    def wants_write(self) -> bool:
        return bool(self._control) or (self._session_send > 0 and any(st.send_credit > 0 and st.out_bytes > 0 for st in self._active))

    # ---- timers ------------------------------------------------------------

    def next_deadline(self) -> float:
        return min(self._next_ping, self.last_received + self.config.dead_after)

    def tick(self, now: float) -> None:
        """Run timers: send PINGs, declare the peer dead after ``dead_after`` of silence."""
        if self.closed is not None:
            return
        silent = now - self.last_received
        if silent >= self.config.dead_after:
            self._terminate(ErrorCode.TIMEOUT, f"peer silent for {silent:.1f}s", local=True, send_goaway=True)
            return
        if now >= self._next_ping:
            self.ping(now)

    def ping(self, now: float) -> None:
        if self.closed is None:
            self._control.append(fr.encode_ping(_stamp(now)))
            self._next_ping = now + self.config.ping_interval

    # ---- user calls: streams ----------------------------------------------

    def open_stream(self, target: str, now: float) -> int:
        """Queue OPEN for ``target`` (``tcp/host:port``); returns the stream id."""
        self._check_open()
        if self.goaway_sent or self.goaway_received:
            raise InvalidState("session is draining (GOAWAY); no new streams")
        if not target or len(target.encode()) > fr.MAX_TARGET:
            raise InvalidState(f"target must be 1..{fr.MAX_TARGET} bytes")
        sid = self._next_local
        self._next_local += 2
        self._last_local = sid
        st = _Stream(sid, target, True, now)
        self._transition(st, Ev.SEND_OPEN)
        self._streams[sid] = st
        self._control.append(fr.encode_open(sid, target, self._grant_initial(st, now)))
        return sid

    def accept_stream(self, sid: int, now: float) -> None:
        st = self._local_stream(sid)
        self._transition(st, Ev.SEND_ACK)
        self._control.append(fr.encode_open_ack(sid, ErrorCode.OK, self._grant_initial(st, now)))
        self._activate(st)

    def reject_stream(self, sid: int, code: int, message: str) -> None:
        st = self._local_stream(sid)
        self._transition(st, Ev.SEND_REJECT)
        self._control.append(fr.encode_open_ack(sid, code, 0, message))
        self._forget(st)

    def send_data(self, sid: int, data: bytes | bytearray | memoryview, *, owned: bool = False) -> None:
        """Queue data; it leaves as credit allows. Mutable buffers are copied,
        unless ``owned``: the caller hands the buffer over and never changes it."""
        st = self._local_stream(sid)
        if st.fin_queued or not can_send(st.state):  # type: ignore[arg-type]
            raise InvalidState(f"stream {sid} cannot send in state {_name(st.state)}")
        if not data:
            return
        if not owned and not isinstance(data, bytes):
            data = bytes(data)
        st.out.append(memoryview(data))
        st.out_bytes += len(data)
        self._activate(st)

    def send_fin(self, sid: int) -> None:
        """Half-close our direction after the queued data."""
        st = self._local_stream(sid)
        if st.fin_queued:
            return
        self._transition(st, Ev.SEND_FIN)
        st.fin_queued = True
        if st.out_bytes == 0:
            st.fin_sent = True
            self._control.append(fr.encode_fin(sid))
            self._maybe_forget(st)

    def reset_stream(self, sid: int, code: int = ErrorCode.CANCEL, reason: str = "") -> None:
        """Abort the stream both ways; queued and buffered data are dropped."""
        st = self._streams.get(sid)
        if st is None or self.closed is not None:
            return
        if st.state is StreamState.CLOSED:
            self._forget(st)
            return
        self._transition(st, Ev.SEND_RST)
        self._control.append(fr.encode_rst(sid, code, reason))
        self._forget(st)

    def consumed(self, sid: int, n: int, now: float) -> None:
        """The user read ``n`` bytes of the stream: release them and maybe re-grant credit."""
        st = self._streams.get(sid)
        if st is None or n <= 0:
            return
        n = min(n, st.buffered)
        st.buffered -= n
        self._session_buffered -= n
        if self.closed is not None:
            return
        self._maybe_update(st, now)
        self._maybe_update_session(n, now)
        self._maybe_forget(st)

    def goaway(self, message: str = "draining") -> None:
        """Drain: tell the peer no new streams will be accepted; existing ones finish."""
        if self.closed is None and not self.goaway_sent:
            self.goaway_sent = True
            self._control.append(fr.encode_goaway(ErrorCode.OK, self._last_peer, message))

    def close(self, code: int = ErrorCode.OK, message: str = "closed") -> None:
        """End the session now: GOAWAY with ``code``; every stream is reset."""
        if self.closed is None:
            self._terminate(code, message, local=True, send_goaway=True)

    # ---- introspection ------------------------------------------------------

    @property
    def stream_ids(self) -> list[int]:
        return list(self._streams)

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    @property
    def buffered_bytes(self) -> int:
        return self._session_buffered

    @property
    def granted_bytes(self) -> int:
        """Session credit the peer still holds (bytes it may send before our next update)."""
        return self._session_credit

    def pending_out(self, sid: int) -> int:
        st = self._streams.get(sid)
        return st.out_bytes if st is not None else 0

    def stream_state(self, sid: int) -> StreamState | None:
        st = self._streams.get(sid)
        return st.state if st is not None else None

    def stream_info(self, sid: int, now: float) -> dict[str, Any]:
        st = self._streams[sid]
        return {
            "id": st.id,
            "target": st.target,
            "state": _name(st.state),
            "initiator": "local" if st.local else "peer",
            "age_seconds": round(now - st.opened_at, 3),
            "bytes_in": st.bytes_in,
            "bytes_out": st.bytes_out,
            "recv_window": st.window,
            "recv_credit": st.recv_credit,
            "send_credit": st.send_credit,
            "buffered": st.buffered,
            "queued_out": st.out_bytes,
            "blocked": st.out_bytes > 0 and st.send_credit <= 0,
        }

    def blocked_streams(self) -> int:
        return sum(1 for st in self._streams.values() if st.out_bytes > 0 and st.send_credit <= 0)

    # ---- frame handling ------------------------------------------------------

    def _handle(self, f: fr.Frame, now: float) -> None:
        t = f.type
        if self.peer is None and t is not FrameType.HELLO:
            raise ProtocolError(f"first frame must be HELLO, got {t.name}")
        if (t in fr.SESSION_FRAMES) != (f.stream_id == 0) and t is not FrameType.WINDOW_UPDATE:
            raise ProtocolError(f"{t.name} frame with stream id {f.stream_id}")
        if t is FrameType.DATA:
            self._on_data(f, now)
        elif t is FrameType.WINDOW_UPDATE:
            self._on_window_update(f)
        elif t is FrameType.OPEN:
            self._on_open(f, now)
        elif t is FrameType.OPEN_ACK:
            self._on_open_ack(f)
        elif t is FrameType.FIN:
            self._on_fin(f)
        elif t is FrameType.RST:
            self._on_rst(f)
        elif t is FrameType.PING:
            self._control.append(fr.encode_pong(fr.decode_stamp(f.payload)))
        elif t is FrameType.PONG:
            self._on_pong(f, now)
        elif t is FrameType.HELLO:
            self._on_hello(f)
        elif t is FrameType.GOAWAY:
            self._on_goaway(f)

    def _on_hello(self, f: fr.Frame) -> None:
        if self.peer is not None:
            raise ProtocolError("duplicate HELLO")
        hello = fr.decode_hello(f.payload)
        if hello.version != fr.PROTOCOL_VERSION:
            raise VersionMismatch(
                f"peer speaks tunnel protocol version {hello.version}, this side speaks version {fr.PROTOCOL_VERSION}; upgrade the older side"
            )
        self.peer = hello
        self.peer_max_frame = hello.max_frame
        self._session_send = hello.session_window
        self._events.append(HelloReceived(hello.identity, hello.version, hello.capabilities))
        for st in self._streams.values():
            self._activate(st)

    def _on_open(self, f: fr.Frame, now: float) -> None:
        sid = f.stream_id
        if (sid % 2 == 0) == (self.side is Side.SERVER):
            raise ProtocolError(f"OPEN with stream id {sid} of the wrong parity")
        if sid in self._streams:
            raise ProtocolError(f"stream id {sid} reused while open")
        if sid <= self._last_peer:
            raise ProtocolError(f"stream id {sid} reused (ids must increase; last was {self._last_peer})")
        window, target = fr.decode_open(f.payload)
        self._last_peer = sid
        if self.goaway_sent:
            self._control.append(fr.encode_open_ack(sid, ErrorCode.GOING_AWAY, 0, "session is draining"))
            return
        st = _Stream(sid, target, False, now)
        self._transition(st, Ev.RECV_OPEN, remote=True)
        st.send_credit = window
        self._streams[sid] = st
        self._events.append(StreamOpened(sid, target))

    def _on_open_ack(self, f: fr.Frame) -> None:
        st = self._peer_stream(f)
        if st is None:
            return
        code, window, message = fr.decode_open_ack(f.payload)
        if code == ErrorCode.OK:
            self._transition(st, Ev.RECV_ACK, remote=True)
            st.send_credit = window
            self._events.append(StreamAccepted(st.id))
            self._activate(st)
        else:
            self._transition(st, Ev.RECV_REJECT, remote=True)
            self._release(st)
            self._streams.pop(st.id, None)
            self._events.append(StreamRejected(st.id, code, message))

    def _on_data(self, f: fr.Frame, now: float) -> None:
        st = self._peer_stream(f)
        n = len(f.payload)
        if n > self._session_credit:
            raise FlowControlError(f"{n} bytes exceed the {self._session_credit} bytes of session credit")
        self._session_credit -= n
        if st is None:
            # Data that crossed our RST: drop it, but the peer spent session credit on it.
            self._maybe_update_session(n, now)
            return
        if not can_receive(st.state):  # type: ignore[arg-type]
            raise ProtocolError(f"DATA on stream {st.id} in state {_name(st.state)}")
        if n > st.recv_credit:
            raise FlowControlError(f"stream {st.id} sent {n} bytes with only {st.recv_credit} bytes of credit")
        st.recv_credit -= n
        st.buffered += n
        self._session_buffered += n
        st.bytes_in += n
        self.bytes_in += n
        if n:
            self._events.append(DataReceived(st.id, f.payload))

    def _on_window_update(self, f: fr.Frame) -> None:
        inc = fr.decode_window_update(f.payload)
        if f.stream_id == 0:
            if self._session_send + inc > fr.MAX_WINDOW:
                raise FlowControlError("WINDOW_UPDATE overflows the session window")
            self._session_send += inc
            return
        st = self._peer_stream(f)
        if st is None:
            return
        if st.send_credit + inc > fr.MAX_WINDOW:
            raise FlowControlError(f"WINDOW_UPDATE overflows the send window of stream {st.id}")
        st.send_credit += inc
        self._activate(st)

    def _on_fin(self, f: fr.Frame) -> None:
        st = self._peer_stream(f)
        if st is None:
            return
        self._transition(st, Ev.RECV_FIN, remote=True)
        st.recv_credit = 0  # no more data can arrive
        self._events.append(StreamEnded(st.id))
        self._maybe_forget(st)

    def _on_rst(self, f: fr.Frame) -> None:
        st = self._peer_stream(f)
        code, reason = fr.decode_rst(f.payload)
        if st is None:
            return
        self._transition(st, Ev.RECV_RST, remote=True)
        self._forget(st)
        self._events.append(StreamReset(st.id, code, reason))

    def _on_pong(self, f: fr.Frame, now: float) -> None:
        rtt = max(0.0, now - fr.decode_stamp(f.payload) / 1e6)
        self.last_rtt = rtt
        self.srtt = rtt if self.srtt is None else 0.875 * self.srtt + 0.125 * rtt
        self._events.append(PongReceived(rtt))

    def _on_goaway(self, f: fr.Frame) -> None:
        code, last, message = fr.decode_goaway(f.payload)
        if code != ErrorCode.OK:
            self._terminate(code, f"peer closed the session: {message}", local=False, send_goaway=False)
            return
        self.goaway_received = True
        # Our OPENs beyond ``last`` were never seen by the peer: fail them now.
        for st in list(self._streams.values()):
            if st.local and st.id > last and st.state is StreamState.OPENING:
                self._release(st)
                self._streams.pop(st.id, None)
                self._events.append(StreamRejected(st.id, ErrorCode.GOING_AWAY, "peer is draining"))
        self._events.append(GoAwayReceived(code, last, message))

    # ---- helpers -------------------------------------------------------------

    def _peer_stream(self, f: fr.Frame) -> _Stream | None:
        """The stream a peer frame refers to; None for a stream we already closed."""
        st = self._streams.get(f.stream_id)
        if st is not None:
            return st
        sid = f.stream_id
        mine = (sid % 2 == 0) == (self.side is Side.SERVER)
        if sid <= (self._last_local if mine else self._last_peer):
            return None  # in flight when we reset or finished it: ignore
        raise ProtocolError(f"{f.type.name} on unknown stream {sid}")

    def _local_stream(self, sid: int) -> _Stream:
        self._check_open()
        st = self._streams.get(sid)
        if st is None:
            raise InvalidState(f"no stream {sid}")
        return st

    def _check_open(self) -> None:
        if self.closed is not None:
            raise InvalidState(f"session closed: {self.closed.message}")

    def _transition(self, st: _Stream, ev: Ev, *, remote: bool = False) -> None:
        new = next_state(st.state, ev)
        if new is None:
            msg = f"{ev.value} not allowed on stream {st.id} in state {_name(st.state)}"
            raise ProtocolError(msg) if remote else InvalidState(msg)
        st.state = new

    def _activate(self, st: _Stream) -> None:
        if not st.in_active and st.out_bytes and st.send_credit > 0 and can_send_queue(st):
            st.in_active = True
            self._active.append(st)

    def _grant_initial(self, st: _Stream, now: float) -> int:
        st.window = st.recv_credit = self.config.initial_window
        st.last_update = now
        return st.window

    def _maybe_update(self, st: _Stream, now: float) -> None:
        """Re-grant stream credit once half the window was consumed (auto-tuning it)."""
        if st.state is not StreamState.OPEN and st.state is not StreamState.HALF_LOCAL:
            return
        unreleased = st.window - st.recv_credit - st.buffered
        if unreleased < st.window // 2:
            return
        rtt = max(self.srtt or 0.0, self.config.min_rtt)
        if now - st.last_update < 2 * rtt and st.window < self.config.max_window:
            # Half a window went by in under two RTTs: the window limits throughput.
            grow = min(st.window, self.config.max_window - st.window)
            st.window += grow
            unreleased += grow
        st.recv_credit += unreleased
        st.last_update = now
        self._control.append(fr.encode_window_update(st.id, unreleased))

    def _maybe_update_session(self, n: int, now: float) -> None:
        unreleased = self.config.session_buffer - self._session_credit - self._session_buffered
        if unreleased >= self.config.session_buffer // 4:
            self._session_credit += unreleased
            self._control.append(fr.encode_window_update(0, unreleased))

    def _release(self, st: _Stream) -> None:
        """Drop the stream's buffers; buffered bytes go back to the session window."""
        if st.buffered:
            self._session_buffered -= st.buffered
            self._maybe_update_session(st.buffered, 0.0)
        st.recv_credit = 0
        st.buffered = 0
        st.out.clear()
        st.out_bytes = 0

    def _forget(self, st: _Stream) -> None:
        self._release(st)
        self._streams.pop(st.id, None)

    def _maybe_forget(self, st: _Stream) -> None:
        if st.state is StreamState.CLOSED and st.out_bytes == 0 and st.buffered == 0 and (st.fin_sent or not st.fin_queued):
            self._forget(st)

    def _terminate(self, code: int, message: str, *, local: bool, send_goaway: bool) -> None:
        if send_goaway:
            self._control.append(fr.encode_goaway(code, self._last_peer, message))
        reason = f"session closed: {message}"
        for st in list(self._streams.values()):
            if st.state is not StreamState.CLOSED:
                self._events.append(StreamReset(st.id, code if code else ErrorCode.INTERNAL, reason))
            self._forget(st)
        self._active.clear()
        self.closed = SessionClosed(code, message, local)
        self._events.append(self.closed)


def can_send_queue(st: _Stream) -> bool:
    """Queued data may leave while the stream was accepted and not reset."""
    return st.state in (StreamState.OPEN, StreamState.HALF_REMOTE, StreamState.HALF_LOCAL, StreamState.CLOSED)


def _stamp(now: float) -> int:
    return max(0, int(now * 1e6))


def _name(state: StreamState | None) -> str:
    return state.value if state is not None else "idle"
