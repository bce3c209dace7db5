"""Wire format of the tunnel: frame types, encoders and an incremental parser.

Every frame is a 10-byte header followed by ``length`` payload bytes::

    0       1       2               6               10
    +-------+-------+---------------+---------------+--------------
    | type  | flags |  stream id    |    length     | payload ...
    +-------+-------+---------------+---------------+--------------
      u8      u8      u32 big-endian  u32 big-endian

Frames are a byte stream: one websocket message may carry many frames and a
frame may in principle span messages (our writer never splits one). The full
layout of each payload is in docs/tunnel-protocol.md; the encoders below are
the reference.

The parser is pure (no I/O, no clock) and raises only :class:`ProtocolError`
and its subclasses.
"""
from __future__ import annotations

import enum
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import FlowControlError, FrameTooLarge, ProtocolError

PROTOCOL_VERSION = 1
HEADER = struct.Struct("!BBII")
HEADER_SIZE = HEADER.size  # 10
MAX_FRAME_LIMIT = 16 * 1024 * 1024  # no peer may advertise more than this
DEFAULT_MAX_FRAME = 1024 * 1024
MIN_MAX_FRAME = 16 * 1024
MAX_TARGET = 512  # bytes of "proto/host:port"
MAX_TEXT = 1024  # reasons and messages are cut to this many bytes
MAX_WINDOW = 2**31 - 1

_HELLO = struct.Struct("!HIII")  # version, capabilities, max_frame, session_window
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")
_CODE_U32 = struct.Struct("!HI")
_U16 = struct.Struct("!H")


class FrameType(enum.IntEnum):
    HELLO = 0
    OPEN = 1
    OPEN_ACK = 2
    DATA = 3
    WINDOW_UPDATE = 4
    FIN = 5
    RST = 6
    PING = 7
    PONG = 8
    GOAWAY = 9


SESSION_FRAMES = frozenset({FrameType.HELLO, FrameType.PING, FrameType.PONG, FrameType.GOAWAY})


class ErrorCode(enum.IntEnum):
    """Codes of OPEN_ACK, RST and GOAWAY (one shared space)."""

    OK = 0  # also GOAWAY "drain, no error"
    PROTOCOL = 1
    FRAME_TOO_LARGE = 2
    FLOW_CONTROL = 3
    VERSION = 4
    REFUSED = 5  # OPEN_ACK: the agent's allow-list refused the target
    CONNECT_FAILED = 6  # OPEN_ACK: the agent could not connect to the target
    CANCEL = 7  # RST: the local user gave up on the stream
    TIMEOUT = 8  # GOAWAY/RST: the peer was silent too long
    INTERNAL = 9
    GOING_AWAY = 10  # OPEN_ACK: the session is draining, no new streams
    BAD_TARGET = 11  # OPEN_ACK: target string is not proto/host:port
    REPLACED = 12  # GOAWAY: a newer session of the same node took over


class Capability(enum.IntFlag):
    NONE = 0
    # Reserved bits; v1 peers send and ignore them, they exist so a later
    # version can negotiate features without bumping the version.
    PRIORITY = 1


@dataclass(frozen=True, slots=True)
class Frame:
    type: FrameType
    flags: int
    stream_id: int
    payload: memoryview | bytes


@dataclass(frozen=True, slots=True)
class Hello:
    version: int
    capabilities: int
    max_frame: int
    session_window: int
    identity: str


def _text(raw: bytes | memoryview, what: str) -> str:
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(f"{what} is not valid UTF-8") from None


def _cut(text: str) -> bytes:
    return text.encode("utf-8")[:MAX_TEXT].decode("utf-8", "ignore").encode("utf-8")


# ---- encoders ---------------------------------------------------------------


def header(ftype: int, stream_id: int, length: int, flags: int = 0) -> bytes:
    return HEADER.pack(ftype, flags, stream_id, length)


