"""Topology files: schema, validation and address allocation (pure, no I/O but reading the file).

Everything is checked here, before the lab creates anything, and each problem
is one line naming the file, the line and the field, e.g.::

    nat-edge.yaml:14: nodes.site1.networks.lan1: 10.1.0.300 is not an IPv4 address

The result is a frozen :class:`Topology` in which every network has a CIDR and
every attachment an address (omitted ones are allocated, see :func:`parse`).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network, ip_address, ip_network
from pathlib import Path
from typing import Any, NoReturn

from edgectl.config import read_small_text

from . import yamlsrc
from .errors import TopologyError

KINDS = ("host", "router", "server", "agent")
# RFC 2544 benchmarking range: never routed on the internet, rarely used on LANs.
UNDERLAY = IPv4Network("198.18.0.0/15")
NAME_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
MAX_NAME = 32
# A network name is the interface name inside nodes and the bridge name in the switch.
MAX_NET_NAME = 15
RESERVED_NODE_NAMES = frozenset({"switch"})  # <lab>-switch is the lab's switch namespace
RESERVED_NET_NAMES = frozenset({"lo", "all", "default"})  # clash with lo and /proc/sys/net/*/conf/
RATE_RE = re.compile(r"^(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit)$", re.IGNORECASE)
RATE_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9}

TOP_KEYS = ("name", "networks", "nodes")
NETWORK_KEYS = ("cidr", "mtu", "rate")
NODE_KEYS_BY_KIND = {
    "host": ("kind", "networks", "gateway", "publish"),
    "router": ("kind", "networks", "gateway", "publish", "nat", "firewall"),
    "server": ("kind", "networks", "gateway", "publish", "config"),
    "agent": ("kind", "networks", "gateway", "publish", "config", "server"),
}


@dataclass(frozen=True, kw_only=True)
class Network:
    """A segment: one bridge in the lab's switch namespace."""

    name: str
    cidr: IPv4Network
    mtu: int | None = None
    rate: str | None = None  # tc syntax ("20mbit"), shaped with tbf on every link

    @property
    def rate_bps(self) -> int | None:
        if self.rate is None:
            return None
        m = RATE_RE.match(self.rate)
        assert m, self.rate
        return int(float(m.group(1)) * RATE_UNITS[m.group(2).lower()])


@dataclass(frozen=True, kw_only=True)
class Attachment:
    """A node's interface on a network; the interface is named after the network."""

    network: str
    address: IPv4Address
    prefixlen: int

    @property
    def cidr_address(self) -> str:
        return f"{self.address}/{self.prefixlen}"


@dataclass(frozen=True, kw_only=True)
class Nat:
    """Masquerade traffic from ``sources`` networks out of the ``outside`` network."""

    sources: tuple[str, ...]
    outside: str


@dataclass(frozen=True, kw_only=True)
class Publish:
    """Node port ``node_port`` reachable at 127.0.0.1:``host_port`` in the root namespace."""

    node_port: int
    host_port: int


@dataclass(frozen=True, kw_only=True)
class Node:
    name: str
    kind: str
    attachments: tuple[Attachment, ...]
    gateway: str | None = None
    nat: Nat | None = None
    firewall_inbound: str = "allow"
    publish: tuple[Publish, ...] = ()
    config: Mapping[str, Any] = field(default_factory=dict, hash=False)
    server: str | None = None  # agents: the server node they join

    @property
    def networks(self) -> tuple[str, ...]:
        return tuple(a.network for a in self.attachments)

    def attachment(self, network: str) -> Attachment:
        for a in self.attachments:
            if a.network == network:
                return a
        raise KeyError(f"node {self.name} is not on network {network}")

    def address(self, network: str) -> IPv4Address:
        return self.attachment(network).address


