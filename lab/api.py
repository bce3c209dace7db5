"""The Python API of the lab, used by the CLI and by every lab test.

::

    with Lab.up("lab/examples/nat-edge.yaml", name="t-nat-1a2b") as lab:
        lab.exec("site1-agent", ["ip", "route"])          # CompletedProcess, text output
        ip = lab.node_ip("server", "wan")                  # "198.18.0.2"
        p = lab.popen("server", ["iperf3", "-s"])           # ended by down() anyway
        assert lab.probe("site1-agent", "server", 6443, listen=True).reachable

``down()`` (or leaving the ``with`` block, also by an exception or Ctrl-C)
removes everything. ``Lab.attach(name)`` returns a handle to a lab that is
already up (e.g. created by ``edgectl lab up``).
"""
from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from edgectl.paths import LAB_STATE_DIR

from . import build, netns, state
from . import roles as roles_
from .build import DownReport, Progress
from .errors import LabError, LabNotFound
from .probe import ProbeResult, probe
from .topology import Topology, load, parse


class Lab:
    def __init__(self, st: state.LabState, *, root: Path = LAB_STATE_DIR) -> None:
        self.state = st
        self.root = root
        self.topology: Topology = parse(st.topology, source=st.source or st.name)
        self._children: list[subprocess.Popen[Any]] = []
        self._down = False

    # ---- lifecycle

    @classmethod
    def up(cls, topology: Topology | str | Path | Mapping[str, Any], *, name: str | None = None,
           progress: Progress | None = None, roles: bool = True, root: Path = LAB_STATE_DIR) -> Lab:
        """Validate, create and start a lab; on failure nothing is left behind.

        ``roles=False`` builds only the network: server and agent nodes then
        run nothing (network tests need no control plane).
        """
        topo = to_topology(topology)
        if name:
            topo = topo.renamed(name)
        t0 = time.monotonic()
        st = build.create(topo, progress=progress, root=root)
        lab = cls(st, root=root)
        if not roles:
            return lab

        def role_ready(node: str, note: str) -> None:
            if progress:
                progress(node, "role", time.monotonic() - t0)

        try:
            notes = roles_.start_all(lab, say=role_ready)
            for node, note in notes.items():
                st.nodes[node].role = note
            state.save(st, root)
        except BaseException:
            lab.down()
            raise
        return lab

    @classmethod
    def attach(cls, name: str, *, root: Path = LAB_STATE_DIR) -> Lab:
        return cls(state.load(name, root), root=root)

    @staticmethod
    def names(root: Path = LAB_STATE_DIR) -> list[str]:
        return state.names(root)

    def down(self) -> DownReport:
        for p in self._children:  # ours: stop them first so down() can reap them
            if p.poll() is None:
                p.terminate()
        report = build.destroy(self.name, root=self.root)
        for p in self._children:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self._down = True
        return report

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if not self._down:
            self.down()

    # ---- names and addresses

    @property
    def name(self) -> str:
        return self.state.name

    def _node(self, node: str) -> state.NodeState:
        try:
            return self.state.nodes[node]
        except KeyError:
            raise LabError(f"lab {self.name} has no node {node!r} (nodes: {', '.join(self.state.nodes)})") from None

    def pid(self, node: str) -> int:
        anchor = self._node(node).anchor
        if anchor is None or not anchor.alive():
            raise LabError(f"node {self.name}/{node} is not running (anchor gone); `edgectl lab down {self.name}`")
        return anchor.pid

    def netns(self, node: str) -> str:
        """The node's network namespace name, as `ip netns` shows it."""
        return self._node(node).netns

    def node_ip(self, node: str, net: str | None = None) -> str:
        """The node's address on ``net`` (default: its first network)."""
        n = self.topology.node(self._node(node).name)
        if net is None:
            return str(n.attachments[0].address)
        try:
            return str(n.address(net))
        except KeyError:
            raise LabError(f"node {node} is not on network {net!r} (its networks: {', '.join(n.networks)})") from None

    def host_port(self, node: str, node_port: int) -> int:
        """Where ``node_port`` of ``node`` is published on 127.0.0.1 in the root namespace."""
        for p in self.topology.node(self._node(node).name).publish:
            if p.node_port == node_port:
                return p.host_port
        raise LabError(f"{self.name}/{node}: port {node_port} is not published")

    def address_for(self, src: str, dst: str) -> str:
        """The address of ``dst`` that ``src`` should use: on a shared network if any, else dst's first."""
        shared = self.topology.shared_networks(src, dst)
        return self.node_ip(dst, shared[0] if shared else None)

    # ---- running things inside nodes

    def nsenter(self, node: str) -> list[str]:
        """argv prefix that runs a command inside the node (network, mount and UTS namespaces)."""
        return netns.nsenter_argv(self.pid(node), cwd=os.getcwd())

    def exec(self, node: str, argv: Sequence[str] | str, *, check: bool = False, timeout: float | None = 60,
             input: str | None = None, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command in the node and capture its output (a str runs through ``sh -c``)."""
        cmd = ["sh", "-c", argv] if isinstance(argv, str) else list(argv)
        res = subprocess.run([*self.nsenter(node), *cmd], capture_output=True, text=True, timeout=timeout,
                             input=input, env=dict(env) if env is not None else None)
        if check and res.returncode != 0:
            raise LabError(f"{self.name}/{node}: {' '.join(cmd)} exited {res.returncode}: {res.stderr.strip()[-500:]}")
        return res

    def popen(self, node: str, argv: Sequence[str] | str, **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a process in the node; ``down()`` ends it (and everything else in the node)."""
        cmd = ["sh", "-c", argv] if isinstance(argv, str) else list(argv)
        p: subprocess.Popen[Any] = subprocess.Popen([*self.nsenter(node), *cmd], **kwargs)
        self._children.append(p)
        return p

    def socket(self, node: str, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM) -> socket.socket:
        """A socket living in the node's network namespace, usable from this process."""
        self.pid(node)
        return netns.socket_in(self.netns(node), family, type)

    def probe(self, src: str, dst: str, port: int, *, udp: bool = False, timeout: float = 1.0,
              listen: bool = False) -> ProbeResult:
        """Can ``src`` open a connection to ``dst`` (a node name or an IP) on ``port``?"""
        self.pid(src)
        if not timeout > 0:
            raise LabError(f"timeout must be a positive number of seconds, got {timeout}")
        if not 1 <= port <= 65535:
            raise LabError(f"port must be 1-65535, got {port}")
        is_node = dst in self.state.nodes
        if listen and not is_node:
            raise LabError("--listen needs a node name as destination, not an address")
        if not is_node:
            try:
                ipaddress.ip_address(dst)
            except ValueError:
                # A typo must not read as "blocked": that is a statement about the network.
                raise LabError(f"{dst!r} is neither a node of lab {self.name} "
                               f"(nodes: {', '.join(self.state.nodes)}) nor an IP address") from None
        ip = self.address_for(src, dst) if is_node else dst
        return probe(src_netns=self.netns(src), src=src, ip=ip, port=port, udp=udp, timeout=timeout,
                     listen_netns=self.netns(dst) if listen else None)

    def wait_port(self, node: str, port: int, *, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
        """Wait until something accepts TCP connections on ``host:port`` inside the node."""
        deadline = time.monotonic() + timeout
        while True:
            with self.socket(node) as s:
                s.settimeout(0.5)
                if s.connect_ex((host, port)) == 0:
                    return
            if time.monotonic() > deadline:
                raise LabError(f"{self.name}/{node}: nothing listens on {host}:{port} after {timeout}s")
            time.sleep(0.02)

    def wait_listening(self, node: str, port: int, *, udp: bool = False, timeout: float = 10.0) -> None:
        """Wait until a socket listens on ``port`` in the node, without connecting to it
        (for one-shot servers such as ``iperf3 -s -1``, which a probe connection would consume)."""
        deadline = time.monotonic() + timeout
        flags = "-Hlun" if udp else "-Hltn"
        while not self.exec(node, ["ss", flags, f"sport = :{port}"]).stdout.strip():
            if time.monotonic() > deadline:
                raise LabError(f"{self.name}/{node}: nothing listens on port {port} after {timeout}s")
            time.sleep(0.02)

    # ---- status

    def status(self) -> dict[str, Any]:
        st = self.state
        nodes = []
        for name, ns in st.nodes.items():
            n = self.topology.node(name)
            nodes.append({
                "name": name, "kind": n.kind, "netns": ns.netns,
                "pid": ns.anchor.pid if ns.anchor else None,
                "running": bool(ns.anchor and ns.anchor.alive()),
                "addresses": {a.network: a.cidr_address for a in n.attachments},
                "gateway": n.gateway,
                "nat": {"from": list(n.nat.sources), "to": n.nat.outside} if n.nat else None,
                "firewall_inbound": n.firewall_inbound,
                "publish": [f"127.0.0.1:{p.host_port}->{p.node_port}" for p in n.publish],
                "role": ns.role,
            })
        return {
            "name": st.name, "source": st.source, "status": st.status, "created": st.created,
            "switch_netns": st.switch.netns,
            "forwarder_pid": st.forwarder.pid if st.forwarder and st.forwarder.alive() else None,
            "networks": [{"name": n.name, "cidr": str(n.cidr), "mtu": n.mtu, "rate": n.rate} for n in self.topology.networks],
            "nodes": nodes,
        }


def to_topology(topology: Topology | str | Path | Mapping[str, Any]) -> Topology:
    if isinstance(topology, Topology):
        return topology
    if isinstance(topology, Mapping):
        return parse(dict(topology), source="<dict>")
    return load(topology)


def resolve_node(spec: str, *, root: Path = LAB_STATE_DIR) -> tuple[Lab, str]:
    """``lab/node``, or ``node`` when exactly one running lab has a node of that name."""
    if "/" in spec:
        lab_name, _, node = spec.partition("/")
        lab = Lab.attach(lab_name, root=root)
        lab._node(node)
        return lab, node
    labs = Lab.names(root)
    if not labs:
        raise LabNotFound("no lab is up (start one with `edgectl lab up FILE`)")
    matches = []
    for name in labs:
        try:
            lab = Lab.attach(name, root=root)
        except LabError:
            continue
        if spec in lab.state.nodes:
            matches.append(lab)
    if not matches:
        raise LabError(f"no node {spec!r} in {'lab ' + labs[0] if len(labs) == 1 else 'labs ' + ', '.join(labs)}")
    if len(matches) > 1:
        raise LabError(f"node {spec!r} exists in labs {', '.join(m.name for m in matches)}; write LAB/{spec}")
    return matches[0], spec
