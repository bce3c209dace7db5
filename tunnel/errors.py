"""Typed tunnel errors.

Tree::

    TunnelError
    ├── ProtocolError          the peer broke the wire protocol (session ends)
    │   ├── FrameTooLarge      a frame over the negotiated size cap
    │   ├── FlowControlError   data beyond granted credit, window overflow
    │   └── VersionMismatch    HELLO with a protocol version we do not speak
    ├── InvalidState           local API misuse (write after FIN, unknown stream)
    ├── StreamReset            the stream was reset (by the peer or the session ending)
    └── DialError              server-side dial failed; ``reason`` says why

The sans-I/O parser raises only :class:`ProtocolError` (and subclasses);
:class:`~edgectl.tunnel.session.Session` never lets it escape, it turns it into
a session close (GOAWAY with an error code) or a stream reset.
"""
from __future__ import annotations


class TunnelError(Exception):
    """Base class of every tunnel error."""


class ProtocolError(TunnelError):
    """The peer sent something the protocol forbids. ``code`` is the GOAWAY code."""

    code = 1  # ErrorCode.PROTOCOL


class FrameTooLarge(ProtocolError):
    code = 2  # ErrorCode.FRAME_TOO_LARGE


class FlowControlError(ProtocolError):
    code = 3  # ErrorCode.FLOW_CONTROL


class VersionMismatch(ProtocolError):
    code = 4  # ErrorCode.VERSION


class InvalidState(TunnelError, AssertionError):
    """A local call that the stream or session state does not allow.

    Mixes in AssertionError like websockets' InvalidState: it is a bug in the
    caller, not bad input from the network.
    """


class StreamReset(TunnelError, ConnectionResetError):
    """Reading or writing a stream that was reset; ``code`` and ``reason`` come from RST."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"stream reset: {reason} (code {code})")
        self.code = code
        self.reason = reason


class DialError(TunnelError):
    """``TunnelServer.dial`` failed. ``reason`` is one of DIAL_REASONS."""

    NO_SESSION = "no_session"
    REFUSED = "refused"
    CONNECT_FAILED = "connect_failed"
    TIMEOUT = "timeout"
    SESSION_CLOSED = "session_closed"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


DIAL_REASONS = (
    DialError.NO_SESSION,
    DialError.REFUSED,
    DialError.CONNECT_FAILED,
    DialError.TIMEOUT,
    DialError.SESSION_CLOSED,
)
