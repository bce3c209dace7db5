"""Process runtime + PodManager against the real CNI plugins, in a throwaway
node namespace (never the root namespace: the bridge plugin adds cni0 and
masquerade rules to the namespace it runs in)."""
from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest

from edgectl.agent.runtime import SandboxError, crilog
from edgectl.agent.runtime.envsources import StaticConfigMaps
from edgectl.agent.runtime.lifecycle import Backoff
from edgectl.agent.runtime.manager import PodManager
from edgectl.agent.runtime.nstest import run_in_node_namespace
from edgectl.agent.runtime.process import ProcessRuntime, RuntimeConfig, sandbox_id

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/lib/cni/bridge").exists(),
                       reason="needs root and containernetworking-plugins"),
]

POD_CIDR = "10.42.9.0/24"


class Node:
    """One agent's runtime + manager inside the node namespace."""

    def __init__(self, root: Path, *, backoff: float = 10.0, **manager_args: Any) -> None:
        self.root = root
        self.manager_args = manager_args
        self.config = RuntimeConfig(pod_cidr=POD_CIDR, data_dir=root / "data", log_dir=root / "log",
                                    cni_conf_dir=root / "cni", node_ips=("198.18.0.10",), node_hostname="edge-node-9")
        self.changes: list[tuple[str, dict[str, Any] | None]] = []
        self.backoff = backoff
        self.task: asyncio.Task[None] | None = None
        self.manager: PodManager

    async def start(self) -> "Node":
        self.manager = PodManager(runtime=ProcessRuntime(self.config), data_dir=self.root / "data",
                                  on_change=lambda uid, st: self.changes.append((uid, st)),
                                  backoff=Backoff(base=self.backoff, cap=8 * self.backoff), resync_interval=0.5,
                                  host_ip="198.18.0.10", **self.manager_args)
        self.task = asyncio.create_task(self.manager.run())
        return self

    async def stop(self, *, stop_pods: bool) -> None:
        await self.manager.close(stop_pods=stop_pods)
        if self.task:
            await asyncio.wait_for(self.task, 5)

    async def wait(self, uid: str, pred: Callable[[dict[str, Any]], bool], *, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        st = None
        while time.monotonic() < deadline:
            st = self.manager.status(uid)
            if st is not None and pred(st):
                return st
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out waiting on pod {uid}; last status:\n{json.dumps(st, indent=1)}")

    def lease_files(self) -> list[str]:
        d = self.root / "data" / "cni" / "networks" / "edgectl"
        return sorted(p.name for p in d.iterdir() if p.name[0].isdigit()) if d.is_dir() else []


def netns_names() -> list[str]:
    return sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []


def pod(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": str(uuid.uuid4())},
        "spec": {"containers": containers, "terminationGracePeriodSeconds": 1, **spec},
    }


def sh(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "busybox:1.36", "command": ["sh", "-c", script], **extra}


def phase(p: str) -> Callable[[dict[str, Any]], bool]:
    return lambda st: st["phase"] == p


def cstatus(st: dict[str, Any], name: str, *, init: bool = False) -> dict[str, Any]:
    key = "initContainerStatuses" if init else "containerStatuses"
    return next(c for c in st[key] if c["name"] == name)


def alive(pid: int, *, settle: float = 2.0) -> bool:
    """Running (not a zombie waiting for init to reap it), allowing ``settle``
    seconds for a process that is being killed to go."""
    deadline = time.monotonic() + settle
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        if state in "ZX":
            return False
        if time.monotonic() >= deadline:
            return True
        time.sleep(0.02)


def in_node(body: Callable[[Path], Awaitable[Any]], *, timeout: float = 60.0) -> Any:
    root = Path(tempfile.mkdtemp(prefix="edgectl-rt-"))
    try:
        return run_in_node_namespace(lambda: body(root), data_dir=root / "data", timeout=timeout)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if root.exists():  # a CNI plugin of a failed test may still have been writing
            time.sleep(0.5)
            shutil.rmtree(root, ignore_errors=True)


def read_log(path: str) -> list[crilog.LogRecord]:
    return [crilog.parse_line(line) for line in Path(path).read_bytes().splitlines(keepends=True)]


def test_pod_runs_with_ip_hostname_hosts_env_volume_and_cri_logs() -> None:
    async def body(root: Path) -> None:
        node = await Node(root).start()
        p = pod("web", [
            sh("main", "echo host=$(hostname); echo pid=$$$$; grep web /etc/hosts; cat /etc/hostname;"
                       " echo k8s=$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT greet=$GREETING;"
                       f" pwd; echo shared > {root}/mnt/data/note; echo oops >&2;"
                       " head -c 40000 /dev/zero | tr '\\0' x; echo; exec sleep 300",
               env=[{"name": "WHO", "value": "edge"}, {"name": "GREETING", "value": "hi-$(WHO)"}],
               workingDir="/tmp", volumeMounts=[{"name": "scratch", "mountPath": str(root / "mnt" / "data")}]),
            sh("side", f"while [ ! -f {root}/mnt/data/note ]; do sleep 0.05; done; cat {root}/mnt/data/note;"
                       " exec sleep 300",
               volumeMounts=[{"name": "scratch", "mountPath": str(root / "mnt" / "data")}]),
        ], volumes=[{"name": "scratch", "emptyDir": {}}])
        uid = p["metadata"]["uid"]
        node.manager.sync([p])
        st = await node.wait(uid, lambda s: s["phase"] == "Running"
                             and all(c["ready"] for c in s["containerStatuses"]))
        assert ipaddress.ip_address(st["podIP"]) in ipaddress.ip_network(POD_CIDR)
        assert st["podIPs"] == [{"ip": st["podIP"]}] and st["hostIP"] == "198.18.0.10"
        conds = {c["type"]: c["status"] for c in st["conditions"]}
        assert conds == {"Initialized": "True", "Ready": "True", "ContainersReady": "True", "PodScheduled": "True"}
        main = cstatus(st, "main")
        assert main["containerID"].startswith("process://") and main["started"] and main["restartCount"] == 0
        assert "running" in main["state"] and main["image"] == "busybox:1.36"
        logs = node.manager.container_logs("default", "web", "main")
        assert logs and logs.running
        assert logs.current == str(root / "log" / f"default_web_{uid}" / "main" / "0.log")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            records = read_log(logs.current)
            if sum(not r.partial and r.text.startswith(b"x") for r in records):
                break
            await asyncio.sleep(0.05)
        text = [r.text.decode() for r in records if r.stream == "stdout" and not r.partial]
        assert "host=web" in text and "pid=1" in text and "web" in text and "/tmp" in text
        assert f"{st['podIP']}\tweb" in text
        assert "k8s=10.43.0.1:443 greet=hi-edge" in text
        assert any(r.stream == "stderr" and r.text == b"oops" for r in records)
        long = [r for r in records if r.text.startswith(b"x")]
        assert [r.partial for r in long] == [True, True, False]  # 16 KiB + 16 KiB + rest
        assert b"".join(r.text for r in long) == b"x" * 40000
        side = node.manager.container_logs("default", "web", "side")
        await asyncio.sleep(0.3)
        assert [r.text for r in read_log(side.current)] == [b"shared"]
        # What the kubelet API uses: exec into the container's namespaces.
        proc = node.manager.container_process("default", "web", "main")
        assert proc is not None and proc.env["GREETING"] == "hi-edge"
        out = subprocess.run(proc.enter_argv(["sh", "-c", "cat /etc/hostname; echo $GREETING; exit 3"]),
                             env=dict(proc.env), capture_output=True, text=True, timeout=10)
        assert (out.returncode, out.stdout) == (3, "web\nhi-edge\n")
        net = node.manager.pod_network("default", "web")
        assert net is not None and net.ips == (st["podIP"],) and os.path.exists(net.netns_path)
        assert node.manager.pods()[0]["status"]["phase"] == "Running"
        # sync() is idempotent: the same list again changes nothing and reports nothing.
        seen = len(node.changes)
        for _ in range(5):
            node.manager.sync([p])
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        assert len(node.changes) == seen
        assert cstatus(node.manager.status(uid), "main")["containerID"] == main["containerID"]
        await node.stop(stop_pods=True)
        assert node.lease_files() == [] and netns_names() == []

    in_node(body)


def test_two_pods_reach_each_other_by_ip() -> None:
    async def body(root: Path) -> None:
        node = await Node(root).start()
        server = pod("server", [{"name": "srv", "image": "python", "ports": [{"containerPort": 8080, "hostPort": 18080}],
                                 "command": ["python3", "-c",
            "import socket\ns=socket.socket(); s.bind(('0.0.0.0', 8080)); s.listen()\n"
            "while True:\n c,a=s.accept(); c.sendall(('hello '+a[0]).encode()); c.close()"]}])
        node.manager.sync([server])
        sst = await node.wait(server["metadata"]["uid"], phase("Running"))
        client = pod("client", [{"name": "cli", "image": "python", "command": ["python3", "-c",
            "import socket,sys,time\nfor _ in range(100):\n try:\n"
            "  s=socket.create_connection((sys.argv[1], 8080), timeout=2); break\n"
            " except OSError: time.sleep(0.05)\nprint(s.recv(100).decode())", sst["podIP"]]}],
            restartPolicy="Never")
        node.manager.sync([server, client])
        cst = await node.wait(client["metadata"]["uid"], phase("Succeeded"))
        assert cst["podIP"] != sst["podIP"]
        logs = node.manager.container_logs("default", "client", "cli")
        assert [r.text.decode() for r in read_log(logs.current)] == [f"hello {cst['podIP']}"]
        # hostPort through the portmap plugin: the node's bridge address, port 18080.
        reader, writer = await asyncio.wait_for(asyncio.open_connection("10.42.9.1", 18080), 5)
        assert (await asyncio.wait_for(reader.read(100), 5)).startswith(b"hello ")
        writer.close()
        # A finished pod gives its IP back but keeps reporting it.
        await asyncio.sleep(0.3)
        assert node.lease_files() == [sst["podIP"]]
        assert node.manager.status(client["metadata"]["uid"])["podIP"] == cst["podIP"]
        await node.stop(stop_pods=True)
        assert node.lease_files() == [] and netns_names() == []

    in_node(body)


def test_restart_policies_backoff_exit_codes_and_previous_logs() -> None:
    async def body(root: Path) -> None:
        node = await Node(root, backoff=0.3).start()
        always = pod("always", [sh("c", "echo run; exit 1")])
        onfail_ok = pod("onfail-ok", [sh("c", "exit 0")], restartPolicy="OnFailure")
        onfail_bad = pod("onfail-bad", [sh("c", "exit 2")], restartPolicy="OnFailure")
        never = pod("never", [sh("c", "exit 3")], restartPolicy="Never")
        node.manager.sync([always, onfail_ok, onfail_bad, never])
        st = await node.wait(always["metadata"]["uid"], lambda s: cstatus(s, "c")["restartCount"] >= 3, timeout=20)
        c = cstatus(st, "c")
        assert c["lastState"]["terminated"]["exitCode"] == 1
        assert c["lastState"]["terminated"]["reason"] == "Error"
        assert st["phase"] == "Running"
        # Back-off: immediate first restart, then base, 2*base between starts.
        rec = node.manager._pods[always["metadata"]["uid"]].containers["c"]
        assert rec.backoff_level >= 3
        st = await node.wait(always["metadata"]["uid"],
                             lambda s: cstatus(s, "c")["state"].get("waiting", {}).get("reason") == "CrashLoopBackOff")
        assert "back-off" in cstatus(st, "c")["state"]["waiting"]["message"]
        logs = node.manager.container_logs("default", "always", "c")
        assert logs.previous and logs.previous.endswith(f"/c/{int(Path(logs.current).stem) - 1}.log")
        assert [r.text for r in read_log(logs.previous)] == [b"run"]
        st = await node.wait(onfail_ok["metadata"]["uid"], phase("Succeeded"))
        term = cstatus(st, "c")["state"]["terminated"]
        assert (term["exitCode"], term["reason"], cstatus(st, "c")["restartCount"]) == (0, "Completed", 0)
        assert {x["type"]: x.get("reason") for x in st["conditions"]}["Ready"] == "PodCompleted"
        st = await node.wait(onfail_bad["metadata"]["uid"], lambda s: cstatus(s, "c")["restartCount"] >= 2)
        assert st["phase"] == "Running"
        st = await node.wait(never["metadata"]["uid"], phase("Failed"))
        term = cstatus(st, "c")["state"]["terminated"]
        assert (term["exitCode"], term["reason"]) == (3, "Error") and "signal" not in term
        assert cstatus(st, "c")["restartCount"] == 0
        await node.stop(stop_pods=True)
        assert node.lease_files() == [] and netns_names() == []

    in_node(body)


def test_init_containers_run_in_order_and_failures_block_the_pod() -> None:
    async def body(root: Path) -> None:
        node = await Node(root, backoff=0.2).start()
        vol = [{"name": "w", "mountPath": str(root / "work")}]
        (root / "work").mkdir()
        ok = pod("init-ok", [sh("app", f"cat {root}/work/order; echo; exec sleep 300", volumeMounts=vol)],
                 initContainers=[sh("one", f"sleep 0.2; echo -n 1 >> {root}/work/order", volumeMounts=vol),
                                 sh("two", f"echo -n 2 >> {root}/work/order", volumeMounts=vol)],
                 volumes=[{"name": "w", "emptyDir": {}}])
        bad_never = pod("init-never", [sh("app", "sleep 300")], initContainers=[sh("boom", "exit 5")],
                        restartPolicy="Never")
        bad_always = pod("init-always", [sh("app", "sleep 300")], initContainers=[sh("boom", "exit 6")])
        node.manager.sync([ok, bad_never, bad_always])
        st = await node.wait(ok["metadata"]["uid"], lambda s: s["phase"] == "Running"
                             and cstatus(s, "app")["ready"])
        for name in ("one", "two"):
            term = cstatus(st, name, init=True)["state"]["terminated"]
            assert (term["exitCode"], term["reason"]) == (0, "Completed")
            assert not cstatus(st, name, init=True)["ready"]
        await asyncio.sleep(0.2)
        logs = node.manager.container_logs("default", "init-ok", "app")
        assert [r.text for r in read_log(logs.current)] == [b"12"]
        st = await node.wait(bad_never["metadata"]["uid"], phase("Failed"))
        assert cstatus(st, "boom", init=True)["state"]["terminated"]["exitCode"] == 5
        assert cstatus(st, "app")["state"] == {"waiting": {"reason": "PodInitializing"}}
        assert {c["type"]: c["status"] for c in st["conditions"]}["Initialized"] == "False"
        st = await node.wait(bad_always["metadata"]["uid"],
                             lambda s: cstatus(s, "boom", init=True)["restartCount"] >= 2)
        assert st["phase"] == "Pending" and "containerID" not in cstatus(st, "app")
        await node.stop(stop_pods=True)
        assert node.lease_files() == [] and netns_names() == []

    in_node(body)


def test_a_killed_shim_takes_its_container_along_and_the_pod_recovers() -> None:
    async def body(root: Path) -> None:
        node = await Node(root, backoff=0.2).start()
        p = pod("victim", [sh("c", "exec sleep 300")])
        node.manager.sync([p])
        uid = p["metadata"]["uid"]
        await node.wait(uid, phase("Running"))
        handle = node.manager._pods[uid].containers["c"].handle
        os.kill(handle.data["shim_pid"], 9)
        st = await node.wait(uid, lambda s: cstatus(s, "c")["restartCount"] == 1 and cstatus(s, "c")["ready"])
        assert cstatus(st, "c")["lastState"]["terminated"]["reason"] == "ContainerStatusUnknown"
        assert cstatus(st, "c")["lastState"]["terminated"]["exitCode"] == 137
        await asyncio.sleep(0.1)
        assert not alive(handle.pid)  # PR_SET_PDEATHSIG: no untracked process left
        await node.stop(stop_pods=True)

    in_node(body)


def test_missing_command_and_bad_binary_give_clear_reasons() -> None:
    async def body(root: Path) -> None:
        node = await Node(root, backoff=0.2).start()
        nocmd = pod("nocmd", [{"name": "nginx", "image": "nginx:1.25"}])
        badbin = pod("badbin", [{"name": "c", "image": "x", "command": ["/no/such/binary"]}], restartPolicy="Never")
        node.manager.sync([nocmd, badbin])
        st = await node.wait(nocmd["metadata"]["uid"], lambda s: "waiting" in cstatus(s, "nginx")["state"]
                             and cstatus(s, "nginx")["state"]["waiting"]["reason"] == "CommandRequired")
        waiting = cstatus(st, "nginx")["state"]["waiting"]
        assert "nginx:1.25" in waiting["message"] and "command" in waiting["message"]
        assert st["phase"] == "Pending" and cstatus(st, "nginx")["image"] == "nginx:1.25"
        st = await node.wait(badbin["metadata"]["uid"], phase("Failed"))
        term = cstatus(st, "c")["state"]["terminated"]
        assert (term["exitCode"], term["reason"]) == (128, "StartError")
        assert "/no/such/binary" in term["message"] and "No such file" in term["message"]
        await node.stop(stop_pods=True)

    in_node(body)


def test_downward_api_env_sees_the_pod_ip_before_the_container_starts() -> None:
    async def body(root: Path) -> None:
        node = await Node(root, backoff=0.2, allocatable={"cpu": "2", "memory": "1Gi"}).start()
        field = lambda path: {"fieldRef": {"fieldPath": path}}  # noqa: E731
        p = pod("downward", [
            sh("main", "echo ip=$MY_IP ips=$MY_IPS host=$NODE_IP name=$MY_NAME/$MY_NS app=$APP;"
                       " echo cpu=$CPU_M mem=$MEM_MI url=$URL; exec sleep 300",
               env=[{"name": "MY_IP", "valueFrom": field("status.podIP")},
                    {"name": "MY_IPS", "valueFrom": field("status.podIPs")},
                    {"name": "NODE_IP", "valueFrom": field("status.hostIP")},
                    {"name": "MY_NAME", "valueFrom": field("metadata.name")},
                    {"name": "MY_NS", "valueFrom": field("metadata.namespace")},
                    {"name": "APP", "valueFrom": field("metadata.labels['app']")},
                    {"name": "CPU_M", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}},
                    {"name": "MEM_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory",
                                                                          "divisor": "1Mi"}}},
                    {"name": "URL", "value": "http://$(MY_IP):8080"}],
               resources={"limits": {"memory": "96Mi"}}),
        ], restartPolicy="Never")
        p["metadata"]["labels"] = {"app": "shop"}
        bad = pod("badfield", [sh("c", "true", env=[{"name": "X", "valueFrom": field("status.phase")}])])
        node.manager.sync([p, bad])
        uid = p["metadata"]["uid"]
        st = await node.wait(uid, lambda s: s["phase"] == "Running")
        logs = node.manager.container_logs("default", "downward", "main")
        assert logs and logs.current
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(read_log(logs.current)) < 2:
            await asyncio.sleep(0.05)
        ip = st["podIP"]
        assert [r.text.decode() for r in read_log(logs.current)] == [
            f"ip={ip} ips={ip} host=198.18.0.10 name=downward/default app=shop",
            f"cpu=2000 mem=96 url=http://{ip}:8080"]
        proc = node.manager.container_process("default", "downward", "main")
        assert proc is not None and proc.env["MY_IP"] == ip  # exec sees what the container got
        st = await node.wait(bad["metadata"]["uid"], lambda s: "waiting" in cstatus(s, "c")["state"]
                             and cstatus(s, "c")["state"]["waiting"]["reason"] == "CreateContainerConfigError")
        assert "env X: fieldRef.fieldPath 'status.phase' is not supported" in \
            cstatus(st, "c")["state"]["waiting"]["message"]
        await node.stop(stop_pods=True)
        assert node.lease_files() == [] and netns_names() == []

    in_node(body)


