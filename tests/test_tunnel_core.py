"""The sans-I/O tunnel core, byte for byte, without an event loop."""
from __future__ import annotations

import struct

import pytest

from edgectl.tunnel import frames as fr
from edgectl.tunnel.events import (
    DataReceived, GoAwayReceived, HelloReceived, PongReceived, SessionClosed,
    StreamAccepted, StreamEnded, StreamOpened, StreamRejected, StreamReset,
)
from edgectl.tunnel.errors import InvalidState
from edgectl.tunnel.frames import ErrorCode, FrameType
from edgectl.tunnel.session import KiB, MiB, Session, SessionConfig, Side
from edgectl.tunnel.states import TRANSITIONS, Ev, StreamState, next_state


def pump(a: Session, b: Session, now: float = 0.0, *, byte_by_byte: bool = False) -> None:
    moved = True
    while moved:
        moved = False
        for x, y in ((a, b), (b, a)):
            data = x.data_to_send()
            if data:
                moved = True
                if byte_by_byte:
                    for i in range(len(data)):
                        y.receive_data(data[i : i + 1], now)
                else:
                    y.receive_data(data, now)


def pair(**kw: object) -> tuple[Session, Session]:
    cfg = SessionConfig(**kw)  # type: ignore[arg-type]
    a, b = Session(Side.SERVER, config=cfg), Session(Side.AGENT, config=cfg)
    pump(a, b)
    a.events_received()
    b.events_received()
    return a, b


def open_accepted(a: Session, b: Session, target: str = "tcp/127.0.0.1:10250") -> int:
    sid = a.open_stream(target, 0.0)
    pump(a, b)
    assert b.events_received() == [StreamOpened(sid, target)]
    b.accept_stream(sid, 0.0)
    pump(a, b)
    assert a.events_received() == [StreamAccepted(sid)]
    return sid


def closed_with(s: Session) -> SessionClosed:
    events = [e for e in s.events_received() if isinstance(e, SessionClosed)]
    assert events, "session did not close"
    return events[0]


def hello_bytes(version: int = 1, identity: str = "x") -> bytes:
    return fr.encode_hello(version=version, capabilities=0, max_frame=fr.DEFAULT_MAX_FRAME, session_window=64 * MiB, identity=identity)


def fresh_after_hello() -> Session:
    s = Session(Side.AGENT)
    s.data_to_send()
    s.receive_data(hello_bytes(), 0.0)
    s.events_received()
    return s


# ---- handshake ----------------------------------------------------------------


def test_hello_first_both_ways_with_identity() -> None:
    a = Session(Side.SERVER, config=SessionConfig(identity="server-1"))
    b = Session(Side.AGENT, config=SessionConfig(identity="node-a"))
    first = fr.parse_all(a.data_to_send())[0]
    assert first.type is FrameType.HELLO
    b.receive_data(fr.encode_hello(version=1, capabilities=0, max_frame=fr.DEFAULT_MAX_FRAME, session_window=MiB, identity="server-1"), 0.0)
    assert b.events_received() == [HelloReceived("server-1", 1, 0)]


def test_hello_byte_by_byte() -> None:
    a, b = Session(Side.SERVER), Session(Side.AGENT)
    pump(a, b, byte_by_byte=True)
    assert any(isinstance(e, HelloReceived) for e in b.events_received())
    assert a.peer is not None


def test_version_mismatch_is_a_clear_error() -> None:
    s = Session(Side.AGENT)
    s.receive_data(hello_bytes(version=2), 0.0)
    closed = closed_with(s)
    assert closed.code == ErrorCode.VERSION
    assert "version 2" in closed.message and "version 1" in closed.message
    goaway = [f for f in fr.parse_all(s.data_to_send()) if f.type is FrameType.GOAWAY]
    assert fr.decode_goaway(goaway[0].payload)[0] == ErrorCode.VERSION


def test_missing_hello_is_protocol_error() -> None:
    s = Session(Side.AGENT)
    s.receive_data(fr.encode_ping(1), 0.0)
    closed = closed_with(s)
    assert closed.code == ErrorCode.PROTOCOL and "HELLO" in closed.message


def test_duplicate_hello_is_protocol_error() -> None:
    s = fresh_after_hello()
    s.receive_data(hello_bytes(), 0.0)
    assert "duplicate HELLO" in closed_with(s).message


