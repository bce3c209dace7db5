#!/usr/bin/env python
"""Tunnel benchmarks, measured side by side in one run (absolute numbers and ratios).

1. One stream, 1 GiB over loopback: direct TCP; the tunnel (TLS on, server and
   agent in separate processes, uvloop); ``ssh -R`` (Debian's sshd on 127.0.0.1,
   throwaway keys, default cipher and aes128-gcm); a plain asyncio TCP relay
   (no TLS, no framing) with and without uvloop; and a pair of such relays with
   TLS between them (the tunnel's two hops and TLS, without its framing and flow
   control), which isolates what the protocol itself costs.
2. 1,000 streams echoing 1 KiB messages at once: aggregate throughput, p50/p99 RTT.
3. Head-of-line: one stream's reader stalls with 100 MB queued behind it; the
   other streams' throughput vs. without the stall; memory held for the stall.
4. Stream-open latency (dial -> OPEN_ACK with the agent's TCP connect), p50/p99.
5. Server RSS with 1,000 connected agents (simulated agents in 4 processes).

Usage: .venv/bin/python bench/tunnel.py [--gib 1] [--skip ssh,rss,...]
Every process started here is ended by PID.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
DEMO = [PY, "-m", "edgectl.tunnel.demo"]
ME = [PY, str(Path(__file__).resolve())]
TOKEN, ADMIN = "bench-token", "bench-admin"
MiB = 1024 * 1024
CHUNK = MiB
PAIR = "relay pair + TLS (uvloop)"

# ---------------------------------------------------------------------------
# helpers run as subprocesses: ``bench/tunnel.py _helper NAME ...``; each prints its port


def helper_sink() -> None:
    """Count bytes until EOF, then answer b"k" (the sender's end-of-transfer mark)."""
    srv = socket.create_server(("127.0.0.1", 0), backlog=4096)
    print(srv.getsockname()[1], flush=True)

    def serve(conn: socket.socket) -> None:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        with conn:
            while conn.recv_into(view):
                pass
            with contextlib.suppress(OSError):
                conn.sendall(b"k")

    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def helper_source(nbytes: int) -> None:
    """On connect, send ``nbytes`` then close."""
    srv = socket.create_server(("127.0.0.1", 0), backlog=4096)
    print(srv.getsockname()[1], flush=True)
    block = b"s" * CHUNK

    def serve(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            left = nbytes
            while left > 0:
                n = min(left, CHUNK)
                conn.sendall(block[:n])
                left -= n

    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def helper_relay(dest_port: int, use_uvloop: bool) -> None:
    """A plain asyncio TCP relay: no TLS, no framing (the Python limit)."""
    from edgectl.tunnel.loop import run
    from edgectl.tunnel.pipe import pipe

    async def main() -> None:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            dr, dw = await asyncio.open_connection("127.0.0.1", dest_port, limit=4 * MiB)
            await pipe(r, w, dr, dw)

        srv = await asyncio.start_server(handle, "127.0.0.1", 0, limit=4 * MiB)
        print(srv.sockets[0].getsockname()[1], flush=True)
        await asyncio.Event().wait()

    run(main(), use_uvloop=use_uvloop)


def helper_tls_relay(role: str, dest_port: int, cert: str, key: str, ca: str, use_uvloop: bool) -> None:
    """Half of a plain asyncio relay pair with TLS between the halves: the same two
    hops, the same TLS stack (asyncio/uvloop over OpenSSL) and the same direction of
    encryption as the tunnel, but no websocket, no framing, no multiplexing and no
    flow control. ``near`` takes plain TCP and dials ``far`` over TLS; ``far``
    terminates TLS and dials the sink. Tunnel / this pair = what framing and flow
    control cost in Python."""
    import ssl

    from edgectl.tunnel.loop import run

    async def main() -> None:
        if role == "far":
            server_ctx: ssl.SSLContext | None = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server_ctx.load_cert_chain(cert, key)  # type: ignore[union-attr]
            client_ctx, hostname = None, None
        else:
            server_ctx = None
            client_ctx = ssl.create_default_context(cafile=ca)
            hostname = "localhost"

        # TLS in asyncio has no half-close, so the pair carries one direction and
        # ends it by closing: near answers the sender's end mark once it has flushed
        # everything into TLS and closed it (a few MB may still be in flight; that
        # is noise at 1 GiB); far half-closes towards the sink and waits for it.
        async def copy(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while data := await r.read(CHUNK):
                w.write(data)
                await w.drain()

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            dr, dw = await asyncio.open_connection("127.0.0.1", dest_port, limit=4 * MiB, ssl=client_ctx,
                                                   server_hostname=hostname)
            await copy(r, dw)
            if role == "near":
                dw.close()
                with contextlib.suppress(OSError):
                    await dw.wait_closed()
                w.write(b"k")
            else:
                dw.write_eof()
                await dr.read(1)
                dw.close()
            with contextlib.suppress(OSError):
                await w.drain()
            w.close()

        srv = await asyncio.start_server(handle, "127.0.0.1", 0, limit=4 * MiB, ssl=server_ctx)
        print(srv.sockets[0].getsockname()[1], flush=True)
        await asyncio.Event().wait()

    run(main(), use_uvloop=use_uvloop)


def helper_agents(server: str, ca: str, count: int, prefix: str) -> None:
    """``count`` lightweight agents in one process (for the server RSS figure)."""
    from edgectl.tunnel.agent import AgentConfig, TunnelAgent, client_ssl_context
    from edgectl.tunnel.loop import run

    async def main() -> None:
        ctx = client_ssl_context(ca_file=ca)
        agents = [TunnelAgent(AgentConfig(server=server, node=f"{prefix}-{i}", token=TOKEN), ssl_context=ctx) for i in range(count)]
        tasks = []
        for a in agents:
            tasks.append(asyncio.create_task(a.run()))
            await asyncio.sleep(0.002)
        print(0, flush=True)
        await asyncio.Event().wait()

    run(main())


# ---------------------------------------------------------------------------
# process management


class Procs:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, argv: list[str], *, port_line: bool = True, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], int]:
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
                             env={**os.environ, **(env or {})})
        self.procs.append(p)
        port = 0
        if port_line:
            line = p.stdout.readline()  # type: ignore[union-attr]
            if not line:
                raise RuntimeError(f"{argv[:4]} exited early")
            port = int(line.split()[0]) if line.split()[0].isdigit() else 0
        return p, port

    def stop(self, p: subprocess.Popen[str]) -> None:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(3)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self) -> None:
        for p in list(self.procs):
            self.stop(p)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its reaped children), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def with_descendants(pid: int) -> list[int]:
    out = [pid]
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            for child in Path(f"/proc/{pid}/task/{tid}/children").read_text().split():
                out += with_descendants(int(child))
    return out


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def blast(port: int, nbytes: int) -> float:
    """Send nbytes to 127.0.0.1:port through whatever listens there; wait for the sink's mark; MB/s."""
    block = memoryview(b"b" * CHUNK)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * MiB)
        t0 = time.perf_counter()
        left = nbytes
        while left > 0:
            n = min(left, CHUNK)
            s.sendall(block[:n])
            left -= n
        s.shutdown(socket.SHUT_WR)
        mark = s.recv(1)
        dt = time.perf_counter() - t0
    if mark != b"k":
        raise RuntimeError("transfer did not complete")
    return nbytes / dt / 1e6


