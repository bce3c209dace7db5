"""Test and benchmark support for the kubelet API: a real "container" (a
process in fresh PID, mount, UTS, IPC and network namespaces, made with
``unshare``) and a PodView over it, without the pod manager and CNI."""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgectl.agent.runtime.interface import ContainerLogs, ContainerProcess, PodNetwork

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child before exec
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _child_pid(parent: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except FileNotFoundError:
            children = []
        if children:
            return int(children[0])
        time.sleep(0.02)
    raise RuntimeError("unshare did not start its child")


def _listening(pid: int, port: int) -> bool:
    try:
        table = Path(f"/proc/{pid}/net/tcp").read_text()
    except FileNotFoundError:
        return False
    return f":{port:04X} 00000000:0000 0A" in table


@contextlib.contextmanager
def container_namespace(*, hostname: str, http_port: int | None = None, main: str | None = None,
                        listen_port: int | None = None, timeout: float = 10.0) -> Iterator[int]:
    """Yield the host PID of the container's PID 1: ``sleep``, a Python web
    server on 127.0.0.1:``http_port`` visible only inside its netns, or the
    shell command ``main`` (then ``listen_port`` is waited for, if given).

    Everything dies with it: the namespace's PID 1 is killed by PID at exit
    (taking every process in the PID namespace along), unshare runs with
    --kill-child, and unshare itself dies with this process (PDEATHSIG).
    """
    if main is None:
        main = (f"exec python3 -m http.server {http_port} --bind 127.0.0.1 --directory /proc/self/fdinfo"
                if http_port else "exec sleep 100000")
    listen_port = listen_port or http_port
    script = f"hostname {hostname}; ip link set lo up; {main}"
    proc = subprocess.Popen(["unshare", "--fork", "--kill-child", "--pid", "--mount-proc", "--uts", "--net", "--mount",
                             "--ipc", "sh", "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=_die_with_parent)
    pid = 0
    try:
        pid = _child_pid(proc.pid, timeout)
        if listen_port:
            deadline = time.monotonic() + timeout
            while not _listening(pid, listen_port):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nothing listens on {listen_port} in the container")
                time.sleep(0.05)
        yield pid
    finally:
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)


@dataclass
class StaticPods:
    """A PodView for one pod with one container, backed by a real process and
    a directory of CRI log files named ``<n>.log`` (n = restart count)."""

    pid: int
    log_dir: Path
    namespace: str = "default"
    pod: str = "web"
    container: str = "main"
    uid: str = "uid-1"
    running: bool = True

    def _is(self, namespace: str, pod: str, container: str | None = None) -> bool:
        return (namespace, pod) == (self.namespace, self.pod) and container in (None, self.container)

    def find_uid(self, namespace: str, name: str) -> str | None:
        return self.uid if self._is(namespace, name) else None

    def container_process(self, namespace: str, pod: str, container: str) -> ContainerProcess | None:
        if not self._is(namespace, pod, container):
            return None
        return ContainerProcess(pod_uid=self.uid, container=self.container, container_id="process://test", pid=self.pid,
                                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "GREETING": "hi"}, working_dir="/")

    def container_logs(self, namespace: str, pod: str, container: str) -> ContainerLogs | None:
        if not self._is(namespace, pod, container):
            return None
        files = sorted(self.log_dir.glob("*.log"), key=lambda p: int(p.stem) if p.stem.isdigit() else -1)
        return ContainerLogs(current=str(files[-1]) if files else None,
                             previous=str(files[-2]) if len(files) > 1 else None, running=self.running)

    def pod_network(self, namespace: str, pod: str) -> PodNetwork | None:
        if not self._is(namespace, pod):
            return None
        return PodNetwork(pod_uid=self.uid, netns_path=f"/proc/{self.pid}/ns/net", ips=("10.42.0.5",))

    def pods(self) -> list[dict[str, Any]]:
        return [{"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": self.pod, "namespace": self.namespace, "uid": self.uid},
                 "spec": {"containers": [{"name": self.container, "image": "none"}]},
                 "status": {"phase": "Running", "podIP": "10.42.0.5"}}]
