"""Events the sans-I/O :class:`~edgectl.tunnel.session.Session` hands to its I/O layer."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HelloReceived:
    identity: str
    version: int
    capabilities: int


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The peer asks for a stream; answer with ``accept_stream`` or ``reject_stream``."""

    stream_id: int
    target: str


@dataclass(frozen=True, slots=True)
class StreamAccepted:
    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamRejected:
    stream_id: int
    code: int
    message: str


@dataclass(frozen=True, slots=True)
class DataReceived:
    """Payload for the user; call ``Session.consumed`` once the user has read it."""

    stream_id: int
    data: memoryview | bytes


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The peer half-closed (FIN): no more data will arrive on this stream."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The stream is gone: a RST from the peer, or the session ended."""

    stream_id: int
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class PongReceived:
    rtt: float


@dataclass(frozen=True, slots=True)
class GoAwayReceived:
    """The peer drains: no new streams; existing streams finish."""

    code: int
    last_stream_id: int
    message: str


@dataclass(frozen=True, slots=True)
class SessionClosed:
    """Terminal. ``code`` 0 is a clean close; anything else names the error."""

    code: int
    message: str
    local: bool


Event = (
    HelloReceived | StreamOpened | StreamAccepted | StreamRejected | DataReceived
    | StreamEnded | StreamReset | PongReceived | GoAwayReceived | SessionClosed
)
