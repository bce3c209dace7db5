"""SPDY/3.1 frames: the wire codec, sans-I/O.

Layout (all integers big-endian):

- data frame:    ``0|stream-id:31  flags:8 length:24  payload``
- control frame: ``1|version:15 type:16  flags:8 length:24  payload``

Header blocks (SYN_STREAM, SYN_REPLY, HEADERS) are ``u32 count`` followed by
``u32 len, name, u32 len, value`` pairs, deflated with one zlib context per
direction that lives as long as the connection, primed with the SPDY/3
dictionary and ended by a sync flush per block. Because the context is shared,
a broken header block poisons the whole connection: every such failure is a
session error (GOAWAY), never a per-stream one.

Kubernetes' peers (moby/spdystream) ignore CREDENTIAL and speak no flow control
but otherwise follow draft 3; see :mod:`.spdy_session` for how that is handled.
"""
from __future__ import annotations

import enum
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .spdy_dictionary import SPDY3_DICTIONARY

VERSION = 3
MAX_LENGTH = (1 << 24) - 1  # the 24-bit length field
MAX_STREAM_ID = (1 << 31) - 1
MAX_WINDOW = (1 << 31) - 1
DEFAULT_WINDOW = 64 * 1024
# A decompressed header block larger than this is refused: the Kubernetes
# protocols send a handful of short headers, so anything big is an attack.
MAX_HEADER_BLOCK = 256 * 1024

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
FLAG_SETTINGS_CLEAR = 0x01


class FrameType(enum.IntEnum):
    SYN_STREAM = 1
    SYN_REPLY = 2
    RST_STREAM = 3
    SETTINGS = 4
    PING = 6
    GOAWAY = 7
    HEADERS = 8
    WINDOW_UPDATE = 9


class RstStatus(enum.IntEnum):
    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    UNSUPPORTED_VERSION = 4
    CANCEL = 5
    INTERNAL_ERROR = 6
    FLOW_CONTROL_ERROR = 7
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9
    FRAME_TOO_LARGE = 11


class GoAwayStatus(enum.IntEnum):
    OK = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


class SettingId(enum.IntEnum):
    UPLOAD_BANDWIDTH = 1
    DOWNLOAD_BANDWIDTH = 2
    ROUND_TRIP_TIME = 3
    MAX_CONCURRENT_STREAMS = 4
    CURRENT_CWND = 5
    DOWNLOAD_RETRANS_RATE = 6
    INITIAL_WINDOW_SIZE = 7
    CLIENT_CERTIFICATE_VECTOR_SIZE = 8


class SpdyError(Exception):
    """Base of every error this package raises."""


class ProtocolError(SpdyError):
    """The peer broke the framing rules; the session must end with GOAWAY."""

    goaway_status = GoAwayStatus.PROTOCOL_ERROR


class HeaderBlockError(ProtocolError):
    """A header block that does not inflate or does not parse."""


class UnsupportedVersion(ProtocolError):
    """A control frame with a version other than 3."""


# Headers are kept as ordered (name, value) pairs with lowercase names; a name
# with several values appears several times (on the wire they are NUL-joined).
HeaderList = tuple[tuple[str, str], ...]


def header_value(headers: HeaderList, name: str) -> str | None:
    name = name.lower()
    return next((v for k, v in headers if k == name), None)


def make_headers(items: Iterable[tuple[str, str]] | dict[str, str]) -> HeaderList:
    pairs = items.items() if isinstance(items, dict) else items
    return tuple((k.lower(), v) for k, v in pairs)


@dataclass(frozen=True)
class DataFrame:
    stream_id: int
    data: bytes
    fin: bool = False


@dataclass(frozen=True)
class SynStream:
    stream_id: int
    headers: HeaderList
    associated_id: int = 0
    priority: int = 0  # 0 (highest) .. 7
    slot: int = 0
    fin: bool = False
    unidirectional: bool = False


@dataclass(frozen=True)
class SynReply:
    stream_id: int
    headers: HeaderList = ()
    fin: bool = False


@dataclass(frozen=True)
class RstStream:
    stream_id: int
    status: int


@dataclass(frozen=True)
class Setting:
    id: int
    value: int
    flags: int = 0


