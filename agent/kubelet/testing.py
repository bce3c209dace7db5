"""Test and benchmark support for the kubelet API: a real "container" (a
process in fresh PID, mount, UTS, IPC and network namespaces, made with
``unshare``), a PodView over it (no pod manager, no CNI), and
:class:`TunnelledKubelet`, a node's kubelet reachable through the real tunnel
(:class:`TunnelledNode` for any other endpoint in the kubelet's place)."""
from __future__ import annotations

import abc
import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgectl.agent.runtime.interface import ContainerAttach, ContainerLogs, ContainerProcess, PodNetwork
from edgectl.joinproto import NodeCerts

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
    attach: ContainerAttach | None = None  # the console, when a real shim runs the container

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

    def container_attach(self, namespace: str, pod: str, container: str) -> ContainerAttach | None:
        return self.attach if self._is(namespace, pod, container) else None

    def pod_network(self, namespace: str, pod: str) -> PodNetwork | None:
        if not self._is(namespace, pod):
            return None
        return PodNetwork(pod_uid=self.uid, netns_path=f"/proc/{self.pid}/ns/net", ips=("10.42.0.5",))

    def pods(self) -> list[dict[str, Any]]:
        return [{"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": self.pod, "namespace": self.namespace, "uid": self.uid},
                 "spec": {"containers": [{"name": self.container, "image": "none"}]},
                 "status": {"phase": "Running", "podIP": "10.42.0.5"}}]


def write_node_certs(certs: NodeCerts, d: Path) -> None:
    """The join answer as files in ``d``: serving.crt/.key, client.crt/.key, client-ca.crt."""
    d.mkdir(parents=True, exist_ok=True)
    for name, data in (("serving.crt", certs.serving_cert), ("serving.key", certs.serving_key),
                       ("client.crt", certs.client_cert), ("client.key", certs.client_key),
                       ("client-ca.crt", certs.client_ca)):
        (d / name).write_bytes(data)


class TunnelledNode(abc.ABC):
    """A node's side of the tunnel, in this process: an HTTPS endpoint on the
    node's kubelet port (what :meth:`serve` starts) plus the real tunnel agent
    dialling ``server_url``, on their own event-loop thread (so blocking test
    code, e.g. running kubectl, can drive them)."""

    def __init__(self, *, server_url: str, node: str, certs: NodeCerts, workdir: Path) -> None:
        self.server_url, self.node, self.certs, self.workdir = server_url, node, certs, workdir
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=f"node-{node}", daemon=True)
        self.port = 0

    @abc.abstractmethod
    async def serve(self, certs_dir: Path) -> int:
        """Start the endpoint with the node certificates in ``certs_dir``; return its port."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop what :meth:`serve` started (after the agent has stopped)."""

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(20)

    async def _start(self) -> None:
        from edgectl.tunnel.agent import AgentConfig, TunnelAgent, client_ssl_context
        from edgectl.tunnel.allowlist import AllowList

        d = self.workdir
        write_node_certs(self.certs, d)
        self.port = await self.serve(d)
        ctx = client_ssl_context(ca_data=self.certs.server_ca.decode(), cert_file=str(d / "client.crt"),
                                 key_file=str(d / "client.key"))
        self.agent = TunnelAgent(AgentConfig(server=self.server_url, node=self.node,
                                             allow=AllowList(kubelet_port=self.port)), ssl_context=ctx)
        self.agent_task = asyncio.ensure_future(self.agent.run())

    def stop(self) -> None:
        async def _stop() -> None:
            await self.agent.stop()
            self.agent_task.cancel()
            await self.close()

        try:
            asyncio.run_coroutine_threadsafe(_stop(), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


class TunnelledKubelet(TunnelledNode):
    """Our kubelet API over ``pods`` (a PodView), reachable through the real tunnel."""

    def __init__(self, *, server_url: str, node: str, certs: NodeCerts, pods: Any, workdir: Path) -> None:
        super().__init__(server_url=server_url, node=node, certs=certs, workdir=workdir)
        self.pods = pods

    async def serve(self, certs_dir: Path) -> int:
        from .server import KubeletConfig, KubeletServer

        d = certs_dir
        self.kubelet = KubeletServer(KubeletConfig(cert_file=d / "serving.crt", key_file=d / "serving.key",
                                                   client_ca_file=d / "client-ca.crt", port=0), pods=self.pods)
        _, port = await self.kubelet.start()
        return port

    async def close(self) -> None:
        await self.kubelet.close()