def gbit(mb_s: float) -> str:
    return f"{mb_s * 8 / 1000:5.2f} Gbit/s"


# ---------------------------------------------------------------------------
# the tunnel (standalone server + agent, separate processes)


class TunnelRig:
    def __init__(self, procs: Procs, tmp: Path, *, allow_ports: list[int], forwards: list[tuple[int, int]], uvloop: bool = True) -> None:
        from edgectl.tunnel.selfsigned import write_tls_files

        self.tls = write_tls_files(tmp / "tls")
        self.port = free_port()
        env = {} if uvloop else {"EDGECTL_TUNNEL_NO_UVLOOP": "1"}
        fw = []
        for listen, target in forwards:
            fw += ["--forward", f"127.0.0.1:{listen}=bench:tcp/127.0.0.1:{target}"]
        self.server, _ = procs.start([*DEMO, "serve", "--listen", f"127.0.0.1:{self.port}", "--cert", str(self.tls.server_cert),
                                      "--key", str(self.tls.server_key), "--token", TOKEN, "--admin-token", ADMIN,
                                      "--admission-rate", "2000", *fw], env=env)
        allow = [x for p in allow_ports for x in ("--allow-port", str(p))]
        self.agent, _ = procs.start([*DEMO, "connect", "--server", self.url, "--node", "bench", "--token", TOKEN,
                                     "--ca", str(self.tls.ca_cert), *allow], port_line=False, env=env)
        self.wait_sessions(1)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def status(self) -> dict[str, Any]:
        from edgectl.tunnel.cli import fetch_status
        from edgectl.tunnel.clientconfig import Credentials

        creds = Credentials(server=self.url, ca_pem=self.tls.ca_cert.read_text(), token=ADMIN)
        return fetch_status(creds, streams=False)

    def wait_sessions(self, n: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if len(self.status()["sessions"]) >= n:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{n} sessions did not connect")


# ---------------------------------------------------------------------------
# 1. single stream throughput


def ssh_rig(procs: Procs, tmp: Path, sink_port: int, cipher: str | None) -> tuple[int, dict[str, int]]:
    """sshd on loopback with throwaway keys; ``ssh -R`` back to the sink. Returns the -R port."""
    d = tmp / "ssh"
    if not (d / "host").exists():
        d.mkdir(exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host")], check=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "user")], check=True)
        shutil.copy(d / "user.pub", d / "authorized_keys")
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
    sport = free_port()
    (d / "sshd_config").write_text(
        f"Port {sport}\nListenAddress 127.0.0.1\nHostKey {d / 'host'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        f"StrictModes no\nPidFile {d / 'sshd.pid'}\nAllowTcpForwarding yes\nGatewayPorts no\n"
    )
    sshd, _ = procs.start(["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")], port_line=False)
    wait_port(sport)
    rport = free_port()
    argv = ["ssh", "-N", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
            "-o", "ExitOnForwardFailure=yes", "-o", "LogLevel=ERROR", "-i", str(d / "user"), "-p", str(sport),
            "-R", f"{rport}:127.0.0.1:{sink_port}", "root@127.0.0.1"]
    if cipher:
        argv[1:1] = ["-c", cipher]
    ssh, _ = procs.start(argv, port_line=False)
    wait_port(rport)
    return rport, {"sshd": sshd.pid, "ssh": ssh.pid}


def bench_single_stream(procs: Procs, tmp: Path, nbytes: int, skip: set[str]) -> dict[str, float]:
    sink_proc, sink = procs.start([*ME, "_helper", "sink"])
    results: dict[str, float] = {}
    cpu_per_gib: dict[str, float] = {}

    def measure(name: str, port: int, pids: dict[str, int] | None = None) -> None:
        blast(port, 64 * MiB)  # warm-up: windows grow, caches fill
        # CPU seconds per GiB do not depend on what else runs on this shared machine.
        trees = {k: with_descendants(p) for k, p in (pids or {}).items()}
        before = {k: sum(cpu_seconds(p) for p in t) for k, t in trees.items()}
        results[name] = blast(port, nbytes)
        spent = {k: sum(cpu_seconds(p) for p in t) - before[k] for k, t in trees.items()}
        cpu_per_gib[name] = sum(spent.values()) / (nbytes / 2**30)
        cpu = "  ".join(f"{k} {v / (nbytes / 2**30):.2f}" for k, v in spent.items())
        cpu = f"CPU-s/GiB: {cpu}" if cpu else ""
        print(f"  {name:<28} {results[name]:8.0f} MB/s  {gbit(results[name])}  {cpu}", flush=True)

    measure("direct TCP", sink, {"sink": sink_proc.pid})
    if "tunnel" not in skip:
        for label, uv in (("tunnel (TLS, uvloop)", True), ("tunnel (TLS, asyncio)", False)):
            fport = free_port()
            rig = TunnelRig(procs, tmp, allow_ports=[sink], forwards=[(fport, sink)], uvloop=uv)
            wait_port(fport)
            measure(label, fport, {"server": rig.server.pid, "agent": rig.agent.pid})
            procs.stop(rig.agent)
            procs.stop(rig.server)
    if "ssh" not in skip and shutil.which("ssh") and Path("/usr/sbin/sshd").exists():
        for label, cipher in (("ssh -R (default cipher)", None), ("ssh -R (aes128-gcm)", "aes128-gcm@openssh.com")):
            before = list(procs.procs)
            rport, pids = ssh_rig(procs, tmp, sink, cipher)
            measure(label, rport, pids)
            for p in [p for p in procs.procs if p not in before]:
                procs.stop(p)
    if "tunnel" not in skip:
        from edgectl.tunnel.selfsigned import write_tls_files

        tls = write_tls_files(tmp / "tls-pair")
        files = [str(tls.server_cert), str(tls.server_key), str(tls.ca_cert)]
        far, far_port = procs.start([*ME, "_helper", "tls_relay", "far", str(sink), *files, "1"])
        near, near_port = procs.start([*ME, "_helper", "tls_relay", "near", str(far_port), *files, "1"])
        measure(PAIR, near_port, {"near": near.pid, "far": far.pid})
        procs.stop(near)
        procs.stop(far)
    for label, uv in (("asyncio relay (uvloop)", True), ("asyncio relay (asyncio)", False)):
        p, rport = procs.start([*ME, "_helper", "relay", str(sink), "1" if uv else "0"])
        measure(label, rport, {"relay": p.pid})
        procs.stop(p)
    results.update({f"cpu_s_per_gib {k}": v for k, v in cpu_per_gib.items()})
    return results


# ---------------------------------------------------------------------------
# 2-4. in-process server (the API server dials in-process), agent in a subprocess


async def inprocess_benches(procs: Procs, tmp: Path, hol_bytes: int) -> dict[str, Any]:
    from edgectl.tunnel.selfsigned import write_tls_files
    from edgectl.tunnel.server import ServerConfig
    from edgectl.tunnel.standalone import server_ssl_context, start_standalone

    tls = write_tls_files(tmp / "tls2")
    echo_port = free_port()
    procs.start([*DEMO, "echo", "--listen", f"127.0.0.1:{echo_port}"], port_line=True)
    _, src_port = procs.start([*ME, "_helper", "source", str(hol_bytes)])
    srv = await start_standalone(token=TOKEN, admin_token=ADMIN, ssl_context=server_ssl_context(str(tls.server_cert), str(tls.server_key)),
                                 config=ServerConfig())
    procs.start([*DEMO, "connect", "--server", srv.url, "--node", "bench", "--token", TOKEN, "--ca", str(tls.ca_cert),
                 "--allow-port", str(echo_port), "--allow-port", str(src_port)], port_line=False)
    tun = srv.tunnel
    await tun.wait_for_session("bench", 20)
    out: dict[str, Any] = {}
    echo_target = f"tcp/127.0.0.1:{echo_port}"
    src_target = f"tcp/127.0.0.1:{src_port}"

    # 4. stream-open latency
    lat = []
    for _ in range(1000):
        t0 = time.perf_counter()
        r, w = await tun.dial("bench", echo_target)
        lat.append(time.perf_counter() - t0)
        w.close()
    lat.sort()
    out["open_p50_ms"] = lat[len(lat) // 2] * 1e3
    out["open_p99_ms"] = lat[int(len(lat) * 0.99)] * 1e3
    print(f"  stream open (dial->OPEN_ACK)   p50 {out['open_p50_ms']:.2f} ms  p99 {out['open_p99_ms']:.2f} ms", flush=True)

    # 2. 1,000 streams echoing 1 KiB messages at once
    msg = b"m" * 1024
    rounds = 20
    rtts: list[float] = []

    async def echo_stream() -> None:
        r, w = await tun.dial("bench", echo_target, timeout=30)
        for _ in range(rounds):
            t0 = time.perf_counter()
            w.write(msg)
            await r.readexactly(len(msg))
            rtts.append(time.perf_counter() - t0)
        w.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(echo_stream() for _ in range(1000)))
    dt = time.perf_counter() - t0
    rtts.sort()
    out["echo1000_mb_s"] = 1000 * rounds * len(msg) * 2 / dt / 1e6
    out["echo1000_p50_ms"] = rtts[len(rtts) // 2] * 1e3
    out["echo1000_p99_ms"] = rtts[int(len(rtts) * 0.99)] * 1e3
    print(f"  1,000 streams x {rounds} echoes of 1 KiB: {out['echo1000_mb_s']:.1f} MB/s both ways, "
          f"RTT p50 {out['echo1000_p50_ms']:.1f} ms p99 {out['echo1000_p99_ms']:.1f} ms", flush=True)

    # 3. head-of-line: 4 readers pull from the source; one more stream never reads
    async def pull(nbytes: int) -> float:
        r, w = await tun.dial("bench", src_target)
        t0 = time.perf_counter()
        got = 0
        while got < nbytes:
            data = await r.read(CHUNK)
            if not data:
                break
            got += len(data)
        w.abort("done")
        return got / (time.perf_counter() - t0) / 1e6

    # Alternate runs without and with a stalled stream (the machine is shared, so
    # single runs are noisy); report the medians.
    share = 24 * MiB
    base: list[float] = []
    stalled_runs: list[float] = []
    buffered = window = 0
    rss_delta = 0
    for _ in range(5):
        base.append(sum(await asyncio.gather(*(pull(share) for _ in range(4)))))
        stalled_r, stalled_w = await tun.dial("bench", src_target)  # never read; hol_bytes queued behind it
        await asyncio.sleep(0.3)
        rss0 = rss_kib(os.getpid())
        stalled_runs.append(sum(await asyncio.gather(*(pull(share) for _ in range(4)))))
        sess = tun.stats()["sessions"][0]
        info = next(s for s in sess["streams"] if s["id"] == stalled_w.stream_id)
        buffered, window = max(buffered, info["buffered"]), max(window, info["recv_window"])
        rss_delta = max(rss_delta, rss_kib(os.getpid()) - rss0)
        stalled_w.abort("done")
    out["hol_base_mb_s"] = statistics.median(base)
    out["hol_stalled_mb_s"] = statistics.median(stalled_runs)
    out["hol_ratio"] = out["hol_stalled_mb_s"] / out["hol_base_mb_s"]
    out["hol_stalled_buffered"] = buffered
    out["hol_stalled_window"] = window
    out["hol_rss_delta_kib"] = rss_delta
    print(f"  head-of-line: 4 streams {out['hol_base_mb_s']:.0f} MB/s alone, {out['hol_stalled_mb_s']:.0f} MB/s beside a stalled "
          f"stream ({out['hol_ratio']:.2f}x, medians of 5); stalled stream buffers {buffered / MiB:.2f} MiB "
          f"(window {window / MiB:.2f} MiB) of {hol_bytes / 1e6:.0f} MB queued; RSS delta {rss_delta / 1024:.1f} MiB",
          flush=True)
    await srv.close()
    return out


# ---------------------------------------------------------------------------
# 5. server RSS with 1,000 agents


def bench_rss(procs: Procs, tmp: Path, agents: int) -> dict[str, float]:
    rig_tls = tmp / "rss"
    from edgectl.tunnel.selfsigned import write_tls_files

    tls = write_tls_files(rig_tls)
    port = free_port()
    server, _ = procs.start([*DEMO, "serve", "--listen", f"127.0.0.1:{port}", "--cert", str(tls.server_cert), "--key", str(tls.server_key),
                             "--token", TOKEN, "--admin-token", ADMIN, "--admission-rate", "500"])
    time.sleep(0.5)
    base = rss_kib(server.pid)
    per = agents // 4
    t0 = time.monotonic()
    sims = [procs.start([*ME, "_helper", "agents", f"https://127.0.0.1:{port}", str(tls.ca_cert), str(per), f"sim{i}"])[0] for i in range(4)]

    from edgectl.tunnel.cli import fetch_status
    from edgectl.tunnel.clientconfig import Credentials

    creds = Credentials(server=f"https://127.0.0.1:{port}", ca_pem=tls.ca_cert.read_text(), token=ADMIN)
    n = 0
    while time.monotonic() - t0 < 120:
        with contextlib.suppress(Exception):
            n = len(fetch_status(creds, streams=False)["sessions"])
        if n >= per * 4:
            break
        time.sleep(0.5)
    connect_s = time.monotonic() - t0
    time.sleep(2)
    rss = rss_kib(server.pid)
    for p in sims:
        procs.stop(p)
    procs.stop(server)
    out = {"sessions": n, "rss_mib": rss / 1024, "base_mib": base / 1024, "per_session_kib": (rss - base) / max(n, 1), "connect_s": connect_s}
    print(f"  server RSS with {n} agent sessions: {out['rss_mib']:.0f} MiB (idle server {out['base_mib']:.0f} MiB, "
          f"{out['per_session_kib']:.0f} KiB per session; all connected in {connect_s:.1f} s)", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--hol-mb", type=int, default=100)
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--skip", default="", help="comma list of: single,ssh,tunnel,inproc,rss")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    procs = Procs()
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="edgectl-bench-tunnel-") as tmpdir:
        tmp = Path(tmpdir)
        try:
            if "single" not in skip:
                print(f"== one stream, {args.gib:g} GiB over loopback", flush=True)
                r = bench_single_stream(procs, tmp, int(args.gib * 1024 * MiB), skip)
                report["single"] = r
                t = r.get("tunnel (TLS, uvloop)")
                tc = r.get("cpu_s_per_gib tunnel (TLS, uvloop)")
                if t:
                    print("  ratios, tunnel (uvloop) / X:   throughput   CPU efficiency (X's CPU-s/GiB / tunnel's)", flush=True)
                    for k, v in r.items():
                        if k != "tunnel (TLS, uvloop)" and not k.startswith("cpu_s"):
                            xc = r.get(f"cpu_s_per_gib {k}")
                            eff = f"{xc / tc:5.2f}x" if xc and tc else "    -"
                            print(f"    {k:<28} {t / v:5.2f}x        {eff}", flush=True)
                    for name, goal in (("ssh -R (aes128-gcm)", 1.0), ("asyncio relay (uvloop)", 0.6)):
                        if r.get(name):
                            got = t / r[name]
                            print(f"  target >= {goal:.1f}x {name}: {got:.2f}x ({'met' if got >= goal else 'missed'})", flush=True)
                    if PAIR in r:
                        print(f"  what framing, multiplexing and flow control cost: tunnel / {PAIR} = {t / r[PAIR]:.2f}x "
                              f"throughput, {r[f'cpu_s_per_gib {PAIR}'] / tc:.2f}x CPU efficiency", flush=True)
            if "inproc" not in skip:
                print("== streams (server in this process, agent in another)", flush=True)
                from edgectl.tunnel.loop import run

                report["inproc"] = run(inprocess_benches(procs, tmp, args.hol_mb * 1000 * 1000))
                procs.stop_all()
            if "rss" not in skip:
                print(f"== {args.agents} agents", flush=True)
                report["rss"] = bench_rss(procs, tmp, args.agents)
        finally:
            procs.stop_all()
    if args.json:
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "_helper":
        name, rest = sys.argv[2], sys.argv[3:]
        if name == "sink":
            helper_sink()
        elif name == "source":
            helper_source(int(rest[0]))
        elif name == "relay":
            helper_relay(int(rest[0]), rest[1] == "1")
        elif name == "tls_relay":
            helper_tls_relay(rest[0], int(rest[1]), rest[2], rest[3], rest[4], rest[5] == "1")
        elif name == "agents":
            helper_agents(rest[0], rest[1], int(rest[2]), rest[3])
        sys.exit(0)
    main()