def test_configmap_and_secret_env_wait_for_their_objects() -> None:
    async def body(root: Path) -> None:
        configmaps = StaticConfigMaps({("default", "shared"): {"COLOR": "blue"}})
        secrets = StaticConfigMaps({("default", "creds"): {"USER": "svc", "bad key": "skipped"}})
        node = await Node(root, backoff=0.2, configmaps=configmaps, secrets=secrets).start()
        p = pod("cm", [sh("main", "echo color=$COLOR app_level=$APP_LEVEL; exec sleep 300",
                          envFrom=[{"configMapRef": {"name": "shared"}},
                                   {"prefix": "APP_", "configMapRef": {"name": "app"}}])])
        secret = pod("secret", [sh("c", "echo pw=$PW user=$S_USER; exec sleep 300", env=[{"name": "PW", "valueFrom": {
            "secretKeyRef": {"name": "db", "key": "pw"}}}], envFrom=[{"prefix": "S_", "secretRef": {"name": "creds"}},
                                                                    {"secretRef": {"name": "gone", "optional": True}}])])
        node.manager.sync([p, secret])
        uid = p["metadata"]["uid"]
        waiting = lambda s: "waiting" in cstatus(s, "main")["state"] and \
            cstatus(s, "main")["state"]["waiting"].get("reason") == "CreateContainerConfigError"  # noqa: E731
        st = await node.wait(uid, waiting)
        assert cstatus(st, "main")["state"]["waiting"]["message"] == 'configmap "app" not found'
        assert st["podIP"]  # the sandbox exists; only the container waits
        st = await node.wait(secret["metadata"]["uid"], lambda s: "waiting" in cstatus(s, "c")["state"]
                             and cstatus(s, "c")["state"]["waiting"].get("reason") == "CreateContainerConfigError")
        assert cstatus(st, "c")["state"]["waiting"]["message"] == 'env PW: secret "db" not found'
        secrets.items[("default", "db")] = {"pw": "s3cret"}  # the Secret appears: next retry starts it
        st = await node.wait(secret["metadata"]["uid"], lambda s: s["phase"] == "Running")
        slogs = node.manager.container_logs("default", "secret", "c")
        assert slogs and slogs.current
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not read_log(slogs.current):
            await asyncio.sleep(0.05)
        assert [r.text for r in read_log(slogs.current)] == [b"pw=s3cret user=svc"]
        configmaps.items[("default", "app")] = {"LEVEL": "debug"}  # the ConfigMap appears: next retry starts it
        st = await node.wait(uid, lambda s: s["phase"] == "Running")
        logs = node.manager.container_logs("default", "cm", "main")
        assert logs and logs.current and cstatus(st, "main")["restartCount"] == 0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not read_log(logs.current):
            await asyncio.sleep(0.05)
        assert [r.text for r in read_log(logs.current)] == [b"color=blue app_level=debug"]
        await node.stop(stop_pods=True)
        assert node.lease_files() == [] and netns_names() == []

    in_node(body)