# ---- bad input ----------------------------------------------------------------


@pytest.mark.parametrize(
    "payload, code, words",
    [
        (struct.pack("!BBII", 99, 0, 0, 0), ErrorCode.PROTOCOL, "unknown frame type"),
        (struct.pack("!BBII", FrameType.DATA, 0, 1, fr.DEFAULT_MAX_FRAME + 1), ErrorCode.FRAME_TOO_LARGE, "exceeds"),
        (fr.encode(FrameType.DATA, 7, b"abc"), ErrorCode.PROTOCOL, "unknown stream 7"),
        (fr.encode(FrameType.FIN, 0, b""), ErrorCode.PROTOCOL, "stream id 0"),
        (fr.encode(FrameType.PING, 3, b"\0" * 8), ErrorCode.PROTOCOL, "stream id 3"),
        (fr.encode(FrameType.PING, 0, b"\0" * 3), ErrorCode.PROTOCOL, "8 bytes"),
        (fr.encode(FrameType.OPEN, 1, b"\0\0\0\1" + b"\xff\xfe"), ErrorCode.PROTOCOL, "UTF-8"),
        (fr.encode(FrameType.OPEN, 3, b"\0\0\0\1" + b"x" * 600), ErrorCode.PROTOCOL, "too long"),
    ],
)
def test_bad_frames_close_the_session(payload: bytes, code: int, words: str) -> None:
    s = Session(Side.SERVER)
    s.receive_data(hello_bytes(), 0.0)
    s.receive_data(payload, 0.0)
    closed = closed_with(s)
    assert closed.code == code and words in closed.message
    assert s.closed is not None
    s.receive_data(b"more garbage", 0.0)  # ignored after close, never raises


def test_truncated_frame_at_eof() -> None:
    s = fresh_after_hello()
    s.receive_data(fr.encode_ping(5)[:7], 0.0)
    s.receive_eof(0.0)
    closed = closed_with(s)
    assert closed.code == ErrorCode.PROTOCOL and "inside a frame" in closed.message


def test_stream_id_reused_while_open() -> None:
    a, b = pair()
    sid = open_accepted(a, b)
    b.receive_data(fr.encode_open(sid, "tcp/127.0.0.1:1", 1000), 0.0)
    assert "reused while open" in closed_with(b).message


def test_stream_ids_must_increase() -> None:
    a, b = pair()
    sid = open_accepted(a, b)
    a.reset_stream(sid)
    pump(a, b)
    b.events_received()
    b.receive_data(fr.encode_open(sid, "tcp/127.0.0.1:1", 1000), 0.0)
    assert "reused" in closed_with(b).message


def test_window_overflow_is_flow_control_error() -> None:
    a, b = pair(initial_window=16 * KiB)
    sid = open_accepted(a, b)
    b.receive_data(fr.encode(FrameType.DATA, sid, b"x" * (16 * KiB + 1)), 0.0)
    closed = closed_with(b)
    assert closed.code == ErrorCode.FLOW_CONTROL
    a2, b2 = pair()
    sid2 = open_accepted(a2, b2)
    b2.receive_data(fr.encode_window_update(sid2, 2**31 - 1), 0.0)
    assert closed_with(b2).code == ErrorCode.FLOW_CONTROL
    a3, b3 = pair(session_buffer=512 * KiB, max_window=256 * KiB, initial_window=256 * KiB)
    s1, s2, s3 = (open_accepted(a3, b3) for _ in range(3))
    for sid3 in (s1, s2, s3):
        b3.receive_data(fr.encode(FrameType.DATA, sid3, b"x" * 200 * KiB), 0.0)
    assert closed_with(b3).code == ErrorCode.FLOW_CONTROL  # 600 KiB > session window


def test_local_misuse_raises_invalid_state() -> None:
    a, b = pair()
    sid = open_accepted(a, b)
    a.send_fin(sid)
    with pytest.raises(InvalidState):
        a.send_data(sid, b"late")
    with pytest.raises(InvalidState):
        a.send_data(999, b"x")


# ---- streams ----------------------------------------------------------------------


