"""edgectl.tunnel: reverse tunnel from edge agents to the server.

Layers (see docs/tunnel-protocol.md and docs/ARCHITECTURE.md):
- frames.py, states.py, session.py: the sans-I/O protocol core;
- connection.py, streams.py: the asyncio layer over websockets' sans-I/O protocol;
- server.py (TunnelServer), agent.py (TunnelAgent): the two ends;
- allowlist.py, auth.py, metrics.py, cli.py: policy, authentication, observability.
"""
from .errors import (
    DialError,
    FlowControlError,
    FrameTooLarge,
    InvalidState,
    ProtocolError,
    StreamReset,
    TunnelError,
    VersionMismatch,
)

__all__ = [
    "DialError", "FlowControlError", "FrameTooLarge", "InvalidState", "ProtocolError",
    "StreamReset", "TunnelError", "VersionMismatch",
]