@dataclass(frozen=True)
class Settings:
    entries: tuple[Setting, ...] = ()
    clear: bool = False


@dataclass(frozen=True)
class Ping:
    ping_id: int


@dataclass(frozen=True)
class GoAway:
    last_good_stream_id: int
    status: int = GoAwayStatus.OK


@dataclass(frozen=True)
class Headers:
    stream_id: int
    headers: HeaderList
    fin: bool = False


@dataclass(frozen=True)
class WindowUpdate:
    stream_id: int  # 0 = the whole session (SPDY/3.1)
    delta: int


@dataclass(frozen=True)
class UnknownControl:
    """A control frame type we do not know (e.g. CREDENTIAL); the spec says ignore it."""

    frame_type: int
    flags: int
    payload: bytes = field(repr=False)


Frame = DataFrame | SynStream | SynReply | RstStream | Settings | Ping | GoAway | Headers | WindowUpdate | UnknownControl


# --- header blocks -------------------------------------------------------

def pack_header_block(headers: Sequence[tuple[str, str]]) -> bytes:
    """Uncompressed header block. Repeated names are merged with NUL, as the
    spec requires (a peer like Go's rejects duplicate names)."""
    merged: dict[str, list[str]] = {}
    for name, value in headers:
        name = name.lower()
        if not name:
            raise ValueError("empty header name")
        merged.setdefault(name, []).append(value)
    out = [struct.pack(">I", len(merged))]
    for name, values in merged.items():
        raw_name = name.encode("utf-8")
        raw_value = "\x00".join(values).encode("utf-8")
        out.append(struct.pack(">I", len(raw_name)) + raw_name + struct.pack(">I", len(raw_value)) + raw_value)
    return b"".join(out)


def unpack_header_block(block: bytes) -> HeaderList:
    """Parse an inflated header block; raise :class:`HeaderBlockError` on any defect."""
    view = memoryview(block)
    if len(view) < 4:
        raise HeaderBlockError("header block shorter than its pair count")
    (count,) = struct.unpack_from(">I", view, 0)
    if count > len(view) // 8:  # every pair needs at least two length words
        raise HeaderBlockError(f"header block claims {count} pairs in {len(view)} bytes")
    pos = 4
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for _ in range(count):
        name, pos = _take_string(view, pos)
        value, pos = _take_string(view, pos)
        if not name:
            raise HeaderBlockError("empty header name")
        key = name.decode("utf-8", "replace").lower()
        if key in seen:
            raise HeaderBlockError(f"duplicate header {key!r}")
        seen.add(key)
        for part in value.decode("utf-8", "replace").split("\x00"):
            pairs.append((key, part))
    if pos != len(view):
        raise HeaderBlockError(f"{len(view) - pos} stray bytes after the header block")
    return tuple(pairs)


def _take_string(view: memoryview, pos: int) -> tuple[bytes, int]:
    if pos + 4 > len(view):
        raise HeaderBlockError("header block truncated in a length field")
    (length,) = struct.unpack_from(">I", view, pos)
    pos += 4
    if pos + length > len(view):
        raise HeaderBlockError("header block truncated in a string")
    return bytes(view[pos:pos + length]), pos + length


class HeaderCompressor:
    """The sending direction's deflate context (one per connection)."""

    def __init__(self, *, level: int = 6) -> None:
        self._z = zlib.compressobj(level, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, SPDY3_DICTIONARY)

    def compress(self, headers: Sequence[tuple[str, str]]) -> bytes:
        raw = pack_header_block(headers)
        return self._z.compress(raw) + self._z.flush(zlib.Z_SYNC_FLUSH)


class HeaderDecompressor:
    """The receiving direction's inflate context (one per connection)."""

    def __init__(self, *, max_size: int = MAX_HEADER_BLOCK) -> None:
        self._z = zlib.decompressobj(15, zdict=SPDY3_DICTIONARY)
        self._max = max_size

    def decompress(self, block: bytes) -> HeaderList:
        try:
            raw = self._z.decompress(block, self._max + 1)
        except zlib.error as exc:
            raise HeaderBlockError(f"header block does not inflate: {exc}") from None
        if len(raw) > self._max or self._z.unconsumed_tail:
            raise HeaderBlockError(f"header block inflates past {self._max} bytes")
        if self._z.eof:
            raise HeaderBlockError("header compression stream was ended by the peer")
        return unpack_header_block(raw)