@dataclass(frozen=True, kw_only=True)
class Topology:
    name: str
    networks: tuple[Network, ...]
    nodes: tuple[Node, ...]
    source: str = "<memory>"

    def network(self, name: str) -> Network:
        for n in self.networks:
            if n.name == name:
                return n
        raise KeyError(name)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def renamed(self, name: str) -> Topology:
        """The same topology under another lab name (tests use unique names)."""
        _check_name(name, "lab name", MAX_NAME, fail=lambda msg: _raise(f"{self.source}: name: {msg}"))
        return replace(self, name=name)

    def shared_networks(self, a: str, b: str) -> list[str]:
        theirs = set(self.node(b).networks)
        return [n for n in self.node(a).networks if n in theirs]

    def outside_network(self, router: str) -> str | None:
        """Where ``firewall: {inbound: deny}`` applies: the NAT outside, else the gateway's network."""
        node = self.node(router)
        if node.nat:
            return node.nat.outside
        if node.gateway:
            return self.shared_networks(router, node.gateway)[0]
        return None

    def to_doc(self) -> dict[str, Any]:
        """The canonical document (explicit CIDRs and addresses); ``parse(to_doc())`` round-trips."""
        nets: dict[str, Any] = {}
        for n in self.networks:
            nets[n.name] = {"cidr": str(n.cidr)}
            if n.mtu is not None:
                nets[n.name]["mtu"] = n.mtu
            if n.rate is not None:
                nets[n.name]["rate"] = n.rate
        nodes: dict[str, Any] = {}
        for node in self.nodes:
            d: dict[str, Any] = {"kind": node.kind, "networks": {a.network: str(a.address) for a in node.attachments}}
            if node.gateway:
                d["gateway"] = node.gateway
            if node.nat:
                d["nat"] = {"from": list(node.nat.sources), "to": node.nat.outside}
            if node.firewall_inbound != "allow":
                d["firewall"] = {"inbound": node.firewall_inbound}
            if node.publish:
                d["publish"] = [f"{p.node_port}:{p.host_port}" for p in node.publish]
            if node.config:
                d["config"] = dict(node.config)
            if node.server:
                d["server"] = node.server
            nodes[node.name] = d
        return {"name": self.name, "networks": nets, "nodes": nodes}


# ---------------------------------------------------------------- parsing


MAX_TOPOLOGY_BYTES = 1024 * 1024


def load(path: str | Path) -> Topology:
    """Read and validate a topology file."""
    p = Path(path)
    # A topology is a few KiB; the read is bounded.
    text = read_small_text(p, limit=MAX_TOPOLOGY_BYTES, what="topology file", error=TopologyError, refuse_dirs=True)
    if "\x00" in text:
        raise TopologyError(f"{p}: not a text file (it contains NUL bytes)")
    return parse_text(text, source=str(p))


def parse_text(text: str, *, source: str = "<memory>") -> Topology:
    doc, lines = yamlsrc.load(text, source=source)
    return parse(doc, source=source, lines=lines)


def parse(doc: Any, *, source: str = "<memory>", lines: Mapping[yamlsrc.Path_, int] | None = None) -> Topology:
    """Validate a topology document and allocate what it leaves out.

    Networks without ``cidr`` get the next free /24 of 198.18.0.0/15; attachments
    without an address get the lowest free host address, routers first (so a
    router is usually ``.1``).
    """
    return _Parser(source, lines or {}).topology(doc)


def _raise(msg: str) -> NoReturn:
    raise TopologyError(msg)


def _check_name(value: Any, what: str, limit: int, *, fail: Any) -> str:
    if not isinstance(value, str) or not value:
        fail(f"{what} must be a non-empty string")
    if len(value) > limit:
        fail(f"{what} {value!r} is longer than {limit} characters")
    if not NAME_RE.match(value):
        fail(f"{what} {value!r} must be lower-case letters, digits and single dashes, starting with a letter")
    return str(value)


