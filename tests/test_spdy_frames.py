"""SPDY/3.1 frame codec: golden bytes built by hand from draft 3, the zlib
dictionary, fragmentation, and malformed input (clear errors, never a crash)."""
from __future__ import annotations

import random
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgectl.agent.streams.spdy_dictionary import SPDY3_DICTIONARY
from edgectl.agent.streams.spdy_frames import (
    DataFrame,
    FrameDecoder,
    FrameEncoder,
    GoAway,
    HeaderBlockError,
    Headers,
    Ping,
    ProtocolError,
    RstStream,
    Setting,
    Settings,
    SpdyError,
    SynReply,
    SynStream,
    UnknownControl,
    UnsupportedVersion,
    WindowUpdate,
    pack_header_block,
)

H = bytes.fromhex


def test_dictionary_is_the_spdy3_one() -> None:
    # Every SPDY/3 header block starts with a zlib header naming this dictionary id.
    assert len(SPDY3_DICTIONARY) == 1423
    assert zlib.adler32(SPDY3_DICTIONARY) == 0xE3C6A7C2
    assert SPDY3_DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert SPDY3_DICTIONARY.endswith(b"charset=iso-8859-1,utf-,*,enq=0.")


@pytest.mark.parametrize(
    ("frame", "wire"),
    [
        (DataFrame(1, b"hi", fin=True), "00000001 01000002 6869"),
        (DataFrame(0x7FFFFFFF, b""), "7fffffff 00000000"),
        (Ping(1), "80030006 00000004 00000001"),
        (RstStream(1, 5), "80030003 00000008 00000001 00000005"),
        (GoAway(3, 0), "80030007 00000008 00000003 00000000"),
        (WindowUpdate(5, 0x10000), "80030009 00000008 00000005 00010000"),
        (WindowUpdate(0, 1), "80030009 00000008 00000000 00000001"),
        (Settings((Setting(7, 0x100000, flags=1),)), "80030004 0000000c 00000001 01000007 00100000"),
        (Settings((), clear=True), "80030004 01000004 00000000"),
    ],
)
def test_golden_frames(frame, wire) -> None:  # type: ignore[no-untyped-def]
    raw = H(wire.replace(" ", ""))
    assert FrameEncoder().encode(frame) == raw
    assert FrameDecoder().feed(raw) == [frame]


def _stored(data: bytes, final: bool = False) -> bytes:
    """A deflate 'stored' block: lets us write a header block by hand, with no
    compressor involved, so the decoder is checked against the format itself."""
    return bytes([1 if final else 0]) + struct.pack("<HH", len(data), len(data) ^ 0xFFFF) + data


def test_decode_hand_built_syn_stream_and_shared_context() -> None:
    block1 = pack_header_block([("streamtype", "error")])
    assert block1 == H("00000001 0000000a") + b"streamtype" + H("00000005") + b"error"
    # zlib header: CMF 0x78, FLG 0xbb (FDICT set), then the dictionary id.
    first = H("78bb e3c6a7c2") + _stored(block1)
    payload = H("00000001 00000000 6000") + first  # stream 1, assoc 0, priority 3, slot 0
    syn = H("80030001") + struct.pack(">I", len(payload)) + payload
    # The second block continues the same deflate stream: no zlib header.
    block2 = pack_header_block([("streamtype", "data"), ("port", "80"), ("requestid", "0")])
    payload2 = H("00000003") + _stored(block2)
    reply_like = H("80030008") + struct.pack(">I", 0x01000000 | len(payload2)) + payload2  # HEADERS, FIN
    frames = FrameDecoder().feed(syn + reply_like)
    assert frames == [
        SynStream(1, (("streamtype", "error"),), priority=3),
        Headers(3, (("streamtype", "data"), ("port", "80"), ("requestid", "0")), fin=True),
    ]


def test_header_block_needs_the_right_dictionary() -> None:
    wrong = zlib.compressobj(6, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, b"not the spdy dictionary")
    block = wrong.compress(pack_header_block([("a", "b")])) + wrong.flush(zlib.Z_SYNC_FLUSH)
    payload = H("00000001") + block
    frame = H("80030002") + struct.pack(">I", len(payload)) + payload
    with pytest.raises(HeaderBlockError, match="does not inflate"):
        FrameDecoder().feed(frame)


def test_encoded_header_blocks_use_dictionary_and_one_context() -> None:
    enc = FrameEncoder()
    headers = (("streamtype", "stdout"), ("content-type", "text/plain"), ("user-agent", "kubectl/v1.27"))
    first = enc.encode(SynStream(1, headers))
    second = enc.encode(SynStream(3, headers))
    block1 = first[8 + 10:]
    assert block1[2:6] == H("e3c6a7c2"), "first block names the SPDY dictionary"
    assert len(second) < len(first), "the shared context makes a repeated block cheaper"
    assert second[18:20] != block1[:2], "only the first block carries a zlib header"
    # Sync flush: every block ends on the empty stored block 00 00 ff ff.
    assert first.endswith(H("0000ffff")) and second.endswith(H("0000ffff"))
    dec = FrameDecoder()
    assert dec.feed(first + second) == [SynStream(1, headers), SynStream(3, headers)]


