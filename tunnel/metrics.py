"""Prometheus metrics of the tunnel server.

Live values (sessions, streams, buffered bytes, blocked streams, bytes moved)
are read from the sessions at scrape time by a collector, so the data path
pays nothing for them. Events (dials, failures, admissions) are counted as
they happen.
"""
from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

if TYPE_CHECKING:
    from .server import TunnelServer

DIAL_SECONDS = Histogram(
    "edgectl_tunnel_dial_seconds",
    "Time from dial() to OPEN_ACK ok (includes the agent's TCP connect).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DIAL_FAILURES = Counter("edgectl_tunnel_dial_failures_total", "Failed dials by reason.", ["reason"])
ADMISSIONS = Counter("edgectl_tunnel_admissions_total", "Agent connection attempts by result.", ["result"])
SESSION_ERRORS = Counter("edgectl_tunnel_session_errors_total", "Sessions that ended with an error, by code.", ["code"])

_servers: "weakref.WeakSet[TunnelServer]" = weakref.WeakSet()


def track(server: "TunnelServer") -> None:
    _servers.add(server)


class _LiveCollector:
    def collect(self) -> Iterator[Any]:
        sessions = GaugeMetricFamily("edgectl_tunnel_sessions", "Connected agent sessions.")
        streams = GaugeMetricFamily("edgectl_tunnel_streams", "Open tunnel streams.")
        buffered = GaugeMetricFamily("edgectl_tunnel_buffered_bytes", "Bytes received and not yet read by the user, all streams.")
        queued = GaugeMetricFamily("edgectl_tunnel_queued_bytes", "Bytes written by users and not yet sent, all streams.")
        blocked = GaugeMetricFamily("edgectl_tunnel_blocked_streams", "Streams with data queued but no send credit.")
        rtt = GaugeMetricFamily("edgectl_tunnel_rtt_seconds", "Last measured ping RTT per node.", labels=["node"])
        moved = CounterMetricFamily("edgectl_tunnel_bytes", "Stream payload bytes moved.", labels=["direction"])
        n = s = b = q = k = 0
        bytes_in = bytes_out = 0
        for server in list(_servers):
            for entry in server._sessions.values():
                sess = entry.conn.session
                n += 1
                s += sess.open_streams
                b += sess.buffered_bytes
                q += sum(sess.pending_out(i) for i in sess.stream_ids)
                k += sess.blocked_streams()
                if sess.last_rtt is not None:
                    rtt.add_metric([entry.node], sess.last_rtt)
            bytes_in += server._bytes_in_closed + sum(e.conn.session.bytes_in for e in server._sessions.values())
            bytes_out += server._bytes_out_closed + sum(e.conn.session.bytes_out for e in server._sessions.values())
        sessions.add_metric([], n)
        streams.add_metric([], s)
        buffered.add_metric([], b)
        queued.add_metric([], q)
        blocked.add_metric([], k)
        moved.add_metric(["in"], bytes_in)
        moved.add_metric(["out"], bytes_out)
        yield from (sessions, streams, buffered, queued, blocked, rtt, moved)


REGISTRY.register(_LiveCollector())