def test_refused_open_fails_only_that_stream() -> None:
    a, b = pair()
    keep = open_accepted(a, b)
    sid = a.open_stream("tcp/10.0.0.1:22", 0.0)
    pump(a, b)
    b.events_received()
    b.reject_stream(sid, ErrorCode.REFUSED, "not allowed")
    pump(a, b)
    assert a.events_received() == [StreamRejected(sid, ErrorCode.REFUSED, "not allowed")]
    a.send_data(keep, b"still alive")
    pump(a, b)
    assert b.events_received() == [DataReceived(keep, memoryview(b"still alive"))]
    assert a.closed is None and b.closed is None


def test_fin_is_half_close_and_data_after_fin_is_error() -> None:
    a, b = pair()
    sid = open_accepted(a, b)
    a.send_data(sid, b"req")
    a.send_fin(sid)
    pump(a, b)
    evs = b.events_received()
    assert [type(e) for e in evs] == [DataReceived, StreamEnded]
    b.send_data(sid, b"resp")  # the other direction still works
    b.send_fin(sid)
    pump(a, b)
    assert [type(e) for e in a.events_received()] == [DataReceived, StreamEnded]
    b.consumed(sid, 3, 0.0)
    a.consumed(sid, 4, 0.0)
    assert a.open_streams == 0 and b.open_streams == 0
    # DATA after FIN on a still-known stream is a protocol error
    a, b = pair()
    sid = open_accepted(a, b)
    a.send_fin(sid)
    pump(a, b)
    b.receive_data(fr.encode(FrameType.DATA, sid, b"x"), 0.0)
    assert b.closed is not None and "half_closed_remote" in b.closed.message


def test_rst_drops_queued_data_and_late_frames_are_ignored() -> None:
    a, b = pair()
    sid = open_accepted(a, b)
    b.send_data(sid, b"y" * 1000)
    pump(a, b)
    a.events_received()
    b.send_data(sid, b"in flight")
    in_flight = b.data_to_send()
    a.reset_stream(sid, ErrorCode.CANCEL, "bye")
    a.receive_data(in_flight, 0.0)  # arrives after our RST: ignored, no error
    assert a.closed is None and a.events_received() == []
    assert a.buffered_bytes == 0
    pump(a, b)
    assert b.events_received() == [StreamReset(sid, ErrorCode.CANCEL, "bye")]


def test_ping_pong_measures_rtt_with_given_time() -> None:
    a, b = pair()
    a.ping(10.0)
    b.receive_data(a.data_to_send(), 10.02)
    a.receive_data(b.data_to_send(), 10.05)
    assert a.events_received() == [PongReceived(pytest.approx(0.05))]
    assert a.last_rtt == pytest.approx(0.05)


def test_timers_ping_and_dead_peer() -> None:
    a, b = pair(ping_interval=10.0, dead_after=30.0)
    assert a.next_deadline() == 10.0
    a.tick(10.0)
    assert any(f.type is FrameType.PING for f in fr.parse_all(a.data_to_send()))
    sid = open_accepted(a, b)
    a.tick(31.0)
    evs = a.events_received()
    assert StreamReset(sid, ErrorCode.TIMEOUT, "session closed: peer silent for 31.0s") in evs
    assert evs[-1] == SessionClosed(ErrorCode.TIMEOUT, "peer silent for 31.0s", True)


def test_goaway_drains() -> None:
    a, b = pair()
    sid = open_accepted(a, b)
    b.goaway("upgrade")
    pump(a, b)
    assert a.events_received() == [GoAwayReceived(ErrorCode.OK, sid, "upgrade")]
    with pytest.raises(InvalidState):
        a.open_stream("tcp/127.0.0.1:10250", 0.0)
    a.send_data(sid, b"existing streams finish")
    a.send_fin(sid)
    pump(a, b)
    assert [type(e) for e in b.events_received()] == [DataReceived, StreamEnded]
    assert a.closed is None and b.closed is None


def test_open_after_peer_goaway_crossing_is_rejected() -> None:
    a, b = pair()
    b.goaway()
    b_bytes = b.data_to_send()
    sid = a.open_stream("tcp/127.0.0.1:10250", 0.0)  # crosses the GOAWAY on the wire
    b.receive_data(a.data_to_send(), 0.0)
    a.receive_data(b_bytes + b.data_to_send(), 0.0)
    evs = a.events_received()
    assert StreamRejected(sid, ErrorCode.GOING_AWAY, "session is draining") in evs or any(
        isinstance(e, StreamRejected) and e.code == ErrorCode.GOING_AWAY for e in evs
    )


