"""A Job whose pod really runs, on a real agent (process runtime) in a lab:
the kubelet reports the pod Succeeded, the Job controller completes the Job,
and ``kubectl logs job/x`` reads the pod's output through the node's tunnel.

kubectl 1.33 drives the lab through the server's published port.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgectl.lab import Lab
from edgectl.lab import cluster

pytestmark = [pytest.mark.lab, pytest.mark.slow]

KUBECTL = Path("/usr/lib/google-cloud-sdk/bin/kubectl.1.33")
if os.geteuid() != 0 or not KUBECTL.exists():
    pytest.skip("needs root (network namespaces) and kubectl 1.33", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Kubectl:
    def __init__(self, lab: Lab, cache: Path) -> None:
        self.kubeconfig = cluster.kubeconfig_for(lab)
        self.cache = cache

    def __call__(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([str(KUBECTL), "--kubeconfig", str(self.kubeconfig), "--cache-dir", str(self.cache), *args],
                             capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {res.returncode}: {res.stderr.strip()}")
        return res

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json").stdout)


@pytest.fixture(scope="module")
def kc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kubectl]:
    doc = {
        "name": f"t-batch-{os.getpid() % 100000}",
        "networks": {"wan": {"cidr": "198.18.0.0/24"}},
        "nodes": {
            "server": {"kind": "server", "networks": {"wan": "198.18.0.10"}, "publish": [f"6443:{free_port()}"]},
            "edge": {"kind": "agent", "networks": {"wan": "198.18.0.20"}},
        },
    }
    with Lab.up(doc) as lab:
        kc = Kubectl(lab, tmp_path_factory.mktemp("batch-lab"))
        deadline = time.monotonic() + 60
        while True:
            nodes = kc.json("get", "nodes")["items"]
            if len(nodes) == 2 and all(cluster.node_ready(n) for n in nodes):
                break
            assert time.monotonic() < deadline, f"nodes not ready: {[n['metadata']['name'] for n in nodes]}"
            time.sleep(0.5)
        yield kc


def test_job_pod_runs_completes_and_logs(kc: Kubectl) -> None:
    out = kc("create", "job", "hello", "--image=debian:12", "--", "sh", "-c", "echo done").stdout
    assert "job.batch/hello created" in out
    out = kc("wait", "--for=condition=complete", "job/hello", "--timeout=120s", timeout=130).stdout
    assert "job.batch/hello condition met" in out
    job = kc.json("get", "job", "hello")
    assert job["status"]["succeeded"] == 1 and "failed" not in job["status"]
    pods = kc.json("get", "pods", "-l", "batch.kubernetes.io/job-name=hello")["items"]
    assert len(pods) == 1
    pod = pods[0]
    assert pod["status"]["phase"] == "Succeeded"
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    assert kc("logs", "job/hello").stdout.strip() == "done"
    # Deleting the Job takes its finished pod along (background cascade).
    kc("delete", "job", "hello")
    deadline = time.monotonic() + 60
    while kc.json("get", "pods", "-l", "batch.kubernetes.io/job-name=hello")["items"]:
        assert time.monotonic() < deadline, "the deleted job's pod remains"
        time.sleep(0.5)


def test_indexed_job_pods_see_their_index(kc: Kubectl) -> None:
    manifest = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "shard"},
                "spec": {"completions": 3, "parallelism": 3, "completionMode": "Indexed",
                         "template": {"spec": {"restartPolicy": "Never", "containers": [
                             {"name": "main", "image": "debian:12",
                              "command": ["sh", "-c", "echo shard=$JOB_COMPLETION_INDEX"]}]}}}}
    subprocess.run([str(KUBECTL), "--kubeconfig", str(kc.kubeconfig), "--cache-dir", str(kc.cache), "apply", "-f", "-"],
                   input=json.dumps(manifest), capture_output=True, text=True, check=True, timeout=30)
    kc("wait", "--for=condition=complete", "job/shard", "--timeout=120s", timeout=130)
    assert kc.json("get", "job", "shard")["status"]["completedIndexes"] == "0-2"
    outputs = sorted(kc("logs", p["metadata"]["name"]).stdout.strip()
                     for p in kc.json("get", "pods", "-l", "batch.kubernetes.io/job-name=shard")["items"])
    assert outputs == ["shard=0", "shard=1", "shard=2"], outputs


def test_failing_job_reports_backoff_limit(kc: Kubectl) -> None:
    manifest = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "boom"},
                "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [
                    {"name": "main", "image": "debian:12", "command": ["sh", "-c", "echo failing; exit 3"]}]}}}}
    subprocess.run([str(KUBECTL), "--kubeconfig", str(kc.kubeconfig), "--cache-dir", str(kc.cache), "apply", "-f", "-"],
                   input=json.dumps(manifest), capture_output=True, text=True, check=True, timeout=30)
    kc("wait", "--for=condition=failed", "job/boom", "--timeout=120s", timeout=130)
    conds = {c["type"]: c for c in kc.json("get", "job", "boom")["status"]["conditions"]}
    assert conds["Failed"]["reason"] == "BackoffLimitExceeded"
    pod = kc.json("get", "pods", "-l", "batch.kubernetes.io/job-name=boom")["items"][0]
    assert pod["status"]["phase"] == "Failed"
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3
    assert kc("logs", "job/boom").stdout.strip() == "failing"


def test_on_failure_restarts_count_against_backoff_limit(kc: Kubectl) -> None:
    """With restartPolicy OnFailure the kubelet restarts the container in place;
    the restarts it reports are what exhausts backoffLimit, and the Job then
    stops its pod."""
    manifest = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "retry"},
                "spec": {"backoffLimit": 1, "template": {"spec": {
                    "restartPolicy": "OnFailure", "terminationGracePeriodSeconds": 2,
                    "containers": [{"name": "main", "image": "debian:12", "command": ["sh", "-c", "exit 2"]}]}}}}
    subprocess.run([str(KUBECTL), "--kubeconfig", str(kc.kubeconfig), "--cache-dir", str(kc.cache), "apply", "-f", "-"],
                   input=json.dumps(manifest), capture_output=True, text=True, check=True, timeout=30)
    kc("wait", "--for=condition=failed", "job/retry", "--timeout=120s", timeout=130)
    st = kc.json("get", "job", "retry")["status"]
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Failed"]["reason"] == "BackoffLimitExceeded" and "succeeded" not in st
    deadline = time.monotonic() + 60
    while kc.json("get", "pods", "-l", "batch.kubernetes.io/job-name=retry")["items"]:
        assert time.monotonic() < deadline, "the failed job's restarting pod was not stopped"
        time.sleep(0.5)
