"""Run runtime code inside a throwaway node namespace (tests and benchmarks).

The CNI bridge plugin creates ``cni0`` and masquerade rules in the *current*
network namespace, so runtime tests must never run in the root namespace.
:func:`run_in_node_namespace` forks, and the child unshares a new network and
mount namespace with a private tmpfs on /run (so ``/run/netns`` is private
too), runs the coroutine, and kills every container it left behind by PID
before exiting. The parent gets the (picklable) result or the child's
traceback as :class:`NodeNamespaceError`.
"""
from __future__ import annotations

import asyncio
import ctypes
import json
import os
import pickle
import select
import signal
import subprocess
import time
import traceback
from pathlib import Path
from typing import Any, Awaitable, Callable

from .shim import CLONE_NEWNET, CLONE_NEWNS, MS_PRIVATE, MS_REC, proc_start_ticks

_libc = ctypes.CDLL(None, use_errno=True)


class NodeNamespaceError(AssertionError):
    """The coroutine failed inside the node namespace; carries its traceback."""


def _enter_node_namespace() -> None:
    if _libc.unshare(CLONE_NEWNET | CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(net|mount) failed; run as root")
    if _libc.mount(None, b"/", None, ctypes.c_ulong(MS_REC | MS_PRIVATE), None) != 0:
        raise OSError(ctypes.get_errno(), "making / private failed")
    if _libc.mount(b"tmpfs", b"/run", b"tmpfs", ctypes.c_ulong(0), b"mode=755") != 0:
        raise OSError(ctypes.get_errno(), "tmpfs on /run failed")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


def kill_leftovers(data_dir: Path) -> int:
    """SIGKILL every container and shim recorded under ``data_dir`` (by PID,
    after checking the start time so a reused PID is never hit)."""
    killed = 0
    for pid_file in data_dir.glob("pods/*/containers/*/pid.json"):
        try:
            doc = json.loads(pid_file.read_text())
        except (OSError, ValueError):
            continue
        for pid_key, start_key in (("pid", "pid_start"), ("shim_pid", "shim_start")):
            pid = int(doc.get(pid_key) or 0)
            if pid > 0 and proc_start_ticks(pid) == doc.get(start_key):
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except ProcessLookupError:
                    pass
    return killed


def run_in_node_namespace(fn: Callable[[], Awaitable[Any]], *, data_dir: Path, timeout: float = 90.0) -> Any:
    """Run ``asyncio.run(fn())`` in a forked child inside a fresh node namespace."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        payload: bytes
        try:
            _enter_node_namespace()
            try:
                payload = pickle.dumps(("ok", asyncio.run(fn())))
            finally:
                kill_leftovers(data_dir)
        except BaseException:  # noqa: BLE001 - everything goes back to the parent
            payload = pickle.dumps(("error", traceback.format_exc()))
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(w, view):]
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                raise NodeNamespaceError(f"timed out after {timeout:.0f}s in the node namespace")
            chunk = os.read(r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
        kill_leftovers(data_dir)
    if not chunks:
        raise NodeNamespaceError("node namespace child died without a result")
    kind, value = pickle.loads(b"".join(chunks))
    if kind == "error":
        raise NodeNamespaceError("failed inside the node namespace:\n" + value)
    return value
