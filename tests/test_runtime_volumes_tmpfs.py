"""Secret material never on disk: secret and projected volumes, and emptyDir
``medium: Memory``, live on a tmpfs of their own (checked in the node
namespace's /proc/self/mountinfo), unmounted when the pod goes, including
after an agent restart and for a pod that never got a sandbox."""
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

from edgectl.agent.runtime import tmpfs
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

POD_CIDR = "10.42.14.0/24"
MiB = 1 << 20


def manager(root: Path, *, cni_dir: str = "cni", **args: Any) -> tuple[PodManager, "asyncio.Task[None]"]:
    config = RuntimeConfig(pod_cidr=POD_CIDR, data_dir=root / "data", log_dir=root / "log", cni_conf_dir=root / cni_dir,
                           node_ips=("198.18.0.14",), node_hostname="edge-tmpfs")
    m = PodManager(runtime=ProcessRuntime(config), data_dir=root / "data", backoff=Backoff(base=0.2),
                   resync_interval=0.3, host_ip="198.18.0.14", volume_refresh_interval=0.3, **args)
    return m, asyncio.create_task(m.run())


def pod(name: str, containers: list[dict[str, Any]], volumes: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "uid": str(uuid.uuid4())},
            "spec": {"containers": containers, "volumes": volumes, "terminationGracePeriodSeconds": 0}}


async def until(check: Callable[[], Any], *, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition never held: {check}")


def mount_table() -> dict[str, tuple[str, str]]:
    """mount point -> (fs type, per-mount options) of this (node) namespace."""
    out = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        parts = line.split()
        sep = parts.index("-", 6)
        out[tmpfs.unescape(parts[4])] = (parts[sep + 1], parts[5])
    return out


def running(m: PodManager, uid: str) -> bool:
    st = m.status(uid)
    return bool(st and st["phase"] == "Running")


def exec_in(m: PodManager, name: str, script: str) -> str:
    proc = m.container_process("default", name, "main")
    assert proc is not None
    return subprocess.run(proc.enter_argv(["sh", "-c", script]), env=dict(proc.env), capture_output=True, text=True,
                          timeout=10).stdout.strip()


def in_node(body: Callable[[Path], Any], *, timeout: float = 90.0) -> Any:
    root = Path(tempfile.mkdtemp(prefix="edgectl-tmpfs-"))
    try:
        return run_in_node_namespace(lambda: body(root), data_dir=root / "data", timeout=timeout)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_secret_projected_and_memory_emptydir_live_on_tmpfs_and_are_unmounted_on_delete() -> None:
    async def body(root: Path) -> dict[str, Any]:
        secrets = StaticObjectFiles({("default", "db"): {"pw": b"s3cret"}})
        configmaps = StaticObjectFiles({("default", "app"): {"app.conf": b"level=info"}})
        m, task = manager(root, secrets=secrets, configmaps=configmaps)
        mnt = root / "m"
        names = ("sec", "proj", "projcm", "cfg", "mem", "memdef", "disk")
        p = pod("tmpfs", [{"name": "main", "command": ["sh", "-c", "echo x > %s/mem/f; exec sleep 300" % mnt],
                           "resources": {"limits": {"memory": "48Mi"}},
                           "volumeMounts": [{"name": n, "mountPath": str(mnt / n)} for n in names]}], [
            {"name": "sec", "secret": {"secretName": "db"}},
            {"name": "proj", "projected": {"sources": [{"secret": {"name": "db"}},
                                                       {"configMap": {"name": "app"}}]}},
            {"name": "projcm", "projected": {"sources": [{"configMap": {"name": "app"}}]}},
            {"name": "cfg", "configMap": {"name": "app"}},
            {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}},
            {"name": "memdef", "emptyDir": {"medium": "Memory"}},
            {"name": "disk", "emptyDir": {}}])
        uid = p["metadata"]["uid"]
        m.sync([p])
        await until(lambda: running(m, uid))
        vols = root / "data" / "pods" / uid / "volumes"
        table = mount_table()
        kinds = {n: table.get(str(vols / n), ("-", ""))[0] for n in names}
        opts = {n: table[str(vols / n)][1].split(",") for n in names if kinds[n] == "tmpfs"}
        sizes = {n: os.statvfs(vols / n).f_blocks * os.statvfs(vols / n).f_frsize for n in opts}
        modes = {n: oct(os.stat(vols / n).st_mode & 0o7777) for n in opts}
        seen = exec_in(m, "tmpfs", f"for f in sec/pw proj/pw proj/app.conf cfg/app.conf mem/f; do cat {mnt}/$f; "
                                   f"echo; done; df -P {mnt}/sec | tail -1 | cut -d' ' -f1")
        secrets.items[("default", "db")] = {"pw": b"rotated"}  # a refresh writes into the same tmpfs
        await until(lambda: exec_in(m, "tmpfs", f"cat {mnt}/sec/pw") == "rotated")
        still = mount_table().get(str(vols / "sec"), ("-",))[0]
        m.sync([])
        await until(lambda: m.status(uid) is None)
        left = [mp for mp in mount_table() if mp.startswith(str(root / "data"))]
        gone = not (root / "data" / "pods" / uid).exists()
        await m.close()
        await asyncio.wait_for(task, 5)
        return {"kinds": kinds, "opts": opts, "sizes": sizes, "modes": modes, "seen": seen.split("\n"),
                "still": still, "left": left, "gone": gone}

    got = in_node(body)
    assert got["kinds"] == {"sec": "tmpfs", "proj": "tmpfs", "projcm": "tmpfs", "cfg": "-", "mem": "tmpfs",
                            "memdef": "tmpfs", "disk": "-"}
    for name, opts in got["opts"].items():
        assert "nosuid" in opts and "nodev" in opts, (name, opts)
    # sizeLimit wins when it is below the pod's memory limit; otherwise the pod's limit.
    assert got["sizes"] == {"sec": 48 * MiB, "proj": 48 * MiB, "projcm": 48 * MiB, "mem": 8 * MiB,
                            "memdef": 48 * MiB}
    assert got["modes"] == {"sec": "0o755", "proj": "0o755", "projcm": "0o755", "mem": "0o1777",
                            "memdef": "0o1777"}
    assert got["seen"] == ["s3cret", "s3cret", "level=info", "level=info", "x", "", "tmpfs"]
    assert got["still"] == "tmpfs"
    assert got["left"] == [] and got["gone"]


