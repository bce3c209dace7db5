"""Lab roles for ``server`` and ``agent`` nodes: real ``edgectl server`` / ``edgectl agent``.

A server node runs ``edgectl server`` (with its embedded agent, so it is a
node too) with the lab's token as the join secret and every address of the
node as a TLS SAN; an agent node runs ``edgectl agent`` against its server,
reading the full ``K10...`` token the server wrote into its data dir. Both read
the topology's ``config:`` from the node's /etc/edgectl/config.yaml; flags
passed here only fill in what the lab knows better (names, addresses, token).

``wait_ready`` talks to the server's API from this process through a socket
inside the server's network namespace (no kubectl, no route on the host) and
returns once the Node is Ready. For a server whose 6443 is published, a
kubeconfig pointing at ``127.0.0.1:<host port>`` is written next to the lab
state (127.0.0.1 is always in the serving certificate).
"""
from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from . import state
from .errors import LabError

if TYPE_CHECKING:
    from .api import Lab
    from .roles import RoleContext

SERVER_PORT = 6443
LOG_NAME = "edgectl.log"


def edgectl_argv() -> list[str]:
    exe = Path(sys.executable).parent / "edgectl"
    return [str(exe)] if exe.exists() else [sys.executable, "-c", "from edgectl.cli import main; main()"]


def node_dir(lab: Lab, node: str) -> Path:
    return state.node_dir(lab.name, node, lab.root)


def log_path(lab: Lab, node: str) -> Path:
    return node_dir(lab, node) / LOG_NAME


def admin_kubeconfig_in_node(lab: Lab, node: str) -> Path:
    """The admin kubeconfig the server wrote to its /etc/edgectl (host path)."""
    return node_dir(lab, node) / "etc-edgectl" / "edgectl.yaml"


def token_file(lab: Lab, server: str) -> Path:
    return node_dir(lab, server) / "var-lib-edgectl" / "server" / "token"


def kubeconfig_path(lab: Lab, server: str) -> Path:
    """Where the host-side kubeconfig for ``server`` lives."""
    return state.lab_dir(lab.name, lab.root) / f"kubeconfig-{server}.yaml"


def _start(lab: Lab, node: str, argv: list[str]) -> None:
    out = open(log_path(lab, node), "ab")
    try:
        # Own session: Ctrl-C on `lab up` must not reach the node's processes.
        lab.popen(node, argv, stdin=open(os.devnull, "rb"), stdout=out, stderr=out, start_new_session=True, cwd="/")
    finally:
        out.close()


def _config_list(config: dict[str, Any], key: str) -> list[str]:
    value = config.get(key)
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


class ServerRole:
    def start(self, ctx: RoleContext) -> str:
        node = ctx.node
        ips = [str(a.address) for a in node.attachments]
        argv = [*edgectl_argv(), "server", "--token", ctx.token]
        for san in dict.fromkeys([*_config_list(node.config, "tls-san"), *ips, node.name]):
            argv += ["--tls-san", san]
        if "node-name" not in node.config:
            argv += ["--node-name", node.name]
        if "node-ip" not in node.config and ips:
            argv += ["--node-ip", ips[0]]
        _start(ctx.lab, node.name, argv)
        return f"edgectl server (log {log_path(ctx.lab, node.name)})"

    def wait_ready(self, ctx: RoleContext, *, timeout: float) -> None:
        lab, name = ctx.lab, ctx.node.name
        deadline = time.monotonic() + timeout
        kubeconfig = admin_kubeconfig_in_node(lab, name)
        while not kubeconfig.exists():
            _check_deadline(lab, name, deadline, "the server did not write its admin kubeconfig")
            time.sleep(0.05)
        api = NodeApi(lab, name)
        try:
            node_name = str(ctx.node.config.get("node-name") or name)
            if ctx.node.config.get("disable-agent"):
                api.wait(lambda: api.get("/readyz", raw=True) == "ok", deadline, "the server is not ready")
            else:
                api.wait(lambda: node_ready(api.get(f"/api/v1/nodes/{node_name}")), deadline,
                         f"node {node_name} is not Ready")
        finally:
            api.close()
        write_host_kubeconfig(lab, name)


class AgentRole:
    def start(self, ctx: RoleContext) -> str:
        node = ctx.node
        server = node.server
        if not server or not ctx.server_url:
            raise LabError(f"agent {node.name} has no server to join")
        path = token_file(ctx.lab, server)
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise LabError(f"agent {node.name}: cannot read the token of server {server} ({path}: {exc.strerror})") from None
        argv = [*edgectl_argv(), "agent", "--server", ctx.server_url, "--token", token]
        if "node-name" not in node.config:
            argv += ["--node-name", node.name]
        if "node-ip" not in node.config and node.attachments:
            argv += ["--node-ip", str(node.attachments[0].address)]
        _start(ctx.lab, node.name, argv)
        return f"edgectl agent -> {server} (log {log_path(ctx.lab, node.name)})"

    def wait_ready(self, ctx: RoleContext, *, timeout: float) -> None:
        lab = ctx.lab
        assert ctx.node.server
        deadline = time.monotonic() + timeout
        node_name = str(ctx.node.config.get("node-name") or ctx.node.name)
        api = NodeApi(lab, ctx.node.server)
        try:
            api.wait(lambda: node_ready(api.get(f"/api/v1/nodes/{node_name}")), deadline,
                     f"node {node_name} is not Ready", watch_node=ctx.node.name)
        finally:
            api.close()


