"""Cancelling ``PodManager.run()`` while it still adopts pods after an agent
restart (CNI CHECK of a recovered sandbox in flight) must end the task
promptly; it used to hang ``asyncio.run`` on teardown."""
from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from edgectl.agent.runtime.lifecycle import Backoff
from edgectl.agent.runtime.manager import PodManager
from edgectl.agent.runtime.nstest import run_in_node_namespace
from edgectl.agent.runtime.process import ProcessRuntime, RuntimeConfig

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/lib/cni/bridge").exists(),
                       reason="needs root and containernetworking-plugins"),
]

POD_CIDR = "10.42.13.0/24"


def manager(root: Path) -> PodManager:
    config = RuntimeConfig(pod_cidr=POD_CIDR, data_dir=root / "data", log_dir=root / "log", cni_conf_dir=root / "cni",
                           node_ips=("198.18.0.13",), node_hostname="edge-cancel")
    return PodManager(runtime=ProcessRuntime(config), data_dir=root / "data", backoff=Backoff(base=0.2),
                      resync_interval=0.3, host_ip="198.18.0.13")


def pod(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "uid": str(uuid.uuid4())},
            "spec": {"containers": [{"name": "c", "command": ["sleep", "300"]}],
                     "terminationGracePeriodSeconds": 0}}


async def wait_running(m: PodManager, uids: list[str], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sts = [m.status(u) for u in uids]
        if all(st and st["phase"] == "Running" for st in sts):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"pods never ran: {sts}")


def test_cancel_while_adopting_after_restart_ends_promptly() -> None:
    async def body(root: Path) -> list[str]:
        first = manager(root)
        task = asyncio.create_task(first.run())
        pods = [pod(f"adopt-{i}") for i in range(3)]
        first.sync(pods)
        await wait_running(first, [p["metadata"]["uid"] for p in pods])
        await first.close(stop_pods=False)  # the agent dies; the pods keep running
        await asyncio.wait_for(task, 5)

        outcomes = []
        # Cancel at several points of adoption: before it starts, while the
        # CHECK of the first, second or third sandbox runs, and after.
        for delay in (0, 0.001, 0.005, 0.01, 0.02, 0.04, 0.08, 0.15):
            again = manager(root)
            task = asyncio.create_task(again.run())
            await asyncio.sleep(delay)
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=5)
            assert done, f"run() still running 5 s after cancel (delay {delay})"
            outcomes.append("cancelled" if task.cancelled() else repr(task.exception()))
            # close() after a cancelled run() must not wait forever on a half-done load.
            await asyncio.wait_for(again.close(), 5)

        # The agent's SIGTERM path: asyncio.run ends while adoption runs and
        # cancels every task at once (the CHECK's own helpers included). That
        # used to hang in asyncio's subprocess transport; run_in_node_namespace's
        # timeout turns a hang into a failure.
        def agent_run(delay: float) -> str:
            async def main() -> asyncio.Task[None]:
                task = asyncio.create_task(manager(root).run())
                await asyncio.sleep(delay)
                return task  # asyncio.run cancels it on the way out

            task = asyncio.run(main())
            return "cancelled" if task.cancelled() else repr(task)

        for delay in (0, 0.002, 0.005, 0.01, 0.02, 0.04):
            outcomes.append(await asyncio.to_thread(agent_run, delay))

        # A load cut short is redone, not waited on forever: close(stop_pods=True)
        # of a manager cancelled mid-adoption still adopts every pod and ends it.
        last = manager(root)
        task = asyncio.create_task(last.run())
        await asyncio.sleep(0.005)
        task.cancel()
        await asyncio.wait({task}, timeout=5)
        assert task.done()
        await asyncio.wait_for(last.close(stop_pods=True), 15)
        assert [last.status(p["metadata"]["uid"]) for p in pods] == [None] * 3
        assert list((root / "data" / "pods").iterdir()) == []
        return outcomes

    root = Path(tempfile.mkdtemp(prefix="edgectl-cancel-"))
    try:
        # The node namespace child has its own bound: a hang fails the test.
        outcomes = run_in_node_namespace(lambda: body(root), data_dir=root / "data", timeout=30)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert outcomes == ["cancelled"] * 14
