"""Run a real ``edgectl server`` subprocess for tests and benchmarks.

Used by tests/test_server_*.py and bench/control_plane.py: start on a free
loopback port with ``--disable-agent``, wait for /readyz, talk to it with real
kubectl or with the admin certificate, and always stop it by PID.
"""
from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import yaml

from edgectl.joinproto import NODE_CERTS_PATH, NODE_NAME_HEADER, NODE_PASSWORD_HEADER, NodeCerts, basic_auth, parse_token

if TYPE_CHECKING:
    from edgectl.server.registry import Registry

KUBECTL_DIR = Path("/usr/lib/google-cloud-sdk/bin")


def kubectl_path(version: str) -> Path:
    return KUBECTL_DIR / f"kubectl.{version}"


class ServerProcess:
    def __init__(self, workdir: Path, *, extra_args: tuple[str, ...] = (), log_level: str = "info") -> None:
        self.workdir = Path(workdir)
        self.data_dir = self.workdir / "data"
        self.kubeconfig = self.workdir / "kubeconfig"
        self.log_path = self.workdir / "server.log"
        self.extra_args = extra_args
        self.log_level = log_level
        self.proc: subprocess.Popen[bytes] | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self._ctx: ssl.SSLContext | None = None
        self._conn: http.client.HTTPSConnection | None = None

    # --- lifecycle -------------------------------------------------------------------

    def command(self) -> list[str]:
        exe = Path(sys.executable).parent / "edgectl"
        return [str(exe), "--log-level", self.log_level, "server", "--disable-agent", "--data-dir", str(self.data_dir),
                "--https-listen-port", "0", "--bind-address", "127.0.0.1", "--write-kubeconfig", str(self.kubeconfig),
                *self.extra_args]

    def start(self, timeout: float = 20.0) -> "ServerProcess":
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.kubeconfig.exists():
            self.kubeconfig.unlink()
        env = dict(os.environ, EDGECTL_CONFIG=os.devnull)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> float:
        """Seconds from now until /readyz answered 200."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
            if self.kubeconfig.exists():
                try:
                    self._load_kubeconfig()
                    status, _, _ = self.request("GET", "/readyz", fresh=True)
                    if status == 200:
                        return time.monotonic() - t0
                except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
                    pass
            time.sleep(0.02)
        raise RuntimeError(f"server not ready after {timeout}s:\n{self.log_path.read_text()[-3000:]}")

    def _load_kubeconfig(self) -> None:
        doc = yaml.safe_load(self.kubeconfig.read_text())
        cluster = doc["clusters"][0]["cluster"]
        user = doc["users"][0]["user"]
        url = urlsplit(cluster["server"])
        self.host, self.port = url.hostname or "127.0.0.1", int(url.port or 443)
        ctx = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
        cert = self.workdir / "admin.crt"
        key = self.workdir / "admin.key"
        cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
        key.write_bytes(base64.b64decode(user["client-key-data"]))
        os.chmod(key, 0o600)
        ctx.load_cert_chain(cert, key)
        self._ctx = ctx
        self._conn = None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        os.kill(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(5)

    def kill9(self) -> None:
        self.stop(signal.SIGKILL)

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def rss_bytes(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    # --- clients ---------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None,
                fresh: bool = False, anonymous: bool = False) -> tuple[int, dict[str, str], bytes]:
        """One HTTPS request with the admin certificate (kept alive between calls)."""
        if isinstance(body, (dict, list)):
            data: bytes | None = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        else:
            data = body
        if anonymous:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            conn = http.client.HTTPSConnection(self.host, self.port, context=ctx, timeout=30)
        elif fresh or self._conn is None:
            assert self._ctx is not None
            conn = http.client.HTTPSConnection(self.host, self.port, context=self._ctx, timeout=30)
            if not fresh:
                self._conn = conn
        else:
            conn = self._conn
        try:
            conn.request(method, path, body=data, headers=headers or {})
            resp = conn.getresponse()
            payload = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload
        except (OSError, http.client.HTTPException):
            if conn is self._conn:
                self._conn.close()
                self._conn = None
            raise
        finally:
            if conn is not self._conn:
                conn.close()

    def json(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        code, _, payload = self.request(method, path, body, **kw)
        try:
            return code, json.loads(payload) if payload else None
        except ValueError:
            return code, payload.decode(errors="replace")

    def kubectl(self, version: str, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 30.0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [str(kubectl_path(version)), "--kubeconfig", str(self.kubeconfig),
               "--cache-dir", str(self.workdir / f"cache-{version}"), *args]
        out = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout,
                             env={**os.environ, **env} if env else None)
        if check and out.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        return out

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def temp_server(prefix: str = "edgectl-srv-") -> ServerProcess:
    return ServerProcess(Path(tempfile.mkdtemp(prefix=prefix)))


# --- a node in front of the server: the API calls a joining agent and its kubelet make ---

MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}


def join_node(srv: ServerProcess, node: str, *, password: str) -> NodeCerts:
    """The node's certificates from the real join endpoint, as ``edgectl agent`` gets them."""
    token = parse_token((srv.data_dir / "token").read_text().strip())
    code, _, body = srv.request("POST", NODE_CERTS_PATH, b"", anonymous=True, headers={
        "Authorization": basic_auth(token.secret), NODE_NAME_HEADER: node, NODE_PASSWORD_HEADER: password})
    assert code == 200, body
    return NodeCerts.from_json(body)


