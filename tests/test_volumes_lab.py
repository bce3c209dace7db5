"""configMap/secret/projected volumes end to end: a real `edgectl server` and
`edgectl agent` in a lab, driven by real kubectl. The agent reads the objects
as the node (the NodeAuthorizer must allow the projected Secret), writes the
files, reports FailedMount while an object is missing, and carries a
ConfigMap update into the running container."""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from edgectl.lab import cluster

pytestmark = [pytest.mark.lab, pytest.mark.slow]

KUBECTL = Path("/usr/lib/google-cloud-sdk/bin/kubectl.1.33")
TOPOLOGY = {
    "name": "vol",
    "networks": {"wan": {"cidr": "198.18.0.0/24"}},
    "nodes": {
        "server": {"kind": "server", "networks": {"wan": "198.18.0.10"}, "publish": ["6443:16443"]},
        "agent1": {"kind": "agent", "networks": {"wan": "198.18.0.21"}},
    },
}

if os.geteuid() != 0 or not KUBECTL.exists():
    pytest.skip("needs root (network namespaces) and kubectl 1.33", allow_module_level=True)


def test_volumes_through_server_and_agent(lab_factory: Any, tmp_path: Path) -> None:
    lab = lab_factory(TOPOLOGY, prefix="vol")
    kubeconfig = cluster.kubeconfig_for(lab)
    mnt = Path(f"/tmp/edgectl-vole2e-{secrets.token_hex(4)}")  # the lab nodes share the host's /tmp

    def kubectl(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([str(KUBECTL), "--kubeconfig", str(kubeconfig), "--cache-dir", str(tmp_path / "cache"),
                              *args], capture_output=True, text=True, input=input, timeout=30)
        if check and res.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {res.returncode}: {res.stderr.strip()}")
        return res

    def apply(obj: dict[str, Any]) -> None:
        kubectl("apply", "-f", "-", input=json.dumps(obj))

    def until(check: Callable[[], Any], want: Any, *, timeout: float = 45.0) -> None:
        deadline = time.monotonic() + timeout
        got = None
        while time.monotonic() < deadline:
            got = check()
            if got == want:
                return
            time.sleep(0.3)
        raise AssertionError(f"never saw {want!r}; last {got!r}")

    def pod_phase() -> str:
        return json.loads(kubectl("get", "pod", "vols", "-o", "json").stdout).get("status", {}).get("phase", "")

    def cat(path: str) -> str:
        res = kubectl("exec", "vols", "--", "cat", str(mnt / path), check=False)
        return res.stdout if res.returncode == 0 else f"exit {res.returncode}: {res.stderr.strip()}"

    try:
        apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}, "stringData": {"pw": "s3cret"}})
        apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "vols", "labels": {"tier": "front"}}, "spec": {
            "nodeSelector": {"kubernetes.io/hostname": "agent1"}, "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "image": "debian:12", "command": ["sleep", "300"], "volumeMounts": [
                {"name": "cfg", "mountPath": str(mnt / "cfg")}, {"name": "proj", "mountPath": str(mnt / "proj")}]}],
            "volumes": [
                {"name": "cfg", "configMap": {"name": "app"}},
                {"name": "proj", "projected": {"defaultMode": 0o400, "sources": [
                    {"secret": {"name": "db", "items": [{"key": "pw", "path": "creds/pw"}]}},
                    {"downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}]}}]}})
        # The ConfigMap does not exist yet: ContainerCreating and a FailedMount event.
        until(lambda: bool(re.search(r'Warning\s+FailedMount\s+.*MountVolume.SetUp failed for volume "cfg" : '
                                     r'configmap "app" not found', kubectl("describe", "pod", "vols").stdout)), True)
        pod = json.loads(kubectl("get", "pod", "vols", "-o", "json").stdout)
        assert pod["status"]["phase"] == "Pending"
        assert pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ContainerCreating"

        apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app"},
               "data": {"app.conf": "level=info"}, "binaryData": {"blob": "AAH/"}})
        until(pod_phase, "Running")
        assert cat("cfg/app.conf") == "level=info"
        assert kubectl("exec", "vols", "--", "od", "-An", "-tx1", str(mnt / "cfg/blob")).stdout.split() == \
            ["00", "01", "ff"]
        assert cat("proj/creds/pw") == "s3cret"  # the node may read the Secret through the projected source
        assert cat("proj/labels") == 'tier="front"'
        mode = kubectl("exec", "vols", "--", "stat", "-L", "-c", "%a", str(mnt / "proj/creds/pw")).stdout.strip()
        assert mode == "400"
        write = kubectl("exec", "vols", "--", "sh", "-c", f"echo x > {mnt}/cfg/new", check=False)
        assert write.returncode != 0 and "Read-only file system" in write.stderr

        apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app"},
               "data": {"app.conf": "level=debug"}})
        until(lambda: cat("cfg/app.conf"), "level=debug")  # the agent refreshes every 10 s
        uid = json.loads(kubectl("get", "pod", "vols", "-o", "json").stdout)["metadata"]["uid"]
        pod_dir = cluster.node_dir(lab, "agent1") / "var-lib-edgectl" / "agent" / "pods" / uid
        assert (pod_dir / "volumes" / "cfg" / "..data").is_symlink()
        kubectl("delete", "pod", "vols", "--grace-period=0", "--wait=true", "--timeout=30s")
        until(lambda: (pod_dir.exists(), sorted(os.listdir(mnt)) if mnt.exists() else []), (False, []))
    finally:
        shutil.rmtree(mnt, ignore_errors=True)