def encode(ftype: FrameType, stream_id: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(ftype, 0, stream_id, len(payload)) + payload


def encode_hello(*, version: int, capabilities: int, max_frame: int, session_window: int, identity: str) -> bytes:
    ident = identity.encode("utf-8")[:255]
    return encode(FrameType.HELLO, 0, _HELLO.pack(version, capabilities, max_frame, session_window) + bytes([len(ident)]) + ident)


def encode_open(stream_id: int, target: str, window: int) -> bytes:
    return encode(FrameType.OPEN, stream_id, _U32.pack(window) + target.encode("utf-8"))


def encode_open_ack(stream_id: int, code: int, window: int, message: str = "") -> bytes:
    return encode(FrameType.OPEN_ACK, stream_id, _CODE_U32.pack(code, window) + _cut(message))


def encode_window_update(stream_id: int, increment: int) -> bytes:
    return encode(FrameType.WINDOW_UPDATE, stream_id, _U32.pack(increment))


def encode_fin(stream_id: int) -> bytes:
    return encode(FrameType.FIN, stream_id)


def encode_rst(stream_id: int, code: int, reason: str = "") -> bytes:
    return encode(FrameType.RST, stream_id, _U16.pack(code) + _cut(reason))


def encode_ping(stamp: int) -> bytes:
    return encode(FrameType.PING, 0, _U64.pack(stamp))


def encode_pong(stamp: int) -> bytes:
    return encode(FrameType.PONG, 0, _U64.pack(stamp))


def encode_goaway(code: int, last_stream_id: int, message: str = "") -> bytes:
    return encode(FrameType.GOAWAY, 0, _CODE_U32.pack(code, last_stream_id) + _cut(message))


# ---- payload decoders (each raises ProtocolError on a malformed payload) ----


def decode_hello(payload: bytes | memoryview) -> Hello:
    if len(payload) < 2:
        raise ProtocolError("HELLO payload too short")
    (version,) = _U16.unpack_from(payload, 0)
    if version != PROTOCOL_VERSION:
        # Only the version field is guaranteed across versions; the rest may differ.
        return Hello(version, 0, 0, 0, "")
    if len(payload) < _HELLO.size + 1:
        raise ProtocolError("HELLO payload too short")
    version, caps, max_frame, session_window = _HELLO.unpack_from(payload, 0)
    n = payload[_HELLO.size]
    if len(payload) != _HELLO.size + 1 + n:
        raise ProtocolError("HELLO identity length does not match the payload")
    if not MIN_MAX_FRAME <= max_frame <= MAX_FRAME_LIMIT:
        raise ProtocolError(f"HELLO max_frame {max_frame} outside [{MIN_MAX_FRAME}, {MAX_FRAME_LIMIT}]")
    if session_window > MAX_WINDOW:
        raise FlowControlError(f"HELLO session window {session_window} exceeds 2^31-1")
    return Hello(version, caps, max_frame, session_window, _text(payload[_HELLO.size + 1 :], "HELLO identity"))


def decode_open(payload: bytes | memoryview) -> tuple[int, str]:
    if len(payload) < 5:
        raise ProtocolError("OPEN payload too short")
    if len(payload) > 4 + MAX_TARGET:
        raise ProtocolError("OPEN target too long")
    (window,) = _U32.unpack_from(payload, 0)
    if window > MAX_WINDOW:
        raise FlowControlError(f"window {window} exceeds 2^31-1")
    return window, _text(payload[4:], "OPEN target")


def decode_open_ack(payload: bytes | memoryview) -> tuple[int, int, str]:
    if len(payload) < _CODE_U32.size or len(payload) > _CODE_U32.size + MAX_TEXT:
        raise ProtocolError("OPEN_ACK payload has a bad length")
    code, window = _CODE_U32.unpack_from(payload, 0)
    if window > MAX_WINDOW:
        raise FlowControlError(f"window {window} exceeds 2^31-1")
    return code, window, _text(payload[_CODE_U32.size :], "OPEN_ACK message")


def decode_window_update(payload: bytes | memoryview) -> int:
    if len(payload) != 4:
        raise ProtocolError("WINDOW_UPDATE payload must be 4 bytes")
    (inc,) = _U32.unpack_from(payload, 0)
    if inc == 0:
        raise ProtocolError("WINDOW_UPDATE with a zero increment")
    return int(inc)


def decode_rst(payload: bytes | memoryview) -> tuple[int, str]:
    if len(payload) < 2 or len(payload) > 2 + MAX_TEXT:
        raise ProtocolError("RST payload has a bad length")
    (code,) = _U16.unpack_from(payload, 0)
    return code, _text(payload[2:], "RST reason")


def decode_stamp(payload: bytes | memoryview) -> int:
    if len(payload) != 8:
        raise ProtocolError("PING/PONG payload must be 8 bytes")
    return int(_U64.unpack_from(payload, 0)[0])


def decode_goaway(payload: bytes | memoryview) -> tuple[int, int, str]:
    if len(payload) < _CODE_U32.size or len(payload) > _CODE_U32.size + MAX_TEXT:
        raise ProtocolError("GOAWAY payload has a bad length")
    code, last = _CODE_U32.unpack_from(payload, 0)
    return code, last, _text(payload[_CODE_U32.size :], "GOAWAY message")


# ---- parser -----------------------------------------------------------------


class FrameParser:
    """Incremental parser: ``feed(bytes)`` then iterate ``frames()``.

    Payloads are zero-copy memoryviews of the fed object when a frame lies
    wholly inside one fed chunk (the common case: one websocket message holds
    whole frames), else a bytes copy assembled from the carry-over buffer.
    The caller must not mutate fed objects afterwards.
    """

    def __init__(self, *, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._carry = bytearray()
        self._chunk: memoryview = memoryview(b"")
        self._pos = 0

    @property
    def buffered(self) -> int:
        return len(self._carry) + len(self._chunk) - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._pos < len(self._chunk):
            # Unparsed tail of the previous chunk: move it to the carry buffer.
            self._carry += self._chunk[self._pos :]
        self._chunk = memoryview(b"")
        self._pos = 0
        if self._carry:
            self._carry += data
        else:
            self._chunk = data if isinstance(data, memoryview) else memoryview(data)

    def frames(self) -> Iterator[Frame]:
        """Yield every complete frame; raise ProtocolError on a bad header."""
        if self._carry:
            yield from self._from_carry()
            return
        view, pos, end = self._chunk, self._pos, len(self._chunk)
        while end - pos >= HEADER_SIZE:
            ftype, flags, sid, length = HEADER.unpack_from(view, pos)
            self._check(ftype, length)
            if end - pos - HEADER_SIZE < length:
                break
            start = pos + HEADER_SIZE
            pos = start + length
            self._pos = pos
            yield Frame(FrameType(ftype), flags, sid, view[start:pos])
        self._pos = pos
        if pos == end and end:  # all parsed: let go of the fed buffer (it may be reused)
            self._chunk = memoryview(b"")
            self._pos = 0

    def _from_carry(self) -> Iterator[Frame]:
        buf = self._carry
        while len(buf) >= HEADER_SIZE:
            ftype, flags, sid, length = HEADER.unpack_from(buf, 0)
            self._check(ftype, length)
            if len(buf) - HEADER_SIZE < length:
                return
            payload = bytes(buf[HEADER_SIZE : HEADER_SIZE + length])
            del buf[: HEADER_SIZE + length]
            yield Frame(FrameType(ftype), flags, sid, payload)

    def _check(self, ftype: int, length: int) -> None:
        if ftype > FrameType.GOAWAY:
            raise ProtocolError(f"unknown frame type {ftype}")
        if length > self.max_frame:
            raise FrameTooLarge(f"{FrameType(ftype).name} frame of {length} bytes exceeds the {self.max_frame}-byte cap")


def parse_all(data: bytes, *, max_frame: int = DEFAULT_MAX_FRAME) -> list[Frame]:
    """Parse a complete buffer (tests and tools); trailing partial frame is an error."""
    parser = FrameParser(max_frame=max_frame)
    parser.feed(data)
    out = list(parser.frames())
    if parser.buffered:
        raise ProtocolError(f"truncated frame: {parser.buffered} bytes left over")
    return out