def test_host_network_pod_shares_the_node_netns_and_teardown_leaves_it_alone() -> None:
    async def body(root: Path) -> None:
        node_netns = os.readlink("/proc/self/ns/net")
        node_uts = os.readlink("/proc/self/ns/uts")
        import socket
        listener = socket.socket()  # a port in the node's namespace, reached from the pod as 127.0.0.1
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        node = await Node(root, backoff=0.2).start()
        p = pod("hostnet", [
            sh("main", "echo net=$(readlink /proc/self/ns/net) uts=$(readlink /proc/self/ns/uts)"
                       " pid=$$$$ host=$(hostname) env=$HOSTNAME ip=$MY_IP etc=$(cat /etc/hostname);"
                       " exec sleep 300",
               env=[{"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
               ports=[{"containerPort": 80, "hostPort": 80}]),
        ], hostNetwork=True)
        uid = p["metadata"]["uid"]
        node.manager.sync([p])
        st = await node.wait(uid, lambda s: s["phase"] == "Running")
        assert st["podIP"] == st["hostIP"] == "198.18.0.10" and st["podIPs"] == [{"ip": "198.18.0.10"}]
        assert netns_names() == [] and node.lease_files() == []  # no netns, no CNI ADD
        logs = node.manager.container_logs("default", "hostnet", "main")
        assert logs and logs.current
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not read_log(logs.current):
            await asyncio.sleep(0.05)
        line = read_log(logs.current)[0].text.decode()
        fields_ = dict(part.split("=", 1) for part in line.split())
        assert fields_["net"] == node_netns  # the node's network namespace
        assert fields_["uts"] != node_uts and fields_["pid"] == "1"  # but its own UTS and PID namespaces
        assert (fields_["host"], fields_["env"], fields_["etc"], fields_["ip"]) == (
            "edge-node-9", "edge-node-9", "edge-node-9", "198.18.0.10")
        net = node.manager.pod_network("default", "hostnet")
        assert net is not None and net.netns_path == "" and net.ips == ("198.18.0.10",)
        proc = node.manager.container_process("default", "hostnet", "main")
        assert proc is not None
        out = subprocess.run(proc.enter_argv(["readlink", "/proc/self/ns/net"]), env=dict(proc.env),
                             capture_output=True, text=True, timeout=10)
        assert out.stdout.strip() == node_netns, out.stderr
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
        await node.stop(stop_pods=True)
        assert node.manager.status(uid) is None
        # Teardown left the node's network as it was: same links, lo up, our listener still works.
        assert subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout == links
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
        listener.close()
        assert os.readlink("/proc/self/ns/net") == node_netns and netns_names() == []

    in_node(body)


def test_deletion_sigterm_grace_sigkill_frees_ip_and_netns() -> None:
    async def body(root: Path) -> dict[str, float]:
        node = await Node(root).start()
        marker = f"{time.time_ns() % 10**9}.5"
        polite = pod("polite", [sh("c", f"trap 'echo bye; exit 7' TERM; sleep {marker} & while :; do sleep 0.05; done")],
                     terminationGracePeriodSeconds=10)
        stubborn = pod("stubborn", [sh("c", "trap '' TERM; while :; do sleep 0.05; done")],
                       terminationGracePeriodSeconds=1)
        node.manager.sync([polite, stubborn])
        for p in (polite, stubborn):
            await node.wait(p["metadata"]["uid"], phase("Running"))
        assert len(node.lease_files()) == 2 and len(netns_names()) == 2
        pids = {p["metadata"]["name"]: node.manager.container_process("default", p["metadata"]["name"], "c").pid
                for p in (polite, stubborn)}
        await asyncio.sleep(0.3)  # let the trap get installed
        assert any(marker in open(f"/proc/{d}/cmdline").read().replace("\0", " ")
                   for d in os.listdir("/proc") if d.isdigit() and os.path.exists(f"/proc/{d}/cmdline"))
        # The API marks both deleted (deletionTimestamp); the agent terminates them.
        for p in (polite, stubborn):
            p["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        t0 = time.monotonic()
        node.manager.sync([polite, stubborn])
        st = await node.wait(polite["metadata"]["uid"], lambda s: "terminated" in cstatus(s, "c")["state"])
        polite_s = time.monotonic() - t0
        assert cstatus(st, "c")["state"]["terminated"]["exitCode"] == 7
        logs = node.manager.container_logs("default", "polite", "c")
        assert read_log(logs.current)[-1].text == b"bye"
        st = await node.wait(stubborn["metadata"]["uid"], lambda s: "terminated" in cstatus(s, "c")["state"])
        stubborn_s = time.monotonic() - t0
        term = cstatus(st, "c")["state"]["terminated"]
        assert (term["exitCode"], term["signal"]) == (137, 9) and st["phase"] == "Failed"
        # The whole PID namespace is gone, background children included.
        assert not alive(pids["polite"]) and not alive(pids["stubborn"])
        assert not any(marker in open(f"/proc/{d}/cmdline").read().replace("\0", " ")
                       for d in os.listdir("/proc") if d.isdigit() and os.path.exists(f"/proc/{d}/cmdline"))
        await asyncio.sleep(0.3)
        assert node.lease_files() == [] and netns_names() == []  # network released at termination
        # The API object goes away: the pod is forgotten, files and logs too.
        node.manager.sync([])
        deadline = time.monotonic() + 5
        while node.manager.status(polite["metadata"]["uid"]) or node.manager.status(stubborn["metadata"]["uid"]):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert (polite["metadata"]["uid"], None) in node.changes
        assert not (root / "data" / "pods" / polite["metadata"]["uid"]).exists()
        assert not (root / "log" / f"default_polite_{polite['metadata']['uid']}").exists()
        await node.stop(stop_pods=True)
        return {"polite": polite_s, "stubborn": stubborn_s}

    took = in_node(body)
    assert took["polite"] < 2.0, took  # exited on SIGTERM, long before its 10 s grace
    assert 0.9 <= took["stubborn"] < 3.0, took  # SIGKILL after its 1 s grace


def test_agent_restart_readopts_running_pods_and_cleans_stale_ones() -> None:
    async def body(root: Path) -> None:
        node = await Node(root).start()
        keep = pod("keep", [sh("c", "echo started; exec sleep 300")])
        drop = pod("drop", [sh("c", "trap 'exit 0' TERM; while :; do sleep 0.05; done")])
        finish = pod("finish", [sh("c", "sleep 0.5; exit 4")], restartPolicy="Never")
        node.manager.sync([keep, drop, finish])
        for p in (keep, drop, finish):
            await node.wait(p["metadata"]["uid"], lambda s: s["phase"] == "Running")
        before = node.manager.status(keep["metadata"]["uid"])
        keep_pid = node.manager.container_process("default", "keep", "c").pid
        drop_ip = node.manager.status(drop["metadata"]["uid"])["podIP"]
        # A container started but never recorded (the agent died in between).
        keep_rec = node.manager._pods[keep["metadata"]["uid"]]
        ghost = await node.manager.runtime.start_container(
            keep_rec.spec, keep_rec.sandbox, dataclasses.replace(keep_rec.spec.containers[0], name="ghost"),
            restart_count=0, env={"PATH": "/usr/bin:/bin"})
        assert alive(ghost.pid, settle=0)
        await node.stop(stop_pods=False)  # the agent dies; pods keep running
        await asyncio.sleep(0.8)  # `finish` exits while no agent is watching
        # Debris of a crash between netns creation and saving state: a netns and
        # a lease owned by a sandbox no record knows.
        stale = sandbox_id("never-saved")
        subprocess.run(["ip", "netns", "add", stale], check=True)
        lease_dir = root / "data" / "cni" / "networks" / "edgectl"
        (lease_dir / "10.42.9.200").write_text(f"{stale}\r\neth0")
        node2 = await Node(root).start()
        await asyncio.wait_for(node2.manager.wait_loaded(), 10)
        # Before the first sync: adopted as they are, nothing started or killed.
        st = await node2.wait(keep["metadata"]["uid"], phase("Running"))
        assert cstatus(st, "c")["containerID"] == cstatus(before, "c")["containerID"]
        assert stale not in netns_names() and "10.42.9.200" not in node2.lease_files()
        await asyncio.sleep(0.1)
        assert not alive(ghost.pid) and not Path(ghost.data["dir"]).exists()
        st = await node2.wait(finish["metadata"]["uid"], phase("Failed"))
        assert cstatus(st, "c")["state"]["terminated"]["exitCode"] == 4
        node2.manager.sync([keep, finish])  # `drop` was deleted while the agent was down
        deadline = time.monotonic() + 10
        while node2.manager.status(drop["metadata"]["uid"]) is not None:
            assert time.monotonic() < deadline, node2.manager.status(drop["metadata"]["uid"])
            await asyncio.sleep(0.05)
        assert drop_ip not in node2.lease_files()
        assert sandbox_id(drop["metadata"]["uid"]) not in netns_names()
        st = node2.manager.status(keep["metadata"]["uid"])
        assert st["phase"] == "Running" and cstatus(st, "c")["restartCount"] == 0
        # CNI CHECK passes for the adopted pod, and names the problem once it is broken.
        sandbox = node2.manager._pods[keep["metadata"]["uid"]].sandbox
        await node2.manager.runtime.check_sandbox(sandbox)
        subprocess.run(["ip", "-n", sandbox.id, "addr", "flush", "dev", "eth0"], check=True)
        with pytest.raises(SandboxError, match="CNI CHECK failed in plugin bridge"):
            await node2.manager.runtime.check_sandbox(sandbox)
        assert node2.manager.container_process("default", "keep", "c").pid == keep_pid
        logs = node2.manager.container_logs("default", "keep", "c")
        assert [r.text for r in read_log(logs.current)] == [b"started"]
        await node2.stop(stop_pods=True)
        assert not alive(keep_pid)
        assert node2.lease_files() == [] and netns_names() == []

    in_node(body)


def test_cni_failure_is_reported_on_the_pod() -> None:
    async def body(root: Path) -> None:
        (root / "cni").mkdir()
        (root / "cni" / "05-broken.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": "broken",
            "plugins": [{"type": "bridge", "bridge": "cni9", "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.42.300.0/24"}]]}}]}))
        node = Node(root)
        node.config = RuntimeConfig(pod_cidr=None, data_dir=root / "data", log_dir=root / "log", cni_conf_dir=root / "cni")
        await node.start()
        p = pod("nonet", [sh("c", "sleep 300")])
        node.manager.sync([p])
        st = await node.wait(p["metadata"]["uid"], lambda s: "message" in s)
        assert st["phase"] == "Pending" and st["reason"] == "FailedCreatePodSandBox"
        assert "plugin bridge" in st["message"] and "10.42.300.0" in st["message"], st["message"]
        assert netns_names() == []  # the half-made sandbox was undone
        await node.stop(stop_pods=True)

    in_node(body)


