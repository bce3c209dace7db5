"""SPDY/3.1 session core: streams, replies, flow control, pings, errors. No I/O."""
from __future__ import annotations

from edgectl.agent.streams.spdy_frames import (
    DataFrame,
    FrameDecoder,
    FrameEncoder,
    GoAway,
    Ping,
    RstStream,
    Setting,
    Settings,
    SynReply,
    SynStream,
    WindowUpdate,
)
from edgectl.agent.streams.spdy_session import (
    ConnectionFailed,
    DataReceived,
    GoAwayReceived,
    PingAcked,
    Role,
    SendWindowOpened,
    Session,
    StreamEnded,
    StreamOpened,
    StreamReplied,
    StreamReset,
)


def pump(a: Session, b: Session) -> tuple[list, list]:  # type: ignore[type-arg]
    """Move bytes both ways until quiet; return (events at a, events at b)."""
    ea, eb = [], []
    while True:
        x, y = a.data_to_send(), b.data_to_send()
        if not x and not y:
            return ea + a.events_received(), eb + b.events_received()
        if x:
            b.receive_data(x)
        if y:
            a.receive_data(y)
        ea += a.events_received()
        eb += b.events_received()


def sent_frames(s: Session, decoder: FrameDecoder | None = None) -> list:  # type: ignore[type-arg]
    return (decoder or FrameDecoder()).feed(s.data_to_send())


def test_open_reply_data_fin_both_ways() -> None:
    client, server = Session(Role.CLIENT), Session(Role.SERVER)
    sid = client.open_stream((("streamtype", "stdout"),))
    assert sid == 1
    ec, es = pump(client, server)
    assert es == [StreamOpened(1, (("streamtype", "stdout"),), False)]
    server.send_data(1, b"early")  # held until the reply goes out
    assert server.data_to_send() == b""
    server.reply(1)
    server.send_data(1, b"!", fin=True)
    client.send_data(1, b"up", fin=True)
    ec, es = pump(client, server)
    assert ec == [StreamReplied(1, (), False), DataReceived(1, b"early"), DataReceived(1, b"!"), StreamEnded(1)]
    assert es == [DataReceived(1, b"up"), StreamEnded(1)]
    assert not client.is_open(1) and not server.is_open(1)
    assert client.open_stream(()) == 3


def test_strict_flow_control_holds_data_until_window_update() -> None:
    client, server = Session(Role.CLIENT), Session(Role.SERVER)
    client.open_stream(())
    pump(client, server)
    server.reply(1)
    server.send_data(1, b"x" * 100_000)
    ec, _ = pump(client, server)
    got = sum(len(e.data) for e in ec if isinstance(e, DataReceived))
    assert got == 65536 and server.buffered(1) == 100_000 - 65536
    client.consumed(1, 65536)  # the application read it: window is granted again
    ec, es = pump(client, server)
    assert sum(len(e.data) for e in ec if isinstance(e, DataReceived)) == 100_000 - 65536
    assert SendWindowOpened(1) in es and SendWindowOpened(0) in es
    assert server.buffered(1) == 0


def test_window_update_frames_are_batched_to_half_a_window() -> None:
    client, server = Session(Role.CLIENT), Session(Role.SERVER)
    client.open_stream(())
    pump(client, server)
    server.reply(1)
    server.data_to_send()
    client.consumed(1, 1000)
    assert client.data_to_send() == b""
    client.consumed(1, 31768)
    assert FrameDecoder().feed(client.data_to_send()) == [WindowUpdate(0, 32768), WindowUpdate(1, 32768)]


def test_lenient_mode_sends_past_window_like_spdystream() -> None:
    # moby/spdystream never sends WINDOW_UPDATE: a strict sender would stall at 64 KiB.
    server = Session(Role.SERVER, strict_flow_control=False)
    peer = FrameEncoder()
    server.receive_data(peer.encode(SynStream(1, (("streamtype", "stdout"),))))
    server.reply(1)
    server.send_data(1, b"y" * 200_000, fin=True)
    frames = FrameDecoder().feed(server.data_to_send())
    assert sum(len(f.data) for f in frames if isinstance(f, DataFrame)) == 200_000
    assert frames[-1].fin
    # ...and an overrunning peer is tolerated too.
    server.receive_data(peer.encode(SynStream(3, ())) + peer.encode(DataFrame(3, b"z" * 100_000)))
    events = server.events_received()
    assert any(isinstance(e, DataReceived) and len(e.data) == 100_000 for e in events)
    assert not any(isinstance(e, (StreamReset, ConnectionFailed)) for e in events)


def test_strict_mode_resets_a_peer_that_overruns_the_stream_window() -> None:
    server = Session(Role.SERVER, initial_window=1000)  # announced with SETTINGS
    assert FrameDecoder().feed(server.data_to_send()) == [Settings((Setting(7, 1000),))]
    peer = FrameEncoder()
    server.receive_data(peer.encode(SynStream(1, ())) + peer.encode(DataFrame(1, b"z" * 1001)))
    events = server.events_received()
    assert StreamReset(1, 7, by_peer=False) in events
    assert RstStream(1, 7) in FrameDecoder().feed(server.data_to_send())


