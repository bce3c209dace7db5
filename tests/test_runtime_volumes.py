"""configMap, secret, downwardAPI and projected volumes in real containers (process
runtime + PodManager + real CNI plugins, in a throwaway node namespace)."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest

from edgectl.agent.runtime import crilog
from edgectl.agent.runtime.lifecycle import Backoff
from edgectl.agent.runtime.manager import PodManager
from edgectl.agent.runtime.nstest import run_in_node_namespace
from edgectl.agent.runtime.process import ProcessRuntime, RuntimeConfig
from edgectl.agent.runtime.volumes import StaticObjectFiles

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/lib/cni/bridge").exists(),
                       reason="needs root and containernetworking-plugins"),
]

POD_CIDR = "10.42.11.0/24"


class Node:
    def __init__(self, root: Path, **manager_args: Any) -> None:
        self.root = root
        config = RuntimeConfig(pod_cidr=POD_CIDR, data_dir=root / "data", log_dir=root / "log",
                               cni_conf_dir=root / "cni", node_ips=("198.18.0.11",), node_hostname="edge-vol")
        self.manager = PodManager(runtime=ProcessRuntime(config), data_dir=root / "data", backoff=Backoff(base=0.2),
                                  resync_interval=0.3, host_ip="198.18.0.11", volume_refresh_interval=0.3,
                                  allocatable={"cpu": "2", "memory": "1Gi"}, **manager_args)
        self.task = asyncio.create_task(self.manager.run())

    async def stop(self) -> None:
        await self.manager.close(stop_pods=True)
        await asyncio.wait_for(self.task, 5)

    async def wait(self, uid: str, pred: Callable[[dict[str, Any]], bool], *, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        st = None
        while time.monotonic() < deadline:
            st = self.manager.status(uid)
            if st is not None and pred(st):
                return st
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out waiting on pod {uid}; last status:\n{json.dumps(st, indent=1)}")

    async def logs(self, name: str, container: str, *, until: str, timeout: float = 10.0) -> list[str]:
        logs = self.manager.container_logs("default", name, container)
        assert logs is not None and logs.current
        deadline = time.monotonic() + timeout
        lines: list[str] = []
        while time.monotonic() < deadline:
            if os.path.exists(logs.current):
                lines = [crilog.parse_line(raw).text.decode() for raw in
                         Path(logs.current).read_bytes().splitlines(keepends=True)]
                if until in lines:
                    return lines
            await asyncio.sleep(0.05)
        raise AssertionError(f"{until!r} never logged; got {lines}")

    def run_in(self, name: str, container: str, script: str) -> str:
        """``sh -c script`` inside the running container's namespaces (kubectl exec)."""
        proc = self.manager.container_process("default", name, container)
        assert proc is not None
        out = subprocess.run(proc.enter_argv(["sh", "-c", script]), env=dict(proc.env), capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip()


async def eventually(check: Callable[[], Any], want: Any, *, timeout: float = 20.0) -> None:
    """Poll until ``check()`` equals ``want`` (generous timeout; asserts content, not timing)."""
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        got = check()
        if got == want:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"never saw {want!r}; last {got!r}")


def pod(name: str, containers: list[dict[str, Any]], volumes: list[dict[str, Any]], **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "uid": str(uuid.uuid4()), **meta},
            "spec": {"containers": containers, "volumes": volumes, "terminationGracePeriodSeconds": 0}}


def in_node(body: Callable[[Path], Any], *, timeout: float = 90.0) -> Any:
    root = Path(tempfile.mkdtemp(prefix="edgectl-vol-"))
    try:
        return run_in_node_namespace(lambda: body(root), data_dir=root / "data", timeout=timeout)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def running(st: dict[str, Any]) -> bool:
    return st["phase"] == "Running" and all("running" in c["state"] for c in st["containerStatuses"])