# --- encoding ------------------------------------------------------------

def _control(frame_type: int, flags: int, payload: bytes) -> bytes:
    if len(payload) > MAX_LENGTH:
        raise ValueError("control frame payload too large")
    return struct.pack(">HHI", 0x8000 | VERSION, frame_type, (flags << 24) | len(payload)) + payload


def _check_id(stream_id: int, *, allow_zero: bool = False) -> None:
    if not (0 if allow_zero else 1) <= stream_id <= MAX_STREAM_ID:
        raise ValueError(f"stream id {stream_id} out of range")


class FrameEncoder:
    """Turn frames into bytes; owns the outbound header compression context,
    so frames must be encoded in the order they are sent."""

    def __init__(self) -> None:
        self._compressor = HeaderCompressor()

    def encode(self, frame: Frame) -> bytes:
        if isinstance(frame, DataFrame):
            _check_id(frame.stream_id)
            if len(frame.data) > MAX_LENGTH:
                raise ValueError("data frame payload too large")
            flags = FLAG_FIN if frame.fin else 0
            return struct.pack(">II", frame.stream_id, (flags << 24) | len(frame.data)) + frame.data
        if isinstance(frame, SynStream):
            _check_id(frame.stream_id)
            flags = (FLAG_FIN if frame.fin else 0) | (FLAG_UNIDIRECTIONAL if frame.unidirectional else 0)
            head = struct.pack(">IIBB", frame.stream_id, frame.associated_id, (frame.priority & 7) << 5, frame.slot)
            return _control(FrameType.SYN_STREAM, flags, head + self._compressor.compress(frame.headers))
        if isinstance(frame, SynReply):
            _check_id(frame.stream_id)
            payload = struct.pack(">I", frame.stream_id) + self._compressor.compress(frame.headers)
            return _control(FrameType.SYN_REPLY, FLAG_FIN if frame.fin else 0, payload)
        if isinstance(frame, Headers):
            _check_id(frame.stream_id)
            payload = struct.pack(">I", frame.stream_id) + self._compressor.compress(frame.headers)
            return _control(FrameType.HEADERS, FLAG_FIN if frame.fin else 0, payload)
        if isinstance(frame, RstStream):
            _check_id(frame.stream_id)
            return _control(FrameType.RST_STREAM, 0, struct.pack(">II", frame.stream_id, frame.status))
        if isinstance(frame, Settings):
            body = b"".join(struct.pack(">II", (s.flags << 24) | s.id, s.value) for s in frame.entries)
            return _control(FrameType.SETTINGS, FLAG_SETTINGS_CLEAR if frame.clear else 0,
                            struct.pack(">I", len(frame.entries)) + body)
        if isinstance(frame, Ping):
            return _control(FrameType.PING, 0, struct.pack(">I", frame.ping_id))
        if isinstance(frame, GoAway):
            _check_id(frame.last_good_stream_id, allow_zero=True)
            return _control(FrameType.GOAWAY, 0, struct.pack(">II", frame.last_good_stream_id, frame.status))
        if isinstance(frame, WindowUpdate):
            _check_id(frame.stream_id, allow_zero=True)
            if not 1 <= frame.delta <= MAX_WINDOW:
                raise ValueError(f"window delta {frame.delta} out of range")
            return _control(FrameType.WINDOW_UPDATE, 0, struct.pack(">II", frame.stream_id, frame.delta))
        if isinstance(frame, UnknownControl):
            return _control(frame.frame_type, frame.flags, frame.payload)
        raise TypeError(f"not a SPDY frame: {frame!r}")


# --- decoding ------------------------------------------------------------

_FIXED_LENGTH = {FrameType.RST_STREAM: 8, FrameType.GOAWAY: 8, FrameType.WINDOW_UPDATE: 8, FrameType.PING: 4}