def test_settings_initial_window_changes_open_streams() -> None:
    client, server = Session(Role.CLIENT), Session(Role.SERVER)
    client.open_stream(())
    pump(client, server)
    server.reply(1)
    server.send_data(1, b"a" * 70_000)
    pump(client, server)
    assert server.buffered(1) == 70_000 - 65536
    enc = FrameEncoder()
    server.receive_data(enc.encode(Settings((Setting(7, 80_000),))))
    assert server.buffered(1) == 70_000 - 65536, "the session window is still closed"
    server.receive_data(enc.encode(WindowUpdate(0, 10_000)))
    assert server.buffered(1) == 0


def test_ping_echo_and_ack() -> None:
    client, server = Session(Role.CLIENT), Session(Role.SERVER)
    pid = client.ping()
    assert pid == 1
    ec, es = pump(client, server)
    assert ec == [PingAcked(1)] and es == []
    assert server.ping() == 2
    ec, es = pump(client, server)
    assert es == [PingAcked(2)]


def test_goaway_and_refusing_streams_after_it() -> None:
    client, server = Session(Role.CLIENT), Session(Role.SERVER)
    client.open_stream(())
    pump(client, server)
    server.go_away()
    ec, _ = pump(client, server)
    assert ec == [GoAwayReceived(1, 0)]
    assert client.goaway_received
    try:
        client.open_stream(())
    except Exception as exc:  # InvalidState: a local misuse, not peer input
        assert "going away" in str(exc)
    else:
        raise AssertionError("open_stream after GOAWAY must fail")


def test_reused_stream_id_is_a_session_error() -> None:
    server = Session(Role.SERVER)
    peer = FrameEncoder()
    server.receive_data(peer.encode(SynStream(3, ())) + peer.encode(SynStream(1, ())))
    assert isinstance(server.events_received()[-1], ConnectionFailed)


def test_stream_refused_after_goaway_sent() -> None:
    server = Session(Role.SERVER)
    peer = FrameEncoder()
    server.go_away()
    server.data_to_send()
    server.receive_data(peer.encode(SynStream(1, ())))
    assert server.events_received() == []
    assert FrameDecoder().feed(server.data_to_send()) == [RstStream(1, 3)]


def test_protocol_violations_become_goaway_not_exceptions() -> None:
    for bad in (
        FrameEncoder().encode(SynStream(2, ())),  # an even (server-parity) id opened by the client
        b"\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01",  # version 2
        b"\x80\x03\x00\x02\x00\x00\x00\x08\x00\x00\x00\x01\xde\xad\xbe\xef",  # garbage header block
    ):
        server = Session(Role.SERVER)
        server.receive_data(bad)
        events = server.events_received()
        assert isinstance(events[-1], ConnectionFailed), events
        frames = FrameDecoder().feed(server.data_to_send())
        assert isinstance(frames[-1], GoAway) and frames[-1].status == 1
        server.receive_data(b"more garbage")  # discarded, no exception
        assert server.events_received() == []


def test_stream_level_errors_are_rst_not_goaway() -> None:
    server = Session(Role.SERVER)
    peer = FrameEncoder()
    server.receive_data(peer.encode(DataFrame(7, b"x")))  # never opened
    server.receive_data(peer.encode(SynStream(1, ())) + peer.encode(SynStream(1, ())))  # duplicate id
    server.receive_data(peer.encode(SynReply(1, ())))  # a reply on a peer-opened stream
    frames = FrameDecoder().feed(server.data_to_send())
    assert frames == [RstStream(7, 2), RstStream(1, 8), RstStream(1, 2)]
    assert server.failed is None


def test_peer_reset_drops_queued_data() -> None:
    client, server = Session(Role.CLIENT), Session(Role.SERVER)
    client.open_stream(())
    pump(client, server)
    server.reply(1)
    server.send_data(1, b"q" * 100_000)
    pump(client, server)
    client.reset_stream(1)
    _, es = pump(client, server)
    assert StreamReset(1, 5, by_peer=True) in es
    assert server.buffered(1) == 0
    assert server.send_data(1, b"late") is False


def test_ping_from_peer_uses_its_parity() -> None:
    server = Session(Role.SERVER)
    server.receive_data(FrameEncoder().encode(Ping(5)))
    assert FrameDecoder().feed(server.data_to_send()) == [Ping(5)]


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8), st.booleans())
def test_fuzz_session_never_raises(chunks: list[bytes], strict: bool) -> None:
    # A valid opening (SYN_STREAM + data) followed by arbitrary bytes, in arbitrary pieces.
    enc = FrameEncoder()
    server = Session(Role.SERVER, strict_flow_control=strict)
    server.receive_data(enc.encode(SynStream(1, (("streamtype", "stdin"),))) + enc.encode(DataFrame(1, b"x")))
    for chunk in chunks:
        server.receive_data(chunk)
        server.events_received()
        server.data_to_send()
    server.send_data(1, b"after")  # local calls stay safe whatever the peer did
    server.receive_eof()