# ---- probes ---------------------------------------------------------------------


def ready_of(st: dict[str, Any], name: str) -> bool:
    return bool(cstatus(st, name)["ready"])


def conditions_of(st: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in st["conditions"]}


def test_readiness_http_and_tcp_flip_ready_when_the_server_starts() -> None:
    async def body(root: Path) -> None:
        node = await Node(root).start()
        serve = "sleep 2; exec python3 -m http.server {port} --bind 0.0.0.0 --directory /"
        http = pod("http", [sh("web", serve.format(port=8080), ports=[{"name": "web", "containerPort": 8080}],
                               readinessProbe={"httpGet": {"port": "web", "path": "/etc/",
                                                           "httpHeaders": [{"name": "X-Probe", "value": "1"}]},
                                               "periodSeconds": 1})])
        tcp = pod("tcp", [sh("db", serve.format(port=9090),
                             readinessProbe={"tcpSocket": {"port": 9090}, "periodSeconds": 1})])
        closed = pod("closed", [sh("c", "sleep 1000",
                                   readinessProbe={"tcpSocket": {"port": 9999}, "periodSeconds": 1})])
        missing = pod("missing", [sh("c", serve.format(port=8081),
                                     readinessProbe={"httpGet": {"port": 8081, "path": "/no/such/file"},
                                                     "periodSeconds": 1})])
        node.manager.sync([http, tcp, closed, missing])
        uids = [p["metadata"]["uid"] for p in (http, tcp, closed, missing)]
        for uid in uids:
            st = await node.wait(uid, phase("Running"))
        st = node.manager.status(uids[0])
        assert st is not None and not ready_of(st, "web") and cstatus(st, "web")["started"]
        assert conditions_of(st)["Ready"] == conditions_of(st)["ContainersReady"] == "False"
        st = await node.wait(uids[0], lambda s: ready_of(s, "web"), timeout=10)
        assert conditions_of(st)["Ready"] == conditions_of(st)["ContainersReady"] == "True"
        # Ready False then True was pushed through on_change.
        seen = [ready_of(s, "web") for u, s in node.changes if u == uids[0] and s and s["phase"] == "Running"]
        assert False in seen and seen[-1] is True
        await node.wait(uids[1], lambda s: ready_of(s, "db"), timeout=10)
        await asyncio.sleep(3)  # several periods: a closed port and a 404 never make a container ready
        for uid, name in ((uids[2], "c"), (uids[3], "c")):
            st = node.manager.status(uid)
            assert st is not None and st["phase"] == "Running" and not ready_of(st, name)
            assert conditions_of(st)["Ready"] == "False" and cstatus(st, name)["restartCount"] == 0
        await node.stop(stop_pods=True)

    in_node(body)


