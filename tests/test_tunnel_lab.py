"""Lab: an agent behind NAT dials out; the server reaches a service on the
agent's loopback through the tunnel, while a direct connection fails."""
from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from edgectl.tunnel.selfsigned import write_tls_files

pytestmark = pytest.mark.lab

PY = sys.executable
TOKEN = "lab-bootstrap-token"
ADMIN = "lab-admin-token"
# Our own small topology with plain hosts, so no server/agent roles start in it.
TOPOLOGY: dict[str, Any] = {
    "name": "tunnel",
    "networks": {"wan": {"cidr": "198.18.0.0/24"}, "site1": {"cidr": "192.168.1.0/24"}},
    "nodes": {
        "server": {"networks": {"wan": "198.18.0.10"}, "publish": ["7443:17443"]},
        "router1": {
            "kind": "router",
            "networks": {"wan": "198.18.0.1", "site1": "192.168.1.1"},
            "nat": {"from": ["site1"], "to": "wan"},
            "firewall": {"inbound": "deny"},
        },
        "agent1": {"networks": {"site1": "192.168.1.10"}, "gateway": "router1"},
    },
}


def _recv_exactly(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


def test_nat_agent_tunnel_reaches_loopback_service(lab_factory: Any, tmp_path: Path) -> None:
    lab = lab_factory(TOPOLOGY, prefix="tun")
    tls = write_tls_files(tmp_path, hosts=("198.18.0.10", "127.0.0.1"))
    demo = [PY, "-m", "edgectl.tunnel.demo"]
    lab.popen("agent1", [*demo, "echo", "--listen", "127.0.0.1:7000"])
    lab.popen("server", [*demo, "serve", "--listen", "0.0.0.0:7443", "--cert", str(tls.server_cert), "--key", str(tls.server_key),
                         "--token", TOKEN, "--admin-token", ADMIN, "--forward", "127.0.0.1:9000=agent1:tcp/127.0.0.1:7000"])
    lab.wait_listening("agent1", 7000)
    lab.wait_port("server", 7443)
    lab.popen("agent1", [*demo, "connect", "--server", "https://198.18.0.10:7443", "--node", "agent1", "--token", TOKEN,
                         "--ca", str(tls.ca_cert), "--kubelet-port", "7000"])

    # The session shows up in the status API (published to the host), with the NAT'ed address.
    status_cmd = [str(Path(PY).parent / "edgectl"), "tunnel", "status", "--server", "https://127.0.0.1:7443", "--token", ADMIN,
                  "--certificate-authority", str(tls.ca_cert), "--kubeconfig", "/nonexistent", "-o", "json"]
    doc: dict[str, Any] = {}
    for _ in range(100):
        out = lab.exec("server", status_cmd)
        if out.returncode == 0:
            doc = json.loads(out.stdout)
            if doc["sessions"]:
                break
        time.sleep(0.1)
    (sess,) = doc["sessions"]
    assert sess["node"] == "agent1"
    assert sess["remote"].startswith("198.18.0.1:"), "the server must see the NAT router's address"

    # Through the tunnel: server -> 127.0.0.1:9000 (forward) -> agent1's loopback echo.
    s = lab.socket("server")
    try:
        s.settimeout(10)
        s.connect(("127.0.0.1", 9000))
        payload = b"hello through NAT " * 1000
        s.sendall(payload)
        assert _recv_exactly(s, len(payload)) == payload
    finally:
        s.close()

    # Directly: the agent is unreachable from the WAN (no route to site1, and the
    # router drops inbound connections to its own WAN address).
    assert lab.probe("server", "192.168.1.10", 7000).outcome == "blocked"
    assert lab.probe("server", "agent1", 7001, listen=True).outcome == "blocked"  # even with a listener on all addresses
    assert lab.probe("server", "router1", 7001, listen=True).outcome == "blocked"
    # ...while the agent can reach the server (which is how the tunnel exists at all).
    assert lab.probe("agent1", "server", 7443).outcome == "reachable"
