"""pytest helpers for lab tests: unique names, a ``lab_factory`` fixture, example paths.

Use from tests/conftest.py (already wired)::

    def test_something(lab_factory):
        lab = lab_factory("nat-edge")            # an example name, a path, a dict or a Topology
        lab.exec("agent1", ["ping", "-c1", lab.node_ip("server")], check=True)

Every lab gets a unique name (``t-<prefix>-<6 hex>``) so parallel runs never
collide, and is removed after the test - also when it fails, and at interpreter
exit as a last resort (Ctrl-C).
"""
from __future__ import annotations

import atexit
import json
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from .api import Lab, to_topology
from .topology import Topology

EXAMPLES = Path(__file__).parent / "examples"
_live: dict[str, Lab] = {}


def unique_name(prefix: str = "lab") -> str:
    return f"t-{prefix}-{secrets.token_hex(3)}"


def example(name: str) -> Path:
    """Path of ``lab/examples/<name>.yaml``."""
    return EXAMPLES / f"{name}.yaml"


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("lab tests need root (network namespaces)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_free_host_ports(topo: Topology) -> Topology:
    """Replace every published host port by a free one, so tests never fight over 16443."""
    nodes = tuple(
        replace(n, publish=tuple(replace(p, host_port=free_port()) for p in n.publish)) for n in topo.nodes
    )
    return replace(topo, nodes=nodes)


def up(topology: Topology | str | Path | Mapping[str, Any], *, prefix: str | None = None,
       free_ports: bool = True, roles: bool = True) -> Lab:
    """Bring up a lab under a unique name; ``topology`` may be an example name like "nat-edge".

    With ``free_ports`` (default) published host ports are replaced by free
    ones; ask ``lab.host_port(node, node_port)`` where a node port landed.
    ``roles=False`` builds only the network (no edgectl server/agent processes).
    """
    if isinstance(topology, str) and "/" not in topology and not topology.endswith(".yaml"):
        topology = example(topology)
    if prefix is None:
        prefix = Path(str(topology)).stem[:8] if isinstance(topology, (str, Path)) else "lab"
    topo = to_topology(topology)
    if free_ports:
        topo = with_free_host_ports(topo)
    lab = Lab.up(topo, name=unique_name(prefix), roles=roles)
    _live[lab.name] = lab
    return lab


def down(lab: Lab) -> None:
    _live.pop(lab.name, None)
    lab.down()


@atexit.register
def _down_leftovers() -> None:
    for lab in list(_live.values()):
        try:
            down(lab)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


@pytest.fixture
def lab_factory() -> Iterator[Any]:
    """``lab_factory(topology, prefix=None, free_ports=True, roles=True) -> Lab``; removed after the test."""
    need_root()
    made: list[Lab] = []

    def make(topology: Topology | str | Path | Mapping[str, Any], *, prefix: str | None = None,
             free_ports: bool = True, roles: bool = True) -> Lab:
        lab = up(topology, prefix=prefix, free_ports=free_ports, roles=roles)
        made.append(lab)
        return lab

    try:
        yield make
    finally:
        errors = []
        for lab in reversed(made):
            try:
                down(lab)
            except Exception as exc:  # noqa: BLE001 - report after trying all
                errors.append(exc)
        if errors:
            raise errors[0]


KUBECTL_133 = Path("/usr/lib/google-cloud-sdk/bin/kubectl.1.33")


class LabKubectl:
    """Real kubectl (1.33) against a lab's API through the server's published port."""

    def __init__(self, lab: Lab, cache: Path, *, kubectl: Path = KUBECTL_133) -> None:
        from .cluster import kubeconfig_for

        self.lab, self.cache, self.kubectl = lab, cache, kubectl
        self.kubeconfig = kubeconfig_for(lab)

    def argv(self, *args: str) -> list[str]:
        return [str(self.kubectl), "--kubeconfig", str(self.kubeconfig), "--cache-dir", str(self.cache), *args]

    def __call__(self, *args: str, check: bool = True, timeout: float = 30,
                 input: str | None = None) -> "subprocess.CompletedProcess[str]":
        res = subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=timeout, input=input)
        if check and res.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {res.returncode}: {res.stderr.strip()}")
        return res

    def apply(self, manifest: Mapping[str, Any]) -> None:
        self("apply", "-f", "-", input=json.dumps(manifest))

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json").stdout)


@contextmanager
def server_and_agent(prefix: str, cache: Path, *, ready_timeout: float = 60.0) -> Iterator[LabKubectl]:
    """A lab with a server (its embedded agent is a node) and one agent on a WAN, both
    Ready; yields kubectl for it. Removed on exit, also when the body fails."""
    from .cluster import node_ready

    need_root()
    doc = {
        "name": f"t-{prefix}-{os.getpid() % 100000}",
        "networks": {"wan": {"cidr": "198.18.0.0/24"}},
        "nodes": {
            "server": {"kind": "server", "networks": {"wan": "198.18.0.10"}, "publish": [f"6443:{free_port()}"]},
            "edge": {"kind": "agent", "networks": {"wan": "198.18.0.20"}},
        },
    }
    with Lab.up(doc) as lab:
        kc = LabKubectl(lab, cache)
        deadline = time.monotonic() + ready_timeout
        while True:
            nodes = kc.json("get", "nodes")["items"]
            if len(nodes) == 2 and all(node_ready(n) for n in nodes):
                break
            assert time.monotonic() < deadline, f"nodes not ready: {[n['metadata']['name'] for n in nodes]}"
            time.sleep(0.5)
        yield kc