class FrameDecoder:
    """Bytes in, frames out. Feed any split of the stream; :meth:`feed` returns
    the frames completed so far and raises :class:`ProtocolError` (or a
    subclass) on the first malformed one, after which the decoder is dead."""

    def __init__(self, *, max_header_block: int = MAX_HEADER_BLOCK) -> None:
        self._buf = bytearray()
        self._decompressor = HeaderDecompressor(max_size=max_header_block)
        self._failed: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        if self._failed is not None:
            raise self._failed
        self._buf += data
        frames: list[Frame] = []
        try:
            while len(self._buf) >= 8:
                word, flags_len = struct.unpack_from(">II", self._buf, 0)
                length = flags_len & 0xFFFFFF
                if len(self._buf) < 8 + length:
                    break
                flags = flags_len >> 24
                payload = bytes(self._buf[8:8 + length])
                del self._buf[:8 + length]
                if word & 0x80000000:
                    frames.append(self._control((word >> 16) & 0x7FFF, word & 0xFFFF, flags, payload))
                else:
                    stream_id = word & 0x7FFFFFFF
                    if stream_id == 0:
                        raise ProtocolError("data frame on stream 0")
                    if flags & ~FLAG_FIN:
                        raise ProtocolError(f"data frame with unknown flags {flags:#x}")
                    frames.append(DataFrame(stream_id, payload, bool(flags & FLAG_FIN)))
        except ProtocolError as exc:
            self._failed = exc
            raise
        return frames

    def _control(self, version: int, frame_type: int, flags: int, payload: bytes) -> Frame:
        if version != VERSION:
            raise UnsupportedVersion(f"control frame version {version}, only SPDY/3 is spoken")
        try:
            kind = FrameType(frame_type)
        except ValueError:
            return UnknownControl(frame_type, flags, payload)
        want = _FIXED_LENGTH.get(kind)
        if want is not None and len(payload) != want:
            raise ProtocolError(f"{kind.name} frame of length {len(payload)}, expected {want}")
        if kind is FrameType.SYN_STREAM:
            if len(payload) < 10:
                raise ProtocolError("SYN_STREAM frame too short")
            stream_id, assoc, pri, slot = struct.unpack_from(">IIBB", payload, 0)
            stream_id &= MAX_STREAM_ID
            if stream_id == 0:
                raise ProtocolError("SYN_STREAM for stream 0")
            headers = self._decompressor.decompress(payload[10:])
            return SynStream(stream_id, headers, assoc & MAX_STREAM_ID, pri >> 5, slot,
                             bool(flags & FLAG_FIN), bool(flags & FLAG_UNIDIRECTIONAL))
        if kind in (FrameType.SYN_REPLY, FrameType.HEADERS):
            if len(payload) < 4:
                raise ProtocolError(f"{kind.name} frame too short")
            stream_id = struct.unpack_from(">I", payload, 0)[0] & MAX_STREAM_ID
            headers = self._decompressor.decompress(payload[4:])
            if stream_id == 0:
                raise ProtocolError(f"{kind.name} for stream 0")
            cls = SynReply if kind is FrameType.SYN_REPLY else Headers
            return cls(stream_id, headers, bool(flags & FLAG_FIN))
        if kind is FrameType.RST_STREAM:
            stream_id, status = struct.unpack(">II", payload)
            stream_id &= MAX_STREAM_ID
            if stream_id == 0:
                raise ProtocolError("RST_STREAM for stream 0")
            return RstStream(stream_id, status)
        if kind is FrameType.SETTINGS:
            if len(payload) < 4:
                raise ProtocolError("SETTINGS frame too short")
            (count,) = struct.unpack_from(">I", payload, 0)
            if len(payload) != 4 + 8 * count:
                raise ProtocolError(f"SETTINGS frame of length {len(payload)} for {count} entries")
            entries = []
            for i in range(count):
                id_word, value = struct.unpack_from(">II", payload, 4 + 8 * i)
                entries.append(Setting(id_word & 0xFFFFFF, value, id_word >> 24))
            return Settings(tuple(entries), bool(flags & FLAG_SETTINGS_CLEAR))
        if kind is FrameType.PING:
            return Ping(struct.unpack(">I", payload)[0])
        if kind is FrameType.GOAWAY:
            last, status = struct.unpack(">II", payload)
            return GoAway(last & MAX_STREAM_ID, status)
        # WINDOW_UPDATE
        stream_id, delta = struct.unpack(">II", payload)
        return WindowUpdate(stream_id & MAX_STREAM_ID, delta & MAX_WINDOW)
