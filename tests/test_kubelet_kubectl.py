"""Real kubectl (1.27-1.33) against our kubelet, through the real server and tunnel,
covering each wire protocol kubectl can choose:

- exec: SPDY (1.27, 1.29, and 1.33 with KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false),
  websocket v5 (1.33, and 1.29 with KUBECTL_REMOTE_COMMAND_WEBSOCKETS=true);
- exec -it: a pty whose size follows kubectl's terminal (driven under ``script``);
- port-forward: SPDY (1.27, 1.30, and 1.33 with KUBECTL_PORT_FORWARD_WEBSOCKETS=false)
  and websocket-wrapped SPDY (1.31, 1.33), into a server that listens only
  inside the pod's network namespace.

Which transport was used is read from the kubelet's own log record.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edgectl.agent.kubelet.testing import StaticPods, TunnelledKubelet, container_namespace
from edgectl.server.testing import ServerProcess, add_running_pod, join_node, kubectl_path, register_node, wait_for_tunnels

pytestmark = [
    pytest.mark.skipif(not kubectl_path("1.27").exists() or not kubectl_path("1.33").exists(), reason="kubectl binaries not installed"),
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare"),
]
NODE = "kltest-node"
HOSTNAME = "kltest-web"
POD_PORT = 18081


@dataclass
class Chain:
    srv: ServerProcess
    pods: StaticPods

    def __getattr__(self, name: str) -> Any:  # behave like the ServerProcess for the rest
        return getattr(self.srv, name)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    work = tmp_path_factory.mktemp("kubelet-kubectl")
    (work / "logs").mkdir()
    srv = ServerProcess(work / "srv")
    node: TunnelledKubelet | None = None
    with container_namespace(hostname=HOSTNAME, http_port=POD_PORT) as pid:
        try:
            srv.start()
            node = TunnelledKubelet(server_url=srv.url, node=NODE, certs=join_node(srv, NODE, password="kltest-password-1"),
                                    pods=StaticPods(pid=pid, log_dir=work / "logs"), workdir=work)
            node.start()
            register_node(srv, NODE, kubelet_port=node.port)
            add_running_pod(srv, name="web", node=NODE, container="main")
            wait_for_tunnels(srv, {NODE})
            yield Chain(srv, node.pods)
        finally:
            if node is not None:
                node.stop()
            srv.stop()


def kubectl(srv: ServerProcess, version: str, *args: str, env: dict[str, str] | None = None,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [str(kubectl_path(version)), "--kubeconfig", str(srv.kubeconfig),
           "--cache-dir", str(srv.workdir / f"cache-{version}"), *args]
    return subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def last_transport(caplog: pytest.LogCaptureFixture, message: str) -> str:
    records = [r for r in caplog.records if r.name.startswith("edgectl.agent.kubelet") and r.getMessage() == message]
    assert records, f"no kubelet {message!r} log record"
    return str(getattr(records[-1], "edgectl_fields", {}).get("transport"))


EXEC_CASES = [
    ("1.27", {}, "spdy"),
    ("1.29", {}, "spdy"),
    ("1.29", {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "true"}, "websocket"),
    ("1.33", {}, "websocket"),
    ("1.33", {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"}, "spdy"),
]


@pytest.mark.parametrize(("version", "env", "transport"), EXEC_CASES, ids=[f"{v}-{t}" for v, e, t in EXEC_CASES])
def test_kubectl_exec(chain: ServerProcess, caplog: pytest.LogCaptureFixture, version: str, env: dict[str, str],
                      transport: str) -> None:
    caplog.set_level(logging.INFO, logger="edgectl.agent.kubelet")
    out = kubectl(chain, version, "exec", "web", "--", "cat", "/proc/sys/kernel/hostname", env=env)
    assert (out.returncode, out.stdout) == (0, HOSTNAME + "\n"), out.stderr
    assert last_transport(caplog, "exec") == transport
    out = kubectl(chain, version, "exec", "web", "--", "sh", "-c", "echo $GREETING; echo err >&2; exit 3", env=env)
    assert out.returncode == 3 and out.stdout == "hi\n" and "err" in out.stderr, (out.stdout, out.stderr)
    data = "".join(f"line {i}\n" for i in range(20000))  # ~200 KB: well past one SPDY window
    out = kubectl(chain, version, "exec", "-i", "web", "--", "sh", "-c", "cat; echo done", input=data, env=env)
    assert out.returncode == 0 and out.stdout == data + "done\n", out.stderr


TTY_CASES = [("1.27", {}), ("1.33", {}), ("1.33", {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"})]


@pytest.mark.parametrize(("version", "env"), TTY_CASES, ids=["1.27-spdy", "1.33-websocket", "1.33-spdy"])
def test_kubectl_exec_tty_follows_the_terminal_size(chain: ServerProcess, version: str, env: dict[str, str]) -> None:
    if shutil.which("script") is None:
        pytest.skip("script(1) not installed")
    inner = (f"stty rows 33 cols 111; {kubectl_path(version)} --kubeconfig {chain.kubeconfig} "
             f"--cache-dir {chain.workdir / ('cache-' + version)} exec -it web -- sh -c '"
             # kubectl sends its size when it gets to it (seen seconds late under load, as with upstream
             # kubelets): wait for the size to arrive, then show it.
             "i=0; while [ \"$(stty size)\" = \"0 0\" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; "
             "stty size; tty; exit 5'")
    out = subprocess.run(["script", "-qec", inner, "/dev/null"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, **env}, stdin=subprocess.DEVNULL)
    assert "33 111" in out.stdout, out.stdout + out.stderr
    assert "/dev/pts/" in out.stdout
    assert "exit code 5" in out.stdout + out.stderr or out.returncode == 5, (out.returncode, out.stdout)


PF_CASES = [
    ("1.27", {}, "spdy"),
    ("1.30", {}, "spdy"),
    ("1.31", {}, "websocket"),
    ("1.33", {}, "websocket"),
    ("1.33", {"KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"}, "spdy"),
]


@pytest.mark.parametrize(("version", "env", "transport"), PF_CASES, ids=[f"{v}-{t}" for v, e, t in PF_CASES])
def test_kubectl_port_forward_into_the_pod_netns(chain: ServerProcess, caplog: pytest.LogCaptureFixture, version: str,
                                                 env: dict[str, str], transport: str) -> None:
    caplog.set_level(logging.INFO, logger="edgectl.agent.kubelet")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        local_port = s.getsockname()[1]
    cmd = [str(kubectl_path(version)), "--kubeconfig", str(chain.kubeconfig), "--cache-dir",
           str(chain.workdir / f"cache-{version}"), "port-forward", "pod/web", f"{local_port}:{POD_PORT}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env})
    try:
        deadline = time.monotonic() + 20
        bodies: list[bytes] = []
        while time.monotonic() < deadline and len(bodies) < 3:  # three connections over one session
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{local_port}/", timeout=5) as resp:
                    bodies.append(resp.read())
            except OSError:
                if proc.poll() is not None:
                    break
                time.sleep(0.2)
        assert len(bodies) == 3 and all(b"Directory listing" in b for b in bodies), proc.poll()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "error" not in err.lower() or "an error occurred" not in err, err
    kinds = {str(getattr(r, "edgectl_fields", {}).get("transport", "")) for r in caplog.records if r.getMessage() == "port-forward"}
    assert kinds, "kubelet saw no port-forward"
    assert transport in kinds, kinds


def _cri(text: str, stream: str = "stdout") -> str:
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000000000Z"
    return f"{ts} {stream} F {text}\n"


def test_kubectl_logs_options_and_follow(chain: Chain) -> None:
    log_dir = chain.pods.log_dir
    (log_dir / "0.log").write_text(_cri("previous run"))
    current = log_dir / "1.log"
    current.write_text(_cri("alpha") + _cri("beta", "stderr"))
    chain.pods.running = True
    for version in ("1.27", "1.33"):
        assert kubectl(chain, version, "logs", "web").stdout == "alpha\nbeta\n"
        assert kubectl(chain, version, "logs", "web", "--tail=1").stdout == "beta\n"
        assert kubectl(chain, version, "logs", "web", "--previous").stdout == "previous run\n"
        assert kubectl(chain, version, "logs", "web", "--limit-bytes=3").stdout == "alp"
        assert kubectl(chain, version, "logs", "web", "--since=1h").stdout == "alpha\nbeta\n"
    cmd = [str(kubectl_path("1.33")), "--kubeconfig", str(chain.kubeconfig), "--cache-dir",
           str(chain.workdir / "cache-1.33"), "logs", "-f", "web"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "alpha\n"
        assert proc.stdout.readline() == "beta\n"
        with current.open("a") as f:
            f.write(_cri("gamma"))
        assert proc.stdout.readline() == "gamma\n"  # -f sees new lines
        chain.pods.running = False  # the container ends: so does `logs -f`
        assert proc.wait(timeout=15) == 0
    finally:
        chain.pods.running = True
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


@pytest.mark.parametrize("version", ["1.27", "1.33"])
def test_kubectl_cp_both_ways(chain: Chain, tmp_path: Path, version: str) -> None:
    """kubectl cp is tar over exec: large stdin with a clean end, and output back."""
    payload = os.urandom(300_000)
    local = tmp_path / "in.bin"
    local.write_bytes(payload)
    remote = f"/tmp/kltest-cp-{os.getpid()}-{version}.bin"
    try:
        out = kubectl(chain, version, "cp", str(local), f"web:{remote}")
        assert out.returncode == 0, out.stderr
        digest = kubectl(chain, version, "exec", "web", "--", "sha256sum", remote).stdout.split()[0]
        assert digest == hashlib.sha256(payload).hexdigest()
        back = tmp_path / "back.bin"
        out = kubectl(chain, version, "cp", f"web:{remote}", str(back))
        assert out.returncode == 0, out.stderr
        assert back.read_bytes() == payload
    finally:
        Path(remote).unlink(missing_ok=True)  # the test container shares the host's /tmp


def test_python_client_exec_over_websocket_v4(chain: Chain) -> None:
    """The official Python client speaks v4.channel.k8s.io (no half-close)."""
    from kubernetes import client, config
    from kubernetes.stream import stream

    api = client.CoreV1Api(config.new_client_from_config(str(chain.kubeconfig)))
    out = stream(api.connect_get_namespaced_pod_exec, "web", "default", command=["sh", "-c", "echo $GREETING; exit 0"],
                 stderr=True, stdin=False, stdout=True, tty=False)
    assert out == "hi\n"
    resp = stream(api.connect_get_namespaced_pod_exec, "web", "default", command=["sh", "-c", "cat /proc/sys/kernel/hostname; exit 6"],
                  stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
    resp.run_forever(timeout=10)
    assert resp.read_stdout(timeout=1) == HOSTNAME + "\n"
    assert resp.returncode == 6  # decoded from the v4 JSON Status on channel 3