def test_exec_liveness_failure_restarts_the_container() -> None:
    async def body(root: Path) -> None:
        node = await Node(root).start()
        mount = f"/tmp/edgectl-probe-{uuid.uuid4().hex[:8]}"
        # The flag file lives in an emptyDir mounted only inside the container's
        # mount namespace, so the probe passes only if it really runs in there.
        p = pod("live", [sh("app", f"touch {mount}/ok; sleep 2; rm {mount}/ok; exec sleep 1000",
                            volumeMounts=[{"name": "v", "mountPath": mount}],
                            livenessProbe={"exec": {"command": ["test", "-f", f"{mount}/ok"]},
                                           "periodSeconds": 1, "failureThreshold": 2})],
                volumes=[{"name": "v", "emptyDir": {}}])
        node.manager.sync([p])
        uid = p["metadata"]["uid"]
        st = await node.wait(uid, phase("Running"))
        first = cstatus(st, "app")["containerID"]
        await asyncio.sleep(1.5)
        st = node.manager.status(uid)
        assert st is not None and cstatus(st, "app")["restartCount"] == 0 and ready_of(st, "app")
        st = await node.wait(uid, lambda s: cstatus(s, "app")["restartCount"] == 1
                             and "running" in cstatus(s, "app")["state"], timeout=15)
        c = cstatus(st, "app")
        term = c["lastState"]["terminated"]
        assert term["containerID"] == first and c["containerID"] != first
        assert term["exitCode"] == 137 and term["reason"] == "Error"  # sleep is PID 1: SIGTERM ignored, SIGKILL
        assert not os.path.exists(mount + "/ok")
        await node.stop(stop_pods=True)

    in_node(body)


