"""A SPDY/3.1 session as a pure state machine: bytes in, events and bytes out.

Use it like websockets' ``Protocol``: call :meth:`Session.receive_data`, then
drain :meth:`Session.events_received` and :meth:`Session.data_to_send`. The
``open_stream``/``reply``/``send_data``/... methods only queue frames. The
session never raises on peer input: a malformed frame becomes GOAWAY plus a
:class:`ConnectionFailed` event; a bad frame on one stream becomes RST_STREAM.

Flow control. SPDY/3.1 has a 64 KiB window per stream and one for the whole
session, refilled by WINDOW_UPDATE. Kubernetes' SPDY library (moby/spdystream,
used by kubectl and the kubelet) implements neither side of it: it never sends
WINDOW_UPDATE and never honours ours; it relies on TCP back-pressure. So:

- ``strict_flow_control=True`` (the spec): sends wait for window, and a peer
  that overruns our window is reset with FLOW_CONTROL_ERROR.
- ``strict_flow_control=False`` (talking to Kubernetes clients): windows are
  still tracked and granted, but neither enforced nor waited for.

In both modes the I/O layer applies back-pressure on the socket and reports
consumption of received data with :meth:`Session.consumed`.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .spdy_frames import (
    DEFAULT_WINDOW,
    MAX_STREAM_ID,
    MAX_WINDOW,
    DataFrame,
    Frame,
    FrameDecoder,
    FrameEncoder,
    GoAway,
    GoAwayStatus,
    HeaderList,
    Headers,
    Ping,
    ProtocolError,
    RstStatus,
    RstStream,
    Setting,
    SettingId,
    Settings,
    SynReply,
    SynStream,
    UnknownControl,
    WindowUpdate,
)

MAX_DATA_CHUNK = 16 * 1024  # per DATA frame, so one big write does not starve other streams


class Role(enum.Enum):
    CLIENT = "client"  # opens odd-numbered streams, sends odd ping ids
    SERVER = "server"


class InvalidState(Exception):
    """A local call that makes no sense in the current state (a caller bug)."""


# --- events --------------------------------------------------------------

@dataclass(frozen=True)
class StreamOpened:
    stream_id: int
    headers: HeaderList
    fin: bool


@dataclass(frozen=True)
class StreamReplied:
    stream_id: int
    headers: HeaderList
    fin: bool


@dataclass(frozen=True)
class HeadersReceived:
    stream_id: int
    headers: HeaderList


@dataclass(frozen=True)
class DataReceived:
    stream_id: int
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class StreamEnded:
    """The peer half-closed the stream (FIN): no more data will come."""

    stream_id: int


@dataclass(frozen=True)
class StreamReset:
    stream_id: int
    status: int
    by_peer: bool


@dataclass(frozen=True)
class PingAcked:
    ping_id: int


@dataclass(frozen=True)
class GoAwayReceived:
    last_good_stream_id: int
    status: int


@dataclass(frozen=True)
class SettingsReceived:
    settings: Settings


@dataclass(frozen=True)
class SendWindowOpened:
    """Queued data may have gone out; writers waiting on buffers can re-check."""

    stream_id: int  # 0 = session window


@dataclass(frozen=True)
class ConnectionFailed:
    reason: str
    status: int


@dataclass(frozen=True)
class ConnectionClosed:
    """The peer closed the transport (EOF)."""


Event = (StreamOpened | StreamReplied | HeadersReceived | DataReceived | StreamEnded | StreamReset
         | PingAcked | GoAwayReceived | SettingsReceived | SendWindowOpened | ConnectionFailed | ConnectionClosed)


# --- stream state --------------------------------------------------------

@dataclass
class _Stream:
    stream_id: int
    send_window: int
    recv_window: int
    replied: bool = False  # SYN_REPLY sent (peer-opened) or received (ours)
    local_closed: bool = False  # FIN queued by us
    fin_sent: bool = False
    remote_closed: bool = False
    recv_unacked: int = 0
    pending: bytearray = field(default_factory=bytearray)


class Session:
    def __init__(self, role: Role, *, strict_flow_control: bool = True, initial_window: int = DEFAULT_WINDOW) -> None:
        self.role = role
        self.strict = strict_flow_control
        self._decoder = FrameDecoder()
        self._encoder = FrameEncoder()
        self._out: list[bytes] = []
        self._events: list[Event] = []
        self._streams: dict[int, _Stream] = {}
        self._next_stream_id = 1 if role is Role.CLIENT else 2
        self._next_ping_id = 1 if role is Role.CLIENT else 2
        self._last_peer_stream = 0
        self._recv_initial = initial_window  # what we grant per stream
        self._send_initial = DEFAULT_WINDOW  # what the peer grants per stream (SETTINGS may change it)
        self._session_send = DEFAULT_WINDOW
        self._session_recv = DEFAULT_WINDOW
        self._session_unacked = 0
        self.goaway_sent = False
        self.goaway_received = False
        self.failed: ConnectionFailed | None = None
        self.closed = False
        if initial_window != DEFAULT_WINDOW:
            self._queue(Settings((Setting(SettingId.INITIAL_WINDOW_SIZE, initial_window),)))

    # --- plumbing ---------------------------------------------------------

    def _queue(self, frame: Frame) -> None:
        self._out.append(self._encoder.encode(frame))

    def data_to_send(self) -> bytes:
        data = b"".join(self._out)
        self._out.clear()
        return data

    def events_received(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def _peer_initiated(self, stream_id: int) -> bool:
        # clients own odd ids, servers even ones
        return (stream_id % 2 == 1) == (self.role is Role.SERVER)

    # --- input ------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        if self.failed is not None or self.closed:
            return  # discard, as websockets does after a failure
        try:
            frames = self._decoder.feed(data)
        except ProtocolError as exc:
            # Frames decoded before the bad one are lost with it; the session is over anyway.
            self._fail(str(exc), exc.goaway_status)
            return
        for frame in frames:
            self._handle(frame)
            if self.failed is not None:
                return

    def receive_eof(self) -> None:
        if not self.closed:
            self.closed = True
            self._events.append(ConnectionClosed())

    def _fail(self, reason: str, status: int = GoAwayStatus.PROTOCOL_ERROR) -> None:
        self.failed = ConnectionFailed(reason, status)
        if not self.goaway_sent:
            self.goaway_sent = True
            self._queue(GoAway(self._last_peer_stream, status))
        self._events.append(self.failed)

    def _rst(self, stream_id: int, status: int) -> None:
        self._queue(RstStream(stream_id, status))
        if self._streams.pop(stream_id, None) is not None:
            self._events.append(StreamReset(stream_id, status, by_peer=False))

    def _handle(self, frame: Frame) -> None:
        if isinstance(frame, DataFrame):
            self._on_data(frame)
        elif isinstance(frame, SynStream):
            self._on_syn_stream(frame)
        elif isinstance(frame, SynReply):
            stream = self._streams.get(frame.stream_id)
            if stream is None or self._peer_initiated(frame.stream_id):
                self._rst(frame.stream_id, RstStatus.INVALID_STREAM)
            elif stream.replied:
                self._rst(frame.stream_id, RstStatus.STREAM_IN_USE)
            else:
                stream.replied = True
                self._events.append(StreamReplied(frame.stream_id, frame.headers, frame.fin))
                if frame.fin:
                    self._remote_fin(stream)
        elif isinstance(frame, Headers):
            stream = self._streams.get(frame.stream_id)
            if stream is None:
                self._rst(frame.stream_id, RstStatus.INVALID_STREAM)
            else:
                self._events.append(HeadersReceived(frame.stream_id, frame.headers))
                if frame.fin:
                    self._remote_fin(stream)
        elif isinstance(frame, RstStream):
            if self._streams.pop(frame.stream_id, None) is not None:
                self._events.append(StreamReset(frame.stream_id, frame.status, by_peer=True))
        elif isinstance(frame, Settings):
            self._on_settings(frame)
        elif isinstance(frame, Ping):
            if (frame.ping_id % 2 == 1) == (self.role is Role.CLIENT):
                self._events.append(PingAcked(frame.ping_id))
            else:
                self._queue(frame)  # echo the peer's ping
        elif isinstance(frame, GoAway):
            self.goaway_received = True
            self._events.append(GoAwayReceived(frame.last_good_stream_id, frame.status))
        elif isinstance(frame, WindowUpdate):
            self._on_window_update(frame)
        elif isinstance(frame, UnknownControl):
            pass  # draft 3: unknown control frames are ignored

    def _on_syn_stream(self, frame: SynStream) -> None:
        sid = frame.stream_id
        if not self._peer_initiated(sid):
            self._fail(f"peer opened stream {sid} with our parity")
            return
        if sid in self._streams:
            self._rst(sid, RstStatus.STREAM_IN_USE)
            return
        if sid <= self._last_peer_stream:
            self._fail(f"stream id {sid} not above the last one ({self._last_peer_stream})")
            return
        self._last_peer_stream = sid
        if self.goaway_sent:
            self._queue(RstStream(sid, RstStatus.REFUSED_STREAM))
            return
        stream = _Stream(sid, send_window=self._send_initial, recv_window=self._recv_initial)
        stream.local_closed = stream.fin_sent = frame.unidirectional
        self._streams[sid] = stream
        self._events.append(StreamOpened(sid, frame.headers, frame.fin))
        if frame.fin:
            self._remote_fin(stream)

    def _on_data(self, frame: DataFrame) -> None:
        stream = self._streams.get(frame.stream_id)
        size = len(frame.data)
        self._session_recv -= size
        if self.strict and self._session_recv < 0:
            self._fail("peer overran the session flow-control window", GoAwayStatus.PROTOCOL_ERROR)
            return
        if stream is None:
            # Late data on a stream we reset or closed is normal; data on a stream
            # that never existed is an error. Either way the session window must
            # still be credited or it leaks.
            self.consumed(0, size)
            known = frame.stream_id <= (self._last_peer_stream if self._peer_initiated(frame.stream_id) else self._next_stream_id)
            if not known:
                self._queue(RstStream(frame.stream_id, RstStatus.INVALID_STREAM))
            return
        if stream.remote_closed:
            self._rst(frame.stream_id, RstStatus.STREAM_ALREADY_CLOSED)
            return
        if not self._peer_initiated(frame.stream_id) and not stream.replied:
            self._rst(frame.stream_id, RstStatus.PROTOCOL_ERROR)
            return
        stream.recv_window -= size
        if self.strict and stream.recv_window < 0:
            self._rst(frame.stream_id, RstStatus.FLOW_CONTROL_ERROR)
            return
        if frame.data:
            self._events.append(DataReceived(frame.stream_id, frame.data))
        if frame.fin:
            self._remote_fin(stream)

    def _remote_fin(self, stream: _Stream) -> None:
        stream.remote_closed = True
        self._events.append(StreamEnded(stream.stream_id))
        self._maybe_forget(stream)

    def _maybe_forget(self, stream: _Stream) -> None:
        if stream.remote_closed and stream.fin_sent:
            self._streams.pop(stream.stream_id, None)

    def _on_settings(self, frame: Settings) -> None:
        for entry in frame.entries:
            if entry.id == SettingId.INITIAL_WINDOW_SIZE:
                if entry.value > MAX_WINDOW:
                    self._fail("INITIAL_WINDOW_SIZE above 2^31-1")
                    return
                delta = entry.value - self._send_initial
                self._send_initial = entry.value
                for stream in self._streams.values():
                    stream.send_window += delta
        self._events.append(SettingsReceived(frame))
        self._flush_all()

    def _on_window_update(self, frame: WindowUpdate) -> None:
        if frame.delta == 0:
            if frame.stream_id == 0:
                self._fail("session WINDOW_UPDATE with delta 0")
            else:
                self._rst(frame.stream_id, RstStatus.PROTOCOL_ERROR)
            return
        if frame.stream_id == 0:
            self._session_send += frame.delta
            if self._session_send > MAX_WINDOW:
                self._fail("session send window above 2^31-1", GoAwayStatus.PROTOCOL_ERROR)
                return
            self._flush_all()
            self._events.append(SendWindowOpened(0))
            return
        stream = self._streams.get(frame.stream_id)
        if stream is None:
            return  # the stream finished while the update was in flight
        stream.send_window += frame.delta
        if stream.send_window > MAX_WINDOW:
            self._rst(frame.stream_id, RstStatus.FLOW_CONTROL_ERROR)
            return
        self._flush(stream)
        self._events.append(SendWindowOpened(frame.stream_id))

    # --- output -----------------------------------------------------------

    def _check_open(self) -> None:
        if self.failed is not None or self.closed:
            raise InvalidState("session is over")

    def open_stream(self, headers: HeaderList, *, fin: bool = False, priority: int = 0) -> int:
        """Send SYN_STREAM; returns the new stream id."""
        self._check_open()
        if self.goaway_sent or self.goaway_received:
            raise InvalidState("session is going away; no new streams")
        sid = self._next_stream_id
        if sid > MAX_STREAM_ID:
            raise InvalidState("stream ids exhausted")
        self._next_stream_id += 2
        stream = _Stream(sid, send_window=self._send_initial, recv_window=self._recv_initial)
        stream.local_closed = stream.fin_sent = fin
        self._streams[sid] = stream
        self._queue(SynStream(sid, headers, priority=priority, fin=fin))
        return sid

    def reply(self, stream_id: int, headers: HeaderList = (), *, fin: bool = False) -> None:
        """Answer a peer's SYN_STREAM with SYN_REPLY (required before it sees our data)."""
        self._check_open()
        stream = self._streams.get(stream_id)
        if stream is None or not self._peer_initiated(stream_id) or stream.replied:
            raise InvalidState(f"cannot reply on stream {stream_id}")
        stream.replied = True
        if fin:
            stream.local_closed = stream.fin_sent = True
        self._queue(SynReply(stream_id, headers, fin))
        self._flush(stream)
        self._maybe_forget(stream)

    def send_data(self, stream_id: int, data: bytes, *, fin: bool = False) -> bool:
        """Queue data (and optionally our FIN). Returns False when the stream is
        gone (reset by the peer, or finished): a race the caller may ignore."""
        if self.failed is not None or self.closed:
            return False
        stream = self._streams.get(stream_id)
        if stream is None or stream.local_closed:
            return False
        stream.pending += data
        if fin:
            stream.local_closed = True
        self._flush(stream)
        return True

    def end_stream(self, stream_id: int) -> bool:
        return self.send_data(stream_id, b"", fin=True)

    def reset_stream(self, stream_id: int, status: int = RstStatus.CANCEL) -> None:
        if self.failed is not None or self.closed:
            return
        if self._streams.pop(stream_id, None) is not None:
            self._queue(RstStream(stream_id, status))

    def ping(self) -> int:
        self._check_open()
        pid = self._next_ping_id
        self._next_ping_id = (self._next_ping_id + 2) % (1 << 32)
        self._queue(Ping(pid))
        return pid

    def go_away(self, status: int = GoAwayStatus.OK) -> None:
        if self.goaway_sent or self.failed is not None or self.closed:
            return
        self.goaway_sent = True
        self._queue(GoAway(self._last_peer_stream, status))

    def consumed(self, stream_id: int, size: int) -> None:
        """The application used ``size`` received bytes of ``stream_id``; grant
        the peer that much window again (batched to half a window)."""
        if size <= 0 or self.failed is not None or self.closed:
            return
        self._session_unacked += size
        if self._session_unacked >= DEFAULT_WINDOW // 2:
            self._session_recv += self._session_unacked
            self._queue(WindowUpdate(0, self._session_unacked))
            self._session_unacked = 0
        stream = self._streams.get(stream_id) if stream_id else None
        if stream is None or stream.remote_closed:
            return
        stream.recv_unacked += size
        if stream.recv_unacked >= self._recv_initial // 2:
            stream.recv_window += stream.recv_unacked
            self._queue(WindowUpdate(stream_id, stream.recv_unacked))
            stream.recv_unacked = 0

    def buffered(self, stream_id: int) -> int:
        """Bytes queued on a stream but held back by flow control."""
        stream = self._streams.get(stream_id)
        return len(stream.pending) if stream is not None else 0

    def is_open(self, stream_id: int) -> bool:
        return stream_id in self._streams

    def _flush_all(self) -> None:
        for stream in list(self._streams.values()):
            self._flush(stream)

    def _flush(self, stream: _Stream) -> None:
        # Peer-opened streams may not carry our data before our SYN_REPLY.
        if self._peer_initiated(stream.stream_id) and not stream.replied:
            return
        while stream.pending:
            size = min(len(stream.pending), MAX_DATA_CHUNK)
            if self.strict:
                size = min(size, stream.send_window, self._session_send)
                if size <= 0:
                    return
            chunk = bytes(stream.pending[:size])
            del stream.pending[:size]
            stream.send_window -= size
            self._session_send -= size
            last = not stream.pending and stream.local_closed
            self._queue(DataFrame(stream.stream_id, chunk, fin=last))
            if last:
                stream.fin_sent = True
        if stream.local_closed and not stream.fin_sent:
            stream.fin_sent = True
            self._queue(DataFrame(stream.stream_id, b"", fin=True))
        self._maybe_forget(stream)