class _Parser:
    def __init__(self, source: str, lines: Mapping[yamlsrc.Path_, int]) -> None:
        self.source = source
        self.lines = lines

    def fail(self, path: yamlsrc.Path_, msg: str) -> NoReturn:
        line = None
        for i in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:i]))
            if line is not None:
                break
        where = f"{self.source}:{line}" if line else self.source
        field_ = yamlsrc.dotted(path)
        raise TopologyError(f"{where}: {field_}: {msg}" if field_ else f"{where}: {msg}")

    def mapping(self, value: Any, path: yamlsrc.Path_, what: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(path, f"{what} must be a mapping, got {_type(value)}")
        return value

    def keys(self, doc: dict[str, Any], allowed: tuple[str, ...], path: yamlsrc.Path_, hint: str = "") -> None:
        for key in doc:
            if key not in allowed:
                self.fail((*path, str(key)), f"unknown key {key!r}{hint} (valid: {', '.join(allowed)})")

    # ---- top level

    def topology(self, doc: Any) -> Topology:
        if doc is None:
            self.fail((), "empty topology file")
        doc = self.mapping(doc, (), "the top level")
        self.keys(doc, TOP_KEYS, ())
        for key in TOP_KEYS:
            if key not in doc:
                self.fail((), f"missing required key {key!r}")
        name = _check_name(doc["name"], "lab name", MAX_NAME, fail=lambda m: self.fail(("name",), m))
        networks = self.networks(doc["networks"])
        nodes = self.nodes(doc["nodes"], networks)
        return Topology(name=name, networks=tuple(networks.values()), nodes=nodes, source=self.source)

    # ---- networks

    def networks(self, doc: Any) -> dict[str, Network]:
        doc = self.mapping(doc, ("networks",), "networks")
        if not doc:
            self.fail(("networks",), "define at least one network")
        explicit: dict[str, IPv4Network] = {}
        specs: dict[str, dict[str, Any]] = {}
        for name, spec in doc.items():
            path: yamlsrc.Path_ = ("networks", str(name))
            _check_name(name, "network name", MAX_NET_NAME, fail=lambda m, p=path: self.fail(p, m))
            if name in RESERVED_NET_NAMES:
                self.fail(path, f"network name {name!r} is reserved")
            spec = {} if spec is None else self.mapping(spec, path, "a network")
            self.keys(spec, NETWORK_KEYS, path)
            specs[name] = spec
            if "cidr" in spec:
                cidr = self.cidr(spec["cidr"], (*path, "cidr"))
                for other, other_cidr in explicit.items():
                    if cidr.overlaps(other_cidr):
                        self.fail((*path, "cidr"), f"{cidr} overlaps network {other} ({other_cidr})")
                explicit[name] = cidr
        free = (n for n in UNDERLAY.subnets(new_prefix=24) if not any(n.overlaps(c) for c in explicit.values()))
        result: dict[str, Network] = {}
        for name, spec in specs.items():
            path = ("networks", name)
            cidr = explicit.get(name) or next(free, None)
            if cidr is None:
                self.fail(path, "no free /24 left in 198.18.0.0/15; give this network a cidr")
            result[name] = Network(
                name=name,
                cidr=cidr,
                mtu=self.mtu(spec["mtu"], (*path, "mtu")) if "mtu" in spec else None,
                rate=self.rate(spec["rate"], (*path, "rate")) if "rate" in spec else None,
            )
        return result

    def cidr(self, value: Any, path: yamlsrc.Path_) -> IPv4Network:
        if not isinstance(value, str):
            self.fail(path, f"expected a CIDR like 10.0.0.0/24, got {_type(value)}")
        try:
            net = ip_network(value, strict=True)
        except ValueError as exc:
            self.fail(path, f"invalid CIDR {value!r}: {exc}")
        if not isinstance(net, IPv4Network):
            self.fail(path, f"{value}: only IPv4 networks are supported")
        if "/" not in value:
            self.fail(path, f"{value!r} needs a prefix length, e.g. {value}/24")
        if net.prefixlen > 30:
            self.fail(path, f"{value}: prefix /{net.prefixlen} is too small; use /30 or larger")
        return net

    def mtu(self, value: Any, path: yamlsrc.Path_) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 576 <= value <= 9000:
            self.fail(path, f"mtu must be an integer between 576 and 9000, got {value!r}")
        return value

    def rate(self, value: Any, path: yamlsrc.Path_) -> str:
        if not isinstance(value, str) or not RATE_RE.match(value.strip()):
            self.fail(path, f"rate must look like 20mbit, 500kbit or 1gbit, got {value!r}")
        rate = value.strip().lower()
        if Network(name="x", cidr=UNDERLAY, rate=rate).rate_bps < 8000:  # type: ignore[operator]
            self.fail(path, f"rate {value!r} is below 8kbit")
        return rate

    # ---- nodes

    def nodes(self, doc: Any, networks: dict[str, Network]) -> tuple[Node, ...]:
        doc = self.mapping(doc, ("nodes",), "nodes")
        if not doc:
            self.fail(("nodes",), "define at least one node")
        kinds: dict[str, str] = {}
        wanted: dict[str, dict[str, IPv4Address | None]] = {}
        for name, spec in doc.items():
            path: yamlsrc.Path_ = ("nodes", str(name))
            _check_name(name, "node name", MAX_NAME, fail=lambda m, p=path: self.fail(p, m))
            if name in RESERVED_NODE_NAMES:
                self.fail(path, f"node name {name!r} is reserved for the lab's switch namespace")
            if name in networks:
                self.fail(path, f"{name!r} is already a network name; node and network names must differ")
            spec = self.mapping(spec, path, "a node")
            kind = spec.get("kind", "host")
            if kind not in KINDS:
                self.fail((*path, "kind"), f"unknown kind {kind!r} (valid: {', '.join(KINDS)})")
            kinds[name] = kind
            for key in spec:
                if key not in NODE_KEYS_BY_KIND[kind]:
                    owners = [k for k, keys in NODE_KEYS_BY_KIND.items() if key in keys]
                    hint = f" for kind {kind}; it is valid for kind {'/'.join(owners)}" if owners else ""
                    self.keys({key: 0}, NODE_KEYS_BY_KIND[kind], path, hint)
            if "networks" not in spec:
                self.fail(path, "missing required key 'networks'")
            wanted[name] = self.attachments(spec["networks"], (*path, "networks"), networks)
        addresses = self.allocate(wanted, kinds, networks)
        servers = [n for n, k in kinds.items() if k == "server"]
        publish_seen: dict[int, str] = {}
        nodes = []
        for name, spec in doc.items():
            path = ("nodes", name)
            node = Node(
                name=name,
                kind=kinds[name],
                attachments=tuple(
                    Attachment(network=net, address=addresses[(name, net)], prefixlen=networks[net].cidr.prefixlen)
                    for net in wanted[name]
                ),
                publish=self.publish(spec.get("publish"), (*path, "publish"), publish_seen, name),
                config=self.config(spec["config"], (*path, "config")) if "config" in spec else {},
            )
            if "gateway" in spec:
                node = replace(node, gateway=self.gateway(spec["gateway"], (*path, "gateway"), node, doc, kinds, wanted))
            if "nat" in spec:
                node = replace(node, nat=self.nat(spec["nat"], (*path, "nat"), node))
            if "firewall" in spec:
                node = replace(node, firewall_inbound=self.firewall(spec["firewall"], (*path, "firewall"), node))
            if node.kind == "agent":
                node = replace(node, server=self.server(spec.get("server"), (*path, "server"), kinds, servers))
            nodes.append(node)
        return tuple(nodes)

    def attachments(self, value: Any, path: yamlsrc.Path_, networks: dict[str, Network]) -> dict[str, IPv4Address | None]:
        if isinstance(value, list):  # `networks: [wan, lan]`: addresses allocated
            for i, net in enumerate(value):
                if not isinstance(net, str):
                    self.fail((*path, i), f"expected a network name, got {_type(net)}")
            if len(set(value)) != len(value):
                self.fail(path, "a network is listed twice")
            value = {net: None for net in value}
        value = self.mapping(value, path, "networks (network: address, or a list of network names)")
        if not value:
            self.fail(path, "attach the node to at least one network")
        result: dict[str, IPv4Address | None] = {}
        for net, addr in value.items():
            p = (*path, str(net))
            if net not in networks:
                self.fail(p, f"unknown network {net!r} (networks: {', '.join(networks)})")
            if addr is None or addr == "auto":
                result[net] = None
                continue
            cidr = networks[net].cidr
            try:
                ip = ip_address(addr) if isinstance(addr, str) else None
            except ValueError:
                ip = None
            if not isinstance(ip, IPv4Address):
                self.fail(p, f"{addr!r} is not an IPv4 address (write just the address; the prefix comes from the network)")
            if ip not in cidr:
                self.fail(p, f"address {ip} is outside network {net} ({cidr})")
            if ip in (cidr.network_address, cidr.broadcast_address):
                self.fail(p, f"address {ip} is the {'network' if ip == cidr.network_address else 'broadcast'} address of {cidr}")
            result[net] = ip
        return result

    def allocate(
        self, wanted: dict[str, dict[str, IPv4Address | None]], kinds: dict[str, str], networks: dict[str, Network]
    ) -> dict[tuple[str, str], IPv4Address]:
        taken: dict[tuple[str, IPv4Address], str] = {}
        result: dict[tuple[str, str], IPv4Address] = {}
        for node, nets in wanted.items():
            for net, ip in nets.items():
                if ip is None:
                    continue
                if (net, ip) in taken:
                    self.fail(("nodes", node, "networks", net), f"address {ip} is already used by node {taken[(net, ip)]}")
                taken[(net, ip)] = node
                result[(node, net)] = ip
        order = sorted(wanted, key=lambda n: kinds[n] != "router")  # stable: routers first
        for node in order:
            for net, ip in wanted[node].items():
                if ip is not None:
                    continue
                free = next((h for h in networks[net].cidr.hosts() if (net, h) not in taken), None)
                if free is None:
                    self.fail(("nodes", node, "networks", net), f"network {net} ({networks[net].cidr}) has no free address left")
                taken[(net, free)] = node
                result[(node, net)] = free
        return result

    def gateway(self, value: Any, path: yamlsrc.Path_, node: Node, doc: dict[str, Any], kinds: dict[str, str],
                wanted: dict[str, dict[str, Any]]) -> str:
        if not isinstance(value, str) or value not in doc:
            self.fail(path, f"gateway {value!r} is not a node of this lab")
        if value == node.name:
            self.fail(path, "a node cannot be its own gateway")
        if kinds[value] != "router":
            self.fail(path, f"gateway {value} is a {kinds[value]}, not a router")
        if not set(node.networks) & set(wanted[value]):
            self.fail(path, f"gateway {value} shares no network with {node.name}")
        return value

    def nat(self, value: Any, path: yamlsrc.Path_, node: Node) -> Nat:
        value = self.mapping(value, path, "nat (from: [networks], to: network)")
        self.keys(value, ("from", "to"), path)
        for key in ("from", "to"):
            if key not in value:
                self.fail(path, f"missing required key {key!r}")
        sources = value["from"]
        if isinstance(sources, str):
            sources = [sources]
        if not isinstance(sources, list) or not sources:
            self.fail((*path, "from"), "expected a list of network names")
        for i, net in enumerate(sources):
            if net not in node.networks:
                self.fail((*path, "from", i), f"router {node.name} is not on network {net!r}")
        outside = value["to"]
        if not isinstance(outside, str) or outside not in node.networks:
            self.fail((*path, "to"), f"router {node.name} is not on network {outside!r}")
        if outside in sources:
            self.fail((*path, "to"), f"network {outside} cannot be both inside (from) and outside (to)")
        return Nat(sources=tuple(sources), outside=outside)

    def firewall(self, value: Any, path: yamlsrc.Path_, node: Node) -> str:
        value = self.mapping(value, path, "firewall")
        self.keys(value, ("inbound",), path)
        inbound = value.get("inbound", "allow")
        if inbound not in ("allow", "deny"):
            self.fail((*path, "inbound"), f"expected allow or deny, got {inbound!r}")
        if inbound == "deny" and node.nat is None and node.gateway is None:
            self.fail((*path, "inbound"), "inbound: deny needs an outside network: set nat.to or gateway")
        return str(inbound)

    def publish(self, value: Any, path: yamlsrc.Path_, seen: dict[int, str], node: str) -> tuple[Publish, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.fail(path, 'expected a list like ["6443:16443"] (node port : host port)')
        result = []
        for i, item in enumerate(value):
            p = (*path, i)
            if not isinstance(item, str):
                self.fail(p, f'expected a quoted "NODEPORT:HOSTPORT" string, got {_type(item)} (YAML reads 80:22 as a number)')
            parts = item.split(":")
            if len(parts) != 2 or not all(x.isdigit() and 1 <= int(x) <= 65535 for x in parts):
                self.fail(p, f'{item!r}: expected "NODEPORT:HOSTPORT" with ports 1-65535')
            pub = Publish(node_port=int(parts[0]), host_port=int(parts[1]))
            if pub.host_port in seen:
                self.fail(p, f"host port {pub.host_port} is already published by node {seen[pub.host_port]}")
            seen[pub.host_port] = node
            result.append(pub)
        return tuple(result)

    def config(self, value: Any, path: yamlsrc.Path_) -> dict[str, Any]:
        value = self.mapping(value, path, "config (flag name: value)")
        for key, v in value.items():
            if not isinstance(key, str):
                self.fail(path, f"config keys are flag names, got {_type(key)}")
            # Flags take scalars or lists of scalars (repeatable flags); anything
            # deeper is a mistake, and an alias bomb would only blow up later.
            if isinstance(v, dict) or (isinstance(v, list) and any(isinstance(i, (list, dict)) for i in v)):
                self.fail((*path, key), "config values are scalars or lists of scalars (keys are flag names)")
        return dict(value)

    def server(self, value: Any, path: yamlsrc.Path_, kinds: dict[str, str], servers: list[str]) -> str:
        if value is None:
            if not servers:
                self.fail(path[:-1], "an agent needs a node of kind server to join; add one")
            return servers[0]
        if not isinstance(value, str) or kinds.get(value) != "server":
            self.fail(path, f"{value!r} is not a node of kind server (servers: {', '.join(servers) or 'none'})")
        return value


def _type(value: Any) -> str:
    return "nothing" if value is None else f"a {type(value).__name__}"