def test_startup_probe_holds_liveness_and_readiness_back_and_kills_on_failure() -> None:
    async def body(root: Path) -> None:
        node = await Node(root).start()
        mount = f"/tmp/edgectl-probe-{uuid.uuid4().hex[:8]}"
        check = {"exec": {"command": ["test", "-f", f"{mount}/started"]}, "periodSeconds": 1}
        slow = pod("slow", [sh("app", f"sleep 3; touch {mount}/started; exec sleep 1000",
                               volumeMounts=[{"name": "v", "mountPath": mount}],
                               startupProbe={**check, "failureThreshold": 10},
                               livenessProbe={**check, "failureThreshold": 1},
                               readinessProbe={"exec": {"command": ["true"]}, "periodSeconds": 1})],
                   volumes=[{"name": "v", "emptyDir": {}}])
        never = pod("never", [sh("app", "exec sleep 1000",
                                 startupProbe={"exec": {"command": ["false"]}, "periodSeconds": 1,
                                               "failureThreshold": 2})])
        node.manager.sync([slow, never])
        uid = slow["metadata"]["uid"]
        st = await node.wait(uid, phase("Running"))
        await asyncio.sleep(1.5)
        st = node.manager.status(uid)
        assert st is not None
        c = cstatus(st, "app")
        assert (c["started"], c["ready"], c["restartCount"]) == (False, False, 0)
        st = await node.wait(uid, lambda s: ready_of(s, "app"), timeout=10)
        assert cstatus(st, "app")["started"] and conditions_of(st)["Ready"] == "True"
        await asyncio.sleep(2)  # liveness now runs and passes
        st = node.manager.status(uid)
        assert st is not None and cstatus(st, "app")["restartCount"] == 0 and ready_of(st, "app")
        st = await node.wait(never["metadata"]["uid"], lambda s: cstatus(s, "app")["restartCount"] >= 1, timeout=15)
        c = cstatus(st, "app")
        assert c["lastState"]["terminated"]["exitCode"] == 137 and not c["ready"]
        assert conditions_of(st)["Ready"] == "False"
        await node.stop(stop_pods=True)

    in_node(body)


