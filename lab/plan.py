"""Turn a validated topology into the exact commands that build it (pure; golden-testable).

Layout of a lab named ``L``:

* namespace ``L-switch``: one Linux bridge per network, named after the network,
  and one veth end per attachment, named ``v<node#>_<net#>`` (``_`` never occurs
  in network names, so ports and bridges cannot clash);
* namespace ``L-<node>`` per node: the other veth end, named after the network.

Nothing lives in the root namespace, so interface names need no lab prefix and
two labs never collide; only the namespace names carry the lab name.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from .topology import Node, Topology

SWITCH = "switch"


def netns_name(lab: str, node: str) -> str:
    return f"{lab}-{node}"


def switch_port(node_index: int, net_index: int) -> str:
    return f"v{node_index}_{net_index}"


@dataclass(frozen=True, kw_only=True)
class Route:
    destination: str  # "default" or a CIDR
    via: IPv4Address
    dev: str


@dataclass(frozen=True, kw_only=True)
class NodePlan:
    name: str
    kind: str
    netns: str
    ip_batch: str  # `ip -batch` text run in the node namespace
    tc_batch: str  # `tc -batch` text, empty when no network is shaped
    iptables: str  # iptables-restore text, empty for non-routers
    forwarding: bool


@dataclass(frozen=True, kw_only=True)
class LabPlan:
    name: str
    switch_netns: str
    switch_ip_batch: str
    switch_tc_batch: str
    nodes: tuple[NodePlan, ...]
    ports: dict[str, tuple[str, str]]  # switch port -> (node, network)


def build(topo: Topology) -> LabPlan:
    net_index = {n.name: i for i, n in enumerate(topo.networks)}
    sw_ip: list[str] = []
    sw_tc: list[str] = []
    ports: dict[str, tuple[str, str]] = {}
    for net in topo.networks:
        mtu = f" mtu {net.mtu}" if net.mtu else ""
        # STP off: ports forward at once; no snooping: multicast (vxlan, mDNS) just floods.
        sw_ip.append(f"link add name {net.name}{mtu} type bridge stp_state 0 mcast_snooping 0")
        sw_ip.append(f"link set dev {net.name} up")
    for i, node in enumerate(topo.nodes):
        for att in node.attachments:
            net = topo.network(att.network)
            port = switch_port(i, net_index[net.name])
            ports[port] = (node.name, net.name)
            mtu = f" mtu {net.mtu}" if net.mtu else ""
            sw_ip.append(
                f"link add name {port}{mtu} type veth peer name {net.name}{mtu} netns {netns_name(topo.name, node.name)}"
            )
            sw_ip.append(f"link set dev {port} master {net.name} up")
            if net.rate:
                sw_tc.append(tbf(port, net.rate_bps or 0))
    return LabPlan(
        name=topo.name,
        switch_netns=netns_name(topo.name, SWITCH),
        switch_ip_batch=_text(sw_ip),
        switch_tc_batch=_text(sw_tc),
        nodes=tuple(_node_plan(topo, node) for node in topo.nodes),
        ports=ports,
    )


def tbf(dev: str, rate_bps: int) -> str:
    # Bucket of ~10 ms of traffic (at least a few full-size frames so GSO
    # segments pass), queue bounded at 50 ms like a small home router.
    burst = max(rate_bps // 8 // 100, 16 * 1514)
    return f"qdisc add dev {dev} root tbf rate {rate_bps}bit burst {burst} latency 50ms"


def _node_plan(topo: Topology, node: Node) -> NodePlan:
    lines = []
    tc = []
    for att in node.attachments:
        lines.append(f"addr add {att.cidr_address} dev {att.network}")
        lines.append(f"link set dev {att.network} up")
        net = topo.network(att.network)
        if net.rate:
            tc.append(tbf(att.network, net.rate_bps or 0))
    for r in routes(topo, node.name):
        lines.append(f"route add {r.destination} via {r.via} dev {r.dev}")
    return NodePlan(
        name=node.name,
        kind=node.kind,
        netns=netns_name(topo.name, node.name),
        ip_batch=_text(lines),
        tc_batch=_text(tc),
        iptables=iptables_rules(topo, node),
        forwarding=node.kind == "router",
    )


def routes(topo: Topology, node_name: str) -> list[Route]:
    """The default route (``gateway:``) plus a route to every network reachable through routers.

    Breadth-first over networks, crossing only routers. A NAT router hides its
    inside (``nat.from``) networks: nobody outside gets a route to them, as on
    the internet; inside hosts still reach the outside.
    """
    node = topo.node(node_name)
    result: list[Route] = []
    default_via: IPv4Address | None = None
    if node.gateway:
        net = topo.shared_networks(node.name, node.gateway)[0]
        default_via = topo.node(node.gateway).address(net)
        result.append(Route(destination="default", via=default_via, dev=net))
    routers = [n for n in topo.nodes if n.kind == "router" and n.name != node.name]
    # network -> (first-hop address, our interface)
    first_hop: dict[str, tuple[IPv4Address, str] | None] = {net: None for net in node.networks}
    queue = deque(node.networks)
    while queue:
        net = queue.popleft()
        for router in routers:
            if net not in router.networks:
                continue
            hop = first_hop[net] or (router.address(net), net)
            for other in router.networks:
                if other in first_hop or _hidden(router, entering=other, from_net=net):
                    continue
                first_hop[other] = hop
                queue.append(other)
    for net_name, hop in first_hop.items():
        if hop is None or hop[0] == default_via:
            continue
        cidr: IPv4Network = topo.network(net_name).cidr
        result.append(Route(destination=str(cidr), via=hop[0], dev=hop[1]))
    return result


def _hidden(router: Node, *, entering: str, from_net: str) -> bool:
    return router.nat is not None and entering in router.nat.sources and from_net not in router.nat.sources


def iptables_rules(topo: Topology, node: Node) -> str:
    """iptables-restore text for a router: masquerade and the inbound firewall."""
    if node.kind != "router" or (node.nat is None and node.firewall_inbound == "allow"):
        return ""
    out = ["*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]", ":POSTROUTING ACCEPT [0:0]"]
    if node.nat:
        for src in node.nat.sources:
            out.append(f"-A POSTROUTING -s {topo.network(src).cidr} -o {node.nat.outside} -j MASQUERADE")
    out += ["COMMIT", "*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
    outside = topo.outside_network(node.name)
    if node.firewall_inbound == "deny" and outside:
        # Like a home router: replies get in, new connections from outside do not,
        # neither to the router itself nor through it.
        for chain in ("INPUT", "FORWARD"):
            out.append(f"-A {chain} -i {outside} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT")
            out.append(f"-A {chain} -i {outside} -j DROP")
    out.append("COMMIT")
    return _text(out)


# Every device name follows an explicit `name`/`dev` keyword: ip accepts
# abbreviated keywords, so a network called "n" would otherwise read as "name".
def _text(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)
