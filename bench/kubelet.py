"""Kubelet API figures on a real TLS kubelet and a real container namespace.

Run (root): .venv/bin/python bench/kubelet.py   (about 30 s; temp directories)

Each figure is printed next to a baseline measured in the same run:

- SPDY framer: DATA encode+decode MB/s; SYN_STREAM (zlib headers) frames/s;
- exec ``true``: p50/p95 over websocket v5 and over SPDY v4 (TLS to the kubelet,
  no tunnel), against spawning ``nsenter ... true`` alone (the floor);
- containerLogs of a 100 MB CRI log: MB/s (the raw page-cache read is shown
  for scale), and ``tailLines=10`` latency on it;
- port-forward download MB/s (SPDY and websocket-wrapped SPDY) against a
  direct socket opened inside the pod netns;
- through the real server and tunnel with real kubectl: ``kubectl exec -- true``
  p50/p95 (1.27 SPDY, 1.33 websocket) and ``kubectl logs`` of the 100 MB log.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgectl.agent.kubelet import client as kc
from edgectl.agent.kubelet.portforward import _connect_in_netns
from edgectl.agent.kubelet.server import KubeletConfig, KubeletServer
from edgectl.agent.kubelet.testing import StaticPods, container_namespace
from edgectl.agent.streams import channels as ch
from edgectl.agent.streams.spdy_frames import DataFrame, FrameDecoder, FrameEncoder, SynStream
from edgectl.server.pki import issue

SOURCE_PORT = 18090
CHUNKS = 1024  # x 64 KiB = 64 MiB per port-forward download
SOURCE = (
    "import socket\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    f"s.bind(('127.0.0.1', {SOURCE_PORT})); s.listen(8); buf = b'x' * 65536\n"
    "while True:\n"
    "    c, _ = s.accept(); n = int(c.recv(32).strip())\n"
    "    for _ in range(n): c.sendall(buf)\n"
    "    c.close()\n"
)


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def bench_framer() -> None:
    payload = os.urandom(16 * 1024)
    enc, dec = FrameEncoder(), FrameDecoder()
    n = 4000
    t = time.perf_counter()
    for _ in range(n):
        dec.feed(enc.encode(DataFrame(1, payload)))
    data_mbs = n * len(payload) / (time.perf_counter() - t) / 1e6
    headers = (("streamtype", "data"), ("port", "8080"), ("requestid", "17"))
    t = time.perf_counter()
    for i in range(n):
        dec.feed(enc.encode(SynStream(2 * i + 1, headers)))
    syn_rate = n / (time.perf_counter() - t)
    print(f"spdy framer: DATA 16 KiB encode+decode {data_mbs:,.0f} MB/s; SYN_STREAM {syn_rate:,.0f} frames/s")


def write_certs(root: Path) -> None:
    now = issue.now_utc()
    server_ca, client_ca = issue.new_ca("bench-server-ca", now=now), issue.new_ca("bench-client-ca", now=now)
    serving = issue.issue_leaf(server_ca, common_name="bench-node", usage="server", ips=["127.0.0.1"], now=now)
    apiserver = issue.issue_leaf(client_ca, common_name="system:kube-apiserver-kubelet-client",
                                 organizations=["system:masters"], usage="client", now=now)
    for name, ck in (("serving", serving), ("apiserver", apiserver)):
        (root / f"{name}.crt").write_bytes(ck.cert_pem)
        (root / f"{name}.key").write_bytes(ck.key_pem)
    (root / "client-ca.crt").write_bytes(client_ca.cert_pem)
    (root / "server-ca.crt").write_bytes(server_ca.cert_pem)


def write_log(path: Path, size: int) -> None:
    ts = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000000000Z")
    line = f"{ts} stdout F {'log line payload ' * 5}\n".encode()
    block = line * ((1 << 20) // len(line) + 1)
    with path.open("wb") as f:
        written = 0
        while written < size:
            f.write(block)
            written += len(block)


async def run(root: Path, pid: int) -> None:
    import ssl

    logs = root / "logs"
    logs.mkdir()
    write_log(logs / "0.log", 100 * 1024 * 1024)
    pods = StaticPods(pid=pid, log_dir=logs, running=False)
    server = KubeletServer(KubeletConfig(cert_file=root / "serving.crt", key_file=root / "serving.key",
                                         client_ca_file=root / "client-ca.crt", port=0), pods=pods)
    host, port = await server.start()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(root / "server-ca.crt"))
    ctx.load_cert_chain(str(root / "apiserver.crt"), str(root / "apiserver.key"))
    exec_target = "/exec/default/web/main?command=true&output=1"
    try:
        # exec latency
        floor, ws_times, spdy_times = [], [], []
        argv = pods.container_process("default", "web", "main").enter_argv(["true"])  # type: ignore[union-attr]
        for _ in range(30):
            t = time.perf_counter()
            subprocess.run(argv, check=True)
            floor.append(time.perf_counter() - t)
            t = time.perf_counter()
            raw = await kc.open_connection(host, port, ssl_context=ctx)
            ws = await kc.ws_connect(raw, url=f"wss://{host}:{port}{exec_target}", subprotocols=[ch.V5])
            res = await kc.ws_exec(ws, stdin=None)
            assert res.outcome == ch.ExecOutcome(0)
            ws_times.append(time.perf_counter() - t)
            t = time.perf_counter()
            raw = await kc.open_connection(host, port, ssl_context=ctx)
            _, conn = await kc.spdy_upgrade(raw, target=exec_target, host=host, protocols=[ch.V4])
            assert conn is not None
            res = await kc.spdy_exec(conn, protocol=ch.V4, stdin=None)
            assert res.outcome == ch.ExecOutcome(0)
            spdy_times.append(time.perf_counter() - t)
        ms = lambda s: f"p50 {pct(s, .5) * 1e3:.1f} ms / p95 {pct(s, .95) * 1e3:.1f} ms"  # noqa: E731
        print(f"exec true: websocket v5 {ms(ws_times)}; SPDY v4 {ms(spdy_times)}; bare nsenter spawn {ms(floor)}")

        # containerLogs throughput
        size = (logs / "0.log").stat().st_size
        t = time.perf_counter()
        with (logs / "0.log").open("rb") as f:
            while f.read(1 << 20):
                pass
        raw_mbs = size / (time.perf_counter() - t) / 1e6
        raw = await kc.open_connection(host, port, ssl_context=ctx)
        t = time.perf_counter()
        raw.writer.write(b"GET /containerLogs/default/web/main HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = 0
        while chunk := await raw.reader.read(1 << 20):
            got += len(chunk)
        api_mbs = size / (time.perf_counter() - t) / 1e6
        raw.writer.close()
        tails = []
        for _ in range(20):
            raw = await kc.open_connection(host, port, ssl_context=ctx)
            t = time.perf_counter()
            raw.writer.write(b"GET /containerLogs/default/web/main?tailLines=10 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            while await raw.reader.read(1 << 16):
                pass
            tails.append(time.perf_counter() - t)
            raw.writer.close()
        print(f"containerLogs 100 MB over TLS: {api_mbs:,.0f} MB/s of log file ({got / size:.2f} bytes out per byte in; "
              f"page-cache read of the same file {raw_mbs:,.0f} MB/s); tailLines=10 p50 {pct(tails, .5) * 1e3:.1f} ms")

        # port-forward throughput
        total = CHUNKS * 65536
        t = time.perf_counter()
        sock = await asyncio.to_thread(_connect_in_netns, f"/proc/{pid}/ns/net", SOURCE_PORT, 5.0)
        sock.setblocking(False)
        r, w = await asyncio.open_connection(sock=sock)
        w.write(f"{CHUNKS}\n".encode())
        n = 0
        while chunk := await r.read(1 << 20):
            n += len(chunk)
        w.close()
        direct_mbs = n / (time.perf_counter() - t) / 1e6
        results = {}
        for kind in ("spdy", "websocket"):
            raw = await kc.open_connection(host, port, ssl_context=ctx)
            if kind == "spdy":
                _, conn = await kc.spdy_upgrade(raw, target="/portForward/default/web", host=host,
                                                protocols=[ch.PORTFORWARD_PROTOCOL])
            else:
                wsc = await kc.ws_connect(raw, url=f"wss://{host}:{port}/portForward/default/web",
                                          subprotocols=[ch.WS_PORTFORWARD_PROTOCOL])
                conn = kc.ws_spdy_connection(wsc)
            assert conn is not None
            runner = asyncio.create_task(conn.run())
            t = time.perf_counter()
            _, data = await kc.portforward_streams(conn, port=SOURCE_PORT, request_id=0)
            await data.write(f"{CHUNKS}\n".encode())
            n = 0
            while chunk := await data.read():
                n += len(chunk)
            assert n == total, n
            results[kind] = n / (time.perf_counter() - t) / 1e6
            await conn.close()
            runner.cancel()
        print(f"port-forward 64 MiB download: SPDY {results['spdy']:,.0f} MB/s, websocket-wrapped SPDY "
              f"{results['websocket']:,.0f} MB/s vs direct socket in the netns {direct_mbs:,.0f} MB/s "
              f"(ratios {results['spdy'] / direct_mbs:.2f}, {results['websocket'] / direct_mbs:.2f})")
    finally:
        await server.close()


def bench_kubectl(root: Path, pid: int) -> None:
    from edgectl.agent.kubelet.testing import TunnelledKubelet
    from edgectl.server.testing import ServerProcess, add_running_pod, join_node, kubectl_path, register_node

    if not kubectl_path("1.27").exists() or not kubectl_path("1.33").exists():
        print("kubectl 1.27/1.33 not installed: skipping the end-to-end figures")
        return
    node_name = "bench-node"
    srv = ServerProcess(root / "srv")
    node = None
    logs = root / "logs"  # the 100 MB log written by run()
    try:
        srv.start()
        node = TunnelledKubelet(server_url=srv.url, node=node_name, certs=join_node(srv, node_name, password="bench-pw-1"),
                                pods=StaticPods(pid=pid, log_dir=logs, running=False), workdir=root)
        node.start()
        register_node(srv, node_name, kubelet_port=node.port)
        add_running_pod(srv, name="web", node=node_name, container="main")

        def kubectl(version: str, *args: str) -> subprocess.CompletedProcess[bytes]:
            return subprocess.run([str(kubectl_path(version)), "--kubeconfig", str(srv.kubeconfig), "--cache-dir",
                                   str(root / f"cache-{version}"), *args], capture_output=True, timeout=120)

        deadline = time.monotonic() + 20
        while kubectl("1.33", "exec", "web", "--", "true").returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("tunnel never came up")
            time.sleep(0.2)
        for version, label in (("1.27", "SPDY"), ("1.33", "websocket v5")):
            times = []
            for _ in range(20):
                t = time.perf_counter()
                assert kubectl(version, "exec", "web", "--", "true").returncode == 0
                times.append(time.perf_counter() - t)
            gets = []
            for _ in range(20):  # the same kubectl start-up and pod GET, without the exec
                t = time.perf_counter()
                assert kubectl(version, "get", "pod", "web", "-o", "name").returncode == 0
                gets.append(time.perf_counter() - t)
            print(f"kubectl {version} exec true via server+tunnel ({label}): p50 {pct(times, .5) * 1e3:.0f} ms / "
                  f"p95 {pct(times, .95) * 1e3:.0f} ms; kubectl get pod alone p50 {pct(gets, .5) * 1e3:.0f} ms")
        size = (logs / "0.log").stat().st_size
        t = time.perf_counter()
        out = kubectl("1.33", "logs", "web")
        elapsed = time.perf_counter() - t
        assert out.returncode == 0 and len(out.stdout) > size // 2, out.stderr
        print(f"kubectl logs of a 100 MB CRI log via server+tunnel: {size / elapsed / 1e6:,.0f} MB/s of log "
              f"({elapsed:.1f} s)")
    finally:
        if node is not None:
            node.stop()
        srv.stop()


def main() -> int:
    if os.geteuid() != 0:
        print("bench/kubelet.py needs root (namespaces)", file=sys.stderr)
        return 1
    bench_framer()
    with tempfile.TemporaryDirectory(prefix="kubelet-bench-") as tmp:
        root = Path(tmp)
        write_certs(root)
        with container_namespace(hostname="bench-pod", main=f"exec python3 -c \"{SOURCE}\"", listen_port=SOURCE_PORT) as pid:
            asyncio.run(run(root, pid))
            bench_kubectl(root, pid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