def register_node(srv: ServerProcess, node: str, *, kubelet_port: int) -> None:
    """Create the Node and publish its kubelet port in status.daemonEndpoints, as a kubelet does."""
    assert srv.json("POST", "/api/v1/nodes", {"metadata": {"name": node}})[0] == 201
    code, body = srv.json("PATCH", f"/api/v1/nodes/{node}/status",
                          {"status": {"daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}}}},
                          headers=MERGE_PATCH)
    assert code == 200, body


def add_running_pod(srv: ServerProcess, *, name: str, node: str, container: str) -> None:
    """A pod in "default" bound to ``node``, its status set to Running as its kubelet would."""
    assert srv.json("POST", "/api/v1/namespaces/default/pods", {
        "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [{"name": container, "image": "busybox"}]}})[0] == 201
    srv.json("PATCH", f"/api/v1/namespaces/default/pods/{name}/status", {"status": {"phase": "Running"}},
             headers=MERGE_PATCH)


def wait_for_tunnels(srv: ServerProcess, nodes: set[str], timeout: float = 15.0) -> None:
    """Until every node in ``nodes`` has a tunnel session on the server."""
    deadline = time.monotonic() + timeout
    body: Any = None
    while time.monotonic() < deadline:
        code, body = srv.json("GET", "/v1-edge/tunnels")
        if code == 200 and nodes <= {s.get("node") for s in body.get("sessions", [])}:
            return
        time.sleep(0.1)
    raise AssertionError(f"tunnel sessions never came up: {body}")


@contextlib.asynccontextmanager
async def sqlite_registry(db: Path, **registry_options: Any) -> AsyncIterator[Registry]:
    """A started Registry over a real SQLite store at ``db`` (no background
    compaction, so tests see every revision); both are closed on the way out."""
    from edgectl.server.registry import Registry
    from edgectl.server.storage.sqlite import SQLiteBackend, SQLiteOptions

    store = SQLiteBackend(db, options=SQLiteOptions(compact_interval=0))
    await store.start()
    reg = Registry(store, **registry_options)
    try:
        await reg.start()
        yield reg
    finally:
        await reg.close()
        await store.close()


def poll(what: str, fn: Callable[[], Any], timeout: float = 60.0, interval: float = 0.2) -> Any:
    """``fn()`` until it returns something truthy (returned); AssertionError naming
    ``what`` and the last value after ``timeout`` seconds. A bound, not a timing claim."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def get_ok(srv: "ServerProcess", path: str) -> Any:
    """GET ``path`` as admin; the body, asserting a 200."""
    code, body = srv.json("GET", path)
    assert code == 200, body
    return body


class PaperKubelet(threading.Thread):
    """A kubelet "on paper" for controller tests against a server without agents:
    every 0.15 s it lists the pods bound to ``nodes``, confirms graceful deletions
    (gracePeriodSeconds=0, unless the namespace is in ``hold``) and hands every
    other pod to :meth:`advance`, which patches its status as the test wants."""

    def __init__(self, srv: "ServerProcess", nodes: set[str], *, name: str = "paper-kubelet") -> None:
        super().__init__(daemon=True, name=name)
        self.srv, self.nodes = srv, nodes
        self.halt = threading.Event()
        self.hold: set[str] = set()  # namespaces whose pods do not finish terminating yet

    def run(self) -> None:
        while not self.halt.wait(0.15):
            try:
                self.sync()
            except (OSError, ValueError, KeyError, TypeError):
                pass  # the server may be stopping; try again

    def sync(self) -> None:
        code, body = self.srv.json("GET", "/api/v1/pods", fresh=True)
        if code != 200:
            return
        for pod in body["items"]:
            meta = pod["metadata"]
            if pod["spec"].get("nodeName") not in self.nodes:
                continue
            path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
            if meta.get("deletionTimestamp"):
                if meta["namespace"] not in self.hold:
                    self.srv.request("DELETE", path + "?gracePeriodSeconds=0", fresh=True)
                continue
            self.advance(pod, path)

    def advance(self, pod: dict[str, Any], path: str) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self.halt.set()
        self.join(5)
