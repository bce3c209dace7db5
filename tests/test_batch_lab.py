"""A Job whose pod really runs, on a real agent (process runtime) in a lab:
the kubelet reports the pod Succeeded, the Job controller completes the Job,
and ``kubectl logs job/x`` reads the pod's output through the node's tunnel.

kubectl 1.33 drives the lab through the server's published port.
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from edgectl.lab.testing import KUBECTL_133, LabKubectl, server_and_agent

pytestmark = [pytest.mark.lab, pytest.mark.slow]

if os.geteuid() != 0 or not KUBECTL_133.exists():
    pytest.skip("needs root (network namespaces) and kubectl 1.33", allow_module_level=True)


@pytest.fixture(scope="module")
def kc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabKubectl]:
    with server_and_agent("batch", tmp_path_factory.mktemp("batch-lab")) as kubectl:
        yield kubectl


def test_job_pod_runs_completes_and_logs(kc: LabKubectl) -> None:
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


def test_indexed_job_pods_see_their_index(kc: LabKubectl) -> None:
    manifest = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "shard"},
                "spec": {"completions": 3, "parallelism": 3, "completionMode": "Indexed",
                         "template": {"spec": {"restartPolicy": "Never", "containers": [
                             {"name": "main", "image": "debian:12",
                              "command": ["sh", "-c", "echo shard=$JOB_COMPLETION_INDEX"]}]}}}}
    kc.apply(manifest)
    kc("wait", "--for=condition=complete", "job/shard", "--timeout=120s", timeout=130)
    assert kc.json("get", "job", "shard")["status"]["completedIndexes"] == "0-2"
    outputs = sorted(kc("logs", p["metadata"]["name"]).stdout.strip()
                     for p in kc.json("get", "pods", "-l", "batch.kubernetes.io/job-name=shard")["items"])
    assert outputs == ["shard=0", "shard=1", "shard=2"], outputs


def test_failing_job_reports_backoff_limit(kc: LabKubectl) -> None:
    manifest = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "boom"},
                "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [
                    {"name": "main", "image": "debian:12", "command": ["sh", "-c", "echo failing; exit 3"]}]}}}}
    kc.apply(manifest)
    kc("wait", "--for=condition=failed", "job/boom", "--timeout=120s", timeout=130)
    conds = {c["type"]: c for c in kc.json("get", "job", "boom")["status"]["conditions"]}
    assert conds["Failed"]["reason"] == "BackoffLimitExceeded"
    pod = kc.json("get", "pods", "-l", "batch.kubernetes.io/job-name=boom")["items"][0]
    assert pod["status"]["phase"] == "Failed"
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3
    assert kc("logs", "job/boom").stdout.strip() == "failing"


def test_on_failure_restarts_count_against_backoff_limit(kc: LabKubectl) -> None:
    """With restartPolicy OnFailure the kubelet restarts the container in place;
    the restarts it reports are what exhausts backoffLimit, and the Job then
    stops its pod."""
    manifest = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "retry"},
                "spec": {"backoffLimit": 1, "template": {"spec": {
                    "restartPolicy": "OnFailure", "terminationGracePeriodSeconds": 2,
                    "containers": [{"name": "main", "image": "debian:12", "command": ["sh", "-c", "exit 2"]}]}}}}
    kc.apply(manifest)
    kc("wait", "--for=condition=failed", "job/retry", "--timeout=120s", timeout=130)
    st = kc.json("get", "job", "retry")["status"]
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Failed"]["reason"] == "BackoffLimitExceeded" and "succeeded" not in st
    deadline = time.monotonic() + 60
    while kc.json("get", "pods", "-l", "batch.kubernetes.io/job-name=retry")["items"]:
        assert time.monotonic() < deadline, "the failed job's restarting pod was not stopped"
        time.sleep(0.5)
