"""Reachability probes between lab nodes, run in-process with sockets created in the nodes' namespaces.

Outcomes:

* ``reachable``: TCP connected, or a UDP reply came back;
* ``refused``: the destination answered but nothing listens (TCP RST, ICMP
  port unreachable) - the network path works;
* ``blocked``: no answer before the timeout, or no route / host unreachable.

With ``listen=True`` the probe first opens a throw-away listener (TCP accept,
UDP echo) in the destination node, so the result says whether the *network*
lets a new connection through, independent of what runs there. If something
already listens on that port, the probe simply goes to it.
"""
from __future__ import annotations

import errno
import socket
import threading
import time
from dataclasses import dataclass

from .netns import socket_in

REACHABLE, REFUSED, BLOCKED = "reachable", "refused", "blocked"
PAYLOAD = b"edgectl-lab-probe"


@dataclass(frozen=True, kw_only=True)
class ProbeResult:
    source: str
    destination: str  # ip:port
    protocol: str  # tcp | udp
    outcome: str  # reachable | refused | blocked
    detail: str
    seconds: float

    @property
    def reachable(self) -> bool:
        return self.outcome == REACHABLE


def probe(*, src_netns: str, src: str, ip: str, port: int, udp: bool = False, timeout: float = 1.0,
          listen_netns: str | None = None) -> ProbeResult:
    t0 = time.monotonic()
    listener = None
    if listen_netns:
        try:
            listener = _Listener(listen_netns, port, udp=udp)
        except PortBusy:
            pass  # a real service listens there: probe that instead
    try:
        outcome, detail = (_udp if udp else _tcp)(src_netns, ip, port, timeout)
    finally:
        if listener:
            listener.close()
    return ProbeResult(source=src, destination=f"{ip}:{port}", protocol="udp" if udp else "tcp",
                       outcome=outcome, detail=detail, seconds=round(time.monotonic() - t0, 3))


def _tcp(netns: str, ip: str, port: int, timeout: float) -> tuple[str, str]:
    with socket_in(netns, socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect((ip, port))
        except TimeoutError:
            return BLOCKED, f"no answer within {timeout}s"
        except ConnectionRefusedError:
            return REFUSED, "connection refused (host reachable, port closed)"
        except OSError as exc:
            return BLOCKED, exc.strerror or str(exc)
        return REACHABLE, "connected"


def _udp(netns: str, ip: str, port: int, timeout: float) -> tuple[str, str]:
    with socket_in(netns, socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.connect((ip, port))
            s.send(PAYLOAD)
            s.recv(2048)
        except TimeoutError:
            return BLOCKED, f"no reply within {timeout}s (filtered, or the service does not answer)"
        except ConnectionRefusedError:
            return REFUSED, "ICMP port unreachable (host reachable, port closed)"
        except OSError as exc:
            return BLOCKED, exc.strerror or str(exc)
        return REACHABLE, "reply received"


class PortBusy(Exception):
    pass


class _Listener:
    """A throw-away TCP acceptor or UDP echo in the destination namespace."""

    def __init__(self, netns: str, port: int, *, udp: bool) -> None:
        self.sock = socket_in(netns, socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind(("0.0.0.0", port))
        except OSError as exc:
            self.sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise PortBusy(port) from None
            raise
        if not udp:
            self.sock.listen(16)
        self.sock.settimeout(1.0)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(udp,), daemon=True, name="probe-listener")
        self.thread.start()

    def _run(self, udp: bool) -> None:
        while not self.stop.is_set():
            try:
                if udp:
                    data, peer = self.sock.recvfrom(2048)
                    self.sock.sendto(data, peer)
                else:
                    conn, _ = self.sock.accept()
                    conn.close()
            except (TimeoutError, OSError):
                continue

    def close(self) -> None:
        self.stop.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept/recvfrom at once
        except OSError:
            pass
        self.thread.join()
        self.sock.close()