def node_ready(node: Any) -> bool:
    if not isinstance(node, dict):
        return False
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def _check_deadline(lab: Lab, node: str, deadline: float, what: str) -> None:
    if time.monotonic() > deadline:
        raise LabError(f"{lab.name}/{node}: {what} in time; last log lines:\n{tail(log_path(lab, node))}")


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class NodeApi:
    """Admin HTTPS calls to a server's 6443, dialled inside its network namespace."""

    def __init__(self, lab: Lab, server: str) -> None:
        self.lab = lab
        self.server = server
        doc = yaml.safe_load(admin_kubeconfig_in_node(lab, server).read_text())
        cluster = doc["clusters"][0]["cluster"]
        user = doc["users"][0]["user"]
        self._dir = tempfile.TemporaryDirectory(prefix="edgectl-lab-api-")
        cert, key = Path(self._dir.name) / "c.pem", Path(self._dir.name) / "k.pem"
        cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
        fd = os.open(key, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64decode(user["client-key-data"]))
        self.ctx = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
        self.ctx.load_cert_chain(cert, key)

    def get(self, path: str, *, raw: bool = False) -> Any:
        sock = self.lab.socket(self.server)
        sock.settimeout(2.0)
        try:
            sock.connect(("127.0.0.1", SERVER_PORT))
            conn = http.client.HTTPSConnection("127.0.0.1", SERVER_PORT, context=self.ctx, timeout=2.0)
            conn.sock = self.ctx.wrap_socket(sock, server_hostname="127.0.0.1")
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException):
            sock.close()
            return None
        conn.close()
        if resp.status != 200:
            return None
        return body.decode() if raw else json.loads(body)

    def wait(self, check: Any, deadline: float, what: str, *, watch_node: str | None = None) -> None:
        while not check():
            _check_deadline(self.lab, watch_node or self.server, deadline, what)
            time.sleep(0.1)

    def close(self) -> None:
        self._dir.cleanup()


def write_host_kubeconfig(lab: Lab, server: str) -> Path | None:
    """Copy the server's admin kubeconfig, pointed at its published 6443."""
    try:
        port = lab.host_port(server, SERVER_PORT)
    except LabError:
        return None
    doc = yaml.safe_load(admin_kubeconfig_in_node(lab, server).read_text())
    for cluster in doc.get("clusters") or []:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{port}"
        cluster["name"] = f"{lab.name}-{server}"
    for ctx in doc.get("contexts") or []:
        ctx["context"]["cluster"] = f"{lab.name}-{server}"
    path = kubeconfig_path(lab, server)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    return path


def kubeconfig_for(lab: Lab, server: str | None = None) -> Path:
    """The host kubeconfig of ``server`` (default: the first server)."""
    servers = [n.name for n in lab.topology.nodes if n.kind == "server"]
    if not servers:
        raise LabError(f"lab {lab.name} has no server node")
    if server is None:
        server = servers[0]
    elif server not in servers:
        raise LabError(f"lab {lab.name}: {server!r} is not a server (servers: {', '.join(servers)})")
    path = kubeconfig_path(lab, server)
    if not path.exists():
        try:
            lab.host_port(server, SERVER_PORT)
        except LabError:
            raise LabError(f"lab {lab.name}: server {server} does not publish port 6443 "
                           f'(add publish: ["6443:<host port>"] to it)') from None
        raise LabError(f"lab {lab.name}: no kubeconfig for {server} yet (is the server up? log: {log_path(lab, server)})")
    return path



# ---- stopping and restarting a node's edgectl process (tests, benchmarks) --------------


def role_pids(lab: Lab, node: str) -> list[int]:
    """PIDs of ``edgectl server|agent`` running in ``node`` (matched by network namespace)."""
    kind = lab.topology.node(node).kind
    want = os.stat(f"/run/netns/{lab.netns(node)}").st_ino
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino != want:
                continue
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"edgectl") for a in argv) and kind.encode() in argv:
            pids.append(int(entry))
    return pids


def stop_role(lab: Lab, node: str, *, timeout: float = 15.0) -> None:
    """SIGTERM the node's edgectl process and wait until it has exited."""
    import signal

    pids = role_pids(lab, node)
    for pid in pids:
        with _suppress_lookup():
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(os.path.exists(f"/proc/{p}") and not _zombie(p) for p in pids):
        if time.monotonic() > deadline:
            raise LabError(f"{lab.name}/{node}: edgectl did not exit within {timeout:.0f}s of SIGTERM")
        time.sleep(0.05)


def start_role(lab: Lab, node: str, *, wait: bool = True, timeout: float = 60.0) -> None:
    """Start (again) the node's role as ``lab up`` does, and wait until it is Ready."""
    from .roles import ROLES, RoleContext

    n = lab.topology.node(node)
    server_url = f"https://{lab.address_for(n.name, n.server)}:{SERVER_PORT}" if n.server else None
    ctx = RoleContext(lab=lab, node=n, token=lab.state.token, server_url=server_url)
    role = ROLES[n.kind]
    role.start(ctx)
    if wait:
        role.wait_ready(ctx, timeout=timeout)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


class _suppress_lookup:
    def __enter__(self) -> None:
        return None

    def __exit__(self, et: Any, ev: Any, tb: Any) -> bool:
        return et is ProcessLookupError
