"""Stream lifecycle as data (h11 style): every state change is a table lookup.

Rule: anything that changes a stream's state lives here. The session calls
:func:`next_state` and treats a missing entry as an error - a
:class:`ProtocolError` for a frame from the peer, :class:`InvalidState` for a
local call.

States (one per stream, both directions together)::

    OPENING       we sent OPEN, waiting for OPEN_ACK
    PENDING       peer sent OPEN, our user has not accepted or rejected yet
    OPEN          both directions open
    HALF_LOCAL    our user ended its side (FIN queued after any queued data);
                  we may still receive
    HALF_REMOTE   peer sent FIN (we may still send)
    CLOSED        both FINs, a RST either way, or a rejected OPEN
"""
from __future__ import annotations

import enum


class StreamState(enum.Enum):
    OPENING = "opening"
    PENDING = "pending"
    OPEN = "open"
    HALF_LOCAL = "half_closed_local"
    HALF_REMOTE = "half_closed_remote"
    CLOSED = "closed"


class Ev(enum.Enum):
    SEND_OPEN = "send_open"
    RECV_OPEN = "recv_open"
    SEND_ACK = "send_ack"
    RECV_ACK = "recv_ack"
    SEND_REJECT = "send_reject"
    RECV_REJECT = "recv_reject"
    SEND_DATA = "send_data"
    RECV_DATA = "recv_data"
    SEND_FIN = "send_fin"
    RECV_FIN = "recv_fin"
    SEND_RST = "send_rst"
    RECV_RST = "recv_rst"


S = StreamState
# A fresh stream starts in the pseudo-state None.
TRANSITIONS: dict[tuple[StreamState | None, Ev], StreamState] = {
    (None, Ev.SEND_OPEN): S.OPENING,
    (None, Ev.RECV_OPEN): S.PENDING,
    (S.OPENING, Ev.RECV_ACK): S.OPEN,
    (S.OPENING, Ev.RECV_REJECT): S.CLOSED,
    (S.PENDING, Ev.SEND_ACK): S.OPEN,
    (S.PENDING, Ev.SEND_REJECT): S.CLOSED,
    # Data: allowed only while that direction is open; never before the ACK
    # (the opener learns its send credit from OPEN_ACK).
    (S.OPEN, Ev.SEND_DATA): S.OPEN,
    (S.HALF_REMOTE, Ev.SEND_DATA): S.HALF_REMOTE,
    (S.OPEN, Ev.RECV_DATA): S.OPEN,
    (S.HALF_LOCAL, Ev.RECV_DATA): S.HALF_LOCAL,
    # Half-close.
    (S.OPEN, Ev.SEND_FIN): S.HALF_LOCAL,
    (S.HALF_REMOTE, Ev.SEND_FIN): S.CLOSED,
    (S.OPEN, Ev.RECV_FIN): S.HALF_REMOTE,
    (S.HALF_LOCAL, Ev.RECV_FIN): S.CLOSED,
    # Reset: from any live state, either way.
    **{(st, Ev.SEND_RST): S.CLOSED for st in (S.OPENING, S.PENDING, S.OPEN, S.HALF_LOCAL, S.HALF_REMOTE)},
    **{(st, Ev.RECV_RST): S.CLOSED for st in (S.OPENING, S.PENDING, S.OPEN, S.HALF_LOCAL, S.HALF_REMOTE)},
    # Both FINs were exchanged but we still hold unread or unsent data, and the
    # peer's RST crossed our FIN on the wire: the reset wins (data is dropped).
    (S.CLOSED, Ev.RECV_RST): S.CLOSED,
}


def next_state(state: StreamState | None, event: Ev) -> StreamState | None:
    """The state after ``event``, or None when the table forbids it."""
    return TRANSITIONS.get((state, event))


def can_send(state: StreamState) -> bool:
    return state in (S.OPEN, S.HALF_REMOTE)


def can_receive(state: StreamState) -> bool:
    return state in (S.OPEN, S.HALF_LOCAL)