def test_every_volume_kind_in_a_real_container_modes_items_subpath_readonly_and_updates() -> None:
    async def body(root: Path) -> None:
        configmaps = StaticObjectFiles({("default", "app"): {"app.conf": b"level=info", "logo.bin": b"\x00\x01\xff"}})
        secrets = StaticObjectFiles({("default", "db"): {"pw": b"s3cret", "user": b"svc"}})
        node = Node(root, configmaps=configmaps, secrets=secrets)
        m = root / "m"
        mounts = [{"name": n, "mountPath": str(m / n)} for n in ("cfg", "items", "sec", "down", "proj", "opt")]
        mounts += [{"name": "cfg", "mountPath": str(m / "one.conf"), "subPath": "app.conf"},
                   {"name": "scratch", "mountPath": str(m / "deep"), "subPath": "a/b"},
                   {"name": "cfg", "mountPath": str(m / "asked-rw"), "readOnly": False}]
        script = f"""
            echo cfg=$(cat {m}/cfg/app.conf) logo=$(od -An -tx1 {m}/cfg/logo.bin | tr -d ' ')
            echo items=$(cat {m}/items/etc/app.conf) mode=$(stat -L -c %a {m}/items/etc/app.conf)
            echo sec=$(cat {m}/sec/pw) secmode=$(stat -L -c %a {m}/sec/pw) user=$(ls {m}/sec | grep -c user)
            echo name=$(cat {m}/down/name) mem=$(cat {m}/down/mem) tier=$(cat {m}/down/tier)
            echo proj=$(cat {m}/proj/app.conf)+$(cat {m}/proj/creds/pw)+$(cat {m}/proj/meta/ns)
            echo opt=$(ls -A {m}/opt | grep -v '^[.][.]' | wc -l)
            echo sub=$(cat {m}/one.conf)
            (echo x > {m}/cfg/new) 2>/dev/null && echo cfg-writable || echo cfg-ro
            (echo x > {m}/asked-rw/new) 2>/dev/null && echo rw-writable || echo rw-ro
            (echo x > {m}/deep/f) && echo deep-writable
            echo done; exec sleep 300"""
        p = pod("vols", [{"name": "main", "command": ["sh", "-c", script], "volumeMounts": mounts,
                          "resources": {"limits": {"memory": "64Mi"}}}], [
            {"name": "cfg", "configMap": {"name": "app"}},
            {"name": "items", "configMap": {"name": "app", "defaultMode": 0o600,
                                            "items": [{"key": "app.conf", "path": "etc/app.conf", "mode": 0o640}]}},
            {"name": "sec", "secret": {"secretName": "db", "defaultMode": 0o400, "items": [{"key": "pw", "path": "pw"}]}},
            {"name": "down", "downwardAPI": {"items": [
                {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                {"path": "tier", "fieldRef": {"fieldPath": "metadata.labels['tier']"}},
                {"path": "mem", "resourceFieldRef": {"containerName": "main", "resource": "limits.memory",
                                                     "divisor": "1Mi"}}]}},
            {"name": "proj", "projected": {"sources": [
                {"configMap": {"name": "app", "items": [{"key": "app.conf", "path": "app.conf"}]}},
                {"secret": {"name": "db", "items": [{"key": "pw", "path": "creds/pw"}]}},
                {"downwardAPI": {"items": [{"path": "meta/ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}},
            {"name": "opt", "configMap": {"name": "absent", "optional": True}},
            {"name": "scratch", "emptyDir": {}},
        ], labels={"tier": "front", "app": "shop"})
        uid = p["metadata"]["uid"]
        node.manager.sync([p])
        await node.wait(uid, running)
        lines = await node.logs("vols", "main", until="done")
        assert lines == [
            "cfg=level=info logo=0001ff",
            "items=level=info mode=640",
            "sec=s3cret secmode=400 user=0",  # items: only pw is projected
            "name=vols mem=64 tier=front",
            "proj=level=info+s3cret+default",
            "opt=0",  # optional and missing: an empty volume
            "sub=level=info",
            "cfg-ro", "rw-ro",  # read-only whatever readOnly says, as kubelet
            "deep-writable", "done"]
        vol_dir = root / "data" / "pods" / uid / "volumes"
        assert (vol_dir / "scratch" / "a" / "b" / "f").read_text() == "x\n"
        assert os.readlink(vol_dir / "cfg" / "app.conf") == "..data/app.conf"
        assert node.run_in("vols", "main", f"cat {m}/down/labels") == 'app="shop"\ntier="front"'

        # An update reaches the running container atomically; the subPath mount keeps the old file.
        configmaps.items[("default", "app")] = {"app.conf": b"level=debug", "extra": b"new key"}
        await eventually(lambda: node.run_in("vols", "main", f"cat {m}/cfg/app.conf; echo; cat {m}/cfg/extra"),
                         "level=debug\nnew key")
        assert node.run_in("vols", "main", f"cat {m}/proj/app.conf; echo; cat {m}/items/etc/app.conf") == \
            "level=debug\nlevel=debug"
        assert node.run_in("vols", "main", f"ls {m}/cfg") == "app.conf\nextra"  # logo.bin is gone
        assert node.run_in("vols", "main", f"cat {m}/one.conf") == "level=info"
        secrets.items[("default", "db")] = {"pw": b"rotated"}
        await eventually(lambda: node.run_in("vols", "main", f"cat {m}/sec/pw"), "rotated")
        # Metadata changes (labels) reach downwardAPI files too.
        p2 = json.loads(json.dumps(p))
        p2["metadata"]["labels"]["tier"] = "back"
        node.manager.sync([p2])
        await eventually(lambda: node.run_in("vols", "main", f"cat {m}/down/tier"), "back")
        assert cstatus_restarts(node.manager.status(uid)) == 0  # files changed under it; no restart

        node.manager.sync([])  # deletion: files, dirs and created mount points go
        await eventually(lambda: node.manager.status(uid), None)
        assert not (root / "data" / "pods" / uid).exists()
        assert not m.exists() or list(m.iterdir()) == []
        await node.stop()

    in_node(body)


def cstatus_restarts(st: dict[str, Any] | None) -> int:
    assert st is not None
    return st["containerStatuses"][0]["restartCount"]


def test_missing_objects_hold_the_pod_in_container_creating_until_they_appear() -> None:
    async def body(root: Path) -> None:
        configmaps = StaticObjectFiles()
        secrets = StaticObjectFiles()
        node = Node(root, configmaps=configmaps, secrets=secrets)
        m = root / "m"
        p = pod("late", [{"name": "main", "command": ["sh", "-c", f"cat {m}/cfg/k {m}/sec/k; echo; exec sleep 300"],
                          "volumeMounts": [{"name": "cfg", "mountPath": str(m / "cfg")},
                                           {"name": "sec", "mountPath": str(m / "sec")}]}],
                [{"name": "cfg", "configMap": {"name": "late-cm"}}, {"name": "sec", "secret": {"secretName": "late-s"}}])
        bad = pod("bad", [{"name": "main", "command": ["true"]}],
                  [{"name": "evil", "configMap": {"name": "late-cm", "items": [{"key": "k", "path": "../../escape"}]}}])
        node.manager.sync([p, bad])
        uid = p["metadata"]["uid"]

        def creating(st: dict[str, Any]) -> bool:
            w = st["containerStatuses"][0]["state"].get("waiting") or {}
            return w.get("reason") == "ContainerCreating" and "MountVolume" in w.get("message", "")

        st = await node.wait(uid, creating)
        assert st["containerStatuses"][0]["state"]["waiting"]["message"] == \
            'MountVolume.SetUp failed for volume "cfg" : configmap "late-cm" not found'
        assert "podIP" not in st and st["phase"] == "Pending"  # no sandbox until volumes are mounted
        st = await node.wait(bad["metadata"]["uid"], creating)
        assert "must not contain '..'" in st["containerStatuses"][0]["state"]["waiting"]["message"]

        configmaps.items[("default", "late-cm")] = {"k": b"cm"}
        st = await node.wait(uid, lambda s: "secret" in json.dumps(s))
        assert st["containerStatuses"][0]["state"]["waiting"]["message"] == \
            'MountVolume.SetUp failed for volume "sec" : secret "late-s" not found'
        secrets.items[("default", "late-s")] = {"k": b"+secret"}
        await node.wait(uid, running)
        assert (await node.logs("late", "main", until="cm+secret"))[-1] == "cm+secret"
        assert not (root / "data" / "pods" / bad["metadata"]["uid"] / "escape").exists()
        await node.stop()
        assert list((root / "data" / "pods").iterdir()) == []

    in_node(body)


def test_adopted_pods_keep_getting_updates_and_subpath_links_cannot_escape() -> None:
    async def body(root: Path) -> None:
        configmaps = StaticObjectFiles({("default", "app"): {"k": b"v1"}})
        node = Node(root, configmaps=configmaps)
        m = root / "m"
        p = pod("keep", [{"name": "main", "command": ["sleep", "300"],
                          "volumeMounts": [{"name": "cfg", "mountPath": str(m / "cfg")}]}],
                [{"name": "cfg", "configMap": {"name": "app"}}])
        # An init container plants a link to the host's /etc in an emptyDir; the
        # app container's subPath through it must be refused, not bound.
        esc = pod("escape", [{"name": "main", "command": ["sleep", "300"],
                              "volumeMounts": [{"name": "scratch", "mountPath": str(m / "esc"), "subPath": "link"}]}],
                  [{"name": "scratch", "emptyDir": {}}])
        esc["spec"]["initContainers"] = [{"name": "plant", "command": ["ln", "-s", "/etc", str(m / "init" / "link")],
                                          "volumeMounts": [{"name": "scratch", "mountPath": str(m / "init")}]}]
        node.manager.sync([p, esc])
        st = await node.wait(p["metadata"]["uid"], running)
        cid = st["containerStatuses"][0]["containerID"]
        st = await node.wait(esc["metadata"]["uid"], lambda s: (s["containerStatuses"][0]["state"].get("waiting") or {})
                             .get("reason") == "CreateContainerConfigError")
        assert "subPath 'link' resolves outside the volume" in st["containerStatuses"][0]["state"]["waiting"]["message"]
        await node.manager.close(stop_pods=False)  # the agent goes away; the pod keeps running
        await asyncio.wait_for(node.task, 5)

        configmaps.items[("default", "app")] = {"k": b"v2"}
        again = Node(root, configmaps=configmaps)
        await again.manager.wait_loaded()  # adopted: its containers were never this manager's children
        again.manager.sync([p])
        await eventually(lambda: again.run_in("keep", "main", f"cat {m}/cfg/k"), "v2")
        assert again.manager.status(p["metadata"]["uid"])["containerStatuses"][0]["containerID"] == cid
        await again.stop()

    in_node(body)
