"""kubectl logs / exec / port-forward through the whole chain:
kubectl -> edgectl server -> tunnel (agent dialled out) -> kubelet API -> process.

The node side runs in this test process: the real tunnel agent and the real
kubelet API (agent/kubelet) with node certificates from the real join
endpoint. Only the pod manager is replaced by a small PodView over a real
``sleep`` process (exec enters its namespaces with nsenter), a real CRI-format
log file and the host network namespace (port-forward reaches a loopback
echo server). The kubelet port is ephemeral and published in the Node's
status.daemonEndpoints, as a kubelet does.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgectl.agent.kubelet.testing import TunnelledKubelet
from edgectl.server.testing import ServerProcess, add_running_pod, join_node, kubectl_path, register_node, wait_for_tunnels

pytestmark = [
    pytest.mark.skipif(not kubectl_path("1.33").exists(), reason="kubectl binaries not installed"),
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nsenter") is None, reason="exec needs root and nsenter"),
]
NODE = "stream-node-1"


class OnePodView:
    """The PodView surface of the pod manager, for one pod backed by real things."""

    def __init__(self, *, pid: int, log_file: Path) -> None:
        from edgectl.agent.runtime.interface import ContainerLogs, ContainerProcess, PodNetwork

        self.process = ContainerProcess(pod_uid="uid-1", container="app", container_id="process://1", pid=pid,
                                        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "GREETING": "hi"}, working_dir="/")
        self.logs = ContainerLogs(current=str(log_file), previous=None, running=True)
        self.network = PodNetwork(pod_uid="uid-1", netns_path=f"/proc/{pid}/ns/net", ips=("127.0.0.1",))

    def _ok(self, namespace: str, pod: str) -> bool:
        return namespace == "default" and pod == "app"

    def find_uid(self, namespace: str, name: str) -> str | None:
        return "uid-1" if self._ok(namespace, name) else None

    def container_process(self, namespace: str, pod: str, container: str) -> Any:
        return self.process if self._ok(namespace, pod) and container == "app" else None

    def container_logs(self, namespace: str, pod: str, container: str) -> Any:
        return self.logs if self._ok(namespace, pod) and container == "app" else None

    def pod_network(self, namespace: str, pod: str) -> Any:
        return self.network if self._ok(namespace, pod) else None

    def pods(self) -> list[dict[str, Any]]:
        return []


def echo_server() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                data = conn.recv(1024)
                conn.sendall(b"echo:" + data)

    threading.Thread(target=serve, daemon=True).start()
    return sock, sock.getsockname()[1]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    work = tmp_path_factory.mktemp("streams")
    srv = ServerProcess(work / "srv")
    sleeper = subprocess.Popen(["sleep", "300"])
    node: TunnelledKubelet | None = None
    try:
        srv.start()
        log_file = work / "app.log"
        log_file.write_text("2026-01-01T00:00:00.000000000Z stdout F hello from the pod\n"
                            "2026-01-01T00:00:01.000000000Z stderr F second line\n")
        node = TunnelledKubelet(server_url=srv.url, node=NODE, certs=join_node(srv, NODE, password="node-password-1"),
                                pods=OnePodView(pid=sleeper.pid, log_file=log_file), workdir=work)
        node.start()
        register_node(srv, NODE, kubelet_port=node.port)
        add_running_pod(srv, name="app", node=NODE, container="app")
        wait_for_tunnels(srv, {NODE})
        yield srv
    finally:
        if node is not None:
            node.stop()
        sleeper.kill()
        sleeper.wait()
        srv.stop()


@pytest.mark.parametrize("v", ["1.27", "1.33"])
def test_logs_through_tunnel(chain: ServerProcess, v: str) -> None:
    out = chain.kubectl(v, "logs", "app")
    assert out.stdout == "hello from the pod\nsecond line\n"
    out = chain.kubectl(v, "logs", "app", "--tail=1", "--timestamps")
    assert out.stdout.strip().endswith("second line") and out.stdout.startswith("2026-01-01T00:00:01")
    bad = chain.kubectl(v, "logs", "app", "-c", "nope", check=False)
    assert bad.returncode != 0 and "container nope is not valid" in bad.stderr


@pytest.mark.parametrize("v", ["1.27", "1.30", "1.33"])
def test_exec_through_tunnel(chain: ServerProcess, v: str) -> None:
    """1.27 speaks SPDY, 1.30+ websocket v5: both pass through to the kubelet."""
    out = chain.kubectl(v, "exec", "app", "--", "sh", "-c", "echo $GREETING; echo err >&2; exit 3", check=False)
    assert out.stdout == "hi\n" and "err" in out.stderr and out.returncode == 3, (out.stdout, out.stderr)
    piped = chain.kubectl(v, "exec", "-i", "app", "--", "cat", input="stdin works\n")
    assert piped.stdout == "stdin works\n"


def test_port_forward_through_tunnel(chain: ServerProcess) -> None:
    sock, port = echo_server()
    local = socket.socket()
    local.bind(("127.0.0.1", 0))
    local_port = local.getsockname()[1]
    local.close()
    cmd = [str(kubectl_path("1.33")), "--kubeconfig", str(chain.kubeconfig), "--cache-dir",
           str(chain.workdir / "cache-pf"), "port-forward", "pod/app", f"{local_port}:{port}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        reply = b""
        while time.monotonic() < deadline and not reply:
            try:
                with socket.create_connection(("127.0.0.1", local_port), timeout=5) as c:
                    c.sendall(b"ping")
                    reply = c.recv(1024)
            except OSError:
                time.sleep(0.2)
        assert reply == b"echo:ping"
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
        sock.close()


def test_streams_for_a_node_without_tunnel_answer_503(chain: ServerProcess) -> None:
    chain.json("POST", "/api/v1/namespaces/default/pods", {
        "metadata": {"name": "elsewhere"}, "spec": {"nodeName": "no-such-node", "containers": [{"name": "c", "image": "i"}]}})
    out = chain.kubectl("1.33", "logs", "elsewhere", check=False)
    assert out.returncode != 0 and 'node tunnel not connected: cannot reach node "no-such-node"' in out.stderr


def test_node_credentials_are_confined(chain: ServerProcess) -> None:
    """NodeRestriction through the real API: a node writes only its own things."""
    import http.client
    import json
    import ssl

    work = chain.workdir.parent
    ctx = ssl.create_default_context(cafile=str(work / "client-ca.crt"))
    ctx.load_verify_locations(cadata=(chain.data_dir / "tls" / "server-ca.crt").read_text())
    ctx.load_cert_chain(work / "client.crt", work / "client.key")

    def call(method: str, path: str, body: object, ctype: str = "application/json") -> int:
        conn = http.client.HTTPSConnection(chain.host, chain.port, context=ctx, timeout=10)
        try:
            conn.request(method, path, json.dumps(body), {"Content-Type": ctype})
            return conn.getresponse().status
        finally:
            conn.close()

    chain.json("POST", "/api/v1/nodes", {"metadata": {"name": "someone-else"}})
    merge = "application/merge-patch+json"
    assert call("PATCH", f"/api/v1/nodes/{NODE}/status", {"status": {"phase": "x"}}, merge) == 200
    assert call("PATCH", "/api/v1/nodes/someone-else/status", {"status": {"phase": "x"}}, merge) == 403
    assert call("PATCH", "/api/v1/nodes/someone-else", {"metadata": {"labels": {"a": "b"}}}, merge) == 403
    assert call("POST", "/api/v1/namespaces/default/pods", {
        "metadata": {"name": "sneaky"}, "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "i"}]}}) == 403
    assert call("PATCH", "/api/v1/namespaces/default/pods/app/status", {"status": {"message": "ok"}}, merge) == 200
    assert call("GET", "/api/v1/namespaces/default/pods/app/log", None) == 403
    assert call("DELETE", "/api/v1/namespaces/default/configmaps/x", None) == 403