def test_host_network_tcp_readiness_dials_the_node_ip() -> None:
    async def body(root: Path) -> None:
        # The throwaway node namespace gets the node IP, as a real node has it.
        subprocess.run(["ip", "addr", "add", "198.18.0.10/32", "dev", "lo"], check=True)
        node = await Node(root).start()
        p = pod("hostnet-probe", [sh("srv", "sleep 2; exec python3 -m http.server 18080 --bind 198.18.0.10",
                                     readinessProbe={"tcpSocket": {"port": 18080}, "periodSeconds": 1},
                                     livenessProbe={"httpGet": {"port": 18080}, "periodSeconds": 1,
                                                    "initialDelaySeconds": 3, "failureThreshold": 2})],
                hostNetwork=True)
        uid = p["metadata"]["uid"]
        node.manager.sync([p])
        st = await node.wait(uid, phase("Running"))
        assert not ready_of(st, "srv")
        st = await node.wait(uid, lambda s: ready_of(s, "srv"), timeout=10)
        await asyncio.sleep(3)  # the httpGet liveness probe passes on the node IP too
        st = node.manager.status(uid)
        assert st is not None and cstatus(st, "srv")["restartCount"] == 0 and ready_of(st, "srv")
        await node.stop(stop_pods=True)

    in_node(body)


