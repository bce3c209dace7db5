"""Control-plane figures against issue 4's targets, measured on a real server.

Run: .venv/bin/python bench/control_plane.py   (about a minute; temp directories)

- cold start to /readyz 200 (fresh data dir: CA and keys are created), and a warm restart;
- idle RSS with 1 node and 500 objects;
- ``kubectl get pods`` with 1,000 pods: p95 of the API calls kubectl makes
  (Table LIST with limit=500, so two pages), and of the whole kubectl run;
- write-to-watch latency p95 (POST sent -> watch event read by a client);
- sustained writes/s (sequential on one connection, and 4 concurrent clients).
"""
from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from edgectl.server.testing import ServerProcess, kubectl_path

TABLE_ACCEPT = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
PODS = "/api/v1/namespaces/default/pods"
CMS = "/api/v1/namespaces/default/configmaps"


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def pod(i: int) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"bench-{i:05d}", "labels": {"app": "bench", "shard": str(i % 10)},
                     "annotations": {"note": "a realistic-size object"}},
        "spec": {"nodeName": "bench-node", "containers": [{
            "name": "app", "image": "registry.example/app:1.2.3", "args": ["--port=8080", "--verbose"],
            "ports": [{"containerPort": 8080, "name": "http"}],
            "env": [{"name": "MODE", "value": "prod"}, {"name": "LEVEL", "value": "info"}],
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}}]},
    }


def node() -> dict:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "bench-node", "labels": {"kubernetes.io/os": "linux"}}}


def cold_start(work: Path) -> tuple[float, float, ServerProcess]:
    srv = ServerProcess(work, log_level="warning")
    t0 = time.monotonic()
    srv.start(timeout=30)
    cold = time.monotonic() - t0
    srv.stop()
    t0 = time.monotonic()
    srv.start(timeout=30)
    warm = time.monotonic() - t0
    return cold, warm, srv


def idle_rss(srv: ServerProcess) -> float:
    assert srv.json("POST", "/api/v1/nodes", node())[0] == 201
    for i in range(499):
        code, _ = srv.json("POST", CMS, {"metadata": {"name": f"obj-{i:04d}"}, "data": {"k": "v" * 200}})
        assert code == 201
    time.sleep(3.0)
    return srv.rss_bytes() / 1e6


def list_latency(srv: ServerProcess) -> tuple[float, float, float]:
    for i in range(1000):
        code, body = srv.json("POST", PODS, pod(i))
        assert code == 201, body
    samples = []
    for _ in range(40):
        t0 = time.perf_counter()
        code, _, raw = srv.request("GET", f"{PODS}?limit=500", headers={"Accept": TABLE_ACCEPT})
        token = json.loads(raw)["metadata"].get("continue")
        code2, _, _ = srv.request("GET", f"{PODS}?limit=500&continue={token}", headers={"Accept": TABLE_ACCEPT})
        samples.append(time.perf_counter() - t0)
        assert code == code2 == 200
    kubectl = kubectl_path("1.33")
    runs = []
    if kubectl.exists():
        for _ in range(8):
            t0 = time.perf_counter()
            out = subprocess.run([str(kubectl), "--kubeconfig", str(srv.kubeconfig), "--cache-dir",
                                  str(srv.workdir / "kcache"), "get", "pods"], capture_output=True, text=True)
            runs.append(time.perf_counter() - t0)
            assert out.returncode == 0 and out.stdout.count("\n") == 1001, out.stderr
    return p95(samples), statistics.median(samples), p95(runs) if runs else float("nan")


def watch_latency(srv: ServerProcess, n: int = 200) -> float:
    rv = srv.json("GET", CMS + "?limit=1")[1]["metadata"]["resourceVersion"]
    assert srv._ctx is not None
    conn = http.client.HTTPSConnection(srv.host, srv.port, context=srv._ctx, timeout=30)
    conn.request("GET", f"{CMS}?watch=true&resourceVersion={rv}&labelSelector=lat")
    resp = conn.getresponse()
    arrived: dict[str, float] = {}
    done = threading.Event()

    def reader() -> None:
        while len(arrived) < n:
            line = resp.readline()
            if not line:
                break
            ev = json.loads(line)
            arrived[ev["object"]["metadata"]["name"]] = time.perf_counter()
        done.set()

    threading.Thread(target=reader, daemon=True).start()
    sent: dict[str, float] = {}
    for i in range(n):
        name = f"lat-{i:04d}"
        sent[name] = time.perf_counter()
        code, _ = srv.json("POST", CMS, {"metadata": {"name": name, "labels": {"lat": "1"}}})
        assert code == 201
    done.wait(30)
    conn.close()
    return p95([arrived[k] - sent[k] for k in sent if k in arrived])


def write_rate(srv: ServerProcess, seconds: float = 4.0, clients: int = 1) -> float:
    counts = [0] * clients

    def run(idx: int) -> None:
        mine = ServerProcess(srv.workdir)  # its own connection, sharing the admin TLS context
        mine.host, mine.port, mine._ctx = srv.host, srv.port, srv._ctx
        end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < end:
            code, _ = mine.json("POST", CMS, {"metadata": {"name": f"w{clients}-{idx}-{i}"}, "data": {"a": "b"}})
            assert code == 201
            i += 1
        counts[idx] = i

    threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / seconds


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="edgectl-bench-cp-"))
    srv: ServerProcess | None = None
    try:
        cold, warm, srv = cold_start(work)
        rss = idle_rss(srv)
        list_p95, list_median, kubectl_p95 = list_latency(srv)
        watch_p95 = watch_latency(srv)
        seq = write_rate(srv)
        par = write_rate(srv, clients=4)
    finally:
        if srv is not None:
            srv.stop()
    rows = [
        ("cold start to /readyz (fresh dir)", f"{cold:.2f} s", "<= 3 s", cold <= 3),
        ("warm restart to /readyz", f"{warm:.2f} s", "<= 3 s", warm <= 3),
        ("idle RSS, 1 node + 500 objects", f"{rss:.0f} MB", "<= 150 MB", rss <= 150),
        ("get pods (1,000, Table, 2 pages) p95", f"{list_p95 * 1000:.0f} ms", "<= 100 ms", list_p95 <= 0.1),
        ("  same, median", f"{list_median * 1000:.0f} ms", "", None),
        ("  whole `kubectl get pods` run p95", f"{kubectl_p95 * 1000:.0f} ms", "(info)", None),
        ("write-to-watch latency p95", f"{watch_p95 * 1000:.1f} ms", "<= 100 ms", watch_p95 <= 0.1),
        ("sustained writes/s, 1 client", f"{seq:.0f}/s", "(info)", None),
        ("sustained writes/s, 4 clients", f"{par:.0f}/s", "(info)", None),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; other work on the machine skews the p95s)")
    print(f"{'metric':<{width}}  {'measured':>10}  {'target':>10}")
    for name, value, target, ok in rows:
        mark = "" if ok is None else ("  ok" if ok else "  MISSED")
        print(f"{name:<{width}}  {value:>10}  {target:>10}{mark}")
    return 0 if all(ok is not False for *_, ok in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
