"""Process runtime figures: pod start/stop latency and per-container overhead.

Run: .venv/bin/python bench/runtime.py   (about 15 s; root; throwaway node namespace)

Side by side:
- sandbox (netns + CNI ADD of loopback, bridge/host-local, portmap) versus
  container start (shim launch until the command runs): where start time goes;
- the shim's RSS versus the container's own (`sleep`): what supervision costs;
- one pod at a time versus 20 pods synced at once (the manager reconciles
  pods concurrently).
"""
from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from edgectl.agent.runtime import parse_pod
from edgectl.agent.runtime.lifecycle import Backoff
from edgectl.agent.runtime.manager import PodManager
from edgectl.agent.runtime.nstest import run_in_node_namespace
from edgectl.agent.runtime.podfiles import ClusterInfo, container_env
from edgectl.agent.runtime.process import ProcessRuntime, RuntimeConfig


def pod(name: str) -> dict:
    return {"metadata": {"name": name, "namespace": "default", "uid": str(uuid.uuid4())},
            "spec": {"terminationGracePeriodSeconds": 5, "containers": [
                {"name": "c", "image": "busybox", "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 300 & wait"]}]}}


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def main(root: Path) -> dict[str, float]:
    cfg = RuntimeConfig(pod_cidr="10.42.50.0/24", data_dir=root / "data", log_dir=root / "log",
                        cni_conf_dir=root / "cni")
    rt = ProcessRuntime(cfg)
    out: dict[str, float] = {}
    sandbox_s, start_s = [], []
    for i in range(8):
        spec = parse_pod(pod(f"raw-{i}"))
        t0 = time.perf_counter()
        sb = await rt.run_sandbox(spec)
        t1 = time.perf_counter()
        c = spec.containers[0]
        h = await rt.start_container(spec, sb, c, restart_count=0, env=container_env(spec, c, cluster=ClusterInfo()))
        t2 = time.perf_counter()
        sandbox_s.append(t1 - t0)
        start_s.append(t2 - t1)
        if i == 0:
            await asyncio.sleep(0.3)
            out["shim_rss_kb"] = rss_kb(h.data["shim_pid"])
            out["container_rss_kb"] = rss_kb(h.pid)
        rt.signal_container(h, 9)
        while rt.poll_container(h) is None:
            await asyncio.sleep(0.01)
        await rt.stop_sandbox(spec, sb, remove=True)
    out["sandbox_ms_p50"] = statistics.median(sandbox_s) * 1000
    out["container_start_ms_p50"] = statistics.median(start_s) * 1000

    mgr = PodManager(runtime=rt, data_dir=cfg.data_dir, backoff=Backoff(base=1), resync_interval=0.5)
    task = asyncio.create_task(mgr.run())
    single = []
    for i in range(5):
        p = pod(f"one-{i}")
        t0 = time.perf_counter()
        mgr.sync([p])
        while (mgr.status(p["metadata"]["uid"]) or {}).get("phase") != "Running":
            await asyncio.sleep(0.005)
        single.append(time.perf_counter() - t0)
        mgr.sync([])
        while mgr.status(p["metadata"]["uid"]) is not None:
            await asyncio.sleep(0.005)
    out["one_pod_sync_to_running_ms_p50"] = statistics.median(single) * 1000
    pods = [pod(f"many-{i}") for i in range(20)]
    t0 = time.perf_counter()
    mgr.sync(pods)
    while not all((mgr.status(p["metadata"]["uid"]) or {}).get("phase") == "Running" for p in pods):
        await asyncio.sleep(0.01)
    out["20_pods_sync_to_all_running_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    mgr.sync([])
    while any(mgr.status(p["metadata"]["uid"]) is not None for p in pods):
        await asyncio.sleep(0.01)
    out["20_pods_delete_to_gone_s"] = time.perf_counter() - t0
    await mgr.close()
    await task
    return out


if __name__ == "__main__":
    root = Path(tempfile.mkdtemp(prefix="edgectl-bench-rt-"))
    try:
        res = run_in_node_namespace(lambda: main(root), data_dir=root / "data", timeout=120)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for k, v in res.items():
        print(f"{k:34s} {v:10.1f}")
    print(f"{'sandbox : container start':34s} {res['sandbox_ms_p50'] / res['container_start_ms_p50']:10.2f}x")
    print(f"{'shim RSS : container RSS':34s} {res['shim_rss_kb'] / max(1, res['container_rss_kb']):10.2f}x")
    print(f"{'20 pods at once : 20 x one pod':34s} "
          f"{res['20_pods_sync_to_all_running_s'] * 1000 / (20 * res['one_pod_sync_to_running_ms_p50']):10.2f}x")
