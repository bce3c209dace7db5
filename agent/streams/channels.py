"""The Kubernetes stream protocols layered on SPDY and websockets (sans-I/O).

remotecommand (exec/attach):
- over SPDY, the client opens one stream per role, named by the ``streamtype``
  header (error, stdin, stdout, stderr, resize); the version is negotiated with
  ``X-Stream-Protocol-Version``;
- over websockets (``v4``/``v5.channel.k8s.io``), every binary message starts
  with a channel byte: 0 stdin, 1 stdout, 2 stderr, 3 error/status, 4 resize;
  v5 adds ``[255, ch]`` to half-close a channel.

The final outcome travels on the error channel: v4+ a JSON ``Status``
(``NonZeroExitCode`` with an ``ExitCode`` cause), v1-v3 plain text.

port-forward: per forwarded connection the client opens an ``error`` and a
``data`` stream carrying ``port`` and a shared ``requestid``.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# --- protocol names ------------------------------------------------------

STREAM_PROTOCOL_HEADER = "X-Stream-Protocol-Version"
SPDY_UPGRADE = "SPDY/3.1"

V1 = "channel.k8s.io"
V2 = "v2.channel.k8s.io"
V3 = "v3.channel.k8s.io"
V4 = "v4.channel.k8s.io"
V5 = "v5.channel.k8s.io"
# What the SPDY exec endpoint speaks, best first.
SPDY_EXEC_PROTOCOLS = (V5, V4, V3, V2, V1)
# Websocket exec: the binary channel protocols (kubectl 1.30+ offers only v5).
WS_EXEC_PROTOCOLS = (V5, V4)

PORTFORWARD_PROTOCOL = "portforward.k8s.io"
# kubectl 1.31+: SPDY frames carried in websocket binary messages.
WS_PORTFORWARD_PROTOCOL = "SPDY/3.1+portforward.k8s.io"

STREAM_TYPE = "streamtype"
STREAM_ERROR = "error"
STREAM_STDIN = "stdin"
STREAM_STDOUT = "stdout"
STREAM_STDERR = "stderr"
STREAM_RESIZE = "resize"
STREAM_DATA = "data"
PORT_HEADER = "port"
REQUEST_ID_HEADER = "requestid"

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
CLOSE = 255  # v5 only: [255, channel] half-closes that channel

NON_ZERO_EXIT_REASON = "NonZeroExitCode"
EXIT_CODE_CAUSE = "ExitCode"


class ChannelProtocolError(Exception):
    """A malformed message from the peer on a channel protocol."""


def negotiate(offered: Iterable[str], supported: Sequence[str]) -> str | None:
    """Pick the protocol for a SPDY upgrade. The client lists its versions in
    preference order (possibly comma-joined in one header); we take the first
    we speak, as the apiserver and kubelet do."""
    for item in offered:
        for name in item.split(","):
            name = name.strip()
            if name in supported:
                return name
    return None


def supports_resize(protocol: str) -> bool:
    return protocol in (V3, V4, V5)


def uses_json_status(protocol: str) -> bool:
    return protocol in (V4, V5)


# --- Status objects ------------------------------------------------------

def status_success() -> dict[str, Any]:
    return {"metadata": {}, "status": "Success"}


def status_exit_code(code: int) -> dict[str, Any]:
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: error executing command, exit status {code}",
        "reason": NON_ZERO_EXIT_REASON,
        "details": {"causes": [{"reason": EXIT_CODE_CAUSE, "message": str(code)}]},
    }


def status_error(message: str, *, code: int = 500, reason: str = "InternalError") -> dict[str, Any]:
    return {"metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code}


def encode_status(protocol: str, status: dict[str, Any]) -> bytes:
    """What goes on the error stream: JSON for v4+, the bare message (or
    nothing on success) for the older protocols."""
    if uses_json_status(protocol):
        return json.dumps({"kind": "Status", "apiVersion": "v1", **status}, separators=(",", ":")).encode()
    if status.get("status") == "Success":
        return b""
    return str(status.get("message", "error")).encode()


@dataclass(frozen=True)
class ExecOutcome:
    """The decoded result of an error/status channel, as a client sees it."""

    exit_code: int | None  # 0 on success, N for NonZeroExitCode, None for other failures
    message: str = ""


def decode_status(protocol: str, raw: bytes) -> ExecOutcome:
    """Client side of :func:`encode_status` (used by our tests and tools)."""
    if not raw.strip():
        return ExecOutcome(0)
    if not uses_json_status(protocol):
        return ExecOutcome(None, raw.decode("utf-8", "replace"))
    try:
        status = json.loads(raw)
    except ValueError as exc:
        raise ChannelProtocolError(f"status is not JSON: {exc}") from None
    if status.get("status") == "Success":
        return ExecOutcome(0)
    if status.get("reason") == NON_ZERO_EXIT_REASON:
        for cause in (status.get("details") or {}).get("causes") or []:
            if cause.get("reason") == EXIT_CODE_CAUSE:
                try:
                    return ExecOutcome(int(cause.get("message", "")), status.get("message", ""))
                except ValueError:
                    break
    return ExecOutcome(None, status.get("message", ""))


# --- terminal size -------------------------------------------------------

@dataclass(frozen=True)
class TerminalSize:
    width: int
    height: int


def parse_size(obj: Any) -> TerminalSize:
    if not isinstance(obj, dict):
        raise ChannelProtocolError("resize message is not a JSON object")
    width, height = obj.get("Width", obj.get("width")), obj.get("Height", obj.get("height"))
    if not (isinstance(width, int) and isinstance(height, int) and 0 <= width <= 0xFFFF and 0 <= height <= 0xFFFF):
        raise ChannelProtocolError(f"bad terminal size {obj!r}")
    return TerminalSize(width, height)


class ResizeDecoder:
    """The SPDY resize stream is a run of concatenated JSON objects (Go's
    json.Encoder output), split anywhere by the transport."""

    MAX_BUFFER = 4096

    def __init__(self) -> None:
        self._buf = ""
        self._json = json.JSONDecoder()

    def feed(self, data: bytes) -> list[TerminalSize]:
        self._buf += data.decode("utf-8", "replace")
        sizes: list[TerminalSize] = []
        while True:
            text = self._buf.lstrip()
            if not text:
                self._buf = ""
                return sizes
            try:
                obj, end = self._json.raw_decode(text)
            except ValueError:
                if len(text) > self.MAX_BUFFER:
                    raise ChannelProtocolError("resize stream carries no valid JSON") from None
                self._buf = text
                return sizes
            self._buf = text[end:]
            sizes.append(parse_size(obj))


# --- websocket channel framing -------------------------------------------

@dataclass(frozen=True)
class ChannelData:
    channel: int
    data: bytes


@dataclass(frozen=True)
class ChannelClose:
    channel: int


def encode_channel(channel: int, data: bytes = b"") -> bytes:
    return bytes((channel,)) + data


def encode_close(channel: int) -> bytes:
    return bytes((CLOSE, channel))


def decode_channel_message(protocol: str, message: bytes) -> ChannelData | ChannelClose | None:
    """One binary websocket message. Empty messages carry nothing (None)."""
    if not message:
        return None
    if message[0] == CLOSE and protocol == V5:
        if len(message) != 2:
            raise ChannelProtocolError("close signal must name exactly one channel")
        return ChannelClose(message[1])
    return ChannelData(message[0], bytes(message[1:]))