# ---- flow control ---------------------------------------------------------------------


def test_sender_never_exceeds_credit_and_window_grows() -> None:
    a, b = pair(initial_window=256 * KiB, max_window=8 * MiB)
    sid = open_accepted(a, b)
    a.send_data(sid, b"z" * (64 * MiB))
    now = 0.0
    got = 0
    while got < 64 * MiB:
        data = a.data_to_send()
        sent = sum(len(f.payload) for f in fr.parse_all(data) if f.type is FrameType.DATA)
        assert sent <= 8 * MiB
        b.receive_data(data, now)
        info = b.stream_info(sid, now)
        assert info["buffered"] + info["recv_credit"] <= info["recv_window"]
        for e in b.events_received():
            if isinstance(e, DataReceived):
                got += len(e.data)
                b.consumed(sid, len(e.data), now)
        a.receive_data(b.data_to_send(), now)
        now += 0.0001  # fast consumer: the window must grow
    assert b.stream_info(sid, now)["recv_window"] == 8 * MiB


def test_slow_reader_buffer_is_bounded_by_window() -> None:
    a, b = pair(initial_window=256 * KiB)
    sid = open_accepted(a, b)
    a.send_data(sid, b"q" * (10 * MiB))
    pump(a, b)
    assert b.buffered_bytes == 256 * KiB
    assert a.pending_out(sid) == 10 * MiB - 256 * KiB
    assert a.blocked_streams() == 1


def test_session_buffer_bound_across_streams() -> None:
    a, b = pair(initial_window=256 * KiB, max_window=512 * KiB, session_buffer=1 * MiB)
    sids = [open_accepted(a, b) for _ in range(8)]
    for sid in sids:
        a.send_data(sid, b"w" * MiB)
    pump(a, b)
    assert b.buffered_bytes <= 1 * MiB
    assert b.buffered_bytes + b.granted_bytes == 1 * MiB
    # reading one stream frees budget that starved streams then receive
    total = 0
    for _ in range(200):
        for e in b.events_received():
            if isinstance(e, DataReceived):
                b.consumed(e.stream_id, len(e.data), 0.0)
                total += len(e.data)
        pump(a, b)
        assert b.buffered_bytes <= 1 * MiB
        if total == 8 * MiB:
            break
    assert total == 8 * MiB


def test_round_robin_interactive_stream_not_starved() -> None:
    a, b = pair(write_quantum=64 * KiB)
    bulk = open_accepted(a, b)
    chat = open_accepted(a, b)
    a.send_data(bulk, b"B" * (200 * KiB))
    a.send_data(chat, b"hi")
    frames = fr.parse_all(a.data_to_send(limit=100 * KiB))
    order = [f.stream_id for f in frames if f.type is FrameType.DATA]
    assert order[:2] == [bulk, chat]


def test_transition_table_is_data() -> None:
    assert next_state(StreamState.OPEN, Ev.RECV_FIN) is StreamState.HALF_REMOTE
    assert next_state(StreamState.HALF_REMOTE, Ev.RECV_DATA) is None
    assert next_state(StreamState.CLOSED, Ev.SEND_DATA) is None
    assert all(isinstance(v, StreamState) for v in TRANSITIONS.values())


def test_rst_crossing_our_fin_is_not_an_error() -> None:
    """Found by hypothesis: peer FINs, then resets while our FIN is in flight."""
    a, b = pair()
    sid = open_accepted(a, b)
    b.send_data(sid, b"unread")
    b.send_fin(sid)
    pump(a, b)
    a.events_received()  # DATA + FIN arrive; a's user has not read the data yet
    a.send_fin(sid)  # a: closed, but keeps the stream for the unread bytes
    a_fin = a.data_to_send()
    b.reset_stream(sid, ErrorCode.CANCEL, "changed my mind")  # b: half-closed local -> RST
    a.receive_data(b.data_to_send(), 0.0)
    b.receive_data(a_fin, 0.0)  # our FIN reaches b after its RST: ignored
    assert a.closed is None and b.closed is None
    assert a.events_received() == [StreamReset(sid, ErrorCode.CANCEL, "changed my mind")]
    assert a.open_streams == 0 and a.buffered_bytes == 0
