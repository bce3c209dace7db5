"""Receive side of the websocket data path: whole binary messages, read in place.

Why this exists (measured, see docs/tunnel-protocol.md "What limits it"):
websockets' parser copies every message twice (``feed_data`` into its buffer,
then ``read_exact`` out of it), and asyncio's SSL transport joins the 16 KiB
records it decrypted into one more ``bytes``. That was ~20 % of the agent's
CPU at 1 GiB. This reader is a ``get_buffer``/``buffer_updated`` pair: for an
unfragmented binary message it allocates the message's buffer once, from the
header's length, and lets the transport (TLS included) decrypt straight into it.

Only the common frame takes the fast path: FIN set, no RSV bits, opcode BINARY,
masked exactly as RFC 6455 requires for the receiving side, within the size cap,
and only while ``fast_ok()`` says the websocket is open with no fragmented
message in progress. Every other frame (ping, pong, close, text, fragments,
bad masking, oversized) is passed through byte for byte to websockets'
Protocol, which validates it and fails the connection exactly as before, so
the websocket rules are still enforced in one place. Frames are passed whole
(or not at all), so websockets' parser always stays on a frame boundary.
"""
from __future__ import annotations

from collections.abc import Callable

from .bufpool import BufferPool

try:  # websockets' C masking (a server must unmask client frames)
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - pure-Python build of websockets
    from websockets.utils import apply_mask

# Header state reads into a scratch buffer: small frames are handled entirely
# from it (one copy of a few bytes), big ones copy at most this much before the
# rest is read straight into the message buffer.
SCRATCH_SIZE = 4 * 1024  # per connection: 1,000 agent sessions must stay cheap
POOLED_MIN = 64 * 1024  # smaller messages get a fresh buffer (cheap, no page faults)
_FAST_FIRST_BYTE = 0x82  # FIN=1, RSV1-3=0, opcode=BINARY


class BinaryMessageReader:
    """Incremental websocket frame splitter; a buffered-protocol target.

    ``masked`` is True on the server (client frames must be masked) and False
    on the client. ``on_message`` gets each fast-path payload (unmasked, never
    mutated afterwards); ``on_passthrough`` gets raw bytes of all other frames.
    """

    def __init__(
        self,
        *,
        masked: bool,
        max_size: int,
        on_message: Callable[[bytes | memoryview], None],
        on_passthrough: Callable[[bytes], None],
        fast_ok: Callable[[], bool],
    ) -> None:
        self.masked = masked
        self.max_size = max_size
        self.on_message = on_message
        self.on_passthrough = on_passthrough
        self.fast_ok = fast_ok
        self._scratch = memoryview(bytearray(SCRATCH_SIZE))
        self._head = bytearray()
        self._pool = BufferPool(POOLED_MIN, keep=3)
        self._pool_used = False
        self._msg: bytearray | None = None
        self._msg_view = memoryview(b"")
        self._pos = 0
        self._key = b""
        self._skip = 0  # bytes of a passed-through frame still to come
        self._handed_msg = False

    # ---- buffered-protocol side --------------------------------------------

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        if self._msg is not None:
            self._handed_msg = True
            return self._msg_view[self._pos :]
        self._handed_msg = False
        return self._scratch

    def buffer_updated(self, nbytes: int) -> None:
        if self._handed_msg:
            self._handed_msg = False
            self._pos += nbytes
            if self._pos == len(self._msg_view):
                self._finish_message()
        else:
            self.feed(self._scratch[:nbytes])

    # ---- any bytes (read-ahead, non-buffered transports) ---------------------

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        pos, end = 0, len(view)
        while pos < end:
            if self._msg is not None:
                k = min(end - pos, len(self._msg_view) - self._pos)
                self._msg_view[self._pos : self._pos + k] = view[pos : pos + k]
                self._pos += k
                pos += k
                if self._pos == len(self._msg_view):
                    self._finish_message()
            elif self._skip:
                k = min(end - pos, self._skip)
                self._skip -= k
                self.on_passthrough(bytes(view[pos : pos + k]))
                pos += k
            else:
                k = min(end - pos, self._header_size() - len(self._head))
                self._head += view[pos : pos + k]
                pos += k
                if len(self._head) == self._header_size():
                    self._start_frame()

    def trim_idle(self) -> None:
        """Drop the kept message buffers if no big message came since the last call
        (the connection calls this on its ping timer)."""
        if not self._pool_used:
            self._pool.clear()
        self._pool_used = False

    @property
    def buffered(self) -> int:
        """Bytes of a frame received but not yet delivered."""
        return len(self._head) + (self._pos if self._msg is not None else 0)

    # ---- frame boundaries ------------------------------------------------------

    def _header_size(self) -> int:
        head = self._head
        if len(head) < 2:
            return 2
        b1 = head[1]
        size = 2 + (4 if b1 & 0x80 else 0)
        n7 = b1 & 0x7F
        return size + (2 if n7 == 126 else 8 if n7 == 127 else 0)

    def _start_frame(self) -> None:
        head = self._head
        b1 = head[1]
        n7 = b1 & 0x7F
        if n7 == 126:
            length, at = int.from_bytes(head[2:4], "big"), 4
        elif n7 == 127:
            length, at = int.from_bytes(head[2:10], "big"), 10
        else:
            length, at = n7, 2
        masked = bool(b1 & 0x80)
        if head[0] == _FAST_FIRST_BYTE and masked == self.masked and length <= self.max_size and self.fast_ok():
            self._key = bytes(head[at : at + 4]) if masked else b""
            self._head = bytearray()
            if length == 0:
                self.on_message(b"")
                return
            if length >= POOLED_MIN:
                self._msg = self._pool.get(length)
                self._pool_used = True
            else:
                self._msg = bytearray(length)
            self._msg_view = memoryview(self._msg)[:length]
            self._pos = 0
        else:  # websockets validates (and acts on) everything else
            raw = bytes(head)
            self._head = bytearray()
            self._skip = length
            self.on_passthrough(raw)

    def _finish_message(self) -> None:
        msg = self._msg_view
        self._msg = None
        self._msg_view = memoryview(b"")
        self._pos = 0
        self.on_message(apply_mask(msg, self._key) if self._key else msg)
