"""Agent figures on a nat-edge lab (real edgectl server/agent processes, real kubectl 1.33).

1. join time: `edgectl agent` process start -> Node Ready seen by the API
   (fresh node name and data dir each round; target <= 3 s on the lab LAN);
2. agent RSS idle and with 20 pods (the agent process only: pods' shims and
   containers are separate processes; target <= 60 MB);
3. `kubectl exec pod -- true` p50/p95 to a pod behind NAT (through the
   tunnel) vs a pod on the server node (server and agent share a namespace);
4. `kubectl logs` throughput for a ~100 MB log.

Run as root: .venv/bin/python bench/agent.py [--rounds 5] [--execs 30] [--log-mb 100]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from edgectl.lab import Lab
from edgectl.lab import cluster
from edgectl.lab.testing import unique_name
from edgectl.lab.topology import load

ROOT = Path(__file__).resolve().parent.parent
KUBECTL = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33"
PY = "/usr/bin/python3"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kubectl(kc: Path, *args: str, input: str | None = None) -> str:
    res = subprocess.run([KUBECTL, "--kubeconfig", str(kc), *args], capture_output=True, text=True, input=input, timeout=120)
    if res.returncode:
        raise SystemExit(f"kubectl {' '.join(args)}: {res.stderr.strip()}")
    return res.stdout


def pod(name: str, node: str, command: list[str]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                       "spec": {"nodeSelector": {"kubernetes.io/hostname": node}, "terminationGracePeriodSeconds": 0,
                                "containers": [{"name": "main", "image": "debian:12", "command": command}]}})


def wait_running(kc: Path, names: list[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        items = json.loads(kubectl(kc, "get", "pods", "-o", "json"))["items"]
        phase = {p["metadata"]["name"]: p.get("status", {}).get("phase") for p in items}
        if all(phase.get(n) == "Running" for n in names):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"pods not Running: {[n for n in names if phase.get(n) != 'Running']}")
        time.sleep(0.3)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def bench_join(lab: Lab, rounds: int) -> list[float]:
    """Start an agent in the spare NAT'ed node ``joiner`` (fresh identity each round) and time Ready."""
    api = cluster.NodeApi(lab, "server")
    token = cluster.token_file(lab, "server").read_text().strip()
    url = f"https://{lab.address_for('joiner', 'server')}:6443"
    times = []
    try:
        for i in range(rounds):
            name = f"join-{i}"
            argv = [*cluster.edgectl_argv(), "agent", "--server", url, "--token", token, "--node-name", name,
                    "--data-dir", f"/var/lib/edgectl/bench-{i}"]
            t0 = time.perf_counter()
            proc = lab.popen("joiner", argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/")
            while not cluster.node_ready(api.get(f"/api/v1/nodes/{name}")):
                if proc.poll() is not None:
                    raise SystemExit(f"agent {name} exited with {proc.returncode}")
                time.sleep(0.01)
            times.append(time.perf_counter() - t0)
            proc.terminate()
            proc.wait(10)
    finally:
        api.close()
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--execs", type=int, default=30)
    ap.add_argument("--pods", type=int, default=20)
    ap.add_argument("--log-mb", type=int, default=100)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (network namespaces)")

    doc = load(ROOT / "lab" / "examples" / "nat-edge.yaml").to_doc()
    doc["name"] = unique_name("bagent")
    doc["nodes"]["server"]["publish"] = [f"6443:{free_port()}"]
    # The whole 100 MB log in one file (the default 10Mi rotation would cut `kubectl logs` short).
    doc["nodes"]["agent1"]["config"] = {"container-log-max-size": "1Gi"}
    # A plain host behind router2's NAT where the join benchmark starts agents.
    doc["nodes"]["joiner"] = {"kind": "host", "networks": {"site2": "192.168.2.20"}, "gateway": "router2"}
    t0 = time.perf_counter()
    with Lab.up(doc) as lab:
        lab_up = time.perf_counter() - t0
        kc = cluster.kubeconfig_for(lab)
        print(f"lab up with 4 Ready nodes (server + 3 agents): {lab_up:.2f} s")

        # 1. join time
        joins = bench_join(lab, args.rounds)
        print(f"join (agent start -> Node Ready), {len(joins)} rounds: median {statistics.median(joins):.2f} s, "
              f"max {max(joins):.2f} s   target <= 3 s   {'OK' if max(joins) <= 3 else 'MISS'}")

        # 2. RSS idle and with N pods (agent process only)
        (pid,) = cluster.role_pids(lab, "agent1")
        time.sleep(2)
        idle = rss_mb(pid)
        names = [f"rss-{i}" for i in range(args.pods)]
        kubectl(kc, "apply", "-f", "-", input="\n---\n".join(pod(n, "agent1", ["sleep", "3600"]) for n in names))
        wait_running(kc, names)
        time.sleep(3)
        loaded = rss_mb(pid)
        print(f"agent RSS: idle {idle:.1f} MB, with {args.pods} pods {loaded:.1f} MB   target <= 60 MB   "
              f"{'OK' if max(idle, loaded) <= 60 else 'MISS'}")
        kubectl(kc, "delete", "pods", *names, "--grace-period=0", "--wait=false")

        # 3. exec latency: NAT'ed node through the tunnel vs the server's own node
        kubectl(kc, "apply", "-f", "-", input=pod("far", "agent1", ["sleep", "3600"]) + "\n---\n"
                + pod("near", "server", ["sleep", "3600"]))
        wait_running(kc, ["far", "near"])
        lat: dict[str, list[float]] = {}
        for name in ("far", "near"):
            kubectl(kc, "exec", name, "--", "true")  # warm discovery cache
            samples = []
            for _ in range(args.execs):
                t = time.perf_counter()
                kubectl(kc, "exec", name, "--", "true")
                samples.append((time.perf_counter() - t) * 1000)
            lat[name] = samples
        for name, label in (("far", "agent1 behind NAT (tunnel over the lab WAN)"), ("near", "server node (same namespace)")):
            s = lat[name]
            print(f"kubectl exec -- true, {label}: p50 {pct(s, 50):.0f} ms, p95 {pct(s, 95):.0f} ms")
        print(f"  ratio NAT'ed/local p50: {pct(lat['far'], 50) / pct(lat['near'], 50):.2f}x")

        # 4. logs throughput
        lines = args.log_mb * 1024 * 1024 // 100
        writer = (f"import sys,time; line='x'*99+'\\n'; w=sys.stdout.write\n"
                  f"for _ in range({lines}): w(line)\n"
                  "sys.stdout.flush(); print('DONE', flush=True); time.sleep(3600)")
        kubectl(kc, "apply", "-f", "-", input=pod("biglog", "agent1", [PY, "-c", writer]))
        wait_running(kc, ["biglog"])
        deadline = time.monotonic() + 300
        while "DONE" not in kubectl(kc, "logs", "biglog", "--tail=1"):
            if time.monotonic() > deadline:
                raise SystemExit("the log writer did not finish in 300 s")
            time.sleep(0.5)
        t = time.perf_counter()
        proc = subprocess.run([KUBECTL, "--kubeconfig", str(kc), "logs", "biglog"], stdout=subprocess.PIPE, timeout=600)
        secs = time.perf_counter() - t
        size = len(proc.stdout)
        print(f"kubectl logs of {size / 1e6:.0f} MB through the tunnel: {secs:.2f} s = {size / 1e6 / secs:.1f} MB/s")


if __name__ == "__main__":
    main()
