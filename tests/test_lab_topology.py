"""Topology schema, validation messages, address allocation and the build plan (pure, no root)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from edgectl.lab import netns, plan, state
from edgectl.lab.api import Lab
from edgectl.lab.errors import TopologyError
from edgectl.lab.testing import EXAMPLES, need_root
from edgectl.lab.topology import load, parse, parse_text

GOOD = """\
name: t1
networks:
  wan: {cidr: 198.18.0.0/24}
  lan: {cidr: 192.168.1.0/24, mtu: 1400, rate: 20mbit}
nodes:
  r:
    kind: router
    networks: {wan: 198.18.0.1, lan: 192.168.1.1}
    nat: {from: [lan], to: wan}
    firewall: {inbound: deny}
  h:
    networks: {lan: 192.168.1.10}
    gateway: r
  s:
    kind: server
    networks: {wan: 198.18.0.10}
    publish: ["6443:16443"]
    config: {node-label: [a=b]}
  a:
    kind: agent
    networks: [lan]
    gateway: r
"""


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_examples_are_valid(path) -> None:  # type: ignore[no-untyped-def]
    topo = load(path)
    assert topo.nodes and topo.networks
    assert parse(topo.to_doc()) == topo.__class__(**{**topo.__dict__, "source": "<memory>"})


def test_good_topology_and_allocation() -> None:
    topo = parse_text(GOOD, source="good.yaml")
    assert topo.node("h").kind == "host"  # default kind
    assert str(topo.node("a").address("lan")) == "192.168.1.2"  # lowest free (router has .1)
    assert topo.node("a").server == "s"  # agents join the first server by default
    assert topo.network("lan").rate_bps == 20_000_000
    assert topo.node("s").publish[0].host_port == 16443
    assert topo.node("s").config == {"node-label": ["a=b"]}


def test_default_underlay_and_router_first() -> None:
    topo = parse({
        "name": "auto",
        "networks": {"a": None, "b": {}, "c": {"cidr": "198.18.1.0/24"}},
        "nodes": {"h": {"networks": ["a"]}, "r": {"kind": "router", "networks": ["a", "b"]}},
    })
    assert [str(n.cidr) for n in topo.networks] == ["198.18.0.0/24", "198.18.2.0/24", "198.18.1.0/24"]
    assert str(topo.node("r").address("a")) == "198.18.0.1"  # routers get the first address
    assert str(topo.node("h").address("a")) == "198.18.0.2"


def write(tmp_path, text: str):  # type: ignore[no-untyped-def]
    p = tmp_path / "topo.yaml"
    p.write_text(textwrap.dedent(text))
    return p


BASE = {
    "name": "bad",
    "networks": {"wan": {"cidr": "198.18.0.0/24"}, "lan": {"cidr": "10.0.0.0/24"}},
    "nodes": {
        "r": {"kind": "router", "networks": {"wan": "198.18.0.1", "lan": "10.0.0.1"}},
        "h": {"networks": {"lan": "10.0.0.2"}, "gateway": "r"},
    },
}


def mutate(path: str, value: object) -> dict:  # type: ignore[type-arg]
    import copy

    doc = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    d = doc
    for p in parents:
        d = d[p]
    if value is KeyError:
        del d[last]
    else:
        d[last] = value
    return doc


# Each bad-input class: (document change, field named in the message, fragment of the message).
BAD = {
    "unknown-top-key": ("extra", 1, "extra", "unknown key 'extra'"),
    "unknown-kind": ("nodes.h.kind", "switchy", "nodes.h.kind", "unknown kind 'switchy'"),
    "unknown-node-key": ("nodes.h.color", "red", "nodes.h.color", "unknown key 'color'"),
    "router-key-on-host": ("nodes.h.nat", {"from": ["lan"], "to": "wan"}, "nodes.h.nat", "valid for kind router"),
    "unknown-network-key": ("networks.lan.vlan", 3, "networks.lan.vlan", "unknown key 'vlan'"),
    "invalid-cidr": ("networks.lan.cidr", "10.0.0.0/33", "networks.lan.cidr", "invalid CIDR"),
    "host-bits-cidr": ("networks.lan.cidr", "10.0.0.1/24", "networks.lan.cidr", "has host bits set"),
    "overlapping-cidr": ("networks.lan.cidr", "198.18.0.0/16", "networks.lan.cidr", "overlaps network wan"),
    "address-outside": ("nodes.h.networks", {"lan": "10.0.1.5"}, "nodes.h.networks.lan", "outside network lan"),
    "not-an-address": ("nodes.h.networks", {"lan": "10.0.0.300"}, "nodes.h.networks.lan", "not an IPv4 address"),
    "duplicate-address": ("nodes.h.networks", {"lan": "10.0.0.1"}, "nodes.h.networks.lan", "already used by node r"),
    "unknown-network": ("nodes.h.networks", {"dmz": "10.0.0.5"}, "nodes.h.networks.dmz", "unknown network 'dmz'"),
    "gateway-not-router": ("nodes.r.kind", "host", "nodes.h.gateway", "not a router"),
    "gateway-not-shared": ("nodes.r.networks", {"wan": "198.18.0.1"}, "nodes.h.gateway", "shares no network"),
    "gateway-missing": ("nodes.h.gateway", "nope", "nodes.h.gateway", "not a node"),
    "nat-wrong-net": ("nodes.r.nat", {"from": ["lan"], "to": "dmz"}, "nodes.r.nat.to", "not on network 'dmz'"),
    "bad-rate": ("networks.lan.rate", "fast", "networks.lan.rate", "rate must look like"),
    "bad-mtu": ("networks.lan.mtu", 100000, "networks.lan.mtu", "mtu must be"),
    "bad-name": ("name", "Bad_Name", "name", "lower-case"),
    "reserved-node": ("nodes.switch", {"networks": ["lan"]}, "nodes.switch", "reserved"),
    "publish-unquoted": ("nodes.h.publish", [4822], "nodes.h.publish[0]", "quoted"),
    "publish-bad": ("nodes.h.publish", ["80"], "nodes.h.publish[0]", "NODEPORT:HOSTPORT"),
    "firewall-no-outside": ("nodes.r.firewall", {"inbound": "deny"}, "nodes.r.firewall.inbound", "needs an outside"),
    "agent-without-server": ("nodes.h.kind", "agent", "nodes.h", "needs a node of kind server"),
    "no-networks": ("nodes.h.networks", KeyError, "nodes.h", "missing required key 'networks'"),
}


@pytest.mark.parametrize("case", sorted(BAD), ids=str)
def test_bad_input_names_file_line_and_field(tmp_path, case: str) -> None:  # type: ignore[no-untyped-def]
    path, value, field, fragment = BAD[case]
    p = tmp_path / f"{case}.yaml"
    p.write_text(yaml.safe_dump(mutate(path, value), sort_keys=False))
    with pytest.raises(TopologyError) as info:
        load(p)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{p}:"), msg
    assert f" {field}: " in msg, msg
    assert fragment in msg, msg
    assert msg.split(":")[1].isdigit(), f"no line number: {msg}"


def test_yaml_syntax_error_has_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = write(tmp_path, "name: x\nnetworks:\n  wan: {cidr: 10.0.0.0/24\nnodes: {}\n")
    with pytest.raises(TopologyError, match=rf"^{p}:\d+:\d+: invalid YAML"):
        load(p)


def test_duplicate_names_are_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = write(tmp_path, """\
        name: dup
        networks:
          lan: {}
        nodes:
          a: {networks: [lan]}
          a: {networks: [lan]}
        """)
    with pytest.raises(TopologyError, match=rf"^{p}:6: nodes.a: duplicate name 'a'"):
        load(p)
    p = write(tmp_path, "name: dup\nnetworks: {lan: {}}\nnodes:\n  lan: {networks: [lan]}\n")
    with pytest.raises(TopologyError, match="node and network names must differ"):
        load(p)


def test_missing_file() -> None:
    with pytest.raises(TopologyError, match="no such topology file"):
        load("/nonexistent/topo.yaml")


def test_plan_golden_text() -> None:
    topo = parse_text(GOOD, source="good.yaml")
    p = plan.build(topo)
    assert p.switch_netns == "t1-switch"
    assert p.switch_ip_batch.splitlines()[:4] == [
        "link add name wan type bridge stp_state 0 mcast_snooping 0",
        "link set dev wan up",
        "link add name lan mtu 1400 type bridge stp_state 0 mcast_snooping 0",
        "link set dev lan up",
    ]
    assert "link add name v0_1 mtu 1400 type veth peer name lan mtu 1400 netns t1-r" in p.switch_ip_batch
    assert p.switch_tc_batch.count("tbf rate 20000000bit") == 3  # r, h and a are on the shaped lan
    h = next(n for n in p.nodes if n.name == "h")
    assert h.ip_batch == (
        "addr add 192.168.1.10/24 dev lan\nlink set dev lan up\nroute add default via 192.168.1.1 dev lan\n"
    )
    assert h.tc_batch.startswith("qdisc add dev lan root tbf rate 20000000bit")
    r = next(n for n in p.nodes if n.name == "r")
    assert r.forwarding
    assert "-A POSTROUTING -s 192.168.1.0/24 -o wan -j MASQUERADE" in r.iptables
    assert "-A FORWARD -i wan -j DROP" in r.iptables
    assert next(n for n in p.nodes if n.name == "s").iptables == ""


def test_routes_hide_nat_inside_and_cross_plain_routers() -> None:
    topo = load(EXAMPLES / "double-nat.yaml")
    # The server gets no route into the ISP or home networks: NAT hides them.
    assert plan.routes(topo, "server") == []
    # The home router needs only its default route to the CGNAT.
    assert [r.destination for r in plan.routes(topo, "home-router")] == ["default"]
    routed = parse({
        "name": "routed",
        "networks": {"a": {"cidr": "10.1.0.0/24"}, "b": {"cidr": "10.2.0.0/24"}, "c": {"cidr": "10.3.0.0/24"}},
        "nodes": {
            "r1": {"kind": "router", "networks": {"a": "10.1.0.1", "b": "10.2.0.1"}},
            "r2": {"kind": "router", "networks": {"b": "10.2.0.2", "c": "10.3.0.1"}},
            "h": {"networks": {"a": "10.1.0.10"}},
        },
    })
    routes = {r.destination: str(r.via) for r in plan.routes(routed, "h")}
    assert routes == {"10.2.0.0/24": "10.1.0.1", "10.3.0.0/24": "10.1.0.1"}
    assert {r.destination: str(r.via) for r in plan.routes(routed, "r2")} == {"10.1.0.0/24": "10.2.0.1"}


@pytest.mark.lab
def test_bad_input_creates_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Every bad-input class of the schema tests, through Lab.up and once through the CLI."""
    need_root()
    before_ns, before_labs = set(netns.list_netns()), set(state.names())
    for case, (path, value, field, _) in BAD.items():
        p = tmp_path / f"{case}.yaml"
        p.write_text(yaml.safe_dump(mutate(path, value), sort_keys=False))
        with pytest.raises(TopologyError, match=field.replace("[", r"\[").replace("]", r"\]")):
            Lab.up(p)
    edgectl = Path(sys.executable).parent / "edgectl"
    res = subprocess.run([str(edgectl), "lab", "up", str(tmp_path / "unknown-kind.yaml")], capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res
    assert set(netns.list_netns()) - before_ns == set()
    assert set(state.names()) - before_labs == set()
    assert not os.path.exists(state.lab_dir("bad"))