def test_round_trip_every_type_fed_byte_by_byte() -> None:
    frames = [
        SynStream(1, (("streamtype", "stdin"), ("multi", "a"), ("multi", "b")), priority=7, slot=2),
        SynReply(1, ()),
        SynReply(3, (("x", "y"),), fin=True),
        Headers(1, (("k", "v"),)),
        DataFrame(1, b"\x00" * 70000),
        DataFrame(1, b"", fin=True),
        RstStream(9, 11),
        Settings((Setting(4, 100), Setting(7, 65536))),
        Ping(0xFFFFFFFF),
        GoAway(0, 2),
        WindowUpdate(1, 0x7FFFFFFF),
        UnknownControl(10, 0, b"credential"),
        SynStream(5, (("streamtype", "error"),), fin=True, unidirectional=True),
    ]
    enc = FrameEncoder()
    wire = b"".join(enc.encode(f) for f in frames)
    dec = FrameDecoder()
    out = []
    for i in range(len(wire)):
        out += dec.feed(wire[i:i + 1])
    assert out == frames
    assert dec.buffered == 0


def test_random_fragmentation() -> None:
    enc = FrameEncoder()
    frames = [SynStream(i * 2 + 1, (("streamtype", "data"), ("port", str(i)))) for i in range(50)]
    frames += [DataFrame(i * 2 + 1, bytes([i]) * i, fin=i % 3 == 0) for i in range(1, 50)]
    wire = b"".join(enc.encode(f) for f in frames)
    rng = random.Random(7)
    dec = FrameDecoder()
    out, pos = [], 0
    while pos < len(wire):
        step = rng.randint(1, 300)
        out += dec.feed(wire[pos:pos + step])
        pos += step
    assert out == frames


@pytest.mark.parametrize(
    ("wire", "error", "message"),
    [
        ("80020006 00000004 00000001", UnsupportedVersion, "version 2"),
        ("80030006 00000005 0000000100", ProtocolError, "PING frame of length 5"),
        ("80030003 00000004 00000001", ProtocolError, "RST_STREAM frame of length 4"),
        ("80030003 00000008 00000000 00000001", ProtocolError, "stream 0"),
        ("80030009 00000007 00000001 000001", ProtocolError, "WINDOW_UPDATE frame of length 7"),
        ("80030004 00000008 00000002 00000000", ProtocolError, "SETTINGS frame of length 8 for 2"),
        ("80030001 00000004 00000001", ProtocolError, "SYN_STREAM frame too short"),
        ("80030002 00000002 0000", ProtocolError, "SYN_REPLY frame too short"),
        ("00000000 00000001 00", ProtocolError, "data frame on stream 0"),
        ("00000001 02000001 00", ProtocolError, "unknown flags"),
        ("80030002 00000008 00000001 deadbeef", HeaderBlockError, "does not inflate"),
    ],
)
def test_malformed_frames_raise_clear_errors(wire, error, message) -> None:  # type: ignore[no-untyped-def]
    dec = FrameDecoder()
    with pytest.raises(error, match=message):
        dec.feed(H(wire.replace(" ", "")))
    with pytest.raises(error):  # the decoder stays dead
        dec.feed(b"")


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (H("00000002 00000001") + b"a" + H("00000001") + b"b", "claims 2 pairs"),
        (H("00000001 00000005") + b"ab", "truncated in a string"),
        (H("00000001 00000001") + b"a" + H("00000001") + b"bXX", "stray bytes"),
        (H("00000001 00000000 00000001") + b"b", "empty header name"),
        (H("00000002 00000001") + b"a" + H("00000000") + H("00000001") + b"A" + H("00000000"), "duplicate"),
        (H("0000"), "shorter than its pair count"),
    ],
)
def test_bad_header_blocks(block: bytes, message: str) -> None:
    z = zlib.compressobj(6, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, SPDY3_DICTIONARY)
    payload = H("00000001") + z.compress(block) + z.flush(zlib.Z_SYNC_FLUSH)
    with pytest.raises(HeaderBlockError, match=message):
        FrameDecoder().feed(H("80030002") + struct.pack(">I", len(payload)) + payload)


def test_header_bomb_is_refused() -> None:
    z = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, SPDY3_DICTIONARY)
    block = pack_header_block([("x", "a" * 1_000_000)])
    payload = H("00000001") + z.compress(block) + z.flush(zlib.Z_SYNC_FLUSH)
    assert len(payload) < 5000
    with pytest.raises(HeaderBlockError, match="inflates past"):
        FrameDecoder().feed(H("80030002") + struct.pack(">I", len(payload)) + payload)


def test_encoder_rejects_out_of_range_values() -> None:
    enc = FrameEncoder()
    for bad in (DataFrame(0, b""), WindowUpdate(1, 0), RstStream(1 << 31, 1), SynStream(0, ())):
        with pytest.raises(ValueError):
            enc.encode(bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_only_documented_errors(data: bytes) -> None:
    # Prefix a valid frame so the fuzz input also lands mid-stream.
    dec = FrameDecoder()
    try:
        dec.feed(FrameEncoder().encode(Ping(2)) + data)
    except SpdyError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=8, max_size=120))
def test_fuzz_control_frames(body: bytes) -> None:
    # Random payloads under every known control type, with a plausible length.
    for frame_type in (1, 2, 3, 4, 6, 7, 8, 9):
        wire = struct.pack(">HHI", 0x8003, frame_type, len(body)) + body
        try:
            FrameDecoder().feed(wire)
        except SpdyError:
            pass
