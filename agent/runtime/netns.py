"""Open a TCP connection from inside a pod's network namespace.

A socket belongs to the namespace it was created in, so a short-lived thread
``setns``-es into the pod's netns, connects, and hands the socket back; the
event loop then uses it like any other. The thread is never reused: setns
changes it for good. Used by port-forward (kubelet) and by tcp/http probes.
"""
from __future__ import annotations

import asyncio
import ctypes
import os
import socket
import threading
from collections.abc import Sequence

CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


def enter_netns(netns_path: str) -> None:
    """Move the calling thread into the network namespace at ``netns_path``."""
    fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({netns_path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _connect_first(netns_path: str | None, hosts: Sequence[str], port: int, timeout: float) -> socket.socket:
    """Blocking, in a fresh thread: the first of ``hosts`` that accepts wins."""
    if netns_path:
        enter_netns(netns_path)
    last: OSError | None = None
    for host in hosts:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect((host, port))
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise last if last is not None else OSError("no address to connect to")


async def connect_in_netns(netns_path: str | None, hosts: Sequence[str], port: int, *, timeout: float) -> socket.socket:
    """A connected, non-blocking socket to ``hosts[i]:port`` made inside ``netns_path``
    (None: the agent's own namespace). A cancelled caller never leaks the socket."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[socket.socket] = loop.create_future()

    def settle(sock: socket.socket | None, exc: BaseException | None) -> None:
        if done.cancelled():
            if sock is not None:
                sock.close()
        elif exc is not None:
            done.set_exception(exc)
        else:
            done.set_result(sock)  # type: ignore[arg-type]

    def worker() -> None:
        try:
            sock = _connect_first(netns_path, hosts, port, timeout)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, sock, None)

    threading.Thread(target=worker, name=f"netns-dial-{port}", daemon=True).start()
    sock = await done
    sock.setblocking(False)
    return sock
