"""The in-place websocket receive path (tunnel/wsread.py) and buffer reuse (bufpool.py).

Checked against websockets itself: whatever the chunking, fast-path messages
arrive whole and unmasked, every other frame reaches websockets byte for byte,
and websockets still enforces the RFC 6455 rules on those frames.
"""
from __future__ import annotations

import os
import random

import pytest
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import CLIENT, OPEN, SERVER, Protocol

from edgectl.tunnel.bufpool import BufferPool, unshared
from edgectl.tunnel.wsread import POOLED_MIN, BinaryMessageReader


def raw_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool) -> bytes:
    return Frame(Opcode(opcode), payload, fin=fin).serialize(mask=mask, extensions=[])


class Rig:
    """A reader in front of a real websockets Protocol, as connection.py wires it."""

    def __init__(self, side: object, max_size: int = 4 << 20) -> None:
        self.ws = Protocol(side, max_size=max_size)  # type: ignore[arg-type]
        self.messages: list[bytes] = []
        self.passed = bytearray()
        self.reader = BinaryMessageReader(
            masked=side is SERVER,
            max_size=max_size,
            on_message=lambda m: self.messages.append(bytes(m)),
            on_passthrough=self._pass,
            fast_ok=lambda: self.ws.state is OPEN and self.ws.current_size is None,
        )

    def _pass(self, data: bytes) -> None:
        self.passed += data
        self.ws.receive_data(data)

    def feed_buffered(self, data: bytes, rnd: random.Random) -> None:
        """Like a buffered transport: fill get_buffer() views with random-sized reads."""
        pos = 0
        while pos < len(data):
            buf = self.reader.get_buffer(-1)
            n = min(len(buf), len(data) - pos, rnd.choice([1, 3, 100, 5000, 70000, 1 << 20]))
            buf[:n] = data[pos : pos + n]
            self.reader.buffer_updated(n)
            pos += n

    def feed_chunks(self, data: bytes, rnd: random.Random) -> None:
        pos = 0
        while pos < len(data):
            n = rnd.randint(1, 200000)
            self.reader.feed(data[pos : pos + n])
            pos += n


@pytest.mark.parametrize("side", [CLIENT, SERVER], ids=["client", "server"])
@pytest.mark.parametrize("mode", ["buffered", "chunks"])
def test_binary_messages_arrive_whole_and_others_go_to_websockets(side: object, mode: str) -> None:
    rnd = random.Random(7)
    mask = side is SERVER  # frames a peer of this side sends
    rig = Rig(side)
    expected: list[bytes] = []
    pings = 0
    wire = bytearray()
    for _ in range(60):
        kind = rnd.random()
        if kind < 0.7:
            size = rnd.choice([0, 1, 125, 126, 65535, 65536, POOLED_MIN + 3, 1 << 20])
            payload = os.urandom(size)
            wire += raw_frame(0x2, payload, mask=mask)
            expected.append(payload)
        else:
            wire += raw_frame(0x9, os.urandom(rnd.randint(0, 125)), mask=mask)  # ping: websockets answers
            pings += 1
    rig.feed_buffered(bytes(wire), rnd) if mode == "buffered" else rig.feed_chunks(bytes(wire), rnd)
    assert rig.messages == expected
    assert rig.ws.parser_exc is None
    pongs = [d for d in rig.ws.data_to_send() if d]
    assert pings and len(pongs) == pings and all(d[0] == 0x8A for d in pongs)  # websockets saw every ping
    assert rig.reader.buffered == 0


def test_pings_and_fragments_reach_websockets_intact() -> None:
    rig = Rig(CLIENT)
    wire = raw_frame(0x9, b"hi", mask=False) + raw_frame(0x2, b"ab", fin=False, mask=False) + raw_frame(0x0, b"cd", mask=False)
    wire += raw_frame(0x2, b"whole", mask=False)
    rig.reader.feed(wire)
    assert rig.messages == [b"whole"]  # the fragmented message went to websockets
    assert bytes(rig.passed) == wire[: -len(raw_frame(0x2, b"whole", mask=False))]
    frames = [e for e in rig.ws.events_received() if isinstance(e, Frame)]
    assert [f.opcode for f in frames] == [Opcode.PING, Opcode.BINARY, Opcode.CONT]
    assert b"".join(rig.ws.data_to_send())[:1] == b"\x8a"  # websockets queued the pong


@pytest.mark.parametrize(
    ("side", "frame", "code"),
    [
        (SERVER, raw_frame(0x2, b"x" * 10, mask=False), 1002),  # a client must mask
        (CLIENT, raw_frame(0x2, b"x" * 10, mask=True), 1002),  # a server must not
        (CLIENT, bytes([0xC2, 1]) + b"x", 1002),  # RSV1 without an extension
        (CLIENT, raw_frame(0x2, b"x" * 2000, mask=False), 1009),  # over max_size
    ],
    ids=["server-unmasked", "client-masked", "rsv1", "too-big"],
)
def test_invalid_frames_still_fail_the_websocket(side: object, frame: bytes, code: int) -> None:
    rig = Rig(side, max_size=1000)
    rig.reader.feed(frame)
    assert rig.messages == []
    assert rig.ws.parser_exc is not None
    assert rig.ws.close_sent is not None and rig.ws.close_sent.code == code


def test_binary_after_close_is_not_delivered() -> None:
    rig = Rig(CLIENT)
    rig.reader.feed(raw_frame(0x8, Close(1000, "bye").serialize(), mask=False) + raw_frame(0x2, b"late", mask=False))
    assert rig.messages == []
    assert rig.ws.state is not OPEN


def test_message_buffers_are_reused_only_when_released() -> None:
    got: list[memoryview] = []
    reader = BinaryMessageReader(masked=False, max_size=4 << 20, on_message=got.append, on_passthrough=lambda b: None, fast_ok=lambda: True)
    big = os.urandom(POOLED_MIN * 2)
    reader.feed(raw_frame(0x2, big, mask=False))
    reader.feed(raw_frame(0x2, big[::-1], mask=False))
    assert bytes(got[0]) == big and bytes(got[1]) == big[::-1]  # second did not overwrite the first
    first = got[0].obj
    assert got[1].obj is not first
    got.clear()  # views released: the next message reuses a buffer
    reader.feed(raw_frame(0x2, b"z" * (POOLED_MIN * 2), mask=False))
    assert got[0].obj is first and bytes(got[0]) == b"z" * (POOLED_MIN * 2)


def test_pool_never_hands_out_a_viewed_buffer() -> None:
    pool = BufferPool(1024, keep=2)
    a = pool.get()
    view = memoryview(a)[10:20]
    assert not unshared(a)
    b = pool.get()
    assert b is not a
    view.release()
    assert unshared(a)
    assert pool.get() is a
    assert len(pool.get(4096)) >= 4096


def test_idle_reader_gives_back_its_message_buffers() -> None:
    got: list[memoryview] = []
    reader = BinaryMessageReader(masked=False, max_size=4 << 20, on_message=got.append, on_passthrough=lambda b: None, fast_ok=lambda: True)
    big = raw_frame(0x2, b"q" * (POOLED_MIN * 2), mask=False)
    reader.feed(big)
    kept = got.pop().obj
    reader.trim_idle()  # a big message came since the last tick: keep the buffers
    reader.feed(big)
    assert got.pop().obj is kept
    reader.trim_idle()
    reader.trim_idle()  # a whole tick without big messages: buffers dropped
    reader.feed(big)
    assert got.pop().obj is not kept