def test_exec_probe_timeout_kills_the_probe_command() -> None:
    async def body(root: Path) -> None:
        node = await Node(root).start()
        mount = f"/tmp/edgectl-probe-{uuid.uuid4().hex[:8]}"
        # Each run records its start; one that outlived timeoutSeconds would record its end.
        probe = f"echo x >> {mount}/begun; sleep 2; echo y >> {mount}/finished"
        p = pod("slowprobe", [sh("app", "exec sleep 1000", volumeMounts=[{"name": "v", "mountPath": mount}],
                                 readinessProbe={"exec": {"command": ["sh", "-c", probe]}, "periodSeconds": 1,
                                                 "timeoutSeconds": 1})],
                volumes=[{"name": "v", "emptyDir": {}}])
        uid = p["metadata"]["uid"]
        node.manager.sync([p])
        await node.wait(uid, phase("Running"))
        await asyncio.sleep(4.5)
        vol = root / "data" / "pods" / uid / "volumes" / "v"
        assert len((vol / "begun").read_text().split()) >= 3
        assert not (vol / "finished").exists()
        st = node.manager.status(uid)
        assert st is not None and not ready_of(st, "app") and cstatus(st, "app")["restartCount"] == 0
        await node.stop(stop_pods=True)

    in_node(body)
