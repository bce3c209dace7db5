"""QA: pod features the process runtime cannot honour are refused with a clear
reason instead of being dropped silently (the container used to run without its
valueFrom variables, and a hostNetwork pod ran in its own network namespace)."""
from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from edgectl.agent.runtime.interface import ContainerStartError, Sandbox
from edgectl.agent.runtime.process import ProcessRuntime, RuntimeConfig
from edgectl.agent.runtime.spec import parse_pod


def pod(**spec: object) -> dict:
    container = {"name": "c", "image": "x", "command": ["true"]}
    container.update(spec.pop("container", {}))  # type: ignore[arg-type]
    return {"metadata": {"uid": "u1", "name": "p", "namespace": "default"},
            "spec": {"containers": [container], **spec}}


def start(tmp_path: Path, doc: dict) -> None:
    rt = ProcessRuntime(RuntimeConfig(data_dir=tmp_path / "data", log_dir=tmp_path / "log",
                                      cni_conf_dir=tmp_path / "cni", netns_dir=tmp_path / "netns"))
    spec = parse_pod(doc)
    sandbox = Sandbox(id="s", netns_path=str(tmp_path / "netns" / "s"), ips=("10.42.0.9",), data={})
    asyncio.run(rt.start_container(spec, sandbox, spec.containers[0], restart_count=0, env={}))


@pytest.mark.parametrize("doc, fragment", [
    (pod(container={"env": [{"name": "FOO", "valueFrom": {"secretKeyRef": {"name": "s"}}}]}),
     "env FOO: valueFrom.secretKeyRef needs name and key"),
    (pod(container={"env": [{"name": "IP", "valueFrom": {"podRef": {}}}]}),
     "env IP: valueFrom must set exactly one of fieldRef"),
    (pod(container={"envFrom": [{"serviceRef": {"name": "cm"}}]}), "envFrom entries must set exactly one of"),
])
def test_unsupported_features_are_refused_before_anything_starts(tmp_path: Path, doc: dict, fragment: str) -> None:
    with pytest.raises(ContainerStartError) as info:
        start(tmp_path, doc)
    assert info.value.reason == "CreateContainerConfigError"
    assert fragment in str(info.value)
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("containers"))


def test_plain_values_still_parse() -> None:
    spec = parse_pod(pod(container={"env": [{"name": "A", "value": "1"}]}))
    assert spec.containers[0].unsupported == () and spec.containers[0].env[0].value == "1"
    assert spec.host_network is False
    assert parse_pod(pod(hostNetwork=True)).host_network is True  # run in the node's netns (docs/runtime.md)


@pytest.mark.lab
@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/lib/cni/bridge").exists(),
                    reason="needs root and containernetworking-plugins")
def test_deleting_a_pod_whose_container_never_started_is_announced() -> None:
    """`kubectl delete` of a CommandRequired pod hung: its status did not change on
    termination, so no status push reached the kubelet side, which confirms the
    deletion (DELETE grace 0) on a push. It stayed Terminating forever."""
    import shutil
    import tempfile
    import time
    import uuid

    from edgectl.agent.podsync import finished_terminating
    from edgectl.agent.runtime.manager import PodManager
    from edgectl.agent.runtime.nstest import run_in_node_namespace

    async def body(root: Path) -> None:
        changes: list[tuple[str, object]] = []
        mgr = PodManager(runtime=ProcessRuntime(RuntimeConfig(pod_cidr="10.42.9.0/24", data_dir=root / "data",
                                                              log_dir=root / "log", cni_conf_dir=root / "cni")),
                         data_dir=root / "data", on_change=lambda uid, st: changes.append((uid, st)),
                         resync_interval=0.2, host_ip="198.18.0.10")
        task = asyncio.create_task(mgr.run())
        doc = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "nocmd", "namespace": "default", "uid": str(uuid.uuid4())},
               "spec": {"containers": [{"name": "c", "image": "nginx"}], "terminationGracePeriodSeconds": 1}}
        uid = doc["metadata"]["uid"]
        mgr.sync([doc])
        deadline = time.monotonic() + 15
        while not ((st := mgr.status(uid)) and "waiting" in st["containerStatuses"][0]["state"]):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # settled: the same status is no longer re-published
        before = len(changes)
        doc["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        mgr.sync([doc])
        deadline = time.monotonic() + 10
        while not any(u == uid and st is not None and finished_terminating(doc, st) for u, st in changes[before:]):
            assert time.monotonic() < deadline, changes[before:]
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.6)
        assert len([c for c in changes[before:] if c[0] == uid]) == 1  # announced once, not every pass
        await mgr.close(stop_pods=True)
        await asyncio.wait_for(task, 5)

    root = Path(tempfile.mkdtemp(prefix="edgectl-qa-rt-"))
    try:
        run_in_node_namespace(lambda: body(root), data_dir=root / "data", timeout=60)
    finally:
        shutil.rmtree(root, ignore_errors=True)
