"""Deployments and DaemonSets with real agents running real pods (process
runtime) in a lab: a server (whose embedded agent is a node) and one agent on
a WAN. Pods become Ready because their kubelets say so, not the test.

One small lab serves the module; kubectl 1.33 drives it through the server's
published port.
"""
from __future__ import annotations

import json
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
    with server_and_agent("apps", tmp_path_factory.mktemp("apps-lab")) as kubectl:
        yield kubectl


def test_deployment_pods_run_and_become_ready(kc: LabKubectl) -> None:
    manifest = json.loads(kc("create", "deployment", "web", "--image=debian:12", "--replicas=2", "--dry-run=client",
                             "-o", "json", "--", "sleep", "3600").stdout)
    # sleep as a pod's PID 1 ignores SIGTERM: a short grace keeps the deletes quick.
    manifest["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 2
    kc.apply(manifest)
    out = kc("rollout", "status", "deployment/web", "--timeout=120s", timeout=130).stdout
    assert 'deployment "web" successfully rolled out' in out
    pods = [p for p in kc.json("get", "pods", "-l", "app=web")["items"] if not p["metadata"].get("deletionTimestamp")]
    assert len(pods) == 2
    for pod in pods:
        assert pod["status"]["phase"] == "Running" and pod["status"]["containerStatuses"][0]["ready"] is True
        assert pod["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"
    # A new template rolls to new pods that the kubelets report Ready.
    kc("set", "image", "deployment/web", "debian=debian:12-slim")
    kc("rollout", "status", "deployment/web", "--timeout=120s", timeout=130)
    live = [p for p in kc.json("get", "pods", "-l", "app=web")["items"] if not p["metadata"].get("deletionTimestamp")]
    assert sorted(p["spec"]["containers"][0]["image"] for p in live) == ["debian:12-slim", "debian:12-slim"]
    # Background cascade: the kubelets stop the pods and the API forgets them.
    kc("delete", "deployment", "web", "--timeout=60s", timeout=70)
    deadline = time.monotonic() + 60
    while kc.json("get", "pods,rs", "-l", "app=web")["items"]:
        assert time.monotonic() < deadline, "pods and replicasets of a deleted deployment remain"
        time.sleep(0.5)


def test_daemonset_runs_on_every_node(kc: LabKubectl) -> None:
    manifest = {
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agentd"},
        "spec": {"selector": {"matchLabels": {"app": "agentd"}},
                 "template": {"metadata": {"labels": {"app": "agentd"}},
                              "spec": {"terminationGracePeriodSeconds": 2,
                                       "containers": [{"name": "main", "image": "debian:12", "command": ["sleep", "3600"]}]}}},
    }
    kc.apply(manifest)
    out = kc("rollout", "status", "daemonset/agentd", "--timeout=120s", timeout=130).stdout
    assert 'daemon set "agentd" successfully rolled out' in out
    pods = kc.json("get", "pods", "-l", "app=agentd")["items"]
    assert sorted(p["spec"]["nodeName"] for p in pods) == ["edge", "server"]
    assert all(p["status"]["phase"] == "Running" for p in pods)
    ds = kc.json("get", "ds", "agentd")["status"]
    assert ds["desiredNumberScheduled"] == ds["numberReady"] == ds["numberAvailable"] == 2