def test_adopted_and_never_started_pods_get_their_tmpfs_unmounted() -> None:
    async def body(root: Path) -> dict[str, Any]:
        secrets = StaticObjectFiles({("default", "db"): {"pw": b"s3cret"}})
        m, task = manager(root, secrets=secrets)
        vol = [{"name": "sec", "secret": {"secretName": "db"}}]
        keep = pod("adopted", [{"name": "main", "command": ["sleep", "300"],
                                "volumeMounts": [{"name": "sec", "mountPath": str(root / "m" / "a")}]}], vol)
        lost = pod("lost", [{"name": "main", "command": ["sleep", "300"]}], vol)
        m.sync([keep, lost])
        for p in (keep, lost):
            await until(lambda: running(m, p["metadata"]["uid"]))
        await m.close(stop_pods=False)  # the agent goes away; pods and their tmpfs stay
        await asyncio.wait_for(task, 5)
        data = root / "data" / "pods"
        keep_dir, lost_dir = data / keep["metadata"]["uid"], data / lost["metadata"]["uid"]
        (lost_dir / "state.json").write_text("{garbage")  # unreadable: no record will ever own it
        before = {p: mount_table().get(str(p / "volumes" / "sec"), ("-",))[0] for p in (keep_dir, lost_dir)}

        m, task = manager(root, secrets=secrets)
        await asyncio.wait_for(m.wait_loaded(), 10)
        unknown_after_load = mount_table().get(str(lost_dir / "volumes" / "sec"), ("-",))[0]
        adopted_after_load = mount_table().get(str(keep_dir / "volumes" / "sec"), ("-",))[0]
        m.sync([])  # the adopted pod was deleted while the agent was down
        await until(lambda: m.status(keep["metadata"]["uid"]) is None)
        adopted_gone = str(keep_dir / "volumes" / "sec") not in mount_table() and not keep_dir.exists()

        # A pod that finished (restartPolicy Never) gives its tmpfs back at once, while it is still listed.
        # It succeeds only if it saw its secret on a tmpfs.
        at = root / "m" / "done"
        done = pod("done", [{"name": "main", "command": ["sh", "-c", f"grep -q ' {at} tmpfs ' /proc/mounts"],
                             "volumeMounts": [{"name": "sec", "mountPath": str(at)}]}], vol)
        done["spec"]["restartPolicy"] = "Never"
        m.sync([done])
        done_vol = data / done["metadata"]["uid"] / "volumes" / "sec"
        await until(lambda: (m.status(done["metadata"]["uid"]) or {}).get("phase") == "Succeeded")
        await until(lambda: str(done_vol) not in mount_table())
        finished_unmounted = done_vol.is_dir() and list(done_vol.iterdir()) == []
        m.sync([])
        await until(lambda: m.status(done["metadata"]["uid"]) is None)
        await m.close()
        await asyncio.wait_for(task, 5)

        # A pod whose volumes were written but whose sandbox never came up (broken CNI).
        (root / "badcni").mkdir()
        (root / "badcni" / "05-broken.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": "broken", "plugins": [{"type": "no-such-plugin"}]}))
        m, task = manager(root, secrets=secrets, cni_dir="badcni")
        stuck = pod("stuck", [{"name": "main", "command": ["sleep", "300"]}], vol)
        m.sync([stuck])
        stuck_vol = data / stuck["metadata"]["uid"] / "volumes" / "sec"
        await until(lambda: (m.status(stuck["metadata"]["uid"]) or {}).get("reason") == "FailedCreatePodSandBox")
        stuck_mounted = mount_table().get(str(stuck_vol), ("-",))[0]
        stuck_secret = (stuck_vol / "pw").read_text()
        m.sync([])
        await until(lambda: m.status(stuck["metadata"]["uid"]) is None)
        stuck_gone = str(stuck_vol) not in mount_table() and not stuck_vol.exists()
        await m.close()
        await asyncio.wait_for(task, 5)
        return {"before": list(before.values()), "unknown": unknown_after_load, "adopted": adopted_after_load,
                "adopted_gone": adopted_gone, "finished_unmounted": finished_unmounted, "stuck": (stuck_mounted, stuck_secret), "stuck_gone": stuck_gone}

    got = in_node(body)
    assert got["before"] == ["tmpfs", "tmpfs"]
    assert got["unknown"] == "-"  # its pod has no record: unmounted at load
    assert got["adopted"] == "tmpfs"  # still in use by the adopted pod
    assert got["adopted_gone"]
    assert got["finished_unmounted"]
    assert got["stuck"] == ("tmpfs", "s3cret")
    assert got["stuck_gone"]
