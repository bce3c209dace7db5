"""Secret volumes on tmpfs with a real `edgectl agent` in a lab node, and an
agent stopped right after it starts (while it adopts its pods) exits on
SIGTERM at once.

The lab node has its own private mount namespace: the tmpfs is visible
there and never in this machine's root mount namespace, where the volume
dir stays an empty directory."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from edgectl.lab import cluster

pytestmark = [pytest.mark.lab, pytest.mark.slow]

KUBECTL = Path("/usr/lib/google-cloud-sdk/bin/kubectl.1.33")
TOPOLOGY = {
    "name": "vtmp",
    "networks": {"wan": {"cidr": "198.18.0.0/24"}},
    "nodes": {
        "server": {"kind": "server", "networks": {"wan": "198.18.0.10"}, "publish": ["6443:16444"]},
        "agent1": {"kind": "agent", "networks": {"wan": "198.18.0.21"}},
    },
}
DATA = "/var/lib/edgectl/agent"  # the agent's data dir inside the node

if os.geteuid() != 0 or not KUBECTL.exists():
    pytest.skip("needs root (network namespaces) and kubectl 1.33", allow_module_level=True)


def until(check: Callable[[], Any], want: Any, *, timeout: float = 45.0) -> None:
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        got = check()
        if got == want:
            return
        time.sleep(0.3)
    raise AssertionError(f"never saw {want!r}; last {got!r}")


def test_secret_tmpfs_in_the_node_only_and_sigterm_during_adoption(lab_factory: Any, tmp_path: Path) -> None:
    lab = lab_factory(TOPOLOGY, prefix="vtmp")
    kubeconfig = cluster.kubeconfig_for(lab)

    def kubectl(*args: str, input: str | None = None) -> str:
        res = subprocess.run([str(KUBECTL), "--kubeconfig", str(kubeconfig), "--cache-dir", str(tmp_path / "cache"),
                              *args], capture_output=True, text=True, input=input, timeout=30)
        assert res.returncode == 0, f"kubectl {' '.join(args)}: {res.stderr.strip()}"
        return res.stdout

    def in_node(script: str) -> str:
        return lab.exec("agent1", script, check=True).stdout.strip()

    def pod_status(name: str) -> dict[str, Any]:
        return json.loads(kubectl("get", "pod", name, "-o", "json")).get("status", {})

    kubectl("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}, "stringData": {"pw": "s3cret"}}))
    names = [f"sec{i}" for i in range(3)]  # several pods: several CNI CHECKs at adoption
    for name in names:
        kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeSelector": {"kubernetes.io/hostname": "agent1"}, "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "main", "image": "debian:12", "command": ["sleep", "600"]}],
                     "volumes": [{"name": "sec", "secret": {"secretName": "db"}}]}}))
    for name in names:
        until(lambda: pod_status(name).get("phase"), "Running")
    uid = json.loads(kubectl("get", "pod", "sec0", "-o", "json"))["metadata"]["uid"]
    vol = f"{DATA}/pods/{uid}/volumes/sec"
    assert in_node(f"findmnt -n -o FSTYPE,OPTIONS {vol}").split()[0] == "tmpfs"
    assert in_node(f"cat {vol}/pw") == "s3cret"
    # This machine's root mount namespace sees neither the mount nor the secret.
    host_vol = cluster.node_dir(lab, "agent1") / "var-lib-edgectl" / "agent" / "pods" / uid / "volumes" / "sec"
    assert str(host_vol) not in Path("/proc/self/mountinfo").read_text()
    assert host_vol.is_dir() and list(host_vol.iterdir()) == []
    container = pod_status("sec0")["containerStatuses"][0]["containerID"]

    # SIGTERM the moment a restarted agent logs its first adopted pod, while
    # the CNI CHECKs of the adopted sandboxes run: it must exit each time
    # (stop_role fails after 10 s; this used to hang in asyncio.run's teardown).
    log = cluster.log_path(lab, "agent1")
    for _ in range(3):
        cluster.stop_role(lab, "agent1", timeout=10)
        offset = log.stat().st_size
        cluster.start_role(lab, "agent1", wait=False)
        deadline = time.monotonic() + 30
        while b"adopted pod" not in log.read_bytes()[offset:]:
            assert time.monotonic() < deadline, "the restarted agent never adopted its pods"
            time.sleep(0.002)
        cluster.stop_role(lab, "agent1", timeout=10)
    cluster.start_role(lab, "agent1")

    # The adopted pod keeps its container and its tmpfs; deletion unmounts it.
    until(lambda: pod_status("sec0")["containerStatuses"][0]["containerID"], container)
    assert in_node(f"findmnt -n -o FSTYPE {vol}") == "tmpfs"
    kubectl("delete", "pod", *names, "--grace-period=0", "--wait=true", "--timeout=30s")
    until(lambda: in_node(f"grep -c ' {DATA}/pods/' /proc/self/mountinfo || true"), "0")
    until(lambda: in_node(f"test -e {DATA}/pods/{uid} && echo left || echo gone"), "gone")
