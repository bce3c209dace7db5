"""Issue 5 end to end: nat-edge with real `edgectl server` and `edgectl agent`
processes in lab nodes, driven by real kubectl from the host through the
server's published port.

One lab serves the whole module (it is up in ~2 s). Pods are pinned to
``agent1``, which sits behind router1's NAT with inbound connections dropped:
every logs/exec/port-forward call has to go through the agent's tunnel.
"""
from __future__ import annotations

import ipaddress
import json
import os
import pty
import re
import select
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgectl.lab import Lab
from edgectl.lab import cluster
from edgectl.lab.topology import load

pytestmark = [pytest.mark.lab, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
KUBECTL_DIR = Path("/usr/lib/google-cloud-sdk/bin")
VERSIONS = ["1.27", "1.30", "1.33"]
NODE = "agent1"  # behind NAT
PY = "/usr/bin/python3"

if os.geteuid() != 0 or not (KUBECTL_DIR / "kubectl.1.33").exists():
    pytest.skip("needs root (network namespaces) and kubectl 1.27/1.30/1.33", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    def __init__(self, lab: Lab, tmp: Path) -> None:
        self.lab = lab
        self.kubeconfig = cluster.kubeconfig_for(lab)
        self.cache = tmp / "kube-cache"

    def kubectl(self, *args: str, version: str = "1.33", input: str | None = None, check: bool = True,
                timeout: float = 30) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(self.argv(*args, version=version), capture_output=True, text=True, input=input,
                             timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {res.returncode}: {res.stderr.strip()}")
        return res

    def argv(self, *args: str, version: str = "1.33") -> list[str]:
        return [str(KUBECTL_DIR / f"kubectl.{version}"), "--kubeconfig", str(self.kubeconfig),
                "--cache-dir", str(self.cache / version), *args]

    def get(self, kind: str, name: str, **kw: Any) -> dict[str, Any]:
        return json.loads(self.kubectl("get", kind, name, "-o", "json", **kw).stdout)

    def apply_pod(self, name: str, command: list[str], *, node: str = NODE, grace: int = 2) -> dict[str, Any]:
        manifest = {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeSelector": {"kubernetes.io/hostname": node}, "terminationGracePeriodSeconds": grace,
                     "containers": [{"name": "main", "image": "debian:12", "command": command}]},
        }
        self.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        return self.wait_running(name)

    def wait_running(self, name: str, timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            pod = self.get("pod", name)
            if pod.get("status", {}).get("phase") == "Running" and pod["status"].get("podIP"):
                return pod
            if time.monotonic() > deadline:
                raise AssertionError(f"pod {name} not Running after {timeout}s: {json.dumps(pod.get('status'))}")
            time.sleep(0.2)


@pytest.fixture(scope="module")
def kc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    doc = load(ROOT / "lab" / "examples" / "nat-edge.yaml").to_doc()
    doc["name"] = f"t-agent-{os.getpid() % 100000}"
    doc["nodes"]["server"]["publish"] = [f"6443:{free_port()}"]
    with Lab.up(doc) as lab:
        c = Cluster(lab, tmp_path_factory.mktemp("agent-lab"))
        # One long-running pod serves most tests: prints numbered lines, serves HTTP on 8080.
        c.apply_pod("web", ["sh", "-c", f"{PY} -m http.server 8080 --bind 0.0.0.0 >/dev/null 2>&1 & "
                                         "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.3; done"])
        yield c


# ---- join and scheduling ---------------------------------------------------------------


def test_agents_behind_nat_join_and_are_ready(kc: Cluster) -> None:
    nodes = {n["metadata"]["name"]: n for n in json.loads(kc.kubectl("get", "nodes", "-o", "json").stdout)["items"]}
    assert set(nodes) == {"server", "wan-agent", "agent1", "agent2"}
    for name, node in nodes.items():
        assert cluster.node_ready(node), name
        assert node["spec"].get("podCIDR"), name
        labels = node["metadata"]["labels"]
        assert labels["kubernetes.io/hostname"] == name and labels["kubernetes.io/os"] == "linux"
    internal = {n: [a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"] for n, node in nodes.items()}
    assert internal["agent1"] == ["192.168.1.10"] and internal["agent2"] == ["192.168.2.10"]
    assert "node-role.kubernetes.io/control-plane" in nodes["server"]["metadata"]["labels"]
    wide = kc.kubectl("get", "nodes", "-o", "wide").stdout
    assert re.search(r"^agent1\s+Ready\s+<none>.*192\.168\.1\.10", wide, re.M), wide
    # The lease is renewed by the agent itself (10 s period).
    lease = json.loads(kc.kubectl("get", "lease", "-n", "kube-node-lease", "agent1", "-o", "json").stdout)
    assert lease["spec"]["holderIdentity"] == "agent1"


def test_pod_runs_on_natted_node_with_ip_from_its_pod_cidr(kc: Cluster) -> None:
    pod = kc.get("pod", "web")
    node = kc.get("node", NODE)
    assert pod["spec"]["nodeName"] == NODE
    assert ipaddress.ip_address(pod["status"]["podIP"]) in ipaddress.ip_network(node["spec"]["podCIDR"])
    cs = pod["status"]["containerStatuses"][0]
    assert cs["state"].get("running") and cs["containerID"].startswith("process://")
    assert pod["status"]["hostIP"] == "192.168.1.10"
    # The agent reports what it did as kubelet Events (kubectl describe shows them).
    described = kc.kubectl("describe", "pod", "web").stdout
    assert re.search(r"Normal\s+Started\s+.*kubelet\s+Started container main", described), described[-800:]


def test_kubectl_run_lands_on_the_other_nat_site(kc: Cluster) -> None:
    overrides = json.dumps({"spec": {"nodeSelector": {"kubernetes.io/hostname": "agent2"}}})
    kc.kubectl("run", "runner", "--image=busybox", "--restart=Never", f"--overrides={overrides}",
               "--command", "--", "sh", "-c", "echo started-$((6*7)); sleep 3600")
    pod = kc.wait_running("runner")
    assert pod["spec"]["nodeName"] == "agent2"
    assert ipaddress.ip_address(pod["status"]["podIP"]) in ipaddress.ip_network(kc.get("node", "agent2")["spec"]["podCIDR"])
    deadline = time.monotonic() + 10
    while "started-42" not in (out := kc.kubectl("logs", "runner").stdout) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "started-42" in out
    kc.kubectl("delete", "pod", "runner", "--grace-period=0", "--wait=false")


# ---- logs, exec, port-forward through the tunnel ---------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_logs_and_follow(kc: Cluster, version: str) -> None:
    out = kc.kubectl("logs", "web", version=version).stdout
    assert re.search(r"^line \d+$", out, re.M), out
    last = max(int(n) for n in re.findall(r"^line (\d+)$", out, re.M))
    proc = subprocess.Popen(kc.argv("logs", "-f", "--tail=1", "web", version=version), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        seen: list[int] = []
        deadline = time.monotonic() + 10
        assert proc.stdout is not None
        while time.monotonic() < deadline and not any(n > last + 2 for n in seen):
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if ready:
                line = proc.stdout.readline()
                if m := re.match(r"line (\d+)", line):
                    seen.append(int(m.group(1)))
        assert any(n > last + 2 for n in seen), f"logs -f saw {seen}, last before was {last}"
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("version", VERSIONS)
def test_exec_output_and_exit_code(kc: Cluster, version: str) -> None:
    res = kc.kubectl("exec", "web", "--", "cat", "/etc/hostname", version=version)
    assert res.stdout.strip() == "web"
    res = kc.kubectl("exec", "web", "--", "sh", "-c", "exit 3", version=version, check=False)
    assert res.returncode == 3, res.stderr


@pytest.mark.parametrize("version", VERSIONS)
def test_exec_stdin(kc: Cluster, version: str) -> None:
    res = kc.kubectl("exec", "-i", "web", "--", "sh", "-c", "tr a-z A-Z", version=version, input="piped through\n")
    assert res.stdout == "PIPED THROUGH\n"


@pytest.mark.parametrize("version", VERSIONS)
def test_exec_tty(kc: Cluster, version: str) -> None:
    master, slave = pty.openpty()
    proc = subprocess.Popen(kc.argv("exec", "-it", "web", "--", "sh", "-c", "tty; stty size; echo done-$((40+2))",
                                    version=version), stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    out = b""
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and b"done-42" not in out:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    out += os.read(master, 4096)
                except OSError:
                    break
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    text = out.decode(errors="replace")
    assert "/dev/pts/" in text, text
    assert "done-42" in text, text


@pytest.mark.parametrize("version", VERSIONS)
def test_port_forward_reaches_server_in_pod(kc: Cluster, version: str) -> None:
    proc = subprocess.Popen(kc.argv("port-forward", "pod/web", ":8080", version=version), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = None
        deadline = time.monotonic() + 15
        while port is None and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if ready:
                m = re.search(r"Forwarding from 127\.0\.0\.1:(\d+)", proc.stdout.readline())
                port = int(m.group(1)) if m else None
        assert port, "kubectl port-forward did not start"
        for _ in range(2):  # two connections over the same forward
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/etc/", timeout=10) as resp:
                assert resp.status == 200 and b"hostname" in resp.read()
    finally:
        proc.kill()
        proc.wait()


def test_two_pods_on_one_node_reach_each_other(kc: Cluster) -> None:
    web_ip = kc.get("pod", "web")["status"]["podIP"]
    kc.apply_pod("client", ["sleep", "3600"])
    code = f"import urllib.request; print(urllib.request.urlopen('http://{web_ip}:8080/etc/', timeout=5).status)"
    res = kc.kubectl("exec", "client", "--", PY, "-c", code)
    assert res.stdout.strip() == "200"
    kc.kubectl("delete", "pod", "client", "--grace-period=0", "--wait=false")


def test_delete_stops_processes_and_frees_ip(kc: Cluster) -> None:
    marker = f"edgectl-del-{os.getpid()}"
    pod = kc.apply_pod("victim", [PY, "-c", "import time; time.sleep(3600)", marker], grace=1)
    ip = pod["status"]["podIP"]
    leases = cluster.node_dir(kc.lab, NODE) / "var-lib-edgectl" / "agent" / "cni" / "networks"
    assert list(leases.glob(f"*/{ip}")), "no host-local lease for the pod IP"
    deadline = time.monotonic() + 10  # Running is reported as the shim starts; the exec follows
    while kc.lab.exec(NODE, ["pgrep", "-f", marker]).returncode != 0:
        assert time.monotonic() < deadline, "pod process never showed up"
        time.sleep(0.1)
    kc.kubectl("delete", "pod", "victim", timeout=30)  # waits until the agent confirmed the deletion
    assert kc.lab.exec(NODE, ["pgrep", "-f", marker]).returncode == 1, "pod process still running"
    assert not list(leases.glob(f"*/{ip}")), "pod IP still leased"


# ---- restarts and tunnel outages ------------------------------------------------------------


def test_agent_restart_keeps_identity_and_pods(kc: Cluster) -> None:
    before_node = kc.get("node", NODE)
    before_pod = kc.get("pod", "web")
    old = cluster.role_pids(kc.lab, NODE)
    cluster.stop_role(kc.lab, NODE)
    cluster.start_role(kc.lab, NODE)
    assert cluster.role_pids(kc.lab, NODE) and cluster.role_pids(kc.lab, NODE) != old
    deadline = time.monotonic() + 20
    while True:  # the new agent is back once exec goes through its tunnel
        res = kc.kubectl("exec", "web", "--", "cat", "/etc/hostname", check=False)
        if res.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert res.stdout.strip() == "web", res.stderr
    after_node, after_pod = kc.get("node", NODE), kc.get("pod", "web")
    assert after_node["metadata"]["uid"] == before_node["metadata"]["uid"]
    assert after_node["spec"]["podCIDR"] == before_node["spec"]["podCIDR"]
    b, a = before_pod["status"]["containerStatuses"][0], after_pod["status"]["containerStatuses"][0]
    assert a["containerID"] == b["containerID"] and a["restartCount"] == b["restartCount"] and a["state"].get("running")
    assert after_pod["status"]["podIP"] == before_pod["status"]["podIP"]


def test_tunnel_down_gives_clear_error_then_recovers(kc: Cluster) -> None:
    lab = kc.lab
    server_ip = lab.node_ip("server", "wan")
    # New connections to the server are refused (inside agent1's own namespace
    # only); then the live ones are aborted, which resets them on the server too.
    rule = ["OUTPUT", "-d", server_ip, "-p", "tcp", "--dport", "6443", "--syn", "-j", "REJECT", "--reject-with", "tcp-reset"]
    lab.exec(NODE, ["iptables", "-I", *rule], check=True)
    try:
        lab.exec(NODE, ["ss", "-K", "dst", server_ip, "dport", "=", "6443"], check=True)
        deadline = time.monotonic() + 15
        while True:
            res = kc.kubectl("exec", "web", "--", "true", check=False)
            if res.returncode != 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert res.returncode != 0
        assert 'node tunnel not connected: cannot reach node "agent1"' in res.stderr, res.stderr
    finally:
        lab.exec(NODE, ["iptables", "-D", *rule], check=True)
    deadline = time.monotonic() + 40  # reconnect backoff
    while True:
        res = kc.kubectl("exec", "web", "--", "cat", "/etc/hostname", check=False)
        if res.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert res.stdout.strip() == "web", f"{res.stderr}\nagent log:\n{cluster.tail(cluster.log_path(lab, NODE), 30)}"


def test_server_cannot_connect_to_agent_directly(kc: Cluster) -> None:
    lab = kc.lab
    # agent1 is behind a NAT that drops inbound connections...
    assert lab.probe("server", "agent1", 10250, timeout=0.5).outcome == "blocked"
    assert lab.probe("server", "agent1", 10250, listen=False, timeout=0.5).outcome == "blocked"
    # ...and even a node on the WAN exposes no kubelet: it listens on loopback only.
    assert lab.probe("server", "wan-agent", 10250, timeout=0.5).outcome == "refused"
    # The only path is the tunnel, and it works.
    assert kc.kubectl("exec", "web", "--", "cat", "/etc/hostname").stdout.strip() == "web"


def test_default_node_ip_is_the_default_route_source_else_towards_the_server(kc: Cluster) -> None:
    code = "import sys; from edgectl.agent.config import default_node_ip; print(default_node_ip(sys.argv[1]))"
    py = sys.executable
    # agent1 has a default route via router1: its source address.
    res = kc.lab.exec(NODE, [py, "-c", code, "https://198.18.0.10:6443"], check=True)
    assert res.stdout.strip() == "192.168.1.10"
    # wan-agent has no default route: the source address towards the server.
    res = kc.lab.exec("wan-agent", [py, "-c", code, "https://198.18.0.10:6443"], check=True)
    assert res.stdout.strip() == "198.18.0.20"
    # The server's embedded agent talks to 127.0.0.1: the node's first global address.
    res = kc.lab.exec("server", [py, "-c", code, "https://127.0.0.1:6443"], check=True)
    assert res.stdout.strip() == "198.18.0.10"


def test_server_restart_agents_come_back_by_themselves(kc: Cluster) -> None:
    """SIGTERM ends `edgectl server` and its embedded agent cleanly; after a restart
    the agents reconnect on their own and the pods are still there."""
    uid = kc.get("pod", "web")["metadata"]["uid"]
    t0 = time.monotonic()
    cluster.stop_role(kc.lab, "server", timeout=10)
    assert time.monotonic() - t0 < 10
    cluster.start_role(kc.lab, "server")
    deadline = time.monotonic() + 45
    while True:
        res = kc.kubectl("exec", "web", "--", "cat", "/etc/hostname", check=False)
        if res.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert res.stdout.strip() == "web", res.stderr
    assert kc.get("pod", "web")["metadata"]["uid"] == uid
    nodes = json.loads(kc.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    assert all(cluster.node_ready(n) for n in nodes), [n["metadata"]["name"] for n in nodes if not cluster.node_ready(n)]
