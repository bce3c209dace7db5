"""The attach socket protocol between the kubelet API and a container's shim.

Sans-I/O and stdlib only: the shim (run as a bare script) imports this module.

The shim listens on ``attach.sock`` in the container instance's directory
(mode 0600, so only root reaches it). One connection is one attach session.
Every message in both directions is a frame::

    type (1 byte) | length (4 bytes, big-endian) | payload (length bytes)

Client (kubelet) to shim:

- ``HELLO`` (must come first): JSON ``{"stdin": bool, "stdout": bool, "stderr": bool}``,
  the streams this session wants;
- ``STDIN``: bytes for the container's stdin (ignored unless the session got stdin);
- ``STDIN_EOF``: this session's stdin ended (the client closed it);
- ``RESIZE``: 4 bytes, width and height as unsigned 16-bit big-endian (TIOCSWINSZ;
  ignored without a tty).

Shim to client:

- ``WELCOME``: JSON ``{"tty": bool, "stdin": bool, "stdin_closed": bool}``, the
  session is live; output from now on (no replay, as CRI attach);
- ``REFUSED``: UTF-8 reason, then the shim closes (stdin asked of a container
  without ``stdin: true``, or a malformed HELLO);
- ``STDOUT`` / ``STDERR``: container output (with a tty everything is STDOUT);
- ``EXIT``: JSON ``{"exit_code": int}``, the container ended; the shim closes next.

A session that goes away (or sends ``STDIN_EOF``) after asking for stdin ends
the container's stdin when the container has ``stdinOnce``: the pipe is closed,
or on a tty the EOF character (^D) is written.
"""
from __future__ import annotations

import contextlib
import json
import os
import struct

HELLO, WELCOME, REFUSED, STDIN, STDIN_EOF, RESIZE, STDOUT, STDERR, EXIT = range(1, 10)
TYPES = frozenset(range(1, 10))
NAMES = {HELLO: "HELLO", WELCOME: "WELCOME", REFUSED: "REFUSED", STDIN: "STDIN", STDIN_EOF: "STDIN_EOF",
         RESIZE: "RESIZE", STDOUT: "STDOUT", STDERR: "STDERR", EXIT: "EXIT"}
HEADER = struct.Struct(">BI")
MAX_PAYLOAD = 1 << 20
SOCKET_NAME = "attach.sock"
_SUN_PATH_MAX = 100  # sockaddr_un.sun_path is 108 bytes; keep a margin


class AttachProtocolError(Exception):
    """A malformed frame from the peer; the connection is dropped."""


def encode(kind: int, payload: bytes = b"") -> bytes:
    if kind not in TYPES:
        raise ValueError(f"unknown frame type {kind}")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError("frame payload too large")
    return HEADER.pack(kind, len(payload)) + payload


def encode_json(kind: int, doc: dict) -> bytes:
    return encode(kind, json.dumps(doc, separators=(",", ":")).encode())


def encode_resize(width: int, height: int) -> bytes:
    return encode(RESIZE, struct.pack(">HH", width & 0xFFFF, height & 0xFFFF))


def decode_resize(payload: bytes) -> tuple[int, int]:
    if len(payload) != 4:
        raise AttachProtocolError("RESIZE needs 4 bytes")
    width, height = struct.unpack(">HH", payload)
    return width, height


def decode_json(payload: bytes) -> dict:
    try:
        doc = json.loads(payload)
    except ValueError as exc:
        raise AttachProtocolError(f"frame payload is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise AttachProtocolError("frame payload is not a JSON object")
    return doc


def stream_payload(payload: bytes) -> dict:
    """A HELLO's stream choices, strictly booleans."""
    doc = decode_json(payload)
    out = {}
    for key in ("stdin", "stdout", "stderr"):
        value = doc.get(key, False)
        if not isinstance(value, bool):
            raise AttachProtocolError(f"HELLO {key} must be a boolean")
        out[key] = value
    return out


class FrameDecoder:
    """Bytes in, ``(type, payload)`` frames out; split anywhere by the transport."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        frames = []
        while len(self._buf) >= HEADER.size:
            kind, length = HEADER.unpack_from(self._buf)
            if kind not in TYPES:
                raise AttachProtocolError(f"unknown frame type {kind}")
            if length > MAX_PAYLOAD:
                raise AttachProtocolError(f"frame of {length} bytes exceeds {MAX_PAYLOAD}")
            end = HEADER.size + length
            if len(self._buf) < end:
                break
            frames.append((kind, bytes(self._buf[HEADER.size:end])))
            del self._buf[:end]
        return frames


@contextlib.contextmanager
def short_unix_path(path: str):  # noqa: ANN201 - Iterator[str]
    """A name for ``path`` that fits sockaddr_un: container directories under a
    long data dir exceed 108 bytes, so go through an O_PATH descriptor of the
    directory (``/proc/self/fd/N/attach.sock``) for bind and connect alike."""
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        yield path
        return
    fd = os.open(os.path.dirname(path) or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{os.path.basename(path)}"
    finally:
        os.close(fd)
